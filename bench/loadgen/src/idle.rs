//! `idle`: hold N WebSocket connections open, answering the server's pings, and measure the
//! server's memory per connection.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::hold::{self, Conn, HoldArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Server base URL (ws://HOST:PORT); a URL with a path is used as it is.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    pub url: String,
    /// Endpoint path appended to --url.
    #[arg(long, default_value = "/ws/json")]
    pub path: String,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    #[command(flatten)]
    pub hold: HoldArgs,
}

impl Args {
    pub fn validate(&mut self) -> Result<(), String> {
        self.url = check_ws_url(&self.url)?;
        self.hold.validate()
    }

    pub fn fds_needed(&self) -> u64 {
        self.connections + 64
    }
}

async fn conn(c: Conn, url: String, retries: u32, limit: std::time::Duration) {
    let opened = {
        let _permit = c.permit.acquire().await;
        connect_ws(&url, ws_config(4 * 1024), false, retries, limit).await
    };
    let mut ws = match opened {
        Ok(ws) => {
            c.opened(Ok(()));
            ws
        }
        Err(e) => {
            c.opened(Err(e));
            return;
        }
    };
    let mut state = c.state.clone();
    loop {
        let item = tokio::select! {
            biased;
            _ = reached(&mut state, STOP_ALL) => {
                close_ws(ws).await;
                return;
            }
            item = ws.next() => item,
        };
        match item {
            Some(Ok(Message::Ping(_))) => {
                c.stats.pings.fetch_add(1, Relaxed);
            }
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                c.stats.received.fetch_add(1, Relaxed);
            }
            Some(Ok(Message::Close(f))) => {
                if !c.stopping() {
                    c.stats.disconnects.close_frame(f.as_ref());
                    c.lost();
                }
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                if !c.stopping() {
                    c.stats.disconnects.ended(&describe_ws(&e));
                    c.lost();
                }
                return;
            }
            None => {
                if !c.stopping() {
                    c.stats.disconnects.ended("stream ended");
                    c.lost();
                }
                return;
            }
        }
    }
}

pub async fn run(a: Args) {
    let n = a.connections as usize;
    let base = Arc::new(a.url.clone());
    let path = Arc::new(a.path.clone());
    let retries = a.hold.retries;
    let limit = secs(a.hold.connect_timeout);
    let target = format!("{}{}", a.url, a.path);
    hold::run("idle", &target, n, &a.hold, "connections", |c| {
        let url = ws_url(&base, &path, &format!("lg-i{}", c.index));
        conn(c, url, retries, limit)
    })
    .await;
}
