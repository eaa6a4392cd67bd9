//! Admin calls (role `admin`): restaurants, categories, menu items, tables with QR codes and token
//! rotation, and chefs. Changes to an existing restaurant are applied by its own actor, which tells open
//! sockets (`menu`, `restaurant`) and closes the sockets of a table whose token died. A chef calling any of
//! these gets 403; an id of another restaurant is 404. A dish's option groups and options are in
//! [`options`], its photo in [`photos`].

mod options;
mod photos;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scan2order_actors::admin::{
    AdminChange, AdminError, AdminOutcome, ItemFields, RestaurantPatch,
};
use scan2order_actors::restaurant::ApplyAdminChange;
use scan2order_schema::domain::{allergen_codes, is_clean_text, RestaurantId, StaffId, ALLERGENS};
use scan2order_schema::models::{
    MenuCategory, MenuItem, Restaurant, RestaurantTable, StaffSession, StaffUserRow,
    DEFAULT_TICKET_LATE_AFTER_S, DEFAULT_TICKET_WARN_AFTER_S,
};
use scan2order_schema::schema::{menu_categories, menu_items, restaurant_tables, staff_users};
use scan2order_schema::wire::Role;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::auth::{self, hash_password};
use crate::context::AppContext;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::qr;

/// A resource whose other methods answer like any unknown route (404 in the protocol's shape).
fn resource(path: impl Into<String>) -> actix_web::Resource {
    web::resource(path.into()).default_service(web::to(super::not_found))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Every route here is admin-only; `auth::admin_required` checks it before any body is read.
    let r = "/restaurants/{rid}";
    cfg.service(
        web::scope("/admin")
            .wrap(from_fn(auth::admin_required))
            .route("/shards", web::get().to(shards))
            .route("/cluster", web::get().to(super::cluster::nodes))
            .route(&format!("{r}/owner"), web::get().to(super::cluster::owner))
            .service(
                resource("/restaurants")
                    .post(create_restaurant)
                    .get(list_restaurants),
            )
            .service(resource(r).get(get_restaurant).patch(update_restaurant))
            .service(
                resource(format!("{r}/categories"))
                    .post(create_category)
                    .get(list_categories),
            )
            .service(
                resource(format!("{r}/categories/{{cid}}"))
                    .get(get_category)
                    .patch(update_category)
                    .delete(delete_category),
            )
            .service(
                resource(format!("{r}/menu-items"))
                    .post(create_item)
                    .get(list_items),
            )
            .service(
                resource(format!("{r}/menu-items/{{iid}}"))
                    .get(get_item)
                    .patch(update_item)
                    .delete(delete_item),
            )
            .configure(|cfg| options::configure(cfg, r))
            .configure(|cfg| photos::configure(cfg, r))
            .service(
                resource(format!("{r}/tables"))
                    .post(create_table)
                    .get(list_tables),
            )
            .service(
                resource(format!("{r}/tables/{{tid}}"))
                    .get(get_table)
                    .patch(update_table)
                    .delete(delete_table),
            )
            .route(
                &format!("{r}/tables/{{tid}}/qr.svg"),
                web::get().to(table_qr_svg),
            )
            .route(
                &format!("{r}/tables/{{tid}}/qr.png"),
                web::get().to(table_qr_png),
            )
            .route(
                &format!("{r}/tables/{{tid}}/rotate-token"),
                web::post().to(rotate_token),
            )
            .route(&format!("{r}/qr-sheet"), web::get().to(qr_sheet))
            .service(
                resource(format!("{r}/staff"))
                    .post(create_staff)
                    .get(list_staff),
            )
            .service(
                resource(format!("{r}/staff/{{uid}}"))
                    .patch(update_staff)
                    .delete(delete_staff),
            ),
    );
}

// ---- validation -------------------------------------------------------------------------------

/// Limits of admin-entered fields.
const MAX_NAME: usize = 100;
const MAX_DESCRIPTION: usize = 500;
const MAX_LABEL: usize = 40;
const MAX_TAGS: usize = 12;
const MAX_TAG: usize = 30;
const MAX_PRICE_CENTS: i64 = 100_000_000;
const MIN_PASSWORD: usize = 10;
const MAX_PASSWORD: usize = 256;

fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::invalid(format!("{field}: must not be empty")));
    }
    if v.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "{field}: at most {max} characters"
        )));
    }
    if !is_clean_text(v) || v.contains('\n') {
        return Err(ApiError::invalid(format!(
            "{field}: control characters are not allowed"
        )));
    }
    Ok(v.to_string())
}

fn description(value: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(format!(
            "description: at most {MAX_DESCRIPTION} characters"
        )));
    }
    if !is_clean_text(v) {
        return Err(ApiError::invalid(
            "description: control characters are not allowed",
        ));
    }
    Ok(v.to_string())
}

fn slug(value: &str) -> ApiResult<String> {
    let ok = (2..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
        && !value.contains("--");
    if ok {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(
            "slug: 2 to 64 lowercase letters, digits and single dashes, not at either end",
        ))
    }
}

fn currency(value: &str) -> ApiResult<String> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid("currency: an ISO 4217 code such as EUR"))
    }
}

fn time_zone(value: &str) -> ApiResult<String> {
    value
        .parse::<chrono_tz::Tz>()
        .map(|_| value.to_string())
        .map_err(|_| ApiError::invalid("time_zone: an IANA time zone such as Europe/Paris"))
}

fn price(value: i64) -> ApiResult<i64> {
    if (0..=MAX_PRICE_CENTS).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "price_cents: between 0 and {MAX_PRICE_CENTS}"
        )))
    }
}

fn position(field: &str, value: i32) -> ApiResult<i32> {
    if (0..=100_000).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!("{field}: between 0 and 100000")))
    }
}

fn tags(values: Vec<String>) -> ApiResult<Vec<String>> {
    if values.len() > MAX_TAGS {
        return Err(ApiError::invalid(format!("tags: at most {MAX_TAGS}")));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for t in values {
        let t = text("tags", &t.to_lowercase(), MAX_TAG)?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Allergen codes, each one of the 14 the law names; repeats dropped.
fn allergens(values: Vec<String>) -> ApiResult<Vec<String>> {
    allergen_codes(&values).map_err(|bad| {
        let at = values.iter().position(|v| *v == bad).unwrap_or(0);
        ApiError::invalid(format!(
            "allergens[{at}]: not an allergen code; one of {}",
            ALLERGENS.join(", ")
        ))
    })
}

fn threshold(field: &str, value: i32) -> ApiResult<i32> {
    if (30..=86_400).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "{field}: between 30 and 86400 seconds"
        )))
    }
}

fn username(value: &str) -> ApiResult<String> {
    let ok = (3..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(
            "username: 3 to 64 letters, digits, '.', '-' or '_'",
        ))
    }
}

fn password(value: &str) -> ApiResult<String> {
    let n = value.chars().count();
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
        Ok(value.to_string())
    } else {
        Err(ApiError::invalid(format!(
            "password: {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )))
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        match e {
            AdminError::NotFound => ApiError::not_found(),
            AdminError::Conflict(code, message) => ApiError::conflict(code.code(), message),
            AdminError::Invalid(message) => ApiError::invalid(message),
            AdminError::Unavailable | AdminError::Fenced => ApiError::unavailable(),
        }
    }
}

fn unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

// ---- answers ----------------------------------------------------------------------------------

#[derive(Serialize)]
struct RestaurantOut {
    id: Uuid,
    slug: String,
    name: String,
    currency: String,
    time_zone: String,
    accepting_orders: bool,
    ticket_warn_after_s: i32,
    ticket_late_after_s: i32,
    menu_version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Restaurant> for RestaurantOut {
    fn from(r: Restaurant) -> Self {
        RestaurantOut {
            id: r.id,
            slug: r.slug,
            name: r.name,
            currency: r.currency,
            time_zone: r.time_zone,
            accepting_orders: r.accepting_orders,
            ticket_warn_after_s: r.ticket_warn_after_s,
            ticket_late_after_s: r.ticket_late_after_s,
            menu_version: r.menu_version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize)]
struct CategoryOut {
    id: Uuid,
    name: String,
    position: i32,
}

impl From<MenuCategory> for CategoryOut {
    fn from(c: MenuCategory) -> Self {
        CategoryOut {
            id: c.id,
            name: c.name,
            position: c.position,
        }
    }
}

#[derive(Serialize)]
struct ItemOut {
    id: Uuid,
    category_id: Uuid,
    name: String,
    description: String,
    price_cents: i64,
    available: bool,
    tags: Vec<String>,
    position: i32,
    allergens: Vec<String>,
    image_url: Option<String>,
    thumbnail_url: Option<String>,
    option_groups: Vec<options::GroupOut>,
}

impl ItemOut {
    /// The dish with its option groups (each with its options).
    fn with_groups(i: MenuItem, option_groups: Vec<options::GroupOut>) -> Self {
        ItemOut {
            id: i.id,
            category_id: i.category_id,
            name: i.name,
            description: i.description,
            price_cents: i.price_cents,
            available: i.available,
            tags: i.tags,
            position: i.position,
            allergens: i.allergens,
            image_url: i
                .image_hash
                .as_deref()
                .map(scan2order_schema::media::menu_url),
            thumbnail_url: i
                .image_hash
                .as_deref()
                .map(scan2order_schema::media::thumbnail_url),
            option_groups,
        }
    }
}

#[derive(Serialize)]
struct TableOut {
    id: Uuid,
    label: String,
    token: String,
    url: String,
    active: bool,
}

fn table_out(ctx: &AppContext, t: RestaurantTable) -> TableOut {
    TableOut {
        url: table_url(ctx, &t.token),
        id: t.id,
        label: t.label,
        token: t.token,
        active: t.active,
    }
}

fn table_url(ctx: &AppContext, token: &str) -> String {
    format!("{}/t/{token}", ctx.settings.public_base_url())
}

// ---- helpers ----------------------------------------------------------------------------------

async fn restaurant_row(ctx: &AppContext, rid: Uuid) -> ApiResult<Restaurant> {
    let mut conn = ctx.pool.get().await?;
    Restaurant::find(&mut conn, rid)
        .await?
        .ok_or_else(ApiError::not_found)
}

/// Applies a change through the restaurant's actor and keeps the token directory in step.
async fn change(ctx: &AppContext, rid: Uuid, change: AdminChange) -> ApiResult<AdminOutcome> {
    let id = RestaurantId::from(rid);
    let applied = ctx.engine.ask(id, ApplyAdminChange(change)).await??;
    ctx.engine.forget_tokens(&applied.dead_tokens).await;
    ctx.engine.remember_tables(id, &applied.new_tables);
    Ok(applied.outcome)
}

fn unexpected(outcome: AdminOutcome) -> ApiError {
    ApiError::internal("admin change", format!("unexpected outcome {outcome:?}"))
}

// ---- restaurants ------------------------------------------------------------------------------

/// How many of the busiest restaurants the shard endpoint lists.
const BUSIEST_SHOWN: usize = 20;

async fn shards(ctx: web::Data<AppContext>) -> ApiResult<HttpResponse> {
    let mut restaurants = ctx.engine.restaurant_stats().await;
    restaurants.sort_by_key(|r| std::cmp::Reverse(r.messages));
    restaurants.truncate(BUSIEST_SHOWN);
    Ok(HttpResponse::Ok().json(json!({
        "shards": ctx.engine.shard_stats(),
        "restaurants": restaurants,
        "activations": ctx.engine.activations(),
        "restarts": ctx.engine.restarts(),
        "passivations": ctx.engine.passivations(),
        "node_id": ctx.engine.node_id(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRestaurant {
    slug: String,
    name: String,
    currency: String,
    time_zone: String,
    accepting_orders: Option<bool>,
    ticket_warn_after_s: Option<i32>,
    ticket_late_after_s: Option<i32>,
}

async fn create_restaurant(
    ctx: web::Data<AppContext>,
    body: Json<NewRestaurant>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let warn = threshold(
        "ticket_warn_after_s",
        b.ticket_warn_after_s.unwrap_or(DEFAULT_TICKET_WARN_AFTER_S),
    )?;
    let late = threshold(
        "ticket_late_after_s",
        b.ticket_late_after_s.unwrap_or(DEFAULT_TICKET_LATE_AFTER_S),
    )?;
    if late < warn {
        return Err(ApiError::invalid(
            "ticket_late_after_s: must not be below ticket_warn_after_s",
        ));
    }
    let now = Utc::now();
    let r = Restaurant {
        id: Uuid::new_v4(),
        slug: slug(&b.slug)?,
        name: text("name", &b.name, MAX_NAME)?,
        currency: currency(&b.currency)?,
        time_zone: time_zone(&b.time_zone)?,
        accepting_orders: b.accepting_orders.unwrap_or(true),
        menu_version: 1,
        ticket_warn_after_s: warn,
        ticket_late_after_s: late,
        created_at: now,
        updated_at: now,
    };
    let mut conn = ctx.pool.get().await?;
    match r.insert(&mut conn).await {
        Ok(()) => {}
        Err(e) if unique_violation(&e) => {
            return Err(ApiError::conflict(
                "slug_taken",
                "another restaurant uses this slug",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(restaurant_id = %r.id, slug = %r.slug, "restaurant created");
    Ok(HttpResponse::Created().json(RestaurantOut::from(r)))
}

async fn list_restaurants(ctx: web::Data<AppContext>) -> ApiResult<HttpResponse> {
    let mut conn = ctx.pool.get().await?;
    let all: Vec<RestaurantOut> = Restaurant::all(&mut conn)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "restaurants": all })))
}

async fn get_restaurant(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(RestaurantOut::from(restaurant_row(&ctx, *rid).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestaurantChanges {
    name: Option<String>,
    currency: Option<String>,
    time_zone: Option<String>,
    accepting_orders: Option<bool>,
    ticket_warn_after_s: Option<i32>,
    ticket_late_after_s: Option<i32>,
}

async fn update_restaurant(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
    body: Json<RestaurantChanges>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let patch = RestaurantPatch {
        name: b
            .name
            .as_deref()
            .map(|v| text("name", v, MAX_NAME))
            .transpose()?,
        currency: b.currency.as_deref().map(currency).transpose()?,
        time_zone: b.time_zone.as_deref().map(time_zone).transpose()?,
        accepting_orders: b.accepting_orders,
        ticket_warn_after_s: b
            .ticket_warn_after_s
            .map(|v| threshold("ticket_warn_after_s", v))
            .transpose()?,
        ticket_late_after_s: b
            .ticket_late_after_s
            .map(|v| threshold("ticket_late_after_s", v))
            .transpose()?,
    };
    match change(&ctx, *rid, AdminChange::UpdateRestaurant(patch)).await? {
        AdminOutcome::Restaurant(r) => Ok(HttpResponse::Ok().json(RestaurantOut::from(r))),
        other => Err(unexpected(other)),
    }
}

// ---- categories -------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryBody {
    name: Option<String>,
    position: Option<i32>,
}

async fn create_category(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
    body: Json<CategoryBody>,
) -> ApiResult<HttpResponse> {
    let name = text("name", body.name.as_deref().unwrap_or(""), MAX_NAME)?;
    let pos = body.position.map(|p| position("position", p)).transpose()?;
    match change(
        &ctx,
        *rid,
        AdminChange::CreateCategory {
            name,
            position: pos,
        },
    )
    .await?
    {
        AdminOutcome::Category(c) => Ok(HttpResponse::Created().json(CategoryOut::from(c))),
        other => Err(unexpected(other)),
    }
}

async fn list_categories(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    restaurant_row(&ctx, *rid).await?;
    let mut conn = ctx.pool.get().await?;
    let cats: Vec<CategoryOut> = MenuCategory::for_restaurant(&mut conn, *rid)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "categories": cats })))
}

async fn get_category(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, cid) = path.into_inner();
    let mut conn = ctx.pool.get().await?;
    let cat: MenuCategory = menu_categories::table
        .filter(menu_categories::id.eq(cid))
        .filter(menu_categories::restaurant_id.eq(rid))
        .select(MenuCategory::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(CategoryOut::from(cat)))
}

async fn update_category(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
    body: Json<CategoryBody>,
) -> ApiResult<HttpResponse> {
    let (rid, cid) = path.into_inner();
    let name = body
        .name
        .as_deref()
        .map(|n| text("name", n, MAX_NAME))
        .transpose()?;
    let pos = body.position.map(|p| position("position", p)).transpose()?;
    match change(
        &ctx,
        rid,
        AdminChange::UpdateCategory {
            id: cid,
            name,
            position: pos,
        },
    )
    .await?
    {
        AdminOutcome::Category(c) => Ok(HttpResponse::Ok().json(CategoryOut::from(c))),
        other => Err(unexpected(other)),
    }
}

async fn delete_category(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, cid) = path.into_inner();
    change(&ctx, rid, AdminChange::DeleteCategory { id: cid }).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- menu items -------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    category_id: Option<Uuid>,
    name: Option<String>,
    description: Option<String>,
    price_cents: Option<i64>,
    available: Option<bool>,
    tags: Option<Vec<String>>,
    position: Option<i32>,
    allergens: Option<Vec<String>>,
}

impl ItemBody {
    fn validate(self) -> ApiResult<ItemFields> {
        Ok(ItemFields {
            category_id: self.category_id,
            name: self
                .name
                .as_deref()
                .map(|n| text("name", n, MAX_NAME))
                .transpose()?,
            description: self.description.as_deref().map(description).transpose()?,
            price_cents: self.price_cents.map(price).transpose()?,
            available: self.available,
            tags: self.tags.map(tags).transpose()?,
            position: self.position.map(|p| position("position", p)).transpose()?,
            allergens: self.allergens.map(allergens).transpose()?,
        })
    }
}

async fn create_item(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
    body: Json<ItemBody>,
) -> ApiResult<HttpResponse> {
    let fields = body.into_inner().validate()?;
    if fields.category_id.is_none() {
        return Err(ApiError::invalid("category_id: required"));
    }
    if fields.name.is_none() {
        return Err(ApiError::invalid("name: required"));
    }
    if fields.price_cents.is_none() {
        return Err(ApiError::invalid("price_cents: required"));
    }
    match change(&ctx, *rid, AdminChange::CreateItem(fields)).await? {
        AdminOutcome::Item(i) => {
            Ok(HttpResponse::Created().json(ItemOut::with_groups(i, Vec::new())))
        }
        other => Err(unexpected(other)),
    }
}

async fn list_items(ctx: web::Data<AppContext>, rid: web::Path<Uuid>) -> ApiResult<HttpResponse> {
    restaurant_row(&ctx, *rid).await?;
    let mut conn = ctx.pool.get().await?;
    let mut groups = options::restaurant_groups(&mut conn, *rid).await?;
    let items: Vec<ItemOut> = MenuItem::for_restaurant(&mut conn, *rid)
        .await?
        .into_iter()
        .map(|i| {
            let mine = groups.remove(&i.id).unwrap_or_default();
            ItemOut::with_groups(i, mine)
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn get_item(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, iid) = path.into_inner();
    let mut conn = ctx.pool.get().await?;
    let item: MenuItem = menu_items::table
        .filter(menu_items::id.eq(iid))
        .filter(menu_items::restaurant_id.eq(rid))
        .filter(menu_items::deleted_at.is_null())
        .select(MenuItem::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(ApiError::not_found)?;
    let groups = options::item_groups(&mut conn, rid, iid).await?;
    Ok(HttpResponse::Ok().json(ItemOut::with_groups(item, groups)))
}

async fn update_item(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
    body: Json<ItemBody>,
) -> ApiResult<HttpResponse> {
    let (rid, iid) = path.into_inner();
    let fields = body.into_inner().validate()?;
    match change(&ctx, rid, AdminChange::UpdateItem { id: iid, fields }).await? {
        AdminOutcome::Item(i) => {
            let mut conn = ctx.pool.get().await?;
            let groups = options::item_groups(&mut conn, rid, iid).await?;
            Ok(HttpResponse::Ok().json(ItemOut::with_groups(i, groups)))
        }
        other => Err(unexpected(other)),
    }
}

async fn delete_item(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, iid) = path.into_inner();
    change(&ctx, rid, AdminChange::DeleteItem { id: iid }).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- tables -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableBody {
    label: Option<String>,
    active: Option<bool>,
}

async fn create_table(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
    body: Json<TableBody>,
) -> ApiResult<HttpResponse> {
    let label = text("label", body.label.as_deref().unwrap_or(""), MAX_LABEL)?;
    match change(&ctx, *rid, AdminChange::CreateTable { label }).await? {
        AdminOutcome::Table(t) => Ok(HttpResponse::Created().json(table_out(&ctx, t))),
        other => Err(unexpected(other)),
    }
}

async fn list_tables(ctx: web::Data<AppContext>, rid: web::Path<Uuid>) -> ApiResult<HttpResponse> {
    restaurant_row(&ctx, *rid).await?;
    let mut conn = ctx.pool.get().await?;
    let tables: Vec<TableOut> = RestaurantTable::for_restaurant(&mut conn, *rid)
        .await?
        .into_iter()
        .map(|t| table_out(&ctx, t))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "tables": tables })))
}

async fn table_row(ctx: &AppContext, rid: Uuid, tid: Uuid) -> ApiResult<RestaurantTable> {
    let mut conn = ctx.pool.get().await?;
    restaurant_tables::table
        .filter(restaurant_tables::id.eq(tid))
        .filter(restaurant_tables::restaurant_id.eq(rid))
        .filter(restaurant_tables::deleted_at.is_null())
        .select(RestaurantTable::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(ApiError::not_found)
}

async fn get_table(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, tid) = path.into_inner();
    let t = table_row(&ctx, rid, tid).await?;
    Ok(HttpResponse::Ok().json(table_out(&ctx, t)))
}

async fn update_table(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
    body: Json<TableBody>,
) -> ApiResult<HttpResponse> {
    let (rid, tid) = path.into_inner();
    let label = body
        .label
        .as_deref()
        .map(|l| text("label", l, MAX_LABEL))
        .transpose()?;
    match change(
        &ctx,
        rid,
        AdminChange::UpdateTable {
            id: tid,
            label,
            active: body.active,
        },
    )
    .await?
    {
        AdminOutcome::Table(t) => Ok(HttpResponse::Ok().json(table_out(&ctx, t))),
        other => Err(unexpected(other)),
    }
}

async fn delete_table(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, tid) = path.into_inner();
    change(&ctx, rid, AdminChange::DeleteTable { id: tid }).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn rotate_token(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, tid) = path.into_inner();
    match change(&ctx, rid, AdminChange::RotateToken { id: tid }).await? {
        AdminOutcome::Table(t) => {
            tracing::info!(restaurant_id = %rid, table_id = %tid, "table token rotated");
            Ok(HttpResponse::Ok().json(table_out(&ctx, t)))
        }
        other => Err(unexpected(other)),
    }
}

async fn table_qr_svg(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, tid) = path.into_inner();
    let t = table_row(&ctx, rid, tid).await?;
    let svg = qr::svg(&table_url(&ctx, &t.token))?;
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "no-store"))
        .body(svg))
}

async fn table_qr_png(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, tid) = path.into_inner();
    let t = table_row(&ctx, rid, tid).await?;
    let png = qr::png(&table_url(&ctx, &t.token))?;
    Ok(HttpResponse::Ok()
        .content_type("image/png")
        .insert_header(("Cache-Control", "no-store"))
        .body(png))
}

async fn qr_sheet(ctx: web::Data<AppContext>, rid: web::Path<Uuid>) -> ApiResult<HttpResponse> {
    let r = restaurant_row(&ctx, *rid).await?;
    let mut conn = ctx.pool.get().await?;
    let tables = RestaurantTable::for_restaurant(&mut conn, *rid).await?;
    let cards: Vec<(String, String)> = tables
        .into_iter()
        .filter(|t| t.active)
        .map(|t| (t.label, table_url(&ctx, &t.token)))
        .collect();
    let html = qr::sheet(&r.name, &cards)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(html))
}

// ---- staff ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStaff {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffChanges {
    password: String,
}

async fn hash_off_loop(password: String) -> ApiResult<String> {
    auth::on_password_thread(move || hash_password(&password))
        .await?
        .map_err(|e| ApiError::internal("password hashing", e))
}

async fn create_staff(
    ctx: web::Data<AppContext>,
    rid: web::Path<Uuid>,
    body: Json<NewStaff>,
) -> ApiResult<HttpResponse> {
    restaurant_row(&ctx, *rid).await?;
    let name = username(&body.username)?;
    let hash = hash_off_loop(password(&body.password)?).await?;
    let row = StaffUserRow {
        id: Uuid::new_v4(),
        username: name,
        password_hash: hash,
        role: Role::Chef,
        restaurant_id: Some(*rid),
        created_at: Utc::now(),
    };
    let mut conn = ctx.pool.get().await?;
    match diesel::insert_into(staff_users::table)
        .values(&row)
        .execute(&mut conn)
        .await
    {
        Ok(_) => {}
        Err(e) if unique_violation(&e) => {
            return Err(ApiError::conflict(
                "username_taken",
                "another account uses this username",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(HttpResponse::Created().json(row.to_wire()))
}

async fn list_staff(ctx: web::Data<AppContext>, rid: web::Path<Uuid>) -> ApiResult<HttpResponse> {
    restaurant_row(&ctx, *rid).await?;
    let mut conn = ctx.pool.get().await?;
    let rows: Vec<StaffUserRow> = staff_users::table
        .filter(staff_users::restaurant_id.eq(*rid))
        .order(staff_users::username.asc())
        .select(StaffUserRow::as_select())
        .load(&mut conn)
        .await?;
    let out: Vec<_> = rows.iter().map(StaffUserRow::to_wire).collect();
    Ok(HttpResponse::Ok().json(json!({ "staff": out })))
}

async fn chef_of(ctx: &AppContext, rid: Uuid, uid: Uuid) -> ApiResult<StaffUserRow> {
    let mut conn = ctx.pool.get().await?;
    staff_users::table
        .filter(staff_users::id.eq(uid))
        .filter(staff_users::restaurant_id.eq(rid))
        .select(StaffUserRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(ApiError::not_found)
}

/// Ends a chef's sessions and closes their open kitchen sockets.
async fn end_sessions(ctx: &AppContext, rid: Uuid, uid: Uuid) -> ApiResult<()> {
    let mut conn = ctx.pool.get().await?;
    StaffSession::delete_for_user(&mut conn, uid).await?;
    ctx.sessions.end_staff_user(uid);
    ctx.engine
        .staff_user_ended(RestaurantId::from(rid), StaffId::from(uid))
        .await;
    Ok(())
}

async fn update_staff(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
    body: Json<StaffChanges>,
) -> ApiResult<HttpResponse> {
    let (rid, uid) = path.into_inner();
    let row = chef_of(&ctx, rid, uid).await?;
    let hash = hash_off_loop(password(&body.password)?).await?;
    {
        let mut conn = ctx.pool.get().await?;
        diesel::update(staff_users::table.find(uid))
            .set(staff_users::password_hash.eq(hash))
            .execute(&mut conn)
            .await?;
    }
    end_sessions(&ctx, rid, uid).await?;
    tracing::info!(user_id = %uid, "chef password changed; sessions ended");
    Ok(HttpResponse::Ok().json(row.to_wire()))
}

async fn delete_staff(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, uid) = path.into_inner();
    chef_of(&ctx, rid, uid).await?;
    end_sessions(&ctx, rid, uid).await?;
    let mut conn = ctx.pool.get().await?;
    diesel::delete(staff_users::table.find(uid))
        .execute(&mut conn)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
