//! Hostile input: what one client can make the server hold, and how it is refused. Each
//! case runs its own server, bounded in time, on loopback. Memory is read from the server
//! process's `/proc/<pid>/status`, so those cases run the binary in a process of its own.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    publish_as, spawn_app_with, start_server_process, wait_for_metric, ServerProcess, SseClient,
    TestApp, WsClient,
};

const MIB: u64 = 1 << 20;

/// The binary in a process of its own, with `env`, in a fresh directory.
struct Server {
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let process = start_server_process(dir.path(), env);
        Self { process, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.process.port)
    }

    fn rss(&self) -> u64 {
        self.process.resident_bytes()
    }

    async fn connect(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(("127.0.0.1", self.process.port))
            .await
            .unwrap()
    }

    /// `/healthz` answers within `limit`.
    async fn healthy_within(&self, limit: Duration) {
        let started = Instant::now();
        let res = awc::Client::builder()
            .timeout(limit)
            .finish()
            .get(self.url("/healthz"))
            .send()
            .await
            .expect("/healthz answers");
        assert_eq!(res.status().as_u16(), 200);
        assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    }
}

/// Reads an HTTP response head from `stream`; returns its status.
async fn read_status(stream: &mut tokio::net::TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Row 1: a WebSocket frame header declaring 2^40 bytes, then as much data as the server
/// takes. The server closes with 1009 at once, from the header, drops the connection
/// shortly after, and keeps none of it.
#[actix_rt::test]
async fn a_frame_declaring_a_terabyte_is_refused_from_its_header() {
    let server = Server::start(&[]);
    let before = server.rss();
    let mut ws = server.connect().await;
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(read_status(&mut ws).await, 101);
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let sent_at = Instant::now();
    ws.write_all(&header).await.unwrap();
    let (mut reader, writer) = ws.into_split();
    // Keep sending, as the attacker would, until the server drops the connection.
    let flood = actix_rt::spawn(flood(writer));
    let mut close = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), reader.read_exact(&mut close))
        .await
        .expect("a close frame at once")
        .unwrap();
    assert_eq!(close[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1009);
    let closed_in = sent_at.elapsed();
    // Then the connection is dropped, while the client is still sending.
    let (sent, dropped_in) = flood.await.unwrap();
    let growth = server.rss().saturating_sub(before);
    eprintln!(
        "2^40-byte frame: close 1009 after {closed_in:?}, connection dropped after \
         {dropped_in:?}; {} MiB sent meanwhile; resident memory grew {} KiB",
        sent / MIB,
        growth / 1024
    );
    assert!(
        dropped_in < Duration::from_secs(4),
        "the connection was held"
    );
    assert!(growth < 16 * MIB, "memory grew by {growth} bytes");
    server.healthy_within(Duration::from_secs(2)).await;
}

/// A message sent in pieces is refused once the pieces pass the limit, before more is kept.
#[actix_rt::test]
async fn a_fragmented_message_is_bounded_as_a_whole() {
    let app = spawn_app_with(&[("WS_MAX_MESSAGE_BYTES", "1024")]).await;
    let mut ws = WsClient::connect(&app, "/ws/json?name=frag").await;
    // A first text fragment (FIN clear) of 600 bytes, then a continuation of 600.
    let mut first = crate::helpers::raw_frame(0x1, &[b' '; 600]);
    first[0] &= 0x7f;
    ws.send_raw(&first).await;
    let mut more = crate::helpers::raw_frame(0x0, &[b' '; 600]);
    more[0] &= 0x7f;
    ws.send_raw(&more).await;
    let (code, _) = ws.close_frame().await;
    assert_eq!(code, Some(1009));
}

/// Sends as fast as the connection takes until the server drops it (or 15 s); returns the
/// bytes sent and how long the server let it go on.
async fn flood(mut writer: tokio::net::tcp::OwnedWriteHalf) -> (u64, Duration) {
    let started = Instant::now();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(15) && writer.write_all(&chunk).await.is_ok() {
        sent += chunk.len() as u64;
    }
    (sent, started.elapsed())
}

fn multipart_request(boundary: &str, body_len: Option<u64>) -> String {
    let length = match body_len {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".into(),
    };
    format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\n{length}\r\n"
    )
}

/// Rows 2 and 3: a form whose boundary never comes, a part header that never ends, and the
/// bodies that made the old form reader panic. Each is refused early with a status, and
/// memory stays flat while the client is still sending.
#[actix_rt::test]
async fn malformed_forms_are_refused_early_and_never_crash() {
    let server = Server::start(&[]);
    let before = server.rss();
    for (name, start) in [
        ("a boundary that never appears", String::new()),
        (
            "a part header that never ends",
            "--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nX-Pad: "
                .to_owned(),
        ),
    ] {
        let mut stream = server.connect().await;
        let total = 200 * MIB;
        stream
            .write_all(multipart_request("xyz", Some(total)).as_bytes())
            .await
            .unwrap();
        stream.write_all(start.as_bytes()).await.unwrap();
        let (mut reader, writer) = stream.into_split();
        let flood = actix_rt::spawn(flood(writer));
        let mut head = vec![0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut head))
            .await
            .unwrap_or_else(|_| panic!("{name}: an answer while the body is still coming"))
            .unwrap();
        let status = String::from_utf8_lossy(&head[9..12]).into_owned();
        let (sent, dropped_in) = flood.await.unwrap();
        eprintln!(
            "{name}: {status}; the connection was dropped after {dropped_in:?} and {} MiB",
            sent / MIB
        );
        assert!(status == "400" || status == "413", "{name}: {status}");
        assert!(
            dropped_in < Duration::from_secs(4),
            "{name}: the connection was held"
        );
    }
    // Bodies that crashed the old reader: each gets an answer on a connection of its own.
    for (boundary, body) in [
        ("a", "\n"),
        ("a", "--a"),
        ("a", "--a\r\n\r\n"),
        ("b", "\r\n--b--"),
    ] {
        let mut stream = server.connect().await;
        stream
            .write_all(multipart_request(boundary, Some(body.len() as u64)).as_bytes())
            .await
            .unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let status = read_status(&mut stream).await;
        assert_eq!(status, 400, "boundary={boundary} body={body:?}");
    }
    let growth = server.rss().saturating_sub(before);
    assert!(growth < 32 * MIB, "memory grew by {growth} bytes");
    server.healthy_within(Duration::from_secs(2)).await;
}

/// Row 4: raw line breaks inside published data never split an SSE event: delivered and
/// replayed, every event's data is one line of JSON.
#[actix_rt::test]
async fn line_breaks_in_published_data_never_split_an_sse_event() {
    let app = spawn_app_with(&[]).await;
    let mut sse = SseClient::connect(&app, "/rooms/lobby/events", None).await;
    let body = "{\"data\": {\"text\": \"a\",\n\r\n  \"n\" :\r 1}}";
    let mut res = app
        .client
        .post(app.url("/rooms/lobby/messages"))
        .insert_header(("Authorization", format!("Bearer {}", token("alice"))))
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{:?}", res.body().await);
    let delivered = sse.next_event().await.expect("the event, live");
    let mut replay = SseClient::connect(&app, "/rooms/lobby/events", Some("0")).await;
    let replayed = replay.next_event().await.expect("the event, replayed");
    for event in [delivered, replayed] {
        assert!(!event.data.contains('\n'), "{:?}", event.data);
        let parsed: Value = serde_json::from_str(&event.data).expect("one line of JSON");
        assert_eq!(parsed["data"], json!({"text": "a", "n": 1}));
    }
}

fn token(user: &str) -> String {
    courier::auth::mint(&crate::helpers::test_secret(), user, 3600).unwrap()
}

/// Row 5 and the code-reading item on history: many clients publishing large payloads
/// into many rooms. Inbound bytes are rate limited per connection and room history is
/// bounded in bytes per room and per node, so memory stays bounded.
#[actix_rt::test]
async fn large_payloads_into_many_rooms_stay_within_the_history_budget() {
    let server = Server::start(&[("HISTORY_MAX_BYTES", "16777216")]);
    let before = server.rss();
    let payload = "x".repeat(60_000);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut clients = Vec::new();
    for c in 0..10 {
        let url = format!("ws://127.0.0.1:{}/ws/json?name=p{c}", server.process.port);
        let payload = payload.clone();
        clients.push(actix_rt::spawn(async move {
            use futures_util::SinkExt;
            let (_, mut ws) = awc::Client::new()
                .ws(url)
                .max_frame_size(16 << 20)
                .connect()
                .await
                .unwrap();
            let mut sent = 0u64;
            let mut i = 0;
            while Instant::now() < deadline {
                let frame =
                    json!({"type": "publish", "room": format!("r{}", i % 500), "data": payload});
                if ws
                    .send(awc::ws::Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                sent += 60_000;
                i += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for c in clients {
        sent += c.await.unwrap();
    }
    let growth = server.rss().saturating_sub(before);
    let metrics = awc::Client::new()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .body()
        .limit(1 << 20)
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    let history: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("courier_history_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!(
        "10 publishers: {} MiB sent; history {} MiB; resident memory grew {} MiB",
        sent / MIB,
        history as u64 / MIB,
        growth / MIB
    );
    assert!(history <= 16.0 * MIB as f64);
    assert!(growth < 96 * MIB, "memory grew by {} MiB", growth / MIB);
    server.healthy_within(Duration::from_secs(2)).await;
}

/// Row 6: rooms held only by subscribers are let go when the last one leaves, so opening
/// and closing streams cannot fill `MAX_ROOMS`.
#[actix_rt::test]
async fn rooms_held_only_by_subscribers_are_let_go() {
    let app = spawn_app_with(&[("MAX_ROOMS", "50")]).await;
    for i in 0..50 {
        let sse = SseClient::connect(&app, &format!("/rooms/f{i}/events"), None).await;
        drop(sse);
    }
    wait_for_metric(&app, "courier_rooms", 0.0).await;
    let (status, _) = publish(&app, "fresh", json!("hello")).await;
    assert_eq!(status, 201);
}

async fn publish(app: &TestApp, room: &str, data: Value) -> (u16, Value) {
    publish_as(app.port, "alice", room, data, None).await
}

/// A full node lets go of its quietest room without subscribers to make space for a new
/// one: memory holds at most MAX_ROOMS rooms, and the store keeps the others.
#[actix_rt::test]
async fn a_full_node_makes_space_from_its_quietest_unwatched_room() {
    let app = spawn_app_with(&[("MAX_ROOMS", "3")]).await;
    let mut watcher = crate::helpers::WsClient::connect(&app, "/ws/json").await;
    watcher
        .send_json(json!({"type": "join", "room": "a"}))
        .await;
    watcher.json_of("joined").await;
    for room in ["a", "b", "c", "d", "e"] {
        let (status, body) = publish(&app, room, json!(1)).await;
        assert_eq!(status, 201, "{room}: {body}");
    }
    wait_for_metric(&app, "courier_rooms_forgotten_total", 2.0).await;
    assert_eq!(app.metric("courier_rooms").await, Some(3.0));
    // The watched room stays; the others are let go quietest first, and come back from the
    // store with their numbering.
    let (_, _, rooms) = app.get_json("/rooms").await;
    let mut listed: Vec<(String, u64)> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["room"].as_str().unwrap().to_owned(),
                r["last_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let all: Vec<(String, u64)> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|r| (r.to_string(), 1))
        .collect();
    assert_eq!(listed, all);
    let (_, body) = publish(&app, "b", json!(2)).await;
    assert_eq!(body["seq"], 2, "b continues its numbering");
}

/// Row 7: made-up HTTP methods share the metric label `other`.
#[actix_rt::test]
async fn made_up_methods_do_not_make_metric_series() {
    let app = spawn_app_with(&[]).await;
    for i in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        let head =
            format!("X{i}AAAAAAAA /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(read_status(&mut stream).await, 405);
    }
    let (_, text) = app.get_text("/metrics").await;
    let methods: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("courier_http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1)?.split('"').next())
        .collect();
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        methods.iter().all(|m| ["GET", "other"].contains(m)),
        "{methods:?}"
    );
}

/// Row 8: request bodies that trickle in are cut off; their connections are closed.
#[actix_rt::test]
async fn slow_request_bodies_are_cut_off() {
    let app = spawn_app_with(&[
        ("BODY_TIMEOUT_MS", "1000"),
        ("BODY_MIN_BYTES_PER_SEC", "100"),
    ])
    .await;
    let mut conns = Vec::new();
    for _ in 0..100 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .unwrap();
        c.write_all(
            b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n{",
        )
        .await
        .unwrap();
        conns.push(c);
    }
    let started = Instant::now();
    let mut open = conns.len();
    let mut statuses = std::collections::BTreeMap::new();
    while open > 0 && started.elapsed() < Duration::from_secs(15) {
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        open = 0;
        for c in conns.iter_mut() {
            // One more byte every half second: 2 bytes/s, far below the minimum.
            if c.write_all(b" ").await.is_ok() {
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(1), c.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => {}
                    Ok(Ok(n)) => {
                        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let status = head.split_whitespace().nth(1).unwrap_or("?").to_owned();
                        *statuses.entry(status).or_insert(0) += 1;
                    }
                    Err(_) => open += 1,
                }
            }
        }
    }
    eprintln!(
        "slow bodies: answered {statuses:?}; {open} still open after {:?}",
        started.elapsed()
    );
    assert_eq!(open, 0, "connections still open");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(statuses.get("408").is_some_and(|n| *n > 0), "{statuses:?}");
}

/// Row 9: blocking handlers run on a pool of their own; data queries do not wait behind
/// them, and past the pool's queue they are refused at once.
#[actix_rt::test]
async fn blocking_handlers_never_delay_data_queries() {
    let app = spawn_app_with(&[("SYNC_POOL_THREADS", "4"), ("BLOCKING_QUEUE", "4")]).await;
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(1000))
        .timeout(Duration::from_secs(30))
        .finish();
    let mut waiting = Vec::new();
    for _ in 0..100 {
        let req = client.get(app.url("/sync?ms=2000")).send();
        waiting.push(actix_rt::spawn(async move {
            req.await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    // The flood has arrived once most of it was refused.
    let refused = "courier_http_requests_total{method=\"GET\",route=\"/sync\",status=\"503\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric(refused).await.unwrap_or(0.0) < 90.0 {
        assert!(Instant::now() < deadline, "the /sync flood was not refused");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let (status, _, _) = app.get_json("/users/1").await;
    let took = started.elapsed();
    assert_eq!(status, 404);
    assert!(took < Duration::from_secs(1), "GET /users/1 took {took:?}");
    let mut statuses = std::collections::BTreeMap::new();
    for w in waiting {
        *statuses.entry(w.await.unwrap()).or_insert(0) += 1;
    }
    eprintln!("100 x /sync: {statuses:?}; /users/1 answered in {took:?}");
    let ok = statuses.get(&200).copied().unwrap_or(0);
    assert!(
        (4..=8).contains(&ok),
        "4 threads and 4 queued: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&503).copied().unwrap_or(0),
        100 - ok,
        "{statuses:?}"
    );
}

/// Row 10: data nested deeper than `JSON_MAX_DEPTH` is refused, over REST and WebSocket.
#[actix_rt::test]
async fn deeply_nested_data_is_refused() {
    let app = spawn_app_with(&[]).await;
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let mut res = app
        .client
        .post(app.url("/rooms/lobby/messages"))
        .insert_header(("Authorization", format!("Bearer {}", token("alice"))))
        .insert_header(("content-type", "application/json"))
        .send_body(format!("{{\"data\": {deep}}}"))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unprocessable_entity");
    let mut ws = WsClient::connect(&app, "/ws/json?name=deep").await;
    ws.send(&format!(
        "{{\"type\":\"publish\",\"room\":\"lobby\",\"data\":{},\"id\":\"d1\"}}",
        format_args!("{}{}", "[".repeat(100), "]".repeat(100))
    ))
    .await;
    let error = ws.json_of("error").await;
    assert_eq!(error["code"], "invalid_message");
    let (_, _, history) = app.get_json("/rooms/lobby/history").await;
    assert_eq!(history["events"], json!([]));
}

/// Row 11: an invalid URL's password is never printed.
#[test]
fn invalid_urls_never_print_their_password() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in [
        ("UPSTREAM_URL", "http://u:s3cret@"),
        ("AGGREGATE_UPSTREAM_URL", "https://u:s3cret@/x"),
        ("PRICE_SOURCES", "http://u:s3cret@/p/{product_id},nope"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
            .arg("config")
            .current_dir(dir.path())
            .env_clear()
            .env(name, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name), "{err}");
        assert!(
            !err.contains("s3cret"),
            "{name} printed its password: {err}"
        );
    }
}

/// Row 12: a refused join leaves no trace in the session, and every leave is answered.
#[actix_rt::test]
async fn a_refused_join_leaves_no_trace_and_every_leave_is_answered() {
    let app = spawn_app_with(&[("MAX_ROOMS", "1")]).await;
    let mut ws = WsClient::connect(&app, "/ws/json?name=one").await;
    ws.send_json(json!({"type": "join", "room": "a"})).await;
    assert_eq!(ws.json_of("joined").await["room"], "a");
    ws.send_json(json!({"type": "join", "room": "b"})).await;
    assert_eq!(ws.json_of("error").await["code"], "too_many_rooms");
    ws.send_json(json!({"type": "leave", "room": "b"})).await;
    let answer = ws.json_of("error").await;
    assert_eq!(answer["code"], "not_joined", "{answer}");
    ws.send_json(json!({"type": "leave", "room": "a"})).await;
    assert_eq!(ws.json_of("left").await["room"], "a");
}

/// Row 13: shutdown ends every stream, `/sse` included, without waiting out the timeout.
#[actix_rt::test]
async fn shutdown_ends_the_sse_demo_stream_at_once() {
    let server = Server::start(&[("SHUTDOWN_TIMEOUT_SECS", "30")]);
    let mut sse = SseClient::connect_url(&server.url("/sse?count=100"), None).await;
    assert!(sse.next_event().await.is_some());
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut process = server.process;
    let exited = loop {
        if let Some(code) = process.child.try_wait().unwrap() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The stream ended rather than being cut mid-event.
    while sse.next_event().await.is_some() {}
}

/// Code-reading item: uploads have a disk budget and a free-space floor (507).
#[actix_rt::test]
async fn uploads_stop_at_the_disk_budget_and_the_free_space_floor() {
    let app = spawn_app_with(&[("UPLOAD_DISK_BUDGET_BYTES", "150000")]).await;
    let body = |n: usize| {
        let mut b = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n"
            .to_vec();
        b.extend(std::iter::repeat_n(b'z', n));
        b.extend_from_slice(b"\r\n--b--\r\n");
        b
    };
    let upload = |n: usize| {
        app.client
            .post(app.url("/upload"))
            .insert_header(("content-type", "multipart/form-data; boundary=b"))
            .send_body(body(n))
    };
    assert_eq!(upload(100_000).await.unwrap().status().as_u16(), 201);
    let mut res = upload(100_000).await.unwrap();
    assert_eq!(res.status().as_u16(), 507);
    let reply: Value = res.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "insufficient_storage");
    assert_eq!(
        uploaded_files(&app),
        2,
        "one upload and its metadata; nothing of the refused one"
    );

    let floor = spawn_app_with(&[("UPLOAD_MIN_FREE_BYTES", "1125899906842624")]).await;
    let res = floor
        .client
        .post(floor.url("/upload"))
        .insert_header(("content-type", "multipart/form-data; boundary=b"))
        .send_body(body(10))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 507);
}

fn uploaded_files(app: &TestApp) -> usize {
    std::fs::read_dir(app.data_dir.path().join("uploads"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Code-reading item: history reads and `since` replays spend a per-client budget.
#[actix_rt::test]
async fn history_reads_and_replays_are_rate_limited() {
    let app = spawn_app_with(&[
        ("REPLAY_BYTES_BURST", "20000"),
        ("REPLAY_BYTES_PER_SEC", "1024"),
    ])
    .await;
    for i in 0..20 {
        let (status, _) = publish(&app, "busy", json!("x".repeat(1000) + &i.to_string())).await;
        assert_eq!(status, 201);
    }
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _, _) = app.get_json("/rooms/busy/history?limit=1000").await;
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 429, 429]);
    let mut ws = WsClient::connect(&app, "/ws/json?name=replayer").await;
    ws.send_json(json!({"type": "join", "room": "busy", "since": 0}))
        .await;
    ws.json_of("joined").await;
    ws.send_json(json!({"type": "leave", "room": "busy"})).await;
    ws.json_of("left").await;
    // The replay cost more than the burst: the next one waits for the budget to refill.
    ws.send_json(json!({"type": "join", "room": "busy", "since": 0}))
        .await;
    assert_eq!(ws.json_of("error").await["code"], "rate_limited");
    // Joining without a replay costs nothing.
    ws.send_json(json!({"type": "join", "room": "busy"})).await;
    assert_eq!(ws.json_of("joined").await["room"], "busy");
}

/// Code-reading item: however many streams follow jobs, the node reads them in one query
/// per interval.
#[actix_rt::test]
async fn many_job_streams_share_one_poll() {
    let sink = crate::helpers::SmtpSink::start(crate::helpers::SinkMode::Hang);
    let app = spawn_app_with(&[
        ("SMTP_URL", sink.url().as_str()),
        ("SMTP_TIMEOUT_MS", "60000"),
        ("JOB_EVENTS_POLL_MS", "100"),
    ])
    .await;
    let (status, _, body) = app
        .post_json("/send-email", &json!({"email": "a@b.co", "message": "hi"}))
        .await;
    assert_eq!(status, 202);
    let id = body["job_ids"][0].as_i64().unwrap();
    let mut streams = Vec::new();
    for _ in 0..30 {
        let mut s = SseClient::connect(&app, &format!("/jobs/{id}/events"), None).await;
        s.next_event().await.unwrap();
        streams.push(s);
    }
    let reads = |text: &str, op: &str| -> f64 {
        let prefix = format!("courier_db_query_duration_seconds_count{{operation=\"{op}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (_, before) = app.get_text("/metrics").await;
    actix_rt::time::sleep(Duration::from_millis(2000)).await;
    let (_, after) = app.get_text("/metrics").await;
    let single = reads(&after, "get_job") - reads(&before, "get_job");
    let shared = reads(&after, "get_jobs") - reads(&before, "get_jobs");
    eprintln!("30 streams for 2 s: {single} single reads, {shared} shared polls");
    assert_eq!(single, 0.0, "streams read their job on their own");
    assert!(
        (5.0..=25.0).contains(&shared),
        "{shared} polls in 2 s at 100 ms"
    );
    drop(streams);
}

/// Code-reading item: `/expensive-data` computes on the CPU pool, refused at once (503)
/// when that pool's queue is full, and the server keeps answering.
#[actix_rt::test]
async fn expensive_computations_share_the_bounded_cpu_pool() {
    let app = spawn_app_with(&[("BLOCKING_QUEUE", "2"), ("EXPENSIVE_ROUNDS", "400000")]).await;
    let mut waiting = Vec::new();
    for i in 0..30 {
        let req = app
            .client
            .get(app.url(&format!("/expensive-data/k{i}")))
            .send();
        waiting.push(actix_rt::spawn(async move {
            req.await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let started = Instant::now();
    let (status, _, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut statuses = std::collections::BTreeMap::new();
    for w in waiting {
        *statuses.entry(w.await.unwrap()).or_insert(0) += 1;
    }
    eprintln!("30 distinct expensive keys: {statuses:?}");
    assert!(statuses.get(&503).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
}
