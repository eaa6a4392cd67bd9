//! # Forwarding — commands to the restaurant's owner on another node
//!
//! In a fleet, a node that does not own a restaurant sends each command (an order, a status change, a
//! toggle, an admin edit, a menu read, a relay's sync) to the owner over NATS request/reply, on the
//! owner's node subject, and answers its client with the owner's answer. A command is the same actix
//! message the local actor handles, serialised: [`Command`] names every kind that may cross, and the
//! owner runs it exactly as a local caller would ([`crate::shard::ShardSupervisor::ask`] on a node
//! that owns the restaurant).
//!
//! The owner answers [`Reply::NotOwner`] when it no longer holds the lease (it passivated, was fenced
//! off): the sender reads the lease again and retries. Orders carry idempotency keys and status
//! changes are idempotent, so a retry never applies anything twice.

use bytes::Bytes;
use scan2order_schema::domain::RestaurantId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::restaurant::{
    ApplyAdminChange, ChangeStatus, EngineError, GetKitchenInfo, GetLiveOrders, GetTableMenu,
    PlaceOrder, RelaySync, SetAccepting, SetAvailability, SetOptionAvailability,
};

/// Every command that may be sent to a restaurant's owner on another node.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "msg", rename_all = "snake_case")]
pub enum Command {
    PlaceOrder(PlaceOrder),
    ChangeStatus(ChangeStatus),
    SetAvailability(SetAvailability),
    SetOptionAvailability(SetOptionAvailability),
    SetAccepting(SetAccepting),
    GetTableMenu(GetTableMenu),
    GetKitchenInfo(GetKitchenInfo),
    GetLiveOrders(GetLiveOrders),
    ApplyAdminChange(ApplyAdminChange),
    RelaySync(RelaySync),
}

/// A restaurant message that may be forwarded: it names its [`Command`] variant.
pub trait Forwarded:
    actix::Message + Clone + Send + Serialize + DeserializeOwned + 'static
{
    fn wrap(self) -> Command;
}

macro_rules! forwarded {
    ($($name:ident),* $(,)?) => {
        $(impl Forwarded for $name {
            fn wrap(self) -> Command {
                Command::$name(self)
            }
        })*
    };
}

forwarded!(
    PlaceOrder,
    ChangeStatus,
    SetAvailability,
    SetOptionAvailability,
    SetAccepting,
    GetTableMenu,
    GetKitchenInfo,
    GetLiveOrders,
    ApplyAdminChange,
    RelaySync,
);

/// What crosses the bus to the owner.
#[derive(Serialize, Deserialize)]
pub struct Envelope {
    pub restaurant_id: RestaurantId,
    pub command: Command,
}

/// The owner's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply<T> {
    /// The answer, exactly as a local caller would have had it.
    Done(Result<T, EngineError>),
    /// This node does not hold the restaurant's lease (any more): ask its owner.
    NotOwner,
}

impl Envelope {
    pub fn encode<M: Forwarded>(restaurant_id: RestaurantId, msg: M) -> Result<Bytes, EngineError> {
        serde_json::to_vec(&Envelope {
            restaurant_id,
            command: msg.wrap(),
        })
        .map(Bytes::from)
        .map_err(|_| EngineError::Unavailable)
    }
}

impl<T: Serialize> Reply<T> {
    pub fn encode(&self) -> Bytes {
        match serde_json::to_vec(self) {
            Ok(v) => Bytes::from(v),
            Err(e) => {
                tracing::error!(error = %e, "a forwarded answer did not serialise");
                Bytes::from_static(br#"{"Done":{"Err":"Unavailable"}}"#)
            }
        }
    }
}

impl<T: DeserializeOwned> Reply<T> {
    /// The owner's answer; anything unreadable is `unavailable` (never a guess).
    pub fn decode(payload: &[u8]) -> Reply<T> {
        serde_json::from_slice(payload).unwrap_or_else(|e| {
            tracing::error!(error = %e, "a forwarded answer did not parse");
            Reply::Done(Err(EngineError::Unavailable))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restaurant::Audience;
    use scan2order_schema::domain::{OrderId, OrderStatus};

    #[test]
    fn commands_and_replies_cross_the_bus_unchanged() {
        let rid = RestaurantId::from(uuid::Uuid::new_v4());
        let msg = ChangeStatus {
            order_id: OrderId::from(uuid::Uuid::new_v4()),
            status: OrderStatus::Preparing,
            by: None,
            session: None,
            request_id: Some("tap-1".into()),
            allergy_ack: false,
        };
        let bytes = Envelope::encode(rid, msg.clone()).expect("encodes");
        let back: Envelope = serde_json::from_slice(&bytes).expect("decodes");
        assert_eq!(back.restaurant_id, rid);
        match back.command {
            Command::ChangeStatus(m) => {
                assert_eq!(m.order_id, msg.order_id);
                assert_eq!(m.status, OrderStatus::Preparing);
                assert_eq!(m.request_id.as_deref(), Some("tap-1"));
            }
            _ => panic!("another command came back"),
        }
        let sync = RelaySync {
            audiences: vec![(Audience::Kitchen, None)],
        };
        let back: Envelope = serde_json::from_slice(&Envelope::encode(rid, sync).expect("encodes"))
            .expect("decodes");
        assert!(matches!(back.command, Command::RelaySync(s) if s.audiences.len() == 1));

        let reply: Reply<String> = Reply::Done(Err(EngineError::ItemUnavailable {
            items: vec![],
            options: vec![],
        }));
        match Reply::<String>::decode(&reply.encode()) {
            Reply::Done(Err(EngineError::ItemUnavailable { items, .. })) => {
                assert!(items.is_empty())
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Reply::<String>::decode(&Reply::<String>::NotOwner.encode()),
            Reply::NotOwner
        ));
        assert!(matches!(
            Reply::<String>::decode(b"not json"),
            Reply::Done(Err(EngineError::Unavailable))
        ));
    }
}
