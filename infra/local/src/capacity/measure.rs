//! Wall time per invocation of the real handlers on the local stack, by function, lane and
//! batch size, and what an email costs in messages, bytes, limit store calls and WAL.
//!
//! Each stage feeds the next, as on AWS: ingest (a warm instance on the reader lane)
//! enqueues on the embedded queue; batches taken from it go to `persist` as the mapping
//! would hand them over; persist's send messages go to `send` (the SES simulator, at a rate
//! that never paces); the simulator's SES events go to `receipts`. Only the handler call is
//! timed; taking and deleting the batch is the mapping's work.

use super::model::{LaneTraffic, Measurements, Timing, lane_index};
use crate::bench::ingest::signed_headers;
use crate::demo::blast::ProcessTypeTemplates;
use crate::services::{DB_NAME, LocalStack, first_value, psql};
use crate::topology::esm::to_event;
use crate::topology::{LaneRegistry, instance_reader, instance_writer, migrated_admin_lane};
use anyhow::{Context, Result, bail, ensure};
use aws_lambda_events::http::Method;
use floodgate_api::{ApiCatalog, CachePolicy};
use floodgate_aws::queue::ReceivedMessage;
use floodgate_aws::{LimitStore, Queue};
use floodgate_core::ses_event::SimulatedRecipient;
use floodgate_core::{Knobs, ProcessType, QueueName};
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue, SimulatorMailer};
use floodgate_ingest::Ingest;
use floodgate_persist::Persist;
use floodgate_receipts::Receipts;
use floodgate_send::{SendConfig, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct MeasureOptions {
    /// Invocations timed per function, lane and batch size.
    pub invocations: usize,
    /// Rows per bulk request.
    pub bulk_rows: usize,
}

/// The functions' instances and what they share, one of each as on a warm Lambda.
struct World {
    knobs: Arc<Knobs>,
    queue: Arc<EmbeddedQueue>,
    simulator: SimulatorMailer,
    ingest: Ingest,
    persist: Persist,
    send: Sender,
    receipts: Receipts,
    ingest_store: Arc<EmbeddedLimitStore>,
    send_store: Arc<EmbeddedLimitStore>,
    service_id: Uuid,
    secret: String,
    templates: ProcessTypeTemplates,
    primary_port: u16,
    /// Requests so far (addresses stay distinct).
    next_row: usize,
}

/// Samples of one function, lane and batch size.
#[derive(Default)]
struct Samples {
    micros: Vec<u64>,
    emails: usize,
}

impl Samples {
    fn push(&mut self, elapsed: Duration, emails: usize) {
        self.micros.push(elapsed.as_micros() as u64);
        self.emails += emails;
    }

    fn timing(&self, function: &str, lane: Option<ProcessType>, batch: u32) -> Timing {
        let pct = |q| crate::report::percentile_ms(&self.micros, q).unwrap_or(0.0);
        Timing {
            function: function.into(),
            lane,
            batch,
            emails_per_invocation: self.emails as f64 / self.micros.len().max(1) as f64,
            median_ms: pct(0.5),
            p90_ms: pct(0.9),
            invocations: self.micros.len(),
        }
    }
}

/// 1, the shipped batch size and twice it (within the mapping's 10,000).
pub fn batch_sizes(shipped: u32) -> Vec<u32> {
    let mut v = vec![1, shipped, (shipped * 2).min(10_000)];
    v.dedup();
    v
}

async fn wal_lsn(port: u16) -> Result<String> {
    first_value(&psql(port, DB_NAME, "SELECT pg_current_wal_lsn()::text").await?).context("no LSN")
}

async fn wal_since(port: u16, from: &str) -> Result<f64> {
    let q = format!("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{from}')::bigint");
    Ok(first_value(&psql(port, DB_NAME, &q).await?)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0))
}

impl World {
    async fn start(stack: &LocalStack) -> Result<World> {
        let admin = migrated_admin_lane(stack).await?;
        let secrets = Arc::new(floodgate_core::auth::SecretBox::from_base64(
            &floodgate_core::auth::generate_encryption_key(),
        )?);
        let (service_id, key, templates, _) = crate::demo::seed(&admin, &secrets).await?;
        let secret = floodgate_core::auth::parse_api_key(&key)
            .map(|p| p.secret.to_string())
            .context("the seeded key does not parse")?;
        stack
            .wait_replica_caught_up(Duration::from_secs(30))
            .await?;

        let knobs = Arc::new(Knobs::embedded());
        let lanes = LaneRegistry::default();
        let queue = Arc::new(EmbeddedQueue::from_knobs(&knobs));
        let simulator = SimulatorMailer::new(queue.clone());
        simulator.set_event_delay(Duration::ZERO, Duration::ZERO);
        let ingest_store = Arc::new(EmbeddedLimitStore::new());
        let send_store = Arc::new(EmbeddedLimitStore::new());
        let ingest = Ingest::new(
            Arc::new(ApiCatalog::new(
                instance_reader(stack.reader_url(), &knobs, &lanes, "ingest").await?,
                secrets.clone(),
                CachePolicy::default(),
            )),
            queue.clone(),
            ingest_store.clone() as Arc<dyn LimitStore>,
            &knobs,
        );
        let writer = |f: &'static str| instance_writer(stack.writer_url(), &knobs, &lanes, f, 1.0);
        let persist = Persist::new(writer("persist").await?, queue.clone(), knobs.clone());
        // A rate no instance waits for: the SES account's rate is a bound of the model, not
        // of these durations.
        let rate = 1e6;
        let config = SendConfig {
            account_rate: rate,
            rate_per_second: rate,
            ..SendConfig::from_lookup(&knobs, |_| None)?
        };
        let send = Sender::new(
            writer("send").await?,
            Arc::new(simulator.clone()),
            queue.clone(),
            knobs.clone(),
            config,
        )
        .with_shared_budget(send_store.clone());
        let receipts = Receipts::new(writer("receipts").await?, queue.clone(), &knobs);
        Ok(World {
            knobs,
            queue,
            simulator,
            ingest,
            persist,
            send,
            receipts,
            ingest_store,
            send_store,
            service_id,
            secret,
            templates,
            primary_port: stack.primary_port,
            next_row: 0,
        })
    }

    fn batch_of(&self, queue: QueueName) -> Result<u32> {
        Ok(self
            .knobs
            .event_source_mappings
            .get(&queue.as_string())
            .with_context(|| format!("no mapping for {queue}"))?
            .batch_size)
    }

    async fn visible(&self, queue: QueueName) -> Result<usize> {
        Ok(self.queue.stats(queue).await?.visible as usize)
    }

    /// Up to `n` messages, as the mapping collects a batch (ten per receive).
    async fn take(&self, queue: QueueName, n: usize) -> Result<Vec<ReceivedMessage>> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            let got = self
                .queue
                .receive(queue, (n - batch.len()).min(10), Duration::ZERO)
                .await?;
            if got.is_empty() {
                break;
            }
            batch.extend(got);
        }
        ensure!(batch.len() == n, "{queue}: {} of {n} messages", batch.len());
        Ok(batch)
    }

    async fn delete(&self, queue: QueueName, batch: &[ReceivedMessage]) -> Result<()> {
        let handles: Vec<String> = batch.iter().map(|m| m.receipt_handle.clone()).collect();
        for chunk in handles.chunks(10) {
            self.queue.delete_batch(queue, chunk).await?;
        }
        Ok(())
    }

    async fn purge(&self, queue: QueueName) -> Result<()> {
        loop {
            let got = self.queue.receive(queue, 10, Duration::ZERO).await?;
            if got.is_empty() {
                return Ok(());
            }
            self.delete(queue, &got).await?;
        }
    }

    /// One ingest request of `lane` (a single email, or a bulk job of `rows`), timed.
    async fn ingest_once(&mut self, lane: ProcessType, rows: usize) -> Result<(Duration, usize)> {
        let template = self.templates.for_process_type(lane);
        let first = self.next_row;
        let address = |i: usize| SimulatedRecipient::Success.address(i);
        let (path, body, emails) = if lane == ProcessType::Bulk {
            let mut csv = String::from("email address,name,reference_number\n");
            for i in first..first + rows {
                csv.push_str(&format!("{},Person {i},REF-{i:08}\n", address(i)));
            }
            self.next_row += rows;
            let body =
                serde_json::json!({"name": "capacity.csv", "template_id": template, "csv": csv});
            ("/v2/notifications/bulk", body, rows)
        } else {
            self.next_row += 1;
            let body = serde_json::json!({
                "email_address": address(first),
                "template_id": template,
                "personalisation": {"name": format!("Person {first}"), "reference_number": format!("REF-{first:08}")},
            });
            ("/v2/notifications/email", body, 1)
        };
        let req = floodgate_api::gateway::request(
            Method::POST,
            path,
            signed_headers(self.service_id, &self.secret, &[]),
            Some(body.to_string()),
        );
        let started = Instant::now();
        let r = self.ingest.handle(req).await;
        let elapsed = started.elapsed();
        if r.status_code != 201 {
            bail!(
                "ingest answered {}: {}",
                r.status_code,
                floodgate_api::gateway::response_text(&r)
            );
        }
        Ok((elapsed, emails))
    }

    /// One persist invocation over `n` intake messages of `lane`: (wall time, notifications).
    async fn persist_once(&self, lane: ProcessType, n: usize) -> Result<(Duration, usize, usize)> {
        let q = QueueName::Intake(lane);
        let batch = self.take(q, n).await?;
        let bytes = batch.iter().map(|m| m.body.len()).sum();
        let event = to_event(q, &batch);
        let started = Instant::now();
        let (resp, report) = self.persist.handle(event).await?;
        let elapsed = started.elapsed();
        ensure!(
            resp.batch_item_failures.is_empty() && report.deferred == 0,
            "persist failed or deferred: {report:?}"
        );
        self.delete(q, &batch).await?;
        Ok((elapsed, report.notifications, bytes))
    }
}

/// Per-lane tallies beside the timings.
#[derive(Default)]
struct Tally {
    api_requests: usize,
    accepted: usize,
    ingest_store_calls: u64,
    intake_messages: usize,
    intake_notifications: usize,
    intake_bytes: usize,
    send_messages: usize,
    send_bytes: usize,
    sent: usize,
    send_store_calls: u64,
}

impl Tally {
    fn traffic(&self) -> LaneTraffic {
        let per = |a: f64, b: usize| a / b.max(1) as f64;
        LaneTraffic {
            api_requests_per_email: per(self.api_requests as f64, self.accepted),
            intake_messages_per_email: per(self.intake_messages as f64, self.intake_notifications),
            intake_bytes_per_message: per(self.intake_bytes as f64, self.intake_messages),
            send_messages_per_email: per(self.send_messages as f64, self.sent),
            send_bytes_per_message: per(self.send_bytes as f64, self.send_messages),
            limit_store_calls_per_email: per(self.ingest_store_calls as f64, self.accepted)
                + per(self.send_store_calls as f64, self.sent),
        }
    }
}

struct Run<'w> {
    w: &'w mut World,
    o: MeasureOptions,
    timings: Vec<Timing>,
    ingest: Samples,
    tally: Tally,
}

impl Run<'_> {
    fn rows(&self, lane: ProcessType) -> usize {
        if lane == ProcessType::Bulk {
            self.o.bulk_rows
        } else {
            1
        }
    }

    /// Ingests (timed: these are ingest's samples) until the intake queue holds `n`.
    async fn fill_intake(&mut self, lane: ProcessType, n: usize) -> Result<()> {
        while self.w.visible(QueueName::Intake(lane)).await? < n {
            let calls = self.w.ingest_store.calls();
            let (elapsed, emails) = self.w.ingest_once(lane, self.rows(lane)).await?;
            self.tally.ingest_store_calls += self.w.ingest_store.calls() - calls;
            self.tally.api_requests += 1;
            self.tally.accepted += emails;
            self.ingest.push(elapsed, emails);
        }
        Ok(())
    }

    /// Persists shipped-size batches (untimed) until the send queue holds `n`.
    async fn fill_send(&mut self, lane: ProcessType, n: usize) -> Result<()> {
        let batch = self.w.batch_of(QueueName::Intake(lane))? as usize;
        while self.w.visible(QueueName::Send(lane)).await? < n {
            self.fill_intake(lane, batch).await?;
            self.w.persist_once(lane, batch).await?;
        }
        Ok(())
    }

    async fn lane(&mut self, lane: ProcessType) -> Result<f64> {
        let n = self.o.invocations;
        let port = self.w.primary_port;
        let mut wal_per_email = 0.0;

        let intake = QueueName::Intake(lane);
        let sizes = batch_sizes(self.w.batch_of(intake)?);
        let (mut wal, mut stored) = (0.0, 0usize);
        for b in sizes {
            self.fill_intake(lane, n * b as usize).await?;
            let mut s = Samples::default();
            let lsn = wal_lsn(port).await?;
            for _ in 0..n {
                let (elapsed, notifications, bytes) = self.w.persist_once(lane, b as usize).await?;
                s.push(elapsed, notifications);
                self.tally.intake_messages += b as usize;
                self.tally.intake_notifications += notifications;
                self.tally.intake_bytes += bytes;
            }
            wal += wal_since(port, &lsn).await?;
            stored += s.emails;
            self.timings.push(s.timing("persist", Some(lane), b));
            // Batches of one message pack fewer ids into a send message than the mapping's
            // batches do: their send messages are not the ones to time.
            if b == 1 {
                self.w.purge(QueueName::Send(lane)).await?;
            }
        }
        wal_per_email += wal / stored.max(1) as f64;
        self.timings.push(std::mem::take(&mut self.ingest).timing(
            "ingest",
            Some(lane),
            self.rows(lane) as u32,
        ));

        let send_q = QueueName::Send(lane);
        let (mut wal, mut sent) = (0.0, 0usize);
        for b in batch_sizes(self.w.batch_of(send_q)?) {
            self.fill_send(lane, n * b as usize).await?;
            let mut s = Samples::default();
            let lsn = wal_lsn(port).await?;
            for _ in 0..n {
                let batch = self.w.take(send_q, b as usize).await?;
                self.tally.send_messages += batch.len();
                self.tally.send_bytes += batch.iter().map(|m| m.body.len()).sum::<usize>();
                let event = to_event(send_q, &batch);
                let calls = self.w.send_store.calls();
                let started = Instant::now();
                let deadline = self
                    .w
                    .send
                    .sending_deadline(started + Duration::from_secs(30));
                let (resp, report) = self.w.send.handle(event, deadline).await?;
                let elapsed = started.elapsed();
                self.tally.send_store_calls += self.w.send_store.calls() - calls;
                ensure!(
                    resp.batch_item_failures.is_empty()
                        && report.deferred == 0
                        && report.released == 0
                        && report.sent == report.notifications,
                    "send did not send its whole batch: {report:?}"
                );
                self.w.delete(send_q, &batch).await?;
                s.push(elapsed, report.sent);
                self.tally.sent += report.sent;
            }
            wal += wal_since(port, &lsn).await?;
            sent += s.emails;
            self.timings.push(s.timing("send", Some(lane), b));
        }
        wal_per_email += wal / sent.max(1) as f64;
        Ok(wal_per_email)
    }
}

/// Measures every function at 1, the shipped and twice the shipped batch size, on `stack`
/// (migrated here if it is not).
pub async fn measure(stack: &LocalStack, o: MeasureOptions) -> Result<Measurements> {
    ensure!(o.invocations >= 1 && o.bulk_rows >= 1, "nothing to measure");
    let mut w = World::start(stack).await?;
    let mut lanes = [LaneTraffic::default(); 3];
    let mut timings = Vec::new();
    let mut wal_per_email = 0.0;
    let mut sent = 0usize;
    for lane in ProcessType::ALL {
        let mut run = Run {
            w: &mut w,
            o,
            timings: Vec::new(),
            ingest: Samples::default(),
            tally: Tally::default(),
        };
        // The lanes' lifecycles weigh the same: the mix is the model's to apply.
        wal_per_email += run.lane(lane).await? / 3.0;
        lanes[lane_index(lane)] = run.tally.traffic();
        sent += run.tally.sent;
        timings.extend(run.timings);
    }
    // Whatever persist stored beyond what was sent stays unsent: drop its send messages.
    for lane in ProcessType::ALL {
        w.purge(QueueName::Send(lane)).await?;
    }

    w.simulator.settled().await;
    let events = w.visible(QueueName::Receipts).await?;
    let events_per_email = events as f64 / sent.max(1) as f64;
    let mut event_bytes = 0usize;
    let mut event_messages = 0usize;
    let (mut wal, mut covered) = (0.0, 0.0);
    for b in batch_sizes(w.batch_of(QueueName::Receipts)?) {
        let mut s = Samples::default();
        let lsn = wal_lsn(w.primary_port).await?;
        for _ in 0..o.invocations {
            let batch = w.take(QueueName::Receipts, b as usize).await?;
            event_messages += batch.len();
            event_bytes += batch.iter().map(|m| m.body.len()).sum::<usize>();
            let event = to_event(QueueName::Receipts, &batch);
            let started = Instant::now();
            let (resp, report) = w.receipts.handle(event).await?;
            let elapsed = started.elapsed();
            ensure!(
                resp.batch_item_failures.is_empty() && report.deferred == 0,
                "receipts failed or deferred: {report:?}"
            );
            w.delete(QueueName::Receipts, &batch).await?;
            // Emails covered: the events a batch carries over the events each email makes.
            s.micros.push(elapsed.as_micros() as u64);
            covered += batch.len() as f64 / events_per_email.max(1e-9);
        }
        wal += wal_since(w.primary_port, &lsn).await?;
        let mut t = s.timing("receipts", None, b);
        t.emails_per_invocation = b as f64 / events_per_email.max(1e-9);
        timings.push(t);
    }
    wal_per_email += wal / covered.max(1e-9);
    Ok(Measurements {
        timings,
        lanes,
        events_per_email,
        event_bytes_per_message: event_bytes as f64 / event_messages.max(1) as f64,
        wal_bytes_per_email: wal_per_email,
    })
}
