//! Real traffic for the fault suite, and the record of what clients were told.
//!
//! - Guests place orders at a target rate, each with its own `Idempotency-Key`; a transport error or a
//!   503 is retried with the same key (as the guest app does) until a definitive answer or the run's
//!   retry deadline. Every 2xx is recorded with the order id and ticket.
//! - A kitchen bot walks each acknowledged order through statuses (some stay live, some finish, some
//!   are cancelled); every 200 is recorded.
//! - Kitchen and table sockets are logical subscribers: they reconnect after any loss and resume from
//!   their last `(epoch, seq)`, keep a model of the live orders they were shown, and count duplicates,
//!   reorderings and (kitchen) holes in `seq`.
//!
//! Nothing here waits on time for a signal: deadlines bound waits for conditions, and the only sleeps
//! are the traffic's own pacing and the clients' retry back-off.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::seq::IndexedRandom;
use rand::Rng;
use scan2order_schema::domain::OrderStatus;
use scan2order_schema::wire::{Order, ServerMsg};
use serde::Serialize;
use tokio::net::TcpSocket;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::accounting::{order_note, tag_of_note};
use crate::http::{HttpError, HttpPool};
use crate::setup::Plan;

/// Counts tasks in flight; [`Tracker::idle`] waits until none is left.
#[derive(Default)]
pub struct Tracker {
    n: AtomicU64,
    zero: Notify,
}

impl Tracker {
    fn enter(self: &Arc<Self>) -> TrackerGuard {
        self.n.fetch_add(1, Ordering::SeqCst);
        TrackerGuard(self.clone())
    }

    pub fn count(&self) -> u64 {
        self.n.load(Ordering::SeqCst)
    }

    pub async fn idle(&self) {
        loop {
            let notified = self.zero.notified();
            if self.n.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct TrackerGuard(Arc<Tracker>);

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

/// One order a guest tried to place.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub restaurant: usize,
    pub table: usize,
    pub lines: usize,
    pub tries: u32,
    /// The order id and ticket a 2xx gave.
    pub acked: Option<(Uuid, i32)>,
    /// A definitive refusal (4xx).
    pub rejected: Option<String>,
    /// No definitive answer by the retry deadline.
    pub unresolved: bool,
}

/// What clients were told.
#[derive(Default)]
pub struct Record {
    pub orders: HashMap<String, Attempt>,
    /// Status changes answered 200, in the order they were answered.
    pub status_acks: Vec<(Uuid, OrderStatus)>,
    /// Status changes retried after an unknown outcome and then refused with 409 because the first
    /// attempt had in fact been applied.
    pub status_applied_unacked: u64,
    /// Status walks abandoned at the retry deadline.
    pub walks_unresolved: u64,
    /// Answers by kind (`orders 201`, `status 503 unavailable`, `orders transport http_connect_…`).
    pub answers: BTreeMap<String, u64>,
    /// Answers no correct server gives here (a 500, an unexpected 409 …), with the first details.
    pub unexpected: u64,
    pub unexpected_detail: Vec<String>,
    /// Requests the client gave up waiting for (a hang).
    pub client_timeouts: u64,
    /// The longest time from a request written to its answer (any status), ms.
    pub max_answer_ms: u64,
    /// Answer times relative to the run's start: first and last 503, first 2xx after a 503.
    pub first_503_ms: Option<u64>,
    pub last_503_ms: Option<u64>,
    /// Order POST latency of 2xx answers, µs.
    pub order_latency_us: Option<Histogram<u64>>,
    /// When each order was acknowledged, ms since the run's start.
    pub acked_at_ms: Vec<u64>,
}

impl Record {
    fn answer(&mut self, what: &str, kind: &str) {
        *self.answers.entry(format!("{what} {kind}")).or_default() += 1;
    }

    fn unexpected(&mut self, detail: String) {
        self.unexpected += 1;
        if self.unexpected_detail.len() < 20 {
            self.unexpected_detail.push(detail);
        }
    }
}

/// Which socket a subscriber is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    Kitchen { restaurant: usize },
    Table { restaurant: usize, table: usize },
}

impl SubKind {
    pub fn restaurant(self) -> usize {
        match self {
            SubKind::Kitchen { restaurant } | SubKind::Table { restaurant, .. } => restaurant,
        }
    }
}

/// What one logical subscriber saw, across its connections.
#[derive(Default, Debug)]
pub struct SubState {
    pub epoch: Option<String>,
    pub last_seq: u64,
    /// A snapshot or a resume gave this subscriber a position.
    pub synced: bool,
    /// A `hello` of another epoch arrived; the snapshot that must follow has not yet.
    awaiting_snapshot: bool,
    /// Live orders as shown to this socket.
    pub model: HashMap<Uuid, OrderStatus>,
    /// Every order this socket was ever shown (created or in a snapshot).
    pub seen: HashSet<Uuid>,
    pub duplicates: u64,
    pub regressions: u64,
    pub gaps: u64,
    pub unknown_order: u64,
    pub before_snapshot: u64,
    pub connects: u64,
    pub snapshots: u64,
    pub replayed_events: u64,
    pub close_codes: BTreeMap<u16, u64>,
    /// When a close with code 1001 last arrived, relative to the run's start (ms).
    pub last_going_away_ms: Option<u64>,
    pub connected: bool,
    down_since: Option<Instant>,
    /// Longest time from a lost connection to the next `hello`.
    pub max_down: Duration,
    pub cuts: u64,
    pub details: Vec<String>,
}

impl SubState {
    fn violation(&mut self, d: String) {
        if self.details.len() < 10 {
            self.details.push(d);
        }
    }
}

/// One logical subscriber.
pub struct Sub {
    pub kind: SubKind,
    path: String,
    pub state: Mutex<SubState>,
    /// Cut the connection now (client side, no closing handshake).
    pub cut: Notify,
    /// Stop reading (a slow consumer) until released.
    pub slow: AtomicBool,
    pub release: Notify,
    /// A slow consumer (when told): its TCP receive buffer is small.
    pub slow_candidate: bool,
}

/// Settings of the traffic.
#[derive(Clone, Debug)]
pub struct TrafficCfg {
    pub kitchen_per_restaurant: usize,
    pub table_sockets_per_table: usize,
    /// Table sockets that will stop reading when told (slow consumers); they connect with a small
    /// receive buffer.
    pub slow_sockets: usize,
    /// Keep the last menu item of each restaurant out of orders, for menu toggles.
    pub toggles: bool,
    /// Walk acknowledged orders through statuses.
    pub statuses: bool,
    /// Every walk ends served or cancelled (a kitchen that keeps up: live orders stay bounded). Otherwise
    /// some orders stay live, so that sockets' live views are compared on a mix.
    pub finish_all: bool,
    /// Pause between a kitchen's status steps, ms (random up to this).
    pub status_pause_ms: u64,
    /// HTTP connections.
    pub http_conns: usize,
    /// The client's patience for one answer.
    pub http_timeout: Duration,
}

/// Shared state of one run.
pub struct Ctx {
    pub plan: Plan,
    pub addr: SocketAddr,
    pub cfg: TrafficCfg,
    pub pool: Arc<HttpPool>,
    pub rec: Mutex<Record>,
    pub subs: Vec<Arc<Sub>>,
    pub t0: Instant,
    pub tasks: Arc<Tracker>,
    stop: watch::Sender<bool>,
    /// After this instant retries give up (unset: retry on).
    retry_deadline: Mutex<Option<Instant>>,
    next_tag: AtomicU64,
    /// When each order (by note tag) was first sent.
    sent_at: Mutex<HashMap<u64, Instant>>,
    /// Order → kitchen socket and order → its table's socket delivery latency, µs.
    pub kitchen_latency: Mutex<Histogram<u64>>,
    pub table_latency: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Ctx {
    pub fn new(plan: Plan, cfg: TrafficCfg) -> Arc<Ctx> {
        let addr = plan.target.addr;
        let pool = HttpPool::new(
            addr,
            None,
            plan.target.host.clone(),
            cfg.http_conns,
            cfg.http_timeout,
        );
        let mut subs = Vec::new();
        for (ri, r) in plan.restaurants.iter().enumerate() {
            for _ in 0..cfg.kitchen_per_restaurant {
                subs.push(Arc::new(Sub {
                    kind: SubKind::Kitchen { restaurant: ri },
                    path: format!(
                        "/ws/kitchen?token={}{}",
                        r.staff_token,
                        r.kitchen_query().replacen('?', "&", 1)
                    ),
                    state: Mutex::new(SubState::default()),
                    cut: Notify::new(),
                    slow: AtomicBool::new(false),
                    release: Notify::new(),
                    slow_candidate: false,
                }));
            }
            for (ti, t) in r.tables.iter().enumerate() {
                for _ in 0..cfg.table_sockets_per_table {
                    subs.push(Arc::new(Sub {
                        kind: SubKind::Table {
                            restaurant: ri,
                            table: ti,
                        },
                        path: format!("/ws/table/{}", t.token),
                        state: Mutex::new(SubState::default()),
                        cut: Notify::new(),
                        slow: AtomicBool::new(false),
                        release: Notify::new(),
                        slow_candidate: false,
                    }));
                }
            }
        }
        // Slow consumers spread over the table sockets.
        let tables: Vec<usize> = (0..subs.len())
            .filter(|i| matches!(subs[*i].kind, SubKind::Table { .. }))
            .collect();
        if cfg.slow_sockets > 0 && !tables.is_empty() {
            let step = (tables.len() / cfg.slow_sockets).max(1);
            for i in tables.iter().step_by(step).take(cfg.slow_sockets) {
                if let Some(sub) = Arc::get_mut(&mut subs[*i]) {
                    sub.slow_candidate = true;
                }
            }
        }
        let rec = Record {
            order_latency_us: Some(histogram()),
            ..Record::default()
        };
        Arc::new(Ctx {
            plan,
            addr,
            cfg,
            pool,
            rec: Mutex::new(rec),
            subs,
            t0: Instant::now(),
            tasks: Arc::new(Tracker::default()),
            stop: watch::channel(false).0,
            retry_deadline: Mutex::new(None),
            next_tag: AtomicU64::new(1),
            sent_at: Mutex::new(HashMap::new()),
            kitchen_latency: Mutex::new(histogram()),
            table_latency: Mutex::new(histogram()),
        })
    }

    pub fn ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// From now on, clients stop retrying at `at`.
    pub fn set_retry_deadline(&self, at: Instant) {
        *lock(&self.retry_deadline) = Some(at);
    }

    fn past_deadline(&self) -> bool {
        lock(&self.retry_deadline).is_some_and(|d| Instant::now() >= d)
    }

    /// Stops the sockets (they close normally).
    pub fn stop_sockets(&self) {
        let _ = self.stop.send(true);
    }

    /// Starts every subscriber.
    pub fn spawn_sockets(self: &Arc<Self>) {
        for sub in &self.subs {
            tokio::spawn(run_sub(self.clone(), sub.clone()));
        }
    }

    /// Waits until every subscriber has a position (snapshot or resume) and is connected.
    pub async fn wait_synced(&self, limit: Duration) -> bool {
        wait_until(limit, || {
            self.subs.iter().all(|s| {
                let st = lock(&s.state);
                st.synced && st.connected && !st.awaiting_snapshot
            })
        })
        .await
    }

    /// Starts `job(ctx, n)` for n = 0, 1, … at `rate` per second for `duration`, each in a task of its
    /// own that the tracker waits for; returns how many were started.
    async fn paced<F, Fut>(self: &Arc<Self>, rate: f64, duration: Duration, job: F) -> u64
    where
        F: Fn(Arc<Self>, u64) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let start = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut next = tokio::time::Instant::now();
        let mut n = 0u64;
        while start.elapsed() < duration {
            next += interval;
            tokio::time::sleep_until(next).await;
            let guard = self.tasks.enter();
            let work = job(self.clone(), n);
            tokio::spawn(async move {
                work.await;
                drop(guard);
            });
            n += 1;
        }
        n
    }

    /// Places orders at `rate` per second for `duration` (each retried until definitive).
    pub async fn generate_orders(self: &Arc<Self>, rate: f64, duration: Duration) -> u64 {
        self.paced(
            rate,
            duration,
            |ctx, _| async move { ctx.place_order().await },
        )
        .await
    }

    async fn place_order(self: &Arc<Self>) {
        let (ri, ti, token, body, lines) = {
            let mut rng = rand::rng();
            let ri = rng.random_range(0..self.plan.restaurants.len());
            let r = &self.plan.restaurants[ri];
            let ti = rng.random_range(0..r.tables.len());
            let usable = if self.cfg.toggles {
                r.items.len().saturating_sub(1)
            } else {
                r.items.len()
            };
            let items: Vec<_> = r.items[..usable]
                .iter()
                .filter(|(_, a)| *a)
                .map(|(i, _)| *i)
                .collect();
            let lines = rng.random_range(1..=3usize).min(items.len());
            let chosen: Vec<Uuid> = items.choose_multiple(&mut rng, lines).copied().collect();
            let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
            let body = serde_json::json!({
                "table_token": r.tables[ti].token,
                "items": chosen.iter().map(|i| serde_json::json!({
                    "menu_item_id": i.to_string(), "quantity": rng.random_range(1..=3),
                    "options": r.options_for(*i).unwrap_or_default(),
                })).collect::<Vec<_>>(),
                "note": order_note(tag),
            });
            let token = self
                .plan
                .customer_tokens
                .choose(&mut rng)
                .cloned()
                .unwrap_or_default();
            lock(&self.sent_at).insert(tag, Instant::now());
            (ri, ti, token, body.to_string(), chosen.len())
        };
        let key = Uuid::new_v4().to_string();
        lock(&self.rec).orders.insert(
            key.clone(),
            Attempt {
                restaurant: ri,
                table: ti,
                lines,
                tries: 0,
                acked: None,
                rejected: None,
                unresolved: false,
            },
        );
        let auth = format!("Bearer {token}");
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            let mut sent = Instant::now();
            let resp = self
                .pool
                .request(
                    "POST",
                    "/api/v1/orders",
                    &[("Authorization", &auth), ("Idempotency-Key", &key)],
                    Some(body.as_bytes()),
                    &mut || sent = Instant::now(),
                )
                .await;
            let took = sent.elapsed();
            let next = {
                let mut rec = lock(&self.rec);
                if let Some(a) = rec.orders.get_mut(&key) {
                    a.tries += 1;
                }
                match self.classify(&mut rec, "orders", &resp, took) {
                    Class::Ok => match resp.as_ref().map(|r| r.json::<Order>()) {
                        Ok(Ok(order)) => {
                            if let Some(h) = rec.order_latency_us.as_mut() {
                                let _ = h.record(micros(started.elapsed()));
                            }
                            if let Some(a) = rec.orders.get_mut(&key) {
                                a.acked = Some((order.id.get(), order.ticket_no));
                            }
                            rec.acked_at_ms.push(self.ms());
                            Some(Some(order.id.get()))
                        }
                        _ => {
                            rec.unexpected(format!("orders: 2xx without an order for {key}"));
                            Some(None)
                        }
                    },
                    Class::Refused(code) => {
                        if let Some(a) = rec.orders.get_mut(&key) {
                            a.rejected = Some(code.clone());
                        }
                        rec.unexpected(format!("orders: refused with {code}"));
                        Some(None)
                    }
                    Class::Retry if self.past_deadline() => {
                        if let Some(a) = rec.orders.get_mut(&key) {
                            a.unresolved = true;
                        }
                        Some(None)
                    }
                    Class::Retry => None,
                }
            };
            match next {
                Some(Some(id)) => {
                    if self.cfg.statuses {
                        let guard = self.tasks.enter();
                        let ctx = self.clone();
                        tokio::spawn(async move {
                            ctx.walk(ri, id).await;
                            drop(guard);
                        });
                    }
                    return;
                }
                Some(None) => return,
                None => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Sorts an answer, recording it.
    fn classify(
        &self,
        rec: &mut Record,
        what: &str,
        resp: &Result<crate::http::Response, HttpError>,
        took: Duration,
    ) -> Class {
        match resp {
            Ok(r) => {
                rec.max_answer_ms = rec.max_answer_ms.max(millis(took));
                let code = r.error_code().unwrap_or_default();
                rec.answer(what, format!("{} {code}", r.status).trim());
                match r.status {
                    200 | 201 => Class::Ok,
                    503 => {
                        let now = self.ms();
                        rec.first_503_ms.get_or_insert(now);
                        rec.last_503_ms = Some(now);
                        if code != "unavailable" {
                            rec.unexpected(format!("{what}: 503 with error {code:?}"));
                        }
                        Class::Retry
                    }
                    s => Class::Refused(format!("{s} {code}")),
                }
            }
            Err(e) => {
                if matches!(e, HttpError::Timeout) {
                    rec.client_timeouts += 1;
                }
                rec.answer(what, &format!("transport {}", e.kind()));
                Class::Retry
            }
        }
    }

    /// The kitchen bot: walks one order through statuses.
    async fn walk(self: &Arc<Self>, ri: usize, id: Uuid) {
        let path = {
            let mut rng = rand::rng();
            let flow = [
                OrderStatus::Accepted,
                OrderStatus::Preparing,
                OrderStatus::Ready,
                OrderStatus::Served,
            ];
            let steps = if self.cfg.finish_all {
                flow.len()
            } else {
                rng.random_range(0..=flow.len())
            };
            let mut p: Vec<OrderStatus> = flow[..steps].to_vec();
            let cancel_at = rng.random_range(0..3);
            if rng.random_bool(0.15) && (steps < 3 || self.cfg.finish_all) {
                p.truncate(cancel_at.min(steps));
                p.push(OrderStatus::Cancelled);
            }
            p
        };
        let r = &self.plan.restaurants[ri];
        let auth = format!("Bearer {}", r.staff_token);
        let url = format!("/api/v1/kitchen/orders/{id}/status{}", r.kitchen_query());
        for status in path {
            let pause = rand::rng().random_range(0..=self.cfg.status_pause_ms);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let body = serde_json::json!({ "status": status }).to_string();
            let mut unknown = false;
            let mut backoff = Duration::from_millis(50);
            loop {
                let mut sent = Instant::now();
                let resp = self
                    .pool
                    .request(
                        "POST",
                        &url,
                        &[("Authorization", &auth)],
                        Some(body.as_bytes()),
                        &mut || sent = Instant::now(),
                    )
                    .await;
                let took = sent.elapsed();
                let next = {
                    let mut rec = lock(&self.rec);
                    match self.classify(&mut rec, "status", &resp, took) {
                        Class::Ok => {
                            rec.status_acks.push((id, status));
                            Step::Done
                        }
                        Class::Refused(code) if unknown && code.starts_with("409") => {
                            // The attempt whose answer was lost had been applied.
                            rec.status_applied_unacked += 1;
                            Step::Done
                        }
                        Class::Refused(code) => {
                            rec.unexpected(format!("status {status} of {id}: {code}"));
                            Step::Abandon
                        }
                        Class::Retry if self.past_deadline() => {
                            rec.walks_unresolved += 1;
                            Step::Abandon
                        }
                        Class::Retry => Step::Again,
                    }
                };
                match next {
                    Step::Done => break,
                    Step::Abandon => return,
                    Step::Again => unknown = true,
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Cuts a random `fraction` of the sockets (client side); returns how many.
    pub fn cut_random(&self, fraction: f64) -> usize {
        let mut rng = rand::rng();
        let mut n = 0;
        for s in &self.subs {
            if rng.random_bool(fraction) && lock(&s.state).connected {
                s.cut.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Slow consumers stop reading; returns how many.
    pub fn start_slow(&self) -> usize {
        let mut n = 0;
        for s in self.subs.iter().filter(|s| s.slow_candidate) {
            s.slow.store(true, Ordering::SeqCst);
            n += 1;
        }
        n
    }

    /// Guests' order latency (request written → 201) so far, resetting it (phases of a run compare).
    pub fn take_order_latency(&self) -> Histogram<u64> {
        let mut rec = lock(&self.rec);
        let h = rec.order_latency_us.get_or_insert_with(histogram);
        let out = h.clone();
        h.reset();
        out
    }

    /// The table sockets' delivery latency so far, resetting it (phases of a run compare).
    pub fn take_table_latency(&self) -> Histogram<u64> {
        let mut h = lock(&self.table_latency);
        let out = h.clone();
        h.reset();
        out
    }

    /// Flips the last menu item of a random restaurant (kept out of orders) `rate` times a second.
    pub async fn generate_toggles(self: &Arc<Self>, rate: f64, duration: Duration) -> u64 {
        // Restaurants in turn, each flip the opposite of the last: every toggle is an event. Toggles
        // run side by side: each is answered when its write commits.
        let count = self.plan.restaurants.len() as u64;
        self.paced(rate, duration, move |ctx, n| async move {
            let ri = (n % count) as usize;
            let available = (n / count) % 2 == 1;
            ctx.toggle(ri, available).await;
        })
        .await
    }

    async fn toggle(&self, ri: usize, available: bool) {
        let r = &self.plan.restaurants[ri];
        let Some((item, _)) = r.items.last() else {
            return;
        };
        let body = serde_json::json!({ "available": available }).to_string();
        let url = format!("/api/v1/kitchen/menu-items/{item}{}", r.kitchen_query());
        let auth = format!("Bearer {}", r.staff_token);
        let resp = self
            .pool
            .call(
                "PATCH",
                &url,
                &[("Authorization", &auth)],
                Some(body.as_bytes()),
            )
            .await;
        let mut rec = lock(&self.rec);
        if let Class::Refused(code) = self.classify(&mut rec, "toggle", &resp, Duration::ZERO) {
            rec.unexpected(format!("toggle: {code}"));
        }
    }

    /// Lets slow consumers read again.
    pub fn release_slow(&self) {
        for s in &self.subs {
            if s.slow.swap(false, Ordering::SeqCst) {
                s.release.notify_one();
            }
        }
    }

    fn latency(&self, kind: SubKind, order: &Order) {
        let Some(tag) = tag_of_note(&order.note) else {
            return;
        };
        let Some(at) = lock(&self.sent_at).get(&tag).copied() else {
            return;
        };
        let us = micros(at.elapsed());
        let h = match kind {
            SubKind::Kitchen { .. } => &self.kitchen_latency,
            SubKind::Table { .. } => &self.table_latency,
        };
        let _ = lock(h).record(us);
    }
}

enum Class {
    Ok,
    Retry,
    Refused(String),
}

enum Step {
    Done,
    Again,
    Abandon,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Connects one socket (optionally with a small receive buffer).
async fn connect(
    ctx: &Ctx,
    sub: &Sub,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    if sub.slow_candidate {
        socket.set_recv_buffer_size(4096)?;
    }
    let stream = socket.connect(ctx.addr).await?;
    let url = format!("ws://{}{}", ctx.plan.target.host, sub.path);
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(ws)
}

/// A subscriber: connect, resume, read; after any loss, again — until the run stops.
async fn run_sub(ctx: Arc<Ctx>, sub: Arc<Sub>) {
    let mut stop = ctx.stop.subscribe();
    let mut backoff = Duration::from_millis(25);
    loop {
        if *stop.borrow() {
            return;
        }
        let ws = tokio::time::timeout(Duration::from_secs(5), connect(&ctx, &sub)).await;
        let Ok(Ok(mut ws)) = ws else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_millis(500));
            continue;
        };
        backoff = Duration::from_millis(25);
        let resume = {
            let mut st = lock(&sub.state);
            st.connects += 1;
            st.epoch.clone().map(|e| {
                serde_json::json!({"type": "resume", "epoch": e, "since": st.last_seq}).to_string()
            })
        };
        if let Some(text) = resume {
            if ws.send(Message::text(text)).await.is_err() {
                continue;
            }
        }
        loop {
            if sub.slow.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = sub.release.notified() => {}
                    _ = stop.changed() => { let _ = ws.close(None).await; return; }
                }
            }
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => on_message(&ctx, &sub, t.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        let mut st = lock(&sub.state);
                        *st.close_codes.entry(code).or_default() += 1;
                        if code == u16::from(CloseCode::Away) {
                            st.last_going_away_ms = Some(ctx.ms());
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                },
                _ = sub.cut.notified() => {
                    lock(&sub.state).cuts += 1;
                    break;
                }
                _ = stop.changed() => {
                    let _ = ws.close(None).await;
                    return;
                }
            }
        }
        drop(ws);
        let mut st = lock(&sub.state);
        st.connected = false;
        st.down_since = Some(Instant::now());
    }
}

fn on_message(ctx: &Ctx, sub: &Sub, text: &str) {
    let msg: ServerMsg = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            lock(&sub.state).violation(format!("unreadable message ({e}): {text:.200}"));
            return;
        }
    };
    let mut st = lock(&sub.state);
    match msg {
        ServerMsg::Hello { epoch, .. } => {
            st.connected = true;
            if let Some(since) = st.down_since.take() {
                st.max_down = st.max_down.max(since.elapsed());
            }
            if st.epoch.as_deref() == Some(epoch.as_str()) {
                // Resumed in the same epoch: the replay follows (or a snapshot, if the buffer passed).
                st.synced = true;
            } else {
                st.awaiting_snapshot = true;
            }
        }
        ServerMsg::Snapshot {
            epoch, seq, orders, ..
        } => {
            st.snapshots += 1;
            st.epoch = Some(epoch);
            st.last_seq = seq;
            st.model.clear();
            for o in &orders {
                if !sub_owns(sub.kind, ctx, o) {
                    st.violation(format!(
                        "snapshot holds another table's order {}",
                        o.id.get()
                    ));
                    st.unknown_order += 1;
                }
                st.seen.insert(o.id.get());
                if !o.status.is_final() {
                    st.model.insert(o.id.get(), o.status);
                }
            }
            st.synced = true;
            st.awaiting_snapshot = false;
        }
        ServerMsg::Ack { .. } | ServerMsg::Error { .. } => {}
        event => {
            let Some(seq) = event.seq() else { return };
            if st.awaiting_snapshot || !st.synced {
                st.before_snapshot += 1;
                st.violation(format!(
                    "event seq {seq} before the snapshot of a new epoch"
                ));
                return;
            }
            if seq <= st.last_seq {
                st.duplicates += 1;
                let last = st.last_seq;
                st.violation(format!("seq {seq} after {last}"));
                return;
            }
            if matches!(sub.kind, SubKind::Kitchen { .. }) && seq > st.last_seq + 1 {
                st.gaps += seq - st.last_seq - 1;
                let last = st.last_seq;
                st.violation(format!("kitchen seq {seq} after {last}: a hole"));
            }
            st.last_seq = seq;
            st.replayed_events += 1;
            match event {
                ServerMsg::OrderCreated { order, .. } => {
                    let id = order.id.get();
                    if !sub_owns(sub.kind, ctx, &order) {
                        st.unknown_order += 1;
                        st.violation(format!("another table's order {id}"));
                    }
                    if !st.seen.insert(id) {
                        st.duplicates += 1;
                        st.violation(format!("order {id} created twice"));
                    }
                    if !order.status.is_final() {
                        st.model.insert(id, order.status);
                    }
                    drop(st);
                    if !sub.slow_candidate {
                        ctx.latency(sub.kind, &order);
                    }
                }
                ServerMsg::OrderStatus {
                    order_id, status, ..
                } => {
                    let id = order_id.get();
                    match st.model.get(&id).copied() {
                        Some(prev) if prev.can_become(status) => {
                            if status.is_final() {
                                st.model.remove(&id);
                            } else {
                                st.model.insert(id, status);
                            }
                        }
                        Some(prev) => {
                            st.regressions += 1;
                            st.violation(format!("order {id}: {prev} then {status}"));
                        }
                        None => {
                            st.unknown_order += 1;
                            st.violation(format!("status {status} of an order not shown: {id}"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether an order belongs on this socket.
fn sub_owns(kind: SubKind, ctx: &Ctx, o: &Order) -> bool {
    let r = &ctx.plan.restaurants[kind.restaurant()];
    if o.restaurant_id.get() != r.id {
        return false;
    }
    match kind {
        SubKind::Kitchen { .. } => true,
        SubKind::Table { table, .. } => o.table_label == r.tables[table].label,
    }
}

/// A summary of the subscribers, for the report.
#[derive(Debug, Default, Serialize)]
pub struct SubSummary {
    pub sockets: usize,
    pub connects: u64,
    pub snapshots: u64,
    pub events: u64,
    pub cuts: u64,
    pub duplicates: u64,
    pub regressions: u64,
    pub gaps: u64,
    pub foreign_or_unknown: u64,
    pub before_snapshot: u64,
    pub close_codes: BTreeMap<u16, u64>,
    pub max_reconnect_ms: u64,
    pub details: Vec<String>,
}

impl Ctx {
    pub fn summary(&self, pick: impl Fn(SubKind) -> bool) -> SubSummary {
        let mut s = SubSummary::default();
        for sub in self.subs.iter().filter(|s| pick(s.kind)) {
            let st = lock(&sub.state);
            s.sockets += 1;
            s.connects += st.connects;
            s.snapshots += st.snapshots;
            s.events += st.replayed_events;
            s.cuts += st.cuts;
            s.duplicates += st.duplicates;
            s.regressions += st.regressions;
            s.gaps += st.gaps;
            s.foreign_or_unknown += st.unknown_order;
            s.before_snapshot += st.before_snapshot;
            for (c, n) in &st.close_codes {
                *s.close_codes.entry(*c).or_default() += n;
            }
            s.max_reconnect_ms = s.max_reconnect_ms.max(millis(st.max_down));
            for d in &st.details {
                if s.details.len() < 10 {
                    s.details.push(d.clone());
                }
            }
        }
        s
    }

    /// A fresh kitchen socket's `hello` per restaurant: the epoch and `seq` every subscriber must reach.
    pub async fn current_positions(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for r in &self.plan.restaurants {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            let url = format!(
                "ws://{}/ws/kitchen?token={}{}",
                self.plan.target.host,
                r.staff_token,
                r.kitchen_query().replacen('?', "&", 1)
            );
            let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
            let hello = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .map_err(|_| anyhow::anyhow!("no hello within 5 s"))?;
            match hello {
                Some(Ok(Message::Text(t))) => {
                    match serde_json::from_str::<ServerMsg>(t.as_str())? {
                        ServerMsg::Hello { epoch, seq } => out.push((epoch, seq)),
                        other => anyhow::bail!("expected hello, got {other:?}"),
                    }
                }
                other => anyhow::bail!("expected hello, got {other:?}"),
            }
            let _ = ws.close(None).await;
        }
        Ok(out)
    }

    /// Waits until every subscriber of restaurant r is at `positions[r]` (kitchen) or has its epoch
    /// (table) and its model equals `want` (table sockets see a subsequence, so their model is the test).
    pub async fn wait_caught_up(
        &self,
        positions: &[(String, u64)],
        want: &dyn Fn(SubKind, &HashMap<Uuid, OrderStatus>) -> bool,
        limit: Duration,
    ) -> bool {
        wait_until(limit, || {
            self.subs.iter().all(|s| {
                let st = lock(&s.state);
                let (epoch, seq) = &positions[s.kind.restaurant()];
                st.epoch.as_deref() == Some(epoch.as_str())
                    && match s.kind {
                        SubKind::Kitchen { .. } => st.last_seq >= *seq,
                        SubKind::Table { .. } => want(s.kind, &st.model),
                    }
            })
        })
        .await
    }
}

/// Waits for a condition the tool can only observe by looking (the server's state, sockets' models),
/// checking every 20 ms, at most `limit`.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A run of one restaurant with one table (T1), one dish and one guest, for the checks' unit tests.
#[cfg(test)]
pub fn test_ctx() -> Arc<Ctx> {
    use crate::setup::{RestaurantPlan, TablePlan, Target};
    let plan = Plan {
        target: Target::parse("http://127.0.0.1:9").expect("target"),
        restaurants: vec![RestaurantPlan {
            id: Uuid::from_u128(1),
            slug: "r".into(),
            staff_token: "t".into(),
            via_admin: false,
            items: vec![(Uuid::from_u128(9), true)],
            choices: Default::default(),
            tables: vec![TablePlan {
                label: "T1".into(),
                token: "tok".into(),
            }],
        }],
        customer_tokens: vec!["c".into()],
    };
    Ctx::new(
        plan,
        TrafficCfg {
            kitchen_per_restaurant: 1,
            table_sockets_per_table: 1,
            slow_sockets: 0,
            toggles: false,
            statuses: false,
            finish_all: false,
            status_pause_ms: 0,
            http_conns: 1,
            http_timeout: Duration::from_secs(1),
        },
    )
}

#[cfg(test)]
mod tests {
    //! A subscriber's stream checks: duplicates, holes, reorderings, foreign orders.

    use super::*;

    fn ctx() -> Arc<Ctx> {
        test_ctx()
    }

    fn order(id: u128, table: &str) -> serde_json::Value {
        serde_json::json!({
            "id": Uuid::from_u128(id), "restaurant_id": Uuid::from_u128(1),
            "table_id": Uuid::from_u128(7), "table_label": table, "ticket_no": 1,
            "status": "placed", "items": [], "note": "", "total_cents": 0, "currency": "EUR",
            "phone": "+44•••••••123", "created_at": "2026-11-26T10:00:00Z",
            "updated_at": "2026-11-26T10:00:00Z",
        })
    }

    fn feed(ctx: &Ctx, sub: &Sub, msgs: &[serde_json::Value]) {
        for m in msgs {
            on_message(ctx, sub, &m.to_string());
        }
    }

    fn start() -> Vec<serde_json::Value> {
        vec![
            serde_json::json!({"type": "hello", "epoch": "e1", "seq": 0}),
            serde_json::json!({"type": "snapshot", "epoch": "e1", "seq": 0, "orders": []}),
        ]
    }

    fn created(seq: u64, id: u128, table: &str) -> serde_json::Value {
        serde_json::json!({"type": "order_created", "seq": seq, "order": order(id, table)})
    }

    fn status(seq: u64, id: u128, s: &str) -> serde_json::Value {
        serde_json::json!({"type": "order_status", "seq": seq, "order_id": Uuid::from_u128(id),
            "ticket_no": 1, "status": s, "updated_at": "2026-11-26T10:00:00Z"})
    }

    #[test]
    fn a_clean_stream_builds_the_live_model() {
        let ctx = ctx();
        let kitchen = &ctx.subs[0];
        let mut m = start();
        m.extend([
            created(1, 5, "T1"),
            status(2, 5, "ready"),
            created(3, 6, "T1"),
        ]);
        m.push(status(4, 6, "served"));
        feed(&ctx, kitchen, &m);
        let st = lock(&kitchen.state);
        assert_eq!(
            st.duplicates + st.gaps + st.regressions + st.unknown_order,
            0
        );
        assert_eq!(st.model.len(), 1);
        assert_eq!(st.model[&Uuid::from_u128(5)], OrderStatus::Ready);
    }

    #[test]
    fn a_replayed_event_a_hole_and_a_reordering_are_counted() {
        let ctx = ctx();
        let kitchen = &ctx.subs[0];
        let mut m = start();
        m.extend([created(1, 5, "T1"), created(1, 5, "T1")]);
        m.push(created(4, 6, "T1"));
        m.extend([status(5, 5, "ready"), status(6, 5, "accepted")]);
        feed(&ctx, kitchen, &m);
        let st = lock(&kitchen.state);
        assert_eq!(st.duplicates, 1, "seq 1 twice");
        assert_eq!(st.gaps, 2, "seq 2 and 3 never came");
        assert_eq!(st.regressions, 1, "ready then accepted");
    }

    #[test]
    fn another_tables_order_on_a_table_socket_is_counted() {
        let ctx = ctx();
        let table = &ctx.subs[1];
        assert!(matches!(table.kind, SubKind::Table { .. }));
        let mut m = start();
        m.push(created(1, 5, "T9"));
        feed(&ctx, table, &m);
        assert_eq!(lock(&table.state).unknown_order, 1);
    }

    #[test]
    fn an_event_before_the_new_epochs_snapshot_is_counted() {
        let ctx = ctx();
        let kitchen = &ctx.subs[0];
        let mut m = start();
        m.push(serde_json::json!({"type": "hello", "epoch": "e2", "seq": 0}));
        m.push(created(1, 5, "T1"));
        feed(&ctx, kitchen, &m);
        assert_eq!(lock(&kitchen.state).before_snapshot, 1);
    }
}
