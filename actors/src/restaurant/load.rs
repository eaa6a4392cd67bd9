//! What a restaurant actor starts from, read from Postgres at activation.

use chrono::{NaiveDate, Utc};
use scan2order_schema::domain::RestaurantId;
use scan2order_schema::models::{MenuCategory, MenuItem, Restaurant, RestaurantTable, StoredOrder};
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::DbPool;

use super::menu::parse_tz;
use super::EngineError;

/// Everything an actor starts from, read from Postgres at activation.
pub struct LoadedRestaurant {
    pub info: Restaurant,
    pub categories: Vec<MenuCategory>,
    pub items: Vec<MenuItem>,
    pub groups: Vec<OptionGroup>,
    pub options: Vec<MenuOption>,
    pub tables: Vec<RestaurantTable>,
    pub live: Vec<StoredOrder>,
    pub ticket_day: NaiveDate,
    pub ticket_last: i32,
}

impl LoadedRestaurant {
    /// Reads a restaurant's state; `None` when it does not exist.
    pub async fn load(
        pool: &DbPool,
        id: RestaurantId,
    ) -> Result<Option<LoadedRestaurant>, EngineError> {
        let mut conn = pool.get().await.map_err(|_| EngineError::Unavailable)?;
        let db = |_| EngineError::Unavailable;
        let Some(info) = Restaurant::find(&mut conn, id.get()).await.map_err(db)? else {
            return Ok(None);
        };
        let tz = parse_tz(&info.time_zone);
        let ticket_day = Utc::now().with_timezone(&tz).date_naive();
        let categories = MenuCategory::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let items = MenuItem::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let groups = OptionGroup::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let options = MenuOption::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let tables = RestaurantTable::for_restaurant(&mut conn, id.get())
            .await
            .map_err(db)?;
        let live = StoredOrder::live_for(&mut conn, id.get())
            .await
            .map_err(db)?;
        let ticket_last = StoredOrder::max_ticket(&mut conn, id.get(), ticket_day)
            .await
            .map_err(db)?;
        Ok(Some(LoadedRestaurant {
            info,
            categories,
            items,
            groups,
            options,
            tables,
            live,
            ticket_day,
            ticket_last,
        }))
    }
}
