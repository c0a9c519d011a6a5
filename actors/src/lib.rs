//! courier's actors and the storage adapters they own.
//!
//! Every concern that owns state is an actix actor defined here, one per file, with its
//! messages at the top. HTTP, WebSocket and SSE handlers in the `courier` crate never share
//! mutable state: they send these actors typed messages and await the replies.
//!
//! - [`room_broker::RoomBroker`]: rooms, members, presence, sequence numbers, history.
//! - [`sse_feed::SseFeed`]: the server-wide SSE topics (`/sse/updates`, `/sse/heartbeat`).
//! - [`ws_session::WsSession`]: one per WebSocket connection.
//! - [`cache::Cache`]: the TTL cache with single-flight.
//! - [`job_worker::JobWorker`]: the durable job queue ([`jobs`] are the job kinds).
//! - [`db_executor::DbExecutor`]: the relational and document stores ([`db`]).
//!
//! [`outbound`] and [`inbound`] are the bounded client queues and frame codecs the
//! sessions and streams use; [`redis_bus`] connects the brokers of many nodes; [`stores`]
//! holds the Postgres and Redis pools and the MongoDB client.

pub mod cache;
pub mod db;
pub mod db_executor;
pub mod inbound;
pub mod job_worker;
pub mod jobs;
pub mod metrics;
pub mod outbound;
pub mod protocol;
pub mod redis_bus;
pub mod room_broker;
pub mod sse_feed;
pub mod stores;
pub mod ws_session;

pub use mongodb;
