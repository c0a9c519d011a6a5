//! `/expensive-data/{key}`: a cached expensive operation, answered by the `Cache`
//! actor (single-flight, TTL, Redis or in process).

use actix_web::web;
use courier_actors::cache::{CacheError, GetOrCompute};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

/// Longest cache key accepted.
pub const MAX_KEY_CHARS: usize = 128;

/// A cached or freshly computed value.
#[derive(Debug, Serialize, ToSchema)]
pub struct Expensive {
    /// The computed value: the key's digest after `EXPENSIVE_ROUNDS` rounds of SHA-256.
    #[schema(value_type = Object)]
    data: Value,
    /// True when served from the cache.
    cached: bool,
}

/// Returns the expensive value of `key`: from the cache when it is there (`cached: true`),
/// otherwise computed once — concurrent requests for the same key share one computation —
/// and kept for `CACHE_TTL_SECS`. If the Redis cache is down the value is still computed and
/// served.
#[utoipa::path(
    get, path = "/expensive-data/{key}", tag = "basics",
    params(("key" = String, Path, description = "1-128 letters, digits, '-', '_', '.' or ':'")),
    responses(
        (status = 200, description = "The value and whether it came from the cache", body = Expensive),
        (status = 400, description = "Bad key", body = ErrorBody)
    )
)]
pub async fn expensive_data(
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> Result<web::Json<Expensive>, AppError> {
    let key = key.into_inner();
    if key.is_empty()
        || key.len() > MAX_KEY_CHARS
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(AppError::BadRequest(format!(
            "key must be 1 to {MAX_KEY_CHARS} letters, digits, '-', '_', '.' or ':'"
        )));
    }
    let lookup = state
        .cache
        .send(GetOrCompute { key })
        .await
        .map_err(|e| AppError::Unavailable(format!("the cache is unavailable: {e}")))?
        .map_err(|e| match e {
            CacheError::Busy => AppError::Unavailable(e.to_string()),
            CacheError::Compute(_) => AppError::Internal(e.to_string()),
        })?;
    Ok(web::Json(Expensive {
        data: (*lookup.data).clone(),
        cached: lookup.cached,
    }))
}
