//! # RestaurantActor — one per active restaurant, on its shard's arbiter
//!
//! The single writer for one restaurant. It owns the menu snapshot (prices, availability), the tables,
//! the live orders (everything not served or cancelled), the ticket counter, the kitchen and table
//! subscribers, and a ring buffer of recent events numbered by `(epoch, seq)`. Every change of orders,
//! availability or "accepting orders" goes through it and through its shard's [`PersistenceWriter`];
//! answers and broadcasts happen only after the writer reports the commit ("durable before visible").
//!
//! Who talks to it: REST handlers (place order, change status, toggles, reads served from memory) and
//! socket sessions (subscribe, resume, set status), always through the shard registry.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use chrono::{DateTime, NaiveDate, Utc};
use indexmap::IndexMap;
use scan2order_schema::domain::{
    is_clean_text, MenuItemId, OrderId, OrderStatus, Phone, RestaurantId, StaffId, TableId,
    MAX_NOTE_CHARS, MAX_ORDER_LINES, MAX_QUANTITY, MIN_QUANTITY,
};
use scan2order_schema::models::{
    MenuCategory, MenuItem, NewOutbox, OrderItemRow, OrderRow, Restaurant, RestaurantTable,
    StoredOrder,
};
use scan2order_schema::wire::{
    self, CategoryView, MenuView, PlaceOrderLine, RestaurantKitchen, RestaurantPublic, ServerMsg,
    TablePublic,
};
use scan2order_schema::DbPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::admin::{self, AdminChange, AdminError, AdminOutcome};
use crate::notifier::MessageKind;
use crate::sink::{close_code, SocketSink};
use crate::writer::{
    NewOrderBundle, PersistenceWriter, SessionCheck, Write, WriteError, WriteOp, WriteOutcome,
};

/// Tunables of every restaurant actor.
#[derive(Clone, Debug)]
pub struct RestaurantConfig {
    /// Events kept for `resume`; older resumes get a snapshot.
    pub ring_size: usize,
    /// Idempotency keys remembered in memory per restaurant (older ones are found by the database's
    /// unique constraint).
    pub recent_keys: usize,
    /// A restaurant with no sockets and no live orders for this long stops and frees its memory.
    pub passivate_after: Duration,
}

impl Default for RestaurantConfig {
    fn default() -> Self {
        RestaurantConfig {
            ring_size: 4096,
            recent_keys: 4096,
            passivate_after: Duration::from_secs(600),
        }
    }
}

/// Called by a restaurant that passivates, with its table tokens, so the registry forgets it.
pub type PassivateHook = Box<dyn FnOnce(Vec<String>) + Send>;

/// What went wrong with a request to a restaurant. Mapped to HTTP and socket errors in one place
/// (`scan2order::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("some items are not available")]
    ItemUnavailable(Vec<MenuItemId>),
    #[error("the restaurant is not accepting orders right now")]
    NotAccepting,
    #[error("an order cannot go from {from} to {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    #[error("this Idempotency-Key was used for another order")]
    IdempotencyConflict,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// The session behind the request ended before its write committed.
    #[error("sign in again")]
    Unauthenticated,
}

impl EngineError {
    /// The protocol code and sentence of this error, shared by REST answers and socket errors.
    pub fn code(&self) -> (&'static str, String) {
        match self {
            EngineError::NotFound => ("not_found", "no such order in this restaurant".into()),
            EngineError::Invalid(m) => ("invalid_request", m.clone()),
            EngineError::ItemUnavailable(_) => ("item_unavailable", self.to_string()),
            EngineError::NotAccepting => ("not_accepting_orders", self.to_string()),
            EngineError::InvalidTransition { .. } => ("invalid_transition", self.to_string()),
            EngineError::IdempotencyConflict => ("idempotency_key_reused", self.to_string()),
            EngineError::Unavailable => ("unavailable", self.to_string()),
            EngineError::Unauthenticated => ("unauthenticated", self.to_string()),
        }
    }
}

/// Who a subscriber is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// A kitchen dashboard: every order of the restaurant.
    Kitchen,
    /// A guest socket bound to one table: that table's orders plus menu and restaurant changes.
    Table(TableId),
}

/// An order as committed.
#[derive(Clone, Debug)]
pub struct PlacedOrder {
    /// The order with the guest's own phone (for the guest who placed it).
    pub order: wire::Order,
    /// False when an earlier request with the same key created it.
    pub created: bool,
}

/// One event in the ring: its number, who may see it, and its JSON, serialised once.
#[derive(Clone, Debug)]
struct RingEvent {
    seq: u64,
    table: Option<TableId>,
    text: ByteString,
}

#[derive(Clone, Debug)]
struct LiveOrder {
    stored: StoredOrder,
    committed: OrderStatus,
    /// The status after every change sent to the writer; transitions are checked against it.
    projected: OrderStatus,
    /// A status change of unknown outcome is being settled: further changes wait (503) until the
    /// stored status is known, or a retry of the same change could be written twice.
    unsettled: bool,
}

type PlaceReply = oneshot::Sender<Result<PlacedOrder, EngineError>>;

pub struct RestaurantActor {
    id: RestaurantId,
    info: Restaurant,
    tz: chrono_tz::Tz,
    categories: Vec<MenuCategory>,
    items: IndexMap<Uuid, MenuItem>,
    tables: HashMap<Uuid, RestaurantTable>,
    menu_json: String,
    public_json: String,
    next_menu_version: i64,
    live: IndexMap<Uuid, LiveOrder>,
    ticket_day: NaiveDate,
    ticket_last: i32,
    epoch: String,
    seq: u64,
    ring: VecDeque<RingEvent>,
    kitchen: HashMap<u64, SocketSink>,
    kitchen_staff: HashMap<u64, StaffId>,
    table_subs: HashMap<TableId, HashMap<u64, SocketSink>>,
    next_sub: u64,
    /// Keys being written: the phone that placed the order, and retries waiting for its answer.
    pending_keys: HashMap<String, (String, Vec<PlaceReply>)>,
    recent_keys: IndexMap<String, (Uuid, String)>,
    writer: Addr<PersistenceWriter>,
    pool: DbPool,
    config: RestaurantConfig,
    /// When the restaurant last handled a request (for passivation).
    last_used: Instant,
    /// Requests handled since activation.
    handled: u64,
    /// Idleness checks made (operators and tests see passivation is being considered).
    idle_checks: u64,
    on_passivate: Option<PassivateHook>,
}

/// Everything an actor starts from, read from Postgres at activation.
pub struct LoadedRestaurant {
    pub info: Restaurant,
    pub categories: Vec<MenuCategory>,
    pub items: Vec<MenuItem>,
    pub tables: Vec<RestaurantTable>,
    pub live: Vec<StoredOrder>,
    pub ticket_day: NaiveDate,
    pub ticket_last: i32,
}

impl LoadedRestaurant {
    /// Reads a restaurant's state; `None` when it does not exist.
    pub async fn load(
        pool: &DbPool,
        id: RestaurantId,
    ) -> Result<Option<LoadedRestaurant>, EngineError> {
        let mut conn = pool.get().await.map_err(|_| EngineError::Unavailable)?;
        let db = |_| EngineError::Unavailable;
        let Some(info) = Restaurant::find(&mut conn, id.get()).await.map_err(db)? else {
            return Ok(None);
        };
        let tz = parse_tz(&info.time_zone);
        let ticket_day = Utc::now().with_timezone(&tz).date_naive();
        let categories = MenuCategory::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let items = MenuItem::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let tables = RestaurantTable::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let live = StoredOrder::live_for(&mut conn, id.get())
            .await
            .map_err(db)?;
        let ticket_last = StoredOrder::max_ticket(&mut conn, id.get(), ticket_day)
            .await
            .map_err(db)?;
        Ok(Some(LoadedRestaurant {
            info,
            categories,
            items,
            tables,
            live,
            ticket_day,
            ticket_last,
        }))
    }
}

fn parse_tz(name: &str) -> chrono_tz::Tz {
    name.parse().unwrap_or(chrono_tz::UTC)
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl RestaurantActor {
    pub fn new(
        loaded: LoadedRestaurant,
        writer: Addr<PersistenceWriter>,
        pool: DbPool,
        config: RestaurantConfig,
    ) -> Self {
        let LoadedRestaurant {
            info,
            categories,
            items,
            tables,
            live,
            ticket_day,
            ticket_last,
        } = loaded;
        let live = live
            .into_iter()
            .map(|stored| {
                let status = stored.row.status.parse().unwrap_or(OrderStatus::Placed);
                (
                    stored.row.id,
                    LiveOrder {
                        stored,
                        committed: status,
                        projected: status,
                        unsettled: false,
                    },
                )
            })
            .collect();
        let mut actor = RestaurantActor {
            id: info.id.into(),
            tz: parse_tz(&info.time_zone),
            next_menu_version: info.menu_version,
            info,
            categories,
            items: items.into_iter().map(|i| (i.id, i)).collect(),
            tables: tables.into_iter().map(|t| (t.id, t)).collect(),
            menu_json: String::new(),
            public_json: String::new(),
            live,
            ticket_day,
            ticket_last,
            epoch: new_epoch(),
            seq: 0,
            ring: VecDeque::with_capacity(config.ring_size.min(1024)),
            kitchen: HashMap::new(),
            kitchen_staff: HashMap::new(),
            table_subs: HashMap::new(),
            next_sub: 1,
            pending_keys: HashMap::new(),
            recent_keys: IndexMap::new(),
            writer,
            pool,
            config,
            last_used: Instant::now(),
            handled: 0,
            idle_checks: 0,
            on_passivate: None,
        };
        actor.render_menu();
        actor
    }

    pub fn id(&self) -> RestaurantId {
        self.id
    }

    /// What to call when this restaurant stops for idleness.
    pub fn with_passivate_hook(mut self, hook: PassivateHook) -> Self {
        self.on_passivate = Some(hook);
        self
    }

    /// Marks a request handled (for passivation and the busiest-restaurant figures).
    fn touch(&mut self) {
        self.last_used = Instant::now();
        self.handled += 1;
    }

    fn idle(&self) -> bool {
        self.kitchen.is_empty()
            && self.table_subs.is_empty()
            && self.live.is_empty()
            && self.pending_keys.is_empty()
            && self.last_used.elapsed() >= self.config.passivate_after
    }

    /// Re-renders the cached JSON served to guests; called after every menu or flag change.
    fn render_menu(&mut self) {
        let mut categories: Vec<CategoryView> = self
            .categories
            .iter()
            .map(|c| CategoryView {
                id: c.id.into(),
                name: c.name.clone(),
                items: Vec::new(),
            })
            .collect();
        let index: HashMap<Uuid, usize> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut items: Vec<&MenuItem> = self.items.values().collect();
        items.sort_by_key(|i| (i.position, i.created_at));
        for item in items {
            if let Some(&ci) = index.get(&item.category_id) {
                categories[ci].items.push(item.to_view());
            }
        }
        let menu = MenuView {
            version: self.info.menu_version.to_string(),
            categories,
        };
        self.menu_json = serde_json::to_string(&menu).unwrap_or_else(|_| "{}".into());
        let public = RestaurantPublic {
            id: self.id,
            slug: self.info.slug.clone(),
            name: self.info.name.clone(),
            currency: self.info.currency.clone(),
            accepting_orders: self.info.accepting_orders,
        };
        self.public_json = serde_json::to_string(&public).unwrap_or_else(|_| "{}".into());
    }

    /// The active table a token opens. The token is checked here, by the owner of the tables, so a token
    /// rotated a moment ago cannot open its table through a stale directory entry.
    fn table_for(&self, id: TableId, token: &str) -> Option<&RestaurantTable> {
        self.tables.get(&id.get()).filter(|t| {
            t.active && t.deleted_at.is_none() && t.token.as_bytes() == token.as_bytes()
        })
    }

    fn etag(&self) -> String {
        format!("\"{}-{}\"", self.id.get().simple(), self.info.menu_version)
    }

    fn kitchen_view(&self) -> RestaurantKitchen {
        RestaurantKitchen {
            id: self.id,
            slug: self.info.slug.clone(),
            name: self.info.name.clone(),
            currency: self.info.currency.clone(),
            accepting_orders: self.info.accepting_orders,
            ticket_warn_after_s: self.info.ticket_warn_after_s,
            ticket_late_after_s: self.info.ticket_late_after_s,
        }
    }

    /// Numbers an event, serialises it once, keeps it for resume and fans it out.
    fn publish(&mut self, table: Option<TableId>, build: impl FnOnce(u64) -> ServerMsg) {
        self.seq += 1;
        let msg = build(self.seq);
        let text: ByteString = match serde_json::to_string(&msg) {
            Ok(s) => s.into(),
            Err(e) => {
                tracing::error!(error = %e, "event did not serialise");
                return;
            }
        };
        if self.config.ring_size > 0 {
            if self.ring.len() >= self.config.ring_size {
                self.ring.pop_front();
            }
            self.ring.push_back(RingEvent {
                seq: self.seq,
                table,
                text: text.clone(),
            });
        }
        self.kitchen
            .retain(|_, sink| sink.send_text(text.clone()).is_ok());
        if self.kitchen_staff.len() > self.kitchen.len() {
            let kitchen = &self.kitchen;
            self.kitchen_staff.retain(|id, _| kitchen.contains_key(id));
        }
        match table {
            Some(t) => {
                if let Some(subs) = self.table_subs.get_mut(&t) {
                    subs.retain(|_, sink| sink.send_text(text.clone()).is_ok());
                }
            }
            None => {
                for subs in self.table_subs.values_mut() {
                    subs.retain(|_, sink| sink.send_text(text.clone()).is_ok());
                }
            }
        }
        self.table_subs.retain(|_, subs| !subs.is_empty());
    }

    fn remember_key(&mut self, key: String, order: Uuid, phone: String) {
        self.recent_keys.insert(key, (order, phone));
        while self.recent_keys.len() > self.config.recent_keys {
            self.recent_keys.shift_remove_index(0);
        }
    }

    /// Adds a committed order to the live list and tells the kitchen and its table.
    fn add_live(&mut self, stored: StoredOrder) {
        let status = stored.row.status.parse().unwrap_or(OrderStatus::Placed);
        if status.is_final() || self.live.contains_key(&stored.row.id) {
            return;
        }
        let masked = stored.to_wire(false);
        let table = TableId::from(stored.row.table_id);
        self.live.insert(
            stored.row.id,
            LiveOrder {
                stored,
                committed: status,
                projected: status,
                unsettled: false,
            },
        );
        self.publish(Some(table), |seq| ServerMsg::OrderCreated {
            seq,
            order: masked,
        });
    }

    /// An order the database already held for this key: adopt it (it may have been committed by a write
    /// whose answer was lost) and answer with it.
    fn adopt(&mut self, existing: StoredOrder, phone: &str) -> Result<PlacedOrder, EngineError> {
        if existing.row.phone != phone {
            return Err(EngineError::IdempotencyConflict);
        }
        let order = existing.to_wire(true);
        self.remember_key(
            existing.row.idempotency_key.clone(),
            existing.row.id,
            existing.row.phone.clone(),
        );
        self.add_live(existing);
        Ok(PlacedOrder {
            order,
            created: false,
        })
    }

    /// Validates and prices an order; builds the rows to write.
    fn prepare(
        &mut self,
        msg: &PlaceOrder,
        now: DateTime<Utc>,
    ) -> Result<StoredOrder, EngineError> {
        if !self.info.accepting_orders {
            return Err(EngineError::NotAccepting);
        }
        let (table_id, table_label) = self
            .table_for(msg.table_id, &msg.table_token)
            .map(|t| (t.id, t.label.clone()))
            .ok_or(EngineError::NotFound)?;
        if msg.lines.is_empty() {
            return Err(EngineError::Invalid(
                "items: an order needs at least one item".into(),
            ));
        }
        if msg.lines.len() > MAX_ORDER_LINES {
            return Err(EngineError::Invalid(format!(
                "items: at most {MAX_ORDER_LINES} lines per order"
            )));
        }
        let order_note = check_note("note", msg.note.as_deref())?;
        let order_id = Uuid::now_v7();
        let mut unavailable = Vec::new();
        let mut items = Vec::with_capacity(msg.lines.len());
        let mut total: i64 = 0;
        for (i, line) in msg.lines.iter().enumerate() {
            if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&line.quantity) {
                return Err(EngineError::Invalid(format!(
                    "items[{i}].quantity: must be between {MIN_QUANTITY} and {MAX_QUANTITY}"
                )));
            }
            let note = check_note(&format!("items[{i}].note"), line.note.as_deref())?;
            let Some(item) = self.items.get(&line.menu_item_id.get()) else {
                return Err(EngineError::Invalid(format!(
                    "items[{i}].menu_item_id: no such item on this restaurant's menu"
                )));
            };
            if !item.available {
                if !unavailable.contains(&line.menu_item_id) {
                    unavailable.push(line.menu_item_id);
                }
                continue;
            }
            total = item
                .price_cents
                .checked_mul(i64::from(line.quantity))
                .and_then(|l| total.checked_add(l))
                .ok_or_else(|| EngineError::Invalid("items: total too large".into()))?;
            items.push(OrderItemRow {
                order_id,
                line_no: i as i32 + 1,
                menu_item_id: item.id,
                name: item.name.clone(),
                unit_price_cents: item.price_cents,
                quantity: line.quantity,
                note,
            });
        }
        if !unavailable.is_empty() {
            return Err(EngineError::ItemUnavailable(unavailable));
        }
        let today = now.with_timezone(&self.tz).date_naive();
        if today != self.ticket_day {
            self.ticket_day = today;
            self.ticket_last = 0;
        }
        self.ticket_last += 1;
        Ok(StoredOrder {
            row: OrderRow {
                id: order_id,
                restaurant_id: self.id.get(),
                table_id,
                table_label,
                ticket_no: self.ticket_last,
                business_day: self.ticket_day,
                phone: msg.phone.as_str().to_string(),
                status: OrderStatus::Placed.as_str().to_string(),
                note: order_note,
                total_cents: total,
                currency: self.info.currency.clone(),
                idempotency_key: msg.idempotency_key.clone(),
                created_at: now,
                updated_at: now,
            },
            items,
        })
    }

    fn outbox_for(&self, row: &OrderRow, kind: MessageKind) -> NewOutbox {
        NewOutbox {
            dedup_key: format!("order:{}:{}", row.id, kind.as_str()),
            phone: row.phone.clone(),
            template: kind.as_str().to_string(),
            params: serde_json::json!([self.info.name, row.ticket_no.to_string()]),
        }
    }

    fn snapshot_orders(&self, audience: Audience) -> Vec<wire::Order> {
        self.live
            .values()
            .filter(|o| match audience {
                Audience::Kitchen => true,
                Audience::Table(t) => o.stored.row.table_id == t.get(),
            })
            .map(|o| o.stored.to_wire(false))
            .collect()
    }

    fn can_replay(&self, epoch: &str, since: u64) -> bool {
        if epoch != self.epoch || since > self.seq {
            return false;
        }
        if since == self.seq {
            return true;
        }
        match self.ring.front() {
            Some(first) => since + 1 >= first.seq,
            None => false,
        }
    }

    fn push_hello(&self, sink: &SocketSink) {
        let hello = ServerMsg::Hello {
            epoch: self.epoch.clone(),
            seq: self.seq,
        };
        if let Ok(s) = serde_json::to_string(&hello) {
            let _ = sink.send_text(s.into());
        }
    }
}

fn check_note(field: &str, note: Option<&str>) -> Result<String, EngineError> {
    let note = note.unwrap_or("").trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(EngineError::Invalid(format!(
            "{field}: at most {MAX_NOTE_CHARS} characters"
        )));
    }
    if !is_clean_text(note) {
        return Err(EngineError::Invalid(format!(
            "{field}: control characters are not allowed"
        )));
    }
    Ok(note.to_string())
}

impl Actor for RestaurantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every =
            (self.config.passivate_after / 4).clamp(PASSIVATION_CHECK_MIN, PASSIVATION_CHECK_MAX);
        ctx.run_interval(every, |act, ctx| {
            act.idle_checks += 1;
            if act.idle() {
                tracing::info!(restaurant_id = %act.id, "restaurant idle; passivating");
                if let Some(hook) = act.on_passivate.take() {
                    hook(act.tables.values().map(|t| t.token.clone()).collect());
                }
                ctx.stop();
            }
        });
        tracing::info!(restaurant_id = %self.id, epoch = %self.epoch, live = self.live.len(), "restaurant active");
    }
}

/// Counts an order the engine refused, by protocol code.
fn count_refusal(e: &EngineError) {
    let (code, _) = e.code();
    metrics::counter!("s2o_orders_refused_total", "reason" => code).increment(1);
}

/// Bounds of how often a restaurant checks whether it is idle.
const PASSIVATION_CHECK_MIN: Duration = Duration::from_millis(100);
const PASSIVATION_CHECK_MAX: Duration = Duration::from_secs(60);

/// A write whose commit nobody saw.
enum Unsettled {
    Insert(Box<OrderRow>),
    Status(Uuid),
}

/// Waits until the transaction that carried `write` is over, then reads what it left; `None` while the
/// database cannot answer. A plain read could run before an in-flight COMMIT finishes and wrongly
/// conclude "never written", so it first takes a lock the in-flight transaction holds: the unique
/// idempotency key of a new order (a probe insert, rolled back), or the row lock of a status change.
async fn settle(pool: &DbPool, write: &Unsettled) -> Option<Option<StoredOrder>> {
    let mut conn = pool.get().await.ok()?;
    match write {
        Unsettled::Insert(row) => {
            if !StoredOrder::settle_insert(&mut conn, row).await.ok()? {
                return Some(None);
            }
            StoredOrder::find_by_key(&mut conn, row.restaurant_id, &row.idempotency_key)
                .await
                .ok()
        }
        Unsettled::Status(id) => {
            StoredOrder::settle_row(&mut conn, *id).await.ok()?;
            StoredOrder::find(&mut conn, *id).await.ok()
        }
    }
}

/// Longest wait for the transaction of an unsettled write to finish before trying again.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// First and longest wait between reads that settle a write of unknown outcome.
const RECONCILE_FIRST: Duration = Duration::from_millis(200);
const RECONCILE_MAX: Duration = Duration::from_secs(10);

impl RestaurantActor {
    /// A write whose commit is unknown (the database went away mid-transaction, or did not answer in
    /// time): read the order back until the database answers, then make memory and sockets agree with
    /// what was stored. An order that did commit reaches the kitchen even if its guest never retries.
    fn reconcile_later(&self, ctx: &mut Context<Self>, write: Unsettled) {
        let pool = self.pool.clone();
        let id = match &write {
            Unsettled::Insert(row) => row.id,
            Unsettled::Status(id) => *id,
        };
        ctx.spawn(
            async move {
                let mut wait = RECONCILE_FIRST;
                loop {
                    if let Ok(Some(found)) =
                        tokio::time::timeout(SETTLE_TIMEOUT, settle(&pool, &write)).await
                    {
                        return found;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECONCILE_MAX);
                }
            }
            .into_actor(self)
            .map(move |found: Option<StoredOrder>, act, _| {
                let id = found.as_ref().map_or(id, |f| f.row.id);
                act.reconcile(id, found)
            }),
        );
    }

    fn reconcile(&mut self, id: Uuid, found: Option<StoredOrder>) {
        // Whatever was stored is known now: the order takes status changes again.
        if let Some(live) = self.live.get_mut(&id) {
            live.unsettled = false;
        }
        let Some(stored) = found else {
            return;
        };
        if stored.row.restaurant_id != self.id.get() {
            return;
        }
        let db_status: OrderStatus = stored.row.status.parse().unwrap_or(OrderStatus::Placed);
        let Some(live) = self.live.get_mut(&id) else {
            if !db_status.is_final() {
                tracing::info!(order_id = %id, "order of unknown outcome was committed; adopting it");
                self.add_live(stored);
            }
            return;
        };
        if db_status == live.committed {
            return;
        }
        tracing::info!(order_id = %id, status = %db_status, "status change of unknown outcome was committed");
        live.committed = db_status;
        // Keep a projection that is still ahead of the stored status (later changes are on their way
        // to the writer); otherwise the stored status is the truth.
        if !db_status.can_become(live.projected) {
            live.projected = db_status;
        }
        live.stored.row.status = db_status.as_str().to_string();
        live.stored.row.updated_at = stored.row.updated_at;
        let ticket_no = live.stored.row.ticket_no;
        let table = TableId::from(live.stored.row.table_id);
        let updated_at = stored.row.updated_at;
        if db_status.is_final() {
            self.live.shift_remove(&id);
        }
        self.publish(Some(table), |seq| ServerMsg::OrderStatus {
            seq,
            order_id: OrderId::from(id),
            ticket_no,
            status: db_status,
            updated_at,
        });
    }
}

fn writer_error(e: WriteError) -> EngineError {
    tracing::warn!(error = %e, "write failed");
    EngineError::Unavailable
}

/// A guest places an order. Answered after the commit, with the order as stored.
#[derive(Message, Clone)]
#[rtype(result = "Result<PlacedOrder, EngineError>")]
pub struct PlaceOrder {
    pub table_id: TableId,
    pub table_token: String,
    pub phone: Phone,
    pub idempotency_key: String,
    pub lines: Vec<PlaceOrderLine>,
    pub note: Option<String>,
    /// Set when the guest was authenticated from the session cache: the writer confirms the session
    /// in the order's own transaction.
    pub session: Option<SessionCheck>,
}

impl Handler<PlaceOrder> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<PlacedOrder, EngineError>>;

    fn handle(&mut self, msg: PlaceOrder, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let key = msg.idempotency_key.clone();
        let phone = msg.phone.as_str().to_string();
        // A retry while the first attempt is still being written waits for its answer — only the
        // same guest's: another phone reusing the key must not receive that order (nor its phone).
        if let Some((owner, waiters)) = self.pending_keys.get_mut(&key) {
            if *owner != phone {
                return Box::pin(actix::fut::ready(Err(EngineError::IdempotencyConflict)));
            }
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Box::pin(actix::fut::wrap_future(async move {
                rx.await.unwrap_or(Err(EngineError::Unavailable))
            }));
        }
        // (A guest authenticated only from memory is answered through the writer, which confirms the
        // session; the stored order comes back as a duplicate.)
        if let Some((id, owner)) = self.recent_keys.get(&key).filter(|_| msg.session.is_none()) {
            if owner != &phone {
                return Box::pin(actix::fut::ready(Err(EngineError::IdempotencyConflict)));
            }
            if let Some(live) = self.live.get(id) {
                let order = live.stored.to_wire(true);
                return Box::pin(actix::fut::ready(Ok(PlacedOrder {
                    order,
                    created: false,
                })));
            }
        }
        let now = Utc::now();
        let started = Instant::now();
        let stored = match self.prepare(&msg, now) {
            Ok(s) => s,
            Err(err) => {
                count_refusal(&err);
                // A refused request may still be the retry of an order placed before a restart.
                let pool = self.pool.clone();
                let rid = self.id.get();
                return Box::pin(
                    async move {
                        let mut conn = pool.get().await.ok()?;
                        StoredOrder::find_by_key(&mut conn, rid, &key)
                            .await
                            .ok()
                            .flatten()
                    }
                    .into_actor(self)
                    .map(move |found, act, _| match found {
                        Some(existing) => act.adopt(existing, &phone),
                        None => Err(err),
                    }),
                );
            }
        };
        self.pending_keys
            .insert(key.clone(), (phone.clone(), Vec::new()));
        let outbox = Some(self.outbox_for(&stored.row, MessageKind::OrderReceived));
        let op = WriteOp::InsertOrder(Box::new(NewOrderBundle {
            order: stored.row.clone(),
            items: stored.items.clone(),
            outbox,
            session: msg.session.clone(),
        }));
        let writer = self.writer.clone();
        Box::pin(
            async move { writer.send(Write(op)).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let row = &stored.row;
                    let result = match res {
                        Err(_) => {
                            act.reconcile_later(ctx, Unsettled::Insert(Box::new(row.clone())));
                            Err(EngineError::Unavailable)
                        }
                        Ok(Err(e)) => {
                            if e.outcome_unknown() {
                                act.reconcile_later(ctx, Unsettled::Insert(Box::new(row.clone())));
                            }
                            Err(writer_error(e))
                        }
                        Ok(Ok(WriteOutcome::Duplicate(existing))) => act.adopt(*existing, &phone),
                        Ok(Ok(WriteOutcome::SessionEnded)) => Err(EngineError::Unauthenticated),
                        Ok(Ok(_)) => {
                            let order = stored.to_wire(true);
                            act.remember_key(key.clone(), stored.row.id, phone.clone());
                            act.add_live(stored);
                            metrics::counter!("s2o_orders_placed_total").increment(1);
                            metrics::histogram!("s2o_order_delivery_seconds")
                                .record(started.elapsed().as_secs_f64());
                            Ok(PlacedOrder {
                                order,
                                created: true,
                            })
                        }
                    };
                    let waiters = act.pending_keys.remove(&key).map(|(_, w)| w);
                    for waiter in waiters.unwrap_or_default() {
                        // A retry carries its own credentials: the first attempt's ended session is
                        // not its answer; it may try again.
                        let answer = match &result {
                            Err(EngineError::Unauthenticated) => Err(EngineError::Unavailable),
                            other => other.clone(),
                        };
                        let _ = waiter.send(answer.map(|p| PlacedOrder {
                            created: false,
                            ..p
                        }));
                    }
                    result
                }),
        )
    }
}

/// The kitchen moves an order along. Answered with the order (phone masked) after the commit.
#[derive(Message, Clone)]
#[rtype(result = "Result<wire::Order, EngineError>")]
pub struct ChangeStatus {
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub by: Option<StaffId>,
    /// Set when the staff member was authenticated from the session cache: the writer confirms the
    /// session in the change's own transaction.
    pub session: Option<SessionCheck>,
}

impl Handler<ChangeStatus> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<wire::Order, EngineError>>;

    fn handle(&mut self, msg: ChangeStatus, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let id = msg.order_id.get();
        let to = msg.status;
        let Some(live) = self.live.get_mut(&id) else {
            // Not live: either finished (then the move is invalid) or not this restaurant's at all.
            let pool = self.pool.clone();
            let rid = self.id.get();
            return Box::pin(actix::fut::wrap_future(async move {
                let mut conn = pool.get().await.map_err(|_| EngineError::Unavailable)?;
                match StoredOrder::find(&mut conn, id)
                    .await
                    .map_err(|_| EngineError::Unavailable)?
                {
                    Some(o) if o.row.restaurant_id == rid => Err(EngineError::InvalidTransition {
                        from: o.row.status.parse().unwrap_or(OrderStatus::Served),
                        to,
                    }),
                    _ => Err(EngineError::NotFound),
                }
            }));
        };
        if live.unsettled {
            return Box::pin(actix::fut::ready(Err(EngineError::Unavailable)));
        }
        let from = live.projected;
        if !from.can_become(to) {
            return Box::pin(actix::fut::ready(Err(EngineError::InvalidTransition {
                from,
                to,
            })));
        }
        live.projected = to;
        let kind = match to {
            OrderStatus::Ready => Some(MessageKind::OrderReady),
            OrderStatus::Cancelled => Some(MessageKind::OrderCancelled),
            _ => None,
        };
        let row = live.stored.row.clone();
        let outbox = kind.map(|k| self.outbox_for(&row, k));
        let at = Utc::now();
        let op = WriteOp::SetStatus {
            order_id: id,
            status: to.as_str(),
            at,
            by: msg.by.map(StaffId::get),
            outbox,
            session: msg.session,
        };
        let writer = self.writer.clone();
        Box::pin(
            async move { writer.send(Write(op)).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    let mut unknown = false;
                    let committed = match res {
                        Ok(Ok(WriteOutcome::SessionEnded)) => Err(EngineError::Unauthenticated),
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => {
                            unknown = e.outcome_unknown();
                            Err(writer_error(e))
                        }
                        Err(_) => {
                            unknown = true;
                            Err(EngineError::Unavailable)
                        }
                    };
                    if unknown {
                        if let Some(live) = act.live.get_mut(&id) {
                            live.unsettled = true;
                        }
                        act.reconcile_later(ctx, Unsettled::Status(id));
                    }
                    let Some(live) = act.live.get_mut(&id) else {
                        return Err(EngineError::NotFound);
                    };
                    if let Err(e) = committed {
                        live.projected = live.committed;
                        return Err(e);
                    }
                    live.committed = to;
                    live.stored.row.status = to.as_str().to_string();
                    live.stored.row.updated_at = at;
                    let order = live.stored.to_wire(false);
                    let ticket_no = live.stored.row.ticket_no;
                    let table = TableId::from(live.stored.row.table_id);
                    if to.is_final() {
                        act.live.shift_remove(&id);
                    }
                    metrics::counter!("s2o_status_changes_total", "status" => to.as_str())
                        .increment(1);
                    act.publish(Some(table), |seq| ServerMsg::OrderStatus {
                        seq,
                        order_id: OrderId::from(id),
                        ticket_no,
                        status: to,
                        updated_at: at,
                    });
                    Ok(order)
                }),
        )
    }
}

/// The kitchen marks a dish sold out or back.
#[derive(Message, Clone)]
#[rtype(result = "Result<wire::MenuItemView, EngineError>")]
pub struct SetAvailability {
    pub item_id: MenuItemId,
    pub available: bool,
}

impl Handler<SetAvailability> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<wire::MenuItemView, EngineError>>;

    fn handle(&mut self, msg: SetAvailability, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let id = msg.item_id.get();
        let Some(item) = self.items.get(&id) else {
            return Box::pin(actix::fut::ready(Err(EngineError::NotFound)));
        };
        if item.available == msg.available {
            return Box::pin(actix::fut::ready(Ok(item.to_view())));
        }
        self.next_menu_version += 1;
        let version = self.next_menu_version;
        let at = Utc::now();
        let op = WriteOp::SetAvailability {
            restaurant_id: self.id.get(),
            item_id: id,
            available: msg.available,
            menu_version: version,
            at,
        };
        let writer = self.writer.clone();
        Box::pin(
            async move { writer.send(Write(op)).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    match res {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(writer_error(e)),
                        Err(_) => return Err(EngineError::Unavailable),
                    }
                    act.info.menu_version = act.info.menu_version.max(version);
                    let view = match act.items.get_mut(&id) {
                        Some(item) => {
                            item.available = msg.available;
                            item.updated_at = at;
                            item.to_view()
                        }
                        None => return Err(EngineError::NotFound),
                    };
                    act.render_menu();
                    act.publish(None, |seq| ServerMsg::MenuItem {
                        seq,
                        item_id: msg.item_id,
                        available: msg.available,
                    });
                    Ok(view)
                }),
        )
    }
}

/// The kitchen pauses or resumes ordering.
#[derive(Message, Clone)]
#[rtype(result = "Result<RestaurantKitchen, EngineError>")]
pub struct SetAccepting {
    pub accepting: bool,
}

impl Handler<SetAccepting> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<RestaurantKitchen, EngineError>>;

    fn handle(&mut self, msg: SetAccepting, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if self.info.accepting_orders == msg.accepting {
            return Box::pin(actix::fut::ready(Ok(self.kitchen_view())));
        }
        self.next_menu_version += 1;
        let version = self.next_menu_version;
        let op = WriteOp::SetAccepting {
            restaurant_id: self.id.get(),
            accepting: msg.accepting,
            menu_version: version,
            at: Utc::now(),
        };
        let writer = self.writer.clone();
        Box::pin(
            async move { writer.send(Write(op)).await }
                .into_actor(self)
                .map(move |res, act, _| {
                    match res {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(writer_error(e)),
                        Err(_) => return Err(EngineError::Unavailable),
                    }
                    act.info.menu_version = act.info.menu_version.max(version);
                    act.info.accepting_orders = msg.accepting;
                    act.render_menu();
                    act.publish(None, |seq| ServerMsg::Restaurant {
                        seq,
                        accepting_orders: msg.accepting,
                    });
                    Ok(act.kitchen_view())
                }),
        )
    }
}

/// The guest menu of one table, served from memory: JSON body and `ETag`.
#[derive(Message, Clone)]
#[rtype(result = "Result<TableMenuAnswer, EngineError>")]
pub struct GetTableMenu {
    pub table_id: TableId,
    pub table_token: String,
}

pub struct TableMenuAnswer {
    pub etag: String,
    pub body: String,
}

impl Handler<GetTableMenu> for RestaurantActor {
    type Result = Result<TableMenuAnswer, EngineError>;

    fn handle(&mut self, msg: GetTableMenu, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let table = self
            .table_for(msg.table_id, &msg.table_token)
            .ok_or(EngineError::NotFound)?;
        let table = serde_json::to_string(&TablePublic {
            id: table.id.into(),
            label: table.label.clone(),
        })
        .map_err(|_| EngineError::Unavailable)?;
        let mut body =
            String::with_capacity(self.public_json.len() + table.len() + self.menu_json.len() + 40);
        body.push_str("{\"restaurant\":");
        body.push_str(&self.public_json);
        body.push_str(",\"table\":");
        body.push_str(&table);
        body.push_str(",\"menu\":");
        body.push_str(&self.menu_json);
        body.push('}');
        Ok(TableMenuAnswer {
            etag: self.etag(),
            body,
        })
    }
}

/// The restaurant as its kitchen sees it, with the full menu (extension for the kitchen display).
#[derive(Message, Clone)]
#[rtype(result = "String")]
pub struct GetKitchenInfo;

impl Handler<GetKitchenInfo> for RestaurantActor {
    type Result = String;

    fn handle(&mut self, _: GetKitchenInfo, _ctx: &mut Context<Self>) -> String {
        let restaurant =
            serde_json::to_string(&self.kitchen_view()).unwrap_or_else(|_| "{}".into());
        format!(
            "{{\"restaurant\":{restaurant},\"menu\":{}}}",
            self.menu_json
        )
    }
}

/// The kitchen's live orders, oldest first, phones masked.
#[derive(Message, Clone)]
#[rtype(result = "Vec<wire::Order>")]
pub struct GetLiveOrders;

impl Handler<GetLiveOrders> for RestaurantActor {
    type Result = Vec<wire::Order>;

    fn handle(&mut self, _: GetLiveOrders, _ctx: &mut Context<Self>) -> Vec<wire::Order> {
        self.snapshot_orders(Audience::Kitchen)
    }
}

/// Sends `hello` with the current `(epoch, seq)` to a socket that has not subscribed yet.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SayHello {
    pub sink: SocketSink,
}

impl Handler<SayHello> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: SayHello, _ctx: &mut Context<Self>) {
        self.push_hello(&msg.sink);
    }
}

/// Registers a socket. In one step: optional `hello`, then either the replay of every missed event (a
/// resume the ring still reaches, same epoch) or a fresh snapshot, then live events. Nothing can fall
/// between the snapshot and the first live event because the actor handles one message at a time.
#[derive(Message)]
#[rtype(result = "Result<u64, EngineError>")]
pub struct Subscribe {
    pub sink: SocketSink,
    pub audience: Audience,
    /// The QR token a table socket connected with (checked against the table's current token).
    pub table_token: Option<String>,
    /// The staff member behind a kitchen socket (closed when their sessions end).
    pub staff: Option<StaffId>,
    pub resume: Option<(String, u64)>,
    pub hello: bool,
}

impl Handler<Subscribe> for RestaurantActor {
    type Result = Result<u64, EngineError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if let Audience::Table(t) = msg.audience {
            let token = msg.table_token.as_deref().unwrap_or_default();
            if self.table_for(t, token).is_none() {
                return Err(EngineError::NotFound);
            }
        }
        if msg.hello {
            self.push_hello(&msg.sink);
        }
        let replay: Option<Vec<ByteString>> = match &msg.resume {
            Some((epoch, since)) if self.can_replay(epoch, *since) => {
                let missed: Vec<ByteString> = self
                    .ring
                    .iter()
                    .filter(|e| e.seq > *since)
                    .filter(|e| match (msg.audience, e.table) {
                        (Audience::Kitchen, _) | (_, None) => true,
                        (Audience::Table(t), Some(et)) => t == et,
                    })
                    .map(|e| e.text.clone())
                    .collect();
                // A replay longer than the socket's outbound queue would overflow it (1013) on every
                // reconnect, so the client could never catch up: it gets a snapshot instead.
                (missed.len() <= msg.sink.room()).then_some(missed)
            }
            _ => None,
        };
        match replay {
            Some(missed) => {
                for text in missed {
                    if msg.sink.send_text(text).is_err() {
                        return Ok(0);
                    }
                }
            }
            None => {
                let snapshot = ServerMsg::Snapshot {
                    epoch: self.epoch.clone(),
                    seq: self.seq,
                    orders: self.snapshot_orders(msg.audience),
                    menu_version: Some(self.info.menu_version.to_string()),
                    accepting_orders: Some(self.info.accepting_orders),
                };
                let text =
                    serde_json::to_string(&snapshot).map_err(|_| EngineError::Unavailable)?;
                if msg.sink.send_text(text.into()).is_err() {
                    return Ok(0);
                }
            }
        }
        let id = self.next_sub;
        self.next_sub += 1;
        match msg.audience {
            Audience::Kitchen => {
                self.kitchen.insert(id, msg.sink);
                if let Some(staff) = msg.staff {
                    self.kitchen_staff.insert(id, staff);
                }
            }
            Audience::Table(t) => {
                self.table_subs.entry(t).or_default().insert(id, msg.sink);
            }
        }
        Ok(id)
    }
}

/// A socket went away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub id: u64,
    pub audience: Audience,
}

impl Handler<Unsubscribe> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        match msg.audience {
            Audience::Kitchen => {
                self.kitchen.remove(&msg.id);
                self.kitchen_staff.remove(&msg.id);
            }
            Audience::Table(t) => {
                if let Some(subs) = self.table_subs.get_mut(&t) {
                    subs.remove(&msg.id);
                    if subs.is_empty() {
                        self.table_subs.remove(&t);
                    }
                }
            }
        }
    }
}

/// Closes every socket (shutdown: 1001).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll {
    pub code: u16,
}

impl Handler<CloseAll> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _ctx: &mut Context<Self>) {
        for sink in self.kitchen.values() {
            sink.close(msg.code);
        }
        for subs in self.table_subs.values() {
            for sink in subs.values() {
                sink.close(msg.code);
            }
        }
        self.kitchen.clear();
        self.kitchen_staff.clear();
        self.table_subs.clear();
    }
}

/// Counts for operators and tests.
#[derive(Message, Clone)]
#[rtype(result = "RestaurantStats")]
pub struct GetStats;

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestaurantStats {
    pub restaurant_id: RestaurantId,
    /// Filled in by the shard supervisor.
    pub shard: usize,
    pub epoch: String,
    pub seq: u64,
    pub live_orders: usize,
    pub kitchen_sockets: usize,
    pub table_sockets: usize,
    /// Requests handled since activation.
    pub messages: u64,
    /// Idleness checks made since activation.
    pub idle_checks: u64,
}

impl Handler<GetStats> for RestaurantActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(RestaurantStats {
            restaurant_id: self.id,
            shard: 0,
            epoch: self.epoch.clone(),
            seq: self.seq,
            live_orders: self.live.len(),
            kitchen_sockets: self.kitchen.len(),
            table_sockets: self.table_subs.values().map(HashMap::len).sum(),
            messages: self.handled,
            idle_checks: self.idle_checks,
        })
    }
}

/// Closes the kitchen sockets of one staff member (password changed, account removed): 1008.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStaffSockets {
    pub staff: StaffId,
}

impl Handler<CloseStaffSockets> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: CloseStaffSockets, _ctx: &mut Context<Self>) {
        let ids: Vec<u64> = self
            .kitchen_staff
            .iter()
            .filter(|(_, s)| **s == msg.staff)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.kitchen_staff.remove(&id);
            if let Some(sink) = self.kitchen.remove(&id) {
                sink.close(close_code::POLICY);
            }
        }
    }
}

/// An admin change applied by the owner of the restaurant.
#[derive(Message, Clone)]
#[rtype(result = "Result<AdminApplied, AdminError>")]
pub struct ApplyAdminChange(pub AdminChange);

/// The outcome, and the table tokens that died or appeared (for the token directory).
#[derive(Debug)]
pub struct AdminApplied {
    pub outcome: AdminOutcome,
    pub dead_tokens: Vec<String>,
    pub new_tables: Vec<(String, TableId)>,
}

struct Reloaded {
    info: Restaurant,
    categories: Vec<MenuCategory>,
    items: Vec<MenuItem>,
    tables: Vec<RestaurantTable>,
}

impl Handler<ApplyAdminChange> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<AdminApplied, AdminError>>;

    fn handle(&mut self, msg: ApplyAdminChange, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let pool = self.pool.clone();
        let rid = self.id.get();
        Box::pin(
            async move {
                let mut conn = pool.get().await.map_err(|_| AdminError::Unavailable)?;
                let outcome = admin::apply(&mut conn, rid, msg.0).await?;
                let info = Restaurant::find(&mut conn, rid)
                    .await?
                    .ok_or(AdminError::NotFound)?;
                let categories = MenuCategory::for_restaurant(&mut conn, rid).await?;
                let items = MenuItem::for_restaurant(&mut conn, rid).await?;
                let tables = RestaurantTable::for_restaurant(&mut conn, rid).await?;
                Ok((
                    outcome,
                    Reloaded {
                        info,
                        categories,
                        items,
                        tables,
                    },
                ))
            }
            .into_actor(self)
            .map(
                |res: Result<(AdminOutcome, Reloaded), AdminError>, act, _| {
                    let (outcome, reloaded) = res?;
                    let (dead_tokens, new_tables) = act.apply_reload(reloaded);
                    Ok(AdminApplied {
                        outcome,
                        dead_tokens,
                        new_tables,
                    })
                },
            ),
        )
    }
}

impl RestaurantActor {
    /// Takes a fresh copy of the admin-owned state, tells sockets what changed, and closes the sockets
    /// of tables whose token died (rotated, deactivated, deleted) with 1008.
    fn apply_reload(&mut self, r: Reloaded) -> (Vec<String>, Vec<(String, TableId)>) {
        let accepting_changed = r.info.accepting_orders != self.info.accepting_orders;
        let version_changed = r.info.menu_version != self.info.menu_version;
        let new_tables: HashMap<Uuid, RestaurantTable> =
            r.tables.into_iter().map(|t| (t.id, t)).collect();
        let live_token =
            |t: &RestaurantTable| (t.active && t.deleted_at.is_none()).then(|| t.token.clone());
        let mut dead = Vec::new();
        for (id, old) in &self.tables {
            let Some(old_token) = live_token(old) else {
                continue;
            };
            if new_tables.get(id).and_then(live_token).as_deref() != Some(old_token.as_str()) {
                dead.push(old_token);
                if let Some(subs) = self.table_subs.remove(&TableId::from(*id)) {
                    for sink in subs.values() {
                        sink.close(close_code::POLICY);
                    }
                }
            }
        }
        let mut added = Vec::new();
        for (id, t) in &new_tables {
            if let Some(token) = live_token(t) {
                let before = self.tables.get(id).and_then(live_token);
                if before.as_deref() != Some(token.as_str()) {
                    added.push((token, TableId::from(*id)));
                }
            }
        }
        self.tz = parse_tz(&r.info.time_zone);
        self.next_menu_version = self.next_menu_version.max(r.info.menu_version);
        self.info = r.info;
        self.categories = r.categories;
        self.items = r.items.into_iter().map(|i| (i.id, i)).collect();
        self.tables = new_tables;
        self.render_menu();
        if accepting_changed {
            let accepting = self.info.accepting_orders;
            self.publish(None, |seq| ServerMsg::Restaurant {
                seq,
                accepting_orders: accepting,
            });
        }
        if version_changed {
            let version = self.info.menu_version.to_string();
            self.publish(None, |seq| ServerMsg::Menu { seq, version });
        }
        (dead, added)
    }
}

/// Makes the actor panic inside a handler, as a bug would (restart tests only).
#[cfg(feature = "fault-injection")]
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct InjectPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectPanic> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, _: InjectPanic, _ctx: &mut Context<Self>) {
        panic!("injected fault in restaurant {}", self.id);
    }
}
