//! # ShardSupervisor
//!
//! Owns the K shard arbiters (threads), one [`PersistenceWriter`] per shard, the registry of active
//! restaurants and the directory of table tokens. A restaurant lives on shard `hash(id) % K`. Any thread
//! finds an active restaurant with a lock-free lookup; a miss activates it exactly once, however many
//! requests race for it (they all wait for the one activation and get the same address).
//!
//! Handlers reach restaurants only through [`ShardSupervisor::restaurant`] and
//! [`ShardSupervisor::resolve_table`], the seam where a remote (cluster) address can slot in later.
//!
//! A restaurant is activated only under its lease ([`crate::ownership`]): the lease is taken before the
//! restaurant is read, so the actor starts from everything the previous owner committed, and its
//! writes carry the lease's fence.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use scan2order_schema::domain::{RestaurantId, TableId};
use scan2order_schema::leases::{self, Fence, Lease, NodeRow};
use scan2order_schema::models::RestaurantTable;
use scan2order_schema::{DbConn, DbPool};
use tokio::sync::{Notify, OnceCell};

use crate::ownership::{NodeConfig, Started};
use crate::restaurant::{
    CloseAll, EngineError, GetStats, LeaseLost, LoadedRestaurant, Missing, PassivateHook,
    PassivateReason, RestaurantActor, RestaurantConfig, RestaurantStats,
};
use crate::sink::close_code;
use crate::writer::{Drain, PersistenceWriter, WriterStats};

/// Decrements a shard's in-flight count however the request ends.
struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Longest accepted table token; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 64;

/// What the engine is started with, built from the `[engine]` and `[database]` settings (the
/// server's `config::EngineSettings`): like [`RestaurantConfig`], a `…Config` is what an actor runs
/// with, a `…Settings` what the settings file says.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Number of shard arbiters (threads).
    pub shards: usize,
    /// How long a write transaction may take before callers are told the database is unavailable.
    pub write_timeout: Duration,
    pub restaurant: RestaurantConfig,
    /// This node's id and leases.
    pub node: NodeConfig,
}

struct Shard {
    arbiter: Arbiter,
    writer: Addr<PersistenceWriter>,
    writer_stats: Arc<WriterStats>,
    /// Requests sent to this shard's restaurants and not answered yet (its mailbox depth).
    in_flight: AtomicI64,
    /// Requests answered by this shard's restaurants.
    handled: AtomicU64,
    /// How long requests took, in power-of-two microsecond buckets.
    latency: LatencyBuckets,
}

/// Bucket `i` counts durations below 2^i microseconds (the last one: everything longer).
const LATENCY_BUCKETS: usize = 28;

#[derive(Default)]
struct LatencyBuckets([AtomicU64; LATENCY_BUCKETS]);

impl LatencyBuckets {
    fn record(&self, elapsed: std::time::Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = ((u64::BITS - us.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The 99th percentile of the requests counted between two snapshots, in milliseconds (upper bound of
/// its bucket).
fn p99_ms(before: &[u64; LATENCY_BUCKETS], now: &[u64; LATENCY_BUCKETS]) -> f64 {
    let delta: Vec<u64> = now
        .iter()
        .zip(before)
        .map(|(n, b)| n.saturating_sub(*b))
        .collect();
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let target = (total as f64 * 0.99).ceil() as u64;
    let mut seen = 0;
    for (i, n) in delta.iter().enumerate() {
        seen += n;
        if seen >= target {
            return (1u64 << i) as f64 / 1000.0;
        }
    }
    (1u64 << (LATENCY_BUCKETS - 1)) as f64 / 1000.0
}

/// What the previous stats read saw, so rates and percentiles cover the interval since.
struct StatsMark {
    at: std::time::Instant,
    handled: Vec<u64>,
    latency: Vec<[u64; LATENCY_BUCKETS]>,
}

/// Where a table token leads.
#[derive(Clone, Copy, Debug)]
pub struct TableRef {
    pub restaurant_id: RestaurantId,
    pub table_id: TableId,
}

struct Inner {
    shards: Vec<Shard>,
    registry: DashMap<RestaurantId, Arc<OnceCell<Addr<RestaurantActor>>>>,
    tables: DashMap<String, TableRef>,
    pool: DbPool,
    config: EngineConfig,
    /// The lease fence of each restaurant this node runs, and when it was taken (the keeper judges
    /// only leases taken before its renewal).
    fences: DashMap<RestaurantId, (Fence, Instant)>,
    started: Started,
    activations: AtomicU64,
    restarts: AtomicU64,
    passivations: AtomicU64,
    /// Restaurants stopped because another node took their lease.
    leases_lost: AtomicU64,
    /// Activations that took a lease another node had held (a takeover after expiry, or at once on a
    /// single node).
    takeovers: AtomicU64,
    /// The node's leases were released at shutdown: the keeper renews and reports no more.
    released: AtomicBool,
    /// Shutdown has begun: no new writes are taken (see [`ShardSupervisor::begin_drain`]).
    draining: AtomicBool,
    mark: std::sync::Mutex<Option<StatsMark>>,
}

/// Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct ShardSupervisor {
    inner: Arc<Inner>,
}

/// Per-shard figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ShardStats {
    pub shard: usize,
    pub restaurants: usize,
    /// Requests per second since the previous stats read.
    pub messages_per_s: f64,
    /// 99th percentile request handling time since the previous stats read (bucket upper bound).
    pub p99_ms: f64,
    /// Requests waiting for or being handled by this shard's restaurants.
    pub mailbox_depth: i64,
    /// Requests answered by this shard's restaurants since start.
    pub messages_handled: u64,
    /// Writes queued at this shard's writer behind the transaction in flight.
    pub writer_queue: u64,
    pub batches: u64,
    pub writes: u64,
    pub failed_batches: u64,
    pub largest_batch: u64,
}

impl ShardSupervisor {
    /// Starts the shard arbiters and their writers. Must run inside an actix system.
    pub fn start(pool: DbPool, config: EngineConfig, outbox_wake: Arc<Notify>) -> ShardSupervisor {
        let k = config.shards.max(1);
        let shards = (0..k)
            .map(|_| {
                let arbiter = Arbiter::new();
                let writer_stats = Arc::new(WriterStats::default());
                let (p, t, w, s) = (
                    pool.clone(),
                    config.write_timeout,
                    outbox_wake.clone(),
                    writer_stats.clone(),
                );
                let writer = PersistenceWriter::start_in_arbiter(&arbiter.handle(), move |_| {
                    PersistenceWriter::new(p, t, w, s)
                });
                Shard {
                    arbiter,
                    writer,
                    writer_stats,
                    in_flight: AtomicI64::new(0),
                    handled: AtomicU64::new(0),
                    latency: LatencyBuckets::default(),
                }
            })
            .collect();
        let inner = Arc::new(Inner {
            shards,
            registry: DashMap::new(),
            tables: DashMap::new(),
            pool,
            config,
            fences: DashMap::new(),
            started: Started::now(),
            activations: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            leases_lost: AtomicU64::new(0),
            takeovers: AtomicU64::new(0),
            released: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            mark: std::sync::Mutex::new(None),
        });
        actix::spawn(keep_leases(Arc::downgrade(&inner)));
        ShardSupervisor { inner }
    }

    /// This node's id in the fleet.
    pub fn node_id(&self) -> &str {
        &self.inner.config.node.node_id
    }

    /// When this node started.
    pub fn started_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.inner.started.at
    }

    /// Restaurants this node stopped because another node took their lease.
    pub fn leases_lost(&self) -> u64 {
        self.inner.leases_lost.load(Ordering::Relaxed)
    }

    /// Activations that took over a lease another node had held.
    pub fn takeovers(&self) -> u64 {
        self.inner.takeovers.load(Ordering::Relaxed)
    }

    /// A pooled connection, or `Unavailable`.
    async fn conn(
        &self,
    ) -> Result<bb8::PooledConnection<'_, AsyncDieselConnectionManager<DbConn>>, EngineError> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|_| EngineError::Unavailable)
    }

    /// Who owns the restaurant, activating it here first if nobody does.
    pub async fn owner(&self, id: RestaurantId) -> Result<Lease, EngineError> {
        self.restaurant(id).await?;
        let mut conn = self.conn().await?;
        leases::lease_of(&mut conn, id.get())
            .await
            .map_err(|_| EngineError::Unavailable)?
            .ok_or(EngineError::NotFound(Missing::Restaurant))
    }

    /// The fleet's live nodes as Postgres knows them (this one included once it has reported).
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, EngineError> {
        let mut conn = self.conn().await?;
        let within = self.inner.config.node.lease_ttl;
        leases::live_nodes(&mut conn, within)
            .await
            .map_err(|_| EngineError::Unavailable)
    }

    /// The shard a restaurant lives on: stable across restarts for the same K.
    pub fn shard_of(&self, id: RestaurantId) -> usize {
        let (hi, lo) = id.get().as_u64_pair();
        ((hi ^ lo.rotate_left(17)) % self.inner.shards.len() as u64) as usize
    }

    /// How many restaurant activations have happened (each restaurant once while it stays active).
    pub fn activations(&self) -> u64 {
        self.inner.activations.load(Ordering::Relaxed)
    }

    /// Restaurant actors that died (a panic) and were activated again from Postgres.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Restaurant actors stopped for idleness (`engine.passivate_after_s`).
    pub fn passivations(&self) -> u64 {
        self.inner.passivations.load(Ordering::Relaxed)
    }

    /// Sends a message to a restaurant, activating it first if needed, and counts it against the
    /// restaurant's shard. A restaurant that stopped (passivated) just before the message arrived is
    /// activated again and asked once more; retries are safe because orders carry idempotency keys.
    pub async fn ask<M>(&self, id: RestaurantId, msg: M) -> Result<M::Result, EngineError>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        RestaurantActor: Handler<M>,
    {
        let shard = &self.inner.shards[self.shard_of(id)];
        shard.in_flight.fetch_add(1, Ordering::Relaxed);
        let _done = InFlight(&shard.in_flight);
        let started = std::time::Instant::now();
        for _ in 0..2 {
            let addr = self.restaurant(id).await?;
            match addr.send(msg.clone()).await {
                Ok(answer) => {
                    shard.handled.fetch_add(1, Ordering::Relaxed);
                    shard.latency.record(started.elapsed());
                    return Ok(answer);
                }
                Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(EngineError::Unavailable),
            }
        }
        Err(EngineError::Unavailable)
    }

    /// The restaurant's actor, activating it on first use.
    pub async fn restaurant(&self, id: RestaurantId) -> Result<Addr<RestaurantActor>, EngineError> {
        let cell = match self.inner.registry.get(&id) {
            Some(cell) => {
                if let Some(addr) = cell.get().filter(|a| a.connected()) {
                    return Ok(addr.clone());
                }
                cell.clone()
            }
            None => self.inner.registry.entry(id).or_default().clone(),
        };
        if let Some(addr) = cell.get() {
            if !addr.connected() {
                // The actor died (a passivated one removes itself first); forget it so the next call
                // activates a fresh one from Postgres.
                let removed = self
                    .inner
                    .registry
                    .remove_if(&id, |_, c| Arc::ptr_eq(c, &cell));
                if removed.is_some() {
                    self.inner.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(restaurant_id = %id, "restaurant actor died; activating it again");
                }
                return Box::pin(self.restaurant(id)).await;
            }
        }
        let result = cell
            .get_or_try_init(|| self.activate(id, cell.clone()))
            .await
            .cloned();
        if result.is_err() {
            self.inner
                .registry
                .remove_if(&id, |_, c| Arc::ptr_eq(c, &cell) && c.get().is_none());
        }
        result
    }

    /// Takes the restaurant's lease for this node: its fence, or why not.
    async fn take_lease(&self, id: RestaurantId) -> Result<Fence, EngineError> {
        let node = &self.inner.config.node;
        let mut conn = self.conn().await?;
        let db = |_| EngineError::Unavailable;
        match leases::acquire(
            &mut conn,
            id.get(),
            &node.node_id,
            node.lease_ttl,
            node.takeover,
        )
        .await
        .map_err(db)?
        {
            Some(leases::Acquired {
                lease,
                previous_node,
            }) => {
                if previous_node.is_some_and(|p| p != node.node_id) {
                    self.inner.takeovers.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("s2o_lease_takeovers_total").increment(1);
                    tracing::info!(restaurant_id = %id, fence = lease.fence, "took over the restaurant's lease");
                }
                Ok(Fence {
                    restaurant_id: lease.restaurant_id,
                    fence: lease.fence,
                })
            }
            // Another node owns it and its lease runs.
            None if leases::lease_of(&mut conn, id.get())
                .await
                .map_err(db)?
                .is_some() =>
            {
                Err(EngineError::Unavailable)
            }
            None => Err(EngineError::NotFound(Missing::Restaurant)),
        }
    }

    async fn activate(
        &self,
        id: RestaurantId,
        cell: Arc<OnceCell<Addr<RestaurantActor>>>,
    ) -> Result<Addr<RestaurantActor>, EngineError> {
        // The lease first: what is read next includes everything the previous owner committed.
        let fence = self.take_lease(id).await?;
        let loaded = match LoadedRestaurant::load(&self.inner.pool, id).await {
            Ok(Some(loaded)) => loaded,
            failed => {
                self.let_go(vec![fence]);
                return Err(failed
                    .err()
                    .unwrap_or(EngineError::NotFound(Missing::Restaurant)));
            }
        };
        for t in loaded.tables.iter().filter(|t| t.active) {
            self.inner.tables.insert(
                t.token.clone(),
                TableRef {
                    restaurant_id: id,
                    table_id: t.id.into(),
                },
            );
        }
        let shard = &self.inner.shards[self.shard_of(id)];
        let writer = shard.writer.clone();
        let pool = self.inner.pool.clone();
        let config = self.inner.config.restaurant.clone();
        let weak = Arc::downgrade(&self.inner);
        let on_passivate: PassivateHook =
            Box::new(move |why: PassivateReason, tokens: Vec<String>| {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if inner
                    .registry
                    .remove_if(&id, |_, c| Arc::ptr_eq(c, &cell))
                    .is_some()
                {
                    match why {
                        PassivateReason::Idle => inner.passivations.fetch_add(1, Ordering::Relaxed),
                        PassivateReason::LeaseLost => {
                            metrics::counter!("s2o_leases_lost_total").increment(1);
                            inner.leases_lost.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                inner.fences.remove_if(&id, |_, (f, _)| *f == fence);
                for t in tokens {
                    inner.tables.remove_if(&t, |_, r| r.restaurant_id == id);
                }
                if why == PassivateReason::Idle {
                    ShardSupervisor { inner }.let_go(vec![fence]);
                }
            });
        self.inner.fences.insert(id, (fence, Instant::now()));
        let addr = RestaurantActor::start_in_arbiter(&shard.arbiter.handle(), move |_| {
            RestaurantActor::new(loaded, fence, writer, pool, config)
                .with_passivate_hook(on_passivate)
        });
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        Ok(addr)
    }

    /// Releases leases in the background (a passivated restaurant, a failed activation), so another
    /// node can start the restaurant at once.
    fn let_go(&self, held: Vec<Fence>) {
        let pool = self.inner.pool.clone();
        let node_id = self.inner.config.node.node_id.clone();
        actix::spawn(async move {
            if let Ok(mut conn) = pool.get().await {
                if let Err(e) = leases::release(&mut conn, &node_id, &held).await {
                    tracing::warn!(error = %e, "could not release leases; they expire on their own");
                }
            }
        });
    }

    /// The restaurant and table a QR token opens. Unknown, rotated and inactive tokens are `NotFound`.
    pub async fn resolve_table(
        &self,
        token: &str,
    ) -> Result<(Addr<RestaurantActor>, TableRef), EngineError> {
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(EngineError::NotFound(Missing::Table));
        }
        if let Some(r) = self.inner.tables.get(token).map(|r| *r) {
            return Ok((self.restaurant(r.restaurant_id).await?, r));
        }
        let mut conn = self.conn().await?;
        let table = RestaurantTable::by_token(&mut conn, token)
            .await
            .map_err(|_| EngineError::Unavailable)?
            .ok_or(EngineError::NotFound(Missing::Table))?;
        drop(conn);
        let r = TableRef {
            restaurant_id: table.restaurant_id.into(),
            table_id: table.id.into(),
        };
        let addr = self.restaurant(r.restaurant_id).await?;
        Ok((addr, r))
    }

    /// Forgets table tokens that died (rotation, deactivation, deletion).
    pub fn forget_tokens(&self, tokens: &[String]) {
        for t in tokens {
            self.inner.tables.remove(t);
        }
    }

    /// Records new table tokens of an active restaurant.
    pub fn remember_tables(&self, restaurant_id: RestaurantId, tables: &[(String, TableId)]) {
        for (token, table_id) in tables {
            self.inner.tables.insert(
                token.clone(),
                TableRef {
                    restaurant_id,
                    table_id: *table_id,
                },
            );
        }
    }

    /// The actor of a restaurant if it is active now (no activation).
    pub fn active_restaurant(&self, id: RestaurantId) -> Option<Addr<RestaurantActor>> {
        self.inner.registry.get(&id).and_then(|c| c.get().cloned())
    }

    /// Addresses of every active restaurant.
    pub fn active(&self) -> Vec<Addr<RestaurantActor>> {
        self.inner
            .registry
            .iter()
            .filter_map(|e| e.value().get().cloned())
            .collect()
    }

    pub async fn restaurant_stats(&self) -> Vec<RestaurantStats> {
        let mut out = Vec::new();
        for addr in self.active() {
            if let Ok(mut s) = addr.send(GetStats).await {
                s.shard = self.shard_of(s.restaurant_id);
                out.push(s);
            }
        }
        out
    }

    /// Per-shard gauges without touching the rate window of [`ShardSupervisor::shard_stats`].
    pub fn shard_gauges(&self) -> Vec<ShardStats> {
        let mut counts = vec![0usize; self.inner.shards.len()];
        for e in self.inner.registry.iter() {
            if e.value().get().is_some() {
                counts[self.shard_of(*e.key())] += 1;
            }
        }
        self.inner
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardStats {
                shard: i,
                restaurants: counts[i],
                messages_per_s: 0.0,
                p99_ms: 0.0,
                mailbox_depth: s.in_flight.load(Ordering::Relaxed),
                messages_handled: s.handled.load(Ordering::Relaxed),
                writer_queue: s.writer_stats.queued.load(Ordering::Relaxed),
                batches: s.writer_stats.batches.load(Ordering::Relaxed),
                writes: s.writer_stats.ops.load(Ordering::Relaxed),
                failed_batches: s.writer_stats.failed_batches.load(Ordering::Relaxed),
                largest_batch: s.writer_stats.largest_batch.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Per-shard figures, with messages/s and p99 over the interval since the previous call.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        let now = std::time::Instant::now();
        let handled: Vec<u64> = self
            .inner
            .shards
            .iter()
            .map(|s| s.handled.load(Ordering::Relaxed))
            .collect();
        let latency: Vec<[u64; LATENCY_BUCKETS]> = self
            .inner
            .shards
            .iter()
            .map(|s| s.latency.snapshot())
            .collect();
        let previous = {
            let mut mark = self.inner.mark.lock().unwrap_or_else(|e| e.into_inner());
            mark.replace(StatsMark {
                at: now,
                handled: handled.clone(),
                latency: latency.clone(),
            })
        };
        let mut stats = self.shard_gauges();
        for (i, st) in stats.iter_mut().enumerate() {
            st.messages_per_s = match &previous {
                Some(p) if now > p.at => {
                    handled[i].saturating_sub(p.handled[i]) as f64 / (now - p.at).as_secs_f64()
                }
                _ => 0.0,
            };
            st.p99_ms = match &previous {
                Some(p) => p99_ms(&p.latency[i], &latency[i]),
                None => p99_ms(&[0; LATENCY_BUCKETS], &latency[i]),
            };
        }
        stats
    }

    /// Whether every shard's writer is alive.
    pub fn shards_running(&self) -> bool {
        self.inner.shards.iter().all(|s| s.writer.connected())
    }

    /// Begins a clean shutdown: from now on the HTTP layer refuses new writes with a retryable 503, so
    /// what is already queued drains quickly and nothing new is half-taken.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Stops the shard arbiters at once, dropping whatever is queued.
    pub fn stop_now(&self) {
        for shard in &self.inner.shards {
            shard.arbiter.stop();
        }
    }

    /// Shutdown: waits for every queued write to commit, releases the node's leases (the next owner
    /// starts at once instead of after expiry), then closes every socket with 1001 and stops the
    /// shard arbiters.
    pub async fn shutdown(&self) {
        for shard in &self.inner.shards {
            let _ = shard.writer.send(Drain).await;
        }
        self.inner.released.store(true, Ordering::SeqCst);
        let held: Vec<Fence> = self.inner.fences.iter().map(|e| e.value().0).collect();
        if let Ok(mut conn) = self.inner.pool.get().await {
            let node_id = &self.inner.config.node.node_id;
            match leases::release(&mut conn, node_id, &held).await {
                Ok(n) => tracing::info!(leases = n, "released the node's leases"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not release leases; they expire on their own")
                }
            }
            let _ = leases::forget_node(&mut conn, node_id).await;
        }
        for addr in self.active() {
            let _ = addr
                .send(CloseAll {
                    code: close_code::GOING_AWAY,
                })
                .await;
        }
        for shard in &self.inner.shards {
            shard.arbiter.stop();
        }
        self.inner.registry.clear();
        self.inner.tables.clear();
    }
}

/// Renews the node's leases every `lease_ttl / 3`, reports the node's heartbeat, and stops the
/// restaurants whose lease another node holds now. Ends with the engine.
async fn keep_leases(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.released.load(Ordering::SeqCst) {
            return;
        }
        let every = strong.config.node.renew_every();
        if let Err(e) = renew_once(&strong).await {
            tracing::warn!(error = %e, "could not renew the node's leases");
        }
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

async fn renew_once(inner: &Inner) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let node = &inner.config.node;
    let mut conn = inner.pool.get().await?;
    let round = Instant::now();
    let held: HashSet<Fence> = leases::renew(&mut conn, &node.node_id, node.lease_ttl)
        .await?
        .into_iter()
        .collect();
    let lost: Vec<(RestaurantId, Fence)> = inner
        .fences
        .iter()
        .filter(|e| e.value().1 < round && !held.contains(&e.value().0))
        .map(|e| (*e.key(), e.value().0))
        .collect();
    for (id, fence) in lost {
        let addr = inner.registry.get(&id).and_then(|c| c.get().cloned());
        match addr.filter(|a| a.connected()) {
            Some(addr) => addr.do_send(LeaseLost),
            None => {
                inner.fences.remove_if(&id, |_, (f, _)| *f == fence);
            }
        }
    }
    let owned = i32::try_from(held.len()).unwrap_or(i32::MAX);
    let sockets = i32::try_from(crate::session::open_sockets()).unwrap_or(i32::MAX);
    leases::heartbeat(&mut conn, &node.node_id, inner.started.at, owned, sockets).await?;
    Ok(())
}
