//! The actix-ws socket transport: the reference the lean transport ([`crate::lean`]) is measured against,
//! and the fallback for `/ws/` requests that reach actix-web (a socket opened on a reused keep-alive
//! connection, or every socket when `sockets.transport = "actix-ws"`). It turns the socket into the
//! session seam — a stream of [`Inbound`] frames and a task draining the session's [`SocketSink`] — and
//! nothing else. It costs ~16 KB per idle socket: actix-http keeps its two 8 KiB connection buffers for
//! an upgraded connection.

use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use futures_util::StreamExt;
use scan2order_actors::session::{Inbound, SocketSession};
use scan2order_actors::sink::{Outgoing, SinkReceiver, SocketSink};

use crate::config::SocketSettings;
use crate::socket_admission::{session_settings, SessionSpec};

/// How long a close handshake may wait on a socket that does not read.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Upgrades the request and starts a session actor on this worker.
pub fn start_session(
    req: &HttpRequest,
    body: web::Payload,
    spec: SessionSpec,
    settings: &SocketSettings,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(req, body)?;
    let (sink, rx) = SocketSink::channel(settings.outbound_queue);
    let max = settings.max_frame_bytes;
    let inbound = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max)
        .map(to_inbound);
    actix_web::rt::spawn(write_loop(session, rx));
    let session_settings = std::sync::Arc::new(session_settings(settings));
    SocketSession::create(move |ctx| {
        ctx.add_stream(inbound);
        spec.into_session(sink, session_settings)
    });
    Ok(response)
}

/// Upgrades the request only to close it at once with `code` (bad token, wrong restaurant).
pub fn refuse(
    req: &HttpRequest,
    body: web::Payload,
    code: u16,
    why: &str,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, _stream) = actix_ws::handle(req, body)?;
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: Some(why.to_string()),
    };
    actix_web::rt::spawn(async move {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await;
    });
    Ok(response)
}

fn to_inbound(frame: Result<AggregatedMessage, ProtocolError>) -> Inbound {
    match frame {
        Ok(AggregatedMessage::Text(t)) => Inbound::Text(t.to_string()),
        Ok(AggregatedMessage::Binary(_)) => Inbound::Binary,
        Ok(AggregatedMessage::Ping(p)) => Inbound::Ping(p.to_vec()),
        Ok(AggregatedMessage::Pong(_)) => Inbound::Pong,
        Ok(AggregatedMessage::Close(_)) => Inbound::Closed,
        Err(ProtocolError::Overflow) => Inbound::TooBig,
        Err(_) => Inbound::Closed,
    }
}

async fn close(session: actix_ws::Session, code: u16) {
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: None,
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await;
}

/// Drains the sink into the socket until the sink is dropped or a close is requested.
async fn write_loop(mut session: actix_ws::Session, rx: SinkReceiver) {
    loop {
        let frame = tokio::select! {
            biased;
            code = rx.closed() => return close(session, code).await,
            frame = rx.recv() => frame,
        };
        let sent = match frame {
            None => return close(session, u16::from(CloseCode::Normal)).await,
            Some(Outgoing::Text(text)) => tokio::select! {
                biased;
                code = rx.closed() => return close(session, code).await,
                r = session.text(text) => r,
            },
            Some(Outgoing::Ping) => session.ping(b"").await,
            Some(Outgoing::Pong(p)) => session.pong(&p).await,
        };
        if sent.is_err() {
            return;
        }
    }
}
