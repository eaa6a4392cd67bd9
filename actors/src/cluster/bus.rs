//! # Bus — the fleet's NATS connection
//!
//! Nodes of a fleet talk through one NATS: commands go to the node that owns a restaurant (request and
//! reply, on that node's subject), the owner's events go out once on the restaurant's subject for every
//! node with sockets there to relay, and fleet-wide notices (a session ended, a table token died) go to
//! every node. Every subject starts with `cluster.subject_prefix`, so two fleets can share one NATS.
//!
//! Subjects:
//! - `{prefix}.node.{node_id}`: commands for the restaurants that node owns;
//! - `{prefix}.events.{restaurant_id}`: a restaurant's numbered events, published by its owner;
//! - `{prefix}.fleet.{what}`: notices every node acts on.
//!
//! The connection is made in the background and re-made after NATS restarts; [`Bus::ready`] is what
//! `/readyz` asks.

use std::sync::Arc;
use std::time::Duration;

use scan2order_schema::domain::RestaurantId;

/// Where the fleet's NATS is and who this node is on it.
#[derive(Clone, Debug)]
pub struct BusConfig {
    pub url: String,
    pub subject_prefix: String,
    pub node_id: String,
}

/// Cheap to clone; every clone is the same connection.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    prefix: Arc<str>,
    node_id: Arc<str>,
}

impl Bus {
    /// Starts connecting; returns at once (the connection is made, and re-made, in the background).
    /// Fails only on settings that can never work (an address that does not parse).
    pub async fn connect(config: &BusConfig) -> Result<Bus, async_nats::ConnectError> {
        let client = async_nats::ConnectOptions::new()
            .name(&config.node_id)
            .retry_on_initial_connect()
            // Unbounded: a node keeps trying while NATS is away, and says so on /readyz.
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .connect(config.url.as_str())
            .await?;
        Ok(Bus {
            client,
            prefix: config.subject_prefix.as_str().into(),
            node_id: config.node_id.as_str().into(),
        })
    }

    /// The NATS client, for subscriptions and requests.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Connected now (what the client last saw).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Connected, and NATS answers a round trip within `within`.
    pub async fn ready(&self, within: Duration) -> bool {
        self.connected()
            && tokio::time::timeout(within, self.client.flush())
                .await
                .is_ok_and(|r| r.is_ok())
    }

    /// Commands for the restaurants a node owns.
    pub fn node_subject(&self, node_id: &str) -> String {
        format!("{}.node.{node_id}", self.prefix)
    }

    /// A restaurant's events, published by its owner.
    pub fn events_subject(&self, restaurant: RestaurantId) -> String {
        format!("{}.events.{}", self.prefix, restaurant.get().simple())
    }

    /// Notices for every node of the fleet.
    pub fn fleet_subject(&self, what: &str) -> String {
        format!("{}.fleet.{what}", self.prefix)
    }
}
