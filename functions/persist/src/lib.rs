//! `persist`: intake queues → one batch insert on the writer lane → send queues.
//!
//! An invocation stores every valid notification of its batch with ONE statement (never a
//! commit per row: per-row commits feed autovacuum storms), then forwards their ids to the
//! send queue of their process type. What happens to each message:
//!
//! | situation | message |
//! |---|---|
//! | stored and forwarded | done |
//! | undecodable | fails alone (dead-letter queue after maxReceiveCount) |
//! | the database refuses its data (a value it cannot store) | the batch is split until the message is alone; it fails alone, the rest are stored |
//! | the database is unavailable or slow | deferred: re-enqueued with a growing delay, no receive spent |
//! | stored, but the forward was not acknowledged | fails; the redelivery inserts nothing and forwards again |
//!
//! A scheduled notification is forwarded with an SQS delay that ends at its time when that
//! is within 15 minutes of its creation, and otherwise left `created` for the periodic
//! release ([`floodgate_core::schedule`]).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use floodgate_aws::{
    DeferPolicy, Ledger, Msg, QueueLimits, QueueSender, UnidentifiedRecord, forward_to_send_delayed,
};
use floodgate_core::schedule::forward_delay;
use floodgate_core::{IntakeEnvelope, IntakeNotification, Knobs, QueueName};
use floodgate_db::sending::retry_conflicts;
use floodgate_db::{DbError, InsertOutcome, InsertPath, WriterLane, insert_notifications};
use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::sync::Arc;
use uuid::Uuid;

/// What `persist` needs, built once per instance.
#[derive(Clone)]
pub struct Persist {
    writer: WriterLane,
    queue: Arc<dyn QueueSender>,
    limits: QueueLimits,
    knobs: Arc<Knobs>,
    defer: DeferPolicy,
}

/// The outcome of one invocation, for logs, metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistReport {
    pub messages: usize,
    pub malformed: usize,
    pub notifications: usize,
    pub inserted: u64,
    pub forwarded: usize,
    /// Scheduled notifications stored and left for the periodic release.
    pub held: usize,
    /// Messages whose data the database refused, isolated and failed alone.
    pub refused: usize,
    /// Messages deferred because the database was unavailable.
    pub deferred: usize,
    /// Stores that ended the fast COPY early and went in by the fallback statement (a
    /// redelivery, a missing partition, a refused value being isolated).
    pub fallbacks: usize,
    pub failed_messages: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    UnidentifiedRecord(#[from] UnidentifiedRecord),
}

/// One message's share of the batch: the notifications first seen in it.
struct Group {
    msg: Msg,
    queue: QueueName,
    notifications: Vec<IntakeNotification>,
}

impl Persist {
    /// The one constructor: `main`, the local stack and the tests all build it here.
    pub fn new(writer: WriterLane, queue: Arc<dyn QueueSender>, knobs: Arc<Knobs>) -> Self {
        Persist {
            writer,
            queue,
            limits: QueueLimits::from_knobs(&knobs),
            defer: DeferPolicy::from_knobs(&knobs),
            knobs,
        }
    }

    /// Replaces the deferral delays (the local stack's time-scaled runs).
    pub fn with_defer_policy(mut self, defer: DeferPolicy) -> Self {
        self.defer = defer;
        self
    }

    /// The handler. Returns the batch response and a report of what happened.
    pub async fn handle(
        &self,
        event: SqsEvent,
    ) -> Result<(SqsBatchResponse, PersistReport), PersistError> {
        let mut report = PersistReport {
            messages: event.records.len(),
            ..Default::default()
        };
        let mut ledger = Ledger::new(event.records, self.defer);
        let mut groups: Vec<Group> = Vec::new();
        let mut malformed: Vec<Msg> = Vec::new();
        let mut seen: HashSet<Uuid> = HashSet::new();
        for (msg, body) in ledger.messages() {
            let decoded = body
                .ok_or("message has no body")
                .and_then(|b| IntakeEnvelope::decode(b).map_err(|_| "undecodable envelope"));
            match decoded {
                Ok(env) => {
                    let queue = QueueName::Intake(env.notifications[0].process_type);
                    // The same notification twice in one batch (a duplicate delivery
                    // landing in the same batch) is stored once.
                    let notifications: Vec<IntakeNotification> = env
                        .notifications
                        .into_iter()
                        .filter(|n| seen.insert(n.id))
                        .collect();
                    report.notifications += notifications.len();
                    groups.push(Group {
                        msg,
                        queue,
                        notifications,
                    });
                }
                Err(reason) => {
                    // The body may hold addresses: log only the message id and the reason.
                    tracing::warn!(message_id = ?ledger.message_id(msg), reason, "intake message rejected");
                    malformed.push(msg);
                }
            }
        }
        report.malformed = malformed.len();
        ledger.fail_all(&malformed);

        let stored = self
            .store_isolating(&groups, &mut ledger, &mut report)
            .await;
        let now = chrono::Utc::now();
        let mut held: HashSet<Uuid> = HashSet::new();
        let mut ids = Vec::new();
        for n in stored.iter().flat_map(|&g| groups[g].notifications.iter()) {
            match forward_delay(n.scheduled_for, n.created_at, now) {
                Some(delay) => ids.push((n.id, n.process_type, delay)),
                None => {
                    held.insert(n.id);
                }
            }
        }
        report.held = held.len();
        let lost =
            forward_to_send_delayed(self.queue.as_ref(), self.limits, &self.knobs, ids).await;
        for &g in &stored {
            let group = &groups[g];
            let missing = group
                .notifications
                .iter()
                .filter(|n| lost.contains(&n.id))
                .count();
            let kept = group
                .notifications
                .iter()
                .filter(|n| held.contains(&n.id))
                .count();
            report.forwarded += group.notifications.len() - missing - kept;
            if missing > 0 {
                ledger.fail(group.msg);
            }
        }

        let (response, outcome) = ledger.finish(self.queue.as_ref(), self.limits).await?;
        report.failed_messages = outcome.failed;
        tracing::info!(
            messages = report.messages,
            notifications = report.notifications,
            inserted = report.inserted,
            forwarded = report.forwarded,
            held = report.held,
            refused = report.refused,
            deferred = report.deferred,
            fallbacks = report.fallbacks,
            failed = report.failed_messages.len(),
            "persist batch done"
        );
        Ok((response, report))
    }

    /// Stores the groups, one statement for all of them while the database takes them.
    /// When it refuses the data, the batch is halved until the refused message is alone
    /// (it fails; every other message is stored); when it is unavailable, the groups not
    /// stored yet are deferred. Returns the stored groups.
    async fn store_isolating(
        &self,
        groups: &[Group],
        ledger: &mut Ledger,
        report: &mut PersistReport,
    ) -> Vec<usize> {
        let mut stored = Vec::new();
        let mut pending: Vec<Range<usize>> = Vec::new();
        pending.push(0..groups.len());
        while let Some(range) = pending.pop() {
            let batch: Vec<&IntakeNotification> = groups[range.clone()]
                .iter()
                .flat_map(|g| g.notifications.iter())
                .collect();
            if batch.is_empty() {
                stored.extend(range);
                continue;
            }
            match self.store(&batch).await {
                Ok(outcome) => {
                    report.inserted += outcome.inserted;
                    if outcome.path == InsertPath::Statement {
                        report.fallbacks += 1;
                    }
                    stored.extend(range);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, notifications = batch.len(),
                        "database unavailable; deferring the batch");
                    for g in &groups[range] {
                        ledger.defer(g.queue, [&g.msg]);
                        report.deferred += 1;
                    }
                }
                Err(e) if range.len() == 1 => {
                    // Only the SQLSTATE and the ids: the error text may quote a value.
                    let ids: Vec<Uuid> = batch.iter().map(|n| n.id).collect();
                    tracing::error!(sqlstate = ?e.sqlstate(), notification_ids = ?ids,
                        "the database refused this message's notifications; failing it alone");
                    ledger.fail(groups[range.start].msg);
                    report.refused += 1;
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
        stored
    }

    async fn store(&self, batch: &[&IntakeNotification]) -> Result<InsertOutcome, DbError> {
        retry_conflicts(|| async {
            let conn = self.writer.acquire().await?;
            conn.bounded(insert_notifications(&conn, batch)).await
        })
        .await
    }
}
