//! # Pricing an order's lines from the menu
//!
//! A guest's lines are checked (count, quantities, notes, dishes of this restaurant, sold out, the
//! options chosen on each dish, the table's declared allergies) and priced here from the menu in
//! memory, never from anything the client sends. The order book calls this when it prepares an order.
//!
//! The rules of options: every option chosen must be one of that dish's, at most once; each of the
//! dish's groups gets between its `min` and `max` choices; a sold-out option is refused like a sold-out
//! dish (409, by id). A line's unit price is the dish's price plus its options' deltas, never below 0.
//! A dish whose own allergens, or whose chosen options' allergens, include one the table declared is
//! refused (409 `allergen_conflict`).

use std::collections::HashMap;

use scan2order_schema::domain::{
    allergen_codes, is_clean_text, MenuItemId, MenuOptionId, ALLERGENS, MAX_LINE_OPTIONS,
    MAX_NOTE_CHARS, MAX_ORDER_LINES, MAX_QUANTITY, MIN_QUANTITY,
};
use scan2order_schema::models::{MenuItem, OrderItemRow};
use scan2order_schema::options::LineOptions;
use scan2order_schema::wire::{OrderLineOption, PlaceOrderLine};
use uuid::Uuid;

use super::choices::Choices;
use super::menu::Menu;
use super::EngineError;

/// Checks an order's lines and prices them from the menu; the rows and the total in minor units.
/// `allergies` are the table's declared allergies, already checked by [`check_allergies`]. Sold-out
/// dishes and options are refused together, by id, as are dishes with a declared allergen.
pub(crate) fn price_lines(
    order_id: Uuid,
    lines: &[PlaceOrderLine],
    menu: &Menu,
    allergies: &[String],
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
    let mut unavailable_options = Vec::new();
    let mut conflicts = Vec::new();
    let mut rows = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if !(MIN_QUANTITY..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(EngineError::Invalid(format!(
                "items[{i}].quantity: must be between {MIN_QUANTITY} and {MAX_QUANTITY}"
            )));
        }
        let note = check_note(&format!("items[{i}].note"), line.note.as_deref())?;
        let Some(item) = menu.items.get(&line.menu_item_id.get()) else {
            return Err(EngineError::Invalid(format!(
                "items[{i}].menu_item_id: no such item on this restaurant's menu"
            )));
        };
        let picked = line.options.as_deref().unwrap_or(&[]);
        let chosen = choose(i, item, picked, &menu.choices, allergies)?;
        if !item.available {
            if !unavailable.contains(&line.menu_item_id) {
                unavailable.push(line.menu_item_id);
            }
            continue;
        }
        for option in chosen.sold_out {
            if !unavailable_options.contains(&option) {
                unavailable_options.push(option);
            }
        }
        let declared = |codes: &[String]| codes.iter().any(|c| allergies.contains(c));
        if (declared(&item.allergens) || chosen.allergens)
            && !conflicts.contains(&line.menu_item_id)
        {
            conflicts.push(line.menu_item_id);
        }
        let delta: i64 = chosen.options.iter().map(|o| o.price_delta_cents).sum();
        let unit = item.price_cents.saturating_add(delta).max(0);
        total = unit
            .checked_mul(i64::from(line.quantity))
            .and_then(|l| total.checked_add(l))
            .ok_or_else(|| EngineError::Invalid("items: total too large".into()))?;
        rows.push(OrderItemRow {
            order_id,
            line_no: i as i32 + 1,
            menu_item_id: item.id,
            name: item.name.clone(),
            unit_price_cents: unit,
            quantity: line.quantity,
            note,
            options: LineOptions(chosen.options),
        });
    }
    if !unavailable.is_empty() || !unavailable_options.is_empty() {
        return Err(EngineError::ItemUnavailable {
            items: unavailable,
            options: unavailable_options,
        });
    }
    if !conflicts.is_empty() {
        return Err(EngineError::AllergenConflict(conflicts));
    }
    Ok((rows, total))
}

/// What a line's options came to.
struct Chosen {
    /// Copied onto the line, in menu order.
    options: Vec<OrderLineOption>,
    /// Chosen options that are sold out.
    sold_out: Vec<MenuOptionId>,
    /// Whether a chosen option contains one of the declared allergies.
    allergens: bool,
}

/// Checks the options of line `i` against its dish's groups.
fn choose(
    i: usize,
    item: &MenuItem,
    picked: &[MenuOptionId],
    choices: &Choices,
    allergies: &[String],
) -> Result<Chosen, EngineError> {
    let item_id = MenuItemId::from(item.id);
    let invalid = |group_id: Option<Uuid>, message: String| EngineError::InvalidOptions {
        item_id,
        group_id: group_id.map(Into::into),
        message,
    };
    if picked.len() > MAX_LINE_OPTIONS {
        return Err(invalid(
            None,
            format!("items[{i}].options: at most {MAX_LINE_OPTIONS} options on one line"),
        ));
    }
    // Options picked, by group.
    let mut by_group: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for id in picked {
        let option = choices
            .option(id.get())
            .filter(|o| {
                choices
                    .group(o.group_id)
                    .is_some_and(|g| g.menu_item_id == item.id)
            })
            .ok_or_else(|| {
                invalid(
                    None,
                    format!(
                        "items[{i}].options: {id} is not an option of \"{}\"",
                        item.name
                    ),
                )
            })?;
        let in_group = by_group.entry(option.group_id).or_default();
        if in_group.contains(&option.id) {
            let name = choices
                .group(option.group_id)
                .map_or("", |g| g.name.as_str());
            return Err(invalid(
                Some(option.group_id),
                format!(
                    "items[{i}].options: \"{}\" is chosen twice in \"{name}\"",
                    option.name
                ),
            ));
        }
        in_group.push(option.id);
    }
    let mut chosen = Chosen {
        options: Vec::with_capacity(picked.len()),
        sold_out: Vec::new(),
        allergens: false,
    };
    for group in choices.groups_of(item.id) {
        let n = by_group.get(&group.id).map_or(0, Vec::len) as i32;
        if n < group.min_choices || n > group.max_choices {
            let want = match (group.min_choices, group.max_choices) {
                (1, 1) => "choose one option".to_string(),
                (min, max) if min == max => format!("choose {min} options"),
                (0, max) => format!("choose at most {max}"),
                (min, max) => format!("choose between {min} and {max}"),
            };
            return Err(invalid(
                Some(group.id),
                format!("items[{i}].options: \"{}\": {want}", group.name),
            ));
        }
        let picked_here = by_group.get(&group.id);
        for option in choices.options_of(group.id) {
            if !picked_here.is_some_and(|p| p.contains(&option.id)) {
                continue;
            }
            if !option.available {
                chosen.sold_out.push(option.id.into());
            }
            if option.allergens.iter().any(|c| allergies.contains(c)) {
                chosen.allergens = true;
            }
            chosen.options.push(OrderLineOption {
                option_id: option.id.into(),
                group_name: group.name.clone(),
                name: option.name.clone(),
                price_delta_cents: option.price_delta_cents,
            });
        }
    }
    Ok(chosen)
}

/// Checks the table's declared allergies: known codes, without repeats, in the law's order.
pub(crate) fn check_allergies(allergies: Option<&[String]>) -> Result<Vec<String>, EngineError> {
    let allergies = allergies.unwrap_or(&[]);
    if allergies.len() > ALLERGENS.len() * 2 {
        return Err(EngineError::Invalid(format!(
            "allergies: at most {} codes",
            ALLERGENS.len()
        )));
    }
    allergen_codes(allergies).map_err(|bad| {
        let at = allergies.iter().position(|a| *a == bad).unwrap_or(0);
        EngineError::Invalid(format!(
            "allergies[{at}]: not an allergen code; one of {}",
            ALLERGENS.join(", ")
        ))
    })
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
