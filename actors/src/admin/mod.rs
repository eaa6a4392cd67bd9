//! Admin changes to an existing restaurant: its fields, menu categories and items, and tables. They are
//! applied by the restaurant's own actor ([`crate::restaurant::RestaurantActor`] handles [`AdminChange`]),
//! so nothing writes a restaurant's rows behind its back: the actor writes, reloads what changed, tells its
//! sockets (`menu`, `restaurant`) and closes the sockets of tables whose token died. A dish's option
//! groups and options are changed in [`options`].

pub mod options;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use scan2order_schema::leases::{self, Fence};
use scan2order_schema::models::{MenuCategory, MenuItem, Restaurant, RestaurantTable};
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::schema::{menu_categories, menu_items, restaurant_tables, restaurants};
use scan2order_schema::tokens::new_table_token;
use scan2order_schema::DbConn;
use uuid::Uuid;

/// Restaurant fields an admin may change; `None` leaves a field alone.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RestaurantPatch {
    pub name: Option<String>,
    pub currency: Option<String>,
    pub time_zone: Option<String>,
    pub accepting_orders: Option<bool>,
    pub ticket_warn_after_s: Option<i32>,
    pub ticket_late_after_s: Option<i32>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ItemFields {
    pub category_id: Option<Uuid>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub available: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub position: Option<i32>,
    /// Allergen codes, already checked.
    pub allergens: Option<Vec<String>>,
}

/// One admin change, already validated field by field by the HTTP layer.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum AdminChange {
    UpdateRestaurant(RestaurantPatch),
    CreateCategory {
        name: String,
        position: Option<i32>,
    },
    UpdateCategory {
        id: Uuid,
        name: Option<String>,
        position: Option<i32>,
    },
    DeleteCategory {
        id: Uuid,
    },
    CreateItem(ItemFields),
    UpdateItem {
        id: Uuid,
        fields: ItemFields,
    },
    DeleteItem {
        id: Uuid,
    },
    CreateTable {
        label: String,
    },
    UpdateTable {
        id: Uuid,
        label: Option<String>,
        active: Option<bool>,
    },
    DeleteTable {
        id: Uuid,
    },
    RotateToken {
        id: Uuid,
    },
    /// A change to a dish's option groups or options.
    Options(options::OptionChange),
    /// A dish's photo (already stored, by its hash), or none.
    SetImage {
        item_id: Uuid,
        image_hash: Option<String>,
    },
}

/// What an admin change produced.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum AdminOutcome {
    Restaurant(Restaurant),
    Category(MenuCategory),
    Item(MenuItem),
    Table(RestaurantTable),
    Group(OptionGroup),
    Option(MenuOption),
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AdminError {
    #[error("not found")]
    NotFound,
    /// A 409 with its protocol code.
    #[error("{1}")]
    Conflict(AdminConflict, String),
    /// A 400 naming the field.
    #[error("{0}")]
    Invalid(String),
    #[error("the database is unavailable")]
    Unavailable,
    /// Nothing was written: this node's lease of the restaurant was taken over (see
    /// `scan2order_schema::leases`). Answered as `unavailable`; the restaurant stops here.
    #[error("this node no longer owns the restaurant")]
    Fenced,
}

/// Why an admin change conflicts with what is stored (a 409's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AdminConflict {
    /// Another table of the restaurant has that label.
    LabelTaken,
    /// The category still has items.
    NotEmpty,
}

impl AdminConflict {
    /// The protocol code.
    pub fn code(self) -> &'static str {
        match self {
            AdminConflict::LabelTaken => "label_taken",
            AdminConflict::NotEmpty => "not_empty",
        }
    }
}

impl From<diesel::result::Error> for AdminError {
    fn from(e: diesel::result::Error) -> AdminError {
        use diesel::result::{DatabaseErrorKind, Error};
        match &e {
            Error::NotFound => AdminError::NotFound,
            Error::DatabaseError(DatabaseErrorKind::UniqueViolation, info)
                if info.constraint_name() == Some("restaurant_tables_label") =>
            {
                AdminError::Conflict(
                    AdminConflict::LabelTaken,
                    "a table with this label exists already".into(),
                )
            }
            _ => {
                tracing::error!(error = %e, "admin change failed");
                AdminError::Unavailable
            }
        }
    }
}

pub(crate) async fn bump_version(
    conn: &mut DbConn,
    restaurant: Uuid,
    now: DateTime<Utc>,
) -> Result<(), AdminError> {
    diesel::update(restaurants::table.find(restaurant))
        .set((
            restaurants::menu_version.eq(restaurants::menu_version + 1),
            restaurants::updated_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn category_of(
    conn: &mut DbConn,
    restaurant: Uuid,
    id: Uuid,
) -> Result<MenuCategory, AdminError> {
    menu_categories::table
        .filter(menu_categories::id.eq(id))
        .filter(menu_categories::restaurant_id.eq(restaurant))
        .select(MenuCategory::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AdminError::NotFound)
}

pub(crate) async fn item_of(
    conn: &mut DbConn,
    restaurant: Uuid,
    id: Uuid,
) -> Result<MenuItem, AdminError> {
    menu_items::table
        .filter(menu_items::id.eq(id))
        .filter(menu_items::restaurant_id.eq(restaurant))
        .filter(menu_items::deleted_at.is_null())
        .select(MenuItem::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AdminError::NotFound)
}

async fn table_of(
    conn: &mut DbConn,
    restaurant: Uuid,
    id: Uuid,
) -> Result<RestaurantTable, AdminError> {
    restaurant_tables::table
        .filter(restaurant_tables::id.eq(id))
        .filter(restaurant_tables::restaurant_id.eq(restaurant))
        .filter(restaurant_tables::deleted_at.is_null())
        .select(RestaurantTable::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(AdminError::NotFound)
}

/// Applies one change in one transaction, under the restaurant's lease fence: a node whose lease was
/// taken over commits nothing (the new owner read the restaurant before this change and would not
/// see it).
pub async fn apply(
    conn: &mut DbConn,
    fence: Fence,
    change: AdminChange,
) -> Result<AdminOutcome, AdminError> {
    conn.transaction(async |c| {
        let mut shared: &DbConn = c;
        if !leases::fences_out_of_force(&mut shared, &[fence])
            .await?
            .is_empty()
        {
            return Err(AdminError::Fenced);
        }
        apply_in(c, fence.restaurant_id, change).await
    })
    .await
}

async fn apply_in(
    conn: &mut DbConn,
    rid: Uuid,
    change: AdminChange,
) -> Result<AdminOutcome, AdminError> {
    let now = Utc::now();
    match change {
        AdminChange::UpdateRestaurant(p) => {
            let mut r = Restaurant::find_for_update(conn, rid)
                .await?
                .ok_or(AdminError::NotFound)?;
            if let Some(v) = p.name {
                r.name = v;
            }
            if let Some(v) = p.currency {
                r.currency = v;
            }
            if let Some(v) = p.time_zone {
                r.time_zone = v;
            }
            if let Some(v) = p.accepting_orders {
                r.accepting_orders = v;
            }
            if let Some(v) = p.ticket_warn_after_s {
                r.ticket_warn_after_s = v;
            }
            if let Some(v) = p.ticket_late_after_s {
                r.ticket_late_after_s = v;
            }
            if r.ticket_late_after_s < r.ticket_warn_after_s {
                return Err(AdminError::Invalid(
                    "ticket_late_after_s: must not be below ticket_warn_after_s".into(),
                ));
            }
            r.menu_version += 1;
            r.updated_at = now;
            diesel::update(restaurants::table.find(rid))
                .set(&r)
                .execute(conn)
                .await?;
            Ok(AdminOutcome::Restaurant(r))
        }
        AdminChange::CreateCategory { name, position } => {
            let position = match position {
                Some(p) => p,
                None => next_category_position(conn, rid).await?,
            };
            let cat = MenuCategory {
                id: Uuid::new_v4(),
                restaurant_id: rid,
                name,
                position,
                created_at: now,
            };
            diesel::insert_into(menu_categories::table)
                .values(&cat)
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Category(cat))
        }
        AdminChange::UpdateCategory { id, name, position } => {
            let mut cat = category_of(conn, rid, id).await?;
            if let Some(n) = name {
                cat.name = n;
            }
            if let Some(p) = position {
                cat.position = p;
            }
            diesel::update(menu_categories::table.find(id))
                .set((
                    menu_categories::name.eq(&cat.name),
                    menu_categories::position.eq(cat.position),
                ))
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Category(cat))
        }
        AdminChange::DeleteCategory { id } => {
            category_of(conn, rid, id).await?;
            let items: i64 = menu_items::table
                .filter(menu_items::category_id.eq(id))
                .filter(menu_items::deleted_at.is_null())
                .count()
                .get_result(conn)
                .await?;
            if items > 0 {
                return Err(AdminError::Conflict(
                    AdminConflict::NotEmpty,
                    "the category still has items; move or delete them first".into(),
                ));
            }
            // Items deleted earlier keep pointing at their category for history; move them off it.
            let deleted_items: i64 = menu_items::table
                .filter(menu_items::category_id.eq(id))
                .count()
                .get_result(conn)
                .await?;
            if deleted_items > 0 {
                return Err(AdminError::Conflict(
                    AdminConflict::NotEmpty,
                    "the category is referenced by deleted items kept for order history".into(),
                ));
            }
            diesel::delete(menu_categories::table.find(id))
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Deleted)
        }
        AdminChange::CreateItem(f) => {
            let category_id = f
                .category_id
                .ok_or_else(|| AdminError::Invalid("category_id: required".into()))?;
            category_of(conn, rid, category_id)
                .await
                .map_err(|e| match e {
                    AdminError::NotFound => AdminError::Invalid(
                        "category_id: no such category in this restaurant".into(),
                    ),
                    other => other,
                })?;
            let position = match f.position {
                Some(p) => p,
                None => next_item_position(conn, category_id).await?,
            };
            let item = MenuItem {
                id: Uuid::new_v4(),
                restaurant_id: rid,
                category_id,
                name: f
                    .name
                    .ok_or_else(|| AdminError::Invalid("name: required".into()))?,
                description: f.description.unwrap_or_default(),
                price_cents: f
                    .price_cents
                    .ok_or_else(|| AdminError::Invalid("price_cents: required".into()))?,
                available: f.available.unwrap_or(true),
                position,
                tags: f.tags.unwrap_or_default(),
                allergens: f.allergens.unwrap_or_default(),
                image_hash: None,
                deleted_at: None,
                created_at: now,
                updated_at: now,
            };
            diesel::insert_into(menu_items::table)
                .values(&item)
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Item(item))
        }
        AdminChange::UpdateItem { id, fields: f } => {
            let mut item = item_of(conn, rid, id).await?;
            if let Some(c) = f.category_id {
                category_of(conn, rid, c).await.map_err(|e| match e {
                    AdminError::NotFound => AdminError::Invalid(
                        "category_id: no such category in this restaurant".into(),
                    ),
                    other => other,
                })?;
                item.category_id = c;
            }
            if let Some(v) = f.name {
                item.name = v;
            }
            if let Some(v) = f.description {
                item.description = v;
            }
            if let Some(v) = f.price_cents {
                item.price_cents = v;
            }
            if let Some(v) = f.available {
                item.available = v;
            }
            if let Some(v) = f.tags {
                item.tags = v;
            }
            if let Some(v) = f.allergens {
                item.allergens = v;
            }
            if let Some(v) = f.position {
                item.position = v;
            }
            item.updated_at = now;
            diesel::update(menu_items::table.find(id))
                .set((
                    menu_items::category_id.eq(item.category_id),
                    menu_items::name.eq(&item.name),
                    menu_items::description.eq(&item.description),
                    menu_items::price_cents.eq(item.price_cents),
                    menu_items::available.eq(item.available),
                    menu_items::tags.eq(&item.tags),
                    menu_items::allergens.eq(&item.allergens),
                    menu_items::position.eq(item.position),
                    menu_items::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Item(item))
        }
        AdminChange::DeleteItem { id } => {
            item_of(conn, rid, id).await?;
            diesel::update(menu_items::table.find(id))
                .set((
                    menu_items::deleted_at.eq(now),
                    menu_items::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Deleted)
        }
        AdminChange::CreateTable { label } => {
            let table = RestaurantTable {
                id: Uuid::new_v4(),
                restaurant_id: rid,
                label,
                token: new_table_token(),
                active: true,
                deleted_at: None,
                created_at: now,
            };
            diesel::insert_into(restaurant_tables::table)
                .values(&table)
                .execute(conn)
                .await?;
            Ok(AdminOutcome::Table(table))
        }
        AdminChange::UpdateTable { id, label, active } => {
            let mut table = table_of(conn, rid, id).await?;
            if let Some(l) = label {
                table.label = l;
            }
            if let Some(a) = active {
                table.active = a;
            }
            diesel::update(restaurant_tables::table.find(id))
                .set((
                    restaurant_tables::label.eq(&table.label),
                    restaurant_tables::active.eq(table.active),
                ))
                .execute(conn)
                .await?;
            Ok(AdminOutcome::Table(table))
        }
        AdminChange::DeleteTable { id } => {
            table_of(conn, rid, id).await?;
            // The token is replaced too, so a deleted table's QR code can never open anything again.
            diesel::update(restaurant_tables::table.find(id))
                .set((
                    restaurant_tables::deleted_at.eq(now),
                    restaurant_tables::active.eq(false),
                    restaurant_tables::token.eq(new_table_token()),
                ))
                .execute(conn)
                .await?;
            Ok(AdminOutcome::Deleted)
        }
        AdminChange::Options(change) => options::apply_in(conn, rid, change, now).await,
        AdminChange::SetImage {
            item_id,
            image_hash,
        } => {
            let mut item = item_of(conn, rid, item_id).await?;
            item.image_hash = image_hash;
            item.updated_at = now;
            diesel::update(menu_items::table.find(item_id))
                .set((
                    menu_items::image_hash.eq(&item.image_hash),
                    menu_items::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            bump_version(conn, rid, now).await?;
            Ok(AdminOutcome::Item(item))
        }
        AdminChange::RotateToken { id } => {
            let mut table = table_of(conn, rid, id).await?;
            table.token = new_table_token();
            diesel::update(restaurant_tables::table.find(id))
                .set(restaurant_tables::token.eq(&table.token))
                .execute(conn)
                .await?;
            Ok(AdminOutcome::Table(table))
        }
    }
}

async fn next_category_position(conn: &mut DbConn, rid: Uuid) -> Result<i32, AdminError> {
    let max: Option<i32> = menu_categories::table
        .filter(menu_categories::restaurant_id.eq(rid))
        .select(diesel::dsl::max(menu_categories::position))
        .first(conn)
        .await?;
    Ok(max.map_or(0, |m| m + 1))
}

async fn next_item_position(conn: &mut DbConn, category: Uuid) -> Result<i32, AdminError> {
    let max: Option<i32> = menu_items::table
        .filter(menu_items::category_id.eq(category))
        .filter(menu_items::deleted_at.is_null())
        .select(diesel::dsl::max(menu_items::position))
        .first(conn)
        .await?;
    Ok(max.map_or(0, |m| m + 1))
}
