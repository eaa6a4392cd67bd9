//! # Fleet — this node's part in a fleet of nodes
//!
//! Joined once at start in cluster mode ([`crate::shard::ShardSupervisor::join_fleet`]). It runs four
//! loops on the node's NATS connection:
//! - the **publisher**: the frames of the restaurants this node owns, in order, to their events subjects;
//! - the **responder**: commands other nodes forward to this node's subject, run as a local caller would
//!   and answered (or [`Reply::NotOwner`]); an answer larger than [`PIECE`] (a kitchen snapshot of
//!   thousands of live orders) is parked here and fetched by the asker in pieces, since NATS refuses
//!   messages over its `max_payload`;
//! - the **notices**: fleet-wide news (a staff member's sessions ended, table tokens died) applied here;
//! - and, through the lease keeper, the live nodes handed to relays, so a relay whose owner died
//!   resynchronises from whoever takes the restaurant over.
//!
//! It also keeps what this node knows of other nodes' restaurants: who owns each (a cache, forgotten
//! as soon as a forward is refused) and the [`RelayActor`] of each restaurant it has sockets for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use scan2order_schema::domain::{RestaurantId, StaffId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::bus::Bus;
use super::forward::{Envelope, Forwarded, Reply};
use super::frames::EventTap;
use super::relay::RelayActor;

/// How long a forwarded command may take before the caller is told `unavailable` (its outcome is then
/// unknown; clients retry with the same idempotency key).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

/// Fleet-wide news every node acts on.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// One staff session ended (logout): SHA-256 of its token, hex.
    StaffSessionEnded { token_hash: String },
    /// Every session of a staff account ended (password change, removal): its kitchen sockets close.
    StaffUserEnded {
        restaurant_id: RestaurantId,
        staff_id: StaffId,
    },
    /// Table tokens died (rotation, deactivation, deletion).
    TokensDied { tokens: Vec<String> },
}

#[derive(Serialize, Deserialize)]
struct NoticeFrame {
    from: String,
    notice: Notice,
}

/// Why a forward got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Nobody listens on that node's subject: the node is gone (the command was never delivered).
    NoResponders,
    /// The node did not answer in time: the command may or may not have run.
    TimedOut,
    /// NATS is away or refused the request.
    Failed,
}

/// Answers larger than this are parked on the answering node and fetched in pieces of this size (NATS
/// refuses messages over its `max_payload`, 1 MiB by default; a kitchen's snapshot of thousands of live
/// orders is larger).
pub const PIECE: usize = 512 * 1024;
/// How long a parked answer waits to be fetched, and how many may wait at once.
const PARKED_FOR: Duration = Duration::from_secs(30);
const PARKED_MAX: usize = 256;

/// What the answering node sends instead of an answer too large for one message.
#[derive(Serialize, Deserialize)]
struct Parked {
    parked: u64,
    len: usize,
}

/// A piece of a parked answer, asked for on `{node subject}.pieces`.
#[derive(Serialize, Deserialize)]
struct PieceRequest {
    key: u64,
    offset: usize,
}

pub struct Fleet {
    bus: Bus,
    /// Answers too large for one message, by key, with when they were parked.
    parked: DashMap<u64, (Instant, Bytes)>,
    tap: EventTap,
    owners: DashMap<RestaurantId, Arc<str>>,
    relays: DashMap<RestaurantId, Addr<RelayActor>>,
    notices: broadcast::Sender<Notice>,
    stop: CancellationToken,
}

impl Fleet {
    /// The fleet's state and the publisher loop; the responder and notice loops are started by the
    /// engine, which they call into.
    pub fn start(bus: Bus) -> Fleet {
        let (tap, frames) = EventTap::new(bus.node_id());
        let stop = CancellationToken::new();
        actix::spawn(publish_frames(bus.clone(), frames, stop.clone()));
        Fleet {
            bus,
            parked: DashMap::new(),
            tap,
            owners: DashMap::new(),
            relays: DashMap::new(),
            notices: broadcast::channel(1024).0,
            stop,
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn tap(&self) -> &EventTap {
        &self.tap
    }

    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The node last known to own the restaurant.
    pub fn known_owner(&self, id: RestaurantId) -> Option<Arc<str>> {
        self.owners.get(&id).map(|n| n.clone())
    }

    pub fn remember_owner(&self, id: RestaurantId, node: &str) {
        self.owners.insert(id, node.into());
    }

    pub fn forget_owner(&self, id: RestaurantId) {
        self.owners.remove(&id);
    }

    pub fn relays(&self) -> &DashMap<RestaurantId, Addr<RelayActor>> {
        &self.relays
    }

    /// Sends a command to the restaurant's owner on `node` and waits for its answer.
    pub async fn forward<M>(
        &self,
        node: &str,
        id: RestaurantId,
        msg: M,
    ) -> Result<Reply<M::Result>, Hop>
    where
        M: Forwarded,
        M::Result: Serialize + serde::de::DeserializeOwned,
    {
        let payload = Envelope::encode(id, msg).map_err(|_| Hop::Failed)?;
        let started = Instant::now();
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(FORWARD_TIMEOUT));
        let answer = self
            .bus
            .client()
            .send_request(self.bus.node_subject(node), request)
            .await;
        let outcome = match &answer {
            Ok(_) => "answered",
            Err(e) => match e.kind() {
                async_nats::client::RequestErrorKind::NoResponders => "no_responders",
                async_nats::client::RequestErrorKind::TimedOut => "timed_out",
                _ => "failed",
            },
        };
        metrics::counter!("s2o_forwards_total", "outcome" => outcome).increment(1);
        match answer {
            Ok(message) => {
                let payload = match serde_json::from_slice::<Parked>(&message.payload) {
                    Ok(parked) => self.fetch_parked(node, parked).await?,
                    Err(_) => message.payload,
                };
                metrics::histogram!("s2o_forward_seconds").record(started.elapsed().as_secs_f64());
                Ok(Reply::decode(&payload))
            }
            Err(e) => Err(match e.kind() {
                async_nats::client::RequestErrorKind::NoResponders => Hop::NoResponders,
                async_nats::client::RequestErrorKind::TimedOut => Hop::TimedOut,
                _ => Hop::Failed,
            }),
        }
    }

    /// Fetches a parked answer from `node`, piece by piece.
    async fn fetch_parked(&self, node: &str, parked: Parked) -> Result<Bytes, Hop> {
        if parked.len > 64 << 20 {
            return Err(Hop::Failed);
        }
        let subject = format!("{}.pieces", self.bus.node_subject(node));
        let mut whole = bytes::BytesMut::with_capacity(parked.len);
        while whole.len() < parked.len {
            let ask = serde_json::to_vec(&PieceRequest {
                key: parked.parked,
                offset: whole.len(),
            })
            .map_err(|_| Hop::Failed)?;
            let request = async_nats::Request::new()
                .payload(Bytes::from(ask))
                .timeout(Some(FORWARD_TIMEOUT));
            let piece = self
                .bus
                .client()
                .send_request(subject.clone(), request)
                .await
                .map_err(|e| match e.kind() {
                    async_nats::client::RequestErrorKind::TimedOut => Hop::TimedOut,
                    _ => Hop::Failed,
                })?;
            if piece.payload.is_empty() {
                // Expired or unknown: the command ran, its answer is lost.
                return Err(Hop::TimedOut);
            }
            whole.extend_from_slice(&piece.payload);
        }
        metrics::counter!("s2o_forward_answers_parked_total").increment(1);
        Ok(whole.freeze())
    }

    /// Parks an answer too large for one message; what to send in its place.
    fn park(&self, answer: Bytes) -> Bytes {
        let now = Instant::now();
        self.parked
            .retain(|_, (at, _)| now.duration_since(*at) < PARKED_FOR);
        if self.parked.len() >= PARKED_MAX {
            tracing::warn!("too many large answers waiting to be fetched; refusing one");
            return Reply::<()>::Done(Err(crate::restaurant::EngineError::Unavailable)).encode();
        }
        let key = rand::random::<u64>();
        let len = answer.len();
        self.parked.insert(key, (now, answer));
        Bytes::from(serde_json::to_vec(&Parked { parked: key, len }).unwrap_or_default())
    }

    /// A piece of a parked answer (empty when it is unknown or expired); the last piece forgets it.
    fn piece(&self, request: &[u8]) -> Bytes {
        let Ok(PieceRequest { key, offset }) = serde_json::from_slice(request) else {
            return Bytes::new();
        };
        let Some(answer) = self.parked.get(&key).map(|e| e.1.clone()) else {
            return Bytes::new();
        };
        if offset >= answer.len() {
            return Bytes::new();
        }
        let end = (offset + PIECE).min(answer.len());
        if end == answer.len() {
            self.parked.remove(&key);
        }
        answer.slice(offset..end)
    }

    /// Tells every other node; this node applies the notice itself, at once.
    pub async fn tell(&self, notice: Notice) {
        let frame = NoticeFrame {
            from: self.bus.node_id().to_string(),
            notice,
        };
        let Ok(payload) = serde_json::to_vec(&frame) else {
            return;
        };
        if let Err(e) = self
            .bus
            .client()
            .publish(self.bus.fleet_subject("notices"), Bytes::from(payload))
            .await
        {
            tracing::warn!(error = %e, "could not tell the fleet");
        }
    }

    /// Notices heard from other nodes (the server applies those about its session caches).
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Reads the fleet's notices until the node stops; each is applied by `apply` and passed on.
    pub async fn hear_notices(self: Arc<Self>, apply: impl Fn(&Notice) + 'static) {
        let sub = match self
            .bus
            .client()
            .subscribe(self.bus.fleet_subject("notices"))
            .await
        {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(error = %e, "could not subscribe to the fleet's notices");
                return;
            }
        };
        let mut sub = std::pin::pin!(sub.take_until(self.stop.clone().cancelled_owned()));
        while let Some(msg) = sub.next().await {
            let Ok(frame) = serde_json::from_slice::<NoticeFrame>(&msg.payload) else {
                continue;
            };
            if frame.from == self.bus.node_id() {
                continue;
            }
            apply(&frame.notice);
            let _ = self.notices.send(frame.notice);
        }
    }
}

/// Sends the frames of this node's restaurants to NATS, in the order they were published.
async fn publish_frames(
    bus: Bus,
    mut frames: mpsc::Receiver<(RestaurantId, Bytes)>,
    stop: CancellationToken,
) {
    let publish = |id: RestaurantId, payload: Bytes| {
        let bus = &bus;
        async move {
            if bus
                .client()
                .publish(bus.events_subject(id), payload)
                .await
                .is_err()
            {
                metrics::counter!("s2o_relay_frames_dropped_total").increment(1);
            }
        }
    };
    loop {
        tokio::select! {
            next = frames.recv() => match next {
                Some((id, payload)) => publish(id, payload).await,
                None => return,
            },
            _ = stop.cancelled() => break,
        }
    }
    // Stopping: what the restaurants said last (that they are gone) still goes out.
    while let Ok((id, payload)) = frames.try_recv() {
        publish(id, payload).await;
    }
    let _ = bus.client().flush().await;
}

/// Answers the commands other nodes forward to this node, each in its own task.
pub async fn answer_commands<F, Fut>(fleet: Arc<Fleet>, serve: F)
where
    F: Fn(Bytes) -> Fut + 'static,
    Fut: std::future::Future<Output = Bytes> + 'static,
{
    let subject = fleet.bus.node_subject(fleet.bus.node_id());
    let subscribed = async {
        let commands = fleet.bus.client().subscribe(subject.clone()).await?;
        let pieces = fleet
            .bus
            .client()
            .subscribe(format!("{subject}.pieces"))
            .await?;
        Ok::<_, async_nats::SubscribeError>((commands, pieces))
    };
    let (commands, pieces) = match subscribed.await {
        Ok(subs) => subs,
        Err(e) => {
            tracing::error!(error = %e, "could not subscribe to the node's commands");
            return;
        }
    };
    let answer_pieces = {
        let fleet = fleet.clone();
        let mut pieces = Box::pin(pieces.take_until(fleet.stop.clone().cancelled_owned()));
        async move {
            while let Some(msg) = pieces.next().await {
                if let Some(reply) = msg.reply {
                    let _ = fleet
                        .bus
                        .client()
                        .publish(reply, fleet.piece(&msg.payload))
                        .await;
                }
            }
        }
    };
    actix::spawn(answer_pieces);
    let mut commands = std::pin::pin!(commands.take_until(fleet.stop.clone().cancelled_owned()));
    while let Some(msg) = commands.next().await {
        let Some(reply) = msg.reply else {
            continue;
        };
        let answer = serve(msg.payload);
        let fleet = fleet.clone();
        actix::spawn(async move {
            let mut payload = answer.await;
            if payload.len() > PIECE {
                payload = fleet.park(payload);
            }
            if let Err(e) = fleet.bus.client().publish(reply, payload).await {
                tracing::warn!(error = %e, "could not answer a forwarded command");
            }
        });
    }
}
