//! Every guest and kitchen call's error answers per PROTOCOL.md: the status, the `{"error","message"}`
//! body with the contract's code, the offending field named, and nothing internal leaked.

use reqwest::header::{CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{expect_error, expect_invalid, order_body, spawn_app, RestaurantFx, TestApp};

const GUEST_PHONE: &str = "+447700900123";

/// A JSON call with a valid body and three broken variants, each naming the field it breaks.
struct JsonCall {
    method: Method,
    path: String,
    bearer: Option<String>,
    valid: Value,
    wrong_type: (Value, &'static str),
    missing: (Value, &'static str),
    unknown: (Value, &'static str),
}

impl TestApp {
    fn request(&self, call: &JsonCall) -> reqwest::RequestBuilder {
        let mut req = self.http.request(call.method.clone(), self.url(&call.path));
        if let Some(token) = &call.bearer {
            req = req.bearer_auth(token);
        }
        if call.path == "/api/v1/orders" {
            req = req.header("Idempotency-Key", Uuid::new_v4().to_string());
        }
        req
    }

    async fn send_raw(
        &self,
        call: &JsonCall,
        content_type: &str,
        body: String,
    ) -> reqwest::Response {
        self.request(call)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    async fn send_json(&self, call: &JsonCall, body: &Value) -> reqwest::Response {
        self.send_raw(call, "application/json", body.to_string())
            .await
    }
}

/// One restaurant with a chef and a verified guest.
async fn setup() -> (TestApp, RestaurantFx, String, String) {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 3, 2).await;
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone(GUEST_PHONE).await;
    (app, r, chef, guest)
}

#[actix_web::test]
async fn malformed_mistyped_incomplete_oversized_and_non_json_bodies_are_refused_on_every_json_call(
) {
    let (app, r, chef, guest) = setup().await;
    let item = r.items[0].id;
    let table = r.tables[0].token.clone();
    let order = Uuid::new_v4();
    let calls = vec![
        JsonCall {
            method: Method::POST,
            path: "/api/v1/otp/send".into(),
            bearer: None,
            valid: json!({"phone": "+447700900999"}),
            wrong_type: (json!({"phone": 447700900999u64}), "phone"),
            missing: (json!({}), "phone"),
            unknown: (
                json!({"phone": "+447700900999", "channel": "sms"}),
                "channel",
            ),
        },
        JsonCall {
            method: Method::POST,
            path: "/api/v1/otp/verify".into(),
            bearer: None,
            valid: json!({"phone": GUEST_PHONE, "code": "000000"}),
            wrong_type: (json!({"phone": GUEST_PHONE, "code": 123456}), "code"),
            missing: (json!({"phone": GUEST_PHONE}), "code"),
            unknown: (
                json!({"phone": GUEST_PHONE, "code": "123456", "remember": true}),
                "remember",
            ),
        },
        JsonCall {
            method: Method::POST,
            path: "/api/v1/orders".into(),
            bearer: Some(guest.clone()),
            valid: json!({"table_token": table, "items": [{"menu_item_id": item, "quantity": 1}]}),
            wrong_type: (
                json!({"table_token": table, "items": [{"menu_item_id": item, "quantity": "two"}]}),
                "quantity",
            ),
            missing: (json!({"table_token": table}), "items"),
            unknown: (
                json!({"table_token": table,
                       "items": [{"menu_item_id": item, "quantity": 1, "price_cents": 1}]}),
                "price_cents",
            ),
        },
        JsonCall {
            method: Method::POST,
            path: "/api/v1/auth/login".into(),
            bearer: None,
            valid: json!({"username": "nobody", "password": "nothing"}),
            wrong_type: (json!({"username": 7, "password": "x"}), "username"),
            missing: (json!({"username": "nobody"}), "password"),
            unknown: (
                json!({"username": "nobody", "password": "x", "role": "admin"}),
                "role",
            ),
        },
        JsonCall {
            method: Method::POST,
            path: format!("/api/v1/kitchen/orders/{order}/status"),
            bearer: Some(chef.clone()),
            valid: json!({"status": "accepted"}),
            wrong_type: (json!({"status": 3}), "status"),
            missing: (json!({}), "status"),
            unknown: (json!({"status": "ready", "force": true}), "force"),
        },
        JsonCall {
            method: Method::PATCH,
            path: format!("/api/v1/kitchen/menu-items/{item}"),
            bearer: Some(chef.clone()),
            valid: json!({"available": false}),
            wrong_type: (json!({"available": "no"}), "available"),
            missing: (json!({}), "available"),
            unknown: (json!({"available": true, "price_cents": 1}), "price_cents"),
        },
        JsonCall {
            method: Method::PATCH,
            path: "/api/v1/kitchen/restaurant".into(),
            bearer: Some(chef.clone()),
            valid: json!({"accepting_orders": true}),
            wrong_type: (json!({"accepting_orders": "yes"}), "accepting_orders"),
            missing: (json!({}), "accepting_orders"),
            unknown: (json!({"accepting_orders": true, "until": "noon"}), "until"),
        },
    ];
    for call in &calls {
        let res = app
            .send_raw(call, "application/json", r#"{"phone": "+44"#.into())
            .await;
        expect_error(res, 400, "invalid_request").await;
        let res = app.send_raw(call, "application/json", "[1, 2".into()).await;
        expect_error(res, 400, "invalid_request").await;
        // Bodies of the wrong shape altogether.
        for body in [
            json!(["not", "an", "object"]),
            json!("x"),
            json!(5),
            json!(null),
        ] {
            expect_error(app.send_json(call, &body).await, 400, "invalid_request").await;
        }
        let (body, field) = &call.wrong_type;
        expect_invalid(app.send_json(call, body).await, field).await;
        let (body, field) = &call.missing;
        expect_invalid(app.send_json(call, body).await, field).await;
        let (body, field) = &call.unknown;
        expect_invalid(app.send_json(call, body).await, field).await;
        let res = app
            .send_raw(call, "text/plain", call.valid.to_string())
            .await;
        expect_error(res, 415, "unsupported_media_type").await;
        let res = app
            .send_raw(call, "application/x-www-form-urlencoded", "phone=1".into())
            .await;
        expect_error(res, 415, "unsupported_media_type").await;
        let mut huge = call.valid.clone();
        huge["padding"] = json!("x".repeat(64 * 1024));
        let res = app.send_json(call, &huge).await;
        expect_error(res, 413, "payload_too_large").await;
    }
    app.wait_for_sql("no order was written", "SELECT count(*) = 0 FROM orders")
        .await;
}

#[actix_web::test]
async fn an_order_needs_a_sane_idempotency_key() {
    let (app, r, _chef, guest) = setup().await;
    let body = order_body(&r.tables[0], &[(&r.items[0], 1)]);
    let res = app
        .http
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&guest)
        .json(&body)
        .send()
        .await
        .expect("request");
    expect_invalid(res, "Idempotency-Key").await;
    for bad in ["", "   ", &"k".repeat(129)] {
        let res = app.place_order_raw(&guest, bad, &body).await;
        expect_invalid(res, "Idempotency-Key").await;
    }
    app.wait_for_sql("no order was written", "SELECT count(*) = 0 FROM orders")
        .await;
}

#[actix_web::test]
async fn unknown_table_tokens_are_not_found() {
    let (app, r, _chef, guest) = setup().await;
    for token in [
        "nope".to_string(),
        scan2order_schema::tokens::new_table_token(),
        "x".repeat(200),
        "a%20b".to_string(),
    ] {
        let res = app.get(&format!("/api/v1/tables/{token}"), None).await;
        expect_error(res, 404, "not_found").await;
    }
    let mut body = order_body(&r.tables[0], &[(&r.items[0], 1)]);
    body["table_token"] = json!(scan2order_schema::tokens::new_table_token());
    let res = app
        .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
        .await;
    let body = expect_error(res, 404, "not_found").await;
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("table_token")));
    // The real token still works.
    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn unknown_or_malformed_order_and_item_ids_are_not_found() {
    let (app, r, chef, guest) = setup().await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let res = app
        .get(&format!("/api/v1/orders/{}", order.id), Some(&guest))
        .await;
    assert_eq!(res.status(), 200, "the guest's own order is found");
    for id in [Uuid::new_v4().to_string(), "not-a-uuid".into(), "1".into()] {
        let res = app.get(&format!("/api/v1/orders/{id}"), Some(&guest)).await;
        expect_error(res, 404, "not_found").await;
        let res = app.set_status(&chef, &id, "accepted").await;
        expect_error(res, 404, "not_found").await;
        let res = app
            .http
            .patch(app.url(&format!("/api/v1/kitchen/menu-items/{id}")))
            .bearer_auth(&chef)
            .json(&json!({"available": false}))
            .send()
            .await
            .expect("request");
        expect_error(res, 404, "not_found").await;
    }
}

#[actix_web::test]
async fn guest_and_kitchen_calls_without_a_valid_token_are_unauthenticated() {
    let (app, r, chef, guest) = setup().await;
    let order = app
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let body = order_body(&r.tables[0], &[(&r.items[0], 1)]);
    let bad_tokens: [Option<&str>; 3] = [None, Some("garbage"), Some(&chef)];
    for token in bad_tokens {
        let mut req = app
            .http
            .post(app.url("/api/v1/orders"))
            .header("Idempotency-Key", Uuid::new_v4().to_string())
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        expect_error(res, 401, "unauthenticated").await;
        for path in [
            format!("/api/v1/orders/{}", order.id),
            "/api/v1/me/orders".into(),
        ] {
            let res = app.get(&path, token).await;
            expect_error(res, 401, "unauthenticated").await;
        }
    }
    // A guest token, no token or garbage opens no kitchen call.
    let staff_bad: [Option<&str>; 3] = [None, Some("garbage"), Some(&guest)];
    for token in staff_bad {
        for path in ["/api/v1/kitchen/orders", "/api/v1/auth/me"] {
            let res = app.get(path, token).await;
            expect_error(res, 401, "unauthenticated").await;
        }
        let mut req = app
            .http
            .post(app.url(&format!("/api/v1/kitchen/orders/{}/status", order.id)))
            .json(&json!({"status": "accepted"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        expect_error(req.send().await.expect("request"), 401, "unauthenticated").await;
    }
    app.wait_for_sql(
        "the order is still placed",
        "SELECT bool_and(status = 'placed') AND count(*) = 1 FROM orders",
    )
    .await;
}

#[actix_web::test]
async fn login_failures_look_the_same_for_unknown_users_and_wrong_passwords() {
    let (app, r, _chef, _guest) = setup().await;
    let wrong_password = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": r.chef.0, "password": "not-the-password"}),
        )
        .await;
    let unknown_user = app
        .post_json(
            "/api/v1/auth/login",
            &json!({"username": "nobody-here", "password": "not-the-password"}),
        )
        .await;
    assert!(wrong_password.headers().get("set-cookie").is_none());
    assert!(unknown_user.headers().get("set-cookie").is_none());
    let a = expect_error(wrong_password, 401, "invalid_credentials").await;
    let b = expect_error(unknown_user, 401, "invalid_credentials").await;
    assert_eq!(a, b, "both failures must read the same");
}

#[actix_web::test]
async fn a_logged_out_token_stops_working_at_once() {
    let (app, r, chef, _guest) = setup().await;
    let res = app.get("/api/v1/auth/me", Some(&chef)).await;
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&chef)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 204);
    for path in ["/api/v1/auth/me", "/api/v1/kitchen/orders"] {
        let res = app.get(path, Some(&chef)).await;
        expect_error(res, 401, "unauthenticated").await;
    }
    let res = app.set_available(&chef, r.items[0].id, false).await;
    expect_error(res, 401, "unauthenticated").await;
    let res = app
        .http
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&chef)
        .send()
        .await
        .expect("request");
    expect_error(res, 401, "unauthenticated").await;
}

#[actix_web::test]
async fn order_limits_are_enforced_naming_the_offending_field() {
    let (app, r, _chef, guest) = setup().await;
    let other = app.restaurant("bari", 1, 1).await;
    let table = &r.tables[0];
    let item = r.items[0].id;
    let line = |extra: Value| {
        let mut l = json!({"menu_item_id": item, "quantity": 1});
        if let (Some(l), Some(extra)) = (l.as_object_mut(), extra.as_object()) {
            l.extend(extra.clone());
        }
        l
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"table_token": table.token, "items": []}), "items"),
        (
            json!({"table_token": table.token, "items": [line(json!({"quantity": 0}))]}),
            "items[0].quantity",
        ),
        (
            json!({"table_token": table.token,
                   "items": [line(json!({})), line(json!({"quantity": 100}))]}),
            "items[1].quantity",
        ),
        (
            json!({"table_token": table.token, "items": vec![line(json!({})); 51]}),
            "items",
        ),
        (
            json!({"table_token": table.token,
                   "items": [line(json!({"note": "n".repeat(201)}))]}),
            "items[0].note",
        ),
        (
            json!({"table_token": table.token, "items": [line(json!({}))],
                   "note": "é".repeat(201)}),
            "note",
        ),
        (
            json!({"table_token": table.token,
                   "items": [line(json!({"note": "no\u{7}bell"}))]}),
            "items[0].note",
        ),
        (
            json!({"table_token": table.token, "items": [line(json!({}))],
                   "note": "escape \u{1b}[2J"}),
            "note",
        ),
        (
            json!({"table_token": table.token,
                   "items": [{"menu_item_id": Uuid::new_v4(), "quantity": 1}]}),
            "items[0].menu_item_id",
        ),
        (
            json!({"table_token": table.token,
                   "items": [line(json!({})), {"menu_item_id": other.items[0].id, "quantity": 1}]}),
            "items[1].menu_item_id",
        ),
    ];
    for (body, field) in &cases {
        let res = app
            .place_order_raw(&guest, &Uuid::new_v4().to_string(), body)
            .await;
        expect_invalid(res, field).await;
    }
    app.wait_for_sql(
        "no refused order was written",
        "SELECT count(*) = 0 FROM orders",
    )
    .await;
    // The limits themselves are allowed: 50 lines, quantity 99, 200-character notes (newlines too).
    let body = json!({
        "table_token": table.token,
        "items": vec![line(json!({"quantity": 99, "note": "é".repeat(200)})); 50],
        "note": format!("{}\n{}", "a".repeat(100), "b".repeat(99)),
    });
    let res = app
        .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
        .await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
}

#[actix_web::test]
async fn order_is_refused_when_item_is_sold_out() {
    let (app, r, chef, guest) = setup().await;
    let res = app.set_available(&chef, r.items[1].id, false).await;
    assert_eq!(res.status(), 200);
    let item: Value = res.json().await.expect("json");
    assert_eq!(item["available"], false);
    let body = order_body(&r.tables[0], &[(&r.items[0], 1), (&r.items[1], 2)]);
    let res = app
        .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
        .await;
    let err = expect_error(res, 409, "item_unavailable").await;
    assert_eq!(err["item_ids"], json!([r.items[1].id]));
    app.wait_for_sql("no order was written", "SELECT count(*) = 0 FROM orders")
        .await;
    // Back on the menu, the same order goes through.
    let res = app.set_available(&chef, r.items[1].id, true).await;
    assert_eq!(res.status(), 200);
    let res = app
        .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
        .await;
    assert_eq!(res.status(), 201);
}

#[actix_web::test]
async fn order_is_refused_while_the_restaurant_is_paused() {
    let (app, r, chef, guest) = setup().await;
    let res = app.set_accepting(&chef, false).await;
    assert_eq!(res.status(), 200);
    let restaurant: Value = res.json().await.expect("json");
    assert_eq!(restaurant["accepting_orders"], false);
    let menu: Value = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(menu["restaurant"]["slug"], r.slug);
    assert_eq!(menu["restaurant"]["accepting_orders"], false);
    let body = order_body(&r.tables[0], &[(&r.items[0], 1)]);
    let res = app
        .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
        .await;
    expect_error(res, 409, "not_accepting_orders").await;
    app.wait_for_sql("no order was written", "SELECT count(*) = 0 FROM orders")
        .await;
    let res = app.set_accepting(&chef, true).await;
    assert_eq!(res.status(), 200);
    let res = app
        .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
        .await;
    assert_eq!(res.status(), 201);
}

#[actix_web::test]
async fn the_table_menu_answers_304_to_its_etag_and_gets_a_new_one_after_a_sold_out_toggle() {
    let (app, r, chef, _guest) = setup().await;
    let path = format!("/api/v1/tables/{}", r.tables[0].token);
    let res = app.get(&path, None).await;
    assert_eq!(res.status(), 200);
    let etag = res
        .headers()
        .get(ETAG)
        .expect("an ETag")
        .to_str()
        .expect("ascii")
        .to_string();
    let menu: Value = res.json().await.expect("json");
    assert_eq!(menu["menu"]["categories"][0]["items"][0]["available"], true);
    for _ in 0..2 {
        let res = app
            .http
            .get(app.url(&path))
            .header(IF_NONE_MATCH, &etag)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 304);
        assert_eq!(
            res.headers().get(ETAG).and_then(|v| v.to_str().ok()),
            Some(etag.as_str())
        );
        assert!(res.bytes().await.expect("body").is_empty());
    }
    let res = app.set_available(&chef, r.items[0].id, false).await;
    assert_eq!(res.status(), 200);
    let res = app
        .http
        .get(app.url(&path))
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "the old ETag no longer matches");
    let new_etag = res
        .headers()
        .get(ETAG)
        .expect("an ETag")
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(new_etag, etag);
    let fresh: Value = res.json().await.expect("json");
    assert_eq!(
        fresh["menu"]["categories"][0]["items"][0]["available"],
        false
    );
    assert_ne!(fresh["menu"]["version"], menu["menu"]["version"]);
    let res = app
        .http
        .get(app.url(&path))
        .header(IF_NONE_MATCH, &new_etag)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 304);
}

#[actix_web::test]
async fn otp_and_history_inputs_are_checked_naming_the_field() {
    let (app, _r, _chef, guest) = setup().await;
    for phone in [
        "447700900123",
        "+44 77a",
        "+1234567",
        "+1234567890123456",
        "+0123456789",
    ] {
        let res = app
            .post_json("/api/v1/otp/send", &json!({"phone": phone}))
            .await;
        expect_invalid(res, "phone").await;
        let res = app
            .post_json(
                "/api/v1/otp/verify",
                &json!({"phone": phone, "code": "123456"}),
            )
            .await;
        expect_invalid(res, "phone").await;
    }
    // No code was ever sent to this phone.
    let res = app
        .post_json(
            "/api/v1/otp/verify",
            &json!({"phone": "+447700900555", "code": "123456"}),
        )
        .await;
    expect_error(res, 400, "invalid_code").await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=many", "limit"),
        ("before=garbage", "before"),
        ("colour=blue", "colour"),
    ] {
        let res = app
            .get(&format!("/api/v1/me/orders?{query}"), Some(&guest))
            .await;
        expect_invalid(res, field).await;
    }
}
