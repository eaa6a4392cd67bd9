//! The seam between a session and its socket: a bounded queue of outbound frames and an out-of-band
//! close signal. Session logic and the restaurant actor only ever see a [`SocketSink`]; the transport under
//! it (today actix-ws, in `scan2order::ws`) drains the queue. The transport can change without touching them.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use bytestring::ByteString;
use tokio::sync::{mpsc, Notify};

/// WebSocket close codes of PROTOCOL.md.
pub mod close_code {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Policy: bad token, wrong restaurant, rotated table token, flooding.
    pub const POLICY: u16 = 1008;
    /// An inbound message over the frame limit.
    pub const TOO_BIG: u16 = 1009;
    /// The outbound queue overflowed: reconnect and resume.
    pub const SLOW_CONSUMER: u16 = 1013;
}

/// One outbound frame.
#[derive(Debug)]
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

/// Shared between the sink and the transport: asks the transport to close with a code, even when the
/// outbound queue is full.
#[derive(Debug, Default)]
pub struct CloseSignal {
    code: AtomicU16,
    requested: AtomicBool,
    notify: Notify,
}

impl CloseSignal {
    /// Requests a close; the first code wins.
    pub fn close(&self, code: u16) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            self.code.store(code, Ordering::Release);
            self.notify.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Waits until a close is requested and returns its code.
    pub async fn wait(&self) -> u16 {
        loop {
            if self.is_closed() {
                return self.code.load(Ordering::Acquire);
            }
            self.notify.notified().await;
        }
    }
}

/// The sending half a session and the restaurant actor use. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SocketSink {
    tx: mpsc::Sender<Outgoing>,
    signal: Arc<CloseSignal>,
}

/// The transport's half: the queue to drain and the close signal to watch.
pub struct SinkReceiver {
    pub frames: mpsc::Receiver<Outgoing>,
    pub signal: Arc<CloseSignal>,
}

impl SocketSink {
    /// A sink holding at most `capacity` frames not yet written to the socket.
    pub fn channel(capacity: usize) -> (SocketSink, SinkReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let signal = Arc::new(CloseSignal::default());
        (
            SocketSink {
                tx,
                signal: signal.clone(),
            },
            SinkReceiver { frames: rx, signal },
        )
    }

    /// Queues a text frame without waiting. A full queue closes the socket with 1013.
    pub fn send_text(&self, text: ByteString) -> Result<(), SinkError> {
        self.push(Outgoing::Text(text))
    }

    pub fn push(&self, frame: Outgoing) -> Result<(), SinkError> {
        if self.signal.is_closed() {
            return Err(SinkError::Closed);
        }
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.signal.close(close_code::SLOW_CONSUMER);
                Err(SinkError::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SinkError::Closed),
        }
    }

    /// How many more frames fit in the queue right now.
    pub fn room(&self) -> usize {
        self.tx.capacity()
    }

    /// Asks the transport to close the socket with `code`.
    pub fn close(&self, code: u16) {
        self.signal.close(code);
    }

    pub fn is_closed(&self) -> bool {
        self.signal.is_closed() || self.tx.is_closed()
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
        assert_eq!(rx.signal.wait().await, close_code::SLOW_CONSUMER);
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
        assert_eq!(rx.signal.wait().await, close_code::POLICY);
    }
}
