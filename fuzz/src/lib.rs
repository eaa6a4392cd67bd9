//! What every fuzz target checks of a refusal: a sentence a client may be shown.

use scan2order_schema::domain::is_clean_text;
use scan2order_schema::wire::names_a_rust_type;

/// Panics (a finding) unless `message` is plain text naming no Rust type or path. A phrase the
/// client wrote itself in `input` may come back quoted (`unknown field `…``), so only phrases the
/// input does not hold are findings; the message must be clean text either way.
pub fn assert_plain_refusal(message: &str, input: &str) {
    assert!(!message.is_empty(), "an empty refusal");
    assert!(is_clean_text(message), "control characters in {message:?}");
    let mut ours = message.to_string();
    if ours.contains("::") {
        assert!(input.contains("::"), "a Rust path in {message:?}");
        ours = ours.replace("::", "#");
    }
    while let Some(phrase) = names_a_rust_type(&ours) {
        assert!(input.contains(phrase), "{message:?} names {phrase}");
        ours = ours.replace(phrase, "#");
    }
}

/// The client's JSON as a refusal may quote it: the raw text and every string and key, unescaped.
pub fn json_text(raw: &[u8], value: &serde_json::Value) -> String {
    fn strings(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::String(s) => {
                out.push(' ');
                out.push_str(s);
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    out.push(' ');
                    out.push_str(k);
                    strings(v, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::from_utf8_lossy(raw).into_owned();
    strings(value, &mut out);
    out
}
