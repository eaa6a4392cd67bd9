//! `WS /ws/table/{table_token}` and `WS /ws/kitchen`. Bad tokens are accepted only to be closed with 1008.

use actix_web::{web, HttpRequest, HttpResponse};
use scan2order_actors::restaurant::{Audience, EngineError};
use scan2order_actors::sink::close_code;
use serde::Deserialize;

use crate::auth::authenticate_staff;
use crate::context::AppContext;
use crate::error::ApiError;
use crate::ws::{refuse, start_session, SessionSpec};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/table/{token}", web::get().to(table_socket))
        .route("/ws/kitchen", web::get().to(kitchen_socket));
}

/// Query of a socket URL: resume position (extension: resume without waiting for a message), and for
/// the kitchen the token and an admin's restaurant.
#[derive(Deserialize)]
struct SocketQuery {
    epoch: Option<String>,
    since: Option<u64>,
    restaurant_id: Option<String>,
}

impl SocketQuery {
    fn resume(&self) -> Option<(String, u64)> {
        match (&self.epoch, self.since) {
            (Some(e), Some(s)) if !e.is_empty() && e.len() <= 64 => Some((e.clone(), s)),
            _ => None,
        }
    }
}

fn parse_query(req: &HttpRequest) -> SocketQuery {
    web::Query::<SocketQuery>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or(SocketQuery {
            epoch: None,
            since: None,
            restaurant_id: None,
        })
}

async fn table_socket(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    token: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let q = parse_query(&req);
    match ctx.engine.resolve_table(&token).await {
        Ok((restaurant, table)) => start_session(
            &req,
            body,
            SessionSpec {
                restaurant,
                audience: Audience::Table(table.table_id),
                table_token: Some(token.into_inner()),
                staff: None,
                resume: q.resume(),
            },
            &ctx.settings.sockets,
        ),
        Err(EngineError::NotFound) => refuse(&req, body, close_code::POLICY, "unknown table"),
        Err(e) => Err(ApiError::from(e).into()),
    }
}

async fn kitchen_socket(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let q = parse_query(&req);
    let staff = match authenticate_staff(&req, true).await {
        Ok(s) => s,
        Err(e) if e.status.is_client_error() => {
            return refuse(&req, body, close_code::POLICY, "not signed in")
        }
        Err(e) => return Err(e.into()),
    };
    // Cross-site WebSocket hijacking: a page of another origin (a sibling subdomain is "same site",
    // so SameSite does not stop it) must not ride the session cookie into a kitchen socket.
    if staff.via_cookie && !crate::auth::same_origin(&req) {
        return refuse(&req, body, close_code::POLICY, "cross-site socket refused");
    }
    let asked = match q.restaurant_id.as_deref().map(str::parse) {
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return refuse(&req, body, close_code::POLICY, "unknown restaurant"),
        None => None,
    };
    let Ok(restaurant_id) = staff.kitchen_restaurant(asked) else {
        return refuse(&req, body, close_code::POLICY, "not your restaurant");
    };
    let restaurant = match ctx.engine.restaurant(restaurant_id).await {
        Ok(addr) => addr,
        Err(EngineError::NotFound) => {
            return refuse(&req, body, close_code::POLICY, "unknown restaurant")
        }
        Err(e) => return Err(ApiError::from(e).into()),
    };
    start_session(
        &req,
        body,
        SessionSpec {
            restaurant,
            audience: Audience::Kitchen,
            table_token: None,
            staff: Some(staff.id),
            resume: q.resume(),
        },
        &ctx.settings.sockets,
    )
}
