//! Job events: every change of a job's state or progress, announced to the
//! `/jobs/{id}/events` streams (a broadcast channel) and to `/sse/updates`.
//!
//! Changes made on this node are announced as they happen. Changes made by other nodes'
//! workers are found by one poller per node (in the `JobWorker`): every
//! `JOB_EVENTS_POLL_MS` it reads, in one query, the jobs that have a stream open here
//! ([`JobEvents::watch`]) and announces those that changed. However many streams are
//! open, the database sees one read per interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// A job some stream on this node follows.
struct Watched {
    /// Streams following it.
    streams: usize,
    /// What was last announced of it.
    last: Option<JobSnapshot>,
}

/// Announces job changes to `/jobs/{id}/events` subscribers and `/sse/updates`.
#[derive(Clone)]
pub struct JobEvents {
    tx: broadcast::Sender<JobEvent>,
    feed: Option<FeedHandle>,
    watched: Arc<Mutex<HashMap<i64, Watched>>>,
}

/// Keeps a job on the poller's list while a stream follows it.
pub struct JobWatch {
    id: i64,
    watched: Arc<Mutex<HashMap<i64, Watched>>>,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watched.get_mut(&self.id) {
            w.streams -= 1;
            if w.streams == 0 {
                watched.remove(&self.id);
            }
        }
    }
}

impl JobEvents {
    /// A hub that also forwards to `feed`.
    pub fn new(feed: Option<FeedHandle>) -> Self {
        Self {
            tx: broadcast::channel(EVENT_BUFFER).0,
            feed,
            watched: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows job `id` for a stream: the poller reads it until the watch is dropped.
    pub fn watch(&self, id: i64) -> JobWatch {
        self.lock()
            .entry(id)
            .or_insert(Watched {
                streams: 0,
                last: None,
            })
            .streams += 1;
        JobWatch {
            id,
            watched: self.watched.clone(),
        }
    }

    /// The jobs streams on this node follow.
    pub fn watched_ids(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }

    /// Announces `job` if it differs from what was last announced of it (for the poller).
    pub fn announce_if_changed(&self, job: &Job) {
        let snapshot = JobSnapshot::from(job);
        let changed = self
            .lock()
            .get(&job.id)
            .is_some_and(|w| w.last.as_ref() != Some(&snapshot));
        if changed {
            self.announce(job);
        }
    }

    /// Announces `job`'s current state.
    pub fn announce(&self, job: &Job) {
        let snapshot = Arc::new(JobSnapshot::from(job));
        if let Some(w) = self.lock().get_mut(&job.id) {
            w.last = Some((*snapshot).clone());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_watched_while_a_stream_follows_it() {
        let events = JobEvents::new(None);
        let a = events.watch(7);
        let b = events.watch(7);
        assert_eq!(events.watched_ids(), vec![7]);
        drop(a);
        assert_eq!(events.watched_ids(), vec![7]);
        drop(b);
        assert!(events.watched_ids().is_empty());
    }
}
