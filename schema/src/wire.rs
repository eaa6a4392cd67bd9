//! The serde types of PROTOCOL.md: REST bodies and socket messages. The server, the tests and the load
//! generator all use these, so the contract lives in one place.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    CategoryId, MenuItemId, MenuOptionId, OptionGroupId, OrderId, OrderStatus, RestaurantId,
    StaffId, TableId,
};

/// An error body: `{"error": "<code>", "message": "<sentence>"}` plus optional details.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_ids: Option<Vec<MenuItemId>>,
    /// With `item_unavailable`: the sold-out options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_ids: Option<Vec<MenuOptionId>>,
    /// With `invalid_options`: the dish and the choice that was not made right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<MenuItemId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<OptionGroupId>,
}

impl ErrorBody {
    /// A body with no details.
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            message: message.into(),
            item_ids: None,
            option_ids: None,
            item_id: None,
            group_id: None,
        }
    }
}

/// An option a line was ordered with, copied at order time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLineOption {
    pub option_id: MenuOptionId,
    pub group_name: String,
    pub name: String,
    pub price_delta_cents: i64,
}

/// Who in the kitchen acknowledged an order's declared allergies, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllergyAck {
    pub by: Option<StaffId>,
    pub at: DateTime<Utc>,
}

/// One line of an order as the guest sees it: name and price copied at order time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub menu_item_id: MenuItemId,
    pub name: String,
    pub unit_price_cents: i64,
    pub quantity: i32,
    pub note: String,
    /// The options chosen, copied at order time; `unit_price_cents` includes their deltas.
    #[serde(default)]
    pub options: Vec<OrderLineOption>,
}

/// An order. `phone` is the guest's own number on guest calls and masked for the kitchen and tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub restaurant_id: RestaurantId,
    pub table_id: TableId,
    pub table_label: String,
    pub ticket_no: i32,
    pub status: OrderStatus,
    pub items: Vec<OrderLine>,
    pub note: String,
    pub total_cents: i64,
    pub currency: String,
    pub phone: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The table's declared allergies (allergen codes).
    #[serde(default)]
    pub allergies: Vec<String>,
    /// Set once the kitchen acknowledged the allergies.
    #[serde(default)]
    pub allergy_ack: Option<AllergyAck>,
}

/// `POST /api/v1/orders` body. Unknown fields are refused, so a client cannot smuggle a price.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub table_token: String,
    pub items: Vec<PlaceOrderLine>,
    #[serde(default)]
    pub note: Option<String>,
    /// The table's declared allergies: a dish or option containing one is refused.
    #[serde(default)]
    pub allergies: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderLine {
    pub menu_item_id: MenuItemId,
    pub quantity: i32,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub options: Option<Vec<MenuOptionId>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrdersPage {
    pub orders: Vec<Order>,
    pub next_before: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderList {
    pub orders: Vec<Order>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetStatusRequest {
    pub status: OrderStatus,
    /// The staff member read the order's allergies (required on its first forward move when it has any).
    #[serde(default)]
    pub allergy_ack: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAvailableRequest {
    pub available: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAcceptingRequest {
    pub accepting_orders: bool,
}

/// A dish as the guest menu shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MenuItemView {
    pub id: MenuItemId,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub available: bool,
    pub tags: Vec<String>,
    #[serde(default)]
    pub allergens: Vec<String>,
    /// The dish's photo (menu size) and its thumbnail: immutable URLs, or null.
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub thumbnail_url: Option<String>,
    #[serde(default)]
    pub option_groups: Vec<OptionGroupView>,
}

/// A choice on a dish: the guest picks between `min` and `max` of its options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptionGroupView {
    pub id: OptionGroupId,
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub options: Vec<OptionView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptionView {
    pub id: MenuOptionId,
    pub name: String,
    pub price_delta_cents: i64,
    pub available: bool,
    pub allergens: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoryView {
    pub id: CategoryId,
    pub name: String,
    pub items: Vec<MenuItemView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MenuView {
    pub version: String,
    pub categories: Vec<CategoryView>,
}

/// The restaurant as guests see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestaurantPublic {
    pub id: RestaurantId,
    pub slug: String,
    pub name: String,
    pub currency: String,
    pub accepting_orders: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TablePublic {
    pub id: TableId,
    pub label: String,
}

/// `GET /api/v1/tables/{token}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableMenu {
    pub restaurant: RestaurantPublic,
    pub table: TablePublic,
    pub menu: MenuView,
}

/// The restaurant as its kitchen sees it (extension: ticket timer thresholds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestaurantKitchen {
    pub id: RestaurantId,
    pub slug: String,
    pub name: String,
    pub currency: String,
    pub accepting_orders: bool,
    pub ticket_warn_after_s: i32,
    pub ticket_late_after_s: i32,
}

/// `GET /api/v1/kitchen/restaurant` (extension).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KitchenRestaurant {
    pub restaurant: RestaurantKitchen,
    pub menu: MenuView,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpSendRequest {
    pub phone: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtpSendResponse {
    pub expires_in_s: u64,
    pub resend_after_s: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpVerifyRequest {
    pub phone: String,
    pub code: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OtpVerifyResponse {
    pub customer_token: String,
    pub phone: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// What a staff member may do. Stored by name ([`crate::stored`]).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Chef,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Chef => "chef",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        match s {
            "chef" => Ok(Role::Chef),
            "admin" => Ok(Role::Admin),
            _ => Err(UnknownRole),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role must be chef or admin")]
pub struct UnknownRole;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StaffUser {
    pub id: StaffId,
    pub username: String,
    pub role: Role,
    pub restaurant_id: Option<RestaurantId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub user: StaffUser,
}

/// Server → client socket messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Hello {
        epoch: String,
        seq: u64,
    },
    Snapshot {
        epoch: String,
        seq: u64,
        orders: Vec<Order>,
        /// Extension: the menu version now; a client holding another one fetches the menu again
        /// (menu and availability events sent before its subscription are not replayed to it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        menu_version: Option<String>,
        /// Extension: whether the restaurant takes orders now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accepting_orders: Option<bool>,
    },
    OrderCreated {
        seq: u64,
        order: Order,
    },
    OrderStatus {
        seq: u64,
        order_id: OrderId,
        ticket_no: i32,
        status: OrderStatus,
        updated_at: DateTime<Utc>,
        /// Set once the kitchen acknowledged the order's allergies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allergy_ack: Option<AllergyAck>,
    },
    MenuItem {
        seq: u64,
        item_id: MenuItemId,
        available: bool,
    },
    MenuOption {
        seq: u64,
        option_id: MenuOptionId,
        available: bool,
    },
    Restaurant {
        seq: u64,
        accepting_orders: bool,
    },
    Menu {
        seq: u64,
        version: String,
    },
    Ack {
        request_id: String,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        error: String,
        message: String,
    },
}

impl ServerMsg {
    /// The event's sequence number, for the events that carry one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMsg::OrderCreated { seq, .. }
            | ServerMsg::OrderStatus { seq, .. }
            | ServerMsg::MenuItem { seq, .. }
            | ServerMsg::MenuOption { seq, .. }
            | ServerMsg::Restaurant { seq, .. }
            | ServerMsg::Menu { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// Client → server socket messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    Resume {
        epoch: String,
        since: u64,
    },
    SetStatus {
        request_id: String,
        order_id: OrderId,
        status: OrderStatus,
        /// As in `POST …/status`: the allergies were read.
        #[serde(default)]
        allergy_ack: bool,
    },
}

impl ClientMsg {
    /// Parses one inbound socket message. The error says what was wrong in JSON terms, never with the
    /// Rust type names serde would print (`expected internally tagged enum ClientMsg`).
    /// Its strings must be clean text (no NUL, ESC…), as in every REST body.
    pub fn parse(text: &str) -> Result<ClientMsg, String> {
        // serde would also take the sequence form of a tagged enum (`["resume","e",5]`); the protocol's
        // messages are objects, and the refusal should say so rather than count elements.
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err("expected a JSON object with a known `type`".to_string());
        }
        let msg: ClientMsg =
            serde_json::from_str(text).map_err(|e| without_type_names(&e.to_string()))?;
        let (field, value) = match &msg {
            ClientMsg::Resume { epoch, .. } => ("epoch", epoch),
            ClientMsg::SetStatus { request_id, .. } => ("request_id", request_id),
        };
        if !crate::domain::is_clean_text(value) {
            return Err(format!("{field}: control characters are not allowed"));
        }
        Ok(msg)
    }
}

/// serde names the Rust types it expected (`expected struct PlaceOrderRequest`, `expected i32`); a
/// client is told what JSON was expected instead.
/// What the message quotes of the client's input (`unknown variant `…``) keeps no control character:
/// each is written as its escape (`\u{7f}`).
pub fn without_type_names(message: &str) -> String {
    let plain = in_json_terms(message);
    if crate::domain::is_clean_text(&plain) {
        return plain;
    }
    let mut out = String::with_capacity(plain.len() + 8);
    for c in plain.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn in_json_terms(message: &str) -> String {
    if let Some(sentence) = instead_of_library_text(message) {
        return sentence;
    }
    // The last one: serde's own clause comes after whatever it quotes of the client's input (which
    // may say "expected struct …" itself).
    let Some(at) = message.rfind("expected ") else {
        return message.to_string();
    };
    let (head, expected) = message.split_at(at + "expected ".len());
    let word_end = |s: &str| {
        s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len())
    };
    let variant = expected
        .strip_prefix("struct variant ")
        .or_else(|| expected.strip_prefix("tuple variant "));
    let (what, rest) = if let Some(name) = variant {
        // `Enum::Variant with 2 elements`: the count is of a Rust tuple, not of anything the client wrote.
        let name_end = name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(name.len());
        let rest = &name[name_end..];
        let rest = match rest.strip_prefix(" with ") {
            Some(count) => count.trim_start_matches(|c: char| c.is_ascii_digit()),
            None => rest,
        };
        let rest = rest
            .strip_prefix(" elements")
            .or_else(|| rest.strip_prefix(" element"))
            .unwrap_or(rest);
        ("a JSON object", rest)
    } else if let Some(name) = expected.strip_prefix("struct ") {
        ("a JSON object", &name[word_end(name)..])
    } else if let Some(name) = expected.strip_prefix("internally tagged enum ") {
        ("a JSON object with a known `type`", &name[word_end(name)..])
    } else if let Some(name) = expected.strip_prefix("enum ") {
        ("one of the allowed values", &name[word_end(name)..])
    } else {
        let word = &expected[..word_end(expected)];
        let what = match word {
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64"
            | "u128" | "usize" => "an integer",
            "f32" | "f64" => "a number",
            _ => return message.to_string(),
        };
        (what, &expected[word.len()..])
    };
    format!("{head}{what}{rest}")
}

/// The serde phrase or Rust type a message would name to a client, if any: what
/// [`without_type_names`] must leave none of (the fuzz tests and targets check every refusal with it).
pub fn names_a_rust_type(message: &str) -> Option<&'static str> {
    const PHRASES: &[&str] = &[
        "expected struct",
        "expected enum",
        "expected tuple struct",
        "expected unit struct",
        "expected newtype struct",
        "internally tagged enum",
        "adjacently tagged enum",
        "scan2order",
        "serde",
    ];
    if let Some(p) = PHRASES.iter().find(|p| message.contains(*p)) {
        return Some(p);
    }
    const PRIMITIVES: &[&str] = &[
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
        "f32", "f64",
    ];
    for (at, _) in message.match_indices("expected ") {
        let rest = &message[at + "expected ".len()..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if let Some(p) = PRIMITIVES.iter().find(|p| **p == word) {
            return Some(p);
        }
    }
    None
}

/// A library's own parser message that serde passes on verbatim (`UUID parsing failed: invalid
/// character…`, Rust's `invalid digit found in string`), replaced by what was expected; serde_json's
/// position (` at line 1 column 9`) is kept.
fn instead_of_library_text(message: &str) -> Option<String> {
    let (text, position) = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => message.split_at(i),
        _ => (message, ""),
    };
    let expected = if text.starts_with("UUID parsing failed") {
        "not a valid id"
    } else {
        match text {
            "invalid digit found in string"
            | "cannot parse integer from empty string"
            | "number too large to fit in target type"
            | "number too small to fit in target type" => "expected an integer",
            "invalid float literal" => "expected a number",
            "provided string was not `true` or `false`" => "expected true or false",
            _ => return None,
        }
    };
    Some(format!("{expected}{position}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_writing_expected_does_not_hide_the_type_name() {
        let why = ClientMsg::parse(r#""expected tuple struct QQ""#).expect_err("not an object");
        assert_eq!(
            names_a_rust_type(&why.replace("expected tuple struct QQ", "")),
            None,
            "{why:?}"
        );
        assert!(why.contains("a JSON object with a known `type`"), "{why:?}");
    }

    #[test]
    fn a_message_that_is_not_an_object_is_refused_as_such() {
        for text in [
            r#"["resume","epoch"]"#,
            "[\"resume\",\"e\",5]\r",
            "\"resume\"",
            " 7",
            "",
        ] {
            let why = ClientMsg::parse(text).expect_err("not an object");
            assert_eq!(
                why, "expected a JSON object with a known `type`",
                "{text:?}"
            );
        }
        assert!(ClientMsg::parse(" \r\n{\"type\":\"resume\",\"epoch\":\"e\",\"since\":5}").is_ok());
    }

    #[test]
    fn a_sequence_for_a_struct_variant_names_no_rust_type() {
        let why = in_json_terms(
            "invalid length 1, expected struct variant ClientMsg::Resume with 2 elements",
        );
        assert_eq!(why, "invalid length 1, expected a JSON object");
        assert_eq!(names_a_rust_type(&why), None);
        assert_eq!(
            in_json_terms("invalid type: string, expected tuple variant A::B at line 1"),
            "invalid type: string, expected a JSON object at line 1"
        );
    }

    #[test]
    fn a_refusal_quotes_no_control_character_of_the_client() {
        // JSON allows a raw DEL in a string; serde quotes the unknown variant as it came.
        let why = ClientMsg::parse("{\"type\":\"set\u{7f}s\"}").expect_err("unknown type");
        assert!(crate::domain::is_clean_text(&why), "{why:?}");
        assert!(why.contains("set\\u{7f}s"), "{why:?}");
    }

    #[test]
    fn library_parser_text_never_reaches_clients() {
        let bad_id = ClientMsg::parse(
            r#"{"type":"set_status","request_id":"r","order_id":"\u0000","status":"ready"}"#,
        )
        .expect_err("refused");
        assert!(bad_id.starts_with("not a valid id"), "{bad_id}");
        assert!(!bad_id.contains("UUID"), "{bad_id}");
        assert_eq!(
            ClientMsg::parse(
                r#"{"type":"set_status","request_id":"\u0000","order_id":"0190f0f0-0000-7000-8000-000000000000","status":"ready"}"#
            ),
            Err("request_id: control characters are not allowed".to_string())
        );
        assert_eq!(
            without_type_names("invalid digit found in string"),
            "expected an integer"
        );
        assert_eq!(
            without_type_names("invalid type: integer `1`, expected a string at line 1 column 3"),
            "invalid type: integer `1`, expected a string at line 1 column 3"
        );
    }

    #[test]
    fn roles_are_stored_and_sent_by_the_same_names() {
        for role in [Role::Chef, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
            assert_eq!(
                serde_json::to_value(role).expect("json"),
                serde_json::Value::String(role.as_str().into())
            );
        }
        assert_eq!("owner".parse::<Role>(), Err(UnknownRole));
    }

    #[test]
    fn socket_message_errors_name_no_rust_types() {
        for text in [r#""x""#, "5", r#"{"type":"resume","epoch":"e","since":-1}"#] {
            let e = ClientMsg::parse(text).expect_err("refused");
            assert!(!e.contains("ClientMsg") && !e.contains("u64"), "{e}");
        }
        assert!(ClientMsg::parse(r#"{"type":"resume","epoch":"e","since":1}"#).is_ok());
    }

    #[test]
    fn socket_messages_put_type_first() {
        let m = ServerMsg::Hello {
            epoch: "e1".into(),
            seq: 3,
        };
        let s = serde_json::to_string(&m).expect("serialises");
        assert_eq!(s, r#"{"type":"hello","epoch":"e1","seq":3}"#);
        let c: ClientMsg =
            serde_json::from_str(r#"{"type":"resume","epoch":"e1","since":7}"#).expect("parses");
        assert_eq!(
            c,
            ClientMsg::Resume {
                epoch: "e1".into(),
                since: 7
            }
        );
    }

    #[test]
    fn order_requests_refuse_client_prices() {
        let r = serde_json::from_str::<PlaceOrderRequest>(
            r#"{"table_token":"t","items":[{"menu_item_id":"7f1c1d9e-4c55-4f61-9d8f-0d9a3b0a3b21","quantity":1,"price_cents":1}]}"#,
        );
        assert!(r.is_err());
    }
}
