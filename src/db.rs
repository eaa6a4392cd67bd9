//! Database set-up: create the database when missing, run the embedded migrations, build the pool.

use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::SimpleConnection as _;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt as _;
use scan2order_schema::DbPool;

use crate::config::DatabaseSettings;

/// The SQL migrations of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Splits `postgres://…/name?opts` into the URL of the `postgres` maintenance database and `name`.
pub fn split_database_url(url: &str) -> Option<(String, String)> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base.rfind('/')?;
    if slash < base.find("://")? + 3 {
        return None;
    }
    let name = base[slash + 1..].to_string();
    if name.is_empty() {
        return None;
    }
    let mut admin = format!("{}/postgres", &base[..slash]);
    if let Some(q) = query {
        admin.push('?');
        admin.push_str(q);
    }
    Some((admin, name))
}

#[derive(diesel::QueryableByName)]
struct Exists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    exists: bool,
}

/// Creates the database named in `url` when it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let (admin_url, name) = split_database_url(url).context("database.url has no database name")?;
    anyhow::ensure!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "database names may hold letters, digits, '_' and '-' only"
    );
    let mut conn = AsyncPgConnection::establish(&admin_url)
        .await
        .context("connecting to the postgres maintenance database")?;
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result(&mut conn)
            .await?;
    if !found.exists {
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        tracing::info!(database = %name, "created database");
    }
    Ok(())
}

/// Makes the configured database ready to serve: creates it when missing (if
/// `database.create_if_missing`), then applies every pending migration. Every command that touches the
/// database starts here.
pub async fn prepare(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let url = settings.url.expose();
    if settings.create_if_missing {
        create_database_if_missing(url).await?;
    }
    run_migrations(url).await
}

/// Applies every pending migration. Runs on a plain thread with its own runtime: the migration harness
/// blocks, and blocking on actix's current-thread runtime from inside it would stall it.
pub async fn run_migrations(url: &str) -> anyhow::Result<()> {
    let url = url.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(migrate_blocking(&url));
    });
    rx.await.context("migration thread")?
}

fn migrate_blocking(url: &str) -> anyhow::Result<()> {
    {
        let mut conn =
            <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(url)
                .context("connecting to run migrations")?;
        conn.batch_execute("SET lock_timeout = '60s'")?;
        let applied = conn
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| anyhow::anyhow!("migrations failed: {e}"))?;
        for m in applied {
            tracing::info!(migration = %m, "applied migration");
        }
        Ok(())
    }
}

/// How long Postgres lets one of our sessions sit idle inside a transaction before it ends the session.
/// The engine's transactions send their statements back to back, so they are never idle for long; a
/// node that was paused or cut off in the middle of one is, and the lease rows it holds locked would
/// keep another node from taking its restaurants over until it woke. Ending that transaction (it
/// commits nothing) lets the takeover proceed after the lease expires.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 2_000;

pub async fn build_pool(settings: &DatabaseSettings) -> anyhow::Result<DbPool> {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    config.custom_setup = Box::new(|url| {
        let url = url.to_string();
        async move {
            let mut conn = AsyncPgConnection::establish(&url).await?;
            diesel::sql_query(format!(
                "SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}"
            ))
            .execute(&mut conn)
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.expose(),
        config,
    );
    let pool = Pool::builder()
        .max_size(settings.pool_size)
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .build(manager)
        .await
        .context("building the database pool")?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_split_into_maintenance_url_and_name() {
        assert_eq!(
            split_database_url("postgres://postgres@127.0.0.1:5432/scan2order"),
            Some((
                "postgres://postgres@127.0.0.1:5432/postgres".into(),
                "scan2order".into()
            ))
        );
        assert_eq!(
            split_database_url("postgres://u:p@h/db?sslmode=disable"),
            Some((
                "postgres://u:p@h/postgres?sslmode=disable".into(),
                "db".into()
            ))
        );
        assert_eq!(split_database_url("postgres://h"), None);
    }
}
