//! The realtime core from real clients over loopback: the plain WebSocket endpoints, the
//! room protocol, replay, SSE, REST publish, bad input, heartbeats and slow consumers.

use crate::helpers::{
    raw_frame, spawn_app, spawn_app_with, test_secret, wait_for_metric, Received, SseClient,
    TestApp, WsClient,
};
use serde_json::{json, Value};

fn token(user: &str) -> String {
    courier::auth::mint(&test_secret(), user, 3600).unwrap()
}

async fn publish_rest(app: &TestApp, room: &str, data: Value, user: &str) -> (u16, Value) {
    let mut res = app
        .client
        .post(app.url(&format!("/rooms/{room}/messages")))
        .insert_header(("Authorization", format!("Bearer {}", token(user))))
        .send_json(&json!({ "data": data }))
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (res.status().as_u16(), body)
}

async fn joined(app: &TestApp, name: &str, room: &str) -> WsClient {
    let mut ws = WsClient::connect(app, &format!("/ws/json?name={name}")).await;
    ws.send_json(json!({"type": "join", "room": room})).await;
    let j = ws.json_of("joined").await;
    assert_eq!(j["room"], room);
    ws
}

#[actix_rt::test]
async fn ws_echoes_each_text_frame() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app, "/ws").await;
    ws.send("hello").await;
    assert_eq!(ws.text().await, "Echo: hello");
    ws.send("second").await;
    assert_eq!(ws.text().await, "Echo: second");
}

#[actix_rt::test]
async fn ws_authenticated_welcomes_a_valid_token_and_closes_others_with_1008() {
    let app = spawn_app().await;
    let mut ws =
        WsClient::connect(&app, &format!("/ws/authenticated?token={}", token("alice"))).await;
    assert_eq!(ws.text().await, "Welcome alice");
    ws.send("hi there").await;
    assert_eq!(ws.text().await, "alice: hi there");

    let mut ws = WsClient::connect(&app, "/ws/authenticated").await;
    let (code, reason) = ws.close_frame().await;
    assert_eq!(code, Some(1008));
    assert!(reason.contains("token is required"), "{reason}");

    let mut ws = WsClient::connect(&app, "/ws/authenticated?token=not-a-jwt").await;
    let (code, reason) = ws.close_frame().await;
    assert_eq!(code, Some(1008));
    assert!(reason.contains("invalid token"), "{reason}");

    let other = courier::auth::mint(
        &courier::config::Secret::new("some-other-secret-some-other-secret".into()),
        "mallory",
        3600,
    )
    .unwrap();
    let mut ws = WsClient::connect(&app, &format!("/ws/authenticated?token={other}")).await;
    assert_eq!(ws.close_frame().await.0, Some(1008));
}

#[actix_rt::test]
async fn ws_chat_announces_joins_messages_and_leaves() {
    let app = spawn_app().await;
    let mut a = WsClient::connect(&app, "/ws/chat/7").await;
    assert_eq!(a.text().await, "Client guest-7 joined the chat");
    let mut b = WsClient::connect(&app, "/ws/chat/8").await;
    assert_eq!(b.text().await, "Client guest-8 joined the chat");
    assert_eq!(a.text().await, "Client guest-8 joined the chat");
    b.send("hello everyone").await;
    assert_eq!(a.text().await, "Client guest-8: hello everyone");
    assert_eq!(b.text().await, "Client guest-8: hello everyone");
    drop(b);
    assert_eq!(a.text().await, "Client guest-8 left the chat");
}

#[actix_rt::test]
async fn ws_json_answers_ping_and_message() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.json().await, json!({"type": "pong"}));
    ws.send_json(json!({"type": "message", "content": "hi"}))
        .await;
    assert_eq!(
        ws.json().await,
        json!({"type": "response", "data": "Received: hi"})
    );
}

#[actix_rt::test]
async fn rooms_join_publish_ack_presence_typing_and_leave() {
    let app = spawn_app_with(&[("TYPING_INTERVAL_MS", "60000")]).await;
    let mut alice = joined(&app, "alice", "lobby").await;
    let mut bob = joined(&app, "bob", "lobby").await;
    let announced = alice.json_of("member_joined").await;
    assert_eq!(announced["member"]["name"], "guest-bob");
    assert_eq!(announced["member"]["user"], Value::Null);

    alice
        .send_json(json!({"type": "publish", "room": "lobby", "data": {"text": "hi"}, "id": "m1"}))
        .await;
    let mut got_ack = false;
    let mut got_event = false;
    while !(got_ack && got_event) {
        let v = alice.json().await;
        match v["type"].as_str().unwrap() {
            "ack" => {
                assert_eq!(v, json!({"type": "ack", "id": "m1", "seq": 1}));
                got_ack = true;
            }
            "event" => {
                assert_eq!(v["seq"], 1);
                got_event = true;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let ev = bob.json_of("event").await;
    assert_eq!(ev["room"], "lobby");
    assert_eq!(ev["seq"], 1);
    // A guest is shown as one, and carries no user.
    assert_eq!(ev["from"], "guest-alice");
    assert_eq!(ev["user"], Value::Null);
    assert_eq!(ev["data"], json!({"text": "hi"}));
    assert!(chrono::DateTime::parse_from_rfc3339(ev["ts"].as_str().unwrap()).is_ok());

    bob.send_json(json!({"type": "presence", "room": "lobby"}))
        .await;
    let p = bob.json_of("presence").await;
    let mut names: Vec<&str> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["guest-alice", "guest-bob"]);

    // Typing is relayed once per interval, however often it is sent.
    for _ in 0..3 {
        bob.send_json(json!({"type": "typing", "room": "lobby"}))
            .await;
    }
    // Bob's pong means his session has handed the three to the broker; the broker takes
    // its messages in order, so its answer to Alice's presence request comes after any
    // typing relayed to her.
    bob.send_json(json!({"type": "ping"})).await;
    bob.json_of("pong").await;
    alice
        .send_json(json!({"type": "presence", "room": "lobby"}))
        .await;
    let mut typing = 0;
    loop {
        let v = alice.json().await;
        match v["type"].as_str().unwrap() {
            "typing" => {
                assert_eq!(v["from"], "guest-bob");
                typing += 1;
            }
            "presence" => break,
            _ => {}
        }
    }
    assert_eq!(typing, 1, "typing is debounced");

    bob.send_json(json!({"type": "leave", "room": "lobby"}))
        .await;
    assert_eq!(bob.json_of("left").await["room"], "lobby");
    let left = alice.json_of("member_left").await;
    assert_eq!(left["member"]["name"], "guest-bob");
    bob.send_json(json!({"type": "typing", "room": "lobby"}))
        .await;
    assert_eq!(bob.json_of("error").await["code"], "not_joined");
}

#[actix_rt::test]
async fn join_with_since_replays_in_order_before_live_events() {
    let app = spawn_app().await;
    for i in 1..=5 {
        let (status, body) = publish_rest(&app, "replay", json!({"n": i}), "carol").await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body, json!({"room": "replay", "seq": i}));
    }
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send_json(json!({"type": "join", "room": "replay", "since": 2}))
        .await;
    let joined = ws.json().await;
    assert_eq!(
        (&joined["type"], &joined["seq"], &joined["recovered"]),
        (&json!("joined"), &json!(5), &json!(true))
    );
    assert!(joined["epoch"].is_string());
    for seq in 3..=5 {
        let ev = ws.json().await;
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["seq"], seq);
        assert_eq!(ev["data"]["n"], seq);
    }
    publish_rest(&app, "replay", json!({"n": 6}), "carol").await;
    assert_eq!(ws.json().await["seq"], 6);

    // A client that is up to date gets nothing replayed.
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send_json(json!({"type": "join", "room": "replay", "since": 6}))
        .await;
    ws.json_of("joined").await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.json().await["type"], "pong");
}

#[actix_rt::test]
async fn history_is_bounded_and_a_gap_is_reported() {
    let app = spawn_app_with(&[("ROOM_HISTORY_SIZE", "3")]).await;
    for i in 1..=6 {
        publish_rest(&app, "small", json!(i), "dave").await;
    }
    let (status, _, body) = app.get_json("/rooms/small/history").await;
    assert_eq!(status, 200);
    let seqs: Vec<u64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    let (_, _, body) = app.get_json("/rooms/small/history?since=4&limit=1").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["seq"], 5);

    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send_json(json!({"type": "join", "room": "small", "since": 1}))
        .await;
    ws.json_of("joined").await;
    let gap = ws.json().await;
    assert_eq!(gap["code"], "history_truncated", "{gap}");
    assert_eq!(ws.json().await["seq"], 4);
}

#[actix_rt::test]
async fn rest_publish_reaches_websocket_and_sse_subscribers_alike() {
    let app = spawn_app().await;
    let mut ws = joined(&app, "erin", "news").await;
    let mut sse = SseClient::connect(&app, "/rooms/news/events", None).await;
    // The SSE subscriber is registered once the broker answers a later request.
    app.get_json("/rooms").await;
    let (status, body) =
        publish_rest(&app, "news", json!({"headline": "courier ships"}), "frank").await;
    assert_eq!(status, 201);
    assert_eq!(body["seq"], 1);

    let ev = ws.json_of("event").await;
    assert_eq!(ev["data"]["headline"], "courier ships");
    assert_eq!(ev["from"], "frank");
    let sev = sse.next_event().await.unwrap();
    assert_eq!(sev.seq(), Some(1));
    assert_eq!(sev.event.as_deref(), Some("message"));
    let data: Value = serde_json::from_str(&sev.data).unwrap();
    assert_eq!(data, ev, "SSE carries the same event as the WebSocket");
}

#[actix_rt::test]
async fn room_sse_replays_from_last_event_id_or_since() {
    let app = spawn_app().await;
    for i in 1..=4 {
        publish_rest(&app, "feed", json!(i), "gina").await;
    }
    let mut sse = SseClient::connect(&app, "/rooms/feed/events", Some("2")).await;
    assert_eq!(sse.next_event().await.unwrap().seq(), Some(3));
    assert_eq!(sse.next_event().await.unwrap().seq(), Some(4));
    let mut sse = SseClient::connect(&app, "/rooms/feed/events?since=3", None).await;
    assert_eq!(sse.next_event().await.unwrap().seq(), Some(4));
    publish_rest(&app, "feed", json!(5), "gina").await;
    assert_eq!(sse.next_event().await.unwrap().seq(), Some(5));

    let res = app
        .client
        .get(app.url("/rooms/feed/events"))
        .insert_header(("Last-Event-ID", "abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
}

#[actix_rt::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_open() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    let cases = [
        ("{not json", "invalid_json"),
        ("[1,2]", "invalid_message"),
        (r#"{"room":"lobby"}"#, "missing_type"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"join"}"#, "invalid_message"),
        (
            r#"{"type":"join","room":"lobby","colour":"red"}"#,
            "invalid_message",
        ),
        (r#"{"type":"publish","room":"lobby"}"#, "invalid_message"),
        (r#"{"type":"join","room":"has space"}"#, "invalid_room"),
        (r#"{"type":"join","room":""}"#, "invalid_room"),
    ];
    for (frame, code) in cases {
        ws.send(frame).await;
        let v = ws.json().await;
        assert_eq!(v["type"], "error", "{frame}");
        assert_eq!(v["code"], code, "{frame}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send_message(awc::ws::Message::Binary(vec![1u8, 2, 3].into()))
        .await;
    assert_eq!(ws.json().await["code"], "unsupported");
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        ws.json().await,
        json!({"type": "pong"}),
        "still open after bad input"
    );
}

#[actix_rt::test]
async fn invalid_utf8_closes_with_1007() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send_raw(&raw_frame(0x1, &[0x7b, 0xff, 0xfe, 0x7d]))
        .await;
    let (code, _) = ws.close_frame().await;
    assert_eq!(code, Some(1007));
}

#[actix_rt::test]
async fn oversize_frames_close_with_1009() {
    let app = spawn_app_with(&[("WS_MAX_MESSAGE_BYTES", "1024")]).await;
    let mut ws = WsClient::connect(&app, "/ws").await;
    ws.send(&"x".repeat(1000)).await;
    assert_eq!(ws.text().await.len(), "Echo: ".len() + 1000);
    ws.send(&"x".repeat(2000)).await;
    let (code, reason) = ws.close_frame().await;
    assert_eq!(code, Some(1009));
    assert!(reason.contains("1024"), "{reason}");

    // A message split into continuation frames counts as a whole.
    let mut ws = WsClient::connect(&app, "/ws").await;
    ws.send_raw(&{
        let mut first = raw_frame(0x1, &[b'a'; 600]);
        first[0] = 0x01; // FIN clear: first fragment of a text message
        first
    })
    .await;
    ws.send_raw(&raw_frame(0x0, &[b'b'; 600])).await;
    assert_eq!(ws.close_frame().await.0, Some(1009));
}

#[actix_rt::test]
async fn a_flood_is_refused_then_closed_with_1008() {
    let app = spawn_app_with(&[
        ("WS_RATE_PER_SEC", "5"),
        ("WS_RATE_BURST", "5"),
        ("WS_FLOOD_LIMIT", "10"),
    ])
    .await;
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    for _ in 0..30 {
        ws.send_json(json!({"type": "ping"})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let close = loop {
        match ws.next().await {
            Received::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str().unwrap() {
                    "pong" => pongs += 1,
                    "error" => {
                        assert_eq!(v["code"], "rate_limited");
                        limited += 1;
                    }
                    other => panic!("{other}"),
                }
            }
            Received::Close(code, reason) => break (code, reason),
            Received::Ended => panic!("no close frame"),
        }
    };
    // The burst of 5, plus whatever the bucket refilled while the frames were arriving.
    assert!((5..=10).contains(&pongs), "the burst is served: {pongs}");
    assert_eq!(limited, 10, "then refusals up to the flood limit");
    assert_eq!(close.0, Some(1008));
    assert!(close.1.contains("rate"), "{}", close.1);
}

#[actix_rt::test]
async fn rooms_per_connection_are_capped() {
    let app = spawn_app_with(&[("WS_MAX_ROOMS_PER_CONNECTION", "2")]).await;
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    for room in ["a", "b"] {
        ws.send_json(json!({"type": "join", "room": room})).await;
        ws.json_of("joined").await;
    }
    ws.send_json(json!({"type": "join", "room": "c"})).await;
    assert_eq!(ws.json().await["code"], "too_many_rooms");
    ws.send_json(json!({"type": "leave", "room": "a"})).await;
    ws.json_of("left").await;
    ws.send_json(json!({"type": "join", "room": "c"})).await;
    assert_eq!(ws.json().await["type"], "joined");
}

#[actix_rt::test]
async fn anonymous_publishing_can_be_refused() {
    let app = spawn_app_with(&[("ANONYMOUS_PUBLISH", "false")]).await;
    let mut anon = WsClient::connect(&app, "/ws/json?name=anon").await;
    anon.send_json(json!({"type": "publish", "room": "r", "data": 1, "id": "x"}))
        .await;
    assert_eq!(anon.json().await["code"], "unauthorized");
    let mut user = WsClient::connect(&app, &format!("/ws/json?token={}", token("hank"))).await;
    user.send_json(json!({"type": "publish", "room": "r", "data": 1, "id": "x"}))
        .await;
    assert_eq!(
        user.json().await,
        json!({"type": "ack", "id": "x", "seq": 1})
    );
    let mut bad = WsClient::connect_raw(&app, "/ws/json?token=garbage").await;
    assert_eq!(bad.close_frame().await.0, Some(1008));
}

#[actix_rt::test]
async fn a_silent_client_is_dropped_and_leaves_its_rooms() {
    let app = spawn_app_with(&[
        ("WS_HEARTBEAT_INTERVAL_MS", "100"),
        // Long enough that the watcher, which answers no pings until the silent client
        // has joined, is not itself timed out on a loaded machine.
        ("WS_CLIENT_TIMEOUT_MS", "1500"),
    ])
    .await;
    let mut watcher = joined(&app, "watcher", "quiet").await;
    // This client never answers pings or sends anything after joining.
    let mut silent = joined(&app, "silent", "quiet").await;
    // The watcher answers every ping while the silent one is timed out.
    let watch = async {
        use futures_util::{SinkExt, StreamExt};
        loop {
            match actix_rt::time::timeout(crate::helpers::RECV_LIMIT, watcher.framed.next())
                .await
                .unwrap()
            {
                Some(Ok(awc::ws::Frame::Ping(p))) => watcher
                    .framed
                    .send(awc::ws::Message::Pong(p))
                    .await
                    .unwrap(),
                Some(Ok(awc::ws::Frame::Text(t))) => {
                    let v: Value = serde_json::from_slice(&t).unwrap();
                    if v["type"] == "member_left" {
                        break v;
                    }
                }
                other => panic!("the watcher was disconnected: {other:?}"),
            }
        }
    };
    let (left, (code, reason)) = futures_util::future::join(watch, silent.close_frame()).await;
    assert_eq!(code, Some(1001));
    assert!(reason.contains("heartbeat"), "{reason}");
    assert_eq!(left["member"]["name"], "guest-silent");
    let (_, _, p) = app.get_json("/rooms/quiet/presence").await;
    assert_eq!(p["members"].as_array().unwrap().len(), 1);
}

#[actix_rt::test]
async fn a_client_that_stops_reading_is_dropped_and_others_keep_receiving() {
    let app = spawn_app_with(&[
        ("OUTBOUND_QUEUE_BYTES", "262144"),
        // Off: the evicted client's connection must end without the kernel's help (it
        // would also race the eviction on a busy machine).
        ("TCP_USER_TIMEOUT_MS", "0"),
        ("WS_HEARTBEAT_INTERVAL_MS", "60000"),
        ("WS_CLIENT_TIMEOUT_MS", "120000"),
    ])
    .await;
    // The slow client joins over a raw socket with a tiny receive buffer, then never reads.
    let slow = {
        use std::io::Write;
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], app.port)).into())
            .unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        write!(
            stream,
            "GET /ws/json?name=slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        stream
            .write_all(&raw_frame(0x1, br#"{"type":"join","room":"firehose"}"#))
            .unwrap();
        stream
    };
    let mut fast = joined(&app, "fast", "firehose").await;
    wait_for_metric(&app, "courier_room_members", 2.0).await;

    let payload = "y".repeat(60_000);
    let total = 200;
    let publish = async {
        for _ in 0..total {
            let (status, _) = publish_rest(&app, "firehose", json!(payload), "pub").await;
            assert_eq!(status, 201);
        }
    };
    // The fast client reads as the messages come and gets every one, in order.
    let read = async {
        let mut next = 1;
        while next <= total {
            let v = fast.json().await;
            if v["type"] == "event" {
                assert_eq!(v["seq"], next);
                next += 1;
            }
        }
    };
    futures_util::future::join(publish, read).await;
    wait_for_metric(&app, "courier_slow_clients_dropped_total", 1.0).await;
    // The slow client's session is gone and so is its membership.
    wait_for_metric(&app, "courier_ws_connections", 1.0).await;
    let (_, _, p) = app.get_json("/rooms/firehose/presence").await;
    let names: Vec<&str> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["guest-fast"]);
    drop(slow);
}

#[actix_rt::test]
async fn sse_sends_ten_messages_by_default() {
    let app = spawn_app_with(&[("SSE_DEMO_INTERVAL_MS", "5")]).await;
    let mut sse = SseClient::connect(&app, "/sse", None).await;
    for i in 0..10 {
        let ev = sse.next_event().await.unwrap();
        assert_eq!(ev.event.as_deref(), Some("message"));
        assert_eq!(ev.data, format!("Message {i}"));
    }
    assert_eq!(sse.next_event().await, None, "the stream ends after ten");
    let (status, _, _) = app.get_json("/sse?count=0").await;
    assert_eq!(status, 422);
}

#[actix_rt::test]
async fn sse_heartbeat_sends_iso_times() {
    let app = spawn_app_with(&[("SSE_HEARTBEAT_INTERVAL_MS", "50")]).await;
    let mut sse = SseClient::connect(&app, "/sse/heartbeat", None).await;
    for _ in 0..2 {
        let ev = sse.next_event().await.unwrap();
        assert_eq!(ev.event.as_deref(), Some("heartbeat"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(&ev.data).is_ok(),
            "{}",
            ev.data
        );
    }
}

#[actix_rt::test]
async fn sse_updates_report_room_activity() {
    let app = spawn_app_with(&[("SSE_UPDATES_COALESCE_MS", "20")]).await;
    let mut sse = SseClient::connect(&app, "/sse/updates", None).await;
    wait_for_metric(&app, "courier_sse_connections", 1.0).await;
    app.get_json("/rooms").await; // the broker and the feed have settled
    let _ws = joined(&app, "ivy", "dash").await;
    let ev = sse.next_event().await.unwrap();
    assert_eq!(ev.event.as_deref(), Some("update"));
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(v["kind"], "member_joined");
    assert_eq!(v["room"], "dash");
    assert_eq!(v["name"], "guest-ivy");
    publish_rest(&app, "dash", json!(1), "ivy").await;
    publish_rest(&app, "dash", json!(2), "ivy").await;
    let v: Value = serde_json::from_str(&sse.next_event().await.unwrap().data).unwrap();
    assert_eq!(v["kind"], "room_activity");
    assert_eq!(v["room"], "dash");
}

#[actix_rt::test]
async fn a_disconnected_sse_subscriber_is_removed_at_once() {
    let app = spawn_app().await;
    let sse = SseClient::connect(&app, "/rooms/gone/events", None).await;
    let feed = SseClient::connect(&app, "/sse/updates", None).await;
    wait_for_metric(&app, "courier_sse_connections", 2.0).await;
    let (_, _, rooms) = app.get_json("/rooms").await;
    assert_eq!(rooms["rooms"][0]["subscribers"], 1);
    drop(sse);
    drop(feed);
    wait_for_metric(&app, "courier_sse_connections", 0.0).await;
    // The room held nothing but its subscriber: it is let go with it.
    let (_, _, rooms) = app.get_json("/rooms").await;
    assert_eq!(rooms["rooms"], serde_json::json!([]));
}

#[actix_rt::test]
async fn rest_rooms_refuse_bad_input() {
    let app = spawn_app_with(&[("WS_MAX_MESSAGE_BYTES", "1024")]).await;
    let res = app
        .client
        .post(app.url("/rooms/r/messages"))
        .send_json(&json!({"data": 1}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = app
        .client
        .post(app.url("/rooms/r/messages"))
        .insert_header(("Authorization", "Bearer nope"))
        .send_json(&json!({"data": 1}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let (status, body) = publish_rest(&app, "bad%20room", json!(1), "x").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = publish_rest(&app, "r", json!("z".repeat(2000)), "x").await;
    assert_eq!(status, 413, "{body}");
    let (status, _, _) = app.get_json("/rooms/r/history?limit=0").await;
    assert_eq!(status, 422);
    let (status, _, _) = app.get_json("/rooms/r/history?since=x").await;
    assert_eq!(status, 400);
    let (status, _, body) = app.get_json("/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"rooms": [], "scope": "node"}),
        "refused publishes created nothing"
    );
}

#[actix_rt::test]
async fn shutdown_closes_websockets_with_1001() {
    let app = spawn_app().await;
    let mut ws = joined(&app, "kim", "lobby").await;
    app.shutdown.shutdown().await;
    let (code, reason) = ws.close_frame().await;
    assert_eq!(code, Some(1001));
    assert!(reason.contains("shutting down"), "{reason}");
}

#[actix_rt::test]
async fn the_demo_page_is_served_without_external_assets() {
    let app = spawn_app().await;
    let (status, html) = app.get_text("/").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("/ws/json"),
        "the page uses the public protocol"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );
}

#[actix_rt::test]
async fn an_extreme_since_is_harmless() {
    let app = spawn_app().await;
    publish_rest(&app, "edge", json!(1), "lou").await;
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send(r#"{"type":"join","room":"edge","since":18446744073709551615}"#)
        .await;
    // A since from the future says nothing about what the client missed.
    let joined = ws.json().await;
    assert_eq!(
        (&joined["type"], &joined["seq"], &joined["recovered"]),
        (&json!("joined"), &json!(1), &json!(false))
    );
    let mut sse =
        SseClient::connect(&app, "/rooms/edge/events", Some("18446744073709551615")).await;
    publish_rest(&app, "edge", json!(2), "lou").await;
    assert_eq!(ws.json_of("event").await["seq"], 2);
    assert_eq!(sse.next_event().await.unwrap().seq(), Some(2));
}

#[actix_rt::test]
async fn a_replay_larger_than_the_queue_is_cut_to_the_newest_events() {
    let app = spawn_app_with(&[("OUTBOUND_QUEUE_MESSAGES", "8")]).await;
    for i in 1..=20 {
        publish_rest(&app, "long", json!(i), "max").await;
    }
    let mut ws = WsClient::connect(&app, "/ws/json").await;
    ws.send_json(json!({"type": "join", "room": "long", "since": 0}))
        .await;
    assert_eq!(ws.json().await["type"], "joined");
    let notice = ws.json().await;
    assert_eq!(notice["code"], "history_truncated", "{notice}");
    let mut seqs = Vec::new();
    for _ in 0..4 {
        seqs.push(ws.json_of("event").await["seq"].as_u64().unwrap());
    }
    assert_eq!(
        seqs,
        [17, 18, 19, 20],
        "the newest events that fit half the queue"
    );
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        ws.json().await["type"],
        "pong",
        "the client stays connected"
    );
}

/// RFC 6455 §7.1.1: once the closing handshake is complete the server closes the TCP
/// connection first. A client that started the close is answered, and the connection ends
/// right after, without waiting out the deadline meant for clients that never answer.
#[actix_rt::test]
async fn a_client_that_closes_is_answered_and_let_go_at_once() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app, "/ws/json?name=bye").await;
    ws.send_message(awc::ws::Message::Close(Some(
        awc::ws::CloseCode::Normal.into(),
    )))
    .await;
    assert_eq!(ws.next().await, Received::Close(Some(1000), String::new()));
    let started = std::time::Instant::now();
    assert_eq!(ws.next().await, Received::Ended);
    let waited = started.elapsed();
    let deadline = courier_actors::client_queue::CLOSE_HANDSHAKE_TIMEOUT;
    assert!(
        waited < deadline / 2,
        "the server waited {waited:?} for the client (its deadline for silent clients is {deadline:?})"
    );
}
