//! One lean socket after its handshake: [`Connection`] owns the `TcpStream` and is the session actor's
//! stream of [`Inbound`] frames (`ctx.add_stream`), so a socket costs no task of its own: the actor's task
//! polls it. Each poll also drains the session's [`SinkReceiver`] into the socket (the sink wakes the
//! actor's task when something is queued).
//!
//! What an idle socket holds: the stream, the receiver and a few words of state. No buffer: reads go
//! into a per-thread scratch buffer (64 KiB, shared by every socket of the worker), and only a frame
//! that straddles two reads is copied into a `Vec` of its own, freed once it is complete. Writes go
//! straight from the queued frames (whose bytes every subscriber of an event shares) to the kernel with
//! `writev`; while the kernel buffer is full the frames simply stay queued, where they count against the
//! session's bound (1013 when it overflows).
//!
//! Inbound messages are yielded one at a time and the actor handles each before the next is decoded,
//! so a fast client waits on its own TCP window. The session answers pings and rate-limits everything
//! the client sends, as it did over actix-ws.
//!
//! Closing: a close asked for through the sink (by the session or the restaurant) is written after the
//! frame that is half out, if any; then the client's close frame is awaited for up to
//! [`CLOSE_TIMEOUT`]. A client's close is answered with its own code. When the session stops before the
//! handshake is over, the rest of it moves to a small task of its own.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use scan2order_actors::session::Inbound;
use scan2order_actors::sink::{close_code, Outgoing, SinkReceiver};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::decoder::{Close, Decoder, Reading};
use super::frame;
use super::handshake::write_all;

/// Per-thread read buffer: large enough to take many frames, or a whole message, in one read.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Reads per wake-up before the socket yields to the others of its worker.
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

/// Our close frame and how far it got.
struct Closing {
    frame: [u8; 4],
    frame_len: u8,
    written: u8,
    /// The client's close arrived: finish once ours is out.
    peer_done: bool,
    deadline: Pin<Box<Sleep>>,
}

/// The number of open lean sockets (the connections and their closing handshakes).
#[derive(Clone, Debug, Default)]
pub struct LiveSockets(Arc<AtomicUsize>);

impl LiveSockets {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

struct Conn {
    io: TcpStream,
    rx: SinkReceiver,
    live: LiveSockets,
    /// Bytes of the queue's front frame already written.
    front_written: u32,
    /// The read side: client bytes in, messages and closes out.
    decoder: Decoder,
    /// Boxed: every idle socket carries this field, few ever use it.
    closing: Option<Box<Closing>>,
    done: bool,
}

/// One socket's transport: the session's stream of inbound frames.
pub struct Connection {
    /// `None` once handed to a closing task.
    conn: Option<Conn>,
}

/// How a write attempt went.
enum Wrote {
    Some,
    Nothing,
    Blocked,
}

/// What a read attempt produced.
enum Read {
    Message(Inbound),
    /// Nothing more for now.
    Idle,
    /// The client went away.
    Gone,
}

impl Connection {
    /// `early`: bytes the client sent right behind its handshake.
    pub fn new(
        io: TcpStream,
        rx: SinkReceiver,
        max_message: usize,
        early: Vec<u8>,
        live: LiveSockets,
    ) -> Connection {
        live.0.fetch_add(1, Ordering::AcqRel);
        Connection {
            conn: Some(Conn {
                io,
                rx,
                live,
                front_written: 0,
                decoder: Decoder::new(max_message, early),
                closing: None,
                done: false,
            }),
        }
    }
}

impl Stream for Connection {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        match &mut self.conn {
            Some(conn) => conn.poll_inbound(cx),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The session stopped (or its worker is going away) before the socket was finished: the
        // closing handshake goes on in a task of its own.
        // (Without a runtime, e.g. while a worker thread is torn down, the socket is just dropped.)
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        if let Some(mut conn) = self.conn.take().filter(|c| !c.done && runtime) {
            if conn.closing.is_none() {
                let code = conn.rx.close_requested().unwrap_or(close_code::NORMAL);
                conn.start_close(Some(code), false);
            }
            tokio::task::spawn_local(std::future::poll_fn(move |cx| {
                conn.rx.register(cx.waker());
                match conn.poll_inbound(cx) {
                    Poll::Ready(None) => Poll::Ready(()),
                    // Nothing reaches a session any more.
                    Poll::Ready(Some(_)) | Poll::Pending => Poll::Pending,
                }
            }));
        }
    }
}

impl Conn {
    /// Writes what is queued, then yields the next message from the client; `None` once the socket is
    /// finished.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Before looking at the queue: a frame queued from now on wakes this task.
        self.rx.register(cx.waker());
        match self.step(cx) {
            Ok(Some(m)) => Poll::Ready(Some(m)),
            Ok(None) if self.done => Poll::Ready(None),
            Ok(None) => Poll::Pending,
            Err(e) => {
                tracing::debug!(error = %e, "socket error");
                self.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn step(&mut self, cx: &mut Context<'_>) -> io::Result<Option<Inbound>> {
        loop {
            if self.closing.is_none() {
                if let Some(code) = self.rx.close_requested() {
                    self.start_close(Some(code), false);
                }
            }
            if self.write(cx)? {
                self.done = true;
                return Ok(None);
            }
            if let Some(closing) = &mut self.closing {
                if closing.deadline.as_mut().poll(cx).is_ready() {
                    self.done = true;
                    return Ok(None);
                }
            }
            let closing = self.closing.is_some();
            match self.read(cx)? {
                Read::Message(m) => return Ok(Some(m)),
                Read::Gone => {
                    self.done = true;
                    return Ok(None);
                }
                // A close began while reading (the client's, or a refused frame): write it now.
                Read::Idle if self.closing.is_some() != closing => continue,
                Read::Idle if self.closing.is_none() && self.rx.close_requested().is_some() => {
                    continue
                }
                // The client's close answered ours while reading: the handshake is over.
                Read::Idle
                    if self
                        .closing
                        .as_ref()
                        .is_some_and(|c| c.peer_done && c.written == c.frame_len) =>
                {
                    continue
                }
                Read::Idle => return Ok(None),
            }
        }
    }

    /// Reads until a complete message, or until nothing more is there.
    fn read(&mut self, cx: &mut Context<'_>) -> io::Result<Read> {
        for _ in 0..READS_PER_POLL {
            if self.decoder.reading() == Reading::Stopped {
                return Ok(Read::Idle);
            }
            if self.decoder.has_ready() {
                let message = self.decoder.decode_held();
                self.apply_close();
                if let Some(m) = message {
                    return Ok(Read::Message(m));
                }
                continue;
            }
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return Ok(Read::Idle),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Ready(Ok(())) => {}
            }
            let got = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match self.io.try_read(&mut scratch) {
                    Ok(0) => Ok(None),
                    Ok(n) => Ok(Some(self.decoder.feed(&mut scratch[..n]))),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(None)),
                    Err(e) => Err(e),
                }
            })?;
            self.apply_close();
            match got {
                None => {
                    self.decoder.stop();
                    return Ok(Read::Gone);
                }
                Some(Some(m)) => return Ok(Read::Message(m)),
                Some(None) => {}
            }
        }
        // Read budget spent: come back after the worker's other sockets had their turn.
        cx.waker().wake_by_ref();
        Ok(Read::Idle)
    }

    /// Carries out what the decoder's last call asked: a refused frame closes the socket, the
    /// client's close is answered with its code. Once nothing more is read there is no answer to wait
    /// for.
    fn apply_close(&mut self) {
        match self.decoder.take_close() {
            Some(Close::Refuse(code)) => self.rx.close(code),
            Some(Close::Echo(code)) => self.start_close(code, true),
            None => {}
        }
        if self.decoder.reading() == Reading::Stopped {
            if let Some(c) = &mut self.closing {
                c.peer_done = true;
            }
        }
    }

    /// Begins the closing handshake with `code` (`None`: a close frame without a code).
    fn start_close(&mut self, code: Option<u16>, peer_done: bool) {
        // Nothing more is read (the client's close came, or its frames cannot be followed): there is
        // no answer to wait for.
        let peer_done = peer_done || self.decoder.reading() == Reading::Stopped;
        if let Some(c) = &mut self.closing {
            c.peer_done |= peer_done;
            return;
        }
        self.decoder.drain();
        let (frame, frame_len) = match code {
            Some(code) => {
                let [hi, lo] = code.to_be_bytes();
                ([0x88, 2, hi, lo], 4)
            }
            None => ([0x88, 0, 0, 0], 2),
        };
        self.closing = Some(Box::new(Closing {
            frame,
            frame_len,
            written: 0,
            peer_done,
            deadline: Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)),
        }));
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
            let mut skip = self.front_written as usize;
            for (i, f) in batch.iter().enumerate() {
                let (_, payload) = opcode_and_payload(f);
                for part in [&heads[i][..head_lens[i]], payload] {
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
                        let mut left = written + self.front_written as usize;
                        let mut done = 0;
                        for size in &sizes[..n] {
                            if left < *size {
                                break;
                            }
                            left -= size;
                            done += 1;
                        }
                        // Less than one frame (a message under the frame limit) is left.
                        self.front_written = u32::try_from(left).unwrap_or(u32::MAX);
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

impl Drop for Conn {
    fn drop(&mut self) {
        self.live.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn opcode_and_payload(f: &Outgoing) -> (u8, &[u8]) {
    match f {
        Outgoing::Text(t) => (frame::TEXT, t.as_bytes()),
        Outgoing::Ping => (frame::PING, &[]),
        Outgoing::Pong(p) => (frame::PONG, p),
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
