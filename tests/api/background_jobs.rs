//! Background jobs as a client sees them: 202 at once, then the job's progress on
//! `/jobs/{id}/events` until it succeeds or is dead-lettered; email through a real SMTP
//! conversation (a sink on loopback) or the outbox; actions and their analytics; retries,
//! dead letters, graceful shutdown and a server killed mid-job.

use std::time::{Duration, Instant};

use crate::helpers::{
    spawn_app_with, spawn_data_app, wait_for_job, wait_for_metric, Backend, SinkMode, SmtpSink,
    SseClient,
};
use serde_json::json;

async fn send_email(app: &crate::helpers::TestApp, email: &str, message: &str) -> i64 {
    let (status, _, body) = app
        .post_json("/send-email", &json!({"email": email, "message": message}))
        .await;
    assert_eq!(status, 202, "{body}");
    body["job_ids"][0].as_i64().unwrap()
}

async fn email_goes_to_the_outbox_and_its_events_are_streamed(backend: Backend) {
    let Some(data) = spawn_data_app(backend, &[]).await else {
        return;
    };
    let app = &data.app;
    let mut updates = SseClient::connect(app, "/sse/updates", None).await;
    let started = Instant::now();
    let id = send_email(app, "bob@example.com", "Hello, Bob").await;
    // Answered without waiting for delivery (generous: the first request may open the
    // pool's first connection on a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at once"
    );
    let done = wait_for_job(&app.address, id, "succeeded").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["progress"], 100);

    let (_, _, job) = app.get_json(&format!("/jobs/{id}")).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["result"]["delivered_to"], "outbox");
    let (_, _, outbox) = app.get_json("/outbox").await;
    assert_eq!(outbox[0]["recipient"], "bob@example.com");
    assert_eq!(outbox[0]["message"], "Hello, Bob");
    assert_eq!(outbox[0]["job_id"], id);

    // The job's changes are on /sse/updates too.
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), updates.next_event())
            .await
            .expect("a job update")
            .expect("stream open");
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        if data["kind"] == "job" && data["data"]["state"] == "succeeded" {
            assert_eq!(data["data"]["id"], id);
            break;
        }
    }

    // The query form: parameters in the URL.
    let (status, _, body) = app
        .client
        .post(app.url("/send-email?email=carol%40example.com&message=hi"))
        .send()
        .await
        .map(|mut r| (r.status().as_u16(), r.headers().clone(), r.body()))
        .map(|(s, h, _)| (s, h, ()))
        .unwrap();
    assert_eq!(status, 202, "{body:?}");

    for bad in [
        json!({"email": "not-an-address", "message": "x"}),
        json!({"email": "a@example.com", "message": "   "}),
        json!({"email": "a@example.com"}),
    ] {
        let (status, _, body) = app.post_json("/send-email", &bad).await;
        assert!(status == 422 || status == 400, "{bad}: {status} {body}");
    }
    let (status, _, _) = app.get_json("/jobs/999999").await;
    assert_eq!(status, 404);
}

async fn an_action_and_its_jobs_are_committed_together(backend: Backend) {
    let Some(data) = spawn_data_app(backend, &[]).await else {
        return;
    };
    let app = &data.app;
    let (_, _, user) = app
        .post_json(
            "/users",
            &json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    let uid = user["id"].as_i64().unwrap();
    for _ in 0..2 {
        let (status, _, body) = app
            .post_json(&format!("/users/{uid}/action"), &json!({"action": "login"}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "Action logged");
        let ids = body["job_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 2);
        for id in ids {
            wait_for_job(&app.address, id.as_i64().unwrap(), "succeeded").await;
        }
    }
    let (status, _, body) = app
        .client
        .post(app.url(&format!("/users/{uid}/action?action=logout")))
        .send()
        .await
        .map(|r| (r.status().as_u16(), (), ()))
        .unwrap();
    assert_eq!(status, 202, "{body:?}");

    let (status, _, body) = app
        .post_json("/users/424242/action", &json!({"action": "login"}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = app
        .post_json(
            &format!("/users/{uid}/action"),
            &json!({"action": "drop table"}),
        )
        .await;
    assert_eq!(status, 422);
    let (_, _, queued) = app.get_json("/jobs?state=dead").await;
    assert_eq!(queued, json!([]));

    let (_, _, analytics) = app.get_json("/analytics").await;
    assert_eq!(analytics[0]["action"], "login", "{analytics}");
    assert_eq!(analytics[0]["count"], 2);
}

mod sqlite {
    use super::*;
    #[actix_rt::test]
    async fn a_job_with_no_attempts_left_is_never_claimed_again() {
        super::a_job_with_no_attempts_left_is_never_claimed_again(Backend::Sqlite).await
    }
    #[actix_rt::test]
    async fn email_goes_to_the_outbox_and_its_events_are_streamed() {
        super::email_goes_to_the_outbox_and_its_events_are_streamed(Backend::Sqlite).await
    }
    #[actix_rt::test]
    async fn an_action_and_its_jobs_are_committed_together() {
        super::an_action_and_its_jobs_are_committed_together(Backend::Sqlite).await
    }
}

mod postgres {
    use super::*;
    #[actix_rt::test]
    async fn a_job_with_no_attempts_left_is_never_claimed_again() {
        super::a_job_with_no_attempts_left_is_never_claimed_again(Backend::Postgres).await
    }
    #[actix_rt::test]
    async fn email_goes_to_the_outbox_and_its_events_are_streamed() {
        super::email_goes_to_the_outbox_and_its_events_are_streamed(Backend::Postgres).await
    }
    #[actix_rt::test]
    async fn an_action_and_its_jobs_are_committed_together() {
        super::an_action_and_its_jobs_are_committed_together(Backend::Postgres).await
    }
}

mod mysql {
    use super::*;
    #[actix_rt::test]
    async fn a_job_with_no_attempts_left_is_never_claimed_again() {
        super::a_job_with_no_attempts_left_is_never_claimed_again(Backend::Mysql).await
    }
    #[actix_rt::test]
    async fn email_goes_to_the_outbox_and_its_events_are_streamed() {
        super::email_goes_to_the_outbox_and_its_events_are_streamed(Backend::Mysql).await
    }
    #[actix_rt::test]
    async fn an_action_and_its_jobs_are_committed_together() {
        super::an_action_and_its_jobs_are_committed_together(Backend::Mysql).await
    }
}

/// Every job event also goes to the SSE feed (for `/sse/updates`), whose mailbox depth is a
/// gauge: each announcement is counted in when sent and out when the feed takes it, so
/// after a burst of jobs the gauge is back at zero, not below it.
#[actix_rt::test]
async fn the_feed_mailbox_gauge_returns_to_zero_after_a_burst_of_job_events() {
    let app = spawn_app_with(&[]).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(send_email(&app, "burst@example.com", &format!("message {i}")).await);
    }
    for id in ids {
        wait_for_job(&app.address, id, "succeeded").await;
    }
    // Each job announced at least `running` and `succeeded`.
    wait_for_metric(&app, "courier_sse_feed_mailbox_depth", 0.0).await;
}

#[actix_rt::test]
async fn a_delivery_that_fails_twice_then_succeeds() {
    let sink = SmtpSink::start(SinkMode::RejectTransient(2));
    let app = spawn_app_with(&[("SMTP_URL", &sink.url())]).await;
    let id = send_email(&app, "dave@example.com", "third time lucky").await;
    let done = wait_for_job(&app.address, id, "succeeded").await;
    assert_eq!(done["attempts"], 3);
    assert!(
        done["last_error"].as_str().unwrap().contains("451"),
        "{done}"
    );
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].contains("third time lucky"));
    assert!(received[0].contains("dave@example.com"));
    assert_eq!(app.metric("courier_job_retries_total").await, Some(2.0));
    let (_, _, job) = app.get_json(&format!("/jobs/{id}")).await;
    assert_eq!(job["result"]["delivered_to"], "smtp");
}

#[actix_rt::test]
async fn a_job_that_always_fails_is_dead_lettered_with_its_error() {
    let sink = SmtpSink::start(SinkMode::RejectPermanent);
    let app = spawn_app_with(&[("SMTP_URL", &sink.url())]).await;
    let id = send_email(&app, "nobody@example.com", "never").await;
    let dead = wait_for_job(&app.address, id, "dead").await;
    assert_eq!(
        dead["attempts"], 3,
        "JOB_MAX_ATTEMPTS in the test configuration"
    );
    assert!(
        dead["last_error"].as_str().unwrap().contains("550"),
        "{dead}"
    );
    assert!(sink.received().is_empty());
    let (_, _, letters) = app.get_json("/jobs?state=dead").await;
    assert_eq!(letters[0]["id"], id);
    assert_eq!(
        app.metric("courier_job_dead_letters_total").await,
        Some(1.0)
    );
}

#[actix_rt::test]
async fn graceful_shutdown_hands_running_jobs_back_to_the_queue() {
    let sink = SmtpSink::start(SinkMode::Hang);
    let app = spawn_app_with(&[("SMTP_URL", &sink.url()), ("SMTP_TIMEOUT_MS", "60000")]).await;
    let id = send_email(&app, "erin@example.com", "across a restart").await;
    wait_for_job(&app.address, id, "running").await;
    let mut events = SseClient::connect(&app, &format!("/jobs/{id}/events"), None).await;
    assert!(events.next_event().await.unwrap().data.contains("running"));
    app.shutdown.shutdown().await;
    // Progress reported before the shutdown may still arrive, and so may the hand-back
    // (`queued`) if the stream was reading the job when it was closed; then it ends.
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next_event().await {
            assert!(
                event.data.contains("\"running\"") || event.data.contains("\"queued\""),
                "{event:?}"
            );
        }
    })
    .await
    .expect("the job's event stream ends on shutdown");

    sink.set_mode(SinkMode::Accept);
    let data_dir = app.data_dir.path().display().to_string();
    let next = spawn_app_with(&[("APP_DATA_DIR", &data_dir), ("SMTP_URL", &sink.url())]).await;
    let done = wait_for_job(&next.address, id, "succeeded").await;
    assert_eq!(
        done["attempts"], 1,
        "the interrupted attempt was handed back, not counted"
    );
    assert_eq!(sink.received().len(), 1);
}

#[actix_rt::test]
async fn a_job_running_when_the_server_is_killed_completes_after_a_restart() {
    let sink = SmtpSink::start(SinkMode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SMTP_URL", sink.url()),
        ("SMTP_TIMEOUT_MS", "60000".to_owned()),
        ("JOB_LEASE_MS", "1500".to_owned()),
        ("JOB_POLL_INTERVAL_MS", "200".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = crate::helpers::start_server_process(dir.path(), &env);
    let base = format!("http://127.0.0.1:{}", first.port);
    let client = awc::Client::default();
    let mut res = client
        .post(format!("{base}/send-email"))
        .send_json(&json!({"email": "frank@example.com", "message": "survive a crash"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let body: serde_json::Value = res.json().await.unwrap();
    let id = body["job_ids"][0].as_i64().unwrap();
    wait_for_job(&base, id, "running").await;

    first.child.kill().unwrap(); // SIGKILL: no shutdown, the lease is still held
    first.child.wait().unwrap();
    sink.set_mode(SinkMode::Accept);

    let mut second = crate::helpers::start_server_process(dir.path(), &env);
    let base = format!("http://127.0.0.1:{}", second.port);
    let done = wait_for_job(&base, id, "succeeded").await;
    assert_eq!(
        done["attempts"], 2,
        "claimed again once the dead worker's lease ran out"
    );
    let received = sink.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].contains("survive a crash"));
    second.child.kill().unwrap();
    let _ = second.child.wait();
}

#[actix_rt::test]
async fn two_nodes_share_one_postgres_queue_and_run_each_job_once() {
    let Some(url) = crate::helpers::fresh_postgres_database().await else {
        return;
    };
    let a = spawn_app_with(&[("DATABASE_URL", &url), ("JOB_CONCURRENCY", "2")]).await;
    let b = spawn_app_with(&[("DATABASE_URL", &url), ("JOB_CONCURRENCY", "2")]).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        ids.push(send_email(node, &format!("u{i}@example.com"), "hello").await);
    }
    for id in &ids {
        let done = wait_for_job(&a.address, *id, "succeeded").await;
        assert_eq!(done["attempts"], 1, "job {id} was claimed once");
    }
    let (_, _, outbox) = a.get_json("/outbox?limit=100").await;
    assert_eq!(outbox.as_array().unwrap().len(), 30);
    let (_, _, jobs) = a.get_json("/jobs?state=succeeded&limit=100").await;
    let workers: std::collections::HashSet<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2, "both nodes took jobs: {workers:?}");
}

#[actix_rt::test]
async fn an_smtp_server_that_goes_silent_times_out_and_the_job_is_dead_lettered() {
    let sink = SmtpSink::start(SinkMode::Hang);
    let app = spawn_app_with(&[("SMTP_URL", &sink.url()), ("SMTP_TIMEOUT_MS", "300")]).await;
    let id = send_email(&app, "grace@example.com", "into the void").await;
    let dead = wait_for_job(&app.address, id, "dead").await;
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 300 ms"),
        "{dead}"
    );
}

/// The claim itself (no server running, so nothing else touches the queue): a job whose
/// lease ran out is claimed again while it has attempts left, but one whose last attempt's
/// worker died is never run again, even when its lease runs out after the sweep that
/// dead-letters such jobs and before the claim; the next sweep dead-letters it.
async fn a_job_with_no_attempts_left_is_never_claimed_again(backend: Backend) {
    use courier_actors::db::job_queue::{JobState, NewJob};
    use courier_actors::db::{Database, DbMetrics, DocumentStore};
    let dir = tempfile::tempdir().unwrap();
    let config = crate::helpers::test_config(&dir, &[]);
    let settings = config.db.clone();
    let metrics = DbMetrics::register(&prometheus::Registry::new());
    let (db, url) = match backend {
        Backend::Sqlite => (
            Database::sqlite(dir.path(), settings, metrics, DocumentStore::Relational),
            dir.path()
                .join(courier_actors::db::SQLITE_FILE)
                .display()
                .to_string(),
        ),
        Backend::Postgres => {
            let Some(url) = crate::helpers::fresh_postgres_database().await else {
                return;
            };
            (
                Database::postgres(&url, settings, metrics, DocumentStore::Relational),
                url,
            )
        }
        Backend::Mysql => {
            let Some(url) = crate::helpers::fresh_mysql_database().await else {
                return;
            };
            (
                Database::mysql(&url, settings, metrics, DocumentStore::Relational),
                url,
            )
        }
    };
    db.migrate().await.expect("migrations");
    let payload = json!({"email": "k@example.com", "message": "m"});
    let ids = db
        .enqueue(vec![
            NewJob::new("send_email", &payload, 1, Duration::ZERO),
            NewJob::new("send_email", &payload, 2, Duration::ZERO),
        ])
        .await
        .unwrap();
    let first = db
        .claim_jobs("gone", 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    db.job_progress(ids[1], "gone", 50, "halfway")
        .await
        .unwrap()
        .expect("held by gone");
    // Their worker died: the leases run out.
    crate::helpers::DirectConn::connect(backend, &url)
        .await
        .exec("UPDATE jobs SET lease_until = '2000-01-01 00:00:00'")
        .await;

    let again = db
        .claim_jobs("next", 10, Duration::from_secs(60))
        .await
        .unwrap();
    let again: Vec<(i64, i32, i32, Option<String>)> = again
        .into_iter()
        .map(|j| (j.id, j.attempts, j.progress, j.progress_note))
        .collect();
    assert_eq!(
        again,
        vec![(ids[1], 2, 0, None)],
        "only the job with an attempt left, its new attempt without the old one's progress"
    );

    assert_eq!(db.bury_expired_jobs().await.unwrap(), 1);
    let dead = db.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 1, "never run a second time");
}

#[actix_rt::test]
async fn a_job_whose_worker_died_in_its_last_attempt_is_dead_lettered() {
    let Some(data) = spawn_data_app(Backend::Sqlite, &[]).await else {
        return;
    };
    // As a worker that died during the last attempt leaves it: running, lease run out.
    let mut conn = crate::helpers::DirectConn::open(&data).await;
    conn.exec(
        "INSERT INTO jobs (kind, payload, state, attempts, max_attempts, run_at, lease_until, \
         worker, created_at, updated_at) VALUES ('send_email', \
         '{\"email\":\"h@example.com\",\"message\":\"m\"}', 'running', 3, 3, \
         '2026-01-01 00:00:00', '2026-01-01 00:00:05', 'gone-jobs', '2026-01-01 00:00:00', \
         '2026-01-01 00:00:00')",
    )
    .await;
    let dead = wait_for_job(&data.app.address, 1, "dead").await;
    assert_eq!(dead["attempts"], 3, "not claimed for a fourth attempt");
    assert!(
        dead["last_error"].as_str().unwrap().contains("stopped"),
        "{dead}"
    );
    let (_, _, outbox) = data.app.get_json("/outbox").await;
    assert_eq!(outbox, json!([]));
}

#[actix_rt::test]
async fn without_anonymous_publishing_sending_email_needs_a_token() {
    let app = spawn_app_with(&[("ANONYMOUS_PUBLISH", "false")]).await;
    let (status, _, body) = app
        .post_json(
            "/send-email",
            &json!({"email": "i@example.com", "message": "hi"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let config = crate::helpers::test_config(&app.data_dir, &[]);
    let token = crate::helpers::token(&config, "alice");
    let mut res = app
        .client
        .post(app.url("/send-email"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"email": "i@example.com", "message": "hi"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202, "{:?}", res.body().await);
}
