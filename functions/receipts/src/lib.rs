//! `receipts`: the receipts queue (SES events via SNS, or raw) → one status statement per
//! batch on the writer lane.
//!
//! Every message is decoded alone (an undecodable one fails alone). The batch is reduced in
//! Rust to one target per notification — the highest-ranked status proposed, so order and
//! repeats inside the batch do not matter — and applied with ONE statement keyed by the
//! primary key, which only ever moves a status forward, so order and repeats across
//! batches do not matter either. What happens to each message:
//!
//! | situation | message |
//! |---|---|
//! | applied (or changes nothing) | done |
//! | undecodable | fails alone |
//! | its notification is not stored yet | deferred with a growing delay until it is (no receive spent); the queue's retention bounds the wait |
//! | the database is unavailable or slow | deferred likewise |
//! | the database refuses the batch for what it holds | split until the offending message is alone; it fails alone |

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use floodgate_aws::{
    Carriers, DeferPolicy, Ledger, Msg, QueueLimits, QueueSender, UnidentifiedRecord,
};
use floodgate_core::QueueName;
use floodgate_core::ses_event::{Receipt, ReceiptTarget, decode_receipt, reduce_receipts};
use floodgate_db::sending::{AppliedReceipts, apply_receipts, retry_conflicts};
use floodgate_db::{DbError, WriterLane};
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use uuid::Uuid;

/// The function, built once per instance.
#[derive(Clone)]
pub struct Receipts {
    writer: WriterLane,
    queue: Arc<dyn QueueSender>,
    limits: QueueLimits,
    defer: DeferPolicy,
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
    /// Of those, not stored yet: their messages are deferred.
    pub not_found: usize,
    /// Rows changed (a status moved forward, or SES's message id or send time recorded).
    pub updated: i64,
    pub complaints: i64,
    /// Messages whose data the database refused, isolated and failed alone.
    pub refused: usize,
    /// Messages deferred (not stored yet, or the database unavailable).
    pub deferred: usize,
    /// Callbacks put on the callbacks queue.
    pub callbacks: usize,
    pub failed_messages: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiptsError {
    #[error(transparent)]
    UnidentifiedRecord(#[from] UnidentifiedRecord),
}

impl Receipts {
    /// The one constructor: `main`, the local stack and the tests all build it here.
    pub fn new(
        writer: WriterLane,
        queue: Arc<dyn QueueSender>,
        knobs: &floodgate_core::Knobs,
    ) -> Self {
        Receipts {
            writer,
            queue,
            limits: QueueLimits::from_knobs(knobs),
            defer: DeferPolicy::from_knobs(knobs),
        }
    }

    /// Replaces the deferral delays (the local stack's time-scaled runs).
    pub fn with_defer_policy(mut self, defer: DeferPolicy) -> Self {
        self.defer = defer;
        self
    }

    pub async fn handle(
        &self,
        event: SqsEvent,
    ) -> Result<(SqsBatchResponse, ReceiptsReport), ReceiptsError> {
        let mut report = ReceiptsReport {
            messages: event.records.len(),
            ..Default::default()
        };
        let mut ledger = Ledger::new(event.records, self.defer);
        // The decoded receipts of each message that needs a statement.
        let mut batch: Vec<(Msg, Receipt)> = Vec::new();
        let mut malformed = Vec::new();
        for (msg, body) in ledger.messages() {
            let decoded = match body {
                Some(b) => decode_receipt(b).map_err(|e| e.to_string()),
                None => Err("message has no body".to_string()),
            };
            match decoded {
                Ok(r) if r.status.is_none() && r.complaint.is_none() => report.ignored += 1,
                Ok(r) => batch.push((msg, r)),
                Err(reason) => {
                    // The reason names a field or a tag, never an address.
                    tracing::warn!(message_id = ?ledger.message_id(msg), reason = %reason, "receipt rejected");
                    malformed.push(msg);
                }
            }
        }
        report.malformed = malformed.len();
        ledger.fail_all(&malformed);
        let mut carriers: Carriers<Uuid> = Carriers::default();
        for (msg, r) in &batch {
            carriers.add(r.notification_id, *msg);
        }
        report.notifications = carriers.len();

        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..batch.len());
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let part = &batch[range.clone()];
            let targets: Vec<ReceiptTarget> = reduce_receipts(part.iter().map(|(_, r)| r))
                .into_values()
                .collect();
            let msgs: Vec<Msg> = part.iter().map(|(m, _)| *m).collect();
            match self.apply(&targets).await {
                Ok(applied) => {
                    report.updated += applied.updated;
                    report.complaints += applied.complaints;
                    for job in &applied.callbacks {
                        let sources: Vec<Msg> = part
                            .iter()
                            .filter(|(_, r)| r.notification_id == job.notification_id)
                            .map(|(m, _)| *m)
                            .collect();
                        ledger.emit(&sources, QueueName::Callbacks, job.encode());
                    }
                    report.callbacks += applied.callbacks.len();
                    let missing: Vec<Uuid> = targets
                        .iter()
                        .map(|t| t.notification_id)
                        .filter(|id| !applied.found.contains(id))
                        .collect();
                    for id in &missing {
                        tracing::info!(notification_id = %id,
                            "receipt for a notification not stored yet; deferred");
                    }
                    report.not_found += missing.len();
                    let waiting: Vec<Msg> = part
                        .iter()
                        .filter(|(_, r)| missing.contains(&r.notification_id))
                        .map(|(m, _)| *m)
                        .collect();
                    report.deferred += waiting.len();
                    ledger.defer(QueueName::Receipts, &waiting);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, notifications = targets.len(),
                        "database unavailable; deferring the receipts");
                    report.deferred += msgs.len();
                    ledger.defer(QueueName::Receipts, &msgs);
                }
                Err(e) if range.len() == 1 => {
                    tracing::error!(sqlstate = ?e.sqlstate(), message_id = ?ledger.message_id(msgs[0]),
                        "the database refused this receipt; failing it alone");
                    report.refused += 1;
                    ledger.fail(msgs[0]);
                }
                Err(e) => {
                    tracing::warn!(sqlstate = ?e.sqlstate(), messages = range.len(),
                        "the database refused the batch; splitting it to isolate the cause");
                    let [first, second] = floodgate_aws::ledger::halves(range);
                    pending.push(second);
                    pending.push(first);
                }
            }
        }

        let (response, outcome) = ledger.finish(self.queue.as_ref(), self.limits).await?;
        report.failed_messages = outcome.failed;
        tracing::info!(
            messages = report.messages,
            notifications = report.notifications,
            updated = report.updated,
            complaints = report.complaints,
            not_found = report.not_found,
            malformed = report.malformed,
            refused = report.refused,
            deferred = report.deferred,
            failed = report.failed_messages.len(),
            "receipts batch done"
        );
        Ok((response, report))
    }

    async fn apply(&self, targets: &[ReceiptTarget]) -> Result<AppliedReceipts, DbError> {
        retry_conflicts(|| async {
            let conn = self.writer.acquire().await?;
            conn.bounded(apply_receipts(&conn, targets)).await
        })
        .await
    }
}
