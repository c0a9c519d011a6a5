//! An SSE client: reads a `text/event-stream` body event by event.

use std::time::Duration;

use super::app::TestApp;
use super::RECV_LIMIT;

/// Reads an SSE stream: a line reader over the response body.
pub struct SseClient {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>,
    >,
    buf: String,
    /// A room stream's `joined` event (its data as JSON), read when the stream opened.
    pub joined: serde_json::Value,
}

/// One SSE event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The sequence number in a room event's id (`<epoch>:<seq>`).
    pub fn seq(&self) -> Option<u64> {
        let id = self.id.as_deref()?;
        id.rsplit(':').next()?.parse().ok()
    }
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
        let mut client = Self {
            body: Box::pin(res),
            buf: String::new(),
            joined: serde_json::Value::Null,
        };
        // A room's stream starts with `joined`: the room's seq and epoch, and whether the
        // replay is everything the client missed.
        if url.contains("/rooms/") && url.split('?').next().unwrap_or("").ends_with("/events") {
            let first = client.next_event().await.expect("the joined event");
            assert_eq!(first.event.as_deref(), Some("joined"), "{first:?}");
            client.joined = serde_json::from_str(&first.data).expect("JSON");
        }
        client
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
