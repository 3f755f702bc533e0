//! Admin commands: migrations and partition maintenance; services, API keys and templates.
//! The same code runs as a CLI locally and as a Lambda inside the VPC on AWS, where the
//! database is private. Everything goes through the writer lane; API key secrets are
//! sealed with `FLOODGATE_API_KEY_ENCRYPTION_KEY` before they reach the database and are
//! shown exactly once, in the issuing command's output.
//!
//! On AWS, `migrate` first goes straight to the cluster's writer endpoint as the master user
//! ([`Bootstrap`], from `FLOODGATE_BOOTSTRAP_*`): it applies the migrations there, so the
//! master owns the schema, then creates and configures the per-function roles
//! ([`floodgate_db::roles`]) that every other connection uses through RDS Proxy.

use chrono::Utc;
use floodgate_aws::{QueueLimits, QueueSender, forward_to_send, forward_to_send_delayed};
use floodgate_core::auth::{SealError, SecretBox, format_api_key, new_secret, secret_digest};
use floodgate_core::callback::{CallbackKind, check_callback_url};
use floodgate_core::keys::normalise_address;
use floodgate_core::{KeyType, Knobs, ProcessType};
use floodgate_db::catalog::{
    self, ApiKeyRow, NewApiKey, RecipientList, ServiceRow, TemplateChange, TemplateRow,
};
use floodgate_db::sending::SendingTimeouts;
use floodgate_db::{
    DbError, LaneConfig, LaneKind, WriterLane, maintain_partitions, migrate, roles,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// How many daily partitions exist ahead of today: a week of slack if the scheduled
/// maintenance stops running (persist also creates a missing partition on demand).
pub const PARTITIONS_AHEAD_DAYS: u64 = 7;
/// Default retention: Notify keeps notifications 7 days by default; we keep a week more.
pub const DEFAULT_RETENTION_DAYS: u64 = 14;

/// A command, as the CLI parses it (clap) and as the admin Lambda receives it in JSON
/// (`{"command": "migrate"}`): one definition for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Subcommand)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum AdminCommand {
    /// Apply pending migrations, then create the partitions ahead.
    Migrate,
    /// Create partitions ahead, drop those past retention, sweep stuck send claims.
    Maintain {
        #[serde(default = "default_retention")]
        #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS)]
        retention_days: u64,
    },
    /// Put the scheduled notifications due within the next 15 minutes on their send queues,
    /// each delayed until its time (every minute, from its own schedule).
    ReleaseScheduled,
    /// Create a service (id chosen here unless given).
    CreateService {
        #[arg(long)]
        name: String,
        #[arg(long)]
        from_email: String,
        #[serde(default)]
        #[arg(long)]
        id: Option<Uuid>,
    },
    /// Set a service's limits (Notify's defaults until set): requests per minute per key
    /// type, and emails per day (test keys never count). Takes effect within the API's
    /// cache TTL.
    SetLimits {
        #[arg(long)]
        service_id: Uuid,
        #[serde(default)]
        #[arg(long)]
        rate_limit: Option<u32>,
        #[serde(default)]
        #[arg(long)]
        daily_limit: Option<u32>,
    },
    /// Archive a service: its keys stop working (within the API's cache TTL).
    ArchiveService {
        #[arg(long)]
        service_id: Uuid,
    },
    /// Issue an API key; the output shows `<key_name>-<service_id>-<secret>` this once.
    IssueKey {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        name: String,
        /// normal, team or test.
        #[serde(default = "default_key_type")]
        #[arg(long, default_value = "normal")]
        key_type: KeyType,
    },
    /// Set (or replace) a callback: where Floodgate POSTs final delivery statuses
    /// (`delivery-status`) or complaints (`complaint`), with this bearer token.
    SetCallback {
        #[arg(long)]
        service_id: Uuid,
        /// delivery-status or complaint.
        #[arg(long)]
        kind: CallbackKind,
        /// https:// (http://127.0.0.1 only where FLOODGATE_ALLOW_LOOPBACK_HTTP_CALLBACKS=true).
        #[arg(long)]
        url: String,
        /// At least 10 characters; stored sealed, never shown again.
        #[arg(long)]
        bearer_token: String,
    },
    /// Remove a callback.
    RemoveCallback {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        kind: CallbackKind,
    },
    /// Add a reply-to address a notification can name by `email_reply_to_id`; the newest
    /// default one is used when it names none.
    AddReplyTo {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        email_address: String,
        #[serde(default)]
        #[arg(long)]
        is_default: bool,
    },
    /// Add an address to the service's team members: a team key may send to it.
    AddTeamMember {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        email_address: String,
    },
    /// Remove an address from the service's team members.
    RemoveTeamMember {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        email_address: String,
    },
    /// Add an address to the service's guest list: a team key may send to it.
    AddToGuestList {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        email_address: String,
    },
    /// Remove an address from the service's guest list.
    RemoveFromGuestList {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        email_address: String,
    },
    /// Revoke an API key.
    RevokeKey {
        #[arg(long)]
        service_id: Uuid,
        #[arg(long)]
        key_id: Uuid,
    },
    /// Create a template (no id) or a new version of one (id given).
    PutTemplate {
        #[arg(long)]
        service_id: Uuid,
        #[serde(default)]
        #[arg(long)]
        id: Option<Uuid>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        subject: String,
        /// Markdown with ((placeholders)).
        #[arg(long)]
        body: String,
        /// priority, normal or bulk.
        #[serde(default = "default_process_type")]
        #[arg(long, default_value = "normal")]
        process_type: ProcessType,
    },
    /// Services, or one service's keys and templates.
    List {
        #[serde(default)]
        #[arg(long)]
        service_id: Option<Uuid>,
    },
    /// Print a fresh value for FLOODGATE_API_KEY_ENCRYPTION_KEY (touches no database).
    GenerateEncryptionKey,
}

fn default_key_type() -> KeyType {
    KeyType::Normal
}

fn default_process_type() -> ProcessType {
    ProcessType::Normal
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The role bootstrap could not get the master credentials. Never carries them.
    #[error("role bootstrap: {0}")]
    Bootstrap(String),
}

/// A key as issued: `key` is the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedKey {
    pub id: Uuid,
    pub service_id: Uuid,
    pub name: String,
    pub key_type: KeyType,
    pub key: String,
}

/// The domains a service's `from_email` may use, comma-separated: the verified SES
/// identities `send` is allowed to send as (Terraform sets it from `ses_domain`). Unset
/// (locally): any domain.
pub const SENDING_DOMAINS_ENV: &str = "FLOODGATE_SENDING_DOMAINS";

/// Refuses a from address outside the sending domains (when there are any): SES would
/// refuse every email of such a service (AccessDenied by the send role's policy).
pub fn check_from_domain(from_email: &str, domains: &[String]) -> Result<(), AdminError> {
    let domain = from_email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    if domains.is_empty() || domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)) {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "from_email must be an address in a verified sending domain ({})",
            domains.join(", ")
        )))
    }
}

/// The sending domains from `FLOODGATE_SENDING_DOMAINS` (read once, when [`Admin`] is built).
pub fn sending_domains() -> Vec<String> {
    std::env::var(SENDING_DOMAINS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect()
}

/// Creates a service whose `from_email` is in one of the sending domains of the
/// environment (`FLOODGATE_SENDING_DOMAINS`).
pub async fn create_service(
    writer: &WriterLane,
    id: Option<Uuid>,
    name: &str,
    from_email: &str,
) -> Result<ServiceRow, AdminError> {
    create_service_in(writer, id, name, from_email, &sending_domains()).await
}

/// Creates a service whose `from_email` is in one of `domains` (any, if none).
pub async fn create_service_in(
    writer: &WriterLane,
    id: Option<Uuid>,
    name: &str,
    from_email: &str,
    domains: &[String],
) -> Result<ServiceRow, AdminError> {
    if name.trim().is_empty() || !from_email.contains('@') {
        return Err(AdminError::Invalid(
            "a service needs a name and a from_email address".into(),
        ));
    }
    check_from_domain(from_email, domains)?;
    let conn = writer.acquire().await?;
    Ok(conn
        .bounded(catalog::create_service(
            &conn,
            id.unwrap_or_else(Uuid::now_v7),
            name,
            from_email,
        ))
        .await?)
}

pub async fn issue_key(
    writer: &WriterLane,
    secrets: &SecretBox,
    service_id: Uuid,
    name: &str,
    key_type: KeyType,
) -> Result<IssuedKey, AdminError> {
    issue_key_with_secret(
        writer,
        secrets,
        service_id,
        Uuid::now_v7(),
        name,
        key_type,
        &new_secret(),
    )
    .await
}

/// Issues a key with a given id and secret (fixtures such as the sample events use fixed
/// ones; everything else calls [`issue_key`]).
pub async fn issue_key_with_secret(
    writer: &WriterLane,
    secrets: &SecretBox,
    service_id: Uuid,
    key_id: Uuid,
    name: &str,
    key_type: KeyType,
    secret: &str,
) -> Result<IssuedKey, AdminError> {
    if name.trim().is_empty() {
        return Err(AdminError::Invalid("a key needs a name".into()));
    }
    let sealed = secrets.seal(key_id, secret)?;
    let digest = secret_digest(secret);
    let conn = writer.acquire().await?;
    let row = conn
        .bounded(catalog::insert_api_key(
            &conn,
            &NewApiKey {
                id: key_id,
                service_id,
                name,
                key_type,
                secret_ciphertext: &sealed,
                secret_digest: &digest,
            },
        ))
        .await?;
    Ok(IssuedKey {
        id: row.id,
        service_id,
        name: row.name,
        key_type: row.key_type,
        key: format_api_key(name, service_id, secret),
    })
}

pub async fn revoke_key(
    writer: &WriterLane,
    service_id: Uuid,
    key_id: Uuid,
) -> Result<(), AdminError> {
    let conn = writer.acquire().await?;
    if conn
        .bounded(catalog::revoke_api_key(&conn, service_id, key_id))
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "no active key {key_id} in service {service_id}"
        )))
    }
}

/// Set on the local stack only: lets a service's callback be plain `http` to the loopback
/// interface (the local callback receiver).
pub const ALLOW_LOOPBACK_HTTP_CALLBACKS_ENV: &str = "FLOODGATE_ALLOW_LOOPBACK_HTTP_CALLBACKS";

pub fn allow_loopback_http_callbacks() -> bool {
    std::env::var(ALLOW_LOOPBACK_HTTP_CALLBACKS_ENV).is_ok_and(|v| v == "true")
}

/// Sets a service's callback: the URL is checked (https, or loopback http where allowed),
/// the bearer token (Notify: at least 10 characters) is sealed to the service.
pub async fn set_callback(
    writer: &WriterLane,
    secrets: &SecretBox,
    service_id: Uuid,
    kind: CallbackKind,
    url: &str,
    bearer_token: &str,
    allow_loopback_http: bool,
) -> Result<(), AdminError> {
    check_callback_url(url, allow_loopback_http).map_err(AdminError::Invalid)?;
    if bearer_token.chars().count() < 10 {
        return Err(AdminError::Invalid(
            "bearer_token must be at least 10 characters".into(),
        ));
    }
    let sealed = secrets.seal(service_id, bearer_token)?;
    let conn = writer.acquire().await?;
    if conn
        .bounded(floodgate_db::callbacks::put_callback(
            &conn, service_id, kind, url, &sealed,
        ))
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no service {service_id}")))
    }
}

pub async fn archive_service(writer: &WriterLane, service_id: Uuid) -> Result<(), AdminError> {
    let conn = writer.acquire().await?;
    if conn
        .bounded(catalog::archive_service(&conn, service_id))
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("no service {service_id}")))
    }
}

/// Sets a service's limits; the service as it is now.
pub async fn set_limits(
    writer: &WriterLane,
    service_id: Uuid,
    rate_limit: Option<u32>,
    daily_limit: Option<u32>,
) -> Result<ServiceRow, AdminError> {
    if rate_limit == Some(0) {
        return Err(AdminError::Invalid(
            "the rate limit must be at least 1".into(),
        ));
    }
    let too_big = |v: Option<u32>| v.is_some_and(|v| i32::try_from(v).is_err());
    if too_big(rate_limit) || too_big(daily_limit) {
        return Err(AdminError::Invalid(format!(
            "limits are at most {}",
            i32::MAX
        )));
    }
    let conn = writer.acquire().await?;
    conn.bounded(catalog::set_service_limits(
        &conn,
        service_id,
        rate_limit,
        daily_limit,
    ))
    .await?
    .ok_or_else(|| AdminError::NotFound(format!("no service {service_id}")))
}

/// `email_address` trimmed, or a refusal if it does not look like an address.
fn checked_address(email_address: &str) -> Result<&str, AdminError> {
    let address = email_address.trim();
    let valid = address
        .rsplit_once('@')
        .is_some_and(|(local, host)| !local.is_empty() && host.contains('.'))
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(address)
    } else {
        Err(AdminError::Invalid(
            "email_address must be an email address".into(),
        ))
    }
}

/// Adds a reply-to address to a service.
pub async fn add_reply_to(
    writer: &WriterLane,
    service_id: Uuid,
    email_address: &str,
    is_default: bool,
) -> Result<catalog::ReplyToRow, AdminError> {
    let address = checked_address(email_address)?;
    let conn = writer.acquire().await?;
    conn.bounded(catalog::insert_reply_to(
        &conn,
        Uuid::now_v7(),
        service_id,
        address,
        is_default,
    ))
    .await?
    .ok_or_else(|| AdminError::NotFound(format!("no service {service_id}")))
}

/// Adds an address to a service's team members or guest list, stored as Notify compares
/// it (lower-cased); adding it twice changes nothing. Takes effect within the API's cache
/// TTL.
pub async fn add_recipient(
    writer: &WriterLane,
    list: RecipientList,
    service_id: Uuid,
    email_address: &str,
) -> Result<String, AdminError> {
    let address = normalise_address(checked_address(email_address)?);
    let conn = writer.acquire().await?;
    if conn
        .bounded(catalog::add_recipient(&conn, list, service_id, &address))
        .await?
    {
        Ok(address)
    } else {
        Err(AdminError::NotFound(format!("no service {service_id}")))
    }
}

/// Removes an address from a service's team members or guest list.
pub async fn remove_recipient(
    writer: &WriterLane,
    list: RecipientList,
    service_id: Uuid,
    email_address: &str,
) -> Result<(), AdminError> {
    let address = normalise_address(email_address);
    let conn = writer.acquire().await?;
    if conn
        .bounded(catalog::remove_recipient(&conn, list, service_id, &address))
        .await?
    {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "the address is not on that list of service {service_id}"
        )))
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn put_template(
    writer: &WriterLane,
    service_id: Uuid,
    id: Option<Uuid>,
    name: &str,
    subject: &str,
    body: &str,
    process_type: ProcessType,
) -> Result<TemplateRow, AdminError> {
    let conn = writer.acquire().await?;
    let id = id.unwrap_or_else(Uuid::now_v7);
    conn.bounded(catalog::upsert_template(
        &conn,
        &TemplateChange {
            id,
            service_id,
            name,
            subject,
            body,
            process_type,
        },
    ))
    .await?
    .ok_or_else(|| AdminError::NotFound(format!("template {id} belongs to another service")))
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceListing {
    pub service: Option<ServiceRow>,
    pub keys: Vec<ApiKeyRow>,
    pub templates: Vec<TemplateRow>,
    pub team_members: Vec<String>,
    pub guest_list: Vec<String>,
}

/// How the commands' output names a list.
fn list_name(list: RecipientList) -> &'static str {
    match list {
        RecipientList::TeamMembers => "team_members",
        RecipientList::GuestList => "guest_list",
    }
}

/// `add-team-member` and `add-to-guest-list`: what was added, as stored.
async fn added(
    writer: &WriterLane,
    list: RecipientList,
    service_id: Uuid,
    email_address: &str,
) -> Result<serde_json::Value, AdminError> {
    let address = add_recipient(writer, list, service_id, email_address).await?;
    Ok(
        serde_json::json!({"service_id": service_id, "added_to": list_name(list), "email_address": address}),
    )
}

/// `remove-team-member` and `remove-from-guest-list`.
async fn removed(
    writer: &WriterLane,
    list: RecipientList,
    service_id: Uuid,
    email_address: &str,
) -> Result<serde_json::Value, AdminError> {
    remove_recipient(writer, list, service_id, email_address).await?;
    Ok(serde_json::json!({"service_id": service_id, "removed_from": list_name(list)}))
}

/// Any command on the function roles' writer (see [`Admin::execute`] for the entry point).
async fn execute_on_writer(
    writer: &WriterLane,
    secrets: Option<&SecretBox>,
    sending_domains: &[String],
    command: &AdminCommand,
) -> Result<serde_json::Value, AdminError> {
    Ok(match command {
        AdminCommand::Migrate | AdminCommand::Maintain { .. } => {
            json(&run_schema(writer, command).await?)
        }
        AdminCommand::CreateService {
            name,
            from_email,
            id,
        } => json(&create_service_in(writer, *id, name, from_email, sending_domains).await?),
        AdminCommand::SetLimits {
            service_id,
            rate_limit,
            daily_limit,
        } => json(&set_limits(writer, *service_id, *rate_limit, *daily_limit).await?),
        AdminCommand::ArchiveService { service_id } => {
            archive_service(writer, *service_id).await?;
            serde_json::json!({"archived": service_id})
        }
        AdminCommand::IssueKey {
            service_id,
            name,
            key_type,
        } => {
            let secrets = secrets.ok_or_else(|| {
                AdminError::Invalid("FLOODGATE_API_KEY_ENCRYPTION_KEY is not set".into())
            })?;
            json(&issue_key(writer, secrets, *service_id, name, *key_type).await?)
        }
        AdminCommand::SetCallback {
            service_id,
            kind,
            url,
            bearer_token,
        } => {
            let secrets = secrets.ok_or_else(|| {
                AdminError::Invalid("FLOODGATE_API_KEY_ENCRYPTION_KEY is not set".into())
            })?;
            set_callback(
                writer,
                secrets,
                *service_id,
                *kind,
                url,
                bearer_token,
                allow_loopback_http_callbacks(),
            )
            .await?;
            serde_json::json!({"service_id": service_id, "kind": kind, "url": url})
        }
        AdminCommand::RemoveCallback { service_id, kind } => {
            let conn = writer.acquire().await?;
            let removed = conn
                .bounded(floodgate_db::callbacks::remove_callback(
                    &conn,
                    *service_id,
                    *kind,
                ))
                .await?;
            serde_json::json!({"service_id": service_id, "kind": kind, "removed": removed})
        }
        AdminCommand::AddReplyTo {
            service_id,
            email_address,
            is_default,
        } => json(&add_reply_to(writer, *service_id, email_address, *is_default).await?),
        AdminCommand::AddTeamMember {
            service_id,
            email_address,
        } => {
            added(
                writer,
                RecipientList::TeamMembers,
                *service_id,
                email_address,
            )
            .await?
        }
        AdminCommand::AddToGuestList {
            service_id,
            email_address,
        } => added(writer, RecipientList::GuestList, *service_id, email_address).await?,
        AdminCommand::RemoveTeamMember {
            service_id,
            email_address,
        } => {
            removed(
                writer,
                RecipientList::TeamMembers,
                *service_id,
                email_address,
            )
            .await?
        }
        AdminCommand::RemoveFromGuestList {
            service_id,
            email_address,
        } => removed(writer, RecipientList::GuestList, *service_id, email_address).await?,
        AdminCommand::RevokeKey { service_id, key_id } => {
            revoke_key(writer, *service_id, *key_id).await?;
            serde_json::json!({"revoked": key_id})
        }
        AdminCommand::PutTemplate {
            service_id,
            id,
            name,
            subject,
            body,
            process_type,
        } => {
            json(&put_template(writer, *service_id, *id, name, subject, body, *process_type).await?)
        }
        AdminCommand::List { service_id } => {
            let conn = writer.acquire().await?;
            match service_id {
                None => json(&conn.bounded(catalog::list_services(&conn)).await?),
                Some(sid) => {
                    let services = conn.bounded(catalog::list_services(&conn)).await?;
                    let list = |l| catalog::list_recipients(&conn, l, *sid);
                    let listing = ServiceListing {
                        service: services.into_iter().find(|s| s.id == *sid),
                        keys: conn.bounded(catalog::list_api_keys(&conn, *sid)).await?,
                        templates: conn.bounded(catalog::list_templates(&conn, *sid)).await?,
                        team_members: conn.bounded(list(RecipientList::TeamMembers)).await?,
                        guest_list: conn.bounded(list(RecipientList::GuestList)).await?,
                    };
                    json(&listing)
                }
            }
        }
        // Needs the send queues: run by `Admin::execute`.
        AdminCommand::ReleaseScheduled => {
            return Err(AdminError::Invalid(
                "release-scheduled runs through Admin::execute, with the send queues".into(),
            ));
        }
        AdminCommand::GenerateEncryptionKey => serde_json::json!({
            "FLOODGATE_API_KEY_ENCRYPTION_KEY": floodgate_core::auth::generate_encryption_key()
        }),
    })
}

/// Any outcome as JSON (serialising plain rows cannot fail).
fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION_DAYS
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOutcome {
    pub applied_migrations: Vec<i32>,
    pub partitions_created: i32,
    pub partitions_dropped: i32,
    /// Notifications whose `sending` outlasted its timeout (a claim that never reached
    /// SES, or no final event), made `temporary-failure` until SES says otherwise.
    #[serde(default)]
    pub sending_timed_out: u64,
    /// Notifications still `created` long after they were stored, put back on their send
    /// queue.
    #[serde(default)]
    pub reforwarded: u64,
    /// Roles created or refreshed by `migrate`'s bootstrap (AWS only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles_bootstrapped: Vec<String>,
}

/// A notification still `created` this long after its last change lost its send message:
/// maintenance puts it back on its send queue. Longer than persist's forward and a send
/// queue's normal wait; a backlog waiting for the rate budget is re-forwarded at most once
/// per this interval per notification, which only costs a claim that finds nothing.
pub const REFORWARD_CREATED_AFTER: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The most notifications one maintenance run re-forwards (the next run takes the rest).
pub const REFORWARD_LIMIT: i64 = 50_000;

/// How far back maintenance looks for notifications that are not final yet: past the 72
/// hours `sending` may last, plus a day.
pub const SWEEP_LOOKBACK: std::time::Duration = std::time::Duration::from_secs(4 * 24 * 3600);

/// Migrations and maintenance.
async fn run_schema(writer: &WriterLane, command: &AdminCommand) -> Result<AdminOutcome, DbError> {
    let conn = writer.acquire().await?;
    let today = Utc::now().date_naive();
    match command {
        AdminCommand::Migrate => {
            let applied = conn.bounded(migrate(&conn)).await?;
            // Never drop anything on migrate: retention is an explicit maintenance choice.
            let m = conn
                .bounded(maintain_partitions(
                    &conn,
                    today,
                    PARTITIONS_AHEAD_DAYS,
                    36_500,
                ))
                .await?;
            Ok(AdminOutcome {
                applied_migrations: applied,
                partitions_created: m.created,
                partitions_dropped: m.dropped,
                ..Default::default()
            })
        }
        AdminCommand::Maintain { retention_days } => {
            let m = conn
                .bounded(maintain_partitions(
                    &conn,
                    today,
                    PARTITIONS_AHEAD_DAYS,
                    (*retention_days).max(1),
                ))
                .await?;
            let swept = conn
                .bounded(floodgate_db::sending::sweep_sending(
                    &conn,
                    SendingTimeouts::default(),
                    SWEEP_LOOKBACK,
                ))
                .await?;
            Ok(AdminOutcome {
                partitions_created: m.created,
                partitions_dropped: m.dropped,
                sending_timed_out: swept,
                ..Default::default()
            })
        }
        _ => Ok(AdminOutcome::default()),
    }
}

/// Puts notifications still `created` after [`REFORWARD_CREATED_AFTER`] back on their
/// send queues (part of `maintain` wherever the queues are configured). Returns how many
/// were acknowledged by the queue; the others are picked again by the next run.
pub async fn reforward_created(
    writer: &WriterLane,
    queue: &dyn QueueSender,
    knobs: &Knobs,
    older_than: std::time::Duration,
) -> Result<u64, DbError> {
    let conn = writer.acquire().await?;
    let picked = conn
        .bounded(floodgate_db::sending::pick_stale_created(
            &conn,
            older_than,
            SWEEP_LOOKBACK,
            REFORWARD_LIMIT,
        ))
        .await?;
    drop(conn);
    let total = picked.len();
    let lost = forward_to_send(queue, QueueLimits::from_knobs(knobs), knobs, picked).await;
    if total > 0 {
        tracing::warn!(
            reforwarded = total - lost.len(),
            not_acknowledged = lost.len(),
            "notifications still created were put back on their send queues"
        );
    }
    Ok((total - lost.len()) as u64)
}

/// The most scheduled notifications one release forwards (the next run, a minute later,
/// takes the rest, still ahead of their time: the window is 15 minutes).
pub const RELEASE_LIMIT: i64 = 50_000;

/// What one release did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOutcome {
    /// Scheduled notifications put on their send queues, delayed until their time.
    pub released: u64,
    /// Picked, but not acknowledged by the queue: the re-forward sweep sends them once due.
    pub not_acknowledged: u64,
}

/// The release of scheduled notifications ([`floodgate_db::sending::release_scheduled`]):
/// each one due within [`RELEASE_WINDOW`](floodgate_core::schedule::RELEASE_WINDOW) goes to
/// its send queue with the delay left until its time.
pub async fn release_scheduled(
    writer: &WriterLane,
    queue: &dyn QueueSender,
    knobs: &Knobs,
) -> Result<ReleaseOutcome, DbError> {
    let conn = writer.acquire().await?;
    let picked = conn
        .bounded(floodgate_db::sending::release_scheduled(
            &conn,
            floodgate_core::schedule::RELEASE_WINDOW,
            SWEEP_LOOKBACK,
            RELEASE_LIMIT,
        ))
        .await?;
    drop(conn);
    let total = picked.len() as u64;
    let lost = forward_to_send_delayed(
        queue,
        QueueLimits::from_knobs(knobs),
        knobs,
        picked.iter().map(|r| (r.id, r.process_type, r.delay)),
    )
    .await;
    let outcome = ReleaseOutcome {
        released: total - lost.len() as u64,
        not_acknowledged: lost.len() as u64,
    };
    if total > 0 {
        tracing::info!(
            released = outcome.released,
            not_acknowledged = outcome.not_acknowledged,
            "scheduled notifications released"
        );
    }
    Ok(outcome)
}

/// The role bootstrap's settings (the admin function on AWS; database.tf, functions.tf):
///
/// | variable | meaning |
/// |---|---|
/// | `FLOODGATE_BOOTSTRAP_HOST` | the cluster writer endpoint; unset = no bootstrap |
/// | `FLOODGATE_BOOTSTRAP_SECRET_ARN` | the RDS-managed master secret (`username`, `password`) |
/// | `FLOODGATE_DB_NAME` | the database |
/// | `FLOODGATE_DB_USERS` | comma-separated function roles |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub host: String,
    pub secret_arn: String,
    pub db_name: String,
    pub users: Vec<String>,
}

impl Bootstrap {
    /// `None` when `FLOODGATE_BOOTSTRAP_HOST` is unset or empty (locally): `migrate` then
    /// runs over the writer lane as before.
    pub fn from_env() -> Result<Option<Self>, AdminError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, AdminError> {
        let Some(host) = get("FLOODGATE_BOOTSTRAP_HOST")
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
        else {
            return Ok(None);
        };
        let required = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    AdminError::Bootstrap(format!("FLOODGATE_BOOTSTRAP_HOST is set but {k} is not"))
                })
        };
        let secret_arn = required("FLOODGATE_BOOTSTRAP_SECRET_ARN")?;
        let db_name = required("FLOODGATE_DB_NAME")?;
        let users = roles::parse_role_list(&required("FLOODGATE_DB_USERS")?);
        // Refuse bad names before touching any secret or database.
        roles::bootstrap_sql(&users, true)?;
        if host.contains(['/', '@', ':', '?']) {
            return Err(AdminError::Bootstrap(format!(
                "FLOODGATE_BOOTSTRAP_HOST={host:?} is not a host name"
            )));
        }
        if !db_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(AdminError::Bootstrap(format!(
                "FLOODGATE_DB_NAME={db_name:?} is not a plain database name"
            )));
        }
        Ok(Some(Bootstrap {
            host,
            secret_arn,
            db_name,
            users,
        }))
    }

    /// A one-connection lane straight to the writer endpoint as the master user, over TLS
    /// (`sslmode=require`; the cluster forces TLS).
    pub fn master_lane_config(&self, master: &MasterCredentials) -> Result<LaneConfig, AdminError> {
        roles::validate_role_name(&master.username).map_err(|_| {
            AdminError::Bootstrap("the master secret's username is not a plain role name".into())
        })?;
        let url = format!(
            "postgres://{}@{}:5432/{}?sslmode=require",
            master.username, self.host, self.db_name
        );
        let mut c = LaneConfig::new(LaneKind::Writer, url, "floodgate-admin-bootstrap");
        // Migrations on a big table can take a while; this is a one-off maintenance path.
        c.operation_timeout = std::time::Duration::from_secs(120);
        c.connect_timeout = std::time::Duration::from_secs(10);
        c.password = Some(master.password.clone());
        Ok(c)
    }

    /// Reads the master credentials from Secrets Manager.
    pub async fn read_master_secret(
        &self,
        sdk: &aws_config::SdkConfig,
    ) -> Result<MasterCredentials, AdminError> {
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let out = client
            .get_secret_value()
            .secret_id(&self.secret_arn)
            .send()
            .await
            .map_err(|e| {
                AdminError::Bootstrap(format!(
                    "reading {}: {}",
                    self.secret_arn,
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                ))
            })?;
        let text = out.secret_string().ok_or_else(|| {
            AdminError::Bootstrap(format!("{} has no secret string", self.secret_arn))
        })?;
        MasterCredentials::from_secret_json(text)
    }

    /// Migrates as the master, then bootstraps the roles (with `rds_iam`).
    pub async fn migrate(&self, master: &MasterCredentials) -> Result<AdminOutcome, AdminError> {
        let lane = WriterLane::open(self.master_lane_config(master)?).await?;
        Ok(migrate_and_bootstrap(&lane, &self.users, true).await?)
    }

    /// Maintenance as the master: dropping a partition needs its owner, and the function
    /// roles (the admin's own included) deliberately are not.
    pub async fn maintain(
        &self,
        master: &MasterCredentials,
        command: &AdminCommand,
    ) -> Result<AdminOutcome, AdminError> {
        let lane = WriterLane::open(self.master_lane_config(master)?).await?;
        Ok(run_schema(&lane, command).await?)
    }
}

/// The master user's credentials from the RDS-managed secret. `Debug` hides the password.
#[derive(Clone, Deserialize)]
pub struct MasterCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for MasterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl MasterCredentials {
    /// Parses `{"username": ..., "password": ...}`. The error never quotes the secret (serde's
    /// messages can echo values, so only the position is kept).
    pub fn from_secret_json(text: &str) -> Result<Self, AdminError> {
        serde_json::from_str::<MasterCredentials>(text).map_err(|e| {
            AdminError::Bootstrap(format!(
                "the master secret is not JSON with username and password (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

/// `migrate` over `master` (a direct connection as the schema's owner), then the role
/// bootstrap on the same connection: the grants on all tables cover what the migrations
/// just created, and the default privileges cover what the owner creates later.
async fn migrate_and_bootstrap(
    master: &WriterLane,
    users: &[String],
    grant_rds_iam: bool,
) -> Result<AdminOutcome, DbError> {
    let mut outcome = run_schema(master, &AdminCommand::Migrate).await?;
    let conn = master.acquire().await?;
    conn.bounded(roles::bootstrap_roles(&conn, users, grant_rds_iam))
        .await?;
    outcome.roles_bootstrapped = users.to_vec();
    Ok(outcome)
}

/// The admin function: one entry point, [`Admin::execute`], for the CLI, the Lambda, the
/// local stack and tests.
pub struct Admin {
    writer: WriterLane,
    secrets: Option<SecretBox>,
    bootstrap: Option<Bootstrap>,
    queue: Option<Arc<dyn QueueSender>>,
    sending_domains: Vec<String>,
}

impl Admin {
    /// `secrets` is needed only to issue keys and set callbacks; `bootstrap` (AWS) makes
    /// `migrate` and `maintain` run as the master user; `queue` (the send queues) makes
    /// `maintain` also re-forward notifications still `created` ([`reforward_created`]).
    /// The sending domains are read from the environment here, once.
    pub fn new(
        writer: WriterLane,
        secrets: Option<SecretBox>,
        bootstrap: Option<Bootstrap>,
        queue: Option<Arc<dyn QueueSender>>,
    ) -> Self {
        Admin {
            writer,
            secrets,
            bootstrap,
            queue,
            sending_domains: sending_domains(),
        }
    }

    /// Runs any command, returning its outcome as JSON (the CLI prints it, the Lambda returns
    /// it). The master secret is read on each `migrate`: RDS rotates it.
    pub async fn execute(&self, command: &AdminCommand) -> Result<serde_json::Value, AdminError> {
        if let AdminCommand::ReleaseScheduled = command {
            let queue = self.queue.as_ref().ok_or_else(|| {
                AdminError::Invalid(
                    "release-scheduled needs the send queues (FLOODGATE_QUEUE_URL_SEND_*)".into(),
                )
            })?;
            let knobs = Knobs::embedded();
            return Ok(json(
                &release_scheduled(&self.writer, queue.as_ref(), &knobs).await?,
            ));
        }
        let mut result = execute_bootstrapped(
            &self.writer,
            self.secrets.as_ref(),
            self.bootstrap.as_ref(),
            &self.sending_domains,
            command,
        )
        .await?;
        if let (AdminCommand::Maintain { .. }, Some(queue)) = (command, &self.queue) {
            let knobs = Knobs::embedded();
            let n = reforward_created(
                &self.writer,
                queue.as_ref(),
                &knobs,
                REFORWARD_CREATED_AFTER,
            )
            .await?;
            if let Some(o) = result.as_object_mut() {
                o.insert("reforwarded".into(), n.into());
            }
        }
        Ok(result)
    }
}

async fn execute_bootstrapped(
    writer: &WriterLane,
    secrets: Option<&SecretBox>,
    bootstrap: Option<&Bootstrap>,
    sending_domains: &[String],
    command: &AdminCommand,
) -> Result<serde_json::Value, AdminError> {
    match (command, bootstrap) {
        (AdminCommand::Migrate, Some(b)) => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let master = b.read_master_secret(&sdk).await?;
            tracing::info!(host = %b.host, users = ?b.users, "migrating as the master user, then bootstrapping roles");
            Ok(json(&b.migrate(&master).await?))
        }
        (AdminCommand::Maintain { .. }, Some(b)) => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let master = b.read_master_secret(&sdk).await?;
            Ok(json(&b.maintain(&master, command).await?))
        }
        _ => execute_on_writer(writer, secrets, sending_domains, command).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_addresses_must_be_in_a_sending_domain_when_there_are_any() {
        let domains = vec![
            "notify.example.gov".to_string(),
            "other.example".to_string(),
        ];
        assert!(check_from_domain("a@notify.example.gov", &domains).is_ok());
        assert!(check_from_domain("a@NOTIFY.example.gov", &domains).is_ok());
        assert!(check_from_domain("a@other.example", &domains).is_ok());
        let e = check_from_domain("a@evil.example", &domains).unwrap_err();
        assert!(e.to_string().contains("notify.example.gov"), "{e}");
        assert!(check_from_domain("a@sub.notify.example.gov", &domains).is_err());
        assert!(check_from_domain("a@anything.example", &[]).is_ok());
    }
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        (
            "FLOODGATE_BOOTSTRAP_HOST",
            "floodgate.cluster-abc.eu-west-2.rds.amazonaws.com",
        ),
        (
            "FLOODGATE_BOOTSTRAP_SECRET_ARN",
            "arn:aws:secretsmanager:eu-west-2:123456789012:secret:rds!cluster-x",
        ),
        ("FLOODGATE_DB_NAME", "floodgate"),
        ("FLOODGATE_DB_USERS", "floodgate_admin,floodgate_ingest"),
    ];

    #[test]
    fn bootstrap_settings() {
        assert_eq!(Bootstrap::from_lookup(lookup(&[])).unwrap(), None);
        assert_eq!(
            Bootstrap::from_lookup(lookup(&[("FLOODGATE_BOOTSTRAP_HOST", " ")])).unwrap(),
            None
        );
        let b = Bootstrap::from_lookup(lookup(FULL)).unwrap().unwrap();
        assert_eq!(b.users, ["floodgate_admin", "floodgate_ingest"]);
        let e = Bootstrap::from_lookup(lookup(&FULL[..3])).unwrap_err();
        assert!(e.to_string().contains("FLOODGATE_DB_USERS"), "{e}");
        let mut bad = FULL.to_vec();
        bad[3] = ("FLOODGATE_DB_USERS", "floodgate_admin,bad;name");
        assert!(matches!(
            Bootstrap::from_lookup(lookup(&bad)).unwrap_err(),
            AdminError::Db(DbError::Config(_))
        ));

        let creds = MasterCredentials::from_secret_json(
            r#"{"username":"floodgate_master","password":"p@ss/w:rd?x"}"#,
        )
        .unwrap();
        assert!(!format!("{creds:?}").contains("p@ss"));
        let c = b.master_lane_config(&creds).unwrap();
        assert_eq!(
            c.url,
            "postgres://floodgate_master@floodgate.cluster-abc.eu-west-2.rds.amazonaws.com:5432/floodgate?sslmode=require"
        );
        assert!(!c.iam_auth);
        assert_eq!(c.password.as_deref(), Some("p@ss/w:rd?x"));
        assert!(!format!("{c:?}").contains("p@ss"));
    }

    #[test]
    fn a_malformed_secret_is_not_echoed() {
        let e = MasterCredentials::from_secret_json(r#"{"username":"m","password":12345678}"#)
            .unwrap_err();
        assert!(!e.to_string().contains("12345678"), "{e}");
        let e = MasterCredentials::from_secret_json("hunter2-not-json").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn add_reply_to_parses_from_json_and_the_command_line() {
        let m: AdminCommand = serde_json::from_str(
            r#"{"command":"add-reply-to","service_id":"0190a0a0-0000-7000-8000-000000000001","email_address":"help@example.gov"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, AdminCommand::AddReplyTo { is_default: false, ref email_address, .. } if email_address == "help@example.gov")
        );
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: AdminCommand,
        }
        let cli = Cli::try_parse_from([
            "floodgate-admin",
            "add-reply-to",
            "--service-id",
            "0190a0a0-0000-7000-8000-000000000001",
            "--email-address",
            "help@example.gov",
            "--is-default",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            AdminCommand::AddReplyTo {
                is_default: true,
                ..
            }
        ));
    }

    #[test]
    fn team_member_and_guest_list_commands_parse() {
        let m: AdminCommand = serde_json::from_str(
            r#"{"command":"add-to-guest-list","service_id":"0190a0a0-0000-7000-8000-000000000001","email_address":"g@example.com"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, AdminCommand::AddToGuestList { ref email_address, .. } if email_address == "g@example.com")
        );
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: AdminCommand,
        }
        for (name, remove) in [("remove-team-member", true), ("add-team-member", false)] {
            let cli = Cli::try_parse_from([
                "floodgate-admin",
                name,
                "--service-id",
                "0190a0a0-0000-7000-8000-000000000001",
                "--email-address",
                "m@example.gov",
            ])
            .unwrap();
            assert_eq!(
                matches!(cli.command, AdminCommand::RemoveTeamMember { .. }),
                remove,
                "{name}"
            );
        }
        assert!(matches!(checked_address(" a@b.co "), Ok("a@b.co")));
        assert!(checked_address("not an address").is_err());
    }

    #[test]
    fn lambda_payloads_parse() {
        let m: AdminCommand = serde_json::from_str(r#"{"command":"migrate"}"#).unwrap();
        assert_eq!(m, AdminCommand::Migrate);
        let m: AdminCommand = serde_json::from_str(r#"{"command":"maintain"}"#).unwrap();
        assert_eq!(m, AdminCommand::Maintain { retention_days: 14 });
        let m: AdminCommand = serde_json::from_str(r#"{"command":"release-scheduled"}"#).unwrap();
        assert_eq!(m, AdminCommand::ReleaseScheduled);
        assert!(serde_json::from_str::<AdminCommand>(r#"{"command":"drop-all"}"#).is_err());
        let m: AdminCommand = serde_json::from_str(
            r#"{"command":"issue-key","service_id":"0190a0a0-0000-7000-8000-000000000001","name":"k"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, AdminCommand::IssueKey { key_type, .. } if key_type == KeyType::Normal)
        );
        let m: AdminCommand = serde_json::from_str(
            r#"{"command":"put-template","service_id":"0190a0a0-0000-7000-8000-000000000001","name":"t","subject":"s","body":"b"}"#,
        )
        .unwrap();
        assert!(
            matches!(m, AdminCommand::PutTemplate { process_type, id: None, .. } if process_type == ProcessType::Normal)
        );
        // Kinds are types: an unknown one is refused where the command is parsed.
        let e = serde_json::from_str::<AdminCommand>(
            r#"{"command":"issue-key","service_id":"0190a0a0-0000-7000-8000-000000000001","name":"k","key_type":"admin"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `admin`"), "{e}");
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: AdminCommand,
        }
        let e = Cli::try_parse_from([
            "admin",
            "put-template",
            "--service-id",
            "0190a0a0-0000-7000-8000-000000000001",
            "--name",
            "t",
            "--subject",
            "s",
            "--body",
            "b",
            "--process-type",
            "urgent",
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("unknown process type \"urgent\""), "{e}");
    }
}
