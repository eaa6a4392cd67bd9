//! Bounded memory: a table socket whose client stops reading is closed with 1013 once its outbound queue
//! overflows, while every other socket keeps receiving everything; the slow client can then resume.

use std::collections::HashSet;

use futures_util::future::join_all;
use scan2order_schema::domain::OrderId;
use scan2order_schema::wire::{Order, ServerMsg};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::MaybeTlsStream;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TableFx, TestApp, WsClient, WsEnd};

/// Outbound frames a socket may have queued in this test.
const QUEUE: usize = 8;
/// Orders placed at once while waiting for the overflow.
const BATCH: usize = 4;
/// Orders after which the test gives up waiting for the overflow.
const MAX_ORDERS: usize = 600;

/// A client socket with a tiny kernel receive buffer that, unless read, soon stops the server writing.
async fn slow_table_socket(app: &TestApp, table: &TableFx) -> WsClient {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(1024).expect("SO_RCVBUF");
    let tcp = socket
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .expect("connect");
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .max_message_size(Some(1 << 24));
    let (stream, _) = tokio_tungstenite::client_async_with_config(
        app.ws_url(&format!("/ws/table/{}", table.token)),
        MaybeTlsStream::Plain(tcp),
        Some(config),
    )
    .await
    .expect("handshake");
    WsClient { stream }
}

/// The largest order the contract allows, in bytes: 50 lines with 200-character notes of 3-byte
/// characters, about 35 KB per `order_created` event.
fn big_order(app_table: &TableFx, item: Uuid) -> Value {
    let line = json!({"menu_item_id": item, "quantity": 1, "note": "€".repeat(200)});
    json!({"table_token": app_table.token, "items": vec![line; 50]})
}

/// Reads order events until the menu change that marks the end of the test's traffic; gives the socket
/// back, still open.
async fn orders_until_menu_change(mut socket: WsClient) -> (Vec<OrderId>, WsClient) {
    let mut ids = Vec::new();
    loop {
        match socket.next().await {
            ServerMsg::OrderCreated { order, .. } => ids.push(order.id),
            ServerMsg::MenuItem { .. } => return (ids, socket),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[actix_web::test]
async fn a_table_socket_that_stops_reading_is_closed_with_1013_while_the_others_keep_receiving() {
    let app = spawn_app_with(|s| s.sockets.outbound_queue = QUEUE).await;
    let r = app.restaurant("roma", 2, 1).await;
    let table = &r.tables[0];
    let chef = app.login_chef(&r).await;
    let guest = app.verify_phone("+447700900123").await;

    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    let mut healthy = app.table_socket(&table.token, "").await;
    healthy.hello_snapshot().await;
    let mut slow = slow_table_socket(&app, table).await;
    let (epoch, _, _) = slow.hello_snapshot().await;
    let stats = app.restaurant_stats(r.id).await.expect("active");
    assert_eq!(stats.table_sockets, 2);
    let kitchen_reader = actix_web::rt::spawn(orders_until_menu_change(kitchen));
    let healthy_reader = actix_web::rt::spawn(orders_until_menu_change(healthy));

    // The slow client reads nothing more. Big orders go out until the server drops it.
    let body = big_order(table, r.items[0].id);
    let mut placed: Vec<Order> = Vec::new();
    loop {
        let batch = join_all((0..BATCH).map(|_| async {
            let res = app
                .place_order_raw(&guest, &Uuid::new_v4().to_string(), &body)
                .await;
            assert_eq!(res.status(), 201);
            res.json::<Order>().await.expect("order")
        }))
        .await;
        placed.extend(batch);
        let stats = app.restaurant_stats(r.id).await.expect("active");
        if stats.table_sockets == 1 {
            break;
        }
        assert!(
            placed.len() < MAX_ORDERS,
            "the slow socket was never dropped after {} orders",
            placed.len()
        );
    }
    // The server let go of it at once; reading again now shows what the client was told.
    let slow_reader = actix_web::rt::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match slow.next_event().await {
                WsEnd::Message(m) => match *m {
                    ServerMsg::OrderCreated { seq, order } => seen.push((seq, order.id)),
                    other => panic!("unexpected {other:?}"),
                },
                WsEnd::Closed(code) => return (seen, code),
            }
        }
    });

    let res = app.set_available(&chef, r.items[1].id, false).await;
    assert_eq!(res.status(), 200);
    let placed_set: HashSet<OrderId> = placed.iter().map(|o| o.id).collect();
    let mut still_open = Vec::new();
    for (who, reader) in [
        ("kitchen", kitchen_reader),
        ("healthy table", healthy_reader),
    ] {
        let (seen, socket) = reader.await.expect("reader");
        still_open.push(socket);
        assert_eq!(seen.len(), placed.len(), "{who} got every order once");
        assert_eq!(
            seen.iter().copied().collect::<HashSet<_>>(),
            placed_set,
            "{who} got every order"
        );
    }

    let (seen, code) = slow_reader.await.expect("slow reader");
    assert_eq!(
        code,
        Some(1013),
        "the slow consumer is told why it was closed"
    );
    assert!(seen.len() < placed.len(), "the slow socket fell behind");
    let seen_ids: Vec<OrderId> = seen.iter().map(|(_, id)| *id).collect();
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seen.len() as u64).collect::<Vec<_>>(),
        "what the slow socket got before the close has no gaps"
    );
    let stats = app.restaurant_stats(r.id).await.expect("active");
    assert_eq!(stats.table_sockets, 1, "only the healthy socket is left");
    eprintln!(
        "slow consumer dropped after {} orders; it had received {}",
        placed.len(),
        seen.len()
    );

    // Reconnecting and resuming from the last event it got brings the slow client up to date.
    let since = seen.last().map_or(0, |(s, _)| *s);
    let mut again = app
        .table_socket(&table.token, &format!("?epoch={epoch}&since={since}"))
        .await;
    assert!(matches!(again.next().await, ServerMsg::Hello { .. }));
    let mut have: HashSet<OrderId> = seen_ids.iter().copied().collect();
    loop {
        match again.next().await {
            ServerMsg::OrderCreated { order, .. } => {
                have.insert(order.id);
            }
            ServerMsg::Snapshot { orders, .. } => {
                // Too much missed to replay: the snapshot is the whole picture.
                have.extend(orders.iter().map(|o| o.id));
                break;
            }
            ServerMsg::MenuItem { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        have, placed_set,
        "after resuming the client has every order"
    );
}

/// Menu toggles after which the small-event test gives up waiting for the overflow. With the default
/// per-socket send buffer (32 KiB, doubled by the kernel) a stalled socket overflows after roughly
/// (64 KiB + its receive buffer) / ~90 B + 256 queued ≈ 1,000 `menu_item` events; with the kernel's
/// autotuning it could absorb up to 4 MiB (~45,000 events) first.
const MAX_TOGGLES: usize = 2500;

#[actix_web::test]
async fn a_stalled_socket_is_dropped_after_a_bounded_backlog_of_small_events() {
    // Production socket settings: default outbound queue and send buffer.
    let app = spawn_app_with(|s| {
        s.sockets.outbound_queue = 256;
        s.sockets.send_buffer_bytes = 32768;
    })
    .await;
    let r = app.restaurant("bounded", 2, 1).await;
    let chef = app.login_chef(&r).await;
    let mut slow = slow_table_socket(&app, &r.tables[0]).await;
    slow.hello_snapshot().await;
    let mut toggles = 0;
    loop {
        let res = app
            .set_available(&chef, r.items[1].id, toggles % 2 == 1)
            .await;
        assert_eq!(res.status(), 200);
        toggles += 1;
        if toggles % 50 == 0 {
            let stats = app.restaurant_stats(r.id).await.expect("active");
            if stats.table_sockets == 0 {
                break;
            }
        }
        assert!(
            toggles < MAX_TOGGLES,
            "a stalled socket absorbed {toggles} events without being dropped"
        );
    }
    // What it was told: everything up to the overflow, then 1013.
    let mut events = 0;
    let code = loop {
        match slow.next_event().await {
            WsEnd::Message(m) => {
                assert!(matches!(*m, ServerMsg::MenuItem { .. }), "{m:?}");
                events += 1;
            }
            WsEnd::Closed(code) => break code,
        }
    };
    assert_eq!(
        code,
        Some(1013),
        "closed as a slow consumer after {events} events"
    );
    assert!(
        events > 0 && events < toggles,
        "{events} of {toggles} delivered before the close"
    );
}
