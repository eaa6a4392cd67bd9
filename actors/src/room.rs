//! # Room — where a socket of a restaurant subscribes on this node
//!
//! The restaurant's own actor when this node owns the restaurant, or the node's relay of the owner's
//! events when another node does (see [`crate::cluster::relay`]). Both speak the same messages
//! (hello, subscribe, unsubscribe, a kitchen's status change); a socket session does not know which
//! it talks to.

use actix::prelude::*;
use scan2order_schema::wire::Order;

use crate::cluster::relay::RelayActor;
use crate::restaurant::{
    ChangeStatus, EngineError, RestaurantActor, SayHello, Subscribe, Unsubscribe,
};

#[derive(Clone)]
pub enum Room {
    Owner(Addr<RestaurantActor>),
    Relay(Addr<RelayActor>),
}

impl Room {
    /// The actor behind it is still running.
    pub fn connected(&self) -> bool {
        match self {
            Room::Owner(a) => a.connected(),
            Room::Relay(a) => a.connected(),
        }
    }

    pub fn say_hello(&self, msg: SayHello) {
        match self {
            Room::Owner(a) => a.do_send(msg),
            Room::Relay(a) => a.do_send(msg),
        }
    }

    pub fn unsubscribe(&self, msg: Unsubscribe) {
        match self {
            Room::Owner(a) => a.do_send(msg),
            Room::Relay(a) => a.do_send(msg),
        }
    }

    pub async fn subscribe(
        &self,
        msg: Subscribe,
    ) -> Result<Result<u64, EngineError>, MailboxError> {
        match self {
            Room::Owner(a) => a.send(msg).await,
            Room::Relay(a) => a.send(msg).await,
        }
    }

    pub async fn change_status(
        &self,
        msg: ChangeStatus,
    ) -> Result<Result<Order, EngineError>, MailboxError> {
        match self {
            Room::Owner(a) => a.send(msg).await,
            Room::Relay(a) => a.send(msg).await,
        }
    }
}
