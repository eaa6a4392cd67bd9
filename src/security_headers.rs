//! The security headers on every answer: pages load only their own scripts and styles, never run inline
//! script, cannot be framed, and never leak a table token through the `Referer` header. One list, used
//! by the app's `DefaultHeaders`, by refusals that become responses outside the app, and by the lean
//! transport's handshake refusals.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::HttpResponse;

/// The Content-Security-Policy of every answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Every security header, by lower-case name.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// The middleware that adds them to every answer the app makes.
pub fn default_headers() -> DefaultHeaders {
    SECURITY_HEADERS
        .iter()
        .fold(DefaultHeaders::new(), |d, &(name, value)| {
            d.add((name, value))
        })
}

/// Adds them to a refusal that skipped [`default_headers`]: a middleware's error (rate limit,
/// authentication, CSRF) only becomes a response outside the app.
pub fn with_security_headers(mut res: HttpResponse) -> HttpResponse {
    let h = res.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        let name = HeaderName::from_static(name);
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    res
}
