//! Logging, request ids, the access log and request metrics.
//!
//! * [`init_logging`] installs the logger: `env_logger`'s filter at `LOG_LEVEL`, records
//!   formatted on the calling thread and handed to a dedicated writer thread through a
//!   bounded queue, so an event-loop thread never blocks on a slow stderr. If the writer falls behind by
//!   [`LOG_QUEUE_LINES`] lines, new lines are dropped and counted
//!   (`courier_log_lines_dropped_total`) rather than stalling requests.
//! * [`Telemetry`] is the one middleware around every request: it assigns the request id
//!   (honouring a well-formed `X-Request-Id`, generating one otherwise, echoing it in the
//!   response), counts the request in `/metrics`, writes one access-log line, and renders
//!   every error response in the JSON shape of [`crate::error`] with the request id filled in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{ready, Future, Ready};
use std::io::{self, BufWriter, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{Error, FromRequest, HttpRequest};
use prometheus::{Histogram, IntCounter};

use crate::error::{code_for_status, error_response, AppError};
use crate::metrics::Metrics;

/// Lines the log writer thread may lag behind before new lines are dropped.
pub const LOG_QUEUE_LINES: usize = 65_536;

/// How often the log writer thread writes out what was queued.
pub const LOG_WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// How long shutdown waits for the log writer to drain.
pub const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `X-Request-Id` accepted from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request-id header, read from clients and set on every response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route label for requests that matched no route, so scans cannot explode the metrics.
const UNMATCHED_ROUTE: &str = "unmatched";

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
        line.push(b'[');
        write_timestamp(&mut line);
        let _ = writeln!(
            line,
            " {:<5} {}] {}",
            record.level(),
            record.target(),
            record.args()
        );
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

/// The id of the current request, as echoed in `X-Request-Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl FromRequest for RequestId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The middleware replaced the header with the id it accepted or generated.
        let id = req
            .headers()
            .get(&X_REQUEST_ID)
            .cloned()
            .unwrap_or_else(generate_request_id);
        ready(Ok(RequestId(id)))
    }
}

/// A new request id: a random per-process prefix and a counter, unique across nodes,
/// e.g. `6f1c0e2b9a4d7735-1f`.
pub fn generate_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 33];
    for (i, slot) in buf[..16].iter_mut().enumerate() {
        *slot = HEX[((prefix >> (60 - 4 * i)) & 0xf) as usize];
    }
    buf[16] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[17 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..17 + digits]).expect("hex digits are a valid header value")
}

/// Whether a client-sent request id is safe to echo and log.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_REQUEST_ID_LEN
        && b.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
}

/// The metrics of one route, looked up once per worker instead of once per request.
struct RouteMetrics {
    latency: Histogram,
    requests: Vec<(&'static str, u16, IntCounter)>,
}

/// The `method` label of a request: one of the standard methods, or `other`, so a client
/// sending made-up methods cannot create new metric series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Most routes a worker caches metric handles for (route patterns are few; this only
/// bounds memory if something unexpected produces many labels).
const MAX_CACHED_ROUTES: usize = 1024;

/// The middleware factory; wrap the whole `App` with it.
#[derive(Clone)]
pub struct Telemetry {
    metrics: Metrics,
    debug: bool,
}

impl Telemetry {
    /// `debug` shows internal error details in 500 responses (`APP_DEBUG`).
    pub fn new(metrics: Metrics, debug: bool) -> Self {
        Self { metrics, debug }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Telemetry
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = TelemetryService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TelemetryService {
            service,
            metrics: self.metrics.clone(),
            debug: self.debug,
            cache: Rc::new(RefCell::new(HashMap::new())),
        }))
    }
}

/// The per-worker middleware service built by [`Telemetry`].
pub struct TelemetryService<S> {
    service: S,
    metrics: Metrics,
    debug: bool,
    cache: Rc<RefCell<HashMap<String, RouteMetrics>>>,
}

/// Decrements the in-flight gauge even when the client goes away mid-request.
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl<S, B> Service<ServiceRequest> for TelemetryService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Error>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if acceptable_request_id(v) => v.clone(),
            _ => {
                let id = generate_request_id();
                req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let metrics = self.metrics.clone();
        let cache = self.cache.clone();
        let debug = self.debug;
        metrics.in_flight().inc();
        let guard = InFlight(metrics.in_flight().clone());
        let fut = self.service.call(req);

        Box::pin(async move {
            let result = fut.await;
            drop(guard);
            let id_str = id.to_str().unwrap_or_default();
            let mut res = match result {
                Ok(res) if is_error(res.status()) => {
                    render_error(res, id_str, debug).map_into_right_body()
                }
                Ok(res) => res.map_into_left_body(),
                // Only a service inside this middleware can fail this way (handlers turn
                // their errors into responses); actix renders it.
                Err(err) => {
                    log::error!("request_id={id_str} failed before a response was built: {err}");
                    return Err(err);
                }
            };
            let status = res.status();
            res.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());

            let elapsed = start.elapsed();
            let req = res.request();
            let route = req.match_pattern();
            let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
            {
                let mut cache = cache.borrow_mut();
                if !cache.contains_key(route) {
                    if cache.len() >= MAX_CACHED_ROUTES {
                        cache.clear();
                    }
                    cache.insert(
                        route.to_owned(),
                        RouteMetrics {
                            latency: metrics.route_latency(route),
                            requests: Vec::new(),
                        },
                    );
                }
                let entry = cache.get_mut(route).expect("inserted above");
                entry.latency.observe(elapsed.as_secs_f64());
                let code = status.as_u16();
                let method = method_label(req.method());
                match entry
                    .requests
                    .iter()
                    .find(|(m, s, _)| *s == code && *m == method)
                {
                    Some((_, _, counter)) => counter.inc(),
                    None => {
                        let counter = metrics.request_counter(method, route, code);
                        counter.inc();
                        entry.requests.push((method, code, counter));
                    }
                }
            }
            log::info!(
                target: "courier::access",
                "method={} path={} status={} latency_ms={:.3} request_id={}",
                req.method(),
                req.path(),
                status.as_u16(),
                elapsed.as_secs_f64() * 1000.0,
                id_str
            );
            Ok(res)
        })
    }
}

fn is_error(status: actix_web::http::StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

/// Re-renders an error response in the one JSON shape, with the request id. A JSON body a
/// handler chose on purpose (with no error attached, e.g. `/readyz`) is kept.
fn render_error<B>(res: ServiceResponse<B>, id: &str, debug: bool) -> ServiceResponse<BoxBody>
where
    B: MessageBody + 'static,
{
    let status = res.status();
    let (code, message) = match res.response().error() {
        Some(err) => match err.as_error::<AppError>() {
            Some(AppError::Internal(detail)) if debug => {
                ("internal_error", format!("internal server error: {detail}"))
            }
            Some(app) => (app.code(), app.public_message()),
            None if status.is_server_error() && !debug => {
                (code_for_status(status), "internal server error".to_owned())
            }
            None => (code_for_status(status), err.to_string()),
        },
        None => {
            let is_json = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if is_json {
                // Keep the handler's own JSON body.
                return res.map_into_boxed_body();
            }
            let req = res.request();
            let message = match status.as_u16() {
                404 => format!("no route for {} {}", req.method(), req.path()),
                405 => format!("method {} is not allowed on {}", req.method(), req.path()),
                _ => status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned(),
            };
            (code_for_status(status), message)
        }
    };
    let (req, old) = res.into_parts();
    let mut fresh = error_response(status, code, &message, Some(id));
    // Keep headers the original response set on purpose (Allow, Retry-After, ...).
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, fresh)
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
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a direct write to stderr completes while the logger runs");
        log::info!("and the logger still writes afterwards");
        flush_logs();
    }
}
