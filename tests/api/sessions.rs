//! The session cache of the hot write routes (placing an order, a status change over REST): a session
//! taken from memory is confirmed in the write's own transaction, so an ended session never commits
//! anything, and logout / password change / removal forget the cached session at once.

use diesel_async::RunQueryDsl;
use scan2order::context::AppContext;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{expect_error, order_body, spawn_app, TestApp};

const PHONE: &str = "+447700900123";
const ADMIN: (&str, &str) = ("root-admin", "admin-password-1");

fn context(app: &TestApp) -> AppContext {
    app.handle.as_ref().expect("the app is running").context()
}

async fn exec(app: &TestApp, sql: &str) {
    diesel::sql_query(sql)
        .execute(&mut app.db().await)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[actix_web::test]
async fn a_guest_whose_session_ended_in_the_database_cannot_order_again() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    // The first order looks the session up and remembers it; the second is authenticated from memory
    // (and confirmed by its write).
    app.place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    assert_eq!(context(&app).sessions.customers.len(), 1);
    app.place_order(&guest, &r.tables[0], &[(&r.items[0], 2)])
        .await;

    // Ended behind the server's back: the cached session is still fresh, but the write refuses it.
    exec(
        &app,
        "UPDATE customer_sessions SET expires_at = now() - interval '1 second'",
    )
    .await;
    let key = Uuid::new_v4().to_string();
    let body = order_body(&r.tables[0], &[(&r.items[0], 3)]);
    let res = app.place_order_raw(&guest, &key, &body).await;
    expect_error(res, 401, "unauthenticated").await;
    app.assert_sql(
        "nothing was written for the ended session",
        "SELECT count(*) = 2 FROM orders",
    )
    .await;
    app.assert_sql(
        "no message was queued for it either",
        "SELECT count(*) = 2 FROM notification_outbox",
    )
    .await;

    // Restored, the session orders again, and the refused key was not burnt by the refusal.
    exec(
        &app,
        "UPDATE customer_sessions SET expires_at = now() + interval '1 day'",
    )
    .await;
    let res = app.place_order_raw(&guest, &key, &body).await;
    assert_eq!(res.status(), 201);
}

#[actix_web::test]
async fn a_chef_whose_session_ended_in_the_database_cannot_move_orders() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let id = order.id.to_string();
    let chef = app.login_chef(&r).await;
    assert_eq!(app.set_status(&chef, &id, "accepted").await.status(), 200);
    assert_eq!(context(&app).sessions.staff.len(), 1);
    assert_eq!(app.set_status(&chef, &id, "preparing").await.status(), 200);

    exec(
        &app,
        "UPDATE staff_sessions SET expires_at = now() - interval '1 second'",
    )
    .await;
    expect_error(
        app.set_status(&chef, &id, "ready").await,
        401,
        "unauthenticated",
    )
    .await;
    app.assert_sql(
        "the order stayed where it was",
        &format!("SELECT status = 'preparing' FROM orders WHERE id = '{id}'"),
    )
    .await;
    app.assert_sql(
        "and its history has no refused step",
        &format!("SELECT count(*) = 3 FROM order_status_history WHERE order_id = '{id}'"),
    )
    .await;

    // The refused step did not advance the restaurant's view of the order: a live session moves it.
    let chef = app.login_chef(&r).await;
    assert_eq!(app.set_status(&chef, &id, "ready").await.status(), 200);
}

#[actix_web::test]
async fn logout_and_a_password_change_forget_the_cached_session_at_once() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let guest = app.verify_phone(PHONE).await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let id = order.id.to_string();

    let chef = app.login_chef(&r).await;
    assert_eq!(app.set_status(&chef, &id, "accepted").await.status(), 200);
    let res = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&chef)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 204);
    assert_eq!(context(&app).sessions.staff.len(), 0);
    expect_error(
        app.set_status(&chef, &id, "preparing").await,
        401,
        "unauthenticated",
    )
    .await;

    let chef = app.login_chef(&r).await;
    assert_eq!(app.set_status(&chef, &id, "preparing").await.status(), 200);
    assert_eq!(context(&app).sessions.staff.len(), 1);
    app.staff(ADMIN.0, ADMIN.1, "admin", None).await;
    let admin = app.login(ADMIN.0, ADMIN.1).await;
    let uid: String = {
        let res = app
            .get(
                &format!("/api/v1/admin/restaurants/{}/staff", r.id),
                Some(&admin),
            )
            .await;
        let body: serde_json::Value = res.json().await.expect("json");
        body["staff"][0]["id"].as_str().expect("id").to_string()
    };
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/admin/restaurants/{}/staff/{uid}", r.id)))
        .bearer_auth(&admin)
        .json(&json!({"password": "a-new-password-42"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(context(&app).sessions.staff.len(), 0);
    expect_error(
        app.set_status(&chef, &id, "ready").await,
        401,
        "unauthenticated",
    )
    .await;
}
