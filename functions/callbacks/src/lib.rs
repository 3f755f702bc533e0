//! `callbacks`: the callbacks queue → POSTs to the services' own endpoints.
//!
//! Notify's contract: the JSON body the statement that set the status built,
//! `Authorization: Bearer <token>`, a 5 s timeout per request; retried only on a 5xx, a
//! 429, a timeout or a connection error, 5 times about 5 minutes apart; a 4xx is final.
//! GC Notify's protection: a service whose endpoint failed 25 times within 5 minutes is
//! suspended for 10 minutes (its callbacks wait, without trying), then resumes by itself.
//! (All of these numbers are knobs, `callbacks` in `infra/knobs.json`.)
//!
//! Each message is one callback, and each is answered alone: a retry is a deferral (the
//! job back on the queue after the retry delay, its count carried along), so a failing
//! endpoint spends no receives and holds up nothing but its own callbacks; the calls of one
//! batch run concurrently, so a hanging endpoint delays no other service's callbacks
//! beyond its own timeout. The function touches no database.
//!
//! | answer | callback |
//! |---|---|
//! | 2xx | delivered |
//! | 4xx other than 429 | refused by the client: final, logged |
//! | 5xx, 429, timeout, connection error | retried after the delay, up to the limit; then failed, logged (`event = "callback_failed"`) |
//! | service suspended | waits until the suspension ends, no attempt counted |
//! | undecodable message, or a URL that is not allowed | the message fails alone / dropped with a log |

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use base64::Engine;
use floodgate_aws::{DeferPolicy, Ledger, Msg, QueueLimits, QueueSender, UnidentifiedRecord};
use floodgate_core::auth::SecretBox;
use floodgate_core::callback::{CallbackJob, check_callback_url};
use floodgate_core::knobs::CallbackKnobs;
use floodgate_core::{Knobs, QueueName};
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Calls in flight at once within one invocation.
const MAX_IN_FLIGHT: usize = 32;

/// The delivery rules, from the knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackPolicy {
    pub request_timeout: Duration,
    pub retry_delay: Duration,
    pub max_retries: u32,
    pub suspend_after_failures: u32,
    pub failure_window: Duration,
    pub suspend_for: Duration,
}

impl CallbackPolicy {
    pub fn from_knobs(k: &CallbackKnobs) -> Self {
        let s = |n: u32| Duration::from_secs(u64::from(n));
        CallbackPolicy {
            request_timeout: s(k.request_timeout_seconds),
            retry_delay: s(k.retry_delay_seconds),
            max_retries: k.max_retries,
            suspend_after_failures: k.suspend_after_failures,
            failure_window: s(k.failure_window_seconds),
            suspend_for: s(k.suspend_seconds),
        }
    }

    /// Every interval but the request timeout divided by `factor` (time-scaled local runs;
    /// the timeout bounds a real network call).
    pub fn scaled(self, factor: f64) -> Self {
        let f = factor.max(1e-3);
        CallbackPolicy {
            retry_delay: self.retry_delay.div_f64(f),
            failure_window: self.failure_window.div_f64(f),
            suspend_for: self.suspend_for.div_f64(f),
            ..self
        }
    }
}

/// Per-service failure counts and suspensions, within one instance (a Lambda instance sees
/// a share of the traffic, so a failing endpoint is suspended by each instance that sees
/// enough of its failures).
#[derive(Debug)]
pub struct Breaker {
    policy: CallbackPolicy,
    services: HashMap<Uuid, (VecDeque<Instant>, Option<Instant>)>,
}

impl Breaker {
    pub fn new(policy: CallbackPolicy) -> Self {
        Breaker {
            policy,
            services: HashMap::new(),
        }
    }

    /// How much longer the service is suspended, if it is.
    pub fn suspended_for(&mut self, service: Uuid, now: Instant) -> Option<Duration> {
        let (_, until) = self.services.get_mut(&service)?;
        match *until {
            Some(u) if u > now => Some(u - now),
            Some(_) => {
                *until = None;
                None
            }
            None => None,
        }
    }

    /// Records a failure; true when it suspends the service.
    pub fn failure(&mut self, service: Uuid, now: Instant) -> bool {
        let p = self.policy;
        let (failures, until) = self.services.entry(service).or_default();
        failures.push_back(now);
        while failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > p.failure_window)
        {
            failures.pop_front();
        }
        if failures.len() >= p.suspend_after_failures as usize && until.is_none_or(|u| u <= now) {
            *until = Some(now + p.suspend_for);
            failures.clear();
            return true;
        }
        false
    }

    pub fn success(&mut self, service: Uuid) {
        if let Some((failures, _)) = self.services.get_mut(&service) {
            failures.clear();
        }
    }
}

/// What one invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbacksReport {
    pub messages: usize,
    pub malformed: usize,
    pub delivered: usize,
    /// Answered with a 4xx (not 429): final.
    pub refused: usize,
    /// Put back for a retry.
    pub retried: usize,
    /// Out of retries: given up.
    pub failed: usize,
    /// Waiting for their service's suspension to end.
    pub suspended: usize,
    /// Services this invocation suspended.
    pub suspensions: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum CallbacksError {
    #[error(transparent)]
    UnidentifiedRecord(#[from] UnidentifiedRecord),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How one call ended.
enum Answer {
    Delivered,
    Refused(u16),
    Retry(String),
}

/// The function, built once per instance.
pub struct Callbacks {
    http: reqwest::Client,
    secrets: Arc<SecretBox>,
    queue: Arc<dyn QueueSender>,
    limits: QueueLimits,
    defer: DeferPolicy,
    policy: CallbackPolicy,
    allow_loopback_http: bool,
    breaker: Mutex<Breaker>,
}

impl Callbacks {
    /// The one constructor. `allow_loopback_http`: the local stack's receiver is plain
    /// http on 127.0.0.1; on AWS only https is called.
    pub fn new(
        queue: Arc<dyn QueueSender>,
        secrets: Arc<SecretBox>,
        knobs: &Knobs,
        allow_loopback_http: bool,
    ) -> Result<Self, CallbacksError> {
        let policy = CallbackPolicy::from_knobs(&knobs.callbacks);
        Ok(Callbacks {
            http: http_client(policy.request_timeout)?,
            secrets,
            queue,
            limits: QueueLimits::from_knobs(knobs),
            defer: DeferPolicy::from_knobs(knobs),
            policy,
            allow_loopback_http,
            breaker: Mutex::new(Breaker::new(policy)),
        })
    }

    /// Every interval divided by `factor` (time-scaled local runs).
    pub fn with_time_scale(mut self, factor: f64) -> Self {
        self.policy = self.policy.scaled(factor);
        self.defer = self.defer.scaled(factor);
        self.breaker = Mutex::new(Breaker::new(self.policy));
        self
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn handle(
        &self,
        event: SqsEvent,
    ) -> Result<(SqsBatchResponse, CallbacksReport), CallbacksError> {
        let mut report = CallbacksReport {
            messages: event.records.len(),
            ..Default::default()
        };
        let mut ledger = Ledger::new(event.records, self.defer);
        let mut calls: Vec<(Msg, CallbackJob, String)> = Vec::new();
        let mut malformed = Vec::new();
        let now = Instant::now();
        let mut waits: Vec<(Msg, String, Duration)> = Vec::new();
        for (msg, body) in ledger.messages() {
            let Some(body) = body else {
                malformed.push(msg);
                continue;
            };
            let job = match CallbackJob::decode(body) {
                Ok(j) => j,
                Err(reason) => {
                    tracing::warn!(message_id = ?ledger.message_id(msg), reason, "callback message rejected");
                    malformed.push(msg);
                    continue;
                }
            };
            if let Err(reason) = check_callback_url(&job.url, self.allow_loopback_http) {
                tracing::error!(notification_id = %job.notification_id, service_id = %job.service_id,
                    reason, event = "callback_failed", "callback URL not allowed; dropped");
                report.failed += 1;
                continue;
            }
            if let Some(left) = self.breaker().suspended_for(job.service_id, now) {
                waits.push((msg, body.to_string(), left));
                continue;
            }
            let token = base64::engine::general_purpose::STANDARD
                .decode(&job.sealed_token)
                .ok()
                .and_then(|sealed| self.secrets.open(job.service_id, &sealed).ok());
            match token {
                Some(t) => calls.push((msg, job, t)),
                None => {
                    tracing::error!(notification_id = %job.notification_id, service_id = %job.service_id,
                        event = "callback_failed", "callback token cannot be opened; dropped");
                    report.failed += 1;
                }
            }
        }
        report.malformed = malformed.len();
        ledger.fail_all(&malformed);
        for (msg, body, left) in waits {
            report.suspended += 1;
            ledger.replace(&[msg], QueueName::Callbacks, vec![(body, left)], false);
        }

        let answers: Vec<(Msg, CallbackJob, Answer)> = futures::stream::iter(calls)
            .map(|(msg, job, token)| async move {
                let answer = self.call(&job, &token).await;
                (msg, job, answer)
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
        for (msg, job, answer) in answers {
            match answer {
                Answer::Delivered => {
                    self.breaker().success(job.service_id);
                    report.delivered += 1;
                }
                Answer::Refused(status) => {
                    tracing::warn!(notification_id = %job.notification_id, service_id = %job.service_id,
                        status, kind = job.kind.as_str(), "callback refused by the client; not retried");
                    report.refused += 1;
                }
                Answer::Retry(reason) => {
                    if self.breaker().failure(job.service_id, Instant::now()) {
                        report.suspensions += 1;
                        tracing::warn!(service_id = %job.service_id, event = "callback_suspended",
                            seconds = self.policy.suspend_for.as_secs(),
                            "callback endpoint keeps failing; service suspended");
                    }
                    let tries = ledger.deferrals(msg);
                    if tries >= self.policy.max_retries {
                        tracing::error!(notification_id = %job.notification_id, service_id = %job.service_id,
                            kind = job.kind.as_str(), attempts = tries + 1, reason = %reason,
                            event = "callback_failed", "callback failed after every retry");
                        report.failed += 1;
                    } else {
                        tracing::info!(notification_id = %job.notification_id, service_id = %job.service_id,
                            attempt = tries + 1, reason = %reason, "callback failed; will retry");
                        report.retried += 1;
                        ledger.replace(
                            &[msg],
                            QueueName::Callbacks,
                            vec![(job.encode(), self.policy.retry_delay)],
                            true,
                        );
                    }
                }
            }
        }
        let (response, _) = ledger.finish(self.queue.as_ref(), self.limits).await?;
        tracing::info!(
            messages = report.messages,
            delivered = report.delivered,
            refused = report.refused,
            retried = report.retried,
            failed = report.failed,
            suspended = report.suspended,
            "callbacks batch done"
        );
        Ok((response, report))
    }

    async fn call(&self, job: &CallbackJob, token: &str) -> Answer {
        let sent = self
            .http
            .post(&job.url)
            .bearer_auth(token)
            .json(&job.payload)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Answer::Delivered,
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                Answer::Retry(format!("HTTP {}", r.status().as_u16()))
            }
            Ok(r) => Answer::Refused(r.status().as_u16()),
            // The error names the URL, which may carry a secret: only its kind is kept.
            Err(e) if e.is_timeout() => Answer::Retry("timeout".into()),
            Err(e) if e.is_connect() => Answer::Retry("connection error".into()),
            Err(_) => Answer::Retry("request error".into()),
        }
    }
}

/// One client per instance: connections to an endpoint are reused across invocations.
fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallbackPolicy {
        CallbackPolicy::from_knobs(&Knobs::embedded().callbacks)
    }

    #[test]
    fn the_knobs_are_notify_s_contract() {
        let p = policy();
        assert_eq!(p.request_timeout, Duration::from_secs(5));
        assert_eq!(p.max_retries, 5);
        assert_eq!(p.retry_delay, Duration::from_secs(300));
        let s = p.scaled(100.0);
        assert_eq!(s.retry_delay, Duration::from_secs(3));
        assert_eq!(s.request_timeout, p.request_timeout);
    }

    #[test]
    fn a_service_is_suspended_after_enough_failures_in_the_window_and_resumes() {
        let p = CallbackPolicy {
            suspend_after_failures: 3,
            failure_window: Duration::from_secs(10),
            suspend_for: Duration::from_secs(60),
            ..policy()
        };
        let mut b = Breaker::new(p);
        let s = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let t0 = Instant::now();
        assert!(!b.failure(s, t0));
        // A failure outside the window does not count with the later ones.
        assert!(!b.failure(s, t0 + Duration::from_secs(11)));
        assert!(!b.failure(s, t0 + Duration::from_secs(12)));
        assert!(
            b.failure(s, t0 + Duration::from_secs(13)),
            "third in the window"
        );
        let left = b.suspended_for(s, t0 + Duration::from_secs(23)).unwrap();
        assert_eq!(left, Duration::from_secs(50));
        assert_eq!(b.suspended_for(other, t0 + Duration::from_secs(23)), None);
        assert_eq!(
            b.suspended_for(s, t0 + Duration::from_secs(74)),
            None,
            "resumes"
        );
        // A success clears the count.
        b.failure(s, t0 + Duration::from_secs(80));
        b.failure(s, t0 + Duration::from_secs(81));
        b.success(s);
        assert!(!b.failure(s, t0 + Duration::from_secs(82)));
    }
}
