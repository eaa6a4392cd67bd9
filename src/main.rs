//! The `scan2order` binary: parse the command line, load settings, set up tracing, run.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use scan2order::config::Settings;
use scan2order::startup::Application;
use scan2order::{db, seed, telemetry};

/// jemalloc, not the system allocator: sockets come and go by the thousand, and glibc's malloc kept
/// the memory of every wave that left (RSS +39 MB per 19,000 sockets connected and closed, with the
/// live heap unchanged) where jemalloc reuses it (BENCHMARKS.md, "Socket churn").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "scan2order",
    version,
    about = "Real-time engine for QR-code ordering at restaurant tables"
)]
struct Cli {
    /// A settings file layered over config/default.toml.
    #[arg(long, global = true, env = "SCAN2ORDER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, sockets and web apps (the default).
    Serve,
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Create the demo restaurants, tables and logins (idempotent) and print them.
    SeedDemo,
    /// Create an admin account; the password comes from SCAN2ORDER_ADMIN_PASSWORD or a prompt.
    CreateAdmin {
        #[arg(long)]
        username: String,
    },
    /// Show each shard's load (restaurants, mailbox depth, messages/s, p99) and the busiest restaurants
    /// of a running server. The admin token comes from --token or SCAN2ORDER_TOKEN.
    Shards {
        /// The server's base URL (default: http://{http.host}:{http.port}).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, env = "SCAN2ORDER_TOKEN", hide_env_values = true)]
        token: String,
        /// Print the raw JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log);
    scan2order::install_crypto_provider();
    let system = actix_web::rt::System::new();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => system.block_on(serve(settings)),
        Command::Migrate => system.block_on(migrate(settings)),
        Command::SeedDemo => system.block_on(seed_demo(settings)),
        Command::CreateAdmin { username } => {
            let password = admin_password()?;
            system.block_on(scan2order::startup::create_admin(
                settings, username, password,
            ))
        }
        Command::Shards { url, token, json } => {
            let url = url
                .unwrap_or_else(|| format!("http://{}:{}", settings.http.host, settings.http.port));
            system.block_on(scan2order::shards_report::run(&url, &token, json))
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let handle = app.handle();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        handle.shutdown().await;
    });
    app.run_until_stopped().await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    db::prepare(&settings.database).await?;
    println!("migrations applied");
    Ok(())
}

async fn seed_demo(settings: Settings) -> anyhow::Result<()> {
    db::prepare(&settings.database).await?;
    let pool = db::build_pool(&settings.database).await?;
    for line in seed::seed_demo(&pool, settings.public_base_url()).await? {
        println!("{line}");
    }
    Ok(())
}

fn admin_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SCAN2ORDER_ADMIN_PASSWORD") {
        return Ok(p);
    }
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "set SCAN2ORDER_ADMIN_PASSWORD or run in a terminal to be prompted"
    );
    eprint!("Password for the new admin: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
