//! The Redis pool (bb8-redis).

use bb8_redis::redis;
use bb8_redis::RedisConnectionManager;

use super::{PoolConfig, StoreError};

/// A pool of Redis connections.
pub type RedisPool = bb8::Pool<RedisConnectionManager>;

const STORE: &str = "redis";

/// Builds the pool without connecting; connections open on first use.
pub fn pool(url: &str, settings: &PoolConfig) -> Result<RedisPool, StoreError> {
    let manager = RedisConnectionManager::new(url).map_err(|e| StoreError::Unavailable {
        store: STORE,
        reason: e.to_string(),
    })?;
    Ok(settings.builder().build_unchecked(manager))
}

/// Checks out a connection and sends `PING`.
pub async fn ping(pool: &RedisPool) -> Result<(), StoreError> {
    let mut conn = pool.get().await.map_err(|e| StoreError::Unavailable {
        store: STORE,
        reason: e.to_string(),
    })?;
    let _: String = redis::cmd("PING")
        .query_async(&mut *conn)
        .await
        .map_err(|e| StoreError::Unavailable {
            store: STORE,
            reason: e.to_string(),
        })?;
    Ok(())
}
