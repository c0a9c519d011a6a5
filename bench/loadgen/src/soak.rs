//! `soak`: many clients in many rooms for a long time, steady publishing, and a share of the
//! clients leaving and coming back every period with `since`. Every client checks its own
//! stream: no duplicate, no gap it was not told about (`recovered: false` / `resync`), and at
//! the end it has its room's last acknowledged event.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server WebSocket base URL.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub url: String,
    /// Endpoint path (the JSON protocol).
    #[arg(long, default_value = "/ws/json")]
    pub path: String,
    /// Clients, each in one room.
    #[arg(long, default_value_t = 10_000)]
    pub clients: u64,
    /// Rooms (client i is in room i % rooms).
    #[arg(long, default_value_t = 1_000)]
    pub rooms: u64,
    /// Messages per second published, in all.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Publishing connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: u64,
    /// Seconds of the run.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// Seconds between two rounds of leaving and coming back.
    #[arg(long, default_value_t = 60.0)]
    pub churn_every: f64,
    /// Share of the clients that leave and come back each round, in percent.
    #[arg(long, default_value_t = 10)]
    pub churn_percent: u64,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 200)]
    pub concurrency: u64,
    /// Seconds one connect attempt may take.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds to wait for the last events after publishing stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
}

impl Args {
    pub fn validate(&mut self) -> Result<(), String> {
        self.url = check_ws_url(&self.url)?;
        if self.clients == 0 || self.rooms == 0 || self.publishers == 0 {
            return Err("--clients, --rooms and --publishers must be positive".into());
        }
        if !(self.rate > 0.0 && self.duration > 0.0 && self.churn_every > 0.0) {
            return Err("--rate, --duration and --churn-every must be positive".into());
        }
        if self.churn_percent > 100 {
            return Err("--churn-percent is at most 100".into());
        }
        Ok(())
    }

    pub fn fds_needed(&self) -> u64 {
        self.clients + self.publishers + 64
    }
}

#[derive(Default)]
struct Totals {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    silent_gaps: AtomicU64,
    told_gaps: AtomicU64,
    reconnects: AtomicU64,
    failed_connects: AtomicU64,
    published: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
}

/// What one client has of its room.
#[derive(Default, Clone)]
struct Have {
    seq: Option<u64>,
    epoch: Option<String>,
    /// The server said events may be missing: the next jump is not silent.
    told: bool,
}

/// Each client's room and the last seq it had when it stopped.
type Finals = Arc<Mutex<Vec<(u64, Option<u64>)>>>;

fn room_name(r: u64) -> String {
    format!("soak-{r}")
}

/// Whether client `i` leaves in churn round `round`.
fn churns(i: u64, round: u64, percent: u64) -> bool {
    (i.wrapping_mul(7919)
        .wrapping_add(round.wrapping_mul(104_729)))
        % 100
        < percent
}

/// One connection's life: join with what it has, read until told to churn (or stop).
/// Returns true when it was told to stop.
async fn session(
    a: &Args,
    i: u64,
    have: &mut Have,
    totals: &Totals,
    round: &mut watch::Receiver<u64>,
    state: &mut watch::Receiver<u8>,
    sem: &Semaphore,
) -> Result<bool, String> {
    let url = ws_url(&a.url, &a.path, &format!("s{i}"));
    let mut ws = {
        let _permit = sem.acquire().await;
        connect_ws(&url, ws_config(4096), false, 3, secs(a.connect_timeout)).await?
    };
    let mut join = json!({"type": "join", "room": room_name(i % a.rooms)});
    if let Some(seq) = have.seq {
        join["since"] = seq.into();
        if let Some(epoch) = &have.epoch {
            join["epoch"] = epoch.clone().into();
        }
    }
    ws.send(Message::text(join.to_string()))
        .await
        .map_err(|e| describe_ws(&e))?;
    let start_round = *round.borrow();
    loop {
        tokio::select! {
            biased;
            _ = reached(state, STOP_ALL) => {
                close_ws(ws).await;
                return Ok(true);
            }
            changed = round.changed() => {
                if changed.is_ok() {
                    let r = *round.borrow();
                    if r != start_round && churns(i, r, a.churn_percent) {
                        close_ws(ws).await;
                        return Ok(false);
                    }
                }
            }
            frame = ws.next() => {
                let Some(Ok(Message::Text(t))) = frame else {
                    match frame {
                        Some(Ok(_)) => continue,
                        _ => return Err("connection lost".into()),
                    }
                };
                let b = t.as_bytes();
                match str_field(b, b"\"type\"") {
                    Some(b"event") => {
                        let Some(seq) = uint_field(b, b"\"seq\"") else { continue };
                        totals.delivered.fetch_add(1, Relaxed);
                        match have.seq {
                            Some(last) if seq <= last => {
                                totals.duplicates.fetch_add(1, Relaxed);
                            }
                            Some(last) if seq != last + 1 => {
                                if !have.told {
                                    totals.silent_gaps.fetch_add(1, Relaxed);
                                }
                                have.told = false;
                                have.seq = Some(seq);
                            }
                            _ => have.seq = Some(seq),
                        }
                    }
                    Some(kind @ (b"joined" | b"resync")) => {
                        let v: Value = serde_json::from_slice(b).unwrap_or(Value::Null);
                        let seq = v["seq"].as_u64().unwrap_or(0);
                        let epoch = v["epoch"].as_str().map(str::to_owned);
                        let renumbered = have.epoch.is_some() && epoch.is_some() && have.epoch != epoch;
                        if v["recovered"] == false {
                            totals.told_gaps.fetch_add(1, Relaxed);
                            have.told = true;
                            // Nothing is replayed from another numbering, nor after a resync.
                            if renumbered || kind == b"resync" || have.seq.is_some_and(|s| s > seq) {
                                have.seq = Some(seq);
                            }
                        } else if have.seq.is_none() {
                            have.seq = Some(seq);
                        }
                        have.epoch = epoch;
                    }
                    _ => {}
                }
            }
        }
    }
}

async fn client(
    a: Arc<Args>,
    i: u64,
    totals: Arc<Totals>,
    mut round: watch::Receiver<u64>,
    mut state: watch::Receiver<u8>,
    sem: Arc<Semaphore>,
    finals: Finals,
) {
    let mut have = Have::default();
    let mut first = true;
    loop {
        if !first {
            totals.reconnects.fetch_add(1, Relaxed);
        }
        first = false;
        match session(&a, i, &mut have, &totals, &mut round, &mut state, &sem).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(_) => {
                totals.failed_connects.fetch_add(1, Relaxed);
                if *state.borrow() >= STOP_ALL {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    finals.lock().unwrap().push((i % a.rooms, have.seq));
}

async fn publisher(
    a: Arc<Args>,
    p: u64,
    totals: Arc<Totals>,
    heads: Arc<Vec<AtomicU64>>,
    mut state: watch::Receiver<u8>,
) {
    let url = ws_url(&a.url, &a.path, &format!("pub{p}"));
    let Ok(ws) = connect_ws(&url, ws_config(64 * 1024), true, 3, secs(a.connect_timeout)).await
    else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let pending: Arc<Mutex<std::collections::HashMap<u64, u64>>> = Arc::default();
    let (t2, p2, h2) = (totals.clone(), pending.clone(), heads.clone());
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            let Message::Text(t) = m else { continue };
            let b = t.as_bytes();
            match str_field(b, b"\"type\"") {
                Some(b"ack") => {
                    t2.acked.fetch_add(1, Relaxed);
                    let id = str_field(b, b"\"id\"")
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .and_then(|s| s.rsplit('-').next())
                        .and_then(|s| s.parse::<u64>().ok());
                    let seq = uint_field(b, b"\"seq\"");
                    if let (Some(id), Some(seq)) = (id, seq) {
                        if let Some(room) = p2.lock().unwrap().remove(&id) {
                            h2[room as usize].fetch_max(seq, Relaxed);
                        }
                    }
                }
                Some(b"error") => {
                    t2.refused.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
    });
    let per = a.rate / a.publishers as f64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0u64;
    while *state.borrow() < STOP_PUBLISHING {
        tokio::select! {
            _ = tick.tick() => {}
            _ = reached(&mut state, STOP_PUBLISHING) => break,
        }
        let room = (p + n.wrapping_mul(7919)) % a.rooms;
        pending.lock().unwrap().insert(n, room);
        let msg = json!({
            "type": "publish",
            "room": room_name(room),
            "data": {"n": n},
            "id": format!("pub{p}-{n}"),
        });
        if sink.send(Message::text(msg.to_string())).await.is_err() {
            break;
        }
        totals.published.fetch_add(1, Relaxed);
        n += 1;
    }
    // Acks still on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
}

pub async fn run(a: Args) {
    let a = Arc::new(a);
    let totals = Arc::new(Totals::default());
    let heads: Arc<Vec<AtomicU64>> = Arc::new((0..a.rooms).map(|_| AtomicU64::new(0)).collect());
    let (state_tx, state_rx) = watch::channel(RUNNING);
    let (round_tx, round_rx) = watch::channel(0u64);
    let sem = Arc::new(Semaphore::new(a.concurrency as usize));
    let finals: Finals = Arc::default();
    println!(
        "soak: {} clients in {} rooms, {} msg/s, {} s, {}% leave and come back every {} s",
        a.clients, a.rooms, a.rate, a.duration, a.churn_percent, a.churn_every
    );
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..a.clients {
        clients.push(tokio::spawn(client(
            a.clone(),
            i,
            totals.clone(),
            round_rx.clone(),
            state_rx.clone(),
            sem.clone(),
            finals.clone(),
        )));
    }
    let pubs: Vec<_> = (0..a.publishers)
        .map(|p| {
            tokio::spawn(publisher(
                a.clone(),
                p,
                totals.clone(),
                heads.clone(),
                state_rx.clone(),
            ))
        })
        .collect();
    let end = started + secs(a.duration);
    let mut next_churn = started + secs(a.churn_every);
    let mut round = 0u64;
    while Instant::now() < end {
        tokio::time::sleep_until(next_churn.min(end).into()).await;
        if Instant::now() >= next_churn && Instant::now() < end {
            round += 1;
            let _ = round_tx.send(round);
            next_churn += secs(a.churn_every);
        }
        println!(
            "  {:>5.0} s  published {}  acked {}  delivered {}  reconnects {}  duplicates {}  silent gaps {}",
            started.elapsed().as_secs_f64(),
            totals.published.load(Relaxed),
            totals.acked.load(Relaxed),
            totals.delivered.load(Relaxed),
            totals.reconnects.load(Relaxed),
            totals.duplicates.load(Relaxed),
            totals.silent_gaps.load(Relaxed),
        );
    }
    let _ = state_tx.send(STOP_PUBLISHING);
    for p in pubs {
        let _ = p.await;
    }
    // Drain: until deliveries stop growing or the limit passes.
    let drain_until = Instant::now() + secs(a.drain);
    let mut last = u64::MAX;
    while Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = totals.delivered.load(Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let _ = state_tx.send(STOP_ALL);
    finish(clients, Duration::from_secs(30)).await;

    // Every client should end with its room's last acknowledged event.
    let finals = finals.lock().unwrap();
    let mut behind = 0u64;
    let mut missing = 0u64;
    for (room, seq) in finals.iter() {
        let head = heads[*room as usize].load(Relaxed);
        let have = seq.unwrap_or(0);
        if have < head {
            behind += 1;
            missing += head - have;
        }
    }
    let t = &totals;
    println!(
        "  published          {} ({} acked, {} refused)",
        t.published.load(Relaxed),
        t.acked.load(Relaxed),
        t.refused.load(Relaxed)
    );
    println!(
        "  delivered          {}; reconnects {} ({} failed connects)",
        t.delivered.load(Relaxed),
        t.reconnects.load(Relaxed),
        t.failed_connects.load(Relaxed)
    );
    println!(
        "  checks             duplicates {}, silent gaps {}, gaps reported {}, clients behind their room at the end {} ({} events)",
        t.duplicates.load(Relaxed),
        t.silent_gaps.load(Relaxed),
        t.told_gaps.load(Relaxed),
        behind,
        missing
    );
    let result = json!({
        "mode": "soak",
        "clients": a.clients,
        "rooms": a.rooms,
        "rate": a.rate,
        "duration": a.duration,
        "published": t.published.load(Relaxed),
        "acked": t.acked.load(Relaxed),
        "refused": t.refused.load(Relaxed),
        "delivered": t.delivered.load(Relaxed),
        "reconnects": t.reconnects.load(Relaxed),
        "failed_connects": t.failed_connects.load(Relaxed),
        "duplicates": t.duplicates.load(Relaxed),
        "silent_gaps": t.silent_gaps.load(Relaxed),
        "gaps_reported": t.told_gaps.load(Relaxed),
        "clients_behind": behind,
        "events_missing": missing,
    });
    println!("RESULT {result}");
}
