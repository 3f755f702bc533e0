//! The SQL of the public API and the admin command: services, API keys, templates (writes
//! by admin on the writer lane) and the reads `ingest` and `status` make on the reader lane.
//! Every statement is unnamed (`query_typed`), so it works behind PgBouncer in transaction
//! mode and RDS Proxy without pinning. Statements `status` sends carry the marker comment
//! `floodgate:status` so a test can prove none of them reached the writer.

use crate::error::DbError;
use crate::lane::{ReadConnection, ReaderConnection, WriterConnection};
use chrono::{DateTime, Utc};
use floodgate_core::limits::{ServiceLimits, job_row_range};
use floodgate_core::{KeyType, NotificationStatus, ProcessType};
use tokio_postgres::Row;
use tokio_postgres::types::Type;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceRow {
    pub id: Uuid,
    pub name: String,
    pub from_email: String,
    /// `false`: archived (Notify's word).
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub limits: ServiceLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    pub key_type: KeyType,
    #[serde(skip)]
    pub secret_ciphertext: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// Set when revoked.
    pub expiry_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TemplateRow {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    pub subject: String,
    pub body: String,
    pub process_type: ProcessType,
    pub version: i32,
    pub archived: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A stored notification with the subject and body of the template version it used.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub service_id: Uuid,
    pub template_id: Uuid,
    pub template_version: i32,
    pub key_type: KeyType,
    pub job_id: Option<Uuid>,
    pub job_row_number: Option<i32>,
    pub email_address: String,
    pub personalisation: serde_json::Value,
    pub client_reference: Option<String>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub status: NotificationStatus,
    pub sent_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub template_subject: String,
    pub template_body: String,
    pub one_click_unsubscribe_url: Option<String>,
}

/// Column `i` of `r` as a domain value; a stored value the domain does not know is an error
/// naming the column, never a panic.
fn parsed<T>(
    r: &Row,
    i: usize,
    column: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, DbError> {
    let value: &str = r.try_get(i).map_err(|_| DbError::Unexpected {
        column,
        value: "(not text)".into(),
    })?;
    parse(value).ok_or_else(|| DbError::Unexpected {
        column,
        value: value.to_string(),
    })
}

// ---------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------

const SERVICE_COLUMNS: &str = "id, name, from_email, active, created_at, rate_limit, daily_limit";
/// Where a row's columns after [`SERVICE_COLUMNS`] start.
const AFTER_SERVICE_COLUMNS: usize = 7;

fn service_row(r: &Row) -> ServiceRow {
    // The columns' CHECK constraints keep both limits non-negative.
    let limit = |i: usize| u32::try_from(r.get::<_, i32>(i)).unwrap_or(0);
    ServiceRow {
        id: r.get(0),
        name: r.get(1),
        from_email: r.get(2),
        active: r.get(3),
        created_at: r.get(4),
        limits: ServiceLimits {
            rate_limit: limit(5),
            daily_limit: limit(6),
        },
    }
}

/// Sets a service's limits (each left as it is where `None`); the updated row, if the
/// service exists.
pub async fn set_service_limits(
    client: &WriterConnection,
    id: Uuid,
    rate_limit: Option<u32>,
    daily_limit: Option<u32>,
) -> Result<Option<ServiceRow>, DbError> {
    let as_int = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let (rate_limit, daily_limit) = (as_int(rate_limit), as_int(daily_limit));
    let row = client
        .query_typed_opt(
            &format!(
                "UPDATE services SET rate_limit = coalesce($2, rate_limit), \
                 daily_limit = coalesce($3, daily_limit) WHERE id = $1 \
                 RETURNING {SERVICE_COLUMNS}"
            ),
            &[
                (&id, Type::UUID),
                (&rate_limit, Type::INT4),
                (&daily_limit, Type::INT4),
            ],
        )
        .await?;
    Ok(row.as_ref().map(service_row))
}

pub async fn create_service(
    client: &WriterConnection,
    id: Uuid,
    name: &str,
    from_email: &str,
) -> Result<ServiceRow, DbError> {
    let row = client
        .query_typed_one(
            &format!(
                "INSERT INTO services (id, name, from_email) VALUES ($1, $2, $3) \
                 RETURNING {SERVICE_COLUMNS}"
            ),
            &[
                (&id, Type::UUID),
                (&name, Type::TEXT),
                (&from_email, Type::TEXT),
            ],
        )
        .await?;
    Ok(service_row(&row))
}

/// Archives a service (its keys stop working); true if it existed.
pub async fn archive_service(client: &WriterConnection, id: Uuid) -> Result<bool, DbError> {
    let n = client
        .execute_typed(
            "UPDATE services SET active = false, archived_at = coalesce(archived_at, now()) \
             WHERE id = $1",
            &[(&id, Type::UUID)],
        )
        .await?;
    Ok(n == 1)
}

pub async fn list_services(client: &impl ReadConnection) -> Result<Vec<ServiceRow>, DbError> {
    let rows = client
        .query_typed(
            &format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY created_at, id"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(service_row).collect())
}

// ---------------------------------------------------------------------------------------
// API keys
// ---------------------------------------------------------------------------------------

/// A key to store: the secret arrives sealed, and its digest finds it for `ApiKey-v1`.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: &'a str,
    pub key_type: KeyType,
    pub secret_ciphertext: &'a [u8],
    pub secret_digest: &'a [u8],
}

fn key_row(r: &Row, at: usize) -> Result<ApiKeyRow, DbError> {
    Ok(ApiKeyRow {
        id: r.get(at),
        service_id: r.get(at + 1),
        name: r.get(at + 2),
        key_type: parsed(r, at + 3, "api_keys.key_type", KeyType::parse)?,
        secret_ciphertext: r.get(at + 4),
        created_at: r.get(at + 5),
        expiry_date: r.get(at + 6),
    })
}

const KEY_COLUMNS: &str =
    "k.id, k.service_id, k.name, k.key_type, k.secret_ciphertext, k.created_at, k.expiry_date";

pub async fn insert_api_key(
    client: &WriterConnection,
    key: &NewApiKey<'_>,
) -> Result<ApiKeyRow, DbError> {
    let row = client
        .query_typed_one(
            &format!(
                "INSERT INTO api_keys AS k \
                   (id, service_id, name, key_type, secret_ciphertext, secret_digest) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {KEY_COLUMNS}"
            ),
            &[
                (&key.id, Type::UUID),
                (&key.service_id, Type::UUID),
                (&key.name, Type::TEXT),
                (&key.key_type.as_str(), Type::TEXT),
                (&key.secret_ciphertext, Type::BYTEA),
                (&key.secret_digest, Type::BYTEA),
            ],
        )
        .await?;
    key_row(&row, 0)
}

/// Revokes a key (Notify sets `expiry_date`); true if it was active.
pub async fn revoke_api_key(
    client: &WriterConnection,
    service_id: Uuid,
    key_id: Uuid,
) -> Result<bool, DbError> {
    let n = client
        .execute_typed(
            "UPDATE api_keys SET expiry_date = now() \
             WHERE id = $1 AND service_id = $2 AND expiry_date IS NULL",
            &[(&key_id, Type::UUID), (&service_id, Type::UUID)],
        )
        .await?;
    Ok(n == 1)
}

pub async fn list_api_keys(
    client: &impl ReadConnection,
    service_id: Uuid,
) -> Result<Vec<ApiKeyRow>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.service_id = $1 \
                 ORDER BY k.created_at, k.id"
            ),
            &[(&service_id, Type::UUID)],
        )
        .await?;
    rows.iter().map(|r| key_row(r, 0)).collect()
}

/// What authentication and the team-key rule need of a service, read in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceWithKeys {
    pub service: ServiceRow,
    /// All its keys, revoked ones included (authentication tells "revoked" from "not
    /// found").
    pub keys: Vec<ApiKeyRow>,
    pub team_members: Vec<String>,
    pub guest_list: Vec<String>,
}

/// A service with its keys, team members and guest list, in one round trip.
pub async fn fetch_service_with_keys(
    client: &ReaderConnection,
    service_id: Uuid,
) -> Result<Option<ServiceWithKeys>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "/* floodgate:status */ SELECT s.id, s.name, s.from_email, s.active, s.created_at, \
                 s.rate_limit, s.daily_limit, \
                 ARRAY(SELECT m.email_address FROM service_team_members m WHERE m.service_id = s.id), \
                 ARRAY(SELECT g.recipient FROM service_guest_list g WHERE g.service_id = s.id), \
                 {KEY_COLUMNS} FROM services s \
                 LEFT JOIN api_keys k ON k.service_id = s.id \
                 WHERE s.id = $1 ORDER BY k.created_at, k.id"
            ),
            &[(&service_id, Type::UUID)],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let keys_at = AFTER_SERVICE_COLUMNS + 2;
    let keys = rows
        .iter()
        .filter(|r| r.get::<_, Option<Uuid>>(keys_at).is_some())
        .map(|r| key_row(r, keys_at))
        .collect::<Result<_, _>>()?;
    Ok(Some(ServiceWithKeys {
        service: service_row(first),
        keys,
        team_members: first.get(AFTER_SERVICE_COLUMNS),
        guest_list: first.get(AFTER_SERVICE_COLUMNS + 1),
    }))
}

/// The key (id, service id) whose secret has this digest.
pub async fn find_key_by_digest(
    client: &ReaderConnection,
    digest: &[u8],
) -> Result<Option<(Uuid, Uuid)>, DbError> {
    let row = client
        .query_typed_opt(
            "/* floodgate:status */ SELECT id, service_id FROM api_keys WHERE secret_digest = $1",
            &[(&digest, Type::BYTEA)],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

// ---------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------

const TEMPLATE_COLUMNS: &str = "id, service_id, name, subject, body, process_type, version, \
                                archived, created_at, updated_at";

fn template_row(r: &Row) -> Result<TemplateRow, DbError> {
    Ok(TemplateRow {
        id: r.get(0),
        service_id: r.get(1),
        name: r.get(2),
        subject: r.get(3),
        body: r.get(4),
        process_type: parsed(r, 5, "templates.process_type", |v| v.parse().ok())?,
        version: r.get(6),
        archived: r.get(7),
        created_at: r.get(8),
        updated_at: r.get(9),
    })
}

#[derive(Debug, Clone)]
pub struct TemplateChange<'a> {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub process_type: ProcessType,
}

/// Creates a template (version 1) or updates it to a new version, and records the version in
/// `template_versions`, in ONE statement (atomic without a multi-statement transaction).
/// `None` when the id belongs to another service.
pub async fn upsert_template(
    client: &WriterConnection,
    t: &TemplateChange<'_>,
) -> Result<Option<TemplateRow>, DbError> {
    let row = client
        .query_typed_opt(
            "WITH t AS (
                INSERT INTO templates AS cur (id, service_id, name, subject, body, process_type, version)
                VALUES ($1, $2, $3, $4, $5, $6, 1)
                ON CONFLICT (id) DO UPDATE SET
                    name = EXCLUDED.name, subject = EXCLUDED.subject, body = EXCLUDED.body,
                    process_type = EXCLUDED.process_type, version = cur.version + 1,
                    updated_at = now()
                WHERE cur.service_id = EXCLUDED.service_id
                RETURNING id, service_id, name, subject, body, process_type, version,
                          archived, created_at, updated_at
             ), v AS (
                INSERT INTO template_versions (template_id, version, name, subject, body, process_type)
                SELECT id, version, name, subject, body, process_type FROM t
             )
             SELECT * FROM t",
            &[
                (&t.id, Type::UUID),
                (&t.service_id, Type::UUID),
                (&t.name, Type::TEXT),
                (&t.subject, Type::TEXT),
                (&t.body, Type::TEXT),
                (&t.process_type.as_str(), Type::TEXT),
            ],
        )
        .await?;
    row.as_ref().map(template_row).transpose()
}

pub async fn fetch_template(
    client: &ReaderConnection,
    id: Uuid,
) -> Result<Option<TemplateRow>, DbError> {
    let row = client
        .query_typed_opt(
            &format!(
                "/* floodgate:status */ SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = $1"
            ),
            &[(&id, Type::UUID)],
        )
        .await?;
    row.as_ref().map(template_row).transpose()
}

/// One stored version of a template, in the shape of the current template; its
/// `updated_at` is when that version was made (none for version 1, as Notify).
pub async fn fetch_template_version(
    client: &ReaderConnection,
    id: Uuid,
    version: i32,
) -> Result<Option<TemplateRow>, DbError> {
    let row = client
        .query_typed_opt(
            "/* floodgate:status */ SELECT t.id, t.service_id, v.name, v.subject, v.body,
                    v.process_type, v.version, t.archived, t.created_at,
                    CASE WHEN v.version = 1 THEN NULL ELSE v.created_at END
               FROM templates t
               JOIN template_versions v ON v.template_id = t.id
              WHERE t.id = $1 AND v.version = $2",
            &[(&id, Type::UUID), (&version, Type::INT4)],
        )
        .await?;
    row.as_ref().map(template_row).transpose()
}

pub async fn list_templates(
    client: &impl ReadConnection,
    service_id: Uuid,
) -> Result<Vec<TemplateRow>, DbError> {
    let rows = client
        .query_typed(
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM templates WHERE service_id = $1 ORDER BY name, id"
            ),
            &[(&service_id, Type::UUID)],
        )
        .await?;
    rows.iter().map(template_row).collect()
}

// ---------------------------------------------------------------------------------------
// Team members and guest list
// ---------------------------------------------------------------------------------------

/// The two lists of addresses a team key may send to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientList {
    TeamMembers,
    GuestList,
}

impl RecipientList {
    /// Table and address column (fixed names, never client input).
    fn sql_names(self) -> (&'static str, &'static str) {
        match self {
            RecipientList::TeamMembers => ("service_team_members", "email_address"),
            RecipientList::GuestList => ("service_guest_list", "recipient"),
        }
    }
}

/// Adds an address (already normalised) to one of a service's lists; adding one twice is a
/// no-op. `false` when the service does not exist.
pub async fn add_recipient(
    client: &WriterConnection,
    list: RecipientList,
    service_id: Uuid,
    address: &str,
) -> Result<bool, DbError> {
    let (table, column) = list.sql_names();
    let row = client
        .query_typed_one(
            &format!(
                "WITH s AS (SELECT id FROM services WHERE id = $1),
                 i AS (INSERT INTO {table} (service_id, {column}) SELECT id, $2 FROM s
                       ON CONFLICT DO NOTHING)
                 SELECT count(*) FROM s"
            ),
            &[(&service_id, Type::UUID), (&address, Type::TEXT)],
        )
        .await?;
    Ok(row.get::<_, i64>(0) == 1)
}

/// Removes an address from one of a service's lists; `true` if it was there.
pub async fn remove_recipient(
    client: &WriterConnection,
    list: RecipientList,
    service_id: Uuid,
    address: &str,
) -> Result<bool, DbError> {
    let (table, column) = list.sql_names();
    let n = client
        .execute_typed(
            &format!("DELETE FROM {table} WHERE service_id = $1 AND {column} = $2"),
            &[(&service_id, Type::UUID), (&address, Type::TEXT)],
        )
        .await?;
    Ok(n == 1)
}

/// One of a service's lists, in address order.
pub async fn list_recipients(
    client: &impl ReadConnection,
    list: RecipientList,
    service_id: Uuid,
) -> Result<Vec<String>, DbError> {
    let (table, column) = list.sql_names();
    let rows = client
        .query_typed(
            &format!("SELECT {column} FROM {table} WHERE service_id = $1 ORDER BY {column}"),
            &[(&service_id, Type::UUID)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// ---------------------------------------------------------------------------------------
// Reply-to addresses
// ---------------------------------------------------------------------------------------

/// One of a service's reply-to addresses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplyToRow {
    pub id: Uuid,
    pub service_id: Uuid,
    pub email_address: String,
    pub is_default: bool,
    pub archived: bool,
}

const REPLY_TO_COLUMNS: &str = "id, service_id, email_address, is_default, archived";

fn reply_to_row(r: &Row) -> ReplyToRow {
    ReplyToRow {
        id: r.get(0),
        service_id: r.get(1),
        email_address: r.get(2),
        is_default: r.get(3),
        archived: r.get(4),
    }
}

/// Adds a reply-to address (a new default supersedes the old one: the newest default
/// wins). `None` when the service does not exist.
pub async fn insert_reply_to(
    client: &WriterConnection,
    id: Uuid,
    service_id: Uuid,
    email_address: &str,
    is_default: bool,
) -> Result<Option<ReplyToRow>, DbError> {
    let row = client
        .query_typed_opt(
            &format!(
                "INSERT INTO service_email_reply_to (id, service_id, email_address, is_default)
                 SELECT $1, id, $3, $4 FROM services WHERE id = $2
                 RETURNING {REPLY_TO_COLUMNS}"
            ),
            &[
                (&id, Type::UUID),
                (&service_id, Type::UUID),
                (&email_address, Type::TEXT),
                (&is_default, Type::BOOL),
            ],
        )
        .await?;
    Ok(row.as_ref().map(reply_to_row))
}

/// One reply-to address of a service, archived or not (the caller decides).
pub async fn fetch_reply_to(
    client: &ReaderConnection,
    service_id: Uuid,
    id: Uuid,
) -> Result<Option<ReplyToRow>, DbError> {
    let row = client
        .query_typed_opt(
            &format!(
                "/* floodgate:status */ SELECT {REPLY_TO_COLUMNS} FROM service_email_reply_to
                 WHERE id = $1 AND service_id = $2"
            ),
            &[(&id, Type::UUID), (&service_id, Type::UUID)],
        )
        .await?;
    Ok(row.as_ref().map(reply_to_row))
}

// ---------------------------------------------------------------------------------------
// Notifications (status reads)
// ---------------------------------------------------------------------------------------

const NOTIFICATION_SELECT: &str = "/* floodgate:status */ SELECT n.id, n.created_at, n.service_id,
    n.template_id, n.template_version, n.key_type, n.job_id, n.job_row_number, n.email_address,
    n.personalisation, n.client_reference, n.scheduled_for, n.status, n.sent_at, n.completed_at,
    coalesce(tv.subject, ''), coalesce(tv.body, ''), n.one_click_unsubscribe_url
  FROM notifications n
  LEFT JOIN template_versions tv ON tv.template_id = n.template_id AND tv.version = n.template_version";

fn notification_row(r: &Row) -> Result<NotificationRow, DbError> {
    Ok(NotificationRow {
        id: r.get(0),
        created_at: r.get(1),
        service_id: r.get(2),
        template_id: r.get(3),
        template_version: r.get(4),
        key_type: parsed(r, 5, "notifications.key_type", KeyType::parse)?,
        job_id: r.get(6),
        job_row_number: r.get(7),
        email_address: r.get(8),
        personalisation: r.get(9),
        client_reference: r.get(10),
        scheduled_for: r.get(11),
        status: parsed(r, 12, "notifications.status", |v| v.parse().ok())?,
        sent_at: r.get(13),
        completed_at: r.get(14),
        template_subject: r.get(15),
        template_body: r.get(16),
        one_click_unsubscribe_url: r.get(17),
    })
}

/// One notification of a service, by primary key: the id's own timestamp names the one
/// daily partition to read.
pub async fn fetch_notification(
    client: &ReaderConnection,
    service_id: Uuid,
    id: Uuid,
) -> Result<Option<NotificationRow>, DbError> {
    let Some(created_at) = floodgate_core::envelope::created_at_of(id) else {
        return Ok(None);
    };
    let row = client
        .query_typed_opt(
            &format!(
                "{NOTIFICATION_SELECT} WHERE n.id = $1 AND n.created_at = $2 AND n.service_id = $3"
            ),
            &[
                (&id, Type::UUID),
                (&created_at, Type::TIMESTAMPTZ),
                (&service_id, Type::UUID),
            ],
        )
        .await?;
    row.as_ref().map(notification_row).transpose()
}

/// The filters of `GET /v2/notifications`.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    /// Any of these statuses; empty: all.
    pub statuses: Vec<String>,
    pub reference: Option<String>,
    /// Keyset paging: only notifications strictly older than this (created_at, id).
    pub older_than: Option<(DateTime<Utc>, Uuid)>,
    /// Notify lists only the notifications sent with the caller's key type.
    pub key_type: Option<String>,
    /// Notify leaves out the notifications of jobs (bulk sends) unless asked.
    pub include_jobs: bool,
    /// Only this job's notifications (which includes them whatever `include_jobs`).
    pub job_id: Option<Uuid>,
    pub limit: i64,
}

/// A service's notifications, newest first, along the (service_id, created_at DESC, id DESC)
/// index. The optional filters are folded away by the planner: an unnamed statement is
/// planned with its parameter values.
pub async fn list_notifications(
    client: &ReaderConnection,
    service_id: Uuid,
    f: &NotificationFilter,
) -> Result<Vec<NotificationRow>, DbError> {
    let statuses: Option<&Vec<String>> = (!f.statuses.is_empty()).then_some(&f.statuses);
    let (older_at, older_id) = match f.older_than {
        Some((at, id)) => (Some(at), Some(id)),
        None => (None, None),
    };
    // A job's rows share its creation time (one partition) and an id range.
    let job_created = f.job_id.and_then(floodgate_core::envelope::created_at_of);
    let (job_first, job_last) = match f.job_id.and_then(job_row_range) {
        Some((first, last)) => (Some(first), Some(last)),
        None => (None, None),
    };
    let rows = client
        .query_typed(
            &format!(
                "{NOTIFICATION_SELECT}
                 WHERE n.service_id = $1
                   AND ($2::text[] IS NULL OR n.status = ANY($2))
                   AND ($3::text IS NULL OR n.client_reference = $3)
                   AND ($4::timestamptz IS NULL OR ((n.created_at, n.id) < ($4, $5)
                        -- As Notify: an older_than that is not one of the service's
                        -- notifications is an empty page (one primary-key probe).
                        AND EXISTS (SELECT 1 FROM notifications o
                                    WHERE o.id = $5 AND o.created_at = $4 AND o.service_id = $1)))
                   AND ($6::text IS NULL OR n.key_type = $6)
                   AND ($8 OR n.job_id IS NULL)
                   AND ($9::uuid IS NULL OR (n.job_id = $9 AND n.created_at = $10
                        AND ($11::uuid IS NULL OR n.id BETWEEN $11 AND $12)))
                 ORDER BY n.created_at DESC, n.id DESC
                 LIMIT $7"
            ),
            &[
                (&service_id, Type::UUID),
                (&statuses, Type::TEXT_ARRAY),
                (&f.reference, Type::TEXT),
                (&older_at, Type::TIMESTAMPTZ),
                (&older_id, Type::UUID),
                (&f.key_type, Type::TEXT),
                (&f.limit, Type::INT8),
                (&(f.include_jobs || f.job_id.is_some()), Type::BOOL),
                (&f.job_id, Type::UUID),
                (&job_created, Type::TIMESTAMPTZ),
                (&job_first, Type::UUID),
                (&job_last, Type::UUID),
            ],
        )
        .await?;
    rows.iter().map(notification_row).collect()
}

// ---------------------------------------------------------------------------------------
// Jobs (status reads)
// ---------------------------------------------------------------------------------------

/// A bulk job as persist stored it, with its service's name and its notifications' count
/// per status.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: Uuid,
    pub service_id: Uuid,
    pub service_name: String,
    pub template_id: Uuid,
    pub template_version: i32,
    pub original_file_name: String,
    pub notification_count: i32,
    pub created_at: DateTime<Utc>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub sender_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub key_type: String,
    /// `(status, count)` for each status its stored notifications have, by status.
    pub statistics: Vec<(String, i64)>,
}

/// One job of a service. Its counts come from its notifications, read by primary key: one
/// partition (the job's creation time) and one id range (its rows' ids), or that partition
/// alone in the rare job whose ids wrap.
pub async fn fetch_job(
    client: &ReaderConnection,
    service_id: Uuid,
    job_id: Uuid,
) -> Result<Option<JobRow>, DbError> {
    let (first, last) = match job_row_range(job_id) {
        Some((first, last)) => (Some(first), Some(last)),
        None => (None, None),
    };
    let row = client
        .query_typed_opt(
            "/* floodgate:status */ SELECT j.id, j.service_id, coalesce(s.name, ''), j.template_id,
                    j.template_version, j.original_file_name, j.notification_count, j.created_at,
                    j.scheduled_for, j.sender_id, j.api_key_id, j.key_type,
                    (SELECT coalesce(json_agg(json_build_array(c.status, c.n) ORDER BY c.status),
                                     '[]'::json)::text
                     FROM (SELECT n.status, count(*) AS n FROM notifications n
                           WHERE n.created_at = j.created_at AND n.job_id = j.id
                             AND ($3::uuid IS NULL OR n.id BETWEEN $3 AND $4)
                           GROUP BY n.status) c)
             FROM jobs j LEFT JOIN services s ON s.id = j.service_id
             WHERE j.id = $1 AND j.service_id = $2",
            &[
                (&job_id, Type::UUID),
                (&service_id, Type::UUID),
                (&first, Type::UUID),
                (&last, Type::UUID),
            ],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let statistics: Vec<(String, i64)> = serde_json::from_str(r.get::<_, &str>(12))?;
    Ok(Some(JobRow {
        id: r.get(0),
        service_id: r.get(1),
        service_name: r.get(2),
        template_id: r.get(3),
        template_version: r.get(4),
        original_file_name: r.get(5),
        notification_count: r.get(6),
        created_at: r.get(7),
        scheduled_for: r.get(8),
        sender_id: r.get(9),
        api_key_id: r.get(10),
        key_type: r.get(11),
        statistics,
    }))
}
