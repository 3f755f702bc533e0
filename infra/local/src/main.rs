//! `floodgate-local`: run Floodgate's topology on one machine.

use anyhow::Result;
use clap::{Parser, Subcommand};
use floodgate_local::bench::{BenchOptions, bench_persist};
use floodgate_local::{LocalStack, StackOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Floodgate on one machine: local services, benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing, start PostgreSQL primary + replica, PgBouncer (writer and
    /// reader) and moto, print their URLs, and keep them running until Ctrl-C.
    Up {
        /// State folder (kept between runs).
        #[arg(long, default_value = ".floodgate")]
        state_dir: PathBuf,
    },
    /// Benchmark the persist write path against one-commit-per-row, 10-per-transaction
    /// and COPY (SPEC §8). The last line holds the ratios.
    BenchPersist {
        #[arg(long, default_value_t = 100_000)]
        notifications: usize,
        #[arg(long, default_value_t = 10_000)]
        per_row_sample: usize,
    },
    /// Benchmark the ingest handler: µs of CPU per accepted notification, single and bulk
    /// requests (embedded queue, warm key/template cache; SPEC §8).
    BenchIngest {
        #[arg(long, default_value_t = 5_000)]
        single_requests: usize,
        #[arg(long, default_value_t = 3)]
        bulk_requests: usize,
        #[arg(long, default_value_t = 50_000)]
        bulk_rows: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Up { state_dir } => {
            let stack = LocalStack::start(StackOptions {
                moto: true,
                durable: true,
                state_dir: Some(std::path::absolute(&state_dir)?),
                ..StackOptions::default()
            })
            .await?;
            println!("FLOODGATE_WRITER_URL={}", stack.writer_url());
            println!("FLOODGATE_READER_URL={}", stack.reader_url());
            println!("primary (direct): {}", stack.primary_url());
            println!("replica (direct): {}", stack.replica_url());
            if let Some(m) = stack.moto_endpoint() {
                println!("AWS_ENDPOINT_URL={m}");
            }
            println!("state: {} — Ctrl-C stops everything", stack.dir.display());
            tokio::signal::ctrl_c().await?;
            drop(stack);
        }
        Command::BenchPersist {
            notifications,
            per_row_sample,
        } => {
            bench_persist(BenchOptions {
                notifications,
                per_row_sample,
            })
            .await?;
        }
        Command::BenchIngest {
            single_requests,
            bulk_requests,
            bulk_rows,
        } => {
            floodgate_local::bench_ingest::bench_ingest(
                floodgate_local::bench_ingest::IngestBenchOptions {
                    single_requests,
                    bulk_requests,
                    bulk_rows,
                },
            )
            .await?;
        }
    }
    Ok(())
}
