//! The lean transport's opening handshake: read the upgrade request into a temporary buffer (dropped
//! afterwards), parse it with `httparse`, apply what actix-web's middleware would have (the per-IP
//! socket-connect limit, the security headers), decide with [`routes::sockets::resolve`] like the actix
//! route does, and answer `101 Switching Protocols` or an HTTP error.

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
use crate::routes::pages::CONTENT_SECURITY_POLICY;
use crate::routes::sockets::{resolve, Decision, SocketTarget};

/// The largest request head accepted (actix-http's default limit is larger, but an upgrade request
/// carries only a few headers).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;
/// How long a client may take to send its request head (actix-web's `client_request_timeout`).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The response headers actix-web's `DefaultHeaders` middleware adds to every answer.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// How a handshake ended.
pub enum Outcome {
    /// Upgraded: start the session. `early` holds bytes the client sent after its request head.
    Session(crate::routes::sockets::SessionSpec, Vec<u8>),
    /// Upgraded only to be closed at once with this code and reason.
    Refused(u16, &'static str),
    /// Answered with an HTTP error, or the client went away: nothing more to do.
    Done,
}

/// Reads, checks and answers the upgrade request on `io`.
pub async fn handshake(io: &TcpStream, peer: Option<SocketAddr>, ctx: &AppContext) -> Outcome {
    let buf = match tokio::time::timeout(HEAD_TIMEOUT, read_head(io)).await {
        Ok(Ok(Some(buf))) => buf,
        Ok(Ok(None)) | Ok(Err(_)) => return Outcome::Done,
        Err(_) => {
            let err = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request head did not arrive in time",
            );
            let _ = write_all(io, &error_response(&err, &[])).await;
            return Outcome::Done;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            let err = ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                "request head too large",
            );
            let _ = write_all(io, &error_response(&err, &[])).await;
            return Outcome::Done;
        }
        Err(e) => {
            let status = if e == httparse::Error::TooManyHeaders {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            let err = ApiError::new(status, "invalid_request", "malformed request head");
            let _ = write_all(io, &error_response(&err, &[])).await;
            return Outcome::Done;
        }
    };
    let answer = match check(&req, peer, ctx).await {
        Ok((answer, decision)) => {
            if write_all(io, answer.as_bytes()).await.is_err() {
                return Outcome::Done;
            }
            match decision {
                Decision::Start(spec) => Outcome::Session(spec, buf[head_len..].to_vec()),
                Decision::Refuse(code, why) => Outcome::Refused(code, why),
            }
        }
        Err((err, extra)) => {
            let _ = write_all(io, &error_response(&err, extra)).await;
            Outcome::Done
        }
    };
    drop(buf);
    answer
}

/// Reads until the end of the request head; `None` when the client goes away first.
async fn read_head(io: &TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        io.readable().await?;
        let len = buf.len();
        if len == MAX_HEAD_BYTES {
            // Let the parser report it: a head that does not fit is refused as too large.
            return Ok(Some(buf));
        }
        buf.resize((len + 2048).min(MAX_HEAD_BYTES), 0);
        match io.try_read(&mut buf[len..]) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                buf.truncate(len + n);
                let from = len.saturating_sub(3);
                if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
                    return Ok(Some(buf));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(len),
            Err(e) => return Err(e),
        }
    }
}

fn header<'h>(req: &httparse::Request<'h, '_>, name: &str) -> Option<&'h str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

fn headers<'r, 'h: 'r>(
    req: &'r httparse::Request<'h, '_>,
    name: &'r str,
) -> impl Iterator<Item = &'h str> + 'r {
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

type Refusal = (ApiError, &'static [(&'static str, &'static str)]);

/// Everything between the parsed head and the answer: the limits, the upgrade headers, the decision.
async fn check(
    req: &httparse::Request<'_, '_>,
    peer: Option<SocketAddr>,
    ctx: &AppContext,
) -> Result<(String, Decision), Refusal> {
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Some(peer) = peer {
        if let Some(ip) = ctx
            .limits
            .client_ip_from(peer.ip(), headers(req, "x-forwarded-for"))
        {
            ctx.limits
                .check(Tier::Sockets, ip)
                .map_err(|e| (e, &[][..]))?;
        }
    }
    let Some(socket) = SocketTarget::of_path(path) else {
        return Err((
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
            &[],
        ));
    };
    if req.version != Some(1) {
        return Err((ApiError::invalid("WebSocket upgrades need HTTP/1.1"), &[]));
    }
    let upgrade =
        header(req, "upgrade").is_some_and(|v| v.to_ascii_lowercase().contains("websocket"));
    if !upgrade {
        return Err((ApiError::invalid("no WebSocket upgrade header"), &[]));
    }
    if !has_token(header(req, "connection"), "upgrade") {
        return Err((ApiError::invalid("no connection upgrade header"), &[]));
    }
    if header(req, "sec-websocket-version") != Some("13") {
        return Err((
            ApiError::invalid("unsupported WebSocket version"),
            &[("sec-websocket-version", "13")],
        ));
    }
    let key = match header(req, "sec-websocket-key") {
        Some(k) if !k.is_empty() => k,
        _ => return Err((ApiError::invalid("missing sec-websocket-key"), &[])),
    };
    let parts = RequestParts {
        authorization: header(req, "authorization"),
        query,
        cookies: headers(req, "cookie").collect(),
        origin: header(req, "origin"),
        host: header(req, "host"),
    };
    let decision = resolve(ctx, &socket, &parts)
        .await
        .map_err(|e| (e, &[][..]))?;
    Ok((switching_protocols(key), decision))
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn switching_protocols(key: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
    );
    out.push_str("sec-websocket-accept: ");
    out.push_str(&accept_key(key));
    out.push_str("\r\n");
    for (name, value) in SECURITY_HEADERS {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// An HTTP error answer in PROTOCOL.md's shape; the connection closes after it.
fn error_response(err: &ApiError, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody {
        error: err.code.to_string(),
        message: err.message.clone(),
        item_ids: None,
    })
    .unwrap_or_default();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n",
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
    fn connection_tokens_are_matched_in_lists() {
        assert!(has_token(Some("keep-alive, Upgrade"), "upgrade"));
        assert!(!has_token(Some("keep-alive"), "upgrade"));
        assert!(!has_token(None, "upgrade"));
    }

    #[test]
    fn error_answers_carry_the_json_body_and_the_security_headers() {
        let text =
            String::from_utf8(error_response(&ApiError::rate_limited(7), &[])).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        assert!(text.contains("retry-after: 7\r\n"));
        assert!(text.contains("x-frame-options: DENY\r\n"));
        assert!(
            text.ends_with(r#"{"error":"rate_limited","message":"too many requests; slow down"}"#)
        );
    }
}
