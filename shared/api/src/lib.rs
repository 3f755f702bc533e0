//! What the two API functions (`ingest`, `status`) share: the Notify error shape, API
//! Gateway HTTP API (payload 2.0) plumbing, and the per-instance cache of services, API keys
//! and templates read from the reader lane. A crate of its own so neither function depends
//! on the other, and the local HTTP front can use the same request/response code.

pub mod cache;
pub mod catalog;
pub mod error;
pub mod gateway;
pub mod job;

pub use cache::CachePolicy;
pub use catalog::{ApiCatalog, Caller, ServiceEntry};
pub use error::ApiError;
pub use job::{JobFields, job_json, job_status};

/// The API's contract, OpenAPI 3.1 (the local front serves it at `GET /openapi.yaml`; a
/// schemathesis run against the front keeps it true).
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// Notify's timestamp format: `2024-01-31T12:00:00.123456Z`.
pub fn notify_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The encryption key of API key secrets, from `FLOODGATE_API_KEY_ENCRYPTION_KEY`.
pub fn secret_box_from_env() -> Result<floodgate_core::auth::SecretBox, String> {
    floodgate_core::auth::SecretBox::from_env()
}
