//! Access control from real clients: who may join, publish, read history, see presence and
//! follow which room (namespaces × identities), personal rooms, names that cannot be
//! spoofed, token expiry and refresh, the server API key, CORS and `Origin`, the route
//! protections of production, and the secrets production refuses.

use std::time::Duration;

use courier::auth::{Claims, TokenRequest};
use courier_actors::access::{Action, Capability};
use serde_json::{json, Value};

use crate::helpers::{
    service_url, spawn_app, spawn_app_with, test_secret, wait_for_metric, SseClient, TestApp,
    WsClient,
};

/// The server API key the tests configure.
const KEY: &str = "test-api-key-0123456789abcdef";

/// A production signing key that is not in the repository.
const PRODUCTION_SECRET: &str = "7f3a9c1e5b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d";

/// The namespaces of the table: `open` (anyone), `members` (a token), `vip` (a capability;
/// no guests), `news` (only the server publishes; nobody sees presence). Anything else is
/// closed.
const NAMESPACES: &[(&str, &str)] = &[
    ("NAMESPACE_FALLBACK", "closed"),
    ("NAMESPACE_OPEN_SUBSCRIBE", "anyone"),
    ("NAMESPACE_OPEN_PUBLISH", "anyone"),
    ("NAMESPACE_OPEN_PRESENCE", "anyone"),
    ("NAMESPACE_OPEN_HISTORY", "anyone"),
    ("NAMESPACE_MEMBERS_SUBSCRIBE", "authenticated"),
    ("NAMESPACE_MEMBERS_PUBLISH", "authenticated"),
    ("NAMESPACE_MEMBERS_PRESENCE", "authenticated"),
    ("NAMESPACE_MEMBERS_HISTORY", "authenticated"),
    ("NAMESPACE_VIP_SUBSCRIBE", "capability"),
    ("NAMESPACE_VIP_PUBLISH", "capability"),
    ("NAMESPACE_VIP_PRESENCE", "capability"),
    ("NAMESPACE_VIP_HISTORY", "capability"),
    ("NAMESPACE_VIP_ANONYMOUS", "false"),
    ("NAMESPACE_NEWS_SUBSCRIBE", "anyone"),
    ("NAMESPACE_NEWS_PUBLISH", "nobody"),
    ("NAMESPACE_NEWS_PRESENCE", "nobody"),
    ("NAMESPACE_NEWS_HISTORY", "anyone"),
    ("API_KEYS", KEY),
];

fn token(req: TokenRequest) -> String {
    courier::auth::mint_token(&test_secret(), &req).expect("token")
}

fn user_token(user: &str) -> String {
    token(TokenRequest {
        user: user.into(),
        ttl_secs: 3600,
        ..TokenRequest::default()
    })
}

/// `claims`, signed with the test secret (tokens `courier token` would not mint).
fn sign(claims: &Claims) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(test_secret().expose().as_bytes()),
    )
    .unwrap()
}

/// A token signed with the test secret that expired a minute ago.
fn expired_token(user: &str) -> String {
    let now = courier_actors::access::unix_now();
    let claims = Claims {
        sub: user.into(),
        exp: now - 60,
        iat: now - 120,
        rooms: Vec::new(),
        roles: Vec::new(),
        room: None,
        allow: None,
    };
    sign(&claims)
}

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// No token.
    Guest,
    /// A token without capabilities.
    User,
    /// A token whose rules allow `subscribe` only in `vip:secret*`, then everything in
    /// `vip:*` (the first matching rule decides).
    Capable,
    /// A connection token, and for the room a subscription token allowing `subscribe` and
    /// `history`.
    SubToken,
    /// An expired token.
    Expired,
    /// The server API key.
    ApiKey,
}

const EVERYONE: [Who; 6] = [
    Who::Guest,
    Who::User,
    Who::Capable,
    Who::SubToken,
    Who::Expired,
    Who::ApiKey,
];

fn connection_token(who: Who) -> Option<String> {
    match who {
        Who::Guest | Who::ApiKey => None,
        Who::User => Some(user_token("uma")),
        Who::Capable => Some(capable_token()),
        Who::SubToken => Some(user_token("sol")),
        Who::Expired => Some(expired_token("eve")),
    }
}

fn capable_token() -> String {
    let now = courier_actors::access::unix_now();
    let claims = Claims {
        sub: "cara".into(),
        exp: now + 3600,
        iat: now,
        rooms: vec![
            Capability {
                pattern: "vip:secret*".into(),
                allow: vec![Action::Subscribe],
            },
            Capability {
                pattern: "vip:*".into(),
                allow: Action::ALL.to_vec(),
            },
        ],
        roles: Vec::new(),
        room: None,
        allow: None,
    };
    sign(&claims)
}

fn subscription_token(user: &str, room: &str, allow: &[Action]) -> String {
    token(TokenRequest {
        user: user.into(),
        ttl_secs: 60,
        room: Some(room.into()),
        allow: allow.to_vec(),
        ..TokenRequest::default()
    })
}

/// The headers a REST or SSE request of `who` about `room` carries.
fn headers(who: Who, room: &str) -> Vec<(String, String)> {
    match who {
        Who::Guest => Vec::new(),
        Who::ApiKey => vec![("X-API-Key".into(), KEY.into())],
        Who::SubToken => vec![(
            "Authorization".into(),
            format!(
                "Bearer {}",
                subscription_token("sol", room, &[Action::Subscribe, Action::History])
            ),
        )],
        other => vec![(
            "Authorization".into(),
            format!("Bearer {}", connection_token(other).unwrap()),
        )],
    }
}

/// `ok`, or the error code a client was refused with.
fn outcome(status: u16, body: &Value) -> String {
    if (200..300).contains(&status) {
        "ok".into()
    } else {
        let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
        let expected = match code.as_str() {
            "unauthorized" => 401,
            "forbidden" => 403,
            _ => 0,
        };
        assert_eq!(status, expected, "status of {code}: {body}");
        code
    }
}

async fn rest(app: &TestApp, who: Who, room: &str, what: &str) -> String {
    let mut req = app.client.get(app.url(&format!("/rooms/{room}/{what}")));
    for (k, v) in headers(who, room) {
        req = req.insert_header((k, v));
    }
    let mut res = req.send().await.expect("request");
    let body: Value = res.json().await.unwrap_or(Value::Null);
    outcome(res.status().as_u16(), &body)
}

/// Follows the room over SSE; a subscription token rides in `?token=` as EventSource
/// clients send it.
async fn sse(app: &TestApp, who: Who, room: &str) -> String {
    let path = match who {
        Who::SubToken => format!(
            "/rooms/{room}/events?token={}",
            subscription_token("sol", room, &[Action::Subscribe, Action::History])
        ),
        _ => format!("/rooms/{room}/events"),
    };
    let mut req = app.client.get(app.url(&path));
    if !matches!(who, Who::SubToken) {
        for (k, v) in headers(who, room) {
            req = req.insert_header((k, v));
        }
    }
    let mut res = req.send().await.expect("request");
    let status = res.status().as_u16();
    if status == 200 {
        return "ok".into();
    }
    let body: Value = res.json().await.unwrap_or(Value::Null);
    outcome(status, &body)
}

/// The answer to a WebSocket request: `ok` when `want` came, else the error frame's code.
async fn ws_answer(ws: &mut WsClient, want: &str) -> String {
    loop {
        let v = ws.json().await;
        if v["type"] == want {
            return "ok".into();
        }
        if v["type"] == "error" {
            return v["code"].as_str().unwrap().to_owned();
        }
    }
}

/// Joins and publishes over `/ws/json`: the two outcomes.
async fn ws_join_publish(app: &TestApp, who: Who, room: &str) -> (String, String) {
    let path = match connection_token(who) {
        Some(t) => format!("/ws/json?token={t}"),
        None => "/ws/json?name=table".into(),
    };
    if let Who::Expired = who {
        // Refused at the upgrade: closed with 1008 before any frame.
        let mut ws = WsClient::connect_raw(app, &path).await;
        let (code, reason) = ws.close_frame().await;
        assert_eq!(code, Some(1008));
        assert!(reason.contains("invalid token"), "{reason}");
        return ("unauthorized".into(), "unauthorized".into());
    }
    let mut ws = match who {
        Who::ApiKey => WsClient::connect_with(app, &path, &[("X-API-Key", KEY)]).await,
        _ => WsClient::connect(app, &path).await,
    };
    let mut join = json!({"type": "join", "room": room});
    if let Who::SubToken = who {
        join["token"] =
            subscription_token("sol", room, &[Action::Subscribe, Action::History]).into();
    }
    ws.send_json(join).await;
    let joined = ws_answer(&mut ws, "joined").await;
    ws.send_json(json!({"type": "publish", "room": room, "data": "hi", "id": "p"}))
        .await;
    let published = ws_answer(&mut ws, "ack").await;
    (joined, published)
}

/// What each identity gets in each room: join, publish, history, presence, SSE follow, as
/// `o` (allowed), `u` (unauthorized: a token is needed) or `f` (forbidden).
const TABLE: &[(&str, [&str; 6])] = &[
    //            guest    user     capable  subtoken expired  api key
    (
        "open:r",
        ["ooooo", "ooooo", "ooooo", "ooooo", "uuuuu", "ooooo"],
    ),
    (
        "members:r",
        ["uuuuu", "ooooo", "ooooo", "ooooo", "uuuuu", "ooooo"],
    ),
    (
        "vip:r",
        ["uuuuu", "fffff", "ooooo", "ofofo", "uuuuu", "ooooo"],
    ),
    (
        "vip:secret",
        ["uuuuu", "fffff", "offfo", "ofofo", "uuuuu", "ooooo"],
    ),
    (
        "news:r",
        ["ofofo", "ofofo", "ofofo", "ofofo", "uuuuu", "ooooo"],
    ),
    (
        "closed:r",
        ["fffff", "fffff", "fffff", "fffff", "uuuuu", "ooooo"],
    ),
];

fn letter(outcome: &str) -> char {
    match outcome {
        "ok" => 'o',
        "unauthorized" => 'u',
        "forbidden" => 'f',
        other => panic!("unexpected outcome {other}"),
    }
}

/// Runs the table: WebSocket on `ws_app`, REST and SSE on `rest_app`.
async fn check_table(ws_app: &TestApp, rest_app: &TestApp) {
    let mut wrong = Vec::new();
    for (room, row) in TABLE {
        for (who, expected) in EVERYONE.iter().zip(row) {
            let (join, publish) = ws_join_publish(ws_app, *who, room).await;
            let got: String = [
                join,
                publish,
                rest(rest_app, *who, room, "history").await,
                rest(rest_app, *who, room, "presence").await,
                sse(rest_app, *who, room).await,
            ]
            .iter()
            .map(|o| letter(o))
            .collect();
            if got != *expected {
                wrong.push(format!("{room} {who:?}: expected {expected}, got {got}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "join/publish/history/presence/sse:\n{}",
        wrong.join("\n")
    );
}

#[actix_rt::test]
async fn namespaces_decide_who_may_do_what_for_every_identity() {
    let app = spawn_app_with(NAMESPACES).await;
    check_table(&app, &app).await;
}

#[actix_rt::test]
async fn two_nodes_on_redis_decide_alike_and_carry_identities() {
    let Some(redis) = service_url("COURIER_TEST_REDIS_URL", Some("redis://127.0.0.1:6379/0"))
    else {
        return;
    };
    let name = format!("courier-test-{:08x}", rand::random::<u32>());
    let mut env = NAMESPACES.to_vec();
    env.push(("REDIS_URL", &redis));
    env.push(("APP_NAME", &name));
    let a = spawn_app_with(&env).await;
    let b = spawn_app_with(&env).await;
    wait_for_metric(&a, "courier_bus_connected", 1.0).await;
    wait_for_metric(&b, "courier_bus_connected", 1.0).await;
    check_table(&a, &b).await;

    // A guest on node A and a user on node B: node B's subscriber sees who is who.
    let mut watcher = WsClient::connect(&b, &format!("/ws/json?token={}", user_token("wes"))).await;
    watcher
        .send_json(json!({"type": "join", "room": "open:x"}))
        .await;
    watcher.json_of("joined").await;
    let mut guest = WsClient::connect(&a, "/ws/json?name=wes").await;
    assert_eq!(guest.hello["name"], "guest-wes");
    guest
        .send_json(json!({"type": "publish", "room": "open:x", "data": "from a guest"}))
        .await;
    let ev = watcher.json_of("event").await;
    assert_eq!(ev["from"], "guest-wes");
    assert_eq!(ev["user"], Value::Null);

    // The server API on node A disconnects the user's connection on node B.
    let mut res = a
        .client
        .post(a.url("/admin/disconnect"))
        .insert_header(("X-API-Key", KEY))
        .send_json(&json!({"user": "wes"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["connections"], 0);
    assert_eq!(watcher.close_frame().await.0, Some(4003));
}

#[actix_rt::test]
async fn personal_rooms_admit_only_their_users() {
    let app = spawn_app_with(NAMESPACES).await;
    for (user, room, expected) in [
        (Some("alice"), "dm:#alice,bob", "ok"),
        (Some("bob"), "dm:#alice,bob", "ok"),
        (Some("carol"), "dm:#alice,bob", "forbidden"),
        (None, "dm:#alice,bob", "unauthorized"),
        (Some("alice"), "user:#alice", "ok"),
        (Some("bob"), "user:#alice", "forbidden"),
        // A user named like a prefix of another is not them.
        (Some("ali"), "user:#alice", "forbidden"),
    ] {
        let path = match user {
            Some(u) => format!("/ws/json?token={}", user_token(u)),
            None => "/ws/json?name=alice".into(),
        };
        let mut ws = WsClient::connect(&app, &path).await;
        ws.send_json(json!({"type": "join", "room": room})).await;
        assert_eq!(
            ws_answer(&mut ws, "joined").await,
            expected,
            "{user:?} in {room}"
        );
        let encoded = room.replace('#', "%23");
        let mut req = app
            .client
            .get(app.url(&format!("/rooms/{encoded}/history")));
        if let Some(u) = user {
            req = req.insert_header(("Authorization", format!("Bearer {}", user_token(u))));
        }
        let mut res = req.send().await.unwrap();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            outcome(res.status().as_u16(), &body),
            expected,
            "history of {room}"
        );
    }
}

#[actix_rt::test]
async fn a_guest_can_never_appear_as_a_user() {
    let app = spawn_app_with(NAMESPACES).await;
    let mut alice =
        WsClient::connect(&app, &format!("/ws/json?token={}", user_token("alice"))).await;
    assert_eq!(alice.hello["user"], "alice");
    assert_eq!(alice.hello["name"], "alice");
    assert!(alice.hello["expires_at"].as_u64().is_some());
    alice
        .send_json(json!({"type": "join", "room": "open:lobby"}))
        .await;
    alice.json_of("joined").await;

    // A guest asking for alice's name, or a guest's name, is shown as a guest.
    for (asked, shown) in [
        ("alice", "guest-alice"),
        ("guest-alice", "guest-alice"),
        ("server", "guest-server"),
    ] {
        let mut guest = WsClient::connect(&app, &format!("/ws/json?name={asked}")).await;
        assert_eq!(guest.hello["name"], shown);
        assert_eq!(guest.hello["user"], Value::Null);
        assert_eq!(guest.hello["expires_at"], Value::Null);
        guest
            .send_json(json!({"type": "publish", "room": "open:lobby", "data": "it is me"}))
            .await;
        let ev = alice.json_of("event").await;
        assert_eq!(
            (ev["from"].as_str(), &ev["user"]),
            (Some(shown), &Value::Null)
        );
    }
    // Without ?name= a guest gets a generated guest name.
    let guest = WsClient::connect(&app, "/ws/json").await;
    assert!(guest.hello["name"].as_str().unwrap().starts_with("guest-"));

    // The token holder's events carry the user.
    alice
        .send_json(json!({"type": "publish", "room": "open:lobby", "data": "really me"}))
        .await;
    let ev = alice.json_of("event").await;
    assert_eq!(
        (ev["from"].as_str(), ev["user"].as_str()),
        (Some("alice"), Some("alice"))
    );

    // Over REST a publish needs a token or the key: the key publishes as `server`.
    let res = app
        .client
        .post(app.url("/rooms/open:lobby/messages"))
        .send_json(&json!({"data": "anonymous"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = app
        .client
        .post(app.url("/rooms/news:today/messages"))
        .insert_header(("Authorization", format!("apikey {KEY}")))
        .send_json(&json!({"data": "headline"}))
        .await
        .unwrap();
    assert_eq!(
        res.status().as_u16(),
        201,
        "the key publishes in a nobody namespace"
    );
    let (_, _, history) = app.get_json("/rooms/news:today/history").await;
    assert_eq!(history["events"][0]["from"], "server");
    assert_eq!(history["events"][0]["user"], Value::Null);

    // No token may carry a guest's or the server's name.
    for name in ["guest-alice", "server"] {
        let req = TokenRequest {
            user: name.into(),
            ttl_secs: 60,
            ..TokenRequest::default()
        };
        assert!(
            courier::auth::mint_token(&test_secret(), &req).is_err(),
            "{name}"
        );
    }
}

#[actix_rt::test]
async fn the_chat_in_production_admits_only_what_the_namespace_allows() {
    let production = [
        ("APP_ENV", "production"),
        ("APP_HOST", "127.0.0.1"),
        ("APP_PORT", "0"),
        ("LOG_LEVEL", "warn"),
        ("JWT_SECRET", PRODUCTION_SECRET),
    ];
    // Unconfigured, the default namespace is closed.
    let app = spawn_app_with(&production).await;
    let mut ws = WsClient::connect_raw(&app, "/ws/chat/7").await;
    let (code, reason) = ws.close_frame().await;
    assert_eq!(code, Some(1008));
    assert!(reason.contains("closed"), "{reason}");

    // Opened for reading: a guest reads and cannot write; a user writes.
    let mut env = production.to_vec();
    env.push(("NAMESPACE_DEFAULT_SUBSCRIBE", "anyone"));
    let app = spawn_app_with(&env).await;
    let secret = courier::config::Secret::new(PRODUCTION_SECRET.into());
    let alice = courier::auth::mint(&secret, "alice", 3600).unwrap();
    let mut guest = WsClient::connect(&app, "/ws/chat/admin").await;
    assert_eq!(guest.text().await, "Client guest-admin joined the chat");
    guest.send("I am the admin").await;
    assert!(
        guest.text().await.starts_with("error: "),
        "a guest cannot publish"
    );
    let mut user = WsClient::connect(&app, &format!("/ws/chat/whatever?token={alice}")).await;
    assert_eq!(guest.text().await, "Client alice joined the chat");
    assert_eq!(user.text().await, "Client alice joined the chat");
    user.send("hello").await;
    assert_eq!(guest.text().await, "Client alice: hello");
}

#[actix_rt::test]
async fn an_expired_connection_token_must_be_refreshed() {
    let app = spawn_app_with(&[("TOKEN_REFRESH_GRACE_MS", "300")]).await;
    let short = token(TokenRequest {
        user: "tim".into(),
        ttl_secs: 1,
        ..TokenRequest::default()
    });

    // Not refreshed: told, then closed with 4001 after the grace period.
    let mut ws = WsClient::connect(&app, &format!("/ws/json?token={short}")).await;
    assert_eq!(ws.json().await["code"], "token_expired");
    assert_eq!(ws.close_frame().await, (Some(4001), "token expired".into()));

    // Refreshed in time: the connection stays, with the new expiry.
    let mut ws = WsClient::connect(&app, &format!("/ws/json?token={short}")).await;
    assert_eq!(ws.json().await["code"], "token_expired");
    ws.send_json(json!({"type": "refresh", "token": "garbage"}))
        .await;
    assert_eq!(ws.json().await["code"], "unauthorized");
    ws.send_json(json!({"type": "refresh", "token": user_token("someone-else")}))
        .await;
    assert_eq!(ws.json().await["code"], "forbidden");
    ws.send_json(json!({"type": "refresh", "token": user_token("tim")}))
        .await;
    let refreshed = ws.json().await;
    assert_eq!(refreshed["type"], "refreshed");
    assert!(refreshed["expires_at"].as_u64().unwrap() > courier_actors::access::unix_now() + 3000);
    // The grace period passes (this waits for a timer that must not fire, so it cannot
    // be replaced by an event to wait for) and the connection still answers.
    actix_rt::time::sleep(Duration::from_millis(900)).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.json().await["type"], "pong");
}

#[actix_rt::test]
async fn an_sse_stream_ends_when_its_token_expires() {
    let app = spawn_app().await;
    let short = token(TokenRequest {
        user: "sue".into(),
        ttl_secs: 1,
        ..TokenRequest::default()
    });
    let mut sse =
        SseClient::connect(&app, &format!("/rooms/lobby/events?token={short}"), None).await;
    let last = sse.next_event().await.expect("a last event");
    assert_eq!(last.event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(v["code"], "token_expired");
    assert_eq!(sse.next_event().await, None, "the stream ends");
}

#[actix_rt::test]
async fn the_server_api_disconnects_and_unsubscribes() {
    let app = spawn_app_with(NAMESPACES).await;
    let mut ws1 = WsClient::connect(&app, &format!("/ws/json?token={}", user_token("dan"))).await;
    let mut ws2 = WsClient::connect(&app, &format!("/ws/json?token={}", user_token("dan"))).await;
    let mut other = WsClient::connect(&app, &format!("/ws/json?token={}", user_token("ida"))).await;
    for ws in [&mut ws1, &mut ws2, &mut other] {
        ws.send_json(json!({"type": "join", "room": "open:ops"}))
            .await;
        ws.json_of("joined").await;
    }
    let mut sse = SseClient::connect_url(
        &app.url(&format!(
            "/rooms/open:ops/events?token={}",
            user_token("dan")
        )),
        None,
    )
    .await;

    // Without the key: 401; with a user's token: 403.
    let res = app
        .client
        .post(app.url("/admin/unsubscribe"))
        .send_json(&json!({"room": "open:ops", "user": "dan"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = app
        .client
        .post(app.url("/admin/unsubscribe"))
        .insert_header(("Authorization", format!("Bearer {}", user_token("dan"))))
        .send_json(&json!({"room": "open:ops", "user": "dan"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);

    let mut res = app
        .client
        .post(app.url("/admin/unsubscribe"))
        .insert_header(("X-API-Key", KEY))
        .send_json(&json!({"room": "open:ops", "user": "dan"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["connections"], 3);
    assert_eq!(ws1.json_of("left").await["room"], "open:ops");
    assert_eq!(ws2.json_of("left").await["room"], "open:ops");
    assert_eq!(sse.next_event().await, None, "the SSE stream ended");

    let admin = token(TokenRequest {
        user: "root".into(),
        ttl_secs: 60,
        roles: vec!["admin".into()],
        ..TokenRequest::default()
    });
    let client_id = ws1.hello["client_id"].as_str().unwrap().to_owned();
    let mut res = app
        .client
        .post(app.url("/admin/disconnect"))
        .insert_header(("Authorization", format!("Bearer {admin}")))
        .send_json(&json!({"client_id": client_id}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["connections"], 1);
    assert_eq!(ws1.close_frame().await.0, Some(4003));
    // The user's other connection and the other user stay.
    ws2.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws2.json_of("pong").await["type"], "pong");
    other.send_json(json!({"type": "ping"})).await;
    assert_eq!(other.json_of("pong").await["type"], "pong");
}

/// A WebSocket upgrade request with `origin`, written by hand: its status and (when it is
/// refused) its JSON body.
async fn upgrade_with_origin(app: &TestApp, origin: Option<&str>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let mut req = format!(
        "GET /ws/json HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        app.port
    );
    if let Some(origin) = origin {
        req.push_str(&format!("Origin: {origin}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = actix_rt::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the server answered");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let status: u16 = text[9..12].parse().unwrap();
        if status == 101 {
            return (status, Value::Null);
        }
        let length: usize = text[..head_end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if buf.len() >= head_end + 4 + length {
            let body = &buf[head_end + 4..head_end + 4 + length];
            return (status, serde_json::from_slice(body).unwrap_or(Value::Null));
        }
    }
}

#[actix_rt::test]
async fn cors_answers_allowed_origins_and_websockets_refuse_others() {
    let app = spawn_app_with(&[("CORS_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    // A preflight from the allowed origin: the methods and headers, Authorization included.
    let res = app
        .client
        .request(
            actix_web::http::Method::OPTIONS,
            app.url("/rooms/lobby/messages"),
        )
        .insert_header(("Origin", "https://app.example.com"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header((
            "Access-Control-Request-Headers",
            "authorization, content-type",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(
        header("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header("access-control-allow-methods").contains("post"));
    assert!(header("access-control-allow-headers").contains("authorization"));

    // Another origin's preflight gets no CORS headers.
    let res = app
        .client
        .request(actix_web::http::Method::OPTIONS, app.url("/rooms"))
        .insert_header(("Origin", "https://evil.example"))
        .insert_header(("Access-Control-Request-Method", "GET"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // REST and SSE responses carry the header for the allowed origin.
    for path in ["/rooms", "/rooms/lobby/events"] {
        let res = app
            .client
            .get(app.url(path))
            .insert_header(("Origin", "https://app.example.com"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        assert_eq!(
            res.headers().get("access-control-allow-origin").unwrap(),
            "https://app.example.com",
            "{path}"
        );
    }

    // A request without an Origin (not a browser) passes with no CORS headers but Vary, so
    // a shared cache keeps it apart from the answers to browsers; from another origin it
    // carries no CORS headers, so the browser keeps the answer from the page.
    let res = app.client.get(app.url("/rooms")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert!(res.headers().get("access-control-expose-headers").is_none());
    let vary = res.headers().get("vary").expect("Vary").to_str().unwrap();
    assert!(vary.starts_with("Origin"), "{vary}");
    let res = app
        .client
        .get(app.url("/rooms"))
        .insert_header(("Origin", "https://evil.example"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // Shaped like a preflight but without an Origin: still answered by the CORS layer
    // (refused), not by the route.
    let res = app
        .client
        .request(actix_web::http::Method::OPTIONS, app.url("/rooms"))
        .insert_header(("Access-Control-Request-Method", "GET"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);

    // WebSocket: no Origin (not a browser), the server's own, and the CORS origins are
    // allowed; any other origin is refused with 403 in the one error shape.
    let own = format!("http://127.0.0.1:{}", app.port);
    for origin in [None, Some(own.as_str()), Some("https://app.example.com")] {
        assert_eq!(upgrade_with_origin(&app, origin).await.0, 101, "{origin:?}");
    }
    let (status, body) = upgrade_with_origin(&app, Some("https://evil.example")).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["request_id"].is_string());

    // WS_ALLOWED_ORIGINS replaces the default.
    let app = spawn_app_with(&[
        ("CORS_ALLOWED_ORIGINS", "https://app.example.com"),
        ("WS_ALLOWED_ORIGINS", "https://ws.example.com"),
    ])
    .await;
    assert_eq!(
        upgrade_with_origin(&app, Some("https://ws.example.com"))
            .await
            .0,
        101
    );
    assert_eq!(
        upgrade_with_origin(&app, Some("https://app.example.com"))
            .await
            .0,
        403
    );
}

/// A path of `PROTECTED` with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1").replace("{filename}", "x.txt")
}

#[actix_rt::test]
async fn production_protects_data_and_admin_routes() {
    use courier::routes::access::{Need, PROTECTED};
    let app = spawn_app_with(&[
        ("APP_ENV", "production"),
        ("APP_HOST", "127.0.0.1"),
        ("APP_PORT", "0"),
        ("LOG_LEVEL", "warn"),
        ("JWT_SECRET", PRODUCTION_SECRET),
        ("API_KEYS", KEY),
    ])
    .await;
    let secret = courier::config::Secret::new(PRODUCTION_SECRET.into());
    let user = courier::auth::mint(&secret, "uma", 3600).unwrap();
    let admin = courier::auth::mint_token(
        &secret,
        &TokenRequest {
            user: "root".into(),
            ttl_secs: 3600,
            roles: vec!["admin".into()],
            ..TokenRequest::default()
        },
    )
    .unwrap();
    let call = |method: &str, path: &str, auth: Option<(&'static str, String)>| {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = app
            .client
            .request(method, app.url(&concrete(path)))
            .timeout(Duration::from_secs(10));
        if let Some((name, value)) = auth {
            req = req.insert_header((name, value));
        }
        req
    };
    for (method, path, need) in PROTECTED {
        let mut res = call(method, path, None)
            .send_json(&json!({}))
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            res.status().as_u16(),
            401,
            "{method} {path} without credentials"
        );
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        assert!(
            body["error"]["request_id"].is_string(),
            "{method} {path}: {body}"
        );

        let res = call(
            method,
            path,
            Some(("Authorization", format!("Bearer {user}"))),
        )
        .send_json(&json!({}))
        .await
        .unwrap();
        match need {
            Need::User => assert!(
                ![401, 403].contains(&res.status().as_u16()),
                "{method} {path} with a user's token: {}",
                res.status()
            ),
            _ => assert_eq!(
                res.status().as_u16(),
                403,
                "{method} {path} with a user's token"
            ),
        }
        for auth in [
            ("Authorization", format!("Bearer {admin}")),
            ("X-API-Key", KEY.to_owned()),
            ("Authorization", format!("apikey {KEY}")),
        ] {
            let res = call(method, path, Some(auth.clone()))
                .send_json(&json!({}))
                .await
                .unwrap();
            assert!(
                ![401, 403].contains(&res.status().as_u16()),
                "{method} {path} with {}: {}",
                auth.0,
                res.status()
            );
        }
    }
    // A wrong key is refused, not taken for a guest.
    let res = call("GET", "/healthz", Some(("X-API-Key", "wrong".into())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200, "open routes ignore credentials");
    let res = call("GET", "/users", Some(("X-API-Key", "wrong".into())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);

    // Readiness tells a load balancer the status, and only admins the details.
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["database"]["backend"], Value::Null);
    let mut res = call("GET", "/readyz", Some(("X-API-Key", KEY.into())))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["database"]["backend"], "sqlite");
}

#[test]
fn the_readme_lists_every_route_protection() {
    use courier::routes::access::{Need, PROTECTED};
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for (method, path, need) in PROTECTED {
        let who = match need {
            Need::User => "token or API key",
            Need::Admin => "API key or admin token",
            Need::Anyone => unreachable!("only protected routes are listed"),
        };
        let row = format!("| `{method} {path}` | {who} |");
        assert!(readme.contains(&row), "README misses the row {row}");
    }
}

#[actix_rt::test]
async fn the_openapi_document_marks_each_protected_route() {
    use courier::routes::access::PROTECTED;
    let app = spawn_app_with(&[]).await;
    let (_, _, doc) = app.get_json("/openapi.json").await;
    for (method, path, _) in PROTECTED {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        let schemes: Vec<String> = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no security"))
            .iter()
            .flat_map(|r| r.as_object().unwrap().keys().cloned())
            .collect();
        assert!(
            schemes.contains(&"api_key".to_owned()),
            "{method} {path}: {schemes:?}"
        );
        assert!(
            schemes.contains(&"bearer".to_owned()),
            "{method} {path}: {schemes:?}"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
}

#[test]
fn production_refuses_the_repositorys_secrets() {
    let repo = |name: &str| {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
            .unwrap()
    };
    let example = repo(".env.example")
        .lines()
        .find_map(|l| l.strip_prefix("JWT_SECRET=").map(str::to_owned))
        .expect(".env.example sets JWT_SECRET");
    let test_toml: toml::Table = repo("config/test.toml").parse().unwrap();
    let local_toml: toml::Table = repo("config/local.toml").parse().unwrap();
    let known = [
        example,
        test_toml["jwt_secret"].as_str().unwrap().to_owned(),
        local_toml["jwt_secret"].as_str().unwrap().to_owned(),
        courier::config::DEVELOPMENT_JWT_SECRET.to_owned(),
        "too-short".to_owned(),
    ];
    let dir = tempfile::tempdir().unwrap();
    for secret in &known {
        let result = courier::config::Config::load_from(courier::config::Sources {
            config_dir: None,
            env_file: None,
            env: [
                ("APP_ENV".to_owned(), "production".to_owned()),
                ("APP_DATA_DIR".to_owned(), dir.path().display().to_string()),
                ("JWT_SECRET".to_owned(), secret.clone()),
            ]
            .into(),
        });
        let err = result
            .expect_err("a repository secret is refused")
            .to_string();
        assert!(err.contains("JWT_SECRET"), "{err}");
        assert!(
            !err.contains(secret.as_str()),
            "the error does not print the secret"
        );
    }
    let ok = courier::config::Config::load_from(courier::config::Sources {
        config_dir: None,
        env_file: None,
        env: [
            ("APP_ENV".to_owned(), "production".to_owned()),
            ("APP_DATA_DIR".to_owned(), dir.path().display().to_string()),
            ("JWT_SECRET".to_owned(), PRODUCTION_SECRET.to_owned()),
        ]
        .into(),
    });
    assert!(ok.is_ok(), "{:?}", ok.err());
}
