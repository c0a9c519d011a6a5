//! Test support: a courier server on a free port, and small local upstream servers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use courier::config::{Config, Sources};
use courier::startup::Application;
use tempfile::TempDir;

/// A running server and what a client needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: awc::Client,
    pub handle: ServerHandle,
    /// Kept so the data directory lives as long as the server.
    pub data_dir: TempDir,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// GETs `path` and returns status, headers and the body as JSON (or `Null`).
    pub async fn get_json(
        &self,
        path: &str,
    ) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
        let mut res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let body = res.body().limit(16 << 20).await.expect("body read");
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (res.status().as_u16(), res.headers().clone(), json)
    }

    /// GETs `path` and returns status and the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let mut res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent");
        let body = res.body().limit(16 << 20).await.expect("body read");
        (
            res.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// The value of one unlabelled (or fully labelled) sample in `/metrics`.
    pub async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, text) = self.get_text("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// The environment a test server runs with: `APP_ENV=test`, a fresh data directory.
pub fn test_env(data_dir: &TempDir) -> HashMap<String, String> {
    let mut env = HashMap::new();
    env.insert("APP_ENV".into(), "test".into());
    env.insert("APP_DATA_DIR".into(), data_dir.path().display().to_string());
    env
}

/// Loads a test configuration with `overrides` as the process environment.
pub fn test_config(data_dir: &TempDir, overrides: &[(&str, &str)]) -> Config {
    let mut env = test_env(data_dir);
    for (k, v) in overrides {
        env.insert((*k).into(), (*v).into());
    }
    Config::load_from(Sources {
        config_dir: None,
        env_file: None,
        env,
    })
    .expect("test configuration is valid")
}

/// Starts courier on a free port with the test configuration plus `overrides`.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = test_config(&data_dir, overrides);
    let app = Application::build(config)
        .await
        .expect("application builds");
    let port = app.port();
    let handle = app.handle();
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        handle,
        data_dir,
    }
}

/// Starts courier on a free port with the test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A port on loopback that nothing listens on.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// Whether tests that need external services must fail (not skip) when one is missing.
pub fn services_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The URL of a service for service-backed tests: the variable if set, else `default`
/// when something listens there. `None` means skip (only allowed outside CI).
pub fn service_url(var: &str, default: Option<&str>) -> Option<String> {
    let url = std::env::var(var)
        .ok()
        .or_else(|| default.map(str::to_owned))?;
    let reachable = url::Url::parse(&url)
        .ok()
        .and_then(|u| Some((u.host_str()?.to_owned(), u.port_or_known_default()?)))
        .and_then(|(h, p)| {
            std::net::TcpStream::connect_timeout(
                &format!("{h}:{p}").parse().ok()?,
                Duration::from_secs(1),
            )
            .ok()
        })
        .is_some();
    if reachable {
        Some(url)
    } else if services_required() {
        panic!("{var}: the service at {url} is not reachable and CI=true requires it");
    } else {
        eprintln!("skipping: {var} ({url}) is not reachable; CI=true makes this a failure");
        None
    }
}

/// A local upstream on loopback: `/ok` (JSON), `/fail` (500), `/slow` (answers after 10 s),
/// `/not-json` (text).
pub struct Upstream {
    pub base: String,
    pub handle: ServerHandle,
}

pub fn spawn_upstream() -> Upstream {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/ok",
                web::get().to(|| async {
                    HttpResponse::Ok().json(serde_json::json!({"hello": "upstream"}))
                }),
            )
            .route(
                "/fail",
                web::get().to(|| async { HttpResponse::InternalServerError().body("boom") }),
            )
            .route(
                "/slow",
                web::get().to(|| async {
                    actix_rt::time::sleep(Duration::from_secs(10)).await;
                    HttpResponse::Ok().json(serde_json::json!({"late": true}))
                }),
            )
            .route(
                "/not-json",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/plain")
                        .body("plain text")
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Upstream {
        base: format!("http://127.0.0.1:{port}"),
        handle,
    }
}
