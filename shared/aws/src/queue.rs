use async_trait::async_trait;
use floodgate_core::envelope::plan_batches;
use floodgate_core::{Knobs, QueueName};
use std::collections::HashMap;
use std::time::Duration;

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

/// The sending side of the queue port: all a function needs (none of them receives; Lambda's
/// event source mappings do that on AWS, the local ESM emulation locally).
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// One `SendMessageBatch` call (at most `max_batch_entries` messages and
    /// `max_message_bytes` in total). One result per message, in order: `Ok` only for a
    /// message the service acknowledged; `Err` for the whole call when nothing was sent.
    async fn send_batch(
        &self,
        queue: QueueName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError>;
}

/// The whole queue port, consumers' side included: what an event source mapping does. One
/// implementation per backend: SQS here, the embedded queue in the local stack.
#[async_trait]
pub trait Queue: QueueSender {
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
    port: &dyn QueueSender,
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
    port: &dyn QueueSender,
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

// ---------------------------------------------------------------------------------------
// SqsQueue
// ---------------------------------------------------------------------------------------

/// Bounds on one SQS call. The SDK does not retry: every caller has its own retry (ingest's
/// bounded policy, which must end inside its 10 s function timeout; the consumers, SQS's
/// redelivery), and stacked retries would outlast it. Long polls (`ReceiveMessage` waits
/// up to 20 s) get their wait on top. 1.5 s is far above a healthy call's tens of ms and
/// keeps ingest's three attempts (4.5 s plus 0.75 s back-off) inside its timeout together
/// with a cold-cache database look-up; infra/locals.tf checks that sum at plan time.
pub const SQS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_500);
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
        // Setup, not a request path: the bounds of `SqsQueue::client` (one 1.5 s attempt)
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
impl QueueSender for SqsQueue {
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
}

#[async_trait]
impl Queue for SqsQueue {
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
