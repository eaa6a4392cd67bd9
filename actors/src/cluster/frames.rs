//! # Frames — a restaurant's events as they cross the fleet
//!
//! The owner of a restaurant publishes every event once on `{prefix}.events.{restaurant_id}`, already
//! serialised: a header line (JSON: what the frame is, the epoch, the number, the table it is for),
//! a newline, then the event's JSON exactly as sockets receive it. A relaying node parses the header,
//! keeps the body as it came and hands it to its sockets: serialised once by the owner, copied once per
//! node, never re-encoded per socket.
//!
//! Besides events, the owner announces a new epoch (it activated the restaurant), a table whose
//! token died (its sockets close on every node with 1008) and that it stopped running the restaurant
//! (relays then ask whoever owns it next).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use scan2order_schema::domain::{RestaurantId, TableId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// What a frame says, with the owner's epoch it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum FrameHead {
    /// Event `s` of epoch `e`, for table `t` (`None`: for everyone); its JSON follows.
    Event {
        e: String,
        s: u64,
        t: Option<TableId>,
    },
    /// Node `node` activated the restaurant: epoch `e` starts at `s`.
    Epoch { e: String, s: u64, node: String },
    /// Table `t`'s token died: its sockets close with 1008.
    CloseTable { e: String, t: TableId },
    /// The owner stopped running the restaurant (idle, lease lost, shutdown).
    Gone { e: String },
}

/// Encodes a frame: the header line, `\n`, the body.
pub fn encode(head: &FrameHead, body: &[u8]) -> Bytes {
    let header = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(header.len() + 1 + body.len());
    out.put_slice(&header);
    out.put_u8(b'\n');
    out.put_slice(body);
    out.freeze()
}

/// Decodes a frame; `None` for anything that is not one (a frame is never half-applied).
pub fn decode(payload: &Bytes) -> Option<(FrameHead, ByteString)> {
    let newline = payload.iter().position(|b| *b == b'\n')?;
    let head: FrameHead = serde_json::from_slice(&payload[..newline]).ok()?;
    let body = ByteString::try_from(payload.slice(newline + 1..)).ok()?;
    Some((head, body))
}

/// Frames waiting for the node's publisher, at most this many (a burst beyond it drops frames, which
/// relays notice as a gap and repair with a snapshot).
pub const TAP_QUEUE: usize = 65_536;

/// Where a restaurant actor puts the frames it publishes; the node's publisher sends them to NATS in
/// order. Cheap to clone.
#[derive(Clone)]
pub struct EventTap {
    tx: mpsc::Sender<(RestaurantId, Bytes)>,
    node_id: std::sync::Arc<str>,
}

impl EventTap {
    /// A tap and the receiving end its publisher drains.
    pub fn new(node_id: &str) -> (EventTap, mpsc::Receiver<(RestaurantId, Bytes)>) {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        (
            EventTap {
                tx,
                node_id: node_id.into(),
            },
            rx,
        )
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Queues a frame; a full queue drops it (counted) rather than block the restaurant.
    pub fn send(&self, restaurant: RestaurantId, head: &FrameHead, body: &[u8]) {
        if self.tx.try_send((restaurant, encode(head, body))).is_err() {
            metrics::counter!("s2o_relay_frames_dropped_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_what_was_encoded_and_nothing_else() {
        let table = TableId::from(uuid::Uuid::new_v4());
        let heads = [
            FrameHead::Event {
                e: "ab".into(),
                s: 7,
                t: Some(table),
            },
            FrameHead::Event {
                e: "ab".into(),
                s: 8,
                t: None,
            },
            FrameHead::Epoch {
                e: "cd".into(),
                s: 0,
                node: "n1".into(),
            },
            FrameHead::CloseTable {
                e: "cd".into(),
                t: table,
            },
            FrameHead::Gone { e: "cd".into() },
        ];
        for head in heads {
            let body = br#"{"type":"menu","seq":7}"#;
            let (h, b) = decode(&encode(&head, body)).expect("decodes");
            assert_eq!(h, head);
            assert_eq!(&b.as_bytes()[..], &body[..]);
        }
        for junk in [
            &b""[..],
            b"no newline",
            b"{\"k\":\"event\"}\n",
            b"{\"k\":\"other\",\"e\":\"x\"}\nbody",
            b"{\"k\":\"gone\",\"e\":\"x\"}\n\xff\xfe",
        ] {
            assert_eq!(decode(&Bytes::copy_from_slice(junk)), None, "{junk:?}");
        }
    }
}
