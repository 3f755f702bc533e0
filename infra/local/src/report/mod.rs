//! The blast report: a timeline sampled while the blast runs (queue depths, stage counts,
//! server connections, critical-read p99), the final numbers, `report.json` and a PNG
//! timeline drawn with plotters.

pub mod chart;

use crate::demo::blast::{BlastProgress, BlastResult};
use anyhow::{Context, Result};
use floodgate_aws::Queue;
use floodgate_core::QueueName;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::types::Type;
use uuid::Uuid;

/// One point of the timeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub accepted: u64,
    pub persisted: u64,
    pub sent: u64,
    pub final_status: u64,
    pub queue_depth: BTreeMap<String, u64>,
    pub oldest_age_s: BTreeMap<String, f64>,
    pub dead_letters: BTreeMap<String, u64>,
    /// Client backends on the primary / replica (PgBouncer's server connections).
    pub primary_connections: u64,
    pub replica_connections: u64,
    /// Connections open in every function instance's lanes (the proxy's clients).
    pub lane_connections: u64,
    pub critical_read_p99_ms: Option<f64>,
}

/// Where the sampler looks.
#[derive(Clone)]
pub struct SampleSources {
    pub primary_url: String,
    pub replica_url: String,
    pub service_id: Uuid,
    pub queue: Arc<dyn Queue>,
    pub progress: Arc<BlastProgress>,
    pub lane_connections: Arc<dyn Fn() -> u64 + Send + Sync>,
}

/// Samples every `period` until stopped.
pub struct Sampler {
    pub samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn backends(c: &tokio_postgres::Client) -> u64 {
    // Minus this sampler's own session.
    c.query_typed_one(
        "SELECT count(*) - 1 FROM pg_stat_activity WHERE backend_type = 'client backend'",
        &[],
    )
    .await
    .map(|r| r.get::<_, i64>(0).max(0) as u64)
    .unwrap_or(0)
}

fn p99_ms(values: &[u64]) -> Option<f64> {
    percentile_ms(values, 0.99)
}

/// The `q` quantile (nearest rank) of microsecond `values`, in milliseconds.
pub(crate) fn percentile_ms(values: &[u64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let idx = ((v.len() as f64) * q).ceil() as usize;
    Some(v[idx.saturating_sub(1).min(v.len() - 1)] as f64 / 1000.0)
}

impl Sampler {
    pub async fn start(src: SampleSources, period: Duration) -> Result<Sampler> {
        let primary = connect(&src.primary_url)
            .await
            .context("sampler: primary")?;
        let replica = connect(&src.replica_url)
            .await
            .context("sampler: replica")?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let task = {
            let (samples, stop) = (samples.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let mut s = Sample {
                        t_s: started.elapsed().as_secs_f64(),
                        accepted: src.progress.accepted.load(Ordering::Relaxed),
                        ..Sample::default()
                    };
                    if let Ok(row) = primary
                        .query_typed_one(
                            "SELECT count(*), count(*) FILTER (WHERE status <> 'created'),
                                    count(*) FILTER (WHERE status NOT IN ('created', 'sending'))
                             FROM notifications WHERE service_id = $1",
                            &[(&src.service_id, Type::UUID)],
                        )
                        .await
                    {
                        s.persisted = row.get::<_, i64>(0) as u64;
                        s.sent = row.get::<_, i64>(1) as u64;
                        s.final_status = row.get::<_, i64>(2) as u64;
                    }
                    s.primary_connections = backends(&primary).await;
                    s.replica_connections = backends(&replica).await;
                    s.lane_connections = (src.lane_connections)();
                    for q in QueueName::ALL {
                        if let Ok(st) = src.queue.stats(q).await {
                            s.queue_depth
                                .insert(q.as_string(), st.visible + st.in_flight);
                            s.oldest_age_s.insert(
                                q.as_string(),
                                st.oldest_age.map_or(0.0, |a| a.as_secs_f64()),
                            );
                            s.dead_letters.insert(q.as_string(), st.dead_letters);
                        }
                    }
                    let window: Vec<u64> = src
                        .progress
                        .window
                        .lock()
                        .map(|mut w| std::mem::take(&mut *w))
                        .unwrap_or_default();
                    s.critical_read_p99_ms = p99_ms(&window);
                    if let Ok(mut all) = samples.lock() {
                        all.push(s);
                    }
                }
            })
        };
        Ok(Sampler {
            samples,
            stop,
            task,
        })
    }

    /// The latest sample, for progress bars.
    pub fn latest(&self) -> Option<Sample> {
        self.samples.lock().ok().and_then(|s| s.last().cloned())
    }

    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            count: h.len(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }
}

/// POST → SES accepted for the priority notifications of a blast whose POST time is known
/// (not the seeds), from when SES first accepted each (`None`: never sent).
pub fn priority_to_ses(
    accepted: &[crate::demo::blast::Accepted],
    accepted_at: impl Fn(Uuid) -> Option<chrono::DateTime<chrono::Utc>>,
) -> Percentiles {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|e| panic!("{e}")));
    for a in accepted
        .iter()
        .filter(|a| a.process_type == floodgate_core::ProcessType::Priority)
    {
        if let (Some(posted), Some(sent)) = (a.posted_at, accepted_at(a.id)) {
            let micros = (sent - posted).num_microseconds().unwrap_or(i64::MAX);
            let _ = h.record(u64::try_from(micros).unwrap_or(1).max(1));
        }
    }
    Percentiles::of(&h)
}

/// Lane-acquire waits of a function's lanes during the blast: the part of a read's latency
/// spent waiting for a connection (the rest is the query, the network and the CPU).
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct LaneWait {
    pub acquires: u64,
    pub mean_us: f64,
    /// The 99th percentile is at most this (the upper bound of the histogram bucket that
    /// holds it; `u64::MAX` past the last bucket).
    pub p99_at_most_us: Option<u64>,
    /// The longest single wait of the whole run, the idle baseline included.
    pub max_us: u64,
    pub acquire_timeouts: u64,
}

impl LaneWait {
    /// The waits between two snapshots of the same lanes (the blast's start and end).
    pub fn between(
        start: &floodgate_db::LaneCountersSnapshot,
        end: &floodgate_db::LaneCountersSnapshot,
    ) -> Self {
        let acquires = end.acquires.saturating_sub(start.acquires);
        let window = floodgate_db::LaneCountersSnapshot {
            acquire_wait_buckets: end.acquire_wait_buckets_since(start),
            ..Default::default()
        };
        LaneWait {
            acquires,
            mean_us: end
                .acquire_wait_micros
                .saturating_sub(start.acquire_wait_micros) as f64
                / acquires.max(1) as f64,
            p99_at_most_us: window.acquire_wait_quantile_bound_micros(0.99),
            max_us: end.acquire_wait_max_micros,
            acquire_timeouts: end.acquire_timeouts.saturating_sub(start.acquire_timeouts),
        }
    }

    /// The p99 bound in ms as the report prints it.
    pub fn p99_ms_text(&self) -> String {
        match self.p99_at_most_us {
            Some(u64::MAX) => "above 1000".to_string(),
            Some(us) => format!("{:.3}", us as f64 / 1000.0),
            None => "n/a".to_string(),
        }
    }
}

/// The share of the SES account's rate that sending used while there was a backlog.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct SesUse {
    pub account_rate: f64,
    /// Whole seconds between the first and the last second with a send (the edges are
    /// partial seconds and are left out).
    pub busy_seconds: u64,
    pub sent_per_s_busy: f64,
    /// `sent_per_s_busy` ÷ `account_rate`.
    pub budget_use: f64,
    /// The most sends accepted in one second.
    pub peak_second: u64,
    /// Calls SES refused for passing the account's rate.
    pub rate_throttled: u64,
    /// Accepted sends in each second from the first to the last.
    pub per_second: Vec<u64>,
}

impl SesUse {
    /// From accepted sends per second (ascending seconds), counting from second `from`
    /// (the blast's start: sends before it are the seeds, sent before the idle baseline).
    /// `None` with fewer than three seconds of sending (no whole second to judge).
    pub fn of(
        per_second: &[(i64, u64)],
        from: i64,
        account_rate: f64,
        rate_throttled: u64,
    ) -> Option<Self> {
        let per_second: Vec<(i64, u64)> = per_second
            .iter()
            .copied()
            .filter(|(s, _)| *s >= from)
            .collect();
        let (first, last) = (per_second.first()?.0, per_second.last()?.0);
        if last - first < 2 {
            return None;
        }
        let busy: u64 = per_second
            .iter()
            .filter(|(s, _)| *s > first && *s < last)
            .map(|(_, n)| n)
            .sum();
        let seconds = u64::try_from(last - first - 1).ok()?;
        let rate = busy as f64 / seconds as f64;
        Some(SesUse {
            account_rate,
            busy_seconds: seconds,
            sent_per_s_busy: rate,
            budget_use: rate / account_rate.max(1e-9),
            peak_second: per_second.iter().map(|(_, n)| *n).max().unwrap_or(0),
            rate_throttled,
            per_second: (first..=last)
                .map(|s| {
                    per_second
                        .iter()
                        .find(|(t, _)| *t == s)
                        .map_or(0, |(_, n)| *n)
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct QueueSummary {
    pub max_depth: u64,
    pub max_oldest_age_s: f64,
    pub dead_letters: u64,
}

/// The numbers a platform engineer judges Floodgate by.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub requested: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub persisted: u64,
    pub sent: u64,
    pub final_by_status: BTreeMap<String, u64>,
    /// Accepted but not stored: must be 0.
    pub lost: i64,
    /// Rows beyond one per accepted notification, and SES sends beyond one per
    /// notification: both must be 0.
    pub duplicate_rows: u64,
    pub duplicate_sends: u64,
    /// Rows whose final status differs from what their simulator address implies.
    pub wrong_final_status: u64,
    pub not_final: u64,
    pub blast_seconds: f64,
    pub drain_seconds: f64,
    pub accepted_per_s: f64,
    pub persisted_per_s: f64,
    pub sent_per_s: f64,
    pub final_per_s: f64,
    pub api_latency: Percentiles,
    pub critical_read_idle: Percentiles,
    pub critical_read_blast: Percentiles,
    pub critical_read_p99_ratio: f64,
    pub peak_primary_connections: u64,
    pub peak_replica_connections: u64,
    pub peak_lane_connections: u64,
    pub connection_budget: u64,
    pub queues: BTreeMap<String, QueueSummary>,
    pub timeline: Vec<Sample>,
    /// How much of the SES account's rate the sends used (the simulator's counts).
    pub ses: Option<SesUse>,
    /// What the API's reads waited for a reader-lane connection (`status`' lanes).
    pub read_lane_wait: Option<LaneWait>,
    /// Priority single emails from the start of their POST to SES accepting them.
    pub priority_to_ses: Option<Percentiles>,
}

/// Final counts straight from the primary, for one service.
#[derive(Debug, Clone, Default)]
pub struct StoredCounts {
    pub rows: u64,
    pub distinct_ids: u64,
    pub sent: u64,
    pub by_status: BTreeMap<String, u64>,
    pub wrong_final_status: u64,
    pub not_final: u64,
}

/// Counts what the database holds for `service_id`. The expected final status comes from
/// the simulator mailbox in the address (`bounce+12@…` → permanent-failure).
pub async fn stored_counts(primary_url: &str, service_id: Uuid) -> Result<StoredCounts> {
    let c = connect(primary_url).await?;
    let row = c
        .query_typed_one(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE status <> 'created')
             FROM notifications WHERE service_id = $1",
            &[(&service_id, Type::UUID)],
        )
        .await?;
    let mut out = StoredCounts {
        rows: row.get::<_, i64>(0) as u64,
        distinct_ids: row.get::<_, i64>(1) as u64,
        sent: row.get::<_, i64>(2) as u64,
        ..StoredCounts::default()
    };
    let rows = c
        .query_typed(
            "SELECT split_part(email_address, '+', 1) AS mailbox, status, count(*)
             FROM notifications WHERE service_id = $1 GROUP BY 1, 2",
            &[(&service_id, Type::UUID)],
        )
        .await?;
    for r in rows {
        let mailbox: String = r.get(0);
        let status: String = r.get(1);
        let n = r.get::<_, i64>(2) as u64;
        *out.by_status.entry(status.clone()).or_default() += n;
        let expected = floodgate_core::ses_event::SimulatedRecipient::ALL
            .into_iter()
            .find(|o| o.mailbox() == mailbox)
            .map(|o| o.final_status().as_str().to_string());
        if status == "created" || status == "sending" {
            out.not_final += n;
        } else if let Some(e) = expected
            && e != status
        {
            out.wrong_final_status += n;
        }
    }
    Ok(out)
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        requested: u64,
        blast: &BlastResult,
        stored: &StoredCounts,
        duplicate_sends: u64,
        timeline: Vec<Sample>,
        connection_budget: u64,
        drain: Duration,
    ) -> Report {
        let accepted = blast.accepted.len() as u64;
        let blast_s = blast.blast_duration.as_secs_f64().max(1e-6);
        let total_s = (blast.blast_duration + drain).as_secs_f64().max(1e-6);
        let idle = Percentiles::of(&blast.critical_idle);
        let during = Percentiles::of(&blast.critical_blast);
        let mut queues: BTreeMap<String, QueueSummary> = BTreeMap::new();
        for s in &timeline {
            for (q, d) in &s.queue_depth {
                let e = queues.entry(q.clone()).or_default();
                e.max_depth = e.max_depth.max(*d);
                e.max_oldest_age_s = e
                    .max_oldest_age_s
                    .max(s.oldest_age_s.get(q).copied().unwrap_or(0.0));
                e.dead_letters = e
                    .dead_letters
                    .max(s.dead_letters.get(q).copied().unwrap_or(0));
            }
        }
        let final_count = stored.rows - stored.not_final.min(stored.rows);
        Report {
            requested,
            accepted,
            rejected: blast.rejected,
            persisted: stored.distinct_ids,
            sent: stored.sent,
            final_by_status: stored.by_status.clone(),
            lost: accepted as i64 - stored.distinct_ids as i64,
            duplicate_rows: stored.rows.saturating_sub(accepted),
            duplicate_sends,
            wrong_final_status: stored.wrong_final_status,
            not_final: stored.not_final,
            blast_seconds: blast_s,
            drain_seconds: drain.as_secs_f64(),
            accepted_per_s: accepted as f64 / blast_s,
            persisted_per_s: stored.distinct_ids as f64 / total_s,
            sent_per_s: stored.sent as f64 / total_s,
            final_per_s: final_count as f64 / total_s,
            api_latency: Percentiles::of(&blast.api_latency),
            critical_read_idle: idle,
            critical_read_blast: during,
            critical_read_p99_ratio: during.p99_ms / idle.p99_ms.max(1e-6),
            peak_primary_connections: timeline
                .iter()
                .map(|s| s.primary_connections)
                .max()
                .unwrap_or(0),
            peak_replica_connections: timeline
                .iter()
                .map(|s| s.replica_connections)
                .max()
                .unwrap_or(0),
            peak_lane_connections: timeline
                .iter()
                .map(|s| s.lane_connections)
                .max()
                .unwrap_or(0),
            connection_budget,
            queues,
            timeline,
            ses: None,
            read_lane_wait: None,
            priority_to_ses: None,
        }
    }

    /// The report as a person reads it.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let line = |t: &mut String, k: &str, v: String| t.push_str(&format!("  {k:<34} {v}\n"));
        t.push_str("Floodgate blast report\n");
        line(&mut t, "requested", self.requested.to_string());
        line(&mut t, "accepted (201)", self.accepted.to_string());
        line(&mut t, "rejected (non-201)", self.rejected.to_string());
        line(&mut t, "persisted", self.persisted.to_string());
        line(&mut t, "sent (handed to SES)", self.sent.to_string());
        line(
            &mut t,
            "final by status",
            self.final_by_status
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
        line(&mut t, "LOST (accepted - stored)", self.lost.to_string());
        line(
            &mut t,
            "DUPLICATES (rows / SES sends)",
            format!("{} / {}", self.duplicate_rows, self.duplicate_sends),
        );
        line(
            &mut t,
            "wrong final status / not final",
            format!("{} / {}", self.wrong_final_status, self.not_final),
        );
        line(
            &mut t,
            "blast / drain (s)",
            format!("{:.1} / {:.1}", self.blast_seconds, self.drain_seconds),
        );
        line(
            &mut t,
            "throughput /s (accept persist send final)",
            format!(
                "{:.0} {:.0} {:.0} {:.0}",
                self.accepted_per_s, self.persisted_per_s, self.sent_per_s, self.final_per_s
            ),
        );
        line(
            &mut t,
            "API latency p50 / p99 (ms)",
            format!(
                "{:.1} / {:.1}",
                self.api_latency.p50_ms, self.api_latency.p99_ms
            ),
        );
        line(
            &mut t,
            "critical read p50/p99 idle (ms)",
            format!(
                "{:.1} / {:.1} (n={})",
                self.critical_read_idle.p50_ms,
                self.critical_read_idle.p99_ms,
                self.critical_read_idle.count
            ),
        );
        line(
            &mut t,
            "critical read p50/p99 blast (ms)",
            format!(
                "{:.1} / {:.1} (n={})",
                self.critical_read_blast.p50_ms,
                self.critical_read_blast.p99_ms,
                self.critical_read_blast.count
            ),
        );
        line(
            &mut t,
            "critical read p99 ratio (goal <= 2)",
            format!("{:.2}", self.critical_read_p99_ratio),
        );
        line(
            &mut t,
            "peak connections primary/replica",
            format!(
                "{} / {}",
                self.peak_primary_connections, self.peak_replica_connections
            ),
        );
        line(
            &mut t,
            "peak lane connections vs budget",
            format!(
                "{} / {}",
                self.peak_lane_connections, self.connection_budget
            ),
        );
        if let Some(p) = &self.priority_to_ses
            && p.count > 0
        {
            line(
                &mut t,
                "priority POST -> SES p50/p99 (ms)",
                format!("{:.1} / {:.1} (n={})", p.p50_ms, p.p99_ms, p.count),
            );
        }
        if let Some(w) = &self.read_lane_wait {
            let p99 = match w.p99_at_most_us {
                Some(us) if us != u64::MAX => format!("<= {}", w.p99_ms_text()),
                _ => w.p99_ms_text(),
            };
            line(
                &mut t,
                "critical read: lane wait in the blast (ms)",
                format!(
                    "p99 {p99} (goal <= 1), mean {:.3}, over {} acquires; longest of the run {:.3}; {} timeouts",
                    w.mean_us / 1000.0,
                    w.acquires,
                    w.max_us as f64 / 1000.0,
                    w.acquire_timeouts
                ),
            );
            if let Some(us) = w.p99_at_most_us.filter(|&us| us != u64::MAX) {
                line(
                    &mut t,
                    "critical read: p99 blast less lane wait",
                    format!(
                        "at least {:.1} ms of {:.1} ms is query, network and CPU",
                        (self.critical_read_blast.p99_ms - us as f64 / 1000.0).max(0.0),
                        self.critical_read_blast.p99_ms
                    ),
                );
            }
        }
        if let Some(u) = &self.ses {
            line(
                &mut t,
                "SES budget use (goal >= 0.90)",
                format!(
                    "{:.2} ({:.0}/s of {:.0}/s over {} busy s; peak second {}; rate throttles {})",
                    u.budget_use,
                    u.sent_per_s_busy,
                    u.account_rate,
                    u.busy_seconds,
                    u.peak_second,
                    u.rate_throttled
                ),
            );
        }
        for (q, s) in &self.queues {
            line(
                &mut t,
                &format!("queue {q}"),
                format!(
                    "max depth {} oldest {:.1}s DLQ {}",
                    s.max_depth, s.max_oldest_age_s, s.dead_letters
                ),
            );
        }
        t
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::SesUse;

    #[test]
    fn ses_use_counts_whole_seconds_between_the_first_and_the_last() {
        // Partial edges (3 and 7 sends) are left out; a silent second counts as zero.
        let per_second = [(100, 3), (101, 90), (102, 100), (104, 80), (105, 7)];
        let u = SesUse::of(&per_second, 0, 100.0, 0).unwrap();
        assert_eq!(u.busy_seconds, 4);
        assert!((u.sent_per_s_busy - 67.5).abs() < 1e-9);
        assert!((u.budget_use - 0.675).abs() < 1e-9);
        assert_eq!(u.peak_second, 100);
        assert_eq!(u.per_second, vec![3, 90, 100, 0, 80, 7]);
    }

    #[test]
    fn lane_wait_covers_the_window_between_two_snapshots() {
        let mut start = floodgate_db::LaneCountersSnapshot {
            acquires: 10,
            acquire_wait_micros: 5_000,
            acquire_wait_max_micros: 3_000,
            ..Default::default()
        };
        start.acquire_wait_buckets[8] = 10; // the idle baseline: ten waits of ≤ 10 ms
        let mut end = floodgate_db::LaneCountersSnapshot {
            acquires: 14,
            acquire_wait_micros: 6_000,
            acquire_wait_max_micros: 3_000,
            ..Default::default()
        };
        end.acquire_wait_buckets[8] = 10;
        end.acquire_wait_buckets[2] = 4; // the blast: four waits of ≤ 50 µs
        let w = super::LaneWait::between(&start, &end);
        assert_eq!((w.acquires, w.max_us), (4, 3_000));
        assert!((w.mean_us - 250.0).abs() < 1e-9);
        assert_eq!(
            w.p99_at_most_us,
            Some(50),
            "the baseline's waits are not the blast's"
        );
        let none = super::LaneWait::between(&Default::default(), &Default::default());
        assert_eq!((none.mean_us, none.p99_at_most_us), (0.0, None));
    }

    #[test]
    fn ses_use_needs_a_whole_second() {
        assert_eq!(SesUse::of(&[], 0, 10.0, 0), None);
        assert_eq!(SesUse::of(&[(5, 3), (6, 4)], 0, 10.0, 0), None);
        // Sends before `from` (the seeds, before the idle baseline) do not count.
        let u = SesUse::of(&[(1, 9), (5, 3), (6, 10), (7, 4)], 5, 10.0, 0).unwrap();
        assert_eq!((u.busy_seconds, u.per_second.len()), (1, 3));
    }
}
