//! The admin API: CRUD with role checks and validation, table QR codes, token rotation, staff.

use scan2order_schema::wire::ServerMsg;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

const ADMIN: (&str, &str) = ("root-admin", "admin-password-1");

pub(crate) async fn admin_token(app: &TestApp) -> String {
    app.staff(ADMIN.0, ADMIN.1, "admin", None).await;
    app.login(ADMIN.0, ADMIN.1).await
}

pub(crate) async fn call(
    app: &TestApp,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = app.url(&format!("/api/v1/admin{path}"));
    let req = match method {
        "GET" => app.http.get(url),
        "POST" => app.http.post(url),
        "PATCH" => app.http.patch(url),
        "DELETE" => app.http.delete(url),
        other => panic!("method {other}"),
    }
    .bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

#[actix_web::test]
async fn an_admin_builds_a_restaurant_its_menu_tables_and_chef_and_the_chef_can_work() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;

    let (s, r) = call(&app, &admin, "POST", "/restaurants", Some(json!({
        "slug": "casa-nova", "name": "Casa Nova", "currency": "EUR", "time_zone": "Europe/Lisbon"
    }))).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["accepting_orders"], true);
    let rid = r["id"].as_str().expect("id").to_string();
    let (s, dup) = call(
        &app,
        &admin,
        "POST",
        "/restaurants",
        Some(json!({
            "slug": "casa-nova", "name": "Other", "currency": "EUR", "time_zone": "Europe/Lisbon"
        })),
    )
    .await;
    assert_eq!((s, dup["error"].as_str()), (409, Some("slug_taken")));

    let (s, cat) = call(
        &app,
        &admin,
        "POST",
        &format!("/restaurants/{rid}/categories"),
        Some(json!({"name": "Petiscos"})),
    )
    .await;
    assert_eq!(s, 201, "{cat}");
    let cid = cat["id"].as_str().expect("id").to_string();
    let (s, item) = call(&app, &admin, "POST", &format!("/restaurants/{rid}/menu-items"), Some(json!({
        "category_id": cid, "name": "Bacalhau à Brás", "description": "Salt cod, eggs, potatoes",
        "price_cents": 1450, "tags": ["Gluten-Free"]
    }))).await;
    assert_eq!(s, 201, "{item}");
    assert_eq!(item["category_id"], cid.as_str());
    assert_eq!(item["available"], true);
    assert_eq!(item["tags"], json!(["gluten-free"]));
    let iid = item["id"].as_str().expect("id").to_string();

    let (s, table) = call(
        &app,
        &admin,
        "POST",
        &format!("/restaurants/{rid}/tables"),
        Some(json!({"label": "12"})),
    )
    .await;
    assert_eq!(s, 201, "{table}");
    let token = table["token"].as_str().expect("token").to_string();
    assert!(token.len() >= 22, "at least 128 random bits");
    assert_eq!(table["url"], format!("http://localhost:8080/t/{token}"));
    let (s, e) = call(
        &app,
        &admin,
        "POST",
        &format!("/restaurants/{rid}/tables"),
        Some(json!({"label": "12"})),
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("label_taken")));

    let (s, chef) = call(
        &app,
        &admin,
        "POST",
        &format!("/restaurants/{rid}/staff"),
        Some(json!({
            "username": "chef.nova", "password": "a-good-long-password"
        })),
    )
    .await;
    assert_eq!(s, 201, "{chef}");
    assert_eq!(chef["role"], "chef");
    assert!(chef.get("password").is_none() && chef.get("password_hash").is_none());
    let (s, e) = call(
        &app,
        &admin,
        "POST",
        &format!("/restaurants/{rid}/staff"),
        Some(json!({
            "username": "chef.nova", "password": "another-long-password"
        })),
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("username_taken")));

    // The guest sees the new dish; the new chef can sign in and sees the kitchen.
    let menu: Value = app
        .http
        .get(app.url(&format!("/api/v1/tables/{token}")))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(menu["restaurant"]["name"], "Casa Nova");
    assert_eq!(
        menu["menu"]["categories"][0]["items"][0]["name"],
        "Bacalhau à Brás"
    );
    let chef_token = app.login("chef.nova", "a-good-long-password").await;
    let res = app
        .http
        .get(app.url("/api/v1/kitchen/orders"))
        .bearer_auth(&chef_token)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);

    // Reads, lists and deletes.
    let (s, list) = call(&app, &admin, "GET", "/restaurants", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["restaurants"].as_array().map(Vec::len), Some(1));
    let (s, items) = call(
        &app,
        &admin,
        "GET",
        &format!("/restaurants/{rid}/menu-items"),
        None,
    )
    .await;
    assert_eq!((s, items["items"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, e) = call(
        &app,
        &admin,
        "DELETE",
        &format!("/restaurants/{rid}/categories/{cid}"),
        None,
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("not_empty")));
    let (s, _) = call(
        &app,
        &admin,
        "DELETE",
        &format!("/restaurants/{rid}/menu-items/{iid}"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &app,
        &admin,
        "GET",
        &format!("/restaurants/{rid}/menu-items/{iid}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let menu: Value = app
        .http
        .get(app.url(&format!("/api/v1/tables/{token}")))
        .send()
        .await
        .expect("req")
        .json()
        .await
        .expect("json");
    assert_eq!(menu["menu"]["categories"][0]["items"], json!([]));
}

#[actix_web::test]
async fn chefs_get_403_on_every_admin_route_and_guests_401() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    for (method, path) in [
        ("GET", "/restaurants".to_string()),
        ("POST", "/restaurants".to_string()),
        ("PATCH", format!("/restaurants/{}", r.id)),
        ("POST", format!("/restaurants/{}/tables", r.id)),
        (
            "GET",
            format!("/restaurants/{}/tables/{}/qr.png", r.id, r.tables[0].id),
        ),
        ("POST", format!("/restaurants/{}/staff", r.id)),
        ("GET", "/shards".to_string()),
    ] {
        let (s, body) = call(&app, &chef, method, &path, Some(json!({}))).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}"
        );
        let (s, _) = call(&app, "not-a-token", method, &path, Some(json!({}))).await;
        assert_eq!(s, 401, "{method} {path}");
    }
}

#[actix_web::test]
async fn invalid_admin_input_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("roma", 1, 1).await;
    let cases = [
        (
            "POST",
            "/restaurants".to_string(),
            json!({"slug": "Bad Slug", "name": "x", "currency": "EUR", "time_zone": "UTC"}),
            "slug",
        ),
        (
            "POST",
            "/restaurants".to_string(),
            json!({"slug": "ok", "name": "x", "currency": "euro", "time_zone": "UTC"}),
            "currency",
        ),
        (
            "POST",
            "/restaurants".to_string(),
            json!({"slug": "ok", "name": "x", "currency": "EUR", "time_zone": "Mars/Olympus"}),
            "time_zone",
        ),
        (
            "POST",
            "/restaurants".to_string(),
            json!({"slug": "ok", "name": "", "currency": "EUR", "time_zone": "UTC"}),
            "name",
        ),
        (
            "POST",
            format!("/restaurants/{}/menu-items", r.id),
            json!({"name": "x", "price_cents": 100}),
            "category_id",
        ),
        (
            "POST",
            format!("/restaurants/{}/menu-items", r.id),
            json!({"category_id": uuid::Uuid::new_v4(), "name": "x", "price_cents": 100}),
            "category_id",
        ),
        (
            "PATCH",
            format!("/restaurants/{}/menu-items/{}", r.id, r.items[0].id),
            json!({"price_cents": -1}),
            "price_cents",
        ),
        (
            "POST",
            format!("/restaurants/{}/tables", r.id),
            json!({"label": "x".repeat(41)}),
            "label",
        ),
        (
            "POST",
            format!("/restaurants/{}/staff", r.id),
            json!({"username": "ok-name", "password": "short"}),
            "password",
        ),
        (
            "POST",
            format!("/restaurants/{}/staff", r.id),
            json!({"username": "no spaces", "password": "long-enough-pass"}),
            "username",
        ),
        (
            "PATCH",
            format!("/restaurants/{}", r.id),
            json!({"ticket_warn_after_s": 5}),
            "ticket_warn_after_s",
        ),
    ];
    for (method, path, body, field) in cases {
        let (s, e) = call(&app, &admin, method, &path, Some(body.clone())).await;
        assert_eq!(s, 400, "{method} {path} {body}: {e}");
        assert_eq!(e["error"], "invalid_request");
        assert!(
            e["message"].as_str().unwrap_or_default().contains(field),
            "{e} should name {field}"
        );
    }
    // Another restaurant's ids are 404.
    let other = app.restaurant("other", 1, 1).await;
    let (s, _) = call(
        &app,
        &admin,
        "GET",
        &format!("/restaurants/{}/menu-items/{}", r.id, other.items[0].id),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}/tables/{}", r.id, other.tables[0].id),
        Some(json!({"label": "x"})),
    )
    .await;
    assert_eq!(s, 404);
}

#[actix_web::test]
async fn a_table_qr_png_decodes_to_the_table_url_and_the_sheet_has_every_table() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("roma", 1, 3).await;
    let t = &r.tables[1];
    let res = app
        .http
        .get(app.url(&format!(
            "/api/v1/admin/restaurants/{}/tables/{}/qr.png",
            r.id, t.id
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    let png = res.bytes().await.expect("png");
    let img = image::load_from_memory(&png).expect("a PNG").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(img);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, content) = grids[0].decode().expect("decodes");
    assert_eq!(content, format!("http://localhost:8080/t/{}", t.token));

    let res = app
        .http
        .get(app.url(&format!(
            "/api/v1/admin/restaurants/{}/tables/{}/qr.svg",
            r.id, t.id
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("req");
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert!(res.text().await.expect("svg").contains("<svg"));

    let sheet = app
        .http
        .get(app.url(&format!("/api/v1/admin/restaurants/{}/qr-sheet", r.id)))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("html");
    assert_eq!(sheet.matches("data-testid=\"qr-card\"").count(), 3);
    assert!(sheet.contains("Scan to order") && sheet.contains("Restaurant roma"));
}

#[actix_web::test]
async fn rotating_a_table_token_kills_the_old_code_for_rest_and_open_sockets() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("roma", 1, 2).await;
    let t = &r.tables[0];
    let mut socket = app.table_socket(&t.token, "").await;
    socket.hello_snapshot().await;
    let mut other = app.table_socket(&r.tables[1].token, "").await;
    other.hello_snapshot().await;

    let (s, rotated) = call(
        &app,
        &admin,
        "POST",
        &format!("/restaurants/{}/tables/{}/rotate-token", r.id, t.id),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let new_token = rotated["token"].as_str().expect("token").to_string();
    assert_ne!(new_token, t.token);
    assert_eq!(socket.closed_with().await, Some(1008));

    let res = app
        .http
        .get(app.url(&format!("/api/v1/tables/{}", t.token)))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 404);
    let res = app
        .http
        .get(app.url(&format!("/api/v1/tables/{new_token}")))
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 200);
    let mut old = app.table_socket(&t.token, "").await;
    assert_eq!(old.closed_with().await, Some(1008));
    let guest = app.verify_phone("+33612345678").await;
    let res = app
        .place_order_raw(&guest, "k-rotated", &json!({"table_token": t.token, "items": [{"menu_item_id": r.items[0].id, "quantity": 1}]}))
        .await;
    assert_eq!(res.status(), 404);

    // The other table's socket is untouched and hears the next menu change.
    let (s, _) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}/menu-items/{}", r.id, r.items[0].id),
        Some(json!({"name": "Renamed dish"})),
    )
    .await;
    assert_eq!(s, 200);
    match other.next().await {
        ServerMsg::Menu { .. } => {}
        m => panic!("expected a menu event, got {m:?}"),
    }
}

#[actix_web::test]
async fn pausing_from_the_admin_console_reaches_guests_and_stops_orders() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("roma", 1, 1).await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;
    let (s, body) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}", r.id),
        Some(json!({"accepting_orders": false})),
    )
    .await;
    assert_eq!((s, body["accepting_orders"].as_bool()), (200, Some(false)));
    let m = table
        .until(|m| matches!(m, ServerMsg::Restaurant { .. }))
        .await;
    assert!(matches!(
        m,
        ServerMsg::Restaurant {
            accepting_orders: false,
            ..
        }
    ));
    let guest = app.verify_phone("+33612345679").await;
    let res = app
        .place_order_raw(&guest, "k-paused", &json!({"table_token": r.tables[0].token, "items": [{"menu_item_id": r.items[0].id, "quantity": 1}]}))
        .await;
    assert_eq!(res.status(), 409);
    let e: Value = res.json().await.expect("json");
    assert_eq!(e["error"], "not_accepting_orders");
}

#[actix_web::test]
async fn changing_a_chefs_password_ends_their_sessions_and_sockets_at_once() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let (s, list) = call(
        &app,
        &admin,
        "GET",
        &format!("/restaurants/{}/staff", r.id),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let uid = list["staff"][0]["id"].as_str().expect("id").to_string();
    let (s, _) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}/staff/{uid}", r.id),
        Some(json!({"password": "a-brand-new-password"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(kitchen.closed_with().await, Some(1008));
    let res = app
        .http
        .get(app.url("/api/v1/auth/me"))
        .bearer_auth(&chef)
        .send()
        .await
        .expect("req");
    assert_eq!(res.status(), 401);
    app.login(&r.chef.0, "a-brand-new-password").await;
    let (s, _) = call(
        &app,
        &admin,
        "DELETE",
        &format!("/restaurants/{}/staff/{uid}", r.id),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let res = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": r.chef.0, "password": "a-brand-new-password"}),
        )
        .await;
    assert_eq!(res.status(), 401);
}
