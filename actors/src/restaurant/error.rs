//! What went wrong with a request to a restaurant, as the engine says it.

use scan2order_schema::domain::{MenuItemId, OrderStatus};

/// What went wrong with a request to a restaurant. Mapped to HTTP and socket errors in one place
/// (`scan2order::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EngineError {
    /// Nothing of this kind by that id or token (in this restaurant).
    #[error("{}", .0.sentence())]
    NotFound(Missing),
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
            EngineError::NotFound(_) => ("not_found", self.to_string()),
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

/// What a [`EngineError::NotFound`] did not find: its answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Missing {
    Restaurant,
    Table,
    Order,
    MenuItem,
}

impl Missing {
    pub fn sentence(self) -> &'static str {
        match self {
            Missing::Restaurant => "no such restaurant",
            Missing::Table => "no such table (the QR code may have been replaced)",
            Missing::Order => "no such order in this restaurant",
            Missing::MenuItem => "no such menu item in this restaurant",
        }
    }
}
