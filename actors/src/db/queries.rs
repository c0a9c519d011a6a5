//! Every relational query, written once with diesel's query builder and run on every
//! backend through [`on_conn!`]. Only `/users-fast` is raw SQL, one statement per backend;
//! MySQL, which has no `RETURNING`, reads an inserted row back by the id it was given
//! ([`insert_and_read!`]).

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::scoped_futures::ScopedFutureExt;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures_util::future::try_join3;

use super::models::*;
use super::mysql::insert_and_read;
use super::schema::{comments, data, orders, posts, users};
use super::sql_fragments::{revenue_cents, UserJson};
use super::{on_conn, Database, DbError};

/// Newest users and orders shown on the dashboard.
pub const DASHBOARD_ROWS: i64 = 10;

/// Most comments returned with a post.
pub const POST_COMMENTS_LIMIT: i64 = 100;

/// One section of the HTML report: label/value lines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportSection {
    /// The section's lines, in order.
    pub lines: Vec<(String, String)>,
}

/// The report's sections, in the order the report shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// User count and the newest users.
    Users,
    /// Order count, revenue and the best-selling products.
    Orders,
    /// Posts, comments, data rows and the average order.
    Analytics,
}

impl Section {
    /// Every section, in report order.
    pub const ALL: [Section; 3] = [Section::Users, Section::Orders, Section::Analytics];

    /// The section's title.
    pub fn title(self) -> &'static str {
        match self {
            Self::Users => "Users",
            Self::Orders => "Orders",
            Self::Analytics => "Analytics",
        }
    }
}

/// Whether `e` is a unique-key violation (an email or id that is taken).
pub(super) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

fn fk_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)
    )
}

impl Database {
    /// [`DbError::Invalid`] with `message` when `e` is a foreign-key violation (a row the
    /// new one refers to does not exist); otherwise the usual mapping.
    fn missing_reference(&self, e: DieselError, message: impl FnOnce() -> String) -> DbError {
        if fk_violation(&e) {
            DbError::Invalid(message())
        } else {
            self.err(e)
        }
    }

    /// Creates a user; an email in use gives [`DbError::Conflict`].
    pub async fn create_user(&self, user: NewUser) -> Result<User, DbError> {
        let email = user.email.clone();
        let map = |e| match e {
            e if is_unique_violation(&e) => {
                DbError::Conflict(format!("a user with email {email} already exists"))
            }
            e => self.err(e),
        };
        on_conn!(self, "create_user",
            mysql: |conn| async { insert_and_read!(conn, users, &user, User).await.map_err(map) },
            others: |conn| async {
                diesel::insert_into(users::table)
                    .values(&user)
                    .returning(User::as_returning())
                    .get_result(conn)
                    .await
                    .map_err(map)
            }
        )
    }

    /// Creates every user in one transaction, or none. Postgres gets one multi-row
    /// `INSERT`; SQLite (which has no multi-row `INSERT … RETURNING` in diesel) one
    /// prepared `INSERT` per row inside the transaction, which costs no round trips there.
    pub async fn create_users(&self, batch: Vec<NewUser>) -> Result<Vec<User>, DbError> {
        let conflict = |e: DieselError| match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                let detail = info
                    .details()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                DbError::Conflict(format!(
                    "a user with one of these emails already exists{detail}; no user was created"
                ))
            }
            e => self.err(e),
        };
        let batch = &batch;
        on_conn!(self, "create_users",
            postgres: |conn| async {
                conn.transaction::<_, DieselError, _>(|tx| {
                    async move {
                        diesel::insert_into(users::table)
                            .values(batch)
                            .returning(User::as_returning())
                            .get_results(tx)
                            .await
                    }
                    .scope_boxed()
                })
                .await
                .map_err(conflict)
            },
            // One multi-row `INSERT`, then the rows read back by their (unique) emails.
            mysql: |conn| async {
                conn.transaction::<_, DieselError, _>(|tx| {
                    async move {
                        diesel::insert_into(users::table).values(batch).execute(tx).await?;
                        let emails: Vec<&str> = batch.iter().map(|u| u.email.as_str()).collect();
                        users::table
                            .filter(users::email.eq_any(emails))
                            .order(users::id.asc())
                            .select(User::as_select())
                            .load(tx)
                            .await
                    }
                    .scope_boxed()
                })
                .await
                .map_err(conflict)
            },
            sqlite: |conn| async {
                conn.transaction::<_, DieselError, _>(|tx| {
                    async move {
                        let mut created = Vec::with_capacity(batch.len());
                        for user in batch {
                            created.push(
                                diesel::insert_into(users::table)
                                    .values(user)
                                    .returning(User::as_returning())
                                    .get_result(tx)
                                    .await?,
                            );
                        }
                        Ok(created)
                    }
                    .scope_boxed()
                })
                .await
                .map_err(conflict)
            }
        )
    }

    /// The user with `id`, through the query builder.
    pub async fn get_user(&self, id: i64) -> Result<Option<User>, DbError> {
        on_conn!(self, "get_user", |conn| async {
            users::table
                .find(id)
                .select(User::as_select())
                .first(conn)
                .await
                .optional()
                .map_err(|e| self.err(e))
        })
    }

    /// The user with `id` as JSON text built by one prepared statement: no row mapping.
    pub async fn get_user_json(&self, id: i64) -> Result<Option<String>, DbError> {
        on_conn!(self, "get_user_json", |conn| async {
            UserJson { id }
                .get_result::<String>(conn)
                .await
                .optional()
                .map_err(|e| self.err(e))
        })
    }

    /// Users with ids above `after`, ascending, at most `limit`.
    pub async fn list_users(&self, after: i64, limit: i64) -> Result<Page<User>, DbError> {
        let mut rows = on_conn!(self, "list_users", |conn| async {
            users::table
                .filter(users::id.gt(after))
                .order(users::id.asc())
                .limit(limit + 1)
                .select(User::as_select())
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })?;
        Ok(page(&mut rows, limit, |u| u.id))
    }

    /// `(id, name, email)` of users with ids above `after`, ascending, at most `limit`:
    /// one page of the CSV export.
    pub async fn export_users(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, String)>, DbError> {
        on_conn!(self, "export_users", |conn| async {
            users::table
                .filter(users::id.gt(after))
                .order(users::id.asc())
                .limit(limit)
                .select((users::id, users::name, users::email))
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })
    }

    /// The dashboard: three queries at once, each on its own pooled connection.
    pub async fn dashboard(&self) -> Result<Dashboard, DbError> {
        let newest_users = async {
            on_conn!(self, "dashboard_users", |conn| async {
                users::table
                    .order(users::id.desc())
                    .limit(DASHBOARD_ROWS)
                    .select(User::as_select())
                    .load(conn)
                    .await
                    .map_err(|e| self.err(e))
            })
        };
        let newest_orders = async {
            on_conn!(self, "dashboard_orders", |conn| async {
                orders::table
                    .order(orders::id.desc())
                    .limit(DASHBOARD_ROWS)
                    .select(Order::as_select())
                    .load(conn)
                    .await
                    .map_err(|e| self.err(e))
            })
        };
        let total = async {
            on_conn!(self, "dashboard_count", |conn| async {
                users::table
                    .count()
                    .get_result::<i64>(conn)
                    .await
                    .map_err(|e| self.err(e))
            })
        };
        let (users, orders, total_users) = try_join3(newest_users, newest_orders, total).await?;
        Ok(Dashboard {
            users,
            orders,
            total_users,
        })
    }

    /// Places an order; an unknown user gives [`DbError::Invalid`].
    pub async fn create_order(&self, order: NewOrder) -> Result<Order, DbError> {
        let user_id = order.user_id;
        let map = |e| self.missing_reference(e, || format!("user_id {user_id} does not exist"));
        on_conn!(self, "create_order",
            mysql: |conn| async { insert_and_read!(conn, orders, &order, Order).await.map_err(map) },
            others: |conn| async {
                diesel::insert_into(orders::table)
                    .values(&order)
                    .returning(Order::as_returning())
                    .get_result(conn)
                    .await
                    .map_err(map)
            }
        )
    }

    /// Writes a post; an unknown author gives [`DbError::Invalid`].
    pub async fn create_post(&self, post: NewPost) -> Result<Post, DbError> {
        let author_id = post.author_id;
        let map = |e| self.missing_reference(e, || format!("author_id {author_id} does not exist"));
        on_conn!(self, "create_post",
            mysql: |conn| async { insert_and_read!(conn, posts, &post, Post).await.map_err(map) },
            others: |conn| async {
                diesel::insert_into(posts::table)
                    .values(&post)
                    .returning(Post::as_returning())
                    .get_result(conn)
                    .await
                    .map_err(map)
            }
        )
    }

    /// Adds a comment: [`DbError::NotFound`] when the post does not exist,
    /// [`DbError::Invalid`] when the author does not. One `INSERT`, checked by the foreign
    /// keys (a read-then-write transaction would fail at once on SQLite when another write
    /// lands between the two).
    pub async fn create_comment(&self, comment: NewComment) -> Result<Comment, DbError> {
        let (post_id, author_id) = (comment.post_id, comment.author_id);
        let result = on_conn!(self, "create_comment",
            mysql: |conn| async { Ok(insert_and_read!(conn, comments, &comment, Comment).await) },
            others: |conn| async {
                Ok(diesel::insert_into(comments::table)
                    .values(&comment)
                    .returning(Comment::as_returning())
                    .get_result(conn)
                    .await)
            }
        )?;
        match result {
            Ok(comment) => Ok(comment),
            Err(e) if fk_violation(&e) => {
                let post_exists = on_conn!(self, "create_comment_check", |conn| async {
                    posts::table
                        .filter(posts::id.eq(post_id))
                        .count()
                        .get_result::<i64>(conn)
                        .await
                        .map_err(|e| self.err(e))
                })? > 0;
                Err(if post_exists {
                    DbError::Invalid(format!("author_id {author_id} does not exist"))
                } else {
                    DbError::NotFound("Post not found".into())
                })
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// A post with its comments and author, fetched at once on three connections.
    pub async fn get_post(&self, id: i64) -> Result<Option<PostWithRelations>, DbError> {
        let post = async {
            on_conn!(self, "get_post", |conn| async {
                posts::table
                    .find(id)
                    .select(Post::as_select())
                    .first(conn)
                    .await
                    .optional()
                    .map_err(|e| self.err(e))
            })
        };
        let post_comments = async {
            on_conn!(self, "get_post_comments", |conn| async {
                comments::table
                    .filter(comments::post_id.eq(id))
                    .order(comments::id.asc())
                    .limit(POST_COMMENTS_LIMIT)
                    .select(Comment::as_select())
                    .load(conn)
                    .await
                    .map_err(|e| self.err(e))
            })
        };
        let author = async {
            on_conn!(self, "get_post_author", |conn| async {
                users::table
                    .inner_join(posts::table)
                    .filter(posts::id.eq(id))
                    .select(User::as_select())
                    .first(conn)
                    .await
                    .optional()
                    .map_err(|e| self.err(e))
            })
        };
        let (post, comments, author) = try_join3(post, post_comments, author).await?;
        Ok(match (post, author) {
            (Some(post), Some(author)) => Some(PostWithRelations {
                post,
                comments,
                author,
            }),
            _ => None,
        })
    }

    /// Rows of the `data` table with ids above `after`, at most `limit`.
    pub async fn list_data(&self, after: i64, limit: i64) -> Result<Page<DataItem>, DbError> {
        let mut rows = on_conn!(self, "list_data", |conn| async {
            data::table
                .filter(data::id.gt(after))
                .order(data::id.asc())
                .limit(limit + 1)
                .select(DataRow::as_select())
                .load(conn)
                .await
                .map_err(|e| self.err(e))
        })?;
        let page = page(&mut rows, limit, |r| r.id);
        Ok(Page {
            items: page.items.into_iter().map(DataRow::into_item).collect(),
            next_after: page.next_after,
        })
    }

    /// Adds a row to the `data` table.
    pub async fn create_data(&self, row: NewData) -> Result<DataItem, DbError> {
        on_conn!(self, "create_data",
            mysql: |conn| async {
                insert_and_read!(conn, data, &row, DataRow)
                    .await
                    .map(DataRow::into_item)
                    .map_err(|e| self.err(e))
            },
            others: |conn| async {
                diesel::insert_into(data::table)
                    .values(&row)
                    .returning(DataRow::as_returning())
                    .get_result(conn)
                    .await
                    .map(DataRow::into_item)
                    .map_err(|e| self.err(e))
            }
        )
    }

    /// One section of the HTML report.
    pub async fn report_section(&self, section: Section) -> Result<ReportSection, DbError> {
        use diesel::dsl::count_star;
        let lines =
            match section {
                Section::Users => {
                    on_conn!(self, "report_users", |conn| async {
                        let total: i64 = users::table.count().get_result(conn).await?;
                        let newest: Vec<(String, String)> = users::table
                            .order(users::id.desc())
                            .limit(5)
                            .select((users::name, users::email))
                            .load(conn)
                            .await?;
                        let mut lines = vec![("Total users".to_owned(), total.to_string())];
                        lines.extend(newest.into_iter().map(|(name, email)| {
                            ("Newest".to_owned(), format!("{name} <{email}>"))
                        }));
                        Ok::<_, DieselError>(lines)
                    }
                    .map_err_db(self))
                }
                Section::Orders => {
                    on_conn!(self, "report_orders", |conn| async {
                        let total: i64 = orders::table.count().get_result(conn).await?;
                        let revenue: Option<i64> = orders::table
                            .select(revenue_cents())
                            .get_result::<Option<i64>>(conn)
                            .await?;
                        let top: Vec<(String, i64)> = orders::table
                            .group_by(orders::product)
                            .select((orders::product, count_star()))
                            .order((count_star().desc(), orders::product.asc()))
                            .limit(5)
                            .load(conn)
                            .await?;
                        let mut lines = vec![
                            ("Total orders".to_owned(), total.to_string()),
                            ("Revenue".to_owned(), cents(revenue.unwrap_or(0))),
                        ];
                        lines.extend(top.into_iter().map(|(product, n)| {
                            ("Top product".to_owned(), format!("{product} ({n})"))
                        }));
                        Ok::<_, DieselError>(lines)
                    }
                    .map_err_db(self))
                }
                Section::Analytics => {
                    on_conn!(self, "report_analytics", |conn| async {
                        let posts_n: i64 = posts::table.count().get_result(conn).await?;
                        let comments_n: i64 = comments::table.count().get_result(conn).await?;
                        let data_n: i64 = data::table.count().get_result(conn).await?;
                        let orders_n: i64 = orders::table.count().get_result(conn).await?;
                        let revenue: Option<i64> = orders::table
                            .select(revenue_cents())
                            .get_result::<Option<i64>>(conn)
                            .await?;
                        let average = match orders_n {
                            0 => "n/a".to_owned(),
                            n => cents(revenue.unwrap_or(0) / n),
                        };
                        Ok::<_, DieselError>(vec![
                            ("Posts".to_owned(), posts_n.to_string()),
                            ("Comments".to_owned(), comments_n.to_string()),
                            ("Data rows".to_owned(), data_n.to_string()),
                            ("Average order".to_owned(), average),
                        ])
                    }
                    .map_err_db(self))
                }
            }?;
        Ok(ReportSection { lines })
    }
}

/// Cuts the extra row fetched to learn whether another page follows.
fn page<T>(rows: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_after = if more { rows.last().map(id) } else { None };
    Page {
        items: std::mem::take(rows),
        next_after,
    }
}

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, (c % 100).abs())
}

/// Maps a query builder error through the database's classification.
trait MapErrDb<T> {
    fn map_err_db(self, db: &Database) -> impl std::future::Future<Output = Result<T, DbError>>;
}

impl<T, F> MapErrDb<T> for F
where
    F: std::future::Future<Output = Result<T, DieselError>>,
{
    async fn map_err_db(self, db: &Database) -> Result<T, DbError> {
        self.await.map_err(|e| db.err(e))
    }
}
