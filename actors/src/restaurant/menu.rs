//! # The menu side of a restaurant: what guests see and what the kitchen switches
//!
//! [`Menu`] is the restaurant's admin-owned state in memory (the restaurant row, categories, items
//! with their option groups and options, tables) with the guest JSON rendered once per change, so menu reads never touch Postgres. The
//! handlers here are the kitchen's toggles (sold out, pause) and the in-memory reads; admin changes
//! are in `admin.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use indexmap::IndexMap;
use scan2order_schema::domain::{MenuItemId, MenuOptionId, TableId};
use scan2order_schema::models::{MenuCategory, MenuItem, Restaurant, RestaurantTable};
use scan2order_schema::wire::{
    self, CategoryView, MenuView, RestaurantKitchen, RestaurantPublic, ServerMsg, TablePublic,
};
use uuid::Uuid;

use super::choices::Choices;
use super::{EngineError, Missing, RestaurantActor};
use crate::writer::{Switchable, WriteOp, WriteOutcome};

/// A restaurant's menu, tables and settings as last committed, with the guest JSON rendered from them.
pub(crate) struct Menu {
    /// The restaurant row: name, currency, "accepting orders", ticket thresholds, menu version.
    pub(crate) info: Restaurant,
    /// The restaurant's time zone, parsed once: business days (and so ticket numbers) follow it.
    pub(crate) tz: chrono_tz::Tz,
    /// Categories in menu order.
    pub(crate) categories: Vec<MenuCategory>,
    /// Every dish not deleted, by id: orders are validated and priced from here.
    pub(crate) items: IndexMap<Uuid, MenuItem>,
    /// The dishes' option groups and options.
    pub(crate) choices: Choices,
    /// Every table, active or not, by id: a table token is checked against these.
    pub(crate) tables: HashMap<Uuid, RestaurantTable>,
    /// The guest menu JSON (`MenuView`), rendered after every change; shared with every answer, so a
    /// read copies nothing of it.
    menu_json: Arc<str>,
    /// The restaurant as guests see it (`RestaurantPublic`), rendered after every change.
    public_json: Arc<str>,
}

pub(crate) fn parse_tz(name: &str) -> chrono_tz::Tz {
    name.parse().unwrap_or(chrono_tz::UTC)
}

impl Menu {
    pub(crate) fn new(
        info: Restaurant,
        categories: Vec<MenuCategory>,
        items: Vec<MenuItem>,
        choices: Choices,
        tables: Vec<RestaurantTable>,
    ) -> Menu {
        let mut menu = Menu {
            tz: parse_tz(&info.time_zone),
            info,
            categories,
            items: items.into_iter().map(|i| (i.id, i)).collect(),
            choices,
            tables: tables.into_iter().map(|t| (t.id, t)).collect(),
            menu_json: Arc::from(""),
            public_json: Arc::from(""),
        };
        menu.render();
        menu
    }

    /// Re-renders the cached JSON served to guests; called after every menu or flag change.
    pub(crate) fn render(&mut self) {
        let mut categories: Vec<CategoryView> = self
            .categories
            .iter()
            .map(|c| CategoryView {
                id: c.id.into(),
                name: c.name.clone(),
                items: Vec::new(),
            })
            .collect();
        let index: HashMap<Uuid, usize> = self
            .categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        let mut items: Vec<&MenuItem> = self.items.values().collect();
        items.sort_by_key(|i| (i.position, i.created_at));
        for item in items {
            if let Some(&ci) = index.get(&item.category_id) {
                let mut view = item.to_view();
                view.option_groups = self.choices.views_of(item.id);
                categories[ci].items.push(view);
            }
        }
        let menu = MenuView {
            version: self.info.menu_version.to_string(),
            categories,
        };
        self.menu_json = serde_json::to_string(&menu)
            .unwrap_or_else(|_| "{}".into())
            .into();
        let public = RestaurantPublic {
            id: self.info.id.into(),
            slug: self.info.slug.clone(),
            name: self.info.name.clone(),
            currency: self.info.currency.clone(),
            accepting_orders: self.info.accepting_orders,
        };
        self.public_json = serde_json::to_string(&public)
            .unwrap_or_else(|_| "{}".into())
            .into();
    }

    /// The active table a token opens. The token is checked here, by the owner of the tables, so a token
    /// rotated a moment ago cannot open its table through a stale directory entry.
    pub(crate) fn table_for(&self, id: TableId, token: &str) -> Option<&RestaurantTable> {
        self.tables.get(&id.get()).filter(|t| {
            t.active && t.deleted_at.is_none() && t.token.as_bytes() == token.as_bytes()
        })
    }

    /// The tokens that open a table today (for the token directory).
    pub(crate) fn table_tokens(&self) -> Vec<String> {
        self.tables.values().map(|t| t.token.clone()).collect()
    }

    pub(crate) fn etag(&self) -> String {
        format!("\"{}-{}\"", self.info.id.simple(), self.info.menu_version)
    }

    pub(crate) fn kitchen_view(&self) -> RestaurantKitchen {
        RestaurantKitchen {
            id: self.info.id.into(),
            slug: self.info.slug.clone(),
            name: self.info.name.clone(),
            currency: self.info.currency.clone(),
            accepting_orders: self.info.accepting_orders,
            ticket_warn_after_s: self.info.ticket_warn_after_s,
            ticket_late_after_s: self.info.ticket_late_after_s,
        }
    }

    /// Takes a fresh copy of the admin-owned state (after an admin change committed).
    pub(crate) fn replace(
        &mut self,
        info: Restaurant,
        categories: Vec<MenuCategory>,
        items: Vec<MenuItem>,
        choices: Choices,
        tables: HashMap<Uuid, RestaurantTable>,
    ) {
        self.tz = parse_tz(&info.time_zone);
        // A toggle that committed after this reload was read but answered before it is already in
        // memory, with a later version: keep what is newest.
        let newest = self.info.menu_version.max(info.menu_version);
        self.info = info;
        self.info.menu_version = newest;
        self.categories = categories;
        self.items = items.into_iter().map(|i| (i.id, i)).collect();
        self.choices = choices;
        self.tables = tables;
        self.render();
    }

    /// Records the menu version a committed change left in the database. Answers can reach the actor
    /// out of commit order (a toggle's answer after the reload of an admin change that committed
    /// later), so the version kept is the newest seen.
    fn committed_version(&mut self, outcome: &WriteOutcome) {
        if let WriteOutcome::MenuChanged(version) = outcome {
            self.info.menu_version = self.info.menu_version.max(*version);
        }
    }

    /// The guest menu of one table: restaurant, table and menu, joined into one JSON body by
    /// [`TableMenuAnswer::body`].
    fn table_menu(&self, table: &RestaurantTable) -> Result<TableMenuAnswer, EngineError> {
        let table = serde_json::to_string(&TablePublic {
            id: table.id.into(),
            label: table.label.clone(),
        })
        .map_err(|_| EngineError::Unavailable)?;
        Ok(TableMenuAnswer {
            etag: self.etag(),
            restaurant: self.public_json.clone(),
            table,
            menu: self.menu_json.clone(),
        })
    }

    /// The restaurant and full menu as its kitchen sees them.
    fn kitchen_info(&self) -> String {
        let restaurant =
            serde_json::to_string(&self.kitchen_view()).unwrap_or_else(|_| "{}".into());
        format!(
            "{{\"restaurant\":{restaurant},\"menu\":{}}}",
            self.menu_json
        )
    }
}

/// The kitchen marks a dish sold out or back.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<wire::MenuItemView, EngineError>")]
pub struct SetAvailability {
    pub item_id: MenuItemId,
    pub available: bool,
}

impl Handler<SetAvailability> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<wire::MenuItemView, EngineError>>;

    fn handle(&mut self, msg: SetAvailability, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let id = msg.item_id.get();
        let Some(item) = self.menu.items.get(&id) else {
            return Box::pin(actix::fut::ready(Err(EngineError::NotFound(
                Missing::MenuItem,
            ))));
        };
        if item.available == msg.available {
            return Box::pin(actix::fut::ready(Ok(item.to_view())));
        }
        let at = Utc::now();
        let op = WriteOp::SetAvailability {
            restaurant_id: self.id.get(),
            target: Switchable::Item(id),
            available: msg.available,
            at,
        };
        Box::pin(
            self.commit(op)
                .into_actor(self)
                .map(move |committed, act, _| {
                    let outcome = committed.stored()?;
                    act.menu.committed_version(&outcome);
                    let view = match act.menu.items.get_mut(&id) {
                        Some(item) => {
                            item.available = msg.available;
                            item.updated_at = at;
                            item.to_view()
                        }
                        None => return Err(EngineError::NotFound(Missing::MenuItem)),
                    };
                    act.menu.render();
                    act.publish(None, |seq| ServerMsg::MenuItem {
                        seq,
                        item_id: msg.item_id,
                        available: msg.available,
                    });
                    Ok(view)
                }),
        )
    }
}

/// The kitchen marks an option (oat milk, a side) sold out or back.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<wire::OptionView, EngineError>")]
pub struct SetOptionAvailability {
    pub option_id: MenuOptionId,
    pub available: bool,
}

impl Handler<SetOptionAvailability> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<wire::OptionView, EngineError>>;

    fn handle(&mut self, msg: SetOptionAvailability, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let id = msg.option_id.get();
        let Some(option) = self.menu.choices.option(id) else {
            return Box::pin(actix::fut::ready(Err(EngineError::NotFound(
                Missing::MenuOption,
            ))));
        };
        if option.available == msg.available {
            return Box::pin(actix::fut::ready(Ok(option.to_view())));
        }
        let at = Utc::now();
        let op = WriteOp::SetAvailability {
            restaurant_id: self.id.get(),
            target: Switchable::Option(id),
            available: msg.available,
            at,
        };
        Box::pin(
            self.commit(op)
                .into_actor(self)
                .map(move |committed, act, _| {
                    let outcome = committed.stored()?;
                    act.menu.committed_version(&outcome);
                    let view = match act.menu.choices.option_mut(id) {
                        Some(option) => {
                            option.available = msg.available;
                            option.updated_at = at;
                            option.to_view()
                        }
                        None => return Err(EngineError::NotFound(Missing::MenuOption)),
                    };
                    act.menu.render();
                    act.publish(None, |seq| ServerMsg::MenuOption {
                        seq,
                        option_id: msg.option_id,
                        available: msg.available,
                    });
                    Ok(view)
                }),
        )
    }
}

/// The kitchen pauses or resumes ordering.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<RestaurantKitchen, EngineError>")]
pub struct SetAccepting {
    pub accepting: bool,
}

impl Handler<SetAccepting> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<RestaurantKitchen, EngineError>>;

    fn handle(&mut self, msg: SetAccepting, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if self.menu.info.accepting_orders == msg.accepting {
            return Box::pin(actix::fut::ready(Ok(self.menu.kitchen_view())));
        }
        let op = WriteOp::SetAccepting {
            restaurant_id: self.id.get(),
            accepting: msg.accepting,
            at: Utc::now(),
        };
        Box::pin(
            self.commit(op)
                .into_actor(self)
                .map(move |committed, act, _| {
                    let outcome = committed.stored()?;
                    act.menu.committed_version(&outcome);
                    act.menu.info.accepting_orders = msg.accepting;
                    act.menu.render();
                    act.publish(None, |seq| ServerMsg::Restaurant {
                        seq,
                        accepting_orders: msg.accepting,
                    });
                    Ok(act.menu.kitchen_view())
                }),
        )
    }
}

/// The guest menu of one table, served from memory: JSON body and `ETag`.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<TableMenuAnswer, EngineError>")]
pub struct GetTableMenu {
    pub table_id: TableId,
    pub table_token: String,
}

/// A table's menu: its `ETag` and the parts of its body (the restaurant and menu JSON are shared, not
/// copied, until a body is needed).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TableMenuAnswer {
    pub etag: String,
    pub restaurant: Arc<str>,
    /// `TablePublic` as JSON.
    pub table: String,
    pub menu: Arc<str>,
}

impl TableMenuAnswer {
    /// `{"restaurant":…,"table":…,"menu":…}`.
    pub fn body(&self) -> String {
        let mut body =
            String::with_capacity(self.restaurant.len() + self.table.len() + self.menu.len() + 40);
        body.push_str("{\"restaurant\":");
        body.push_str(&self.restaurant);
        body.push_str(",\"table\":");
        body.push_str(&self.table);
        body.push_str(",\"menu\":");
        body.push_str(&self.menu);
        body.push('}');
        body
    }
}

impl Handler<GetTableMenu> for RestaurantActor {
    type Result = Result<TableMenuAnswer, EngineError>;

    fn handle(&mut self, msg: GetTableMenu, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let table = self
            .menu
            .table_for(msg.table_id, &msg.table_token)
            .ok_or(EngineError::NotFound(Missing::Table))?;
        self.menu.table_menu(table)
    }
}

/// The restaurant as its kitchen sees it, with the full menu (extension for the kitchen display).
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "String")]
pub struct GetKitchenInfo;

impl Handler<GetKitchenInfo> for RestaurantActor {
    type Result = String;

    fn handle(&mut self, _: GetKitchenInfo, _ctx: &mut Context<Self>) -> String {
        self.menu.kitchen_info()
    }
}
