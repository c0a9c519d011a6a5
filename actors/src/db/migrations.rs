//! The schema migrations in `migrations/{postgres,mysql,sqlite}`, embedded in the binary
//! and applied on a blocking thread (diesel's migration harness is synchronous).
//!
//! On Postgres the run holds an advisory lock, on MySQL/MariaDB a named lock
//! (`GET_LOCK`), so nodes starting together apply each migration once.

use std::time::Duration;

use diesel::Connection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncMysqlConnection, AsyncPgConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::{Backend, DbConfig, DbError};

/// The Postgres migrations.
pub const POSTGRES: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
/// The MySQL/MariaDB migrations.
pub const MYSQL: EmbeddedMigrations = embed_migrations!("../migrations/mysql");
/// The SQLite migrations.
pub const SQLITE: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");

/// The advisory-lock key that serialises migration runs across nodes ("courier" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0063_6f75_7269_6572;

/// The named lock that serialises migration runs across nodes on MySQL/MariaDB.
const MIGRATION_LOCK_NAME: &str = "courier_migrations";

/// How long a migration run may take in all, connecting included.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<Vec<String>, BoxError>
where
    C: MigrationHarness<<C as Connection>::Backend> + Connection,
{
    let applied = conn.run_pending_migrations(migrations)?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

fn run_postgres(
    mut conn: AsyncConnectionWrapper<AsyncPgConnection>,
) -> Result<Vec<String>, BoxError> {
    use diesel::RunQueryDsl;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .execute(&mut conn)?;
    let result = apply(&mut conn, POSTGRES);
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
        .execute(&mut conn);
    result
}

fn run_mysql(
    mut conn: AsyncConnectionWrapper<AsyncMysqlConnection>,
) -> Result<Vec<String>, BoxError> {
    use diesel::sql_types::{Integer, Nullable};
    use diesel::RunQueryDsl;
    // 1 once the lock is held; 0 when another node held it for the whole wait.
    let locked: Option<i32> = diesel::select(diesel::dsl::sql::<Nullable<Integer>>(&format!(
        "GET_LOCK('{MIGRATION_LOCK_NAME}', {})",
        MIGRATION_TIMEOUT.as_secs()
    )))
    .get_result(&mut conn)?;
    if locked != Some(1) {
        return Err(format!(
            "another node held the migration lock for {} s",
            MIGRATION_TIMEOUT.as_secs()
        )
        .into());
    }
    let result = apply(&mut conn, MYSQL);
    let _ = diesel::select(diesel::dsl::sql::<Nullable<Integer>>(&format!(
        "RELEASE_LOCK('{MIGRATION_LOCK_NAME}')"
    )))
    .get_result::<Option<i32>>(&mut conn);
    result
}

/// Connects for a migration run, bounded like a pool checkout, so a database that is down
/// or silent fails the run quickly; the harness then drives the connection from a blocking
/// thread.
async fn connect<C: AsyncConnection + 'static>(
    url: &str,
    settings: &DbConfig,
) -> Result<AsyncConnectionWrapper<C>, DbError> {
    match tokio::time::timeout(settings.pool.connect_timeout, C::establish(url)).await {
        Ok(Ok(conn)) => Ok(AsyncConnectionWrapper::from(conn)),
        Ok(Err(e)) => Err(DbError::Unavailable(format!(
            "migrations could not be applied: the database is unavailable: {e}"
        ))),
        Err(_) => Err(DbError::Unavailable(format!(
            "migrations could not be applied: no connection within {} ms",
            settings.pool.connect_timeout.as_millis()
        ))),
    }
}

fn run_sqlite(path: &str, settings: &DbConfig) -> Result<Vec<String>, BoxError> {
    use diesel::connection::SimpleConnection;
    let mut conn = diesel::SqliteConnection::establish(path)?;
    // WAL lets readers work while one writer writes; the mode is kept in the file.
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
        settings.statement_timeout.as_millis()
    ))?;
    apply(&mut conn, SQLITE)
}

/// Applies the pending migrations for `backend` at `url`; returns the versions applied.
pub async fn run(backend: Backend, url: &str, settings: &DbConfig) -> Result<Vec<String>, DbError> {
    let url = url.to_owned();
    let settings = settings.clone();
    let task = match backend {
        Backend::Postgres => {
            let conn = connect::<AsyncPgConnection>(&url, &settings).await?;
            tokio::task::spawn_blocking(move || run_postgres(conn))
        }
        Backend::Mysql => {
            let conn = connect::<AsyncMysqlConnection>(&url, &settings).await?;
            tokio::task::spawn_blocking(move || run_mysql(conn))
        }
        Backend::Sqlite => tokio::task::spawn_blocking(move || run_sqlite(&url, &settings)),
    };
    match tokio::time::timeout(MIGRATION_TIMEOUT, task).await {
        Ok(Ok(Ok(applied))) => Ok(applied),
        Ok(Ok(Err(e))) => Err(DbError::Unavailable(format!(
            "migrations could not be applied: {e}"
        ))),
        Ok(Err(e)) => Err(DbError::Internal(format!("the migration task failed: {e}"))),
        Err(_) => Err(DbError::Unavailable(format!(
            "migrations did not finish within {} s",
            MIGRATION_TIMEOUT.as_secs()
        ))),
    }
}
