//! What every handler can reach: the configuration, metrics and the handles of the
//! application's stores and actors. Built once in [`crate::startup`] and shared through
//! actix app data.
//!
//! State that changes lives in the actors; what is shared here besides their handles is
//! limited to things that are safe to share by design: the connection-number counter (an
//! atomic), the thread pools (bounded queues), the per-address replay budgets (a bounded
//! table behind a lock), the shutdown signal and the metrics registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::Addr;
use courier_actors::blocking::BlockingPool;
use courier_actors::cache::Cache;
use courier_actors::client_queue::QueueLimits;
use courier_actors::db::Database;
use courier_actors::job_worker::{JobEvents, JobWorker};
use courier_actors::metrics::RealtimeMetrics;
use courier_actors::room_broker::BrokerHandle;
use courier_actors::sse_feed::FeedHandle;
use courier_actors::stores::redis::RedisPool;
use courier_actors::upload_store::UploadStore;
use courier_actors::ws_session::SessionConfig;
use url::Url;

use crate::client_budgets::ClientBudgets;
use crate::config::Config;
use crate::metrics::Metrics;

/// Shared application state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The effective configuration.
    pub config: Arc<Config>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The external stores that are configured.
    pub stores: Stores,
    /// The relational and document stores. Handlers query them through their worker's
    /// `DbExecutor`; this handle is for readiness checks and pool metrics.
    pub database: Database,
    /// The API behind `/io-intensive` and `/external-api`.
    pub upstream_url: Arc<Url>,
    /// The API `/aggregate/user/{id}` calls.
    pub aggregate_base: Arc<Url>,
    /// The URL templates (`{product_id}`) `/fastest-price` races.
    pub price_sources: Arc<Vec<String>>,
    /// The cache behind `/expensive-data`.
    pub cache: Addr<Cache>,
    /// The background job worker.
    pub jobs: Addr<JobWorker>,
    /// Job state changes, for `/jobs/{id}/events`.
    pub job_events: JobEvents,
    /// The uploads directory's owner.
    pub uploads: Addr<UploadStore>,
    /// Thread pools for CPU-heavy and blocking work.
    pub pools: Pools,
    /// Budgets of replayed history per client address (REST and SSE).
    pub replay_budgets: Arc<ClientBudgets>,
    /// Turns true when the server starts shutting down: streams end.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// The realtime core's actors.
    pub realtime: Realtime,
}

/// The thread pools, apart from the runtime's blocking pool (database and file I/O).
#[derive(Clone)]
pub struct Pools {
    /// One thread per core: `/cpu-intensive` and the cache's computations.
    pub cpu: BlockingPool,
    /// `SYNC_POOL_THREADS` threads: handlers that block (`/sync`).
    pub sync: BlockingPool,
}

/// Handles of the realtime actors.
#[derive(Clone)]
pub struct Realtime {
    /// The room broadcaster.
    pub broker: BrokerHandle,
    /// The server-wide SSE topics.
    pub feed: FeedHandle,
    /// The realtime metrics.
    pub metrics: RealtimeMetrics,
    /// Limits every WebSocket session gets.
    pub session: Arc<SessionConfig>,
    /// The bounds of every client's queue (WebSocket and SSE).
    pub queue_limits: QueueLimits,
    /// This node's id: the prefix of connection ids, unique across nodes.
    pub node_id: Arc<str>,
    next_id: Arc<AtomicU64>,
}

impl Realtime {
    /// Bundles the realtime handles.
    pub fn new(
        broker: BrokerHandle,
        feed: FeedHandle,
        metrics: RealtimeMetrics,
        session: Arc<SessionConfig>,
        queue_limits: QueueLimits,
        node_id: Arc<str>,
    ) -> Self {
        Self {
            broker,
            feed,
            metrics,
            session,
            queue_limits,
            node_id,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A new connection number, unique on this node.
    pub fn next_number(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new connection id, unique across nodes: `{node}-{n}`.
    pub fn next_member_id(&self) -> Arc<str> {
        format!("{}-{}", self.node_id, self.next_number()).into()
    }
}

/// Handles of the configured external stores; `None` means the embedded backend.
#[derive(Clone, Default)]
pub struct Stores {
    /// Redis (`REDIS_URL`), when it is not a cluster.
    pub redis: Option<RedisPool>,
    /// The bus's commands (`REDIS_URL`): the pool above, or the cluster client.
    pub bus_commands: Option<courier_actors::redis_bus::Commands>,
    /// Redis for the cache (`REDIS_URL_CACHE`), when it differs from `REDIS_URL`.
    pub redis_cache: Option<RedisPool>,
    /// Redis for sessions (`REDIS_URL_SESSION`), when it differs from `REDIS_URL`.
    pub redis_session: Option<RedisPool>,
    /// MongoDB (`MONGODB_URI`).
    pub mongo: Option<courier_actors::mongodb::Client>,
}
