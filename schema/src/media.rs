//! # Menu photos as stored and addressed
//!
//! A photo is stored once, named by the SHA-256 (hex) of its menu-size JPEG, with its thumbnail. Its
//! URLs are derived from that name, so they never change for the same picture and can be cached for a
//! year (`immutable`); a new picture is a new name.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::schema::menu_images;
use crate::DbConn;

/// The path of a photo's menu size.
pub fn menu_url(hash: &str) -> String {
    format!("/media/{hash}.jpg")
}

/// The path of a photo's thumbnail.
pub fn thumbnail_url(hash: &str) -> String {
    format!("/media/{hash}-thumb.jpg")
}

/// Whether `s` is a photo's name: 64 lowercase hex digits.
pub fn is_image_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[derive(Clone, Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = menu_images)]
pub struct MenuImage {
    pub hash: String,
    pub menu_jpeg: Vec<u8>,
    pub thumb_jpeg: Vec<u8>,
    pub width: i32,
    pub height: i32,
    pub created_at: DateTime<Utc>,
}

impl MenuImage {
    /// Stores the photo unless the same picture is stored already.
    pub async fn store(&self, conn: &mut DbConn) -> QueryResult<()> {
        diesel::insert_into(menu_images::table)
            .values(self)
            .on_conflict(menu_images::hash)
            .do_nothing()
            .execute(conn)
            .await
            .map(|_| ())
    }

    /// One size of a stored photo (`thumb` for the thumbnail).
    pub async fn bytes(conn: &mut DbConn, hash: &str, thumb: bool) -> QueryResult<Option<Vec<u8>>> {
        let q = menu_images::table.find(hash);
        if thumb {
            q.select(menu_images::thumb_jpeg)
                .first(conn)
                .await
                .optional()
        } else {
            q.select(menu_images::menu_jpeg)
                .first(conn)
                .await
                .optional()
        }
    }
}
