//! The SQL of the notification pipeline's writes.

use crate::error::DbError;
use crate::lane::WriterConnection;
use chrono::{DateTime, NaiveDate, Utc};
use floodgate_core::IntakeNotification;
use std::borrow::Borrow;
use std::collections::BTreeSet;
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};
use uuid::Uuid;

/// The batch travels as one binary `COPY`: one round trip, one transaction, one WAL flush
/// per batch instead of one per notification (per-row commits feed autovacuum storms), and
/// the cheapest way into PostgreSQL there is. `COPY` cannot skip a row that is already
/// stored, so a redelivery (every row already there) or a concurrent duplicate ends it with
/// a unique violation, and then the batch goes again as `INSERT_BATCH`, which skips stored
/// rows: the id and creation time come from the envelope, so a redelivered notification is
/// the same key and a redelivery inserts nothing. Redeliveries are rare (a failed forward, a
/// timed-out invocation), so the common case pays only for `COPY`.
const COPY_ROWS: &str = "COPY notifications (
    id, created_at, service_id, template_id, template_version, process_type, key_type, api_key_id,
    job_id, job_row_number, email_address, personalisation, client_reference,
    email_reply_to_id, scheduled_for, one_click_unsubscribe_url) FROM STDIN (FORMAT binary)";

/// The column types of [`COPY_ROWS`], in its order: binary `COPY` sends no type names.
const COPY_TYPES: [Type; 16] = [
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::UUID,
    Type::UUID,
    Type::INT4,
    Type::TEXT,
    Type::TEXT,
    Type::UUID,
    Type::UUID,
    Type::INT4,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TEXT,
];

/// The fallback: the rows travel as arrays, `unnest` turns them back into rows, and the
/// ones already stored are skipped.
const INSERT_BATCH: &str = "INSERT INTO notifications (
    id, created_at, service_id, template_id, template_version, process_type, key_type, api_key_id,
    job_id, job_row_number, email_address, personalisation, client_reference,
    email_reply_to_id, scheduled_for, one_click_unsubscribe_url)
SELECT u.id, u.created_at, u.service_id, u.template_id, u.template_version, u.process_type,
    u.key_type, u.api_key_id, u.job_id, u.job_row_number, u.email_address,
    u.personalisation::jsonb, u.client_reference, u.email_reply_to_id, u.scheduled_for,
    u.one_click_unsubscribe_url
FROM unnest(
    $1::uuid[], $2::timestamptz[], $3::uuid[], $4::uuid[], $5::int4[], $6::text[],
    $7::text[], $8::uuid[], $9::uuid[], $10::int4[], $11::text[], $12::text[],
    $13::text[], $14::uuid[], $15::timestamptz[], $16::text[])
    AS u(id, created_at, service_id, template_id, template_version, process_type, key_type,
         api_key_id, job_id, job_row_number, email_address, personalisation,
         client_reference, email_reply_to_id, scheduled_for, one_click_unsubscribe_url)
ON CONFLICT (id, created_at) DO NOTHING";

/// SQLSTATE PostgreSQL answers when no partition covers a row's `created_at`.
const NO_PARTITION: &str = "23514";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Rows new in this call; the rest of the batch was already stored.
    pub inserted: u64,
    /// How the batch went in.
    pub path: InsertPath,
}

/// How a batch was stored: the fast `COPY`, or the statement it falls back to when the
/// `COPY` ends early (rows already stored, a missing partition, a refused value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertPath {
    Copy,
    Statement,
}

/// Stores a batch of notifications with one statement, and the jobs whose first row it
/// holds with a second one (only when it holds one). Idempotent. If a row falls on a day
/// without a partition yet (maintenance late, clock skew), creates it and retries once.
pub async fn insert_notifications<N: Borrow<IntakeNotification>>(
    client: &WriterConnection,
    batch: &[N],
) -> Result<InsertOutcome, DbError> {
    if batch.is_empty() {
        return Ok(InsertOutcome {
            inserted: 0,
            path: InsertPath::Copy,
        });
    }
    let outcome = insert_rows(client, batch).await?;
    insert_jobs(client, batch).await?;
    Ok(outcome)
}

/// A job as its first row carries it; a redelivery inserts nothing.
const INSERT_JOBS: &str = "
INSERT INTO jobs (id, service_id, template_id, template_version, original_file_name,
                  notification_count, created_at, scheduled_for, sender_id, api_key_id, key_type)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int4[], $5::text[], $6::int4[],
                     $7::timestamptz[], $8::timestamptz[], $9::uuid[], $10::uuid[], $11::text[])
ON CONFLICT (id) DO NOTHING";

async fn insert_jobs<N: Borrow<IntakeNotification>>(
    client: &WriterConnection,
    batch: &[N],
) -> Result<u64, DbError> {
    let jobs: Vec<(&IntakeNotification, Uuid, &floodgate_core::JobHeader)> = batch
        .iter()
        .map(Borrow::borrow)
        .filter_map(|n| Some((n, n.job_id?, n.job.as_ref()?)))
        .collect();
    if jobs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.1).collect();
    let services: Vec<Uuid> = jobs.iter().map(|j| j.0.service_id).collect();
    let templates: Vec<Uuid> = jobs.iter().map(|j| j.0.template_id).collect();
    let versions: Vec<i32> = jobs.iter().map(|j| j.0.template_version).collect();
    let names: Vec<&str> = jobs.iter().map(|j| j.2.name.as_str()).collect();
    let counts: Vec<i32> = jobs.iter().map(|j| j.2.notification_count).collect();
    let created: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.0.created_at).collect();
    let scheduled: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|j| j.0.scheduled_for).collect();
    let senders: Vec<Option<Uuid>> = jobs.iter().map(|j| j.0.email_reply_to_id).collect();
    let keys: Vec<Option<Uuid>> = jobs.iter().map(|j| j.0.api_key_id).collect();
    let key_types: Vec<&str> = jobs.iter().map(|j| j.0.key_type.as_str()).collect();
    Ok(client
        .execute_typed(
            INSERT_JOBS,
            &[
                (&ids, Type::UUID_ARRAY),
                (&services, Type::UUID_ARRAY),
                (&templates, Type::UUID_ARRAY),
                (&versions, Type::INT4_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&counts, Type::INT4_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&scheduled, Type::TIMESTAMPTZ_ARRAY),
                (&senders, Type::UUID_ARRAY),
                (&keys, Type::UUID_ARRAY),
                (&key_types, Type::TEXT_ARRAY),
            ],
        )
        .await?)
}

async fn insert_rows<N: Borrow<IntakeNotification>>(
    client: &WriterConnection,
    batch: &[N],
) -> Result<InsertOutcome, DbError> {
    match copy_rows(client, batch).await {
        Ok(outcome) => Ok(outcome),
        // A server error in mid-stream reaches the client as a closed copy stream, without
        // its SQLSTATE. Whatever ended the COPY (a row already stored, a day without a
        // partition, a value refused, the server gone), the statement says precisely, and
        // it handles the first two.
        Err(_) => insert_statement(client, batch).await,
    }
}

async fn insert_statement<N: Borrow<IntakeNotification>>(
    client: &WriterConnection,
    batch: &[N],
) -> Result<InsertOutcome, DbError> {
    match insert_once(client, batch).await {
        Err(DbError::Query(e)) if e.code().map(|c| c.code()) == Some(NO_PARTITION) => {
            let days: BTreeSet<NaiveDate> = batch
                .iter()
                .map(|n| n.borrow().created_at.date_naive())
                .collect();
            if let (Some(first), Some(last)) = (days.first(), days.last()) {
                ensure_partitions(client, *first, *last).await?;
            }
            insert_once(client, batch).await
        }
        other => other,
    }
}

/// Every row of the batch with one binary `COPY`, encoded as it streams so that the
/// server parses one chunk while the next is encoded. All or nothing.
///
/// `COPY` needs a named prepared statement, and a transaction pooler (RDS Proxy, PgBouncer in
/// transaction mode) may hand each transaction to a different server connection: so the
/// statement is prepared, used and closed inside one explicit transaction, and never
/// outlives it on a server connection another client may get.
async fn copy_rows<N: Borrow<IntakeNotification>>(
    client: &Client,
    batch: &[N],
) -> Result<InsertOutcome, DbError> {
    client.batch_execute("BEGIN").await?;
    let copied = async {
        let statement = client.prepare_typed(COPY_ROWS, &[]).await?;
        let sink = client.copy_in(&statement).await?;
        let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
        let mut writer = std::pin::pin!(writer);
        for x in batch {
            let x = x.borrow();
            let (process_type, key_type) = (x.process_type.as_str(), x.key_type.as_str());
            let personalisation = Json(x.personalisation.as_raw());
            writer
                .as_mut()
                .write(&[
                    &x.id,
                    &x.created_at,
                    &x.service_id,
                    &x.template_id,
                    &x.template_version,
                    &process_type,
                    &key_type,
                    &x.api_key_id,
                    &x.job_id,
                    &x.job_row_number,
                    &x.email_address,
                    &personalisation,
                    &x.reference,
                    &x.email_reply_to_id,
                    &x.scheduled_for,
                    &x.one_click_unsubscribe_url,
                ])
                .await?;
        }
        let copied = writer.finish().await?;
        // Dropping the statement sends its Close, queued ahead of the COMMIT.
        drop(statement);
        Ok::<u64, tokio_postgres::Error>(copied)
    }
    .await;
    match copied {
        Ok(inserted) => {
            client.batch_execute("COMMIT").await?;
            Ok(InsertOutcome {
                inserted,
                path: InsertPath::Copy,
            })
        }
        Err(e) => {
            client.batch_execute("ROLLBACK").await?;
            Err(e.into())
        }
    }
}

/// The batch with [`INSERT_BATCH`]: stores the rows not stored yet.
async fn insert_once<N: Borrow<IntakeNotification>>(
    client: &Client,
    batch: &[N],
) -> Result<InsertOutcome, DbError> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut services = Vec::with_capacity(n);
    let mut templates = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut process_types = Vec::with_capacity(n);
    let mut key_types = Vec::with_capacity(n);
    let mut api_keys: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut jobs: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut rows: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut personalisations = Vec::with_capacity(n);
    let mut references: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut reply_tos: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut scheduled: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut unsubscribe: Vec<Option<&str>> = Vec::with_capacity(n);
    for x in batch {
        let x = x.borrow();
        ids.push(x.id);
        created.push(x.created_at);
        services.push(x.service_id);
        templates.push(x.template_id);
        versions.push(x.template_version);
        process_types.push(x.process_type.as_str());
        key_types.push(x.key_type.as_str());
        api_keys.push(x.api_key_id);
        jobs.push(x.job_id);
        rows.push(x.job_row_number);
        emails.push(x.email_address.as_str());
        // Sent as the JSON text it arrived as, and cast in SQL.
        personalisations.push(x.personalisation.as_json());
        references.push(x.reference.as_deref());
        reply_tos.push(x.email_reply_to_id);
        scheduled.push(x.scheduled_for);
        unsubscribe.push(x.one_click_unsubscribe_url.as_deref());
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
                (&process_types, Type::TEXT_ARRAY),
                (&key_types, Type::TEXT_ARRAY),
                (&api_keys, Type::UUID_ARRAY),
                (&jobs, Type::UUID_ARRAY),
                (&rows, Type::INT4_ARRAY),
                (&emails, Type::TEXT_ARRAY),
                (&personalisations, Type::TEXT_ARRAY),
                (&references, Type::TEXT_ARRAY),
                (&reply_tos, Type::UUID_ARRAY),
                (&scheduled, Type::TIMESTAMPTZ_ARRAY),
                (&unsubscribe, Type::TEXT_ARRAY),
            ],
        )
        .await?;
    Ok(InsertOutcome {
        inserted,
        path: InsertPath::Statement,
    })
}

/// Creates the missing daily partitions for `[from, to]`; returns how many it created.
pub async fn ensure_partitions(
    client: &WriterConnection,
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
