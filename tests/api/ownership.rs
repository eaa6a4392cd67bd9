//! Ownership of restaurants: the lease a node runs a restaurant under, the fence every write
//! transaction checks, the keeper that notices a lease taken elsewhere, release at shutdown, and the
//! cluster and owner endpoints.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use scan2order_schema::leases::{self, Fence, Takeover};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;

/// What another node's takeover does to the lease row (as `leases::acquire` would on that node).
fn taken_by_another_node(restaurant: Uuid) -> String {
    format!(
        "UPDATE restaurant_leases SET node_id = 'another-node', fence = fence + 1, \
         expires_at = now() + interval '1 hour' WHERE restaurant_id = '{restaurant}'"
    )
}

async fn run_sql(app: &TestApp, sql: &str) {
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .expect("sql");
}

#[actix_web::test]
async fn a_write_under_a_fence_another_node_replaced_commits_nothing() {
    // Renewals far apart: the only thing that can notice the takeover is the write's own check.
    let app = spawn_app_with(|s| s.cluster.lease_ttl_ms = 600_000).await;
    let r = app.restaurant("fenced", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+4915112345601").await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    app.place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    app.assert_sql(
        "this node holds the lease",
        &format!(
            "(SELECT node_id = '{}' AND fence = 1 FROM restaurant_leases WHERE restaurant_id = '{}')",
            app.engine().node_id(),
            r.id
        ),
    )
    .await;

    run_sql(&app, &taken_by_another_node(r.id)).await;
    let key = Uuid::new_v4().to_string();
    let body = order_body(&r.tables[0], &[(&r.items[0], 2)]);
    let refused = app.place_order_raw(&guest, &key, &body).await;
    expect_error(refused, 503, "unavailable").await;
    app.assert_sql(
        "the refused order was not committed",
        &format!("NOT EXISTS (SELECT 1 FROM orders WHERE idempotency_key = '{key}')"),
    )
    .await;
    // The actor stopped: its kitchen reconnects to wherever the restaurant lives now.
    assert_eq!(kitchen.closed_with().await, Some(1001));
    assert_eq!(app.engine().leases_lost(), 1);

    // One node on its own takes the lease back (an earlier run's writes are fenced off), and the
    // guest's retry with the same key is placed once.
    let res = app.place_order_raw(&guest, &key, &body).await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    app.assert_sql(
        "placed once, under a newer fence",
        &format!(
            "(SELECT count(*) = 1 FROM orders WHERE idempotency_key = '{key}') AND \
             (SELECT node_id = '{}' AND fence = 3 FROM restaurant_leases WHERE restaurant_id = '{}')",
            app.engine().node_id(),
            r.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn a_status_change_and_a_toggle_under_a_stale_fence_commit_nothing() {
    let app = spawn_app_with(|s| s.cluster.lease_ttl_ms = 600_000).await;
    let r = app.restaurant("fenced-kitchen", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+4915112345602").await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;

    run_sql(&app, &taken_by_another_node(r.id)).await;
    let res = app
        .set_status(&chef, &order.id.to_string(), "accepted")
        .await;
    expect_error(res, 503, "unavailable").await;
    app.assert_sql(
        "the status did not move",
        &format!(
            "(SELECT status = 'placed' FROM orders WHERE id = '{}') AND \
             (SELECT count(*) = 1 FROM order_status_history WHERE order_id = '{}')",
            order.id, order.id
        ),
    )
    .await;

    // The refusal stopped the actor; a read starts it again here (one node takes its lease back).
    let res = app.get("/api/v1/kitchen/orders", Some(&chef)).await;
    assert_eq!(res.status(), 200);
    run_sql(&app, &taken_by_another_node(r.id)).await;
    let res = app.set_accepting(&chef, false).await;
    expect_error(res, 503, "unavailable").await;
    app.assert_sql(
        "the restaurant still accepts orders, menu version unchanged",
        &format!(
            "(SELECT accepting_orders AND menu_version = 1 FROM restaurants WHERE id = '{}')",
            r.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn the_lease_keeper_stops_a_restaurant_whose_lease_another_node_took() {
    // Renewed every 100 ms: the keeper, not a write, finds the lease gone.
    let app = spawn_app_with(|s| s.cluster.lease_ttl_ms = 300).await;
    let r = app.restaurant("kept", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let fence = app.restaurant_stats(r.id).await.expect("active").fence;

    run_sql(&app, &taken_by_another_node(r.id)).await;
    assert_eq!(kitchen.closed_with().await, Some(1001));
    assert_eq!(app.engine().leases_lost(), 1);
    // The keeper left the other node's lease alone.
    app.assert_sql(
        "the other node keeps its lease",
        &format!(
            "(SELECT node_id = 'another-node' AND fence = {} FROM restaurant_leases \
             WHERE restaurant_id = '{}')",
            fence + 1,
            r.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn a_fleet_takes_a_lease_over_only_when_it_expired_and_fences_only_grow() {
    let app = spawn_app().await;
    let r = app.restaurant("leased", 1, 1).await;
    let mut conn = app.db().await;
    let ttl = Duration::from_secs(60);
    let a = leases::acquire(&mut conn, r.id, "node-a", ttl, Takeover::WhenExpired)
        .await
        .expect("sql")
        .expect("free lease taken");
    assert_eq!(a.previous_node, None);
    let a = a.lease;
    assert_eq!((a.node_id.as_str(), a.fence), ("node-a", 1));
    let held_a = Fence {
        restaurant_id: r.id,
        fence: 1,
    };
    assert!(
        leases::acquire(&mut conn, r.id, "node-b", ttl, Takeover::WhenExpired)
            .await
            .expect("sql")
            .is_none(),
        "a running lease is not taken"
    );
    assert_eq!(
        leases::renew(&mut conn, "node-a", ttl).await.expect("sql"),
        vec![held_a]
    );

    // Released, the next node starts at once, under a greater fence.
    assert_eq!(
        leases::release(&mut conn, "node-a", &[held_a])
            .await
            .expect("sql"),
        1
    );
    let b = leases::acquire(&mut conn, r.id, "node-b", ttl, Takeover::WhenExpired)
        .await
        .expect("sql")
        .expect("released lease taken");
    assert_eq!(b.previous_node.as_deref(), Some("node-a"));
    assert_eq!(b.lease.fence, 2);
    assert!(leases::renew(&mut conn, "node-a", ttl)
        .await
        .expect("sql")
        .is_empty());
    assert_eq!(
        leases::release(&mut conn, "node-a", &[held_a])
            .await
            .expect("sql"),
        0,
        "an old holder's release leaves the new holder's lease alone"
    );

    // Expired, it is taken over.
    diesel::sql_query(format!(
        "UPDATE restaurant_leases SET expires_at = now() - interval '1 second' \
         WHERE restaurant_id = '{}'",
        r.id
    ))
    .execute(&mut conn)
    .await
    .expect("sql");
    let a2 = leases::acquire(&mut conn, r.id, "node-a", ttl, Takeover::WhenExpired)
        .await
        .expect("sql")
        .expect("expired lease taken");
    assert_eq!(a2.lease.fence, 3);
    let b2 = leases::acquire(&mut conn, r.id, "node-b", ttl, Takeover::Always)
        .await
        .expect("sql")
        .expect("taken at once");
    assert_eq!(b2.previous_node.as_deref(), Some("node-a"));
    assert_eq!(b2.lease.fence, 4);

    // No restaurant, no lease.
    let nobody = Uuid::new_v4();
    assert!(
        leases::acquire(&mut conn, nobody, "node-a", ttl, Takeover::Always)
            .await
            .expect("sql")
            .is_none()
    );
    assert!(leases::lease_of(&mut conn, nobody)
        .await
        .expect("sql")
        .is_none());
}

#[actix_web::test]
async fn a_clean_shutdown_releases_the_nodes_leases() {
    let mut app = spawn_app().await;
    let r = app.restaurant("released", 1, 1).await;
    let guest = app.verify_phone("+4915112345603").await;
    app.place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let node = app.engine().node_id().to_string();
    app.wait_for_sql(
        "the node reported itself",
        &format!("EXISTS (SELECT 1 FROM cluster_nodes WHERE node_id = '{node}')"),
    )
    .await;
    app.handle.take().expect("running").shutdown().await;
    app.assert_sql(
        "the lease is released, its fence kept, the node gone",
        &format!(
            "(SELECT expires_at = 'epoch' AND fence = 1 AND node_id = '{node}' \
             FROM restaurant_leases WHERE restaurant_id = '{}') AND \
             NOT EXISTS (SELECT 1 FROM cluster_nodes WHERE node_id = '{node}')",
            r.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn the_cluster_and_owner_endpoints_name_this_node() {
    let app = spawn_app().await;
    let r = app.restaurant("owned", 1, 1).await;
    app.staff("fleet-admin", "admin-password-1", "admin", None)
        .await;
    let admin = app.login("fleet-admin", "admin-password-1").await;
    let node = app.engine().node_id().to_string();

    let res = app.get("/api/v1/admin/cluster", Some(&admin)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["node_id"], node.as_str());
    let nodes = body["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{body}");
    assert_eq!(nodes[0]["node_id"], node.as_str());
    for field in ["started_at", "last_seen", "restaurants_owned", "sockets"] {
        assert!(!nodes[0][field].is_null(), "{field} in {body}");
    }

    // Nobody owns the restaurant yet: asking activates it here.
    assert!(app.restaurant_stats(r.id).await.is_none());
    let res = app
        .get(
            &format!("/api/v1/admin/restaurants/{}/owner", r.id),
            Some(&admin),
        )
        .await;
    assert_eq!(res.status(), 200);
    let owner: Value = res.json().await.expect("json");
    assert_eq!(owner["restaurant_id"], r.id.to_string());
    assert_eq!(owner["node_id"], node.as_str());
    assert_eq!(owner["fence"], 1);
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(owner["lease_expires_at"].clone()).expect("a time");
    assert!(expires > chrono::Utc::now(), "{owner}");
    assert!(app.restaurant_stats(r.id).await.is_some());

    let res = app
        .get(
            &format!("/api/v1/admin/restaurants/{}/owner", Uuid::new_v4()),
            Some(&admin),
        )
        .await;
    let body = expect_error(res, 404, "not_found").await;
    assert_eq!(body["message"], "no such restaurant");
    let chef = app.login_chef(&r).await;
    let res = app.get("/api/v1/admin/cluster", Some(&chef)).await;
    expect_error(res, 403, "forbidden").await;
}

#[actix_web::test]
async fn an_admin_change_under_a_stale_fence_commits_nothing() {
    let app = spawn_app_with(|s| s.cluster.lease_ttl_ms = 600_000).await;
    let r = app.restaurant("fenced-admin", 1, 1).await;
    app.staff("fence-admin", "admin-password-1", "admin", None)
        .await;
    let admin = app.login("fence-admin", "admin-password-1").await;
    let chef = app.login_chef(&r).await;
    let res = app.get("/api/v1/kitchen/orders", Some(&chef)).await;
    assert_eq!(res.status(), 200, "the restaurant is active here");

    run_sql(&app, &taken_by_another_node(r.id)).await;
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/admin/restaurants/{}", r.id)))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "Renamed by a node that lost its lease"}))
        .send()
        .await
        .expect("request");
    expect_error(res, 503, "unavailable").await;
    app.assert_sql(
        "the name did not change",
        &format!(
            "(SELECT name = 'Restaurant fenced-admin' FROM restaurants WHERE id = '{}')",
            r.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn a_lease_taken_after_waiting_behind_a_commit_in_flight_runs_from_when_it_was_taken() {
    use diesel_async::{AnsiTransactionManager, TransactionManager};
    let app = spawn_app().await;
    let r = app.restaurant("waited", 1, 1).await;
    let (mut holder, mut taker) = (app.db().await, app.db().await);
    let ttl = Duration::from_millis(300);
    leases::acquire(&mut taker, r.id, "node-a", ttl, Takeover::Always)
        .await
        .expect("sql")
        .expect("node A holds it");
    // Node A's write transaction in flight: the lease row locked shared, as the writer does.
    AnsiTransactionManager::begin_transaction(&mut holder)
        .await
        .expect("begin");
    run_sql_on(
        &mut holder,
        &format!(
            "SELECT 1 FROM restaurant_leases WHERE restaurant_id = '{}' FOR SHARE",
            r.id
        ),
    )
    .await;
    let take = async {
        leases::acquire(&mut taker, r.id, "node-b", ttl, Takeover::Always)
            .await
            .expect("sql")
            .expect("taken")
    };
    // The commit comes after longer than the lease lasts (the wait is Postgres's own).
    let commit = async {
        run_sql_on(&mut holder, "SELECT pg_sleep(0.6)").await;
        AnsiTransactionManager::commit_transaction(&mut holder)
            .await
            .expect("commit");
        chrono::Utc::now()
    };
    let (taken, committed_at) = tokio::join!(take, commit);
    assert!(
        taken.lease.expires_at > committed_at,
        "the lease runs from when it was taken ({}), not from when its statement began; the commit it \
         waited for ended at {committed_at}",
        taken.lease.expires_at
    );
}

async fn run_sql_on(conn: &mut diesel_async::AsyncPgConnection, sql: &str) {
    diesel::sql_query(sql).execute(conn).await.expect("sql");
}

#[actix_web::test]
async fn a_transaction_left_open_by_a_stalled_node_does_not_hold_a_takeover_back() {
    use diesel_async::{AnsiTransactionManager, TransactionManager};
    let app = spawn_app().await;
    let r = app.restaurant("stalled", 1, 1).await;
    let ttl = Duration::from_millis(300);
    let mut taker = app.db().await;
    leases::acquire(&mut taker, r.id, "node-a", ttl, Takeover::Always)
        .await
        .expect("sql")
        .expect("node A holds it");
    // A connection of the server's own pool, as its writer would hold it: a write transaction begun,
    // the lease row locked shared, and then nothing more (the process stopped).
    let pool = app.handle.as_ref().expect("running").context().pool;
    let mut stalled = pool.get().await.expect("a pooled connection");
    AnsiTransactionManager::begin_transaction(&mut *stalled)
        .await
        .expect("begin");
    run_sql_on(
        &mut stalled,
        &format!(
            "SELECT 1 FROM restaurant_leases WHERE restaurant_id = '{}' FOR SHARE",
            r.id
        ),
    )
    .await;
    // Postgres ends the idle transaction; the takeover that waited for it goes through.
    let taken = tokio::time::timeout(
        PATIENCE,
        leases::acquire(&mut taker, r.id, "node-b", ttl, Takeover::Always),
    )
    .await
    .expect("the takeover was not held back by the stalled transaction")
    .expect("sql")
    .expect("taken");
    assert_eq!(taken.lease.node_id, "node-b");
    assert!(
        AnsiTransactionManager::commit_transaction(&mut *stalled)
            .await
            .is_err(),
        "the stalled transaction commits nothing"
    );
}

#[actix_web::test]
async fn renewing_leases_waits_for_a_write_in_flight_instead_of_deadlocking_with_it() {
    use diesel_async::{AnsiTransactionManager, TransactionManager};
    let app = spawn_app().await;
    let one = app.restaurant("renew-one", 1, 1).await.id;
    let two = app.restaurant("renew-two", 1, 1).await.id;
    let (low, high) = if one < two { (one, two) } else { (two, one) };
    let ttl = Duration::from_secs(60);
    let (mut keeper, mut writer, mut watcher) = (app.db().await, app.db().await, app.db().await);
    // Taken high first: the table's own order visits the higher restaurant before the lower.
    for r in [high, low] {
        leases::acquire(&mut keeper, r, "node-r", ttl, Takeover::Always)
            .await
            .expect("sql")
            .expect("held");
    }
    // A write transaction of the owner in flight: its fence check locks the lease rows shared in
    // restaurant order; it holds the lower one when the renewal starts.
    AnsiTransactionManager::begin_transaction(&mut writer)
        .await
        .expect("begin");
    let share =
        |r: Uuid| format!("SELECT 1 FROM restaurant_leases WHERE restaurant_id = '{r}' FOR SHARE");
    run_sql_on(&mut writer, &share(low)).await;
    let renew = leases::renew(&mut keeper, "node-r", ttl);
    let write = async {
        until("the renewal to wait for the write's lock", async || {
            sql_holds(
                &mut watcher,
                "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock') > 0",
            )
            .await
        })
        .await;
        // The write goes on to the higher restaurant's row: a renewal that had locked it first would
        // now wait for the write, and Postgres would end one of them as a deadlock.
        run_sql_on(&mut writer, &share(high)).await;
        AnsiTransactionManager::commit_transaction(&mut writer)
            .await
            .expect("the write commits");
    };
    let (renewed, ()) = tokio::join!(renew, write);
    let renewed = renewed.expect("the renewal waited, then went through");
    assert_eq!(renewed.len(), 2, "{renewed:?}");
}
