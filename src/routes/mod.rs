//! HTTP routes and the OpenAPI document that describes them.

pub mod basic;
pub mod health;

use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{AppError, ErrorBody, ErrorDetail};

/// The OpenAPI 3 document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "courier",
        description = "An actor-based realtime messaging server: WebSocket, SSE and REST on actix. \
                       Every error has the body {\"error\": {\"code\", \"message\", \"request_id\"}}; \
                       every response carries X-Request-Id."
    ),
    paths(
        basic::sync_endpoint,
        basic::async_endpoint,
        basic::cpu_intensive,
        basic::io_intensive,
        basic::external_api,
        basic::demo_data,
        basic::echo,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "basics", description = "The seed's basic async routes"),
        (name = "operations", description = "Health, readiness and metrics")
    )
)]
pub struct ApiDoc;

/// Registers every route on an `App` or scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Probes first: they are the most frequent requests and routes are matched in order.
    cfg.service(get("/healthz", health::healthz))
        .service(get("/readyz", health::readyz))
        .service(get("/metrics", health::metrics))
        .service(get("/sync", basic::sync_endpoint))
        .service(get("/async", basic::async_endpoint))
        .service(get("/cpu-intensive", basic::cpu_intensive))
        .service(get("/io-intensive", basic::io_intensive))
        .service(get("/external-api", basic::external_api))
        .service(get("/demo/data", basic::demo_data))
        .service(post("/echo", basic::echo))
        .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()))
        .service(get("/docs", || async {
            HttpResponse::PermanentRedirect()
                .insert_header((header::LOCATION, "/docs/"))
                .finish()
        }));
}

/// A resource answering `method` at `path`; other methods get 405 with `Allow`.
fn resource<F, Args>(path: &str, method: Method, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let allow = method.clone();
    web::resource(path)
        .route(web::method(method).to(handler))
        .default_service(web::to(move || {
            let allow = allow.clone();
            async move { method_not_allowed(allow) }
        }))
}

/// A GET resource.
pub fn get<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource(path, Method::GET, handler)
}

/// A POST resource.
pub fn post<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource(path, Method::POST, handler)
}

/// 405 with `Allow`; the telemetry middleware renders the JSON error body.
fn method_not_allowed(allow: Method) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow.as_str()))
        .finish()
}

/// The answer for a path no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
