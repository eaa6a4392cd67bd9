//! The WhatsApp outage: the fake Cloud API refuses some messages with 400, then answers 500, then holds
//! requests without answering (timeouts), then comes back. Ordering must not notice; the outbox grows and
//! drains; every message is delivered once; 4xx answers are recorded as failed and never retried.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;

use hdrhistogram::Histogram;

use super::check::Verdict;
use super::traffic::Ctx;
use crate::fake_whatsapp::{FakeWhatsApp, Mode};

pub const PHONE_NUMBER_ID: &str = "109876543210";
pub const ACCESS_TOKEN: &str = "chaos-suite-access-token";

/// The server settings that point its notifier at the fake.
pub fn server_env(fake: &FakeWhatsApp) -> Vec<(String, String)> {
    vec![
        ("SCAN2ORDER__WHATSAPP__MODE".into(), "cloud".into()),
        ("SCAN2ORDER__WHATSAPP__API_BASE_URL".into(), fake.base_url()),
        (
            "SCAN2ORDER__WHATSAPP__PHONE_NUMBER_ID".into(),
            PHONE_NUMBER_ID.into(),
        ),
        (
            "SCAN2ORDER__WHATSAPP__ACCESS_TOKEN".into(),
            ACCESS_TOKEN.into(),
        ),
        // The client gives up on a held request after this; the default is 10 s.
        (
            "SCAN2ORDER__WHATSAPP__REQUEST_TIMEOUT_MS".into(),
            "5000".into(),
        ),
    ]
}

#[derive(QueryableByName)]
struct OutboxRow {
    #[diesel(sql_type = Text)]
    phone: String,
    #[diesel(sql_type = Text)]
    template: String,
    #[diesel(sql_type = Text)]
    params: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    sent_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    failed_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

#[derive(QueryableByName)]
struct Pending {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Expected {
    #[diesel(sql_type = BigInt)]
    received: i64,
    #[diesel(sql_type = BigInt)]
    ready: i64,
    #[diesel(sql_type = BigInt)]
    cancelled: i64,
}

async fn pending(conn: &mut AsyncPgConnection) -> anyhow::Result<i64> {
    let r: Vec<Pending> = diesel::sql_query(
        "SELECT count(*) AS n FROM notification_outbox WHERE sent_at IS NULL AND failed_at IS NULL",
    )
    .load(conn)
    .await?;
    Ok(r.into_iter().next().map_or(0, |r| r.n))
}

/// Messages queued before `at` (the database's clock) and not yet sent or failed.
async fn pending_before(conn: &mut AsyncPgConnection, at: &str) -> anyhow::Result<i64> {
    let r: Vec<Pending> = diesel::sql_query(
        "SELECT count(*) AS n FROM notification_outbox \
         WHERE sent_at IS NULL AND failed_at IS NULL AND created_at <= $1::timestamptz",
    )
    .bind::<Text, _>(at)
    .load(conn)
    .await?;
    Ok(r.into_iter().next().map_or(0, |r| r.n))
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Text)]
    now: String,
}

/// Phase lengths of the outage.
pub struct Phases {
    pub reject: Duration,
    pub fail: Duration,
    pub hold: Duration,
    pub drain_limit: Duration,
}

/// Runs the outage while the traffic flows; then waits for the outbox to drain and checks.
pub async fn outage(
    ctx: &Ctx,
    fake: &FakeWhatsApp,
    db_url: &str,
    phases: &Phases,
    figures: &mut serde_json::Map<String, Value>,
    verdicts: &mut Vec<Verdict>,
) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(db_url)
        .await
        .context("connecting to the run's database")?;
    let mut max_pending = 0i64;
    let sample = async |conn: &mut AsyncPgConnection, max: &mut i64| -> anyhow::Result<i64> {
        let p = pending(conn).await?;
        *max = (*max).max(p);
        Ok(p)
    };
    let before = ctx.take_order_latency();
    eprintln!("   WhatsApp answers 400 for {:?}", phases.reject);
    fake.set_mode(Mode::Reject400);
    tokio::time::sleep(phases.reject).await;
    let down_at = Instant::now();
    eprintln!("   WhatsApp answers 500 for {:?}", phases.fail);
    fake.set_mode(Mode::Fail500);
    let end = Instant::now() + phases.fail;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sample(&mut conn, &mut max_pending).await?;
    }
    eprintln!(
        "   WhatsApp holds every request unanswered for {:?}",
        phases.hold
    );
    fake.set_mode(Mode::Timeout);
    let end = Instant::now() + phases.hold;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sample(&mut conn, &mut max_pending).await?;
    }
    let during = fake.stats();
    let during_latency = ctx.take_order_latency();
    fake.set_mode(Mode::Ok);
    let back = Instant::now();
    eprintln!(
        "   WhatsApp back after {:?}; outbox backlog peaked at {max_pending}",
        back - down_at
    );
    figures.insert("outage_ms".into(), ms(back - down_at).into());
    figures.insert("outbox_backlog_peak".into(), max_pending.into());
    let now: Vec<Now> = diesel::sql_query("SELECT now()::text AS now")
        .load(&mut conn)
        .await?;
    let back_db = now.into_iter().next().map(|n| n.now).context("no now()")?;
    // The traffic goes on (new messages go out at once); wait for the backlog of the outage to drain.
    let mut drained = None;
    let deadline = back + phases.drain_limit;
    while Instant::now() < deadline {
        let p = pending_before(&mut conn, &back_db).await?;
        if p == 0 {
            drained = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    figures.insert(
        "outbox_drained_after_api_back_ms".into(),
        drained.map(ms).into(),
    );
    verdicts.push(Verdict::new(
        "the outbox grows during the outage and drains after it",
        max_pending > 0 && drained.is_some(),
        format!(
            "peak backlog {max_pending}; drained {} after the API came back",
            drained.map_or("NOT within the limit".into(), |d| format!("{} ms", ms(d)))
        ),
    ));
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    figures.insert(
        "order_p50_p99_ms_before_outage".into(),
        serde_json::json!([p(&before, 0.5), p(&before, 0.99)]),
    );
    figures.insert(
        "order_p50_p99_ms_during_outage".into(),
        serde_json::json!([p(&during_latency, 0.5), p(&during_latency, 0.99)]),
    );
    // Ordering must not notice: the outage may not slow guests beyond the run's own noise.
    verdicts.push(Verdict::new(
        "ordering is unaffected by the outage (order p99 during it within 2x of before, +5 ms)",
        !during_latency.is_empty() && p(&during_latency, 0.99) <= 2.0 * p(&before, 0.99) + 5.0,
        format!(
            "order p99 {:.1} ms before, {:.1} ms during ({} orders)",
            p(&before, 0.99),
            p(&during_latency, 0.99),
            during_latency.len()
        ),
    ));
    let requests_during = during.requests;
    figures.insert("api_requests_during_outage".into(), requests_during.into());
    Ok(())
}

/// After the traffic stopped and every order settled: each message delivered once, failures recorded
/// without retries, every expected message queued.
pub async fn check(
    fake: &FakeWhatsApp,
    db_url: &str,
    drain_limit: Duration,
    figures: &mut serde_json::Map<String, Value>,
    verdicts: &mut Vec<Verdict>,
) -> anyhow::Result<()> {
    let mut conn = AsyncPgConnection::establish(db_url).await?;
    // Messages caused by the last orders and status changes: let them go out.
    let deadline = Instant::now() + drain_limit;
    while pending(&mut conn).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows: Vec<OutboxRow> = diesel::sql_query(
        "SELECT phone, template, params::text AS params, attempts, sent_at::text AS sent_at, \
                failed_at::text AS failed_at, last_error FROM notification_outbox",
    )
    .load(&mut conn)
    .await?;
    let exp: Vec<Expected> = diesel::sql_query(
        "SELECT count(*) AS received, \
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM order_status_history h \
                                 WHERE h.order_id = o.id AND h.status = 'ready')) AS ready, \
                count(*) FILTER (WHERE o.status = 'cancelled') AS cancelled \
         FROM orders o",
    )
    .load(&mut conn)
    .await?;
    let exp = exp.into_iter().next().context("no counts")?;
    let stats = fake.stats();
    let key = |to: &str, template: &str, params: &[String]| {
        format!("{to}|{template}|{}", params.join("|"))
    };
    let mut delivered: HashMap<String, u64> = HashMap::new();
    for d in &stats.delivered {
        *delivered
            .entry(key(&d.to, &d.template, &d.params))
            .or_default() += 1;
    }
    let (mut sent, mut failed, mut pending_rows, mut not_delivered, mut failed_retried) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut by_template: HashMap<String, i64> = HashMap::new();
    let mut max_attempts = 0;
    let mut detail = Vec::new();
    for r in &rows {
        *by_template.entry(r.template.clone()).or_default() += 1;
        max_attempts = max_attempts.max(r.attempts);
        let params: Vec<String> = serde_json::from_str::<Vec<Value>>(&r.params)
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect();
        // The outbox names the kind of message; the API sees the configured template (the defaults).
        let template = format!("scan2order_{}", r.template);
        let k = key(r.phone.trim_start_matches('+'), &template, &params);
        if r.sent_at.is_some() {
            sent += 1;
            if delivered.get(&k).copied().unwrap_or(0) != 1 {
                not_delivered += 1;
                if detail.len() < 5 {
                    detail.push(format!(
                        "{k}: sent, delivered {:?} times",
                        delivered.get(&k)
                    ));
                }
            }
        } else if r.failed_at.is_some() {
            failed += 1;
            if r.attempts != 1 {
                failed_retried += 1;
            }
            if detail.len() < 5 && !r.last_error.as_deref().unwrap_or("").contains("400") {
                detail.push(format!("failed for {:?}", r.last_error));
            }
        } else {
            pending_rows += 1;
        }
    }
    let count = |t: &str| by_template.get(t).copied().unwrap_or(0);
    let received = count("order_received");
    let ready = count("order_ready");
    let cancelled = count("order_cancelled");
    figures.insert("outbox_rows".into(), rows.len().into());
    figures.insert("outbox_sent".into(), sent.into());
    figures.insert("outbox_failed_4xx".into(), failed.into());
    figures.insert("outbox_max_attempts".into(), max_attempts.into());
    figures.insert("api_requests".into(), stats.requests.into());
    figures.insert("api_answered_400".into(), stats.answered_400.into());
    figures.insert("api_answered_500".into(), stats.answered_500.into());
    figures.insert("api_held_until_timeout".into(), stats.timed_out.into());
    figures.insert(
        "api_delivered".into(),
        (stats.delivered.len() as u64).into(),
    );
    verdicts.push(Verdict::new(
        "every order and every ready or cancelled order queued its message, exactly once",
        received == exp.received && ready == exp.ready && cancelled == exp.cancelled,
        format!(
            "received {received}/{}, ready {ready}/{}, cancelled {cancelled}/{} (queued/expected)",
            exp.received, exp.ready, exp.cancelled
        ),
    ));
    verdicts.push(Verdict::new(
        "every message recorded as sent reached the API once; nothing delivered twice",
        not_delivered == 0
            && stats.duplicates == 0
            && stats.delivered.len() as u64 == sent
            && pending_rows == 0,
        format!(
            "{sent} sent, {} delivered, {} duplicates, {not_delivered} mismatched, {pending_rows} still pending{}",
            stats.delivered.len(),
            stats.duplicates,
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", detail.join("; "))
            }
        ),
    ));
    verdicts.push(Verdict::new(
        "4xx answers are recorded as failed after one attempt (no retry storm)",
        failed_retried == 0 && stats.answered_400 == failed,
        format!(
            "{failed} failed, {failed_retried} of them attempted more than once; the API answered 400 {} times",
            stats.answered_400
        ),
    ));
    verdicts.push(Verdict::new(
        "every request to the API kept the Cloud API contract",
        stats.invalid.is_empty(),
        format!(
            "{} invalid{}",
            stats.invalid.len(),
            <[String]>::first(&stats.invalid).map_or(String::new(), |i| format!(": {i}"))
        ),
    ));
    Ok(())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
