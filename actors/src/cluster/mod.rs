//! # The fleet
//!
//! Nodes of a fleet share one Postgres and one NATS. Exactly one node at a time runs a restaurant's
//! actor (it holds the restaurant's lease, [`ownership`]); any node serves any call and any socket:
//! - [`bus`]: the NATS connection and its subjects;
//! - [`forward`]: commands sent to the owner over request/reply, answered with the owner's answer;
//! - [`frames`]: the owner's events, published once per restaurant subject;
//! - [`relay`]: on the other nodes, one actor per restaurant following that stream for its sockets;
//! - [`fleet`]: this node's loops on the bus (publisher, responder, fleet notices) and what it knows
//!   of other nodes' restaurants.
//!
//! The seam is [`crate::shard::ShardSupervisor`]: `ask` reaches the restaurant wherever it lives, and
//! `room` gives a socket the actor or the relay; handlers do not know which.

pub mod bus;
pub mod fleet;
pub mod forward;
pub mod frames;
pub mod ownership;
pub mod relay;
