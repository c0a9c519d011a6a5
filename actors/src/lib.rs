//! courier's actors and the storage adapters they own.
//!
//! Every concern that owns state is an actix actor defined here, one per file, with its
//! messages at the top. HTTP, WebSocket and SSE handlers in the `courier` crate never share
//! mutable state: they send these actors typed messages and await the replies.
//!
//! [`stores`] holds the connections the actors (and the readiness probe) use: the Postgres
//! and Redis pools and the MongoDB client, each with timeouts from configuration.

pub mod stores;

pub use mongodb;
