use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A traffic lane: every template has one (its process type), the bulk API always uses
/// `bulk`. Each lane has its own intake and send queue and its own concurrency, so a
/// 50,000-row job cannot delay a password reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficLane {
    Priority,
    Normal,
    Bulk,
}

impl TrafficLane {
    pub const ALL: [TrafficLane; 3] = [
        TrafficLane::Priority,
        TrafficLane::Normal,
        TrafficLane::Bulk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficLane::Priority => "priority",
            TrafficLane::Normal => "normal",
            TrafficLane::Bulk => "bulk",
        }
    }
}

impl fmt::Display for TrafficLane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown traffic lane {0:?} (expected priority, normal or bulk)")]
pub struct UnknownLane(pub String);

impl FromStr for TrafficLane {
    type Err = UnknownLane;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "priority" => Ok(TrafficLane::Priority),
            "normal" => Ok(TrafficLane::Normal),
            "bulk" => Ok(TrafficLane::Bulk),
            other => Err(UnknownLane(other.to_string())),
        }
    }
}

/// Every queue of the topology, by the name used in `infra/knobs.json`, Terraform and the
/// environment variable `FLOODGATE_QUEUE_URL_<NAME>` (upper case, `-` → `_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    Intake(TrafficLane),
    Send(TrafficLane),
    Receipts,
    /// Callbacks to clients' endpoints (delivery status, complaints).
    Callbacks,
}

impl QueueName {
    pub const ALL: [QueueName; 8] = [
        QueueName::Intake(TrafficLane::Priority),
        QueueName::Intake(TrafficLane::Normal),
        QueueName::Intake(TrafficLane::Bulk),
        QueueName::Send(TrafficLane::Priority),
        QueueName::Send(TrafficLane::Normal),
        QueueName::Send(TrafficLane::Bulk),
        QueueName::Receipts,
        QueueName::Callbacks,
    ];

    /// `intake-priority`, `send-bulk`, `receipts`.
    pub fn as_string(self) -> String {
        match self {
            QueueName::Intake(l) => format!("intake-{l}"),
            QueueName::Send(l) => format!("send-{l}"),
            QueueName::Receipts => "receipts".to_string(),
            QueueName::Callbacks => "callbacks".to_string(),
        }
    }

    /// The environment variable that holds this queue's URL.
    pub fn url_env_var(self) -> String {
        format!(
            "FLOODGATE_QUEUE_URL_{}",
            self.as_string().to_ascii_uppercase().replace('-', "_")
        )
    }

    pub fn parse(s: &str) -> Option<QueueName> {
        QueueName::ALL.into_iter().find(|q| q.as_string() == s)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_round_trip_through_their_names() {
        for lane in TrafficLane::ALL {
            assert_eq!(lane.as_str().parse::<TrafficLane>(), Ok(lane));
            let json = serde_json::to_string(&lane).unwrap();
            assert_eq!(json, format!("\"{}\"", lane.as_str()));
        }
        assert!("Bulk".parse::<TrafficLane>().is_err());
    }

    #[test]
    fn queue_names_and_env_vars() {
        assert_eq!(
            QueueName::Send(TrafficLane::Priority).as_string(),
            "send-priority"
        );
        assert_eq!(
            QueueName::Intake(TrafficLane::Bulk).url_env_var(),
            "FLOODGATE_QUEUE_URL_INTAKE_BULK"
        );
        for q in QueueName::ALL {
            assert_eq!(QueueName::parse(&q.as_string()), Some(q));
        }
        assert_eq!(QueueName::parse("intake"), None);
    }
}
