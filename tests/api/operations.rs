//! Operators' controls: metrics, shard figures, passivation, restart of a crashed restaurant actor.

use std::time::Duration;

use scan2order_actors::restaurant::InjectPanic;
use scan2order_schema::domain::RestaurantId;
use scan2order_schema::wire::ServerMsg;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, until, TestApp};

async fn scrape(app: &TestApp) -> String {
    let res = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    res.text().await.expect("text")
}

/// The sum of every sample of a series (all label sets) in a Prometheus text page.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(series) && l[series.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_web::test]
async fn metrics_expose_every_series_and_they_move_with_traffic() {
    let app = spawn_app().await;
    let r = app.restaurant("metrics", 2, 2).await;
    let chef = app.login_chef(&r).await;
    let before = scrape(&app).await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let guest = app.verify_phone("+447700900777").await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    kitchen.next().await;
    assert_eq!(
        app.set_status(&chef, &order.id.to_string(), "ready")
            .await
            .status(),
        200
    );
    kitchen.next().await;
    app.wa
        .wait_for(|m| m.template() == "scan2order_order_ready")
        .await;
    let res = app
        .place_order_raw(
            &guest,
            "k-refused",
            &serde_json::json!({"table_token": r.tables[0].token, "items": []}),
        )
        .await;
    assert_eq!(res.status(), 400);

    let after = scrape(&app).await;
    for series in [
        "s2o_sockets",
        "s2o_socket_connects_total",
        "s2o_orders_placed_total",
        "s2o_orders_refused_total",
        "s2o_status_changes_total",
        "s2o_commit_batch_size_count",
        "s2o_commit_seconds_count",
        "s2o_order_delivery_seconds_count",
        "s2o_outbox_backlog",
        "s2o_whatsapp_sends_total",
        "s2o_shard_mailbox_depth",
        "s2o_shard_writer_queue",
        "s2o_shard_restaurants",
        "s2o_db_pool_connections",
        "s2o_restaurant_restarts",
        "s2o_rate_limiter_keys",
    ] {
        assert!(after.contains(series), "{series} missing from /metrics");
    }
    // Counters are process-wide (tests share the process): compare before and after.
    for (series, at_least) in [
        ("s2o_orders_placed_total", 1.0),
        ("s2o_orders_refused_total", 1.0),
        ("s2o_status_changes_total", 1.0),
        ("s2o_commit_batch_size_count", 2.0),
        ("s2o_order_delivery_seconds_count", 1.0),
        ("s2o_socket_connects_total", 1.0),
    ] {
        let moved = sample(&after, series) - sample(&before, series);
        assert!(
            moved >= at_least,
            "{series} moved by {moved}, expected at least {at_least}"
        );
    }
    assert!(sample(&after, "s2o_shard_restaurants") >= 1.0);
    // The code, the "received" and the "ready" messages; the notifier counts after recording results.
    let sent_before = sample(&before, "s2o_whatsapp_sends_total");
    let mut page = after;
    until("three WhatsApp sends counted", async || {
        page = scrape(&app).await;
        sample(&page, "s2o_whatsapp_sends_total") - sent_before >= 3.0
    })
    .await;
}

#[actix_web::test]
async fn the_shard_endpoint_shows_load_per_shard_and_the_busiest_restaurants() {
    let app = spawn_app().await;
    app.staff("ops-admin", "ops-admin-password", "admin", None)
        .await;
    let admin = app.login("ops-admin", "ops-admin-password").await;
    let hot = app.restaurant("hot", 1, 1).await;
    let cold = app.restaurant("cold", 1, 1).await;
    for _ in 0..20 {
        let res = app
            .http
            .get(app.url(&format!("/api/v1/tables/{}", hot.tables[0].token)))
            .send()
            .await
            .expect("req");
        assert_eq!(res.status(), 200);
    }
    let res = app
        .http
        .get(app.url(&format!("/api/v1/tables/{}", cold.tables[0].token)))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    let body: Value = app
        .http
        .get(app.url("/api/v1/admin/shards"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    let shards = body["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2);
    let total: u64 = shards
        .iter()
        .map(|s| s["messages_handled"].as_u64().unwrap_or(0))
        .sum();
    assert!(total >= 21, "{body}");
    for key in [
        "restaurants",
        "mailbox_depth",
        "messages_per_s",
        "p99_ms",
        "writer_queue",
        "batches",
    ] {
        assert!(shards[0].get(key).is_some(), "{key} missing: {body}");
    }
    let busiest = body["restaurants"].as_array().expect("restaurants");
    assert_eq!(
        busiest[0]["restaurant_id"],
        hot.id.to_string(),
        "busiest first: {body}"
    );
    assert!(busiest[0]["messages"].as_u64() >= Some(20));
}

#[actix_web::test]
async fn an_idle_restaurant_passivates_and_the_next_request_reactivates_it() {
    let app = spawn_app_with(|s| s.engine.passivate_after_s = 1).await;
    let r = app.restaurant("sleepy", 1, 1).await;
    let rid = RestaurantId::from(r.id);
    let menu = app.url(&format!("/api/v1/tables/{}", r.tables[0].token));

    // While a socket is open it stays, however many idleness checks pass.
    let mut socket = app.table_socket(&r.tables[0].token, "").await;
    socket.hello_snapshot().await;
    until("several idleness checks past the idle time", async || {
        app.restaurant_stats(r.id)
            .await
            .is_some_and(|s| s.idle_checks >= 8)
    })
    .await;
    assert_eq!(app.engine().passivations(), 0);
    drop(socket);

    until("passivation", async || app.engine().passivations() == 1).await;
    assert!(app.engine().active_restaurant(rid).is_none());
    assert_eq!(app.engine().activations(), 1);
    let res = app.http.get(&menu).send().await.expect("req");
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.engine().activations(),
        2,
        "the request activated it again"
    );
    assert_eq!(app.engine().restarts(), 0, "a passivation is not a restart");
}

#[actix_web::test]
async fn a_crashed_restaurant_actor_is_restarted_from_postgres_and_its_sockets_resnapshot() {
    let app = spawn_app_with(|s| s.sockets.ping_interval_s = 1).await;
    let r = app.restaurant("crashy", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900888").await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    let (epoch, _, _) = kitchen.hello_snapshot().await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 2)])
        .await;
    kitchen.next().await;

    let addr = app
        .engine()
        .active_restaurant(RestaurantId::from(r.id))
        .expect("active");
    addr.do_send(InjectPanic);
    assert_eq!(
        kitchen.closed_with().await,
        Some(1001),
        "the socket of the dead actor is closed"
    );

    // The next request brings it back from Postgres under a new epoch, with its live order.
    let mut kitchen = app
        .kitchen_socket(&chef, &format!("&epoch={epoch}&since=1"))
        .await;
    match kitchen.next().await {
        ServerMsg::Hello {
            epoch: new_epoch, ..
        } => assert_ne!(new_epoch, epoch),
        other => panic!("expected hello, got {other:?}"),
    }
    match kitchen.next().await {
        ServerMsg::Snapshot { orders, .. } => {
            assert_eq!(orders.len(), 1);
            assert_eq!(orders[0].id, order.id);
        }
        other => panic!("expected a snapshot under the new epoch, got {other:?}"),
    }
    assert_eq!(app.engine().restarts(), 1);
    let next = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    assert_eq!(
        next.ticket_no,
        order.ticket_no + 1,
        "ticket numbers continue after the restart"
    );
}

#[actix_web::test]
async fn the_shards_command_prints_the_running_servers_shard_table() {
    let app = spawn_app().await;
    app.staff("cli-admin", "cli-admin-password", "admin", None)
        .await;
    let admin = app.login("cli-admin", "cli-admin-password").await;
    let r = app.restaurant("busy", 1, 1).await;
    let res = app
        .http
        .get(app.url(&format!("/api/v1/tables/{}", r.tables[0].token)))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .args(["shards", "--url", &app.address])
        .env("SCAN2ORDER_TOKEN", &admin)
        .output()
        .await
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("shard") && text.contains("mailbox") && text.contains("p99 ms"),
        "{text}"
    );
    assert!(
        text.contains(&r.id.to_string()),
        "the active restaurant is listed: {text}"
    );
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .args(["shards", "--url", &app.address, "--token", "wrong"])
        .output()
        .await
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));
}

#[actix_web::test]
async fn json_logs_are_one_json_object_per_line() {
    // A database that does not exist yet: `migrate` creates it and applies every migration, logging each.
    let name = format!("s2o_test_{}", uuid::Uuid::new_v4().simple());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .args(["migrate"])
        .env("SCAN2ORDER__LOG__FORMAT", "json")
        .env(
            "SCAN2ORDER__DATABASE__URL",
            format!("{}/{name}", crate::helpers::PG_BASE),
        )
        .output()
        .await
        .expect("runs");
    crate::helpers::drop_database(name);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = logs.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "no log lines: {logs}");
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[actix_web::test]
async fn production_start_refuses_unsafe_settings_with_a_clear_message() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .args(["serve"])
        .env("SCAN2ORDER__HTTP__ENVIRONMENT", "production")
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(
        err.contains("whatsapp.mode") && err.contains("https"),
        "{err}"
    );
}

#[actix_web::test]
async fn shutdown_refuses_new_writes_with_a_retryable_503_and_keeps_serving_reads() {
    let app = spawn_app().await;
    let r = app.restaurant("draining", 1, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900778").await;
    let placed = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);

    // What a SIGTERM does first.
    app.engine().begin_drain();

    let body = serde_json::json!({
        "table_token": r.tables[1].token,
        "items": [{"menu_item_id": r.items[0].id, "quantity": 1}],
    });
    let res = app.place_order_raw(&guest, "drain-key-1", &body).await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        res.headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close"),
        "keep-alive connections end during shutdown"
    );
    let err: Value = res.json().await.expect("error body");
    assert_eq!(err["error"], "unavailable");
    let res = app.set_status(&chef, &placed.id.to_string(), "ready").await;
    assert_eq!(res.status(), 503, "status changes are refused too");

    // Nothing refused was taken: one order, still placed.
    let (orders, status): (i64, String) = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use scan2order_schema::schema::orders::dsl as o;
        let mut conn = app.db().await;
        let n = o::orders
            .count()
            .get_result(&mut conn)
            .await
            .expect("count");
        let s = o::orders
            .select(o::status)
            .first(&mut conn)
            .await
            .expect("status");
        (n, s)
    };
    assert_eq!((orders, status.as_str()), (1, "placed"));

    // Reads still work, and readiness is red so a balancer stops sending traffic here.
    let menu = app
        .http
        .get(app.url(&format!("/api/v1/tables/{}", r.tables[0].token)))
        .send()
        .await
        .expect("menu");
    assert_eq!(menu.status(), 200);
    let ready = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.expect("readyz body");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{body}"
    );
}

#[actix_web::test]
async fn shutdown_stops_listening_at_once_so_clients_go_elsewhere() {
    let app = spawn_app().await;
    let r = app.restaurant("listener", 1, 1).await;
    // A socket that will not answer the closing handshake keeps the shutdown draining for a while.
    let mut held = app.table_socket(&r.tables[0].token, "").await;
    held.hello_snapshot().await;
    let handle = app.handle.clone().expect("handle");
    let shutdown = actix_web::rt::spawn(async move { handle.shutdown().await });
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], app.port));
    let deadline = tokio::time::Instant::now() + crate::helpers::PATIENCE;
    let refused = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                break !shutdown.is_finished();
            }
            _ if tokio::time::Instant::now() > deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(
        refused,
        "new connections must be refused while the old process drains, not queue in its backlog"
    );
    shutdown.await.expect("shutdown");
    drop(held);
}

#[actix_web::test]
async fn the_server_binary_cannot_create_a_guest_session_without_a_one_time_code() {
    // Load-test sessions are minted by the load tool; the production binary has no such command.
    let dir = std::env::temp_dir().join(format!("s2o-no-mint-{}", uuid::Uuid::new_v4().simple()));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .args(["load-tokens", "--count", "1", "--out"])
        .arg(&dir)
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success(), "the command is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists(), "no token file was written");
    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_scan2order"))
        .arg("--help")
        .output()
        .await
        .expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && text.contains("seed-demo"),
        "{text}"
    );
    assert!(!text.contains("load-tokens"), "{text}");
}
