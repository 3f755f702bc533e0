use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The status of an email notification, spelled as Notify spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationStatus {
    /// Stored by `persist`.
    Created,
    /// SES accepted the message.
    Sending,
    /// SES reported a transient bounce (it gave up retrying).
    TemporaryFailure,
    /// SES reported delivery to the recipient's mail server.
    Delivered,
    /// An error on our side (e.g. SES rejected the request permanently).
    TechnicalFailure,
    /// SES reported a permanent bounce, or suppressed the address.
    PermanentFailure,
}

impl NotificationStatus {
    pub const ALL: [NotificationStatus; 6] = [
        NotificationStatus::Created,
        NotificationStatus::Sending,
        NotificationStatus::TemporaryFailure,
        NotificationStatus::Delivered,
        NotificationStatus::TechnicalFailure,
        NotificationStatus::PermanentFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Created => "created",
            NotificationStatus::Sending => "sending",
            NotificationStatus::TemporaryFailure => "temporary-failure",
            NotificationStatus::Delivered => "delivered",
            NotificationStatus::TechnicalFailure => "technical-failure",
            NotificationStatus::PermanentFailure => "permanent-failure",
        }
    }

    /// Position in the one total order statuses may move along. Receipts arrive late,
    /// repeated and out of order (SES and SQS promise neither order nor exactly-once), so the
    /// only rule that gives the same final status for every arrival order is "keep the
    /// highest rank seen". Why this order: an asynchronous bounce can follow a `Delivery`
    /// event, so `permanent-failure` outranks `delivered` ("a late Delivery event cannot
    /// overwrite permanent-failure"); a delivery outranks a transient bounce.
    /// The SQL function `notification_status_rank` (migration 0001) must agree; a test checks.
    pub fn rank(self) -> i16 {
        match self {
            NotificationStatus::Created => 0,
            NotificationStatus::Sending => 1,
            NotificationStatus::TemporaryFailure => 2,
            NotificationStatus::Delivered => 3,
            NotificationStatus::TechnicalFailure => 4,
            NotificationStatus::PermanentFailure => 5,
        }
    }

    /// A status after which nothing is expected from SES any more.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            NotificationStatus::Created | NotificationStatus::Sending
        )
    }
}

impl fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown notification status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for NotificationStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotificationStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

/// What to do with a proposed status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusTransition {
    /// Move to the new status.
    Apply,
    /// Already there: a repeated event, nothing to write.
    AlreadyThere,
    /// The new status ranks below the current one (a late or reordered event): keep the
    /// current status. Not an error — the event is consumed.
    WouldMoveBackwards,
}

/// The status rule as a pure function: a status never moves backwards.
pub fn transition(from: NotificationStatus, to: NotificationStatus) -> StatusTransition {
    use std::cmp::Ordering::*;
    match to.rank().cmp(&from.rank()) {
        Greater => StatusTransition::Apply,
        Equal => StatusTransition::AlreadyThere,
        Less => StatusTransition::WouldMoveBackwards,
    }
}

/// Applies a sequence of proposed statuses in arrival order, starting from `start`.
pub fn fold_statuses(
    start: NotificationStatus,
    proposed: impl IntoIterator<Item = NotificationStatus>,
) -> NotificationStatus {
    proposed
        .into_iter()
        .fold(start, |current, next| match transition(current, next) {
            StatusTransition::Apply => next,
            _ => current,
        })
}

#[cfg(test)]
mod tests {
    use super::NotificationStatus::*;
    use super::*;

    /// Every (from, to) pair, written out by hand: the table a reviewer checks against Notify's status order.
    #[test]
    fn every_pair_follows_the_table() {
        use StatusTransition::{AlreadyThere as Same, Apply as A, WouldMoveBackwards as B};
        let order = [
            Created,
            Sending,
            TemporaryFailure,
            Delivered,
            TechnicalFailure,
            PermanentFailure,
        ];
        #[rustfmt::skip]
        let expected = [
            //            created sending temp  deliv tech  perm
            /* created */ [Same,  A,      A,    A,    A,    A   ],
            /* sending */ [B,     Same,   A,    A,    A,    A   ],
            /* temp    */ [B,     B,      Same, A,    A,    A   ],
            /* deliv   */ [B,     B,      B,    Same, A,    A   ],
            /* tech    */ [B,     B,      B,    B,    Same, A   ],
            /* perm    */ [B,     B,      B,    B,    B,    Same],
        ];
        for (i, from) in order.iter().enumerate() {
            for (j, to) in order.iter().enumerate() {
                assert_eq!(transition(*from, *to), expected[i][j], "{from} -> {to}");
            }
        }
    }

    #[test]
    fn late_delivery_never_overwrites_permanent_failure() {
        assert_eq!(
            fold_statuses(Created, [Sending, PermanentFailure, Delivered]),
            PermanentFailure
        );
        assert_eq!(fold_statuses(Created, [Delivered, Sending]), Delivered);
    }

    #[test]
    fn any_arrival_order_gives_the_in_order_result() {
        // All permutations of a 4-event stream, each event possibly repeated.
        let events = [Sending, TemporaryFailure, Delivered, PermanentFailure];
        let in_order = fold_statuses(Created, events);
        let mut idx = [0usize, 1, 2, 3];
        permute(&mut idx, 0, &mut |p| {
            let shuffled: Vec<_> = p.iter().flat_map(|&i| [events[i], events[i]]).collect();
            assert_eq!(fold_statuses(Created, shuffled), in_order);
        });
    }

    fn permute(v: &mut [usize; 4], k: usize, f: &mut impl FnMut(&[usize; 4])) {
        if k == v.len() {
            f(v);
            return;
        }
        for i in k..v.len() {
            v.swap(k, i);
            permute(v, k + 1, f);
            v.swap(k, i);
        }
    }

    #[test]
    fn names_round_trip() {
        for s in NotificationStatus::ALL {
            assert_eq!(s.as_str().parse::<NotificationStatus>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("failed".parse::<NotificationStatus>().is_err());
        assert!(!Sending.is_final() && Delivered.is_final());
    }
}
