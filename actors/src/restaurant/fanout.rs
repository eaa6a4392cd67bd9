//! # Fan-out: the sockets of one restaurant
//!
//! [`Subscribers`] holds the kitchen and table sockets and delivers each event, serialised once, to the
//! sockets that may see it. The handlers here register sockets (with `hello`, then a replay from the
//! ring or a snapshot), forget them, and close them (shutdown, a staff member's sessions ending).

use std::collections::HashMap;

use actix::prelude::*;
use bytestring::ByteString;
use scan2order_schema::domain::{StaffId, TableId};
use scan2order_schema::wire::ServerMsg;

use super::{Audience, EngineError, Missing, RestaurantActor};
use crate::sink::{close_code, SocketSink};

/// The sockets subscribed to one restaurant.
#[derive(Default)]
pub(crate) struct Subscribers {
    /// Kitchen dashboards, by subscription id.
    kitchen: HashMap<u64, SocketSink>,
    /// The staff member behind each kitchen socket that has one (closed when their sessions end).
    kitchen_staff: HashMap<u64, StaffId>,
    /// Guest sockets by table, then by subscription id.
    tables: HashMap<TableId, HashMap<u64, SocketSink>>,
    /// The id the next subscription gets.
    next_id: u64,
}

impl Subscribers {
    pub(crate) fn is_empty(&self) -> bool {
        self.kitchen.is_empty() && self.tables.is_empty()
    }

    pub(crate) fn kitchen_count(&self) -> usize {
        self.kitchen.len()
    }

    pub(crate) fn table_count(&self) -> usize {
        self.tables.values().map(HashMap::len).sum()
    }

    /// Registers a socket; its subscription id.
    pub(crate) fn add(
        &mut self,
        sink: SocketSink,
        audience: Audience,
        staff: Option<StaffId>,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        match audience {
            Audience::Kitchen => {
                self.kitchen.insert(id, sink);
                if let Some(staff) = staff {
                    self.kitchen_staff.insert(id, staff);
                }
            }
            Audience::Table(t) => {
                self.tables.entry(t).or_default().insert(id, sink);
            }
        }
        id
    }

    pub(crate) fn remove(&mut self, id: u64, audience: Audience) {
        match audience {
            Audience::Kitchen => {
                self.kitchen.remove(&id);
                self.kitchen_staff.remove(&id);
            }
            Audience::Table(t) => {
                if let Some(subs) = self.tables.get_mut(&t) {
                    subs.remove(&id);
                    if subs.is_empty() {
                        self.tables.remove(&t);
                    }
                }
            }
        }
    }

    /// Delivers an event for `table` (`None`: everyone) to every socket that may see it; sockets that
    /// are gone or whose queue overflowed are dropped.
    pub(crate) fn send(&mut self, table: Option<TableId>, text: &ByteString) {
        self.kitchen
            .retain(|_, sink| sink.send_text(text.clone()).is_ok());
        if self.kitchen_staff.len() > self.kitchen.len() {
            let kitchen = &self.kitchen;
            self.kitchen_staff.retain(|id, _| kitchen.contains_key(id));
        }
        match table {
            Some(t) => {
                if let Some(subs) = self.tables.get_mut(&t) {
                    subs.retain(|_, sink| sink.send_text(text.clone()).is_ok());
                }
            }
            None => {
                for subs in self.tables.values_mut() {
                    subs.retain(|_, sink| sink.send_text(text.clone()).is_ok());
                }
            }
        }
        self.tables.retain(|_, subs| !subs.is_empty());
    }

    /// Every audience with a socket here (a relay asks the owner for their snapshots).
    pub(crate) fn audiences(&self) -> Vec<Audience> {
        let kitchen = (!self.kitchen.is_empty()).then_some(Audience::Kitchen);
        kitchen
            .into_iter()
            .chain(self.tables.keys().map(|t| Audience::Table(*t)))
            .collect()
    }

    /// Delivers a text to the sockets of one audience only (a relay's fresh snapshot).
    pub(crate) fn send_to(&mut self, audience: Audience, text: &ByteString) {
        match audience {
            Audience::Kitchen => self
                .kitchen
                .retain(|_, sink| sink.send_text(text.clone()).is_ok()),
            Audience::Table(t) => {
                if let Some(subs) = self.tables.get_mut(&t) {
                    subs.retain(|_, sink| sink.send_text(text.clone()).is_ok());
                }
            }
        }
    }

    /// Closes the sockets of one table with `code` (its token died).
    pub(crate) fn close_table(&mut self, table: TableId, code: u16) {
        if let Some(subs) = self.tables.remove(&table) {
            for sink in subs.values() {
                sink.close(code);
            }
        }
    }

    pub(crate) fn close_all(&mut self, code: u16) {
        for sink in self.kitchen.values() {
            sink.close(code);
        }
        for subs in self.tables.values() {
            for sink in subs.values() {
                sink.close(code);
            }
        }
        self.kitchen.clear();
        self.kitchen_staff.clear();
        self.tables.clear();
    }

    pub(crate) fn close_staff(&mut self, staff: StaffId, code: u16) {
        let ids: Vec<u64> = self
            .kitchen_staff
            .iter()
            .filter(|(_, s)| **s == staff)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.kitchen_staff.remove(&id);
            if let Some(sink) = self.kitchen.remove(&id) {
                sink.close(code);
            }
        }
    }
}

impl RestaurantActor {
    /// The snapshot an audience gets at the current `(epoch, seq)`.
    fn snapshot_text(&self, audience: Audience) -> Result<String, EngineError> {
        let snapshot = ServerMsg::Snapshot {
            epoch: self.ring.epoch().to_string(),
            seq: self.ring.seq(),
            orders: self.orders.snapshot(audience),
            menu_version: Some(self.menu.info.menu_version.to_string()),
            accepting_orders: Some(self.menu.info.accepting_orders),
        };
        serde_json::to_string(&snapshot).map_err(|_| EngineError::Unavailable)
    }

    fn push_hello(&self, sink: &SocketSink) {
        send_hello(sink, self.ring.epoch(), self.ring.seq());
    }
}

/// Sends a socket `hello` with the stream's position (the restaurant actor's, or a relay's).
pub(crate) fn send_hello(sink: &SocketSink, epoch: &str, seq: u64) {
    let hello = ServerMsg::Hello {
        epoch: epoch.to_string(),
        seq,
    };
    if let Ok(s) = serde_json::to_string(&hello) {
        let _ = sink.send_text(s.into());
    }
}

/// Sends `hello` with the current `(epoch, seq)` to a socket that has not subscribed yet.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SayHello {
    pub sink: SocketSink,
}

impl Handler<SayHello> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: SayHello, _ctx: &mut Context<Self>) {
        self.push_hello(&msg.sink);
    }
}

/// Registers a socket. In one step: optional `hello`, then either the replay of every missed event (a
/// resume the ring still reaches, same epoch) or a fresh snapshot, then live events. Nothing can fall
/// between the snapshot and the first live event because the actor handles one message at a time.
#[derive(Message)]
#[rtype(result = "Result<u64, EngineError>")]
pub struct Subscribe {
    pub sink: SocketSink,
    pub audience: Audience,
    /// The QR token a table socket connected with (checked against the table's current token).
    pub table_token: Option<String>,
    /// The staff member behind a kitchen socket (closed when their sessions end).
    pub staff: Option<StaffId>,
    pub resume: Option<(String, u64)>,
    pub hello: bool,
}

impl Handler<Subscribe> for RestaurantActor {
    type Result = Result<u64, EngineError>;

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if let Audience::Table(t) = msg.audience {
            let token = msg.table_token.as_deref().unwrap_or_default();
            if self.menu.table_for(t, token).is_none() {
                return Err(EngineError::NotFound(Missing::Table));
            }
        }
        if msg.hello {
            self.push_hello(&msg.sink);
        }
        let replay = msg
            .resume
            .as_ref()
            .and_then(|(epoch, since)| self.ring.replay(epoch, *since, msg.audience))
            // A replay longer than the socket's outbound queue would overflow it (1013) on every
            // reconnect, so the client could never catch up: it gets a snapshot instead.
            .filter(|missed| missed.len() <= msg.sink.room());
        match replay {
            Some(missed) => {
                for text in missed {
                    if msg.sink.send_text(text).is_err() {
                        return Ok(0);
                    }
                }
            }
            None => {
                let text = self.snapshot_text(msg.audience)?;
                if msg.sink.send_text(text.into()).is_err() {
                    return Ok(0);
                }
            }
        }
        Ok(self.subscribers.add(msg.sink, msg.audience, msg.staff))
    }
}

/// What a relay on another node asks to follow the restaurant's stream: the current `(epoch, seq)` and,
/// for each audience it names (a table with the token its sockets connected with), the snapshot at that
/// number. The owner answers from memory, in one step, so every snapshot and the number agree.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<RelaySynced, EngineError>")]
pub struct RelaySync {
    pub audiences: Vec<(Audience, Option<String>)>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RelaySynced {
    pub epoch: String,
    pub seq: u64,
    /// The node that answered (the owner).
    pub node_id: Option<String>,
    /// One per audience asked, in order; `None` for a table whose token is no longer its current one.
    pub snapshots: Vec<Option<String>>,
}

impl Handler<RelaySync> for RestaurantActor {
    type Result = Result<RelaySynced, EngineError>;

    fn handle(&mut self, msg: RelaySync, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let snapshots = msg
            .audiences
            .iter()
            .map(|(audience, token)| match audience {
                Audience::Table(t)
                    if self
                        .menu
                        .table_for(*t, token.as_deref().unwrap_or_default())
                        .is_none() =>
                {
                    Ok(None)
                }
                _ => self.snapshot_text(*audience).map(Some),
            })
            .collect::<Result<_, _>>()?;
        Ok(RelaySynced {
            epoch: self.ring.epoch().to_string(),
            seq: self.ring.seq(),
            node_id: self.tap.as_ref().map(|t| t.node_id().to_string()),
            snapshots,
        })
    }
}

/// A socket went away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub id: u64,
    pub audience: Audience,
}

impl Handler<Unsubscribe> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _ctx: &mut Context<Self>) {
        self.subscribers.remove(msg.id, msg.audience);
    }
}

/// Closes every socket (shutdown: 1001).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll {
    pub code: u16,
}

impl Handler<CloseAll> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: CloseAll, _ctx: &mut Context<Self>) {
        self.subscribers.close_all(msg.code);
    }
}

/// Closes the kitchen sockets of one staff member (password changed, account removed): 1008.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseStaffSockets {
    pub staff: StaffId,
}

impl Handler<CloseStaffSockets> for RestaurantActor {
    type Result = ();

    fn handle(&mut self, msg: CloseStaffSockets, _ctx: &mut Context<Self>) {
        self.subscribers.close_staff(msg.staff, close_code::POLICY);
    }
}
