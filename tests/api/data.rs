//! The data layer as a client sees it: users, batches, keyset pages, orders and the
//! dashboard, posts with comments, the `data` table, documents, the CSV export and the
//! streamed report — each on the embedded SQLite file and on a real Postgres and a real
//! MySQL/MariaDB database made for the test. Also what happens when the database is slow, unreachable, or goes away
//! and comes back.

use std::time::{Duration, Instant};

use crate::helpers::{spawn_data_app, Backend, DataApp, DirectConn, Proxy};
use futures_util::StreamExt;
use serde_json::{json, Value};

/// Runs each listed test body on every backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
        mod mysql {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(super::Backend::Mysql).await
                }
            )*
        }
    };
}

on_every_backend!(
    users_are_created_read_and_validated,
    the_fast_path_returns_the_same_user,
    users_are_listed_page_by_page,
    a_batch_is_created_whole_or_not_at_all,
    the_dashboard_shows_newest_users_and_orders,
    posts_come_with_their_author_and_comments,
    the_data_table_is_listed,
    documents_are_stored_in_the_relational_store,
    the_csv_export_quotes_what_needs_quoting,
    the_report_is_streamed_section_by_section,
    a_statement_over_its_timeout_gives_504,
    metrics_show_the_pool_and_query_latency,
);

async fn app(backend: Backend) -> Option<DataApp> {
    spawn_data_app(backend, &[]).await
}

fn assert_error(body: &Value, code: &str, needle: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    assert!(body["error"]["request_id"].is_string(), "{body}");
}

async fn create_user(data: &DataApp, name: &str, email: &str) -> Value {
    let (status, _, body) = data
        .app
        .post_json("/users", &json!({"name": name, "email": email}))
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn users_are_created_read_and_validated(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    let app = &data.app;

    let (status, headers, user) = app
        .post_json(
            "/users",
            &json!({"name": "Ada Lovelace", "email": "Ada@Example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_i64().unwrap();
    assert_eq!(headers.get("location").unwrap(), &format!("/users/{id}"));
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], "ada@example.com");
    assert!(
        user["created_at"].as_str().unwrap().ends_with('Z'),
        "{user}"
    );

    let (status, _, read) = app.get_json(&format!("/users/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(read, user);

    let (status, _, body) = app.get_json("/users/999999").await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "User not found");

    // The same address in other letters is the same address.
    let (status, _, body) = app
        .post_json(
            "/users",
            &json!({"name": "Other", "email": "ADA@example.COM"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "conflict", "already exists");

    for (bad, needle) in [
        (
            json!({"name": "", "email": "a@b.io"}),
            "name must not be empty",
        ),
        (
            json!({"name": "   ", "email": "a@b.io"}),
            "name must not be empty",
        ),
        (
            json!({"name": "x".repeat(256), "email": "a@b.io"}),
            "at most 255",
        ),
        (
            json!({"name": "ok", "email": "not-an-email"}),
            "not a valid address",
        ),
        (
            json!({"name": "ok", "email": " a@b.io"}),
            "not a valid address",
        ),
        (json!({"name": "ok"}), "missing field `email`"),
        (
            json!({"name": "ok", "email": "a@b.io", "admin": true}),
            "unknown field",
        ),
        (json!({"name": 5, "email": "a@b.io"}), "invalid type"),
    ] {
        let (status, _, body) = app.post_json("/users", &bad).await;
        assert_eq!(status, 422, "{bad} -> {body}");
        assert_error(&body, "unprocessable_entity", needle);
    }
    // A name of exactly 255 characters (not bytes) is fine.
    create_user(&data, &"é".repeat(255), "long@example.com").await;

    let (status, _, body) = app.get_json("/users/abc").await;
    assert_eq!(status, 400);
    assert_error(&body, "bad_request", "invalid path parameter");

    let mut res = app
        .client
        .post(app.url("/users"))
        .insert_header(("content-type", "application/json"))
        .send_body("{\"name\": \"broken\"")
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.unwrap();
    assert_error(&body, "bad_request", "malformed JSON");

    // Nothing above wrote a row it should not have.
    let (_, _, page) = app.get_json("/users").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
}

async fn the_fast_path_returns_the_same_user(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    let user = create_user(&data, "Grace \"Amazing\" Hopper, RADM\n", "grace@navy.mil").await;
    let id = user["id"].as_i64().unwrap();
    let (status, headers, fast) = data.app.get_json(&format!("/users-fast/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert_eq!(fast, user);
    let (status, _, body) = data.app.get_json("/users-fast/424242").await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "User not found");
}

async fn users_are_listed_page_by_page(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    let batch: Vec<Value> = (0..7)
        .map(|i| json!({"name": format!("user {i}"), "email": format!("u{i}@example.com")}))
        .collect();
    let (status, _, created) = data.app.post_json("/users/batch", &json!(batch)).await;
    assert_eq!(status, 201, "{created}");

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, _, page) = data
            .app
            .get_json(&format!("/users?limit=3&after={after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(
            items
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match page["next_after"].as_i64() {
            Some(next) => {
                assert_eq!(next, items.last().unwrap()["id"].as_i64().unwrap());
                after = next;
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("u{i}@example.com")).collect();
    assert_eq!(seen, expected);

    for query in ["limit=0", "limit=1001", "after=-1"] {
        let (status, _, body) = data.app.get_json(&format!("/users?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
    }
    let (status, _, body) = data.app.get_json("/users?offset=5").await;
    assert_eq!(status, 400, "{body}");
}

async fn count_users(data: &DataApp) -> i64 {
    let (status, _, body) = data.app.get_json("/dashboard").await;
    assert_eq!(status, 200, "{body}");
    body["total_users"].as_i64().unwrap()
}

async fn a_batch_is_created_whole_or_not_at_all(backend: Backend) {
    let Some(data) = spawn_data_app(backend, &[("USERS_BATCH_MAX", "5")]).await else {
        return;
    };
    let app = &data.app;
    create_user(&data, "existing", "taken@example.com").await;

    let (status, _, users) = app
        .post_json(
            "/users/batch",
            &json!([
                {"name": "one", "email": "one@example.com"},
                {"name": "two", "email": "two@example.com"}
            ]),
        )
        .await;
    assert_eq!(status, 201, "{users}");
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[1]["email"], "two@example.com");
    assert!(users[1]["id"].as_i64() > users[0]["id"].as_i64());
    assert_eq!(count_users(&data).await, 3);

    // One row the database refuses (the email is taken): nothing is written.
    let (status, _, body) = app
        .post_json(
            "/users/batch",
            &json!([
                {"name": "three", "email": "three@example.com"},
                {"name": "clash", "email": "taken@example.com"}
            ]),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "conflict", "no user was created");
    assert_eq!(count_users(&data).await, 3);
    let (status, _, _) = app.get_json("/users?after=0&limit=10").await;
    assert_eq!(status, 200);

    // One invalid row: refused before the database, nothing written.
    let (status, _, body) = app
        .post_json(
            "/users/batch",
            &json!([
                {"name": "four", "email": "four@example.com"},
                {"name": "bad", "email": "nope"}
            ]),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "unprocessable_entity", "users[1]");

    // The same address twice in one batch.
    let (status, _, body) = app
        .post_json(
            "/users/batch",
            &json!([
                {"name": "a", "email": "twice@example.com"},
                {"name": "b", "email": "Twice@example.com"}
            ]),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "conflict", "appears twice");

    let six: Vec<Value> = (0..6)
        .map(|i| json!({"name": "n", "email": format!("six{i}@example.com")}))
        .collect();
    let (status, _, body) = app.post_json("/users/batch", &json!(six)).await;
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "unprocessable_entity", "at most 5");
    let (status, _, body) = app.post_json("/users/batch", &json!([])).await;
    assert_eq!(status, 422, "{body}");

    assert_eq!(count_users(&data).await, 3);
    let (_, _, page) = app.get_json("/users").await;
    let emails: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["taken@example.com", "one@example.com", "two@example.com"]
    );
}

async fn the_dashboard_shows_newest_users_and_orders(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    let app = &data.app;
    let batch: Vec<Value> = (0..12)
        .map(|i| json!({"name": format!("buyer {i}"), "email": format!("b{i}@example.com")}))
        .collect();
    let (_, _, users) = app.post_json("/users/batch", &json!(batch)).await;
    let first_id = users[0]["id"].as_i64().unwrap();
    for i in 0..12 {
        let (status, headers, order) = app
            .post_json(
                "/orders",
                &json!({"user_id": first_id + i, "product": format!("item {i}"), "quantity": 1 + i, "amount_cents": 100 * i}),
            )
            .await;
        assert_eq!(status, 201, "{order}");
        assert!(headers.get("location").is_some());
    }
    let (status, _, dash) = app.get_json("/dashboard").await;
    assert_eq!(status, 200, "{dash}");
    assert_eq!(dash["total_users"], 12);
    let users = dash["users"].as_array().unwrap();
    let orders = dash["orders"].as_array().unwrap();
    assert_eq!(users.len(), 10);
    assert_eq!(orders.len(), 10);
    assert_eq!(users[0]["name"], "buyer 11");
    assert_eq!(orders[0]["product"], "item 11");
    assert_eq!(orders[0]["quantity"], 12);
    assert_eq!(orders[9]["product"], "item 2");

    for (bad, needle) in [
        (
            json!({"user_id": 999999, "product": "x", "quantity": 1, "amount_cents": 1}),
            "does not exist",
        ),
        (
            json!({"user_id": first_id, "product": "x", "quantity": 0, "amount_cents": 1}),
            "quantity",
        ),
        (
            json!({"user_id": first_id, "product": "x", "quantity": 1, "amount_cents": -1}),
            "amount_cents",
        ),
        (
            json!({"user_id": first_id, "product": "", "quantity": 1, "amount_cents": 1}),
            "product",
        ),
    ] {
        let (status, _, body) = app.post_json("/orders", &bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_error(&body, "unprocessable_entity", needle);
    }
    let (_, _, dash) = app.get_json("/dashboard").await;
    assert_eq!(
        dash["orders"][0]["product"], "item 11",
        "no bad order was written"
    );
}

async fn posts_come_with_their_author_and_comments(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    let app = &data.app;
    let author = create_user(&data, "Author", "author@example.com").await;
    let reader = create_user(&data, "Reader", "reader@example.com").await;
    let (status, _, post) = app
        .post_json(
            "/posts",
            &json!({"author_id": author["id"], "title": "Hello", "body": "First post"}),
        )
        .await;
    assert_eq!(status, 201, "{post}");
    let post_id = post["id"].as_i64().unwrap();
    // Text past 64 KiB (where a MySQL TEXT column stops) is kept whole on every backend.
    let long = "long comment ".repeat(10_000);
    for text in ["first!", "second", long.as_str()] {
        let (status, _, c) = app
            .post_json(
                &format!("/posts/{post_id}/comments"),
                &json!({"author_id": reader["id"], "body": text}),
            )
            .await;
        assert_eq!(status, 201, "{c}");
    }
    let (status, _, full) = app.get_json(&format!("/posts/{post_id}")).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["post"], post);
    assert_eq!(full["author"], author);
    let comments = full["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 3);
    assert_eq!(comments[2]["body"], long.as_str());
    assert_eq!(comments[0]["body"], "first!");
    assert_eq!(comments[1]["author_id"], reader["id"]);

    let (status, _, body) = app.get_json("/posts/999999").await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "Post not found");
    let (status, _, body) = app
        .post_json(
            "/posts/999999/comments",
            &json!({"author_id": reader["id"], "body": "hello?"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = app
        .post_json(
            &format!("/posts/{post_id}/comments"),
            &json!({"author_id": 999999, "body": "ghost"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_error(
        &body,
        "unprocessable_entity",
        "author_id 999999 does not exist",
    );
    let (status, _, body) = app
        .post_json(
            "/posts",
            &json!({"author_id": 999999, "title": "t", "body": "b"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, _, full) = app.get_json(&format!("/posts/{post_id}")).await;
    assert_eq!(full["comments"].as_array().unwrap().len(), 3);
}

async fn the_data_table_is_listed(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    let (status, _, page) = data.app.get_json("/data").await;
    assert_eq!(status, 200);
    assert_eq!(page, json!({"items": [], "next_after": null}));
    let (status, _, row) = data
        .app
        .post_json(
            "/data",
            &json!({"name": "limits", "value": {"max": [1, 2.5, "x"], "on": true}}),
        )
        .await;
    assert_eq!(status, 201, "{row}");
    let (_, _, page) = data.app.get_json("/data").await;
    assert_eq!(page["items"][0]["name"], "limits");
    assert_eq!(
        page["items"][0]["value"],
        json!({"max": [1, 2.5, "x"], "on": true})
    );
    let (status, _, _) = data.app.post_json("/data", &json!({"value": 1})).await;
    assert_eq!(status, 422);
}

/// The document tests, against whatever store the server was started with.
pub async fn exercise_documents(app: &crate::helpers::TestApp) {
    let doc = json!({"title": "report", "n": 5, "ratio": 0.25, "tags": ["a", "b"], "nested": {"ok": true, "none": null}});
    let (status, headers, created) = app.post_json("/documents", &doc).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 24, "a new ObjectId in hex: {id}");
    assert_eq!(
        headers.get("location").unwrap(),
        &format!("/documents/{id}")
    );
    let (status, _, read) = app.get_json(&format!("/documents/{id}")).await;
    assert_eq!(status, 200, "{read}");
    let mut expected = doc.clone();
    expected["_id"] = json!(id);
    assert_eq!(read, expected);

    let (status, _, created) = app
        .post_json("/documents", &json!({"_id": "invoice-7", "total": 12}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "invoice-7");
    let (_, _, read) = app.get_json("/documents/invoice-7").await;
    assert_eq!(read, json!({"_id": "invoice-7", "total": 12}));
    let (status, _, body) = app
        .post_json("/documents", &json!({"_id": "invoice-7", "total": 13}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (_, _, read) = app.get_json("/documents/invoice-7").await;
    assert_eq!(read["total"], 12, "the first document is kept");

    let (status, _, body) = app.get_json("/documents/absent").await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "Document not found");
    let (status, _, _) = app.get_json("/documents/0123456789abcdef01234567").await;
    assert_eq!(status, 404);

    for bad in [
        json!([1, 2]),
        json!("text"),
        json!({"_id": 5}),
        json!({"a": {"$where": "1"}}),
    ] {
        let (status, _, body) = app.post_json("/documents", &bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let big = json!({"blob": "x".repeat(300 * 1024)});
    let (status, _, body) = app.post_json("/documents", &big).await;
    assert_eq!(status, 413, "{body}");
}

async fn documents_are_stored_in_the_relational_store(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    exercise_documents(&data.app).await;
}

#[actix_rt::test]
async fn documents_are_stored_in_a_mongo_wire_server() {
    let Some(uri) = crate::helpers::service_url("COURIER_TEST_MONGODB_URI", None) else {
        return;
    };
    // A database of its own, so reruns start empty.
    let mut uri = url::Url::parse(&uri).unwrap();
    uri.set_path(&format!("/courier_docs_{:08x}", rand::random::<u32>()));
    let app = crate::helpers::spawn_app_with(&[("MONGODB_URI", uri.as_str())]).await;
    let (_, _, ready) = app.get_json("/readyz").await;
    assert_eq!(ready["checks"]["mongodb"]["status"], "ok", "{ready}");
    exercise_documents(&app).await;
}

#[actix_rt::test]
async fn documents_answer_503_when_mongodb_is_down() {
    let uri = format!(
        "mongodb://127.0.0.1:{}/courier?directConnection=true",
        crate::helpers::closed_port()
    );
    let app = crate::helpers::spawn_app_with(&[("MONGODB_URI", &uri)]).await;
    let started = Instant::now();
    let (status, _, body) = app.post_json("/documents", &json!({"a": 1})).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "service_unavailable", "MongoDB");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _, _) = app.get_json("/documents/x").await;
    assert_eq!(status, 503);
}

/// Reads a streamed body to the end.
async fn read_stream(
    res: &mut awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = res.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

async fn the_csv_export_quotes_what_needs_quoting(backend: Backend) {
    // Small pages so the export spans several queries.
    let Some(data) = spawn_data_app(backend, &[("EXPORT_PAGE_SIZE", "3")]).await else {
        return;
    };
    let names = [
        "Plain",
        "Smith, Jane",
        "Say \"cheese\"",
        "Two\nlines",
        "Carriage\r\nreturn",
        "Ünïcödé ✓",
        "=SUM(A1)",
    ];
    let batch: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"name": n, "email": format!("e{i}@example.com")}))
        .collect();
    let (status, _, users) = data.app.post_json("/users/batch", &json!(batch)).await;
    assert_eq!(status, 201, "{users}");

    let mut res = data
        .app
        .client
        .get(data.app.url("/export/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-disposition").unwrap(),
        "attachment; filename=users.csv"
    );
    assert!(res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let body = read_stream(&mut res).await;
    assert!(body.starts_with(b"ID,Name,Email\r\n"));
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("\"Smith, Jane\""));
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("\"Say \"\"cheese\"\"\""));

    let mut reader = csv::Reader::from_reader(body.as_slice());
    assert_eq!(reader.headers().unwrap(), vec!["ID", "Name", "Email"]);
    let rows: Vec<(i64, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.expect("valid CSV");
            (r[0].parse().unwrap(), r[1].to_owned(), r[2].to_owned())
        })
        .collect();
    assert_eq!(rows.len(), names.len());
    for (i, (row, user)) in rows.iter().zip(users.as_array().unwrap()).enumerate() {
        assert_eq!(row.0, user["id"].as_i64().unwrap());
        assert_eq!(row.1, names[i]);
        assert_eq!(row.2, format!("e{i}@example.com"));
    }

    // An empty table still gives the header.
    let Some(empty) = app(backend).await else {
        return;
    };
    let (status, text) = empty.app.get_text("/export/users").await;
    assert_eq!(status, 200);
    assert_eq!(text, "ID,Name,Email\r\n");
}

async fn the_report_is_streamed_section_by_section(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    create_user(&data, "<script>alert(1)</script>", "x@example.com").await;
    data.app
        .post_json(
            "/orders",
            &json!({"user_id": 1, "product": "tea", "quantity": 2, "amount_cents": 450}),
        )
        .await;

    // Hold the orders table so the Orders section cannot be computed yet: the heading and
    // the Users section must reach the client anyway.
    let mut blocker = DirectConn::open(&data).await;
    let held = match backend {
        Backend::Postgres => {
            blocker
                .exec("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE;")
                .await;
            Some("ROLLBACK;")
        }
        Backend::Mysql => {
            blocker.exec("LOCK TABLES orders WRITE;").await;
            Some("UNLOCK TABLES;")
        }
        // SQLite readers are never blocked by a writer (WAL), so there is nothing to hold.
        Backend::Sqlite => None,
    };
    let mut res = data
        .app
        .client
        .get(data.app.url("/generate/report"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers().get("content-length").is_none());
    let mut seen = String::new();
    if let Some(release) = held {
        while !seen.contains("<h2>Users</h2>") || !seen.contains("</pre>") {
            let chunk = res.next().await.expect("more chunks").expect("chunk");
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert!(seen.starts_with("<!doctype html>"), "{seen}");
        assert!(!seen.contains("<h2>Orders</h2>"), "{seen}");
        blocker.exec(release).await;
    }
    let rest = read_stream(&mut res).await;
    seen.push_str(std::str::from_utf8(&rest).unwrap());
    for part in [
        "<h1>Report</h1>",
        "<h2>Users</h2>",
        "Total users: 1",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "<h2>Orders</h2>",
        "Revenue: 4.50",
        "Top product: tea (1)",
        "<h2>Analytics</h2>",
        "Average order: 4.50",
        "</html>",
    ] {
        assert!(seen.contains(part), "{part:?} missing from {seen}");
    }
    assert!(!seen.contains("<script>"));
}

async fn a_statement_over_its_timeout_gives_504(backend: Backend) {
    let Some(data) = spawn_data_app(backend, &[("DB_STATEMENT_TIMEOUT_MS", "400")]).await else {
        return;
    };
    create_user(&data, "Locked", "locked@example.com").await;
    let mut blocker = DirectConn::open(&data).await;
    let (lock, release, request) = match backend {
        // A reader waits behind an exclusive lock until Postgres cancels it.
        Backend::Postgres => (
            "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE;",
            "ROLLBACK;",
            "get",
        ),
        // A reader waits behind a table lock until MariaDB's max_statement_time (MySQL's
        // max_execution_time) ends it.
        Backend::Mysql => ("LOCK TABLES users WRITE;", "UNLOCK TABLES;", "get"),
        // A writer waits for another writer's lock until SQLite's busy timeout.
        Backend::Sqlite => ("BEGIN IMMEDIATE;", "ROLLBACK;", "post"),
    };
    blocker.exec(lock).await;
    let started = Instant::now();
    let (status, _, body) = if request == "get" {
        data.app.get_json("/users/1").await
    } else {
        data.app
            .post_json("/users", &json!({"name": "n", "email": "n@example.com"}))
            .await
    };
    let waited = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_error(&body, "gateway_timeout", "400 ms");
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    blocker.exec(release).await;
    // The lock is gone: the same request works and nothing was written by the timed-out one.
    let (status, _, _) = data.app.get_json("/users/1").await;
    assert_eq!(status, 200);
    assert_eq!(count_users(&data).await, 1);
}

async fn metrics_show_the_pool_and_query_latency(backend: Backend) {
    let Some(data) = app(backend).await else {
        return;
    };
    data.app.get_json("/users/1").await;
    data.app.get_json("/dashboard").await;
    let (_, text) = data.app.get_text("/metrics").await;
    for needle in [
        "courier_db_pool_connections{state=\"idle\"}",
        "courier_db_pool_connections{state=\"in_use\"}",
        "courier_db_pool_max_connections 20",
        "courier_db_pool_waiting 0",
        "courier_db_query_duration_seconds_count{operation=\"get_user\"} 1",
        "courier_db_query_duration_seconds_count{operation=\"dashboard_count\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    let idle = data
        .app
        .metric("courier_db_pool_connections{state=\"idle\"}")
        .await
        .unwrap();
    assert!(
        idle >= 1.0,
        "the dashboard's connections went back to the pool"
    );
    let (_, _, ready) = data.app.get_json("/readyz").await;
    let name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
        Backend::Mysql => "mysql",
    };
    assert_eq!(ready["checks"]["database"]["status"], "ok", "{ready}");
    assert_eq!(ready["checks"]["database"]["backend"], name);
}

/// The database server's failures, on each server backend.
macro_rules! on_server_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres_failures {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
        mod mysql_failures {
            $(
                #[actix_rt::test]
                async fn $name() {
                    super::$name(super::Backend::Mysql).await
                }
            )*
        }
    };
}

on_server_backends!(
    an_unreachable_database_gives_503_within_the_connect_timeout,
    a_database_that_goes_away_and_comes_back_is_used_again_without_a_restart,
    a_database_down_at_start_up_is_migrated_and_used_once_it_is_up,
);

/// The server's port for `backend`, which the proxy in front of it forwards to.
fn server_port(backend: Backend) -> u16 {
    match backend {
        Backend::Mysql => 3306,
        _ => 5432,
    }
}

async fn an_unreachable_database_gives_503_within_the_connect_timeout(backend: Backend) {
    // Accepts connections and never answers: the worst kind of down.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = match backend {
        Backend::Mysql => "mysql://root",
        _ => "postgres://postgres",
    };
    let url = format!(
        "{scheme}@127.0.0.1:{}/courier",
        silent.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let app =
        crate::helpers::spawn_app_with(&[("DATABASE_URL", &url), ("DB_CONNECT_TIMEOUT_MS", "500")])
            .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "start-up is bounded"
    );
    for path in ["/users/1", "/users-fast/1", "/dashboard", "/export/users"] {
        let started = Instant::now();
        let (status, _, body) = app.get_json(path).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_error(&body, "service_unavailable", "");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} answered in time"
        );
    }
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(body["checks"]["database"]["status"], "down");
}

async fn a_database_that_goes_away_and_comes_back_is_used_again_without_a_restart(
    backend: Backend,
) {
    let Some(Some(url)) = crate::helpers::fresh_database(backend).await else {
        return;
    };
    let (mut proxy, through) = Proxy::in_front_of(&url, server_port(backend)).await;
    let app = crate::helpers::spawn_app_with(&[
        ("DATABASE_URL", &through),
        ("DB_CONNECT_TIMEOUT_MS", "1000"),
    ])
    .await;
    let (status, _, user) = app
        .post_json(
            "/users",
            &json!({"name": "before", "email": "before@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{user}");

    proxy.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _, body) = app.get_json("/users/1").await;
        assert_eq!(status, 503, "{body}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let (status, _, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");

    proxy.restart().await;
    let (status, _, read) = app.get_json("/users/1").await;
    assert_eq!(
        status, 200,
        "the first request after the outage works: {read}"
    );
    assert_eq!(read["email"], "before@example.com");
    let (status, _, _) = app
        .post_json(
            "/users",
            &json!({"name": "after", "email": "after@example.com"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _, _) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
}

async fn a_database_down_at_start_up_is_migrated_and_used_once_it_is_up(backend: Backend) {
    let Some(Some(url)) = crate::helpers::fresh_database(backend).await else {
        return;
    };
    let (mut proxy, through) = Proxy::in_front_of(&url, server_port(backend)).await;
    proxy.stop();
    let app = crate::helpers::spawn_app_with(&[("DATABASE_URL", &through)]).await;
    let (status, _, body) = app.get_json("/users/1").await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "service_unavailable", "schema is not ready");

    proxy.restart().await;
    // The migrations are retried in the background; wait for readiness, as a load
    // balancer would.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = app.get_json("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the schema was never applied");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = app
        .post_json(
            "/users",
            &json!({"name": "late", "email": "late@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// A pooled SQLite connection opened on one runtime (an HTTP worker's, say) keeps working
/// from another after that runtime has stopped: a worker restart or a shutdown in progress
/// (the job worker handing its jobs back) must not leave failing connections in the pool.
#[actix_rt::test]
async fn a_pooled_sqlite_connection_outlives_the_runtime_that_opened_it() {
    use courier_actors::db::{Database, DbMetrics, DocumentStore};
    let dir = tempfile::tempdir().unwrap();
    // One connection, so the second query must reuse the first one's.
    let config = crate::helpers::test_config(
        &dir,
        &[("DB_POOL_MAX_SIZE", "1"), ("DB_POOL_MIN_IDLE", "1")],
    );
    let settings = config.db.clone();
    let path = dir.path().to_owned();
    let db = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let metrics = DbMetrics::register(&prometheus::Registry::new());
            let db = Database::sqlite(&path, settings, metrics, DocumentStore::Relational);
            db.migrate().await.expect("migrations");
            db.ping().await.expect("the first query");
            db
        })
    })
    .join()
    .unwrap();
    // That runtime has stopped; its connection is still the pool's only one.
    db.ping()
        .await
        .expect("the connection answers from this runtime");
    assert_eq!(db.get_job(1).await.unwrap().map(|j| j.id), None);
}
