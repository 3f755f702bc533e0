//! A small per-instance cache with a TTL and stale-if-error: while the database is
//! unreachable, entries past their TTL keep serving, so ingest keeps accepting while the
//! database is down. After a failed refresh the whole cache stops trying for a short back-off, so
//! an outage costs one timeout per back-off period, not one per request.

use floodgate_db::DbError;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// An entry younger than this is served without asking the database.
    pub ttl: Duration,
    /// An entry older than this is never served, even during an outage.
    pub max_stale: Duration,
    /// After the database was found unavailable, serve stale entries without retrying for
    /// this long.
    pub error_backoff: Duration,
    /// Entries kept at most (random ids in hostile requests must not grow it forever).
    pub max_entries: usize,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
            error_backoff: Duration::from_secs(5),
            max_entries: 10_000,
        }
    }
}

impl CachePolicy {
    /// `FLOODGATE_CACHE_TTL_S`, `FLOODGATE_CACHE_MAX_STALE_S`, `FLOODGATE_CACHE_BACKOFF_MS`.
    pub fn from_env() -> Self {
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut p = CachePolicy::default();
        if let Some(v) = num("FLOODGATE_CACHE_TTL_S") {
            p.ttl = Duration::from_secs(v);
        }
        if let Some(v) = num("FLOODGATE_CACHE_MAX_STALE_S") {
            p.max_stale = Duration::from_secs(v);
        }
        if let Some(v) = num("FLOODGATE_CACHE_BACKOFF_MS") {
            p.error_backoff = Duration::from_millis(v);
        }
        p
    }
}

struct Entry<V> {
    value: V,
    loaded: Instant,
}

/// How the value was obtained (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Loaded,
    Stale,
}

pub struct Cache<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    policy: CachePolicy,
    /// Until when the database is considered down (no refresh attempts).
    down_until: Mutex<Option<Instant>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub fn new(policy: CachePolicy) -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
            policy,
            down_until: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<V>>> {
        // A panic elsewhere cannot leave a HashMap of clones inconsistent; keep serving.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, key: &K) -> Option<(V, Duration)> {
        self.lock()
            .get(key)
            .map(|e| (e.value.clone(), e.loaded.elapsed()))
    }

    fn database_down(&self) -> bool {
        let mut d = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *d {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *d = None;
                false
            }
            None => false,
        }
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= self.policy.max_entries && !entries.contains_key(&key) {
            let max_stale = self.policy.max_stale;
            entries.retain(|_, e| e.loaded.elapsed() < max_stale);
            if entries.len() >= self.policy.max_entries {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                value,
                loaded: Instant::now(),
            },
        );
    }

    /// The cached value if fresh; else loads it; if loading fails because the database is
    /// unavailable, the stale value (within `max_stale`).
    pub async fn get_or_load<F, Fut>(&self, key: &K, load: F) -> Result<(V, Freshness), DbError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, DbError>>,
    {
        let cached = self.cached(key);
        if let Some((v, age)) = &cached {
            if *age < self.policy.ttl {
                return Ok((v.clone(), Freshness::Fresh));
            }
            if *age < self.policy.max_stale && self.database_down() {
                return Ok((v.clone(), Freshness::Stale));
            }
        }
        match load().await {
            Ok(v) => {
                self.insert(key.clone(), v.clone());
                Ok((v, Freshness::Loaded))
            }
            Err(e) if e.is_unavailable() => {
                *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + self.policy.error_backoff);
                match cached {
                    Some((v, age)) if age < self.policy.max_stale => {
                        tracing::warn!(error = %e, "database unavailable; serving a cached entry");
                        Ok((v, Freshness::Stale))
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn down() -> DbError {
        DbError::Connect {
            lane: "reader",
            reason: "refused".into(),
        }
    }

    #[tokio::test]
    async fn fresh_then_reload_then_stale_on_outage() {
        let policy = CachePolicy {
            ttl: Duration::from_millis(30),
            max_stale: Duration::from_secs(60),
            error_backoff: Duration::from_millis(200),
            max_entries: 10,
        };
        let cache: Cache<u32, String> = Cache::new(policy);
        let loads = AtomicUsize::new(0);
        let ok = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok("v".to_string())
        };
        assert_eq!(
            cache.get_or_load(&1, ok).await.unwrap().1,
            Freshness::Loaded
        );
        assert_eq!(cache.get_or_load(&1, ok).await.unwrap().1, Freshness::Fresh);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        let failing = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>(down())
        };
        let (v, f) = cache.get_or_load(&1, failing).await.unwrap();
        assert_eq!((v.as_str(), f), ("v", Freshness::Stale));
        // Within the back-off: no further attempt.
        let (_, f) = cache.get_or_load(&1, failing).await.unwrap();
        assert_eq!(f, Freshness::Stale);
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        // Nothing cached: the outage is an error.
        assert!(
            cache
                .get_or_load(&2, failing)
                .await
                .unwrap_err()
                .is_unavailable()
        );
        // A refusal (not an outage) is never hidden by a stale entry.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let refused = || async { Err::<String, _>(DbError::Config("bad".into())) };
        assert!(cache.get_or_load(&1, refused).await.is_err());
    }

    #[test]
    fn size_is_bounded() {
        let cache: Cache<u32, u32> = Cache::new(CachePolicy {
            max_entries: 3,
            ..CachePolicy::default()
        });
        for i in 0..10 {
            cache.insert(i, i);
        }
        assert!(cache.lock().len() <= 3);
    }
}
