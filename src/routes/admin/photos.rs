//! A dish's photo: `PUT restaurants/{rid}/menu-items/{iid}/image` with the picture as the body
//! (`image/jpeg`, `image/png` or `image/webp`, at most 5 MiB), `DELETE` the same path. The upload is
//! checked and re-encoded by [`crate::photos`], stored once by its hash, and set on the dish by the
//! restaurant's actor like any menu edit (sockets hear `menu`); the answer is the dish with its
//! `image_url`.

use std::sync::LazyLock;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use futures_util::StreamExt;
use scan2order_actors::admin::{AdminChange, AdminOutcome};
use scan2order_schema::media::MenuImage;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{change, options, resource, unexpected, ItemOut};
use crate::context::AppContext;
use crate::error::{ApiError, ApiResult};
use crate::photos::{self, PhotoError, CONCURRENT_DECODES, MAX_UPLOAD_BYTES};

static DECODES: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(CONCURRENT_DECODES));

pub(super) fn configure(cfg: &mut web::ServiceConfig, r: &str) {
    cfg.service(
        resource(format!("{r}/menu-items/{{iid}}/image"))
            .put(put_image)
            .delete(delete_image),
    );
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("image: at most {} MiB", MAX_UPLOAD_BYTES / (1024 * 1024)),
    )
}

/// The body, refused as soon as it is known to be over the limit (by its `Content-Length`, or while
/// it arrives).
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> ApiResult<Vec<u8>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::invalid("image: the upload was cut short"))?;
        if body.len() + chunk.len() > MAX_UPLOAD_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn put_image(
    ctx: web::Data<AppContext>,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let (rid, iid) = path.into_inner();
    let format = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(photos::format_of)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type: image/jpeg, image/png or image/webp",
            )
        })?;
    // Another restaurant's dish is 404 before any work is spent on the picture.
    {
        let mut conn = ctx.pool.get().await?;
        options::item_groups(&mut conn, rid, iid).await?;
    }
    let body = read_body(&req, payload).await?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_image",
            "image: the body is empty",
        ));
    }
    let processed = {
        let _permit = DECODES
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable())?;
        web::block(move || photos::process(&body, format))
            .await
            .map_err(|e| ApiError::internal("photo processing", e))?
    }
    .map_err(|e| match e {
        PhotoError::UnsupportedType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type: image/jpeg, image/png or image/webp",
        ),
        PhotoError::Invalid(message) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_image", message)
        }
    })?;
    let image = MenuImage {
        hash: processed.hash.clone(),
        menu_jpeg: processed.menu,
        thumb_jpeg: processed.thumb,
        width: processed.width as i32,
        height: processed.height as i32,
        created_at: Utc::now(),
    };
    {
        let mut conn = ctx.pool.get().await?;
        image.store(&mut conn).await?;
    }
    let set = AdminChange::SetImage {
        item_id: iid,
        image_hash: Some(processed.hash),
    };
    match change(&ctx, rid, set).await? {
        AdminOutcome::Item(i) => {
            let mut conn = ctx.pool.get().await?;
            let groups = options::item_groups(&mut conn, rid, iid).await?;
            Ok(HttpResponse::Ok().json(ItemOut::with_groups(i, groups)))
        }
        other => Err(unexpected(other)),
    }
}

async fn delete_image(
    ctx: web::Data<AppContext>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (rid, iid) = path.into_inner();
    let set = AdminChange::SetImage {
        item_id: iid,
        image_hash: None,
    };
    change(&ctx, rid, set).await?;
    Ok(HttpResponse::NoContent().finish())
}
