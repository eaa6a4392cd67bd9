//! Ownership of restaurants in Postgres: the lease a node holds to run a restaurant's actor and write
//! its orders, and the rows by which the nodes of a fleet see each other.
//!
//! A lease carries a fence that only grows: every acquisition adds one, a release keeps it. The owner's
//! persistence writer checks its fence inside each write transaction ([`fences_out_of_force`]) and
//! holds the lease row shared until commit, so a takeover waits for a commit in flight and a node that
//! lost its lease can never commit after another took over. Times are Postgres's clock, the one clock
//! every node shares, read when each statement acts (`clock_timestamp()`, not the statement's start:
//! an acquisition that waited behind a paused owner's commit must not be born already expired).

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::DbConn;

/// Who owns a restaurant, under which fence, until when.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName, serde::Serialize)]
pub struct Lease {
    #[diesel(sql_type = SqlUuid)]
    pub restaurant_id: Uuid,
    #[diesel(sql_type = Text)]
    pub node_id: String,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = Timestamptz)]
    #[serde(rename = "lease_expires_at")]
    pub expires_at: DateTime<Utc>,
}

/// Whether an acquisition may take a lease another node holds and has not let expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// Only a free, expired or own lease (a fleet: the holder is alive until its lease runs out).
    WhenExpired,
    /// Always (a single node: whatever held it before is an earlier run of this deployment, and its
    /// writes are fenced off from now on).
    Always,
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// A lease just taken, and the node that held it before (`None`: nobody ever had).
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Acquired {
    #[diesel(embed)]
    pub lease: Lease,
    #[diesel(sql_type = Nullable<Text>)]
    pub previous_node: Option<String>,
}

/// Takes the restaurant's lease for `node_id` for `ttl`, adding one to its fence, in one statement.
/// `None` when another node holds it (and `takeover` does not allow taking it) or the restaurant does
/// not exist ([`lease_of`] tells which).
pub async fn acquire(
    conn: &mut DbConn,
    restaurant_id: Uuid,
    node_id: &str,
    ttl: Duration,
    takeover: Takeover,
) -> QueryResult<Option<Acquired>> {
    diesel::sql_query(
        "WITH previous AS (SELECT node_id FROM restaurant_leases WHERE restaurant_id = $1) \
         INSERT INTO restaurant_leases AS l (restaurant_id, node_id, fence, expires_at) \
         SELECT $1, $2, 1, clock_timestamp() + $3 * interval '1 millisecond' \
         WHERE EXISTS (SELECT 1 FROM restaurants WHERE id = $1) \
         ON CONFLICT (restaurant_id) DO UPDATE \
         SET node_id = EXCLUDED.node_id, fence = l.fence + 1, \
             expires_at = clock_timestamp() + $3 * interval '1 millisecond' \
         WHERE $4 OR l.node_id = EXCLUDED.node_id OR l.expires_at <= clock_timestamp() \
         RETURNING restaurant_id, node_id, fence, expires_at, \
         (SELECT node_id FROM previous) AS previous_node",
    )
    .bind::<SqlUuid, _>(restaurant_id)
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(millis(ttl))
    .bind::<Bool, _>(takeover == Takeover::Always)
    .get_result(conn)
    .await
    .optional()
}

/// The restaurant's lease as it stands, expired or not.
pub async fn lease_of(conn: &mut DbConn, restaurant_id: Uuid) -> QueryResult<Option<Lease>> {
    diesel::sql_query(
        "SELECT restaurant_id, node_id, fence, expires_at FROM restaurant_leases \
         WHERE restaurant_id = $1",
    )
    .bind::<SqlUuid, _>(restaurant_id)
    .get_result(conn)
    .await
    .optional()
}

/// A restaurant and the fence its owner writes under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, QueryableByName)]
pub struct Fence {
    #[diesel(sql_type = SqlUuid)]
    pub restaurant_id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
}

/// Extends every lease `node_id` holds by `ttl` from now; returns the leases it still holds (one the
/// node thought it held and that is missing here was taken over). A released lease stays released.
///
/// The rows are locked in restaurant order, the order the writers' fence checks lock them in
/// ([`fences_out_of_force`]): an update in the table's own order deadlocked against a write
/// transaction that held one restaurant's row and waited for another's.
pub async fn renew(conn: &mut DbConn, node_id: &str, ttl: Duration) -> QueryResult<Vec<Fence>> {
    diesel::sql_query(
        "UPDATE restaurant_leases AS l SET expires_at = clock_timestamp() + $2 * interval '1 millisecond' \
         FROM (SELECT restaurant_id FROM restaurant_leases WHERE node_id = $1 AND expires_at > 'epoch' \
               ORDER BY restaurant_id FOR UPDATE) AS mine \
         WHERE l.restaurant_id = mine.restaurant_id RETURNING l.restaurant_id, l.fence",
    )
    .bind::<Text, _>(node_id)
    .bind::<BigInt, _>(millis(ttl))
    .load(conn)
    .await
}

/// Lets the leases go (all of the node's, or these restaurants'), so the next owner starts at once
/// instead of after expiry (a released lease expired at the epoch). The fence stays, so it keeps
/// growing. Releases only what `node_id` holds
/// under these fences: a lease someone else took meanwhile is left alone.
pub async fn release(conn: &mut DbConn, node_id: &str, held: &[Fence]) -> QueryResult<usize> {
    let ids: Vec<Uuid> = held.iter().map(|f| f.restaurant_id).collect();
    let fences: Vec<i64> = held.iter().map(|f| f.fence).collect();
    diesel::sql_query(
        "UPDATE restaurant_leases AS l SET expires_at = 'epoch' \
         FROM unnest($2::uuid[], $3::bigint[]) AS h(restaurant_id, fence) \
         WHERE l.node_id = $1 AND l.restaurant_id = h.restaurant_id AND l.fence = h.fence",
    )
    .bind::<Text, _>(node_id)
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<BigInt>, _>(fences)
    .execute(conn)
    .await
}

/// Of the fences a writer is about to commit under, those no longer in force (the lease was taken
/// over, or is gone with its restaurant). Must run inside the write transaction: it locks the lease
/// rows shared until commit, so a takeover cannot commit between this check and the writes.
pub async fn fences_out_of_force(conn: &mut &DbConn, fences: &[Fence]) -> QueryResult<Vec<Fence>> {
    let mut ids: Vec<Uuid> = fences.iter().map(|f| f.restaurant_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Sorted, so two transactions lock the rows in the same order.
    let current: Vec<Fence> = diesel::sql_query(
        "SELECT restaurant_id, fence FROM restaurant_leases WHERE restaurant_id = ANY($1) \
         ORDER BY restaurant_id FOR SHARE",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .load(conn)
    .await?;
    Ok(fences
        .iter()
        .filter(|f| !current.contains(f))
        .copied()
        .collect())
}

/// A node of the fleet as it last said.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName, serde::Serialize)]
pub struct NodeRow {
    #[diesel(sql_type = Text)]
    pub node_id: String,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub last_seen: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub restaurants_owned: i32,
    #[diesel(sql_type = Integer)]
    pub sockets: i32,
}

/// Records that the node is alive, with what it holds.
pub async fn heartbeat(
    conn: &mut DbConn,
    node_id: &str,
    started_at: DateTime<Utc>,
    restaurants_owned: i32,
    sockets: i32,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO cluster_nodes (node_id, started_at, last_seen, restaurants_owned, sockets) \
         VALUES ($1, $2, clock_timestamp(), $3, $4) \
         ON CONFLICT (node_id) DO UPDATE SET last_seen = clock_timestamp(), \
         restaurants_owned = EXCLUDED.restaurants_owned, sockets = EXCLUDED.sockets",
    )
    .bind::<Text, _>(node_id)
    .bind::<Timestamptz, _>(started_at)
    .bind::<Integer, _>(restaurants_owned)
    .bind::<Integer, _>(sockets)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The nodes seen within `within`, oldest first; rows of nodes gone longer than an hour are removed.
pub async fn live_nodes(conn: &mut DbConn, within: Duration) -> QueryResult<Vec<NodeRow>> {
    diesel::sql_query("DELETE FROM cluster_nodes WHERE last_seen < now() - interval '1 hour'")
        .execute(conn)
        .await?;
    diesel::sql_query(
        "SELECT node_id, started_at, last_seen, restaurants_owned, sockets FROM cluster_nodes \
         WHERE last_seen > now() - $1 * interval '1 millisecond' ORDER BY started_at, node_id",
    )
    .bind::<BigInt, _>(millis(within))
    .load(conn)
    .await
}

/// A node leaving the fleet removes its row.
pub async fn forget_node(conn: &mut DbConn, node_id: &str) -> QueryResult<()> {
    diesel::sql_query("DELETE FROM cluster_nodes WHERE node_id = $1")
        .bind::<Text, _>(node_id)
        .execute(conn)
        .await
        .map(|_| ())
}
