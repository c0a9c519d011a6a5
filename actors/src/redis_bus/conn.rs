//! The bus's connections to Redis: commands go through a pool of connections to one Redis,
//! or through the cluster client, which sends each command to the node that owns its
//! key's slot (every key of a room shares one slot: they carry the room as a hash tag).

use std::sync::Arc;
use std::time::Duration;

use bb8_redis::redis::{self, aio::ConnectionLike, Cmd, Pipeline, RedisFuture, Value};
use bb8_redis::RedisConnectionManager;
use redis::cluster_async::ClusterConnection;

use crate::stores::redis::RedisPool;

/// Where the bus sends commands.
#[derive(Clone)]
pub enum Commands {
    /// One Redis, through the pool.
    Single(RedisPool),
    /// A Redis Cluster (`REDIS_CLUSTER=true`).
    Cluster(Arc<ClusterCommands>),
}

/// The cluster client and its connection, made on first use (a cluster that is down at
/// start-up is tried again on each use, and used once it is back).
pub struct ClusterCommands {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl Commands {
    /// Commands to the cluster of which `seeds` are nodes, each taking at most `timeout`.
    pub fn cluster(seeds: Vec<String>, timeout: Duration) -> Result<Self, String> {
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self::Cluster(Arc::new(ClusterCommands {
            client,
            conn: tokio::sync::OnceCell::new(),
        })))
    }
}

/// A connection commands can be sent on.
pub enum Conn<'a> {
    /// Checked out of the pool.
    Pooled(bb8::PooledConnection<'a, RedisConnectionManager>),
    /// The cluster client's (multiplexed; a clone).
    Cluster(ClusterConnection),
}

impl Commands {
    /// A connection to send commands on.
    pub async fn get(&self) -> Result<Conn<'_>, String> {
        match self {
            Self::Single(pool) => pool
                .get()
                .await
                .map(Conn::Pooled)
                .map_err(|e| e.to_string()),
            Self::Cluster(cluster) => cluster
                .conn
                .get_or_try_init(|| cluster.client.get_async_connection())
                .await
                .map(|c| Conn::Cluster(c.clone()))
                .map_err(|e| e.to_string()),
        }
    }
}

impl ConnectionLike for Conn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Pooled(c) => (**c).req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Pooled(c) => (**c).req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Pooled(c) => (**c).get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
