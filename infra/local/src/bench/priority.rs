//! `floodgate-local bench-priority`: priority mail during a backfill. A steady stream of
//! priority single emails through the whole local topology, once alone (baseline) and once
//! beside a 50,000-row bulk job posted at the same moment, in one run; each email's time
//! from the start of its POST to SES (the simulator) accepting it.

use crate::demo::DemoOptions;
use crate::demo::blast::BlastMix;
use crate::report::Percentiles;
use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct PriorityBenchOptions {
    /// Priority single emails per run.
    pub priority: usize,
    /// Their rate (requests/s).
    pub rate: f64,
    /// The bulk job beside them in the second run (one request: Notify's most rows).
    pub bulk_rows: usize,
    pub ses_account_rate: f64,
}

pub async fn bench_priority(opts: &PriorityBenchOptions) -> Result<(Percentiles, Percentiles)> {
    let mut runs = Vec::new();
    for bulk_rows in [0, opts.bulk_rows] {
        let r = super::checked_demo(
            &format!("bulk {bulk_rows}"),
            DemoOptions {
                notifications: opts.priority,
                rate: Some(opts.rate),
                concurrency: 4,
                mix: BlastMix::PriorityBeside { bulk_rows },
                bulk_rows: bulk_rows.max(1),
                ses_account_rate: opts.ses_account_rate,
                ..DemoOptions::default()
            },
        )
        .await?;
        let p = r
            .priority_to_ses
            .context("the simulator records no acceptance times")?;
        println!(
            "priority beside {bulk_rows:>6} bulk rows: POST -> SES p50 {:>7.1} ms  p99 {:>7.1} ms  (n={}; sent {:.0}/s overall, drain {:.1} s)",
            p.p50_ms, p.p99_ms, p.count, r.sent_per_s, r.drain_seconds
        );
        runs.push(p);
    }
    let (alone, beside) = (runs[0], runs[1]);
    println!(
        "priority_p99_alone_ms={:.1} priority_p99_beside_bulk_ms={:.1} beside_vs_alone={:.2} (goals: <= 2, and <= 1000 ms)",
        alone.p99_ms,
        beside.p99_ms,
        beside.p99_ms / alone.p99_ms.max(1e-6)
    );
    Ok((alone, beside))
}
