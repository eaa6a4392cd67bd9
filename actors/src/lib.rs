//! # scan2order-actors
//!
//! Every actor of the engine and its messages:
//! - [`admin`]: admin changes applied by a restaurant's own actor;
//! - [`bus`]: the fleet's NATS connection and its subjects;
//! - [`ownership`]: the leases by which one node at a time runs a restaurant;
//! - [`shard`]: the shard supervisor, its arbiters, the restaurant registry and table directory;
//! - [`restaurant`]: one actor per active restaurant, the single writer of its orders and menu flags;
//! - [`writer`]: one persistence writer per shard, group commit;
//! - [`session`]: a socket session (guest table or kitchen), behind the [`sink`] seam;
//! - [`notifier`]: drains the notification outbox to WhatsApp.

pub mod admin;
pub mod bus;
pub mod notifier;
pub mod ownership;
pub mod restaurant;
pub mod session;
pub mod shard;
pub mod sink;
pub mod writer;
