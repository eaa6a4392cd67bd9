//! # ShardSupervisor
//!
//! Owns the K shard arbiters (threads), one [`PersistenceWriter`] per shard, the registry of active
//! restaurants and the directory of table tokens. A restaurant lives on shard `hash(id) % K`. Any thread
//! finds an active restaurant with a lock-free lookup; a miss activates it exactly once, however many
//! requests race for it (they all wait for the one activation and get the same address).
//!
//! Handlers reach restaurants only through [`ShardSupervisor::ask`], [`ShardSupervisor::room`] and
//! [`ShardSupervisor::resolve_table`]: the seam where, in a fleet, the restaurant is the local actor or
//! its owner on another node ([`route`]: commands forwarded, events relayed). Handlers do not change.
//!
//! A restaurant is activated only under its lease ([`crate::cluster::ownership`], [`lease_keeper`]):
//! the lease is taken before the restaurant is read, so the actor starts from everything the previous
//! owner committed, and its writes carry the lease's fence. [`stats`]: what the shards report.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use scan2order_schema::domain::{RestaurantId, TableId};
use scan2order_schema::leases::{self, Fence, Lease, NodeRow};
use scan2order_schema::{DbConn, DbPool};
use tokio::sync::{Notify, OnceCell};

use crate::cluster::fleet::{Fleet, Notice};
use crate::cluster::ownership::{NodeConfig, Started};
use crate::cluster::relay::RelayActor;
use crate::restaurant::{
    CloseAll, EngineError, HandOver, LoadedRestaurant, Missing, PassivateHook, PassivateReason,
    RestaurantActor, RestaurantConfig,
};
use crate::room::Room;
use crate::sink::close_code;
use crate::writer::{Drain, PersistenceWriter, WriterStats};

mod directory;
mod lease_keeper;
mod route;
mod stats;

use lease_keeper::keep_leases;
pub use stats::ShardStats;
use stats::{LatencyBuckets, StatsMark};

/// Decrements a shard's in-flight count however the request ends.
pub(super) struct InFlight<'a>(&'a AtomicI64);

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

/// Where a table token leads.
#[derive(Clone, Copy, Debug)]
pub struct TableRef {
    pub restaurant_id: RestaurantId,
    pub table_id: TableId,
}

struct Inner {
    shards: Vec<Shard>,
    registry: DashMap<RestaurantId, Arc<OnceCell<Addr<RestaurantActor>>>>,
    tables: Arc<directory::Directory>,
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
    /// This node's part in a fleet (cluster mode only).
    fleet: std::sync::OnceLock<Arc<Fleet>>,
}

/// Why a restaurant could not be activated here.
enum Activation {
    /// Another node holds its lease, and the lease runs.
    Elsewhere(String),
    Failed(EngineError),
}

impl From<EngineError> for Activation {
    fn from(e: EngineError) -> Activation {
        Activation::Failed(e)
    }
}

impl Activation {
    /// On a single node (or to a caller that does not forward): another owner is `unavailable`.
    fn engine_error(self) -> EngineError {
        match self {
            Activation::Elsewhere(_) => EngineError::Unavailable,
            Activation::Failed(e) => e,
        }
    }
}

/// Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct ShardSupervisor {
    inner: Arc<Inner>,
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
            tables: Arc::default(),
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
            fleet: std::sync::OnceLock::new(),
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
        match self.activated(id).await {
            Ok(_) | Err(Activation::Elsewhere(_)) => {}
            Err(Activation::Failed(e)) => return Err(e),
        }
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

    /// The restaurant's actor on this node, activating it on first use. On a single node this is
    /// every restaurant; in a fleet, one another node owns is `unavailable` here (use [`Self::ask`]
    /// or [`Self::room`]).
    pub async fn restaurant(&self, id: RestaurantId) -> Result<Addr<RestaurantActor>, EngineError> {
        self.activated(id).await.map_err(Activation::engine_error)
    }

    /// The restaurant's actor on this node, activated here if no node holds its lease.
    async fn activated(&self, id: RestaurantId) -> Result<Addr<RestaurantActor>, Activation> {
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
                return Box::pin(self.activated(id)).await;
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

    async fn activate(
        &self,
        id: RestaurantId,
        cell: Arc<OnceCell<Addr<RestaurantActor>>>,
    ) -> Result<Addr<RestaurantActor>, Activation> {
        // A node that is shutting down starts nothing: the caller asks the next owner.
        if self.inner.released.load(Ordering::SeqCst) {
            return Err(Activation::Elsewhere(String::new()));
        }
        // The lease first: what is read next includes everything the previous owner committed.
        let fence = self.take_lease(id).await?;
        let loaded = match LoadedRestaurant::load(&self.inner.pool, id).await {
            Ok(Some(loaded)) => loaded,
            failed => {
                self.let_go(vec![fence]);
                return Err(failed
                    .err()
                    .unwrap_or(EngineError::NotFound(Missing::Restaurant))
                    .into());
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
                        PassivateReason::HandedOver => 0,
                    };
                }
                inner.fences.remove_if(&id, |_, (f, _)| *f == fence);
                for t in tokens {
                    inner.tables.remove_if_of(&t, id);
                }
                if why == PassivateReason::Idle {
                    ShardSupervisor { inner }.let_go(vec![fence]);
                }
            });
        self.inner.fences.insert(id, (fence, Instant::now()));
        let tap = self.fleet().map(|f| f.tap().clone());
        let addr = RestaurantActor::start_in_arbiter(&shard.arbiter.handle(), move |_| {
            let actor = RestaurantActor::new(loaded, fence, writer, pool, config)
                .with_passivate_hook(on_passivate);
            match tap {
                Some(tap) => actor.with_tap(tap),
                None => actor,
            }
        });
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        Ok(addr)
    }

    /// The restaurant and table a QR token opens. Unknown, rotated and inactive tokens are `NotFound`.
    pub async fn resolve_table(&self, token: &str) -> Result<(Room, TableRef), EngineError> {
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(EngineError::NotFound(Missing::Table));
        }
        // Remembered on a node that does not own the restaurant too, so its guests' menu reads do not
        // query Postgres each time; a token that dies is forgotten on every node (`tokens_died`), and
        // the owner checks the token on every call regardless.
        let r = self
            .inner
            .tables
            .lookup(&self.inner.pool, token)
            .await
            .map_err(|()| EngineError::Unavailable)?
            .ok_or(EngineError::NotFound(Missing::Table))?;
        Ok((self.room(r.restaurant_id).await?, r))
    }

    /// Forgets table tokens that died (rotation, deactivation, deletion), on every node.
    pub async fn forget_tokens(&self, tokens: &[String]) {
        for t in tokens {
            self.inner.tables.remove(t);
        }
        if let Some(fleet) = self.fleet().filter(|_| !tokens.is_empty()) {
            fleet
                .tell(Notice::TokensDied {
                    tokens: tokens.to_vec(),
                })
                .await;
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
    /// starts at once instead of after expiry), stops every restaurant (its sockets closed with 1001;
    /// relaying nodes told it is gone), stops answering the fleet, then stops the shard arbiters.
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
            let _ = addr.send(HandOver).await;
        }
        if let Some(fleet) = self.fleet() {
            // Commands sent here from now on find no responder: their senders ask the next owner.
            fleet.stop().cancel();
            let relays: Vec<Addr<RelayActor>> =
                fleet.relays().iter().map(|r| r.value().clone()).collect();
            for relay in relays {
                let _ = relay
                    .send(CloseAll {
                        code: close_code::GOING_AWAY,
                    })
                    .await;
            }
        }
        for shard in &self.inner.shards {
            shard.arbiter.stop();
        }
        self.inner.registry.clear();
        self.inner.tables.clear();
    }
}
