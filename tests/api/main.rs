//! Integration tests: the real server on port 0 against a fresh Postgres database per test.

mod helpers;
mod hostile_text;
#[path = "../../actors/tests/support/nats.rs"]
mod nats;

mod admin;
mod admin_ordering;
mod attacks;
mod cluster;
mod concurrency;
mod durability;
mod errors;
mod fuzz;
mod health;
mod isolation;
mod operations;
mod orders;
mod otp;
mod ownership;
mod photos;
mod real_menus;
mod reconcile;
mod resume;
mod sessions;
mod slow_consumer;
mod sockets;
mod ws_conformance;
