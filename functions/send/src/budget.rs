//! How an instance keeps within the SES account's rate.
//!
//! [`Pace::Shared`] leases tokens of the account's budget from the limit store, window by
//! window ([`floodgate_core::budget`]): whichever instances have a backlog use the whole
//! rate between them, priority first. [`Pace::Split`] is the fallback and the old rule:
//! each instance paces itself at an even share of the rate (the account's rate ÷ the most
//! instances that can run at once), which never exceeds the account's rate but leaves the
//! shares of idle instances unused. A shared budget whose store does not answer falls back
//! to the split for a while, so an outage of the store slows sending, never floods SES.

use crate::RateLimiter;
use chrono::Utc;
use floodgate_aws::LimitStore;
use floodgate_core::ProcessType;
use floodgate_core::budget::{BudgetWindows, WindowAt};
use floodgate_core::limits::Take;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// After the store failed, the split rule paces this long before the store is tried again.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

pub enum Pace {
    Split(RateLimiter),
    Shared(SharedBudget),
}

/// The leases of one instance.
pub struct SharedBudget {
    store: Arc<dyn LimitStore>,
    windows: BudgetWindows,
    /// Paces at the instance's even share while the store does not answer.
    fallback: RateLimiter,
    /// Most tokens one lease asks for: about what the instance can send in one window.
    lease_size: u64,
    lease: tokio::sync::Mutex<Lease>,
    /// The store failed: the split rule paces (and sizes claims) until then.
    store_down_until: std::sync::Mutex<Option<Instant>>,
    /// Sends this invocation still means to make: a lease asks for no more.
    pending: AtomicUsize,
    bypasses: AtomicU64,
}

#[derive(Debug, Default)]
struct Lease {
    window: i64,
    left: u64,
    /// The window and limit at which the store had nothing left: not asked again for them.
    exhausted: Option<(i64, u64)>,
}

impl Pace {
    /// The most SES calls that can start before `deadline`: what an invocation claims.
    pub fn slots_before(&self, deadline: Instant) -> usize {
        match self {
            Pace::Split(l) => l.slots_before(deadline),
            Pace::Shared(b) if b.store_down() => b.fallback.slots_before(deadline),
            Pace::Shared(b) => b
                .windows
                .most_in(deadline.saturating_duration_since(Instant::now())),
        }
    }

    /// Emails per second a whole process type can send (deferred work is spread at it).
    pub fn process_type_rate(&self, share: f64, concurrency: u32) -> f64 {
        match self {
            Pace::Split(_) => share * f64::from(concurrency.max(1)),
            Pace::Shared(b) => b.windows.rate(),
        }
    }

    /// `n` more sends are coming in this invocation.
    pub fn expect(&self, n: usize) {
        if let Pace::Shared(b) = self {
            b.pending.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The invocation ended: nothing more is coming.
    pub fn forget_pending(&self) {
        if let Pace::Shared(b) = self {
            b.pending.store(0, Ordering::Relaxed);
        }
    }

    /// Waits for the right to make one SES call for `process_type`; `false` (nothing
    /// taken) when it would come after `deadline`.
    pub async fn acquire(&self, process_type: ProcessType, deadline: Instant) -> bool {
        match self {
            Pace::Split(l) => l.acquire(deadline).await,
            Pace::Shared(b) => b.acquire(process_type, deadline).await,
        }
    }

    /// Calls the store did not answer (the split rule paced instead).
    pub fn bypasses(&self) -> u64 {
        match self {
            Pace::Split(_) => 0,
            Pace::Shared(b) => b.bypasses.load(Ordering::Relaxed),
        }
    }
}

impl SharedBudget {
    /// `share`: the instance's even share of the rate, paced while the store is down.
    pub fn new(
        store: Arc<dyn LimitStore>,
        account_rate: f64,
        share: f64,
        max_in_flight: usize,
    ) -> Self {
        SharedBudget {
            store,
            windows: BudgetWindows::for_rate(account_rate),
            fallback: RateLimiter::new(share),
            lease_size: u64::try_from(max_in_flight.max(1)).unwrap_or(u64::MAX),
            lease: tokio::sync::Mutex::new(Lease::default()),
            store_down_until: std::sync::Mutex::new(None),
            pending: AtomicUsize::new(0),
            bypasses: AtomicU64::new(0),
        }
    }

    fn store_down(&self) -> bool {
        self.store_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    fn took_one(&self) {
        // Saturating: retries after a throttle acquire again without being expected.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
    }

    async fn acquire(&self, process_type: ProcessType, deadline: Instant) -> bool {
        loop {
            if Instant::now() > deadline {
                return false;
            }
            let w = self.windows.at(Utc::now());
            let limit = self.windows.limit(process_type, w.elapsed);
            {
                if self.store_down() {
                    return self.fallback.acquire(deadline).await;
                }
                let mut lease = self.lease.lock().await;
                if lease.window == w.index && lease.left > 0 {
                    lease.left -= 1;
                    self.took_one();
                    return true;
                }
                if limit > 0 && lease.exhausted != Some((w.index, limit)) {
                    let want = (self.pending.load(Ordering::Relaxed) as u64)
                        .clamp(1, self.lease_size)
                        .min(limit);
                    // A slow store never eats into the time kept for the settle statement.
                    let leased = tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        self.lease_of(&w, limit, want),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(floodgate_aws::LimitStoreError::Unavailable(
                            "no lease before the sending deadline".into(),
                        ))
                    });
                    match leased {
                        Ok(0) => lease.exhausted = Some((w.index, limit)),
                        Ok(got) => {
                            *lease = Lease {
                                window: w.index,
                                left: got - 1,
                                exhausted: None,
                            };
                            self.took_one();
                            return true;
                        }
                        Err(e) => {
                            self.bypasses.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(event = "send_budget_bypassed", error = %e,
                                "the limit store did not answer; pacing at the instance's share");
                            *self
                                .store_down_until
                                .lock()
                                .unwrap_or_else(|p| p.into_inner()) =
                                Some(Instant::now() + STORE_RETRY_AFTER);
                            drop(lease);
                            return self.fallback.acquire(deadline).await;
                        }
                    }
                }
            }
            // Nothing for this process type in this window: wait for its next chance.
            let wait = (self.windows.next_chance(process_type, &w) - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            if Instant::now() + wait > deadline {
                return false;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes up to `want` tokens of window `w` without its count passing `limit`: what is
    /// left when less than `want` is.
    async fn lease_of(
        &self,
        w: &WindowAt,
        limit: u64,
        want: u64,
    ) -> Result<u64, floodgate_aws::LimitStoreError> {
        let counter = self.windows.counter(w, limit);
        let now = Utc::now();
        match self.store.take(&counter, want, now).await? {
            Take::Taken { .. } => Ok(want),
            Take::Refused {
                count: Some(count), ..
            } if count < limit => {
                let left = limit - count;
                match self.store.take(&counter, left, now).await? {
                    Take::Taken { .. } => Ok(left),
                    Take::Refused { .. } => Ok(0),
                }
            }
            Take::Refused { .. } => Ok(0),
        }
    }
}
