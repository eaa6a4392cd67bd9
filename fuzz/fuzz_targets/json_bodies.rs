//! The JSON body extractor's checks and typing (what runs once actix-web has parsed the body): arbitrary
//! bytes as JSON, typed as every request body of the REST API. Checks that every refusal is a plain
//! sentence naming the field and no Rust type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan2order::extract::body_from_value;
use scan2order::routes::admin::{
    CategoryBody, ItemBody, NewRestaurant, NewStaff, RestaurantChanges, StaffChanges, TableBody,
};
use scan2order_schema::wire::{
    LoginRequest, OtpSendRequest, OtpVerifyRequest, PlaceOrderRequest, SetAcceptingRequest,
    SetAvailableRequest, SetStatusRequest,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn typed<T: DeserializeOwned>(value: &Value, input: &str) {
    if let Err(why) = body_from_value::<T>(value.clone()) {
        scan2order_fuzz::assert_plain_refusal(&why, input);
        assert!(
            why.split_once(": ").is_some_and(|(field, _)| !field.is_empty()),
            "no field named in {why:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    // The client's text as the refusal may quote it: its strings unescaped.
    let input = scan2order_fuzz::json_text(data, &value);
    typed::<PlaceOrderRequest>(&value, &input);
    typed::<LoginRequest>(&value, &input);
    typed::<OtpSendRequest>(&value, &input);
    typed::<OtpVerifyRequest>(&value, &input);
    typed::<SetStatusRequest>(&value, &input);
    typed::<SetAcceptingRequest>(&value, &input);
    typed::<SetAvailableRequest>(&value, &input);
    typed::<NewRestaurant>(&value, &input);
    typed::<RestaurantChanges>(&value, &input);
    typed::<CategoryBody>(&value, &input);
    typed::<ItemBody>(&value, &input);
    typed::<TableBody>(&value, &input);
    typed::<NewStaff>(&value, &input);
    typed::<StaffChanges>(&value, &input);
});
