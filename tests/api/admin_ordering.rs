//! Admin changes and orders in one restaurant: a change applies in commit order, and an order priced
//! after a change committed sees it. A test transaction that holds a lock on `restaurant_tables` stops
//! the restaurant's reload (the last step of a change) after the change itself has committed; Postgres's
//! own lock queue is the signal that the change is there.

use diesel_async::RunQueryDsl;
use scan2order_actors::restaurant::PlaceOrder;
use scan2order_schema::domain::{MenuItemId, Phone, RestaurantId, TableId};
use scan2order_schema::wire::PlaceOrderLine;
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

const ADMIN: (&str, &str) = ("ordering-admin", "admin-password-1");

/// The restaurant's reload waits in Postgres's lock queue behind the test's lock.
const RELOAD_WAITS: &str = "EXISTS (SELECT 1 FROM pg_stat_activity \
     WHERE datname = current_database() AND wait_event_type = 'Lock' \
     AND query ILIKE '%restaurant_tables%')";

/// Starts a price change of `item` in the background; resolves to its HTTP status.
fn change_price(
    app: &TestApp,
    admin: &str,
    restaurant: uuid::Uuid,
    item: uuid::Uuid,
    price_cents: i64,
) -> tokio::task::JoinHandle<u16> {
    let req = app
        .http
        .patch(app.url(&format!(
            "/api/v1/admin/restaurants/{restaurant}/menu-items/{item}"
        )))
        .bearer_auth(admin)
        .json(&json!({ "price_cents": price_cents }));
    actix_web::rt::spawn(async move { req.send().await.expect("request").status().as_u16() })
}

#[actix_web::test]
async fn an_order_sent_while_a_price_change_is_applying_is_priced_at_the_new_price() {
    let app = spawn_app().await;
    app.staff(ADMIN.0, ADMIN.1, "admin", None).await;
    let admin = app.login(ADMIN.0, ADMIN.1).await;
    let r = app.restaurant("in-commit-order", 1, 1).await;
    let item = &r.items[0];
    let table = &r.tables[0];
    let rid = RestaurantId::from(r.id);
    let actor = app.engine().restaurant(rid).await.expect("actor");

    let mut lock = app.db().await;
    diesel::sql_query("BEGIN")
        .execute(&mut lock)
        .await
        .expect("begin");
    diesel::sql_query("LOCK TABLE restaurant_tables IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .expect("lock");

    let new_price = item.price_cents + 1_000;
    let change = change_price(&app, &admin, r.id, item.id, new_price);
    app.wait_for_sql("the change's reload to queue behind the lock", RELOAD_WAITS)
        .await;
    app.assert_sql(
        "the change itself has committed",
        &format!(
            "(SELECT price_cents FROM menu_items WHERE id = '{}') = {new_price}",
            item.id
        ),
    )
    .await;

    // `send` puts the order in the restaurant's mailbox now, while the reload is still waiting.
    let order = actor.send(PlaceOrder {
        table_id: TableId::from(table.id),
        table_token: table.token.clone(),
        phone: Phone::parse("+447700900777").expect("phone"),
        idempotency_key: "after-the-change".into(),
        lines: vec![PlaceOrderLine {
            menu_item_id: MenuItemId::from(item.id),
            quantity: 1,
            note: None,
            options: None,
        }],
        note: None,
        allergies: None,
        session: None,
    });

    diesel::sql_query("COMMIT")
        .execute(&mut lock)
        .await
        .expect("release the lock");
    assert_eq!(change.await.expect("change task"), 200);
    let placed = order.await.expect("mailbox").expect("order placed");
    assert_eq!(
        placed.order.total_cents, new_price,
        "an order that reached the restaurant after the change committed is priced from it"
    );
    app.assert_sql(
        "the stored order carries the new price",
        &format!(
            "(SELECT total_cents FROM orders WHERE id = '{}') = {new_price}",
            placed.order.id
        ),
    )
    .await;
}
