//! What other programs rely on: the AsyncAPI document of the realtime protocol (valid, and
//! naming every frame the server sends), the Grafana dashboard (every metric it queries is
//! exported), and the JavaScript client as the server serves it (cached, revalidated).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::helpers::{
    closed_port, services_required, spawn_app, spawn_app_with, token, TestApp, WsClient,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn asyncapi(app: &TestApp) -> Value {
    let (status, _, doc) = app.get_json("/asyncapi.json").await;
    assert_eq!(status, 200);
    doc
}

/// The `type` of every message the server sends on `/ws/json`, as the document says.
fn server_types(doc: &Value) -> BTreeSet<String> {
    let messages = doc["channels"]["json"]["messages"].as_object().unwrap();
    let schemas = &doc["components"]["schemas"];
    messages
        .keys()
        .filter(|k| k.starts_with("server_"))
        .map(|k| {
            let schema = &schemas[k.as_str()]["properties"]["type"];
            schema["enum"][0]
                .as_str()
                .or(schema["const"].as_str())
                .unwrap_or_else(|| panic!("{k} has no type: {schema}"))
                .to_owned()
        })
        .collect()
}

#[actix_rt::test]
async fn the_asyncapi_document_is_valid() {
    let app = spawn_app().await;
    let doc = asyncapi(&app).await;
    assert_eq!(doc["asyncapi"], "3.0.0");
    let parser = repo().join("clients/js/node_modules/@asyncapi/parser");
    if !parser.exists() {
        assert!(
            !services_required(),
            "CI=true but the AsyncAPI parser is not installed (npm ci --prefix clients/js)"
        );
        eprintln!("skipped the parser: run `npm ci --prefix clients/js` to install it");
        return;
    }
    let file = app.data_dir.path().join("asyncapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("node")
        .arg("test/validate-asyncapi.mjs")
        .arg(&file)
        .current_dir(repo().join("clients/js"))
        .output()
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the AsyncAPI parser refuses the document:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("valid: AsyncAPI 3.0.0"), "{text}");
}

/// Drives a `/ws/json` session through every kind of answer and checks each frame it gets
/// is a message of the document.
#[actix_rt::test]
async fn every_frame_the_server_sends_is_in_the_asyncapi_document() {
    let app = spawn_app_with(&[("TOKEN_REFRESH_GRACE_MS", "60000")]).await;
    let documented = server_types(&asyncapi(&app).await);
    let config = crate::helpers::test_config(&app.data_dir, &[]);
    let short = courier::auth::mint(&crate::helpers::test_secret(), "ada", 1).unwrap();
    let mut a = WsClient::connect(&app, &format!("/ws/json?token={short}")).await;
    let mut b = WsClient::connect(&app, "/ws/json?name=bo").await;
    let mut seen = BTreeSet::from(["hello".to_owned()]);
    let frames = [
        json!({"type": "ping"}),
        json!({"type": "message", "content": "hi"}),
        json!({"type": "join", "room": "contract", "since": 0}),
        json!({"type": "publish", "room": "contract", "data": {"text": "x"}, "id": "p1"}),
        json!({"type": "presence", "room": "contract"}),
        json!({"type": "typing", "room": "contract"}),
        json!({"type": "refresh", "token": token(&config, "ada")}),
        json!({"type": "leave", "room": "contract"}),
        json!({"type": "nonsense"}),
    ];
    b.send_json(json!({"type": "join", "room": "contract"}))
        .await;
    b.json_of("joined").await;
    for frame in frames {
        a.send_json(frame.clone()).await;
        // Each frame is answered (or, for typing, told to the others); read until the
        // answer arrives, noting every frame on the way.
        let want = match frame["type"].as_str().unwrap() {
            "ping" => "pong",
            "message" => "response",
            "join" => "joined",
            "publish" => "ack",
            "presence" => "presence",
            "refresh" => "refreshed",
            "leave" => "left",
            "typing" => continue,
            _ => "error",
        };
        loop {
            let v = a.json().await;
            let kind = v["type"].as_str().unwrap().to_owned();
            seen.insert(kind.clone());
            if kind == want {
                break;
            }
        }
    }
    // What the others saw: member_joined, event, typing, member_left.
    let mut other = BTreeSet::new();
    while !other.contains("member_left") {
        let v = b.json().await;
        other.insert(v["type"].as_str().unwrap().to_owned());
    }
    seen.extend(other);
    for kind in [
        "member_joined",
        "event",
        "typing",
        "member_left",
        "error",
        "refreshed",
    ] {
        assert!(
            seen.contains(kind),
            "the session never produced {kind}: {seen:?}"
        );
    }
    let missing: Vec<_> = seen.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "frames sent but not documented: {missing:?}"
    );
}

/// Every `courier_*` metric in `text` (a dashboard's queries), histograms by family name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("courier_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_owned());
        i = end;
    }
    names
}

#[actix_rt::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let path = repo().join("deploy/grafana/courier.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push_str(target["expr"].as_str().unwrap());
            queries.push('\n');
        }
    }
    queries.push_str(dashboard["templating"].to_string().as_str());
    let wanted = metric_names(&queries);
    assert!(wanted.len() > 20, "the dashboard queries {wanted:?}");
    // A node with a dependency configured (unreachable: its gauge says 0).
    let redis = format!("redis://127.0.0.1:{}/0", closed_port());
    let app = spawn_app_with(&[("REDIS_URL", redis.as_str())]).await;
    let _ = app.get_text("/readyz").await;
    let _ = app.get_text("/healthz").await;
    let (_, metrics) = app.get_text("/metrics").await;
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "{} queries metrics the server does not export: {missing:?}",
        path.display()
    );
}

#[actix_rt::test]
async fn the_client_library_is_served_with_caching_headers() {
    let app = spawn_app().await;
    for (path, content_type, file) in [
        ("/client.js", "text/javascript", "clients/js/courier.js"),
        (
            "/client.d.ts",
            "application/typescript",
            "clients/js/courier.d.ts",
        ),
    ] {
        let mut res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let headers = res.headers().clone();
        let body = res.body().await.unwrap();
        assert_eq!(body, std::fs::read(repo().join(file)).unwrap(), "{path}");
        let ct = headers.get("content-type").unwrap().to_str().unwrap();
        assert!(ct.starts_with(content_type), "{path}: {ct}");
        assert!(headers
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("max-age="));
        let etag = headers.get("etag").expect("an ETag").to_str().unwrap();
        let res = app
            .client
            .get(app.url(path))
            .insert_header(("If-None-Match", etag))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 304, "{path} revalidates");
    }
    // The page loads the client from the server, and nothing from elsewhere.
    let (status, page) = app.get_text("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("from '/client.js'"),
        "the demo page uses /client.js"
    );
    assert!(!page.contains("http://") && !page.contains("https://"));
}

#[test]
fn the_client_library_parses() {
    let node = std::process::Command::new("node").arg("--version").output();
    if node.is_err() {
        assert!(!services_required(), "CI=true but there is no node");
        eprintln!("skipped: no node");
        return;
    }
    for file in ["clients/js/courier.js", "clients/js/test/harness.js"] {
        let out = std::process::Command::new("node")
            .arg("--check")
            .arg(Path::new(&repo()).join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[actix_rt::test]
async fn an_error_names_the_room_and_the_publish_it_refuses() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app, "/ws/json?name=eve").await;
    ws.send_json(json!({"type": "leave", "room": "nowhere"}))
        .await;
    let e = ws.json_of("error").await;
    assert_eq!(
        (e["code"].as_str(), e["room"].as_str()),
        (Some("not_joined"), Some("nowhere"))
    );
    assert!(e.get("id").is_none(), "{e}");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let frame = format!(r#"{{"type":"publish","room":"lobby","data":{deep},"id":"deep-1"}}"#);
    ws.send(&frame).await;
    let e = ws.json_of("error").await;
    assert_eq!(e["code"], "invalid_message");
    assert_eq!(
        (e["room"].as_str(), e["id"].as_str()),
        (Some("lobby"), Some("deep-1"))
    );
    // A frame that names nothing gets neither.
    ws.send_json(json!({"type": "nonsense"})).await;
    let e = ws.json_of("error").await;
    assert!(e.get("room").is_none() && e.get("id").is_none(), "{e}");
}
