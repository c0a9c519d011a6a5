//! HTTP routes and the OpenAPI document that describes them.

pub mod access;
pub mod admin;
pub mod assets;
pub mod asyncapi;
pub mod background;
pub mod basic;
pub mod cache;
pub mod data;
pub mod documents;
pub mod files;
pub mod health;
pub mod rooms;
pub mod sse;
pub mod streaming;
pub mod upstream;
pub mod ws;

use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::{AppError, ErrorBody, ErrorDetail};
use access::Security as SecuritySchemes;

/// The OpenAPI 3 document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "courier",
        description = "An actor-based realtime messaging server: WebSocket, SSE and REST on actix. \
                       Every error has the body {\"error\": {\"code\", \"message\", \"request_id\"}}; \
                       every response carries X-Request-Id. The WebSocket and SSE protocol is \
                       described by the AsyncAPI document at [/asyncapi.json](/asyncapi.json); \
                       a JavaScript client is served at [/client.js](/client.js)."
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
        ws::ws_echo,
        ws::ws_authenticated,
        ws::ws_chat,
        ws::ws_json,
        sse::sse_demo,
        sse::sse_updates,
        sse::sse_heartbeat,
        sse::room_events,
        rooms::publish,
        rooms::history,
        rooms::presence,
        rooms::list,
        admin::disconnect,
        admin::unsubscribe,
        data::create_user,
        data::create_users,
        data::get_user,
        data::get_user_fast,
        data::list_users,
        data::dashboard,
        data::create_order,
        data::create_post,
        data::create_comment,
        data::get_post,
        data::list_data,
        data::create_data,
        documents::create_document,
        documents::get_document,
        streaming::export_users,
        streaming::generate_report,
        cache::expensive_data,
        upstream::aggregate_user,
        upstream::fastest_price,
        background::send_email,
        background::user_action,
        background::analytics,
        background::outbox,
        background::get_job,
        background::list_jobs,
        background::job_events,
        files::upload,
        files::download,
    ),
    modifiers(&SecuritySchemes),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "basics", description = "Blocking, waiting, CPU-bound and upstream work done without stalling the server"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "realtime", description = "WebSockets and Server-Sent Events"),
        (name = "rooms", description = "Rooms over REST and SSE"),
        (name = "data", description = "Users, posts, orders, data rows and documents"),
        (name = "streaming", description = "Responses streamed from the database"),
        (name = "upstream", description = "Concurrent calls to upstream APIs"),
        (name = "jobs", description = "Background jobs: email, actions, the queue"),
        (name = "files", description = "Uploads and downloads"),
        (name = "admin", description = "The server API, for backends: disconnect and unsubscribe clients")
    )
)]
pub struct ApiDoc;

/// Registers every route on an `App` or scope. `documents_max_bytes` bounds `POST /documents`.
pub fn configure(cfg: &mut web::ServiceConfig, documents_max_bytes: usize) {
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
        .service(get("/", assets::index))
        .service(get("/client.js", assets::client_js))
        .service(get("/client.d.ts", assets::client_dts))
        .service(get("/favicon.svg", assets::favicon))
        .service(get("/favicon.ico", assets::favicon))
        .service(get("/asyncapi.json", asyncapi::asyncapi_json))
        .service(get("/ws", ws::ws_echo))
        .service(get("/ws/authenticated", ws::ws_authenticated))
        .service(get("/ws/chat/{client_id}", ws::ws_chat))
        .service(get("/ws/json", ws::ws_json))
        .service(get("/sse", sse::sse_demo))
        .service(get("/sse/updates", sse::sse_updates))
        .service(get("/sse/heartbeat", sse::sse_heartbeat))
        .service(get("/rooms", rooms::list))
        .service(post("/rooms/{room}/messages", rooms::publish))
        .service(get("/rooms/{room}/history", rooms::history))
        .service(get("/rooms/{room}/presence", rooms::presence))
        .service(get("/rooms/{room}/events", sse::room_events))
        .service(post("/admin/disconnect", admin::disconnect))
        .service(post("/admin/unsubscribe", admin::unsubscribe))
        .service(post("/users/batch", data::create_users))
        .service(
            web::resource("/users")
                .route(web::get().to(data::list_users))
                .route(web::post().to(data::create_user))
                .default_service(web::to(|| async { methods_not_allowed("GET, POST") })),
        )
        .service(get("/users/{id}", data::get_user))
        .service(get("/users-fast/{id}", data::get_user_fast))
        .service(get("/dashboard", data::dashboard))
        .service(post("/orders", data::create_order))
        .service(post("/posts", data::create_post))
        .service(get("/posts/{id}", data::get_post))
        .service(post("/posts/{id}/comments", data::create_comment))
        .service(
            web::resource("/data")
                .route(web::get().to(data::list_data))
                .route(web::post().to(data::create_data))
                .default_service(web::to(|| async { methods_not_allowed("GET, POST") })),
        )
        .service(
            post("/documents", documents::create_document)
                .app_data(crate::error::extractor_configs(documents_max_bytes).0),
        )
        .service(get("/documents/{id}", documents::get_document))
        .service(get("/export/users", streaming::export_users))
        .service(get("/generate/report", streaming::generate_report))
        .service(get("/expensive-data/{key}", cache::expensive_data))
        .service(post("/send-email", background::send_email))
        .service(post("/users/{id}/action", background::user_action))
        .service(get("/analytics", background::analytics))
        .service(get("/outbox", background::outbox))
        .service(get("/jobs", background::list_jobs))
        .service(get("/jobs/{id}", background::get_job))
        .service(get("/jobs/{id}/events", background::job_events))
        .service(post("/upload", files::upload))
        .service(get("/download/{filename}", files::download))
        .service(get("/aggregate/user/{id}", upstream::aggregate_user))
        .service(get("/fastest-price/{product_id}", upstream::fastest_price))
        .service(get("/demo/users/{id}", upstream::demo_user))
        .service(get("/demo/users/{id}/posts", upstream::demo_user_posts))
        .service(get(
            "/demo/users/{id}/comments",
            upstream::demo_user_comments,
        ))
        .service(get("/demo/price/{product_id}", upstream::demo_price))
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

/// 405 for a resource that answers several methods.
fn methods_not_allowed(allow: &'static str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allow))
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
