//! The fleet as an operator sees it (role `admin`, under the admin scope): the live nodes and who owns
//! a restaurant. One node on its own answers too, as a fleet of one.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use scan2order_schema::domain::RestaurantId;
use scan2order_schema::leases::NodeRow;
use serde_json::json;
use uuid::Uuid;

use crate::context::AppContext;
use crate::error::ApiResult;

/// `GET /api/v1/admin/cluster`: the node that answered and every live node of the fleet.
pub async fn nodes(ctx: web::Data<AppContext>) -> ApiResult<HttpResponse> {
    let me = ctx.engine.node_id().to_string();
    let mut nodes = ctx.engine.nodes().await?;
    // A node that has not reported its first heartbeat yet is still alive: it is answering.
    if !nodes.iter().any(|n| n.node_id == me) {
        nodes.push(NodeRow {
            node_id: me.clone(),
            started_at: ctx.engine.started_at(),
            last_seen: Utc::now(),
            restaurants_owned: i32::try_from(ctx.engine.active().len()).unwrap_or(i32::MAX),
            sockets: i32::try_from(scan2order_actors::session::open_sockets()).unwrap_or(i32::MAX),
        });
    }
    Ok(HttpResponse::Ok().json(json!({
        "node_id": me,
        "nodes": nodes,
        "lease_takeovers": ctx.engine.takeovers(),
        "leases_lost": ctx.engine.leases_lost(),
    })))
}

/// `GET /api/v1/admin/restaurants/{id}/owner`: the restaurant's lease, activating it here first if
/// nobody owns it.
pub async fn owner(ctx: web::Data<AppContext>, rid: web::Path<Uuid>) -> ApiResult<HttpResponse> {
    let lease = ctx.engine.owner(RestaurantId::from(*rid)).await?;
    Ok(HttpResponse::Ok().json(lease))
}
