//! The basic routes: blocking work, async waits, CPU work and upstream I/O, each done
//! so it never stalls the event loop.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{AppError, ErrorBody};
use crate::http_client;
use crate::state::AppState;

/// The default wait of `/sync` and `/async`.
pub const DEFAULT_WAIT_MS: u64 = 1000;
/// Longest wait a client may ask of `/sync` or `/async`.
pub const MAX_WAIT_MS: u64 = 10_000;
/// The default `n` of `/cpu-intensive`: squares of the numbers below ten million.
pub const DEFAULT_CPU_N: u64 = 10_000_000;
/// Largest `n` a client may ask of `/cpu-intensive` (about a second of one core).
pub const MAX_CPU_N: u64 = 200_000_000;

/// Query of `/sync` and `/async`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Milliseconds to wait, 0–10000 (default 1000).
    ms: Option<u64>,
}

/// A completed wait.
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitResponse {
    /// `Completed after 1 second` for the default wait.
    message: String,
    /// How long the request waited, in milliseconds.
    waited_ms: u64,
}

fn wait_ms(q: &WaitQuery) -> Result<u64, AppError> {
    let ms = q.ms.unwrap_or(DEFAULT_WAIT_MS);
    if ms > MAX_WAIT_MS {
        return Err(AppError::Unprocessable(format!(
            "ms must be between 0 and {MAX_WAIT_MS}, got {ms}"
        )));
    }
    Ok(ms)
}

fn completed(ms: u64) -> WaitResponse {
    let message = if ms == 1000 {
        "Completed after 1 second".to_owned()
    } else {
        format!("Completed after {ms} ms")
    };
    WaitResponse {
        message,
        waited_ms: ms,
    }
}

/// Blocking work (a thread sleep), run on a pool of its own (`SYNC_POOL_THREADS`) so other
/// requests, database queries and file I/O go on; 503 when the pool's queue is full.
#[utoipa::path(
    get, path = "/sync", tag = "basics", params(WaitQuery),
    responses(
        (status = 200, description = "Waited on a pool thread", body = WaitResponse),
        (status = 400, description = "Query is not a number", body = ErrorBody),
        (status = 422, description = "ms out of range", body = ErrorBody),
        (status = 503, description = "The blocking pool is busy", body = ErrorBody)
    )
)]
pub async fn sync_endpoint(
    state: web::Data<AppState>,
    q: web::Query<WaitQuery>,
) -> Result<web::Json<WaitResponse>, AppError> {
    let ms = wait_ms(&q)?;
    state
        .pools
        .sync
        .run(move || std::thread::sleep(Duration::from_millis(ms)))
        .await?;
    Ok(web::Json(completed(ms)))
}

/// A non-blocking wait on the event loop's timer.
#[utoipa::path(
    get, path = "/async", tag = "basics", params(WaitQuery),
    responses(
        (status = 200, description = "Waited without blocking", body = WaitResponse),
        (status = 400, description = "Query is not a number", body = ErrorBody),
        (status = 422, description = "ms out of range", body = ErrorBody)
    )
)]
pub async fn async_endpoint(q: web::Query<WaitQuery>) -> Result<web::Json<WaitResponse>, AppError> {
    let ms = wait_ms(&q)?;
    if ms > 0 {
        actix_rt::time::sleep(Duration::from_millis(ms)).await;
    }
    Ok(web::Json(completed(ms)))
}

/// Query of `/cpu-intensive`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CpuQuery {
    /// Sum the squares of 0..n, 1–200000000 (default 10000000).
    n: Option<u64>,
}

/// The sum of squares.
#[derive(Debug, Serialize, ToSchema)]
pub struct CpuResponse {
    /// `sum(i * i for i in range(n))`.
    #[schema(value_type = u64)]
    result: u128,
    /// The `n` used.
    n: u64,
}

/// CPU-bound work, computed off the event loop.
pub fn sum_of_squares(n: u64) -> u128 {
    let mut total: u128 = 0;
    for i in 0..n {
        // black_box keeps the compiler from replacing the loop with the closed form.
        let i = u128::from(std::hint::black_box(i));
        total += i * i;
    }
    total
}

/// `sum(i * i for i in range(n))` (in Python's words), on the CPU pool: one thread per
/// core, so at most one such computation per core at a time; 503 when its queue is full.
#[utoipa::path(
    get, path = "/cpu-intensive", tag = "basics", params(CpuQuery),
    responses(
        (status = 200, description = "The sum of squares", body = CpuResponse),
        (status = 400, description = "Query is not a number", body = ErrorBody),
        (status = 422, description = "n out of range", body = ErrorBody),
        (status = 503, description = "The CPU pool is busy", body = ErrorBody)
    )
)]
pub async fn cpu_intensive(
    state: web::Data<AppState>,
    q: web::Query<CpuQuery>,
) -> Result<web::Json<CpuResponse>, AppError> {
    let n = q.n.unwrap_or(DEFAULT_CPU_N);
    if !(1..=MAX_CPU_N).contains(&n) {
        return Err(AppError::Unprocessable(format!(
            "n must be between 1 and {MAX_CPU_N}, got {n}"
        )));
    }
    let result = state.pools.cpu.run(move || sum_of_squares(n)).await?;
    Ok(web::Json(CpuResponse { result, n }))
}

/// An I/O-bound call: GET the configured upstream through the shared client.
#[utoipa::path(
    get, path = "/io-intensive", tag = "basics",
    responses(
        (status = 200, description = "The upstream's JSON body, as it sent it", body = Object),
        (status = 502, description = "Upstream unreachable or failing", body = ErrorBody),
        (status = 504, description = "Upstream did not answer in time", body = ErrorBody)
    )
)]
pub async fn io_intensive(
    state: web::Data<AppState>,
    client: web::Data<awc::Client>,
) -> Result<web::Json<Value>, AppError> {
    let body = http_client::get_json(
        &client,
        state.upstream_url.as_str(),
        &state.config.http_client,
    )
    .await?;
    Ok(web::Json(body))
}

/// The pooled-client route: the same upstream, the same shared client.
#[utoipa::path(
    get, path = "/external-api", tag = "basics",
    responses(
        (status = 200, description = "The upstream's JSON body, as it sent it", body = Object),
        (status = 502, description = "Upstream unreachable or failing", body = ErrorBody),
        (status = 504, description = "Upstream did not answer in time", body = ErrorBody)
    )
)]
pub async fn external_api(
    state: web::Data<AppState>,
    client: web::Data<awc::Client>,
) -> Result<web::Json<Value>, AppError> {
    io_intensive(state, client).await
}

/// A small built-in upstream: what `/io-intensive` and `/external-api` call when
/// `UPSTREAM_URL` is unset, so they work on a machine with no network.
#[utoipa::path(
    get, path = "/demo/data", tag = "basics",
    responses((status = 200, description = "Sample data", body = Object))
)]
pub async fn demo_data() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "source": "courier demo upstream",
        "generated_at": courier_actors::clock::rfc3339_now(),
        "items": [
            {"id": 1, "name": "alpha", "value": 42},
            {"id": 2, "name": "beta", "value": 7},
            {"id": 3, "name": "gamma", "value": 19}
        ]
    }))
}

/// Returns the JSON object it was sent: a quick check of a client's connection, body
/// encoding and the body-size limit.
#[utoipa::path(
    post, path = "/echo", tag = "basics", request_body = Object,
    responses(
        (status = 200, description = "The object that was sent", body = Object),
        (status = 400, description = "Malformed JSON or wrong content type", body = ErrorBody),
        (status = 413, description = "Body larger than MAX_BODY_BYTES", body = ErrorBody),
        (status = 422, description = "JSON that is not an object", body = ErrorBody)
    )
)]
pub async fn echo(body: web::Json<Map<String, Value>>) -> web::Json<Value> {
    web::Json(json!({ "received": body.into_inner() }))
}

#[cfg(test)]
mod tests {
    use super::sum_of_squares;

    #[test]
    fn matches_the_python_sum() {
        // Python: sum(i * i for i in range(10000000))
        assert_eq!(sum_of_squares(10_000_000), 333_333_283_333_335_000_000);
        assert_eq!(sum_of_squares(4), 14);
    }
}
