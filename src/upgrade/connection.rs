//! An upgraded WebSocket connection, driven without the HTTP layer's buffers.
//!
//! [`Connection`] owns the socket once the 101 response is written. It writes the chunks
//! the client's [`WsBody`] encodes straight from their own memory (no copy into a write
//! buffer) and reads into a buffer on the stack, handing what it read to the session through
//! an [`Inbound`] slot that holds at most one chunk. So an idle connection holds no I/O
//! buffer at all: memory is taken when the socket is readable or the queue has frames, and
//! given back once they are passed on.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::error::PayloadError;
use actix_rt::net::TcpStream;
use bytes::{Buf, Bytes};
use courier_actors::client_queue::{WsBody, CLOSE_HANDSHAKE_TIMEOUT};
use futures_util::Stream;

/// Largest read from the socket at once (a buffer on the stack while the read runs).
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Once the server has closed a connection (its side done), how long it waits for the peer
/// to close before dropping the socket. The HTTP layer uses the same bound
/// (`startup::CLIENT_DISCONNECT_TIMEOUT`).
pub const DISCONNECT_WAIT: Duration = Duration::from_millis(100);

/// What the reading side and the session share: at most one chunk in flight.
#[derive(Default)]
struct Slot {
    chunk: Option<Bytes>,
    /// The connection has ended (the peer closed it, or it failed).
    ended: bool,
    /// The read failed.
    failed: Option<String>,
    /// The session stopped reading.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

/// The session's end: the bytes the client sent, in order, as a request body would give
/// them. Ends when the connection does.
pub struct Inbound(Rc<RefCell<Slot>>);

/// The connection's end of an [`Inbound`].
pub struct InboundSender(Rc<RefCell<Slot>>);

/// A connected pair: the session reads the [`Inbound`], the connection feeds the sender.
pub fn inbound() -> (InboundSender, Inbound) {
    let slot = Rc::new(RefCell::new(Slot::default()));
    (InboundSender(slot.clone()), Inbound(slot))
}

impl Stream for Inbound {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut slot = self.0.borrow_mut();
        if let Some(chunk) = slot.chunk.take() {
            if let Some(w) = slot.writer.take() {
                w.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        if let Some(e) = slot.failed.take() {
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(e)))));
        }
        if slot.ended {
            return Poll::Ready(None);
        }
        if !slot
            .reader
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            slot.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        let mut slot = self.0.borrow_mut();
        slot.reader_gone = true;
        slot.chunk = None;
        if let Some(w) = slot.writer.take() {
            w.wake();
        }
    }
}

impl InboundSender {
    /// Whether the slot can take a chunk; if not, the connection is woken when it can.
    fn ready(&self, cx: &mut Context<'_>) -> bool {
        let mut slot = self.0.borrow_mut();
        if slot.chunk.is_none() || slot.reader_gone {
            return true;
        }
        slot.writer = Some(cx.waker().clone());
        false
    }

    fn send(&self, chunk: Bytes) {
        let mut slot = self.0.borrow_mut();
        if slot.reader_gone {
            return;
        }
        slot.chunk = Some(chunk);
        if let Some(w) = slot.reader.take() {
            w.wake();
        }
    }

    fn fail(&self, error: &std::io::Error) {
        self.0.borrow_mut().failed = Some(error.to_string());
    }
}

impl Drop for InboundSender {
    fn drop(&mut self) {
        let mut slot = self.0.borrow_mut();
        slot.ended = true;
        if let Some(w) = slot.reader.take() {
            w.wake();
        }
    }
}

/// Where the connection is in its life.
enum State {
    Open,
    /// The server's side is done and shut down; waiting for the peer to close.
    Closing(Pin<Box<actix_rt::time::Sleep>>),
}

/// An upgraded WebSocket connection: resolves when it is closed.
pub struct Connection {
    io: TcpStream,
    /// Where what the client sends goes; `None` when nobody reads it (a socket refused
    /// with a close frame), and then it is discarded.
    inbound: Option<InboundSender>,
    outbound: WsBody,
    /// The part of the current outbound chunk not yet written.
    pending: Bytes,
    /// Set when the server is done with a client whose socket takes no more: the
    /// connection is dropped when it fires unless the write goes on first.
    stalled: Option<Pin<Box<actix_rt::time::Sleep>>>,
    state: State,
}

impl Connection {
    /// Drives `io`: `outbound`'s frames are written, what the client sends goes to
    /// `inbound`, starting with `early` (bytes that came with the handshake).
    pub fn new(
        io: TcpStream,
        inbound: Option<InboundSender>,
        outbound: WsBody,
        early: Option<Bytes>,
    ) -> Self {
        if let (Some(sender), Some(early)) = (&inbound, early) {
            sender.send(early);
        }
        Self {
            io,
            inbound,
            outbound,
            pending: Bytes::new(),
            stalled: None,
            state: State::Open,
        }
    }

    /// Writes what is queued. `Ready(true)`: the outbound side is finished; `Ready(false)`:
    /// the connection failed or must be dropped.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if !self.pending.is_empty() {
                match self.io.poll_write_ready(cx) {
                    // The socket takes nothing. Once the client is evicted or its session has
                    // ended, nothing but the client's reading would end this wait (the body's
                    // close deadline is not polled while the write is blocked), so it is
                    // bounded here: the same grace as a closing handshake, then the
                    // connection is dropped. Without it only the kernel's
                    // TCP_USER_TIMEOUT (which may be off) would free the socket.
                    Poll::Pending => {
                        if self.outbound.poll_abandoned(cx) {
                            let wait = self.stalled.get_or_insert_with(|| {
                                Box::pin(actix_rt::time::sleep(CLOSE_HANDSHAKE_TIMEOUT))
                            });
                            if wait.as_mut().poll(cx).is_ready() {
                                return Poll::Ready(false);
                            }
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(())) => match self.io.try_write(&self.pending) {
                        Ok(n) => self.pending.advance(n),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return Poll::Ready(false),
                    },
                }
                continue;
            }
            // Release the spent chunk's memory before waiting for more.
            self.pending = Bytes::new();
            match Pin::new(&mut self.outbound).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.pending = chunk,
                // The client did not finish the closing handshake in time.
                Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                Poll::Ready(None) => return Poll::Ready(true),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads what the client sent. `Ready(())`: the peer closed the connection or it failed.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(sender) = &self.inbound {
                if !sender.ready(cx) {
                    return Poll::Pending;
                }
            }
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    self.failed(&e);
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(())) => {}
            }
            let mut buf = [0u8; READ_CHUNK_BYTES];
            match self.io.try_read(&mut buf) {
                Ok(0) => return Poll::Ready(()),
                Ok(n) => {
                    if let Some(sender) = &self.inbound {
                        sender.send(Bytes::copy_from_slice(&buf[..n]));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.failed(&e);
                    return Poll::Ready(());
                }
            }
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        if let Some(sender) = &self.inbound {
            sender.fail(e);
        }
    }

    /// Reads and discards until the peer closes. `Ready`: it did, or the read failed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match self.io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            let mut buf = [0u8; 1024];
            match self.io.try_read(&mut buf) {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }
}

impl Future for Connection {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if let State::Open = this.state {
            match this.poll_write(cx) {
                Poll::Ready(false) => return Poll::Ready(()),
                Poll::Ready(true) => {
                    // Everything is written: send FIN, then give the peer a moment to close
                    // so that its last frames do not reset the connection under ours.
                    let _ = socket2::SockRef::from(&this.io).shutdown(std::net::Shutdown::Write);
                    this.inbound = None;
                    this.state = State::Closing(Box::pin(actix_rt::time::sleep(DISCONNECT_WAIT)));
                }
                Poll::Pending => {
                    // A client that closes its side is gone (as `h1_allow_half_closed(false)`
                    // makes it for plain HTTP).
                    return match this.poll_read(cx) {
                        Poll::Ready(()) => Poll::Ready(()),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
        match &mut this.state {
            State::Closing(deadline) => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                this.poll_drain(cx)
            }
            State::Open => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[actix_rt::test]
    async fn inbound_hands_over_one_chunk_at_a_time_and_ends_with_the_connection() {
        let (sender, mut received) = inbound();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(sender.ready(&mut cx));
        sender.send(Bytes::from_static(b"one"));
        // The slot is full until the session takes the chunk: the connection reads no more.
        assert!(!sender.ready(&mut cx));
        assert_eq!(received.next().await.unwrap().unwrap(), "one");
        assert!(sender.ready(&mut cx));
        sender.send(Bytes::from_static(b"two"));
        drop(sender);
        // What was handed over before the connection ended is still read, then the end.
        assert_eq!(received.next().await.unwrap().unwrap(), "two");
        assert!(received.next().await.is_none());
    }

    #[actix_rt::test]
    async fn a_failed_read_is_an_error_and_a_gone_session_takes_nothing() {
        let (sender, mut received) = inbound();
        sender.fail(&std::io::Error::other("reset"));
        drop(sender);
        assert!(matches!(received.next().await, Some(Err(_))));
        assert!(received.next().await.is_none());

        let (sender, received) = inbound();
        drop(received);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // Nobody reads: the connection may read on (and discard) without holding anything.
        sender.send(Bytes::from_static(b"lost"));
        assert!(sender.ready(&mut cx));
        assert!(sender.0.borrow().chunk.is_none());
    }

    /// A client that stops reading is evicted while the socket takes nothing: the
    /// connection must still end, without the kernel's TCP_USER_TIMEOUT (not set here).
    #[actix_rt::test]
    async fn an_evicted_client_whose_socket_is_full_is_dropped_after_the_grace() {
        use courier_actors::client_queue::{queue, OutFrame, QueueLimits, SendError};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        client
            .connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let io = TcpStream::from_std(server).unwrap();

        let (tx, rx) = queue(QueueLimits {
            messages: 64,
            bytes: 256 * 1024,
        });
        let connection = actix_rt::spawn(Connection::new(io, None, WsBody::new(rx), None));
        // The client never reads: the socket's buffers fill, then the queue does.
        let frame: bytestring::ByteString = "y".repeat(60_000).into();
        let mut sent = 0usize;
        loop {
            match tx.try_send(OutFrame::Text(frame.clone())) {
                Ok(()) => sent += 1,
                Err(SendError::Full) => break,
                Err(SendError::Closed) => panic!("the connection ended before the queue filled"),
            }
            assert!(sent < 10_000, "the socket never stopped taking data");
            actix_rt::task::yield_now().await;
        }
        tx.evict();
        let ended = actix_rt::time::timeout(CLOSE_HANDSHAKE_TIMEOUT * 5, connection).await;
        assert!(
            ended.is_ok(),
            "the connection of an evicted client that does not read was never dropped"
        );
        drop(client);
    }
}
