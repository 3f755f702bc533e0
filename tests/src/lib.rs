//! Helpers for Floodgate's end-to-end tests: one shared local stack per test binary
//! (started on first use, migrated once), and builders for events and notifications.
//! Each test uses its own service id, so tests sharing the stack never see each other's
//! rows.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use floodgate_core::envelope::new_notification_id;
use floodgate_core::{IntakeNotification, KeyType, TrafficLane};
use floodgate_db::{Lane, LaneConfig, LaneKind, ReaderLane, WriterLane};
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
    WriterLane(Lane::open(c).await.expect("writer lane"))
}

/// A reader lane through the reader proxy (replica).
pub async fn reader_lane(stack: &LocalStack) -> ReaderLane {
    let c = LaneConfig::new(LaneKind::Reader, stack.reader_url(), "floodgate-test");
    ReaderLane(Lane::open(c).await.expect("reader lane"))
}

/// A valid notification for `service_id` in `lane`.
pub fn notification(service_id: Uuid, lane: TrafficLane, i: usize) -> IntakeNotification {
    let (id, created_at) = new_notification_id();
    let mut p = serde_json::Map::new();
    p.insert("name".into(), format!("Person {i}").into());
    IntakeNotification {
        id,
        service_id,
        template_id: Uuid::from_u128(7),
        template_version: 1,
        lane,
        email_address: format!("success+{i}@simulator.amazonses.com"),
        personalisation: p,
        reference: Some(format!("ref-{i}")),
        key_type: KeyType::Normal,
        api_key_id: None,
        job_id: None,
        job_row_number: None,
        email_reply_to_id: None,
        scheduled_for: None,
        created_at,
    }
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

/// Counts rows of `service_id` through `lane`.
pub async fn count_rows(lane: &Lane, service_id: Uuid) -> i64 {
    let conn = lane.acquire().await.expect("connection");
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
