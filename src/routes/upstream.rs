//! Concurrent upstream calls through the worker's shared `awc` client: the parallel
//! aggregate (`/aggregate/user/{id}`) and race (`/fastest-price/{product_id}`),
//! plus the small built-in upstreams they call when no real one is configured.
//!
//! Every call is bounded by the client's connect and total timeouts and recorded in
//! `courier_upstream_request_duration_seconds` / `courier_upstream_errors_total` under the
//! name of the part it fetches.

use std::time::Instant;

use actix_web::{web, HttpResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{AppError, ErrorBody};
use crate::http_client;
use crate::state::AppState;

/// GETs `url` as upstream `name`, recording latency and failures.
async fn call(
    state: &AppState,
    client: &awc::Client,
    name: &str,
    url: &str,
) -> Result<Value, AppError> {
    let started = Instant::now();
    let result = http_client::get_json(client, url, &state.config.http_client).await;
    let kind = result.as_ref().err().map(AppError::code);
    state
        .metrics
        .observe_upstream(name, started.elapsed().as_secs_f64(), kind);
    result
}

/// One failed part of an aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartError {
    /// `bad_gateway` (the upstream failed) or `gateway_timeout` (it did not answer in time).
    code: &'static str,
    /// What went wrong.
    message: String,
}

/// A user's profile, posts and comments from the upstream.
#[derive(Debug, Serialize, ToSchema)]
pub struct Aggregate {
    /// The profile (required: without it the request fails).
    #[schema(value_type = Object)]
    profile: Value,
    /// The posts, or `null` when that call failed (see `errors`).
    #[schema(value_type = Object)]
    posts: Value,
    /// The comments, or `null` when that call failed (see `errors`).
    #[schema(value_type = Object)]
    comments: Value,
    /// The parts that failed, by name; absent when none did.
    #[serde(skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    errors: Map<String, Value>,
    /// Time for all three calls, made at once.
    elapsed_ms: f64,
}

/// Parallel calls: profile, posts and comments fetched at once from
/// `AGGREGATE_UPSTREAM_URL` (`/users/{id}`, `/users/{id}/posts`, `/users/{id}/comments`),
/// so the whole takes about as long as the slowest. The profile is required: if it fails,
/// so does the request (502/504, naming it). Posts or comments that fail come back as
/// `null` with the reason under `errors`, and the rest is still served.
#[utoipa::path(
    get, path = "/aggregate/user/{id}", tag = "upstream",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "Profile, posts and comments (a failed optional part is null and named in errors)", body = Aggregate),
        (status = 502, description = "The profile call failed", body = ErrorBody),
        (status = 504, description = "The profile call did not answer in time", body = ErrorBody)
    )
)]
pub async fn aggregate_user(
    state: web::Data<AppState>,
    client: web::Data<awc::Client>,
    id: web::Path<i64>,
) -> Result<web::Json<Aggregate>, AppError> {
    let id = id.into_inner();
    let base = state.aggregate_base.as_str().trim_end_matches('/');
    let started = Instant::now();
    let (profile_url, posts_url, comments_url) = (
        format!("{base}/users/{id}"),
        format!("{base}/users/{id}/posts"),
        format!("{base}/users/{id}/comments"),
    );
    let (profile, posts, comments) = futures_util::join!(
        call(&state, &client, "profile", &profile_url),
        call(&state, &client, "posts", &posts_url),
        call(&state, &client, "comments", &comments_url),
    );
    let profile = profile.map_err(|e| match e {
        AppError::GatewayTimeout(m) => AppError::GatewayTimeout(format!("profile: {m}")),
        AppError::BadGateway(m) => AppError::BadGateway(format!("profile: {m}")),
        other => other,
    })?;
    let mut errors = Map::new();
    let mut part = |name: &str, result: Result<Value, AppError>| match result {
        Ok(v) => v,
        Err(e) => {
            errors.insert(
                name.to_owned(),
                json!(PartError {
                    code: e.code(),
                    message: e.public_message(),
                }),
            );
            Value::Null
        }
    };
    let posts = part("posts", posts);
    let comments = part("comments", comments);
    Ok(web::Json(Aggregate {
        profile,
        posts,
        comments,
        errors,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// The winning price.
#[derive(Debug, Serialize, ToSchema)]
pub struct FastestPrice {
    /// The product asked for.
    product_id: String,
    /// The source that answered first, e.g. `price_source_2`.
    source: String,
    /// What it answered.
    #[schema(value_type = Object)]
    price: Value,
    /// Time to the first good answer.
    elapsed_ms: f64,
}

/// Longest product id accepted.
pub const MAX_PRODUCT_ID_CHARS: usize = 64;

/// A race: asks every price source (`PRICE_SOURCES`) at once and answers with the
/// first success; the calls still running are then cancelled, which closes their
/// connections. A source that fails is ignored while others may still win; all failing is
/// 502, none answering within `HTTP_CLIENT_TIMEOUT_MS` is 504.
#[utoipa::path(
    get, path = "/fastest-price/{product_id}", tag = "upstream",
    params(("product_id" = String, Path, description = "Product id: 1-64 letters, digits, '-' or '_'")),
    responses(
        (status = 200, description = "The first price to arrive", body = FastestPrice),
        (status = 400, description = "Bad product id", body = ErrorBody),
        (status = 502, description = "Every source failed", body = ErrorBody),
        (status = 504, description = "No source answered in time", body = ErrorBody)
    )
)]
pub async fn fastest_price(
    state: web::Data<AppState>,
    client: web::Data<awc::Client>,
    product_id: web::Path<String>,
) -> Result<web::Json<FastestPrice>, AppError> {
    let product_id = product_id.into_inner();
    if product_id.is_empty()
        || product_id.len() > MAX_PRODUCT_ID_CHARS
        || !product_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AppError::BadRequest(format!(
            "product_id must be 1 to {MAX_PRODUCT_ID_CHARS} letters, digits, '-' or '_'"
        )));
    }
    let started = Instant::now();
    let mut race: FuturesUnordered<_> = state
        .price_sources
        .iter()
        .enumerate()
        .map(|(i, template)| {
            let name = format!("price_source_{}", i + 1);
            let url = template.replace("{product_id}", &product_id);
            let (state, client) = (&state, &client);
            async move {
                let result = call(state, client, &name, &url).await;
                (name, result)
            }
        })
        .collect();
    let deadline = actix_rt::time::sleep(state.config.http_client.timeout);
    tokio::pin!(deadline);
    let mut failures = Vec::new();
    loop {
        tokio::select! {
            next = race.next() => match next {
                Some((source, Ok(price))) => {
                    // Dropping `race` cancels the calls still running.
                    return Ok(web::Json(FastestPrice {
                        product_id,
                        source,
                        price,
                        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
                    }));
                }
                Some((source, Err(e))) => failures.push((source, e)),
                None => break,
            },
            _ = &mut deadline => {
                return Err(AppError::GatewayTimeout(format!(
                    "no price source answered within {} ms",
                    state.config.http_client.timeout.as_millis()
                )));
            }
        }
    }
    let summary = failures
        .iter()
        .map(|(s, e)| format!("{s}: {}", e.public_message()))
        .collect::<Vec<_>>()
        .join("; ");
    if failures
        .iter()
        .all(|(_, e)| matches!(e, AppError::GatewayTimeout(_)))
    {
        Err(AppError::GatewayTimeout(format!(
            "no price source answered in time ({summary})"
        )))
    } else {
        Err(AppError::BadGateway(format!(
            "every price source failed ({summary})"
        )))
    }
}

/// Built-in demo upstream: a user's profile.
pub async fn demo_user(id: web::Path<i64>) -> HttpResponse {
    let id = id.into_inner();
    HttpResponse::Ok().json(json!({
        "id": id, "name": format!("Demo user {id}"), "email": format!("user{id}@example.com")
    }))
}

/// Built-in demo upstream: a user's posts.
pub async fn demo_user_posts(id: web::Path<i64>) -> HttpResponse {
    let id = id.into_inner();
    HttpResponse::Ok().json(json!([
        {"id": id * 10 + 1, "author_id": id, "title": "First post"},
        {"id": id * 10 + 2, "author_id": id, "title": "Second post"}
    ]))
}

/// Built-in demo upstream: a user's comments.
pub async fn demo_user_comments(id: web::Path<i64>) -> HttpResponse {
    let id = id.into_inner();
    HttpResponse::Ok().json(json!([
        {"id": id * 100 + 1, "author_id": id, "body": "Nice post"}
    ]))
}

/// Which demo store answers.
#[derive(Debug, Deserialize, IntoParams)]
pub struct StoreQuery {
    /// Store number.
    store: Option<u32>,
}

/// Built-in demo upstream: one store's price for a product (a stable number per store and
/// product).
pub async fn demo_price(
    product_id: web::Path<String>,
    query: web::Query<StoreQuery>,
) -> HttpResponse {
    let store = query.store.unwrap_or(1);
    let product_id = product_id.into_inner();
    let hash = product_id.bytes().fold(u64::from(store) * 7919, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    HttpResponse::Ok().json(json!({
        "store": store, "product_id": product_id, "price_cents": 500 + hash % 9500, "currency": "EUR"
    }))
}
