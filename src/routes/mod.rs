//! HTTP routes. Each module owns one area of PROTOCOL.md; [`configure`] mounts them all.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

pub mod admin;
pub mod cluster;
pub mod guest;
pub mod health;
pub mod kitchen;
pub mod media;
pub mod pages;
pub mod sockets;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(guest::configure)
            .configure(kitchen::configure)
            .configure(admin::configure)
            .default_service(web::to(not_found)),
    )
    .configure(sockets::configure)
    .configure(pages::configure)
    .configure(media::configure)
    .configure(health::configure)
    .configure(crate::metrics::configure);
}

pub async fn not_found(_req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        actix_web::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
    ))
}
