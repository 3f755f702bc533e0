//! `floodgate-local bench-critical-reads`: critical reads (status by id) during the demo's
//! blast, against the same reads while the stack is idle, twice in one run: as everything
//! runs on this machine (unmodelled), and with what AWS puts on other compute — the
//! queue-driven functions, the primary and its proxy — at a lower CPU priority than the API
//! functions, the replica and the load (modelled). Each run also gives the status reader
//! lane's acquire wait during the blast, the part of a read spent waiting for a connection.

use crate::demo::DemoOptions;
use crate::report::{LaneWait, Percentiles};
use anyhow::{Context, Result};

#[derive(Debug, Clone)]
pub struct ReadsBenchOptions {
    pub notifications: usize,
}

/// One run's critical reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadsRun {
    pub idle: Percentiles,
    pub blast: Percentiles,
    pub lane_wait: LaneWait,
}

impl ReadsRun {
    pub fn p99_ratio(&self) -> f64 {
        self.blast.p99_ms / self.idle.p99_ms.max(1e-6)
    }
}

pub async fn bench_critical_reads(opts: &ReadsBenchOptions) -> Result<(ReadsRun, ReadsRun)> {
    let mut runs = Vec::new();
    for (name, separate_compute) in [("unmodelled", false), ("modelled", true)] {
        let r = super::checked_demo(
            name,
            DemoOptions {
                notifications: opts.notifications,
                separate_compute,
                ..DemoOptions::default()
            },
        )
        .await?;
        let run = ReadsRun {
            idle: r.critical_read_idle,
            blast: r.critical_read_blast,
            lane_wait: r.read_lane_wait.context("the demo reports no lane wait")?,
        };
        println!(
            "{name:<10} critical reads p99 idle {:>6.1} ms  blast {:>6.1} ms  ratio {:>5.2}  \
             (n={}/{}); lane wait in the blast p99 <= {} ms, mean {:.3} ms over {} acquires; \
             {:.0} emails/s end to end",
            run.idle.p99_ms,
            run.blast.p99_ms,
            run.p99_ratio(),
            run.idle.count,
            run.blast.count,
            run.lane_wait.p99_ms_text(),
            run.lane_wait.mean_us / 1000.0,
            run.lane_wait.acquires,
            r.sent_per_s,
        );
        runs.push(run);
    }
    let (unmodelled, modelled) = (runs[0], runs[1]);
    println!(
        "critical_p99_ratio_modelled={:.2} critical_p99_ratio_unmodelled={:.2} \
         lane_wait_p99_at_most_ms={} (goals: modelled ratio <= 2, lane wait p99 <= 1 ms)",
        modelled.p99_ratio(),
        unmodelled.p99_ratio(),
        [modelled.lane_wait, unmodelled.lane_wait]
            .into_iter()
            .max_by_key(|w| w.p99_at_most_us)
            .map(|w| w.p99_ms_text())
            .unwrap_or_default(),
    );
    Ok((unmodelled, modelled))
}
