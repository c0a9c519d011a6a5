//! The real services some tests use (Postgres, MySQL/MariaDB, Redis, the Mongo-wire server): finding
//! them, failing under `CI=true` when they are missing, and a fresh database per test.

use std::time::Duration;

use super::app::{spawn_app_with, TestApp};

/// Whether tests that need external services must fail (not skip) when one is missing.
pub fn services_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The URL of a service for service-backed tests: the variable if set, else `default`
/// when something listens there. `None` means skip (only allowed outside CI).
pub fn service_url(var: &str, default: Option<&str>) -> Option<String> {
    let Some(url) = std::env::var(var)
        .ok()
        .or_else(|| default.map(str::to_owned))
    else {
        if services_required() {
            panic!("{var} is not set and CI=true requires the service (.ci/run sets it)");
        }
        eprintln!("skipping: {var} is not set; CI=true makes this a failure");
        return None;
    };
    let reachable = url::Url::parse(&url)
        .ok()
        .and_then(|u| Some((u.host_str()?.to_owned(), u.port_or_known_default()?)))
        .and_then(|(h, p)| {
            std::net::TcpStream::connect_timeout(
                &format!("{h}:{p}").parse().ok()?,
                Duration::from_secs(1),
            )
            .ok()
        })
        .is_some();
    if reachable {
        Some(url)
    } else if services_required() {
        panic!("{var}: the service at {url} is not reachable and CI=true requires it");
    } else {
        eprintln!("skipping: {var} ({url}) is not reachable; CI=true makes this a failure");
        None
    }
}

/// Which relational backend a data test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file (always available).
    Sqlite,
    /// The real Postgres at `COURIER_TEST_DATABASE_URL`, in a database made for the test.
    Postgres,
    /// The real MySQL/MariaDB at `COURIER_TEST_MYSQL_URL`, in a database made for the test.
    Mysql,
}

/// The MySQL/MariaDB server tests use (`COURIER_TEST_MYSQL_URL`, else the local default).
pub fn mysql_admin_url() -> Option<String> {
    service_url(
        "COURIER_TEST_MYSQL_URL",
        Some("mysql://root@127.0.0.1:3306/test"),
    )
}

/// Creates a new, empty database on the test MySQL/MariaDB server and returns its URL.
pub async fn fresh_mysql_database() -> Option<String> {
    let admin = mysql_admin_url()?;
    Some(create_database::<diesel_async::AsyncMysqlConnection>(&admin).await)
}

/// Creates a database with a fresh name on the server at `admin` (over a connection of
/// type `C`) and returns the URL of the new database.
async fn create_database<C>(admin: &str) -> String
where
    C: diesel_async::AsyncConnection + diesel_async::SimpleAsyncConnection,
{
    let name = fresh_name();
    let mut conn = C::establish(admin)
        .await
        .unwrap_or_else(|e| panic!("connect to the test database server {admin}: {e}"));
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let mut url = url::Url::parse(admin).expect("valid URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A database name no other test (or earlier run) uses.
fn fresh_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "courier_t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    )
}

/// A fresh database on `backend`'s server (`None`: skipped), or `None` for SQLite.
pub async fn fresh_database(backend: Backend) -> Option<Option<String>> {
    match backend {
        Backend::Sqlite => Some(None),
        Backend::Postgres => fresh_postgres_database().await.map(Some),
        Backend::Mysql => fresh_mysql_database().await.map(Some),
    }
}

/// The Postgres server tests use (`COURIER_TEST_DATABASE_URL`, else the local default).
pub fn postgres_admin_url() -> Option<String> {
    service_url(
        "COURIER_TEST_DATABASE_URL",
        Some("postgres://postgres@127.0.0.1:5432/test"),
    )
}

/// Creates a new, empty database on the test Postgres server and returns its URL.
pub async fn fresh_postgres_database() -> Option<String> {
    let admin = postgres_admin_url()?;
    Some(create_database::<diesel_async::AsyncPgConnection>(&admin).await)
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// A server on `backend`, plus what a test needs to reach its database directly.
pub struct DataApp {
    pub app: TestApp,
    pub backend: Backend,
    /// The Postgres or MySQL URL, or the SQLite file path.
    pub db_url: String,
}

/// Starts courier on `backend` (a fresh Postgres or MySQL database per call) with
/// `overrides`.
/// `None` means the backend's service is missing and the test is skipped (never in CI).
pub async fn spawn_data_app(backend: Backend, overrides: &[(&str, &str)]) -> Option<DataApp> {
    match backend {
        Backend::Sqlite => {
            let app = spawn_app_with(overrides).await;
            let db_url = app
                .data_dir
                .path()
                .join(courier_actors::db::SQLITE_FILE)
                .display()
                .to_string();
            Some(DataApp {
                app,
                backend,
                db_url,
            })
        }
        Backend::Postgres | Backend::Mysql => {
            let db_url = fresh_database(backend).await??;
            let mut all = vec![("DATABASE_URL", db_url.as_str())];
            all.extend_from_slice(overrides);
            let app = spawn_app_with(&all).await;
            Some(DataApp {
                app,
                backend,
                db_url,
            })
        }
    }
}

/// A direct connection to a test's database, for setting up rows and holding locks.
pub enum DirectConn {
    Postgres(diesel_async::AsyncPgConnection),
    Mysql(diesel_async::AsyncMysqlConnection),
    Sqlite(
        diesel_async::sync_connection_wrapper::SyncConnectionWrapper<
            diesel::sqlite::SqliteConnection,
        >,
    ),
}

impl DirectConn {
    pub async fn open(data: &DataApp) -> Self {
        Self::connect(data.backend, &data.db_url).await
    }

    /// A connection to `url` (a Postgres or MySQL URL, or a SQLite file). On SQLite it waits for the
    /// server's writers (the job worker takes the write lock every poll) instead of
    /// failing with "database is locked".
    pub async fn connect(backend: Backend, url: &str) -> Self {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        match backend {
            Backend::Postgres => Self::Postgres(
                diesel_async::AsyncPgConnection::establish(url)
                    .await
                    .expect("connect"),
            ),
            Backend::Mysql => Self::Mysql(
                diesel_async::AsyncMysqlConnection::establish(url)
                    .await
                    .expect("connect"),
            ),
            Backend::Sqlite => {
                let mut conn =
                    diesel_async::sync_connection_wrapper::SyncConnectionWrapper::establish(url)
                        .await
                        .expect("open");
                conn.batch_execute("PRAGMA busy_timeout = 10000")
                    .await
                    .expect("busy timeout");
                Self::Sqlite(conn)
            }
        }
    }

    /// Runs SQL statements (no results).
    pub async fn exec(&mut self, sql: &str) {
        use diesel_async::SimpleAsyncConnection;
        match self {
            Self::Postgres(c) => c.batch_execute(sql).await,
            Self::Mysql(c) => c.batch_execute(sql).await,
            Self::Sqlite(c) => c.batch_execute(sql).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
