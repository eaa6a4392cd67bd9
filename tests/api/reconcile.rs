//! Writes whose outcome the server never heard: the commit happened after the writer gave up waiting.
//! A deferred trigger that sleeps at COMMIT makes that deterministic.

use diesel_async::RunQueryDsl;
use scan2order_schema::wire::ServerMsg;
use serde_json::json;

use crate::helpers::spawn_app_with;

/// From now on every transaction that inserts into `table` takes 1.5 s to commit after its COMMIT
/// was sent (a deferred constraint trigger that sleeps), so the writer's timeout fires first.
async fn slow_commits_on(db: &mut diesel_async::AsyncPgConnection, table: &str) {
    diesel::sql_query(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$",
    )
    .execute(db)
    .await
    .expect("function");
    diesel::sql_query(format!(
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON {table} \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    ))
    .execute(db)
    .await
    .expect("trigger");
}

#[actix_web::test]
async fn an_order_committed_after_the_writer_timed_out_still_reaches_the_kitchen() {
    let app = spawn_app_with(|s| s.database.write_timeout_ms = 300).await;
    let r = app.restaurant("late", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900555").await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;

    let mut db = app.db().await;
    slow_commits_on(&mut db, "orders").await;

    let res = app
        .place_order_raw(
            &guest,
            "late-key",
            &json!({"table_token": r.tables[0].token, "items": [{"menu_item_id": r.items[0].id, "quantity": 1}]}),
        )
        .await;
    assert_eq!(
        res.status(),
        503,
        "the writer gave up before the commit finished"
    );
    diesel::sql_query("DROP TRIGGER slow_commit ON orders")
        .execute(&mut db)
        .await
        .expect("drop trigger");

    // The guest never retries; the order committed anyway and the kitchen must hear of it once.
    match kitchen.next().await {
        ServerMsg::OrderCreated { order, .. } => {
            assert_eq!(order.ticket_no, 1);
            assert_eq!(order.table_id.get(), r.tables[0].id);
        }
        other => panic!("expected the adopted order, got {other:?}"),
    }
    let live: serde_json::Value = app
        .http
        .get(app.url("/api/v1/kitchen/orders"))
        .bearer_auth(&chef)
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(live["orders"].as_array().map(Vec::len), Some(1));

    // A retry with the same key returns that order, and the kitchen hears nothing twice.
    let res = app
        .place_order_raw(
            &guest,
            "late-key",
            &json!({"table_token": r.tables[0].token, "items": [{"menu_item_id": r.items[0].id, "quantity": 1}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let again: serde_json::Value = res.json().await.expect("json");
    assert_eq!(again["ticket_no"], 1);
    let res = app
        .set_status(&chef, again["id"].as_str().expect("id"), "accepted")
        .await;
    assert_eq!(res.status(), 200);
    match kitchen.next().await {
        ServerMsg::OrderStatus { .. } => {}
        other => panic!("expected the status change and no duplicate order_created, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_status_change_retried_while_its_first_attempt_is_unsettled_is_written_once() {
    let app = spawn_app_with(|s| s.database.write_timeout_ms = 300).await;
    let r = app.restaurant("late-status", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900556").await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let id = order.id.to_string();
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;

    // Status changes now commit 1.5 s after their COMMIT was sent: the writer gives up first.
    let mut db = app.db().await;
    slow_commits_on(&mut db, "order_status_history").await;

    let first = app.set_status(&chef, &id, "accepted").await;
    assert_eq!(
        first.status(),
        503,
        "the writer gave up before the commit finished"
    );
    // The kitchen retries at once, as a client does after a 503. Until the first attempt is settled
    // the order takes no change: written again, it would be stored twice.
    let retry = app.set_status(&chef, &id, "accepted").await;
    assert_eq!(
        retry.status(),
        503,
        "refused while the first attempt is unsettled"
    );
    // Refused without a write: no second UPDATE is queued on the order's row behind the first
    // attempt's commit (which is still sleeping; the engine's own settling read waits there too).
    app.assert_sql(
        "no second write of the change",
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query ILIKE 'UPDATE orders%'",
    )
    .await;

    // The first attempt did commit; the engine finds out and tells the kitchen, once.
    match kitchen.next().await {
        ServerMsg::OrderStatus { status, .. } => assert_eq!(status.as_str(), "accepted"),
        other => panic!("expected the settled status change, got {other:?}"),
    }
    diesel::sql_query("DROP TRIGGER slow_commit ON order_status_history")
        .execute(&mut db)
        .await
        .expect("drop trigger");
    app.wait_for_sql(
        "every write transaction to be over",
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND state <> 'idle'",
    )
    .await;
    app.assert_sql(
        "one history row for the one change",
        &format!(
            "SELECT count(*) = 1 FROM order_status_history \
             WHERE order_id = '{id}' AND status = 'accepted'"
        ),
    )
    .await;
    // Settled: the order moves on again, and the same change again is what it is — already done.
    let again = app.set_status(&chef, &id, "accepted").await;
    assert_eq!(again.status(), 409);
    let next = app.set_status(&chef, &id, "preparing").await;
    assert_eq!(next.status(), 200);
}
