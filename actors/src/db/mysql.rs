//! What MySQL and MariaDB need beyond the shared queries: the session every pooled
//! connection starts with (statement and lock timeouts, isolation), the check that weeds
//! out connections the server closed, and `LAST_INSERT_ID()` for the inserts that read
//! their row back (MySQL has no `RETURNING`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError, QueryResult};
use diesel::sql_types::{BigInt, Text};
use diesel_async::pooled_connection::{ManagerConfig, RecyclingMethod};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use futures_util::FutureExt;

/// After a connection failure, every checkout pings its connection (`SELECT 1`) for this
/// long. mysql_async only learns that the server closed a connection when the next
/// statement fails on it, so after a restart the pool would hand out each stale
/// connection once more; the pings discard them instead. Without a recent failure a
/// checkout costs no round trip.
pub const PING_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Remembers when a connection last failed, for [`PING_AFTER_FAILURE`].
#[derive(Debug, Default)]
pub struct FailureWindow {
    until: Mutex<Option<Instant>>,
}

impl FailureWindow {
    /// A connection failed now: ping on checkout for [`PING_AFTER_FAILURE`].
    pub fn open(&self) {
        if let Ok(mut until) = self.until.lock() {
            *until = Some(Instant::now() + PING_AFTER_FAILURE);
        }
    }

    fn is_open(&self) -> bool {
        self.until
            .lock()
            .map(|u| u.is_some_and(|u| Instant::now() < u))
            .unwrap_or(true)
    }
}

/// The statements a new connection runs: the statement timeout (`max_statement_time`, in
/// seconds, on MariaDB, which applies to every statement; `max_execution_time`, in
/// milliseconds, on MySQL, which applies to `SELECT`s), the row-lock and table-lock waits
/// bounded by the same timeout (whole seconds, at least one), and READ COMMITTED, the
/// isolation the queries are written for (PostgreSQL's default). A MySQL write that runs
/// long without waiting for a lock is ended by the client-side deadline, and its
/// connection discarded ([`discard`]).
pub fn session_setup(server_version: &str, statement_timeout: Duration) -> Vec<String> {
    let ms = statement_timeout.as_millis().max(1);
    let lock_wait_secs = statement_timeout.as_secs_f64().ceil().max(1.0) as u64;
    let timeout = if server_version.contains("MariaDB") {
        format!(
            "SET SESSION max_statement_time = {}",
            statement_timeout.as_secs_f64()
        )
    } else {
        format!("SET SESSION max_execution_time = {ms}")
    };
    vec![
        timeout,
        format!("SET SESSION innodb_lock_wait_timeout = {lock_wait_secs}"),
        format!("SET SESSION lock_wait_timeout = {lock_wait_secs}"),
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
    ]
}

/// The pool manager's settings: each new connection runs [`session_setup`]; a checkout
/// discards a connection left broken by a transaction, and within [`PING_AFTER_FAILURE`]
/// of a failure also one that does not answer a ping.
pub fn manager_config(
    statement_timeout: Duration,
    failures: Arc<FailureWindow>,
) -> ManagerConfig<AsyncMysqlConnection> {
    let mut config = ManagerConfig::<AsyncMysqlConnection>::default();
    config.custom_setup = Box::new(move |url| {
        let url = url.to_owned();
        async move {
            let mut conn = AsyncMysqlConnection::establish(&url).await?;
            let version: String = diesel::select(diesel::dsl::sql::<Text>("VERSION()"))
                .get_result(&mut conn)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            for statement in session_setup(&version, statement_timeout) {
                diesel::sql_query(statement)
                    .execute(&mut conn)
                    .await
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            }
            Ok(conn)
        }
        .boxed()
    });
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(move |conn| {
        use diesel_async::pooled_connection::PoolableConnection;
        let broken = conn.is_broken();
        let ping = !broken && failures.is_open();
        async move {
            if broken {
                return Err(DieselError::DatabaseError(
                    DatabaseErrorKind::ClosedConnection,
                    Box::new("the pooled connection was left broken".to_owned()),
                ));
            }
            if ping {
                diesel::sql_query("SELECT 1").execute(conn).await?;
            }
            Ok(())
        }
        .boxed()
    }));
    config
}

/// MySQL has no `RETURNING`: inserts `$values` into `$table` on `$conn` and reads the row
/// back as `$model` by the id it was given (`LAST_INSERT_ID()` is the connection's own).
macro_rules! insert_and_read {
    ($conn:ident, $table:ident, $values:expr, $model:ty) => {
        async {
            diesel::insert_into($table::table)
                .values($values)
                .execute(&mut *$conn)
                .await?;
            let id = $crate::db::mysql::last_insert_id(&mut *$conn).await?;
            $table::table
                .find(id)
                .select(<$model>::as_select())
                .first::<$model>(&mut *$conn)
                .await
        }
    };
}
pub(crate) use insert_and_read;

/// Marks a connection whose statement the client-side deadline cut off as broken, so the
/// pool drops it instead of lending it again: the driver may still be owed the reply to
/// the abandoned statement, which the next borrower would read as its own.
pub fn discard(conn: &mut AsyncMysqlConnection) {
    use diesel_async::TransactionManager;
    <AsyncMysqlConnection as AsyncConnection>::TransactionManager::transaction_manager_status_mut(
        conn,
    )
    .set_in_error();
}

/// `url` with `prefer_socket=false` unless it says otherwise: by default the driver asks a
/// server reached over loopback TCP for its Unix socket and moves the connection there,
/// around anything the URL points at on loopback (a local proxy or tunnel, say). courier
/// connects where its URL says.
pub fn connect_as_given(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.query_pairs().any(|(k, _)| k == "prefer_socket") => {
            parsed
                .query_pairs_mut()
                .append_pair("prefer_socket", "false");
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The id the connection's last `INSERT` generated.
pub async fn last_insert_id(conn: &mut AsyncMysqlConnection) -> QueryResult<i64> {
    diesel::select(diesel::dsl::sql::<BigInt>(
        "CAST(LAST_INSERT_ID() AS SIGNED)",
    ))
    .get_result(conn)
    .await
}

/// Whether a MySQL/MariaDB error message says the connection is gone: the driver's I/O
/// and closed-connection errors, and the server's own notices of shutdown or a kill.
pub fn connection_lost(message: &str) -> bool {
    message.starts_with("Input/output error")
        || message.contains("Connection to the server is closed")
        || message.contains("Server shutdown in progress")
        || message.contains("Connection was killed")
        || message.contains("disconnected by the server because of inactivity")
        || message.contains("Lost connection to")
}

/// Whether a MySQL/MariaDB error message says a timeout ended the statement: the
/// statement timeout (MariaDB's `max_statement_time`, MySQL's `max_execution_time`) or a
/// row-lock wait.
pub fn timed_out(message: &str) -> bool {
    message.contains("max_statement_time exceeded")
        || message.contains("maximum statement execution time exceeded")
        || message.contains("Lock wait timeout exceeded")
}

/// Whether a MySQL/MariaDB error message says a value broke a rule of the schema that
/// the driver does not classify: a failed `CHECK` (MariaDB's 4025; MySQL's 3819 is) or a
/// value longer than its column (1406).
pub fn check_failed(message: &str) -> bool {
    (message.starts_with("CONSTRAINT") && message.contains("failed"))
        || message.starts_with("Data too long for column")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_bounds_statements_on_both_servers() {
        let t = Duration::from_millis(1500);
        let maria = session_setup("10.11.19-MariaDB-0+deb12u1", t);
        assert_eq!(maria[0], "SET SESSION max_statement_time = 1.5");
        assert_eq!(maria[1], "SET SESSION innodb_lock_wait_timeout = 2");
        let mysql = session_setup("8.0.40", t);
        assert_eq!(mysql[0], "SET SESSION max_execution_time = 1500");
        let short = session_setup("8.0.40", Duration::from_millis(10));
        assert_eq!(short[1], "SET SESSION innodb_lock_wait_timeout = 1");
    }

    #[test]
    fn connections_go_where_the_url_says() {
        assert_eq!(
            connect_as_given("mysql://u:p@127.0.0.1:6033/app"),
            "mysql://u:p@127.0.0.1:6033/app?prefer_socket=false"
        );
        assert_eq!(
            connect_as_given("mysql://u@h/app?require_ssl=true"),
            "mysql://u@h/app?require_ssl=true&prefer_socket=false"
        );
        let chosen = "mysql://u@127.0.0.1/app?prefer_socket=true";
        assert_eq!(connect_as_given(chosen), chosen);
    }

    #[test]
    fn server_messages_are_classified() {
        assert!(timed_out(
            "Query execution was interrupted (max_statement_time exceeded)"
        ));
        assert!(timed_out(
            "Query execution was interrupted, maximum statement execution time exceeded"
        ));
        assert!(timed_out(
            "Lock wait timeout exceeded; try restarting transaction"
        ));
        assert!(connection_lost(
            "Input/output error: Connection reset by peer (os error 104)"
        ));
        assert!(check_failed(
            "CONSTRAINT `orders.quantity` failed for `test`.`orders`"
        ));
        assert!(!timed_out("Duplicate entry 'a' for key 'email'"));
        assert!(check_failed("Data too long for column 'name' at row 1"));
        assert!(connection_lost(
            "The client was disconnected by the server because of inactivity."
        ));
    }
}
