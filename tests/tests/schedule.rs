//! Scheduled sends through the whole local topology: `ingest` and `status` handlers, the
//! pipeline's event source mappings (`persist`, `send`, `receipts`), the periodic release of
//! scheduled notifications the pipeline runs as EventBridge does on AWS, and the SES
//! simulator, which records what it was handed. Each test owns its service.

use chrono::{DateTime, SubsecRound, Utc};
use floodgate_api::notify_time;
use floodgate_aws::OutgoingMessage;
use floodgate_core::envelope::created_at_of;
use floodgate_core::{ProcessType, QueueName, pack_intake};
use floodgate_db::WriterLane;
use floodgate_db::tokio_postgres::types::Type;
use floodgate_e2e::*;
use floodgate_emulators::SimulatorMailer;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const EMAIL: &str = "/v2/notifications/email";

/// One pipeline at a time: a pipeline's release forwards every due scheduled row of the
/// database to its own queues (one stack has one set of queues), so a second pipeline
/// would take another test's rows.
static ONE_PIPELINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The row's `sent_at` (what send recorded when SES accepted it) and whether it was ever
/// changed while waiting (`updated_at`, which the release stamps).
async fn row_of(writer: &WriterLane, id: Uuid) -> Option<(String, Option<DateTime<Utc>>, bool)> {
    let conn = writer.acquire().await.expect("connection");
    let row = conn
        .bounded(conn.query_typed_opt(
            "SELECT status, sent_at, updated_at IS NOT NULL FROM notifications WHERE id = $1",
            &[(&id, Type::UUID)],
        ))
        .await
        .expect("row");
    row.map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Polls the simulator until it has `id`. Returns whether it was seen absent at a check
/// made within the last second before `at` (so "not before its time" was really tested),
/// and fails at once if it is there at a check that ended before `at`.
async fn wait_for_ses(sim: &SimulatorMailer, id: Uuid, at: DateTime<Utc>) -> bool {
    let mut absent_just_before = false;
    let give_up = at + chrono::Duration::seconds(30);
    loop {
        let there = sim.accepted().contains_key(&id);
        let checked = Utc::now();
        if there {
            assert!(
                checked >= at,
                "SES had the notification at {checked}, before its time {at}"
            );
            return absent_just_before;
        }
        if checked < at && checked >= at - chrono::Duration::seconds(1) {
            absent_just_before = true;
        }
        assert!(
            checked < give_up,
            "SES never got the notification due at {at}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_scheduled_10_seconds_ahead_reads_created_and_reaches_ses_only_after_its_time() {
    let _one = ONE_PIPELINE.lock().await;
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Priority).await;
    let pipeline = f.pipeline(&stack).await;
    let ingest = f
        .ingest_with(&stack, pipeline.queue.clone(), pipeline.limit_store.clone())
        .await;
    let status = f.status(&stack).await;
    let sim = pipeline.simulator.clone().expect("simulator");

    let at = (Utc::now() + chrono::Duration::seconds(11)).trunc_subsecs(0);
    let (code, v) = f
        .post(
            &ingest,
            EMAIL,
            &json!({
                "email_address": "success@simulator.amazonses.com",
                "template_id": f.template_id,
                "personalisation": {"name": "Ada"},
                "scheduled_for": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["scheduled_for"], notify_time(at));
    let id: Uuid = v["id"].as_str().unwrap().parse().unwrap();

    // While it waits, it reads as Notify's: `created`, with its time.
    let mut read_waiting = false;
    while Utc::now() < at - chrono::Duration::seconds(3) {
        let (code, n) = f.get(&status, &format!("/v2/notifications/{id}")).await;
        if code == 200 {
            assert_eq!(n["status"], "created", "{n}");
            assert_eq!(n["scheduled_for"], notify_time(at), "{n}");
            assert_eq!(n["sent_at"], Value::Null, "{n}");
            let (code, list) = f.get(&status, "/v2/notifications?status=created").await;
            assert_eq!(code, 200, "{list}");
            assert_eq!(list["notifications"][0]["id"], id.to_string(), "{list}");
            assert_eq!(list["notifications"][0]["scheduled_for"], notify_time(at));
            read_waiting = true;
            break;
        }
        assert_eq!(code, 404, "{n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        read_waiting,
        "the notification was never readable while it waited"
    );
    assert!(
        !sim.accepted().contains_key(&id),
        "handed to SES before its time"
    );

    assert!(
        wait_for_ses(&sim, id, at).await,
        "SES was not checked just before the notification's time"
    );
    let (_, sent_at, _) = row_of(&f.writer, id).await.expect("stored");
    let sent_at = sent_at.expect("sent_at recorded");
    assert!(sent_at >= at, "sent at {sent_at}, due at {at}");
    assert!(
        sent_at < at + chrono::Duration::seconds(5),
        "sent at {sent_at}, long after {at}: the queue delay should end at its time"
    );
    assert_eq!(sim.accepted().get(&id), Some(&1), "sent once");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_stored_long_before_its_time_is_released_by_the_periodic_step() {
    let _one = ONE_PIPELINE.lock().await;
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Priority).await;
    let pipeline = f.pipeline(&stack).await;
    let sim = pipeline.simulator.clone().expect("simulator");

    // Created an hour ago and due in 8 seconds: more than the 15-minute window after its
    // creation, so persist leaves it to the release (as it does a notification scheduled
    // 20 hours ahead, once its last 15 minutes begin).
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        hour_ago.timestamp() as u64,
        hour_ago.timestamp_subsec_nanos(),
    ));
    let at = (Utc::now() + chrono::Duration::seconds(8)).trunc_subsecs(0);
    let mut n = notification(f.service_id, ProcessType::Priority, 0);
    n.id = id;
    n.created_at = created_at_of(id).expect("v7");
    n.template_id = f.template_id;
    n.template_version = f.template.version;
    n.email_address = "success@simulator.amazonses.com".into();
    n.scheduled_for = Some(at);
    let bodies = pack_intake(&[n], 262_144).expect("packs");
    let sent = pipeline
        .queue
        .send_batch(
            QueueName::Intake(ProcessType::Priority),
            &[OutgoingMessage::now(bodies[0].clone())],
        )
        .await
        .expect("enqueued");
    assert!(sent.iter().all(Result::is_ok));

    // Stored, then stamped by the release while still `created` and ahead of its time.
    let mut released_early = false;
    while Utc::now() < at - chrono::Duration::seconds(1) {
        if let Some((status, _, stamped)) = row_of(&f.writer, id).await {
            assert_eq!(status, "created");
            if stamped {
                released_early = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        released_early,
        "the release did not pick the row before its time"
    );
    assert!(!sim.accepted().contains_key(&id), "handed to SES early");

    assert!(
        wait_for_ses(&sim, id, at).await,
        "not checked just before its time"
    );
    let (_, sent_at, _) = row_of(&f.writer, id).await.expect("stored");
    assert!(sent_at.expect("sent_at") >= at);
    assert_eq!(sim.accepted().get(&id), Some(&1), "sent once");
    pipeline.stop().await;
}
