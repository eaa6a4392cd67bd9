//! Limiter memory: the process RSS while a million distinct IPv4 keys hit one keyed limiter (the general
//! API tier of `RateLimits`), after the idle keys are evicted, and again for a second and third million.
//! With eviction, memory returns to the same level after every round instead of growing with the number
//! of keys ever seen.
//!
//! `cargo run --release --example limiter_memory` (the figures in issue 4's note come from it).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use scan2order::config::Settings;
use scan2order::limits::{RateLimits, Tier};

const KEYS_PER_ROUND: u32 = 1_000_000;
const ROUNDS: u32 = 3;

/// Resident set size of this process in KiB, from `/proc/self/status`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let mut settings = Settings::defaults()?.rate_limits;
    settings.enabled = true;
    // 600 a minute: one request leaves a key idle again (back to a fresh state) after 100 ms.
    settings.api_per_minute = 600;
    let limits = RateLimits::new(&settings)?;
    let start = rss_kib();
    println!("start: RSS {}", mib(start));
    let mut after_eviction = Vec::new();
    let mut peaks = Vec::new();
    for round in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..KEYS_PER_ROUND {
            // 10.0.0.0/8, a fresh million addresses every round.
            let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + round * KEYS_PER_ROUND + i));
            if limits.check(Tier::Api, ip).is_err() {
                anyhow::bail!("the first request of a fresh key was refused");
            }
        }
        let peak = rss_kib();
        println!(
            "round {}: {} keys held, RSS {} (+{} over start), {:.1?} for {} requests",
            round + 1,
            limits.keys(),
            mib(peak),
            mib(peak.saturating_sub(start)),
            t.elapsed(),
            KEYS_PER_ROUND
        );
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        limits.evict_idle();
        let after = rss_kib();
        println!(
            "  after eviction: {} keys held, RSS {} ({:.1?} to evict)",
            limits.keys(),
            mib(after),
            t.elapsed()
        );
        peaks.push(peak);
        after_eviction.push(after);
    }
    let growth = |v: &[u64]| v.last().copied().unwrap_or(0) as i64 - v[0] as i64;
    println!(
        "peak growth from round 1 to round {ROUNDS}: {} KiB; after-eviction growth: {} KiB",
        growth(&peaks),
        growth(&after_eviction)
    );
    Ok(())
}
