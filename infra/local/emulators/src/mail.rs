//! The mailbox simulator: the local stack's stand-in for SES. It behaves like SES's mailbox
//! simulator and publishes the matching SES events, SNS-wrapped as SES → SNS → SQS would,
//! onto the receipts queue through the queue port. It can throttle like SES and counts
//! accepted sends per notification, so tests can prove "at most once".

use crate::ses_events::{MailMeta, ses_event_json, sns_envelope};
use async_trait::async_trait;
use floodgate_aws::mail::{Accepted, Email, MailError, Mailer};
use floodgate_aws::queue::{QueueLimits, QueueSender, send_all};
use floodgate_core::QueueName;
use floodgate_core::ses_event::SimulatedRecipient;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How the simulator throttles.
#[derive(Debug, Clone, Copy, Default)]
struct ThrottlePlan {
    /// Fraction of calls answered with a throttle, at random.
    fraction: f64,
    /// Every call before this instant is throttled.
    until: Option<Instant>,
}

struct SimInner {
    queue: Arc<dyn QueueSender>,
    limits: QueueLimits,
    delay: Mutex<(Duration, Duration)>,
    throttle: Mutex<ThrottlePlan>,
    configuration_set: String,
    topic_arn: String,
    calls: AtomicU64,
    throttled: AtomicU64,
    /// SES's own limit on the account's sending rate, when one is set.
    account_rate: Mutex<Option<Arc<governor::DefaultDirectRateLimiter>>>,
    /// Calls throttled by that limit (a subset of `throttled`).
    rate_throttled: AtomicU64,
    /// Accepted calls per second since the epoch.
    per_second: Mutex<BTreeMap<i64, u64>>,
    /// When each notification was first accepted.
    accepted_at: Mutex<HashMap<Uuid, chrono::DateTime<chrono::Utc>>>,
    accepted: Mutex<HashMap<Uuid, u32>>,
    /// The extra headers of each accepted email that had any (a blast has none, so this
    /// stays small).
    headers: Mutex<HashMap<Uuid, Vec<(String, String)>>>,
    /// The Reply-To of each accepted email that had one.
    reply_tos: Mutex<HashMap<Uuid, String>>,
    pending: AtomicUsize,
    idle: tokio::sync::Notify,
    published: AtomicU64,
    publish_failures: AtomicU64,
}

/// SES's mailbox simulator, in process (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct SimulatorMailer {
    inner: Arc<SimInner>,
}

impl std::fmt::Debug for SimulatorMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatorMailer")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// How many times the simulator tries to publish an event batch before giving up (SNS
/// retries delivery to SQS much longer; this bounds a test that switched the queue off).
const PUBLISH_ATTEMPTS: u32 = 20;

impl SimulatorMailer {
    /// Publishes events onto `queue`'s receipts queue 5–50 ms after each accepted send.
    pub fn new(queue: Arc<dyn QueueSender>) -> Self {
        SimulatorMailer {
            inner: Arc::new(SimInner {
                queue,
                limits: QueueLimits::default(),
                delay: Mutex::new((Duration::from_millis(5), Duration::from_millis(50))),
                throttle: Mutex::new(ThrottlePlan::default()),
                configuration_set: "floodgate-local".into(),
                topic_arn: "arn:aws:sns:us-east-1:000000000000:floodgate-ses-events".into(),
                calls: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                account_rate: Mutex::new(None),
                rate_throttled: AtomicU64::new(0),
                per_second: Mutex::new(BTreeMap::new()),
                accepted_at: Mutex::new(HashMap::new()),
                accepted: Mutex::new(HashMap::new()),
                headers: Mutex::new(HashMap::new()),
                reply_tos: Mutex::new(HashMap::new()),
                pending: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                published: AtomicU64::new(0),
                publish_failures: AtomicU64::new(0),
            }),
        }
    }

    /// The range of the random delay between acceptance and the events.
    pub fn set_event_delay(&self, min: Duration, max: Duration) {
        *lock(&self.inner.delay) = (min, max.max(min));
    }

    /// Throttles this fraction of calls (0.0–1.0), at random.
    pub fn set_throttle_fraction(&self, fraction: f64) {
        lock(&self.inner.throttle).fraction = fraction.clamp(0.0, 1.0);
    }

    /// Throttles every call for the next `window`.
    pub fn throttle_for(&self, window: Duration) {
        lock(&self.inner.throttle).until = Some(Instant::now() + window);
    }

    /// Enforces the account's maximum sending rate as SES does: `rate` emails per second,
    /// with bursts of up to one second's worth (a token bucket); calls beyond it are
    /// throttled and counted by [`SimulatorMailer::rate_throttled`].
    pub fn set_account_rate(&self, rate: f64) {
        let limiter = (rate.is_finite() && rate > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / rate))
            .and_then(governor::Quota::with_period)
            .map(|q| {
                let burst = std::num::NonZeroU32::new(rate.ceil() as u32)
                    .unwrap_or(std::num::NonZeroU32::MIN);
                Arc::new(governor::RateLimiter::direct(q.allow_burst(burst)))
            });
        *lock(&self.inner.account_rate) = limiter;
    }

    /// Calls throttled because they passed the account's rate.
    pub fn rate_throttled(&self) -> u64 {
        self.inner.rate_throttled.load(Ordering::Relaxed)
    }

    /// Accepted calls in each second (Unix time), in order.
    pub fn accepted_per_second(&self) -> Vec<(i64, u64)> {
        lock(&self.inner.per_second)
            .iter()
            .map(|(s, n)| (*s, *n))
            .collect()
    }

    /// When the notification's email was first accepted.
    pub fn accepted_at(&self, notification_id: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
        lock(&self.inner.accepted_at).get(&notification_id).copied()
    }

    /// Every call so far, throttled ones included.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    pub fn throttled(&self) -> u64 {
        self.inner.throttled.load(Ordering::Relaxed)
    }

    /// How many times each notification was accepted (sent).
    pub fn accepted(&self) -> HashMap<Uuid, u32> {
        lock(&self.inner.accepted).clone()
    }

    /// The extra headers (name, value) the accepted email of a notification carried.
    pub fn headers_of(&self, notification_id: Uuid) -> Vec<(String, String)> {
        lock(&self.inner.headers)
            .get(&notification_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The Reply-To address the accepted email of a notification carried.
    pub fn reply_to_of(&self, notification_id: Uuid) -> Option<String> {
        lock(&self.inner.reply_tos).get(&notification_id).cloned()
    }

    /// Event messages put on the receipts queue so far.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    pub fn publish_failures(&self) -> u64 {
        self.inner.publish_failures.load(Ordering::Relaxed)
    }

    /// Waits until every event scheduled so far is on the receipts queue.
    pub async fn settled(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.inner.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn should_throttle(&self) -> bool {
        let plan = *lock(&self.inner.throttle);
        plan.until.is_some_and(|u| Instant::now() < u)
            || (plan.fraction > 0.0 && rand::random_bool(plan.fraction))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked (plain counters/plans).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decrements the pending count when a publishing task ends, however it ends.
struct PendingGuard(Arc<SimInner>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[async_trait]
impl Mailer for SimulatorMailer {
    async fn send(&self, email: &Email) -> Result<Accepted, MailError> {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let over_rate = {
            let limiter = lock(&self.inner.account_rate).clone();
            limiter.is_some_and(|l| l.check().is_err())
        };
        if over_rate {
            self.inner.rate_throttled.fetch_add(1, Ordering::Relaxed);
        }
        if over_rate || self.should_throttle() {
            self.inner.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(MailError::Throttled(
                "TooManyRequestsException (429): Maximum sending rate exceeded.".into(),
            ));
        }
        let sent_at = chrono::Utc::now();
        *lock(&self.inner.per_second)
            .entry(sent_at.timestamp())
            .or_insert(0) += 1;
        lock(&self.inner.accepted_at)
            .entry(email.notification_id)
            .or_insert(sent_at);
        let ses_message_id = format!(
            "0100{:012x}-{}-000000",
            sent_at.timestamp_millis(),
            Uuid::new_v4()
        );
        *lock(&self.inner.accepted)
            .entry(email.notification_id)
            .or_insert(0) += 1;
        if !email.headers.is_empty() {
            lock(&self.inner.headers).insert(email.notification_id, email.headers.clone());
        }
        if let Some(r) = &email.reply_to {
            lock(&self.inner.reply_tos).insert(email.notification_id, r.clone());
        }

        let (min, max) = *lock(&self.inner.delay);
        let delay = if max > min {
            rand::random_range(min..max)
        } else {
            min
        };
        let recipient = SimulatedRecipient::of(&email.to);
        let meta = MailMeta {
            ses_message_id: &ses_message_id,
            notification_id: email.notification_id,
            process_type: email.process_type.as_str(),
            from: &email.from,
            to: &email.to,
            subject: &email.subject,
            sent_at,
            configuration_set: &self.inner.configuration_set,
        };
        let at = sent_at + chrono::Duration::from_std(delay).unwrap_or_default();
        let bodies: Vec<String> = recipient
            .events()
            .iter()
            .map(|k| {
                sns_envelope(&ses_event_json(*k, &meta, at), &self.inner.topic_arn, at).to_string()
            })
            .collect();
        self.inner.pending.fetch_add(1, Ordering::SeqCst);
        let guard = PendingGuard(self.inner.clone());
        tokio::spawn(async move {
            let inner = guard.0.clone();
            tokio::time::sleep(delay).await;
            let mut left = bodies;
            for attempt in 0..PUBLISH_ATTEMPTS {
                let results = send_all(
                    inner.queue.as_ref(),
                    QueueName::Receipts,
                    &left,
                    inner.limits,
                )
                .await;
                let mut retry = Vec::new();
                for (body, r) in left.into_iter().zip(results) {
                    match r {
                        Ok(()) => {
                            inner.published.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => retry.push(body),
                    }
                }
                if retry.is_empty() {
                    return;
                }
                left = retry;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
            inner
                .publish_failures
                .fetch_add(left.len() as u64, Ordering::Relaxed);
            tracing::error!(
                events = left.len(),
                "simulator could not publish SES events to the receipts queue"
            );
        });
        Ok(Accepted { ses_message_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::EmbeddedQueue;
    use floodgate_aws::queue::Queue;
    use floodgate_core::NotificationStatus;
    use floodgate_core::ProcessType;
    use floodgate_core::ses_event::decode_receipt;

    fn email(to: &str) -> Email {
        Email {
            notification_id: Uuid::now_v7(),
            process_type: ProcessType::Normal,
            from: "noreply@example.com".into(),
            to: to.into(),
            subject: "s".into(),
            html: "<p>h</p>".into(),
            text: "h".into(),
            headers: Vec::new(),
            reply_to: None,
        }
    }

    #[tokio::test]
    async fn simulator_publishes_the_events_of_each_address() {
        let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
        let sim = SimulatorMailer::new(queue.clone());
        let cases = [
            (
                "success+1@simulator.amazonses.com",
                2,
                NotificationStatus::Delivered,
            ),
            (
                "bounce@simulator.amazonses.com",
                2,
                NotificationStatus::PermanentFailure,
            ),
            (
                "complaint@simulator.amazonses.com",
                3,
                NotificationStatus::Delivered,
            ),
            ("someone@example.com", 2, NotificationStatus::Delivered),
        ];
        let mut expected = HashMap::new();
        for (to, events, status) in cases {
            let e = email(to);
            let accepted = sim.send(&e).await.unwrap();
            assert!(accepted.ses_message_id.starts_with("0100"));
            expected.insert(e.notification_id, (events, status, accepted.ses_message_id));
        }
        sim.settled().await;
        assert_eq!(sim.published(), 9);
        let mut got: HashMap<Uuid, Vec<NotificationStatus>> = HashMap::new();
        loop {
            let msgs = queue
                .receive(QueueName::Receipts, 10, Duration::ZERO)
                .await
                .unwrap();
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                let r = decode_receipt(&m.body).unwrap();
                assert_eq!(r.ses_message_id, expected[&r.notification_id].2);
                got.entry(r.notification_id)
                    .or_default()
                    .push(r.status.unwrap());
            }
        }
        for (id, (events, status, _)) in expected {
            let s = &got[&id];
            assert_eq!(s.len(), events);
            assert_eq!(
                floodgate_core::status::fold_statuses(NotificationStatus::Created, s.clone()),
                status
            );
        }
    }

    #[tokio::test]
    async fn simulator_throttles_a_fraction_and_during_a_window() {
        let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
        let sim = SimulatorMailer::new(queue);
        sim.set_throttle_fraction(0.3);
        let mut throttled = 0;
        for _ in 0..1000 {
            match sim.send(&email("success@simulator.amazonses.com")).await {
                Err(MailError::Throttled(_)) => throttled += 1,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert!((200..400).contains(&throttled), "{throttled}");
        assert_eq!(sim.throttled(), throttled);
        assert_eq!(sim.accepted().len() as u64, 1000 - throttled);
        sim.set_throttle_fraction(0.0);
        sim.throttle_for(Duration::from_millis(200));
        assert!(sim.send(&email("a@example.com")).await.is_err());
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(sim.send(&email("a@example.com")).await.is_ok());
        assert_eq!(sim.calls(), 1002);
    }

    #[tokio::test]
    async fn simulator_enforces_the_account_rate_with_a_one_second_burst() {
        let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
        let sim = SimulatorMailer::new(queue);
        // 4/s: one token every 250 ms, so a loaded machine's slow calls barely refill it.
        sim.set_account_rate(4.0);
        let started = Instant::now();
        // A full bucket: one second's worth at once, then the 5th is over the rate.
        assert_eq!(futures_ok(&sim, 4).await, 4);
        let fifth = sim.send(&email("a@example.com")).await;
        if started.elapsed() < Duration::from_millis(250) {
            assert!(matches!(fifth, Err(MailError::Throttled(_))), "{fifth:?}");
            assert_eq!(sim.rate_throttled(), 1);
        }
        // Half a second later the bucket holds two more (three if the calls were slow).
        tokio::time::sleep(Duration::from_millis(520)).await;
        let ok = futures_ok(&sim, 6).await;
        assert!((2..=3).contains(&ok), "{ok}");
        assert!(sim.rate_throttled() >= 3, "{}", sim.rate_throttled());
        let accepted: u64 = sim.accepted_per_second().iter().map(|(_, n)| n).sum();
        assert_eq!(
            accepted + sim.rate_throttled(),
            11,
            "every call counted once"
        );
        let e = email("b@example.com");
        assert_eq!(sim.accepted_at(e.notification_id), None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = chrono::Utc::now();
        sim.send(&e).await.unwrap();
        let at = sim.accepted_at(e.notification_id).unwrap();
        assert!(at >= before && at <= chrono::Utc::now());
    }

    async fn futures_ok(sim: &SimulatorMailer, n: usize) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            if sim.send(&email("a@example.com")).await.is_ok() {
                ok += 1;
            }
        }
        ok
    }
}
