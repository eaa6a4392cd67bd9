//! Errors mapped to HTTP once. Handlers return [`ApiError`]; engine errors ([`EngineError`]) and database
//! errors convert into it. The body is always PROTOCOL.md's `{"error": "<code>", "message": "<sentence>"}`;
//! internal details (SQL, pool errors) go to the log, never to the client.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use scan2order_actors::restaurant::EngineError;
use scan2order_schema::domain::{MenuItemId, MenuOptionId, OptionGroupId};
use scan2order_schema::wire::ErrorBody;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What a conflict or an option refusal names; boxed, as most errors name nothing.
    pub details: Option<Box<ErrorDetails>>,
    pub retry_after: Option<u64>,
}

/// The ids an error body names besides its code and message.
#[derive(Debug, Clone, Default)]
pub struct ErrorDetails {
    /// Dishes (sold out, or with a declared allergen).
    pub item_ids: Option<Vec<MenuItemId>>,
    /// With `item_unavailable`: sold-out options.
    pub option_ids: Option<Vec<MenuOptionId>>,
    /// With `invalid_options`: the dish and the choice.
    pub item_id: Option<MenuItemId>,
    pub group_id: Option<OptionGroupId>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 400 `invalid_request`; the message names the offending field.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "nothing here by that id",
        )
    }

    pub fn unauthenticated() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first")
    }

    pub fn forbidden() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your account may not do this",
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is temporarily unavailable; try again shortly",
        )
        .with_retry_after(2)
    }

    pub fn rate_limited(retry_after: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests; slow down",
        )
        .with_retry_after(retry_after.max(1))
    }

    pub fn with_retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// Logs an internal failure and returns 503 without its details.
    pub fn internal(context: &str, err: impl fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::unavailable()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        let mut body = ErrorBody::new(self.code, self.message.clone());
        if let Some(d) = &self.details {
            body.item_ids = d.item_ids.clone();
            body.option_ids = d.option_ids.clone();
            body.item_id = d.item_id;
            body.group_id = d.group_id;
        }
        res.json(body)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let (code, message) = e.code();
        let status = match &e {
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Invalid(_) | EngineError::InvalidOptions { .. } => StatusCode::BAD_REQUEST,
            EngineError::ItemUnavailable { .. }
            | EngineError::AllergenConflict(_)
            | EngineError::AllergyAckRequired
            | EngineError::NotAccepting
            | EngineError::InvalidTransition { .. }
            | EngineError::IdempotencyConflict => StatusCode::CONFLICT,
            EngineError::Unavailable => return ApiError::unavailable(),
            EngineError::Unauthenticated => return ApiError::unauthenticated(),
        };
        let mut err = ApiError::new(status, code, message);
        err.details = match e {
            EngineError::ItemUnavailable { items, options } => Some(ErrorDetails {
                item_ids: Some(items),
                option_ids: Some(options),
                ..Default::default()
            }),
            EngineError::AllergenConflict(items) => Some(ErrorDetails {
                item_ids: Some(items),
                ..Default::default()
            }),
            EngineError::InvalidOptions {
                item_id, group_id, ..
            } => Some(ErrorDetails {
                item_id: Some(item_id),
                group_id,
                ..Default::default()
            }),
            _ => None,
        }
        .map(Box::new);
        err
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> ApiError {
        ApiError::internal("database query failed", e)
    }
}

impl From<bb8::RunError<diesel_async::pooled_connection::PoolError>> for ApiError {
    fn from(e: bb8::RunError<diesel_async::pooled_connection::PoolError>) -> ApiError {
        ApiError::internal("no database connection", e)
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> ApiError {
        ApiError::internal("restaurant actor unavailable", e)
    }
}

/// Maps the JSON extractor's failures to PROTOCOL.md: 413, 415, or 400 naming the problem.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let api = match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 64 KiB",
        ),
        J::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        J::Deserialize(e) => ApiError::invalid(format!("body: {e}")),
        J::Payload(actix_web::error::PayloadError::Overflow) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 64 KiB",
        ),
        _ => ApiError::invalid("body: could not be read as JSON"),
    };
    api.into()
}

/// Malformed ids in a path are ids we do not have.
pub fn path_error(
    _err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::not_found().into()
}

pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::invalid(format!("query: {err}")).into()
}
