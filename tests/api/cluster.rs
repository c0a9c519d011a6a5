//! Many nodes over Redis: two courier servers share rooms through a real Redis, and survive
//! Redis going away and coming back.

use crate::helpers::{
    closed_port, service_url, spawn_app_with, wait_for_metric, OwnRedis, SseClient, TestApp,
    WsClient,
};
use serde_json::json;

fn unique_app_name() -> String {
    format!("courier-test-{:08x}", rand::random::<u32>())
}

async fn node(redis: &str, app_name: &str) -> TestApp {
    let app = spawn_app_with(&[("REDIS_URL", redis), ("APP_NAME", app_name)]).await;
    wait_for_metric(&app, "courier_bus_connected", 1.0).await;
    app
}

async fn join(app: &TestApp, name: &str, room: &str) -> WsClient {
    let mut ws = WsClient::connect(app, &format!("/ws/json?name={name}")).await;
    ws.send_json(json!({"type": "join", "room": room})).await;
    ws.json_of("joined").await;
    ws
}

#[actix_rt::test]
async fn two_nodes_share_a_room_in_seq_order() {
    let Some(redis) = service_url("COURIER_TEST_REDIS_URL", Some("redis://127.0.0.1:6379/0"))
    else {
        return;
    };
    let name = unique_app_name();
    let a = node(&redis, &name).await;
    let b = node(&redis, &name).await;
    let mut on_a = join(&a, "ann", "shared").await;
    let mut on_b = join(&b, "ben", "shared").await;
    let mut sse_b = SseClient::connect(&b, "/rooms/shared/events", None).await;
    b.get_json("/rooms").await;

    // Both nodes publish at once; every subscriber sees one numbering, in order.
    let per_node = 25;
    let mut pub_a = WsClient::connect(&a, "/ws/json?name=pa").await;
    let mut pub_b = WsClient::connect(&b, "/ws/json?name=pb").await;
    for i in 0..per_node {
        pub_a
            .send_json(json!({"type": "publish", "room": "shared", "data": {"from": "a", "i": i}}))
            .await;
        pub_b
            .send_json(json!({"type": "publish", "room": "shared", "data": {"from": "b", "i": i}}))
            .await;
    }
    let expected: Vec<u64> = (1..=2 * per_node as u64).collect();
    assert_eq!(on_a.event_seqs(2 * per_node).await, expected);
    assert_eq!(on_b.event_seqs(2 * per_node).await, expected);
    for seq in 1..=2 * per_node as u64 {
        let ev = sse_b.next_event().await.unwrap();
        assert_eq!(ev.seq(), Some(seq), "SSE on the other node, in order");
    }

    // Presence and history are the room's, not the node's.
    let (_, _, p) = a.get_json("/rooms/shared/presence").await;
    let mut names: Vec<&str> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["guest-ann", "guest-ben"]);
    let (_, _, h) = b.get_json("/rooms/shared/history?since=40").await;
    let seqs: Vec<u64> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (41..=50).collect::<Vec<_>>());

    // A member joining on one node is announced on the other.
    let _carl = join(&b, "carl", "shared").await;
    assert_eq!(
        on_a.json_of("member_joined").await["member"]["name"],
        "guest-carl"
    );

    // A late joiner on a fresh node replays from Redis.
    let c = node(&redis, &name).await;
    let mut late = WsClient::connect(&c, "/ws/json?name=late").await;
    late.send_json(json!({"type": "join", "room": "shared", "since": 45}))
        .await;
    assert_eq!(late.json_of("joined").await["seq"], 50);
    assert_eq!(late.event_seqs(5).await, vec![46, 47, 48, 49, 50]);
}

/// While Redis is down nothing is numbered anywhere: publishes are refused, so no two
/// events can share a number. When Redis comes back empty, the room numbers again in a new
/// epoch and every client is told (`resync`, `recovered: false`).
#[actix_rt::test]
async fn without_redis_publishes_are_refused_and_a_lost_room_starts_a_new_epoch() {
    let port = closed_port();
    let Some(mut redis) = OwnRedis::start(port) else {
        return;
    };
    let name = unique_app_name();
    let a = node(&redis.url(), &name).await;
    let b = node(&redis.url(), &name).await;
    let mut on_a = join(&a, "amy", "resilient").await;
    let mut on_b = join(&b, "bob", "resilient").await;
    let mut publisher = WsClient::connect(&a, "/ws/json?name=pub").await;
    publisher
        .send_json(json!({"type": "publish", "room": "resilient", "data": 1, "id": "1"}))
        .await;
    assert_eq!(publisher.json_of("ack").await["seq"], 1);
    assert_eq!(on_a.event_seqs(1).await, [1]);
    assert_eq!(on_b.event_seqs(1).await, [1]);

    redis.stop();
    wait_for_metric(&a, "courier_bus_connected", 0.0).await;
    let (status, _, ready) = a.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["redis"]["status"], "down");

    // Refused, over WebSocket and REST alike: nothing is numbered locally.
    publisher
        .send_json(json!({"type": "publish", "room": "resilient", "data": 2, "id": "2"}))
        .await;
    assert_eq!(publisher.json_of("error").await["code"], "unavailable");
    let res = a
        .client
        .post(a.url("/rooms/resilient/messages"))
        .insert_header(("Authorization", format!("Bearer {}", token("ray"))))
        .send_json(&json!({"data": 2}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);

    // Redis comes back empty: both nodes resubscribe; the retried publish starts a new
    // epoch, and every client hears that first.
    let _redis = OwnRedis::start(port).expect("redis restarts");
    wait_for_metric(&a, "courier_bus_connected", 1.0).await;
    wait_for_metric(&b, "courier_bus_connected", 1.0).await;
    let (status, _, _) = a.get_json("/readyz").await;
    assert_eq!(status, 200);
    publisher
        .send_json(json!({"type": "publish", "room": "resilient", "data": 2, "id": "2"}))
        .await;
    assert_eq!(publisher.json_of("ack").await["seq"], 1);
    for ws in [&mut on_a, &mut on_b] {
        let resync = ws.json_of("resync").await;
        assert_eq!(resync["recovered"], false, "{resync}");
        assert!(resync["epoch"].is_string(), "{resync}");
        assert_eq!(ws.event_seqs(1).await, [1]);
    }
}

fn token(user: &str) -> String {
    courier::auth::mint(&crate::helpers::test_secret(), user, 3600).unwrap()
}
