//! Configuration: layering, validation, redaction, and the `courier config` command.

use std::collections::HashMap;
use std::process::Command;

use courier::config::{Config, ConfigError, Environment, Sources};

fn load(env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load_from(Sources {
        config_dir: None,
        env_file: None,
        env: env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    })
}

fn invalid_variable(env: &[(&str, &str)]) -> (String, String) {
    match load(env) {
        Err(ConfigError::Invalid { variable, .. }) | Err(ConfigError::Missing { variable, .. }) => {
            let message = load(env).unwrap_err().to_string();
            (variable, message)
        }
        other => panic!("expected a validation error for {env:?}, got {other:?}"),
    }
}

#[test]
fn defaults_describe_a_local_embedded_server() {
    let config = load(&[]).expect("defaults are valid");
    assert_eq!(config.env, Environment::Local);
    assert_eq!(config.host, "127.0.0.1");
    assert_eq!(config.port, 8000);
    assert_eq!(config.app_name, "courier");
    assert_eq!(config.data_dir.to_str(), Some("./data"));
    assert!(config.database_url.is_none());
    assert!(config.redis_url.is_none());
    assert!(config.mongodb_uri.is_none());
    assert!(config.upstream_url.is_none());
}

#[test]
fn later_layers_win_file_then_dotenv_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("local.toml"),
        "app_name = \"fromfile\"\napp_port = 9001\njwt_secret = \"s\"\n",
    )
    .unwrap();
    let dotenv = dir.path().join(".env");
    std::fs::write(&dotenv, "APP_NAME=fromdotenv\nLOG_LEVEL=DEBUG\n").unwrap();
    let sources = |env: &[(&str, &str)], with_dotenv: bool| Sources {
        config_dir: Some(dir.path().to_path_buf()),
        env_file: with_dotenv.then(|| dotenv.clone()),
        env: env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect::<HashMap<_, _>>(),
    };

    let c = Config::load_from(sources(&[], false)).unwrap();
    assert_eq!(c.app_name, "fromfile");
    assert_eq!(c.port, 9001);

    let c = Config::load_from(sources(&[], true)).unwrap();
    assert_eq!(c.app_name, "fromdotenv");
    assert_eq!(c.log_level, "DEBUG");
    assert_eq!(
        c.port, 9001,
        "values .env does not set still come from the file"
    );

    let c = Config::load_from(sources(&[("APP_NAME", "fromenv")], true)).unwrap();
    assert_eq!(c.app_name, "fromenv");

    let report = c.render();
    assert!(
        report.contains("APP_NAME") && report.contains("(environment)"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("LOG_LEVEL") && l.ends_with("(.env)")),
        "{report}"
    );
}

#[test]
fn app_env_selects_the_environment_file() {
    let c = load(&[("APP_ENV", "test")]).unwrap();
    assert_eq!(c.env, Environment::Test);
    assert_eq!(c.port, 0, "config/test.toml binds a free port");
    let c = load(&[("APP_ENV", "dev")]).unwrap();
    assert_eq!(c.env, Environment::Local);
    let c = load(&[
        ("APP_ENV", "prod"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ])
    .unwrap();
    assert_eq!(c.env, Environment::Production);
    assert_eq!(c.host, "0.0.0.0");
}

#[test]
fn every_invalid_value_names_its_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("APP_ENV", "banana")], "APP_ENV"),
        (&[("APP_PORT", "eighty")], "APP_PORT"),
        (&[("APP_PORT", "70000")], "APP_PORT"),
        (&[("APP_DEBUG", "maybe")], "APP_DEBUG"),
        (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
        (&[("APP_NAME", "has spaces")], "APP_NAME"),
        (&[("APP_HOST", "not a host!")], "APP_HOST"),
        (&[("APP_WORKERS", "-1")], "APP_WORKERS"),
        (&[("DATABASE_URL", "not a url")], "DATABASE_URL"),
        (&[("DATABASE_URL", "redis://h/0")], "DATABASE_URL"),
        (
            &[("DATABASE_URL_ANALYTICS", "http://h/db")],
            "DATABASE_URL_ANALYTICS",
        ),
        (&[("MYSQL_URL", "postgres://h/db")], "MYSQL_URL"),
        (&[("REDIS_URL", "http://localhost:6379")], "REDIS_URL"),
        (&[("REDIS_URL_CACHE", "redis://")], "REDIS_URL_CACHE"),
        (&[("REDIS_URL_SESSION", "::")], "REDIS_URL_SESSION"),
        (&[("MONGODB_URI", "mongo://h")], "MONGODB_URI"),
        (&[("UPSTREAM_URL", "ftp://h/data")], "UPSTREAM_URL"),
        (&[("DB_POOL_MAX_SIZE", "0")], "DB_POOL_MAX_SIZE"),
        (
            &[("DB_POOL_MIN_IDLE", "50"), ("DB_POOL_MAX_SIZE", "10")],
            "DB_POOL_MIN_IDLE",
        ),
        (
            &[("HTTP_CLIENT_TIMEOUT_MS", "soon")],
            "HTTP_CLIENT_TIMEOUT_MS",
        ),
        (&[("MAX_BODY_BYTES", "0")], "MAX_BODY_BYTES"),
        (&[("SHUTDOWN_TIMEOUT_SECS", "1e3")], "SHUTDOWN_TIMEOUT_SECS"),
        (&[("APP_ENV", "production")], "JWT_SECRET"),
        (
            &[("APP_ENV", "production"), ("JWT_SECRET", "short")],
            "JWT_SECRET",
        ),
        (
            &[
                ("APP_ENV", "production"),
                ("JWT_SECRET", courier::config::DEVELOPMENT_JWT_SECRET),
            ],
            "JWT_SECRET",
        ),
    ];
    for (env, variable) in cases {
        let (named, message) = invalid_variable(env);
        assert_eq!(&named, variable, "for {env:?}: {message}");
        assert!(
            message.contains(variable),
            "message names {variable}: {message}"
        );
        assert!(
            message.contains("expected"),
            "message says what is accepted: {message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn one_relational_store_is_chosen_from_database_url_or_mysql_url() {
    let url = |c: Config| c.database_url.map(|u| u.expose().to_owned());
    // MYSQL_URL alone selects MySQL/MariaDB (the Python driver's scheme is accepted).
    let c = load(&[("MYSQL_URL", "mysql+aiomysql://app:pw@db:3306/app")]).unwrap();
    assert_eq!(url(c).as_deref(), Some("mysql://app:pw@db:3306/app"));
    // So does DATABASE_URL with a mysql:// URL, and the same URL in both is accepted.
    let same = "mysql://app:pw@db:3306/app";
    let c = load(&[
        ("DATABASE_URL", same),
        ("MYSQL_URL", "mysql://app@db/app?require_ssl=true"),
    ])
    .unwrap();
    assert_eq!(c.database_backend(), "mysql");
    assert!(
        c.render()
            .contains("# relational store: mysql (from DATABASE_URL)"),
        "courier config names the backend"
    );
    assert_eq!(url(c).as_deref(), Some(same));
    assert_eq!(load(&[]).unwrap().database_backend(), "sqlite");
    // Two different stores: an error that names both, without their passwords.
    let both = [
        ("DATABASE_URL", "postgres://app:secret1@pg:5432/app"),
        ("MYSQL_URL", "mysql://app:secret2@my:3306/app"),
    ];
    let (variable, message) = invalid_variable(&both);
    assert_eq!(variable, "MYSQL_URL");
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(
        message.contains("pg:5432") && message.contains("my:3306"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn secrets_are_never_echoed() {
    let (_, message) = invalid_variable(&[("DATABASE_URL", "mongodb://app:hunter2@db/app")]);
    assert!(!message.contains("hunter2"), "{message}");
    let (_, message) =
        invalid_variable(&[("APP_ENV", "production"), ("JWT_SECRET", "tiny-secret")]);
    assert!(!message.contains("tiny-secret"), "{message}");

    let c = load(&[
        (
            "DATABASE_URL",
            "postgresql+asyncpg://app:hunter2@db:5432/app",
        ),
        ("REDIS_URL", "redis://:sesame@cache:6379/0"),
        ("JWT_SECRET", "a-secret-that-must-not-print"),
    ])
    .unwrap();
    let shown = c.render();
    for secret in ["hunter2", "sesame", "a-secret-that-must-not-print"] {
        assert!(!shown.contains(secret), "{secret} printed:\n{shown}");
        assert!(!format!("{c:?}").contains(secret), "{secret} in Debug");
    }
    assert!(shown.contains("postgres://app:****@db:5432/app"), "{shown}");
    // Python's driver-qualified scheme is accepted and handed to the driver plainly.
    assert_eq!(
        c.database_url.unwrap().expose(),
        "postgres://app:hunter2@db:5432/app"
    );
}

#[test]
fn a_bad_configuration_file_is_reported_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("local.toml"), "app_prot = 1\n").unwrap();
    let err = Config::load_from(Sources {
        config_dir: Some(dir.path().to_path_buf()),
        env_file: None,
        env: HashMap::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("local.toml") && err.contains("app_prot"),
        "{err}"
    );

    std::fs::write(dir.path().join("local.toml"), "app_port = \n").unwrap();
    let err = Config::load_from(Sources {
        config_dir: Some(dir.path().to_path_buf()),
        env_file: None,
        env: HashMap::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("local.toml"), "{err}");
}

fn courier_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn the_binary_refuses_a_bad_app_env_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = courier_command(dir.path())
        .env("APP_ENV", "banana")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("APP_ENV") && stderr.contains("banana"),
        "{stderr}"
    );
}

#[test]
fn courier_config_prints_the_effective_configuration_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "REDIS_URL=redis://:sesame@127.0.0.1:6379/0\n",
    )
    .unwrap();
    let out = courier_command(dir.path())
        .arg("config")
        .env("APP_PORT", "8123")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("APP_PORT")
            && l.contains("8123")
            && l.contains("(environment)")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("REDIS_URL ") && l.contains("****") && l.contains("(.env)")),
        "{stdout}"
    );
    assert!(
        stdout.contains("JWT_SECRET") && stdout.contains("<redacted>"),
        "{stdout}"
    );
    assert!(!stdout.contains("sesame"), "{stdout}");
    assert!(
        !stdout.contains(courier::config::DEVELOPMENT_JWT_SECRET),
        "{stdout}"
    );
}

#[test]
fn env_example_is_a_valid_configuration() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    Config::load_from(Sources {
        config_dir: None,
        env_file: Some(example),
        env: HashMap::new(),
    })
    .expect(".env.example loads");
}

#[test]
fn courier_token_mints_a_token_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = courier_command(dir.path())
        .args(["token", "--user", "alice", "--ttl", "60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let secret = load(&[]).unwrap().jwt_secret;
    let claims = courier::auth::verify(&secret, token.trim()).expect("a valid token");
    assert_eq!(claims.sub, "alice");
    assert!(claims.exp > claims.iat && claims.exp - claims.iat == 60);

    let out = courier_command(dir.path())
        .args(["token", "--user", ""])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user name"));
}

/// The settings a document names: every `UPPER_CASE` word (or `DATABASE_URL_<SUFFIX>`)
/// in `text` that looks like a variable.
fn variables_in(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '<' | '>')))
        .filter(|w| {
            w.len() > 2
                && w.contains('_')
                && w.starts_with(|c: char| c.is_ascii_uppercase())
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_<>".contains(c))
        })
        .map(str::to_owned)
        .collect()
}

fn project_file(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .expect("project file")
}

#[test]
fn readme_configuration_table_lists_exactly_the_settings() {
    use courier::config::settings::ALL;
    let readme = project_file("README.md");
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .expect("README has a Configuration section");
    let table: String = section
        .lines()
        .skip_while(|l| !l.starts_with("| variable"))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .collect::<Vec<_>>()
        .join(" ");
    let named = variables_in(&table);
    for s in ALL {
        assert!(
            named.contains(s.name),
            "README's configuration table misses {}",
            s.name
        );
    }
    for name in &named {
        assert!(
            ALL.iter().any(|s| s.name == name),
            "README's configuration table lists {name}, which is not a setting"
        );
    }
}

#[test]
fn env_example_lists_exactly_the_settings() {
    use courier::config::settings::ALL;
    let example = project_file(".env.example");
    let named = variables_in(&example);
    for s in ALL {
        assert!(named.contains(s.name), ".env.example misses {}", s.name);
    }
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some((name, _)) = line.split_once('=') {
            if variables_in(name).contains(name) && !name.starts_with("DATABASE_URL_") {
                assert!(
                    ALL.iter().any(|s| s.name == name),
                    ".env.example sets {name}, which is not a setting"
                );
            }
        }
    }
}
