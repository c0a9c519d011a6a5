//! A deadline for request bodies: a body that sends nothing for `BODY_TIMEOUT_MS`, or
//! whose average rate falls below `BODY_MIN_BYTES_PER_SEC` after that first stretch, is
//! cut off. The handler reading it gets a timed-out read (408), and the connection is
//! closed after the response instead of being held open for the rest of the body. A
//! request whose handler did not read its whole body also gets its connection closed, so
//! a client trickling a body into a route that ignores it cannot hold a connection either.
//!
//! The request head has its own deadline (`CLIENT_REQUEST_TIMEOUT_MS`, in the HTTP layer).
//! WebSocket upgrades are left alone: their body is the connection itself.

use std::cell::Cell;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::PayloadError;
use actix_web::http::{header, ConnectionType};
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::future::Either;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::config::BodyLimits;

/// The middleware; see the module documentation.
#[derive(Clone, Copy)]
pub struct BodyDeadline {
    limits: BodyLimits,
}

impl BodyDeadline {
    /// Cuts off bodies that arrive slower than `limits` allow.
    pub fn new(limits: BodyLimits) -> Self {
        Self { limits }
    }
}

impl<S, B> Transform<S, ServiceRequest> for BodyDeadline
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = BodyDeadlineService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(BodyDeadlineService {
            service: Rc::new(service),
            limits: self.limits,
        }))
    }
}

/// The middleware's service.
pub struct BodyDeadlineService<S> {
    service: Rc<S>,
    limits: BodyLimits,
}

/// Whether the request carries a body (and is not a WebSocket upgrade).
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    if headers.contains_key(header::UPGRADE) {
        return false;
    }
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

impl<S, B> Service<ServiceRequest> for BodyDeadlineService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    // A request without a body (most of them) goes straight through, without a box.
    type Future =
        Either<S::Future, Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        if !has_body(&req) {
            return Either::Left(self.service.call(req));
        }
        let finished = Rc::new(Cell::new(false));
        let body = DeadlineBody::new(req.take_payload(), self.limits, finished.clone());
        req.set_payload(Payload::Stream {
            payload: Box::pin(body),
        });
        let service = self.service.clone();
        Either::Right(Box::pin(async move {
            let mut res = service.call(req).await?;
            if !finished.get() {
                // The rest of the body is not waited for.
                res.response_mut()
                    .head_mut()
                    .set_connection_type(ConnectionType::Close);
            }
            Ok(res)
        }))
    }
}

/// A request body with a deadline.
struct DeadlineBody {
    inner: Payload,
    limits: BodyLimits,
    started: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
    /// Set once the body has been read to its end.
    finished: Rc<Cell<bool>>,
}

impl DeadlineBody {
    fn new(inner: Payload, limits: BodyLimits, finished: Rc<Cell<bool>>) -> Self {
        let started = Instant::now();
        Self {
            inner,
            limits,
            started,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(started + limits.timeout)),
            finished,
        }
    }

    /// When the body is late: `timeout` after the last chunk, or when its average rate
    /// (after the first `timeout`) falls below the minimum, whichever comes first.
    fn deadline(&self) -> Instant {
        let idle = Instant::now() + self.limits.timeout;
        if self.limits.min_rate == 0 {
            return idle;
        }
        let paid_for = Duration::from_secs_f64(self.received as f64 / self.limits.min_rate as f64);
        idle.min(self.started + self.limits.timeout + paid_for)
    }
}

impl Stream for DeadlineBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                let deadline = this.deadline();
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.finished.set(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the request body arrived too slowly ({} bytes in {} ms)",
                        this.received,
                        this.started.elapsed().as_millis()
                    ),
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
