//! A courier server in the test process, on a free port, with the test configuration.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use courier::config::{Config, Sources};
use courier::startup::Application;
use tempfile::TempDir;

use super::RECV_LIMIT;

/// A running server and what a client needs to talk to it.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: awc::Client,
    pub handle: ServerHandle,
    /// Stops the server the way SIGTERM does.
    pub shutdown: courier::startup::ShutdownHandle,
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

    /// POSTs `body` as JSON to `path`; returns status, headers and the JSON reply.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, awc::http::header::HeaderMap, serde_json::Value) {
        let mut res = self
            .client
            .post(self.url(path))
            .send_json(body)
            .await
            .expect("request sent");
        let bytes = res.body().limit(16 << 20).await.expect("body read");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (res.status().as_u16(), res.headers().clone(), json)
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
    let shutdown = app.shutdown_handle();
    actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        handle,
        shutdown,
        data_dir,
    }
}

/// Starts courier on a free port with the test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A token for `user` signed with the test secret.
pub fn token(app_config: &Config, user: &str) -> String {
    courier::auth::mint(&app_config.jwt_secret, user, 3600).expect("token")
}

/// The test configuration's secret, for minting tokens.
pub fn test_secret() -> courier::config::Secret {
    let dir = tempfile::tempdir().expect("temp dir");
    test_config(&dir, &[]).jwt_secret
}

/// A token for `user` (an hour) signed with the test secret, for servers run with the
/// test configuration (in this process or as a process of their own).
pub fn user_token(user: &str) -> String {
    courier::auth::mint(&test_secret(), user, 3600).expect("token")
}

/// Publishes `data` into `room` over REST on the server at `port`, as `user`, with an
/// `Idempotency-Key` when given; the status and the body (`Null` when not JSON).
pub async fn publish_as(
    port: u16,
    user: &str,
    room: &str,
    data: serde_json::Value,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = awc::Client::new()
        .post(format!("http://127.0.0.1:{port}/rooms/{room}/messages"))
        .insert_header(("Authorization", format!("Bearer {}", user_token(user))));
    if let Some(key) = key {
        req = req.insert_header(("Idempotency-Key", key));
    }
    let mut res = req
        .send_json(&serde_json::json!({ "data": data }))
        .await
        .expect("the publish is answered");
    let body = res.json().await.unwrap_or(serde_json::Value::Null);
    (res.status().as_u16(), body)
}

/// Polls `/metrics` until `line_prefix` has `value`, or panics after the receive limit.
pub async fn wait_for_metric(app: &TestApp, line_prefix: &str, value: f64) {
    let deadline = std::time::Instant::now() + RECV_LIMIT;
    loop {
        if app.metric(line_prefix).await == Some(value) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{line_prefix} never reached {value} (now {:?})",
            app.metric(line_prefix).await
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}
