//! One-time codes and WhatsApp delivery: the code reaches only the Cloud API, in PROTOCOL.md's request
//! shape; wrong, expired and too frequent codes are refused; tokens last 30 days; the Cloud API's 429
//! and 5xx are retried and its other 4xx are not.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::{json, Value};

use crate::helpers::{
    expect_error, spawn_app, spawn_app_with, WA_ACCESS_TOKEN, WA_PHONE_NUMBER_ID,
};

const PHONE: &str = "+447700900123";
const DIGITS: &str = "447700900123";

/// A six-digit code that is not `code`.
fn wrong(code: &str) -> String {
    let n: u32 = code.parse().expect("digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

#[actix_web::test]
async fn the_code_reaches_only_whatsapp_in_the_authentication_template_shape() {
    let app = spawn_app().await;
    // Spaces and dashes are accepted and normalised away.
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": "+44 7700-900 123"}))
        .await;
    assert_eq!(res.status(), 202);
    let answer = res.text().await.expect("body");
    let body: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(body, json!({"expires_in_s": 600, "resend_after_s": 30}));

    let code = app.wa.code_for(PHONE).await;
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    assert!(!answer.contains(&code), "the code leaked into the answer");
    let sent = app.wa.received();
    assert_eq!(sent.len(), 1);
    let request = &sent[0];
    assert_eq!(request.path, format!("/{WA_PHONE_NUMBER_ID}/messages"));
    assert_eq!(request.authorization, format!("Bearer {WA_ACCESS_TOKEN}"));
    assert_eq!(
        request.body,
        json!({
            "messaging_product": "whatsapp",
            "to": DIGITS,
            "type": "template",
            "template": {
                "name": app.settings.whatsapp.otp_template,
                "language": {"code": app.settings.whatsapp.language},
                "components": [
                    {"type": "body", "parameters": [{"type": "text", "text": code}]},
                    {"type": "button", "sub_type": "url", "index": "0",
                     "parameters": [{"type": "text", "text": code}]}
                ]
            }
        })
    );
    assert!(app.wa.problems().is_empty(), "{:?}", app.wa.problems());
    app.assert_sql(
        "the code is stored only hashed",
        &format!(
            "SELECT count(*) = 1 AND bool_and(position(convert_to('{code}', 'UTF8') IN code_hash) = 0) \
             FROM otp_challenges WHERE phone = '{PHONE}'"
        ),
    )
    .await;

    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": code}))
        .await;
    assert_eq!(res.status(), 200);
    let verified: Value = res.json().await.expect("json");
    assert_eq!(verified["phone"], PHONE);
    // A code works once.
    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": code}))
        .await;
    expect_error(res, 400, "invalid_code").await;
}

#[actix_web::test]
async fn five_wrong_codes_kill_the_code_so_the_right_one_then_gets_too_many_attempts() {
    let app = spawn_app().await;
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": PHONE}))
        .await;
    assert_eq!(res.status(), 202);
    let code = app.wa.code_for(PHONE).await;
    let bad = wrong(&code);
    for _ in 0..4 {
        let res = app
            .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": bad}))
            .await;
        expect_error(res, 400, "invalid_code").await;
    }
    // The fifth wrong try uses the code up.
    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": bad}))
        .await;
    match res.status().as_u16() {
        400 => expect_error(res, 400, "invalid_code").await,
        _ => expect_error(res, 429, "too_many_attempts").await,
    };
    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": code}))
        .await;
    expect_error(res, 429, "too_many_attempts").await;
    app.assert_sql(
        "no session was made",
        "SELECT count(*) = 0 FROM customer_sessions",
    )
    .await;
}

#[actix_web::test]
async fn an_expired_code_is_refused_with_code_expired() {
    let app = spawn_app_with(|s| s.auth.otp_ttl_s = 1).await;
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": PHONE}))
        .await;
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["expires_in_s"], 1);
    let code = app.wa.code_for(PHONE).await;
    app.assert_sql(
        "the code lives otp_ttl_s",
        &format!(
            "SELECT bool_and(expires_at - created_at = interval '1 second') \
             FROM otp_challenges WHERE phone = '{PHONE}'"
        ),
    )
    .await;
    // Let the clock pass the expiry in the database rather than sleeping.
    let mut conn = app.db().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE otp_challenges SET expires_at = now() - interval '1 second' \
             WHERE phone = '{PHONE}'"
        )),
        &mut conn,
    )
    .await
    .expect("update");
    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": code}))
        .await;
    expect_error(res, 410, "code_expired").await;
}

#[actix_web::test]
async fn a_resend_within_the_cooldown_is_rate_limited_with_retry_after() {
    let app = spawn_app().await;
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": PHONE}))
        .await;
    assert_eq!(res.status(), 202);
    app.wa.code_for(PHONE).await;
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": "+44 7700 900123"}))
        .await;
    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    expect_error(res, 429, "rate_limited").await;
    // Another phone is not held back; once its code has arrived, the first phone still has one.
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": "+4915112345678"}))
        .await;
    assert_eq!(res.status(), 202);
    app.wa.code_for("+4915112345678").await;
    assert_eq!(
        app.wa
            .received()
            .iter()
            .filter(|r| r.to() == DIGITS)
            .count(),
        1,
        "the refused resend sent nothing"
    );
}

#[actix_web::test]
async fn a_verified_customer_token_lasts_thirty_days() {
    let app = spawn_app().await;
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": PHONE}))
        .await;
    assert_eq!(res.status(), 202);
    let code = app.wa.code_for(PHONE).await;
    let before = Utc::now();
    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": code}))
        .await;
    assert_eq!(res.status(), 200);
    let after = Utc::now();
    let body: Value = res.json().await.expect("json");
    let token = body["customer_token"].as_str().expect("token").to_string();
    let expires_at: DateTime<Utc> = body["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("RFC 3339");
    assert!(
        expires_at >= before + ChronoDuration::days(30)
            && expires_at <= after + ChronoDuration::days(30),
        "{expires_at}"
    );
    assert!(token.len() >= 32, "an unguessable token");
    app.assert_sql(
        "the session row expires in 30 days and keeps only a hash",
        &format!(
            "SELECT count(*) = 1 AND bool_and(abs(extract(epoch FROM expires_at - '{}'::timestamptz)) < 0.001) \
             AND bool_and(position(convert_to('{token}', 'UTF8') IN token_hash) = 0) \
             FROM customer_sessions WHERE phone = '{PHONE}'",
            expires_at.to_rfc3339()
        ),
    )
    .await;
    let res = app.get("/api/v1/me/orders", Some(&token)).await;
    assert_eq!(res.status(), 200);
    // Expiry is what the database says: moved into the past, the token stops working.
    let mut conn = app.db().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE customer_sessions SET expires_at = now() - interval '1 second'"),
        &mut conn,
    )
    .await
    .expect("update");
    let res = app.get("/api/v1/me/orders", Some(&token)).await;
    expect_error(res, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn a_code_is_retried_after_5xx_and_429_from_the_cloud_api() {
    let app = spawn_app().await;
    app.wa.script(&[500, 429]);
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": PHONE}))
        .await;
    assert_eq!(res.status(), 202);
    let code = app.wa.code_for(PHONE).await;
    assert_eq!(app.wa.hits(), 3, "two refusals, then the delivery");
    let res = app
        .post_json("/api/v1/otp/verify", &json!({"phone": PHONE, "code": code}))
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn an_order_message_refused_with_400_is_recorded_failed_and_never_retried() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    app.wa.script(&[400]);
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let received_key = format!("order:{}:order_received", order.id);
    app.wait_for_sql(
        "the refused message to be recorded",
        &format!(
            "SELECT failed_at IS NOT NULL FROM notification_outbox WHERE dedup_key = '{received_key}'"
        ),
    )
    .await;
    // A later message goes out; by then the refused one would have been retried if it ever were.
    let res = app.set_status(&chef, &order.id.to_string(), "ready").await;
    assert_eq!(res.status(), 200);
    app.wa
        .wait_for(|m| m.template() == app.settings.whatsapp.order_ready_template)
        .await;
    app.assert_sql(
        "one attempt, failed, never sent",
        &format!(
            "SELECT attempts = 1 AND sent_at IS NULL AND last_error LIKE '%400%' \
             FROM notification_outbox WHERE dedup_key = '{received_key}'"
        ),
    )
    .await;
    assert_eq!(
        app.wa.hits(),
        3,
        "the code, the refused message, the ready message"
    );
    assert!(app
        .wa
        .received()
        .iter()
        .all(|m| m.template() != app.settings.whatsapp.order_received_template));
}

#[actix_web::test]
async fn an_order_message_is_retried_after_a_5xx_until_it_is_sent() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    app.wa.script(&[503]);
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let message = app
        .wa
        .wait_for(|m| m.template() == app.settings.whatsapp.order_received_template)
        .await;
    assert_eq!(message.to(), DIGITS);
    assert_eq!(
        message.body_params(),
        vec!["Restaurant roma".to_string(), order.ticket_no.to_string()]
    );
    app.wait_for_sql(
        "the delivery to be recorded",
        &format!(
            "SELECT attempts = 2 AND sent_at IS NOT NULL AND failed_at IS NULL \
             FROM notification_outbox WHERE dedup_key = 'order:{}:order_received'",
            order.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn once_the_api_answers_again_messages_waiting_out_a_backoff_go_out_at_once() {
    use diesel_async::RunQueryDsl;
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 2).await;
    let guest = app.verify_phone(PHONE).await;
    // The API fails the first message: it waits out a backoff.
    app.wa.script(&[503]);
    let first = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let key = format!("order:{}:order_received", first.id);
    app.wait_for_sql(
        "the first message to be put back",
        &format!(
            "SELECT attempts = 1 AND sent_at IS NULL AND next_attempt_at > now() \
             FROM notification_outbox WHERE dedup_key = '{key}'"
        ),
    )
    .await;
    // As after a long outage: its next try is minutes away.
    let mut conn = app.db().await;
    diesel::sql_query(format!(
        "UPDATE notification_outbox SET attempts = 6, next_attempt_at = now() + interval '10 minutes' \
         WHERE dedup_key = '{key}'"
    ))
    .execute(&mut conn)
    .await
    .expect("push the retry out");

    // The API answers again: the next order's message goes out, and the waiting one right after it.
    let second = app
        .place_order(&guest, &r.tables[1], &[(&r.items[0], 1)])
        .await;
    for order in [&second, &first] {
        let ticket = order.ticket_no.to_string();
        let message = app
            .wa
            .wait_for(|m| {
                m.template() == app.settings.whatsapp.order_received_template
                    && m.body_params().last() == Some(&ticket)
            })
            .await;
        assert_eq!(message.to(), DIGITS);
    }
    app.wait_for_sql(
        "the waiting message to be recorded as sent",
        &format!(
            "SELECT attempts = 7 AND sent_at IS NOT NULL FROM notification_outbox \
             WHERE dedup_key = '{key}'"
        ),
    )
    .await;
}
