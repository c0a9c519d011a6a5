//! The basic routes, the error shape, request ids, readiness and metrics, seen from
//! a client over loopback.

use std::time::Duration;

use crate::helpers::{closed_port, service_url, spawn_app, spawn_app_with, spawn_upstream};
use futures_util::future::{join_all, select, Either};
use serde_json::{json, Value};

fn assert_error_shape(body: &Value, code: &str, request_id: &str) {
    let err = &body["error"];
    assert_eq!(err["code"], code, "body: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
    assert_eq!(err["request_id"], request_id, "body: {body}");
}

fn request_id(headers: &awc::http::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .expect("every response carries X-Request-Id")
        .to_str()
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn healthz_answers_with_a_generated_request_id() {
    let app = spawn_app().await;
    let (status, headers, body) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
    let first = request_id(&headers);
    let (_, headers, _) = app.get_json("/healthz").await;
    assert_ne!(first, request_id(&headers), "ids are unique per request");
}

#[actix_rt::test]
async fn a_client_request_id_is_echoed_and_a_bad_one_replaced() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/healthz"))
        .insert_header(("X-Request-Id", "trace-abc.123"))
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(res.headers()), "trace-abc.123");

    // An id used in an error body too.
    let mut res = app
        .client
        .get(app.url("/missing"))
        .insert_header(("X-Request-Id", "trace-404"))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_error_shape(&body, "not_found", "trace-404");

    for bad in ["has space", &"x".repeat(200), "semi;colon"] {
        let res = app
            .client
            .get(app.url("/healthz"))
            .insert_header(("X-Request-Id", bad))
            .send()
            .await
            .unwrap();
        let echoed = request_id(res.headers());
        assert_ne!(echoed, bad);
        assert!(!echoed.is_empty());
    }
}

#[actix_rt::test]
async fn sync_and_async_wait_as_asked() {
    let app = spawn_app().await;
    for route in ["/sync", "/async"] {
        let (status, _, body) = app.get_json(&format!("{route}?ms=20")).await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"message": "Completed after 20 ms", "waited_ms": 20})
        );

        let (status, headers, body) = app.get_json(&format!("{route}?ms=soon")).await;
        assert_eq!(status, 400);
        assert_error_shape(&body, "bad_request", &request_id(&headers));

        let (status, headers, body) = app.get_json(&format!("{route}?ms=10001")).await;
        assert_eq!(status, 422);
        assert_error_shape(&body, "unprocessable_entity", &request_id(&headers));

        let (status, _, _) = app.get_json(&format!("{route}?secs=1")).await;
        assert_eq!(status, 400, "unknown query parameters are refused");
    }
}

#[actix_rt::test]
async fn the_default_waits_are_one_second() {
    let app = spawn_app().await;
    let (status, _, body) = app.get_json("/async").await;
    assert_eq!(status, 200);
    assert_eq!(body["message"], "Completed after 1 second");
}

#[actix_rt::test]
async fn cpu_intensive_matches_the_python_sum() {
    let app = spawn_app().await;
    let (status, text) = app.get_text("/cpu-intensive").await;
    assert_eq!(status, 200);
    // Python: sum(i * i for i in range(10000000)), exactly (past what u64 and f64 hold).
    assert_eq!(text, r#"{"result":333333283333335000000,"n":10000000}"#);
    let (_, _, body) = app.get_json("/cpu-intensive?n=4").await;
    assert_eq!(body["result"], 14);
    for bad in ["n=0", "n=200000001"] {
        let (status, _, body) = app.get_json(&format!("/cpu-intensive?{bad}")).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, _, _) = app.get_json("/cpu-intensive?n=-5").await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn healthz_stays_prompt_while_sync_requests_block() {
    // One worker thread: if /sync blocked the event loop, nothing else would be answered.
    let app = spawn_app_with(&[("APP_WORKERS", "1")]).await;
    let syncs: Vec<_> = (0..4)
        .map(|_| {
            let req = app.client.get(app.url("/sync?ms=3000")).send();
            Box::pin(async move { req.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let all_syncs = Box::pin(join_all(syncs));

    let probe = Box::pin(async {
        // Wait until the four /sync requests are being handled (the probe's own /metrics
        // request is the fifth).
        loop {
            if app.metric("courier_http_requests_in_flight").await >= Some(5.0) {
                break;
            }
            actix_rt::task::yield_now().await;
        }
        app.get_json("/healthz").await
    });

    match select(probe, all_syncs).await {
        Either::Left(((status, _, body), syncs)) => {
            assert_eq!(status, 200);
            assert_eq!(body["status"], "ok");
            // The blocked requests still finish normally.
            let statuses: Vec<_> = syncs.await.into_iter().map(Result::unwrap).collect();
            assert_eq!(statuses, vec![200; 4]);
        }
        Either::Right(_) => panic!("/sync requests finished before /healthz answered"),
    };
}

#[actix_rt::test]
async fn io_intensive_and_external_api_use_the_built_in_upstream_by_default() {
    let app = spawn_app().await;
    for route in ["/io-intensive", "/external-api"] {
        let (status, _, body) = app.get_json(route).await;
        assert_eq!(status, 200, "{route}: {body}");
        assert_eq!(body["source"], "courier demo upstream");
        assert_eq!(body["items"].as_array().map(Vec::len), Some(3));
    }
}

#[actix_rt::test]
async fn upstream_failures_map_to_502_and_504() {
    let upstream = spawn_upstream();
    let cases = [
        (format!("{}/ok", upstream.base), 200, None),
        (format!("{}/fail", upstream.base), 502, Some("bad_gateway")),
        (
            format!("{}/not-json", upstream.base),
            502,
            Some("bad_gateway"),
        ),
        (
            format!("http://127.0.0.1:{}/data", closed_port()),
            502,
            Some("bad_gateway"),
        ),
        (
            format!("{}/slow", upstream.base),
            504,
            Some("gateway_timeout"),
        ),
    ];
    for (url, expected, code) in cases {
        // A short client timeout only where the timeout is the point; the others keep the
        // test configuration's, so a loaded machine cannot turn them into 504s.
        let timeout = if expected == 504 { "300" } else { "2000" };
        let app =
            spawn_app_with(&[("UPSTREAM_URL", &url), ("HTTP_CLIENT_TIMEOUT_MS", timeout)]).await;
        for route in ["/io-intensive", "/external-api"] {
            let (status, headers, body) = app.get_json(route).await;
            assert_eq!(status, expected, "{route} with {url}: {body}");
            match code {
                Some(code) => assert_error_shape(&body, code, &request_id(&headers)),
                None => assert_eq!(body, json!({"hello": "upstream"})),
            }
        }
        app.handle.stop(false).await;
    }
    upstream.handle.stop(false).await;
}

#[actix_rt::test]
async fn every_error_has_the_one_json_shape() {
    let app = spawn_app_with(&[("MAX_BODY_BYTES", "1024")]).await;

    let (status, headers, body) = app.get_json("/no/such/route").await;
    assert_eq!(status, 404);
    assert_error_shape(&body, "not_found", &request_id(&headers));

    let mut res = app.client.post(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers().get("allow").unwrap(), "GET");
    let id = request_id(res.headers());
    assert_error_shape(
        &res.json::<Value>().await.unwrap(),
        "method_not_allowed",
        &id,
    );

    let post = |body: &'static str, content_type: &'static str| {
        let req = app
            .client
            .post(app.url("/echo"))
            .insert_header(("content-type", content_type))
            .send_body(body);
        async move {
            let mut res = req.await.unwrap();
            let id = request_id(res.headers());
            let body: Value = res.json().limit(1 << 20).await.unwrap();
            (res.status().as_u16(), id, body)
        }
    };
    let (status, _, body) = post(r#"{"hello": "courier"}"#, "application/json").await;
    assert_eq!(
        (status, body),
        (200, json!({"received": {"hello": "courier"}}))
    );

    let (status, id, body) = post(r#"{"hello": "#, "application/json").await;
    assert_eq!(status, 400);
    assert_error_shape(&body, "bad_request", &id);

    let (status, id, body) = post("[1, 2]", "application/json").await;
    assert_eq!(status, 422);
    assert_error_shape(&body, "unprocessable_entity", &id);

    let (status, id, body) = post("hello=courier", "application/x-www-form-urlencoded").await;
    assert_eq!(status, 415);
    assert_error_shape(&body, "unsupported_media_type", &id);

    let big = format!(r#"{{"data": "{}"}}"#, "x".repeat(4096));
    let mut res = app
        .client
        .post(app.url("/echo"))
        .insert_header(("content-type", "application/json"))
        .send_body(big)
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let id = request_id(res.headers());
    assert_error_shape(
        &res.json::<Value>().await.unwrap(),
        "payload_too_large",
        &id,
    );
}

#[actix_rt::test]
async fn docs_and_openapi_describe_every_route() {
    let app = spawn_app().await;
    let (status, _, spec) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/sync",
        "/async",
        "/cpu-intensive",
        "/io-intensive",
        "/external-api",
        "/healthz",
        "/readyz",
        "/metrics",
        "/echo",
        "/demo/data",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from /openapi.json"
        );
    }
    let (status, html) = app.get_text("/docs/").await;
    assert_eq!(status, 200);
    assert!(html.contains("swagger-ui"), "{html}");
    let (status, js) = app.get_text("/docs/swagger-ui-bundle.js").await;
    assert_eq!(status, 200, "Swagger UI assets are served from the binary");
    assert!(js.len() > 100_000);
    let no_redirects = awc::Client::builder().disable_redirects().finish();
    let res = no_redirects.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(res.headers().get("location").unwrap(), "/docs/");
}

#[actix_rt::test]
async fn readyz_reports_embedded_backends_as_ready() {
    let app = spawn_app().await;
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    for dep in ["redis", "mongodb"] {
        assert_eq!(body["checks"][dep]["status"], "embedded", "{body}");
    }
    // The embedded SQLite file is checked like any database.
    assert_eq!(body["checks"]["database"]["status"], "ok", "{body}");
    assert_eq!(body["checks"]["database"]["backend"], "sqlite", "{body}");
}

#[actix_rt::test]
async fn readyz_is_503_when_a_configured_dependency_is_down() {
    let redis = format!("redis://127.0.0.1:{}/0", closed_port());
    let pg = format!("postgres://courier@127.0.0.1:{}/courier", closed_port());
    let mongo = format!(
        "mongodb://127.0.0.1:{}/courier?directConnection=true",
        closed_port()
    );
    let app = spawn_app_with(&[
        ("REDIS_URL", &redis),
        ("DATABASE_URL", &pg),
        ("MONGODB_URI", &mongo),
        ("READINESS_TIMEOUT_MS", "3000"),
    ])
    .await;
    let (status, headers, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "down");
    assert_eq!(body["checks"]["mongodb"]["status"], "down");
    assert_error_shape(&body, "service_unavailable", &request_id(&headers));
    let text = app.get_text("/metrics").await.1;
    assert!(
        text.contains("courier_dependency_up{dependency=\"redis\"} 0"),
        "{text}"
    );
}

#[actix_rt::test]
async fn readyz_answers_within_its_timeout_when_a_dependency_hangs() {
    // A listener that accepts and never answers: the check must give up, not hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let app = spawn_app_with(&[("REDIS_URL", &url), ("READINESS_TIMEOUT_MS", "300")]).await;
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert!(
        body["checks"]["redis"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{body}"
    );
}

#[actix_rt::test]
async fn readyz_checks_real_postgres_and_redis() {
    let pg = service_url(
        "COURIER_TEST_DATABASE_URL",
        Some("postgres://postgres@127.0.0.1:5432/test"),
    );
    let redis = service_url("COURIER_TEST_REDIS_URL", Some("redis://127.0.0.1:6379/0"));
    let (Some(pg), Some(redis)) = (pg, redis) else {
        return;
    };
    let app = spawn_app_with(&[("DATABASE_URL", &pg), ("REDIS_URL", &redis)]).await;
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["redis"]["status"], "ok");
}

#[actix_rt::test]
async fn readyz_checks_a_real_mongo_wire_server() {
    let Some(uri) = service_url("COURIER_TEST_MONGODB_URI", None) else {
        return;
    };
    let app = spawn_app_with(&[("MONGODB_URI", &uri)]).await;
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["mongodb"]["status"], "ok");
}

#[actix_rt::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.get_json("/healthz").await;
    }
    app.get_json("/nowhere/1").await;
    app.get_json("/nowhere/2").await;
    // A route with a parameter is counted under its pattern, before and after a static
    // route has been seen (the worker remembers static paths to skip re-matching them).
    for room in ["a", "b", "healthz"] {
        app.get_json(&format!("/rooms/{room}/history")).await;
    }
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            r#"courier_http_requests_total{method="GET",route="/healthz",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"courier_http_requests_total{method="GET",route="unmatched",status="404"} 2"#
        ),
        "unknown paths share one label: {text}"
    );
    assert!(text.contains(r#"courier_http_request_duration_seconds_count{route="/healthz"} 3"#));
    assert!(
        text.contains(
            r#"courier_http_request_duration_seconds_count{route="/rooms/{room}/history"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains("courier_http_requests_in_flight 1"),
        "the /metrics request itself"
    );
    assert!(text.contains("courier_build_info{"));
}

#[actix_rt::test]
async fn a_stopped_server_finishes_in_flight_requests() {
    let app = spawn_app().await;
    let slow = app.client.get(app.url("/async?ms=500")).send();
    let slow = actix_rt::spawn(async move { slow.await.map(|r| r.status().as_u16()) });
    while app.metric("courier_http_requests_in_flight").await < Some(2.0) {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    app.handle.stop(true).await;
    assert_eq!(slow.await.unwrap().unwrap(), 200);
}
