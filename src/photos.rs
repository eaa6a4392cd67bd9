//! # Menu photos: an upload decoded within limits, then resized and re-encoded
//!
//! An admin's upload is never served as sent. Its bytes must be the picture type its `Content-Type`
//! names; the decoder is given [`image::Limits`] (dimensions and allocation) before it reads a pixel, so
//! a decompression bomb (a tiny file declaring a huge picture) is refused for the cost of its header.
//! The picture is turned upright (EXIF orientation), flattened onto white, and re-encoded as two JPEGs:
//! a menu size and a thumbnail, without any of the upload's metadata. It is named by the SHA-256 of
//! the menu size, so the same picture is stored once and its URLs never change.
//!
//! Decoding is CPU work: it runs on the blocking pool, at most [`CONCURRENT_DECODES`] at a time, so
//! uploads cannot take every core or hold more than a few decode buffers at once.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use sha2::{Digest, Sha256};

/// The largest upload accepted (PROTOCOL.md: the only body over 64 KiB).
pub const MAX_UPLOAD_BYTES: usize = 5 * 1024 * 1024;
/// The largest side a picture may declare.
pub const MAX_SIDE: u32 = 6000;
/// What the decoder may allocate (6000 × 6000 RGBA is 144 MB).
pub const MAX_DECODE_BYTES: u64 = 160 * 1024 * 1024;
/// The smallest side worth showing.
pub const MIN_SIDE: u32 = 64;
/// The longest side of the menu size and of the thumbnail (shown at 88 CSS px: sharp up to 2× screens).
pub const MENU_SIDE: u32 = 1200;
pub const THUMB_SIDE: u32 = 200;
/// Uploads decoded at the same time.
pub const CONCURRENT_DECODES: usize = 2;

/// Why an upload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhotoError {
    /// Not one of the picture types taken (415).
    UnsupportedType,
    /// Not that picture, or too large or small, or unreadable (400 `invalid_image`); the sentence says which.
    Invalid(String),
}

/// A picture ready to store.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Hex SHA-256 of `menu`.
    pub hash: String,
    pub menu: Vec<u8>,
    pub thumb: Vec<u8>,
    /// Of the menu size.
    pub width: u32,
    pub height: u32,
}

/// The picture type a `Content-Type` names (parameters ignored), if it is one taken.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/jpeg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        _ => "picture",
    }
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Decodes `bytes` as `format` within the limits, upright.
fn decode(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, PhotoError> {
    let kind = name(format);
    if image::guess_format(bytes).ok() != Some(format) {
        return Err(PhotoError::Invalid(format!(
            "image: the body is not a {kind} picture"
        )));
    }
    let refused = |e: ImageError| match e {
        ImageError::Limits(_) => PhotoError::Invalid(format!(
            "image: too large; at most {MAX_SIDE} × {MAX_SIDE} pixels"
        )),
        _ => PhotoError::Invalid(format!("image: could not be read as a {kind} picture")),
    };
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(refused)?;
    decoder.set_limits(limits()).map_err(refused)?;
    let (w, h) = decoder.dimensions();
    if w < MIN_SIDE || h < MIN_SIDE {
        return Err(PhotoError::Invalid(format!(
            "image: too small; at least {MIN_SIDE} × {MIN_SIDE} pixels"
        )));
    }
    let orientation = decoder.orientation().map_err(refused)?;
    let mut picture = DynamicImage::from_decoder(decoder).map_err(refused)?;
    picture.apply_orientation(orientation);
    Ok(picture)
}

/// The picture on white (transparent parts of a PNG or WebP become white, not black).
fn flatten(picture: DynamicImage) -> RgbImage {
    if !picture.color().has_alpha() {
        return picture.into_rgb8();
    }
    let rgba = picture.into_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: u8| ((u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

/// Scaled down to fit `side` × `side` (never up).
fn fit(picture: &RgbImage, side: u32) -> RgbImage {
    if picture.width() <= side && picture.height() <= side {
        return picture.clone();
    }
    DynamicImage::ImageRgb8(picture.clone())
        .resize(side, side, FilterType::Triangle)
        .into_rgb8()
}

fn jpeg(picture: &RgbImage, quality: u8) -> Result<Vec<u8>, PhotoError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(picture)
        .map_err(|_| PhotoError::Invalid("image: could not be re-encoded".into()))?;
    Ok(out)
}

/// Checks, decodes, resizes and re-encodes an upload.
pub fn process(bytes: &[u8], format: ImageFormat) -> Result<Processed, PhotoError> {
    let flat = flatten(decode(bytes, format)?);
    let menu = fit(&flat, MENU_SIDE);
    drop(flat);
    let thumb = fit(&menu, THUMB_SIDE);
    let menu_jpeg = jpeg(&menu, 82)?;
    let thumb_jpeg = jpeg(&thumb, 72)?;
    let hash = Sha256::digest(&menu_jpeg)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Processed {
        hash,
        width: menu.width(),
        height: menu.height(),
        menu: menu_jpeg,
        thumb: thumb_jpeg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::png::PngEncoder;
    use image::ImageEncoder;

    fn png(w: u32, h: u32, color: image::ExtendedColorType, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(pixels, w, h, color)
            .expect("png");
        out
    }

    #[test]
    fn a_picture_is_resized_to_a_menu_size_and_a_thumbnail_and_named_by_its_hash() {
        let (w, h) = (2400u32, 1200u32);
        let pixels: Vec<u8> = (0..w * h)
            .flat_map(|i| [(i % 251) as u8, 90, 200])
            .collect();
        let out = process(
            &png(w, h, image::ExtendedColorType::Rgb8, &pixels),
            ImageFormat::Png,
        )
        .expect("processed");
        assert_eq!((out.width, out.height), (1200, 600));
        let thumb =
            image::load_from_memory_with_format(&out.thumb, ImageFormat::Jpeg).expect("jpeg");
        assert_eq!((thumb.width(), thumb.height()), (200, 100));
        assert_eq!(out.hash.len(), 64);
        let again = process(
            &png(w, h, image::ExtendedColorType::Rgb8, &pixels),
            ImageFormat::Png,
        )
        .expect("processed");
        assert_eq!(again.hash, out.hash, "the same picture gets the same name");
    }

    #[test]
    fn transparency_becomes_white_and_small_pictures_are_not_enlarged() {
        let pixels = vec![0u8; 100 * 80 * 4];
        let out = process(
            &png(100, 80, image::ExtendedColorType::Rgba8, &pixels),
            ImageFormat::Png,
        )
        .expect("processed");
        assert_eq!((out.width, out.height), (100, 80));
        let menu = image::load_from_memory_with_format(&out.menu, ImageFormat::Jpeg)
            .expect("jpeg")
            .into_rgb8();
        assert!(
            menu.get_pixel(50, 40).0.iter().all(|c| *c > 245),
            "{:?}",
            menu.get_pixel(50, 40)
        );
    }

    #[test]
    fn the_wrong_type_a_bomb_and_a_tiny_picture_are_refused_with_a_sentence() {
        let pixels = vec![0u8; 100 * 80 * 3];
        let real = png(100, 80, image::ExtendedColorType::Rgb8, &pixels);
        assert!(
            matches!(process(&real, ImageFormat::Jpeg), Err(PhotoError::Invalid(m)) if m.contains("not a JPEG"))
        );
        assert!(matches!(
            process(b"hello", ImageFormat::Png),
            Err(PhotoError::Invalid(_))
        ));
        // A PNG header declaring 60000 × 60000 pixels: refused before any pixel buffer exists.
        let mut bomb = real.clone();
        bomb[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32fast::hash(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(
            matches!(process(&bomb, ImageFormat::Png), Err(PhotoError::Invalid(m)) if m.contains("too large"))
        );
        let tiny = png(10, 10, image::ExtendedColorType::Rgb8, &[0u8; 300]);
        assert!(
            matches!(process(&tiny, ImageFormat::Png), Err(PhotoError::Invalid(m)) if m.contains("too small"))
        );
        assert_eq!(
            format_of("image/png; charset=binary"),
            Some(ImageFormat::Png)
        );
        assert_eq!(format_of("image/gif"), None);
    }
}
