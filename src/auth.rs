//! Authentication: HS256 JSON Web Tokens signed with `JWT_SECRET`.
//!
//! A token's `sub` is the user's name. Clients send it as `?token=` (WebSockets, SSE) or
//! `Authorization: Bearer` (REST). `courier token --user NAME` mints one for local use.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::HttpRequest;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::error::AppError;

/// Lifetime of a token minted by `courier token` unless `--ttl` says otherwise.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Longest user name a token may carry.
pub const MAX_USER_NAME_LEN: usize = 64;

/// The claims courier reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user's name.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was sent.
    #[error("a token is required (?token= or Authorization: Bearer)")]
    Missing,
    /// The token is malformed, badly signed or expired.
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        AppError::Unauthorized(e.to_string())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `user`, valid for `ttl_secs`.
pub fn mint(secret: &Secret, user: &str, ttl_secs: u64) -> Result<String, AuthError> {
    validate_name(user)?;
    let iat = now();
    let claims = Claims {
        sub: user.to_owned(),
        iat,
        exp: iat + ttl_secs,
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))
}

/// Checks a token's signature and expiry and returns its claims.
pub fn verify(secret: &Secret, token: &str) -> Result<Claims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &validation,
    )
    .map_err(|e| AuthError::Invalid(e.to_string()))?;
    validate_name(&data.claims.sub)?;
    Ok(data.claims)
}

/// A user name: 1–64 printable characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_USER_NAME_LEN
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "user name must be 1-{MAX_USER_NAME_LEN} printable characters"
        )))
    }
}

/// The token a request carries: `Authorization: Bearer` first, then `?token=`.
pub fn token_from_request(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        if let Some(token) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            return Some(token.trim().to_owned());
        }
    }
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// The verified user of a request, if it sent a token; an invalid token is an error.
pub fn user_from_request(secret: &Secret, req: &HttpRequest) -> Result<Option<Claims>, AuthError> {
    match token_from_request(req) {
        None => Ok(None),
        Some(token) => verify(secret, &token).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let secret = Secret::new("s3cret-s3cret-s3cret-s3cret-s3cret".into());
        let token = mint(&secret, "alice", 60).unwrap();
        assert_eq!(verify(&secret, &token).unwrap().sub, "alice");
        let other = Secret::new("another-secret-another-secret-xx".into());
        assert!(verify(&other, &token).is_err());
        assert!(verify(&secret, "not.a.token").is_err());
        let past = Claims {
            sub: "alice".into(),
            iat: now() - 120,
            exp: now() - 60,
        };
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &past,
            &EncodingKey::from_secret(secret.expose().as_bytes()),
        )
        .unwrap();
        assert!(verify(&secret, &expired).is_err());
        assert!(mint(&secret, "", 60).is_err());
    }
}
