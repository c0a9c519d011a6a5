//! Liveness, readiness and metrics.

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::{http::header, web, HttpResponse};
use courier_actors::stores::{self, with_timeout, StoreError};
use futures_util::future::join_all;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ErrorDetail;
use crate::state::AppState;
use crate::telemetry::{log_lines_dropped, RequestId};

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    status: &'static str,
}

/// Liveness: answers as long as the process serves requests; checks no dependency.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health))
)]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// One dependency's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `embedded` (no service configured; the in-process backend is used), `ok` or `down`.
    status: &'static str,
    /// How long the check took, for `ok` and `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// Why the dependency is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// For `database`: `postgres` or `sqlite` (the embedded file).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<&'static str>,
}

/// Readiness of every dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    status: &'static str,
    /// Each dependency by name: `database`, `redis`, `redis_cache`, `redis_session`, `mongodb`.
    checks: BTreeMap<&'static str, Check>,
    /// Present when unavailable, in the common error shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

fn embedded() -> Check {
    Check {
        status: "embedded",
        latency_ms: None,
        error: None,
        backend: None,
    }
}

async fn timed(
    name: &'static str,
    state: &AppState,
    fut: impl std::future::Future<Output = Result<(), StoreError>>,
) -> (&'static str, Check) {
    let start = Instant::now();
    let result = with_timeout(name, state.config.readiness_timeout, fut).await;
    let latency_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
    state.metrics.set_dependency_up(name, result.is_ok());
    let check = match result {
        Ok(()) => Check {
            status: "ok",
            latency_ms,
            error: None,
            backend: None,
        },
        Err(e) => Check {
            status: "down",
            latency_ms,
            error: Some(e.to_string()),
            backend: None,
        },
    };
    (name, check)
}

/// Readiness: checks every configured dependency at once, each bounded by
/// `READINESS_TIMEOUT_MS`. 503 when any configured dependency is down. With
/// `REQUIRE_AUTH` on (production), errors, latencies and backends are shown only to the API
/// key or an admin token.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every dependency is usable", body = Readiness),
        (status = 503, description = "A configured dependency is down", body = Readiness)
    )
)]
pub async fn readyz(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> HttpResponse {
    let s = &state.stores;
    let mut checks: BTreeMap<&'static str, Check> = BTreeMap::new();
    let mut probes = Vec::new();
    let db = state.database.clone();
    probes.push(Box::pin(timed("database", &state, async move {
        db.ping().await.map_err(|e| StoreError::Unavailable {
            store: "database",
            reason: e.to_string(),
        })
    }))
        as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>);
    match &s.redis {
        Some(pool) => probes.push(Box::pin(timed("redis", &state, stores::redis::ping(pool)))),
        None => {
            checks.insert("redis", embedded());
        }
    }
    if let Some(pool) = &s.redis_cache {
        probes.push(Box::pin(timed(
            "redis_cache",
            &state,
            stores::redis::ping(pool),
        )));
    }
    if let Some(pool) = &s.redis_session {
        probes.push(Box::pin(timed(
            "redis_session",
            &state,
            stores::redis::ping(pool),
        )));
    }
    match &s.mongo {
        Some(client) => probes.push(Box::pin(timed(
            "mongodb",
            &state,
            stores::mongo::ping(client),
        ))),
        None => {
            checks.insert("mongodb", embedded());
        }
    }
    checks.extend(join_all(probes).await);
    if let Some(check) = checks.get_mut("database") {
        check.backend = Some(state.database.backend().name());
    }

    // Errors, latencies and backends name the deployment's internals: with REQUIRE_AUTH
    // on, only the API key or an admin token sees them; load balancers need the status.
    let details = !state.config.require_auth
        || crate::routes::access::grant(&state, &req).is_ok_and(|g| g.identity.superuser());
    if !details {
        for check in checks.values_mut() {
            check.error = None;
            check.latency_ms = None;
            check.backend = None;
        }
    }
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, c)| c.status == "down")
        .map(|(n, _)| *n)
        .collect();
    if down.is_empty() {
        HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks,
            error: None,
        })
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .json(Readiness {
                status: "unavailable",
                checks,
                error: Some(ErrorDetail {
                    code: "service_unavailable".into(),
                    message: format!("dependency down: {}", down.join(", ")),
                    request_id: Some(request_id.as_str().to_owned()),
                }),
            })
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.database.refresh_pool_metrics();
    state.metrics.sync_log_lines_dropped(log_lines_dropped());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
