//! The SES account's sending rate as one budget that every `send` instance shares.
//!
//! Time is cut into short windows aligned on the clock, each worth `tokens` emails, so the
//! windows add up to exactly the account's rate. An instance leases tokens of the current
//! window from the limit store (one conditional update for many emails) and sends them
//! within it. Two things follow from the window's size:
//! - it is short (about 100 ms, or one email at rates under 10/s), so no burst passes what
//!   a one-second token bucket (how SES enforces its rate) allows: any stretch of time holds
//!   at most two windows more than its share, a fifth of a second's rate;
//! - an idle lane's share is not lost: whoever has a backlog takes the whole window.
//!
//! Priority goes first without a split: in each window's first half the other process types
//! may take only what is not held back for priority ([`PRIORITY_RESERVE`]); in its second
//! half anyone may take what is left. A priority email therefore finds room within half a
//! window while bulk has a backlog, and nothing sits idle when priority has none.

use crate::ProcessType;
use crate::limits::Counter;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The share of every window that only priority may take in the window's first half.
pub const PRIORITY_RESERVE: f64 = 0.25;
/// Windows are about this long at rates of 10/s and more.
const TARGET_WINDOW: Duration = Duration::from_millis(100);
/// Store keys of the budget's windows start with this.
const KEY_PREFIX: &str = "ses-budget";

/// The account's rate cut into clock-aligned windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetWindows {
    rate: f64,
    tokens: u64,
    length_micros: i64,
}

/// One window: its index on the clock and where `now` is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowAt {
    pub index: i64,
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub elapsed: Duration,
}

impl BudgetWindows {
    /// `rate` emails per second (non-positive or non-finite rates count as one per second).
    pub fn for_rate(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let tokens = ((rate * TARGET_WINDOW.as_secs_f64()).floor() as u64).max(1);
        let length_micros = ((tokens as f64 / rate) * 1e6).round().max(1.0) as i64;
        BudgetWindows {
            rate,
            tokens,
            length_micros,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Emails one window is worth.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    pub fn length(&self) -> Duration {
        Duration::from_micros(self.length_micros.unsigned_abs())
    }

    /// Tokens of each window held for priority during its first half.
    pub fn reserve(&self) -> u64 {
        ((self.tokens as f64 * PRIORITY_RESERVE).ceil() as u64).min(self.tokens)
    }

    /// The window `now` falls in.
    pub fn at(&self, now: DateTime<Utc>) -> WindowAt {
        let t = now.timestamp_micros();
        let index = t.div_euclid(self.length_micros);
        let start = index * self.length_micros;
        let started_at = DateTime::from_timestamp_micros(start).unwrap_or(now);
        let ends_at = DateTime::from_timestamp_micros(start + self.length_micros).unwrap_or(now);
        WindowAt {
            index,
            started_at,
            ends_at,
            elapsed: Duration::from_micros((t - start).unsigned_abs()),
        }
    }

    /// How many tokens of the window `process_type` may have taken in all, `elapsed` into
    /// it: everything for priority; outside the first half's reserve for the others.
    pub fn limit(&self, process_type: ProcessType, elapsed: Duration) -> u64 {
        let first_half = elapsed.as_micros() * 2 < u128::from(self.length_micros.unsigned_abs());
        if process_type == ProcessType::Priority || !first_half {
            self.tokens
        } else {
            self.tokens - self.reserve()
        }
    }

    /// When `process_type`'s limit in the window next rises: half-way for the others while
    /// they are in the first half, otherwise the next window.
    pub fn next_chance(&self, process_type: ProcessType, w: &WindowAt) -> DateTime<Utc> {
        let half = w.started_at + chrono::Duration::microseconds(self.length_micros / 2);
        if self.limit(process_type, w.elapsed) < self.tokens && half > w.started_at {
            half
        } else {
            w.ends_at
        }
    }

    /// The store counter of window `w` with `limit`: keyed by the rate too, so instances
    /// that disagree about the rate (during a deploy) never count in each other's windows.
    pub fn counter(&self, w: &WindowAt, limit: u64) -> Counter {
        Counter {
            key: format!("{KEY_PREFIX}#{}#{}", self.rate, w.index),
            limit,
            window: self.length(),
        }
    }

    /// The most emails the whole account can send in `span`.
    pub fn most_in(&self, span: Duration) -> usize {
        (span.as_secs_f64() * self.rate).floor() as usize + self.tokens as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_micros(us: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(us).unwrap()
    }

    #[test]
    fn windows_add_up_to_the_rate() {
        for (rate, tokens, length_ms) in [
            (2000.0, 200, 100.0),
            (1000.0, 100, 100.0),
            (14.0, 1, 1000.0 / 14.0),
            (25.0, 2, 80.0),
            (1.0, 1, 1000.0),
            (0.5, 1, 2000.0),
        ] {
            let w = BudgetWindows::for_rate(rate);
            assert_eq!(w.tokens(), tokens, "{rate}");
            let ms = w.length().as_secs_f64() * 1000.0;
            assert!((ms - length_ms).abs() < 0.01, "{rate}: {ms} ms");
            // Over a long stretch the windows hold the rate, never more.
            let windows_per_hour = 3_600_000.0 / ms;
            let per_hour = windows_per_hour * w.tokens() as f64;
            assert!(
                (per_hour - rate * 3600.0).abs() <= rate,
                "{rate}: {per_hour}/h"
            );
        }
    }

    #[test]
    fn a_nonsense_rate_is_one_per_second() {
        for r in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            assert_eq!(BudgetWindows::for_rate(r).rate(), 1.0);
        }
    }

    #[test]
    fn windows_are_aligned_on_the_clock() {
        let w = BudgetWindows::for_rate(1000.0);
        let a = w.at(at_micros(1_700_000_000_123_456));
        assert_eq!(a.index, 17_000_000_001);
        assert_eq!(a.started_at, at_micros(1_700_000_000_100_000));
        assert_eq!(a.ends_at, at_micros(1_700_000_000_200_000));
        assert_eq!(a.elapsed, Duration::from_micros(23_456));
        // Two instances asking at different moments of one window share it.
        let b = w.at(at_micros(1_700_000_000_199_999));
        assert_eq!(b.index, a.index);
        assert_eq!(w.counter(&a, 5).key, w.counter(&b, 7).key);
        assert_ne!(w.at(at_micros(1_700_000_000_200_000)).index, a.index);
        // The rate is part of the key.
        let other = BudgetWindows::for_rate(2000.0);
        assert_ne!(
            other.counter(&other.at(a.started_at), 5).key,
            w.counter(&a, 5).key
        );
    }

    #[test]
    fn priority_takes_the_whole_window_the_others_wait_for_its_second_half_for_the_reserve() {
        let w = BudgetWindows::for_rate(1000.0); // 100 tokens per 100 ms
        assert_eq!(w.reserve(), 25);
        let early = Duration::from_millis(10);
        let late = Duration::from_millis(50);
        assert_eq!(w.limit(ProcessType::Priority, early), 100);
        assert_eq!(w.limit(ProcessType::Normal, early), 75);
        assert_eq!(w.limit(ProcessType::Bulk, early), 75);
        assert_eq!(w.limit(ProcessType::Bulk, late), 100);
        assert_eq!(w.limit(ProcessType::Priority, late), 100);
    }

    #[test]
    fn at_one_email_per_window_the_others_take_it_only_in_the_second_half() {
        let w = BudgetWindows::for_rate(14.0);
        assert_eq!(w.reserve(), 1);
        assert_eq!(w.limit(ProcessType::Bulk, Duration::from_millis(10)), 0);
        assert_eq!(w.limit(ProcessType::Bulk, Duration::from_millis(40)), 1);
        assert_eq!(w.limit(ProcessType::Priority, Duration::from_millis(10)), 1);
    }

    #[test]
    fn the_next_chance_is_half_way_for_the_others_else_the_next_window() {
        let w = BudgetWindows::for_rate(1000.0);
        let early = w.at(at_micros(1_700_000_000_110_000));
        assert_eq!(
            w.next_chance(ProcessType::Bulk, &early),
            at_micros(1_700_000_000_150_000)
        );
        assert_eq!(
            w.next_chance(ProcessType::Priority, &early),
            at_micros(1_700_000_000_200_000)
        );
        let late = w.at(at_micros(1_700_000_000_160_000));
        assert_eq!(
            w.next_chance(ProcessType::Bulk, &late),
            at_micros(1_700_000_000_200_000)
        );
    }

    #[test]
    fn most_in_a_span_is_the_rate_plus_one_window() {
        let w = BudgetWindows::for_rate(14.0);
        assert_eq!(w.most_in(Duration::from_secs(10)), 141);
        assert_eq!(w.most_in(Duration::ZERO), 1);
    }
}
