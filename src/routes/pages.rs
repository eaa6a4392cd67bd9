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
    res.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return Ok(res.finish());
    }
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    Ok(res.content_type(mime.as_ref()).body(file.data.into_owned()))
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
