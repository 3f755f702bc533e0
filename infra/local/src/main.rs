//! `floodgate-local`: run Floodgate's topology on one machine.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use floodgate_local::bench::{BenchOptions, bench_persist};
use floodgate_local::blast::{BlastOptions, BlastProgress, ProcessTypeTemplates, run_blast};
use floodgate_local::demo::{DemoOptions, Outage, demo};
use floodgate_local::report::Percentiles;
use floodgate_local::topology::{ApiSide, Pipeline, PipelineOptions};
use floodgate_local::{LocalStack, StackOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
        } => up(&std::path::absolute(&state_dir)?, foreground).await?,
        Command::Down { state_dir } => down(&std::path::absolute(&state_dir)?)?,
        Command::Run {
            state_dir,
            listen,
            aws_endpoint,
        } => run(std::path::absolute(&state_dir)?, listen, aws_endpoint).await?,
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
            time_scale,
            callback_failures,
        } => {
            let state_dir = std::path::absolute(&state_dir)?;
            refuse_if_up(&state_dir)?;
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
                time_scale,
                callback_failures: Some(callback_failures),
                ..DemoOptions::default()
            })
            .await?;
            println!("{}", outcome.report.text());
            if let Some(c) = &outcome.callbacks {
                println!("{}", c.text());
            }
            println!(
                "  {:<34} {}\n  report: {} and {}",
                "dead-letter messages",
                outcome.dead_letters,
                state_dir.join("report.json").display(),
                state_dir.join("report.png").display()
            );
            let r = &outcome.report;
            if r.lost != 0 || r.duplicate_rows != 0 || r.duplicate_sends != 0 {
                bail!("lost or duplicated notifications: see the report");
            }
            if outcome.callbacks.as_ref().is_some_and(|c| c.lost != 0) {
                bail!("lost callbacks: see the report");
            }
        }
        Command::Faults {
            scenario,
            report_dir,
        } => {
            let report_dir = std::path::absolute(&report_dir)?;
            let mut rows = Vec::new();
            for s in floodgate_local::faults::all(&report_dir) {
                if scenario.as_deref().is_some_and(|f| !s.name.contains(f)) {
                    continue;
                }
                eprintln!("== {}: {}", s.name, s.fault);
                rows.push(floodgate_local::faults::run(s).await?);
            }
            print!("{}", floodgate_local::faults::table(&rows));
            if rows.iter().any(|r| !r.holds()) {
                bail!("a fault scenario lost, duplicated, dead-lettered or stranded notifications");
            }
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
                },
                progress,
                std::future::ready(()),
            )
            .await?;
            let (api_l, idle, during) = (
                Percentiles::of(&r.api_latency),
                Percentiles::of(&r.critical_idle),
                Percentiles::of(&r.critical_blast),
            );
            println!(
                "accepted={} rejected={} seconds={:.1} accepted/s={:.0}",
                r.accepted.len(),
                r.rejected,
                r.blast_duration.as_secs_f64(),
                r.accepted.len() as f64 / r.blast_duration.as_secs_f64().max(1e-6)
            );
            println!(
                "api_p50_ms={:.1} api_p99_ms={:.1}",
                api_l.p50_ms, api_l.p99_ms
            );
            println!(
                "critical_idle_p99_ms={:.1} critical_blast_p99_ms={:.1} critical_p99_ratio={:.2}",
                idle.p99_ms,
                during.p99_ms,
                during.p99_ms / idle.p99_ms.max(1e-6)
            );
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
        Command::BenchColdStart { bin_dir, runs } => {
            let dir = bin_dir.unwrap_or_else(|| {
                PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
                    .join("release")
            });
            floodgate_local::bench_cold::bench_cold_start(&dir, runs).await?;
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

fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join("up.pid")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn running_pid(state_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file(state_dir))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&p| alive(p))
}

fn refuse_if_up(state_dir: &Path) -> Result<()> {
    if let Some(pid) = running_pid(state_dir) {
        bail!(
            "services from `up` are running (pid {pid}) on {}: run `down` first",
            state_dir.display()
        );
    }
    Ok(())
}

/// `up`: in the foreground, serve until Ctrl-C or SIGTERM; otherwise start a detached
/// copy of this command in the foreground mode and wait until it reports its URLs.
async fn up(state_dir: &Path, foreground: bool) -> Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let env_file = state_dir.join("services.env");
    if !foreground {
        if let Some(pid) = running_pid(state_dir) {
            println!("already up (pid {pid}):");
            print!("{}", std::fs::read_to_string(&env_file).unwrap_or_default());
            return Ok(());
        }
        let _ = std::fs::remove_file(&env_file);
        let log = std::fs::File::create(state_dir.join("up.log"))?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("up")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--foreground")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // A session of its own: the services outlive this command, not the terminal's
        // Ctrl-C.
        // SAFETY: setsid in the child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the services")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        while !env_file.exists() {
            if std::time::Instant::now() > deadline || !alive(child.id() as i32) {
                bail!(
                    "services did not come up; see {}",
                    state_dir.join("up.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        print!("{}", std::fs::read_to_string(&env_file)?);
        println!("# stop with: floodgate-local down");
        return Ok(());
    }
    let stack = LocalStack::start(StackOptions {
        moto: true,
        durable: true,
        state_dir: Some(state_dir.join("services")),
        ..StackOptions::default()
    })
    .await?;
    std::fs::write(pid_file(state_dir), std::process::id().to_string())?;
    let mut env = format!(
        "FLOODGATE_WRITER_URL={}\nFLOODGATE_READER_URL={}\n# primary (direct): {}\n# replica (direct): {}\n",
        stack.writer_url(),
        stack.reader_url(),
        stack.primary_url(),
        stack.replica_url()
    );
    if let Some(m) = stack.moto_endpoint() {
        env.push_str(&format!("AWS_ENDPOINT_URL={m}\n"));
    }
    std::fs::write(&env_file, &env)?;
    print!("{env}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(stack);
    let _ = std::fs::remove_file(pid_file(state_dir));
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}

fn down(state_dir: &Path) -> Result<()> {
    let Some(pid) = running_pid(state_dir) else {
        println!("nothing is up for {}", state_dir.display());
        return Ok(());
    };
    // SAFETY: signalling the pid `up` recorded.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        bail!("pid {pid} still running after 60 s");
    }
    println!("stopped");
    Ok(())
}

/// `run`: everything in the foreground for manual use.
async fn run(state_dir: PathBuf, listen: SocketAddr, aws_endpoint: Option<String>) -> Result<()> {
    refuse_if_up(&state_dir)?;
    floodgate_obs::init("floodgate-local");
    let moto = aws_endpoint.as_deref() == Some("moto");
    let stack = LocalStack::start(StackOptions {
        moto,
        durable: true,
        state_dir: Some(state_dir.join("services")),
        ..StackOptions::default()
    })
    .await?;
    let endpoint = if moto {
        stack.moto_endpoint()
    } else {
        aws_endpoint
    };
    let admin = floodgate_db::WriterLane::open(floodgate_db::LaneConfig::new(
        floodgate_db::LaneKind::Writer,
        stack.writer_url(),
        "floodgate-admin",
    ))
    .await?;
    floodgate_admin::run(&admin, &floodgate_admin::AdminCommand::Migrate).await?;
    let key_file = state_dir.join("encryption-key");
    let enc = match std::fs::read_to_string(&key_file) {
        Ok(k) => k.trim().to_string(),
        Err(_) => {
            let k = floodgate_core::auth::generate_encryption_key();
            std::fs::write(&key_file, &k)?;
            k
        }
    };
    let secrets = Arc::new(
        floodgate_core::auth::SecretBox::from_base64(&enc).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let (service_id, key, templates, from) = floodgate_local::demo::seed(&admin, &secrets).await?;
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await?;
    let pipeline = Pipeline::start(
        &stack,
        &PipelineOptions {
            aws_endpoint: endpoint,
            sender_identity: Some(from),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let knobs = floodgate_core::Knobs::embedded();
    let api = ApiSide::start(
        &stack,
        &knobs,
        &pipeline.lanes,
        pipeline.queue.clone(),
        secrets,
        listen,
    )
    .await?;
    println!("Floodgate is running at {}", api.url());
    println!("service id:  {service_id}");
    println!("API key:     {key}");
    println!(
        "templates:   priority {} · normal {} · bulk {}",
        templates.priority, templates.normal, templates.bulk
    );
    println!("FLOODGATE_WRITER_URL={}", stack.writer_url());
    println!("FLOODGATE_READER_URL={}", stack.reader_url());
    println!("Ctrl-C stops everything.");
    tokio::signal::ctrl_c().await?;
    api.stop();
    pipeline.stop().await;
    drop(stack);
    Ok(())
}
