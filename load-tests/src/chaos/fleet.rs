//! The fleet's faults. Two nodes share the run's database and a private `nats-server`: node A
//! (`node-a`) runs every restaurant (each is activated there first), and every guest, kitchen bot and
//! socket talks to node B (`node-b`), so every order is forwarded to A and every event relayed by B.
//! Then A is killed (`node-kill`), paused past its lease and resumed (`node-pause`), terminated
//! (`handover`), or NATS restarts under both (`nats-restart`). The common reconciliation afterwards
//! compares what clients were told, what Postgres holds and what every socket received.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::process::{Child, Command};

use super::check::Verdict;
use super::server::{free_port, signal, Server};
use super::traffic::{lock, wait_until, Ctx, SubKind};
use super::Scenario;
use crate::http::HttpPool;
use crate::setup::Plan;

/// The lease the nodes run with (the shipped default).
pub const LEASE_TTL_MS: u64 = 3000;

/// A private `nats-server` on a port of its own, stopped and started again on the same port.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
}

impl Nats {
    pub async fn start() -> anyhow::Result<Nats> {
        let mut nats = Nats {
            child: None,
            port: free_port()?,
        };
        nats.restart().await?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) and waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (scripts/ensure-nats installs it)")?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listening = wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        })
        .await;
        if !listening {
            bail!("nats-server did not listen on {}", self.port);
        }
        Ok(())
    }

    /// Kills it, as a crash would.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.start_kill()?;
            c.wait().await?;
        }
        Ok(())
    }
}

/// The settings every node of the run shares; node A's id (node B overrides it).
pub fn cluster_env(nats: &Nats) -> Vec<(String, String)> {
    [
        ("SCAN2ORDER__CLUSTER__ENABLED", "true".to_string()),
        ("SCAN2ORDER__CLUSTER__NATS_URL", nats.url()),
        ("SCAN2ORDER__CLUSTER__NODE_ID", "node-a".to_string()),
        (
            "SCAN2ORDER__CLUSTER__LEASE_TTL_MS",
            LEASE_TTL_MS.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Node B, beside node A.
pub fn entry_node(owner: &Server) -> anyhow::Result<Server> {
    owner.sibling(
        &[("SCAN2ORDER__CLUSTER__NODE_ID", "node-b")],
        owner.log_path().with_file_name("server-b.log"),
    )
}

/// Activates every restaurant on `owner`: a guest's menu read there starts it (and takes its lease).
pub async fn own_everything(owner: &Server, plan: &Plan) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("127.0.0.1:{}", owner.port).parse()?;
    let pool = HttpPool::new(addr, None, addr.to_string(), 4, Duration::from_secs(10));
    for r in &plan.restaurants {
        let table = <[_]>::first(&r.tables).context("a restaurant without tables")?;
        let res = pool
            .call("GET", &format!("/api/v1/tables/{}", table.token), &[], None)
            .await
            .map_err(|e| anyhow::anyhow!("menu read on node A: {e:?}"))?;
        anyhow::ensure!(res.status == 200, "menu read on node A: {}", res.status);
    }
    let owned = owners(&owner.db_url).await?;
    anyhow::ensure!(
        owned.get("node-a").copied().unwrap_or(0) == plan.restaurants.len(),
        "node A should own every restaurant, owners: {owned:?}"
    );
    Ok(())
}

#[derive(QueryableByName)]
struct Owned {
    #[diesel(sql_type = Text)]
    node_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Restaurants per node holding a lease that runs.
async fn owners(db_url: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut conn = AsyncPgConnection::establish(db_url).await?;
    let rows: Vec<Owned> = diesel::sql_query(
        "SELECT node_id, count(*) AS n FROM restaurant_leases WHERE expires_at > now() \
         GROUP BY node_id",
    )
    .load(&mut conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.node_id, r.n as usize))
        .collect())
}

/// The longest time without an acknowledged order from the fault on: the widest interval between
/// consecutive acknowledgements (the first counted from the last one before the fault) that ends after
/// `fault_ms`. `None` when nothing was acknowledged after the fault.
fn ack_gap_ms(acked: &[u64], fault_ms: u64) -> Option<u64> {
    let mut acked = acked.to_vec();
    acked.sort_unstable();
    let start = acked
        .iter()
        .rev()
        .find(|t| **t <= fault_ms)
        .copied()
        .unwrap_or(fault_ms);
    let after: Vec<u64> = acked.into_iter().filter(|t| *t > fault_ms).collect();
    let first = *<[u64]>::first(&after)?;
    let widest = after.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Some((first - start).max(widest))
}

/// A counter's total in a node's `/metrics`.
async fn counter(node: &Server, name: &str) -> Option<f64> {
    let addr: SocketAddr = format!("127.0.0.1:{}", node.port).parse().ok()?;
    let pool = HttpPool::new(addr, None, addr.to_string(), 1, Duration::from_secs(5));
    let res = pool.call("GET", "/metrics", &[], None).await.ok()?;
    Some(
        String::from_utf8_lossy(&res.body)
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Injects the scenario's fault into the fleet and judges what is particular to it.
#[allow(clippy::too_many_arguments)]
pub async fn fault(
    scenario: Scenario,
    ctx: &Arc<Ctx>,
    owner: &mut Server,
    nats: &mut Nats,
    fault_ms: u64,
    after: Duration,
    outage: Duration,
    figures: &mut serde_json::Map<String, serde_json::Value>,
    verdicts: &mut Vec<Verdict>,
) -> anyhow::Result<()> {
    let mut put = |k: &str, v: serde_json::Value| {
        figures.insert(k.to_string(), v);
    };
    let restaurants = ctx.plan.restaurants.len();
    let t = Instant::now();
    match scenario {
        Scenario::NodeKill => {
            owner.kill9().await?;
            eprintln!("   node A killed (-9) at {fault_ms} ms");
        }
        Scenario::Handover => {
            let (code, took) = owner.terminate(Duration::from_secs(60)).await?;
            eprintln!("   node A SIGTERM at {fault_ms} ms: exit {code:?} after {took:?}");
            put("shutdown_ms", (took.as_millis() as u64).into());
            verdicts.push(Verdict::new(
                "hand-over: node A exits 0 after flushing and releasing its leases",
                code == Some(0),
                format!("exit {code:?} after {} ms", took.as_millis()),
            ));
        }
        Scenario::NodePause => {
            let pid = owner.pid().context("node A is not running")?;
            let paused = Duration::from_millis(2 * LEASE_TTL_MS) + Duration::from_secs(1);
            signal(pid, "STOP").await?;
            eprintln!("   node A paused (SIGSTOP) for {paused:?} at {fault_ms} ms");
            tokio::time::sleep(paused).await;
            signal(pid, "CONT").await?;
            eprintln!("   node A resumed at {} ms", ctx.ms());
        }
        Scenario::NatsRestart => {
            nats.stop().await?;
            eprintln!("   NATS down for {outage:?} at {fault_ms} ms");
            tokio::time::sleep(outage).await;
            nats.restart().await?;
            eprintln!("   NATS back at {} ms", ctx.ms());
        }
        _ => bail!("{scenario:?} is not a fleet scenario"),
    }
    tokio::time::sleep(after).await;

    let gap = ack_gap_ms(&lock(&ctx.rec).acked_at_ms, fault_ms);
    put("orders_unacknowledged_for_ms", gap.into());
    let owned = owners(&owner.db_url).await?;
    put("owners_after", serde_json::to_value(&owned)?);
    match scenario {
        Scenario::NodeKill | Scenario::NodePause => {
            let limit = LEASE_TTL_MS + 2000;
            verdicts.push(Verdict::new(
                "orders are acknowledged again within lease_ttl + 2 s of losing the owner (a paused one: plus the forward timeout)",
                gap.is_some_and(|g| g <= limit + outage_of(scenario)),
                format!("no order acknowledged for {gap:?} ms around the fault (lease {LEASE_TTL_MS} ms)"),
            ));
        }
        Scenario::Handover => {
            verdicts.push(Verdict::new(
                "hand-over: the next order is acknowledged within 1 s",
                gap.is_some_and(|g| g < 1000),
                format!("no order acknowledged for {gap:?} ms around the SIGTERM"),
            ));
        }
        _ => {}
    }
    if scenario != Scenario::NatsRestart {
        verdicts.push(Verdict::new(
            "node B took over every restaurant",
            owned.get("node-b").copied().unwrap_or(0) == restaurants,
            format!("leases that run, by node: {owned:?}"),
        ));
        // Sockets on the surviving node were never dropped: they got the new owner's epoch as a
        // snapshot on the same connection.
        let subs = ctx.summary(|_| true);
        let resynced = ctx
            .subs
            .iter()
            .filter(|s| lock(&s.state).snapshots >= 2)
            .count();
        put("sockets_resynced_by_snapshot", resynced.into());
        // The one close the fault may not cause is any: a busy kitchen that falls behind its outbound
        // queue (production's 256 frames) is closed as a slow consumer (1013) and resumes, with or
        // without a fault (docs/RELIABILITY.md); every other reconnect would be the fault's.
        let slow: u64 = subs.close_codes.get(&1013).copied().unwrap_or(0);
        let other_closes: u64 = subs
            .close_codes
            .iter()
            .filter(|(c, _)| **c != 1013)
            .map(|(_, n)| *n)
            .sum();
        let reconnects = subs.connects.saturating_sub(subs.sockets as u64);
        put("slow_consumer_closes", slow.into());
        verdicts.push(Verdict::new(
            "sockets on the surviving node are not dropped by the fault and follow the new epoch by \
             snapshot",
            other_closes == 0 && reconnects <= slow && resynced == subs.sockets,
            format!(
                "{} sockets, {reconnects} reconnects after {slow} slow-consumer closes (1013), {other_closes} \
                 other closes; {resynced} got a snapshot of a later epoch on a connection",
                subs.sockets
            ),
        ));
    }
    match scenario {
        Scenario::NodeKill => {
            // The killed node comes back and rejoins as a node that owns nothing.
            let ready = owner.start().await?;
            put(
                "node_a_restart_to_ready_ms",
                (ready.as_millis() as u64).into(),
            );
            let owned = owners(&owner.db_url).await?;
            verdicts.push(Verdict::new(
                "the killed node rejoins as a non-owner",
                !owned.contains_key("node-a"),
                format!(
                    "ready {} ms after its restart; owners {owned:?}",
                    ready.as_millis()
                ),
            ));
        }
        Scenario::NodePause => {
            owner.wait_ready(Duration::from_secs(30)).await?;
            let lost = counter(owner, "s2o_leases_lost_total").await.unwrap_or(0.0);
            put("node_a_leases_lost", lost.into());
            verdicts.push(Verdict::new(
                "the paused owner found its leases taken, stopped those restaurants and rejoined as a \
                 non-owner",
                lost >= restaurants as f64 && !owned.contains_key("node-a"),
                format!("node A counts {lost} leases lost; owners {owned:?}"),
            ));
        }
        Scenario::NatsRestart => {
            let kitchen = ctx.summary(|k| matches!(k, SubKind::Kitchen { .. }));
            put("kitchen_snapshots", kitchen.snapshots.into());
            verdicts.push(Verdict::new(
                "NATS restarting moves no restaurant: node A still owns every one",
                owned.get("node-a").copied().unwrap_or(0) == restaurants,
                format!("leases that run, by node: {owned:?}"),
            ));
        }
        _ => {}
    }
    put("fault_handled_ms", (t.elapsed().as_millis() as u64).into());
    Ok(())
}

/// What a paused owner adds: a command forwarded to it just before its lease ran out waits for the
/// forward's timeout (3 s) before its retry finds the lease free.
fn outage_of(scenario: Scenario) -> u64 {
    match scenario {
        Scenario::NodePause => 3000,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_longest_stall_of_acknowledgements_from_the_fault_on() {
        assert_eq!(ack_gap_ms(&[10, 50, 990, 4000, 4010], 1000), Some(3010));
        assert_eq!(ack_gap_ms(&[4000, 10], 1000), Some(3990));
        assert_eq!(ack_gap_ms(&[1200], 1000), Some(200));
        assert_eq!(ack_gap_ms(&[10, 20], 1000), None);
        // Orders in flight at the fault answered just after it, then the stall.
        assert_eq!(ack_gap_ms(&[990, 1005, 1010, 4500, 4510], 1000), Some(3490));
    }
}
