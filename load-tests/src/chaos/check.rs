//! Reconciles the three records of a run: what clients were told (every 2xx), what Postgres holds, and
//! what every kitchen and table socket shows after resuming. Each invariant becomes a [`Verdict`].

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use anyhow::Context;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use scan2order_schema::domain::OrderStatus;
use serde::Serialize;
use uuid::Uuid;

use super::traffic::{lock, Ctx, SubKind};

/// One invariant's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Verdict {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Verdict {
        Verdict {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        }
    }
}

#[derive(QueryableByName, Debug)]
struct OrderRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    restaurant_id: String,
    #[diesel(sql_type = Text)]
    table_label: String,
    #[diesel(sql_type = Text)]
    idempotency_key: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Integer)]
    ticket_no: i32,
    #[diesel(sql_type = Text)]
    business_day: String,
    #[diesel(sql_type = BigInt)]
    items: i64,
    #[diesel(sql_type = BigInt)]
    hist: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    first_hist: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    last_hist: Option<String>,
}

#[derive(QueryableByName, Debug)]
struct HistRow {
    #[diesel(sql_type = Text)]
    order_id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// An order as Postgres holds it.
#[derive(Clone, Debug)]
pub struct DbOrder {
    pub id: Uuid,
    pub restaurant_id: Uuid,
    pub table_label: String,
    pub status: OrderStatus,
}

/// What Postgres holds, read once at the end of a run.
pub struct DbState {
    pub orders: Vec<DbOrder>,
    rows: Vec<OrderRow>,
    hist: Vec<HistRow>,
}

impl DbState {
    pub async fn load(url: &str) -> anyhow::Result<DbState> {
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .context("connecting to the run's database")?;
        let rows: Vec<OrderRow> = diesel::sql_query(
            "SELECT o.id::text AS id, o.restaurant_id::text AS restaurant_id, o.table_label, \
                    o.idempotency_key, o.status, o.ticket_no, o.business_day::text AS business_day, \
                    (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) AS items, \
                    (SELECT count(*) FROM order_status_history h WHERE h.order_id = o.id) AS hist, \
                    (SELECT h.status FROM order_status_history h WHERE h.order_id = o.id \
                       ORDER BY h.id ASC LIMIT 1) AS first_hist, \
                    (SELECT h.status FROM order_status_history h WHERE h.order_id = o.id \
                       ORDER BY h.id DESC LIMIT 1) AS last_hist \
             FROM orders o",
        )
        .load(&mut conn)
        .await
        .context("reading orders")?;
        let hist: Vec<HistRow> = diesel::sql_query(
            "SELECT order_id::text AS order_id, status, count(*) AS n \
             FROM order_status_history GROUP BY order_id, status",
        )
        .load(&mut conn)
        .await
        .context("reading status history")?;
        let mut orders = Vec::with_capacity(rows.len());
        for r in &rows {
            orders.push(DbOrder {
                id: Uuid::parse_str(&r.id)?,
                restaurant_id: Uuid::parse_str(&r.restaurant_id)?,
                table_label: r.table_label.clone(),
                status: OrderStatus::from_str(&r.status)
                    .map_err(|_| anyhow::anyhow!("unknown status {} in orders", r.status))?,
            });
        }
        Ok(DbState { orders, rows, hist })
    }

    /// Live orders (id → status) of a subscriber's view.
    pub fn live_for(&self, ctx: &Ctx, kind: SubKind) -> HashMap<Uuid, OrderStatus> {
        let r = &ctx.plan.restaurants[kind.restaurant()];
        self.orders
            .iter()
            .filter(|o| o.restaurant_id == r.id && !o.status.is_final())
            .filter(|o| match kind {
                SubKind::Kitchen { .. } => true,
                SubKind::Table { table, .. } => o.table_label == r.tables[table].label,
            })
            .map(|o| (o.id, o.status))
            .collect()
    }
}

/// Figures of the reconciliation.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub orders_sent: u64,
    pub orders_acknowledged: u64,
    pub orders_stored: u64,
    pub orders_rejected: u64,
    pub orders_unresolved: u64,
    pub orders_retried: u64,
    pub acknowledged_missing: u64,
    pub duplicates: u64,
    pub half_written: u64,
    pub stored_unacknowledged: u64,
    pub status_acknowledged: u64,
    pub status_missing: u64,
    pub status_duplicated: u64,
    pub status_applied_without_answer: u64,
    pub status_walks_unresolved: u64,
    pub delivered_to_every_kitchen: u64,
    pub kitchen_sockets_mismatched: u64,
    pub table_sockets_mismatched: u64,
}

/// The invariants every scenario checks.
pub fn reconcile(ctx: &Ctx, db: &DbState) -> (Counts, Vec<Verdict>) {
    let rec = lock(&ctx.rec);
    let mut c = Counts {
        orders_sent: rec.orders.len() as u64,
        orders_stored: db.rows.len() as u64,
        ..Counts::default()
    };
    let by_key: HashMap<&str, Vec<&OrderRow>> = db.rows.iter().fold(HashMap::new(), |mut m, r| {
        m.entry(r.idempotency_key.as_str()).or_default().push(r);
        m
    });
    let mut missing = Vec::new();
    let mut half = Vec::new();
    for (key, a) in &rec.orders {
        if a.tries > 1 {
            c.orders_retried += 1;
        }
        if a.rejected.is_some() {
            c.orders_rejected += 1;
        }
        if a.unresolved {
            c.orders_unresolved += 1;
        }
        let rows = by_key.get(key.as_str()).map_or(&[][..], Vec::as_slice);
        if rows.len() > 1 {
            c.duplicates += rows.len() as u64 - 1;
        }
        if let Some((id, ticket)) = a.acked {
            c.orders_acknowledged += 1;
            let label = &ctx.plan.restaurants[a.restaurant].tables[a.table].label;
            match rows.first() {
                Some(r)
                    if r.id == id.to_string()
                        && r.ticket_no == ticket
                        && r.table_label == *label => {}
                Some(r) => missing.push(format!(
                    "key {key}: told {id} #{ticket} at {label}, stored {} #{} at {}",
                    r.id, r.ticket_no, r.table_label
                )),
                None => missing.push(format!("key {key}: told {id} #{ticket}, not stored")),
            }
        } else if !rows.is_empty() {
            c.stored_unacknowledged += 1;
        }
        for r in rows {
            if r.items != a.lines as i64 {
                half.push(format!("{}: {} of {} lines", r.id, r.items, a.lines));
            }
        }
    }
    c.acknowledged_missing = missing.len() as u64;
    // Every stored order is whole: lines, a history that starts at placed and ends at its status.
    let ours: HashSet<&str> = rec.orders.keys().map(String::as_str).collect();
    let mut foreign = 0u64;
    for r in &db.rows {
        if !ours.contains(r.idempotency_key.as_str()) {
            foreign += 1;
        }
        if r.items == 0
            || r.hist == 0
            || r.first_hist.as_deref() != Some("placed")
            || r.last_hist.as_deref() != Some(r.status.as_str())
        {
            half.push(format!(
                "{}: {} lines, {} history rows, first {:?}, last {:?}, status {}",
                r.id, r.items, r.hist, r.first_hist, r.last_hist, r.status
            ));
        }
    }
    c.half_written = half.len() as u64;
    // Tickets unique per restaurant and day.
    let mut tickets = HashSet::new();
    let mut dup_tickets = 0u64;
    for r in &db.rows {
        if !tickets.insert((&r.restaurant_id, &r.business_day, r.ticket_no)) {
            dup_tickets += 1;
        }
    }
    // Status changes.
    let hist: HashMap<(&str, &str), i64> = db
        .hist
        .iter()
        .map(|h| ((h.order_id.as_str(), h.status.as_str()), h.n))
        .collect();
    let mut status_missing = Vec::new();
    for (id, st) in &rec.status_acks {
        let id_s = id.to_string();
        if hist
            .get(&(id_s.as_str(), st.as_str()))
            .copied()
            .unwrap_or(0)
            == 0
        {
            status_missing.push(format!("{id} {st}"));
        }
    }
    c.status_acknowledged = rec.status_acks.len() as u64;
    c.status_missing = status_missing.len() as u64;
    c.status_duplicated = db.hist.iter().filter(|h| h.n > 1).count() as u64;
    c.status_applied_without_answer = rec.status_applied_unacked;
    c.status_walks_unresolved = rec.walks_unresolved;

    // Sockets against the database.
    let mut kitchen_bad = Vec::new();
    let mut table_bad = Vec::new();
    for sub in &ctx.subs {
        let want = db.live_for(ctx, sub.kind);
        let st = lock(&sub.state);
        if st.model != want {
            let extra = st.model.keys().filter(|k| !want.contains_key(k)).count();
            let lacking = want.keys().filter(|k| !st.model.contains_key(k)).count();
            let differ = want
                .iter()
                .filter(|(k, v)| st.model.get(k).is_some_and(|m| m != *v))
                .count();
            let d = format!(
                "{:?}: {} shown, {} live in db ({extra} extra, {lacking} missing, {differ} in another status)",
                sub.kind,
                st.model.len(),
                want.len()
            );
            match sub.kind {
                SubKind::Kitchen { .. } => kitchen_bad.push(d),
                SubKind::Table { .. } => table_bad.push(d),
            }
        }
    }
    c.kitchen_sockets_mismatched = kitchen_bad.len() as u64;
    c.table_sockets_mismatched = table_bad.len() as u64;
    let kitchens: Vec<_> = ctx
        .subs
        .iter()
        .filter(|s| matches!(s.kind, SubKind::Kitchen { .. }))
        .collect();
    c.delivered_to_every_kitchen = rec
        .orders
        .values()
        .filter_map(|a| a.acked.map(|(id, _)| (a.restaurant, id)))
        .filter(|(r, id)| {
            kitchens
                .iter()
                .filter(|k| k.kind.restaurant() == *r)
                .all(|k| lock(&k.state).seen.contains(id))
        })
        .count() as u64;

    let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    let kitchen = ctx.summary(|k| matches!(k, SubKind::Kitchen { .. }));
    let table = ctx.summary(|k| matches!(k, SubKind::Table { .. }));
    let stream_bad = kitchen.duplicates
        + kitchen.regressions
        + kitchen.gaps
        + kitchen.foreign_or_unknown
        + kitchen.before_snapshot
        + table.duplicates
        + table.regressions
        + table.foreign_or_unknown
        + table.before_snapshot;
    let mut stream_detail = kitchen.details.clone();
    stream_detail.extend(table.details.iter().cloned());
    let verdicts = vec![
        Verdict::new(
            "every acknowledged order is stored, exactly once, as acknowledged",
            missing.is_empty() && c.duplicates == 0,
            format!(
                "{} acknowledged, {} missing or different, {} duplicates{}",
                c.orders_acknowledged,
                missing.len(),
                c.duplicates,
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&missing))
                }
            ),
        ),
        Verdict::new(
            "nothing is half-written (lines, history from placed to the order's status)",
            half.is_empty(),
            format!(
                "{} stored orders checked, {} incomplete{}",
                db.rows.len(),
                half.len(),
                if half.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&half))
                }
            ),
        ),
        Verdict::new(
            "ticket numbers unique per restaurant and day; no order the clients did not send",
            dup_tickets == 0 && foreign == 0,
            format!("{dup_tickets} repeated tickets, {foreign} unknown orders"),
        ),
        Verdict::new(
            "every acknowledged status change is stored, none twice",
            status_missing.is_empty() && c.status_duplicated == 0,
            format!(
                "{} acknowledged, {} missing, {} duplicated history rows{}",
                c.status_acknowledged,
                status_missing.len(),
                c.status_duplicated,
                if status_missing.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&status_missing))
                }
            ),
        ),
        Verdict::new(
            "every guest got a definitive answer (retrying with the same key)",
            c.orders_unresolved == 0 && c.status_walks_unresolved == 0,
            format!(
                "{} orders and {} status changes unresolved at the retry deadline; {} orders needed a retry",
                c.orders_unresolved, c.status_walks_unresolved, c.orders_retried
            ),
        ),
        Verdict::new(
            "no answer a correct server never gives (500s, unexpected refusals, 503 without `unavailable`)",
            rec.unexpected == 0,
            format!(
                "{} unexpected{}",
                rec.unexpected,
                if rec.unexpected_detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&rec.unexpected_detail))
                }
            ),
        ),
        Verdict::new(
            "every kitchen socket shows exactly the database's live orders",
            kitchen_bad.is_empty(),
            format!(
                "{} kitchen sockets, {} differ{}",
                kitchen.sockets,
                kitchen_bad.len(),
                if kitchen_bad.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&kitchen_bad))
                }
            ),
        ),
        Verdict::new(
            "every table socket shows exactly its table's live orders",
            table_bad.is_empty(),
            format!(
                "{} table sockets, {} differ{}",
                table.sockets,
                table_bad.len(),
                if table_bad.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&table_bad))
                }
            ),
        ),
        Verdict::new(
            "every socket saw its events exactly once and in order (no duplicate, reordering or hole)",
            stream_bad == 0,
            format!(
                "{} kitchen + {} table events; {} violations{}",
                kitchen.events,
                table.events,
                stream_bad,
                if stream_detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", first(&stream_detail))
                }
            ),
        ),
    ];
    (c, verdicts)
}

#[cfg(test)]
mod tests {
    //! The reconciliation must catch each kind of violation; a clean run must pass.

    use std::sync::Arc;

    use super::*;
    use crate::chaos::traffic::Attempt;

    fn ctx() -> Arc<Ctx> {
        crate::chaos::traffic::test_ctx()
    }

    fn row(id: u128, key: &str, status: &str, items: i64, hist: (&str, &str, i64)) -> OrderRow {
        OrderRow {
            id: Uuid::from_u128(id).to_string(),
            restaurant_id: Uuid::from_u128(1).to_string(),
            table_label: "T1".into(),
            idempotency_key: key.into(),
            status: status.into(),
            ticket_no: i32::try_from(id).expect("small"),
            business_day: "2026-11-26".into(),
            items,
            hist: hist.2,
            first_hist: Some(hist.0.into()),
            last_hist: Some(hist.1.into()),
        }
    }

    /// One acknowledged order (id 100, key k1, two lines, accepted and acknowledged as such), shown
    /// on both sockets; the database as given.
    fn run(rows: Vec<OrderRow>, hist: Vec<(u128, &str, i64)>) -> Vec<Verdict> {
        let ctx = ctx();
        {
            let mut rec = lock(&ctx.rec);
            rec.orders.insert(
                "k1".into(),
                Attempt {
                    restaurant: 0,
                    table: 0,
                    lines: 2,
                    tries: 1,
                    acked: Some((Uuid::from_u128(100), 100)),
                    rejected: None,
                    unresolved: false,
                },
            );
            rec.status_acks
                .push((Uuid::from_u128(100), OrderStatus::Accepted));
        }
        for sub in &ctx.subs {
            let mut st = lock(&sub.state);
            st.model.insert(Uuid::from_u128(100), OrderStatus::Accepted);
            st.seen.insert(Uuid::from_u128(100));
        }
        let orders = rows
            .iter()
            .map(|r| DbOrder {
                id: Uuid::parse_str(&r.id).expect("uuid"),
                restaurant_id: Uuid::parse_str(&r.restaurant_id).expect("uuid"),
                table_label: r.table_label.clone(),
                status: OrderStatus::from_str(&r.status).expect("status"),
            })
            .collect();
        let db = DbState {
            orders,
            rows,
            hist: hist
                .into_iter()
                .map(|(id, status, n)| HistRow {
                    order_id: Uuid::from_u128(id).to_string(),
                    status: status.into(),
                    n,
                })
                .collect(),
        };
        reconcile(&ctx, &db).1
    }

    fn failed(v: &[Verdict]) -> Vec<&str> {
        v.iter()
            .filter(|v| !v.ok)
            .map(|v| v.name.as_str())
            .collect()
    }

    fn good_row() -> OrderRow {
        row(100, "k1", "accepted", 2, ("placed", "accepted", 2))
    }

    fn good_hist() -> Vec<(u128, &'static str, i64)> {
        vec![(100, "placed", 1), (100, "accepted", 1)]
    }

    #[test]
    fn a_clean_run_passes() {
        let v = run(vec![good_row()], good_hist());
        assert!(failed(&v).is_empty(), "{v:?}");
    }

    #[test]
    fn a_lost_acknowledged_order_is_caught() {
        let v = run(vec![], vec![]);
        let f = failed(&v);
        assert!(
            f.iter().any(|n| n.starts_with("every acknowledged order")),
            "{f:?}"
        );
        // The sockets show an order the database does not have.
        assert!(f.iter().any(|n| n.contains("kitchen socket")), "{f:?}");
    }

    #[test]
    fn a_half_written_order_is_caught() {
        let v = run(
            vec![row(100, "k1", "accepted", 1, ("placed", "accepted", 2))],
            good_hist(),
        );
        assert_eq!(
            failed(&v),
            ["nothing is half-written (lines, history from placed to the order's status)"]
        );
        let v = run(
            vec![row(100, "k1", "accepted", 2, ("placed", "placed", 1))],
            vec![(100, "placed", 1)],
        );
        assert!(failed(&v)
            .iter()
            .any(|n| n.starts_with("nothing is half-written")));
    }

    #[test]
    fn a_lost_or_duplicated_status_change_is_caught() {
        let v = run(vec![good_row()], vec![(100, "placed", 1)]);
        assert!(failed(&v)
            .iter()
            .any(|n| n.starts_with("every acknowledged status change")));
        let v = run(
            vec![good_row()],
            vec![(100, "placed", 1), (100, "accepted", 2)],
        );
        assert!(failed(&v)
            .iter()
            .any(|n| n.starts_with("every acknowledged status change")));
    }

    #[test]
    fn a_socket_showing_another_status_is_caught() {
        let v = run(
            vec![row(100, "k1", "ready", 2, ("placed", "ready", 3))],
            vec![(100, "placed", 1), (100, "accepted", 1), (100, "ready", 1)],
        );
        let f = failed(&v);
        assert!(f.iter().any(|n| n.contains("kitchen socket")), "{f:?}");
        assert!(f.iter().any(|n| n.contains("table socket")), "{f:?}");
    }

    #[test]
    fn an_order_nobody_sent_and_a_repeated_ticket_are_caught() {
        let mut other = row(101, "someone-else", "placed", 1, ("placed", "placed", 1));
        other.ticket_no = 100;
        let v = run(vec![good_row(), other], good_hist());
        assert!(failed(&v)
            .iter()
            .any(|n| n.starts_with("ticket numbers unique")));
    }
}
