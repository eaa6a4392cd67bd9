//! What the engine's own integration tests share.

pub mod nats;
