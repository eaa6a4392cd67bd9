//! Menu photos: upload, checks (type, size, decompression bombs), re-encoding into a menu size and a
//! thumbnail, immutable URLs on the guest menu, removal, and other restaurants' dishes.

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageFormat};
use scan2order_schema::wire::ServerMsg;
use serde_json::Value;
use uuid::Uuid;

use crate::admin::admin_token;
use crate::helpers::{expect_error, spawn_app, TestApp};

fn png(w: u32, h: u32) -> Vec<u8> {
    let pixels: Vec<u8> = (0..w * h)
        .flat_map(|i| [(i % 200) as u8, (i / w % 200) as u8, 120])
        .collect();
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(&pixels, w, h, ExtendedColorType::Rgb8)
        .expect("png");
    out
}

async fn put(
    app: &TestApp,
    token: &str,
    rid: Uuid,
    iid: Uuid,
    mime: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.http
        .put(app.url(&format!(
            "/api/v1/admin/restaurants/{rid}/menu-items/{iid}/image"
        )))
        .bearer_auth(token)
        .header("Content-Type", mime)
        .body(body)
        .send()
        .await
        .expect("request")
}

#[actix_web::test]
async fn an_uploaded_photo_is_re_encoded_served_from_immutable_urls_and_shown_on_the_menu() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("foto", 2, 1).await;
    let dish = r.items[0].id;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;

    let res = put(&app, &admin, r.id, dish, "image/png", png(1600, 900)).await;
    assert_eq!(res.status(), 200);
    let item: Value = res.json().await.expect("json");
    let url = item["image_url"].as_str().expect("image_url").to_string();
    let thumb = item["thumbnail_url"]
        .as_str()
        .expect("thumbnail_url")
        .to_string();
    assert!(url.starts_with("/media/") && url.ends_with(".jpg"), "{url}");
    assert!(matches!(table.next().await, ServerMsg::Menu { .. }));

    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    let menu: Value = res.json().await.expect("json");
    let shown = &menu["menu"]["categories"][0]["items"][0];
    assert_eq!(shown["image_url"], url.as_str());
    assert_eq!(shown["thumbnail_url"], thumb.as_str());

    for (path, size) in [(&url, (1200, 675)), (&thumb, (200, 113))] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/jpeg");
        assert_eq!(
            res.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let etag = res.headers()["etag"].to_str().expect("etag").to_string();
        let bytes = res.bytes().await.expect("bytes");
        let picture =
            image::load_from_memory_with_format(&bytes, ImageFormat::Jpeg).expect("a JPEG");
        assert_eq!((picture.width(), picture.height()), size, "{path}");
        let again = app
            .http
            .get(app.url(path))
            .header("If-None-Match", etag)
            .send()
            .await
            .expect("request");
        assert_eq!(again.status(), 304);
    }
    // The same picture on another dish is stored once, under the same name.
    let res = put(
        &app,
        &admin,
        r.id,
        r.items[1].id,
        "image/png",
        png(1600, 900),
    )
    .await;
    let other: Value = res.json().await.expect("json");
    assert_eq!(other["image_url"], url.as_str());
    app.assert_sql(
        "the picture is stored once",
        "(SELECT count(*) FROM menu_images) = 1",
    )
    .await;

    // Removed: the menu shows no photo; the URL of a name never stored is 404.
    let res = app
        .http
        .delete(app.url(&format!(
            "/api/v1/admin/restaurants/{}/menu-items/{dish}/image",
            r.id
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 204);
    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    let menu: Value = res.json().await.expect("json");
    assert_eq!(
        menu["menu"]["categories"][0]["items"][0]["image_url"],
        Value::Null
    );
    let res = app
        .get(&format!("/media/{}.jpg", "0".repeat(64)), None)
        .await;
    expect_error(res, 404, "not_found").await;
}

#[actix_web::test]
async fn uploads_that_are_not_the_picture_they_claim_too_big_or_a_bomb_are_refused_and_change_nothing(
) {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("rifiuti", 1, 1).await;
    let other = app.restaurant("estranei", 1, 1).await;
    let dish = r.items[0].id;
    let real = png(200, 100);

    let res = put(&app, &admin, r.id, dish, "image/gif", real.clone()).await;
    expect_error(res, 415, "unsupported_media_type").await;
    let res = put(&app, &admin, r.id, dish, "image/jpeg", real.clone()).await;
    let err = expect_error(res, 400, "invalid_image").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a JPEG"),
        "{err}"
    );
    let res = put(
        &app,
        &admin,
        r.id,
        dish,
        "image/png",
        b"\x89PNG\r\n\x1a\n not really".to_vec(),
    )
    .await;
    expect_error(res, 400, "invalid_image").await;
    // A decompression bomb: a valid PNG header declaring 50000 × 50000 pixels (10 GB decoded).
    let mut bomb = real.clone();
    bomb[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    // The header's checksum is made right, so only the limits can refuse it.
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let res = put(&app, &admin, r.id, dish, "image/png", bomb).await;
    let err = expect_error(res, 400, "invalid_image").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too large"),
        "{err}"
    );
    // Over 5 MiB.
    let res = put(
        &app,
        &admin,
        r.id,
        dish,
        "image/png",
        vec![0u8; 5 * 1024 * 1024 + 1],
    )
    .await;
    expect_error(res, 413, "payload_too_large").await;
    // Another restaurant's dish, or none.
    for (rid, iid) in [
        (other.id, dish),
        (r.id, other.items[0].id),
        (r.id, Uuid::new_v4()),
    ] {
        let res = put(&app, &admin, rid, iid, "image/png", real.clone()).await;
        expect_error(res, 404, "not_found").await;
    }
    // A chef may not upload.
    let chef = app.login_chef(&r).await;
    let res = put(&app, &chef, r.id, dish, "image/png", real.clone()).await;
    expect_error(res, 403, "forbidden").await;
    app.assert_sql(
        "nothing was stored or set",
        "(SELECT count(*) FROM menu_images) = 0 AND (SELECT count(*) FROM menu_items WHERE image_hash IS NOT NULL) = 0",
    )
    .await;
}
