//! Parser fuzzing with proptest, through the real extractors and the running server (the
//! coverage-guided targets of the same parsers are in `fuzz/`, run by `scripts/fuzz`).
//!
//! Targets: the JSON body extractor (`scan2order::extract::Json`) for every guest and kitchen body type,
//! the query extractor, socket messages (`ClientMsg::parse`), phone numbers (`Phone::parse`), the
//! `Idempotency-Key` header, the `before` cursor of a guest's history, and table tokens in URLs (against
//! the running server). Properties: nothing panics; the answer is a value or a 400-class error in
//! PROTOCOL.md's shape whose message names a field (or `body` / `query`) and no Rust type.
//!
//! The seed corpus in `tests/fuzz-corpus/` (nasty bodies, socket messages, phones, keys, cursors) is
//! replayed first, every run. Failures proptest finds are written to
//! `tests/fuzz-corpus/proptest-regressions.txt` and replayed before new cases. The pass is short by
//! default (256 cases per property); `PROPTEST_CASES=100000 cargo test --test api fuzz` runs longer.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::test::TestRequest;
use actix_web::{web, FromRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use scan2order::extract::{Json, Query};
use scan2order::routes::guest::{decode_cursor, encode_cursor, idempotency_key};
use scan2order::routes::kitchen::RestaurantQuery;
use scan2order_schema::domain::Phone;
use scan2order_schema::wire::{
    names_a_rust_type, ClientMsg, LoginRequest, OtpSendRequest, OtpVerifyRequest,
    PlaceOrderRequest, SetAcceptingRequest, SetAvailableRequest, SetStatusRequest,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::helpers::{expect_error, spawn_app, WsClient};

const BODY_LIMIT: usize = 64 * 1024;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus")
}

/// Cases per property: `PROPTEST_CASES`, else a few seconds' worth.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/fuzz-corpus/proptest-regressions.txt",
        ))),
        ..Config::default()
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// `field: …` with the field a path into the value (`items[0].quantity`), `body` or `query`.
fn names_a_field(message: &str) -> bool {
    message.split_once(": ").is_some_and(|(field, _)| {
        !field.is_empty()
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_[].?-".contains(c))
    })
}

/// The error answer an extractor's refusal becomes: status and body.
async fn answer(e: actix_web::Error) -> (u16, String) {
    let res = e.error_response();
    let status = res.status().as_u16();
    let bytes = actix_web::body::to_bytes(res.into_body())
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

/// Checks a refusal against PROTOCOL.md; returns a description of what is wrong.
fn check_refusal(status: u16, body: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(body).map_err(|_| format!("not JSON: {body}"))?;
    let code = v["error"].as_str().unwrap_or_default();
    let message = v["message"].as_str().unwrap_or_default();
    let expected = match status {
        400 => "invalid_request",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        _ => return Err(format!("status {status}: {body}")),
    };
    if code != expected {
        return Err(format!("status {status} with code {code}: {body}"));
    }
    if let Some(t) = names_a_rust_type(message) {
        return Err(format!("Rust type ({t}) named: {message}"));
    }
    if status == 400 && !names_a_field(message) {
        return Err(format!("no field named: {message}"));
    }
    Ok(())
}

/// Runs the JSON body extractor as the app configures it over one body.
fn extract<T: DeserializeOwned + 'static>(content_type: &str, body: Vec<u8>) -> Result<(), String> {
    let mut req = TestRequest::post()
        .app_data(
            web::JsonConfig::default()
                .limit(BODY_LIMIT)
                .content_type_required(true)
                .error_handler(scan2order::error::json_error),
        )
        .set_payload(body);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        req = req.insert_header((CONTENT_TYPE, v));
    }
    let (req, mut payload) = req.to_http_parts();
    runtime().block_on(async {
        match Json::<T>::from_request(&req, &mut payload).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let (status, body) = answer(e).await;
                check_refusal(status, &body)
            }
        }
    })
}

/// One body type's run of the extractor.
type BodyCheck = fn(&str, Vec<u8>) -> Result<(), String>;

/// The body through every guest and kitchen body type.
fn extract_all(content_type: &str, body: &[u8]) -> Result<(), String> {
    let checks: [(&str, BodyCheck); 7] = [
        ("PlaceOrderRequest", extract::<PlaceOrderRequest>),
        ("OtpSendRequest", extract::<OtpSendRequest>),
        ("OtpVerifyRequest", extract::<OtpVerifyRequest>),
        ("LoginRequest", extract::<LoginRequest>),
        ("SetStatusRequest", extract::<SetStatusRequest>),
        ("SetAvailableRequest", extract::<SetAvailableRequest>),
        ("SetAcceptingRequest", extract::<SetAcceptingRequest>),
    ];
    for (name, check) in checks {
        check(content_type, body.to_vec()).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

fn check_socket_message(text: &str) -> Result<(), String> {
    match ClientMsg::parse(text) {
        Ok(_) => Ok(()),
        Err(message) => match names_a_rust_type(&message) {
            Some(t) => Err(format!("socket error names a Rust type ({t}): {message}")),
            None if message.is_empty() => Err("empty socket error".into()),
            None => Ok(()),
        },
    }
}

fn check_phone(raw: &str) -> Result<(), String> {
    let Ok(p) = Phone::parse(raw) else {
        return Ok(());
    };
    let s = p.as_str();
    let digits = &s[1..];
    let shape = s.starts_with('+')
        && (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !shape {
        return Err(format!("{raw:?} accepted as {s:?}"));
    }
    if Phone::parse(s).ok().as_ref() != Some(&p) || p.digits() != digits {
        return Err(format!("{s:?} does not round-trip"));
    }
    if p.masked().contains(digits) || format!("{p:?}").contains(digits) {
        return Err(format!("{s:?} shows in full when masked"));
    }
    Ok(())
}

fn check_idempotency_key(raw: &[u8]) -> Result<(), String> {
    let Ok(value) = HeaderValue::from_bytes(raw) else {
        return Ok(()); // not a header an HTTP client can send
    };
    let req = TestRequest::post()
        .insert_header(("Idempotency-Key", value))
        .to_http_request();
    match idempotency_key(&req) {
        Ok(k) => {
            if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                Err(format!("{raw:?} accepted as {k:?}"))
            } else {
                Ok(())
            }
        }
        Err(e) if e.status.as_u16() == 400 && e.message.starts_with("Idempotency-Key: ") => Ok(()),
        Err(e) => Err(format!("{raw:?}: {} {}", e.status, e.message)),
    }
}

fn check_cursor(raw: &str) -> Result<(), String> {
    if let Some((at, id)) = decode_cursor(raw) {
        // Whatever decodes, re-encodes to a cursor that decodes to the same position.
        if decode_cursor(&encode_cursor(at, id)) != Some((at, id)) {
            return Err(format!("{raw:?} does not round-trip"));
        }
    }
    Ok(())
}

fn check_query(raw: &str) -> Result<(), String> {
    let uri = format!("/x?{raw}");
    if actix_web::http::Uri::try_from(uri.as_str()).is_err() {
        return Ok(()); // not a request line an HTTP client can send
    }
    let req = TestRequest::get().uri(&uri).to_http_request();
    let mut payload = actix_web::dev::Payload::None;
    runtime().block_on(async {
        match Query::<RestaurantQuery>::from_request(&req, &mut payload).await {
            Ok(_) => Ok(()),
            Err(e) => check_refusal(
                e.status.as_u16(),
                &serde_json::to_string(&json!({
                    "error": e.code, "message": e.message
                }))
                .unwrap_or_default(),
            ),
        }
    })
}

// ---- strategies -----------------------------------------------------------------------------------

/// Field names of the real bodies, and a few that are not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "type", "table_token", "items", "menu_item_id", "quantity", "note", "phone", "code",
            "username", "password", "status", "available", "accepting_orders", "request_id",
            "order_id", "epoch", "since", "price_cents", "total_cents",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_]{0,12}",
        1 => any::<String>(),
    ]
}

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(vec![
            "placed",
            "ready",
            "served",
            "resume",
            "set_status",
            "+447700900123",
            "7f1c1d9e-4c55-4f61-9d8f-0d9a3b0a3b21",
            "'; DROP TABLE orders; --",
            "<script>alert(1)</script>",
            "\u{0}",
            "\u{202e}",
            "",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid body of each kind, with one field replaced, added or removed.
fn mutated_body() -> impl Strategy<Value = Value> {
    let valid = prop::sample::select(vec![
        json!({"table_token": "abc", "note": "x",
               "items": [{"menu_item_id": "7f1c1d9e-4c55-4f61-9d8f-0d9a3b0a3b21", "quantity": 1, "note": "n"}]}),
        json!({"phone": "+447700900123"}),
        json!({"phone": "+447700900123", "code": "123456"}),
        json!({"username": "chef", "password": "secret-pw"}),
        json!({"status": "ready"}),
        json!({"available": true}),
        json!({"accepting_orders": false}),
    ]);
    (valid, key(), json_value(), 0..3u8).prop_map(|(mut body, k, v, how)| {
        let target = if body.get("items").is_some() && how == 0 {
            &mut body["items"][0]
        } else {
            &mut body
        };
        if let Some(obj) = target.as_object_mut() {
            match how {
                0 | 1 => {
                    let existing = obj.keys().nth(k.len() % obj.len().max(1)).cloned();
                    obj.insert(existing.unwrap_or(k), v);
                }
                _ => {
                    obj.insert(k, v);
                }
            }
        }
        body
    })
}

/// Bracket soup: deep or unbalanced nesting.
fn nesting() -> impl Strategy<Value = Vec<u8>> {
    (0usize..3000, 0usize..3000, prop::bool::ANY).prop_map(|(open, close, objects)| {
        let (o, c) = if objects {
            ("{\"a\":", "}")
        } else {
            ("[", "]")
        };
        let mut s = o.repeat(open);
        s.push('1');
        s.push_str(&c.repeat(close));
        s.into_bytes()
    })
}

fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("application/json".to_string()),
        1 => prop::sample::select(vec![
            "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded",
            "application/json-patch+json", "multipart/form-data; boundary=x",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

// ---- properties -----------------------------------------------------------------------------------

fn run<S: Strategy>(strategy: S, check: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |input| {
        check(input).map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn fuzz_json_bodies_arbitrary_bytes() {
    run(
        (content_type(), prop::collection::vec(any::<u8>(), 0..512)),
        |(ct, body)| extract_all(&ct, &body),
    );
}

#[test]
fn fuzz_json_bodies_arbitrary_json() {
    run((content_type(), json_value()), |(ct, v)| {
        extract_all(&ct, v.to_string().as_bytes())
    });
}

#[test]
fn fuzz_json_bodies_one_field_wrong() {
    run(mutated_body(), |v| {
        extract_all("application/json", v.to_string().as_bytes())
    });
}

#[test]
fn fuzz_json_bodies_deep_and_unbalanced_nesting() {
    run(nesting(), |body| extract_all("application/json", &body));
}

#[test]
fn fuzz_socket_messages() {
    run(
        prop_oneof![
            any::<String>(),
            json_value().prop_map(|v| v.to_string()),
            mutated_body().prop_map(|v| v.to_string()),
            (key(), json_value()).prop_map(|(k, v)| {
                json!({"type": "set_status", "request_id": "r", k: v, "status": "ready"})
                    .to_string()
            }),
            json_value()
                .prop_map(|v| json!({"type": "resume", "epoch": "e", "since": v}).to_string()),
            nesting().prop_map(|b| String::from_utf8_lossy(&b).to_string()),
        ],
        |text| check_socket_message(&text),
    );
}

#[test]
fn fuzz_phone_numbers() {
    run(
        prop_oneof![
            any::<String>(),
            "[+]?[0-9 ().-]{0,24}",
            "\\+[0-9]{0,20}",
            "[ ]*\\+[ ]*[1-9][0-9 -]{6,18}[ ]*",
        ],
        |raw| check_phone(&raw),
    );
}

#[test]
fn fuzz_idempotency_keys() {
    run(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "[ -~]{0,140}".prop_map(String::into_bytes),
        ],
        |raw| check_idempotency_key(&raw),
    );
}

#[test]
fn fuzz_history_cursors() {
    run(
        prop_oneof![
            any::<String>(),
            "-?[0-9]{0,22}_[0-9a-fA-F-]{0,40}",
            (any::<i64>(), any::<u128>()).prop_map(|(t, u)| format!("{t}_{:032x}", u)),
        ],
        |raw| check_cursor(&raw),
    );
}

#[test]
fn fuzz_query_strings() {
    run(
        prop_oneof![
            "[a-z_=&%0-9A-F.-]{0,80}",
            "restaurant_id=[0-9a-f-]{0,40}(&[a-z_]{0,10}=[^&#]{0,10})?",
        ],
        |raw| check_query(&raw),
    );
}

// ---- the seed corpus -------------------------------------------------------------------------------

fn corpus_files(sub: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(sub))
        .unwrap_or_else(|e| panic!("tests/fuzz-corpus/{sub}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Lines of a corpus list, `#` comments skipped; `\xNN` and `\n`-style escapes decoded.
fn corpus_lines(name: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(corpus_dir().join(name)).expect("corpus list");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(unescape)
        .collect()
}

fn unescape(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'x' if i + 3 < bytes.len() => {
                    if let Ok(b) = u8::from_str_radix(&line[i + 2..i + 4], 16) {
                        out.push(b);
                        i += 4;
                        continue;
                    }
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                b'\\' => {
                    out.push(b'\\');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[test]
fn the_seed_corpus_replays_clean() {
    let bodies = corpus_files("bodies");
    assert!(bodies.len() >= 10, "the body corpus is there");
    for path in &bodies {
        let body = std::fs::read(path).expect("corpus file");
        extract_all("application/json", &body)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_socket_message(&String::from_utf8_lossy(&body))
            .unwrap_or_else(|e| panic!("{} as a socket message: {e}", path.display()));
    }
    // A body over the limit is 413 whatever it holds.
    let mut big = b"{\"phone\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'1', BODY_LIMIT));
    big.extend_from_slice(b"\"}");
    extract::<OtpSendRequest>("application/json", big).expect("413");
    for line in corpus_lines("socket-messages.txt") {
        check_socket_message(&String::from_utf8_lossy(&line)).expect("socket message");
    }
    for line in corpus_lines("phones.txt") {
        check_phone(&String::from_utf8_lossy(&line)).expect("phone");
    }
    for line in corpus_lines("idempotency-keys.txt") {
        check_idempotency_key(&line).expect("idempotency key");
    }
    for line in corpus_lines("cursors.txt") {
        check_cursor(&String::from_utf8_lossy(&line)).expect("cursor");
    }
}

/// Table tokens of every shape in URLs of the running server: 404 for REST, 1008 for sockets, never a
/// crash or a 5xx. Generated up front (the server is async), without shrinking.
#[actix_web::test]
async fn fuzz_table_tokens_against_the_running_server() {
    use proptest::strategy::ValueTree;
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let mut tokens: Vec<String> = corpus_lines("table-tokens.txt")
        .into_iter()
        .map(|l| String::from_utf8_lossy(&l).to_string())
        .collect();
    let mut runner = TestRunner::new(config());
    let strategy = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,80}",
        Just(format!("{}x", r.tables[0].token)),
    ];
    for _ in 0..cases().min(64) {
        tokens.push(strategy.new_tree(&mut runner).expect("value").current());
    }
    for token in tokens {
        let enc: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
        let enc = enc.replace('+', "%20");
        let res = app.get(&format!("/api/v1/tables/{enc}"), None).await;
        expect_error(res, 404, "not_found").await;
        match tokio_tungstenite::connect_async(app.ws_url(&format!("/ws/table/{enc}"))).await {
            Ok((stream, _)) => {
                let mut socket = WsClient { stream };
                assert_eq!(socket.closed_with().await, Some(1008), "{token:?}");
            }
            // No route at all for this path (an empty token): refused before any socket.
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), 404, "{token:?}")
            }
            Err(e) => panic!("{token:?}: {e}"),
        }
    }
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}
