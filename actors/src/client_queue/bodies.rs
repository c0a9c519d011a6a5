//! The response bodies that drain a client's queue: [`WsBody`] encodes WebSocket frames,
//! [`SseBody`] writes Server-Sent Events with keep-alive comments.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Encoder;
use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::{OutFrame, QueueReader, MAX_CHUNK_BYTES};

/// After the server's close frame, a client has this long to close the connection before
/// the server drops it (RFC 6455 §7.1.1: the server should close the TCP connection once
/// the closing handshake is done; a client that keeps sending is not waited for).
pub const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A WebSocket response body: encodes queued frames with the server-side codec.
pub struct WsBody {
    inbox: QueueReader,
    codec: Codec,
    buf: BytesMut,
    done: bool,
    /// Set once a close frame was written: when it fires, the connection is dropped.
    close_deadline: Option<Pin<Box<actix_rt::time::Sleep>>>,
}

impl WsBody {
    /// A body draining `inbox`.
    pub fn new(inbox: QueueReader) -> Self {
        Self {
            inbox,
            codec: Codec::new(),
            buf: BytesMut::new(),
            done: false,
            close_deadline: None,
        }
    }

    /// Whether the connection is over from the server's side: the client was evicted or its
    /// session ended (a connection whose write is blocked then stops waiting for the client
    /// after [`CLOSE_HANDSHAKE_TIMEOUT`]). If not, `cx`'s task is woken when that may have
    /// changed.
    pub fn poll_abandoned(&self, cx: &Context<'_>) -> bool {
        self.inbox.watch(cx);
        self.inbox.abandoned()
    }

    fn closed(&mut self) {
        self.done = true;
        self.close_deadline = Some(Box::pin(actix_rt::time::sleep(CLOSE_HANDSHAKE_TIMEOUT)));
    }
}

impl Stream for WsBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Polled again: the previous chunk is written.
        this.inbox.settle();
        if this.done {
            return match this.close_deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                // The client did not close the connection in time: an error makes the
                // HTTP layer drop it.
                Some(Poll::Ready(())) => Poll::Ready(Some(Err(std::io::Error::other(
                    "the client did not close the WebSocket after the close frame",
                )))),
                Some(Poll::Pending) => Poll::Pending,
                None => Poll::Ready(None),
            };
        }
        while this.buf.len() < MAX_CHUNK_BYTES {
            match this.inbox.poll_frame(cx) {
                Poll::Ready(Some(frame)) => {
                    let msg = match frame {
                        OutFrame::Text(t) => Message::Text(t),
                        OutFrame::Ping => Message::Ping(Bytes::new()),
                        OutFrame::Pong(b) => Message::Pong(b),
                        OutFrame::Close(code, reason) => {
                            this.closed();
                            Message::Close(Some(CloseReason {
                                code,
                                description: (!reason.is_empty()).then_some(reason),
                            }))
                        }
                        OutFrame::CloseReply(code) => {
                            // Nothing to wait for: the stream ends after this frame.
                            this.done = true;
                            Message::Close(Some(CloseReason {
                                code,
                                description: None,
                            }))
                        }
                    };
                    if this.codec.encode(msg, &mut this.buf).is_err() {
                        this.done = true;
                    }
                    if this.done {
                        break;
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.inbox.evicted() {
                        // What was queued is dropped; a client that reads again learns why.
                        this.closed();
                        this.buf.clear();
                        let reason = CloseReason {
                            code: CloseCode::Policy,
                            description: Some(SLOW_CONSUMER_REASON.to_owned()),
                        };
                        let _ = this
                            .codec
                            .encode(Message::Close(Some(reason)), &mut this.buf);
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(this.buf.split().freeze())));
        }
        if this.done {
            // Register the close deadline's timer, or end.
            Pin::new(this).poll_next(cx)
        } else {
            // Idle: the spent chunks' memory (their allocation is shared with this buffer's
            // remaining capacity) is let go until there is something to write.
            this.buf = BytesMut::new();
            Poll::Pending
        }
    }
}

/// The close reason (code 1008) a client evicted as too slow receives, if it reads again.
pub const SLOW_CONSUMER_REASON: &str = "too slow: outbound queue full";

/// An SSE response body: queued texts are already formatted events.
pub struct SseBody {
    inbox: QueueReader,
    buf: BytesMut,
    done: bool,
    keepalive: Option<actix_rt::time::Interval>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
    /// When the stream ends by itself (its token expires), and what it writes last.
    deadline: Option<(Pin<Box<actix_rt::time::Sleep>>, Bytes)>,
}

/// The SSE comment sent when a stream has been quiet for the keep-alive interval; it keeps
/// proxies from timing the stream out and reveals a client that has gone.
const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

impl SseBody {
    /// A body draining `inbox`, writing a keep-alive comment every `keepalive`; `on_drop`
    /// runs when the client goes away or the stream ends.
    pub fn new(
        inbox: QueueReader,
        keepalive: Option<std::time::Duration>,
        on_drop: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            inbox,
            buf: BytesMut::new(),
            done: false,
            keepalive: keepalive.map(|period| {
                actix_rt::time::interval_at(actix_rt::time::Instant::now() + period, period)
            }),
            on_drop: Some(Box::new(on_drop)),
            deadline: None,
        }
    }

    /// Ends the stream after `after`, writing `last` (a final event) first.
    pub fn ends_after(mut self, after: std::time::Duration, last: impl Into<Bytes>) -> Self {
        self.deadline = Some((Box::pin(actix_rt::time::sleep(after)), last.into()));
        self
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Polled again: the previous chunk is written.
        this.inbox.settle();
        if this.done {
            return Poll::Ready(None);
        }
        while this.buf.len() < MAX_CHUNK_BYTES {
            match this.inbox.poll_frame(cx) {
                Poll::Ready(Some(OutFrame::Text(t))) => this.buf.extend_from_slice(t.as_bytes()),
                Poll::Ready(Some(OutFrame::Ping | OutFrame::Pong(_))) => {}
                Poll::Ready(Some(OutFrame::Close(..) | OutFrame::CloseReply(_)))
                | Poll::Ready(None) => {
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if let Some((sleep, last)) = this.deadline.as_mut() {
            if !this.done && sleep.as_mut().poll(cx).is_ready() {
                this.buf.extend_from_slice(last);
                this.done = true;
            }
        }
        if let Some(tick) = this.keepalive.as_mut() {
            if tick.poll_tick(cx).is_ready() && this.buf.is_empty() {
                this.buf.extend_from_slice(KEEPALIVE_COMMENT);
            }
        }
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(this.buf.split().freeze())));
        }
        if this.done {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}
