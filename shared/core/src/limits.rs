//! Limits at the door: each service's rate limit (requests per minute, one counter per key
//! type) and daily limit (emails per day), and idempotency keys. The rules are here, as
//! plain functions; the counters and records live in a shared store (DynamoDB on AWS) so
//! every `ingest` instance sees the same numbers, and never in the notifications table.

use crate::KeyType;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use std::time::Duration;
use uuid::Uuid;

/// Notify's defaults: 3,000 requests per 60 seconds per key type, 250,000 emails a day.
pub const DEFAULT_RATE_LIMIT: u32 = 3_000;
pub const DEFAULT_DAILY_LIMIT: u32 = 250_000;
/// The rate limit's window, as Notify states it in its error.
pub const RATE_INTERVAL: Duration = Duration::from_secs(60);
/// How long an idempotency key is remembered: a client retrying after a timeout, a restart
/// or an overnight outage still gets its first answer back.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// A request that claimed a key and neither finished nor released it within this time
/// (longer than ingest's timeout) has died: a retry may finish its work, with its ids.
pub const IDEMPOTENCY_LEASE: Duration = Duration::from_secs(30);
/// The header a client sends to make a POST safe to retry.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A service's limits, as configured by `admin set-limits` (Notify's defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ServiceLimits {
    pub rate_limit: u32,
    pub daily_limit: u32,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            rate_limit: DEFAULT_RATE_LIMIT,
            daily_limit: DEFAULT_DAILY_LIMIT,
        }
    }
}

/// A counter in the limit store: its key and the window it counts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    pub limit: u64,
    /// The window starts at the counter's first take and lasts this long; the next take
    /// after it starts a new window.
    pub window: Duration,
}

impl Counter {
    /// The requests a service makes with one key type: each key type has its own count,
    /// test keys included, as in Notify.
    pub fn rate(service_id: Uuid, key_type: KeyType, limits: ServiceLimits) -> Self {
        Counter {
            key: format!("rate#{service_id}#{}", key_type.as_str()),
            limit: u64::from(limits.rate_limit),
            window: RATE_INTERVAL,
        }
    }

    /// The emails a service sends on one UTC day. Test keys never count (Notify).
    pub fn daily(service_id: Uuid, day: NaiveDate, limits: ServiceLimits) -> Self {
        Counter {
            key: format!("daily#{service_id}#{day}"),
            limit: u64::from(limits.daily_limit),
            window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Whether a key type's emails count against the daily limit.
pub fn counts_against_daily_limit(key_type: KeyType) -> bool {
    key_type != KeyType::Test
}

/// Notify's rate-limit message: normal keys are "LIVE" in Notify's documentation and errors.
pub fn rate_limit_message(limit: u32, key_type: KeyType) -> String {
    let name = match key_type {
        KeyType::Normal => "LIVE",
        KeyType::Team => "TEAM",
        KeyType::Test => "TEST",
    };
    format!(
        "Exceeded rate limit for key type {name} of {limit} requests per {} seconds",
        RATE_INTERVAL.as_secs()
    )
}

/// Notify's daily-limit message (email is the only notification type here).
pub fn daily_limit_message(limit: u32) -> String {
    format!("Exceeded send limits (email: {limit}) for today")
}

/// One window of a counter, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub started_at: DateTime<Utc>,
    pub count: u64,
}

/// What a take did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counted; `count` is the window's count including this take.
    Taken { count: u64 },
    /// Would pass the limit: nothing counted. The window ends at `resets_at`; `count` is
    /// its count when the store read it (a caller may then take what is left).
    Refused {
        resets_at: DateTime<Utc>,
        count: Option<u64>,
    },
}

/// The rule every store adapter follows: a take of `cost` counts in the current window
/// unless the window's count would pass `limit`; a take after the window has ended starts
/// a new one. Returns the counter's new window (unchanged when refused).
pub fn take(
    current: Option<Window>,
    cost: u64,
    limit: u64,
    window: Duration,
    now: DateTime<Utc>,
) -> (Option<Window>, Take) {
    let length = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
    let live = current.filter(|w| now < w.started_at + length);
    let base = live.unwrap_or(Window {
        started_at: now,
        count: 0,
    });
    match base.count.checked_add(cost) {
        Some(count) if count <= limit => (
            Some(Window {
                started_at: base.started_at,
                count,
            }),
            Take::Taken { count },
        ),
        _ => (
            current,
            Take::Refused {
                resets_at: base.started_at + length,
                count: Some(base.count),
            },
        ),
    }
}

/// A client's idempotency key, scoped to its service so two services never share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    pub fn parse(service_id: Uuid, header: &str) -> Result<Self, InvalidIdempotencyKey> {
        let ok =
            (1..=255).contains(&header.len()) && header.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !ok {
            return Err(InvalidIdempotencyKey);
        }
        Ok(IdempotencyKey(format!("idem#{service_id}#{header}")))
    }

    /// The store key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What identifies "the same request": the path and the exact body bytes (SHA-256, hex).
pub fn request_fingerprint(path: &str, body: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(path.as_bytes());
    ctx.update(&[0]);
    ctx.update(body);
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The ids of a bulk job's rows, derived from the job id: a retry that finishes a crashed
/// request's work gives every row the id it was first given, so nothing is stored twice.
/// Each is a UUIDv7 with the job's timestamp, the row number added to the job's random
/// bits (time order and uniqueness are kept; rows sort in row order).
pub fn job_row_id(job_id: Uuid, row: u32) -> Uuid {
    const RAND_B_BITS: u32 = 62;
    let v = job_id.as_u128();
    let mask: u128 = (1 << RAND_B_BITS) - 1;
    let rand_b = (v & mask).wrapping_add(u128::from(row) + 1) & mask;
    Uuid::from_u128((v & !mask) | rand_b)
}

/// The most rows a bulk job has (GC Notify's limit).
pub const MAX_JOB_ROWS: u32 = 50_000;

/// The primary-key range `[first, last]` that holds every row a job can have (see
/// [`job_row_id`]), for reading a job's rows by index. `None` in the one case in 2^46 where
/// the row ids wrap around within the random bits: then the rows are not one range.
pub fn job_row_range(job_id: Uuid) -> Option<(Uuid, Uuid)> {
    let first = job_row_id(job_id, 0);
    let last = job_row_id(job_id, MAX_JOB_ROWS - 1);
    (first <= last).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_window_counts_to_its_limit_then_refuses_until_it_ends() {
        let w = Duration::from_secs(60);
        let (state, r) = take(None, 1, 2, w, t(0));
        assert_eq!(r, Take::Taken { count: 1 });
        let (state, r) = take(state, 1, 2, w, t(30));
        assert_eq!(r, Take::Taken { count: 2 });
        let (state, r) = take(state, 1, 2, w, t(59));
        assert_eq!(
            r,
            Take::Refused {
                resets_at: t(60),
                count: Some(2)
            }
        );
        assert_eq!(state.unwrap().count, 2, "a refusal counts nothing");
        let (state, r) = take(state, 1, 2, w, t(60));
        assert_eq!(r, Take::Taken { count: 1 }, "a new window at its end");
        assert_eq!(state.unwrap().started_at, t(60));
    }

    #[test]
    fn a_cost_that_would_pass_the_limit_is_refused_whole() {
        let w = Duration::from_secs(86_400);
        let (state, _) = take(None, 8, 10, w, t(0));
        let (state, r) = take(state, 3, 10, w, t(1));
        assert!(matches!(r, Take::Refused { .. }));
        let (_, r) = take(state, 2, 10, w, t(2));
        assert_eq!(r, Take::Taken { count: 10 });
        let (_, r) = take(None, 11, 10, w, t(0));
        assert!(
            matches!(r, Take::Refused { .. }),
            "more than the limit at once"
        );
        let (_, r) = take(None, u64::MAX, u64::MAX - 1, w, t(0));
        assert!(matches!(r, Take::Refused { .. }));
    }

    #[test]
    fn notify_s_messages() {
        // alphagov/notifications-api app/v2/errors.py (RateLimitError, TooManyRequestsError)
        assert_eq!(
            rate_limit_message(3000, KeyType::Normal),
            "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"
        );
        assert_eq!(
            rate_limit_message(10, KeyType::Team),
            "Exceeded rate limit for key type TEAM of 10 requests per 60 seconds"
        );
        assert_eq!(
            daily_limit_message(250_000),
            "Exceeded send limits (email: 250000) for today"
        );
    }

    #[test]
    fn counters_are_per_service_key_type_and_day() {
        let s = Uuid::from_u128(7);
        let l = ServiceLimits::default();
        assert_ne!(
            Counter::rate(s, KeyType::Normal, l).key,
            Counter::rate(s, KeyType::Team, l).key
        );
        assert_ne!(
            Counter::rate(s, KeyType::Normal, l).key,
            Counter::rate(Uuid::from_u128(8), KeyType::Normal, l).key
        );
        let d1 = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        assert_ne!(Counter::daily(s, d1, l).key, Counter::daily(s, d2, l).key);
        assert_eq!(Counter::daily(s, d1, l).limit, 250_000);
        assert!(!counts_against_daily_limit(KeyType::Test));
        assert!(counts_against_daily_limit(KeyType::Team));
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_and_scoped_to_the_service() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_ne!(
            IdempotencyKey::parse(a, "k-1").unwrap(),
            IdempotencyKey::parse(b, "k-1").unwrap()
        );
        assert!(IdempotencyKey::parse(a, "").is_err());
        assert!(IdempotencyKey::parse(a, &"x".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(a, "caf\u{e9}").is_err());
        assert!(IdempotencyKey::parse(a, "a\nb").is_err());
        assert!(IdempotencyKey::parse(a, &"x".repeat(255)).is_ok());
    }

    #[test]
    fn fingerprints_differ_by_body_and_path() {
        let f = request_fingerprint("/v2/notifications/email", b"{}");
        assert_eq!(f.len(), 64);
        assert_ne!(f, request_fingerprint("/v2/notifications/email", b"{ }"));
        assert_ne!(f, request_fingerprint("/v2/notifications/bulk", b"{}"));
    }

    #[test]
    fn job_row_ids_are_v7_distinct_ordered_and_deterministic() {
        let job = Uuid::now_v7();
        let ids: Vec<Uuid> = (0..1000).map(|r| job_row_id(job, r)).collect();
        assert_eq!(ids[7], job_row_id(job, 7));
        for w in ids.windows(2) {
            assert!(w[0] < w[1] || w[1].as_u128() & ((1 << 62) - 1) == 0);
        }
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(id.get_timestamp(), job.get_timestamp());
            assert_ne!(*id, job);
        }
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
    }

    #[test]
    fn a_job_s_rows_are_one_id_range_unless_it_wraps() {
        let job = Uuid::from_u128(0x0190_a0a0_0000_7000_8000_0000_0000_0001);
        let (first, last) = job_row_range(job).expect("a range");
        for row in [0, 1, 7, MAX_JOB_ROWS - 1] {
            let id = job_row_id(job, row);
            assert!(first <= id && id <= last);
        }
        assert!(job_row_id(job, MAX_JOB_ROWS) > last);
        assert!(job < first, "the job id itself is no row");
        // A job id whose random bits are near their end wraps: no range.
        let wrapping = Uuid::from_u128(job.as_u128() | ((1u128 << 62) - 10));
        assert_eq!(job_row_range(wrapping), None);
    }
}
