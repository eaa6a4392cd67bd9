//! Admin changes to a dish's choices: option groups (a size, a doneness, extras: between `min` and
//! `max` options) and their options (a price delta, availability, allergens). Every path names the
//! dish, and the group for an option, so an id of another dish or restaurant is 404. Each change
//! moves the menu version on, so open sockets hear a `menu` event.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::schema::{menu_options, option_groups};
use scan2order_schema::DbConn;
use uuid::Uuid;

use super::{bump_version, item_of, AdminError, AdminOutcome};

/// Option groups on one dish.
pub const MAX_GROUPS_PER_ITEM: i64 = 10;
/// Options in one group (and so the most a group may let a guest choose).
pub const MAX_OPTIONS_PER_GROUP: i64 = 30;

/// Group fields an admin may set; `None` leaves a field alone (or takes its default on create).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct GroupFields {
    pub name: Option<String>,
    pub min: Option<i32>,
    pub max: Option<i32>,
    pub position: Option<i32>,
}

/// Option fields an admin may set; `None` leaves a field alone (or takes its default on create).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct OptionFields {
    pub name: Option<String>,
    pub price_delta_cents: Option<i64>,
    pub available: Option<bool>,
    /// Allergen codes, already checked.
    pub allergens: Option<Vec<String>>,
    pub position: Option<i32>,
}

/// One change to a dish's choices, validated field by field by the HTTP layer.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum OptionChange {
    CreateGroup {
        item_id: Uuid,
        fields: GroupFields,
    },
    UpdateGroup {
        item_id: Uuid,
        group_id: Uuid,
        fields: GroupFields,
    },
    DeleteGroup {
        item_id: Uuid,
        group_id: Uuid,
    },
    CreateOption {
        item_id: Uuid,
        group_id: Uuid,
        fields: OptionFields,
    },
    UpdateOption {
        item_id: Uuid,
        group_id: Uuid,
        option_id: Uuid,
        fields: OptionFields,
    },
    DeleteOption {
        item_id: Uuid,
        group_id: Uuid,
        option_id: Uuid,
    },
}

async fn group_of(
    conn: &mut DbConn,
    restaurant: Uuid,
    item: Uuid,
    id: Uuid,
) -> Result<OptionGroup, AdminError> {
    item_of(conn, restaurant, item).await?;
    option_groups::table
        .filter(option_groups::id.eq(id))
        .filter(option_groups::restaurant_id.eq(restaurant))
        .filter(option_groups::menu_item_id.eq(item))
        .select(OptionGroup::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AdminError::NotFound)
}

async fn option_of(
    conn: &mut DbConn,
    restaurant: Uuid,
    group: Uuid,
    id: Uuid,
) -> Result<MenuOption, AdminError> {
    menu_options::table
        .filter(menu_options::id.eq(id))
        .filter(menu_options::restaurant_id.eq(restaurant))
        .filter(menu_options::group_id.eq(group))
        .select(MenuOption::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AdminError::NotFound)
}

fn check_bounds(min: i32, max: i32) -> Result<(), AdminError> {
    if min > max {
        return Err(AdminError::Invalid(format!(
            "min: must not be above max ({max})"
        )));
    }
    if i64::from(max) > MAX_OPTIONS_PER_GROUP {
        return Err(AdminError::Invalid(format!(
            "max: at most {MAX_OPTIONS_PER_GROUP}"
        )));
    }
    Ok(())
}

pub(super) async fn apply_in(
    conn: &mut DbConn,
    rid: Uuid,
    change: OptionChange,
    now: DateTime<Utc>,
) -> Result<AdminOutcome, AdminError> {
    let outcome = match change {
        OptionChange::CreateGroup { item_id, fields } => {
            item_of(conn, rid, item_id).await?;
            let groups: i64 = option_groups::table
                .filter(option_groups::menu_item_id.eq(item_id))
                .count()
                .get_result(conn)
                .await?;
            if groups >= MAX_GROUPS_PER_ITEM {
                return Err(AdminError::Invalid(format!(
                    "option_groups: at most {MAX_GROUPS_PER_ITEM} per dish"
                )));
            }
            let min = fields.min.unwrap_or(0);
            let max = fields.max.unwrap_or(1);
            check_bounds(min, max)?;
            let position = match fields.position {
                Some(p) => p,
                None => i32::try_from(groups).unwrap_or(0),
            };
            let group = OptionGroup {
                id: Uuid::new_v4(),
                restaurant_id: rid,
                menu_item_id: item_id,
                name: fields
                    .name
                    .ok_or_else(|| AdminError::Invalid("name: required".into()))?,
                min_choices: min,
                max_choices: max,
                position,
                created_at: now,
            };
            diesel::insert_into(option_groups::table)
                .values(&group)
                .execute(conn)
                .await?;
            AdminOutcome::Group(group)
        }
        OptionChange::UpdateGroup {
            item_id,
            group_id,
            fields,
        } => {
            let mut group = group_of(conn, rid, item_id, group_id).await?;
            if let Some(v) = fields.name {
                group.name = v;
            }
            if let Some(v) = fields.min {
                group.min_choices = v;
            }
            if let Some(v) = fields.max {
                group.max_choices = v;
            }
            if let Some(v) = fields.position {
                group.position = v;
            }
            check_bounds(group.min_choices, group.max_choices)?;
            diesel::update(option_groups::table.find(group_id))
                .set((
                    option_groups::name.eq(&group.name),
                    option_groups::min_choices.eq(group.min_choices),
                    option_groups::max_choices.eq(group.max_choices),
                    option_groups::position.eq(group.position),
                ))
                .execute(conn)
                .await?;
            AdminOutcome::Group(group)
        }
        OptionChange::DeleteGroup { item_id, group_id } => {
            group_of(conn, rid, item_id, group_id).await?;
            // Its options go with it; past orders keep the copies on their lines.
            diesel::delete(option_groups::table.find(group_id))
                .execute(conn)
                .await?;
            AdminOutcome::Deleted
        }
        OptionChange::CreateOption {
            item_id,
            group_id,
            fields,
        } => {
            group_of(conn, rid, item_id, group_id).await?;
            let options: i64 = menu_options::table
                .filter(menu_options::group_id.eq(group_id))
                .count()
                .get_result(conn)
                .await?;
            if options >= MAX_OPTIONS_PER_GROUP {
                return Err(AdminError::Invalid(format!(
                    "options: at most {MAX_OPTIONS_PER_GROUP} per group"
                )));
            }
            let option = MenuOption {
                id: Uuid::new_v4(),
                restaurant_id: rid,
                group_id,
                name: fields
                    .name
                    .ok_or_else(|| AdminError::Invalid("name: required".into()))?,
                price_delta_cents: fields.price_delta_cents.unwrap_or(0),
                available: fields.available.unwrap_or(true),
                allergens: fields.allergens.unwrap_or_default(),
                position: fields
                    .position
                    .unwrap_or_else(|| i32::try_from(options).unwrap_or(0)),
                created_at: now,
                updated_at: now,
            };
            diesel::insert_into(menu_options::table)
                .values(&option)
                .execute(conn)
                .await?;
            AdminOutcome::Option(option)
        }
        OptionChange::UpdateOption {
            item_id,
            group_id,
            option_id,
            fields,
        } => {
            group_of(conn, rid, item_id, group_id).await?;
            let mut option = option_of(conn, rid, group_id, option_id).await?;
            if let Some(v) = fields.name {
                option.name = v;
            }
            if let Some(v) = fields.price_delta_cents {
                option.price_delta_cents = v;
            }
            if let Some(v) = fields.available {
                option.available = v;
            }
            if let Some(v) = fields.allergens {
                option.allergens = v;
            }
            if let Some(v) = fields.position {
                option.position = v;
            }
            option.updated_at = now;
            diesel::update(menu_options::table.find(option_id))
                .set((
                    menu_options::name.eq(&option.name),
                    menu_options::price_delta_cents.eq(option.price_delta_cents),
                    menu_options::available.eq(option.available),
                    menu_options::allergens.eq(&option.allergens),
                    menu_options::position.eq(option.position),
                    menu_options::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            AdminOutcome::Option(option)
        }
        OptionChange::DeleteOption {
            item_id,
            group_id,
            option_id,
        } => {
            group_of(conn, rid, item_id, group_id).await?;
            option_of(conn, rid, group_id, option_id).await?;
            diesel::delete(menu_options::table.find(option_id))
                .execute(conn)
                .await?;
            AdminOutcome::Deleted
        }
    };
    bump_version(conn, rid, now).await?;
    Ok(outcome)
}

/// A dish's groups with their options, in menu order (the admin's view of its choices).
pub async fn groups_of_item(
    conn: &mut DbConn,
    restaurant: Uuid,
    item: Uuid,
) -> Result<Vec<(OptionGroup, Vec<MenuOption>)>, AdminError> {
    item_of(conn, restaurant, item).await?;
    let groups: Vec<OptionGroup> = option_groups::table
        .filter(option_groups::restaurant_id.eq(restaurant))
        .filter(option_groups::menu_item_id.eq(item))
        .order((
            option_groups::position.asc(),
            option_groups::created_at.asc(),
        ))
        .select(OptionGroup::as_select())
        .load(conn)
        .await?;
    let ids: Vec<Uuid> = groups.iter().map(|g| g.id).collect();
    let options: Vec<MenuOption> = menu_options::table
        .filter(menu_options::group_id.eq_any(&ids))
        .order((menu_options::position.asc(), menu_options::created_at.asc()))
        .select(MenuOption::as_select())
        .load(conn)
        .await?;
    Ok(groups
        .into_iter()
        .map(|g| {
            let mine = options
                .iter()
                .filter(|o| o.group_id == g.id)
                .cloned()
                .collect();
            (g, mine)
        })
        .collect())
}
