//! Load generator for courier's realtime endpoints.
//!
//! - `fanout`: receivers join one room over the JSON WebSocket protocol, publishers publish into
//!   it at a fixed aggregate rate; reports delivery, loss and end-to-end latency.
//! - `idle`: holds many WebSocket connections and reports the server's memory per connection.
//! - `sse`: holds many Server-Sent Events streams and reports the same.
//! - `rooms`: many rooms of a few members spread over nodes; deliveries per node.
//!
//! Every mode prints a human-readable block and one `RESULT {json}` line. Every wait is bounded;
//! the exit status is non-zero only for invalid arguments.

mod common;
mod fanout;
mod hold;
mod idle;
mod rooms;
mod soak;
mod sse;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for courier (WebSocket fan-out, idle WebSocket connections, SSE subscribers)"
)]
struct Cli {
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Room fan-out: C receivers, P publishers at an aggregate rate; delivery, loss, latency.
    Fanout(fanout::Args),
    /// Hold N idle WebSocket connections; server memory per connection.
    Idle(idle::Args),
    /// Hold N SSE streams; events received and server memory per subscriber.
    Sse(sse::Args),
    /// Many rooms of a few members over one or more nodes; deliveries per node.
    Rooms(rooms::Args),
    /// Clients in many rooms for a long time, a share leaving and coming back each period.
    Soak(soak::Args),
}

fn main() -> ExitCode {
    common::start_clock();
    let mut cli = Cli::parse();
    let checked = match &mut cli.mode {
        Mode::Fanout(a) => a.validate().map(|_| a.fds_needed()),
        Mode::Idle(a) => a.validate().map(|_| a.fds_needed()),
        Mode::Sse(a) => a.validate().map(|_| a.fds_needed()),
        Mode::Rooms(a) => a.validate().map(|_| a.fds_needed()),
        Mode::Soak(a) => a.validate().map(|_| a.fds_needed()),
    };
    let fds_needed = match checked {
        Ok(n) => n,
        Err(msg) => Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit(),
    };
    common::raise_fd_limit(fds_needed);

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads as usize)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.mode {
        Mode::Fanout(a) => rt.block_on(fanout::run(a)),
        Mode::Idle(a) => rt.block_on(idle::run(a)),
        Mode::Sse(a) => rt.block_on(sse::run(a)),
        Mode::Rooms(a) => rt.block_on(rooms::run(a)),
        Mode::Soak(a) => rt.block_on(soak::run(a)),
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    ExitCode::SUCCESS
}
