//! The Postgres pool (diesel-async over tokio-postgres, no libpq).

use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{PoolSettings, StoreError};

/// A pool of Postgres connections.
pub type PgPool = Pool<AsyncPgConnection>;

const STORE: &str = "postgres";

/// Builds the pool without connecting; connections open on first use.
pub fn pool(url: &str, settings: &PoolSettings) -> PgPool {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
    settings.builder().build_unchecked(manager)
}

/// Checks out a connection and runs `SELECT 1`.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.get().await.map_err(|e| StoreError::Unavailable {
        store: STORE,
        reason: e.to_string(),
    })?;
    diesel::sql_query("SELECT 1")
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Unavailable {
            store: STORE,
            reason: e.to_string(),
        })
}
