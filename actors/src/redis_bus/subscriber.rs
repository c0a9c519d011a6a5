//! The bus subscription: one RESP3 connection (to the Redis, or a cluster client) on which
//! this node subscribes to the shard channels of the rooms it serves, and nothing else.
//!
//! The broker asks for a room's channel when the room's first local subscriber arrives
//! ([`RedisBus::subscribe`] resolves once Redis confirmed it) and lets it go when the last
//! leaves. Messages arrive as RESP3 pushes. When a connection drops (a `disconnect` push,
//! or this node's own heartbeat not heard for [`SUBSCRIPTION_SILENCE_LIMIT`]), the whole
//! subscription is made again, every channel resubscribed, and the broker told
//! ([`BusStatus`]) so it catches up on what it may have missed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bb8_redis::redis::{self, PushInfo, PushKind, Value};
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{parse_wire, BusStatus, Deliveries, FromBus, RedisBus, COMMAND_ROOM, HEARTBEAT_ROOM};

/// Shortest wait before making the subscription again after it dropped.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(200);
/// Longest wait between attempts.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);
/// How often this node publishes its heartbeat on its own channel.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A subscription that has not heard this node's heartbeat for this long is taken for a
/// dead connection (a half-open TCP connection sends no `disconnect`) and made again.
pub const SUBSCRIPTION_SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// Subscriptions sent at once when a connection is made again.
const RESUBSCRIBE_CONCURRENCY: usize = 64;

/// What the broker asks of the subscription.
pub(super) enum Request {
    /// Subscribe to a room's channel; answered once Redis confirmed it.
    Subscribe(String, oneshot::Sender<Result<(), String>>),
    /// Unsubscribe from a room's channel.
    Unsubscribe(String),
}

/// The subscription connection: to one Redis, or a cluster client.
#[derive(Clone)]
enum SubConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl SubConn {
    async fn send(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<()> {
        match self {
            Self::Single(c) => cmd.exec_async(c).await,
            Self::Cluster(c) => cmd.exec_async(c).await,
        }
    }
}

impl RedisBus {
    /// Makes the subscription connection, pushes going to `pushes`.
    async fn connect_subscription(
        &self,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> Result<SubConn, String> {
        let timeout = self.inner.timeout;
        if self.inner.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(self.inner.urls.clone())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(pushes)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .build()
                .map_err(|e| e.to_string())?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            Ok(SubConn::Cluster(conn))
        } else {
            let mut info = redis::IntoConnectionInfo::into_connection_info(
                self.inner
                    .urls
                    .first()
                    .map(String::as_str)
                    .unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
            info.redis.protocol = redis::ProtocolVersion::RESP3;
            let client = redis::Client::open(info).map_err(|e| e.to_string())?;
            let config = redis::AsyncConnectionConfig::new()
                .set_push_sender(pushes)
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| e.to_string())?;
            Ok(SubConn::Single(conn))
        }
    }

    /// Subscribes to `channels`, a few at a time.
    async fn subscribe_all(&self, conn: &SubConn, channels: Vec<String>) -> Result<(), String> {
        let timeout = self.inner.timeout;
        let results: Vec<Result<(), String>> = stream::iter(channels)
            .map(|channel| {
                let mut conn = conn.clone();
                async move {
                    let mut cmd = redis::cmd("SSUBSCRIBE");
                    cmd.arg(&channel);
                    tokio::time::timeout(timeout, conn.send(&cmd))
                        .await
                        .map_err(|_| format!("SSUBSCRIBE {channel} timed out"))?
                        .map_err(|e| e.to_string())
                }
            })
            .buffer_unordered(RESUBSCRIBE_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Runs the subscription for as long as the node runs.
    pub(super) async fn subscribe_forever(
        &self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        to: Deliveries,
    ) {
        let prefix = self.inner.prefix.clone();
        let own_heartbeat = self.channel(&format!("{HEARTBEAT_ROOM}-{}", self.inner.node));
        let mut rooms: HashSet<String> = HashSet::new();
        let mut delay = RECONNECT_MIN_DELAY;
        loop {
            let (push_tx, mut pushes) = mpsc::unbounded_channel();
            let made = async {
                let conn = self.connect_subscription(push_tx).await?;
                let mut channels: Vec<String> = rooms.iter().map(|r| self.channel(r)).collect();
                channels.push(self.channel(COMMAND_ROOM));
                channels.push(own_heartbeat.clone());
                self.subscribe_all(&conn, channels).await?;
                Ok::<_, String>(conn)
            };
            let mut conn = match made.await {
                Ok(conn) => conn,
                Err(e) => {
                    log::warn!("bus: cannot subscribe ({e}); retrying in {delay:?}");
                    // Requests wait; unsubscribes just update the set.
                    let retry = tokio::time::sleep(delay);
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            _ = &mut retry => break,
                            req = requests.recv() => match req {
                                Some(Request::Subscribe(room, reply)) => {
                                    let _ = reply.send(Err(format!("the bus is down: {e}")));
                                    let _ = room;
                                }
                                Some(Request::Unsubscribe(room)) => {
                                    rooms.remove(&room);
                                }
                                None => return,
                            },
                        }
                    }
                    delay = (delay * 2).min(RECONNECT_MAX_DELAY);
                    continue;
                }
            };
            log::info!("bus: subscribed ({} rooms)", rooms.len());
            delay = RECONNECT_MIN_DELAY;
            self.inner.set_connected(true);
            to.status.do_send(BusStatus { connected: true });
            let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
            let mut last_heard = Instant::now();
            let why = loop {
                tokio::select! {
                    push = pushes.recv() => {
                        let Some(push) = push else { break "the connection closed".to_owned() };
                        match push.kind {
                            PushKind::Disconnection => break "the connection dropped".to_owned(),
                            PushKind::Message | PushKind::SMessage => {
                                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                                    (push.data.first(), push.data.get(1))
                                else {
                                    continue;
                                };
                                let channel = String::from_utf8_lossy(channel);
                                if channel == own_heartbeat {
                                    last_heard = Instant::now();
                                    continue;
                                }
                                let Some(room) = room_of(&channel, &prefix) else { continue };
                                if let Some(event) = parse_wire(room.to_owned(), payload) {
                                    to.events.do_send(FromBus { event });
                                }
                            }
                            _ => {}
                        }
                    }
                    req = requests.recv() => match req {
                        Some(Request::Subscribe(room, reply)) => {
                            let mut cmd = redis::cmd("SSUBSCRIBE");
                            cmd.arg(self.channel(&room));
                            let result = tokio::time::timeout(self.inner.timeout, conn.send(&cmd))
                                .await
                                .map_err(|_| "SSUBSCRIBE timed out".to_owned())
                                .and_then(|r| r.map_err(|e| e.to_string()));
                            if result.is_ok() {
                                rooms.insert(room);
                            }
                            let failed = result.is_err();
                            let _ = reply.send(result);
                            if failed {
                                break "a subscription failed".to_owned();
                            }
                        }
                        Some(Request::Unsubscribe(room)) => {
                            if rooms.remove(&room) {
                                let mut cmd = redis::cmd("SUNSUBSCRIBE");
                                cmd.arg(self.channel(&room));
                                let _ = tokio::time::timeout(self.inner.timeout, conn.send(&cmd)).await;
                            }
                        }
                        None => return,
                    },
                    _ = heartbeat.tick() => {
                        if last_heard.elapsed() > SUBSCRIPTION_SILENCE_LIMIT {
                            break "nothing heard on the subscription".to_owned();
                        }
                        let bus = self.clone();
                        let channel = own_heartbeat.clone();
                        actix_rt::spawn(async move {
                            let _ = bus.timed(async {
                                let mut c = bus.conn().await?;
                                redis::cmd("SPUBLISH")
                                    .arg(channel)
                                    .arg(&bus.inner.node)
                                    .query_async::<i64>(&mut c)
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| e.to_string())
                            })
                            .await;
                        });
                    }
                }
            };
            log::warn!("bus: subscription lost ({why}); publishing is refused until it is back");
            self.inner.set_connected(false);
            to.status.do_send(BusStatus { connected: false });
            tokio::time::sleep(delay).await;
        }
    }
}

/// The room a room channel (`{app}:room:{<room>}`) is for.
pub(super) fn room_of<'a>(channel: &'a str, prefix: &str) -> Option<&'a str> {
    channel
        .strip_prefix(prefix)?
        .strip_prefix(":room:{")?
        .strip_suffix('}')
}

#[cfg(test)]
mod tests {
    use super::room_of;

    #[test]
    fn room_channels_carry_the_room_as_a_hash_tag() {
        assert_eq!(room_of("courier:room:{lobby}", "courier"), Some("lobby"));
        assert_eq!(
            room_of("courier:room:{dm:#a,b}", "courier"),
            Some("dm:#a,b")
        );
        assert_eq!(room_of("other:room:{lobby}", "courier"), None);
        assert_eq!(room_of("courier:room:lobby", "courier"), None);
    }
}
