//! Many guests at once: every order stored once with its own ticket number and delivered exactly once,
//! in order, to the kitchen and to its own table only; double-tapped submits make one order; a burst of
//! first requests activates a restaurant once.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use scan2order_schema::domain::{OrderId, TableId};
use scan2order_schema::wire::{Order, ServerMsg};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{order_body, spawn_app, WsClient};

const ORDERS: usize = 500;
const TABLES: usize = 10;
const IN_FLIGHT: usize = 50;

/// Reads `expected` `order_created` events (skipping nothing else: any other message fails), checking
/// that `seq` strictly increases. Returns the socket, to check what comes next.
async fn collect_orders(mut socket: WsClient, expected: usize) -> (WsClient, Vec<Order>) {
    let mut orders = Vec::with_capacity(expected);
    let mut last_seq = 0;
    while orders.len() < expected {
        match socket.next().await {
            ServerMsg::OrderCreated { seq, order } => {
                assert!(seq > last_seq, "seq {seq} after {last_seq}");
                last_seq = seq;
                orders.push(order);
            }
            other => panic!("expected order_created, got {other:?}"),
        }
    }
    (socket, orders)
}

#[actix_web::test]
async fn five_hundred_concurrent_orders_are_stored_numbered_and_delivered_exactly_once_to_kitchen_and_own_table(
) {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, TABLES).await;
    let chef = app.login_chef(&r).await;
    let mut guests = Vec::new();
    for i in 0..5 {
        guests.push(app.verify_phone(&format!("+4477009001{i:02}")).await);
    }

    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let kitchen_reader = actix_web::rt::spawn(collect_orders(kitchen, ORDERS));
    let mut table_readers = Vec::new();
    for t in &r.tables {
        let mut socket = app.table_socket(&t.token, "").await;
        let (_, _, orders) = socket.hello_snapshot().await;
        assert!(orders.is_empty());
        table_readers.push(actix_web::rt::spawn(collect_orders(
            socket,
            ORDERS / TABLES,
        )));
    }

    let placed: Vec<Order> = stream::iter(0..ORDERS)
        .map(|i| {
            let app = &app;
            let guest = &guests[i % guests.len()];
            let table = &r.tables[i % TABLES];
            let item = &r.items[i % r.items.len()];
            async move {
                app.place_order(guest, table, &[(item, 1 + (i % 3) as i32)])
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let ids: HashSet<OrderId> = placed.iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), ORDERS);
    let mut tickets: Vec<i32> = placed.iter().map(|o| o.ticket_no).collect();
    tickets.sort_unstable();
    assert_eq!(tickets, (1..=ORDERS as i32).collect::<Vec<_>>());
    app.assert_sql(
        "500 rows with tickets 1..=500",
        &format!(
            "SELECT count(*) = {ORDERS} AND count(DISTINCT ticket_no) = {ORDERS} \
             AND min(ticket_no) = 1 AND max(ticket_no) = {ORDERS} FROM orders \
             WHERE restaurant_id = '{}'",
            r.id
        ),
    )
    .await;

    let (mut kitchen, seen) = kitchen_reader.await.expect("kitchen reader");
    let seen_ids: HashSet<OrderId> = seen.iter().map(|o| o.id).collect();
    assert_eq!(seen_ids, ids, "the kitchen saw each order exactly once");
    let by_id: HashMap<OrderId, &Order> = placed.iter().map(|o| (o.id, o)).collect();
    for o in &seen {
        assert_eq!(o.ticket_no, by_id[&o.id].ticket_no);
    }

    let mut tables = Vec::new();
    for (t, reader) in r.tables.iter().zip(table_readers) {
        let (socket, seen) = reader.await.expect("table reader");
        let own: HashSet<OrderId> = placed
            .iter()
            .filter(|o| o.table_id == TableId::from(t.id))
            .map(|o| o.id)
            .collect();
        assert!(
            seen.iter().all(|o| o.table_id == TableId::from(t.id)),
            "table {} saw another table's order",
            t.label
        );
        let seen: HashSet<OrderId> = seen.iter().map(|o| o.id).collect();
        assert_eq!(seen, own, "table {} saw exactly its own orders", t.label);
        tables.push(socket);
    }

    // Nothing else was queued behind: the next event everyone gets is a menu change made now.
    let res = app.set_available(&chef, r.items[0].id, false).await;
    assert_eq!(res.status(), 200);
    for socket in tables.iter_mut().chain(std::iter::once(&mut kitchen)) {
        match socket.next().await {
            ServerMsg::MenuItem {
                item_id, available, ..
            } => {
                assert_eq!(item_id.get(), r.items[0].id);
                assert!(!available);
            }
            other => panic!("expected the menu change next, got {other:?}"),
        }
    }
}

#[actix_web::test]
async fn the_same_idempotency_key_sent_twenty_times_at_once_makes_exactly_one_order() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900123").await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;

    let key = Uuid::new_v4().to_string();
    let body = order_body(&r.tables[0], &[(&r.items[0], 2), (&r.items[1], 1)]);
    let answers = join_all((0..20).map(|_| async {
        let res = app.place_order_raw(&guest, &key, &body).await;
        let status = res.status().as_u16();
        let order: Value = res.json().await.expect("json");
        (status, order)
    }))
    .await;

    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let replayed = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, replayed), (1, 19), "{answers:?}");
    let first = &answers[0].1;
    for (_, order) in &answers {
        assert_eq!(order["id"], first["id"]);
        assert_eq!(order["ticket_no"], 1);
        assert_eq!(order["total_cents"], 2 * 500 + 600);
    }
    app.assert_sql(
        "one order row for the key",
        &format!("SELECT count(*) = 1 FROM orders WHERE idempotency_key = '{key}'"),
    )
    .await;
    app.assert_sql("one order row at all", "SELECT count(*) = 1 FROM orders")
        .await;

    match kitchen.next().await {
        ServerMsg::OrderCreated { order, .. } => {
            assert_eq!(serde_json::to_value(order.id).expect("id"), first["id"]);
        }
        other => panic!("expected order_created, got {other:?}"),
    }
    // The kitchen heard of it once: the next thing it hears is a change made now.
    let res = app.set_accepting(&chef, false).await;
    assert_eq!(res.status(), 200);
    match kitchen.next().await {
        ServerMsg::Restaurant {
            accepting_orders, ..
        } => assert!(!accepting_orders),
        other => panic!("expected the restaurant change next, got {other:?}"),
    }
    // And the key still answers with the same order, even while paused.
    let res = app.place_order_raw(&guest, &key, &body).await;
    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
}

#[actix_web::test]
async fn a_burst_of_first_requests_activates_the_restaurant_exactly_once() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 3).await;
    let engine = app.engine();
    assert_eq!(
        engine.activations(),
        0,
        "nothing is active before a request"
    );

    let answers = join_all((0..30).map(|i| {
        let token = r.tables[i % r.tables.len()].token.clone();
        let app = &app;
        async move {
            let res = app.get(&format!("/api/v1/tables/{token}"), None).await;
            let status = res.status().as_u16();
            let body: Value = res.json().await.expect("json");
            (status, body)
        }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["restaurant"]["id"], r.id.to_string());
    }
    assert_eq!(
        engine.activations(),
        1,
        "one activation for the whole burst"
    );
    let active = engine.restaurant_stats().await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].restaurant_id.get(), r.id);

    // Later requests reuse the active restaurant.
    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(engine.activations(), 1);
}
