//! Isolation: staff see only their restaurant, a table only its own orders, a guest only their own
//! orders, and the kitchen only masked phone numbers.

use std::collections::HashSet;

use scan2order_schema::wire::{OrdersPage, ServerMsg};
use serde_json::{json, Value};

use crate::helpers::{expect_error, spawn_app};

const PHONE: &str = "+447700900123";
const MASKED: &str = "+44•••••••123";
const OTHER_PHONE: &str = "+4915112345678";

#[actix_web::test]
async fn a_chef_cannot_read_or_change_another_restaurants_orders_or_menu() {
    let app = spawn_app().await;
    let a = app.restaurant("roma", 2, 1).await;
    let b = app.restaurant("bari", 2, 1).await;
    let chef_a = app.login_chef(&a).await;
    let chef_b = app.login_chef(&b).await;
    let guest = app.verify_phone(PHONE).await;
    let order_b = app
        .place_order(&guest, &b.tables[0], &[(&b.items[0], 1)])
        .await;

    let res = app
        .set_status(&chef_a, &order_b.id.to_string(), "accepted")
        .await;
    expect_error(res, 404, "not_found").await;
    let res = app.set_available(&chef_a, b.items[0].id, false).await;
    expect_error(res, 404, "not_found").await;
    for path in [
        format!("/api/v1/kitchen/orders?restaurant_id={}", b.id),
        format!("/api/v1/kitchen/restaurant?restaurant_id={}", b.id),
    ] {
        let res = app.get(&path, Some(&chef_a)).await;
        expect_error(res, 404, "not_found").await;
    }
    let res = app
        .http
        .patch(app.url(&format!(
            "/api/v1/kitchen/restaurant?restaurant_id={}",
            b.id
        )))
        .bearer_auth(&chef_a)
        .json(&json!({"accepting_orders": false}))
        .send()
        .await
        .expect("request");
    expect_error(res, 404, "not_found").await;
    // A's own list does not show B's order.
    let res = app.get("/api/v1/kitchen/orders", Some(&chef_a)).await;
    assert_eq!(res.status(), 200);
    let list: Value = res.json().await.expect("json");
    assert_eq!(list["orders"], json!([]));
    // Nothing changed at B: its order is still placed, its dish and ordering still on.
    let res = app.get("/api/v1/kitchen/orders", Some(&chef_b)).await;
    let list: Value = res.json().await.expect("json");
    assert_eq!(list["orders"][0]["id"], order_b.id.to_string());
    assert_eq!(list["orders"][0]["status"], "placed");
    app.assert_sql(
        "B untouched",
        &format!(
            "SELECT (SELECT available FROM menu_items WHERE id = '{}') \
             AND (SELECT accepting_orders FROM restaurants WHERE id = '{}')",
            b.items[0].id, b.id
        ),
    )
    .await;
}

#[actix_web::test]
async fn a_kitchen_socket_never_sees_another_restaurants_orders() {
    let app = spawn_app().await;
    let a = app.restaurant("roma", 2, 1).await;
    let b = app.restaurant("bari", 2, 1).await;
    let chef_a = app.login_chef(&a).await;
    let guest = app.verify_phone(PHONE).await;
    app.place_order(&guest, &b.tables[0], &[(&b.items[0], 1)])
        .await;

    // Asking for B's kitchen as A's chef is refused with 1008.
    let mut foreign = app
        .kitchen_socket(&chef_a, &format!("&restaurant_id={}", b.id))
        .await;
    assert_eq!(foreign.closed_with().await, Some(1008));

    let mut kitchen = app.kitchen_socket(&chef_a, "").await;
    let (_, _, live) = kitchen.hello_snapshot().await;
    assert!(live.is_empty(), "B's order is not in A's snapshot");
    app.place_order(&guest, &b.tables[0], &[(&b.items[1], 1)])
        .await;
    let own = app
        .place_order(&guest, &a.tables[0], &[(&a.items[0], 1)])
        .await;
    match kitchen.next().await {
        ServerMsg::OrderCreated { order, .. } => assert_eq!(order.id, own.id),
        other => panic!("expected A's own order first, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_table_socket_never_sees_another_tables_order() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 2).await;
    let guest = app.verify_phone(PHONE).await;
    let other = app
        .place_order(&guest, &r.tables[1], &[(&r.items[0], 1)])
        .await;

    let mut t1 = app.table_socket(&r.tables[0].token, "").await;
    let (_, _, live) = t1.hello_snapshot().await;
    assert!(live.is_empty(), "T2's order is not in T1's snapshot");
    let mut t2 = app.table_socket(&r.tables[1].token, "").await;
    let (_, _, live) = t2.hello_snapshot().await;
    assert_eq!(live.iter().map(|o| o.id).collect::<Vec<_>>(), [other.id]);

    let on_t2 = app
        .place_order(&guest, &r.tables[1], &[(&r.items[1], 1)])
        .await;
    let on_t1 = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 2)])
        .await;
    match t1.next().await {
        ServerMsg::OrderCreated { order, .. } => assert_eq!(order.id, on_t1.id),
        other => panic!("expected T1's own order first, got {other:?}"),
    }
    match t2.next().await {
        ServerMsg::OrderCreated { order, .. } => assert_eq!(order.id, on_t2.id),
        other => panic!("expected T2's order, got {other:?}"),
    }
    // T2's status changes do not reach T1 either.
    let chef = app.login_chef(&r).await;
    let res = app
        .set_status(&chef, &on_t2.id.to_string(), "accepted")
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .set_status(&chef, &on_t1.id.to_string(), "accepted")
        .await;
    assert_eq!(res.status(), 200);
    match t1.next().await {
        ServerMsg::OrderStatus { order_id, .. } => assert_eq!(order_id, on_t1.id),
        other => panic!("expected T1's own status change first, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_guest_sees_only_their_own_orders_newest_first_page_by_page() {
    let app = spawn_app().await;
    let a = app.restaurant("roma", 2, 1).await;
    let b = app.restaurant("bari", 2, 1).await;
    let mine = app.verify_phone(PHONE).await;
    let theirs = app.verify_phone(OTHER_PHONE).await;
    let mut placed = Vec::new();
    for i in 0..5 {
        let r = if i % 2 == 0 { &a } else { &b };
        placed.push(
            app.place_order(&mine, &r.tables[0], &[(&r.items[0], 1)])
                .await,
        );
        app.place_order(&theirs, &r.tables[0], &[(&r.items[1], 1)])
            .await;
    }
    let foreign = app
        .place_order(&theirs, &a.tables[0], &[(&a.items[0], 3)])
        .await;

    let res = app
        .get(&format!("/api/v1/orders/{}", foreign.id), Some(&mine))
        .await;
    expect_error(res, 404, "not_found").await;
    let res = app
        .get(&format!("/api/v1/orders/{}", placed[0].id), Some(&mine))
        .await;
    assert_eq!(res.status(), 200);
    let own: Value = res.json().await.expect("json");
    assert_eq!(own["phone"], PHONE, "a guest sees their own number");

    let mut seen = Vec::new();
    let mut path = "/api/v1/me/orders?limit=2".to_string();
    let mut pages = 0;
    loop {
        let res = app.get(&path, Some(&mine)).await;
        assert_eq!(res.status(), 200);
        let page: OrdersPage = res.json().await.expect("page");
        pages += 1;
        assert!(page.orders.len() <= 2);
        assert!(page.orders.iter().all(|o| o.phone == PHONE));
        seen.extend(page.orders.iter().map(|o| o.id));
        match page.next_before {
            Some(cursor) => path = format!("/api/v1/me/orders?limit=2&before={cursor}"),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    let newest_first: Vec<_> = placed.iter().rev().map(|o| o.id).collect();
    assert_eq!(
        seen, newest_first,
        "all own orders, newest first, each once"
    );
    assert_eq!(pages, 3);
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len());
}

#[actix_web::test]
async fn the_kitchen_and_tables_see_masked_phones_never_the_full_number() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 1).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(PHONE).await;
    let digits = PHONE.trim_start_matches('+');
    let early = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;

    let mut kitchen = app.kitchen_socket(&chef, "").await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    let mut texts = Vec::new();
    for socket in [&mut kitchen, &mut table] {
        texts.push(socket.next_text().await); // hello
        let snapshot = socket.next_text().await;
        assert!(snapshot.contains(MASKED), "{snapshot}");
        texts.push(snapshot);
    }
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[1], 1)])
        .await;
    assert_eq!(order.phone, PHONE, "the guest sees their own number");
    for socket in [&mut kitchen, &mut table] {
        let created = socket.next_text().await;
        assert!(created.contains(MASKED), "{created}");
        texts.push(created);
    }
    let res = app.set_status(&chef, &early.id.to_string(), "ready").await;
    assert_eq!(res.status(), 200);
    let changed = res.text().await.expect("body");
    assert!(changed.contains(MASKED), "{changed}");
    texts.push(changed);
    let res = app.get("/api/v1/kitchen/orders", Some(&chef)).await;
    assert_eq!(res.status(), 200);
    let list = res.text().await.expect("body");
    assert!(list.contains(MASKED), "{list}");
    texts.push(list);
    for text in &texts {
        assert!(
            !text.contains(digits),
            "the full number leaked to the kitchen or a table: {text}"
        );
    }
}
