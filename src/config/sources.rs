//! Where values come from: the TOML files (built in, or on disk under `APP_CONFIG_DIR`),
//! `.env`, and the process environment; and which of them a value came from.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::settings;
use super::ConfigError;

/// The built-in copies of the configuration files, used when a file is not on disk.
const BUILTIN_FILES: &[(&str, &str)] = &[
    ("default", include_str!("../../config/default.toml")),
    ("local", include_str!("../../config/local.toml")),
    ("production", include_str!("../../config/production.toml")),
    ("test", include_str!("../../config/test.toml")),
];

/// The inputs of configuration loading; `Sources::from_process` reads the real ones.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directory holding on-disk overrides of the TOML files (may not exist).
    pub config_dir: Option<PathBuf>,
    /// The `.env` file to read (may not exist).
    pub env_file: Option<PathBuf>,
    /// The process environment.
    pub env: HashMap<String, String>,
}

impl Sources {
    /// The real inputs: `APP_CONFIG_DIR` (default `config`), `./.env` and the process
    /// environment.
    pub fn from_process() -> Self {
        let env: HashMap<String, String> = std::env::vars().collect();
        let config_dir = env
            .get(settings::APP_CONFIG_DIR.name)
            .filter(|d| !d.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                settings::APP_CONFIG_DIR
                    .default
                    .unwrap_or("config")
                    .to_owned()
            });
        Self {
            config_dir: Some(PathBuf::from(config_dir)),
            env_file: Some(PathBuf::from(".env")),
            env,
        }
    }
}

/// Where a value came from, for `courier config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Not set anywhere; the setting has no value.
    Unset,
    /// The setting's declared default.
    Default,
    /// A TOML file (built in or on disk).
    File(String),
    /// The `.env` file.
    DotEnv,
    /// The process environment.
    Environment,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unset => f.write_str("unset"),
            Self::Default => f.write_str("default"),
            Self::File(name) => f.write_str(name),
            Self::DotEnv => f.write_str(".env"),
            Self::Environment => f.write_str("environment"),
        }
    }
}

/// The layers, lowest first: declared defaults, TOML files, `.env`, the environment.
#[derive(Default)]
pub(super) struct Layers {
    /// TOML tables in order; later wins.
    pub(super) files: Vec<TomlLayer>,
    pub(super) dotenv: HashMap<String, String>,
    pub(super) env: HashMap<String, String>,
}

pub(super) struct TomlLayer {
    pub(super) name: String,
    pub(super) table: toml::Table,
}

impl Layers {
    /// The raw value of a variable and its source, ignoring empty strings.
    pub(super) fn lookup(&self, name: &str) -> Option<(String, Source)> {
        if let Some(v) = self.env.get(name).filter(|v| !v.is_empty()) {
            return Some((v.clone(), Source::Environment));
        }
        if let Some(v) = self.dotenv.get(name).filter(|v| !v.is_empty()) {
            return Some((v.clone(), Source::DotEnv));
        }
        let key = name.to_ascii_lowercase();
        for layer in self.files.iter().rev() {
            if let Some(value) = layer.table.get(&key) {
                let raw = plain(value);
                if raw.is_empty() {
                    return None;
                }
                return Some((raw, Source::File(layer.name.clone())));
            }
        }
        settings::ALL
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.default)
            .map(|d| (d.to_owned(), Source::Default))
    }

    /// Every namespace any layer configures: `NAMESPACE_<NAME>_<OPTION>` variables (the
    /// name lower-cased) and `[namespaces.<name>]` tables.
    pub(super) fn namespace_names(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> = self
            .env
            .keys()
            .chain(self.dotenv.keys())
            .filter_map(|k| settings::namespace_variable(k).map(|(ns, _)| ns))
            .collect();
        for layer in &self.files {
            if let Some(toml::Value::Table(namespaces)) = layer.table.get(NAMESPACES_TABLE) {
                names.extend(namespaces.keys().cloned());
            }
        }
        names
    }

    /// The raw value of option `setting` of namespace `ns`, and its source.
    pub(super) fn namespace_lookup(
        &self,
        ns: &str,
        setting: &settings::Setting,
    ) -> Option<(String, Source)> {
        let key = settings::namespace_key(setting);
        let var = format!(
            "NAMESPACE_{}_{}",
            ns.to_ascii_uppercase(),
            key.to_ascii_uppercase()
        );
        if let Some(v) = self.env.get(&var).filter(|v| !v.is_empty()) {
            return Some((v.clone(), Source::Environment));
        }
        if let Some(v) = self.dotenv.get(&var).filter(|v| !v.is_empty()) {
            return Some((v.clone(), Source::DotEnv));
        }
        for layer in self.files.iter().rev() {
            let value = layer
                .table
                .get(NAMESPACES_TABLE)
                .and_then(|t| t.get(ns))
                .and_then(|t| t.get(key));
            if let Some(value) = value {
                return Some((plain(value), Source::File(layer.name.clone())));
            }
        }
        setting.default.map(|d| (d.to_owned(), Source::Default))
    }

    /// The suffixes of every `DATABASE_URL_<SUFFIX>` any layer sets, upper case, sorted.
    pub(super) fn database_url_suffixes(&self) -> Vec<String> {
        let mut suffixes: Vec<String> = self
            .env
            .keys()
            .chain(self.dotenv.keys())
            .filter_map(|k| k.strip_prefix("DATABASE_URL_"))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for layer in &self.files {
            suffixes.extend(
                layer
                    .table
                    .keys()
                    .filter_map(|k| k.strip_prefix("database_url_"))
                    .map(str::to_ascii_uppercase),
            );
        }
        suffixes.sort();
        suffixes.dedup();
        suffixes
    }
}

/// The TOML table that holds the namespaces: `[namespaces.<name>]`.
pub const NAMESPACES_TABLE: &str = "namespaces";

/// A plain TOML value as text (tables and arrays are refused when the file is read).
fn plain(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => String::new(),
    }
}

pub(super) fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(e) if e.not_found() => return Ok(HashMap::new()),
        Err(e) => {
            return Err(ConfigError::File {
                file: path.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    let mut map = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| ConfigError::File {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        map.insert(k, v);
    }
    Ok(map)
}

/// Reads `{stem}.toml` from `dir`, or its built-in copy. Every key must be a setting's
/// (unknown keys are refused, to catch typos) and hold a plain value.
pub(super) fn read_toml(dir: Option<&Path>, stem: &str) -> Result<TomlLayer, ConfigError> {
    let on_disk = dir.map(|d| d.join(format!("{stem}.toml")));
    let (name, text) = match on_disk.filter(|p| p.is_file()) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                file: path.display().to_string(),
                reason: e.to_string(),
            })?;
            (path.display().to_string(), text)
        }
        None => (
            format!("built-in {stem}.toml"),
            builtin_file(stem).to_owned(),
        ),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::File {
            file: name.clone(),
            reason: e.message().to_owned(),
        })?;
    for (key, value) in &table {
        if key == NAMESPACES_TABLE {
            check_namespaces(&name, value)?;
            continue;
        }
        if settings::by_toml_key(key).is_none() {
            return Err(ConfigError::File {
                file: name.clone(),
                reason: format!("unknown setting `{key}`"),
            });
        }
        if value.is_table() || value.is_array() {
            return Err(ConfigError::File {
                file: name.clone(),
                reason: format!("setting `{key}` must be a plain value"),
            });
        }
    }
    Ok(TomlLayer { name, table })
}

/// `[namespaces.<name>]` tables hold only the namespace options, as plain values.
fn check_namespaces(file: &str, value: &toml::Value) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::File {
        file: file.to_owned(),
        reason,
    };
    let toml::Value::Table(namespaces) = value else {
        return Err(bad(
            "`namespaces` must be a table of [namespaces.<name>] tables".into(),
        ));
    };
    for (ns, options) in namespaces {
        let toml::Value::Table(options) = options else {
            return Err(bad(format!("[namespaces.{ns}] must be a table")));
        };
        for (key, value) in options {
            let known = settings::NAMESPACE_OPTIONS.iter().any(|(_, k)| k == key);
            if !known {
                return Err(bad(format!(
                    "unknown namespace option `{key}` in [namespaces.{ns}]"
                )));
            }
            if value.is_table() || value.is_array() {
                return Err(bad(format!("namespaces.{ns}.{key} must be a plain value")));
            }
        }
    }
    Ok(())
}

/// The built-in copy of `{stem}.toml`.
pub fn builtin_file(stem: &str) -> &'static str {
    BUILTIN_FILES
        .iter()
        .find(|(n, _)| *n == stem)
        .map(|(_, t)| *t)
        .unwrap_or_default()
}
