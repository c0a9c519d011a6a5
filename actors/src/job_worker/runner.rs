//! The built-in jobs and what they may use while running.
//!
//! | kind | payload | does |
//! |---|---|---|
//! | `send_email` | `{email, message}` | delivers through SMTP when `SMTP_URL` is set, else writes the outbox |
//! | `log_activity` | `{action_id, user_id, action}` | writes the action's activity-log row |
//! | `update_analytics` | `{action_id, action}` | counts the action (once, however often it runs) |
//! | `cleanup_upload` | `{stored_name}` | removes an uploaded file and its metadata |
//!
//! Jobs run at least once, so each is written to be safe to repeat.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::{json, Value};

use super::events::JobEvents;
use crate::db::job_queue::Job;
use crate::db::Database;
use crate::upload_store::{RemoveUpload, UploadStore};

/// Job kinds.
pub mod kind {
    /// Deliver an email.
    pub const SEND_EMAIL: &str = "send_email";
    /// Log an action.
    pub const LOG_ACTIVITY: &str = "log_activity";
    /// Count an action.
    pub const UPDATE_ANALYTICS: &str = "update_analytics";
    /// Remove an uploaded file.
    pub const CLEANUP_UPLOAD: &str = "cleanup_upload";
}

/// What a running job can reach: the database and its progress reports.
pub struct JobContext {
    db: Database,
    worker: Arc<str>,
    job_id: i64,
    events: JobEvents,
}

impl JobContext {
    /// The context of job `job_id` run by `worker`.
    pub fn new(db: Database, worker: Arc<str>, job_id: i64, events: JobEvents) -> Self {
        Self {
            db,
            worker,
            job_id,
            events,
        }
    }

    /// Records progress (0–100) with a note, and announces it.
    pub async fn progress(&self, percent: i32, note: &str) {
        match self
            .db
            .job_progress(self.job_id, &self.worker, percent.clamp(0, 100), note)
            .await
        {
            Ok(Some(job)) => self.events.announce(&job),
            Ok(None) => {}
            Err(e) => log::debug!("jobs: progress of #{} not recorded: {e}", self.job_id),
        }
    }
}

/// SMTP delivery settings.
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl Smtp {
    /// A transport for `url` (`smtp://host:port`, `smtps://…`, with optional credentials),
    /// sending as `from`, each delivery bounded by `timeout` — connecting, the TLS handshake
    /// and the whole SMTP conversation (the transport's own timeout covers only the connect).
    pub fn new(url: &str, from: &str, timeout: Duration) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("SMTP_URL is not usable: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("SMTP_FROM is not an address: {e}"))?;
        Ok(Self {
            transport,
            from,
            timeout,
        })
    }
}

/// Runs jobs by kind.
#[derive(Clone)]
pub struct Runner {
    db: Database,
    smtp: Option<Smtp>,
    uploads: Addr<UploadStore>,
}

#[derive(Deserialize)]
struct EmailJob {
    email: String,
    message: String,
}

#[derive(Deserialize)]
struct ActivityJob {
    action_id: i64,
    user_id: i64,
    action: String,
}

#[derive(Deserialize)]
struct AnalyticsJob {
    action_id: i64,
    action: String,
}

#[derive(Deserialize)]
struct CleanupJob {
    stored_name: String,
}

impl Runner {
    /// A runner writing to `db`, delivering mail through `smtp` when given, and removing
    /// uploads through `uploads`.
    pub fn new(db: Database, smtp: Option<Smtp>, uploads: Addr<UploadStore>) -> Self {
        Self { db, smtp, uploads }
    }

    /// Runs `job`; the error text is recorded on the job.
    pub async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, String> {
        fn payload<T: serde::de::DeserializeOwned>(job: &Job) -> Result<T, String> {
            serde_json::from_str(&job.payload).map_err(|e| format!("bad payload: {e}"))
        }
        match job.kind.as_str() {
            kind::SEND_EMAIL => {
                let p: EmailJob = payload(job)?;
                self.send_email(job.id, &p, ctx).await
            }
            kind::LOG_ACTIVITY => {
                let p: ActivityJob = payload(job)?;
                self.db
                    .log_activity(p.action_id, p.user_id, &p.action)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!({"logged": p.action_id}))
            }
            kind::UPDATE_ANALYTICS => {
                let p: AnalyticsJob = payload(job)?;
                self.db
                    .count_action(p.action_id, &p.action)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(json!({"counted": p.action}))
            }
            kind::CLEANUP_UPLOAD => {
                let p: CleanupJob = payload(job)?;
                let removed = self
                    .uploads
                    .send(RemoveUpload {
                        id: p.stored_name.clone(),
                    })
                    .await
                    .map_err(|e| format!("the upload store is unavailable: {e}"))?
                    .map_err(|e| e.to_string())?;
                Ok(if removed {
                    json!({"removed": p.stored_name})
                } else {
                    json!({"removed": p.stored_name, "already_gone": true})
                })
            }
            other => Err(format!("unknown job kind {other:?}")),
        }
    }

    async fn send_email(
        &self,
        job_id: i64,
        p: &EmailJob,
        ctx: &JobContext,
    ) -> Result<Value, String> {
        let Some(smtp) = &self.smtp else {
            self.db
                .write_outbox(job_id, &p.email, &p.message)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(json!({"delivered_to": "outbox"}));
        };
        let to: Mailbox = p
            .email
            .parse()
            .map_err(|e| format!("bad recipient {:?}: {e}", p.email))?;
        let email = Message::builder()
            .from(smtp.from.clone())
            .to(to)
            .subject("Message from courier")
            .body(p.message.clone())
            .map_err(|e| format!("cannot build the email: {e}"))?;
        ctx.progress(50, "connecting to the SMTP server").await;
        let response = tokio::time::timeout(smtp.timeout, smtp.transport.send(email))
            .await
            .map_err(|_| {
                format!(
                    "SMTP delivery did not finish within {} ms",
                    smtp.timeout.as_millis()
                )
            })?
            .map_err(|e| format!("SMTP delivery failed: {e}"))?;
        Ok(json!({
            "delivered_to": "smtp",
            "response": response.message().collect::<Vec<_>>().join(" "),
        }))
    }
}
