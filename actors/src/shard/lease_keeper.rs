//! The node's leases: taken at activation, let go when a restaurant passivates, renewed by the keeper
//! every `lease_ttl / 3` with the node's heartbeat, which also stops restaurants whose lease another
//! node took and tells relays which nodes are alive.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use scan2order_schema::domain::RestaurantId;
use scan2order_schema::leases::{self, Fence};

use super::{Activation, Inner, ShardSupervisor};
use crate::cluster::relay::LiveNodes;
use crate::restaurant::{EngineError, LeaseLost, Missing};

impl ShardSupervisor {
    /// Takes the restaurant's lease for this node: its fence, or why not.
    pub(super) async fn take_lease(&self, id: RestaurantId) -> Result<Fence, Activation> {
        let node = &self.inner.config.node;
        let mut conn = self.conn().await?;
        let db = |_| EngineError::Unavailable;
        match leases::acquire(
            &mut conn,
            id.get(),
            &node.node_id,
            node.lease_ttl,
            node.takeover,
        )
        .await
        .map_err(db)?
        {
            Some(leases::Acquired {
                lease,
                previous_node,
            }) => {
                if previous_node.is_some_and(|p| p != node.node_id) {
                    self.inner.takeovers.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("s2o_lease_takeovers_total").increment(1);
                    tracing::info!(restaurant_id = %id, fence = lease.fence, "took over the restaurant's lease");
                }
                Ok(Fence {
                    restaurant_id: lease.restaurant_id,
                    fence: lease.fence,
                })
            }
            // Another node owns it and its lease runs.
            None => match leases::lease_of(&mut conn, id.get()).await.map_err(db)? {
                Some(lease) => Err(Activation::Elsewhere(lease.node_id)),
                None => Err(EngineError::NotFound(Missing::Restaurant).into()),
            },
        }
    }

    /// Releases leases in the background (a passivated restaurant, a failed activation), so another
    /// node can start the restaurant at once.
    pub(super) fn let_go(&self, held: Vec<Fence>) {
        let pool = self.inner.pool.clone();
        let node_id = self.inner.config.node.node_id.clone();
        actix::spawn(async move {
            if let Ok(mut conn) = pool.get().await {
                if let Err(e) = leases::release(&mut conn, &node_id, &held).await {
                    tracing::warn!(error = %e, "could not release leases; they expire on their own");
                }
            }
        });
    }
}

/// Renews the node's leases every `lease_ttl / 3`, reports the node's heartbeat, and stops the
/// restaurants whose lease another node holds now. Ends with the engine.
pub(super) async fn keep_leases(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        if strong.released.load(Ordering::SeqCst) {
            return;
        }
        let every = strong.config.node.renew_every();
        if let Err(e) = renew_once(&strong).await {
            tracing::warn!(error = %e, "could not renew the node's leases");
        }
        drop(strong);
        tokio::time::sleep(every).await;
    }
}

pub(super) async fn renew_once(
    inner: &Inner,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let node = &inner.config.node;
    let mut conn = inner.pool.get().await?;
    let round = Instant::now();
    let held: HashSet<Fence> = leases::renew(&mut conn, &node.node_id, node.lease_ttl)
        .await?
        .into_iter()
        .collect();
    let lost: Vec<(RestaurantId, Fence)> = inner
        .fences
        .iter()
        .filter(|e| e.value().1 < round && !held.contains(&e.value().0))
        .map(|e| (*e.key(), e.value().0))
        .collect();
    for (id, fence) in lost {
        let addr = inner.registry.get(&id).and_then(|c| c.get().cloned());
        match addr.filter(|a| a.connected()) {
            Some(addr) => addr.do_send(LeaseLost),
            None => {
                inner.fences.remove_if(&id, |_, (f, _)| *f == fence);
            }
        }
    }
    let owned = i32::try_from(held.len()).unwrap_or(i32::MAX);
    let sockets = i32::try_from(crate::session::open_sockets()).unwrap_or(i32::MAX);
    leases::heartbeat(&mut conn, &node.node_id, inner.started.at, owned, sockets).await?;
    if let Some(fleet) = inner.fleet.get().filter(|f| !f.relays().is_empty()) {
        let live: HashSet<String> = leases::live_nodes(&mut conn, node.lease_ttl)
            .await?
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        let live = Arc::new(live);
        for relay in fleet.relays().iter() {
            relay.value().do_send(LiveNodes(live.clone()));
        }
    }
    Ok(())
}
