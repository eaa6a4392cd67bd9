//! The fleet's bus against a real, private nats-server: a node's subject answers requests from
//! another node, readiness follows NATS going away and coming back, and a node started while NATS is
//! down connects once it is up.

mod support;

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use scan2order_actors::cluster::bus::{Bus, BusConfig};
use support::nats::NatsServer;

const PATIENCE: Duration = Duration::from_secs(15);

fn config(url: &str, node: &str) -> BusConfig {
    BusConfig {
        url: url.to_string(),
        subject_prefix: "s2o-test".to_string(),
        node_id: node.to_string(),
    }
}

/// Waits until `check` holds, asking every 20 ms, for at most [`PATIENCE`].
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Answers every command on the node's subject with "done: {payload}".
async fn serve_node(bus: &Bus) {
    let mut commands = bus
        .client()
        .subscribe(bus.node_subject(bus.node_id()))
        .await
        .expect("subscribe");
    let client = bus.client().clone();
    tokio::spawn(async move {
        while let Some(m) = commands.next().await {
            if let Some(reply) = m.reply {
                let answer = format!("done: {}", String::from_utf8_lossy(&m.payload));
                let _ = client.publish(reply, answer.into()).await;
            }
        }
    });
}

async fn ask(bus: &Bus, node: &str, what: &'static str) -> Option<String> {
    let request = bus.client().request(bus.node_subject(node), what.into());
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        Ok(Ok(m)) => Some(String::from_utf8_lossy(&m.payload).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn a_node_answers_on_its_subject_and_readiness_follows_nats() {
    let mut nats = NatsServer::start();
    let a = Bus::connect(&config(&nats.url(), "node-a"))
        .await
        .expect("bus");
    let b = Bus::connect(&config(&nats.url(), "node-b"))
        .await
        .expect("bus");
    until("both nodes ready", || async {
        a.ready(Duration::from_secs(1)).await && b.ready(Duration::from_secs(1)).await
    })
    .await;
    serve_node(&b).await;
    // A subscription reaches the server on its own connection: the first request may come before it.
    until("node b answers", || async {
        ask(&a, "node-b", "place").await.as_deref() == Some("done: place")
    })
    .await;
    assert_eq!(
        ask(&a, "node-nobody", "place").await,
        None,
        "nobody answers for a node that is not there"
    );
    assert_eq!(
        a.events_subject(uuid::Uuid::nil().into()),
        "s2o-test.events.00000000000000000000000000000000"
    );
    assert_eq!(a.fleet_subject("sessions"), "s2o-test.fleet.sessions");

    // NATS goes away: not ready, and asking fails instead of hanging.
    nats.stop();
    until("node a sees NATS gone", || async {
        !a.ready(Duration::from_millis(200)).await
    })
    .await;
    assert_eq!(ask(&a, "node-b", "place").await, None);

    // It comes back on the same address: both reconnect, node b's subscription with them.
    let _nats = NatsServer::start_on(nats.port);
    until("both nodes ready again", || async {
        a.ready(Duration::from_secs(1)).await && b.ready(Duration::from_secs(1)).await
    })
    .await;
    until("node b answers again", || async {
        ask(&a, "node-b", "status").await.as_deref() == Some("done: status")
    })
    .await;
}

#[tokio::test]
async fn a_node_started_while_nats_is_down_connects_once_it_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let a = Bus::connect(&config(&url, "node-early"))
        .await
        .expect("connect returns while NATS is down");
    assert!(!a.ready(Duration::from_millis(200)).await);
    let _nats = NatsServer::start_on(port);
    until("the early node connects", || async {
        a.ready(Duration::from_secs(1)).await
    })
    .await;
}

/// An answer larger than NATS takes in one message (a kitchen's snapshot of thousands of orders)
/// reaches the asking node whole: parked by the answering node and fetched in pieces.
#[actix_rt::test]
async fn a_forwarded_answer_larger_than_a_nats_message_arrives_whole() {
    use scan2order_actors::cluster::fleet::{answer_commands, Fleet, PIECE};
    use scan2order_actors::cluster::forward::{Envelope, Reply};
    use scan2order_actors::restaurant::GetKitchenInfo;
    use scan2order_schema::domain::RestaurantId;
    use std::sync::Arc;

    let nats = NatsServer::start();
    let owner = Arc::new(Fleet::start(
        Bus::connect(&config(&nats.url(), "owner"))
            .await
            .expect("bus"),
    ));
    let asker = Fleet::start(
        Bus::connect(&config(&nats.url(), "asker"))
            .await
            .expect("bus"),
    );
    // Three pieces and a bit, of text that differs from piece to piece.
    let big: String = (0..3 * PIECE + 1000)
        .map(|i| char::from(b'a' + (i % 251 % 26) as u8))
        .collect();
    let expected = big.clone();
    actix_rt::spawn(answer_commands(owner.clone(), move |payload| {
        let big = big.clone();
        async move {
            let envelope: Envelope = serde_json::from_slice(&payload).expect("an envelope");
            assert!(matches!(
                envelope.command,
                scan2order_actors::cluster::forward::Command::GetKitchenInfo(_)
            ));
            Reply::Done(Ok(big)).encode()
        }
    }));
    until("the owner answers", || async {
        owner.bus().ready(Duration::from_secs(1)).await
            && asker.bus().ready(Duration::from_secs(1)).await
    })
    .await;
    let id = RestaurantId::from(uuid::Uuid::new_v4());
    let mut answer = None;
    for _ in 0..50 {
        // The owner's subscription may not be registered yet on the first try: no responders.
        match asker.forward("owner", id, GetKitchenInfo).await {
            Ok(Reply::Done(Ok(text))) => {
                answer = Some(text);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let answer = answer.expect("the large answer arrived");
    assert_eq!(answer.len(), expected.len());
    assert!(answer == expected, "the pieces were put together in order");
}
