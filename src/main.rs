//! The `courier` command: runs the server, prints its configuration.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use courier::config::Config;
use courier::startup::Application;
use courier::telemetry;

/// courier: an actor-based realtime messaging server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration, secrets redacted, with where each value came from.
    Config {
        /// Instead, describe every setting: what it is for, its default, what it accepts.
        #[arg(long, conflicts_with = "defaults")]
        explain: bool,
        /// Instead, print the defaults as config/default.toml holds them.
        #[arg(long)]
        defaults: bool,
    },
    /// Apply the database migrations (Postgres at DATABASE_URL, else the embedded SQLite
    /// file) and exit; the server also applies them at start-up.
    Migrate,
    /// Mint a token (JWT, HS256, signed with JWT_SECRET): a connection token, or with
    /// --room a subscription token for that room alone.
    Token {
        /// The user name the token carries (its `sub`).
        #[arg(long)]
        user: String,
        /// A subscription token for this room (claims `sub` and `room`).
        #[arg(long)]
        room: Option<String>,
        /// What the token allows, comma-separated (subscribe, publish, presence, history):
        /// in --room, or in the rooms matching --match.
        #[arg(long, value_delimiter = ',')]
        allow: Vec<String>,
        /// A room pattern (`*` matches anything) for a capability rule with --allow.
        #[arg(long = "match")]
        pattern: Option<String>,
        /// Roles, comma-separated (`admin` may use every room and admin route).
        #[arg(long, value_delimiter = ',')]
        role: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = courier::auth::DEFAULT_TOKEN_TTL_SECS)]
        ttl: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Config { explain, defaults }) = &cli.command {
        // These describe the settings themselves: they need no valid configuration.
        let text = match (explain, defaults) {
            (true, _) => Some(courier::config::settings::explain()),
            (_, true) => Some(courier::config::settings::default_toml()),
            _ => None,
        };
        if let Some(text) = text {
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("courier: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config { .. } => {
            let _ = std::io::stdout().write_all(config.render().as_bytes());
            ExitCode::SUCCESS
        }
        Command::Token {
            user,
            room,
            allow,
            pattern,
            role,
            ttl,
        } => match token_request(user, room, &allow, pattern, role, ttl)
            .and_then(|req| courier::auth::mint_token(&config.jwt_secret, &req))
        {
            Ok(token) => {
                let _ = writeln!(std::io::stdout(), "{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("courier: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve => serve(config),
        Command::Migrate => migrate(config),
    }
}

fn token_request(
    user: String,
    room: Option<String>,
    allow: &[String],
    pattern: Option<String>,
    roles: Vec<String>,
    ttl_secs: u64,
) -> Result<courier::auth::TokenRequest, courier::auth::AuthError> {
    use courier_actors::access::Action;
    let allow = allow
        .iter()
        .map(|a| {
            Action::parse(a.trim()).ok_or_else(|| {
                courier::auth::AuthError::Invalid(format!(
                    "--allow: unknown action {a:?} (subscribe, publish, presence, history)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(courier::auth::TokenRequest {
        user,
        ttl_secs,
        room,
        allow,
        pattern,
        roles,
    })
}

fn migrate(config: Config) -> ExitCode {
    let result = actix_rt::System::new().block_on(async move {
        std::fs::create_dir_all(&config.data_dir)?;
        let metrics = courier::metrics::Metrics::new(&config.app_name);
        let db = courier::startup::build_database(&config, &metrics, &Default::default());
        let applied = db.migrate().await?;
        anyhow::Ok((db.backend().name(), applied))
    });
    match result {
        Ok((backend, applied)) => {
            let mut out = std::io::stdout();
            if applied.is_empty() {
                let _ = writeln!(out, "{backend}: the schema is up to date");
            }
            for version in applied {
                let _ = writeln!(out, "{backend}: applied {version}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("courier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> ExitCode {
    telemetry::init_logging(&config.log_level);
    let result = actix_rt::System::new().block_on(async move {
        let app = Application::build(config).await?;
        app.run_until_stopped().await?;
        anyhow::Ok(())
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("courier stopped: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry::flush_logs();
    code
}
