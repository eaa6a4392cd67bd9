//! # OrderBook — a restaurant's live orders, validated, priced, numbered and moved along
//!
//! The rules of ordering, free of actors and of the database: an order is checked against the menu and
//! its table, priced on the server from the menu (never from the client; see `pricing`), given the
//! next ticket of the restaurant's business day, and then moved through the status state machine. A
//! status change is checked against the *projected* status (every change already sent to the writer),
//! so two quick taps cannot both move an order from the same status; a change is applied only when its
//! commit is known, and undone from the projection when it failed. Recent idempotency keys live here
//! too.

use chrono::{DateTime, NaiveDate, Utc};
use indexmap::IndexMap;
use scan2order_schema::domain::{OrderStatus, TableId};
use scan2order_schema::models::{OrderRow, StoredOrder};
use scan2order_schema::wire::{self, PlaceOrderLine};
use uuid::Uuid;

use super::event_ring::Audience;
use super::menu::Menu;
use super::pricing::{check_allergies, check_note, price_lines};
use super::{EngineError, Missing};

/// The stored status of an order row.
pub(crate) fn stored_status(row: &OrderRow) -> OrderStatus {
    row.status
}

/// An order that is neither served nor cancelled.
#[derive(Clone, Debug)]
struct LiveOrder {
    /// The order as committed; its row's status is the committed status.
    stored: StoredOrder,
    /// The status after every change sent to the writer; transitions are checked against it.
    projected: OrderStatus,
    /// A status change of unknown outcome is being settled: further changes wait (503) until the
    /// stored status is known, or a retry of the same change could be written twice.
    unsettled: bool,
    /// The request ids of changes sent to the writer and not answered yet: a retry of one of them
    /// waits for its answer (503) instead of being refused as a repeat of its own projection.
    in_flight: Vec<String>,
}

impl LiveOrder {
    fn new(stored: StoredOrder) -> LiveOrder {
        LiveOrder {
            projected: stored_status(&stored.row),
            stored,
            unsettled: false,
            in_flight: Vec::new(),
        }
    }

    fn committed(&self) -> OrderStatus {
        stored_status(&self.stored.row)
    }
}

/// What a guest asks for, as the order book checks it.
pub(crate) struct OrderRequest<'a> {
    pub table_id: TableId,
    pub table_token: &'a str,
    pub phone: &'a str,
    pub idempotency_key: &'a str,
    pub lines: &'a [PlaceOrderLine],
    pub note: Option<&'a str>,
    /// The table's declared allergies, as sent.
    pub allergies: Option<&'a [String]>,
}

/// A committed status change, as the stream tells it.
#[derive(Debug)]
pub(crate) struct StatusApplied {
    /// The order after the change, phone masked.
    pub order: wire::Order,
    pub table: TableId,
}

/// What settling a write of unknown outcome found.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Memory already agreed with the database.
    Unchanged,
    /// An order nobody had heard of was committed: it is live now (phone masked, for the stream).
    Adopted(wire::Order, TableId),
    /// A status change was committed: the order's new status, for the stream.
    StatusChanged(StatusApplied),
}

/// A restaurant's live orders, ticket counter and recent idempotency keys.
#[derive(Debug)]
pub(crate) struct OrderBook {
    /// Every live order, oldest first (the kitchen's order).
    live: IndexMap<Uuid, LiveOrder>,
    /// The business day the ticket counter counts in, in the restaurant's time zone.
    ticket_day: NaiveDate,
    /// The last ticket given out on `ticket_day` (tickets start at 1 every day).
    ticket_last: i32,
    /// Recent idempotency keys, oldest first: the order each created and the phone that placed it.
    /// Older keys are found by the database's unique constraint.
    recent_keys: IndexMap<String, (Uuid, String)>,
    /// How many keys `recent_keys` keeps.
    recent_capacity: usize,
}

impl OrderBook {
    pub(crate) fn new(
        live: Vec<StoredOrder>,
        ticket_day: NaiveDate,
        ticket_last: i32,
        recent_capacity: usize,
    ) -> OrderBook {
        OrderBook {
            live: live
                .into_iter()
                .map(|stored| (stored.row.id, LiveOrder::new(stored)))
                .collect(),
            ticket_day,
            ticket_last,
            recent_keys: IndexMap::new(),
            recent_capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// A live order as committed.
    pub(crate) fn get(&self, id: Uuid) -> Option<&StoredOrder> {
        self.live.get(&id).map(|o| &o.stored)
    }

    /// The live orders an audience may see, oldest first, phones masked.
    pub(crate) fn snapshot(&self, audience: Audience) -> Vec<wire::Order> {
        self.live
            .values()
            .filter(|o| audience.sees(Some(TableId::from(o.stored.row.table_id))))
            .map(|o| o.stored.to_wire(false))
            .collect()
    }

    /// The order and phone a recent key created.
    pub(crate) fn recent(&self, key: &str) -> Option<(Uuid, &str)> {
        self.recent_keys
            .get(key)
            .map(|(id, phone)| (*id, phone.as_str()))
    }

    pub(crate) fn remember_key(&mut self, key: String, order: Uuid, phone: String) {
        self.recent_keys.insert(key, (order, phone));
        while self.recent_keys.len() > self.recent_capacity {
            self.recent_keys.shift_remove_index(0);
        }
    }

    /// Makes a committed order live; the masked order for the stream, or `None` when it is finished
    /// already or was live before.
    pub(crate) fn add(&mut self, stored: StoredOrder) -> Option<(wire::Order, TableId)> {
        if stored_status(&stored.row).is_final() || self.live.contains_key(&stored.row.id) {
            return None;
        }
        let masked = stored.to_wire(false);
        let table = TableId::from(stored.row.table_id);
        self.live.insert(stored.row.id, LiveOrder::new(stored));
        Some((masked, table))
    }

    /// The next ticket of the business day `today` (a new day starts again at 1).
    fn next_ticket(&mut self, today: NaiveDate) -> (NaiveDate, i32) {
        if today != self.ticket_day {
            self.ticket_day = today;
            self.ticket_last = 0;
        }
        self.ticket_last += 1;
        (self.ticket_day, self.ticket_last)
    }

    /// Validates and prices an order against the menu, and numbers it; the rows to write.
    pub(crate) fn prepare(
        &mut self,
        menu: &Menu,
        request: &OrderRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<StoredOrder, EngineError> {
        if !menu.info.accepting_orders {
            return Err(EngineError::NotAccepting);
        }
        let (table_id, table_label) = menu
            .table_for(request.table_id, request.table_token)
            .map(|t| (t.id, t.label.clone()))
            .ok_or(EngineError::NotFound(Missing::Table))?;
        let order_note = check_note("note", request.note)?;
        let order_id = Uuid::now_v7();
        let allergies = check_allergies(request.allergies)?;
        let (items, total) = price_lines(order_id, request.lines, menu, &allergies)?;
        let (business_day, ticket_no) = self.next_ticket(now.with_timezone(&menu.tz).date_naive());
        Ok(StoredOrder {
            row: OrderRow {
                id: order_id,
                restaurant_id: menu.info.id,
                table_id,
                table_label,
                ticket_no,
                business_day,
                phone: request.phone.to_string(),
                status: OrderStatus::Placed,
                note: order_note,
                total_cents: total,
                currency: menu.info.currency.clone(),
                idempotency_key: request.idempotency_key.to_string(),
                created_at: now,
                updated_at: now,
                allergies,
                allergy_ack_by: None,
                allergy_ack_at: None,
            },
            items,
        })
    }

    /// Starts a status change: checked against the projected status, which it then becomes. `None`
    /// when the order is not live (finished, or not this restaurant's); otherwise the row as committed.
    /// A change carrying the `request` id of one still being written is `Unavailable` (its client
    /// retried early: the first attempt's answer is on its way).
    ///
    /// An order with declared allergies leaves `placed` forward only with `allergy_ack` (a member of
    /// staff read them), else `AllergyAckRequired`; cancelling needs none. The flag in the answer says
    /// whether this change records the acknowledgement.
    pub(crate) fn begin_change(
        &mut self,
        id: Uuid,
        to: OrderStatus,
        request: Option<&str>,
        allergy_ack: bool,
    ) -> Option<Result<(&OrderRow, bool), EngineError>> {
        let live = self.live.get_mut(&id)?;
        if live.unsettled || request.is_some_and(|r| live.in_flight.iter().any(|f| f == r)) {
            return Some(Err(EngineError::Unavailable));
        }
        let from = live.projected;
        if !from.can_become(to) {
            return Some(Err(EngineError::InvalidTransition { from, to }));
        }
        let records_ack = from == OrderStatus::Placed
            && to != OrderStatus::Cancelled
            && live.stored.needs_allergy_ack();
        if records_ack && !allergy_ack {
            return Some(Err(EngineError::AllergyAckRequired));
        }
        live.projected = to;
        if let Some(r) = request {
            live.in_flight.push(r.to_string());
        }
        Some(Ok((&live.stored.row, records_ack)))
    }

    /// The writer answered the change `request` started (committed, refused or unknown).
    pub(crate) fn change_answered(&mut self, id: Uuid, request: Option<&str>) {
        if let (Some(live), Some(r)) = (self.live.get_mut(&id), request) {
            if let Some(i) = live.in_flight.iter().position(|f| f == r) {
                live.in_flight.swap_remove(i);
            }
        }
    }

    /// A change sent by [`begin_change`](Self::begin_change) was not stored: the projection goes back
    /// to the committed status; with `unknown`, the order takes no change until it is settled.
    pub(crate) fn change_failed(&mut self, id: Uuid, unknown: bool) {
        if let Some(live) = self.live.get_mut(&id) {
            live.projected = live.committed();
            live.unsettled |= unknown;
        }
    }

    /// A change sent by [`begin_change`](Self::begin_change) committed: the order takes its new status
    /// (and the allergy acknowledgement `ack` it recorded: by whom, when), and leaves the book when
    /// that status is final.
    pub(crate) fn change_committed(
        &mut self,
        id: Uuid,
        to: OrderStatus,
        at: DateTime<Utc>,
        ack: Option<(Option<Uuid>, DateTime<Utc>)>,
    ) -> Option<StatusApplied> {
        let live = self.live.get_mut(&id)?;
        live.stored.row.status = to;
        live.stored.row.updated_at = at;
        if let Some((by, at)) = ack {
            if live.stored.row.allergy_ack_at.is_none() {
                live.stored.row.allergy_ack_by = by;
                live.stored.row.allergy_ack_at = Some(at);
            }
        }
        let applied = StatusApplied {
            order: live.stored.to_wire(false),
            table: TableId::from(live.stored.row.table_id),
        };
        if to.is_final() {
            self.live.shift_remove(&id);
        }
        Some(applied)
    }

    /// Makes memory agree with what a write of unknown outcome left in the database (`found`: the
    /// order as stored, `None` when it was never written).
    pub(crate) fn settle(&mut self, id: Uuid, found: Option<StoredOrder>) -> Settled {
        // Whatever was stored is known now: the order takes status changes again.
        if let Some(live) = self.live.get_mut(&id) {
            live.unsettled = false;
        }
        let Some(stored) = found else {
            return Settled::Unchanged;
        };
        let db_status = stored_status(&stored.row);
        let Some(live) = self.live.get_mut(&id) else {
            return match self.add(stored) {
                Some((order, table)) => Settled::Adopted(order, table),
                None => Settled::Unchanged,
            };
        };
        if db_status == live.committed() {
            return Settled::Unchanged;
        }
        // Keep a projection that is still ahead of the stored status (later changes are on their way
        // to the writer); otherwise the stored status is the truth.
        if !db_status.can_become(live.projected) {
            live.projected = db_status;
        }
        let ack = stored
            .row
            .allergy_ack_at
            .map(|at| (stored.row.allergy_ack_by, at));
        match self.change_committed(id, db_status, stored.row.updated_at, ack) {
            Some(applied) => Settled::StatusChanged(applied),
            None => Settled::Unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use scan2order_schema::domain::{MenuItemId, MAX_ORDER_LINES};
    use scan2order_schema::models::MenuItem;
    use scan2order_schema::models::{MenuCategory, Restaurant, RestaurantTable};

    struct Fixture {
        menu: Menu,
        table: TableId,
        other_table: TableId,
        pizza: MenuItemId,
        soup: MenuItemId,
    }

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .expect("instant")
    }

    fn fixture() -> Fixture {
        let now = at(2026, 3, 1, 12);
        let rid = Uuid::new_v4();
        let category = Uuid::new_v4();
        let info = Restaurant {
            id: rid,
            slug: "trattoria".into(),
            name: "Trattoria".into(),
            currency: "EUR".into(),
            time_zone: "Europe/Rome".into(),
            accepting_orders: true,
            menu_version: 3,
            ticket_warn_after_s: 600,
            ticket_late_after_s: 1200,
            created_at: now,
            updated_at: now,
        };
        let item = |name: &str, price: i64, available: bool| MenuItem {
            id: Uuid::new_v4(),
            restaurant_id: rid,
            category_id: category,
            name: name.into(),
            description: String::new(),
            price_cents: price,
            available,
            position: 0,
            tags: Vec::new(),
            deleted_at: None,
            created_at: now,
            updated_at: now,
            allergens: Vec::new(),
            image_hash: None,
        };
        let table = |label: &str, token: &str, active: bool| RestaurantTable {
            id: Uuid::new_v4(),
            restaurant_id: rid,
            label: label.into(),
            token: token.into(),
            active,
            deleted_at: None,
            created_at: now,
        };
        let (pizza, soup) = (item("Pizza", 1250, true), item("Soup", 700, false));
        let (t1, t2) = (table("T1", "tok-1", true), table("T2", "tok-2", false));
        Fixture {
            table: t1.id.into(),
            other_table: t2.id.into(),
            pizza: pizza.id.into(),
            soup: soup.id.into(),
            menu: Menu::new(
                info,
                vec![MenuCategory {
                    id: category,
                    restaurant_id: rid,
                    name: "Mains".into(),
                    position: 0,
                    created_at: now,
                }],
                vec![pizza, soup],
                Default::default(),
                vec![t1, t2],
            ),
        }
    }

    fn line(item: MenuItemId, quantity: i32) -> PlaceOrderLine {
        PlaceOrderLine {
            menu_item_id: item,
            quantity,
            note: None,
            options: None,
        }
    }

    fn request<'a>(f: &Fixture, key: &'a str, lines: &'a [PlaceOrderLine]) -> OrderRequest<'a> {
        OrderRequest {
            table_id: f.table,
            table_token: "tok-1",
            phone: "+393331234567",
            idempotency_key: key,
            lines,
            note: None,
            allergies: None,
        }
    }

    fn book() -> OrderBook {
        OrderBook::new(
            Vec::new(),
            NaiveDate::from_ymd_opt(2026, 3, 1).expect("date"),
            0,
            2,
        )
    }

    fn placed(book: &mut OrderBook, f: &Fixture, key: &str) -> Uuid {
        let lines = [line(f.pizza, 1)];
        let stored = book
            .prepare(&f.menu, &request(f, key, &lines), at(2026, 3, 1, 12))
            .expect("accepted");
        let id = stored.row.id;
        assert!(book.add(stored).is_some());
        id
    }

    #[test]
    fn an_order_is_priced_from_the_menu_and_numbered() {
        let f = fixture();
        let mut book = book();
        let lines = [line(f.pizza, 3)];
        let mut req = request(&f, "k1", &lines);
        req.note = Some("  no onions  ");
        let order = book
            .prepare(&f.menu, &req, at(2026, 3, 1, 12))
            .expect("accepted");
        assert_eq!(order.row.total_cents, 3750);
        assert_eq!(order.row.currency, "EUR");
        assert_eq!(order.row.table_label, "T1");
        assert_eq!(order.row.ticket_no, 1);
        assert_eq!(order.row.note, "no onions");
        assert_eq!(order.row.status, OrderStatus::Placed);
        assert_eq!(order.items.len(), 1);
        assert_eq!(order.items[0].unit_price_cents, 1250);
        assert_eq!(order.items[0].name, "Pizza");
        assert_eq!(order.items[0].line_no, 1);
        let second = book
            .prepare(&f.menu, &req, at(2026, 3, 1, 13))
            .expect("accepted");
        assert_eq!(second.row.ticket_no, 2);
    }

    #[test]
    fn tickets_start_again_on_the_restaurants_next_day() {
        let f = fixture();
        let mut book = book();
        let lines = [line(f.pizza, 1)];
        let req = request(&f, "k", &lines);
        // 23:30 UTC on 1 March is already 2 March in Rome (UTC+1 in winter).
        let late = Utc
            .with_ymd_and_hms(2026, 3, 1, 23, 30, 0)
            .single()
            .expect("instant");
        book.prepare(&f.menu, &req, at(2026, 3, 1, 12))
            .expect("accepted");
        let next_day = book.prepare(&f.menu, &req, late).expect("accepted");
        assert_eq!(next_day.row.ticket_no, 1);
        assert_eq!(
            next_day.row.business_day,
            NaiveDate::from_ymd_opt(2026, 3, 2).expect("date")
        );
    }

    #[test]
    fn bad_orders_are_refused_with_the_field_named() {
        let f = fixture();
        let mut book = book();
        let now = at(2026, 3, 1, 12);
        let refuse = |book: &mut OrderBook, lines: &[PlaceOrderLine]| {
            book.prepare(&f.menu, &request(&f, "k", lines), now)
                .expect_err("refused")
        };
        assert!(
            matches!(refuse(&mut book, &[]), EngineError::Invalid(m) if m.starts_with("items:"))
        );
        assert!(
            matches!(refuse(&mut book, &[line(f.pizza, 0)]), EngineError::Invalid(m) if m.starts_with("items[0].quantity"))
        );
        assert!(
            matches!(refuse(&mut book, &[line(f.pizza, 1), line(f.pizza, 100)]), EngineError::Invalid(m) if m.starts_with("items[1].quantity"))
        );
        assert!(
            matches!(refuse(&mut book, &[line(MenuItemId::from(Uuid::new_v4()), 1)]), EngineError::Invalid(m) if m.starts_with("items[0].menu_item_id"))
        );
        let many: Vec<_> = (0..=MAX_ORDER_LINES).map(|_| line(f.pizza, 1)).collect();
        assert!(matches!(refuse(&mut book, &many), EngineError::Invalid(_)));
        let mut noted = line(f.pizza, 1);
        noted.note = Some("a\u{7}b".into());
        assert!(
            matches!(refuse(&mut book, &[noted]), EngineError::Invalid(m) if m == "items[0].note: control characters are not allowed")
        );
        // Nothing refused used a ticket.
        let ok = book
            .prepare(&f.menu, &request(&f, "k", &[line(f.pizza, 1)]), now)
            .expect("accepted");
        assert_eq!(ok.row.ticket_no, 1);
    }

    #[test]
    fn sold_out_dishes_are_named_once_each() {
        let f = fixture();
        let lines = [line(f.soup, 1), line(f.pizza, 1), line(f.soup, 2)];
        let err = book()
            .prepare(&f.menu, &request(&f, "k", &lines), at(2026, 3, 1, 12))
            .expect_err("refused");
        assert_eq!(
            err,
            EngineError::ItemUnavailable {
                items: vec![f.soup],
                options: vec![]
            }
        );
    }

    #[test]
    fn a_wrong_token_or_an_inactive_table_is_not_found() {
        let f = fixture();
        let mut book = book();
        let lines = [line(f.pizza, 1)];
        let mut req = request(&f, "k", &lines);
        req.table_token = "tok-2";
        assert_eq!(
            book.prepare(&f.menu, &req, at(2026, 3, 1, 12))
                .expect_err("refused"),
            EngineError::NotFound(Missing::Table)
        );
        req.table_id = f.other_table;
        assert_eq!(
            book.prepare(&f.menu, &req, at(2026, 3, 1, 12))
                .expect_err("refused"),
            EngineError::NotFound(Missing::Table)
        );
    }

    #[test]
    fn a_paused_restaurant_refuses_orders() {
        let mut f = fixture();
        f.menu.info.accepting_orders = false;
        let lines = [line(f.pizza, 1)];
        assert_eq!(
            book()
                .prepare(&f.menu, &request(&f, "k", &lines), at(2026, 3, 1, 12))
                .expect_err("refused"),
            EngineError::NotAccepting
        );
    }

    #[test]
    fn an_absurd_total_is_refused_not_wrapped() {
        let mut f = fixture();
        let pizza = f.pizza.get();
        f.menu
            .items
            .get_mut(&pizza)
            .expect("on the menu")
            .price_cents = i64::MAX / 2;
        let lines = [line(f.pizza, 3)];
        let err = book()
            .prepare(&f.menu, &request(&f, "k", &lines), at(2026, 3, 1, 12))
            .expect_err("refused");
        assert_eq!(err, EngineError::Invalid("items: total too large".into()));
    }

    #[test]
    fn two_quick_changes_cannot_both_start_from_the_same_status() {
        let f = fixture();
        let mut book = book();
        let id = placed(&mut book, &f, "k");
        assert!(matches!(
            book.begin_change(id, OrderStatus::Accepted, None, false),
            Some(Ok(_))
        ));
        // The second tap is checked against the projected status (accepted), not the stored one.
        assert_eq!(
            book.begin_change(id, OrderStatus::Accepted, None, false)
                .expect("in the book")
                .expect_err("refused"),
            EngineError::InvalidTransition {
                from: OrderStatus::Accepted,
                to: OrderStatus::Accepted
            }
        );
        assert!(matches!(
            book.begin_change(id, OrderStatus::Preparing, None, false),
            Some(Ok(_))
        ));
        let t = at(2026, 3, 1, 12);
        let applied = book
            .change_committed(id, OrderStatus::Accepted, t, None)
            .expect("in the book");
        assert_eq!(applied.order.status, OrderStatus::Accepted);
        assert_eq!(applied.table, f.table);
        assert_eq!(
            applied.order.phone,
            book.get(id).expect("in the book").to_wire(false).phone
        );
        assert_ne!(
            applied.order.phone, "+393331234567",
            "the stream masks phones"
        );
    }

    #[test]
    fn a_failed_change_is_undone_and_an_unknown_one_blocks_until_settled() {
        let f = fixture();
        let mut book = book();
        let id = placed(&mut book, &f, "k");
        book.begin_change(id, OrderStatus::Accepted, None, false)
            .expect("in the book")
            .expect("accepted");
        book.change_failed(id, false);
        assert!(matches!(
            book.begin_change(id, OrderStatus::Accepted, None, false),
            Some(Ok(_))
        ));
        book.change_failed(id, true);
        assert_eq!(
            book.begin_change(id, OrderStatus::Accepted, None, false)
                .expect("in the book")
                .expect_err("refused"),
            EngineError::Unavailable
        );
        // The database says it did commit: the order is accepted, and takes changes again.
        let mut stored = book.get(id).expect("in the book").clone();
        stored.row.status = OrderStatus::Accepted;
        match book.settle(id, Some(stored)) {
            Settled::StatusChanged(applied) => {
                assert_eq!(applied.order.status, OrderStatus::Accepted)
            }
            other => panic!("expected a status change, got {other:?}"),
        }
        assert_eq!(
            stored_status(&book.get(id).expect("in the book").row),
            OrderStatus::Accepted
        );
        assert!(matches!(
            book.begin_change(id, OrderStatus::Ready, None, false),
            Some(Ok(_))
        ));
    }

    #[test]
    fn a_retry_of_a_change_still_being_written_waits_for_its_answer() {
        let f = fixture();
        let mut book = book();
        let id = placed(&mut book, &f, "k");
        assert!(matches!(
            book.begin_change(id, OrderStatus::Accepted, Some("tap-1"), false),
            Some(Ok(_))
        ));
        assert_eq!(
            book.begin_change(id, OrderStatus::Accepted, Some("tap-1"), false)
                .expect("in the book")
                .expect_err("refused"),
            EngineError::Unavailable
        );
        // Another tap repeating the projected status is still a conflict.
        assert_eq!(
            book.begin_change(id, OrderStatus::Accepted, Some("tap-2"), false)
                .expect("in the book")
                .expect_err("refused"),
            EngineError::InvalidTransition {
                from: OrderStatus::Accepted,
                to: OrderStatus::Accepted
            }
        );
        book.change_answered(id, Some("tap-1"));
        book.change_committed(id, OrderStatus::Accepted, at(2026, 3, 1, 12), None)
            .expect("in the book");
        // Answered: the same id is no longer in flight (a later retry is recognised from the history).
        assert_eq!(
            book.begin_change(id, OrderStatus::Accepted, Some("tap-1"), false)
                .expect("in the book")
                .expect_err("refused"),
            EngineError::InvalidTransition {
                from: OrderStatus::Accepted,
                to: OrderStatus::Accepted
            }
        );
    }

    #[test]
    fn a_final_status_takes_the_order_out_of_the_book() {
        let f = fixture();
        let mut book = book();
        let id = placed(&mut book, &f, "k");
        book.begin_change(id, OrderStatus::Cancelled, None, false)
            .expect("in the book")
            .expect("accepted");
        book.change_committed(id, OrderStatus::Cancelled, at(2026, 3, 1, 12), None)
            .expect("accepted");
        assert!(book.is_empty());
        assert!(book
            .begin_change(id, OrderStatus::Accepted, None, false)
            .is_none());
        assert!(book
            .change_committed(id, OrderStatus::Served, at(2026, 3, 1, 12), None)
            .is_none());
    }

    #[test]
    fn settling_adopts_an_order_that_did_commit_and_ignores_one_that_did_not() {
        let f = fixture();
        let mut book = book();
        let lines = [line(f.pizza, 2)];
        let stored = book
            .prepare(&f.menu, &request(&f, "k", &lines), at(2026, 3, 1, 12))
            .expect("accepted");
        let id = stored.row.id;
        assert!(matches!(book.settle(id, None), Settled::Unchanged));
        assert!(book.is_empty());
        match book.settle(id, Some(stored.clone())) {
            Settled::Adopted(order, table) => {
                assert_eq!(order.id.get(), id);
                assert_eq!(table, f.table);
            }
            other => panic!("expected adoption, got {other:?}"),
        }
        assert_eq!(book.len(), 1);
        // Settled twice (or live already): nothing new.
        assert!(matches!(book.settle(id, Some(stored)), Settled::Unchanged));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn a_kitchen_sees_every_order_and_a_table_its_own() {
        let f = fixture();
        let mut book = book();
        placed(&mut book, &f, "a");
        let mut other = book
            .prepare(
                &f.menu,
                &request(&f, "b", &[line(f.pizza, 1)]),
                at(2026, 3, 1, 12),
            )
            .expect("accepted");
        other.row.table_id = f.other_table.get();
        book.add(other);
        assert_eq!(book.snapshot(Audience::Kitchen).len(), 2);
        let mine = book.snapshot(Audience::Table(f.table));
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].table_id, f.table);
    }

    #[test]
    fn recent_keys_are_bounded_oldest_first() {
        let mut book = book();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for (i, id) in ids.iter().enumerate() {
            book.remember_key(format!("k{i}"), *id, "+1".into());
        }
        assert!(book.recent("k0").is_none());
        assert_eq!(book.recent("k1"), Some((ids[1], "+1")));
        assert_eq!(book.recent("k2"), Some((ids[2], "+1")));
    }
}
