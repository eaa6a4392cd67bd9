//! gzip for the bodies worth it (guest menus, pages and scripts): whether a client takes it, and the
//! compression itself. Callers compress a body once and keep it (`crate::byte_cache`), never per request.

use actix_web::http::header;
use actix_web::HttpRequest;

/// Whether the client takes gzip (`Accept-Encoding`, a zero q-value refusing it).
pub fn accepted(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

pub fn compress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}
