//! # Admin changes, applied by the restaurant's own actor, in commit order
//!
//! An admin change (menu, tables, settings) is written by [`crate::admin::apply`] and then the
//! restaurant reloads its admin-owned state in the same step. The rule: **changes apply in commit
//! order, and an order priced after a change committed sees it.** So the change runs with `ctx.wait`:
//! the restaurant takes no other message (no order is priced, no second change starts) until the change
//! has committed and its reload is in memory. Admin changes are rare and short; orders queue behind one
//! for the length of one transaction.

use std::collections::HashMap;

use actix::prelude::*;
use scan2order_schema::domain::TableId;
use scan2order_schema::models::{MenuCategory, MenuItem, Restaurant, RestaurantTable};
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::wire::ServerMsg;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::RestaurantActor;
use crate::admin::{self, AdminChange, AdminError, AdminOutcome};

/// An admin change applied by the owner of the restaurant.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<AdminApplied, AdminError>")]
pub struct ApplyAdminChange(pub AdminChange);

/// The outcome, and the table tokens that died or appeared (for the token directory).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AdminApplied {
    pub outcome: AdminOutcome,
    pub dead_tokens: Vec<String>,
    pub new_tables: Vec<(String, TableId)>,
}

/// The admin-owned state as the change left it.
struct Reloaded {
    info: Restaurant,
    categories: Vec<MenuCategory>,
    items: Vec<MenuItem>,
    groups: Vec<OptionGroup>,
    options: Vec<MenuOption>,
    tables: Vec<RestaurantTable>,
}

impl Handler<ApplyAdminChange> for RestaurantActor {
    type Result = ResponseFuture<Result<AdminApplied, AdminError>>;

    fn handle(&mut self, msg: ApplyAdminChange, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let pool = self.pool.clone();
        let rid = self.id.get();
        let fence = self.fence;
        let (tx, rx) = oneshot::channel();
        ctx.wait(
            async move {
                let mut conn = pool.get().await.map_err(|_| AdminError::Unavailable)?;
                let outcome = admin::apply(&mut conn, fence, msg.0).await?;
                let info = Restaurant::find(&mut conn, rid)
                    .await?
                    .ok_or(AdminError::NotFound)?;
                let categories = MenuCategory::for_restaurant(&mut conn, rid).await?;
                let items = MenuItem::for_restaurant(&mut conn, rid).await?;
                let groups = OptionGroup::for_restaurant(&mut conn, rid).await?;
                let options = MenuOption::for_restaurant(&mut conn, rid).await?;
                let tables = RestaurantTable::for_restaurant(&mut conn, rid).await?;
                Ok((
                    outcome,
                    Reloaded {
                        info,
                        categories,
                        items,
                        groups,
                        options,
                        tables,
                    },
                ))
            }
            .into_actor(self)
            .map(
                move |res: Result<(AdminOutcome, Reloaded), AdminError>, act, ctx| {
                    if matches!(res, Err(AdminError::Fenced)) {
                        ctx.notify(super::LeaseLost);
                    }
                    let answer = res.map(|(outcome, reloaded)| {
                        let (dead_tokens, new_tables) = act.apply_reload(reloaded);
                        AdminApplied {
                            outcome,
                            dead_tokens,
                            new_tables,
                        }
                    });
                    // The caller may have given up waiting; the change is applied all the same.
                    let _ = tx.send(answer);
                },
            ),
        );
        Box::pin(async move { rx.await.unwrap_or(Err(AdminError::Unavailable)) })
    }
}

impl RestaurantActor {
    /// Takes a fresh copy of the admin-owned state, tells sockets what changed, and closes the sockets
    /// of tables whose token died (rotated, deactivated, deleted) with 1008.
    fn apply_reload(&mut self, r: Reloaded) -> (Vec<String>, Vec<(String, TableId)>) {
        let accepting_changed = r.info.accepting_orders != self.menu.info.accepting_orders;
        let version_changed = r.info.menu_version != self.menu.info.menu_version;
        let new_tables: HashMap<Uuid, RestaurantTable> =
            r.tables.into_iter().map(|t| (t.id, t)).collect();
        let live_token =
            |t: &RestaurantTable| (t.active && t.deleted_at.is_none()).then(|| t.token.clone());
        let mut dead = Vec::new();
        let mut closed = Vec::new();
        for (id, old) in &self.menu.tables {
            let Some(old_token) = live_token(old) else {
                continue;
            };
            if new_tables.get(id).and_then(live_token).as_deref() != Some(old_token.as_str()) {
                dead.push(old_token);
                closed.push(TableId::from(*id));
            }
        }
        for table in closed {
            self.close_table(table);
        }
        let mut added = Vec::new();
        for (id, t) in &new_tables {
            if let Some(token) = live_token(t) {
                let before = self.menu.tables.get(id).and_then(live_token);
                if before.as_deref() != Some(token.as_str()) {
                    added.push((token, TableId::from(*id)));
                }
            }
        }
        self.menu.replace(
            r.info,
            r.categories,
            r.items,
            super::choices::Choices::new(r.groups, r.options),
            new_tables,
        );
        if accepting_changed {
            let accepting = self.menu.info.accepting_orders;
            self.publish(None, |seq| ServerMsg::Restaurant {
                seq,
                accepting_orders: accepting,
            });
        }
        if version_changed {
            let version = self.menu.info.menu_version.to_string();
            self.publish(None, |seq| ServerMsg::Menu { seq, version });
        }
        (dead, added)
    }
}
