//! # ShardSupervisor
//!
//! Owns the K shard arbiters (threads), one [`PersistenceWriter`] per shard, the registry of active
//! restaurants and the directory of table tokens. A restaurant lives on shard `hash(id) % K`. Any thread
//! finds an active restaurant with a lock-free lookup; a miss activates it exactly once, however many
//! requests race for it (they all wait for the one activation and get the same address).
//!
//! Handlers reach restaurants only through [`ShardSupervisor::restaurant`] and
//! [`ShardSupervisor::resolve_table`], the seam where a remote (cluster) address can slot in later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;
use scan2order_schema::domain::{RestaurantId, TableId};
use scan2order_schema::models::RestaurantTable;
use scan2order_schema::DbPool;
use tokio::sync::{Notify, OnceCell};

use crate::restaurant::{
    CloseAll, EngineError, GetStats, LoadedRestaurant, RestaurantActor, RestaurantConfig,
    RestaurantStats,
};
use crate::sink::close_code;
use crate::writer::{Drain, PersistenceWriter, WriterStats};

/// Longest accepted table token; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 64;

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Number of shard arbiters (threads).
    pub shards: usize,
    /// How long a write transaction may take before callers are told the database is unavailable.
    pub write_timeout: Duration,
    pub restaurant: RestaurantConfig,
}

struct Shard {
    arbiter: Arbiter,
    writer: Addr<PersistenceWriter>,
    writer_stats: Arc<WriterStats>,
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
    settings: EngineSettings,
    activations: AtomicU64,
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
    pub batches: u64,
    pub writes: u64,
    pub failed_batches: u64,
    pub largest_batch: u64,
}

impl ShardSupervisor {
    /// Starts the shard arbiters and their writers. Must run inside an actix system.
    pub fn start(
        pool: DbPool,
        settings: EngineSettings,
        outbox_wake: Arc<Notify>,
    ) -> ShardSupervisor {
        let k = settings.shards.max(1);
        let shards = (0..k)
            .map(|_| {
                let arbiter = Arbiter::new();
                let writer_stats = Arc::new(WriterStats::default());
                let (p, t, w, s) = (
                    pool.clone(),
                    settings.write_timeout,
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
                }
            })
            .collect();
        ShardSupervisor {
            inner: Arc::new(Inner {
                shards,
                registry: DashMap::new(),
                tables: DashMap::new(),
                pool,
                settings,
                activations: AtomicU64::new(0),
            }),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
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
                // The actor died; forget it so the next call activates a fresh one.
                self.inner
                    .registry
                    .remove_if(&id, |_, c| Arc::ptr_eq(c, &cell));
                return Box::pin(self.restaurant(id)).await;
            }
        }
        let result = cell.get_or_try_init(|| self.activate(id)).await.cloned();
        if result.is_err() {
            self.inner
                .registry
                .remove_if(&id, |_, c| Arc::ptr_eq(c, &cell) && c.get().is_none());
        }
        result
    }

    async fn activate(&self, id: RestaurantId) -> Result<Addr<RestaurantActor>, EngineError> {
        let loaded = LoadedRestaurant::load(&self.inner.pool, id)
            .await?
            .ok_or(EngineError::NotFound)?;
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
        let config = self.inner.settings.restaurant.clone();
        let addr = RestaurantActor::start_in_arbiter(&shard.arbiter.handle(), move |_| {
            RestaurantActor::new(loaded, writer, pool, config)
        });
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        Ok(addr)
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
            return Err(EngineError::NotFound);
        }
        if let Some(r) = self.inner.tables.get(token).map(|r| *r) {
            return Ok((self.restaurant(r.restaurant_id).await?, r));
        }
        let mut conn = self
            .inner
            .pool
            .get()
            .await
            .map_err(|_| EngineError::Unavailable)?;
        let table = RestaurantTable::by_token(&mut conn, token)
            .await
            .map_err(|_| EngineError::Unavailable)?
            .ok_or(EngineError::NotFound)?;
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
            if let Ok(s) = addr.send(GetStats).await {
                out.push(s);
            }
        }
        out
    }

    pub fn shard_stats(&self) -> Vec<ShardStats> {
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
                batches: s.writer_stats.batches.load(Ordering::Relaxed),
                writes: s.writer_stats.ops.load(Ordering::Relaxed),
                failed_batches: s.writer_stats.failed_batches.load(Ordering::Relaxed),
                largest_batch: s.writer_stats.largest_batch.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Whether every shard's writer is alive.
    pub fn shards_running(&self) -> bool {
        self.inner.shards.iter().all(|s| s.writer.connected())
    }

    /// Stops the shard arbiters at once, dropping whatever is queued.
    pub fn stop_now(&self) {
        for shard in &self.inner.shards {
            shard.arbiter.stop();
        }
    }

    /// Shutdown: waits for every queued write to commit, then closes every socket with 1001 and stops the
    /// shard arbiters.
    pub async fn shutdown(&self) {
        for shard in &self.inner.shards {
            let _ = shard.writer.send(Drain).await;
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
