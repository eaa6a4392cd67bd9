//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`. Counters and histograms are
//! recorded where things happen (actors, writers, notifier, limits); gauges that describe state (pool,
//! shards, restaurants) are refreshed at each scrape.
//!
//! Histograms first collect raw samples in lock-free buckets, which only the recorder's upkeep folds into
//! their fixed Prometheus buckets. A scrape runs it, but a server nobody scrapes must not keep every
//! sample: [`spawn_upkeep`] runs it on a timer (before it did, the fault suite's soak saw RSS climb
//! ~110 bytes per order, unscraped).

use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;

use crate::context::AppContext;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder's upkeep folds histogram samples into buckets (the exporter's own default).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Upkeep rounds completed so far, for whoever must know that one has run.
static UPKEEPS: OnceLock<watch::Sender<u64>> = OnceLock::new();

fn upkeeps_sender() -> &'static watch::Sender<u64> {
    UPKEEPS.get_or_init(|| watch::channel(0).0)
}

/// Watches the number of upkeep rounds completed.
pub fn upkeeps() -> watch::Receiver<u64> {
    upkeeps_sender().subscribe()
}

/// Runs the recorder's upkeep every `every` on the current runtime, for as long as it lives: histogram
/// samples recorded between scrapes are folded into their buckets instead of piling up.
pub fn spawn_upkeep(every: Duration) -> tokio::task::JoinHandle<()> {
    let handle = handle();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            handle.run_upkeep();
            upkeeps_sender().send_modify(|n| *n += 1);
        }
    })
}

/// Seconds buckets for latencies, from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Ops per commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// The recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("s2o_commit_batch_size".into()),
                    BATCH_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was installed already; /metrics shows this one's series only"
            );
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("s2o_sockets", "Open sockets by kind (kitchen, table).");
    describe_counter!("s2o_socket_connects_total", "Sockets opened, by kind.");
    describe_counter!("s2o_socket_disconnects_total", "Sockets closed, by kind.");
    describe_counter!(
        "s2o_socket_closes_total",
        "Sockets closed by the server, by close code."
    );
    describe_counter!("s2o_orders_placed_total", "Orders committed.");
    describe_counter!(
        "s2o_orders_refused_total",
        "Orders refused, by reason (protocol error code)."
    );
    describe_counter!(
        "s2o_status_changes_total",
        "Order status changes committed, by new status."
    );
    describe_histogram!(
        "s2o_commit_batch_size",
        "Writes per group-commit transaction."
    );
    describe_histogram!(
        "s2o_commit_seconds",
        Unit::Seconds,
        "Time to commit one batch."
    );
    describe_histogram!(
        "s2o_order_delivery_seconds",
        Unit::Seconds,
        "From an order reaching its restaurant to its event being queued to the kitchen sockets."
    );
    describe_gauge!("s2o_outbox_backlog", "Guest messages waiting to be sent.");
    describe_counter!(
        "s2o_whatsapp_sends_total",
        "WhatsApp sends by kind and result."
    );
    describe_counter!(
        "s2o_rate_limited_total",
        "Requests refused by a rate limit, by tier."
    );
    describe_gauge!(
        "s2o_shard_mailbox_depth",
        "Requests waiting for or handled by a shard's restaurants."
    );
    describe_gauge!(
        "s2o_shard_writer_queue",
        "Writes queued behind a shard writer's transaction."
    );
    describe_gauge!("s2o_shard_restaurants", "Active restaurants per shard.");
    describe_gauge!(
        "s2o_db_pool_connections",
        "Database pool connections by state (in_use, idle)."
    );
    describe_gauge!(
        "s2o_db_pool_waits",
        "Pool checkouts that had to wait, since start."
    );
    describe_gauge!(
        "s2o_restaurant_restarts",
        "Restaurant actors restarted after dying, since start."
    );
    describe_gauge!(
        "s2o_restaurant_passivations",
        "Restaurant actors passivated for idleness, since start."
    );
    describe_gauge!("s2o_rate_limiter_keys", "Keys held by the rate limiters.");
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}

async fn scrape(ctx: web::Data<AppContext>) -> HttpResponse {
    let handle = handle();
    let state = ctx.pool.state();
    let in_use = state.connections.saturating_sub(state.idle_connections);
    metrics::gauge!("s2o_db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!("s2o_db_pool_connections", "state" => "idle")
        .set(f64::from(state.idle_connections));
    metrics::gauge!("s2o_db_pool_waits").set(state.statistics.get_waited as f64);
    for s in ctx.engine.shard_gauges() {
        let shard = s.shard.to_string();
        metrics::gauge!("s2o_shard_mailbox_depth", "shard" => shard.clone())
            .set(s.mailbox_depth as f64);
        metrics::gauge!("s2o_shard_writer_queue", "shard" => shard.clone())
            .set(s.writer_queue as f64);
        metrics::gauge!("s2o_shard_restaurants", "shard" => shard).set(s.restaurants as f64);
    }
    metrics::gauge!("s2o_restaurant_restarts").set(ctx.engine.restarts() as f64);
    metrics::gauge!("s2o_restaurant_passivations").set(ctx.engine.passivations() as f64);
    metrics::gauge!("s2o_rate_limiter_keys").set(ctx.limits.keys() as f64);
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

#[cfg(test)]
mod tests {
    //! Keeps ops/grafana/scan2order.json and ops/prometheus/alerts.yml honest: every `s2o_*` series they
    //! query must be one that `describe()` above declares.

    use std::collections::{BTreeMap, BTreeSet};

    const SOURCE: &str = include_str!("metrics.rs");
    const DASHBOARD: &str = include_str!("../ops/grafana/scan2order.json");
    const ALERTS: &str = include_str!("../ops/prometheus/alerts.yml");

    /// The body of `fn describe()` (never this test module, which quotes names of its own).
    fn describe_body() -> &'static str {
        let start = SOURCE
            .find("fn describe() {")
            .expect("src/metrics.rs has fn describe()");
        let len = SOURCE[start..]
            .find("\n}\n")
            .expect("fn describe() ends with a closing brace at column 0");
        &SOURCE[start..start + len]
    }

    /// Series declared in `describe()`, with their macro kind (`counter`, `gauge`, `histogram`).
    fn described() -> BTreeMap<String, &'static str> {
        let mut out = BTreeMap::new();
        for (i, chunk) in describe_body().split("describe_").enumerate() {
            if i == 0 {
                continue;
            }
            let Some((kind, rest)) = chunk.split_once("!(") else {
                continue;
            };
            let kind = match kind {
                "counter" => "counter",
                "gauge" => "gauge",
                "histogram" => "histogram",
                _ => continue,
            };
            let rest = rest.trim_start();
            let name = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(name, _)| name)
                .expect("a describe_*! call starts with a quoted series name");
            out.insert(name.to_string(), kind);
        }
        out
    }

    /// Every `s2o_[a-z_]+` token in `text` (not preceded by an identifier character).
    fn series_names(text: &str) -> BTreeSet<String> {
        let bytes = text.as_bytes();
        let mut out = BTreeSet::new();
        let mut from = 0;
        while let Some(at) = text[from..].find("s2o_") {
            let start = from + at;
            let mut end = start + "s2o_".len();
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
                end += 1;
            }
            let glued =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            if !glued && end > start + "s2o_".len() {
                out.insert(text[start..end].to_string());
            }
            from = end;
        }
        out
    }

    /// The described series a queried name refers to: histogram series lose `_bucket`/`_sum`/`_count`.
    fn resolve(name: &str, described: &BTreeMap<String, &'static str>) -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if described.get(base) == Some(&"histogram") {
                    return base.to_string();
                }
            }
        }
        name.to_string()
    }

    /// Names used in `names` that `describe()` does not declare (checked as `"name"` in its body too).
    fn undescribed(names: &BTreeSet<String>) -> Vec<String> {
        let described = described();
        let body = describe_body();
        names
            .iter()
            .map(|n| resolve(n, &described))
            .filter(|n| !described.contains_key(n) || !body.contains(&format!("\"{n}\"")))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Every string under an `expr` key, plus variable queries (`query`/`definition` under templating).
    fn collect_exprs(v: &serde_json::Value, in_templating: bool, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let queried =
                        k == "expr" || (in_templating && (k == "query" || k == "definition"));
                    match child {
                        serde_json::Value::String(s) if queried => out.push(s.clone()),
                        _ => collect_exprs(child, in_templating || k == "templating", out),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    collect_exprs(item, in_templating, out);
                }
            }
            _ => {}
        }
    }

    fn dashboard() -> serde_json::Value {
        serde_json::from_str(DASHBOARD).expect("ops/grafana/scan2order.json is valid JSON")
    }

    #[test]
    fn checker_knows_the_described_series_and_rejects_others() {
        let described = described();
        assert!(
            described.len() >= 20,
            "found only {described:?} in describe()"
        );
        assert_eq!(described.get("s2o_commit_seconds"), Some(&"histogram"));
        assert_eq!(described.get("s2o_orders_placed_total"), Some(&"counter"));
        let names = series_names(
            "rate(s2o_commit_seconds_bucket[5m]) + s2o_orders_placed_total + s2o_not_a_series \
             + s2o_orders_placed_total_bucket + xs2o_ignored",
        );
        assert_eq!(
            undescribed(&names),
            vec!["s2o_not_a_series", "s2o_orders_placed_total_bucket"],
            "only histograms lose _bucket/_sum/_count"
        );
    }

    #[test]
    fn dashboard_queries_only_described_series() {
        let mut exprs = Vec::new();
        collect_exprs(&dashboard(), false, &mut exprs);
        let names: BTreeSet<String> = exprs.iter().flat_map(|e| series_names(e)).collect();
        assert!(
            names.len() >= 15,
            "the dashboard queries too few series: {names:?}"
        );
        let missing = undescribed(&names);
        assert!(
            missing.is_empty(),
            "ops/grafana/scan2order.json queries series that src/metrics.rs does not describe: {missing:?}"
        );
    }

    #[test]
    fn alert_rules_query_only_described_series() {
        let exprs: Vec<&str> = ALERTS
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("expr:"))
            .collect();
        assert!(
            exprs.len() >= 6,
            "expected at least 6 single-line `expr:` rules, found {exprs:?}"
        );
        // Every s2o_ name anywhere in the file, comments and annotations included, must be real too.
        let names = series_names(ALERTS);
        assert!(
            names.len() >= 6,
            "the alert rules query too few series: {names:?}"
        );
        let missing = undescribed(&names);
        assert!(
            missing.is_empty(),
            "ops/prometheus/alerts.yml queries series that src/metrics.rs does not describe: {missing:?}"
        );
    }

    #[test]
    fn dashboard_has_the_variables_and_rows_operators_expect() {
        let d = dashboard();
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let var = |name: &str| {
            vars.iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("no `{name}` template variable"))
        };
        assert_eq!(var("datasource")["type"], "datasource");
        assert_eq!(var("datasource")["query"], "prometheus");
        assert_eq!(var("instance")["type"], "query");
        let rows: Vec<&str> = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .filter(|p| p["type"] == "row")
            .filter_map(|p| p["title"].as_str())
            .collect();
        assert_eq!(
            rows,
            [
                "Traffic",
                "Sockets",
                "Persistence",
                "Shards",
                "Guests messaging",
                "Abuse"
            ]
        );
        for p in d["panels"].as_array().expect("panels") {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "panel {}",
                p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                assert!(
                    expr.contains("instance=~\"$instance\""),
                    "panel {} does not filter by $instance: {expr}",
                    p["title"]
                );
            }
        }
    }
}
