//! `floodgate-local`: the Floodgate topology on one machine — the services (PostgreSQL
//! primary + replica, PgBouncer, moto), and the commands that run on them.

pub mod bench;
pub mod install;
pub mod process;
pub mod services;

pub use services::{LocalStack, StackOptions};
