//! Event source mapping emulation: each queue is consumed the way Lambda's SQS event source
//! mapping does it, with the same knobs (`infra/knobs.json`): batch size, maximum batching
//! window, maximum concurrency, the function timeout, and ReportBatchItemFailures (only the
//! messages not reported as failed are deleted; the rest come back after the visibility
//! timeout and go to the DLQ after maxReceiveCount — the queue's job).
//!
//! Each concurrent poller owns one emulated function instance, built by the mapping's
//! factory with its own database lanes, as on Lambda; so the connection budget
//! `Σ (max concurrency × lane sizes)` holds locally too.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage, SqsMessageAttribute};
use floodgate_aws::queue::{DEFERRALS_ATTRIBUTE, FIRST_SENT_ATTRIBUTE};
use floodgate_aws::{Queue, ReceivedMessage};
use floodgate_core::{Knobs, QueueName};
use futures::future::BoxFuture;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One emulated function instance: takes an SQS event, answers a batch response or fails
/// (a function error: every message of the batch comes back).
pub type SqsHandler =
    Arc<dyn Fn(SqsEvent) -> BoxFuture<'static, Result<SqsBatchResponse, String>> + Send + Sync>;

/// Builds the instance for poller `n` (called once per poller, like a cold start).
pub type InstanceFactory =
    Arc<dyn Fn(usize) -> BoxFuture<'static, anyhow::Result<SqsHandler>> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingConfig {
    pub queue: QueueName,
    pub batch_size: usize,
    pub maximum_batching_window: Duration,
    pub maximum_concurrency: usize,
    pub function_timeout: Duration,
}

impl MappingConfig {
    /// The mapping of `queue` as `infra/knobs.json` (and so Terraform) defines it.
    pub fn from_knobs(knobs: &Knobs, queue: QueueName) -> anyhow::Result<Self> {
        let m = knobs
            .event_source_mappings
            .get(&queue.as_string())
            .ok_or_else(|| anyhow::anyhow!("no event source mapping for {queue} in knobs"))?;
        let timeout = knobs
            .functions
            .get(&m.function)
            .map_or(30, |f| f.timeout_seconds);
        Ok(MappingConfig {
            queue,
            batch_size: m.batch_size as usize,
            maximum_batching_window: Duration::from_secs(u64::from(
                m.maximum_batching_window_seconds,
            )),
            maximum_concurrency: m.maximum_concurrency as usize,
            function_timeout: Duration::from_secs(u64::from(timeout)),
        })
    }
}

impl MappingConfig {
    /// Every interval divided by `factor` (a time-scaled local run); counts unchanged.
    pub fn scaled(mut self, factor: f64) -> Self {
        let f = factor.max(1e-3);
        self.maximum_batching_window = self.maximum_batching_window.div_f64(f);
        self.function_timeout = self.function_timeout.div_f64(f);
        self
    }
}

/// What a mapping did, for the report.
#[derive(Debug, Default)]
pub struct MappingStats {
    pub invocations: AtomicU64,
    pub messages: AtomicU64,
    pub deleted: AtomicU64,
    pub item_failures: AtomicU64,
    pub function_errors: AtomicU64,
    pub busy_instances: AtomicU64,
    pub peak_busy_instances: AtomicU64,
}

/// A running mapping. Dropping it (or `stop`) stops polling after in-flight invocations.
pub struct Mapping {
    pub config: MappingConfig,
    pub stats: Arc<MappingStats>,
    stop: watch::Sender<bool>,
    pollers: Vec<JoinHandle<()>>,
}

impl Mapping {
    /// Starts `maximum_concurrency` pollers on `queue`, each with its own instance.
    pub async fn start(
        queue: Arc<dyn Queue>,
        config: MappingConfig,
        factory: InstanceFactory,
    ) -> anyhow::Result<Mapping> {
        Self::start_on(&tokio::runtime::Handle::current(), queue, config, factory).await
    }

    /// As [`Mapping::start`], with the pollers and their invocations on `runtime`.
    pub async fn start_on(
        runtime: &tokio::runtime::Handle,
        queue: Arc<dyn Queue>,
        config: MappingConfig,
        factory: InstanceFactory,
    ) -> anyhow::Result<Mapping> {
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(MappingStats::default());
        let mut pollers = Vec::new();
        for n in 0..config.maximum_concurrency.max(1) {
            let handler = factory(n).await?;
            pollers.push(runtime.spawn(poll_loop(
                queue.clone(),
                config.clone(),
                handler,
                stats.clone(),
                stopped.clone(),
            )));
        }
        Ok(Mapping {
            config,
            stats,
            stop,
            pollers,
        })
    }

    /// Stops the pollers and waits for in-flight invocations to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for p in self.pollers.drain(..) {
            let _ = p.await;
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Collects a batch: up to `batch_size` messages, waiting at most the batching window
/// once the first message arrived (Lambda invokes when either limit is reached).
async fn collect_batch(
    queue: &dyn Queue,
    config: &MappingConfig,
    stopped: &watch::Receiver<bool>,
) -> Vec<ReceivedMessage> {
    let mut batch: Vec<ReceivedMessage> = Vec::new();
    let mut window_ends: Option<Instant> = None;
    while batch.len() < config.batch_size && !*stopped.borrow() {
        let wait = match window_ends {
            // Long-poll for the first message; short waits keep `stop` responsive.
            None => Duration::from_millis(500),
            Some(end) => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                end - now
            }
        };
        let want = (config.batch_size - batch.len()).min(10);
        match queue.receive(config.queue, want, wait).await {
            Ok(msgs) if msgs.is_empty() => {
                if window_ends.is_some() {
                    break;
                }
            }
            Ok(msgs) => {
                batch.extend(msgs);
                if window_ends.is_none() {
                    window_ends = Some(Instant::now() + config.maximum_batching_window);
                }
                if config.maximum_batching_window.is_zero() {
                    // No window: invoke with what one receive returned (up to 10).
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(queue = %config.queue, error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if window_ends.is_some() {
                    break;
                }
            }
        }
    }
    batch
}

/// The Lambda event for received messages, as the event source mapping builds it.
pub fn to_event(queue: QueueName, batch: &[ReceivedMessage]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for m in batch {
        let mut r = SqsMessage::default();
        r.message_id = Some(m.message_id.clone());
        r.receipt_handle = Some(m.receipt_handle.clone());
        r.body = Some(m.body.clone());
        r.event_source = Some("aws:sqs".into());
        r.event_source_arn = Some(format!("arn:aws:sqs:local:000000000000:{queue}"));
        r.aws_region = Some("local".into());
        r.attributes = HashMap::from([
            (
                "ApproximateReceiveCount".to_string(),
                m.receive_count.to_string(),
            ),
            (
                "SentTimestamp".to_string(),
                m.sent_timestamp_millis.to_string(),
            ),
        ]);
        if let Some(d) = m.deferral {
            let number = |v: String| {
                let mut a = SqsMessageAttribute::default();
                a.string_value = Some(v);
                a.data_type = Some("Number".into());
                a
            };
            r.message_attributes = HashMap::from([
                (DEFERRALS_ATTRIBUTE.to_string(), number(d.count.to_string())),
                (
                    FIRST_SENT_ATTRIBUTE.to_string(),
                    number(d.first_sent_millis.to_string()),
                ),
            ]);
        }
        event.records.push(r);
    }
    event
}

async fn poll_loop(
    queue: Arc<dyn Queue>,
    config: MappingConfig,
    handler: SqsHandler,
    stats: Arc<MappingStats>,
    stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        let batch = collect_batch(queue.as_ref(), &config, &stopped).await;
        if batch.is_empty() {
            continue;
        }
        let busy = stats.busy_instances.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak_busy_instances.fetch_max(busy, Ordering::SeqCst);
        stats.invocations.fetch_add(1, Ordering::Relaxed);
        stats
            .messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let event = to_event(config.queue, &batch);
        // The invocation runs in its own task so a panic is a crashed invocation (every
        // message returns after the visibility timeout), not a dead poller.
        let h = handler.clone();
        let mut invocation = tokio::spawn(async move { h(event).await });
        let outcome = tokio::time::timeout(config.function_timeout, &mut invocation).await;
        if outcome.is_err() {
            // Lambda stops a function at its timeout; so does the emulation.
            invocation.abort();
        }
        stats.busy_instances.fetch_sub(1, Ordering::SeqCst);
        let failed: Option<HashSet<String>> = match outcome {
            Ok(Ok(Ok(resp))) => {
                let ids: HashSet<String> = resp
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect();
                // Lambda treats an unknown or empty identifier as a failure of the batch.
                let known: HashSet<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
                if ids.iter().all(|i| known.contains(i.as_str())) {
                    Some(ids)
                } else {
                    None
                }
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(queue = %config.queue, error = %e, "function error");
                None
            }
            Ok(Err(join)) => {
                tracing::warn!(queue = %config.queue, error = %join, "invocation crashed");
                None
            }
            Err(_) => {
                tracing::warn!(queue = %config.queue, "invocation timed out");
                None
            }
        };
        match failed {
            Some(failed) => {
                stats
                    .item_failures
                    .fetch_add(failed.len() as u64, Ordering::Relaxed);
                let done: Vec<String> = batch
                    .iter()
                    .filter(|m| !failed.contains(&m.message_id))
                    .map(|m| m.receipt_handle.clone())
                    .collect();
                if !done.is_empty() {
                    match queue.delete_batch(config.queue, &done).await {
                        Ok(()) => {
                            stats
                                .deleted
                                .fetch_add(done.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(queue = %config.queue, error = %e, "delete failed")
                        }
                    }
                }
            }
            None => {
                stats.function_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_aws::{QueueLimits, send_all};
    use floodgate_core::ProcessType;
    use floodgate_emulators::EmbeddedQueue;
    use std::sync::Mutex;

    const Q: QueueName = QueueName::Intake(ProcessType::Normal);

    fn recorder(seen: Arc<Mutex<Vec<usize>>>, fail_body: &'static str) -> InstanceFactory {
        Arc::new(move |_n| {
            let seen = seen.clone();
            Box::pin(async move {
                let h: SqsHandler = Arc::new(move |event: SqsEvent| {
                    let seen = seen.clone();
                    Box::pin(async move {
                        seen.lock().unwrap().push(event.records.len());
                        let mut resp = SqsBatchResponse::default();
                        for r in &event.records {
                            if r.body.as_deref() == Some(fail_body) {
                                resp.add_failure(r.message_id.clone().unwrap_or_default());
                            }
                        }
                        Ok(resp)
                    })
                });
                Ok(h)
            })
        })
    }

    #[tokio::test]
    async fn batches_respect_size_and_failed_items_go_to_the_dlq() {
        let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_millis(300), 2));
        let bodies: Vec<String> = (0..45).map(|i| format!("m{i}")).collect();
        let mut all = bodies.clone();
        all.push("poison".into());
        let r = send_all(queue.as_ref(), Q, &all, QueueLimits::default()).await;
        assert!(r.iter().all(Result::is_ok));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let config = MappingConfig {
            queue: Q,
            batch_size: 20,
            maximum_batching_window: Duration::from_millis(200),
            maximum_concurrency: 2,
            function_timeout: Duration::from_secs(5),
        };
        let mapping = Mapping::start(queue.clone(), config, recorder(seen.clone(), "poison"))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.dead_letters(Q).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        mapping.stop().await;
        assert_eq!(queue.dead_letters(Q), vec!["poison".to_string()]);
        let stats = queue.stats(Q).await.unwrap();
        assert_eq!(stats.visible + stats.in_flight, 0, "{stats:?}");
        let sizes = seen.lock().unwrap().clone();
        assert!(sizes.iter().all(|&s| s <= 20), "{sizes:?}");
        // 46 messages, the poison one seen twice (maxReceiveCount 2).
        assert_eq!(sizes.iter().sum::<usize>(), 47, "{sizes:?}");
    }

    #[tokio::test]
    async fn a_crashed_invocation_returns_every_message() {
        let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_millis(200), 5));
        send_all(
            queue.as_ref(),
            Q,
            &["a".into(), "b".into()],
            QueueLimits::default(),
        )
        .await;
        let calls = Arc::new(AtomicU64::new(0));
        let factory: InstanceFactory = {
            let calls = calls.clone();
            Arc::new(move |_| {
                let calls = calls.clone();
                Box::pin(async move {
                    let h: SqsHandler = Arc::new(move |event: SqsEvent| {
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        Box::pin(async move {
                            if n == 0 {
                                panic!("simulated crash");
                            }
                            let _ = event;
                            Ok(SqsBatchResponse::default())
                        })
                    });
                    Ok(h)
                })
            })
        };
        let config = MappingConfig {
            queue: Q,
            batch_size: 10,
            maximum_batching_window: Duration::ZERO,
            maximum_concurrency: 1,
            function_timeout: Duration::from_secs(5),
        };
        let mapping = Mapping::start(queue.clone(), config, factory)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = queue.stats(Q).await.unwrap();
            if s.visible + s.in_flight == 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = mapping.stats.clone();
        mapping.stop().await;
        assert_eq!(stats.function_errors.load(Ordering::SeqCst), 1);
        assert_eq!(stats.deleted.load(Ordering::SeqCst), 2);
        assert!(queue.dead_letters(Q).is_empty());
    }

    #[test]
    fn configs_come_from_the_knobs() {
        let knobs = Knobs::embedded();
        for q in QueueName::ALL {
            let c = MappingConfig::from_knobs(&knobs, q).unwrap();
            let m = &knobs.event_source_mappings[&q.as_string()];
            assert_eq!(c.batch_size, m.batch_size as usize);
            assert_eq!(c.maximum_concurrency, m.maximum_concurrency as usize);
        }
    }
}
