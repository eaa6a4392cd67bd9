//! What went wrong with a request to a restaurant, as the engine says it.

use scan2order_schema::domain::{MenuItemId, MenuOptionId, OptionGroupId, OrderStatus};

/// What went wrong with a request to a restaurant. Mapped to HTTP and socket errors in one place
/// (`scan2order::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EngineError {
    /// Nothing of this kind by that id or token (in this restaurant).
    #[error("{}", .0.sentence())]
    NotFound(Missing),
    #[error("{0}")]
    Invalid(String),
    /// Sold-out dishes, and sold-out options of dishes that are not.
    #[error("some items are not available")]
    ItemUnavailable {
        items: Vec<MenuItemId>,
        options: Vec<MenuOptionId>,
    },
    /// A line's options do not fit its dish's choices; the message names the choice.
    #[error("{message}")]
    InvalidOptions {
        item_id: MenuItemId,
        group_id: Option<OptionGroupId>,
        message: String,
    },
    /// A dish or chosen option contains an allergen the table declared.
    #[error("some dishes contain an allergen the table declared")]
    AllergenConflict(Vec<MenuItemId>),
    /// The order has declared allergies: the first move out of `placed` must acknowledge them.
    #[error("this order has allergies: acknowledge them (allergy_ack) before moving it on")]
    AllergyAckRequired,
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
            EngineError::ItemUnavailable { .. } => ("item_unavailable", self.to_string()),
            EngineError::InvalidOptions { message, .. } => ("invalid_options", message.clone()),
            EngineError::AllergenConflict(_) => ("allergen_conflict", self.to_string()),
            EngineError::AllergyAckRequired => ("allergy_ack_required", self.to_string()),
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
    MenuOption,
}

impl Missing {
    pub fn sentence(self) -> &'static str {
        match self {
            Missing::Restaurant => "no such restaurant",
            Missing::Table => "no such table (the QR code may have been replaced)",
            Missing::Order => "no such order in this restaurant",
            Missing::MenuItem => "no such menu item in this restaurant",
            Missing::MenuOption => "no such option on this restaurant's menu",
        }
    }
}
