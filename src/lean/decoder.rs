//! The read side of a lean socket, free of I/O: client bytes in (as the kernel hands them over, cut
//! anywhere), [`Inbound`] messages out, and what the connection must do about a close. It unmasks
//! frames, reassembles fragmented messages (a ping may come between fragments), checks text is UTF-8
//! and applies RFC 6455's failure rules. [`super::conn`] owns one per socket and does the I/O; the fuzz
//! target `socket_frames` drives this same code with arbitrary bytes.
//!
//! An idle socket's decoder is a few bytes: only a frame that straddles two reads, or a fragmented
//! message, is held, in a box that exists while it holds something.

use scan2order_actors::session::Inbound;
use scan2order_actors::sink::close_code;

use super::frame::{self, FrameError, Head};

/// What the read side does with client frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Hand them to the session.
    Open,
    /// A close is under way: skip everything until the client's close frame.
    Draining,
    /// The client sent its close frame, went away, or sent a head that cannot be parsed: read nothing
    /// more.
    Stopped,
}

/// What the client's bytes ask of the connection, beyond the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Close the socket with this code (a protocol error 1002, bad UTF-8 1007, too big 1009).
    Refuse(u16),
    /// The client sent its close frame, with this code: answer it with the same one.
    Echo(Option<u16>),
}

/// Read-side bytes that exist only while they hold something.
#[derive(Default)]
struct Held {
    /// Unparsed bytes: an incomplete frame, or frames behind a message just handed over.
    bytes: Vec<u8>,
    /// `bytes` may hold complete frames.
    ready: bool,
    /// The fragmented message being reassembled, and its opcode.
    message: Vec<u8>,
    message_opcode: Option<u8>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.message_opcode.is_none()
    }
}

/// One socket's frame decoder.
pub struct Decoder {
    /// The largest message (and data frame) accepted; larger is 1009.
    max_message: u32,
    /// Boxed: every idle socket carries this field, few ever use it.
    held: Option<Box<Held>>,
    reading: Reading,
    /// What the last call asked of the connection, until it is taken.
    close: Option<Close>,
}

impl Decoder {
    /// `early`: bytes the client sent right behind its handshake.
    pub fn new(max_message: usize, early: Vec<u8>) -> Decoder {
        let held = (!early.is_empty()).then(|| {
            Box::new(Held {
                bytes: early,
                ready: true,
                ..Held::default()
            })
        });
        Decoder {
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            held,
            reading: Reading::Open,
            close: None,
        }
    }

    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// Our close began: skip the client's frames until its close frame.
    pub fn drain(&mut self) {
        if self.reading == Reading::Open {
            self.reading = Reading::Draining;
        }
    }

    /// The client went away: nothing more will be read.
    pub fn stop(&mut self) {
        self.reading = Reading::Stopped;
    }

    /// Held-back bytes may hold complete frames: call [`Decoder::decode_held`] before reading more.
    pub fn has_ready(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.ready)
    }

    /// What the client's frames asked of the connection since the last call.
    pub fn take_close(&mut self) -> Option<Close> {
        self.close.take()
    }

    /// Bytes held for the next call (a frame cut by the read, or reassembly): bounded by the largest
    /// frame plus one read.
    pub fn held_bytes(&self) -> usize {
        self.held
            .as_ref()
            .map_or(0, |h| h.bytes.len() + h.message.len())
    }

    /// Decodes freshly read bytes, behind whatever was left over; at most one message.
    pub fn feed(&mut self, data: &mut [u8]) -> Option<Inbound> {
        if let Some(h) = self.held.as_mut().filter(|h| !h.bytes.is_empty()) {
            h.bytes.extend_from_slice(data);
            return self.decode_held();
        }
        let (used, message) = self.decode(data);
        if used < data.len() && self.reading != Reading::Stopped {
            let h = self.held.get_or_insert_with(Box::default);
            h.bytes.extend_from_slice(&data[used..]);
            h.ready = message.is_some();
        }
        message
    }

    /// Decodes the held-back bytes; keeps what is left, frees the rest.
    pub fn decode_held(&mut self) -> Option<Inbound> {
        let h = self.held.as_mut()?;
        h.ready = false;
        let mut bytes = std::mem::take(&mut h.bytes);
        let (used, message) = self.decode(&mut bytes);
        bytes.drain(..used);
        if let Some(h) = &mut self.held {
            if !bytes.is_empty() && self.reading != Reading::Stopped {
                if bytes.capacity() > 2 * bytes.len() + 64 {
                    bytes.shrink_to_fit();
                }
                h.bytes = bytes;
                h.ready = message.is_some();
            }
            if h.is_empty() {
                self.held = None;
            }
        }
        message
    }

    /// Handles the complete frames at the start of `buf` up to the first complete message; returns the
    /// bytes consumed and that message.
    fn decode(&mut self, buf: &mut [u8]) -> (usize, Option<Inbound>) {
        let mut pos = 0;
        while self.reading != Reading::Stopped {
            let head = match frame::parse_head(&buf[pos..], self.max_message as usize) {
                Ok(Some(head)) => head,
                Ok(None) => break,
                Err(_) if self.reading == Reading::Draining => {
                    // Our close is decided already (and its code with it): a head that cannot be
                    // read only ends the reading; it is no second failure to report.
                    self.reading = Reading::Stopped;
                    return (pos, None);
                }
                Err(e) => {
                    let refused = self.refuse_frame(e);
                    // A head that cannot be read leaves no way to find the next frame, so the
                    // client's close could never be recognised: fail the connection (RFC 6455
                    // §7.1.7) once our close frame is out instead of waiting for it.
                    self.reading = Reading::Stopped;
                    return (pos, refused);
                }
            };
            if buf.len() - pos < head.frame_len() {
                break;
            }
            let payload = &mut buf[pos + head.head_len..pos + head.frame_len()];
            frame::apply_mask(payload, head.mask);
            pos += head.frame_len();
            if let Some(m) = self.on_frame(head, payload) {
                return (pos, Some(m));
            }
        }
        (pos, None)
    }

    fn on_frame(&mut self, head: Head, payload: &[u8]) -> Option<Inbound> {
        if self.reading == Reading::Draining {
            if head.opcode == frame::CLOSE {
                self.reading = Reading::Stopped;
            }
            return None;
        }
        let assembling = self.held.as_ref().and_then(|h| h.message_opcode).is_some();
        match head.opcode {
            frame::TEXT | frame::BINARY if assembling => {
                self.refuse_frame(FrameError::Protocol("a message interrupted another"))
            }
            frame::TEXT | frame::BINARY if head.fin => self.message(head.opcode, payload.to_vec()),
            frame::TEXT | frame::BINARY => {
                let h = self.held.get_or_insert_with(Box::default);
                h.message = payload.to_vec();
                h.message_opcode = Some(head.opcode);
                None
            }
            frame::CONTINUATION => {
                let max = self.max_message as usize;
                let Some(h) = self.held.as_mut().filter(|h| h.message_opcode.is_some()) else {
                    return self.refuse_frame(FrameError::Protocol("a continuation of nothing"));
                };
                if h.message.len() + payload.len() > max {
                    return self.refuse_frame(FrameError::TooBig);
                }
                h.message.extend_from_slice(payload);
                if !head.fin {
                    return None;
                }
                let message = std::mem::take(&mut h.message);
                let opcode = h.message_opcode.take().unwrap_or(frame::TEXT);
                self.message(opcode, message)
            }
            frame::CLOSE => match frame::close_code(payload) {
                Ok(code) => {
                    self.reading = Reading::Stopped;
                    // Echo the client's code, as RFC 6455 §5.5.1 suggests.
                    self.close = Some(Close::Echo(code));
                    None
                }
                Err(e) => self.refuse_frame(e),
            },
            frame::PING => Some(Inbound::Ping(payload.to_vec())),
            _ => Some(Inbound::Pong),
        }
    }

    fn message(&mut self, opcode: u8, payload: Vec<u8>) -> Option<Inbound> {
        if opcode == frame::BINARY {
            return Some(Inbound::Binary);
        }
        match String::from_utf8(payload) {
            Ok(text) => Some(Inbound::Text(text)),
            Err(_) => {
                self.reading = Reading::Draining;
                self.close = Some(Close::Refuse(close_code::INVALID_PAYLOAD));
                None
            }
        }
    }

    fn refuse_frame(&mut self, e: FrameError) -> Option<Inbound> {
        self.reading = Reading::Draining;
        if let Some(h) = &mut self.held {
            h.message = Vec::new();
            h.message_opcode = None;
        }
        match e {
            FrameError::TooBig => {
                self.close = Some(Close::Refuse(close_code::TOO_BIG));
                // The session stops on it, as over actix-ws.
                Some(Inbound::TooBig)
            }
            FrameError::NotUtf8 => {
                self.close = Some(Close::Refuse(close_code::INVALID_PAYLOAD));
                None
            }
            FrameError::Protocol(why) => {
                tracing::debug!(why, "socket closed for a protocol error");
                self.close = Some(Close::Refuse(close_code::PROTOCOL_ERROR));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        frame::apply_mask(&mut out[start..], mask);
        out
    }

    /// Everything the decoder makes of `bytes` fed in pieces of `piece` bytes.
    fn decode_in_pieces(bytes: &[u8], piece: usize) -> (Vec<String>, Vec<Close>) {
        let mut d = Decoder::new(4096, Vec::new());
        let (mut out, mut closes) = (Vec::new(), Vec::new());
        for chunk in bytes.chunks(piece) {
            let mut chunk = chunk.to_vec();
            let mut m = d.feed(&mut chunk);
            loop {
                if let Some(m) = m.take() {
                    out.push(format!("{m:?}"));
                }
                closes.extend(d.take_close());
                if !d.has_ready() {
                    break;
                }
                m = d.decode_held();
            }
        }
        (out, closes)
    }

    /// What the decoder makes of `bytes` whole, asserted to be the same in pieces of every size.
    fn same_in_any_pieces(bytes: &[u8]) -> (Vec<String>, Vec<Close>) {
        let whole = decode_in_pieces(bytes, bytes.len());
        for piece in 1..bytes.len() {
            assert_eq!(
                decode_in_pieces(bytes, piece),
                whole,
                "in pieces of {piece}"
            );
        }
        whole
    }

    #[test]
    fn a_fragmented_message_with_a_ping_between_is_the_same_in_any_pieces() {
        let mut bytes = client_frame(false, frame::TEXT, "caf".as_bytes());
        bytes.extend(client_frame(true, frame::PING, b"hi"));
        bytes.extend(client_frame(true, frame::CONTINUATION, "é!".as_bytes()));
        bytes.extend(client_frame(true, frame::CLOSE, &1000u16.to_be_bytes()));
        let whole = same_in_any_pieces(&bytes);
        assert_eq!(
            whole.0,
            vec![
                "Ping([104, 105])".to_string(),
                "Text(\"café!\")".to_string()
            ]
        );
        assert_eq!(whole.1, vec![Close::Echo(Some(1000))]);
    }

    #[test]
    fn nothing_is_read_after_a_head_that_cannot_be_parsed() {
        let mut bytes = vec![0xF1, 0x80, 0, 0, 0, 0];
        bytes.extend(client_frame(true, frame::TEXT, b"after"));
        let (out, closes) = decode_in_pieces(&bytes, bytes.len());
        assert!(out.is_empty());
        assert_eq!(closes, vec![Close::Refuse(close_code::PROTOCOL_ERROR)]);
    }

    /// Found by the `socket_frames` fuzz target: bad UTF-8, then a head that cannot be parsed. The
    /// first failure is the one reported (1007), once, however the bytes are cut; the head behind it
    /// only ends the reading.
    #[test]
    fn the_first_failure_is_the_one_reported_in_any_pieces() {
        let mut bytes = client_frame(true, frame::TEXT, &[0xC3, 0x28, b'x']);
        bytes.extend([0x2B, 0x80, 0, 0, 0, 0]);
        assert_eq!(
            same_in_any_pieces(&bytes),
            (vec![], vec![Close::Refuse(close_code::INVALID_PAYLOAD)])
        );
    }

    #[test]
    fn an_idle_decoder_holds_nothing() {
        let mut d = Decoder::new(4096, Vec::new());
        let mut half = client_frame(true, frame::TEXT, b"hello");
        let mut rest = half.split_off(4);
        assert!(d.feed(&mut half).is_none());
        assert_eq!(d.held_bytes(), 4);
        assert!(matches!(d.feed(&mut rest), Some(Inbound::Text(t)) if t == "hello"));
        assert_eq!(d.held_bytes(), 0);
        assert!(d.held.is_none());
    }
}
