//! Observability: JSON logs through `tracing`, the format CloudWatch Logs Insights queries.
//!
//! Rule for every log line in Floodgate: notification ids and message ids, never email
//! addresses, personalisation, API keys or tokens (DEVELOPERS.md, non-negotiable 6).

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber once per process (later calls are no-ops, so tests and
/// the in-process local stack can call it freely). `RUST_LOG` sets the level (default info).
pub fn init(function: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let installed = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .try_init()
        .is_ok();
    if installed {
        tracing::info!(function, "floodgate function starting");
    }
}
