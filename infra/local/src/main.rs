//! `floodgate-local`: run Floodgate's topology on one machine. This file only parses the
//! command line and dispatches; the library's folders hold the parts.

use anyhow::Result;
use clap::{Parser, Subcommand};
use floodgate_local::bench::persist::{BenchOptions, bench_persist};
use floodgate_local::demo::blast::{BlastOptions, BlastProgress, ProcessTypeTemplates, run_blast};
use floodgate_local::demo::{DemoOptions, Outage, demo};
use floodgate_local::services::lifecycle;
use floodgate_local::topology::BudgetRule;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

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
        /// State folder (kept between runs; gitignored).
        #[arg(long, default_value = ".floodgate")]
        state_dir: PathBuf,
        /// Stay in the foreground until Ctrl-C (otherwise `up` returns and `down` stops).
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the services `up` started.
    Down {
        #[arg(long, default_value = ".floodgate")]
        state_dir: PathBuf,
    },
    /// Services, the five functions in-process and the HTTP front, in the foreground, for
    /// manual use with curl or a Notify client. Prints a demo API key and template ids.
    Run {
        #[arg(long, default_value = ".floodgate")]
        state_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Use SQS and SES at this endpoint (`moto` starts one) instead of the embedded ones.
        #[arg(long)]
        aws_endpoint: Option<String>,
    },
    /// The main job: start everything, push a blast through the HTTP API, print a report
    /// and write report.json and report.png into the state folder.
    Demo {
        #[arg(long, default_value_t = 20_000)]
        notifications: usize,
        #[arg(long, default_value = ".floodgate")]
        state_dir: PathBuf,
        /// Use SQS and SES at this endpoint (`moto` starts one) instead of the embedded ones.
        #[arg(long)]
        aws_endpoint: Option<String>,
        /// Fraction of SES calls the simulator throttles (0.0–1.0).
        #[arg(long, default_value_t = 0.0)]
        throttle: f64,
        /// Deliver every n-th queue message twice (0: never).
        #[arg(long, default_value_t = 0)]
        duplicate_every: u64,
        /// Stop the primary this many seconds into the blast…
        #[arg(long)]
        outage_after: Option<u64>,
        /// …for this many seconds.
        #[arg(long, default_value_t = 10)]
        outage_seconds: u64,
        /// Concurrent single-email requests.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Visibility timeout of every queue in seconds (default: 6 × the consumer's timeout).
        #[arg(long)]
        visibility_timeout: Option<u64>,
        /// The SES account's sending rate in emails/s, shared by every `send` instance
        /// (Terraform ships 14, a new production account's quota).
        #[arg(long, default_value_t = 2_000.0)]
        ses_account_rate: f64,
        /// How `send` instances share that rate: `shared` (one budget, as shipped) or
        /// `split` (each at an even share).
        #[arg(long, value_enum, default_value = "shared")]
        budget: BudgetRule,
        /// Run the pipeline this many times faster: every interval of the knobs divided by
        /// it (counts unchanged). Scale the SES rate with it to keep its ratios.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Fraction of callbacks the local receiver refuses with a 500 (each is retried
        /// after 5 minutes ÷ time scale).
        #[arg(long, default_value_t = 0.0)]
        callback_failures: f64,
    },
    /// The reliability scoreboard: each fault scenario against the whole local topology
    /// with the shipped knobs; one row per fault (lost, duplicates, dead letters, stuck).
    Faults {
        /// Run only the scenarios whose name contains this.
        #[arg(long)]
        scenario: Option<String>,
        #[arg(long, default_value = ".floodgate/faults")]
        report_dir: PathBuf,
    },
    /// A load generator for any deployment (the local front or API Gateway).
    Blast {
        #[arg(long)]
        api: String,
        /// An API key as issued: <name>-<service_id>-<secret>.
        #[arg(long, env = "FLOODGATE_API_KEY")]
        key: String,
        #[arg(long)]
        template_priority: Uuid,
        #[arg(long)]
        template_normal: Uuid,
        #[arg(long)]
        template_bulk: Uuid,
        #[arg(long, default_value_t = 2_000)]
        notifications: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Single-email requests per second (default: as fast as the concurrency allows).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 1_000)]
        bulk_rows: usize,
        #[arg(long, default_value_t = 20.0)]
        critical_reads_per_s: f64,
    },
    /// Benchmark the persist write path against one-commit-per-row, 10-per-transaction
    /// and COPY. The last line holds the ratios.
    BenchPersist {
        #[arg(long, default_value_t = 100_000)]
        notifications: usize,
        #[arg(long, default_value_t = 10_000)]
        per_row_sample: usize,
        /// Handler/COPY pairs after the table (the ratio reported is the median pair).
        #[arg(long, default_value_t = 4)]
        extra_pairs: usize,
    },
    /// Cold start per function: process start → first request for an event, against a
    /// local stand-in for the Lambda runtime API (release binaries of the functions).
    BenchColdStart {
        /// Folder of the function binaries (default: $CARGO_TARGET_DIR/release).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 7)]
        runs: usize,
    },
    /// What limits and idempotency cost a request: the ingest handler with a free store
    /// (baseline), the embedded limit store without and with an Idempotency-Key, and
    /// (with --moto) the DynamoDB adapter on moto.
    BenchLimits {
        #[arg(long, default_value_t = 5_000)]
        requests: usize,
        #[arg(long)]
        moto: bool,
    },
    /// Priority mail during a backfill: a steady stream of priority emails alone
    /// (baseline), then beside a 50,000-row bulk job; POST → SES accepted p99 of each.
    BenchPriority {
        #[arg(long, default_value_t = 300)]
        priority: usize,
        /// Priority requests per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long, default_value_t = 50_000)]
        bulk_rows: usize,
        #[arg(long, default_value_t = 2_000.0)]
        ses_account_rate: f64,
    },
    /// How much of the SES account's rate the pipeline uses with a backlog (the demo's
    /// lane mix): each `send` instance at an even share (baseline), then the shared
    /// budget, in one run.
    BenchBudget {
        #[arg(long, default_value_t = 10_000)]
        notifications: usize,
        /// Low enough that the machine is not what limits sending.
        #[arg(long, default_value_t = 300.0)]
        ses_account_rate: f64,
    },
    /// Critical reads during the demo's blast against idle, as everything shares this
    /// machine and with the pipeline side at a lower CPU priority (what AWS separates), in
    /// one run; with the status lane's acquire wait.
    BenchCriticalReads {
        #[arg(long, default_value_t = 20_000)]
        notifications: usize,
    },
    /// What one deployment sustains per lane and in total, its bound, its cost per million
    /// emails line by line, and the settings for 10 million emails an hour, from
    /// per-invocation durations of the real handlers measured on this machine.
    Capacity {
        /// AWS prices (region, as-of date, a source per price).
        #[arg(long, default_value = "infra/prices.json")]
        prices: PathBuf,
        /// Where to write the chart.
        #[arg(long, default_value = "infra/local/capacity.png")]
        chart: PathBuf,
        /// Invocations timed per function, lane and batch size (fewer: a shorter run).
        #[arg(long, default_value_t = 10)]
        invocations: usize,
        /// Rows per bulk request.
        #[arg(long, default_value_t = 1_000)]
        bulk_rows: usize,
        /// One SES SendEmail round trip from Lambda, in ms (an estimate: the simulator
        /// answers at once).
        #[arg(long, default_value_t = 40.0)]
        ses_call_ms: f64,
        /// Emails a month at which the fixed costs are also amortised.
        #[arg(long, default_value_t = 10_000_000.0)]
        monthly_volume: f64,
    },
    /// Benchmark the ingest handler: µs of CPU per accepted notification, single and bulk
    /// requests (embedded queue, warm key/template cache).
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
        Command::Up {
            state_dir,
            foreground,
        } => lifecycle::up(&std::path::absolute(&state_dir)?, foreground).await?,
        Command::Down { state_dir } => lifecycle::down(&std::path::absolute(&state_dir)?)?,
        Command::Run {
            state_dir,
            listen,
            aws_endpoint,
        } => {
            floodgate_local::topology::run::run(
                std::path::absolute(&state_dir)?,
                listen,
                aws_endpoint,
            )
            .await?
        }
        Command::Demo {
            notifications,
            state_dir,
            aws_endpoint,
            throttle,
            duplicate_every,
            outage_after,
            outage_seconds,
            concurrency,
            visibility_timeout,
            ses_account_rate,
            budget,
            time_scale,
            callback_failures,
        } => {
            let state_dir = std::path::absolute(&state_dir)?;
            lifecycle::refuse_if_up(&state_dir)?;
            let outcome = demo(DemoOptions {
                notifications,
                state_dir: Some(state_dir.join("services")),
                report_dir: state_dir.clone(),
                aws_endpoint,
                throttle_fraction: throttle,
                duplicate_every,
                visibility_timeout: visibility_timeout.map(Duration::from_secs),
                outage: outage_after.map(|a| Outage {
                    after: Duration::from_secs(a),
                    length: Duration::from_secs(outage_seconds),
                }),
                concurrency,
                ses_account_rate,
                budget,
                time_scale,
                callback_failures: Some(callback_failures),
                ..DemoOptions::default()
            })
            .await?;
            outcome.print(&state_dir)?;
        }
        Command::Faults {
            scenario,
            report_dir,
        } => {
            floodgate_local::demo::faults::run_matching(
                scenario.as_deref(),
                &std::path::absolute(&report_dir)?,
            )
            .await?;
        }
        Command::Blast {
            api,
            key,
            template_priority,
            template_normal,
            template_bulk,
            notifications,
            concurrency,
            rate,
            bulk_rows,
            critical_reads_per_s,
        } => {
            let progress = Arc::new(BlastProgress::default());
            let r = run_blast(
                &BlastOptions {
                    api,
                    key,
                    templates: ProcessTypeTemplates {
                        priority: template_priority,
                        normal: template_normal,
                        bulk: template_bulk,
                    },
                    notifications,
                    concurrency,
                    rate,
                    bulk_rows,
                    critical_reads_per_s,
                    idle_baseline: Duration::from_secs(5),
                    mix: floodgate_local::demo::blast::BlastMix::Demo,
                },
                progress,
                std::future::ready(()),
            )
            .await?;
            r.print_summary();
        }
        Command::BenchPersist {
            notifications,
            per_row_sample,
            extra_pairs,
        } => {
            bench_persist(BenchOptions {
                notifications,
                per_row_sample,
                extra_pairs,
            })
            .await?;
        }
        Command::BenchColdStart { bin_dir, runs } => {
            let dir = bin_dir.unwrap_or_else(|| {
                PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
                    .join("release")
            });
            floodgate_local::bench::cold::bench_cold_start(&dir, runs).await?;
        }
        Command::BenchPriority {
            priority,
            rate,
            bulk_rows,
            ses_account_rate,
        } => {
            floodgate_local::bench::priority::bench_priority(
                &floodgate_local::bench::priority::PriorityBenchOptions {
                    priority,
                    rate,
                    bulk_rows,
                    ses_account_rate,
                },
            )
            .await?;
        }
        Command::BenchBudget {
            notifications,
            ses_account_rate,
        } => {
            floodgate_local::bench::budget::bench_budget(
                &floodgate_local::bench::budget::BudgetBenchOptions {
                    notifications,
                    ses_account_rate,
                },
            )
            .await?;
        }
        Command::BenchCriticalReads { notifications } => {
            floodgate_local::bench::reads::bench_critical_reads(
                &floodgate_local::bench::reads::ReadsBenchOptions { notifications },
            )
            .await?;
        }
        Command::BenchLimits { requests, moto } => {
            floodgate_local::bench::limits::bench_limits(
                floodgate_local::bench::limits::LimitsBenchOptions { requests, moto },
            )
            .await?;
        }
        Command::Capacity {
            prices,
            chart,
            invocations,
            bulk_rows,
            ses_call_ms,
            monthly_volume,
        } => {
            use floodgate_local::capacity::{CapacityOptions, capacity_command, measure, model};
            capacity_command(CapacityOptions {
                prices,
                chart: Some(std::path::absolute(&chart)?),
                measure: measure::MeasureOptions {
                    invocations,
                    bulk_rows,
                },
                assumptions: model::Assumptions {
                    ses_call_ms,
                    monthly_volume,
                    bulk_rows: bulk_rows as u32,
                    ..model::Assumptions::default()
                },
            })
            .await?;
        }
        Command::BenchIngest {
            single_requests,
            bulk_requests,
            bulk_rows,
        } => {
            floodgate_local::bench::ingest::bench_ingest(
                floodgate_local::bench::ingest::IngestBenchOptions {
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
