//! `scan2order-load mint-tokens`: guest sessions for load tests, minted straight into the database the
//! server uses, so a load run can place orders without the WhatsApp round trip a real guest makes. It
//! lives in the load tool, not in the server: a production binary has no way to create a session
//! without a one-time code.
//!
//! Each session gets a fresh random token (only its SHA-256 is stored, as for real sessions) and a
//! distinct test phone number in the unassigned country code +999, so no message can ever reach a real
//! person. The file gets one `token phone` line per session; `--tokens FILE` reads it. Anyone holding
//! the file can place orders as those test numbers until the sessions expire: keep it with the run and
//! delete it afterwards.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{Duration as ChronoDuration, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use scan2order_schema::models::CustomerSession;
use scan2order_schema::tokens::{new_session_token, token_hash};

/// Largest batch minted in one call.
pub const MAX_COUNT: usize = 2_000_000;
/// Rows per INSERT.
const CHUNK: usize = 10_000;

/// The n-th load-test phone number: `+999` then nine digits.
pub fn test_phone(n: usize) -> String {
    format!("+999{n:09}")
}

/// Mints `count` customer sessions valid for `days` into the (migrated) database at `database_url`
/// and writes `token phone` lines to `out`.
pub async fn mint(database_url: &str, count: usize, days: i64, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_COUNT).contains(&count),
        "--count must be between 1 and {MAX_COUNT}"
    );
    anyhow::ensure!(days >= 1, "--days must be at least 1");
    let mut conn = AsyncPgConnection::establish(database_url)
        .await
        .with_context(|| format!("connecting to {database_url}"))?;
    let now = Utc::now();
    let expires_at = now + ChronoDuration::days(days);
    // A per-run offset keeps the numbers of two runs apart (phones need not be unique, but distinct
    // numbers make every order traceable to one minted session).
    let offset = (now.timestamp() as usize % 1000) * 1_000_000;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    writeln!(
        file,
        "# scan2order-load mint-tokens: {count} customer sessions for LOAD TESTS ONLY, expiring {expires_at}"
    )?;
    let mut rows = Vec::with_capacity(count.min(CHUNK));
    for i in 0..count {
        let token = new_session_token();
        let phone = test_phone((offset + i) % 1_000_000_000);
        writeln!(file, "{token} {phone}")?;
        rows.push(CustomerSession {
            token_hash: token_hash(&token),
            phone,
            created_at: now,
            expires_at,
        });
        if rows.len() == CHUNK || i + 1 == count {
            CustomerSession::insert_many(&rows, &mut conn)
                .await
                .context("storing sessions (is the database migrated? `scan2order migrate`)")?;
            rows.clear();
        }
    }
    file.flush()?;
    eprintln!(
        "minted {count} load-test customer sessions into {} (keep the file private, delete it after the run)",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scan2order_schema::domain::Phone;

    #[test]
    fn test_phones_are_valid_e164_and_distinct() {
        let a = test_phone(0);
        let b = test_phone(999_999_999);
        assert_eq!(
            Phone::parse(&a).map(|p| p.as_str().to_string()),
            Ok(a.clone())
        );
        assert!(Phone::parse(&b).is_ok());
        assert_ne!(a, test_phone(1));
    }
}
