//! Many nodes over Redis: two courier servers share rooms through a real Redis, and survive
//! Redis going away and coming back.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{
    closed_port, service_url, services_required, spawn_app_with, wait_for_metric, SseClient,
    TestApp, WsClient,
};
use serde_json::{json, Value};

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

/// The `seq` of every event `ws` receives until it has `count` of them.
async fn event_seqs(ws: &mut WsClient, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let v = ws.json().await;
        if v["type"] == "event" {
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    seqs
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
    assert_eq!(event_seqs(&mut on_a, 2 * per_node).await, expected);
    assert_eq!(event_seqs(&mut on_b, 2 * per_node).await, expected);
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
    assert_eq!(event_seqs(&mut late, 5).await, vec![46, 47, 48, 49, 50]);
}

/// A Redis server of the test's own, on a port of its own.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if services_required() => panic!("redis-server cannot be started: {e}"),
            Err(e) => {
                eprintln!(
                    "skipping: redis-server cannot be started ({e}); CI=true makes this a failure"
                );
                return None;
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self {
            port,
            child: Some(child),
        })
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[actix_rt::test]
async fn nodes_keep_delivering_locally_without_redis_and_reconnect_by_themselves() {
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
    assert_eq!(event_seqs(&mut on_a, 1).await, [1]);
    assert_eq!(event_seqs(&mut on_b, 1).await, [1]);

    redis.stop();
    wait_for_metric(&a, "courier_bus_connected", 0.0).await;
    let (status, _, ready) = a.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["redis"]["status"], "down");

    // Local delivery goes on, numbered after the last seq the node saw.
    publisher
        .send_json(json!({"type": "publish", "room": "resilient", "data": 2, "id": "2"}))
        .await;
    let ack: Value = publisher.json_of("ack").await;
    assert_eq!(ack, json!({"type": "ack", "id": "2", "seq": 2}));
    assert_eq!(event_seqs(&mut on_a, 1).await, [2]);

    // Redis comes back (empty): both nodes resubscribe and cross-node delivery resumes,
    // with numbering that does not go backwards.
    let _redis = OwnRedis::start(port).expect("redis restarts");
    wait_for_metric(&a, "courier_bus_connected", 1.0).await;
    wait_for_metric(&b, "courier_bus_connected", 1.0).await;
    let (status, _, _) = a.get_json("/readyz").await;
    assert_eq!(status, 200);
    publisher
        .send_json(json!({"type": "publish", "room": "resilient", "data": 3, "id": "3"}))
        .await;
    let seq_a = event_seqs(&mut on_a, 1).await[0];
    assert!(seq_a > 2, "seq {seq_a} continues after the local ones");
    assert_eq!(
        event_seqs(&mut on_b, 1).await,
        [seq_a],
        "the other node hears it again"
    );
}
