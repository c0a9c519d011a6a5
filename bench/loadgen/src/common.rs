//! Pieces shared by the modes: the clock, limits, URLs, connecting, tallies and the small
//! byte scanners used to read server messages without a full JSON parse.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Run state shared through a `watch` channel: publishing, publishing stopped, everything stopped.
pub const RUNNING: u8 = 0;
pub const STOP_PUBLISHING: u8 = 1;
pub const STOP_ALL: u8 = 2;

static START: OnceLock<Instant> = OnceLock::new();

/// Fixes the process's reference instant; every timestamp is measured from it.
pub fn start_clock() {
    START.get_or_init(Instant::now);
}

/// Resolves once the run state reaches `level`.
pub async fn reached(state: &mut tokio::sync::watch::Receiver<u8>, level: u8) {
    let _ = state.wait_for(|s| *s >= level).await;
}

/// Microseconds since [`start_clock`].
pub fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The [`Instant`] that `us` microseconds after [`start_clock`] stands for.
pub fn instant_at_us(us: u64) -> Instant {
    *START.get_or_init(Instant::now) + Duration::from_micros(us)
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force.
/// Prints an error (and carries on) when it is below `needed`.
pub fn raise_fd_limit(needed: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            eprintln!(
                "warning: getrlimit(RLIMIT_NOFILE) failed: {}",
                std::io::Error::last_os_error()
            );
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                eprintln!(
                    "warning: could not raise the open-file limit from {} to {}: {}",
                    lim.rlim_cur,
                    lim.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
        lim.rlim_cur
    };
    if soft < needed {
        eprintln!(
            "error: the open-file limit is {soft} (hard limit {}), but this run needs about \
             {needed} file descriptors; connections beyond the limit will fail with \
             \"too many open files\". Raise the hard limit (e.g. `ulimit -Hn {needed}` as root, \
             or LimitNOFILE / limits.conf) or ask for fewer connections.",
            lim.rlim_max
        );
    }
    soft
}

/// VmRSS of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Checks a `ws://` URL and returns it without a trailing slash.
pub fn check_ws_url(url: &str) -> Result<String, String> {
    if url.starts_with("wss://") {
        return Err("wss:// is not supported (this build has no TLS); use ws://".into());
    }
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("--url must start with ws:// (got {url:?})"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("--url has no host: {url:?}"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The connection URL for one client: `base` plus `path` (unless `base` already has a path)
/// plus `name=NAME`.
pub fn ws_url(base: &str, path: &str, name: &str) -> String {
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let mut url = base.to_string();
    if !base[after_scheme..].contains('/') {
        if !path.starts_with('/') {
            url.push('/');
        }
        url.push_str(path);
    }
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str("name=");
    url.push_str(name);
    url
}

/// A client WebSocket configuration with a small eagerly allocated read buffer.
pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
}

/// A short description of an I/O error, naming the errno where it matters for load tests.
pub fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) => "too many open files (EMFILE)".into(),
        Some(libc::ENFILE) => "system file table full (ENFILE)".into(),
        Some(libc::EADDRNOTAVAIL) => "no free local port (EADDRNOTAVAIL)".into(),
        _ => e.kind().to_string(),
    }
}

/// A short description of a WebSocket error.
pub fn describe_ws(e: &WsError) -> String {
    match e {
        WsError::Io(io) => describe_io(io),
        WsError::Http(resp) => format!("HTTP {}", resp.status().as_u16()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "connection closed".into(),
        WsError::Protocol(p) => format!("protocol: {p}"),
        other => {
            let mut s = other.to_string();
            s.truncate(80);
            s
        }
    }
}

/// Opens a WebSocket, retrying a failed attempt `retries` times with a short back-off.
pub async fn connect_ws(
    url: &str,
    config: WebSocketConfig,
    nodelay: bool,
    retries: u32,
    attempt_timeout: Duration,
) -> Result<Ws, String> {
    retry(retries, || async {
        match tokio::time::timeout(
            attempt_timeout,
            tokio_tungstenite::connect_async_with_config(url, Some(config), nodelay),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(describe_ws(&e)),
            Err(_) => Err("connect timed out".into()),
        }
    })
    .await
}

/// Runs `attempt` up to `retries + 1` times, sleeping 250 ms, 500 ms, ... between tries;
/// returns the last error.
pub async fn retry<T, F, Fut>(retries: u32, mut attempt: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if n >= retries => return Err(e),
            Err(_) => {
                n += 1;
                tokio::time::sleep(Duration::from_millis(250 * u64::from(n))).await;
            }
        }
    }
}

/// Sends a close frame and waits briefly for the server's reply, then drops the connection.
pub async fn close_ws(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.send(Message::Close(None)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Waits for `handles` up to `limit`, then aborts those still running.
pub async fn finish(handles: Vec<tokio::task::JoinHandle<()>>, limit: Duration) {
    let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
    let _ = tokio::time::timeout(limit, futures_util::future::join_all(handles)).await;
    for a in aborts {
        a.abort();
    }
}

/// Counts of string keys (error codes, failure reasons), safe to share between tasks.
#[derive(Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    pub fn add(&self, key: impl Into<String>) {
        *self.0.lock().unwrap().entry(key.into()).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap().clone()
    }
}

/// `key x3, other x1`, or `none`.
pub fn fmt_tally(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} x{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connections ended by the other side, counted by close code, with the first reason seen.
#[derive(Default)]
pub struct Disconnects(Mutex<BTreeMap<String, (u64, String)>>);

impl Disconnects {
    /// Records a close frame (or its absence).
    pub fn close_frame(&self, frame: Option<&CloseFrame>) {
        match frame {
            Some(f) => self.add(u16::from(f.code).to_string(), f.reason.as_str()),
            None => self.add("no-code".into(), "close frame without a status code"),
        }
    }

    /// Records a connection that ended without a close frame.
    pub fn ended(&self, why: &str) {
        self.add("no-close-frame".into(), why);
    }

    fn add(&self, key: String, reason: &str) {
        let mut m = self.0.lock().unwrap();
        let e = m.entry(key).or_insert_with(|| (0, reason.to_string()));
        e.0 += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().map(|v| v.0).sum()
    }

    /// `{"1008": {"count": 3, "reason": "..."}}`
    pub fn to_json(&self) -> Value {
        let m = self.0.lock().unwrap();
        let obj: serde_json::Map<String, Value> = m
            .iter()
            .map(|(k, (n, r))| (k.clone(), json!({ "count": n, "reason": r })))
            .collect();
        Value::Object(obj)
    }

    /// `1008 x3 ("reason"), ...`, or `none`.
    pub fn describe(&self) -> String {
        let m = self.0.lock().unwrap();
        if m.is_empty() {
            return "none".into();
        }
        m.iter()
            .map(|(k, (n, r))| format!("{k} x{n} ({r:?})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                // Needles are a few bytes long: compare inline rather than through memcmp.
                if hay[i + 1..i + needle.len()]
                    .iter()
                    .zip(&needle[1..])
                    .all(|(a, b)| a == b)
                {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn skip_ws(h: &[u8], mut i: usize) -> usize {
    while i < h.len() && matches!(h[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Index just past `key:` (with optional whitespace) for the first occurrence of the quoted
/// `key` that is followed by a colon.
fn value_start(h: &[u8], key: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = find(&h[from..], key) {
        let i = skip_ws(h, from + p + key.len());
        if h.get(i) == Some(&b':') {
            return Some(skip_ws(h, i + 1));
        }
        from += p + 1;
    }
    None
}

/// The raw string value of `"key": "..."` (`key` given with its quotes, e.g. `b"\"type\""`).
/// Escapes are not decoded; enough for type names and error codes.
pub fn str_field<'a>(h: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let i = value_start(h, key)?;
    if h.get(i) != Some(&b'"') {
        return None;
    }
    let s = i + 1;
    let len = h[s..].iter().position(|&c| c == b'"')?;
    Some(&h[s..s + len])
}

/// The unsigned integer value of `"key": 123`.
pub fn uint_field(h: &[u8], key: &[u8]) -> Option<u64> {
    let mut i = value_start(h, key)?;
    let start = i;
    let mut v: u64 = 0;
    while let Some(d) = h.get(i).filter(|c| c.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        i += 1;
    }
    (i > start).then_some(v)
}

/// Text of a server message, lossily; for error codes.
pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Prints a progress line every 5 s while connections open.
pub struct Progress {
    last: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Progress {
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self, what: &str, ok: usize, failed: usize, total: usize) {
        if self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            eprintln!("  ... {what}: {ok} open, {failed} failed, of {total}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_fields() {
        let m = br#"{"type":"event","room":"bench","seq":13,"from":"t","data":{"p":"xx","t":123456},"ts":"2026"}"#;
        assert_eq!(str_field(m, b"\"type\""), Some(&b"event"[..]));
        assert_eq!(uint_field(m, b"\"t\""), Some(123456));
        assert_eq!(uint_field(m, b"\"seq\""), Some(13));
        let spaced = br#"{ "type" : "error", "code" : "rate_limited" }"#;
        assert_eq!(str_field(spaced, b"\"type\""), Some(&b"error"[..]));
        assert_eq!(str_field(spaced, b"\"code\""), Some(&b"rate_limited"[..]));
        assert_eq!(uint_field(br#"{"t":"x"}"#, b"\"t\""), None);
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
    }

    #[test]
    fn builds_urls() {
        assert_eq!(
            ws_url("ws://127.0.0.1:8000", "/ws/json", "r1"),
            "ws://127.0.0.1:8000/ws/json?name=r1"
        );
        assert_eq!(
            ws_url("ws://h:1/x?a=b", "/ws/json", "r1"),
            "ws://h:1/x?a=b&name=r1"
        );
        assert!(check_ws_url("http://h").is_err());
        assert_eq!(check_ws_url("ws://h:1/").unwrap(), "ws://h:1");
    }
}
