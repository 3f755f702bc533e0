//! Limits and idempotency at the door, over the shared limit store: the caller's rate
//! limit (one count per request, per key type), its daily limit (one count per email, all
//! of a bulk job or none of it), and idempotency keys (a repeat of a request gets the first
//! answer back and enqueues nothing).
//!
//! Availability comes first: when the store cannot be reached, the request goes through
//! unlimited and without idempotency, the bypass is logged (`event = "limit_store_bypassed"`,
//! alarmed on AWS) and counted, and the rest of that request does not try the store again.

use chrono::{DateTime, TimeDelta, Utc};
use floodgate_api::{ApiError, Caller};
use floodgate_aws::{Claim, IdempotencyRecord, LimitStore, LimitStoreError};
use floodgate_core::limits::{
    Counter, IDEMPOTENCY_LEASE, IDEMPOTENCY_WINDOW, IdempotencyKey, Take,
    counts_against_daily_limit, daily_limit_message, rate_limit_message,
};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// All the time one request may spend on the limit store: its calls, and a repeat's wait
/// for the first request with its key. DynamoDB answers in milliseconds, and the rest of
/// ingest's waits leave this much of its 10 s timeout (Terraform's guard sums them).
const LIMIT_STORE_BUDGET: Duration = Duration::from_millis(250);
/// How often a repeat looks whether the first request with its key has finished.
const WAIT_STEP: Duration = Duration::from_millis(10);

pub struct Door {
    store: Arc<dyn LimitStore>,
    bypasses: AtomicU64,
}

/// One request's way through the door: once the store failed (or the request's budget
/// for it is spent), it is not asked again.
pub struct Passage<'a> {
    door: &'a Door,
    bypassed: AtomicBool,
    /// Set at the first store call: the budget is the store's alone, not the database's.
    deadline: OnceLock<Instant>,
}

/// What idempotency says of a request before its work.
pub enum Admission {
    /// Do the work; the key held (if any) is settled, released or abandoned after it.
    Proceed(Option<Held>),
    /// Do the work again with the ids of a request that died holding the key: its answer.
    Resume(Held, Value),
    /// The answer of the first request with this key.
    Repeat(u16, Value),
}

/// A key this request holds in the store.
pub struct Held {
    pub key: IdempotencyKey,
    claimed_at: DateTime<Utc>,
}

/// Claim times at millisecond precision, as DynamoDB keeps them, so a take-over's
/// comparison with what was read back is exact.
fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// An answer stored by this code.
fn parse(stored: &str) -> Result<Value, ApiError> {
    serde_json::from_str(stored).map_err(|_| ApiError::internal())
}

fn conflict(message: &str) -> ApiError {
    ApiError::new(409, "ConflictError", message)
}

impl Door {
    pub fn new(store: Arc<dyn LimitStore>) -> Self {
        Door {
            store,
            bypasses: AtomicU64::new(0),
        }
    }

    /// How many requests went through without limits because the store was unreachable.
    pub fn bypasses(&self) -> u64 {
        self.bypasses.load(Ordering::Relaxed)
    }

    pub fn passage(&self) -> Passage<'_> {
        Passage {
            door: self,
            bypassed: AtomicBool::new(false),
            deadline: OnceLock::new(),
        }
    }
}

impl Passage<'_> {
    fn deadline(&self) -> Instant {
        *self
            .deadline
            .get_or_init(|| Instant::now() + LIMIT_STORE_BUDGET)
    }

    fn store(&self) -> Option<&dyn LimitStore> {
        (!self.bypassed.load(Ordering::Relaxed)).then_some(self.door.store.as_ref())
    }

    /// One store call, within what is left of the request's budget; `None` (a bypass)
    /// when it failed or took too long.
    async fn within<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, LimitStoreError>>,
    ) -> Option<T> {
        let e = match tokio::time::timeout_at(self.deadline(), call).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e,
            Err(_) => LimitStoreError::Unavailable("over the request's limit store budget".into()),
        };
        if !self.bypassed.swap(true, Ordering::Relaxed) {
            self.door.bypasses.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(event = "limit_store_bypassed", what, error = %e,
            "limit store unavailable: request accepted without limits");
        None
    }

    /// The caller's rate limit: one request counted, or Notify's 429.
    pub async fn rate(&self, caller: &Caller, now: DateTime<Utc>) -> Result<(), ApiError> {
        let Some(store) = self.store() else {
            return Ok(());
        };
        let counter = Counter::rate(caller.service_id, caller.key_type, caller.limits);
        match self.within("rate", store.take(&counter, 1, now)).await {
            None | Some(Take::Taken { .. }) => Ok(()),
            Some(Take::Refused { .. }) => {
                tracing::info!(service_id = %caller.service_id, key_type = caller.key_type.as_str(), "rate limit reached");
                Err(ApiError::new(
                    429,
                    "RateLimitError",
                    rate_limit_message(caller.limits.rate_limit, caller.key_type),
                ))
            }
        }
    }

    /// The caller's daily limit: `emails` counted (all or none), or Notify's 429. Returns
    /// what was counted, to give back if the emails are not accepted after all.
    pub async fn daily(
        &self,
        caller: &Caller,
        emails: u64,
        now: DateTime<Utc>,
    ) -> Result<Option<Counter>, ApiError> {
        if !counts_against_daily_limit(caller.key_type) {
            return Ok(None);
        }
        let Some(store) = self.store() else {
            return Ok(None);
        };
        let counter = Counter::daily(caller.service_id, now.date_naive(), caller.limits);
        match self
            .within("daily", store.take(&counter, emails, now))
            .await
        {
            None => Ok(None),
            Some(Take::Taken { .. }) => Ok(Some(counter)),
            Some(Take::Refused { .. }) => {
                tracing::info!(service_id = %caller.service_id, emails, "daily limit reached");
                Err(ApiError::new(
                    429,
                    "TooManyRequestsError",
                    daily_limit_message(caller.limits.daily_limit),
                ))
            }
        }
    }

    /// Uncounts emails that were counted but not accepted.
    pub async fn give_back(&self, counted: Option<Counter>, emails: u64) {
        if let (Some(counter), Some(store)) = (counted, self.store())
            && emails > 0
        {
            self.within("give_back", store.give_back(&counter, emails))
                .await;
        }
    }

    /// Claims `key` for this request with the answer it will give (`status`, `response`),
    /// or finds what an earlier request with the same key did.
    pub async fn admit(
        &self,
        key: Option<IdempotencyKey>,
        fingerprint: &str,
        status: u16,
        response: &Value,
        now: DateTime<Utc>,
    ) -> Result<Admission, ApiError> {
        let (Some(key), Some(store)) = (key, self.store()) else {
            return Ok(Admission::Proceed(None));
        };
        let claimed_at = to_millis(now);
        let record = IdempotencyRecord {
            fingerprint: fingerprint.to_string(),
            status,
            response: response.to_string(),
            done: false,
            claimed_at,
            expires_at: now + TimeDelta::from_std(IDEMPOTENCY_WINDOW).unwrap_or(TimeDelta::MAX),
        };
        let lease = TimeDelta::from_std(IDEMPOTENCY_LEASE).unwrap_or(TimeDelta::MAX);
        loop {
            let existing = match self.within("claim", store.claim(&key, &record, now)).await {
                None => return Ok(Admission::Proceed(None)),
                Some(Claim::Claimed) => {
                    return Ok(Admission::Proceed(Some(Held { key, claimed_at })));
                }
                Some(Claim::Existing(existing)) => existing,
            };
            if existing.fingerprint != fingerprint {
                return Err(conflict(
                    "This Idempotency-Key was already used with a different request",
                ));
            }
            if existing.done {
                return Ok(Admission::Repeat(
                    existing.status,
                    parse(&existing.response)?,
                ));
            }
            let now = to_millis(Utc::now());
            if existing.claimed_at + lease <= now {
                let taken =
                    self.within("take_over", store.take_over(&key, existing.claimed_at, now));
                match taken.await {
                    None => return Ok(Admission::Proceed(None)),
                    Some(true) => {
                        let held = Held {
                            key,
                            claimed_at: now,
                        };
                        return Ok(Admission::Resume(held, parse(&existing.response)?));
                    }
                    Some(false) => {}
                }
            }
            // Still running: look again while the budget lasts.
            if Instant::now() + WAIT_STEP >= self.deadline() {
                return Err(conflict(
                    "A request with this Idempotency-Key is still in progress: retry later",
                ));
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// The work is accepted: repeats get its answer from now on.
    pub async fn settle(&self, held: Option<Held>) {
        if let (Some(held), Some(store)) = (held, self.store()) {
            // Not settled, the claim stays pending: a repeat after the lease finishes it
            // with the same ids, which stores and sends nothing twice.
            self.within("settle", store.settle(&held.key)).await;
        }
    }

    /// Nothing was enqueued: the key is free again.
    pub async fn release(&self, held: Option<Held>) {
        if let (Some(held), Some(store)) = (held, self.store()) {
            self.within("release", store.release(&held.key)).await;
        }
    }

    /// Some or all of the work may have been enqueued: a repeat may finish it at once,
    /// with the same ids (so what was enqueued is not enqueued under new ones).
    pub async fn abandon(&self, held: Option<Held>) {
        if let (Some(held), Some(store)) = (held, self.store()) {
            let long_ago = DateTime::<Utc>::UNIX_EPOCH;
            self.within(
                "abandon",
                store.take_over(&held.key, held.claimed_at, long_ago),
            )
            .await;
        }
    }
}
