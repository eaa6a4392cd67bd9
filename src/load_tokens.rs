//! `scan2order load-tokens --count N --out FILE`: an **operator tool for load tests**, not part of
//! serving guests. It mints N customer sessions without the WhatsApp round trip a real guest makes: each
//! gets a fresh random token (only its SHA-256 is stored, as for real sessions) and a distinct test
//! phone number in the unassigned country code +999, so no message can ever reach a real person. The
//! file gets one `token phone` line per session; `scan2order-load --tokens FILE` reads it.
//!
//! Anyone holding the file can place orders as those test numbers until the sessions expire
//! (`auth.customer_session_days`): keep it with the load-test run and delete it afterwards.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use chrono::{Duration as ChronoDuration, Utc};
use scan2order_schema::models::CustomerSession;

use crate::config::Settings;
use crate::db;
use scan2order_schema::tokens::{new_session_token, token_hash};

/// Largest batch minted in one call.
pub const MAX_COUNT: usize = 2_000_000;

/// The n-th load-test phone number: `+999` then nine digits.
pub fn test_phone(n: usize) -> String {
    format!("+999{n:09}")
}

/// Mints `count` customer sessions and writes `token phone` lines to `out`.
pub async fn run(settings: Settings, count: usize, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_COUNT).contains(&count),
        "--count must be between 1 and {MAX_COUNT}"
    );
    let url = settings.database.url.expose();
    if settings.database.create_if_missing {
        db::create_database_if_missing(url).await?;
    }
    db::run_migrations(url).await?;
    let pool = db::build_pool(&settings.database).await?;
    let now = Utc::now();
    let expires_at = now + ChronoDuration::days(settings.auth.customer_session_days);
    // A per-run offset keeps the numbers of two runs apart (phones need not be unique, but distinct
    // numbers make every order traceable to one minted session).
    let offset = (now.timestamp() as usize % 1000) * 1_000_000;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    writeln!(
        file,
        "# scan2order load-tokens: {count} customer sessions for LOAD TESTS ONLY, expiring {expires_at}"
    )?;
    let mut conn = pool.get().await?;
    let mut rows = Vec::with_capacity(count.min(10_000));
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
        if rows.len() == 10_000 {
            CustomerSession::insert_many(&rows, &mut conn).await?;
            rows.clear();
        }
    }
    CustomerSession::insert_many(&rows, &mut conn).await?;
    file.flush()?;
    eprintln!(
        "minted {count} load-test customer sessions into {} (operator tool: keep the file private, delete it after the run)",
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
