//! The few SQL fragments whose text differs per backend, each one type with a
//! `QueryFragment` per backend, so the queries that use them stay one body.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

/// `/users-fast`: the user with `id` as JSON text built by the database, one statement
/// with a fixed text. Unlike `sql_query` (whose text diesel cannot assume is fixed), this
/// query has a static id, so each connection prepares it once and reuses it.
#[derive(Debug, Clone, Copy)]
pub(super) struct UserJson {
    pub(super) id: i64,
}

impl diesel::query_builder::QueryId for UserJson {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for UserJson {
    type SqlType = Text;
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for UserJson {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        out.push_sql(
            "SELECT row_to_json(u)::text FROM (SELECT id, name, email, \
             to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at \
             FROM users WHERE id = ",
        );
        out.push_bind_param::<BigInt, _>(&self.id)?;
        out.push_sql(") u");
        Ok(())
    }
}

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for UserJson {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        out.push_sql(
            "SELECT json_object('id', id, 'name', name, 'email', email, \
             'created_at', strftime('%Y-%m-%dT%H:%M:%fZ', created_at)) FROM users WHERE id = ",
        );
        out.push_bind_param::<BigInt, _>(&self.id)?;
        Ok(())
    }
}

impl diesel::query_builder::QueryFragment<diesel::mysql::Mysql> for UserJson {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::mysql::Mysql>,
    ) -> QueryResult<()> {
        // DATE_FORMAT's %f gives microseconds; the other backends show milliseconds.
        out.push_sql(
            "SELECT CAST(JSON_OBJECT('id', id, 'name', name, 'email', email, \
             'created_at', CONCAT(LEFT(DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%f'), 23), 'Z')) \
             AS CHAR) FROM users WHERE id = ",
        );
        out.push_bind_param::<BigInt, _>(&self.id)?;
        Ok(())
    }
}

/// `SUM(amount_cents)` as a 64-bit integer on every backend (Postgres and MySQL sum
/// BIGINT to NUMERIC/DECIMAL; MySQL spells the cast `SIGNED`).
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
pub(super) struct RevenueCents;

impl diesel::Expression for RevenueCents {
    type SqlType = diesel::sql_types::Nullable<BigInt>;
}

impl diesel::expression::ValidGrouping<()> for RevenueCents {
    type IsAggregate = diesel::expression::is_aggregate::Yes;
}

impl<QS> diesel::AppearsOnTable<QS> for RevenueCents {}
impl<QS> diesel::SelectableExpression<QS> for RevenueCents {}

macro_rules! revenue_sql {
    ($backend:ty, $sql:expr) => {
        impl diesel::query_builder::QueryFragment<$backend> for RevenueCents {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, $backend>,
            ) -> QueryResult<()> {
                out.push_sql($sql);
                Ok(())
            }
        }
    };
}
revenue_sql!(diesel::pg::Pg, "CAST(SUM(amount_cents) AS BIGINT)");
revenue_sql!(diesel::sqlite::Sqlite, "CAST(SUM(amount_cents) AS BIGINT)");
revenue_sql!(diesel::mysql::Mysql, "CAST(SUM(amount_cents) AS SIGNED)");

pub(super) fn revenue_cents() -> RevenueCents {
    RevenueCents
}
