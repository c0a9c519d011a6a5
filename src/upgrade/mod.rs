//! WebSocket connections taken out of the HTTP layer once they are upgraded.
//!
//! actix-http serves every connection with a dispatcher that keeps an 8 KiB read and an
//! 8 KiB write buffer for as long as the connection lives. For a WebSocket that is most of
//! what an idle client costs, so upgrades take another path: the HTTP service is built with
//! an upgrade handler ([`upgrade_service`]), which receives every `Upgrade: websocket`
//! request together with the socket. It runs the request through the same application (the
//! same routes, middleware, checks and log line), with a [`HandOff`] in the request's
//! extensions. A WebSocket route that accepts the socket leaves its two halves there — the
//! outbound [`WsBody`] and the session's [`Inbound`] — and answers 101 without a body. The
//! handler writes the 101, drops the dispatcher's buffers and drives the socket with a
//! [`Connection`] on a task of its own, which holds no buffer while the connection is idle;
//! the dispatcher's task ends.
//!
//! The HTTP server no longer counts those sockets, so [`Upgraded`] does: it bounds them
//! (`MAX_CONNECTIONS_PER_WORKER` for each worker; an upgrade beyond is answered 503) and
//! lets a graceful shutdown wait for their closing handshakes.
//!
//! A request that is not accepted as a WebSocket (refused with 403, a route that is not a
//! WebSocket, …) gets the application's response as usual, and its connection closes after
//! it. The WebSocket routes still work without a [`HandOff`] (in tests that call the
//! application directly): their response body then carries the frames.

mod connection;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_codec::{Framed, FramedParts};
use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::{ConnectionType, HttpMessage, Request, Response, StatusCode};
use actix_rt::net::TcpStream;
use actix_service::{fn_factory, fn_service, Service, ServiceFactory};
use actix_web::HttpRequest;
use bytes::Bytes;
use courier_actors::client_queue::WsBody;
use futures_util::future::LocalBoxFuture;
use futures_util::SinkExt;

pub use connection::{
    inbound, Connection, Inbound, InboundSender, DISCONNECT_WAIT, READ_CHUNK_BYTES,
};

/// The WebSockets driven outside the HTTP layer, across the workers: how many are open, and
/// how many may be.
pub struct Upgraded {
    live: AtomicUsize,
    max: usize,
    /// Set when the server shuts down: no more sockets are taken.
    closing: AtomicBool,
    none_left: tokio::sync::Notify,
}

impl Upgraded {
    /// A count that lets `max` connections in at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicUsize::new(0),
            max,
            closing: AtomicBool::new(false),
            none_left: tokio::sync::Notify::new(),
        })
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Takes no more connections (upgrades are answered 503 from now on).
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Counts one more connection, unless `max` are open or the server is shutting down.
    fn enter(self: &Arc<Self>) -> Option<Ticket> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Ticket(self.clone()))
    }

    /// Waits until every connection has closed, or `limit` has passed; whether they all did.
    pub async fn all_closed(&self, limit: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.none_left.notified();
                if self.live() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// One open connection in [`Upgraded`]'s count, until it is dropped.
pub struct Ticket(Arc<Upgraded>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

/// What a WebSocket route leaves when it accepts a socket.
struct Accepted {
    outbound: WsBody,
    inbound: Option<InboundSender>,
}

/// The place, in the extensions of a request that came through the upgrade handler, where
/// a WebSocket route leaves an accepted socket's halves.
#[derive(Clone)]
pub struct HandOff {
    accepted: Rc<RefCell<Option<Accepted>>>,
    /// Whether the server holds as many WebSockets as it may.
    full: bool,
}

impl HandOff {
    /// An empty hand-off; `full` when the server holds as many WebSockets as it may.
    pub(crate) fn new(full: bool) -> Self {
        Self {
            accepted: Rc::default(),
            full,
        }
    }

    /// Whether a route accepted the socket.
    #[cfg(test)]
    pub(crate) fn accepted(&self) -> bool {
        self.accepted.borrow().is_some()
    }

    /// The hand-off of `req`, if it came through the upgrade handler.
    pub fn of(req: &HttpRequest) -> Option<HandOff> {
        use actix_web::HttpMessage as _;
        req.extensions().get::<HandOff>().cloned()
    }

    /// Accepts the socket: `outbound` is written to it, and what the client sends goes to
    /// `inbound` (discarded when `None`).
    pub fn accept(&self, outbound: WsBody, inbound: Option<InboundSender>) {
        *self.accepted.borrow_mut() = Some(Accepted { outbound, inbound });
    }

    /// Whether the server already holds as many WebSockets as it may; a route answers 503
    /// instead of accepting.
    pub fn full(&self) -> bool {
        self.full
    }

    fn take(&self) -> Option<Accepted> {
        self.accepted.borrow_mut().take()
    }
}

/// The application's service as the upgrade handler calls it.
type AppCall = Rc<dyn Fn(Request) -> LocalBoxFuture<'static, Response<BoxBody>>>;

/// One worker's application service, shared by its HTTP service and its upgrade handler.
#[derive(Clone, Default)]
pub struct AppHandle(Rc<RefCell<Option<AppCall>>>);

impl AppHandle {
    fn get(&self) -> Option<AppCall> {
        self.0.borrow().clone()
    }
}

/// The application's service factory, unchanged, that also leaves each service it builds in
/// `handle` for the upgrade handler of the same worker.
pub fn shared<F, B>(
    factory: F,
    handle: AppHandle,
) -> impl ServiceFactory<
    Request,
    Config = (),
    Response = F::Response,
    Error = F::Error,
    InitError = F::InitError,
>
where
    F: ServiceFactory<Request, Config = ()> + 'static,
    F::Service: 'static,
    F::Response: Into<Response<B>>,
    F::Error: Into<Response<BoxBody>>,
    B: MessageBody + 'static,
{
    let factory = Rc::new(factory);
    fn_factory(move || {
        let building = factory.new_service(());
        let handle = handle.clone();
        async move {
            let service = Rc::new(building.await?);
            let inner = service.clone();
            let call: AppCall = Rc::new(move |req| {
                let fut = inner.call(req);
                Box::pin(async move {
                    match fut.await {
                        Ok(res) => res.into().map_into_boxed_body(),
                        Err(e) => e.into(),
                    }
                })
            });
            *handle.0.borrow_mut() = Some(call);
            Ok(Shared { service })
        }
    })
}

/// The application's service behind an `Rc`.
pub struct Shared<S> {
    service: Rc<S>,
}

impl<S: Service<Request>> Service<Request> for Shared<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    actix_service::forward_ready!(service);

    fn call(&self, req: Request) -> Self::Future {
        self.service.call(req)
    }
}

/// The upgrade handler: runs the request through the application (from `handle`) and, when
/// a WebSocket route accepted it, drives the socket itself, counted in `upgraded`.
pub fn upgrade_service(
    handle: AppHandle,
    upgraded: Arc<Upgraded>,
) -> impl ServiceFactory<
    (Request, Framed<TcpStream, h1::Codec>),
    Config = (),
    Response = (),
    Error = actix_http::Error,
    InitError = (),
> {
    fn_service(
        move |(req, framed): (Request, Framed<TcpStream, h1::Codec>)| {
            let handle = handle.clone();
            let upgraded = upgraded.clone();
            async move {
                serve(handle, &upgraded, req, framed).await;
                Ok::<_, actix_http::Error>(())
            }
        },
    )
}

async fn serve(
    handle: AppHandle,
    upgraded: &Arc<Upgraded>,
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) {
    let Some(app) = handle.get() else {
        log::error!("upgrade before the application was built; connection dropped");
        return;
    };
    let ticket = upgraded.enter();
    let hand_off = HandOff::new(ticket.is_none());
    req.extensions_mut().insert(hand_off.clone());
    let (mut head, body) = app(req).await.into_parts();
    match (hand_off.take(), ticket) {
        (Some(accepted), Some(ticket)) if head.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if framed
                .send(Message::Item((head, BodySize::None)))
                .await
                .is_err()
            {
                return;
            }
            // Only the socket is kept: the dispatcher's read and write buffers, which came
            // with it, are dropped here.
            let FramedParts { io, read_buf, .. } = framed.into_parts();
            // Frames the client sent right behind its handshake.
            let early = (!read_buf.is_empty()).then(|| Bytes::copy_from_slice(&read_buf));
            let connection = Connection::new(io, accepted.inbound, accepted.outbound, early);
            // A task of its own: the dispatcher's task, and all it holds, ends here.
            actix_rt::spawn(async move {
                connection.await;
                drop(ticket);
            });
        }
        _ => {
            head.head_mut().set_connection_type(ConnectionType::Close);
            if write_response(&mut framed, head, body).await.is_ok() {
                let _ = framed.close().await;
            }
        }
    }
}

/// Writes a response that did not upgrade the connection.
async fn write_response(
    framed: &mut Framed<TcpStream, h1::Codec>,
    head: Response<()>,
    body: BoxBody,
) -> Result<(), ()> {
    let size = body.size();
    let mut head = head;
    if matches!(size, BodySize::Stream) {
        // The codec of an upgrade request sends a streamed body as it comes; the body ends
        // where the connection does.
        head.head_mut().no_chunking(true);
    }
    framed
        .send(Message::Item((head, size)))
        .await
        .map_err(drop)?;
    if matches!(size, BodySize::None) {
        return Ok(());
    }
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let chunk = chunk.map_err(drop)?;
        framed
            .send(Message::Chunk(Some(chunk)))
            .await
            .map_err(drop)?;
    }
    framed.send(Message::Chunk(None)).await.map_err(drop)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[actix_rt::test]
    async fn upgraded_connections_are_bounded_and_waited_for() {
        let upgraded = Upgraded::new(2);
        let a = upgraded.enter().expect("first");
        let b = upgraded.enter().expect("second");
        assert!(upgraded.enter().is_none(), "a third is over the bound");
        assert_eq!(upgraded.live(), 2);
        drop(a);
        let c = upgraded.enter().expect("room again once one closed");
        assert!(!upgraded.all_closed(Duration::from_millis(10)).await);

        let waiting = {
            let upgraded = upgraded.clone();
            actix_rt::spawn(async move { upgraded.all_closed(Duration::from_secs(10)).await })
        };
        drop((b, c));
        assert!(
            waiting.await.unwrap(),
            "the wait ends when the last one closes"
        );
        assert_eq!(upgraded.live(), 0);
        upgraded.close();
        assert!(
            upgraded.enter().is_none(),
            "none once the server shuts down"
        );
    }
}
