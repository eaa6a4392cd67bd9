//! # `pg-baseline`: what Postgres alone accepts for the rows of an order
//!
//! The reference for goal 2 ("≥ 50 % of what Postgres alone accepts for the same rows"). No server: W
//! writer tasks on a bb8 pool of `AsyncPgConnection`s (the server's kind of pool) run back-to-back
//! transactions, each shaped like one group-commit batch of the engine's persistence writer in steady
//! state under `orders` load:
//!
//! - B new orders: one multi-row `INSERT … ON CONFLICT (restaurant_id, idempotency_key) DO NOTHING
//!   RETURNING id`, their 1–3 lines, a `placed` history row and an `order_received` outbox row each;
//! - one status step for every order this writer placed in the previous `S` transactions (S = the
//!   number of statuses): one `UPDATE orders … FROM unnest(…)`, a history row each, and an outbox row for
//!   `ready` — so at steady state a transaction carries B inserts and S·B status changes, the mix the
//!   kitchen bot produces;
//! - commit (`synchronous_commit` as the server has it: on).
//!
//! Every combination of `--writers` × `--batch` runs for `--duration` seconds; the best orders/s is the
//! reference. The rows go to a throw-away restaurant `pgbase-<run>` that is deleted afterwards (its
//! orders, lines and history cascade; its outbox rows are deleted by their restaurant name). Run it with
//! the server stopped — a running server's notifier would claim the outbox rows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hdrhistogram::Histogram;
use rand::Rng;
use scan2order_schema::domain::OrderStatus;
use scan2order_schema::models::{
    NewOutbox, NewStatusHistory, OrderItemRow, OrderRow, RestaurantTable,
};
use scan2order_schema::schema::{
    notification_outbox, order_items, order_status_history, orders, restaurant_tables, restaurants,
};
use uuid::Uuid;

use crate::stats::new_hist;

/// Postgres accepts at most 65,535 bound values per statement (the writer chunks the same way).
const MAX_BIND_PARAMS: usize = 65_535;

/// What to run.
pub struct PgBaselineCfg {
    pub database_url: String,
    pub duration_s: f64,
    pub writers: Vec<usize>,
    pub batches: Vec<usize>,
    pub statuses: Vec<OrderStatus>,
    pub pool_size: u32,
}

/// The throw-away restaurant the rows belong to.
struct Fixture {
    restaurant: Uuid,
    name: String,
    tables: Vec<(Uuid, String)>,
    items: Vec<(Uuid, String, i64)>,
}

/// One writer's counts.
#[derive(Default)]
struct Tally {
    orders: u64,
    status_changes: u64,
    rows: u64,
    transactions: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs every combination and returns the report (also printed).
pub async fn run(cfg: PgBaselineCfg) -> anyhow::Result<serde_json::Value> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let fixture = create_fixture(&cfg.database_url, &run_id).await?;
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(cfg.database_url.clone());
    let max_writers = cfg.writers.iter().copied().max().unwrap_or(1);
    let pool = Pool::builder()
        .max_size(cfg.pool_size.max(max_writers as u32))
        .connection_timeout(Duration::from_secs(10))
        .build(manager)
        .await
        .context("building the pool")?;
    let fixture = Arc::new(fixture);
    let ticket = Arc::new(AtomicI32::new(1));
    let mut results = Vec::new();
    let mut outcome: anyhow::Result<()> = Ok(());
    'combos: for &w in &cfg.writers {
        for &b in &cfg.batches {
            match run_combo(&pool, &fixture, &ticket, &run_id, &cfg, w, b).await {
                Ok(r) => {
                    eprintln!(
                        "pg-baseline writers={w:<3} batch={b:<5} orders/s={:>9.0}  status/s={:>9.0}  rows/s={:>9.0}  txn/s={:>7.0}  txn p50={:.1} ms p99={:.1} ms  errors={}",
                        r["orders_per_s"].as_f64().unwrap_or(0.0),
                        r["status_changes_per_s"].as_f64().unwrap_or(0.0),
                        r["rows_per_s"].as_f64().unwrap_or(0.0),
                        r["transactions_per_s"].as_f64().unwrap_or(0.0),
                        r["txn_ms"]["p50"].as_f64().unwrap_or(0.0),
                        r["txn_ms"]["p99"].as_f64().unwrap_or(0.0),
                        r["errors"].as_u64().unwrap_or(0),
                    );
                    results.push(r);
                }
                Err(e) => {
                    outcome = Err(e);
                    break 'combos;
                }
            }
        }
    }
    drop(pool);
    let cleaned = remove_fixture(&cfg.database_url, &fixture).await;
    outcome?;
    cleaned?;
    let best = results
        .iter()
        .max_by(|a, b| {
            let f = |v: &serde_json::Value| v["orders_per_s"].as_f64().unwrap_or(0.0);
            f(a).total_cmp(&f(b))
        })
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    eprintln!(
        "pg-baseline best: {:.0} orders/s ({:.0} rows/s) at writers={} batch={}",
        best["orders_per_s"].as_f64().unwrap_or(0.0),
        best["rows_per_s"].as_f64().unwrap_or(0.0),
        best["writers"],
        best["batch"],
    );
    Ok(serde_json::json!({
        "scenario": "pg-baseline",
        "run_id": run_id,
        "statuses": cfg.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "duration_s": cfg.duration_s,
        "pool_size": cfg.pool_size,
        "results": results,
        "best": best,
    }))
}

async fn run_combo(
    pool: &Pool<AsyncPgConnection>,
    fixture: &Arc<Fixture>,
    ticket: &Arc<AtomicI32>,
    run_id: &str,
    cfg: &PgBaselineCfg,
    writers: usize,
    batch: usize,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.duration_s);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let (pool, fixture, ticket) = (pool.clone(), fixture.clone(), ticket.clone());
        let statuses = cfg.statuses.clone();
        let prefix = format!("pgbase-{run_id}-{writers}-{batch}-{w}");
        tasks.push(tokio::spawn(async move {
            writer(pool, fixture, ticket, statuses, prefix, batch, deadline).await
        }));
    }
    let mut total = Tally::default();
    let mut hist = new_hist();
    for t in tasks {
        let (tally, h) = t.await.context("writer task")?;
        total.orders += tally.orders;
        total.status_changes += tally.status_changes;
        total.rows += tally.rows;
        total.transactions += tally.transactions;
        total.errors += tally.errors;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
        let _ = hist.add(&h);
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if total.transactions == 0 {
        anyhow::bail!(
            "no transaction committed: {}",
            total.first_error.unwrap_or_default()
        );
    }
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    Ok(serde_json::json!({
        "writers": writers,
        "batch": batch,
        "seconds": secs,
        "orders": total.orders,
        "orders_per_s": total.orders as f64 / secs,
        "status_changes_per_s": total.status_changes as f64 / secs,
        "writes_per_s": (total.orders + total.status_changes) as f64 / secs,
        "rows_per_s": total.rows as f64 / secs,
        "transactions_per_s": total.transactions as f64 / secs,
        "txn_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": hist.max() as f64 / 1000.0},
        "errors": total.errors,
        "first_error": total.first_error,
    }))
}

/// A status step waiting for the next transaction: the order and the index of its next status.
type Step = (Uuid, String, i32, usize);

async fn writer(
    pool: Pool<AsyncPgConnection>,
    fixture: Arc<Fixture>,
    ticket: Arc<AtomicI32>,
    statuses: Vec<OrderStatus>,
    prefix: String,
    batch: usize,
    deadline: Instant,
) -> (Tally, Histogram<u64>) {
    let mut tally = Tally::default();
    let mut hist = new_hist();
    let mut pending: VecDeque<Step> = VecDeque::new();
    let mut n: u64 = 0;
    let today = Utc::now().date_naive();
    while Instant::now() < deadline {
        let now = Utc::now();
        let mut bundle = Bundle::default();
        {
            let mut rng = rand::rng();
            for _ in 0..batch {
                n += 1;
                let (table_id, table_label) =
                    &fixture.tables[rng.random_range(0..fixture.tables.len())];
                let id = Uuid::now_v7();
                let lines = rng.random_range(1..=3usize);
                let start = rng.random_range(0..fixture.items.len());
                let mut total = 0;
                for l in 0..lines {
                    let (item, name, price) = &fixture.items[(start + l) % fixture.items.len()];
                    let quantity = rng.random_range(1..=3);
                    total += price * i64::from(quantity);
                    bundle.items.push(OrderItemRow {
                        order_id: id,
                        line_no: l as i32 + 1,
                        menu_item_id: *item,
                        name: name.clone(),
                        unit_price_cents: *price,
                        quantity,
                        note: String::new(),
                        options: Default::default(),
                    });
                }
                let ticket_no = ticket.fetch_add(1, Ordering::Relaxed);
                let phone = format!("+9990{:010}", n % 20_000);
                bundle.orders.push(OrderRow {
                    id,
                    restaurant_id: fixture.restaurant,
                    table_id: *table_id,
                    table_label: table_label.clone(),
                    ticket_no,
                    business_day: today,
                    phone: phone.clone(),
                    status: OrderStatus::Placed,
                    note: format!("lt:{n}"),
                    total_cents: total,
                    currency: "EUR".into(),
                    idempotency_key: format!("{prefix}-{n}"),
                    created_at: now,
                    updated_at: now,
                    allergies: Vec::new(),
                    allergy_ack_by: None,
                    allergy_ack_at: None,
                });
                bundle.history.push(NewStatusHistory {
                    order_id: id,
                    status: OrderStatus::Placed,
                    changed_at: now,
                    changed_by: None,
                    request_id: None,
                    allergy_ack: false,
                });
                bundle
                    .outbox
                    .push(outbox(&fixture, id, &phone, ticket_no, "order_received"));
                if !statuses.is_empty() {
                    pending.push_back((id, phone, ticket_no, 0));
                }
            }
        }
        // One step for every order placed in an earlier transaction (not the ones just built).
        let due = pending.len() - bundle.orders.len().min(pending.len());
        let mut again = Vec::new();
        for (id, phone, ticket_no, step) in pending.drain(..due) {
            let status = statuses[step];
            bundle.updates.push((id, status.as_str(), now));
            bundle.history.push(NewStatusHistory {
                order_id: id,
                status,
                changed_at: now,
                changed_by: None,
                request_id: None,
                allergy_ack: false,
            });
            if status == OrderStatus::Ready {
                bundle
                    .outbox
                    .push(outbox(&fixture, id, &phone, ticket_no, "order_ready"));
            }
            if step + 1 < statuses.len() {
                again.push((id, phone, ticket_no, step + 1));
            }
        }
        // Keep the pipeline's order: steps already taken go before this batch's new orders.
        let fresh: Vec<Step> = pending.drain(..).collect();
        pending.extend(again);
        pending.extend(fresh);
        let rows = bundle.rows();
        let began = Instant::now();
        match write(&pool, &bundle).await {
            Ok(()) => {
                let _ = hist.record(began.elapsed().as_micros() as u64);
                tally.transactions += 1;
                tally.orders += bundle.orders.len() as u64;
                tally.status_changes += bundle.updates.len() as u64;
                tally.rows += rows;
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                if tally.errors > 100 {
                    break;
                }
            }
        }
    }
    (tally, hist)
}

fn outbox(fixture: &Fixture, id: Uuid, phone: &str, ticket_no: i32, kind: &str) -> NewOutbox {
    NewOutbox {
        dedup_key: format!("order:{id}:{kind}"),
        phone: phone.to_string(),
        template: kind.to_string(),
        params: serde_json::json!([fixture.name, ticket_no.to_string()]),
    }
}

#[derive(Default)]
struct Bundle {
    orders: Vec<OrderRow>,
    items: Vec<OrderItemRow>,
    updates: Vec<(Uuid, &'static str, DateTime<Utc>)>,
    history: Vec<NewStatusHistory>,
    outbox: Vec<NewOutbox>,
}

impl Bundle {
    /// Rows written: inserted plus updated.
    fn rows(&self) -> u64 {
        (self.orders.len()
            + self.items.len()
            + self.updates.len()
            + self.history.len()
            + self.outbox.len()) as u64
    }
}

#[derive(QueryableByName)]
struct Updated {
    #[diesel(sql_type = SqlUuid)]
    #[allow(dead_code)]
    id: Uuid,
}

/// One transaction with the statements the engine's writer runs for such a batch.
async fn write(pool: &Pool<AsyncPgConnection>, b: &Bundle) -> anyhow::Result<()> {
    let mut conn = pool.get().await.context("pool")?;
    conn.transaction(async |c| {
        for chunk in b.orders.chunks(MAX_BIND_PARAMS / 17) {
            let _ids: Vec<Uuid> = diesel::insert_into(orders::table)
                .values(chunk)
                .on_conflict((orders::restaurant_id, orders::idempotency_key))
                .do_nothing()
                .returning(orders::id)
                .get_results(c)
                .await?;
        }
        for chunk in b.items.chunks(MAX_BIND_PARAMS / 8) {
            diesel::insert_into(order_items::table)
                .values(chunk)
                .execute(c)
                .await?;
        }
        if !b.updates.is_empty() {
            let ids: Vec<Uuid> = b.updates.iter().map(|u| u.0).collect();
            let statuses: Vec<String> = b.updates.iter().map(|u| u.1.to_string()).collect();
            let ats: Vec<DateTime<Utc>> = b.updates.iter().map(|u| u.2).collect();
            let _: Vec<Updated> = diesel::sql_query(scan2order_schema::models::SET_STATUSES_SQL)
                .bind::<Array<SqlUuid>, _>(ids)
                .bind::<Array<Text>, _>(statuses)
                .bind::<Array<Timestamptz>, _>(ats)
                .load(c)
                .await?;
        }
        for chunk in b.history.chunks(MAX_BIND_PARAMS / 7) {
            diesel::insert_into(order_status_history::table)
                .values(chunk)
                .execute(c)
                .await?;
        }
        for chunk in b.outbox.chunks(MAX_BIND_PARAMS / 4) {
            diesel::insert_into(notification_outbox::table)
                .values(chunk)
                .on_conflict(notification_outbox::dedup_key)
                .do_nothing()
                .execute(c)
                .await?;
        }
        Ok::<(), diesel::result::Error>(())
    })
    .await?;
    Ok(())
}

async fn create_fixture(url: &str, run_id: &str) -> anyhow::Result<Fixture> {
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .context("connecting to --database-url")?;
    let now = Utc::now();
    let name = format!("pg-baseline {run_id}");
    let (r, items) =
        crate::setup::insert_restaurant(&mut conn, &format!("pgbase-{run_id}"), &name, "reference")
            .await?;
    let tables: Vec<RestaurantTable> = (0..10)
        .map(|i| RestaurantTable {
            id: Uuid::now_v7(),
            restaurant_id: r.id,
            label: format!("P{i}"),
            token: format!("pgbase-{run_id}-{i}"),
            active: true,
            deleted_at: None,
            created_at: now,
        })
        .collect();
    diesel::insert_into(restaurant_tables::table)
        .values(&tables)
        .execute(&mut conn)
        .await?;
    Ok(Fixture {
        restaurant: r.id,
        name,
        tables: tables.into_iter().map(|t| (t.id, t.label)).collect(),
        items: items
            .into_iter()
            .map(|i| (i.id, i.name, i.price_cents))
            .collect(),
    })
}

/// Deletes the restaurant (orders, lines and history cascade) and its outbox rows.
async fn remove_fixture(url: &str, fixture: &Fixture) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(url).await?;
    diesel::sql_query("DELETE FROM notification_outbox WHERE params->>0 = $1")
        .bind::<Text, _>(&fixture.name)
        .execute(&mut conn)
        .await
        .context("deleting the reference's outbox rows")?;
    diesel::delete(restaurants::table.find(fixture.restaurant))
        .execute(&mut conn)
        .await
        .context("deleting the reference restaurant")?;
    Ok(())
}

/// Load runs stay on this machine: the database URL must name a loopback host.
pub fn local_database_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .context("--database-url: expected postgres://…")?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let local = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(local, "--database-url: {host} is not a loopback host");
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_databases_are_accepted() {
        assert!(local_database_url("postgres://postgres@127.0.0.1:5432/s2o").is_ok());
        assert!(local_database_url("postgres://u:p@localhost/s2o").is_ok());
        assert!(local_database_url("postgresql://[::1]:5432/s2o").is_ok());
        assert!(local_database_url("postgres://postgres@10.0.0.5:5432/s2o").is_err());
        assert!(local_database_url("postgres://db.example.com/s2o").is_err());
        assert!(local_database_url("mysql://127.0.0.1/s2o").is_err());
    }
}
