//! Metrics: the one way every part of courier creates and registers its Prometheus
//! metrics (the functions below), and the realtime metrics the actors keep.
//!
//! Each application has its own registry (so several servers in one process, as in the
//! test suite, keep separate counts); every metric is registered on it at start-up.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Gauges and counters of the realtime core.
#[derive(Clone)]
pub struct RealtimeMetrics {
    /// Open WebSocket connections.
    pub ws_connections: IntGauge,
    /// Open SSE streams (feeds and rooms).
    pub sse_connections: IntGauge,
    /// Rooms the broker holds.
    pub rooms: IntGauge,
    /// Room memberships (WebSocket members, SSE room subscribers not included).
    pub members: IntGauge,
    /// Messages accepted for publishing.
    pub published: IntCounter,
    /// Messages queued to clients (one per recipient).
    pub delivered: IntCounter,
    /// Clients disconnected because they did not keep up.
    pub slow_clients_dropped: IntCounter,
    /// Messages waiting in the broker's mailbox.
    pub broker_mailbox: IntGauge,
    /// Messages waiting in the SSE feed's mailbox.
    pub feed_mailbox: IntGauge,
    /// Frames refused as bad input (error frames sent).
    pub bad_frames: IntCounter,
    /// Cross-node bus: 1 while connected to Redis pub/sub.
    pub bus_connected: IntGauge,
    /// Bytes of room history this node holds.
    pub history_bytes: IntGauge,
    /// Rooms whose history was dropped to keep the node's history budget.
    pub history_evictions: IntCounter,
    /// Idempotency keys this node keeps (embedded mode; with Redis, Redis keeps them).
    pub idempotency_keys: IntGauge,
    /// Rooms forgotten to make space for new ones (`MAX_ROOMS`).
    pub rooms_forgotten: IntCounter,
}

/// Latency buckets in seconds, from sub-millisecond routes and queries to 10 s waits.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Creates and registers an integer gauge.
pub fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help))
}

/// Creates and registers an integer counter.
pub fn int_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help))
}

/// Creates and registers an integer gauge with labels.
pub fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels))
}

/// Creates and registers an integer counter with labels.
pub fn int_counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

/// Creates and registers a histogram with `buckets` (upper bounds, in seconds).
pub fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
    )
}

/// Creates and registers a histogram with labels and `buckets`.
pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        ),
    )
}

/// Registers a metric made by one of the functions above. Names and labels are constants
/// of this crate and of `courier`, so a failure is a programming error.
fn register<M: Collector + Clone + 'static>(registry: &Registry, made: prometheus::Result<M>) -> M {
    let metric = made.expect("valid metric name and labels");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

impl RealtimeMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Self {
        Self {
            ws_connections: int_gauge(
                registry,
                "courier_ws_connections",
                "Open WebSocket connections.",
            ),
            sse_connections: int_gauge(registry, "courier_sse_connections", "Open SSE streams."),
            rooms: int_gauge(
                registry,
                "courier_rooms",
                "Rooms held by this node's broker.",
            ),
            members: int_gauge(
                registry,
                "courier_room_members",
                "Room memberships on this node.",
            ),
            published: int_counter(
                registry,
                "courier_messages_published_total",
                "Room messages published.",
            ),
            delivered: int_counter(
                registry,
                "courier_messages_delivered_total",
                "Room messages queued to recipients (one per recipient).",
            ),
            slow_clients_dropped: int_counter(
                registry,
                "courier_slow_clients_dropped_total",
                "Clients disconnected because their outbound queue was full.",
            ),
            broker_mailbox: int_gauge(
                registry,
                "courier_broker_mailbox_depth",
                "Messages waiting in the RoomBroker's mailbox.",
            ),
            feed_mailbox: int_gauge(
                registry,
                "courier_sse_feed_mailbox_depth",
                "Messages waiting in the SseFeed's mailbox.",
            ),
            bad_frames: int_counter(
                registry,
                "courier_ws_bad_frames_total",
                "Client frames refused with an error frame.",
            ),
            bus_connected: int_gauge(
                registry,
                "courier_bus_connected",
                "1 while the cross-node Redis bus is connected (0 when down or not configured).",
            ),
            history_bytes: int_gauge(
                registry,
                "courier_history_bytes",
                "Bytes of room history held by this node (HISTORY_MAX_BYTES at most).",
            ),
            history_evictions: int_counter(
                registry,
                "courier_history_evictions_total",
                "Rooms whose history was dropped to keep the node's history budget.",
            ),
            idempotency_keys: int_gauge(
                registry,
                "courier_idempotency_keys",
                "Idempotency keys kept by this node without Redis (IDEMPOTENCY_MAX_KEYS at most).",
            ),
            rooms_forgotten: int_counter(
                registry,
                "courier_rooms_forgotten_total",
                "Rooms without subscribers forgotten to make space for new ones (MAX_ROOMS).",
            ),
        }
    }
}
