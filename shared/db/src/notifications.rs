//! The SQL of the notification pipeline's writes.

use crate::error::DbError;
use chrono::{DateTime, NaiveDate, Utc};
use floodgate_core::IntakeNotification;
use std::collections::BTreeSet;
use tokio_postgres::Client;
use tokio_postgres::types::Type;
use uuid::Uuid;

/// One statement for the whole batch: the rows travel as arrays and `unnest` turns them
/// back into rows. One round trip, one transaction, one WAL flush per batch instead of one
/// per notification (seed 003). `ON CONFLICT DO NOTHING` makes a redelivered message a
/// no-op: the id and creation time come from the envelope, so a duplicate is the same key.
const INSERT_BATCH: &str = "
INSERT INTO notifications (
    id, created_at, service_id, template_id, template_version, lane, key_type, api_key_id,
    job_id, job_row_number, email_address, personalisation, client_reference,
    email_reply_to_id, scheduled_for)
SELECT * FROM unnest(
    $1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::int4[], $6::text[],
    $7::text[], $8::uuid[], $9::uuid[], $10::int4[], $11::text[], $12::jsonb[],
    $13::text[], $14::uuid[], $15::timestamptz[])
ON CONFLICT (id, created_at) DO NOTHING";

/// SQLSTATE PostgreSQL answers when no partition covers a row's `created_at`.
const NO_PARTITION: &str = "23514";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Rows new in this call; the rest of the batch was already stored.
    pub inserted: u64,
}

/// Stores a batch of notifications with one statement. Idempotent. If a row falls on a day
/// without a partition yet (maintenance late, clock skew), creates it and retries once.
pub async fn insert_notifications(
    client: &Client,
    batch: &[IntakeNotification],
) -> Result<InsertOutcome, DbError> {
    if batch.is_empty() {
        return Ok(InsertOutcome { inserted: 0 });
    }
    match insert_once(client, batch).await {
        Err(DbError::Query(e)) if e.code().map(|c| c.code()) == Some(NO_PARTITION) => {
            let days: BTreeSet<NaiveDate> =
                batch.iter().map(|n| n.created_at.date_naive()).collect();
            if let (Some(first), Some(last)) = (days.first(), days.last()) {
                ensure_partitions(client, *first, *last).await?;
            }
            insert_once(client, batch).await
        }
        other => other,
    }
}

async fn insert_once(
    client: &Client,
    batch: &[IntakeNotification],
) -> Result<InsertOutcome, DbError> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut services = Vec::with_capacity(n);
    let mut templates = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut lanes = Vec::with_capacity(n);
    let mut key_types = Vec::with_capacity(n);
    let mut api_keys: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut jobs: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut rows: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut personalisations = Vec::with_capacity(n);
    let mut references: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut reply_tos: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut scheduled: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    for x in batch {
        ids.push(x.id);
        created.push(x.created_at);
        services.push(x.service_id);
        templates.push(x.template_id);
        versions.push(x.template_version);
        lanes.push(x.lane.as_str());
        key_types.push(x.key_type.as_str());
        api_keys.push(x.api_key_id);
        jobs.push(x.job_id);
        rows.push(x.job_row_number);
        emails.push(x.email_address.as_str());
        personalisations.push(serde_json::Value::Object(x.personalisation.clone()));
        references.push(x.reference.as_deref());
        reply_tos.push(x.email_reply_to_id);
        scheduled.push(x.scheduled_for);
    }
    let inserted = client
        .execute_typed(
            INSERT_BATCH,
            &[
                (&ids, Type::UUID_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&services, Type::UUID_ARRAY),
                (&templates, Type::UUID_ARRAY),
                (&versions, Type::INT4_ARRAY),
                (&lanes, Type::TEXT_ARRAY),
                (&key_types, Type::TEXT_ARRAY),
                (&api_keys, Type::UUID_ARRAY),
                (&jobs, Type::UUID_ARRAY),
                (&rows, Type::INT4_ARRAY),
                (&emails, Type::TEXT_ARRAY),
                (&personalisations, Type::JSONB_ARRAY),
                (&references, Type::TEXT_ARRAY),
                (&reply_tos, Type::UUID_ARRAY),
                (&scheduled, Type::TIMESTAMPTZ_ARRAY),
            ],
        )
        .await?;
    Ok(InsertOutcome { inserted })
}

/// Creates the missing daily partitions for `[from, to]`; returns how many it created.
pub async fn ensure_partitions(
    client: &Client,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<i32, DbError> {
    let row = client
        .query_typed_one(
            "SELECT ensure_notification_partitions($1, $2)",
            &[(&from, Type::DATE), (&to, Type::DATE)],
        )
        .await?;
    Ok(row.get(0))
}
