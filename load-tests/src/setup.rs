//! Setup from a running server: tables and logins from `scan2order seed-demo` output (`--seed`),
//! customer tokens from `mint-tokens` output (`--tokens`), and — for scales the demo seed
//! does not reach — restaurants and tables created straight in Postgres (`--database-url` with
//! `--db-restaurants`), which the server activates on first use like any other. The result is a
//! [`Plan`] every worker process reads.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
use chrono::Utc;
use scan2order_schema::models::{MenuCategory, MenuItem, Restaurant, RestaurantTable};
use scan2order_schema::wire::{LoginRequest, LoginResponse, TableMenu};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::HttpPool;

/// Where the server is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
}

impl Target {
    /// Parses `http://host:port`; refuses anything outside 127.0.0.0/8 and ::1 — load runs stay on this
    /// machine.
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .with_context(|| format!("{url}: only http:// (or ws://) URLs are supported"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let with_port = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("{url}: cannot resolve"))?
            .find(|a| a.ip().is_loopback())
            .with_context(|| {
                format!("{url}: not a loopback address; load runs only aim at 127.0.0.0/8")
            })?;
        Ok(Target {
            addr,
            host: hostport.to_string(),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TablePlan {
    pub label: String,
    pub token: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RestaurantPlan {
    pub id: Uuid,
    pub slug: String,
    /// A staff bearer token that may act on this restaurant's kitchen.
    pub staff_token: String,
    /// True when the token is an admin's: kitchen calls then name the restaurant.
    pub via_admin: bool,
    /// Menu items and whether each is available now.
    pub items: Vec<(Uuid, bool)>,
    /// The options a guest picks on a dish with required choices (the first available ones of each
    /// group that needs some), so orders of such dishes are valid.
    #[serde(default)]
    pub choices: std::collections::HashMap<Uuid, Vec<Uuid>>,
    pub tables: Vec<TablePlan>,
}

impl RestaurantPlan {
    /// The options to send with a line of `item` (none when it has no required choice).
    pub fn options_for(&self, item: Uuid) -> Option<Vec<scan2order_schema::domain::MenuOptionId>> {
        self.choices
            .get(&item)
            .map(|ids| ids.iter().map(|id| (*id).into()).collect())
    }

    /// The query string kitchen calls need (`?restaurant_id=` for an admin).
    pub fn kitchen_query(&self) -> String {
        if self.via_admin {
            format!("?restaurant_id={}", self.id)
        } else {
            String::new()
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    pub restaurants: Vec<RestaurantPlan>,
    pub customer_tokens: Vec<String>,
}

/// One line of `seed-demo` output the tool understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedLine {
    Table {
        slug: String,
        label: String,
        token: String,
    },
    Login {
        role: String,
        slug: Option<String>,
        username: String,
        password: String,
    },
}

/// Parses `TABLE <slug> <label> <url>` and `LOGIN <role> <slug|-> <user> <password>` lines; others
/// are ignored (the seed prints text for people too).
pub fn parse_seed(text: &str) -> Vec<SeedLine> {
    text.lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["TABLE", slug, label, url] => {
                    let token = url.rsplit('/').next()?.to_string();
                    Some(SeedLine::Table {
                        slug: (*slug).to_string(),
                        label: (*label).to_string(),
                        token,
                    })
                }
                ["LOGIN", role, slug, user, password] => Some(SeedLine::Login {
                    role: (*role).to_string(),
                    slug: (*slug != "-").then(|| (*slug).to_string()),
                    username: (*user).to_string(),
                    password: (*password).to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Reads `token phone` lines (the output of `mint-tokens`).
pub fn read_tokens(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| !t.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// How setup should run.
pub struct SetupArgs<'a> {
    pub target: Target,
    pub seed: Option<&'a Path>,
    pub tokens: Option<&'a Path>,
    pub database_url: Option<&'a str>,
    pub db_restaurants: usize,
    pub db_tables: usize,
    /// A fleet: restaurant i's menu is read through `activate_via[i % n]` (empty: `target`), so a
    /// restaurant no node runs yet starts there.
    pub activate_via: Vec<Target>,
    pub bind: Option<IpAddr>,
}

/// Builds the plan: reads files, creates database restaurants when asked, signs staff in, reads menus.
pub async fn build_plan(args: SetupArgs<'_>) -> anyhow::Result<Plan> {
    let seed = match args.seed {
        Some(p) => parse_seed(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => Vec::new(),
    };
    let pool = HttpPool::new(
        args.target.addr,
        args.bind,
        args.target.host.clone(),
        8,
        Duration::from_secs(30),
    );
    // Tables by restaurant slug, in seed order.
    let mut by_slug: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for l in &seed {
        if let SeedLine::Table { slug, label, token } = l {
            match by_slug.iter_mut().find(|(s, _)| s == slug) {
                Some((_, v)) => v.push((label.clone(), token.clone())),
                None => by_slug.push((slug.clone(), vec![(label.clone(), token.clone())])),
            }
        }
    }
    if let Some(url) = args.database_url {
        if args.db_restaurants > 0 {
            for (slug, tables) in
                ensure_db_restaurants(url, args.db_restaurants, args.db_tables).await?
            {
                by_slug.push((slug, tables));
            }
        }
    }
    if by_slug.is_empty() {
        bail!("no tables: pass --seed with `scan2order seed-demo` output, or --database-url with --db-restaurants");
    }
    let admin = seed.iter().find_map(|l| match l {
        SeedLine::Login {
            role,
            username,
            password,
            ..
        } if role == "admin" => Some((username.clone(), password.clone())),
        _ => None,
    });
    let mut admin_token: Option<String> = None;
    let mut restaurants = Vec::new();
    let via: Vec<Arc<HttpPool>> = args
        .activate_via
        .iter()
        .map(|t| {
            HttpPool::new(
                t.addr,
                args.bind,
                t.host.clone(),
                8,
                Duration::from_secs(30),
            )
        })
        .collect();
    for (n, (slug, tables)) in by_slug.into_iter().enumerate() {
        let chef = seed.iter().find_map(|l| match l {
            SeedLine::Login {
                role,
                slug: Some(s),
                username,
                password,
            } if role == "chef" && *s == slug => Some((username.clone(), password.clone())),
            _ => None,
        });
        let (staff_token, via_admin) = match chef {
            Some((u, p)) => (login(&pool, &u, &p).await?, false),
            None => {
                if admin_token.is_none() {
                    let (u, p) = admin.clone().with_context(|| {
                        format!(
                            "restaurant {slug} has no chef login and the seed has no admin login"
                        )
                    })?;
                    admin_token = Some(login(&pool, &u, &p).await?);
                }
                (admin_token.clone().unwrap_or_default(), true)
            }
        };
        let first = tables
            .first()
            .map(|(_, t)| t.clone())
            .with_context(|| format!("restaurant {slug} has no tables"))?;
        let reader = if via.is_empty() {
            &pool
        } else {
            &via[n % via.len()]
        };
        let resp = reader
            .call("GET", &format!("/api/v1/tables/{first}"), &[], None)
            .await
            .map_err(|e| anyhow::anyhow!("reading the menu of {slug}: {e}"))?;
        if resp.status != 200 {
            bail!("GET /api/v1/tables/<token of {slug}>: HTTP {}", resp.status);
        }
        let menu: TableMenu = resp.json()?;
        let items = menu
            .menu
            .categories
            .iter()
            .flat_map(|c| c.items.iter().map(|i| (i.id.get(), i.available)))
            .collect();
        let choices = menu
            .menu
            .categories
            .iter()
            .flat_map(|c| c.items.iter())
            .filter_map(|i| {
                let picked: Vec<Uuid> = i
                    .option_groups
                    .iter()
                    .flat_map(|g| {
                        g.options
                            .iter()
                            .filter(|o| o.available)
                            .take(g.min.max(0) as usize)
                            .map(|o| o.id.get())
                    })
                    .collect();
                (!picked.is_empty()).then(|| (i.id.get(), picked))
            })
            .collect();
        restaurants.push(RestaurantPlan {
            id: menu.restaurant.id.get(),
            slug,
            staff_token,
            via_admin,
            items,
            choices,
            tables: tables
                .into_iter()
                .map(|(label, token)| TablePlan { label, token })
                .collect(),
        });
    }
    let customer_tokens = match args.tokens {
        Some(p) => read_tokens(p)?,
        None => Vec::new(),
    };
    Ok(Plan {
        target: args.target,
        restaurants,
        customer_tokens,
    })
}

async fn login(pool: &Arc<HttpPool>, username: &str, password: &str) -> anyhow::Result<String> {
    let body = serde_json::to_vec(&LoginRequest {
        username: username.to_string(),
        password: password.to_string(),
    })?;
    let resp = pool
        .call("POST", "/api/v1/auth/login", &[], Some(&body))
        .await
        .map_err(|e| anyhow::anyhow!("login {username}: {e}"))?;
    if resp.status != 200 {
        bail!("login {username}: HTTP {}", resp.status);
    }
    Ok(resp.json::<LoginResponse>()?.token)
}

/// Slug of the n-th load-test restaurant.
fn db_slug(n: usize) -> String {
    format!("lt-{n:05}")
}

/// Creates (or finds) `count` load-test restaurants `lt-00000…` with a small menu and `tables` tables
/// each, directly in Postgres. Idempotent. Returns (slug, [(label, token)]) per restaurant.
async fn ensure_db_restaurants(
    url: &str,
    count: usize,
    tables: usize,
) -> anyhow::Result<Vec<(String, Vec<(String, String)>)>> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    use scan2order_schema::schema::restaurant_tables;
    let mut conn = AsyncPgConnection::establish(url)
        .await
        .with_context(|| "connecting to --database-url")?;
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let slug = db_slug(n);
        let now = Utc::now();
        let restaurant = match Restaurant::find_by_slug(&mut conn, &slug).await? {
            Some(r) => r,
            None => {
                insert_restaurant(&mut conn, &slug, &format!("Load test {n}"), "load test")
                    .await?
                    .0
            }
        };
        let mut have = RestaurantTable::for_restaurant(&mut conn, restaurant.id).await?;
        if have.len() < tables {
            let new: Vec<RestaurantTable> = (have.len()..tables)
                .map(|i| RestaurantTable {
                    id: Uuid::now_v7(),
                    restaurant_id: restaurant.id,
                    label: format!("L{i}"),
                    token: random_token(),
                    active: true,
                    deleted_at: None,
                    created_at: now,
                })
                .collect();
            for chunk in new.chunks(5000) {
                diesel::insert_into(restaurant_tables::table)
                    .values(chunk)
                    .execute(&mut conn)
                    .await?;
            }
            have.extend(new);
        }
        out.push((
            slug,
            have.into_iter()
                .filter(|t| t.active)
                .take(tables)
                .map(|t| (t.label, t.token))
                .collect(),
        ));
    }
    Ok(out)
}

/// A table token like the server's: 192 random bits, URL-safe base64.
fn random_token() -> String {
    let b: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Inserts a restaurant with one category and eight available dishes (5.00 … 12.00 EUR) straight into
/// Postgres; `what` describes the dishes ("load test dish"). Returns the restaurant and its dishes.
pub async fn insert_restaurant(
    conn: &mut diesel_async::AsyncPgConnection,
    slug: &str,
    name: &str,
    what: &str,
) -> anyhow::Result<(Restaurant, Vec<MenuItem>)> {
    use diesel_async::RunQueryDsl;
    use scan2order_schema::schema::{menu_categories, menu_items, restaurants};
    let now = Utc::now();
    let r = Restaurant::new(Uuid::now_v7(), slug, name, "EUR", "Europe/Rome", now);
    diesel::insert_into(restaurants::table)
        .values(&r)
        .execute(conn)
        .await?;
    let cat = MenuCategory {
        id: Uuid::now_v7(),
        restaurant_id: r.id,
        name: "Dishes".into(),
        position: 0,
        created_at: now,
    };
    diesel::insert_into(menu_categories::table)
        .values(&cat)
        .execute(conn)
        .await?;
    let items: Vec<MenuItem> = (0..8)
        .map(|i| MenuItem {
            id: Uuid::now_v7(),
            restaurant_id: r.id,
            category_id: cat.id,
            name: format!("Dish {i}"),
            description: format!("{what} dish"),
            price_cents: 500 + 100 * i64::from(i),
            available: true,
            position: i,
            tags: Vec::new(),
            deleted_at: None,
            created_at: now,
            updated_at: now,
            allergens: Vec::new(),
            image_hash: None,
        })
        .collect();
    diesel::insert_into(menu_items::table)
        .values(&items)
        .execute(conn)
        .await?;
    Ok((r, items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_lines_are_read_and_prose_ignored() {
        let text = "Seeded the demo restaurants:\n\
                    TABLE trattoria-roma T1 http://localhost:8080/t/abc_DEF-1\n\
                    LOGIN chef trattoria-roma chef-roma roma-kitchen\n\
                    LOGIN admin - admin scan2order-admin\n";
        let lines = parse_seed(text);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            SeedLine::Table {
                slug: "trattoria-roma".into(),
                label: "T1".into(),
                token: "abc_DEF-1".into()
            }
        );
        assert!(matches!(&lines[2], SeedLine::Login { slug: None, role, .. } if role == "admin"));
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(Target::parse("http://127.0.0.1:8080").is_ok());
        assert!(Target::parse("http://127.0.0.1:8080/").is_ok());
        assert!(Target::parse("http://10.0.0.1:8080").is_err());
        assert!(Target::parse("https://127.0.0.1").is_err());
    }
}
