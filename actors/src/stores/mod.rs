//! Connections to the external stores: Redis and MongoDB (the relational pools are in
//! [`crate::db`]).
//!
//! Each is created lazily — building a pool opens no connection — so the server starts
//! while a dependency is down, reports it on `/readyz`, and starts using it as soon as it
//! comes back. Every operation here is bounded by a timeout from configuration.

pub mod mongo;
pub mod redis;

use std::time::Duration;

/// Connection-pool settings shared by the relational and Redis pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections kept open when idle (asyncpg `min_size`).
    pub min_idle: u32,
    /// Most connections open at once (asyncpg `max_size`).
    pub max_size: u32,
    /// Longest wait to open a connection or take one from the pool.
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed (asyncpg `max_inactive_connection_lifetime`).
    pub idle_timeout: Duration,
    /// Connections older than this are replaced.
    pub max_lifetime: Duration,
}

impl PoolConfig {
    /// A bb8 pool builder with these settings.
    pub fn builder<M: bb8::ManageConnection>(&self) -> bb8::Builder<M> {
        bb8::Pool::builder()
            .max_size(self.max_size)
            .min_idle(Some(self.min_idle))
            .connection_timeout(self.connect_timeout)
            .idle_timeout(Some(self.idle_timeout))
            .max_lifetime(Some(self.max_lifetime))
            // A down server fails the checkout at once instead of retrying until the
            // timeout; the caller answers 503 and the next request tries again.
            .retry_connection(false)
    }
}

/// Why a store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the configured time.
    #[error("{store} did not answer within {timeout:?}")]
    Timeout {
        /// Which store.
        store: &'static str,
        /// The limit that ran out.
        timeout: Duration,
    },
    /// The store is unreachable or refused the operation.
    #[error("{store} is unavailable: {reason}")]
    Unavailable {
        /// Which store.
        store: &'static str,
        /// The driver's explanation.
        reason: String,
    },
}

/// Runs `fut` with a deadline, mapping the elapsed deadline to [`StoreError::Timeout`].
pub async fn with_timeout<T>(
    store: &'static str,
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Timeout { store, timeout }),
    }
}
