//! Staff and guest authentication: opaque random tokens (only their SHA-256 is stored), argon2id
//! passwords, and the extractors [`Staff`] and [`Customer`].

use std::future::Future;
use std::pin::Pin;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use chrono::Utc;
use scan2order_schema::domain::{Phone, RestaurantId, StaffId};
use scan2order_schema::models::{CustomerSession, StaffUserRow};
use scan2order_schema::tokens::{random_url_safe, token_hash};
use scan2order_schema::wire::Role;

use crate::context::AppContext;
use crate::error::ApiError;
use crate::session_cache::key_of;
use scan2order_actors::writer::SessionCheck;

/// The staff session cookie.
pub const SESSION_COOKIE: &str = "s2o_session";

/// Argon2id with the crate's recommended parameters.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
}

/// Checks a password; a malformed stored hash counts as a mismatch.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Threads that hash and verify passwords. Argon2id takes ~19 MiB per hash; on a fixed pair of threads
/// that memory is reused, where the blocking pool's many threads would each keep an allocator arena of
/// it, and concurrent logins queue instead of multiplying it.
const PASSWORD_THREADS: usize = 2;

type PasswordJob = Box<dyn FnOnce() + Send>;

fn password_pool() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<PasswordJob>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<PasswordJob>>> =
        std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<PasswordJob>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..PASSWORD_THREADS {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("s2o-password-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
        }
        std::sync::Mutex::new(tx)
    })
}

/// Runs password work on the password threads and awaits its result.
pub async fn on_password_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: PasswordJob = Box::new(move || {
        let _ = tx.send(work());
    });
    password_pool()
        .lock()
        .map_err(|_| ApiError::internal("password threads", "poisoned"))?
        .send(job)
        .map_err(|e| ApiError::internal("password threads", e))?;
    rx.await
        .map_err(|e| ApiError::internal("password threads", e))
}

/// A hash nobody's password matches, verified for unknown users so that they take as long as known ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_url_safe(24)).unwrap_or_default())
}

/// The parts of a request that staff authentication and the same-origin check look at. Built from an
/// actix request ([`RequestParts::of`]) or from a raw WebSocket upgrade head (the lean transport), so
/// both paths share one implementation.
#[derive(Clone, Debug, Default)]
pub struct RequestParts<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The query string, without `?`.
    pub query: &'a str,
    /// Every `Cookie` header.
    pub cookies: Vec<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Host` header (or the request target's authority).
    pub host: Option<&'a str>,
}

impl<'a> RequestParts<'a> {
    pub fn of(req: &'a HttpRequest) -> RequestParts<'a> {
        use actix_web::http::header;
        let headers = req.headers();
        let one = |name| headers.get(name).and_then(|v| v.to_str().ok());
        RequestParts {
            authorization: one(header::AUTHORIZATION),
            query: req.query_string(),
            cookies: headers
                .get_all(header::COOKIE)
                .filter_map(|v| v.to_str().ok())
                .collect(),
            origin: one(header::ORIGIN),
            host: one(header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str())),
        }
    }

    /// The bearer token, if any.
    pub fn bearer(&self) -> Option<String> {
        let (scheme, token) = self.authorization?.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_string())
    }

    /// The value of the first cookie called `name` (percent-decoded, as actix-web reads cookies).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .flat_map(|h| h.split(';'))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .filter_map(|c| actix_web::cookie::Cookie::parse_encoded(c).ok())
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string())
    }

    /// The staff token: bearer header or session cookie; sockets also accept `?token=`. The flag says
    /// whether it came from the cookie.
    pub fn staff_token(&self, allow_query: bool) -> Option<(String, bool)> {
        if let Some(t) = self.bearer() {
            return Some((t, false));
        }
        // A socket's explicit `?token=` wins over the cookie: another tab may have signed in as someone
        // else.
        if allow_query {
            if let Ok(q) =
                web::Query::<std::collections::HashMap<String, String>>::from_query(self.query)
            {
                if let Some(t) = q.get("token").filter(|t| !t.is_empty()) {
                    return Some((t.clone(), false));
                }
            }
        }
        self.cookie(SESSION_COOKIE).map(|c| (c, true))
    }

    /// Whether `Origin` is this site: the configured public origin (`public`, without a trailing
    /// slash) or the origin of the `Host` the browser addressed (a foreign page cannot forge either in
    /// a victim's browser).
    pub fn same_origin(&self, public: &str) -> bool {
        let Some(origin) = self.origin else {
            return false;
        };
        if !public.is_empty() && origin.eq_ignore_ascii_case(public) {
            return true;
        }
        // The `Host` header itself, not `connection_info()`: that would believe `X-Forwarded-Host` and
        // `Forwarded` from any peer.
        origin.split_once("://").is_some_and(|(scheme, rest)| {
            (scheme == "http" || scheme == "https")
                && self
                    .host
                    .is_some_and(|host| rest.eq_ignore_ascii_case(host))
        })
    }
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    RequestParts::of(req).bearer()
}

/// The staff token of a request: bearer header or session cookie; sockets also accept `?token=`.
pub fn staff_token(req: &HttpRequest, allow_query: bool) -> Option<(String, bool)> {
    RequestParts::of(req).staff_token(allow_query)
}

/// A signed-in staff member.
#[derive(Clone, Debug)]
pub struct Staff {
    pub id: StaffId,
    pub username: String,
    pub role: Role,
    pub restaurant_id: Option<RestaurantId>,
    /// True when the request authenticated with the cookie (state changes then need a same-origin check).
    pub via_cookie: bool,
    pub row: StaffUserRow,
    /// Set when the session came from the session cache: the write this request makes must confirm it
    /// in its own transaction.
    pub unconfirmed: Option<SessionCheck>,
}

impl Staff {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The restaurant a kitchen call acts on: a chef's own, or for an admin the `restaurant_id` asked for.
    pub fn kitchen_restaurant(
        &self,
        asked: Option<RestaurantId>,
    ) -> Result<RestaurantId, ApiError> {
        match self.role {
            Role::Chef => {
                let own = self.restaurant_id.ok_or_else(ApiError::forbidden)?;
                match asked {
                    Some(other) if other != own => Err(ApiError::not_found()),
                    _ => Ok(own),
                }
            }
            Role::Admin => {
                asked.ok_or_else(|| ApiError::invalid("restaurant_id: required for admin accounts"))
            }
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// A session lookup, bounded like a write (`database.write_timeout_ms`): a database that does not
/// answer (paused, unreachable) gives 503 `unavailable`, not a request that hangs until it returns.
async fn bounded<T>(
    ctx: &AppContext,
    lookup: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(ctx.settings.write_timeout(), lookup)
        .await
        .unwrap_or_else(|_| Err(ApiError::unavailable()))
}

pub async fn staff_from_token(
    ctx: &AppContext,
    token: &str,
) -> Result<Option<StaffUserRow>, ApiError> {
    bounded(ctx, async {
        let mut conn = ctx.pool.get().await?;
        Ok(StaffUserRow::by_session(&mut conn, &token_hash(token), Utc::now()).await?)
    })
    .await
}

pub async fn authenticate_staff(req: &HttpRequest, allow_query: bool) -> Result<Staff, ApiError> {
    let ctx = req
        .app_data::<web::Data<AppContext>>()
        .ok_or_else(|| ApiError::internal("app context", "missing"))?;
    authenticate_staff_parts(ctx, &RequestParts::of(req), allow_query).await
}

/// [`authenticate_staff`] from the parts of a request (the lean socket transport has no `HttpRequest`).
pub async fn authenticate_staff_parts(
    ctx: &AppContext,
    parts: &RequestParts<'_>,
    allow_query: bool,
) -> Result<Staff, ApiError> {
    let (token, via_cookie) = parts
        .staff_token(allow_query)
        .ok_or_else(ApiError::unauthenticated)?;
    let row = staff_from_token(ctx, &token)
        .await?
        .ok_or_else(ApiError::unauthenticated)?;
    staff_of(row, via_cookie, None)
}

fn staff_of(
    row: StaffUserRow,
    via_cookie: bool,
    unconfirmed: Option<SessionCheck>,
) -> Result<Staff, ApiError> {
    let role = row.role;
    Ok(Staff {
        id: row.id.into(),
        username: row.username.clone(),
        role,
        restaurant_id: row.restaurant_id.map(Into::into),
        via_cookie,
        row,
        unconfirmed,
    })
}

/// [`authenticate_staff`] for a route whose only effect is a write through a restaurant's persistence
/// writer: a session confirmed by the database less than `auth.session_cache_ttl_s` ago is taken from
/// memory and marked [`Staff::unconfirmed`], so the write confirms it in its own transaction.
pub async fn authenticate_staff_for_write(req: &HttpRequest) -> Result<Staff, ApiError> {
    let ctx = req
        .app_data::<web::Data<AppContext>>()
        .ok_or_else(|| ApiError::internal("app context", "missing"))?;
    let (token, via_cookie) = RequestParts::of(req)
        .staff_token(false)
        .ok_or_else(ApiError::unauthenticated)?;
    let hash = token_hash(&token);
    let key = key_of(&hash).ok_or_else(ApiError::unauthenticated)?;
    let (now, at) = (Utc::now(), std::time::Instant::now());
    if let Some(row) = ctx.sessions.staff.get(&key, now, at) {
        metrics::counter!("s2o_session_cache_total", "kind" => "staff", "result" => "hit")
            .increment(1);
        return staff_of(row, via_cookie, Some(SessionCheck::Staff(hash)));
    }
    metrics::counter!("s2o_session_cache_total", "kind" => "staff", "result" => "miss")
        .increment(1);
    let (row, expires_at) = bounded(ctx, async {
        let mut conn = ctx.pool.get().await?;
        Ok(StaffUserRow::by_session_until(&mut conn, &hash, now).await?)
    })
    .await?
    .ok_or_else(ApiError::unauthenticated)?;
    ctx.sessions
        .staff
        .insert(key, row.clone(), expires_at, now, at);
    staff_of(row, via_cookie, None)
}

/// Middleware for staff routes whose effect is a write confirmed in its own transaction (the kitchen's
/// status change): like [`staff_required`], but the session may come from memory.
pub async fn staff_write_required(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let staff = authenticate_staff_for_write(req.request()).await?;
    refuse_cross_site(&req, &staff)?;
    req.extensions_mut().insert(staff);
    next.call(req).await
}

impl FromRequest for Staff {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Staff, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        if let Some(staff) = req.extensions().get::<Staff>().cloned() {
            return Box::pin(async move { Ok(staff) });
        }
        let req = req.clone();
        Box::pin(async move { authenticate_staff(&req, false).await })
    }
}

/// Middleware for staff routes: authenticates before anything reads the body, so an anonymous caller
/// learns nothing but 401, and a chef on an admin route nothing but 403.
pub async fn staff_required(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let staff = authenticate_staff(req.request(), false).await?;
    refuse_cross_site(&req, &staff)?;
    req.extensions_mut().insert(staff);
    next.call(req).await
}

/// Whether the request's `Origin` is this site: the configured public origin or the origin of the
/// `Host` the browser addressed (see [`RequestParts::same_origin`]).
pub fn same_origin(req: &HttpRequest) -> bool {
    let public = req
        .app_data::<web::Data<AppContext>>()
        .map(|ctx| ctx.settings.public_base_url().to_string())
        .unwrap_or_default();
    RequestParts::of(req).same_origin(&public)
}

/// CSRF: a state-changing request that relies on the session cookie must come from our own pages.
fn refuse_cross_site(req: &ServiceRequest, staff: &Staff) -> Result<(), ApiError> {
    let safe = matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::OPTIONS
    );
    if staff.via_cookie && !safe && !same_origin(req.request()) {
        tracing::warn!("cross-site request with the session cookie refused");
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            "cross-site request refused",
        ));
    }
    Ok(())
}

/// Middleware for admin routes: staff with role `admin` only.
pub async fn admin_required(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let staff = authenticate_staff(req.request(), false).await?;
    staff.require_admin()?;
    refuse_cross_site(&req, &staff)?;
    req.extensions_mut().insert(staff);
    next.call(req).await
}

/// Middleware for guest routes that need a verified phone.
pub async fn customer_required(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let customer = authenticate_customer(req.request()).await?;
    req.extensions_mut().insert(customer);
    next.call(req).await
}

pub async fn authenticate_customer(req: &HttpRequest) -> Result<Customer, ApiError> {
    let ctx = req
        .app_data::<web::Data<AppContext>>()
        .ok_or_else(|| ApiError::internal("app context", "missing"))?;
    let token = bearer(req).ok_or_else(ApiError::unauthenticated)?;
    let phone = bounded(ctx, async {
        let mut conn = ctx.pool.get().await?;
        Ok(CustomerSession::phone_for(&mut conn, &token_hash(&token), Utc::now()).await?)
    })
    .await?
    .ok_or_else(ApiError::unauthenticated)?;
    Ok(Customer {
        phone: Phone::from_stored(phone),
        unconfirmed: None,
    })
}

/// [`authenticate_customer`] for placing an order: a session the database confirmed less than
/// `auth.session_cache_ttl_s` ago is taken from memory and marked [`Customer::unconfirmed`], so the
/// order's write confirms it in its own transaction.
pub async fn authenticate_customer_for_write(req: &HttpRequest) -> Result<Customer, ApiError> {
    let ctx = req
        .app_data::<web::Data<AppContext>>()
        .ok_or_else(|| ApiError::internal("app context", "missing"))?;
    let token = bearer(req).ok_or_else(ApiError::unauthenticated)?;
    let hash = token_hash(&token);
    let key = key_of(&hash).ok_or_else(ApiError::unauthenticated)?;
    let (now, at) = (Utc::now(), std::time::Instant::now());
    if let Some(phone) = ctx.sessions.customers.get(&key, now, at) {
        metrics::counter!("s2o_session_cache_total", "kind" => "customer", "result" => "hit")
            .increment(1);
        return Ok(Customer {
            phone: Phone::from_stored(phone),
            unconfirmed: Some(SessionCheck::Customer(hash)),
        });
    }
    metrics::counter!("s2o_session_cache_total", "kind" => "customer", "result" => "miss")
        .increment(1);
    let (phone, expires_at) = bounded(ctx, async {
        let mut conn = ctx.pool.get().await?;
        Ok(CustomerSession::phone_until(&mut conn, &hash, now).await?)
    })
    .await?
    .ok_or_else(ApiError::unauthenticated)?;
    ctx.sessions
        .customers
        .insert(key, phone.clone(), expires_at, now, at);
    Ok(Customer {
        phone: Phone::from_stored(phone),
        unconfirmed: None,
    })
}

/// Middleware for placing an order: like [`customer_required`], but the session may come from memory
/// (the order's write confirms it).
pub async fn customer_write_required(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let customer = authenticate_customer_for_write(req.request()).await?;
    req.extensions_mut().insert(customer);
    next.call(req).await
}

/// A guest with a verified phone (customer token).
#[derive(Clone, Debug)]
pub struct Customer {
    pub phone: Phone,
    /// Set when the session came from the session cache: the write this request makes must confirm it
    /// in its own transaction.
    pub unconfirmed: Option<SessionCheck>,
}

impl FromRequest for Customer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Customer, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        if let Some(customer) = req.extensions().get::<Customer>().cloned() {
            return Box::pin(async move { Ok(customer) });
        }
        let req = req.clone();
        Box::pin(async move { authenticate_customer(&req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
