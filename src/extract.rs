//! Body and query extractors that answer in PROTOCOL.md's terms. Routes use [`Json`] and [`Query`]
//! instead of `actix_web::web::Json` / `web::Query`: the same limits and content-type rule (the app's
//! `JsonConfig` and its error handler still check size, media type and syntax), but a value of the
//! wrong shape is refused with 400 `invalid_request` naming the offending field
//! (`items[0].quantity: invalid type: string "two", expected an integer`) and without Rust type names.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use scan2order_schema::wire::without_type_names;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

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
            serde_path_to_error::deserialize(value)
                .map(Json)
                .map_err(|e| ApiError::invalid(describe("body", &e)).into())
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
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        let result = serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
            .map(Query)
            .map_err(|e| ApiError::invalid(describe("query", &e)));
        std::future::ready(result)
    }
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
    let plain = |k: &str| {
        !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
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
