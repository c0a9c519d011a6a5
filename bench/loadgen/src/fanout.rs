//! `fanout`: C receivers join one room, P publishers publish into it at an aggregate rate,
//! and every delivery is counted and timed.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server base URL (ws://HOST:PORT); a URL with a path is used as it is.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub url: String,
    /// Endpoint path appended to --url.
    #[arg(long, default_value = "/ws/json")]
    pub path: String,
    /// Receiver connections; each joins the room.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub clients: u64,
    /// Aggregate publish rate, messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Size in bytes of each published `data` object as serialized JSON.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(32..=1_000_000))]
    pub size: u64,
    /// Publishing time in seconds (warm-up included).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publisher connections [default: ceil(rate / --per-publisher-rate)].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub publishers: Option<u64>,
    /// Rate per publisher connection used to choose the default number of publishers.
    #[arg(long, default_value_t = 150.0)]
    pub per_publisher_rate: f64,
    /// Room to join and publish into.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Seconds at the start of publishing whose messages are left out of the latency figures
    /// (they still count for delivery and loss). Ignored when not below --duration.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Longest wait, after publishing ends, for outstanding deliveries and acks (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Retries of a failed connect (or join).
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Limit for one connect attempt, and separately for its join (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Longest wait after all receivers joined for the receivers to go quiet (no message for
    /// 0.5 s, e.g. once the `member_joined` notices of the join phase are delivered), before
    /// publishing starts (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub settle: f64,
}

impl Args {
    pub fn validate(&mut self) -> Result<(), String> {
        self.url = check_ws_url(&self.url)?;
        let positive = [
            ("--rate", self.rate),
            ("--duration", self.duration),
            ("--per-publisher-rate", self.per_publisher_rate),
            ("--connect-timeout", self.connect_timeout),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        for (name, v) in [
            ("--warmup", self.warmup),
            ("--drain", self.drain),
            ("--settle", self.settle),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be zero or more"));
            }
        }
        if self.duration > 86_400.0 {
            return Err("--duration must be at most 86400".into());
        }
        if self.total_messages() == 0 {
            return Err("--rate x --duration rounds to zero messages".into());
        }
        if self.room.is_empty() {
            return Err("--room must not be empty".into());
        }
        Ok(())
    }

    fn total_messages(&self) -> u64 {
        (self.rate * self.duration).round() as u64
    }

    pub fn publisher_count(&self) -> u64 {
        self.publishers
            .unwrap_or_else(|| (self.rate / self.per_publisher_rate).ceil() as u64)
            .clamp(1, self.total_messages().max(1))
    }

    pub fn fds_needed(&self) -> u64 {
        self.clients + self.publisher_count() + 64
    }
}

/// Receiver read buffer. tungstenite zero-fills this much before every socket read, so it
/// is kept small; it still holds about fifteen 250-byte events.
const RECV_BUFFER: usize = 4 * 1024;
const SHARDS: usize = 16;
const BATCH: usize = 256;
/// Latencies above this (60 s, in µs) are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

struct Shared {
    state: watch::Sender<u8>,
    /// Events whose `t` is below this are not timed.
    measure_from_us: AtomicU64,
    hist: Vec<Mutex<Histogram<u64>>>,
    unparsed_events: AtomicU64,
    recv_errors: Tally,
    recv_disconnects: Disconnects,
    published: AtomicU64,
    acks: AtomicU64,
    /// Error replies on publisher connections (a rejected publish gets one instead of an ack).
    pub_error_replies: AtomicU64,
    publishers_done: AtomicUsize,
    last_publish_us: AtomicU64,
    pub_errors: Tally,
    pub_disconnects: Disconnects,
}

#[derive(Default)]
struct Slot {
    received: AtomicU64,
    /// Messages other than events and errors (`member_joined`, `pong`, ...).
    other: AtomicU64,
    gone: AtomicBool,
}

/// What a message is, read with byte scans.
enum Kind<'a> {
    Event(Option<u64>),
    Joined,
    Ack,
    Error(&'a [u8]),
    Other,
}

fn classify(m: &[u8]) -> Kind<'_> {
    match str_field(m, b"\"type\"") {
        Some(b"event") => Kind::Event(uint_field(m, b"\"t\"")),
        Some(b"ack") => Kind::Ack,
        Some(b"joined") => Kind::Joined,
        Some(b"error") => Kind::Error(str_field(m, b"\"code\"").unwrap_or(b"(no code)")),
        _ => Kind::Other,
    }
}

fn bytes_of(m: &Message) -> Option<&[u8]> {
    match m {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

/// The publish message: `data` is `{"t":T,"p":"xxx…"}` padded to exactly `size` bytes
/// (or as short as it can be when `size` is too small).
pub fn publish_message(room_json: &str, publisher: u64, n: u64, size: usize, t: u64) -> String {
    let digits = t.checked_ilog10().map_or(1, |d| d as usize + 1);
    let pad = size.saturating_sub(13 + digits);
    let mut s = String::with_capacity(size + room_json.len() + 64);
    let _ = write!(
        s,
        r#"{{"type":"publish","room":{room_json},"data":{{"t":{t},"p":""#
    );
    s.extend(std::iter::repeat_n('x', pad));
    let _ = write!(s, r#""}},"id":"p{publisher}-{n}"}}"#);
    s
}

async fn connect_and_join(url: &str, join: &str, a: &Args) -> Result<Ws, String> {
    let limit = secs(a.connect_timeout);
    retry(a.retries, || async {
        let mut ws = connect_ws(url, ws_config(RECV_BUFFER), false, 0, limit).await?;
        ws.send(Message::text(join))
            .await
            .map_err(|e| format!("join send: {}", describe_ws(&e)))?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Err("join timed out".to_string()),
                Ok(None) => return Err("closed before joined".into()),
                Ok(Some(Err(e))) => return Err(format!("before joined: {}", describe_ws(&e))),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Err(format!(
                        "closed before joined: {}",
                        f.map_or("no code".into(), |f| u16::from(f.code).to_string())
                    ))
                }
                Ok(Some(Ok(m))) => m,
            };
            if let Some(b) = bytes_of(&m) {
                match classify(b) {
                    Kind::Joined => return Ok(ws),
                    Kind::Error(code) => return Err(format!("join error {}", lossy(code))),
                    _ => {}
                }
            }
        }
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn receiver(
    idx: usize,
    url: String,
    join: Arc<str>,
    a: Arc<Args>,
    sh: Arc<Shared>,
    slot: Arc<Slot>,
    sem: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<(usize, Result<(), String>)>,
    stop: oneshot::Receiver<()>,
) {
    let joined = {
        let _permit = sem.acquire().await;
        connect_and_join(&url, &join, &a).await
    };
    let mut ws = match joined {
        Ok(ws) => {
            let _ = ready.send((idx, Ok(())));
            ws
        }
        Err(e) => {
            slot.gone.store(true, Relaxed);
            let _ = ready.send((idx, Err(e)));
            return;
        }
    };
    drop(ready);

    let shard = &sh.hist[idx % SHARDS];
    let mut batch: Vec<u64> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<u64>| {
        if !batch.is_empty() {
            let mut h = shard.lock().unwrap();
            for &v in batch.iter() {
                h.saturating_record(v.clamp(1, MAX_LATENCY_US));
            }
            batch.clear();
        }
    };
    let mut received = 0u64;
    let mut other = 0u64;
    let mut stopped = false;
    // A per-receiver oneshot rather than the shared watch: polling it is one atomic load, with
    // no shared lock taken per message.
    let mut stop = stop;
    loop {
        let item = tokio::select! {
            biased;
            _ = &mut stop => { stopped = true; break }
            item = ws.next() => item,
        };
        let msg = match item {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                sh.recv_disconnects.ended(&describe_ws(&e));
                break;
            }
            None => {
                sh.recv_disconnects.ended("stream ended");
                break;
            }
        };
        if let Message::Close(f) = &msg {
            sh.recv_disconnects.close_frame(f.as_ref());
            break;
        }
        let Some(b) = bytes_of(&msg) else { continue };
        match classify(b) {
            Kind::Event(t) => {
                received += 1;
                slot.received.store(received, Relaxed);
                match t {
                    Some(t) if t >= sh.measure_from_us.load(Relaxed) => {
                        batch.push(now_us().saturating_sub(t));
                        if batch.len() == BATCH {
                            flush(&mut batch);
                        }
                    }
                    Some(_) => {}
                    None => {
                        sh.unparsed_events.fetch_add(1, Relaxed);
                    }
                }
            }
            Kind::Error(code) => sh.recv_errors.add(lossy(code)),
            _ => {
                other += 1;
                slot.other.store(other, Relaxed);
            }
        }
    }
    flush(&mut batch);
    if stopped {
        close_ws(ws).await;
    } else {
        slot.gone.store(true, Relaxed);
    }
}

struct PubPlan {
    index: u64,
    count: u64,
    first_tick: Instant,
    period: Duration,
    size: usize,
    room_json: Arc<str>,
}

async fn publisher(ws: Ws, plan: PubPlan, sh: Arc<Shared>) {
    let (mut sink, mut stream) = ws.split();
    let mut state_w = sh.state.subscribe();
    let mut state_r = sh.state.subscribe();
    let writer = async {
        let mut iv = tokio::time::interval_at(plan.first_tick.into(), plan.period);
        iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
        for n in 0..plan.count {
            tokio::select! {
                biased;
                _ = reached(&mut state_w, STOP_PUBLISHING) => break,
                _ = iv.tick() => {}
            }
            let text = publish_message(&plan.room_json, plan.index, n, plan.size, now_us());
            match timeout(Duration::from_secs(5), sink.send(Message::text(text))).await {
                Ok(Ok(())) => {
                    sh.published.fetch_add(1, Relaxed);
                    sh.last_publish_us.fetch_max(now_us(), Relaxed);
                }
                Ok(Err(e)) => {
                    sh.pub_errors.add(format!("send: {}", describe_ws(&e)));
                    break;
                }
                Err(_) => {
                    sh.pub_errors.add("send timed out");
                    break;
                }
            }
        }
        sh.publishers_done.fetch_add(1, Relaxed);
        reached(&mut state_w, STOP_ALL).await;
        let _ = timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
    };
    let reader = async {
        loop {
            let item = tokio::select! {
                biased;
                _ = reached(&mut state_r, STOP_ALL) => break,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(Message::Close(f))) => {
                    sh.pub_disconnects.close_frame(f.as_ref());
                    break;
                }
                Some(Ok(m)) => {
                    if let Some(b) = bytes_of(&m) {
                        match classify(b) {
                            Kind::Ack => {
                                sh.acks.fetch_add(1, Relaxed);
                            }
                            Kind::Error(code) => {
                                sh.pub_error_replies.fetch_add(1, Relaxed);
                                sh.pub_errors.add(lossy(code));
                            }
                            _ => {}
                        }
                    }
                }
                Some(Err(e)) => {
                    sh.pub_disconnects.ended(&describe_ws(&e));
                    break;
                }
                None => {
                    sh.pub_disconnects.ended("stream ended");
                    break;
                }
            }
        }
    };
    tokio::join!(writer, reader);
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub async fn run(a: Args) {
    let a = Arc::new(a);
    let clients = a.clients as usize;
    let p = a.publisher_count();
    let total = a.total_messages();
    let warmup = if a.warmup < a.duration { a.warmup } else { 0.0 };
    let room_json: Arc<str> = serde_json::to_string(&a.room).unwrap().into();
    let join: Arc<str> = format!(r#"{{"type":"join","room":{room_json}}}"#).into();
    let per_pub = a.rate / p as f64;

    println!(
        "fanout: {}{} room={} clients={} publishers={} rate={} msg/s ({:.1}/s per publisher) \
         duration={}s size={}B warmup={}s",
        a.url, a.path, a.room, clients, p, a.rate, per_pub, a.duration, a.size, warmup
    );
    if per_pub > 200.0 {
        eprintln!(
            "warning: {per_pub:.0} msg/s per publisher connection is above ~200/s; the server's \
             per-connection rate limit may reject publishes (raise --publishers)"
        );
    }
    if warmup != a.warmup {
        eprintln!("note: --warmup is not below --duration; timing every message");
    }

    let (state_tx, _) = watch::channel(RUNNING);
    let sh = Arc::new(Shared {
        state: state_tx,
        measure_from_us: AtomicU64::new(u64::MAX),
        hist: (0..SHARDS)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap()))
            .collect(),
        unparsed_events: AtomicU64::new(0),
        recv_errors: Tally::default(),
        recv_disconnects: Disconnects::default(),
        published: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        pub_error_replies: AtomicU64::new(0),
        publishers_done: AtomicUsize::new(0),
        last_publish_us: AtomicU64::new(0),
        pub_errors: Tally::default(),
        pub_disconnects: Disconnects::default(),
    });

    // Receivers: connect and join with bounded concurrency, then read until told to stop.
    let connect_started = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency as usize));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let slots: Vec<Arc<Slot>> = (0..clients).map(|_| Arc::default()).collect();
    let mut recv_handles: Vec<JoinHandle<()>> = Vec::with_capacity(clients);
    let mut recv_stops: Vec<oneshot::Sender<()>> = Vec::with_capacity(clients);
    for (i, slot) in slots.iter().enumerate() {
        let (stop_tx, stop_rx) = oneshot::channel();
        recv_stops.push(stop_tx);
        recv_handles.push(tokio::spawn(receiver(
            i,
            ws_url(&a.url, &a.path, &format!("lg-r{i}")),
            join.clone(),
            a.clone(),
            sh.clone(),
            slot.clone(),
            sem.clone(),
            ready_tx.clone(),
            stop_rx,
        )));
    }
    drop(ready_tx);
    let phase_limit = Duration::from_secs(30) + Duration::from_millis(10 * a.clients);
    let deadline = tokio::time::Instant::now() + phase_limit;
    let mut is_ready = vec![false; clients];
    let (mut joined, mut failed) = (0usize, 0usize);
    let connect_failures = Tally::default();
    let mut progress = Progress::new();
    while joined + failed < clients {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some((i, r))) => {
                is_ready[i] = true;
                match r {
                    Ok(()) => joined += 1,
                    Err(e) => {
                        failed += 1;
                        connect_failures.add(e);
                    }
                }
            }
            Ok(None) => break,
            Err(_) => break,
        }
        progress.tick("receivers", joined, failed, clients);
    }
    for (i, r) in is_ready.iter().enumerate() {
        if !r {
            recv_handles[i].abort();
            slots[i].gone.store(true, Relaxed);
            failed += 1;
            connect_failures.add("connect phase timed out");
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    println!(
        "  receivers joined   {joined} / {clients} in {connect_secs:.2} s, failed {failed} ({})",
        fmt_tally(&connect_failures.snapshot())
    );

    // Settle: let the notices of the join phase reach every receiver before timing anything.
    let settle_started = Instant::now();
    let sum_other = || -> u64 { slots.iter().map(|s| s.other.load(Relaxed)).sum() };
    let mut settle_secs = 0.0;
    if joined > 0 && a.settle > 0.0 {
        let settle_deadline = settle_started + secs(a.settle);
        let mut last = sum_other();
        let mut quiet_since = Instant::now();
        while Instant::now() < settle_deadline && quiet_since.elapsed() < Duration::from_millis(500)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = sum_other();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        settle_secs = settle_started.elapsed().as_secs_f64();
        println!(
            "  settled            in {settle_secs:.2} s; {last} other messages (member_joined, ...) so far{}",
            if quiet_since.elapsed() < Duration::from_millis(500) {
                " (still arriving at --settle)"
            } else {
                ""
            }
        );
    }
    let other_before_publishing = sum_other();

    // Publishers: connect (no join), then publish on a fixed schedule.
    let pub_failures = Tally::default();
    let mut pub_streams = Vec::new();
    if joined > 0 {
        let attempts: Vec<_> = (0..p)
            .map(|j| {
                let url = ws_url(&a.url, &a.path, &format!("lg-p{j}"));
                let a = a.clone();
                tokio::spawn(async move {
                    connect_ws(
                        &url,
                        ws_config(8 * 1024),
                        true,
                        a.retries,
                        secs(a.connect_timeout),
                    )
                    .await
                })
            })
            .collect();
        for h in attempts {
            match h.await {
                Ok(Ok(ws)) => pub_streams.push(ws),
                Ok(Err(e)) => pub_failures.add(e),
                Err(e) => pub_failures.add(e.to_string()),
            }
        }
    } else {
        println!("  no receiver joined; not publishing");
    }
    let publishers = pub_streams.len();
    if joined > 0 {
        println!(
            "  publishers         {publishers} / {p} connected, failures: {}",
            fmt_tally(&pub_failures.snapshot())
        );
    }

    let mut pub_handles = Vec::new();
    let mut publish_secs = 0.0;
    let mut drain_secs = 0.0;
    if publishers > 0 {
        // Spread the messages over the connected publishers, each on its own fixed period,
        // offset from the others so that the aggregate stream is evenly spaced.
        let pn = publishers as u64;
        let period = Duration::from_secs_f64(pn as f64 / a.rate);
        let start_us = now_us() + 200_000;
        let start = instant_at_us(start_us);
        sh.measure_from_us
            .store(start_us + (warmup * 1e6) as u64, Relaxed);
        for (j, ws) in pub_streams.into_iter().enumerate() {
            let j = j as u64;
            let plan = PubPlan {
                index: j,
                count: total / pn + u64::from(j < total % pn),
                first_tick: start + period.mul_f64(j as f64 / pn as f64),
                period,
                size: a.size as usize,
                room_json: room_json.clone(),
            };
            pub_handles.push(tokio::spawn(publisher(ws, plan, sh.clone())));
        }
        let pub_deadline = start + secs(a.duration * 1.5 + 10.0);
        while sh.publishers_done.load(Relaxed) < publishers && Instant::now() < pub_deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = sh.state.send(STOP_PUBLISHING);
        let stop_wait = Instant::now() + Duration::from_secs(6);
        while sh.publishers_done.load(Relaxed) < publishers && Instant::now() < stop_wait {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = sh.last_publish_us.load(Relaxed).max(start_us);
        // From the first scheduled send to the last send, plus one aggregate interval, so an
        // exactly paced run measures exactly --duration.
        publish_secs = (last - start_us) as f64 / 1e6 + 1.0 / a.rate;

        // Drain: wait until every publish has its reply (an ack or an error) and every
        // receiver still connected has every acknowledged message, or the drain time passes.
        let drain_start = Instant::now();
        let drain_deadline = drain_start + secs(a.drain);
        let published = sh.published.load(Relaxed);
        loop {
            let acks = sh.acks.load(Relaxed);
            let all_replied = acks + sh.pub_error_replies.load(Relaxed) >= published;
            let all_delivered = slots
                .iter()
                .all(|s| s.gone.load(Relaxed) || s.received.load(Relaxed) >= acks);
            if (all_replied && all_delivered) || Instant::now() >= drain_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drain_secs = drain_start.elapsed().as_secs_f64();
    }
    let _ = sh.state.send(STOP_ALL);
    for stop in recv_stops {
        let _ = stop.send(());
    }

    // Read the counters before closing, so that nothing arriving during the close counts.
    let published = sh.published.load(Relaxed);
    let acks = sh.acks.load(Relaxed);
    let delivered: u64 = slots.iter().map(|s| s.received.load(Relaxed)).sum();
    let complete = slots
        .iter()
        .filter(|s| !s.gone.load(Relaxed) && s.received.load(Relaxed) >= published)
        .count();
    let still_connected = slots.iter().filter(|s| !s.gone.load(Relaxed)).count();
    let other_total = sum_other();

    finish(pub_handles, Duration::from_secs(3)).await;
    finish(recv_handles, Duration::from_secs(5)).await;

    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap();
    for shard in &sh.hist {
        hist.add(&*shard.lock().unwrap()).unwrap();
    }
    let expected = published * joined as u64;
    let lost = expected.saturating_sub(delivered);
    let extra = delivered.saturating_sub(expected);
    let loss_pct = if expected > 0 {
        100.0 * lost as f64 / expected as f64
    } else {
        0.0
    };
    let delivery_rate = if publish_secs > 0.0 {
        delivered as f64 / publish_secs
    } else {
        0.0
    };
    let (p50, p90, p99, max) = if hist.is_empty() {
        (0.0, 0.0, 0.0, 0.0)
    } else {
        (
            ms(hist.value_at_quantile(0.50)),
            ms(hist.value_at_quantile(0.90)),
            ms(hist.value_at_quantile(0.99)),
            ms(hist.max()),
        )
    };
    let recv_errors = sh.recv_errors.snapshot();
    let pub_errors = sh.pub_errors.snapshot();
    let unparsed = sh.unparsed_events.load(Relaxed);

    println!(
        "  published          {published} of {total} in {publish_secs:.2} s ({:.1} msg/s), acks {acks}",
        if publish_secs > 0.0 { published as f64 / publish_secs } else { 0.0 }
    );
    println!(
        "  deliveries         expected {expected} ({published} x {joined}), received {delivered}, \
         lost {lost} ({loss_pct:.3}%){}",
        if extra > 0 {
            format!(", {extra} more than expected")
        } else {
            String::new()
        }
    );
    println!(
        "  delivery rate      {delivery_rate:.0} /s over {publish_secs:.2} s (drain took {drain_secs:.2} s)"
    );
    println!(
        "  latency ms         p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}  ({} samples{})",
        hist.len(),
        if warmup > 0.0 { format!(", after {warmup} s warm-up") } else { String::new() }
    );
    println!(
        "  receivers          {complete} got everything, {still_connected} still connected at the end, \
         disconnected by server: {}",
        sh.recv_disconnects.describe()
    );
    println!(
        "  errors             receivers: {}; publishers: {}",
        fmt_tally(&recv_errors),
        fmt_tally(&pub_errors)
    );
    if sh.pub_disconnects.total() > 0 {
        println!("  publishers closed  {}", sh.pub_disconnects.describe());
    }
    if unparsed > 0 {
        println!("  events without a numeric data.t: {unparsed}");
    }
    let result = json!({
        "mode": "fanout",
        "url": format!("{}{}", a.url, a.path),
        "room": a.room,
        "clients": clients,
        "connected": joined,
        "connect_failed": failed,
        "connect_failures": connect_failures.snapshot(),
        "connect_secs": connect_secs,
        "publishers": p,
        "publishers_connected": publishers,
        "publisher_connect_failures": pub_failures.snapshot(),
        "rate": a.rate,
        "size": a.size,
        "duration": a.duration,
        "warmup": warmup,
        "planned": total,
        "published": published,
        "acks": acks,
        "publish_secs": publish_secs,
        "expected": expected,
        "delivered": delivered,
        "lost": lost,
        "extra": extra,
        "loss_pct": loss_pct,
        "delivery_rate": delivery_rate,
        "drain_secs": drain_secs,
        "latency_ms": { "p50": p50, "p90": p90, "p99": p99, "max": max, "samples": hist.len() },
        "settle_secs": settle_secs,
        "other_messages_before_publishing": other_before_publishing,
        "other_messages": other_total,
        "receivers_complete": complete,
        "receivers_connected_at_end": still_connected,
        "receiver_errors": recv_errors,
        "publisher_errors": pub_errors,
        "receiver_disconnects": sh.recv_disconnects.to_json(),
        "publisher_disconnects": sh.pub_disconnects.to_json(),
        "events_without_t": unparsed,
    });
    println!("RESULT {result}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_data_has_the_requested_size() {
        for t in [0u64, 9, 10, 123_456, 99_999_999_999] {
            let m = publish_message("\"bench\"", 3, 17, 100, t);
            let v: serde_json::Value = serde_json::from_str(&m).unwrap();
            assert_eq!(serde_json::to_string(&v["data"]).unwrap().len(), 100, "{m}");
            assert_eq!(v["data"]["t"], t);
            assert_eq!(v["id"], "p3-17");
            assert_eq!(v["type"], "publish");
        }
    }

    #[test]
    fn classifies_messages() {
        let ev = br#"{"type":"event","room":"bench","seq":13,"from":"lg-p0","data":{"t":42,"p":"xx"},"ts":"2026-11-29T14:00:00.123Z"}"#;
        assert!(matches!(classify(ev), Kind::Event(Some(42))));
        assert!(matches!(
            classify(br#"{"type":"ack","id":"p1-17","seq":13}"#),
            Kind::Ack
        ));
        assert!(matches!(
            classify(br#"{"type":"joined","room":"bench","seq":0}"#),
            Kind::Joined
        ));
        assert!(matches!(
            classify(br#"{"type":"error","code":"rate_limited","message":"slow down"}"#),
            Kind::Error(b"rate_limited")
        ));
        assert!(matches!(classify(br#"{"type":"pong"}"#), Kind::Other));
    }
}
