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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

/// The built-in copies of the configuration files, used when a file is not on disk.
const BUILTIN_FILES: &[(&str, &str)] = &[
    ("default", include_str!("../config/default.toml")),
    ("local", include_str!("../config/local.toml")),
    ("production", include_str!("../config/production.toml")),
    ("test", include_str!("../config/test.toml")),
];

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
    const ACCEPTED: &'static str = "local, dev, development, test, prod, production";

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

/// Where a value came from, for `courier config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not set anywhere; the setting has no value.
    Unset,
    /// A TOML file (built in or on disk).
    File(String),
    /// The `.env` file.
    DotEnv,
    /// The process environment.
    Environment,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unset => f.write_str("unset"),
            Self::File(name) => f.write_str(name),
            Self::DotEnv => f.write_str(".env"),
            Self::Environment => f.write_str("environment"),
        }
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

/// A database or cache address, with a form that hides its password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    url: Url,
}

impl ServiceUrl {
    /// The full address, password included; hand it only to the driver.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The parsed address.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The address with its password replaced by `****`, safe to log.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("****"));
    }
    shown.to_string()
}

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself; hand it only to the code that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

pub use courier_actors::stores::PoolSettings as PoolConfig;

/// The cache behind `/expensive-data/{key}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// `CACHE_TTL_SECS`: how long a value is kept.
    pub ttl: Duration,
    /// `CACHE_MAX_ENTRIES`: most keys kept in process (without Redis).
    pub max_entries: usize,
    /// `EXPENSIVE_ROUNDS`: SHA-256 rounds of the expensive computation.
    pub rounds: u32,
}

/// The background job queue and its mail delivery.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `JOB_*`: the worker's settings.
    pub worker: courier_actors::job_worker::JobConfig,
    /// `JOB_EVENTS_POLL_MS`: how often `/jobs/{id}/events` re-reads a job (to see work done
    /// on other nodes).
    pub events_poll: Duration,
    /// `SMTP_URL`: deliver `/send-email` through this server; unset writes the outbox.
    pub smtp_url: Option<ServiceUrl>,
    /// `SMTP_FROM`: the sender address.
    pub smtp_from: String,
    /// `SMTP_TIMEOUT_MS`: longest one SMTP delivery may take.
    pub smtp_timeout: Duration,
}

/// Uploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// `UPLOAD_MAX_BYTES`: largest upload (413 beyond).
    pub max_bytes: u64,
    /// `UPLOAD_TTL_SECS`: an upload is removed this long after it arrived.
    pub ttl: Duration,
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

/// The shared outbound HTTP client's limits (one client per worker thread).
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

/// Limits and timings of WebSockets, SSE and rooms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeConfig {
    /// `WS_HEARTBEAT_INTERVAL_MS`: how often the server pings each WebSocket.
    pub heartbeat: Duration,
    /// `WS_CLIENT_TIMEOUT_MS`: a WebSocket silent this long is dropped.
    pub client_timeout: Duration,
    /// `WS_MAX_MESSAGE_BYTES`: largest WebSocket frame or message (close 1009 beyond).
    pub max_message_bytes: usize,
    /// `WS_RATE_PER_SEC`: sustained messages per second per connection.
    pub rate_per_sec: u32,
    /// `WS_RATE_BURST`: messages a connection may send in a burst.
    pub rate_burst: u32,
    /// `WS_FLOOD_LIMIT`: refused messages within a second that close the connection (1008).
    pub flood_limit: u32,
    /// `WS_MAX_ROOMS_PER_CONNECTION`: rooms one connection may join.
    pub max_rooms_per_connection: usize,
    /// `OUTBOUND_QUEUE_MESSAGES`: messages queued to one client before it counts as slow.
    pub outbound_messages: usize,
    /// `OUTBOUND_QUEUE_BYTES`: bytes queued to one client before it counts as slow.
    pub outbound_bytes: usize,
    /// `TCP_USER_TIMEOUT_MS`: the kernel resets a connection whose peer has not acknowledged
    /// data for this long (frees sockets of clients that stopped reading); 0 disables.
    pub tcp_user_timeout: Duration,
    /// `ROOM_HISTORY_SIZE`: events kept per room for replay.
    pub history_size: usize,
    /// `MAX_ROOMS`: rooms one node holds at most.
    pub max_rooms: usize,
    /// `ROOM_IDLE_SECS`: an empty, quiet room is forgotten after this long (embedded mode).
    pub room_idle: Duration,
    /// `TYPING_INTERVAL_MS`: `typing` is relayed at most once per member per interval.
    pub typing_interval: Duration,
    /// `BROKER_MAILBOX_CAPACITY`: messages the broker queues before senders get `overloaded`.
    pub broker_mailbox: usize,
    /// `PRESENCE_EVENTS_MAX_MEMBERS`: bigger rooms send no `member_joined`/`member_left`.
    pub presence_events_max_members: usize,
    /// `SSE_HEARTBEAT_INTERVAL_MS`: interval of `/sse/heartbeat` events.
    pub sse_heartbeat: Duration,
    /// `SSE_KEEPALIVE_INTERVAL_MS`: a quiet SSE stream gets a comment this often.
    pub sse_keepalive: Duration,
    /// `SSE_DEMO_INTERVAL_MS`: interval of the seed's `/sse` messages.
    pub sse_demo_interval: Duration,
    /// `SSE_UPDATES_COALESCE_MS`: room activity on `/sse/updates` at most this often per room.
    pub updates_coalesce: Duration,
    /// `ANONYMOUS_PUBLISH`: whether clients without a token may publish (never in production).
    pub anonymous_publish: bool,
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
    /// `DATABASE_URL`: Postgres; unset selects the embedded SQLite file.
    pub database_url: Option<ServiceUrl>,
    /// `DATABASE_URL_<SUFFIX>`: further named databases, keyed by lower-case suffix.
    pub extra_database_urls: BTreeMap<String, ServiceUrl>,
    /// `MYSQL_URL`: accepted and validated; courier's relational store is Postgres or SQLite.
    pub mysql_url: Option<ServiceUrl>,
    /// `REDIS_URL`: Redis for the bus, history and presence; unset keeps them in process.
    pub redis_url: Option<ServiceUrl>,
    /// `REDIS_URL_CACHE`: Redis for the cache; falls back to `REDIS_URL`.
    pub redis_url_cache: Option<ServiceUrl>,
    /// `REDIS_URL_SESSION`: Redis for sessions; falls back to `REDIS_URL`.
    pub redis_url_session: Option<ServiceUrl>,
    /// `MONGODB_URI`: MongoDB for documents; unset keeps them in the relational store.
    pub mongodb_uri: Option<ServiceUrl>,
    /// `JWT_SECRET`: HS256 key for tokens.
    pub jwt_secret: Secret,
    /// `DB_POOL_*`: the relational pool.
    pub db_pool: PoolConfig,
    /// `DB_STATEMENT_TIMEOUT_MS`: longest a single statement may run (asyncpg `command_timeout`).
    pub db_statement_timeout: Duration,
    /// `REDIS_POOL_*`: the Redis pool.
    pub redis_pool: PoolConfig,
    /// `REDIS_COMMAND_TIMEOUT_MS`: longest a Redis command may take.
    pub redis_command_timeout: Duration,
    /// `MONGODB_TIMEOUT_MS`: MongoDB connect and server-selection timeout.
    pub mongodb_timeout: Duration,
    /// `HTTP_CLIENT_*`: the outbound HTTP client.
    pub http_client: HttpClientConfig,
    /// `UPSTREAM_URL`: the API behind `/io-intensive` and `/external-api`; unset uses the
    /// server's own `/demo/data`.
    pub upstream_url: Option<Url>,
    /// `MAX_BODY_BYTES`: largest request body accepted.
    pub max_body_bytes: usize,
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
    pub cache: CacheSettings,
    /// The job queue.
    pub jobs: JobSettings,
    /// Uploads.
    pub files: FileSettings,
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

/// The inputs of configuration loading; `Sources::from_process` reads the real ones.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding on-disk overrides of the TOML files (may not exist).
    pub config_dir: Option<PathBuf>,
    /// The `.env` file to read (may not exist).
    pub env_file: Option<PathBuf>,
    /// The process environment.
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The real inputs: `APP_CONFIG_DIR` (default `config`), `./.env` and the process
    /// environment.
    pub fn from_process() -> Self {
        let env: HashMap<String, String> = std::env::vars().collect();
        let config_dir = env
            .get("APP_CONFIG_DIR")
            .filter(|d| !d.is_empty())
            .cloned()
            .unwrap_or_else(|| "config".to_owned());
        Self {
            config_dir: Some(PathBuf::from(config_dir)),
            env_file: Some(PathBuf::from(".env")),
            env,
        }
    }
}

impl Config {
    /// Loads the configuration of this process.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(Sources::from_process())
    }

    /// Loads a configuration from explicit inputs (used by tests).
    pub fn load_from(sources: Sources) -> Result<Self, ConfigError> {
        let mut layers = Layers::default();
        if let Some(path) = sources.env_file.as_deref() {
            layers.dotenv = read_dotenv(path)?;
        }
        layers.env = sources.env;

        let env = match layers.lookup("APP_ENV") {
            None => Environment::Local,
            Some((raw, _)) => Environment::parse(&raw).ok_or_else(|| ConfigError::Invalid {
                variable: "APP_ENV".into(),
                shown: quote(&raw),
                expected: format!("one of {}", Environment::ACCEPTED),
            })?,
        };
        let dir = sources.config_dir.as_deref();
        layers.files.push(read_toml(dir, "default")?);
        layers.files.push(read_toml(dir, env.file_stem())?);

        let mut r = Resolver {
            layers,
            report: Vec::new(),
        };
        r.report
            .push(("APP_ENV".into(), env.to_string(), r.source_of("APP_ENV")));
        let config = r.build(env)?;
        Ok(config)
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
        out
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

    /// The Redis address for the cache: `REDIS_URL_CACHE`, else `REDIS_URL`.
    pub fn cache_redis_url(&self) -> Option<&ServiceUrl> {
        self.redis_url_cache.as_ref().or(self.redis_url.as_ref())
    }
}

#[derive(Default)]
struct Layers {
    /// TOML tables in order; later wins.
    files: Vec<TomlLayer>,
    dotenv: HashMap<String, String>,
    env: HashMap<String, String>,
}

struct TomlLayer {
    name: String,
    table: toml::Table,
}

impl Layers {
    /// The raw value of a variable and its source, ignoring empty strings.
    fn lookup(&self, name: &str) -> Option<(String, Source)> {
        if let Some(v) = self.env.get(name).filter(|v| !v.is_empty()) {
            return Some((v.clone(), Source::Environment));
        }
        if let Some(v) = self.dotenv.get(name).filter(|v| !v.is_empty()) {
            return Some((v.clone(), Source::DotEnv));
        }
        let key = name.to_ascii_lowercase();
        for layer in self.files.iter().rev() {
            if let Some(value) = layer.table.get(&key) {
                let raw = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Datetime(d) => d.to_string(),
                    // Rejected when the file is read.
                    toml::Value::Array(_) | toml::Value::Table(_) => String::new(),
                };
                if raw.is_empty() {
                    return None;
                }
                return Some((raw, Source::File(layer.name.clone())));
            }
        }
        None
    }
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() => return Ok(HashMap::new()),
        Err(e) => {
            return Err(ConfigError::File {
                file: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut map = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| ConfigError::File {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        map.insert(k, v);
    }
    Ok(map)
}

fn read_toml(dir: Option<&Path>, stem: &str) -> Result<TomlLayer, ConfigError> {
    let on_disk = dir.map(|d| d.join(format!("{stem}.toml")));
    let (name, text) = match on_disk.filter(|p| p.is_file()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            (path.display().to_string(), text)
        }
        None => {
            let text = BUILTIN_FILES
                .iter()
                .find(|(n, _)| *n == stem)
                .map(|(_, t)| *t)
                .unwrap_or_default();
            (format!("built-in {stem}.toml"), text.to_owned())
        }
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            file: name.clone(),
            reason: e.message().to_owned(),
        })?;
    for (key, value) in &table {
        if !KNOWN_KEYS.contains(&key.as_str()) && !key.starts_with("database_url_") {
            return Err(ConfigError::File {
                file: name.clone(),
                reason: format!("unknown setting `{key}`"),
            });
        }
        if value.is_table() || value.is_array() {
            return Err(ConfigError::File {
                file: name.clone(),
                reason: format!("setting `{key}` must be a plain value"),
            });
        }
    }
    Ok(TomlLayer { name, table })
}

/// Every setting a TOML file may hold (the lower-case variable names).
const KNOWN_KEYS: &[&str] = &[
    "app_name",
    "app_debug",
    "log_level",
    "app_host",
    "app_port",
    "app_workers",
    "app_data_dir",
    "database_url",
    "mysql_url",
    "redis_url",
    "redis_url_cache",
    "redis_url_session",
    "mongodb_uri",
    "jwt_secret",
    "db_pool_min_idle",
    "db_pool_max_size",
    "db_connect_timeout_ms",
    "db_statement_timeout_ms",
    "db_idle_timeout_secs",
    "db_max_lifetime_secs",
    "redis_pool_min_idle",
    "redis_pool_max_size",
    "redis_connect_timeout_ms",
    "redis_command_timeout_ms",
    "redis_idle_timeout_secs",
    "redis_max_lifetime_secs",
    "mongodb_timeout_ms",
    "http_client_max_connections",
    "http_client_connect_timeout_ms",
    "http_client_timeout_ms",
    "http_client_keep_alive_secs",
    "http_client_max_response_bytes",
    "upstream_url",
    "max_body_bytes",
    "http_keep_alive_secs",
    "client_request_timeout_ms",
    "shutdown_timeout_secs",
    "readiness_timeout_ms",
    "anonymous_publish",
    "ws_heartbeat_interval_ms",
    "ws_client_timeout_ms",
    "ws_max_message_bytes",
    "ws_rate_per_sec",
    "ws_rate_burst",
    "ws_flood_limit",
    "ws_max_rooms_per_connection",
    "outbound_queue_messages",
    "outbound_queue_bytes",
    "tcp_user_timeout_ms",
    "room_history_size",
    "max_rooms",
    "room_idle_secs",
    "typing_interval_ms",
    "broker_mailbox_capacity",
    "presence_events_max_members",
    "sse_heartbeat_interval_ms",
    "sse_keepalive_interval_ms",
    "sse_demo_interval_ms",
    "sse_updates_coalesce_ms",
    "users_batch_max",
    "job_concurrency",
    "job_poll_interval_ms",
    "job_lease_ms",
    "job_max_attempts",
    "job_backoff_base_ms",
    "job_backoff_max_ms",
    "job_events_poll_ms",
    "smtp_url",
    "smtp_from",
    "smtp_timeout_ms",
    "upload_max_bytes",
    "upload_ttl_secs",
    "cache_ttl_secs",
    "cache_max_entries",
    "expensive_rounds",
    "aggregate_upstream_url",
    "price_sources",
    "export_page_size",
    "documents_max_bytes",
];

fn quote(raw: &str) -> String {
    format!("{raw:?}")
}

struct Resolver {
    layers: Layers,
    report: Vec<(String, String, Source)>,
}

impl Resolver {
    fn source_of(&self, name: &str) -> Source {
        self.layers
            .lookup(name)
            .map(|(_, s)| s)
            .unwrap_or(Source::Unset)
    }

    fn raw(&mut self, name: &str) -> Option<String> {
        self.layers.lookup(name).map(|(v, _)| v)
    }

    fn record(&mut self, name: &str, shown: String) {
        let source = self.source_of(name);
        self.report.push((name.to_owned(), shown, source));
    }

    fn required(&mut self, name: &str, expected: &str) -> Result<String, ConfigError> {
        self.raw(name).ok_or_else(|| ConfigError::Missing {
            variable: name.into(),
            expected: expected.into(),
        })
    }

    fn string(
        &mut self,
        name: &str,
        expected: &str,
        valid: impl Fn(&str) -> bool,
    ) -> Result<String, ConfigError> {
        let raw = self.required(name, expected)?;
        if !valid(&raw) {
            return Err(invalid(name, quote(&raw), expected));
        }
        self.record(name, raw.clone());
        Ok(raw)
    }

    fn boolean(&mut self, name: &str) -> Result<bool, ConfigError> {
        const EXPECTED: &str = "true or false (also 1/0, yes/no, on/off)";
        let raw = self.required(name, EXPECTED)?;
        let value = match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(invalid(name, quote(&raw), EXPECTED)),
        };
        self.record(name, value.to_string());
        Ok(value)
    }

    fn integer(&mut self, name: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let expected = format!("an integer from {min} to {max}");
        let raw = self.required(name, &expected)?;
        let value: u64 = raw
            .trim()
            .parse()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| invalid(name, quote(&raw), &expected))?;
        self.record(name, value.to_string());
        Ok(value)
    }

    fn millis(&mut self, name: &str, min: u64, max: u64) -> Result<Duration, ConfigError> {
        self.integer(name, min, max).map(Duration::from_millis)
    }

    fn secs(&mut self, name: &str, min: u64, max: u64) -> Result<Duration, ConfigError> {
        self.integer(name, min, max).map(Duration::from_secs)
    }

    fn service_url(
        &mut self,
        name: &str,
        schemes: &[&str],
    ) -> Result<Option<ServiceUrl>, ConfigError> {
        let Some(raw) = self.raw(name) else {
            self.record(name, "unset".into());
            return Ok(None);
        };
        let expected = format!(
            "a URL with scheme {}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // The value may hold a password: echo only its scheme when it is rejected.
        let shown_on_error = || {
            let scheme = raw.split("://").next().unwrap_or("");
            if raw.contains("://") {
                format!("\"{scheme}://…\"")
            } else {
                "<not a URL>".to_owned()
            }
        };
        let url = Url::parse(raw.trim()).map_err(|_| invalid(name, shown_on_error(), &expected))?;
        if !schemes.contains(&url.scheme()) {
            return Err(invalid(name, shown_on_error(), &expected));
        }
        if url.scheme() != "unix" && url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(name, shown_on_error(), &expected));
        }
        let url = normalise_scheme(url);
        let service = ServiceUrl { url };
        self.record(name, service.redacted());
        Ok(Some(service))
    }

    fn build(mut self, env: Environment) -> Result<Config, ConfigError> {
        let app_name = self.string(
            "APP_NAME",
            "1-64 ASCII letters, digits, '-' or '_', starting with a letter",
            |s| {
                s.len() <= 64
                    && s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            },
        )?;
        let debug = self.boolean("APP_DEBUG")?;
        let log_level = self.string(
            "LOG_LEVEL",
            "a level (error, warn, info, debug, trace, off) or an env_logger filter such as \"info,courier=debug\"",
            valid_log_filter,
        )?;
        let host = self.string("APP_HOST", "an IP address or a host name", |s| {
            s.parse::<IpAddr>().is_ok() || valid_hostname(s)
        })?;
        let port = self.integer("APP_PORT", 0, 65535)? as u16;
        let workers = self.integer("APP_WORKERS", 0, 256)? as usize;
        let data_dir = PathBuf::from(
            self.string("APP_DATA_DIR", "a directory path", |s| !s.trim().is_empty())?,
        );

        let database_url = self.service_url(
            "DATABASE_URL",
            &["postgres", "postgresql", "postgresql+asyncpg"],
        )?;
        let mut suffixes: Vec<String> = self
            .layers
            .env
            .keys()
            .chain(self.layers.dotenv.keys())
            .filter_map(|k| k.strip_prefix("DATABASE_URL_"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for layer in &self.layers.files {
            suffixes.extend(
                layer
                    .table
                    .keys()
                    .filter_map(|k| k.strip_prefix("database_url_"))
                    .map(str::to_ascii_uppercase),
            );
        }
        suffixes.sort();
        suffixes.dedup();
        let mut extra_database_urls = BTreeMap::new();
        for suffix in suffixes {
            let name = format!("DATABASE_URL_{suffix}");
            if let Some(url) =
                self.service_url(&name, &["postgres", "postgresql", "postgresql+asyncpg"])?
            {
                extra_database_urls.insert(suffix.to_ascii_lowercase(), url);
            }
        }
        let mysql_url = self.service_url("MYSQL_URL", &["mysql", "mysql+aiomysql"])?;
        const REDIS: &[&str] = &["redis", "rediss", "unix"];
        let redis_url = self.service_url("REDIS_URL", REDIS)?;
        let redis_url_cache = self.service_url("REDIS_URL_CACHE", REDIS)?;
        let redis_url_session = self.service_url("REDIS_URL_SESSION", REDIS)?;
        let mongodb_uri = self.service_url("MONGODB_URI", &["mongodb", "mongodb+srv"])?;

        let secret_expected = "a secret string";
        let jwt_secret = match self.raw("JWT_SECRET") {
            Some(s) => s,
            None if env == Environment::Production => {
                return Err(ConfigError::Missing {
                    variable: "JWT_SECRET".into(),
                    expected: format!(
                    "a random secret of at least {MIN_PRODUCTION_SECRET_BYTES} bytes in production"
                ),
                })
            }
            None => {
                return Err(ConfigError::Missing {
                    variable: "JWT_SECRET".into(),
                    expected: secret_expected.into(),
                })
            }
        };
        if env == Environment::Production
            && (jwt_secret == DEVELOPMENT_JWT_SECRET
                || jwt_secret.len() < MIN_PRODUCTION_SECRET_BYTES)
        {
            return Err(invalid(
                "JWT_SECRET",
                "<redacted>".into(),
                &format!(
                    "a random secret of at least {MIN_PRODUCTION_SECRET_BYTES} bytes in production, not the development secret"
                ),
            ));
        }
        self.record("JWT_SECRET", "<redacted>".into());
        let jwt_secret = Secret(jwt_secret);

        let db_pool_min = self.integer("DB_POOL_MIN_IDLE", 0, 1000)? as u32;
        let db_pool_max = self.integer("DB_POOL_MAX_SIZE", 1, 1000)? as u32;
        if db_pool_min > db_pool_max {
            return Err(invalid(
                "DB_POOL_MIN_IDLE",
                db_pool_min.to_string(),
                &format!("at most DB_POOL_MAX_SIZE ({db_pool_max})"),
            ));
        }
        let db_pool = PoolConfig {
            min_idle: db_pool_min,
            max_size: db_pool_max,
            connect_timeout: self.millis("DB_CONNECT_TIMEOUT_MS", 1, 600_000)?,
            idle_timeout: self.secs("DB_IDLE_TIMEOUT_SECS", 1, 86_400)?,
            max_lifetime: self.secs("DB_MAX_LIFETIME_SECS", 1, 604_800)?,
        };
        let db_statement_timeout = self.millis("DB_STATEMENT_TIMEOUT_MS", 1, 3_600_000)?;
        let redis_pool_min = self.integer("REDIS_POOL_MIN_IDLE", 0, 1000)? as u32;
        let redis_pool_max = self.integer("REDIS_POOL_MAX_SIZE", 1, 1000)? as u32;
        if redis_pool_min > redis_pool_max {
            return Err(invalid(
                "REDIS_POOL_MIN_IDLE",
                redis_pool_min.to_string(),
                &format!("at most REDIS_POOL_MAX_SIZE ({redis_pool_max})"),
            ));
        }
        let redis_pool = PoolConfig {
            min_idle: redis_pool_min,
            max_size: redis_pool_max,
            connect_timeout: self.millis("REDIS_CONNECT_TIMEOUT_MS", 1, 600_000)?,
            idle_timeout: self.secs("REDIS_IDLE_TIMEOUT_SECS", 1, 86_400)?,
            max_lifetime: self.secs("REDIS_MAX_LIFETIME_SECS", 1, 604_800)?,
        };
        let redis_command_timeout = self.millis("REDIS_COMMAND_TIMEOUT_MS", 1, 600_000)?;
        let mongodb_timeout = self.millis("MONGODB_TIMEOUT_MS", 1, 600_000)?;
        let http_client = HttpClientConfig {
            max_connections: self.integer("HTTP_CLIENT_MAX_CONNECTIONS", 1, 100_000)? as usize,
            connect_timeout: self.millis("HTTP_CLIENT_CONNECT_TIMEOUT_MS", 1, 600_000)?,
            timeout: self.millis("HTTP_CLIENT_TIMEOUT_MS", 1, 3_600_000)?,
            keep_alive: self.secs("HTTP_CLIENT_KEEP_ALIVE_SECS", 1, 3600)?,
            max_response_bytes: self.integer("HTTP_CLIENT_MAX_RESPONSE_BYTES", 1, 1 << 30)?
                as usize,
        };
        let upstream_url = match self.raw("UPSTREAM_URL") {
            None => {
                self.record("UPSTREAM_URL", "unset (the server's own /demo/data)".into());
                None
            }
            Some(raw) => {
                let expected = "an http:// or https:// URL";
                let url = Url::parse(raw.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| invalid("UPSTREAM_URL", quote(&raw), expected))?;
                self.record("UPSTREAM_URL", redact_url(&url));
                Some(url)
            }
        };
        let max_body_bytes = self.integer("MAX_BODY_BYTES", 1, 1 << 30)? as usize;
        let http_keep_alive = self.secs("HTTP_KEEP_ALIVE_SECS", 0, 3600)?;
        let client_request_timeout = self.millis("CLIENT_REQUEST_TIMEOUT_MS", 1, 600_000)?;
        let shutdown_timeout = self.secs("SHUTDOWN_TIMEOUT_SECS", 0, 3600)?;
        let readiness_timeout = self.millis("READINESS_TIMEOUT_MS", 1, 60_000)?;
        let jobs = JobSettings {
            worker: courier_actors::job_worker::JobConfig {
                concurrency: self.integer("JOB_CONCURRENCY", 1, 1024)? as usize,
                poll_interval: self.millis("JOB_POLL_INTERVAL_MS", 10, 3_600_000)?,
                lease: self.millis("JOB_LEASE_MS", 300, 86_400_000)?,
                max_attempts: self.integer("JOB_MAX_ATTEMPTS", 1, 100)? as i32,
                backoff_base: self.millis("JOB_BACKOFF_BASE_MS", 1, 3_600_000)?,
                backoff_max: self.millis("JOB_BACKOFF_MAX_MS", 1, 86_400_000)?,
            },
            events_poll: self.millis("JOB_EVENTS_POLL_MS", 10, 600_000)?,
            smtp_url: self.service_url("SMTP_URL", &["smtp", "smtps"])?,
            smtp_from: self.string("SMTP_FROM", "an email address", |s| {
                email_address::EmailAddress::is_valid(s.trim())
            })?,
            smtp_timeout: self.millis("SMTP_TIMEOUT_MS", 1, 3_600_000)?,
        };
        let files = FileSettings {
            max_bytes: self.integer("UPLOAD_MAX_BYTES", 1, 1 << 40)?,
            ttl: self.secs("UPLOAD_TTL_SECS", 1, 365 * 86_400)?,
        };
        let cache = CacheSettings {
            ttl: self.secs("CACHE_TTL_SECS", 1, 30 * 86_400)?,
            max_entries: self.integer("CACHE_MAX_ENTRIES", 1, 10_000_000)? as usize,
            rounds: self.integer("EXPENSIVE_ROUNDS", 1, 100_000_000)? as u32,
        };
        let aggregate_url = match self.raw("AGGREGATE_UPSTREAM_URL") {
            None => {
                self.record(
                    "AGGREGATE_UPSTREAM_URL",
                    "unset (the server's own /demo)".into(),
                );
                None
            }
            Some(raw) => {
                let url = http_url(&raw).ok_or_else(|| {
                    invalid(
                        "AGGREGATE_UPSTREAM_URL",
                        quote(&raw),
                        "an http:// or https:// URL",
                    )
                })?;
                self.record("AGGREGATE_UPSTREAM_URL", redact_url(&url));
                Some(url)
            }
        };
        let price_sources = match self.raw("PRICE_SOURCES") {
            None => {
                self.record("PRICE_SOURCES", "unset (three built-in demo stores)".into());
                Vec::new()
            }
            Some(raw) => {
                let expected =
                    "a comma-separated list of up to 16 http(s) URLs, each containing {product_id}";
                let sources: Vec<String> = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let valid = !sources.is_empty()
                    && sources.len() <= MAX_PRICE_SOURCES
                    && sources.iter().all(|s| {
                        s.contains("{product_id}")
                            && http_url(&s.replace("{product_id}", "p")).is_some()
                    });
                if !valid {
                    return Err(invalid("PRICE_SOURCES", quote(&raw), expected));
                }
                let shown = sources
                    .iter()
                    .map(|s| {
                        http_url(&s.replace("{product_id}", "p"))
                            .map(|u| redact_url(&u))
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                self.record("PRICE_SOURCES", shown);
                sources
            }
        };
        let data = DataConfig {
            users_batch_max: self.integer("USERS_BATCH_MAX", 1, 10_000)? as usize,
            export_page_size: self.integer("EXPORT_PAGE_SIZE", 1, 100_000)? as i64,
            documents_max_bytes: self.integer("DOCUMENTS_MAX_BYTES", 2, 16 << 20)? as usize,
        };
        let anonymous_publish = self.boolean("ANONYMOUS_PUBLISH")?;
        if anonymous_publish && env == Environment::Production {
            return Err(invalid(
                "ANONYMOUS_PUBLISH",
                "true".into(),
                "false in production: publishers must present a token",
            ));
        }
        let realtime = RealtimeConfig {
            heartbeat: self.millis("WS_HEARTBEAT_INTERVAL_MS", 10, 3_600_000)?,
            client_timeout: self.millis("WS_CLIENT_TIMEOUT_MS", 10, 3_600_000)?,
            max_message_bytes: self.integer("WS_MAX_MESSAGE_BYTES", 128, 64 << 20)? as usize,
            rate_per_sec: self.integer("WS_RATE_PER_SEC", 1, 1_000_000)? as u32,
            rate_burst: self.integer("WS_RATE_BURST", 1, 1_000_000)? as u32,
            flood_limit: self.integer("WS_FLOOD_LIMIT", 1, 1_000_000)? as u32,
            max_rooms_per_connection: self.integer("WS_MAX_ROOMS_PER_CONNECTION", 1, 10_000)?
                as usize,
            outbound_messages: self.integer("OUTBOUND_QUEUE_MESSAGES", 1, 1_000_000)? as usize,
            outbound_bytes: self.integer("OUTBOUND_QUEUE_BYTES", 1024, 1 << 30)? as usize,
            tcp_user_timeout: self.millis("TCP_USER_TIMEOUT_MS", 0, 3_600_000)?,
            history_size: self.integer("ROOM_HISTORY_SIZE", 1, 1_000_000)? as usize,
            max_rooms: self.integer("MAX_ROOMS", 1, 10_000_000)? as usize,
            room_idle: self.secs("ROOM_IDLE_SECS", 1, 30 * 86_400)?,
            typing_interval: self.millis("TYPING_INTERVAL_MS", 0, 60_000)?,
            broker_mailbox: self.integer("BROKER_MAILBOX_CAPACITY", 16, 10_000_000)? as usize,
            presence_events_max_members: self.integer(
                "PRESENCE_EVENTS_MAX_MEMBERS",
                0,
                10_000_000,
            )? as usize,
            sse_heartbeat: self.millis("SSE_HEARTBEAT_INTERVAL_MS", 10, 3_600_000)?,
            sse_keepalive: self.millis("SSE_KEEPALIVE_INTERVAL_MS", 10, 3_600_000)?,
            sse_demo_interval: self.millis("SSE_DEMO_INTERVAL_MS", 0, 60_000)?,
            updates_coalesce: self.millis("SSE_UPDATES_COALESCE_MS", 10, 60_000)?,
            anonymous_publish,
        };
        if realtime.client_timeout <= realtime.heartbeat {
            return Err(invalid(
                "WS_CLIENT_TIMEOUT_MS",
                realtime.client_timeout.as_millis().to_string(),
                &format!(
                    "more than WS_HEARTBEAT_INTERVAL_MS ({})",
                    realtime.heartbeat.as_millis()
                ),
            ));
        }

        Ok(Config {
            env,
            app_name,
            debug,
            log_level,
            host,
            port,
            workers,
            data_dir,
            database_url,
            extra_database_urls,
            mysql_url,
            redis_url,
            redis_url_cache,
            redis_url_session,
            mongodb_uri,
            jwt_secret,
            db_pool,
            db_statement_timeout,
            redis_pool,
            redis_command_timeout,
            mongodb_timeout,
            http_client,
            upstream_url,
            max_body_bytes,
            http_keep_alive,
            client_request_timeout,
            shutdown_timeout,
            readiness_timeout,
            data,
            cache,
            jobs,
            files,
            aggregate_url,
            price_sources,
            realtime,
            report: self.report,
        })
    }
}

fn invalid(name: &str, shown: String, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        variable: name.into(),
        shown,
        expected: expected.into(),
    }
}

/// Maps the seed's driver-qualified schemes (`postgresql+asyncpg://`) to the plain ones the
/// Rust drivers expect.
fn normalise_scheme(url: Url) -> Url {
    let plain = match url.scheme() {
        "postgresql+asyncpg" | "postgresql" => "postgres",
        "mysql+aiomysql" => "mysql",
        _ => return url,
    };
    // `Url::set_scheme` refuses some special-scheme changes; rebuild from text instead.
    let text = url.as_str();
    let rest = &text[url.scheme().len()..];
    Url::parse(&format!("{plain}{rest}")).unwrap_or(url)
}

/// `raw` as an http(s) URL with a host.
fn http_url(raw: &str) -> Option<Url> {
    Url::parse(raw.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn valid_log_filter(s: &str) -> bool {
    const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
    let level_ok = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !s.trim().is_empty()
        && s.split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level),
                None => level_ok(directive),
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_schemes_are_normalised() {
        let url = Url::parse("postgresql+asyncpg://u:p@localhost:5432/db").unwrap();
        assert_eq!(
            normalise_scheme(url).as_str(),
            "postgres://u:p@localhost:5432/db"
        );
    }

    #[test]
    fn log_filters() {
        assert!(valid_log_filter("INFO"));
        assert!(valid_log_filter("warn,courier=debug"));
        assert!(!valid_log_filter("loud"));
        assert!(!valid_log_filter("courier=loud"));
    }
}
