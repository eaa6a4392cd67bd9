//! The physical reference for fan-out: a minimal tokio-tungstenite broadcast server. Every socket gets
//! a `hello`; a `{"type":"fire","item_id":…,"available":…}` text from any client broadcasts one
//! `menu_item` event — the same JSON shape and size as the engine's — serialised once and shared by
//! every connection (as the engine does). `fanout` measures it exactly as it measures the engine
//! (`scan2order-load baseline-server fanout`), so the two figures come from the same client code.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use scan2order_schema::domain::MenuItemId;
use scan2order_schema::wire::ServerMsg;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The trigger a client sends.
#[derive(Debug, Deserialize)]
struct Fire {
    #[serde(rename = "type")]
    kind: String,
    item_id: MenuItemId,
    available: bool,
}

struct Shared {
    tx: broadcast::Sender<Utf8Bytes>,
    seq: AtomicU64,
    config: WebSocketConfig,
}

/// Serves until killed. `read_buffer` sets tungstenite's per-socket read buffer (its default is 128 KiB;
/// the references in DESIGN.md used 4 KiB and 1 KiB).
pub async fn serve(listen: SocketAddr, read_buffer: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        listen.ip().is_loopback(),
        "the baseline server listens on loopback only"
    );
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let (tx, _) = broadcast::channel(64);
    let shared = Arc::new(Shared {
        tx,
        seq: AtomicU64::new(0),
        config: WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .write_buffer_size(0)
            .max_message_size(Some(64 * 1024))
            .max_frame_size(Some(64 * 1024)),
    });
    eprintln!(
        "baseline server on ws://{listen}/ws (pid {}), read buffer {read_buffer} B",
        std::process::id()
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of files and the like: keep serving the sockets we have.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, shared.clone()));
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(shared.config)).await
    else {
        return;
    };
    let mut rx = shared.tx.subscribe();
    let hello = ServerMsg::Hello {
        epoch: "baseline".into(),
        seq: shared.seq.load(Ordering::Acquire),
    };
    let Ok(hello) = serde_json::to_string(&hello) else {
        return;
    };
    if ws.send(Message::text(hello)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(text) => {
                    if ws.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = ws.close(None).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(f) = serde_json::from_str::<Fire>(t.as_str()) {
                        if f.kind == "fire" {
                            let seq = shared.seq.fetch_add(1, Ordering::AcqRel) + 1;
                            let ev = ServerMsg::MenuItem { seq, item_id: f.item_id, available: f.available };
                            if let Ok(s) = serde_json::to_string(&ev) {
                                let _ = shared.tx.send(Utf8Bytes::from(s));
                            }
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
