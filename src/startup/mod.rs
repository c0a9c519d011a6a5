//! Building and running the application: its lifespan, with a listener, shared handles and
//! graceful shutdown.
//!
//! [`Application::build`] binds the listener (port 0 picks a free port), creates the store
//! pools and clients, and starts the HTTP workers. [`Application::run_until_stopped`] serves
//! until SIGINT/SIGTERM (or [`Application::handle`]) stops it, then shuts down in order:
//! stop accepting, let in-flight requests finish within `SHUTDOWN_TIMEOUT_SECS`, stop the
//! actors, close the pools.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;

use crate::cors_gate::CorsGate;
use actix_web::{web, App};
use anyhow::Context as _;
use courier_actors::blocking::BlockingPool;
use courier_actors::cache::{Cache, CacheMetrics, RedisCache};
use courier_actors::db::Database;
use courier_actors::db_executor::DbExecutor;
use courier_actors::job_worker::{JobEvents, JobMetrics, JobWorker, ReleaseJobs, Runner, Smtp};
use courier_actors::metrics::RealtimeMetrics;
use courier_actors::redis_bus::{BusConfig, RedisBus};
use courier_actors::room_broker::{CloseAll, RoomBroker};
use courier_actors::sse_feed::{CloseFeeds, SseFeed};
use courier_actors::upload_store::UploadStore;
use url::Url;

use crate::body_deadline::BodyDeadline;
use crate::client_budgets::ClientBudgets;
use crate::config::Config;
use crate::error::extractor_configs;
use crate::http_client;
use crate::metrics::Metrics;
use crate::routes;
use crate::state::{AppState, Pools, Realtime, Stores};
use crate::telemetry::Telemetry;
use crate::upgrade::Upgraded;

mod server;
mod stores;

use server::serve;
pub use stores::{build_database, MIGRATION_RETRY_INTERVAL};
use stores::{build_stores, prepare_schema, shutdown_stores};

/// Connections the kernel queues for `accept` (bursts of thousands of WebSocket clients).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Most connections one worker serves at once (10,000 WebSockets fit on one node). It bounds
/// the HTTP connections of each worker, and, apart, the upgraded WebSockets: this many per
/// worker across the server (an upgrade beyond is answered 503).
pub const MAX_CONNECTIONS_PER_WORKER: usize = 25_000;

/// Longest the HTTP layer waits for a peer to close once the server has closed its side (a
/// finished WebSocket closing handshake, `Connection: close`). actix-web's default, 1 s,
/// kept every WebSocket whose client closed it open for a second more.
pub const CLIENT_DISCONNECT_TIMEOUT: std::time::Duration = crate::upgrade::DISCONNECT_WAIT;

/// Built-in demo stores `/fastest-price` races when `PRICE_SOURCES` is unset.
pub const DEMO_PRICE_STORES: u32 = 3;

/// A built, listening application.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: AppState,
    arbiter: actix_rt::Arbiter,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    upgraded: Arc<Upgraded>,
}

/// Stops the application the way a signal does: realtime connections are closed (WebSocket
/// 1001, SSE streams ended), the job worker cancels its running attempts and hands them
/// back to the queue, then the HTTP server stops accepting and lets in-flight requests
/// finish within `SHUTDOWN_TIMEOUT_SECS`.
#[derive(Clone)]
pub struct ShutdownHandle {
    server: ServerHandle,
    realtime: Realtime,
    job_events: JobEvents,
    jobs: Addr<JobWorker>,
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    upgraded: Arc<Upgraded>,
    timeout: Duration,
}

impl ShutdownHandle {
    /// Runs the shutdown; returns when the HTTP server has stopped.
    pub async fn shutdown(&self) {
        log::info!("shutdown: closing realtime connections");
        // No new connections, and no new WebSockets from handshakes already under way, so
        // every WebSocket the wait below counts is one `CloseAll` reaches.
        self.server.pause().await;
        self.upgraded.close();
        let ws = self.realtime.broker.send(CloseAll).await.unwrap_or(0);
        let sse = self.realtime.feed.send(CloseFeeds).await.unwrap_or(0);
        self.job_events.close();
        // Every other stream (`/sse`, exports) ends on this.
        self.closing.send_replace(true);
        log::info!("shutdown: sent close to {ws} connections and {sse} feed streams");
        // WebSockets are not the HTTP server's to wait for: their closing handshakes are
        // waited for here, within the same limit.
        if !self.upgraded.all_closed(self.timeout).await {
            log::warn!(
                "shutdown: {} WebSockets still open after {} s; they are dropped",
                self.upgraded.live(),
                self.timeout.as_secs()
            );
        }
        // Before the HTTP workers stop: the jobs go back to the queue (for another node, or
        // this one after a restart) while every part of the server is still running.
        match self.jobs.send(ReleaseJobs).await {
            Ok(n) => log::info!("shutdown: {n} running jobs handed back to the queue"),
            Err(e) => log::warn!("shutdown: the job worker did not answer: {e}"),
        }
        log::info!(
            "shutdown: stopped accepting; in-flight requests get up to {} s",
            self.timeout.as_secs()
        );
        self.server.stop(true).await;
    }
}

/// Waits for SIGINT or SIGTERM and names it.
async fn signal_received() -> &'static str {
    use actix_rt::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for SIGTERM/SIGINT; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Binds a listener with a deep accept backlog.
fn bind(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{host} resolves to no address"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A random id for this node, the prefix of its connection ids.
fn node_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

impl Application {
    /// Binds the listener, creates pools, clients and actors, and starts the workers.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = bind(&config.host, config.port)
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let addr = listener.local_addr()?;
        let data_dir = config.data_dir.clone();
        web::block(move || std::fs::create_dir_all(&data_dir))
            .await?
            .with_context(|| format!("cannot create APP_DATA_DIR {}", config.data_dir.display()))?;

        let metrics = Metrics::new(&config.app_name);
        let stores = build_stores(&config).await?;
        let db = build_database(&config, &metrics, &stores);
        prepare_schema(&db).await;
        let upstream_url = match &config.upstream_url {
            Some(url) => url.clone(),
            None => own_url(addr, "/demo/data")?,
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (realtime, arbiter) = start_realtime(&config, &metrics, &stores, &db)?;
        let pools = Pools {
            cpu: BlockingPool::new("courier-cpu", cores, config.pools.queue),
            sync: BlockingPool::new(
                "courier-sync",
                config.pools.sync_threads,
                config.pools.queue,
            ),
        };
        let cache = start_cache(&config, &metrics, &stores, &arbiter, pools.cpu.clone());
        let uploads = {
            let store = UploadStore::open(&config.data_dir, config.files.clone()).await;
            UploadStore::start_in_arbiter(&arbiter.handle(), move |_| store)
        };
        let (closing_tx, closing) = tokio::sync::watch::channel(false);
        let replay_budgets = Arc::new(ClientBudgets::new(
            config.realtime.session.replay_bytes_per_sec,
            config.realtime.session.replay_bytes_burst,
        ));
        let (jobs, job_events) = start_jobs(&config, &metrics, &db, &realtime, &uploads, &arbiter)?;
        let aggregate_base = match &config.aggregate_url {
            Some(url) => url.clone(),
            None => own_url(addr, "/demo")?,
        };
        let price_sources = if config.price_sources.is_empty() {
            let base = own_url(addr, "/demo/price/")?;
            (1..=DEMO_PRICE_STORES)
                .map(|store| format!("{base}{{product_id}}?store={store}"))
                .collect()
        } else {
            config.price_sources.clone()
        };
        let state = AppState {
            config: Arc::new(config),
            metrics: metrics.clone(),
            stores,
            database: db.clone(),
            upstream_url: Arc::new(upstream_url),
            aggregate_base: Arc::new(aggregate_base),
            price_sources: Arc::new(price_sources),
            cache,
            jobs,
            job_events,
            uploads,
            pools,
            replay_budgets,
            closing,
            realtime,
        };

        let config = state.config.clone();
        let data = web::Data::new(state.clone());
        let app = move || {
            let (json, query, path, payload) = extractor_configs(config.max_body_bytes);
            // One database executor per worker: queries run on the thread that serves the
            // request; the pool they share bounds the connections.
            let executor = DbExecutor::new(db.clone()).start();
            let documents_max = config.data.documents_max_bytes;
            App::new()
                .app_data(data.clone())
                .app_data(web::Data::new(executor))
                .app_data(web::Data::new(http_client::build_client(
                    &config.http_client,
                )))
                .app_data(json)
                .app_data(query)
                .app_data(path)
                .app_data(payload)
                .wrap(from_fn(routes::access::protect))
                .wrap(CorsGate(cors(&config)))
                .wrap(BodyDeadline::new(config.body))
                .wrap(Telemetry::new(metrics.clone(), config.debug))
                .configure(|cfg| routes::configure(cfg, documents_max))
                .default_service(web::to(routes::not_found))
        };
        // Upgraded WebSockets leave the HTTP server's count: they have a bound of their own.
        let upgraded = Upgraded::new(MAX_CONNECTIONS_PER_WORKER * state.config.worker_count());
        let server = serve(app, listener, &state.config, upgraded.clone())?;

        log::info!(
            "courier {} listening on http://{addr} (env={}, workers={})",
            env!("CARGO_PKG_VERSION"),
            state.config.env,
            state.config.worker_count()
        );
        Ok(Self {
            addr,
            server,
            state,
            arbiter,
            closing: Arc::new(closing_tx),
            upgraded,
        })
    }

    /// A handle that shuts the application down the way SIGTERM does.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            realtime: self.state.realtime.clone(),
            job_events: self.state.job_events.clone(),
            jobs: self.state.jobs.clone(),
            closing: self.closing.clone(),
            upgraded: self.upgraded.clone(),
            timeout: self.state.config.shutdown_timeout,
        }
    }

    /// The port the listener is bound to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address the listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that can stop the server (gracefully or not) from elsewhere.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM or a [`ShutdownHandle`] stops it, then shuts the rest
    /// down in order, logging each step.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let shutdown = self.shutdown_handle();
        let Self {
            server,
            state,
            arbiter,
            ..
        } = self;
        let on_signal = actix_rt::spawn(async move {
            let name = signal_received().await;
            log::info!("shutdown: {name} received; starting graceful shutdown");
            shutdown.shutdown().await;
        });
        let result = server.await;
        on_signal.abort();
        log::info!("shutdown: HTTP server stopped; in-flight requests are finished");
        arbiter.stop();
        log::info!("shutdown: actors stopped");
        shutdown_stores(state.stores).await;
        log::info!("shutdown: complete");
        result
    }
}

/// How long a browser may keep a preflight's answer.
pub const CORS_MAX_AGE_SECS: usize = 3600;

/// CORS for REST and SSE: preflights answered, and the headers added to every response,
/// for the server's own origin and `CORS_ALLOWED_ORIGINS`; a request from another origin
/// is refused. Requests without an `Origin` (not from a browser) pass untouched.
fn cors(config: &Config) -> actix_cors::Cors {
    let origins = config.cors_origins.clone();
    actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, head| {
            let host = head
                .headers()
                .get(actix_web::http::header::HOST)
                .and_then(|h| h.to_str().ok());
            origin
                .to_str()
                .is_ok_and(|origin| origins.allows(origin, host))
        })
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::ACCEPT,
            actix_web::http::header::HeaderName::from_static("x-api-key"),
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            actix_web::http::header::HeaderName::from_static("idempotency-key"),
            actix_web::http::header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            actix_web::http::header::LOCATION,
            actix_web::http::header::RETRY_AFTER,
        ])
        .max_age(CORS_MAX_AGE_SECS)
}

/// `http://<addr><path>` for this server, using loopback when bound to every interface.
fn own_url(addr: SocketAddr, path: &str) -> anyhow::Result<Url> {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(Url::parse(&format!(
        "http://{}{path}",
        SocketAddr::new(ip, addr.port())
    ))?)
}

/// Starts the job worker on the realtime arbiter (its jobs are I/O: database, SMTP, files).
fn start_jobs(
    config: &Config,
    metrics: &Metrics,
    db: &Database,
    realtime: &Realtime,
    uploads: &Addr<UploadStore>,
    arbiter: &actix_rt::Arbiter,
) -> anyhow::Result<(actix::Addr<JobWorker>, JobEvents)> {
    let smtp = match &config.jobs.smtp_url {
        Some(url) => {
            log::info!("jobs: email through SMTP at {}", url.redacted());
            Some(
                Smtp::new(
                    url.expose(),
                    &config.jobs.smtp_from,
                    config.jobs.smtp_timeout,
                )
                .map_err(anyhow::Error::msg)?,
            )
        }
        None => {
            log::info!("jobs: SMTP_URL is unset; emails are written to the outbox (GET /outbox)");
            None
        }
    };
    let events = JobEvents::new(Some(realtime.feed.clone()));
    let runner = Runner::new(db.clone(), smtp, uploads.clone());
    let job_metrics = JobMetrics::register(metrics.registry());
    let worker_id = format!("{}-jobs", realtime.node_id);
    let (db, job_config, worker_events) = (db.clone(), config.jobs.worker.clone(), events.clone());
    let addr = JobWorker::start_in_arbiter(&arbiter.handle(), move |_| {
        JobWorker::new(
            db,
            job_config,
            &worker_id,
            runner,
            job_metrics,
            worker_events,
        )
    });
    Ok((addr, events))
}

/// Starts the cache on the realtime arbiter: on Redis (`REDIS_URL_CACHE`, else `REDIS_URL`)
/// when configured, in process otherwise.
fn start_cache(
    config: &Config,
    metrics: &Metrics,
    stores: &Stores,
    arbiter: &actix_rt::Arbiter,
    cpu: BlockingPool,
) -> actix::Addr<Cache> {
    let redis = stores.redis_cache.clone().or_else(|| stores.redis.clone());
    log::info!(
        "cache: {}",
        if redis.is_some() {
            "Redis"
        } else {
            "in process"
        }
    );
    let redis = redis.map(|pool| RedisCache {
        pool,
        prefix: format!("{}:cache:", config.app_name),
        timeout: config.redis_command_timeout,
    });
    let cache_config = config.cache.clone();
    let cache_metrics = CacheMetrics::register(metrics.registry());
    Cache::start_in_arbiter(&arbiter.handle(), move |_| {
        Cache::new(cache_config, cache_metrics, redis, cpu)
    })
}

/// Starts the realtime actors (broker and SSE feed) on an arbiter of their own, with the
/// Redis bus when Redis is configured.
fn start_realtime(
    config: &Config,
    metrics: &Metrics,
    stores: &Stores,
    db: &Database,
) -> anyhow::Result<(Realtime, actix_rt::Arbiter)> {
    let rt = &config.realtime;
    let node: Arc<str> = node_id().into();
    let realtime_metrics = RealtimeMetrics::register(metrics.registry());
    let arbiter = actix_rt::Arbiter::new();
    let feed = SseFeed::new(rt.feed.clone(), realtime_metrics.clone()).start(&arbiter.handle());
    let bus = match (&config.redis_url, &stores.bus_commands) {
        (Some(url), Some(commands)) => Some(RedisBus::new(
            BusConfig {
                urls: vec![url.expose().to_owned()],
                cluster: config.redis_cluster,
                prefix: config.app_name.clone(),
                node: node.to_string(),
                history_cap: rt.broker.history_limit,
                history_ttl: rt.broker.history_ttl,
                idempotency_window: rt.broker.idempotency_window,
                timeout: config.redis_command_timeout,
            },
            commands.clone(),
        )),
        _ => None,
    };
    let broker = RoomBroker::new(
        rt.broker.clone(),
        realtime_metrics.clone(),
        Some(feed.clone()),
        bus,
        Some(db.clone()),
    )
    .start(&arbiter.handle());
    log::info!(
        "realtime: node {node}; rooms {}",
        if config.redis_url.is_some() {
            "numbered and shared through Redis"
        } else {
            "numbered and kept in the database"
        }
    );
    let realtime = Realtime::new(
        broker,
        feed,
        realtime_metrics,
        Arc::new(rt.session.clone()),
        rt.queue,
        node,
    );
    Ok((realtime, arbiter))
}
