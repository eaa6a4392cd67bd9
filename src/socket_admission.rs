//! Who may open which socket, for both transports: the lean one ([`crate::lean`], which reads the
//! upgrade head itself, off actix-web) and the actix-ws routes ([`crate::routes::sockets`]). [`resolve`]
//! resolves a table token, or authenticates a staff member and picks their restaurant; bad tokens are
//! accepted only to be closed with 1008.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use scan2order_actors::restaurant::{Audience, EngineError};
use scan2order_actors::room::Room;
use scan2order_actors::session::{SessionSettings, SocketSession};
use scan2order_actors::sink::{close_code, SocketSink};
use scan2order_schema::domain::StaffId;
use serde::Deserialize;

use crate::auth::{authenticate_staff_parts, RequestParts};
use crate::config::SocketSettings;
use crate::context::AppContext;
use crate::error::ApiError;

/// Which socket a path asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketTarget<'a> {
    /// A guest socket; the table token as it appears in the path, percent-decoded.
    Table(Cow<'a, str>),
    Kitchen,
}

impl<'a> SocketTarget<'a> {
    /// The socket a request path (without the query) names, as the actix-web routes match it.
    pub fn of_path(path: &'a str) -> Option<SocketTarget<'a>> {
        if path == "/ws/kitchen" {
            return Some(SocketTarget::Kitchen);
        }
        let token = path.strip_prefix("/ws/table/")?;
        if token.is_empty() || token.contains('/') {
            return None;
        }
        Some(SocketTarget::Table(percent_decode(token)?))
    }
}

/// Percent-decodes a path segment (as actix-web's router does); `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Query of a socket URL: resume position (extension: resume without waiting for a message), and for
/// the kitchen an admin's restaurant (the token is read by [`RequestParts::staff_token`]).
#[derive(Default, Deserialize)]
struct SocketQuery {
    epoch: Option<String>,
    since: Option<u64>,
    restaurant_id: Option<String>,
}

impl SocketQuery {
    fn parse(query: &str) -> SocketQuery {
        web::Query::<SocketQuery>::from_query(query)
            .map(|q| q.into_inner())
            .unwrap_or_default()
    }

    fn resume(&self) -> Option<(String, u64)> {
        match (&self.epoch, self.since) {
            (Some(e), Some(s)) if !e.is_empty() && e.len() <= 64 => Some((e.clone(), s)),
            _ => None,
        }
    }
}

/// Everything a new session needs besides the socket.
pub struct SessionSpec {
    pub restaurant: Room,
    pub audience: Audience,
    pub table_token: Option<String>,
    pub staff: Option<StaffId>,
    pub resume: Option<(String, u64)>,
}

impl SessionSpec {
    /// The session actor for this spec, talking to its socket through `sink`.
    pub fn into_session(self, sink: SocketSink, settings: Arc<SessionSettings>) -> SocketSession {
        SocketSession::new(
            self.restaurant,
            self.audience,
            self.table_token,
            self.staff,
            sink,
            self.resume,
            settings,
        )
    }
}

pub fn session_settings(s: &SocketSettings) -> SessionSettings {
    SessionSettings {
        ping_interval: Duration::from_secs(s.ping_interval_s),
        idle_timeout: Duration::from_secs(s.idle_timeout_s),
        resume_grace: Duration::from_millis(s.resume_grace_ms),
        max_inbound_per_sec: s.max_inbound_per_sec,
    }
}

/// What a socket request gets.
pub enum Decision {
    /// Upgrade and start a session.
    Start(SessionSpec),
    /// Upgrade, then close at once with this code and reason (bad token, wrong restaurant).
    Refuse(u16, &'static str),
}

/// Decides a socket request: resolves the table token, or authenticates the staff member (bearer
/// header, `?token=`, or the session cookie from a same-origin page only) and picks their restaurant.
/// `Err` is for failures that are not the client's (the database or the engine is unavailable): they
/// are answered with an HTTP error instead of an upgrade.
pub async fn resolve(
    ctx: &AppContext,
    target: &SocketTarget<'_>,
    parts: &RequestParts<'_>,
) -> Result<Decision, ApiError> {
    let q = SocketQuery::parse(parts.query);
    match target {
        SocketTarget::Table(token) => match ctx.engine.resolve_table(token).await {
            Ok((restaurant, table)) => Ok(Decision::Start(SessionSpec {
                restaurant,
                audience: Audience::Table(table.table_id),
                table_token: Some(token.to_string()),
                staff: None,
                resume: q.resume(),
            })),
            Err(EngineError::NotFound(_)) => {
                Ok(Decision::Refuse(close_code::POLICY, "unknown table"))
            }
            Err(e) => Err(ApiError::from(e)),
        },
        SocketTarget::Kitchen => {
            // Boxed: a table socket's handshake should not carry room for a database query.
            let staff = match Box::pin(authenticate_staff_parts(ctx, parts, true)).await {
                Ok(s) => s,
                Err(e) if e.status.is_client_error() => {
                    return Ok(Decision::Refuse(close_code::POLICY, "not signed in"))
                }
                Err(e) => return Err(e),
            };
            // Cross-site WebSocket hijacking: a page of another origin (a sibling subdomain is "same
            // site", so SameSite does not stop it) must not ride the session cookie into a kitchen
            // socket.
            if staff.via_cookie && !parts.same_origin(ctx.settings.public_base_url()) {
                tracing::warn!("cross-site kitchen socket with the session cookie refused");
                return Ok(Decision::Refuse(
                    close_code::POLICY,
                    "cross-site socket refused",
                ));
            }
            let asked = match q.restaurant_id.as_deref().map(str::parse) {
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => {
                    return Ok(Decision::Refuse(close_code::POLICY, "unknown restaurant"))
                }
                None => None,
            };
            let Ok(restaurant_id) = staff.kitchen_restaurant(asked) else {
                return Ok(Decision::Refuse(close_code::POLICY, "not your restaurant"));
            };
            match ctx.engine.room(restaurant_id).await {
                Ok(restaurant) => Ok(Decision::Start(SessionSpec {
                    restaurant,
                    audience: Audience::Kitchen,
                    table_token: None,
                    staff: Some(staff.id),
                    resume: q.resume(),
                })),
                Err(EngineError::NotFound(_)) => {
                    Ok(Decision::Refuse(close_code::POLICY, "unknown restaurant"))
                }
                Err(e) => Err(ApiError::from(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_name_their_target_like_the_routes() {
        assert_eq!(
            SocketTarget::of_path("/ws/kitchen"),
            Some(SocketTarget::Kitchen)
        );
        assert_eq!(
            SocketTarget::of_path("/ws/table/abc-_9"),
            Some(SocketTarget::Table(Cow::Borrowed("abc-_9")))
        );
        assert_eq!(
            SocketTarget::of_path("/ws/table/a%41b"),
            Some(SocketTarget::Table(Cow::Owned("aAb".into())))
        );
        for bad in [
            "/ws/table/",
            "/ws/table/a/b",
            "/ws/kitchen/",
            "/ws/other",
            "/ws/table/%ff",
        ] {
            assert_eq!(SocketTarget::of_path(bad), None, "{bad}");
        }
    }
}
