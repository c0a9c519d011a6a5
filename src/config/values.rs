//! Values that need care when shown: service addresses (their passwords are never printed)
//! and secrets; and the checks of the text settings.

use std::fmt;

use url::Url;

/// A database or cache address, with a form that hides its password.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    url: Url,
}

impl ServiceUrl {
    pub(super) fn new(url: Url) -> Self {
        Self { url }
    }

    /// The full address, password included; hand it only to the driver.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The parsed address.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The address with its password replaced by `****`, safe to log.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `url` with its password replaced by `****`.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("****"));
    }
    shown.to_string()
}

pub use crate::secret::Secret;

/// URLs in `raw` (one, or several separated by commas) with any user information before
/// an `@` replaced by `****`, whether or not they parse: an error message about a URL that
/// is wrong in some other way must still not print its password.
pub fn redact_url_text(raw: &str) -> String {
    raw.split(',')
        .map(|item| {
            let Some(scheme_end) = item.find("://") else {
                return item.to_owned();
            };
            let rest = &item[scheme_end + 3..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{}****{}", &item[..scheme_end + 3], &rest[at..]),
                None => item.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A raw value as an error message shows it.
pub fn quote(raw: &str) -> String {
    format!("{raw:?}")
}

/// Maps the driver-qualified schemes of Python configurations (`postgresql+asyncpg://`,
/// `mysql+aiomysql://`) to the plain ones the Rust drivers expect.
pub fn normalise_scheme(url: Url) -> Url {
    let plain = match url.scheme() {
        "postgresql+asyncpg" | "postgresql" => "postgres",
        "mysql+aiomysql" | "mysql" => "mysql",
        _ => return url,
    };
    // `Url::set_scheme` refuses some special-scheme changes; rebuild from text instead.
    let text = url.as_str();
    let rest = &text[url.scheme().len()..];
    let mut plain = Url::parse(&format!("{plain}{rest}")).unwrap_or(url);
    if plain.scheme() == "mysql" {
        drop_charset(&mut plain);
    }
    plain
}

/// Removes `charset` from a MySQL URL's query: Python URLs carry `?charset=utf8mb4`, which
/// the Rust driver does not accept; its connections always use utf8mb4.
fn drop_charset(url: &mut Url) {
    if !url.query_pairs().any(|(k, _)| k == "charset") {
        return;
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "charset")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
}

/// `raw` as an http(s) URL with a host.
pub fn http_url(raw: &str) -> Option<Url> {
    Url::parse(raw.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// A DNS host name.
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A level or an env_logger filter such as `info,courier=debug`.
pub fn valid_log_filter(s: &str) -> bool {
    const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];
    let level_ok = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    !s.trim().is_empty()
        && s.split(',')
            .all(|directive| match directive.split_once('=') {
                Some((target, level)) => !target.trim().is_empty() && level_ok(level),
                None => level_ok(directive),
            })
}

/// `APP_NAME`: 1-64 ASCII letters, digits, '-' or '_', starting with a letter.
pub fn valid_app_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_mysql_url_loses_its_charset_and_keeps_the_rest() {
        let url = Url::parse("mysql+aiomysql://u:p@h:3306/db?charset=utf8mb4").unwrap();
        assert_eq!(normalise_scheme(url).as_str(), "mysql://u:p@h:3306/db");
        let url = Url::parse("mysql://u@h/db?charset=utf8mb4&require_ssl=true").unwrap();
        assert_eq!(
            normalise_scheme(url).as_str(),
            "mysql://u@h/db?require_ssl=true"
        );
    }

    #[test]
    fn python_driver_schemes_are_normalised() {
        let url = Url::parse("postgresql+asyncpg://u:p@localhost:5432/db").unwrap();
        assert_eq!(
            normalise_scheme(url).as_str(),
            "postgres://u:p@localhost:5432/db"
        );
    }

    #[test]
    fn log_filters() {
        assert!(valid_log_filter("INFO"));
        assert!(valid_log_filter("warn,courier=debug"));
        assert!(!valid_log_filter("loud"));
        assert!(!valid_log_filter("courier=loud"));
    }

    #[test]
    fn passwords_in_urls_that_do_not_parse_are_redacted_too() {
        assert_eq!(redact_url_text("http://u:s3cret@"), "http://****@");
        assert_eq!(
            redact_url_text("http://a:pw@h/x?y=1@2,https://h2/p"),
            "http://****@h/x?y=1@2,https://h2/p"
        );
        assert_eq!(redact_url_text("not a url"), "not a url");
    }

    #[test]
    fn passwords_are_redacted() {
        let url = Url::parse("redis://user:hunter2@cache:6379/0").unwrap();
        assert_eq!(redact_url(&url), "redis://user:****@cache:6379/0");
    }
}
