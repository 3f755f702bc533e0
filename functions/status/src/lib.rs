//! `status`: the Notify v2 read API behind API Gateway — `GET /v2/notifications/{id}`,
//! `GET /v2/notifications`, `GET /v2/template/{id}`, `POST /v2/template/{id}/preview`,
//! `GET /v2/jobs/{id}` (a bulk job with its counts per status) — and `GET /_status`. It holds only a reader lane (the type has no writer), so status reads go
//! to the replicas and never queue behind pipeline writes. An unreachable
//! database is a 503 within the lane's acquire/operation timeouts, never a hang.
//!
//! A notification exists here once `persist` has stored it and the replica has replayed
//! it: between ingest's 201 and then (normally well under a second; longer while the
//! database is down, when the queue holds the backlog) the id answers 404 "No result found".

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::Method;
use chrono::Utc;
use floodgate_api::error::from_db;
use floodgate_api::gateway::{self, json_response};
use floodgate_api::{ApiCatalog, ApiError, Caller, JobFields, job_json, job_status, notify_time};
use floodgate_core::KeyType;
use floodgate_core::auth::python_uuid;
use floodgate_core::envelope::created_at_of;
use floodgate_core::keys::may_read;
use floodgate_core::template::{Template, placeholder_names, render_text};
use floodgate_db::catalog::{
    JobRow, NotificationFilter, NotificationRow, TemplateRow, fetch_job, fetch_notification,
    fetch_template_version, list_notifications, list_templates,
};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use uuid::Uuid;

/// Notify's page size for `GET /v2/notifications`.
pub const PAGE_SIZE: i64 = 250;

/// The statuses a client may filter on: Notify's whole enum (`NOTIFICATION_STATUS_TYPES`
/// and the two letter statuses), in its order, since its error message lists them. Only
/// the email ones can match a row here.
const FILTER_STATUSES: &[&str] = &[
    "cancelled",
    "created",
    "sending",
    "sent",
    "delivered",
    "pending",
    "failed",
    "technical-failure",
    "temporary-failure",
    "permanent-failure",
    "pending-virus-check",
    "validation-failed",
    "virus-scan-failed",
    "returned-letter",
    "accepted",
    "received",
];

/// Client input echoed in a message: short, printable, apostrophes stripped (as Notify's
/// `build_error_message` strips them).
fn shown(v: &str) -> String {
    v.chars()
        .filter(|c| !c.is_control() && *c != '\'')
        .take(100)
        .collect()
}

pub struct Status {
    catalog: Arc<ApiCatalog>,
}

enum Route {
    Liveness,
    Notification(String),
    Notifications,
    Template(String),
    TemplateVersion(String, String),
    Templates,
    Preview(String),
    Job(String),
}

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (route, allowed) = match parts.as_slice() {
        ["_status"] => (Route::Liveness, "GET"),
        ["v2", "notifications"] => (Route::Notifications, "GET"),
        // ingest's paths, whatever API Gateway routes here: a concrete path wins over
        // the `{notification_id}` template (OpenAPI's rule; Notify reads them as ids).
        ["v2", "notifications", "email" | "bulk"] => {
            return Err(ApiError::method_not_allowed("POST"));
        }
        ["v2", "notifications", id] => (Route::Notification(id.to_string()), "GET"),
        ["v2", "templates"] => (Route::Templates, "GET"),
        ["v2", "template", id] => (Route::Template(id.to_string()), "GET"),
        ["v2", "template", id, "version", v] => {
            (Route::TemplateVersion(id.to_string(), v.to_string()), "GET")
        }
        ["v2", "template", id, "preview"] => (Route::Preview(id.to_string()), "POST"),
        // A bulk job (GC Notify's `POST /v2/notifications/bulk`) read back. GC Notify reads
        // jobs only through its admin API, `GET /service/{service_id}/job/{job_id}`, which
        // admin credentials reach; here the API key names the service, as on every v2
        // route, so the route is v2's and the service is not in the path. The body is that
        // route's: `{"data": job}` with the counts per status in `data.statistics`.
        ["v2", "jobs", id] => (Route::Job(id.to_string()), "GET"),
        _ => return Err(ApiError::route_not_found()),
    };
    if method.as_str() != allowed {
        return Err(ApiError::method_not_allowed(allowed));
    }
    Ok(route)
}

fn parse_id(s: &str, field: &str) -> Result<Uuid, ApiError> {
    python_uuid(s).ok_or_else(|| ApiError::validation(format!("{field} is not a valid UUID")))
}

/// The list filters, validated as Notify's `get_notifications_request` schema: every
/// error listed, properties in the schema's order, then unexpected ones. `None` when no row
/// can match (only sms or letter asked for; an `older_than` that cannot be ours; a
/// reference no row can hold). Pure.
pub fn list_filter(
    pairs: &[(String, String)],
    key_type: &str,
) -> Result<Option<NotificationFilter>, ApiError> {
    let mut f = NotificationFilter {
        key_type: Some(key_type.to_string()),
        limit: PAGE_SIZE,
        ..Default::default()
    };
    let values = |name: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let mut errors: Vec<String> = Vec::new();
    // Notify keeps only the first reference and older_than (get_notifications.py).
    if let Some(r) = values("reference").first() {
        f.reference = Some(r.to_string());
    }
    // Each repeat of status/template_type is one item; a comma is part of the value, as in
    // Notify.
    for s in values("status") {
        if !FILTER_STATUSES.contains(&s) {
            errors.push(format!(
                "status {} is not one of [{}]",
                shown(s),
                FILTER_STATUSES.join(", ")
            ));
        } else if s == "failed" {
            f.statuses.extend(
                [
                    "technical-failure",
                    "temporary-failure",
                    "permanent-failure",
                ]
                .map(String::from),
            );
        } else {
            f.statuses.push(s.to_string());
        }
    }
    let types = values("template_type");
    for t in &types {
        if !["sms", "email", "letter"].contains(t) {
            errors.push(format!(
                "template_type {} is not one of [sms, email, letter]",
                shown(t)
            ));
        }
    }
    if let Some(j) = values("include_jobs").first() {
        if ["true", "True"].contains(j) {
            f.include_jobs = true;
        } else {
            errors.push(format!(
                "include_jobs {} is not one of [true, True]",
                shown(j)
            ));
        }
    }
    let mut unknown_older_than = false;
    if let Some(o) = values("older_than").first() {
        match python_uuid(o) {
            // Notify answers an id it does not know with an empty page, and an id that
            // carries no creation time cannot be one of ours.
            Some(id) => match created_at_of(id) {
                Some(at) => f.older_than = Some((at, id)),
                None => unknown_older_than = true,
            },
            None => errors.push("older_than is not a valid UUID".into()),
        }
    }
    // Not in Notify's schema: Floodgate's filter for a bulk job's notifications, validated
    // as Notify validates `older_than` (its `uuid` definition).
    if let Some(j) = values("job_id").first() {
        match python_uuid(j) {
            Some(id) => f.job_id = Some(id),
            None => errors.push("job_id is not a valid UUID".into()),
        }
    }
    let mut extras: Vec<&str> = Vec::new();
    for (k, _) in pairs {
        let known = [
            "reference",
            "status",
            "template_type",
            "include_jobs",
            "older_than",
            "job_id",
        ];
        if !known.contains(&k.as_str()) && !extras.contains(&k.as_str()) {
            extras.push(k);
        }
    }
    if !extras.is_empty() {
        let verb = if extras.len() == 1 { "was" } else { "were" };
        let names: Vec<String> = extras.iter().map(|k| shown(k)).collect();
        errors.push(format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            names.join(", ")
        ));
    }
    if let Some(e) = ApiError::validation_all(errors) {
        return Err(e);
    }
    // Only email exists here: asking for sms or letter only is an empty list.
    let only_other_types = !types.is_empty() && !types.contains(&"email");
    // No stored reference holds a NUL (ingest refuses them, PostgreSQL text cannot), so
    // one asked for matches nothing, and is never sent to the database.
    let unstorable_reference = f.reference.as_ref().is_some_and(|r| r.contains('\0'));
    Ok((!only_other_types && !unknown_older_than && !unstorable_reference).then_some(f))
}

/// A stored notification in Notify's v2 shape. Pure.
pub fn notification_json(n: &NotificationRow, base: &str) -> Value {
    let personalisation = n.personalisation.as_object().cloned().unwrap_or_default();
    let template = Template {
        subject: n.template_subject.clone(),
        body: n.template_body.clone(),
    };
    let (subject, body) = match render_text(&template, &personalisation) {
        Ok(r) => (r.subject, r.body),
        Err(_) => (template.subject, template.body),
    };
    json!({
        "id": n.id,
        "reference": n.client_reference,
        "email_address": n.email_address,
        "phone_number": null,
        "line_1": null, "line_2": null, "line_3": null, "line_4": null,
        "line_5": null, "line_6": null, "postcode": null,
        "type": "email",
        "status": n.status,
        "template": {
            "id": n.template_id,
            "version": n.template_version,
            // Notify links the version the notification used (TemplateHistory.get_link).
            "uri": format!("{base}/v2/template/{}/version/{}", n.template_id, n.template_version),
        },
        "body": body,
        "subject": subject,
        "created_at": notify_time(n.created_at),
        "created_by_name": null,
        "sent_at": n.sent_at.map(notify_time),
        "completed_at": n.completed_at.map(notify_time),
        "scheduled_for": n.scheduled_for.map(notify_time),
        "postage": null,
        "one_click_unsubscribe_url": n.one_click_unsubscribe_url,
        // Notify's serialize_with_cost_data: an email costs nothing and its cost is known.
        "cost_details": {},
        "cost_in_pounds": 0.0,
        "is_cost_data_ready": true,
        "job_id": n.job_id,
    })
}

/// A stored job in GC Notify's shape, with its counts per status. Pure.
pub fn job_read_json(j: &JobRow, now: chrono::DateTime<Utc>) -> Value {
    let stored: i64 = j.statistics.iter().map(|(_, n)| n).sum();
    let mut data = job_json(&JobFields {
        id: j.id,
        job_status: job_status(
            stored,
            i64::from(j.notification_count),
            j.scheduled_for,
            now,
        ),
        notification_count: i64::from(j.notification_count),
        original_file_name: &j.original_file_name,
        template_id: j.template_id,
        template_version: j.template_version,
        service_id: j.service_id,
        service_name: &j.service_name,
        created_at: j.created_at,
        scheduled_for: j.scheduled_for,
        sender_id: j.sender_id,
        api_key_id: j.api_key_id,
        key_type: &j.key_type,
    });
    data["statistics"] = j
        .statistics
        .iter()
        .map(|(status, count)| json!({"status": status, "count": count}))
        .collect();
    data
}

fn query_string(pairs: &[(String, String)]) -> String {
    let mut s = String::new();
    for (k, v) in pairs {
        if !s.is_empty() {
            s.push('&');
        }
        s.push_str(&form_encode(k));
        s.push('=');
        s.push_str(&form_encode(v));
    }
    s
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Status {
    /// A reader-lane connection, or the error the client sees when none can be had.
    async fn reader(&self) -> Result<floodgate_db::ReaderConnection, ApiError> {
        self.catalog
            .reader()
            .acquire()
            .await
            .map_err(|e| from_db(&e))
    }

    /// The one constructor.
    pub fn new(catalog: Arc<ApiCatalog>) -> Self {
        Status { catalog }
    }

    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        match self.serve(&req).await {
            Ok(body) => json_response(200, &body),
            Err(e) => e.into_response(),
        }
    }

    async fn serve(&self, req: &ApiGatewayV2httpRequest) -> Result<Value, ApiError> {
        let route = route(gateway::method(req), gateway::path(req))?;
        if let Route::Liveness = route {
            // Liveness touches no database: a database-dependent health check detaches the
            // whole API while the database is merely slow.
            return Ok(json!({"status": "ok"}));
        }
        let caller = self
            .catalog
            .authenticate(
                gateway::header(req, "authorization"),
                Utc::now().timestamp(),
            )
            .await?;
        let base = gateway::base_url(req);
        match route {
            Route::Liveness => Ok(json!({"status": "ok"})),
            Route::Notification(id) => self.notification(&caller, &id, &base).await,
            Route::Notifications => self.notifications(&caller, req, &base).await,
            Route::Template(id) => self.template(&caller, &id).await,
            Route::TemplateVersion(id, v) => self.template_version(&caller, &id, &v).await,
            Route::Templates => self.templates(&caller, req).await,
            Route::Preview(id) => self.preview(&caller, &id, req).await,
            Route::Job(id) => self.job(&caller, &id).await,
        }
    }

    async fn notification(&self, caller: &Caller, id: &str, base: &str) -> Result<Value, ApiError> {
        let id = parse_id(id, "notification_id")?;
        let conn = self.reader().await?;
        let row = conn
            .bounded(fetch_notification(&conn, caller.service_id, id))
            .await
            .map_err(|e| from_db(&e))?;
        match row {
            // A test key's notifications are its own world: no other key type sees them,
            // and a test key sees nothing else.
            Some(n) if may_read(caller.key_type, n.key_type) => Ok(notification_json(&n, base)),
            _ => Err(ApiError::no_result()),
        }
    }

    /// One job of the caller's service; another service's job is not found.
    async fn job(&self, caller: &Caller, id: &str) -> Result<Value, ApiError> {
        let id = parse_id(id, "job_id")?;
        let conn = self.reader().await?;
        let job = conn
            .bounded(fetch_job(&conn, caller.service_id, id))
            .await
            .map_err(|e| from_db(&e))?
            // A test key's job is read only by test keys, as its notifications are.
            .filter(|j| KeyType::parse(&j.key_type).is_some_and(|k| may_read(caller.key_type, k)))
            .ok_or_else(ApiError::no_result)?;
        Ok(json!({"data": job_read_json(&job, Utc::now())}))
    }

    async fn notifications(
        &self,
        caller: &Caller,
        req: &ApiGatewayV2httpRequest,
        base: &str,
    ) -> Result<Value, ApiError> {
        let pairs = gateway::query_pairs(req);
        let filter = list_filter(&pairs, caller.key_type.as_str())?;
        let rows = match &filter {
            None => Vec::new(),
            Some(f) => {
                let conn = self.reader().await?;
                conn.bounded(list_notifications(&conn, caller.service_id, f))
                    .await
                    .map_err(|e| from_db(&e))?
            }
        };
        let current = if pairs.is_empty() {
            format!("{base}/v2/notifications")
        } else {
            format!("{base}/v2/notifications?{}", query_string(&pairs))
        };
        let mut links = Map::new();
        links.insert("current".into(), json!(current));
        // Notify links a next page from every non-empty page; the client's iterator
        // stops at the first empty one.
        if let Some(last) = rows.last() {
            let mut next: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(k, _)| k != "older_than")
                .collect();
            next.push(("older_than".into(), last.id.to_string()));
            links.insert(
                "next".into(),
                json!(format!("{base}/v2/notifications?{}", query_string(&next))),
            );
        }
        Ok(json!({
            "notifications": rows.iter().map(|n| notification_json(n, base)).collect::<Vec<_>>(),
            "links": links,
        }))
    }

    async fn owned_template(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Arc<floodgate_db::catalog::TemplateRow>, ApiError> {
        // Notify validates the path's template id as the schema property `id`
        // (app/v2/template/template_schemas.py).
        let id = parse_id(id, "id")?;
        match self.catalog.template(id).await? {
            Some(t) if t.service_id == caller.service_id => Ok(t),
            _ => Err(ApiError::no_result()),
        }
    }

    async fn template(&self, caller: &Caller, id: &str) -> Result<Value, ApiError> {
        let t = self.owned_template(caller, id).await?;
        Ok(template_json(&t))
    }

    async fn templates(
        &self,
        caller: &Caller,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<Value, ApiError> {
        if !templates_filter(&gateway::query_pairs(req))? {
            return Ok(json!({"templates": []}));
        }
        let conn = self.reader().await?;
        let rows = conn
            .bounded(list_templates(&conn, caller.service_id))
            .await
            .map_err(|e| from_db(&e))?;
        Ok(json!({
            "templates": rows.iter().filter(|t| !t.archived).map(template_json).collect::<Vec<_>>(),
        }))
    }

    async fn template_version(
        &self,
        caller: &Caller,
        id: &str,
        version: &str,
    ) -> Result<Value, ApiError> {
        // Notify's route only matches an integer version (`<int:version>`: digits only);
        // anything else is not a route.
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::route_not_found());
        }
        let Ok(version) = version.parse::<i32>() else {
            // More digits than any version can have.
            return Err(ApiError::no_result());
        };
        let t = self.owned_template(caller, id).await?;
        if version == 0 {
            // get_template.py reads version 0 as "no version" (`if version:`): the
            // current template.
            return Ok(template_json(&t));
        }
        let conn = self.reader().await?;
        let row = conn
            .bounded(fetch_template_version(&conn, t.id, version))
            .await
            .map_err(|e| from_db(&e))?;
        match row {
            Some(v) => Ok(template_json(&v)),
            None => Err(ApiError::no_result()),
        }
    }
    async fn preview(
        &self,
        caller: &Caller,
        id: &str,
        req: &ApiGatewayV2httpRequest,
    ) -> Result<Value, ApiError> {
        let t = self.owned_template(caller, id).await?;
        let body = gateway::body_bytes(req)?;
        let personalisation = preview_personalisation(&body)?;
        let rendered = render_text(
            &Template {
                subject: t.subject.clone(),
                body: t.body.clone(),
            },
            &personalisation,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(json!({
            "id": t.id,
            "type": "email",
            "version": t.version,
            "body": rendered.body,
            "html": null,
            "subject": rendered.subject,
            "postage": null,
        }))
    }
}

/// The preview request, as Notify's `post_template_preview_request`: `personalisation` an
/// object if present; other properties are ignored (that schema does not forbid them). An
/// empty or falsy body is no personalisation. Pure.
pub fn preview_personalisation(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Invalid JSON supplied in POST data"))?;
    let m = match v {
        Value::Object(m) => m,
        Value::Null | Value::Bool(false) => Map::new(),
        Value::Array(a) if a.is_empty() => Map::new(),
        Value::String(s) if s.is_empty() => Map::new(),
        Value::Number(n) if n.as_f64() == Some(0.0) => Map::new(),
        // Notify fails with a 500 here (it sets a key on the list); a 400 says why.
        other => {
            return Err(ApiError::validation(format!(
                "{} is not of type object",
                shown(&other.to_string())
            )));
        }
    };
    match m.get("personalisation") {
        None => Ok(Map::new()),
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(other) => Err(ApiError::validation(format!(
            "personalisation {} is not of type object",
            shown(&python_repr(other))
        ))),
    }
}

/// `repr()` of the value Python's json module decodes `v` into (jsonschema's type errors
/// print it).
fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => format!("'{s}'"),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// Validates `GET /v2/templates` parameters with Notify's messages; `false` when the
/// type asked for can hold no email template. Pure.
pub fn templates_filter(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    let mut email = true;
    for (k, v) in pairs {
        match k.as_str() {
            "type" => match v.as_str() {
                "email" => email = true,
                "sms" | "letter" => email = false,
                other => {
                    let shown: String = other
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(100)
                        .collect();
                    return Err(ApiError::validation(format!(
                        "type {shown} is not one of [sms, email, letter]"
                    )));
                }
            },
            other => {
                let shown: String = other
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(100)
                    .collect();
                return Err(ApiError::validation(format!(
                    "Additional properties are not allowed ({shown} was unexpected)"
                )));
            }
        }
    }
    Ok(email)
}

/// A template (or one of its versions) in Notify's v2 shape. Pure.
fn template_json(t: &TemplateRow) -> Value {
    let names = placeholder_names(&Template {
        subject: t.subject.clone(),
        body: t.body.clone(),
    });
    let personalisation: Map<String, Value> = names
        .into_iter()
        .map(|n| (n, json!({"required": true})))
        .collect();
    json!({
        "id": t.id,
        "type": "email",
        "created_at": notify_time(t.created_at),
        "updated_at": t.updated_at.map(notify_time),
        "created_by": null,
        "version": t.version,
        "body": t.body,
        "subject": t.subject,
        "name": t.name,
        "personalisation": personalisation,
        "postage": null,
        "letter_contact_block": null,
        "process_type": t.process_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route(&Method::GET, "/_status"),
            Ok(Route::Liveness)
        ));
        assert!(matches!(
            route(&Method::GET, "/v2/notifications/"),
            Ok(Route::Notifications)
        ));
        assert!(matches!(
            route(&Method::GET, "/v2/notifications/x"),
            Ok(Route::Notification(_))
        ));
        assert!(matches!(
            route(&Method::POST, "/v2/template/x/preview"),
            Ok(Route::Preview(_))
        ));
        let e = route(&Method::DELETE, "/v2/notifications/email").err();
        assert_eq!(e.map(|e| (e.status, e.allow)), Some((405, Some("POST"))));
        let e = route(&Method::GET, "/v2/notifications/bulk").err();
        assert_eq!(e.map(|e| (e.status, e.allow)), Some((405, Some("POST"))));
        let e = route(&Method::POST, "/v2/template/x").err();
        assert_eq!(e.map(|e| (e.status, e.allow)), Some((405, Some("GET"))));
        assert_eq!(
            route(&Method::GET, "/v3").err().map(|e| e.status),
            Some(404)
        );
        assert!(matches!(
            route(&Method::GET, "/v2/jobs/x"),
            Ok(Route::Job(_))
        ));
        assert_eq!(
            route(&Method::POST, "/v2/jobs/x").err().map(|e| e.status),
            Some(405)
        );
    }

    #[test]
    fn a_job_id_filter_is_a_uuid() {
        let id = Uuid::now_v7();
        let f = list_filter(&p(&[("job_id", &id.to_string())]), "normal")
            .unwrap()
            .unwrap();
        assert_eq!(f.job_id, Some(id));
        let e = list_filter(&p(&[("job_id", "nope")]), "normal").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "job_id is not a valid UUID")
        );
    }

    #[test]
    fn a_job_reads_with_its_counts_and_status() {
        let now = Utc::now();
        let job = JobRow {
            id: Uuid::now_v7(),
            service_id: Uuid::now_v7(),
            service_name: "svc".into(),
            template_id: Uuid::now_v7(),
            template_version: 2,
            original_file_name: "march.csv".into(),
            notification_count: 3,
            created_at: now,
            scheduled_for: None,
            sender_id: None,
            api_key_id: None,
            key_type: "normal".into(),
            statistics: vec![("created".into(), 1), ("delivered".into(), 1)],
        };
        let v = job_read_json(&job, now);
        assert_eq!(v["job_status"], "in progress");
        assert_eq!(v["notification_count"], 3);
        assert_eq!(v["original_file_name"], "march.csv");
        assert_eq!(
            v["statistics"],
            json!([{"status": "created", "count": 1}, {"status": "delivered", "count": 1}])
        );
    }

    #[test]
    fn filters() {
        let f = list_filter(
            &p(&[
                ("status", "failed"),
                ("status", "delivered"),
                ("reference", "r"),
            ]),
            "normal",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            f.statuses,
            vec![
                "technical-failure",
                "temporary-failure",
                "permanent-failure",
                "delivered"
            ]
        );
        assert_eq!(f.reference.as_deref(), Some("r"));
        assert_eq!(f.limit, 250);
        assert_eq!(f.key_type.as_deref(), Some("normal"));
        let id = Uuid::now_v7();
        let f = list_filter(&p(&[("older_than", &id.to_string())]), "test")
            .unwrap()
            .unwrap();
        assert_eq!(f.older_than.map(|o| o.1), Some(id));
        assert!(
            list_filter(&p(&[("template_type", "sms")]), "normal")
                .unwrap()
                .is_none()
        );
        assert!(
            list_filter(
                &p(&[("template_type", "sms"), ("template_type", "email")]),
                "normal"
            )
            .unwrap()
            .is_some()
        );
        // alphagov/notifications-api app/v2/notifications/get_notifications.py: repeats are
        // the list; a comma is part of one value.
        assert!(list_filter(&p(&[("status", "sending,delivered")]), "normal").is_err());
        // Every error, in the schema's order.
        let e = list_filter(
            &p(&[
                ("colour", "red"),
                ("older_than", "x"),
                ("status", "lost"),
                ("template_type", "fax"),
                ("status", "gone"),
                ("size", "1"),
            ]),
            "normal",
        )
        .unwrap_err();
        let m = e.messages();
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(m[0].starts_with("status lost is not one of [cancelled, created,"));
        assert!(m[1].starts_with("status gone is not one of"));
        assert!(m[1].ends_with("returned-letter, accepted, received]"));
        assert_eq!(m[2], "template_type fax is not one of [sms, email, letter]");
        assert_eq!(m[3], "older_than is not a valid UUID");
        assert_eq!(
            m[4],
            "Additional properties are not allowed (colour, size were unexpected)"
        );
        let e = list_filter(&p(&[("status", "lost")]), "normal").unwrap_err();
        assert!(
            e.message.starts_with("status lost is not one of ["),
            "{}",
            e.message
        );
        let e = list_filter(&p(&[("template_type", "fax")]), "normal").unwrap_err();
        assert_eq!(
            e.message,
            "template_type fax is not one of [sms, email, letter]"
        );
        let e = list_filter(&p(&[("older_than", "x")]), "normal").unwrap_err();
        assert_eq!(e.message, "older_than is not a valid UUID");
        // A v4 id can never be a stored notification: an empty page, not an error.
        assert!(
            list_filter(&p(&[("older_than", &Uuid::new_v4().to_string())]), "normal")
                .unwrap()
                .is_none()
        );
        assert!(
            list_filter(&p(&[("reference", "a\0b")]), "normal")
                .unwrap()
                .is_none()
        );
        assert_eq!(
            list_filter(&p(&[("colour", "x")]), "normal")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn preview_bodies() {
        assert!(preview_personalisation(b"").unwrap().is_empty());
        assert_eq!(
            preview_personalisation(br#"{"personalisation":{"a":1}}"#).unwrap()["a"],
            1
        );
        assert_eq!(
            preview_personalisation(b"{").unwrap_err().error,
            "BadRequestError"
        );
        // post_template_preview_request does not forbid other properties.
        assert!(preview_personalisation(br#"{"x":1}"#).unwrap().is_empty());
        assert_eq!(
            preview_personalisation(br#"{"personalisation":[1, "a"]}"#)
                .unwrap_err()
                .message,
            "personalisation [1, a] is not of type object"
        );
    }

    #[test]
    fn query_strings_round_trip() {
        assert_eq!(
            query_string(&p(&[("reference", "a b&c"), ("status", "sending")])),
            "reference=a%20b%26c&status=sending"
        );
    }
}
