//! Actions users perform and the rows their jobs write: the activity log, the analytics
//! counts and the outbox. Each write is keyed by the job or action that makes it, so a job
//! that runs twice (jobs run at least once) changes nothing the second time.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde::Serialize;
use utoipa::ToSchema;

use super::job_queue::NewJob;
use super::models::{now, timestamp};
use super::schema::{actions, activity_log, analytics, analytics_applied, jobs, outbox};
use super::{on_conn, Database, DbError};

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
    #[serde(serialize_with = "timestamp::required")]
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
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String)]
    pub updated_at: NaiveDateTime,
}

impl Database {
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
        let map = |e| match e {
            DieselError::DatabaseError(
                diesel::result::DatabaseErrorKind::ForeignKeyViolation,
                _,
            ) => DbError::NotFound("User not found".into()),
            e => self.err(e),
        };
        let row = || {
            (
                actions::user_id.eq(user_id),
                actions::action.eq(action.clone()),
                actions::created_at.eq(now()),
            )
        };
        on_conn!(self, "create_action",
            // No `RETURNING`: each insert's id is the connection's `LAST_INSERT_ID()`.
            mysql: |conn| async {
                conn.transaction::<_, DieselError, _>(|tx| {
                    async move {
                        diesel::insert_into(actions::table).values(row()).execute(tx).await?;
                        let action_id = super::mysql::last_insert_id(tx).await?;
                        let mut ids = Vec::new();
                        for job in jobs_for(action_id) {
                            diesel::insert_into(jobs::table).values(&job).execute(tx).await?;
                            ids.push(super::mysql::last_insert_id(tx).await?);
                        }
                        Ok((action_id, ids))
                    }
                    .scope_boxed()
                })
                .await
                .map_err(map)
            },
            others: |conn| async {
                conn.transaction::<_, DieselError, _>(|tx| {
                    async move {
                        let action_id: i64 = diesel::insert_into(actions::table)
                            .values(row())
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
                .map_err(map)
            }
        )
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
        on_conn!(self, "count_action",
            // MySQL's stand-in for `DO NOTHING` (`ON DUPLICATE KEY UPDATE id = id`) reports
            // a found row as affected, so a duplicate is told by its error; a failed
            // statement does not end a MySQL transaction.
            mysql: |conn| async {
                let action = action.clone();
                conn.transaction::<_, DieselError, _>(|tx| {
                    async move {
                        let fresh = match diesel::insert_into(analytics_applied::table)
                            .values(analytics_applied::action_id.eq(action_id))
                            .execute(tx)
                            .await
                        {
                            Ok(_) => true,
                            Err(e) if super::queries::is_unique_violation(&e) => false,
                            Err(e) => return Err(e),
                        };
                        if fresh {
                            let t = now();
                            diesel::insert_into(analytics::table)
                                .values((
                                    analytics::action.eq(&action),
                                    analytics::count.eq(1i64),
                                    analytics::updated_at.eq(t),
                                ))
                                .on_conflict(diesel::dsl::DuplicatedKeys)
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
            },
            others: |conn| async {
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
        }
        )
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
}
