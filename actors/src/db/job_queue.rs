//! The job queue: the `jobs` table and the statements that move a job through its states.
//!
//! A job is [`JobState::Queued`] until a worker claims it: the claim sets
//! [`JobState::Running`], counts an attempt and takes a lease. The worker renews the lease
//! while it works; a job whose lease ran out (its worker died) is claimable again. A failed
//! attempt puts the job back with a later `run_at`, or — after the last attempt — marks it
//! [`JobState::Dead`] with its error. Every write by a worker is guarded by
//! `worker = <its id>`, so a worker that lost its lease cannot overwrite the job's newer
//! state.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::backend::Backend as DieselBackend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::prelude::*;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::{BigInt, Text, Timestamp};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;

use super::models::{now, timestamp};
use super::schema::jobs;
use super::{on_conn, Backend, Database, DbError};

/// Where a job is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema, AsExpression, FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at` and a free worker.
    Queued,
    /// Claimed by a worker, under a lease.
    Running,
    /// Finished; it will not run again.
    Succeeded,
    /// Failed its last attempt (dead-lettered); it will not run again.
    Dead,
}

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [Self; 4] = [Self::Queued, Self::Running, Self::Succeeded, Self::Dead];

    /// The state as stored and shown: `queued`, `running`, `succeeded`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True once a job in this state will not run again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<DB> ToSql<Text, DB> for JobState
where
    DB: DieselBackend,
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        <str as ToSql<Text, DB>>::to_sql(self.as_str(), out)
    }
}

impl<DB> FromSql<Text, DB> for JobState
where
    DB: DieselBackend,
    String: FromSql<Text, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let name = <String as FromSql<Text, DB>>::from_sql(bytes)?;
        Self::parse(&name).ok_or_else(|| format!("unknown job state {name:?}").into())
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
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed before the job is dead-lettered.
    pub max_attempts: i32,
    /// Not run before this time (UTC).
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String)]
    pub run_at: NaiveDateTime,
    /// While running: the lease's end.
    #[serde(serialize_with = "timestamp::optional")]
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
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String)]
    pub created_at: NaiveDateTime,
    /// Its last change.
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String)]
    pub updated_at: NaiveDateTime,
    /// When it succeeded or died.
    #[serde(serialize_with = "timestamp::optional")]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<NaiveDateTime>,
}

/// A job to enqueue.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    /// What it does.
    pub kind: String,
    /// Its input, JSON text.
    pub payload: String,
    /// [`JobState::Queued`].
    pub state: JobState,
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
            state: JobState::Queued,
            max_attempts,
            run_at: t + chrono::Duration::from_std(delay).unwrap_or_default(),
            created_at: t,
            updated_at: t,
        }
    }
}

/// Most ids one `IN (...)` query takes (SQLite allows 32,766 variables; keep it modest).
const MAX_IDS_PER_QUERY: usize = 500;

// A running job whose lease ran out is claimed again only while it has attempts left; one
// with none left is dead-lettered by `bury_expired_jobs`, never run again (a lease can run
// out between that statement and this one). `$5`/`$6` are the states `running`/`queued`.
const CLAIM_POSTGRES: &str = "UPDATE jobs SET state = $5, attempts = attempts + 1, \
     progress = 0, progress_note = NULL, lease_until = $1, worker = $2, updated_at = $3 \
     WHERE id IN (SELECT id FROM jobs \
       WHERE (state = $6 AND run_at <= $3) \
          OR (state = $5 AND lease_until < $3 AND attempts < max_attempts) \
       ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING *";

// SQLite runs one writer at a time, so the subquery and the update cannot interleave with
// another claim.
const CLAIM_SQLITE: &str = "UPDATE jobs SET state = ?5, attempts = attempts + 1, \
     progress = 0, progress_note = NULL, lease_until = ?1, worker = ?2, updated_at = ?3 \
     WHERE id IN (SELECT id FROM jobs \
       WHERE (state = ?6 AND run_at <= ?3) \
          OR (state = ?5 AND lease_until < ?3 AND attempts < max_attempts) \
       ORDER BY run_at, id LIMIT ?4) \
     RETURNING *";

/// Applies `$changes` (a closure of the current time giving a changeset) to job `$id` if
/// `$worker` still holds it; yields the updated job, or `None` when it lost the job.
macro_rules! update_job {
    ($db:expr, $id:expr, $worker:expr, $op:expr, $changes:expr) => {{
        let t = now();
        let changes = $changes;
        let held = || {
            jobs::table
                .find($id)
                .filter(jobs::worker.eq($worker))
                .filter(jobs::state.eq(JobState::Running))
        };
        on_conn!($db, $op,
            // No `RETURNING`: the update and the read of the row it locked, in one
            // transaction.
            mysql: |conn| async {
                conn.transaction::<_, diesel::result::Error, _>(|tx| {
                    async move {
                        let n = diesel::update(held()).set(changes(t)).execute(tx).await?;
                        if n == 0 {
                            return Ok(None);
                        }
                        jobs::table
                            .find($id)
                            .select(Job::as_select())
                            .first(tx)
                            .await
                            .optional()
                    }
                    .scope_boxed()
                })
                .await
                .map_err(|e| $db.err(e))
            },
            others: |conn| async {
                diesel::update(held())
                    .set(changes(t))
                    .returning(Job::as_returning())
                    .get_result(conn)
                    .await
                    .optional()
                    .map_err(|e| $db.err(e))
            }
        )
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
            let id = on_conn!(self, "enqueue_job",
                mysql: |conn| async {
                    async {
                        diesel::insert_into(jobs::table).values(&job).execute(&mut *conn).await?;
                        super::mysql::last_insert_id(conn).await
                    }
                    .await
                    .map_err(|e| self.err(e))
                },
                others: |conn| async {
                    diesel::insert_into(jobs::table)
                        .values(&job)
                        .returning(jobs::id)
                        .get_result::<i64>(conn)
                        .await
                        .map_err(|e| self.err(e))
                }
            )?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Dead-letters jobs whose worker stopped during their last attempt (the lease ran out
    /// with no attempts left), so a job that keeps killing its worker is not retried
    /// forever. Returns how many.
    pub async fn bury_expired_jobs(&self) -> Result<usize, DbError> {
        let t = now();
        on_conn!(self, "bury_expired_jobs", |conn| async {
            diesel::update(
                jobs::table
                    .filter(jobs::state.eq(JobState::Running))
                    .filter(jobs::lease_until.lt(t))
                    .filter(jobs::attempts.ge(jobs::max_attempts)),
            )
            .set((
                jobs::state.eq(JobState::Dead),
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
        // The SQL of the shared body (MySQL has its own).
        let sql = match self.backend() {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres | Backend::Mysql => CLAIM_POSTGRES,
        };
        on_conn!(self, "claim_jobs",
            // MySQL cannot update the table its subquery reads (nor limit an `IN`
            // subquery): the runnable ids are locked first, skipping rows another worker
            // is claiming, then updated and read back, in one transaction. Each locking
            // read follows the (state, run_at) index, so InnoDB locks only the rows it
            // returns (one read over both states would sort first and lock every
            // runnable row until commit, leaving nothing for the other workers): first
            // jobs whose worker died with attempts left, then queued jobs that are due.
            mysql: |conn| async {
                conn.transaction::<_, diesel::result::Error, _>(|tx| {
                    async move {
                        let mut ids: Vec<i64> = jobs::table
                            .filter(jobs::state.eq(JobState::Running))
                            .filter(jobs::lease_until.lt(t))
                            .filter(jobs::attempts.lt(jobs::max_attempts))
                            .order((jobs::state.asc(), jobs::run_at.asc(), jobs::id.asc()))
                            .limit(limit)
                            .select(jobs::id)
                            .for_update()
                            .skip_locked()
                            .load(tx)
                            .await?;
                        let room = limit - ids.len() as i64;
                        if room > 0 {
                            ids.extend(
                                jobs::table
                                    .filter(jobs::state.eq(JobState::Queued))
                                    .filter(jobs::run_at.le(t))
                                    .order((jobs::state.asc(), jobs::run_at.asc(), jobs::id.asc()))
                                    .limit(room)
                                    .select(jobs::id)
                                    .for_update()
                                    .skip_locked()
                                    .load::<i64>(tx)
                                    .await?,
                            );
                        }
                        if ids.is_empty() {
                            return Ok(Vec::new());
                        }
                        diesel::update(jobs::table.filter(jobs::id.eq_any(&ids)))
                            .set((
                                jobs::state.eq(JobState::Running),
                                jobs::attempts.eq(jobs::attempts + 1),
                                jobs::progress.eq(0),
                                jobs::progress_note.eq(None::<String>),
                                jobs::lease_until.eq(Some(until)),
                                jobs::worker.eq(Some(worker)),
                                jobs::updated_at.eq(t),
                            ))
                            .execute(tx)
                            .await?;
                        jobs::table
                            .filter(jobs::id.eq_any(&ids))
                            .order((jobs::run_at.asc(), jobs::id.asc()))
                            .select(Job::as_select())
                            .load(tx)
                            .await
                    }
                    .scope_boxed()
                })
                .await
                .map_err(|e| self.err(e))
            },
            others: |conn| async {
            diesel::sql_query(sql)
                .bind::<Timestamp, _>(until)
                .bind::<Text, _>(worker)
                .bind::<Timestamp, _>(t)
                .bind::<BigInt, _>(limit)
                .bind::<Text, _>(JobState::Running)
                .bind::<Text, _>(JobState::Queued)
                .load::<Job>(conn)
                .await
                .map_err(|e| self.err(e))
            }
        )
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
                    .filter(jobs::state.eq(JobState::Running)),
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
                jobs::state.eq(JobState::Succeeded),
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
                        jobs::state.eq(JobState::Queued),
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
                        jobs::state.eq(JobState::Dead),
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
                    .filter(jobs::state.eq(JobState::Running)),
            )
            .set((
                jobs::state.eq(JobState::Queued),
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

    /// The jobs with these ids (those that exist).
    pub async fn get_jobs(&self, ids: &[i64]) -> Result<Vec<Job>, DbError> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_QUERY) {
            let mut jobs = on_conn!(self, "get_jobs", |conn| async {
                jobs::table
                    .filter(jobs::id.eq_any(chunk))
                    .select(Job::as_select())
                    .load(conn)
                    .await
                    .map_err(|e| self.err(e))
            })?;
            found.append(&mut jobs);
        }
        Ok(found)
    }

    /// Jobs in `state`, oldest first, by keyset.
    pub async fn list_jobs(
        &self,
        state: JobState,
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
    pub async fn count_jobs(&self) -> Result<Vec<(JobState, i64)>, DbError> {
        on_conn!(self, "count_jobs", |conn| async {
            jobs::table
                .group_by(jobs::state)
                .select((jobs::state, diesel::dsl::count_star()))
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }
}
