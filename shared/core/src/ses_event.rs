//! SES events as `receipts` gets them, and what each one means for a notification's status. Pure: decoding, the event → status mapping, the reduction of a batch to one
//! target per notification, and the mailbox simulator's rules (shared by the local mailbox simulator
//! and by `send` for test-key notifications, which never reach SES).
//!
//! SES publishes events through the configuration set's SNS destination, so an SQS body is
//! usually an SNS envelope (`{"Type":"Notification","Message":"<the event as a string>"}`);
//! with raw message delivery it is the event itself. Both are accepted.

use crate::status::NotificationStatus;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The message tag that carries the notification id (receipts find their
/// notification by primary key, and the id gives the partition too).
pub const NOTIFICATION_ID_TAG: &str = "notification_id";
/// The message tag that carries the process type (for per-process-type SES metrics).
pub const PROCESS_TYPE_TAG: &str = "process_type";
/// The domain of SES's mailbox simulator.
pub const SIMULATOR_DOMAIN: &str = "simulator.amazonses.com";

/// The SES event types Floodgate knows (SES's spelling, including the space in
/// `Rendering Failure`). Anything else (Open, Click, Subscription…) is [`Other`].
///
/// [`Other`]: SesEventType::Other
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SesEventType {
    Send,
    Delivery,
    Bounce,
    Complaint,
    Reject,
    DeliveryDelay,
    RenderingFailure,
    Other(String),
}

impl SesEventType {
    pub fn parse(s: &str) -> Self {
        match s {
            "Send" => Self::Send,
            "Delivery" => Self::Delivery,
            "Bounce" => Self::Bounce,
            "Complaint" => Self::Complaint,
            "Reject" => Self::Reject,
            "DeliveryDelay" => Self::DeliveryDelay,
            "Rendering Failure" => Self::RenderingFailure,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Send => "Send",
            Self::Delivery => "Delivery",
            Self::Bounce => "Bounce",
            Self::Complaint => "Complaint",
            Self::Reject => "Reject",
            Self::DeliveryDelay => "DeliveryDelay",
            Self::RenderingFailure => "Rendering Failure",
            Self::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    // Event publishing says `eventType`; identity notifications say `notificationType`.
    #[serde(alias = "notificationType")]
    event_type: String,
    mail: RawMail,
    #[serde(default)]
    bounce: Option<RawBounce>,
    #[serde(default)]
    complaint: Option<RawComplaint>,
    #[serde(default)]
    delivery: Option<RawTimestamped>,
    #[serde(default)]
    reject: Option<RawReject>,
    #[serde(default)]
    failure: Option<RawFailure>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMail {
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    message_id: String,
    #[serde(default)]
    tags: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBounce {
    bounce_type: String,
    #[serde(default)]
    bounce_sub_type: Option<String>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawComplaint {
    #[serde(default)]
    feedback_id: Option<String>,
    #[serde(default)]
    complaint_feedback_type: Option<String>,
    #[serde(default)]
    complaint_sub_type: Option<String>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawTimestamped {
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawReject {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFailure {
    #[serde(default)]
    error_message: Option<String>,
}

/// A complaint to record (the status stays `delivered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplaintRecord {
    /// SES's feedback id, or `<messageId>/<timestamp>` when absent: the idempotency key.
    pub feedback_id: String,
    pub complaint_type: Option<String>,
    pub complained_at: Option<DateTime<Utc>>,
}

/// One decoded receipt: which notification, and what it proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub notification_id: Uuid,
    /// The id's timestamp: with the id, the primary key of the row.
    pub created_at: DateTime<Utc>,
    pub event_type: SesEventType,
    pub ses_message_id: String,
    /// When SES accepted the message (`mail.timestamp`).
    pub sent_at: Option<DateTime<Utc>>,
    /// The status this event proposes; `None` for events that change nothing.
    pub status: Option<NotificationStatus>,
    /// When the event happened (bounce/delivery/complaint timestamp).
    pub event_at: Option<DateTime<Utc>>,
    /// Why it failed, for failure statuses (no address or content in it).
    pub failure_reason: Option<String>,
    pub complaint: Option<ComplaintRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("body is neither an SES event nor an SNS notification carrying one: {0}")]
    Malformed(String),
    #[error("SES event has no {NOTIFICATION_ID_TAG} tag (not sent by Floodgate)")]
    NoNotificationId,
    #[error("{NOTIFICATION_ID_TAG} tag {0:?} is not a UUIDv7")]
    BadNotificationId(String),
}

/// The SES event a queue message carries: unwraps the SNS envelope if there is one.
fn event_value(body: &str) -> Result<Value, ReceiptError> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    match (v.get("Type").and_then(Value::as_str), v.get("Message")) {
        (Some("Notification"), Some(Value::String(inner))) => {
            serde_json::from_str(inner).map_err(|e| ReceiptError::Malformed(e.to_string()))
        }
        (Some(other), _) => Err(ReceiptError::Malformed(format!(
            "SNS message of type {other:?} carries no event"
        ))),
        _ => Ok(v),
    }
}

/// Decodes one receipts-queue message body into a [`Receipt`].
pub fn decode_receipt(body: &str) -> Result<Receipt, ReceiptError> {
    let raw: RawEvent = serde_json::from_value(event_value(body)?)
        .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    let tag = raw
        .mail
        .tags
        .get(NOTIFICATION_ID_TAG)
        .and_then(|v| v.first())
        .ok_or(ReceiptError::NoNotificationId)?;
    let notification_id =
        Uuid::parse_str(tag).map_err(|_| ReceiptError::BadNotificationId(tag.clone()))?;
    let created_at = crate::envelope::created_at_of(notification_id)
        .ok_or_else(|| ReceiptError::BadNotificationId(tag.clone()))?;
    let event_type = SesEventType::parse(&raw.event_type);
    let mut r = Receipt {
        notification_id,
        created_at,
        event_type: event_type.clone(),
        ses_message_id: raw.mail.message_id.clone(),
        sent_at: raw.mail.timestamp,
        status: None,
        event_at: None,
        failure_reason: None,
        complaint: None,
    };
    use NotificationStatus as S;
    match event_type {
        SesEventType::Send | SesEventType::DeliveryDelay => r.status = Some(S::Sending),
        SesEventType::Delivery => {
            r.status = Some(S::Delivered);
            r.event_at = raw.delivery.and_then(|d| d.timestamp);
        }
        SesEventType::Bounce => {
            let b = raw
                .bounce
                .ok_or_else(|| ReceiptError::Malformed("Bounce event without bounce".into()))?;
            r.status = Some(bounce_status(&b.bounce_type));
            r.event_at = b.timestamp;
            r.failure_reason = Some(format!(
                "Bounce {}/{}",
                b.bounce_type,
                b.bounce_sub_type.as_deref().unwrap_or("-")
            ));
        }
        SesEventType::Complaint => {
            // A complaint comes from a recipient who got the email: it implies delivery,
            // so it proposes `delivered` (keeping the in-order result when it overtakes
            // the Delivery event) and is recorded on the side.
            let c = raw.complaint.unwrap_or(RawComplaint {
                feedback_id: None,
                complaint_feedback_type: None,
                complaint_sub_type: None,
                timestamp: None,
            });
            r.status = Some(S::Delivered);
            r.event_at = c.timestamp;
            r.complaint = Some(ComplaintRecord {
                feedback_id: c.feedback_id.unwrap_or_else(|| {
                    format!(
                        "{}/{}",
                        raw.mail.message_id,
                        c.timestamp.map(|t| t.to_rfc3339()).unwrap_or_default()
                    )
                }),
                complaint_type: c.complaint_feedback_type.or(c.complaint_sub_type),
                complained_at: c.timestamp,
            });
        }
        SesEventType::Reject => {
            // SES rejects a message it accepted when it finds a virus in it: the content
            // we built is at fault, not the address, so `technical-failure` (ours) rather
            // than `permanent-failure` (which tells the client to drop the address).
            r.status = Some(S::TechnicalFailure);
            r.failure_reason = Some(format!(
                "Reject: {}",
                raw.reject
                    .and_then(|x| x.reason)
                    .unwrap_or_else(|| "unknown".into())
            ));
        }
        SesEventType::RenderingFailure => {
            r.status = Some(S::TechnicalFailure);
            r.failure_reason = Some(format!(
                "Rendering Failure: {}",
                raw.failure
                    .and_then(|f| f.error_message)
                    .unwrap_or_else(|| "unknown".into())
            ));
        }
        SesEventType::Other(_) => {}
    }
    Ok(r)
}

/// SES bounce types: only `Permanent` means the address will never work.
fn bounce_status(bounce_type: &str) -> NotificationStatus {
    match bounce_type {
        "Permanent" => NotificationStatus::PermanentFailure,
        // Transient (mailbox full, out of office…) and Undetermined.
        _ => NotificationStatus::TemporaryFailure,
    }
}

/// What one statement must do for one notification after a batch of receipts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptTarget {
    pub notification_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The highest-ranked status proposed in the batch (`None`: complaints only / no-op).
    pub status: Option<NotificationStatus>,
    pub event_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    pub ses_message_id: String,
    pub sent_at: Option<DateTime<Utc>>,
    pub complaints: Vec<ComplaintRecord>,
}

/// Reduces a batch of receipts to one target per notification: the highest-ranked status
/// (the same rule as [`crate::status::fold_statuses`], so the order within the batch does
/// not matter), its time and reason, and every distinct complaint. Ties between events
/// proposing the same status keep the earliest event time, so the result does not depend
/// on the order either.
pub fn reduce_receipts<'a>(
    receipts: impl IntoIterator<Item = &'a Receipt>,
) -> BTreeMap<Uuid, ReceiptTarget> {
    let mut out: BTreeMap<Uuid, ReceiptTarget> = BTreeMap::new();
    for r in receipts {
        let t = out
            .entry(r.notification_id)
            .or_insert_with(|| ReceiptTarget {
                notification_id: r.notification_id,
                created_at: r.created_at,
                status: None,
                event_at: None,
                failure_reason: None,
                ses_message_id: r.ses_message_id.clone(),
                sent_at: r.sent_at,
                complaints: Vec::new(),
            });
        if let Some(s) = r.status {
            let better = match t.status {
                None => true,
                Some(cur) if s.rank() > cur.rank() => true,
                Some(cur) if s.rank() == cur.rank() => earlier(r.event_at, t.event_at),
                Some(_) => false,
            };
            if better {
                t.status = Some(s);
                t.event_at = r.event_at;
                t.failure_reason = r.failure_reason.clone();
            }
        }
        t.sent_at = match (t.sent_at, r.sent_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(c) = &r.complaint
            && !t.complaints.iter().any(|x| x.feedback_id == c.feedback_id)
        {
            t.complaints.push(c.clone());
        }
    }
    for t in out.values_mut() {
        t.complaints
            .sort_by(|a, b| a.feedback_id.cmp(&b.feedback_id));
    }
    out
}

fn earlier(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------
// The mailbox simulator
// ---------------------------------------------------------------------------------------

/// What SES's mailbox simulator does for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub enum SimulatedRecipient {
    /// `success@`: delivered. Also every address outside the simulator's domain.
    Success,
    /// `bounce@`: a permanent (hard) bounce.
    Bounce,
    /// `ooto@`: delivered, and the recipient's server sends an out-of-office reply.
    Ooto,
    /// `complaint@`: delivered, then the recipient marks it as spam.
    Complaint,
    /// `suppressionlist@`: SES treats the address as on the suppression list: a permanent
    /// bounce.
    SuppressionList,
}

impl SimulatedRecipient {
    pub const ALL: [SimulatedRecipient; 5] = [
        Self::Success,
        Self::Bounce,
        Self::Ooto,
        Self::Complaint,
        Self::SuppressionList,
    ];

    /// The simulator mailbox for this outcome.
    pub fn mailbox(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Bounce => "bounce",
            Self::Ooto => "ooto",
            Self::Complaint => "complaint",
            Self::SuppressionList => "suppressionlist",
        }
    }

    /// The `i`-th distinct address of this outcome (`+label` keeps addresses apart).
    pub fn address(self, i: usize) -> String {
        format!("{}+{i}@{SIMULATOR_DOMAIN}", self.mailbox())
    }

    /// Classifies an address; `+label` after the local part is allowed
    /// (`bounce+42@simulator.amazonses.com`), case-insensitive.
    pub fn of(address: &str) -> Self {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Self::Success;
        };
        if !domain.eq_ignore_ascii_case(SIMULATOR_DOMAIN) {
            return Self::Success;
        }
        let base = local.split('+').next().unwrap_or("").to_ascii_lowercase();
        match base.as_str() {
            "bounce" => Self::Bounce,
            "ooto" => Self::Ooto,
            "complaint" => Self::Complaint,
            "suppressionlist" => Self::SuppressionList,
            _ => Self::Success,
        }
    }

    /// The final status the simulator's events lead to.
    pub fn final_status(self) -> NotificationStatus {
        match self {
            Self::Success | Self::Ooto | Self::Complaint => NotificationStatus::Delivered,
            Self::Bounce | Self::SuppressionList => NotificationStatus::PermanentFailure,
        }
    }

    /// The events SES publishes for this address, after `Send`.
    pub fn events(self) -> &'static [SimulatedEvent] {
        use SimulatedEvent::*;
        match self {
            Self::Success | Self::Ooto => &[Send, Delivery],
            Self::Complaint => &[Send, Delivery, Complaint],
            Self::Bounce => &[Send, BouncePermanent],
            Self::SuppressionList => &[Send, BounceSuppressed],
        }
    }
}

/// The event shapes the simulator (and the fixtures, and the tests) build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedEvent {
    Send,
    Delivery,
    BouncePermanent,
    BounceSuppressed,
    BounceTransient,
    BounceUndetermined,
    Complaint,
    Reject,
    DeliveryDelay,
    RenderingFailure,
}
