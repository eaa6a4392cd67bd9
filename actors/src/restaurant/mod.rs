//! # RestaurantActor — one per active restaurant, on its shard's arbiter
//!
//! The single writer for one restaurant. Every change of orders, availability or "accepting orders"
//! goes through it and through its shard's [`PersistenceWriter`]; answers and broadcasts happen only
//! after the writer reports the commit ("durable before visible").
//!
//! Who talks to it: REST handlers (place order, change status, toggles, reads served from memory) and
//! socket sessions (subscribe, resume, set status), always through the shard registry.
//!
//! The actor is one mailbox around two cores that know nothing of actors or the database, and the
//! handlers that join them to the writer and the sockets. Where to look:
//! - [`order_book`]: live orders — validation, server-side pricing, tickets, the status machine;
//! - [`event_ring`]: the `(epoch, seq)` numbered stream kept for resume;
//! - [`menu`]: the committed menu, tables and settings, rendered once for guests; the kitchen toggles;
//! - [`choices`]: the dishes' option groups and options, indexed for pricing and rendering;
//! - [`orders`]: placing orders and moving them along (the write paths);
//! - [`fanout`]: sockets — hello, subscribe with replay or snapshot, unsubscribe, closes;
//! - [`reconcile`]: settling writes whose commit nobody saw;
//! - [`admin`]: admin changes, applied in commit order;
//! - [`load`]: what an actor starts from, read at activation.

mod admin;
mod choices;
mod error;
mod event_ring;
mod fanout;
mod load;
mod menu;
mod order_book;
mod orders;
mod pricing;
mod reconcile;

use std::future::Future;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use scan2order_schema::domain::{RestaurantId, TableId};
use scan2order_schema::leases::Fence;
use scan2order_schema::wire::ServerMsg;
use scan2order_schema::DbPool;

use crate::cluster::frames::{EventTap, FrameHead};
use crate::sink::close_code;
use crate::writer::{PersistenceWriter, Write, WriteError, WriteOp, WriteOutcome};

pub use admin::{AdminApplied, ApplyAdminChange};
pub use error::{EngineError, Missing};
pub use event_ring::Audience;
pub use fanout::{
    CloseAll, CloseStaffSockets, RelaySync, RelaySynced, SayHello, Subscribe, Unsubscribe,
};
pub use load::LoadedRestaurant;
pub use menu::{
    GetKitchenInfo, GetTableMenu, SetAccepting, SetAvailability, SetOptionAvailability,
    TableMenuAnswer,
};
pub use orders::{ChangeStatus, GetLiveOrders, PlaceOrder, PlacedOrder};

pub(crate) use event_ring::EventRing;
pub(crate) use fanout::{send_hello, Subscribers};
use menu::Menu;
use order_book::OrderBook;
use orders::PendingKeys;

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

/// Why a restaurant stopped on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassivateReason {
    /// No sockets, no live orders, nothing asked for `passivate_after`: its lease is let go.
    Idle,
    /// Another node owns it now.
    LeaseLost,
    /// The node is shutting down and released its leases.
    HandedOver,
}

/// Called by a restaurant that stops on its own, with its table tokens, so the registry forgets it.
pub type PassivateHook = Box<dyn FnOnce(PassivateReason, Vec<String>) + Send>;

pub struct RestaurantActor {
    /// The restaurant this actor is the single writer for.
    id: RestaurantId,
    /// The lease fence this activation writes under: every op carries it, and the writer commits
    /// nothing under a fence another node has replaced.
    fence: Fence,
    /// Its own address, weakly (it must not keep itself alive): a write refused for a stale fence
    /// tells the actor to stop.
    me: Option<actix::WeakAddr<RestaurantActor>>,
    /// The menu, tables and settings as last committed, with the guest JSON rendered from them.
    menu: Menu,
    /// Live orders, the ticket counter and recent idempotency keys.
    orders: OrderBook,
    /// The numbered events of this activation, kept for resume.
    ring: EventRing,
    /// The sockets that receive the events: kitchens and tables.
    subscribers: Subscribers,
    /// Idempotency keys whose order is being written, with the retries waiting for its answer.
    pending_keys: PendingKeys,
    /// The shard's persistence writer: every change commits through it.
    writer: Addr<PersistenceWriter>,
    /// Reads outside the write path: admin changes, settling unknown outcomes, finished orders.
    pool: DbPool,
    config: RestaurantConfig,
    /// When the restaurant last handled a request (for passivation).
    last_used: Instant,
    /// Requests handled since activation (the busiest-restaurant figures).
    handled: u64,
    /// Idleness checks made (operators and tests see passivation is being considered).
    idle_checks: u64,
    /// Tells the registry this restaurant stopped for idleness; taken when it fires.
    on_passivate: Option<PassivateHook>,
    /// In a fleet: where every event also goes, once, for the nodes relaying it to their sockets.
    tap: Option<EventTap>,
}

/// How a write sent to the persistence writer ended, as the restaurant acts on it.
pub(crate) enum Committed {
    /// The writer committed the op's transaction (or, for an order, found it stored already, or
    /// found its session ended and wrote nothing: see [`WriteOutcome`]).
    Stored(WriteOutcome),
    /// Certainly not written.
    Refused(EngineError),
    /// Nobody knows whether it committed (the database went away mid-commit, or the writer did):
    /// it must be settled by reading it back.
    Unknown,
}

impl Committed {
    /// The outcome when the op was stored; the error to answer with otherwise.
    pub(crate) fn stored(self) -> Result<WriteOutcome, EngineError> {
        match self {
            Committed::Stored(outcome) => Ok(outcome),
            Committed::Refused(e) => Err(e),
            Committed::Unknown => Err(EngineError::Unavailable),
        }
    }
}

impl RestaurantActor {
    pub fn new(
        loaded: LoadedRestaurant,
        fence: Fence,
        writer: Addr<PersistenceWriter>,
        pool: DbPool,
        config: RestaurantConfig,
    ) -> Self {
        let LoadedRestaurant {
            info,
            categories,
            items,
            groups,
            options,
            tables,
            live,
            ticket_day,
            ticket_last,
        } = loaded;
        RestaurantActor {
            id: info.id.into(),
            fence,
            me: None,
            menu: Menu::new(
                info,
                categories,
                items,
                choices::Choices::new(groups, options),
                tables,
            ),
            orders: OrderBook::new(live, ticket_day, ticket_last, config.recent_keys),
            ring: EventRing::new(config.ring_size),
            subscribers: Subscribers::default(),
            pending_keys: PendingKeys::default(),
            writer,
            pool,
            config,
            last_used: Instant::now(),
            handled: 0,
            idle_checks: 0,
            on_passivate: None,
            tap: None,
        }
    }

    pub fn id(&self) -> RestaurantId {
        self.id
    }

    /// What to call when this restaurant stops for idleness.
    pub fn with_passivate_hook(mut self, hook: PassivateHook) -> Self {
        self.on_passivate = Some(hook);
        self
    }

    /// Publishes every event to the fleet too (cluster mode).
    pub fn with_tap(mut self, tap: EventTap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Marks a request handled (for passivation and the busiest-restaurant figures).
    fn touch(&mut self) {
        self.last_used = Instant::now();
        self.handled += 1;
    }

    fn idle(&self) -> bool {
        self.subscribers.is_empty()
            && self.orders.is_empty()
            && self.pending_keys.is_empty()
            && self.last_used.elapsed() >= self.config.passivate_after
    }

    /// Sends one op to the persistence writer; the one place a write's ending is classified.
    fn commit(&self, op: WriteOp) -> impl Future<Output = Committed> + 'static {
        let writer = self.writer.clone();
        let fence = self.fence;
        let me = self.me.clone();
        async move {
            match writer.send(Write { op, fence }).await {
                Ok(Ok(outcome)) => Committed::Stored(outcome),
                Ok(Err(WriteError::Fenced)) => {
                    if let Some(me) = me.and_then(|m| m.upgrade()) {
                        me.do_send(LeaseLost);
                    }
                    Committed::Refused(EngineError::Unavailable)
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "write failed");
                    if e.outcome_unknown() {
                        Committed::Unknown
                    } else {
                        Committed::Refused(EngineError::Unavailable)
                    }
                }
                // The writer stopped with the op in its mailbox or its transaction.
                Err(_) => Committed::Unknown,
            }
        }
    }

    /// Numbers an event, serialises it once, keeps it for resume and fans it out to the sockets that
    /// may see it (`table`: one table's, `None`: everyone's).
    fn publish(&mut self, table: Option<TableId>, build: impl FnOnce(u64) -> ServerMsg) {
        let msg = build(self.ring.next_seq());
        let text: ByteString = match serde_json::to_string(&msg) {
            Ok(s) => s.into(),
            Err(e) => {
                tracing::error!(error = %e, "event did not serialise");
                return;
            }
        };
        let seq = self.ring.push(table, text.clone());
        self.subscribers.send(table, &text);
        if let Some(tap) = &self.tap {
            let head = FrameHead::Event {
                e: self.ring.epoch().to_string(),
                s: seq,
                t: table,
            };
            tap.send(self.id, &head, text.as_bytes());
        }
    }

    /// Closes a table's sockets with 1008 (its token died), here and on every relaying node.
    fn close_table(&mut self, table: TableId) {
        self.subscribers.close_table(table, close_code::POLICY);
        if let Some(tap) = &self.tap {
            let head = FrameHead::CloseTable {
                e: self.ring.epoch().to_string(),
                t: table,
            };
            tap.send(self.id, &head, b"");
        }
    }
}

/// Bounds of how often a restaurant checks whether it is idle.
const PASSIVATION_CHECK_MIN: Duration = Duration::from_millis(100);
const PASSIVATION_CHECK_MAX: Duration = Duration::from_secs(60);

impl Actor for RestaurantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.me = Some(ctx.address().downgrade());
        let every =
            (self.config.passivate_after / 4).clamp(PASSIVATION_CHECK_MIN, PASSIVATION_CHECK_MAX);
        ctx.run_interval(every, |act, ctx| {
            act.idle_checks += 1;
            if act.idle() {
                tracing::info!(restaurant_id = %act.id, "restaurant idle; passivating");
                if let Some(hook) = act.on_passivate.take() {
                    hook(PassivateReason::Idle, act.menu.table_tokens());
                }
                ctx.stop();
            }
        });
        tracing::info!(restaurant_id = %self.id, epoch = %self.ring.epoch(), live = self.orders.len(), "restaurant active");
        if let Some(tap) = &self.tap {
            let head = FrameHead::Epoch {
                e: self.ring.epoch().to_string(),
                s: self.ring.seq(),
                node: tap.node_id().to_string(),
            };
            tap.send(self.id, &head, b"");
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(tap) = &self.tap {
            let head = FrameHead::Gone {
                e: self.ring.epoch().to_string(),
            };
            tap.send(self.id, &head, b"");
        }
    }
}

/// Another node holds the restaurant's lease now (a write was refused for a stale fence, or the
/// lease keeper did not find it among the node's leases): the actor closes its sockets with 1001, so
/// they reconnect and resume where the restaurant lives now, forgets itself and stops. Whatever it
/// still had in flight was refused by the writer and is retried by its clients.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct LeaseLost;

impl Handler<LeaseLost> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, _: LeaseLost, ctx: &mut Context<Self>) {
        tracing::warn!(restaurant_id = %self.id, fence = self.fence.fence, "lease lost; stopping");
        self.subscribers.close_all(close_code::GOING_AWAY);
        if let Some(hook) = self.on_passivate.take() {
            hook(PassivateReason::LeaseLost, self.menu.table_tokens());
        }
        ctx.stop();
    }
}

/// The node shuts down and has released the restaurant's lease: the actor closes its sockets with
/// 1001, tells relaying nodes it is gone (so they ask the next owner at once) and stops.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct HandOver;

impl Handler<HandOver> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, _: HandOver, ctx: &mut Context<Self>) {
        self.subscribers.close_all(close_code::GOING_AWAY);
        if let Some(hook) = self.on_passivate.take() {
            hook(PassivateReason::HandedOver, self.menu.table_tokens());
        }
        ctx.stop();
    }
}

/// Counts for operators and tests.
#[derive(Message, Clone)]
#[rtype(result = "RestaurantStats")]
pub struct GetStats;

#[derive(Clone, Debug, serde::Serialize)]
pub struct RestaurantStats {
    pub restaurant_id: RestaurantId,
    /// The lease fence this activation writes under.
    pub fence: i64,
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
            fence: self.fence.fence,
            shard: 0,
            epoch: self.ring.epoch().to_string(),
            seq: self.ring.seq(),
            live_orders: self.orders.len(),
            kitchen_sockets: self.subscribers.kitchen_count(),
            table_sockets: self.subscribers.table_count(),
            messages: self.handled,
            idle_checks: self.idle_checks,
        })
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
