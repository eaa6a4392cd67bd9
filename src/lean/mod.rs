//! # The lean socket transport
//!
//! Why: over actix-web, an upgraded connection keeps actix-http's h1 dispatcher and its two 8 KiB
//! buffers for as long as the socket lives, ~16 KB per idle socket. Here sockets leave actix-web at
//! accept time and an idle socket holds no buffer at all.
//!
//! How: [`crate::startup`] runs its own acceptor (actix-server) instead of `HttpServer`. Each worker
//! builds the actix-web app once, as an actix-http service, and [`service`] routes every accepted
//! connection by peeking at its first bytes:
//! - `GET /ws/…` goes to the lean path: [`handshake`] reads the request head, applies the
//!   socket-connect rate limit and the security headers (what actix-web's middleware does for `/ws/`),
//!   decides with `socket_admission::resolve` (one implementation for both transports) and answers 101;
//!   then the [`SocketSession`] actor starts on the worker with a [`Connection`] as its stream of inbound
//!   frames. The connection owns the `TcpStream` and also drains the session's sink into it, so a
//!   socket is one actor task and no buffer;
//! - everything else is handed, untouched, to actix-http, so HTTP keeps actix-web's full performance
//!   (and a `/ws/` request on a reused keep-alive connection still works, through the actix-ws routes).
//!
//! With `sockets.transport = "actix-ws"` every connection goes to actix-web (the reference transport,
//! for benchmarks).
//!
//! The acceptor stops counting a lean socket once it is handed to its session; [`LiveSockets`] counts
//! them instead, so that shutdown can wait for their closing handshakes.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::error::DispatchError;
use actix_service::{fn_factory, fn_service, Service, ServiceFactory};
use scan2order_actors::session::{SessionSettings, SocketSession};
use scan2order_actors::sink::SocketSink;
use tokio::net::TcpStream;

use crate::config::SocketTransport;
use crate::context::AppContext;
use crate::socket_admission::session_settings;

pub mod conn;
pub mod decoder;
pub mod frame;
pub mod handshake;

pub use conn::{Connection, LiveSockets};
use handshake::Outcome;

/// The request line prefix that takes a connection off actix-web.
const SOCKET_PREFIX: &[u8] = b"GET /ws/";

/// The per-worker connection service: lean sockets, and `http` (actix-web as an actix-http service)
/// for everything else.
pub fn service<F>(
    http: F,
    ctx: AppContext,
    transport: SocketTransport,
    live: LiveSockets,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = (), InitError = ()>
where
    F: ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()>
        + 'static,
    F::Service: 'static,
    F::Future: 'static,
{
    let worker = Rc::new(Worker {
        session_settings: Arc::new(session_settings(&ctx.settings.sockets)),
        ctx,
        live,
    });
    fn_factory(move || {
        let http = http.new_service(());
        let worker = worker.clone();
        async move {
            let http = Rc::new(http.await?);
            Ok::<_, ()>(fn_service(move |io: TcpStream| {
                route(io, http.clone(), worker.clone(), transport)
            }))
        }
    })
}

/// What a worker's lean sockets share.
struct Worker {
    ctx: AppContext,
    session_settings: Arc<SessionSettings>,
    live: LiveSockets,
}

async fn route<S>(
    io: TcpStream,
    http: Rc<S>,
    worker: Rc<Worker>,
    transport: SocketTransport,
) -> Result<(), ()>
where
    S: Service<TcpStream, Response = (), Error = DispatchError>,
{
    let lean = transport == SocketTransport::Lean;
    // A connection that sends nothing is dropped after the time a request head may take (actix-web
    // would drop it the same way); without this it would wait in `peek` forever.
    let socket = match tokio::time::timeout(handshake::HEAD_TIMEOUT, async {
        lean && is_socket_request(&io).await
    })
    .await
    {
        Ok(socket) => socket,
        Err(_) => return Ok(()),
    };
    if socket {
        Box::pin(open(io, worker)).await;
    } else {
        // Boxed: the HTTP dispatcher's future is large and sockets should not pay for its room.
        let _ = Box::pin(http.call(io)).await;
    }
    Ok(())
}

/// Whether the connection starts with `GET /ws/`. Peeking leaves the bytes for whoever serves it.
async fn is_socket_request(io: &TcpStream) -> bool {
    let mut buf = [0u8; SOCKET_PREFIX.len()];
    loop {
        match io.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => match starts_a_socket(&buf[..n]) {
                Some(socket) => return socket,
                // A prefix of it: the request line came in pieces. Rare; wait for the rest.
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            },
        }
    }
}

/// Whether the first bytes of a connection are a socket request; `None` while they could still be.
pub fn starts_a_socket(first: &[u8]) -> Option<bool> {
    let n = first.len().min(SOCKET_PREFIX.len());
    if first[..n] != SOCKET_PREFIX[..n] {
        Some(false)
    } else if n == SOCKET_PREFIX.len() {
        Some(true)
    } else {
        None
    }
}

/// The handshake, then the session with its connection as its stream of inbound frames.
async fn open(io: TcpStream, worker: Rc<Worker>) {
    let peer = io.peer_addr().ok();
    match handshake::handshake(&io, peer, &worker.ctx).await {
        Outcome::Session(spec, early) => {
            let _ = io.set_nodelay(true);
            let settings = &worker.ctx.settings.sockets;
            if settings.send_buffer_bytes > 0 {
                let _ =
                    socket2::SockRef::from(&io).set_send_buffer_size(settings.send_buffer_bytes);
            }
            let (sink, rx) = SocketSink::channel(settings.outbound_queue);
            let live = worker.live.clone();
            let conn = Connection::new(io, rx, settings.max_frame_bytes, early, live);
            let session = spec.into_session(sink, worker.session_settings.clone());
            SocketSession::create(move |actor_ctx| {
                actor_ctx.add_stream(conn);
                session
            });
        }
        Outcome::Refused(code, why) => conn::refuse(io, code, why).await,
        Outcome::Done => {}
    }
}
