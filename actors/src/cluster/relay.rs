//! # RelayActor — a restaurant's events for the sockets of a node that does not own it
//!
//! One per restaurant on each node with sockets for it and not its lease. It subscribes to the
//! restaurant's events subject, follows the owner's `(epoch, seq)` stream in its own [`EventRing`]
//! (so a socket that reconnects to this node resumes from here), and hands each event, as the owner
//! serialised it, to the same [`Subscribers`] a restaurant actor uses.
//!
//! Snapshots come from the owner: a joining socket's audience is sent in a [`RelaySync`] (forwarded
//! like any command), answered with the snapshot and the number it was taken at. A socket whose
//! snapshot is newer than the stream here waits until the stream reaches it; one whose snapshot is
//! older gets the events in between from the ring. Either way it sees every event once, in order.
//!
//! Never a silent skip: a frame whose number is not the next one (NATS dropped frames, the owner's
//! queue overflowed), a new epoch (the restaurant moved), the owner leaving or dying, or a check that
//! finds the stream here behind the owner's, all resynchronise every socket of the relay with a fresh
//! snapshot from whoever owns the restaurant now, without closing them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use scan2order_schema::domain::{RestaurantId, TableId};
use scan2order_schema::wire::Order;
use tokio::sync::oneshot;

use super::frames::{self, FrameHead};
use crate::restaurant::{
    send_hello, Audience, ChangeStatus, CloseAll, CloseStaffSockets, EngineError, EventRing,
    Missing, RelaySync, RelaySynced, SayHello, Subscribe, Subscribers, Unsubscribe,
};
use crate::sink::{close_code, SocketSink};

/// A future the relay waits on (an answer from the restaurant's owner).
pub type Answer<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, EngineError>>>>;

/// How a relay reaches the restaurant's owner, wherever it lives (the engine forwards), and tells
/// the engine it stopped.
pub trait Upstream: 'static {
    fn sync(&self, id: RestaurantId, msg: RelaySync) -> Answer<RelaySynced>;
    fn change_status(&self, id: RestaurantId, msg: ChangeStatus) -> Answer<Order>;
    fn relay_stopped(&self, id: RestaurantId, relay: &Addr<RelayActor>);
}

/// Frames kept while a resynchronisation is in flight; more means the answer is stale anyway.
const HELD_MAX: usize = 4096;
/// Epochs this relay left, whose late frames are ignored.
const LEFT_EPOCHS: usize = 4;
/// First and longest wait before asking an unreachable owner again.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Joining sockets asked for in one sync at most (their distinct audiences, really).
const JOIN_BATCH: usize = 8192;
/// A relay without sockets for this long stops.
const IDLE_STOP: Duration = Duration::from_secs(30);

/// Whether the relay follows the owner's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// Not yet, or not any more: every socket needs a fresh snapshot; frames are held.
    Resync,
    /// Frames are applied as they come.
    Live,
}

/// A socket asking to subscribe, answered once it has its snapshot.
struct Joining {
    msg: Subscribe,
    reply: oneshot::Sender<Result<u64, EngineError>>,
}

/// What one sync asked for: every subscribed audience first when `full` (`subscribed` of them), then
/// the distinct audiences of the joining sockets; `joining_at[i]` is joining socket `i`'s.
struct Batch<'a> {
    full: bool,
    asked: &'a [(Audience, Option<String>)],
    subscribed: usize,
    joining_at: &'a [usize],
}

/// A socket that has its snapshot (taken at `from`) and waits for the stream here to reach it.
struct Waiting {
    join: Joining,
    from: u64,
}

pub struct RelayActor {
    id: RestaurantId,
    upstream: Arc<dyn Upstream>,
    subject: String,
    client: async_nats::Client,
    ring: EventRing,
    ring_size: usize,
    stream: Stream,
    subscribers: Subscribers,
    /// The token each table's sockets connected with (a resync asks for the table's snapshot with it).
    tokens: HashMap<TableId, String>,
    joining: Vec<Joining>,
    waiting: Vec<Waiting>,
    /// Sockets whose `hello` waits for the relay to follow the stream.
    hellos: Vec<SocketSink>,
    /// Frames heard while resynchronising, applied after the answer.
    held: Vec<(FrameHead, ByteString)>,
    /// Frames were dropped from `held`: the answer may be older than what was missed.
    held_overflowed: bool,
    left: VecDeque<String>,
    /// The node that answered the last sync (the owner as far as this relay knows).
    owner: Option<String>,
    /// A sync is in flight (one at a time).
    asking: bool,
    retry: Duration,
    /// The owner's number at the last check, when the stream here was behind it.
    behind: Option<u64>,
    empty_since: Option<Instant>,
    keepalive: Duration,
}

impl RelayActor {
    pub fn new(
        id: RestaurantId,
        upstream: Arc<dyn Upstream>,
        client: async_nats::Client,
        subject: String,
        ring_size: usize,
        keepalive: Duration,
    ) -> Self {
        RelayActor {
            id,
            upstream,
            subject,
            client,
            ring: EventRing::continuing(String::new(), 0, ring_size),
            ring_size,
            stream: Stream::Resync,
            subscribers: Subscribers::default(),
            tokens: HashMap::new(),
            joining: Vec::new(),
            waiting: Vec::new(),
            hellos: Vec::new(),
            held: Vec::new(),
            held_overflowed: false,
            left: VecDeque::new(),
            owner: None,
            asking: false,
            retry: RETRY_MIN,
            behind: None,
            empty_since: None,
            keepalive,
        }
    }

    fn push_hello(&self, sink: &SocketSink) {
        send_hello(sink, self.ring.epoch(), self.ring.seq());
    }

    fn is_empty(&self) -> bool {
        self.subscribers.is_empty() && self.joining.is_empty() && self.waiting.is_empty()
    }

    /// Every socket needs a fresh snapshot: the stream here cannot be trusted any more.
    fn resync(&mut self, ctx: &mut Context<Self>, why: &'static str) {
        if self.stream == Stream::Resync {
            return;
        }
        metrics::counter!("s2o_relay_resyncs_total", "why" => why).increment(1);
        tracing::info!(restaurant_id = %self.id, why, "relay resynchronising");
        self.stream = Stream::Resync;
        self.behind = None;
        // Snapshots taken at a number of the stream being left are no good either.
        for w in std::mem::take(&mut self.waiting) {
            self.joining.push(w.join);
        }
        self.ask(ctx);
    }

    /// Sends the one sync in flight: every subscribed audience when resynchronising, and every
    /// joining socket's.
    fn ask(&mut self, ctx: &mut Context<Self>) {
        if self.asking {
            return;
        }
        let full = self.stream == Stream::Resync;
        if !full && self.joining.is_empty() {
            return;
        }
        let mut audiences: Vec<(Audience, Option<String>)> = Vec::new();
        if full {
            self.held.clear();
            self.held_overflowed = false;
            for a in self.subscribers.audiences() {
                let token = match a {
                    Audience::Table(t) => self.tokens.get(&t).cloned(),
                    Audience::Kitchen => None,
                };
                audiences.push((a, token));
            }
        }
        let subscribed = audiences.len();
        // Each distinct audience is asked for once, however many sockets share it (a kitchen's
        // snapshot can be megabytes), and a storm of joining sockets goes in batches.
        let take = self.joining.len().min(JOIN_BATCH);
        let joining: Vec<Joining> = self.joining.drain(..take).collect();
        let mut index: HashMap<(Audience, Option<String>), usize> = HashMap::new();
        let joining_at: Vec<usize> = joining
            .iter()
            .map(|j| {
                let key = (j.msg.audience, j.msg.table_token.clone());
                *index.entry(key.clone()).or_insert_with(|| {
                    audiences.push(key);
                    audiences.len() - 1
                })
            })
            .collect();
        self.asking = true;
        let asked = audiences.clone();
        ctx.spawn(
            self.upstream
                .sync(self.id, RelaySync { audiences })
                .into_actor(self)
                .map(move |answer, act, ctx| {
                    act.asking = false;
                    match answer {
                        Ok(synced) if synced.snapshots.len() == asked.len() => {
                            act.retry = RETRY_MIN;
                            let batch = Batch {
                                full,
                                asked: &asked,
                                subscribed,
                                joining_at: &joining_at,
                            };
                            act.synced(ctx, synced, batch, joining);
                        }
                        Ok(_) | Err(EngineError::Unavailable) => {
                            // The owner is away (dying, moving, paused): sockets stay; ask again.
                            act.joining.splice(0..0, joining);
                            if full {
                                act.stream = Stream::Resync;
                            }
                            let wait = act.retry;
                            act.retry = (act.retry * 2).min(RETRY_MAX);
                            ctx.run_later(wait, |act, ctx| act.ask(ctx));
                            return;
                        }
                        Err(e) => {
                            // The restaurant is gone (deleted): nothing left to follow.
                            for j in joining {
                                let _ = j.reply.send(Err(e.clone()));
                            }
                            if full {
                                act.subscribers.close_all(close_code::POLICY);
                            }
                        }
                    }
                    act.ask(ctx);
                }),
        );
    }

    fn synced(
        &mut self,
        ctx: &mut Context<Self>,
        synced: RelaySynced,
        batch: Batch<'_>,
        joining: Vec<Joining>,
    ) {
        let Batch {
            full,
            asked,
            subscribed,
            joining_at,
        } = batch;
        self.owner = synced.node_id.clone();
        // Shared, not copied, by every socket of an audience.
        let snapshots: Vec<Option<ByteString>> = synced
            .snapshots
            .into_iter()
            .map(|s| s.map(ByteString::from))
            .collect();
        if full {
            if self.ring.epoch() != synced.epoch {
                self.leave(self.ring.epoch().to_string());
            }
            self.left.retain(|e| *e != synced.epoch);
            self.ring = EventRing::continuing(synced.epoch.clone(), synced.seq, self.ring_size);
            for ((audience, _), snapshot) in asked[..subscribed].iter().zip(&snapshots) {
                match (snapshot, audience) {
                    (Some(text), _) => self.subscribers.send_to(*audience, text),
                    (None, Audience::Table(t)) => {
                        self.subscribers.close_table(*t, close_code::POLICY);
                        self.tokens.remove(t);
                    }
                    (None, Audience::Kitchen) => {}
                }
            }
            self.stream = Stream::Live;
            for sink in std::mem::take(&mut self.hellos) {
                self.push_hello(&sink);
            }
            let stale = self.held_overflowed;
            for (head, body) in std::mem::take(&mut self.held) {
                self.on_frame(ctx, head, body);
            }
            if stale {
                self.resync(ctx, "held_overflow");
            }
        } else if self.stream == Stream::Live && self.ring.epoch() != synced.epoch {
            // The restaurant moved while only joining sockets were asked for: everyone needs a
            // snapshot of the new epoch.
            self.joining.extend(joining);
            self.resync(ctx, "epoch");
            return;
        }
        for (join, at) in joining.into_iter().zip(joining_at) {
            let snapshot = snapshots.get(*at).cloned().flatten();
            self.admit(join, snapshot, &synced.epoch, synced.seq);
        }
    }

    /// A joining socket with its snapshot taken at `(epoch, seq)`.
    fn admit(&mut self, join: Joining, snapshot: Option<ByteString>, epoch: &str, seq: u64) {
        let Some(text) = snapshot else {
            let _ = join.reply.send(Err(EngineError::NotFound(Missing::Table)));
            return;
        };
        if self.stream != Stream::Live || self.ring.epoch() != epoch {
            self.joining.push(join);
            return;
        }
        if join.msg.hello {
            send_hello(&join.msg.sink, epoch, seq);
        }
        if join.msg.sink.send_text(text).is_err() {
            let _ = join.reply.send(Ok(0));
            return;
        }
        self.waiting.push(Waiting { join, from: seq });
        self.promote();
    }

    /// Adds the waiting sockets the stream has reached, after the events they have not seen.
    fn promote(&mut self) {
        let seq = self.ring.seq();
        let (ready, still): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.from <= seq);
        self.waiting = still;
        for w in ready {
            let Waiting { join, from } = w;
            let Joining { msg, reply } = join;
            match self.ring.replay(self.ring.epoch(), from, msg.audience) {
                Some(missed) => {
                    if missed
                        .iter()
                        .any(|t| msg.sink.send_text(t.clone()).is_err())
                    {
                        let _ = reply.send(Ok(0));
                        continue;
                    }
                    if let (Audience::Table(t), Some(token)) = (msg.audience, &msg.table_token) {
                        self.tokens.insert(t, token.clone());
                    }
                    let id = self.subscribers.add(msg.sink, msg.audience, msg.staff);
                    let _ = reply.send(Ok(id));
                }
                // The ring no longer holds what it missed: another snapshot.
                None => self.joining.push(Joining { msg, reply }),
            }
        }
    }

    fn on_frame(&mut self, ctx: &mut Context<Self>, head: FrameHead, body: ByteString) {
        let epoch = match &head {
            FrameHead::Event { e, .. }
            | FrameHead::Epoch { e, .. }
            | FrameHead::CloseTable { e, .. }
            | FrameHead::Gone { e } => e.clone(),
        };
        if self.stream == Stream::Resync {
            if self.held.len() >= HELD_MAX {
                self.held.clear();
                self.held_overflowed = true;
            }
            self.held.push((head, body));
            return;
        }
        if self.left.contains(&epoch) {
            return;
        }
        let ours = epoch == self.ring.epoch();
        match head {
            FrameHead::Event { s, t, .. } if ours => {
                if s <= self.ring.seq() {
                    return;
                }
                if s != self.ring.seq() + 1 {
                    metrics::counter!("s2o_relay_gaps_total").increment(1);
                    self.resync(ctx, "gap");
                    return;
                }
                self.ring.push(t, body.clone());
                self.subscribers.send(t, &body);
                metrics::counter!("s2o_relayed_events_total").increment(1);
                if !self.waiting.is_empty() {
                    self.promote();
                }
                if !self.joining.is_empty() {
                    self.ask(ctx);
                }
            }
            FrameHead::Epoch { s, node, .. } => {
                self.owner = Some(node);
                if !ours {
                    self.leave(epoch);
                }
                if !ours || s > self.ring.seq() {
                    self.resync(ctx, "epoch");
                }
            }
            FrameHead::CloseTable { t, .. } if ours => self.close_table(t),
            FrameHead::Gone { .. } if ours => {
                self.owner = None;
                self.resync(ctx, "owner_gone");
            }
            // A frame of an epoch this relay does not follow: the restaurant moved (then the owner
            // answers with that epoch), or an earlier owner's late frame (ignored from now on).
            _ => {
                self.leave(epoch);
                self.resync(ctx, "epoch");
            }
        }
    }

    /// Remembers an epoch this relay no longer follows, whose late frames are ignored.
    fn leave(&mut self, epoch: String) {
        if epoch.is_empty() || self.left.contains(&epoch) {
            return;
        }
        self.left.push_back(epoch);
        if self.left.len() > LEFT_EPOCHS {
            self.left.pop_front();
        }
    }

    fn close_table(&mut self, table: TableId) {
        self.subscribers.close_table(table, close_code::POLICY);
        self.tokens.remove(&table);
        let (gone, keep): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.join.msg.audience == Audience::Table(table));
        self.waiting = keep;
        for w in gone {
            w.join.msg.sink.close(close_code::POLICY);
            let _ = w
                .join
                .reply
                .send(Err(EngineError::NotFound(Missing::Table)));
        }
    }

    /// Asks the owner where its stream is: a new epoch, or a stream here that stays behind the
    /// owner's between two checks, means frames were lost.
    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.stream != Stream::Live || self.asking || self.subscribers.is_empty() {
            return;
        }
        ctx.spawn(
            self.upstream
                .sync(self.id, RelaySync { audiences: vec![] })
                .into_actor(self)
            .map(|answer, act, ctx| {
                let Ok(synced) = answer else {
                    return;
                };
                act.owner = synced.node_id;
                if synced.epoch != act.ring.epoch() {
                    act.resync(ctx, "epoch");
                } else if let Some(seen) = act.behind.take().filter(|n| act.ring.seq() < *n) {
                    tracing::warn!(restaurant_id = %act.id, seen, here = act.ring.seq(), "relay behind its owner");
                    act.resync(ctx, "behind");
                } else if synced.seq > act.ring.seq() {
                    act.behind = Some(synced.seq);
                }
            }),
        );
    }
}

impl Actor for RelayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let client = self.client.clone();
        let subject = self.subject.clone();
        ctx.wait(
            async move {
                let sub = client.subscribe(subject).await?;
                // The server has the subscription before the first sync is asked: every frame
                // published after the owner answers reaches this relay.
                client.flush().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(sub)
            }
            .into_actor(self)
            .map(|sub, act, ctx| match sub {
                Ok(sub) => {
                    ctx.add_stream(sub);
                    act.ask(ctx);
                }
                Err(e) => {
                    tracing::warn!(restaurant_id = %act.id, error = %e, "relay could not subscribe");
                    ctx.stop();
                }
            }),
        );
        ctx.run_interval(self.keepalive, |act, ctx| {
            if act.is_empty() {
                let since = *act.empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= IDLE_STOP {
                    ctx.stop();
                }
                return;
            }
            act.empty_since = None;
            act.check(ctx);
        });
        metrics::gauge!("s2o_relays").increment(1.0);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!("s2o_relays").decrement(1.0);
        self.subscribers.close_all(close_code::GOING_AWAY);
        for j in self.joining.drain(..) {
            let _ = j.reply.send(Err(EngineError::Unavailable));
        }
        for w in self.waiting.drain(..) {
            let _ = w.join.reply.send(Err(EngineError::Unavailable));
        }
        self.upstream.relay_stopped(self.id, &ctx.address());
    }
}

impl StreamHandler<async_nats::Message> for RelayActor {
    fn handle(&mut self, msg: async_nats::Message, ctx: &mut Context<Self>) {
        match frames::decode(&msg.payload) {
            Some((head, body)) => self.on_frame(ctx, head, body),
            None => tracing::warn!(restaurant_id = %self.id, "unreadable frame ignored"),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The subscription ended (the connection is gone for good): sockets reconnect elsewhere.
        ctx.stop();
    }
}

impl Handler<Subscribe> for RelayActor {
    type Result = ResponseActFuture<Self, Result<u64, EngineError>>;

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        self.empty_since = None;
        // A resume the stream here still reaches, from a table whose token this relay has seen
        // accepted: replayed from the ring, no need to ask the owner.
        let known = match msg.audience {
            Audience::Kitchen => true,
            Audience::Table(t) => {
                self.tokens.get(&t).map(String::as_str) == msg.table_token.as_deref()
            }
        };
        if self.stream == Stream::Live && known {
            let replay = msg
                .resume
                .as_ref()
                .and_then(|(epoch, since)| self.ring.replay(epoch, *since, msg.audience))
                .filter(|missed| missed.len() <= msg.sink.room());
            if let Some(missed) = replay {
                if msg.hello {
                    self.push_hello(&msg.sink);
                }
                if missed.into_iter().any(|t| msg.sink.send_text(t).is_err()) {
                    return Box::pin(actix::fut::ready(Ok(0)));
                }
                let id = self.subscribers.add(msg.sink, msg.audience, msg.staff);
                return Box::pin(actix::fut::ready(Ok(id)));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.joining.push(Joining { msg, reply });
        self.ask(ctx);
        Box::pin(
            async move { answer.await.unwrap_or(Err(EngineError::Unavailable)) }.into_actor(self),
        )
    }
}

impl Handler<SayHello> for RelayActor {
    type Result = ();

    fn handle(&mut self, msg: SayHello, _ctx: &mut Context<Self>) {
        if self.stream == Stream::Live {
            self.push_hello(&msg.sink);
        } else {
            self.hellos.push(msg.sink);
        }
    }
}

impl Handler<Unsubscribe> for RelayActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        self.subscribers.remove(msg.id, msg.audience);
    }
}

impl Handler<CloseAll> for RelayActor {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _ctx: &mut Context<Self>) {
        self.subscribers.close_all(msg.code);
    }
}

impl Handler<CloseStaffSockets> for RelayActor {
    type Result = ();

    fn handle(&mut self, msg: CloseStaffSockets, _ctx: &mut Context<Self>) {
        self.subscribers.close_staff(msg.staff, close_code::POLICY);
    }
}

/// A kitchen socket's status change, sent on to the owner.
impl Handler<ChangeStatus> for RelayActor {
    type Result = ResponseFuture<Result<Order, EngineError>>;

    fn handle(&mut self, msg: ChangeStatus, _ctx: &mut Context<Self>) -> Self::Result {
        self.upstream.change_status(self.id, msg)
    }
}

/// The fleet's live nodes, as the lease keeper last read them: a relay whose owner is not among them
/// resynchronises (whoever takes the restaurant over answers).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LiveNodes(pub Arc<HashSet<String>>);

impl Handler<LiveNodes> for RelayActor {
    type Result = ();

    fn handle(&mut self, msg: LiveNodes, ctx: &mut Context<Self>) {
        if let Some(owner) = &self.owner {
            if !msg.0.contains(owner) {
                tracing::info!(restaurant_id = %self.id, owner, "relay's owner left the fleet");
                self.owner = None;
                self.resync(ctx, "owner_dead");
            }
        }
    }
}
