//! Headless Chromium, driven over the DevTools protocol (a WebSocket of JSON commands), for
//! the tests of the JavaScript client and the demo page in a real browser.
//!
//! The browser is Debian's `chromium` (`COURIER_TEST_CHROMIUM`, default `/usr/bin/chromium`).
//! Without it the browser tests say they skipped; with `CI=true` they fail.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_codec::Framed;
use awc::ws::{Codec, Frame, Message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use super::services::services_required;

/// Longest a browser takes to start and open its DevTools port.
pub const BROWSER_START_LIMIT: Duration = Duration::from_secs(30);
/// Longest one DevTools command (an evaluation included) may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The browser, or `None` (with a message) when there is none and CI does not require one.
pub fn chromium_path() -> Option<PathBuf> {
    let path = PathBuf::from(
        std::env::var("COURIER_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if path.exists() {
        return Some(path);
    }
    assert!(
        !services_required(),
        "CI=true but there is no browser at {} (apt-get install chromium)",
        path.display()
    );
    eprintln!(
        "skipped: no browser at {} (apt-get install chromium, or set COURIER_TEST_CHROMIUM)",
        path.display()
    );
    None
}

/// A headless Chromium and one DevTools connection to it.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    conn: Framed<awc::BoxedSocket, Codec>,
    next_id: u64,
    /// Events the browser sent while a command was awaited.
    events: Vec<Value>,
    /// Console lines and exceptions of every page, for failure messages.
    pub console: Vec<String>,
}

/// A tab, as a DevTools session.
#[derive(Clone, Debug)]
pub struct Page {
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts the browser; `None` when there is none (see [`chromium_path`]).
    pub async fn launch() -> Option<Self> {
        let path = chromium_path()?;
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(&path)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // The browser writes its DevTools port and path to this file once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                started.elapsed() < BROWSER_START_LIMIT,
                "chromium did not open its DevTools port"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, conn) = awc::Client::new()
            .ws(address)
            .max_frame_size(256 << 20)
            .connect()
            .await
            .expect("DevTools connection");
        Some(Self {
            child,
            _profile: profile,
            conn,
            next_id: 1,
            events: Vec::new(),
            console: Vec::new(),
        })
    }

    async fn read(&mut self) -> Value {
        let mut text = Vec::new();
        loop {
            let frame = actix_rt::time::timeout(COMMAND_LIMIT, self.conn.next())
                .await
                .expect("the browser answers")
                .expect("the DevTools connection is open")
                .expect("a DevTools frame");
            match frame {
                Frame::Text(b) | Frame::Binary(b) => {
                    text.extend_from_slice(&b);
                    return serde_json::from_slice(&text).expect("DevTools JSON");
                }
                Frame::Continuation(item) => {
                    use actix_http::ws::Item;
                    match item {
                        Item::FirstText(b) | Item::FirstBinary(b) | Item::Continue(b) => {
                            text.extend_from_slice(&b)
                        }
                        Item::Last(b) => {
                            text.extend_from_slice(&b);
                            return serde_json::from_slice(&text).expect("DevTools JSON");
                        }
                    }
                }
                Frame::Ping(p) => self.conn.send(Message::Pong(p)).await.unwrap(),
                Frame::Pong(_) => {}
                Frame::Close(reason) => panic!("the browser closed DevTools: {reason:?}"),
            }
        }
    }

    fn note(&mut self, event: &Value) {
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = event["params"]["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| match &v["value"] {
                                Value::String(s) => s.clone(),
                                Value::Null => v["description"].as_str().unwrap_or("").to_owned(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let kind = event["params"]["type"].as_str().unwrap_or("log");
                self.console
                    .push(format!("console.{kind}: {}", args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                let details = &event["params"]["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("?");
                self.console.push(format!("exception: {text}"));
            }
            _ => self.events.push(event.clone()),
        }
    }

    /// Sends a command (to a page when `page` is given) and returns its result.
    pub async fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut cmd = json!({"id": id, "method": method, "params": params});
        if let Some(page) = page {
            cmd["sessionId"] = page.session.clone().into();
        }
        self.conn
            .send(Message::Text(cmd.to_string().into()))
            .await
            .expect("DevTools send");
        loop {
            let msg = self.read().await;
            if msg["id"] == id {
                if let Some(error) = msg.get("error") {
                    panic!("DevTools {method} failed: {error}");
                }
                return msg["result"].clone();
            }
            self.note(&msg);
        }
    }

    /// Waits for an event `method` of `page` (one that came already counts).
    pub async fn event(&mut self, page: &Page, method: &str) -> Value {
        let matches = |e: &Value| e["method"] == method && e["sessionId"] == page.session.as_str();
        if let Some(i) = self.events.iter().position(matches) {
            return self.events.remove(i);
        }
        loop {
            let msg = self.read().await;
            if matches(&msg) {
                return msg;
            }
            self.note(&msg);
        }
    }

    /// Opens a tab at `url` of `width`×`height` and waits until it has loaded.
    pub async fn open(&mut self, url: &str, width: u32, height: u32) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        let page = Page {
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        };
        self.call(Some(&page), "Page.enable", json!({})).await;
        self.call(Some(&page), "Runtime.enable", json!({})).await;
        self.resize(&page, width, height).await;
        self.navigate(&page, url).await;
        page
    }

    /// Sets the tab's viewport.
    pub async fn resize(&mut self, page: &Page, width: u32, height: u32) {
        self.call(
            Some(page),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    }

    /// Loads `url` in the tab and waits for its load event.
    pub async fn navigate(&mut self, page: &Page, url: &str) {
        self.events
            .retain(|e| !(e["method"] == "Page.loadEventFired" && e["sessionId"] == page.session));
        self.call(Some(page), "Page.navigate", json!({"url": url}))
            .await;
        self.event(page, "Page.loadEventFired").await;
    }

    /// Evaluates `expression` in the tab, awaiting a promise, and returns its value.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let result = self
            .call(
                Some(page),
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("?");
            panic!(
                "the page threw evaluating {expression}: {text}\nconsole:\n{}",
                self.console.join("\n")
            );
        }
        result["result"]["value"].clone()
    }

    /// Saves a PNG of the tab to `path`.
    pub async fn screenshot(&mut self, page: &Page, path: &std::path::Path) {
        let shot = self
            .call(
                Some(page),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        let data = shot["data"].as_str().expect("screenshot data");
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}
