//! Floodgate's database side: the bounded [`WriterLane`] and [`ReaderLane`], the versioned
//! migrations, and the SQL of each use case.
//!
//! Every statement is sent unnamed (`query_typed` / `execute_typed` / simple queries): named
//! prepared statements break behind PgBouncer 1.18 in transaction mode and pin sessions on
//! RDS Proxy. No code here runs `SET`, `PREPARE`, `LISTEN`, temporary tables or
//! session advisory locks.
//!
//! Which lane a statement may run on is a type: the SQL that changes data takes a
//! [`WriterConnection`], the API's reads take a [`ReaderConnection`], and only the lanes hand
//! them out. A read path holding only a reader cannot write:
//!
//! ```compile_fail
//! async fn on_a_replica(reader: &floodgate_db::ReaderLane, batch: &[floodgate_core::IntakeNotification]) {
//!     let conn = reader.acquire().await.unwrap();
//!     let _ = floodgate_db::insert_notifications(&conn, batch).await; // expects a WriterConnection
//! }
//! ```
//!
//! while the same call on a writer compiles:
//!
//! ```no_run
//! async fn on_the_writer(writer: &floodgate_db::WriterLane, batch: &[floodgate_core::IntakeNotification]) {
//!     let conn = writer.acquire().await.unwrap();
//!     let _ = floodgate_db::insert_notifications(&conn, batch).await;
//! }
//! ```

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
    Lane, LaneConfig, LaneConnection, LaneCounters, LaneCountersSnapshot, LaneKind, ReadConnection,
    ReaderConnection, ReaderLane, WriterConnection, WriterLane,
};
pub use migrate::{MIGRATIONS, Migration, PartitionMaintenance, maintain_partitions, migrate};
pub use notifications::{InsertOutcome, InsertPath, ensure_partitions, insert_notifications};

/// Re-exported so callers name types without depending on tokio-postgres directly.
pub use tokio_postgres;
