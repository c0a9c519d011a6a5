//! CORS only for requests that carry an `Origin`.
//!
//! `actix_cors::Cors` boxes every request's future and validates and augments every
//! response, though a request without an `Origin` header (a probe, a server-side caller,
//! `curl`) is not a cross-origin request and passes it untouched. [`CorsGate`] sends those
//! straight to the inner service and adds the header that matters to them, `Vary: Origin`
//! (so a shared cache does not hand the answer to a browser that sent an `Origin`; `Cors`
//! also added `Access-Control-Expose-Headers`, which means nothing without an `Origin`);
//! requests with an `Origin`, and anything shaped like a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`), go through `Cors` as before.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderValue};
use actix_web::Error;
use futures_util::future::{Either, LocalBoxFuture};
use futures_util::{FutureExt, TryFutureExt};

/// The `Vary` value `Cors` gives every response it passes.
const VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Wraps a `Cors` so that only requests with an `Origin` go through it.
pub struct CorsGate(pub actix_cors::Cors);

/// A shared inner service, so the gate and `Cors` can both call it.
pub struct Shared<S>(Rc<S>);

impl<S: Service<ServiceRequest>> Service<ServiceRequest> for Shared<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        self.0.call(req)
    }
}

impl<S, B> Transform<S, ServiceRequest> for CorsGate
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = CorsGateService<S>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let inner = Rc::new(service);
        self.0
            .new_transform(Shared(inner.clone()))
            .map_ok(move |cors| CorsGateService { inner, cors })
            .boxed_local()
    }
}

/// The service [`CorsGate`] builds.
pub struct CorsGateService<S> {
    inner: Rc<S>,
    cors: actix_cors::CorsMiddleware<Shared<S>>,
}

pin_project_lite::pin_project! {
    /// The future of a request without an `Origin`: the inner service's, plus `Vary`.
    pub struct Plain<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B> Future for Plain<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_ok(|mut res| {
            res.headers_mut()
                .append(header::VARY, HeaderValue::from_static(VARY));
            res.map_into_left_body()
        })
    }
}

impl<S, B> Service<ServiceRequest> for CorsGateService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Either<
        Plain<S::Future>,
        LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B>>, Error>>,
    >;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let headers = req.headers();
        let cors = headers.contains_key(header::ORIGIN)
            || (req.method() == actix_web::http::Method::OPTIONS
                && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD));
        if cors {
            Either::Right(self.cors.call(req))
        } else {
            Either::Left(Plain {
                inner: self.inner.call(req),
            })
        }
    }
}
