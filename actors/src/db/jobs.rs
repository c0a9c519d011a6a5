//! The job queue's queries, and the rows the built-in jobs write.
//!
//! A job is `queued` until a worker claims it: the claim sets `running`, counts an attempt
//! and takes a lease. The worker renews the lease while it works; a job whose lease ran
//! out (its worker died) is claimable again. A failed attempt puts the job back with a
//! later `run_at`, or — after the last attempt — marks it `dead` with its error. Every
//! write by a worker is guarded by `worker = <its id>`, so a worker that lost its lease
//! cannot overwrite the job's newer state.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;

use super::models::{now, TIMESTAMP_FORMAT};
use super::schema::{actions, activity_log, analytics, analytics_applied, jobs, outbox};
use super::{on_conn, Backend, Database, DbError};

fn timestamp<S: serde::Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.format(TIMESTAMP_FORMAT))
}

fn opt_timestamp<S: serde::Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&t.format(TIMESTAMP_FORMAT)),
        None => s.serialize_none(),
    }
}

/// A job as stored.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Serialize, ToSchema)]
#[diesel(table_name = jobs)]
pub struct Job {
    /// The job's id.
    pub id: i64,
    /// What it does: `send_email`, `log_activity`, `update_analytics`, `cleanup_upload`.
    pub kind: String,
    /// Its input, JSON text.
    #[serde(skip)]
    pub payload: String,
    /// `queued`, `running`, `succeeded` or `dead`.
    pub state: String,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed before the job is dead-lettered.
    pub max_attempts: i32,
    /// Not run before this time (UTC).
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub run_at: NaiveDateTime,
    /// While running: the lease's end.
    #[serde(serialize_with = "opt_timestamp")]
    #[schema(value_type = Option<String>)]
    pub lease_until: Option<NaiveDateTime>,
    /// While running: the worker holding it.
    pub worker: Option<String>,
    /// Progress, 0–100.
    pub progress: i32,
    /// What the job said about its progress.
    pub progress_note: Option<String>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The result of a succeeded job, JSON text.
    #[serde(skip)]
    pub result: Option<String>,
    /// When it was enqueued.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub created_at: NaiveDateTime,
    /// Its last change.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub updated_at: NaiveDateTime,
    /// When it succeeded or died.
    #[serde(serialize_with = "opt_timestamp")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<NaiveDateTime>,
}

impl Job {
    /// True once the job will not run again.
    pub fn is_finished(&self) -> bool {
        self.state == "succeeded" || self.state == "dead"
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    /// What it does.
    pub kind: String,
    /// Its input, JSON text.
    pub payload: String,
    /// `queued`.
    pub state: String,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Not before.
    pub run_at: NaiveDateTime,
    /// Now.
    pub created_at: NaiveDateTime,
    /// Now.
    pub updated_at: NaiveDateTime,
}

impl NewJob {
    /// A job of `kind` with `payload`, runnable after `delay`.
    pub fn new(
        kind: &str,
        payload: &serde_json::Value,
        max_attempts: i32,
        delay: Duration,
    ) -> Self {
        let t = now();
        Self {
            kind: kind.to_owned(),
            payload: payload.to_string(),
            state: "queued".to_owned(),
            max_attempts,
            run_at: t + chrono::Duration::from_std(delay).unwrap_or_default(),
            created_at: t,
            updated_at: t,
        }
    }
}

/// An email kept in the outbox.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = outbox)]
pub struct OutboxEmail {
    /// Its id.
    pub id: i64,
    /// The job that wrote it.
    pub job_id: i64,
    /// The recipient.
    pub recipient: String,
    /// The message.
    pub message: String,
    /// When it was written.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub created_at: NaiveDateTime,
}

/// One action's count.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = analytics)]
pub struct ActionCount {
    /// The action.
    pub action: String,
    /// How many times it was performed.
    pub count: i64,
    /// The last update.
    #[serde(serialize_with = "timestamp")]
    #[schema(value_type = String)]
    pub updated_at: NaiveDateTime,
}

// A running job whose lease ran out is claimed again only while it has attempts left; one
// with none left is dead-lettered by `bury_expired_jobs`, never run again (a lease can run
// out between that statement and this one).
const CLAIM_POSTGRES: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
     progress = 0, progress_note = NULL, lease_until = $1, worker = $2, updated_at = $3 \
     WHERE id IN (SELECT id FROM jobs \
       WHERE (state = 'queued' AND run_at <= $3) \
          OR (state = 'running' AND lease_until < $3 AND attempts < max_attempts) \
       ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING *";

// SQLite runs one writer at a time, so the subquery and the update cannot interleave with
// another claim.
const CLAIM_SQLITE: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
     progress = 0, progress_note = NULL, lease_until = ?1, worker = ?2, updated_at = ?3 \
     WHERE id IN (SELECT id FROM jobs \
       WHERE (state = 'queued' AND run_at <= ?3) \
          OR (state = 'running' AND lease_until < ?3 AND attempts < max_attempts) \
       ORDER BY run_at, id LIMIT ?4) \
     RETURNING *";

/// Applies `$changes` (a closure of the current time giving a changeset) to job `$id` if
/// `$worker` still holds it; yields the updated job, or `None` when it lost the job.
macro_rules! update_job {
    ($db:expr, $id:expr, $worker:expr, $op:expr, $changes:expr) => {{
        let t = now();
        let changes = $changes;
        on_conn!($db, $op, |conn| async {
            diesel::update(
                jobs::table
                    .find($id)
                    .filter(jobs::worker.eq($worker))
                    .filter(jobs::state.eq("running")),
            )
            .set(changes(t))
            .returning(Job::as_returning())
            .get_result(conn)
            .await
            .optional()
            .map_err(|e| $db.err(e))
        })
    }};
}

fn later(d: Duration) -> NaiveDateTime {
    now() + chrono::Duration::from_std(d).unwrap_or_default()
}

impl Database {
    /// Enqueues jobs; returns their ids.
    pub async fn enqueue(&self, new: Vec<NewJob>) -> Result<Vec<i64>, DbError> {
        let mut ids = Vec::with_capacity(new.len());
        for job in new {
            let id = on_conn!(self, "enqueue_job", |conn| async {
                diesel::insert_into(jobs::table)
                    .values(&job)
                    .returning(jobs::id)
                    .get_result::<i64>(conn)
                    .await
                    .map_err(|e| self.err(e))
            })?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Records an action and enqueues its jobs in one transaction. `jobs` get the action's
    /// id as `action_id` in their payload.
    pub async fn create_action(
        &self,
        user_id: i64,
        action: &str,
        jobs_for: impl Fn(i64) -> Vec<NewJob> + Send + Sync,
    ) -> Result<(i64, Vec<i64>), DbError> {
        let action = action.to_owned();
        let jobs_for = &jobs_for;
        on_conn!(self, "create_action", |conn| async {
            let action = action.clone();
            conn.transaction::<_, DieselError, _>(|tx| {
                async move {
                    let action_id: i64 = diesel::insert_into(actions::table)
                        .values((
                            actions::user_id.eq(user_id),
                            actions::action.eq(&action),
                            actions::created_at.eq(now()),
                        ))
                        .returning(actions::id)
                        .get_result(tx)
                        .await?;
                    let mut ids = Vec::new();
                    for job in jobs_for(action_id) {
                        ids.push(
                            diesel::insert_into(jobs::table)
                                .values(&job)
                                .returning(jobs::id)
                                .get_result::<i64>(tx)
                                .await?,
                        );
                    }
                    Ok((action_id, ids))
                }
                .scope_boxed()
            })
            .await
            .map_err(|e| match e {
                DieselError::DatabaseError(
                    diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                    _,
                ) => DbError::NotFound("User not found".into()),
                e => self.err(e),
            })
        })
    }

    /// Dead-letters jobs whose worker stopped during their last attempt (the lease ran out
    /// with no attempts left), so a job that keeps killing its worker is not retried
    /// forever. Returns how many.
    pub async fn bury_expired_jobs(&self) -> Result<usize, DbError> {
        let t = now();
        on_conn!(self, "bury_expired_jobs", |conn| async {
            diesel::update(
                jobs::table
                    .filter(jobs::state.eq("running"))
                    .filter(jobs::lease_until.lt(t))
                    .filter(jobs::attempts.ge(jobs::max_attempts)),
            )
            .set((
                jobs::state.eq("dead"),
                jobs::last_error.eq(Some(
                    "the worker running the last attempt stopped before it finished".to_owned(),
                )),
                jobs::lease_until.eq(None::<NaiveDateTime>),
                jobs::updated_at.eq(t),
                jobs::finished_at.eq(Some(t)),
            ))
            .execute(conn)
            .await
            .map_err(|e| self.err(e))
        })
    }

    /// Claims up to `limit` runnable jobs for `worker`, leased for `lease`.
    pub async fn claim_jobs(
        &self,
        worker: &str,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<Job>, DbError> {
        let t = now();
        let until = later(lease);
        let sql = match self.backend() {
            Backend::Postgres => CLAIM_POSTGRES,
            Backend::Sqlite => CLAIM_SQLITE,
        };
        on_conn!(self, "claim_jobs", |conn| async {
            diesel::sql_query(sql)
                .bind::<Timestamp, _>(until)
                .bind::<Text, _>(worker)
                .bind::<Timestamp, _>(t)
                .bind::<BigInt, _>(limit)
                .load::<Job>(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Extends the lease of a job `worker` holds; false when it no longer holds it.
    pub async fn renew_lease(
        &self,
        id: i64,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, DbError> {
        let until = later(lease);
        on_conn!(self, "renew_lease", |conn| async {
            diesel::update(
                jobs::table
                    .find(id)
                    .filter(jobs::worker.eq(worker))
                    .filter(jobs::state.eq("running")),
            )
            .set(jobs::lease_until.eq(until))
            .execute(conn)
            .await
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
        })
    }

    /// Records progress of a job `worker` holds.
    pub async fn job_progress(
        &self,
        id: i64,
        worker: &str,
        progress: i32,
        note: &str,
    ) -> Result<Option<Job>, DbError> {
        update_job!(self, id, worker, "job_progress", |t| {
            (
                jobs::progress.eq(progress),
                jobs::progress_note.eq(Some(note.to_owned())),
                jobs::updated_at.eq(t),
            )
        })
    }

    /// Marks a job `worker` holds as succeeded.
    pub async fn complete_job(
        &self,
        id: i64,
        worker: &str,
        result: &serde_json::Value,
    ) -> Result<Option<Job>, DbError> {
        let result = result.to_string();
        update_job!(self, id, worker, "complete_job", |t| {
            (
                jobs::state.eq("succeeded"),
                jobs::progress.eq(100),
                jobs::result.eq(Some(result.clone())),
                jobs::lease_until.eq(None::<NaiveDateTime>),
                jobs::updated_at.eq(t),
                jobs::finished_at.eq(Some(t)),
            )
        })
    }

    /// Records a failed attempt: queued again at `retry_at`, or dead when `None`.
    pub async fn fail_job(
        &self,
        id: i64,
        worker: &str,
        error: &str,
        retry_at: Option<NaiveDateTime>,
    ) -> Result<Option<Job>, DbError> {
        let error = error.to_owned();
        match retry_at {
            Some(at) => {
                update_job!(self, id, worker, "retry_job", |t| {
                    (
                        jobs::state.eq("queued"),
                        jobs::run_at.eq(at),
                        jobs::last_error.eq(Some(error.clone())),
                        jobs::lease_until.eq(None::<NaiveDateTime>),
                        jobs::updated_at.eq(t),
                        jobs::finished_at.eq(None::<NaiveDateTime>),
                    )
                })
            }
            None => {
                update_job!(self, id, worker, "dead_letter_job", |t| {
                    (
                        jobs::state.eq("dead"),
                        jobs::run_at.eq(t),
                        jobs::last_error.eq(Some(error.clone())),
                        jobs::lease_until.eq(None::<NaiveDateTime>),
                        jobs::updated_at.eq(t),
                        jobs::finished_at.eq(Some(t)),
                    )
                })
            }
        }
    }

    /// Returns the jobs `worker` holds to the queue (graceful shutdown); the attempt they
    /// were in does not count, and its progress is cleared.
    pub async fn release_jobs(&self, worker: &str) -> Result<usize, DbError> {
        let t = now();
        on_conn!(self, "release_jobs", |conn| async {
            diesel::update(
                jobs::table
                    .filter(jobs::worker.eq(worker))
                    .filter(jobs::state.eq("running")),
            )
            .set((
                jobs::state.eq("queued"),
                jobs::attempts.eq(jobs::attempts - 1),
                jobs::progress.eq(0),
                jobs::progress_note.eq(None::<String>),
                jobs::lease_until.eq(None::<NaiveDateTime>),
                jobs::run_at.eq(t),
                jobs::updated_at.eq(t),
            ))
            .execute(conn)
            .await
            .map_err(|e| self.err(e))
        })
    }

    /// One job.
    pub async fn get_job(&self, id: i64) -> Result<Option<Job>, DbError> {
        on_conn!(self, "get_job", |conn| async {
            jobs::table
                .find(id)
                .select(Job::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(|e| self.err(e))
        })
    }

    /// Jobs in `state` (e.g. `dead`), oldest first, by keyset.
    pub async fn list_jobs(
        &self,
        state: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Job>, DbError> {
        on_conn!(self, "list_jobs", |conn| async {
            jobs::table
                .filter(jobs::state.eq(state))
                .filter(jobs::id.gt(after))
                .order(jobs::id.asc())
                .limit(limit)
                .select(Job::as_select())
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Jobs by state: `(state, count)`.
    pub async fn count_jobs(&self) -> Result<Vec<(String, i64)>, DbError> {
        on_conn!(self, "count_jobs", |conn| async {
            jobs::table
                .group_by(jobs::state)
                .select((jobs::state, diesel::dsl::count_star()))
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Writes an email to the outbox, once per job.
    pub async fn write_outbox(
        &self,
        job_id: i64,
        recipient: &str,
        message: &str,
    ) -> Result<(), DbError> {
        on_conn!(self, "write_outbox", |conn| async {
            diesel::insert_into(outbox::table)
                .values((
                    outbox::job_id.eq(job_id),
                    outbox::recipient.eq(recipient),
                    outbox::message.eq(message),
                    outbox::created_at.eq(now()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(|e| self.err(e))
        })
    }

    /// The outbox, oldest first, by keyset.
    pub async fn list_outbox(&self, after: i64, limit: i64) -> Result<Vec<OutboxEmail>, DbError> {
        on_conn!(self, "list_outbox", |conn| async {
            outbox::table
                .filter(outbox::id.gt(after))
                .order(outbox::id.asc())
                .limit(limit)
                .select(OutboxEmail::as_select())
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Logs an action's activity, once per action.
    pub async fn log_activity(
        &self,
        action_id: i64,
        user_id: i64,
        action: &str,
    ) -> Result<(), DbError> {
        on_conn!(self, "log_activity", |conn| async {
            diesel::insert_into(activity_log::table)
                .values((
                    activity_log::action_id.eq(action_id),
                    activity_log::user_id.eq(user_id),
                    activity_log::action.eq(action),
                    activity_log::logged_at.eq(now()),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await
                .map(|_| ())
                .map_err(|e| self.err(e))
        })
    }

    /// Counts an action in the analytics, once per action however often the job runs.
    pub async fn count_action(&self, action_id: i64, action: &str) -> Result<(), DbError> {
        let action = action.to_owned();
        on_conn!(self, "count_action", |conn| async {
            let action = action.clone();
            conn.transaction::<_, DieselError, _>(|tx| {
                async move {
                    let fresh = diesel::insert_into(analytics_applied::table)
                        .values(analytics_applied::action_id.eq(action_id))
                        .on_conflict_do_nothing()
                        .execute(tx)
                        .await?;
                    if fresh == 1 {
                        let t = now();
                        diesel::insert_into(analytics::table)
                            .values((
                                analytics::action.eq(&action),
                                analytics::count.eq(1i64),
                                analytics::updated_at.eq(t),
                            ))
                            .on_conflict(analytics::action)
                            .do_update()
                            .set((
                                analytics::count.eq(analytics::count + 1i64),
                                analytics::updated_at.eq(t),
                            ))
                            .execute(tx)
                            .await?;
                    }
                    Ok(())
                }
                .scope_boxed()
            })
            .await
            .map_err(|e| self.err(e))
        })
    }

    /// Counts per action, most frequent first.
    pub async fn list_analytics(&self) -> Result<Vec<ActionCount>, DbError> {
        on_conn!(self, "list_analytics", |conn| async {
            analytics::table
                .order((analytics::count.desc(), analytics::action.asc()))
                .select(ActionCount::as_select())
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// Activity log entries of an action (for checks and the API).
    pub async fn activity_of(&self, action_id: i64) -> Result<bool, DbError> {
        on_conn!(self, "activity_of", |conn| async {
            activity_log::table
                .find(action_id)
                .count()
                .get_result::<i64>(conn)
                .await
                .map(|n| n > 0)
                .map_err(|e| self.err(e))
        })
    }
}
