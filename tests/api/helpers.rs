//! Test harness: the real server on port 0 against a fresh Postgres database per test (a copy of a
//! migrated template), a fake WhatsApp Cloud API that checks every request, fixture builders and typed
//! clients for REST and sockets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::{SinkExt, StreamExt};
use scan2order::config::{Secret, Settings, WhatsAppMode};
use scan2order::startup::{AppHandle, Application};
use scan2order_actors::restaurant::RestaurantStats;
use scan2order_actors::shard::ShardSupervisor;
use scan2order_schema::models::{
    MenuCategory, MenuItem, Restaurant, RestaurantTable, StaffUserRow,
};
use scan2order_schema::schema::{menu_categories, menu_items, restaurant_tables, staff_users};
use scan2order_schema::wire::{Order, ServerMsg};
use serde_json::{json, Value};
use tokio::sync::{Notify, OnceCell};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
/// How long a test waits for something that should happen promptly before failing.
pub const PATIENCE: Duration = Duration::from_secs(10);
pub const WA_PHONE_NUMBER_ID: &str = "109876543210";
pub const WA_ACCESS_TOKEN: &str = "test-wa-access-token-5f2c";

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// A migrated template database, made once per test run and reused while the migrations are unchanged.
async fn template_db() -> String {
    TEMPLATE
        .get_or_init(|| async {
            let mut digest = 0u64;
            let mut entries: Vec<_> =
                std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                    .expect("migrations dir")
                    .filter_map(Result::ok)
                    .collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                for f in ["up.sql", "down.sql"] {
                    let text = std::fs::read(e.path().join(f)).unwrap_or_default();
                    for b in e.file_name().to_string_lossy().bytes().chain(text) {
                        digest = digest
                            .wrapping_mul(1_099_511_628_211)
                            .wrapping_add(u64::from(b));
                    }
                }
            }
            let name = format!("s2o_tpl_{digest:016x}");
            let mut admin = AsyncPgConnection::establish(&format!("{PG_BASE}/postgres"))
                .await
                .expect("postgres is running on 127.0.0.1:5432");
            #[derive(QueryableByName)]
            struct Found {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let found: Found =
                diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
                    .bind::<diesel::sql_types::Text, _>(&name)
                    .get_result(&mut admin)
                    .await
                    .expect("query pg_database");
            if found.n == 0 {
                let building = format!("{name}_build_{}", std::process::id());
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {building}"))
                    .execute(&mut admin)
                    .await
                    .expect("drop stale build");
                diesel::sql_query(format!("CREATE DATABASE {building}"))
                    .execute(&mut admin)
                    .await
                    .expect("create template");
                scan2order::db::run_migrations(&format!("{PG_BASE}/{building}"))
                    .await
                    .expect("migrate template");
                // Renaming makes the finished template appear atomically to concurrent runs.
                let _ = diesel::sql_query(format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .execute(&mut admin)
                    .await;
            }
            name
        })
        .await
        .clone()
}

/// A fresh database copied from the template.
pub async fn fresh_database() -> String {
    let template = template_db().await;
    let name = format!("s2o_test_{}", Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(&format!("{PG_BASE}/postgres"))
        .await
        .expect("connect");
    diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    name
}

pub fn drop_database(name: String) {
    // Runs from Drop: a thread of its own with its own runtime.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                if let Ok(mut admin) =
                    AsyncPgConnection::establish(&format!("{PG_BASE}/postgres")).await
                {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                }
            });
        }
    })
    .join();
}

/// One request the fake Cloud API received.
#[derive(Clone, Debug)]
pub struct WaRequest {
    pub path: String,
    pub authorization: String,
    pub body: Value,
}

impl WaRequest {
    pub fn to(&self) -> &str {
        self.body["to"].as_str().unwrap_or_default()
    }
    pub fn template(&self) -> &str {
        self.body["template"]["name"].as_str().unwrap_or_default()
    }
    pub fn body_params(&self) -> Vec<String> {
        self.body["template"]["components"][0]["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p["text"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct WaState {
    received: Vec<WaRequest>,
    /// Every request, scripted failures included.
    hits: usize,
    /// Statuses to answer with, in order; empty means 200.
    script: VecDeque<u16>,
    /// Shape problems seen in requests (a test asserts this stays empty).
    problems: Vec<String>,
}

/// A local stand-in for the WhatsApp Cloud API that checks each request's shape.
#[derive(Clone)]
pub struct FakeWhatsApp {
    pub base_url: String,
    state: Arc<Mutex<WaState>>,
    arrived: Arc<Notify>,
}

fn check_shape(req: &WaRequest) -> Vec<String> {
    let mut problems = Vec::new();
    let b = &req.body;
    if req.path != format!("/{WA_PHONE_NUMBER_ID}/messages") {
        problems.push(format!("path {}", req.path));
    }
    if req.authorization != format!("Bearer {WA_ACCESS_TOKEN}") {
        problems.push("authorization header".into());
    }
    if b["messaging_product"] != "whatsapp" || b["type"] != "template" {
        problems.push("messaging_product/type".into());
    }
    let to = b["to"].as_str().unwrap_or_default();
    if to.starts_with('+')
        || !(8..=15).contains(&to.len())
        || !to.bytes().all(|c| c.is_ascii_digit())
    {
        problems.push(format!("to {to:?}"));
    }
    if b["template"]["language"]["code"].as_str().is_none()
        || b["template"]["name"].as_str().is_none()
    {
        problems.push("template name/language".into());
    }
    if b["template"]["components"][0]["type"] != "body" {
        problems.push("first component is not the body".into());
    }
    problems
}

async fn wa_messages(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<Arc<Mutex<WaState>>>,
    arrived: web::Data<Arc<Notify>>,
) -> HttpResponse {
    let r = WaRequest {
        path: req.path().to_string(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: body.into_inner(),
    };
    let status = {
        let mut s = state.lock().expect("lock");
        s.hits += 1;
        let problems = check_shape(&r);
        s.problems.extend(problems);
        let status = s.script.pop_front().unwrap_or(200);
        if status == 200 {
            s.received.push(r);
        }
        status
    };
    arrived.notify_waiters();
    match status {
        200 => HttpResponse::Ok()
            .json(json!({"messaging_product":"whatsapp","messages":[{"id":"wamid.test"}]})),
        429 => HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", "0"))
            .json(json!({"error":{"message":"rate limited"}})),
        s => HttpResponse::build(actix_web::http::StatusCode::from_u16(s).expect("status"))
            .json(json!({"error":{"message":"scripted failure","code":s}})),
    }
}

impl FakeWhatsApp {
    pub async fn start() -> FakeWhatsApp {
        let state = Arc::new(Mutex::new(WaState::default()));
        let arrived = Arc::new(Notify::new());
        let (s, a) = (state.clone(), arrived.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(s.clone()))
                .app_data(web::Data::new(a.clone()))
                .route("/{phone_id}/messages", web::post().to(wa_messages))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind fake whatsapp");
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        FakeWhatsApp {
            base_url: format!("http://127.0.0.1:{port}"),
            state,
            arrived,
        }
    }

    /// Answers the next requests with these statuses (then 200 again).
    pub fn script(&self, statuses: &[u16]) {
        self.state
            .lock()
            .expect("lock")
            .script
            .extend(statuses.iter().copied());
    }

    pub fn received(&self) -> Vec<WaRequest> {
        self.state.lock().expect("lock").received.clone()
    }

    /// How many requests arrived, scripted failures included.
    pub fn hits(&self) -> usize {
        self.state.lock().expect("lock").hits
    }

    pub fn problems(&self) -> Vec<String> {
        self.state.lock().expect("lock").problems.clone()
    }

    /// Waits until a delivered request matches `pred`, and returns it.
    pub async fn wait_for(&self, pred: impl Fn(&WaRequest) -> bool) -> WaRequest {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.arrived.notified();
            if let Some(r) = self.received().into_iter().find(|r| pred(r)) {
                return r;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no WhatsApp request arrived that matched; got {:?}",
                    self.received()
                );
            }
        }
    }

    /// The newest one-time code sent to `phone` (E.164).
    pub async fn code_for(&self, phone: &str) -> String {
        let digits = phone.trim_start_matches('+').to_string();
        let before = self
            .received()
            .iter()
            .filter(|r| r.to() == digits && r.template() == "scan2order_code")
            .count();
        let r = self
            .wait_for(|r| r.to() == digits && r.template() == "scan2order_code")
            .await;
        let all: Vec<WaRequest> = self
            .received()
            .into_iter()
            .filter(|r| r.to() == digits && r.template() == "scan2order_code")
            .collect();
        let newest = if all.len() > before {
            all.last().cloned().unwrap_or(r)
        } else {
            r
        };
        let code = newest
            .body_params()
            .into_iter()
            .next()
            .expect("code parameter");
        assert_eq!(
            newest.body["template"]["components"][1]["parameters"][0]["text"], code,
            "copy-code button repeats the code"
        );
        code
    }
}

/// Settings every test starts from: the shipped defaults, a fresh database, port 0, the fake Cloud API.
pub fn test_settings(db: &str, wa: &FakeWhatsApp) -> Settings {
    let mut s = Settings::defaults().expect("defaults");
    s.http.port = 0;
    s.http.workers = 2;
    s.database.url = Secret::new(format!("{PG_BASE}/{db}"));
    s.database.pool_size = 8;
    s.database.create_if_missing = false;
    s.engine.shards = 2;
    s.demo.seed_on_start = false;
    s.whatsapp.mode = WhatsAppMode::Cloud;
    s.whatsapp.api_base_url = wa.base_url.clone();
    s.whatsapp.phone_number_id = WA_PHONE_NUMBER_ID.into();
    s.whatsapp.access_token = Secret::new(WA_ACCESS_TOKEN);
    s.whatsapp.outbox_poll_ms = 200;
    s.sockets.resume_grace_ms = 150;
    // Every test client is 127.0.0.1: the abuse limits are switched on only by the tests about them.
    s.rate_limits.enabled = false;
    // Every test client is 127.0.0.1: per-IP limits would couple unrelated calls. Tests of the limits
    // turn them back on with `spawn_app_with`.
    s.rate_limits.enabled = false;
    s
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub db_name: String,
    pub http: reqwest::Client,
    pub wa: FakeWhatsApp,
    pub handle: Option<AppHandle>,
    pub settings: Settings,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Settings)) -> TestApp {
    scan2order::install_crypto_provider();
    let db_name = fresh_database().await;
    let wa = FakeWhatsApp::start().await;
    let mut settings = test_settings(&db_name, &wa);
    tune(&mut settings);
    start_on(db_name, wa, settings).await
}

async fn start_on(db_name: String, wa: FakeWhatsApp, settings: Settings) -> TestApp {
    let app = Application::build(settings.clone())
        .await
        .expect("application builds");
    let port = app.port();
    let handle = app.handle();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        db_name,
        http: reqwest::Client::builder().build().expect("client"),
        wa,
        handle: Some(handle),
        settings,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop_now();
        }
        // The other nodes of a fleet share the first node's database.
        if !self.db_name.is_empty() {
            drop_database(self.db_name.clone());
        }
    }
}

/// Nodes of one fleet on one fresh database and a private `nats-server`; node 0 owns the database.
pub struct TestFleet {
    pub nodes: Vec<TestApp>,
    pub nats: crate::nats::NatsServer,
}

/// A fleet of `n` nodes (`cluster.enabled`, short leases), each started like [`spawn_app_with`].
pub async fn spawn_fleet(n: usize, tune: impl Fn(&mut Settings)) -> TestFleet {
    scan2order::install_crypto_provider();
    let nats = crate::nats::NatsServer::start();
    let db_name = fresh_database().await;
    let wa = FakeWhatsApp::start().await;
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mut settings = test_settings(&db_name, &wa);
        settings.cluster.enabled = true;
        settings.cluster.nats_url = nats.url();
        settings.cluster.node_id = format!("node-{i}");
        settings.cluster.lease_ttl_ms = 1_000;
        tune(&mut settings);
        let mut node = start_on(db_name.clone(), wa.clone(), settings).await;
        if i > 0 {
            node.db_name = String::new();
        }
        nodes.push(node);
    }
    TestFleet { nodes, nats }
}

impl TestFleet {
    pub fn node(&self, i: usize) -> &TestApp {
        &self.nodes[i]
    }
}

/// A dish of a fixture restaurant.
#[derive(Clone, Debug)]
pub struct ItemFx {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i64,
}

#[derive(Clone, Debug)]
pub struct TableFx {
    pub id: Uuid,
    pub label: String,
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct RestaurantFx {
    pub id: Uuid,
    pub slug: String,
    pub items: Vec<ItemFx>,
    pub tables: Vec<TableFx>,
    pub chef: (String, String),
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&format!("{PG_BASE}/{}", self.db_name))
            .await
            .expect("connect to test database")
    }

    /// Stops this server (clean shutdown) and starts a new one on the same database.
    pub async fn restart(mut self) -> TestApp {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        let db = std::mem::take(&mut self.db_name);
        let wa = self.wa.clone();
        let mut settings = self.settings.clone();
        settings.http.port = 0;
        std::mem::forget(self);
        start_on(db, wa, settings).await
    }

    /// A restaurant with `items` dishes (prices 500, 600, …), `tables` tables and a chef.
    pub async fn restaurant(&self, slug: &str, items: usize, tables: usize) -> RestaurantFx {
        let mut conn = self.db().await;
        let now = Utc::now();
        let id = Uuid::new_v4();
        Restaurant::new(
            id,
            slug,
            format!("Restaurant {slug}"),
            "EUR",
            "Europe/Berlin",
            now,
        )
        .insert(&mut conn)
        .await
        .expect("restaurant");
        let category = Uuid::new_v4();
        diesel::insert_into(menu_categories::table)
            .values(MenuCategory {
                id: category,
                restaurant_id: id,
                name: "Mains".into(),
                position: 0,
                created_at: now,
            })
            .execute(&mut conn)
            .await
            .expect("category");
        let item_rows: Vec<MenuItem> = (0..items)
            .map(|i| MenuItem {
                id: Uuid::new_v4(),
                restaurant_id: id,
                category_id: category,
                name: format!("Dish {i} of {slug}"),
                description: "Tasty".into(),
                price_cents: 500 + 100 * i as i64,
                available: true,
                position: i as i32,
                tags: vec![],
                deleted_at: None,
                created_at: now,
                updated_at: now,
                allergens: vec![],
                image_hash: None,
            })
            .collect();
        diesel::insert_into(menu_items::table)
            .values(&item_rows)
            .execute(&mut conn)
            .await
            .expect("items");
        let table_rows: Vec<RestaurantTable> = (0..tables)
            .map(|i| RestaurantTable {
                id: Uuid::new_v4(),
                restaurant_id: id,
                label: format!("T{}", i + 1),
                token: scan2order_schema::tokens::new_table_token(),
                active: true,
                deleted_at: None,
                created_at: now + chrono::Duration::milliseconds(i as i64),
            })
            .collect();
        diesel::insert_into(restaurant_tables::table)
            .values(&table_rows)
            .execute(&mut conn)
            .await
            .expect("tables");
        let chef = (format!("chef-{slug}"), format!("pw-{slug}-kitchen"));
        self.staff(&chef.0, &chef.1, "chef", Some(id)).await;
        RestaurantFx {
            id,
            slug: slug.into(),
            items: item_rows
                .iter()
                .map(|i| ItemFx {
                    id: i.id,
                    name: i.name.clone(),
                    price_cents: i.price_cents,
                })
                .collect(),
            tables: table_rows
                .iter()
                .map(|t| TableFx {
                    id: t.id,
                    label: t.label.clone(),
                    token: t.token.clone(),
                })
                .collect(),
            chef,
        }
    }

    pub async fn staff(
        &self,
        username: &str,
        password: &str,
        role: &str,
        restaurant: Option<Uuid>,
    ) -> Uuid {
        let mut conn = self.db().await;
        let id = Uuid::new_v4();
        diesel::insert_into(staff_users::table)
            .values(StaffUserRow {
                id,
                username: username.into(),
                password_hash: scan2order::auth::hash_password(password).expect("hash"),
                role: role.parse().expect("chef or admin"),
                restaurant_id: restaurant,
                created_at: Utc::now(),
            })
            .execute(&mut conn)
            .await
            .expect("staff");
        id
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Logs in and returns the bearer token.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let res = self
            .post_json(
                "/api/v1/auth/login",
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(res.status(), 200, "login of {username}");
        let body: Value = res.json().await.expect("json");
        body["token"].as_str().expect("token").to_string()
    }

    pub async fn login_chef(&self, r: &RestaurantFx) -> String {
        self.login(&r.chef.0, &r.chef.1).await
    }

    /// Verifies a phone through the fake WhatsApp API and returns the customer token.
    pub async fn verify_phone(&self, phone: &str) -> String {
        let res = self
            .post_json("/api/v1/otp/send", &json!({"phone": phone}))
            .await;
        assert_eq!(res.status(), 202);
        let code = self.wa.code_for(phone).await;
        let res = self
            .post_json("/api/v1/otp/verify", &json!({"phone": phone, "code": code}))
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("json");
        body["customer_token"].as_str().expect("token").to_string()
    }

    pub async fn place_order_raw(
        &self,
        customer: &str,
        key: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/orders"))
            .bearer_auth(customer)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Places an order of `(item, quantity)` lines at a table; asserts 201 and returns it.
    pub async fn place_order(
        &self,
        customer: &str,
        table: &TableFx,
        lines: &[(&ItemFx, i32)],
    ) -> Order {
        let res = self
            .place_order_raw(
                customer,
                &Uuid::new_v4().to_string(),
                &order_body(table, lines),
            )
            .await;
        let status = res.status();
        let text = res.text().await.expect("body");
        assert_eq!(status, 201, "{text}");
        serde_json::from_str(&text).expect("order json")
    }

    pub async fn set_status(&self, chef: &str, order: &str, status: &str) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/v1/kitchen/orders/{order}/status")))
            .bearer_auth(chef)
            .json(&json!({"status": status}))
            .send()
            .await
            .expect("request")
    }

    /// A GET, with a bearer token when given.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    /// `PATCH /api/v1/kitchen/menu-items/{item}` `{available}`.
    pub async fn set_available(
        &self,
        chef: &str,
        item: Uuid,
        available: bool,
    ) -> reqwest::Response {
        self.http
            .patch(self.url(&format!("/api/v1/kitchen/menu-items/{item}")))
            .bearer_auth(chef)
            .json(&json!({"available": available}))
            .send()
            .await
            .expect("request")
    }

    /// `PATCH /api/v1/kitchen/restaurant` `{accepting_orders}`.
    pub async fn set_accepting(&self, chef: &str, accepting: bool) -> reqwest::Response {
        self.http
            .patch(self.url("/api/v1/kitchen/restaurant"))
            .bearer_auth(chef)
            .json(&json!({"accepting_orders": accepting}))
            .send()
            .await
            .expect("request")
    }

    /// The running engine: registry, activation counter, per-restaurant stats.
    pub fn engine(&self) -> ShardSupervisor {
        self.handle
            .as_ref()
            .expect("the app is running")
            .context()
            .engine
    }

    /// The counters of a restaurant's actor; `None` while the restaurant is not active.
    pub async fn restaurant_stats(&self, restaurant: Uuid) -> Option<RestaurantStats> {
        self.engine()
            .restaurant_stats()
            .await
            .into_iter()
            .find(|s| s.restaurant_id.get() == restaurant)
    }

    /// Asserts that a boolean SQL expression over the test database holds now.
    pub async fn assert_sql(&self, what: &str, condition: &str) {
        assert!(
            sql_holds(&mut self.db().await, condition).await,
            "{what}: {condition}"
        );
    }

    /// Waits until a boolean SQL expression over the test database holds: Postgres state as the
    /// signal, checked every few milliseconds within [`PATIENCE`].
    pub async fn wait_for_sql(&self, what: &str, condition: &str) {
        let mut conn = self.db().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !sql_holds(&mut conn, condition).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {condition}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn kitchen_socket(&self, token: &str, query: &str) -> WsClient {
        WsClient::connect(&self.ws_url(&format!("/ws/kitchen?token={token}{query}"))).await
    }

    pub async fn table_socket(&self, table_token: &str, query: &str) -> WsClient {
        WsClient::connect(&self.ws_url(&format!("/ws/table/{table_token}{query}"))).await
    }
}

/// Polls `probe` (engine state, not wall time) until it holds, within [`PATIENCE`].
pub async fn until(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a boolean SQL expression holds (NULL counts as false).
pub async fn sql_holds(conn: &mut AsyncPgConnection, condition: &str) -> bool {
    #[derive(QueryableByName)]
    struct Holds {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ok: bool,
    }
    let sql = format!("SELECT coalesce(({condition}), false) AS ok");
    let holds: Holds = diesel::sql_query(&sql)
        .get_result(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    holds.ok
}

/// The body of `POST /api/v1/orders` for `(item, quantity)` lines at a table.
pub fn order_body(table: &TableFx, lines: &[(&ItemFx, i32)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(i, q)| json!({"menu_item_id": i.id, "quantity": q}))
        .collect();
    json!({"table_token": table.token, "items": items})
}

/// Words that would betray SQL, Rust types or crate internals in an answer to a client.
const INTERNAL_WORDS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "sql",
    "SQL",
    "diesel",
    "postgres",
    "Postgres",
    "relation",
    "constraint",
    "duplicate key",
    "panicked",
    "scan2order",
    "::",
    "struct ",
    "enum ",
    "Request",
    "bb8",
    "actix",
    "backtrace",
];

/// Panics when `text` carries SQL, Rust type or crate names. Ids are left out of the search: a random
/// UUID can spell one of the words in hex (`db1a48c2-fbb8-…` holds "bb8").
pub fn assert_no_internals(text: &str) {
    let scanned = without_uuids(text);
    for word in INTERNAL_WORDS {
        assert!(
            !scanned.contains(word),
            "internal detail {word:?} in {text}"
        );
    }
}

/// `text` with every UUID (8-4-4-4-12 hex digits) replaced by `<id>`.
fn without_uuids(text: &str) -> String {
    fn is_uuid(b: &[u8]) -> bool {
        b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.get(..36).is_some_and(|head| is_uuid(head.as_bytes())) {
            out.push_str("<id>");
            rest = &rest[36..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[test]
fn ids_that_spell_an_internal_word_are_not_internals() {
    assert_no_internals(r#"{"item_ids":["db1a48c2-fbb8-468e-ab3e-8c5f7877640e"]}"#);
    let leaked = std::panic::catch_unwind(|| assert_no_internals("pool bb8 timed out"));
    assert!(
        leaked.is_err(),
        "a crate name outside an id is still caught"
    );
}

/// Asserts PROTOCOL.md's error answer: `status`, a `{"error": code, "message": ...}` body (plus
/// `item_ids` where a conflict names items) and nothing internal in it. Returns the body.
pub async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let text = res.text().await.expect("body");
    assert_eq!(got, status, "status of {text}");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let fields = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    for key in fields.keys() {
        assert!(
            [
                "error",
                "message",
                "item_ids",
                "option_ids",
                "item_id",
                "group_id"
            ]
            .contains(&key.as_str()),
            "unexpected field {key} in {text}"
        );
    }
    assert_eq!(body["error"], code, "{text}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error needs a message: {text}"
    );
    assert_no_internals(&text);
    body
}

/// [`expect_error`] for 400 `invalid_request`, also checking that the message names `field`.
pub async fn expect_invalid(res: reqwest::Response, field: &str) -> Value {
    let body = expect_error(res, 400, "invalid_request").await;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "the message should name {field}: {message}"
    );
    body
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket client that reads the server's JSON messages.
pub struct WsClient {
    pub stream: WsStream,
}

/// How a socket ended.
#[derive(Debug, PartialEq)]
pub enum WsEnd {
    Closed(Option<u16>),
    Message(Box<ServerMsg>),
}

impl WsClient {
    pub async fn connect(url: &str) -> WsClient {
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 24));
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
            .await
            .expect("socket connects");
        WsClient { stream }
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("send");
    }

    /// The next text frame as the server sent it, or the close code, within `wait`; `None` when
    /// nothing arrived in time.
    pub async fn next_raw_within(&mut self, wait: Duration) -> Option<Result<String, Option<u16>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            return Some(match msg {
                Some(Ok(Message::Text(t))) => Ok(t.to_string()),
                Some(Ok(Message::Close(frame))) => Err(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Err(None),
            });
        }
    }

    /// The next text frame as the server sent it, within [`PATIENCE`]; panics on close.
    pub async fn next_text(&mut self) -> String {
        match self.next_raw_within(PATIENCE).await {
            Some(Ok(text)) => text,
            Some(Err(code)) => panic!("socket closed ({code:?}) while a message was expected"),
            None => panic!("socket went quiet"),
        }
    }

    /// The next JSON message or the close, within [`PATIENCE`].
    pub async fn next_event(&mut self) -> WsEnd {
        match self.next_raw_within(PATIENCE).await {
            Some(Ok(t)) => WsEnd::Message(Box::new(
                serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad frame {t}: {e}")),
            )),
            Some(Err(code)) => WsEnd::Closed(code),
            None => panic!("socket went quiet"),
        }
    }

    /// Asserts that nothing arrives for `wait`. Only meaningful after a signal showed that whatever
    /// could arrive would have been sent by now.
    pub async fn assert_quiet_for(&mut self, wait: Duration) {
        if let Some(got) = self.next_raw_within(wait).await {
            panic!("expected silence, got {got:?}");
        }
    }

    /// The next JSON message; panics on close.
    pub async fn next(&mut self) -> ServerMsg {
        match self.next_event().await {
            WsEnd::Message(m) => *m,
            WsEnd::Closed(code) => panic!("socket closed ({code:?}) while a message was expected"),
        }
    }

    /// Reads `hello` then `snapshot`, returning `(epoch, seq, orders)`.
    pub async fn hello_snapshot(&mut self) -> (String, u64, Vec<Order>) {
        match self.next().await {
            ServerMsg::Hello { .. } => {}
            other => panic!("expected hello, got {other:?}"),
        }
        match self.next().await {
            ServerMsg::Snapshot {
                epoch, seq, orders, ..
            } => (epoch, seq, orders),
            other => panic!("expected snapshot, got {other:?}"),
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        loop {
            if let WsEnd::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn until(&mut self, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.next().await;
            if pred(&m) {
                return m;
            }
        }
    }
}
