//! `rooms`: many rooms with a few members each, spread over one or more nodes (room `r`
//! lives on node `r % nodes`, as a load balancer with room affinity places it); publishers on
//! every node publish into that node's rooms at an aggregate rate. Reports deliveries per
//! second in all and per node, loss and latency: what adding a node adds.
//!
//! A connection joins up to `--rooms-per-connection` rooms of its node (the server's
//! `WS_MAX_ROOMS_PER_CONNECTION` bounds it), so 10,000 rooms of 10 members are 100,000
//! memberships on a few thousand connections.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The nodes, comma-separated (ws://HOST:PORT,...).
    #[arg(long, value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// Endpoint path appended to each URL.
    #[arg(long, default_value = "/ws/json")]
    pub path: String,
    /// Rooms.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rooms: u64,
    /// Members per room.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub members: u64,
    /// Rooms one connection joins.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rooms_per_connection: u64,
    /// Aggregate publish rate, messages per second (each reaches `members` clients).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Publisher connections per node.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub publishers_per_node: u64,
    /// Publishing time in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds at the start left out of the latency figures.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Longest wait for outstanding deliveries after publishing ends (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Limit for one connect attempt, and for its joins (seconds).
    #[arg(long, default_value_t = 20.0)]
    pub connect_timeout: f64,
}

impl Args {
    pub fn validate(&mut self) -> Result<(), String> {
        for url in &mut self.urls {
            *url = check_ws_url(url)?;
        }
        if !(self.rate > 0.0 && self.duration > 0.0) {
            return Err("--rate and --duration must be positive".into());
        }
        Ok(())
    }

    fn connections_per_node(&self) -> u64 {
        let nodes = self.urls.len() as u64;
        let rooms_per_node = self.rooms.div_ceil(nodes);
        self.members * rooms_per_node.div_ceil(self.rooms_per_connection)
    }

    pub fn fds_needed(&self) -> u64 {
        let nodes = self.urls.len() as u64;
        nodes * (self.connections_per_node() + self.publishers_per_node) + 64
    }
}

/// Counters shared by every task.
struct Shared {
    delivered: Vec<AtomicU64>,
    published: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    /// `resync` frames: a room told its members events may have been missed.
    resyncs: AtomicU64,
    measure_from_us: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

const MAX_LATENCY_US: u64 = 60_000_000;

fn room_name(r: u64) -> String {
    format!("lg-{r}")
}

/// Connects to `url` and joins `rooms`; every `joined` waited for.
async fn member(url: String, rooms: Vec<u64>, limit: Duration) -> Result<Ws, String> {
    let mut ws = connect_ws(&url, ws_config(64 * 1024), false, 2, limit).await?;
    for r in &rooms {
        let join = json!({"type": "join", "room": room_name(*r)}).to_string();
        ws.send(Message::text(join))
            .await
            .map_err(|e| describe_ws(&e))?;
    }
    let mut joined = 0;
    let deadline = tokio::time::Instant::now() + limit;
    while joined < rooms.len() {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match str_field(t.as_bytes(), b"\"type\"") {
                Some(b"joined") => joined += 1,
                Some(b"error") => {
                    return Err(format!("join refused: {}", lossy(t.as_bytes())));
                }
                _ => {}
            },
            Ok(Some(Ok(_))) => {}
            _ => return Err("joins not answered".into()),
        }
    }
    Ok(ws)
}

pub async fn run(a: Args) {
    let nodes = a.urls.len();
    let sh = Arc::new(Shared {
        delivered: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
        published: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        resyncs: AtomicU64::new(0),
        measure_from_us: AtomicU64::new(u64::MAX),
        hist: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("histogram")),
    });
    println!(
        "rooms: {} rooms x {} members over {} node(s), {} rooms per connection, {} msg/s for {} s",
        a.rooms, a.members, nodes, a.rooms_per_connection, a.rate, a.duration
    );

    // Members: for each node, its rooms in groups, each group joined by `members` connections.
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency as usize));
    let limit = secs(a.connect_timeout);
    let mut joins = Vec::new();
    for node in 0..nodes {
        let node_rooms: Vec<u64> = (0..a.rooms)
            .filter(|r| (*r as usize) % nodes == node)
            .collect();
        for group in node_rooms.chunks(a.rooms_per_connection as usize) {
            for m in 0..a.members {
                let url = ws_url(&a.urls[node], &a.path, &format!("m{node}-{m}"));
                let rooms = group.to_vec();
                let sem = sem.clone();
                joins.push(tokio::spawn(async move {
                    let _permit = sem.acquire().await;
                    (node, member(url, rooms, limit).await)
                }));
            }
        }
    }
    let mut members = Vec::new();
    let failed = Tally::default();
    for j in joins {
        match j.await {
            Ok((node, Ok(ws))) => members.push((node, ws)),
            Ok((_, Err(e))) => failed.add(e),
            Err(e) => failed.add(e.to_string()),
        }
    }
    let failures = failed.snapshot();
    println!(
        "  connected          {} member connections in {:.1} s{}",
        members.len(),
        started.elapsed().as_secs_f64(),
        if failures.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", fmt_tally(&failures))
        }
    );
    drop(failed);

    // Receivers.
    let mut tasks = Vec::new();
    for (node, mut ws) in members {
        let sh = sh.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                let b = t.as_bytes();
                match str_field(b, b"\"type\"") {
                    Some(b"event") => {}
                    Some(b"resync") => {
                        sh.resyncs.fetch_add(1, Relaxed);
                        continue;
                    }
                    _ => continue,
                }
                sh.delivered[node].fetch_add(1, Relaxed);
                if let Some(t) = uint_field(b, b"\"t\"") {
                    if t >= sh.measure_from_us.load(Relaxed) {
                        let lat = now_us().saturating_sub(t).clamp(1, MAX_LATENCY_US);
                        sh.hist.lock().unwrap().saturating_record(lat);
                    }
                }
            }
        }));
    }

    // Publishers: each node's publishers publish into that node's rooms.
    let per_pub = a.rate / (nodes as u64 * a.publishers_per_node) as f64;
    let period = Duration::from_secs_f64(1.0 / per_pub);
    let start = Instant::now() + Duration::from_millis(200);
    sh.measure_from_us
        .store(now_us() + 200_000 + (a.warmup * 1e6) as u64, Relaxed);
    let end = start + secs(a.duration);
    let mut pubs = Vec::new();
    for node in 0..nodes {
        let node_rooms: Arc<Vec<u64>> = Arc::new(
            (0..a.rooms)
                .filter(|r| (*r as usize) % nodes == node)
                .collect(),
        );
        for p in 0..a.publishers_per_node {
            let url = ws_url(&a.urls[node], &a.path, &format!("p{node}-{p}"));
            let (sh, rooms) = (sh.clone(), node_rooms.clone());
            pubs.push(tokio::spawn(async move {
                let Ok(ws) = connect_ws(&url, ws_config(64 * 1024), true, 2, limit).await else {
                    return;
                };
                let (mut sink, mut stream) = ws.split();
                let sh2 = sh.clone();
                let reader = tokio::spawn(async move {
                    while let Some(Ok(m)) = stream.next().await {
                        let Message::Text(t) = m else { continue };
                        match str_field(t.as_bytes(), b"\"type\"") {
                            Some(b"ack") => {
                                sh2.acked.fetch_add(1, Relaxed);
                            }
                            Some(b"error") => {
                                sh2.refused.fetch_add(1, Relaxed);
                            }
                            _ => {}
                        }
                    }
                });
                let mut tick = tokio::time::interval_at(start.into(), period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0u64;
                while Instant::now() < end {
                    tick.tick().await;
                    let room = rooms[((p + n * 7919) % rooms.len() as u64) as usize];
                    let msg = json!({
                        "type": "publish",
                        "room": room_name(room),
                        "data": {"t": now_us()},
                        "id": format!("p{node}-{p}-{n}"),
                    });
                    if sink.send(Message::text(msg.to_string())).await.is_err() {
                        break;
                    }
                    sh.published.fetch_add(1, Relaxed);
                    n += 1;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                reader.abort();
            }));
        }
    }
    for p in pubs {
        let _ = p.await;
    }
    let publish_secs = start.elapsed().as_secs_f64().min(a.duration + 0.5);
    // Drain: until deliveries stop growing or the limit passes.
    let drain_until = Instant::now() + secs(a.drain);
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now: u64 = sh.delivered.iter().map(|d| d.load(Relaxed)).sum();
        if (now == last && now > 0) || Instant::now() > drain_until {
            break;
        }
        last = now;
    }
    for t in &tasks {
        t.abort();
    }

    let per_node: Vec<u64> = sh.delivered.iter().map(|d| d.load(Relaxed)).collect();
    let delivered: u64 = per_node.iter().sum();
    let published = sh.published.load(Relaxed);
    let expected = published * a.members;
    let acked = sh.acked.load(Relaxed);
    let resyncs = sh.resyncs.load(Relaxed);
    let hist = sh.hist.lock().unwrap();
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let rate = delivered as f64 / publish_secs;
    let per_node_rate: Vec<f64> = per_node.iter().map(|d| *d as f64 / publish_secs).collect();
    println!(
        "  published          {published} ({} acked, {} refused)",
        sh.acked.load(Relaxed),
        sh.refused.load(Relaxed)
    );
    println!(
        "  delivered          {delivered} of {expected} ({:.3}% lost); {rate:.0} /s in all; per node {:?}",
        100.0 * expected.saturating_sub(delivered) as f64 / expected.max(1) as f64,
        per_node_rate.iter().map(|r| r.round() as u64).collect::<Vec<_>>()
    );
    println!(
        "  of acked          {delivered} of {} delivered; {resyncs} resync frames",
        acked * a.members
    );
    println!(
        "  latency ms         p50 {:.2}  p99 {:.2}  max {:.2}",
        q(0.5),
        q(0.99),
        hist.max() as f64 / 1000.0
    );
    let result = json!({
        "mode": "rooms",
        "nodes": nodes,
        "rooms": a.rooms,
        "members": a.members,
        "rate": a.rate,
        "published": published,
        "acked": acked,
        "resyncs": resyncs,
        "refused": sh.refused.load(Relaxed),
        "expected": expected,
        "delivered": delivered,
        "delivery_rate": rate,
        "delivery_rate_per_node": per_node_rate,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": hist.max() as f64 / 1000.0},
    });
    println!("RESULT {result}");
}
