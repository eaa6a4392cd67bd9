//! Body and query extractors that answer in PROTOCOL.md's terms. Routes use [`Json`] and [`Query`]
//! instead of `actix_web::web::Json` / `web::Query`: the same limits and content-type rule (the app's
//! `JsonConfig` and its error handler still check size, media type and syntax), but a value of the
//! wrong shape is refused with 400 `invalid_request` naming the offending field
//! (`items[0].quantity: invalid type: string "two", expected an integer`) and without Rust type names.
//!
//! Both also refuse control characters (NUL, BEL, ESC…; newline and tab are text) in every string and
//! key, naming the field, before any route sees the value: client text never reaches Postgres (which
//! refuses NUL and would answer like an outage), a log line or a kitchen screen with them.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use scan2order_schema::domain::{is_clean_text, MAX_IDEMPOTENCY_KEY_CHARS};
use scan2order_schema::wire::without_type_names;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Json<T>, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Size, media type and syntax: actix's extractor with the app's `JsonConfig`.
        let value = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = value.await?.into_inner();
            body_from_value(value)
                .map(Json)
                .map_err(|why| ApiError::invalid(why).into())
        })
    }
}

/// A query string of type `T`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Query<T>, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = query_from_str(req.query_string())
            .map(Query)
            .map_err(ApiError::invalid);
        std::future::ready(result)
    }
}

/// A body's JSON value checked and typed as [`Json`] does; `Err` is the refusal's sentence. No I/O:
/// the fuzz target `json_bodies` drives it with arbitrary JSON.
pub fn body_from_value<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    if let Some(field) = control_character_at(&value, &mut String::new()) {
        return Err(control_characters(&field, "body"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| describe("body", &e))
}

/// A query string checked and typed as [`Query`] does; `Err` is the refusal's sentence.
pub fn query_from_str<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    let pairs = form_urlencoded::parse(query.as_bytes());
    if let Some((key, _)) = pairs
        .clone()
        .find(|(k, v)| !is_clean_text(k) || !is_clean_text(v))
    {
        let field = if plain_key(&key) { key.as_ref() } else { "" };
        return Err(control_characters(field, "query"));
    }
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
        .map_err(|e| describe("query", &e))
}

/// The path of the first string or key in `value` that is not clean text (`items[2].note`), `""` for
/// the value itself; `None` when every string is clean. Keys a client made up end the path there.
fn control_character_at(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::String(s) => (!is_clean_text(s)).then(|| path.clone()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = control_character_at(item, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if !is_clean_text(key) {
                return Some(path.clone());
            }
            if !plain_key(key) {
                return control_character_at(item, &mut String::new()).map(|_| path.clone());
            }
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let found = control_character_at(item, path);
            path.truncate(len);
            found
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

fn control_characters(field: &str, whole: &str) -> String {
    let field = if field.is_empty() { whole } else { field };
    format!("{field}: control characters are not allowed")
}

/// `field: what is wrong`, the field as a path into the value (`items[0].quantity`); `whole` when the
/// value as a whole is wrong.
fn describe<E: std::fmt::Display>(whole: &str, e: &serde_path_to_error::Error<E>) -> String {
    format!(
        "{}: {}",
        field_name(whole, e.path()),
        without_type_names(&e.inner().to_string())
    )
}

/// The path as far as it is made of plain names and indexes; a key a client made up (empty, `%`, a
/// sentence) ends it there, since the message quotes such a key anyway.
fn field_name(whole: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let plain = plain_key;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } if plain(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => break,
        }
    }
    if out.is_empty() {
        whole.to_string()
    } else {
        out
    }
}

/// A key that reads as a field name: quoted in messages; others are the client's own words.
fn plain_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The `Idempotency-Key` header, checked (the parser fuzz tests call it).
pub fn idempotency_key(req: &HttpRequest) -> ApiResult<String> {
    optional_idempotency_key(req)?
        .ok_or_else(|| ApiError::invalid("Idempotency-Key: header is required"))
}

/// The `Idempotency-Key` header where it may be left out (a kitchen's status change), checked.
pub fn optional_idempotency_key(req: &HttpRequest) -> ApiResult<Option<String>> {
    let Some(raw) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .map_err(|_| ApiError::invalid("Idempotency-Key: must be visible ASCII"))?
        .trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_CHARS
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Line {
        quantity: i32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Line>,
    }

    fn refusal(json: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        let e = serde_path_to_error::deserialize::<_, Body>(value).expect_err("refused");
        describe("body", &e)
    }

    #[test]
    fn refusals_name_the_field_and_no_rust_types() {
        assert_eq!(
            refusal(r#"{"items":[{"quantity":1},{"quantity":"two"}]}"#),
            r#"items[1].quantity: invalid type: string "two", expected an integer"#
        );
        assert_eq!(
            refusal(r#"{"items":[{"quantity":1,"price_cents":1}]}"#),
            "items[0].price_cents: unknown field `price_cents`, expected `quantity`"
        );
        assert_eq!(refusal(r#"{}"#), "body: missing field `items`");
        assert!(refusal(r#"{"items":[],"":1}"#).starts_with("body: unknown field ``"));
        assert!(refusal(r#"{"items":[{"a b":1}]}"#).starts_with("items[0]: unknown field `a b`"));
        assert_eq!(
            refusal(r#""x""#),
            r#"body: invalid type: string "x", expected a JSON object"#
        );
    }

    fn control_field(json: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(json).expect("json");
        control_character_at(&value, &mut String::new())
    }

    #[test]
    fn control_characters_are_found_in_every_string_and_key() {
        assert_eq!(
            control_field(r#"{"username":"\u0000\u0007","password":"x"}"#),
            Some("username".into())
        );
        assert_eq!(
            control_field(r#"{"items":[{"note":"ok"},{"note":"a\u001bb"}]}"#),
            Some("items[1].note".into())
        );
        assert_eq!(
            control_field(r#"{"items":[{"no\u0000te":1}]}"#),
            Some("items[0]".into())
        );
        assert_eq!(control_field(r#"{"a b":{"x":"\u0000"}}"#), Some("".into()));
        assert_eq!(control_field(r#""\u0000""#), Some("".into()));
        assert_eq!(
            control_field(r#"{"note":"two\nlines\tand a tab","n":1,"b":null}"#),
            None
        );
    }

    #[test]
    fn messages_without_type_names_pass_unchanged() {
        assert_eq!(
            without_type_names("invalid type: integer `1`, expected a string"),
            "invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            without_type_names("unknown variant `x`, expected enum Status"),
            "unknown variant `x`, expected one of the allowed values"
        );
    }
}
