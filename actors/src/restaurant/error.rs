//! What went wrong with a request to a restaurant, as the engine says it.

use scan2order_schema::domain::{MenuItemId, OrderStatus};

/// What went wrong with a request to a restaurant. Mapped to HTTP and socket errors in one place
/// (`scan2order::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("some items are not available")]
    ItemUnavailable(Vec<MenuItemId>),
    #[error("the restaurant is not accepting orders right now")]
    NotAccepting,
    #[error("an order cannot go from {from} to {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    #[error("this Idempotency-Key was used for another order")]
    IdempotencyConflict,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    /// The session behind the request ended before its write committed.
    #[error("sign in again")]
    Unauthenticated,
}

impl EngineError {
    /// The protocol code and sentence of this error, shared by REST answers and socket errors.
    pub fn code(&self) -> (&'static str, String) {
        match self {
            EngineError::NotFound => ("not_found", "no such order in this restaurant".into()),
            EngineError::Invalid(m) => ("invalid_request", m.clone()),
            EngineError::ItemUnavailable(_) => ("item_unavailable", self.to_string()),
            EngineError::NotAccepting => ("not_accepting_orders", self.to_string()),
            EngineError::InvalidTransition { .. } => ("invalid_transition", self.to_string()),
            EngineError::IdempotencyConflict => ("idempotency_key_reused", self.to_string()),
            EngineError::Unavailable => ("unavailable", self.to_string()),
            EngineError::Unauthenticated => ("unauthenticated", self.to_string()),
        }
    }
}
