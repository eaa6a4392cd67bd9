//! # Real menus' rows: option groups and options of a dish, and the options copied onto order lines
//!
//! A dish has option groups (a size, a doneness, extras), each with options that may change the price
//! (`price_delta_cents`, possibly negative), be sold out, and contain allergens. An order line keeps
//! the options it was ordered with as [`LineOptions`] (a `jsonb` column), copied at order time like the
//! dish's name and price, so editing or deleting an option never rewrites a past order.

use std::io::Write;

use chrono::{DateTime, Utc};
use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Jsonb;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::schema::{menu_options, option_groups};
use crate::wire;
use crate::DbConn;

/// A choice on a dish: between `min_choices` and `max_choices` of its options.
#[derive(Clone, Debug, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = option_groups)]
pub struct OptionGroup {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub menu_item_id: Uuid,
    pub name: String,
    pub min_choices: i32,
    pub max_choices: i32,
    pub position: i32,
    pub created_at: DateTime<Utc>,
}

/// One option of a group.
#[derive(Clone, Debug, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = menu_options)]
pub struct MenuOption {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub group_id: Uuid,
    pub name: String,
    pub price_delta_cents: i64,
    pub available: bool,
    pub allergens: Vec<String>,
    pub position: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OptionGroup {
    /// Every option group of the restaurant's dishes, in menu order.
    pub async fn for_restaurant(
        conn: &mut DbConn,
        restaurant: Uuid,
    ) -> QueryResult<Vec<OptionGroup>> {
        option_groups::table
            .filter(option_groups::restaurant_id.eq(restaurant))
            .order((
                option_groups::position.asc(),
                option_groups::created_at.asc(),
            ))
            .select(OptionGroup::as_select())
            .load(conn)
            .await
    }
}

impl MenuOption {
    /// Every option of the restaurant, in menu order.
    pub async fn for_restaurant(
        conn: &mut DbConn,
        restaurant: Uuid,
    ) -> QueryResult<Vec<MenuOption>> {
        menu_options::table
            .filter(menu_options::restaurant_id.eq(restaurant))
            .order((menu_options::position.asc(), menu_options::created_at.asc()))
            .select(MenuOption::as_select())
            .load(conn)
            .await
    }

    pub fn to_view(&self) -> wire::OptionView {
        wire::OptionView {
            id: self.id.into(),
            name: self.name.clone(),
            price_delta_cents: self.price_delta_cents,
            available: self.available,
            allergens: self.allergens.clone(),
        }
    }
}

/// The options of one order line as stored (`order_items.options`, `jsonb`).
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(sql_type = Jsonb)]
#[serde(transparent)]
pub struct LineOptions(pub Vec<wire::OrderLineOption>);

impl FromSql<Jsonb, Pg> for LineOptions {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let value = <serde_json::Value as FromSql<Jsonb, Pg>>::from_sql(bytes)?;
        Ok(LineOptions(serde_json::from_value(value)?))
    }
}

impl ToSql<Jsonb, Pg> for LineOptions {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        // jsonb's binary format: a version byte, then the JSON text.
        out.write_all(&[1])?;
        serde_json::to_writer(out, &self.0)?;
        Ok(IsNull::No)
    }
}
