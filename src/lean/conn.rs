//! One lean socket after its handshake: a hand-written future that owns the `TcpStream`, feeds client
//! frames to the [`SocketSession`] actor and drains the session's [`SinkReceiver`] into the socket.
//!
//! What an idle socket holds: the stream, the receiver, the session's address and a few words of state.
//! No buffer: reads go into a per-thread scratch buffer (64 KiB, shared by every socket of the worker),
//! and only a frame that straddles two reads is copied into a `Vec` of its own, freed once it is
//! complete. Writes go straight from the queued frames (whose bytes are shared by every subscriber of an
//! event) to the kernel with `writev`; while the kernel buffer is full, the frames simply stay queued,
//! where they count against the session's bound (1013 when it overflows).
//!
//! Inbound frames are handed to the session one at a time with `Addr::send`, and reading stops until
//! the session has handled each one, so a fast client waits on its own TCP window instead of growing a
//! mailbox. The session answers pings and rate-limits everything the client sends, as it did over
//! actix-ws.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::prelude::*;
use scan2order_actors::session::{Inbound, SocketSession};
use scan2order_actors::sink::{close_code, Outgoing, SinkReceiver};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::frame::{self, FrameError, Head};
use super::handshake::write_all;

/// Per-thread read buffer: large enough to take many frames, or a whole message, in one read.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Reads per wake-up before the task yields to the other sockets of its worker.
const READS_PER_POLL: usize = 16;
/// Frames per `writev`.
const FRAMES_PER_WRITE: usize = 16;
/// How long a close handshake may take (writing what is left of a frame, our close frame, the
/// client's answer) before the connection is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_BYTES]);
    static BATCH: RefCell<Vec<Outgoing>> = RefCell::new(Vec::with_capacity(FRAMES_PER_WRITE));
}

type Delivery = Pin<Box<dyn Future<Output = Result<(), MailboxError>>>>;

/// What the read side does with client frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Hand them to the session.
    Open,
    /// A close is under way: skip everything until the client's close frame.
    Draining,
    /// The client sent its close frame or went away: read nothing more.
    Stopped,
}

/// Read-side bytes that exist only while they hold something.
#[derive(Default)]
struct ReadBuf {
    /// Unparsed bytes: an incomplete frame, or frames held back while a delivery was in flight.
    bytes: Vec<u8>,
    /// `bytes` may hold complete frames (decoding stopped for a delivery, or the handshake's tail).
    ready: bool,
    /// The fragmented message being reassembled, and its opcode.
    message: Vec<u8>,
    message_opcode: Option<u8>,
}

impl ReadBuf {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.message_opcode.is_none()
    }
}

/// Our close frame and how far it got.
struct Closing {
    frame: [u8; 4],
    frame_len: u8,
    written: u8,
    /// The client's close arrived (or it stopped reading and writing): finish once ours is out.
    peer_done: bool,
    deadline: Pin<Box<Sleep>>,
}

/// One socket's transport; completes when the socket is closed.
pub struct Connection {
    io: TcpStream,
    rx: SinkReceiver,
    session: Addr<SocketSession>,
    max_message: usize,
    reading: Reading,
    told_session: bool,
    /// Bytes of the queue's front frame already written.
    front_written: usize,
    pending: Option<Box<ReadBuf>>,
    delivering: Option<Delivery>,
    closing: Option<Closing>,
}

/// How a write attempt went.
enum Wrote {
    Some,
    Nothing,
    Blocked,
}

impl Connection {
    /// `early`: bytes the client sent right behind its handshake.
    pub fn new(
        io: TcpStream,
        rx: SinkReceiver,
        session: Addr<SocketSession>,
        max_message: usize,
        early: Vec<u8>,
    ) -> Connection {
        let pending = (!early.is_empty()).then(|| {
            Box::new(ReadBuf {
                bytes: early,
                ready: true,
                ..ReadBuf::default()
            })
        });
        Connection {
            io,
            rx,
            session,
            max_message,
            reading: Reading::Open,
            told_session: false,
            front_written: 0,
            pending,
            delivering: None,
            closing: None,
        }
    }

    /// One pass over everything that may have become ready; `Ok(true)` once the socket is finished.
    fn step(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if let Some(delivery) = &mut self.delivering {
            if let Poll::Ready(res) = delivery.as_mut().poll(cx) {
                self.delivering = None;
                if res.is_err() {
                    // The session is gone; it closed the sink on its way out (or never will: then
                    // this is a normal close).
                    self.rx.close(close_code::NORMAL);
                }
            }
        }
        if self.reading != Reading::Stopped && self.delivering.is_none() && !self.read(cx)? {
            return Ok(true);
        }
        if self.closing.is_none() {
            if let Some(code) = self.rx.close_requested() {
                self.start_close(Some(code), false);
            }
        }
        if self.write(cx)? {
            return Ok(true);
        }
        if let Some(closing) = &mut self.closing {
            if closing.deadline.as_mut().poll(cx).is_ready() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads and decodes what the client sent; `Ok(false)` when the client went away.
    fn read(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        for _ in 0..READS_PER_POLL {
            if self.reading == Reading::Stopped || self.delivering.is_some() {
                return Ok(true);
            }
            if self.pending.as_ref().is_some_and(|p| p.ready) {
                self.decode_pending();
                continue;
            }
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return Ok(true),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) => {}
            }
            let open = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match self.io.try_read(&mut scratch) {
                    Ok(0) => Ok(false),
                    Ok(n) => {
                        self.feed(&mut scratch[..n]);
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
                    Err(e) => Err(e),
                }
            })?;
            if !open {
                self.reading = Reading::Stopped;
                self.tell_session();
                return Ok(false);
            }
        }
        // Read budget spent: come back after the worker's other sockets had their turn.
        cx.waker().wake_by_ref();
        Ok(true)
    }

    /// Decodes freshly read bytes, behind whatever was left over.
    fn feed(&mut self, data: &mut [u8]) {
        match &mut self.pending {
            Some(p) if !p.bytes.is_empty() => {
                p.bytes.extend_from_slice(data);
                self.decode_pending();
            }
            _ => {
                let used = self.decode(data);
                if used < data.len() && self.reading != Reading::Stopped {
                    let p = self.pending.get_or_insert_with(Box::default);
                    p.bytes.extend_from_slice(&data[used..]);
                    p.ready = self.delivering.is_some();
                }
            }
        }
    }

    /// Decodes the held-back bytes; keeps what is left, frees the rest.
    fn decode_pending(&mut self) {
        let Some(p) = &mut self.pending else {
            return;
        };
        p.ready = false;
        let mut bytes = std::mem::take(&mut p.bytes);
        let used = self.decode(&mut bytes);
        bytes.drain(..used);
        if let Some(p) = &mut self.pending {
            if !bytes.is_empty() && self.reading != Reading::Stopped {
                if bytes.capacity() > 2 * bytes.len() + 64 {
                    bytes.shrink_to_fit();
                }
                p.bytes = bytes;
                p.ready = self.delivering.is_some();
            }
            if p.is_empty() {
                self.pending = None;
            }
        }
    }

    /// Handles every complete frame at the start of `buf` until a delivery is in flight or reading
    /// stops; returns the bytes consumed.
    fn decode(&mut self, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while self.reading != Reading::Stopped && self.delivering.is_none() {
            let head = match frame::parse_head(&buf[pos..], self.max_message) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(e) => {
                    self.refuse_frame(e);
                    break;
                }
            };
            if buf.len() - pos < head.frame_len() {
                break;
            }
            let payload = &mut buf[pos + head.head_len..pos + head.frame_len()];
            frame::apply_mask(payload, head.mask);
            pos += head.frame_len();
            self.on_frame(head, payload);
        }
        pos
    }

    fn on_frame(&mut self, head: Head, payload: &[u8]) {
        if self.reading == Reading::Draining {
            if head.opcode == frame::CLOSE {
                self.reading = Reading::Stopped;
                if let Some(c) = &mut self.closing {
                    c.peer_done = true;
                }
            }
            return;
        }
        let assembling = self
            .pending
            .as_ref()
            .and_then(|p| p.message_opcode)
            .is_some();
        match head.opcode {
            frame::TEXT | frame::BINARY if assembling => {
                self.refuse_frame(FrameError::Protocol("a message interrupted another"))
            }
            frame::TEXT | frame::BINARY if head.fin => {
                self.deliver_message(head.opcode, payload.to_vec())
            }
            frame::TEXT | frame::BINARY => {
                let p = self.pending.get_or_insert_with(Box::default);
                p.message = payload.to_vec();
                p.message_opcode = Some(head.opcode);
            }
            frame::CONTINUATION => {
                let Some(p) = self.pending.as_mut().filter(|p| p.message_opcode.is_some()) else {
                    return self.refuse_frame(FrameError::Protocol("a continuation of nothing"));
                };
                if p.message.len() + payload.len() > self.max_message {
                    return self.refuse_frame(FrameError::TooBig);
                }
                p.message.extend_from_slice(payload);
                if head.fin {
                    let message = std::mem::take(&mut p.message);
                    let opcode = p.message_opcode.take().unwrap_or(frame::TEXT);
                    self.deliver_message(opcode, message);
                }
            }
            frame::CLOSE => match frame::close_code(payload) {
                Ok(code) => {
                    self.reading = Reading::Stopped;
                    self.tell_session();
                    // Echo the client's code, as RFC 6455 §5.5.1 suggests.
                    self.start_close(code, true);
                }
                Err(e) => self.refuse_frame(e),
            },
            frame::PING => self.deliver(Inbound::Ping(payload.to_vec())),
            _ => self.deliver(Inbound::Pong),
        }
    }

    fn deliver_message(&mut self, opcode: u8, payload: Vec<u8>) {
        if opcode == frame::BINARY {
            return self.deliver(Inbound::Binary);
        }
        match String::from_utf8(payload) {
            Ok(text) => self.deliver(Inbound::Text(text)),
            Err(_) => {
                self.reading = Reading::Draining;
                self.tell_session();
                self.rx.close(close_code::INVALID_PAYLOAD);
            }
        }
    }

    /// Hands one frame to the session; nothing more is read until it has been handled.
    fn deliver(&mut self, frame: Inbound) {
        self.delivering = Some(Box::pin(self.session.send(frame)));
    }

    fn refuse_frame(&mut self, e: FrameError) {
        self.reading = Reading::Draining;
        if let Some(p) = &mut self.pending {
            p.message = Vec::new();
            p.message_opcode = None;
        }
        match e {
            FrameError::TooBig => {
                // The session closes its sink with 1009 and stops, as over actix-ws.
                self.session.do_send(Inbound::TooBig);
                self.told_session = true;
                self.rx.close(close_code::TOO_BIG);
            }
            FrameError::Protocol(why) => {
                tracing::debug!(why, "socket closed for a protocol error");
                self.tell_session();
                self.rx.close(close_code::PROTOCOL_ERROR);
            }
        }
    }

    /// Tells the session its client is gone (once).
    fn tell_session(&mut self) {
        if !self.told_session {
            self.told_session = true;
            self.session.do_send(Inbound::Closed);
        }
    }

    /// Begins the closing handshake with `code` (`None`: a close frame without a code).
    fn start_close(&mut self, code: Option<u16>, peer_done: bool) {
        if let Some(c) = &mut self.closing {
            c.peer_done |= peer_done;
            return;
        }
        if self.reading == Reading::Open {
            self.reading = Reading::Draining;
        }
        let (frame, frame_len) = match code {
            Some(code) => {
                let [hi, lo] = code.to_be_bytes();
                ([0x88, 2, hi, lo], 4)
            }
            None => ([0x88, 0, 0, 0], 2),
        };
        self.closing = Some(Closing {
            frame,
            frame_len,
            written: 0,
            peer_done,
            deadline: Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)),
        });
    }

    /// Writes queued frames, then (when closing) the rest of a half-written frame and our close frame;
    /// `Ok(true)` once the close handshake is complete.
    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        loop {
            if self.closing.is_none() {
                match self.write_frames(cx, FRAMES_PER_WRITE)? {
                    Wrote::Some => continue,
                    Wrote::Blocked => return Ok(false),
                    Wrote::Nothing => {
                        if self.rx.senders_gone() && self.rx.is_empty() {
                            // Nobody will queue anything again: a normal close.
                            self.start_close(Some(close_code::NORMAL), false);
                            continue;
                        }
                        return Ok(false);
                    }
                }
            }
            if self.front_written > 0 {
                // A frame is half out: it must be completed before the close frame can follow.
                match self.write_frames(cx, 1)? {
                    Wrote::Some => continue,
                    Wrote::Blocked => return Ok(false),
                    Wrote::Nothing => self.front_written = 0,
                }
            }
            let Some(c) = &mut self.closing else {
                return Ok(false);
            };
            while c.written < c.frame_len {
                match self
                    .io
                    .try_write(&c.frame[c.written as usize..c.frame_len as usize])
                {
                    Ok(n) => c.written += n as u8,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match self.io.poll_write_ready(cx) {
                            Poll::Pending => return Ok(false),
                            Poll::Ready(Err(e)) => return Err(e),
                            Poll::Ready(Ok(())) => {}
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(c.peer_done);
        }
    }

    /// One `writev` of up to `max` frames from the front of the queue.
    fn write_frames(&mut self, cx: &mut Context<'_>, max: usize) -> io::Result<Wrote> {
        BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            batch.clear();
            let n = self.rx.peek(max.min(FRAMES_PER_WRITE), &mut batch);
            if n == 0 {
                return Ok(Wrote::Nothing);
            }
            let mut heads = [[0u8; frame::MAX_SERVER_HEAD]; FRAMES_PER_WRITE];
            let mut head_lens = [0usize; FRAMES_PER_WRITE];
            let mut sizes = [0usize; FRAMES_PER_WRITE];
            for (i, f) in batch.iter().enumerate() {
                let (opcode, payload) = opcode_and_payload(f);
                head_lens[i] = frame::server_head(opcode, payload.len(), &mut heads[i]);
                sizes[i] = head_lens[i] + payload.len();
            }
            let mut iov = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
            let mut k = 0;
            let mut skip = self.front_written;
            for (i, f) in batch.iter().enumerate() {
                let head = &heads[i][..head_lens[i]];
                let (_, payload) = opcode_and_payload(f);
                for part in [head, payload] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    iov[k] = IoSlice::new(&part[skip..]);
                    skip = 0;
                    k += 1;
                }
            }
            loop {
                match self.io.try_write_vectored(&iov[..k]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(written) => {
                        let mut left = written + self.front_written;
                        let mut done = 0;
                        for size in &sizes[..n] {
                            if left < *size {
                                break;
                            }
                            left -= size;
                            done += 1;
                        }
                        self.front_written = left;
                        self.rx.consume(done);
                        return Ok(Wrote::Some);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match self.io.poll_write_ready(cx) {
                            Poll::Pending => return Ok(Wrote::Blocked),
                            Poll::Ready(Err(e)) => return Err(e),
                            Poll::Ready(Ok(())) => {}
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

fn opcode_and_payload(f: &Outgoing) -> (u8, &[u8]) {
    match f {
        Outgoing::Text(t) => (frame::TEXT, t.as_bytes()),
        Outgoing::Ping => (frame::PING, &[]),
        Outgoing::Pong(p) => (frame::PONG, p),
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // Before looking at the queue: a frame queued from now on wakes this task.
        this.rx.register(cx.waker());
        match this.step(cx) {
            Ok(false) => Poll::Pending,
            Ok(true) => Poll::Ready(()),
            Err(e) => {
                tracing::debug!(error = %e, "socket error");
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // However the socket ended, the session stops and unsubscribes.
        self.tell_session();
    }
}

/// A socket upgraded only to be closed at once (bad token, wrong restaurant): our close frame with the
/// code and reason, then the client's answer, within [`CLOSE_TIMEOUT`].
pub async fn refuse(io: TcpStream, code: u16, why: &str) {
    let why = &why.as_bytes()[..why.len().min(123)];
    let mut frame = vec![0x88, (2 + why.len()) as u8];
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(why);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        write_all(&io, &frame).await?;
        // Skip whatever the client sends until its close frame (or it goes away).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            io.readable().await?;
            match io.try_read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            loop {
                match frame::parse_head(&buf, 125) {
                    Ok(Some(h)) if h.opcode == frame::CLOSE => return Ok(()),
                    Ok(Some(h)) if buf.len() >= h.frame_len() => {
                        buf.drain(..h.frame_len());
                    }
                    Ok(_) => break,
                    Err(_) => return Ok(()),
                }
            }
        }
    })
    .await;
}
