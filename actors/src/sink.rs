//! The seam between a session and its socket: a bounded queue of outbound frames and an out-of-band
//! close signal. Session logic and the restaurant actor only ever see a [`SocketSink`]; the transport under
//! it (the lean transport in `scan2order::lean`, or the actix-ws reference in `scan2order::ws`) drains the
//! queue through its [`SinkReceiver`]. The transport can change without touching them.
//!
//! Memory: an idle socket's queue holds no allocation. The queue is a boxed `VecDeque` behind a mutex
//! that is given back to the allocator whenever the transport drains it, so a sink costs one small
//! shared block (counts, the close code, the transport's waker) until frames are actually waiting. A frame stays in
//! the queue until the transport has written it completely, so frames stuck behind a full kernel buffer
//! count against the bound: a consumer that stops reading fills the queue and is closed with 1013.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytestring::ByteString;
use futures_util::task::AtomicWaker;

/// WebSocket close codes of PROTOCOL.md.
pub mod close_code {
    /// A normal close (the session ended on its own).
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (unmasked or malformed frames).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: bad token, wrong restaurant, rotated table token, flooding.
    pub const POLICY: u16 = 1008;
    /// An inbound message over the frame limit.
    pub const TOO_BIG: u16 = 1009;
    /// The outbound queue overflowed: reconnect and resume.
    pub const SLOW_CONSUMER: u16 = 1013;
}

/// One outbound frame.
#[derive(Clone, Debug)]
pub enum Outgoing {
    /// A JSON text message; the bytes are shared between every subscriber of an event.
    Text(ByteString),
    Ping,
    Pong(bytes_payload::Payload),
}

/// Ping/pong payloads are tiny; kept as an owned vector.
pub mod bytes_payload {
    pub type Payload = Vec<u8>;
}

/// Why a send to a socket did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SinkError {
    /// The queue is full: the consumer is too slow and has now been told to close with 1013.
    Full,
    /// The socket is gone.
    Closed,
}

/// State shared by every clone of a sink and its receiver: one small block per socket, laid out tight
/// because every idle socket holds one.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// The transport's task: woken when a frame is queued, a close is asked for or the last sender goes.
    waker: AtomicWaker,
    /// Live [`SocketSink`] clones; the transport closes the socket once none is left.
    senders: AtomicU32,
    capacity: u32,
    /// 0 while open; then the close code asked for (the first one wins).
    close_code: AtomicU16,
}

#[derive(Debug)]
struct Queue {
    /// Frames not yet completely written to the socket, oldest first; `None` (unallocated) when empty.
    /// Boxed on purpose: an empty `VecDeque` still takes 32 bytes in every idle socket's block.
    #[allow(clippy::box_collection)]
    frames: Option<Box<VecDeque<Outgoing>>>,
    /// False once the transport dropped its receiver (the socket is gone).
    receiver: bool,
}

impl Queue {
    fn len(&self) -> usize {
        self.frames.as_ref().map_or(0, |f| f.len())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (every operation on it is a
        // single VecDeque call), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, code: u16) {
        let code = if code == 0 { close_code::NORMAL } else { code };
        if self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            metrics::counter!("s2o_socket_closes_total", "code" => code.to_string()).increment(1);
            self.waker.wake();
        }
    }

    fn close_requested(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }
}

/// The sending half a session and the restaurant actor use. Cheap to clone.
#[derive(Debug)]
pub struct SocketSink {
    shared: Arc<Shared>,
}

/// The transport's half: the queue to drain and the close signal to watch.
#[derive(Debug)]
pub struct SinkReceiver {
    shared: Arc<Shared>,
}

impl SocketSink {
    /// A sink holding at most `capacity` frames not yet written to the socket.
    pub fn channel(capacity: usize) -> (SocketSink, SinkReceiver) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                frames: None,
                receiver: true,
            }),
            waker: AtomicWaker::new(),
            senders: AtomicU32::new(1),
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            close_code: AtomicU16::new(0),
        });
        (
            SocketSink {
                shared: shared.clone(),
            },
            SinkReceiver { shared },
        )
    }

    /// Queues a text frame without waiting. A full queue closes the socket with 1013.
    pub fn send_text(&self, text: ByteString) -> Result<(), SinkError> {
        self.push(Outgoing::Text(text))
    }

    pub fn push(&self, frame: Outgoing) -> Result<(), SinkError> {
        if self.shared.close_requested().is_some() {
            return Err(SinkError::Closed);
        }
        {
            let mut q = self.shared.lock();
            if !q.receiver {
                return Err(SinkError::Closed);
            }
            if q.len() >= self.shared.capacity as usize {
                drop(q);
                self.shared.close(close_code::SLOW_CONSUMER);
                return Err(SinkError::Full);
            }
            // Most sockets hold one frame at a time: start with room for exactly one.
            q.frames
                .get_or_insert_with(|| Box::new(VecDeque::with_capacity(1)))
                .push_back(frame);
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// How many more frames fit in the queue right now.
    pub fn room(&self) -> usize {
        (self.shared.capacity as usize).saturating_sub(self.shared.lock().len())
    }

    /// Asks the transport to close the socket with `code`.
    pub fn close(&self, code: u16) {
        self.shared.close(code);
    }

    pub fn is_closed(&self) -> bool {
        self.shared.close_requested().is_some() || !self.shared.lock().receiver
    }
}

impl Clone for SocketSink {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        SocketSink {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for SocketSink {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.waker.wake();
        }
    }
}

impl SinkReceiver {
    /// Wakes `waker` when a frame is queued, a close is asked for or the last sender goes away. Register
    /// before looking at the queue, so nothing that happens in between is missed.
    pub fn register(&self, waker: &Waker) {
        self.shared.waker.register(waker);
    }

    /// The close code asked for, if any.
    pub fn close_requested(&self) -> Option<u16> {
        self.shared.close_requested()
    }

    /// Asks for a close from the transport's side (a protocol error, a frame over the limit), so that
    /// the session and the restaurant stop queueing frames at once. The first code wins.
    pub fn close(&self, code: u16) {
        self.shared.close(code);
    }

    /// True once every [`SocketSink`] is gone: nobody will queue anything again.
    pub fn senders_gone(&self) -> bool {
        self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// Appends clones of up to `max` frames from the front of the queue to `out` (cheap: text frames
    /// share their bytes). The frames stay queued until [`SinkReceiver::consume`].
    pub fn peek(&self, max: usize, out: &mut Vec<Outgoing>) -> usize {
        let q = self.shared.lock();
        let Some(frames) = &q.frames else {
            return 0;
        };
        let n = frames.len().min(max);
        out.extend(frames.iter().take(n).cloned());
        n
    }

    /// Removes `n` completely written frames from the front; the queue's storage is freed once empty.
    pub fn consume(&self, n: usize) {
        let mut q = self.shared.lock();
        if let Some(frames) = &mut q.frames {
            let n = n.min(frames.len());
            frames.drain(..n);
            if frames.is_empty() {
                q.frames = None;
            }
        }
    }

    /// Frames waiting in the queue.
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next frame; `None` once the queue is empty and every sender is gone.
    pub async fn recv(&self) -> Option<Outgoing> {
        poll_fn(|cx| {
            self.register(cx.waker());
            let mut q = self.shared.lock();
            if let Some(frames) = &mut q.frames {
                let frame = frames.pop_front();
                if frames.is_empty() {
                    q.frames = None;
                }
                if let Some(frame) = frame {
                    return Poll::Ready(Some(frame));
                }
            }
            drop(q);
            if self.senders_gone() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until a close is asked for and returns its code.
    pub async fn closed(&self) -> u16 {
        poll_fn(|cx| {
            self.register(cx.waker());
            match self.close_requested() {
                Some(code) => Poll::Ready(code),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for SinkReceiver {
    fn drop(&mut self) {
        let frames = {
            let mut q = self.shared.lock();
            q.receiver = false;
            q.frames.take()
        };
        drop(frames);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_closes_with_slow_consumer() {
        let (sink, rx) = SocketSink::channel(2);
        assert!(sink.send_text("a".into()).is_ok());
        assert!(sink.send_text("b".into()).is_ok());
        assert_eq!(sink.send_text("c".into()), Err(SinkError::Full));
        assert_eq!(rx.closed().await, close_code::SLOW_CONSUMER);
        assert_eq!(sink.send_text("d".into()), Err(SinkError::Closed));
    }

    #[tokio::test]
    async fn room_counts_the_free_places_in_the_queue() {
        let (sink, _rx) = SocketSink::channel(3);
        assert_eq!(sink.room(), 3);
        assert!(sink.send_text("a".into()).is_ok());
        assert_eq!(sink.room(), 2);
    }

    #[tokio::test]
    async fn the_first_close_code_wins() {
        let (sink, rx) = SocketSink::channel(2);
        sink.close(close_code::POLICY);
        sink.close(close_code::GOING_AWAY);
        assert_eq!(rx.closed().await, close_code::POLICY);
    }

    #[tokio::test]
    async fn frames_stay_queued_until_consumed_and_count_against_the_bound() {
        let (sink, rx) = SocketSink::channel(2);
        assert!(sink.send_text("a".into()).is_ok());
        assert!(sink.push(Outgoing::Ping).is_ok());
        let mut batch = Vec::new();
        assert_eq!(rx.peek(8, &mut batch), 2);
        assert!(matches!(&batch[0], Outgoing::Text(t) if &**t == "a"));
        // Peeked but not written: still counted.
        assert_eq!(sink.room(), 0);
        rx.consume(1);
        assert_eq!(sink.room(), 1);
        rx.consume(1);
        assert!(rx.is_empty());
        assert!(
            rx.shared.lock().frames.is_none(),
            "drained storage is freed"
        );
    }

    #[tokio::test]
    async fn recv_drains_then_ends_when_every_sender_is_gone() {
        let (sink, rx) = SocketSink::channel(4);
        let other = sink.clone();
        assert!(sink.send_text("a".into()).is_ok());
        drop(sink);
        assert!(!rx.senders_gone());
        drop(other);
        assert!(rx.senders_gone());
        assert!(matches!(rx.recv().await, Some(Outgoing::Text(_))));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_sink_whose_receiver_is_gone_is_closed() {
        let (sink, rx) = SocketSink::channel(4);
        drop(rx);
        assert!(sink.is_closed());
        assert_eq!(sink.send_text("a".into()), Err(SinkError::Closed));
    }

    #[tokio::test]
    async fn a_push_wakes_the_registered_transport() {
        let (sink, rx) = SocketSink::channel(4);
        let waiter = tokio::spawn(async move { rx.recv().await.is_some() });
        tokio::task::yield_now().await;
        assert!(sink.push(Outgoing::Ping).is_ok());
        assert!(waiter.await.expect("join"));
    }
}
