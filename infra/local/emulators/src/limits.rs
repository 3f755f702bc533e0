//! `EmbeddedLimitStore`: the limit store in memory, with DynamoDB's semantics as
//! `DynamoLimitStore` uses them (conditional takes, claims that expire, consistent reads),
//! and a switch that makes it unreachable, for the tests of "the store is down".

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use floodgate_aws::{Claim, IdempotencyRecord, LimitStore, LimitStoreError};
use floodgate_core::limits::{Counter, IdempotencyKey, Take, Window, take};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
pub struct EmbeddedLimitStore {
    /// Each counter's window and when it may be forgotten (DynamoDB's TTL).
    counters: Mutex<HashMap<String, (Window, DateTime<Utc>)>>,
    records: Mutex<HashMap<String, IdempotencyRecord>>,
    down: AtomicBool,
    calls: AtomicU64,
}

impl EmbeddedLimitStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every call fail as an unreachable DynamoDB would (`true`), or answer again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many calls the store has answered or refused.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn reachable(&self) -> Result<(), LimitStoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(LimitStoreError::Unavailable(
                "the embedded limit store is switched off".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// Counters kept before the ended ones are forgotten.
const PRUNE_AT: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl LimitStore for EmbeddedLimitStore {
    async fn take(
        &self,
        counter: &Counter,
        cost: u64,
        now: DateTime<Utc>,
    ) -> Result<Take, LimitStoreError> {
        self.reachable()?;
        let mut counters = lock(&self.counters);
        if counters.len() >= PRUNE_AT {
            // The SES budget makes ten counters a second: forget the ended ones, as TTL does.
            counters.retain(|_, (_, expires)| *expires > now);
        }
        let current = counters.get(&counter.key).map(|(w, _)| *w);
        let (next, outcome) = take(current, cost, counter.limit, counter.window, now);
        if let Some(w) = next {
            let length =
                chrono::TimeDelta::from_std(counter.window).unwrap_or(chrono::TimeDelta::MAX);
            let expires = w
                .started_at
                .checked_add_signed(length)
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            counters.insert(counter.key.clone(), (w, expires));
        }
        Ok(outcome)
    }

    async fn give_back(&self, counter: &Counter, cost: u64) -> Result<(), LimitStoreError> {
        self.reachable()?;
        if let Some((w, _)) = lock(&self.counters).get_mut(&counter.key)
            && w.count >= cost
        {
            w.count -= cost;
        }
        Ok(())
    }

    async fn claim(
        &self,
        key: &IdempotencyKey,
        record: &IdempotencyRecord,
        now: DateTime<Utc>,
    ) -> Result<Claim, LimitStoreError> {
        self.reachable()?;
        let mut records = lock(&self.records);
        match records.get(key.as_str()) {
            Some(existing) if existing.expires_at >= now => Ok(Claim::Existing(existing.clone())),
            _ => {
                records.insert(key.as_str().to_string(), record.clone());
                Ok(Claim::Claimed)
            }
        }
    }

    async fn lookup(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LimitStoreError> {
        self.reachable()?;
        Ok(lock(&self.records).get(key.as_str()).cloned())
    }

    async fn settle(&self, key: &IdempotencyKey) -> Result<(), LimitStoreError> {
        self.reachable()?;
        match lock(&self.records).get_mut(key.as_str()) {
            Some(r) => {
                r.done = true;
                Ok(())
            }
            None => Err(LimitStoreError::Unavailable(
                "no such idempotency record".into(),
            )),
        }
    }

    async fn release(&self, key: &IdempotencyKey) -> Result<(), LimitStoreError> {
        self.reachable()?;
        let mut records = lock(&self.records);
        if records.get(key.as_str()).is_some_and(|r| !r.done) {
            records.remove(key.as_str());
        }
        Ok(())
    }

    async fn take_over(
        &self,
        key: &IdempotencyKey,
        seen: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, LimitStoreError> {
        self.reachable()?;
        match lock(&self.records).get_mut(key.as_str()) {
            Some(r) if !r.done && r.claimed_at == seen => {
                r.claimed_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
