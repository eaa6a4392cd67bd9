//! Tiered rate limits (governor, keyed) and the client address they key on.
//!
//! Per client IP: the general API, order creation, auth calls (login and one-time codes) and socket
//! connects. Per staff account: failed logins, then a lockout. Per phone, one-time-code sends are capped
//! from the database (see `routes::guest`), so the cap holds across restarts and nodes. Idle keys are
//! evicted on a schedule, so no limiter grows without bound whatever keys clients invent.
//!
//! The client IP is the socket peer, unless the peer is one of `rate_limits.trusted_proxies`: only then
//! is `X-Forwarded-For` read, taking the right-most entry that is not itself a trusted proxy.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RateLimitSettings;
use crate::error::ApiError;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

/// Which tier a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Api,
    Orders,
    Auth,
    Sockets,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Api => "api",
            Tier::Orders => "orders",
            Tier::Auth => "auth",
            Tier::Sockets => "sockets",
        }
    }
}

type IpLimiter = DefaultKeyedRateLimiter<IpAddr>;

pub struct RateLimits {
    settings: RateLimitSettings,
    proxies: Vec<IpNet>,
    api: IpLimiter,
    orders: IpLimiter,
    auth: IpLimiter,
    sockets: IpLimiter,
    login_failures: DefaultKeyedRateLimiter<String>,
    /// Accounts locked until an instant (only accounts that passed the failure limit are here).
    locked: DashMap<String, Instant>,
}

fn quota(count: u32, window: Duration) -> Quota {
    let count = NonZeroU32::new(count.max(1)).unwrap_or(NonZeroU32::MIN);
    let period = window / count.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(count)
}

const MINUTE: Duration = Duration::from_secs(60);
const QUARTER_HOUR: Duration = Duration::from_secs(15 * 60);

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<RateLimits> {
        let proxies = settings
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "rate_limits.trusted_proxies: {p:?} is not a CIDR or address"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RateLimits {
            proxies,
            api: RateLimiter::keyed(quota(settings.api_per_minute, MINUTE)),
            orders: RateLimiter::keyed(quota(settings.orders_per_minute, MINUTE)),
            auth: RateLimiter::keyed(quota(settings.auth_per_15_minutes, QUARTER_HOUR)),
            sockets: RateLimiter::keyed(quota(settings.socket_connects_per_minute, MINUTE)),
            login_failures: RateLimiter::keyed(quota(
                settings.login_failures_per_15_minutes,
                QUARTER_HOUR,
            )),
            locked: DashMap::new(),
            settings: settings.clone(),
        })
    }

    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// The client address of a request (see the module doc for `X-Forwarded-For`).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        self.client_ip_from(req.peer_addr()?.ip(), forwarded)
    }

    /// The client address from the socket peer and the `X-Forwarded-For` headers (the lean socket
    /// transport has no `HttpRequest`).
    pub fn client_ip_from<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl Iterator<Item = &'a str>,
    ) -> Option<IpAddr> {
        // `to_canonical`: a dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let entries: Vec<&str> = forwarded
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        // Right to left: each hop appends, so only entries right of the first untrusted one were
        // written by our proxies. An entry that is not an address ends the walk at the proxy: what
        // stands left of it is the client's to invent.
        for entry in entries.into_iter().rev() {
            match entry.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if self.is_trusted(ip) => continue,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(peer),
            }
        }
        Some(peer)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|net| net.contains(&ip))
    }

    fn limiter(&self, tier: Tier) -> &IpLimiter {
        match tier {
            Tier::Api => &self.api,
            Tier::Orders => &self.orders,
            Tier::Auth => &self.auth,
            Tier::Sockets => &self.sockets,
        }
    }

    /// Counts one request of `ip` against `tier`; the error carries `Retry-After`.
    pub fn check(&self, tier: Tier, ip: IpAddr) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        self.limiter(tier)
            .check_key(&limit_key(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                tracing::info!(tier = tier.as_str(), "rate limited");
                metrics::counter!("s2o_rate_limited_total", "tier" => tier.as_str()).increment(1);
                ApiError::rate_limited(wait.as_secs() + 1)
            })
    }

    /// Refuses a login attempt while the account is locked.
    pub fn check_account(&self, username: &str) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        let key = username.to_lowercase();
        if let Some(until) = self.locked.get(&key).map(|u| *u) {
            let now = Instant::now();
            if until > now {
                return Err(account_locked((until - now).as_secs() + 1));
            }
            self.locked.remove(&key);
        }
        Ok(())
    }

    /// Records a failed login; past the limit the account is locked for the rest of the window.
    pub fn login_failed(&self, username: &str) -> Result<(), ApiError> {
        if !self.settings.enabled {
            return Ok(());
        }
        let key = username.to_lowercase();
        if let Err(not_until) = self.login_failures.check_key(&key) {
            let wait = not_until
                .wait_time_from(DefaultClock::default().now())
                .max(Duration::from_secs(1));
            tracing::warn!("account locked after repeated failed logins");
            self.locked.insert(key, Instant::now() + wait);
            return Err(account_locked(wait.as_secs() + 1));
        }
        Ok(())
    }

    /// Evicts keys whose state is back to fresh, and expired locks.
    pub fn evict_idle(&self) {
        for l in [&self.api, &self.orders, &self.auth, &self.sockets] {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.login_failures.retain_recent();
        self.login_failures.shrink_to_fit();
        let now = Instant::now();
        self.locked.retain(|_, until| *until > now);
        self.locked.shrink_to_fit();
    }

    /// Keys held by every limiter (for metrics and tests).
    pub fn keys(&self) -> usize {
        self.api.len()
            + self.orders.len()
            + self.auth.len()
            + self.sockets.len()
            + self.login_failures.len()
    }
}

/// The key an address is counted under. One IPv6 subscriber holds a whole /64 (2^64 addresses), so
/// IPv6 is counted per /64; an IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

fn account_locked(retry_after: u64) -> ApiError {
    ApiError::new(
        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        "account_locked",
        "too many failed sign-ins for this account; try again later",
    )
    .with_retry_after(retry_after)
}

/// The tier a request counts against besides the general API tier, if any.
fn special_tier(method: &Method, path: &str) -> Option<Tier> {
    if path.starts_with("/ws/") {
        return Some(Tier::Sockets);
    }
    if *method != Method::POST {
        return None;
    }
    match path {
        "/api/v1/orders" => Some(Tier::Orders),
        "/api/v1/auth/login" | "/api/v1/otp/send" | "/api/v1/otp/verify" => Some(Tier::Auth),
        _ => None,
    }
}

/// Middleware: counts every API request and socket connect against its tiers.
pub async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let path = req.path();
    let counted = path.starts_with("/api/") || path.starts_with("/ws/");
    if counted {
        if let Some(limits) = req.app_data::<web::Data<RateLimits>>() {
            if let Some(ip) = limits.client_ip(req.request()) {
                if let Some(tier) = special_tier(req.method(), path) {
                    limits.check(tier, ip)?;
                }
                if path.starts_with("/api/") {
                    limits.check(Tier::Api, ip)?;
                }
            }
        }
    }
    next.call(req).await
}

/// Evicts idle keys every `evict_every_s` for as long as the process runs.
pub fn spawn_eviction(limits: Arc<RateLimits>) {
    let every = Duration::from_secs(limits.settings.evict_every_s.max(1));
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            limits.evict_idle();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn quotas_allow_the_configured_burst_then_refuse() {
        let lim: IpLimiter = RateLimiter::keyed(quota(3, MINUTE));
        let ip: IpAddr = "203.0.113.9".parse().expect("ip");
        for _ in 0..3 {
            assert!(lim.check_key(&ip).is_ok());
        }
        assert!(lim.check_key(&ip).is_err());
        let other: IpAddr = "203.0.113.10".parse().expect("ip");
        assert!(lim.check_key(&other).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().expect("ip");
        assert_eq!(
            limit_key(mapped),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn a_million_distinct_keys_are_evicted_once_idle() {
        let clock = FakeRelativeClock::default();
        let lim = RateLimiter::dashmap_with_clock(quota(120, MINUTE), clock.clone());
        for k in 0..1_000_000u32 {
            assert!(lim.check_key(&k).is_ok());
        }
        assert_eq!(lim.len(), 1_000_000);
        clock.advance(MINUTE);
        lim.retain_recent();
        lim.shrink_to_fit();
        assert_eq!(lim.len(), 0);
    }
}
