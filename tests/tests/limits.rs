//! Limits and idempotency at the door, through `ingest`'s handler on the real catalog
//! (PostgreSQL replica) and both limit store adapters: the embedded one and DynamoDB
//! (moto). Notify's messages come from alphagov/notifications-api `app/v2/errors.py`
//! (`RateLimitError`, `TooManyRequestsError`).

use chrono::{TimeDelta, Utc};
use floodgate_aws::{Claim, DynamoLimitStore, IdempotencyRecord, LimitStore, LimitStoreError};
use floodgate_core::limits::{Counter, IdempotencyKey, ServiceLimits, Take};
use floodgate_core::{KeyType, ProcessType, QueueName};
use floodgate_e2e::*;
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue};
use floodgate_local::topology::{Pipeline, PipelineOptions, local_sdk};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const EMAIL: &str = "/v2/notifications/email";
const BULK: &str = "/v2/notifications/bulk";

fn email(f: &ServiceFixture, to: &str) -> Value {
    json!({"email_address": to, "template_id": f.template_id, "personalisation": {"name": "Ada"}})
}

fn bulk(f: &ServiceFixture, rows: usize) -> Value {
    let mut csv = String::from("email address,name\n");
    for i in 0..rows {
        csv.push_str(&format!("person{i}@example.com,Person {i}\n"));
    }
    json!({"name": "job.csv", "template_id": f.template_id, "csv": csv})
}

/// `Authorization` for a key of the fixture's service issued now with `key_type`.
async fn other_key(
    f: &ServiceFixture,
    stack: &floodgate_local::LocalStack,
    key_type: KeyType,
) -> String {
    let issued = floodgate_admin::issue_key(&f.writer, &f.secrets, f.service_id, "other", key_type)
        .await
        .expect("key");
    stack
        .wait_replica_caught_up(Duration::from_secs(30))
        .await
        .expect("replica");
    bearer_for(f.service_id, &issued.key)
}

async fn queued(queue: &EmbeddedQueue, process_type: ProcessType) -> u64 {
    use floodgate_aws::Queue;
    let q = QueueName::Intake(process_type);
    queue
        .stats(q)
        .await
        .map(|s| s.visible + s.in_flight + s.delayed)
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_3001st_request_in_a_minute_is_notify_s_429_team_keys_count_apart_and_the_window_refills()
 {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Normal).await;
    // A team key sends only to the team (and guest list).
    floodgate_admin::add_recipient(
        &f.writer,
        floodgate_db::catalog::RecipientList::TeamMembers,
        f.service_id,
        "team@example.com",
    )
    .await
    .expect("team member");
    let team = other_key(&f, &stack, KeyType::Team).await;
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let ingest = f
        .ingest_with(&stack, queue.clone(), Arc::new(EmbeddedLimitStore::new()))
        .await;
    let started = Instant::now();
    for i in 0..3000 {
        let (code, v) = f
            .post(&ingest, EMAIL, &email(&f, &format!("p{i}@example.com")))
            .await;
        assert_eq!(code, 201, "request {}: {v}", i + 1);
    }
    assert!(
        started.elapsed() < Duration::from_secs(55),
        "3,000 requests must fit in the minute for this test to mean anything"
    );
    let (code, v) = f.post(&ingest, EMAIL, &email(&f, "late@example.com")).await;
    assert_eq!(code, 429);
    assert_eq!(
        v,
        json!({"status_code": 429, "errors": [{"error": "RateLimitError",
            "message": "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"}]})
    );
    // A refused request enqueued nothing.
    assert_eq!(queued(&queue, ProcessType::Normal).await, 3000);
    // The team key has its own count.
    let (code, v) = f
        .post_with(&ingest, EMAIL, &email(&f, "team@example.com"), &team, &[])
        .await;
    assert_eq!(code, 201, "{v}");
    // A new window once the minute since the first request has passed.
    tokio::time::sleep(Duration::from_secs(61).saturating_sub(started.elapsed())).await;
    let (code, v) = f.post(&ingest, EMAIL, &email(&f, "next@example.com")).await;
    assert_eq!(code, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_that_would_cross_the_daily_limit_is_refused_whole_and_test_keys_never_count() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Normal).await;
    let row = floodgate_admin::set_limits(&f.writer, f.service_id, None, Some(10))
        .await
        .expect("set-limits");
    assert_eq!(
        row.limits,
        ServiceLimits {
            rate_limit: 3000,
            daily_limit: 10
        }
    );
    let test_key = other_key(&f, &stack, KeyType::Test).await;
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let ingest = f
        .ingest_with(&stack, queue.clone(), Arc::new(EmbeddedLimitStore::new()))
        .await;
    let too_many = json!({"status_code": 429, "errors": [{"error": "TooManyRequestsError",
        "message": "Exceeded send limits (email: 10) for today"}]});
    for i in 0..8 {
        let (code, v) = f
            .post(&ingest, EMAIL, &email(&f, &format!("p{i}@example.com")))
            .await;
        assert_eq!(code, 201, "{v}");
    }
    let (code, v) = f.post(&ingest, BULK, &bulk(&f, 3)).await;
    assert_eq!((code, &v), (429, &too_many));
    assert_eq!(
        queued(&queue, ProcessType::Bulk).await,
        0,
        "no row of a refused job"
    );
    let (code, v) = f.post(&ingest, BULK, &bulk(&f, 2)).await;
    assert_eq!(code, 201, "exactly up to the limit: {v}");
    assert_eq!(v["data"]["notification_count"], 2);
    let (code, v) = f
        .post(&ingest, EMAIL, &email(&f, "eleventh@example.com"))
        .await;
    assert_eq!((code, &v), (429, &too_many));
    for i in 0..3 {
        let (code, v) = f
            .post_with(
                &ingest,
                EMAIL,
                &email(&f, &format!("t{i}@example.com")),
                &test_key,
                &[],
            )
            .await;
        assert_eq!(code, 201, "test keys do not count: {v}");
    }
    assert_eq!(queued(&queue, ProcessType::Normal).await, 8 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_five_times_at_once_stores_and_sends_one_notification() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Priority).await;
    let pipeline = Pipeline::start(
        &stack,
        &PipelineOptions {
            secrets: Some(f.secrets.clone()),
            ..PipelineOptions::default()
        },
    )
    .await
    .expect("pipeline");
    let ingest = f
        .ingest_with(&stack, pipeline.queue.clone(), pipeline.limit_store.clone())
        .await;
    let body = email(&f, "success@simulator.amazonses.com");
    let bearer = f.bearer();
    let key = format!("order-{}", Uuid::now_v7());
    let headers = [("idempotency-key", key.as_str())];
    let answers = futures::future::join_all(
        (0..5).map(|_| f.post_with(&ingest, EMAIL, &body, &bearer, &headers)),
    )
    .await;
    for (code, v) in &answers {
        assert_eq!(*code, 201, "{v}");
        assert_eq!(v, &answers[0].1, "every repeat gets the first answer");
    }
    let id: Uuid = answers[0].1["id"].as_str().unwrap().parse().unwrap();
    // A repeat long after, and a different request with the same key.
    let (code, later) = f
        .post_with(&ingest, EMAIL, &body, &bearer, &[("idempotency-key", &key)])
        .await;
    assert_eq!((code, &later), (201, &answers[0].1));
    let (code, v) = f
        .post_with(
            &ingest,
            EMAIL,
            &email(&f, "someone-else@example.com"),
            &bearer,
            &[("idempotency-key", &key)],
        )
        .await;
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["errors"][0]["error"], "ConflictError");
    // Through persist and send: one row, one SES call.
    let sim = pipeline.simulator.clone().expect("simulator");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sim.accepted().contains_key(&id) {
        assert!(Instant::now() < deadline, "the notification was never sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count_rows(&f.writer, f.service_id).await, 1);
    assert_eq!(sim.accepted().get(&id), Some(&1));
    assert_eq!(sim.accepted().len(), 1, "no other notification was sent");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_after_a_failed_enqueue_finishes_the_work_with_the_first_ids() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Normal).await;
    let store: Arc<EmbeddedLimitStore> = Arc::new(EmbeddedLimitStore::new());
    let broken = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    broken.set_unavailable(true);
    let first = f.ingest_with(&stack, broken.clone(), store.clone()).await;
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let second = f.ingest_with(&stack, queue.clone(), store.clone()).await;
    let bearer = f.bearer();
    for (path, body) in [(EMAIL, email(&f, "a@example.com")), (BULK, bulk(&f, 3))] {
        let key = format!("k-{}", Uuid::now_v7());
        let headers = [("idempotency-key", key.as_str())];
        let (code, v) = f.post_with(&first, path, &body, &bearer, &headers).await;
        assert_eq!(code, 503, "{v}");
        let record = store
            .lookup(&IdempotencyKey::parse(f.service_id, &key).unwrap())
            .await
            .unwrap()
            .expect("the claim stays, free to finish");
        assert!(!record.done);
        let planned: Value = serde_json::from_str(&record.response).unwrap();
        let (code, v) = f.post_with(&second, path, &body, &bearer, &headers).await;
        assert_eq!(code, 201, "{v}");
        assert_eq!(
            v, planned,
            "the repeat answers with the first request's ids"
        );
        let (code, again) = f.post_with(&second, path, &body, &bearer, &headers).await;
        assert_eq!((code, &again), (201, &v));
    }
    assert_eq!(queued(&queue, ProcessType::Normal).await, 1);
    assert_eq!(
        queued(&queue, ProcessType::Bulk).await,
        1,
        "one message carries the 3 rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_limit_store_down_requests_are_accepted_and_the_bypass_is_counted() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Normal).await;
    let bearer = f.bearer();
    // The embedded store switched off, and DynamoDB's adapter at an address nobody serves.
    let embedded = Arc::new(EmbeddedLimitStore::new());
    embedded.set_down(true);
    let sdk = local_sdk("http://127.0.0.1:1").await;
    let dynamo = Arc::new(DynamoLimitStore::new(
        DynamoLimitStore::client(&sdk),
        "floodgate-limits",
    ));
    let stores: [Arc<dyn LimitStore>; 2] = [embedded, dynamo];
    for store in stores {
        let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
        let ingest = f.ingest_with(&stack, queue.clone(), store).await;
        let started = Instant::now();
        let mut ids = Vec::new();
        for i in 0..3 {
            let (code, v) = f
                .post_with(
                    &ingest,
                    EMAIL,
                    &email(&f, "a@example.com"),
                    &bearer,
                    &[("idempotency-key", "same")],
                )
                .await;
            assert_eq!(code, 201, "request {i}: {v}");
            ids.push(v["id"].clone());
        }
        let (code, v) = f.post(&ingest, BULK, &bulk(&f, 2)).await;
        assert_eq!(code, 201, "{v}");
        assert_eq!(ingest.limit_bypasses(), 4, "every request counted once");
        assert_ne!(
            ids[0], ids[1],
            "no idempotency without the store: a new notification each time"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "an unreachable store must cost little: {:?}",
            started.elapsed()
        );
        assert_eq!(queued(&queue, ProcessType::Normal).await, 3);
    }
}

/// What both adapters must do alike, at explicit times.
async fn store_semantics(store: &dyn LimitStore) {
    let t0 = Utc::now();
    let at = |s: i64| t0 + TimeDelta::seconds(s);
    let service = Uuid::now_v7();
    let limits = ServiceLimits {
        rate_limit: 3,
        daily_limit: 5,
    };
    let rate = Counter::rate(service, KeyType::Normal, limits);
    for n in 1..=3 {
        assert_eq!(
            store.take(&rate, 1, at(n)).await.unwrap(),
            Take::Taken { count: n as u64 }
        );
    }
    match store.take(&rate, 1, at(10)).await.unwrap() {
        Take::Refused { resets_at, count } => {
            // The count lets a caller take what is left (the SES budget's leases).
            assert_eq!(count, Some(3));
            let end = at(1) + TimeDelta::seconds(60);
            assert!(
                (resets_at - end).num_milliseconds().abs() <= 1,
                "{resets_at} vs {end}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.take(&rate, 1, at(61)).await.unwrap(),
        Take::Taken { count: 1 },
        "refilled"
    );
    let daily = Counter::daily(service, t0.date_naive(), limits);
    assert_eq!(
        store.take(&daily, 4, at(0)).await.unwrap(),
        Take::Taken { count: 4 }
    );
    assert!(matches!(
        store.take(&daily, 2, at(1)).await.unwrap(),
        Take::Refused { .. }
    ));
    store.give_back(&daily, 3).await.unwrap();
    assert_eq!(
        store.take(&daily, 2, at(2)).await.unwrap(),
        Take::Taken { count: 3 }
    );
    assert!(matches!(
        store.take(&daily, 6, at(2)).await.unwrap(),
        Take::Refused { .. }
    ));

    let key = IdempotencyKey::parse(service, "k").unwrap();
    let record = IdempotencyRecord {
        fingerprint: "f".into(),
        status: 201,
        response: "{\"id\":1}".into(),
        done: false,
        claimed_at: at(0),
        expires_at: at(100),
    };
    assert_eq!(
        store.claim(&key, &record, at(0)).await.unwrap(),
        Claim::Claimed
    );
    let second = IdempotencyRecord {
        fingerprint: "g".into(),
        ..record.clone()
    };
    match store.claim(&key, &second, at(1)).await.unwrap() {
        Claim::Existing(r) => assert_eq!(r.fingerprint, "f"),
        Claim::Claimed => panic!("claimed twice"),
    }
    let claimed_at = store.lookup(&key).await.unwrap().unwrap().claimed_at;
    assert!(
        !store.take_over(&key, at(-5), at(40)).await.unwrap(),
        "not the claim seen"
    );
    assert!(store.take_over(&key, claimed_at, at(40)).await.unwrap());
    store.settle(&key).await.unwrap();
    store.release(&key).await.unwrap();
    let r = store
        .lookup(&key)
        .await
        .unwrap()
        .expect("a settled record is not released");
    assert!(r.done);
    assert!(
        !store.take_over(&key, r.claimed_at, at(50)).await.unwrap(),
        "done is final"
    );
    // Expired: free again, even before the store deletes it.
    assert_eq!(
        store.claim(&key, &second, at(101)).await.unwrap(),
        Claim::Claimed
    );
    store.release(&key).await.unwrap();
    assert_eq!(store.lookup(&key).await.unwrap(), None);
}

#[tokio::test]
async fn both_limit_store_adapters_count_claim_and_expire_alike() {
    store_semantics(&EmbeddedLimitStore::new()).await;
    let stack = shared_stack().await;
    let sdk = local_sdk(&stack.moto_endpoint().expect("moto")).await;
    let client = DynamoLimitStore::client(&sdk);
    let table = format!("limits-{}", Uuid::now_v7().simple());
    DynamoLimitStore::create_table(&client, &table)
        .await
        .expect("table");
    store_semantics(&DynamoLimitStore::new(client, table)).await;
}

#[tokio::test]
async fn the_dynamodb_adapter_says_unavailable_quickly_when_nothing_answers() {
    let sdk = local_sdk("http://127.0.0.1:1").await;
    let store = DynamoLimitStore::new(DynamoLimitStore::client(&sdk), "t");
    let counter = Counter::rate(Uuid::now_v7(), KeyType::Normal, ServiceLimits::default());
    let started = Instant::now();
    let r = store.take(&counter, 1, Utc::now()).await;
    assert!(matches!(r, Err(LimitStoreError::Unavailable(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
