//! The messages that travel on the queues. Both are versioned JSON (`"v": 1`) so a
//! deployment can drain old messages while new code runs.

use crate::process_type::ProcessType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The current envelope version. A consumer rejects (fails alone) any other version rather
/// than guessing, so a bad deploy shows up in the DLQ instead of as corrupt rows.
pub const ENVELOPE_VERSION: u32 = 1;

/// The type of the API key a notification was sent with. `test` notifications go through
/// the whole pipeline but are never handed to SES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Normal,
    Team,
    Test,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Normal => "normal",
            KeyType::Team => "team",
            KeyType::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        [KeyType::Normal, KeyType::Team, KeyType::Test]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown key type {0:?} (expected normal, team or test)")]
pub struct UnknownKeyType(pub String);

impl std::str::FromStr for KeyType {
    type Err = UnknownKeyType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::parse(s).ok_or_else(|| UnknownKeyType(s.chars().take(40).collect()))
    }
}

/// One accepted notification as `ingest` hands it to `persist`: everything needed to store
/// it, nothing that must be looked up again. The id is a UUIDv7 assigned at acceptance, so
/// a redelivered message maps to the same row (idempotent insert) and inserts stay on the
/// right edge of the primary-key index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeNotification {
    pub id: Uuid,
    pub service_id: Uuid,
    pub template_id: Uuid,
    pub template_version: i32,
    #[serde(alias = "lane")]
    pub process_type: ProcessType,
    pub email_address: String,
    #[serde(default)]
    pub personalisation: crate::Personalisation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub key_type: KeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_row_number: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_reply_to_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    /// RFC 8058 one-click unsubscribe URL, sent as the `List-Unsubscribe` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_click_unsubscribe_url: Option<String>,
    /// On a bulk job's first row only: what the job's read needs beyond its rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobHeader>,
    pub created_at: DateTime<Utc>,
}

/// What a bulk request said about the job as a whole, carried by its first row so that
/// `persist` can store the job (`ingest` writes no database). The rest of the job (service,
/// template, time, schedule, sender, key) is its rows'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobHeader {
    /// The request's `name` (GC Notify's `original_file_name`).
    pub name: String,
    /// Rows in the whole job.
    pub notification_count: i32,
}

/// One intake-queue message: one or many notifications (bulk packs many).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeEnvelope {
    pub v: u32,
    pub notifications: Vec<IntakeNotification>,
}

/// One send-queue message: the ids to claim and send. The content stays in the database
/// (the row is the source of truth), which keeps these messages tiny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEnvelope {
    pub v: u32,
    #[serde(alias = "lane")]
    pub process_type: ProcessType,
    pub notification_ids: Vec<Uuid>,
    /// Claim tokens under which these ids may be `sending` without ever having been handed
    /// to SES (see `claim_for_sending`); empty for ids that are still `created`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_tokens: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message body is not a valid envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported envelope version {0} (this code reads version {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("envelope carries no notifications")]
    Empty,
    #[error("notification {id} alone is {bytes} bytes, above the {limit}-byte message limit")]
    NotificationTooLarge {
        id: Uuid,
        bytes: usize,
        limit: usize,
    },
}

impl IntakeEnvelope {
    pub fn decode(body: &str) -> Result<Self, EnvelopeError> {
        let env: IntakeEnvelope = serde_json::from_str(body)?;
        if env.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(env.v));
        }
        if env.notifications.is_empty() {
            return Err(EnvelopeError::Empty);
        }
        Ok(env)
    }
}

impl SendEnvelope {
    pub fn decode(body: &str) -> Result<Self, EnvelopeError> {
        let env: SendEnvelope = serde_json::from_str(body)?;
        if env.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion(env.v));
        }
        if env.notification_ids.is_empty() {
            return Err(EnvelopeError::Empty);
        }
        Ok(env)
    }

    pub fn encode(&self) -> String {
        // Serialising a struct of uuids and an enum cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The creation time a UUIDv7 id carries (millisecond precision). A notification's
/// `created_at` is exactly this, so a look-up by id alone can name the one daily partition
/// that holds it.
pub fn created_at_of(id: Uuid) -> Option<DateTime<Utc>> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
}

/// A fresh notification id and the creation time it encodes.
pub fn new_notification_id() -> (Uuid, DateTime<Utc>) {
    let id = Uuid::now_v7();
    // A v7 id always carries a timestamp.
    let at = created_at_of(id).unwrap_or_else(Utc::now);
    (id, at)
}

const INTAKE_HEAD: &str = "{\"v\":1,\"notifications\":[";
const INTAKE_TAIL: &str = "]}";

/// Packs notifications into as few intake-message bodies as `max_bytes` allows, keeping
/// their order. Each body is a valid [`IntakeEnvelope`]. Fails only if one notification
/// alone cannot fit (the API bounds personalisation well below that).
pub fn pack_intake(
    notifications: &[IntakeNotification],
    max_bytes: usize,
) -> Result<Vec<String>, EnvelopeError> {
    let overhead = INTAKE_HEAD.len() + INTAKE_TAIL.len();
    let mut bodies = Vec::new();
    let mut current = String::from(INTAKE_HEAD);
    let mut count = 0usize;
    for n in notifications {
        let json = serde_json::to_string(n)?;
        if json.len() + overhead > max_bytes {
            return Err(EnvelopeError::NotificationTooLarge {
                id: n.id,
                bytes: json.len() + overhead,
                limit: max_bytes,
            });
        }
        let separator = usize::from(count > 0);
        if current.len() + separator + json.len() + INTAKE_TAIL.len() > max_bytes {
            current.push_str(INTAKE_TAIL);
            bodies.push(std::mem::replace(&mut current, String::from(INTAKE_HEAD)));
            count = 0;
        }
        if count > 0 {
            current.push(',');
        }
        current.push_str(&json);
        count += 1;
    }
    if count > 0 {
        current.push_str(INTAKE_TAIL);
        bodies.push(current);
    }
    Ok(bodies)
}

/// Splits ids into send envelopes of at most `per_message` ids each; each envelope lists
/// the ids it carries, so a caller maps a failed send back to them.
pub fn pack_send(process_type: ProcessType, ids: &[Uuid], per_message: usize) -> Vec<SendEnvelope> {
    pack_send_claimed(process_type, ids, &[], per_message)
}

/// [`pack_send`] for ids that may be claimed under `claim_tokens`.
pub fn pack_send_claimed(
    process_type: ProcessType,
    ids: &[Uuid],
    claim_tokens: &[Uuid],
    per_message: usize,
) -> Vec<SendEnvelope> {
    ids.chunks(per_message.max(1))
        .map(|chunk| SendEnvelope {
            v: ENVELOPE_VERSION,
            process_type,
            notification_ids: chunk.to_vec(),
            claim_tokens: claim_tokens.to_vec(),
        })
        .collect()
}

/// Groups message bodies (by index) into `SendMessageBatch` calls: at most `max_entries`
/// entries and `max_bytes` of bodies per call — the SQS limits. A body larger than
/// `max_bytes` gets a call of its own (SQS will reject it; the caller reports it).
pub fn plan_batches(body_sizes: &[usize], max_entries: usize, max_bytes: usize) -> Vec<Vec<usize>> {
    let mut calls: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for (i, &size) in body_sizes.iter().enumerate() {
        if !current.is_empty() && (current.len() == max_entries || bytes + size > max_bytes) {
            calls.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(i: u32, process_type: ProcessType) -> IntakeNotification {
        let mut personalisation = serde_json::Map::new();
        personalisation.insert(
            "name".into(),
            serde_json::Value::String(format!("Person {i}")),
        );
        let (id, created_at) = new_notification_id();
        IntakeNotification {
            id,
            service_id: Uuid::from_u128(1),
            template_id: Uuid::from_u128(2),
            template_version: 1,
            process_type,
            email_address: format!("user{i}@example.com"),
            personalisation: crate::Personalisation::from_map(&personalisation),
            reference: Some(format!("ref-{i}")),
            key_type: KeyType::Normal,
            api_key_id: None,
            job_id: None,
            job_row_number: None,
            email_reply_to_id: None,
            scheduled_for: None,
            one_click_unsubscribe_url: None,
            job: None,
            created_at,
        }
    }

    #[test]
    fn packing_respects_the_limit_and_keeps_every_notification_in_order() {
        let all: Vec<_> = (0..2_000).map(|i| sample(i, ProcessType::Bulk)).collect();
        let limit = 16 * 1024;
        let bodies = pack_intake(&all, limit).unwrap();
        assert!(bodies.len() > 1, "2,000 notifications cannot fit in 16 KiB");
        let mut back = Vec::new();
        for b in &bodies {
            assert!(b.len() <= limit, "body of {} bytes", b.len());
            back.extend(IntakeEnvelope::decode(b).unwrap().notifications);
        }
        assert_eq!(back, all);
        // Packing is tight: merging two neighbouring bodies would exceed the limit.
        for pair in bodies.windows(2) {
            assert!(pair[0].len() + pair[1].len() > limit - 64);
        }
    }

    #[test]
    fn a_notification_too_large_alone_is_an_error() {
        let mut n = sample(0, ProcessType::Normal);
        let mut big = serde_json::Map::new();
        big.insert("big".into(), serde_json::Value::String("x".repeat(300_000)));
        n.personalisation = crate::Personalisation::from_map(&big);
        let err = pack_intake(&[n], 262_144).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::NotificationTooLarge { .. }),
            "{err}"
        );
    }

    #[test]
    fn decode_rejects_bad_input() {
        assert!(matches!(
            IntakeEnvelope::decode("not json"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            IntakeEnvelope::decode(r#"{"v":2,"notifications":[]}"#),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            IntakeEnvelope::decode(r#"{"v":1,"notifications":[]}"#),
            Err(EnvelopeError::Empty)
        ));
        assert!(matches!(
            IntakeEnvelope::decode(r#"{"v":1,"notifications":[{"id":"nope"}]}"#),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            SendEnvelope::decode(r#"{"v":1,"process_type":"fast","notification_ids":[]}"#),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn created_at_comes_from_the_id() {
        let (id, at) = new_notification_id();
        assert_eq!(created_at_of(id), Some(at));
        assert!((Utc::now() - at).num_seconds().abs() < 5);
        assert_eq!(
            at.timestamp_subsec_micros() % 1000,
            0,
            "millisecond precision"
        );
        assert_eq!(
            created_at_of(Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef)),
            None
        );
    }

    #[test]
    fn send_envelopes_chunk_ids() {
        let ids: Vec<_> = (0..25).map(|_| Uuid::now_v7()).collect();
        let envs = pack_send(ProcessType::Normal, &ids, 10);
        assert_eq!(envs.len(), 3);
        assert_eq!(envs[2].notification_ids.len(), 5);
        let round = SendEnvelope::decode(&envs[0].encode()).unwrap();
        assert_eq!(round, envs[0]);
    }

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let sizes = vec![100; 25];
        let calls = plan_batches(&sizes, 10, 262_144);
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        let sizes = vec![100_000, 100_000, 100_000, 10];
        let calls = plan_batches(&sizes, 10, 262_144);
        assert_eq!(calls, vec![vec![0, 1], vec![2, 3]]);
        assert!(plan_batches(&[], 10, 10).is_empty());
    }
}
