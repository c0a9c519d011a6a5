//! The cross-node bus: Redis numbers room events, keeps their history and carries them to
//! every node.
//!
//! Keys and channels, all prefixed with `APP_NAME`:
//! - `{app}:room:{room}:seq` — the room's last sequence number (`INCR`);
//! - `{app}:room:{room}:history` — a stream capped at `ROOM_HISTORY_SIZE` entries, entry id
//!   `{seq}-1`, so `XRANGE` by sequence number is direct;
//! - `{app}:room:{room}` — the pub/sub channel every node subscribes to (by pattern);
//! - `{app}:presence:{room}` — a hash of member id → member, per room;
//! - `{app}:node:{node}` — a key each live node refreshes; presence of dead nodes is ignored.
//!
//! A publish is one Lua script: `INCR` the sequence, `XADD` to history, `PUBLISH` to the
//! channel. Redis runs scripts one at a time, so the order of the published messages is the
//! order of the sequence numbers, and every subscriber sees each room in `seq` order.
//!
//! The subscription runs on one dedicated connection that reconnects by itself with a
//! bounded backoff; the broker is told when it drops and comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Message;
use bb8_redis::redis;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::mailbox::CountedRecipient;
use crate::protocol::{MemberView, RoomEvent};
use crate::stores::redis::RedisPool;

mod presence;

use presence::PendingPresence;
pub use presence::PRESENCE_BATCH;

/// Shortest wait before resubscribing after the bus connection drops.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between resubscription attempts.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// How often this node refreshes its liveness key.
pub const NODE_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a node's liveness key lives without a refresh.
pub const NODE_TTL_SECS: u64 = 30;
/// A subscription that hears nothing for this long (not even this node's own heartbeat,
/// published every [`NODE_REFRESH_INTERVAL`]) is taken for a dead connection and renewed.
pub const SUBSCRIPTION_SILENCE_LIMIT: Duration = Duration::from_secs(35);
/// The channel suffix of the bus heartbeat (not a valid room name, so never a room).
const HEARTBEAT_ROOM: &str = "#heartbeat";
/// The channel suffix of server-API commands every node applies (not a valid room name).
const COMMAND_ROOM: &str = "#command";

const PUBLISH_SCRIPT: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('SET', KEYS[1], seq)
end
local msg = '{"seq":' .. seq .. ',' .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], seq .. '-1', 'm', msg)
redis.call('PUBLISH', KEYS[3], msg)
return seq
"#;

/// Something that arrived on the bus.
#[derive(Debug)]
pub enum BusEvent {
    /// A room event, numbered by Redis.
    Event(RoomEvent),
    /// A member joined on some node.
    MemberJoined {
        /// The room.
        room: String,
        /// Who.
        member: MemberView,
        /// The node it joined on.
        node: String,
    },
    /// A member left on some node.
    MemberLeft {
        /// The room.
        room: String,
        /// Who.
        member: MemberView,
        /// The node it left from.
        node: String,
    },
    /// The server API disconnected or unsubscribed clients on some node; every other node
    /// does the same with its own connections.
    Command(ServerCommand),
}

/// A server-API command for every node: disconnect (no `room`) or unsubscribe from `room`
/// every connection of `user`, or the connection `client`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCommand {
    /// The room to take them out of; `None`: disconnect them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Every connection of this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// This connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The node that received the request (it has applied it already).
    pub node: String,
}

/// An event or presence change that arrived on the bus (or a publish Redis numbered),
/// for the broker to apply.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct FromBus {
    /// What arrived.
    pub event: BusEvent,
}

/// The bus subscription connected or dropped; on reconnect the broker catches up from
/// the history.
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

/// What travels on a room channel.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    k: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(borrow, skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<MemberView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd: Option<ServerCommand>,
}

struct Inner {
    client: redis::Client,
    pool: RedisPool,
    prefix: String,
    node: String,
    history_cap: usize,
    timeout: Duration,
    connected: AtomicBool,
    script: redis::Script,
    presence: PendingPresence,
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
            .finish()
    }
}

fn parse_wire(room: String, payload: &[u8]) -> Option<BusEvent> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    match wire.k {
        "e" => Some(BusEvent::Event(RoomEvent {
            room,
            seq: wire.seq?,
            from: wire.from?.into(),
            user: wire.user.map(Into::into),
            data: wire.data?.to_owned(),
            ts: wire.ts?.to_owned(),
        })),
        "j" => Some(BusEvent::MemberJoined {
            room,
            member: wire.member?,
            node: wire.node?.to_owned(),
        }),
        "l" => Some(BusEvent::MemberLeft {
            room,
            member: wire.member?,
            node: wire.node?.to_owned(),
        }),
        "c" if room == COMMAND_ROOM => Some(BusEvent::Command(wire.cmd?)),
        _ => None,
    }
}

impl RedisBus {
    /// A bus over `url`, with keys under `prefix` (`APP_NAME`), for node `node`.
    pub fn new(
        url: &str,
        pool: RedisPool,
        prefix: &str,
        node: &str,
        history_cap: usize,
        timeout: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                client: redis::Client::open(url)?,
                pool,
                prefix: prefix.to_owned(),
                node: node.to_owned(),
                history_cap: history_cap.max(1),
                timeout,
                connected: AtomicBool::new(false),
                script: redis::Script::new(PUBLISH_SCRIPT),
                presence: PendingPresence::default(),
            }),
        })
    }

    /// Whether the subscription is live now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// Whether `node` is this node.
    pub fn is_own(&self, node: &str) -> bool {
        self.inner.node == node
    }

    fn channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.inner.prefix)
    }

    fn history_key(&self, room: &str) -> String {
        format!("{}:room:{room}:history", self.inner.prefix)
    }

    fn presence_key(&self, room: &str) -> String {
        format!("{}:presence:{room}", self.inner.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.inner.prefix)
    }

    async fn conn(
        &self,
    ) -> Result<bb8::PooledConnection<'_, bb8_redis::RedisConnectionManager>, String> {
        self.inner.pool.get().await.map_err(|e| e.to_string())
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.inner.timeout, fut)
            .await
            .map_err(|_| format!("redis did not answer within {:?}", self.inner.timeout))?
    }

    /// Starts the subscription and the liveness refresh: what arrives goes to `events`,
    /// and `status` is told when the subscription connects or drops.
    pub fn start(&self, events: CountedRecipient<FromBus>, status: CountedRecipient<BusStatus>) {
        let bus = self.clone();
        let to = Deliveries { events, status };
        actix_rt::spawn(async move { bus.subscribe_forever(to).await });
        let bus = self.clone();
        actix_rt::spawn(async move {
            let mut tick = tokio::time::interval(NODE_REFRESH_INTERVAL);
            loop {
                tick.tick().await;
                let key = bus.node_key(&bus.inner.node);
                let heartbeat = bus.channel(HEARTBEAT_ROOM);
                let _ = bus
                    .timed(async {
                        let mut c = bus.conn().await?;
                        let mut pipe = redis::pipe();
                        pipe.set_ex(key, 1, NODE_TTL_SECS).ignore();
                        pipe.publish(heartbeat, &bus.inner.node).ignore();
                        pipe.query_async::<()>(&mut *c)
                            .await
                            .map_err(|e| e.to_string())
                    })
                    .await;
            }
        });
        self.start_presence_writer();
    }

    async fn subscribe_forever(&self, to: Deliveries) {
        let pattern = format!("{}:room:*", self.inner.prefix);
        let channel_prefix = format!("{}:room:", self.inner.prefix);
        let mut delay = RECONNECT_MIN_DELAY;
        loop {
            let connect = async {
                let mut ps = self
                    .inner
                    .client
                    .get_async_pubsub()
                    .await
                    .map_err(|e| e.to_string())?;
                ps.psubscribe(&pattern).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(ps)
            };
            match self.timed(connect).await {
                Ok(ps) => {
                    log::info!("bus: subscribed to {pattern}");
                    delay = RECONNECT_MIN_DELAY;
                    self.inner.connected.store(true, Ordering::Relaxed);
                    to.status.do_send(BusStatus { connected: true });
                    let mut stream = ps.into_on_message();
                    while let Ok(Some(msg)) =
                        tokio::time::timeout(SUBSCRIPTION_SILENCE_LIMIT, stream.next()).await
                    {
                        let channel = msg.get_channel_name();
                        let Some(room) = channel.strip_prefix(&channel_prefix) else {
                            continue;
                        };
                        if let Some(ev) = parse_wire(room.to_owned(), msg.get_payload_bytes()) {
                            to.events.do_send(FromBus { event: ev });
                        }
                    }
                    log::warn!("bus: subscription lost; delivering locally until Redis is back");
                }
                Err(e) => log::warn!("bus: cannot subscribe ({e}); retrying in {delay:?}"),
            }
            if self.inner.connected.swap(false, Ordering::Relaxed) {
                to.status.do_send(BusStatus { connected: false });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_MAX_DELAY);
        }
    }

    /// Numbers and broadcasts an event; resolves to its sequence number. `floor` is the last
    /// sequence number this node saw in the room, so numbering never goes backwards after
    /// events were numbered locally while Redis was away.
    pub fn publish(
        &self,
        event: RoomEvent,
        floor: u64,
    ) -> impl std::future::Future<Output = Result<u64, String>> + 'static {
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
                seq: None,
                k: "e",
                from: Some(&from),
                user: user.as_deref(),
                data: Some(&data),
                ts: Some(&ts),
                member: None,
                node: None,
                cmd: None,
            })
            .map_err(|e| e.to_string())?;
            // The script prepends `{"seq":N,`.
            let rest = body[1..].to_owned();
            bus.timed(async {
                let mut c = bus.conn().await?;
                bus.inner
                    .script
                    .key(format!("{}:room:{room}:seq", bus.inner.prefix))
                    .key(bus.history_key(&room))
                    .key(bus.channel(&room))
                    .arg(floor)
                    .arg(bus.inner.history_cap)
                    .arg(rest)
                    .invoke_async::<u64>(&mut *c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        }
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
                seq: None,
                k: "c",
                from: None,
                user: None,
                data: None,
                ts: None,
                member: None,
                node: None,
                cmd: Some(cmd),
            })
            .map_err(|e| e.to_string())?;
            let channel = bus.channel(COMMAND_ROOM);
            bus.timed(async {
                let mut c = bus.conn().await?;
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(body)
                    .query_async::<()>(&mut *c)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        }
    }

    /// Events of `room` with `seq > since` from the Redis history, oldest first.
    pub async fn history(
        &self,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<BusEvent>, String> {
        let key = self.history_key(room);
        self.timed(async {
            let mut c = self.conn().await?;
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("{}-0", since.saturating_add(1)))
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut *c)
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

    /// For each `(room, last seq seen)`, the events published since (best effort).
    pub async fn catch_up(&self, rooms: Vec<(String, u64)>) -> Vec<BusEvent> {
        let mut events = Vec::new();
        for (room, seq) in rooms {
            match self.history(&room, seq, self.inner.history_cap).await {
                Ok(mut evs) => events.append(&mut evs),
                Err(e) => log::warn!("bus: catch-up of room={room} failed: {e}"),
            }
        }
        events
    }

    /// The history cap (`ROOM_HISTORY_SIZE`).
    pub fn history_cap(&self) -> usize {
        self.inner.history_cap
    }
}
