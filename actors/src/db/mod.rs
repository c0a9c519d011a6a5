//! The relational store: PostgreSQL or MySQL/MariaDB through a bb8 pool of diesel-async
//! connections when `DATABASE_URL` (or `MYSQL_URL`) is set, an embedded SQLite file
//! otherwise.
//!
//! One set of queries serves every backend: [`Database`] holds one of three pools, and the
//! [`on_conn!`] macro checks out a connection and runs the same diesel query code against
//! whichever it is (a named per-backend body where the SQL must differ). Every operation is bounded twice: taking a connection by the pool's
//! connect timeout (a database that is down answers [`DbError::Unavailable`] within it),
//! and the statement by `DB_STATEMENT_TIMEOUT_MS` (enforced by Postgres itself through
//! `statement_timeout`, by MySQL/MariaDB through `max_execution_time`/`max_statement_time`
//! (see [`mysql`]), by SQLite through `busy_timeout`, and by a client-side deadline
//! [`STATEMENT_TIMEOUT_GRACE`] later in case the server cannot answer at all), which
//! answers [`DbError::Timeout`].
//!
//! Who calls it: HTTP handlers never do — they send the [`crate::db_executor::DbExecutor`]
//! messages. The actors that own database work call it directly: the `DbExecutor` (for the
//! handlers) and the [`crate::job_worker::JobWorker`] with the jobs it runs (the queue, the
//! outbox, the activity log and analytics). Outside the actors, start-up and
//! `courier migrate` apply the migrations, `/readyz` pings, and `/metrics` reads the pool
//! gauges.

pub mod actions;
pub mod documents;
mod error;
pub mod job_queue;
pub mod migrations;
pub mod models;
pub mod mysql;
pub mod queries;
pub mod room_log;
pub mod schema;
mod sql_fragments;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolError, PoolableConnection, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::{SpawnBlocking, SyncConnectionWrapper};
use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection,
};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryFutureExt};
use prometheus::{HistogramVec, IntCounterVec, IntGauge, IntGaugeVec};

use crate::metrics;

use crate::stores::PoolConfig;

pub use documents::DocumentStore;
pub use error::DbError;

/// The client-side deadline of a statement is the statement timeout plus this: the
/// database's own timeout fires first and reports a clean error; this one only catches a
/// server or network that stopped answering altogether.
pub const STATEMENT_TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// The embedded database file's name inside `APP_DATA_DIR`.
pub const SQLITE_FILE: &str = "courier.sqlite3";

/// A pooled SQLite connection: diesel's synchronous connection run on the blocking pool
/// of the runtime that uses it (see [`CallerRuntime`]).
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection, CallerRuntime>;

/// Runs a SQLite connection's blocking calls on the blocking pool of the runtime that
/// makes them. diesel-async's default keeps the runtime the connection was opened on, and
/// a pooled connection is opened on whichever thread first needed it (an HTTP worker,
/// say); once that runtime stops (a worker restarted, or shutdown while the job worker
/// still hands its jobs back), every later call on the connection would fail with
/// "task was cancelled", and the connection would stay in the pool failing.
pub struct CallerRuntime;

impl SpawnBlocking for CallerRuntime {
    fn spawn_blocking<'a, R>(
        &mut self,
        task: impl FnOnce() -> R + Send + 'static,
    ) -> BoxFuture<'a, Result<R, Box<dyn std::error::Error + Send + Sync + 'static>>>
    where
        R: Send + 'static,
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn_blocking(task).map_err(Box::from).boxed(),
            Err(e) => futures_util::future::ready(Err(Box::from(e))).boxed(),
        }
    }

    fn get_runtime() -> Self {
        CallerRuntime
    }
}
/// The Postgres pool.
pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;
/// The MySQL/MariaDB pool.
pub type MysqlPool = bb8::Pool<AsyncDieselConnectionManager<AsyncMysqlConnection>>;
/// The SQLite pool.
pub type SqlitePool = bb8::Pool<AsyncDieselConnectionManager<SqliteConn>>;

/// Which relational backend is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Postgres (`DATABASE_URL`).
    Postgres,
    /// MySQL or MariaDB (`DATABASE_URL=mysql://…` or `MYSQL_URL`).
    Mysql,
    /// The embedded SQLite file.
    Sqlite,
}

impl Backend {
    /// `postgres`, `mysql` or `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }
}

/// The database metrics, registered on the application's registry.
#[derive(Clone)]
pub struct DbMetrics {
    /// Statement latency by operation.
    pub query_seconds: HistogramVec,
    /// Failed operations by kind.
    pub errors: IntCounterVec,
    /// Pool connections by state (`idle`, `in_use`).
    pub pool_connections: IntGaugeVec,
    /// The pool's maximum size.
    pub pool_max: IntGauge,
    /// Callers waiting for a connection.
    pub pool_waiting: IntGauge,
}

impl DbMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &prometheus::Registry) -> Self {
        let pool_connections = metrics::int_gauge_vec(
            registry,
            "courier_db_pool_connections",
            "Database pool connections by state (idle, in_use).",
            &["state"],
        );
        let errors = metrics::int_counter_vec(
            registry,
            "courier_db_errors_total",
            "Failed database operations by kind.",
            &["kind"],
        );
        for kind in DbError::KINDS {
            errors.with_label_values(&[kind]);
        }
        Self {
            query_seconds: metrics::histogram_vec(
                registry,
                "courier_db_query_duration_seconds",
                "Database operation latency, taking a connection included, by operation.",
                metrics::LATENCY_BUCKETS,
                &["operation"],
            ),
            errors,
            pool_connections,
            pool_max: metrics::int_gauge(
                registry,
                "courier_db_pool_max_connections",
                "The database pool's maximum size.",
            ),
            pool_waiting: metrics::int_gauge(
                registry,
                "courier_db_pool_waiting",
                "Callers waiting for a database connection.",
            ),
        }
    }
}

/// Database settings from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// Pool sizes and timeouts.
    pub pool: PoolConfig,
    /// `DB_STATEMENT_TIMEOUT_MS`.
    pub statement_timeout: Duration,
}

enum Pools {
    Postgres(PgPool),
    Mysql(MysqlPool),
    Sqlite(SqlitePool),
}

struct Inner {
    pools: Pools,
    /// What the pool connects to: the Postgres URL or the SQLite file path.
    url: String,
    settings: DbConfig,
    metrics: DbMetrics,
    /// True once the migrations have been applied.
    schema_ready: AtomicBool,
    /// Why the migrations could not be applied yet.
    schema_error: Mutex<Option<String>>,
    documents: DocumentStore,
    /// When a connection last failed (MySQL pings on checkout for a while after).
    failures: Arc<mysql::FailureWindow>,
}

/// The relational store and the document store: cheap to clone, shared by every
/// [`crate::db_executor::DbExecutor`].
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

/// Decrements the waiting gauge when a checkout ends, finished or cancelled.
struct Waiting<'a>(&'a IntGauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn pool_error(e: bb8::RunError<PoolError>, connect_timeout: Duration) -> DbError {
    match e {
        bb8::RunError::TimedOut => DbError::Unavailable(format!(
            "the database is unavailable: no connection within {} ms",
            connect_timeout.as_millis()
        )),
        bb8::RunError::User(e) => DbError::Unavailable(format!("the database is unavailable: {e}")),
    }
}

/// The check a pooled connection passes before it is handed out: no round trip (a
/// `SELECT 1` per checkout would double the cost of short queries), only whether the
/// driver has seen the connection close (the database restarted or the network dropped
/// it) or a transaction left it broken. Such a connection is discarded and another taken,
/// so the first requests after an outage do not fail on stale connections.
fn recycle_unless_broken<C>() -> RecyclingMethod<C>
where
    C: PoolableConnection + 'static,
{
    RecyclingMethod::CustomFunction(Box::new(|conn: &mut C| {
        let broken = conn.is_broken();
        async move {
            if broken {
                Err(DieselError::DatabaseError(
                    DatabaseErrorKind::ClosedConnection,
                    Box::new("the pooled connection was closed".to_owned()),
                ))
            } else {
                Ok(())
            }
        }
        .boxed()
    }))
}

/// Checks out a connection from `$db`'s pool, binds it to `$conn` and evaluates `$body` (a
/// future yielding `Result<T, DbError>`) under the statement deadline, recording latency
/// under `$op`. Expands the body once per backend, or takes one body per backend.
macro_rules! on_conn {
    ($db:expr, $op:expr, |$conn:ident| $body:expr) => {
        on_conn!($db, $op, postgres: |$conn| $body, mysql: |$conn| $body, sqlite: |$conn| $body)
    };
    // MySQL's own body (it has no `RETURNING`), the shared one for the others.
    ($db:expr, $op:expr, mysql: |$mc:ident| $mbody:expr, others: |$conn:ident| $body:expr) => {
        on_conn!($db, $op, postgres: |$conn| $body, mysql: |$mc| $mbody, sqlite: |$conn| $body)
    };
    // A body per backend, for the few statements that must differ.
    ($db:expr, $op:expr, postgres: |$pc:ident| $pbody:expr, mysql: |$mc:ident| $mbody:expr,
     sqlite: |$sc:ident| $sbody:expr) => {{
        let db: &$crate::db::Database = &$db;
        let started = ::std::time::Instant::now();
        let result = async {
            db.check_schema()?;
            match db.pools() {
                $crate::db::PoolRef::Postgres(pool) => {
                    let mut guard = db.checkout(pool).await?;
                    let $pc = &mut *guard;
                    db.deadline($pbody).await
                }
                $crate::db::PoolRef::Mysql(pool) => {
                    let mut guard = db.checkout(pool).await?;
                    let result = {
                        let $mc = &mut *guard;
                        db.within_deadline($mbody).await
                    };
                    result.unwrap_or_else(|cut| {
                        $crate::db::mysql::discard(&mut guard);
                        Err(cut)
                    })
                }
                $crate::db::PoolRef::Sqlite(pool) => {
                    let mut guard = db.checkout(pool).await?;
                    let $sc = &mut *guard;
                    db.deadline($sbody).await
                }
            }
        }
        .await;
        db.record($op, started, &result);
        result
    }};
}
pub(crate) use on_conn;

/// A borrowed pool, for [`on_conn!`].
#[doc(hidden)]
pub enum PoolRef<'a> {
    Postgres(&'a PgPool),
    Mysql(&'a MysqlPool),
    Sqlite(&'a SqlitePool),
}

impl Database {
    /// Postgres at `url`. No connection is opened here: a database that is down does not
    /// stop start-up.
    pub fn postgres(
        url: &str,
        settings: DbConfig,
        metrics: DbMetrics,
        documents: DocumentStore,
    ) -> Self {
        let timeout_ms = settings.statement_timeout.as_millis();
        let mut config = ManagerConfig::<AsyncPgConnection>::default();
        config.recycling_method = recycle_unless_broken();
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            async move {
                let mut conn = AsyncPgConnection::establish(&url).await?;
                conn.batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = settings.pool.builder().build_unchecked(manager);
        Self::new(
            Pools::Postgres(pool),
            url,
            settings,
            metrics,
            documents,
            Arc::default(),
        )
    }

    /// MySQL or MariaDB at `url`. No connection is opened here.
    pub fn mysql(
        url: &str,
        settings: DbConfig,
        metrics: DbMetrics,
        documents: DocumentStore,
    ) -> Self {
        let url = &mysql::connect_as_given(url);
        let failures = Arc::new(mysql::FailureWindow::default());
        let config = mysql::manager_config(settings.statement_timeout, failures.clone());
        let manager = AsyncDieselConnectionManager::new_with_config(url, config);
        let pool = settings.pool.builder().build_unchecked(manager);
        Self::new(
            Pools::Mysql(pool),
            url,
            settings,
            metrics,
            documents,
            failures,
        )
    }

    /// The embedded SQLite file `SQLITE_FILE` in `data_dir` (which must exist).
    pub fn sqlite(
        data_dir: &Path,
        settings: DbConfig,
        metrics: DbMetrics,
        documents: DocumentStore,
    ) -> Self {
        let path = data_dir.join(SQLITE_FILE).display().to_string();
        let busy_ms = settings.statement_timeout.as_millis();
        let mut config = ManagerConfig::<SqliteConn>::default();
        config.recycling_method = recycle_unless_broken();
        config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            async move {
                let mut conn = SqliteConn::establish(&url).await?;
                // A writer waits for another writer's lock up to the statement timeout.
                conn.batch_execute(&format!(
                    "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {busy_ms};"
                ))
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                Ok(conn)
            }
            .boxed()
        });
        let manager = AsyncDieselConnectionManager::new_with_config(&path, config);
        let pool = settings.pool.builder().build_unchecked(manager);
        Self::new(
            Pools::Sqlite(pool),
            &path,
            settings,
            metrics,
            documents,
            Arc::default(),
        )
    }

    fn new(
        pools: Pools,
        url: &str,
        settings: DbConfig,
        metrics: DbMetrics,
        documents: DocumentStore,
        failures: Arc<mysql::FailureWindow>,
    ) -> Self {
        metrics.pool_max.set(i64::from(settings.pool.max_size));
        Self {
            inner: Arc::new(Inner {
                pools,
                url: url.to_owned(),
                settings,
                metrics,
                schema_ready: AtomicBool::new(false),
                schema_error: Mutex::new(Some("migrations have not run yet".into())),
                documents,
                failures,
            }),
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self.inner.pools {
            Pools::Postgres(_) => Backend::Postgres,
            Pools::Mysql(_) => Backend::Mysql,
            Pools::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The document store.
    pub fn documents(&self) -> &DocumentStore {
        &self.inner.documents
    }

    #[doc(hidden)]
    pub fn pools(&self) -> PoolRef<'_> {
        match &self.inner.pools {
            Pools::Postgres(p) => PoolRef::Postgres(p),
            Pools::Mysql(p) => PoolRef::Mysql(p),
            Pools::Sqlite(p) => PoolRef::Sqlite(p),
        }
    }

    /// Fails with [`DbError::Unavailable`] until the migrations have been applied.
    #[doc(hidden)]
    pub fn check_schema(&self) -> Result<(), DbError> {
        if self.inner.schema_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self
            .inner
            .schema_error
            .lock()
            .map(|e| e.clone().unwrap_or_default())
            .unwrap_or_default();
        Err(DbError::Unavailable(format!(
            "the database schema is not ready: {why}"
        )))
    }

    /// Takes a connection from `pool`, waiting at most the pool's connect timeout.
    #[doc(hidden)]
    pub async fn checkout<'p, M>(
        &self,
        pool: &'p bb8::Pool<M>,
    ) -> Result<bb8::PooledConnection<'p, M>, DbError>
    where
        M: bb8::ManageConnection<Error = PoolError>,
    {
        let gauge = &self.inner.metrics.pool_waiting;
        gauge.inc();
        let _waiting = Waiting(gauge);
        pool.get()
            .await
            .map_err(|e| pool_error(e, self.inner.settings.pool.connect_timeout))
    }

    /// Runs one statement (or transaction) under the client-side deadline.
    #[doc(hidden)]
    pub async fn deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        self.within_deadline(fut).await.unwrap_or_else(Err)
    }

    /// Like [`deadline`](Self::deadline), but tells a statement the deadline cut off
    /// (`Err`, the timeout error) from one that finished, successfully or not (`Ok`).
    #[doc(hidden)]
    pub async fn within_deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<Result<T, DbError>, DbError> {
        let timeout = self.inner.settings.statement_timeout;
        tokio::time::timeout(timeout + STATEMENT_TIMEOUT_GRACE, fut)
            .await
            .map_err(|_| DbError::Timeout(timeout))
    }

    /// Maps a driver error with this database's statement timeout.
    pub(crate) fn err(&self, e: DieselError) -> DbError {
        DbError::from_diesel(e, self.inner.settings.statement_timeout)
    }

    /// Records an operation's latency and, when it failed, its error kind.
    #[doc(hidden)]
    pub fn record<T>(&self, op: &str, started: Instant, result: &Result<T, DbError>) {
        let m = &self.inner.metrics;
        m.query_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            m.errors.with_label_values(&[e.kind()]).inc();
            if matches!(e, DbError::Unavailable(_)) {
                self.inner.failures.open();
            }
            match e {
                DbError::Internal(detail) => log::error!("db: {op} failed: {detail}"),
                DbError::Unavailable(_) | DbError::Timeout(_) => {
                    log::warn!("db: {op} failed: {e}")
                }
                _ => {}
            }
        }
    }

    /// Refreshes the pool gauges (called when metrics are scraped).
    pub fn refresh_pool_metrics(&self) {
        let state = match &self.inner.pools {
            Pools::Postgres(p) => p.state(),
            Pools::Mysql(p) => p.state(),
            Pools::Sqlite(p) => p.state(),
        };
        let m = &self.inner.metrics;
        let idle = i64::from(state.idle_connections);
        m.pool_connections.with_label_values(&["idle"]).set(idle);
        m.pool_connections
            .with_label_values(&["in_use"])
            .set(i64::from(state.connections) - idle);
    }

    /// Checks out a connection and runs `SELECT 1`; also fails while the schema is not ready.
    pub async fn ping(&self) -> Result<(), DbError> {
        use diesel_async::RunQueryDsl;
        on_conn!(self, "ping", |conn| async {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(|e| self.err(e))
        })
    }

    /// Applies pending migrations off the event loop and marks the schema ready; returns
    /// the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<String>, DbError> {
        let result = migrations::run(self.backend(), &self.inner.url, &self.inner.settings).await;
        match &result {
            Ok(_) => {
                if let Ok(mut e) = self.inner.schema_error.lock() {
                    *e = None;
                }
                self.inner.schema_ready.store(true, Ordering::Release);
            }
            Err(e) => {
                if let Ok(mut slot) = self.inner.schema_error.lock() {
                    *slot = Some(e.to_string());
                }
            }
        }
        result
    }
}
