use async_trait::async_trait;
use floodgate_core::envelope::plan_batches;
use floodgate_core::{Knobs, QueueName};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
    /// When it was first sent, in milliseconds since the epoch.
    pub sent_timestamp_millis: i64,
    /// Set when the message is a deferred copy of an earlier one.
    pub deferral: Option<Deferral>,
}

/// How often, and since when, a message's work has been deferred: re-enqueued by its
/// consumer (with a delay) instead of failed, so waiting for a database or a rate budget
/// never spends a receive. Travels as two message attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferral {
    /// Deferrals so far (the next delay doubles with it).
    pub count: u32,
    /// When the original message was first sent (ms since the epoch): the queue's
    /// retention, counted from here, bounds how long work may be deferred.
    pub first_sent_millis: i64,
}

impl Deferral {
    /// From the two attributes' string values; `None` unless both parse.
    pub fn from_attributes(count: Option<&str>, first_sent: Option<&str>) -> Option<Self> {
        Some(Deferral {
            count: count?.trim().parse().ok()?,
            first_sent_millis: first_sent?.trim().parse().ok()?,
        })
    }
}

/// Message attribute names that carry a [`Deferral`].
pub const DEFERRALS_ATTRIBUTE: &str = "FloodgateDeferrals";
pub const FIRST_SENT_ATTRIBUTE: &str = "FloodgateFirstSent";

/// Bytes SQS counts for the two deferral attributes (names, types and values), kept as
/// headroom when a deferred message is packed into a batch.
pub const DEFERRAL_ATTRIBUTE_BYTES: usize = 96;

/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// A message to send: its body, how long it stays invisible first (`DelaySeconds`, at most
/// 15 minutes; SQS counts whole seconds, rounded up), and its deferral, if it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub delay: Duration,
    pub deferral: Option<Deferral>,
}

impl OutgoingMessage {
    /// A message visible at once.
    pub fn now(body: String) -> Self {
        OutgoingMessage {
            body,
            delay: Duration::ZERO,
            deferral: None,
        }
    }

    /// The bytes SQS counts against its size limits.
    pub fn size(&self) -> usize {
        self.body.len() + self.deferral.map_or(0, |_| DEFERRAL_ATTRIBUTE_BYTES)
    }
}

/// A queue's depth at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub visible: u64,
    pub in_flight: u64,
    /// Age of the oldest message not yet deleted (embedded only; SQS reports it to
    /// CloudWatch, not through the API).
    pub oldest_age: Option<Duration>,
    /// Messages sent with a delay that has not passed yet.
    pub delayed: u64,
    /// Messages in the queue's dead-letter queue.
    pub dead_letters: u64,
}

/// The SQS limits every adapter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_message_bytes: usize,
    pub max_batch_entries: usize,
}

impl QueueLimits {
    pub fn from_knobs(k: &Knobs) -> Self {
        QueueLimits {
            max_message_bytes: k.sqs.max_message_bytes,
            max_batch_entries: k.sqs.max_batch_entries,
        }
    }
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits::from_knobs(&Knobs::embedded())
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QueueError {
    /// The service did not take the request (network, throttling, outage). Retryable.
    #[error("queue {queue} unavailable: {message}")]
    Unavailable { queue: String, message: String },
    /// The service refused this message or call for what it is (too large, malformed).
    #[error("queue {queue} rejected the message: {message}")]
    Rejected { queue: String, message: String },
    #[error("queue {queue} is not configured: set {env_var}")]
    NotConfigured { queue: String, env_var: String },
}

impl QueueError {
    /// `Rejected` when the sender is at fault (the message itself), else `Unavailable`.
    pub fn classified(queue: QueueName, sender_fault: bool, message: String) -> Self {
        let queue = queue.as_string();
        if sender_fault {
            QueueError::Rejected { queue, message }
        } else {
            QueueError::Unavailable { queue, message }
        }
    }
}

/// The queue port. One implementation per real backend: SQS and the embedded queue.
#[async_trait]
pub trait Queue: Send + Sync {
    /// One `SendMessageBatch` call (at most `max_batch_entries` messages and
    /// `max_message_bytes` in total). One result per message, in order: `Ok` only for a
    /// message the service acknowledged; `Err` for the whole call when nothing was sent.
    async fn send_batch(
        &self,
        queue: QueueName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError>;

    /// Receives up to `max` (≤ 10) messages, long-polling up to `wait`. Each becomes
    /// invisible for the queue's visibility timeout.
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes received messages (the ones a consumer finished).
    async fn delete_batch(
        &self,
        queue: QueueName,
        receipt_handles: &[String],
    ) -> Result<(), QueueError>;

    async fn stats(&self, queue: QueueName) -> Result<QueueStats, QueueError>;
}

/// Sends any number of bodies to `queue`, visible at once: see [`send_messages`].
pub async fn send_all(
    port: &dyn Queue,
    queue: QueueName,
    bodies: &[String],
    limits: QueueLimits,
) -> Vec<Result<(), QueueError>> {
    let messages: Vec<OutgoingMessage> = bodies.iter().cloned().map(OutgoingMessage::now).collect();
    send_messages(port, queue, &messages, limits).await
}

/// Sends any number of messages to `queue`: groups them into calls within the SQS limits
/// and runs the calls concurrently. Returns one result per message, in order.
pub async fn send_messages(
    port: &dyn Queue,
    queue: QueueName,
    messages: &[OutgoingMessage],
    limits: QueueLimits,
) -> Vec<Result<(), QueueError>> {
    let sizes: Vec<usize> = messages.iter().map(OutgoingMessage::size).collect();
    let plan = plan_batches(&sizes, limits.max_batch_entries, limits.max_message_bytes);
    let calls = plan.iter().map(|idx| async move {
        let chunk: Vec<OutgoingMessage> = idx.iter().map(|&i| messages[i].clone()).collect();
        let outcome = port.send_batch(queue, &chunk).await;
        (idx, outcome)
    });
    let mut results: Vec<Result<(), QueueError>> = vec![Ok(()); messages.len()];
    for (idx, outcome) in futures::future::join_all(calls).await {
        match outcome {
            Ok(per_entry) => {
                for (&i, r) in idx.iter().zip(per_entry) {
                    results[i] = r;
                }
            }
            Err(e) => {
                for &i in idx {
                    results[i] = Err(e.clone());
                }
            }
        }
    }
    results
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// EmbeddedQueue
// ---------------------------------------------------------------------------------------

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
impl Queue for EmbeddedQueue {
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

// ---------------------------------------------------------------------------------------
// SqsQueue
// ---------------------------------------------------------------------------------------

/// Bounds on one SQS call. The SDK does not retry: every caller has its own retry (ingest's
/// bounded policy, which must end inside its 10 s function timeout; the consumers, SQS's
/// redelivery), and stacked retries would outlast it. Long polls (`ReceiveMessage` waits
/// up to 20 s) get their wait on top.
pub const SQS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(2_500);
/// One attempt of a setup call (creating queues for a local run).
const SETUP_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The queue port over Amazon SQS (or any SQS-compatible endpoint such as moto server).
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    urls: HashMap<QueueName, String>,
    dlq_urls: HashMap<QueueName, String>,
}

fn sdk_error<E>(
    queue: QueueName,
    e: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::fmt::Debug,
{
    use aws_sdk_sqs::error::ProvideErrorMetadata;
    let message = match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
        None => format!("{e:?}").chars().take(300).collect(),
    };
    let sender_fault = matches!(
        e.code(),
        Some(
            "BatchRequestTooLong"
                | "TooManyEntriesInBatchRequest"
                | "InvalidMessageContents"
                | "AWS.SimpleQueueService.BatchRequestTooLong"
        )
    );
    QueueError::classified(queue, sender_fault, message)
}

/// Reads a `SendMessageBatch` answer: an entry is sent only if it is listed in
/// `Successful`; one listed in `Failed` carries SQS's reason, and one listed in neither
/// (a malformed or truncated answer) is unacknowledged — never taken as sent, since a 201
/// for a notification that was not enqueued would lose it.
pub fn acknowledged(
    queue: QueueName,
    entries: usize,
    out: &aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput,
) -> Vec<Result<(), QueueError>> {
    let mut results: Vec<Result<(), QueueError>> = (0..entries)
        .map(|_| {
            Err(QueueError::Unavailable {
                queue: queue.as_string(),
                message: "entry not acknowledged by SendMessageBatch".into(),
            })
        })
        .collect();
    let index = |id: &str| id.parse::<usize>().ok().filter(|&i| i < entries);
    for s in out.successful() {
        if let Some(i) = index(s.id()) {
            results[i] = Ok(());
        }
    }
    for f in out.failed() {
        if let Some(i) = index(f.id()) {
            let message = format!("{}: {}", f.code(), f.message().unwrap_or(""));
            results[i] = Err(QueueError::classified(queue, f.sender_fault(), message));
        }
    }
    results
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        urls: HashMap<QueueName, String>,
        dlq_urls: HashMap<QueueName, String>,
    ) -> Self {
        SqsQueue {
            client,
            urls,
            dlq_urls,
        }
    }

    /// Queue URLs from `FLOODGATE_QUEUE_URL_<NAME>` (and `FLOODGATE_DLQ_URL_<NAME>` for
    /// depth reporting). Only the queues a function uses need to be set.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Self {
        let mut urls = HashMap::new();
        let mut dlq_urls = HashMap::new();
        for q in QueueName::ALL {
            if let Ok(u) = std::env::var(q.url_env_var()) {
                urls.insert(q, u);
            }
            let dlq_var = q.url_env_var().replace("_QUEUE_URL_", "_DLQ_URL_");
            if let Ok(u) = std::env::var(dlq_var) {
                dlq_urls.insert(q, u);
            }
        }
        SqsQueue::new(SqsQueue::client(sdk), urls, dlq_urls)
    }

    /// An SQS client whose every attempt is bounded, so a caller (ingest answering a
    /// client) gets an error it can map to 503 instead of hanging until its own timeout.
    pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(SQS_CONNECT_TIMEOUT)
            .operation_attempt_timeout(SQS_ATTEMPT_TIMEOUT)
            .operation_timeout(SQS_ATTEMPT_TIMEOUT)
            .build();
        let config = aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .timeout_config(timeouts)
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    /// Creates the seven queues and their DLQs (with a redrive policy), named
    /// `<prefix>-<queue>` and `<prefix>-<queue>-dlq`, for local runs against moto.
    pub async fn create_all(
        client: aws_sdk_sqs::Client,
        prefix: &str,
        visibility_timeout: Duration,
        max_receive_count: u32,
    ) -> Result<Self, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        // Setup, not a request path: the bounds of `SqsQueue::client` (one 2.5 s attempt)
        // are for callers that retry themselves; a cold endpoint may take longer to create
        // the first queue, so setup gets retries and a longer attempt. The queue keeps the
        // bounded client for its work.
        let setup = aws_sdk_sqs::Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
                .timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(SETUP_ATTEMPT_TIMEOUT)
                        .operation_timeout(SETUP_ATTEMPT_TIMEOUT * 3)
                        .build(),
                )
                .build(),
        );
        let mut urls = HashMap::new();
        let mut dlq_urls = HashMap::new();
        for q in QueueName::ALL {
            let dlq = setup
                .create_queue()
                .queue_name(format!("{prefix}-{q}-dlq"))
                .send()
                .await
                .map_err(|e| sdk_error(q, e))?;
            let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
            let attrs = setup
                .get_queue_attributes()
                .queue_url(&dlq_url)
                .attribute_names(A::QueueArn)
                .send()
                .await
                .map_err(|e| sdk_error(q, e))?;
            let dlq_arn = attrs
                .attributes()
                .and_then(|a| a.get(&A::QueueArn))
                .cloned()
                .unwrap_or_default();
            let redrive = serde_json::json!({
                "deadLetterTargetArn": dlq_arn,
                "maxReceiveCount": max_receive_count.to_string(),
            });
            let main = setup
                .create_queue()
                .queue_name(format!("{prefix}-{q}"))
                .attributes(
                    A::VisibilityTimeout,
                    visibility_timeout.as_secs().to_string(),
                )
                .attributes(A::RedrivePolicy, redrive.to_string())
                .send()
                .await
                .map_err(|e| sdk_error(q, e))?;
            urls.insert(q, main.queue_url().unwrap_or_default().to_string());
            dlq_urls.insert(q, dlq_url);
        }
        Ok(SqsQueue::new(client, urls, dlq_urls))
    }

    pub fn url(&self, queue: QueueName) -> Result<&str, QueueError> {
        self.urls
            .get(&queue)
            .map(String::as_str)
            .ok_or_else(|| QueueError::NotConfigured {
                queue: queue.as_string(),
                env_var: queue.url_env_var(),
            })
    }

    pub fn urls(&self) -> &HashMap<QueueName, String> {
        &self.urls
    }

    async fn count(&self, queue: QueueName, url: &str) -> Result<(u64, u64, u64), QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| sdk_error(queue, e))?;
        let get = |a: A| -> u64 {
            out.attributes()
                .and_then(|m| m.get(&a))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            get(A::ApproximateNumberOfMessages),
            get(A::ApproximateNumberOfMessagesNotVisible),
            get(A::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(
        &self,
        queue: QueueName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
        let url = self.url(queue)?;
        let rejected = |message: String| QueueError::Rejected {
            queue: queue.as_string(),
            message,
        };
        let number = |v: String| {
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value(v)
                .build()
                .map_err(|e| rejected(e.to_string()))
        };
        let mut entries = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            // SQS counts whole seconds: round up, so a delay is never cut short.
            let delay = m.delay.min(MAX_DELAY).as_millis().div_ceil(1000) as i32;
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&m.body)
                .delay_seconds(delay);
            if let Some(d) = m.deferral {
                entry = entry
                    .message_attributes(DEFERRALS_ATTRIBUTE, number(d.count.to_string())?)
                    .message_attributes(
                        FIRST_SENT_ATTRIBUTE,
                        number(d.first_sent_millis.to_string())?,
                    );
            }
            entries.push(entry.build().map_err(|e| rejected(e.to_string()))?);
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| sdk_error(queue, e))?;
        Ok(acknowledged(queue, messages.len(), &out))
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        use aws_sdk_sqs::types::MessageSystemAttributeName as M;
        let url = self.url(queue)?;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(M::ApproximateReceiveCount)
            .message_system_attribute_names(M::SentTimestamp)
            .message_attribute_names(DEFERRALS_ATTRIBUTE)
            .message_attribute_names(FIRST_SENT_ATTRIBUTE)
            .customize()
            // A long poll legitimately outlasts the usual attempt bound.
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(
                    aws_config::timeout::TimeoutConfig::builder()
                        .operation_attempt_timeout(wait + SQS_ATTEMPT_TIMEOUT)
                        .operation_timeout(wait + SQS_ATTEMPT_TIMEOUT)
                        .build(),
                ),
            )
            .send()
            .await
            .map_err(|e| sdk_error(queue, e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let attr = |a: M| m.attributes().and_then(|x| x.get(&a)).cloned();
                let user = |name: &str| {
                    m.message_attributes()
                        .and_then(|x| x.get(name))
                        .and_then(|v| v.string_value())
                        .map(str::to_string)
                };
                ReceivedMessage {
                    message_id: m.message_id().unwrap_or_default().to_string(),
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count: attr(M::ApproximateReceiveCount)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1),
                    sent_timestamp_millis: attr(M::SentTimestamp)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    deferral: Deferral::from_attributes(
                        user(DEFERRALS_ATTRIBUTE).as_deref(),
                        user(FIRST_SENT_ATTRIBUTE).as_deref(),
                    ),
                }
            })
            .collect())
    }

    async fn delete_batch(
        &self,
        queue: QueueName,
        receipt_handles: &[String],
    ) -> Result<(), QueueError> {
        use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
        let url = self.url(queue)?;
        for chunk in receipt_handles.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .build()
                        .ok()
                })
                .collect();
            self.client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error(queue, e))?;
        }
        Ok(())
    }

    async fn stats(&self, queue: QueueName) -> Result<QueueStats, QueueError> {
        let url = self.url(queue)?.to_string();
        let (visible, in_flight, delayed) = self.count(queue, &url).await?;
        let dead_letters = match self.dlq_urls.get(&queue) {
            Some(d) => {
                let (v, i, _) = self.count(queue, &d.clone()).await?;
                v + i
            }
            None => 0,
        };
        Ok(QueueStats {
            visible,
            in_flight,
            oldest_age: None,
            delayed,
            dead_letters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn only_entries_listed_as_successful_count_as_sent() {
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
        use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};
        let ok = SendMessageBatchResultEntry::builder()
            .id("0")
            .message_id("a")
            .md5_of_message_body("x")
            .build()
            .unwrap();
        let failed = BatchResultErrorEntry::builder()
            .id("2")
            .code("InternalError")
            .sender_fault(false)
            .build()
            .unwrap();
        let out = SendMessageBatchOutput::builder()
            .successful(ok)
            .failed(failed)
            .build()
            .unwrap();
        let r = acknowledged(Q, 4, &out);
        assert!(r[0].is_ok());
        // Entry 1 and 3 are in neither list: not acknowledged, so not sent.
        assert!(matches!(r[1], Err(QueueError::Unavailable { .. })));
        assert!(matches!(r[2], Err(QueueError::Unavailable { .. })));
        assert!(matches!(r[3], Err(QueueError::Unavailable { .. })));
        let empty = SendMessageBatchOutput::builder()
            .set_successful(Some(vec![]))
            .set_failed(Some(vec![]))
            .build()
            .unwrap();
        assert!(acknowledged(Q, 2, &empty).iter().all(Result::is_err));
    }
}
