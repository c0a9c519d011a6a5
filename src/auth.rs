//! Authentication: HS256 JSON Web Tokens signed with `JWT_SECRET`, and the server API keys.
//!
//! A **connection token**'s `sub` is the user's name; it may carry capabilities (`rooms`:
//! `{match, allow}` rules) and roles (`roles`: `admin`). Clients send it as `?token=`
//! (WebSockets, SSE) or `Authorization: Bearer` (REST). A **subscription token** carries a
//! `room` as well: it grants that room alone to its user (`allow`, by default subscribe,
//! history and presence), presented in a `join` or on the room's SSE stream. A backend
//! mints both with the shared secret (`courier token` does it from the command line).
//!
//! **API keys** (`API_KEYS`) are for backends: `Authorization: apikey <key>` or
//! `X-API-Key: <key>`. Keys are kept only as SHA-256 digests and compared in constant
//! time. A key may do anything a user or an admin may, and use the server API.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::HttpRequest;
use courier_actors::access::{Action, Capability, Grant, Identity, TokenVerifier};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::secret::Secret;

/// Lifetime of a token minted by `courier token` unless `--ttl` says otherwise.
pub const DEFAULT_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Longest user name a token may carry.
pub const MAX_USER_NAME_LEN: usize = 64;

/// The prefix of guests' names; no user name may start with it.
pub const GUEST_PREFIX: &str = "guest-";

/// The name events published with the API key are shown under; no user may hold it.
pub const SERVER_USER: &str = "server";

/// The role that may use the admin routes and every room.
pub const ADMIN_ROLE: &str = "admin";

/// Leeway for clock differences when checking `exp`.
const LEEWAY_SECS: u64 = 5;

/// The claims courier reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user's name.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Capability rules, in order (connection tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<Capability>,
    /// Roles, e.g. `admin` (connection tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The room a subscription token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// What a subscription token allows in its room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<Action>>,
}

/// Why a token or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was sent.
    #[error("a token is required (?token= or Authorization: Bearer)")]
    Missing,
    /// The token is malformed, badly signed or expired.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The API key is not one of `API_KEYS`.
    #[error("invalid API key")]
    BadKey,
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

/// What `courier token` mints.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The user.
    pub user: String,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// A subscription token for this room (else a connection token).
    pub room: Option<String>,
    /// What it allows: in `room` for a subscription token, else in the rooms matching
    /// `pattern` (a capability rule).
    pub allow: Vec<Action>,
    /// The capability rule's pattern (connection tokens with `allow`).
    pub pattern: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
}

/// Signs a connection token for `user`, valid for `ttl_secs`.
pub fn mint(secret: &Secret, user: &str, ttl_secs: u64) -> Result<String, AuthError> {
    mint_token(
        secret,
        &TokenRequest {
            user: user.to_owned(),
            ttl_secs,
            ..TokenRequest::default()
        },
    )
}

/// Signs the token `req` describes.
pub fn mint_token(secret: &Secret, req: &TokenRequest) -> Result<String, AuthError> {
    validate_name(&req.user)?;
    let iat = now();
    let mut claims = Claims {
        sub: req.user.clone(),
        iat,
        exp: iat + req.ttl_secs,
        rooms: Vec::new(),
        roles: req.roles.clone(),
        room: req.room.clone(),
        allow: None,
    };
    match &req.room {
        Some(_) if !req.allow.is_empty() => claims.allow = Some(req.allow.clone()),
        Some(_) => {}
        None if !req.allow.is_empty() => claims.rooms.push(Capability {
            pattern: req.pattern.clone().unwrap_or_else(|| "*".to_owned()),
            allow: req.allow.clone(),
        }),
        None => {}
    }
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
    validation.leeway = LEEWAY_SECS;
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

/// What a valid connection token says about its holder.
pub fn connection_grant(secret: &Secret, token: &str) -> Result<Grant, AuthError> {
    let claims = verify(secret, token)?;
    if claims.room.is_some() {
        return Err(AuthError::Invalid(
            "a subscription token cannot open a connection".into(),
        ));
    }
    Ok(Grant {
        identity: Identity {
            user: Some(claims.sub.into()),
            capabilities: claims.rooms,
            admin: claims.roles.iter().any(|r| r == ADMIN_ROLE),
            api_key: false,
            grants: Vec::new(),
        },
        expires_at: Some(claims.exp),
    })
}

/// What a subscription token lets `user` do in `room`.
pub fn subscription_grant(
    secret: &Secret,
    token: &str,
    user: Option<&str>,
    room: &str,
) -> Result<Vec<Action>, AuthError> {
    let claims = verify(secret, token)?;
    if claims.room.as_deref() != Some(room) {
        return Err(AuthError::Invalid(format!(
            "the token is not a subscription token for {room:?}"
        )));
    }
    if user != Some(claims.sub.as_str()) {
        return Err(AuthError::Invalid(
            "the subscription token is for another user".into(),
        ));
    }
    Ok(claims
        .allow
        .unwrap_or_else(|| vec![Action::Subscribe, Action::History, Action::Presence]))
}

/// Checks tokens for the sessions, with the server's secret.
#[derive(Clone)]
pub struct Tokens {
    secret: Secret,
}

impl Tokens {
    /// A checker signing with `secret`.
    pub fn new(secret: Secret) -> Self {
        Self { secret }
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens")
    }
}

impl TokenVerifier for Tokens {
    fn connection(&self, token: &str) -> Result<Grant, String> {
        connection_grant(&self.secret, token).map_err(|e| e.to_string())
    }

    fn subscription(
        &self,
        token: &str,
        user: Option<&str>,
        room: &str,
    ) -> Result<Vec<Action>, String> {
        subscription_grant(&self.secret, token, user, room).map_err(|e| e.to_string())
    }
}

/// A display name: 1–64 characters, not blank, no control characters.
pub fn validate_display_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_USER_NAME_LEN
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "a name must be 1-{MAX_USER_NAME_LEN} printable characters"
        )))
    }
}

/// A user name: a display name that is not a guest's (`guest-…`) nor the server's.
pub fn validate_name(name: &str) -> Result<(), AuthError> {
    let ok = validate_display_name(name).is_ok()
        && !name.starts_with(GUEST_PREFIX)
        && name != SERVER_USER;
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "user name must be 1-{MAX_USER_NAME_LEN} printable characters, not starting with {GUEST_PREFIX:?} and not {SERVER_USER:?}"
        )))
    }
}

/// The server API keys, kept as SHA-256 digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

impl ApiKeys {
    /// The keys of `API_KEYS` (comma-separated).
    pub fn new(keys: &[Secret]) -> Self {
        Self {
            digests: keys
                .iter()
                .map(|k| Sha256::digest(k.expose().as_bytes()).into())
                .collect(),
        }
    }

    /// Whether `key` is one of them (compared in constant time).
    pub fn accepts(&self, key: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.digests.iter().fold(false, |found, d| {
            let diff = d.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            found | (diff == 0)
        })
    }
}

/// The API key a request carries: `Authorization: apikey <key>` or `X-API-Key`.
pub fn api_key_of(req: &HttpRequest) -> Option<String> {
    if let Some(key) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
    {
        return Some(key.trim().to_owned());
    }
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
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

/// Who a request is: the server API (a valid key), a user (a valid connection token), or
/// a guest (neither). A key or token that is sent but invalid is an error, not a guest.
pub fn grant_of(secret: &Secret, keys: &ApiKeys, req: &HttpRequest) -> Result<Grant, AuthError> {
    if let Some(key) = api_key_of(req) {
        return if keys.accepts(&key) {
            Ok(Grant {
                identity: Identity::server(),
                expires_at: None,
            })
        } else {
            Err(AuthError::BadKey)
        };
    }
    match token_from_request(req) {
        Some(token) => connection_grant(secret, &token),
        None => Ok(Grant {
            identity: Identity::guest(),
            expires_at: None,
        }),
    }
}

/// Who a request for `room` is: like [`grant_of`], but the token may also be a
/// subscription token for `room` (its user, with what it grants in `room` alone).
pub fn room_grant_of(
    secret: &Secret,
    keys: &ApiKeys,
    req: &HttpRequest,
    room: &str,
) -> Result<Grant, AuthError> {
    if api_key_of(req).is_none() {
        if let Some(token) = token_from_request(req) {
            let claims = verify(secret, &token)?;
            if claims.room.is_some() {
                let allow = subscription_grant(secret, &token, Some(&claims.sub), room)?;
                let mut identity = Identity {
                    user: Some(claims.sub.into()),
                    ..Identity::default()
                };
                identity.grant(room, allow);
                return Ok(Grant {
                    identity,
                    expires_at: Some(claims.exp),
                });
            }
        }
    }
    grant_of(secret, keys, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("s3cret-s3cret-s3cret-s3cret-s3cret".into())
    }

    #[test]
    fn round_trip_and_refusals() {
        let secret = secret();
        let token = mint(&secret, "alice", 60).unwrap();
        assert_eq!(verify(&secret, &token).unwrap().sub, "alice");
        let other = Secret::new("another-secret-another-secret-xx".into());
        assert!(verify(&other, &token).is_err());
        assert!(verify(&secret, "not.a.token").is_err());
        let past = Claims {
            sub: "alice".into(),
            iat: now() - 120,
            exp: now() - 60,
            rooms: Vec::new(),
            roles: Vec::new(),
            room: None,
            allow: None,
        };
        let expired = encode(
            &Header::new(Algorithm::HS256),
            &past,
            &EncodingKey::from_secret(secret.expose().as_bytes()),
        )
        .unwrap();
        assert!(verify(&secret, &expired).is_err());
        assert!(mint(&secret, "", 60).is_err());
        assert!(
            mint(&secret, "guest-1234", 60).is_err(),
            "no user may look like a guest"
        );
    }

    #[test]
    fn capabilities_and_subscription_tokens() {
        let secret = secret();
        let token = mint_token(
            &secret,
            &TokenRequest {
                user: "alice".into(),
                ttl_secs: 60,
                allow: vec![Action::Subscribe],
                pattern: Some("vip:*".into()),
                roles: vec![ADMIN_ROLE.into()],
                ..TokenRequest::default()
            },
        )
        .unwrap();
        let grant = connection_grant(&secret, &token).unwrap();
        assert!(grant.identity.admin);
        assert!(grant.identity.may("vip:lounge", Action::Subscribe));
        assert!(!grant.identity.may("vip:lounge", Action::Publish));

        let sub = mint_token(
            &secret,
            &TokenRequest {
                user: "bob".into(),
                ttl_secs: 60,
                room: Some("vip:lounge".into()),
                ..TokenRequest::default()
            },
        )
        .unwrap();
        assert!(
            connection_grant(&secret, &sub).is_err(),
            "not a connection token"
        );
        assert_eq!(
            subscription_grant(&secret, &sub, Some("bob"), "vip:lounge").unwrap(),
            vec![Action::Subscribe, Action::History, Action::Presence]
        );
        assert!(subscription_grant(&secret, &sub, Some("carol"), "vip:lounge").is_err());
        assert!(subscription_grant(&secret, &sub, Some("bob"), "vip:other").is_err());
        assert!(subscription_grant(&secret, &sub, None, "vip:lounge").is_err());
    }

    #[test]
    fn api_keys_are_compared_by_digest() {
        let keys = ApiKeys::new(&[Secret::new("key-one".into()), Secret::new("key-two".into())]);
        assert!(keys.accepts("key-one"));
        assert!(keys.accepts("key-two"));
        assert!(!keys.accepts("key-three"));
        assert!(!ApiKeys::default().accepts(""));
    }
}
