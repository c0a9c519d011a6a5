//! Who may do what in which room.
//!
//! A room's namespace is the part of its name before the first `:` (`chat:lobby` → `chat`;
//! a name without `:` is in the default namespace, written `default` in configuration).
//! Each namespace says, per [`Action`], who may do it ([`Level`]), and whether guests
//! (connections without a token) may do anything at all. A namespace that is not
//! configured follows the fallback: open as the default namespace in local use, closed in
//! production.
//!
//! Besides the namespace:
//! - a room whose name has a `#` is personal: the users listed after it, separated by
//!   commas, may use it and nobody else (`user:#alice`, `dm:#alice,bob`);
//! - a token may carry capabilities (`rooms`: `{match, allow}` rules, `*` in patterns,
//!   checked in order, the first rule whose pattern matches decides);
//! - a subscription token grants one room to one user ([`Identity::grant`]);
//! - the server API key and the `admin` role may do everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Something a client does in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Join over WebSocket, follow over SSE.
    Subscribe,
    /// Publish a message.
    Publish,
    /// See the members, and `member_joined` / `member_left`.
    Presence,
    /// Read past events: `/history`, and `since` / `Last-Event-ID` replays.
    History,
}

impl Action {
    /// Every action.
    pub const ALL: [Self; 4] = [
        Self::Subscribe,
        Self::Publish,
        Self::Presence,
        Self::History,
    ];

    /// The action's name in configuration and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Presence => "presence",
            Self::History => "history",
        }
    }

    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Who may do an action in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Any connection, guests included (unless the namespace refuses guests).
    Anyone,
    /// A connection with a valid token.
    Authenticated,
    /// A token whose capabilities grant the action for the room, or a subscription token
    /// for it.
    Capability,
    /// Only the server API (the API key).
    Nobody,
}

impl Level {
    /// Every level, as configuration names them.
    pub const NAMES: &'static str = "anyone, authenticated, capability, nobody";

    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anyone => "anyone",
            Self::Authenticated => "authenticated",
            Self::Capability => "capability",
            Self::Nobody => "nobody",
        }
    }

    /// The level named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "anyone" => Some(Self::Anyone),
            "authenticated" => Some(Self::Authenticated),
            "capability" => Some(Self::Capability),
            "nobody" => Some(Self::Nobody),
            _ => None,
        }
    }
}

/// One namespace's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Who may join and follow.
    pub subscribe: Level,
    /// Who may publish.
    pub publish: Level,
    /// Who may see presence.
    pub presence: Level,
    /// Who may read history.
    pub history: Level,
    /// Events kept per room, when it differs from `ROOM_HISTORY_SIZE`.
    pub history_size: Option<usize>,
    /// Whether members are told of joins and leaves (`member_joined`, `member_left`).
    pub presence_events: bool,
    /// Whether guests may do anything at all here.
    pub anonymous: bool,
}

impl Namespace {
    /// Today's open room: anyone may do anything.
    pub fn open() -> Self {
        Self {
            subscribe: Level::Anyone,
            publish: Level::Anyone,
            presence: Level::Anyone,
            history: Level::Anyone,
            history_size: None,
            presence_events: true,
            anonymous: true,
        }
    }

    /// Who may do `action`.
    pub fn level(&self, action: Action) -> Level {
        match action {
            Action::Subscribe => self.subscribe,
            Action::Publish => self.publish,
            Action::Presence => self.presence,
            Action::History => self.history,
        }
    }
}

/// The name of the namespace rooms without `:` belong to, in configuration.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The namespace of `room`: the part before its first `:`, or [`DEFAULT_NAMESPACE`].
pub fn namespace_of(room: &str) -> &str {
    match room.split_once(':') {
        Some((ns, _)) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

/// The users a personal room is for (`user:#alice` → `[alice]`), if it is one.
pub fn personal_users(room: &str) -> Option<impl Iterator<Item = &str>> {
    let (_, users) = room.split_once('#')?;
    Some(users.split(',').filter(|u| !u.is_empty()))
}

/// Every namespace's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Configured namespaces, by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// What a namespace that is not configured follows; `None`: closed.
    pub fallback: Option<Namespace>,
}

impl AccessPolicy {
    /// Every room open to everyone (no namespace configured, open fallback).
    pub fn open() -> Self {
        Self {
            namespaces: BTreeMap::new(),
            fallback: Some(Namespace::open()),
        }
    }

    /// The rules of `room`'s namespace; `None` when it is closed.
    pub fn namespace(&self, room: &str) -> Option<&Namespace> {
        self.namespaces
            .get(namespace_of(room))
            .or(self.fallback.as_ref())
    }

    /// Whether `who` may do `action` in `room`.
    pub fn check(&self, who: &Identity, room: &str, action: Action) -> Result<(), Denied> {
        if who.superuser() {
            return Ok(());
        }
        if let Some(mut users) = personal_users(room) {
            return match &who.user {
                Some(user) if users.any(|u| u == &**user) => Ok(()),
                Some(_) => Err(Denied::Forbidden(format!(
                    "{room:?} is a personal room of other users"
                ))),
                None => Err(Denied::Unauthorized(format!(
                    "{room:?} is a personal room: a token is required"
                ))),
            };
        }
        let Some(ns) = self.namespace(room) else {
            return Err(Denied::Forbidden(format!(
                "the namespace {:?} is closed",
                namespace_of(room)
            )));
        };
        let guest = who.user.is_none();
        if guest && !ns.anonymous {
            return Err(Denied::Unauthorized(format!(
                "the namespace {:?} needs a token",
                namespace_of(room)
            )));
        }
        let allowed = match ns.level(action) {
            Level::Anyone => true,
            Level::Authenticated => !guest,
            Level::Capability => who.may(room, action),
            Level::Nobody => false,
        };
        if allowed {
            Ok(())
        } else if guest && ns.level(action) != Level::Nobody {
            Err(Denied::Unauthorized(format!(
                "{} in {room:?} needs a token",
                action.as_str()
            )))
        } else {
            Err(Denied::Forbidden(format!(
                "{} in {room:?} is not allowed",
                action.as_str()
            )))
        }
    }
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// A token would be needed (401, `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
    /// The client's token (or the key) does not allow it (403, `forbidden`).
    #[error("{0}")]
    Forbidden(String),
}

impl Denied {
    /// The code clients see in an `error` frame.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
        }
    }
}

/// A capability rule of a token: rooms matching `pattern` (with `*`) allow `allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// A room name pattern; `*` matches any run of characters.
    #[serde(rename = "match")]
    pub pattern: String,
    /// What the rule allows in those rooms.
    pub allow: Vec<Action>,
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// Who a connection or request is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The token's user; `None` for a guest.
    pub user: Option<Arc<str>>,
    /// The token's capability rules, in order.
    pub capabilities: Vec<Capability>,
    /// Whether the token has the `admin` role.
    pub admin: bool,
    /// Whether the request carries the server API key.
    pub api_key: bool,
    /// Rooms granted by subscription tokens, with what each allows.
    pub grants: Vec<(String, Vec<Action>)>,
}

impl Identity {
    /// A guest.
    pub fn guest() -> Self {
        Self::default()
    }

    /// The server API (the API key).
    pub fn server() -> Self {
        Self {
            api_key: true,
            ..Self::default()
        }
    }

    /// Whether everything is allowed (the API key, or the `admin` role).
    pub fn superuser(&self) -> bool {
        self.api_key || self.admin
    }

    /// Whether capabilities or grants allow `action` in `room`.
    pub fn may(&self, room: &str, action: Action) -> bool {
        if self
            .grants
            .iter()
            .any(|(r, allow)| r == room && allow.contains(&action))
        {
            return true;
        }
        self.capabilities
            .iter()
            .find(|c| glob_match(&c.pattern, room))
            .is_some_and(|c| c.allow.contains(&action))
    }

    /// Drops what a subscription token granted in `room` (the client left it).
    pub fn revoke(&mut self, room: &str) {
        self.grants.retain(|(r, _)| r != room);
    }

    /// Adds what a subscription token grants in `room`: it lasts while the connection
    /// stays in the room.
    pub fn grant(&mut self, room: &str, allow: Vec<Action>) {
        self.grants.retain(|(r, _)| r != room);
        self.grants.push((room.to_owned(), allow));
    }
}

/// What a valid connection token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the token is for, and what it allows.
    pub identity: Identity,
    /// When it expires (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
}

/// Checks tokens for the sessions (the server's signing key lives with the HTTP layer).
pub trait TokenVerifier: Send + Sync + std::fmt::Debug {
    /// A connection token, as `refresh` presents it.
    fn connection(&self, token: &str) -> Result<Grant, String>;
    /// A subscription token for `room` presented by `user`: what it allows there.
    fn subscription(
        &self,
        token: &str,
        user: Option<&str>,
        room: &str,
    ) -> Result<Vec<Action>, String>;
}

/// The current time in seconds since the Unix epoch (token expiry is in these units).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Identity {
        Identity {
            user: Some(name.into()),
            ..Identity::default()
        }
    }

    fn policy() -> AccessPolicy {
        let mut namespaces = BTreeMap::new();
        namespaces.insert(
            "chat".into(),
            Namespace {
                publish: Level::Authenticated,
                ..Namespace::open()
            },
        );
        namespaces.insert(
            "vip".into(),
            Namespace {
                subscribe: Level::Capability,
                publish: Level::Capability,
                presence: Level::Capability,
                history: Level::Capability,
                anonymous: false,
                ..Namespace::open()
            },
        );
        namespaces.insert(
            "news".into(),
            Namespace {
                publish: Level::Nobody,
                ..Namespace::open()
            },
        );
        AccessPolicy {
            namespaces,
            fallback: None,
        }
    }

    #[test]
    fn namespaces_decide_by_level() {
        let p = policy();
        let guest = Identity::guest();
        let alice = user("alice");
        assert_eq!(namespace_of("chat:lobby"), "chat");
        assert_eq!(namespace_of("lobby"), DEFAULT_NAMESPACE);
        assert!(p.check(&guest, "chat:lobby", Action::Subscribe).is_ok());
        assert!(matches!(
            p.check(&guest, "chat:lobby", Action::Publish),
            Err(Denied::Unauthorized(_))
        ));
        assert!(p.check(&alice, "chat:lobby", Action::Publish).is_ok());
        assert!(matches!(
            p.check(&alice, "news:today", Action::Publish),
            Err(Denied::Forbidden(_))
        ));
        assert!(p
            .check(&Identity::server(), "news:today", Action::Publish)
            .is_ok());
        // Not configured, no fallback: closed, even the default namespace.
        assert!(matches!(
            p.check(&alice, "lobby", Action::Subscribe),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            p.check(&guest, "vip:room", Action::Subscribe),
            Err(Denied::Unauthorized(_))
        ));
    }

    #[test]
    fn capabilities_first_match_wins() {
        let p = policy();
        let mut alice = user("alice");
        alice.capabilities = vec![
            Capability {
                pattern: "vip:secret*".into(),
                allow: vec![Action::Subscribe],
            },
            Capability {
                pattern: "vip:*".into(),
                allow: Action::ALL.to_vec(),
            },
        ];
        assert!(p.check(&alice, "vip:lounge", Action::Publish).is_ok());
        assert!(p.check(&alice, "vip:secret-1", Action::Subscribe).is_ok());
        assert!(matches!(
            p.check(&alice, "vip:secret-1", Action::Publish),
            Err(Denied::Forbidden(_))
        ));
        let mut bob = user("bob");
        assert!(p.check(&bob, "vip:lounge", Action::Subscribe).is_err());
        bob.grant("vip:lounge", vec![Action::Subscribe, Action::History]);
        assert!(p.check(&bob, "vip:lounge", Action::Subscribe).is_ok());
        assert!(p.check(&bob, "vip:lounge", Action::Publish).is_err());
        assert!(p.check(&bob, "vip:other", Action::Subscribe).is_err());
    }

    #[test]
    fn personal_rooms_are_for_their_users_only() {
        let p = policy();
        assert!(p
            .check(&user("alice"), "dm:#alice,bob", Action::Publish)
            .is_ok());
        assert!(p
            .check(&user("bob"), "dm:#alice,bob", Action::Subscribe)
            .is_ok());
        assert!(matches!(
            p.check(&user("carol"), "dm:#alice,bob", Action::Subscribe),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            p.check(&Identity::guest(), "user:#alice", Action::Subscribe),
            Err(Denied::Unauthorized(_))
        ));
    }

    #[test]
    fn patterns() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("chat:*", "chat:lobby"));
        assert!(!glob_match("chat:*", "news:lobby"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("a*c*e", "abcd"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}
