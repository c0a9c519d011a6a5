//! The binary as an operator runs it: start-up from a fresh directory, SIGTERM during an
//! in-flight request, exit status and the shutdown log.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use crate::helpers::ServerProcess;
use std::time::Duration;

/// The binary and the fresh directory it runs in.
struct Server {
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

fn start(env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let process = crate::helpers::start_server_process(dir.path(), env);
    Server { process, _dir: dir }
}

/// A plain HTTP/1.1 GET over a fresh connection; returns the status line and body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

fn in_flight(port: u16) -> u64 {
    let (_, body) = get(port, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("courier_http_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_and_exits_zero() {
    let mut server = start(&[]);
    let port = server.process.port;
    let (status, _) = get(port, "/healthz");
    assert!(status.contains("200"), "{status}");

    let slow = std::thread::spawn(move || get(port, "/async?ms=1500"));
    // Wait until the slow request is being handled (the /metrics request is the other one).
    while in_flight(port) < 2 {
        std::thread::yield_now();
    }
    let killed = Command::new("kill")
        .args(["-TERM", &server.process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let (status, body) = slow.join().unwrap();
    assert!(
        status.contains("200"),
        "in-flight request finished: {status}"
    );
    assert!(body.contains("Completed after 1500 ms"), "{body}");

    let exit = server.process.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0");
    // Everything it wrote: the reader thread ends at the closed pipe.
    let log: Vec<String> = server.process.log.iter().collect();
    let log = log.join("\n");
    assert!(log.contains("SIGTERM"), "{log}");
    assert!(log.contains("shutdown: complete"), "{log}");
    // New connections are refused once it is down.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_fresh_directory_serves_every_basic_route_with_embedded_defaults() {
    let mut server = start(&[]);
    let port = server.process.port;
    for path in [
        "/healthz",
        "/readyz",
        "/sync?ms=1",
        "/async?ms=1",
        "/cpu-intensive?n=1000",
        "/io-intensive",
        "/external-api",
        "/openapi.json",
        "/docs/",
        "/metrics",
    ] {
        let (status, _) = get(port, path);
        assert!(status.contains(" 200 "), "{path}: {status}");
    }
    server.process.child.kill().unwrap();
    server.process.child.wait().unwrap();
}
