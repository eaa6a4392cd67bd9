//! A minimal WebSocket client (RFC 6455) that holds no buffer while a socket is idle.
//!
//! Why hand-rolled: a load generator must hold tens of thousands of sockets per process for well under
//! 1 KiB each beyond the kernel's share. tungstenite keeps a 128 KiB read buffer per socket by default
//! (and a few KiB even when tuned). Here a socket is a [`TcpStream`] plus an empty `Vec` for the rare
//! frame that straddles two reads: we wait for readability, `try_read` into a per-thread scratch buffer,
//! hand every complete frame to the caller, and copy only an incomplete tail into the socket's own
//! `Vec` (freed again as soon as it is consumed).
//!
//! Client frames are masked as the RFC requires; server pings are answered with pongs; a server close is
//! answered and reported with its code.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Per-thread scratch space for reads: large enough for many frames at once.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Largest message accepted from the server (a big kitchen snapshot fits easily).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Largest handshake response.
const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SCRATCH_BYTES]);
}

/// Why a socket failed; the kinds are what the reports count.
#[derive(Debug)]
pub enum WsError {
    Connect(io::Error),
    Io(io::Error),
    /// The upgrade was refused with this HTTP status.
    Status(u16),
    Handshake(&'static str),
    Protocol(&'static str),
}

impl WsError {
    /// A short, stable name for error tables.
    pub fn kind(&self) -> String {
        match self {
            WsError::Connect(e) => format!("ws_connect_{:?}", e.kind()).to_lowercase(),
            WsError::Io(e) => format!("ws_io_{:?}", e.kind()).to_lowercase(),
            WsError::Status(s) => format!("ws_upgrade_http_{s}"),
            WsError::Handshake(w) => format!("ws_handshake_{w}"),
            WsError::Protocol(w) => format!("ws_protocol_{w}"),
        }
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Connect(e) => write!(f, "connect failed: {e}"),
            WsError::Io(e) => write!(f, "socket error: {e}"),
            WsError::Status(s) => write!(f, "upgrade refused with HTTP {s}"),
            WsError::Handshake(w) => write!(f, "bad handshake: {w}"),
            WsError::Protocol(w) => write!(f, "protocol error: {w}"),
        }
    }
}

impl std::error::Error for WsError {}

/// One complete message from the server, borrowed from the scratch buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Text(&'a [u8]),
    Binary,
}

/// What a read step ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Messages (possibly none) were handled; the socket stays open.
    Open,
    /// The server sent a close frame with this code (1005 when it had none).
    Closed(u16),
    /// The connection ended without a close frame.
    Eof,
}

/// Opens a TCP connection, optionally from a chosen local address (loopback aliases spread the
/// 65k-port limit over several source addresses).
pub async fn tcp_connect(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind {
        // Without IP_BIND_ADDRESS_NO_PORT, bind(ip, 0) reserves a source port unique across every
        // socket on that address, searched in the kernel under a lock: with thousands of sockets
        // closing and reconnecting at once (a reconnect storm), each bind took long enough to stall the
        // whole worker — both runtime threads sat in bind() for tens of seconds and sockets looked
        // slow to come back. With the option the port is picked at connect() time, by 4-tuple.
        #[cfg(target_os = "linux")]
        if ip.is_ipv4() {
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )
            .map_err(io::Error::from)?;
        }
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A client WebSocket. Idle, it owns the stream and two empty vectors (no heap).
pub struct WsConn {
    stream: TcpStream,
    /// An incomplete frame carried over to the next read; empty (unallocated) when idle.
    partial: Vec<u8>,
    /// A fragmented text message being reassembled; empty when idle.
    fragments: Vec<u8>,
}

/// The `Sec-WebSocket-Accept` value for a key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A frame from the client: FIN set, masked with a random key.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask: [u8; 4] = rand::random();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// A parsed frame header: where the payload is and how long the frame is.
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload_start: usize,
    total: usize,
}

/// Parses a frame header at the start of `data`; `Ok(None)` when more bytes are needed.
fn parse_header(data: &[u8]) -> Result<Option<Header>, WsError> {
    if data.len() < 2 {
        return Ok(None);
    }
    let fin = data[0] & 0x80 != 0;
    if data[0] & 0x70 != 0 {
        return Err(WsError::Protocol("reserved_bits"));
    }
    let opcode = data[0] & 0x0f;
    let masked = data[1] & 0x80 != 0;
    let len7 = (data[1] & 0x7f) as usize;
    let (len, mut at) = match len7 {
        126 => {
            if data.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([data[2], data[3]]) as usize, 4)
        }
        127 => {
            if data.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&data[2..10]);
            let l = u64::from_be_bytes(b);
            if l > MAX_MESSAGE_BYTES as u64 {
                return Err(WsError::Protocol("frame_too_big"));
            }
            (l as usize, 10)
        }
        n => (n, 2),
    };
    if len > MAX_MESSAGE_BYTES {
        return Err(WsError::Protocol("frame_too_big"));
    }
    let mask = if masked {
        if data.len() < at + 4 {
            return Ok(None);
        }
        let m = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_start: at,
        total: at + len,
    }))
}

/// Control frames to send after a read step (pongs, a close reply). Rare, so allocated on demand.
#[derive(Default)]
pub struct Replies(Vec<u8>);

impl Replies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses as many complete frames as `data` holds, handing messages to `on_msg`. Returns how many bytes
/// were consumed and whether a close arrived.
fn parse_frames(
    data: &mut [u8],
    fragments: &mut Vec<u8>,
    replies: &mut Replies,
    on_msg: &mut (dyn FnMut(Msg<'_>) + Send),
) -> Result<(usize, Option<u16>), WsError> {
    let mut pos = 0;
    while pos < data.len() {
        let Some(h) = parse_header(&data[pos..])? else {
            break;
        };
        if data.len() - pos < h.total {
            break;
        }
        let payload = &mut data[pos + h.payload_start..pos + h.total];
        if let Some(mask) = h.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
        }
        pos += h.total;
        match h.opcode {
            0x1 if h.fin && fragments.is_empty() => on_msg(Msg::Text(payload)),
            0x1 | 0x2 if !h.fin => {
                if !fragments.is_empty() {
                    return Err(WsError::Protocol("interleaved_fragments"));
                }
                // Remember the opcode in the first byte, then the payload.
                fragments.push(h.opcode);
                fragments.extend_from_slice(payload);
            }
            0x2 if h.fin => on_msg(Msg::Binary),
            0x0 => {
                if fragments.is_empty() {
                    return Err(WsError::Protocol("stray_continuation"));
                }
                if fragments.len() + payload.len() > MAX_MESSAGE_BYTES {
                    return Err(WsError::Protocol("message_too_big"));
                }
                fragments.extend_from_slice(payload);
                if h.fin {
                    let whole = std::mem::take(fragments);
                    if whole.first() == Some(&0x1) {
                        on_msg(Msg::Text(&whole[1..]));
                    } else {
                        on_msg(Msg::Binary);
                    }
                }
            }
            0x8 => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                let echo = if payload.len() >= 2 {
                    payload[..2].to_vec()
                } else {
                    Vec::new()
                };
                replies.0.extend_from_slice(&client_frame(0x8, &echo));
                return Ok((pos, Some(code)));
            }
            0x9 => {
                if !h.fin || payload.len() > 125 {
                    return Err(WsError::Protocol("bad_ping"));
                }
                replies.0.extend_from_slice(&client_frame(0xA, payload));
            }
            0xA => {}
            _ => return Err(WsError::Protocol("unknown_opcode")),
        }
    }
    Ok((pos, None))
}

impl WsConn {
    /// Connects and upgrades. `path` includes any query string; `headers` are extra request headers.
    pub async fn connect(
        addr: SocketAddr,
        bind: Option<IpAddr>,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsConn, WsError> {
        let mut stream = tcp_connect(addr, bind).await.map_err(WsError::Connect)?;
        let key_bytes: [u8; 16] = rand::random();
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (k, v) in headers {
            req.push_str(k);
            req.push_str(": ");
            req.push_str(v);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(WsError::Io)?;
        // The handshake is transient, so a local buffer is fine here.
        let mut buf: Vec<u8> = Vec::with_capacity(512);
        let header_end = loop {
            stream.readable().await.map_err(WsError::Io)?;
            let mut chunk = [0u8; 1024];
            match stream.try_read(&mut chunk) {
                Ok(0) => return Err(WsError::Handshake("eof")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(WsError::Io(e)),
            }
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HANDSHAKE_BYTES {
                return Err(WsError::Handshake("too_long"));
            }
        };
        let mut hdrs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&buf[..header_end]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(WsError::Handshake("unparsable")),
        }
        let status = resp.code.unwrap_or(0);
        if status != 101 {
            return Err(WsError::Status(status));
        }
        let expected = accept_key(&key);
        let accepted = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == expected.as_bytes()
        });
        if !accepted {
            return Err(WsError::Handshake("bad_accept"));
        }
        let leftover = buf[header_end..].to_vec();
        Ok(WsConn {
            stream,
            partial: leftover,
            fragments: Vec::new(),
        })
    }

    /// Waits until the socket has something to read (cancel-safe: for `select!` beside other work).
    pub async fn wait_readable(&self) -> Result<(), WsError> {
        self.stream.readable().await.map_err(WsError::Io)
    }

    /// Whether bytes of an earlier read are waiting to be parsed (the server's first frame can arrive
    /// with the upgrade response).
    pub fn has_buffered(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Parses what is already buffered without reading.
    pub async fn drain_buffered(
        &mut self,
        on_msg: &mut (dyn FnMut(Msg<'_>) + Send),
    ) -> Result<ReadOutcome, WsError> {
        let (outcome, replies) = self.take_buffered(on_msg)?;
        self.flush_replies(replies).await?;
        Ok(outcome)
    }

    /// The synchronous half of [`WsConn::drain_buffered`]; replies are left to the caller.
    pub fn take_buffered(
        &mut self,
        on_msg: &mut (dyn FnMut(Msg<'_>) + Send),
    ) -> Result<(ReadOutcome, Replies), WsError> {
        let mut replies = Replies::default();
        if self.partial.is_empty() {
            return Ok((ReadOutcome::Open, replies));
        }
        let mut data = std::mem::take(&mut self.partial);
        let (used, closed) = parse_frames(&mut data, &mut self.fragments, &mut replies, on_msg)?;
        if used < data.len() {
            self.partial = data[used..].to_vec();
        }
        Ok((
            closed.map_or(ReadOutcome::Open, ReadOutcome::Closed),
            replies,
        ))
    }

    /// Registers `cx`'s waker for read readiness (the multiplexed path: one task, many sockets).
    pub fn poll_read_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), WsError>> {
        self.stream.poll_read_ready(cx).map_err(WsError::Io)
    }

    /// Writes small control frames without waiting; a full send buffer is an error (never seen for
    /// the few bytes of a pong or a resume).
    pub fn try_write_all(&self, mut bytes: &[u8]) -> Result<(), WsError> {
        while !bytes.is_empty() {
            match self.stream.try_write(bytes) {
                Ok(0) => return Err(WsError::Protocol("write_zero")),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(WsError::Protocol("send_buffer_full"))
                }
                Err(e) => return Err(WsError::Io(e)),
            }
        }
        Ok(())
    }

    /// [`WsConn::try_write_all`] for replies.
    pub fn try_write_replies(&self, replies: &Replies) -> Result<(), WsError> {
        self.try_write_all(&replies.0)
    }

    /// Waits until the socket is readable, reads what is there into the per-thread scratch buffer and
    /// hands each complete message to `on_msg`. Nothing is buffered per socket unless a frame straddles
    /// two reads. Readiness can be stale (the read then finds nothing): that returns `Open` with no
    /// message, so a caller selecting on [`WsConn::wait_readable`] beside other work is never stuck here.
    pub async fn read_step(
        &mut self,
        on_msg: &mut (dyn FnMut(Msg<'_>) + Send),
    ) -> Result<ReadOutcome, WsError> {
        self.stream.readable().await.map_err(WsError::Io)?;
        let (step, replies) = self.try_read_frames(on_msg)?;
        self.flush_replies(replies).await?;
        Ok(step.unwrap_or(ReadOutcome::Open))
    }

    /// The synchronous half of [`WsConn::read_step`]: one `try_read` into the scratch buffer and the
    /// frames it completes. `None` when there was nothing to read (stale readiness). Control replies
    /// (pongs, a close answer) come back as bytes for [`WsConn::write_raw`] — usually none, so an idle
    /// socket's task never holds a write future.
    pub fn try_read_frames(
        &mut self,
        on_msg: &mut (dyn FnMut(Msg<'_>) + Send),
    ) -> Result<(Option<ReadOutcome>, Replies), WsError> {
        let mut replies = Replies::default();
        let step = SCRATCH.with(|cell| -> Result<Option<ReadOutcome>, WsError> {
            let mut scratch = cell.borrow_mut();
            let n = match self.stream.try_read(&mut scratch[..]) {
                Ok(0) => return Ok(Some(ReadOutcome::Eof)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(WsError::Io(e)),
            };
            let closed = if self.partial.is_empty() {
                let data = &mut scratch[..n];
                let (used, closed) = parse_frames(data, &mut self.fragments, &mut replies, on_msg)?;
                if used < n && closed.is_none() {
                    self.partial = data[used..].to_vec();
                }
                closed
            } else {
                self.partial.extend_from_slice(&scratch[..n]);
                let mut data = std::mem::take(&mut self.partial);
                let (used, closed) =
                    parse_frames(&mut data, &mut self.fragments, &mut replies, on_msg)?;
                if used < data.len() && closed.is_none() {
                    data.drain(..used);
                    self.partial = data;
                }
                closed
            };
            Ok(Some(closed.map_or(ReadOutcome::Open, ReadOutcome::Closed)))
        })?;
        if self.partial.capacity() > 0 && self.partial.is_empty() {
            self.partial = Vec::new();
        }
        Ok((step, replies))
    }

    /// Writes control replies from [`WsConn::try_read_frames`].
    pub async fn write_raw(&mut self, replies: Replies) -> Result<(), WsError> {
        self.flush_replies(replies).await
    }

    async fn flush_replies(&mut self, replies: Replies) -> Result<(), WsError> {
        if !replies.0.is_empty() {
            self.stream
                .write_all(&replies.0)
                .await
                .map_err(WsError::Io)?;
        }
        Ok(())
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &[u8]) -> Result<(), WsError> {
        let frame = client_frame(0x1, text);
        self.stream.write_all(&frame).await.map_err(WsError::Io)
    }

    /// Sends a close frame with `code` and shuts the write side.
    pub async fn close(&mut self, code: u16) {
        let frame = client_frame(0x8, &code.to_be_bytes());
        let _ = self.stream.write_all(&frame).await;
        let _ = self.stream.shutdown().await;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    fn collect(data: &mut [u8]) -> (Vec<String>, usize, Option<u16>, Vec<u8>) {
        let mut got = Vec::new();
        let mut frags = Vec::new();
        let mut replies = Replies::default();
        let (used, closed) = parse_frames(data, &mut frags, &mut replies, &mut |m| {
            if let Msg::Text(t) = m {
                got.push(String::from_utf8_lossy(t).into_owned());
            }
        })
        .expect("parses");
        (got, used, closed, replies.0)
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn complete_frames_are_delivered_and_a_partial_tail_is_left() {
        let mut data = server_frame(1, true, b"hello");
        data.extend(server_frame(1, true, &[b'x'; 300]));
        let full = data.len();
        data.extend(&server_frame(1, true, b"tail")[..3]);
        let (got, used, closed, _) = collect(&mut data);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], "hello");
        assert_eq!(got[1].len(), 300);
        assert_eq!(used, full);
        assert_eq!(closed, None);
    }

    #[test]
    fn pings_get_masked_pongs_and_close_is_reported() {
        let mut data = server_frame(9, true, b"pp");
        data.extend(server_frame(8, true, &1001u16.to_be_bytes()));
        let (_, _, closed, replies) = collect(&mut data);
        assert_eq!(closed, Some(1001));
        // pong: FIN|0xA, masked length 2, 4 mask bytes, 2 payload bytes
        assert_eq!(replies[0], 0x8A);
        assert_eq!(replies[1], 0x80 | 2);
        let mask = &replies[2..6];
        assert_eq!(replies[6] ^ mask[0], b'p');
        assert_eq!(replies[7] ^ mask[1], b'p');
        assert_eq!(replies[8], 0x88);
    }

    #[test]
    fn fragmented_text_is_reassembled() {
        let mut data = server_frame(1, false, b"hel");
        data.extend(server_frame(0, false, b"lo "));
        data.extend(server_frame(0, true, b"world"));
        let (got, _, _, _) = collect(&mut data);
        assert_eq!(got, vec!["hello world".to_string()]);
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(1, b"abc");
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x83);
        let m = &f[2..6];
        let p: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i & 3])
            .collect();
        assert_eq!(p, b"abc");
    }
}
