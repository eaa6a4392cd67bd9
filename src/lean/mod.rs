//! # The lean socket transport
//!
//! Why: over actix-web, an upgraded connection keeps actix-http's h1 dispatcher and its two 8 KiB
//! buffers for as long as the socket lives, ~16 KB per idle socket. Here sockets leave actix-web at
//! accept time and an idle socket holds no buffer at all.
//!
//! How: [`crate::startup`] runs its own acceptor (actix-server) instead of `HttpServer`. Each worker
//! builds the actix-web app once, as an actix-http service, and [`service`] routes every accepted
//! connection by peeking at its first bytes:
//! - `GET /ws/…` goes to the lean path: [`handshake`] reads the request head into a temporary buffer,
//!   applies the socket-connect rate limit and the security headers (what actix-web's middleware does
//!   for `/ws/`), decides with `routes::sockets::resolve` (one implementation for both transports),
//!   answers 101 and starts the [`SocketSession`](scan2order_actors::session::SocketSession) actor on
//!   the worker; then [`conn::Connection`], one task per socket, carries frames between the socket and
//!   the session's seam;
//! - everything else is handed, untouched, to actix-http, so HTTP keeps actix-web's full performance
//!   (and a `/ws/` request on a reused keep-alive connection still works, through the actix-ws routes).
//!
//! With `sockets.transport = "actix-ws"` every connection goes to actix-web (the reference transport,
//! for benchmarks).

use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix_http::error::DispatchError;
use actix_service::{fn_factory, fn_service, Service, ServiceFactory};
use scan2order_actors::sink::SocketSink;
use tokio::net::TcpStream;

use crate::config::SocketTransport;
use crate::context::AppContext;

pub mod conn;
pub mod frame;
pub mod handshake;

use conn::Connection;
use handshake::Outcome;

/// The request line prefix that takes a connection off actix-web.
const SOCKET_PREFIX: &[u8] = b"GET /ws/";

/// The per-worker connection service: lean sockets, and `http` (actix-web as an actix-http service)
/// for everything else.
pub fn service<F>(
    http: F,
    ctx: AppContext,
    transport: SocketTransport,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    F: ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()>
        + 'static,
    F::Service: 'static,
    F::Future: 'static,
{
    let ctx = Rc::new(ctx);
    fn_factory(move || {
        let http = http.new_service(());
        let ctx = ctx.clone();
        async move {
            let http = Rc::new(http.await?);
            Ok::<_, ()>(fn_service(move |io: TcpStream| {
                let fut = route(io, http.clone(), ctx.clone(), transport);
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    eprintln!(
                        "SIZES route={} conn={} sleep={} stream={}",
                        std::mem::size_of_val(&fut),
                        std::mem::size_of::<Connection>(),
                        std::mem::size_of::<tokio::time::Sleep>(),
                        std::mem::size_of::<TcpStream>()
                    )
                });
                fut
            }))
        }
    })
}

async fn route<S>(
    io: TcpStream,
    http: Rc<S>,
    ctx: Rc<AppContext>,
    transport: SocketTransport,
) -> Result<(), ()>
where
    S: Service<TcpStream, Response = (), Error = DispatchError>,
{
    if transport == SocketTransport::Lean && is_socket_request(&io).await {
        drop(http);
        if let Some(conn) = Box::pin(open(io, ctx)).await {
            conn.await;
        }
    } else {
        drop(ctx);
        // Boxed: the HTTP dispatcher's future is large, and sockets should not pay for its room.
        let _ = Box::pin(http.call(io)).await;
    }
    Ok(())
}

/// Whether the connection starts with `GET /ws/`. Peeking leaves the bytes for whoever serves it.
async fn is_socket_request(io: &TcpStream) -> bool {
    let mut buf = [0u8; SOCKET_PREFIX.len()];
    let started = Instant::now();
    loop {
        match io.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if n >= SOCKET_PREFIX.len() => return buf == SOCKET_PREFIX,
            Ok(n) if buf[..n] != SOCKET_PREFIX[..n] => return false,
            Ok(_) => {
                // A prefix of it: the request line came in pieces. Rare; wait for the rest.
                if started.elapsed() > handshake::HEAD_TIMEOUT {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// The handshake, then the session and its connection (or nothing, when refused).
async fn open(io: TcpStream, ctx: Rc<AppContext>) -> Option<Connection> {
    let peer = io.peer_addr().ok();
    match handshake::handshake(&io, peer, &ctx).await {
        Outcome::Session(spec, early) => {
            let _ = io.set_nodelay(true);
            let settings = &ctx.settings.sockets;
            let (sink, rx) = SocketSink::channel(settings.outbound_queue);
            let session = spec.into_session(sink, settings).start();
            Some(Connection::new(
                io,
                rx,
                session,
                settings.max_frame_bytes,
                early,
            ))
        }
        Outcome::Refused(code, why) => {
            conn::refuse(io, code, why).await;
            None
        }
        Outcome::Done => None,
    }
}
