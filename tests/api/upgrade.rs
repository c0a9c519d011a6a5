//! Upgraded connections: a WebSocket leaves the HTTP layer once it is accepted, so an idle
//! one holds no HTTP buffers; what the client sent with its handshake still arrives, and an
//! upgrade that is not accepted gets the route's own answer.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with, start_server_process};

/// Longest a test waits for the server's answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// A WebSocket handshake for `path` on `port`, with `extra` header lines.
fn handshake(path: &str, port: u16, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A masked client text frame.
fn text_frame(text: &str) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut out = vec![0x81, 0x80 | text.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads until `stream` has given a whole response head; returns the head and what followed.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return (head, buf[end + 4..].to_vec());
        }
        let n = tokio::time::timeout(ANSWER_LIMIT, stream.read(&mut chunk))
            .await
            .expect("the server answers")
            .expect("read");
        assert!(n > 0, "closed before a whole head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the next unmasked server text frame (shorter than 126 bytes), skipping pings;
/// `have` holds what was already read, and keeps what follows the frame.
async fn read_text_frame(stream: &mut TcpStream, have: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 1024];
    loop {
        if have.len() >= 2 && have.len() >= 2 + usize::from(have[1] & 0x7f) {
            let len = usize::from(have[1] & 0x7f);
            let frame: Vec<u8> = have.drain(..2 + len).collect();
            if frame[0] == 0x89 {
                continue;
            }
            assert_eq!(frame[0], 0x81, "a final text frame");
            return String::from_utf8(frame[2..].to_vec()).unwrap();
        }
        let n = tokio::time::timeout(ANSWER_LIMIT, stream.read(&mut chunk))
            .await
            .expect("a frame arrives")
            .expect("read");
        assert!(n > 0, "closed before a frame");
        have.extend_from_slice(&chunk[..n]);
    }
}

/// Reads to the end of the stream (the server closes it).
async fn read_to_close(stream: &mut TcpStream, mut have: Vec<u8>) -> Vec<u8> {
    tokio::time::timeout(ANSWER_LIMIT, stream.read_to_end(&mut have))
        .await
        .expect("the server closes the connection")
        .expect("read");
    have
}

#[actix_rt::test]
async fn frames_sent_together_with_the_handshake_are_answered() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(("127.0.0.1", app.port)).await.unwrap();
    // One write: the handshake and, right behind it, two frames.
    let mut bytes = handshake("/ws", app.port, "").into_bytes();
    bytes.extend(text_frame("first"));
    bytes.extend(text_frame("second"));
    stream.write_all(&bytes).await.unwrap();

    let (head, mut rest) = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let first = read_text_frame(&mut stream, &mut rest).await;
    assert_eq!(first, "Echo: first");
    let second = read_text_frame(&mut stream, &mut rest).await;
    assert_eq!(second, "Echo: second");
}

/// Sends a WebSocket handshake for `path` and reads the answer to the end: the head, and
/// the body up to the server's close.
async fn answer_then_close(port: u16, path: &str, extra: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(handshake(path, port, extra).as_bytes())
        .await
        .unwrap();
    let (head, rest) = read_head(&mut stream).await;
    let body = read_to_close(&mut stream, rest).await;
    (head, String::from_utf8_lossy(&body).into_owned())
}

#[actix_rt::test]
async fn an_upgrade_that_is_not_accepted_gets_the_routes_answer_then_a_close() {
    let app = spawn_app_with(&[("WS_ALLOWED_ORIGINS", "https://chat.example")]).await;

    // A route that is not a WebSocket: its usual answer, then the connection closes.
    let (head, body) = answer_then_close(app.port, "/healthz", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"status\""), "{body}");

    // A streamed answer: sent as it comes, not announced as chunked, ended by the close.
    let (head, body) = answer_then_close(app.port, "/sse?count=2&interval_ms=1", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    assert!(body.starts_with("event: message"), "{body}");
    assert!(body.contains("Message 1"), "{body}");

    // A WebSocket from an origin that is not allowed: 403 with the JSON error, then closed.
    let evil = "Origin: https://evil.example\r\n";
    let (head, body) = answer_then_close(app.port, "/ws/json", evil).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    assert!(body.contains("WS_ALLOWED_ORIGINS"), "{body}");

    // The server goes on serving.
    let (status, _) = app.get_text("/healthz").await;
    assert_eq!(status, 200);
}

/// The server's `courier_ws_connections` gauge.
async fn ws_connections(port: u16) -> f64 {
    let mut res = awc::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("/metrics answers");
    let body = res.body().limit(1 << 22).await.expect("metrics body");
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("courier_ws_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Opens `n` WebSockets on `/ws/json` and waits until the server counts `expected`.
async fn open_idle(port: u16, n: usize, expected: f64, held: &mut Vec<TcpStream>) {
    for _ in 0..n {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream
            .write_all(handshake("/ws/json", port, "").as_bytes())
            .await
            .unwrap();
        let (head, _) = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        held.push(stream);
    }
    let started = Instant::now();
    while ws_connections(port).await != expected {
        assert!(
            started.elapsed() < ANSWER_LIMIT,
            "the server counts {} WebSockets, expected {expected}",
            ws_connections(port).await
        );
        tokio::task::yield_now().await;
    }
}

/// An idle WebSocket costs the server well under what the HTTP layer's buffers alone
/// would (an 8 KiB read and an 8 KiB write buffer, about 10 KiB resident per connection):
/// the socket left them behind when it was upgraded.
#[actix_rt::test]
async fn an_idle_websocket_holds_no_http_buffers() {
    /// Connections measured (the open-file limit of a default shell is 1,024).
    const HELD: usize = 800;
    /// Resident bytes per idle connection allowed: under the HTTP layer's 10 KiB.
    const LIMIT: u64 = 7 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_process(dir.path(), &[("APP_WORKERS", "1")]);
    let mut held = Vec::new();
    // Warm up: the first connections grow the allocator's arenas.
    open_idle(server.port, 100, 100.0, &mut held).await;
    let before = server.resident_bytes();
    open_idle(server.port, HELD, (100 + HELD) as f64, &mut held).await;
    let after = server.resident_bytes();
    let each = after.saturating_sub(before) / HELD as u64;
    eprintln!("{each} bytes resident per idle WebSocket ({HELD} held)");
    assert!(
        each < LIMIT,
        "{each} bytes resident per idle WebSocket ({before} -> {after} for {HELD})"
    );
}
