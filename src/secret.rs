//! A secret string (a signing key, an API key, a password) that never prints: its `Debug`
//! is `<redacted>`, so configuration dumps and logs cannot leak it.

use std::fmt;

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself; hand it only to the code that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
