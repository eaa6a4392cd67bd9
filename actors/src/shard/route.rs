//! Where a command or a socket goes: to the restaurant's actor here, or in a fleet to the node that
//! owns the restaurant (commands forwarded, events relayed). Also the fleet's notices this node sends
//! and applies, and how a relay reaches the owner.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use scan2order_schema::domain::RestaurantId;
use scan2order_schema::wire::Order;

use super::{Activation, InFlight, ShardSupervisor};
use crate::cluster::bus::Bus;
use crate::cluster::fleet::{self, Fleet, Hop, Notice};
use crate::cluster::forward::{Command, Envelope, Forwarded, Reply};
use crate::cluster::relay::{Answer, RelayActor, Upstream};
use crate::restaurant::{
    ChangeStatus, CloseStaffSockets, EngineError, RelaySync, RelaySynced, RestaurantActor,
};
use crate::room::Room;

impl ShardSupervisor {
    /// Sends a message to a restaurant and returns its answer, wherever the restaurant lives: to the
    /// local actor (activating it first if no node owns it), or in a fleet to the node that holds its
    /// lease. While the restaurant changes hands (its owner died or is handing over) the command is
    /// sent again until `lease_ttl` plus 2 s have passed; retries are safe because orders carry
    /// idempotency keys and status changes are idempotent. A forward that timed out is `unavailable`
    /// (the client retries with the same key).
    pub async fn ask<M>(&self, id: RestaurantId, msg: M) -> Result<M::Result, EngineError>
    where
        M: Forwarded,
        M::Result: Send + serde::Serialize + serde::de::DeserializeOwned,
        RestaurantActor: Handler<M>,
    {
        let Some(fleet) = self.fleet() else {
            return self
                .ask_here(id, msg)
                .await
                .map_err(Activation::engine_error);
        };
        let give_up = Instant::now() + self.inner.config.node.lease_ttl + Duration::from_secs(2);
        let mut wait = Duration::from_millis(20);
        loop {
            let cached = fleet
                .known_owner(id)
                .filter(|_| self.active_restaurant(id).is_none());
            let node: Arc<str> = match cached {
                Some(node) => node,
                None => match self.ask_here(id, msg.clone()).await {
                    Ok(answer) => return Ok(answer),
                    Err(Activation::Failed(e)) => return Err(e),
                    Err(Activation::Elsewhere(node)) => {
                        fleet.remember_owner(id, &node);
                        node.into()
                    }
                },
            };
            match fleet.forward(&node, id, msg.clone()).await {
                Ok(Reply::Done(answer)) => return answer,
                // It moved, or its node is gone: read the lease again.
                Ok(Reply::NotOwner) | Err(Hop::NoResponders) => fleet.forget_owner(id),
                Err(Hop::TimedOut) => {
                    fleet.forget_owner(id);
                    return Err(EngineError::Unavailable);
                }
                Err(Hop::Failed) => return Err(EngineError::Unavailable),
            }
            if Instant::now() + wait > give_up {
                return Err(EngineError::Unavailable);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends a message to the restaurant's actor on this node, activating it here if no node holds its
    /// lease; never forwards. Counted against the restaurant's shard. A restaurant that stopped
    /// (passivated) just before the message arrived is activated again and asked once more.
    async fn ask_here<M>(&self, id: RestaurantId, msg: M) -> Result<M::Result, Activation>
    where
        M: Message + Send + Clone + 'static,
        M::Result: Send,
        RestaurantActor: Handler<M>,
    {
        let shard = &self.inner.shards[self.shard_of(id)];
        shard.in_flight.fetch_add(1, Ordering::Relaxed);
        let _done = InFlight(&shard.in_flight);
        let started = std::time::Instant::now();
        for _ in 0..2 {
            let addr = self.activated(id).await?;
            match addr.send(msg.clone()).await {
                Ok(answer) => {
                    shard.handled.fetch_add(1, Ordering::Relaxed);
                    shard.latency.record(started.elapsed());
                    return Ok(answer);
                }
                Err(MailboxError::Closed) => continue,
                Err(MailboxError::Timeout) => return Err(EngineError::Unavailable.into()),
            }
        }
        Err(EngineError::Unavailable.into())
    }

    /// Runs a command another node forwarded; the encoded answer.
    async fn serve_forwarded(&self, payload: Bytes) -> Bytes {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&payload) else {
            tracing::warn!("unreadable forwarded command");
            return Reply::<()>::Done(Err(EngineError::Invalid("unreadable command".into())))
                .encode();
        };
        // Shutting down: nothing new is taken here (its writers are draining, its leases about to be
        // released); the sender waits for the release and takes the restaurant over itself.
        if self.draining() {
            return Reply::<()>::NotOwner.encode();
        }
        let id = envelope.restaurant_id;
        macro_rules! here {
            ($msg:expr) => {
                match self.ask_here(id, $msg).await {
                    Ok(answer) => Reply::Done(Ok(answer)).encode(),
                    Err(Activation::Failed(e)) => Reply::<()>::Done(Err(e)).encode(),
                    Err(Activation::Elsewhere(_)) => Reply::<()>::NotOwner.encode(),
                }
            };
        }
        match envelope.command {
            Command::PlaceOrder(m) => here!(m),
            Command::ChangeStatus(m) => here!(m),
            Command::SetAvailability(m) => here!(m),
            Command::SetOptionAvailability(m) => here!(m),
            Command::SetAccepting(m) => here!(m),
            Command::GetTableMenu(m) => here!(m),
            Command::GetKitchenInfo(m) => here!(m),
            Command::GetLiveOrders(m) => here!(m),
            Command::ApplyAdminChange(m) => here!(m),
            Command::RelaySync(m) => here!(m),
        }
    }

    /// Where a socket for the restaurant subscribes on this node: the restaurant's own actor when this
    /// node owns it (or no node does, and it starts here), else the node's relay of the owner's events.
    pub async fn room(&self, id: RestaurantId) -> Result<Room, EngineError> {
        let Some(fleet) = self.fleet() else {
            return self.restaurant(id).await.map(Room::Owner);
        };
        if let Some(addr) = self.active_restaurant(id).filter(|a| a.connected()) {
            return Ok(Room::Owner(addr));
        }
        if fleet.known_owner(id).is_none() {
            match self.activated(id).await {
                Ok(addr) => return Ok(Room::Owner(addr)),
                Err(Activation::Failed(e)) => return Err(e),
                Err(Activation::Elsewhere(node)) => fleet.remember_owner(id, &node),
            }
        }
        Ok(Room::Relay(self.relay(&fleet, id)))
    }

    /// This node's relay of a restaurant another node owns, started on first use.
    fn relay(&self, fleet: &Arc<Fleet>, id: RestaurantId) -> Addr<RelayActor> {
        if let Some(addr) = fleet.relays().get(&id).filter(|a| a.connected()) {
            return addr.clone();
        }
        let entry = fleet.relays().entry(id);
        match entry {
            dashmap::mapref::entry::Entry::Occupied(mut e) if !e.get().connected() => {
                let addr = self.start_relay(fleet, id);
                e.insert(addr.clone());
                addr
            }
            dashmap::mapref::entry::Entry::Occupied(e) => e.get().clone(),
            dashmap::mapref::entry::Entry::Vacant(e) => {
                let addr = self.start_relay(fleet, id);
                e.insert(addr.clone());
                addr
            }
        }
    }

    fn start_relay(&self, fleet: &Arc<Fleet>, id: RestaurantId) -> Addr<RelayActor> {
        let shard = &self.inner.shards[self.shard_of(id)];
        let engine = self.clone();
        let client = fleet.bus().client().clone();
        let subject = fleet.bus().events_subject(id);
        let ring_size = self.inner.config.restaurant.ring_size;
        let keepalive = (self.inner.config.restaurant.passivate_after / 3)
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        RelayActor::start_in_arbiter(&shard.arbiter.handle(), move |_| {
            RelayActor::new(id, Arc::new(engine), client, subject, ring_size, keepalive)
        })
    }

    /// In a fleet, whether NATS answers within `within`; `None` on a single node.
    pub async fn bus_ready(&self, within: Duration) -> Option<bool> {
        match self.fleet() {
            Some(fleet) => Some(fleet.bus().ready(within).await),
            None => None,
        }
    }

    pub(super) fn fleet(&self) -> Option<Arc<Fleet>> {
        self.inner.fleet.get().cloned()
    }

    /// Joins the fleet on `bus` (cluster mode): the restaurants this node runs publish their events,
    /// this node answers commands forwarded to it and hears the fleet's notices. Call once, before
    /// serving.
    pub fn join_fleet(&self, bus: Bus) -> Arc<Fleet> {
        let fleet = self
            .inner
            .fleet
            .get_or_init(|| Arc::new(Fleet::start(bus)))
            .clone();
        let engine = Arc::downgrade(&self.inner);
        actix::spawn(fleet::answer_commands(fleet.clone(), move |payload| {
            let engine = engine.upgrade().map(|inner| ShardSupervisor { inner });
            async move {
                match engine {
                    Some(engine) => engine.serve_forwarded(payload).await,
                    None => Reply::<()>::NotOwner.encode(),
                }
            }
        }));
        let engine = Arc::downgrade(&self.inner);
        actix::spawn(fleet.clone().hear_notices(move |notice| {
            if let Some(inner) = engine.upgrade() {
                ShardSupervisor { inner }.apply_notice(notice);
            }
        }));
        fleet
    }

    /// The node's fleet notices (cluster mode), for what the server keeps (session caches).
    pub fn fleet_notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        self.fleet().map(|f| f.notices())
    }

    /// Applies a notice on this node: what the engine keeps (sockets, the token directory).
    fn apply_notice(&self, notice: &Notice) {
        match notice {
            Notice::TokensDied { tokens } => {
                for t in tokens {
                    self.inner.tables.remove(t);
                }
            }
            Notice::StaffUserEnded {
                restaurant_id,
                staff_id,
            } => self.close_staff_sockets(*restaurant_id, *staff_id),
            Notice::StaffSessionEnded { .. } => {}
        }
    }

    /// Closes a staff member's kitchen sockets on this node (1008).
    fn close_staff_sockets(
        &self,
        restaurant: RestaurantId,
        staff: scan2order_schema::domain::StaffId,
    ) {
        if let Some(addr) = self.active_restaurant(restaurant) {
            addr.do_send(CloseStaffSockets { staff });
        }
        if let Some(relay) = self
            .fleet()
            .and_then(|f| f.relays().get(&restaurant).map(|r| r.clone()))
        {
            relay.do_send(CloseStaffSockets { staff });
        }
    }

    /// Every session of a staff account ended: their kitchen sockets close on every node, and every
    /// node forgets the sessions it cached.
    pub async fn staff_user_ended(
        &self,
        restaurant: RestaurantId,
        staff: scan2order_schema::domain::StaffId,
    ) {
        self.close_staff_sockets(restaurant, staff);
        if let Some(fleet) = self.fleet() {
            fleet
                .tell(Notice::StaffUserEnded {
                    restaurant_id: restaurant,
                    staff_id: staff,
                })
                .await;
        }
    }

    /// One staff session ended (logout): every other node forgets it too.
    pub async fn staff_session_ended(&self, token_hash: &[u8]) {
        if let Some(fleet) = self.fleet() {
            let token_hash = token_hash.iter().map(|b| format!("{b:02x}")).collect();
            fleet.tell(Notice::StaffSessionEnded { token_hash }).await;
        }
    }
}

/// A relay reaches the restaurant's owner through the engine, wherever the owner lives.
impl Upstream for ShardSupervisor {
    fn sync(&self, id: RestaurantId, msg: RelaySync) -> Answer<RelaySynced> {
        let engine = self.clone();
        Box::pin(async move { engine.ask(id, msg).await.and_then(|r| r) })
    }

    fn change_status(&self, id: RestaurantId, msg: ChangeStatus) -> Answer<Order> {
        let engine = self.clone();
        Box::pin(async move { engine.ask(id, msg).await.and_then(|r| r) })
    }

    /// Forgets a relay that stopped (unless another took its place).
    fn relay_stopped(&self, id: RestaurantId, relay: &Addr<RelayActor>) {
        if let Some(fleet) = self.fleet() {
            fleet.relays().remove_if(&id, |_, a| a == relay);
        }
    }
}
