//! `scan2order shards`: the shard table of a running server, for operators at a terminal.

use std::fmt::Write as _;

use serde_json::Value;

pub async fn run(base_url: &str, token: &str, raw: bool) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/admin/shards", base_url.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        body["message"].as_str().unwrap_or("no message")
    );
    if raw {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", render(&body));
    }
    Ok(())
}

/// The shards and the busiest restaurants as aligned text tables.
pub fn render(body: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>11} {:>9} {:>10} {:>8} {:>12} {:>9} {:>9} {:>8}",
        "shard",
        "restaurants",
        "mailbox",
        "msgs/s",
        "p99 ms",
        "handled",
        "w.queue",
        "batches",
        "largest"
    );
    for s in body["shards"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:>5} {:>11} {:>9} {:>10.1} {:>8.2} {:>12} {:>9} {:>9} {:>8}",
            s["shard"].as_u64().unwrap_or(0),
            s["restaurants"].as_u64().unwrap_or(0),
            s["mailbox_depth"].as_i64().unwrap_or(0),
            s["messages_per_s"].as_f64().unwrap_or(0.0),
            s["p99_ms"].as_f64().unwrap_or(0.0),
            s["messages_handled"].as_u64().unwrap_or(0),
            s["writer_queue"].as_u64().unwrap_or(0),
            s["batches"].as_u64().unwrap_or(0),
            s["largest_batch"].as_u64().unwrap_or(0),
        );
    }
    let _ = writeln!(
        out,
        "activations {}  restarts {}  passivations {}",
        body["activations"], body["restarts"], body["passivations"]
    );
    let _ = writeln!(out, "\nbusiest restaurants");
    let _ = writeln!(
        out,
        "{:<36} {:>5} {:>10} {:>6} {:>8} {:>7}",
        "restaurant", "shard", "messages", "live", "kitchen", "tables"
    );
    for r in body["restaurants"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<36} {:>5} {:>10} {:>6} {:>8} {:>7}",
            r["restaurant_id"].as_str().unwrap_or("?"),
            r["shard"].as_u64().unwrap_or(0),
            r["messages"].as_u64().unwrap_or(0),
            r["live_orders"].as_u64().unwrap_or(0),
            r["kitchen_sockets"].as_u64().unwrap_or(0),
            r["table_sockets"].as_u64().unwrap_or(0),
        );
    }
    out
}
