//! The run shared by `idle` and `sse`: open N long-lived connections with bounded concurrency,
//! measure the server's resident memory before and after, hold them, and re-count.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::common::*;

/// Options common to the holding modes.
#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// Seconds to hold the connections open once all are open and measured.
    #[arg(long, default_value_t = 20.0)]
    pub hold: f64,
    /// PID of the server, to read its VmRSS from /proc/PID/status.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds to wait after the last connection opens before reading VmRSS again.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// Connections opened at the same time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Retries of a failed connect.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Limit for one connect attempt (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
}

impl HoldArgs {
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("--hold", self.hold), ("--settle", self.settle)] {
            if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
                return Err(format!("{name} must be between 0 and 86400"));
            }
        }
        if !(self.connect_timeout.is_finite() && self.connect_timeout > 0.0) {
            return Err("--connect-timeout must be a positive number".into());
        }
        if let Some(pid) = self.server_pid {
            if rss_kib(pid).is_none() {
                return Err(format!(
                    "--server-pid {pid}: cannot read /proc/{pid}/status"
                ));
            }
        }
        Ok(())
    }
}

/// Counters the connection tasks update.
#[derive(Default)]
pub struct HoldStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Messages (WebSocket) or events (SSE) received.
    pub received: AtomicU64,
    /// WebSocket pings received (each answered).
    pub pings: AtomicU64,
    /// Connections the server ended while they were held.
    pub disconnects: Disconnects,
}

/// What a connection task gets: its index, where to say it is open (or why not), the run
/// state and the counters.
pub struct Conn {
    pub index: usize,
    pub ready: mpsc::UnboundedSender<(usize, Result<(), String>)>,
    pub state: watch::Receiver<u8>,
    pub stats: Arc<HoldStats>,
    pub permit: Arc<Semaphore>,
}

impl Conn {
    /// Reports the outcome of opening; on success counts the connection as open.
    pub fn opened(&self, r: Result<(), String>) {
        if r.is_ok() {
            self.stats.open.fetch_add(1, Relaxed);
        }
        let _ = self.ready.send((self.index, r));
    }

    /// Records that the server ended a held connection.
    pub fn lost(&self) {
        self.stats.open.fetch_sub(1, Relaxed);
    }

    /// Whether the run is over (the loadgen is closing connections itself).
    pub fn stopping(&self) -> bool {
        *self.state.borrow() >= STOP_ALL
    }
}

fn kib_json(v: Option<u64>) -> Value {
    v.map_or(Value::Null, Value::from)
}

/// Runs the hold: `spawn_conn` is called once per connection and must call
/// [`Conn::opened`] exactly once.
pub async fn run<F, Fut>(
    mode: &str,
    target: &str,
    n: usize,
    a: &HoldArgs,
    what: &str,
    mut spawn_conn: F,
) where
    F: FnMut(Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    println!(
        "{mode}: {target} {what}={n} concurrency={} hold={}s settle={}s server-pid={}",
        a.concurrency,
        a.hold,
        a.settle,
        a.server_pid.map_or("-".into(), |p| p.to_string())
    );
    let rss_before = a.server_pid.and_then(rss_kib);
    let stats = Arc::new(HoldStats::default());
    let (state_tx, _) = watch::channel(RUNNING);
    let sem = Arc::new(Semaphore::new(a.concurrency as usize));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for index in 0..n {
        handles.push(tokio::spawn(spawn_conn(Conn {
            index,
            ready: ready_tx.clone(),
            state: state_tx.subscribe(),
            stats: stats.clone(),
            permit: sem.clone(),
        })));
    }
    drop(ready_tx);

    let phase_limit = Duration::from_secs(30) + Duration::from_millis(10 * n as u64);
    let deadline = tokio::time::Instant::now() + phase_limit;
    let mut is_ready = vec![false; n];
    let (mut ok, mut failed) = (0usize, 0usize);
    let failures = Tally::default();
    let mut progress = Progress::new();
    while ok + failed < n {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some((i, r))) => {
                is_ready[i] = true;
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        failures.add(e);
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
        progress.tick(what, ok, failed, n);
    }
    for (i, r) in is_ready.iter().enumerate() {
        if !r {
            handles[i].abort();
            failed += 1;
            failures.add("connect phase timed out");
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let failures = failures.snapshot();
    println!(
        "  opened             {ok} / {n} in {open_secs:.2} s ({:.0}/s), failed {failed} ({})",
        ok as f64 / open_secs.max(1e-9),
        fmt_tally(&failures)
    );

    tokio::time::sleep(secs(a.settle)).await;
    let rss_after = a.server_pid.and_then(rss_kib);
    let held = stats.open.load(Relaxed);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(af)) if held > 0 => Some((af as f64 - b as f64) / held as f64),
        _ => None,
    };
    match (rss_before, rss_after) {
        (Some(b), Some(af)) => println!(
            "  server RSS         before {b} KiB, after {af} KiB (+{} KiB), {} KiB per connection \
             ({held} held)",
            af as i64 - b as i64,
            per_conn.map_or("-".into(), |v| format!("{v:.1}"))
        ),
        _ if a.server_pid.is_some() => println!("  server RSS         unavailable (process gone?)"),
        _ => {}
    }

    tokio::time::sleep(secs(a.hold)).await;
    let held_after = stats.open.load(Relaxed);
    let rss_end = a.server_pid.and_then(rss_kib);
    let received = stats.received.load(Relaxed);
    let pings = stats.pings.load(Relaxed);
    println!(
        "  after hold {:>5}s  {held_after} / {ok} still open; server closed: {}",
        a.hold,
        stats.disconnects.describe()
    );
    println!(
        "  received           {received} {} ({:.2} per connection), {pings} pings{}",
        if mode == "sse" { "events" } else { "messages" },
        received as f64 / ok.max(1) as f64,
        rss_end.map_or(String::new(), |r| format!("; server RSS now {r} KiB"))
    );
    let _ = state_tx.send(STOP_ALL);
    let result = json!({
        "mode": mode,
        "url": target,
        "requested": n,
        "opened": ok,
        "failed": failed,
        "failures": failures,
        "open_secs": open_secs,
        "held_after_settle": held,
        "held_after_hold": held_after,
        "hold_secs": a.hold,
        "rss_before_kib": kib_json(rss_before),
        "rss_after_kib": kib_json(rss_after),
        "rss_end_kib": kib_json(rss_end),
        "rss_per_conn_kib": per_conn,
        "received": received,
        "pings": pings,
        "disconnects": stats.disconnects.to_json(),
    });
    println!("RESULT {result}");
    finish(handles, Duration::from_secs(5)).await;
}
