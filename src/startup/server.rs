//! The HTTP server: actix-server's workers running actix-http's HTTP/1 service over the
//! application, with the WebSocket upgrade handler of [`crate::upgrade`].
//!
//! This is what actix-web's `HttpServer` builds, with the same settings, plus the upgrade
//! handler, which `HttpServer` has no way to take.

use std::fmt;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::{HttpService, Request, Response};
use actix_rt::net::TcpStream;
use actix_server::Server;
use actix_service::{map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;

use super::{CLIENT_DISCONNECT_TIMEOUT, MAX_CONNECTIONS_PER_WORKER};
use crate::config::Config;
use crate::upgrade::{shared, upgrade_service, AppHandle, Upgraded};

/// Serves `app` (built once per worker) on `listener` until stopped; upgraded WebSockets
/// are counted in `upgraded`.
pub fn serve<F, I, S, B>(
    app: F,
    listener: TcpListener,
    config: &Config,
    upgraded: Arc<Upgraded>,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let builder = Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let addr = listener.local_addr()?;
    let keep_alive = config.http_keep_alive;
    let request_timeout = config.client_request_timeout;
    let user_timeout = config.realtime.tcp_user_timeout;
    Ok(builder
        .disable_signals()
        .max_concurrent_connections(MAX_CONNECTIONS_PER_WORKER)
        .workers(config.worker_count())
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .listen("courier-http", listener, move || {
            let shutdown = shutdown.clone();
            let upgraded = upgraded.clone();
            let handle = AppHandle::default();
            let host = addr.to_string();
            let factory = app()
                .into_factory()
                .map_err(|err| err.into().error_response());
            // The connection facts actix-web's own server gives the application (its
            // constructor is the one actix-web's test server uses).
            let factory = map_config(factory, move |_| {
                AppConfig::__priv_test_new(false, host.clone(), addr)
            });
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .keep_alive(keep_alive)
                .client_request_timeout(request_timeout)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                // A client that closes its side is gone: drop its streams (SSE subscribers,
                // sockets) at once instead of writing to it until a write fails.
                .h1_allow_half_closed(false)
                .local_addr(addr)
                .on_connect_ext(move |io: &TcpStream, _| set_user_timeout(io, user_timeout))
                .upgrade(upgrade_service(handle.clone(), upgraded))
                .finish(shared(factory, handle))
                .tcp()
        })?
        .run())
}

/// A peer that stops acknowledging data is reset by the kernel after `timeout`, which frees
/// the buffers of clients that stopped reading (`TCP_USER_TIMEOUT`; zero leaves the
/// kernel's default).
fn set_user_timeout(io: &TcpStream, timeout: Duration) {
    if !timeout.is_zero() {
        let _ = socket2::SockRef::from(io).set_tcp_user_timeout(Some(timeout));
    }
}
