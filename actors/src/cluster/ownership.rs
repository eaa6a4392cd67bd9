//! # Ownership — which node runs which restaurant
//!
//! A node runs a restaurant's actor only while it holds the restaurant's lease in Postgres
//! (`scan2order_schema::leases`). The [`ShardSupervisor`](crate::shard::ShardSupervisor) takes the lease
//! at activation, before reading the restaurant, and lets it go when the restaurant passivates or the
//! node shuts down. The keeper here renews every lease the node holds in one statement each
//! `lease_ttl / 3`, records the node's heartbeat, and stops any actor whose lease is no longer among
//! the node's (another node took it over while this one was paused or cut off): the writer would refuse
//! its writes anyway; stopping closes its sockets so they reconnect where the restaurant lives now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use scan2order_schema::leases::Takeover;

/// This node's place in the fleet.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Unique in the fleet; the lease rows name it.
    pub node_id: String,
    /// How long a lease lasts without renewal: a dead owner is replaced after about this long.
    pub lease_ttl: Duration,
    /// A fleet waits for a held lease to expire; a single node takes it at once.
    pub takeover: Takeover,
}

impl NodeConfig {
    /// One node on its own: a generated id, and any lease an earlier run left is taken at once.
    pub fn single() -> NodeConfig {
        NodeConfig {
            node_id: generated_node_id(),
            lease_ttl: Duration::from_secs(3),
            takeover: Takeover::Always,
        }
    }

    /// How often the keeper renews: three chances before a lease runs out.
    pub fn renew_every(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_millis(50))
    }
}

/// A node id unique in the fleet: the host's name and a random suffix (a restarted process is a new
/// node; its predecessor's leases are fenced off).
pub fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= 40)
        .unwrap_or_else(|| "node".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// When this node started, as the fleet's node list shows it.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub at: DateTime<Utc>,
}

impl Started {
    pub fn now() -> Started {
        Started { at: Utc::now() }
    }
}
