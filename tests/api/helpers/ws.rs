//! A WebSocket client that answers nothing on its own, so tests see every frame, and raw
//! frames for what a well-behaved client would never send.

use super::app::TestApp;
use super::RECV_LIMIT;

/// A WebSocket client (awc) that answers nothing on its own: tests see every frame.
pub struct WsClient {
    pub framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
    /// `/ws/json`: the `hello` frame the server sent first.
    pub hello: serde_json::Value,
}

/// What the server sent, as a test sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Close(Option<u16>, String),
    Ended,
}

impl WsClient {
    /// Connects to `path`; on `/ws/json`, reads the `hello` frame the server sends first
    /// (failing when it is not first).
    pub async fn connect(app: &TestApp, path: &str) -> Self {
        Self::connect_with(app, path, &[]).await
    }

    /// Connects to `path` with extra request headers.
    pub async fn connect_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Self {
        Self::connect_to(app.port, path, headers).await
    }

    /// Connects to `path` on the server at `port` (a server process).
    pub async fn connect_to(port: u16, path: &str, headers: &[(&str, &str)]) -> Self {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let mut req = awc::Client::new().ws(url).max_frame_size(16 << 20);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let (_, framed) = req.connect().await.expect("websocket handshake");
        let mut client = Self {
            framed,
            hello: serde_json::Value::Null,
        };
        if path.starts_with("/ws/json") {
            match client.next().await {
                Received::Text(t) => {
                    let hello: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                    assert_eq!(hello["type"], "hello", "the first frame is hello: {t}");
                    client.hello = hello;
                }
                // Refused (a bad token): the close frame is for the test to read.
                other => panic!("expected hello first, got {other:?}"),
            }
        }
        client
    }

    /// Connects to `path` expecting no `hello` (a refused connection, or not `/ws/json`).
    pub async fn connect_raw(app: &TestApp, path: &str) -> Self {
        let url = format!("ws://127.0.0.1:{}{}", app.port, path);
        let (_, framed) = awc::Client::new()
            .ws(url)
            .max_frame_size(16 << 20)
            .connect()
            .await
            .expect("websocket handshake");
        Self {
            framed,
            hello: serde_json::Value::Null,
        }
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

    /// The `seq` of every event received until there are `count` of them (other frames
    /// are skipped).
    pub async fn event_seqs(&mut self, count: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < count {
            let v = self.json().await;
            if v["type"] == "event" {
                seqs.push(v["seq"].as_u64().expect("an event has a seq"));
            }
        }
        seqs
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
