//! `floodgate-local faults`: the reliability scoreboard. Each scenario runs the whole
//! topology (the demo's stack, API and pipeline) with one fault injected, under the knobs
//! as shipped (`infra/knobs.json`: batch sizes, concurrency, maxReceiveCount 5), and is
//! judged by the same counts: accepted, stored, sent, lost, duplicated SES sends, dead
//! letters, stuck rows (not final), wall time.
//!
//! Scenarios whose fault lasts minutes in production run time-scaled: every interval of
//! the pipeline (function timeouts, batching windows, visibility timeouts, deferral delays,
//! lane timeouts) divided by the same factor, and the SES rate multiplied by it, so every
//! ratio between them — what one invocation can send, how many receives an outage spans —
//! is the production one.

use crate::demo::{DemoOptions, Outage, demo};
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};

/// One scenario: its name, what it injects, and the demo that runs it.
pub struct Scenario {
    pub name: &'static str,
    pub fault: &'static str,
    /// Dead letters the scenario expects (the deliberately bad messages).
    pub expected_dead_letters: u64,
    pub options: DemoOptions,
}

/// One row of the scoreboard.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRow {
    pub name: &'static str,
    pub accepted: u64,
    pub stored: u64,
    pub sent: u64,
    pub lost: i64,
    pub duplicate_sends: u64,
    pub dead_letters: u64,
    pub expected_dead_letters: u64,
    pub stuck: u64,
    /// Callbacks owed (a final status, a complaint) that never reached the receiver.
    pub callbacks_lost: u64,
    pub wall: Duration,
}

impl FaultRow {
    /// Every goal of the scoreboard: nothing lost, nothing sent twice, no dead letter but
    /// the deliberately bad messages, nothing left short of a final status.
    pub fn holds(&self) -> bool {
        self.lost == 0
            && self.duplicate_sends == 0
            && self.dead_letters == self.expected_dead_letters
            && self.stuck == 0
            && self.callbacks_lost == 0
            && self.stored >= self.accepted
    }
}

/// The SES account rate Terraform ships (a new production account's quota).
pub const SHIPPED_SES_RATE: f64 = 14.0;

/// What `send` claims per invocation today for bulk, at most: the mapping's batch
/// size × the ids one send message carries.
pub fn bulk_claim_per_invocation() -> usize {
    let k = floodgate_core::Knobs::embedded();
    let batch = k
        .event_source_mappings
        .get("send-bulk")
        .map_or(1, |m| m.batch_size as usize);
    batch * k.send_ids_per_message(floodgate_core::ProcessType::Bulk)
}

fn base(report_dir: &Path, notifications: usize) -> DemoOptions {
    DemoOptions {
        notifications,
        report_dir: report_dir.to_path_buf(),
        progress: false,
        idle_baseline: Duration::from_secs(1),
        critical_reads_per_s: 10.0,
        drain_timeout: Duration::from_secs(600),
        concurrency: 8,
        ..DemoOptions::default()
    }
}

/// A bulk job of 5,000 rows (with 5,000 single emails beside it) on an SES budget that
/// lets one `send` invocation send a small fraction of what it may claim: 40 emails/s
/// (a modest production quota) at time scale 10, each instance at its even share (what
/// every instance falls back to while the shared budget's store does not answer: the
/// tightest an instance ever gets). One instance's share is 40/13 ≈ 3/s and its sending
/// window is the 30 s timeout less the 12 s settle reserve, so an invocation can send
/// ≈ 55 of the 1,000 ids a bulk batch carries.
pub fn tight_ses_budget(report_dir: &Path) -> Scenario {
    let scale = 10.0;
    Scenario {
        name: "tight-ses-budget",
        fault: "SES budget: one invocation can send ~5% of a bulk batch",
        expected_dead_letters: 0,
        options: DemoOptions {
            bulk_rows: 5_000,
            ses_account_rate: 40.0 * scale,
            budget: crate::topology::BudgetRule::Split,
            time_scale: scale,
            ..base(report_dir, 10_000)
        },
    }
}

/// The primary stopped for longer than maxReceiveCount × the visibility timeout (5 × 180 s
/// = 15 min in production; 100 s at time scale 10) in the middle of a blast.
pub fn long_primary_outage(report_dir: &Path) -> Scenario {
    let scale = 10.0;
    let knobs = floodgate_core::Knobs::embedded();
    let receives_span = Duration::from_secs(u64::from(
        knobs.sqs.max_receive_count * knobs.visibility_timeout_seconds("persist"),
    ))
    .div_f64(scale);
    Scenario {
        name: "long-primary-outage",
        fault: "primary down longer than maxReceiveCount x visibility timeout",
        expected_dead_letters: 0,
        options: DemoOptions {
            rate: Some(100.0),
            bulk_rows: 500,
            ses_account_rate: 200.0 * scale,
            time_scale: scale,
            outage: Some(Outage {
                after: Duration::from_secs(2),
                length: receives_span + Duration::from_secs(10),
            }),
            ..base(report_dir, 2_000)
        },
    }
}

/// Messages the database cannot store (a NUL in a notification), put on the intake queue
/// past ingest, among a blast: each fails alone and reaches the dead-letter queue; nothing
/// else is lost.
pub fn poisoned_messages(report_dir: &Path) -> Scenario {
    Scenario {
        name: "poisoned-messages",
        fault: "3 intake messages PostgreSQL refuses (NUL), past ingest",
        expected_dead_letters: 3,
        options: DemoOptions {
            poison_messages: 3,
            bulk_rows: 500,
            // Their five receives pass quickly: the visibility timeout scaled by 10 too.
            time_scale: 10.0,
            ses_account_rate: 2_000.0,
            ..base(report_dir, 2_000)
        },
    }
}

/// SQS delivering every 7th message twice and SES throttling 20% of calls.
pub fn duplicates_and_throttling(report_dir: &Path) -> Scenario {
    Scenario {
        name: "duplicates-and-throttling",
        fault: "SQS duplicates every 7th message; SES throttles 20% of calls",
        expected_dead_letters: 0,
        options: DemoOptions {
            duplicate_every: 7,
            throttle_fraction: 0.2,
            bulk_rows: 500,
            time_scale: 10.0,
            ..base(report_dir, 2_000)
        },
    }
}

/// Every scenario, in the scoreboard's order.
pub fn all(report_dir: &Path) -> Vec<Scenario> {
    vec![
        duplicates_and_throttling(report_dir),
        tight_ses_budget(report_dir),
        long_primary_outage(report_dir),
        poisoned_messages(report_dir),
    ]
}

/// Runs one scenario.
pub async fn run(s: Scenario) -> Result<FaultRow> {
    let started = Instant::now();
    let outcome = demo(s.options).await?;
    let r = &outcome.report;
    Ok(FaultRow {
        name: s.name,
        accepted: r.accepted,
        stored: r.persisted,
        sent: r.sent,
        lost: r.lost,
        duplicate_sends: r.duplicate_sends,
        dead_letters: outcome.dead_letters,
        expected_dead_letters: s.expected_dead_letters,
        stuck: r.not_final,
        callbacks_lost: outcome.callbacks.as_ref().map_or(0, |c| c.lost),
        wall: started.elapsed(),
    })
}

/// The scoreboard as a Markdown table.
pub fn table(rows: &[FaultRow]) -> String {
    let mut out = String::from(
        "| scenario | accepted | stored | sent | lost | duplicate sends | dead letters (expected) | stuck | callbacks lost | wall s | holds |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {:.0} | {} |\n",
            r.name,
            r.accepted,
            r.stored,
            r.sent,
            r.lost,
            r.duplicate_sends,
            r.dead_letters,
            r.expected_dead_letters,
            r.stuck,
            r.callbacks_lost,
            r.wall.as_secs_f64(),
            if r.holds() { "yes" } else { "NO" }
        ));
    }
    out
}

/// Runs every scenario whose name contains `filter` (all without one), prints the table,
/// and fails if any scenario did not hold.
pub async fn run_matching(
    filter: Option<&str>,
    report_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let scenario = filter;
    let mut rows = Vec::new();
    for s in all(report_dir) {
        if scenario.is_some_and(|f| !s.name.contains(f)) {
            continue;
        }
        eprintln!("== {}: {}", s.name, s.fault);
        rows.push(run(s).await?);
    }
    print!("{}", table(&rows));
    if rows.iter().any(|r| !r.holds()) {
        anyhow::bail!("a fault scenario lost, duplicated, dead-lettered or stranded notifications");
    }
    Ok(())
}
