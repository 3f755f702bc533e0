//! The knob values shared by Terraform and the local stack. `infra/knobs.json` is the one
//! source of truth: Terraform reads it with `jsondecode(file(...))`, this module embeds it.

use serde::Deserialize;
use std::collections::BTreeMap;

pub const KNOBS_JSON: &str = include_str!("../../../infra/knobs.json");

#[derive(Debug, Clone, Deserialize)]
pub struct Knobs {
    pub sqs: SqsKnobs,
    pub functions: BTreeMap<String, FunctionKnobs>,
    pub event_source_mappings: BTreeMap<String, EventSourceMapping>,
    pub send_ids_per_message: BTreeMap<String, usize>,
    pub connection_budget: ConnectionBudget,
    pub callbacks: CallbackKnobs,
}

/// How callbacks to clients' endpoints are delivered (Notify's contract: a 5 s timeout,
/// 5 retries about 5 minutes apart; GC Notify's protection: a service whose endpoint keeps
/// failing is suspended for a while).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct CallbackKnobs {
    pub request_timeout_seconds: u32,
    pub retry_delay_seconds: u32,
    pub max_retries: u32,
    pub suspend_after_failures: u32,
    pub failure_window_seconds: u32,
    pub suspend_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SqsKnobs {
    pub max_message_bytes: usize,
    pub max_batch_entries: usize,
    pub max_receive_count: u32,
    pub visibility_timeout_multiplier: u32,
    pub message_retention_seconds: u32,
    pub dlq_retention_seconds: u32,
    /// A message a consumer cannot process yet (the database is unavailable, the rate
    /// budget is spent) is re-enqueued with this delay, doubled at each deferral up to
    /// `deferral_max_delay_seconds`; deferral never spends a receive.
    pub deferral_initial_delay_seconds: u32,
    pub deferral_max_delay_seconds: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionKnobs {
    pub timeout_seconds: u32,
    pub memory_mb: u32,
    /// For API-driven functions, the most instances that can run at once.
    pub reserved_concurrency: u32,
    /// Connections per instance on the writer lane (0: the function never writes).
    pub writer_lane_size: u32,
    /// Connections per instance on the reader lane.
    pub reader_lane_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventSourceMapping {
    pub function: String,
    pub batch_size: u32,
    pub maximum_batching_window_seconds: u32,
    pub maximum_concurrency: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct ConnectionBudget {
    pub writer: u32,
    pub reader: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum KnobsError {
    #[error("infra/knobs.json is invalid: {0}")]
    Parse(#[from] serde_json::Error),
}

impl Knobs {
    pub fn parse(json: &str) -> Result<Self, KnobsError> {
        Ok(serde_json::from_str(json)?)
    }

    /// The knobs compiled into this binary.
    pub fn embedded() -> Self {
        // Checked by the unit test below, so a bad edit fails the build's tests, not a Lambda.
        Self::parse(KNOBS_JSON).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The most instances of `function` that can run at once: the sum of its mappings'
    /// maximum concurrency for queue consumers, its reserved concurrency for the others.
    pub fn max_concurrency(&self, function: &str) -> u32 {
        let from_mappings: u32 = self
            .event_source_mappings
            .values()
            .filter(|m| m.function == function)
            .map(|m| m.maximum_concurrency)
            .sum();
        if from_mappings > 0 {
            from_mappings
        } else {
            self.functions
                .get(function)
                .map_or(0, |f| f.reserved_concurrency)
        }
    }

    /// `Σ functions (max concurrency × lane size)` for each lane kind: the most server
    /// connections the stack can ever ask the proxy for.
    pub fn connection_demand(&self) -> ConnectionBudget {
        let mut demand = ConnectionBudget {
            writer: 0,
            reader: 0,
        };
        for (name, f) in &self.functions {
            let c = self.max_concurrency(name);
            demand.writer += c * f.writer_lane_size;
            demand.reader += c * f.reader_lane_size;
        }
        demand
    }

    /// The visibility timeout a queue consumed by `function` needs (AWS's advice: ≥ 6× the
    /// function timeout, so a batch is not redelivered while its first attempt still runs).
    pub fn visibility_timeout_seconds(&self, function: &str) -> u32 {
        self.functions
            .get(function)
            .map_or(30, |f| f.timeout_seconds)
            * self.sqs.visibility_timeout_multiplier
    }

    pub fn send_ids_per_message(&self, process_type: crate::ProcessType) -> usize {
        self.send_ids_per_message
            .get(process_type.as_str())
            .copied()
            .unwrap_or(1)
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProcessType, QueueName};

    #[test]
    fn embedded_knobs_parse_and_cover_every_queue() {
        let k = Knobs::embedded();
        for q in QueueName::ALL {
            let m = k
                .event_source_mappings
                .get(&q.as_string())
                .unwrap_or_else(|| panic!("no mapping for {q}"));
            assert!(k.functions.contains_key(&m.function), "{q}: {}", m.function);
        }
        for process_type in ProcessType::ALL {
            assert!(k.send_ids_per_message(process_type) >= 1);
        }
    }

    #[test]
    fn mappings_are_within_aws_limits() {
        let k = Knobs::embedded();
        for (q, m) in &k.event_source_mappings {
            assert!((1..=10_000).contains(&m.batch_size), "{q}");
            assert!(m.maximum_batching_window_seconds <= 300, "{q}");
            assert!(
                m.batch_size <= 10 || m.maximum_batching_window_seconds >= 1,
                "{q}"
            );
            assert!((2..=1_000).contains(&m.maximum_concurrency), "{q}");
        }
    }

    #[test]
    fn demand_stays_within_the_budget() {
        let k = Knobs::embedded();
        let d = k.connection_demand();
        assert!(d.writer <= k.connection_budget.writer, "{d:?}");
        assert!(d.reader <= k.connection_budget.reader, "{d:?}");
        // persist alone: (4 + 4 + 2) mappings × 1 writer connection.
        assert_eq!(
            k.max_concurrency("persist"),
            k.event_source_mappings
                .values()
                .filter(|m| m.function == "persist")
                .map(|m| m.maximum_concurrency)
                .sum::<u32>()
        );
    }
}
