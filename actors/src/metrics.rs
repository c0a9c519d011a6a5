//! The realtime metrics the actors keep, registered on the application's registry.

use prometheus::{IntCounter, IntGauge, Registry};

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
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl RealtimeMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Self {
        Self {
            ws_connections: gauge(
                registry,
                "courier_ws_connections",
                "Open WebSocket connections.",
            ),
            sse_connections: gauge(registry, "courier_sse_connections", "Open SSE streams."),
            rooms: gauge(
                registry,
                "courier_rooms",
                "Rooms held by this node's broker.",
            ),
            members: gauge(
                registry,
                "courier_room_members",
                "Room memberships on this node.",
            ),
            published: counter(
                registry,
                "courier_messages_published_total",
                "Room messages published.",
            ),
            delivered: counter(
                registry,
                "courier_messages_delivered_total",
                "Room messages queued to recipients (one per recipient).",
            ),
            slow_clients_dropped: counter(
                registry,
                "courier_slow_clients_dropped_total",
                "Clients disconnected because their outbound queue was full.",
            ),
            broker_mailbox: gauge(
                registry,
                "courier_broker_mailbox_depth",
                "Messages waiting in the RoomBroker's mailbox.",
            ),
            feed_mailbox: gauge(
                registry,
                "courier_sse_feed_mailbox_depth",
                "Messages waiting in the SseFeed's mailbox.",
            ),
            bad_frames: counter(
                registry,
                "courier_ws_bad_frames_total",
                "Client frames refused with an error frame.",
            ),
            bus_connected: gauge(
                registry,
                "courier_bus_connected",
                "1 while the cross-node Redis bus is connected (0 when down or not configured).",
            ),
        }
    }
}
