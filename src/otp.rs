//! One-time codes: how a guest proves a phone number. A 6-digit code is stored only as a hash, capped per
//! phone (resend cooldown, per 10 minutes, per day), sent only to WhatsApp (retried a few times in the
//! background), checked in constant time with the attempt taken before the comparison, and exchanged
//! once for a customer session. `routes/guest.rs` maps these outcomes to HTTP.

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::Rng;
use scan2order_actors::notifier::{backoff, MessageSender, SendOutcome, TemplateMessage};
use scan2order_schema::domain::Phone;
use scan2order_schema::models::{CustomerSession, OtpChallenge};
use scan2order_schema::tokens::{new_session_token, token_hash};
use scan2order_schema::DbConn;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::config::{AuthSettings, RateLimitSettings};

/// Tries for sending one code before giving up (the guest can ask again).
const SEND_TRIES: u32 = 3;

fn code_hash(challenge: Uuid, code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(challenge.as_bytes());
    h.update(code.as_bytes());
    h.finalize().to_vec()
}

/// How often one phone may be sent a code: the resend cooldown always, the 10-minute and daily caps
/// when rate limits are on.
fn send_windows(auth: &AuthSettings, caps: &RateLimitSettings) -> Vec<(ChronoDuration, i64)> {
    let mut windows = vec![(ChronoDuration::seconds(auth.otp_resend_after_s), 1)];
    if caps.enabled {
        windows.push((
            ChronoDuration::minutes(10),
            caps.otp_sends_per_phone_10_minutes,
        ));
        windows.push((ChronoDuration::days(1), caps.otp_sends_per_phone_day));
    }
    windows
}

/// Why no code was sent.
pub enum NotSent {
    /// A cap was reached: ask again after this long.
    Wait(ChronoDuration),
    Db(diesel::result::Error),
}

/// Stores a new code for `phone` (hashed, within the caps) and returns it, to be sent with [`deliver`].
pub async fn issue(
    conn: &mut DbConn,
    phone: &Phone,
    auth: &AuthSettings,
    caps: &RateLimitSettings,
) -> Result<String, NotSent> {
    let now = Utc::now();
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let id = Uuid::new_v4();
    let challenge = OtpChallenge {
        id,
        phone: phone.as_str().to_string(),
        code_hash: code_hash(id, &code),
        attempts: 0,
        created_at: now,
        expires_at: now + ChronoDuration::seconds(auth.otp_ttl_s),
        consumed_at: None,
    };
    match challenge
        .insert_capped(conn, &send_windows(auth, caps))
        .await
    {
        Ok(Ok(())) => Ok(code),
        Ok(Err(wait)) => Err(NotSent::Wait(wait)),
        Err(e) => Err(NotSent::Db(e)),
    }
}

/// Sends the code to WhatsApp in the background, retrying what the API says may be retried.
pub fn deliver(sender: Arc<dyn MessageSender>, msg: TemplateMessage) {
    actix_web::rt::spawn(async move {
        for attempt in 0..SEND_TRIES {
            let outcome = sender.send(&msg).await;
            metrics::counter!("s2o_whatsapp_sends_total", "kind" => "otp", "result" => outcome.label())
                .increment(1);
            match outcome {
                SendOutcome::Sent => return,
                SendOutcome::Failed(reason) => {
                    tracing::warn!(to = ?msg, %reason, "one-time code refused by the API");
                    return;
                }
                SendOutcome::Retry { after, reason } => {
                    tracing::info!(%reason, attempt, "one-time code send will be retried");
                    tokio::time::sleep(after.unwrap_or_else(|| backoff(attempt as i32))).await;
                }
            }
        }
        tracing::warn!("one-time code not delivered after retries");
    });
}

/// Why a code was not accepted.
pub enum Refused {
    /// No open code for the phone, a wrong code, or one used meanwhile.
    Invalid,
    Expired,
    TooManyAttempts,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Refused {
    fn from(e: diesel::result::Error) -> Self {
        Refused::Db(e)
    }
}

/// A verified phone's new customer session.
pub struct Verified {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Checks `code` against the phone's latest open code (the attempt is taken before the comparison, so
/// parallel guesses cannot exceed the limit) and, when it matches, uses it up and opens a session.
pub async fn verify(
    conn: &mut DbConn,
    phone: &Phone,
    code: &str,
    auth: &AuthSettings,
) -> Result<Verified, Refused> {
    let now = Utc::now();
    let challenge = OtpChallenge::latest_open(conn, phone.as_str())
        .await?
        .ok_or(Refused::Invalid)?;
    if challenge.expires_at <= now {
        return Err(Refused::Expired);
    }
    if challenge.attempts >= auth.otp_max_attempts {
        return Err(Refused::TooManyAttempts);
    }
    let attempts = OtpChallenge::take_attempt(conn, challenge.id, auth.otp_max_attempts)
        .await?
        .ok_or(Refused::TooManyAttempts)?;
    let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
    let matches =
        well_formed && bool::from(code_hash(challenge.id, code).ct_eq(&challenge.code_hash));
    if !matches {
        return Err(if attempts >= auth.otp_max_attempts {
            Refused::TooManyAttempts
        } else {
            Refused::Invalid
        });
    }
    if !OtpChallenge::consume(conn, challenge.id, now).await? {
        return Err(Refused::Invalid);
    }
    let token = new_session_token();
    let expires_at = now + ChronoDuration::days(auth.customer_session_days);
    CustomerSession {
        token_hash: token_hash(&token),
        phone: phone.as_str().to_string(),
        created_at: now,
        expires_at,
    }
    .insert(conn)
    .await?;
    Ok(Verified { token, expires_at })
}
