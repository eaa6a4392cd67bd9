//! Real menus: option groups and options priced on the server and copied onto orders, sold-out
//! options, declared allergies refused on conflict, and the kitchen's acknowledgement of them.

use scan2order_schema::domain::OrderStatus;
use scan2order_schema::wire::{Order, ServerMsg};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin::{admin_token, call};
use crate::helpers::{expect_error, expect_invalid, spawn_app, RestaurantFx, TestApp};

/// The ids of a dish's choices as the tests build them.
struct Pizza {
    item: Uuid,
    size: Uuid,
    small: Uuid,
    large: Uuid,
    extras: Uuid,
    olives: Uuid,
    cheese: Uuid,
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().expect("id").parse().expect("uuid")
}

/// Gives `r.items[0]` (500) a "Size" (exactly one: Small −100, Large +300) and "Extras" (up to two:
/// Olives +50, Cheese +120 with milk) through the admin API.
async fn pizza(app: &TestApp, admin: &str, r: &RestaurantFx) -> Pizza {
    let item = r.items[0].id;
    let groups = format!("/restaurants/{}/menu-items/{item}/option-groups", r.id);
    let (s, size) = call(
        app,
        admin,
        "POST",
        &groups,
        Some(json!({"name": "Size", "min": 1, "max": 1})),
    )
    .await;
    assert_eq!(s, 201, "{size}");
    let (s, extras) = call(
        app,
        admin,
        "POST",
        &groups,
        Some(json!({"name": "Extras", "min": 0, "max": 2})),
    )
    .await;
    assert_eq!(s, 201, "{extras}");
    let option = async |group: &Value, body: Value| {
        let (s, o) = call(
            app,
            admin,
            "POST",
            &format!("{groups}/{}/options", id_of(group)),
            Some(body),
        )
        .await;
        assert_eq!(s, 201, "{o}");
        id_of(&o)
    };
    Pizza {
        item,
        size: id_of(&size),
        small: option(&size, json!({"name": "Small", "price_delta_cents": -100})).await,
        large: option(&size, json!({"name": "Large", "price_delta_cents": 300})).await,
        extras: id_of(&extras),
        olives: option(&extras, json!({"name": "Olives", "price_delta_cents": 50})).await,
        cheese: option(
            &extras,
            json!({"name": "Cheese", "price_delta_cents": 120, "allergens": ["milk"]}),
        )
        .await,
    }
}

fn line(item: Uuid, quantity: i32, options: &[Uuid]) -> Value {
    json!({"menu_item_id": item, "quantity": quantity, "options": options})
}

async fn order(app: &TestApp, guest: &str, body: Value) -> reqwest::Response {
    app.place_order_raw(guest, &Uuid::new_v4().to_string(), &body)
        .await
}

async fn placed(res: reqwest::Response) -> Order {
    let status = res.status();
    let text = res.text().await.expect("body");
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).expect("order")
}

#[actix_web::test]
async fn a_dish_with_a_size_and_extras_is_priced_on_the_server_and_its_options_copied_onto_the_order(
) {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("opzioni", 2, 1).await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;
    let p = pizza(&app, &admin, &r).await;
    // Every admin change reached the table as a `menu` event.
    for _ in 0..6 {
        assert!(matches!(table.next().await, ServerMsg::Menu { .. }));
    }

    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    assert_eq!(res.status(), 200);
    let menu: Value = res.json().await.expect("json");
    let dish = &menu["menu"]["categories"][0]["items"][0];
    assert_eq!(dish["id"], json!(p.item));
    assert_eq!(dish["image_url"], Value::Null);
    assert_eq!(dish["allergens"], json!([]));
    assert_eq!(
        dish["option_groups"],
        json!([
            {"id": p.size, "name": "Size", "min": 1, "max": 1, "options": [
                {"id": p.small, "name": "Small", "price_delta_cents": -100, "available": true, "allergens": []},
                {"id": p.large, "name": "Large", "price_delta_cents": 300, "available": true, "allergens": []},
            ]},
            {"id": p.extras, "name": "Extras", "min": 0, "max": 2, "options": [
                {"id": p.olives, "name": "Olives", "price_delta_cents": 50, "available": true, "allergens": []},
                {"id": p.cheese, "name": "Cheese", "price_delta_cents": 120, "available": true, "allergens": ["milk"]},
            ]},
        ])
    );

    let guest = app.verify_phone("+447700900301").await;
    // Chosen in any order; copied in menu order. 500 + 300 + 120 + 50 = 970 each.
    let o = placed(
        order(
            &app,
            &guest,
            json!({"table_token": r.tables[0].token, "items": [
                line(p.item, 2, &[p.cheese, p.large, p.olives]),
                line(r.items[1].id, 1, &[]),
            ]}),
        )
        .await,
    )
    .await;
    assert_eq!(o.items[0].unit_price_cents, 970);
    assert_eq!(o.total_cents, 2 * 970 + 600);
    let copied: Vec<(&str, &str, i64)> = o.items[0]
        .options
        .iter()
        .map(|c| (c.group_name.as_str(), c.name.as_str(), c.price_delta_cents))
        .collect();
    assert_eq!(
        copied,
        [
            ("Size", "Large", 300),
            ("Extras", "Olives", 50),
            ("Extras", "Cheese", 120)
        ]
    );
    assert_eq!(o.items[0].options[0].option_id.get(), p.large);
    assert!(o.items[1].options.is_empty());
    assert!(o.allergies.is_empty());

    // The admin renames and reprices Large and deletes the Extras group: the order keeps its copies.
    let groups = format!("/restaurants/{}/menu-items/{}/option-groups", r.id, p.item);
    let (s, renamed) = call(
        &app,
        &admin,
        "PATCH",
        &format!("{groups}/{}/options/{}", p.size, p.large),
        Some(json!({"name": "Family", "price_delta_cents": 900})),
    )
    .await;
    assert_eq!(s, 200, "{renamed}");
    assert_eq!(renamed["name"], "Family");
    let (s, _) = call(
        &app,
        &admin,
        "DELETE",
        &format!("{groups}/{}", p.extras),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let res = app
        .get(&format!("/api/v1/orders/{}", o.id), Some(&guest))
        .await;
    let again: Order = res.json().await.expect("order");
    assert_eq!(again.items, o.items);
    assert_eq!(again.total_cents, o.total_cents);

    // The menu survives a restart (read back from Postgres), with the edit and without the group.
    let app = app.restart().await;
    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    let menu: Value = res.json().await.expect("json");
    let groups = &menu["menu"]["categories"][0]["items"][0]["option_groups"];
    assert_eq!(groups.as_array().map(Vec::len), Some(1));
    assert_eq!(groups[0]["options"][1]["name"], "Family");
    assert_eq!(groups[0]["options"][1]["price_delta_cents"], 900);
    let o = placed(
        order(
            &app,
            &guest,
            json!({"table_token": r.tables[0].token, "items": [line(p.item, 1, &[p.large])]}),
        )
        .await,
    )
    .await;
    assert_eq!(o.total_cents, 1400);
    assert_eq!(o.items[0].options[0].name, "Family");
}

#[actix_web::test]
async fn options_that_do_not_fit_the_dish_are_refused_naming_the_group_and_sold_out_ones_by_id() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("scelte", 2, 1).await;
    let p = pizza(&app, &admin, &r).await;
    // A choice on the other dish.
    let (s, sauce) = call(
        &app,
        &admin,
        "POST",
        &format!(
            "/restaurants/{}/menu-items/{}/option-groups",
            r.id, r.items[1].id
        ),
        Some(json!({"name": "Sauce", "min": 0, "max": 1})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, aioli) = call(
        &app,
        &admin,
        "POST",
        &format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}/options",
            r.id,
            r.items[1].id,
            id_of(&sauce)
        ),
        Some(json!({"name": "Aioli", "price_delta_cents": 0, "allergens": ["eggs"]})),
    )
    .await;
    assert_eq!(s, 201);
    let aioli = id_of(&aioli);
    let guest = app.verify_phone("+447700900302").await;
    let body = |options: &[Uuid]| {
        json!({"table_token": r.tables[0].token, "items": [
            line(r.items[1].id, 1, &[]),
            line(p.item, 1, options),
        ]})
    };

    let cases: [(&[Uuid], Option<Uuid>, &str); 5] = [
        (&[], Some(p.size), "\"Size\": choose one option"),
        (
            &[p.small, p.large],
            Some(p.size),
            "\"Size\": choose one option",
        ),
        (
            &[p.small, p.olives, p.olives],
            Some(p.extras),
            "chosen twice",
        ),
        (&[p.small, aioli], None, "is not an option of"),
        (&[p.small, Uuid::new_v4()], None, "is not an option of"),
    ];
    for (options, group, words) in cases {
        let err = expect_error(
            order(&app, &guest, body(options)).await,
            400,
            "invalid_options",
        )
        .await;
        let message = err["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("items[1].options"), "{err}");
        assert!(message.contains(words), "{err}");
        assert_eq!(err["item_id"], json!(p.item), "{err}");
        assert_eq!(err["group_id"], json!(group), "{err}");
    }
    // Three extras where two are allowed (each extra once): the group names itself.
    let (s, anchovies) = call(
        &app,
        &admin,
        "POST",
        &format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}/options",
            r.id, p.item, p.extras
        ),
        Some(json!({"name": "Anchovies", "price_delta_cents": 80, "allergens": ["fish"]})),
    )
    .await;
    assert_eq!(s, 201);
    let anchovies = id_of(&anchovies);
    let err = expect_error(
        order(
            &app,
            &guest,
            body(&[p.small, p.olives, p.cheese, anchovies]),
        )
        .await,
        400,
        "invalid_options",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"Extras\": choose at most 2"),
        "{err}"
    );
    assert_eq!(err["group_id"], json!(p.extras));
    // Not a list of ids: the body is refused as malformed, naming the field.
    let res = order(
        &app,
        &guest,
        json!({"table_token": r.tables[0].token, "items": [
            {"menu_item_id": p.item, "quantity": 1, "options": "large"}
        ]}),
    )
    .await;
    expect_invalid(res, "options").await;

    // The kitchen sells out olives: sockets hear it; an order with them is 409 naming the option.
    let chef = app.login_chef(&r).await;
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;
    let res = app
        .http
        .patch(app.url(&format!("/api/v1/kitchen/options/{}", p.olives)))
        .bearer_auth(&chef)
        .json(&json!({"available": false}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let sold_out: Value = res.json().await.expect("json");
    assert_eq!(sold_out["available"], false);
    match table.next().await {
        ServerMsg::MenuOption {
            option_id,
            available,
            ..
        } => {
            assert_eq!(option_id.get(), p.olives);
            assert!(!available);
        }
        other => panic!("expected menu_option, got {other:?}"),
    }
    let err = expect_error(
        order(&app, &guest, body(&[p.large, p.olives])).await,
        409,
        "item_unavailable",
    )
    .await;
    assert_eq!(err["option_ids"], json!([p.olives]));
    assert_eq!(err["item_ids"], json!([]));
    let res = app
        .get(&format!("/api/v1/tables/{}", r.tables[0].token), None)
        .await;
    let menu: Value = res.json().await.expect("json");
    let olives = &menu["menu"]["categories"][0]["items"][0]["option_groups"][1]["options"][0];
    assert_eq!(olives["available"], false, "{olives}");
    // Another restaurant's chef cannot touch this option, nor can an unknown one be found.
    let other = app.restaurant("altrove", 1, 1).await;
    let other_chef = app.login_chef(&other).await;
    for (token, id) in [(&other_chef, p.olives), (&chef, Uuid::new_v4())] {
        let res = app
            .http
            .patch(app.url(&format!("/api/v1/kitchen/options/{id}")))
            .bearer_auth(token)
            .json(&json!({"available": true}))
            .send()
            .await
            .expect("request");
        expect_error(res, 404, "not_found").await;
    }

    // A delta that would take the line below zero prices it at zero.
    let (s, _) = call(
        &app,
        &admin,
        "PATCH",
        &format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}/options/{}",
            r.id, p.item, p.size, p.small
        ),
        Some(json!({"price_delta_cents": -2000})),
    )
    .await;
    assert_eq!(s, 200);
    let o = placed(
        order(
            &app,
            &guest,
            json!({"table_token": r.tables[0].token, "items": [line(p.item, 3, &[p.small])]}),
        )
        .await,
    )
    .await;
    assert_eq!(o.items[0].unit_price_cents, 0);
    assert_eq!(o.total_cents, 0);
}

#[actix_web::test]
async fn declared_allergies_refuse_conflicting_dishes_and_the_kitchen_must_acknowledge_them() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("allergie", 3, 1).await;
    let p = pizza(&app, &admin, &r).await;
    // The second dish contains gluten and eggs.
    let (s, dish) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}/menu-items/{}", r.id, r.items[1].id),
        Some(json!({"allergens": ["eggs", "gluten", "eggs"]})),
    )
    .await;
    assert_eq!(s, 200, "{dish}");
    assert_eq!(dish["allergens"], json!(["gluten", "eggs"]));
    let guest = app.verify_phone("+447700900303").await;
    let with = |allergies: Value, items: Vec<Value>| json!({"table_token": r.tables[0].token, "items": items, "allergies": allergies});

    // The dish itself, or a chosen option, contains a declared allergen: refused, naming the dishes.
    let err = expect_error(
        order(
            &app,
            &guest,
            with(
                json!(["gluten"]),
                vec![line(r.items[2].id, 1, &[]), line(r.items[1].id, 1, &[])],
            ),
        )
        .await,
        409,
        "allergen_conflict",
    )
    .await;
    assert_eq!(err["item_ids"], json!([r.items[1].id]));
    let err = expect_error(
        order(
            &app,
            &guest,
            with(json!(["milk"]), vec![line(p.item, 1, &[p.small, p.cheese])]),
        )
        .await,
        409,
        "allergen_conflict",
    )
    .await;
    assert_eq!(err["item_ids"], json!([p.item]));
    // Unknown codes are a 400 naming the entry.
    let res = order(
        &app,
        &guest,
        with(json!(["milk", "Peanut"]), vec![line(r.items[2].id, 1, &[])]),
    )
    .await;
    expect_invalid(res, "allergies[1]").await;

    // Without cheese the pizza is fine for a milk allergy; the order carries the declaration.
    let chef = app.login_chef(&r).await;
    let chef_id: Uuid = {
        let res = app.get("/api/v1/auth/me", Some(&chef)).await;
        let me: Value = res.json().await.expect("me");
        me["id"].as_str().expect("id").parse().expect("uuid")
    };
    let mut table = app.table_socket(&r.tables[0].token, "").await;
    table.hello_snapshot().await;
    let o = placed(
        order(
            &app,
            &guest,
            with(
                json!(["milk", "celery", "milk"]),
                vec![line(p.item, 1, &[p.large, p.olives])],
            ),
        )
        .await,
    )
    .await;
    assert_eq!(o.allergies, ["milk", "celery"]);
    assert_eq!(o.allergy_ack, None);
    let ServerMsg::OrderCreated { order: seen, .. } = table.next().await else {
        panic!("expected order_created")
    };
    assert_eq!(seen.allergies, ["milk", "celery"]);

    // The kitchen cannot move it on without reading the allergies, by REST or by socket.
    let status_url = app.url(&format!("/api/v1/kitchen/orders/{}/status", o.id));
    let res = app
        .http
        .post(&status_url)
        .bearer_auth(&chef)
        .json(&json!({"status": "accepted"}))
        .send()
        .await
        .expect("request");
    expect_error(res, 409, "allergy_ack_required").await;
    let mut kitchen = app.kitchen_socket(&chef, "").await;
    kitchen.hello_snapshot().await;
    kitchen
        .send_json(&json!({"type": "set_status", "request_id": "k1", "order_id": o.id, "status": "preparing"}))
        .await;
    match kitchen.next().await {
        ServerMsg::Error {
            error, request_id, ..
        } => {
            assert_eq!(error, "allergy_ack_required");
            assert_eq!(request_id.as_deref(), Some("k1"));
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // With the acknowledgement it moves, and who and when are stored and told to the table.
    let res = app
        .http
        .post(&status_url)
        .bearer_auth(&chef)
        .json(&json!({"status": "accepted", "allergy_ack": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let moved: Order = res.json().await.expect("order");
    let ack = moved.allergy_ack.clone().expect("acknowledged");
    assert_eq!(ack.by.map(|b| b.get()), Some(chef_id));
    match table.next().await {
        ServerMsg::OrderStatus {
            order_id,
            status,
            allergy_ack,
            ..
        } => {
            assert_eq!(order_id, o.id);
            assert_eq!(status, OrderStatus::Accepted);
            assert_eq!(allergy_ack, Some(ack.clone()));
        }
        other => panic!("expected order_status, got {other:?}"),
    }
    app.assert_sql(
        "the acknowledgement is kept with the order and its history row",
        &format!(
            "EXISTS (SELECT 1 FROM orders WHERE id = '{id}' AND allergy_ack_by = '{chef_id}' \
             AND allergy_ack_at IS NOT NULL) AND EXISTS (SELECT 1 FROM order_status_history \
             WHERE order_id = '{id}' AND status = 'accepted' AND allergy_ack AND changed_by = '{chef_id}')",
            id = o.id
        ),
    )
    .await;
    // Later moves need nothing more, and the guest's own view shows the acknowledgement.
    let res = app.set_status(&chef, &o.id.to_string(), "preparing").await;
    assert_eq!(res.status(), 200);
    let res = app
        .get(&format!("/api/v1/orders/{}", o.id), Some(&guest))
        .await;
    let mine: Order = res.json().await.expect("order");
    assert_eq!(mine.allergy_ack, Some(ack));

    // An order with allergies may be cancelled without the acknowledgement; one without none is asked.
    let o2 = placed(
        order(
            &app,
            &guest,
            with(json!(["sesame"]), vec![line(r.items[2].id, 1, &[])]),
        )
        .await,
    )
    .await;
    let res = app.set_status(&chef, &o2.id.to_string(), "cancelled").await;
    assert_eq!(res.status(), 200);
    let o3 = placed(
        order(
            &app,
            &guest,
            with(json!([]), vec![line(r.items[2].id, 1, &[])]),
        )
        .await,
    )
    .await;
    let res = app.set_status(&chef, &o3.id.to_string(), "accepted").await;
    assert_eq!(res.status(), 200);
}

#[actix_web::test]
async fn option_admin_calls_name_the_bad_field_and_other_dishes_and_tenants_ids_are_not_found() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("campi", 2, 1).await;
    let other = app.restaurant("vicino", 1, 1).await;
    let p = pizza(&app, &admin, &r).await;
    let groups = format!("/restaurants/{}/menu-items/{}/option-groups", r.id, p.item);

    for (body, field) in [
        (json!({"name": "Size", "min": 2, "max": 1}), "min"),
        (json!({"name": "Size", "min": 0, "max": 0}), "max"),
        (json!({"name": "Size", "min": -1, "max": 1}), "min"),
        (json!({"name": " ", "min": 0, "max": 1}), "name"),
        (json!({"min": 0, "max": 1}), "name"),
        (json!({"name": "Size", "max": 1}), "min"),
        (json!({"name": "Size", "min": 0, "max": 31}), "max"),
    ] {
        let (s, err) = call(&app, &admin, "POST", &groups, Some(body.clone())).await;
        assert_eq!(s, 400, "{body} gave {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{body}: {err}"
        );
    }
    let (s, err) = call(
        &app,
        &admin,
        "PATCH",
        &format!("{groups}/{}", p.size),
        Some(json!({"min": 3})),
    )
    .await;
    assert_eq!(s, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("min"),
        "{err}"
    );
    let options = format!("{groups}/{}/options", p.extras);
    for (body, field) in [
        (
            json!({"name": "Egg", "price_delta_cents": 100, "allergens": ["egg"]}),
            "allergens[0]",
        ),
        (json!({"name": "Egg"}), "price_delta_cents"),
        (
            json!({"name": "Egg", "price_delta_cents": 1_000_000_000}),
            "price_delta_cents",
        ),
        (
            json!({"name": "Egg", "price_delta_cents": "1"}),
            "price_delta_cents",
        ),
        (
            json!({"name": "Egg", "price_delta_cents": 1, "colour": "red"}),
            "colour",
        ),
    ] {
        let (s, err) = call(&app, &admin, "POST", &options, Some(body.clone())).await;
        assert_eq!(s, 400, "{body} gave {err}");
        assert!(
            err["message"].as_str().unwrap_or_default().contains(field),
            "{body}: {err}"
        );
    }
    let (s, err) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}/menu-items/{}", r.id, p.item),
        Some(json!({"allergens": ["shellfish"]})),
    )
    .await;
    assert_eq!(s, 400, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("allergens[0]"),
        "{err}"
    );

    // The dish's admin view lists its groups with their options.
    let (s, item) = call(
        &app,
        &admin,
        "GET",
        &format!("/restaurants/{}/menu-items/{}", r.id, p.item),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        item["option_groups"][1]["options"][1]["allergens"],
        json!(["milk"])
    );

    // Ids of another dish, another restaurant, or nothing at all are 404, and change nothing.
    let elsewhere = [
        // The group under the other dish of the same restaurant.
        format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}",
            r.id, r.items[1].id, p.size
        ),
        // The group under another restaurant.
        format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}",
            other.id, p.item, p.size
        ),
        format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}",
            other.id, other.items[0].id, p.size
        ),
        format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}",
            r.id,
            p.item,
            Uuid::new_v4()
        ),
    ];
    for path in &elsewhere {
        let (s, err) = call(&app, &admin, "PATCH", path, Some(json!({"name": "Taken"}))).await;
        assert_eq!(s, 404, "{path}: {err}");
        let (s, _) = call(&app, &admin, "DELETE", path, None).await;
        assert_eq!(s, 404, "{path}");
    }
    let option_elsewhere = [
        format!("{groups}/{}/options/{}", p.size, p.olives),
        format!(
            "/restaurants/{}/menu-items/{}/option-groups/{}/options/{}",
            other.id, p.item, p.extras, p.olives
        ),
        format!("{groups}/{}/options/{}", p.extras, Uuid::new_v4()),
    ];
    for path in &option_elsewhere {
        let (s, err) = call(&app, &admin, "PATCH", path, Some(json!({"name": "Taken"}))).await;
        assert_eq!(s, 404, "{path}: {err}");
        let (s, _) = call(&app, &admin, "DELETE", path, None).await;
        assert_eq!(s, 404, "{path}");
    }
    let (s, _) = call(
        &app,
        &admin,
        "POST",
        &format!(
            "/restaurants/{}/menu-items/{}/option-groups",
            other.id, p.item
        ),
        Some(json!({"name": "Size", "min": 0, "max": 1})),
    )
    .await;
    assert_eq!(s, 404);
    let mut conn = app.db().await;
    assert!(
        crate::helpers::sql_holds(
            &mut conn,
            &format!(
                "(SELECT count(*) FROM option_groups WHERE name = 'Taken') = 0 \
                 AND (SELECT count(*) FROM menu_options WHERE name = 'Taken') = 0 \
                 AND (SELECT count(*) FROM option_groups WHERE restaurant_id = '{}') = 0 \
                 AND (SELECT count(*) FROM menu_options WHERE group_id = '{}') = 2",
                other.id, p.extras
            )
        )
        .await
    );
    // Deleting an option and a group works on the right path.
    let (s, _) = call(
        &app,
        &admin,
        "DELETE",
        &format!("{groups}/{}/options/{}", p.extras, p.olives),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &app,
        &admin,
        "DELETE",
        &format!("{groups}/{}", p.size),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, list) = call(&app, &admin, "GET", &groups, None).await;
    assert_eq!(s, 200);
    assert_eq!(list["option_groups"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        list["option_groups"][0]["options"].as_array().map(Vec::len),
        Some(1)
    );
}

#[actix_web::test]
async fn a_guest_menu_is_sent_gzip_compressed_to_clients_that_take_it_and_follows_every_change() {
    use std::io::Read;
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let r = app.restaurant("compresso", 30, 2).await;
    pizza(&app, &admin, &r).await;
    let path = format!("/api/v1/tables/{}", r.tables[0].token);
    let fetch = async |encoding: &str| {
        let res = app
            .http
            .get(app.url(&path))
            .header("Accept-Encoding", encoding)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["vary"], "Accept-Encoding");
        let gzipped = res
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        let bytes = res.bytes().await.expect("body").to_vec();
        if !gzipped {
            return (false, bytes.len(), String::from_utf8(bytes).expect("utf-8"));
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .expect("a gzip body");
        (true, bytes.len(), text)
    };
    let (plain_gz, plain_len, plain) = fetch("identity").await;
    assert!(!plain_gz);
    let (gz, gz_len, unpacked) = fetch("gzip, deflate, br").await;
    assert!(gz, "compressed for a client that takes gzip");
    assert_eq!(unpacked, plain, "the same menu");
    assert!(gz_len * 3 < plain_len, "{gz_len} of {plain_len} bytes");
    let (refused, _, _) = fetch("gzip;q=0, identity").await;
    assert!(!refused, "q=0 refuses gzip");
    // The same table's second read comes from the cache; another table gets its own body.
    let other = format!("/api/v1/tables/{}", r.tables[1].token);
    let res = app
        .http
        .get(app.url(&other))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("request");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&res.bytes().await.expect("body")[..])
        .read_to_string(&mut text)
        .expect("gzip");
    let menu: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(menu["table"]["id"], json!(r.tables[1].id));
    // A table renamed (the menu version does not move) is never answered from an old body.
    let (s, _) = call(
        &app,
        &admin,
        "PATCH",
        &format!("/restaurants/{}/tables/{}", r.id, r.tables[0].id),
        Some(json!({"label": "Terrace 1"})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, _, renamed) = fetch("gzip").await;
    let menu: Value = serde_json::from_str(&renamed).expect("json");
    assert_eq!(menu["table"]["label"], "Terrace 1");

    // The guest page's scripts and styles are compressed too.
    for asset in [
        "/static/guest.js",
        "/static/app.css",
        &format!("/t/{}", r.tables[0].token),
    ] {
        let plain = app.get(asset, None).await.bytes().await.expect("body");
        let res = app
            .http
            .get(app.url(asset))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .expect("request");
        assert_eq!(res.headers()["content-encoding"], "gzip", "{asset}");
        let packed = res.bytes().await.expect("body");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .expect("gzip");
        assert_eq!(unpacked, plain.to_vec(), "{asset}");
        assert!(
            packed.len() * 2 < plain.len(),
            "{asset}: {} of {}",
            packed.len(),
            plain.len()
        );
    }
}
