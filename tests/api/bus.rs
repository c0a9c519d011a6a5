//! Rooms over Redis, as the nodes and Redis see them: a node subscribes only to the rooms
//! its clients watch; an idempotency key holds across nodes; a room Redis lost starts a new
//! epoch; presence heals by itself; and all of it on a Redis Cluster of three masters.

use serde_json::{json, Value};

use crate::helpers::{
    closed_port, publish_as, redis_cli, spawn_app_with, wait_for_metric, OwnCluster, OwnRedis,
    TestApp, WsClient,
};

fn app_name() -> String {
    format!("courier-bus-{:08x}", rand::random::<u32>())
}

async fn node(url: &str, name: &str, cluster: bool) -> TestApp {
    let cluster = if cluster { "true" } else { "false" };
    let app = spawn_app_with(&[
        ("REDIS_URL", url),
        ("REDIS_CLUSTER", cluster),
        ("APP_NAME", name),
    ])
    .await;
    wait_for_metric(&app, "courier_bus_connected", 1.0).await;
    app
}

async fn publish(app: &TestApp, room: &str, data: Value, key: Option<&str>) -> (u16, Value) {
    publish_as(app.port, "pat", room, data, key).await
}

async fn joined(app: &TestApp, room: &str) -> (WsClient, Value) {
    let mut ws = WsClient::connect(app, "/ws/json?name=w").await;
    ws.send_json(json!({"type": "join", "room": room})).await;
    let joined = ws.json_of("joined").await;
    (ws, joined)
}

/// Subscribers of a room's shard channel, summed over `ports` (the masters of a cluster,
/// or the one Redis).
fn shard_subscribers(ports: &[u16], name: &str, room: &str) -> u64 {
    let channel = format!("{name}:room:{{{room}}}");
    ports
        .iter()
        .map(|p| {
            let out = redis_cli(*p, &["pubsub", "shardnumsub", &channel]);
            out.lines()
                .nth(1)
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// The shared story, on one Redis or a cluster.
async fn rooms_over_redis(url: &str, ports: &[u16], cluster: bool) {
    let name = app_name();
    let a = node(url, &name, cluster).await;
    let b = node(url, &name, cluster).await;

    // Only the node with a member in a room subscribes to it.
    let (mut on_a, _) = joined(&a, "north").await;
    assert_eq!(shard_subscribers(ports, &name, "north"), 1);
    assert_eq!(shard_subscribers(ports, &name, "south"), 0);

    // A publish on the node that does not serve the room reaches the one that does, once.
    let (status, first) = publish(&b, "north", json!("one"), Some("k-1")).await;
    assert_eq!((status, &first["seq"]), (201, &json!(1)), "{first}");
    // The same key on the other node is the same message.
    let (status, again) = publish(&a, "north", json!("one"), Some("k-1")).await;
    assert_eq!((status, &again["seq"]), (201, &json!(1)), "{again}");
    let (_, second) = publish(&b, "north", json!("two"), Some("k-2")).await;
    assert_eq!(second["seq"], 2);
    assert_eq!(on_a.event_seqs(2).await, vec![1, 2], "each once");

    // Presence and the room list are the cluster's.
    let (mut on_b, _) = joined(&b, "north").await;
    assert_eq!(shard_subscribers(ports, &name, "north"), 2);
    wait_for_presence(&a, "north", 2).await;
    wait_for_rooms(&b, "north", 2).await;

    // The last member leaving a node ends that node's subscription.
    on_b.send_json(json!({"type": "leave", "room": "north"}))
        .await;
    on_b.json_of("left").await;
    wait_for(|| shard_subscribers(ports, &name, "north") == 1).await;
    drop(on_a);
    wait_for(|| shard_subscribers(ports, &name, "north") == 0).await;
}

/// Polls the room's presence on `app` until it has `members` (each node writes its
/// members' presence to Redis after their join is answered, not before).
async fn wait_for_presence(app: &TestApp, room: &str, members: usize) {
    let deadline = std::time::Instant::now() + crate::helpers::RECV_LIMIT;
    loop {
        let (_, _, p) = app.get_json(&format!("/rooms/{room}/presence")).await;
        if p["members"].as_array().map(Vec::len) == Some(members) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the presence of {room} never had {members} members: {p}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls `/rooms` on `app` until `room` is listed with `members` (cluster-wide).
async fn wait_for_rooms(app: &TestApp, room: &str, members: u64) {
    let deadline = std::time::Instant::now() + crate::helpers::RECV_LIMIT;
    loop {
        let (_, _, body) = app.get_json("/rooms").await;
        let found = body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == room && r["members"] == members);
        if found && body["scope"] == "cluster" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/rooms never listed {room}: {body}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls `check` (a look at Redis) until it holds.
async fn wait_for(check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + crate::helpers::RECV_LIMIT;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "the condition never held"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn nodes_serve_rooms_on_one_redis() {
    let Some(redis) = OwnRedis::start(closed_port()) else {
        return;
    };
    rooms_over_redis(&redis.url(), &[redis.port], false).await;
}

#[actix_rt::test]
async fn nodes_serve_rooms_on_a_redis_cluster() {
    let Some(cluster) = OwnCluster::start() else {
        return;
    };
    let masters: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    rooms_over_redis(&cluster.url(), &masters, true).await;
}

#[actix_rt::test]
async fn a_room_redis_lost_starts_a_new_epoch_and_old_positions_are_not_trusted() {
    let Some(redis) = OwnRedis::start(closed_port()) else {
        return;
    };
    let name = app_name();
    let a = node(&redis.url(), &name, false).await;
    let (mut ws, _) = joined(&a, "vault").await;
    for i in 1..=3 {
        publish(&a, "vault", json!(i), None).await;
    }
    assert_eq!(ws.event_seqs(3).await, vec![1, 2, 3]);
    let mut late = WsClient::connect(&a, "/ws/json?name=late").await;
    late.send_json(json!({"type": "join", "room": "vault", "since": 1}))
        .await;
    let before = late.json_of("joined").await;
    let old_epoch = before["epoch"].as_str().unwrap().to_owned();
    assert_eq!(before["recovered"], true);

    redis_cli(redis.port, &["flushall"]);
    let (_, body) = publish(&a, "vault", json!("after"), None).await;
    assert_eq!(body["seq"], 1, "numbering starts again");
    let resync = ws.json_of("resync").await;
    assert_eq!(resync["recovered"], false);
    assert_ne!(resync["epoch"], json!(old_epoch));
    assert_eq!(ws.event_seqs(1).await, vec![1]);

    // A client coming back with a position in the old epoch is told it cannot recover.
    let mut back = WsClient::connect(&a, "/ws/json?name=back").await;
    back.send_json(json!({"type": "join", "room": "vault", "since": 3, "epoch": old_epoch}))
        .await;
    let j = back.json_of("joined").await;
    assert_eq!(
        (j["recovered"].clone(), j["seq"].clone()),
        (json!(false), json!(1)),
        "{j}"
    );
}

#[actix_rt::test]
async fn a_ghost_member_expires_from_presence() {
    let Some(redis) = OwnRedis::start(closed_port()) else {
        return;
    };
    let name = app_name();
    let a = node(&redis.url(), &name, false).await;
    let (_ws, _) = joined(&a, "hall").await;
    wait_for(|| {
        redis_cli(redis.port, &["hlen", &format!("{name}:presence:{{hall}}")]).trim() == "1"
    })
    .await;
    // A member whose leave was lost (its entry stopped being refreshed): expired.
    let now = courier_actors::access::unix_now();
    let ghost = json!({"id": "n-1", "name": "ghost", "user": null, "node": "gone", "exp": now - 1});
    redis_cli(
        redis.port,
        &[
            "hset",
            &format!("{name}:presence:{{hall}}"),
            "n-1",
            &ghost.to_string(),
        ],
    );
    let (_, _, p) = a.get_json("/rooms/hall/presence").await;
    let names: Vec<&str> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["guest-w"], "{p}");
    assert_eq!(
        redis_cli(
            redis.port,
            &["hexists", &format!("{name}:presence:{{hall}}"), "n-1"]
        )
        .trim(),
        "0",
        "the expired entry is removed"
    );
}
