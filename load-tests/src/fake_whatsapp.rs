//! A fake WhatsApp Business Cloud API for the fault suite (`scan2order-load chaos`).
//!
//! A real scan2order process is pointed at it (`SCAN2ORDER__WHATSAPP__MODE=cloud`,
//! `SCAN2ORDER__WHATSAPP__API_BASE_URL=<base_url>`, `..._PHONE_NUMBER_ID`, `..._ACCESS_TOKEN`). It is a
//! small tokio HTTP/1.1 server (keep-alive, `Content-Length` bodies up to [`MAX_BODY`]; chunked bodies are
//! refused with 400) that checks every request against PROTOCOL.md ("Outbound: WhatsApp Cloud API") and
//! answers according to its [`Mode`]:
//!
//! - [`Mode::Ok`]: 200 with the Cloud API's send answer (a unique `wamid.…`); the message is recorded in
//!   [`Stats::delivered`], and counted in [`Stats::duplicates`] when an identical one (to, template,
//!   parameters) was already delivered;
//! - [`Mode::Fail500`] / [`Mode::Reject400`]: 500 / 400 in the Cloud API error shape;
//! - [`Mode::Timeout`]: no answer; the request is held until the client gives up (closes the connection)
//!   or the mode changes, and then the connection is dropped — never answered.
//!
//! A request that breaks the contract (path, method, Bearer token, body shape) is recorded in
//! [`Stats::invalid`] and answered at once, whatever the mode, with the status the Cloud API would give
//! (400, 401, 404 or 405), counted in [`Stats::answered_invalid`] rather than `answered_400`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Largest request body accepted (413 above it).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest request head accepted (431 above it).
const MAX_HEAD: usize = 16 * 1024;
/// How long a refused connection is drained before it is closed.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest request target quoted in an `invalid` entry.
const MAX_QUOTED: usize = 120;

/// How the fake answers valid requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// 200, message delivered.
    #[default]
    Ok,
    /// 500 in the Cloud API error shape (the server retries).
    Fail500,
    /// No answer: held until the client gives up or the mode changes, then the connection is dropped.
    Timeout,
    /// 400 in the Cloud API error shape (the server records the message as failed).
    Reject400,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Fail500 => "fail500",
            Mode::Timeout => "timeout",
            Mode::Reject400 => "reject400",
        }
    }
}

/// What the fake saw and answered. Every count covers the whole life of the fake.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stats {
    /// Every request received (complete or refused), invalid ones included.
    pub requests: u64,
    /// 200s sent.
    pub answered_ok: u64,
    /// 500s sent in [`Mode::Fail500`].
    pub answered_500: u64,
    /// 400s sent in [`Mode::Reject400`].
    pub answered_400: u64,
    /// Requests held without an answer in [`Mode::Timeout`] (counted when the hold starts).
    pub timed_out: u64,
    /// Requests that broke the contract, one entry each: `"METHOD /path: problem; problem"`.
    pub invalid: Vec<String>,
    /// One entry per 200 answered.
    pub delivered: Vec<Delivered>,
    /// 200s for a message identical (to, template, body parameters) to one already delivered.
    pub duplicates: u64,
    // ---- extras ----
    /// Error answers sent to invalid requests (400/401/404/405/413/431), not counted in `answered_400`.
    pub answered_invalid: u64,
    /// Requests being held right now ([`Mode::Timeout`]).
    pub held_now: u64,
    /// TCP connections accepted (keep-alive reuse shows as fewer connections than requests).
    pub connections: u64,
    /// The mode now.
    pub mode: Mode,
    /// Requests by the mode in force when each was complete, keyed by [`Mode::as_str`].
    pub by_mode: BTreeMap<String, ModeTiming>,
    /// Every effective mode change, in order.
    pub mode_changes: Vec<ModeChange>,
}

/// One message answered 200.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Delivered {
    /// E.164 digits without `+`.
    pub to: String,
    pub template: String,
    /// The body component's text parameters, in order.
    pub params: Vec<String>,
    /// Milliseconds since the fake started.
    pub at_ms: u64,
}

/// The requests that arrived while one mode was in force.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ModeTiming {
    pub requests: u64,
    /// First and last arrival, milliseconds since the fake started.
    pub first_ms: u64,
    pub last_ms: u64,
    /// Arrival rate between the first and the last request (0 with fewer than two, or all in one ms).
    pub per_second: f64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeChange {
    pub at_ms: u64,
    pub mode: Mode,
}

/// A fake Cloud API server on 127.0.0.1. Clones share it; it stops when the last clone is dropped
/// (held and idle connections are then dropped too).
#[derive(Clone)]
pub struct FakeWhatsApp {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The mode; its receivers also learn from it when the fake goes away (the sender is dropped).
    mode_tx: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Shared {
    phone_number_id: String,
    access_token: String,
    started: Instant,
    /// Makes message ids unique across fakes.
    id_prefix: u32,
    seq: AtomicU64,
    state: Mutex<State>,
    /// Woken on every change of the stats.
    changed: Notify,
}

#[derive(Default)]
struct State {
    stats: Stats,
    seen: HashSet<(String, String, Vec<String>)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Applies `f` to the state and wakes the waiters.
    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_waiters();
        r
    }

    /// Counts one request under `mode`.
    fn arrived(&self, st: &mut State, mode: Mode) {
        let at = self.now_ms();
        st.stats.requests += 1;
        let t = st
            .stats
            .by_mode
            .entry(mode.as_str().to_string())
            .or_default();
        if t.requests == 0 {
            t.first_ms = at;
        }
        t.requests += 1;
        t.last_ms = at;
        t.per_second = if t.requests > 1 && t.last_ms > t.first_ms {
            (t.requests - 1) as f64 * 1000.0 / (t.last_ms - t.first_ms) as f64
        } else {
            0.0
        };
    }
}

impl FakeWhatsApp {
    /// Binds 127.0.0.1 on a free port and serves until the last clone is dropped.
    pub async fn start(phone_number_id: &str, access_token: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the fake WhatsApp API")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            phone_number_id: phone_number_id.to_string(),
            access_token: access_token.to_string(),
            started: Instant::now(),
            id_prefix: rand::random(),
            seq: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        });
        let (mode_tx, mode_rx) = watch::channel(Mode::Ok);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), mode_rx));
        Ok(FakeWhatsApp {
            inner: Arc::new(Inner {
                addr,
                shared,
                mode_tx,
                accept,
            }),
        })
    }

    /// `http://127.0.0.1:PORT`: what `whatsapp.api_base_url` is set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Switches the mode for requests completed from now on. Held requests are dropped (unanswered)
    /// when the mode actually changes; setting the mode in force changes nothing.
    pub fn set_mode(&self, mode: Mode) {
        let shared = &self.inner.shared;
        // Under the state lock, so `mode_changes` is in the order of the changes.
        shared.update(|st| {
            let changed = self.inner.mode_tx.send_if_modified(|m| {
                let changed = *m != mode;
                *m = mode;
                changed
            });
            if changed {
                st.stats.mode = mode;
                st.stats.mode_changes.push(ModeChange {
                    at_ms: shared.now_ms(),
                    mode,
                });
            }
        });
    }

    /// A snapshot of the stats.
    pub fn stats(&self) -> Stats {
        self.inner.shared.lock().stats.clone()
    }

    /// Waits until `pred` holds for the stats, and returns them. No deadline: wrap it in a timeout.
    #[cfg(test)]
    pub async fn wait_until(&self, pred: impl Fn(&Stats) -> bool) -> Stats {
        let shared = &self.inner.shared;
        loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = shared.lock();
                if pred(&st.stats) {
                    return st.stats.clone();
                }
            }
            notified.await;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mode_rx: watch::Receiver<Mode>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            // Out of descriptors and the like: keep serving the connections that exist.
            Err(_) => {
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        shared.update(|st| st.stats.connections += 1);
        tokio::spawn(serve_conn(stream, shared.clone(), mode_rx.clone()));
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    close: bool,
}

/// A request refused before its body was read; the connection is closed after the answer.
struct Refused {
    status: u16,
    problem: String,
    /// `METHOD /path` when the head could be parsed.
    line: String,
}

enum Read {
    Request(Request),
    Refused(Refused),
    /// The client closed, the connection failed, or the fake went away.
    Gone,
}

/// Reads more bytes into `buf`; false when the connection ended or the fake went away.
async fn fill(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mode_rx: &mut watch::Receiver<Mode>,
) -> bool {
    loop {
        buf.reserve(4096);
        tokio::select! {
            r = stream.read_buf(buf) => return matches!(r, Ok(n) if n > 0),
            c = mode_rx.changed() => if c.is_err() { return false },
        }
    }
}

fn quoted(s: &str) -> String {
    s.chars().take(MAX_QUOTED).collect()
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mode_rx: &mut watch::Receiver<Mode>,
) -> Read {
    struct Head {
        len: usize,
        method: String,
        path: String,
        authorization: Option<String>,
        content_type: Option<String>,
        content_length: Option<String>,
        chunked: bool,
        expect_continue: bool,
        close: bool,
    }
    let head = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hdrs);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let mut h = Head {
                    len,
                    method: req.method.unwrap_or_default().to_string(),
                    path: req.path.unwrap_or_default().to_string(),
                    authorization: None,
                    content_type: None,
                    content_length: None,
                    chunked: false,
                    expect_continue: false,
                    // HTTP/1.0 closes unless it asks to keep alive.
                    close: req.version == Some(0),
                };
                for hd in req.headers.iter() {
                    let v = String::from_utf8_lossy(hd.value).trim().to_string();
                    let name = hd.name;
                    if name.eq_ignore_ascii_case("authorization") {
                        h.authorization = Some(v);
                    } else if name.eq_ignore_ascii_case("content-type") {
                        h.content_type = Some(v);
                    } else if name.eq_ignore_ascii_case("content-length") {
                        h.content_length = Some(v);
                    } else if name.eq_ignore_ascii_case("transfer-encoding") {
                        h.chunked = !v.eq_ignore_ascii_case("identity");
                    } else if name.eq_ignore_ascii_case("expect") {
                        h.expect_continue = v.eq_ignore_ascii_case("100-continue");
                    } else if name.eq_ignore_ascii_case("connection") {
                        let v = v.to_ascii_lowercase();
                        if v.contains("close") {
                            h.close = true;
                        } else if v.contains("keep-alive") {
                            h.close = false;
                        }
                    }
                }
                break h;
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Read::Refused(Refused {
                        status: 431,
                        problem: "request head too large".into(),
                        line: String::new(),
                    });
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Read::Refused(Refused {
                    status: 431,
                    problem: "too many headers".into(),
                    line: String::new(),
                });
            }
            Err(e) => {
                return Read::Refused(Refused {
                    status: 400,
                    problem: format!("malformed request: {e}"),
                    line: String::new(),
                });
            }
        }
        if !fill(stream, buf, mode_rx).await {
            return Read::Gone;
        }
    };
    let line = format!("{} {}", quoted(&head.method), quoted(&head.path));
    if head.chunked {
        return Read::Refused(Refused {
            status: 400,
            problem: "chunked request body (only Content-Length bodies are accepted)".into(),
            line,
        });
    }
    let len = match head.content_length.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Read::Refused(Refused {
                status: 400,
                problem: "bad Content-Length".into(),
                line,
            })
        }
    };
    if len > MAX_BODY {
        return Read::Refused(Refused {
            status: 413,
            problem: format!("body of {len} bytes (limit {MAX_BODY})"),
            line,
        });
    }
    if head.expect_continue
        && buf.len() < head.len + len
        && stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
    {
        return Read::Gone;
    }
    while buf.len() < head.len + len {
        if !fill(stream, buf, mode_rx).await {
            return Read::Gone;
        }
    }
    let body = buf[head.len..head.len + len].to_vec();
    buf.drain(..head.len + len);
    Read::Request(Request {
        method: head.method,
        path: head.path,
        authorization: head.authorization,
        content_type: head.content_type,
        body,
        close: head.close,
    })
}

/// A template message that passed the checks.
struct Message {
    to: String,
    template: String,
    params: Vec<String>,
}

/// Checks one request against the contract; on failure, the status to answer and the problems.
fn check(shared: &Shared, req: &Request) -> Result<Message, (u16, Vec<String>)> {
    let expected_path = format!("/{}/messages", shared.phone_number_id);
    if req.path != expected_path {
        return Err((404, vec![format!("wrong path (expected {expected_path})")]));
    }
    if req.method != "POST" {
        return Err((405, vec!["wrong method (expected POST)".into()]));
    }
    match req.authorization.as_deref() {
        None => return Err((401, vec!["no Authorization header".into()])),
        Some(a) => {
            let token = a
                .strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "));
            match token {
                None => return Err((401, vec!["Authorization is not a Bearer token".into()])),
                Some(t) if t.trim() != shared.access_token => {
                    return Err((401, vec!["wrong Bearer token".into()]))
                }
                Some(_) => {}
            }
        }
    }
    let mut problems = Vec::new();
    let json_type = req.content_type.as_deref().is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_type {
        problems.push(format!(
            "Content-Type {:?} (expected application/json)",
            req.content_type.as_deref().map(quoted)
        ));
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("body is not JSON: {e}"));
            return Err((400, problems));
        }
    };
    match check_body(&body, &mut problems) {
        Some(msg) if problems.is_empty() => Ok(msg),
        _ => Err((400, problems)),
    }
}

/// Checks the template message shape of PROTOCOL.md; pushes each problem found.
fn check_body(b: &Value, problems: &mut Vec<String>) -> Option<Message> {
    let start = problems.len();
    if !b.is_object() {
        problems.push("body is not a JSON object".into());
        return None;
    }
    if b["messaging_product"] != "whatsapp" {
        problems.push(format!(
            "messaging_product {} (expected \"whatsapp\")",
            short(&b["messaging_product"])
        ));
    }
    if b["type"] != "template" {
        problems.push(format!(
            "type {} (expected \"template\")",
            short(&b["type"])
        ));
    }
    let to = b["to"].as_str().unwrap_or_default();
    if !(8..=15).contains(&to.len()) || !to.bytes().all(|c| c.is_ascii_digit()) {
        problems.push(format!(
            "to {} (expected 8 to 15 digits, no '+')",
            short(&b["to"])
        ));
    }
    let t = &b["template"];
    let name = t["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        problems.push("template.name missing or empty".into());
    }
    if t["language"]["code"].as_str().is_none_or(str::is_empty) {
        problems.push("template.language.code missing or empty".into());
    }
    let mut params: Option<Vec<String>> = None;
    let mut button: Option<String> = None;
    match t["components"].as_array() {
        None => problems.push("template.components is not an array".into()),
        Some(components) => {
            for (i, c) in components.iter().enumerate() {
                match c["type"].as_str() {
                    Some("body") => {
                        if params.is_some() {
                            problems.push(format!("components[{i}]: a second body component"));
                        }
                        params = Some(text_parameters(c, &format!("components[{i}]"), problems));
                    }
                    Some("button") => {
                        if c["sub_type"] != "url" || c["index"] != "0" {
                            problems.push(format!(
                                "components[{i}]: button is not sub_type \"url\", index \"0\""
                            ));
                        }
                        let p = text_parameters(c, &format!("components[{i}]"), problems);
                        if p.len() != 1 {
                            problems.push(format!(
                                "components[{i}]: button has {} parameters (expected 1)",
                                p.len()
                            ));
                        }
                        button = p.into_iter().next();
                    }
                    _ => problems.push(format!(
                        "components[{i}]: type {} (expected \"body\" or \"button\")",
                        short(&c["type"])
                    )),
                }
            }
        }
    }
    let params = match params {
        Some(p) => {
            if p.is_empty() {
                problems.push("body component without parameters".into());
            }
            p
        }
        None => {
            problems.push("no body component".into());
            Vec::new()
        }
    };
    if let Some(code) = button {
        if params.first() != Some(&code) {
            problems.push("copy-code button does not repeat the first body parameter".into());
        }
    }
    if problems.len() > start {
        return None;
    }
    Some(Message {
        to: to.to_string(),
        template: name.to_string(),
        params,
    })
}

/// The texts of a component's `parameters` (each `{"type":"text","text":…}`).
fn text_parameters(c: &Value, at: &str, problems: &mut Vec<String>) -> Vec<String> {
    let Some(ps) = c["parameters"].as_array() else {
        problems.push(format!("{at}: parameters is not an array"));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(ps.len());
    for (j, p) in ps.iter().enumerate() {
        match (p["type"].as_str(), p["text"].as_str()) {
            (Some("text"), Some(text)) => out.push(text.to_string()),
            _ => problems.push(format!(
                "{at}.parameters[{j}] is not {{\"type\":\"text\",\"text\":<string>}}"
            )),
        }
    }
    out
}

/// A JSON value, shortened for a problem text.
fn short(v: &Value) -> String {
    quoted(&v.to_string())
}

fn response(status: u16, body: &Value, close: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let body = body.to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\n\
         Content-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    if status == 405 {
        out.push_str("Allow: POST\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// The Cloud API error shape.
fn api_error(message: &str, code: u32) -> Value {
    json!({"error": {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "Fake-WhatsApp"
    }})
}

fn invalid_answer(status: u16) -> Value {
    match status {
        401 => api_error(
            "Invalid OAuth access token - Cannot parse access token",
            190,
        ),
        404 | 405 => api_error("Unknown path components", 2500),
        _ => api_error("(#100) Invalid parameter", 100),
    }
}

enum Reply {
    Send(Vec<u8>),
    Hold,
}

/// Records one complete request and decides the answer.
fn answer(shared: &Shared, req: &Request, mode: Mode) -> Reply {
    let checked = check(shared, req);
    shared.update(|st| {
        shared.arrived(st, mode);
        match checked {
            Err((status, problems)) => {
                st.stats.invalid.push(format!(
                    "{} {}: {}",
                    quoted(&req.method),
                    quoted(&req.path),
                    problems.join("; ")
                ));
                st.stats.answered_invalid += 1;
                Reply::Send(response(status, &invalid_answer(status), req.close))
            }
            Ok(msg) => match mode {
                Mode::Ok => {
                    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
                    let id = format!("wamid.FAKE{:08X}{seq:012}", shared.id_prefix);
                    let body = json!({
                        "messaging_product": "whatsapp",
                        "contacts": [{"input": msg.to, "wa_id": msg.to}],
                        "messages": [{"id": id}]
                    });
                    let key = (msg.to.clone(), msg.template.clone(), msg.params.clone());
                    if !st.seen.insert(key) {
                        st.stats.duplicates += 1;
                    }
                    st.stats.answered_ok += 1;
                    st.stats.delivered.push(Delivered {
                        to: msg.to,
                        template: msg.template,
                        params: msg.params,
                        at_ms: shared.now_ms(),
                    });
                    Reply::Send(response(200, &body, req.close))
                }
                Mode::Fail500 => {
                    st.stats.answered_500 += 1;
                    let body = api_error(
                        "(#131000) Something went wrong (fake WhatsApp: fail500 mode)",
                        131000,
                    );
                    Reply::Send(response(500, &body, req.close))
                }
                Mode::Reject400 => {
                    st.stats.answered_400 += 1;
                    let body = api_error(
                        "(#131026) Message undeliverable (fake WhatsApp: reject400 mode)",
                        131026,
                    );
                    Reply::Send(response(400, &body, req.close))
                }
                Mode::Timeout => {
                    st.stats.timed_out += 1;
                    st.stats.held_now += 1;
                    Reply::Hold
                }
            },
        }
    })
}

async fn serve_conn(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    mut mode_rx: watch::Receiver<Mode>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let req = match read_request(&mut stream, &mut buf, &mut mode_rx).await {
            Read::Gone => return,
            Read::Refused(r) => {
                let mode = *mode_rx.borrow();
                shared.update(|st| {
                    shared.arrived(st, mode);
                    st.stats.invalid.push(format!("{}: {}", r.line, r.problem));
                    st.stats.answered_invalid += 1;
                });
                let _ = stream
                    .write_all(&response(r.status, &invalid_answer(r.status), true))
                    .await;
                linger(&mut stream, &mut buf).await;
                return;
            }
            Read::Request(r) => r,
        };
        // The mode in force now; a change after this point releases a hold.
        let mode = *mode_rx.borrow_and_update();
        match answer(&shared, &req, mode) {
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).await.is_err() || req.close {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
            Reply::Hold => {
                hold(&mut stream, &mut buf, &mut mode_rx).await;
                shared.update(|st| st.stats.held_now -= 1);
                // Dropped without an answer.
                return;
            }
        }
    }
}

/// Closes after an answer that left request bytes unread: shuts the write side, then reads (a bounded
/// while) until the client closes, so unread bytes do not turn the close into a reset that could
/// destroy the answer before the client reads it.
async fn linger(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        loop {
            buf.clear();
            buf.reserve(4096);
            match stream.read_buf(buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Holds a request until the client closes the connection, the mode changes, or the fake goes away.
async fn hold(stream: &mut TcpStream, buf: &mut Vec<u8>, mode_rx: &mut watch::Receiver<Mode>) {
    loop {
        buf.reserve(4096);
        tokio::select! {
            r = stream.read_buf(buf) => match r {
                Ok(n) if n > 0 && buf.len() <= MAX_HEAD + MAX_BODY => {}
                _ => return,
            },
            _ = mode_rx.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PHONE_ID: &str = "1234567890";
    const TOKEN: &str = "test-token";
    /// A bound on every wait, so a broken fake fails the test instead of hanging it.
    const PATIENCE: Duration = Duration::from_secs(10);

    fn message(to: &str, template: &str, params: &[&str]) -> Value {
        let ps: Vec<Value> = params
            .iter()
            .map(|p| json!({"type": "text", "text": p}))
            .collect();
        json!({
            "messaging_product": "whatsapp",
            "to": to,
            "type": "template",
            "template": {
                "name": template,
                "language": {"code": "en"},
                "components": [{"type": "body", "parameters": ps}]
            }
        })
    }

    fn otp(to: &str, code: &str) -> Value {
        let mut m = message(to, "scan2order_code", &[code]);
        m["template"]["components"]
            .as_array_mut()
            .expect("components")
            .push(json!({"type": "button", "sub_type": "url", "index": "0",
                         "parameters": [{"type": "text", "text": code}]}));
        m
    }

    /// A minimal client on one real TCP connection.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    struct Answer {
        status: u16,
        body: Value,
        close: bool,
    }

    impl Client {
        async fn connect(wa: &FakeWhatsApp) -> Client {
            let addr = wa.base_url().trim_start_matches("http://").to_string();
            Client {
                stream: TcpStream::connect(addr).await.expect("connect"),
                buf: Vec::new(),
            }
        }

        async fn send(&mut self, path: &str, token: Option<&str>, body: &Value) {
            let body = body.to_string();
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: graph.example\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            self.stream
                .write_all(req.as_bytes())
                .await
                .expect("write request");
        }

        /// The next answer, or None when the server closed the connection without one.
        async fn answer(&mut self) -> Option<Answer> {
            let fut = async {
                loop {
                    let mut hdrs = [httparse::EMPTY_HEADER; 16];
                    let mut resp = httparse::Response::new(&mut hdrs);
                    if let httparse::Status::Complete(n) = resp.parse(&self.buf).expect("parse") {
                        let header = |name: &str| {
                            resp.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(name))
                                .map(|h| String::from_utf8_lossy(h.value).to_string())
                        };
                        let len: usize = header("content-length")
                            .expect("content-length")
                            .parse()
                            .expect("length");
                        let close = header("connection").as_deref() == Some("close");
                        let status = resp.code.expect("status");
                        while self.buf.len() < n + len {
                            if self.stream.read_buf(&mut self.buf).await.expect("read") == 0 {
                                panic!("closed inside a body");
                            }
                        }
                        let body = serde_json::from_slice(&self.buf[n..n + len]).expect("json");
                        self.buf.drain(..n + len);
                        return Some(Answer {
                            status,
                            body,
                            close,
                        });
                    }
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(0) | Err(_) => {
                            assert!(self.buf.is_empty(), "partial answer before close");
                            return None;
                        }
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(PATIENCE, fut)
                .await
                .expect("answer in time")
        }

        async fn call(&mut self, path: &str, token: Option<&str>, body: &Value) -> Answer {
            self.send(path, token, body).await;
            self.answer().await.expect("an answer")
        }
    }

    async fn fake() -> FakeWhatsApp {
        FakeWhatsApp::start(PHONE_ID, TOKEN).await.expect("start")
    }

    fn path() -> String {
        format!("/{PHONE_ID}/messages")
    }

    async fn wait(wa: &FakeWhatsApp, pred: impl Fn(&Stats) -> bool) -> Stats {
        tokio::time::timeout(PATIENCE, wa.wait_until(pred))
            .await
            .expect("condition in time")
    }

    #[tokio::test]
    async fn ok_delivery_is_recorded_and_answered_like_the_cloud_api() {
        let wa = fake().await;
        assert!(wa.base_url().starts_with("http://127.0.0.1:"));
        let mut c = Client::connect(&wa).await;
        let a = c
            .call(
                &path(),
                Some(TOKEN),
                &message("447700900123", "order_ready", &["Chez Test", "42"]),
            )
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["messaging_product"], "whatsapp");
        assert_eq!(a.body["contacts"][0]["input"], "447700900123");
        assert_eq!(a.body["contacts"][0]["wa_id"], "447700900123");
        let id1 = a.body["messages"][0]["id"]
            .as_str()
            .expect("id")
            .to_string();
        assert!(id1.starts_with("wamid."), "{id1}");
        // An OTP message with its copy-code button.
        let a = c
            .call(&path(), Some(TOKEN), &otp("447700900124", "918273"))
            .await;
        assert_eq!(a.status, 200);
        assert_ne!(a.body["messages"][0]["id"], id1.as_str());

        let s = wa.stats();
        assert_eq!(s.requests, 2);
        assert_eq!(s.answered_ok, 2);
        assert_eq!(s.duplicates, 0);
        assert!(s.invalid.is_empty(), "{:?}", s.invalid);
        assert_eq!(s.delivered.len(), 2);
        assert_eq!(s.delivered[0].to, "447700900123");
        assert_eq!(s.delivered[0].template, "order_ready");
        assert_eq!(s.delivered[0].params, vec!["Chez Test", "42"]);
        assert_eq!(s.delivered[1].template, "scan2order_code");
        assert_eq!(s.delivered[1].params, vec!["918273"]);
        assert_eq!(s.by_mode["ok"].requests, 2);
        assert!(s.by_mode["ok"].first_ms <= s.by_mode["ok"].last_ms);
    }

    #[tokio::test]
    async fn an_identical_message_delivered_twice_is_a_duplicate() {
        let wa = fake().await;
        let mut c = Client::connect(&wa).await;
        let m = message("447700900123", "order_received", &["Chez Test", "7"]);
        assert_eq!(c.call(&path(), Some(TOKEN), &m).await.status, 200);
        // Same phone and template, other parameters: not a duplicate.
        let other = message("447700900123", "order_received", &["Chez Test", "8"]);
        assert_eq!(c.call(&path(), Some(TOKEN), &other).await.status, 200);
        assert_eq!(c.call(&path(), Some(TOKEN), &m).await.status, 200);
        let s = wa.stats();
        assert_eq!(s.answered_ok, 3);
        assert_eq!(s.delivered.len(), 3);
        assert_eq!(s.duplicates, 1);
    }

    #[tokio::test]
    async fn fail500_mode_answers_500_in_the_error_shape() {
        let wa = fake().await;
        wa.set_mode(Mode::Fail500);
        let mut c = Client::connect(&wa).await;
        let a = c
            .call(&path(), Some(TOKEN), &message("447700900123", "t", &["a"]))
            .await;
        assert_eq!(a.status, 500);
        assert_eq!(a.body["error"]["type"], "OAuthException");
        assert!(a.body["error"]["message"].is_string());
        assert!(a.body["error"]["code"].is_u64());
        // The connection stays usable, and back in Ok mode the message goes through.
        wa.set_mode(Mode::Ok);
        let a = c
            .call(&path(), Some(TOKEN), &message("447700900123", "t", &["a"]))
            .await;
        assert_eq!(a.status, 200);
        let s = wa.stats();
        assert_eq!((s.requests, s.answered_500, s.answered_ok), (2, 1, 1));
        assert_eq!(s.delivered.len(), 1);
        assert_eq!(s.by_mode["fail500"].requests, 1);
        assert_eq!(s.by_mode["ok"].requests, 1);
        let modes: Vec<Mode> = s.mode_changes.iter().map(|m| m.mode).collect();
        assert_eq!(modes, vec![Mode::Fail500, Mode::Ok]);
    }

    #[tokio::test]
    async fn reject400_mode_answers_400_in_the_error_shape() {
        let wa = fake().await;
        wa.set_mode(Mode::Reject400);
        let mut c = Client::connect(&wa).await;
        let a = c
            .call(&path(), Some(TOKEN), &message("447700900123", "t", &["a"]))
            .await;
        assert_eq!(a.status, 400);
        assert_eq!(a.body["error"]["type"], "OAuthException");
        assert!(a.body["error"]["code"].is_u64());
        let s = wa.stats();
        assert_eq!((s.answered_400, s.answered_ok), (1, 0));
        assert!(s.delivered.is_empty());
        assert!(s.invalid.is_empty(), "{:?}", s.invalid);
        assert_eq!(s.mode, Mode::Reject400);
    }

    #[tokio::test]
    async fn timeout_mode_holds_then_drops_without_answering_when_the_mode_changes() {
        let wa = fake().await;
        wa.set_mode(Mode::Timeout);
        let mut c = Client::connect(&wa).await;
        c.send(&path(), Some(TOKEN), &message("447700900123", "t", &["a"]))
            .await;
        let s = wait(&wa, |s| s.held_now == 1).await;
        assert_eq!(s.timed_out, 1);
        // Setting the mode in force again releases nothing.
        wa.set_mode(Mode::Timeout);
        assert_eq!(wa.stats().held_now, 1);
        wa.set_mode(Mode::Ok);
        assert!(c.answer().await.is_none(), "a held request got an answer");
        let s = wait(&wa, |s| s.held_now == 0).await;
        assert_eq!((s.timed_out, s.answered_ok), (1, 0));
        assert!(s.delivered.is_empty());
        assert_eq!(s.by_mode["timeout"].requests, 1);
    }

    #[tokio::test]
    async fn timeout_mode_lets_go_when_the_client_gives_up() {
        let wa = fake().await;
        wa.set_mode(Mode::Timeout);
        let mut c = Client::connect(&wa).await;
        c.send(&path(), Some(TOKEN), &message("447700900123", "t", &["a"]))
            .await;
        wait(&wa, |s| s.held_now == 1).await;
        drop(c);
        let s = wait(&wa, |s| s.held_now == 0).await;
        assert_eq!((s.timed_out, s.answered_ok), (1, 0));
        // A new connection in the new mode is answered.
        wa.set_mode(Mode::Ok);
        let mut c = Client::connect(&wa).await;
        let a = c
            .call(&path(), Some(TOKEN), &message("447700900123", "t", &["a"]))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(wa.stats().delivered.len(), 1);
    }

    #[tokio::test]
    async fn contract_breaks_are_recorded_as_invalid() {
        let wa = fake().await;
        let mut c = Client::connect(&wa).await;
        let good = message("447700900123", "t", &["a"]);

        let a = c.call(&path(), Some("wrong"), &good).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error"]["type"], "OAuthException");
        assert_eq!(c.call(&path(), None, &good).await.status, 401);
        assert_eq!(
            c.call("/999/messages", Some(TOKEN), &good).await.status,
            404
        );
        let plus = message("+447700900123", "t", &["a"]);
        assert_eq!(c.call(&path(), Some(TOKEN), &plus).await.status, 400);
        let mut no_product = good.clone();
        no_product["messaging_product"] = json!("sms");
        assert_eq!(c.call(&path(), Some(TOKEN), &no_product).await.status, 400);
        let mut no_language = good.clone();
        no_language["template"]["language"] = json!({});
        assert_eq!(c.call(&path(), Some(TOKEN), &no_language).await.status, 400);
        let no_params = message("447700900123", "t", &[]);
        assert_eq!(c.call(&path(), Some(TOKEN), &no_params).await.status, 400);
        let mut bad_button = otp("447700900123", "111111");
        bad_button["template"]["components"][1]["parameters"][0]["text"] = json!("222222");
        assert_eq!(c.call(&path(), Some(TOKEN), &bad_button).await.status, 400);
        // Invalid requests are answered even in the fault modes.
        wa.set_mode(Mode::Timeout);
        assert_eq!(c.call(&path(), Some("wrong"), &good).await.status, 401);

        let s = wa.stats();
        assert_eq!(s.requests, 9);
        assert_eq!(s.invalid.len(), 9, "{:#?}", s.invalid);
        assert_eq!(s.answered_invalid, 9);
        assert_eq!((s.answered_ok, s.answered_400, s.timed_out), (0, 0, 0));
        assert!(
            s.invalid[0].contains("wrong Bearer token"),
            "{}",
            s.invalid[0]
        );
        assert!(!s.invalid[0].contains("wrong\""), "no token quoted");
        assert!(
            s.invalid[1].contains("no Authorization"),
            "{}",
            s.invalid[1]
        );
        assert!(s.invalid[2].contains("wrong path"), "{}", s.invalid[2]);
        assert!(
            s.invalid[3].contains("to \"+447700900123\""),
            "{}",
            s.invalid[3]
        );
        assert!(
            s.invalid[4].contains("messaging_product"),
            "{}",
            s.invalid[4]
        );
        assert!(s.invalid[5].contains("language.code"), "{}", s.invalid[5]);
        assert!(
            s.invalid[6].contains("without parameters"),
            "{}",
            s.invalid[6]
        );
        assert!(s.invalid[7].contains("copy-code"), "{}", s.invalid[7]);
    }

    #[tokio::test]
    async fn chunked_bodies_are_refused_and_the_connection_closed() {
        let wa = fake().await;
        let mut c = Client::connect(&wa).await;
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n",
            path()
        );
        c.stream.write_all(req.as_bytes()).await.expect("write");
        let a = c.answer().await.expect("an answer");
        assert_eq!((a.status, a.close), (400, true));
        assert!(c.answer().await.is_none());
        let s = wa.stats();
        assert_eq!(s.invalid.len(), 1);
        assert!(s.invalid[0].contains("chunked"), "{}", s.invalid[0]);
    }

    #[tokio::test]
    async fn keep_alive_serves_two_requests_on_one_connection() {
        let wa = fake().await;
        let mut c = Client::connect(&wa).await;
        let a = c
            .call(&path(), Some(TOKEN), &message("447700900123", "t", &["1"]))
            .await;
        assert_eq!((a.status, a.close), (200, false));
        let a = c
            .call(&path(), Some(TOKEN), &message("447700900123", "t", &["2"]))
            .await;
        assert_eq!((a.status, a.close), (200, false));
        // Two pipelined requests in one write are answered in order too.
        let mut both = Vec::new();
        for p in ["3", "4"] {
            let body = message("447700900123", "t", &[p]).to_string();
            both.extend_from_slice(
                format!(
                    "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    path(),
                    body.len()
                )
                .as_bytes(),
            );
        }
        c.stream.write_all(&both).await.expect("write");
        assert_eq!(c.answer().await.expect("third").status, 200);
        assert_eq!(c.answer().await.expect("fourth").status, 200);
        let s = wa.stats();
        assert_eq!(s.connections, 1);
        assert_eq!(s.answered_ok, 4);
        let params: Vec<&str> = s.delivered.iter().map(|d| d.params[0].as_str()).collect();
        assert_eq!(params, vec!["1", "2", "3", "4"]);
    }

    #[tokio::test]
    async fn stats_serialize_to_json() {
        let wa = fake().await;
        let v = serde_json::to_value(wa.stats()).expect("json");
        assert_eq!(v["mode"], "ok");
        assert_eq!(v["requests"], 0);
    }
}
