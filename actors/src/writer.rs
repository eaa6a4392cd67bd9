//! # PersistenceWriter — one per shard
//!
//! Owns nothing but a queue of writes. Restaurant actors of its shard send it every change of orders,
//! menu availability and restaurant flags; it commits them with group commit: while one transaction is in
//! flight, new writes queue, and when it completes everything queued goes out as the next transaction.
//! Idle, the first write goes at once (no timer), so low load pays no batching delay and high load gets
//! big batches. A failing batch is retried op by op, so one bad op cannot fail its neighbours. Callers are
//! answered only after the commit, which is what lets restaurants keep "durable before visible".
//!
//! Every op is written under its restaurant's lease fence, checked inside the transaction that writes
//! it (`leases::fences_out_of_force`, pipelined with the batch's first statements): an op whose
//! restaurant was taken over by another node is answered [`WriteError::Fenced`] and never committed,
//! and the rest of its batch is written without it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl};
use scan2order_schema::domain::OrderStatus;
use scan2order_schema::leases::{self, Fence};
use scan2order_schema::models::{NewOutbox, NewStatusHistory, OrderItemRow, OrderRow, StoredOrder};
use scan2order_schema::schema::{
    menu_items, menu_options, notification_outbox, order_items, order_status_history, orders,
    restaurants,
};
use scan2order_schema::{DbConn, DbPool};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

/// Largest number of ops in one transaction; more stay queued for the next one.
pub const MAX_BATCH_OPS: usize = 2_000;
/// Postgres accepts at most 65,535 bound values per statement.
const MAX_BIND_PARAMS: usize = 65_535;

/// A new order with everything written in its transaction.
#[derive(Debug, Clone)]
pub struct NewOrderBundle {
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
    pub outbox: Option<NewOutbox>,
    /// The guest session that asked for it, when it was authenticated from memory: checked in the
    /// write's own transaction.
    pub session: Option<SessionCheck>,
}

/// A session to confirm inside the transaction that writes what it authorised (the request was
/// authenticated from the server's session cache, not from the database). The op is written only if the
/// session still exists and has not expired; otherwise its outcome is [`WriteOutcome::SessionEnded`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SessionCheck {
    /// SHA-256 of a customer token (`customer_sessions.token_hash`).
    Customer(Vec<u8>),
    /// SHA-256 of a staff token (`staff_sessions.token_hash`).
    Staff(Vec<u8>),
}

/// One durable change.
#[derive(Debug, Clone)]
pub enum WriteOp {
    InsertOrder(Box<NewOrderBundle>),
    SetStatus {
        order_id: Uuid,
        status: OrderStatus,
        at: DateTime<Utc>,
        by: Option<Uuid>,
        /// The request it answers, kept with the history row so a retry is recognised.
        request_id: Option<String>,
        /// The change records the kitchen's acknowledgement of the order's allergies (by `by`, at `at`).
        allergy_ack: bool,
        outbox: Option<NewOutbox>,
        /// The staff session that asked for it, when authenticated from memory.
        session: Option<SessionCheck>,
    },
    /// A kitchen sold-out toggle of a dish or an option; it moves the restaurant's menu version on.
    SetAvailability {
        restaurant_id: Uuid,
        target: Switchable,
        available: bool,
        at: DateTime<Utc>,
    },
    /// The kitchen pauses or resumes ordering; it moves the restaurant's menu version on.
    SetAccepting {
        restaurant_id: Uuid,
        accepting: bool,
        at: DateTime<Utc>,
    },
}

/// What the kitchen can mark sold out.
#[derive(Debug, Clone, Copy)]
pub enum Switchable {
    Item(Uuid),
    Option(Uuid),
}

/// What a committed op did.
#[derive(Debug)]
pub enum WriteOutcome {
    /// The order row and its lines were inserted.
    Inserted,
    /// An order with the same `(restaurant, Idempotency-Key)` already existed; here it is.
    Duplicate(Box<StoredOrder>),
    /// The update was committed.
    Done,
    /// A menu or restaurant flag was committed; the restaurant's menu version is now this. The
    /// `restaurants.menu_version` column is the one counter of menu versions: every change that
    /// alters what guests see adds one to it in its own transaction, so a version names one menu.
    MenuChanged(i64),
    /// Nothing was written: the session that authorised the op has ended (see [`SessionCheck`]).
    SessionEnded,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database could not be reached or did not answer in time; the outcome may be unknown.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused this op (a constraint); it was not written.
    #[error("write refused: {0}")]
    Refused(String),
    /// The op waited its whole write timeout behind slow or failing transactions and was never sent:
    /// certainly not written. (Without this, a request queued behind a stuck batch waited for that
    /// batch's timeout and then its own.)
    #[error("not written: the database did not take writes in time")]
    Expired,
    /// Not written: the restaurant's lease is no longer held under the op's fence (another node took
    /// it over, or the restaurant is gone). The restaurant must stop here.
    #[error("not written: this node no longer owns the restaurant")]
    Fenced,
}

impl WriteError {
    /// True when the transaction may have committed although no answer said so.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, WriteError::Unavailable(_))
    }
}

/// Sent by restaurant actors: one op and the lease fence it is written under, answered after its
/// transaction commits.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome, WriteError>")]
pub struct Write {
    pub op: WriteOp,
    pub fence: Fence,
}

/// Counters an operator (and the tests) can read.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub failed_batches: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Writes waiting behind the transaction in flight.
    pub queued: AtomicU64,
    /// Writes answered unwritten because their timeout ran out while they waited.
    pub expired: AtomicU64,
}

/// An op with its fence, who waits for it, and when it was queued (its write timeout runs from then).
type Pending = (
    (WriteOp, Fence),
    oneshot::Sender<Result<WriteOutcome, WriteError>>,
    Instant,
);

pub struct PersistenceWriter {
    pool: DbPool,
    queue: Vec<Pending>,
    in_flight: bool,
    timeout: Duration,
    /// Woken after a commit that wrote outbox rows.
    outbox_wake: Arc<Notify>,
    stats: Arc<WriterStats>,
    /// Answered once the queue is empty and nothing is in flight.
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl PersistenceWriter {
    pub fn new(
        pool: DbPool,
        timeout: Duration,
        outbox_wake: Arc<Notify>,
        stats: Arc<WriterStats>,
    ) -> Self {
        PersistenceWriter {
            pool,
            queue: Vec::new(),
            in_flight: false,
            timeout,
            outbox_wake,
            stats,
            drain_waiters: Vec::new(),
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        // Ops whose write timeout has run out while they waited are answered without being sent. The
        // queue is in arrival order, so they are its front.
        let timeout = self.timeout;
        let expired = self
            .queue
            .iter()
            .position(|(_, _, queued)| queued.elapsed() < timeout)
            .unwrap_or(self.queue.len());
        for (_, reply, _) in self.queue.drain(..expired) {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            let _ = reply.send(Err(WriteError::Expired));
        }
        if self.queue.is_empty() {
            return;
        }
        let take = self.queue.len().min(MAX_BATCH_OPS);
        let batch: Vec<Pending> = self.queue.drain(..take).collect();
        // The batch gets what is left of its oldest op's timeout (at least a second), so that every
        // request is answered about when its own timeout runs out.
        let oldest = batch
            .iter()
            .map(|(_, _, q)| q.elapsed())
            .max()
            .unwrap_or_default();
        let batch_timeout = timeout
            .saturating_sub(oldest)
            .max(Duration::from_secs(1).min(timeout));
        self.stats
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
        self.in_flight = true;
        let pool = self.pool.clone();
        let wake = self.outbox_wake.clone();
        let stats = self.stats.clone();
        let fut = async move {
            let started = Instant::now();
            let n = batch.len() as u64;
            let mut ops = Vec::with_capacity(batch.len());
            let mut fences = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for ((op, fence), reply, _) in batch {
                ops.push(op);
                fences.push(fence);
                replies.push(reply);
            }
            let writes_outbox = ops.iter().any(WriteOp::has_outbox);
            let results = commit_with_fallback(&pool, batch_timeout, ops, fences, &stats).await;
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.ops.fetch_add(n, Ordering::Relaxed);
            stats.largest_batch.fetch_max(n, Ordering::Relaxed);
            metrics::histogram!("s2o_commit_batch_size").record(n as f64);
            metrics::histogram!("s2o_commit_seconds").record(started.elapsed().as_secs_f64());
            tracing::trace!(
                ops = n,
                elapsed_us = started.elapsed().as_micros() as u64,
                "batch committed"
            );
            if writes_outbox && results.iter().any(Result::is_ok) {
                wake.notify_one();
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        };
        ctx.spawn(fut.into_actor(self).map(|_, act, ctx| {
            act.in_flight = false;
            act.flush(ctx);
            if !act.in_flight {
                for waiter in act.drain_waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }));
    }
}

impl Actor for PersistenceWriter {
    type Context = Context<Self>;
}

impl Handler<Write> for PersistenceWriter {
    type Result = ResponseFuture<Result<WriteOutcome, WriteError>>;

    fn handle(&mut self, msg: Write, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.queue.push(((msg.op, msg.fence), tx, Instant::now()));
        if !self.in_flight {
            self.flush(ctx);
        }
        self.stats
            .queued
            .store(self.queue.len() as u64, Ordering::Relaxed);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(WriteError::Unavailable("writer stopped".into())))
        })
    }
}

/// Waits until everything sent so far is committed. Used at shutdown.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for PersistenceWriter {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.in_flight || !self.queue.is_empty() {
            self.drain_waiters.push(tx);
        } else {
            let _ = tx.send(());
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl WriteOp {
    fn session(&self) -> Option<&SessionCheck> {
        match self {
            WriteOp::InsertOrder(b) => b.session.as_ref(),
            WriteOp::SetStatus { session, .. } => session.as_ref(),
            _ => None,
        }
    }

    fn has_outbox(&self) -> bool {
        match self {
            WriteOp::InsertOrder(b) => b.outbox.is_some(),
            WriteOp::SetStatus { outbox, .. } => outbox.is_some(),
            _ => false,
        }
    }
}

async fn commit_with_fallback(
    pool: &DbPool,
    timeout: Duration,
    ops: Vec<WriteOp>,
    fences: Vec<Fence>,
    stats: &WriterStats,
) -> Vec<Result<WriteOutcome, WriteError>> {
    let err = match commit_batch(pool, timeout, &ops, &fences).await {
        Ok(results) => return results.into_iter().map(Ok).collect(),
        Err(BatchError::Fenced(out)) => {
            // Rolled back: the fenced ops are answered, the others written again without them.
            let fenced: Vec<bool> = fences.iter().map(|f| out.contains(f)).collect();
            tracing::warn!(
                ops = fenced.iter().filter(|f| **f).count(),
                "writes refused: their restaurant's lease was taken over"
            );
            let (rest, rest_fences): (Vec<WriteOp>, Vec<Fence>) = ops
                .into_iter()
                .zip(fences)
                .zip(&fenced)
                .filter(|(_, f)| !**f)
                .map(|(op_fence, _)| op_fence)
                .unzip();
            let mut rest = if rest.is_empty() {
                Vec::new()
            } else {
                Box::pin(commit_with_fallback(
                    pool,
                    timeout,
                    rest,
                    rest_fences,
                    stats,
                ))
                .await
            }
            .into_iter();
            return fenced
                .into_iter()
                .map(|f| {
                    if f {
                        Err(WriteError::Fenced)
                    } else {
                        rest.next().unwrap_or(Err(WriteError::Expired))
                    }
                })
                .collect();
        }
        Err(BatchError::Write(err)) => err,
    };
    match err {
        err if ops.len() == 1 => vec![Err(err)],
        // The batch may have committed (the database went away or did not answer in time): replaying
        // its ops one by one could apply them twice (a status change's history row). Every op gets the
        // unknown outcome; the restaurants settle them by reading back.
        err if err.outcome_unknown() => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(ops = ops.len(), error = %err, "batch of unknown outcome");
            ops.iter()
                .map(|_| Err(WriteError::Unavailable(err.to_string())))
                .collect()
        }
        err => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(ops = ops.len(), error = %err, "batch failed; retrying op by op");
            let mut out = Vec::with_capacity(ops.len());
            for (op, fence) in ops.iter().zip(&fences) {
                let (one, its_fence) = (std::slice::from_ref(op), std::slice::from_ref(fence));
                out.push(match commit_batch(pool, timeout, one, its_fence).await {
                    Ok(mut r) => Ok(r.remove(0)),
                    Err(BatchError::Fenced(_)) => Err(WriteError::Fenced),
                    Err(BatchError::Write(e)) => Err(e),
                });
            }
            out
        }
    }
}

/// Why a batch's transaction did not commit.
enum BatchError {
    Write(WriteError),
    /// Rolled back because these fences are no longer in force.
    Fenced(Vec<Fence>),
}

/// What can end [`write_all`]'s transaction early.
enum TxError {
    Db(diesel::result::Error),
    Fenced(Vec<Fence>),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

async fn commit_batch(
    pool: &DbPool,
    timeout: Duration,
    ops: &[WriteOp],
    fences: &[Fence],
) -> Result<Vec<WriteOutcome>, BatchError> {
    let work = async {
        let mut conn = pool
            .get()
            .await
            .map_err(|e| BatchError::Write(WriteError::Unavailable(e.to_string())))?;
        conn.transaction(async |c| write_all(c, ops, fences).await)
            .await
            .map_err(|e| match e {
                TxError::Db(e) => BatchError::Write(classify(e)),
                TxError::Fenced(out) => BatchError::Fenced(out),
            })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(BatchError::Write(WriteError::Unavailable(
            "database did not answer in time".into(),
        ))),
    }
}

fn classify(e: diesel::result::Error) -> WriteError {
    use diesel::result::{DatabaseErrorKind, Error};
    match &e {
        Error::DatabaseError(
            DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::NotNullViolation,
            _,
        ) => WriteError::Refused(e.to_string()),
        _ => WriteError::Unavailable(e.to_string()),
    }
}

#[derive(QueryableByName)]
struct Updated {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

#[derive(QueryableByName)]
struct LiveSession {
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    token_hash: Vec<u8>,
}

/// The ops whose session (if they carry one) has ended: one statement for the whole batch, in its
/// transaction, so an op whose session is gone by now is not written.
async fn ended_sessions(
    conn: &mut DbConn,
    ops: &[WriteOp],
) -> Result<std::collections::HashSet<usize>, diesel::result::Error> {
    let mut c: &DbConn = conn;
    ended_sessions_on(&mut c, ops).await
}

/// [`ended_sessions`] on a shared connection, so it can be pipelined with other statements.
async fn ended_sessions_on(
    conn: &mut &DbConn,
    ops: &[WriteOp],
) -> Result<std::collections::HashSet<usize>, diesel::result::Error> {
    let (mut customers, mut staff) = (Vec::new(), Vec::new());
    for op in ops {
        match op.session() {
            Some(SessionCheck::Customer(h)) => customers.push(h.clone()),
            Some(SessionCheck::Staff(h)) => staff.push(h.clone()),
            None => {}
        }
    }
    if customers.is_empty() && staff.is_empty() {
        return Ok(Default::default());
    }
    let live: Vec<LiveSession> = diesel::sql_query(
        "SELECT token_hash FROM customer_sessions WHERE token_hash = ANY($1) AND expires_at > $3 \
         UNION ALL \
         SELECT token_hash FROM staff_sessions WHERE token_hash = ANY($2) AND expires_at > $3",
    )
    .bind::<Array<diesel::sql_types::Bytea>, _>(customers)
    .bind::<Array<diesel::sql_types::Bytea>, _>(staff)
    .bind::<Timestamptz, _>(Utc::now())
    .load(conn)
    .await?;
    let live: std::collections::HashSet<Vec<u8>> = live.into_iter().map(|s| s.token_hash).collect();
    Ok(ops
        .iter()
        .enumerate()
        .filter(|(_, op)| match op.session() {
            Some(SessionCheck::Customer(h) | SessionCheck::Staff(h)) => !live.contains(h),
            None => false,
        })
        .map(|(i, _)| i)
        .collect())
}

/// Boxed so the pipelined statements of a batch can be joined whatever their types.
type Stmt<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = QueryResult<()>> + Send + 'a>>;

/// Writes a batch in as few round trips as the data dependencies allow: statements that do not need
/// each other's answers are sent together (pipelined on the one connection; Postgres still runs them
/// in order). A batch of orders and status changes takes BEGIN, the order inserts (with the session
/// check when no order needs it first), everything else at once, COMMIT — four round trips, however
/// many ops it holds. Under CPU contention each round trip costs a scheduling wake-up on both sides,
/// which made the sequential version's batches several times slower than their SQL.
async fn write_all(
    conn: &mut DbConn,
    ops: &[WriteOp],
    fences: &[Fence],
) -> Result<Vec<WriteOutcome>, TxError> {
    let mut outcomes: Vec<Option<WriteOutcome>> = (0..ops.len()).map(|_| None).collect();
    let all_orders: Vec<(usize, &NewOrderBundle)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            WriteOp::InsertOrder(b) => Some((i, b.as_ref())),
            _ => None,
        })
        .collect();

    // Round 1: the orders, one multi-row insert (a conflict on the idempotency key means "already
    // placed"), and the session check. An order whose own session must be confirmed waits for the
    // check; status changes with a staff check are only written in round 2, so they need not.
    let orders_wait = all_orders.iter().any(|(_, b)| b.session.is_some());
    let ended = if orders_wait {
        ended_sessions(conn, ops).await?
    } else {
        Default::default()
    };
    let new_orders: Vec<(usize, &NewOrderBundle)> = all_orders
        .into_iter()
        .filter(|(i, _)| !ended.contains(i))
        .collect();
    let inserted: std::collections::HashSet<Uuid>;
    let ended = {
        let shared: &DbConn = conn;
        let rows: Vec<OrderRow> = new_orders.iter().map(|(_, b)| b.order.clone()).collect();
        let inserts = futures_util::future::try_join_all(rows.chunks(MAX_BIND_PARAMS / 17).map(
            |chunk| async move {
                let mut c = shared;
                diesel::insert_into(orders::table)
                    .values(chunk.to_vec())
                    .on_conflict((orders::restaurant_id, orders::idempotency_key))
                    .do_nothing()
                    .returning(orders::id)
                    .get_results::<Uuid>(&mut c)
                    .await
            },
        ));
        let check = async {
            if orders_wait {
                Ok(ended)
            } else {
                let mut c = shared;
                ended_sessions_on(&mut c, ops).await
            }
        };
        // The fence check rides in the same round trip. Where in the transaction it runs does not
        // matter: it locks the lease rows until commit, and if a fence is out of force everything
        // this transaction wrote is rolled back.
        let fenced = async {
            let mut c = shared;
            leases::fences_out_of_force(&mut c, fences).await
        };
        let (ids, ended, out) = futures_util::future::try_join3(inserts, check, fenced).await?;
        if !out.is_empty() {
            return Err(TxError::Fenced(out));
        }
        inserted = ids.into_iter().flatten().collect();
        ended
    };
    for i in &ended {
        outcomes[*i] = Some(WriteOutcome::SessionEnded);
    }

    // Round 2: lines, status changes (the last status per order in one UPDATE), history rows (every
    // step) and outbox rows, all depending only on round 1.
    let items: Vec<OrderItemRow> = new_orders
        .iter()
        .filter(|(_, b)| inserted.contains(&b.order.id))
        .flat_map(|(_, b)| b.items.iter().cloned())
        .collect();
    let mut history: Vec<NewStatusHistory> = new_orders
        .iter()
        .filter(|(_, b)| inserted.contains(&b.order.id))
        .map(|(_, b)| NewStatusHistory {
            order_id: b.order.id,
            status: b.order.status,
            changed_at: b.order.created_at,
            changed_by: None,
            request_id: None,
            allergy_ack: false,
        })
        .collect();
    let mut last: indexmap::IndexMap<Uuid, (OrderStatus, DateTime<Utc>)> =
        indexmap::IndexMap::new();
    let mut status_ops: Vec<(usize, Uuid)> = Vec::new();
    // The first allergy acknowledgement of each order: who, when.
    let mut acks: indexmap::IndexMap<Uuid, (Option<Uuid>, DateTime<Utc>)> =
        indexmap::IndexMap::new();
    for (i, op) in ops.iter().enumerate().filter(|(i, _)| !ended.contains(i)) {
        if let WriteOp::SetStatus {
            order_id,
            status,
            at,
            by,
            request_id,
            allergy_ack,
            ..
        } = op
        {
            last.insert(*order_id, (*status, *at));
            if *allergy_ack {
                acks.entry(*order_id).or_insert((*by, *at));
            }
            history.push(NewStatusHistory {
                order_id: *order_id,
                status: *status,
                changed_at: *at,
                changed_by: *by,
                request_id: request_id.clone(),
                allergy_ack: *allergy_ack,
            });
            status_ops.push((i, *order_id));
        }
    }
    // Outbox rows, in the same transaction as the change that causes them.
    let outbox: Vec<NewOutbox> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !ended.contains(i))
        .filter_map(|(_, op)| match op {
            WriteOp::InsertOrder(b) if inserted.contains(&b.order.id) => b.outbox.clone(),
            WriteOp::SetStatus { outbox, .. } => outbox.clone(),
            _ => None,
        })
        .collect();
    let found: std::collections::HashSet<Uuid> = {
        let shared: &DbConn = conn;
        let mut writes: Vec<Stmt<'_>> = Vec::new();
        for chunk in items.chunks(MAX_BIND_PARAMS / 8) {
            let mut c = shared;
            writes.push(Box::pin(async move {
                diesel::insert_into(order_items::table)
                    .values(chunk)
                    .execute(&mut c)
                    .await
                    .map(|_| ())
            }));
        }
        if !acks.is_empty() {
            let ids: Vec<Uuid> = acks.keys().copied().collect();
            let by: Vec<Option<Uuid>> = acks.values().map(|(by, _)| *by).collect();
            let ats: Vec<DateTime<Utc>> = acks.values().map(|(_, at)| *at).collect();
            let mut c = shared;
            writes.push(Box::pin(async move {
                diesel::sql_query(scan2order_schema::models::SET_ALLERGY_ACKS_SQL)
                    .bind::<Array<SqlUuid>, _>(ids)
                    .bind::<Array<Nullable<SqlUuid>>, _>(by)
                    .bind::<Array<Timestamptz>, _>(ats)
                    .execute(&mut c)
                    .await
                    .map(|_| ())
            }));
        }
        for chunk in history.chunks(MAX_BIND_PARAMS / 7) {
            let mut c = shared;
            writes.push(Box::pin(async move {
                diesel::insert_into(order_status_history::table)
                    .values(chunk)
                    .execute(&mut c)
                    .await
                    .map(|_| ())
            }));
        }
        for chunk in outbox.chunks(MAX_BIND_PARAMS / 4) {
            let mut c = shared;
            writes.push(Box::pin(async move {
                diesel::insert_into(notification_outbox::table)
                    .values(chunk)
                    .on_conflict(notification_outbox::dedup_key)
                    .do_nothing()
                    .execute(&mut c)
                    .await
                    .map(|_| ())
            }));
        }
        let update = async {
            if last.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<Uuid> = last.keys().copied().collect();
            let statuses: Vec<OrderStatus> = last.values().map(|(s, _)| *s).collect();
            let ats: Vec<DateTime<Utc>> = last.values().map(|(_, at)| *at).collect();
            let mut c = shared;
            diesel::sql_query(scan2order_schema::models::SET_STATUSES_SQL)
                .bind::<Array<SqlUuid>, _>(ids)
                .bind::<Array<Text>, _>(statuses)
                .bind::<Array<Timestamptz>, _>(ats)
                .load::<Updated>(&mut c)
                .await
        };
        let (updated, _) =
            futures_util::future::try_join(update, futures_util::future::try_join_all(writes))
                .await?;
        updated.into_iter().map(|u| u.id).collect()
    };
    for (i, id) in status_ops {
        if !found.contains(&id) {
            return Err(diesel::result::Error::NotFound.into());
        }
        outcomes[i] = Some(WriteOutcome::Done);
    }

    // Duplicates (a retried order): rare, answered with the stored order.
    for (i, b) in &new_orders {
        outcomes[*i] = Some(if inserted.contains(&b.order.id) {
            WriteOutcome::Inserted
        } else {
            match StoredOrder::find_by_key(conn, b.order.restaurant_id, &b.order.idempotency_key)
                .await?
            {
                Some(existing) => WriteOutcome::Duplicate(Box::new(existing)),
                // The conflicting row vanished (deleted restaurant); nothing was written.
                None => return Err(diesel::result::Error::NotFound.into()),
            }
        });
    }

    // Menu and restaurant flags: rare, one statement each.
    for (i, op) in ops.iter().enumerate() {
        match op {
            WriteOp::SetAvailability {
                restaurant_id,
                target,
                available,
                at,
            } => {
                let n = match target {
                    Switchable::Item(id) => {
                        diesel::update(
                            menu_items::table
                                .filter(menu_items::id.eq(id))
                                .filter(menu_items::restaurant_id.eq(restaurant_id)),
                        )
                        .set((
                            menu_items::available.eq(available),
                            menu_items::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                    }
                    Switchable::Option(id) => {
                        diesel::update(
                            menu_options::table
                                .filter(menu_options::id.eq(id))
                                .filter(menu_options::restaurant_id.eq(restaurant_id)),
                        )
                        .set((
                            menu_options::available.eq(available),
                            menu_options::updated_at.eq(at),
                        ))
                        .execute(conn)
                        .await?
                    }
                };
                if n != 1 {
                    return Err(diesel::result::Error::NotFound.into());
                }
                let version = bump_menu_version(conn, *restaurant_id, *at).await?;
                outcomes[i] = Some(WriteOutcome::MenuChanged(version));
            }
            WriteOp::SetAccepting {
                restaurant_id,
                accepting,
                at,
            } => {
                diesel::update(restaurants::table.find(restaurant_id))
                    .set(restaurants::accepting_orders.eq(accepting))
                    .execute(conn)
                    .await?;
                let version = bump_menu_version(conn, *restaurant_id, *at).await?;
                outcomes[i] = Some(WriteOutcome::MenuChanged(version));
            }
            _ => {}
        }
    }

    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(WriteOutcome::Done))
        .collect())
}

/// Adds one to the restaurant's menu version; returns the new version.
async fn bump_menu_version(
    conn: &mut DbConn,
    restaurant_id: Uuid,
    at: DateTime<Utc>,
) -> Result<i64, diesel::result::Error> {
    diesel::update(restaurants::table.find(restaurant_id))
        .set((
            restaurants::menu_version.eq(restaurants::menu_version + 1),
            restaurants::updated_at.eq(at),
        ))
        .returning(restaurants::menu_version)
        .get_result(conn)
        .await
}
