//! Writes whose outcome the server never heard: the commit happened after the writer gave up waiting.
//! A deferred trigger that sleeps at COMMIT makes that deterministic.

use diesel_async::RunQueryDsl;
use scan2order_schema::wire::ServerMsg;
use serde_json::json;

use crate::helpers::spawn_app_with;

#[actix_web::test]
async fn an_order_committed_after_the_writer_timed_out_still_reaches_the_kitchen() {
    let app = spawn_app_with(|s| s.database.write_timeout_ms = 300).await;
    let r = app.restaurant("late", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900555").await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;

    let mut db = app.db().await;
    diesel::sql_query(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$",
    )
    .execute(&mut db)
    .await
    .expect("function");
    diesel::sql_query(
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON orders \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
    )
    .execute(&mut db)
    .await
    .expect("trigger");

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
