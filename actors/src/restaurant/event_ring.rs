//! # EventRing — the numbered stream of one restaurant's events
//!
//! Every event a restaurant publishes gets the next sequence number of its epoch, is serialised once and
//! kept in a bounded ring, so that a socket that lost its connection can resume from the last number it
//! saw. This core knows nothing of actors or sockets: it numbers, remembers, and answers "what did this
//! audience miss since `seq`", or `None` when only a snapshot can bring the subscriber back in step (an
//! older epoch, a number from the future, or events that have left the ring).

use std::collections::VecDeque;

use bytestring::ByteString;
use scan2order_schema::domain::TableId;

/// Who a subscriber is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Audience {
    /// A kitchen dashboard: every order of the restaurant.
    Kitchen,
    /// A guest socket bound to one table: that table's orders plus menu and restaurant changes.
    Table(TableId),
}

impl Audience {
    /// Whether an event for `table` (`None`: for everyone) reaches this audience.
    pub fn sees(self, table: Option<TableId>) -> bool {
        match (self, table) {
            (Audience::Kitchen, _) | (_, None) => true,
            (Audience::Table(t), Some(event_table)) => t == event_table,
        }
    }
}

/// One event in the ring: its number, who may see it, and its JSON, serialised once.
#[derive(Clone, Debug)]
struct RingEvent {
    seq: u64,
    table: Option<TableId>,
    text: ByteString,
}

/// The numbered events of one activation of a restaurant.
#[derive(Debug)]
pub struct EventRing {
    /// Names this activation; a subscriber that saw another epoch cannot resume by number.
    epoch: String,
    /// The number of the last event pushed (0 before the first).
    seq: u64,
    /// The most recent events, oldest first, never more than `capacity`.
    events: VecDeque<RingEvent>,
    /// How many events are kept for resume; 0 keeps none (every resume that missed something
    /// gets a snapshot).
    capacity: usize,
}

/// A fresh, random epoch name (16 hex digits).
fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl EventRing {
    /// An empty ring under a new random epoch.
    pub fn new(capacity: usize) -> Self {
        EventRing::with_epoch(new_epoch(), capacity)
    }

    /// An empty ring under a given epoch.
    pub fn with_epoch(epoch: String, capacity: usize) -> Self {
        EventRing {
            epoch,
            seq: 0,
            // Grown as events come: a quiet restaurant (or a relay of one) holds no slots, where
            // 1,024 reserved up front cost 64 KiB each (10,000 restaurants: 640 MiB).
            events: VecDeque::new(),
            capacity,
        }
    }

    /// An empty ring that continues another's numbering: the next event pushed is `seq + 1` (a relay
    /// following an owner's stream from a snapshot taken at `seq`).
    pub fn continuing(epoch: String, seq: u64, capacity: usize) -> Self {
        let mut ring = EventRing::with_epoch(epoch, capacity);
        ring.seq = seq;
        ring
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The number of the last event.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The number the next pushed event will carry (events embed their own number).
    pub fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Records the event numbered [`next_seq`](Self::next_seq), already serialised, and returns its
    /// number. The oldest event leaves the ring when it is full.
    pub fn push(&mut self, table: Option<TableId>, text: ByteString) -> u64 {
        self.seq += 1;
        if self.capacity > 0 {
            if self.events.len() >= self.capacity {
                self.events.pop_front();
            }
            self.events.push_back(RingEvent {
                seq: self.seq,
                table,
                text,
            });
        }
        self.seq
    }

    /// Whether a subscriber that last saw `(epoch, since)` can be brought up to date from the ring.
    fn reaches(&self, epoch: &str, since: u64) -> bool {
        if epoch != self.epoch || since > self.seq {
            return false;
        }
        if since == self.seq {
            return true;
        }
        match self.events.front() {
            Some(first) => since + 1 >= first.seq,
            None => false,
        }
    }

    /// What `audience` missed after `(epoch, since)`, in order; `None` when the ring cannot tell (another
    /// epoch, a number from the future, or missed events that have already left the ring).
    pub fn replay(&self, epoch: &str, since: u64, audience: Audience) -> Option<Vec<ByteString>> {
        if !self.reaches(epoch, since) {
            return None;
        }
        Some(
            self.events
                .iter()
                .filter(|e| e.seq > since && audience.sees(e.table))
                .map(|e| e.text.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_ring_reserves_memory_only_for_events_it_holds() {
        let mut ring = EventRing::new(4096);
        assert_eq!(
            ring.events.capacity(),
            0,
            "an idle restaurant holds no event slots"
        );
        ring.push(None, ByteString::from_static("{}"));
        assert!(ring.events.capacity() < 64, "{}", ring.events.capacity());
    }

    fn table() -> TableId {
        TableId::from(Uuid::new_v4())
    }

    fn ring_with(capacity: usize, events: &[(Option<TableId>, &str)]) -> EventRing {
        let mut ring = EventRing::with_epoch("e1".into(), capacity);
        for (t, text) in events {
            let expected = ring.next_seq();
            assert_eq!(ring.push(*t, ByteString::from(text.to_string())), expected);
        }
        ring
    }

    fn texts(v: Option<Vec<ByteString>>) -> Option<Vec<String>> {
        v.map(|v| v.into_iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn events_are_numbered_from_one_without_gaps() {
        let mut ring = EventRing::new(4);
        assert_eq!(ring.seq(), 0);
        assert_eq!(ring.epoch().len(), 16);
        for n in 1..=10 {
            assert_eq!(ring.next_seq(), n);
            assert_eq!(ring.push(None, "x".into()), n);
            assert_eq!(ring.seq(), n);
        }
    }

    #[test]
    fn epochs_differ_between_activations() {
        assert_ne!(EventRing::new(1).epoch(), EventRing::new(1).epoch());
    }

    #[test]
    fn a_resume_gets_exactly_the_missed_events_in_order() {
        let ring = ring_with(8, &[(None, "a"), (None, "b"), (None, "c"), (None, "d")]);
        assert_eq!(
            texts(ring.replay("e1", 1, Audience::Kitchen)),
            Some(vec!["b".into(), "c".into(), "d".into()])
        );
        assert_eq!(texts(ring.replay("e1", 4, Audience::Kitchen)), Some(vec![]));
        assert_eq!(
            texts(ring.replay("e1", 0, Audience::Kitchen)).map(|v| v.len()),
            Some(4)
        );
    }

    #[test]
    fn a_table_replays_only_its_own_orders_and_events_for_everyone() {
        let (mine, other) = (table(), table());
        let ring = ring_with(
            8,
            &[(Some(mine), "mine"), (Some(other), "other"), (None, "menu")],
        );
        assert_eq!(
            texts(ring.replay("e1", 0, Audience::Table(mine))),
            Some(vec!["mine".into(), "menu".into()])
        );
        assert_eq!(
            texts(ring.replay("e1", 0, Audience::Table(other))),
            Some(vec!["other".into(), "menu".into()])
        );
        assert_eq!(
            texts(ring.replay("e1", 0, Audience::Kitchen)),
            Some(vec!["mine".into(), "other".into(), "menu".into()])
        );
    }

    #[test]
    fn another_epoch_or_a_future_number_needs_a_snapshot() {
        let ring = ring_with(8, &[(None, "a"), (None, "b")]);
        assert!(ring.replay("e0", 1, Audience::Kitchen).is_none());
        assert!(ring.replay("e1", 3, Audience::Kitchen).is_none());
    }

    #[test]
    fn events_that_left_the_ring_need_a_snapshot() {
        let ring = ring_with(2, &[(None, "a"), (None, "b"), (None, "c"), (None, "d")]);
        // The ring holds 3 and 4: a subscriber that saw 2 misses only 3 and 4.
        assert_eq!(
            texts(ring.replay("e1", 2, Audience::Kitchen)),
            Some(vec!["c".into(), "d".into()])
        );
        // One that saw 1 missed 2, which is gone.
        assert!(ring.replay("e1", 1, Audience::Kitchen).is_none());
    }

    #[test]
    fn a_ring_of_no_events_serves_only_subscribers_that_missed_nothing() {
        let ring = ring_with(0, &[(None, "a"), (None, "b")]);
        assert_eq!(texts(ring.replay("e1", 2, Audience::Kitchen)), Some(vec![]));
        assert!(ring.replay("e1", 1, Audience::Kitchen).is_none());
    }
}
