//! `sse`: hold N Server-Sent Events streams over plain HTTP/1.1 and count their events.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::common::*;
use crate::hold::{self, Conn, HoldArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Full URL of the event stream (http://HOST:PORT/PATH).
    #[arg(long, default_value = "http://127.0.0.1:8000/sse/heartbeat")]
    pub url: String,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub subscribers: u64,
    #[command(flatten)]
    pub hold: HoldArgs,
}

/// Where to connect and what to ask for.
struct Target {
    addr: String,
    request: Vec<u8>,
}

fn parse_url(url: &str) -> Result<Target, String> {
    if url.starts_with("https://") {
        return Err("https:// is not supported (this build has no TLS); use http://".into());
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http:// (got {url:?})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("--url has no usable host: {url:?}"));
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority.ends_with(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\nUser-Agent: courier-loadgen\r\n\r\n"
    )
    .into_bytes();
    Ok(Target { addr, request })
}

impl Args {
    pub fn validate(&mut self) -> Result<(), String> {
        parse_url(&self.url)?;
        self.hold.validate()
    }

    pub fn fds_needed(&self) -> u64 {
        self.subscribers + 64
    }
}

/// What the response head said.
struct Head {
    chunked: bool,
    /// Body bytes read together with the head.
    rest: Vec<u8>,
}

fn parse_head(buf: &[u8], end: usize) -> Result<Head, String> {
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let mut content_type = String::new();
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_ascii_lowercase();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = value,
                "transfer-encoding" => chunked = value.contains("chunked"),
                _ => {}
            }
        }
    }
    if code != 200 {
        return Err(format!("HTTP {code}"));
    }
    if !content_type.starts_with("text/event-stream") {
        return Err(format!("content-type {content_type:?}"));
    }
    Ok(Head {
        chunked,
        rest: buf[end + 4..].to_vec(),
    })
}

async fn open(t: &Target, limit: Duration) -> Result<(TcpStream, Head), String> {
    let mut s = match timeout(limit, TcpStream::connect(&t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(describe_io(&e)),
        Err(_) => return Err("connect timed out".into()),
    };
    let _ = s.set_nodelay(true);
    let head = timeout(limit, async {
        s.write_all(&t.request).await.map_err(|e| describe_io(&e))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| describe_io(&e))?;
            if n == 0 {
                return Err("closed before the response head".to_string());
            }
            let from = buf.len().saturating_sub(3);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = find(&buf[from..], b"\r\n\r\n") {
                return parse_head(&buf, from + i);
            }
            if buf.len() > 16 * 1024 {
                return Err("response head over 16 KiB".into());
            }
        }
    })
    .await
    .map_err(|_| "response head timed out".to_string())??;
    Ok((s, head))
}

/// Decodes a `Transfer-Encoding: chunked` body (or passes an identity body through) and counts
/// events, each ended by a blank line.
#[derive(Default)]
struct Body {
    chunked: bool,
    chunk: ChunkState,
    /// No byte but CR yet on the current line.
    line_empty: bool,
    /// The current block (since the last blank line) has a non-empty line.
    block_has_content: bool,
}

#[derive(Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    /// In a chunk extension, after the size.
    Ext,
    Data(u64),
    /// After a chunk's data, up to and including its LF.
    DataEnd,
    Done,
}

impl Body {
    fn new(chunked: bool) -> Self {
        Body {
            chunked,
            line_empty: true,
            ..Default::default()
        }
    }

    fn count_events(&mut self, data: &[u8]) -> u64 {
        let mut n = 0;
        for &b in data {
            match b {
                b'\n' => {
                    if !self.line_empty {
                        self.block_has_content = true;
                    } else if self.block_has_content {
                        n += 1;
                        self.block_has_content = false;
                    }
                    self.line_empty = true;
                }
                b'\r' => {}
                _ => self.line_empty = false,
            }
        }
        n
    }

    /// Feeds raw bytes from the socket; returns events completed and whether the body ended.
    fn feed(&mut self, mut data: &[u8], size: &mut u64) -> (u64, bool) {
        if !self.chunked {
            return (self.count_events(data), false);
        }
        let mut events = 0;
        while !data.is_empty() {
            match self.chunk {
                ChunkState::Size | ChunkState::Ext => {
                    let b = data[0];
                    data = &data[1..];
                    match (self.chunk, b) {
                        (_, b'\n') => {
                            self.chunk = if *size == 0 {
                                ChunkState::Done
                            } else {
                                ChunkState::Data(*size)
                            };
                            *size = 0;
                        }
                        (ChunkState::Size, b';' | b' ' | b'\t') => self.chunk = ChunkState::Ext,
                        (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                            let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                            *size = size.saturating_mul(16).saturating_add(v);
                        }
                        _ => {}
                    }
                }
                ChunkState::Data(rem) => {
                    let take = rem.min(data.len() as u64) as usize;
                    events += self.count_events(&data[..take]);
                    data = &data[take..];
                    let left = rem - take as u64;
                    self.chunk = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if data[0] == b'\n' {
                        self.chunk = ChunkState::Size;
                    }
                    data = &data[1..];
                }
                ChunkState::Done => return (events, true),
            }
        }
        (events, matches!(self.chunk, ChunkState::Done))
    }
}

async fn conn(c: Conn, t: Arc<Target>, retries: u32, limit: Duration) {
    let opened = {
        let _permit = c.permit.acquire().await;
        retry(retries, || open(&t, limit)).await
    };
    let (mut s, head) = match opened {
        Ok(v) => {
            c.opened(Ok(()));
            v
        }
        Err(e) => {
            c.opened(Err(e));
            return;
        }
    };
    let mut body = Body::new(head.chunked);
    let mut size = 0u64;
    let (ev, mut ended) = body.feed(&head.rest, &mut size);
    c.stats.received.fetch_add(ev, Relaxed);
    let mut state = c.state.clone();
    let mut buf = [0u8; 2048];
    while !ended {
        let r = tokio::select! {
            biased;
            _ = reached(&mut state, STOP_ALL) => return,
            r = s.read(&mut buf) => r,
        };
        match r {
            Ok(0) => break,
            Ok(n) => {
                let (ev, done) = body.feed(&buf[..n], &mut size);
                if ev > 0 {
                    c.stats.received.fetch_add(ev, Relaxed);
                }
                ended = done;
            }
            Err(e) => {
                if !c.stopping() {
                    c.stats.disconnects.ended(&describe_io(&e));
                    c.lost();
                }
                return;
            }
        }
    }
    if !c.stopping() {
        c.stats.disconnects.ended("stream ended");
        c.lost();
    }
}

pub async fn run(a: Args) {
    let n = a.subscribers as usize;
    let target = Arc::new(parse_url(&a.url).expect("validated"));
    let retries = a.hold.retries;
    let limit = secs(a.hold.connect_timeout);
    hold::run("sse", &a.url, n, &a.hold, "subscribers", |c| {
        conn(c, target.clone(), retries, limit)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_chunked_events() {
        let mut b = Body::new(true);
        let mut size = 0;
        let raw: &[u8] = b"e\r\ndata: tick 1\n\n\r\n7;x=y\r\ndata: t\r\n7\r\nick 2\n\n\r\n\
            4\r\n: c\n\r\n1\r\n\n\r\n2\r\n\n\n\r\n0\r\n\r\n";
        // Two data events (the second split across chunks) and one comment-only block;
        // extra blank lines are not events. Byte by byte and whole, the counts agree.
        let mut total = 0;
        let mut ended = false;
        for chunk in raw.chunks(1) {
            let (e, d) = b.feed(chunk, &mut size);
            total += e;
            ended |= d;
        }
        assert_eq!(total, 3);
        assert!(ended);
        let mut b = Body::new(true);
        let mut size = 0;
        assert_eq!(b.feed(raw, &mut size), (3, true));
    }

    #[test]
    fn counts_identity_events() {
        let mut b = Body::new(false);
        let mut size = 0;
        assert_eq!(b.feed(b"data: a\r\n\r\ndata: b\n\n", &mut size).0, 2);
    }

    #[test]
    fn parses_urls_and_heads() {
        let t = parse_url("http://127.0.0.1:8000/sse/heartbeat").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000");
        assert!(String::from_utf8(t.request)
            .unwrap()
            .starts_with("GET /sse/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"));
        assert_eq!(parse_url("http://localhost").unwrap().addr, "localhost:80");
        assert!(parse_url("ws://x").is_err());
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nab";
        let end = find(ok, b"\r\n\r\n").unwrap();
        let h = parse_head(ok, end).unwrap();
        assert!(h.chunked);
        assert_eq!(h.rest, b"ab");
        let bad = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            parse_head(bad, find(bad, b"\r\n\r\n").unwrap()).err(),
            Some("HTTP 404".into())
        );
    }
}
