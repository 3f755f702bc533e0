//! `persist`: intake queues → one batch insert on the writer lane → send queues.
//!
//! An invocation stores every valid notification of its batch with ONE statement (no
//! per-row commits: seed 003's autovacuum spiral), then forwards their ids to the send queue
//! of their lane. Failures are reported per message (ReportBatchItemFailures): a malformed
//! message fails alone; a database outage fails the batch within the lane's bounds, never
//! hanging until the function timeout; a failed forward fails only the messages whose
//! notifications it carried — safe, since the insert is idempotent.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use floodgate_aws::{Queue, QueueLimits, send_all};
use floodgate_core::{
    IntakeEnvelope, IntakeNotification, Knobs, QueueName, TrafficLane, pack_send,
};
use floodgate_db::{DbError, WriterLane, insert_notifications};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// What `persist` needs, built once per instance in `main`.
#[derive(Clone)]
pub struct Persist {
    pub writer: WriterLane,
    pub queue: Arc<dyn Queue>,
    pub limits: QueueLimits,
    pub knobs: Arc<Knobs>,
}

/// The outcome of one invocation, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistReport {
    pub messages: usize,
    pub malformed: usize,
    pub notifications: usize,
    pub inserted: u64,
    pub forwarded: usize,
    pub failed_messages: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A record the handler must fail has no message id, so it cannot be reported alone:
    /// the whole invocation fails and Lambda retries the batch (the insert is idempotent).
    #[error("a failed record has no messageId; failing the whole batch")]
    UnidentifiedRecord,
}

impl Persist {
    /// The handler. Returns the batch response and a report of what happened.
    pub async fn handle(
        &self,
        event: SqsEvent,
    ) -> Result<(SqsBatchResponse, PersistReport), PersistError> {
        let mut report = PersistReport {
            messages: event.records.len(),
            ..Default::default()
        };
        let mut failed: BTreeSet<Option<String>> = BTreeSet::new();
        // Valid notifications, and for each the message it came from.
        let mut batch: Vec<IntakeNotification> = Vec::new();
        let mut source: Vec<Option<String>> = Vec::new();
        let mut seen: HashSet<Uuid> = HashSet::new();
        for record in event.records {
            let id = record.message_id.clone();
            let decoded = record
                .body
                .as_deref()
                .ok_or("message has no body")
                .and_then(|b| IntakeEnvelope::decode(b).map_err(|_| "undecodable envelope"));
            match decoded {
                Ok(env) => {
                    for n in env.notifications {
                        // The same notification twice in one batch (a duplicate delivery
                        // landing in the same batch) is stored once.
                        if seen.insert(n.id) {
                            batch.push(n);
                            source.push(id.clone());
                        }
                    }
                }
                Err(reason) => {
                    // The body may hold addresses: log only the message id and the reason.
                    tracing::warn!(message_id = ?id, reason, "intake message rejected");
                    report.malformed += 1;
                    failed.insert(id);
                }
            }
        }
        report.notifications = batch.len();

        if !batch.is_empty() {
            match self.store(&batch).await {
                Ok(inserted) => {
                    report.inserted = inserted;
                    let forward_failed = self.forward(&batch, &source).await;
                    report.forwarded = batch.len()
                        - batch
                            .iter()
                            .zip(&source)
                            .filter(|(_, s)| forward_failed.contains(*s))
                            .count();
                    failed.extend(forward_failed);
                }
                Err(e) => {
                    tracing::error!(error = %e, notifications = batch.len(),
                        "batch insert failed; every message of the batch will be retried");
                    failed.extend(source.iter().cloned());
                }
            }
        }

        let (response, failed_ids) = floodgate_core::batch::batch_response(failed)
            .map_err(|_| PersistError::UnidentifiedRecord)?;
        report.failed_messages = failed_ids;
        tracing::info!(
            messages = report.messages,
            notifications = report.notifications,
            inserted = report.inserted,
            forwarded = report.forwarded,
            failed = report.failed_messages.len(),
            "persist batch done"
        );
        Ok((response, report))
    }

    async fn store(&self, batch: &[IntakeNotification]) -> Result<u64, DbError> {
        let conn = self.writer.acquire().await?;
        let outcome = conn.bounded(insert_notifications(&conn, batch)).await?;
        Ok(outcome.inserted)
    }

    /// Sends the ids to their lane's send queue; returns the source messages whose
    /// notifications could not all be forwarded.
    async fn forward(
        &self,
        batch: &[IntakeNotification],
        source: &[Option<String>],
    ) -> BTreeSet<Option<String>> {
        let mut by_lane: BTreeMap<TrafficLane, Vec<usize>> = BTreeMap::new();
        for (i, n) in batch.iter().enumerate() {
            by_lane.entry(n.lane).or_default().push(i);
        }
        let sends = by_lane.into_iter().map(|(lane, idx)| async move {
            let per_message = self.knobs.send_ids_per_message(lane);
            let ids: Vec<Uuid> = idx.iter().map(|&i| batch[i].id).collect();
            let envelopes = pack_send(lane, &ids, per_message);
            let bodies: Vec<String> = envelopes.iter().map(|e| e.encode()).collect();
            let results = send_all(
                self.queue.as_ref(),
                QueueName::Send(lane),
                &bodies,
                self.limits,
            )
            .await;
            let mut failed = BTreeSet::new();
            for (chunk, result) in idx.chunks(per_message).zip(results) {
                if let Err(e) = result {
                    tracing::warn!(error = %e, lane = %lane, notifications = chunk.len(),
                        "forward to send queue failed");
                    failed.extend(chunk.iter().map(|&i| source[i].clone()));
                }
            }
            failed
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
