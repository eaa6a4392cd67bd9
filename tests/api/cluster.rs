//! The fleet: nodes on one database and a private NATS. Commands on a node that does not own the
//! restaurant are forwarded to its owner; the owner's events reach sockets on every node; what ends a
//! token or a session ends it on every node; a relay that misses frames repairs itself with a snapshot;
//! a node that hands over (SIGTERM) lets another node take its restaurants at once.

use scan2order_actors::cluster::bus::{Bus, BusConfig};
use scan2order_schema::wire::ServerMsg;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// Which node owns the restaurant, as `node` reports it (activating it there if nobody does).
async fn owner_seen_from(node: &TestApp, admin: &str, restaurant: Uuid) -> String {
    let res = node
        .get(
            &format!("/api/v1/admin/restaurants/{restaurant}/owner"),
            Some(admin),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["node_id"].as_str().expect("node_id").to_string()
}

async fn admin_of(node: &TestApp) -> String {
    node.staff("fleet-admin", "admin-password-1", "admin", None)
        .await;
    node.login("fleet-admin", "admin-password-1").await
}

fn is_order_created(m: &ServerMsg) -> bool {
    matches!(m, ServerMsg::OrderCreated { .. })
}

#[actix_web::test]
async fn a_command_on_a_node_that_does_not_own_the_restaurant_is_answered_by_its_owner() {
    let fleet = spawn_fleet(2, |_| {}).await;
    let (a, b) = (fleet.node(0), fleet.node(1));
    let admin = admin_of(a).await;
    let r = a.restaurant("forwarded", 2, 1).await;
    assert_eq!(owner_seen_from(a, &admin, r.id).await, "node-0");

    // An order, its retry and a status change, all through node 1: the owner (node 0) runs them.
    let guest = b.verify_phone("+4915112345001").await;
    let key = Uuid::new_v4().to_string();
    let body = order_body(&r.tables[0], &[(&r.items[0], 2)]);
    let first = b.place_order_raw(&guest, &key, &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("json");
    let again = b.place_order_raw(&guest, &key, &body).await;
    assert_eq!(
        again.status(),
        200,
        "the retry finds the order its key made"
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    // The same key through the owner itself: still the one order.
    let via_owner = a.place_order_raw(&guest, &key, &body).await;
    assert_eq!(via_owner.status(), 200);
    a.assert_sql("one order for the key", "(SELECT count(*) FROM orders) = 1")
        .await;
    assert!(
        b.engine().active_restaurant(r.id.into()).is_none(),
        "node 1 did not start a second actor for the restaurant"
    );

    let chef = b.login_chef(&r).await;
    let order = first["id"].as_str().expect("id");
    let res = b.set_status(&chef, order, "accepted").await;
    assert_eq!(res.status(), 200);
    let res = b.set_status(&chef, order, "placed").await;
    expect_error(res, 409, "invalid_transition").await;
    // A menu read through node 1 is the owner's menu.
    let res = b
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    assert_eq!(res.status(), 200);
    let menu: Value = res.json().await.expect("json");
    assert!(menu.to_string().contains(&r.items[0].name));
    // Unknown ids are still unknown through a forward.
    let res = b
        .set_status(&chef, &Uuid::new_v4().to_string(), "accepted")
        .await;
    expect_error(res, 404, "not_found").await;
    assert_eq!(owner_seen_from(b, &admin, r.id).await, "node-0");
}

#[actix_web::test]
async fn sockets_on_every_node_see_the_owners_stream_once_and_in_order() {
    let fleet = spawn_fleet(3, |_| {}).await;
    let (a, b, c) = (fleet.node(0), fleet.node(1), fleet.node(2));
    let admin = admin_of(a).await;
    let r = a.restaurant("relayed", 1, 2).await;
    assert_eq!(owner_seen_from(a, &admin, r.id).await, "node-0");
    let chef = a.login_chef(&r).await;

    let mut kitchen_a = a.kitchen_socket(&chef, "").await;
    let mut kitchen_b = b.kitchen_socket(&chef, "").await;
    let mut table_c = c.table_socket(&r.tables[0].token, "").await;
    let mut other_table_c = c.table_socket(&r.tables[1].token, "").await;
    let (epoch_a, _, _) = kitchen_a.hello_snapshot().await;
    let (epoch_b, _, _) = kitchen_b.hello_snapshot().await;
    let (epoch_c, _, _) = table_c.hello_snapshot().await;
    other_table_c.hello_snapshot().await;
    assert_eq!(epoch_a, epoch_b, "a relayed socket sees the owner's epoch");
    assert_eq!(epoch_a, epoch_c);

    // Orders placed on node 2 (not the owner) reach the kitchen on node 1 (not the owner either).
    let guest = c.verify_phone("+4915112345002").await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(
            c.place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
                .await,
        );
    }
    for socket in [&mut kitchen_a, &mut kitchen_b, &mut table_c] {
        let mut seqs = Vec::new();
        for order in &placed {
            match socket.until(is_order_created).await {
                ServerMsg::OrderCreated { seq, order: got } => {
                    assert_eq!(got.id, order.id);
                    seqs.push(seq);
                }
                _ => unreachable!(),
            }
        }
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }
    // The other table hears nothing of them: a status change for everyone's menu is the signal.
    let res = c.set_accepting(&chef, false).await;
    assert_eq!(res.status(), 200);
    match other_table_c.next().await {
        ServerMsg::Restaurant {
            accepting_orders, ..
        } => assert!(!accepting_orders),
        other => panic!("the other table got {other:?}"),
    }
    // A status change from the kitchen socket on node 1 goes to the owner and comes back relayed.
    kitchen_b
        .send_json(&json!({"type": "set_status", "request_id": "r1", "order_id": placed[0].id, "status": "accepted"}))
        .await;
    kitchen_b
        .until(|m| matches!(m, ServerMsg::Ack { request_id } if request_id == "r1"))
        .await;
    table_c
        .until(
            |m| matches!(m, ServerMsg::OrderStatus { order_id, .. } if *order_id == placed[0].id),
        )
        .await;

    // A socket that reconnects to another node resumes from that node's relay.
    let seq = match kitchen_a
        .until(|m| matches!(m, ServerMsg::OrderStatus { .. }))
        .await
    {
        ServerMsg::OrderStatus { seq, .. } => seq,
        _ => unreachable!(),
    };
    let mut resumed = b
        .kitchen_socket(&chef, &format!("&epoch={epoch_a}&since={}", seq - 2))
        .await;
    match resumed.next().await {
        ServerMsg::Hello { epoch, .. } => assert_eq!(epoch, epoch_a),
        other => panic!("expected hello, got {other:?}"),
    }
    let replayed: Vec<u64> = [resumed.next().await, resumed.next().await]
        .iter()
        .map(|m| m.seq().expect("an event"))
        .collect();
    assert_eq!(replayed, vec![seq - 1, seq]);
}

#[actix_web::test]
async fn a_table_token_that_dies_closes_its_sockets_on_every_node() {
    let fleet = spawn_fleet(2, |_| {}).await;
    let (a, b) = (fleet.node(0), fleet.node(1));
    let admin = admin_of(a).await;
    let r = a.restaurant("rotated", 1, 2).await;
    assert_eq!(owner_seen_from(a, &admin, r.id).await, "node-0");
    let t = &r.tables[0];
    let mut on_b = b.table_socket(&t.token, "").await;
    on_b.hello_snapshot().await;
    let mut other_on_b = b.table_socket(&r.tables[1].token, "").await;
    other_on_b.hello_snapshot().await;
    // Node 1 learns the token (a menu read) before it dies.
    assert_eq!(
        b.get(&format!("/api/v1/tables/{}", t.token), None)
            .await
            .status(),
        200
    );

    // Rotated through node 1 (forwarded to the owner).
    let res = b
        .http
        .post(b.url(&format!(
            "/api/v1/admin/restaurants/{}/tables/{}/rotate-token",
            r.id, t.id
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(on_b.closed_with().await, Some(1008));
    for node in [a, b] {
        let res = node.get(&format!("/api/v1/tables/{}", t.token), None).await;
        assert_eq!(res.status(), 404, "the old token is dead on every node");
        let mut again = node.table_socket(&t.token, "").await;
        assert_eq!(again.closed_with().await, Some(1008));
    }
    // The other table's socket stays.
    let guest = b.verify_phone("+4915112345003").await;
    b.place_order(&guest, &r.tables[1], &[(&r.items[0], 1)])
        .await;
    other_on_b.until(is_order_created).await;
}

#[actix_web::test]
async fn a_password_change_ends_the_chefs_sessions_on_every_node_at_once() {
    let fleet = spawn_fleet(2, |_| {}).await;
    let (a, b) = (fleet.node(0), fleet.node(1));
    let admin = admin_of(a).await;
    let r = a.restaurant("revoked", 1, 1).await;
    assert_eq!(owner_seen_from(a, &admin, r.id).await, "node-0");
    let chef = a.login_chef(&r).await;
    let mut socket_b = b.kitchen_socket(&chef, "").await;
    socket_b.hello_snapshot().await;
    let guest = a.verify_phone("+4915112345006").await;
    let order = a
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    let order = order.id.to_string();
    // Node 1 caches the session on a status change (the write confirms it in its transaction).
    assert_eq!(b.set_status(&chef, &order, "accepted").await.status(), 200);
    let cached = || {
        b.handle
            .as_ref()
            .expect("running")
            .context()
            .sessions
            .staff
            .len()
    };
    assert_eq!(cached(), 1);

    let chef_id = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use scan2order_schema::schema::staff_users;
        staff_users::table
            .filter(staff_users::username.eq(&r.chef.0))
            .select(staff_users::id)
            .first::<Uuid>(&mut a.db().await)
            .await
            .expect("chef")
    };
    let res = a
        .http
        .patch(a.url(&format!(
            "/api/v1/admin/restaurants/{}/staff/{chef_id}",
            r.id
        )))
        .bearer_auth(&admin)
        .json(&json!({"password": "a-new-password-2"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(socket_b.closed_with().await, Some(1008));
    // Node 1's session cache forgot it at once, not after the cache's TTL.
    until("node 1 forgets the chef's session", async || cached() == 0).await;
    expect_error(
        b.set_status(&chef, &order, "preparing").await,
        401,
        "unauthenticated",
    )
    .await;

    // A logout on node 0 ends that session on node 1 too.
    let fresh = a.login(&r.chef.0, "a-new-password-2").await;
    assert_eq!(
        b.set_status(&fresh, &order, "preparing").await.status(),
        200
    );
    assert_eq!(cached(), 1);
    let res = a
        .http
        .post(a.url("/api/v1/auth/logout"))
        .bearer_auth(&fresh)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 204);
    until("node 1 forgets the ended session", async || cached() == 0).await;
    expect_error(
        b.set_status(&fresh, &order, "ready").await,
        401,
        "unauthenticated",
    )
    .await;
}

#[actix_web::test]
async fn a_relay_that_misses_frames_sends_its_sockets_a_snapshot_instead_of_skipping() {
    let fleet = spawn_fleet(2, |_| {}).await;
    let (a, b) = (fleet.node(0), fleet.node(1));
    let admin = admin_of(a).await;
    let r = a.restaurant("gapped", 1, 1).await;
    assert_eq!(owner_seen_from(a, &admin, r.id).await, "node-0");
    let chef = a.login_chef(&r).await;
    let mut kitchen_b = b.kitchen_socket(&chef, "").await;
    let (epoch, seq, _) = kitchen_b.hello_snapshot().await;

    // A frame numbered past the next one, as if NATS had lost those between.
    let nats = Bus::connect(&BusConfig {
        url: fleet.nats.url(),
        subject_prefix: "s2o".into(),
        node_id: "test-publisher".into(),
    })
    .await
    .expect("nats");
    let nats = nats.client();
    let head = json!({"k": "event", "e": epoch, "s": seq + 3, "t": null});
    let payload = format!(
        "{head}\n{}",
        json!({"type": "restaurant", "seq": seq + 3, "accepting_orders": false})
    );
    nats.publish(format!("s2o.events.{}", r.id.simple()), payload.into())
        .await
        .expect("publish");
    nats.flush().await.expect("flush");

    // Not the forged event: a fresh snapshot of the owner's real stream, on the same socket.
    match kitchen_b.next().await {
        ServerMsg::Snapshot {
            epoch: e, seq: s, ..
        } => {
            assert_eq!(e, epoch);
            assert_eq!(s, seq, "the owner's stream had not moved");
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    // And the stream goes on from there.
    let guest = a.verify_phone("+4915112345004").await;
    a.place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    match kitchen_b.next().await {
        ServerMsg::OrderCreated { seq: s, .. } => assert_eq!(s, seq + 1),
        other => panic!("expected the order, got {other:?}"),
    }
}

#[actix_web::test]
async fn a_node_that_hands_over_lets_another_take_its_restaurants_at_once() {
    // Leases far longer than the test: only the hand-over can move the restaurant this fast.
    let mut fleet = spawn_fleet(2, |s| s.cluster.lease_ttl_ms = 60_000).await;
    let admin = admin_of(fleet.node(0)).await;
    let r = fleet.node(0).restaurant("handed", 1, 1).await;
    assert_eq!(owner_seen_from(fleet.node(0), &admin, r.id).await, "node-0");
    let chef = fleet.node(1).login_chef(&r).await;
    let guest = fleet.node(1).verify_phone("+4915112345005").await;
    let mut kitchen_b = fleet.node(1).kitchen_socket(&chef, "").await;
    let (old_epoch, _, _) = kitchen_b.hello_snapshot().await;
    let before = fleet
        .node(1)
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    kitchen_b.until(is_order_created).await;

    let mut owner = fleet.nodes.remove(0);
    // The database stays with the rest of the fleet.
    fleet.nodes[0].db_name = std::mem::take(&mut owner.db_name);
    owner.handle.take().expect("running").shutdown().await;

    // The socket on node 1 stays open and follows the new owner's epoch, with the order it knew.
    match kitchen_b
        .until(|m| matches!(m, ServerMsg::Snapshot { .. }))
        .await
    {
        ServerMsg::Snapshot { epoch, orders, .. } => {
            assert_ne!(epoch, old_epoch);
            assert!(orders.iter().any(|o| o.id == before.id));
        }
        _ => unreachable!(),
    }
    let b = fleet.node(0);
    let after = b
        .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
        .await;
    match kitchen_b.until(is_order_created).await {
        ServerMsg::OrderCreated { order, .. } => assert_eq!(order.id, after.id),
        _ => unreachable!(),
    }
    assert_eq!(owner_seen_from(b, &admin, r.id).await, "node-1");
    b.assert_sql(
        "both orders stored once",
        "(SELECT count(*) FROM orders) = 2",
    )
    .await;
}

#[actix_web::test]
async fn every_node_drains_the_outbox_yet_each_message_is_sent_once_and_code_limits_hold_fleet_wide(
) {
    let fleet = spawn_fleet(3, |_| {}).await;
    let admin = admin_of(fleet.node(0)).await;
    let r = fleet.node(0).restaurant("notified", 1, 1).await;
    assert_eq!(owner_seen_from(fleet.node(0), &admin, r.id).await, "node-0");
    let guest = fleet.node(1).verify_phone("+4915112345007").await;
    for i in 0..6 {
        fleet
            .node(i % 3)
            .place_order(&guest, &r.tables[0], &[(&r.items[0], 1)])
            .await;
    }
    // Three notifiers poll the one outbox; each message leaves once.
    let a = fleet.node(0);
    a.wait_for_sql(
        "every message sent",
        "(SELECT count(*) FROM notification_outbox WHERE sent_at IS NULL) = 0 \
         AND (SELECT count(*) FROM notification_outbox) = 6",
    )
    .await;
    let received =
        a.wa.received()
            .iter()
            .filter(|m| m.template() == "scan2order_order_received")
            .count();
    assert_eq!(received, 6, "each order's message sent exactly once");
    assert!(a.wa.problems().is_empty(), "{:?}", a.wa.problems());

    // A phone that was just sent a code on one node waits on every other node too.
    let phone = json!({"phone": "+4915112345008"});
    let res = fleet.node(0).post_json("/api/v1/otp/send", &phone).await;
    assert_eq!(res.status(), 202);
    for node in [fleet.node(1), fleet.node(2)] {
        let res = node.post_json("/api/v1/otp/send", &phone).await;
        expect_error(res, 429, "rate_limited").await;
    }
}
