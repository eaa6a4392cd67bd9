//! # scan2order-schema
//!
//! What every other crate shares: the diesel [`schema`] (kept in step with `migrations/`), the row
//! [`models`] with their queries (real menus' option groups and options in [`options`]), the [`domain`] types (typed ids, statuses, phones, limits), the random [`tokens`] and the
//! [`wire`] types of PROTOCOL.md, which the load generator reuses.

pub mod domain;
pub mod leases;
pub mod media;
pub mod models;
pub mod options;
pub mod schema;
pub mod stored;
pub mod tokens;
pub mod wire;

/// The async Postgres connection used everywhere.
pub type DbConn = diesel_async::AsyncPgConnection;
/// The shared connection pool.
pub type DbPool = diesel_async::pooled_connection::bb8::Pool<diesel_async::AsyncPgConnection>;
