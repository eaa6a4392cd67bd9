//! # Settling writes whose commit nobody saw
//!
//! When the database goes away mid-transaction (or the writer does), nobody knows whether an order or a
//! status change committed. The restaurant reads it back until the database answers, then makes memory
//! and sockets agree with what was stored: an order that did commit reaches the kitchen even if its
//! guest never retries, and a status change that did commit is streamed.

use std::time::Duration;

use actix::prelude::*;
use scan2order_schema::models::{OrderRow, StoredOrder};
use scan2order_schema::DbPool;
use uuid::Uuid;

use super::order_book::Settled;
use super::RestaurantActor;
use scan2order_schema::wire::ServerMsg;

/// A write whose commit nobody saw.
pub(crate) enum Unsettled {
    Insert(Box<OrderRow>),
    Status(Uuid),
}

/// Waits until the transaction that carried `write` is over, then reads what it left; `None` while the
/// database cannot answer. A plain read could run before an in-flight COMMIT finishes and wrongly
/// conclude "never written", so it first takes a lock the in-flight transaction holds: the unique
/// idempotency key of a new order (a probe insert, rolled back), or the row lock of a status change.
async fn settle(pool: &DbPool, write: &Unsettled) -> Option<Option<StoredOrder>> {
    let mut conn = pool.get().await.ok()?;
    match write {
        Unsettled::Insert(row) => {
            if !StoredOrder::settle_insert(&mut conn, row).await.ok()? {
                return Some(None);
            }
            StoredOrder::find_by_key(&mut conn, row.restaurant_id, &row.idempotency_key)
                .await
                .ok()
        }
        Unsettled::Status(id) => {
            StoredOrder::settle_row(&mut conn, *id).await.ok()?;
            StoredOrder::find(&mut conn, *id).await.ok()
        }
    }
}

/// Longest wait for the transaction of an unsettled write to finish before trying again.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// First and longest wait between reads that settle a write of unknown outcome.
const RECONCILE_FIRST: Duration = Duration::from_millis(200);
const RECONCILE_MAX: Duration = Duration::from_secs(10);

impl RestaurantActor {
    /// Reads a write of unknown outcome back, retrying until the database answers, and then makes
    /// memory and sockets agree with it.
    pub(crate) fn reconcile_later(&self, ctx: &mut Context<Self>, write: Unsettled) {
        let pool = self.pool.clone();
        let id = match &write {
            Unsettled::Insert(row) => row.id,
            Unsettled::Status(id) => *id,
        };
        ctx.spawn(
            async move {
                let mut wait = RECONCILE_FIRST;
                loop {
                    if let Ok(Some(found)) =
                        tokio::time::timeout(SETTLE_TIMEOUT, settle(&pool, &write)).await
                    {
                        return found;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECONCILE_MAX);
                }
            }
            .into_actor(self)
            .map(move |found: Option<StoredOrder>, act, _| {
                let id = found.as_ref().map_or(id, |f| f.row.id);
                act.reconcile(id, found)
            }),
        );
    }

    fn reconcile(&mut self, id: Uuid, found: Option<StoredOrder>) {
        let found = found.filter(|f| f.row.restaurant_id == self.id.get());
        match self.orders.settle(id, found) {
            Settled::Unchanged => {}
            Settled::Adopted(order, table) => {
                tracing::info!(order_id = %id, "order of unknown outcome was committed; adopting it");
                self.publish(Some(table), |seq| ServerMsg::OrderCreated { seq, order });
            }
            Settled::StatusChanged(applied) => {
                tracing::info!(order_id = %id, status = %applied.order.status, "status change of unknown outcome was committed");
                self.publish_status(applied);
            }
        }
    }
}
