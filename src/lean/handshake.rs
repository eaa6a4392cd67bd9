//! The lean transport's opening handshake: read the upgrade request (into a per-thread buffer when it
//! comes in one piece, as it nearly always does), parse it with `httparse`, apply what actix-web's
//! middleware would have (the per-IP socket-connect limit, the security headers), decide with
//! [`crate::socket_admission::resolve`] like the actix route does, and answer `101 Switching Protocols`
//! or an HTTP error. Only the few header values the decision needs are kept across the `await`.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use actix_web::http::StatusCode;
use base64::Engine as _;
use scan2order_schema::wire::ErrorBody;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use crate::auth::RequestParts;
use crate::context::AppContext;
use crate::error::ApiError;
use crate::limits::Tier;
use crate::security_headers::SECURITY_HEADERS;
use crate::socket_admission::{resolve, Decision, SessionSpec, SocketTarget};

/// The largest request head accepted (an upgrade request carries only a few headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 48;
/// How long a client may take to send its request head (actix-web's `client_request_timeout`).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

thread_local! {
    /// Where request heads are read and answers are written, one socket at a time.
    static HEAD: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_HEAD_BYTES]);
}

/// How a handshake ended.
pub enum Outcome {
    /// Upgraded: start the session. The bytes are what the client sent right behind its request.
    Session(SessionSpec, Vec<u8>),
    /// Upgraded only to be closed at once with this code and reason.
    Refused(u16, &'static str),
    /// Answered with an HTTP error, or the client went away: nothing more to do.
    Done,
}

/// An HTTP error answer: the error and extra headers.
pub type Refusal = (ApiError, &'static [(&'static str, &'static str)]);

/// What is kept of a checked upgrade request: the parts the decision needs.
#[derive(Default)]
pub struct Upgrade {
    /// Path and query.
    target: String,
    query_at: Option<usize>,
    authorization: Option<String>,
    cookies: Vec<String>,
    origin: Option<String>,
    host: Option<String>,
    accept: String,
    /// Echoed as `x-request-id`, as `telemetry::request_span` does for actix-web's answers.
    request_id: String,
    early: Vec<u8>,
}

impl Upgrade {
    /// The request's path, without its query.
    pub fn path(&self) -> &str {
        &self.target[..self.query_at.unwrap_or(self.target.len())]
    }

    /// What the client sent right behind its request head.
    pub fn early(&self) -> &[u8] {
        &self.early
    }

    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            authorization: self.authorization.as_deref(),
            query: self.query_at.map_or("", |i| &self.target[i + 1..]),
            cookies: self.cookies.iter().map(String::as_str).collect(),
            origin: self.origin.as_deref(),
            host: self.host.as_deref(),
        }
    }
}

/// Reads, checks and answers the upgrade request on `io`.
pub async fn handshake(io: &TcpStream, peer: Option<SocketAddr>, ctx: &AppContext) -> Outcome {
    let upgrade = match tokio::time::timeout(HEAD_TIMEOUT, read_request(io, peer, ctx)).await {
        Ok(Ok(Some(upgrade))) => upgrade,
        Ok(Ok(None)) => return Outcome::Done,
        Ok(Err(refusal)) => return answer_error(io, refusal, None).await,
        Err(_) => {
            let err = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request head did not arrive in time",
            );
            return answer_error(io, (err, &[]), None).await;
        }
    };
    let request_id = Some(upgrade.request_id.as_str());
    let Some(target) = SocketTarget::of_path(upgrade.path()) else {
        let err = ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
        return answer_error(io, (err, &[]), request_id).await;
    };
    let decision = match resolve(ctx, &target, &upgrade.parts()).await {
        Ok(d) => d,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(
                    request_id,
                    status = e.status.as_u16(),
                    "socket upgrade failed"
                );
            }
            return answer_error(io, (e, &[]), request_id).await;
        }
    };
    drop(target);
    if switching_protocols(io, &upgrade.accept, &upgrade.request_id)
        .await
        .is_err()
    {
        return Outcome::Done;
    }
    match decision {
        Decision::Start(spec) => Outcome::Session(spec, upgrade.early),
        Decision::Refuse(code, why) => Outcome::Refused(code, why),
    }
}

/// Reads the request head and checks it; `Ok(None)` when the client goes away first.
async fn read_request(
    io: &TcpStream,
    peer: Option<SocketAddr>,
    ctx: &AppContext,
) -> Result<Option<Upgrade>, Refusal> {
    // Only for a head that does not come in one read.
    let mut slow: Option<Vec<u8>> = None;
    loop {
        if io.readable().await.is_err() {
            return Ok(None);
        }
        let step = HEAD.with(|head| {
            let mut head = head.borrow_mut();
            let buf: &mut [u8] = match &slow {
                None => &mut head[..],
                Some(so_far) => &mut head[..MAX_HEAD_BYTES.saturating_sub(so_far.len()).max(1)],
            };
            let n = match io.try_read(buf) {
                Ok(0) => return Some(Ok(None)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => return Some(Ok(None)),
            };
            let bytes: &[u8] = match &mut slow {
                None => &head[..n],
                Some(so_far) => {
                    so_far.extend_from_slice(&head[..n]);
                    so_far
                }
            };
            match parse(bytes, |forwarded| admit(peer, forwarded, ctx)) {
                Ok(Some(upgrade)) => Some(Ok(Some(upgrade))),
                Ok(None) if bytes.len() >= MAX_HEAD_BYTES => Some(Err((
                    ApiError::new(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "invalid_request",
                        "request head too large",
                    ),
                    &[][..],
                ))),
                Ok(None) => {
                    if slow.is_none() {
                        slow = Some(head[..n].to_vec());
                    }
                    None
                }
                Err(refusal) => Some(Err(refusal)),
            }
        });
        if let Some(result) = step {
            return result;
        }
    }
}

/// The socket-connect rate limit for `peer` (behind the trusted proxies that forwarded it).
fn admit(
    peer: Option<SocketAddr>,
    forwarded: &mut dyn Iterator<Item = &str>,
    ctx: &AppContext,
) -> Result<(), ApiError> {
    let Some(peer) = peer else { return Ok(()) };
    match ctx.limits.client_ip_from(peer.ip(), forwarded) {
        Some(ip) => ctx.limits.check(Tier::Sockets, ip),
        None => Ok(()),
    }
}

fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

fn headers<'a, 'h: 'a>(
    headers: &'a [httparse::Header<'h>],
    name: &'a str,
) -> impl Iterator<Item = &'h str> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Parses and checks a request head; `Ok(None)` when it is not complete yet. `admit` is asked first,
/// with the `X-Forwarded-For` values, whether the client may connect at all (the socket-connect rate
/// limit). No I/O: the fuzz target `socket_handshake` drives it with arbitrary bytes.
pub fn parse(
    bytes: &[u8],
    admit: impl FnOnce(&mut dyn Iterator<Item = &str>) -> Result<(), ApiError>,
) -> Result<Option<Upgrade>, Refusal> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((
                ApiError::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "invalid_request",
                    "too many headers",
                ),
                &[],
            ))
        }
        Err(_) => return Err((ApiError::invalid("malformed request head"), &[])),
    };
    let h = &*req.headers;
    // The socket-connect limit, before anything else (as actix-web's middleware counts `/ws/`).
    admit(&mut headers(h, "x-forwarded-for")).map_err(|e| (e, &[][..]))?;
    if req.version != Some(1) {
        return Err((ApiError::invalid("WebSocket upgrades need HTTP/1.1"), &[]));
    }
    let upgrade =
        header(h, "upgrade").is_some_and(|v| v.to_ascii_lowercase().contains("websocket"));
    if !upgrade {
        return Err((ApiError::invalid("no WebSocket upgrade header"), &[]));
    }
    if !has_token(header(h, "connection"), "upgrade") {
        return Err((ApiError::invalid("no connection upgrade header"), &[]));
    }
    if header(h, "sec-websocket-version") != Some("13") {
        return Err((
            ApiError::invalid("unsupported WebSocket version"),
            &[("sec-websocket-version", "13")],
        ));
    }
    let key = match header(h, "sec-websocket-key") {
        Some(k) if !k.is_empty() => k,
        _ => return Err((ApiError::invalid("missing sec-websocket-key"), &[])),
    };
    let target = req.path.unwrap_or("/").to_string();
    Ok(Some(Upgrade {
        query_at: target.find('?'),
        target,
        authorization: header(h, "authorization").map(str::to_string),
        cookies: headers(h, "cookie").map(str::to_string).collect(),
        origin: header(h, "origin").map(str::to_string),
        host: header(h, "host").map(str::to_string),
        accept: accept_key(key),
        request_id: request_id(header(h, "x-request-id")),
        early: bytes[head_len..].to_vec(),
    }))
}

/// The caller's sane `X-Request-Id`, or a new one (the rule of `telemetry::request_span`).
fn request_id(given: Option<&str>) -> String {
    given
        .filter(|v| {
            (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Writes the 101 answer, straight from the per-thread buffer when the kernel takes it at once.
async fn switching_protocols(io: &TcpStream, accept: &str, request_id: &str) -> io::Result<()> {
    let rest = HEAD.with(|head| {
        let mut head = head.borrow_mut();
        let mut out: &mut [u8] = &mut head[..];
        let total = out.len();
        let mut put = |s: &str| {
            let n = s.len().min(out.len());
            let taken = std::mem::take(&mut out);
            taken[..n].copy_from_slice(&s.as_bytes()[..n]);
            out = &mut taken[n..];
        };
        put("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n");
        put("sec-websocket-accept: ");
        put(accept);
        put("\r\nx-request-id: ");
        put(request_id);
        put("\r\n");
        for (name, value) in SECURITY_HEADERS {
            put(name);
            put(": ");
            put(value);
            put("\r\n");
        }
        put("\r\n");
        let len = total - out.len();
        let answer = &head[..len];
        match io.try_write(answer) {
            Ok(n) if n == len => Ok(None),
            Ok(n) => Ok(Some(answer[n..].to_vec())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(answer.to_vec())),
            Err(e) => Err(e),
        }
    })?;
    match rest {
        Some(rest) => write_all(io, &rest).await,
        None => Ok(()),
    }
}

async fn answer_error(io: &TcpStream, (err, extra): Refusal, request_id: Option<&str>) -> Outcome {
    let _ = write_all(io, &error_response(&err, extra, request_id)).await;
    Outcome::Done
}

/// An HTTP error answer in PROTOCOL.md's shape; the connection closes after it.
fn error_response(err: &ApiError, extra: &[(&str, &str)], request_id: Option<&str>) -> Vec<u8> {
    let body =
        serde_json::to_vec(&ErrorBody::new(err.code, err.message.clone())).unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n",
        err.status.as_u16(),
        err.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if let Some(secs) = err.retry_after {
        head.push_str(&format!("retry-after: {secs}\r\n"));
    }
    for (name, value) in SECURITY_HEADERS.iter().chain(extra) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(id) = request_id {
        head.push_str(&format!("x-request-id: {id}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Writes all of `data` (a handshake answer or a close frame: small, once per socket).
pub async fn write_all(io: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        io.writable().await?;
        match io.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn request_ids_are_echoed_when_sane_and_made_up_otherwise() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_eq!(request_id(None).len(), 16);
        assert_eq!(request_id(Some("no spaces")).len(), 16);
        assert_eq!(request_id(Some(&"x".repeat(65))).len(), 16);
    }

    #[test]
    fn connection_tokens_are_matched_in_lists() {
        assert!(has_token(Some("keep-alive, Upgrade"), "upgrade"));
        assert!(!has_token(Some("keep-alive"), "upgrade"));
        assert!(!has_token(None, "upgrade"));
    }

    #[test]
    fn error_answers_carry_the_json_body_and_the_security_headers() {
        let text = String::from_utf8(error_response(
            &ApiError::rate_limited(7),
            &[],
            Some("abc-1"),
        ))
        .expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text.contains("retry-after: 7\r\n"));
        assert!(text.contains("x-frame-options: DENY\r\n"));
        assert!(text.contains("x-request-id: abc-1\r\n"));
        assert!(
            text.ends_with(r#"{"error":"rate_limited","message":"too many requests; slow down"}"#)
        );
    }
}
