//! The query extractor: arbitrary query strings, typed as every query of the REST API. Checks that
//! every refusal is a plain sentence naming no Rust type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan2order::extract::query_from_str;
use scan2order::routes::guest::PageQuery;
use scan2order::routes::kitchen::RestaurantQuery;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    // The client's text as the refusal may quote it: raw and decoded.
    let input = format!("{query} {}", form_urlencoded_pairs(&query).join(" "));
    if let Err(why) = query_from_str::<PageQuery>(&query) {
        scan2order_fuzz::assert_plain_refusal(&why, &input);
    }
    if let Err(why) = query_from_str::<RestaurantQuery>(&query) {
        scan2order_fuzz::assert_plain_refusal(&why, &input);
    }
});

/// The decoded keys and values, as the extractor sees them.
fn form_urlencoded_pairs(query: &str) -> Vec<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map(|pairs| pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        .unwrap_or_default()
}
