//! The security settings: the namespaces (who may do what in which room), the allowed
//! origins, the server API keys and the token signing secret, which production refuses
//! when it is short or one of the repository's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use courier_actors::access::{AccessPolicy, Level, Namespace};
use url::Url;

use super::resolve::{invalid, parse_bool, Resolver};
use super::settings::{self as s, Setting};
use super::sources::{builtin_file, Source};
use super::values::{quote, Secret};
use super::{
    ConfigError, Environment, Origins, DEVELOPMENT_JWT_SECRET, MIN_PRODUCTION_SECRET_BYTES,
};
use crate::auth::ApiKeys;

impl Resolver {
    /// The namespaces, and what rooms of other namespaces follow.
    pub(super) fn access(&mut self) -> Result<Arc<AccessPolicy>, ConfigError> {
        let fallback = self.text(&s::NAMESPACE_FALLBACK, |v| matches!(v, "open" | "closed"))?;
        let mut namespaces = BTreeMap::new();
        for ns in self.layers.namespace_names() {
            let level = |r: &mut Self, setting: &Setting| -> Result<Level, ConfigError> {
                let raw = r.namespace_value(&ns, setting);
                Level::parse(&raw).ok_or_else(|| {
                    invalid(
                        &namespace_var(&ns, setting),
                        quote(&raw),
                        &setting.kind.expected(),
                    )
                })
            };
            let flag = |r: &mut Self, setting: &Setting| -> Result<bool, ConfigError> {
                let raw = r.namespace_value(&ns, setting);
                parse_bool(&raw).ok_or_else(|| {
                    invalid(
                        &namespace_var(&ns, setting),
                        quote(&raw),
                        &setting.kind.expected(),
                    )
                })
            };
            let history_size = match self
                .layers
                .namespace_lookup(&ns, &s::NAMESPACE_HISTORY_SIZE)
            {
                None => None,
                Some(_) => {
                    let raw = self.namespace_value(&ns, &s::NAMESPACE_HISTORY_SIZE);
                    let (min, max) = s::NAMESPACE_HISTORY_SIZE.kind.range().expect("numeric");
                    let n = raw
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n));
                    Some(n.ok_or_else(|| {
                        invalid(
                            &namespace_var(&ns, &s::NAMESPACE_HISTORY_SIZE),
                            quote(&raw),
                            &s::NAMESPACE_HISTORY_SIZE.kind.expected(),
                        )
                    })? as usize)
                }
            };
            let namespace = Namespace {
                subscribe: level(self, &s::NAMESPACE_SUBSCRIBE)?,
                publish: level(self, &s::NAMESPACE_PUBLISH)?,
                presence: level(self, &s::NAMESPACE_PRESENCE)?,
                history: level(self, &s::NAMESPACE_HISTORY)?,
                history_size,
                presence_events: flag(self, &s::NAMESPACE_PRESENCE_EVENTS)?,
                anonymous: flag(self, &s::NAMESPACE_ANONYMOUS)?,
            };
            namespaces.insert(ns, namespace);
        }
        Ok(Arc::new(AccessPolicy {
            namespaces,
            fallback: (fallback == "open").then(Namespace::open),
        }))
    }

    /// A namespace option's raw value (its default when no layer sets it), recorded.
    fn namespace_value(&mut self, ns: &str, setting: &Setting) -> String {
        let (raw, source) = self
            .layers
            .namespace_lookup(ns, setting)
            .unwrap_or_else(|| (String::new(), Source::Unset));
        self.report
            .push((namespace_var(ns, setting), raw.clone(), source));
        raw
    }

    /// A comma-separated list of origins, or `*`.
    pub(super) fn origins(&mut self, setting: &Setting) -> Result<Origins, ConfigError> {
        let Some(raw) = self.raw(setting.name) else {
            self.record(setting.name, "unset".into());
            return Ok(Origins::List(Vec::new()));
        };
        let origins = if raw.trim() == "*" {
            Origins::Any
        } else {
            let list: Vec<String> = raw
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            let valid = list.iter().all(|o| {
                Url::parse(o).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/"
                })
            });
            if !valid {
                return Err(invalid(setting.name, quote(&raw), &setting.kind.expected()));
            }
            Origins::List(list)
        };
        self.record(setting.name, raw);
        Ok(origins)
    }

    pub(super) fn api_keys(&mut self) -> ApiKeys {
        let keys: Vec<Secret> = self
            .raw(s::API_KEYS.name)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| Secret::new(k.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let shown = if keys.is_empty() {
            "unset".to_owned()
        } else {
            format!("<{} keys, redacted>", keys.len())
        };
        self.record(s::API_KEYS.name, shown);
        ApiKeys::new(&keys)
    }

    pub(super) fn jwt_secret(&mut self, env: Environment) -> Result<Secret, ConfigError> {
        let production = env == Environment::Production;
        let in_production = format!(
            "a random secret of at least {MIN_PRODUCTION_SECRET_BYTES} bytes in production"
        );
        let secret = self
            .raw(s::JWT_SECRET.name)
            .ok_or_else(|| ConfigError::Missing {
                variable: s::JWT_SECRET.name.into(),
                expected: if production {
                    in_production.clone()
                } else {
                    s::JWT_SECRET.kind.expected()
                },
            })?;
        if production
            && (known_secrets().contains(&secret) || secret.len() < MIN_PRODUCTION_SECRET_BYTES)
        {
            return Err(invalid(
                s::JWT_SECRET.name,
                "<redacted>".into(),
                &format!(
                    "{in_production}, not one of the secrets in courier's repository (development, test, .env.example)"
                ),
            ));
        }
        self.record(s::JWT_SECRET.name, "<redacted>".into());
        Ok(Secret::new(secret))
    }
}

/// `NAMESPACE_<NAME>_<OPTION>` for namespace `ns` and option `setting`.
fn namespace_var(ns: &str, setting: &Setting) -> String {
    format!(
        "NAMESPACE_{}_{}",
        ns.to_ascii_uppercase(),
        s::namespace_key(setting).to_ascii_uppercase()
    )
}

/// Every `JWT_SECRET` that appears in this repository (the development and test secrets
/// of the built-in TOML files, and `.env.example`'s placeholder): production refuses them.
pub fn known_secrets() -> Vec<String> {
    let mut secrets: Vec<String> = ["local", "test", "default", "production"]
        .into_iter()
        .filter_map(|stem| {
            let table: toml::Table = builtin_file(stem).parse().ok()?;
            table.get("jwt_secret")?.as_str().map(str::to_owned)
        })
        .collect();
    secrets.extend(
        include_str!("../../.env.example")
            .lines()
            .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix("JWT_SECRET="))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()),
    );
    secrets.push(DEVELOPMENT_JWT_SECRET.to_owned());
    secrets
}
