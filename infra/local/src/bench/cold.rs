//! `floodgate-local bench-cold-start`: for each function binary, the time from process
//! start to its first request for an event (`GET /runtime/invocation/next` on a local
//! stand-in for the Lambda runtime API) — what a cold start costs before the handler runs.
//! Lanes open no connection until first use, so no database is needed.

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::routing::get;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const FUNCTIONS: [&str; 6] = ["ingest", "status", "persist", "send", "receipts", "admin"];

/// One start of `binary`: milliseconds until it asked for its first event.
async fn one_start(binary: &Path, function: &str) -> Result<f64> {
    let (tx, mut rx) = mpsc::channel::<Instant>(1);
    let app = Router::new().route(
        "/2018-06-01/runtime/invocation/next",
        get(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Instant::now()).await;
                // Never answer: the function waits here, as it would between invocations.
                std::future::pending::<()>().await;
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let unused_db = "postgres://floodgate@127.0.0.1:9/floodgate";
    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("floodgate-{function}"))
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("FLOODGATE_WRITER_URL", unused_db)
        .env("FLOODGATE_READER_URL", unused_db)
        .env(
            "FLOODGATE_API_KEY_ENCRYPTION_KEY",
            floodgate_core::auth::generate_encryption_key(),
        )
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let asked = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
    let _ = child.kill().await;
    server.abort();
    match asked {
        Ok(Some(at)) => Ok(at.duration_since(started).as_secs_f64() * 1000.0),
        _ => bail!("{function} never asked for an event within 20 s"),
    }
}

/// Median over `runs` starts of each function's binary in `bin_dir`.
pub async fn bench_cold_start(bin_dir: &Path, runs: usize) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    println!(
        "bench-cold-start: {runs} starts per function, binaries from {}",
        bin_dir.display()
    );
    for f in FUNCTIONS {
        let binary: PathBuf = bin_dir.join(format!("floodgate-{f}"));
        if !binary.exists() {
            bail!(
                "{} is missing: cargo build --release -p floodgate-{f}",
                binary.display()
            );
        }
        let mut ms = Vec::new();
        for _ in 0..runs.max(1) {
            ms.push(one_start(&binary, f).await?);
        }
        ms.sort_by(f64::total_cmp);
        let median = ms[ms.len() / 2];
        println!(
            "{f:<10} median={median:>7.1} ms  min={:>7.1} ms  max={:>7.1} ms",
            ms[0],
            ms[ms.len() - 1]
        );
        out.push((f.to_string(), median));
    }
    Ok(out)
}
