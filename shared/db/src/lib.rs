//! Floodgate's database side: the bounded [`WriterLane`] and [`ReaderLane`], the versioned
//! migrations, and the SQL of each use case.
//!
//! Every statement is sent unnamed (`query_typed` / `execute_typed` / simple queries): named
//! prepared statements break behind PgBouncer 1.18 in transaction mode and pin sessions on
//! RDS Proxy. No code here runs `SET`, `PREPARE`, `LISTEN`, temporary tables or
//! session advisory locks.

pub mod callbacks;
pub mod catalog;
pub mod error;
pub mod lane;
pub mod migrate;
pub mod notifications;
pub mod roles;
pub mod sending;

pub use error::DbError;
pub use lane::{
    Lane, LaneConfig, LaneConnection, LaneCounters, LaneCountersSnapshot, LaneKind, ReaderLane,
    WriterLane,
};
pub use migrate::{MIGRATIONS, Migration, PartitionMaintenance, maintain_partitions, migrate};
pub use notifications::{InsertOutcome, ensure_partitions, insert_notifications};

/// Re-exported so callers name types without depending on tokio-postgres directly.
pub use tokio_postgres;
