//! The HTTP peek that sends a connection to the socket path, and the upgrade handshake's parser:
//! arbitrary request bytes. Checks that the peek's verdict never changes as more bytes arrive, that a
//! head complete in a prefix is the same head in the whole, and that every refusal is plain text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan2order::lean::handshake::{self, Upgrade};
use scan2order::lean::starts_a_socket;

fn parse(bytes: &[u8]) -> Result<Option<Upgrade>, String> {
    handshake::parse(bytes, |forwarded| {
        // The rate limit reads every forwarded address.
        let _ = forwarded.count();
        Ok(())
    })
    .map_err(|(e, _)| {
        scan2order_fuzz::assert_plain_refusal(&e.message, "");
        e.message
    })
}

fuzz_target!(|data: &[u8]| {
    let [cut, bytes @ ..] = data else {
        return;
    };
    if let Some(verdict) = starts_a_socket(bytes) {
        for n in 0..bytes.len() {
            assert!(
                starts_a_socket(&bytes[..n]).is_none_or(|v| v == verdict),
                "the peek changed its mind at {n} bytes"
            );
        }
    }
    let whole = parse(bytes);
    let cut = usize::from(*cut).min(bytes.len());
    if let (Ok(Some(early)), whole) = (parse(&bytes[..cut]), &whole) {
        let Ok(Some(whole)) = whole else {
            panic!("a head complete in {cut} bytes is not in {}", bytes.len());
        };
        assert_eq!(early.path(), whole.path());
        assert!(whole.early().starts_with(early.early()));
    }
});
