//! Logging, request ids, the access log and request metrics.
//!
//! * [`init_logging`] installs `env_logger` at `LOG_LEVEL`. Records are formatted on the
//!   calling thread and handed to a dedicated writer thread through a bounded queue, so an
//!   event-loop thread never blocks on a slow stderr. If the writer falls behind by
//!   [`LOG_QUEUE_LINES`] lines, new lines are dropped and counted
//!   (`courier_log_lines_dropped_total`) rather than stalling requests.
//! * [`Telemetry`] is the one middleware around every request: it assigns the request id
//!   (honouring a well-formed `X-Request-Id`, generating one otherwise, echoing it in the
//!   response), counts the request in `/metrics`, writes one access-log line, and renders
//!   every error response in the JSON shape of [`crate::error`] with the request id filled in.

use std::future::{ready, Future, Ready};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest};

use crate::error::{code_for_status, error_response, AppError};
use crate::metrics::Metrics;

/// Lines the log writer thread may lag behind before new lines are dropped.
pub const LOG_QUEUE_LINES: usize = 65_536;

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

/// The `io::Write` that `env_logger` writes each record into: it collects one record and
/// queues it to the writer thread on `flush` (which `env_logger` calls once per record).
struct QueueWriter {
    pending: Vec<u8>,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.pending);
        if let Some(control) = LOG_CONTROL.get() {
            match control.tx.try_send(LogMsg::Line(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    control.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

fn writer_thread(rx: Receiver<LogMsg>) {
    let stderr = io::stderr();
    let mut out = BufWriter::with_capacity(64 * 1024, stderr.lock());
    loop {
        // Block for the next message; flush to stderr whenever the queue runs dry.
        let msg = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(msg);
        while let Some(m) = next.take() {
            match m {
                LogMsg::Line(line) => {
                    let _ = out.write_all(&line);
                }
                LogMsg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
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
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer_thread(rx));
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter.to_ascii_lowercase());
    builder.write_style(if io::stderr().is_terminal() {
        env_logger::WriteStyle::Always
    } else {
        env_logger::WriteStyle::Never
    });
    if spawned.is_ok() {
        builder.target(env_logger::Target::Pipe(Box::new(QueueWriter {
            pending: Vec::with_capacity(256),
        })));
    }
    let _ = builder.try_init();
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
pub struct RequestId(pub Rc<str>);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromRequest for RequestId {
    type Error = Error;
    type Future = Ready<Result<Self, Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(generate_request_id().into()));
        ready(Ok(id))
    }
}

/// A new request id: a random per-process prefix and a counter, unique across nodes.
pub fn generate_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(rand::random::<u64>);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}-{n:x}")
}

/// Whether a client-sent request id is safe to echo and log.
fn acceptable_request_id(value: &HeaderValue) -> Option<&str> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= MAX_REQUEST_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    ok.then_some(s)
}

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
        }))
    }
}

/// The per-worker middleware service built by [`Telemetry`].
pub struct TelemetryService<S> {
    service: S,
    metrics: Metrics,
    debug: bool,
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

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let id: Rc<str> = match req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(acceptable_request_id)
        {
            Some(s) => s.into(),
            None => generate_request_id().into(),
        };
        req.extensions_mut().insert(RequestId(id.clone()));
        let metrics = self.metrics.clone();
        let debug = self.debug;
        metrics.in_flight().inc();
        let guard = InFlight(metrics.in_flight().clone());
        let fut = self.service.call(req);

        Box::pin(async move {
            let result = fut.await;
            drop(guard);
            let mut res = match result {
                Ok(res) if is_error(res.status()) => {
                    render_error(res, &id, debug).map_into_right_body()
                }
                Ok(res) => res.map_into_left_body(),
                // Only a service inside this middleware can fail this way (handlers turn
                // their errors into responses); actix renders it.
                Err(err) => {
                    log::error!("request_id={id} failed before a response was built: {err}");
                    return Err(err);
                }
            };
            let status = res.status();
            if let Ok(value) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(X_REQUEST_ID.clone(), value);
            }

            let elapsed = start.elapsed();
            let req = res.request();
            let route = req.match_pattern();
            let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
            metrics.observe_request(
                req.method().as_str(),
                route,
                status.as_u16(),
                elapsed.as_secs_f64(),
            );
            log::info!(
                target: "courier::access",
                "method={} path={} status={} latency_ms={:.3} request_id={}",
                req.method(),
                req.path(),
                status.as_u16(),
                elapsed.as_secs_f64() * 1000.0,
                id
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
