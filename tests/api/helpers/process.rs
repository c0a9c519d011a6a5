//! The courier binary run as an operator runs it, in a process of its own.

use std::time::Duration;

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

impl ServerProcess {
    /// The process's resident memory (`VmRSS` of `/proc/<pid>/status`), in bytes.
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server process is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }
}

impl Drop for ServerProcess {
    /// A test that ends (or fails) leaves no server running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
