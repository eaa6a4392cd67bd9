//! The lean socket's frame decoder: arbitrary client bytes, cut into arbitrary reads. Checks that the
//! same bytes give the same messages and closes however the kernel cuts them, that nothing held grows
//! past one frame, and that no message is over the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan2order::lean::decoder::{Close, Decoder};
use scan2order_actors::session::Inbound;

/// What a decoder made of the bytes, in order.
#[derive(Debug, PartialEq)]
enum Event {
    Message(String),
    Close(Close),
}

fn run(max: usize, early: &[u8], reads: &[&[u8]]) -> Vec<Event> {
    let mut d = Decoder::new(max, early.to_vec());
    let mut events = Vec::new();
    let record = |d: &mut Decoder, m: Option<Inbound>, events: &mut Vec<Event>| {
        if let Some(m) = m {
            if let Inbound::Text(t) = &m {
                assert!(t.len() <= max, "a {}-byte message over the {max} limit", t.len());
            }
            events.push(Event::Message(format!("{m:?}")));
        }
        events.extend(d.take_close().map(Event::Close));
    };
    for read in std::iter::once(&[][..]).chain(reads.iter().copied()) {
        if !read.is_empty() {
            let m = d.feed(&mut read.to_vec());
            record(&mut d, m, &mut events);
        }
        while d.has_ready() {
            let m = d.decode_held();
            record(&mut d, m, &mut events);
        }
        // What is held between reads: at most one incomplete frame and one message being assembled.
        assert!(
            d.held_bytes() <= 2 * max + 14,
            "{} bytes held with a {max}-byte limit",
            d.held_bytes()
        );
    }
    events.push(Event::Message(format!("{:?}", d.reading())));
    events
}

fuzz_target!(|data: &[u8]| {
    let [limit, cut, bytes @ ..] = data else {
        return;
    };
    let max = 16 + usize::from(*limit) * 16;
    let whole = run(max, &[], &[bytes]);
    // Cut points from a small generator seeded by the input: reads of 1 to 64 bytes.
    let mut state = u32::from(*cut) | 1;
    let mut reads = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (1 + (state >> 16) as usize % 64).min(rest.len());
        let (read, more) = rest.split_at(n);
        reads.push(read);
        rest = more;
    }
    assert_eq!(run(max, &[], &reads), whole, "cut into {} reads", reads.len());
    // The bytes behind the handshake arrive with it.
    if let Some((early, reads)) = reads.split_first() {
        assert_eq!(run(max, early, reads), whole, "with early bytes");
    }
});
