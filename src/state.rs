//! What every handler can reach: the configuration, metrics and the handles of the
//! application's stores and actors. Built once in [`crate::startup`] and shared through
//! actix app data; nothing in it is mutable shared state.

use std::sync::Arc;

use courier_actors::stores::postgres::PgPool;
use courier_actors::stores::redis::RedisPool;
use tokio::sync::Semaphore;
use url::Url;

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
    /// The API behind `/io-intensive` and `/external-api`.
    pub upstream_url: Arc<Url>,
    /// Bounds CPU-heavy work to one task per core, so it queues instead of oversubscribing
    /// the machine.
    pub cpu_slots: Arc<Semaphore>,
}

/// Handles of the configured external stores; `None` means the embedded backend.
#[derive(Clone, Default)]
pub struct Stores {
    /// Postgres (`DATABASE_URL`).
    pub postgres: Option<PgPool>,
    /// Redis (`REDIS_URL`).
    pub redis: Option<RedisPool>,
    /// Redis for the cache (`REDIS_URL_CACHE`), when it differs from `REDIS_URL`.
    pub redis_cache: Option<RedisPool>,
    /// Redis for sessions (`REDIS_URL_SESSION`), when it differs from `REDIS_URL`.
    pub redis_session: Option<RedisPool>,
    /// MongoDB (`MONGODB_URI`).
    pub mongo: Option<courier_actors::mongodb::Client>,
}
