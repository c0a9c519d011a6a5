//! What the tests share, by concern: a server in the test process ([`app`]), the real
//! services ([`services`]), loopback servers around courier ([`network`]), WebSocket and
//! SSE clients ([`ws`], [`sse`]), an SMTP sink ([`smtp`]) and the binary as a process of
//! its own ([`process`]), and headless Chromium ([`browser`]).

pub mod app;
pub mod browser;
pub mod network;
pub mod own_redis;
pub mod process;
pub mod services;
pub mod smtp;
pub mod sse;
pub mod ws;

pub use app::*;
pub use network::*;
pub use own_redis::*;
pub use process::*;
pub use services::*;
pub use smtp::*;
pub use sse::*;
pub use ws::*;

/// Longest a test waits for one frame or event.
pub const RECV_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);
