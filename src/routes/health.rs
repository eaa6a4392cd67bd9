//! `/healthz` (the process answers) and `/readyz` (the database answers and every shard runs).

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
    if database && shards {
        Ok(HttpResponse::Ok().json(json!({"status": "ready", "database": true, "shards": true})))
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "not ready: database {}, shards {}",
                if database { "up" } else { "down" },
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
