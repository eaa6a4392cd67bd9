//! WebSocket framing (RFC 6455 §5) for the server side: parsing the heads of masked client frames and
//! writing the heads of unmasked server frames. Pure functions, no I/O and no allocation.

/// Opcodes.
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The longest frame head: 2 bytes, a 64-bit length, and for client frames a 4-byte mask.
pub const MAX_SERVER_HEAD: usize = 10;

/// The head of one client frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    /// Bytes of the head, mask included.
    pub head_len: usize,
    pub payload_len: usize,
}

impl Head {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// Head and payload.
    pub fn frame_len(&self) -> usize {
        self.head_len + self.payload_len
    }
}

/// Why a client frame is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not a well-formed client frame (unmasked, reserved bits or opcodes, a fragmented or long control
    /// frame): close with 1002.
    Protocol(&'static str),
    /// A data frame longer than the limit: close with 1009.
    TooBig,
    /// Text that is not UTF-8 (a close frame's reason): close with 1007.
    NotUtf8,
}

/// Parses the head of the frame at the start of `buf`; `Ok(None)` when more bytes are needed.
/// `max_payload` bounds data frames (the caller bounds the reassembled message).
pub fn parse_head(buf: &[u8], max_payload: usize) -> Result<Option<Head>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(FrameError::Protocol("unknown opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let (payload_len, len_bytes) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 8)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let control = opcode & 0x8 != 0;
    if control && (!fin || payload_len > 125) {
        return Err(FrameError::Protocol(
            "control frames are short and unfragmented",
        ));
    }
    if payload_len > max_payload as u64 {
        return Err(FrameError::TooBig);
    }
    let mask_at = 2 + len_bytes;
    let Some(m) = buf.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        head_len: mask_at + 4,
        payload_len: payload_len as usize,
    }))
}

/// Unmasks (or masks: the operation is its own inverse) a payload in place.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Writes the head of a final, unmasked server frame into `out`; returns its length (2, 4 or 10).
pub fn server_head(opcode: u8, payload_len: usize, out: &mut [u8; MAX_SERVER_HEAD]) -> usize {
    out[0] = 0x80 | opcode;
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(n) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&n.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// The close code of a close frame's (unmasked) payload: `Ok(None)` when it carries none.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("a close payload has a 2-byte code")),
        [a, b, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::NotUtf8);
            }
            let code = u16::from_be_bytes([*a, *b]);
            // RFC 6455 §7.4: codes a peer may send.
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if valid {
                Ok(Some(code))
            } else {
                Err(FrameError::Protocol("invalid close code"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser sends it.
    pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
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
        let mut body = payload.to_vec();
        apply_mask(&mut body, mask);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn heads_of_every_length_form_parse_and_need_all_their_bytes() {
        for len in [0usize, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload = vec![7u8; len];
            let frame = client_frame(true, TEXT, &payload, [1, 2, 3, 4]);
            let head = parse_head(&frame, 1 << 20)
                .expect("valid")
                .expect("complete");
            assert_eq!(head.payload_len, len);
            assert_eq!(head.frame_len(), frame.len());
            assert_eq!(head.mask, [1, 2, 3, 4]);
            for cut in 0..head.head_len {
                assert_eq!(
                    parse_head(&frame[..cut], 1 << 20),
                    Ok(None),
                    "{len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn masking_round_trips_at_every_alignment() {
        for len in 0..13 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, [0xA1, 0x02, 0xF3, 0x44]);
            if len > 0 {
                assert_ne!(data, original);
            }
            apply_mask(&mut data, [0xA1, 0x02, 0xF3, 0x44]);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn malformed_client_frames_are_refused() {
        let unmasked = [0x81, 0x01, b'a'];
        assert!(matches!(
            parse_head(&unmasked, 100),
            Err(FrameError::Protocol(_))
        ));
        let rsv = [0xC1, 0x80, 0, 0, 0, 0];
        assert!(matches!(
            parse_head(&rsv, 100),
            Err(FrameError::Protocol(_))
        ));
        let opcode = [0x83, 0x80, 0, 0, 0, 0];
        assert!(matches!(
            parse_head(&opcode, 100),
            Err(FrameError::Protocol(_))
        ));
        let fragmented_ping = client_frame(false, PING, b"", [0; 4]);
        assert!(matches!(
            parse_head(&fragmented_ping, 100),
            Err(FrameError::Protocol(_))
        ));
        let long_ping = client_frame(true, PING, &[0; 126], [0; 4]);
        assert!(matches!(
            parse_head(&long_ping, 1000),
            Err(FrameError::Protocol(_))
        ));
    }

    #[test]
    fn a_data_frame_over_the_limit_is_refused_from_its_head_alone() {
        let frame = client_frame(true, TEXT, &[b'x'; 101], [9; 4]);
        assert_eq!(parse_head(&frame[..8], 100), Err(FrameError::TooBig));
        assert!(parse_head(&frame, 101).expect("valid").is_some());
    }

    #[test]
    fn server_heads_use_the_shortest_length_form() {
        let mut out = [0u8; MAX_SERVER_HEAD];
        assert_eq!(server_head(TEXT, 125, &mut out), 2);
        assert_eq!(out[..2], [0x81, 125]);
        assert_eq!(server_head(TEXT, 126, &mut out), 4);
        assert_eq!(out[..4], [0x81, 126, 0, 126]);
        assert_eq!(server_head(BINARY, 65536, &mut out), 10);
        assert_eq!(out[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_payloads_carry_an_optional_valid_code() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_code(&[0x03, 0xE8, b'o', b'k']), Ok(Some(1000)));
        assert!(close_code(&[0x03]).is_err());
        assert!(close_code(&[0x03, 0xED]).is_err(), "1005 is never sent");
        assert_eq!(close_code(&[0x03, 0xE8, 0xFF]), Err(FrameError::NotUtf8));
    }
}
