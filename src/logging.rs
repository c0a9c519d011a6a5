//! The process logger.
//!
//! [`init_logging`] installs it: `env_logger`'s filter at `LOG_LEVEL` decides which records
//! pass; each is formatted on the calling thread and handed to a dedicated writer thread
//! through a bounded queue, so an event-loop thread never blocks on a slow stderr. If the
//! writer falls behind by [`LOG_QUEUE_LINES`] lines, new lines are dropped and counted
//! (`courier_log_lines_dropped_total`) rather than stalling requests.

use std::cell::RefCell;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::OnceLock;
use std::time::Duration;

/// Lines the log writer thread may lag behind before new lines are dropped.
pub const LOG_QUEUE_LINES: usize = 65_536;

/// How often the log writer thread writes out what was queued.
pub const LOG_WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// How long shutdown waits for the log writer to drain.
pub const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

enum LogMsg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

struct LogControl {
    tx: SyncSender<LogMsg>,
    dropped: AtomicU64,
}

static LOG_CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The process logger: `env_logger` decides which records pass `LOG_LEVEL`; each record
/// is formatted on the calling thread (no lock is shared between workers) and queued to the
/// writer thread.
struct QueueLogger {
    filter: env_logger::Logger,
}

thread_local! {
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the current second, reused within it.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

fn write_timestamp(line: &mut Vec<u8>) {
    let now = chrono::Utc::now();
    let secs = now.timestamp();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.0 = secs;
            cached.1 = now.format("%Y-%m-%dT%H:%M:%S").to_string();
        }
        line.extend_from_slice(cached.1.as_bytes());
    });
    let _ = write!(line, ".{:03}Z", now.timestamp_subsec_millis());
}

fn format_record(line: &mut Vec<u8>, record: &log::Record<'_>) {
    line.push(b'[');
    write_timestamp(line);
    let _ = writeln!(
        line,
        " {:<5} {}] {}",
        record.level(),
        record.target(),
        record.args()
    );
}

impl log::Log for QueueLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let Some(control) = LOG_CONTROL.get() else {
            return;
        };
        let mut line = Vec::with_capacity(160);
        format_record(&mut line, record);
        if control.tx.try_send(LogMsg::Line(line)).is_err() {
            control.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

fn writer_thread(rx: Receiver<LogMsg>) {
    // `Stderr` takes its lock per write, and the buffer writes a batch at a time: holding
    // the lock for the thread's life would block every other writer to stderr for good
    // (a panic message, a library's `eprintln!`) and hang the thread that writes it.
    let mut out = BufWriter::with_capacity(64 * 1024, io::stderr());
    loop {
        // Drain what is queued, write it in one go, then sleep: senders never have to wake
        // this thread, so logging costs a request no system call.
        loop {
            match rx.try_recv() {
                Ok(LogMsg::Line(line)) => {
                    let _ = out.write_all(&line);
                }
                Ok(LogMsg::Flush(ack)) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
        std::thread::sleep(LOG_WRITE_INTERVAL);
    }
}

/// Installs the logger with an `env_logger` filter such as `info` or `warn,courier=debug`.
/// Calling it again is harmless (the first logger stays).
pub fn init_logging(filter: &str) {
    let (tx, rx) = mpsc::sync_channel(LOG_QUEUE_LINES);
    if LOG_CONTROL
        .set(LogControl {
            tx,
            dropped: AtomicU64::new(0),
        })
        .is_err()
    {
        return;
    }
    let filter = env_logger::Builder::new()
        .parse_filters(&filter.to_ascii_lowercase())
        .build();
    let max_level = filter.filter();
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer_thread(rx));
    if spawned.is_ok() && log::set_boxed_logger(Box::new(QueueLogger { filter })).is_ok() {
        log::set_max_level(max_level);
    }
}

/// Waits (up to [`LOG_FLUSH_TIMEOUT`]) until every queued log line is written.
pub fn flush_logs() {
    if let Some(control) = LOG_CONTROL.get() {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if control.tx.send(LogMsg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(LOG_FLUSH_TIMEOUT);
        }
    }
}

/// Log lines dropped so far because the writer fell behind.
pub fn log_lines_dropped() -> u64 {
    LOG_CONTROL
        .get()
        .map(|c| c.dropped.load(Ordering::Relaxed))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_writers_to_stderr_are_not_blocked_by_the_log_writer() {
        init_logging("info");
        log::info!("a line through the writer thread");
        flush_logs();
        // Written straight to the process's stderr (not the test harness's capture), as a
        // panic message or a library's own output would be.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = io::stderr()
                .lock()
                .write_all(b"a line written beside the logger\n");
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("a direct write to stderr completes while the logger runs");
        log::info!("and the logger still writes afterwards");
        flush_logs();
    }
}
