//! courier: an actor-based realtime messaging server on actix.
//!
//! The binary (`src/main.rs`) is thin: it loads [`config::Config`], builds a
//! [`startup::Application`] and runs it until a signal stops it. Tests do the same with a
//! port-0 listener.

pub mod auth;
pub mod body_deadline;
pub mod client_budgets;
pub mod config;
pub mod cors_gate;
pub mod error;
pub mod http_client;
pub mod logging;
pub mod metrics;
pub mod multipart;
pub mod routes;
pub mod secret;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod upgrade;
