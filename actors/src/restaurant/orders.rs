//! # The write paths of orders: placing them and moving them along
//!
//! The handlers join the [`OrderBook`](super::order_book::OrderBook) rules to the persistence writer:
//! an order is prepared by the book, committed with its "order received" message in one transaction,
//! and only then made live, answered and streamed. Retries of an idempotency key in flight wait for the
//! first attempt's answer; a write whose outcome is unknown is settled by [`reconcile`](super::reconcile).

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use chrono::{SubsecRound, Utc};
use scan2order_schema::domain::{OrderId, OrderStatus, Phone, StaffId, TableId};
use scan2order_schema::models::{NewOutbox, OrderRow, StoredOrder};
use scan2order_schema::wire::{self, PlaceOrderLine, ServerMsg};
use scan2order_schema::DbPool;
use tokio::sync::oneshot;

use super::order_book::{stored_status, OrderRequest, StatusApplied};
use super::reconcile::Unsettled;
use super::{Audience, Committed, EngineError, Missing, RestaurantActor};
use crate::notifier::MessageKind;
use crate::writer::{NewOrderBundle, SessionCheck, WriteOp, WriteOutcome};

/// An order as committed.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PlacedOrder {
    /// The order with the guest's own phone (for the guest who placed it).
    pub order: wire::Order,
    /// False when an earlier request with the same key created it.
    pub created: bool,
}

type PlaceReply = oneshot::Sender<Result<PlacedOrder, EngineError>>;

/// Idempotency keys whose order is being written: the phone that placed it, and the retries waiting
/// for its answer.
#[derive(Default)]
pub(crate) struct PendingKeys(HashMap<String, (String, Vec<PlaceReply>)>);

impl PendingKeys {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Counts an order the engine refused, by protocol code.
fn count_refusal(e: &EngineError) {
    let (code, _) = e.code();
    metrics::counter!("s2o_orders_refused_total", "reason" => code).increment(1);
}

impl RestaurantActor {
    /// The WhatsApp message an order's change queues, in the same transaction as the change.
    fn outbox_for(&self, row: &OrderRow, kind: MessageKind) -> NewOutbox {
        NewOutbox {
            dedup_key: format!("order:{}:{}", row.id, kind.as_str()),
            phone: row.phone.clone(),
            template: kind.as_str().to_string(),
            params: serde_json::json!([self.menu.info.name, row.ticket_no.to_string()]),
        }
    }

    /// Makes a committed order live and tells the kitchen and its table.
    pub(crate) fn add_live(&mut self, stored: StoredOrder) {
        if let Some((order, table)) = self.orders.add(stored) {
            self.publish(Some(table), |seq| ServerMsg::OrderCreated { seq, order });
        }
    }

    /// Tells the kitchen and the order's table about a committed status change.
    pub(crate) fn publish_status(&mut self, applied: StatusApplied) {
        let StatusApplied { order, table } = applied;
        self.publish(Some(table), |seq| ServerMsg::OrderStatus {
            seq,
            order_id: order.id,
            ticket_no: order.ticket_no,
            status: order.status,
            updated_at: order.updated_at,
            allergy_ack: order.allergy_ack.clone(),
        });
    }

    /// An order the database already held for this key: adopt it (it may have been committed by a write
    /// whose answer was lost) and answer with it.
    fn adopt(&mut self, existing: StoredOrder, phone: &str) -> Result<PlacedOrder, EngineError> {
        if existing.row.phone != phone {
            return Err(EngineError::IdempotencyConflict);
        }
        let order = existing.to_wire(true);
        self.orders.remember_key(
            existing.row.idempotency_key.clone(),
            existing.row.id,
            existing.row.phone.clone(),
        );
        self.add_live(existing);
        Ok(PlacedOrder {
            order,
            created: false,
        })
    }
}

/// A guest places an order. Answered after the commit, with the order as stored.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<PlacedOrder, EngineError>")]
pub struct PlaceOrder {
    pub table_id: TableId,
    pub table_token: String,
    pub phone: Phone,
    pub idempotency_key: String,
    pub lines: Vec<PlaceOrderLine>,
    pub note: Option<String>,
    /// The table's declared allergies, as sent (checked by the order book).
    pub allergies: Option<Vec<String>>,
    /// Set when the guest was authenticated from the session cache: the writer confirms the session
    /// in the order's own transaction.
    pub session: Option<SessionCheck>,
}

impl Handler<PlaceOrder> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<PlacedOrder, EngineError>>;

    fn handle(&mut self, msg: PlaceOrder, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let key = msg.idempotency_key.clone();
        let phone = msg.phone.as_str().to_string();
        // A retry while the first attempt is still being written waits for its answer — only the
        // same guest's: another phone reusing the key must not receive that order (nor its phone).
        if let Some((owner, waiters)) = self.pending_keys.0.get_mut(&key) {
            if *owner != phone {
                return Box::pin(actix::fut::ready(Err(EngineError::IdempotencyConflict)));
            }
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Box::pin(actix::fut::wrap_future(async move {
                rx.await.unwrap_or(Err(EngineError::Unavailable))
            }));
        }
        // (A guest authenticated only from memory is answered through the writer, which confirms the
        // session; the stored order comes back as a duplicate.)
        if let Some((id, owner)) = self.orders.recent(&key).filter(|_| msg.session.is_none()) {
            if owner != phone {
                return Box::pin(actix::fut::ready(Err(EngineError::IdempotencyConflict)));
            }
            if let Some(live) = self.orders.get(id) {
                let order = live.to_wire(true);
                return Box::pin(actix::fut::ready(Ok(PlacedOrder {
                    order,
                    created: false,
                })));
            }
        }
        let now = Utc::now();
        let started = Instant::now();
        let request = OrderRequest {
            table_id: msg.table_id,
            table_token: &msg.table_token,
            phone: &phone,
            idempotency_key: &key,
            lines: &msg.lines,
            note: msg.note.as_deref(),
            allergies: msg.allergies.as_deref(),
        };
        let stored = match self.orders.prepare(&self.menu, &request, now) {
            Ok(s) => s,
            Err(err) => {
                count_refusal(&err);
                // A refused request may still be the retry of an order placed before a restart.
                let pool = self.pool.clone();
                let rid = self.id.get();
                return Box::pin(
                    async move {
                        let mut conn = pool.get().await.ok()?;
                        StoredOrder::find_by_key(&mut conn, rid, &key)
                            .await
                            .ok()
                            .flatten()
                    }
                    .into_actor(self)
                    .map(move |found, act, _| match found {
                        Some(existing) => act.adopt(existing, &phone),
                        None => Err(err),
                    }),
                );
            }
        };
        self.pending_keys
            .0
            .insert(key.clone(), (phone.clone(), Vec::new()));
        let outbox = Some(self.outbox_for(&stored.row, MessageKind::OrderReceived));
        let op = WriteOp::InsertOrder(Box::new(NewOrderBundle {
            order: stored.row.clone(),
            items: stored.items.clone(),
            outbox,
            session: msg.session.clone(),
        }));
        Box::pin(
            self.commit(op)
                .into_actor(self)
                .map(move |committed, act, ctx| {
                    let result = match committed {
                        Committed::Unknown => {
                            act.reconcile_later(ctx, Unsettled::Insert(Box::new(stored.row)));
                            Err(EngineError::Unavailable)
                        }
                        Committed::Refused(e) => Err(e),
                        Committed::Stored(WriteOutcome::Duplicate(existing)) => {
                            act.adopt(*existing, &phone)
                        }
                        Committed::Stored(WriteOutcome::SessionEnded) => {
                            Err(EngineError::Unauthenticated)
                        }
                        Committed::Stored(_) => {
                            let order = stored.to_wire(true);
                            act.orders
                                .remember_key(key.clone(), stored.row.id, phone.clone());
                            act.add_live(stored);
                            metrics::counter!("s2o_orders_placed_total").increment(1);
                            metrics::histogram!("s2o_order_delivery_seconds")
                                .record(started.elapsed().as_secs_f64());
                            Ok(PlacedOrder {
                                order,
                                created: true,
                            })
                        }
                    };
                    let waiters = act.pending_keys.0.remove(&key).map(|(_, w)| w);
                    for waiter in waiters.unwrap_or_default() {
                        // A retry carries its own credentials: the first attempt's ended session is
                        // not its answer; it may try again.
                        let answer = match &result {
                            Err(EngineError::Unauthenticated) => Err(EngineError::Unavailable),
                            other => other.clone(),
                        };
                        let _ = waiter.send(answer.map(|p| PlacedOrder {
                            created: false,
                            ..p
                        }));
                    }
                    result
                }),
        )
    }
}

/// The kitchen moves an order along. Answered with the order (phone masked) after the commit.
///
/// Each change carries a request id (the client's, or one the server chose for a client that sent
/// none), stored with its history row. A change refused as invalid is first looked up there: when the
/// same request (same status, same staff member) was applied already — its answer was lost, the client
/// or a forwarding node sent it again, possibly to the next owner — it is answered as done, so a retry
/// never turns into `invalid_transition` and nothing is applied twice.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Result<wire::Order, EngineError>")]
pub struct ChangeStatus {
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub by: Option<StaffId>,
    /// Set when the staff member was authenticated from the session cache: the writer confirms the
    /// session in the change's own transaction.
    pub session: Option<SessionCheck>,
    /// The request this change answers, stored with it: a retry of an applied one is answered as done.
    pub request_id: Option<String>,
    /// The staff member read the order's declared allergies (required to move such an order out of
    /// `placed`, except to cancel it).
    pub allergy_ack: bool,
}

impl Handler<ChangeStatus> for RestaurantActor {
    type Result = ResponseActFuture<Self, Result<wire::Order, EngineError>>;

    fn handle(&mut self, msg: ChangeStatus, _ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let id = msg.order_id.get();
        let to = msg.status;
        let by = msg.by.map(StaffId::get);
        let request = msg.request_id;
        let (row, records_ack) =
            match self
                .orders
                .begin_change(id, to, request.as_deref(), msg.allergy_ack)
            {
                Some(Ok((row, records_ack))) => (row.clone(), records_ack),
                Some(Err(refused @ EngineError::InvalidTransition { .. })) => {
                    let pool = self.pool.clone();
                    return Box::pin(actix::fut::wrap_future(refused_unless_applied(
                        pool, id, to, by, request, refused, None,
                    )));
                }
                Some(Err(e)) => return Box::pin(actix::fut::ready(Err(e))),
                None => {
                    // Not live: finished (the move is invalid, unless it is a retry of the one that
                    // finished it) or not this restaurant's at all.
                    let pool = self.pool.clone();
                    let rid = self.id.get();
                    return Box::pin(actix::fut::wrap_future(async move {
                        let found = {
                            let mut conn =
                                pool.get().await.map_err(|_| EngineError::Unavailable)?;
                            StoredOrder::find(&mut conn, id)
                                .await
                                .map_err(|_| EngineError::Unavailable)?
                        };
                        match found {
                            Some(o) if o.row.restaurant_id == rid => {
                                let refused = EngineError::InvalidTransition {
                                    from: stored_status(&o.row),
                                    to,
                                };
                                refused_unless_applied(pool, id, to, by, request, refused, Some(o))
                                    .await
                            }
                            _ => Err(EngineError::NotFound(Missing::Order)),
                        }
                    }));
                }
            };
        let kind = match to {
            OrderStatus::Ready => Some(MessageKind::OrderReady),
            OrderStatus::Cancelled => Some(MessageKind::OrderCancelled),
            _ => None,
        };
        let outbox = kind.map(|k| self.outbox_for(&row, k));
        // Postgres keeps microseconds: memory keeps the same instant, so an answer from memory and a
        // later read of the row agree (the allergy acknowledgement's time is shown to the table).
        let at = Utc::now().trunc_subsecs(6);
        let op = WriteOp::SetStatus {
            order_id: id,
            status: to,
            at,
            by,
            request_id: request.clone(),
            allergy_ack: records_ack,
            outbox,
            session: msg.session,
        };
        Box::pin(
            self.commit(op)
                .into_actor(self)
                .map(move |committed, act, ctx| {
                    act.orders.change_answered(id, request.as_deref());
                    let failure = match committed {
                        Committed::Stored(WriteOutcome::SessionEnded) => {
                            Some((EngineError::Unauthenticated, false))
                        }
                        Committed::Stored(_) => None,
                        Committed::Refused(e) => Some((e, false)),
                        Committed::Unknown => Some((EngineError::Unavailable, true)),
                    };
                    if let Some((e, unknown)) = failure {
                        act.orders.change_failed(id, unknown);
                        if unknown {
                            act.reconcile_later(ctx, Unsettled::Status(id));
                        }
                        return Err(e);
                    }
                    let applied = act
                        .orders
                        .change_committed(id, to, at, records_ack.then_some((by, at)))
                        .ok_or(EngineError::NotFound(Missing::Order))?;
                    let order = applied.order.clone();
                    metrics::counter!("s2o_status_changes_total", "status" => to.as_str())
                        .increment(1);
                    act.publish_status(applied);
                    Ok(order)
                }),
        )
    }
}

/// `refused`, unless the change `request` asked for was applied already: then the order as stored
/// (phone masked; `found` when the caller has just read it), the answer its first attempt would have had.
async fn refused_unless_applied(
    pool: DbPool,
    id: uuid::Uuid,
    to: OrderStatus,
    by: Option<uuid::Uuid>,
    request: Option<String>,
    refused: EngineError,
    found: Option<StoredOrder>,
) -> Result<wire::Order, EngineError> {
    let Some(request) = request else {
        return Err(refused);
    };
    let mut conn = pool.get().await.map_err(|_| EngineError::Unavailable)?;
    let applied = StoredOrder::change_applied(&mut conn, id, &request, to, by)
        .await
        .map_err(|_| EngineError::Unavailable)?;
    if !applied {
        return Err(refused);
    }
    let order = match found {
        Some(order) => Some(order),
        None => StoredOrder::find(&mut conn, id)
            .await
            .map_err(|_| EngineError::Unavailable)?,
    };
    order
        .map(|o| o.to_wire(false))
        .ok_or(EngineError::Unavailable)
}

/// The kitchen's live orders, oldest first, phones masked.
#[derive(Message, Clone, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Vec<wire::Order>")]
pub struct GetLiveOrders;

impl Handler<GetLiveOrders> for RestaurantActor {
    type Result = Vec<wire::Order>;

    fn handle(&mut self, _: GetLiveOrders, _ctx: &mut Context<Self>) -> Vec<wire::Order> {
        self.orders.snapshot(Audience::Kitchen)
    }
}
