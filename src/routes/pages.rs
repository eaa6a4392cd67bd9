//! The three browser clients, embedded in the binary: the guest app at `/t/{table_token}`, the kitchen
//! display at `/kitchen`, the admin console at `/admin`, and their assets under `/static/`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rust_embed::RustEmbed;

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "web/"]
#[exclude = "README.md"]
struct Assets;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/t/{token}", web::get().to(guest))
        .route("/kitchen", web::get().to(kitchen))
        .route("/admin", web::get().to(admin))
        .route(
            "/favicon.ico",
            web::get().to(|| async { HttpResponse::NoContent().finish() }),
        )
        .route("/static/{path:.*}", web::get().to(asset));
}

/// The pages and scripts gzip-compressed, by their `ETag` (their content's hash): each once.
static COMPRESSED: std::sync::LazyLock<crate::byte_cache::ByteCache<String>> =
    std::sync::LazyLock::new(|| crate::byte_cache::ByteCache::new(8 * 1024 * 1024));

fn serve(path: &str, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    let file = Assets::get(path).ok_or_else(ApiError::not_found)?;
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag.clone()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return Ok(res.finish());
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    res.content_type(mime.as_ref())
        .insert_header((header::VARY, "Accept-Encoding"));
    let text = matches!(mime.type_(), mime_guess::mime::TEXT)
        || mime.subtype() == mime_guess::mime::JAVASCRIPT;
    if text && crate::gzip::accepted(req) {
        let compressed = match COMPRESSED.get(&etag) {
            Some(b) => b,
            None => {
                let b = web::Bytes::from(
                    crate::gzip::compress(&file.data)
                        .map_err(|e| ApiError::internal("asset compression", e))?,
                );
                COMPRESSED.put(etag.clone(), b.clone());
                b
            }
        };
        res.insert_header((header::CONTENT_ENCODING, "gzip"));
        return Ok(res.body(compressed));
    }
    Ok(res.body(file.data.into_owned()))
}

async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/kitchen"))
        .finish()
}

async fn guest(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve("guest/index.html", &req)
}

async fn kitchen(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve("kitchen/index.html", &req)
}

async fn admin(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    serve("admin/index.html", &req)
}

async fn asset(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if path.contains("..") {
        return Err(ApiError::not_found());
    }
    serve(&format!("static/{path}"), &req)
}
