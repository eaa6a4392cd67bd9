//! The directory of table tokens: which restaurant and table a QR code opens, kept in memory.
//!
//! A token this node does not know yet is looked up in Postgres together with every other unknown
//! token asked for meanwhile (one query for a whole batch), and each lookup brings every table of the
//! restaurants found: a node's first guest of a restaurant costs one query for all its tables, and a
//! storm of thousands of sockets costs a few queries instead of one each. (A fleet's socket nodes run
//! on one or two database connections; one query per socket had held a storm of 18,000 behind them
//! until the pool's timeout answered 503.)

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use scan2order_schema::models::RestaurantTable;
use scan2order_schema::DbPool;
use tokio::sync::oneshot;

use super::TableRef;

/// Most tokens one query looks up.
const BATCH: usize = 512;

type Answer = oneshot::Sender<Result<Option<TableRef>, ()>>;

#[derive(Default)]
pub(super) struct Directory {
    tables: DashMap<String, TableRef>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(String, Answer)>,
    /// A loader task is running (it drains `waiting` until it is empty).
    loading: bool,
}

impl Directory {
    pub(super) fn get(&self, token: &str) -> Option<TableRef> {
        self.tables.get(token).map(|r| *r)
    }

    pub(super) fn insert(&self, token: String, r: TableRef) {
        self.tables.insert(token, r);
    }

    pub(super) fn remove(&self, token: &str) {
        self.tables.remove(token);
    }

    /// Forgets `token` if it leads to `restaurant`.
    pub(super) fn remove_if_of(
        &self,
        token: &str,
        restaurant: scan2order_schema::domain::RestaurantId,
    ) {
        self.tables
            .remove_if(token, |_, r| r.restaurant_id == restaurant);
    }

    pub(super) fn clear(&self) {
        self.tables.clear();
    }

    /// The active table `token` opens (`Ok(None)`: no such active table), from memory or from
    /// Postgres in a batch; `Err` when the database could not answer.
    pub(super) async fn lookup(
        self: &Arc<Self>,
        pool: &DbPool,
        token: &str,
    ) -> Result<Option<TableRef>, ()> {
        if let Some(r) = self.get(token) {
            return Ok(Some(r));
        }
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.waiting.push((token.to_string(), tx));
            !std::mem::replace(&mut q.loading, true)
        };
        if start {
            // A task of its own: a caller that goes away (its socket closed) stops nobody's lookup.
            tokio::spawn(load(self.clone(), pool.clone()));
        }
        rx.await.unwrap_or(Err(()))
    }
}

/// Ends a loader however it ends: finished, or dropped with the runtime it ran on (a stopping worker
/// thread). Lookups still waiting are told the database could not answer (503, and the client
/// retries) and the next lookup starts a new loader, so none waits for a loader that is gone.
struct Loading(Option<Arc<Directory>>);

impl Drop for Loading {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else {
            return;
        };
        let waiting = {
            let mut q = dir.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.loading = false;
            std::mem::take(&mut q.waiting)
        };
        for (_, answer) in waiting {
            let _ = answer.send(Err(()));
        }
    }
}

/// Answers the waiting lookups, a batch per query, until none is left.
async fn load(dir: Arc<Directory>, pool: DbPool) {
    let mut loading = Loading(Some(dir.clone()));
    loop {
        let batch: Vec<(String, Answer)> = {
            let mut q = dir.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                // Finished, under the lock: a lookup from now on starts a new loader.
                q.loading = false;
                loading.0 = None;
                return;
            }
            let n = q.waiting.len().min(BATCH);
            q.waiting.drain(..n).collect()
        };
        let tokens: Vec<String> = batch.iter().map(|(t, _)| t.clone()).collect();
        let found = match pool.get().await {
            Ok(mut conn) => RestaurantTable::with_their_restaurants_tables(&mut conn, &tokens)
                .await
                .map_err(|_| ()),
            Err(_) => Err(()),
        };
        match found {
            Ok(rows) => {
                for t in rows {
                    dir.insert(
                        t.token,
                        TableRef {
                            restaurant_id: t.restaurant_id.into(),
                            table_id: t.id.into(),
                        },
                    );
                }
                for (token, answer) in batch {
                    let _ = answer.send(Ok(dir.get(&token)));
                }
            }
            Err(()) => {
                for (_, answer) in batch {
                    let _ = answer.send(Err(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loader_that_goes_away_answers_its_waiters_and_lets_the_next_lookup_start_another() {
        let dir = Arc::new(Directory::default());
        let (tx, mut rx) = oneshot::channel();
        {
            let mut q = dir.queue.lock().expect("queue");
            q.waiting.push(("token".into(), tx));
            q.loading = true;
        }
        // The loader's future dropped mid-lookup (its runtime stopped).
        drop(Loading(Some(dir.clone())));
        assert!(
            matches!(rx.try_recv(), Ok(Err(()))),
            "told, not left waiting"
        );
        let q = dir.queue.lock().expect("queue");
        assert!(!q.loading && q.waiting.is_empty());
    }
}
