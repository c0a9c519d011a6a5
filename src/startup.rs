//! Building and running the application: the lifespan of the seed's `lifespan()` context
//! manager, done with a listener, shared handles and graceful shutdown.
//!
//! [`Application::build`] binds the listener (port 0 picks a free port), creates the store
//! pools and clients, and starts the HTTP workers. [`Application::run_until_stopped`] serves
//! until SIGINT/SIGTERM (or [`Application::handle`]) stops it, then shuts down in order:
//! stop accepting, let in-flight requests finish within `SHUTDOWN_TIMEOUT_SECS`, stop the
//! actors, close the pools.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use courier_actors::stores::{self, with_timeout};
use tokio::sync::Semaphore;
use url::Url;

use crate::config::Config;
use crate::error::extractor_configs;
use crate::metrics::Metrics;
use crate::routes;
use crate::state::{AppState, Stores};
use crate::telemetry::Telemetry;
use crate::upstream;

/// A built, listening application.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: AppState,
}

impl Application {
    /// Binds the listener, creates pools, clients and actors, and starts the workers.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let addr = listener.local_addr()?;
        let data_dir = config.data_dir.clone();
        web::block(move || std::fs::create_dir_all(&data_dir))
            .await?
            .with_context(|| format!("cannot create APP_DATA_DIR {}", config.data_dir.display()))?;

        let metrics = Metrics::new(&config.app_name);
        let stores = build_stores(&config).await?;
        let upstream_url = match &config.upstream_url {
            Some(url) => url.clone(),
            None => own_url(addr, "/demo/data")?,
        };
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let state = AppState {
            config: Arc::new(config),
            metrics: metrics.clone(),
            stores,
            upstream_url: Arc::new(upstream_url),
            cpu_slots: Arc::new(Semaphore::new(cores)),
        };

        let config = state.config.clone();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            let (json, query, path, payload) = extractor_configs(config.max_body_bytes);
            App::new()
                .app_data(data.clone())
                .app_data(web::Data::new(upstream::build_client(&config.http_client)))
                .app_data(json)
                .app_data(query)
                .app_data(path)
                .app_data(payload)
                .wrap(Telemetry::new(metrics.clone(), config.debug))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(state.config.worker_count())
        .shutdown_timeout(state.config.shutdown_timeout.as_secs())
        .keep_alive(state.config.http_keep_alive)
        .client_request_timeout(state.config.client_request_timeout)
        .listen(listener)?
        .run();

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
        })
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

    /// Serves until stopped, then shuts the rest down in order.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self { server, state, .. } = self;
        let result = server.await;
        log::info!("shutdown: HTTP server stopped; in-flight requests are finished");
        shutdown_stores(state.stores).await;
        log::info!("shutdown: complete");
        result
    }
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

/// Creates the pools and clients of the configured stores. None connects here: a store
/// that is down is reported by `/readyz` and used once it is back.
async fn build_stores(config: &Config) -> anyhow::Result<Stores> {
    let mut stores = Stores::default();
    match &config.database_url {
        Some(url) => {
            log::info!("database: Postgres at {}", url.redacted());
            stores.postgres = Some(stores::postgres::pool(url.expose(), &config.db_pool));
        }
        None => log::info!(
            "database: DATABASE_URL is unset; using the embedded store under {}",
            config.data_dir.display()
        ),
    }
    match &config.redis_url {
        Some(url) => {
            log::info!("redis: {}", url.redacted());
            stores.redis = Some(
                stores::redis::pool(url.expose(), &config.redis_pool)
                    .context("REDIS_URL is not usable")?,
            );
        }
        None => log::info!("redis: REDIS_URL is unset; bus, presence and history stay in process"),
    }
    for (name, url, slot) in [
        (
            "REDIS_URL_CACHE",
            &config.redis_url_cache,
            &mut stores.redis_cache,
        ),
        (
            "REDIS_URL_SESSION",
            &config.redis_url_session,
            &mut stores.redis_session,
        ),
    ] {
        if let Some(url) = url
            .as_ref()
            .filter(|u| Some(*u) != config.redis_url.as_ref())
        {
            log::info!("redis ({name}): {}", url.redacted());
            *slot = Some(
                stores::redis::pool(url.expose(), &config.redis_pool)
                    .with_context(|| format!("{name} is not usable"))?,
            );
        }
    }
    match &config.mongodb_uri {
        Some(uri) => {
            log::info!("documents: MongoDB at {}", uri.redacted());
            let client = with_timeout(
                "mongodb",
                config.mongodb_timeout,
                stores::mongo::client(uri.expose(), config.mongodb_timeout, &config.app_name),
            )
            .await
            .context("MONGODB_URI is not usable")?;
            stores.mongo = Some(client);
        }
        None => {
            log::info!("documents: MONGODB_URI is unset; documents stay in the relational store")
        }
    }
    if let Some(url) = &config.mysql_url {
        log::warn!(
            "MYSQL_URL is set ({}) but courier's relational store is Postgres (DATABASE_URL) or the embedded SQLite file; it is not used",
            url.redacted()
        );
    }
    for (suffix, url) in &config.extra_database_urls {
        log::info!(
            "DATABASE_URL_{} is set ({}); no courier feature reads a second database yet",
            suffix.to_ascii_uppercase(),
            url.redacted()
        );
    }
    Ok(stores)
}

/// Closes the pools and clients.
async fn shutdown_stores(stores: Stores) {
    if let Some(client) = stores.mongo {
        client.shutdown().await;
        log::info!("shutdown: MongoDB client closed");
    }
    let Stores {
        postgres,
        redis,
        redis_cache,
        redis_session,
        ..
    } = stores;
    if postgres.is_some() {
        log::info!("shutdown: Postgres pool closed");
    }
    if redis.is_some() || redis_cache.is_some() || redis_session.is_some() {
        log::info!("shutdown: Redis pools closed");
    }
}
