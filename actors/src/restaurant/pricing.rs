//! # Pricing an order's lines from the menu
//!
//! A guest's lines are checked (count, quantities, notes, dishes of this restaurant, sold out) and
//! priced here from the menu in memory, never from anything the client sends. The order book calls
//! this when it prepares an order; real menus' option and allergen checks belong beside it.

use scan2order_schema::domain::{
    is_clean_text, MenuItemId, MAX_NOTE_CHARS, MAX_ORDER_LINES, MAX_QUANTITY, MIN_QUANTITY,
};
use scan2order_schema::models::{MenuItem, OrderItemRow};
use scan2order_schema::wire::PlaceOrderLine;
use uuid::Uuid;

use super::EngineError;

/// Checks an order's lines and prices them from the menu (`item` finds a dish); the rows and the
/// total in minor units. Sold-out dishes are refused together, by id.
pub(crate) fn price_lines<'m>(
    order_id: Uuid,
    lines: &[PlaceOrderLine],
    item: impl Fn(MenuItemId) -> Option<&'m MenuItem>,
) -> Result<(Vec<OrderItemRow>, i64), EngineError> {
    if lines.is_empty() {
        return Err(EngineError::Invalid(
            "items: an order needs at least one item".into(),
        ));
    }
    if lines.len() > MAX_ORDER_LINES {
        return Err(EngineError::Invalid(format!(
            "items: at most {MAX_ORDER_LINES} lines per order"
        )));
    }
    let mut unavailable = Vec::new();
    let mut rows = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(EngineError::Invalid(format!(
                "items[{i}].quantity: must be between {MIN_QUANTITY} and {MAX_QUANTITY}"
            )));
        }
        let note = check_note(&format!("items[{i}].note"), line.note.as_deref())?;
        let Some(item) = item(line.menu_item_id) else {
            return Err(EngineError::Invalid(format!(
                "items[{i}].menu_item_id: no such item on this restaurant's menu"
            )));
        };
        if !item.available {
            if !unavailable.contains(&line.menu_item_id) {
                unavailable.push(line.menu_item_id);
            }
            continue;
        }
        total = item
            .price_cents
            .checked_mul(i64::from(line.quantity))
            .and_then(|l| total.checked_add(l))
            .ok_or_else(|| EngineError::Invalid("items: total too large".into()))?;
        rows.push(OrderItemRow {
            order_id,
            line_no: i as i32 + 1,
            menu_item_id: item.id,
            name: item.name.clone(),
            unit_price_cents: item.price_cents,
            quantity: line.quantity,
            note,
        });
    }
    if !unavailable.is_empty() {
        return Err(EngineError::ItemUnavailable(unavailable));
    }
    Ok((rows, total))
}

pub(crate) fn check_note(field: &str, note: Option<&str>) -> Result<String, EngineError> {
    let note = note.unwrap_or("").trim();
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(EngineError::Invalid(format!(
            "{field}: at most {MAX_NOTE_CHARS} characters"
        )));
    }
    if !is_clean_text(note) {
        return Err(EngineError::Invalid(format!(
            "{field}: control characters are not allowed"
        )));
    }
    Ok(note.to_string())
}
