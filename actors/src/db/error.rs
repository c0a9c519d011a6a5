//! Why a database operation failed, and how driver errors map to it.

use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::mysql;

/// Why a database operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached, refused the connection, or its schema is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// A statement did not finish within the statement timeout.
    #[error("the database did not finish the statement within {0:?}")]
    Timeout(Duration),
    /// A row with the same unique key exists.
    #[error("{0}")]
    Conflict(String),
    /// The request refers to something that does not exist, or breaks a rule of the schema.
    #[error("{0}")]
    Invalid(String),
    /// The addressed row does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Anything else; the detail is logged.
    #[error("database error: {0}")]
    Internal(String),
}

impl DbError {
    /// Every [`kind`](Self::kind), so each has a counter from the start.
    pub const KINDS: [&'static str; 6] = [
        "unavailable",
        "timeout",
        "conflict",
        "invalid",
        "not_found",
        "internal",
    ];

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Conflict(_) => "conflict",
            Self::Invalid(_) => "invalid",
            Self::NotFound(_) => "not_found",
            Self::Internal(_) => "internal",
        }
    }

    /// Classifies a driver error that the query did not handle itself.
    pub fn from_diesel(e: DieselError, statement_timeout: Duration) -> Self {
        match e {
            DieselError::DatabaseError(kind, info) => {
                let message = info.message().to_owned();
                match kind {
                    DatabaseErrorKind::UniqueViolation => Self::Conflict(message),
                    DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::NotNullViolation => Self::Invalid(message),
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::UnableToSendCommand => {
                        Self::Unavailable(format!("the database connection failed: {message}"))
                    }
                    _ if message.contains("statement timeout")
                        || message.contains("database is locked")
                        || mysql::timed_out(&message) =>
                    {
                        Self::Timeout(statement_timeout)
                    }
                    _ if mysql::check_failed(&message) => Self::Invalid(message),
                    _ if mysql::connection_lost(&message) => {
                        Self::Unavailable(format!("the database connection failed: {message}"))
                    }
                    _ if message.contains("terminating connection")
                        || message.contains("shutting down")
                        || message.contains("starting up")
                        || message.contains("connection closed") =>
                    {
                        Self::Unavailable(format!("the database is unavailable: {message}"))
                    }
                    _ => Self::Internal(message),
                }
            }
            DieselError::BrokenTransactionManager => {
                Self::Unavailable("the database connection failed mid-transaction".into())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}
