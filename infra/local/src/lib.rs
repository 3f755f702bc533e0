//! `floodgate-local`: the Floodgate topology on one machine. The folders say where each part
//! lives:
//!
//! - [`services`]: the real services tests and the demo run against (PostgreSQL primary +
//!   streaming replica, PgBouncer in transaction mode for RDS Proxy, moto), how they are
//!   installed, started and stopped;
//! - [`topology`]: the AWS wiring emulated in process — every function instance as Lambda
//!   would run it, the event source mappings ([`topology::esm`]) and the API Gateway front
//!   ([`topology::front`]); the stand-ins for SQS and SES are in `floodgate-emulators`;
//! - [`demo`]: the demo (local stack + blast + report), the blast client, the fault scenarios
//!   and the callback receiver;
//! - [`report`]: the report and its chart;
//! - [`bench`]: the benchmarks (persist vs COPY, cold start, ingest CPU);
//! - [`capacity`]: what one deployment sustains and costs, from durations measured here.

pub mod bench;
pub mod capacity;
pub mod demo;
pub mod report;
pub mod services;
pub mod topology;

pub use services::{LocalStack, StackOptions};
