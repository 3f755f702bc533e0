use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A process type (Notify's word): every template has one, the bulk API always uses
/// `bulk`. Each process type has its own intake and send queue and its own concurrency, so a
/// 50,000-row job cannot delay a password reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessType {
    Priority,
    Normal,
    Bulk,
}

impl ProcessType {
    pub const ALL: [ProcessType; 3] = [
        ProcessType::Priority,
        ProcessType::Normal,
        ProcessType::Bulk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessType::Priority => "priority",
            ProcessType::Normal => "normal",
            ProcessType::Bulk => "bulk",
        }
    }
}

impl fmt::Display for ProcessType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown process type {0:?} (expected priority, normal or bulk)")]
pub struct UnknownProcessType(pub String);

impl FromStr for ProcessType {
    type Err = UnknownProcessType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "priority" => Ok(ProcessType::Priority),
            "normal" => Ok(ProcessType::Normal),
            "bulk" => Ok(ProcessType::Bulk),
            other => Err(UnknownProcessType(other.to_string())),
        }
    }
}

/// Every queue of the topology, by the name used in `infra/knobs.json`, Terraform and the
/// environment variable `FLOODGATE_QUEUE_URL_<NAME>` (upper case, `-` → `_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    Intake(ProcessType),
    Send(ProcessType),
    Receipts,
    /// Callbacks to clients' endpoints (delivery status, complaints).
    Callbacks,
}

impl QueueName {
    pub const ALL: [QueueName; 8] = [
        QueueName::Intake(ProcessType::Priority),
        QueueName::Intake(ProcessType::Normal),
        QueueName::Intake(ProcessType::Bulk),
        QueueName::Send(ProcessType::Priority),
        QueueName::Send(ProcessType::Normal),
        QueueName::Send(ProcessType::Bulk),
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
    fn process_types_round_trip_through_their_names() {
        for process_type in ProcessType::ALL {
            assert_eq!(
                process_type.as_str().parse::<ProcessType>(),
                Ok(process_type)
            );
            let json = serde_json::to_string(&process_type).unwrap();
            assert_eq!(json, format!("\"{}\"", process_type.as_str()));
        }
        assert!("Bulk".parse::<ProcessType>().is_err());
    }

    #[test]
    fn queue_names_and_env_vars() {
        assert_eq!(
            QueueName::Send(ProcessType::Priority).as_string(),
            "send-priority"
        );
        assert_eq!(
            QueueName::Intake(ProcessType::Bulk).url_env_var(),
            "FLOODGATE_QUEUE_URL_INTAKE_BULK"
        );
        for q in QueueName::ALL {
            assert_eq!(QueueName::parse(&q.as_string()), Some(q));
        }
        assert_eq!(QueueName::parse("intake"), None);
    }
}
