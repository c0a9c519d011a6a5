//! `DbExecutor`: the actor in front of the relational and document stores.
//!
//! Handlers never hold a connection: they send one of the messages below and await the
//! reply. Each message is answered by a future that takes a pooled connection for just
//! that operation, so one executor runs many operations at once — as many as the pool has
//! connections — while its mailbox keeps a bound on what is queued. One executor runs on
//! each HTTP worker thread (so query work stays on the thread that serves the request);
//! they share one [`Database`], whose pool is the only gate to the database.

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use serde_json::{Map, Value};

use crate::db::actions::{ActionCount, OutboxEmail};
use crate::db::job_queue::{Job, JobState, NewJob};
use crate::db::models::{
    Comment, Dashboard, DataItem, NewComment, NewData, NewOrder, NewPost, NewUser, Order, Page,
    Post, PostWithRelations, User,
};
pub use crate::db::queries::{ReportSection, Section};
use crate::db::{Database, DbError};

/// Requests queued in one executor's mailbox before senders wait.
pub const MAILBOX_CAPACITY: usize = 1024;

/// The actor; see the module documentation.
pub struct DbExecutor {
    db: Database,
}

impl DbExecutor {
    /// An executor over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

impl Actor for DbExecutor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

/// Create a user.
#[derive(Debug, Message)]
#[rtype(result = "Result<User, DbError>")]
pub struct CreateUser {
    /// The validated user.
    pub user: NewUser,
}

/// Create many users in one transaction, all or none.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<User>, DbError>")]
pub struct CreateUsers {
    /// The validated users.
    pub users: Vec<NewUser>,
}

/// Read one user through the query builder.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<User>, DbError>")]
pub struct GetUser {
    /// The user's id.
    pub id: i64,
}

/// Read one user as JSON text from one prepared statement (the `/users-fast` path).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<String>, DbError>")]
pub struct GetUserJson {
    /// The user's id.
    pub id: i64,
}

/// One page of users by keyset.
#[derive(Debug, Message)]
#[rtype(result = "Result<Page<User>, DbError>")]
pub struct ListUsers {
    /// Only ids above this.
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// One page of the CSV export: `(id, name, email)` rows.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<(i64, String, String)>, DbError>")]
pub struct ExportUsersPage {
    /// Only ids above this.
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// The dashboard: newest users and orders and the user count, queried at once.
#[derive(Debug, Message)]
#[rtype(result = "Result<Dashboard, DbError>")]
pub struct GetDashboard;

/// Place an order.
#[derive(Debug, Message)]
#[rtype(result = "Result<Order, DbError>")]
pub struct CreateOrder {
    /// The validated order.
    pub order: NewOrder,
}

/// Write a post.
#[derive(Debug, Message)]
#[rtype(result = "Result<Post, DbError>")]
pub struct CreatePost {
    /// The validated post.
    pub post: NewPost,
}

/// Comment on a post.
#[derive(Debug, Message)]
#[rtype(result = "Result<Comment, DbError>")]
pub struct CreateComment {
    /// The validated comment.
    pub comment: NewComment,
}

/// A post with its comments and author, fetched at once.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<PostWithRelations>, DbError>")]
pub struct GetPost {
    /// The post's id.
    pub id: i64,
}

/// One page of the `data` table.
#[derive(Debug, Message)]
#[rtype(result = "Result<Page<DataItem>, DbError>")]
pub struct ListData {
    /// Only ids above this.
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// Add a row to the `data` table.
#[derive(Debug, Message)]
#[rtype(result = "Result<DataItem, DbError>")]
pub struct CreateData {
    /// The validated row.
    pub row: NewData,
}

/// Compute one section of the report.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReportSection, DbError>")]
pub struct ComputeSection {
    /// Which section.
    pub section: Section,
}

/// Store a document.
#[derive(Debug, Message)]
#[rtype(result = "Result<String, DbError>")]
pub struct InsertDocument {
    /// The JSON object.
    pub body: Map<String, Value>,
}

/// Read a document.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Value>, DbError>")]
pub struct GetDocument {
    /// Its id.
    pub id: String,
}

/// Enqueue jobs.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<i64>, DbError>")]
pub struct EnqueueJobs {
    /// The jobs.
    pub jobs: Vec<NewJob>,
}

/// The jobs of an action, given its id.
pub type JobsFor = Box<dyn Fn(i64) -> Vec<NewJob> + Send + Sync>;

/// Record a user's action and enqueue its jobs in one transaction.
#[derive(Message)]
#[rtype(result = "Result<(i64, Vec<i64>), DbError>")]
pub struct CreateAction {
    /// The user.
    pub user_id: i64,
    /// The action.
    pub action: String,
    /// Its jobs, made once the action's id is known.
    pub jobs_for: JobsFor,
}

/// Read a job.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Job>, DbError>")]
pub struct GetJob {
    /// The job's id.
    pub id: i64,
}

/// Jobs in one state, by keyset.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Job>, DbError>")]
pub struct ListJobs {
    /// The state.
    pub state: JobState,
    /// Only ids above this.
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// The outbox, by keyset.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<OutboxEmail>, DbError>")]
pub struct ListOutbox {
    /// Only ids above this.
    pub after: i64,
    /// At most this many.
    pub limit: i64,
}

/// Counts per action.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<ActionCount>, DbError>")]
pub struct ListAnalytics;

/// Answers `$msg` by running `$call` on a clone of the database handle.
macro_rules! handle {
    ($msg:ty, |$db:ident, $m:ident| $call:expr) => {
        impl Handler<$msg> for DbExecutor {
            type Result = ResponseFuture<<$msg as Message>::Result>;

            fn handle(&mut self, $m: $msg, _: &mut Self::Context) -> Self::Result {
                let $db = self.db.clone();
                Box::pin(async move { $call.await })
            }
        }
    };
}

handle!(CreateUser, |db, m| db.create_user(m.user));
handle!(CreateUsers, |db, m| db.create_users(m.users));
handle!(GetUser, |db, m| db.get_user(m.id));
handle!(GetUserJson, |db, m| db.get_user_json(m.id));
handle!(ListUsers, |db, m| db.list_users(m.after, m.limit));
handle!(ExportUsersPage, |db, m| db.export_users(m.after, m.limit));
handle!(GetDashboard, |db, _m| db.dashboard());
handle!(CreateOrder, |db, m| db.create_order(m.order));
handle!(CreatePost, |db, m| db.create_post(m.post));
handle!(CreateComment, |db, m| db.create_comment(m.comment));
handle!(GetPost, |db, m| db.get_post(m.id));
handle!(ListData, |db, m| db.list_data(m.after, m.limit));
handle!(CreateData, |db, m| db.create_data(m.row));
handle!(ComputeSection, |db, m| db.report_section(m.section));
handle!(InsertDocument, |db, m| db.insert_document(m.body));
handle!(GetDocument, |db, m| db.get_document(&m.id));
handle!(EnqueueJobs, |db, m| db.enqueue(m.jobs));
handle!(CreateAction, |db, m| db
    .create_action(m.user_id, &m.action, m.jobs_for));
handle!(GetJob, |db, m| db.get_job(m.id));
handle!(ListJobs, |db, m| db.list_jobs(m.state, m.after, m.limit));
handle!(ListOutbox, |db, m| db.list_outbox(m.after, m.limit));
handle!(ListAnalytics, |db, _m| db.list_analytics());
