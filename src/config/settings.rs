//! Every setting courier reads, declared once: its name, what it accepts, its default and
//! what it is for.
//!
//! Everything else is derived from this table: the built-in `config/default.toml` (a test
//! checks the file is exactly [`default_toml`]), the unknown-key check of the TOML files,
//! `courier config --explain`, and the test that README's configuration table and
//! `.env.example` name every setting. The builder in `resolve.rs` reads each setting
//! through its constant here, so a setting cannot be read under another name.

use std::fmt::Write as _;

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable; the TOML key is the same in lower case.
    pub name: &'static str,
    /// What values it accepts.
    pub kind: Kind,
    /// The value when no layer sets it, as it would be written in the environment; `None`
    /// when unset means "not configured" (an embedded backend, a built-in upstream).
    pub default: Option<&'static str>,
    /// What it is for.
    pub help: &'static str,
    /// Not read from the TOML files (it chooses or locates the files themselves).
    pub env_only: bool,
}

/// What a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A whole number in a range.
    Int {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// Milliseconds in a range.
    Millis {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// Seconds in a range.
    Secs {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// Text checked by the builder; `expected` says what is accepted.
    Text {
        /// What is accepted, for error messages.
        expected: &'static str,
    },
    /// The address of a service; its password is never shown.
    ServiceUrl {
        /// Accepted URL schemes.
        schemes: &'static [&'static str],
    },
    /// An `http://` or `https://` URL.
    HttpUrl,
    /// A secret: never shown.
    Secret,
}

impl Kind {
    /// What the setting accepts, as error messages and `courier config --explain` say it.
    pub fn expected(&self) -> String {
        match *self {
            Self::Bool => "true or false (also 1/0, yes/no, on/off)".into(),
            Self::Int { min, max } | Self::Millis { min, max } | Self::Secs { min, max } => {
                format!("an integer from {min} to {max}")
            }
            Self::Text { expected } => expected.into(),
            Self::ServiceUrl { schemes } => format!(
                "a URL with scheme {}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::HttpUrl => "an http:// or https:// URL".into(),
            Self::Secret => "a secret string".into(),
        }
    }

    /// The unit of a duration, for `courier config --explain`.
    pub fn unit(&self) -> &'static str {
        match self {
            Self::Millis { .. } => " (milliseconds)",
            Self::Secs { .. } => " (seconds)",
            _ => "",
        }
    }

    /// The range of a numeric setting.
    pub fn range(&self) -> Option<(u64, u64)> {
        match *self {
            Self::Int { min, max } | Self::Millis { min, max } | Self::Secs { min, max } => {
                Some((min, max))
            }
            _ => None,
        }
    }
}

const fn int(min: u64, max: u64) -> Kind {
    Kind::Int { min, max }
}

const fn ms(min: u64, max: u64) -> Kind {
    Kind::Millis { min, max }
}

const fn secs(min: u64, max: u64) -> Kind {
    Kind::Secs { min, max }
}

const fn text(expected: &'static str) -> Kind {
    Kind::Text { expected }
}

const fn url(schemes: &'static [&'static str]) -> Kind {
    Kind::ServiceUrl { schemes }
}

const POSTGRES: &[&str] = &["postgres", "postgresql", "postgresql+asyncpg"];
const MYSQL: &[&str] = &["mysql", "mysql+aiomysql"];
const RELATIONAL: &[&str] = &[
    "postgres",
    "postgresql",
    "postgresql+asyncpg",
    "mysql",
    "mysql+aiomysql",
];
const LEVELS: &str = "anyone, authenticated, capability or nobody";

/// The per-namespace options, as their environment suffix and TOML key, longest suffix
/// first (so `_PRESENCE_EVENTS` is not read as `_PRESENCE`).
pub const NAMESPACE_OPTIONS: [(&Setting, &str); 7] = [
    (&NAMESPACE_PRESENCE_EVENTS, "presence_events"),
    (&NAMESPACE_HISTORY_SIZE, "history_size"),
    (&NAMESPACE_SUBSCRIBE, "subscribe"),
    (&NAMESPACE_ANONYMOUS, "anonymous"),
    (&NAMESPACE_PRESENCE, "presence"),
    (&NAMESPACE_PUBLISH, "publish"),
    (&NAMESPACE_HISTORY, "history"),
];
const REDIS: &[&str] = &["redis", "rediss", "unix"];

/// Declares each setting as a constant named after its variable, and [`ALL`].
macro_rules! settings {
    ($($name:ident $(= $shown:literal)? $([$env_only:ident])?:
        $kind:expr, $default:expr, $help:literal;)+) => {
        $(
            #[doc = $help]
            pub const $name: Setting = Setting {
                name: settings!(@name $name $($shown)?),
                kind: $kind,
                default: $default,
                help: $help,
                env_only: settings!(@env_only $($env_only)?),
            };
        )+
        /// Every setting, in the order `courier config` shows them.
        pub const ALL: &[Setting] = &[$($name),+];
    };
    (@name $name:ident) => { stringify!($name) };
    (@name $name:ident $shown:literal) => { $shown };
    (@env_only) => { false };
    (@env_only env_only) => { true };
}

settings! {
    APP_ENV [env_only]: text("one of local, dev, development, test, prod, production"), Some("local"),
        "which deployment this is; selects config/{local,test,production}.toml";
    APP_CONFIG_DIR [env_only]: text("a directory path"), Some("config"),
        "where on-disk configuration files are looked up (they replace the built-in copies); read from the process environment only, since it locates the files before .env is read";
    APP_NAME: text("1-64 ASCII letters, digits, '-' or '_', starting with a letter"), Some("courier"),
        "service name; prefix of every Redis key and channel ({APP_NAME}:...)";
    APP_DEBUG: Kind::Bool, Some("false"),
        "show internal error details in 500 responses";
    LOG_LEVEL: text("a level (error, warn, info, debug, trace, off) or an env_logger filter such as \"info,courier=debug\""), Some("info"),
        "log level or env_logger filter";
    APP_HOST: text("an IP address or a host name"), Some("127.0.0.1"),
        "the address to listen on";
    APP_PORT: int(0, 65_535), Some("8000"),
        "the port to listen on; 0 picks a free port";
    APP_WORKERS: int(0, 256), Some("0"),
        "HTTP worker threads; 0 means one per CPU core";
    APP_DATA_DIR: text("a directory path"), Some("./data"),
        "where the embedded SQLite file and uploads live";
    JWT_SECRET: Kind::Secret, None,
        "HS256 key for tokens; production requires 32+ random bytes and refuses the ones in this repository";
    API_KEYS: Kind::Secret, None,
        "server API keys for backends, comma-separated (Authorization: apikey <key> or X-API-Key)";
    TOKEN_REFRESH_GRACE_MS: ms(0, 3_600_000), Some("30000"),
        "after a connection's token expires, it has this long to send refresh before it is closed (4001)";
    REQUIRE_AUTH: Kind::Bool, Some("false"),
        "data routes need a token or API key, admin routes the API key or the admin role (always on in production)";
    CORS_ALLOWED_ORIGINS: text("a comma-separated list of origins (https://app.example.com), or *"), None,
        "browser origins allowed to call the REST API and SSE; unset: the server's own origin only";
    WS_ALLOWED_ORIGINS: text("a comma-separated list of origins, or *"), None,
        "origins allowed to open WebSockets; unset: the server's own and CORS_ALLOWED_ORIGINS";
    NAMESPACE_FALLBACK: text("open or closed"), Some("open"),
        "what a room namespace that is not configured follows: open (anyone may do anything) or closed";
    NAMESPACE_SUBSCRIBE = "NAMESPACE_<NAME>_SUBSCRIBE": text(LEVELS), Some("anyone"),
        "who may join and follow the namespace's rooms (NAME: the namespace upper-cased, DEFAULT for rooms without ':'; or [namespaces.name] in TOML)";
    NAMESPACE_PUBLISH = "NAMESPACE_<NAME>_PUBLISH": text(LEVELS), Some("authenticated"),
        "who may publish in the namespace";
    NAMESPACE_PRESENCE = "NAMESPACE_<NAME>_PRESENCE": text(LEVELS), Some("anyone"),
        "who may see the namespace's members, joins and leaves";
    NAMESPACE_HISTORY = "NAMESPACE_<NAME>_HISTORY": text(LEVELS), Some("anyone"),
        "who may read the namespace's history and replay it";
    NAMESPACE_HISTORY_SIZE = "NAMESPACE_<NAME>_HISTORY_SIZE": int(1, 1_000_000), None,
        "events kept per room of the namespace (unset: ROOM_HISTORY_SIZE)";
    NAMESPACE_PRESENCE_EVENTS = "NAMESPACE_<NAME>_PRESENCE_EVENTS": Kind::Bool, Some("true"),
        "whether members are told of joins and leaves";
    NAMESPACE_ANONYMOUS = "NAMESPACE_<NAME>_ANONYMOUS": Kind::Bool, Some("true"),
        "whether guests (no token) may do anything in the namespace";
    DATABASE_URL: url(RELATIONAL), None,
        "PostgreSQL (postgres://) or MySQL/MariaDB (mysql://); unset selects MYSQL_URL or else the embedded SQLite file";
    DATABASE_URL_SUFFIX = "DATABASE_URL_<SUFFIX>": url(POSTGRES), None,
        "further named databases, validated and shown by courier config";
    MYSQL_URL: url(MYSQL), None,
        "MySQL/MariaDB as the relational store; with DATABASE_URL also set, both must name the same database";
    REDIS_URL: url(REDIS), None,
        "Redis for the bus, presence and history (any node of a cluster with REDIS_CLUSTER); unset keeps them in the database";
    REDIS_CLUSTER: Kind::Bool, Some("false"),
        "REDIS_URL is a node of a Redis Cluster (Redis 7+): rooms are spread over its slots and use sharded pub/sub; the cache then needs REDIS_URL_CACHE or stays in process";
    REDIS_URL_CACHE: url(REDIS), None,
        "Redis for the cache; falls back to REDIS_URL";
    REDIS_URL_SESSION: url(REDIS), None,
        "Redis for sessions; falls back to REDIS_URL";
    MONGODB_URI: url(&["mongodb", "mongodb+srv"]), None,
        "MongoDB for documents; unset keeps them in the relational store";
    DB_POOL_MIN_IDLE: int(0, 1000), Some("1"),
        "relational connections kept open when idle (asyncpg min_size)";
    DB_POOL_MAX_SIZE: int(1, 1000), Some("20"),
        "most relational connections open at once (asyncpg max_size)";
    DB_CONNECT_TIMEOUT_MS: ms(1, 600_000), Some("5000"),
        "longest wait for a database connection (503 beyond)";
    DB_STATEMENT_TIMEOUT_MS: ms(1, 3_600_000), Some("60000"),
        "longest a statement may run (asyncpg command_timeout; 504 beyond)";
    DB_IDLE_TIMEOUT_SECS: secs(1, 86_400), Some("300"),
        "idle database connections are closed after this long";
    DB_MAX_LIFETIME_SECS: secs(1, 604_800), Some("1800"),
        "database connections are replaced after this long";
    REDIS_POOL_MIN_IDLE: int(0, 1000), Some("0"),
        "Redis connections kept open when idle";
    REDIS_POOL_MAX_SIZE: int(1, 1000), Some("16"),
        "most Redis connections open at once";
    REDIS_CONNECT_TIMEOUT_MS: ms(1, 600_000), Some("2000"),
        "longest wait for a Redis connection";
    REDIS_COMMAND_TIMEOUT_MS: ms(1, 600_000), Some("2000"),
        "longest a Redis command may take";
    REDIS_IDLE_TIMEOUT_SECS: secs(1, 86_400), Some("300"),
        "idle Redis connections are closed after this long";
    REDIS_MAX_LIFETIME_SECS: secs(1, 604_800), Some("1800"),
        "Redis connections are replaced after this long";
    MONGODB_TIMEOUT_MS: ms(1, 600_000), Some("2000"),
        "MongoDB connect and server-selection timeout";
    HTTP_CLIENT_MAX_CONNECTIONS: int(1, 100_000), Some("100"),
        "upstream connections per worker thread";
    HTTP_CLIENT_CONNECT_TIMEOUT_MS: ms(1, 600_000), Some("2000"),
        "longest wait to connect to an upstream";
    HTTP_CLIENT_TIMEOUT_MS: ms(1, 3_600_000), Some("10000"),
        "longest a whole upstream call may take, body included";
    HTTP_CLIENT_KEEP_ALIVE_SECS: secs(1, 3600), Some("30"),
        "idle upstream connections kept for reuse this long";
    HTTP_CLIENT_MAX_RESPONSE_BYTES: int(1, 1 << 30), Some("2097152"),
        "largest upstream body read";
    UPSTREAM_URL: Kind::HttpUrl, None,
        "the API behind /io-intensive and /external-api; unset uses the server's own /demo/data";
    MAX_BODY_BYTES: int(1, 1 << 30), Some("1048576"),
        "largest request body (413 beyond)";
    BODY_TIMEOUT_MS: ms(100, 3_600_000), Some("10000"),
        "a request body that sends nothing for this long, or falls below BODY_MIN_BYTES_PER_SEC after it, is cut off (408)";
    BODY_MIN_BYTES_PER_SEC: int(0, 1 << 30), Some("1024"),
        "slowest average rate a request body may arrive at, after its first BODY_TIMEOUT_MS (0: no minimum)";
    JSON_MAX_DEPTH: int(1, 128), Some("64"),
        "deepest nesting of arrays and objects in published data and data rows (422 / error frame beyond)";
    SYNC_POOL_THREADS: int(1, 1024), Some("16"),
        "threads of the pool that runs blocking handlers (/sync), apart from database and file work";
    BLOCKING_QUEUE: int(1, 1_000_000), Some("256"),
        "blocking and CPU tasks waiting for a thread, per pool; past it the request gets 503";
    HTTP_KEEP_ALIVE_SECS: secs(0, 3600), Some("5"),
        "idle client connections are closed after this long";
    CLIENT_REQUEST_TIMEOUT_MS: ms(1, 600_000), Some("5000"),
        "a client has this long to send its request head";
    SHUTDOWN_TIMEOUT_SECS: secs(0, 3600), Some("30"),
        "on SIGTERM/SIGINT, in-flight requests get this long to finish";
    READINESS_TIMEOUT_MS: ms(1, 60_000), Some("1000"),
        "/readyz waits at most this long per dependency";
    USERS_BATCH_MAX: int(1, 10_000), Some("1000"),
        "most users one POST /users/batch creates (one transaction)";
    EXPORT_PAGE_SIZE: int(1, 100_000), Some("1000"),
        "rows fetched per query while streaming /export/users";
    DOCUMENTS_MAX_BYTES: int(2, 16 << 20), Some("262144"),
        "largest document POST /documents accepts (413 beyond)";
    JOB_CONCURRENCY: int(1, 1024), Some("4"),
        "jobs run at once per node";
    JOB_POLL_INTERVAL_MS: ms(10, 3_600_000), Some("1000"),
        "how often the job queue is checked (a new job also wakes the worker at once)";
    JOB_LEASE_MS: ms(300, 86_400_000), Some("30000"),
        "a running job's lease, renewed while it runs; a job whose worker died runs again when it ends";
    JOB_MAX_ATTEMPTS: int(1, 100), Some("5"),
        "attempts before a job is dead-lettered";
    JOB_BACKOFF_BASE_MS: ms(1, 3_600_000), Some("1000"),
        "first retry delay, doubled per attempt, with jitter";
    JOB_BACKOFF_MAX_MS: ms(1, 86_400_000), Some("300000"),
        "longest retry delay";
    JOB_EVENTS_POLL_MS: ms(10, 600_000), Some("1000"),
        "/jobs/{id}/events re-reads the job this often (to see work done on other nodes)";
    SMTP_URL: url(&["smtp", "smtps"]), None,
        "SMTP server for /send-email; unset writes the outbox (GET /outbox)";
    SMTP_FROM: text("an email address"), Some("courier@localhost"),
        "sender address of /send-email";
    SMTP_TIMEOUT_MS: ms(1, 3_600_000), Some("10000"),
        "longest one SMTP delivery may take";
    UPLOAD_MAX_BYTES: int(1, 1 << 40), Some("104857600"),
        "largest upload (413 beyond)";
    UPLOAD_TTL_SECS: secs(1, 365 * 86_400), Some("60"),
        "an upload is removed this long after it arrived";
    UPLOAD_DISK_BUDGET_BYTES: int(1, 1 << 50), Some("1073741824"),
        "most bytes all uploads together hold on disk (507 beyond)";
    UPLOAD_MIN_FREE_BYTES: int(0, 1 << 50), Some("268435456"),
        "uploads are refused while the disk has less free space than this (507)";
    MULTIPART_MAX_HEADER_BYTES: int(256, 1 << 20), Some("8192"),
        "longest header block of one part of an upload form (413 beyond)";
    MULTIPART_MAX_PARTS: int(1, 1000), Some("16"),
        "most parts in an upload form (413 beyond)";
    MULTIPART_MAX_FIELD_BYTES: int(0, 16 << 20), Some("65536"),
        "most bytes in an upload form's fields other than the file, together (413 beyond)";
    CACHE_TTL_SECS: secs(1, 30 * 86_400), Some("300"),
        "how long /expensive-data keeps a value";
    CACHE_MAX_ENTRIES: int(1, 10_000_000), Some("10000"),
        "most keys the cache keeps in process (without Redis)";
    EXPENSIVE_ROUNDS: int(1, 100_000_000), Some("400000"),
        "SHA-256 rounds of /expensive-data's computation";
    AGGREGATE_UPSTREAM_URL: Kind::HttpUrl, None,
        "the API /aggregate/user/{id} calls; unset uses the server's own /demo";
    PRICE_SOURCES: text("a comma-separated list of up to 16 http(s) URLs, each containing {product_id}"), None,
        "URLs containing {product_id} that /fastest-price races; unset uses three built-in demo stores";
    ANONYMOUS_PUBLISH: Kind::Bool, Some("true"),
        "whether clients without a token may publish (never in production)";
    WS_HEARTBEAT_INTERVAL_MS: ms(10, 3_600_000), Some("5000"),
        "how often the server pings each WebSocket";
    WS_CLIENT_TIMEOUT_MS: ms(10, 3_600_000), Some("10000"),
        "a WebSocket silent this long is closed (1001)";
    WS_MAX_MESSAGE_BYTES: int(128, 64 << 20), Some("65536"),
        "largest WebSocket frame or message (1009 beyond); also the REST publish limit";
    WS_RATE_PER_SEC: int(1, 1_000_000), Some("200"),
        "sustained messages per second per connection";
    WS_RATE_BURST: int(1, 1_000_000), Some("400"),
        "messages a connection may send at once";
    WS_FLOOD_LIMIT: int(1, 1_000_000), Some("200"),
        "refused messages within a second that close the connection (1008)";
    WS_MAX_ROOMS_PER_CONNECTION: int(1, 10_000), Some("32"),
        "rooms one connection may join";
    WS_BYTES_PER_SEC: int(1024, 1 << 30), Some("1048576"),
        "sustained inbound bytes per second per connection";
    WS_BYTES_BURST: int(1024, 1 << 30), Some("1048576"),
        "inbound bytes a connection may send at once (at least WS_MAX_MESSAGE_BYTES)";
    REPLAY_BYTES_PER_SEC: int(1024, 1 << 30), Some("2097152"),
        "history replayed or read per second per client (a connection, or an address over REST and SSE)";
    REPLAY_BYTES_BURST: int(1024, 1 << 30), Some("8388608"),
        "history a client may replay or read at once; past it, join with since and history reads are refused (429 / rate_limited) until it refills";
    OUTBOUND_QUEUE_MESSAGES: int(1, 1_000_000), Some("4096"),
        "messages queued to one client before it counts as too slow";
    OUTBOUND_QUEUE_BYTES: int(1024, 1 << 30), Some("1048576"),
        "bytes queued to one client before it counts as too slow";
    TCP_USER_TIMEOUT_MS: ms(0, 3_600_000), Some("10000"),
        "the kernel resets a connection whose peer stopped acknowledging data (0 disables)";
    ROOM_HISTORY_SIZE: int(1, 1_000_000), Some("1000"),
        "events kept per room for replay (in Redis: the stream cap)";
    ROOM_HISTORY_MAX_BYTES: int(1024, 1 << 30), Some("4194304"),
        "memory the events kept per room may hold: their JSON and 88 bytes each for keeping it";
    HISTORY_MAX_BYTES: int(1 << 20, 1 << 40), Some("134217728"),
        "memory of room history one node keeps in all (counted as ROOM_HISTORY_MAX_BYTES counts it); past it the history of the rooms quiet the longest is dropped";
    MAX_ROOMS: int(1, 10_000_000), Some("10000"),
        "rooms one node holds at most; a room without subscribers or events is let go at once, and a full node forgets its quietest room without subscribers";
    ROOM_IDLE_SECS: secs(1, 30 * 86_400), Some("3600"),
        "a room without subscribers (but with history) leaves this node's memory after this long (its store keeps it)";
    ROOM_HISTORY_TTL_SECS: secs(1, 365 * 86_400), Some("86400"),
        "events are kept this long after they were published; a room with no event for this long is forgotten and numbers again in a new epoch";
    IDEMPOTENCY_WINDOW_SECS: secs(1, 86_400), Some("300"),
        "a publish retried with the same id (WebSocket) or Idempotency-Key (REST) within this window gets the first one's seq";
    IDEMPOTENCY_MAX_KEYS: int(1, 100_000_000), Some("100000"),
        "idempotency keys one node keeps without Redis; past it the oldest are forgotten";
    TYPING_INTERVAL_MS: ms(0, 60_000), Some("1000"),
        "typing is relayed at most once per member per interval";
    BROKER_MAILBOX_CAPACITY: int(16, 10_000_000), Some("65536"),
        "messages the broker queues before senders get overloaded";
    PRESENCE_EVENTS_MAX_MEMBERS: int(0, 10_000_000), Some("1000"),
        "bigger rooms send no member_joined/member_left (quadratic work); presence still answers";
    SSE_HEARTBEAT_INTERVAL_MS: ms(10, 3_600_000), Some("30000"),
        "interval of /sse/heartbeat events";
    SSE_KEEPALIVE_INTERVAL_MS: ms(10, 3_600_000), Some("15000"),
        "a quiet SSE stream gets a keep-alive comment this often";
    SSE_DEMO_INTERVAL_MS: ms(0, 60_000), Some("1000"),
        "interval of /sse messages";
    SSE_UPDATES_COALESCE_MS: ms(10, 60_000), Some("1000"),
        "room activity on /sse/updates at most this often per room";
}

/// The setting whose TOML key is `key`, if any (`database_url_<suffix>` keys included;
/// namespaces are tables of their own, see [`NAMESPACE_OPTIONS`]).
pub fn by_toml_key(key: &str) -> Option<&'static Setting> {
    if key.starts_with("database_url_") {
        return Some(&DATABASE_URL_SUFFIX);
    }
    ALL.iter()
        .find(|s| !s.env_only && !s.name.contains('<') && s.name.eq_ignore_ascii_case(key))
}

/// The namespace and option an environment variable `NAMESPACE_<NAME>_<OPTION>` sets.
pub fn namespace_variable(name: &str) -> Option<(String, &'static Setting)> {
    let rest = name.strip_prefix("NAMESPACE_")?;
    NAMESPACE_OPTIONS.iter().find_map(|(setting, key)| {
        let suffix = format!("_{}", key.to_ascii_uppercase());
        let ns = rest.strip_suffix(&suffix)?;
        (!ns.is_empty()).then(|| (ns.to_ascii_lowercase(), *setting))
    })
}

/// The TOML key of a namespace option.
pub fn namespace_key(setting: &Setting) -> &'static str {
    NAMESPACE_OPTIONS
        .iter()
        .find(|(s, _)| s.name == setting.name)
        .map(|(_, key)| *key)
        .expect("a namespace option")
}

/// `config/default.toml`: every default, with its help, generated from the table.
pub fn default_toml() -> String {
    let mut out = String::from(
        "# courier's defaults, generated from src/config/settings.rs (`courier config --defaults`).\n\
         # Each key is the lower-case name of an environment variable; config/{APP_ENV}.toml,\n\
         # .env and the environment override these values. Settings without a default (the\n\
         # service URLs, JWT_SECRET, ...) are listed by `courier config --explain`.\n",
    );
    for s in ALL.iter().filter(|s| !s.env_only && !s.name.contains('<')) {
        let Some(default) = s.default else { continue };
        let value = match s.kind {
            Kind::Bool | Kind::Int { .. } | Kind::Millis { .. } | Kind::Secs { .. } => {
                default.to_owned()
            }
            _ => format!("{default:?}"),
        };
        let _ = write!(
            out,
            "\n# {}\n{} = {value}\n",
            s.help,
            s.name.to_ascii_lowercase()
        );
    }
    out
}

/// `courier config --explain`: every setting with its default, what it accepts and its help.
pub fn explain() -> String {
    let mut out = String::new();
    for s in ALL {
        let _ = writeln!(
            out,
            "{}\n    {}\n    default: {}\n    accepts: {}{}{}\n",
            s.name,
            s.help,
            s.default.unwrap_or("unset"),
            s.kind.expected(),
            s.kind.unit(),
            if s.env_only {
                "\n    not read from the TOML files"
            } else {
                ""
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_defaults_are_accepted() {
        let mut names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a setting is declared twice");
        for s in ALL {
            if let (Some(default), Some((min, max))) = (s.default, s.kind.range()) {
                let v: u64 = default.parse().expect("a numeric default");
                assert!(
                    (min..=max).contains(&v),
                    "{}'s default is out of range",
                    s.name
                );
            }
        }
    }

    #[test]
    fn the_default_toml_file_is_generated_from_this_table() {
        assert_eq!(
            include_str!("../../config/default.toml"),
            default_toml(),
            "config/default.toml is out of date: run `courier config --defaults > config/default.toml`"
        );
    }

    #[test]
    fn toml_keys_map_back_to_settings() {
        assert_eq!(by_toml_key("app_port"), Some(&APP_PORT));
        assert_eq!(
            by_toml_key("database_url_analytics"),
            Some(&DATABASE_URL_SUFFIX)
        );
        assert_eq!(by_toml_key("app_env"), None);
        assert_eq!(by_toml_key("no_such_thing"), None);
        assert_eq!(by_toml_key("namespace_<name>_subscribe"), None);
    }

    #[test]
    fn namespace_variables_name_a_namespace_and_an_option() {
        assert_eq!(
            namespace_variable("NAMESPACE_CHAT_PUBLISH"),
            Some(("chat".into(), &NAMESPACE_PUBLISH))
        );
        assert_eq!(
            namespace_variable("NAMESPACE_LIVE_FEED_PRESENCE_EVENTS"),
            Some(("live_feed".into(), &NAMESPACE_PRESENCE_EVENTS))
        );
        assert_eq!(
            namespace_variable("NAMESPACE_DEFAULT_HISTORY_SIZE"),
            Some(("default".into(), &NAMESPACE_HISTORY_SIZE))
        );
        assert_eq!(namespace_variable("NAMESPACE_FALLBACK"), None);
        assert_eq!(namespace_variable("NAMESPACE__PUBLISH"), None);
    }
}
