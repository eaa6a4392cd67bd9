//! Row models beside their queries. Writes of orders, menus and restaurant flags happen only through the
//! restaurant actors and their persistence writer; everything here is called by them or by read paths.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::OptionalExtension;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::domain::{mask_phone, OrderStatus};
use crate::schema::*;
use crate::wire;
use crate::DbConn;

pub type QueryResult<T> = Result<T, diesel::result::Error>;

#[derive(
    Clone,
    Debug,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = restaurants)]
pub struct Restaurant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub currency: String,
    pub time_zone: String,
    pub accepting_orders: bool,
    pub menu_version: i64,
    pub ticket_warn_after_s: i32,
    pub ticket_late_after_s: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An open ticket is "waiting long" on the kitchen display after this many seconds, unless the
/// restaurant says otherwise.
pub const DEFAULT_TICKET_WARN_AFTER_S: i32 = 600;
/// …and "late" after this many.
pub const DEFAULT_TICKET_LATE_AFTER_S: i32 = 1200;

/// Sets many orders' status in one statement: `$1` ids, `$2` statuses, `$3` times, as arrays of the same
/// length; returns the ids it found. The persistence writer's statement, and `pg-baseline`'s, so the
/// Postgres-alone reference runs exactly what the engine runs.
pub const SET_STATUSES_SQL: &str = "UPDATE orders AS o SET status = v.status, updated_at = v.at \
     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS v(id, status, at) \
     WHERE o.id = v.id RETURNING o.id";

/// Records the kitchen's acknowledgement of orders' allergies in one statement: `$1` ids, `$2` who
/// (staff ids, or null), `$3` when. An order keeps its first acknowledgement.
pub const SET_ALLERGY_ACKS_SQL: &str =
    "UPDATE orders AS o SET allergy_ack_by = v.by, allergy_ack_at = v.at \
     FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS v(id, by, at) \
     WHERE o.id = v.id AND o.allergy_ack_at IS NULL";

impl Restaurant {
    /// A new restaurant: accepting orders, menu version 1, the default ticket thresholds.
    pub fn new(
        id: Uuid,
        slug: impl Into<String>,
        name: impl Into<String>,
        currency: impl Into<String>,
        time_zone: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Restaurant {
        Restaurant {
            id,
            slug: slug.into(),
            name: name.into(),
            currency: currency.into(),
            time_zone: time_zone.into(),
            accepting_orders: true,
            menu_version: 1,
            ticket_warn_after_s: DEFAULT_TICKET_WARN_AFTER_S,
            ticket_late_after_s: DEFAULT_TICKET_LATE_AFTER_S,
            created_at: now,
            updated_at: now,
        }
    }

    pub async fn find(conn: &mut DbConn, id: Uuid) -> QueryResult<Option<Restaurant>> {
        restaurants::table
            .find(id)
            .select(Restaurant::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// [`Restaurant::find`], locking the row until the transaction ends: a change computed from the
    /// row (its menu version included) cannot lose a concurrent one.
    pub async fn find_for_update(conn: &mut DbConn, id: Uuid) -> QueryResult<Option<Restaurant>> {
        restaurants::table
            .find(id)
            .select(Restaurant::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()
    }

    pub async fn find_by_slug(conn: &mut DbConn, slug: &str) -> QueryResult<Option<Restaurant>> {
        restaurants::table
            .filter(restaurants::slug.eq(slug))
            .select(Restaurant::as_select())
            .first(conn)
            .await
            .optional()
    }

    pub async fn all(conn: &mut DbConn) -> QueryResult<Vec<Restaurant>> {
        restaurants::table
            .order(restaurants::slug.asc())
            .select(Restaurant::as_select())
            .load(conn)
            .await
    }

    pub async fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(restaurants::table)
            .values(self)
            .execute(conn)
            .await
            .map(|_| ())
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = menu_categories)]
pub struct MenuCategory {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub name: String,
    pub position: i32,
    pub created_at: DateTime<Utc>,
}

impl MenuCategory {
    pub async fn for_restaurant(
        conn: &mut DbConn,
        restaurant: Uuid,
    ) -> QueryResult<Vec<MenuCategory>> {
        menu_categories::table
            .filter(menu_categories::restaurant_id.eq(restaurant))
            .order((
                menu_categories::position.asc(),
                menu_categories::created_at.asc(),
            ))
            .select(MenuCategory::as_select())
            .load(conn)
            .await
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = menu_items)]
pub struct MenuItem {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub category_id: Uuid,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub available: bool,
    pub position: i32,
    pub tags: Vec<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Allergen codes ([`crate::domain::ALLERGENS`]).
    pub allergens: Vec<String>,
    /// The dish's photo: the SHA-256 (hex) naming it in `menu_images` and in its URLs.
    pub image_hash: Option<String>,
}

impl MenuItem {
    /// The items on the menu now (deleted ones left out).
    pub async fn for_restaurant(conn: &mut DbConn, restaurant: Uuid) -> QueryResult<Vec<MenuItem>> {
        menu_items::table
            .filter(menu_items::restaurant_id.eq(restaurant))
            .filter(menu_items::deleted_at.is_null())
            .order((menu_items::position.asc(), menu_items::created_at.asc()))
            .select(MenuItem::as_select())
            .load(conn)
            .await
    }

    pub fn to_view(&self) -> wire::MenuItemView {
        wire::MenuItemView {
            id: self.id.into(),
            name: self.name.clone(),
            description: self.description.clone(),
            price_cents: self.price_cents,
            available: self.available,
            tags: self.tags.clone(),
            allergens: self.allergens.clone(),
            image_url: self.image_hash.as_deref().map(crate::media::menu_url),
            thumbnail_url: self.image_hash.as_deref().map(crate::media::thumbnail_url),
            option_groups: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = restaurant_tables)]
pub struct RestaurantTable {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub label: String,
    pub token: String,
    pub active: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl RestaurantTable {
    /// Every active table of the restaurants that `tokens` (those of active tables) belong to: what a
    /// node learns about a restaurant from its first guests' tokens.
    pub async fn with_their_restaurants_tables(
        conn: &mut DbConn,
        tokens: &[String],
    ) -> QueryResult<Vec<RestaurantTable>> {
        let restaurants: Vec<Uuid> = restaurant_tables::table
            .filter(restaurant_tables::token.eq_any(tokens))
            .filter(restaurant_tables::active.eq(true))
            .filter(restaurant_tables::deleted_at.is_null())
            .select(restaurant_tables::restaurant_id)
            .distinct()
            .load(conn)
            .await?;
        if restaurants.is_empty() {
            return Ok(Vec::new());
        }
        restaurant_tables::table
            .filter(restaurant_tables::restaurant_id.eq_any(restaurants))
            .filter(restaurant_tables::active.eq(true))
            .filter(restaurant_tables::deleted_at.is_null())
            .select(RestaurantTable::as_select())
            .load(conn)
            .await
    }

    pub async fn for_restaurant(
        conn: &mut DbConn,
        restaurant: Uuid,
    ) -> QueryResult<Vec<RestaurantTable>> {
        restaurant_tables::table
            .filter(restaurant_tables::restaurant_id.eq(restaurant))
            .filter(restaurant_tables::deleted_at.is_null())
            .order(restaurant_tables::created_at.asc())
            .select(RestaurantTable::as_select())
            .load(conn)
            .await
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = staff_users)]
pub struct StaffUserRow {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub role: wire::Role,
    pub restaurant_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl StaffUserRow {
    pub async fn by_username(
        conn: &mut DbConn,
        username: &str,
    ) -> QueryResult<Option<StaffUserRow>> {
        staff_users::table
            .filter(staff_users::username.eq(username))
            .select(StaffUserRow::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// The user behind an unexpired session token hash.
    pub async fn by_session(
        conn: &mut DbConn,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> QueryResult<Option<StaffUserRow>> {
        staff_sessions::table
            .inner_join(staff_users::table)
            .filter(staff_sessions::token_hash.eq(token_hash))
            .filter(staff_sessions::expires_at.gt(now))
            .select(StaffUserRow::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// [`StaffUserRow::by_session`] with the session's expiry (for the session cache).
    pub async fn by_session_until(
        conn: &mut DbConn,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> QueryResult<Option<(StaffUserRow, DateTime<Utc>)>> {
        staff_sessions::table
            .inner_join(staff_users::table)
            .filter(staff_sessions::token_hash.eq(token_hash))
            .filter(staff_sessions::expires_at.gt(now))
            .select((StaffUserRow::as_select(), staff_sessions::expires_at))
            .first(conn)
            .await
            .optional()
    }

    pub fn to_wire(&self) -> wire::StaffUser {
        wire::StaffUser {
            id: self.id.into(),
            username: self.username.clone(),
            role: self.role,
            restaurant_id: self.restaurant_id.map(Into::into),
        }
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = staff_sessions)]
pub struct StaffSession {
    pub token_hash: Vec<u8>,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl StaffSession {
    pub async fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(staff_sessions::table)
            .values(self)
            .execute(conn)
            .await
            .map(|_| ())
    }

    pub async fn delete(conn: &mut DbConn, token_hash: &[u8]) -> QueryResult<usize> {
        diesel::delete(staff_sessions::table.filter(staff_sessions::token_hash.eq(token_hash)))
            .execute(conn)
            .await
    }

    pub async fn delete_for_user(conn: &mut DbConn, user: Uuid) -> QueryResult<usize> {
        diesel::delete(staff_sessions::table.filter(staff_sessions::user_id.eq(user)))
            .execute(conn)
            .await
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = otp_challenges)]
pub struct OtpChallenge {
    pub id: Uuid,
    pub phone: String,
    pub code_hash: Vec<u8>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub consumed_at: Option<DateTime<Utc>>,
}

impl OtpChallenge {
    pub async fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(otp_challenges::table)
            .values(self)
            .execute(conn)
            .await
            .map(|_| ())
    }

    /// Inserts the challenge unless a window `(length, at most)` is full for its phone; then answers how
    /// long until the oldest send in the full window leaves it. Serialised per phone with an advisory
    /// lock, so parallel requests cannot slip past a cap.
    pub async fn insert_capped(
        &self,
        conn: &mut DbConn,
        windows: &[(chrono::Duration, i64)],
    ) -> QueryResult<Result<(), chrono::Duration>> {
        use diesel_async::AsyncConnection;
        let longest = windows.iter().map(|(w, _)| *w).max().unwrap_or_default();
        conn.transaction(async |c| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))::text AS locked")
                .bind::<diesel::sql_types::Text, _>(&self.phone)
                .execute(c)
                .await?;
            let sent: Vec<DateTime<Utc>> = otp_challenges::table
                .filter(otp_challenges::phone.eq(&self.phone))
                .filter(otp_challenges::created_at.gt(self.created_at - longest))
                .order(otp_challenges::created_at.desc())
                .select(otp_challenges::created_at)
                .load(c)
                .await?;
            for (window, at_most) in windows {
                let inside: Vec<&DateTime<Utc>> = sent
                    .iter()
                    .filter(|t| **t > self.created_at - *window)
                    .collect();
                if inside.len() as i64 >= *at_most {
                    // The send that must age out is the at_most-th newest.
                    let pivot = inside[(*at_most).max(1) as usize - 1];
                    return Ok(Err(*pivot + *window - self.created_at));
                }
            }
            diesel::insert_into(otp_challenges::table)
                .values(self)
                .execute(c)
                .await?;
            Ok(Ok(()))
        })
        .await
    }

    /// The newest unconsumed challenge for a phone.
    pub async fn latest_open(conn: &mut DbConn, phone: &str) -> QueryResult<Option<OtpChallenge>> {
        otp_challenges::table
            .filter(otp_challenges::phone.eq(phone))
            .filter(otp_challenges::consumed_at.is_null())
            .order(otp_challenges::created_at.desc())
            .select(OtpChallenge::as_select())
            .first(conn)
            .await
            .optional()
    }

    /// Takes one attempt atomically; `None` when the code is used up or consumed already.
    pub async fn take_attempt(conn: &mut DbConn, id: Uuid, max: i32) -> QueryResult<Option<i32>> {
        diesel::update(
            otp_challenges::table
                .filter(otp_challenges::id.eq(id))
                .filter(otp_challenges::attempts.lt(max))
                .filter(otp_challenges::consumed_at.is_null()),
        )
        .set(otp_challenges::attempts.eq(otp_challenges::attempts + 1))
        .returning(otp_challenges::attempts)
        .get_result(conn)
        .await
        .optional()
    }

    /// Marks the challenge used; false when another request consumed it first.
    pub async fn consume(conn: &mut DbConn, id: Uuid, now: DateTime<Utc>) -> QueryResult<bool> {
        let n = diesel::update(
            otp_challenges::table
                .filter(otp_challenges::id.eq(id))
                .filter(otp_challenges::consumed_at.is_null()),
        )
        .set(otp_challenges::consumed_at.eq(now))
        .execute(conn)
        .await?;
        Ok(n == 1)
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = customer_sessions)]
pub struct CustomerSession {
    pub token_hash: Vec<u8>,
    pub phone: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl CustomerSession {
    pub async fn insert(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(customer_sessions::table)
            .values(self)
            .execute(conn)
            .await
            .map(|_| ())
    }

    pub async fn insert_many(rows: &[CustomerSession], conn: &mut DbConn) -> QueryResult<()> {
        for chunk in rows.chunks(10_000) {
            diesel::insert_into(customer_sessions::table)
                .values(chunk)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// The phone behind an unexpired customer token hash.
    pub async fn phone_for(
        conn: &mut DbConn,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> QueryResult<Option<String>> {
        customer_sessions::table
            .filter(customer_sessions::token_hash.eq(token_hash))
            .filter(customer_sessions::expires_at.gt(now))
            .select(customer_sessions::phone)
            .first(conn)
            .await
            .optional()
    }

    /// [`CustomerSession::phone_for`] with the session's expiry (for the session cache).
    pub async fn phone_until(
        conn: &mut DbConn,
        token_hash: &[u8],
        now: DateTime<Utc>,
    ) -> QueryResult<Option<(String, DateTime<Utc>)>> {
        customer_sessions::table
            .filter(customer_sessions::token_hash.eq(token_hash))
            .filter(customer_sessions::expires_at.gt(now))
            .select((customer_sessions::phone, customer_sessions::expires_at))
            .first(conn)
            .await
            .optional()
    }
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = orders)]
pub struct OrderRow {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub table_id: Uuid,
    pub table_label: String,
    pub ticket_no: i32,
    pub business_day: NaiveDate,
    pub phone: String,
    pub status: OrderStatus,
    pub note: String,
    pub total_cents: i64,
    pub currency: String,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The table's declared allergies, and the kitchen's acknowledgement of them.
    pub allergies: Vec<String>,
    pub allergy_ack_by: Option<Uuid>,
    pub allergy_ack_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = order_items)]
pub struct OrderItemRow {
    pub order_id: Uuid,
    pub line_no: i32,
    pub menu_item_id: Uuid,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i32,
    pub note: String,
    pub options: crate::options::LineOptions,
}

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = order_status_history)]
pub struct NewStatusHistory {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub changed_at: DateTime<Utc>,
    pub changed_by: Option<Uuid>,
    /// The request the change answered (see [`StoredOrder::change_applied`]).
    pub request_id: Option<String>,
    /// The change carried the kitchen's acknowledgement of the order's allergies.
    pub allergy_ack: bool,
}

/// An order row with its lines.
#[derive(Clone, Debug)]
pub struct StoredOrder {
    pub row: OrderRow,
    pub items: Vec<OrderItemRow>,
}

impl StoredOrder {
    /// The wire form; `show_phone` is true only for the guest who placed it.
    pub fn to_wire(&self, show_phone: bool) -> wire::Order {
        let r = &self.row;
        wire::Order {
            id: r.id.into(),
            restaurant_id: r.restaurant_id.into(),
            table_id: r.table_id.into(),
            table_label: r.table_label.clone(),
            ticket_no: r.ticket_no,
            status: r.status,
            items: self
                .items
                .iter()
                .map(|i| wire::OrderLine {
                    menu_item_id: i.menu_item_id.into(),
                    name: i.name.clone(),
                    unit_price_cents: i.unit_price_cents,
                    quantity: i.quantity,
                    note: i.note.clone(),
                    options: i.options.0.clone(),
                })
                .collect(),
            note: r.note.clone(),
            total_cents: r.total_cents,
            currency: r.currency.clone(),
            phone: if show_phone {
                r.phone.clone()
            } else {
                mask_phone(&r.phone)
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
            allergies: r.allergies.clone(),
            allergy_ack: self.allergy_ack(),
        }
    }

    /// The kitchen's acknowledgement of the order's allergies, once made.
    pub fn allergy_ack(&self) -> Option<wire::AllergyAck> {
        self.row.allergy_ack_at.map(|at| wire::AllergyAck {
            by: self.row.allergy_ack_by.map(Into::into),
            at,
        })
    }

    /// Whether the order waits for the kitchen to acknowledge its allergies.
    pub fn needs_allergy_ack(&self) -> bool {
        !self.row.allergies.is_empty() && self.row.allergy_ack_at.is_none()
    }

    /// Attaches their lines to order rows with one query.
    pub async fn with_items(
        conn: &mut DbConn,
        rows: Vec<OrderRow>,
    ) -> QueryResult<Vec<StoredOrder>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let items: Vec<OrderItemRow> = order_items::table
            .filter(order_items::order_id.eq_any(&ids))
            .order((order_items::order_id.asc(), order_items::line_no.asc()))
            .select(OrderItemRow::as_select())
            .load(conn)
            .await?;
        let mut by_order: std::collections::HashMap<Uuid, Vec<OrderItemRow>> =
            std::collections::HashMap::with_capacity(rows.len());
        for it in items {
            by_order.entry(it.order_id).or_default().push(it);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let items = by_order.remove(&row.id).unwrap_or_default();
                StoredOrder { row, items }
            })
            .collect())
    }

    pub async fn find(conn: &mut DbConn, id: Uuid) -> QueryResult<Option<StoredOrder>> {
        let row: Option<OrderRow> = orders::table
            .find(id)
            .select(OrderRow::as_select())
            .first(conn)
            .await
            .optional()?;
        match row {
            Some(row) => Ok(StoredOrder::with_items(conn, vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    /// Whether the change `request_id` asked for (this status, by this staff member) was applied to
    /// the order: a retry of it is then answered as done. Rare: asked only when a change is refused.
    pub async fn change_applied(
        conn: &mut DbConn,
        order_id: Uuid,
        request_id: &str,
        status: OrderStatus,
        by: Option<Uuid>,
    ) -> QueryResult<bool> {
        let mut q = order_status_history::table
            .filter(order_status_history::order_id.eq(order_id))
            .filter(order_status_history::request_id.eq(request_id))
            .filter(order_status_history::status.eq(status))
            .select(order_status_history::id)
            .into_boxed();
        q = match by {
            Some(by) => q.filter(order_status_history::changed_by.eq(by)),
            None => q.filter(order_status_history::changed_by.is_null()),
        };
        Ok(q.first::<i64>(conn).await.optional()?.is_some())
    }

    pub async fn find_by_key(
        conn: &mut DbConn,
        restaurant: Uuid,
        key: &str,
    ) -> QueryResult<Option<StoredOrder>> {
        let row: Option<OrderRow> = orders::table
            .filter(orders::restaurant_id.eq(restaurant))
            .filter(orders::idempotency_key.eq(key))
            .select(OrderRow::as_select())
            .first(conn)
            .await
            .optional()?;
        match row {
            Some(row) => Ok(StoredOrder::with_items(conn, vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    /// Waits until no other transaction is writing this order's idempotency key, then tells whether an
    /// order with that key is committed: a probe insert of the same row (`ON CONFLICT DO NOTHING`) blocks
    /// on the key's unique index while another transaction holds it, and is always rolled back.
    pub async fn settle_insert(conn: &mut DbConn, row: &OrderRow) -> QueryResult<bool> {
        use diesel_async::AsyncConnection;
        enum Probe {
            Committed(bool),
            Db(diesel::result::Error),
        }
        impl From<diesel::result::Error> for Probe {
            fn from(e: diesel::result::Error) -> Probe {
                Probe::Db(e)
            }
        }
        let outcome = conn
            .transaction(async |c| {
                let inserted: Option<Uuid> = diesel::insert_into(orders::table)
                    .values(row.clone())
                    .on_conflict((orders::restaurant_id, orders::idempotency_key))
                    .do_nothing()
                    .returning(orders::id)
                    .get_result(c)
                    .await
                    .optional()?;
                Err::<(), Probe>(Probe::Committed(inserted.is_none()))
            })
            .await;
        match outcome {
            Err(Probe::Committed(committed)) => Ok(committed),
            Err(Probe::Db(e)) => Err(e),
            Ok(()) => Ok(false),
        }
    }

    /// Waits until no other transaction holds this order's row lock (a status change in flight).
    pub async fn settle_row(conn: &mut DbConn, id: Uuid) -> QueryResult<()> {
        use diesel_async::AsyncConnection;
        conn.transaction(async |c| {
            orders::table
                .find(id)
                .select(orders::id)
                .for_share()
                .load::<Uuid>(c)
                .await
                .map(|_| ())
        })
        .await
    }

    /// The kitchen's live orders (not served or cancelled), oldest first. Uses `orders_live`.
    pub async fn live_for(conn: &mut DbConn, restaurant: Uuid) -> QueryResult<Vec<StoredOrder>> {
        let rows: Vec<OrderRow> = orders::table
            .filter(orders::restaurant_id.eq(restaurant))
            .filter(orders::status.ne_all(vec!["served", "cancelled"]))
            .order((orders::created_at.asc(), orders::id.asc()))
            .select(OrderRow::as_select())
            .load(conn)
            .await?;
        StoredOrder::with_items(conn, rows).await
    }

    /// A guest's orders, newest first, before an optional `(created_at, id)` cursor. Uses `orders_phone`.
    pub async fn for_phone(
        conn: &mut DbConn,
        phone: &str,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> QueryResult<Vec<StoredOrder>> {
        let mut q = orders::table
            .filter(orders::phone.eq(phone))
            .select(OrderRow::as_select())
            .order((orders::created_at.desc(), orders::id.desc()))
            .limit(limit)
            .into_boxed();
        if let Some((at, id)) = before {
            q = q.filter(
                orders::created_at
                    .lt(at)
                    .or(orders::created_at.eq(at).and(orders::id.lt(id))),
            );
        }
        let rows = q.load(conn).await?;
        StoredOrder::with_items(conn, rows).await
    }

    /// The highest ticket number handed out on a business day.
    pub async fn max_ticket(
        conn: &mut DbConn,
        restaurant: Uuid,
        day: NaiveDate,
    ) -> QueryResult<i32> {
        let max: Option<i32> = orders::table
            .filter(orders::restaurant_id.eq(restaurant))
            .filter(orders::business_day.eq(day))
            .select(diesel::dsl::max(orders::ticket_no))
            .first(conn)
            .await?;
        Ok(max.unwrap_or(0))
    }
}

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = notification_outbox)]
pub struct NewOutbox {
    pub dedup_key: String,
    pub phone: String,
    pub template: String,
    pub params: serde_json::Value,
}

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = notification_outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub dedup_key: String,
    pub phone: String,
    pub template: String,
    pub params: serde_json::Value,
    pub attempts: i32,
}

impl OutboxRow {
    /// Claims up to `limit` due messages for `lease`, so that several notifiers never send one twice
    /// at the same time.
    pub async fn claim_due(
        conn: &mut DbConn,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> QueryResult<Vec<OutboxRow>> {
        use diesel::sql_types::{BigInt, Timestamptz};
        // One statement (one round trip, one commit). Rows another notifier holds locked are skipped,
        // and the due/lease conditions are re-checked on each row's latest version when it is locked,
        // so a row claimed meanwhile is never sent twice.
        diesel::sql_query(
            "UPDATE notification_outbox SET locked_until = $1 \
             WHERE id IN (SELECT id FROM notification_outbox \
                          WHERE sent_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $2 \
                            AND (locked_until IS NULL OR locked_until < $2) \
                          ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING id, dedup_key, phone, template, params, attempts",
        )
        .bind::<Timestamptz, _>(lease_until)
        .bind::<Timestamptz, _>(now)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await
    }

    pub async fn mark_sent(conn: &mut DbConn, id: i64, now: DateTime<Utc>) -> QueryResult<()> {
        use notification_outbox as n;
        diesel::update(n::table.find(id))
            .set((
                n::sent_at.eq(now),
                n::attempts.eq(n::attempts + 1),
                n::locked_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await
            .map(|_| ())
    }

    /// [`OutboxRow::mark_sent`] for many rows in one statement (one commit for a whole round).
    pub async fn mark_sent_many(
        conn: &mut DbConn,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> QueryResult<()> {
        use notification_outbox as n;
        if ids.is_empty() {
            return Ok(());
        }
        diesel::update(n::table.filter(n::id.eq_any(ids)))
            .set((
                n::sent_at.eq(now),
                n::attempts.eq(n::attempts + 1),
                n::locked_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await
            .map(|_| ())
    }

    pub async fn mark_failed(
        conn: &mut DbConn,
        id: i64,
        now: DateTime<Utc>,
        error: &str,
    ) -> QueryResult<()> {
        use notification_outbox as n;
        diesel::update(n::table.find(id))
            .set((
                n::failed_at.eq(now),
                n::attempts.eq(n::attempts + 1),
                n::last_error.eq(error),
                n::locked_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await
            .map(|_| ())
    }

    pub async fn retry_later(
        conn: &mut DbConn,
        id: i64,
        at: DateTime<Utc>,
        error: &str,
    ) -> QueryResult<()> {
        use notification_outbox as n;
        diesel::update(n::table.find(id))
            .set((
                n::next_attempt_at.eq(at),
                n::attempts.eq(n::attempts + 1),
                n::last_error.eq(error),
                n::locked_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await
            .map(|_| ())
    }

    /// Makes every message waiting out a retry backoff due now (the API answers again after an outage:
    /// what queued up during it goes out at once instead of each waiting for its own backoff, up to
    /// minutes). Rows being sent (leased) are left alone. Returns how many were brought forward.
    pub async fn retry_waiting_now(conn: &mut DbConn, now: DateTime<Utc>) -> QueryResult<usize> {
        use notification_outbox as n;
        diesel::update(
            n::table
                .filter(n::sent_at.is_null())
                .filter(n::failed_at.is_null())
                .filter(n::attempts.gt(0))
                .filter(n::next_attempt_at.gt(now))
                .filter(n::locked_until.is_null().or(n::locked_until.lt(now))),
        )
        .set(n::next_attempt_at.eq(now))
        .execute(conn)
        .await
    }

    /// Messages not yet sent or given up on.
    pub async fn backlog(conn: &mut DbConn) -> QueryResult<i64> {
        use notification_outbox as n;
        n::table
            .filter(n::sent_at.is_null())
            .filter(n::failed_at.is_null())
            .count()
            .get_result(conn)
            .await
    }
}
