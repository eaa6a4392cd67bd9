//! What the engine reports of its shards: per-shard request rates and latency (power-of-two buckets),
//! mailbox depths, writer figures, and each active restaurant's counters.

use std::sync::atomic::{AtomicU64, Ordering};

use super::ShardSupervisor;
use crate::restaurant::{GetStats, RestaurantStats};

/// Bucket `i` counts durations below 2^i microseconds (the last one: everything longer).
const LATENCY_BUCKETS: usize = 28;

#[derive(Default)]
pub(super) struct LatencyBuckets([AtomicU64; LATENCY_BUCKETS]);

impl LatencyBuckets {
    pub(super) fn record(&self, elapsed: std::time::Duration) {
        let us = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = ((u64::BITS - us.leading_zeros()) as usize).min(LATENCY_BUCKETS - 1);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> [u64; LATENCY_BUCKETS] {
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
pub(super) struct StatsMark {
    at: std::time::Instant,
    handled: Vec<u64>,
    latency: Vec<[u64; LATENCY_BUCKETS]>,
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
}
