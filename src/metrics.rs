//! Prometheus metrics: one registry per application, rendered at `GET /metrics`.
//!
//! The registry is per [`crate::startup::Application`] (not global), so several servers in
//! one process (the test suite) keep separate counts. Later subsystems register their own
//! gauges and counters on [`Metrics::registry`].

use std::sync::Arc;

use courier_actors::metrics::{self, LATENCY_BUCKETS};
use prometheus::{
    Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
    TextEncoder,
};

/// The application's metrics. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    log_lines_dropped: IntCounter,
    dependency_up: IntGaugeVec,
    upstream_latency: HistogramVec,
    upstream_errors: IntCounterVec,
}

impl Metrics {
    /// Creates the registry and the HTTP metrics.
    pub fn new(app_name: &str) -> Self {
        let registry = Registry::new();
        let r = &registry;
        let info = metrics::int_gauge_vec(
            r,
            "courier_build_info",
            "Version and service name; always 1.",
            &["version", "app_name"],
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), app_name])
            .set(1);
        Self {
            inner: Arc::new(Inner {
                requests: metrics::int_counter_vec(
                    r,
                    "courier_http_requests_total",
                    "HTTP requests answered, by method, route pattern and status.",
                    &["method", "route", "status"],
                ),
                latency: metrics::histogram_vec(
                    r,
                    "courier_http_request_duration_seconds",
                    "Time from request head to response head, by route pattern.",
                    LATENCY_BUCKETS,
                    &["route"],
                ),
                in_flight: metrics::int_gauge(
                    r,
                    "courier_http_requests_in_flight",
                    "HTTP requests being handled now.",
                ),
                log_lines_dropped: metrics::int_counter(
                    r,
                    "courier_log_lines_dropped_total",
                    "Log lines dropped because the log writer fell behind.",
                ),
                dependency_up: metrics::int_gauge_vec(
                    r,
                    "courier_dependency_up",
                    "1 when the last readiness check of a configured dependency passed.",
                    &["dependency"],
                ),
                upstream_latency: metrics::histogram_vec(
                    r,
                    "courier_upstream_request_duration_seconds",
                    "Outbound HTTP call latency by upstream (cancelled calls not included).",
                    LATENCY_BUCKETS,
                    &["upstream"],
                ),
                upstream_errors: metrics::int_counter_vec(
                    r,
                    "courier_upstream_errors_total",
                    "Failed upstream HTTP calls by upstream and kind (bad_gateway, gateway_timeout).",
                    &["upstream", "kind"],
                ),
                registry,
            }),
        }
    }

    /// Records one finished upstream call to `upstream`.
    pub fn observe_upstream(&self, upstream: &str, seconds: f64, error: Option<&'static str>) {
        self.inner
            .upstream_latency
            .with_label_values(&[upstream])
            .observe(seconds);
        if let Some(kind) = error {
            self.inner
                .upstream_errors
                .with_label_values(&[upstream, kind])
                .inc();
        }
    }

    /// The registry, for subsystems that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The request counter of one method, route and status (cache it: the lookup hashes).
    pub fn request_counter(&self, method: &str, route: &str, status: u16) -> IntCounter {
        let mut buf = [0u8; 3];
        self.inner
            .requests
            .with_label_values(&[method, route, status_str(status, &mut buf)])
    }

    /// The latency histogram of one route (cache it: the lookup hashes).
    pub fn route_latency(&self, route: &str) -> Histogram {
        self.inner.latency.with_label_values(&[route])
    }

    /// The gauge of requests in flight.
    pub fn in_flight(&self) -> &IntGauge {
        &self.inner.in_flight
    }

    /// Sets whether a dependency passed its last readiness check.
    pub fn set_dependency_up(&self, dependency: &str, up: bool) {
        self.inner
            .dependency_up
            .with_label_values(&[dependency])
            .set(i64::from(up));
    }

    /// Brings the dropped-log-lines counter up to `total` (the logger's own count).
    pub fn sync_log_lines_dropped(&self, total: u64) {
        let seen = self.inner.log_lines_dropped.get();
        if total > seen {
            self.inner.log_lines_dropped.inc_by(total - seen);
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.inner.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

/// Formats a status code without allocating.
fn status_str(status: u16, buf: &mut [u8; 3]) -> &str {
    let s = status.min(999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).expect("digits are ASCII")
}
