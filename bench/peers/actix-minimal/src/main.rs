//! Baseline for `bench/http.sh`: the same two JSON routes as courier, nothing else.
//! Usage: actix-minimal PORT (two workers, like courier on this machine).

use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

#[derive(Deserialize)]
struct WaitQuery {
    ms: Option<u64>,
}

#[derive(Serialize)]
struct WaitResponse {
    message: String,
    waited_ms: u64,
}

async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

async fn wait(q: web::Query<WaitQuery>) -> web::Json<WaitResponse> {
    let ms = q.ms.unwrap_or(1000);
    if ms > 0 {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    web::Json(WaitResponse {
        message: format!("Completed after {ms} ms"),
        waited_ms: ms,
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(8001);
    HttpServer::new(|| {
        App::new()
            .route("/healthz", web::get().to(healthz))
            .route("/async", web::get().to(wait))
    })
    .workers(2)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
