//! Measurements: HDR histograms (microseconds), counters, errors by kind, `/proc` readings of the server
//! and of the tool itself, and the report that workers send to the parent and the parent prints.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::accounting::{Completeness, ToggleSummary};

/// Wall clock in nanoseconds: comparable between the tool's processes on one machine.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Histogram names used by the scenarios.
pub mod h {
    pub const CONNECT: &str = "ws_connect_to_hello";
    pub const SUBSCRIBE: &str = "ws_connect_to_subscribed";
    pub const ORDER_TO_KITCHEN: &str = "order_to_kitchen_socket";
    pub const ORDER_TO_TABLE: &str = "order_to_table_socket";
    pub const STATUS_TO_TABLE: &str = "status_to_table_socket";
    pub const STATUS_TO_KITCHEN: &str = "status_to_kitchen_socket";
    pub const TOGGLE_TO_SOCKET: &str = "toggle_to_socket";
    pub const HTTP_PLACE_ORDER: &str = "http_place_order";
    pub const HTTP_SET_STATUS: &str = "http_set_status";
    pub const WS_SET_STATUS: &str = "ws_set_status_ack";
    pub const HTTP_TOGGLE: &str = "http_menu_toggle";
    pub const HTTP_MENU: &str = "http_table_menu";
}

/// Counter names.
pub mod c {
    pub const CONNECT_OK: &str = "ws_connects_ok";
    pub const CONNECT_FAIL: &str = "ws_connect_failures";
    pub const OPEN: &str = "ws_open";
    pub const SUBSCRIBED: &str = "ws_subscribed";
    pub const EVENTS: &str = "ws_events_received";
    pub const RECONNECTS: &str = "ws_reconnects";
    pub const CHURNS: &str = "ws_churn_closes";
    pub const SERVER_CLOSES: &str = "ws_closed_by_server";
    pub const ORDERS_OK: &str = "orders_ok";
    pub const ORDERS_FAIL: &str = "orders_failed";
    pub const ORDERS_SKIPPED: &str = "orders_skipped_client_saturated";
    pub const ORDERS_SOLD_OUT: &str = "orders_refused_item_unavailable";
    pub const STATUS_OK: &str = "status_changes_ok";
    pub const STATUS_FAIL: &str = "status_changes_failed";
    pub const TOGGLES_OK: &str = "toggles_ok";
    pub const TOGGLES_FAIL: &str = "toggles_failed";
    pub const MENU_OK: &str = "menu_reads_ok";
    pub const MENU_FAIL: &str = "menu_reads_failed";
}

/// A new histogram for microsecond values up to an hour.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_hist()))
}

fn unreachable_hist() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for more than 5 significant figures.
    Histogram::new_with_max(u64::MAX / 2, 2).unwrap_or_else(|_| std::process::abort())
}

/// Live measurements of one process.
#[derive(Default)]
pub struct Stats {
    hists: Mutex<HashMap<&'static str, Histogram<u64>>>,
    counters: Mutex<HashMap<&'static str, &'static AtomicU64>>,
    errors: Mutex<HashMap<String, u64>>,
}

impl Stats {
    /// The counter named `name` (created on first use; counters live for the process).
    pub fn counter(&self, name: &'static str) -> &'static AtomicU64 {
        let mut g = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name)
            .or_insert_with(|| Box::leak(Box::new(AtomicU64::new(0))))
    }

    pub fn incr(&self, name: &'static str) {
        self.counter(name).fetch_add(1, Ordering::Relaxed);
    }

    pub fn decr(&self, name: &'static str) {
        self.counter(name).fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self, name: &'static str) -> u64 {
        self.counter(name).load(Ordering::Relaxed)
    }

    /// Records a latency in nanoseconds (stored in microseconds).
    pub fn record_ns(&self, name: &'static str, ns: u64) {
        let mut g = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name)
            .or_insert_with(new_hist)
            .saturating_record((ns / 1000).max(1));
    }

    pub fn error(&self, kind: impl Into<String>) {
        let mut g = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *g.entry(kind.into()).or_default() += 1;
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        let g = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .map(|(k, v)| ((*k).to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        let g = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn error_total(&self) -> u64 {
        let g = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        g.values().sum()
    }

    /// Every histogram, V2-serialised and base64-encoded (to cross process boundaries).
    pub fn encoded_hists(&self) -> BTreeMap<String, String> {
        let g = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        g.iter()
            .filter_map(|(k, h)| encode_hist(h).map(|s| ((*k).to_string(), s)))
            .collect()
    }

    /// A short percentile of one histogram, for progress lines (ms).
    pub fn quantile_ms(&self, name: &'static str, q: f64) -> Option<f64> {
        let g = self.hists.lock().unwrap_or_else(|e| e.into_inner());
        g.get(name)
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

pub fn encode_hist(h: &Histogram<u64>) -> Option<String> {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(buf))
}

pub fn decode_hist(s: &str) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .ok()
}

/// Percentiles of one histogram in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Summary {
        count: h.len(),
        min_ms: ms(h.min()),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
    }
}

/// A process's resident memory and CPU time, read from `/proc/<pid>`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// User + system CPU time in milliseconds (clock ticks assumed 100 Hz, Linux's default).
    pub cpu_ms: u64,
    pub at_ns: u64,
}

pub fn proc_sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ") state".
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_kib,
        cpu_ms: (utime + stime) * 10,
        at_ns: now_ns(),
    })
}

/// The sum over several processes (a fleet's nodes); `None` when any of them cannot be read.
pub fn fleet_sample(pids: &[u32]) -> Option<ProcSample> {
    let mut sum: Option<ProcSample> = None;
    for pid in pids {
        let s = proc_sample(*pid)?;
        let acc = sum.get_or_insert(ProcSample {
            rss_kib: 0,
            cpu_ms: 0,
            at_ns: s.at_ns,
        });
        acc.rss_kib += s.rss_kib;
        acc.cpu_ms += s.cpu_ms;
    }
    sum
}

pub fn self_sample() -> Option<ProcSample> {
    proc_sample(std::process::id())
}

/// Figures about a process (the server or the tool) over a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcFigures {
    pub before: Option<ProcSample>,
    pub loaded: Option<ProcSample>,
    pub after: Option<ProcSample>,
    pub peak_rss_kib: u64,
    /// (loaded.rss − before.rss) / sockets, in bytes.
    pub rss_bytes_per_socket: Option<f64>,
    /// CPU time used between `before` and `after`, ms.
    pub cpu_ms: Option<u64>,
    /// Average CPU use between `before` and `after`, in cores.
    pub cpu_cores: Option<f64>,
}

impl ProcFigures {
    pub fn finish(&mut self, sockets: u64) {
        if let (Some(b), Some(l)) = (self.before, self.loaded) {
            if sockets > 0 {
                self.rss_bytes_per_socket =
                    Some((l.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / sockets as f64);
            }
        }
        if let (Some(b), Some(a)) = (self.before, self.after) {
            let cpu = a.cpu_ms.saturating_sub(b.cpu_ms);
            self.cpu_ms = Some(cpu);
            let wall_ms = a.at_ns.saturating_sub(b.at_ns) as f64 / 1e6;
            if wall_ms > 0.0 {
                self.cpu_cores = Some(cpu as f64 / wall_ms);
            }
        }
    }
}

/// What a worker hands back at the end; the parent merges these.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: u32,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// V2 + base64 HDR histograms.
    pub hists: BTreeMap<String, String>,
    pub completeness: Completeness,
    pub toggles: Vec<ToggleSummary>,
    /// The worker's own memory with its sockets open.
    pub tool: ProcFigures,
    pub sockets: u64,
    /// Unix ns: the first connect started, and the last socket subscribed.
    pub connect_started_ns: u64,
    pub all_subscribed_ns: u64,
    pub notes: Vec<String>,
}

impl WorkerReport {
    pub fn from_stats(worker: u32, stats: &Stats) -> WorkerReport {
        WorkerReport {
            worker,
            counters: stats.counters(),
            errors: stats.errors(),
            hists: stats.encoded_hists(),
            ..WorkerReport::default()
        }
    }
}

/// The merged report: what `--json` writes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub started_at: String,
    pub duration_s: f64,
    pub workers: u32,
    pub target: String,
    pub params: serde_json::Value,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub latency: BTreeMap<String, Summary>,
    pub completeness: Completeness,
    pub completeness_ok: bool,
    pub server: Option<ProcFigures>,
    /// The tool's own memory: sum over workers.
    pub tool_rss_kib: u64,
    pub tool_rss_bytes_per_socket: Option<f64>,
    pub figures: BTreeMap<String, f64>,
    pub toggles: Vec<ToggleSummary>,
    pub notes: Vec<String>,
}

impl Report {
    /// Adds up worker reports: counters and errors summed, histograms merged.
    pub fn merge_workers(&mut self, workers: &[WorkerReport]) {
        let mut hists: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
        let mut tool_before = 0u64;
        let mut tool_loaded = 0u64;
        let mut sockets = 0u64;
        let mut toggles: BTreeMap<u64, ToggleSummary> = BTreeMap::new();
        for w in workers {
            for (k, v) in &w.counters {
                *self.counters.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &w.errors {
                *self.errors.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &w.hists {
                if let Some(h) = decode_hist(v) {
                    match hists.get_mut(k) {
                        Some(acc) => {
                            if acc.add(&h).is_err() {
                                self.notes.push(format!("histogram {k} did not merge"));
                            }
                        }
                        None => {
                            hists.insert(k.clone(), h);
                        }
                    }
                }
            }
            self.completeness.merge(&w.completeness);
            if let (Some(b), Some(l)) = (w.tool.before, w.tool.loaded) {
                tool_before += b.rss_kib;
                tool_loaded += l.rss_kib;
            }
            self.tool_rss_kib += w.tool.peak_rss_kib;
            sockets += w.sockets;
            for t in &w.toggles {
                let e = toggles.entry(t.id).or_insert_with(|| ToggleSummary {
                    id: t.id,
                    sent_ns: t.sent_ns,
                    ..ToggleSummary::default()
                });
                e.deliveries += t.deliveries;
                e.sent_ns = e.sent_ns.max(t.sent_ns);
                if t.first_arrival_ns > 0
                    && (e.first_arrival_ns == 0 || t.first_arrival_ns < e.first_arrival_ns)
                {
                    e.first_arrival_ns = t.first_arrival_ns;
                }
                e.last_arrival_ns = e.last_arrival_ns.max(t.last_arrival_ns);
            }
            self.notes.extend(w.notes.iter().cloned());
        }
        if sockets > 0 && tool_loaded > 0 {
            self.tool_rss_bytes_per_socket =
                Some((tool_loaded as f64 - tool_before as f64) * 1024.0 / sockets as f64);
        }
        self.latency = hists
            .iter()
            .map(|(k, h)| (k.clone(), summarize(h)))
            .collect();
        self.toggles = toggles.into_values().collect();
        self.completeness_ok = self.completeness.ok();
    }

    /// The human summary printed at the end.
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== {} against {} — {:.1} s, {} worker process(es) ==",
            self.scenario, self.target, self.duration_s, self.workers
        );
        let _ = writeln!(s, "counters:");
        for (k, v) in &self.counters {
            let _ = writeln!(s, "  {k:<36} {v}");
        }
        if !self.figures.is_empty() {
            let _ = writeln!(s, "figures:");
            for (k, v) in &self.figures {
                let _ = writeln!(s, "  {k:<36} {v:.3}");
            }
        }
        let _ = writeln!(
            s,
            "latency (ms):                          count      p50      p90      p99    p99.9      max"
        );
        for (k, l) in &self.latency {
            let _ = writeln!(
                s,
                "  {k:<34} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "server: rss before {} KiB, loaded {} KiB, after {} KiB, peak {} KiB; {}; cpu {} ms ({} cores)",
                sv.before.map_or(0, |x| x.rss_kib),
                sv.loaded.map_or(0, |x| x.rss_kib),
                sv.after.map_or(0, |x| x.rss_kib),
                sv.peak_rss_kib,
                sv.rss_bytes_per_socket
                    .map_or("-".into(), |b| format!("{b:.0} B/socket")),
                sv.cpu_ms.unwrap_or(0),
                sv.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
            );
        }
        let _ = writeln!(
            s,
            "tool: rss {} KiB{}",
            self.tool_rss_kib,
            self.tool_rss_bytes_per_socket
                .map_or(String::new(), |b| format!(", {b:.0} B/socket"))
        );
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors:");
            for (k, v) in &self.errors {
                let _ = writeln!(s, "  {k:<36} {v}");
            }
        }
        let c = &self.completeness;
        let _ = writeln!(
            s,
            "completeness: {} — expected {}, delivered {}, lost {}, duplicates {}, kitchen seq gaps {}, \
             excess {}, misrouted {}, unmatched {}, snapshot fallbacks {}, from failed requests {}",
            if self.completeness_ok { "OK" } else { "FAILED" },
            c.expected,
            c.delivered,
            c.lost,
            c.duplicates,
            c.gaps,
            c.excess,
            c.misrouted,
            c.unmatched,
            c.snapshot_fallbacks,
            c.from_failed_requests
        );
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut a = new_hist();
        for v in 1..=1000u64 {
            a.saturating_record(v * 10);
        }
        let b = decode_hist(&encode_hist(&a).expect("encodes")).expect("decodes");
        assert_eq!(a.len(), b.len());
        assert_eq!(a.value_at_quantile(0.99), b.value_at_quantile(0.99));
    }

    #[test]
    fn worker_reports_merge() {
        let s1 = Stats::default();
        let s2 = Stats::default();
        s1.record_ns("x", 1_000_000);
        s2.record_ns("x", 3_000_000);
        s1.incr("n");
        s2.incr("n");
        s2.error("boom");
        let mut r = Report::default();
        r.merge_workers(&[
            WorkerReport::from_stats(0, &s1),
            WorkerReport::from_stats(1, &s2),
        ]);
        assert_eq!(r.counters["n"], 2);
        assert_eq!(r.errors["boom"], 1);
        assert_eq!(r.latency["x"].count, 2);
        assert!(r.latency["x"].max_ms >= 2.9);
    }
}
