//! `receipts`: the receipts queue (SES events via SNS, or raw) → one status statement per
//! batch on the writer lane.
//!
//! Every message is decoded alone (an undecodable one fails alone). The batch is reduced in
//! Rust to one target per notification — the highest-ranked status proposed, so order and
//! repeats inside the batch do not matter — and applied with ONE statement keyed by the
//! primary key, which only ever moves a status forward, so order and repeats across
//! batches do not matter either (SPEC §4). The same statement says which notifications
//! exist: the messages of the others fail, SQS redelivers them until `persist` has stored
//! the notification, and after `maxReceiveCount` they wait in the DLQ — never dropped.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use floodgate_core::ses_event::{Receipt, decode_receipt, reduce_receipts};
use floodgate_db::sending::{AppliedReceipts, apply_receipts, is_retryable_conflict};
use floodgate_db::{DbError, WriterLane};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Attempts at the statement when it deadlocks with a concurrent batch.
const CONFLICT_ATTEMPTS: u32 = 3;

/// The function, built once per instance in `main`.
#[derive(Clone)]
pub struct Receipts {
    pub writer: WriterLane,
}

/// What one invocation did, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptsReport {
    pub messages: usize,
    pub malformed: usize,
    /// Events that change nothing (Open, Click… ): consumed without a statement.
    pub ignored: usize,
    /// Distinct notifications the batch is about.
    pub notifications: usize,
    /// Of those, not stored yet: their messages fail and come back.
    pub not_found: usize,
    /// Rows whose status moved forward.
    pub updated: i64,
    pub complaints: i64,
    pub failed_messages: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptsError {
    /// A record the handler must fail has no message id, so it cannot be reported alone:
    /// the whole invocation fails and is retried (applying receipts is idempotent).
    #[error("a failed record has no messageId; failing the whole batch")]
    UnidentifiedRecord,
}

impl Receipts {
    pub async fn handle(
        &self,
        event: SqsEvent,
    ) -> Result<(SqsBatchResponse, ReceiptsReport), ReceiptsError> {
        let mut report = ReceiptsReport {
            messages: event.records.len(),
            ..Default::default()
        };
        let mut failed: BTreeSet<Option<String>> = BTreeSet::new();
        let mut receipts: Vec<Receipt> = Vec::new();
        // Each notification and the messages whose events are about it.
        let mut carriers: BTreeMap<Uuid, Vec<Option<String>>> = BTreeMap::new();
        for record in event.records {
            let mid = record.message_id.clone();
            let decoded = match record.body.as_deref() {
                Some(b) => decode_receipt(b).map_err(|e| e.to_string()),
                None => Err("message has no body".to_string()),
            };
            match decoded {
                Ok(r) if r.status.is_none() && r.complaint.is_none() => report.ignored += 1,
                Ok(r) => {
                    carriers.entry(r.notification_id).or_default().push(mid);
                    receipts.push(r);
                }
                Err(reason) => {
                    // The reason names a field or a tag, never an address.
                    tracing::warn!(message_id = ?mid, reason = %reason, "receipt rejected");
                    report.malformed += 1;
                    failed.insert(mid);
                }
            }
        }
        let targets: Vec<_> = reduce_receipts(&receipts).into_values().collect();
        report.notifications = targets.len();

        match self.apply(&targets).await {
            Ok(applied) => {
                report.updated = applied.updated;
                report.complaints = applied.complaints;
                for (id, messages) in &carriers {
                    if !applied.found.contains(id) {
                        report.not_found += 1;
                        tracing::info!(notification_id = %id,
                            "receipt for a notification not stored yet; will retry");
                        failed.extend(messages.iter().cloned());
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, notifications = targets.len(),
                    "applying receipts failed; every message of the batch will be retried");
                failed.extend(carriers.values().flatten().cloned());
            }
        }

        let (response, failed_ids) = floodgate_core::batch::batch_response(failed)
            .map_err(|_| ReceiptsError::UnidentifiedRecord)?;
        report.failed_messages = failed_ids;
        tracing::info!(
            messages = report.messages,
            notifications = report.notifications,
            updated = report.updated,
            complaints = report.complaints,
            not_found = report.not_found,
            malformed = report.malformed,
            failed = report.failed_messages.len(),
            "receipts batch done"
        );
        Ok((response, report))
    }

    async fn apply(
        &self,
        targets: &[floodgate_core::ses_event::ReceiptTarget],
    ) -> Result<AppliedReceipts, DbError> {
        let mut attempt = 1;
        loop {
            let conn = self.writer.acquire().await?;
            match conn.bounded(apply_receipts(&conn, targets)).await {
                Err(e) if is_retryable_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                    tracing::warn!(attempt, "receipts statement deadlocked; retrying");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
