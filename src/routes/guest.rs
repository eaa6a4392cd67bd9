//! Guest calls: the table menu, one-time codes (their logic in `crate::otp`), ordering, and a guest's
//! own orders.

use actix_web::http::{header, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use scan2order_actors::notifier::TemplateMessage;
use scan2order_actors::restaurant::{EngineError, GetTableMenu, PlaceOrder};
use scan2order_schema::domain::Phone;
use scan2order_schema::models::StoredOrder;
use scan2order_schema::wire::{
    OrdersPage, OtpSendRequest, OtpSendResponse, OtpVerifyRequest, OtpVerifyResponse,
    PlaceOrderRequest,
};
use serde::Deserialize;
use std::sync::LazyLock;
use uuid::Uuid;

use crate::auth::{self, Customer};
use crate::byte_cache::ByteCache;
use crate::context::AppContext;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::otp::{self, NotSent, Refused};

/// Guest menus as sent gzip-compressed, by `ETag` and table (its JSON: a table's label can change
/// without a new menu version), so each body is compressed once and a read of a cached one copies
/// nothing of the menu. A real menu (150 dishes with choices) is about 230 KB of JSON and 45 KB
/// compressed.
static MENU_GZIP: LazyLock<ByteCache<(String, String)>> =
    LazyLock::new(|| ByteCache::new(MENU_GZIP_BYTES));
const MENU_GZIP_BYTES: usize = 64 * 1024 * 1024;
/// Bodies smaller than this are sent as they are (compressing them saves less than it costs).
const GZIP_FROM_BYTES: usize = 1024;

/// Orders per page of a guest's history.
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tables/{token}", web::get().to(table_menu))
        .route("/otp/send", web::post().to(otp_send))
        .route("/otp/verify", web::post().to(otp_verify))
        .service(
            web::resource("/orders")
                .wrap(from_fn(auth::customer_write_required))
                .route(web::post().to(place_order)),
        )
        .route("/orders/{id}", web::get().to(get_order))
        .route("/me/orders", web::get().to(my_orders));
}

fn phone_field(raw: &str) -> ApiResult<Phone> {
    Phone::parse(raw).map_err(|_| {
        ApiError::invalid(
            "phone: must be in E.164 form, + then 8 to 15 digits (spaces and dashes allowed)",
        )
    })
}

/// `GET /api/v1/tables/{token}`: served from the restaurant actor's memory, with an `ETag`.
async fn table_menu(
    ctx: web::Data<AppContext>,
    token: web::Path<String>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (_, table) = ctx.engine.resolve_table(&token).await?;
    let answer = ctx
        .engine
        .ask(
            table.restaurant_id,
            GetTableMenu {
                table_id: table.table_id,
                table_token: token.into_inner(),
            },
        )
        .await??;
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == answer.etag || t.trim() == "*")
        });
    let mut res = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, answer.etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, "Accept-Encoding"));
    if matches {
        return Ok(res.finish());
    }
    res.content_type("application/json");
    if answer.menu.len() < GZIP_FROM_BYTES || !crate::gzip::accepted(&req) {
        return Ok(res.body(answer.body()));
    }
    let key = (answer.etag.clone(), answer.table.clone());
    let compressed = match MENU_GZIP.get(&key) {
        Some(b) => b,
        None => {
            let body = answer.body();
            let b = web::block(move || crate::gzip::compress(body.as_bytes()))
                .await
                .map_err(|e| ApiError::internal("menu compression", e))?
                .map_err(|e| ApiError::internal("menu compression", e))?;
            let b = web::Bytes::from(b);
            MENU_GZIP.put(key, b.clone());
            b
        }
    };
    res.insert_header((header::CONTENT_ENCODING, "gzip"));
    Ok(res.body(compressed))
}

/// `POST /api/v1/otp/send`: a 6-digit code, stored hashed, sent only to WhatsApp.
async fn otp_send(
    ctx: web::Data<AppContext>,
    body: Json<OtpSendRequest>,
) -> ApiResult<HttpResponse> {
    let phone = phone_field(&body.phone)?;
    let auth = &ctx.settings.auth;
    let mut conn = ctx.pool.get().await?;
    let code = match otp::issue(&mut conn, &phone, auth, &ctx.settings.rate_limits).await {
        Ok(code) => code,
        Err(NotSent::Wait(wait)) => {
            return Err(ApiError::rate_limited(wait.num_seconds().max(1) as u64))
        }
        Err(NotSent::Db(e)) => return Err(e.into()),
    };
    drop(conn);
    otp::deliver(
        ctx.sender.clone(),
        TemplateMessage {
            to: phone.digits().to_string(),
            template: ctx.settings.whatsapp.otp_template.clone(),
            body_params: vec![code.clone()],
            code_button: Some(code),
        },
    );
    Ok(HttpResponse::Accepted().json(OtpSendResponse {
        expires_in_s: auth.otp_ttl_s as u64,
        resend_after_s: auth.otp_resend_after_s as u64,
    }))
}

/// `POST /api/v1/otp/verify`: constant-time check, 5 attempts per code, then a 30-day customer token.
async fn otp_verify(
    ctx: web::Data<AppContext>,
    body: Json<OtpVerifyRequest>,
) -> ApiResult<HttpResponse> {
    let phone = phone_field(&body.phone)?;
    let mut conn = ctx.pool.get().await?;
    match otp::verify(&mut conn, &phone, body.code.trim(), &ctx.settings.auth).await {
        Ok(v) => Ok(HttpResponse::Ok().json(OtpVerifyResponse {
            customer_token: v.token,
            phone: phone.as_str().to_string(),
            expires_at: v.expires_at,
        })),
        Err(Refused::Invalid) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "that code is not right",
        )),
        Err(Refused::Expired) => Err(ApiError::new(
            StatusCode::GONE,
            "code_expired",
            "that code has expired; ask for a new one",
        )),
        Err(Refused::TooManyAttempts) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many wrong codes; ask for a new one",
        )),
        Err(Refused::Db(e)) => Err(e.into()),
    }
}

pub use crate::extract::idempotency_key;

/// `POST /api/v1/orders`: validated and priced by the restaurant actor, answered after the commit.
async fn place_order(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    customer: Customer,
    body: Json<PlaceOrderRequest>,
) -> ApiResult<HttpResponse> {
    let key = idempotency_key(&req)?;
    let body = body.into_inner();
    let (_, table) = ctx
        .engine
        .resolve_table(&body.table_token)
        .await
        .map_err(|e| match e {
            EngineError::NotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "table_token: no such table",
            ),
            other => other.into(),
        })?;
    let placed = ctx
        .engine
        .ask(
            table.restaurant_id,
            PlaceOrder {
                table_id: table.table_id,
                table_token: body.table_token,
                phone: customer.phone,
                idempotency_key: key,
                lines: body.items,
                note: body.note,
                allergies: body.allergies,
                session: customer.unconfirmed,
            },
        )
        .await??;
    let status = if placed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(placed.order))
}

/// `GET /api/v1/orders/{id}`: only for the phone that placed it.
async fn get_order(
    ctx: web::Data<AppContext>,
    id: web::Path<Uuid>,
    customer: Customer,
) -> ApiResult<HttpResponse> {
    let mut conn = ctx.pool.get().await?;
    let order = StoredOrder::find(&mut conn, *id)
        .await?
        .filter(|o| o.row.phone == customer.phone.as_str())
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(order.to_wire(true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<i64>,
    before: Option<String>,
}

pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id.simple())
}

/// A `before` cursor as `encode_cursor` made it; `None` for anything else.
pub fn decode_cursor(s: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = s.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// `GET /api/v1/me/orders?limit=&before=`: newest first, across restaurants.
async fn my_orders(
    ctx: web::Data<AppContext>,
    q: Query<PageQuery>,
    customer: Customer,
) -> ApiResult<HttpResponse> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit: between 1 and {MAX_PAGE}"
        )));
    }
    let before = match &q.before {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| ApiError::invalid("before: not a cursor from next_before"))?,
        ),
        None => None,
    };
    let mut conn = ctx.pool.get().await?;
    let orders = StoredOrder::for_phone(&mut conn, customer.phone.as_str(), before, limit).await?;
    let next_before = (orders.len() as i64 == limit)
        .then(|| {
            orders
                .last()
                .map(|o| encode_cursor(o.row.created_at, o.row.id))
        })
        .flatten();
    Ok(HttpResponse::Ok().json(OrdersPage {
        orders: orders.iter().map(|o| o.to_wire(true)).collect(),
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("valid");
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("garbage"), None);
    }
}
