//! `WS /ws/table/{table_token}` and `WS /ws/kitchen` on actix-web, through the actix-ws transport
//! ([`crate::ws`]): the `/ws/` requests that reach actix-web (a socket opened on a reused keep-alive
//! connection, or every socket when `sockets.transport = "actix-ws"`). Who may open which socket is
//! decided in [`crate::socket_admission`], for this transport and the lean one alike.

use std::borrow::Cow;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::auth::RequestParts;
use crate::context::AppContext;
use crate::socket_admission::{resolve, Decision, SocketTarget};
use crate::ws::{refuse, start_session};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/table/{token}", web::get().to(table_socket))
        .route("/ws/kitchen", web::get().to(kitchen_socket));
}

async fn upgrade(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    body: web::Payload,
    target: SocketTarget<'_>,
) -> Result<HttpResponse, actix_web::Error> {
    let decision = resolve(&ctx, &target, &RequestParts::of(&req)).await?;
    match decision {
        Decision::Start(spec) => start_session(&req, body, spec, &ctx.settings.sockets),
        Decision::Refuse(code, why) => refuse(&req, body, code, why),
    }
}

async fn table_socket(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    token: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let target = SocketTarget::Table(Cow::Owned(token.into_inner()));
    upgrade(ctx, req, body, target).await
}

async fn kitchen_socket(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    upgrade(ctx, req, body, SocketTarget::Kitchen).await
}
