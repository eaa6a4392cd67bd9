//! RFC 6455's failure rules, case by case, as the Autobahn test suite groups them (its categories: 2
//! pings and pongs, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close handling, 9 limits):
//! a raw client sends each frame on a live table socket and checks the exact answer — a pong with the
//! same payload, or a close frame with the code the RFC asks for, and the socket ending.

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::sockets::{
    expect_forbidden, forbidden_request, frame, RawSocket, CLOSE, CONTINUATION, PING, PONG, TEXT,
};

/// A table socket past its hello and snapshot.
async fn table_socket(app: &TestApp, token: &str) -> RawSocket {
    let (mut socket, head) = RawSocket::open(app, &format!("/ws/table/{token}"), &[]).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    socket.hello_snapshot().await;
    socket
}

/// Sends `bytes` on a fresh socket and expects a close frame with `code`, then the end of the
/// connection.
async fn expect_close(app: &TestApp, token: &str, what: &str, bytes: &[u8], code: u16) {
    let mut socket = table_socket(app, token).await;
    socket.send(bytes).await;
    let close = socket.next_non_ping().await;
    assert_eq!(close.opcode, CLOSE, "{what}: {close:?}");
    assert_eq!(close.close_code(), Some(code), "{what}");
    // The client completes the closing handshake; the server then ends the connection.
    socket.send(&frame(true, CLOSE, &code.to_be_bytes())).await;
    assert!(
        socket.eof_within(crate::helpers::PATIENCE).await,
        "{what}: the connection ends after the close"
    );
}

/// A frame with the given first byte (FIN, reserved bits, opcode) and a masked payload.
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame(true, TEXT, payload);
    out[0] = first;
    out
}

#[actix_web::test]
async fn pings_are_answered_with_pongs_carrying_the_same_payload_and_pongs_need_no_answer() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let token = &r.tables[0].token;
    let mut socket = table_socket(&app, token).await;
    for payload in [&b""[..], b"ping", &[0xFF; 125], &[0x00, 0x80, 0xFE]] {
        socket.send(&frame(true, PING, payload)).await;
        let pong = socket.next_non_ping().await;
        assert_eq!(pong.opcode, PONG, "{pong:?}");
        assert!(pong.fin);
        assert_eq!(pong.payload, payload, "the pong carries the ping's payload");
    }
    // An unsolicited pong is allowed and changes nothing.
    socket.send(&frame(true, PONG, b"unsolicited")).await;
    socket
        .send(&frame(true, TEXT, &forbidden_request("after-pong")))
        .await;
    expect_forbidden(&mut socket, "after-pong").await;
    // A ping of 126 bytes is not a control frame any more.
    expect_close(
        &app,
        token,
        "ping of 126 bytes",
        &frame(true, PING, &[b'x'; 126]),
        1002,
    )
    .await;
}

#[actix_web::test]
async fn reserved_bits_reserved_opcodes_and_unmasked_frames_fail_the_connection_with_1002() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let token = &r.tables[0].token;
    let body = forbidden_request("x");
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for rsv in [0x40u8, 0x20, 0x10, 0x70] {
        cases.push((
            format!("text with RSV {rsv:#x}"),
            raw_frame(0x80 | rsv | TEXT, &body),
        ));
        cases.push((
            format!("ping with RSV {rsv:#x}"),
            raw_frame(0x80 | rsv | PING, b""),
        ));
    }
    for opcode in [0x3u8, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        cases.push((
            format!("reserved opcode {opcode:#x}"),
            raw_frame(0x80 | opcode, b""),
        ));
    }
    let mut unmasked = vec![0x81, body.len() as u8];
    unmasked.extend_from_slice(&body);
    cases.push(("unmasked text".into(), unmasked));
    cases.push(("unmasked ping".into(), vec![0x89, 0x00]));
    for (what, bytes) in cases {
        expect_close(&app, token, &what, &bytes, 1002).await;
    }
}

#[actix_web::test]
async fn fragmentation_rules_hold_and_fragmented_messages_are_reassembled() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let token = &r.tables[0].token;
    // A message in three fragments with a ping between them: the pong comes first, then the answer.
    let mut socket = table_socket(&app, token).await;
    let body = forbidden_request("in-pieces");
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(10);
    socket.send(&frame(false, TEXT, a)).await;
    socket.send(&frame(false, CONTINUATION, b)).await;
    socket.send(&frame(true, PING, b"between")).await;
    socket.send(&frame(true, CONTINUATION, c)).await;
    let pong = socket.next().await;
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"between"[..])
    );
    expect_forbidden(&mut socket, "in-pieces").await;
    // Empty fragments are fragments.
    let body = forbidden_request("with-empty-parts");
    socket.send(&frame(false, TEXT, b"")).await;
    socket.send(&frame(false, CONTINUATION, &body)).await;
    socket.send(&frame(true, CONTINUATION, b"")).await;
    expect_forbidden(&mut socket, "with-empty-parts").await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a continuation with no message",
            frame(true, CONTINUATION, b"x"),
        ),
        (
            "an unfinished continuation with no message",
            frame(false, CONTINUATION, b"x"),
        ),
        ("a fragmented ping", frame(false, PING, b"x")),
        (
            "a fragmented close",
            frame(false, CLOSE, &1000u16.to_be_bytes()),
        ),
        (
            "a new text frame inside a fragmented message",
            [frame(false, TEXT, b"{"), frame(true, TEXT, b"{}")].concat(),
        ),
        (
            "an unfinished text frame inside a fragmented message",
            [frame(false, TEXT, b"{"), frame(false, TEXT, b"{")].concat(),
        ),
    ];
    for (what, bytes) in cases {
        expect_close(&app, token, what, &bytes, 1002).await;
    }
}

#[actix_web::test]
async fn text_that_is_not_utf8_closes_with_1007_whole_or_across_fragments() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let token = &r.tables[0].token;
    // A valid character split between two fragments is fine.
    let mut socket = table_socket(&app, token).await;
    let body = forbidden_request("café");
    let at = body.windows(2).position(|w| w == [0xC3, 0xA9]).expect("é") + 1;
    socket.send(&frame(false, TEXT, &body[..at])).await;
    socket.send(&frame(true, CONTINUATION, &body[at..])).await;
    expect_forbidden(&mut socket, "café").await;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a broken sequence",
            frame(true, TEXT, &[b'"', 0xC3, 0x28, b'"']),
        ),
        ("a lone continuation byte", frame(true, TEXT, &[0x80])),
        ("an overlong encoding", frame(true, TEXT, &[0xC0, 0xAF])),
        ("a surrogate", frame(true, TEXT, &[0xED, 0xA0, 0x80])),
        (
            "past U+10FFFF",
            frame(true, TEXT, &[0xF4, 0x90, 0x80, 0x80]),
        ),
        (
            "a truncated character at the end",
            frame(true, TEXT, b"ok\xE2\x82"),
        ),
        (
            "a broken sequence across fragments",
            [
                frame(false, TEXT, b"{\"a\":\"\xCE"),
                frame(false, CONTINUATION, b"\xBA\xE1\xBD"),
                frame(true, CONTINUATION, b"\x28\"}"),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        expect_close(&app, token, what, &bytes, 1007).await;
    }
}

#[actix_web::test]
async fn close_frames_are_echoed_when_valid_and_fail_the_connection_when_not() {
    let app = spawn_app().await;
    let r = app.restaurant("roma", 1, 1).await;
    let token = &r.tables[0].token;
    // Codes a peer may send (RFC 6455 §7.4) are echoed; so is a close with no code.
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999,
    ] {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice("bye, ünïcode".as_bytes());
        let mut socket = table_socket(&app, token).await;
        socket.send(&frame(true, CLOSE, &payload)).await;
        let close = socket.next_non_ping().await;
        assert_eq!(close.close_code(), Some(code), "close {code} is echoed");
        assert!(socket.eof_within(crate::helpers::PATIENCE).await);
    }
    let mut socket = table_socket(&app, token).await;
    socket.send(&frame(true, CLOSE, b"")).await;
    let close = socket.next_non_ping().await;
    assert_eq!(close.opcode, CLOSE);
    assert!(
        close.payload.is_empty() || close.close_code() == Some(1000),
        "{close:?}"
    );
    assert!(socket.eof_within(crate::helpers::PATIENCE).await);

    // Codes no peer may send, and a one-byte payload: protocol errors.
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        expect_close(
            &app,
            token,
            &format!("close code {code}"),
            &frame(true, CLOSE, &code.to_be_bytes()),
            1002,
        )
        .await;
    }
    expect_close(
        &app,
        token,
        "a one-byte close",
        &frame(true, CLOSE, &[0x03]),
        1002,
    )
    .await;
    // A reason that is not UTF-8 is invalid data in the frame.
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0xCE, 0xBA, 0xE1, 0x28]);
    expect_close(
        &app,
        token,
        "a close reason that is not UTF-8",
        &frame(true, CLOSE, &payload),
        1007,
    )
    .await;
}

#[actix_web::test]
async fn declared_lengths_past_the_limit_close_with_1009_before_the_payload_arrives() {
    let app = spawn_app_with(|s| s.sockets.max_frame_bytes = 4096).await;
    let r = app.restaurant("roma", 1, 1).await;
    let token = &r.tables[0].token;
    // Heads alone: 64-bit lengths of 2^63 - 1 and 4 GiB, a 16-bit length past the limit. None of
    // their payloads is ever sent, so an answer proves the head was judged on its own.
    let heads: [(&str, Vec<u8>); 3] = [
        (
            "a 2^63 - 1 byte text frame",
            [
                &[0x81, 0x80 | 127][..],
                &(i64::MAX as u64).to_be_bytes(),
                &[1, 2, 3, 4],
            ]
            .concat(),
        ),
        (
            "a 4 GiB binary frame",
            [
                &[0x82, 0x80 | 127][..],
                &(1u64 << 32).to_be_bytes(),
                &[1, 2, 3, 4],
            ]
            .concat(),
        ),
        (
            "a 65535 byte text frame",
            [
                &[0x81, 0x80 | 126][..],
                &u16::MAX.to_be_bytes(),
                &[1, 2, 3, 4],
            ]
            .concat(),
        ),
    ];
    for (what, head) in heads {
        expect_close(&app, token, what, &head, 1009).await;
    }
    // A message that grows past the limit one fragment at a time.
    let parts = [
        frame(false, TEXT, &[b' '; 3000]),
        frame(true, CONTINUATION, &[b' '; 3000]),
    ]
    .concat();
    expect_close(&app, token, "fragments past the limit", &parts, 1009).await;
}
