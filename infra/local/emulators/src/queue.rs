//! The embedded queue: SQS's semantics in process, the local stack's default (moto's SQS
//! slows to about one call a second at a few thousand queued messages and cannot carry a
//! blast). Fault switches let tests make it unavailable or duplicate deliveries.

use async_trait::async_trait;
use floodgate_aws::queue::{
    Deferral, MAX_DELAY, OutgoingMessage, Queue, QueueError, QueueLimits, QueueSender, QueueStats,
    ReceivedMessage,
};
use floodgate_core::{Knobs, QueueName};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    receive_count: u32,
    sent_at: Instant,
    sent_millis: i64,
    deferral: Option<Deferral>,
}

#[derive(Debug)]
struct QueueState {
    visible: VecDeque<Stored>,
    /// Sent with a delay: each becomes visible at its instant.
    delayed: Vec<(Stored, Instant)>,
    in_flight: HashMap<String, (Stored, Instant)>,
    dead: Vec<Stored>,
    visibility_timeout: Duration,
    max_receive_count: u32,
}

impl QueueState {
    /// Returns expired in-flight messages to the queue, or to the DLQ once they have been
    /// received `max_receive_count` times (SQS's redrive policy).
    fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].1 <= now {
                let (m, _) = self.delayed.swap_remove(i);
                self.visible.push_back(m);
            } else {
                i += 1;
            }
        }
        let expired: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for h in expired {
            if let Some((m, _)) = self.in_flight.remove(&h) {
                if m.receive_count >= self.max_receive_count {
                    self.dead.push(m);
                } else {
                    self.visible.push_back(m);
                }
            }
        }
    }

    /// The next moment a message becomes visible by itself (a visibility timeout or a
    /// delay ends).
    fn next_expiry(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .map(|(_, until)| *until)
            .chain(self.delayed.iter().map(|(_, at)| *at))
            .min()
    }
}

/// An in-process queue with SQS's semantics: visibility timeout, receive count, redrive to
/// a dead-letter queue after `maxReceiveCount`, and the same batch and size limits.
pub struct EmbeddedQueue {
    queues: Mutex<HashMap<QueueName, QueueState>>,
    arrivals: HashMap<QueueName, tokio::sync::Notify>,
    limits: QueueLimits,
    unavailable: AtomicBool,
    next_id: AtomicU64,
    send_calls: AtomicU64,
    /// Fault injection: every n-th message sent is stored twice (0 = never), as SQS
    /// standard queues may deliver a message more than once.
    duplicate_every: AtomicU64,
    duplicated: AtomicU64,
}

impl EmbeddedQueue {
    /// Queues configured from the knobs: each queue's visibility timeout is the multiplier
    /// × its consumer's timeout, and `maxReceiveCount` is the knobs' value.
    pub fn from_knobs(knobs: &Knobs) -> Self {
        Self::scaled(knobs, 1.0)
    }

    /// [`EmbeddedQueue::from_knobs`] with every visibility timeout divided by `factor` (a
    /// time-scaled local run); `maxReceiveCount` unchanged.
    pub fn scaled(knobs: &Knobs, factor: f64) -> Self {
        let mut config = HashMap::new();
        for q in QueueName::ALL {
            let function = knobs
                .event_source_mappings
                .get(&q.as_string())
                .map(|m| m.function.clone())
                .unwrap_or_default();
            config.insert(
                q,
                (
                    Duration::from_secs(u64::from(knobs.visibility_timeout_seconds(&function)))
                        .div_f64(factor.max(1e-3)),
                    knobs.sqs.max_receive_count,
                ),
            );
        }
        Self::new(config, QueueLimits::from_knobs(knobs))
    }

    /// Every queue with the same visibility timeout (tests use short ones).
    pub fn uniform(visibility_timeout: Duration, max_receive_count: u32) -> Self {
        let config = QueueName::ALL
            .into_iter()
            .map(|q| (q, (visibility_timeout, max_receive_count)))
            .collect();
        Self::new(config, QueueLimits::default())
    }

    fn new(config: HashMap<QueueName, (Duration, u32)>, limits: QueueLimits) -> Self {
        let queues = config
            .into_iter()
            .map(|(q, (visibility_timeout, max_receive_count))| {
                (
                    q,
                    QueueState {
                        visible: VecDeque::new(),
                        delayed: Vec::new(),
                        in_flight: HashMap::new(),
                        dead: Vec::new(),
                        visibility_timeout,
                        max_receive_count,
                    },
                )
            })
            .collect();
        EmbeddedQueue {
            queues: Mutex::new(queues),
            arrivals: QueueName::ALL
                .into_iter()
                .map(|q| (q, tokio::sync::Notify::new()))
                .collect(),
            limits,
            unavailable: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            send_calls: AtomicU64::new(0),
            duplicate_every: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
        }
    }

    /// Fault injection: while set, every call answers `Unavailable` (SQS down).
    pub fn set_unavailable(&self, down: bool) {
        self.unavailable.store(down, Ordering::SeqCst);
    }

    /// Fault injection: deliver every `n`-th message twice (at-least-once delivery made
    /// visible); `0` switches it off.
    pub fn set_duplicate_every(&self, n: u64) {
        self.duplicate_every.store(n, Ordering::SeqCst);
    }

    /// Messages stored twice by [`EmbeddedQueue::set_duplicate_every`] so far.
    pub fn duplicated(&self) -> u64 {
        self.duplicated.load(Ordering::Relaxed)
    }

    /// `SendMessageBatch` calls made so far (all queues).
    pub fn send_calls(&self) -> u64 {
        self.send_calls.load(Ordering::Relaxed)
    }

    /// The bodies in `queue`'s dead-letter queue.
    pub fn dead_letters(&self, queue: QueueName) -> Vec<String> {
        self.lock()
            .get(&queue)
            .map(|s| s.dead.iter().map(|m| m.body.clone()).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, QueueState>> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters more than losing the queue; keep serving.
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_up(&self, queue: QueueName) -> Result<(), QueueError> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(QueueError::Unavailable {
                queue: queue.as_string(),
                message: "embedded queue switched off (fault injection)".into(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl QueueSender for EmbeddedQueue {
    async fn send_batch(
        &self,
        queue: QueueName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        self.check_up(queue)?;
        self.send_calls.fetch_add(1, Ordering::Relaxed);
        let rejected = |message: String| QueueError::Rejected {
            queue: queue.as_string(),
            message,
        };
        if messages.is_empty() || messages.len() > self.limits.max_batch_entries {
            return Err(rejected(format!(
                "TooManyEntriesInBatchRequest/EmptyBatchRequest: {} entries",
                messages.len()
            )));
        }
        let total: usize = messages.iter().map(OutgoingMessage::size).sum();
        if total > self.limits.max_message_bytes {
            return Err(rejected(format!(
                "BatchRequestTooLong: {total} bytes > {}",
                self.limits.max_message_bytes
            )));
        }
        let mut results = Vec::with_capacity(messages.len());
        {
            let mut queues = self.lock();
            let state = queues
                .get_mut(&queue)
                .ok_or_else(|| QueueError::NotConfigured {
                    queue: queue.as_string(),
                    env_var: queue.url_env_var(),
                })?;
            for message in messages {
                if message.body.is_empty() {
                    results.push(Err(rejected("empty message body".into())));
                    continue;
                }
                if message.delay > MAX_DELAY {
                    results.push(Err(rejected(format!(
                        "DelaySeconds {:?} above 900 s",
                        message.delay
                    ))));
                    continue;
                }
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                let every = self.duplicate_every.load(Ordering::Relaxed);
                let copies = if every > 0 && n.is_multiple_of(every) {
                    self.duplicated.fetch_add(1, Ordering::Relaxed);
                    2
                } else {
                    1
                };
                for copy in 0..copies {
                    let stored = Stored {
                        id: format!("m-{n}-{copy}"),
                        body: message.body.clone(),
                        receive_count: 0,
                        sent_at: Instant::now(),
                        sent_millis: now_millis(),
                        deferral: message.deferral,
                    };
                    if message.delay.is_zero() {
                        state.visible.push_back(stored);
                    } else {
                        state.delayed.push((stored, Instant::now() + message.delay));
                    }
                }
                results.push(Ok(()));
            }
        }
        if let Some(n) = self.arrivals.get(&queue) {
            // Also wakes receivers waiting for an earlier expiry than a new delay's end.
            n.notify_waiters();
        }
        Ok(results)
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.check_up(queue)?;
        let deadline = Instant::now() + wait;
        let max = max.clamp(1, 10);
        loop {
            let notified = self.arrivals.get(&queue).map(|n| n.notified());
            let next_expiry = {
                let mut queues = self.lock();
                let state = queues
                    .get_mut(&queue)
                    .ok_or_else(|| QueueError::NotConfigured {
                        queue: queue.as_string(),
                        env_var: queue.url_env_var(),
                    })?;
                let now = Instant::now();
                state.expire(now);
                let mut out = Vec::new();
                while out.len() < max {
                    let Some(mut m) = state.visible.pop_front() else {
                        break;
                    };
                    m.receive_count += 1;
                    let handle = format!("{}#{}", m.id, m.receive_count);
                    out.push(ReceivedMessage {
                        message_id: m.id.clone(),
                        receipt_handle: handle.clone(),
                        body: m.body.clone(),
                        receive_count: m.receive_count,
                        sent_timestamp_millis: m.sent_millis,
                        deferral: m.deferral,
                    });
                    let until = now + state.visibility_timeout;
                    state.in_flight.insert(handle, (m, until));
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                state.next_expiry()
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(e) = next_expiry {
                until = until.min(e);
            }
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(until));
            match notified {
                Some(n) => {
                    tokio::select! {
                        _ = n => {}
                        _ = sleep => {}
                    }
                }
                None => sleep.await,
            }
        }
    }

    async fn delete_batch(
        &self,
        queue: QueueName,
        receipt_handles: &[String],
    ) -> Result<(), QueueError> {
        self.check_up(queue)?;
        let mut queues = self.lock();
        if let Some(state) = queues.get_mut(&queue) {
            for h in receipt_handles {
                // Like SQS, deleting with a stale handle (the message came back and was
                // received again) is not an error; the newer receipt still holds it.
                state.in_flight.remove(h);
            }
        }
        Ok(())
    }

    async fn stats(&self, queue: QueueName) -> Result<QueueStats, QueueError> {
        let mut queues = self.lock();
        let Some(state) = queues.get_mut(&queue) else {
            return Ok(QueueStats::default());
        };
        let now = Instant::now();
        state.expire(now);
        let oldest = state
            .visible
            .iter()
            .chain(state.in_flight.values().map(|(m, _)| m))
            .chain(state.delayed.iter().map(|(m, _)| m))
            .map(|m| m.sent_at)
            .min();
        Ok(QueueStats {
            visible: state.visible.len() as u64,
            in_flight: state.in_flight.len() as u64,
            oldest_age: oldest.map(|t| now.saturating_duration_since(t)),
            delayed: state.delayed.len() as u64,
            dead_letters: state.dead.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate_aws::queue::send_all;
    use floodgate_core::ProcessType;

    const Q: QueueName = QueueName::Intake(ProcessType::Normal);

    #[tokio::test]
    async fn embedded_limits_match_sqs() {
        let q = EmbeddedQueue::uniform(Duration::from_secs(30), 3);
        let eleven: Vec<OutgoingMessage> = (0..11)
            .map(|i| OutgoingMessage::now(i.to_string()))
            .collect();
        assert!(matches!(
            q.send_batch(Q, &eleven).await,
            Err(QueueError::Rejected { .. })
        ));
        let big = vec!["x".repeat(200_000), "y".repeat(100_000)];
        let big_messages: Vec<OutgoingMessage> =
            big.iter().cloned().map(OutgoingMessage::now).collect();
        assert!(matches!(
            q.send_batch(Q, &big_messages).await,
            Err(QueueError::Rejected { .. })
        ));
        // send_all splits the same bodies into legal calls.
        let results = send_all(&q, Q, &big, QueueLimits::default()).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(q.stats(Q).await.unwrap().visible, 2);
    }

    #[tokio::test]
    async fn embedded_duplicates_on_request() {
        let q = EmbeddedQueue::uniform(Duration::from_secs(30), 3);
        q.set_duplicate_every(2);
        let bodies: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        send_all(&q, Q, &bodies, QueueLimits::default()).await;
        assert_eq!(q.duplicated(), 5);
        assert_eq!(q.stats(Q).await.unwrap().visible, 15);
    }

    #[tokio::test]
    async fn embedded_fault_injection() {
        let q = EmbeddedQueue::uniform(Duration::from_secs(30), 3);
        q.set_unavailable(true);
        let r = send_all(&q, Q, &["a".to_string()], QueueLimits::default()).await;
        assert!(matches!(r[0], Err(QueueError::Unavailable { .. })));
        q.set_unavailable(false);
        let r = send_all(&q, Q, &["a".to_string()], QueueLimits::default()).await;
        assert!(r[0].is_ok());
    }

    #[tokio::test]
    async fn embedded_delays_hide_a_message_until_its_time() {
        let q = EmbeddedQueue::uniform(Duration::from_secs(30), 3);
        let m = OutgoingMessage {
            body: "later".into(),
            delay: Duration::from_millis(300),
            deferral: Some(Deferral {
                count: 2,
                first_sent_millis: 7,
            }),
        };
        let too_long = OutgoingMessage {
            delay: Duration::from_secs(901),
            ..m.clone()
        };
        let r = q.send_batch(Q, &[m, too_long]).await.unwrap();
        assert!(r[0].is_ok() && r[1].is_err(), "{r:?}");
        let s = q.stats(Q).await.unwrap();
        assert_eq!((s.visible, s.delayed), (0, 1));
        let started = Instant::now();
        assert!(q.receive(Q, 10, Duration::ZERO).await.unwrap().is_empty());
        let got = q.receive(Q, 10, Duration::from_secs(3)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(
            got[0].deferral,
            Some(Deferral {
                count: 2,
                first_sent_millis: 7
            })
        );
    }
}
