//! `JobWorker`: runs the durable job queue kept in the database.
//!
//! One worker per node claims up to `concurrency` runnable jobs at a time (Postgres:
//! `FOR UPDATE SKIP LOCKED`, so many nodes share one queue; SQLite: one writer at a time)
//! and runs each as a future on its arbiter. While a job runs its lease is renewed every
//! third of the lease, so a job whose worker died is claimed again once its lease runs out
//! (at-least-once). A failed attempt is retried after an exponential backoff with jitter;
//! after `max_attempts` the job is dead-lettered (state `dead`, with its error), never
//! dropped. Every change of state or progress is announced on a broadcast channel (for
//! `/jobs/{id}/events`) and on `/sse/updates`. On shutdown, [`ReleaseJobs`] hands the jobs
//! still running back to the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use rand::Rng;

use crate::db::job_queue::{Job, JobState};
use crate::db::Database;
use crate::metrics;
pub use events::{JobEvent, JobEvents, JobSnapshot};
pub use runner::{kind, JobContext, Runner, Smtp};

pub mod events;
pub mod runner;

/// How often the counts of jobs by state are refreshed for `/metrics`.
pub const STATE_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// The queue's settings.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Jobs run at once on this node (`JOB_CONCURRENCY`).
    pub concurrency: usize,
    /// How often the queue is checked when nothing wakes the worker (`JOB_POLL_INTERVAL_MS`).
    pub poll_interval: Duration,
    /// A claimed job's lease (`JOB_LEASE_MS`): renewed while it runs; when it runs out
    /// (the worker died) another worker claims the job.
    pub lease: Duration,
    /// Attempts before a job is dead-lettered (`JOB_MAX_ATTEMPTS`).
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt (`JOB_BACKOFF_BASE_MS`).
    pub backoff_base: Duration,
    /// Longest retry delay (`JOB_BACKOFF_MAX_MS`).
    pub backoff_max: Duration,
    /// How often the jobs that streams on this node follow are read again, to see
    /// changes made on other nodes (`JOB_EVENTS_POLL_MS`).
    pub events_poll: Duration,
}

impl JobConfig {
    /// The delay before retrying after `attempts` failed attempts: exponential, capped,
    /// with "equal jitter" (between half and all of it) so retries of many jobs spread out.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempts.clamp(1, 20).saturating_sub(1) as u32)
            .min(self.backoff_max);
        let half = exp / 2;
        half + exp.mul_f64(rand::rng().random::<f64>() * 0.5)
    }
}

/// The job metrics.
#[derive(Clone)]
pub struct JobMetrics {
    /// Jobs by state, refreshed every few seconds.
    pub by_state: IntGaugeVec,
    /// Jobs running on this node.
    pub running: IntGauge,
    /// Finished attempts by outcome: `succeeded`, `retried`, `dead`.
    pub attempts: IntCounterVec,
    /// Retries scheduled.
    pub retries: IntCounter,
    /// Jobs dead-lettered.
    pub dead_letters: IntCounter,
    /// Time from enqueue to success.
    pub latency: Histogram,
}

impl JobMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Self {
        Self {
            by_state: metrics::int_gauge_vec(
                registry,
                "courier_jobs",
                "Jobs in the queue by state.",
                &["state"],
            ),
            running: metrics::int_gauge(
                registry,
                "courier_jobs_running",
                "Jobs running on this node.",
            ),
            attempts: metrics::int_counter_vec(
                registry,
                "courier_job_attempts_total",
                "Finished job attempts by outcome (succeeded, retried, dead).",
                &["outcome"],
            ),
            retries: metrics::int_counter(
                registry,
                "courier_job_retries_total",
                "Job retries scheduled.",
            ),
            dead_letters: metrics::int_counter(
                registry,
                "courier_job_dead_letters_total",
                "Jobs dead-lettered after their last attempt.",
            ),
            latency: metrics::histogram(
                registry,
                "courier_job_latency_seconds",
                "Time from enqueueing a job to its success.",
                &[
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ],
            ),
        }
    }
}

/// Claim jobs now (sent after enqueueing) instead of at the next poll.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// Stop claiming and hand the jobs still running back to the queue (graceful shutdown).
/// Answers how many were handed back.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct ReleaseJobs;

/// The actor; see the module documentation.
pub struct JobWorker {
    db: Database,
    config: JobConfig,
    worker_id: Arc<str>,
    runner: Runner,
    metrics: JobMetrics,
    events: JobEvents,
    /// Jobs running here, with the handle that cancels each.
    running: HashMap<i64, SpawnHandle>,
    claiming: bool,
    stopping: bool,
    last_state_refresh: Option<Instant>,
}

impl JobWorker {
    /// A worker named `worker_id` (unique across nodes).
    pub fn new(
        db: Database,
        config: JobConfig,
        worker_id: &str,
        runner: Runner,
        metrics: JobMetrics,
        events: JobEvents,
    ) -> Self {
        Self {
            db,
            config,
            worker_id: worker_id.into(),
            runner,
            metrics,
            events,
            running: HashMap::new(),
            claiming: false,
            stopping: false,
            last_state_refresh: None,
        }
    }

    /// Claims as many jobs as there are free slots, and starts them.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.claiming || self.stopping || self.running.len() >= self.config.concurrency {
            return;
        }
        self.claiming = true;
        let free = (self.config.concurrency - self.running.len()) as i64;
        let db = self.db.clone();
        let worker = self.worker_id.clone();
        let lease = self.config.lease;
        let metrics = self.metrics.clone();
        ctx.spawn(
            async move {
                match db.bury_expired_jobs().await {
                    Ok(0) | Err(_) => {}
                    Ok(n) => {
                        metrics.dead_letters.inc_by(n as u64);
                        log::error!("jobs: {n} jobs dead-lettered: their worker stopped during the last attempt");
                    }
                }
                db.claim_jobs(&worker, free, lease).await
            }
            .into_actor(self)
            .map(move |claimed, act, ctx| {
                act.claiming = false;
                let jobs = match claimed {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        log::debug!("jobs: cannot claim: {e}");
                        return;
                    }
                };
                if act.stopping {
                    // Claimed while shutting down: hand them straight back.
                    let db = act.db.clone();
                    let worker = act.worker_id.clone();
                    ctx.spawn(
                        async move {
                            let _ = db.release_jobs(&worker).await;
                        }
                        .into_actor(act),
                    );
                    return;
                }
                let full = jobs.len() as i64 == free;
                for job in jobs {
                    // This node's own lease ran out while the job was still running here
                    // (a renewal was delayed) and the claim took it back: the running copy
                    // carries on under the renewed lease.
                    if !act.running.contains_key(&job.id) {
                        act.start(job, ctx);
                    }
                }
                if full {
                    act.fill(ctx);
                }
            }),
        );
    }

    /// Runs one claimed job, renewing its lease, and records the outcome.
    fn start(&mut self, job: Job, ctx: &mut Context<Self>) {
        self.events.announce(&job);
        log::info!(
            "jobs: running {} #{} (attempt {}/{})",
            job.kind,
            job.id,
            job.attempts,
            job.max_attempts
        );
        let db = self.db.clone();
        let worker = self.worker_id.clone();
        let config = self.config.clone();
        let runner = self.runner.clone();
        let metrics = self.metrics.clone();
        let events = self.events.clone();
        let id = job.id;
        let work = async move {
            let context = JobContext::new(db.clone(), worker.clone(), job.id, events.clone());
            let run = runner.run(&job, &context);
            tokio::pin!(run);
            // The lease is renewed by a task of its own, so a slow renewal never pauses the
            // job, and the job is never stalled behind the database.
            let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<()>();
            let renewer = {
                let (db, worker, lease, id) = (db.clone(), worker.clone(), config.lease, job.id);
                actix_rt::spawn(async move {
                    let mut renew = tokio::time::interval(lease / 3);
                    renew.tick().await;
                    loop {
                        renew.tick().await;
                        match db.renew_lease(id, &worker, lease).await {
                            Ok(true) => {}
                            Ok(false) => {
                                let _ = lost_tx.send(());
                                return;
                            }
                            Err(e) => log::warn!("jobs: cannot renew the lease of #{id}: {e}"),
                        }
                    }
                })
            };
            let outcome = tokio::select! {
                outcome = &mut run => Some(outcome),
                _ = &mut lost => None,
            };
            renewer.abort();
            let Some(outcome) = outcome else {
                log::warn!(
                    "jobs: #{} was taken over by another worker; dropping this attempt",
                    job.id
                );
                return;
            };
            let updated = match outcome {
                Ok(result) => {
                    metrics.attempts.with_label_values(&["succeeded"]).inc();
                    let latency = (chrono::Utc::now().naive_utc() - job.created_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics.latency.observe(latency.as_secs_f64());
                    log::info!("jobs: {} #{} succeeded", job.kind, job.id);
                    db.complete_job(job.id, &worker, &result).await
                }
                Err(error) if job.attempts < job.max_attempts => {
                    let delay = config.backoff(job.attempts);
                    metrics.attempts.with_label_values(&["retried"]).inc();
                    metrics.retries.inc();
                    log::warn!(
                        "jobs: {} #{} attempt {} failed: {error}; retrying in {} ms",
                        job.kind,
                        job.id,
                        job.attempts,
                        delay.as_millis()
                    );
                    let at = crate::db::models::now()
                        + chrono::Duration::from_std(delay).unwrap_or_default();
                    db.fail_job(job.id, &worker, &error, Some(at)).await
                }
                Err(error) => {
                    metrics.attempts.with_label_values(&["dead"]).inc();
                    metrics.dead_letters.inc();
                    log::error!(
                        "jobs: {} #{} failed its last attempt ({}): {error}; dead-lettered",
                        job.kind,
                        job.id,
                        job.attempts
                    );
                    db.fail_job(job.id, &worker, &error, None).await
                }
            };
            match updated {
                Ok(Some(job)) => events.announce(&job),
                Ok(None) => log::warn!("jobs: #{} was taken over before it finished", job.id),
                Err(e) => log::warn!(
                    "jobs: cannot record the outcome of #{}: {e}; it runs again when its lease ends",
                    job.id
                ),
            }
        };
        let handle = ctx.spawn(work.into_actor(self).map(move |(), act, ctx| {
            act.running.remove(&id);
            act.metrics.running.set(act.running.len() as i64);
            act.fill(ctx);
        }));
        self.running.insert(id, handle);
        self.metrics.running.set(self.running.len() as i64);
    }

    /// Reads the jobs streams on this node follow, in one query, and announces those that
    /// changed (on another node).
    fn poll_watched(&mut self, ctx: &mut Context<Self>) {
        let ids = self.events.watched_ids();
        if ids.is_empty() {
            return;
        }
        let (db, events) = (self.db.clone(), self.events.clone());
        ctx.spawn(
            async move {
                match db.get_jobs(&ids).await {
                    Ok(jobs) => jobs.iter().for_each(|job| events.announce_if_changed(job)),
                    Err(e) => log::debug!("jobs: cannot read the followed jobs: {e}"),
                }
            }
            .into_actor(self),
        );
    }

    fn refresh_states(&mut self, ctx: &mut Context<Self>) {
        if self
            .last_state_refresh
            .is_some_and(|t| t.elapsed() < STATE_REFRESH_INTERVAL)
        {
            return;
        }
        self.last_state_refresh = Some(Instant::now());
        let db = self.db.clone();
        let gauge = self.metrics.by_state.clone();
        ctx.spawn(
            async move {
                if let Ok(counts) = db.count_jobs().await {
                    for state in JobState::ALL {
                        let n = counts
                            .iter()
                            .find(|(s, _)| *s == state)
                            .map_or(0, |(_, n)| *n);
                        gauge.with_label_values(&[state.as_str()]).set(n);
                    }
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for JobWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.poll_interval, |act, ctx| {
            act.fill(ctx);
            act.refresh_states(ctx);
        });
        ctx.run_interval(self.config.events_poll, |act, ctx| act.poll_watched(ctx));
        self.fill(ctx);
    }
}

impl Handler<Wake> for JobWorker {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        self.fill(ctx);
    }
}

impl Handler<ReleaseJobs> for JobWorker {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ReleaseJobs, ctx: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        // Stop the attempts first, so no job runs here after another node may have taken it.
        for (_, handle) in self.running.drain() {
            ctx.cancel_future(handle);
        }
        self.metrics.running.set(0);
        let db = self.db.clone();
        let worker = self.worker_id.clone();
        Box::pin(async move {
            match db.release_jobs(&worker).await {
                Ok(n) => n,
                Err(e) => {
                    log::warn!(
                        "jobs: cannot hand running jobs back: {e}; their leases will run out"
                    );
                    0
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base_ms: u64, max_ms: u64) -> JobConfig {
        JobConfig {
            concurrency: 1,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            max_attempts: 5,
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            events_poll: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let c = config(100, 1000);
        for _ in 0..200 {
            for (attempts, full) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (30, 1000),
            ] {
                let d = c.backoff(attempts).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&d),
                    "attempt {attempts}: {d} ms, expected {}..={full}",
                    full / 2
                );
            }
        }
    }
}
