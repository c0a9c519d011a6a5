//! The chaos checker: three courier processes on one Redis (and on a Redis Cluster), with
//! WebSocket and SSE subscribers and publishers on every node, while a node is killed and
//! restarted, Redis is paused, and Redis is restarted (losing everything). Subscribers
//! reconnect with their last position. At the end every subscriber is checked:
//!
//! - every acknowledged event reached it exactly once (within an epoch), in seq order;
//! - no (room, epoch, seq) was given to two different events;
//! - every event it did not get, and every jump in its numbering, was announced to it
//!   (`recovered: false` or `resync`) — never silent.
//!
//! `COURIER_CHAOS_SECS` sets how long publishing lasts (default [`DEFAULT_CHAOS_SECS`]);
//! `bench/chaos.sh` runs the long form.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::helpers::{
    closed_port, redis_cli, start_server_process, test_secret, OwnCluster, OwnRedis, ServerProcess,
};

/// Publishing time of the short form (the one `cargo test` runs).
pub const DEFAULT_CHAOS_SECS: u64 = 16;
const NODES: usize = 3;
const ROOMS: usize = 5;
const WS_PER_NODE: usize = 30;
const SSE_PER_NODE: usize = 10;
/// Pause between a publisher's messages.
const PUBLISH_EVERY: Duration = Duration::from_millis(40);
/// Longest wait for a frame before a client takes its connection for dead and reconnects.
const SILENCE: Duration = Duration::from_secs(8);
/// Wait before reconnecting.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);
/// After publishing stops, how long subscribers get to catch up.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

fn room(i: usize) -> String {
    format!("chaos-{i}")
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    room: String,
    /// Which node and transport, for the report.
    who: String,
    /// Events as received: (epoch, seq, publish id).
    events: Vec<(Option<String>, u64, String)>,
    /// Announcements that events may be missing (`recovered: false`, `resync`).
    gaps_reported: usize,
    /// Jumps in the numbering nobody announced.
    silent_gaps: usize,
    /// Where they were: (epoch, last seq, seq received).
    silent_at: Vec<(Option<String>, u64, u64)>,
    /// What it was told: `joined` and `resync` frames, and the position it asked for.
    told: Vec<String>,
    /// Events received twice in one epoch.
    duplicates: usize,
    /// Events out of order.
    out_of_order: usize,
}

/// Where each node listens now (a restarted node gets a new port).
type Ports = Rc<RefCell<Vec<u16>>>;

#[derive(Default)]
struct Tally {
    published: usize,
    acked: usize,
    refused: usize,
}

/// A subscriber's position and bookkeeping as events arrive.
struct Cursor {
    epoch: Option<String>,
    last: u64,
    /// Set by an announcement: the next jump is reported.
    announced: bool,
}

impl Cursor {
    fn event(&mut self, seen: &mut Seen, epoch: Option<String>, seq: u64, pid: String) {
        if let (Some(ours), Some(theirs)) = (&self.epoch, &epoch) {
            if ours != theirs {
                // An SSE id carries the epoch: a change without `resync` first is silent.
                if !self.announced {
                    seen.silent_gaps += 1;
                    seen.silent_at.push((epoch.clone(), self.last, seq));
                }
                self.last = 0;
                self.announced = false;
            }
        }
        if epoch.is_some() {
            self.epoch = epoch;
        }
        if seq <= self.last {
            if seq == self.last || seen.events.iter().any(|e| e.0 == self.epoch && e.1 == seq) {
                seen.duplicates += 1;
            } else {
                seen.out_of_order += 1;
            }
            return;
        }
        if seq > self.last + 1 {
            if self.announced {
                self.announced = false;
            } else if self.last > 0 {
                seen.silent_gaps += 1;
                seen.silent_at.push((self.epoch.clone(), self.last, seq));
            }
        }
        self.last = seq;
        seen.events.push((self.epoch.clone(), seq, pid));
    }

    fn joined(&mut self, seen: &mut Seen, frame: &Value) {
        seen.told.push(format!("at {} {frame}", self.last));
        let epoch = frame["epoch"].as_str().map(str::to_owned);
        if frame["recovered"] == false {
            seen.gaps_reported += 1;
            self.announced = true;
        }
        if epoch != self.epoch {
            if self.epoch.is_none() && frame["recovered"] != false {
                // The first epoch this client learns of: its events so far were in it.
                for e in seen.events.iter_mut().filter(|e| e.0.is_none()) {
                    e.0 = epoch.clone();
                }
            } else {
                self.last = 0;
            }
            self.epoch = epoch;
        }
    }

    fn resync(&mut self, seen: &mut Seen, frame: &Value) {
        seen.told.push(format!("at {} {frame}", self.last));
        seen.gaps_reported += 1;
        self.announced = true;
        self.epoch = frame["epoch"].as_str().map(str::to_owned);
        self.last = frame["seq"].as_u64().unwrap_or(0);
    }
}

fn pid_of(event: &Value) -> String {
    event["data"]["pid"].as_str().unwrap_or_default().to_owned()
}

/// A WebSocket subscriber of node `node`: joins, reads, answers pings, and reconnects with
/// its last position until `stop`.
async fn ws_subscriber(
    ports: Ports,
    node: usize,
    seen: Rc<RefCell<Seen>>,
    stop: Rc<RefCell<bool>>,
) {
    let room = seen.borrow().room.clone();
    let mut cursor = Cursor {
        epoch: None,
        last: 0,
        announced: false,
    };
    let mut first = true;
    while !*stop.borrow() {
        let port = ports.borrow()[node];
        let url = format!("ws://127.0.0.1:{port}/ws/json?name=s{node}");
        let Ok((_, mut framed)) = awc::Client::new().ws(url).connect().await else {
            actix_rt::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        let mut join = json!({"type": "join", "room": room});
        if !first {
            join["since"] = cursor.last.into();
            if let Some(e) = &cursor.epoch {
                join["epoch"] = e.clone().into();
            }
        }
        first = false;
        if framed
            .send(awc::ws::Message::Text(join.to_string().into()))
            .await
            .is_err()
        {
            continue;
        }
        loop {
            let frame = match actix_rt::time::timeout(SILENCE, framed.next()).await {
                Ok(Some(Ok(f))) => f,
                _ => break,
            };
            match frame {
                awc::ws::Frame::Ping(p) => {
                    let _ = framed.send(awc::ws::Message::Pong(p)).await;
                }
                awc::ws::Frame::Text(t) => {
                    let v: Value = serde_json::from_slice(&t).unwrap_or(Value::Null);
                    let mut seen = seen.borrow_mut();
                    match v["type"].as_str() {
                        Some("joined") => cursor.joined(&mut seen, &v),
                        Some("resync") => cursor.resync(&mut seen, &v),
                        Some("event") => {
                            cursor.event(&mut seen, None, v["seq"].as_u64().unwrap(), pid_of(&v))
                        }
                        _ => {}
                    }
                }
                awc::ws::Frame::Close(_) => break,
                _ => {}
            }
            if *stop.borrow() {
                return;
            }
        }
        actix_rt::time::sleep(RECONNECT_AFTER).await;
    }
}

/// An SSE subscriber of node `node`, reconnecting with `Last-Event-ID` as EventSource does.
async fn sse_subscriber(
    ports: Ports,
    node: usize,
    seen: Rc<RefCell<Seen>>,
    stop: Rc<RefCell<bool>>,
) {
    let room = seen.borrow().room.clone();
    let mut cursor = Cursor {
        epoch: None,
        last: 0,
        announced: false,
    };
    let mut last_id: Option<String> = None;
    while !*stop.borrow() {
        let port = ports.borrow()[node];
        let mut req = awc::Client::builder()
            .timeout(Duration::from_secs(3600))
            .finish()
            .get(format!("http://127.0.0.1:{port}/rooms/{room}/events"));
        if let Some(id) = &last_id {
            req = req.insert_header(("Last-Event-ID", id.clone()));
        }
        let Ok(mut res) = req.send().await else {
            actix_rt::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        if res.status() != 200 {
            actix_rt::time::sleep(RECONNECT_AFTER).await;
            continue;
        }
        let mut buf = String::new();
        loop {
            let chunk = match actix_rt::time::timeout(SILENCE, res.next()).await {
                Ok(Some(Ok(c))) => c,
                _ => break,
            };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                let mut seen = seen.borrow_mut();
                match event.as_deref() {
                    Some("joined") => cursor.joined(&mut seen, &v),
                    Some("resync") => cursor.resync(&mut seen, &v),
                    Some("message") => {
                        let (epoch, seq) =
                            courier::routes::sse::parse_event_id(id.as_deref().unwrap_or(""))
                                .expect("an event id");
                        cursor.event(&mut seen, epoch, seq, pid_of(&v));
                        last_id = id;
                    }
                    _ => {}
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        actix_rt::time::sleep(RECONNECT_AFTER).await;
    }
}

/// A publisher on node `node`: publishes with ids to every room in turn, retrying a
/// refused or unanswered publish with the same id until it is acknowledged.
async fn publisher(
    ports: Ports,
    node: usize,
    acked: Rc<RefCell<HashMap<String, String>>>,
    tally: Rc<RefCell<Tally>>,
    until: Instant,
) {
    let token = courier::auth::mint(&test_secret(), &format!("pub{node}"), 3600).unwrap();
    let mut n = 0usize;
    let mut pending: Option<(String, String)> = None; // (pid, room)
    let mut attempts = 0;
    'connect: while Instant::now() < until || pending.is_some() {
        let port = ports.borrow()[node];
        let url = format!("ws://127.0.0.1:{port}/ws/json?token={token}");
        let Ok((_, mut framed)) = awc::Client::new().ws(url).connect().await else {
            actix_rt::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        loop {
            if pending.is_none() {
                if Instant::now() >= until {
                    return;
                }
                let pid = format!("n{node}-{n}");
                pending = Some((pid, room(n % ROOMS)));
                n += 1;
                attempts = 0;
                tally.borrow_mut().published += 1;
            }
            let (pid, room) = pending.clone().unwrap();
            if attempts >= 50 {
                tally.borrow_mut().refused += 1;
                pending = None;
                continue;
            }
            attempts += 1;
            let msg = json!({"type": "publish", "room": room, "data": {"pid": pid}, "id": pid});
            if framed
                .send(awc::ws::Message::Text(msg.to_string().into()))
                .await
                .is_err()
            {
                continue 'connect;
            }
            // Wait for this publish's ack or error.
            loop {
                let frame = match actix_rt::time::timeout(SILENCE, framed.next()).await {
                    Ok(Some(Ok(f))) => f,
                    _ => {
                        actix_rt::time::sleep(RECONNECT_AFTER).await;
                        continue 'connect;
                    }
                };
                match frame {
                    awc::ws::Frame::Ping(p) => {
                        let _ = framed.send(awc::ws::Message::Pong(p)).await;
                    }
                    awc::ws::Frame::Text(t) => {
                        let v: Value = serde_json::from_slice(&t).unwrap_or(Value::Null);
                        if v["type"] == "ack" && v["id"] == pid.as_str() {
                            acked.borrow_mut().insert(pid.clone(), room.clone());
                            tally.borrow_mut().acked += 1;
                            pending = None;
                            break;
                        }
                        if v["type"] == "error" {
                            actix_rt::time::sleep(RECONNECT_AFTER).await;
                            break; // retried with the same id
                        }
                    }
                    awc::ws::Frame::Close(_) => {
                        actix_rt::time::sleep(RECONNECT_AFTER).await;
                        continue 'connect;
                    }
                    _ => {}
                }
            }
            actix_rt::time::sleep(PUBLISH_EVERY).await;
        }
    }
}

fn start_node(dir: &std::path::Path, url: &str, name: &str, cluster: bool) -> ServerProcess {
    let data = dir.display().to_string();
    start_server_process(
        dir,
        &[
            ("APP_ENV", "test"),
            ("APP_DATA_DIR", data.as_str()),
            ("REDIS_URL", url),
            ("REDIS_CLUSTER", if cluster { "true" } else { "false" }),
            ("APP_NAME", name),
            ("LOG_LEVEL", "info,courier_actors::room_broker=debug"),
        ],
    )
}

/// What chaos does to Redis.
enum Target {
    One(OwnRedis),
    Cluster(OwnCluster),
}

impl Target {
    fn url(&self) -> String {
        match self {
            Self::One(r) => r.url(),
            Self::Cluster(c) => c.url(),
        }
    }

    /// `CLIENT PAUSE` for 3 s on every Redis that takes commands.
    fn pause(&self) {
        match self {
            Self::One(r) => {
                redis_cli(r.port, &["client", "pause", "3000"]);
            }
            Self::Cluster(c) => {
                c.on_masters(&["client", "pause", "3000"]);
            }
        }
    }

    /// Restarts Redis: the one server (losing everything, as without persistence), or a
    /// cluster master (its replica takes over; the old master rejoins as a replica).
    fn restart(&mut self) {
        match self {
            Self::One(r) => {
                let port = r.port;
                r.stop();
                *r = OwnRedis::start(port).expect("redis restarts");
            }
            Self::Cluster(c) => {
                let master = c
                    .nodes
                    .iter()
                    .position(|n| redis_cli(n.port, &["role"]).starts_with("master"))
                    .expect("a master");
                c.restart_node(master);
            }
        }
    }
}

async fn run_chaos(mut target: Target, cluster: bool) {
    let secs = std::env::var("COURIER_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CHAOS_SECS);
    let name = format!("courier-chaos-{:08x}", rand::random::<u32>());
    let url = target.url();
    let dirs: Vec<tempfile::TempDir> = (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<ServerProcess> = dirs
        .iter()
        .map(|d| start_node(d.path(), &url, &name, cluster))
        .collect();
    let ports: Ports = Rc::new(RefCell::new(nodes.iter().map(|n| n.port).collect()));
    let stop = Rc::new(RefCell::new(false));
    let acked = Rc::new(RefCell::new(HashMap::new()));
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mut seen_all = Vec::new();
    let mut tasks = Vec::new();
    for node in 0..NODES {
        for i in 0..WS_PER_NODE + SSE_PER_NODE {
            let seen = Rc::new(RefCell::new(Seen {
                room: room(i % ROOMS),
                who: format!(
                    "node {node} {} {i}",
                    if i < WS_PER_NODE { "ws" } else { "sse" }
                ),
                ..Seen::default()
            }));
            seen_all.push(seen.clone());
            let (p, s) = (ports.clone(), stop.clone());
            tasks.push(if i < WS_PER_NODE {
                actix_rt::spawn(ws_subscriber(p, node, seen, s))
            } else {
                actix_rt::spawn(sse_subscriber(p, node, seen, s))
            });
        }
    }
    // Let every subscriber join before publishing starts.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut publishers = Vec::new();
    for node in 0..NODES {
        publishers.push(actix_rt::spawn(publisher(
            ports.clone(),
            node,
            acked.clone(),
            tally.clone(),
            until,
        )));
    }
    // The chaos, spread over the run.
    let at = |fraction: f64| start + Duration::from_secs_f64(secs as f64 * fraction);
    actix_rt::time::sleep_until(at(0.15).into()).await;
    let killed = 1;
    let _ = nodes[killed].child.kill();
    let _ = nodes[killed].child.wait();
    actix_rt::time::sleep_until(at(0.30).into()).await;
    nodes[killed] = start_node(dirs[killed].path(), &url, &name, cluster);
    ports.borrow_mut()[killed] = nodes[killed].port;
    actix_rt::time::sleep_until(at(0.45).into()).await;
    target.pause();
    actix_rt::time::sleep_until(at(0.70).into()).await;
    target.restart();
    for p in publishers {
        let _ = p.await;
    }

    // Drain: every subscriber of a room has every acknowledged event of it (or was told
    // it may have missed some), or the limit passes.
    let drain_until = Instant::now() + DRAIN_LIMIT;
    let complete = || {
        let acked = acked.borrow();
        seen_all.iter().all(|s| {
            let s = s.borrow();
            let got: HashSet<&str> = s.events.iter().map(|e| e.2.as_str()).collect();
            s.gaps_reported > 0
                || acked
                    .iter()
                    .filter(|(_, r)| **r == s.room)
                    .all(|(pid, _)| got.contains(pid.as_str()))
        })
    };
    while !complete() && Instant::now() < drain_until {
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    *stop.borrow_mut() = true;
    for t in tasks {
        t.abort();
    }

    // The checks.
    let acked = acked.borrow();
    let tally = tally.borrow();
    let mut numbering: BTreeMap<(String, Option<String>, u64), String> = BTreeMap::new();
    let (mut delivered, mut duplicates, mut silent, mut reported, mut missing_silently) =
        (0, 0, 0, 0, 0);
    let mut conflicts = Vec::new();
    let mut out_of_order = 0;
    for s in &seen_all {
        let s = s.borrow();
        delivered += s.events.len();
        if !s.silent_at.is_empty() {
            println!(
                "  {} in {}: silent gaps at {:?}; told {:?}",
                s.who, s.room, s.silent_at, s.told
            );
        }
        duplicates += s.duplicates;
        silent += s.silent_gaps;
        reported += s.gaps_reported;
        out_of_order += s.out_of_order;
        for (epoch, seq, pid) in &s.events {
            let key = (s.room.clone(), epoch.clone(), *seq);
            match numbering.get(&key) {
                Some(other) if other != pid => {
                    conflicts.push(format!("{key:?}: {other} and {pid}"))
                }
                _ => {
                    numbering.insert(key, pid.clone());
                }
            }
        }
        let got: HashSet<&str> = s.events.iter().map(|e| e.2.as_str()).collect();
        // One event, once: not even in two epochs.
        if s.events.len() > got.len() {
            duplicates += s.events.len() - got.len();
            let mut count: HashMap<&str, Vec<(Option<String>, u64)>> = HashMap::new();
            for (e, seq, pid) in &s.events {
                count.entry(pid).or_default().push((e.clone(), *seq));
            }
            let twice: Vec<_> = count.iter().filter(|(_, v)| v.len() > 1).take(3).collect();
            println!("  {} in {}: received twice {twice:?}", s.who, s.room);
        }
        let missed = acked
            .iter()
            .filter(|(pid, room)| **room == s.room && !got.contains(pid.as_str()))
            .count();
        if missed > 0 && s.gaps_reported == 0 {
            missing_silently += missed;
            let last = s.events.last().map(|e| (e.0.clone(), e.1));
            println!(
                "  {} in {}: {missed} acked events missing, last {last:?}",
                s.who, s.room
            );
        }
    }
    println!(
        "chaos ({}; {secs} s): published {}, acked {}, refused {}, delivered {delivered}, \
         duplicates {duplicates}, out of order {out_of_order}, conflicting numbers {}, \
         silent gaps {silent}, acked events missed silently {missing_silently}, gaps reported {reported}",
        if cluster { "Redis Cluster" } else { "one Redis" },
        tally.published,
        tally.acked,
        tally.refused,
        conflicts.len()
    );
    if missing_silently > 0 || silent > 0 {
        for (i, node) in nodes.iter().enumerate() {
            for line in node.log.try_iter().filter(|l| {
                (l.contains("bus") || l.contains("room=")) && !l.contains("courier::access")
            }) {
                println!("  node {i}: {line}");
            }
        }
    }
    assert!(tally.acked > 0, "events were acknowledged");
    assert_eq!(duplicates, 0, "no event twice");
    assert_eq!(out_of_order, 0, "in seq order");
    assert!(conflicts.is_empty(), "one event per number: {conflicts:?}");
    assert_eq!(silent, 0, "no silent gap");
    assert_eq!(missing_silently, 0, "no acknowledged event missed silently");
}

#[actix_rt::test]
async fn chaos_on_one_redis() {
    let Some(redis) = OwnRedis::start(closed_port()) else {
        return;
    };
    run_chaos(Target::One(redis), false).await;
}

#[actix_rt::test]
async fn chaos_on_a_redis_cluster() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    run_chaos(Target::Cluster(cluster), true).await;
}
