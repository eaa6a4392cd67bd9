//! Control characters and unparseable ids from a client (issue 14): NUL through every string of every
//! JSON endpoint and every query parameter gets 400 naming the field, never 503 (Postgres refuses NUL
//! and would look like an outage), and no library's parser text reaches the client.

use reqwest::Method;
use serde_json::{json, Value};

use crate::attacks::{digest, endpoints, world};
use crate::helpers::{assert_no_internals, expect_error, spawn_app};

/// The JSON pointer of every string in `value` (`/items/0/note`).
fn string_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::String(_) => out.push(at),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                string_pointers(v, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                string_pointers(v, format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// `items[0].note` for `/items/0/note`: the field as the server names it.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        if segment.parse::<usize>().is_ok() {
            out.push_str(&format!("[{segment}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(segment);
        }
    }
    out
}

#[actix_web::test]
async fn nul_and_control_characters_in_every_string_of_every_endpoint_get_400_naming_the_field() {
    let w = world().await;
    let app = &w.app;
    let before = digest(app).await;
    let mut tried = 0;
    for e in endpoints(&w) {
        let mut pointers = Vec::new();
        string_pointers(&e.body, String::new(), &mut pointers);
        for pointer in &pointers {
            for hostile in ["\u{0}\u{7}", "chef\u{0}", "a\u{1b}[2Jb", "\u{7f}"] {
                let mut body = e.body.clone();
                *body.pointer_mut(pointer).expect("field") = json!(hostile);
                let res = e
                    .send(app, "application/json", body.to_string().into_bytes())
                    .await;
                let what = format!("{} {} {pointer}={hostile:?}", e.method, e.path);
                let got = expect_error(res, 400, "invalid_request").await;
                let message = got["message"].as_str().unwrap_or_default();
                assert_eq!(
                    message,
                    format!(
                        "{}: control characters are not allowed",
                        field_path(pointer)
                    ),
                    "{what}"
                );
                tried += 1;
            }
        }
    }
    assert!(tried >= 4 * 25, "only {tried} strings tried");
    // The exact request an outside tool sent, and a key holding NUL.
    for body in [
        r#"{"username":"\u0000\u0007","password":"x"}"#,
        r#"{"username":"chef","pass\u0000word":"x"}"#,
    ] {
        let res = app
            .http
            .post(app.url("/api/v1/auth/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        expect_error(res, 400, "invalid_request").await;
    }
    assert_eq!(before, digest(app).await, "hostile text changed something");
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

#[actix_web::test]
async fn hostile_query_parameters_are_refused_in_plain_words_without_parser_text() {
    let w = world().await;
    let app = &w.app;
    let rid = w.a.id;
    let kitchen = [
        (Method::GET, "/api/v1/kitchen/orders".to_string()),
        (Method::GET, "/api/v1/kitchen/restaurant".to_string()),
    ];
    let cases = [
        (
            "restaurant_id=%00",
            "restaurant_id: control characters are not allowed",
        ),
        (
            "restaurant_id=%07x",
            "restaurant_id: control characters are not allowed",
        ),
        ("restaurant_id=not-an-id", "restaurant_id: not a valid id"),
        ("restaurant_id=", "restaurant_id: not a valid id"),
    ];
    for (method, path) in &kitchen {
        for (query, expected) in cases {
            let res = app
                .http
                .request(method.clone(), app.url(&format!("{path}?{query}")))
                .bearer_auth(&w.chef_a)
                .send()
                .await
                .expect("request");
            let got = expect_error(res, 400, "invalid_request").await;
            let message = got["message"].as_str().unwrap_or_default();
            assert_eq!(message, expected, "{path}?{query}");
        }
        // The good id still works.
        let res = app
            .http
            .request(
                method.clone(),
                app.url(&format!("{path}?restaurant_id={rid}")),
            )
            .bearer_auth(&w.chef_a)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200, "{path}");
    }
    for (query, expected) in [
        ("limit=%00", "limit: control characters are not allowed"),
        ("limit=two", "limit: expected an integer"),
        ("before=%00", "before: control characters are not allowed"),
    ] {
        let res = app
            .http
            .get(app.url(&format!("/api/v1/me/orders?{query}")))
            .bearer_auth(&w.guest)
            .send()
            .await
            .expect("request");
        let got = expect_error(res, 400, "invalid_request").await;
        assert_eq!(got["message"], expected, "{query}");
    }
}

#[actix_web::test]
async fn unknown_tokens_and_ids_answer_what_was_not_found() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let res = app.get("/api/v1/tables/no-such-token", None).await;
    let got = expect_error(res, 404, "not_found").await;
    let message = got["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("no such table"), "{message}");
    let chef = app.login_chef(&r).await;
    let res = app
        .http
        .post(app.url(&format!(
            "/api/v1/kitchen/orders/{}/status?restaurant_id={}",
            uuid::Uuid::now_v7(),
            r.id
        )))
        .bearer_auth(&chef)
        .json(&json!({"status": "accepted"}))
        .send()
        .await
        .expect("request");
    let text = res.text().await.expect("body");
    assert_no_internals(&text);
    let got: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(got["message"], "no such order in this restaurant", "{text}");
    let res = app
        .http
        .patch(app.url(&format!(
            "/api/v1/kitchen/menu-items/{}?restaurant_id={}",
            uuid::Uuid::now_v7(),
            r.id
        )))
        .bearer_auth(&chef)
        .json(&json!({"available": false}))
        .send()
        .await
        .expect("request");
    let got = expect_error(res, 404, "not_found").await;
    assert_eq!(got["message"], "no such menu item in this restaurant");
}
