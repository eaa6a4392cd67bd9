//! The coordinator: starts the workers (in-process, or as `--processes P` child processes of this very
//! binary speaking JSON lines), drives the scenario's phases, prints progress once a second, samples the
//! server from `/proc/<pid>`, and merges the workers' reports into one.
//!
//! One file over 800 lines: every scenario's phases are methods of the one [`Coordinator`] that owns the
//! workers' channels; they are to move into one file per scenario as the load tool is split.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::accounting::Audience;
use crate::http::HttpPool;
use crate::setup::Plan;
use crate::stats::{c, fleet_sample, now_ns, ProcFigures, ProcSample, Report, WorkerReport};
use crate::worker::{run_worker, Control, RunCfg, Scenario, WorkerEvent};
use crate::ws::WsConn;

/// What a worker process reads: the plan and the run.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub plan: Plan,
    pub cfg: RunCfg,
}

#[derive(Default)]
struct ProgressTable {
    counters: HashMap<u32, BTreeMap<String, u64>>,
    errors: HashMap<u32, u64>,
    order_p99: HashMap<u32, f64>,
}

/// Options of the coordinator that workers do not need.
pub struct CoordOpts {
    /// The server's processes (a fleet's nodes): RSS and CPU are their sums.
    pub server_pids: Vec<u32>,
    /// `sockets`: one menu event per restaurant every this many seconds of the hold (0: one event to
    /// every socket before the hold and one after).
    pub pulse_every_s: f64,
    pub json: Option<PathBuf>,
    pub max_errors: Option<u64>,
    pub params: serde_json::Value,
    /// `sockets`: how long to hold the sockets; `fanout`: events and their spacing.
    pub hold_s: f64,
    pub events: u32,
    pub event_interval_ms: u64,
    /// Baseline fan-out: the baseline server's address.
    pub baseline: Option<std::net::SocketAddr>,
    /// `sockets`: a shell command that restarts the server, run once every socket is subscribed (the
    /// reconnect storm). If its last line of output is a number, that is the new server's pid.
    pub restart_cmd: Option<String>,
    /// How long to wait for every socket to resume after the restart, s.
    pub resume_timeout_s: f64,
}

pub struct Coordinator {
    plan: Arc<Plan>,
    cfg: Arc<RunCfg>,
    opts: CoordOpts,
    to: Vec<mpsc::UnboundedSender<Control>>,
    from: mpsc::UnboundedReceiver<WorkerEvent>,
    progress: Arc<Mutex<ProgressTable>>,
    server: Arc<Mutex<ProcFigures>>,
    children: Vec<tokio::process::Child>,
    http: Arc<HttpPool>,
    trigger: Option<WsConn>,
    report: Report,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Coordinator {
    pub async fn start(plan: Plan, cfg: RunCfg, opts: CoordOpts) -> anyhow::Result<Coordinator> {
        let plan = Arc::new(plan);
        let cfg = Arc::new(cfg);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel::<WorkerEvent>();
        let (demux_tx, from) = mpsc::unbounded_channel::<WorkerEvent>();
        let progress = Arc::new(Mutex::new(ProgressTable::default()));
        let server = Arc::new(Mutex::new(ProcFigures::default()));
        if !opts.server_pids.is_empty() {
            let s = fleet_sample(&opts.server_pids)
                .with_context(|| format!("cannot read /proc of {:?}", opts.server_pids))?;
            lock(&server).before = Some(s);
        }
        let mut to = Vec::new();
        let mut children = Vec::new();
        if cfg.processes <= 1 {
            let (tx, rx) = mpsc::unbounded_channel();
            to.push(tx);
            tokio::spawn(run_worker(0, plan.clone(), cfg.clone(), rx, ev_tx.clone()));
        } else {
            let path =
                std::env::temp_dir().join(format!("scan2order-load-{}.json", std::process::id()));
            std::fs::write(
                &path,
                serde_json::to_vec(&Job {
                    plan: (*plan).clone(),
                    cfg: (*cfg).clone(),
                })?,
            )?;
            let exe = std::env::current_exe()?;
            for i in 0..cfg.processes {
                let mut child = tokio::process::Command::new(&exe)
                    .arg("worker")
                    .arg("--job")
                    .arg(&path)
                    .arg("--index")
                    .arg(i.to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting a worker process")?;
                let stdout = child.stdout.take().context("worker stdout")?;
                let mut stdin = child.stdin.take().context("worker stdin")?;
                let ev = ev_tx.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stdout).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        match serde_json::from_str::<WorkerEvent>(&line) {
                            Ok(e) => {
                                let _ = ev.send(e);
                            }
                            Err(_) => eprintln!("worker {i}: {line}"),
                        }
                    }
                });
                let (tx, mut rx) = mpsc::unbounded_channel::<Control>();
                tokio::spawn(async move {
                    while let Some(c) = rx.recv().await {
                        let Ok(mut line) = serde_json::to_vec(&c) else {
                            continue;
                        };
                        line.push(b'\n');
                        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                            break;
                        }
                    }
                });
                to.push(tx);
                children.push(child);
            }
        }
        drop(ev_tx);
        // Demultiplex: progress goes to the table, the rest to the coordinator.
        {
            let progress = progress.clone();
            let mut ev_rx = ev_rx;
            tokio::spawn(async move {
                while let Some(e) = ev_rx.recv().await {
                    match e {
                        WorkerEvent::Progress {
                            worker,
                            counters,
                            errors,
                            order_p99_ms,
                        } => {
                            let mut p = lock(&progress);
                            p.counters.insert(worker, counters);
                            p.errors.insert(worker, errors);
                            if let Some(v) = order_p99_ms {
                                p.order_p99.insert(worker, v);
                            }
                        }
                        other => {
                            if demux_tx.send(other).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
        // Progress printer.
        {
            let (progress, server, pids) =
                (progress.clone(), server.clone(), opts.server_pids.clone());
            let started = Instant::now();
            tokio::spawn(async move {
                let mut last: BTreeMap<String, u64> = BTreeMap::new();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let (sum, errors, p99) = {
                        let p = lock(&progress);
                        let mut sum: BTreeMap<String, u64> = BTreeMap::new();
                        for m in p.counters.values() {
                            for (k, v) in m {
                                *sum.entry(k.clone()).or_default() += v;
                            }
                        }
                        let p99 = p
                            .order_p99
                            .values()
                            .copied()
                            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
                        (sum, p.errors.values().sum::<u64>(), p99)
                    };
                    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
                    let rate = |k: &str| get(&sum, k).saturating_sub(get(&last, k));
                    let mut line = format!(
                        "[{:>5.0}s] open {} subscribed {} | connects +{}/s (fail {}) | events +{}/s | orders +{}/s ok {} fail {} | statuses +{}/s | errors {}",
                        started.elapsed().as_secs_f64(),
                        get(&sum, c::OPEN),
                        get(&sum, c::SUBSCRIBED),
                        rate(c::CONNECT_OK),
                        get(&sum, c::CONNECT_FAIL),
                        rate(c::EVENTS),
                        rate(c::ORDERS_OK),
                        get(&sum, c::ORDERS_OK),
                        get(&sum, c::ORDERS_FAIL),
                        rate(c::STATUS_OK),
                        errors,
                    );
                    if let Some(p) = p99 {
                        line.push_str(&format!(" | order→kitchen p99 {p:.1} ms"));
                    }
                    if !pids.is_empty() {
                        if let Some(s) = fleet_sample(&pids) {
                            let mut sv = lock(&server);
                            sv.peak_rss_kib = sv.peak_rss_kib.max(s.rss_kib);
                            line.push_str(&format!(" | server rss {} MiB", s.rss_kib / 1024));
                        }
                    }
                    eprintln!("{line}");
                    last = sum;
                }
            });
        }
        let bind = cfg.bind_for(cfg.processes);
        let http = HttpPool::new(
            plan.target.addr,
            bind,
            plan.target.host.clone(),
            8,
            Duration::from_secs(30),
        );
        let report = Report {
            scenario: format!("{:?}", cfg.scenario).to_lowercase(),
            started_at: chrono::Utc::now().to_rfc3339(),
            workers: cfg.processes.max(1),
            target: format!("{}", plan.target.addr),
            params: opts.params.clone(),
            ..Report::default()
        };
        Ok(Coordinator {
            plan,
            cfg,
            opts,
            to,
            from,
            progress,
            server,
            children,
            http,
            trigger: None,
            report,
            started: Instant::now(),
        })
    }

    fn broadcast(&self, c: Control) {
        for tx in &self.to {
            let _ = tx.send(c.clone());
        }
    }

    async fn next(&mut self, timeout: Duration) -> anyhow::Result<WorkerEvent> {
        match tokio::time::timeout(timeout, self.from.recv()).await {
            Ok(Some(WorkerEvent::Failed { worker, error })) => {
                bail!("worker {worker} failed: {error}")
            }
            Ok(Some(e)) => Ok(e),
            Ok(None) => bail!("every worker has gone away"),
            Err(_) => bail!("no word from the workers for {timeout:?}"),
        }
    }

    /// Waits for every worker's `Ready`; records the connect storm figures.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let mut ready = 0;
        let (mut started, mut hello, mut subscribed) = (u64::MAX, 0u64, 0u64);
        let (mut sockets, mut subs) = (0u64, 0u64);
        let timeout = Duration::from_secs(self.cfg.connect_timeout_s + 30);
        while ready < self.to.len() {
            if let WorkerEvent::Ready {
                sockets: n,
                subscribed: s,
                started_ns,
                hello_done_ns,
                subscribed_done_ns,
                ..
            } = self.next(timeout).await?
            {
                ready += 1;
                started = started.min(started_ns);
                hello = hello.max(hello_done_ns);
                subscribed = subscribed.max(subscribed_done_ns);
                sockets += n;
                subs += s;
            }
        }
        let f = &mut self.report.figures;
        f.insert("sockets_planned".into(), sockets as f64);
        f.insert("sockets_subscribed".into(), subs as f64);
        if hello > started {
            f.insert(
                "connect_storm_to_last_hello_s".into(),
                (hello - started) as f64 / 1e9,
            );
        }
        if subscribed > started {
            f.insert(
                "connect_storm_to_last_subscribed_s".into(),
                (subscribed - started) as f64 / 1e9,
            );
        }
        eprintln!(
            "connected: {subs}/{sockets} sockets subscribed in {:.2} s (last hello after {:.2} s)",
            subscribed.saturating_sub(started) as f64 / 1e9,
            hello.saturating_sub(started) as f64 / 1e9
        );
        Ok(())
    }

    /// How many sockets of all workers listen to restaurant `r`.
    fn listeners_of(&self, r: u32) -> u64 {
        (0..self.cfg.processes.max(1))
            .map(|i| {
                crate::worker::audiences(&self.plan, &self.cfg, i)
                    .into_iter()
                    .filter(|a| match a {
                        Audience::Kitchen { restaurant } | Audience::Table { restaurant, .. } => {
                            *restaurant == r
                        }
                    })
                    .count() as u64
            })
            .sum()
    }

    /// One toggle to every socket of restaurant `r`, waited for until every listener has it (or
    /// deliveries stop coming). Returns (sent_ns, deliveries).
    async fn toggle_round(
        &mut self,
        id: u64,
        r: u32,
        item: Uuid,
        available: bool,
    ) -> anyhow::Result<(u64, u64)> {
        self.broadcast(Control::Arm {
            id,
            restaurant: r,
            item,
            available,
        });
        let mut armed = 0;
        while armed < self.to.len() {
            if let WorkerEvent::Armed { id: a, .. } = self.next(Duration::from_secs(30)).await? {
                if a == id {
                    armed += 1;
                }
            }
        }
        let (sent_ns, ok) = match self.trigger.as_mut() {
            Some(trigger) => {
                let msg = serde_json::json!({"type":"fire","item_id":item,"available":available});
                let sent = now_ns();
                let ok = trigger.send_text(msg.to_string().as_bytes()).await.is_ok();
                (sent, ok)
            }
            None => {
                let rp = &self.plan.restaurants[r as usize];
                let body = serde_json::to_vec(&serde_json::json!({ "available": available }))?;
                let auth = format!("Bearer {}", rp.staff_token);
                let path = format!("/api/v1/kitchen/menu-items/{item}{}", rp.kitchen_query());
                let mut sent = 0u64;
                let resp = self
                    .http
                    .request(
                        "PATCH",
                        &path,
                        &[("Authorization", &auth)],
                        Some(&body),
                        &mut || sent = now_ns(),
                    )
                    .await;
                let ok = matches!(&resp, Ok(r) if r.status == 200);
                if !ok {
                    let what = match resp {
                        Ok(r) => format!("toggle_http_{}", r.status),
                        Err(e) => format!("toggle_{}", e.kind()),
                    };
                    *self.report.errors.entry(what).or_default() += 1;
                }
                (sent, ok)
            }
        };
        self.broadcast(Control::Fired { id, sent_ns, ok });
        let expected = self.listeners_of(r);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_change = Instant::now();
        let mut last_n = 0u64;
        loop {
            self.broadcast(Control::Count { id });
            let mut n = 0u64;
            let mut answered = 0;
            while answered < self.to.len() {
                if let WorkerEvent::Count {
                    id: cid, n: got, ..
                } = self.next(Duration::from_secs(30)).await?
                {
                    if cid == id {
                        n += got;
                        answered += 1;
                    }
                }
            }
            if n >= expected || !ok {
                return Ok((sent_ns, n));
            }
            if n != last_n {
                last_n = n;
                last_change = Instant::now();
            }
            if Instant::now() > deadline
                || last_change.elapsed() > Duration::from_millis(self.cfg.settle_ms.max(500))
            {
                return Ok((sent_ns, n));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn sample_server(&self) -> Option<ProcSample> {
        fleet_sample(&self.opts.server_pids)
    }

    async fn sample_workers(&mut self) -> anyhow::Result<u64> {
        self.broadcast(Control::Sample);
        let mut got = 0;
        let mut rss = 0;
        while got < self.to.len() {
            if let WorkerEvent::Sampled { rss_kib, .. } = self.next(Duration::from_secs(30)).await?
            {
                got += 1;
                rss += rss_kib;
            }
        }
        Ok(rss)
    }

    /// Runs the scenario to the end and returns the merged report.
    pub async fn run(mut self) -> anyhow::Result<Report> {
        if let Some(addr) = self.opts.baseline {
            self.trigger = Some(
                WsConn::connect(addr, None, &addr.to_string(), "/ws", &[])
                    .await
                    .map_err(|e| anyhow::anyhow!("baseline trigger socket: {e}"))?,
            );
        }
        self.wait_ready().await?;
        match self.cfg.scenario {
            Scenario::Sockets => self.run_sockets().await?,
            Scenario::Fanout | Scenario::BaselineFanout => self.run_fanout().await?,
            Scenario::Orders | Scenario::Mixed => self.run_generation().await?,
        }
        self.finish().await
    }

    fn item_of(&self, r: u32) -> (Uuid, bool) {
        if self.trigger.is_some() {
            return (
                Uuid::from_u128(0x5ca2_0000_0000_0000_0000_0000_0000_0001),
                true,
            );
        }
        self.plan.restaurants[r as usize]
            .items
            .first()
            .copied()
            .unwrap_or((Uuid::nil(), true))
    }

    fn restaurants_used(&self) -> u32 {
        self.cfg.restaurants.min(self.plan.restaurants.len()).max(1) as u32
    }

    async fn run_sockets(&mut self) -> anyhow::Result<()> {
        if self.opts.pulse_every_s > 0.0 {
            return self.run_pulses().await;
        }
        // One event to every socket, then measure memory.
        let mut id = 1u64 << 60;
        for r in 0..self.restaurants_used() {
            let (item, avail) = self.item_of(r);
            self.toggle_round(id, r, item, !avail).await?;
            id += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = self.sample_server();
        lock(&self.server).loaded = loaded;
        let tool = self.sample_workers().await?;
        eprintln!(
            "one event delivered to every socket; server rss {} KiB, tool rss {tool} KiB; holding {:.0} s",
            loaded.map_or(0, |s| s.rss_kib),
            self.opts.hold_s
        );
        if let Some(cmd) = self.opts.restart_cmd.clone() {
            self.restart_storm(&cmd).await?;
        }
        tokio::time::sleep(Duration::from_secs_f64(self.opts.hold_s)).await;
        // (After a restart, this round also proves that every socket is subscribed again.)
        for r in 0..self.restaurants_used() {
            let (item, avail) = self.item_of(r);
            self.toggle_round(id, r, item, avail).await?;
            id += 1;
        }
        Ok(())
    }

    /// Sockets subscribed in the connect phase (the figure the report carries).
    fn subscribed(&self) -> u64 {
        self.report
            .figures
            .get("sockets_subscribed")
            .copied()
            .unwrap_or(0.0) as u64
    }

    /// The reconnect storm: restart the server with `cmd` while every socket is subscribed, then wait
    /// until every socket has reconnected and resumed (after a restart: received a fresh snapshot).
    async fn restart_storm(&mut self, cmd: &str) -> anyhow::Result<()> {
        let expected = self.subscribed();
        let started = now_ns();
        eprintln!("restarting the server: {cmd}");
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("running --restart-cmd {cmd}"))?;
        let cmd_done = now_ns();
        anyhow::ensure!(out.status.success(), "--restart-cmd failed: {}", out.status);
        // The old process is gone: sample the new one if the command named it, else stop sampling.
        let new_pid = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<u32>().ok());
        self.opts.server_pids = new_pid.into_iter().collect();
        let deadline = Instant::now() + Duration::from_secs_f64(self.opts.resume_timeout_s);
        let (mut n, mut last, mut first_close);
        loop {
            self.broadcast(Control::CountResumed);
            (n, last, first_close) = (0u64, 0u64, u64::MAX);
            let mut got = 0;
            while got < self.to.len() {
                if let WorkerEvent::Resumed {
                    n: k,
                    last_ns,
                    first_close_ns,
                    ..
                } = self.next(Duration::from_secs(30)).await?
                {
                    got += 1;
                    n += k;
                    last = last.max(last_ns);
                    if first_close_ns > 0 {
                        first_close = first_close.min(first_close_ns);
                    }
                }
            }
            if n >= expected || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
        let f = &mut self.report.figures;
        f.insert("restart_sockets_resumed".into(), n as f64);
        f.insert("restart_cmd_s".into(), secs(started, cmd_done));
        if n >= expected && last > 0 {
            f.insert("restart_to_all_resumed_s".into(), secs(started, last));
            if first_close != u64::MAX {
                f.insert(
                    "restart_first_close_to_all_resumed_s".into(),
                    secs(first_close, last),
                );
            }
            eprintln!(
                "reconnect storm: {n}/{expected} sockets resumed {:.2} s after the restart began ({:.2} s after the first socket lost its connection; the restart command took {:.2} s)",
                secs(started, last),
                secs(first_close.min(last), last),
                secs(started, cmd_done)
            );
        } else {
            self.report
                .errors
                .insert("restart_not_all_resumed".into(), expected.saturating_sub(n));
            eprintln!(
                "reconnect storm: only {n}/{expected} sockets resumed within {:.0} s",
                self.opts.resume_timeout_s
            );
        }
        Ok(())
    }

    /// `sockets --pulse-every`: the hold with one menu event per restaurant per period. Memory is read
    /// once the first round has reached every socket; the schedule runs in the workers.
    async fn run_pulses(&mut self) -> anyhow::Result<()> {
        let period_ms = (self.opts.pulse_every_s * 1000.0).round().max(1.0) as u64;
        let rounds = ((self.opts.hold_s * 1000.0) / period_ms as f64)
            .floor()
            .max(1.0) as u32;
        let start_ns = now_ns() + 2_000_000_000;
        self.broadcast(Control::Pulse {
            start_ns,
            rounds,
            period_ms,
        });
        eprintln!(
            "holding: {rounds} rounds of one menu event per restaurant ({} restaurants) every {:.0} s",
            self.restaurants_used(),
            self.opts.pulse_every_s
        );
        // Memory with every socket open and the first round delivered.
        let first = start_ns + period_ms * 1_000_000 + self.cfg.settle_ms * 1_000_000;
        tokio::time::sleep(Duration::from_nanos(first.saturating_sub(now_ns()))).await;
        let loaded = self.sample_server();
        lock(&self.server).loaded = loaded;
        let tool = self.sample_workers().await?;
        eprintln!(
            "first round delivered; server rss {} KiB, tool rss {tool} KiB",
            loaded.map_or(0, |s| s.rss_kib)
        );
        let end = start_ns + u64::from(rounds) * period_ms * 1_000_000;
        let limit = Duration::from_nanos(end.saturating_sub(now_ns())) + Duration::from_secs(120);
        let (mut done, mut fired, mut late) = (0, 0u64, 0f64);
        while done < self.to.len() {
            if let WorkerEvent::Pulsed {
                fired_ok,
                latest_send_ms,
                ..
            } = self.next(limit).await?
            {
                done += 1;
                fired += fired_ok;
                late = late.max(latest_send_ms);
            }
        }
        let planned = u64::from(rounds) * u64::from(self.restaurants_used());
        let f = &mut self.report.figures;
        f.insert("pulse_rounds".into(), f64::from(rounds));
        f.insert("pulse_events_planned".into(), planned as f64);
        f.insert("pulse_events_answered_200".into(), fired as f64);
        f.insert("pulse_latest_send_behind_schedule_ms".into(), late);
        if fired < planned {
            self.report
                .errors
                .insert("pulse_events_not_answered_200".into(), planned - fired);
        }
        self.report.notes.push(format!(
            "held {:.0} s: {rounds} rounds of one menu event per restaurant; event latency counts from each event's scheduled send (its sender was at most {late:.1} ms behind)",
            self.opts.hold_s
        ));
        Ok(())
    }

    async fn run_fanout(&mut self) -> anyhow::Result<()> {
        let r = 0u32;
        let (item, avail) = self.item_of(r);
        let mut id = 1u64 << 60;
        // The first event touches every socket; memory is read after it.
        self.toggle_round(id, r, item, !avail).await?;
        id += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let loaded = self.sample_server();
        lock(&self.server).loaded = loaded;
        self.sample_workers().await?;
        // Idle CPU (pings, timers) over one second, to set beside the fan-out CPU.
        let idle_a = self.sample_server();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_b = self.sample_server();
        let mut events = self.opts.events.max(1);
        // Flip back and forth; an odd count would leave the dish sold out, so end on the original.
        if events.is_multiple_of(2) {
            events += 1;
        }
        let cpu_a = self.sample_server();
        let mut completions = Vec::new();
        let mut deliveries = 0u64;
        let expected = self.listeners_of(r);
        for k in 0..events {
            let value = if k % 2 == 0 { avail } else { !avail };
            let (sent, n) = self.toggle_round(id, r, item, value).await?;
            deliveries += n;
            completions.push((id, sent));
            id += 1;
            tokio::time::sleep(Duration::from_millis(self.opts.event_interval_ms)).await;
        }
        let cpu_b = self.sample_server();
        let f = &mut self.report.figures;
        f.insert("fanout_events".into(), f64::from(events));
        f.insert("fanout_listeners".into(), expected as f64);
        f.insert("fanout_deliveries".into(), deliveries as f64);
        if let (Some(a), Some(b)) = (cpu_a, cpu_b) {
            let cpu = b.cpu_ms.saturating_sub(a.cpu_ms) as f64;
            let wall = b.at_ns.saturating_sub(a.at_ns) as f64 / 1e6;
            f.insert("server_cpu_ms_during_events".into(), cpu);
            f.insert("server_wall_ms_during_events".into(), wall);
            if deliveries > 0 {
                f.insert(
                    "server_cpu_us_per_delivery".into(),
                    cpu * 1000.0 / deliveries as f64,
                );
            }
            if let (Some(ia), Some(ib)) = (idle_a, idle_b) {
                let idle_rate = ib.cpu_ms.saturating_sub(ia.cpu_ms) as f64
                    / (ib.at_ns.saturating_sub(ia.at_ns) as f64 / 1e6).max(1.0);
                f.insert("server_idle_cpu_cores".into(), idle_rate);
                if deliveries > 0 {
                    let net = (cpu - idle_rate * wall).max(0.0);
                    f.insert(
                        "server_cpu_us_per_delivery_minus_idle".into(),
                        net * 1000.0 / deliveries as f64,
                    );
                }
            }
        }
        self.report.notes.push(format!(
            "fan-out measured over {events} events to {expected} sockets"
        ));
        Ok(())
    }

    async fn run_generation(&mut self) -> anyhow::Result<()> {
        let a = self.sample_server();
        lock(&self.server).loaded = a;
        self.sample_workers().await?;
        let t0 = Instant::now();
        self.broadcast(Control::Go);
        let mut done = 0;
        let limit = Duration::from_secs_f64(self.cfg.duration_s + 120.0);
        while done < self.to.len() {
            if let WorkerEvent::GenerationDone { .. } = self.next(limit).await? {
                done += 1;
            }
        }
        let b = self.sample_server();
        let gen_s = self.cfg.duration_s;
        self.report
            .figures
            .insert("generation_s".into(), gen_s.max(0.0));
        self.report
            .figures
            .insert("generation_and_settle_s".into(), t0.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (a, b) {
            let cpu = b.cpu_ms.saturating_sub(a.cpu_ms) as f64;
            let wall = b.at_ns.saturating_sub(a.at_ns) as f64 / 1e6;
            self.report.figures.insert(
                "server_cpu_cores_during_generation".into(),
                cpu / wall.max(1.0),
            );
        }
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<Report> {
        self.broadcast(Control::Stop);
        let mut reports: Vec<WorkerReport> = Vec::new();
        while reports.len() < self.to.len() {
            match self.next(Duration::from_secs(60)).await? {
                WorkerEvent::Report(r) => reports.push(*r),
                _ => continue,
            }
        }
        for mut ch in self.children.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), ch.wait()).await;
        }
        if self.cfg.processes > 1 {
            let path =
                std::env::temp_dir().join(format!("scan2order-load-{}.json", std::process::id()));
            let _ = std::fs::remove_file(path);
        }
        let errors_before = std::mem::take(&mut self.report.errors);
        self.report.merge_workers(&reports);
        for (k, v) in errors_before {
            *self.report.errors.entry(k).or_default() += v;
        }
        self.report.duration_s = self.started.elapsed().as_secs_f64();
        if !self.opts.server_pids.is_empty() {
            let mut sv = lock(&self.server).clone();
            sv.after = self.sample_server();
            if let Some(a) = sv.after {
                sv.peak_rss_kib = sv.peak_rss_kib.max(a.rss_kib);
            }
            let sockets = self.subscribed();
            sv.finish(sockets);
            if matches!(self.cfg.scenario, Scenario::Orders | Scenario::Mixed) {
                // Memory per socket is meaningless here (the baseline was taken after connecting).
                sv.rss_bytes_per_socket = None;
            }
            self.report.server = Some(sv);
        }
        if matches!(
            self.cfg.scenario,
            Scenario::Fanout | Scenario::BaselineFanout
        ) {
            // The measured events (the first toggle only touched every socket).
            let mut last: Vec<f64> = Vec::new();
            let mut firsts: Vec<f64> = Vec::new();
            for t in self.report.toggles.iter().filter(|t| t.id > 1u64 << 60) {
                if t.sent_ns > 0 && t.last_arrival_ns >= t.sent_ns {
                    last.push((t.last_arrival_ns - t.sent_ns) as f64 / 1e6);
                    firsts.push(t.first_arrival_ns.saturating_sub(t.sent_ns) as f64 / 1e6);
                }
            }
            last.sort_by(f64::total_cmp);
            firsts.sort_by(f64::total_cmp);
            if let (Some(min), Some(max)) = (last.first(), last.last()) {
                let f = &mut self.report.figures;
                f.insert("fanout_to_last_socket_ms_min".into(), *min);
                f.insert(
                    "fanout_to_last_socket_ms_median".into(),
                    last[last.len() / 2],
                );
                f.insert("fanout_to_last_socket_ms_max".into(), *max);
                f.insert(
                    "fanout_to_first_socket_ms_median".into(),
                    firsts[firsts.len() / 2],
                );
            }
        }
        let ok = self.report.counters.get(c::ORDERS_OK).copied().unwrap_or(0) as f64;
        if ok > 0.0 && self.cfg.duration_s > 0.0 {
            self.report
                .figures
                .insert("orders_per_s".into(), ok / self.cfg.duration_s);
        }
        let p = lock(&self.progress);
        drop(p);
        Ok(self.report)
    }

    pub fn json_path(&self) -> Option<PathBuf> {
        self.opts.json.clone()
    }

    pub fn max_errors(&self) -> Option<u64> {
        self.opts.max_errors
    }
}

/// Exit codes.
pub mod exit {
    pub const COMPLETENESS: i32 = 1;
    pub const FATAL: i32 = 2;
    pub const TOO_MANY_ERRORS: i32 = 3;
}

/// Prints the report, writes `--json`, and returns the exit code.
pub fn conclude(
    report: &Report,
    json: Option<&std::path::Path>,
    max_errors: Option<u64>,
) -> anyhow::Result<i32> {
    println!("{}", report.human());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if !report.completeness_ok {
        eprintln!("FAILED: completeness check failed");
        return Ok(exit::COMPLETENESS);
    }
    let subscribed = report
        .figures
        .get("sockets_subscribed")
        .copied()
        .unwrap_or(0.0);
    if subscribed == 0.0 {
        eprintln!("FAILED: no socket subscribed");
        return Ok(exit::FATAL);
    }
    let errors: u64 = report.errors.values().sum();
    if let Some(max) = max_errors {
        if errors > max {
            eprintln!("FAILED: {errors} errors (at most {max} allowed)");
            return Ok(exit::TOO_MANY_ERRORS);
        }
    }
    Ok(0)
}

/// Worker process entry: read the job, speak JSON lines on stdin/stdout.
pub async fn worker_process(job: PathBuf, index: u32) -> anyhow::Result<()> {
    let job: Job = serde_json::from_slice(
        &std::fs::read(&job).with_context(|| format!("reading {}", job.display()))?,
    )?;
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel::<Control>();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<WorkerEvent>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(c) = serde_json::from_str::<Control>(&line) {
                if ctl_tx.send(c).is_err() {
                    break;
                }
            }
        }
    });
    let worker = tokio::spawn(run_worker(
        index,
        Arc::new(job.plan),
        Arc::new(job.cfg),
        ctl_rx,
        ev_tx,
    ));
    let mut stdout = tokio::io::stdout();
    while let Some(e) = ev_rx.recv().await {
        let last = matches!(e, WorkerEvent::Report(_) | WorkerEvent::Failed { .. });
        let mut line = serde_json::to_vec(&e)?;
        line.push(b'\n');
        stdout.write_all(&line).await?;
        stdout.flush().await?;
        if last {
            break;
        }
    }
    let _ = worker.await;
    Ok(())
}
