//! # scan2order-actors
//!
//! Every actor of the engine and its messages:
//! - [`admin`]: admin changes applied by a restaurant's own actor;
//! - [`cluster`]: the fleet: leases (one owner per restaurant), the NATS bus, forwarding commands to
//!   the owner and relaying its events to sockets on other nodes;
//! - [`shard`]: the shard supervisor, its arbiters, the restaurant registry and table directory;
//! - [`restaurant`]: one actor per active restaurant, the single writer of its orders and menu flags;
//! - [`writer`]: one persistence writer per shard, group commit;
//! - [`room`]: where a socket subscribes on this node (the restaurant's actor, or a relay);
//! - [`session`]: a socket session (guest table or kitchen), behind the [`sink`] seam;
//! - [`notifier`]: drains the notification outbox to WhatsApp.

pub mod admin;
pub mod cluster;
pub mod notifier;
pub mod restaurant;
pub mod room;
pub mod session;
pub mod shard;
pub mod sink;
pub mod writer;
