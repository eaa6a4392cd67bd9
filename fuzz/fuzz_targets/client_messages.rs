//! Socket messages from clients (`ClientMsg::parse`): arbitrary text, as the frame decoder hands it
//! over (always UTF-8). Checks that every refusal is a plain sentence naming no Rust type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan2order_schema::wire::ClientMsg;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(why) = ClientMsg::parse(text) {
        scan2order_fuzz::assert_plain_refusal(&why, text);
    }
});
