//! The cache behind `/expensive-data`, and concurrent outbound calls: the parallel
//! aggregate and the price race, against upstream servers the tests run on loopback.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::helpers::{spawn_app_with, Proxy, TestApp};
use actix_web::{web, App, HttpResponse, HttpServer};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

async fn expensive(app: &TestApp, key: &str) -> (bool, Value) {
    let (status, _, body) = app.get_json(&format!("/expensive-data/{key}")).await;
    assert_eq!(status, 200, "{body}");
    (body["cached"].as_bool().unwrap(), body["data"].clone())
}

#[actix_rt::test]
async fn a_miss_is_computed_then_served_from_the_cache() {
    let app = spawn_app_with(&[]).await;
    let (cached, first) = expensive(&app, "report:2026").await;
    assert!(!cached);
    assert_eq!(first["key"], "report:2026");
    assert_eq!(first["digest"].as_str().unwrap().len(), 64);
    let (cached, second) = expensive(&app, "report:2026").await;
    assert!(cached);
    assert_eq!(second, first);
    let (cached, other) = expensive(&app, "another").await;
    assert!(!cached);
    assert_ne!(other["digest"], first["digest"]);

    let (status, _, body) = app.get_json("/expensive-data/no%20spaces").await;
    assert_eq!(status, 400, "{body}");
    let long = "k".repeat(129);
    let (status, _, _) = app.get_json(&format!("/expensive-data/{long}")).await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn concurrent_misses_for_one_key_compute_once() {
    let app = spawn_app_with(&[]).await;
    let results = join_all((0..8).map(|_| expensive(&app, "popular"))).await;
    let digest = &results[0].1["digest"];
    assert!(results.iter().all(|(_, data)| &data["digest"] == digest));
    assert_eq!(
        app.metric("courier_cache_computations_total").await,
        Some(1.0),
        "eight requests, one computation"
    );
    let coalesced = app
        .metric("courier_cache_lookups_total{outcome=\"coalesced\"}")
        .await
        .unwrap();
    let hits = app
        .metric("courier_cache_lookups_total{outcome=\"hit\"}")
        .await
        .unwrap();
    assert_eq!(coalesced + hits, 7.0);
}

#[actix_rt::test]
async fn values_expire_after_their_ttl() {
    let app = spawn_app_with(&[("CACHE_TTL_SECS", "1")]).await;
    let (cached, first) = expensive(&app, "short-lived").await;
    assert!(!cached);
    let started = Instant::now();
    // Served from the cache until the TTL has passed, computed again after it.
    loop {
        let (cached, data) = expensive(&app, "short-lived").await;
        if !cached {
            assert!(
                started.elapsed() >= Duration::from_millis(500),
                "expired too early"
            );
            assert_ne!(data["computed_at"], first["computed_at"]);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never expired");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.metric("courier_cache_computations_total").await,
        Some(2.0)
    );
}

async fn redis_ttl(redis_url: &str, key: &str) -> i64 {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("TTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn the_redis_cache_is_shared_and_its_outage_only_costs_computation() {
    let Some(redis_url) =
        crate::helpers::service_url("COURIER_TEST_REDIS_URL", Some("redis://127.0.0.1:6379/0"))
    else {
        return;
    };
    let (mut proxy, through) = Proxy::in_front_of(&redis_url, 6379).await;
    let app_name = format!("cachetest{:08x}", rand::random::<u32>());
    let app = spawn_app_with(&[("REDIS_URL_CACHE", &through), ("APP_NAME", &app_name)]).await;
    let (cached, first) = expensive(&app, "shared").await;
    assert!(!cached);
    let ttl = redis_ttl(&redis_url, &format!("{app_name}:cache:shared")).await;
    assert!((1..=300).contains(&ttl), "key stored with the TTL: {ttl}");
    let (cached, again) = expensive(&app, "shared").await;
    assert!(cached);
    assert_eq!(again, first);

    // A second node on the same Redis gets the value without computing it.
    let other = spawn_app_with(&[("REDIS_URL_CACHE", &through), ("APP_NAME", &app_name)]).await;
    let (cached, from_other) = expensive(&other, "shared").await;
    assert!(cached);
    assert_eq!(from_other, first);
    assert_eq!(
        other.metric("courier_cache_computations_total").await,
        Some(0.0)
    );

    proxy.stop();
    let started = Instant::now();
    let (cached, during) = expensive(&app, "during-outage").await;
    assert!(!cached, "computed, since the cache cannot be read");
    assert_eq!(during["key"], "during-outage");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (cached, _) = expensive(&app, "shared").await;
    assert!(!cached);
    assert!(app.metric("courier_cache_errors_total").await.unwrap() >= 2.0);

    proxy.restart().await;
    let (cached, _) = expensive(&app, "after-outage").await;
    assert!(!cached);
    let (cached, _) = expensive(&app, "after-outage").await;
    assert!(cached, "the cache is used again once Redis is back");
}

/// A local upstream API. `/{scenario}/users/{id}[/{part}]`:
/// `parallel` answers every part after 400 ms; `posts-fail` fails the posts; `profile-fail`
/// fails the profile; `profile-slow` answers the profile after 10 s.
/// `/price/ok/{p}` answers at once, `/price/fail/{p}` with 500.
fn spawn_api() -> (String, actix_web::dev::ServerHandle) {
    async fn part(path: web::Path<(String, i64, String)>) -> HttpResponse {
        let (scenario, id, part) = path.into_inner();
        match (scenario.as_str(), part.as_str()) {
            ("parallel", _) => actix_rt::time::sleep(Duration::from_millis(1000)).await,
            ("posts-fail", "posts") | ("profile-fail", "profile") => {
                return HttpResponse::InternalServerError().body("down")
            }
            ("profile-slow", "profile") => actix_rt::time::sleep(Duration::from_secs(10)).await,
            _ => {}
        }
        HttpResponse::Ok().json(json!({"part": part, "id": id}))
    }
    async fn profile(path: web::Path<(String, i64)>) -> HttpResponse {
        let (scenario, id) = path.into_inner();
        part(web::Path::from((scenario, id, "profile".to_owned()))).await
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        App::new()
            .route("/{scenario}/users/{id}", web::get().to(profile))
            .route("/{scenario}/users/{id}/{part}", web::get().to(part))
            .route(
                "/price/ok/{p}",
                web::get().to(|p: web::Path<String>| async move {
                    HttpResponse::Ok().json(json!({"product": p.into_inner(), "price_cents": 1234}))
                }),
            )
            .route(
                "/price/fail/{p}",
                web::get().to(|| async { HttpResponse::InternalServerError().body("no") }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), handle)
}

#[actix_rt::test]
async fn the_aggregate_calls_its_upstreams_at_once() {
    let (api, _server) = spawn_api();
    let app = spawn_app_with(&[("AGGREGATE_UPSTREAM_URL", &format!("{api}/parallel"))]).await;
    let started = Instant::now();
    let (status, _, body) = app.get_json("/aggregate/user/7").await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["profile"], json!({"part": "profile", "id": 7}));
    assert_eq!(body["posts"], json!({"part": "posts", "id": 7}));
    assert_eq!(body["comments"], json!({"part": "comments", "id": 7}));
    assert!(body.get("errors").is_none(), "{body}");
    // Three calls of 1000 ms each: about 1000 ms together, 3000 ms one after another
    // (the margin absorbs a loaded machine).
    assert!(took >= Duration::from_millis(1000), "{took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "the calls ran one after another: {took:?}"
    );
}

#[actix_rt::test]
async fn the_aggregate_says_which_part_failed() {
    let (api, _server) = spawn_api();
    let app = spawn_app_with(&[("AGGREGATE_UPSTREAM_URL", &format!("{api}/posts-fail"))]).await;
    let (status, _, body) = app.get_json("/aggregate/user/3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["profile"]["id"], 3);
    assert_eq!(body["posts"], Value::Null);
    assert_eq!(body["comments"]["part"], "comments");
    assert_eq!(body["errors"]["posts"]["code"], "bad_gateway", "{body}");
    assert!(body["errors"].get("comments").is_none());
    assert!(app
        .metric("courier_upstream_errors_total{kind=\"bad_gateway\",upstream=\"posts\"}")
        .await
        .is_some_and(|n| n == 1.0));

    let app = spawn_app_with(&[("AGGREGATE_UPSTREAM_URL", &format!("{api}/profile-fail"))]).await;
    let (status, _, body) = app.get_json("/aggregate/user/3").await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("profile:"));

    let app = spawn_app_with(&[
        ("AGGREGATE_UPSTREAM_URL", &format!("{api}/profile-slow")),
        ("HTTP_CLIENT_TIMEOUT_MS", "500"),
    ])
    .await;
    let started = Instant::now();
    let (status, _, body) = app.get_json("/aggregate/user/3").await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A price source that never answers; reports when the caller closes the connection.
async fn hanging_source() -> (String, tokio::sync::mpsc::UnboundedReceiver<Instant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    actix_rt::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let tx = tx.clone();
            actix_rt::spawn(async move {
                let mut buf = [0u8; 4096];
                // Read the request, then wait: a read of 0 bytes means the caller hung up.
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(Instant::now());
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}/price/{{product_id}}"), rx)
}

#[actix_rt::test]
async fn the_first_price_wins_and_the_losers_are_disconnected() {
    let (api, _server) = spawn_api();
    let (slow1, mut hung_up1) = hanging_source().await;
    let (slow2, mut hung_up2) = hanging_source().await;
    let sources = format!("{slow1},{api}/price/ok/{{product_id}},{slow2}");
    let app = spawn_app_with(&[("PRICE_SOURCES", &sources)]).await;
    let started = Instant::now();
    let (status, _, body) = app.get_json("/fastest-price/widget-42").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "price_source_2");
    assert_eq!(body["product_id"], "widget-42");
    assert_eq!(
        body["price"],
        json!({"product": "widget-42", "price_cents": 1234})
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    for hung_up in [&mut hung_up1, &mut hung_up2] {
        let when = tokio::time::timeout(Duration::from_secs(5), hung_up.recv())
            .await
            .expect("the losing call was cancelled and its connection closed")
            .unwrap();
        assert!(when.duration_since(started) < Duration::from_secs(3));
    }
}

#[actix_rt::test]
async fn all_sources_failing_is_502_and_none_answering_is_504() {
    let (api, _server) = spawn_api();
    let failing = format!("{api}/price/fail/{{product_id}},{api}/price/fail/{{product_id}}");
    let app = spawn_app_with(&[("PRICE_SOURCES", &failing)]).await;
    let (status, _, body) = app.get_json("/fastest-price/p1").await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("price_source_1") && message.contains("price_source_2"),
        "{message}"
    );

    // One source fails, the other answers: the answer wins.
    let mixed = format!("{api}/price/fail/{{product_id}},{api}/price/ok/{{product_id}}");
    let app = spawn_app_with(&[("PRICE_SOURCES", &mixed)]).await;
    let (status, _, body) = app.get_json("/fastest-price/p1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["source"], "price_source_2");

    let (slow, _hung_up) = hanging_source().await;
    let app = spawn_app_with(&[
        ("PRICE_SOURCES", &format!("{slow},{slow}")),
        ("HTTP_CLIENT_TIMEOUT_MS", "500"),
    ])
    .await;
    let started = Instant::now();
    let (status, _, body) = app.get_json("/fastest-price/p1").await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));

    let (status, _, _) = app.get_json("/fastest-price/bad.id").await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn the_built_in_demo_upstreams_answer_without_configuration() {
    let app = spawn_app_with(&[]).await;
    let (status, _, body) = app.get_json("/aggregate/user/5").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["profile"]["id"], 5);
    assert_eq!(body["posts"].as_array().unwrap().len(), 2);
    let (status, _, body) = app.get_json("/fastest-price/widget").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["price"]["price_cents"].is_number());
}
