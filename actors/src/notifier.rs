//! # NotifierActor — one per process
//!
//! Owns the sending side of the notification outbox. Persistence writers insert outbox rows in the same
//! transaction as the order or status change that causes them and wake it; it claims due rows (a lease, so
//! several notifiers never send one row at the same time), sends them through a [`MessageSender`] (the
//! WhatsApp Cloud API client, or the development log), and records the result: sent, retried later with
//! exponential backoff (429, 5xx, timeouts), or failed without retry (other 4xx). Delivery is at-least-once;
//! each message has a unique dedup key, so a change never queues the same message twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use scan2order_schema::models::OutboxRow;
use scan2order_schema::DbPool;
use tokio::sync::Notify;

/// Rows claimed per round.
pub const CLAIM_BATCH: i64 = 64;
/// Least time between the starts of two rounds while messages keep coming. Every commit that wrote
/// outbox rows wakes the notifier; without a gap, a busy restaurant's hundreds of commits per second
/// became as many claim-and-record rounds (each a commit of its own) of one or two rows. With it, a
/// round takes what accumulated, and a message waits at most this much longer.
pub const ROUND_GAP: Duration = Duration::from_millis(25);
/// Messages in flight to the API at once.
pub const SEND_CONCURRENCY: usize = 16;
/// How long a claim lasts before another notifier may take the row.
pub const CLAIM_LEASE: Duration = Duration::from_secs(120);
/// Backoff bounds for retried messages.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often the outbox backlog gauge is refreshed.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// While the API fails (5xx, 429, timeouts), one message is sent per round, at most this often, as a
/// probe: the rest of the backlog waits instead of hammering a failing API (and writing a retry row
/// per message and attempt, which slowed ordering by 3x in the fault suite's outage). The first probe
/// that goes through makes the whole backlog due at once.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// After this many attempts a message is recorded as failed.
pub const MAX_ATTEMPTS: i32 = 25;

/// What kind of guest message an outbox row holds; mapped to a template name at send time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    OrderReceived,
    OrderReady,
    OrderCancelled,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::OrderReceived => "order_received",
            MessageKind::OrderReady => "order_ready",
            MessageKind::OrderCancelled => "order_cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<MessageKind> {
        match s {
            "order_received" => Some(MessageKind::OrderReceived),
            "order_ready" => Some(MessageKind::OrderReady),
            "order_cancelled" => Some(MessageKind::OrderCancelled),
            _ => None,
        }
    }
}

/// A template message to one phone.
#[derive(Clone, PartialEq, Eq)]
pub struct TemplateMessage {
    /// E.164 digits without `+`.
    pub to: String,
    pub template: String,
    pub body_params: Vec<String>,
    /// The one-time code for the copy-code button of authentication templates.
    pub code_button: Option<String>,
}

impl std::fmt::Debug for TemplateMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print parameters: an OTP message carries the code.
        f.debug_struct("TemplateMessage")
            .field("to", &scan2order_schema::domain::mask_phone(&self.to))
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

/// How a send went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Sent,
    /// Try again later (429, 5xx, network); `after` is the server's `Retry-After` when it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The API refused the message (4xx other than 429); never retried.
    Failed(String),
}

impl SendOutcome {
    /// The `result` label of `s2o_whatsapp_sends_total`.
    pub fn label(&self) -> &'static str {
        match self {
            SendOutcome::Sent => "sent",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Failed(_) => "failed",
        }
    }
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// Delivers template messages: the WhatsApp Cloud API client or the development logger.
pub trait MessageSender: Send + Sync + 'static {
    fn send<'a>(&'a self, msg: &'a TemplateMessage) -> SendFuture<'a>;
}

/// Template names per kind of guest message.
#[derive(Clone, Debug)]
pub struct Templates {
    pub order_received: String,
    pub order_ready: String,
    pub order_cancelled: String,
}

impl Templates {
    fn name(&self, kind: MessageKind) -> &str {
        match kind {
            MessageKind::OrderReceived => &self.order_received,
            MessageKind::OrderReady => &self.order_ready,
            MessageKind::OrderCancelled => &self.order_cancelled,
        }
    }
}

pub struct NotifierActor {
    pool: DbPool,
    sender: Arc<dyn MessageSender>,
    templates: Templates,
    wake: Arc<Notify>,
    poll_every: Duration,
}

impl NotifierActor {
    pub fn new(
        pool: DbPool,
        sender: Arc<dyn MessageSender>,
        templates: Templates,
        wake: Arc<Notify>,
        poll_every: Duration,
    ) -> Self {
        NotifierActor {
            pool,
            sender,
            templates,
            wake,
            poll_every,
        }
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let pool = self.pool.clone();
        let sender = self.sender.clone();
        let templates = self.templates.clone();
        let wake = self.wake.clone();
        let poll_every = self.poll_every;
        ctx.spawn(actix::fut::wrap_future(async move {
            let mut measured = std::time::Instant::now() - BACKLOG_EVERY;
            let mut api_trouble = false;
            loop {
                if measured.elapsed() >= BACKLOG_EVERY {
                    measured = std::time::Instant::now();
                    if let Ok(mut conn) = pool.get().await {
                        if let Ok(backlog) = OutboxRow::backlog(&mut conn).await {
                            metrics::gauge!("s2o_outbox_backlog").set(backlog as f64);
                        }
                    }
                }
                let round = std::time::Instant::now();
                let claimed =
                    match drain_once(&pool, sender.as_ref(), &templates, &mut api_trouble).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox round failed");
                            0
                        }
                    };
                if api_trouble {
                    tokio::time::sleep_until((round + PROBE_EVERY).into()).await;
                } else if claimed < CLAIM_BATCH as usize {
                    let _ = tokio::time::timeout(poll_every, wake.notified()).await;
                    if claimed > 0 {
                        tokio::time::sleep_until((round + ROUND_GAP).into()).await;
                    }
                }
            }
        }));
    }
}

/// Exponential backoff with ±25% jitter.
pub fn backoff(attempts: i32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempts.clamp(0, 16) as u32);
    let capped = exp.min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    capped.mul_f64(jitter)
}

/// One round: claim due messages, send them, record the outcomes. `api_trouble` remembers across rounds
/// that the API asked for retries (5xx, 429, timeouts); the first round after that in which messages
/// go out and none is put back makes everything waiting out a backoff due at once, so an outage's
/// backlog drains as soon as the API answers instead of minutes later.
async fn drain_once(
    pool: &DbPool,
    sender: &dyn MessageSender,
    templates: &Templates,
    api_trouble: &mut bool,
) -> Result<usize, String> {
    let rows = {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        let now = Utc::now();
        let lease = now + chrono::Duration::from_std(CLAIM_LEASE).unwrap_or_default();
        let limit = if *api_trouble { 1 } else { CLAIM_BATCH };
        OutboxRow::claim_due(&mut conn, now, lease, limit)
            .await
            .map_err(|e| e.to_string())?
    };
    let n = rows.len();
    if n == 0 {
        return Ok(0);
    }
    let results: Vec<(OutboxRow, SendOutcome)> = stream::iter(rows)
        .map(|row| async move {
            let outcome = match build_message(&row, templates) {
                Some(msg) => sender.send(&msg).await,
                None => SendOutcome::Failed(format!("unknown message kind {}", row.template)),
            };
            (row, outcome)
        })
        .buffer_unordered(SEND_CONCURRENCY)
        .collect()
        .await;
    let mut conn = pool.get().await.map_err(|e| e.to_string())?;
    // Sent rows are recorded with one statement per round: one commit instead of one per message
    // (under load the per-message commits were as many as the orders' own). A crash before it commits
    // sends those messages again, which at-least-once delivery allows.
    let mut sent = Vec::new();
    let mut retried = false;
    for (row, outcome) in results {
        metrics::counter!("s2o_whatsapp_sends_total", "kind" => "order", "result" => outcome.label())
            .increment(1);
        let now = Utc::now();
        let r = match outcome {
            SendOutcome::Sent => {
                sent.push(row.id);
                Ok(())
            }
            SendOutcome::Failed(reason) => {
                tracing::warn!(outbox_id = row.id, kind = %row.template, %reason, "message refused by the API");
                OutboxRow::mark_failed(&mut conn, row.id, now, &reason).await
            }
            SendOutcome::Retry { .. } if row.attempts + 1 >= MAX_ATTEMPTS => {
                OutboxRow::mark_failed(&mut conn, row.id, now, "gave up after too many attempts")
                    .await
            }
            SendOutcome::Retry { after, reason } => {
                retried = true;
                let wait = after
                    .unwrap_or_else(|| backoff(row.attempts))
                    .max(Duration::from_millis(100));
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                tracing::info!(outbox_id = row.id, kind = %row.template, %reason, retry_in_ms = wait.as_millis() as u64, "message will be retried");
                OutboxRow::retry_later(&mut conn, row.id, at, &reason).await
            }
        };
        r.map_err(|e| e.to_string())?;
    }
    OutboxRow::mark_sent_many(&mut conn, &sent, Utc::now())
        .await
        .map_err(|e| e.to_string())?;
    if retried {
        *api_trouble = true;
    } else if *api_trouble && !sent.is_empty() {
        *api_trouble = false;
        let due = OutboxRow::retry_waiting_now(&mut conn, Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        if due > 0 {
            tracing::info!(
                messages = due,
                "the WhatsApp API answers again: messages waiting to be retried are due now"
            );
        }
    }
    Ok(n)
}

fn build_message(row: &OutboxRow, templates: &Templates) -> Option<TemplateMessage> {
    let kind = MessageKind::parse(&row.template)?;
    let params: Vec<String> = row
        .params
        .as_array()?
        .iter()
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    Some(TemplateMessage {
        to: row.phone.trim_start_matches('+').to_string(),
        template: templates.name(kind).to_string(),
        body_params: params,
        code_button: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_secs(3));
        assert!(backoff(3) >= Duration::from_secs(12));
        assert!(backoff(30) <= BACKOFF_MAX.mul_f64(1.25));
    }

    #[test]
    fn message_debug_never_shows_parameters() {
        let m = TemplateMessage {
            to: "447700900123".into(),
            template: "otp".into(),
            body_params: vec!["918273".into()],
            code_button: Some("918273".into()),
        };
        let s = format!("{m:?}");
        assert!(!s.contains("918273"), "{s}");
        assert!(!s.contains("7700900"), "{s}");
    }
}
