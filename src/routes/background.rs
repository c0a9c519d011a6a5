//! Background work: `/send-email` and `/users/{id}/action`, answered at once
//! with 202 and the job ids, and the job queue's state: `/jobs/{id}`, its progress as SSE
//! (`/jobs/{id}/events`), dead letters (`/jobs?state=dead`), `/outbox` and `/analytics`.

use std::time::Duration;

use actix_web::{web, Either, HttpResponse};
use bytes::Bytes;
use courier_actors::db::actions::{ActionCount, OutboxEmail};
use courier_actors::db::job_queue::{Job, JobState, NewJob};
use courier_actors::db_executor::{
    CreateAction, EnqueueJobs, GetJob, JobsFor, ListAnalytics, ListJobs, ListOutbox,
};
use courier_actors::job_worker::{kind, JobEvent, JobSnapshot, Wake};
use futures_util::stream;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};

use crate::error::{AppError, ErrorBody};
use crate::routes::data::{ask, is_email, page_limit, Executor};
use crate::routes::sse::event_stream;
use crate::state::AppState;

/// Longest email message accepted (characters).
pub const MAX_MESSAGE_CHARS: usize = 10_000;
/// Longest action name.
pub const MAX_ACTION_CHARS: usize = 64;

/// An email to send.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    /// The recipient.
    email: String,
    /// The text, 1–10,000 characters.
    message: String,
}

/// Jobs accepted for background work.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// What will happen.
    status: &'static str,
    /// The jobs, to follow at `/jobs/{id}` and `/jobs/{id}/events`.
    job_ids: Vec<i64>,
    /// For `/users/{id}/action`: the recorded action.
    #[serde(skip_serializing_if = "Option::is_none")]
    action_id: Option<i64>,
}

/// Queues an email (JSON body, or the query form `?email=&message=`). It is delivered through
/// SMTP when `SMTP_URL` is set, otherwise written to the outbox (`GET /outbox`); failed
/// deliveries are retried with backoff and dead-lettered after `JOB_MAX_ATTEMPTS`. Where
/// anonymous publishing is off (production), a token is required.
#[utoipa::path(
    post, path = "/send-email", tag = "jobs", request_body = EmailRequest, params(EmailRequest),
    responses(
        (status = 202, description = "Queued", body = Accepted),
        (status = 422, description = "Invalid email or message", body = ErrorBody),
        (status = 503, description = "The queue's database is unavailable", body = ErrorBody)
    )
)]
pub async fn send_email(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
    db: Executor,
    body: Either<web::Json<EmailRequest>, web::Query<EmailRequest>>,
) -> Result<HttpResponse, AppError> {
    // Where anonymous publishing is off (production), so is anonymous mail: otherwise
    // the server would relay mail to any address for anyone.
    if !state.config.realtime.session.anonymous_publish {
        let grant = crate::routes::access::grant(&state, &req)?;
        crate::routes::access::meets(&grant.identity, crate::routes::access::Need::User)?;
    }
    let req = match body {
        Either::Left(json) => json.into_inner(),
        Either::Right(query) => query.into_inner(),
    };
    if !is_email(&req.email) {
        return Err(AppError::Unprocessable(format!(
            "email {:?} is not a valid address",
            req.email
        )));
    }
    let chars = req.message.chars().count();
    if req.message.trim().is_empty() || chars > MAX_MESSAGE_CHARS || req.message.contains('\0') {
        return Err(AppError::Unprocessable(format!(
            "message must be 1 to {MAX_MESSAGE_CHARS} characters, without NUL"
        )));
    }
    let job = NewJob::new(
        kind::SEND_EMAIL,
        &json!({"email": req.email, "message": req.message}),
        state.config.jobs.worker.max_attempts,
        Duration::ZERO,
    );
    let ids = ask(&db, EnqueueJobs { jobs: vec![job] }).await?;
    state.jobs.do_send(Wake);
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "Email will be sent in background",
        job_ids: ids,
        action_id: None,
    }))
}

/// An action a user performed.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// 1–64 letters, digits, '-', '_' or '.'.
    action: String,
}

/// Records an action and, in the same transaction, its two jobs: the activity log and the
/// analytics update (visible at `GET /analytics`). Nothing is lost if the server dies right
/// after answering: the jobs are in the database.
#[utoipa::path(
    post, path = "/users/{id}/action", tag = "jobs", request_body = ActionRequest,
    params(("id" = i64, Path, description = "User id"), ActionRequest),
    responses(
        (status = 202, description = "Recorded; its jobs are queued", body = Accepted),
        (status = 404, description = "User not found", body = ErrorBody),
        (status = 422, description = "Invalid action", body = ErrorBody)
    )
)]
pub async fn user_action(
    state: web::Data<AppState>,
    db: Executor,
    user_id: web::Path<i64>,
    body: Either<web::Json<ActionRequest>, web::Query<ActionRequest>>,
) -> Result<HttpResponse, AppError> {
    let action = match body {
        Either::Left(json) => json.into_inner().action,
        Either::Right(query) => query.into_inner().action,
    };
    if action.is_empty()
        || action.len() > MAX_ACTION_CHARS
        || !action
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(AppError::Unprocessable(format!(
            "action must be 1 to {MAX_ACTION_CHARS} letters, digits, '-', '_' or '.'"
        )));
    }
    let user_id = user_id.into_inner();
    let attempts = state.config.jobs.worker.max_attempts;
    let name = action.clone();
    let jobs_for: JobsFor = Box::new(move |action_id| {
        vec![
            NewJob::new(
                kind::LOG_ACTIVITY,
                &json!({"action_id": action_id, "user_id": user_id, "action": name}),
                attempts,
                Duration::ZERO,
            ),
            NewJob::new(
                kind::UPDATE_ANALYTICS,
                &json!({"action_id": action_id, "action": name}),
                attempts,
                Duration::ZERO,
            ),
        ]
    });
    let (action_id, job_ids) = ask(
        &db,
        CreateAction {
            user_id,
            action,
            jobs_for,
        },
    )
    .await?;
    state.jobs.do_send(Wake);
    Ok(HttpResponse::Accepted().json(Accepted {
        status: "Action logged",
        job_ids,
        action_id: Some(action_id),
    }))
}

/// Counts per action, kept by the `update_analytics` jobs.
#[utoipa::path(
    get, path = "/analytics", tag = "jobs",
    responses((status = 200, description = "Counts, most frequent first", body = Vec<ActionCount>))
)]
pub async fn analytics(db: Executor) -> Result<web::Json<Vec<ActionCount>>, AppError> {
    Ok(web::Json(ask(&db, ListAnalytics).await?))
}

/// Paging of lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only ids above this.
    after: Option<i64>,
    /// At most this many (1–1000, default 50).
    limit: Option<i64>,
    /// For `/jobs`: the state to list (default `dead`: the dead letters).
    state: Option<String>,
}

impl ListQuery {
    fn bounds(&self) -> Result<(i64, i64), AppError> {
        let limit = page_limit(self.limit)?;
        Ok((self.after.unwrap_or(0).max(0), limit))
    }
}

/// Emails written to the local outbox (when no SMTP server is configured).
#[utoipa::path(
    get, path = "/outbox", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "Emails, oldest first", body = Vec<OutboxEmail>))
)]
pub async fn outbox(
    db: Executor,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Vec<OutboxEmail>>, AppError> {
    let (after, limit) = query.bounds()?;
    Ok(web::Json(ask(&db, ListOutbox { after, limit }).await?))
}

/// A job as the API shows it.
fn job_json(job: &Job) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    v["result"] = job
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or(Value::Null);
    v
}

/// One job: state (`queued`, `running`, `succeeded`, `dead`), attempts, last error,
/// progress and result.
#[utoipa::path(
    get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "Job not found", body = ErrorBody)
    )
)]
pub async fn get_job(db: Executor, id: web::Path<i64>) -> Result<web::Json<Value>, AppError> {
    ask(
        &db,
        GetJob {
            id: id.into_inner(),
        },
    )
    .await?
    .map(|j| web::Json(job_json(&j)))
    .ok_or_else(|| AppError::NotFound("Job not found".into()))
}

/// Jobs in one state, oldest first; by default the dead letters.
#[utoipa::path(
    get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "Jobs", body = Vec<Job>))
)]
pub async fn list_jobs(
    db: Executor,
    query: web::Query<ListQuery>,
) -> Result<web::Json<Vec<Value>>, AppError> {
    let (after, limit) = query.bounds()?;
    let wanted = match query.state.as_deref() {
        None => JobState::Dead,
        Some(name) => JobState::parse(name).ok_or_else(|| {
            AppError::Unprocessable("state must be queued, running, succeeded or dead".into())
        })?,
    };
    let jobs = ask(
        &db,
        ListJobs {
            state: wanted,
            after,
            limit,
        },
    )
    .await?;
    Ok(web::Json(jobs.iter().map(job_json).collect()))
}

fn sse_event(job: &JobSnapshot) -> Bytes {
    let data = serde_json::to_string(job).expect("a job snapshot serialises");
    Bytes::from(format!("event: job\ndata: {data}\n\n"))
}

/// A job's progress as SSE: a `job` event with its current state at once, then one per
/// change (state, attempt, progress) until it succeeds or is dead-lettered, when the stream
/// ends (it also ends when the server shuts down). Changes made on other nodes are found
/// by the node's one poller of followed jobs, every `JOB_EVENTS_POLL_MS`.
#[utoipa::path(
    get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "text/event-stream of `job` events", content_type = "text/event-stream"),
        (status = 404, description = "Job not found", body = ErrorBody)
    )
)]
pub async fn job_events(
    state: web::Data<AppState>,
    db: Executor,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    // Subscribe and watch before reading, so no change between the read and the
    // subscription is missed.
    let rx = state.job_events.subscribe();
    let watch = state.job_events.watch(id);
    let job = ask(&db, GetJob { id })
        .await?
        .ok_or_else(|| AppError::NotFound("Job not found".into()))?;
    let first = JobSnapshot::from(&job);
    let done = job.state.is_finished();
    let db = db.into_inner();
    let rest = stream::unfold(
        (rx, watch, first.clone(), done),
        move |(mut rx, watch, mut last, done)| {
            let db = db.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let event = match rx.recv().await {
                        Ok(JobEvent::Closing) | Err(RecvError::Closed) => return None,
                        Ok(JobEvent::Changed(event)) if event.id == id => (*event).clone(),
                        Ok(JobEvent::Changed(_)) => continue,
                        // Announcements were missed: read the job instead.
                        Err(RecvError::Lagged(_)) => match ask(&db, GetJob { id }).await {
                            Ok(Some(job)) => JobSnapshot::from(&job),
                            _ => continue,
                        },
                    };
                    if event != last {
                        let finished = event.state.is_finished();
                        last = event;
                        let chunk = sse_event(&last);
                        return Some((Ok::<_, AppError>(chunk), (rx, watch, last, finished)));
                    }
                }
            }
        },
    );
    let body = stream::StreamExt::chain(stream::once(async move { Ok(sse_event(&first)) }), rest);
    Ok(event_stream(body))
}
