//! Server memory per idle socket and connect-storm time, measured against a running server.
//!
//! Opens `--count` idle guest sockets (round-robin over the given tables, from loopback source
//! addresses 127.0.0.2…), waits for each one's `hello` and `snapshot`, toggles one dish per restaurant
//! (`PATCH /api/v1/kitchen/menu-items/{id}`) so that every socket receives one event, and reads the
//! server's RSS from `/proc/<pid>/status` before, after connecting and after the event. Sockets answer
//! pings and are held for `--hold-s`. The client holds a socket in a `TcpStream` plus a few words (reads
//! go to one shared buffer), so it can hold as many as the file limit allows.
//!
//! ```text
//! cargo run --release --example socket_memory -- --url http://127.0.0.1:8080 --pid 1234 \
//!     --count 19000 --tables tables.txt --login chef-a:pw --login chef-b:pw
//! ```
//! `tables.txt` holds `seed-demo`'s `TABLE <slug> <label> <url>` lines (other lines are skipped).
//! Prints one JSON line with the figures.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's process id (for its RSS).
    #[arg(long)]
    pid: u32,
    /// Sockets to open.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// A file with `TABLE <slug> <label> <url>` lines.
    #[arg(long)]
    tables: String,
    /// `username:password` of a chef; one per restaurant whose tables are used.
    #[arg(long)]
    login: Vec<String>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 2000)]
    concurrency: usize,
    /// Loopback source addresses to spread the sockets over (127.0.0.2 onwards).
    #[arg(long, default_value_t = 4)]
    source_ips: u8,
    /// Sockets opened (and held) before the baseline reading, not counted.
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    /// Seconds to wait for the server to settle before each RSS reading.
    #[arg(long, default_value_t = 3)]
    settle_s: u64,
    /// Seconds to hold the sockets after measuring.
    #[arg(long, default_value_t = 0)]
    hold_s: u64,
    /// A label for the output line.
    #[arg(long, default_value = "")]
    label: String,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// Counters shared by every socket.
#[derive(Default)]
struct Counts {
    upgraded: AtomicUsize,
    ready: AtomicUsize,
    events: AtomicUsize,
    closed: AtomicUsize,
    failed: AtomicUsize,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::task::LocalSet::new().run_until(run(args)))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.tables)?;
    // slug -> table tokens
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["TABLE", slug, _label, url] = parts[..] {
            let token = url.rsplit('/').next().unwrap_or_default().to_string();
            tables.entry(slug.to_string()).or_default().push(token);
        }
    }
    let all: Vec<String> = tables.values().flatten().cloned().collect();
    if all.is_empty() {
        bail!("no TABLE lines in {}", args.tables);
    }
    let addr: SocketAddr = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("--url must be http://ip:port")?;
    let http = reqwest::Client::new();
    // Sign the chefs in and find a dish per restaurant before the baseline: a login hashes a password
    // with argon2id, whose 19 MiB stay with the blocking thread that did it.
    let mut toggles = Vec::new();
    for (login, (_slug, tokens)) in args.login.iter().zip(&tables) {
        let (user, password) = login.split_once(':').context("--login user:password")?;
        let res: Value = http
            .post(format!("{}/api/v1/auth/login", args.url))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let chef = res["token"].as_str().context("token")?.to_string();
        let menu: Value = http
            .get(format!("{}/api/v1/tables/{}", args.url, tokens[0]))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let item = &menu["menu"]["categories"][0]["items"][0];
        let id = item["id"].as_str().context("a menu item")?.to_string();
        let available = item["available"].as_bool().unwrap_or(true);
        toggles.push((chef, id, available));
    }
    // A few sockets before the baseline, held to the end: per-worker state (read buffers, timers) is
    // not a per-socket cost. Then warm the toggle path up.
    let warm = Arc::new(Counts::default());
    for i in 0..args.warmup {
        let stream = open(
            addr,
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
            &all[i % all.len()],
        )
        .await?;
        let warm = warm.clone();
        tokio::task::spawn_local(async move { hold(stream, &warm).await });
    }
    for (chef, id, available) in &toggles {
        for value in [!available, *available] {
            toggle(&http, &args.url, chef, id, value).await?;
        }
    }
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let rss_before = rss_kib(args.pid)?;

    let counts = Arc::new(Counts::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let started = Instant::now();
    for i in 0..args.count {
        let token = all[i % all.len()].clone();
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % usize::from(args.source_ips.max(1))) as u8,
        ));
        let counts = counts.clone();
        let permit = gate.clone().acquire_owned().await?;
        tokio::task::spawn_local(async move {
            match open(addr, source, &token).await {
                Ok(stream) => {
                    counts.upgraded.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                    hold(stream, &counts).await;
                }
                Err(e) => {
                    drop(permit);
                    if counts.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("socket failed: {e:#}");
                    }
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut upgrade_s = None;
    while counts.ready.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed) < args.count
    {
        if upgrade_s.is_none()
            && counts.upgraded.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed)
                >= args.count
        {
            upgrade_s = Some(started.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("sockets did not all get ready");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_s = started.elapsed().as_secs_f64();
    let failed = counts.failed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let rss_connected = rss_kib(args.pid)?;

    // One event to every socket: one dish per restaurant is switched.
    let event_started = Instant::now();
    for (chef, id, available) in &toggles {
        toggle(&http, &args.url, chef, id, !available).await?;
    }
    let expected = args.count - failed;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts.events.load(Ordering::Relaxed) < expected {
        if Instant::now() > deadline {
            eprintln!(
                "only {} of {expected} sockets got the event",
                counts.events.load(Ordering::Relaxed)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let fanout_ms = event_started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;
    let rss_after_event = rss_kib(args.pid)?;
    let per_socket = |kib: u64| (kib.saturating_sub(rss_before) * 1024) as f64 / args.count as f64;
    println!(
        "{}",
        json!({
            "label": args.label,
            "sockets": args.count,
            "failed": failed,
            "closed": counts.closed.load(Ordering::Relaxed),
            "events": counts.events.load(Ordering::Relaxed),
            // Until every socket had its 101 answer, and until every one had `hello` and `snapshot`
            // (which comes after the resume grace, 500 ms by default).
            "upgrade_s": upgrade_s.or(Some(ready_s)).map(|s| (s * 1000.0).round() / 1000.0),
            "ready_s": (ready_s * 1000.0).round() / 1000.0,
            "fanout_ms": fanout_ms.round(),
            "rss_before_kib": rss_before,
            "rss_connected_kib": rss_connected,
            "rss_after_event_kib": rss_after_event,
            "bytes_per_socket_connected": per_socket(rss_connected).round(),
            "bytes_per_socket_after_event": per_socket(rss_after_event).round(),
        })
    );
    tokio::time::sleep(Duration::from_secs(args.hold_s)).await;
    Ok(())
}

async fn toggle(
    http: &reqwest::Client,
    url: &str,
    chef: &str,
    item: &str,
    available: bool,
) -> anyhow::Result<()> {
    http.patch(format!("{url}/api/v1/kitchen/menu-items/{item}"))
        .bearer_auth(chef)
        .json(&json!({ "available": available }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Connects from `source`, upgrades, and returns the stream once the 101 answer is read.
async fn open(addr: SocketAddr, source: IpAddr, token: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(addr).await?;
    let request = format!(
        "GET /ws/table/{token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    write_all(&stream, request.as_bytes()).await?;
    // Peek until the answer head is complete, then take exactly the head: the frames behind it are
    // read by `hold`.
    let mut peeked = [0u8; 2048];
    let end = loop {
        let n = stream.peek(&mut peeked).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        if let Some(i) = peeked[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if n == peeked.len() {
            bail!("handshake answer too long");
        }
        // Part of the head: wait a little for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let mut head = vec![0u8; end];
    let mut got = 0;
    while got < end {
        stream.readable().await?;
        match stream.try_read(&mut head[got..]) {
            Ok(0) => bail!("closed during the handshake"),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        );
    }
    Ok(stream)
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads frames until the server closes: counts `hello`+`snapshot` as ready, `menu_item` as the event,
/// answers pings. Frames that straddle reads are kept in a `Vec` only until complete.
async fn hold(stream: TcpStream, counts: &Counts) {
    let mut partial: Vec<u8> = Vec::new();
    let mut texts = 0usize;
    loop {
        if stream.readable().await.is_err() {
            break;
        }
        let mut pongs: Vec<Vec<u8>> = Vec::new();
        let mut closed = false;
        let read = SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match stream.try_read(&mut scratch) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            };
            let data: &[u8] = if partial.is_empty() {
                &scratch[..n]
            } else {
                partial.extend_from_slice(&scratch[..n]);
                &partial
            };
            let mut pos = 0;
            while let Some((opcode, payload, len)) = server_frame(&data[pos..]) {
                match opcode {
                    0x1 => {
                        texts += 1;
                        if texts == 2 {
                            counts.ready.fetch_add(1, Ordering::Relaxed);
                        }
                        if payload.windows(11).any(|w| w == b"\"menu_item\"") {
                            counts.events.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    0x8 => closed = true,
                    0x9 => pongs.push(payload.to_vec()),
                    _ => {}
                }
                pos += len;
            }
            let rest = data[pos..].to_vec();
            partial = rest;
            true
        });
        for payload in pongs {
            let mut frame = vec![0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0];
            frame.extend_from_slice(&payload);
            let _ = write_all(&stream, &frame).await;
        }
        if !read || closed {
            break;
        }
    }
    counts.closed.fetch_add(1, Ordering::Relaxed);
}

/// `(opcode, payload, frame length)` of the unmasked server frame at the start of `buf`.
fn server_frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let [b0, b1, ..] = *buf else { return None };
    let (len, at) = match b1 & 0x7F {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(buf.get(2..10)?);
            (u64::from_be_bytes(n) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?;
    Some((b0 & 0x0F, payload, at + len))
}
