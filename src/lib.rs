//! # Scan2Order
//!
//! The engine behind QR-code ordering at restaurant tables. This crate is the server around the actors:
//!
//! # Layout
//! - [`config`]: typed settings from `config/default.toml`, a file and the environment;
//! - [`startup`]: builds the application (database, shards, notifier, HTTP) and shuts it down cleanly;
//! - [`routes`]: the REST and socket endpoints of PROTOCOL.md, with [`auth`] extractors and [`error`]
//!   mapping every failure to `{"error", "message"}`;
//! - [`limits`]: tiered rate limits and the client address they key on; [`session_cache`]: sessions
//!   the hot write routes may take from memory;
//! - [`socket_admission`]: who may open which socket; [`lean`]: the socket transport under the session
//!   actors (own acceptor; an idle socket holds no buffer), and [`ws`]: the actix-ws reference
//!   transport;
//! - [`security_headers`]: the CSP and the other headers on every answer;
//! - [`otp`]: one-time codes (issue within caps, deliver, verify, open a session);
//! - [`whatsapp`]: the WhatsApp Cloud API client and the development notifier;
//! - [`qr`]: table QR codes (SVG, PNG) and the printable sheet;
//! - [`db`]: database creation, embedded migrations and the pool; [`seed`]: the demo data.
//!
//! The actors live in `scan2order-actors`, the schema and wire types in `scan2order-schema`.

pub mod auth;
pub mod byte_cache;
pub mod config;
pub mod context;
pub mod db;
pub mod drain;
pub mod error;
pub mod extract;
pub mod gzip;
pub mod lean;
pub mod limits;
pub mod metrics;
pub mod otp;
pub mod photos;
pub mod qr;
pub mod routes;
pub mod security_headers;
pub mod seed;
pub mod session_cache;
pub mod shards_report;
pub mod socket_admission;
pub mod startup;
pub mod telemetry;
pub mod whatsapp;
pub mod ws;

/// Installs the process-wide TLS crypto provider once (reqwest's rustls needs exactly one).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
