//! `seed-demo`: two restaurants with realistic menus (allergens declared, choices on some dishes: sizes,
//! extras, a steak's doneness, oat milk), ten tables each, a chef per restaurant and an admin.
//! Idempotent: what exists is left alone, and the same lines are printed every time.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use scan2order_schema::models::{
    MenuCategory, MenuItem, Restaurant, RestaurantTable, StaffUserRow,
};
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::schema::{
    menu_categories, menu_items, menu_options, option_groups, restaurant_tables, staff_users,
};
use scan2order_schema::{DbConn, DbPool};
use uuid::Uuid;

use scan2order_schema::tokens::new_table_token;
use scan2order_schema::wire::Role;

use crate::auth::hash_password;

/// Tables per demo restaurant.
const DEMO_TABLES: usize = 10;
/// The demo admin.
pub const DEMO_ADMIN: (&str, &str) = ("admin", "scan2order-admin");

struct DemoItem {
    name: &'static str,
    description: &'static str,
    price_cents: i64,
    tags: &'static [&'static str],
}

struct DemoRestaurant {
    slug: &'static str,
    name: &'static str,
    currency: &'static str,
    time_zone: &'static str,
    chef: (&'static str, &'static str),
    menu: &'static [(&'static str, &'static [DemoItem])],
}

const fn item(
    name: &'static str,
    description: &'static str,
    price_cents: i64,
    tags: &'static [&'static str],
) -> DemoItem {
    DemoItem {
        name,
        description,
        price_cents,
        tags,
    }
}

/// The allergens each demo dish declares (the law's codes), by dish name.
const DEMO_ALLERGENS: &[(&str, &[&str])] = &[
    ("Bruschetta al pomodoro", &["gluten"]),
    ("Burrata", &["milk", "nuts"]),
    ("Arancini", &["gluten", "eggs", "milk"]),
    ("Spaghetti carbonara", &["gluten", "eggs", "milk"]),
    ("Cacio e pepe", &["gluten", "milk"]),
    ("Pappardelle al ragù", &["gluten", "eggs", "celery"]),
    ("Penne arrabbiata", &["gluten"]),
    ("Margherita", &["gluten", "milk"]),
    ("Diavola", &["gluten", "milk"]),
    ("Quattro formaggi", &["gluten", "milk"]),
    ("Tiramisù", &["gluten", "eggs", "milk"]),
    ("Panna cotta", &["milk"]),
    ("Chianti Classico (glass)", &["sulphites"]),
    ("Salt & pepper squid", &["gluten", "eggs", "molluscs"]),
    ("Smoked mackerel pâté", &["gluten", "fish", "milk"]),
    ("Soup of the day", &["gluten", "milk", "celery"]),
    ("Fish & chips", &["gluten", "eggs", "fish"]),
    ("Grilled sea bass", &["fish", "milk"]),
    ("Fish pie", &["crustaceans", "fish", "milk"]),
    ("Halloumi burger", &["gluten", "eggs", "milk", "sesame"]),
    ("Garden salad", &["mustard"]),
    ("Sticky toffee pudding", &["gluten", "eggs", "milk"]),
    ("Eton mess", &["eggs", "milk"]),
    ("Local pale ale (pint)", &["gluten"]),
];

/// An option of a demo choice: name, price delta, allergens.
type DemoOption = (&'static str, i64, &'static [&'static str]);

const PIZZA_SIZES: &[DemoOption] = &[("Regular", 0, &[]), ("Large", 400, &[])];
const PIZZA_EXTRAS: &[DemoOption] = &[
    ("Buffalo mozzarella", 250, &["milk"]),
    ("Olives", 100, &[]),
    ("Anchovies", 150, &["fish"]),
    ("Rocket", 80, &[]),
];

/// The demo dishes' choices: dish, group, min, max, options.
const DEMO_CHOICES: &[(&str, &str, i32, i32, &[DemoOption])] = &[
    ("Margherita", "Size", 1, 1, PIZZA_SIZES),
    ("Margherita", "Extras", 0, 3, PIZZA_EXTRAS),
    ("Diavola", "Size", 1, 1, PIZZA_SIZES),
    ("Diavola", "Extras", 0, 3, PIZZA_EXTRAS),
    (
        "Espresso",
        "Milk",
        0,
        1,
        &[
            ("A dash of milk", 0, &["milk"]),
            ("Oat milk", 40, &["gluten"]),
        ],
    ),
    (
        "Rib-eye steak 10oz",
        "Doneness",
        1,
        1,
        &[
            ("Rare", 0, &[]),
            ("Medium rare", 0, &[]),
            ("Medium", 0, &[]),
            ("Well done", 0, &[]),
        ],
    ),
    (
        "Rib-eye steak 10oz",
        "Sauce",
        1,
        1,
        &[
            ("Peppercorn", 0, &["milk"]),
            ("Béarnaise", 150, &["eggs", "milk"]),
            ("No sauce", 0, &[]),
        ],
    ),
    (
        "Fish & chips",
        "Portion",
        1,
        1,
        &[("Regular", 0, &[]), ("Small", -300, &[])],
    ),
];

const DEMO: &[DemoRestaurant] = &[
    DemoRestaurant {
        slug: "trattoria-roma",
        name: "Trattoria Roma",
        currency: "EUR",
        time_zone: "Europe/Rome",
        chef: ("chef-roma", "roma-kitchen"),
        menu: &[
            (
                "Antipasti",
                &[
                    item(
                        "Bruschetta al pomodoro",
                        "Grilled sourdough, tomato, garlic, basil",
                        750,
                        &["vegan"],
                    ),
                    item(
                        "Burrata",
                        "Apulian burrata, cherry tomatoes, pesto",
                        1250,
                        &["vegetarian"],
                    ),
                    item(
                        "Arancini",
                        "Saffron rice balls with mozzarella and peas",
                        900,
                        &["vegetarian"],
                    ),
                ],
            ),
            (
                "Pasta",
                &[
                    item(
                        "Spaghetti carbonara",
                        "Guanciale, egg yolk, pecorino, black pepper",
                        1450,
                        &[],
                    ),
                    item(
                        "Cacio e pepe",
                        "Tonnarelli, pecorino romano, black pepper",
                        1300,
                        &["vegetarian"],
                    ),
                    item(
                        "Pappardelle al ragù",
                        "Slow-cooked beef and pork ragù",
                        1600,
                        &[],
                    ),
                    item(
                        "Penne arrabbiata",
                        "Tomato, chilli, garlic, parsley",
                        1150,
                        &["vegan", "spicy"],
                    ),
                ],
            ),
            (
                "Pizza",
                &[
                    item(
                        "Margherita",
                        "San Marzano tomato, fior di latte, basil",
                        1100,
                        &["vegetarian"],
                    ),
                    item(
                        "Diavola",
                        "Tomato, mozzarella, spicy salami",
                        1350,
                        &["spicy"],
                    ),
                    item(
                        "Quattro formaggi",
                        "Mozzarella, gorgonzola, fontina, parmigiano",
                        1450,
                        &["vegetarian"],
                    ),
                ],
            ),
            (
                "Dolci",
                &[
                    item(
                        "Tiramisù",
                        "Mascarpone, espresso, savoiardi, cocoa",
                        750,
                        &["vegetarian"],
                    ),
                    item(
                        "Panna cotta",
                        "Vanilla cream, berry coulis",
                        700,
                        &["vegetarian", "gluten-free"],
                    ),
                ],
            ),
            (
                "Bevande",
                &[
                    item("Acqua frizzante", "750 ml", 400, &["vegan"]),
                    item("Espresso", "", 250, &["vegan"]),
                    item("Chianti Classico (glass)", "175 ml", 850, &["vegan"]),
                ],
            ),
        ],
    },
    DemoRestaurant {
        slug: "harbour-fish-grill",
        name: "Harbour Fish & Grill",
        currency: "GBP",
        time_zone: "Europe/London",
        chef: ("chef-harbour", "harbour-kitchen"),
        menu: &[
            (
                "Starters",
                &[
                    item("Salt & pepper squid", "Lime mayonnaise", 895, &[]),
                    item(
                        "Smoked mackerel pâté",
                        "Toasted sourdough, pickles",
                        850,
                        &[],
                    ),
                    item(
                        "Soup of the day",
                        "With bread and butter",
                        650,
                        &["vegetarian"],
                    ),
                ],
            ),
            (
                "Mains",
                &[
                    item(
                        "Fish & chips",
                        "Beer-battered haddock, chips, mushy peas, tartare",
                        1750,
                        &[],
                    ),
                    item(
                        "Grilled sea bass",
                        "Samphire, new potatoes, lemon butter",
                        2150,
                        &["gluten-free"],
                    ),
                    item("Fish pie", "Salmon, haddock, prawns, mash crust", 1695, &[]),
                    item(
                        "Rib-eye steak 10oz",
                        "Peppercorn sauce, chips, rocket",
                        2650,
                        &["gluten-free"],
                    ),
                    item(
                        "Halloumi burger",
                        "Roasted peppers, harissa mayo, fries",
                        1450,
                        &["vegetarian", "spicy"],
                    ),
                ],
            ),
            (
                "Sides",
                &[
                    item("Chips", "", 450, &["vegan"]),
                    item(
                        "Garden salad",
                        "House dressing",
                        450,
                        &["vegan", "gluten-free"],
                    ),
                ],
            ),
            (
                "Puddings",
                &[
                    item(
                        "Sticky toffee pudding",
                        "Toffee sauce, vanilla ice cream",
                        750,
                        &["vegetarian"],
                    ),
                    item(
                        "Eton mess",
                        "Strawberries, meringue, cream",
                        700,
                        &["vegetarian", "gluten-free"],
                    ),
                ],
            ),
            (
                "Drinks",
                &[
                    item("Local pale ale (pint)", "", 600, &["vegan"]),
                    item("Elderflower pressé", "", 350, &["vegan"]),
                ],
            ),
        ],
    },
];

/// One line a script can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedLine {
    Table {
        slug: String,
        label: String,
        url: String,
    },
    Login {
        role: Role,
        slug: String,
        username: String,
        password: String,
    },
}

impl std::fmt::Display for SeedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedLine::Table { slug, label, url } => write!(f, "TABLE {slug} {label} {url}"),
            SeedLine::Login {
                role,
                slug,
                username,
                password,
            } => write!(f, "LOGIN {role} {slug} {username} {password}"),
        }
    }
}

async fn ensure_user(
    conn: &mut DbConn,
    username: &str,
    password: &str,
    role: Role,
    restaurant: Option<Uuid>,
) -> anyhow::Result<()> {
    if StaffUserRow::by_username(conn, username).await?.is_some() {
        return Ok(());
    }
    let pw = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
    diesel::insert_into(staff_users::table)
        .values(StaffUserRow {
            id: Uuid::new_v4(),
            username: username.to_string(),
            password_hash: hash,
            role,
            restaurant_id: restaurant,
            created_at: Utc::now(),
        })
        .on_conflict(staff_users::username)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

async fn ensure_restaurant(conn: &mut DbConn, demo: &DemoRestaurant) -> anyhow::Result<Uuid> {
    if let Some(r) = Restaurant::find_by_slug(conn, demo.slug).await? {
        return Ok(r.id);
    }
    let now = Utc::now();
    let id = Uuid::new_v4();
    Restaurant::new(id, demo.slug, demo.name, demo.currency, demo.time_zone, now)
        .insert(conn)
        .await?;
    for (ci, (category, items)) in demo.menu.iter().enumerate() {
        let category_id = Uuid::new_v4();
        diesel::insert_into(menu_categories::table)
            .values(MenuCategory {
                id: category_id,
                restaurant_id: id,
                name: (*category).into(),
                position: ci as i32,
                created_at: now,
            })
            .execute(conn)
            .await?;
        let rows: Vec<MenuItem> = items
            .iter()
            .enumerate()
            .map(|(ii, it)| MenuItem {
                id: Uuid::new_v4(),
                restaurant_id: id,
                category_id,
                name: it.name.into(),
                description: it.description.into(),
                price_cents: it.price_cents,
                available: true,
                position: ii as i32,
                tags: it.tags.iter().map(|t| (*t).to_string()).collect(),
                deleted_at: None,
                created_at: now,
                updated_at: now,
                allergens: DEMO_ALLERGENS
                    .iter()
                    .find(|(dish, _)| *dish == it.name)
                    .map(|(_, codes)| codes.iter().map(|c| (*c).to_string()).collect())
                    .unwrap_or_default(),
                image_hash: None,
            })
            .collect();
        diesel::insert_into(menu_items::table)
            .values(&rows)
            .execute(conn)
            .await?;
        insert_choices(conn, id, &rows).await?;
    }
    let tables: Vec<RestaurantTable> = (1..=DEMO_TABLES)
        .map(|n| RestaurantTable {
            id: Uuid::new_v4(),
            restaurant_id: id,
            label: format!("T{n}"),
            token: new_table_token(),
            active: true,
            deleted_at: None,
            // Distinct times keep T1..T10 in order wherever tables are listed by creation.
            created_at: now + chrono::Duration::milliseconds(n as i64),
        })
        .collect();
    diesel::insert_into(restaurant_tables::table)
        .values(tables)
        .execute(conn)
        .await?;
    Ok(id)
}

/// The demo choices of these dishes.
async fn insert_choices(conn: &mut DbConn, rid: Uuid, dishes: &[MenuItem]) -> anyhow::Result<()> {
    let now = Utc::now();
    let (mut groups, mut options) = (Vec::new(), Vec::new());
    for dish in dishes {
        let choices = DEMO_CHOICES.iter().filter(|c| c.0 == dish.name);
        for (gi, (_, name, min, max, opts)) in choices.enumerate() {
            let group = Uuid::new_v4();
            groups.push(OptionGroup {
                id: group,
                restaurant_id: rid,
                menu_item_id: dish.id,
                name: (*name).into(),
                min_choices: *min,
                max_choices: *max,
                position: gi as i32,
                created_at: now,
            });
            for (oi, (name, delta, allergens)) in opts.iter().enumerate() {
                options.push(MenuOption {
                    id: Uuid::new_v4(),
                    restaurant_id: rid,
                    group_id: group,
                    name: (*name).into(),
                    price_delta_cents: *delta,
                    available: true,
                    allergens: allergens.iter().map(|a| (*a).to_string()).collect(),
                    position: oi as i32,
                    created_at: now,
                    updated_at: now,
                });
            }
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    diesel::insert_into(option_groups::table)
        .values(&groups)
        .execute(conn)
        .await?;
    diesel::insert_into(menu_options::table)
        .values(&options)
        .execute(conn)
        .await?;
    Ok(())
}

/// Seeds what is missing and returns the lines to print.
pub async fn seed_demo(pool: &DbPool, public_base_url: &str) -> anyhow::Result<Vec<SeedLine>> {
    let mut conn = pool.get().await?;
    let mut lines = Vec::new();
    for demo in DEMO {
        let id = ensure_restaurant(&mut conn, demo).await?;
        ensure_user(&mut conn, demo.chef.0, demo.chef.1, Role::Chef, Some(id)).await?;
        for t in RestaurantTable::for_restaurant(&mut conn, id).await? {
            if t.active {
                lines.push(SeedLine::Table {
                    slug: demo.slug.into(),
                    label: t.label.clone(),
                    url: format!("{public_base_url}/t/{}", t.token),
                });
            }
        }
        lines.push(SeedLine::Login {
            role: Role::Chef,
            slug: demo.slug.into(),
            username: demo.chef.0.into(),
            password: demo.chef.1.into(),
        });
    }
    ensure_user(&mut conn, DEMO_ADMIN.0, DEMO_ADMIN.1, Role::Admin, None).await?;
    lines.push(SeedLine::Login {
        role: Role::Admin,
        slug: "-".into(),
        username: DEMO_ADMIN.0.into(),
        password: DEMO_ADMIN.1.into(),
    });
    Ok(lines)
}

/// Seeds only a database without restaurants (the first start of the demo).
pub async fn seed_if_empty(
    pool: &DbPool,
    public_base_url: &str,
) -> anyhow::Result<Option<Vec<SeedLine>>> {
    let mut conn = pool.get().await?;
    let any: i64 = scan2order_schema::schema::restaurants::table
        .count()
        .get_result(&mut conn)
        .await?;
    drop(conn);
    if any > 0 {
        return Ok(None);
    }
    Ok(Some(seed_demo(pool, public_base_url).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scan2order_schema::domain::ALLERGENS;

    fn dish_exists(name: &str) -> bool {
        DEMO.iter()
            .flat_map(|r| r.menu.iter())
            .flat_map(|(_, items)| items.iter())
            .any(|i| i.name == name)
    }

    #[test]
    fn demo_allergens_and_choices_name_real_dishes_and_codes_and_can_be_chosen() {
        for (dish, codes) in DEMO_ALLERGENS {
            assert!(dish_exists(dish), "{dish} is not a demo dish");
            assert!(
                codes.iter().all(|c| ALLERGENS.contains(c)),
                "{dish}: {codes:?}"
            );
        }
        for (dish, group, min, max, options) in DEMO_CHOICES {
            assert!(dish_exists(dish), "{dish} is not a demo dish");
            assert!(
                0 <= *min && min <= max && *max as usize <= options.len(),
                "{dish} / {group}"
            );
            for (name, _, codes) in options.iter() {
                assert!(
                    codes.iter().all(|c| ALLERGENS.contains(c)),
                    "{name}: {codes:?}"
                );
            }
        }
    }
}
