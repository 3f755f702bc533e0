//! Scheduled notifications: when one is handed to its send queue, and with what delay.
//!
//! No invocation waits for a notification's time and nothing relies on SQS holding a
//! message for longer than it can (15 minutes). A notification due within
//! [`RELEASE_WINDOW`] of its creation is forwarded by `persist` at once with an SQS delay
//! that ends at its time; one due later stays `created` in the database until the periodic
//! release (every minute) finds it inside the window, and forwards it with the delay that
//! is left. Both hand SQS a delay of at most 15 minutes, so the time is kept to SQS's
//! second whatever the release's period. `send`'s claim refuses a row that is not due yet,
//! so no path can send early.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// How far ahead a notification is put on its send queue: SQS's longest `DelaySeconds`.
pub const RELEASE_WINDOW: Duration = Duration::from_secs(900);

/// Whether `persist` forwards a notification it has just stored, and with what delay:
/// `Some(ZERO)` for one not scheduled or already due, `Some(delay)` for one due within
/// [`RELEASE_WINDOW`] of its creation, `None` for one the periodic release forwards later.
/// The split is by creation time (not `now`), so persist and the release never both
/// forward the same row, whatever persist's backlog.
pub fn forward_delay(
    scheduled_for: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let Some(at) = scheduled_for else {
        return Some(Duration::ZERO);
    };
    let lead = (at - created_at).to_std().unwrap_or(Duration::ZERO);
    if lead > RELEASE_WINDOW {
        return None;
    }
    Some(delay_until(at, now))
}

/// The delay that ends at `at` (zero once it has passed), at most [`RELEASE_WINDOW`].
pub fn delay_until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .unwrap_or(Duration::ZERO)
        .min(RELEASE_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn unscheduled_and_due_notifications_go_at_once() {
        assert_eq!(forward_delay(None, t(0), t(5)), Some(Duration::ZERO));
        assert_eq!(
            forward_delay(Some(t(-10)), t(0), t(1)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            forward_delay(Some(t(10)), t(0), t(20)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_notification_due_within_the_window_waits_on_the_queue_until_its_time() {
        assert_eq!(
            forward_delay(Some(t(10)), t(0), t(0)),
            Some(Duration::from_secs(10))
        );
        // Stored late (a backlog): only the time left.
        assert_eq!(
            forward_delay(Some(t(900)), t(0), t(600)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            forward_delay(Some(t(900)), t(0), t(0)),
            Some(RELEASE_WINDOW)
        );
    }

    #[test]
    fn a_notification_due_later_is_left_to_the_release() {
        assert_eq!(forward_delay(Some(t(901)), t(0), t(0)), None);
        // Even when persist runs so late that it would be inside the window by now.
        assert_eq!(forward_delay(Some(t(3600)), t(0), t(3500)), None);
    }

    #[test]
    fn the_delay_never_exceeds_what_sqs_takes() {
        assert_eq!(delay_until(t(86_400), t(0)), RELEASE_WINDOW);
        assert_eq!(delay_until(t(0), t(5)), Duration::ZERO);
    }
}
