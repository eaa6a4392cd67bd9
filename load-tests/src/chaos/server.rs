//! The server under test as a real child process: its own throw-away database, seeded and with minted
//! customer tokens, started, killed (`SIGKILL`), stopped (`SIGTERM`) and restarted on the same port; and
//! the faults done to Postgres (restart, `SIGSTOP`/`SIGCONT`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::process::{Child, Command};

use crate::http::HttpPool;

/// How to start the server.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// `postgres://…/postgres`: where the run's database is created and dropped.
    pub admin_url: String,
    /// Extra `SCAN2ORDER__…` settings.
    pub env: Vec<(String, String)>,
    /// Where the server's output goes (appended across restarts).
    pub log: PathBuf,
}

/// The server process, its database and port.
pub struct Server {
    spec: ServerSpec,
    pub db_name: String,
    pub db_url: String,
    pub port: u16,
    child: Option<Child>,
    /// Starts so far (1 after the first).
    pub starts: u32,
}

/// A database name for this run.
fn db_name() -> String {
    format!(
        "s2o_chaos_{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// The URL of `db` on the server `admin_url` points at.
fn with_db(admin_url: &str, db: &str) -> anyhow::Result<String> {
    let (base, _) = admin_url
        .rsplit_once('/')
        .with_context(|| format!("{admin_url}: expected postgres://…/DBNAME"))?;
    Ok(format!("{base}/{db}"))
}

/// A free loopback port (bound and released; the server binds it next, and again after each restart).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    /// Creates the database, seeds it (`seed-demo`), mints `tokens` customer sessions; returns the server
    /// (not started yet) with the seed and token files written into `dir`.
    pub async fn prepare(
        spec: ServerSpec,
        dir: &Path,
        tokens: usize,
    ) -> anyhow::Result<(Server, PathBuf, PathBuf)> {
        let name = db_name();
        let db_url = with_db(&spec.admin_url, &name)?;
        let mut admin = AsyncPgConnection::establish(&spec.admin_url)
            .await
            .with_context(|| format!("connecting to {}", spec.admin_url))?;
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating the run's database")?;
        let server = Server {
            spec,
            db_name: name,
            db_url,
            port: free_port()?,
            child: None,
            starts: 0,
        };
        let seed = dir.join("seed.txt");
        let out = server
            .command()
            .arg("seed-demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("running seed-demo")?;
        if !out.status.success() {
            bail!(
                "seed-demo failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::write(&seed, &out.stdout)?;
        let token_file = dir.join("tokens.txt");
        crate::tokens::mint(&server.db_url, tokens, 2, &token_file)
            .await
            .context("minting guest sessions")?;
        Ok((server, seed, token_file))
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.spec.bin);
        c.arg("--config")
            .arg(&self.spec.config)
            .env("SCAN2ORDER__DATABASE__URL", &self.db_url)
            .env("SCAN2ORDER__HTTP__PORT", self.port.to_string())
            .env("SCAN2ORDER__HTTP__HOST", "127.0.0.1")
            .env(
                "SCAN2ORDER__HTTP__PUBLIC_BASE_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("SCAN2ORDER__DEMO__SEED_ON_START", "false")
            .env("SCAN2ORDER__LOG__FORMAT", "json");
        for (k, v) in &self.spec.env {
            c.env(k, v);
        }
        c.kill_on_drop(true);
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Another node of the same fleet: the same database and settings plus `env`, its own port and log.
    /// Dropping it stops it; the database stays with the first node.
    pub fn sibling(&self, env: &[(&str, &str)], log: PathBuf) -> anyhow::Result<Server> {
        let mut spec = self.spec.clone();
        spec.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        spec.log = log;
        Ok(Server {
            spec,
            db_name: self.db_name.clone(),
            db_url: self.db_url.clone(),
            port: free_port()?,
            child: None,
            starts: 0,
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the server and waits until `/readyz` answers 200; returns how long that took.
    pub async fn start(&mut self) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .with_context(|| format!("opening {}", self.spec.log.display()))?;
        let child = self
            .command()
            .arg("serve")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.spec.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready(Duration::from_secs(60)).await?;
        Ok(t0.elapsed())
    }

    /// Polls `/readyz` until it answers 200 (the server's readiness is only observable from outside).
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let addr = format!("127.0.0.1:{}", self.port).parse()?;
        let pool = HttpPool::new(addr, None, addr.to_string(), 1, Duration::from_secs(2));
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the server exited while starting ({status}); see {}",
                        self.spec.log.display()
                    );
                }
            }
            if let Ok(r) = pool.call("GET", "/readyz", &[], None).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("the server was not ready within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `kill -9`.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("the server is not running")?;
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// `SIGTERM`, then waits for the exit; returns the exit code and how long the shutdown took.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<(Option<i32>, Duration)> {
        let mut child = self.child.take().context("the server is not running")?;
        let pid = child.id().context("the server has no pid")?;
        let t0 = Instant::now();
        signal(pid, "TERM").await?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Ok((status?.code(), t0.elapsed())),
            Err(_) => {
                child.start_kill()?;
                child.wait().await?;
                bail!("the server did not exit within {limit:?} of SIGTERM")
            }
        }
    }

    /// Whether the process is still running (not crashed).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Resident memory (bytes) and open files of the server, from /proc.
    pub fn rss_and_fds(&self) -> Option<(u64, OpenFiles)> {
        let pid = self.pid()?;
        let rss = crate::stats::proc_sample(pid)?.rss_kib * 1024;
        Some((rss, open_files(pid, self.port, port_of(&self.db_url))?))
    }

    /// Stops the server (if running) and drops the run's database.
    pub async fn destroy(mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let mut admin = AsyncPgConnection::establish(&self.spec.admin_url).await?;
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.db_name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

/// A process's open files by what they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFiles {
    pub total: u64,
    /// TCP connections accepted on the server's port (HTTP and sockets).
    pub clients: u64,
    /// TCP connections to Postgres (the pool).
    pub database: u64,
    /// Everything else: the listener, files, pipes, event and epoll descriptors, other sockets.
    pub other: u64,
}

/// The port in a `postgres://user@host:port/db` URL (5432 when it names none).
pub fn port_of(url: &str) -> u16 {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    host.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(5432)
}

/// `pid`'s open files, its TCP sockets told apart with the process's view of `/proc/net/tcp{,6}`.
pub fn open_files(pid: u32, port: u16, db_port: u16) -> Option<OpenFiles> {
    let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    let mut tcp = String::new();
    for f in ["tcp", "tcp6"] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")) {
            tcp.push_str(&t);
        }
    }
    Some(classify(&links, &tcp, port, db_port))
}

/// Sorts fd link targets (`socket:[inode]`, paths, `anon_inode:…`) by the TCP table's entries.
fn classify(links: &[String], tcp: &str, port: u16, db_port: u16) -> OpenFiles {
    const LISTEN: &str = "0A";
    let hex_port = |a: &str| {
        a.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    // inode → (local port, remote port, listening)
    let sockets: std::collections::HashMap<&str, (u16, u16, bool)> = tcp
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote) = (hex_port(f.get(1)?)?, hex_port(f.get(2)?)?);
            Some((*f.get(9)?, (local, remote, *f.get(3)? == LISTEN)))
        })
        .collect();
    let mut out = OpenFiles {
        total: links.len() as u64,
        ..OpenFiles::default()
    };
    for l in links {
        let inode = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']'));
        match inode.and_then(|i| sockets.get(i)) {
            Some(&(local, _, false)) if local == port => out.clients += 1,
            Some(&(_, remote, false)) if remote == db_port => out.database += 1,
            _ => out.other += 1,
        }
    }
    out
}

/// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`) with the system's `kill`.
pub async fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .await?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

async fn pg_ctlcluster(ver: &str, name: &str, action: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", ver, name])
        .args(action)
        .output()
        .await
        .context("running pg_ctlcluster")?;
    if !out.status.success() {
        bail!(
            "pg_ctlcluster {}: {}",
            action.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[derive(QueryableByName)]
struct PidRow {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    v: String,
}

/// The Postgres the server uses, for the database faults.
pub struct Postgres {
    admin_url: String,
    /// `pg_ctlcluster` version and cluster (e.g. `15 main`).
    cluster: Option<(String, String)>,
}

impl Postgres {
    pub fn new(admin_url: &str) -> Postgres {
        let cluster = std::fs::read_dir("/etc/postgresql").ok().and_then(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .max()
                .map(|v| (v, "main".to_string()))
        });
        Postgres {
            admin_url: admin_url.to_string(),
            cluster,
        }
    }

    /// Stops Postgres (`pg_ctlcluster … stop -m fast`: every connection is cut), keeps it down for
    /// `down_for`, and starts it again.
    pub async fn restart(&self, down_for: Duration) -> anyhow::Result<()> {
        let (ver, name) = self
            .cluster
            .clone()
            .context("no cluster under /etc/postgresql: cannot restart Postgres")?;
        pg_ctlcluster(&ver, &name, &["stop", "-m", "fast"]).await?;
        tokio::time::sleep(down_for).await;
        pg_ctlcluster(&ver, &name, &["start"]).await
    }

    /// The postmaster and the backends serving `db`: what `SIGSTOP` freezes (the server's connections
    /// hang, new connections hang at the postmaster). Other databases' open sessions keep running.
    pub async fn pids_of(&self, db: &str) -> anyhow::Result<Vec<u32>> {
        let mut conn = AsyncPgConnection::establish(&self.admin_url).await?;
        let rows: Vec<PidRow> = diesel::sql_query(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind::<Text, _>(db)
        .load(&mut conn)
        .await?;
        let dir: Vec<TextRow> =
            diesel::sql_query("SELECT setting AS v FROM pg_settings WHERE name = 'data_directory'")
                .load(&mut conn)
                .await?;
        let dir = dir
            .into_iter()
            .next()
            .map(|r| r.v)
            .context("no data_directory")?;
        let pm = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid"))
            .with_context(|| format!("reading {dir}/postmaster.pid"))?;
        let postmaster: u32 = pm
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid: no pid")?;
        let mut pids = vec![postmaster];
        pids.extend(rows.iter().filter_map(|r| u32::try_from(r.pid).ok()));
        Ok(pids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_port_comes_from_the_url() {
        assert_eq!(port_of("postgres://postgres@127.0.0.1:5433/s2o"), 5433);
        assert_eq!(port_of("postgres://postgres@127.0.0.1/s2o"), 5432);
        assert_eq!(
            port_of("postgres://u:p%3A1@db.example:6432/x?sslmode=off"),
            6432
        );
    }

    /// Ports only this test uses, so other tests' sockets in this process cannot change the counts.
    #[test]
    fn open_files_tell_accepted_connections_from_database_ones_and_the_rest() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let db = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (port, db_port) = (
            server.local_addr().expect("addr").port(),
            db.local_addr().expect("addr").port(),
        );
        let before = open_files(std::process::id(), port, db_port).expect("/proc");
        assert_eq!((before.clients, before.database), (0, 0), "{before:?}");

        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (_accepted, _) = server.accept().expect("accept");
        let _pool = std::net::TcpStream::connect(("127.0.0.1", db_port)).expect("connect");
        let (_db_side, _) = db.accept().expect("accept");
        let after = open_files(std::process::id(), port, db_port).expect("/proc");
        // The accepted end is a client; our end towards the database port is a pool connection; the
        // listeners, the connecting end and the database's accepted end are neither.
        assert_eq!((after.clients, after.database), (1, 1), "{after:?}");
        assert_eq!(
            after.total,
            after.clients + after.database + after.other,
            "{after:?}"
        );
    }

    #[test]
    fn listeners_and_non_sockets_are_other() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F91 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 20 4 30 10 -1
";
        let links: Vec<String> = [
            "socket:[100]",
            "socket:[101]",
            "socket:[102]",
            "socket:[103]",
            "socket:[999]",
            "anon_inode:[eventpoll]",
            "/var/log/s2o.log",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        let f = classify(&links, tcp, 0x1F90, 0x1538);
        assert_eq!(
            f,
            OpenFiles {
                total: 7,
                clients: 1,
                database: 1,
                other: 5
            }
        );
    }
}
