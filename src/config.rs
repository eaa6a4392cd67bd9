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
    pub rate_limits: crate::limits::RateLimitSettings,
    pub demo: DemoSettings,
    pub log: LogSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
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
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSettings {
    pub ping_interval_s: u64,
    pub idle_timeout_s: u64,
    pub resume_grace_ms: u64,
    pub outbound_queue: usize,
    pub max_frame_bytes: usize,
    pub max_inbound_per_sec: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub staff_session_hours: i64,
    pub customer_session_days: i64,
    pub otp_ttl_s: i64,
    pub otp_resend_after_s: i64,
    pub otp_max_attempts: i32,
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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
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
        if self.whatsapp.mode == WhatsAppMode::Cloud {
            anyhow::ensure!(
                !self.whatsapp.phone_number_id.is_empty() && !self.whatsapp.access_token.is_empty(),
                "whatsapp.mode = \"cloud\" needs whatsapp.phone_number_id and whatsapp.access_token"
            );
        }
        Ok(())
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
