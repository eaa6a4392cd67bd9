//! How the domain's named values are stored: [`OrderStatus`] and [`Role`] are `text` columns holding
//! their names (each column has a CHECK constraint listing them), read and written as the types
//! themselves, so no row carries a status or a role as a bare string and nothing parses one with a
//! fallback. A name the type does not know is a read error, never a silent default.

use std::io::Write as _;

use diesel::deserialize::{self, FromSql};
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;

use crate::domain::OrderStatus;
use crate::wire::Role;

macro_rules! stored_by_name {
    ($t:ty) => {
        impl ToSql<Text, Pg> for $t {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                out.write_all(self.as_str().as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<Text, Pg> for $t {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                let name = std::str::from_utf8(value.as_bytes())?;
                name.parse()
                    .map_err(|_| format!(concat!("unknown ", stringify!($t), " {:?}"), name).into())
            }
        }
    };
}

stored_by_name!(OrderStatus);
stored_by_name!(Role);
