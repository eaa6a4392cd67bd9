//! Durable before visible: nobody hears of an order before its transaction committed; a restart keeps
//! every live order and the ticket counter, under a new epoch.

use std::time::Duration;

use diesel_async::RunQueryDsl;
use scan2order_schema::domain::OrderStatus;
use scan2order_schema::wire::{Order, ServerMsg};
use uuid::Uuid;

use crate::helpers::{order_body, spawn_app, sql_holds};

const PHONE: &str = "+447700900123";

/// The writer's INSERT into `orders` is waiting on a lock (seen from Postgres itself).
const INSERT_WAITS_ON_LOCK: &str = "SELECT count(*) > 0 FROM pg_stat_activity \
     WHERE datname = current_database() AND wait_event_type = 'Lock' \
     AND query ILIKE 'insert into \"orders\"%'";

/// A connection holding `orders` locked in an open transaction: writers' INSERTs into `orders` wait on it
/// (and so do status UPDATEs) until [`release`].
async fn lock_orders(app: &crate::helpers::TestApp) -> diesel_async::AsyncPgConnection {
    let mut locker = app.db().await;
    diesel::sql_query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    diesel::sql_query("LOCK TABLE orders IN EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");
    locker
}

async fn release(locker: &mut diesel_async::AsyncPgConnection) {
    diesel::sql_query("COMMIT")
        .execute(locker)
        .await
        .expect("commit");
}

#[actix_web::test]
async fn an_order_is_answered_and_broadcast_only_after_its_transaction_commits() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;

    let mut locker = lock_orders(&app).await;

    // The guest submits in the background; a connection of its own checks the database the moment the
    // answer arrives.
    let mut observer = app.db().await;
    let request = app
        .http
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&guest)
        .header("Idempotency-Key", Uuid::new_v4().to_string())
        .json(&order_body(&r.tables[0], &[(&r.items[0], 2)]));
    let submit = actix_web::rt::spawn(async move {
        let res = request.send().await.expect("request");
        let visible = sql_holds(&mut observer, "SELECT count(*) = 1 FROM orders").await;
        let status = res.status().as_u16();
        let order: Order = res.json().await.expect("order json");
        (status, visible, order)
    });

    app.wait_for_sql(
        "the writer's INSERT to wait on the lock",
        INSERT_WAITS_ON_LOCK,
    )
    .await;
    // The write is provably stuck before its commit: nothing may have been answered or broadcast.
    assert!(!submit.is_finished(), "answered before the commit");
    kitchen.assert_quiet_for(Duration::from_millis(300)).await;
    table.assert_quiet_for(Duration::from_millis(50)).await;
    assert!(!submit.is_finished(), "answered before the commit");
    app.assert_sql("nothing committed yet", "SELECT count(*) = 0 FROM orders")
        .await;

    release(&mut locker).await;
    let (status, visible, order) = submit.await.expect("submit task");
    assert_eq!(status, 201);
    assert!(visible, "the 201 arrived before the row was visible");
    assert_eq!(order.items[0].name, r.items[0].name, "copied from the menu");
    assert_eq!(order.total_cents, 2 * r.items[0].price_cents);
    match kitchen.next().await {
        ServerMsg::OrderCreated { order: seen, .. } => assert_eq!(seen.id, order.id),
        other => panic!("expected order_created, got {other:?}"),
    }
    match table.next().await {
        ServerMsg::OrderCreated { order: seen, .. } => assert_eq!(seen.id, order.id),
        other => panic!("expected order_created, got {other:?}"),
    }
    app.assert_sql(
        "the order's lines and its WhatsApp message were committed with it",
        &format!(
            "SELECT (SELECT count(*) FROM order_items WHERE order_id = '{id}') = 1 \
             AND (SELECT count(*) FROM notification_outbox \
                  WHERE dedup_key = 'order:{id}:order_received') = 1",
            id = order.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn a_status_change_is_acknowledged_only_after_its_transaction_commits() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;

    let mut locker = lock_orders(&app).await;
    kitchen
        .send_json(&serde_json::json!({
            "type": "set_status", "request_id": "r1",
            "order_id": order.id, "status": "ready"
        }))
        .await;
    app.wait_for_sql(
        "the writer's UPDATE to wait on the lock",
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query ILIKE 'update orders%'",
    )
    .await;
    kitchen.assert_quiet_for(Duration::from_millis(300)).await;
    release(&mut locker).await;
    let mut got_ack = false;
    let mut got_status = false;
    while !(got_ack && got_status) {
        match kitchen.next().await {
            ServerMsg::Ack { request_id } => {
                assert_eq!(request_id, "r1");
                got_ack = true;
            }
            ServerMsg::OrderStatus {
                order_id, status, ..
            } => {
                assert_eq!((order_id, status), (order.id, OrderStatus::Ready));
                got_status = true;
            }
            other => panic!("expected the ack and order_status, got {other:?}"),
        }
    }
    app.assert_sql(
        "the status is committed",
        &format!(
            "SELECT status = 'ready' FROM orders WHERE id = '{}'",
            order.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn after_a_restart_the_kitchen_gets_the_live_orders_under_a_new_epoch_and_tickets_continue() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let placed: Vec<Order> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(
                app.place_order(&guest, &r.tables[i % 2], &[(&r.items[i % 3], 1)])
                    .await,
            );
        }
        v
    };
    for (order, status) in [(&placed[1], "ready"), (&placed[3], "served")] {
        let res = app.set_status(&chef, &order.id.to_string(), status).await;
        assert_eq!(res.status(), 200);
    }
    let mut old_kitchen = app.kitchen_socket(&chef, "").await;
    let (old_epoch, _, live) = old_kitchen.hello_snapshot().await;
    assert_eq!(live.len(), 3);

    let app = app.restart().await;
    assert_eq!(
        old_kitchen.closed_with().await,
        Some(1001),
        "a clean shutdown closes sockets with 1001"
    );

    let mut kitchen = app.kitchen_socket(&chef, "").await;
    let (epoch, _, live) = kitchen.hello_snapshot().await;
    assert_ne!(epoch, old_epoch, "a restart starts a new epoch");
    let expect: Vec<(String, OrderStatus)> = [
        (&placed[0], OrderStatus::Placed),
        (&placed[1], OrderStatus::Ready),
        (&placed[2], OrderStatus::Placed),
    ]
    .iter()
    .map(|(o, s)| (o.id.to_string(), *s))
    .collect();
    let got: Vec<(String, OrderStatus)> =
        live.iter().map(|o| (o.id.to_string(), o.status)).collect();
    assert_eq!(
        got, expect,
        "live orders, oldest first, with their statuses"
    );
    assert!(live.iter().all(|o| o.phone == "+44•••••••123"));

    let next = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    assert_eq!(
        next.ticket_no, 5,
        "the ticket counter continues after the restart"
    );
    match kitchen.next().await {
        ServerMsg::OrderCreated { order, .. } => assert_eq!(order.id, next.id),
        other => panic!("expected order_created, got {other:?}"),
    }
}

#[actix_web::test]
async fn another_guest_reusing_a_key_still_being_written_gets_a_conflict_not_the_order() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 2).await;
    let first_guest = app.verify_phone(PHONE).await;
    let other_guest = app.verify_phone("+447700900999").await;
    let key = Uuid::new_v4().to_string();

    // Hold the first guest's order before its commit.
    let mut locker = lock_orders(&app).await;
    let first = app
        .http
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&first_guest)
        .header("Idempotency-Key", &key)
        .json(&order_body(&r.tables[0], &[(&r.items[0], 1)]));
    let first = actix_web::rt::spawn(async move { first.send().await.expect("request") });
    app.wait_for_sql(
        "the first order's INSERT to wait on the lock",
        INSERT_WAITS_ON_LOCK,
    )
    .await;

    // Another guest sends the same key meanwhile: refused at once, without the first order.
    let res = tokio::time::timeout(
        crate::helpers::PATIENCE,
        app.http
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&other_guest)
            .header("Idempotency-Key", &key)
            .json(&order_body(&r.tables[1], &[(&r.items[0], 1)]))
            .send(),
    )
    .await
    .expect("answered while the first order is still being written")
    .expect("request");
    assert_eq!(res.status(), 409);
    let body = res.text().await.expect("body");
    assert!(body.contains("idempotency_key_reused"), "{body}");
    assert!(
        !body.contains("447700900123"),
        "the first guest's phone leaked: {body}"
    );

    release(&mut locker).await;
    let first = first.await.expect("first request");
    assert_eq!(first.status(), 201);
}
