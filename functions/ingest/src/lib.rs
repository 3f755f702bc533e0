//! `ingest`: `POST /v2/notifications/email` and `POST /v2/notifications/bulk` behind API
//! Gateway. Authenticates (keys cached from the reader lane), validates, renders, and puts
//! the notifications on the intake queue of their process type. It never writes to the database
//! (the API only enqueues, so a slow database cannot detach it), and answers 201 only once SQS has acknowledged every
//! message; otherwise a Notify-shaped 503 says exactly what was and was not accepted.

pub mod door;
pub mod sanitise;
pub mod storable;
pub mod validate;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::Method;
use chrono::{DateTime, Utc};
use door::{Admission, Door, Passage};
use floodgate_api::gateway::{self, json_response};
use floodgate_api::{ApiCatalog, ApiError, Caller, JobFields, job_json, notify_time};
use floodgate_aws::{LimitStore, QueueError, QueueLimits, QueueSender, send_all};
use floodgate_core::envelope::{created_at_of, new_notification_id};
use floodgate_core::keys::{TEAM_KEY_REFUSAL, may_send_to};
use floodgate_core::limits::{IDEMPOTENCY_HEADER, IdempotencyKey, job_row_id, request_fingerprint};
use floodgate_core::template::{Template, placeholder_names, render_text};
use floodgate_core::{
    IntakeEnvelope, IntakeNotification, JobHeader, Personalisation, ProcessType, QueueName,
    pack_intake,
};
use floodgate_db::catalog::TemplateRow;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Bounded retries of the messages SQS did not take: the whole budget (about 0.75 s of
/// back-off) stays well inside API Gateway's 30 s and the function's 10 s timeout.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(250),
        }
    }
}

/// What `ingest` needs, built once per instance.
pub struct Ingest {
    catalog: Arc<ApiCatalog>,
    queue: Arc<dyn QueueSender>,
    door: Door,
    limits: QueueLimits,
    retry: RetryPolicy,
}

/// What one POST is: who asks, what it says, and how it passes the door.
struct Post<'a> {
    caller: Caller,
    body: Vec<u8>,
    base: String,
    now: DateTime<Utc>,
    passage: Passage<'a>,
    /// The request's idempotency key and the digest of what it asks (only a request with a
    /// key is compared with others, so only then is its body hashed).
    idempotency: Option<(IdempotencyKey, String)>,
}

impl Ingest {
    /// The one constructor: `main`, the local stack, the tests and the benchmark build it
    /// here.
    pub fn new(
        catalog: Arc<ApiCatalog>,
        queue: Arc<dyn QueueSender>,
        limit_store: Arc<dyn LimitStore>,
        knobs: &floodgate_core::Knobs,
    ) -> Self {
        Ingest {
            catalog,
            queue,
            door: Door::new(limit_store),
            limits: QueueLimits::from_knobs(knobs),
            retry: RetryPolicy::default(),
        }
    }

    /// Replaces the enqueue retry policy (tests make its back-off short).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How many requests were accepted without limits because the limit store was down.
    pub fn limit_bypasses(&self) -> u64 {
        self.door.bypasses()
    }

    /// The handler: every outcome is an HTTP response (errors in the Notify shape).
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.route(&req).await {
            Ok((status, body)) => json_response(status, &body),
            Err(e) => e.into_response(),
        }
    }

    async fn route(&self, req: &ApiGatewayV2httpRequest) -> Result<(u16, Value), ApiError> {
        let path = gateway::path(req);
        let is_email = path == "/v2/notifications/email";
        let is_bulk = path == "/v2/notifications/bulk";
        if !is_email && !is_bulk {
            return Err(ApiError::route_not_found());
        }
        if gateway::method(req) != Method::POST {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let now = Utc::now();
        let caller = self
            .catalog
            .authenticate(gateway::header(req, "authorization"), now.timestamp())
            .await?;
        let body = gateway::body_bytes(req)?;
        let idempotency = gateway::header(req, IDEMPOTENCY_HEADER)
            .map(|h| IdempotencyKey::parse(caller.service_id, h))
            .transpose()
            .map_err(|e| ApiError::validation(e.to_string()))?
            .map(|key| (key, request_fingerprint(path, &body)));
        let post = Post {
            caller,
            body,
            base: gateway::base_url(req),
            now,
            passage: self.door.passage(),
            idempotency,
        };
        if is_email {
            self.email(post).await
        } else {
            self.bulk(post).await
        }
    }

    /// Claims the request's idempotency key (if it sent one) with the answer it is about
    /// to give, or finds what an earlier request with that key did.
    async fn admit(&self, post: &mut Post<'_>, response: &Value) -> Result<Admission, ApiError> {
        let Some((key, fingerprint)) = post.idempotency.take() else {
            return Ok(Admission::Proceed(None));
        };
        post.passage
            .admit(Some(key), &fingerprint, 201, response, post.now)
            .await
    }

    /// The caller's template, or Notify's "Template not found" (unknown, or another
    /// service's: the client cannot tell them apart) or "Template has been deleted"
    /// (archived; app/notifications/validators.py `check_template_is_active`).
    async fn template(&self, caller: &Caller, id: Uuid) -> Result<Arc<TemplateRow>, ApiError> {
        match self.catalog.template(id).await? {
            Some(t) if t.service_id == caller.service_id && t.archived => {
                Err(ApiError::bad_request("Template has been deleted"))
            }
            Some(t) if t.service_id == caller.service_id => Ok(t),
            _ => Err(ApiError::bad_request("Template not found")),
        }
    }

    /// Notify's `check_service_email_reply_to_id` (app/notifications/validators.py): the id
    /// must name one of the caller's unarchived reply-to addresses.
    async fn check_reply_to(&self, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
        match self.catalog.reply_to(caller.service_id, id).await? {
            Some(r) if !r.archived => Ok(()),
            _ => Err(ApiError::bad_request(format!(
                "email_reply_to_id {id} does not exist in database for service id {}",
                caller.service_id
            ))),
        }
    }

    async fn email(&self, mut post: Post<'_>) -> Result<(u16, Value), ApiError> {
        let (caller, base, now) = (&post.caller, post.base.as_str(), post.now);
        let r = validate::email_request(&post.body, now)?;
        post.passage.rate(caller, now).await?;
        let template = self.template(caller, r.template_id).await?;
        let rendered = render_text(
            &Template {
                subject: template.subject.clone(),
                body: template.body.clone(),
            },
            &r.personalisation,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(reply_to) = r.email_reply_to_id {
            self.check_reply_to(caller, reply_to).await?;
        }
        // Last, as in Notify's post_notification (validate_and_format_recipient).
        if !may_send_to(
            caller.key_type,
            &caller.team_and_guest_list,
            &r.email_address,
        ) {
            return Err(ApiError::bad_request(TEAM_KEY_REFUSAL));
        }
        let process_type = template.process_type;
        let (id, created_at) = new_notification_id();
        let mut n = IntakeNotification {
            id,
            service_id: caller.service_id,
            template_id: template.id,
            template_version: template.version,
            process_type,
            email_address: r.email_address,
            personalisation: Personalisation::from_map(&r.personalisation),
            reference: r.reference.clone(),
            key_type: caller.key_type,
            api_key_id: Some(caller.api_key_id),
            job_id: None,
            job_row_number: None,
            email_reply_to_id: r.email_reply_to_id,
            scheduled_for: r.scheduled_for,
            one_click_unsubscribe_url: r.one_click_unsubscribe_url.clone(),
            job: None,
            created_at,
        };
        let response = json!({
                "id": id,
                "reference": r.reference,
                "uri": format!("{base}/v2/notifications/{id}"),
                "template": {
                    "id": template.id,
                    "version": template.version,
                    // Notify's create_post_email_response_from_notification gives this
                    // (admin) path, not the v2 one.
                    "uri": format!("{base}/services/{}/templates/{}", caller.service_id, template.id),
                },
                "scheduled_for": r.scheduled_for.map(notify_time),
                // post_notifications.py adds it to every email's answer, empty when
                // nothing was sanitised.
                "sanitised_content": r.sanitised_content,
                "content": {
                    "from_email": caller.from_email,
                    "subject": rendered.subject,
                    "body": rendered.body,
                    "one_click_unsubscribe_url": r.one_click_unsubscribe_url,
                },
        });
        let (held, response) = match self.admit(&mut post, &response).await? {
            Admission::Repeat(status, stored) => return Ok((status, stored)),
            Admission::Proceed(held) => (held, response),
            Admission::Resume(held, stored) => {
                // A request with this key died after claiming it: its id, so whatever it
                // enqueued is the same notification.
                let stored_id = stored["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
                let Some(at) = stored_id.and_then(created_at_of) else {
                    return Err(ApiError::internal());
                };
                n.id = stored_id.unwrap_or(n.id);
                n.created_at = at;
                (Some(held), stored)
            }
        };
        let id = n.id;
        let counted = match post.passage.daily(&post.caller, 1, post.now).await {
            Ok(counted) => counted,
            Err(e) => {
                post.passage.release(held).await;
                return Err(e);
            }
        };
        let bodies = match pack_intake(std::slice::from_ref(&n), self.limits.max_message_bytes) {
            Ok(bodies) => bodies,
            Err(_) => {
                post.passage.give_back(counted, 1).await;
                post.passage.release(held).await;
                return Err(ApiError::validation("Notification is too large"));
            }
        };
        let accepted = self.enqueue(process_type, &bodies).await;
        if !accepted.iter().all(|a| *a) {
            post.passage.give_back(counted, 1).await;
            post.passage.abandon(held).await;
            return Err(ApiError::unavailable(
                "Service temporarily unavailable: the notification was not accepted, please retry",
            ));
        }
        post.passage.settle(held).await;
        tracing::info!(notification_id = %id, process_type = %process_type, "notification accepted");
        Ok((201, response))
    }

    async fn bulk(&self, mut post: Post<'_>) -> Result<(u16, Value), ApiError> {
        let (caller, now) = (&post.caller, post.now);
        let r = validate::bulk_request(&post.body, now)?;
        post.passage.rate(caller, now).await?;
        let template = self.template(caller, r.template_id).await?;
        // GC Notify's validate_sender_id: checked before the rows.
        if let Some(reply_to) = r.reply_to_id {
            self.check_reply_to(caller, reply_to).await?;
        }
        let placeholders = placeholder_names(&Template {
            subject: template.subject.clone(),
            body: template.body.clone(),
        });
        // Every row is checked before anything is enqueued: all or none.
        let team = caller.team_and_guest_list.as_ref();
        let rows = validate::bulk_rows(&r.rows, &placeholders, &|address: &str| {
            may_send_to(caller.key_type, team, address)
        })?;
        let job_id = Uuid::now_v7();
        let mut notifications: Vec<IntakeNotification> = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| IntakeNotification {
                id: job_id,
                service_id: caller.service_id,
                template_id: template.id,
                template_version: template.version,
                // The bulk API always uses the bulk process type, whatever the template's type.
                process_type: ProcessType::Bulk,
                email_address: row.email_address,
                personalisation: Personalisation::from_map(&row.personalisation),
                reference: r.reference.clone(),
                key_type: caller.key_type,
                api_key_id: Some(caller.api_key_id),
                job_id: Some(job_id),
                // Notify numbers job rows from 0.
                job_row_number: i32::try_from(i).ok(),
                email_reply_to_id: r.reply_to_id,
                scheduled_for: r.scheduled_for,
                one_click_unsubscribe_url: None,
                job: None,
                created_at: now,
            })
            .collect();
        assign_job(&mut notifications, job_id)?;
        let count = notifications.len();
        if let Some(first) = notifications.first_mut() {
            first.job = Some(JobHeader {
                name: r.name.clone(),
                notification_count: i32::try_from(count).map_err(|_| ApiError::internal())?,
            });
        }
        let response = json!({"data": job_json(&JobFields {
            id: job_id,
            job_status: "pending",
            notification_count: i64::try_from(count).unwrap_or(i64::MAX),
            original_file_name: &r.name,
            template_id: template.id,
            template_version: template.version,
            service_id: caller.service_id,
            service_name: &caller.service_name,
            // The rows' creation time (the job id's), which the job read shows too.
            created_at: created_at_of(job_id).unwrap_or(now),
            scheduled_for: r.scheduled_for,
            sender_id: r.reply_to_id,
            api_key_id: Some(caller.api_key_id),
            key_type: caller.key_type.as_str(),
        })});
        let (held, response, job_id) = match self.admit(&mut post, &response).await? {
            Admission::Repeat(status, stored) => return Ok((status, stored)),
            Admission::Proceed(held) => (held, response, job_id),
            Admission::Resume(held, stored) => {
                // A request with this key died after claiming it: its job id (and so its
                // rows' ids), so whatever it enqueued is the same notifications.
                let Some(stored_job) = stored["data"]["id"]
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                else {
                    return Err(ApiError::internal());
                };
                assign_job(&mut notifications, stored_job)?;
                (Some(held), stored, stored_job)
            }
        };
        let emails = u64::try_from(count).unwrap_or(u64::MAX);
        let counted = match post.passage.daily(&post.caller, emails, now).await {
            Ok(counted) => counted,
            Err(e) => {
                post.passage.release(held).await;
                return Err(e);
            }
        };
        let bodies = match pack_intake(&notifications, self.limits.max_message_bytes) {
            Ok(bodies) => bodies,
            Err(_) => {
                post.passage.give_back(counted, emails).await;
                post.passage.release(held).await;
                return Err(ApiError::validation(
                    "A row is too large to send (personalisation above the limit)",
                ));
            }
        };
        let accepted = self.enqueue(ProcessType::Bulk, &bodies).await;
        if !accepted.iter().all(|a| *a) {
            let rows = accepted_rows(&bodies, &accepted);
            let unaccepted = count.saturating_sub(rows.len());
            post.passage
                .give_back(counted, u64::try_from(unaccepted).unwrap_or(0))
                .await;
            post.passage.abandon(held).await;
            return Err(partial_failure(job_id, count, rows));
        }
        post.passage.settle(held).await;
        tracing::info!(job_id = %job_id, notifications = count, messages = bodies.len(), "bulk job accepted");
        Ok((201, response))
    }

    /// Sends the bodies to the process type's intake queue, retrying what SQS did not take (with
    /// back-off, a bounded number of times). Returns, per body, whether SQS acknowledged it.
    pub async fn enqueue(&self, process_type: ProcessType, bodies: &[String]) -> Vec<bool> {
        let queue = QueueName::Intake(process_type);
        let mut accepted = vec![false; bodies.len()];
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut backoff = self.retry.first_backoff;
        for attempt in 1..=self.retry.attempts.max(1) {
            let batch: Vec<String> = pending.iter().map(|&i| bodies[i].clone()).collect();
            let results = send_all(self.queue.as_ref(), queue, &batch, self.limits).await;
            let mut still = Vec::new();
            let mut retryable = true;
            for (&i, r) in pending.iter().zip(results) {
                match r {
                    Ok(()) => accepted[i] = true,
                    Err(e) => {
                        if matches!(
                            e,
                            QueueError::Rejected { .. } | QueueError::NotConfigured { .. }
                        ) {
                            retryable = false;
                        }
                        tracing::warn!(error = %e, attempt, queue = %queue, "intake send failed");
                        still.push(i);
                    }
                }
            }
            pending = still;
            if pending.is_empty() || !retryable || attempt == self.retry.attempts {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        accepted
    }
}

/// Ranges of 1-based row numbers, e.g. `[[1, 500], [1001, 1500]]`.
fn ranges(rows: &[usize]) -> Vec<[usize; 2]> {
    let mut out: Vec<[usize; 2]> = Vec::new();
    for &r in rows {
        match out.last_mut() {
            Some(last) if last[1] + 1 == r => last[1] = r,
            _ => out.push([r, r]),
        }
    }
    out
}

/// Gives a job's rows their ids, derived from the job's: the same job id always gives the
/// same row ids.
fn assign_job(notifications: &mut [IntakeNotification], job_id: Uuid) -> Result<(), ApiError> {
    let created_at = created_at_of(job_id).ok_or_else(ApiError::internal)?;
    for (row, n) in (0u32..).zip(notifications.iter_mut()) {
        n.id = job_row_id(job_id, row);
        n.job_id = Some(job_id);
        n.created_at = created_at;
    }
    Ok(())
}

/// The 1-based row numbers of the rows in the bodies SQS acknowledged, in order.
fn accepted_rows(bodies: &[String], accepted: &[bool]) -> Vec<usize> {
    let mut rows: Vec<usize> = Vec::new();
    for (body, ok) in bodies.iter().zip(accepted) {
        if *ok && let Ok(env) = IntakeEnvelope::decode(body) {
            rows.extend(
                env.notifications
                    .iter()
                    .filter_map(|n| n.job_row_number)
                    .filter_map(|r| usize::try_from(r).ok())
                    .map(|r| r + 1),
            );
        }
    }
    rows.sort_unstable();
    rows
}

/// The answer when only some of a job's messages were acknowledged: a 503 (so no client
/// mistakes it for success) that names the job and the rows that WERE accepted. Those rows
/// will be stored and sent under `job_id`; resubmitting only the other rows (or the same
/// request with its Idempotency-Key) completes the job without duplicates.
fn partial_failure(job_id: Uuid, count: usize, rows: Vec<usize>) -> ApiError {
    let n = rows.len();
    tracing::error!(job_id = %job_id, accepted = n, total = count, "bulk job only partly enqueued");
    let message = if n == 0 {
        "Service temporarily unavailable: no rows were accepted, please retry".to_string()
    } else {
        format!(
            "Service temporarily unavailable: only {n} of {count} rows were accepted (job {job_id}, rows listed in accepted_rows); resubmit only the other rows"
        )
    };
    ApiError::unavailable(message)
        .with_extra("job_id", json!(job_id))
        .with_extra("accepted_count", json!(n))
        .with_extra("accepted_rows", json!(ranges(&rows)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ranges() {
        assert_eq!(ranges(&[1, 2, 3, 7, 8, 10]), vec![[1, 3], [7, 8], [10, 10]]);
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn partial_failure_names_the_accepted_rows() {
        let job = Uuid::now_v7();
        let mk = |row: i32| {
            let (id, created_at) = new_notification_id();
            IntakeNotification {
                id,
                service_id: Uuid::from_u128(1),
                template_id: Uuid::from_u128(2),
                template_version: 1,
                process_type: ProcessType::Bulk,
                email_address: "a@b.co".into(),
                personalisation: Default::default(),
                reference: None,
                key_type: floodgate_core::KeyType::Normal,
                api_key_id: None,
                job_id: Some(job),
                job_row_number: Some(row),
                email_reply_to_id: None,
                scheduled_for: None,
                one_click_unsubscribe_url: None,
                job: None,
                created_at,
            }
        };
        let bodies = vec![
            pack_intake(&[mk(0), mk(1)], 262_144).unwrap().remove(0),
            pack_intake(&[mk(2)], 262_144).unwrap().remove(0),
            pack_intake(&[mk(3)], 262_144).unwrap().remove(0),
        ];
        let e = partial_failure(job, 4, accepted_rows(&bodies, &[true, false, true]));
        assert_eq!(e.status, 503);
        assert_eq!(e.extra["accepted_rows"], json!([[1, 2], [4, 4]]));
        assert_eq!(e.extra["accepted_count"], 3);
        assert!(e.message.contains("only 3 of 4 rows"), "{}", e.message);
        let e = partial_failure(job, 4, accepted_rows(&bodies, &[false, false, false]));
        assert_eq!(e.extra["accepted_count"], 0);
        assert!(e.message.contains("no rows were accepted"));
    }
}
