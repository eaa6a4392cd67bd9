//! Admin calls for a dish's choices: option groups (`{name, min, max, position?}`) and their options
//! (`{name, price_delta_cents, available?, allergens?, position?}`), under
//! `restaurants/{rid}/menu-items/{iid}/option-groups[/{gid}[/options[/{oid}]]]`. Applied by the
//! restaurant's actor like every menu change, so open sockets hear a `menu` event; a group or option
//! of another dish or restaurant is 404.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use scan2order_actors::admin::options::{GroupFields, OptionChange, OptionFields};
use scan2order_actors::admin::{AdminChange, AdminOutcome};
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::DbConn;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{allergens, change, position, resource, text, unexpected, MAX_NAME, MAX_PRICE_CENTS};
use crate::context::AppContext;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;

/// The most options one group may ask for.
const MAX_CHOICES: i32 = 30;

pub(super) fn configure(cfg: &mut web::ServiceConfig, r: &str) {
    let groups = format!("{r}/menu-items/{{iid}}/option-groups");
    cfg.service(resource(groups.clone()).post(create_group).get(list_groups))
        .service(
            resource(format!("{groups}/{{gid}}"))
                .patch(update_group)
                .delete(delete_group),
        )
        .service(resource(format!("{groups}/{{gid}}/options")).post(create_option))
        .service(
            resource(format!("{groups}/{{gid}}/options/{{oid}}"))
                .patch(update_option)
                .delete(delete_option),
        );
}

// ---- answers ----------------------------------------------------------------------------------

#[derive(Serialize)]
pub(super) struct GroupOut {
    id: Uuid,
    menu_item_id: Uuid,
    name: String,
    min: i32,
    max: i32,
    position: i32,
    options: Vec<OptionOut>,
}

#[derive(Serialize)]
struct OptionOut {
    id: Uuid,
    group_id: Uuid,
    name: String,
    price_delta_cents: i64,
    available: bool,
    allergens: Vec<String>,
    position: i32,
}

impl From<MenuOption> for OptionOut {
    fn from(o: MenuOption) -> Self {
        OptionOut {
            id: o.id,
            group_id: o.group_id,
            name: o.name,
            price_delta_cents: o.price_delta_cents,
            available: o.available,
            allergens: o.allergens,
            position: o.position,
        }
    }
}

fn group_out(g: OptionGroup, options: Vec<MenuOption>) -> GroupOut {
    GroupOut {
        id: g.id,
        menu_item_id: g.menu_item_id,
        name: g.name,
        min: g.min_choices,
        max: g.max_choices,
        position: g.position,
        options: options.into_iter().map(Into::into).collect(),
    }
}

/// Every dish's groups (with their options) of a restaurant, by dish.
pub(super) async fn restaurant_groups(
    conn: &mut DbConn,
    rid: Uuid,
) -> ApiResult<HashMap<Uuid, Vec<GroupOut>>> {
    let groups = OptionGroup::for_restaurant(conn, rid).await?;
    let mut options: HashMap<Uuid, Vec<MenuOption>> = HashMap::new();
    for o in MenuOption::for_restaurant(conn, rid).await? {
        options.entry(o.group_id).or_default().push(o);
    }
    let mut by_item: HashMap<Uuid, Vec<GroupOut>> = HashMap::new();
    for g in groups {
        let mine = options.remove(&g.id).unwrap_or_default();
        by_item
            .entry(g.menu_item_id)
            .or_default()
            .push(group_out(g, mine));
    }
    Ok(by_item)
}

/// One dish's groups with their options; 404 when the dish is not the restaurant's.
pub(super) async fn item_groups(
    conn: &mut DbConn,
    rid: Uuid,
    iid: Uuid,
) -> ApiResult<Vec<GroupOut>> {
    let groups = scan2order_actors::admin::options::groups_of_item(conn, rid, iid).await?;
    Ok(groups
        .into_iter()
        .map(|(g, options)| group_out(g, options))
        .collect())
}

// ---- groups -----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: Option<String>,
    min: Option<i32>,
    max: Option<i32>,
    position: Option<i32>,
}

impl GroupBody {
    fn validate(self) -> ApiResult<GroupFields> {
        let bounded = |field: &str, v: i32, low: i32| {
            if (low..=MAX_CHOICES).contains(&v) {
                Ok(v)
            } else {
                Err(ApiError::invalid(format!(
                    "{field}: between {low} and {MAX_CHOICES}"
                )))
            }
        };
        Ok(GroupFields {
            name: self
                .name
                .as_deref()
                .map(|n| text("name", n, MAX_NAME))
                .transpose()?,
            min: self.min.map(|v| bounded("min", v, 0)).transpose()?,
            max: self.max.map(|v| bounded("max", v, 1)).transpose()?,
            position: self.position.map(|p| position("position", p)).transpose()?,
        })
    }
}

async fn create_group(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
    body: Json<GroupBody>,
) -> ApiResult<HttpResponse> {
    let (rid, item_id) = path.into_inner();
    let fields = body.into_inner().validate()?;
    for (field, missing) in [
        ("name", fields.name.is_none()),
        ("min", fields.min.is_none()),
        ("max", fields.max.is_none()),
    ] {
        if missing {
            return Err(ApiError::invalid(format!("{field}: required")));
        }
    }
    let change_ = OptionChange::CreateGroup { item_id, fields };
    match change(&ctx, rid, AdminChange::Options(change_)).await? {
        AdminOutcome::Group(g) => Ok(HttpResponse::Created().json(group_out(g, Vec::new()))),
        other => Err(unexpected(other)),
    }
}

async fn list_groups(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, iid) = path.into_inner();
    let mut conn = ctx.pool.get().await?;
    let groups = item_groups(&mut conn, rid, iid).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "option_groups": groups })))
}

async fn update_group(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid, Uuid)>,
    body: Json<GroupBody>,
) -> ApiResult<HttpResponse> {
    let (rid, item_id, group_id) = path.into_inner();
    let fields = body.into_inner().validate()?;
    let change_ = OptionChange::UpdateGroup {
        item_id,
        group_id,
        fields,
    };
    match change(&ctx, rid, AdminChange::Options(change_)).await? {
        AdminOutcome::Group(g) => {
            let mut conn = ctx.pool.get().await?;
            let out = item_groups(&mut conn, rid, item_id)
                .await?
                .into_iter()
                .find(|out| out.id == g.id)
                .unwrap_or_else(|| group_out(g, Vec::new()));
            Ok(HttpResponse::Ok().json(out))
        }
        other => Err(unexpected(other)),
    }
}

async fn delete_group(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, item_id, group_id) = path.into_inner();
    let change_ = OptionChange::DeleteGroup { item_id, group_id };
    change(&ctx, rid, AdminChange::Options(change_)).await?;
    Ok(HttpResponse::NoContent().finish())
}

// ---- options ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionBody {
    name: Option<String>,
    price_delta_cents: Option<i64>,
    available: Option<bool>,
    allergens: Option<Vec<String>>,
    position: Option<i32>,
}

impl OptionBody {
    fn validate(self) -> ApiResult<OptionFields> {
        let delta = |v: i64| {
            if (-MAX_PRICE_CENTS..=MAX_PRICE_CENTS).contains(&v) {
                Ok(v)
            } else {
                Err(ApiError::invalid(format!(
                    "price_delta_cents: between -{MAX_PRICE_CENTS} and {MAX_PRICE_CENTS}"
                )))
            }
        };
        Ok(OptionFields {
            name: self
                .name
                .as_deref()
                .map(|n| text("name", n, MAX_NAME))
                .transpose()?,
            price_delta_cents: self.price_delta_cents.map(delta).transpose()?,
            available: self.available,
            allergens: self.allergens.map(allergens).transpose()?,
            position: self.position.map(|p| position("position", p)).transpose()?,
        })
    }
}

async fn create_option(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid, Uuid)>,
    body: Json<OptionBody>,
) -> ApiResult<HttpResponse> {
    let (rid, item_id, group_id) = path.into_inner();
    let fields = body.into_inner().validate()?;
    if fields.name.is_none() {
        return Err(ApiError::invalid("name: required"));
    }
    if fields.price_delta_cents.is_none() {
        return Err(ApiError::invalid("price_delta_cents: required"));
    }
    let change_ = OptionChange::CreateOption {
        item_id,
        group_id,
        fields,
    };
    match change(&ctx, rid, AdminChange::Options(change_)).await? {
        AdminOutcome::Option(o) => Ok(HttpResponse::Created().json(OptionOut::from(o))),
        other => Err(unexpected(other)),
    }
}

async fn update_option(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid, Uuid, Uuid)>,
    body: Json<OptionBody>,
) -> ApiResult<HttpResponse> {
    let (rid, item_id, group_id, option_id) = path.into_inner();
    let fields = body.into_inner().validate()?;
    let change_ = OptionChange::UpdateOption {
        item_id,
        group_id,
        option_id,
        fields,
    };
    match change(&ctx, rid, AdminChange::Options(change_)).await? {
        AdminOutcome::Option(o) => Ok(HttpResponse::Ok().json(OptionOut::from(o))),
        other => Err(unexpected(other)),
    }
}

async fn delete_option(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid, Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, item_id, group_id, option_id) = path.into_inner();
    let change_ = OptionChange::DeleteOption {
        item_id,
        group_id,
        option_id,
    };
    change(&ctx, rid, AdminChange::Options(change_)).await?;
    Ok(HttpResponse::NoContent().finish())
}
