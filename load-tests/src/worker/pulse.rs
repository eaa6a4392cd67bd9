//! The held fleet's heartbeat (`sockets --pulse-every`): one menu event per restaurant per period,
//! every restaurant's at its own moment of the period, each counted at every socket of its restaurant.
//!
//! No coordination per event: the schedule is known to every worker from the run's start time, so
//! each worker arms, before a round begins, the events of the restaurants it holds sockets for (their
//! delivery latency counts from the scheduled moment), and fires, at their moments, those of the
//! restaurants it is the firer of (restaurant `r` by worker `r mod P`). Round `k` flips the
//! restaurant's first dish to the opposite of its starting state when `k` is even and back when odd,
//! so an even number of rounds leaves every menu as it was.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Worker, WorkerEvent};
use crate::stats::{h, now_ns};

/// The schedule of one run.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start_ns: u64,
    pub rounds: u32,
    pub period_ns: u64,
    /// Restaurants in the run (the period is divided evenly among them).
    pub restaurants: u32,
}

impl Schedule {
    /// When restaurant `r`'s event of round `k` is sent.
    pub fn at(&self, k: u32, r: u32) -> u64 {
        self.start_ns
            + u64::from(k) * self.period_ns
            + u64::from(r) * self.period_ns / u64::from(self.restaurants.max(1))
    }

    /// When the last round's period ends.
    pub fn end(&self) -> u64 {
        self.start_ns + u64::from(self.rounds) * self.period_ns
    }
}

/// The ledger id of restaurant `r`'s event in round `k` (apart from every other toggle's ids).
fn event_id(k: u32, r: u32) -> u64 {
    (3u64 << 62) | (u64::from(k) << 32) | u64::from(r)
}

/// Round `k`'s value for a dish that started as `initial`.
fn value(k: u32, initial: bool) -> bool {
    if k.is_multiple_of(2) {
        !initial
    } else {
        initial
    }
}

async fn sleep_until_ns(t: u64) {
    let now = now_ns();
    if t > now {
        tokio::time::sleep(Duration::from_nanos(t - now)).await;
    }
}

/// Runs the schedule for worker `w`, which holds sockets of `listened`; reports `Pulsed` at the end.
pub async fn run(
    w: Arc<Worker>,
    listened: Vec<u32>,
    s: Schedule,
    out: mpsc::UnboundedSender<WorkerEvent>,
) {
    let p = w.cfg.processes.max(1);
    let fires: Vec<u32> = (0..s.restaurants).filter(|r| r % p == w.idx).collect();
    let mut latest_send = 0u64;
    let mut flights = Vec::new();
    for k in 0..s.rounds {
        // Arm a little before the round: the first restaurant's event is sent at its very start.
        sleep_until_ns(s.at(k, 0).saturating_sub(200_000_000)).await;
        if w.stopped() {
            break;
        }
        for &r in &listened {
            let Some(&(item, initial)) = w.plan.restaurants[r as usize].items.first() else {
                continue;
            };
            let id = event_id(k, r);
            w.ledger.toggle_armed(id, r, item, value(k, initial));
            for lat in w.ledger.toggle_fired(id, s.at(k, r)) {
                w.stats.record_ns(h::TOGGLE_TO_SOCKET, lat);
            }
        }
        for &r in &fires {
            let Some(&(item, initial)) = w.plan.restaurants[r as usize].items.first() else {
                continue;
            };
            sleep_until_ns(s.at(k, r)).await;
            latest_send = latest_send.max(now_ns().saturating_sub(s.at(k, r)));
            let w2 = w.clone();
            flights.push(tokio::spawn(async move {
                fire(&w2, r, item, value(k, initial)).await
            }));
        }
        // Rounds before this one are over (a period ago): count them.
        if k > 0 {
            for &r in &listened {
                w.ledger.toggle_done(event_id(k - 1, r), true);
            }
        }
    }
    let ok = futures_util::future::join_all(flights)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count() as u64;
    // The last round ends a period after it began; then the sockets have had a settle's time.
    sleep_until_ns(s.end() + w.cfg.settle_ms * 1_000_000).await;
    if s.rounds > 0 {
        for &r in &listened {
            w.ledger.toggle_done(event_id(s.rounds - 1, r), true);
        }
    }
    let _ = out.send(WorkerEvent::Pulsed {
        worker: w.idx,
        fired_ok: ok,
        latest_send_ms: latest_send as f64 / 1e6,
    });
}

/// Sends one scheduled menu change (the toggle's deliveries were armed by every worker already).
async fn fire(w: &Arc<Worker>, r: u32, item: Uuid, available: bool) -> bool {
    let (_, ok) = super::send_toggle(w, r, item, available).await;
    if ok {
        w.availability[r as usize][0].store(available, Ordering::Relaxed);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spreads_restaurants_over_the_period_and_rounds_alternate() {
        let s = Schedule {
            start_ns: 1_000,
            rounds: 2,
            period_ns: 60_000,
            restaurants: 4,
        };
        assert_eq!(s.at(0, 0), 1_000);
        assert_eq!(s.at(0, 3), 1_000 + 45_000);
        assert_eq!(s.at(1, 1), 1_000 + 60_000 + 15_000);
        assert_eq!(s.end(), 121_000);
        assert!(!value(0, true) && value(1, true));
        assert_ne!(event_id(0, 1), event_id(1, 0));
        assert_ne!(
            event_id(0, 1) >> 62,
            0,
            "apart from the coordinator's toggle ids"
        );
    }
}
