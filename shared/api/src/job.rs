//! A bulk job in GC Notify's shape (its `JobSchema` dump): the `data` of the bulk 201 and of
//! the job read, built in one place so the two agree.

use crate::notify_time;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// What a job's JSON says.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFields<'a> {
    pub id: Uuid,
    pub job_status: &'a str,
    pub notification_count: i64,
    pub original_file_name: &'a str,
    pub template_id: Uuid,
    pub template_version: i32,
    pub service_id: Uuid,
    pub service_name: &'a str,
    pub created_at: DateTime<Utc>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub sender_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub key_type: &'a str,
}

/// The job as GC Notify's `job_schema.dump` names its fields. Pure.
pub fn job_json(j: &JobFields) -> Value {
    json!({
        "id": j.id,
        "job_status": j.job_status,
        "notification_count": j.notification_count,
        "original_file_name": j.original_file_name,
        "template": j.template_id,
        "template_version": j.template_version,
        "template_type": "email",
        "service": j.service_id,
        "service_name": {"name": j.service_name},
        "created_at": notify_time(j.created_at),
        "scheduled_for": j.scheduled_for.map(notify_time),
        "sender_id": j.sender_id,
        "api_key": {"id": j.api_key_id, "key_type": j.key_type},
        "archived": false,
    })
}

/// GC Notify's `job_status` for a job here: `scheduled` until its time, then `pending`
/// while none of its rows is stored, `in progress` while some are, `finished` once all are
/// (GC Notify's job is finished when every row has become a notification, whatever their
/// delivery). Pure.
pub fn job_status(
    stored: i64,
    notification_count: i64,
    scheduled_for: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> &'static str {
    if scheduled_for.is_some_and(|at| at > now) {
        "scheduled"
    } else if stored >= notification_count {
        "finished"
    } else if stored > 0 {
        "in progress"
    } else {
        "pending"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_s_status_follows_its_schedule_then_its_stored_rows() {
        let now = Utc::now();
        let later = Some(now + chrono::Duration::minutes(5));
        let earlier = Some(now - chrono::Duration::minutes(5));
        assert_eq!(job_status(3, 3, later, now), "scheduled");
        assert_eq!(job_status(0, 3, None, now), "pending");
        assert_eq!(job_status(1, 3, earlier, now), "in progress");
        assert_eq!(job_status(3, 3, earlier, now), "finished");
        assert_eq!(job_status(3, 3, None, now), "finished");
    }
}
