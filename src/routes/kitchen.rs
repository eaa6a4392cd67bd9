//! Staff calls: login, logout and `me`; the kitchen's live orders, status changes, sold-out toggles and
//! pausing orders. Chefs act on their own restaurant; admins name one with `?restaurant_id=`.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration as ChronoDuration, Utc};
use scan2order_actors::restaurant::{
    ChangeStatus, GetKitchenInfo, GetLiveOrders, SetAccepting, SetAvailability,
    SetOptionAvailability,
};
use scan2order_schema::domain::{MenuItemId, MenuOptionId, OrderId, RestaurantId};
use scan2order_schema::models::{StaffSession, StaffUserRow};
use scan2order_schema::tokens::{new_session_token, token_hash};
use scan2order_schema::wire::{
    LoginRequest, LoginResponse, OrderList, SetAcceptingRequest, SetAvailableRequest,
    SetStatusRequest,
};
use serde::Deserialize;

use crate::auth::{self, verify_password, Staff, SESSION_COOKIE};
use crate::context::AppContext;
use crate::error::{ApiError, ApiResult};
use crate::extract::{optional_idempotency_key, Json, Query};

/// Longest username and password looked at; longer ones cannot be ours and cost argon2 time.
const MAX_USERNAME: usize = 64;
const MAX_PASSWORD: usize = 256;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/login", web::post().to(login))
        .service(
            web::scope("/auth")
                .wrap(from_fn(auth::staff_required))
                .route("/logout", web::post().to(logout))
                .route("/me", web::get().to(me)),
        )
        // The hot write route: its session may come from memory (the status write confirms it).
        // Registered before the `/kitchen` scope, which would otherwise claim the path.
        .service(
            web::resource("/kitchen/orders/{id}/status")
                .wrap(from_fn(auth::staff_write_required))
                .route(web::post().to(set_status)),
        )
        .service(
            web::scope("/kitchen")
                .wrap(from_fn(auth::staff_required))
                .route("/orders", web::get().to(live_orders))
                .route("/menu-items/{id}", web::patch().to(set_available))
                .route("/options/{id}", web::patch().to(set_option_available))
                .route("/restaurant", web::patch().to(set_accepting))
                .route("/restaurant", web::get().to(kitchen_info)),
        );
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong username or password",
    )
}

fn session_cookie(value: String, max_age: CookieDuration, secure: bool) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(max_age)
        .finish()
}

/// `POST /api/v1/auth/login`: argon2id check off the event loop; the same answer for unknown users and
/// wrong passwords.
async fn login(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    body: Json<LoginRequest>,
) -> ApiResult<HttpResponse> {
    // Login CSRF: a browser always sends Origin on POST; a foreign one is refused.
    if req.headers().contains_key(actix_web::http::header::ORIGIN) && !auth::same_origin(&req) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "cross-site request refused",
        ));
    }
    let LoginRequest { username, password } = body.into_inner();
    if username.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
        return Err(invalid_credentials());
    }
    ctx.limits.check_account(&username)?;
    let user = {
        let mut conn = ctx.pool.get().await?;
        StaffUserRow::by_username(&mut conn, &username).await?
    };
    let hash = user.as_ref().map_or_else(
        || auth::dummy_hash().to_string(),
        |u| u.password_hash.clone(),
    );
    let ok = auth::on_password_thread(move || verify_password(&password, &hash)).await?;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            ctx.limits.login_failed(&username)?;
            return Err(invalid_credentials());
        }
    };
    let token = new_session_token();
    let now = Utc::now();
    let hours = ctx.settings.auth.staff_session_hours;
    let mut conn = ctx.pool.get().await?;
    StaffSession {
        token_hash: token_hash(&token),
        user_id: user.id,
        created_at: now,
        expires_at: now + ChronoDuration::hours(hours),
    }
    .insert(&mut conn)
    .await?;
    tracing::info!(user_id = %user.id, role = %user.role, "staff signed in");
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(
            token.clone(),
            CookieDuration::hours(hours),
            ctx.settings.secure_cookies(),
        ))
        .json(LoginResponse {
            token,
            user: user.to_wire(),
        }))
}

/// `POST /api/v1/auth/logout`: the token stops working at once.
async fn logout(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    staff: Staff,
) -> ApiResult<HttpResponse> {
    let (token, _) = auth::staff_token(&req, false).ok_or_else(ApiError::unauthenticated)?;
    let mut conn = ctx.pool.get().await?;
    StaffSession::delete(&mut conn, &token_hash(&token)).await?;
    ctx.sessions.end_staff_session(&token);
    ctx.engine.staff_session_ended(&token_hash(&token)).await;
    tracing::info!(user_id = %staff.id, "staff signed out");
    Ok(HttpResponse::NoContent()
        .cookie(session_cookie(
            String::new(),
            CookieDuration::ZERO,
            ctx.settings.secure_cookies(),
        ))
        .finish())
}

async fn me(staff: Staff) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(staff.row.to_wire()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestaurantQuery {
    pub restaurant_id: Option<RestaurantId>,
}

/// `GET /api/v1/kitchen/orders`: live orders, oldest first, phones masked.
async fn live_orders(
    ctx: web::Data<AppContext>,
    staff: Staff,
    q: Query<RestaurantQuery>,
) -> ApiResult<HttpResponse> {
    let rid = staff.kitchen_restaurant(q.restaurant_id)?;
    let orders = ctx.engine.ask(rid, GetLiveOrders).await?;
    Ok(HttpResponse::Ok().json(OrderList { orders }))
}

/// `GET /api/v1/kitchen/restaurant` (extension): the restaurant and its full menu for the display.
async fn kitchen_info(
    ctx: web::Data<AppContext>,
    staff: Staff,
    q: Query<RestaurantQuery>,
) -> ApiResult<HttpResponse> {
    let rid = staff.kitchen_restaurant(q.restaurant_id)?;
    let body = ctx.engine.ask(rid, GetKitchenInfo).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// `POST /api/v1/kitchen/orders/{id}/status`, with an optional `Idempotency-Key`: the same key again
/// (a retry whose answer was lost) is answered with the order instead of `invalid_transition`. Without
/// one the server names the request itself, so its own re-sends across the fleet are recognised.
async fn set_status(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    staff: Staff,
    id: web::Path<OrderId>,
    q: Query<RestaurantQuery>,
    body: Json<SetStatusRequest>,
) -> ApiResult<HttpResponse> {
    let rid = staff.kitchen_restaurant(q.restaurant_id)?;
    let request_id = optional_idempotency_key(&req)?
        .unwrap_or_else(|| format!("server:{}", uuid::Uuid::now_v7()));
    let order = ctx
        .engine
        .ask(
            rid,
            ChangeStatus {
                order_id: *id,
                status: body.status,
                by: Some(staff.id),
                session: staff.unconfirmed.clone(),
                request_id: Some(request_id),
                allergy_ack: body.allergy_ack,
            },
        )
        .await??;
    Ok(HttpResponse::Ok().json(order))
}

/// `PATCH /api/v1/kitchen/menu-items/{id}`: every open guest socket hears it.
async fn set_available(
    ctx: web::Data<AppContext>,
    staff: Staff,
    id: web::Path<MenuItemId>,
    q: Query<RestaurantQuery>,
    body: Json<SetAvailableRequest>,
) -> ApiResult<HttpResponse> {
    let rid = staff.kitchen_restaurant(q.restaurant_id)?;
    let item = ctx
        .engine
        .ask(
            rid,
            SetAvailability {
                item_id: *id,
                available: body.available,
            },
        )
        .await??;
    Ok(HttpResponse::Ok().json(item))
}

/// `PATCH /api/v1/kitchen/options/{id}`: an option sold out or back; sockets hear `menu_option`.
async fn set_option_available(
    ctx: web::Data<AppContext>,
    staff: Staff,
    id: web::Path<MenuOptionId>,
    q: Query<RestaurantQuery>,
    body: Json<SetAvailableRequest>,
) -> ApiResult<HttpResponse> {
    let rid = staff.kitchen_restaurant(q.restaurant_id)?;
    let option = ctx
        .engine
        .ask(
            rid,
            SetOptionAvailability {
                option_id: *id,
                available: body.available,
            },
        )
        .await??;
    Ok(HttpResponse::Ok().json(option))
}

/// `PATCH /api/v1/kitchen/restaurant`: pause or resume ordering; guests hear it.
async fn set_accepting(
    ctx: web::Data<AppContext>,
    staff: Staff,
    q: Query<RestaurantQuery>,
    body: Json<SetAcceptingRequest>,
) -> ApiResult<HttpResponse> {
    let rid = staff.kitchen_restaurant(q.restaurant_id)?;
    let restaurant = ctx
        .engine
        .ask(
            rid,
            SetAccepting {
                accepting: body.accepting_orders,
            },
        )
        .await??;
    Ok(HttpResponse::Ok().json(restaurant))
}
