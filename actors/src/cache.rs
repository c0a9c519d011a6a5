//! `Cache`: the TTL cache in front of expensive computations, with single-flight.
//!
//! One `Cache` actor runs per node. A [`GetOrCompute`] is answered from the store when the key
//! is there; otherwise the computation runs once — on the CPU pool, since it is
//! CPU-bound — however many requests ask for the key meanwhile: later askers wait for the
//! same result instead of starting their own (single-flight). The store is Redis
//! (`{APP_NAME}:cache:{key}` with an expiry) when configured, so nodes share results;
//! otherwise an in-process map bounded to [`CacheConfig::max_entries`]. When Redis fails,
//! the request is still answered (computed here), and the failure is logged and counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bb8_redis::redis;
use prometheus::{IntCounter, IntCounterVec, Registry};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::blocking::BlockingPool;
use crate::metrics;
use crate::stores::redis::RedisPool;

/// Look a key up, computing and storing its value on a miss.
#[derive(Debug, Message)]
#[rtype(result = "Result<Lookup, CacheError>")]
pub struct GetOrCompute {
    /// The key (already validated by the caller).
    pub key: String,
}

/// The answer to [`GetOrCompute`].
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The value.
    pub data: Arc<Value>,
    /// True when it came from the store, false when it was computed for this request
    /// (or for a request it waited on).
    pub cached: bool,
}

/// Why a lookup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// The computation itself failed.
    #[error("the computation failed: {0}")]
    Compute(String),
    /// The CPU pool is full: the server is busy.
    #[error("the server is busy; try again")]
    Busy,
}

/// The cache's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a value is kept (`CACHE_TTL_SECS`).
    pub ttl: Duration,
    /// Most keys kept in process (`CACHE_MAX_ENTRIES`); the oldest go first.
    pub max_entries: usize,
    /// SHA-256 rounds of the computation behind `/expensive-data` (`EXPENSIVE_ROUNDS`).
    pub rounds: u32,
}

/// Where the cache keeps values when Redis is configured.
#[derive(Clone)]
pub struct RedisCache {
    /// The pool (`REDIS_URL_CACHE`, else `REDIS_URL`).
    pub pool: RedisPool,
    /// Prefix of the keys: `{APP_NAME}:cache:`.
    pub prefix: String,
    /// Deadline of one command (`REDIS_COMMAND_TIMEOUT_MS`).
    pub timeout: Duration,
}

/// The cache metrics.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Lookups by outcome: `hit`, `miss`, `coalesced` (waited on another request's miss).
    pub lookups: IntCounterVec,
    /// Computations run.
    pub computations: IntCounter,
    /// Store failures (Redis down or too slow).
    pub errors: IntCounter,
}

impl CacheMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Self {
        let lookups = metrics::int_counter_vec(
            registry,
            "courier_cache_lookups_total",
            "Cache lookups by outcome (hit, miss, coalesced).",
            &["outcome"],
        );
        for outcome in ["hit", "miss", "coalesced"] {
            lookups.with_label_values(&[outcome]);
        }
        Self {
            lookups,
            computations: metrics::int_counter(
                registry,
                "courier_cache_computations_total",
                "Values computed because the cache did not have them.",
            ),
            errors: metrics::int_counter(
                registry,
                "courier_cache_errors_total",
                "Cache store failures (the value was computed and served anyway).",
            ),
        }
    }
}

/// The expensive computation behind `/expensive-data`: `rounds` rounds of SHA-256 over the key.
/// CPU-bound, deterministic, and slow enough (about 0.1 s at the default) to be worth
/// caching.
pub fn compute_expensive_result(key: &str, rounds: u32) -> Value {
    let started = Instant::now();
    let mut digest = Sha256::digest(key.as_bytes());
    for _ in 1..rounds {
        digest = Sha256::digest(digest);
    }
    json!({
        "key": key,
        "digest": hex::encode(digest),
        "rounds": rounds,
        "computed_at": crate::clock::rfc3339_now(),
        "compute_ms": started.elapsed().as_secs_f64() * 1000.0,
    })
}

/// The actor; see the module documentation.
pub struct Cache {
    config: CacheConfig,
    metrics: CacheMetrics,
    redis: Option<RedisCache>,
    /// The threads computations run on (one per core, shared with the server's other
    /// CPU-heavy work), so a flood of distinct keys queues there instead of oversubscribing
    /// the machine, and waits for nothing else.
    cpu: BlockingPool,
    /// In-process values with their expiry (only without Redis).
    local: HashMap<String, (Arc<Value>, Instant)>,
    /// Keys being computed, with the requests waiting for them.
    in_flight: HashMap<String, Vec<oneshot::Sender<Result<Lookup, CacheError>>>>,
}

impl Cache {
    /// A cache on Redis when `redis` is given, in process otherwise, computing on `cpu`.
    pub fn new(
        config: CacheConfig,
        metrics: CacheMetrics,
        redis: Option<RedisCache>,
        cpu: BlockingPool,
    ) -> Self {
        Self {
            config,
            metrics,
            redis,
            cpu,
            local: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }

    fn local_get(&mut self, key: &str) -> Option<Arc<Value>> {
        match self.local.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            Some(_) => {
                self.local.remove(key);
                None
            }
            None => None,
        }
    }

    fn local_put(&mut self, key: String, value: Arc<Value>) {
        let now = Instant::now();
        if self.local.len() >= self.config.max_entries {
            self.local.retain(|_, (_, expires)| *expires > now);
        }
        if self.local.len() >= self.config.max_entries {
            // Still full of live entries: drop the one closest to expiry (the oldest).
            if let Some(oldest) = self
                .local
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(k, _)| k.clone())
            {
                self.local.remove(&oldest);
            }
        }
        self.local.insert(key, (value, now + self.config.ttl));
    }
}

impl Actor for Cache {
    type Context = Context<Self>;
}

/// Runs a Redis command with the cache's deadline; failures are logged and counted.
async fn redis_call<T: redis::FromRedisValue>(
    pool: &RedisPool,
    timeout: Duration,
    metrics: &CacheMetrics,
    what: &str,
    cmd: redis::Cmd,
) -> Option<T> {
    let call = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        cmd.query_async::<T>(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            metrics.errors.inc();
            log::warn!("cache: Redis {what} failed: {e}; serving without the cache");
            None
        }
        Err(_) => {
            metrics.errors.inc();
            log::warn!(
                "cache: Redis {what} took over {} ms; serving without the cache",
                timeout.as_millis()
            );
            None
        }
    }
}

impl Handler<GetOrCompute> for Cache {
    type Result = ResponseFuture<Result<Lookup, CacheError>>;

    fn handle(&mut self, msg: GetOrCompute, ctx: &mut Self::Context) -> Self::Result {
        let key = msg.key;
        if self.redis.is_none() {
            if let Some(data) = self.local_get(&key) {
                self.metrics.lookups.with_label_values(&["hit"]).inc();
                return Box::pin(async move { Ok(Lookup { data, cached: true }) });
            }
        }
        let (tx, rx) = oneshot::channel();
        let waiting = async move {
            rx.await
                .unwrap_or_else(|_| Err(CacheError::Compute("the cache stopped".into())))
        };
        if let Some(waiters) = self.in_flight.get_mut(&key) {
            self.metrics.lookups.with_label_values(&["coalesced"]).inc();
            waiters.push(tx);
            return Box::pin(waiting);
        }
        self.in_flight.insert(key.clone(), vec![tx]);

        let redis = self.redis.clone();
        let cpu = self.cpu.clone();
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let fetch_key = key.clone();
        let work = async move {
            let stored_key = redis.as_ref().map(|s| format!("{}{fetch_key}", s.prefix));
            if let (Some(store), Some(stored_key)) = (&redis, &stored_key) {
                let mut cmd = redis::cmd("GET");
                cmd.arg(stored_key);
                let found: Option<Option<String>> =
                    redis_call(&store.pool, store.timeout, &metrics, "GET", cmd).await;
                if let Some(value) = found
                    .flatten()
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                {
                    return Ok(Lookup {
                        data: Arc::new(value),
                        cached: true,
                    });
                }
            }
            metrics.computations.inc();
            let rounds = config.rounds;
            let value = cpu
                .run(move || compute_expensive_result(&fetch_key, rounds))
                .await
                .map_err(|_| CacheError::Busy)?;
            if let (Some(store), Some(stored_key)) = (&redis, &stored_key) {
                let mut cmd = redis::cmd("SET");
                cmd.arg(stored_key)
                    .arg(value.to_string())
                    .arg("EX")
                    .arg(config.ttl.as_secs().max(1));
                let _: Option<()> =
                    redis_call(&store.pool, store.timeout, &metrics, "SET", cmd).await;
            }
            Ok(Lookup {
                data: Arc::new(value),
                cached: false,
            })
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, _| {
            if let Ok(lookup) = &result {
                let outcome = if lookup.cached { "hit" } else { "miss" };
                act.metrics.lookups.with_label_values(&[outcome]).inc();
                if act.redis.is_none() && !lookup.cached {
                    act.local_put(key.clone(), lookup.data.clone());
                }
            }
            for waiter in act.in_flight.remove(&key).unwrap_or_default() {
                let _ = waiter.send(result.clone());
            }
        }));
        Box::pin(waiting)
    }
}
