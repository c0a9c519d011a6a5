//! courier's actors and the storage adapters they own.
//!
//! Every concern that owns state is an actix actor defined here, in a file or folder of its
//! own with its messages first. HTTP, WebSocket and SSE handlers in the `courier` crate
//! never share mutable state: they send these actors typed messages and await the replies.
//!
//! | actor | owns | file |
//! |---|---|---|
//! | `RoomBroker` | rooms, members, presence, sequence numbers, history | [`room_broker`] |
//! | `SseFeed` | the server-wide SSE topics (`/sse/updates`, `/sse/heartbeat`) | [`sse_feed`] |
//! | `WsSession` | one WebSocket connection | [`ws_session`] |
//! | `JobWorker` | the durable job queue's workers on this node | [`job_worker`] |
//! | `Cache` | the TTL cache with single-flight | [`cache`] |
//! | `DbExecutor` | the relational and document stores' operations | [`db_executor`] |
//! | `UploadStore` | the uploads directory | [`upload_store`] |
//!
//! # How a message travels
//!
//! 1. **Socket to session.** A WebSocket's request body is decoded into frames by
//!    [`ws_frames::WsFrames`], which feeds the connection's [`ws_session::WsSession`].
//! 2. **Session to broker.** The session checks the frame ([`protocol::parse_client`], its
//!    rate limit) and sends the broker a typed message ([`room_broker::Publish`],
//!    [`room_broker::Join`], ...) through the broker's [`room_broker::BrokerHandle`]
//!    ([`mailbox`]: the handle counts the broker's mailbox depth).
//! 3. **Broker to client queues.** The broker numbers the event, writes it once
//!    (`room_broker/room.rs`), keeps it in the room's history and queues the same buffer to
//!    every subscriber's [`client_queue::ClientQueue`] with `try_send`; a full queue gets its
//!    client evicted.
//! 4. **Client queue to response body.** Each queue's reading end is the HTTP response body
//!    ([`client_queue::WsBody`] for a WebSocket, [`client_queue::SseBody`] for SSE), which
//!    encodes everything ready into one chunk per write.
//!
//! A REST publish (`POST /rooms/{room}/messages`) enters at step 2: the handler sends the
//! same `Publish` and answers with the sequence number. With Redis configured, step 3 goes
//! through the bus ([`redis_bus`]): Redis numbers the event and publishes it to every node,
//! whose broker receives it as [`redis_bus::FromBus`] and fans it out to its own
//! subscribers (`room_broker/bus.rs`).
//!
//! # Dependencies point one way
//!
//! Routes (in `courier`) use actors; actors use the stores ([`db`], [`stores`]) and the
//! leaf modules ([`protocol`], [`client_queue`], [`mailbox`], [`metrics`], [`clock`]). No
//! module imports a module that imports it back (checked by a test in `tests/api`).

pub mod access;
pub mod blocking;
pub mod cache;
pub mod client_queue;
pub mod clock;
pub mod db;
pub mod db_executor;
pub mod job_worker;
pub mod mailbox;
pub mod metrics;
pub mod protocol;
pub mod rate_limit;
pub mod redis_bus;
pub mod room_broker;
pub mod sse_feed;
pub mod stores;
pub mod upload_store;
pub mod ws_frames;
pub mod ws_session;

pub use mongodb;
