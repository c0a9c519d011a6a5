//! Rooms without Redis keep their numbering, epoch and history in the database: a server
//! killed and started again continues where it was, and a client that reconnects with its
//! last `seq` is told whether its replay is complete (`recovered`).

use serde_json::{json, Value};

use crate::helpers::{
    fresh_mysql_database, fresh_postgres_database, publish_as, start_server_process, test_secret,
    Backend, DirectConn, ServerProcess, WsClient,
};

fn token(user: &str) -> String {
    courier::auth::mint(&test_secret(), user, 3600).unwrap()
}

fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> ServerProcess {
    let data = dir.display().to_string();
    let mut env = vec![("APP_ENV", "test"), ("APP_DATA_DIR", data.as_str())];
    env.extend_from_slice(extra);
    start_server_process(dir, &env)
}

async fn publish(port: u16, room: &str, data: Value, key: Option<&str>) -> (u16, Value) {
    publish_as(port, "pia", room, data, key).await
}

/// Joins `room` with `since` (and `epoch`); the `joined` frame and the events replayed.
async fn join(port: u16, room: &str, since: u64, epoch: Option<&str>) -> (WsClient, Value) {
    let mut ws = WsClient::connect_to(port, "/ws/json?name=reader", &[]).await;
    let mut join = json!({"type": "join", "room": room, "since": since});
    if let Some(epoch) = epoch {
        join["epoch"] = epoch.into();
    }
    ws.send_json(join).await;
    let joined = ws.json_of("joined").await;
    (ws, joined)
}

#[actix_rt::test]
async fn a_killed_server_continues_numbering_and_replay_on_sqlite() {
    killed_server_continues(&[]).await;
}

#[actix_rt::test]
async fn a_killed_server_continues_numbering_and_replay_on_postgres() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    killed_server_continues(&[("DATABASE_URL", &url)]).await;
}

async fn killed_server_continues(backend: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), backend);
    for i in 1..=50u64 {
        let (status, body) = publish(server.port, "lobby", json!({"n": i}), None).await;
        assert_eq!((status, &body["seq"]), (201, &json!(i)), "{body}");
    }
    let (_, joined) = join(server.port, "lobby", 50, None).await;
    let epoch = joined["epoch"].as_str().expect("an epoch").to_owned();

    // SIGKILL: nothing gets to flush.
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = start(dir.path(), backend);
    let (mut ws, joined) = join(server.port, "lobby", 40, Some(&epoch)).await;
    assert_eq!(
        (
            &joined["seq"],
            joined["epoch"].as_str(),
            &joined["recovered"]
        ),
        (&json!(50), Some(epoch.as_str()), &json!(true)),
        "{joined}"
    );
    assert_eq!(ws.event_seqs(10).await, (41..=50).collect::<Vec<_>>());
    let (status, body) = publish(server.port, "lobby", json!({"n": 51}), None).await;
    assert_eq!((status, &body["seq"]), (201, &json!(51)), "{body}");
    assert_eq!(ws.event_seqs(1).await, vec![51]);

    // The room is listed and its history read back from the database.
    let client = awc::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.port);
    let rooms: Value = client
        .get(url("/rooms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == "lobby" && r["last_seq"] == 51),
        "{rooms}"
    );
    let history: Value = client
        .get(url("/rooms/lobby/history?since=47"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seqs: Vec<u64> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![48, 49, 50, 51]);
}

#[actix_rt::test]
async fn a_replay_that_cannot_be_complete_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("ROOM_HISTORY_SIZE", "20")]);
    for i in 1..=30u64 {
        publish(server.port, "short", json!(i), None).await;
    }
    // Older than the kept window: the newest 20 come, marked incomplete.
    let (mut ws, joined) = join(server.port, "short", 5, None).await;
    assert_eq!(joined["recovered"], false, "{joined}");
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert_eq!(ws.json_of("error").await["code"], "history_truncated");
    assert_eq!(ws.event_seqs(20).await, (11..=30).collect::<Vec<_>>());

    // Inside the window: complete.
    let (mut ws, joined) = join(server.port, "short", 25, Some(&epoch)).await;
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(ws.event_seqs(5).await, (26..=30).collect::<Vec<_>>());

    // Another epoch: the numbers say nothing; nothing is replayed.
    let (mut ws, joined) = join(server.port, "short", 25, Some("0123456789abcdef")).await;
    assert_eq!(joined["recovered"], false, "{joined}");
    publish(server.port, "short", json!(31), None).await;
    assert_eq!(
        ws.event_seqs(1).await,
        vec![31],
        "live events follow, nothing replayed"
    );
}

#[actix_rt::test]
async fn a_retried_publish_is_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let (mut ws, _) = join(server.port, "orders", 0, None).await;
    let (status, first) = publish(server.port, "orders", json!("once"), Some("order-17")).await;
    assert_eq!((status, &first["seq"]), (201, &json!(1)));
    let (status, again) = publish(server.port, "orders", json!("once"), Some("order-17")).await;
    assert_eq!(
        (status, &again["seq"]),
        (201, &json!(1)),
        "the same seq, not a new event"
    );
    let (_, other) = publish(server.port, "orders", json!("next"), Some("order-18")).await;
    assert_eq!(other["seq"], 2);
    assert_eq!(ws.event_seqs(2).await, vec![1, 2], "delivered once each");

    // Over WebSocket the message id is the key: a resend is acknowledged, not repeated.
    let mut publisher = WsClient::connect_to(
        server.port,
        &format!("/ws/json?token={}", token("pia")),
        &[],
    )
    .await;
    for _ in 0..2 {
        publisher
            .send_json(json!({"type": "publish", "room": "orders", "data": "ws", "id": "m-1"}))
            .await;
        assert_eq!(publisher.json_of("ack").await["seq"], 3);
    }
    let (_, next) = publish(server.port, "orders", json!("after"), None).await;
    assert_eq!(next["seq"], 4);
    assert_eq!(ws.event_seqs(2).await, vec![3, 4]);
}

/// Rows of `room_events`: each room's count and oldest seq.
#[derive(diesel::QueryableByName, Debug, PartialEq, Eq)]
struct Kept {
    #[diesel(sql_type = diesel::sql_types::Text)]
    room: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    oldest: i64,
}

async fn kept(backend: Backend, url: &str) -> Vec<Kept> {
    use diesel_async::RunQueryDsl;
    let sql = "SELECT room, CAST(count(*) AS BIGINT) AS n, CAST(min(seq) AS BIGINT) AS oldest \
               FROM room_events GROUP BY room ORDER BY room";
    match DirectConn::connect(backend, url).await {
        DirectConn::Postgres(mut c) => diesel::sql_query(sql).load(&mut c).await,
        DirectConn::Mysql(mut c) => {
            diesel::sql_query(sql.replace("BIGINT", "SIGNED"))
                .load(&mut c)
                .await
        }
        DirectConn::Sqlite(mut c) => diesel::sql_query(sql).load(&mut c).await,
    }
    .expect("room_events")
}

/// The store keeps each room's window and no more: a batch over several rooms trims each.
async fn window_is_trimmed(backend: Backend, extra: &[(&str, &str)], url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![("ROOM_HISTORY_SIZE", "5")];
    env.extend_from_slice(extra);
    let server = start(dir.path(), &env);
    for i in 1..=12u64 {
        for room in ["a", "b"] {
            let (status, body) = publish(server.port, room, json!(i), None).await;
            assert_eq!((status, &body["seq"]), (201, &json!(i)), "{body}");
        }
    }
    let url = if url.is_empty() {
        dir.path()
            .join(courier_actors::db::SQLITE_FILE)
            .display()
            .to_string()
    } else {
        url.to_owned()
    };
    let want = |room: &str| Kept {
        room: room.into(),
        n: 5,
        oldest: 8,
    };
    assert_eq!(kept(backend, &url).await, vec![want("a"), want("b")]);
}

#[actix_rt::test]
async fn the_store_keeps_only_each_rooms_window_on_sqlite() {
    window_is_trimmed(Backend::Sqlite, &[], "").await;
}

#[actix_rt::test]
async fn the_store_keeps_only_each_rooms_window_on_postgres() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    window_is_trimmed(Backend::Postgres, &[("DATABASE_URL", &url)], &url).await;
}

#[actix_rt::test]
async fn the_store_keeps_only_each_rooms_window_on_mysql() {
    let Some(url) = fresh_mysql_database().await else {
        return;
    };
    window_is_trimmed(Backend::Mysql, &[("DATABASE_URL", &url)], &url).await;
}
