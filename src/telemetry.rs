//! Request ids, the access log and request metrics.
//!
//! * The logger ([`crate::logging`], re-exported here) formats records on the calling
//!   thread and hands them to a writer thread, so an event-loop thread never blocks on a
//!   slow stderr.
//! * [`Telemetry`] is the one middleware around every request: it assigns the request id
//!   (honouring a well-formed `X-Request-Id`, generating one otherwise, echoing it in the
//!   response), counts the request in `/metrics`, writes one access-log line, and renders
//!   every error response in the JSON shape of [`crate::error`] with the request id filled in.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::{Error, FromRequest, HttpRequest};
use prometheus::{Histogram, IntCounter};

use crate::error::{code_for_status, error_response, AppError};
use crate::metrics::Metrics;

pub use crate::logging::{flush_logs, init_logging, log_lines_dropped};

/// Longest `X-Request-Id` accepted from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request-id header, read from clients and set on every response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Route label for requests that matched no route, so scans cannot explode the metrics.
const UNMATCHED_ROUTE: &str = "unmatched";

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
            worker: Rc::new(Worker {
                metrics: self.metrics.clone(),
                debug: self.debug,
                cache: RefCell::new(RouteCache::default()),
            }),
        }))
    }
}

/// The per-worker middleware service built by [`Telemetry`].
pub struct TelemetryService<S> {
    service: S,
    worker: Rc<Worker>,
}

/// What one worker's requests share: one `Rc` clone per request, no atomic reference count.
struct Worker {
    metrics: Metrics,
    debug: bool,
    cache: RefCell<RouteCache>,
}

/// Each route's metrics by pattern, and the request paths known to be a route's pattern
/// themselves (`/healthz`): for those the route is the path, and actix-web's
/// `match_pattern()` (an index walk and an allocated string per request) is skipped. This
/// holds because no resource has a resource-level guard: the router picks a resource by
/// path alone, so a path once found to be its own pattern always is. The set holds at most
/// one entry per static route (a path is only kept when it equals a registered pattern).
#[derive(Default)]
struct RouteCache {
    routes: HashMap<String, RouteMetrics>,
    static_paths: HashSet<String>,
}

/// One request in flight: decrements the in-flight gauge when dropped, also when the
/// client goes away mid-request.
struct InFlight {
    worker: Rc<Worker>,
    start: Instant,
    id: HeaderValue,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.worker.metrics.in_flight().dec();
    }
}

pin_project_lite::pin_project! {
    /// The future of one request through [`TelemetryService`] (no box per request).
    pub struct TelemetryFuture<F> {
        #[pin]
        fut: F,
        request: Option<InFlight>,
    }
}

impl<F, B> Future for TelemetryFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    B: MessageBody + 'static,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.fut.poll(cx));
        let request = this
            .request
            .take()
            .expect("a TelemetryFuture is not polled after it finished");
        Poll::Ready(finish(result, request))
    }
}

impl<S, B> Service<ServiceRequest> for TelemetryService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = TelemetryFuture<S::Future>;

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
        self.worker.metrics.in_flight().inc();
        let request = InFlight {
            worker: self.worker.clone(),
            start,
            id,
        };
        TelemetryFuture {
            fut: self.service.call(req),
            request: Some(request),
        }
    }
}

/// Renders errors, sets the request id, counts the request and writes its access-log line.
fn finish<B>(
    result: Result<ServiceResponse<B>, Error>,
    request: InFlight,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    B: MessageBody + 'static,
{
    let worker = request.worker.clone();
    let (start, id) = (request.start, request.id.clone());
    // The request is no longer in flight once its response is built.
    drop(request);
    let id_str = id.to_str().unwrap_or_default();
    let mut res = match result {
        Ok(res) if is_error(res.status()) => {
            render_error(res, id_str, worker.debug).map_into_right_body()
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
    {
        let mut cache = worker.cache.borrow_mut();
        let cache = &mut *cache;
        let path = req.path();
        let matched;
        let route = if cache.static_paths.contains(path) {
            path
        } else {
            matched = req.match_pattern();
            match matched.as_deref() {
                Some(pattern) => {
                    if pattern == path && cache.static_paths.len() < MAX_CACHED_ROUTES {
                        cache.static_paths.insert(path.to_owned());
                    }
                    pattern
                }
                None => UNMATCHED_ROUTE,
            }
        };
        let metrics = &worker.metrics;
        let cache = &mut cache.routes;
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
    // Milliseconds with three decimals, formatted from integers rather than a float.
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    log::info!(
        target: "courier::access",
        "method={} path={} status={} latency_ms={}.{:03} request_id={}",
        req.method(),
        req.path(),
        status.as_u16(),
        micros / 1000,
        micros % 1000,
        id_str
    );
    Ok(res)
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
    // Keep headers the original response set on purpose (Allow, Retry-After, Vary, ...),
    // every value of each.
    let kept = |name: &HeaderName| name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH;
    for name in old.headers().keys().filter(|n| kept(n)) {
        fresh.headers_mut().remove(name);
    }
    for (name, value) in old.headers() {
        if kept(name) {
            fresh.headers_mut().append(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, fresh)
}
