//! Settings: `config/default.toml` (embedded), an optional file (`--config` or `SCAN2ORDER_CONFIG`), then
//! environment variables `SCAN2ORDER__SECTION__KEY`. One typed [`Settings`] struct; secrets are [`Secret`]s,
//! which never print.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The shipped defaults, compiled in so the binary runs from anywhere.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A value that must never reach a log line or an error body.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub engine: EngineSettings,
    pub sockets: SocketSettings,
    pub auth: AuthSettings,
    pub whatsapp: WhatsAppSettings,
    pub rate_limits: RateLimitSettings,
    pub demo: DemoSettings,
    pub log: LogSettings,
    pub cluster: ClusterSettings,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `development` (the demo) or `production` (start-up refuses unsafe settings).
    pub environment: Environment,
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub public_base_url: String,
    pub body_limit_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May carry a password: printed only through [`DatabaseSettings::redacted_url`].
    pub url: Secret,
    pub pool_size: u32,
    pub connect_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub create_if_missing: bool,
}

impl DatabaseSettings {
    /// The URL with any password replaced, for logs.
    pub fn redacted_url(&self) -> String {
        let url = self.url.expose();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &url[scheme + 3..at];
                match creds.find(':') {
                    Some(colon) => format!(
                        "{}{}:***{}",
                        &url[..scheme + 3],
                        &creds[..colon],
                        &url[at..]
                    ),
                    None => url.to_string(),
                }
            }
            _ => url.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    pub shards: usize,
    pub ring_size: usize,
    pub recent_keys: usize,
    pub passivate_after_s: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSettings {
    /// Which transport carries sockets: `lean` (the default) or the `actix-ws` reference.
    #[serde(default)]
    pub transport: SocketTransport,
    pub ping_interval_s: u64,
    pub idle_timeout_s: u64,
    pub resume_grace_ms: u64,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
    pub max_inbound_per_sec: u32,
    /// Kernel send buffer per socket, bytes (Linux doubles it; 0 leaves the kernel's autotuning, which
    /// lets one stalled client pin up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default). Bounds the
    /// kernel memory a socket can hold and how much a stalled client absorbs before its outbound queue
    /// fills and it is closed with 1013.
    pub send_buffer_bytes: usize,
}

/// The socket transport under the session actors.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum SocketTransport {
    /// `scan2order::lean`: sockets are taken off actix-web at accept time; an idle socket holds no
    /// buffer.
    #[default]
    #[serde(rename = "lean")]
    Lean,
    /// `scan2order::ws` (actix-ws over actix-web): ~16 KB per idle socket; kept as the reference for
    /// benchmarks.
    #[serde(rename = "actix-ws")]
    ActixWs,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub staff_session_hours: i64,
    pub customer_session_days: i64,
    pub otp_ttl_s: i64,
    pub otp_resend_after_s: i64,
    pub otp_max_attempts: i32,
    /// How long placing an order or changing a status over REST may trust a session the database
    /// confirmed, instead of looking it up again (the write still confirms it). 0: always look up.
    pub session_cache_ttl_s: u64,
    /// Most sessions remembered (per kind: guests, staff).
    pub session_cache_entries: usize,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhatsAppMode {
    Cloud,
    Log,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppSettings {
    pub mode: WhatsAppMode,
    pub api_base_url: String,
    pub phone_number_id: String,
    pub access_token: Secret,
    pub otp_template: String,
    pub order_received_template: String,
    pub order_ready_template: String,
    pub order_cancelled_template: String,
    pub language: String,
    pub request_timeout_ms: u64,
    pub outbox_poll_ms: u64,
}

/// Tiered rate limits ([`crate::limits`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Off only for load tests that must measure the engine, not the limits.
    pub enabled: bool,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    pub api_per_minute: u32,
    pub orders_per_minute: u32,
    /// Login, one-time-code send and verify, per 15 minutes.
    pub auth_per_15_minutes: u32,
    pub socket_connects_per_minute: u32,
    /// One-time codes sent to one phone.
    pub otp_sends_per_phone_10_minutes: i64,
    pub otp_sends_per_phone_day: i64,
    /// Failed logins of one account per 15 minutes before it is locked for the rest of that window.
    pub login_failures_per_15_minutes: u32,
    /// How often idle keys are evicted.
    pub evict_every_s: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoSettings {
    pub seed_on_start: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `[cluster]` of PROTOCOL.md: a fleet of nodes on one Postgres and one NATS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `false`: one node (it still takes each restaurant's lease, and takes it at once from an earlier
    /// run, whose writes are fenced off from then on).
    pub enabled: bool,
    pub nats_url: String,
    /// Unique in the fleet; empty: generated at start.
    pub node_id: String,
    /// How long a restaurant's lease lasts without renewal.
    pub lease_ttl_ms: u64,
    /// Prefix of every NATS subject, so two fleets can share one NATS.
    pub subject_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
    /// Fraction of requests logged at info (0 = none, 1 = all); server errors are always logged.
    pub request_sample: f64,
}

impl Settings {
    /// Defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let cfg = builder
            .add_source(
                config::Environment::with_prefix("SCAN2ORDER")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?;
        let settings: Settings = cfg.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The shipped defaults alone (tests start from these).
    pub fn defaults() -> anyhow::Result<Settings> {
        let cfg = config::Config::builder()
            .add_source(config::File::from_str(
                DEFAULT_TOML,
                config::FileFormat::Toml,
            ))
            .build()?;
        Ok(cfg.try_deserialize()?)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.http.public_base_url.starts_with("http://")
                || self.http.public_base_url.starts_with("https://"),
            "http.public_base_url must start with http:// or https://"
        );
        anyhow::ensure!(
            self.database.pool_size > 0,
            "database.pool_size must be at least 1"
        );
        anyhow::ensure!(
            self.sockets.outbound_queue > 0,
            "sockets.outbound_queue must be at least 1"
        );
        anyhow::ensure!(
            self.cluster.lease_ttl_ms >= 300,
            "cluster.lease_ttl_ms must be at least 300 (it is renewed every third of it)"
        );
        anyhow::ensure!(
            self.cluster.node_id.len() <= 64
                && self
                    .cluster
                    .node_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
            "cluster.node_id must be at most 64 letters, digits, '-', '_' or '.'"
        );
        anyhow::ensure!(
            !self.cluster.enabled || !self.cluster.nats_url.trim().is_empty(),
            "cluster.enabled = true needs cluster.nats_url"
        );
        if self.whatsapp.mode == WhatsAppMode::Cloud {
            anyhow::ensure!(
                !self.whatsapp.phone_number_id.is_empty() && !self.whatsapp.access_token.is_empty(),
                "whatsapp.mode = \"cloud\" needs whatsapp.phone_number_id and whatsapp.access_token"
            );
        }
        if self.http.environment == Environment::Production {
            let problems = self.production_problems();
            anyhow::ensure!(
                problems.is_empty(),
                "refusing to start: http.environment = \"production\" with unsafe settings:\n  - {}",
                problems.join("\n  - ")
            );
        }
        Ok(())
    }

    /// What makes these settings unsafe for real guests (empty when they are fine).
    pub fn production_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.whatsapp.mode == WhatsAppMode::Log {
            out.push(
                "whatsapp.mode = \"log\" is the development notifier: it writes one-time codes to the log and \
                 sends nothing; set mode = \"cloud\" with the Cloud API credentials"
                    .to_string(),
            );
        }
        if self.whatsapp.access_token.expose().trim().is_empty()
            || self.whatsapp.access_token.expose().contains("CHANGE-ME")
        {
            out.push("whatsapp.access_token is empty or still the example value".to_string());
        }
        if self.database.url.expose().contains("CHANGE-ME") {
            out.push("database.url still holds the example password".to_string());
        }
        if !self.http.public_base_url.starts_with("https://") {
            out.push(format!(
                "http.public_base_url = {:?}: guests must reach the service over https (cookies are only \
                 Secure then, and QR codes print this address)",
                self.http.public_base_url
            ));
        }
        if self.demo.seed_on_start {
            out.push(
                "demo.seed_on_start = true would create demo logins with published passwords"
                    .to_string(),
            );
        }
        if !self.rate_limits.enabled {
            out.push(
                "rate_limits.enabled = false leaves one-time codes and logins open to brute force"
                    .to_string(),
            );
        }
        out
    }

    pub fn workers(&self) -> usize {
        if self.http.workers == 0 {
            num_cpus()
        } else {
            self.http.workers
        }
    }

    pub fn shards(&self) -> usize {
        if self.engine.shards == 0 {
            num_cpus()
        } else {
            self.engine.shards
        }
    }

    pub fn public_base_url(&self) -> &str {
        self.http.public_base_url.trim_end_matches('/')
    }

    /// Cookies get `Secure` when guests reach us over https.
    pub fn secure_cookies(&self) -> bool {
        self.http.public_base_url.starts_with("https://")
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.database.write_timeout_ms)
    }

    /// This node's id and leases.
    pub fn node(&self) -> scan2order_actors::cluster::ownership::NodeConfig {
        use scan2order_actors::cluster::ownership::{generated_node_id, NodeConfig};
        use scan2order_schema::leases::Takeover;
        NodeConfig {
            node_id: if self.cluster.node_id.is_empty() {
                generated_node_id()
            } else {
                self.cluster.node_id.clone()
            },
            lease_ttl: Duration::from_millis(self.cluster.lease_ttl_ms),
            takeover: if self.cluster.enabled {
                Takeover::WhenExpired
            } else {
                Takeover::Always
            },
        }
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_defaults_parse_and_validate() {
        let s = Settings::defaults().expect("defaults parse");
        s.validate().expect("defaults are valid");
        assert_eq!(s.whatsapp.mode, WhatsAppMode::Log);
        assert_eq!(s.http.body_limit_bytes, 64 * 1024);
        assert_eq!(s.auth.otp_max_attempts, 5);
    }

    fn keys(toml_text: &str) -> std::collections::BTreeSet<String> {
        let value: config::Value = config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .build()
            .expect("parses")
            .cache;
        let mut out = std::collections::BTreeSet::new();
        if let Ok(sections) = value.into_table() {
            for (section, v) in sections {
                if let Ok(table) = v.into_table() {
                    for key in table.keys() {
                        out.insert(format!("{section}.{key}"));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_production_example_documents_every_setting_and_passes_the_production_check() {
        let example = include_str!("../config/production.example.toml");
        assert_eq!(
            keys(example),
            keys(DEFAULT_TOML),
            "production.example.toml and default.toml differ in keys"
        );
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(example, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("the example deserialises into Settings");
        let problems = settings.production_problems();
        // Only the placeholders the operator must fill in are left.
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("access_token")));
        assert!(problems.iter().any(|p| p.contains("database.url")));
    }

    #[test]
    fn production_refuses_the_development_notifier_http_and_demo_logins() {
        let mut s = Settings::defaults().expect("defaults");
        s.http.environment = Environment::Production;
        let err = s
            .validate()
            .expect_err("unsafe production settings are refused")
            .to_string();
        for needle in [
            "whatsapp.mode",
            "https",
            "demo.seed_on_start",
            "access_token",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let db = DatabaseSettings {
            url: Secret::new("postgres://app:hunter2@db:5432/x"),
            pool_size: 1,
            connect_timeout_ms: 1,
            write_timeout_ms: 1,
            create_if_missing: false,
        };
        assert_eq!(db.redacted_url(), "postgres://app:***@db:5432/x");
        assert!(!format!("{db:?}").contains("hunter2"));
    }
}
