//! Attack tests (issue 4): each test mounts one attack on the running server, named for the attack it
//! repels, and fails if the defence were taken away. The limits are off in `test_settings()`; the tests
//! about them switch them back on with [`limited_app`], every tier generous except the one under attack.
//!
//! Proven in other modules and not repeated here:
//! - the slowloris socket that never reads, closed with 1013 while every other socket keeps receiving:
//!   `slow_consumer::a_table_socket_that_stops_reading_is_closed_with_1013_while_the_others_keep_receiving`;
//! - a single inbound frame over the limit, closed with 1009:
//!   `resume::an_inbound_frame_over_the_limit_closes_the_socket_with_1009` (here: the same limit reached
//!   by fragments, each under it);
//! - 415, 64 KiB and wrong-shape bodies on the guest and kitchen calls: `errors::malformed_…`.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures_util::SinkExt;
use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, RETRY_AFTER, SET_COOKIE};
use reqwest::Method;
use scan2order::config::Settings;
use scan2order_schema::wire::ServerMsg;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{
    assert_no_internals, expect_error, expect_invalid, order_body, spawn_app, spawn_app_with,
    test_settings, RestaurantFx, TestApp, WsClient, PATIENCE, WA_ACCESS_TOKEN,
};

const PHONE: &str = "+447700900123";
const OTHER_PHONE: &str = "+4915112345678";
const ADMIN: (&str, &str) = ("root-admin", "admin-password-1");
const SQL: &str = "'; DROP TABLE orders; --";
const HTML: &str = "<script>alert(1)</script>";
const FOREIGN: &str = "https://evil.example";

// ---- helpers --------------------------------------------------------------------------------------

/// A server with the abuse limits on, every tier generous unless `tune` tightens it.
async fn limited_app(tune: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        let l = &mut s.rate_limits;
        l.enabled = true;
        l.api_per_minute = 100_000;
        l.orders_per_minute = 100_000;
        l.auth_per_15_minutes = 100_000;
        l.socket_connects_per_minute = 100_000;
        l.otp_sends_per_phone_10_minutes = 1_000;
        l.otp_sends_per_phone_day = 1_000;
        l.login_failures_per_15_minutes = 1_000;
        tune(s);
    })
    .await
}

async fn exec(app: &TestApp, sql: &str) -> usize {
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One text value computed by SQL.
async fn sql_text(app: &TestApp, sql: &str) -> String {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let row: Row = diesel::sql_query(format!("SELECT ({sql})::text AS v"))
        .get_result(&mut app.db().await)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.v
}

async fn sql_count(app: &TestApp, sql: &str) -> i64 {
    sql_text(app, sql).await.parse().expect("a number")
}

/// Every row of every table, hashed: equal before and after means the attack changed nothing.
pub(crate) async fn digest(app: &TestApp) -> String {
    let tables = [
        "restaurants",
        "menu_categories",
        "menu_items",
        "restaurant_tables",
        "staff_users",
        "staff_sessions",
        "otp_challenges",
        "customer_sessions",
        "orders",
        "order_items",
        "order_status_history",
        // The notifier's own delivery progress (attempts, leases, sent_at) moves on by itself; what a
        // client could change is which messages exist.
        "(SELECT id, dedup_key, phone, template, params, created_at FROM notification_outbox)",
    ];
    let mut out = String::new();
    for t in tables {
        let h = sql_text(
            app,
            &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"),
        )
        .await;
        out.push_str(&format!("{t}={h}\n"));
    }
    out
}

/// Asserts 429 with `code` and a `Retry-After` of at least a second; returns the seconds.
async fn expect_429(res: reqwest::Response, code: &str) -> u64 {
    let secs: u64 = res
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After: {:?}", res.headers()));
    assert!(secs >= 1, "Retry-After {secs}");
    expect_error(res, 429, code).await;
    secs
}

async fn admin_token(app: &TestApp) -> String {
    app.staff(ADMIN.0, ADMIN.1, "admin", None).await;
    app.login(ADMIN.0, ADMIN.1).await
}

/// A request with a bearer token and an optional JSON body.
async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.expect("request")
}

async fn otp_send(app: &TestApp, phone: &str) -> reqwest::Response {
    app.post_json("/api/v1/otp/send", &json!({ "phone": phone }))
        .await
}

async fn otp_verify(app: &TestApp, phone: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/api/v1/otp/verify",
        &json!({ "phone": phone, "code": code }),
    )
    .await
}

/// A six-digit code that is not `right`.
fn wrong_code(right: &str, n: u32) -> String {
    let right: u32 = right.parse().expect("six digits");
    format!("{:06}", (right + 1 + n) % 1_000_000)
}

/// A socket opened with extra handshake headers (a browser's `Origin` and `Cookie`).
async fn socket_with(url: &str, headers: &[(&'static str, String)]) -> WsClient {
    let mut req = url.into_client_request().expect("socket request");
    for (name, value) in headers {
        req.headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    let (stream, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("socket connects");
    WsClient { stream }
}

/// The HTTP status a socket handshake was refused with, or `None` when it was accepted.
async fn handshake_refusal(url: &str) -> Option<u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Some(res.status().as_u16()),
        Err(e) => panic!("socket handshake failed oddly: {e}"),
    }
}

/// Reads until the server closes the socket; returns the close code. Panics on silence.
async fn close_code_of(socket: &mut WsClient) -> Option<u16> {
    loop {
        match socket.next_raw_within(PATIENCE).await {
            Some(Ok(_)) => continue,
            Some(Err(code)) => return code,
            None => panic!("the socket was not closed"),
        }
    }
}

// ---- one-time codes -------------------------------------------------------------------------------

#[actix_web::test]
async fn otp_brute_force_dies_at_the_fifth_wrong_code_and_kills_the_right_one_too() {
    let app = limited_app(|_| {}).await;
    assert_eq!(otp_send(&app, PHONE).await.status(), 202);
    let code = app.wa.code_for(PHONE).await;
    for n in 0..4 {
        let res = otp_verify(&app, PHONE, &wrong_code(&code, n)).await;
        expect_error(res, 400, "invalid_code").await;
    }
    let res = otp_verify(&app, PHONE, &wrong_code(&code, 4)).await;
    expect_error(res, 429, "too_many_attempts").await;
    // The code is dead: the right one, and spelt with spaces, no longer open a session.
    expect_error(
        otp_verify(&app, PHONE, &code).await,
        429,
        "too_many_attempts",
    )
    .await;
    let spaced = format!(" {code} ");
    expect_error(
        otp_verify(&app, PHONE, &spaced).await,
        429,
        "too_many_attempts",
    )
    .await;
    app.assert_sql(
        "the code took exactly five attempts and opened no session",
        "SELECT (SELECT attempts FROM otp_challenges) = 5 \
         AND (SELECT count(*) FROM customer_sessions) = 0",
    )
    .await;
}

#[actix_web::test]
async fn twenty_parallel_otp_guesses_cannot_take_more_than_five_attempts() {
    let app = limited_app(|_| {}).await;
    assert_eq!(otp_send(&app, PHONE).await.status(), 202);
    let code = app.wa.code_for(PHONE).await;
    let guesses: Vec<String> = (0..20).map(|n| wrong_code(&code, n)).collect();
    let answers =
        futures_util::future::join_all(guesses.iter().map(|g| otp_verify(&app, PHONE, g))).await;
    let mut invalid = 0;
    let mut dead = 0;
    for res in answers {
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("json");
        match (status, body["error"].as_str()) {
            (400, Some("invalid_code")) => invalid += 1,
            (429, Some("too_many_attempts")) => dead += 1,
            other => panic!("unexpected answer to a guess: {other:?} {body}"),
        }
    }
    // Four wrong guesses were judged, the fifth killed the code, the other fifteen never got a try.
    assert_eq!((invalid, dead), (4, 16));
    app.assert_sql(
        "no more than five attempts were taken",
        "SELECT attempts = 5 FROM otp_challenges",
    )
    .await;
    expect_error(
        otp_verify(&app, PHONE, &code).await,
        429,
        "too_many_attempts",
    )
    .await;
    app.assert_sql("no session", "SELECT count(*) = 0 FROM customer_sessions")
        .await;
}

#[actix_web::test]
async fn otp_flood_to_one_phone_is_held_to_the_cooldown_three_per_ten_minutes_and_ten_a_day() {
    let app = limited_app(|s| {
        s.rate_limits.otp_sends_per_phone_10_minutes = 3;
        s.rate_limits.otp_sends_per_phone_day = 10;
    })
    .await;
    let resend_after = app.settings.auth.otp_resend_after_s;
    // Moves every code of the phone back in time instead of sleeping.
    let age = |secs: i64| {
        let app = &app;
        async move {
            exec(
                app,
                &format!(
                    "UPDATE otp_challenges SET created_at = created_at - interval '{secs} seconds', \
                     expires_at = expires_at - interval '{secs} seconds' WHERE phone = '{PHONE}'"
                ),
            )
            .await;
        }
    };
    // The answers of the accepted sends: exactly the two timing fields.
    let mut bodies = Vec::new();
    let accept = |bodies: &mut Vec<String>, text: String| {
        let v: Value = serde_json::from_str(&text).expect("json");
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["expires_in_s", "resend_after_s"], "{text}");
        bodies.push(text);
    };

    let res = otp_send(&app, PHONE).await;
    assert_eq!(res.status(), 202);
    accept(&mut bodies, res.text().await.expect("body"));
    // At once again: the resend cooldown.
    let res = otp_send(&app, PHONE).await;
    let wait = expect_429(res, "rate_limited").await;
    assert!(wait <= resend_after as u64 + 1, "cooldown wait {wait}");
    // Past the cooldown twice more: three in ten minutes.
    for _ in 0..2 {
        age(resend_after + 1).await;
        let res = otp_send(&app, PHONE).await;
        assert_eq!(res.status(), 202);
        accept(&mut bodies, res.text().await.expect("body"));
    }
    age(resend_after + 1).await;
    let res = otp_send(&app, PHONE).await;
    let wait = expect_429(res, "rate_limited").await;
    // The oldest of the three was sent 3 × (cooldown + 1) s ago: it ages out of the window then.
    let expected = 600 - 3 * (resend_after as u64 + 1);
    assert!(
        (expected - 2..=expected + 2).contains(&wait),
        "ten-minute window: Retry-After {wait}, expected about {expected}"
    );
    // Ten-minute windows later, until ten codes went out today: the eleventh is refused for hours.
    while bodies.len() < 10 {
        age(601).await;
        for _ in 0..3 {
            if bodies.len() == 10 {
                break;
            }
            let res = otp_send(&app, PHONE).await;
            assert_eq!(res.status(), 202, "send {}", bodies.len() + 1);
            accept(&mut bodies, res.text().await.expect("body"));
            age(resend_after + 1).await;
        }
    }
    age(601).await;
    let res = otp_send(&app, PHONE).await;
    let wait = expect_429(res, "rate_limited").await;
    assert!(wait > 3600, "the daily cap holds for hours, not {wait} s");
    app.assert_sql(
        "exactly ten codes were issued",
        &format!("SELECT count(*) = 10 FROM otp_challenges WHERE phone = '{PHONE}'"),
    )
    .await;
    // Another phone is not affected by the flood to this one.
    assert_eq!(otp_send(&app, OTHER_PHONE).await.status(), 202);
    // Every code went to WhatsApp, and none of them into any answer.
    let digits = PHONE.trim_start_matches('+');
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let codes: Vec<String> = loop {
        let codes: Vec<String> = app
            .wa
            .received()
            .iter()
            .filter(|r| r.to() == digits)
            .filter_map(|r| r.body_params().into_iter().next())
            .collect();
        if codes.len() == 10 || tokio::time::Instant::now() > deadline {
            break codes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(codes.len(), 10, "ten codes reached WhatsApp");
    for body in &bodies {
        for code in &codes {
            assert!(!body.contains(code.as_str()), "code {code} in {body}");
        }
    }
}

// ---- rate limits and the client address -----------------------------------------------------------

#[actix_web::test]
async fn x_forwarded_for_spoofing_from_an_untrusted_peer_buys_no_fresh_budget() {
    let app = limited_app(|s| s.rate_limits.api_per_minute = 5).await;
    let spoofed = |i: u32| {
        app.http
            .get(app.url("/api/v1/tables/no-such-table"))
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .header("X-Real-IP", format!("198.51.100.{i}"))
            .header("Forwarded", format!("for=198.51.100.{i}"))
            .header("X-Client-IP", format!("198.51.100.{i}"))
            .send()
    };
    for i in 0..5 {
        let res = spoofed(i).await.expect("request");
        expect_error(res, 404, "not_found").await;
    }
    for i in 5..15 {
        let res = spoofed(i).await.expect("request");
        expect_429(res, "rate_limited").await;
    }
}

#[actix_web::test]
async fn behind_a_trusted_proxy_only_the_right_most_untrusted_forwarded_address_counts() {
    let app = limited_app(|s| {
        s.rate_limits.api_per_minute = 3;
        s.rate_limits.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    let get = |xff: &'static str| {
        app.http
            .get(app.url("/api/v1/tables/no-such-table"))
            .header("X-Forwarded-For", xff)
            .send()
    };
    for _ in 0..3 {
        expect_error(get("203.0.113.1").await.expect("req"), 404, "not_found").await;
    }
    expect_429(get("203.0.113.1").await.expect("req"), "rate_limited").await;
    // Client A cannot escape by putting an invented address in front of the one our proxy appended,
    // nor behind it a second hop of ours.
    for xff in [
        "198.51.100.99, 203.0.113.1",
        "10.9.9.9,198.51.100.98, 203.0.113.1",
        "203.0.113.1, 127.0.0.1",
    ] {
        expect_429(get(xff).await.expect("req"), "rate_limited").await;
    }
    // Client B, another address behind the same proxy, has a budget of its own.
    for _ in 0..3 {
        expect_error(get("203.0.113.2").await.expect("req"), 404, "not_found").await;
    }
    expect_429(get("203.0.113.2").await.expect("req"), "rate_limited").await;
    // An IPv6 client owns a whole /64: new addresses in it are the same client.
    for xff in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"] {
        expect_error(get(xff).await.expect("req"), 404, "not_found").await;
    }
    expect_429(
        get("2001:db8:1:2:ffff::9").await.expect("req"),
        "rate_limited",
    )
    .await;
    expect_error(get("2001:db8:1:3::1").await.expect("req"), 404, "not_found").await;
}

#[actix_web::test]
async fn an_order_flood_from_one_ip_is_cut_off_and_nothing_past_the_limit_is_written() {
    let app = limited_app(|s| s.rate_limits.orders_per_minute = 5).await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let other_guest = app.verify_phone(OTHER_PHONE).await;
    let body = order_body(&r.tables[0], &[(&r.items[0], 1)]);
    for _ in 0..5 {
        let res = app
            .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
            .await;
        assert_eq!(res.status(), 201);
    }
    for i in 0..10 {
        // Fresh keys, and a second guest from the same address: still the same client.
        let token = if i % 2 == 0 { &guest } else { &other_guest };
        let res = app
            .place_order_raw(token, &Uuid::new_v4().to_string(), &body)
            .await;
        expect_429(res, "rate_limited").await;
    }
    app.assert_sql(
        "exactly the five orders within the limit were written",
        "SELECT (SELECT count(*) FROM orders) = 5 AND (SELECT count(*) FROM order_items) = 5",
    )
    .await;
}

#[actix_web::test]
async fn a_request_flood_from_one_ip_hits_the_general_api_limit_on_every_endpoint() {
    let app = limited_app(|s| s.rate_limits.api_per_minute = 10).await;
    let r = app.restaurant("roma", 1, 1).await;
    let menu = format!("/api/v1/tables/{}", r.tables[0].token);
    for _ in 0..10 {
        assert_eq!(app.get(&menu, None).await.status(), 200);
    }
    for path in [
        menu.as_str(),
        "/api/v1/kitchen/orders",
        "/api/v1/me/orders",
        "/api/v1/admin/restaurants",
        "/api/v1/nothing-here",
    ] {
        expect_429(app.get(path, None).await, "rate_limited").await;
    }
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "x", "password": "y"}),
        )
        .await;
    expect_429(res, "rate_limited").await;
    // Pages and health checks are not API calls: the flood does not take the site down.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[actix_web::test]
async fn a_socket_connect_flood_from_one_ip_is_refused_at_the_handshake() {
    let app = limited_app(|s| s.rate_limits.socket_connects_per_minute = 3).await;
    let r = app.restaurant("roma", 1, 1).await;
    let url = app.ws_url(&format!("/ws/table/{}", r.tables[0].token));
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = app.table_socket(&r.tables[0].token, "").await;
        s.hello_snapshot().await;
        open.push(s);
    }
    for _ in 0..5 {
        assert_eq!(handshake_refusal(&url).await, Some(429));
    }
    assert_eq!(
        handshake_refusal(&app.ws_url("/ws/kitchen?token=x")).await,
        Some(429)
    );
    // The sockets already open keep working.
    let chef = app.login_chef(&r).await;
    assert_eq!(
        app.set_available(&chef, r.items[0].id, false)
            .await
            .status(),
        200
    );
    for s in &mut open {
        let m = s.until(|m| matches!(m, ServerMsg::MenuItem { .. })).await;
        assert!(matches!(
            m,
            ServerMsg::MenuItem {
                available: false,
                ..
            }
        ));
    }
}

#[actix_web::test]
async fn staff_login_brute_force_locks_the_account_even_for_the_right_password_and_unknown_names_alike(
) {
    let app = limited_app(|s| s.rate_limits.login_failures_per_15_minutes = 3).await;
    let r = app.restaurant("roma", 1, 1).await;
    let (user, password) = r.chef.clone();
    let login = |u: String, p: String| {
        let app = &app;
        async move {
            app.post_json("/api/v1/auth/login", &json!({"username": u, "password": p}))
                .await
        }
    };
    let mut answers = Vec::new();
    for (account, right) in [
        (user.clone(), password.clone()),
        ("nobody-here".to_string(), "whatever-it-is".to_string()),
    ] {
        let mut seen = Vec::new();
        for i in 0..3 {
            let res = login(account.clone(), format!("guess-{i}")).await;
            let body = expect_error(res, 401, "invalid_credentials").await;
            seen.push(body);
        }
        let res = login(account.clone(), "guess-x".into()).await;
        let wait = expect_429(res, "account_locked").await;
        assert!(
            wait <= 15 * 60 + 1,
            "locked for the rest of the window: {wait}"
        );
        // Locked means locked: the right password does not get in either.
        let res = login(account.clone(), right).await;
        let body = expect_error(res, 429, "account_locked").await;
        seen.push(body);
        answers.push(seen);
    }
    // A known and an unknown account answer alike at every step: nothing to enumerate.
    assert_eq!(answers[0], answers[1]);
    app.assert_sql(
        "the attacked chef got no session",
        "SELECT count(*) = 0 FROM staff_sessions",
    )
    .await;
    // Another account is not locked by the attack on this one.
    app.staff("chef-two", "pw-chef-two-kitchen", "chef", Some(r.id))
        .await;
    app.login("chef-two", "pw-chef-two-kitchen").await;
}

// ---- tenants, prices, sessions --------------------------------------------------------------------

#[actix_web::test]
async fn cross_tenant_reads_and_writes_over_rest_and_sockets_are_refused() {
    let app = spawn_app().await;
    let a = app.restaurant("roma", 2, 1).await;
    let b = app.restaurant("bari", 2, 2).await;
    let chef_a = app.login_chef(&a).await;
    let chef_b = app.login_chef(&b).await;
    let guest_a = app.verify_phone(PHONE).await;
    let guest_b = app.verify_phone(OTHER_PHONE).await;
    let order_b = app
        .place_order(&guest_b, &b.tables[0], &[(&b.items[0], 1)])
        .await;
    let mut kitchen_b = app.kitchen_socket(&chef_b, "").await;
    kitchen_b.hello_snapshot().await;
    let before = digest(&app).await;

    // REST, as chef A against B.
    let res = app
        .set_status(&chef_a, &order_b.id.to_string(), "cancelled")
        .await;
    expect_error(res, 404, "not_found").await;
    let res = call(
        &app,
        &chef_a,
        Method::POST,
        &format!(
            "/api/v1/kitchen/orders/{}/status?restaurant_id={}",
            order_b.id, b.id
        ),
        Some(&json!({"status": "cancelled"})),
    )
    .await;
    expect_error(res, 404, "not_found").await;
    expect_error(
        app.set_available(&chef_a, b.items[0].id, false).await,
        404,
        "not_found",
    )
    .await;
    let res = call(
        &app,
        &chef_a,
        Method::PATCH,
        &format!("/api/v1/kitchen/restaurant?restaurant_id={}", b.id),
        Some(&json!({"accepting_orders": false})),
    )
    .await;
    expect_error(res, 404, "not_found").await;
    for path in [
        format!("/api/v1/kitchen/orders?restaurant_id={}", b.id),
        format!("/api/v1/kitchen/restaurant?restaurant_id={}", b.id),
    ] {
        expect_error(app.get(&path, Some(&chef_a)).await, 404, "not_found").await;
    }
    // Admin routes for a chef, of B and of A alike.
    for rid in [b.id, a.id] {
        for (method, path, body) in [
            (
                Method::GET,
                format!("/api/v1/admin/restaurants/{rid}"),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/v1/admin/restaurants/{rid}"),
                Some(json!({"accepting_orders": false})),
            ),
            (
                Method::POST,
                format!("/api/v1/admin/restaurants/{rid}/staff"),
                Some(json!({"username": "mole", "password": "mole-password-1"})),
            ),
            (
                Method::POST,
                format!(
                    "/api/v1/admin/restaurants/{rid}/tables/{}/rotate-token",
                    b.tables[0].id
                ),
                None,
            ),
            (
                Method::GET,
                format!("/api/v1/admin/restaurants/{rid}/qr-sheet"),
                None,
            ),
            (
                Method::DELETE,
                format!(
                    "/api/v1/admin/restaurants/{rid}/menu-items/{}",
                    b.items[0].id
                ),
                None,
            ),
        ] {
            let res = call(&app, &chef_a, method, &path, body.as_ref()).await;
            expect_error(res, 403, "forbidden").await;
        }
    }
    expect_error(
        call(
            &app,
            &chef_a,
            Method::POST,
            "/api/v1/admin/restaurants",
            Some(&json!({
                "slug": "mine", "name": "Mine", "currency": "EUR", "time_zone": "Europe/Rome"
            })),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // A guest reading another phone's order, and tokens of one kind used as the other.
    let order_path = format!("/api/v1/orders/{}", order_b.id);
    expect_error(app.get(&order_path, Some(&guest_a)).await, 404, "not_found").await;
    let mine: Value = app
        .get("/api/v1/me/orders", Some(&guest_a))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(mine["orders"], json!([]));
    expect_error(
        app.get(&order_path, Some(&chef_b)).await,
        401,
        "unauthenticated",
    )
    .await;
    expect_error(
        app.get("/api/v1/kitchen/orders", Some(&guest_b)).await,
        401,
        "unauthenticated",
    )
    .await;
    // Sockets: chef A asking for B's kitchen; a guest token on the kitchen socket.
    for query in [
        format!("&restaurant_id={}", b.id),
        "&restaurant_id=garbage".into(),
    ] {
        let mut s = app.kitchen_socket(&chef_a, &query).await;
        assert_eq!(s.closed_with().await, Some(1008), "{query}");
    }
    let mut s = app.kitchen_socket(&guest_b, "").await;
    assert_eq!(s.closed_with().await, Some(1008));
    // A's kitchen socket sees none of B's orders and cannot change them.
    let mut kitchen_a = app.kitchen_socket(&chef_a, "").await;
    let (_, _, orders) = kitchen_a.hello_snapshot().await;
    assert!(orders.is_empty(), "A's kitchen sees B's orders: {orders:?}");
    kitchen_a
        .send_json(&json!({"type": "set_status", "request_id": "r1",
                           "order_id": order_b.id, "status": "cancelled"}))
        .await;
    match kitchen_a.next().await {
        ServerMsg::Error {
            request_id, error, ..
        } => {
            assert_eq!(
                (request_id.as_deref(), error.as_str()),
                (Some("r1"), "not_found")
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(before, digest(&app).await, "the attacks changed something");

    // The table socket of B's table 2 never sees table 1's orders, even while the kitchen does.
    let mut table_2 = app.table_socket(&b.tables[1].token, "").await;
    let (_, _, orders) = table_2.hello_snapshot().await;
    assert!(
        orders.is_empty(),
        "table 2 sees table 1's order: {orders:?}"
    );
    let second = app
        .place_order(&guest_b, &b.tables[0], &[(&b.items[1], 2)])
        .await;
    kitchen_b
        .until(|m| matches!(m, ServerMsg::OrderCreated { order, .. } if order.id == second.id))
        .await;
    let res = app
        .set_status(&chef_b, &second.id.to_string(), "accepted")
        .await;
    assert_eq!(res.status(), 200);
    kitchen_b
        .until(|m| matches!(m, ServerMsg::OrderStatus { order_id, .. } if *order_id == second.id))
        .await;
    kitchen_a.assert_quiet_for(Duration::from_millis(300)).await;
    table_2.assert_quiet_for(Duration::from_millis(300)).await;
}

#[actix_web::test]
async fn tampered_prices_in_an_order_are_refused_naming_the_field_and_the_server_price_stands() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let item = &r.items[1];
    let token = &r.tables[0].token;
    let line = json!({"menu_item_id": item.id, "quantity": 2});
    let with_line = |extra: Value| {
        let mut l = line.clone();
        for (k, v) in extra.as_object().expect("object") {
            l[k] = v.clone();
        }
        json!({"table_token": token, "items": [l]})
    };
    let with_order = |extra: Value| {
        let mut o = json!({"table_token": token, "items": [line.clone()]});
        for (k, v) in extra.as_object().expect("object") {
            o[k] = v.clone();
        }
        o
    };
    let attempts = [
        (with_line(json!({"price_cents": 1})), "price_cents"),
        (
            with_line(json!({"unit_price_cents": 1})),
            "unit_price_cents",
        ),
        (with_line(json!({"total_cents": 0})), "total_cents"),
        (with_line(json!({"name": "free lunch"})), "name"),
        (with_order(json!({"total_cents": 1})), "total_cents"),
        (with_order(json!({"price_cents": 1})), "price_cents"),
        (with_order(json!({"currency": "VND"})), "currency"),
        (
            with_order(json!({"discount_cents": 1200})),
            "discount_cents",
        ),
        (with_order(json!({"status": "served"})), "status"),
        (with_order(json!({"phone": OTHER_PHONE})), "phone"),
        (
            with_order(json!({"restaurant_id": Uuid::new_v4()})),
            "restaurant_id",
        ),
        (with_line(json!({"quantity": -2})), "quantity"),
        (with_line(json!({"quantity": 0})), "quantity"),
        (with_line(json!({"quantity": 2.5})), "quantity"),
    ];
    for (body, field) in &attempts {
        let res = app
            .place_order_raw(&guest, &Uuid::new_v4().to_string(), body)
            .await;
        expect_invalid(res, field).await;
    }
    app.assert_sql("no order was written", "SELECT count(*) = 0 FROM orders")
        .await;
    let order = app.place_order(&guest, &r.tables[0], &[(item, 2)]).await;
    assert_eq!(order.total_cents, 2 * item.price_cents);
    assert_eq!(order.items[0].unit_price_cents, item.price_cents);
    app.assert_sql(
        "the stored order carries the server's price",
        &format!(
            "SELECT (SELECT total_cents FROM orders) = {} \
             AND (SELECT unit_price_cents FROM order_items) = {}",
            2 * item.price_cents,
            item.price_cents
        ),
    )
    .await;
}

#[actix_web::test]
async fn an_old_staff_token_replayed_after_logout_or_expiry_is_refused() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let token = app.login_chef(&r).await;
    assert_eq!(app.get("/api/v1/auth/me", Some(&token)).await.status(), 200);
    let res = call(&app, &token, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(res.status(), 204);
    for path in ["/api/v1/auth/me", "/api/v1/kitchen/orders"] {
        expect_error(app.get(path, Some(&token)).await, 401, "unauthenticated").await;
    }
    let res = app
        .set_status(&token, &order.id.to_string(), "accepted")
        .await;
    expect_error(res, 401, "unauthenticated").await;
    let res = app
        .http
        .post(app.url(&format!("/api/v1/kitchen/orders/{}/status", order.id)))
        .header(COOKIE, format!("s2o_session={token}"))
        .header(ORIGIN, app.address.clone())
        .json(&json!({"status": "accepted"}))
        .send()
        .await
        .expect("request");
    expect_error(res, 401, "unauthenticated").await;
    let mut socket = app.kitchen_socket(&token, "").await;
    assert_eq!(socket.closed_with().await, Some(1008));
    app.assert_sql(
        "the order is untouched",
        &format!(
            "SELECT status = 'placed' FROM orders WHERE id = '{}'",
            order.id
        ),
    )
    .await;

    // Sessions expire: a staff token and a guest token past their time are dead.
    let token = app.login_chef(&r).await;
    exec(
        &app,
        "UPDATE staff_sessions SET expires_at = now() - interval '1 second'",
    )
    .await;
    exec(
        &app,
        "UPDATE customer_sessions SET expires_at = now() - interval '1 second'",
    )
    .await;
    expect_error(
        app.get("/api/v1/auth/me", Some(&token)).await,
        401,
        "unauthenticated",
    )
    .await;
    let mut socket = app.kitchen_socket(&token, "").await;
    assert_eq!(socket.closed_with().await, Some(1008));
    expect_error(
        app.get("/api/v1/me/orders", Some(&guest)).await,
        401,
        "unauthenticated",
    )
    .await;
    let res = app
        .place_order_raw(
            &guest,
            &Uuid::new_v4().to_string(),
            &order_body(&r.tables[0], &[(&r.items[0], 1)]),
        )
        .await;
    expect_error(res, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn an_old_staff_token_replayed_after_a_password_change_is_refused_and_its_socket_closed() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let uid = sql_text(
        &app,
        &format!("SELECT id FROM staff_users WHERE username = '{}'", r.chef.0),
    )
    .await;
    let mut socket = app.kitchen_socket(&chef, "").await;
    socket.hello_snapshot().await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/api/v1/admin/restaurants/{}/staff/{uid}", r.id),
        Some(&json!({"password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(close_code_of(&mut socket).await, Some(1008));
    expect_error(
        app.get("/api/v1/auth/me", Some(&chef)).await,
        401,
        "unauthenticated",
    )
    .await;
    let mut socket = app.kitchen_socket(&chef, "").await;
    assert_eq!(socket.closed_with().await, Some(1008));
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": r.chef.0, "password": r.chef.1}),
        )
        .await;
    expect_error(res, 401, "invalid_credentials").await;
    app.login(&r.chef.0, "a-brand-new-password").await;
}

// ---- browsers: CSRF, cookies, headers -------------------------------------------------------------

#[actix_web::test]
async fn csrf_from_a_foreign_origin_is_refused_for_cookie_sessions() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let chef = app.login_chef(&r).await;
    let admin = admin_token(&app).await;
    let own = app.address.clone();
    let status_path = format!("/api/v1/kitchen/orders/{}/status", order.id);
    let by_cookie =
        |method: Method, path: &str, token: &str, headers: &[(&str, &str)], body: &Value| {
            let mut req = app
                .http
                .request(method, app.url(path))
                .header(COOKIE, format!("s2o_session={token}"))
                .json(body);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send()
        };
    let forged_host = format!("evil.example, {}", own.trim_start_matches("http://"));
    let cross_site: Vec<Vec<(&str, &str)>> = vec![
        vec![("Origin", FOREIGN)],
        vec![],
        vec![("Origin", "null")],
        vec![("Origin", "http://127.0.0.1.evil.example")],
        // Forwarding headers come from the client too: they must not make a foreign origin ours.
        vec![("Origin", FOREIGN), ("X-Forwarded-Host", "evil.example")],
        vec![
            ("Origin", FOREIGN),
            ("Forwarded", "host=evil.example;proto=https"),
        ],
        vec![
            ("Origin", FOREIGN),
            ("X-Forwarded-Host", forged_host.as_str()),
        ],
        // A same-origin Referer is no substitute for the Origin.
        vec![("Referer", "http://127.0.0.1/kitchen")],
    ];
    let new_restaurant = json!({"slug": "forged", "name": "Forged", "currency": "EUR",
                                "time_zone": "Europe/Rome"});
    for headers in &cross_site {
        let res = by_cookie(
            Method::POST,
            &status_path,
            &chef,
            headers,
            &json!({"status": "cancelled"}),
        )
        .await
        .expect("request");
        expect_error(res, 403, "forbidden").await;
        let res = by_cookie(
            Method::POST,
            "/api/v1/admin/restaurants",
            &admin,
            headers,
            &new_restaurant,
        )
        .await
        .expect("request");
        expect_error(res, 403, "forbidden").await;
        let res = by_cookie(
            Method::PATCH,
            "/api/v1/kitchen/restaurant",
            &chef,
            headers,
            &json!({"accepting_orders": false}),
        )
        .await
        .expect("request");
        expect_error(res, 403, "forbidden").await;
        let res = by_cookie(
            Method::POST,
            "/api/v1/auth/logout",
            &chef,
            headers,
            &json!({}),
        )
        .await
        .expect("request");
        expect_error(res, 403, "forbidden").await;
    }
    app.assert_sql(
        "nothing changed",
        &format!(
            "SELECT (SELECT status = 'placed' FROM orders WHERE id = '{}') \
             AND (SELECT count(*) = 1 FROM restaurants) \
             AND (SELECT accepting_orders FROM restaurants) \
             AND (SELECT count(*) = 2 FROM staff_sessions)",
            order.id
        ),
    )
    .await;
    // Our own pages: the Host they addressed, or the configured public origin.
    let public = app.settings.public_base_url().to_string();
    let res = by_cookie(
        Method::POST,
        &status_path,
        &chef,
        &[("Origin", &own)],
        &json!({"status": "accepted"}),
    )
    .await
    .expect("request");
    assert_eq!(res.status(), 200);
    let res = by_cookie(
        Method::POST,
        &status_path,
        &chef,
        &[("Origin", &public)],
        &json!({"status": "preparing"}),
    )
    .await
    .expect("request");
    assert_eq!(res.status(), 200);
    let res = by_cookie(
        Method::POST,
        "/api/v1/admin/restaurants",
        &admin,
        &[("Origin", &own)],
        &new_restaurant,
    )
    .await
    .expect("request");
    assert_eq!(res.status(), 201);
    // Bearer tokens cannot be sent by a foreign page: they need no Origin.
    let res = app.set_status(&chef, &order.id.to_string(), "ready").await;
    assert_eq!(res.status(), 200);
    // Login CSRF: a foreign page signing the victim in to the attacker's account.
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .header(ORIGIN, FOREIGN)
        .json(&json!({"username": r.chef.0, "password": r.chef.1}))
        .send()
        .await
        .expect("request");
    assert!(res.headers().get(SET_COOKIE).is_none(), "a cookie was set");
    expect_error(res, 403, "forbidden").await;
    let res = app
        .http
        .post(app.url("/api/v1/auth/login"))
        .header(ORIGIN, own.as_str())
        .json(&json!({"username": r.chef.0, "password": r.chef.1}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn a_foreign_page_cannot_hijack_a_kitchen_socket_with_the_session_cookie() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let url = app.ws_url("/ws/kitchen");
    let cookie = format!("s2o_session={chef}");
    for origin in [Some(FOREIGN.to_string()), Some("null".into()), None] {
        let mut headers = vec![("cookie", cookie.clone())];
        if let Some(o) = &origin {
            headers.push(("origin", o.clone()));
        }
        let mut socket = socket_with(&url, &headers).await;
        assert_eq!(close_code_of(&mut socket).await, Some(1008), "{origin:?}");
    }
    let mut socket = socket_with(
        &url,
        &[("cookie", cookie.clone()), ("origin", app.address.clone())],
    )
    .await;
    socket.hello_snapshot().await;
}

/// The attributes of the session cookie a response sets, lower-cased.
fn session_cookie_attrs(res: &reqwest::Response) -> Vec<String> {
    let header = res
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("s2o_session="))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", res.headers()))
        .to_string();
    header
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[actix_web::test]
async fn session_cookies_are_httponly_samesite_strict_and_secure_exactly_over_https() {
    for (base, secure) in [
        ("http://localhost:8080", false),
        ("https://order.example.com", true),
    ] {
        let app = spawn_app_with(|s| s.http.public_base_url = base.into()).await;
        app.staff("chef", "chef-password-1", "admin", None).await;
        let res = app
            .post_json(
                "/api/v1/auth/login",
                &json!({"username": "chef", "password": "chef-password-1"}),
            )
            .await;
        assert_eq!(res.status(), 200);
        let attrs = session_cookie_attrs(&res);
        let body: Value = res.json().await.expect("json");
        let token = body["token"].as_str().expect("token").to_string();
        for needed in ["httponly", "samesite=strict", "path=/"] {
            assert!(
                attrs.iter().any(|a| a == needed),
                "{base}: {needed} missing in {attrs:?}"
            );
        }
        assert_eq!(
            attrs.iter().any(|a| a == "secure"),
            secure,
            "{base}: {attrs:?}"
        );
        assert!(!attrs.iter().any(|a| a.starts_with("domain=")), "{attrs:?}");
        // Logging out clears it with the same flags.
        let res = call(&app, &token, Method::POST, "/api/v1/auth/logout", None).await;
        assert_eq!(res.status(), 204);
        let attrs = session_cookie_attrs(&res);
        assert!(attrs.iter().any(|a| a == "max-age=0"), "{attrs:?}");
        assert!(attrs.iter().any(|a| a == "httponly"), "{attrs:?}");
        assert_eq!(attrs.iter().any(|a| a == "secure"), secure, "{attrs:?}");
    }
}

/// Checks the security headers of one answer.
fn assert_security_headers(what: &str, res: &reqwest::Response) {
    let h = res.headers();
    let get = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_string()
    };
    let csp = get("content-security-policy");
    let directive = |name: &str| {
        csp.split(';')
            .map(str::trim)
            .find(|d| d.split_whitespace().next() == Some(name))
            .map(str::to_string)
    };
    let script = directive("script-src")
        .or_else(|| directive("default-src"))
        .unwrap_or_else(|| panic!("{what}: no script source in {csp}"));
    for bad in [
        "'unsafe-inline'",
        "'unsafe-eval'",
        "*",
        "data:",
        "http:",
        "https:",
    ] {
        assert!(
            !script.split_whitespace().any(|s| s == bad),
            "{what}: script {bad} allowed by {csp}"
        );
    }
    assert_eq!(
        directive("frame-ancestors").as_deref(),
        Some("frame-ancestors 'none'"),
        "{what}"
    );
    assert_eq!(
        directive("object-src").as_deref(),
        Some("object-src 'none'"),
        "{what}"
    );
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    let referrer = get("referrer-policy");
    assert!(
        [
            "no-referrer",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin"
        ]
        .contains(&referrer.as_str()),
        "{what}: Referrer-Policy {referrer}"
    );
}

#[actix_web::test]
async fn pages_and_api_answers_carry_the_security_headers_and_pages_run_no_inline_script() {
    let app = limited_app(|s| s.rate_limits.auth_per_15_minutes = 1).await;
    let r = app.restaurant("roma", 1, 1).await;
    for page in [
        format!("/t/{}", r.tables[0].token),
        "/kitchen".into(),
        "/admin".into(),
    ] {
        let res = app.get(&page, None).await;
        assert_eq!(res.status(), 200, "{page}");
        assert_security_headers(&page, &res);
        let html = res.text().await.expect("html");
        // Every script is a file of ours; no inline script or handler for the CSP to have to stop.
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').expect("tag end")];
            assert!(
                tag.contains("src=\"/static/"),
                "{page}: inline script {tag}"
            );
        }
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("javascript:"), "{page}");
        assert!(
            !lower.contains(" onclick=")
                && !lower.contains(" onload=")
                && !lower.contains(" onerror="),
            "{page}: inline handler"
        );
    }
    let api = [
        format!("/api/v1/tables/{}", r.tables[0].token),
        "/api/v1/tables/nope".into(),
        "/api/v1/kitchen/orders".into(),
        "/healthz".into(),
    ];
    for path in &api {
        let res = app.get(path, None).await;
        assert_security_headers(path, &res);
    }
    // Refusals from the limits and the body checks carry them too.
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": 1}))
        .await;
    assert_security_headers("400", &res);
    let res = app
        .post_json("/api/v1/otp/send", &json!({"phone": PHONE}))
        .await;
    assert_eq!(res.status(), 429);
    assert_security_headers("429", &res);
}

// ---- sockets --------------------------------------------------------------------------------------

#[actix_web::test]
async fn an_oversized_socket_message_sent_in_fragments_is_closed_with_1009() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let max = app.settings.sockets.max_frame_bytes;
    let mut socket = app.table_socket(&r.tables[0].token, "").await;
    socket.hello_snapshot().await;
    // Fragments each well under the limit, adding up past it.
    let piece = "x".repeat(max / 4);
    socket
        .stream
        .send(Message::Frame(Frame::message(
            piece.clone(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .expect("first fragment");
    for _ in 0..6 {
        let sent = socket
            .stream
            .send(Message::Frame(Frame::message(
                piece.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await;
        if sent.is_err() {
            break;
        }
    }
    assert_eq!(close_code_of(&mut socket).await, Some(1009));
    // One whole frame over the limit on another socket.
    let mut socket = app.table_socket(&r.tables[0].token, "").await;
    socket.hello_snapshot().await;
    let _ = socket
        .stream
        .send(Message::Text("y".repeat(max + 1).into()))
        .await;
    assert_eq!(close_code_of(&mut socket).await, Some(1009));
}

/// Makes the `i`-th frame of a flood.
type FrameMaker = Box<dyn Fn(usize) -> Message>;

#[actix_web::test]
async fn a_socket_flooding_messages_or_pings_is_closed_with_1008_and_others_keep_working() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let per_sec = app.settings.sockets.max_inbound_per_sec as usize;
    let mut bystander = app.table_socket(&r.tables[0].token, "").await;
    bystander.hello_snapshot().await;
    let floods: [(&str, FrameMaker); 3] = [
        (
            "text",
            Box::new(|i| Message::Text(json!({"type": "nope", "i": i}).to_string().into())),
        ),
        ("binary", Box::new(|_| Message::Binary(vec![0u8; 8].into()))),
        ("ping", Box::new(|_| Message::Ping(vec![1u8; 4].into()))),
    ];
    for (kind, frame) in floods.iter() {
        let mut socket = app.kitchen_socket(&chef, "").await;
        socket.hello_snapshot().await;
        for i in 0..per_sec * 5 {
            if socket.stream.send(frame(i)).await.is_err() {
                break;
            }
        }
        assert_eq!(close_code_of(&mut socket).await, Some(1008), "{kind} flood");
    }
    // A client within the rate is fine, and the bystander never noticed.
    let mut calm = app.kitchen_socket(&chef, "").await;
    calm.hello_snapshot().await;
    for _ in 0..3 {
        calm.send_json(&json!({"type": "nope"})).await;
        assert!(matches!(calm.next().await, ServerMsg::Error { .. }));
    }
    assert_eq!(
        app.set_available(&chef, r.items[0].id, false)
            .await
            .status(),
        200
    );
    bystander
        .until(|m| {
            matches!(
                m,
                ServerMsg::MenuItem {
                    available: false,
                    ..
                }
            )
        })
        .await;
    calm.until(|m| {
        matches!(
            m,
            ServerMsg::MenuItem {
                available: false,
                ..
            }
        )
    })
    .await;
}

#[actix_web::test]
async fn hostile_socket_messages_get_error_answers_and_the_sockets_keep_working() {
    // This is about content, not speed: the inbound rate limit is out of the way (floods have their
    // own tests).
    let app = spawn_app_with(|s| s.sockets.max_inbound_per_sec = 10_000).await;
    let r = app.restaurant("roma", 1, 1).await;
    let other = app.restaurant("bari", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let other_order = app
        .place_order(&guest, &other.tables[0], &[(&other.items[0], 1)])
        .await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;
    let before = digest(&app).await;
    let deep = format!("{}{}", "[".repeat(7000), "]".repeat(7000));
    let set_status = |order_id: Value, status: Value| {
        json!({"type": "set_status", "request_id": "q", "order_id": order_id, "status": status})
            .to_string()
    };
    let hostile: Vec<String> = vec![
        "".into(),
        "}{".into(),
        "null".into(),
        "[]".into(),
        "{}".into(),
        "\"set_status\"".into(),
        "1e999".into(),
        deep,
        json!({"type": "nope"}).to_string(),
        json!({"type": 7}).to_string(),
        json!({"type": "SET_STATUS"}).to_string(),
        json!({"type": "resume", "epoch": "e", "since": 1e20}).to_string(),
        json!({"type": "resume", "epoch": "e", "since": -1}).to_string(),
        r#"{"type":"resume","epoch":"e","since":18446744073709551616}"#.into(),
        json!({"type": "resume", "epoch": HTML, "since": 0, "extra": true}).to_string(),
        set_status(json!("not-a-uuid"), json!("ready")),
        set_status(json!(SQL), json!("ready")),
        set_status(json!(order.id), json!(SQL)),
        set_status(json!(order.id), json!(1e20)),
        set_status(json!(order.id), json!(["ready"])),
        json!({"type": "set_status", "order_id": order.id, "status": "ready"}).to_string(),
        json!({"type": "set_status", "request_id": "q", "order_id": order.id, "status": "ready",
               "price_cents": 1})
        .to_string(),
        format!("{{\"type\":\"nope\",\"note\":\"a\u{0}b\u{1b}[2J\"}}"),
    ];
    for (which, socket) in [("kitchen", &mut kitchen), ("table", &mut table)] {
        for (i, text) in hostile.iter().enumerate() {
            socket
                .stream
                .send(Message::Text(text.clone().into()))
                .await
                .expect("send");
            let answer = socket.next_text().await;
            assert_no_internals(&answer);
            let msg: ServerMsg = serde_json::from_str(&answer).expect("a protocol message");
            match msg {
                ServerMsg::Error { error, message, .. } => {
                    assert_eq!(
                        error, "invalid_request",
                        "{which} #{i} {text:.80}: {message}"
                    );
                    for word in ["ClientMsg", "u64", "i64", "OrderStatus", "Uuid"] {
                        assert!(!message.contains(word), "{which}: {word} in {message}");
                    }
                }
                other => panic!("{which} #{i} {text:.80}: expected an error, got {other:?}"),
            }
        }
        socket
            .stream
            .send(Message::Binary(vec![0xff, 0xfe, 0x00].into()))
            .await
            .expect("send");
        assert!(matches!(socket.next().await, ServerMsg::Error { .. }));
    }
    // Well-formed but not allowed: another restaurant's order, a table changing orders.
    kitchen
        .send_json(
            &json!({"type": "set_status", "request_id": "x", "order_id": other_order.id,
                           "status": "cancelled"}),
        )
        .await;
    assert!(matches!(kitchen.next().await, ServerMsg::Error { error, .. } if error == "not_found"));
    table
        .send_json(
            &json!({"type": "set_status", "request_id": "y", "order_id": order.id,
                           "status": "cancelled"}),
        )
        .await;
    assert!(matches!(table.next().await, ServerMsg::Error { error, .. } if error == "forbidden"));
    assert_eq!(
        before,
        digest(&app).await,
        "hostile socket messages changed something"
    );
    // Both sockets still work.
    kitchen
        .send_json(
            &json!({"type": "set_status", "request_id": "ok", "order_id": order.id,
                           "status": "accepted"}),
        )
        .await;
    kitchen
        .until(|m| matches!(m, ServerMsg::Ack { request_id } if request_id == "ok"))
        .await;
    table
        .until(|m| matches!(m, ServerMsg::OrderStatus { order_id, .. } if *order_id == order.id))
        .await;
}

// ---- hostile input on every endpoint --------------------------------------------------------------

/// What a body field holds, for choosing values of the wrong shape.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    Id,
    Status,
    Tags,
}

fn hostile_values(kind: Kind) -> Vec<Value> {
    let huge_int: Value = serde_json::from_str("9223372036854775808").expect("u64");
    let below_min: Value = serde_json::from_str("-9223372036854775809").expect("float");
    match kind {
        Kind::Str => vec![json!(7), json!(true), json!([]), json!({}), json!(1e20)],
        Kind::Int => vec![
            json!(1e20),
            huge_int,
            below_min,
            json!(i64::MIN),
            json!(-1),
            json!(2.5),
            json!("7"),
            json!(true),
            json!([1]),
        ],
        Kind::Bool => vec![json!("true"), json!(1), json!(1e20), json!({})],
        Kind::Id => vec![
            json!("not-a-uuid"),
            json!(SQL),
            json!(12345),
            json!(1e20),
            json!({}),
        ],
        Kind::Status => vec![
            json!(SQL),
            json!(HTML),
            json!("Served"),
            json!(3),
            json!(null),
        ],
        Kind::Tags => vec![
            json!("vegan"),
            json!([1]),
            json!([{}]),
            Value::Array(vec![json!(SQL); 13]),
        ],
    }
}

/// One JSON endpoint: a valid body and the (JSON pointer, kind) of each of its fields.
pub(crate) struct Endpoint {
    pub(crate) method: Method,
    pub(crate) path: String,
    bearer: Option<String>,
    pub(crate) body: Value,
    fields: Vec<(&'static str, Kind)>,
}

impl Endpoint {
    fn new(method: Method, path: String, bearer: Option<&str>, body: Value) -> Endpoint {
        Endpoint {
            method,
            path,
            bearer: bearer.map(str::to_string),
            body,
            fields: Vec::new(),
        }
    }
    fn field(mut self, pointer: &'static str, kind: Kind) -> Endpoint {
        self.fields.push((pointer, kind));
        self
    }
    pub(crate) async fn send(
        &self,
        app: &TestApp,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = app
            .http
            .request(self.method.clone(), app.url(&self.path))
            .header(CONTENT_TYPE, content_type)
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .body(body);
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }
}

/// Restaurant A with an admin, its chef, a guest and an order; restaurant B with its own of each.
pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) a: RestaurantFx,
    b: RestaurantFx,
    admin: String,
    pub(crate) chef_a: String,
    pub(crate) guest: String,
    order_a: Uuid,
    order_b: Uuid,
    category_a: String,
    category_b: String,
    chef_a_id: String,
    chef_b_id: String,
}

pub(crate) async fn world() -> World {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let a = app.restaurant("roma", 2, 2).await;
    let b = app.restaurant("bari", 2, 2).await;
    let chef_a = app.login_chef(&a).await;
    let guest = app.verify_phone(PHONE).await;
    let order_a = app
        .place_order(&guest, &a.tables[0], &[(&a.items[0], 1)])
        .await
        .id
        .get();
    let order_b = app
        .place_order(&guest, &b.tables[0], &[(&b.items[0], 1)])
        .await
        .id
        .get();
    let category = |r: &RestaurantFx| {
        format!(
            "SELECT id FROM menu_categories WHERE restaurant_id = '{}'",
            r.id
        )
    };
    let chef =
        |r: &RestaurantFx| format!("SELECT id FROM staff_users WHERE username = '{}'", r.chef.0);
    World {
        category_a: sql_text(&app, &category(&a)).await,
        category_b: sql_text(&app, &category(&b)).await,
        chef_a_id: sql_text(&app, &chef(&a)).await,
        chef_b_id: sql_text(&app, &chef(&b)).await,
        app,
        a,
        b,
        admin,
        chef_a,
        guest,
        order_a,
        order_b,
    }
}

pub(crate) fn endpoints(w: &World) -> Vec<Endpoint> {
    let (a, admin, chef) = (&w.a, w.admin.as_str(), w.chef_a.as_str());
    let rid = a.id;
    let admin_path = |p: String| format!("/api/v1/admin/restaurants/{rid}{p}");
    vec![
        Endpoint::new(Method::POST, "/api/v1/otp/send".into(), None, json!({"phone": OTHER_PHONE}))
            .field("/phone", Kind::Str),
        Endpoint::new(
            Method::POST,
            "/api/v1/otp/verify".into(),
            None,
            json!({"phone": PHONE, "code": "000000"}),
        )
        .field("/phone", Kind::Str)
        .field("/code", Kind::Str),
        Endpoint::new(
            Method::POST,
            "/api/v1/orders".into(),
            Some(&w.guest),
            json!({"table_token": a.tables[0].token, "note": "hi",
                   "items": [{"menu_item_id": a.items[0].id, "quantity": 1, "note": "no salt"}]}),
        )
        .field("/table_token", Kind::Str)
        .field("/note", Kind::Str)
        .field("/items", Kind::Str)
        .field("/items/0/menu_item_id", Kind::Id)
        .field("/items/0/quantity", Kind::Int)
        .field("/items/0/note", Kind::Str),
        Endpoint::new(
            Method::POST,
            "/api/v1/auth/login".into(),
            None,
            json!({"username": a.chef.0, "password": a.chef.1}),
        )
        .field("/username", Kind::Str)
        .field("/password", Kind::Str),
        Endpoint::new(
            Method::POST,
            format!("/api/v1/kitchen/orders/{}/status", w.order_a),
            Some(chef),
            json!({"status": "accepted"}),
        )
        .field("/status", Kind::Status),
        Endpoint::new(
            Method::PATCH,
            format!("/api/v1/kitchen/menu-items/{}", a.items[0].id),
            Some(chef),
            json!({"available": false}),
        )
        .field("/available", Kind::Bool),
        Endpoint::new(
            Method::PATCH,
            "/api/v1/kitchen/restaurant".into(),
            Some(chef),
            json!({"accepting_orders": false}),
        )
        .field("/accepting_orders", Kind::Bool),
        Endpoint::new(
            Method::POST,
            "/api/v1/admin/restaurants".into(),
            Some(admin),
            json!({"slug": "new-place", "name": "New", "currency": "EUR", "time_zone": "Europe/Rome"}),
        )
        .field("/slug", Kind::Str)
        .field("/name", Kind::Str)
        .field("/currency", Kind::Str)
        .field("/time_zone", Kind::Str),
        Endpoint::new(
            Method::PATCH,
            admin_path(String::new()),
            Some(admin),
            json!({"name": "Renamed", "currency": "GBP", "time_zone": "Europe/London",
                   "accepting_orders": false}),
        )
        .field("/name", Kind::Str)
        .field("/currency", Kind::Str)
        .field("/time_zone", Kind::Str)
        .field("/accepting_orders", Kind::Bool),
        Endpoint::new(
            Method::POST,
            admin_path("/categories".into()),
            Some(admin),
            json!({"name": "Desserts", "position": 1}),
        )
        .field("/name", Kind::Str)
        .field("/position", Kind::Int),
        Endpoint::new(
            Method::PATCH,
            admin_path(format!("/categories/{}", w.category_a)),
            Some(admin),
            json!({"name": "Starters", "position": 2}),
        )
        .field("/name", Kind::Str)
        .field("/position", Kind::Int),
        Endpoint::new(
            Method::POST,
            admin_path("/menu-items".into()),
            Some(admin),
            json!({"category_id": w.category_a, "name": "Tiramisu", "description": "Sweet",
                   "price_cents": 650, "available": true, "tags": ["sweet"], "position": 3}),
        )
        .field("/category_id", Kind::Id)
        .field("/name", Kind::Str)
        .field("/description", Kind::Str)
        .field("/price_cents", Kind::Int)
        .field("/available", Kind::Bool)
        .field("/tags", Kind::Tags)
        .field("/position", Kind::Int),
        Endpoint::new(
            Method::PATCH,
            admin_path(format!("/menu-items/{}", a.items[0].id)),
            Some(admin),
            json!({"name": "Renamed dish", "price_cents": 1, "available": false}),
        )
        .field("/name", Kind::Str)
        .field("/price_cents", Kind::Int)
        .field("/available", Kind::Bool),
        Endpoint::new(
            Method::POST,
            admin_path(format!("/menu-items/{}/option-groups", a.items[0].id)),
            Some(admin),
            json!({"name": "Size", "min": 0, "max": 2}),
        )
        .field("/name", Kind::Str)
        .field("/min", Kind::Int)
        .field("/max", Kind::Int),
        Endpoint::new(
            Method::POST,
            admin_path("/tables".into()),
            Some(admin),
            json!({"label": "T9"}),
        )
        .field("/label", Kind::Str),
        Endpoint::new(
            Method::PATCH,
            admin_path(format!("/tables/{}", a.tables[0].id)),
            Some(admin),
            json!({"label": "T8", "active": false}),
        )
        .field("/label", Kind::Str)
        .field("/active", Kind::Bool),
        Endpoint::new(
            Method::POST,
            admin_path("/staff".into()),
            Some(admin),
            json!({"username": "new-chef", "password": "new-chef-password"}),
        )
        .field("/username", Kind::Str)
        .field("/password", Kind::Str),
        Endpoint::new(
            Method::PATCH,
            admin_path(format!("/staff/{}", w.chef_a_id)),
            Some(admin),
            json!({"password": "another-password-9"}),
        )
        .field("/password", Kind::Str),
    ]
}

/// The last segment of a JSON pointer: the field an error must name.
fn field_name(pointer: &str) -> &str {
    pointer
        .rsplit('/')
        .find(|s| s.parse::<usize>().is_err())
        .unwrap_or(pointer)
}

#[actix_web::test]
async fn hostile_bodies_on_every_json_endpoint_get_400_naming_the_field_and_change_nothing() {
    let w = world().await;
    let app = &w.app;
    let calls = endpoints(&w);
    let before = digest(app).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_field = |e: &Endpoint| {
        let (pointer, _) = e.fields[0];
        let text = e.body.to_string();
        let value = e.body.pointer(pointer).expect("field").to_string();
        text.replacen(
            &value,
            &format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)),
            1,
        )
    };
    for e in &calls {
        let what = format!("{} {}", e.method, e.path);
        // Whole bodies that are not what was asked for.
        // Invalid UTF-8 inside a string value.
        let mut marked = e.body.clone();
        *marked.pointer_mut(e.fields[0].0).expect("field") = json!("@@");
        let marked = marked.to_string();
        let at = marked.find("@@").expect("marker");
        let mut invalid_utf8 = marked.clone().into_bytes();
        invalid_utf8.splice(at..at + 2, [0xc3, 0x28, 0xff]);
        // Raw control characters inside a JSON string (not escaped): not JSON.
        let raw_control = marked.replacen("@@", "A\u{1}\u{7}", 1).into_bytes();
        let raw: Vec<Vec<u8>> = vec![
            deep.clone().into_bytes(),
            deep_field(e).into_bytes(),
            invalid_utf8,
            b"\xef\xbb\xbf{}".to_vec(),
            b"{\"a\":1e999}".to_vec(),
            format!("{}{}", e.body, e.body).into_bytes(),
            b"\x00".to_vec(),
            format!("{} trailing", e.body).into_bytes(),
            raw_control,
        ];
        for body in raw {
            let res = e.send(app, "application/json", body.clone()).await;
            let text = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
            let got = expect_error(res, 400, "invalid_request").await;
            let message = got["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(':'),
                "{what} {text}: a field or `body` named: {message}"
            );
        }
        // Each field in turn given a value of the wrong shape, a huge or a negative number.
        for (pointer, kind) in &e.fields {
            for bad in hostile_values(*kind) {
                let mut body = e.body.clone();
                *body.pointer_mut(pointer).expect("field") = bad.clone();
                let res = e
                    .send(app, "application/json", body.to_string().into_bytes())
                    .await;
                let status = res.status();
                let text = res.text().await.expect("body");
                assert_no_internals(&text);
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
                // The one-time code is judged, not parsed: any string that is not the code is wrong.
                let ok_code = *pointer == "/code" && v["error"] == "invalid_code";
                assert!(
                    (status == 400
                        && v["error"] == "invalid_request"
                        && v["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains(field_name(pointer)))
                        || ok_code,
                    "{what}: {pointer} = {bad}: {status} {text}"
                );
            }
        }
        // Extra fields, smuggled next to the real ones.
        let mut body = e.body.clone();
        body["is_admin"] = json!(true);
        let res = e
            .send(app, "application/json", body.to_string().into_bytes())
            .await;
        expect_invalid(res, "is_admin").await;
    }
    assert_eq!(
        before,
        digest(app).await,
        "hostile bodies changed something"
    );
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

/// Sends a request head announcing a 10 MB body (by length or chunked) and only the first 96 KiB of
/// it (past the 64 KiB limit); returns the status line of the answer, which must come without the
/// rest ever being sent. With a `Content-Length`, the server must then drop the connection instead of
/// waiting for the rest.
async fn early_answer(app: &TestApp, path: &str, bearer: Option<&str>, framing: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
         Idempotency-Key: {}\r\n{auth}{framing}\r\n",
        app.port,
        Uuid::new_v4()
    );
    tcp.write_all(head.as_bytes()).await.expect("head");
    let start = vec![b' '; 96 * 1024];
    let first = if framing.contains("chunked") {
        let mut framed = format!("{:x}\r\n", start.len()).into_bytes();
        framed.extend_from_slice(&start);
        framed.extend_from_slice(b"\r\n");
        framed
    } else {
        start
    };
    // The server may answer (and stop reading) before even this much arrives.
    let _ = tcp.write_all(&first).await;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let answered = tokio::time::timeout(PATIENCE, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        answered.is_ok(),
        "no answer before the 10 MB body on {path} {framing:?}"
    );
    if framing.contains("chunked") {
        // actix-http reads and discards the rest of a chunked body it did not need, to keep the
        // connection alive (see the issue note: left open). The answer still came first.
        return status_line(&got);
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection stayed open for the rest of the body on {path} {framing:?}"
    );
    status_line(&got)
}

fn status_line(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[actix_web::test]
async fn a_ten_megabyte_body_is_refused_with_413_unread_and_the_server_stays_healthy() {
    let w = world().await;
    let app = &w.app;
    let before = digest(app).await;
    let length = "Content-Length: 10485760\r\n";
    let chunked = "Transfer-Encoding: chunked\r\n";
    for (path, bearer) in [
        ("/api/v1/otp/send", None),
        ("/api/v1/auth/login", None),
        ("/api/v1/orders", Some(w.guest.as_str())),
        ("/api/v1/admin/restaurants", Some(w.admin.as_str())),
    ] {
        for head in [length, chunked] {
            let status = early_answer(app, path, bearer, head).await;
            assert!(
                status.starts_with("HTTP/1.1 413"),
                "{path} {head:?}: {status}"
            );
        }
    }
    // Without a token the body is not even looked at.
    let status = early_answer(app, "/api/v1/orders", None, length).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    assert_eq!(before, digest(app).await);
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    // Still serving real work.
    app.place_order(&w.guest, &w.a.tables[1], &[(&w.a.items[1], 1)])
        .await;
}

#[actix_web::test]
async fn sql_and_html_in_every_string_field_are_refused_or_stored_as_inert_text() {
    let w = world().await;
    let app = &w.app;
    let rid = w.a.id;
    let admin = w.admin.as_str();
    for payload in [SQL, HTML] {
        // Fields with a format refuse it, naming the field.
        expect_invalid(otp_send(app, payload).await, "phone").await;
        expect_invalid(otp_verify(app, payload, "123456").await, "phone").await;
        let res = otp_verify(app, PHONE, payload).await;
        expect_error(res, 400, "invalid_code").await;
        let res = app
            .post_json(
                "/api/v1/auth/login",
                &json!({"username": payload, "password": payload}),
            )
            .await;
        expect_error(res, 401, "invalid_credentials").await;
        let res = app
            .set_status(&w.chef_a, &w.order_a.to_string(), payload)
            .await;
        expect_invalid(res, "status").await;
        let res = app
            .place_order_raw(
                &w.guest,
                &Uuid::new_v4().to_string(),
                &json!({"table_token": payload, "items": [{"menu_item_id": w.a.items[0].id, "quantity": 1}]}),
            )
            .await;
        expect_error(res, 404, "not_found").await;
        for (field, body) in [
            (
                "slug",
                json!({"slug": payload, "name": "x", "currency": "EUR", "time_zone": "Europe/Rome"}),
            ),
            (
                "currency",
                json!({"slug": "ok-slug", "name": "x", "currency": payload, "time_zone": "Europe/Rome"}),
            ),
            (
                "time_zone",
                json!({"slug": "ok-slug", "name": "x", "currency": "EUR", "time_zone": payload}),
            ),
        ] {
            let res = call(
                app,
                admin,
                Method::POST,
                "/api/v1/admin/restaurants",
                Some(&body),
            )
            .await;
            expect_invalid(res, field).await;
        }
        let res = call(
            app,
            admin,
            Method::POST,
            &format!("/api/v1/admin/restaurants/{rid}/staff"),
            Some(&json!({"username": payload, "password": "long-enough-password"})),
        )
        .await;
        expect_invalid(res, "username").await;
        // Free text is stored exactly as typed and hurts nothing.
        let order = app
            .place_order_raw(
                &w.guest,
                &Uuid::new_v4().to_string(),
                &json!({"table_token": w.a.tables[0].token, "note": payload,
                        "items": [{"menu_item_id": w.a.items[0].id, "quantity": 1, "note": payload}]}),
            )
            .await;
        assert_eq!(order.status(), 201);
        let order: Value = order.json().await.expect("json");
        assert_eq!(
            (order["note"].as_str(), order["items"][0]["note"].as_str()),
            (Some(payload), Some(payload))
        );
        let slug = if payload == SQL {
            "sql-place"
        } else {
            "html-place"
        };
        let res = call(
            app,
            admin,
            Method::POST,
            "/api/v1/admin/restaurants",
            Some(&json!({
                "slug": slug, "name": payload, "currency": "EUR", "time_zone": "Europe/Rome"
            })),
        )
        .await;
        assert_eq!(res.status(), 201);
        let created: Value = res.json().await.expect("json");
        assert_eq!(created["name"], payload);
        let new_rid = created["id"].as_str().expect("id").to_string();
        let res = call(
            app,
            admin,
            Method::POST,
            &format!("/api/v1/admin/restaurants/{new_rid}/categories"),
            Some(&json!({"name": payload})),
        )
        .await;
        assert_eq!(res.status(), 201);
        let cat: Value = res.json().await.expect("json");
        let res = call(
            app,
            admin,
            Method::POST,
            &format!("/api/v1/admin/restaurants/{new_rid}/menu-items"),
            Some(
                &json!({"category_id": cat["id"], "name": payload, "description": payload,
                         "price_cents": 100, "tags": [payload.to_lowercase()]}),
            ),
        )
        .await;
        assert_eq!(res.status(), 201);
        let item: Value = res.json().await.expect("json");
        assert_eq!(
            (item["name"].as_str(), item["description"].as_str()),
            (Some(payload), Some(payload))
        );
        let res = call(
            app,
            admin,
            Method::POST,
            &format!("/api/v1/admin/restaurants/{new_rid}/tables"),
            Some(&json!({"label": payload})),
        )
        .await;
        assert_eq!(res.status(), 201);
        let table: Value = res.json().await.expect("json");
        assert_eq!(table["label"], payload);
        // The guest menu hands it back as the same inert string.
        let menu: Value = app
            .get(
                &format!("/api/v1/tables/{}", table["token"].as_str().expect("token")),
                None,
            )
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(menu["restaurant"]["name"], payload);
        assert_eq!(menu["menu"]["categories"][0]["items"][0]["name"], payload);
        // A password full of SQL is just a password.
        let username = format!("{slug}-chef");
        let res = call(
            app,
            admin,
            Method::POST,
            &format!("/api/v1/admin/restaurants/{new_rid}/staff"),
            Some(&json!({"username": username, "password": format!("{payload}{payload}")})),
        )
        .await;
        assert_eq!(res.status(), 201);
        app.login(&username, &format!("{payload}{payload}")).await;
    }
    // Every table is still there, with every row it should have.
    app.assert_sql(
        "nothing was dropped",
        "SELECT (SELECT count(*) FROM orders) = 4 AND (SELECT count(*) FROM restaurants) = 4 \
         AND (SELECT count(*) FROM order_items) = 4",
    )
    .await;
}

#[actix_web::test]
async fn unknown_and_other_tenant_ids_and_dead_table_tokens_are_not_found_and_change_nothing() {
    let w = world().await;
    let app = &w.app;
    let (a, b, admin) = (&w.a, &w.b, w.admin.as_str());
    let random = Uuid::new_v4();
    let before = digest(app).await;
    // Kitchen: ids of B, unknown ids, malformed ids.
    for order in [
        w.order_b.to_string(),
        random.to_string(),
        "garbage".into(),
        SQL.to_string(),
    ] {
        let res = app
            .set_status(&w.chef_a, &urlencode(&order), "accepted")
            .await;
        expect_error(res, 404, "not_found").await;
    }
    for item in [b.items[0].id, random] {
        expect_error(
            app.set_available(&w.chef_a, item, false).await,
            404,
            "not_found",
        )
        .await;
    }
    // Admin: B's sub-resources addressed under A, unknown restaurants, malformed ids.
    let ra = a.id;
    let under_a = [
        (Method::GET, format!("/categories/{}", w.category_b), None),
        (
            Method::PATCH,
            format!("/categories/{}", w.category_b),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/categories/{}", w.category_b),
            None,
        ),
        (Method::GET, format!("/menu-items/{}", b.items[0].id), None),
        (
            Method::PATCH,
            format!("/menu-items/{}", b.items[0].id),
            Some(json!({"price_cents": 1})),
        ),
        (
            Method::DELETE,
            format!("/menu-items/{}", b.items[0].id),
            None,
        ),
        (Method::GET, format!("/tables/{}", b.tables[0].id), None),
        (
            Method::PATCH,
            format!("/tables/{}", b.tables[0].id),
            Some(json!({"active": false})),
        ),
        (Method::DELETE, format!("/tables/{}", b.tables[0].id), None),
        (
            Method::POST,
            format!("/tables/{}/rotate-token", b.tables[0].id),
            None,
        ),
        (
            Method::GET,
            format!("/tables/{}/qr.svg", b.tables[0].id),
            None,
        ),
        (
            Method::PATCH,
            format!("/staff/{}", w.chef_b_id),
            Some(json!({"password": "hijacked-password"})),
        ),
        (Method::DELETE, format!("/staff/{}", w.chef_b_id), None),
        (Method::GET, format!("/menu-items/{random}"), None),
        (Method::GET, "/menu-items/not-an-id".into(), None),
        (Method::GET, format!("/tables/{}", urlencode(SQL)), None),
    ];
    for (method, path, body) in under_a {
        let res = call(
            app,
            admin,
            method.clone(),
            &format!("/api/v1/admin/restaurants/{ra}{path}"),
            body.as_ref(),
        )
        .await;
        expect_error(res, 404, "not_found").await;
    }
    for rid in [random.to_string(), "nope".into()] {
        let res = call(
            app,
            admin,
            Method::GET,
            &format!("/api/v1/admin/restaurants/{rid}"),
            None,
        )
        .await;
        expect_error(res, 404, "not_found").await;
        let res = call(
            app,
            admin,
            Method::POST,
            &format!("/api/v1/admin/restaurants/{rid}/tables"),
            Some(&json!({"label": "x"})),
        )
        .await;
        expect_error(res, 404, "not_found").await;
    }
    // A dish of B in a menu item of A's category: refused, naming the field.
    let res = call(
        app,
        admin,
        Method::POST,
        &format!("/api/v1/admin/restaurants/{ra}/menu-items"),
        Some(&json!({"category_id": w.category_b, "name": "x", "price_cents": 1})),
    )
    .await;
    let status = res.status().as_u16();
    assert!(
        status == 400 || status == 404,
        "category of another restaurant: {status}"
    );
    // Guests: B's dish at A's table, unknown dishes, unknown orders.
    for item in [b.items[0].id, random] {
        let body = json!({"table_token": a.tables[0].token, "items": [{"menu_item_id": item, "quantity": 1}]});
        let res = app
            .place_order_raw(&w.guest, &Uuid::new_v4().to_string(), &body)
            .await;
        expect_invalid(res, "items[0].menu_item_id").await;
    }
    for path in [
        format!("/api/v1/orders/{random}"),
        "/api/v1/orders/garbage".into(),
    ] {
        expect_error(app.get(&path, Some(&w.guest)).await, 404, "not_found").await;
    }
    assert_eq!(before, digest(app).await, "unknown ids changed something");

    // Dead table tokens: rotated, deactivated, deleted, or a live one with a character changed.
    let mut socket = app.table_socket(&a.tables[0].token, "").await;
    socket.hello_snapshot().await;
    let res = call(
        app,
        admin,
        Method::POST,
        &format!(
            "/api/v1/admin/restaurants/{ra}/tables/{}/rotate-token",
            a.tables[0].id
        ),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(close_code_of(&mut socket).await, Some(1008));
    let res = call(
        app,
        admin,
        Method::PATCH,
        &format!("/api/v1/admin/restaurants/{ra}/tables/{}", a.tables[1].id),
        Some(&json!({"active": false})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = call(
        app,
        admin,
        Method::DELETE,
        &format!(
            "/api/v1/admin/restaurants/{}/tables/{}",
            b.id, b.tables[1].id
        ),
        None,
    )
    .await;
    assert_eq!(res.status(), 204);
    let mut mangled = b.tables[0].token.clone();
    let last = if mangled.ends_with('A') { "B" } else { "A" };
    mangled.replace_range(mangled.len() - 1.., last);
    let orders_before = sql_count(app, "SELECT count(*) FROM orders").await;
    for token in [
        &a.tables[0].token,
        &a.tables[1].token,
        &b.tables[1].token,
        &mangled,
    ] {
        expect_error(
            app.get(&format!("/api/v1/tables/{token}"), None).await,
            404,
            "not_found",
        )
        .await;
        let body = json!({"table_token": token, "items": [{"menu_item_id": a.items[0].id, "quantity": 1}]});
        let res = app
            .place_order_raw(&w.guest, &Uuid::new_v4().to_string(), &body)
            .await;
        expect_error(res, 404, "not_found").await;
        let mut socket = app.table_socket(token, "").await;
        assert_eq!(socket.closed_with().await, Some(1008), "{token}");
    }
    assert_eq!(
        orders_before,
        sql_count(app, "SELECT count(*) FROM orders").await
    );
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

// ---- output: QR sheet, logs -----------------------------------------------------------------------

#[actix_web::test]
async fn markup_in_a_restaurant_name_or_table_label_is_escaped_on_the_qr_sheet() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let name = "<script>alert('r')</script> & \"Co\"";
    let label = "<img src=x onerror=alert(1)>";
    let res = call(
        &app,
        &admin,
        Method::POST,
        "/api/v1/admin/restaurants",
        Some(&json!({
            "slug": "xss", "name": name, "currency": "EUR", "time_zone": "Europe/Rome"
        })),
    )
    .await;
    assert_eq!(res.status(), 201);
    let rid = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let res = call(
        &app,
        &admin,
        Method::POST,
        &format!("/api/v1/admin/restaurants/{rid}/tables"),
        Some(&json!({"label": label})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let res = call(
        &app,
        &admin,
        Method::GET,
        &format!("/api/v1/admin/restaurants/{rid}/qr-sheet"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_security_headers("qr-sheet", &res);
    let html = res.text().await.expect("html");
    assert!(!html.contains("<script"), "raw script tag on the sheet");
    assert!(!html.contains("<img"), "raw img tag on the sheet");
    assert!(
        !html.contains("onerror=alert(1)>"),
        "raw attribute on the sheet"
    );
    assert!(html.contains("&lt;script&gt;alert(&#39;r&#39;)&lt;/script&gt; &amp; &quot;Co&quot;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

/// The server binary as a child process, killed however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's output into a shared buffer, line by line.
fn capture(
    pipe: impl std::io::Read + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut log = into.lock().expect("lock");
            log.push_str(&line);
            log.push('\n');
        }
    })
}

#[actix_web::test]
async fn secrets_never_reach_the_log_or_an_error_body() {
    scan2order::install_crypto_provider();
    let db_name = crate::helpers::fresh_database().await;
    let wa = crate::helpers::FakeWhatsApp::start().await;
    let settings = test_settings(&db_name, &wa);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .envs([
            (
                "SCAN2ORDER__DATABASE__URL",
                settings.database.url.expose().to_string(),
            ),
            ("SCAN2ORDER__DATABASE__CREATE_IF_MISSING", "false".into()),
            ("SCAN2ORDER__DATABASE__POOL_SIZE", "4".into()),
            ("SCAN2ORDER__HTTP__PORT", "0".into()),
            ("SCAN2ORDER__HTTP__WORKERS", "2".into()),
            ("SCAN2ORDER__ENGINE__SHARDS", "1".into()),
            ("SCAN2ORDER__DEMO__SEED_ON_START", "false".into()),
            ("SCAN2ORDER__WHATSAPP__MODE", "cloud".into()),
            ("SCAN2ORDER__WHATSAPP__API_BASE_URL", wa.base_url.clone()),
            (
                "SCAN2ORDER__WHATSAPP__PHONE_NUMBER_ID",
                crate::helpers::WA_PHONE_NUMBER_ID.into(),
            ),
            ("SCAN2ORDER__WHATSAPP__ACCESS_TOKEN", WA_ACCESS_TOKEN.into()),
            ("SCAN2ORDER__WHATSAPP__OUTBOX_POLL_MS", "200".into()),
            ("SCAN2ORDER__RATE_LIMITS__ENABLED", "false".into()),
            ("SCAN2ORDER__LOG__LEVEL", "debug".into()),
            ("SCAN2ORDER__LOG__FORMAT", "json".into()),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the server binary starts");
    let mut child = KillOnDrop(child);
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let readers = [
        capture(child.0.stdout.take().expect("stdout"), log.clone()),
        capture(child.0.stderr.take().expect("stderr"), log.clone()),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let port: u16 = loop {
        let found = log.lock().expect("lock").lines().find_map(|l| {
            let l = Some(l).filter(|l| l.contains("Scan2Order listening"))?;
            let at = l.find("\"port\":")? + 7;
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
        if let Some(p) = found {
            break p;
        }
        if tokio::time::Instant::now() > deadline || child.0.try_wait().ok().flatten().is_some() {
            panic!("the server did not start: {}", log.lock().expect("lock"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db_name,
        http: reqwest::Client::new(),
        wa,
        handle: None,
        settings,
    };

    // A full flow, keeping every secret and every error body.
    let mut secrets: Vec<String> = vec![
        WA_ACCESS_TOKEN.into(),
        PHONE.into(),
        PHONE.trim_start_matches('+').into(),
        ADMIN.1.into(),
    ];
    let mut error_bodies = Vec::new();
    let admin = admin_token(&app).await;
    secrets.push(admin.clone());
    let r = app.restaurant("roma", 2, 1).await;
    secrets.push(r.chef.1.clone());
    let res = call(
        &app,
        &admin,
        Method::POST,
        &format!("/api/v1/admin/restaurants/{}/staff", r.id),
        Some(&json!({"username": "second-chef", "password": "second-chef-secret-pw"})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let uid = res.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    secrets.push("second-chef-secret-pw".into());
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "second-chef", "password": "wrong-guess-secret"}),
        )
        .await;
    error_bodies.push(res.text().await.expect("body"));
    secrets.push("wrong-guess-secret".into());
    let chef = app.login("second-chef", "second-chef-secret-pw").await;
    secrets.push(chef.clone());
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let res = otp_send(&app, PHONE).await;
    assert_eq!(res.status(), 202);
    let code = app.wa.code_for(PHONE).await;
    let res = otp_verify(&app, PHONE, &wrong_code(&code, 0)).await;
    error_bodies.push(res.text().await.expect("body"));
    let res = otp_verify(&app, PHONE, &code).await;
    assert_eq!(res.status(), 200);
    let customer = res.json::<Value>().await.expect("json")["customer_token"]
        .as_str()
        .expect("token")
        .to_string();
    secrets.push(customer.clone());
    let order = app
        .place_order(&customer, &r.tables[0], &[(&r.items[0], 2)])
        .await;
    for status in ["accepted", "ready", "served"] {
        assert_eq!(
            app.set_status(&chef, &order.id.to_string(), status)
                .await
                .status(),
            200
        );
    }
    let res = app
        .set_status(&chef, &order.id.to_string(), "cancelled")
        .await;
    error_bodies.push(res.text().await.expect("body"));
    app.wa
        .wait_for(|m| m.template() == app.settings.whatsapp.order_ready_template)
        .await;
    let res = call(
        &app,
        &admin,
        Method::PATCH,
        &format!("/api/v1/admin/restaurants/{}/staff/{uid}", r.id),
        Some(&json!({"password": "third-secret-password"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    secrets.push("third-secret-password".into());
    assert_eq!(close_code_of(&mut kitchen).await, Some(1008));
    let res = app.get("/api/v1/kitchen/orders", Some(&chef)).await;
    error_bodies.push(res.text().await.expect("body"));
    let res = call(&app, &admin, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(res.status(), 204);
    let res = app.get("/api/v1/auth/me", Some(&admin)).await;
    error_bodies.push(res.text().await.expect("body"));
    let res = app
        .get("/api/v1/me/orders?before=garbage", Some(&customer))
        .await;
    error_bodies.push(res.text().await.expect("body"));
    // A clean shutdown flushes the writers and the log; the readers then see the pipes close.
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(stopped.success());
    let exit = child.0.wait().expect("the server exits");
    assert!(exit.success(), "clean shutdown: {exit}");
    drop(child);
    for r in readers {
        let _ = r.join();
    }
    let log = log.lock().expect("lock").clone();
    assert!(
        log.contains("staff signed in"),
        "the log was captured: {log:.2000}"
    );
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "debug lines were captured"
    );
    // Nothing above was an error of the server's, and neither is a shutdown: an operator's alert on
    // ERROR must not fire on every deploy.
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
    secrets.push(code);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "secret {secret:?} in the log"
        );
        for body in &error_bodies {
            assert!(
                !body.contains(secret.as_str()),
                "secret {secret:?} in {body}"
            );
        }
    }
    assert_eq!(error_bodies.len(), 6);
}
