use scan2order_schema::domain::OrderStatus;
use scan2order_schema::wire::ServerMsg;
use serde_json::json;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn a_guest_order_reaches_kitchen_and_table_and_moves_through_the_kitchen() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    let (_, _, orders) = kitchen.hello_snapshot().await;
    assert!(orders.is_empty());
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;

    let guest = app.verify_phone("+447700900123").await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 2), (&r.items[2], 1)])
        .await;
    assert_eq!(order.total_cents, 2 * 500 + 700);
    assert_eq!(order.status, OrderStatus::Placed);
    assert_eq!(order.phone, "+447700900123");
    assert_eq!(order.ticket_no, 1);

    let ServerMsg::OrderCreated { order: seen, .. } = kitchen.next().await else {
        panic!("kitchen expected order_created")
    };
    assert_eq!(seen.id, order.id);
    assert_eq!(seen.phone, "+44•••••••123");
    let ServerMsg::OrderCreated { order: seen, .. } = table.next().await else {
        panic!("table expected order_created")
    };
    assert_eq!(seen.id, order.id);

    for status in ["accepted", "preparing", "ready", "served"] {
        let res = app.set_status(&chef, &order.id.to_string(), status).await;
        assert_eq!(res.status(), 200);
        for socket in [&mut kitchen, &mut table] {
            match socket.next().await {
                ServerMsg::OrderStatus {
                    order_id,
                    status: s,
                    ticket_no,
                    ..
                } => {
                    assert_eq!(order_id, order.id);
                    assert_eq!(s.as_str(), status);
                    assert_eq!(ticket_no, 1);
                }
                other => panic!("expected order_status, got {other:?}"),
            }
        }
    }
    let res = app
        .set_status(&chef, &order.id.to_string(), "cancelled")
        .await;
    assert_eq!(res.status(), 409);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"], "invalid_transition");

    // The guest was told on WhatsApp: received, then ready.
    app.wa
        .wait_for(|m| m.template() == "scan2order_order_ready" && m.to() == "447700900123")
        .await;
    let received = app
        .wa
        .wait_for(|m| m.template() == "scan2order_order_received")
        .await;
    assert_eq!(
        received.body_params(),
        vec!["Restaurant roma".to_string(), "1".to_string()]
    );
    assert!(app.wa.problems().is_empty(), "{:?}", app.wa.problems());

    let res = app
        .http
        .get(app.url(&format!("/api/v1/orders/{}", order.id)))
        .bearer_auth(&guest)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let fetched: serde_json::Value = res.json().await.expect("json");
    assert_eq!(fetched["status"], "served");
}

/// A kitchen's status change sent again with the same `Idempotency-Key` (its answer was lost) is
/// answered as done, even after the order moved on; nothing is applied twice. Another key repeating
/// the change is still refused: it is a second tap, not a retry.
#[actix_web::test]
async fn a_status_change_sent_again_with_its_key_is_answered_as_done() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900123").await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let id = order.id.to_string();
    let tap = |key: &str, status: &str| {
        app.http
            .post(app.url(&format!("/api/v1/kitchen/orders/{id}/status")))
            .bearer_auth(&chef)
            .header("Idempotency-Key", key.to_string())
            .json(&json!({ "status": status }))
            .send()
    };
    let first = tap("tap-1", "accepted").await.expect("request");
    assert_eq!(first.status(), 200);
    let again = tap("tap-1", "accepted").await.expect("request");
    assert_eq!(again.status(), 200, "a retry of an applied change is done");
    let body: serde_json::Value = again.json().await.expect("json");
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["id"], id.as_str());

    let other = tap("tap-2", "accepted").await.expect("request");
    assert_eq!(other.status(), 409);
    let body: serde_json::Value = other.json().await.expect("json");
    assert_eq!(body["error"], "invalid_transition");

    // The order moves on and finishes; the late retry of the first tap is still answered as done,
    // with the order as it now stands.
    for (key, status) in [("tap-3", "ready"), ("tap-4", "served")] {
        assert_eq!(tap(key, status).await.expect("request").status(), 200);
    }
    let late = tap("tap-1", "accepted").await.expect("request");
    assert_eq!(late.status(), 200);
    let body: serde_json::Value = late.json().await.expect("json");
    assert_eq!(body["status"], "served");
    // A key is the request's, not the status's: the same key asking for another status is refused.
    let reused = tap("tap-1", "cancelled").await.expect("request");
    assert_eq!(reused.status(), 409);

    app.assert_sql(
        "accepted applied once",
        &format!(
            "(SELECT count(*) FROM order_status_history WHERE order_id = '{id}' \
             AND status = 'accepted') = 1"
        ),
    )
    .await;
    let bad = tap("", "ready").await.expect("request");
    assert_eq!(bad.status(), 400);
}
