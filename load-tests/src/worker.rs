//! One worker process (or, with `--processes 1`, a task of the only process): it holds its slice of the
//! sockets, and for `orders` and `mixed` it also places the orders of its restaurants, runs their kitchen
//! bot and (in `mixed`) churns sockets and toggles dishes. It talks to the coordinator through
//! [`Control`] messages in and [`WorkerEvent`] messages out — channels in-process, JSON lines over
//! stdin/stdout between processes.
//!
//! One file of 2,000 lines: sockets, order generation and the kitchen bot share the private [`Worker`]
//! state; the held fleet's schedule already lives apart ([`pulse`]), and the rest is to be split the
//! same way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use scan2order_schema::domain::{MenuItemId, OrderId, OrderStatus};
use scan2order_schema::wire::{
    ClientMsg, Order, PlaceOrderLine, PlaceOrderRequest, ServerMsg, SetAvailableRequest,
    SetStatusRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use uuid::Uuid;

use crate::accounting::{order_note, Audience, Fault, FaultInjector, Ledger, Seen, SeqTrack};
use crate::http::HttpPool;
use crate::setup::{Plan, Target};
use crate::stats::{c, h, now_ns, self_sample, ProcFigures, Stats, WorkerReport};
use crate::ws::{Msg, ReadOutcome, WsConn};

mod pulse;

/// Which scenario a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    Sockets,
    Orders,
    Fanout,
    Mixed,
    /// `fanout` against the baseline server.
    BaselineFanout,
}

/// How the kitchen bot changes statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StatusVia {
    Rest,
    Socket,
}

/// Everything a worker needs to know about the run (serialised to worker processes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunCfg {
    pub scenario: Scenario,
    pub processes: u32,
    /// Worker `i` binds `bind_base + i` (127.0.0.2, 127.0.0.3, …) when set.
    pub bind_base: Option<std::net::Ipv4Addr>,
    /// Total sockets (`sockets`, `fanout`).
    pub sockets: u64,
    /// Restaurants used (the first N of the plan).
    pub restaurants: usize,
    /// Tables used per restaurant (0: all).
    pub tables: usize,
    pub kitchen_per_restaurant: u32,
    /// Table sockets per table (`orders`, `mixed`).
    pub table_sockets_per_table: u32,
    /// Orders per second over all workers.
    pub rate: f64,
    /// Generation time (`orders`, `mixed`), s.
    pub duration_s: f64,
    /// The statuses the kitchen bot walks each order through.
    pub statuses: Vec<OrderStatus>,
    pub status_via: StatusVia,
    pub status_delay_ms: u64,
    /// Socket closes (and resumes) per second over all table sockets (`mixed`).
    pub churn_per_s: f64,
    /// Sold-out toggles per second over all restaurants (`mixed`).
    pub toggles_per_s: f64,
    /// Popularity skew over restaurants: weight of restaurant i is 1/(i+1)^skew (`mixed`).
    pub skew: f64,
    /// Menu reads per order (`mixed`: guests open the menu before ordering).
    pub menu_reads_per_order: u32,
    /// Subscribe by sending `resume` right after `hello` instead of waiting for the snapshot.
    pub fast_subscribe: bool,
    pub connect_concurrency: usize,
    pub connect_timeout_s: u64,
    pub http_conns: usize,
    pub max_inflight: usize,
    /// After generation stops, how long to wait for outstanding deliveries.
    pub settle_ms: u64,
    pub fault: Option<Fault>,
    /// A random id that keeps idempotency keys of different runs apart.
    pub run_id: String,
    /// How long a socket that was subscribed keeps trying to reconnect (the server restarting), s;
    /// 0: give up after 5 failed attempts. While it is set, a new epoch after a reconnect is expected,
    /// not an error.
    #[serde(default)]
    pub reconnect_patience_s: f64,
    /// A fleet: worker `i` sends its HTTP calls to `nodes[i % n]` (empty: the plan's target).
    #[serde(default)]
    pub nodes: Vec<Target>,
    /// A fleet: worker `i` opens its sockets on `socket_nodes[i % n]` (empty: as its HTTP calls).
    #[serde(default)]
    pub socket_nodes: Vec<Target>,
    /// `sockets`: how many workers hold each restaurant's sockets (0: every worker, round robin).
    /// With one node per worker, the nodes each restaurant's guests are spread over.
    #[serde(default)]
    pub spread: u32,
}

impl RunCfg {
    pub fn bind_for(&self, worker: u32) -> Option<IpAddr> {
        self.bind_base.map(|b| {
            let [a, x, y, z] = b.octets();
            let n = u32::from_be_bytes([a, x, y, z]).wrapping_add(worker);
            IpAddr::V4(std::net::Ipv4Addr::from(n))
        })
    }

    fn baseline(&self) -> bool {
        self.scenario == Scenario::BaselineFanout
    }

    /// Where worker `i` sends its HTTP calls.
    pub fn http_target<'a>(&'a self, plan: &'a Plan, worker: u32) -> &'a Target {
        pick(&self.nodes, worker).unwrap_or(&plan.target)
    }

    /// Where worker `i` opens its sockets.
    pub fn socket_target<'a>(&'a self, plan: &'a Plan, worker: u32) -> &'a Target {
        pick(&self.socket_nodes, worker).unwrap_or_else(|| self.http_target(plan, worker))
    }
}

fn pick(nodes: &[Target], worker: u32) -> Option<&Target> {
    (!nodes.is_empty()).then(|| &nodes[worker as usize % nodes.len()])
}

/// Coordinator → worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Control {
    /// A toggle is about to be sent: expect its deliveries.
    Arm {
        id: u64,
        restaurant: u32,
        item: Uuid,
        available: bool,
    },
    /// The toggle's request went out at `sent_ns`; `ok` is its answer.
    Fired { id: u64, sent_ns: u64, ok: bool },
    /// How many deliveries has toggle `id` had?
    Count { id: u64 },
    /// How many reconnected sockets have resumed so far?
    CountResumed,
    /// Sample the worker's own memory now (sockets open, one event delivered).
    Sample,
    /// Start generating (orders, mixed).
    Go,
    /// `sockets --pulse-every`: run the menu events' schedule (see [`pulse`]).
    Pulse {
        start_ns: u64,
        rounds: u32,
        period_ms: u64,
    },
    /// Close everything and report.
    Stop,
}

/// Worker → coordinator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WorkerEvent {
    Ready {
        worker: u32,
        sockets: u64,
        subscribed: u64,
        failed: u64,
        started_ns: u64,
        hello_done_ns: u64,
        subscribed_done_ns: u64,
    },
    Armed {
        worker: u32,
        id: u64,
    },
    Count {
        worker: u32,
        id: u64,
        n: u64,
    },
    Sampled {
        worker: u32,
        rss_kib: u64,
    },
    Resumed {
        worker: u32,
        /// Reconnected sockets that resumed.
        n: u64,
        /// When the last of them did (0: none).
        last_ns: u64,
        /// When the first subscribed socket lost its connection (0: none).
        first_close_ns: u64,
    },
    Progress {
        worker: u32,
        counters: std::collections::BTreeMap<String, u64>,
        errors: u64,
        order_p99_ms: Option<f64>,
    },
    GenerationDone {
        worker: u32,
    },
    /// The schedule of menu events is over: how many of this worker's were answered 200, and how
    /// late its latest send was against the schedule.
    Pulsed {
        worker: u32,
        fired_ok: u64,
        latest_send_ms: f64,
    },
    Report(Box<WorkerReport>),
    Failed {
        worker: u32,
        error: String,
    },
}

/// A kitchen bot's status change over a socket.
struct BotCmd {
    request_id: String,
    order_id: Uuid,
    status: OrderStatus,
}

type Pending = HashMap<String, (Uuid, OrderStatus, u64, oneshot::Sender<bool>)>;

/// One logical socket (it keeps its identity and `seq` position across reconnects).
struct Slot {
    audience: Audience,
    churn: bool,
    bot: Option<mpsc::UnboundedReceiver<BotCmd>>,
}

/// Shared state of a worker.
pub struct Worker {
    pub idx: u32,
    cfg: Arc<RunCfg>,
    plan: Arc<Plan>,
    pub stats: Stats,
    pub ledger: Ledger,
    fault: FaultInjector,
    http: Arc<HttpPool>,
    bind: Option<IpAddr>,
    epochs: Vec<Mutex<Option<String>>>,
    stop: watch::Receiver<bool>,
    hello_done_ns: AtomicU64,
    subscribed_done_ns: AtomicU64,
    settled: AtomicU64,
    /// Reconnected sockets that resumed (a replay or, after a restart, a fresh snapshot), and when the
    /// last did.
    resumed: AtomicU64,
    resumed_done_ns: AtomicU64,
    /// When the first subscribed socket saw its connection end (u64::MAX: none yet).
    first_close_ns: AtomicU64,
    pending: Mutex<Pending>,
    bots: Mutex<HashMap<u32, mpsc::UnboundedSender<BotCmd>>>,
    availability: Vec<Vec<AtomicBool>>,
    toggling: Vec<AtomicBool>,
    next_tag: AtomicU64,
    next_token: AtomicUsize,
    inflight: AtomicUsize,
    loaded: Mutex<Option<crate::stats::ProcSample>>,
    /// The hottest counter, resolved once.
    events: &'static AtomicU64,
    /// Generation is over and the server is behind: the kitchen bot starts no new step.
    draining: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sockets worker `idx` holds.
fn assign_slots(plan: &Plan, cfg: &RunCfg, idx: u32) -> Vec<Slot> {
    let p = u64::from(cfg.processes.max(1));
    let rcount = cfg.restaurants.min(plan.restaurants.len()).max(1);
    let tables_of = |r: usize| {
        let n = plan.restaurants.get(r).map_or(1, |x| x.tables.len()).max(1);
        if cfg.tables == 0 {
            n
        } else {
            cfg.tables.min(n)
        }
    };
    let mut slots = Vec::new();
    match cfg.scenario {
        Scenario::Sockets | Scenario::Fanout | Scenario::BaselineFanout => {
            let k = if cfg.baseline() {
                0
            } else {
                u64::from(cfg.kitchen_per_restaurant)
            };
            let kitchens = (rcount as u64) * k;
            let spread = u64::from(cfg.spread).min(p);
            // Socket g's worker: round robin, or one of the `spread` workers of its restaurant.
            let holder = |g: u64| {
                if spread == 0 {
                    return g % p;
                }
                if g < kitchens {
                    return (g / k.max(1)) % p;
                }
                let j = g - kitchens;
                let r = j % rcount as u64;
                (r + (j / rcount as u64) % spread) % p
            };
            for g in (0..cfg.sockets).filter(|g| holder(*g) == u64::from(idx)) {
                let audience = if g < kitchens {
                    Audience::Kitchen {
                        restaurant: (g / k.max(1)) as u32,
                    }
                } else {
                    let j = g - kitchens;
                    let r = (j % rcount as u64) as usize;
                    let t = ((j / rcount as u64) % tables_of(r) as u64) as u32;
                    Audience::Table {
                        restaurant: r as u32,
                        table: t,
                    }
                };
                slots.push(Slot {
                    audience,
                    churn: false,
                    bot: None,
                });
            }
        }
        Scenario::Orders | Scenario::Mixed => {
            for r in (0..rcount).filter(|r| (*r as u64) % p == u64::from(idx)) {
                for _ in 0..cfg.kitchen_per_restaurant {
                    slots.push(Slot {
                        audience: Audience::Kitchen {
                            restaurant: r as u32,
                        },
                        churn: false,
                        bot: None,
                    });
                }
                for t in 0..tables_of(r) {
                    for _ in 0..cfg.table_sockets_per_table {
                        slots.push(Slot {
                            audience: Audience::Table {
                                restaurant: r as u32,
                                table: t as u32,
                            },
                            churn: cfg.scenario == Scenario::Mixed && cfg.churn_per_s > 0.0,
                            bot: None,
                        });
                    }
                }
            }
        }
    }
    slots
}

/// The audiences of the sockets worker `idx` holds (the coordinator counts listeners with it).
pub fn audiences(plan: &Plan, cfg: &RunCfg, idx: u32) -> Vec<Audience> {
    assign_slots(plan, cfg, idx)
        .into_iter()
        .map(|s| s.audience)
        .collect()
}

impl Worker {
    fn restaurants_owned(&self) -> Vec<u32> {
        let p = self.cfg.processes.max(1) as usize;
        let rcount = self.cfg.restaurants.min(self.plan.restaurants.len());
        (0..rcount)
            .filter(|r| r % p == self.idx as usize)
            .map(|r| r as u32)
            .collect()
    }

    fn tables_used(&self, r: usize) -> usize {
        let n = self.plan.restaurants[r].tables.len().max(1);
        if self.cfg.tables == 0 {
            n
        } else {
            self.cfg.tables.min(n)
        }
    }

    fn socket_path(&self, a: Audience) -> (String, Option<String>) {
        if self.cfg.baseline() {
            return ("/ws".into(), None);
        }
        match a {
            Audience::Kitchen { restaurant } => {
                let r = &self.plan.restaurants[restaurant as usize];
                (
                    format!("/ws/kitchen{}", r.kitchen_query()),
                    Some(format!("Bearer {}", r.staff_token)),
                )
            }
            Audience::Table { restaurant, table } => {
                let r = &self.plan.restaurants[restaurant as usize];
                (
                    format!("/ws/table/{}", r.tables[table as usize].token),
                    None,
                )
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// A `menu_item` event reached one of this worker's sockets: its guests now choose accordingly
    /// (as the guest app does).
    fn saw_availability(&self, r: u32, item: Uuid, available: bool) {
        let rp = &self.plan.restaurants[r as usize];
        if let Some(i) = rp.items.iter().position(|(id, _)| *id == item) {
            self.availability[r as usize][i].store(available, Ordering::Relaxed);
        }
    }

    /// Whether every one of `items` is available as far as this worker knows now.
    fn all_available(&self, r: u32, items: &[Uuid]) -> bool {
        let rp = &self.plan.restaurants[r as usize];
        items.iter().all(|item| {
            rp.items
                .iter()
                .position(|(id, _)| id == item)
                .is_none_or(|i| self.availability[r as usize][i].load(Ordering::Relaxed))
        })
    }
}

/// Per-connection state the message handler updates.
struct Conn {
    audience: Audience,
    track: Option<SeqTrack>,
    connect_ns: u64,
    /// (epoch, since) to send as `resume` after the handler returns.
    resume: Option<(String, u64)>,
    got_hello: bool,
    /// A hash of the epoch this socket's track counts in (0: none yet); carried across reconnects.
    epoch: u64,
    /// Reconnected into a new epoch: the resume will be answered with a snapshot.
    awaiting_snapshot: bool,
    /// This connection resumed in its URL (`?epoch=&since=`): no `resume` message after `hello`.
    url_resumed: bool,
}

/// In the reconnect storm, a reconnecting socket resumes in its URL, as the protocol allows, instead of
/// a `resume` message after `hello`: under the storm's load that message can arrive after the server's
/// resume grace, when the snapshot is already on its way.
fn url_resume(w: &Worker, a: Audience, first: bool, track: Option<SeqTrack>) -> Option<String> {
    if first || w.cfg.reconnect_patience_s <= 0.0 {
        return None;
    }
    let restaurant = match a {
        Audience::Kitchen { restaurant } | Audience::Table { restaurant, .. } => restaurant,
    };
    let epoch = lock(w.epochs.get(restaurant as usize)?).clone()?;
    Some(format!("epoch={epoch}&since={}", track?.last()))
}

/// The browser clients' reconnect backoff (web/static/common.js), used with `reconnect_patience_s`.
const BACKOFF_START_MS: u64 = 500;
const BACKOFF_MAX_MS: u64 = 10_000;

fn epoch_hash(epoch: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    epoch.hash(&mut h);
    h.finish().max(1)
}

impl Conn {
    fn on_text(&mut self, w: &Worker, text: &[u8]) {
        let msg: ServerMsg = match serde_json::from_slice(text) {
            Ok(m) => m,
            Err(_) => {
                w.stats.error("ws_unparsable_message");
                return;
            }
        };
        let now = now_ns();
        let restaurant = match self.audience {
            Audience::Kitchen { restaurant } | Audience::Table { restaurant, .. } => restaurant,
        };
        match msg {
            ServerMsg::Hello { epoch, seq } => {
                if !self.got_hello {
                    self.got_hello = true;
                    w.stats
                        .record_ns(h::CONNECT, now.saturating_sub(self.connect_ns));
                    w.hello_done_ns.fetch_max(now, Ordering::Relaxed);
                }
                if let Some(slot) = w.epochs.get(restaurant as usize) {
                    let mut e = lock(slot);
                    match e.as_deref() {
                        // Expected when the run restarts the server on purpose.
                        Some(old) if old != epoch && w.cfg.reconnect_patience_s <= 0.0 => {
                            w.stats.error("server_epoch_changed")
                        }
                        _ => {}
                    }
                    *e = Some(epoch.clone());
                }
                if w.cfg.baseline() {
                    if self.track.is_none() {
                        self.track = Some(SeqTrack::starting_at(seq));
                        self.subscribed(w, now);
                    }
                    return;
                }
                if self.track.is_none() {
                    self.epoch = epoch_hash(&epoch);
                }
                match self.track {
                    Some(t) => {
                        // A reconnect: resume from where this logical socket was. Within the same
                        // epoch the server replays what was missed right after the `resume`; in
                        // another one it answers with a snapshot (counted as resumed there).
                        if self.epoch_known(&epoch) {
                            self.resumed(w, now);
                        }
                        if !self.url_resumed {
                            self.resume = Some((epoch, t.last()));
                        }
                    }
                    None if w.cfg.fast_subscribe => {
                        self.resume = Some((epoch, seq));
                        self.track = Some(SeqTrack::starting_at(seq));
                        self.subscribed(w, now);
                    }
                    None => {}
                }
            }
            ServerMsg::Snapshot { seq, .. } => {
                if self.track.is_none() {
                    self.track = Some(SeqTrack::starting_at(seq));
                    self.subscribed(w, now);
                } else {
                    // A resume the server could not replay (or a second snapshot): what happened in
                    // between is gone for this socket.
                    w.ledger.snapshot_fallback();
                    self.track = Some(SeqTrack::starting_at(seq));
                    if self.awaiting_snapshot {
                        self.awaiting_snapshot = false;
                        self.resumed(w, now);
                    }
                }
            }
            ServerMsg::Ack { request_id } => {
                if let Some((id, status, sent, tx)) = lock(&w.pending).remove(&request_id) {
                    w.stats
                        .record_ns(h::WS_SET_STATUS, now.saturating_sub(sent));
                    w.ledger.status_done(id, status, true);
                    let _ = tx.send(true);
                }
            }
            ServerMsg::Error {
                request_id, error, ..
            } => {
                w.stats.error(format!("ws_error_{error}"));
                if let Some(rid) = request_id {
                    if let Some((id, status, _, tx)) = lock(&w.pending).remove(&rid) {
                        w.ledger.status_done(id, status, false);
                        let _ = tx.send(false);
                    }
                }
            }
            event => {
                let Some(seq) = event.seq() else {
                    return;
                };
                for _ in 0..w.fault.times() {
                    self.on_event(w, seq, &event, now);
                }
            }
        }
    }

    /// Whether `epoch` is the one this socket's track was counted in (`false` after a restart: the
    /// resume will be answered with a snapshot).
    fn epoch_known(&mut self, epoch: &str) -> bool {
        let h = epoch_hash(epoch);
        let same = self.epoch == 0 || self.epoch == h;
        self.awaiting_snapshot = !same;
        self.epoch = h;
        same
    }

    fn resumed(&self, w: &Worker, now: u64) {
        w.resumed.fetch_add(1, Ordering::Relaxed);
        w.resumed_done_ns.fetch_max(now, Ordering::Relaxed);
    }

    fn subscribed(&self, w: &Worker, now: u64) {
        w.stats.incr(c::SUBSCRIBED);
        w.stats
            .record_ns(h::SUBSCRIBE, now.saturating_sub(self.connect_ns));
        w.subscribed_done_ns.fetch_max(now, Ordering::Relaxed);
        w.settled.fetch_add(1, Ordering::Relaxed);
    }

    fn on_event(&mut self, w: &Worker, seq: u64, event: &ServerMsg, now: u64) {
        let Some(track) = self.track.as_mut() else {
            w.ledger.unmatched();
            return;
        };
        match track.observe(seq) {
            Seen::Duplicate => {
                w.ledger.duplicate();
                return;
            }
            Seen::Fresh { gap } => {
                if gap > 0 && matches!(self.audience, Audience::Kitchen { .. }) {
                    w.ledger.gap(gap);
                }
            }
        }
        w.events.fetch_add(1, Ordering::Relaxed);
        let kitchen = matches!(self.audience, Audience::Kitchen { .. });
        match event {
            ServerMsg::OrderCreated { order, .. } => {
                if let Some(lat) =
                    w.ledger
                        .order_arrived(&order.note, order.id.get(), self.audience, now)
                {
                    let name = if kitchen {
                        h::ORDER_TO_KITCHEN
                    } else {
                        h::ORDER_TO_TABLE
                    };
                    w.stats.record_ns(name, lat);
                }
            }
            ServerMsg::OrderStatus {
                order_id, status, ..
            } => {
                if let Some(lat) =
                    w.ledger
                        .status_arrived(order_id.get(), *status, self.audience, now)
                {
                    let name = if kitchen {
                        h::STATUS_TO_KITCHEN
                    } else {
                        h::STATUS_TO_TABLE
                    };
                    w.stats.record_ns(name, lat);
                }
            }
            ServerMsg::MenuItem {
                item_id, available, ..
            } => {
                if w.cfg.scenario != Scenario::Mixed {
                    // (`mixed` toggles its own restaurants and tracks their state itself.)
                    let (Audience::Kitchen { restaurant } | Audience::Table { restaurant, .. }) =
                        self.audience;
                    w.saw_availability(restaurant, item_id.get(), *available);
                }
                if let Some(lat) =
                    w.ledger
                        .toggle_arrived(item_id.get(), *available, self.audience, now)
                {
                    w.stats.record_ns(h::TOGGLE_TO_SOCKET, lat);
                }
            }
            _ => {}
        }
    }
}

/// How long a churning socket lives before it closes and resumes: exponential around the mean.
fn churn_lifetime(cfg: &RunCfg, churning_sockets: usize) -> Duration {
    if cfg.churn_per_s <= 0.0 || churning_sockets == 0 {
        return Duration::from_secs(3600);
    }
    let mean = churning_sockets as f64 / cfg.churn_per_s;
    let u: f64 = rand::rng().random_range(1e-6..1.0);
    Duration::from_secs_f64((-u.ln() * mean).min(3600.0))
}

/// One logical socket: connect, subscribe, listen; reconnect and resume when it drops (or churns).
async fn socket_task(
    w: Arc<Worker>,
    mut slot: Slot,
    connect_gate: Arc<Semaphore>,
    churners: usize,
    pos: Position,
    hub: Option<mpsc::UnboundedSender<Listener>>,
    mut first_permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let mut track: Option<SeqTrack> = pos.track;
    let mut epoch = pos.epoch;
    let mut first = pos.first;
    let mut failures = 0u32;
    // With `reconnect_patience_s`, a subscribed socket keeps trying until this long after its first
    // failed attempt (the server is restarting).
    let mut failing_since: Option<tokio::time::Instant> = None;
    // Connections the server ended before saying hello, in a row (a dead token, say): give up at 5.
    let mut refused = pos.refused;
    let mut stop = w.stop.clone();
    loop {
        if w.stopped() {
            break;
        }
        if !first && w.cfg.reconnect_patience_s > 0.0 {
            // The browser clients' policy (web/static/common.js): before every reconnect attempt,
            // 0.5 s doubling to 10 s, jittered to half–full, so that thousands of sockets do not
            // come back in lockstep.
            let base = BACKOFF_START_MS
                .saturating_mul(1u64 << failures.min(10))
                .min(BACKOFF_MAX_MS);
            let wait = base / 2 + rand::random::<u64>() % (base / 2).max(1);
            Box::pin(tokio::time::sleep(Duration::from_millis(wait))).await;
        }
        let connect_ns;
        let url_resumed;
        let conn = {
            let _permit = match first_permit.take() {
                Some(p) => Some(p),
                None if first => Box::pin(connect_gate.clone().acquire_owned()).await.ok(),
                None => None,
            };
            // Latency counts from the connect attempt, not from the wait for the tool's own gate.
            connect_ns = now_ns();
            // Boxed, with the path and headers inside: the handshake's state lives on the heap only
            // while it runs, instead of enlarging every socket's task for its whole life.
            let w2 = w.clone();
            let audience = slot.audience;
            let url_resume = url_resume(&w, audience, first, track);
            url_resumed = url_resume.is_some();
            Box::pin(async move {
                let (path, auth) = w2.socket_path(audience);
                let path = match url_resume {
                    Some(q) if path.contains('?') => format!("{path}&{q}"),
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                let headers: Vec<(&str, &str)> = auth
                    .as_deref()
                    .map(|a| vec![("Authorization", a)])
                    .unwrap_or_default();
                let target = w2.cfg.socket_target(&w2.plan, w2.idx);
                WsConn::connect(target.addr, w2.bind, &target.host, &path, &headers).await
            })
            .await
        };
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                w.stats.incr(c::CONNECT_FAIL);
                w.stats.error(e.kind());
                failures += 1;
                let patience = Duration::from_secs_f64(w.cfg.reconnect_patience_s.max(0.0));
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                let patient = !first && !patience.is_zero() && since.elapsed() < patience;
                if (failures >= 5 && !patient) || w.stopped() {
                    if first {
                        // Never subscribed: let the connect phase finish counting.
                        w.settled.fetch_add(1, Ordering::Relaxed);
                    }
                    w.stats.error("ws_gave_up");
                    return;
                }
                if !patient {
                    Box::pin(tokio::time::sleep(Duration::from_millis(
                        100 * u64::from(failures),
                    )))
                    .await;
                }
                continue;
            }
        };
        failures = 0;
        failing_since = None;
        w.stats.incr(c::CONNECT_OK);
        w.stats.incr(c::OPEN);
        if !first {
            w.stats.incr(c::RECONNECTS);
        }
        let mut st = Conn {
            audience: slot.audience,
            track,
            connect_ns,
            resume: None,
            got_hello: false,
            epoch,
            awaiting_snapshot: false,
            url_resumed,
        };
        let was_subscribed = track.is_some();
        if let Some(hub) = hub.as_ref().filter(|_| !slot.churn && slot.bot.is_none()) {
            // A plain listener: hand the connection to this worker's hub and end the task, so an
            // idle socket costs no task at all.
            let listener = Listener {
                conn,
                st,
                first,
                was_subscribed,
                refused,
            };
            if hub.send(listener).is_err() {
                w.stats.decr(c::OPEN);
            }
            return;
        }
        let churn_at = tokio::time::Instant::now()
            + if slot.churn {
                churn_lifetime(&w.cfg, churners)
            } else {
                Duration::from_secs(365 * 24 * 3600)
            };
        let end = if slot.churn || slot.bot.is_some() {
            // The few sockets that do more than listen: their bigger state lives on the heap.
            Box::pin(run_connection(
                &w, &mut conn, &mut st, &mut slot, &mut stop, churn_at,
            ))
            .await
        } else {
            run_listener(&w, &mut conn, &mut st, &mut stop).await
        };
        let next = after_end(&w, &st, first, was_subscribed, &mut refused, &end);
        if matches!(end, End::Stop | End::Churn) {
            Box::pin(conn.close(1000)).await;
        }
        if matches!(next, Next::Done) || w.stopped() {
            return;
        }
        track = st.track;
        epoch = st.epoch;
        first = false;
    }
}

/// What a logical socket carries from one connection to the next.
#[derive(Clone, Copy, Debug)]
struct Position {
    track: Option<SeqTrack>,
    first: bool,
    refused: u32,
    epoch: u64,
}

impl Position {
    const NEW: Position = Position {
        track: None,
        first: true,
        refused: 0,
        epoch: 0,
    };
}

enum Next {
    Reconnect,
    Done,
}

/// Bookkeeping after a connection ended; says whether the logical socket reconnects.
fn after_end(
    w: &Worker,
    st: &Conn,
    first: bool,
    was_subscribed: bool,
    refused: &mut u32,
    end: &End,
) -> Next {
    w.stats.decr(c::OPEN);
    if st.track.is_some() && !matches!(end, End::Stop | End::Churn) {
        w.first_close_ns.fetch_min(now_ns(), Ordering::Relaxed);
    }
    if first && !was_subscribed && st.track.is_none() {
        // Closed before subscribing: counted as settled (failed) so the connect phase ends.
        w.settled.fetch_add(1, Ordering::Relaxed);
        w.stats.error("ws_closed_before_subscribed");
        return Next::Done;
    }
    if st.got_hello {
        *refused = 0;
    } else {
        *refused += 1;
        if *refused >= 5 {
            w.stats.error("ws_gave_up_refused");
            return Next::Done;
        }
    }
    match end {
        End::Stop => return Next::Done,
        End::Churn => w.stats.incr(c::CHURNS),
        End::ServerClosed(code) => {
            w.stats.incr(c::SERVER_CLOSES);
            w.stats.error(format!("ws_closed_by_server_{code}"));
        }
        End::Eof => w.stats.error("ws_eof"),
        End::Error(kind) => w.stats.error(kind.clone()),
    }
    Next::Reconnect
}

/// A plain listening connection, held by a [`hub`].
struct Listener {
    conn: WsConn,
    st: Conn,
    first: bool,
    was_subscribed: bool,
    refused: u32,
}

/// Where a hub's wakers put the sockets that became readable.
struct HubShared {
    ready: Mutex<Vec<u32>>,
    waker: futures_util::task::AtomicWaker,
}

/// The waker of one socket in a hub: readiness pushes its slot number and wakes the hub.
struct SlotWaker {
    idx: u32,
    shared: Arc<HubShared>,
}

impl std::task::Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        lock(&self.shared.ready).push(self.idx);
        self.shared.waker.wake();
    }
}

type HubSlot = Option<(Listener, std::task::Waker)>;

/// One task for many listening sockets: each socket's read readiness is registered with its own
/// small waker, so the hub only touches the sockets that have something to read. Per socket this
/// costs the stream, its state and a waker — no task, no future, no buffer.
async fn hub(
    w: Arc<Worker>,
    mut rx: mpsc::UnboundedReceiver<Listener>,
    tx: mpsc::UnboundedSender<Listener>,
    gate: Arc<Semaphore>,
    capacity: usize,
) {
    let shared = Arc::new(HubShared {
        ready: Mutex::new(Vec::new()),
        waker: futures_util::task::AtomicWaker::new(),
    });
    let mut slots: Vec<HubSlot> = Vec::with_capacity(capacity);
    let mut free: Vec<u32> = Vec::new();
    let mut stop = w.stop.clone();
    loop {
        enum Ev {
            Add(Box<Listener>),
            Ready(Vec<u32>),
            Stop,
        }
        let ev = tokio::select! {
            biased;
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() { Ev::Stop } else { continue }
            }
            l = rx.recv() => match l {
                Some(l) => Ev::Add(Box::new(l)),
                None => Ev::Stop,
            },
            list = std::future::poll_fn(|cx| {
                shared.waker.register(cx.waker());
                let mut g = lock(&shared.ready);
                if g.is_empty() {
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(std::mem::take(&mut *g))
                }
            }) => Ev::Ready(list),
        };
        match ev {
            Ev::Stop => {
                let close = crate::ws::client_frame(0x8, &1000u16.to_be_bytes());
                for (l, _) in slots.iter().flatten() {
                    let _ = l.conn.try_write_all(&close);
                    w.stats.decr(c::OPEN);
                }
                return;
            }
            Ev::Add(l) => {
                let mut l = *l;
                let idx = free.pop().unwrap_or_else(|| {
                    slots.push(None);
                    (slots.len() - 1) as u32
                });
                let waker = std::task::Waker::from(Arc::new(SlotWaker {
                    idx,
                    shared: shared.clone(),
                }));
                // The first frames may have come with the upgrade response.
                let buffered = {
                    let st = &mut l.st;
                    let mut on_msg = |m: Msg<'_>| {
                        if let Msg::Text(t) = m {
                            st.on_text(&w, t);
                        }
                    };
                    l.conn.take_buffered(&mut on_msg)
                };
                let end = match buffered {
                    Ok((ReadOutcome::Open, replies)) => {
                        flush_sync(&l.conn, &mut l.st, &replies).err()
                    }
                    Ok((ReadOutcome::Closed(code), _)) => Some(End::ServerClosed(code)),
                    Ok((ReadOutcome::Eof, _)) => Some(End::Eof),
                    Err(e) => Some(End::Error(e.kind())),
                };
                slots[idx as usize] = Some((l, waker));
                match end {
                    Some(end) => finish_slot(&w, &mut slots, &mut free, idx, end, &tx, &gate),
                    None => service(&w, &mut slots, &mut free, idx, &tx, &gate),
                }
            }
            Ev::Ready(list) => {
                for idx in list {
                    service(&w, &mut slots, &mut free, idx, &tx, &gate);
                }
                // Let the connecting tasks and the coordinator run between batches.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Writes control replies and a pending `resume` without waiting.
fn flush_sync(conn: &WsConn, st: &mut Conn, replies: &crate::ws::Replies) -> Result<(), End> {
    if !replies.is_empty() {
        conn.try_write_replies(replies)
            .map_err(|e| End::Error(e.kind()))?;
    }
    if let Some((epoch, since)) = st.resume.take() {
        if let Ok(text) = serde_json::to_vec(&ClientMsg::Resume { epoch, since }) {
            conn.try_write_all(&crate::ws::client_frame(0x1, &text))
                .map_err(|e| End::Error(e.kind()))?;
        }
    }
    Ok(())
}

/// Reads a hub socket until it would block (which re-registers its waker), or until it ends.
fn service(
    w: &Arc<Worker>,
    slots: &mut [HubSlot],
    free: &mut Vec<u32>,
    idx: u32,
    tx: &mpsc::UnboundedSender<Listener>,
    gate: &Arc<Semaphore>,
) {
    let end = {
        let Some((l, waker)) = slots.get_mut(idx as usize).and_then(Option::as_mut) else {
            return;
        };
        let mut cx = std::task::Context::from_waker(waker);
        loop {
            match l.conn.poll_read_ready(&mut cx) {
                std::task::Poll::Pending => break None,
                std::task::Poll::Ready(Err(e)) => break Some(End::Error(e.kind())),
                std::task::Poll::Ready(Ok(())) => {}
            }
            let st = &mut l.st;
            let mut on_msg = |m: Msg<'_>| {
                if let Msg::Text(t) = m {
                    st.on_text(w, t);
                }
            };
            match l.conn.try_read_frames(&mut on_msg) {
                // Nothing there after all: readiness is now cleared; poll again to re-register.
                Ok((None, _)) => {}
                Ok((Some(ReadOutcome::Open), replies)) => {
                    if let Err(end) = flush_sync(&l.conn, &mut l.st, &replies) {
                        break Some(end);
                    }
                }
                Ok((Some(ReadOutcome::Closed(code)), replies)) => {
                    let _ = l.conn.try_write_replies(&replies);
                    break Some(End::ServerClosed(code));
                }
                Ok((Some(ReadOutcome::Eof), _)) => break Some(End::Eof),
                Err(e) => break Some(End::Error(e.kind())),
            }
        }
    };
    if let Some(end) = end {
        finish_slot(w, slots, free, idx, end, tx, gate);
    }
}

/// A hub socket ended: account for it and, unless it is done, reconnect it (resuming) in a task of
/// its own, which hands the new connection back to the hub.
fn finish_slot(
    w: &Arc<Worker>,
    slots: &mut [HubSlot],
    free: &mut Vec<u32>,
    idx: u32,
    end: End,
    tx: &mpsc::UnboundedSender<Listener>,
    gate: &Arc<Semaphore>,
) {
    let Some((mut l, _)) = slots.get_mut(idx as usize).and_then(Option::take) else {
        return;
    };
    free.push(idx);
    let next = after_end(w, &l.st, l.first, l.was_subscribed, &mut l.refused, &end);
    if matches!(next, Next::Done) || w.stopped() {
        return;
    }
    let pos = Position {
        track: l.st.track,
        first: false,
        refused: l.refused,
        epoch: l.st.epoch,
    };
    let slot = Slot {
        audience: l.st.audience,
        churn: false,
        bot: None,
    };
    tokio::spawn(socket_task(
        w.clone(),
        slot,
        gate.clone(),
        0,
        pos,
        Some(tx.clone()),
        None,
    ));
}

enum End {
    Stop,
    Churn,
    ServerClosed(u16),
    Eof,
    Error(String),
}

/// A socket that does more than listen: it churns (closes and resumes) or carries the kitchen bot's
/// `set_status` messages.
async fn run_connection(
    w: &Arc<Worker>,
    conn: &mut WsConn,
    st: &mut Conn,
    slot: &mut Slot,
    stop: &mut watch::Receiver<bool>,
    churn_at: tokio::time::Instant,
) -> End {
    // Only churning sockets carry a timer.
    let mut churn_timer = slot
        .churn
        .then(|| Box::pin(tokio::time::sleep_until(churn_at)));
    // The first frames may have come with the upgrade response.
    if conn.has_buffered() {
        let r = Box::pin(conn.drain_buffered(&mut |m| {
            if let Msg::Text(t) = m {
                st.on_text(w, t);
            }
        }))
        .await;
        match r {
            Ok(ReadOutcome::Open) => {}
            Ok(ReadOutcome::Closed(code)) => return End::ServerClosed(code),
            Ok(ReadOutcome::Eof) => return End::Eof,
            Err(e) => return End::Error(e.kind()),
        }
        if let Err(e) = Box::pin(send_resume(conn, st)).await {
            return End::Error(e);
        }
    }
    loop {
        enum Wake {
            Read,
            Stop,
            Churn,
            Bot(Option<BotCmd>),
        }
        let wake = {
            let bot = async {
                match slot.bot.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.wait_readable() => match r {
                    Ok(()) => Wake::Read,
                    Err(e) => return End::Error(e.kind()),
                },
                r = stop.changed() => if r.is_err() { return End::Stop } else { Wake::Stop },
                _ = async {
                    match churn_timer.as_mut() {
                        Some(t) => t.await,
                        None => std::future::pending().await,
                    }
                }, if st.track.is_some() => Wake::Churn,
                cmd = bot => Wake::Bot(cmd),
            }
        };
        match wake {
            Wake::Stop => {
                if *stop.borrow() {
                    return End::Stop;
                }
            }
            Wake::Churn => return End::Churn,
            Wake::Bot(None) => slot.bot = None,
            Wake::Bot(Some(cmd)) => {
                let msg = ClientMsg::SetStatus {
                    request_id: cmd.request_id.clone(),
                    order_id: OrderId::from(cmd.order_id),
                    status: cmd.status,
                    allergy_ack: false,
                };
                let Ok(text) = serde_json::to_vec(&msg) else {
                    continue;
                };
                if let Some(p) = lock(&w.pending).get_mut(&cmd.request_id) {
                    p.2 = now_ns();
                }
                w.ledger.status_sent_at(cmd.order_id, cmd.status, now_ns());
                if let Err(e) = Box::pin(conn.send_text(&text)).await {
                    return End::Error(e.kind());
                }
            }
            Wake::Read => {
                let r = Box::pin(conn.read_step(&mut |m| {
                    if let Msg::Text(t) = m {
                        st.on_text(w, t);
                    }
                }))
                .await;
                match r {
                    Ok(ReadOutcome::Open) => {}
                    Ok(ReadOutcome::Closed(code)) => return End::ServerClosed(code),
                    Ok(ReadOutcome::Eof) => return End::Eof,
                    Err(e) => return End::Error(e.kind()),
                }
                if let Err(e) = Box::pin(send_resume(conn, st)).await {
                    return End::Error(e);
                }
            }
        }
    }
}

/// A socket that only listens (nearly all of them): its task holds the stream, the readiness and stop
/// futures, and nothing else while idle.
async fn run_listener(
    w: &Arc<Worker>,
    conn: &mut WsConn,
    st: &mut Conn,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut on_msg = |m: Msg<'_>| {
        if let Msg::Text(t) = m {
            st.on_text(w, t);
        }
    };
    let mut pending = if conn.has_buffered() {
        // The first frames may have come with the upgrade response.
        match Box::pin(conn.drain_buffered(&mut on_msg)).await {
            Ok(ReadOutcome::Open) => None,
            Ok(ReadOutcome::Closed(code)) => return End::ServerClosed(code),
            Ok(ReadOutcome::Eof) => return End::Eof,
            Err(e) => return End::Error(e.kind()),
        }
    } else {
        None
    };
    loop {
        if let Some(replies) = pending.take() {
            if let Err(e) = Box::pin(conn.write_raw(replies)).await {
                return End::Error(e.kind());
            }
        }
        if let Some((epoch, since)) = st.resume.take() {
            if let Ok(text) = serde_json::to_vec(&ClientMsg::Resume { epoch, since }) {
                if let Err(e) = Box::pin(conn.send_text(&text)).await {
                    return End::Error(e.kind());
                }
            }
        }
        tokio::select! {
            biased;
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return End::Stop;
                }
                continue;
            }
            r = conn.wait_readable() => {
                if let Err(e) = r {
                    return End::Error(e.kind());
                }
            }
        }
        let mut on_msg = |m: Msg<'_>| {
            if let Msg::Text(t) = m {
                st.on_text(w, t);
            }
        };
        match conn.try_read_frames(&mut on_msg) {
            Ok((None, _)) => {}
            Ok((Some(ReadOutcome::Open), replies)) => {
                if !replies.is_empty() {
                    pending = Some(replies);
                }
            }
            Ok((Some(ReadOutcome::Closed(code)), replies)) => {
                let _ = Box::pin(conn.write_raw(replies)).await;
                return End::ServerClosed(code);
            }
            Ok((Some(ReadOutcome::Eof), _)) => return End::Eof,
            Err(e) => return End::Error(e.kind()),
        }
    }
}

async fn send_resume(conn: &mut WsConn, st: &mut Conn) -> Result<(), String> {
    if let Some((epoch, since)) = st.resume.take() {
        let msg = ClientMsg::Resume { epoch, since };
        if let Ok(text) = serde_json::to_vec(&msg) {
            conn.send_text(&text).await.map_err(|e| e.kind())?;
        }
    }
    Ok(())
}

/// Runs one worker until `Stop`, then sends its report.
pub async fn run_worker(
    idx: u32,
    plan: Arc<Plan>,
    cfg: Arc<RunCfg>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    out: mpsc::UnboundedSender<WorkerEvent>,
) {
    if let Err(e) = run_worker_inner(idx, plan, cfg, &mut ctl, &out).await {
        let _ = out.send(WorkerEvent::Failed {
            worker: idx,
            error: format!("{e:#}"),
        });
    }
}

async fn run_worker_inner(
    idx: u32,
    plan: Arc<Plan>,
    cfg: Arc<RunCfg>,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    out: &mpsc::UnboundedSender<WorkerEvent>,
) -> anyhow::Result<()> {
    let mut tool = ProcFigures {
        before: self_sample(),
        ..ProcFigures::default()
    };
    let bind = cfg.bind_for(idx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let target = cfg.http_target(&plan, idx);
    let http = HttpPool::new(
        target.addr,
        bind,
        target.host.clone(),
        cfg.http_conns,
        Duration::from_secs(30),
    );
    let stats = Stats::default();
    let w = Arc::new(Worker {
        idx,
        cfg: cfg.clone(),
        plan: plan.clone(),
        ledger: Ledger::default(),
        fault: FaultInjector::new(cfg.fault),
        http,
        bind,
        epochs: plan.restaurants.iter().map(|_| Mutex::new(None)).collect(),
        stop: stop_rx,
        hello_done_ns: AtomicU64::new(0),
        subscribed_done_ns: AtomicU64::new(0),
        settled: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        resumed_done_ns: AtomicU64::new(0),
        first_close_ns: AtomicU64::new(u64::MAX),
        pending: Mutex::new(HashMap::new()),
        bots: Mutex::new(HashMap::new()),
        availability: plan
            .restaurants
            .iter()
            .map(|r| r.items.iter().map(|(_, a)| AtomicBool::new(*a)).collect())
            .collect(),
        toggling: plan
            .restaurants
            .iter()
            .map(|_| AtomicBool::new(false))
            .collect(),
        next_tag: AtomicU64::new(u64::from(idx) << 40),
        next_token: AtomicUsize::new(0),
        inflight: AtomicUsize::new(0),
        loaded: Mutex::new(None),
        events: stats.counter(c::EVENTS),
        draining: AtomicBool::new(false),
        stats,
    });

    // Sockets.
    let mut slots = assign_slots(&plan, &cfg, idx);
    if cfg.status_via == StatusVia::Socket {
        let mut seen = std::collections::HashSet::new();
        for s in slots.iter_mut() {
            if let Audience::Kitchen { restaurant } = s.audience {
                if seen.insert(restaurant) {
                    let (tx, rx) = mpsc::unbounded_channel();
                    s.bot = Some(rx);
                    lock(&w.bots).insert(restaurant, tx);
                }
            }
        }
    }
    for s in &slots {
        w.ledger.listen(s.audience);
    }
    let listened: Vec<u32> = slots
        .iter()
        .map(|s| match s.audience {
            Audience::Kitchen { restaurant } | Audience::Table { restaurant, .. } => restaurant,
        })
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    let total = slots.len() as u64;
    let churners = slots.iter().filter(|s| s.churn).count();
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency.max(1)));
    let started_ns = now_ns();
    let mut tasks = Vec::with_capacity(slots.len());
    let task_bytes;
    // Hubs hold the plain listening sockets once connected: one per core.
    let hub_count = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_hub = slots.len().div_ceil(hub_count).max(1);
    let mut hub_txs = Vec::new();
    for _ in 0..hub_count {
        let (tx, rx) = mpsc::unbounded_channel();
        // Unconstrained: tokio's co-operative budget would otherwise make `poll_read_ready` answer
        // Pending (waking the socket's own waker) after 128 sockets in one poll of the hub.
        tasks.push(tokio::spawn(tokio::task::unconstrained(hub(
            w.clone(),
            rx,
            tx.clone(),
            gate.clone(),
            per_hub,
        ))));
        hub_txs.push(tx);
    }
    // Connecting tasks are started only as the gate lets them connect, so at most
    // `connect_concurrency` of them exist at once: their memory is reused, not piled up.
    {
        let (w2, gate2) = (w.clone(), gate.clone());
        let probe = socket_task(
            w.clone(),
            Slot {
                audience: Audience::Kitchen { restaurant: 0 },
                churn: false,
                bot: None,
            },
            gate.clone(),
            0,
            Position::NEW,
            None,
            None,
        );
        task_bytes = std::mem::size_of_val(&probe);
        drop(probe);
        tasks.push(tokio::spawn(async move {
            for (i, slot) in slots.into_iter().enumerate() {
                let Ok(permit) = gate2.clone().acquire_owned().await else {
                    break;
                };
                if w2.stopped() {
                    break;
                }
                let hub =
                    (!slot.churn && slot.bot.is_none()).then(|| hub_txs[i % hub_count].clone());
                let w3 = w2.clone();
                let gate3 = gate2.clone();
                // The task's first connect uses this permit (released once connected).
                tokio::spawn(socket_task(
                    w3,
                    slot,
                    gate3,
                    churners,
                    Position::NEW,
                    hub,
                    Some(permit),
                ));
            }
        }));
    }

    // Progress once a second.
    let progress = {
        let (w, out) = (w.clone(), out.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let _ = out.send(WorkerEvent::Progress {
                    worker: w.idx,
                    counters: w.stats.counters(),
                    errors: w.stats.error_total(),
                    order_p99_ms: w.stats.quantile_ms(h::ORDER_TO_KITCHEN, 0.99),
                });
            }
        })
    };

    // Connect phase: until every socket subscribed or gave up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.connect_timeout_s);
    while w.settled.load(Ordering::Relaxed) < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let subscribed = w.stats.get(c::SUBSCRIBED);
    if subscribed < total {
        w.stats.error("ws_not_subscribed_by_connect_timeout");
    }
    let _ = out.send(WorkerEvent::Ready {
        worker: idx,
        sockets: total,
        subscribed,
        failed: total.saturating_sub(subscribed),
        started_ns,
        hello_done_ns: w.hello_done_ns.load(Ordering::Relaxed),
        subscribed_done_ns: w.subscribed_done_ns.load(Ordering::Relaxed),
    });

    let mut generation: Option<tokio::task::JoinHandle<()>> = None;
    let mut pulsing = false;
    while let Some(msg) = ctl.recv().await {
        match msg {
            Control::Arm {
                id,
                restaurant,
                item,
                available,
            } => {
                w.ledger.toggle_armed(id, restaurant, item, available);
                let _ = out.send(WorkerEvent::Armed { worker: idx, id });
            }
            Control::Fired { id, sent_ns, ok } => {
                for lat in w.ledger.toggle_fired(id, sent_ns) {
                    w.stats.record_ns(h::TOGGLE_TO_SOCKET, lat);
                }
                w.ledger.toggle_done(id, ok);
            }
            Control::Count { id } => {
                let n = w.ledger.toggle_deliveries(id);
                let _ = out.send(WorkerEvent::Count { worker: idx, id, n });
            }
            Control::CountResumed => {
                let first_close = w.first_close_ns.load(Ordering::Relaxed);
                let _ = out.send(WorkerEvent::Resumed {
                    worker: idx,
                    n: w.resumed.load(Ordering::Relaxed),
                    last_ns: w.resumed_done_ns.load(Ordering::Relaxed),
                    first_close_ns: if first_close == u64::MAX {
                        0
                    } else {
                        first_close
                    },
                });
            }
            Control::Sample => {
                let s = self_sample();
                *lock(&w.loaded) = s;
                let _ = out.send(WorkerEvent::Sampled {
                    worker: idx,
                    rss_kib: s.map_or(0, |s| s.rss_kib),
                });
            }
            Control::Go => {
                let (w2, out2) = (w.clone(), out.clone());
                generation = Some(tokio::spawn(async move {
                    generate(&w2).await;
                    let _ = out2.send(WorkerEvent::GenerationDone { worker: w2.idx });
                }));
            }
            Control::Pulse {
                start_ns,
                rounds,
                period_ms,
            } => {
                let schedule = pulse::Schedule {
                    start_ns,
                    rounds,
                    period_ns: period_ms * 1_000_000,
                    restaurants: cfg.restaurants.min(plan.restaurants.len()).max(1) as u32,
                };
                pulsing = true;
                tokio::spawn(pulse::run(
                    w.clone(),
                    listened.clone(),
                    schedule,
                    out.clone(),
                ));
            }
            Control::Stop => break,
        }
    }
    if let Some(g) = generation {
        g.abort();
    }
    tool.loaded = *lock(&w.loaded);
    if tool.loaded.is_none() {
        tool.loaded = self_sample();
    }
    tool.peak_rss_kib = tool.loaded.map_or(0, |s| s.rss_kib);
    let _ = stop_tx.send(true);
    let all = futures_util::future::join_all(tasks);
    let closed = async {
        let _ = all.await;
        // Sockets with a task of their own (bot, churn, reconnecting) end on the stop signal too.
        while w.stats.get(c::OPEN) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .is_err()
    {
        w.stats.error("ws_close_timeout");
    }
    progress.abort();
    tool.after = self_sample();
    tool.finish(total);
    let mut report = WorkerReport::from_stats(idx, &w.stats);
    report.completeness = w.ledger.completeness();
    if !pulsing {
        // (A held fleet's thousands of scheduled events are counted in `completeness` instead.)
        report.toggles = w.ledger.toggle_summaries();
    }
    report.tool = tool;
    report.sockets = total;
    if total > 0 && idx == 0 {
        report
            .notes
            .push(format!(
                "a connecting socket's task future is {task_bytes} bytes; once subscribed, plain listeners live in hubs without a task"
            ));
    }
    report.connect_started_ns = started_ns;
    report.all_subscribed_ns = w.subscribed_done_ns.load(Ordering::Relaxed);
    let _ = out.send(WorkerEvent::Report(Box::new(report)));
    Ok(())
}

// ---- generation: orders, kitchen bot, churn, toggles -----------------------------------------------

/// Picks a restaurant index by popularity weight.
fn pick_weighted(weights: &[f64], total: f64) -> usize {
    let mut x = rand::rng().random_range(0.0..total.max(f64::MIN_POSITIVE));
    for (i, wt) in weights.iter().enumerate() {
        if x < *wt {
            return i;
        }
        x -= wt;
    }
    weights.len().saturating_sub(1)
}

async fn generate(w: &Arc<Worker>) {
    let owned = w.restaurants_owned();
    if owned.is_empty() {
        return;
    }
    let skew = if w.cfg.scenario == Scenario::Mixed {
        w.cfg.skew
    } else {
        0.0
    };
    // Popularity by global restaurant index, so the skew is the same whatever the worker split.
    let weights: Vec<f64> = owned
        .iter()
        .map(|r| 1.0 / (f64::from(*r) + 1.0).powf(skew))
        .collect();
    let total_w: f64 = weights.iter().sum();
    let (bot_tx, bot_rx) = mpsc::unbounded_channel::<(Uuid, u32, u32)>();
    let bot = tokio::spawn(kitchen_bot(w.clone(), bot_rx));
    let toggler = if w.cfg.scenario == Scenario::Mixed && w.cfg.toggles_per_s > 0.0 {
        Some(tokio::spawn(toggler(w.clone(), owned.clone())))
    } else {
        None
    };
    let rate = w.cfg.rate / f64::from(w.cfg.processes.max(1));
    let mut placed = Vec::new();
    if rate > 0.0 && !w.plan.customer_tokens.is_empty() {
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        let end = start + Duration::from_secs_f64(w.cfg.duration_s);
        let mut k: u32 = 0;
        loop {
            let at = start + period * k;
            if at >= end || w.stopped() {
                break;
            }
            tokio::time::sleep_until(at).await;
            k = k.saturating_add(1);
            if w.inflight.load(Ordering::Relaxed) >= w.cfg.max_inflight {
                w.stats.incr(c::ORDERS_SKIPPED);
                continue;
            }
            let r = owned[pick_weighted(&weights, total_w)];
            let (w2, tx) = (w.clone(), bot_tx.clone());
            w.inflight.fetch_add(1, Ordering::Relaxed);
            placed.push(tokio::spawn(async move {
                place_order(&w2, r, &tx).await;
                w2.inflight.fetch_sub(1, Ordering::Relaxed);
            }));
        }
    } else if rate > 0.0 {
        w.stats
            .error("no_customer_tokens: pass --tokens (scan2order-load mint-tokens output)");
    }
    if let Some(t) = toggler {
        t.abort();
        let _ = t.await;
    }
    let settle = Duration::from_millis(w.cfg.settle_ms);
    let _ = tokio::time::timeout(settle * 4, futures_util::future::join_all(placed)).await;
    drop(bot_tx);
    let mut bot = bot;
    if tokio::time::timeout(settle * 4 + statuses_time(&w.cfg), &mut bot)
        .await
        .is_err()
    {
        // The server is behind: start no new status step, but let the ones in flight finish, so
        // nothing the tool was told is committed is still on its way when the sockets close.
        w.draining.store(true, Ordering::Release);
        w.stats.error("kitchen_bot_drained_before_finishing");
        let _ = tokio::time::timeout(Duration::from_secs(35), &mut bot).await;
    }
    // Let the last events reach their sockets.
    tokio::time::sleep(settle).await;
}

fn statuses_time(cfg: &RunCfg) -> Duration {
    Duration::from_millis(cfg.status_delay_ms * cfg.statuses.len() as u64 + 1000)
}

async fn place_order(w: &Arc<Worker>, r: u32, bot: &mpsc::UnboundedSender<(Uuid, u32, u32)>) {
    let rp = &w.plan.restaurants[r as usize];
    let tables = w.tables_used(r as usize);
    let (t, items) = {
        let mut rng = rand::rng();
        let t = rng.random_range(0..tables) as u32;
        let avail: Vec<Uuid> = rp
            .items
            .iter()
            .zip(&w.availability[r as usize])
            .filter(|(_, a)| a.load(Ordering::Relaxed))
            .map(|((id, _), _)| *id)
            .collect();
        if avail.is_empty() {
            drop(rng);
            w.stats.error("no_available_items");
            return;
        }
        let n = rng.random_range(1..=3usize.min(avail.len()));
        let start = rng.random_range(0..avail.len());
        let items: Vec<PlaceOrderLine> = (0..n)
            .map(|i| {
                let item = avail[(start + i) % avail.len()];
                PlaceOrderLine {
                    menu_item_id: MenuItemId::from(item),
                    quantity: rng.random_range(1..=3),
                    note: None,
                    options: rp.options_for(item),
                }
            })
            .collect();
        (t, items)
    };
    let chosen: Vec<Uuid> = items.iter().map(|l| l.menu_item_id.get()).collect();
    let table = &rp.tables[t as usize];
    if w.cfg.scenario == Scenario::Mixed {
        for _ in 0..w.cfg.menu_reads_per_order {
            read_menu(w, &table.token).await;
        }
    }
    let tokens = &w.plan.customer_tokens;
    let p = w.cfg.processes.max(1) as usize;
    // Worker i uses tokens i, i+P, i+2P, … so processes never share a guest.
    let mine = tokens.len().div_ceil(p).max(1);
    let n = w.next_token.fetch_add(1, Ordering::Relaxed) % mine;
    let token = &tokens[(n * p + w.idx as usize) % tokens.len()];
    let tag = w.next_tag.fetch_add(1, Ordering::Relaxed);
    let body = match serde_json::to_vec(&PlaceOrderRequest {
        table_token: table.token.clone(),
        items,
        note: Some(order_note(tag)),
        allergies: None,
    }) {
        Ok(b) => b,
        Err(_) => return,
    };
    w.ledger.order_sending(tag, r, t);
    let auth = format!("Bearer {token}");
    let key = format!("lt-{}-{tag}", w.cfg.run_id);
    let mut sent = 0u64;
    let resp = w
        .http
        .request(
            "POST",
            "/api/v1/orders",
            &[("Authorization", &auth), ("Idempotency-Key", &key)],
            Some(&body),
            &mut || {
                sent = now_ns();
                w.ledger.order_sent_at(tag, sent);
            },
        )
        .await;
    let done = now_ns();
    match resp {
        Ok(resp) if resp.status == 201 || resp.status == 200 => {
            w.stats
                .record_ns(h::HTTP_PLACE_ORDER, done.saturating_sub(sent));
            match resp.json::<Order>() {
                Ok(order) => {
                    w.ledger.order_committed(tag, order.id.get());
                    w.stats.incr(c::ORDERS_OK);
                    let _ = bot.send((order.id.get(), r, t));
                }
                Err(_) => {
                    w.stats.error("place_order_unparsable_answer");
                    w.ledger.order_failed(tag);
                }
            }
        }
        Ok(resp)
            if resp.status == 409
                && resp.error_code().as_deref() == Some("item_unavailable")
                && (w.cfg.scenario == Scenario::Mixed || !w.all_available(r, &chosen)) =>
        {
            // A guest raced a sold-out toggle (this run's, or one whose event has reached this
            // worker since): counted, not an error.
            w.stats.incr(c::ORDERS_SOLD_OUT);
            w.ledger.order_failed(tag);
        }
        Ok(resp) => {
            w.stats
                .record_ns(h::HTTP_PLACE_ORDER, done.saturating_sub(sent));
            w.stats.incr(c::ORDERS_FAIL);
            w.stats.error(format!(
                "place_order_http_{}_{}",
                resp.status,
                resp.error_code().unwrap_or_default()
            ));
            w.ledger.order_failed(tag);
        }
        Err(e) => {
            w.stats.incr(c::ORDERS_FAIL);
            w.stats.error(format!("place_order_{}", e.kind()));
            w.ledger.order_failed(tag);
        }
    }
}

async fn read_menu(w: &Arc<Worker>, token: &str) {
    let mut sent = 0u64;
    let r = w
        .http
        .request(
            "GET",
            &format!("/api/v1/tables/{token}"),
            &[],
            None,
            &mut || sent = now_ns(),
        )
        .await;
    match r {
        Ok(resp) if resp.status == 200 => {
            w.stats
                .record_ns(h::HTTP_MENU, now_ns().saturating_sub(sent));
            w.stats.incr(c::MENU_OK);
        }
        Ok(resp) => {
            w.stats.incr(c::MENU_FAIL);
            w.stats.error(format!("menu_http_{}", resp.status));
        }
        Err(e) => {
            w.stats.incr(c::MENU_FAIL);
            w.stats.error(format!("menu_{}", e.kind()));
        }
    }
}

/// Walks every placed order through the configured statuses.
async fn kitchen_bot(w: Arc<Worker>, mut rx: mpsc::UnboundedReceiver<(Uuid, u32, u32)>) {
    let mut walks = Vec::new();
    while let Some((id, r, t)) = rx.recv().await {
        if w.cfg.statuses.is_empty() {
            continue;
        }
        let w2 = w.clone();
        walks.push(tokio::spawn(async move {
            for status in w2.cfg.statuses.clone() {
                if w2.draining.load(Ordering::Acquire) {
                    break;
                }
                if w2.cfg.status_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(w2.cfg.status_delay_ms)).await;
                }
                if !change_status(&w2, id, status, r, t).await {
                    break;
                }
            }
        }));
        walks.retain(|j: &tokio::task::JoinHandle<()>| !j.is_finished());
    }
    let _ = futures_util::future::join_all(walks).await;
}

async fn change_status(w: &Arc<Worker>, id: Uuid, status: OrderStatus, r: u32, t: u32) -> bool {
    w.ledger.status_sending(id, status, r, t);
    match w.cfg.status_via {
        StatusVia::Rest => {
            let rp = &w.plan.restaurants[r as usize];
            let Ok(body) = serde_json::to_vec(&SetStatusRequest {
                status,
                allergy_ack: false,
            }) else {
                return false;
            };
            let auth = format!("Bearer {}", rp.staff_token);
            let path = format!("/api/v1/kitchen/orders/{id}/status{}", rp.kitchen_query());
            let mut sent = 0u64;
            let resp = w
                .http
                .request(
                    "POST",
                    &path,
                    &[("Authorization", &auth)],
                    Some(&body),
                    &mut || {
                        sent = now_ns();
                        w.ledger.status_sent_at(id, status, sent);
                    },
                )
                .await;
            let done = now_ns();
            match resp {
                Ok(resp) if resp.status == 200 => {
                    w.stats
                        .record_ns(h::HTTP_SET_STATUS, done.saturating_sub(sent));
                    w.stats.incr(c::STATUS_OK);
                    w.ledger.status_done(id, status, true);
                    true
                }
                Ok(resp) => {
                    w.stats.incr(c::STATUS_FAIL);
                    w.stats.error(format!(
                        "set_status_http_{}_{}",
                        resp.status,
                        resp.error_code().unwrap_or_default()
                    ));
                    w.ledger.status_done(id, status, false);
                    false
                }
                Err(e) => {
                    w.stats.incr(c::STATUS_FAIL);
                    w.stats.error(format!("set_status_{}", e.kind()));
                    w.ledger.status_done(id, status, false);
                    false
                }
            }
        }
        StatusVia::Socket => {
            let Some(tx) = lock(&w.bots).get(&r).cloned() else {
                w.stats.error("set_status_no_bot_socket");
                w.ledger.status_done(id, status, false);
                return false;
            };
            let request_id = format!("{}-{}", id.simple(), status.as_str());
            let (done_tx, done_rx) = oneshot::channel();
            lock(&w.pending).insert(request_id.clone(), (id, status, now_ns(), done_tx));
            if tx
                .send(BotCmd {
                    request_id: request_id.clone(),
                    order_id: id,
                    status,
                })
                .is_err()
            {
                lock(&w.pending).remove(&request_id);
                w.ledger.status_done(id, status, false);
                return false;
            }
            match tokio::time::timeout(Duration::from_secs(30), done_rx).await {
                Ok(Ok(true)) => {
                    w.stats.incr(c::STATUS_OK);
                    true
                }
                Ok(_) => {
                    w.stats.incr(c::STATUS_FAIL);
                    false
                }
                Err(_) => {
                    lock(&w.pending).remove(&request_id);
                    w.stats.incr(c::STATUS_FAIL);
                    w.stats.error("set_status_ws_timeout");
                    w.ledger.status_done(id, status, false);
                    false
                }
            }
        }
    }
}

/// `mixed`: sold-out toggles at a steady rate, one in flight per restaurant, each item flipped back
/// later so the menu ends as it started.
async fn toggler(w: Arc<Worker>, owned: Vec<u32>) {
    let rate = w.cfg.toggles_per_s / f64::from(w.cfg.processes.max(1));
    if rate <= 0.0 {
        return;
    }
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let next_id = AtomicU64::new(u64::from(w.idx) << 40);
    let mut flips = Vec::new();
    loop {
        tick.tick().await;
        if w.stopped() {
            break;
        }
        let r = owned[rand::rng().random_range(0..owned.len())];
        if w.toggling[r as usize].swap(true, Ordering::AcqRel) {
            continue;
        }
        let items = &w.plan.restaurants[r as usize].items;
        if items.is_empty() {
            w.toggling[r as usize].store(false, Ordering::Release);
            continue;
        }
        let i = rand::rng().random_range(0..items.len());
        let id = next_id.fetch_add(2, Ordering::Relaxed);
        let w2 = w.clone();
        flips.push(tokio::spawn(async move {
            let item = w2.plan.restaurants[r as usize].items[i].0;
            let was = w2.availability[r as usize][i].load(Ordering::Relaxed);
            if toggle(&w2, id, r, item, !was).await {
                w2.availability[r as usize][i].store(!was, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
                if toggle(&w2, id + 1, r, item, was).await {
                    w2.availability[r as usize][i].store(was, Ordering::Relaxed);
                }
            }
            w2.toggling[r as usize].store(false, Ordering::Release);
        }));
    }
    // Aborted at the end of generation: finish the flips in flight so items come back.
    let _ = futures_util::future::join_all(flips).await;
}

/// Sends one menu toggle for a restaurant this worker owns.
async fn toggle(w: &Arc<Worker>, id: u64, r: u32, item: Uuid, available: bool) -> bool {
    w.ledger.toggle_armed(id, r, item, available);
    let (sent, ok) = send_toggle(w, r, item, available).await;
    if sent > 0 {
        for lat in w.ledger.toggle_fired(id, sent) {
            w.stats.record_ns(h::TOGGLE_TO_SOCKET, lat);
        }
    }
    w.ledger.toggle_done(id, ok);
    ok
}

/// `PATCH /api/v1/kitchen/menu-items/{item}` for restaurant `r`, counted; returns when its request
/// was written (0: never) and whether it was answered 200.
async fn send_toggle(w: &Arc<Worker>, r: u32, item: Uuid, available: bool) -> (u64, bool) {
    let rp = &w.plan.restaurants[r as usize];
    let Ok(body) = serde_json::to_vec(&SetAvailableRequest { available }) else {
        return (0, false);
    };
    let auth = format!("Bearer {}", rp.staff_token);
    let path = format!("/api/v1/kitchen/menu-items/{item}{}", rp.kitchen_query());
    let mut sent = 0u64;
    let resp = w
        .http
        .request(
            "PATCH",
            &path,
            &[("Authorization", &auth)],
            Some(&body),
            &mut || sent = now_ns(),
        )
        .await;
    let ok = match resp {
        Ok(resp) if resp.status == 200 => {
            w.stats
                .record_ns(h::HTTP_TOGGLE, now_ns().saturating_sub(sent));
            w.stats.incr(c::TOGGLES_OK);
            true
        }
        Ok(resp) => {
            w.stats.incr(c::TOGGLES_FAIL);
            w.stats.error(format!("toggle_http_{}", resp.status));
            false
        }
        Err(e) => {
            w.stats.incr(c::TOGGLES_FAIL);
            w.stats.error(format!("toggle_{}", e.kind()));
            false
        }
    };
    (sent, ok)
}
