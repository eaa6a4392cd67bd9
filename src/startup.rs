//! Building and running the application. [`Application::build`] prepares the database, starts the engine
//! and binds the listener (port 0 works, for tests); [`AppHandle::shutdown`] is the explicit shutdown that
//! SIGTERM and tests both use.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::{HttpService, KeepAlive};
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App};
use scan2order_actors::cluster::bus::{Bus, BusConfig};
use scan2order_actors::notifier::NotifierActor;
use scan2order_actors::restaurant::RestaurantConfig;
use scan2order_actors::shard::{EngineConfig, ShardSupervisor};
use tokio::sync::Notify;

use crate::config::Settings;
use crate::context::AppContext;
use crate::limits::{self, RateLimits};
use crate::{db, error, lean, routes, security_headers, seed, whatsapp};

/// How long in-flight requests get to finish once shutdown has begun.
const SHUTDOWN_GRACE_S: u64 = 10;
/// Connections the kernel queues for accepting (capped by `net.core.somaxconn`). `std`'s default of 128
/// overflows in a reconnect storm: the dropped SYNs are retried only after a second.
const LISTEN_BACKLOG: i32 = 4096;
/// How long shutdown waits for sockets to finish their closing handshakes (a socket still in its resume
/// grace is closed when it tries to subscribe; a closing handshake takes at most `lean::CLOSE_TIMEOUT`).
const SOCKET_DRAIN: Duration = Duration::from_secs(5);

pub struct Application {
    port: u16,
    server: Server,
    handle: AppHandle,
}

/// Stops the application from anywhere (signal handler, tests).
#[derive(Clone)]
pub struct AppHandle {
    server: ServerHandle,
    /// Open lean sockets: shutdown waits for their closing handshakes.
    sockets: lean::LiveSockets,
    ctx: AppContext,
    notifier: Arc<Arbiter>,
    /// The listening socket (a second handle to it): shutdown stops it listening at once.
    listener: Arc<TcpListener>,
}

impl Application {
    /// Prepares the database (create, migrate, seed the demo when asked), starts shards, writers and the
    /// notifier, and binds the HTTP listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        db::prepare(&settings.database).await?;
        let pool = db::build_pool(&settings.database).await?;
        if settings.demo.seed_on_start {
            if let Some(lines) = seed::seed_if_empty(&pool, settings.public_base_url()).await? {
                println!("Seeded the demo restaurants:");
                for line in lines {
                    println!("{line}");
                }
            }
        }
        crate::metrics::spawn_upkeep(crate::metrics::UPKEEP_EVERY);
        let outbox_wake = Arc::new(Notify::new());
        let engine = ShardSupervisor::start(
            pool.clone(),
            EngineConfig {
                shards: settings.shards(),
                write_timeout: settings.write_timeout(),
                restaurant: RestaurantConfig {
                    ring_size: settings.engine.ring_size,
                    recent_keys: settings.engine.recent_keys,
                    passivate_after: Duration::from_secs(settings.engine.passivate_after_s),
                },
                node: settings.node(),
            },
            outbox_wake.clone(),
        );
        if settings.cluster.enabled {
            let bus = Bus::connect(&BusConfig {
                url: settings.cluster.nats_url.clone(),
                subject_prefix: settings.cluster.subject_prefix.clone(),
                node_id: engine.node_id().to_string(),
            })
            .await?;
            engine.join_fleet(bus);
            tracing::info!(node_id = engine.node_id(), nats = %settings.cluster.nats_url, "joined the fleet");
        }
        let sender = whatsapp::sender_from(&settings.whatsapp)?;
        let notifier_arbiter = Arbiter::new();
        {
            let (pool, sender, wake) = (pool.clone(), sender.clone(), outbox_wake.clone());
            let templates = whatsapp::templates_from(&settings.whatsapp);
            let poll = Duration::from_millis(settings.whatsapp.outbox_poll_ms);
            NotifierActor::start_in_arbiter(&notifier_arbiter.handle(), move |_| {
                NotifierActor::new(pool, sender, templates, wake, poll)
            });
        }
        let limits = Arc::new(RateLimits::new(&settings.rate_limits)?);
        limits::spawn_eviction(limits.clone());
        let settings = Arc::new(settings);
        let ctx = AppContext {
            pool,
            engine,
            settings: settings.clone(),
            limits,
            sender,
            sessions: Arc::new(crate::session_cache::SessionCaches::new(
                std::time::Duration::from_secs(settings.auth.session_cache_ttl_s),
                settings.auth.session_cache_entries,
            )),
        };
        if let Some(notices) = ctx.engine.fleet_notices() {
            actix::spawn(crate::session_cache::follow_fleet(
                ctx.sessions.clone(),
                notices,
            ));
        }
        let listener = bind(settings.http.host.as_str(), settings.http.port)?;
        let port = listener.local_addr()?.port();
        let body_limit = settings.http.body_limit_bytes;
        let app_ctx = ctx.clone();
        // Our own acceptor instead of `HttpServer`: each worker routes a connection either to the lean
        // socket transport or, untouched, to actix-web served by actix-http exactly as `HttpServer`
        // would (see `crate::lean`).
        let builder = Server::build();
        let sockets = lean::LiveSockets::default();
        let live = sockets.clone();
        let shutdown_signal = builder.graceful_shutdown_signal();
        let transport = settings.sockets.transport;
        let local_addr = listener.local_addr()?;
        let listening = Arc::new(listener.try_clone()?);
        let server = builder
            .listen("scan2order", listener, move || {
                let app = App::new()
                    .wrap(from_fn(crate::drain::refuse_while_draining))
                    .wrap(from_fn(limits::limit))
                    .wrap(security_headers::default_headers())
                    .wrap(from_fn(crate::telemetry::request_span))
                    .app_data(web::Data::new(app_ctx.clone()))
                    // The rate-limit middleware reads its limiters on their own.
                    .app_data(web::Data::from(app_ctx.limits.clone()))
                    .app_data(
                        web::JsonConfig::default()
                            .limit(body_limit)
                            .content_type_required(true)
                            .error_handler(error::json_error),
                    )
                    .app_data(web::PayloadConfig::default().limit(body_limit))
                    .app_data(web::PathConfig::default().error_handler(error::path_error))
                    .app_data(web::QueryConfig::default().error_handler(error::query_error))
                    .configure(routes::configure)
                    .default_service(web::to(routes::not_found));
                let signal = shutdown_signal.clone();
                let http = HttpService::build()
                    .graceful_shutdown_signal(move || {
                        let signal = signal.clone();
                        async move { signal.notified().await }
                    })
                    .keep_alive(KeepAlive::default())
                    .client_request_timeout(Duration::from_secs(5))
                    .client_disconnect_timeout(Duration::from_secs(1))
                    .h1_allow_half_closed(true)
                    .local_addr(local_addr)
                    // `AppConfig`'s host only feeds URL generation, which nothing here uses.
                    .finish(map_config(
                        app.into_factory().map_err(|e: actix_web::Error| {
                            security_headers::with_security_headers(e.error_response())
                        }),
                        |_| AppConfig::default(),
                    ))
                    .tcp();
                lean::service(http, app_ctx.clone(), transport, live.clone())
            })?
            .workers(settings.workers())
            .disable_signals()
            .shutdown_timeout(SHUTDOWN_GRACE_S)
            .run();
        let handle = AppHandle {
            server: server.handle(),
            sockets,
            ctx,
            notifier: Arc::new(notifier_arbiter),
            listener: listening,
        };
        tracing::info!(
            port,
            database = %settings.database.redacted_url(),
            shards = settings.shards(),
            workers = settings.workers(),
            "Scan2Order listening"
        );
        Ok(Application {
            port,
            server,
            handle,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    pub fn context(&self) -> AppContext {
        self.handle.ctx.clone()
    }

    /// Serves until [`AppHandle::shutdown`] (or the server stops by itself).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

impl AppHandle {
    /// The running application's context (the engine's counters and stats, for operators and tests).
    pub fn context(&self) -> AppContext {
        self.ctx.clone()
    }

    /// Clean shutdown: stop accepting, commit everything queued, close sockets with 1001, finish
    /// in-flight requests, stop.
    pub async fn shutdown(&self) {
        tracing::info!("shutting down");
        // New writes get a retryable 503 from here on, so the queues below drain at once.
        self.ctx.engine.begin_drain();
        self.server.pause().await;
        // Stop listening (on Linux, shutting down the read side of a listening socket does that): new
        // connections are refused at once, so clients go to another process — or to this one's
        // successor, which can bind the port while this one drains — instead of waiting in a backlog
        // nobody accepts from until this process exits.
        crate::telemetry::listener_closed_on_purpose();
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Read);
        self.ctx.engine.shutdown().await;
        // The engine told every socket to close with 1001; let their closing handshakes finish (the
        // acceptor does not count lean sockets as connections to wait for).
        let deadline = tokio::time::Instant::now() + SOCKET_DRAIN;
        while self.sockets.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.server.stop(true).await;
        self.notifier.stop();
        tracing::info!("stopped");
    }

    /// Immediate stop without draining (tests tearing down; a crash-like stop).
    pub fn stop_now(&self) {
        drop(self.server.stop(false));
        self.ctx.engine.stop_now();
        self.notifier.stop();
    }
}

/// `create-admin`: a new admin account (the password is hashed with argon2id; never printed).
pub async fn create_admin(
    settings: Settings,
    username: String,
    password: String,
) -> anyhow::Result<()> {
    use diesel_async::RunQueryDsl;
    use scan2order_schema::models::StaffUserRow;
    anyhow::ensure!(
        (3..=64).contains(&username.len())
            && username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "usernames are 3 to 64 letters, digits, '.', '_' or '-'"
    );
    anyhow::ensure!(
        password.chars().count() >= 10,
        "admin passwords need at least 10 characters"
    );
    db::prepare(&settings.database).await?;
    let pool = db::build_pool(&settings.database).await?;
    let mut conn = pool.get().await?;
    anyhow::ensure!(
        StaffUserRow::by_username(&mut conn, &username)
            .await?
            .is_none(),
        "a user named {username} exists already"
    );
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password)).await??;
    diesel::insert_into(scan2order_schema::schema::staff_users::table)
        .values(StaffUserRow {
            id: uuid::Uuid::new_v4(),
            username: username.clone(),
            password_hash: hash,
            role: scan2order_schema::wire::Role::Admin,
            restaurant_id: None,
            created_at: chrono::Utc::now(),
        })
        .execute(&mut conn)
        .await?;
    println!("admin {username} created");
    Ok(())
}

/// The listening socket: address reuse (a restart need not wait for `TIME_WAIT`) and a deep accept queue.
/// Like `TcpListener::bind`, the first address `host` resolves to that binds wins.
fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("http.host {host:?} does not resolve"),
    );
    for addr in (host, port).to_socket_addrs()? {
        let bound = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .and_then(|socket| {
                socket.set_reuse_address(true)?;
                socket.bind(&addr.into())?;
                socket.listen(LISTEN_BACKLOG)?;
                Ok(socket)
            });
        match bound {
            Ok(socket) => return Ok(socket.into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}
