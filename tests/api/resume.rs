//! Socket streams: resuming after a drop replays every missed event exactly once and in order (or sends
//! a snapshot when it cannot), the kitchen changes orders over its socket, and bad sockets are closed
//! with the contract's codes.

use scan2order_schema::domain::OrderStatus;
use scan2order_schema::wire::ServerMsg;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, WsClient};

const PHONE: &str = "+447700900123";

/// A resume from an epoch that never existed: answered with the snapshot at once, where a plain connect
/// would wait out the (here long) resume grace first.
const FRESH: &str = "epoch=none&since=0";

/// Reads `n` messages.
async fn take(socket: &mut WsClient, n: usize) -> Vec<ServerMsg> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(socket.next().await);
    }
    out
}

fn seqs(msgs: &[ServerMsg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m.seq().unwrap_or_else(|| panic!("not an event: {m:?}")))
        .collect()
}

/// How a kitchen socket asks to resume.
#[derive(Clone, Copy)]
enum ResumeBy {
    Query,
    Message,
}

async fn kitchen_resume_replays_missed_events(by: ResumeBy) {
    // A generous grace period: the resume message must win against the snapshot timer on a busy box.
    let app = spawn_app_with(|s| s.sockets.resume_grace_ms = 5_000).await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;

    let mut kitchen = app.kitchen_socket(&chef, &format!("&{FRESH}")).await;
    let (epoch, _, _) = kitchen.hello_snapshot().await;
    let first = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let since = match kitchen.next().await {
        ServerMsg::OrderCreated { seq, order } if order.id == first.id => seq,
        other => panic!("expected order_created, got {other:?}"),
    };
    drop(kitchen);

    // Missed while away: two orders on two tables, a status change and a sold-out toggle.
    let second = app
        .place_order(&guest, &r.tables[1], &[(&r.items[1], 1)])
        .await;
    let third = app
        .place_order(&guest, &r.tables[0], &[(&r.items[2], 1)])
        .await;
    let res = app.set_status(&chef, &first.id.to_string(), "ready").await;
    assert_eq!(res.status(), 200);
    let res = app.set_available(&chef, r.items[1].id, false).await;
    assert_eq!(res.status(), 200);

    let mut kitchen = match by {
        ResumeBy::Query => {
            app.kitchen_socket(&chef, &format!("&epoch={epoch}&since={since}"))
                .await
        }
        ResumeBy::Message => {
            let mut k = app.kitchen_socket(&chef, "").await;
            k.send_json(&json!({"type": "resume", "epoch": epoch, "since": since}))
                .await;
            k
        }
    };
    match kitchen.next().await {
        ServerMsg::Hello { epoch: e, seq } => {
            assert_eq!(e, epoch);
            assert_eq!(seq, since + 4, "hello tells the current position");
        }
        other => panic!("expected hello, got {other:?}"),
    }
    let missed = take(&mut kitchen, 4).await;
    assert_eq!(seqs(&missed), (since + 1..=since + 4).collect::<Vec<_>>());
    match &missed[..] {
        [ServerMsg::OrderCreated { order: o2, .. }, ServerMsg::OrderCreated { order: o3, .. }, ServerMsg::OrderStatus {
            order_id, status, ..
        }, ServerMsg::MenuItem {
            item_id, available, ..
        }] => {
            assert_eq!((o2.id, o3.id), (second.id, third.id));
            assert_eq!((*order_id, *status), (first.id, OrderStatus::Ready));
            assert_eq!((item_id.get(), *available), (r.items[1].id, false));
        }
        other => panic!("unexpected replay {other:?}"),
    }
    // Exactly once, no snapshot: the next message is the next live event.
    let fourth = app
        .place_order(&guest, &r.tables[1], &[(&r.items[0], 1)])
        .await;
    match kitchen.next().await {
        ServerMsg::OrderCreated { seq, order } => {
            assert_eq!((seq, order.id), (since + 5, fourth.id));
        }
        other => panic!("expected the live order next, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_kitchen_resuming_by_query_gets_every_missed_event_once_in_order_without_a_snapshot() {
    kitchen_resume_replays_missed_events(ResumeBy::Query).await;
}

#[actix_web::test]
async fn a_kitchen_resuming_by_message_gets_every_missed_event_once_in_order_without_a_snapshot() {
    kitchen_resume_replays_missed_events(ResumeBy::Message).await;
}

#[actix_web::test]
async fn a_resume_from_another_epoch_or_the_future_gets_a_fresh_snapshot() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    let (epoch, seq, _) = kitchen.hello_snapshot().await;
    drop(kitchen);

    let stale = [
        format!("&epoch=0123456789abcdef&since={seq}"),
        format!("&epoch={epoch}&since={}", seq + 10),
    ];
    for query in &stale {
        let mut kitchen = app.kitchen_socket(&chef, query).await;
        let (e, s, orders) = kitchen.hello_snapshot().await;
        assert_eq!((e.as_str(), s), (epoch.as_str(), seq), "{query}");
        assert_eq!(orders.iter().map(|o| o.id).collect::<Vec<_>>(), [order.id]);
    }
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen
        .send_json(&json!({"type": "resume", "epoch": "0123456789abcdef", "since": 0}))
        .await;
    let (e, _, orders) = kitchen.hello_snapshot().await;
    assert_eq!(e, epoch);
    assert_eq!(orders.len(), 1);
}

#[actix_web::test]
async fn a_table_resuming_gets_only_its_own_missed_orders_and_the_restaurants_changes() {
    let app = spawn_app_with(|s| s.sockets.resume_grace_ms = 5_000).await;
    let r = app.restaurant("roma", 2, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let mut t1 = app
        .table_socket(&r.tables[0].token, &format!("?{FRESH}"))
        .await;
    let (epoch, since, _) = t1.hello_snapshot().await;
    drop(t1);

    let own = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let other = app
        .place_order(&guest, &r.tables[1], &[(&r.items[1], 1)])
        .await;
    let res = app
        .set_status(&chef, &other.id.to_string(), "accepted")
        .await;
    assert_eq!(res.status(), 200);
    let res = app.set_available(&chef, r.items[1].id, false).await;
    assert_eq!(res.status(), 200);
    let res = app.set_accepting(&chef, false).await;
    assert_eq!(res.status(), 200);

    let mut t1 = app
        .table_socket(&r.tables[0].token, &format!("?epoch={epoch}&since={since}"))
        .await;
    assert!(matches!(t1.next().await, ServerMsg::Hello { .. }));
    let missed = take(&mut t1, 3).await;
    match &missed[..] {
        [ServerMsg::OrderCreated { order, .. }, ServerMsg::MenuItem {
            item_id, available, ..
        }, ServerMsg::Restaurant {
            accepting_orders, ..
        }] => {
            assert_eq!(order.id, own.id);
            assert_eq!((item_id.get(), *available), (r.items[1].id, false));
            assert!(!accepting_orders);
        }
        other => panic!("unexpected replay {other:?}"),
    }
    let s = seqs(&missed);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
    assert_eq!(s[0], since + 1, "T1's own order was the first event");
    assert_eq!(
        s[1],
        since + 4,
        "T2's order and its status change were skipped"
    );
    // Nothing of T2's follows: the next message is a change made now.
    let res = app.set_accepting(&chef, true).await;
    assert_eq!(res.status(), 200);
    match t1.next().await {
        ServerMsg::Restaurant {
            accepting_orders, ..
        } => assert!(accepting_orders),
        other => panic!("expected the restaurant change next, got {other:?}"),
    }
}

#[actix_web::test]
async fn the_kitchen_changes_orders_over_its_socket_and_tables_may_not() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;

    kitchen
        .send_json(&json!({"type": "set_status", "request_id": "req-1",
                           "order_id": order.id, "status": "preparing"}))
        .await;
    let answers = take(&mut kitchen, 2).await;
    assert!(
        answers.contains(&ServerMsg::Ack {
            request_id: "req-1".into()
        }),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|m| matches!(m,
            ServerMsg::OrderStatus { order_id, status: OrderStatus::Preparing, .. }
                if *order_id == order.id)),
        "{answers:?}"
    );
    match table.next().await {
        ServerMsg::OrderStatus {
            order_id, status, ..
        } => assert_eq!((order_id, status), (order.id, OrderStatus::Preparing)),
        other => panic!("the table hears the change, got {other:?}"),
    }

    kitchen
        .send_json(&json!({"type": "set_status", "request_id": "req-2",
                           "order_id": order.id, "status": "accepted"}))
        .await;
    match kitchen.next().await {
        ServerMsg::Error {
            request_id, error, ..
        } => {
            assert_eq!(request_id.as_deref(), Some("req-2"));
            assert_eq!(error, "invalid_transition");
        }
        other => panic!("expected an error, got {other:?}"),
    }

    table
        .send_json(&json!({"type": "set_status", "request_id": "req-3",
                           "order_id": order.id, "status": "cancelled"}))
        .await;
    match table.next().await {
        ServerMsg::Error {
            request_id, error, ..
        } => {
            assert_eq!(request_id.as_deref(), Some("req-3"));
            assert_eq!(error, "forbidden");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    table.send_json(&json!({"type": "dance"})).await;
    match table.next().await {
        ServerMsg::Error { error, .. } => assert_eq!(error, "invalid_request"),
        other => panic!("expected an error, got {other:?}"),
    }
    app.assert_sql(
        "only the kitchen's change was made",
        &format!(
            "SELECT status = 'preparing' FROM orders WHERE id = '{}'",
            order.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn sockets_with_a_bad_table_token_or_no_staff_token_are_closed_with_1008() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let table_urls = [
        "/ws/table/nope".to_string(),
        format!("/ws/table/{}", scan2order_schema::tokens::new_table_token()),
        format!("/ws/table/{}x", r.tables[0].token),
    ];
    let kitchen_urls = [
        "/ws/kitchen".to_string(),
        "/ws/kitchen?token=garbage".to_string(),
        format!("/ws/kitchen?token={guest}"),
    ];
    for path in table_urls.iter().chain(&kitchen_urls) {
        let mut socket = WsClient::connect(&app.ws_url(path)).await;
        assert_eq!(socket.closed_with().await, Some(1008), "{path}");
    }
}

#[actix_web::test]
async fn an_inbound_frame_over_the_limit_closes_the_socket_with_1009() {
    let app = spawn_app_with(|s| s.sockets.max_frame_bytes = 4096).await;
    let r = app.restaurant("roma", 1, 1).await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;
    // Just under the limit: refused as a message, the socket stays.
    table
        .send_json(&json!({"type": "resume", "padding": "x".repeat(4000)}))
        .await;
    match table.next().await {
        ServerMsg::Error { error, .. } => assert_eq!(error, "invalid_request"),
        other => panic!("expected an error, got {other:?}"),
    }
    table
        .send_json(&json!({"type": "resume", "padding": "x".repeat(5000)}))
        .await;
    assert_eq!(table.closed_with().await, Some(1009));
}

#[actix_web::test]
async fn a_resume_that_comes_after_the_grace_is_not_an_error_but_a_second_one_is() {
    let app = spawn_app().await;
    let r = app.restaurant("late", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    // No resume within the grace: subscribed with a snapshot.
    let (epoch, seq, _) = kitchen.hello_snapshot().await;
    // The client's first message, late (its hello was slow to arrive): nothing to answer.
    kitchen
        .send_json(&json!({"type": "resume", "epoch": epoch, "since": seq}))
        .await;
    // A second resume is out of place.
    kitchen
        .send_json(&json!({"type": "resume", "epoch": epoch, "since": seq}))
        .await;
    match kitchen.next().await {
        ServerMsg::Error { error, .. } => assert_eq!(error, "invalid_request"),
        other => panic!("expected an error for the second resume, got {other:?}"),
    }
    // And the stream goes on.
    assert_eq!(app.set_accepting(&chef, false).await.status(), 200);
    match kitchen.next().await {
        ServerMsg::Restaurant { seq: s, .. } => assert_eq!(s, seq + 1),
        other => panic!("expected the event, got {other:?}"),
    }
}
