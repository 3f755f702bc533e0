//! The public API end to end: `ingest` and `status` handlers against real PostgreSQL
//! (primary + streaming replica behind PgBouncer), the embedded queue, `persist` driven by
//! hand, keys and templates made by the admin code, the local HTTP front, and GOV.UK
//! Notify's published Python client. Each test owns its service.

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::http::{HeaderMap, HeaderValue, Method};
use floodgate_admin::{
    IssuedKey, archive_service, create_service, issue_key, put_template, revoke_key,
};
use floodgate_api::gateway::{request, response_text};
use floodgate_api::{ApiCatalog, CachePolicy};
use floodgate_aws::{OutgoingMessage, Queue, QueueError, QueueSender};
use floodgate_core::auth::{SecretBox, generate_encryption_key, sign_jwt};
use floodgate_core::{KeyType, Knobs, ProcessType, QueueName};
use floodgate_db::catalog::{ServiceRow, TemplateRow};
use floodgate_db::tokio_postgres::types::Type;
use floodgate_db::{LaneConfig, LaneKind, ReaderLane, WriterLane};
use floodgate_e2e::*;
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue};
use floodgate_ingest::{Ingest, RetryPolicy};
use floodgate_local::{LocalStack, StackOptions};
use floodgate_persist::Persist;
use floodgate_status::Status;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

static SECRETS: std::sync::OnceLock<Arc<SecretBox>> = std::sync::OnceLock::new();

/// One encryption key for the whole binary (admin seals with it, the API opens with it).
fn secrets() -> Arc<SecretBox> {
    SECRETS
        .get_or_init(|| Arc::new(SecretBox::from_base64(&generate_encryption_key()).expect("key")))
        .clone()
}

const BODY: &str = "Dear ((name)),\n\nYour code is ((code)).";

struct Api {
    writer: WriterLane,
    queue: Arc<EmbeddedQueue>,
    ingest: Ingest,
    status: Status,
    service: ServiceRow,
    key: IssuedKey,
    template: TemplateRow,
}

/// The local HTTP front on a free loopback port, over an `ingest` and a `status` on the
/// replica and `api`'s queue: its base URL and the server task.
async fn serve_front(
    stack: &LocalStack,
    api: &Api,
) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (ingest, status) = api_on(
        reader_lane(stack).await,
        api.queue.clone(),
        CachePolicy::default(),
    );
    let server = tokio::spawn(floodgate_local::topology::front::serve(
        listener,
        Arc::new(ingest),
        Arc::new(status),
    ));
    (base, server)
}

fn api_on(
    reader: ReaderLane,
    queue: Arc<dyn QueueSender>,
    policy: CachePolicy,
) -> (Ingest, Status) {
    let catalog = Arc::new(ApiCatalog::new(reader, secrets(), policy));
    let ingest = Ingest::new(
        catalog.clone(),
        queue,
        Arc::new(EmbeddedLimitStore::new()),
        &Knobs::embedded(),
    )
    .with_retry(RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(20),
    });
    (ingest, Status::new(catalog))
}

/// A service with a key and a template, made by the admin code, visible on the replica.
async fn setup(stack: &LocalStack, process_type: ProcessType) -> Api {
    let f = service_fixture_with(stack, process_type, BODY, secrets()).await;
    let (writer, service, key, template) = (f.writer, f.service, f.key, f.template);
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let (ingest, status) = api_on(
        reader_lane(stack).await,
        queue.clone(),
        CachePolicy::default(),
    );
    Api {
        writer,
        queue,
        ingest,
        status,
        service,
        key,
        template,
    }
}

/// Waits until the replica has replayed everything committed on the primary so far. Uses
/// the WAL *insert* position: with `synchronous_commit = off` (the test stack's setting) a
/// commit record can still sit in WAL buffers, beyond `pg_current_wal_lsn()`.
async fn replica_caught_up(stack: &LocalStack) {
    use floodgate_db::tokio_postgres::{NoTls, connect};
    let (primary, c1) = connect(&stack.primary_url(), NoTls).await.expect("primary");
    tokio::spawn(c1);
    let (replica, c2) = connect(&stack.replica_url(), NoTls).await.expect("replica");
    tokio::spawn(c2);
    let rows = primary
        .simple_query("SELECT pg_current_wal_insert_lsn()::text")
        .await
        .expect("lsn");
    let target = floodgate_local::services::first_value(&rows).expect("an LSN");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let q = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        let r = replica.simple_query(&q).await.expect("replay position");
        if floodgate_local::services::first_value(&r).as_deref() == Some("t") {
            return;
        }
        assert!(Instant::now() < deadline, "replica did not reach {target}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn jwt_for(key: &IssuedKey) -> String {
    let secret = &key.key[key.key.len() - 36..];
    format!(
        "Bearer {}",
        sign_jwt(key.service_id, secret, chrono::Utc::now().timestamp())
    )
}

fn req(
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<String>,
) -> ApiGatewayV2httpRequest {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.test"));
    if let Some(a) = auth {
        h.insert("authorization", HeaderValue::from_str(a).expect("header"));
    }
    request(method, path, h, body)
}

async fn ingest_call(api: &Api, path: &str, auth: Option<&str>, body: Value) -> (i64, Value) {
    let r = api
        .ingest
        .handle(req(Method::POST, path, auth, Some(body.to_string())))
        .await;
    (
        r.status_code,
        serde_json::from_str(&response_text(&r)).expect("JSON response"),
    )
}

async fn status_call(api: &Api, method: Method, path: &str, body: Option<Value>) -> (i64, Value) {
    let r = api
        .status
        .handle(req(
            method,
            path,
            Some(&jwt_for(&api.key)),
            body.map(|b| b.to_string()),
        ))
        .await;
    (
        r.status_code,
        serde_json::from_str(&response_text(&r)).expect("JSON response"),
    )
}

fn email_body(api: &Api, email: &str) -> Value {
    json!({
        "email_address": email,
        "template_id": api.template.id,
        "personalisation": {"name": "Ada <b>", "code": 1234},
        "reference": "ref-1",
    })
}

/// Receives everything on `process_type`'s intake queue, runs `persist` over it in batches of 10,
/// deletes what it stored; returns the notifications persisted.
async fn persist_all(
    queue: &Arc<EmbeddedQueue>,
    writer: WriterLane,
    process_type: ProcessType,
) -> u64 {
    let persist = Persist::new(writer, queue.clone(), Arc::new(Knobs::embedded()));
    let mut inserted = 0;
    loop {
        let msgs = queue
            .receive(
                QueueName::Intake(process_type),
                10,
                Duration::from_millis(100),
            )
            .await
            .expect("receive");
        if msgs.is_empty() {
            return inserted;
        }
        let bodies: Vec<String> = msgs.iter().map(|m| m.body.clone()).collect();
        let (resp, report) = persist.handle(sqs_event(&bodies)).await.expect("persist");
        assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
        inserted += report.inserted;
        let handles: Vec<String> = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
        queue
            .delete_batch(QueueName::Intake(process_type), &handles)
            .await
            .expect("delete");
    }
}

fn error_of(v: &Value) -> (String, String) {
    (
        v["errors"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test]
async fn an_email_is_accepted_enqueued_persisted_and_read_back() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Priority).await;
    let (code, body) = ingest_call(
        &api,
        "/v2/notifications/email",
        Some(&jwt_for(&api.key)),
        email_body(&api, "ada@example.com"),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let id = Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid");
    assert_eq!(body["reference"], "ref-1");
    assert_eq!(
        body["uri"],
        format!("https://api.test/v2/notifications/{id}")
    );
    assert_eq!(body["template"]["id"], api.template.id.to_string());
    assert_eq!(body["template"]["version"], 1);
    assert_eq!(body["content"]["subject"], "Hello Ada &lt;b&gt;");
    assert_eq!(
        body["content"]["body"],
        // Raw, as Notify's content.body (create_post_email_response_from_notification):
        // escaping belongs to the HTML part only.
        "Dear Ada <b>,\n\nYour code is 1234."
    );
    assert_eq!(body["content"]["from_email"], "notify@example.gov");
    // On the template's process type, and only there.
    let depth = |q: QueueName| api.queue.stats(q);
    assert_eq!(
        depth(QueueName::Intake(ProcessType::Priority))
            .await
            .unwrap()
            .visible,
        1
    );
    assert_eq!(
        depth(QueueName::Intake(ProcessType::Normal))
            .await
            .unwrap()
            .visible,
        0
    );

    // Accepted but not persisted yet: Notify's 404.
    let (code, nf) = status_call(&api, Method::GET, &format!("/v2/notifications/{id}"), None).await;
    assert_eq!(
        (code, error_of(&nf)),
        (404, ("NoResultFound".into(), "No result found".into()))
    );

    assert_eq!(
        persist_all(&api.queue, api.writer.clone(), ProcessType::Priority).await,
        1
    );
    replica_caught_up(&stack).await;
    let (code, n) = status_call(&api, Method::GET, &format!("/v2/notifications/{id}"), None).await;
    assert_eq!(code, 200, "{n}");
    assert_eq!(n["id"], id.to_string());
    assert_eq!(n["status"], "created");
    assert_eq!(n["type"], "email");
    assert_eq!(n["email_address"], "ada@example.com");
    assert_eq!(n["subject"], "Hello Ada &lt;b&gt;");
    assert_eq!(n["body"], body["content"]["body"]);
    assert_eq!(n["reference"], "ref-1");
    assert_eq!(n["template"]["version"], 1);
    let created = chrono::DateTime::parse_from_rfc3339(n["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        Some(created.with_timezone(&chrono::Utc)),
        floodgate_core::envelope::created_at_of(id)
    );

    let (code, list) = status_call(
        &api,
        Method::GET,
        "/v2/notifications?reference=ref-1&status=created",
        None,
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["notifications"].as_array().unwrap().len(), 1);
    assert!(
        list["links"]["current"]
            .as_str()
            .unwrap()
            .starts_with("https://api.test/v2/notifications?")
    );
    // alphagov/notifications-api app/v2/notifications/get_notifications.py (_build_links):
    // every non-empty page links the next one.
    assert!(
        list["links"]["next"]
            .as_str()
            .unwrap()
            .contains("older_than="),
        "{list}"
    );
    let (_, none) = status_call(
        &api,
        Method::GET,
        "/v2/notifications?status=delivered",
        None,
    )
    .await;
    assert_eq!(none["notifications"].as_array().unwrap().len(), 0);
    let (_, sms) = status_call(
        &api,
        Method::GET,
        "/v2/notifications?template_type=sms",
        None,
    )
    .await;
    assert_eq!(sms["notifications"].as_array().unwrap().len(), 0);

    let (code, t) = status_call(
        &api,
        Method::GET,
        &format!("/v2/template/{}", api.template.id),
        None,
    )
    .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(
        t["personalisation"],
        json!({"name": {"required": true}, "code": {"required": true}})
    );
    assert_eq!(t["version"], 1);
    let (code, p) = status_call(
        &api,
        Method::POST,
        &format!("/v2/template/{}/preview", api.template.id),
        Some(json!({"personalisation": {"name": "Bo", "code": "x"}})),
    )
    .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["subject"], "Hello Bo");
    let (code, p) = status_call(
        &api,
        Method::POST,
        &format!("/v2/template/{}/preview", api.template.id),
        Some(json!({"personalisation": {"name": "Bo"}})),
    )
    .await;
    assert_eq!(
        (code, error_of(&p)),
        (
            400,
            (
                "BadRequestError".into(),
                "Missing personalisation: code".into()
            )
        )
    );
    let live = api
        .status
        .handle(req(Method::GET, "/_status", None, None))
        .await;
    assert_eq!(live.status_code, 200);
}

#[tokio::test]
async fn the_list_pages_newest_first_by_250() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    // Store 260 notifications directly (what persist does), all for this service.
    let mut batch: Vec<_> = (0..260)
        .map(|i| {
            let mut n = notification(api.service.id, ProcessType::Normal, i);
            n.template_id = api.template.id;
            personalise(&mut n, "code", json!(i));
            n
        })
        .collect();
    batch
        .iter_mut()
        .for_each(|n| n.reference = Some("paged".into()));
    let conn = api.writer.acquire().await.unwrap();
    conn.bounded(floodgate_db::insert_notifications(&conn, &batch))
        .await
        .unwrap();
    drop(conn);
    replica_caught_up(&stack).await;
    let (code, page1) =
        status_call(&api, Method::GET, "/v2/notifications?reference=paged", None).await;
    assert_eq!(code, 200, "{page1}");
    let ids: Vec<String> = page1["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 250);
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest (highest UUIDv7) first");
    let next = page1["links"]["next"]
        .as_str()
        .expect("a next link")
        .to_string();
    assert!(next.contains(&format!("older_than={}", ids[249])), "{next}");
    let path = next.trim_start_matches("https://api.test");
    let (_, page2) = status_call(&api, Method::GET, path, None).await;
    assert_eq!(page2["notifications"].as_array().unwrap().len(), 10);
    // Notify links a next page from every non-empty page and stops at the empty one
    // (alphagov/notifications-api app/v2/notifications/get_notifications.py).
    let next = page2["links"]["next"].as_str().expect("a next link");
    let (_, page3) = status_call(
        &api,
        Method::GET,
        next.trim_start_matches("https://api.test"),
        None,
    )
    .await;
    assert_eq!(page3["notifications"].as_array().unwrap().len(), 0);
    assert!(page3["links"].get("next").is_none(), "{page3}");
    // An id Notify does not know is an empty page, not an error.
    let unknown = format!(
        "/v2/notifications?reference=paged&older_than={}",
        uuid::Uuid::new_v4()
    );
    let (code, empty) = status_call(&api, Method::GET, &unknown, None).await;
    assert_eq!(code, 200, "{empty}");
    assert_eq!(empty["notifications"].as_array().unwrap().len(), 0);
}

/// alphagov/notifications-api app/v2/template/get_template.py (route
/// `/<template_id>/version/<int:version>`) and tests/app/v2/template/test_get_template.py.
#[tokio::test]
async fn each_template_version_reads_back() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    put_template(
        &api.writer,
        api.service.id,
        Some(api.template.id),
        "welcome",
        "Hi ((name))",
        "Version two",
        ProcessType::Normal,
    )
    .await
    .expect("version 2");
    replica_caught_up(&stack).await;
    let path = |v: &str| format!("/v2/template/{}/version/{v}", api.template.id);
    let (code, v1) = status_call(&api, Method::GET, &path("1"), None).await;
    assert_eq!(code, 200, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["subject"], "Hello ((name))");
    assert_eq!(v1["body"], BODY);
    assert!(v1["updated_at"].is_null(), "{v1}");
    let (code, v2) = status_call(&api, Method::GET, &path("2"), None).await;
    assert_eq!(code, 200, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["subject"], "Hi ((name))");
    assert_eq!(v2["body"], "Version two");
    assert_eq!(v2["personalisation"], json!({"name": {"required": true}}));
    assert!(v2["updated_at"].is_string(), "{v2}");
    let (code, missing) = status_call(&api, Method::GET, &path("3"), None).await;
    assert_eq!(code, 404, "{missing}");
    assert_eq!(missing["errors"][0]["message"], "No result found");
    let (code, _) = status_call(&api, Method::GET, &path("two"), None).await;
    assert_eq!(code, 404);
}

/// alphagov/notifications-api app/v2/templates/get_templates.py and
/// app/v2/templates/templates_schemas.py (`type` enum, no other parameter).
#[tokio::test]
async fn the_templates_list_has_the_service_s_email_templates() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    let other = put_template(
        &api.writer,
        api.service.id,
        None,
        "another",
        "Second ((x))",
        "Body",
        ProcessType::Bulk,
    )
    .await
    .expect("template");
    replica_caught_up(&stack).await;
    for path in ["/v2/templates", "/v2/templates?type=email"] {
        let (code, list) = status_call(&api, Method::GET, path, None).await;
        assert_eq!(code, 200, "{list}");
        let ids: Vec<&str> = list["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        let (a, w) = (other.id.to_string(), api.template.id.to_string());
        // Ordered by name, as Notify's dao_get_all_templates_for_service.
        assert_eq!(ids, vec![a.as_str(), w.as_str()], "{path}");
        assert_eq!(list["templates"][0]["subject"], "Second ((x))");
        assert_eq!(list["templates"][0]["type"], "email");
    }
    let (code, sms) = status_call(&api, Method::GET, "/v2/templates?type=sms", None).await;
    assert_eq!(code, 200, "{sms}");
    assert_eq!(sms["templates"], json!([]));
    let (code, bad) = status_call(&api, Method::GET, "/v2/templates?type=fax", None).await;
    assert_eq!(code, 400, "{bad}");
    assert_eq!(
        bad["errors"][0]["message"],
        "type fax is not one of [sms, email, letter]"
    );
    let (code, bad) = status_call(&api, Method::GET, "/v2/templates?colour=red", None).await;
    assert_eq!(code, 400, "{bad}");
    assert_eq!(
        bad["errors"][0]["message"],
        "Additional properties are not allowed (colour was unexpected)"
    );
}

#[tokio::test]
async fn every_error_has_notify_s_status_and_shape_and_enqueues_nothing() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    let other = setup(&stack, ProcessType::Normal).await;
    let auth = jwt_for(&api.key);
    let tid = api.template.id;
    let big = "x".repeat(51_200);
    let cases: Vec<(&str, &str, Value, i64, &str, String)> = vec![
        ("malformed JSON", "/v2/notifications/email", Value::Null, 400, "BadRequestError", "Invalid JSON supplied in POST data".into()),
        ("unknown field", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": tid, "colour": "red"}), 400, "ValidationError", "Additional properties are not allowed (colour was unexpected)".into()),
        ("wrong type", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": tid, "personalisation": "x"}), 400, "ValidationError", "personalisation x is not of type object".into()),
        ("invalid email", "/v2/notifications/email", json!({"email_address": "not-an-address", "template_id": tid}), 400, "ValidationError", "email_address Not a valid email address".into()),
        ("invalid uuid", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": "123"}), 400, "ValidationError", "template_id is not a valid UUID".into()),
        ("unknown template", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": Uuid::now_v7()}), 400, "BadRequestError", "Template not found".into()),
        ("another service's template", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": other.template.id, "personalisation": {"name": "a", "code": 1}}), 400, "BadRequestError", "Template not found".into()),
        ("missing personalisation", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": tid, "personalisation": {"Name": "x"}}), 400, "BadRequestError", "Missing personalisation: code".into()),
        ("oversized personalisation", "/v2/notifications/email", json!({"email_address": "a@b.co", "template_id": tid, "personalisation": {"name": big, "code": 1}}), 400, "ValidationError", "Personalisation variables size of 51220 bytes is greater than allowed limit of 51200 bytes.".into()),
        ("bulk with a bad row", "/v2/notifications/bulk", json!({"name": "j", "template_id": tid, "rows": [["email address", "name", "code"], ["a@b.co", "A", "1"], ["nope", "B", "2"], ["c@d.co", "C", ""]]}), 400, "BadRequestError", "Some rows have errors. Row 2 - `email address`: invalid recipient. Row 3 - Missing personalisation: code.".into()),
    ];
    for (what, path, body, status, error, message) in cases {
        let r = api
            .ingest
            .handle(req(
                Method::POST,
                path,
                Some(&auth),
                Some(if body.is_null() {
                    "{\"email_address\": ".into()
                } else {
                    body.to_string()
                }),
            ))
            .await;
        let v: Value = serde_json::from_str(&response_text(&r)).expect("JSON");
        assert_eq!(r.status_code, status, "{what}: {v}");
        assert_eq!(v["status_code"], status, "{what}");
        assert_eq!(error_of(&v), (error.to_string(), message), "{what}");
    }

    // Authentication.
    let secret = &api.key.key[api.key.key.len() - 36..];
    // Sign at the start of a second so the handler's clock reads the same second.
    while chrono::Utc::now().timestamp_subsec_millis() > 500 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = chrono::Utc::now().timestamp();
    let at = |iat: i64| format!("Bearer {}", sign_jwt(api.service.id, secret, iat));
    let auth_cases: Vec<(&str, Option<String>, i64, &str)> = vec![
        (
            "no Authorization header",
            None,
            401,
            "Unauthorized: authentication token must be provided",
        ),
        (
            "wrong scheme",
            Some("Basic dXNlcjpwYXNz".into()),
            401,
            "Unauthorized: authentication bearer scheme must be used",
        ),
        (
            "malformed token",
            Some("Bearer not-a-jwt".into()),
            403,
            "Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header",
        ),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                sign_jwt(api.service.id, "0f0e0d0c-0000-4000-8000-000000000000", now)
            )),
            403,
            "Invalid token: API key not found",
        ),
        (
            "iat 31 s old",
            Some(at(now - 31)),
            403,
            "Error: Your system clock must be accurate to within 30 seconds",
        ),
        (
            "iat 31 s ahead",
            Some(at(now + 31)),
            403,
            "Error: Your system clock must be accurate to within 30 seconds",
        ),
        (
            "unknown service",
            Some(format!("Bearer {}", sign_jwt(Uuid::now_v7(), secret, now))),
            403,
            "Invalid token: service not found",
        ),
        (
            "unknown ApiKey-v1",
            Some(format!(
                "ApiKey-v1 live-{}-{}",
                api.service.id,
                Uuid::new_v4()
            )),
            403,
            "Invalid token: API key not found",
        ),
    ];
    for (what, header, status, message) in auth_cases {
        let (code, v) = ingest_call(
            &api,
            "/v2/notifications/email",
            header.as_deref(),
            email_body(&api, "a@b.co"),
        )
        .await;
        assert_eq!(
            (code, v["status_code"].as_i64()),
            (status, Some(status)),
            "{what}: {v}"
        );
        assert_eq!(
            error_of(&v),
            ("AuthError".to_string(), message.to_string()),
            "{what}"
        );
    }
    // The ApiKey-v1 form of the real key works, whole or secret alone.
    let (code, v) = ingest_call(
        &api,
        "/v2/notifications/email",
        Some(&format!("ApiKey-v1 {}", api.key.key)),
        email_body(&api, "a@b.co"),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = ingest_call(
        &api,
        "/v2/notifications/email",
        Some(&format!("ApiKey-v1 {secret}")),
        email_body(&api, "a@b.co"),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let accepted = api
        .queue
        .stats(QueueName::Intake(ProcessType::Normal))
        .await
        .unwrap()
        .visible;
    assert_eq!(accepted, 2, "only the two valid requests were enqueued");

    // Revoked key and archived service (fresh services, so no instance has them cached).
    let revoked = setup(&stack, ProcessType::Normal).await;
    revoke_key(&revoked.writer, revoked.service.id, revoked.key.id)
        .await
        .expect("revoke");
    let archived = setup(&stack, ProcessType::Normal).await;
    archive_service(&archived.writer, archived.service.id)
        .await
        .expect("archive");
    replica_caught_up(&stack).await;
    let (code, v) = ingest_call(
        &revoked,
        "/v2/notifications/email",
        Some(&jwt_for(&revoked.key)),
        email_body(&revoked, "a@b.co"),
    )
    .await;
    assert_eq!(
        (code, error_of(&v)),
        (
            403,
            ("AuthError".into(), "Invalid token: API key revoked".into())
        )
    );
    let (code, v) = ingest_call(
        &archived,
        "/v2/notifications/email",
        Some(&jwt_for(&archived.key)),
        email_body(&archived, "a@b.co"),
    )
    .await;
    assert_eq!(
        (code, error_of(&v)),
        (
            403,
            (
                "AuthError".into(),
                "Invalid token: service is archived".into()
            )
        )
    );
    for a in [&revoked, &archived, &other] {
        assert_eq!(a.queue.send_calls(), 0);
    }
}

#[tokio::test]
async fn a_bulk_job_is_packed_into_few_messages_and_every_row_persists() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Priority).await;
    let mut csv = String::from("email address,name,code\n");
    for i in 0..3_000 {
        csv.push_str(&format!(
            "success+{i}@simulator.amazonses.com,Person {i},{i}\n"
        ));
    }
    let (code, v) = ingest_call(
        &api,
        "/v2/notifications/bulk",
        Some(&jwt_for(&api.key)),
        json!({"name": "march.csv", "template_id": api.template.id, "csv": csv, "reference": "job-ref"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["data"]["notification_count"], 3000);
    assert_eq!(v["data"]["job_status"], "pending");
    let job_id = Uuid::parse_str(v["data"]["id"].as_str().unwrap()).unwrap();
    // The bulk API always uses the bulk process type, whatever the template's process type.
    let stats = api
        .queue
        .stats(QueueName::Intake(ProcessType::Bulk))
        .await
        .unwrap();
    assert!(
        stats.visible >= 2 && stats.visible <= 10,
        "{stats:?}: packed within 256 KiB"
    );
    // A full message is a whole SendMessageBatch call (256 KiB per call); never more calls.
    assert!(
        api.queue.send_calls() <= stats.visible,
        "{} SendMessageBatch calls",
        api.queue.send_calls()
    );
    assert_eq!(
        api.queue
            .stats(QueueName::Intake(ProcessType::Priority))
            .await
            .unwrap()
            .visible,
        0
    );
    assert_eq!(
        persist_all(&api.queue, api.writer.clone(), ProcessType::Bulk).await,
        3000
    );
    let conn = api.writer.acquire().await.unwrap();
    let row = conn
        .bounded(conn.query_typed_one(
            "SELECT count(*), count(DISTINCT job_row_number), min(job_row_number), max(job_row_number), \
             bool_and(process_type = 'bulk' AND client_reference = 'job-ref') FROM notifications WHERE job_id = $1",
            &[(&job_id, Type::UUID)],
        ))
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3000);
    assert_eq!(row.get::<_, i64>(1), 3000);
    assert_eq!((row.get::<_, i32>(2), row.get::<_, i32>(3)), (0, 2999));
    assert!(row.get::<_, bool>(4));
}

/// The real embedded queue, switched off after `ok_calls` SendMessageBatch calls (SQS
/// failing half way through a job).
struct FailAfter {
    inner: Arc<EmbeddedQueue>,
    ok_calls: AtomicUsize,
}

#[async_trait]
impl QueueSender for FailAfter {
    async fn send_batch(
        &self,
        queue: QueueName,
        bodies: &[OutgoingMessage],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        if self
            .ok_calls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            self.inner.set_unavailable(true);
        }
        self.inner.send_batch(queue, bodies).await
    }
}

#[tokio::test]
async fn sqs_unreachable_is_a_503_and_nothing_is_reported_accepted() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    api.queue.set_unavailable(true);
    let (code, v) = ingest_call(
        &api,
        "/v2/notifications/email",
        Some(&jwt_for(&api.key)),
        email_body(&api, "a@b.co"),
    )
    .await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["status_code"], 503);
    assert_eq!(error_of(&v).0, "ServiceUnavailableError");
    let rows: Vec<Value> = (0..50)
        .map(|i| json!([format!("p{i}@example.com"), "N", "1"]))
        .collect();
    let mut all = vec![json!(["email address", "name", "code"])];
    all.extend(rows);
    let (code, v) = ingest_call(
        &api,
        "/v2/notifications/bulk",
        Some(&jwt_for(&api.key)),
        json!({"name": "j", "template_id": api.template.id, "rows": all}),
    )
    .await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["accepted_count"], 0);
    assert_eq!(v["accepted_rows"], json!([]));
    api.queue.set_unavailable(false);
    for process_type in ProcessType::ALL {
        assert_eq!(
            api.queue
                .stats(QueueName::Intake(process_type))
                .await
                .unwrap()
                .visible,
            0
        );
    }

    // Half way: the first SendMessageBatch call succeeds, the rest fail. The 503 names the
    // job and exactly the rows that will be delivered.
    let inner = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let failing = Arc::new(FailAfter {
        inner: inner.clone(),
        ok_calls: AtomicUsize::new(1),
    });
    let (ingest, _) = api_on(reader_lane(&stack).await, failing, CachePolicy::default());
    let mut rows = vec![json!(["email address", "name", "code"])];
    let pad = "p".repeat(2_000);
    rows.extend((0..2_000).map(|i| json!([format!("r{i}@example.com"), pad, i.to_string()])));
    let r = ingest
        .handle(req(
            Method::POST,
            "/v2/notifications/bulk",
            Some(&jwt_for(&api.key)),
            Some(json!({"name": "j", "template_id": api.template.id, "rows": rows}).to_string()),
        ))
        .await;
    let v: Value = serde_json::from_str(&response_text(&r)).unwrap();
    assert_eq!(r.status_code, 503, "{v}");
    let accepted = v["accepted_count"].as_u64().unwrap();
    assert!(accepted > 0 && accepted < 2000, "{v}");
    let listed: u64 = v["accepted_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
        .sum();
    assert_eq!(listed, accepted);
    inner.set_unavailable(false);
    let persisted = persist_all(&inner, api.writer.clone(), ProcessType::Bulk).await;
    assert_eq!(
        persisted, accepted,
        "exactly the reported rows are delivered"
    );
    let job = Uuid::parse_str(v["job_id"].as_str().unwrap()).unwrap();
    let conn = api.writer.acquire().await.unwrap();
    let n: i64 = conn
        .bounded(conn.query_typed_one(
            "SELECT count(*) FROM notifications WHERE job_id = $1",
            &[(&job, Type::UUID)],
        ))
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as u64, accepted);
}

async fn marked_calls(url: &str) -> i64 {
    let (client, conn) =
        floodgate_db::tokio_postgres::connect(url, floodgate_db::tokio_postgres::NoTls)
            .await
            .expect("direct connection");
    tokio::spawn(conn);
    let rows = client
        .simple_query("SELECT coalesce(sum(calls), 0)::bigint::text FROM pg_stat_statements WHERE query LIKE '%floodgate:status%'")
        .await
        .expect("pg_stat_statements");
    floodgate_local::services::first_value(&rows)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

#[tokio::test]
async fn status_sends_no_query_to_the_writer() {
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    let before_primary = marked_calls(&stack.primary_url()).await;
    let before_replica = marked_calls(&stack.replica_url()).await;
    for path in [
        format!("/v2/notifications/{}", Uuid::now_v7()),
        "/v2/notifications?status=created".to_string(),
        format!("/v2/template/{}", api.template.id),
    ] {
        let (code, v) = status_call(&api, Method::GET, &path, None).await;
        assert!(code == 200 || code == 404, "{path}: {v}");
    }
    assert_eq!(
        marked_calls(&stack.primary_url()).await,
        before_primary,
        "status reached the primary"
    );
    assert!(
        marked_calls(&stack.replica_url()).await > before_replica,
        "status read the replica"
    );
}

#[tokio::test]
async fn database_down_after_a_warm_cache_ingest_accepts_and_status_is_a_quick_503() {
    let mut stack = start_migrated(StackOptions::default()).await;
    let writer = writer_lane(&stack, |_| {}).await;
    let service = create_service(&writer, None, "outage", "o@example.gov")
        .await
        .unwrap();
    let key = issue_key(&writer, &secrets(), service.id, "live", KeyType::Normal)
        .await
        .unwrap();
    let template = put_template(
        &writer,
        service.id,
        None,
        "t",
        "Hi ((name))",
        "((code))",
        ProcessType::Normal,
    )
    .await
    .unwrap();
    replica_caught_up(&stack).await;
    let mut c = LaneConfig::new(LaneKind::Reader, stack.reader_url(), "floodgate-test");
    c.acquire_timeout = Duration::from_millis(500);
    c.connect_timeout = Duration::from_millis(500);
    c.operation_timeout = Duration::from_millis(1_000);
    let reader = ReaderLane::open(c).await.unwrap();
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    // TTL 0: every request tries the database, so only stale-if-error can answer.
    let policy = CachePolicy {
        ttl: Duration::ZERO,
        ..CachePolicy::default()
    };
    let (ingest, status) = api_on(reader, queue.clone(), policy);
    let api = Api {
        writer,
        queue,
        ingest,
        status,
        service,
        key,
        template,
    };
    let body = json!({"email_address": "a@b.co", "template_id": api.template.id, "personalisation": {"name": "x", "code": 1}});
    let (code, v) = ingest_call(
        &api,
        "/v2/notifications/email",
        Some(&jwt_for(&api.key)),
        body.clone(),
    )
    .await;
    assert_eq!(code, 201, "warm-up: {v}");

    stack.stop_replica();
    stack.stop_primary();
    for _ in 0..3 {
        let (code, v) = ingest_call(
            &api,
            "/v2/notifications/email",
            Some(&jwt_for(&api.key)),
            body.clone(),
        )
        .await;
        assert_eq!(code, 201, "ingest keeps accepting from its cache: {v}");
    }
    assert_eq!(
        api.queue
            .stats(QueueName::Intake(ProcessType::Normal))
            .await
            .unwrap()
            .visible,
        4
    );
    let started = Instant::now();
    let (code, v) = status_call(
        &api,
        Method::GET,
        &format!("/v2/notifications/{}", Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(error_of(&v).0, "ServiceUnavailableError");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );
    let live = api
        .status
        .handle(req(Method::GET, "/_status", None, None))
        .await;
    assert_eq!(
        live.status_code, 200,
        "liveness does not depend on the database"
    );
}

fn run_python(python: &std::path::Path, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/notify_client_check.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "notify client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client output is JSON")
}

#[tokio::test]
async fn the_published_notify_python_client_sends_and_reads_back() {
    let python =
        tokio::task::spawn_blocking(floodgate_local::services::install::ensure_notify_client)
            .await
            .unwrap()
            .expect("notifications-python-client installs");
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    let (base, server) = serve_front(&stack, &api).await;
    let key = api.key.key.clone();
    let tid = api.template.id.to_string();
    let (b, k, t, py) = (base.clone(), key.clone(), tid.clone(), python.clone());
    let sent = tokio::task::spawn_blocking(move || {
        run_python(&py, &["send", &b, &k, &t, "ada@example.com", "py-ref"])
    })
    .await
    .unwrap();
    let id = sent["id"].as_str().expect("an id").to_string();
    assert_eq!(sent["content"]["subject"], "Hello Ada &lt;Lovelace&gt;");
    assert_eq!(sent["uri"], format!("{base}/v2/notifications/{id}"));
    assert_eq!(
        persist_all(&api.queue, api.writer.clone(), ProcessType::Normal).await,
        1
    );
    replica_caught_up(&stack).await;
    let read = tokio::task::spawn_blocking(move || {
        run_python(&python, &["read", &base, &key, &id, &tid, "py-ref"])
    })
    .await
    .unwrap();
    assert_eq!(read["notification"]["status"], "created");
    assert_eq!(read["notification"]["email_address"], "ada@example.com");
    assert_eq!(read["list"]["notifications"][0]["id"], sent["id"]);
    assert_eq!(read["template"]["id"], api.template.id.to_string());
    assert_eq!(read["preview"]["subject"], "Hello Ada");
    server.abort();
}

fn event(name: &str) -> ApiGatewayV2httpRequest {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} is not an API Gateway v2 event: {e}"))
}

/// The sample events authenticate with `ApiKey-v1` and a fixed key, which this test creates
/// (fixed service, key, template and notification ids): a JWT inside a static file would
/// expire after 30 seconds.
#[tokio::test]
async fn the_sample_events_run_through_their_handlers() {
    let stack = shared_stack().await;
    let writer = writer_lane(&stack, |_| {}).await;
    seed_api_event_fixtures(&stack, &writer, &secrets()).await;
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let (ingest, status) = api_on(
        reader_lane(&stack).await,
        queue.clone(),
        CachePolicy::default(),
    );

    let r = ingest.handle(event("apigw-post-email.json")).await;
    let v: Value = serde_json::from_str(&response_text(&r)).unwrap();
    assert_eq!(r.status_code, 201, "{v}");
    assert_eq!(v["content"]["subject"], "Hello Ada");
    assert!(
        v["uri"].as_str().unwrap().starts_with(
            "https://abcdef1234.execute-api.eu-west-2.amazonaws.com/v2/notifications/"
        )
    );
    let r = ingest.handle(event("apigw-post-bulk.json")).await;
    let v: Value = serde_json::from_str(&response_text(&r)).unwrap();
    assert_eq!(r.status_code, 201, "{v}");
    assert_eq!(v["data"]["notification_count"], 3);
    assert_eq!(
        queue
            .stats(QueueName::Intake(ProcessType::Bulk))
            .await
            .unwrap()
            .visible,
        1
    );
    let r = status.handle(event("apigw-get-status.json")).await;
    let v: Value = serde_json::from_str(&response_text(&r)).unwrap();
    assert_eq!(r.status_code, 200, "{v}");
    assert_eq!(v["id"], EVENTS_NOTIFICATION.to_string());
    assert_eq!(v["body"], "Hi Person 1");
}

/// Notify's error answer as the Python client's `HTTPError` exposes it: the status and the
/// `errors` list (`APIError.message` in notifications_python_client/errors.py).
fn client_error(status: i64, class: &str, message: &str) -> Value {
    json!({"status_code": status, "class": "HTTPError",
        "message": [{"error": class, "message": message}]})
}

/// Every public method of notifications-python-client that concerns email, unmodified,
/// against the local HTTP front: sending (reference, reply-to, one-click unsubscribe), reading one
/// and many (filters, older_than, the iterator across two pages), templates (one, a
/// version, the lists, a preview), and the HTTPError each error path raises.
#[tokio::test]
async fn the_published_notify_python_client_covers_every_email_method() {
    let python =
        tokio::task::spawn_blocking(floodgate_local::services::install::ensure_notify_client)
            .await
            .unwrap()
            .expect("notifications-python-client installs");
    let stack = shared_stack().await;
    let api = setup(&stack, ProcessType::Normal).await;
    // More than one page of 250: the iterator must follow links.next to the empty page.
    let paged = "py-paged";
    let batch: Vec<_> = (0..260)
        .map(|i| {
            let mut n = notification(api.service.id, ProcessType::Normal, i);
            n.template_id = api.template.id;
            personalise(&mut n, "code", json!(i));
            n.reference = Some(paged.into());
            n
        })
        .collect();
    let conn = api.writer.acquire().await.unwrap();
    conn.bounded(floodgate_db::insert_notifications(&conn, &batch))
        .await
        .unwrap();
    drop(conn);
    let reply_to =
        floodgate_admin::add_reply_to(&api.writer, api.service.id, "help@example.gov", false)
            .await
            .expect("reply-to");
    replica_caught_up(&stack).await;
    let (base, server) = serve_front(&stack, &api).await;
    let url = "https://example.com/unsubscribe?list=news&u=1";
    let (b, k, t, r, py) = (
        base.clone(),
        api.key.key.clone(),
        api.template.id.to_string(),
        reply_to.id.to_string(),
        python.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            &py,
            &["methods", &b, &k, &t, "ada@example.com", paged, url, &r],
        )
    })
    .await
    .unwrap();

    let sent = &out["sent"];
    assert_eq!(sent["reference"], "py-methods");
    assert_eq!(sent["content"]["subject"], "Hello Ada");
    // create_response.py create_post_email_response_from_notification.
    assert_eq!(sent["content"]["one_click_unsubscribe_url"], url);
    // post_notifications.py sanitise_personalisation_item: the link is gone, the
    // Markdown characters escaped.
    assert_eq!(
        out["sanitised"]["sanitised_content"]["name"]["sanitised"],
        "\\[click\\]\\(\\)"
    );
    let tid = api.template.id.to_string();
    assert_eq!(out["template"]["id"], tid);
    assert_eq!(out["template_version"]["version"], 1);
    assert_eq!(out["template_version"]["id"], tid);
    for list in ["all_templates", "email_templates"] {
        let ids: Vec<&Value> = out[list]["templates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["id"])
            .collect();
        assert_eq!(ids, vec![&json!(tid)], "{list}");
    }
    assert_eq!(out["sms_templates"]["templates"], json!([]));
    assert_eq!(out["preview"]["subject"], "Hello Bo");
    assert_eq!(out["preview"]["body"], "Dear Bo,\n\nYour code is 7.");
    let filtered = out["filtered"]["notifications"].as_array().unwrap();
    assert_eq!(filtered.len(), 250);
    assert!(filtered.iter().all(|n| n["reference"] == paged));
    assert_eq!(
        out["older_than_page"]["notifications"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    let mut iterated: Vec<String> = out["iterated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(iterated.len(), 260, "the iterator reads both pages once");
    iterated.sort();
    let mut stored: Vec<String> = batch.iter().map(|n| n.id.to_string()).collect();
    stored.sort();
    assert_eq!(iterated, stored);

    let errors = &out["errors"];
    let expected = [
        (
            "invalid_email",
            client_error(
                400,
                "ValidationError",
                "email_address Not a valid email address",
            ),
        ),
        (
            "unknown_template",
            client_error(400, "BadRequestError", "Template not found"),
        ),
        (
            "missing_personalisation",
            client_error(
                400,
                "BadRequestError",
                "Missing personalisation: name, code",
            ),
        ),
        (
            "http_unsubscribe_url",
            client_error(
                400,
                "ValidationError",
                "one_click_unsubscribe_url is not a valid https url",
            ),
        ),
        (
            "bad_notification_id",
            client_error(
                400,
                "ValidationError",
                "notification_id is not a valid UUID",
            ),
        ),
        (
            "unknown_notification",
            client_error(404, "NoResultFound", "No result found"),
        ),
        (
            "unknown_template_read",
            client_error(404, "NoResultFound", "No result found"),
        ),
        (
            "unknown_template_version",
            client_error(404, "NoResultFound", "No result found"),
        ),
        (
            "preview_missing_personalisation",
            client_error(400, "BadRequestError", "Missing personalisation: code"),
        ),
        (
            "wrong_secret",
            client_error(403, "AuthError", "Invalid token: API key not found"),
        ),
    ];
    // app/notifications/validators.py check_service_email_reply_to_id.
    assert_eq!(
        errors["unknown_reply_to"],
        client_error(
            400,
            "BadRequestError",
            &format!(
                "email_reply_to_id 0f0e0d0c-0b0a-4908-8706-050403020100 does not exist in database for service id {}",
                api.service.id
            ),
        )
    );
    for (name, want) in expected {
        assert_eq!(errors[name], want, "{name}");
    }
    assert_eq!(errors["bad_status_filter"]["status_code"], 400);
    assert!(
        errors["bad_status_filter"]["message"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("status elephant is not one of [cancelled, created,")
    );

    // The sent notification, once stored, reads back with the full key set Notify gives an
    // email (app/models.py serialize_with_cost_data).
    assert_eq!(
        persist_all(&api.queue, api.writer.clone(), ProcessType::Normal).await,
        2
    );
    replica_caught_up(&stack).await;
    let id = sent["id"].as_str().unwrap().to_string();
    let (key, py) = (api.key.key.clone(), python.clone());
    let read = tokio::task::spawn_blocking(move || {
        run_python(&py, &["read", &base, &key, &id, &tid, "py-methods"])
    })
    .await
    .unwrap();
    let n = &read["notification"];
    assert_eq!(n["one_click_unsubscribe_url"], url);
    assert_eq!(n["cost_details"], json!({}));
    assert_eq!(n["cost_in_pounds"], 0.0);
    assert_eq!(n["is_cost_data_ready"], true);
    for key in [
        "id",
        "reference",
        "email_address",
        "phone_number",
        "line_1",
        "line_2",
        "line_3",
        "line_4",
        "line_5",
        "line_6",
        "postcode",
        "type",
        "status",
        "template",
        "body",
        "subject",
        "created_at",
        "created_by_name",
        "sent_at",
        "completed_at",
        "scheduled_for",
        "postage",
        "one_click_unsubscribe_url",
        "cost_details",
        "cost_in_pounds",
        "is_cost_data_ready",
    ] {
        assert!(n.get(key).is_some(), "{key} missing: {n}");
    }
    server.abort();
}
