//! The lean socket transport at the byte level: a raw client that controls every byte on the wire checks
//! what browsers and libraries rarely do on their own — frames split across many TCP writes, fragmented
//! messages, pings, the close handshake, malformed frames, bytes sent right behind the handshake — and
//! that a `/ws/` upgrade on a reused keep-alive connection still works (through actix-web).

use std::time::Duration;

use scan2order_schema::wire::ServerMsg;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with, TestApp, PATIENCE};

pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xA;

/// A masked client frame.
pub(crate) fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A frame from the server.
#[derive(Debug, PartialEq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl Frame {
    pub(crate) fn json(&self) -> Value {
        assert_eq!(self.opcode, TEXT, "expected a text frame, got {self:?}");
        serde_json::from_slice(&self.payload).expect("json")
    }

    pub(crate) fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "expected a close frame, got {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket client that writes and reads raw bytes.
pub(crate) struct RawSocket {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawSocket {
    /// Connects and sends the upgrade request for `path` with `headers`; returns the socket and the
    /// response head.
    pub(crate) async fn open(
        app: &TestApp,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (RawSocket, String) {
        let tcp = TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let mut socket = RawSocket {
            tcp,
            buf: Vec::new(),
        };
        let head = socket.upgrade(app, path, headers, b"").await;
        (socket, head)
    }

    /// Sends an upgrade request (followed by `tail`) on this connection and reads the response head.
    async fn upgrade(
        &mut self,
        app: &TestApp,
        path: &str,
        headers: &[(&str, &str)],
        tail: &[u8],
    ) -> String {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
            app.port
        );
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(tail);
        self.tcp.write_all(&bytes).await.expect("write");
        self.read_head().await
    }

    /// Sends the rest of an upgrade request whose first bytes (`GET /ws/`) are already out.
    async fn upgrade_rest(&mut self, app: &TestApp, rest_of_path: &str) -> String {
        let req = format!(
            "{rest_of_path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            app.port
        );
        self.tcp.write_all(req.as_bytes()).await.expect("write");
        self.read_head().await
    }

    async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8(head).expect("utf-8 head");
            }
            self.fill().await;
        }
    }

    /// Reads more bytes; panics on EOF or silence.
    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.tcp.read(&mut chunk))
            .await
            .expect("the server went quiet")
            .expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// The next frame from the server (server frames are never masked).
    pub(crate) async fn next(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            self.fill().await;
        }
    }

    /// The next frame that is not a ping.
    pub(crate) async fn next_non_ping(&mut self) -> Frame {
        loop {
            let f = self.next().await;
            if f.opcode != PING {
                return f;
            }
        }
    }

    /// Skips hello and snapshot.
    pub(crate) async fn hello_snapshot(&mut self) {
        assert_eq!(self.next_non_ping().await.json()["type"], "hello");
        assert_eq!(self.next_non_ping().await.json()["type"], "snapshot");
    }

    /// True when the server closes the TCP connection within `wait`.
    pub(crate) async fn eof_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert_eq!(b1 & 0x80, 0, "server frames are not masked");
    let (len, at) = match b1 & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            payload,
        },
        at + len,
    ))
}

/// A set_status on a table socket: always answered, with an error naming the request.
pub(crate) fn forbidden_request(request_id: &str) -> Vec<u8> {
    json!({"type": "set_status", "request_id": request_id,
           "order_id": uuid::Uuid::new_v4(), "status": "ready"})
    .to_string()
    .into_bytes()
}

pub(crate) async fn expect_forbidden(socket: &mut RawSocket, request_id: &str) {
    let answer = socket.next_non_ping().await.json();
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["request_id"], request_id, "{answer}");
    assert_eq!(answer["error"], "forbidden", "{answer}");
}

#[actix_web::test]
async fn the_upgrade_answer_carries_the_accept_key_and_the_security_headers() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, head) = RawSocket::open(
        &app,
        &format!("/ws/table/{}", r.tables[0].token),
        &[("X-Request-Id", "lean-req-1")],
    )
    .await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("x-request-id: lean-req-1\r\n"), "{head}");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // RFC 6455 §1.3's example key and answer.
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    assert!(lower.contains("x-frame-options: deny\r\n"), "{head}");
    assert!(lower.contains("content-security-policy: "), "{head}");
    assert!(
        lower.contains("x-content-type-options: nosniff\r\n"),
        "{head}"
    );
    socket.hello_snapshot().await;
}

#[actix_web::test]
async fn a_frame_split_across_many_tcp_writes_is_reassembled() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    // A 200-byte message (a 16-bit length) and a short one, one byte per write.
    let mut long = forbidden_request("split-long");
    long.resize(200, b' ');
    for (id, payload) in [("split-long", long), ("split", forbidden_request("split"))] {
        for byte in frame(true, TEXT, &payload) {
            socket.send(&[byte]).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        expect_forbidden(&mut socket, id).await;
    }
}

#[actix_web::test]
async fn several_frames_in_one_write_are_all_handled_in_order() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend(frame(true, TEXT, &forbidden_request(&format!("r{i}"))));
    }
    socket.send(&burst).await;
    for i in 0..5 {
        expect_forbidden(&mut socket, &format!("r{i}")).await;
    }
}

#[actix_web::test]
async fn a_fragmented_message_with_a_ping_between_its_fragments_is_reassembled() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    let message = forbidden_request("fragmented");
    let (a, rest) = message.split_at(10);
    let (b, c) = rest.split_at(20);
    socket.send(&frame(false, TEXT, a)).await;
    socket.send(&frame(false, CONTINUATION, b)).await;
    socket.send(&frame(true, PING, b"between")).await;
    socket.send(&frame(true, CONTINUATION, c)).await;
    let pong = socket.next().await;
    assert_eq!(
        pong,
        Frame {
            fin: true,
            opcode: PONG,
            payload: b"between".to_vec()
        }
    );
    expect_forbidden(&mut socket, "fragmented").await;
}

#[actix_web::test]
async fn a_client_ping_is_answered_with_a_pong_carrying_its_payload() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    socket.send(&frame(true, PING, b"are you there")).await;
    let pong = socket.next_non_ping().await;
    assert_eq!(pong.opcode, PONG);
    assert_eq!(pong.payload, b"are you there");
    // A binary message is answered with an error, not a close.
    socket.send(&frame(true, BINARY, &[1, 2, 3])).await;
    let answer = socket.next_non_ping().await.json();
    assert_eq!(answer["error"], "invalid_request", "{answer}");
}

#[actix_web::test]
async fn the_server_sends_pings_and_counts_pongs_as_signs_of_life() {
    let app = spawn_app_with(|s| {
        s.sockets.ping_interval_s = 1;
        s.sockets.idle_timeout_s = 2;
    })
    .await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    // Answering every ping keeps the socket open well past the idle timeout.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let f = socket.next().await;
        assert_eq!(f.opcode, PING, "{f:?}");
        socket.send(&frame(true, PONG, &f.payload)).await;
    }
    // Silence past the idle timeout closes it with 1001.
    let code = loop {
        let f = socket.next().await;
        if f.opcode == CLOSE {
            break f.close_code();
        }
    };
    assert_eq!(code, Some(1001));
}

#[actix_web::test]
async fn a_client_close_is_answered_with_the_same_code_and_the_session_ends() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    let stats = app.restaurant_stats(r.id).await.expect("active");
    assert_eq!(stats.table_sockets, 1);
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    socket.send(&frame(true, CLOSE, &close)).await;
    let answer = socket.next_non_ping().await;
    assert_eq!(answer.close_code(), Some(1000));
    assert!(
        socket.eof_within(PATIENCE).await,
        "the server closes TCP after the handshake"
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let stats = app.restaurant_stats(r.id).await.expect("active");
        if stats.table_sockets == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never unsubscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn a_server_close_waits_for_the_clients_answer_then_ends_the_connection() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) = RawSocket::open(&app, "/ws/table/not-a-token", &[]).await;
    let close = socket.next_non_ping().await;
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(&close.payload[2..], b"unknown table");
    socket
        .send(&frame(true, CLOSE, &1008u16.to_be_bytes()))
        .await;
    assert!(socket.eof_within(PATIENCE).await);
    // A live session closed by the server (the table's token is rotated) ends the same way.
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    app.staff("lean-admin", "lean-admin-password", "admin", None)
        .await;
    let admin = app.login("lean-admin", "lean-admin-password").await;
    let res = app
        .http
        .post(app.url(&format!(
            "/api/v1/admin/restaurants/{}/tables/{}/rotate-token",
            r.id, r.tables[0].id
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let close = socket.next_non_ping().await;
    assert_eq!(close.close_code(), Some(1008));
    socket
        .send(&frame(true, CLOSE, &1008u16.to_be_bytes()))
        .await;
    assert!(socket.eof_within(PATIENCE).await);
}

#[actix_web::test]
async fn malformed_frames_close_the_socket_with_a_protocol_error() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let path = format!("/ws/table/{}", r.tables[0].token);
    // Unmasked, a continuation of nothing, a fragmented control frame, text that is not UTF-8.
    let mut unmasked = vec![0x81, 0x02];
    unmasked.extend_from_slice(b"{}");
    let cases: [(Vec<u8>, u16); 4] = [
        (unmasked, 1002),
        (frame(true, CONTINUATION, b"x"), 1002),
        (frame(false, PING, b""), 1002),
        (frame(true, TEXT, &[0xC3, 0x28]), 1007),
    ];
    for (bytes, code) in cases {
        let (mut socket, _) = RawSocket::open(&app, &path, &[]).await;
        socket.hello_snapshot().await;
        socket.send(&bytes).await;
        let close = socket.next_non_ping().await;
        assert_eq!(close.close_code(), Some(code), "{bytes:?}");
    }
}

#[actix_web::test]
async fn a_fragmented_message_over_the_limit_closes_the_socket_with_1009() {
    let app = spawn_app_with(|s| s.sockets.max_frame_bytes = 1000).await;
    let r = app.restaurant("roma", 1, 1).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    // Every fragment is under the limit; together they are not.
    socket.send(&frame(false, TEXT, &[b' '; 600])).await;
    socket.send(&frame(true, CONTINUATION, &[b' '; 600])).await;
    let close = socket.next_non_ping().await;
    assert_eq!(close.close_code(), Some(1009));
}

#[actix_web::test]
async fn frames_sent_right_behind_the_handshake_are_not_lost() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let mut socket = RawSocket {
        tcp,
        buf: Vec::new(),
    };
    let early = frame(true, TEXT, &forbidden_request("early"));
    let head = socket
        .upgrade(
            &app,
            &format!("/ws/table/{}", r.tables[0].token),
            &[],
            &early,
        )
        .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // The early message is answered (it may overtake `hello`: the session answers it at once, while
    // `hello` comes from the restaurant actor).
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let m = socket.next_non_ping().await.json();
        if m["type"] == "error" {
            assert_eq!(m["request_id"], "early");
        }
        seen.push(m["type"].as_str().unwrap_or_default().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["error", "hello", "snapshot"]);
}

#[actix_web::test]
async fn cookie_kitchen_sockets_need_a_same_origin_page_on_the_lean_path() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let chef = app.login_chef(&r).await;
    let cookie = format!("theme=dark; s2o_session={chef}");
    let foreign = [
        ("Cookie", cookie.as_str()),
        ("Origin", "https://evil.example"),
    ];
    let (mut socket, head) = RawSocket::open(&app, "/ws/kitchen", &foreign).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let close = socket.next_non_ping().await;
    assert_eq!(close.close_code(), Some(1008));
    assert_eq!(&close.payload[2..], b"cross-site socket refused");
    let own = app.address.clone();
    let same = [("Cookie", cookie.as_str()), ("Origin", own.as_str())];
    let (mut socket, _) = RawSocket::open(&app, "/ws/kitchen", &same).await;
    socket.hello_snapshot().await;
    // The bearer header needs no Origin: a foreign page cannot set it.
    let bearer = format!("Bearer {chef}");
    let (mut socket, _) =
        RawSocket::open(&app, "/ws/kitchen", &[("Authorization", bearer.as_str())]).await;
    socket.hello_snapshot().await;
}

#[actix_web::test]
async fn bad_upgrade_requests_get_http_errors_in_the_protocol_shape() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let path = format!("/ws/table/{}", r.tables[0].token);
    for (request, status) in [
        (format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"), 400),
        (
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
            ),
            400,
        ),
        (
            "GET /ws/nothing HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                .to_string(),
            404,
        ),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
            .await
            .expect("answered and closed")
            .expect("read");
        let answer = String::from_utf8(answer).expect("utf-8");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: Value = serde_json::from_str(body).expect("json body");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
}

#[actix_web::test]
async fn a_socket_opened_on_a_reused_keep_alive_connection_still_works() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let mut socket = RawSocket {
        tcp,
        buf: Vec::new(),
    };
    // A plain request first: the connection goes to actix-web, and stays there.
    socket
        .send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let head = socket.read_head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while socket.buf.len() < length {
        socket.fill().await;
    }
    socket.buf.drain(..length);
    let head = socket
        .upgrade(&app, &format!("/ws/table/{}", r.tables[0].token), &[], b"")
        .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    socket.hello_snapshot().await;
    socket
        .send(&frame(true, TEXT, &forbidden_request("reused")))
        .await;
    expect_forbidden(&mut socket, "reused").await;
}

#[actix_web::test]
async fn events_reach_a_lean_socket_as_server_frames() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 2, 1).await;
    let chef = app.login_chef(&r).await;
    let (mut socket, _) =
        RawSocket::open(&app, &format!("/ws/table/{}", r.tables[0].token), &[]).await;
    socket.hello_snapshot().await;
    assert_eq!(
        app.set_available(&chef, r.items[1].id, false)
            .await
            .status(),
        200
    );
    let event = socket.next_non_ping().await;
    assert!(event.fin);
    let msg: ServerMsg = serde_json::from_slice(&event.payload).expect("server message");
    assert!(
        matches!(
            msg,
            ServerMsg::MenuItem {
                available: false,
                ..
            }
        ),
        "{msg:?}"
    );
}

#[actix_web::test]
async fn a_connection_that_never_sends_anything_is_dropped() {
    let app = spawn_app().await;
    let mut tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(8), tcp.read(&mut buf))
        .await
        .expect("the server let a silent connection stay open");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

#[actix_web::test]
async fn a_request_line_that_arrives_in_pieces_still_reaches_the_right_transport() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    // A socket whose request line comes a few bytes at a time.
    let tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut socket = RawSocket {
        tcp,
        buf: Vec::new(),
    };
    for piece in ["G", "ET /w", "s/"] {
        socket.send(piece.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = socket
        .upgrade_rest(&app, &format!("table/{}", r.tables[0].token))
        .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    socket.hello_snapshot().await;
    // And plain HTTP in pieces goes to actix-web.
    let mut tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    for piece in [
        "GE",
        "T /heal",
        "thz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        tcp.write_all(piece.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("answered")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
