//! The one application context, registered once as app data. Every field says what it is for.

use std::sync::Arc;

use scan2order_actors::notifier::MessageSender;
use scan2order_actors::shard::ShardSupervisor;
use scan2order_schema::DbPool;

use crate::config::Settings;
use crate::limits::RateLimits;
use crate::session_cache::SessionCaches;

#[derive(Clone)]
pub struct AppContext {
    /// Postgres: reads, sessions and OTP challenges (orders and menu flags are written by the writers).
    pub pool: DbPool,
    /// The restaurant registry and table directory: the only way handlers reach restaurants.
    pub engine: ShardSupervisor,
    /// Typed settings, loaded once.
    pub settings: Arc<Settings>,
    /// Tiered rate limits keyed by client IP and staff account.
    pub limits: Arc<RateLimits>,
    /// Sends one-time codes (the WhatsApp Cloud API client, or the development log).
    pub sender: Arc<dyn MessageSender>,
    /// Sessions the hot write routes may take from memory; their writes confirm them.
    pub sessions: Arc<SessionCaches>,
}
