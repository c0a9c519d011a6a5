//! Job events: every change of a job's state or progress, announced to the
//! `/jobs/{id}/events` streams (a broadcast channel) and to `/sse/updates`.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::db::job_queue::{Job, JobState};
use crate::sse_feed::{Activity, FeedHandle};

/// Job events kept for slow subscribers of the broadcast channel; a subscriber that falls
/// further behind re-reads its job instead.
pub const EVENT_BUFFER: usize = 1024;

/// A job as its event shows it: what `/jobs/{id}/events` streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSnapshot {
    /// The job's id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Progress, 0–100.
    pub progress: i32,
    /// What the job said about its progress.
    pub progress_note: Option<String>,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

impl From<&Job> for JobSnapshot {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id,
            kind: job.kind.clone(),
            state: job.state,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            progress: job.progress,
            progress_note: job.progress_note.clone(),
            last_error: job.last_error.clone(),
        }
    }
}

/// What the job-event channel carries.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// A job changed.
    Changed(Arc<JobSnapshot>),
    /// The server is shutting down: streams end.
    Closing,
}

/// Announces job changes to `/jobs/{id}/events` subscribers and `/sse/updates`.
#[derive(Clone)]
pub struct JobEvents {
    tx: broadcast::Sender<JobEvent>,
    feed: Option<FeedHandle>,
}

impl JobEvents {
    /// A hub that also forwards to `feed`.
    pub fn new(feed: Option<FeedHandle>) -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
            feed,
        }
    }

    /// Announces `job`'s current state.
    pub fn announce(&self, job: &Job) {
        let snapshot = Arc::new(JobSnapshot::from(job));
        if let Some(feed) = &self.feed {
            let _ = feed.try_send(Activity::Other {
                kind: "job".into(),
                data: serde_json::to_value(&*snapshot).unwrap_or_default(),
            });
        }
        let _ = self.tx.send(JobEvent::Changed(snapshot));
    }

    /// Tells every subscriber that the server is shutting down; `/jobs/{id}/events`
    /// streams end.
    pub fn close(&self) {
        let _ = self.tx.send(JobEvent::Closing);
    }

    /// A receiver of every later announcement.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.tx.subscribe()
    }
}
