use std::time::Duration;

/// Errors of the database lanes. Mapped once at each function's edge (HTTP 503 or a
/// batch-item failure): none of them means the input was bad.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{lane} lane: no connection free within {waited:?} (lane size {max_size})")]
    AcquireTimeout {
        lane: &'static str,
        waited: Duration,
        max_size: usize,
    },
    #[error("{lane} lane: could not open a connection: {reason}")]
    Connect { lane: &'static str, reason: String },
    #[error("{lane} lane: operation did not finish within {limit:?}; connection discarded")]
    OperationTimeout { lane: &'static str, limit: Duration },
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("cannot encode a value for the database: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// A stored value the domain does not know (schema and code out of step).
    #[error("column {column} holds {value:?}, which this version does not know")]
    Unexpected { column: &'static str, value: String },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i32,
        name: &'static str,
        source: tokio_postgres::Error,
    },
}

impl DbError {
    /// True when the database (or the way to it) is unavailable, as opposed to a statement
    /// the database refused. Callers use it to answer 503 rather than 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::AcquireTimeout { .. }
            | DbError::Connect { .. }
            | DbError::OperationTimeout { .. } => true,
            // Also the refusals that mean "no server to run it on", which PgBouncer and RDS
            // Proxy send while the database is down or restarting: connection exceptions
            // (class 08), shutdown/cannot-connect-now (57P01-57P03), too many connections.
            DbError::Query(e) => {
                e.is_closed()
                    || e.code().is_none_or(|c| {
                        let c = c.code();
                        c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300")
                    })
            }
            DbError::Config(_)
            | DbError::Migration { .. }
            | DbError::Encode(_)
            | DbError::Unexpected { .. } => false,
        }
    }

    /// True when running the same work later can succeed: the database is unavailable, or
    /// refused for a reason of the moment (a timeout, a lock it could not get, a conflict
    /// with a concurrent statement, resources it ran short of). Everything else — data the
    /// database cannot take, a statement it cannot run — fails again the same way, so the
    /// caller isolates the input that causes it.
    pub fn is_transient(&self) -> bool {
        if self.is_unavailable() {
            return true;
        }
        match self.sqlstate() {
            Some(c) => {
                matches!(c, "57014" | "55P03" | "40001" | "40P01" | "55006")
                    || c.starts_with("53")
                    || c.starts_with("58")
            }
            None => false,
        }
    }

    /// True when the statement may have run on the server although the call failed (the
    /// connection broke or the client stopped waiting after sending it): its effects, if
    /// any, are unknown. Acquire and connect failures happen before anything is sent.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            DbError::AcquireTimeout { .. } | DbError::Connect { .. } => false,
            DbError::OperationTimeout { .. } => true,
            DbError::Query(e) => e.is_closed() || e.code().is_none(),
            DbError::Config(_)
            | DbError::Migration { .. }
            | DbError::Encode(_)
            | DbError::Unexpected { .. } => false,
        }
    }

    /// The SQLSTATE of a statement error, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbError::Query(e) => e.code().map(|c| c.code()),
            DbError::Migration { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }
}
