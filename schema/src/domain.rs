//! Domain types shared by every crate: typed ids, order statuses and their transitions, phone numbers,
//! and the limits of PROTOCOL.md.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Lines per order (PROTOCOL.md limits).
pub const MAX_ORDER_LINES: usize = 50;
/// Quantity of one line.
pub const MIN_QUANTITY: i32 = 1;
pub const MAX_QUANTITY: i32 = 99;
/// Characters in a line note or an order note.
pub const MAX_NOTE_CHARS: usize = 200;
/// Characters in an `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 128;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn get(self) -> Uuid {
                self.0
            }
        }
        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A restaurant (tenant).
    RestaurantId
);
id_type!(
    /// A table of one restaurant.
    TableId
);
id_type!(
    /// An order.
    OrderId
);
id_type!(
    /// A dish on the menu.
    MenuItemId
);
id_type!(
    /// A menu category.
    CategoryId
);
id_type!(
    /// A staff account (chef or admin).
    StaffId
);
id_type!(
    /// A choice on a dish (a size, a doneness, extras).
    OptionGroupId
);
id_type!(
    /// One option of a choice.
    MenuOptionId
);

/// The 14 allergens EU and UK law makes restaurants declare, in the order menus list them.
pub const ALLERGENS: [&str; 14] = [
    "gluten",
    "crustaceans",
    "eggs",
    "fish",
    "peanuts",
    "soybeans",
    "milk",
    "nuts",
    "celery",
    "mustard",
    "sesame",
    "sulphites",
    "lupin",
    "molluscs",
];

/// Options chosen on one order line.
pub const MAX_LINE_OPTIONS: usize = 30;

/// Checks allergen codes (each one of [`ALLERGENS`]): the codes without repeats, in the order of
/// [`ALLERGENS`]; otherwise the first unknown code.
pub fn allergen_codes(codes: &[String]) -> Result<Vec<String>, String> {
    if let Some(bad) = codes.iter().find(|c| !ALLERGENS.contains(&c.as_str())) {
        return Err(bad.clone());
    }
    Ok(ALLERGENS
        .iter()
        .filter(|a| codes.iter().any(|c| c == *a))
        .map(|a| a.to_string())
        .collect())
}

/// Where an order is in the kitchen. `served` and `cancelled` are final. Stored by name
/// ([`crate::stored`]).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Placed,
    Accepted,
    Preparing,
    Ready,
    Served,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Placed,
        OrderStatus::Accepted,
        OrderStatus::Preparing,
        OrderStatus::Ready,
        OrderStatus::Served,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Accepted => "accepted",
            OrderStatus::Preparing => "preparing",
            OrderStatus::Ready => "ready",
            OrderStatus::Served => "served",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Served and cancelled orders leave the kitchen's live list.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Served | OrderStatus::Cancelled)
    }

    /// Position along the kitchen flow; `None` for cancelled.
    fn rank(self) -> Option<u8> {
        match self {
            OrderStatus::Placed => Some(0),
            OrderStatus::Accepted => Some(1),
            OrderStatus::Preparing => Some(2),
            OrderStatus::Ready => Some(3),
            OrderStatus::Served => Some(4),
            OrderStatus::Cancelled => None,
        }
    }

    /// `placed → accepted → preparing → ready → served` with forward skips; `cancelled` from `placed`,
    /// `accepted` or `preparing`. Everything else is an invalid transition.
    pub fn can_become(self, next: OrderStatus) -> bool {
        if self.is_final() {
            return false;
        }
        match (self.rank(), next.rank()) {
            (Some(from), Some(to)) => to > from,
            (Some(from), None) => from <= 2,
            _ => false,
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown order status")]
pub struct UnknownStatus;

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or(UnknownStatus)
    }
}

/// A phone number in E.164: `+` then 8–15 digits, the first not zero.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Phone(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("phone must be in E.164 form: + then 8 to 15 digits")]
pub struct InvalidPhone;

impl Phone {
    /// Accepts spaces, dashes, dots and parentheses between digits and normalises them away.
    pub fn parse(raw: &str) -> Result<Phone, InvalidPhone> {
        let trimmed = raw.trim();
        let rest = trimmed.strip_prefix('+').ok_or(InvalidPhone)?;
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(InvalidPhone),
            }
        }
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(InvalidPhone);
        }
        Ok(Phone(format!("+{digits}")))
    }

    /// Trusted constructor for values read back from the database.
    pub fn from_stored(s: String) -> Phone {
        Phone(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without `+`, as the WhatsApp Cloud API wants them.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// What the kitchen sees: country prefix and last three digits, `+44•••••••123`.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

/// Masks a stored E.164 number: the `+`, two leading digits, bullets, the last three digits.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() < 6 {
        return "•".repeat(digits.len().max(3));
    }
    let head: String = digits[..2].iter().collect();
    let tail: String = digits[digits.len() - 3..].iter().collect();
    format!("+{head}{}{tail}", "•".repeat(digits.len() - 5))
}

impl TryFrom<String> for Phone {
    type Error = InvalidPhone;

    fn try_from(raw: String) -> Result<Phone, InvalidPhone> {
        Phone::parse(&raw)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Logs see the masked form only.
        write!(f, "Phone({})", self.masked())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// True when `s` holds no control characters other than newline and tab.
pub fn is_clean_text(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_skips_are_allowed_and_final_states_are_final() {
        use OrderStatus::*;
        assert!(Placed.can_become(Accepted));
        assert!(Placed.can_become(Ready));
        assert!(Ready.can_become(Served));
        assert!(!Ready.can_become(Preparing));
        assert!(!Placed.can_become(Placed));
        assert!(Preparing.can_become(Cancelled));
        assert!(!Ready.can_become(Cancelled));
        assert!(!Served.can_become(Cancelled));
        assert!(!Cancelled.can_become(Placed));
    }

    #[test]
    fn phones_are_normalised_and_masked() {
        let p = Phone::parse("+44 7700-900 123").expect("valid");
        assert_eq!(p.as_str(), "+447700900123");
        assert_eq!(p.digits(), "447700900123");
        assert_eq!(p.masked(), "+44•••••••123");
        assert_eq!(format!("{p:?}"), "Phone(+44•••••••123)");
        assert!(Phone::parse("447700900123").is_err());
        assert!(Phone::parse("+1234567").is_err());
        assert!(Phone::parse("+1234567890123456").is_err());
        assert!(Phone::parse("+44 77a").is_err());
        assert!(Phone::parse("+0123456789").is_err());
    }

    #[test]
    fn statuses_round_trip_through_strings() {
        for s in OrderStatus::ALL {
            assert_eq!(s.as_str().parse::<OrderStatus>().ok(), Some(s));
        }
        assert!("eaten".parse::<OrderStatus>().is_err());
    }
}

#[cfg(test)]
mod allergen_tests {
    use super::*;

    #[test]
    fn allergen_codes_are_checked_deduplicated_and_ordered() {
        let codes = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            allergen_codes(&codes(&["milk", "gluten", "milk"])),
            Ok(codes(&["gluten", "milk"]))
        );
        assert_eq!(
            allergen_codes(&codes(&["milk", "Gluten"])),
            Err("Gluten".to_string())
        );
        assert_eq!(allergen_codes(&[]), Ok(Vec::new()));
    }
}
