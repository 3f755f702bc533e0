//! `floodgate-local`: the Floodgate topology on one machine — the services (PostgreSQL
//! primary + replica, PgBouncer, moto), and the commands that run on them.

pub mod bench;
pub mod bench_cold;
pub mod bench_ingest;
pub mod blast;
pub mod chart;
pub mod demo;
pub mod esm;
pub mod faults;
pub mod front;
pub mod install;
pub mod process;
pub mod receiver;
pub mod report;
pub mod services;
pub mod topology;

pub use services::{LocalStack, StackOptions};
