//! Helpers for Floodgate's end-to-end tests: one shared local stack per test binary
//! (started on first use, migrated once), and builders for events and notifications.
//! Each test uses its own service id, so tests sharing the stack never see each other's
//! rows.

pub mod terraform;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use floodgate_core::envelope::new_notification_id;
use floodgate_core::{IntakeNotification, KeyType, ProcessType};
use floodgate_db::tokio_postgres::types::Type;
use floodgate_db::{LaneConfig, LaneKind, ReaderLane, WriterLane};
use floodgate_emulators::EmbeddedLimitStore;
use floodgate_local::{LocalStack, StackOptions};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

static SHARED: tokio::sync::OnceCell<Arc<LocalStack>> = tokio::sync::OnceCell::const_new();

/// The binary's shared stack (PostgreSQL primary + replica, both PgBouncers, moto),
/// migrated. Started by the first test that asks; its services die with the process.
pub async fn shared_stack() -> Arc<LocalStack> {
    SHARED
        .get_or_init(|| async {
            Arc::new(
                start_migrated(StackOptions {
                    moto: true,
                    ..StackOptions::default()
                })
                .await,
            )
        })
        .await
        .clone()
}

/// A stack of the test's own (for tests that stop services), migrated.
pub async fn start_migrated(opts: StackOptions) -> LocalStack {
    let stack = LocalStack::start(opts).await.expect("local stack starts");
    let writer = writer_lane(&stack, |_| {}).await;
    let conn = writer.acquire().await.expect("writer connection");
    conn.bounded(floodgate_db::migrate(&conn))
        .await
        .expect("migrations apply");
    let today = Utc::now().date_naive();
    conn.bounded(floodgate_db::maintain_partitions(&conn, today, 3, 36_500))
        .await
        .expect("partitions");
    stack
}

/// A writer lane through the writer proxy; `tweak` adjusts the config.
pub async fn writer_lane(stack: &LocalStack, tweak: impl FnOnce(&mut LaneConfig)) -> WriterLane {
    let mut c = LaneConfig::new(LaneKind::Writer, stack.writer_url(), "floodgate-test");
    tweak(&mut c);
    WriterLane::open(c).await.expect("writer lane")
}

/// A reader lane through the reader proxy (replica).
pub async fn reader_lane(stack: &LocalStack) -> ReaderLane {
    let c = LaneConfig::new(LaneKind::Reader, stack.reader_url(), "floodgate-test");
    ReaderLane::open(c).await.expect("reader lane")
}

/// Sets one personalisation value of a notification.
pub fn personalise(n: &mut IntakeNotification, key: &str, value: serde_json::Value) {
    let mut map = n.personalisation.to_map().unwrap_or_default();
    map.insert(key.to_owned(), value);
    n.personalisation = floodgate_core::Personalisation::from_map(&map);
}

/// A valid notification for `service_id` in `process_type`.
pub fn notification(service_id: Uuid, process_type: ProcessType, i: usize) -> IntakeNotification {
    let (id, created_at) = new_notification_id();
    let mut p = serde_json::Map::new();
    p.insert("name".into(), format!("Person {i}").into());
    IntakeNotification {
        id,
        service_id,
        template_id: Uuid::from_u128(7),
        template_version: 1,
        process_type,
        email_address: format!("success+{i}@simulator.amazonses.com"),
        personalisation: floodgate_core::Personalisation::from_map(&p),
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

/// Stores `notifications` as `persist` would and waits until the replica has replayed them
/// (where `status` reads).
pub async fn store_on_replica(
    stack: &LocalStack,
    writer: &WriterLane,
    notifications: &[IntakeNotification],
) {
    let conn = writer.acquire().await.expect("writer connection");
    conn.bounded(floodgate_db::insert_notifications(&conn, notifications))
        .await
        .expect("insert");
    drop(conn);
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");
}

/// An SQS event whose records carry `bodies`, with message ids `m-0`, `m-1`, …
pub fn sqs_event(bodies: &[String]) -> SqsEvent {
    let mut event = SqsEvent::default();
    for (i, b) in bodies.iter().enumerate() {
        let mut m = SqsMessage::default();
        m.message_id = Some(format!("m-{i}"));
        m.receipt_handle = Some(format!("rh-{i}"));
        m.body = Some(b.clone());
        event.records.push(m);
    }
    event
}

/// Counts rows of `service_id` on the writer.
pub async fn count_rows(writer: &WriterLane, service_id: Uuid) -> i64 {
    let conn = writer.acquire().await.expect("connection");
    let row = conn
        .bounded(conn.query_typed_one(
            "SELECT count(*) FROM notifications WHERE service_id = $1",
            &[(&service_id, floodgate_db::tokio_postgres::types::Type::UUID)],
        ))
        .await
        .expect("count");
    row.get(0)
}

/// An AWS SDK config pointed at a local endpoint (moto), with dummy credentials.
pub async fn local_aws_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "floodgate-tests",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

/// How [`loopback_http`] answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This raw HTTP response (see [`http_response`]).
    With(String),
    /// Close the connection after reading the request, without answering.
    Close,
    /// Read the request and keep the connection open without answering (a timeout).
    Hang,
}

/// A loopback HTTP server standing in for an AWS endpoint where moto cannot produce the
/// answer a test needs (a 5xx, a hang, a malformed batch result). Keeps each request body.
pub async fn loopback_http(reply: Reply) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                // Read the headers, then Content-Length bytes of body.
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    if let Ok(mut s) = seen.lock() {
                        s.push(String::from_utf8_lossy(&buf[end + 4..]).to_string());
                    }
                    match reply {
                        Reply::With(r) => {
                            let _ = sock.write_all(r.as_bytes()).await;
                        }
                        Reply::Close => {}
                        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                    return;
                }
            });
        }
    });
    (url, bodies)
}

/// A raw HTTP response with a JSON body and, for errors, AWS's error-type header.
pub fn http_response(status: &str, error_type: Option<&str>, body: &str) -> String {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if let Some(t) = error_type {
        r.push_str(&format!("x-amzn-ErrorType: {t}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

/// `Authorization: Bearer <JWT>` for an API key as issued (`<name>-<service>-<secret>`),
/// signed now.
pub fn bearer_for(service_id: Uuid, key: &str) -> String {
    let secret = floodgate_core::auth::parse_api_key(key)
        .map(|p| p.secret)
        .unwrap_or_default();
    format!(
        "Bearer {}",
        floodgate_core::auth::sign_jwt(service_id, secret, Utc::now().timestamp())
    )
}

/// A service with a live key and one template in `process_type`, made by the admin code
/// and replayed on the replica (where the API reads them).
pub struct ServiceFixture {
    pub writer: WriterLane,
    pub service_id: Uuid,
    pub template_id: Uuid,
    pub service: floodgate_db::catalog::ServiceRow,
    pub template: floodgate_db::catalog::TemplateRow,
    pub key: floodgate_admin::IssuedKey,
    pub secrets: Arc<floodgate_core::auth::SecretBox>,
}

pub async fn service_fixture(stack: &LocalStack, process_type: ProcessType) -> ServiceFixture {
    let secrets = Arc::new(
        floodgate_core::auth::SecretBox::from_base64(
            &floodgate_core::auth::generate_encryption_key(),
        )
        .expect("key"),
    );
    service_fixture_with(stack, process_type, "Dear ((name))", secrets).await
}

/// [`service_fixture`] with the template's `body` and the key encryption `secrets` given.
pub async fn service_fixture_with(
    stack: &LocalStack,
    process_type: ProcessType,
    body: &str,
    secrets: Arc<floodgate_core::auth::SecretBox>,
) -> ServiceFixture {
    let writer = writer_lane(stack, |_| {}).await;
    let name = format!("svc-{}", Uuid::now_v7());
    let service = floodgate_admin::create_service(&writer, None, &name, "notify@example.gov")
        .await
        .expect("service");
    let key = floodgate_admin::issue_key(&writer, &secrets, service.id, "live", KeyType::Normal)
        .await
        .expect("key");
    let template = floodgate_admin::put_template(
        &writer,
        service.id,
        None,
        "welcome",
        "Hello ((name))",
        body,
        process_type,
    )
    .await
    .expect("template");
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica caught up");
    ServiceFixture {
        writer,
        service_id: service.id,
        template_id: template.id,
        service,
        template,
        key,
        secrets,
    }
}

impl ServiceFixture {
    /// `Authorization: Bearer <JWT>` for the fixture's key, signed now.
    pub fn bearer(&self) -> String {
        bearer_for(self.service_id, &self.key.key)
    }

    /// An `ingest` instance on the replica with `queue` (and a limit store of its own).
    pub async fn ingest(
        &self,
        stack: &LocalStack,
        queue: Arc<dyn floodgate_aws::Queue>,
    ) -> floodgate_ingest::Ingest {
        self.ingest_with(stack, queue, Arc::new(EmbeddedLimitStore::new()))
            .await
    }

    /// An `ingest` instance on the replica with `queue` and `limit_store`.
    pub async fn ingest_with(
        &self,
        stack: &LocalStack,
        queue: Arc<dyn floodgate_aws::Queue>,
        limit_store: Arc<dyn floodgate_aws::LimitStore>,
    ) -> floodgate_ingest::Ingest {
        floodgate_ingest::Ingest::new(
            Arc::new(floodgate_api::ApiCatalog::new(
                reader_lane(stack).await,
                self.secrets.clone(),
                floodgate_api::CachePolicy::default(),
            )),
            queue,
            limit_store,
            &floodgate_core::Knobs::embedded(),
        )
    }

    /// POSTs `body` to `path` through `ingest`, as API Gateway would hand it over.
    pub async fn post(
        &self,
        ingest: &floodgate_ingest::Ingest,
        path: &str,
        body: &serde_json::Value,
    ) -> (i64, serde_json::Value) {
        self.post_with(ingest, path, body, &self.bearer(), &[])
            .await
    }

    /// [`Self::post`] with this `Authorization` value and further headers.
    pub async fn post_with(
        &self,
        ingest: &floodgate_ingest::Ingest,
        path: &str,
        body: &serde_json::Value,
        authorization: &str,
        headers: &[(&'static str, &str)],
    ) -> (i64, serde_json::Value) {
        let r = ingest
            .handle(api_request(
                aws_lambda_events::http::Method::POST,
                path,
                authorization,
                headers,
                Some(body.to_string()),
            ))
            .await;
        answer_of(&r)
    }

    /// A `status` instance on the replica that opens the fixture's keys.
    pub async fn status(&self, stack: &LocalStack) -> floodgate_status::Status {
        floodgate_status::Status::new(Arc::new(floodgate_api::ApiCatalog::new(
            reader_lane(stack).await,
            self.secrets.clone(),
            floodgate_api::CachePolicy::default(),
        )))
    }

    /// GETs `path` through `status` with the fixture's key, as API Gateway would hand it over.
    pub async fn get(
        &self,
        status: &floodgate_status::Status,
        path: &str,
    ) -> (i64, serde_json::Value) {
        let r = status
            .handle(api_request(
                aws_lambda_events::http::Method::GET,
                path,
                &self.bearer(),
                &[],
                None,
            ))
            .await;
        answer_of(&r)
    }

    /// The whole queue-driven pipeline (embedded queues, the SES simulator), able to open
    /// the fixture's callback tokens.
    pub async fn pipeline(&self, stack: &LocalStack) -> floodgate_local::topology::Pipeline {
        floodgate_local::topology::Pipeline::start(
            stack,
            &floodgate_local::topology::PipelineOptions {
                secrets: Some(self.secrets.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("pipeline")
    }
}

/// An API Gateway request from host `api.test` with this `Authorization` and headers.
fn api_request(
    method: aws_lambda_events::http::Method,
    path: &str,
    authorization: &str,
    headers: &[(&'static str, &str)],
    body: Option<String>,
) -> aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    use aws_lambda_events::http::{HeaderMap, HeaderValue};
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.test"));
    if let Ok(v) = HeaderValue::from_str(authorization) {
        h.insert("authorization", v);
    }
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    floodgate_api::gateway::request(method, path, h, body)
}

/// A handler's status code and JSON body (`Null` when the body is not JSON).
fn answer_of(r: &aws_lambda_events::apigw::ApiGatewayV2httpResponse) -> (i64, serde_json::Value) {
    let text = floodgate_api::gateway::response_text(r);
    (
        r.status_code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

// ---------------------------------------------------------------------------------------
// The fixtures the files in events/ refer to
// ---------------------------------------------------------------------------------------

/// The API Gateway samples authenticate with `ApiKey-v1` and this fixed key (a JWT inside a
/// static file would expire after 30 seconds).
pub const EVENTS_SERVICE: Uuid = Uuid::from_u128(0x0190f0a0_0000_7000_8000_0000000e0001);
pub const EVENTS_KEY: Uuid = Uuid::from_u128(0x0190f0a0_0000_7000_8000_0000000e0002);
pub const EVENTS_SECRET: &str = "3d5c2a7e-1f4b-4c8d-9e6a-0b7c8d9e0f1a";
pub const EVENTS_TEMPLATE: Uuid = Uuid::from_u128(0x0190f0a0_0000_7000_8000_0000000e0003);
/// The notification `apigw-get-status.json` reads.
pub const EVENTS_NOTIFICATION: Uuid = Uuid::from_u128(0x0190f0a0_1234_7000_8000_0000000e0004);

/// The service, key (sealed with `secrets`), template and notification the API Gateway
/// samples use, replayed on the replica. Once per stack.
pub async fn seed_api_event_fixtures(
    stack: &LocalStack,
    writer: &WriterLane,
    secrets: &floodgate_core::auth::SecretBox,
) {
    floodgate_admin::create_service(
        writer,
        Some(EVENTS_SERVICE),
        "events-sample",
        "events@example.gov",
    )
    .await
    .unwrap();
    floodgate_admin::issue_key_with_secret(
        writer,
        secrets,
        EVENTS_SERVICE,
        EVENTS_KEY,
        "events",
        KeyType::Normal,
        EVENTS_SECRET,
    )
    .await
    .unwrap();
    floodgate_admin::put_template(
        writer,
        EVENTS_SERVICE,
        Some(EVENTS_TEMPLATE),
        "sample",
        "Hello ((name))",
        "Hi ((name))",
        ProcessType::Normal,
    )
    .await
    .unwrap();
    let mut n = notification(EVENTS_SERVICE, ProcessType::Normal, 1);
    n.id = EVENTS_NOTIFICATION;
    n.created_at = floodgate_core::envelope::created_at_of(EVENTS_NOTIFICATION).unwrap();
    n.template_id = EVENTS_TEMPLATE;
    store_on_replica(stack, writer, &[n]).await;
}

/// The service and template the SQS samples (intake, send, receipts) belong to.
pub const FIXTURE_SERVICE: &str = "0193f0a0-0000-7000-8000-00000000f00d";
pub const FIXTURE_TEMPLATE: &str = "0193f0a0-0000-7000-8000-00000000beef";
/// The from address of the SQS samples' service.
pub const FIXTURE_FROM: &str = "noreply@floodgate.example.gov";

/// A service and a template with the given ids, written directly (no admin command: some
/// tests need ids fixed in sample files). Idempotent.
pub async fn create_service_with_ids(
    writer: &WriterLane,
    service: Uuid,
    template: Uuid,
    process_type: ProcessType,
    from: &str,
) {
    let conn = writer.acquire().await.unwrap();
    let name = format!("pipeline-{}", service.simple());
    let subject = "Hello ((name))";
    let body = "Dear ((name)),\n\nThis is **Floodgate**.";
    let process_type = process_type.as_str();
    conn.bounded(conn.execute_typed(
        "INSERT INTO services (id, name, from_email) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
        &[
            (&service, Type::UUID),
            (&name, Type::TEXT),
            (&from, Type::TEXT),
        ],
    ))
    .await
    .unwrap();
    conn.bounded(conn.execute_typed(
        "INSERT INTO templates (id, service_id, name, subject, body, process_type, version)
         VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (id) DO NOTHING",
        &[
            (&template, Type::UUID),
            (&service, Type::UUID),
            (&name, Type::TEXT),
            (&subject, Type::TEXT),
            (&body, Type::TEXT),
            (&process_type, Type::TEXT),
        ],
    ))
    .await
    .unwrap();
    conn.bounded(conn.execute_typed(
        "INSERT INTO template_versions (template_id, version, name, subject, body, process_type)
         VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT (template_id, version) DO NOTHING",
        &[
            (&template, Type::UUID),
            (&name, Type::TEXT),
            (&subject, Type::TEXT),
            (&body, Type::TEXT),
            (&process_type, Type::TEXT),
        ],
    ))
    .await
    .unwrap();
}
