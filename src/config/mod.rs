//! Configuration: layered files, `.env`, then the process environment.
//!
//! Layers, later wins:
//! 1. `config/default.toml`
//! 2. `config/{APP_ENV}.toml` (`local`, `production` or `test`)
//! 3. `.env` in the working directory (read with `dotenvy`, never written into the process
//!    environment)
//! 4. the process environment
//!
//! Every setting has exactly one name. In the environment it is the upper-case variable name
//! (`APP_PORT`); in a TOML file it is the same name in lower case (`app_port`). The four TOML
//! files ship inside the binary, so the server starts from any working directory; a file of
//! the same name under `APP_CONFIG_DIR` (default `config`) replaces the built-in copy.
//!
//! Every value is validated once, here. An invalid value stops start-up with one line that
//! names the variable and says what is accepted; secrets are never echoed.
//!
//! The parts: [`settings`] declares every setting once (name, what it accepts, default,
//! help); [`sources`] reads the layers; `resolve.rs` builds the typed [`Config`], whose
//! groups are the configurations the actors take (`BrokerConfig`, `SessionConfig`, ...);
//! [`values`] holds the types that hide passwords and secrets.

pub mod settings;
pub mod sources;
pub mod values;

mod resolve;
mod security;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use courier_actors::cache::CacheConfig;
use courier_actors::client_queue::QueueLimits;
use courier_actors::db::DbConfig;
use courier_actors::job_worker::JobConfig;
use courier_actors::room_broker::BrokerConfig;
use courier_actors::sse_feed::FeedConfig;
use courier_actors::stores::PoolConfig;
use courier_actors::upload_store::UploadConfig;
use courier_actors::ws_session::SessionConfig;
use url::Url;

pub use sources::{Source, Sources};
pub use values::{Secret, ServiceUrl};

/// The JWT secret that `config/local.toml` ships with; refused in production.
pub const DEVELOPMENT_JWT_SECRET: &str =
    "courier-local-development-secret-do-not-use-in-production";

/// Shortest `JWT_SECRET` accepted in production: HS256 wants at least 256 bits of key.
pub const MIN_PRODUCTION_SECRET_BYTES: usize = 32;

/// Which deployment the process runs as; selects `config/{file}.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// A developer's machine (`local`, `dev`, `development`).
    Local,
    /// The test suite (`test`).
    Test,
    /// A production node (`prod`, `production`).
    Production,
}

impl Environment {
    fn parse(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "local" | "dev" | "development" => Some(Self::Local),
            "test" => Some(Self::Test),
            "prod" | "production" => Some(Self::Production),
            _ => None,
        }
    }

    /// The name of the TOML file (without extension) for this environment.
    pub fn file_stem(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Test => "test",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_stem())
    }
}

/// A configuration problem that stops start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable holds a value that is not accepted.
    #[error("invalid configuration: {variable}={shown}: expected {expected}")]
    Invalid {
        /// The variable's environment name.
        variable: String,
        /// The value as given, or `<redacted>` for secrets.
        shown: String,
        /// What would be accepted.
        expected: String,
    },
    /// A required variable has no value in any layer.
    #[error("invalid configuration: {variable} is not set: expected {expected}")]
    Missing {
        /// The variable's environment name.
        variable: String,
        /// What would be accepted.
        expected: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("invalid configuration file {file}: {reason}")]
    File {
        /// The file's path or built-in name.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Browser origins a deployment trusts (`CORS_ALLOWED_ORIGINS`, `WS_ALLOWED_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (`*`).
    Any,
    /// These origins (`https://app.example.com`), besides the server's own.
    List(Vec<String>),
}

impl Origins {
    /// Whether a request from `origin` to the server at `host` (its `Host` header) is
    /// allowed: the server's own origin always is.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/');
        let own = host.is_some_and(|host| {
            origin
                .split_once("://")
                .is_some_and(|(scheme, rest)| matches!(scheme, "http" | "https") && rest == host)
        });
        own || match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// How slowly a request body may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// `BODY_TIMEOUT_MS`: a body that sends nothing for this long is cut off, and the
    /// minimum rate applies after it.
    pub timeout: Duration,
    /// `BODY_MIN_BYTES_PER_SEC`: slowest average rate after the first `timeout` (0: none).
    pub min_rate: u64,
}

/// The thread pools for blocking and CPU-heavy work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolsConfig {
    /// `SYNC_POOL_THREADS`: threads for blocking handlers.
    pub sync_threads: usize,
    /// `BLOCKING_QUEUE`: tasks waiting per pool before requests get 503.
    pub queue: usize,
}

/// What an upload form may hold besides its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartConfig {
    /// `MULTIPART_MAX_HEADER_BYTES`: longest header block of one part.
    pub header_bytes: usize,
    /// `MULTIPART_MAX_PARTS`: most parts.
    pub parts: usize,
    /// `MULTIPART_MAX_FIELD_BYTES`: most bytes in the fields that are not the file.
    pub field_bytes: usize,
}

/// The background job queue and its mail delivery.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// `JOB_*`: the worker's settings.
    pub worker: JobConfig,
    /// `SMTP_URL`: deliver `/send-email` through this server; unset writes the outbox.
    pub smtp_url: Option<ServiceUrl>,
    /// `SMTP_FROM`: the sender address.
    pub smtp_from: String,
    /// `SMTP_TIMEOUT_MS`: longest one SMTP delivery may take.
    pub smtp_timeout: Duration,
}

/// Most price sources `/fastest-price` races.
pub const MAX_PRICE_SOURCES: usize = 16;

/// Limits of the data endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataConfig {
    /// `USERS_BATCH_MAX`: most users one `POST /users/batch` may create.
    pub users_batch_max: usize,
    /// `EXPORT_PAGE_SIZE`: rows fetched per query while streaming `/export/users`.
    pub export_page_size: i64,
    /// `DOCUMENTS_MAX_BYTES`: largest document `POST /documents` accepts.
    pub documents_max_bytes: usize,
}

/// The shared upstream HTTP client's limits (one client per worker thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClientConfig {
    /// Most simultaneous upstream connections per worker thread.
    pub max_connections: usize,
    /// Longest wait to establish an upstream connection.
    pub connect_timeout: Duration,
    /// Longest time for a whole upstream call, response body included.
    pub timeout: Duration,
    /// How long an idle upstream connection is kept for reuse.
    pub keep_alive: Duration,
    /// Largest upstream response body read.
    pub max_response_bytes: usize,
}

/// WebSockets, SSE and rooms: the configurations of the realtime actors, and the limits
/// the handlers apply.
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// The `RoomBroker`'s (`ROOM_*`, `MAX_ROOMS`, `TYPING_INTERVAL_MS`, ...).
    pub broker: BrokerConfig,
    /// Every WebSocket session's (`WS_*`, `ANONYMOUS_PUBLISH`).
    pub session: SessionConfig,
    /// The `SseFeed`'s (`SSE_HEARTBEAT_INTERVAL_MS`, `SSE_UPDATES_COALESCE_MS`).
    pub feed: FeedConfig,
    /// Every client's queue (`OUTBOUND_QUEUE_MESSAGES`, `OUTBOUND_QUEUE_BYTES`).
    pub queue: QueueLimits,
    /// `TCP_USER_TIMEOUT_MS`: the kernel resets a connection whose peer has not acknowledged
    /// data for this long (frees sockets of clients that stopped reading); 0 disables.
    pub tcp_user_timeout: Duration,
    /// `SSE_KEEPALIVE_INTERVAL_MS`: a quiet SSE stream gets a comment this often.
    pub sse_keepalive: Duration,
    /// `SSE_DEMO_INTERVAL_MS`: interval of the `/sse` messages.
    pub sse_demo_interval: Duration,
}

/// The effective configuration of one courier process.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_ENV`: which deployment this is.
    pub env: Environment,
    /// `APP_NAME`: the service name and the prefix of every Redis key and channel.
    pub app_name: String,
    /// `APP_DEBUG`: include internal error details in 5xx responses.
    pub debug: bool,
    /// `LOG_LEVEL`: an `env_logger` filter (`info`, `warn,courier=debug`, ...).
    pub log_level: String,
    /// `APP_HOST`: the address to listen on.
    pub host: String,
    /// `APP_PORT`: the port to listen on; 0 picks a free one.
    pub port: u16,
    /// `APP_WORKERS`: HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// `APP_DATA_DIR`: where the embedded stores and uploads live.
    pub data_dir: PathBuf,
    /// The relational store: `DATABASE_URL` (PostgreSQL or MySQL/MariaDB), else
    /// `MYSQL_URL`; unset selects the embedded SQLite file. See [`Config::database_backend`].
    pub database_url: Option<ServiceUrl>,
    /// `DATABASE_URL_<SUFFIX>`: further named databases, keyed by lower-case suffix.
    pub extra_database_urls: BTreeMap<String, ServiceUrl>,
    /// `REDIS_URL`: Redis for the bus, history and presence; unset keeps them in process.
    pub redis_url: Option<ServiceUrl>,
    /// `REDIS_CLUSTER`: `REDIS_URL` is a node of a Redis Cluster.
    pub redis_cluster: bool,
    /// `REDIS_URL_CACHE`: Redis for the cache; falls back to `REDIS_URL`.
    pub redis_url_cache: Option<ServiceUrl>,
    /// `REDIS_URL_SESSION`: Redis for sessions; falls back to `REDIS_URL`.
    pub redis_url_session: Option<ServiceUrl>,
    /// `MONGODB_URI`: MongoDB for documents; unset keeps them in the relational store.
    pub mongodb_uri: Option<ServiceUrl>,
    /// `JWT_SECRET`: HS256 key for tokens.
    pub jwt_secret: Secret,
    /// `API_KEYS`: the server API keys (digests).
    pub api_keys: crate::auth::ApiKeys,
    /// `REQUIRE_AUTH`: data routes need a token or key, admin routes the key or the admin role.
    pub require_auth: bool,
    /// `CORS_ALLOWED_ORIGINS`: browser origins allowed over REST and SSE.
    pub cors_origins: Origins,
    /// `WS_ALLOWED_ORIGINS`: origins allowed to open WebSockets; `None`: the server's own
    /// and `CORS_ALLOWED_ORIGINS`.
    pub ws_origins: Option<Origins>,
    /// `DB_POOL_*`, `DB_STATEMENT_TIMEOUT_MS`: the relational store.
    pub db: DbConfig,
    /// `REDIS_POOL_*`: the Redis pool.
    pub redis_pool: PoolConfig,
    /// `REDIS_COMMAND_TIMEOUT_MS`: longest a Redis command may take.
    pub redis_command_timeout: Duration,
    /// `MONGODB_TIMEOUT_MS`: MongoDB connect and server-selection timeout.
    pub mongodb_timeout: Duration,
    /// `HTTP_CLIENT_*`: the upstream HTTP client.
    pub http_client: HttpClientConfig,
    /// `UPSTREAM_URL`: the API behind `/io-intensive` and `/external-api`; unset uses the
    /// server's own `/demo/data`.
    pub upstream_url: Option<Url>,
    /// `MAX_BODY_BYTES`: largest request body accepted.
    pub max_body_bytes: usize,
    /// `BODY_TIMEOUT_MS`, `BODY_MIN_BYTES_PER_SEC`: how slowly a body may arrive.
    pub body: BodyLimits,
    /// `JSON_MAX_DEPTH`: deepest nesting in published data and data rows.
    pub json_max_depth: usize,
    /// `SYNC_POOL_THREADS`, `BLOCKING_QUEUE`: the blocking and CPU pools.
    pub pools: PoolsConfig,
    /// `HTTP_KEEP_ALIVE_SECS`: how long an idle client connection is kept open.
    pub http_keep_alive: Duration,
    /// `CLIENT_REQUEST_TIMEOUT_MS`: longest wait for a client's request head.
    pub client_request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_SECS`: how long in-flight requests get to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// `READINESS_TIMEOUT_MS`: how long `/readyz` waits for each dependency.
    pub readiness_timeout: Duration,
    /// The data endpoints' limits.
    pub data: DataConfig,
    /// The cache behind `/expensive-data`.
    pub cache: CacheConfig,
    /// The job queue.
    pub jobs: JobsConfig,
    /// Uploads (`UPLOAD_*`).
    pub files: UploadConfig,
    /// Upload forms (`MULTIPART_*`).
    pub multipart: MultipartConfig,
    /// `AGGREGATE_UPSTREAM_URL`: the API `/aggregate/user/{id}` calls
    /// (`{base}/users/{id}`, `/posts`, `/comments`); unset uses the server's own `/demo`.
    pub aggregate_url: Option<Url>,
    /// `PRICE_SOURCES`: URL templates with `{product_id}` that `/fastest-price` races;
    /// empty uses three built-in demo stores.
    pub price_sources: Vec<String>,
    /// The realtime core's limits and timings.
    pub realtime: RealtimeConfig,
    /// One line per setting: name, shown value, source. For `courier config`.
    pub report: Vec<(String, String, Source)>,
}

impl Config {
    /// Loads the configuration of this process.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(Sources::from_process())
    }

    /// Loads a configuration from explicit inputs (used by tests).
    pub fn load_from(sources: Sources) -> Result<Self, ConfigError> {
        let mut layers = sources::Layers::default();
        if let Some(path) = sources.env_file.as_deref() {
            layers.dotenv = sources::read_dotenv(path)?;
        }
        layers.env = sources.env;

        let app_env = settings::APP_ENV;
        let env = match layers.lookup(app_env.name) {
            None => Environment::Local,
            Some((raw, _)) => Environment::parse(&raw).ok_or_else(|| ConfigError::Invalid {
                variable: app_env.name.into(),
                shown: values::quote(&raw),
                expected: app_env.kind.expected(),
            })?,
        };
        let dir = sources.config_dir.as_deref();
        layers.files.push(sources::read_toml(dir, "default")?);
        layers.files.push(sources::read_toml(dir, env.file_stem())?);

        let mut r = resolve::Resolver {
            layers,
            report: Vec::new(),
        };
        r.record(app_env.name, env.to_string());
        r.build(env)
    }

    /// The effective configuration, one `NAME = value  (source)` line per setting,
    /// secrets redacted.
    pub fn render(&self) -> String {
        let width = self
            .report
            .iter()
            .map(|(n, _, _)| n.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (name, value, source) in &self.report {
            out.push_str(&format!("{name:<width$} = {value}  ({source})\n"));
        }
        let from = match &self.database_url {
            None => "neither DATABASE_URL nor MYSQL_URL is set: the embedded SQLite file",
            Some(_) if self.is_set("DATABASE_URL") => "from DATABASE_URL",
            Some(_) => "from MYSQL_URL",
        };
        out.push_str(&format!(
            "# relational store: {} ({from})\n",
            self.database_backend()
        ));
        out
    }

    /// The relational backend the configuration selects: `postgres`, `mysql` or `sqlite`.
    pub fn database_backend(&self) -> &'static str {
        match &self.database_url {
            None => "sqlite",
            Some(url) if url.url().scheme() == "mysql" => "mysql",
            Some(_) => "postgres",
        }
    }

    fn is_set(&self, name: &str) -> bool {
        self.report
            .iter()
            .any(|(n, value, _)| n == name && value != "unset")
    }

    /// The number of HTTP worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.workers
        }
    }
}
