//! The cross-node bus: Redis numbers room events, keeps their history and carries them to
//! the nodes that serve the room.
//!
//! Keys and channels, all prefixed with `APP_NAME`; every key of a room carries the room as
//! a hash tag (`{<room>}`), so on a Redis Cluster a room lives in one slot:
//! - `{app}:room:{<room>}:seq` — the room's last sequence number (`INCR`);
//! - `{app}:room:{<room>}:epoch` — the room's epoch: made when the room has none (its first
//!   event, or after Redis lost it), so a client can tell that the numbering started again;
//! - `{app}:room:{<room>}:history` — a stream capped at `ROOM_HISTORY_SIZE` entries, entry
//!   id `{seq}-1`, so `XRANGE` by sequence number is direct;
//! - `{app}:room:{<room>}:idem:<key>` — the seq an idempotency key got, for
//!   `IDEMPOTENCY_WINDOW_SECS`;
//! - `{app}:room:{<room>}:replid` — the replication id of the Redis that numbered the room
//!   last: when its master restarts or fails over, acknowledged writes may have been lost
//!   (replication is asynchronous), so the next event starts a new epoch;
//! - `{app}:room:{<room>}` — the room's shard channel (`SPUBLISH` / `SSUBSCRIBE`), which
//!   only the nodes serving the room subscribe to;
//! - `{app}:presence:{<room>}` — a hash of member id → member, each entry with an expiry
//!   its node refreshes ([`presence`]);
//! - `{app}:rooms` — a sorted set of rooms by their last publish, for `GET /rooms`.
//!
//! A publish is one Lua script on the room's slot: check the idempotency key, make the
//! epoch if there is none, `INCR` the sequence, `XADD` to history, set the keys' expiry
//! (`ROOM_HISTORY_TTL_SECS`), `SPUBLISH` to the channel. Redis runs scripts one at a time,
//! so the order of the published messages is the order of the sequence numbers. While the
//! bus is down, nothing is numbered anywhere: publishes are refused (`unavailable`).
//!
//! The subscription ([`subscriber`]) runs on one connection that is made again by itself
//! with a bounded backoff; the broker is told when it drops and comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use bb8_redis::redis;
use tokio::sync::{mpsc, oneshot};

use crate::mailbox::CountedRecipient;
use crate::protocol::RoomEvent;

mod conn;
mod presence;
mod subscriber;
mod wire;

pub use conn::Commands;
use presence::PendingPresence;
pub use presence::{PRESENCE_BATCH, PRESENCE_REFRESH_INTERVAL, PRESENCE_TTL};
pub use subscriber::{
    HEARTBEAT_INTERVAL, RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, SUBSCRIPTION_SILENCE_LIMIT,
};
use wire::{parse_wire, Wire};
pub use wire::{BusEvent, Head, Published, ServerCommand};

/// The channel "room" of this node's heartbeat (not a valid room name, so never a room).
const HEARTBEAT_ROOM: &str = "#heartbeat";
/// The channel "room" of server-API commands every node applies (not a valid room name).
const COMMAND_ROOM: &str = "#command";

const PUBLISH_SCRIPT: &str = r#"
-- KEYS: seq, history, epoch, idempotency key (or the seq key again when there is none),
--       the replication id the room was last numbered under
-- ARGV: history cap, key expiry ms, event body (after seq and epoch), a new epoch,
--       idempotency window ms (0: no key), channel
local window = tonumber(ARGV[5])
if window > 0 then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    return {tonumber(prev), redis.call('GET', KEYS[3]) or '', 1}
  end
end
-- The shard's replication id changes when its master restarts or fails over: writes
-- acknowledged before may be gone, so the numbering goes on in a new epoch.
local replid = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
local epoch = redis.call('GET', KEYS[3])
if (not epoch) or redis.call('EXISTS', KEYS[1]) == 0 then
  -- The room has no numbering (new, expired, or lost with Redis): start anew.
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[1], KEYS[2])
elseif redis.call('GET', KEYS[5]) ~= replid then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
redis.call('SET', KEYS[5], replid, 'PX', ARGV[2])
local seq = redis.call('INCR', KEYS[1])
local msg = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], seq .. '-1', 'm', msg)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
if window > 0 then
  redis.call('SET', KEYS[4], seq, 'PX', window)
end
redis.call('SPUBLISH', ARGV[6], msg)
return {seq, epoch, 0}
"#;

/// An event or presence change that arrived on the bus, for the broker to apply.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FromBus {
    /// What arrived.
    pub event: BusEvent,
}

/// The bus subscription connected or dropped; on reconnect the broker catches up on every
/// room it serves.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BusStatus {
    /// Whether the subscription is live.
    pub connected: bool,
}

/// Where the bus delivers what it receives.
#[derive(Clone)]
struct Deliveries {
    events: CountedRecipient<FromBus>,
    status: CountedRecipient<BusStatus>,
}

/// The bus's settings.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `REDIS_URL`: the Redis, or the seed nodes of a cluster (comma-separated).
    pub urls: Vec<String>,
    /// `REDIS_CLUSTER`: a Redis Cluster (sharded pub/sub, slots per room).
    pub cluster: bool,
    /// `APP_NAME`: the prefix of every key and channel.
    pub prefix: String,
    /// This node's id.
    pub node: String,
    /// `ROOM_HISTORY_SIZE`: the history stream's cap.
    pub history_cap: usize,
    /// `ROOM_HISTORY_TTL_SECS`: a room's keys expire this long after its last event.
    pub history_ttl: Duration,
    /// `IDEMPOTENCY_WINDOW_SECS`.
    pub idempotency_window: Duration,
    /// `REDIS_COMMAND_TIMEOUT_MS`: longest a command may take.
    pub timeout: Duration,
}

struct Inner {
    commands: Commands,
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    node: String,
    history_cap: usize,
    history_ttl: Duration,
    idempotency_window: Duration,
    timeout: Duration,
    connected: AtomicBool,
    script: redis::Script,
    presence: PendingPresence,
    subscription: std::sync::Mutex<Option<mpsc::UnboundedSender<subscriber::Request>>>,
}

impl Inner {
    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// A handle on the bus; cheap to clone.
#[derive(Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.inner.prefix)
            .field("node", &self.inner.node)
            .field("cluster", &self.inner.cluster)
            .finish()
    }
}

impl RedisBus {
    /// A bus for `config`, sending commands through `commands`.
    pub fn new(config: BusConfig, commands: Commands) -> Self {
        Self {
            inner: Arc::new(Inner {
                commands,
                urls: config.urls,
                cluster: config.cluster,
                prefix: config.prefix,
                node: config.node,
                history_cap: config.history_cap.max(1),
                history_ttl: config.history_ttl,
                idempotency_window: config.idempotency_window,
                timeout: config.timeout,
                connected: AtomicBool::new(false),
                script: redis::Script::new(PUBLISH_SCRIPT),
                presence: PendingPresence::default(),
                subscription: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Whether the subscription is live now (publishes are refused while it is not).
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Whether `node` is this node.
    pub fn is_own(&self, node: &str) -> bool {
        self.inner.node == node
    }

    /// The room's shard channel.
    fn channel(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}", self.inner.prefix)
    }

    fn room_key(&self, room: &str, what: &str) -> String {
        format!("{}:room:{{{room}}}:{what}", self.inner.prefix)
    }

    fn presence_key(&self, room: &str) -> String {
        format!("{}:presence:{{{room}}}", self.inner.prefix)
    }

    fn rooms_key(&self) -> String {
        format!("{}:rooms", self.inner.prefix)
    }

    async fn conn(&self) -> Result<conn::Conn<'_>, String> {
        self.inner.commands.get().await
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.inner.timeout, fut)
            .await
            .map_err(|_| format!("redis did not answer within {:?}", self.inner.timeout))?
    }

    /// Starts the subscription and the presence writer: what arrives goes to `events`,
    /// and `status` is told when the subscription connects or drops.
    pub fn start(&self, events: CountedRecipient<FromBus>, status: CountedRecipient<BusStatus>) {
        let (tx, rx) = mpsc::unbounded_channel();
        *self
            .inner
            .subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let bus = self.clone();
        let to = Deliveries { events, status };
        actix_rt::spawn(async move { bus.subscribe_forever(rx, to).await });
        self.start_presence_writer();
    }

    fn request(&self, req: subscriber::Request) -> bool {
        self.inner
            .subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|tx| tx.send(req).is_ok())
    }

    /// Subscribes this node to `room`'s channel; resolves once Redis confirmed it.
    pub fn subscribe(&self, room: &str) -> impl std::future::Future<Output = Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let sent = self.request(subscriber::Request::Subscribe(room.to_owned(), tx));
        async move {
            if !sent {
                return Err("the bus is not running".to_owned());
            }
            rx.await
                .unwrap_or_else(|_| Err("the bus subscription stopped".to_owned()))
        }
    }

    /// Unsubscribes this node from `room`'s channel.
    pub fn unsubscribe(&self, room: &str) {
        self.request(subscriber::Request::Unsubscribe(room.to_owned()));
    }

    /// Numbers and broadcasts an event; with `key`, a publish with the same key within the
    /// window answers the first one's number and publishes nothing.
    pub fn publish(
        &self,
        event: RoomEvent,
        key: Option<String>,
    ) -> impl std::future::Future<Output = Result<Published, String>> + 'static {
        let bus = self.clone();
        async move {
            let RoomEvent {
                room,
                from,
                user,
                data,
                ts,
                ..
            } = event;
            let body = serde_json::to_string(&Wire {
                from: Some(&from),
                user: user.as_deref(),
                data: Some(&data),
                ts: Some(&ts),
                ..Wire::kind("e")
            })
            .map_err(|e| e.to_string())?;
            // The script prepends `{"seq":N,"epoch":"E",`.
            let rest = body[1..].to_owned();
            let window = match &key {
                Some(_) => bus.inner.idempotency_window.as_millis().max(1),
                None => 0,
            };
            let seq_key = bus.room_key(&room, "seq");
            let idem_key = match &key {
                Some(k) => bus.room_key(&room, &format!("idem:{k}")),
                None => seq_key.clone(),
            };
            let ttl = bus.inner.history_ttl.as_millis().max(1);
            let epoch = crate::protocol::new_epoch();
            let (seq, epoch, repeated): (u64, String, u8) = bus
                .timed(async {
                    let mut c = bus.conn().await?;
                    bus.inner
                        .script
                        .key(&seq_key)
                        .key(bus.room_key(&room, "history"))
                        .key(bus.room_key(&room, "epoch"))
                        .key(&idem_key)
                        .key(bus.room_key(&room, "replid"))
                        .arg(bus.inner.history_cap)
                        .arg(u64::try_from(ttl).unwrap_or(u64::MAX))
                        .arg(rest)
                        .arg(&*epoch)
                        .arg(u64::try_from(window).unwrap_or(u64::MAX))
                        .arg(bus.channel(&room))
                        .invoke_async(&mut c)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await?;
            Ok(Published {
                seq,
                epoch: epoch.into(),
                repeated: repeated == 1,
            })
        }
    }

    /// The room's head: its last sequence number and epoch.
    pub async fn head(&self, room: &str) -> Result<Head, String> {
        let (seq, epoch): (Option<u64>, Option<String>) = self
            .timed(async {
                let mut c = self.conn().await?;
                redis::pipe()
                    .get(self.room_key(room, "seq"))
                    .get(self.room_key(room, "epoch"))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        Ok(match (seq, epoch) {
            (Some(seq), Some(epoch)) => Head {
                seq,
                epoch: Some(epoch.into()),
            },
            _ => Head {
                seq: 0,
                epoch: None,
            },
        })
    }

    /// Events of `room` with `seq > since` from the Redis history, oldest first.
    pub async fn history(
        &self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<BusEvent>, String> {
        let key = self.room_key(room, "history");
        self.timed(async {
            let mut c = self.conn().await?;
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("{}-0", since.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            Ok(reply
                .ids
                .into_iter()
                .filter_map(|entry| {
                    let payload: Vec<u8> = entry.get("m")?;
                    parse_wire(room.to_owned(), &payload)
                })
                .collect())
        })
        .await
    }

    /// Records that `rooms` had events now, for `GET /rooms` (best effort).
    pub fn touch_rooms(&self, rooms: Vec<String>) {
        let bus = self.clone();
        actix_rt::spawn(async move {
            let now = crate::access::unix_now();
            let oldest = now.saturating_sub(bus.inner.history_ttl.as_secs());
            let _ = bus
                .timed(async {
                    let mut c = bus.conn().await?;
                    let mut pipe = redis::pipe();
                    for room in &rooms {
                        pipe.zadd(bus.rooms_key(), room, now).ignore();
                    }
                    pipe.cmd("ZREMRANGEBYSCORE")
                        .arg(bus.rooms_key())
                        .arg("-inf")
                        .arg(oldest)
                        .ignore();
                    pipe.query_async::<()>(&mut c)
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
        });
    }

    /// The rooms with events lately, newest first, at most `limit`: each with its last
    /// sequence number and its members on every node.
    pub async fn rooms(&self, limit: usize) -> Result<Vec<(String, u64, usize)>, String> {
        let names: Vec<String> = self
            .timed(async {
                let mut c = self.conn().await?;
                redis::cmd("ZREVRANGE")
                    .arg(self.rooms_key())
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        let mut rooms = Vec::with_capacity(names.len());
        for room in names {
            let head = self.head(&room).await?;
            let members = self.presence(&room).await?.len();
            rooms.push((room, head.seq, members));
        }
        Ok(rooms)
    }

    /// Tells every other node to apply a server-API command `room`/`user`/`client` (this
    /// node has applied it). Best effort: a node that is cut off from Redis misses it.
    pub fn command(
        &self,
        room: Option<String>,
        user: Option<String>,
        client: Option<String>,
    ) -> impl std::future::Future<Output = Result<(), String>> + 'static {
        let bus = self.clone();
        async move {
            let cmd = ServerCommand {
                room,
                user,
                client,
                node: bus.inner.node.clone(),
            };
            let body = serde_json::to_string(&Wire {
                cmd: Some(cmd),
                ..Wire::kind("c")
            })
            .map_err(|e| e.to_string())?;
            let channel = bus.channel(COMMAND_ROOM);
            bus.timed(async {
                let mut c = bus.conn().await?;
                redis::cmd("SPUBLISH")
                    .arg(channel)
                    .arg(body)
                    .query_async::<i64>(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
        }
    }

    /// The history cap (`ROOM_HISTORY_SIZE`).
    pub fn history_cap(&self) -> usize {
        self.inner.history_cap
    }
}
