//! Bounded per-client outbound queues, and the response-body streams that drain them.
//!
//! Every WebSocket session and SSE subscriber has one [`ClientQueue`]: a queue bounded both in
//! messages and in bytes. Producers (the client's own session, the `RoomBroker`, the
//! `SseFeed`) only ever `try_send`, so a client that stops reading can never block them:
//! when its queue is full the producer evicts it ([`ClientQueue::evict`]) and moves on. The
//! queue's receiving end is the HTTP response body ([`WsBody`] or [`SseBody`]),
//! which encodes every message that is ready into one chunk, so a burst of messages becomes
//! one socket write (the batching of the textbook actix design, with a bound).
//!
//! Payloads are `ByteString`/`Bytes`: a broadcast is serialised once and every queue holds a
//! reference to the same buffer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix_http::ws::CloseCode;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;

/// Most bytes encoded into one response-body chunk before it is handed to the socket.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// The limits of one client's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most messages waiting to be written.
    pub messages: usize,
    /// Most payload bytes waiting to be written.
    pub bytes: usize,
}

/// One message for a client.
#[derive(Debug, Clone)]
pub enum OutFrame {
    /// A text message (WebSocket text frame, or an already formatted SSE event).
    Text(ByteString),
    /// A WebSocket ping (ignored by SSE).
    Ping,
    /// A WebSocket pong answering a client's ping (ignored by SSE).
    Pong(Bytes),
    /// Close the connection with a code and reason (SSE: end the stream); the client has
    /// `CLOSE_HANDSHAKE_TIMEOUT` to answer and close before the connection is dropped.
    Close(CloseCode, String),
    /// The answer to a client's close frame: the closing handshake is complete once it is
    /// written, and the server closes the connection first (RFC 6455 §7.1.1).
    CloseReply(CloseCode),
}

impl OutFrame {
    fn cost(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Ping => 0,
            Self::Pong(b) => b.len(),
            Self::Close(_, r) => r.len(),
            Self::CloseReply(_) => 0,
        }
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client's queue is at its limit: the client is not keeping up.
    Full,
    /// The client is gone.
    Closed,
}

struct State {
    queue: VecDeque<OutFrame>,
    receiver_gone: bool,
    /// Frames waiting: in the queue, or taken by the reader and not yet written.
    pending: usize,
    /// Their payload bytes. Both are raised by senders and lowered by the reader when it
    /// comes back for more (so frames taken into a batch count until the batch is
    /// written), both under the lock: no atomic per frame on either side.
    pending_bytes: usize,
}

impl State {
    /// Takes frames the reader has handed out (and their bytes) out of the bounds.
    fn release(&mut self, frames: usize, bytes: usize) {
        self.pending = self.pending.saturating_sub(frames);
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
    }
}

struct Shared {
    state: Mutex<State>,
    senders: AtomicUsize,
    limits: QueueLimits,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a client's queue. Cheap to clone; every clone feeds the same client.
pub struct ClientQueue {
    shared: Arc<Shared>,
}

impl Clone for ClientQueue {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for ClientQueue {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender is gone: let the stream finish.
            self.shared.waker.wake();
        }
    }
}

impl std::fmt::Debug for ClientQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientQueue")
            .field("queued_bytes", &self.queued_bytes())
            .finish()
    }
}

/// The receiving side, turned into a response body by [`WsBody`] or [`SseBody`].
pub struct QueueReader {
    shared: Arc<Shared>,
    /// Frames taken from the queue in one go and not yet encoded.
    batch: VecDeque<OutFrame>,
    /// Frames handed out (and their bytes) since the reader last took the lock: they still
    /// count in the queue's bounds until then.
    handed_out: usize,
    handed_out_bytes: usize,
}

impl Drop for QueueReader {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.receiver_gone = true;
        st.queue = VecDeque::new();
        st.pending = 0;
        st.pending_bytes = 0;
    }
}

/// A new queue with `limits`.
pub fn queue(limits: QueueLimits) -> (ClientQueue, QueueReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver_gone: false,
            pending: 0,
            pending_bytes: 0,
        }),
        senders: AtomicUsize::new(1),
        limits,
        evicted: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    (
        ClientQueue {
            shared: shared.clone(),
        },
        QueueReader {
            shared,
            batch: VecDeque::new(),
            handed_out: 0,
            handed_out_bytes: 0,
        },
    )
}

impl ClientQueue {
    /// Queues `frame` without waiting. `Full` means the client is too slow.
    pub fn try_send(&self, frame: OutFrame) -> Result<(), SendError> {
        if self.shared.evicted.load(Ordering::Relaxed) {
            return Err(SendError::Closed);
        }
        let cost = frame.cost();
        let limits = self.shared.limits;
        let was_empty = {
            let mut st = self.shared.lock();
            if st.receiver_gone {
                return Err(SendError::Closed);
            }
            if st.pending >= limits.messages || (cost > 0 && st.pending_bytes + cost > limits.bytes)
            {
                return Err(SendError::Full);
            }
            let was_empty = st.queue.is_empty();
            st.queue.push_back(frame);
            st.pending += 1;
            st.pending_bytes += cost;
            was_empty
        };
        // The stream takes everything queued each time it runs, so only a message that
        // finds the queue empty has to wake it.
        if was_empty {
            self.shared.waker.wake();
        }
        Ok(())
    }

    /// Queues a text message.
    pub fn text(&self, text: impl Into<ByteString>) -> Result<(), SendError> {
        self.try_send(OutFrame::Text(text.into()))
    }

    /// Drops whatever is queued and ends the client's stream: used for a client that does
    /// not keep up. Its socket is closed once the kernel gives up on it.
    pub fn evict(&self) {
        self.shared.evicted.store(true, Ordering::Relaxed);
        {
            let mut st = self.shared.lock();
            st.queue = VecDeque::new();
            st.pending = 0;
            st.pending_bytes = 0;
        }
        self.shared.waker.wake();
    }

    /// Whether the client was evicted or has gone.
    pub fn is_closed(&self) -> bool {
        self.shared.evicted.load(Ordering::Relaxed) || self.shared.lock().receiver_gone
    }

    /// The queue's limits.
    pub fn limits(&self) -> QueueLimits {
        self.shared.limits
    }

    /// Payload bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.lock().pending_bytes
    }

    /// Whether two handles feed the same client.
    pub fn same_client(&self, other: &ClientQueue) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// Frames kept in a drained batch buffer's capacity; more is released once it is empty,
/// so an idle connection holds no memory from an earlier burst.
const IDLE_BATCH_CAPACITY: usize = 8;

impl QueueReader {
    /// Notes a frame handed over to be encoded; it leaves the queue's bounds when the
    /// reader next takes the lock.
    fn written(&mut self, frame: OutFrame) -> OutFrame {
        self.handed_out += 1;
        self.handed_out_bytes += frame.cost();
        frame
    }

    /// Takes the frames handed out since the last look out of the queue's bounds: the
    /// body calls it when it is polled for its next chunk, that is once the previous chunk
    /// is written, so a batch larger than one chunk is let go chunk by chunk.
    fn settle(&mut self) {
        if self.handed_out == 0 {
            return;
        }
        let (frames, bytes) = self.take_handed_out();
        self.shared.lock().release(frames, bytes);
    }

    /// The frames (and bytes) handed out since the last settlement, counted as settled.
    fn take_handed_out(&mut self) -> (usize, usize) {
        (
            std::mem::take(&mut self.handed_out),
            std::mem::take(&mut self.handed_out_bytes),
        )
    }

    /// Whether the queue's client was evicted as too slow.
    fn evicted(&self) -> bool {
        self.shared.evicted.load(Ordering::Relaxed)
    }

    /// Whether nothing more will be sent: the client was evicted, or every sender is gone
    /// (its session ended). Waiting on a blocked write is then only waiting for a client
    /// that does not read.
    fn abandoned(&self) -> bool {
        self.evicted() || self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// Wakes `cx`'s task when the client is evicted or the last sender goes (also when a
    /// frame is queued), without taking anything from the queue.
    fn watch(&self, cx: &Context<'_>) {
        self.shared.waker.register(cx.waker());
    }

    /// Polls the next frame; `None` once evicted or every sender is gone.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<OutFrame>> {
        if self.evicted() {
            self.batch = VecDeque::new();
            return Poll::Ready(None);
        }
        if let Some(frame) = self.batch.pop_front() {
            return Poll::Ready(Some(self.written(frame)));
        }
        if self.batch.capacity() > IDLE_BATCH_CAPACITY {
            self.batch = VecDeque::new();
        }
        // Register before looking, so a frame queued right after the look still wakes us;
        // read the sender count before the swap, so a frame queued by the last sender just
        // before it went is still taken.
        self.shared.waker.register(cx.waker());
        let senders = self.shared.senders.load(Ordering::Acquire);
        let (frames, bytes) = self.take_handed_out();
        {
            let mut st = self.shared.lock();
            st.release(frames, bytes);
            std::mem::swap(&mut st.queue, &mut self.batch);
        }
        if let Some(frame) = self.batch.pop_front() {
            return Poll::Ready(Some(self.written(frame)));
        }
        if senders == 0 {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

mod bodies;

pub use bodies::{SseBody, WsBody, CLOSE_HANDSHAKE_TIMEOUT, SLOW_CONSUMER_REASON};

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use futures_util::task::noop_waker;

    use super::*;

    fn text(n: usize) -> OutFrame {
        OutFrame::Text("x".repeat(n).into())
    }

    fn drain(reader: &mut QueueReader) -> Vec<OutFrame> {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(frame)) = reader.poll_frame(&mut cx) {
            out.push(frame);
        }
        out
    }

    #[test]
    fn a_queue_is_bounded_in_messages() {
        let (out, _reader) = queue(QueueLimits {
            messages: 2,
            bytes: 1000,
        });
        assert_eq!(out.try_send(text(1)), Ok(()));
        assert_eq!(out.try_send(OutFrame::Ping), Ok(()));
        assert_eq!(out.try_send(text(1)), Err(SendError::Full));
    }

    #[test]
    fn a_queue_is_bounded_in_bytes() {
        let (out, mut reader) = queue(QueueLimits {
            messages: 100,
            bytes: 10,
        });
        assert_eq!(out.try_send(text(6)), Ok(()));
        assert_eq!(out.try_send(text(5)), Err(SendError::Full));
        assert_eq!(out.queued_bytes(), 6);
        // Once the reader takes what is queued, there is room again.
        assert_eq!(drain(&mut reader).len(), 1);
        assert_eq!(out.try_send(text(10)), Ok(()));
    }

    #[test]
    fn frames_taken_for_writing_still_count_until_written() {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let (out, mut reader) = queue(QueueLimits {
            messages: 100,
            bytes: 10,
        });
        out.try_send(text(4)).unwrap();
        out.try_send(text(4)).unwrap();
        // The reader takes both into its batch and hands out both: until it comes back for
        // more (the batch is written), they still count.
        assert!(matches!(reader.poll_frame(&mut cx), Poll::Ready(Some(_))));
        assert!(matches!(reader.poll_frame(&mut cx), Poll::Ready(Some(_))));
        assert_eq!(out.queued_bytes(), 8);
        assert_eq!(out.try_send(text(3)), Err(SendError::Full));
        out.try_send(text(2)).unwrap();
        // Back for more: the two written frames leave the bounds, the new one is taken.
        assert!(matches!(reader.poll_frame(&mut cx), Poll::Ready(Some(_))));
        assert_eq!(out.queued_bytes(), 2);
        assert_eq!(out.try_send(text(8)), Ok(()));
        assert_eq!(out.try_send(text(1)), Err(SendError::Full));
        // Its chunk written, the body settles before it looks for more.
        reader.settle();
        assert_eq!(out.queued_bytes(), 8);
    }

    #[test]
    fn an_evicted_or_abandoned_queue_refuses_more() {
        let (out, mut reader) = queue(QueueLimits {
            messages: 10,
            bytes: 100,
        });
        out.text("a").unwrap();
        out.evict();
        assert!(out.is_closed());
        assert_eq!(out.text("b"), Err(SendError::Closed));
        assert!(drain(&mut reader).is_empty(), "what was queued is dropped");

        let (out, reader) = queue(QueueLimits {
            messages: 10,
            bytes: 100,
        });
        drop(reader);
        assert_eq!(out.text("c"), Err(SendError::Closed));
    }

    #[test]
    fn the_stream_ends_when_every_sender_is_gone() {
        let (out, mut reader) = queue(QueueLimits {
            messages: 10,
            bytes: 100,
        });
        let other = out.clone();
        out.text("last words").unwrap();
        drop(out);
        drop(other);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            reader.poll_frame(&mut cx),
            Poll::Ready(Some(OutFrame::Text(_)))
        ));
        assert!(matches!(reader.poll_frame(&mut cx), Poll::Ready(None)));
    }
}
