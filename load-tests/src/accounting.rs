//! Completeness accounting: every event meant for a socket arrived exactly once and in `seq` order —
//! counted, not assumed.
//!
//! Two independent checks:
//! - per socket, a [`SeqTrack`]: `seq` must strictly increase; anything at or below the last one seen is
//!   a duplicate (or a reordering, which the protocol forbids just the same). A kitchen socket sees every
//!   event of its restaurant, so a hole in its `seq` is a loss the server cannot explain away.
//! - per event the tool caused, the [`Ledger`]: how many fresh deliveries it should get (the kitchen
//!   sockets of its restaurant, plus the table sockets of its table — or of every table for a menu
//!   toggle) against how many it got. Short is a loss, over is an excess; a delivery to the wrong table
//!   is misrouted (an isolation failure).
//!
//! Events are matched to what the tool did without waiting for HTTP answers: orders carry a tag in
//! their note (`lt:<tag>`), status changes are keyed by order id and status, toggles by item and value.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use scan2order_schema::domain::OrderStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What one socket saw of one `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// New; `gap` events were skipped since the last one (a loss on a kitchen socket).
    Fresh { gap: u64 },
    /// At or below the last `seq` seen: delivered twice or out of order.
    Duplicate,
}

/// The `seq` stream of one logical socket (it keeps its position across reconnects, as resume does).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqTrack {
    last: u64,
}

impl SeqTrack {
    /// Starts after `seq` (the `hello` a resume continues from, or a snapshot's `seq`).
    pub fn starting_at(seq: u64) -> SeqTrack {
        SeqTrack { last: seq }
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    pub fn observe(&mut self, seq: u64) -> Seen {
        if seq <= self.last {
            return Seen::Duplicate;
        }
        let gap = seq - self.last - 1;
        self.last = seq;
        Seen::Fresh { gap }
    }
}

/// Who a delivery went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Kitchen { restaurant: u32 },
    Table { restaurant: u32, table: u32 },
}

/// Deliveries one event is owed and has had.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// Unix ns when the tool sent the request that causes the event (0: not yet known).
    sent_ns: u64,
    restaurant: u32,
    /// The table for order events; `None` for restaurant-wide events.
    table: Option<u32>,
    /// The request failed: the event may or may not come, so it is not owed.
    failed: bool,
    /// The request succeeded (or the event was seen): deliveries are owed.
    committed: bool,
    kitchen_rx: u32,
    table_rx: u32,
    /// Arrivals seen before `sent_ns` was known (cross-process toggles), resolved later.
    early: Vec<u64>,
    last_arrival_ns: u64,
    first_arrival_ns: u64,
}

impl Tally {
    fn arrive(&mut self, audience: Audience, at_ns: u64) -> Option<u64> {
        match audience {
            Audience::Kitchen { .. } => self.kitchen_rx += 1,
            Audience::Table { .. } => self.table_rx += 1,
        }
        self.last_arrival_ns = self.last_arrival_ns.max(at_ns);
        if self.first_arrival_ns == 0 || at_ns < self.first_arrival_ns {
            self.first_arrival_ns = at_ns;
        }
        if self.sent_ns == 0 {
            self.early.push(at_ns);
            None
        } else {
            Some(at_ns.saturating_sub(self.sent_ns))
        }
    }
}

/// The totals of a run's completeness check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Deliveries owed to sockets for events the tool caused.
    pub expected: u64,
    /// Fresh deliveries of those events.
    pub delivered: u64,
    /// Owed but never delivered.
    pub lost: u64,
    /// Delivered more often than there are sockets to receive them (without a `seq` repeat).
    pub excess: u64,
    /// Deliveries whose `seq` was not above the socket's last one.
    pub duplicates: u64,
    /// Holes in kitchen `seq` streams (events the kitchen never got, whoever caused them).
    pub gaps: u64,
    /// An order event delivered to another table's socket.
    pub misrouted: u64,
    /// Events the tool did not cause or could not match (someone else used the server).
    pub unmatched: u64,
    /// Resumes the server answered with a snapshot instead of a replay (events in between are gone).
    pub snapshot_fallbacks: u64,
    /// Events of failed requests that arrived anyway (committed but unanswered).
    pub from_failed_requests: u64,
}

impl Completeness {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.excess == 0
            && self.duplicates == 0
            && self.gaps == 0
            && self.misrouted == 0
    }

    pub fn merge(&mut self, o: &Completeness) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.excess += o.excess;
        self.duplicates += o.duplicates;
        self.gaps += o.gaps;
        self.misrouted += o.misrouted;
        self.unmatched += o.unmatched;
        self.snapshot_fallbacks += o.snapshot_fallbacks;
        self.from_failed_requests += o.from_failed_requests;
    }
}

/// How many sockets listen where: fixed for a run (a logical socket that reconnects resumes and still
/// owes nothing to nobody).
#[derive(Clone, Debug, Default)]
pub struct Listeners {
    pub kitchen: HashMap<u32, u32>,
    pub tables: HashMap<(u32, u32), u32>,
    pub tables_of_restaurant: HashMap<u32, u32>,
}

impl Listeners {
    pub fn add(&mut self, a: Audience) {
        match a {
            Audience::Kitchen { restaurant } => *self.kitchen.entry(restaurant).or_default() += 1,
            Audience::Table { restaurant, table } => {
                *self.tables.entry((restaurant, table)).or_default() += 1;
                *self.tables_of_restaurant.entry(restaurant).or_default() += 1;
            }
        }
    }

    fn owed(&self, restaurant: u32, table: Option<u32>) -> (u64, u64) {
        let k = u64::from(self.kitchen.get(&restaurant).copied().unwrap_or(0));
        let t = match table {
            Some(t) => self.tables.get(&(restaurant, t)).copied().unwrap_or(0),
            None => self
                .tables_of_restaurant
                .get(&restaurant)
                .copied()
                .unwrap_or(0),
        };
        (k, u64::from(t))
    }
}

#[derive(Default)]
struct Inner {
    listeners: Listeners,
    orders: HashMap<u64, Tally>,
    order_ids: HashMap<Uuid, u64>,
    statuses: HashMap<(Uuid, OrderStatus), Tally>,
    toggles: HashMap<u64, Tally>,
    toggle_keys: HashMap<(Uuid, bool), u64>,
    duplicates: u64,
    gaps: u64,
    misrouted: u64,
    unmatched: u64,
    snapshot_fallbacks: u64,
}

/// The events the tool caused and the deliveries they got.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

/// The note that tags an order so its events can be matched before its HTTP answer arrives.
pub fn order_note(tag: u64) -> String {
    format!("lt:{tag}")
}

/// The tag in an order note, if the tool wrote it.
pub fn tag_of_note(note: &str) -> Option<u64> {
    note.strip_prefix("lt:")?.parse().ok()
}

/// A summary of one toggle, for fan-out figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ToggleSummary {
    pub id: u64,
    pub sent_ns: u64,
    pub deliveries: u64,
    pub first_arrival_ns: u64,
    pub last_arrival_ns: u64,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still meaningful.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a listening socket (before any event is caused).
    pub fn listen(&self, a: Audience) {
        self.lock().listeners.add(a);
    }

    // ---- orders -------------------------------------------------------------------------------------

    /// An order is about to be sent; deliveries are owed once it succeeds.
    pub fn order_sending(&self, tag: u64, restaurant: u32, table: u32) {
        self.lock().orders.insert(
            tag,
            Tally {
                restaurant,
                table: Some(table),
                ..Tally::default()
            },
        );
    }

    pub fn order_sent_at(&self, tag: u64, sent_ns: u64) {
        if let Some(t) = self.lock().orders.get_mut(&tag) {
            t.sent_ns = sent_ns;
        }
    }

    /// The order was answered 2xx with this id.
    pub fn order_committed(&self, tag: u64, id: Uuid) {
        let mut g = self.lock();
        if let Some(t) = g.orders.get_mut(&tag) {
            t.committed = true;
        }
        g.order_ids.insert(id, tag);
    }

    pub fn order_failed(&self, tag: u64) {
        if let Some(t) = self.lock().orders.get_mut(&tag) {
            t.failed = true;
        }
    }

    /// An `order_created` arrived. Returns the send → arrival latency when known.
    pub fn order_arrived(
        &self,
        note: &str,
        id: Uuid,
        audience: Audience,
        at_ns: u64,
    ) -> Option<u64> {
        let mut g = self.lock();
        let Some(tag) = tag_of_note(note) else {
            g.unmatched += 1;
            return None;
        };
        g.order_ids.insert(id, tag);
        let misrouted = match g.orders.get(&tag) {
            None => {
                g.unmatched += 1;
                return None;
            }
            Some(t) => match audience {
                Audience::Table { restaurant, table } => {
                    t.restaurant != restaurant || t.table != Some(table)
                }
                Audience::Kitchen { restaurant } => t.restaurant != restaurant,
            },
        };
        if misrouted {
            g.misrouted += 1;
            return None;
        }
        g.orders
            .get_mut(&tag)
            .and_then(|t| t.arrive(audience, at_ns))
    }

    // ---- status changes -----------------------------------------------------------------------------

    pub fn status_sending(&self, id: Uuid, status: OrderStatus, restaurant: u32, table: u32) {
        self.lock().statuses.insert(
            (id, status),
            Tally {
                restaurant,
                table: Some(table),
                ..Tally::default()
            },
        );
    }

    pub fn status_sent_at(&self, id: Uuid, status: OrderStatus, sent_ns: u64) {
        if let Some(t) = self.lock().statuses.get_mut(&(id, status)) {
            t.sent_ns = sent_ns;
        }
    }

    pub fn status_done(&self, id: Uuid, status: OrderStatus, ok: bool) {
        if let Some(t) = self.lock().statuses.get_mut(&(id, status)) {
            if ok {
                t.committed = true;
            } else {
                t.failed = true;
            }
        }
    }

    pub fn status_arrived(
        &self,
        id: Uuid,
        status: OrderStatus,
        audience: Audience,
        at_ns: u64,
    ) -> Option<u64> {
        let mut g = self.lock();
        let misrouted = match g.statuses.get(&(id, status)) {
            None => {
                g.unmatched += 1;
                return None;
            }
            Some(t) => match audience {
                Audience::Table { restaurant, table } => {
                    t.restaurant != restaurant || t.table != Some(table)
                }
                Audience::Kitchen { restaurant } => t.restaurant != restaurant,
            },
        };
        if misrouted {
            g.misrouted += 1;
            return None;
        }
        g.statuses
            .get_mut(&(id, status))
            .and_then(|t| t.arrive(audience, at_ns))
    }

    // ---- menu toggles -------------------------------------------------------------------------------

    /// A toggle of `item` to `available` is about to be sent (or announced by the parent process).
    pub fn toggle_armed(&self, id: u64, restaurant: u32, item: Uuid, available: bool) {
        let mut g = self.lock();
        g.toggles.insert(
            id,
            Tally {
                restaurant,
                table: None,
                ..Tally::default()
            },
        );
        g.toggle_keys.insert((item, available), id);
    }

    /// The toggle's request went out at `sent_ns`; returns latencies of deliveries seen before.
    pub fn toggle_fired(&self, id: u64, sent_ns: u64) -> Vec<u64> {
        let mut g = self.lock();
        match g.toggles.get_mut(&id) {
            Some(t) => {
                t.sent_ns = sent_ns;
                std::mem::take(&mut t.early)
                    .into_iter()
                    .map(|a| a.saturating_sub(sent_ns))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    pub fn toggle_done(&self, id: u64, ok: bool) {
        if let Some(t) = self.lock().toggles.get_mut(&id) {
            if ok {
                t.committed = true;
            } else {
                t.failed = true;
            }
        }
    }

    pub fn toggle_arrived(
        &self,
        item: Uuid,
        available: bool,
        audience: Audience,
        at_ns: u64,
    ) -> Option<u64> {
        let mut g = self.lock();
        let Some(&id) = g.toggle_keys.get(&(item, available)) else {
            g.unmatched += 1;
            return None;
        };
        let restaurant = match audience {
            Audience::Kitchen { restaurant } | Audience::Table { restaurant, .. } => restaurant,
        };
        let wrong = g.toggles.get(&id).map(|t| t.restaurant != restaurant);
        match wrong {
            None => {
                g.unmatched += 1;
                None
            }
            Some(true) => {
                g.misrouted += 1;
                None
            }
            Some(false) => g
                .toggles
                .get_mut(&id)
                .and_then(|t| t.arrive(audience, at_ns)),
        }
    }

    /// Deliveries a toggle has had so far (to wait for a fan-out to finish).
    pub fn toggle_deliveries(&self, id: u64) -> u64 {
        self.lock()
            .toggles
            .get(&id)
            .map_or(0, |t| u64::from(t.kitchen_rx + t.table_rx))
    }

    pub fn toggle_summaries(&self) -> Vec<ToggleSummary> {
        let g = self.lock();
        let mut v: Vec<ToggleSummary> = g
            .toggles
            .iter()
            .map(|(id, t)| ToggleSummary {
                id: *id,
                sent_ns: t.sent_ns,
                deliveries: u64::from(t.kitchen_rx + t.table_rx),
                first_arrival_ns: t.first_arrival_ns,
                last_arrival_ns: t.last_arrival_ns,
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    // ---- per-socket findings ------------------------------------------------------------------------

    pub fn duplicate(&self) {
        self.lock().duplicates += 1;
    }

    pub fn gap(&self, n: u64) {
        self.lock().gaps += n;
    }

    pub fn unmatched(&self) {
        self.lock().unmatched += 1;
    }

    pub fn snapshot_fallback(&self) {
        self.lock().snapshot_fallbacks += 1;
    }

    /// The verdict so far.
    pub fn completeness(&self) -> Completeness {
        let g = self.lock();
        let mut c = Completeness {
            duplicates: g.duplicates,
            gaps: g.gaps,
            misrouted: g.misrouted,
            unmatched: g.unmatched,
            snapshot_fallbacks: g.snapshot_fallbacks,
            ..Completeness::default()
        };
        let all = g
            .orders
            .values()
            .chain(g.statuses.values())
            .chain(g.toggles.values());
        for t in all {
            let got = u64::from(t.kitchen_rx) + u64::from(t.table_rx);
            if t.failed && !t.committed {
                c.from_failed_requests += got;
                continue;
            }
            if !t.committed && got == 0 {
                // Still in flight, or never sent.
                continue;
            }
            let (k, tb) = g.listeners.owed(t.restaurant, t.table);
            let owed = k + tb;
            c.expected += owed;
            c.delivered += got.min(owed);
            c.lost += owed.saturating_sub(got);
            c.excess += got.saturating_sub(owed);
        }
        c
    }
}

/// `--inject-fault`: drop or duplicate exactly one received event, to prove the accounting catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Fault {
    Drop,
    Dup,
}

/// Applies a fault once per process.
#[derive(Debug, Default)]
pub struct FaultInjector {
    fault: Option<Fault>,
    done: AtomicBool,
}

impl FaultInjector {
    pub fn new(fault: Option<Fault>) -> FaultInjector {
        FaultInjector {
            fault,
            done: AtomicBool::new(false),
        }
    }

    /// How many times to process the next event: 1 normally, 0 or 2 the one time the fault fires.
    pub fn times(&self) -> usize {
        match self.fault {
            None => 1,
            Some(f) => {
                if self.done.swap(true, Ordering::AcqRel) {
                    1
                } else {
                    match f {
                        Fault::Drop => 0,
                        Fault::Dup => 2,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = 0;

    /// A synthetic event stream: a restaurant with one kitchen socket and two tables with one socket
    /// each; orders on both tables, then a menu toggle. Events are (seq, table or None).
    fn stream() -> Vec<(u64, Option<u32>)> {
        vec![
            (1, Some(0)),
            (2, Some(1)),
            (3, Some(0)),
            (4, None),
            (5, Some(1)),
        ]
    }

    /// Feeds the stream through the same code path the tool uses, with `fault` applied to the kitchen
    /// socket's copy of one event.
    fn run(fault: Option<Fault>, faulty_seq: u64) -> Completeness {
        let ledger = Ledger::default();
        ledger.listen(Audience::Kitchen { restaurant: R });
        ledger.listen(Audience::Table {
            restaurant: R,
            table: 0,
        });
        ledger.listen(Audience::Table {
            restaurant: R,
            table: 1,
        });
        let item = Uuid::new_v4();
        for (seq, table) in stream() {
            match table {
                Some(t) => {
                    ledger.order_sending(seq, R, t);
                    ledger.order_sent_at(seq, 1);
                    ledger.order_committed(seq, Uuid::from_u128(u128::from(seq)));
                }
                None => {
                    ledger.toggle_armed(seq, R, item, false);
                    ledger.toggle_fired(seq, 1);
                    ledger.toggle_done(seq, true);
                }
            }
        }
        let injector = FaultInjector::new(fault);
        let mut kitchen = SeqTrack::starting_at(0);
        let mut tables = [SeqTrack::starting_at(0), SeqTrack::starting_at(0)];
        for (seq, table) in stream() {
            let audiences = std::iter::once(Audience::Kitchen { restaurant: R }).chain(
                (0..2u32)
                    .filter(move |t| table.is_none() || table == Some(*t))
                    .map(|t| Audience::Table {
                        restaurant: R,
                        table: t,
                    }),
            );
            for a in audiences {
                let times = if a == (Audience::Kitchen { restaurant: R }) && seq == faulty_seq {
                    injector.times()
                } else {
                    1
                };
                for _ in 0..times {
                    let track = match a {
                        Audience::Kitchen { .. } => &mut kitchen,
                        Audience::Table { table, .. } => &mut tables[table as usize],
                    };
                    match track.observe(seq) {
                        Seen::Duplicate => {
                            ledger.duplicate();
                            continue;
                        }
                        Seen::Fresh { gap } => {
                            if gap > 0 && matches!(a, Audience::Kitchen { .. }) {
                                ledger.gap(gap);
                            }
                        }
                    }
                    match table {
                        Some(_) => {
                            ledger.order_arrived(
                                &order_note(seq),
                                Uuid::from_u128(u128::from(seq)),
                                a,
                                2,
                            );
                        }
                        None => {
                            ledger.toggle_arrived(item, false, a, 2);
                        }
                    }
                }
            }
        }
        ledger.completeness()
    }

    #[test]
    fn a_clean_stream_is_complete() {
        let c = run(None, 0);
        // 4 orders × (kitchen + their table) + 1 toggle × (kitchen + 2 tables)
        assert_eq!(c.expected, 4 * 2 + 3);
        assert_eq!(c.delivered, c.expected);
        assert!(c.ok(), "{c:?}");
    }

    #[test]
    fn a_dropped_event_is_counted_as_lost() {
        let c = run(Some(Fault::Drop), 3);
        assert!(!c.ok());
        assert_eq!(c.lost, 1);
        assert_eq!(c.duplicates, 0);
        // The kitchen sees every seq, so the hole shows there too.
        assert_eq!(c.gaps, 1);
    }

    #[test]
    fn a_duplicated_event_is_counted_as_duplicate() {
        let c = run(Some(Fault::Dup), 4);
        assert!(!c.ok());
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.lost, 0);
        assert_eq!(c.delivered, c.expected);
    }

    #[test]
    fn a_dropped_last_event_is_lost_even_without_a_later_gap() {
        let c = run(Some(Fault::Drop), 5);
        assert_eq!(c.lost, 1);
        assert_eq!(c.gaps, 0);
        assert!(!c.ok());
    }

    #[test]
    fn an_order_on_the_wrong_table_socket_is_misrouted() {
        let ledger = Ledger::default();
        ledger.listen(Audience::Table {
            restaurant: R,
            table: 0,
        });
        ledger.order_sending(7, R, 0);
        ledger.order_committed(7, Uuid::from_u128(7));
        let wrong = Audience::Table {
            restaurant: R,
            table: 1,
        };
        ledger.order_arrived(&order_note(7), Uuid::from_u128(7), wrong, 5);
        let c = ledger.completeness();
        assert_eq!(c.misrouted, 1);
        assert_eq!(c.lost, 1);
    }

    #[test]
    fn failed_requests_are_not_owed() {
        let ledger = Ledger::default();
        ledger.listen(Audience::Kitchen { restaurant: R });
        ledger.order_sending(1, R, 0);
        ledger.order_failed(1);
        let c = ledger.completeness();
        assert_eq!(c.expected, 0);
        assert!(c.ok());
    }

    #[test]
    fn the_fault_fires_once() {
        let f = FaultInjector::new(Some(Fault::Dup));
        assert_eq!(f.times(), 2);
        assert_eq!(f.times(), 1);
        assert_eq!(FaultInjector::new(None).times(), 1);
    }
}
