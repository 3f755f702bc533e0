//! `floodgate-local demo`: the whole topology on this machine and a blast through it,
//! with progress bars and a report (text, `report.json`, `report.png`).

pub mod blast;
pub mod faults;
pub mod receiver;

use crate::demo::blast::{BlastOptions, BlastProgress, ProcessTypeTemplates, run_blast};
use crate::report::{Report, SampleSources, Sampler, stored_counts};
use crate::services::{LocalStack, StackOptions};
use crate::topology::{ApiSide, Pipeline, PipelineOptions};
use anyhow::{Context, Result};
use floodgate_core::Knobs;
use floodgate_db::WriterLane;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A primary outage injected during the blast.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub after: Duration,
    pub length: Duration,
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub notifications: usize,
    /// Service state (kept between runs); a temporary folder when `None`.
    pub state_dir: Option<PathBuf>,
    /// Where `report.json` and `report.png` go.
    pub report_dir: PathBuf,
    /// `None`: embedded queues and the simulator; `Some("moto")`: start moto and use
    /// SQS/SES there; `Some(url)`: an AWS-compatible endpoint.
    pub aws_endpoint: Option<String>,
    pub throttle_fraction: f64,
    pub duplicate_every: u64,
    pub visibility_timeout: Option<Duration>,
    pub outage: Option<Outage>,
    pub concurrency: usize,
    /// Single-email requests per second (`None`: as fast as the concurrency allows).
    pub rate: Option<f64>,
    pub bulk_rows: usize,
    pub critical_reads_per_s: f64,
    pub idle_baseline: Duration,
    pub drain_timeout: Duration,
    pub ses_account_rate: f64,
    /// How `send` instances share the SES rate.
    pub budget: crate::topology::BudgetRule,
    /// The blast's process types.
    pub mix: crate::demo::blast::BlastMix,
    pub listen: SocketAddr,
    pub progress: bool,
    /// Runs the pipeline this many times faster than real time (see
    /// [`PipelineOptions::time_scale`]).
    pub time_scale: f64,
    /// Intake messages carrying a notification PostgreSQL cannot store (a NUL character),
    /// put straight on the intake queue during the blast, past ingest's validation: each
    /// must fail alone and end in the dead-letter queue.
    pub poison_messages: usize,
    /// Service callbacks (delivery status and complaints) to a loopback receiver that
    /// answers 500 to this fraction of calls (`None`: no callbacks). A refused callback is
    /// retried after 5 minutes (scaled by `time_scale`).
    pub callback_failures: Option<f64>,
    /// Model what AWS runs on separate compute: the queue-driven functions, the primary and
    /// its proxy at a lower CPU priority than the API functions, the replica and the load.
    pub separate_compute: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            notifications: 20_000,
            state_dir: None,
            report_dir: PathBuf::from(".floodgate"),
            aws_endpoint: None,
            throttle_fraction: 0.0,
            duplicate_every: 0,
            visibility_timeout: None,
            outage: None,
            concurrency: 16,
            rate: None,
            bulk_rows: 1_000,
            critical_reads_per_s: 40.0,
            idle_baseline: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(600),
            ses_account_rate: 2_000.0,
            budget: crate::topology::BudgetRule::Shared,
            mix: crate::demo::blast::BlastMix::Demo,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            progress: true,
            time_scale: 1.0,
            poison_messages: 0,
            callback_failures: Some(0.0),
            separate_compute: false,
        }
    }
}

/// What `demo` created, for a caller that wants to look further (tests).
pub struct DemoOutcome {
    pub report: Report,
    pub dead_letters: u64,
    pub callbacks: Option<CallbackTally>,
}

impl DemoOutcome {
    /// Prints the report (written under `state_dir`); an error if anything was lost or
    /// duplicated, so the demo command fails.
    pub fn print(&self, state_dir: &std::path::Path) -> anyhow::Result<()> {
        let outcome = self;
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
            anyhow::bail!("lost or duplicated notifications: see the report");
        }
        if r.rejected != 0 {
            anyhow::bail!("{} requests were refused: see the report", r.rejected);
        }
        if outcome.callbacks.as_ref().is_some_and(|c| c.lost != 0) {
            anyhow::bail!("lost callbacks: see the report");
        }
        Ok(())
    }
}

/// The callbacks of a demo run, as the receiver saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackTally {
    /// Notifications with a final status, and complaints recorded: each owes a callback.
    pub expected_status: u64,
    pub expected_complaints: u64,
    /// Distinct notifications / complaints whose callback the receiver accepted.
    pub delivered_status: u64,
    pub delivered_complaints: u64,
    /// Accepted again (at-least-once delivery).
    pub duplicates: u64,
    /// Calls the receiver refused on purpose (each was retried).
    pub retried: u64,
    pub lost: u64,
}

impl CallbackTally {
    pub fn text(&self) -> String {
        format!(
            "  {:<34} {} / {} status, {} / {} complaints (delivered / owed)\n  {:<34} {} lost, {} duplicates, {} refused and retried",
            "callbacks",
            self.delivered_status,
            self.expected_status,
            self.delivered_complaints,
            self.expected_complaints,
            "",
            self.lost,
            self.duplicates,
            self.retried
        )
    }
}

const DEMO_CALLBACK_TOKEN: &str = "floodgate-demo-callback-token";

async fn complaints_recorded(primary_url: &str, service_id: uuid::Uuid) -> Result<u64> {
    let (c, conn) = tokio_postgres::connect(primary_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let row = c
        .query_typed_one(
            "SELECT count(*) FROM complaints WHERE service_id = $1",
            &[(&service_id, tokio_postgres::types::Type::UUID)],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Creates the demo's service, API key and one template per process type through the admin code.
/// The demo service's limits: requests per minute per key type, and emails a day.
pub const DEMO_RATE_LIMIT: u32 = 10_000_000;
pub const DEMO_DAILY_LIMIT: u32 = 100_000_000;

pub async fn seed(
    writer: &WriterLane,
    secrets: &floodgate_core::auth::SecretBox,
) -> Result<(uuid::Uuid, String, ProcessTypeTemplates, String)> {
    let name = format!("floodgate-demo-{}", uuid::Uuid::now_v7().simple());
    let from = "notify@floodgate.example.gov".to_string();
    let service = floodgate_admin::create_service(writer, None, &name, &from).await?;
    // A blast is far above Notify's default limits (3,000 requests a minute): the service
    // is one whose limits its platform team raised for a load test, with `admin set-limits`.
    floodgate_admin::set_limits(
        writer,
        service.id,
        Some(DEMO_RATE_LIMIT),
        Some(DEMO_DAILY_LIMIT),
    )
    .await?;
    let key = floodgate_admin::issue_key(
        writer,
        secrets,
        service.id,
        "demo",
        floodgate_core::KeyType::Normal,
    )
    .await?;
    let mut ids = Vec::new();
    for process_type in floodgate_core::ProcessType::ALL {
        let t = floodgate_admin::put_template(
            writer,
            service.id,
            None,
            &format!("demo {process_type}"),
            "Your reference ((reference_number))",
            "Hello ((name)),\n\nThis is a **Floodgate** demo message on the ((reference_number)) process type.",
            process_type,
        )
        .await?;
        ids.push(t.id);
    }
    Ok((
        service.id,
        key.key,
        ProcessTypeTemplates {
            priority: ids[0],
            normal: ids[1],
            bulk: ids[2],
        },
        from,
    ))
}

fn bars(total: u64, show: bool) -> (MultiProgress, Vec<ProgressBar>) {
    let multi = MultiProgress::new();
    if !show {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos:>7}/{len:7} {per_sec:>12}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let bars = ["accepted", "persisted", "sent", "final"]
        .into_iter()
        .map(|name| {
            let b = multi.add(ProgressBar::new(total));
            b.set_style(style.clone());
            b.set_prefix(name);
            b
        })
        .collect();
    (multi, bars)
}

/// Intake messages of one notification each, whose reference holds a NUL character.
fn poison_bodies(service_id: uuid::Uuid, template_id: uuid::Uuid, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|i| {
            let (id, created_at) = floodgate_core::envelope::new_notification_id();
            let poisoned = floodgate_core::IntakeNotification {
                id,
                service_id,
                template_id,
                template_version: 1,
                process_type: floodgate_core::ProcessType::Normal,
                email_address: "success@simulator.amazonses.com".into(),
                personalisation: Default::default(),
                reference: Some(format!("poison\u{0}{i}")),
                key_type: floodgate_core::envelope::KeyType::Normal,
                api_key_id: None,
                job_id: None,
                job_row_number: None,
                email_reply_to_id: None,
                scheduled_for: None,
                one_click_unsubscribe_url: None,
                job: None,
                created_at,
            };
            floodgate_core::pack_intake(&[poisoned], 262_144).ok()
        })
        .flatten()
        .collect()
}

/// Runs the demo end to end and returns its report.
pub async fn demo(opts: DemoOptions) -> Result<DemoOutcome> {
    let moto = opts.aws_endpoint.as_deref() == Some("moto");
    let pipeline_nice = if opts.separate_compute {
        crate::topology::PIPELINE_NICE
    } else {
        0
    };
    let pipeline_runtime = crate::topology::BackgroundRuntime::at_nice(pipeline_nice)?;
    let mut stack = LocalStack::start(StackOptions {
        moto,
        durable: true,
        state_dir: opts.state_dir.clone(),
        pipeline_nice,
        ..StackOptions::default()
    })
    .await?;
    let endpoint = if moto {
        stack.moto_endpoint()
    } else {
        opts.aws_endpoint.clone()
    };

    // Schema, then the demo's service, key and templates (admin code, writer lane).
    let admin = crate::topology::migrated_admin_lane(&stack).await?;
    let secrets = Arc::new(
        floodgate_core::auth::SecretBox::from_base64(
            &floodgate_core::auth::generate_encryption_key(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let (service_id, key, templates, from) = seed(&admin, &secrets).await?;
    let receiver = match opts.callback_failures {
        Some(fraction) => {
            let r = crate::demo::receiver::CallbackReceiver::start(fraction).await?;
            for (kind, path) in [
                (
                    floodgate_core::callback::CallbackKind::DeliveryStatus,
                    "/ok/status",
                ),
                (
                    floodgate_core::callback::CallbackKind::Complaint,
                    "/ok/complaints",
                ),
            ] {
                floodgate_admin::set_callback(
                    &admin,
                    &secrets,
                    service_id,
                    kind,
                    &r.url(path),
                    DEMO_CALLBACK_TOKEN,
                    true,
                )
                .await?;
            }
            Some(r)
        }
        None => None,
    };
    // The API reads keys and templates from the replica: let it replay the seed first, or
    // the first requests find no such service (and the instance caches that answer).
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await?;

    let pipeline = Pipeline::start(
        &stack,
        &PipelineOptions {
            aws_endpoint: endpoint.clone(),
            ses_account_rate: opts.ses_account_rate,
            budget: opts.budget,
            throttle_fraction: opts.throttle_fraction,
            duplicate_every: opts.duplicate_every,
            visibility_timeout: opts.visibility_timeout,
            sender_identity: Some(from),
            time_scale: opts.time_scale,
            secrets: Some(secrets.clone()),
            runtime: pipeline_runtime.handle(),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let knobs = Knobs::embedded();
    let api = ApiSide::start(
        &stack,
        &knobs,
        &pipeline.lanes,
        pipeline.queue.clone(),
        pipeline.limit_store.clone(),
        secrets,
        opts.listen,
    )
    .await?;
    let demand = knobs.connection_demand();
    let budget = u64::from(demand.writer + demand.reader);

    let progress = Arc::new(BlastProgress::default());
    let lanes = pipeline.lanes.clone();
    let sampler = Sampler::start(
        SampleSources {
            primary_url: stack.primary_url(),
            replica_url: stack.replica_url(),
            service_id,
            queue: pipeline.queue.clone(),
            progress: progress.clone(),
            lane_connections: Arc::new(move || lanes.open_connections()),
        },
        Duration::from_millis(500),
    )
    .await?;

    let seeds = 20u64;
    let total = opts.mix.total(opts.notifications) as u64 + seeds;
    let (_multi, bars) = bars(total, opts.progress);
    let blast_opts = BlastOptions {
        api: api.url(),
        key,
        templates,
        notifications: opts.notifications,
        concurrency: opts.concurrency,
        rate: opts.rate,
        bulk_rows: opts.bulk_rows,
        critical_reads_per_s: opts.critical_reads_per_s,
        idle_baseline: opts.idle_baseline,
        mix: opts.mix,
    };
    // The single-email POSTs start after the idle baseline (the seeds went before it).
    let blast_starts =
        chrono::Utc::now().timestamp() + i64::try_from(opts.idle_baseline.as_secs()).unwrap_or(0);
    // The status lanes' counters when the blast starts, so the wait is the blast's alone.
    let lanes_at_blast = tokio::spawn({
        let (lanes, idle) = (pipeline.lanes.clone(), opts.idle_baseline);
        async move {
            tokio::time::sleep(idle).await;
            lanes.counters_of("status", floodgate_db::LaneKind::Reader)
        }
    });
    let (reads_done_tx, reads_done) = tokio::sync::oneshot::channel::<()>();
    let blast = tokio::spawn({
        let progress = progress.clone();
        async move {
            run_blast(&blast_opts, progress, async move {
                let _ = reads_done.await;
            })
            .await
        }
    });

    if opts.poison_messages > 0 {
        let bodies = poison_bodies(service_id, templates.normal, opts.poison_messages);
        let q = floodgate_core::QueueName::Intake(floodgate_core::ProcessType::Normal);
        let results = floodgate_aws::send_all(
            pipeline.queue.as_ref(),
            q,
            &bodies,
            floodgate_aws::QueueLimits::from_knobs(&Knobs::embedded()),
        )
        .await;
        anyhow::ensure!(results.iter().all(Result::is_ok), "poison not enqueued");
    }

    if let Some(o) = opts.outage {
        tokio::time::sleep(opts.idle_baseline + o.after).await;
        tracing::warn!("outage: stopping the primary for {:?}", o.length);
        stack.stop_primary();
        tokio::time::sleep(o.length).await;
        stack.start_primary().await?;
        tracing::warn!("outage over: primary restarted");
    }

    let update = |bars: &[ProgressBar], sampler: &Sampler| {
        if let Some(s) = sampler.latest() {
            bars[0].set_position(progress.accepted.load(Ordering::Relaxed));
            bars[1].set_position(s.persisted);
            bars[2].set_position(s.sent);
            bars[3].set_position(s.final_status);
        }
    };
    while !progress.sending_done.load(Ordering::SeqCst) && !blast.is_finished() {
        update(&bars, &sampler);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if blast.is_finished() {
        // It ended before finishing its requests: an error to report.
        blast.await.context("blast task")??;
        anyhow::bail!("the blast stopped early");
    }
    let accepted = progress.accepted.load(Ordering::SeqCst);

    // Drain: until every accepted notification is stored and final (sent, with no
    // receipts from a real endpoint) and every queue is empty — or the timeout.
    let drain_started = Instant::now();
    let want_final = pipeline.simulator.is_some();
    loop {
        update(&bars, &sampler);
        let c = stored_counts(&stack.primary_url(), service_id)
            .await
            .unwrap_or_default();
        let done_rows = if want_final {
            c.rows.saturating_sub(c.not_final)
        } else {
            c.sent
        };
        let mut queues_empty = true;
        for q in floodgate_core::QueueName::ALL {
            if let Ok(st) = pipeline.queue.stats(q).await {
                queues_empty &= st.visible + st.in_flight + st.delayed == 0;
            }
        }
        if c.distinct_ids >= accepted && done_rows >= accepted && queues_empty {
            break;
        }
        if drain_started.elapsed() > opts.drain_timeout {
            tracing::warn!("drain timed out");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain = drain_started.elapsed();
    let _ = reads_done_tx.send(());
    let result = blast.await.context("blast task")??;
    if let Some(sim) = &pipeline.simulator {
        sim.settled().await;
    }
    update(&bars, &sampler);
    for b in &bars {
        b.finish();
    }
    let timeline = sampler.stop().await;
    let stored = stored_counts(&stack.primary_url(), service_id).await?;
    let callbacks = match receiver {
        Some(r) => {
            let (status, status_dups, status_retried) = r.tally("/ok/status", "id");
            let (complaints, complaint_dups, complaint_retried) =
                r.tally("/ok/complaints", "complaint_id");
            let expected_status = stored.rows.saturating_sub(stored.not_final);
            let expected_complaints = complaints_recorded(&stack.primary_url(), service_id).await?;
            r.stop();
            Some(CallbackTally {
                expected_status,
                expected_complaints,
                delivered_status: status as u64,
                delivered_complaints: complaints as u64,
                duplicates: (status_dups + complaint_dups) as u64,
                retried: (status_retried + complaint_retried) as u64,
                lost: expected_status.saturating_sub(status as u64)
                    + expected_complaints.saturating_sub(complaints as u64),
            })
        }
        None => None,
    };
    let duplicate_sends: u64 = pipeline
        .simulator
        .as_ref()
        .map(|s| {
            s.accepted()
                .values()
                .map(|&n| u64::from(n.saturating_sub(1)))
                .sum()
        })
        .unwrap_or(0);
    let mut dead_letters = 0;
    for q in floodgate_core::QueueName::ALL {
        if let Ok(st) = pipeline.queue.stats(q).await {
            dead_letters += st.dead_letters;
        }
    }
    let mut report = Report::build(
        total,
        &result,
        &stored,
        duplicate_sends,
        timeline,
        budget,
        drain,
    );
    report.priority_to_ses = pipeline
        .simulator
        .as_ref()
        .map(|s| crate::report::priority_to_ses(&result.accepted, |id| s.accepted_at(id)));
    report.read_lane_wait = Some(crate::report::LaneWait::between(
        &lanes_at_blast.await.unwrap_or_default(),
        &pipeline
            .lanes
            .counters_of("status", floodgate_db::LaneKind::Reader),
    ));
    report.ses = pipeline.simulator.as_ref().and_then(|s| {
        crate::report::SesUse::of(
            &s.accepted_per_second(),
            blast_starts,
            opts.ses_account_rate,
            s.rate_throttled(),
        )
    });
    std::fs::create_dir_all(&opts.report_dir)?;
    report.write_json(&opts.report_dir.join("report.json"))?;
    if let Err(e) = crate::report::chart::draw(&report, &opts.report_dir.join("report.png")) {
        eprintln!("report.png not written: {e:#}");
    }
    api.stop();
    pipeline.stop().await;
    drop(stack);
    Ok(DemoOutcome {
        report,
        dead_letters,
        callbacks,
    })
}
