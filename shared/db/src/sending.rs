//! The SQL of `send` and `receipts`: claim, settle, apply receipts, and the maintenance
//! sweeps (claims a crash left behind, notifications that never got a final status, and
//! notifications still `created`). Each function is ONE statement over arrays
//! (`unnest`), keyed by the primary key `(id, created_at)` so each row is found by index in
//! its own day's partition, and each touches only unindexed columns, so every status change
//! is a HOT update.

use crate::error::DbError;
use crate::lane::WriterConnection;
use chrono::{DateTime, Utc};
use floodgate_core::callback::CallbackJob;
use floodgate_core::ses_event::ReceiptTarget;
use floodgate_core::{KeyType, NotificationStatus, ProcessType};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::types::Type;
use uuid::Uuid;

/// The claim: the batch's `created` notifications become `sending` (with `sent_at` still
/// NULL: "claimed, SES not confirmed yet"), and the statement returns what the email needs.
/// A notification already claimed (a redelivered or duplicate message, or a concurrent
/// instance that got there first — the row lock makes the second one re-check `status`)
/// is not returned, so it is not sent again. Nor is a `created` row whose `scheduled_for`
/// has not come yet: only a claim sends, so this check is what keeps every path (a queue
/// delay cut short, a re-forward) from sending early; such a row stays `created` for the
/// release or the re-forward sweep. LEFT JOINs: a claimed row whose template
/// version or service is missing still comes back (and is failed by the caller) instead of
/// staying claimed for ever.
const CLAIM: &str = "
WITH claimed AS (
    UPDATE notifications n
    SET status = 'sending', claim_token = $4, updated_at = now()
    FROM unnest($1::uuid[], $2::timestamptz[], $3::uuid[]) AS c(id, created_at, token)
    WHERE n.id = c.id AND n.created_at = c.created_at
      AND ((n.status = 'created' AND (n.scheduled_for IS NULL OR n.scheduled_for <= now()))
           OR (n.status = 'sending' AND n.claim_token = c.token
               AND n.ses_message_id IS NULL AND n.sent_at IS NULL))
    RETURNING n.id, n.created_at, n.service_id, n.template_id, n.template_version, n.process_type,
              n.key_type, n.email_address, n.personalisation, n.one_click_unsubscribe_url,
              n.email_reply_to_id
)
SELECT c.id, c.created_at, c.service_id, c.template_id, c.template_version, c.process_type,
       c.key_type, c.email_address, c.personalisation, tv.subject, tv.body, s.from_email,
       c.one_click_unsubscribe_url, coalesce(r.email_address, d.email_address)
FROM claimed c
LEFT JOIN template_versions tv ON tv.template_id = c.template_id AND tv.version = c.template_version
LEFT JOIN services s ON s.id = c.service_id
LEFT JOIN service_email_reply_to r ON r.id = c.email_reply_to_id AND r.service_id = c.service_id
LEFT JOIN LATERAL (
    SELECT x.email_address FROM service_email_reply_to x
    WHERE c.email_reply_to_id IS NULL AND x.service_id = c.service_id
      AND x.is_default AND NOT x.archived
    ORDER BY x.created_at DESC LIMIT 1) d ON true";

/// One id to claim: a `created` row, or — with `token` — a `sending` row that an earlier
/// invocation claimed under that token and re-enqueued because it never handed it to SES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimKey {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub token: Option<Uuid>,
}

/// A notification claimed for sending, with what its email needs.
#[derive(Clone, PartialEq)]
pub struct Claimed {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub service_id: Uuid,
    pub template_id: Uuid,
    pub template_version: i32,
    /// `Err` holds a stored value this code does not know (the row is failed, not sent).
    pub process_type: Result<ProcessType, String>,
    pub key_type: Result<KeyType, String>,
    pub email_address: String,
    pub personalisation: serde_json::Value,
    /// `None` when the template version does not exist.
    pub subject: Option<String>,
    pub body: Option<String>,
    /// `None` when the service does not exist.
    pub from_email: Option<String>,
    /// RFC 8058 one-click unsubscribe URL given at the API.
    pub one_click_unsubscribe_url: Option<String>,
    /// The reply-to address the notification named, else the service's default.
    pub reply_to: Option<String>,
}

// By hand: the address and personalisation must never reach a log line.
impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("id", &self.id)
            .field("process_type", &self.process_type)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

/// Claims the claimable notifications among `keys` under `token` (one statement); returns
/// the claimed ones. Duplicate keys are harmless.
pub async fn claim_for_sending(
    client: &WriterConnection,
    keys: &[ClaimKey],
    token: Uuid,
) -> Result<Vec<Claimed>, DbError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
    let created: Vec<DateTime<Utc>> = keys.iter().map(|k| k.created_at).collect();
    let tokens: Vec<Option<Uuid>> = keys.iter().map(|k| k.token).collect();
    let rows = client
        .query_typed(
            CLAIM,
            &[
                (&ids, Type::UUID_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&tokens, Type::UUID_ARRAY),
                (&token, Type::UUID),
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let process_type: String = r.get(5);
            let key_type: String = r.get(6);
            Claimed {
                id: r.get(0),
                created_at: r.get(1),
                service_id: r.get(2),
                template_id: r.get(3),
                template_version: r.get(4),
                process_type: process_type.parse().map_err(|_| process_type.clone()),
                key_type: KeyType::parse(&key_type).ok_or(key_type),
                email_address: r.get(7),
                personalisation: r.get(8),
                subject: r.get(9),
                body: r.get(10),
                from_email: r.get(11),
                one_click_unsubscribe_url: r.get(12),
                reply_to: r.get(13),
            }
        })
        .collect())
}

/// How a claimed notification's send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// SES accepted it: record its message id and the time (the status stays `sending`,
    /// or whatever a faster receipt already made it).
    Sent {
        ses_message_id: String,
        sent_at: DateTime<Utc>,
    },
    /// SES did not take it (throttled) or it was never offered: back to `created`, so a
    /// later message claims it again. Only a claim this invocation holds (its token) and
    /// that SES never confirmed is released.
    Release,
    /// A final status decided without SES's events: `technical-failure` for a permanent
    /// SES error or a row that cannot be rendered, or a test key's simulated outcome.
    Final {
        status: NotificationStatus,
        failure_reason: Option<String>,
        /// Set for simulated sends (test keys), which count as sent.
        sent_at: Option<DateTime<Utc>>,
    },
}

const SETTLE: &str = "
WITH settled AS (
    UPDATE notifications n SET
        status = CASE s.action WHEN 'release' THEN 'created' WHEN 'final' THEN s.status
                 ELSE n.status END,
        ses_message_id = coalesce(n.ses_message_id, nullif(s.ses_message_id, '')),
        sent_at = CASE s.action WHEN 'release' THEN n.sent_at ELSE coalesce(n.sent_at, s.sent_at) END,
        completed_at = CASE s.action WHEN 'final' THEN now() ELSE n.completed_at END,
        failure_reason = CASE s.action WHEN 'final' THEN s.failure_reason ELSE n.failure_reason END,
        updated_at = now()
    FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                $6::timestamptz[], $7::text[])
         AS s(id, created_at, action, status, ses_message_id, sent_at, failure_reason)
    WHERE n.id = s.id AND n.created_at = s.created_at
      AND CASE s.action
            WHEN 'sent' THEN n.ses_message_id IS NULL
            WHEN 'release' THEN n.status = 'sending' AND n.claim_token = $8
                                AND n.ses_message_id IS NULL AND n.sent_at IS NULL
            WHEN 'final' THEN notification_status_rank(s.status) > notification_status_rank(n.status)
            ELSE false
          END
    RETURNING n.id, n.created_at, n.service_id, n.status, n.client_reference, n.email_address,
              n.completed_at, n.sent_at, n.template_id, n.template_version, s.action
)
SELECT (SELECT count(*) FROM settled),
       (SELECT coalesce(json_agg(json_build_object(
            'v', 1, 'kind', 'delivery-status', 'service_id', x.service_id,
            'notification_id', x.id, 'url', sc.url,
            'sealed_token', translate(encode(sc.sealed_token, 'base64'), chr(10), ''),
            'payload', json_build_object(
                'id', x.id, 'reference', x.client_reference, 'to', x.email_address,
                'status', x.status, 'created_at', notify_time(x.created_at),
                'completed_at', notify_time(x.completed_at), 'sent_at', notify_time(x.sent_at),
                'notification_type', 'email', 'template_id', x.template_id,
                'template_version', x.template_version))), '[]'::json)
        FROM settled x
        JOIN service_callbacks sc ON sc.service_id = x.service_id AND sc.kind = 'delivery-status'
        WHERE x.action = 'final')::text";

/// What one settle statement did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    pub rows: i64,
    /// Delivery-status callbacks for the final statuses the settle set itself.
    pub callbacks: Vec<CallbackJob>,
}

/// Records how each notification claimed under `token` ended — successes, releases and
/// failures together, ONE statement.
pub async fn settle_sends(
    client: &WriterConnection,
    outcomes: &[(Uuid, DateTime<Utc>, Settlement)],
    token: Uuid,
) -> Result<Settled, DbError> {
    if outcomes.is_empty() {
        return Ok(Settled::default());
    }
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut actions: Vec<&str> = Vec::with_capacity(n);
    let mut statuses: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut message_ids: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut sent: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut reasons: Vec<Option<&str>> = Vec::with_capacity(n);
    for (id, at, s) in outcomes {
        ids.push(*id);
        created.push(*at);
        match s {
            Settlement::Sent {
                ses_message_id,
                sent_at,
            } => {
                actions.push("sent");
                statuses.push(None);
                message_ids.push(Some(ses_message_id));
                sent.push(Some(*sent_at));
                reasons.push(None);
            }
            Settlement::Release => {
                actions.push("release");
                statuses.push(None);
                message_ids.push(None);
                sent.push(None);
                reasons.push(None);
            }
            Settlement::Final {
                status,
                failure_reason,
                sent_at,
            } => {
                actions.push("final");
                statuses.push(Some(status.as_str()));
                message_ids.push(None);
                sent.push(*sent_at);
                reasons.push(failure_reason.as_deref());
            }
        }
    }
    let row = client
        .query_typed_one(
            SETTLE,
            &[
                (&ids, Type::UUID_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&actions, Type::TEXT_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&message_ids, Type::TEXT_ARRAY),
                (&sent, Type::TIMESTAMPTZ_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
                (&token, Type::UUID),
            ],
        )
        .await?;
    Ok(Settled {
        rows: row.get(0),
        callbacks: callback_jobs(row.get(1))?,
    })
}

/// One statement for a whole batch of receipts. `t` holds one target per notification
/// (reduced in Rust); `found` tells which of them exist — the caller fails the messages of
/// the others so SQS redelivers them until their notification is stored; the UPDATE only
/// ever moves a status to a higher rank (re-checked after a row lock wait, so concurrent
/// batches cannot move it backwards either); complaints are inserted for existing
/// notifications only, idempotently.
const APPLY_RECEIPTS: &str = "
WITH t AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[],
                         $5::text[], $6::text[], $7::timestamptz[])
        AS t(id, created_at, status, event_at, failure_reason, ses_message_id, sent_at)
),
found AS (
    SELECT n.id, n.created_at, n.service_id, n.status, n.timed_out, n.client_reference,
           n.email_address, n.completed_at, n.sent_at, n.template_id, n.template_version
    FROM notifications n JOIN t ON n.id = t.id AND n.created_at = t.created_at
),
updated AS (
    UPDATE notifications n SET
        status = CASE WHEN receipt_advances(n.status, n.timed_out, t.status) THEN t.status
                 ELSE n.status END,
        timed_out = n.timed_out AND NOT receipt_advances(n.status, n.timed_out, t.status),
        updated_at = now(),
        completed_at = CASE WHEN receipt_advances(n.status, n.timed_out, t.status)
                                 AND t.status NOT IN ('created', 'sending')
                            THEN coalesce(t.event_at, now()) ELSE n.completed_at END,
        failure_reason = CASE WHEN receipt_advances(n.status, n.timed_out, t.status)
                                   AND t.status NOT IN ('created', 'sending')
                              THEN t.failure_reason ELSE n.failure_reason END,
        ses_message_id = coalesce(n.ses_message_id, t.ses_message_id),
        sent_at = coalesce(n.sent_at, t.sent_at)
    FROM t
    WHERE n.id = t.id AND n.created_at = t.created_at
      -- A status that moves forward, or what SES acceptance left unrecorded (a `Send`
      -- event after a crash), whatever the status.
      AND (receipt_advances(n.status, n.timed_out, t.status)
           OR (n.ses_message_id IS NULL AND t.ses_message_id IS NOT NULL)
           OR (n.sent_at IS NULL AND t.sent_at IS NOT NULL))
    RETURNING n.id
),
complained AS (
    INSERT INTO complaints (notification_id, notification_created_at, feedback_id, service_id,
                            ses_message_id, complaint_type, complained_at)
    SELECT c.id, f.created_at, c.feedback_id, f.service_id, c.ses_message_id,
           c.complaint_type, c.complained_at
    FROM unnest($8::uuid[], $9::text[], $10::text[], $11::text[], $12::timestamptz[])
         AS c(id, feedback_id, ses_message_id, complaint_type, complained_at)
    JOIN found f ON f.id = c.id
    ON CONFLICT (notification_id, feedback_id) DO NOTHING
    RETURNING 1
),
-- Callbacks for the services that have one: a final status this batch sets, or sets again
-- (a repeated event: the callback is repeated too, so one whose enqueue failed comes back
-- with its message); every complaint of the batch, likewise.
callbacks AS (
    SELECT json_build_object(
        'v', 1, 'kind', 'delivery-status', 'service_id', f.service_id, 'notification_id', f.id,
        'url', sc.url, 'sealed_token', translate(encode(sc.sealed_token, 'base64'), chr(10), ''),
        'payload', json_build_object(
            'id', f.id, 'reference', f.client_reference, 'to', f.email_address,
            'status', t.status, 'created_at', notify_time(f.created_at),
            'completed_at', notify_time(CASE WHEN receipt_advances(f.status, f.timed_out, t.status)
                                             THEN coalesce(t.event_at, now())
                                             ELSE f.completed_at END),
            'sent_at', notify_time(coalesce(f.sent_at, t.sent_at)),
            'notification_type', 'email', 'template_id', f.template_id,
            'template_version', f.template_version)) AS job
    FROM found f
    JOIN t ON t.id = f.id AND t.created_at = f.created_at
    JOIN service_callbacks sc ON sc.service_id = f.service_id AND sc.kind = 'delivery-status'
    WHERE t.status IN ('delivered', 'permanent-failure', 'temporary-failure', 'technical-failure')
      AND (receipt_advances(f.status, f.timed_out, t.status) OR f.status = t.status)
    UNION ALL
    SELECT json_build_object(
        'v', 1, 'kind', 'complaint', 'service_id', f.service_id, 'notification_id', f.id,
        'url', sc.url, 'sealed_token', translate(encode(sc.sealed_token, 'base64'), chr(10), ''),
        'payload', json_build_object(
            'notification_id', f.id, 'complaint_id', c.feedback_id,
            'reference', f.client_reference, 'to', f.email_address,
            'complaint_date', notify_time(coalesce(c.complained_at, now()))))
    FROM unnest($8::uuid[], $9::text[], $12::timestamptz[]) AS c(id, feedback_id, complained_at)
    JOIN found f ON f.id = c.id
    JOIN service_callbacks sc ON sc.service_id = f.service_id AND sc.kind = 'complaint'
)
SELECT coalesce((SELECT array_agg(id) FROM found), '{}'::uuid[]),
       (SELECT count(*) FROM updated),
       (SELECT count(*) FROM complained),
       (SELECT coalesce(json_agg(job), '[]'::json) FROM callbacks)::text";

/// What one receipts statement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedReceipts {
    /// The notifications that exist (the others are not stored yet).
    pub found: BTreeSet<Uuid>,
    /// Rows whose status moved forward.
    pub updated: i64,
    /// Complaints newly recorded.
    pub complaints: i64,
    /// Callbacks to make (see the statement).
    pub callbacks: Vec<CallbackJob>,
}

/// Applies a batch's reduced receipts with ONE statement.
pub async fn apply_receipts(
    client: &WriterConnection,
    targets: &[ReceiptTarget],
) -> Result<AppliedReceipts, DbError> {
    if targets.is_empty() {
        return Ok(AppliedReceipts::default());
    }
    let n = targets.len();
    let mut ids = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut statuses: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut event_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut reasons: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut message_ids: Vec<&str> = Vec::with_capacity(n);
    let mut sent: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut c_ids = Vec::new();
    let mut c_feedback: Vec<&str> = Vec::new();
    let mut c_message_ids: Vec<&str> = Vec::new();
    let mut c_types: Vec<Option<&str>> = Vec::new();
    let mut c_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    for t in targets {
        ids.push(t.notification_id);
        created.push(t.created_at);
        statuses.push(t.status.map(NotificationStatus::as_str));
        event_at.push(t.event_at);
        reasons.push(t.failure_reason.as_deref());
        message_ids.push(&t.ses_message_id);
        sent.push(t.sent_at);
        for c in &t.complaints {
            c_ids.push(t.notification_id);
            c_feedback.push(&c.feedback_id);
            c_message_ids.push(&t.ses_message_id);
            c_types.push(c.complaint_type.as_deref());
            c_at.push(c.complained_at);
        }
    }
    let row = client
        .query_typed_one(
            APPLY_RECEIPTS,
            &[
                (&ids, Type::UUID_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&statuses, Type::TEXT_ARRAY),
                (&event_at, Type::TIMESTAMPTZ_ARRAY),
                (&reasons, Type::TEXT_ARRAY),
                (&message_ids, Type::TEXT_ARRAY),
                (&sent, Type::TIMESTAMPTZ_ARRAY),
                (&c_ids, Type::UUID_ARRAY),
                (&c_feedback, Type::TEXT_ARRAY),
                (&c_message_ids, Type::TEXT_ARRAY),
                (&c_types, Type::TEXT_ARRAY),
                (&c_at, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
    let found: Vec<Uuid> = row.get(0);
    Ok(AppliedReceipts {
        found: found.into_iter().collect(),
        updated: row.get(1),
        complaints: row.get(2),
        callbacks: callback_jobs(row.get(3))?,
    })
}

/// The callbacks a statement built (a JSON array of [`CallbackJob`]s).
fn callback_jobs(json: &str) -> Result<Vec<CallbackJob>, DbError> {
    Ok(serde_json::from_str(json)?)
}

/// SQLSTATEs after which the same statement can simply run again: a deadlock between two
/// batches locking overlapping rows in different orders, or a serialization failure.
pub fn is_retryable_conflict(e: &DbError) -> bool {
    matches!(e.sqlstate(), Some("40P01" | "40001"))
}

/// Attempts at a batch statement that hit a deadlock or serialization failure with a
/// concurrent batch before the error is returned.
pub const CONFLICT_ATTEMPTS: u32 = 3;

/// Runs `op` (which acquires its connection and runs one statement) again, right away,
/// while it fails with a conflict with a concurrent batch, up to [`CONFLICT_ATTEMPTS`].
pub async fn retry_conflicts<T, F, Fut>(mut op: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if is_retryable_conflict(&e) && attempt < CONFLICT_ATTEMPTS => {
                tracing::warn!(attempt, sqlstate = ?e.sqlstate(), "batch statement conflicted; retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The reasons the sweeper stores.
pub const STUCK_CLAIM_REASON: &str = "timed out: claimed for sending but SES acceptance was never recorded (send crashed \
     between the claim and the SES call)";
pub const NO_FINAL_EVENT_REASON: &str =
    "timed out: SES accepted it but reported no delivery or bounce within 72 hours";

const SWEEP_SENDING: &str = "
UPDATE notifications SET
    status = 'temporary-failure', timed_out = true, completed_at = now(), updated_at = now(),
    failure_reason = CASE WHEN ses_message_id IS NULL AND sent_at IS NULL THEN $4 ELSE $5 END
WHERE created_at >= $1 AND status = 'sending'
  AND ((ses_message_id IS NULL AND sent_at IS NULL AND updated_at < now() - make_interval(secs => $2))
       OR coalesce(sent_at, updated_at) < now() - make_interval(secs => $3))";

/// How long `sending` may last before the sweeper gives a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendingTimeouts {
    /// A claim with no sign of SES acceptance (no message id, no `sent_at`). SES `Send`
    /// events record acceptance within the receipts queue's lag, so a claim this old with
    /// neither was lost in a crash before the SES call.
    pub unconfirmed_claim: Duration,
    /// Accepted by SES, but no final event: Notify's 72 hours.
    pub no_final_event: Duration,
}

impl Default for SendingTimeouts {
    fn default() -> Self {
        SendingTimeouts {
            unconfirmed_claim: Duration::from_secs(3600),
            no_final_event: Duration::from_secs(72 * 3600),
        }
    }
}

/// The sweep of `sending`: notifications past their timeout become `temporary-failure`
/// with `timed_out` set, which any later SES verdict replaces (a late `Delivery` still
/// makes them `delivered`). Only partitions from `lookback` ago are scanned (partition
/// pruning on `created_at`); `status` is not indexed (HOT updates), so this is a scan of
/// those partitions: run it every few minutes from maintenance, not per request.
pub async fn sweep_sending(
    client: &WriterConnection,
    timeouts: SendingTimeouts,
    lookback: Duration,
) -> Result<u64, DbError> {
    let since = Utc::now()
        - chrono::Duration::from_std(lookback).unwrap_or_else(|_| chrono::Duration::days(4));
    Ok(client
        .execute_typed(
            SWEEP_SENDING,
            &[
                (&since, Type::TIMESTAMPTZ),
                (&timeouts.unconfirmed_claim.as_secs_f64(), Type::FLOAT8),
                (&timeouts.no_final_event.as_secs_f64(), Type::FLOAT8),
                (&STUCK_CLAIM_REASON, Type::TEXT),
                (&NO_FINAL_EVENT_REASON, Type::TEXT),
            ],
        )
        .await?)
}

/// Picks notifications still `created` (and due, if scheduled) whose row has not changed
/// for `older_than`, oldest first, at most `limit`, and stamps them so the next sweep skips
/// them for another `older_than`. Their send message was lost (its intake message went to
/// the dead-letter queue after the insert, or a forward was never acknowledged): the
/// caller puts the ids back on their process type's send queue, which is safe because
/// only a claim sends.
const PICK_CREATED: &str = "
UPDATE notifications n SET updated_at = now()
FROM (SELECT id, created_at FROM notifications
      WHERE created_at >= $1 AND status = 'created'
        AND coalesce(updated_at, created_at) < now() - make_interval(secs => $2)
        AND (scheduled_for IS NULL OR scheduled_for <= now())
      ORDER BY created_at
      LIMIT $3
      FOR UPDATE SKIP LOCKED) s
WHERE n.id = s.id AND n.created_at = s.created_at
RETURNING n.id, n.process_type";

/// Picks the scheduled notifications the periodic release forwards: still `created`, due
/// within `$2` seconds (the release window), scheduled further than that from their
/// creation (the others were forwarded by persist, with a delay), never released before
/// (`updated_at` is NULL until a row's first change), soonest first, at most `$3`; and stamps
/// them. A release whose forward is lost is caught by [`PICK_CREATED`] once due. The
/// partial index on `scheduled_for` serves the range; `$1` bounds it below (and prunes
/// partitions) and the delay left comes from the database's clock, the one the claim's due
/// check uses.
const RELEASE_SCHEDULED: &str = "
UPDATE notifications n SET updated_at = now()
FROM (SELECT id, created_at FROM notifications
      WHERE scheduled_for IS NOT NULL
        AND scheduled_for > $1 AND scheduled_for <= now() + make_interval(secs => $2)
        AND created_at >= $1
        AND scheduled_for > created_at + make_interval(secs => $2)
        AND status = 'created' AND updated_at IS NULL
      ORDER BY scheduled_for
      LIMIT $3
      FOR UPDATE SKIP LOCKED) s
WHERE n.id = s.id AND n.created_at = s.created_at
RETURNING n.id, n.process_type,
          greatest(0, extract(epoch FROM n.scheduled_for - now()))::float8";

/// A scheduled notification to put on its send queue, with the delay left until its time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Released {
    pub id: Uuid,
    pub process_type: ProcessType,
    pub delay: Duration,
}

/// See [`RELEASE_SCHEDULED`]. Rows whose stored process type is unknown are skipped (and
/// logged); they stay stamped, so they are not picked every minute.
pub async fn release_scheduled(
    client: &WriterConnection,
    window: Duration,
    lookback: Duration,
    limit: i64,
) -> Result<Vec<Released>, DbError> {
    let since = Utc::now()
        - chrono::Duration::from_std(lookback).unwrap_or_else(|_| chrono::Duration::days(4));
    let rows = client
        .query_typed(
            RELEASE_SCHEDULED,
            &[
                (&since, Type::TIMESTAMPTZ),
                (&window.as_secs_f64(), Type::FLOAT8),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let (id, process_type) = id_and_process_type(&r)?;
            let delay: f64 = r.get(2);
            Some(Released {
                id,
                process_type,
                delay: Duration::try_from_secs_f64(delay)
                    .unwrap_or(Duration::ZERO)
                    .min(window),
            })
        })
        .collect())
}

/// A picked row's id and process type (columns 0 and 1); `None`, logged, for a stored
/// process type this code does not know (the row is not forwarded).
fn id_and_process_type(r: &tokio_postgres::Row) -> Option<(Uuid, ProcessType)> {
    let id: Uuid = r.get(0);
    let process_type: String = r.get(1);
    match process_type.parse() {
        Ok(p) => Some((id, p)),
        Err(_) => {
            tracing::error!(notification_id = %id, "stored process_type is unknown; not forwarded");
            None
        }
    }
}

/// See [`PICK_CREATED`]. Rows whose stored process type is unknown are skipped (and logged).
pub async fn pick_stale_created(
    client: &WriterConnection,
    older_than: Duration,
    lookback: Duration,
    limit: i64,
) -> Result<Vec<(Uuid, ProcessType)>, DbError> {
    let since = Utc::now()
        - chrono::Duration::from_std(lookback).unwrap_or_else(|_| chrono::Duration::days(4));
    let rows = client
        .query_typed(
            PICK_CREATED,
            &[
                (&since, Type::TIMESTAMPTZ),
                (&older_than.as_secs_f64(), Type::FLOAT8),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    Ok(rows.iter().filter_map(id_and_process_type).collect())
}
