//! `GET /media/{hash}.jpg` and `/media/{hash}-thumb.jpg`: menu photos, from immutable URLs. A name is
//! the SHA-256 of the picture, so an answer never changes: it is cached by browsers for a year
//! (`immutable`) and kept here in memory (up to [`CACHE_BYTES`]) so busy menus do not read Postgres.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use scan2order_schema::media::{is_image_hash, MenuImage};

use crate::byte_cache::ByteCache;
use crate::context::AppContext;
use crate::error::{ApiError, ApiResult};

/// Photo bytes kept in memory.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Photos served lately, by (hash, thumbnail), within [`CACHE_BYTES`].
static CACHE: LazyLock<ByteCache<(String, bool)>> = LazyLock::new(|| ByteCache::new(CACHE_BYTES));

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/media/{name}", web::get().to(photo));
}

/// `{hash}.jpg` → (hash, false); `{hash}-thumb.jpg` → (hash, true).
fn parse(name: &str) -> Option<(String, bool)> {
    let stem = name.strip_suffix(".jpg")?;
    let (hash, thumb) = match stem.strip_suffix("-thumb") {
        Some(h) => (h, true),
        None => (stem, false),
    };
    is_image_hash(hash).then(|| (hash.to_string(), thumb))
}

async fn photo(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let key = parse(&name).ok_or_else(ApiError::not_found)?;
    let etag = format!("\"{}{}\"", key.0, if key.1 { "-t" } else { "" });
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    let bytes = match CACHE.get(&key) {
        Some(b) => b,
        None => {
            let mut conn = ctx.pool.get().await?;
            let found = MenuImage::bytes(&mut conn, &key.0, key.1)
                .await?
                .ok_or_else(ApiError::not_found)?;
            let b = Bytes::from(found);
            CACHE.put(key, b.clone());
            b
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("image/jpeg")
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::ETAG, etag))
        .body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_photo_names_are_served() {
        let h = "a".repeat(64);
        assert_eq!(parse(&format!("{h}.jpg")), Some((h.clone(), false)));
        assert_eq!(parse(&format!("{h}-thumb.jpg")), Some((h.clone(), true)));
        for bad in [
            format!("{h}.png"),
            format!("{}.jpg", "A".repeat(64)),
            "x.jpg".into(),
            format!("../{h}.jpg"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
