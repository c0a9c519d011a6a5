//! The stores: creating the pools and clients of what is configured (none connects here),
//! the relational database with its migrations, and closing them at the end.

use std::time::Duration;

use anyhow::Context as _;
use courier_actors::db::documents::DocumentStore;
use courier_actors::db::{Database, DbMetrics};
use courier_actors::redis_bus::Commands;
use courier_actors::stores::{self, with_timeout};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::Stores;

/// While the migrations cannot be applied (the database is down at start-up), they are
/// tried again this often; data requests answer 503 until they succeed.
pub const MIGRATION_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// Creates the pools and clients of the configured stores. None connects here: a store
/// that is down is reported by `/readyz` and used once it is back.
pub(super) async fn build_stores(config: &Config) -> anyhow::Result<Stores> {
    let mut stores = Stores::default();
    match &config.redis_url {
        Some(url) if config.redis_cluster => {
            log::info!("redis: cluster at {}", url.redacted());
            stores.bus_commands = Some(
                Commands::cluster(vec![url.expose().to_owned()], config.redis_command_timeout)
                    .map_err(anyhow::Error::msg)
                    .context("REDIS_URL is not usable as a cluster node")?,
            );
        }
        Some(url) => {
            log::info!("redis: {}", url.redacted());
            let pool = stores::redis::pool(url.expose(), &config.redis_pool)
                .context("REDIS_URL is not usable")?;
            stores.bus_commands = Some(Commands::Single(pool.clone()));
            stores.redis = Some(pool);
        }
        None => log::info!(
            "redis: REDIS_URL is unset; rooms are numbered and kept in the database, presence in process"
        ),
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
    for (suffix, url) in &config.extra_database_urls {
        log::info!(
            "DATABASE_URL_{} is set ({}); no courier feature reads a second database yet",
            suffix.to_ascii_uppercase(),
            url.redacted()
        );
    }
    Ok(stores)
}

/// The relational store (Postgres or MySQL/MariaDB when `DATABASE_URL` or `MYSQL_URL` is
/// set, else the SQLite file in `APP_DATA_DIR`) with the document store (MongoDB when
/// `MONGODB_URI` is set, else the relational store). Nothing connects here.
pub fn build_database(config: &Config, metrics: &Metrics, stores: &Stores) -> Database {
    let settings = config.db.clone();
    let db_metrics = DbMetrics::register(metrics.registry());
    let documents = match &stores.mongo {
        Some(client) => DocumentStore::mongo(client, &config.app_name, config.db.statement_timeout),
        None => DocumentStore::Relational,
    };
    match &config.database_url {
        Some(url) if config.database_backend() == "mysql" => {
            log::info!("database: MySQL/MariaDB at {}", url.redacted());
            Database::mysql(url.expose(), settings, db_metrics, documents)
        }
        Some(url) => {
            log::info!("database: Postgres at {}", url.redacted());
            Database::postgres(url.expose(), settings, db_metrics, documents)
        }
        None => {
            log::info!(
                "database: DATABASE_URL is unset; using the embedded SQLite file {}",
                config
                    .data_dir
                    .join(courier_actors::db::SQLITE_FILE)
                    .display()
            );
            Database::sqlite(&config.data_dir, settings, db_metrics, documents)
        }
    }
}

/// Applies the migrations before serving. If the database cannot be reached, serving
/// starts anyway (data requests answer 503 and `/readyz` says why) and the migrations are
/// retried in the background until they succeed.
pub(super) async fn prepare_schema(db: &Database) {
    match db.migrate().await {
        Ok(applied) => log_migrations(&applied),
        Err(e) => {
            log::warn!(
                "database: {e}; retrying every {} s",
                MIGRATION_RETRY_INTERVAL.as_secs()
            );
            let db = db.clone();
            actix_rt::spawn(async move {
                loop {
                    actix_rt::time::sleep(MIGRATION_RETRY_INTERVAL).await;
                    match db.migrate().await {
                        Ok(applied) => {
                            log_migrations(&applied);
                            break;
                        }
                        Err(e) => log::warn!("database: {e}"),
                    }
                }
            });
        }
    }
}

fn log_migrations(applied: &[String]) {
    if applied.is_empty() {
        log::info!("database: schema is up to date");
    } else {
        log::info!("database: applied migrations {}", applied.join(", "));
    }
}

/// Closes the pools and clients.
pub(super) async fn shutdown_stores(stores: Stores) {
    if let Some(client) = stores.mongo {
        client.shutdown().await;
        log::info!("shutdown: MongoDB client closed");
    }
    let Stores {
        redis,
        redis_cache,
        redis_session,
        ..
    } = stores;
    if redis.is_some() || redis_cache.is_some() || redis_session.is_some() {
        log::info!("shutdown: Redis pools closed");
    }
}
