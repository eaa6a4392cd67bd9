//! # scan2order-load
//!
//! The load generator for Scan2Order. Scenarios (each a subcommand): `sockets` (idle sockets held),
//! `orders` (durable orders at a target rate, kitchen sockets listening, a kitchen bot advancing
//! statuses), `fanout` (one restaurant's sockets, menu toggles), `mixed` (a realistic evening), and
//! `baseline-server` (a minimal tokio-tungstenite broadcast server, the physical reference for fan-out,
//! and the fan-out measurement against it).
//!
//! It measures connect rate and failures, HTTP latency, event delivery latency from timestamps it
//! controls, completeness (every event meant for a socket arrived exactly once and in order — see
//! [`accounting`]), server RSS and CPU from `/proc/<pid>`, and its own memory per socket. Progress once
//! a second on stderr, a summary at the end, `--json FILE` for machines, non-zero exit when completeness
//! fails. See `load-tests/README.md`.
//!
//! # Layout
//! - [`ws`]: the lean WebSocket client (no per-socket buffer while idle); [`http`]: a small HTTP/1.1
//!   client;
//! - [`setup`]: seed/token files, database-created restaurants, logins and menus → the plan;
//! - [`worker`]: sockets, order generation, kitchen bot, churn and toggles of one worker;
//! - [`coord`]: phases, worker processes, progress, merging; [`stats`]: histograms and reports;
//! - [`accounting`]: the completeness check; [`baseline`]: the reference broadcast server;
//! - [`tokens`]: guest sessions minted for load runs (`mint-tokens`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use scan2order_schema::domain::OrderStatus;

mod accounting;
mod baseline;
mod chaos;
mod coord;
mod fake_whatsapp;
mod http;
mod setup;
mod stats;
mod tokens;
mod worker;
mod ws;

mod pg_baseline;

use accounting::Fault;
use coord::{conclude, CoordOpts, Coordinator};
use setup::{Plan, RestaurantPlan, SetupArgs, TablePlan, Target};
use worker::{RunCfg, Scenario, StatusVia};

#[derive(Parser)]
#[command(
    name = "scan2order-load",
    version,
    about = "Load generator for Scan2Order: sockets, orders, fan-out, a mixed evening, and a baseline server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N idle guest and kitchen sockets over R restaurants and their tables, one event to each, held.
    Sockets {
        #[command(flatten)]
        common: Common,
        /// Sockets in all (kitchen sockets included).
        #[arg(long, default_value_t = 1000)]
        sockets: u64,
        /// Restaurants used (the first N of the seed / database ones).
        #[arg(long, default_value_t = 1000)]
        restaurants: usize,
        /// Tables used per restaurant (0: all).
        #[arg(long, default_value_t = 0)]
        tables: usize,
        #[arg(long, default_value_t = 1)]
        kitchen_per_restaurant: u32,
        /// Seconds to hold the sockets after the event.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        /// The reconnect storm: once every socket is subscribed, run this shell command to restart
        /// the server (e.g. `kill -TERM $PID; scan2order serve & echo $!`), then time until every
        /// socket has reconnected and resumed. Its last line of output, if a number, is the new pid.
        #[arg(long)]
        restart_cmd: Option<String>,
        /// With --restart-cmd: how long sockets keep reconnecting, and how long the storm may take, s.
        #[arg(long, default_value_t = 60.0)]
        resume_timeout: f64,
        /// Workers that hold each restaurant's sockets (0: every worker, round robin). With
        /// `--nodes`, the number of nodes each restaurant's guests are spread over.
        #[arg(long, default_value_t = 0)]
        spread: u32,
        /// While holding, one menu event per restaurant every this many seconds (sold out, then back,
        /// the restaurants' events spread evenly over the period), each counted at every socket of
        /// its restaurant; 0: one event to every socket before the hold and one after.
        #[arg(long, default_value_t = 0.0)]
        pulse_every: f64,
    },
    /// Guests place orders at a target rate; kitchen sockets listen; a kitchen bot advances statuses.
    Orders {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        gen: Generation,
    },
    /// N table sockets on one restaurant; events triggered by kitchen menu toggles.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fan: FanoutArgs,
    },
    /// A realistic evening: skewed restaurant popularity, socket churn, orders, statuses, sold-out toggles.
    Mixed {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        gen: Generation,
        /// Table socket closes (each resumed at once) per second, over all table sockets.
        #[arg(long, default_value_t = 5.0)]
        churn_per_s: f64,
        /// Sold-out toggles (each flipped back 0.5 s later) per second, over all restaurants.
        #[arg(long, default_value_t = 1.0)]
        toggles_per_s: f64,
        /// Popularity of restaurant i is 1/(i+1)^skew.
        #[arg(long, default_value_t = 1.0)]
        skew: f64,
        /// Menu reads (GET /api/v1/tables/{token}) before each order.
        #[arg(long, default_value_t = 1)]
        menu_reads_per_order: u32,
    },
    /// Mint N guest sessions (test phones +999…) into the server's migrated database and write their
    /// tokens to FILE, for `--tokens`. Load tests only: the server itself has no way to create a session
    /// without a one-time code.
    MintTokens {
        /// The server's `database.url`.
        #[arg(long, env = "SCAN2ORDER__DATABASE__URL")]
        database_url: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        out: PathBuf,
        /// Days until the sessions expire.
        #[arg(long, default_value_t = 2)]
        days: i64,
    },
    /// The reference broadcast server (tokio-tungstenite), and the fan-out measurement against it.
    BaselineServer {
        #[command(subcommand)]
        mode: BaselineMode,
    },
    /// The reference for durable orders: what Postgres alone accepts for the rows the engine writes per
    /// order (order, lines, status history, outbox, status updates), in group-commit-shaped transactions
    /// through the same kind of pool. Run it with the server stopped.
    PgBaseline {
        /// The benchmark database (the server's `database.url`).
        #[arg(long)]
        database_url: String,
        /// Seconds per combination.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Concurrent writer transactions, comma-separated (each value is run).
        #[arg(long, default_value = "2,8")]
        writers: String,
        /// New orders per transaction, comma-separated (each value is run).
        #[arg(long, default_value = "1,10,50,200")]
        batch: String,
        /// Statuses each order is walked through, one per later transaction (empty: none).
        #[arg(long, default_value = "accepted,preparing,ready,served")]
        statuses: String,
        #[arg(long, default_value_t = 32)]
        pool_size: u32,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The fault suite: a real server process, real traffic, one injected fault, then what clients were
    /// told, what Postgres holds and what every socket shows, reconciled (exit 1 on any violation).
    Chaos(chaos::ChaosArgs),
    /// (internal) One worker process of `--processes P`.
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        job: PathBuf,
        #[arg(long)]
        index: u32,
    },
}

#[derive(Subcommand)]
enum BaselineMode {
    /// Serve `ws://LISTEN/ws` until killed.
    Serve {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: SocketAddr,
        /// tungstenite read buffer per socket, bytes.
        #[arg(long, default_value_t = 4096)]
        read_buffer: usize,
    },
    /// The `fanout` measurement against a running baseline server (pass its pid as --server-pid).
    Fanout {
        #[arg(long, default_value = "127.0.0.1:9100")]
        addr: SocketAddr,
        #[command(flatten)]
        fan: FanoutArgs,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args, Clone)]
struct FanoutArgs {
    /// Sockets on the restaurant (one of them the kitchen's).
    #[arg(long, default_value_t = 1000)]
    sockets: u64,
    /// Toggles to measure (made odd so the dish ends as it started).
    #[arg(long, default_value_t = 9)]
    events: u32,
    /// Pause between toggles, ms.
    #[arg(long, default_value_t = 200)]
    event_interval_ms: u64,
}

#[derive(Args, Clone)]
struct Generation {
    /// Orders per second, over all workers.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of order generation.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 1000)]
    restaurants: usize,
    /// Tables used per restaurant (0: all).
    #[arg(long, default_value_t = 0)]
    tables: usize,
    #[arg(long, default_value_t = 1)]
    kitchen_per_restaurant: u32,
    #[arg(long, default_value_t = 1)]
    table_sockets_per_table: u32,
    /// Statuses the kitchen bot walks each order through, comma-separated (empty: none).
    #[arg(long, default_value = "accepted,preparing,ready,served")]
    statuses: String,
    #[arg(long, value_enum, default_value_t = StatusVia::Rest)]
    status_via: StatusVia,
    /// Wait before each status step, ms.
    #[arg(long, default_value_t = 0)]
    status_delay_ms: u64,
    /// Orders in flight per worker before new ones are skipped (counted).
    #[arg(long, default_value_t = 4096)]
    max_inflight: usize,
}

/// Options of every run.
#[derive(Args, Clone)]
struct RunArgs {
    /// Server pid (a fleet: the nodes' pids, comma-separated): RSS and CPU are read from
    /// /proc/<pid> and summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// A fleet: worker i sends its HTTP calls to the (i mod n)-th of these node URLs
    /// (comma-separated; default: --url).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// A fleet: worker i opens its sockets on the (i mod n)-th of these node URLs (default: as its
    /// HTTP calls), e.g. orders through one node and kitchen sockets on another.
    #[arg(long, value_delimiter = ',')]
    socket_nodes: Vec<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker processes (each holds a slice; this machine caps a process at 20,000 open files).
    #[arg(long, default_value_t = 1)]
    processes: u32,
    /// Source address of worker 0 (worker i binds base+i). Default with --processes > 1: 127.0.0.2.
    #[arg(long)]
    bind_base: Option<Ipv4Addr>,
    /// Drop or duplicate one received event (proves the completeness check catches it).
    #[arg(long, value_enum)]
    inject_fault: Option<Fault>,
    /// Subscribe by sending `resume` right after `hello` instead of waiting for the snapshot.
    #[arg(long)]
    fast_subscribe: bool,
    /// Socket connects in flight per worker.
    #[arg(long, default_value_t = 512)]
    connect_concurrency: usize,
    #[arg(long, default_value_t = 120)]
    connect_timeout_s: u64,
    /// HTTP keep-alive connections per worker.
    #[arg(long, default_value_t = 64)]
    http_conns: usize,
    /// How long to wait for late deliveries, ms.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Exit 3 when more errors than this were counted.
    #[arg(long)]
    max_errors: Option<u64>,
}

#[derive(Args, Clone)]
struct Common {
    /// The server (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// `scan2order seed-demo` output: TABLE and LOGIN lines.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// `scan2order-load mint-tokens` output: customer tokens.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Create load-test restaurants `lt-00000…` straight in Postgres (needs an admin LOGIN in --seed).
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value_t = 0)]
    db_restaurants: usize,
    #[arg(long, default_value_t = 20)]
    db_tables: usize,
    /// A fleet: read restaurant i's menu while planning through the (i mod n)-th of these node URLs
    /// (comma-separated). A restaurant no node runs yet starts on the node that reads it, so this
    /// places the restaurants' owners.
    #[arg(long, value_delimiter = ',')]
    activate_via: Vec<String>,
    #[command(flatten)]
    run: RunArgs,
}

fn parse_statuses(s: &str) -> anyhow::Result<Vec<OrderStatus>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            serde_json::from_value::<OrderStatus>(serde_json::Value::String(x.to_string()))
                .with_context(|| format!("unknown status {x}"))
        })
        .collect()
}

fn targets(urls: &[String]) -> anyhow::Result<Vec<Target>> {
    urls.iter().map(|u| Target::parse(u)).collect()
}

fn base_cfg(scenario: Scenario, run: &RunArgs) -> anyhow::Result<RunCfg> {
    let bind_base = run.bind_base.or(if run.processes > 1 {
        Some(Ipv4Addr::new(127, 0, 0, 2))
    } else {
        None
    });
    Ok(RunCfg {
        scenario,
        processes: run.processes.max(1),
        bind_base,
        sockets: 0,
        restaurants: 1,
        tables: 0,
        kitchen_per_restaurant: 1,
        table_sockets_per_table: 1,
        rate: 0.0,
        duration_s: 0.0,
        statuses: Vec::new(),
        status_via: StatusVia::Rest,
        status_delay_ms: 0,
        churn_per_s: 0.0,
        toggles_per_s: 0.0,
        skew: 0.0,
        menu_reads_per_order: 0,
        fast_subscribe: run.fast_subscribe,
        connect_concurrency: run.connect_concurrency,
        connect_timeout_s: run.connect_timeout_s,
        http_conns: run.http_conns,
        max_inflight: 4096,
        settle_ms: run.settle_ms,
        fault: run.inject_fault,
        run_id: format!("{:016x}", rand::random::<u64>()),
        reconnect_patience_s: 0.0,
        nodes: targets(&run.nodes)?,
        socket_nodes: targets(&run.socket_nodes)?,
        spread: 0,
    })
}

fn opts(run: &RunArgs, params: serde_json::Value) -> CoordOpts {
    CoordOpts {
        server_pids: run.server_pid.clone(),
        pulse_every_s: 0.0,
        json: run.json.clone(),
        max_errors: run.max_errors,
        params,
        hold_s: 0.0,
        events: 0,
        event_interval_ms: 0,
        baseline: None,
        restart_cmd: None,
        resume_timeout_s: 0.0,
    }
}

fn apply_generation(cfg: &mut RunCfg, g: &Generation) -> anyhow::Result<()> {
    cfg.rate = g.rate;
    cfg.duration_s = g.duration;
    cfg.restaurants = g.restaurants;
    cfg.tables = g.tables;
    cfg.kitchen_per_restaurant = g.kitchen_per_restaurant;
    cfg.table_sockets_per_table = g.table_sockets_per_table;
    cfg.statuses = parse_statuses(&g.statuses)?;
    cfg.status_via = g.status_via;
    cfg.status_delay_ms = g.status_delay_ms;
    cfg.max_inflight = g.max_inflight;
    if g.status_via == StatusVia::Socket && g.kitchen_per_restaurant == 0 {
        anyhow::bail!("--status-via socket needs --kitchen-per-restaurant ≥ 1");
    }
    Ok(())
}

async fn plan_from(common: &Common) -> anyhow::Result<Plan> {
    let target = Target::parse(&common.url)?;
    setup::build_plan(SetupArgs {
        target,
        seed: common.seed.as_deref(),
        tokens: common.tokens.as_deref(),
        database_url: common.database_url.as_deref(),
        db_restaurants: common.db_restaurants,
        db_tables: common.db_tables,
        activate_via: targets(&common.activate_via)?,
        bind: None,
    })
    .await
}

async fn run(plan: Plan, cfg: RunCfg, opts: CoordOpts) -> anyhow::Result<i32> {
    let coord = Coordinator::start(plan, cfg, opts).await?;
    let json = coord.json_path();
    let max_errors = coord.max_errors();
    let report = coord.run().await?;
    conclude(&report, json.as_deref(), max_errors)
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(coord::exit::FATAL);
        }
    };
    let code = rt.block_on(async move {
        match dispatch(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                coord::exit::FATAL
            }
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Chaos(args) => chaos::run(args).await,
        Command::MintTokens {
            database_url,
            count,
            out,
            days,
        } => {
            tokens::mint(&database_url, count, days, &out).await?;
            Ok(0)
        }
        Command::Worker { job, index } => {
            coord::worker_process(job, index).await?;
            Ok(0)
        }
        Command::Sockets {
            common,
            sockets,
            restaurants,
            tables,
            kitchen_per_restaurant,
            hold,
            restart_cmd,
            resume_timeout,
            spread,
            pulse_every,
        } => {
            let plan = plan_from(&common).await?;
            let mut cfg = base_cfg(Scenario::Sockets, &common.run)?;
            cfg.sockets = sockets;
            cfg.restaurants = restaurants;
            cfg.tables = tables;
            cfg.kitchen_per_restaurant = kitchen_per_restaurant;
            cfg.spread = spread;
            let params = serde_json::json!({
                "sockets": sockets, "restaurants": restaurants.min(plan.restaurants.len()),
                "tables": tables, "kitchen_per_restaurant": kitchen_per_restaurant, "hold_s": hold,
                "processes": cfg.processes, "fast_subscribe": cfg.fast_subscribe,
                "nodes": cfg.nodes.len(), "spread": spread, "pulse_every_s": pulse_every,
            });
            let mut o = opts(&common.run, params);
            o.hold_s = hold;
            o.pulse_every_s = pulse_every;
            if pulse_every > 0.0 && restart_cmd.is_some() {
                anyhow::bail!("--pulse-every and --restart-cmd are separate runs");
            }
            if restart_cmd.is_some() {
                cfg.reconnect_patience_s = resume_timeout;
                o.restart_cmd = restart_cmd;
                o.resume_timeout_s = resume_timeout;
            }
            run(plan, cfg, o).await
        }
        Command::Orders { common, gen } => {
            let plan = plan_from(&common).await?;
            let mut cfg = base_cfg(Scenario::Orders, &common.run)?;
            apply_generation(&mut cfg, &gen)?;
            let params = serde_json::json!({
                "rate": gen.rate, "duration_s": gen.duration,
                "restaurants": gen.restaurants.min(plan.restaurants.len()), "tables": gen.tables,
                "kitchen_per_restaurant": gen.kitchen_per_restaurant,
                "table_sockets_per_table": gen.table_sockets_per_table, "statuses": gen.statuses,
                "status_via": format!("{:?}", gen.status_via), "status_delay_ms": gen.status_delay_ms,
                "processes": cfg.processes,
            });
            run(plan, cfg, opts(&common.run, params)).await
        }
        Command::Fanout { common, fan } => {
            let plan = plan_from(&common).await?;
            let mut cfg = base_cfg(Scenario::Fanout, &common.run)?;
            cfg.sockets = fan.sockets;
            cfg.restaurants = 1;
            let params = serde_json::json!({
                "sockets": fan.sockets, "events": fan.events, "event_interval_ms": fan.event_interval_ms,
                "processes": cfg.processes, "target": "scan2order",
            });
            let mut o = opts(&common.run, params);
            o.events = fan.events;
            o.event_interval_ms = fan.event_interval_ms;
            run(plan, cfg, o).await
        }
        Command::Mixed {
            common,
            gen,
            churn_per_s,
            toggles_per_s,
            skew,
            menu_reads_per_order,
        } => {
            let plan = plan_from(&common).await?;
            let mut cfg = base_cfg(Scenario::Mixed, &common.run)?;
            apply_generation(&mut cfg, &gen)?;
            cfg.churn_per_s = churn_per_s;
            cfg.toggles_per_s = toggles_per_s;
            cfg.skew = skew;
            cfg.menu_reads_per_order = menu_reads_per_order;
            let params = serde_json::json!({
                "rate": gen.rate, "duration_s": gen.duration,
                "restaurants": gen.restaurants.min(plan.restaurants.len()), "tables": gen.tables,
                "churn_per_s": churn_per_s, "toggles_per_s": toggles_per_s, "skew": skew,
                "menu_reads_per_order": menu_reads_per_order, "statuses": gen.statuses,
                "status_via": format!("{:?}", gen.status_via), "processes": cfg.processes,
            });
            run(plan, cfg, opts(&common.run, params)).await
        }
        Command::PgBaseline {
            database_url,
            duration,
            writers,
            batch,
            statuses,
            pool_size,
            json,
        } => {
            let url = pg_baseline::local_database_url(&database_url)?;
            let list = |s: &str| -> anyhow::Result<Vec<usize>> {
                s.split(',')
                    .map(|x| x.trim().parse::<usize>().map(|n| n.max(1)))
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("not a list of numbers: {s}"))
            };
            let report = pg_baseline::run(pg_baseline::PgBaselineCfg {
                database_url: url,
                duration_s: duration,
                writers: list(&writers)?,
                batches: list(&batch)?,
                statuses: parse_statuses(&statuses)?,
                pool_size,
            })
            .await?;
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(0)
        }
        Command::BaselineServer { mode } => match mode {
            BaselineMode::Serve {
                listen,
                read_buffer,
            } => {
                baseline::serve(listen, read_buffer).await?;
                Ok(0)
            }
            BaselineMode::Fanout { addr, fan, run: r } => {
                anyhow::ensure!(addr.ip().is_loopback(), "load runs only aim at 127.0.0.0/8");
                let plan = Plan {
                    target: Target {
                        addr,
                        host: addr.to_string(),
                    },
                    restaurants: vec![RestaurantPlan {
                        id: uuid::Uuid::nil(),
                        slug: "baseline".into(),
                        staff_token: String::new(),
                        via_admin: false,
                        items: Vec::new(),
                        choices: Default::default(),
                        tables: vec![TablePlan {
                            label: "B".into(),
                            token: String::new(),
                        }],
                    }],
                    customer_tokens: Vec::new(),
                };
                let mut cfg = base_cfg(Scenario::BaselineFanout, &r)?;
                cfg.sockets = fan.sockets;
                cfg.restaurants = 1;
                cfg.kitchen_per_restaurant = 0;
                let params = serde_json::json!({
                    "sockets": fan.sockets, "events": fan.events,
                    "event_interval_ms": fan.event_interval_ms, "processes": cfg.processes,
                    "target": "baseline",
                });
                let mut o = opts(&r, params);
                o.events = fan.events;
                o.event_interval_ms = fan.event_interval_ms;
                o.baseline = Some(addr);
                run(plan, cfg, o).await
            }
        },
    }
}
