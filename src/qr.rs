//! Table QR codes: SVG and PNG of `{public_base_url}/t/{table_token}`, and a printable sheet with one card
//! per table. Everything an admin typed is HTML-escaped.

use std::io::Cursor;

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use crate::error::{ApiError, ApiResult};

/// Smallest rendered size, in pixels (PNG) or user units (SVG).
const PNG_SIZE: u32 = 512;
const SVG_SIZE: u32 = 256;

fn code(url: &str) -> ApiResult<QrCode> {
    // Level M survives a little wear on a table card while keeping modules large.
    QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M)
        .map_err(|e| ApiError::internal("QR encoding", e))
}

pub fn svg(url: &str) -> ApiResult<String> {
    Ok(code(url)?
        .render::<svg::Color>()
        .min_dimensions(SVG_SIZE, SVG_SIZE)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

pub fn png(url: &str) -> ApiResult<Vec<u8>> {
    let img = code(url)?
        .render::<image::Luma<u8>>()
        .min_dimensions(PNG_SIZE, PNG_SIZE)
        .quiet_zone(true)
        .build();
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| ApiError::internal("PNG encoding", e))?;
    Ok(out.into_inner())
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A printable page: one card per table with the restaurant name, the table label, the QR code and
/// "Scan to order". Styles come from `/static/qr-sheet.css` (no inline styles, for the CSP).
pub fn sheet(restaurant: &str, tables: &[(String, String)]) -> ApiResult<String> {
    let name = escape_html(restaurant);
    let mut html = String::with_capacity(4096 + tables.len() * 8192);
    html.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    html.push_str(&format!("<title>Table QR codes · {name}</title>"));
    html.push_str("<link rel=\"stylesheet\" href=\"/static/qr-sheet.css\"></head><body>");
    html.push_str(&format!(
        "<header class=\"screen-only\"><h1>{name}: table QR codes</h1>\
         <p>{} {}. Print this page (one card per table); cut along the dotted lines.</p></header>",
        tables.len(),
        if tables.len() == 1 { "table" } else { "tables" }
    ));
    html.push_str("<main class=\"sheet\">");
    for (label, url) in tables {
        let svg = svg(url)?;
        let svg = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        html.push_str(&format!(
            "<section class=\"card\" data-testid=\"qr-card\"><p class=\"restaurant\">{name}</p>\
             <div class=\"qr\">{svg}</div><p class=\"label\">Table {}</p>\
             <p class=\"cta\">Scan to order</p></section>",
            escape_html(label)
        ));
    }
    html.push_str("</main></body></html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_text_is_escaped() {
        assert_eq!(
            escape_html("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    #[test]
    fn the_sheet_has_a_card_per_table_and_no_raw_markup_from_names() {
        let html = sheet(
            "<b>Roma</b>",
            &[
                ("1".into(), "https://example.test/t/abc".into()),
                ("<i>2</i>".into(), "https://example.test/t/def".into()),
            ],
        )
        .expect("sheet");
        assert_eq!(html.matches("class=\"card\"").count(), 2);
        assert!(html.contains("&lt;b&gt;Roma&lt;/b&gt;"));
        assert!(html.contains("Table &lt;i&gt;2&lt;/i&gt;"));
        assert!(!html.contains("<b>Roma"));
        assert!(!html.contains("<?xml"));
    }
}
