//! Opaque random tokens: staff and guest session tokens, table tokens (the secret in a table's QR
//! code). Tokens are URL-safe base64 of bytes from the OS-seeded CSPRNG; of a session token only its
//! SHA-256 ([`token_hash`]) is ever stored.

use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Bytes of randomness in a session token (256 bits).
pub const SESSION_TOKEN_BYTES: usize = 32;
/// Bytes of randomness in a table token (192 bits; PROTOCOL asks for at least 128).
pub const TABLE_TOKEN_BYTES: usize = 24;

/// `n` random bytes from the OS-seeded CSPRNG, URL-safe base64 without padding.
pub fn random_url_safe(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// A new staff or guest session token.
pub fn new_session_token() -> String {
    random_url_safe(SESSION_TOKEN_BYTES)
}

/// A new table token.
pub fn new_table_token() -> String {
    random_url_safe(TABLE_TOKEN_BYTES)
}

/// What is stored of a session token: its SHA-256.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The key a kitchen's request id is remembered by with its status change: the id itself up to
/// [`MAX_IDEMPOTENCY_KEY_CHARS`](crate::domain::MAX_IDEMPOTENCY_KEY_CHARS), a SHA-256 of a longer one
/// (a socket message may carry a longer id; the history row stays small).
pub fn request_key(request_id: &str) -> String {
    if request_id.len() <= crate::domain::MAX_IDEMPOTENCY_KEY_CHARS {
        return request_id.to_string();
    }
    let digest = Sha256::digest(request_id.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_safe(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn table_tokens_carry_192_random_bits_url_safe() {
        let a = new_table_token();
        assert_eq!(a.len(), 32, "24 bytes are 32 base64 characters");
        assert!(url_safe(&a), "{a}");
        assert_ne!(a, new_table_token());
    }

    #[test]
    fn session_tokens_carry_256_random_bits_url_safe() {
        let a = new_session_token();
        assert_eq!(a.len(), 43, "32 bytes are 43 unpadded base64 characters");
        assert!(url_safe(&a), "{a}");
        assert_ne!(a, new_session_token());
    }

    #[test]
    fn the_stored_hash_is_sha256_of_the_token() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            token_hash("abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "the first bytes of the published digest"
        );
        assert_eq!(token_hash("abc").len(), 32);
    }

    #[test]
    fn a_long_request_id_is_remembered_by_its_digest() {
        assert_eq!(request_key("tap-7"), "tap-7");
        let long = "r".repeat(500);
        let key = request_key(&long);
        assert_eq!(key.len(), "sha256:".len() + 64);
        assert_eq!(key, request_key(&long));
        assert_ne!(key, request_key(&"r".repeat(501)));
    }
}
