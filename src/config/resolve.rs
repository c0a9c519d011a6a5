//! Building a [`Config`] from the layers: every setting is read through its declaration in
//! [`super::settings`] (name, bounds, what it accepts), checked once, and recorded for
//! `courier config`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courier_actors::access::AccessPolicy;

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

use super::settings::{self as s, Kind, Setting};
use super::sources::{Layers, Source};
use super::values::{
    http_url, normalise_scheme, quote, redact_url, redact_url_text, valid_app_name, valid_hostname,
    valid_log_filter, Secret, ServiceUrl,
};
use super::{
    BodyLimits, Config, ConfigError, DataConfig, Environment, HttpClientConfig, JobsConfig,
    MultipartConfig, PoolsConfig, RealtimeConfig, MAX_PRICE_SOURCES,
};
use crate::auth::Tokens;

pub(super) struct Resolver {
    pub(super) layers: Layers,
    pub(super) report: Vec<(String, String, Source)>,
}

pub(super) fn invalid(name: &str, shown: String, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        variable: name.into(),
        shown,
        expected: expected.into(),
    }
}

/// The relational store: `DATABASE_URL` (PostgreSQL or MySQL/MariaDB) or `MYSQL_URL`. Both
/// set to different databases is an error naming both: courier uses one relational store.
fn one_relational_store(
    database_url: Option<ServiceUrl>,
    mysql_url: Option<ServiceUrl>,
) -> Result<Option<ServiceUrl>, ConfigError> {
    match (database_url, mysql_url) {
        (Some(d), Some(m)) if !same_database(d.url(), m.url()) => Err(invalid(
            s::MYSQL_URL.name,
            format!("\"{}\"", m.redacted()),
            &format!(
                "the database DATABASE_URL names (\"{}\") or MYSQL_URL unset: courier uses one relational store at a time",
                d.redacted()
            ),
        )),
        (Some(d), _) => Ok(Some(d)),
        (None, m) => Ok(m),
    }
}

/// Whether two database URLs name the same database: scheme, user, host, port (the
/// scheme's default when absent) and database; passwords and options may differ.
fn same_database(a: &Url, b: &Url) -> bool {
    let port = |u: &Url| {
        u.port().unwrap_or(match u.scheme() {
            "mysql" => 3306,
            _ => 5432,
        })
    };
    a.scheme() == b.scheme()
        && a.username() == b.username()
        && a.host_str() == b.host_str()
        && port(a) == port(b)
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
}

impl Resolver {
    pub(super) fn source_of(&self, name: &str) -> Source {
        self.layers
            .lookup(name)
            .map(|(_, s)| s)
            .unwrap_or(Source::Unset)
    }

    pub(super) fn raw(&self, name: &str) -> Option<String> {
        self.layers.lookup(name).map(|(v, _)| v)
    }

    pub(super) fn record(&mut self, name: &str, shown: String) {
        let source = self.source_of(name);
        self.report.push((name.to_owned(), shown, source));
    }

    pub(super) fn required(&self, setting: &Setting) -> Result<String, ConfigError> {
        self.raw(setting.name).ok_or_else(|| ConfigError::Missing {
            variable: setting.name.into(),
            expected: setting.kind.expected(),
        })
    }

    pub(super) fn text(
        &mut self,
        setting: &Setting,
        valid: impl Fn(&str) -> bool,
    ) -> Result<String, ConfigError> {
        let raw = self.required(setting)?;
        if !valid(&raw) {
            return Err(invalid(setting.name, quote(&raw), &setting.kind.expected()));
        }
        self.record(setting.name, raw.clone());
        Ok(raw)
    }

    pub(super) fn boolean(&mut self, setting: &Setting) -> Result<bool, ConfigError> {
        let raw = self.required(setting)?;
        let value = match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(invalid(setting.name, quote(&raw), &setting.kind.expected())),
        };
        self.record(setting.name, value.to_string());
        Ok(value)
    }

    pub(super) fn int(&mut self, setting: &Setting) -> Result<u64, ConfigError> {
        let (min, max) = setting.kind.range().expect("a numeric setting");
        let raw = self.required(setting)?;
        let value: u64 = raw
            .trim()
            .parse()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| invalid(setting.name, quote(&raw), &setting.kind.expected()))?;
        self.record(setting.name, value.to_string());
        Ok(value)
    }

    pub(super) fn duration(&mut self, setting: &Setting) -> Result<Duration, ConfigError> {
        let n = self.int(setting)?;
        Ok(match setting.kind {
            Kind::Secs { .. } => Duration::from_secs(n),
            _ => Duration::from_millis(n),
        })
    }

    fn service_url(&mut self, setting: &Setting) -> Result<Option<ServiceUrl>, ConfigError> {
        self.named_service_url(setting.name, setting.kind)
    }

    fn named_service_url(
        &mut self,
        name: &str,
        kind: Kind,
    ) -> Result<Option<ServiceUrl>, ConfigError> {
        let Kind::ServiceUrl { schemes } = kind else {
            unreachable!("{name} is a service URL");
        };
        let Some(raw) = self.raw(name) else {
            self.record(name, "unset".into());
            return Ok(None);
        };
        let expected = kind.expected();
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
        let service = ServiceUrl::new(normalise_scheme(url));
        self.record(name, service.redacted());
        Ok(Some(service))
    }

    /// An optional http(s) URL; `unset` says what happens without it.
    fn http_url(&mut self, setting: &Setting, unset: &str) -> Result<Option<Url>, ConfigError> {
        let Some(raw) = self.raw(setting.name) else {
            self.record(setting.name, format!("unset ({unset})"));
            return Ok(None);
        };
        let url = http_url(&raw).ok_or_else(|| {
            invalid(
                setting.name,
                quote(&redact_url_text(&raw)),
                &setting.kind.expected(),
            )
        })?;
        self.record(setting.name, redact_url(&url));
        Ok(Some(url))
    }

    /// A connection pool's settings; `min_idle` may not exceed `max_size`.
    fn pool(
        &mut self,
        [min_idle, max_size, connect, idle, lifetime]: [&Setting; 5],
    ) -> Result<PoolConfig, ConfigError> {
        let min = self.int(min_idle)? as u32;
        let max = self.int(max_size)? as u32;
        if min > max {
            return Err(invalid(
                min_idle.name,
                min.to_string(),
                &format!("at most {} ({max})", max_size.name),
            ));
        }
        Ok(PoolConfig {
            min_idle: min,
            max_size: max,
            connect_timeout: self.duration(connect)?,
            idle_timeout: self.duration(idle)?,
            max_lifetime: self.duration(lifetime)?,
        })
    }

    fn price_sources(&mut self) -> Result<Vec<String>, ConfigError> {
        let setting = &s::PRICE_SOURCES;
        let Some(raw) = self.raw(setting.name) else {
            self.record(setting.name, "unset (three built-in demo stores)".into());
            return Ok(Vec::new());
        };
        let sources: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let as_url = |s: &str| http_url(&s.replace("{product_id}", "p"));
        let valid = !sources.is_empty()
            && sources.len() <= MAX_PRICE_SOURCES
            && sources
                .iter()
                .all(|s| s.contains("{product_id}") && as_url(s).is_some());
        if !valid {
            return Err(invalid(
                setting.name,
                quote(&redact_url_text(&raw)),
                &setting.kind.expected(),
            ));
        }
        let shown = sources
            .iter()
            .map(|s| as_url(s).map(|u| redact_url(&u)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",");
        self.record(setting.name, shown);
        Ok(sources)
    }

    fn realtime(
        &mut self,
        env: Environment,
        access: Arc<AccessPolicy>,
        secret: &Secret,
        token_grace: Duration,
    ) -> Result<RealtimeConfig, ConfigError> {
        let anonymous_publish = self.boolean(&s::ANONYMOUS_PUBLISH)?;
        if anonymous_publish && env == Environment::Production {
            return Err(invalid(
                s::ANONYMOUS_PUBLISH.name,
                "true".into(),
                "false in production: publishers must present a token",
            ));
        }
        let session = SessionConfig {
            heartbeat: self.duration(&s::WS_HEARTBEAT_INTERVAL_MS)?,
            client_timeout: self.duration(&s::WS_CLIENT_TIMEOUT_MS)?,
            max_message_bytes: self.int(&s::WS_MAX_MESSAGE_BYTES)? as usize,
            rate_per_sec: self.int(&s::WS_RATE_PER_SEC)? as u32,
            rate_burst: self.int(&s::WS_RATE_BURST)? as u32,
            flood_limit: self.int(&s::WS_FLOOD_LIMIT)? as u32,
            max_rooms: self.int(&s::WS_MAX_ROOMS_PER_CONNECTION)? as usize,
            anonymous_publish,
            bytes_per_sec: self.int(&s::WS_BYTES_PER_SEC)? as u32,
            bytes_burst: self.int(&s::WS_BYTES_BURST)? as u32,
            json_max_depth: self.int(&s::JSON_MAX_DEPTH)? as usize,
            replay_bytes_per_sec: self.int(&s::REPLAY_BYTES_PER_SEC)? as u32,
            replay_bytes_burst: self.int(&s::REPLAY_BYTES_BURST)? as u32,
            access: access.clone(),
            tokens: Arc::new(Tokens::new(secret.clone())),
            token_grace,
        };
        if (session.bytes_burst as usize) < session.max_message_bytes {
            return Err(invalid(
                s::WS_BYTES_BURST.name,
                session.bytes_burst.to_string(),
                &format!(
                    "at least {} ({}): a message must fit the burst",
                    s::WS_MAX_MESSAGE_BYTES.name,
                    session.max_message_bytes
                ),
            ));
        }
        if session.client_timeout <= session.heartbeat {
            return Err(invalid(
                s::WS_CLIENT_TIMEOUT_MS.name,
                session.client_timeout.as_millis().to_string(),
                &format!(
                    "more than {} ({})",
                    s::WS_HEARTBEAT_INTERVAL_MS.name,
                    session.heartbeat.as_millis()
                ),
            ));
        }
        let queue = QueueLimits {
            messages: self.int(&s::OUTBOUND_QUEUE_MESSAGES)? as usize,
            bytes: self.int(&s::OUTBOUND_QUEUE_BYTES)? as usize,
        };
        let tcp_user_timeout = self.duration(&s::TCP_USER_TIMEOUT_MS)?;
        let broker = BrokerConfig {
            history_limit: self.int(&s::ROOM_HISTORY_SIZE)? as usize,
            history_max_bytes: self.int(&s::ROOM_HISTORY_MAX_BYTES)? as usize,
            history_budget: self.int(&s::HISTORY_MAX_BYTES)? as usize,
            max_rooms: self.int(&s::MAX_ROOMS)? as usize,
            room_idle: self.duration(&s::ROOM_IDLE_SECS)?,
            typing_interval: self.duration(&s::TYPING_INTERVAL_MS)?,
            mailbox_capacity: self.int(&s::BROKER_MAILBOX_CAPACITY)? as usize,
            presence_events_max_members: self.int(&s::PRESENCE_EVENTS_MAX_MEMBERS)? as usize,
            access,
            history_ttl: self.duration(&s::ROOM_HISTORY_TTL_SECS)?,
            idempotency_window: self.duration(&s::IDEMPOTENCY_WINDOW_SECS)?,
            idempotency_max_keys: self.int(&s::IDEMPOTENCY_MAX_KEYS)? as usize,
        };
        let sse_heartbeat = self.duration(&s::SSE_HEARTBEAT_INTERVAL_MS)?;
        let sse_keepalive = self.duration(&s::SSE_KEEPALIVE_INTERVAL_MS)?;
        let sse_demo_interval = self.duration(&s::SSE_DEMO_INTERVAL_MS)?;
        let feed = FeedConfig {
            heartbeat: sse_heartbeat,
            coalesce: self.duration(&s::SSE_UPDATES_COALESCE_MS)?,
        };
        Ok(RealtimeConfig {
            broker,
            session,
            feed,
            queue,
            tcp_user_timeout,
            sse_keepalive,
            sse_demo_interval,
        })
    }
}

pub(super) fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl Resolver {
    pub(super) fn build(mut self, env: Environment) -> Result<Config, ConfigError> {
        let app_name = self.text(&s::APP_NAME, valid_app_name)?;
        let debug = self.boolean(&s::APP_DEBUG)?;
        let log_level = self.text(&s::LOG_LEVEL, valid_log_filter)?;
        let host = self.text(&s::APP_HOST, |h| {
            h.parse::<IpAddr>().is_ok() || valid_hostname(h)
        })?;
        let port = self.int(&s::APP_PORT)? as u16;
        let workers = self.int(&s::APP_WORKERS)? as usize;
        let data_dir = PathBuf::from(self.text(&s::APP_DATA_DIR, |d| !d.trim().is_empty())?);

        let database_url = self.service_url(&s::DATABASE_URL)?;
        let mut extra_database_urls = BTreeMap::new();
        for suffix in self.layers.database_url_suffixes() {
            let name = format!("DATABASE_URL_{suffix}");
            if let Some(url) = self.named_service_url(&name, s::DATABASE_URL_SUFFIX.kind)? {
                extra_database_urls.insert(suffix.to_ascii_lowercase(), url);
            }
        }
        let mysql_url = self.service_url(&s::MYSQL_URL)?;
        let database_url = one_relational_store(database_url, mysql_url)?;
        let redis_url = self.service_url(&s::REDIS_URL)?;
        let redis_cluster = self.boolean(&s::REDIS_CLUSTER)?;
        let redis_url_cache = self.service_url(&s::REDIS_URL_CACHE)?;
        let redis_url_session = self.service_url(&s::REDIS_URL_SESSION)?;
        let mongodb_uri = self.service_url(&s::MONGODB_URI)?;
        let jwt_secret = self.jwt_secret(env)?;
        let api_keys = self.api_keys();
        let token_grace = self.duration(&s::TOKEN_REFRESH_GRACE_MS)?;
        let require_auth = self.boolean(&s::REQUIRE_AUTH)?;
        if !require_auth && env == Environment::Production {
            return Err(invalid(
                s::REQUIRE_AUTH.name,
                "false".into(),
                "true in production: data and admin routes need a token or an API key",
            ));
        }
        let cors_origins = self.origins(&s::CORS_ALLOWED_ORIGINS)?;
        let ws_origins = match self.raw(s::WS_ALLOWED_ORIGINS.name) {
            None => {
                self.record(
                    s::WS_ALLOWED_ORIGINS.name,
                    "unset (the server's own and CORS_ALLOWED_ORIGINS)".into(),
                );
                None
            }
            Some(_) => Some(self.origins(&s::WS_ALLOWED_ORIGINS)?),
        };
        let access = self.access()?;

        let db = DbConfig {
            pool: self.pool([
                &s::DB_POOL_MIN_IDLE,
                &s::DB_POOL_MAX_SIZE,
                &s::DB_CONNECT_TIMEOUT_MS,
                &s::DB_IDLE_TIMEOUT_SECS,
                &s::DB_MAX_LIFETIME_SECS,
            ])?,
            statement_timeout: self.duration(&s::DB_STATEMENT_TIMEOUT_MS)?,
        };
        let redis_pool = self.pool([
            &s::REDIS_POOL_MIN_IDLE,
            &s::REDIS_POOL_MAX_SIZE,
            &s::REDIS_CONNECT_TIMEOUT_MS,
            &s::REDIS_IDLE_TIMEOUT_SECS,
            &s::REDIS_MAX_LIFETIME_SECS,
        ])?;
        let redis_command_timeout = self.duration(&s::REDIS_COMMAND_TIMEOUT_MS)?;
        let mongodb_timeout = self.duration(&s::MONGODB_TIMEOUT_MS)?;
        let http_client = HttpClientConfig {
            max_connections: self.int(&s::HTTP_CLIENT_MAX_CONNECTIONS)? as usize,
            connect_timeout: self.duration(&s::HTTP_CLIENT_CONNECT_TIMEOUT_MS)?,
            timeout: self.duration(&s::HTTP_CLIENT_TIMEOUT_MS)?,
            keep_alive: self.duration(&s::HTTP_CLIENT_KEEP_ALIVE_SECS)?,
            max_response_bytes: self.int(&s::HTTP_CLIENT_MAX_RESPONSE_BYTES)? as usize,
        };
        let upstream_url = self.http_url(&s::UPSTREAM_URL, "the server's own /demo/data")?;
        let max_body_bytes = self.int(&s::MAX_BODY_BYTES)? as usize;
        let body = BodyLimits {
            timeout: self.duration(&s::BODY_TIMEOUT_MS)?,
            min_rate: self.int(&s::BODY_MIN_BYTES_PER_SEC)?,
        };
        let json_max_depth = self.int(&s::JSON_MAX_DEPTH)? as usize;
        let pools = PoolsConfig {
            sync_threads: self.int(&s::SYNC_POOL_THREADS)? as usize,
            queue: self.int(&s::BLOCKING_QUEUE)? as usize,
        };
        let http_keep_alive = self.duration(&s::HTTP_KEEP_ALIVE_SECS)?;
        let client_request_timeout = self.duration(&s::CLIENT_REQUEST_TIMEOUT_MS)?;
        let shutdown_timeout = self.duration(&s::SHUTDOWN_TIMEOUT_SECS)?;
        let readiness_timeout = self.duration(&s::READINESS_TIMEOUT_MS)?;
        let jobs = JobsConfig {
            worker: JobConfig {
                concurrency: self.int(&s::JOB_CONCURRENCY)? as usize,
                poll_interval: self.duration(&s::JOB_POLL_INTERVAL_MS)?,
                lease: self.duration(&s::JOB_LEASE_MS)?,
                max_attempts: self.int(&s::JOB_MAX_ATTEMPTS)? as i32,
                backoff_base: self.duration(&s::JOB_BACKOFF_BASE_MS)?,
                backoff_max: self.duration(&s::JOB_BACKOFF_MAX_MS)?,
                events_poll: self.duration(&s::JOB_EVENTS_POLL_MS)?,
            },
            smtp_url: self.service_url(&s::SMTP_URL)?,
            smtp_from: self.text(&s::SMTP_FROM, |a| {
                email_address::EmailAddress::is_valid(a.trim())
            })?,
            smtp_timeout: self.duration(&s::SMTP_TIMEOUT_MS)?,
        };
        let files = UploadConfig {
            max_bytes: self.int(&s::UPLOAD_MAX_BYTES)?,
            ttl: self.duration(&s::UPLOAD_TTL_SECS)?,
            disk_budget: self.int(&s::UPLOAD_DISK_BUDGET_BYTES)?,
            min_free: self.int(&s::UPLOAD_MIN_FREE_BYTES)?,
        };
        let multipart = MultipartConfig {
            header_bytes: self.int(&s::MULTIPART_MAX_HEADER_BYTES)? as usize,
            parts: self.int(&s::MULTIPART_MAX_PARTS)? as usize,
            field_bytes: self.int(&s::MULTIPART_MAX_FIELD_BYTES)? as usize,
        };
        let cache = CacheConfig {
            ttl: self.duration(&s::CACHE_TTL_SECS)?,
            max_entries: self.int(&s::CACHE_MAX_ENTRIES)? as usize,
            rounds: self.int(&s::EXPENSIVE_ROUNDS)? as u32,
        };
        let aggregate_url = self.http_url(&s::AGGREGATE_UPSTREAM_URL, "the server's own /demo")?;
        let price_sources = self.price_sources()?;
        let data = DataConfig {
            users_batch_max: self.int(&s::USERS_BATCH_MAX)? as usize,
            export_page_size: self.int(&s::EXPORT_PAGE_SIZE)? as i64,
            documents_max_bytes: self.int(&s::DOCUMENTS_MAX_BYTES)? as usize,
        };
        let realtime = self.realtime(env, access.clone(), &jwt_secret, token_grace)?;

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
            redis_url,
            redis_cluster,
            redis_url_cache,
            redis_url_session,
            mongodb_uri,
            jwt_secret,
            api_keys,
            require_auth,
            cors_origins,
            ws_origins,
            db,
            redis_pool,
            redis_command_timeout,
            mongodb_timeout,
            http_client,
            upstream_url,
            max_body_bytes,
            body,
            json_max_depth,
            pools,
            http_keep_alive,
            client_request_timeout,
            shutdown_timeout,
            readiness_timeout,
            data,
            cache,
            jobs,
            files,
            multipart,
            aggregate_url,
            price_sources,
            realtime,
            report: self.report,
        })
    }
}
