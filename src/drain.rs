//! Clean shutdown, HTTP side: once [`AppHandle::shutdown`](crate::startup::AppHandle::shutdown) has begun,
//! requests that would change something (orders, status changes, menu and admin edits) are refused at
//! once with 503 `unavailable` and `Retry-After`, which every client retries (guests with the same
//! `Idempotency-Key`) against the next process; reads are still served. Every answer then carries
//! `Connection: close`, so keep-alive connections end instead of holding the shutdown open.
//!
//! What was taken before the flag went up is committed and acknowledged: the writers drain it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::context::AppContext;
use crate::error::ApiError;

/// Middleware: refuses writes while the engine drains; closes connections after each answer.
pub async fn refuse_while_draining(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let draining = req
        .app_data::<web::Data<AppContext>>()
        .is_some_and(|ctx| ctx.engine.draining());
    if !draining {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut res = if write && req.path().starts_with("/api/") {
        let err = ApiError::unavailable().with_retry_after(1);
        req.into_response(err.error_response())
            .map_into_right_body()
    } else {
        next.call(req).await?.map_into_left_body()
    };
    res.response_mut()
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    Ok(res)
}
