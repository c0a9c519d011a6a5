//! The JavaScript client (`/client.js`) and the demo page in headless Chromium, against the
//! courier binary in a process of its own: chatting, a server restart mid-conversation, a
//! lost acknowledgement, a refused token, a token refreshed in place, SSE.
//!
//! Skipped with a message when there is no Chromium (see [`crate::helpers::browser`]);
//! `CI=true` makes that a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::browser::{Browser, Page};
use crate::helpers::{publish_as, start_server_process, test_secret, ServerProcess};

/// The recording harness the tests load into a page.
const HARNESS: &str = include_str!("../../clients/js/test/harness.js");

fn token(user: &str, ttl_secs: u64) -> String {
    courier::auth::mint(&test_secret(), user, ttl_secs).unwrap()
}

/// The binary, embedded (SQLite in `dir`), on `port` (0: any).
fn start(dir: &Path, port: u16, extra: &[(&str, &str)]) -> ServerProcess {
    let data = dir.display().to_string();
    let port = port.to_string();
    let mut env = vec![
        ("APP_ENV", "test"),
        ("APP_DATA_DIR", data.as_str()),
        ("APP_PORT", port.as_str()),
    ];
    env.extend_from_slice(extra);
    start_server_process(dir, &env)
}

/// Publishes over REST as `pia`; the seq.
async fn publish(port: u16, room: &str, text: &str) -> u64 {
    let (status, body) = publish_as(port, "pia", room, json!({"text": text}), None).await;
    assert_eq!(status, 201, "{body}");
    body["seq"].as_u64().unwrap()
}

/// A tab on the server's origin with the harness loaded.
async fn harness_page(browser: &mut Browser, port: u16) -> Page {
    let page = browser
        .open(&format!("http://127.0.0.1:{port}/healthz"), 1280, 800)
        .await;
    assert_eq!(browser.eval(&page, HARNESS).await, true);
    page
}

fn signal(server: &ServerProcess, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn seqs(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

#[actix_rt::test]
async fn two_browser_clients_chat_and_see_the_history() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 0, &[]);
    let port = server.port;
    // Two messages posted over REST before anyone joined: the first join shows them.
    publish(port, "lobby", "before-1").await;
    publish(port, "lobby", "before-2").await;
    let a = harness_page(&mut browser, port).await;
    let b = harness_page(&mut browser, port).await;
    let opened = browser.eval(&a, "H.open('a', {name: 'ann'})").await;
    assert_eq!(opened["state"], "connected", "{opened}");
    assert_eq!(opened["session"]["name"], "guest-ann");
    browser.eval(&b, "H.open('b', {name: 'bob'})").await;
    let joined = browser.eval(&a, "H.join('a', 'lobby')").await;
    assert_eq!(joined["seq"], 2);
    assert_eq!(joined["first"], true);
    browser.eval(&b, "H.join('b', 'lobby')").await;
    let history = browser
        .eval(
            &b,
            "H.waitFor(() => H.seqs('b', 'lobby').length >= 2).then(() => H.texts('b', 'lobby'))",
        )
        .await;
    assert_eq!(history, json!(["before-1", "before-2"]));

    // The publish promise resolves with the seq the server acknowledged.
    let sent = browser
        .eval(&a, "H.publish('a', 'lobby', {text: 'hello bob'})")
        .await;
    assert_eq!(sent, json!({"seq": 3}));
    let got = browser
        .eval(&b, "H.waitFor(() => H.seqs('b', 'lobby').length >= 3).then(() => H.clients.b.messages.lobby[2])")
        .await;
    assert_eq!(
        got,
        json!({"seq": 3, "data": {"text": "hello bob"}, "from": "guest-ann"})
    );
    let reply = browser
        .eval(&b, "H.publish('b', 'lobby', {text: 'hi ann'})")
        .await;
    assert_eq!(reply, json!({"seq": 4}));
    let texts = browser
        .eval(
            &a,
            "H.waitFor(() => H.seqs('a', 'lobby').length >= 4).then(() => H.texts('a', 'lobby'))",
        )
        .await;
    assert_eq!(
        texts,
        json!(["before-1", "before-2", "hello bob", "hi ann"])
    );

    // Typing reaches the other client, and is throttled on the client.
    let typed = browser
        .eval(&a, "[H.clients.a.client.room('lobby').typing(), H.clients.a.client.room('lobby').typing()]")
        .await;
    assert_eq!(typed, json!([true, false]));
    let typing = browser
        .eval(&b, "H.waitFor(() => H.clients.b.typing.lobby.length > 0).then(() => H.clients.b.typing.lobby)")
        .await;
    assert_eq!(typing, json!(["guest-ann"]));
    let members = browser
        .eval(
            &a,
            "H.clients.a.client.room('lobby').presence().then(m => m.map(x => x.name).sort())",
        )
        .await;
    assert_eq!(members, json!(["guest-ann", "guest-bob"]));
}

#[actix_rt::test]
async fn a_server_restart_mid_conversation_loses_and_repeats_nothing() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), 0, &[]);
    let port = server.port;
    let a = harness_page(&mut browser, port).await;
    let b = harness_page(&mut browser, port).await;
    let options = "{minReconnectDelayMs: 200, maxReconnectDelayMs: 1000}";
    browser
        .eval(&a, &format!("H.open('a', {{name: 'ann', ...{options}}})"))
        .await;
    browser
        .eval(&b, &format!("H.open('b', {{name: 'bob', ...{options}}})"))
        .await;
    browser.eval(&a, "H.join('a', 'lobby')").await;
    browser.eval(&b, "H.join('b', 'lobby')").await;
    for i in 1..=3 {
        let sent = browser
            .eval(&a, &format!("H.publish('a', 'lobby', {{text: 'a{i}'}})"))
            .await;
        assert_eq!(sent["seq"], i);
    }
    browser
        .eval(&b, "H.waitFor(() => H.seqs('b', 'lobby').length === 3)")
        .await;

    // The server dies; both clients notice and keep trying.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for page in [&a, &b] {
        browser
            .eval(
                page,
                "H.waitFor(() => Object.values(H.clients)[0].states.some(s => s.state === 'disconnected'))",
            )
            .await;
    }
    // Ann writes while the server is down: the client holds the messages.
    browser
        .eval(&a, "H.publishLater('x1', 'a', 'lobby', {text: 'during-1'})")
        .await;
    browser
        .eval(&a, "H.publishLater('x2', 'a', 'lobby', {text: 'during-2'})")
        .await;

    // It comes back on the same port; a backend publishes right away.
    let server = start(dir.path(), port, &[]);
    assert_eq!(server.port, port);
    publish(port, "lobby", "backend-1").await;
    publish(port, "lobby", "backend-2").await;

    let acked = browser
        .eval(
            &a,
            "H.waitFor(() => H.later.x1 && H.later.x2, 20000).then(() => [H.later.x1, H.later.x2])",
        )
        .await;
    assert!(
        acked[0]["seq"].is_u64() && acked[1]["seq"].is_u64(),
        "{acked}"
    );
    let want: Vec<u64> = (1..=7).collect();
    for (page, key) in [(&a, "a"), (&b, "b")] {
        let got = browser
            .eval(
                page,
                &format!(
                    "H.waitFor(() => H.seqs('{key}', 'lobby').length >= 7, 20000).then(() => H.seqs('{key}', 'lobby'))"
                ),
            )
            .await;
        assert_eq!(seqs(&got), want, "client {key}: every event once, in order");
        let mut texts: Vec<String> = serde_json::from_value(
            browser
                .eval(page, &format!("H.texts('{key}', 'lobby')"))
                .await,
        )
        .unwrap();
        texts.sort();
        assert_eq!(
            texts,
            [
                "a1",
                "a2",
                "a3",
                "backend-1",
                "backend-2",
                "during-1",
                "during-2"
            ]
        );
        let recoveries = browser
            .eval(page, &format!("H.clients.{key}.recoveries.lobby"))
            .await;
        assert_eq!(recoveries, json!([]), "the replay was complete");
        let state = browser
            .eval(page, &format!("H.clients.{key}.client.state"))
            .await;
        assert_eq!(state, "connected");
    }
    drop(server);
}

#[actix_rt::test]
async fn a_lost_ack_rejects_and_the_retry_publishes_once() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 0, &[]);
    let page = harness_page(&mut browser, server.port).await;
    browser
        .eval(&page, "H.open('a', {name: 'ann', ackTimeoutMs: 800})")
        .await;
    browser.eval(&page, "H.open('b', {name: 'bob'})").await;
    browser.eval(&page, "H.join('a', 'lobby')").await;
    browser.eval(&page, "H.join('b', 'lobby')").await;

    // The server stops answering (SIGSTOP): the publish is rejected after ackTimeoutMs.
    signal(&server, "-STOP");
    let failed = browser
        .eval(&page, "H.publish('a', 'lobby', {text: 'once'})")
        .await;
    signal(&server, "-CONT");
    assert_eq!(failed["error"], "timeout", "{failed}");
    let id = failed["id"]
        .as_str()
        .expect("the error names the publish id");

    // Retrying with the same id is safe: the server had published it, and answers with
    // the same seq instead of publishing again.
    let retried = browser
        .eval(
            &page,
            &format!("H.publish('a', 'lobby', {{text: 'once'}}, {{id: '{id}'}})"),
        )
        .await;
    assert_eq!(retried, json!({"seq": 1}));
    browser
        .eval(&page, "H.publish('a', 'lobby', {text: 'next'})")
        .await;
    let got = browser
        .eval(
            &page,
            "H.waitFor(() => H.seqs('b', 'lobby').length >= 2).then(() => H.texts('b', 'lobby'))",
        )
        .await;
    assert_eq!(got, json!(["once", "next"]));
}

#[actix_rt::test]
async fn a_bad_token_is_an_error_state_and_an_expiring_one_is_refreshed() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 0, &[("TOKEN_REFRESH_GRACE_MS", "3000")]);
    let page = harness_page(&mut browser, server.port).await;
    let refused = browser
        .eval(&page, "H.open('bad', {token: 'not-a-token'})")
        .await;
    assert_eq!(refused["state"], "disconnected", "{refused}");
    let last = refused["states"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        last["final"], true,
        "the client does not retry a refused token: {refused}"
    );
    assert_eq!(last["code"], 1008);
    assert_eq!(refused["errors"][0]["code"], "unauthorized");

    // A token that expires in a second, then a fresh one from getToken().
    let tokens = json!([token("ada", 1), token("ada", 3600)]);
    browser
        .eval(&page, &format!("H.tokens = {tokens}; true"))
        .await;
    let opened = browser
        .eval(&page, "H.open('ada', {getToken: () => H.tokens.shift()})")
        .await;
    assert_eq!(opened["session"]["user"], "ada");
    browser
        .eval(
            &page,
            "H.waitFor(() => H.clients.ada.refreshed === 1, 10000)",
        )
        .await;
    // Past the grace period the connection is still the same one.
    browser.eval(&page, "H.join('ada', 'lobby')").await;
    actix_rt::time::sleep(Duration::from_millis(3500)).await;
    let sent = browser
        .eval(&page, "H.publish('ada', 'lobby', {text: 'still here'})")
        .await;
    assert_eq!(sent, json!({"seq": 1}));
    let states = browser
        .eval(&page, "H.clients.ada.states.map(s => s.state)")
        .await;
    assert_eq!(
        states,
        json!(["connecting", "connected"]),
        "never disconnected"
    );
}

#[actix_rt::test]
async fn the_sse_helper_follows_a_room() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), 0, &[]);
    let page = harness_page(&mut browser, server.port).await;
    browser
        .eval(
            &page,
            "H.sse = []; H.feed = H.mod.subscribe('/rooms/news/events'); \
             H.feed.on('message', e => { H.sse.push(e); H.changed(); }); \
             H.feed.on('joined', () => { H.sseJoined = true; H.changed(); }); \
             H.waitFor(() => H.sseJoined)",
        )
        .await;
    publish(server.port, "news", "n1").await;
    publish(server.port, "news", "n2").await;
    let got = browser
        .eval(
            &page,
            "H.waitFor(() => H.sse.length >= 2).then(() => H.sse.map(e => [e.seq, e.data.text]))",
        )
        .await;
    assert_eq!(got, json!([[1, "n1"], [2, "n2"]]));
}

/// Where screenshots of the demo page go.
fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// Sets an input's value as typing would, and submits its form.
fn type_and_submit(input: &str, value: &str) -> String {
    format!(
        "(() => {{ const i = document.getElementById('{input}'); i.value = {v}; \
         i.dispatchEvent(new Event('input', {{bubbles: true}})); i.form.requestSubmit(); return true; }})()",
        v = serde_json::to_string(value).unwrap()
    )
}

/// Resolves when `cond` (a page expression) holds; polled by the page itself.
fn until(cond: &str, ms: u64) -> String {
    format!(
        "new Promise((resolve, reject) => {{ const end = Date.now() + {ms}; \
         const check = () => {{ let ok = false; try {{ ok = {cond}; }} catch (e) {{}} \
         if (ok) resolve(true); else if (Date.now() > end) reject(new Error('timed out: ' + {what})); \
         else setTimeout(check, 25); }}; check(); }})",
        what = serde_json::to_string(cond).unwrap()
    )
}

const MESSAGES: &str =
    "[...document.querySelectorAll('#messages li:not(.system) .text')].map(e => e.textContent)";

#[actix_rt::test]
async fn the_demo_page_chats_across_a_server_restart_without_a_click() {
    let Some(mut browser) = Browser::launch().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), 0, &[]);
    let port = server.port;
    publish(port, "lobby", "welcome").await;
    let url = format!("http://127.0.0.1:{port}/");
    let a = browser.open(&url, 1280, 800).await;
    let b = browser.open(&url, 1280, 800).await;
    for (page, name) in [(&a, "ann"), (&b, "bob")] {
        // The page connects by itself; Join waits for the connection.
        browser
            .eval(
                page,
                &until(
                    "document.getElementById('conn-state').dataset.state === 'connected'",
                    10000,
                ),
            )
            .await;
        browser.eval(page, &type_and_submit("name", name)).await;
        browser
            .eval(page, &until(&format!("document.getElementById('conn-state').textContent.includes('guest-{name}')"), 10000))
            .await;
        browser
            .eval(page, &type_and_submit("room-input", "lobby"))
            .await;
        // History on the first join.
        browser
            .eval(
                page,
                &until(&format!("{MESSAGES}.includes('welcome')"), 10000),
            )
            .await;
    }
    browser
        .eval(&a, &type_and_submit("msg", "hello from ann"))
        .await;
    browser
        .eval(
            &b,
            &until(&format!("{MESSAGES}.includes('hello from ann')"), 10000),
        )
        .await;
    let you = browser
        .eval(
            &a,
            "[...document.querySelectorAll('#member-list li')].map(e => e.textContent)",
        )
        .await;
    assert!(
        you.as_array()
            .unwrap()
            .iter()
            .any(|m| m == "guest-ann (you)"),
        "{you}"
    );

    // Restart the server; a message is published while the pages are away.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    browser
        .eval(
            &a,
            &until(
                "document.getElementById('conn-state').dataset.state !== 'connected'",
                10000,
            ),
        )
        .await;
    let server = start(dir.path(), port, &[]);
    publish(port, "lobby", "while you were away").await;
    for page in [&a, &b] {
        browser
            .eval(
                page,
                &until(
                    "document.getElementById('conn-state').dataset.state === 'connected'",
                    30000,
                ),
            )
            .await;
        browser
            .eval(
                page,
                &until(
                    &format!("{MESSAGES}.includes('while you were away')"),
                    10000,
                ),
            )
            .await;
        let shown = browser.eval(page, MESSAGES).await;
        assert_eq!(
            shown,
            json!(["welcome", "hello from ann", "while you were away"]),
            "each message once, in order"
        );
    }
    browser
        .eval(&b, &type_and_submit("msg", "back again"))
        .await;
    browser
        .eval(
            &a,
            &until(&format!("{MESSAGES}.includes('back again')"), 10000),
        )
        .await;

    // Screenshots for people to look at: a laptop and a phone.
    let dir = screenshot_dir();
    browser.screenshot(&a, &dir.join("demo-1280x800.png")).await;
    browser.resize(&a, 420, 800).await;
    browser.screenshot(&a, &dir.join("demo-420x800.png")).await;
    // On a laptop screen the dashboard's live log is visible without scrolling.
    browser.resize(&a, 1280, 800).await;
    let log_visible = browser
        .eval(&a, "(() => { const r = document.getElementById('sse-log').getBoundingClientRect(); return r.top < innerHeight - 40 && r.bottom > r.top; })()")
        .await;
    assert_eq!(log_visible, true, "the live log is on screen at 1280x800");
    drop(server);
}
