//! `blast`: a load generator for any Floodgate deployment (the local front or API
//! Gateway). Single-email POSTs with bounded concurrency (and an optional target rate),
//! bulk requests, recipients spread over the SES mailbox simulator's outcomes, and a stream
//! of critical reads (`GET /v2/notifications/{id}` of accepted ids) measured idle, before
//! the blast, and during it.

use anyhow::{Context, Result, bail};
use floodgate_core::ProcessType;
use floodgate_core::ses_event::SimulatedRecipient;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The recipient mix: mostly deliveries, every outcome of the mailbox simulator present.
pub fn recipient_for_index(i: usize) -> SimulatedRecipient {
    match i % 20 {
        0 | 1 => SimulatedRecipient::Bounce,
        2 | 3 => SimulatedRecipient::Ooto,
        4 | 5 => SimulatedRecipient::Complaint,
        6 => SimulatedRecipient::SuppressionList,
        _ => SimulatedRecipient::Success,
    }
}

/// Which process type the `i`-th notification goes to: 10% priority, 40% normal, 50% bulk.
pub fn process_type_for_index(i: usize) -> ProcessType {
    match i % 10 {
        0 => ProcessType::Priority,
        1..=4 => ProcessType::Normal,
        _ => ProcessType::Bulk,
    }
}

#[derive(Debug, Clone)]
pub struct BlastOptions {
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// An API key as handed out: `<name>-<service_id>-<secret>`.
    pub key: String,
    pub templates: ProcessTypeTemplates,
    pub notifications: usize,
    /// Concurrent single-email requests in flight.
    pub concurrency: usize,
    /// Target single-email request rate (requests/s); `None` = as fast as allowed.
    pub rate: Option<f64>,
    /// Rows per bulk request (the bulk process type's notifications are sent this way).
    pub bulk_rows: usize,
    /// Critical reads per second during the idle baseline and the blast.
    pub critical_reads_per_s: f64,
    /// How long the idle baseline lasts.
    pub idle_baseline: Duration,
    /// Which process types the notifications have.
    pub mix: BlastMix,
}

/// The process types of a blast's notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlastMix {
    /// 10% priority, 40% normal (single emails), 50% bulk (in jobs of `bulk_rows`).
    #[default]
    Demo,
    /// Every single email priority, beside `bulk_rows` more notifications in bulk jobs:
    /// urgent mail during a backfill.
    PriorityBeside { bulk_rows: usize },
}

impl BlastMix {
    /// The process type of the `i`th of `n` notifications, bulk ones after the singles.
    fn process_type(self, i: usize, n: usize) -> ProcessType {
        match self {
            BlastMix::Demo => process_type_for_index(i),
            BlastMix::PriorityBeside { .. } if i < n => ProcessType::Priority,
            BlastMix::PriorityBeside { .. } => ProcessType::Bulk,
        }
    }

    /// How many notifications a blast of `n` sends.
    pub fn total(self, n: usize) -> usize {
        match self {
            BlastMix::Demo => n,
            BlastMix::PriorityBeside { bulk_rows } => n + bulk_rows,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ProcessTypeTemplates {
    pub priority: Uuid,
    pub normal: Uuid,
    pub bulk: Uuid,
}

impl ProcessTypeTemplates {
    pub fn for_process_type(&self, process_type: ProcessType) -> Uuid {
        match process_type {
            ProcessType::Priority => self.priority,
            ProcessType::Normal => self.normal,
            ProcessType::Bulk => self.bulk,
        }
    }
}

/// A notification the API accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub id: Uuid,
    pub process_type: ProcessType,
    pub outcome: SimulatedRecipient,
    /// When its POST started (`None` for the seeds, posted before the idle baseline).
    pub posted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Live counters, read by the progress bars and the sampler.
#[derive(Debug, Default)]
pub struct BlastProgress {
    pub accepted: AtomicU64,
    /// Set once every request of the blast has been answered.
    pub sending_done: AtomicBool,
    pub rejected: AtomicU64,
    pub critical_reads: AtomicU64,
    pub critical_read_errors: AtomicU64,
    /// Critical-read latencies of the current sampling window (µs), drained by the sampler.
    pub window: Mutex<Vec<u64>>,
}

#[derive(Debug)]
pub struct BlastResult {
    pub accepted: Vec<Accepted>,
    pub rejected: u64,
    pub api_latency: Histogram<u64>,
    pub critical_idle: Histogram<u64>,
    pub critical_blast: Histogram<u64>,
    pub started_at: Instant,
    pub blast_duration: Duration,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|e| panic!("{e}")))
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    api: String,
    service_id: Uuid,
    secret: String,
}

impl Client {
    fn new(api: &str, key: &str, concurrency: usize) -> Result<Client> {
        let parts = floodgate_core::auth::parse_api_key(key)
            .context("not a Notify API key: expected <name>-<service_id>-<secret>")?;
        let (service_id, secret) = (parts.service_id, parts.secret.to_string());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(4))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Client {
            http,
            api: api.trim_end_matches('/').to_string(),
            service_id,
            secret,
        })
    }

    fn auth(&self) -> Result<String> {
        let iat = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        Ok(format!(
            "Bearer {}",
            floodgate_core::auth::sign_jwt(self.service_id, &self.secret, iat)
        ))
    }

    async fn post_email(
        &self,
        template: Uuid,
        outcome: SimulatedRecipient,
        i: usize,
    ) -> Result<(u16, Option<Uuid>)> {
        let body = serde_json::json!({
            "email_address": outcome.address(i),
            "template_id": template,
            "personalisation": {"name": format!("Recipient {i}"), "reference_number": format!("REF-{i:08}")},
            "reference": format!("blast-{i}"),
        });
        let resp = self
            .http
            .post(format!("{}/v2/notifications/email", self.api))
            .header("Authorization", self.auth()?)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await.unwrap_or_default();
        let id = json
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok());
        Ok((status, id))
    }

    async fn post_bulk(&self, template: Uuid, rows: &[(usize, SimulatedRecipient)]) -> Result<u16> {
        let mut table = vec![serde_json::json!([
            "email address",
            "name",
            "reference_number"
        ])];
        for (i, o) in rows {
            table.push(serde_json::json!([
                o.address(*i),
                format!("Recipient {i}"),
                format!("REF-{i:08}")
            ]));
        }
        let body = serde_json::json!({
            "name": format!("blast bulk {}", Uuid::now_v7()),
            "template_id": template,
            "rows": table,
        });
        let resp = self
            .http
            .post(format!("{}/v2/notifications/bulk", self.api))
            .header("Authorization", self.auth()?)
            .json(&body)
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }

    async fn get_notification(&self, id: Uuid) -> Result<(u16, serde_json::Value)> {
        let resp = self
            .http
            .get(format!("{}/v2/notifications/{id}", self.api))
            .header("Authorization", self.auth()?)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or_default()))
    }
}

/// Reads `ids` round-robin at `per_s` until `stop`, recording latencies (µs).
async fn critical_reads(
    client: Client,
    ids: Arc<Vec<Uuid>>,
    per_s: f64,
    stop: Arc<AtomicBool>,
    progress: Arc<BlastProgress>,
) -> Histogram<u64> {
    let mut h = histogram();
    let period = Duration::from_secs_f64(1.0 / per_s.max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) && !ids.is_empty() {
        tick.tick().await;
        let id = ids[n % ids.len()];
        n += 1;
        let started = Instant::now();
        let ok = matches!(client.get_notification(id).await, Ok((200, _)));
        let micros = started.elapsed().as_micros() as u64;
        progress.critical_reads.fetch_add(1, Ordering::Relaxed);
        if ok {
            let _ = h.record(micros.max(1));
            if let Ok(mut w) = progress.window.lock() {
                w.push(micros);
            }
        } else {
            progress
                .critical_read_errors
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    h
}

/// Sends the seed notifications for critical reads and waits until each can be read.
async fn seed_critical(
    client: &Client,
    templates: &ProcessTypeTemplates,
    count: usize,
) -> Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for i in 0..count {
        let (status, id) = client
            .post_email(
                templates.priority,
                SimulatedRecipient::Success,
                1_000_000_000 + i,
            )
            .await?;
        match (status, id) {
            (201, Some(id)) => ids.push(id),
            (s, _) => bail!("seeding critical reads: POST answered {s}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            if let Ok((200, _)) = client.get_notification(*id).await {
                break;
            }
            if Instant::now() > deadline {
                bail!("seeded notification {id} was not readable within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(ids)
}

/// Runs the blast: idle baseline, then the load with the critical-read stream alongside.
/// `reads_done` decides how long the critical-read stream goes on after the last request
/// was sent: the pipeline's work (persist, send, receipts) comes after acceptance, and the
/// reads must be measured while it runs.
pub async fn run_blast(
    opts: &BlastOptions,
    progress: Arc<BlastProgress>,
    reads_done: impl std::future::Future<Output = ()>,
) -> Result<BlastResult> {
    let client = Client::new(&opts.api, &opts.key, opts.concurrency)?;
    let seeds = Arc::new(seed_critical(&client, &opts.templates, 20).await?);

    // Idle baseline: the same read stream with nothing else running.
    let stop = Arc::new(AtomicBool::new(false));
    let idle = tokio::spawn(critical_reads(
        client.clone(),
        seeds.clone(),
        opts.critical_reads_per_s,
        stop.clone(),
        progress.clone(),
    ));
    tokio::time::sleep(opts.idle_baseline).await;
    stop.store(true, Ordering::SeqCst);
    let critical_idle = idle.await?;
    progress.critical_reads.store(0, Ordering::Relaxed);

    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(critical_reads(
        client.clone(),
        seeds.clone(),
        opts.critical_reads_per_s,
        stop.clone(),
        progress.clone(),
    ));
    let started_at = Instant::now();

    // The seeds were accepted too: they count towards lost/duplicates like any other.
    progress
        .accepted
        .fetch_add(seeds.len() as u64, Ordering::Relaxed);
    let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::new(Mutex::new(
        seeds
            .iter()
            .map(|id| Accepted {
                id: *id,
                process_type: ProcessType::Priority,
                outcome: SimulatedRecipient::Success,
                posted_at: None,
            })
            .collect(),
    ));
    let api_latency = Arc::new(Mutex::new(histogram()));
    let rejected = Arc::new(AtomicU64::new(0));

    // Single emails (priority + normal process types) with bounded concurrency and optional rate.
    let (n, mix) = (opts.notifications, opts.mix);
    let singles: Vec<usize> = (0..mix.total(n))
        .filter(|i| mix.process_type(*i, n) != ProcessType::Bulk)
        .collect();
    let bulk: Vec<usize> = (0..mix.total(n))
        .filter(|i| mix.process_type(*i, n) == ProcessType::Bulk)
        .collect();
    let next = Arc::new(AtomicU64::new(0));
    let singles = Arc::new(singles);
    let pace = opts
        .rate
        .map(|r| Duration::from_secs_f64(opts.concurrency as f64 / r.max(0.001)));
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let (client, singles, next, accepted, api_latency, rejected, progress, templates) = (
            client.clone(),
            singles.clone(),
            next.clone(),
            accepted.clone(),
            api_latency.clone(),
            rejected.clone(),
            progress.clone(),
            opts.templates,
        );
        workers.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(&i) = singles.get(k) else { break };
                let process_type = mix.process_type(i, n);
                let outcome = recipient_for_index(i);
                let t = Instant::now();
                let posted_at = chrono::Utc::now();
                let r = client
                    .post_email(templates.for_process_type(process_type), outcome, i)
                    .await;
                let micros = t.elapsed().as_micros() as u64;
                if let Ok(mut h) = api_latency.lock() {
                    let _ = h.record(micros.max(1));
                }
                match r {
                    Ok((201, Some(id))) => {
                        progress.accepted.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut a) = accepted.lock() {
                            a.push(Accepted {
                                id,
                                process_type,
                                outcome,
                                posted_at: Some(posted_at),
                            });
                        }
                    }
                    _ => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                        progress.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(p) = pace {
                    tokio::time::sleep(p.saturating_sub(t.elapsed())).await;
                }
            }
        }));
    }

    // Bulk requests, one at a time alongside the singles (a backfill next to live traffic).
    let bulk_task = {
        let (client, accepted, api_latency, rejected, progress, templates, rows_per) = (
            client.clone(),
            accepted.clone(),
            api_latency.clone(),
            rejected.clone(),
            progress.clone(),
            opts.templates,
            opts.bulk_rows.max(1),
        );
        tokio::spawn(async move {
            for chunk in bulk.chunks(rows_per) {
                let rows: Vec<(usize, SimulatedRecipient)> =
                    chunk.iter().map(|&i| (i, recipient_for_index(i))).collect();
                let t = Instant::now();
                let posted_at = chrono::Utc::now();
                let status = client.post_bulk(templates.bulk, &rows).await;
                if let Ok(mut h) = api_latency.lock() {
                    let _ = h.record((t.elapsed().as_micros() as u64).max(1));
                }
                if let Ok(201) = status {
                    progress
                        .accepted
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    if let Ok(mut a) = accepted.lock() {
                        // Bulk ids are not in the 201 body: they are resolved by reference
                        // after persist (see `resolve_bulk_ids`), so record placeholders.
                        a.extend(rows.iter().map(|(_, o)| Accepted {
                            id: Uuid::nil(),
                            process_type: ProcessType::Bulk,
                            outcome: *o,
                            posted_at: Some(posted_at),
                        }));
                    }
                } else {
                    rejected.fetch_add(rows.len() as u64, Ordering::Relaxed);
                    progress
                        .rejected
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    for w in workers {
        w.await?;
    }
    bulk_task.await?;
    let blast_duration = started_at.elapsed();
    progress.sending_done.store(true, Ordering::SeqCst);
    reads_done.await;
    stop.store(true, Ordering::SeqCst);
    let critical_blast = during.await?;

    let accepted = Arc::try_unwrap(accepted)
        .map_err(|_| anyhow::anyhow!("workers still running"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    let api_latency = Arc::try_unwrap(api_latency)
        .map_err(|_| anyhow::anyhow!("workers still running"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok(BlastResult {
        accepted,
        rejected: rejected.load(Ordering::SeqCst),
        api_latency,
        critical_idle,
        critical_blast,
        started_at,
        blast_duration,
    })
}

impl BlastResult {
    /// The one-line figures `floodgate-local blast` prints.
    pub fn print_summary(&self) {
        let r = self;
        let (api_l, idle, during) = (
            crate::report::Percentiles::of(&r.api_latency),
            crate::report::Percentiles::of(&r.critical_idle),
            crate::report::Percentiles::of(&r.critical_blast),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_beside_bulk_makes_every_single_priority_and_adds_the_bulk_rows() {
        let m = BlastMix::PriorityBeside { bulk_rows: 5 };
        assert_eq!(m.total(3), 8);
        let types: Vec<ProcessType> = (0..8).map(|i| m.process_type(i, 3)).collect();
        assert_eq!(&types[..3], &[ProcessType::Priority; 3]);
        assert!(types[3..].iter().all(|t| *t == ProcessType::Bulk));
        assert_eq!(BlastMix::Demo.total(10), 10);
        assert_eq!(BlastMix::Demo.process_type(0, 10), ProcessType::Priority);
        assert_eq!(BlastMix::Demo.process_type(9, 10), ProcessType::Bulk);
    }
    use floodgate_core::NotificationStatus;

    #[test]
    fn the_mix_covers_every_outcome_and_process_type() {
        let outcomes: std::collections::HashSet<_> = (0..20)
            .map(|i| format!("{:?}", recipient_for_index(i)))
            .collect();
        assert_eq!(outcomes.len(), 5);
        let process_types: std::collections::HashSet<_> =
            (0..10).map(process_type_for_index).collect();
        assert_eq!(process_types.len(), 3);
        assert_eq!(
            SimulatedRecipient::Complaint.final_status(),
            NotificationStatus::Delivered
        );
        assert_eq!(
            SimulatedRecipient::Bounce.address(7),
            "bounce+7@simulator.amazonses.com"
        );
    }
}
