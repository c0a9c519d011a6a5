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
    let Some(url) = std::env::var(var)
        .ok()
        .or_else(|| default.map(str::to_owned))
    else {
        if services_required() {
            panic!("{var} is not set and CI=true requires the service (.ci/run sets it)");
        }
        eprintln!("skipping: {var} is not set; CI=true makes this a failure");
        return None;
    };
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

/// Longest a test waits for one frame or event.
pub const RECV_LIMIT: Duration = Duration::from_secs(10);

/// A WebSocket client (awc) that answers nothing on its own: tests see every frame.
pub struct WsClient {
    pub framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
}

/// What the server sent, as a test sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Close(Option<u16>, String),
    Ended,
}

impl WsClient {
    pub async fn connect(app: &TestApp, path: &str) -> Self {
        let url = format!("ws://127.0.0.1:{}{}", app.port, path);
        let (_, framed) = awc::Client::new()
            .ws(url)
            .max_frame_size(16 << 20)
            .connect()
            .await
            .expect("websocket handshake");
        Self { framed }
    }

    pub async fn send(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.framed
            .send(awc::ws::Message::Text(text.to_owned().into()))
            .await
            .expect("frame sent");
    }

    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send(&value.to_string()).await;
    }

    pub async fn send_message(&mut self, msg: awc::ws::Message) {
        use futures_util::SinkExt;
        self.framed.send(msg).await.expect("frame sent");
    }

    /// Writes raw bytes to the socket (for frames the codec would refuse to build).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.framed
            .io_mut()
            .write_all(bytes)
            .await
            .expect("raw write");
        self.framed.io_mut().flush().await.expect("flush");
    }

    /// The next text frame or close, skipping pings.
    pub async fn next(&mut self) -> Received {
        use futures_util::StreamExt;
        loop {
            let frame = actix_rt::time::timeout(RECV_LIMIT, self.framed.next())
                .await
                .expect("a frame within the time limit");
            match frame {
                Some(Ok(awc::ws::Frame::Text(b))) => {
                    return Received::Text(String::from_utf8(b.to_vec()).expect("utf-8"))
                }
                Some(Ok(awc::ws::Frame::Close(reason))) => {
                    return Received::Close(
                        reason.as_ref().map(|r| u16::from(r.code)),
                        reason.and_then(|r| r.description).unwrap_or_default(),
                    )
                }
                Some(Ok(awc::ws::Frame::Ping(_) | awc::ws::Frame::Pong(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(e)) => panic!("websocket error {e}"),
                None => return Received::Ended,
            }
        }
    }

    pub async fn text(&mut self) -> String {
        match self.next().await {
            Received::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    pub async fn json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.text().await).expect("a JSON frame")
    }

    /// The next JSON frame whose type is `kind`, skipping others.
    pub async fn json_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let v = self.json().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    pub async fn close_frame(&mut self) -> (Option<u16>, String) {
        loop {
            match self.next().await {
                Received::Close(code, reason) => return (code, reason),
                Received::Text(_) => continue,
                Received::Ended => panic!("stream ended without a close frame"),
            }
        }
    }
}

/// A masked client frame with any opcode and payload (RFC 6455 §5.2).
pub fn raw_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
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

/// Reads an SSE stream: a line reader over the response body.
pub struct SseClient {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>,
    >,
    buf: String,
}

/// One SSE event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseClient {
    pub async fn connect(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Self {
        Self::connect_url(&app.url(path), last_event_id).await
    }

    pub async fn connect_url(url: &str, last_event_id: Option<&str>) -> Self {
        let mut req = awc::Client::builder()
            .timeout(Duration::from_secs(3600))
            .finish()
            .get(url)
            .insert_header(("Accept", "text/event-stream"));
        if let Some(id) = last_event_id {
            req = req.insert_header(("Last-Event-ID", id));
        }
        let res = req.send().await.expect("SSE request");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        Self {
            body: Box::pin(res),
            buf: String::new(),
        }
    }

    /// The next event with data (comments and `retry:` lines are skipped); `None` at the end.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        use futures_util::StreamExt;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent::default();
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        if has_data {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(v);
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(ev);
                }
                continue;
            }
            let chunk = actix_rt::time::timeout(RECV_LIMIT, self.body.next())
                .await
                .expect("an SSE chunk within the time limit");
            match chunk {
                Some(Ok(bytes)) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }
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

/// Which relational backend a data test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file (always available).
    Sqlite,
    /// The real Postgres at `COURIER_TEST_DATABASE_URL`, in a database made for the test.
    Postgres,
}

/// The Postgres server tests use (`COURIER_TEST_DATABASE_URL`, else the local default).
pub fn postgres_admin_url() -> Option<String> {
    service_url(
        "COURIER_TEST_DATABASE_URL",
        Some("postgres://postgres@127.0.0.1:5432/test"),
    )
}

/// Creates a new, empty database on the test Postgres server and returns its URL.
pub async fn fresh_postgres_database() -> Option<String> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = postgres_admin_url()?;
    let name = format!(
        "courier_t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    );
    let mut conn = AsyncPgConnection::establish(&admin)
        .await
        .expect("connect to the test Postgres");
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let mut url = url::Url::parse(&admin).expect("valid URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A server on `backend`, plus what a test needs to reach its database directly.
pub struct DataApp {
    pub app: TestApp,
    pub backend: Backend,
    /// The Postgres URL, or the SQLite file path.
    pub db_url: String,
}

/// Starts courier on `backend` (a fresh Postgres database per call) with `overrides`.
/// `None` means the backend's service is missing and the test is skipped (never in CI).
pub async fn spawn_data_app(backend: Backend, overrides: &[(&str, &str)]) -> Option<DataApp> {
    match backend {
        Backend::Sqlite => {
            let app = spawn_app_with(overrides).await;
            let db_url = app
                .data_dir
                .path()
                .join(courier_actors::db::SQLITE_FILE)
                .display()
                .to_string();
            Some(DataApp {
                app,
                backend,
                db_url,
            })
        }
        Backend::Postgres => {
            let db_url = fresh_postgres_database().await?;
            let mut all = vec![("DATABASE_URL", db_url.as_str())];
            all.extend_from_slice(overrides);
            let app = spawn_app_with(&all).await;
            Some(DataApp {
                app,
                backend,
                db_url,
            })
        }
    }
}

/// A direct connection to a test's database, for setting up rows and holding locks.
pub enum DirectConn {
    Postgres(diesel_async::AsyncPgConnection),
    Sqlite(
        diesel_async::sync_connection_wrapper::SyncConnectionWrapper<
            diesel::sqlite::SqliteConnection,
        >,
    ),
}

impl DirectConn {
    pub async fn open(data: &DataApp) -> Self {
        Self::connect(data.backend, &data.db_url).await
    }

    /// A connection to `url` (a Postgres URL or a SQLite file). On SQLite it waits for the
    /// server's writers (the job worker takes the write lock every poll) instead of
    /// failing with "database is locked".
    pub async fn connect(backend: Backend, url: &str) -> Self {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        match backend {
            Backend::Postgres => Self::Postgres(
                diesel_async::AsyncPgConnection::establish(url)
                    .await
                    .expect("connect"),
            ),
            Backend::Sqlite => {
                let mut conn =
                    diesel_async::sync_connection_wrapper::SyncConnectionWrapper::establish(url)
                        .await
                        .expect("open");
                conn.batch_execute("PRAGMA busy_timeout = 10000")
                    .await
                    .expect("busy timeout");
                Self::Sqlite(conn)
            }
        }
    }

    /// Runs SQL statements (no results).
    pub async fn exec(&mut self, sql: &str) {
        use diesel_async::SimpleAsyncConnection;
        match self {
            Self::Postgres(c) => c.batch_execute(sql).await,
            Self::Sqlite(c) => c.batch_execute(sql).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A TCP proxy on loopback in front of a service: stopping it drops every connection and
/// refuses new ones, as a crashed server would; starting it again serves on the same port.
pub struct Proxy {
    pub port: u16,
    target: String,
    tasks: std::rc::Rc<std::cell::RefCell<Vec<actix_rt::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Self {
        let mut proxy = Self {
            port: 0,
            target: target.to_owned(),
            tasks: Default::default(),
        };
        proxy.serve().await;
        proxy
    }

    async fn serve(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("proxy bind");
        self.port = listener.local_addr().unwrap().port();
        let target = self.target.clone();
        let tasks = self.tasks.clone();
        let accept = actix_rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = actix_rt::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.borrow_mut().push(conn);
            }
        });
        self.tasks.borrow_mut().push(accept);
    }

    /// A proxy in front of the service at `url` (its port, or `default_port`), and `url`
    /// with the proxy's port: what the server under test should connect to.
    pub async fn in_front_of(url: &str, default_port: u16) -> (Self, String) {
        let real = url::Url::parse(url).expect("valid URL");
        let target = format!(
            "{}:{}",
            real.host_str().expect("a host"),
            real.port().unwrap_or(default_port)
        );
        let proxy = Self::start(&target).await;
        let mut through = real;
        through
            .set_port(Some(proxy.port))
            .expect("a port can be set");
        (proxy, through.to_string())
    }

    /// Closes the listener and every proxied connection.
    pub fn stop(&self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.abort();
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        self.serve().await;
    }
}

impl TestApp {
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
}

/// What the SMTP sink does with the next deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// Accept every message.
    Accept,
    /// Answer `451` (try again later) to this many more deliveries, then accept.
    RejectTransient(u32),
    /// Answer `550` (permanent failure) to every delivery.
    RejectPermanent,
    /// Accept the connection and never say anything.
    Hang,
}

/// An SMTP server on loopback that keeps what it receives.
pub struct SmtpSink {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<SinkMode>>,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SmtpSink {
    /// Starts the sink on its own thread (so it outlives any one test runtime).
    pub fn start(mode: SinkMode) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, r, c) = (mode.clone(), received.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (m, r) = (m.clone(), r.clone());
                std::thread::spawn(move || {
                    if *m.lock().unwrap() == SinkMode::Hang {
                        // Say nothing; hold the connection until the client gives up.
                        let mut buf = [0u8; 1024];
                        while matches!(std::io::Read::read(&mut stream, &mut buf), Ok(n) if n > 0) {
                        }
                        return;
                    }
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut say = |s: &str| stream.write_all(s.as_bytes());
                    if say("220 sink ESMTP\r\n").is_err() {
                        return;
                    }
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            "250 sink\r\n".to_owned()
                        } else if upper.starts_with("MAIL FROM") {
                            let mut mode = m.lock().unwrap();
                            match *mode {
                                SinkMode::RejectTransient(n) if n > 0 => {
                                    *mode = if n == 1 {
                                        SinkMode::Accept
                                    } else {
                                        SinkMode::RejectTransient(n - 1)
                                    };
                                    "451 4.3.0 try again later\r\n".to_owned()
                                }
                                SinkMode::RejectPermanent => {
                                    "550 5.1.1 mailbox unavailable\r\n".to_owned()
                                }
                                _ => "250 OK\r\n".to_owned(),
                            }
                        } else if upper.starts_with("DATA") {
                            if say("354 go ahead\r\n").is_err() {
                                return;
                            }
                            let mut message = String::new();
                            loop {
                                line.clear();
                                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                message.push_str(&line);
                            }
                            r.lock().unwrap().push(message);
                            "250 OK queued\r\n".to_owned()
                        } else if upper.starts_with("QUIT") {
                            let _ = say("221 bye\r\n");
                            return;
                        } else {
                            "250 OK\r\n".to_owned()
                        };
                        if say(&reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            mode,
            received,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: SinkMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The messages accepted so far (headers and body).
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Follows `/jobs/{id}/events` at `base` until the job reaches `state`; returns that event.
pub async fn wait_for_job(base: &str, id: i64, state: &str) -> serde_json::Value {
    let mut sse = SseClient::connect_url(&format!("{base}/jobs/{id}/events"), None).await;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), sse.next_event())
            .await
            .unwrap_or_else(|_| panic!("job {id} did not reach {state} in time"))
            .unwrap_or_else(|| panic!("the events of job {id} ended before {state}"));
        assert_eq!(event.event.as_deref(), Some("job"));
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        if data["state"] == state {
            return data;
        }
    }
}

/// Longest a test waits for a server process to print its listening line.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// The courier binary run as an operator runs it, from `dir`, with only `env` (plus `PATH`)
/// and logging at `info`.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub port: u16,
    /// Its log lines (stderr); the channel ends when the process closes stderr.
    pub log: std::sync::mpsc::Receiver<String>,
}

/// Starts the binary on a free port and waits for its listening line. Its stderr is read
/// on a thread of its own, so the server never blocks on a full pipe.
pub fn start_server_process(dir: &std::path::Path, env: &[(&str, &str)]) -> ServerProcess {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_PORT", "0")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("courier starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = loop {
        let line = rx
            .recv_timeout(STARTUP_LIMIT)
            .expect("server logs its address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap();
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    ServerProcess {
        child,
        port,
        log: rx,
    }
}
