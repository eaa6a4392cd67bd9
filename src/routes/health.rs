//! `/healthz` (the process answers) and `/readyz` (the database answers, every shard runs, and in a
//! fleet NATS answers).

use std::time::Duration;

use actix_web::{web, HttpResponse};
use diesel_async::RunQueryDsl;
use serde_json::json;

use crate::context::AppContext;
use crate::error::ApiError;

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn database_answers(ctx: &AppContext) -> bool {
    let check = async {
        let mut conn = ctx.pool.get().await.ok()?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
    };
    matches!(
        tokio::time::timeout(READY_TIMEOUT, check).await,
        Ok(Some(_))
    )
}

async fn readyz(ctx: web::Data<AppContext>) -> Result<HttpResponse, ApiError> {
    let database = database_answers(&ctx).await;
    let shards = ctx.engine.shards_running() && !ctx.engine.draining();
    // In a fleet, a node cut off from NATS can neither forward nor relay.
    let bus = ctx.engine.bus_ready(READY_TIMEOUT).await;
    if database && shards && bus != Some(false) {
        let mut body = json!({"status": "ready", "database": true, "shards": true});
        if bus.is_some() {
            body["nats"] = json!(true);
        }
        Ok(HttpResponse::Ok().json(body))
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "not ready: database {}, nats {}, shards {}",
                if database { "up" } else { "down" },
                match bus {
                    Some(true) => "up",
                    Some(false) => "down",
                    None => "not used",
                },
                if shards {
                    "running"
                } else if ctx.engine.draining() {
                    "shutting down"
                } else {
                    "stopped"
                }
            ),
        ))
    }
}
