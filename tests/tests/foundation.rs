//! The foundation against real services: PostgreSQL primary + streaming replica, PgBouncer
//! in transaction mode, moto server. Each test owns a fresh service id.

use floodgate_aws::{OutgoingMessage, Queue, QueueLimits, SqsQueue};
use floodgate_core::{
    IntakeEnvelope, Knobs, NotificationStatus, ProcessType, QueueName, SendEnvelope, pack_intake,
};
use floodgate_db::tokio_postgres::types::Type;
use floodgate_db::{DbError, LaneConfig, LaneKind, WriterLane};
use floodgate_e2e::*;
use floodgate_emulators::EmbeddedQueue;
use floodgate_local::StackOptions;
use floodgate_persist::Persist;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn persist_with(writer: floodgate_db::WriterLane, queue: Arc<dyn Queue>) -> Persist {
    Persist::new(writer, queue, Arc::new(Knobs::embedded()))
}

fn bodies_for(batch: &[floodgate_core::IntakeNotification], per_message: usize) -> Vec<String> {
    batch
        .chunks(per_message)
        .flat_map(|c| pack_intake(c, 262_144).expect("packs"))
        .collect()
}

/// Drains a queue and returns the send envelopes on it.
async fn drain_send(queue: &dyn Queue, name: QueueName) -> Vec<SendEnvelope> {
    let mut out = Vec::new();
    loop {
        let msgs = queue
            .receive(name, 10, Duration::from_millis(200))
            .await
            .expect("receive");
        if msgs.is_empty() {
            return out;
        }
        let handles: Vec<String> = msgs.iter().map(|m| m.receipt_handle.clone()).collect();
        for m in msgs {
            out.push(SendEnvelope::decode(&m.body).expect("a send envelope"));
        }
        queue.delete_batch(name, &handles).await.expect("delete");
    }
}

#[tokio::test]
async fn a_batch_of_1000_is_one_transaction_and_a_redelivery_changes_nothing() {
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..1000)
        .map(|i| notification(service, ProcessType::Bulk, i))
        .collect();
    let event = sqs_event(&bodies_for(&batch, 100));
    assert_eq!(event.records.len(), 10);
    let persist = persist_with(
        writer_lane(&stack, |_| {}).await,
        Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
    );

    let (resp, report) = persist.handle(event.clone()).await.expect("handled");
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(report.inserted, 1000);
    assert_eq!(report.fallbacks, 0, "a new batch goes in by COPY");
    let writer = writer_lane(&stack, |_| {}).await;
    assert_eq!(count_rows(&writer, service).await, 1000);
    // One transaction: every row carries the same inserting transaction id.
    let conn = writer.acquire().await.unwrap();
    let xmins: i64 = conn
        .bounded(conn.query_typed_one(
            "SELECT count(DISTINCT xmin::text) FROM notifications WHERE service_id = $1",
            &[(&service, Type::UUID)],
        ))
        .await
        .unwrap()
        .get(0);
    assert_eq!(xmins, 1, "rows were committed by {xmins} transactions");
    drop(conn);

    // SQS delivers the same batch again: no duplicate, no failure.
    let (resp, report) = persist.handle(event).await.expect("handled");
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(report.inserted, 0);
    assert_eq!(report.fallbacks, 1, "the stored rows end the COPY");
    assert_eq!(count_rows(&writer, service).await, 1000);
}

#[tokio::test]
async fn a_batch_half_stored_already_stores_exactly_the_other_half() {
    // A redelivered message beside new ones: the rows already stored end the fast COPY
    // with a unique violation, and the fallback must store the new rows and only them.
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..1000)
        .map(|i| notification(service, ProcessType::Bulk, i))
        .collect();
    let persist = persist_with(
        writer_lane(&stack, |_| {}).await,
        Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
    );
    let (_, first) = persist
        .handle(sqs_event(&bodies_for(&batch[500..], 100)))
        .await
        .expect("handled");
    assert_eq!(first.inserted, 500);
    let (resp, report) = persist
        .handle(sqs_event(&bodies_for(&batch, 100)))
        .await
        .expect("handled");
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(
        report.inserted, 500,
        "only the rows not stored before: {report:?}"
    );
    assert_eq!(report.forwarded, 1000, "every id is forwarded again");
    assert_eq!(report.fallbacks, 1);
    let writer = writer_lane(&stack, |_| {}).await;
    assert_eq!(count_rows(&writer, service).await, 1000);
}

#[tokio::test]
async fn concurrent_copies_through_a_small_transaction_pool_never_leave_a_statement_behind() {
    // Eight instances share two server connections behind the transaction pooler, so each
    // server connection serves many clients in turn. Each client names its prepared
    // statements s0, s1, …: one left on a server connection after its transaction would
    // make the next client's COPY fail ("already exists"), which shows up as a fallback.
    let stack = start_migrated(StackOptions {
        proxy_pool_size: 2,
        ..StackOptions::default()
    })
    .await;
    let service = Uuid::now_v7();
    let mut tasks = Vec::new();
    for instance in 0..8 {
        let persist = persist_with(
            writer_lane(&stack, |_| {}).await,
            Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
        );
        tasks.push(tokio::spawn(async move {
            let mut fallbacks = 0;
            for round in 0..10 {
                let batch: Vec<_> = (0..200)
                    .map(|i| {
                        notification(
                            service,
                            ProcessType::Bulk,
                            (instance * 10 + round) * 200 + i,
                        )
                    })
                    .collect();
                let (resp, report) = persist
                    .handle(sqs_event(&bodies_for(&batch, 100)))
                    .await
                    .expect("handled");
                assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
                assert_eq!(report.inserted, 200, "{report:?}");
                fallbacks += report.fallbacks;
            }
            fallbacks
        }));
    }
    let mut fallbacks = 0;
    for t in tasks {
        fallbacks += t.await.expect("task");
    }
    assert_eq!(fallbacks, 0, "every batch went in by COPY");
    let writer = writer_lane(&stack, |_| {}).await;
    assert_eq!(count_rows(&writer, service).await, 8 * 10 * 200);
}

/// The nice value of a running process, from `/proc/<pid>/stat` (field 19).
fn nice_of(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after_name = &stat[stat.rfind(')').expect("name") + 2..];
    after_name
        .split_whitespace()
        .nth(16)
        .and_then(|f| f.parse().ok())
        .expect("nice field")
}

#[tokio::test]
async fn the_pipeline_side_runs_at_the_nice_value_asked_and_the_read_side_does_not() {
    let stack = start_migrated(StackOptions {
        pipeline_nice: 10,
        ..StackOptions::default()
    })
    .await;
    assert_eq!(nice_of(stack.primary_pid().unwrap()), 10, "the primary");
    assert_eq!(
        nice_of(stack.writer_proxy_pid().unwrap()),
        10,
        "the writer proxy"
    );
    let ours = nice_of(std::process::id());
    assert_eq!(nice_of(stack.replica_pid().unwrap()), ours, "the replica");
    assert_eq!(
        nice_of(stack.reader_proxy_pid().unwrap()),
        ours,
        "the reader proxy"
    );
    // The primary's backends inherit it: a query through the writer proxy runs niced.
    let writer = writer_lane(&stack, |_| {}).await;
    let conn = writer.acquire().await.unwrap();
    let backend: i32 = conn
        .bounded(conn.query_typed_one("SELECT pg_backend_pid()", &[]))
        .await
        .unwrap()
        .get(0);
    assert_eq!(nice_of(backend as u32), 10, "a primary backend");
}

#[tokio::test]
async fn one_malformed_message_fails_alone() {
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..99)
        .map(|i| notification(service, ProcessType::Normal, i))
        .collect();
    let mut bodies = bodies_for(&batch, 1);
    bodies.insert(
        42,
        r#"{"v":1,"notifications":[{"id":"not-a-uuid"}]}"#.to_string(),
    );
    let event = sqs_event(&bodies);
    assert_eq!(event.records.len(), 100);
    let writer = writer_lane(&stack, |_| {}).await;
    let persist = persist_with(
        writer.clone(),
        Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
    );
    let (resp, _) = persist.handle(event).await.expect("handled");
    let failed: Vec<_> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec!["m-42".to_string()]);
    assert_eq!(count_rows(&writer, service).await, 99);
}

#[tokio::test]
async fn forwarded_ids_land_on_their_process_types_send_queue_embedded() {
    let queue: Arc<dyn Queue> = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    forwarded_ids_land_on_their_process_types_send_queue(queue).await;
}

#[tokio::test]
async fn forwarded_ids_land_on_their_process_types_send_queue_moto() {
    let stack = shared_stack().await;
    let sdk = local_aws_config(&stack.moto_endpoint().expect("moto")).await;
    let prefix = format!("fwd-{}", Uuid::now_v7().simple());
    let queue = SqsQueue::create_all(
        aws_sdk_sqs::Client::new(&sdk),
        &prefix,
        Duration::from_secs(30),
        3,
    )
    .await
    .expect("queues created in moto");
    forwarded_ids_land_on_their_process_types_send_queue(Arc::new(queue)).await;
}

async fn forwarded_ids_land_on_their_process_types_send_queue(queue: Arc<dyn Queue>) {
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    let mut batch = Vec::new();
    for (k, process_type) in ProcessType::ALL.into_iter().enumerate() {
        for i in 0..(5 + 7 * k) {
            batch.push(notification(service, process_type, i));
        }
    }
    let persist = persist_with(writer_lane(&stack, |_| {}).await, queue.clone());
    let (resp, report) = persist
        .handle(sqs_event(&bodies_for(&batch, 4)))
        .await
        .expect("handled");
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(report.forwarded, batch.len());
    let knobs = Knobs::embedded();
    for process_type in ProcessType::ALL {
        let expected: BTreeSet<Uuid> = batch
            .iter()
            .filter(|n| n.process_type == process_type)
            .map(|n| n.id)
            .collect();
        let envelopes = drain_send(queue.as_ref(), QueueName::Send(process_type)).await;
        let mut got = BTreeSet::new();
        for e in &envelopes {
            assert_eq!(e.process_type, process_type);
            assert!(e.notification_ids.len() <= knobs.send_ids_per_message(process_type));
            got.extend(e.notification_ids.iter().copied());
        }
        assert_eq!(got, expected, "send-{process_type}");
    }
}

#[tokio::test]
async fn persisted_rows_are_readable_through_the_reader_lane() {
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..50)
        .map(|i| notification(service, ProcessType::Priority, i))
        .collect();
    let persist = persist_with(
        writer_lane(&stack, |_| {}).await,
        Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
    );
    persist
        .handle(sqs_event(&bodies_for(&batch, 10)))
        .await
        .expect("handled");
    stack
        .wait_replica_caught_up(Duration::from_secs(20))
        .await
        .expect("replica catches up");
    let reader = reader_lane(&stack).await;
    let conn = reader.acquire().await.unwrap();
    let on_replica: i64 = conn
        .query_one(
            "SELECT count(*) FROM notifications WHERE service_id = $1",
            &[&service],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_replica, 50);
    // And the reader really is the replica.
    let in_recovery: bool = conn
        .bounded(conn.query_typed_one("SELECT pg_is_in_recovery()", &[]))
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "reader lane must reach the standby");
}

#[tokio::test]
async fn a_lane_never_opens_more_than_its_size_and_times_out_cleanly() {
    let stack = shared_stack().await;
    let app = format!("lane-bounds-{}", Uuid::now_v7().simple());
    // Straight to the primary, so pg_stat_activity shows this lane's own sessions.
    let mut cfg = LaneConfig::new(LaneKind::Writer, stack.primary_url(), &app);
    cfg.max_size = 2;
    cfg.acquire_timeout = Duration::from_secs(30);
    let lane = WriterLane::open(cfg).await.unwrap();

    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop, url, app) = (peak.clone(), stop.clone(), stack.primary_url(), app.clone());
        tokio::spawn(async move {
            let (c, conn) =
                floodgate_db::tokio_postgres::connect(&url, floodgate_db::tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::SeqCst) {
                let n: i64 = c
                    .query_typed_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        &[(&app, Type::TEXT)],
                    )
                    .await
                    .unwrap()
                    .get(0);
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let lane = lane.clone();
            tokio::spawn(async move {
                let conn = lane.acquire().await.expect("acquire within 30 s");
                conn.bounded(conn.batch_execute("SELECT pg_sleep(0.02)"))
                    .await
                    .expect("query");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let counters = lane.counters().snapshot();
    assert_eq!(counters.acquires, 50);
    assert!(
        peak.load(Ordering::SeqCst) >= 1,
        "sampler saw the lane's sessions"
    );
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "peak {} sessions",
        peak.load(Ordering::SeqCst)
    );
    assert!(counters.connections_opened <= 2, "{counters:?}");

    // An acquire beyond the timeout fails cleanly, and the lane still works afterwards.
    let mut cfg = LaneConfig::new(LaneKind::Writer, stack.primary_url(), &app);
    cfg.max_size = 1;
    cfg.acquire_timeout = Duration::from_millis(200);
    let small = WriterLane::open(cfg).await.unwrap();
    let held = small.acquire().await.unwrap();
    let started = Instant::now();
    let err = small
        .acquire()
        .await
        .err()
        .expect("second acquire must time out");
    assert!(matches!(err, DbError::AcquireTimeout { .. }), "{err}");
    assert!(err.is_unavailable());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(small.counters().snapshot().acquire_timeouts, 1);
    drop(held);
    let again = small.acquire().await.expect("free again after release");
    again
        .bounded(again.batch_execute("SELECT 1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_or_interrupted_operation_discards_its_connection() {
    let stack = shared_stack().await;
    let mut cfg = LaneConfig::new(LaneKind::Writer, stack.writer_url(), "discard-test");
    cfg.max_size = 1;
    cfg.operation_timeout = Duration::from_millis(300);
    let lane = WriterLane::open(cfg).await.unwrap();
    {
        let conn = lane.acquire().await.unwrap();
        let err = conn
            .bounded(conn.batch_execute("SELECT pg_sleep(5)"))
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::OperationTimeout { .. }), "{err}");
    }
    {
        // A panic while holding a connection: the slot comes back.
        let lane2 = lane.clone();
        let r = tokio::spawn(async move {
            let _conn = lane2.acquire().await.unwrap();
            panic!("handler bug");
        })
        .await;
        assert!(r.is_err());
    }
    let conn = lane
        .acquire()
        .await
        .expect("the slot was returned on every path");
    conn.bounded(conn.batch_execute("SELECT 1")).await.unwrap();
    let c = lane.counters().snapshot();
    assert_eq!(c.operation_timeouts, 1);
    assert!(c.discarded >= 2, "{c:?}");
}

#[tokio::test]
async fn statement_timeout_comes_from_role_defaults_through_the_proxy() {
    let stack = shared_stack().await;
    let writer = writer_lane(&stack, |_| {}).await;
    let conn = writer.acquire().await.unwrap();
    let rows = conn
        .bounded(conn.simple_query("SHOW statement_timeout"))
        .await
        .unwrap();
    assert_eq!(
        floodgate_local::services::first_value(&rows).as_deref(),
        Some("30s")
    );
}

#[tokio::test]
async fn schema_status_rank_matches_the_rust_rule() {
    let stack = shared_stack().await;
    let writer = writer_lane(&stack, |_| {}).await;
    let conn = writer.acquire().await.unwrap();
    for s in NotificationStatus::ALL {
        let rank: i16 = conn
            .bounded(conn.query_typed_one(
                "SELECT notification_status_rank($1)",
                &[(&s.as_str(), Type::TEXT)],
            ))
            .await
            .unwrap()
            .get(0);
        assert_eq!(rank, s.rank(), "{s}");
    }
}

#[tokio::test]
async fn partitions_carry_hot_settings_and_retention_drops_whole_days() {
    let stack = shared_stack().await;
    let writer = writer_lane(&stack, |_| {}).await;
    let conn = writer.acquire().await.unwrap();
    // Migrations are idempotent.
    let applied = conn.bounded(floodgate_db::migrate(&conn)).await.unwrap();
    assert!(applied.is_empty(), "{applied:?}");
    let today = chrono::Utc::now().date_naive();
    let part = format!("notifications_{}", today.format("%Y%m%d"));
    let opts: Vec<String> = conn
        .bounded(conn.query_typed_one(
            "SELECT reloptions FROM pg_class WHERE relname = $1",
            &[(&part, Type::TEXT)],
        ))
        .await
        .unwrap()
        .get(0);
    assert!(opts.contains(&"fillfactor=30".to_string()), "{opts:?}");
    assert!(
        opts.iter()
            .any(|o| o.starts_with("autovacuum_vacuum_scale_factor")),
        "{opts:?}"
    );

    // An old day's partition is dropped whole by maintenance; today's stays.
    let old = today - chrono::Days::new(400);
    let created = conn
        .bounded(floodgate_db::ensure_partitions(&conn, old, old))
        .await
        .unwrap();
    assert_eq!(created, 1);
    let m = conn
        .bounded(floodgate_db::maintain_partitions(&conn, today, 3, 300))
        .await
        .unwrap();
    assert!(m.dropped >= 1, "{m:?}");
    let left: i64 = conn
        .bounded(conn.query_typed_one(
            "SELECT count(*) FROM pg_class WHERE relname = $1 OR relname = $2",
            &[
                (
                    &format!("notifications_{}", old.format("%Y%m%d")),
                    Type::TEXT,
                ),
                (&part, Type::TEXT),
            ],
        ))
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "old partition dropped, today's kept");
}

#[tokio::test]
async fn a_missing_partition_is_created_on_demand() {
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    // A notification dated 20 days ahead: no partition exists for that day yet.
    let mut n = notification(service, ProcessType::Normal, 0);
    let future = chrono::Utc::now() + chrono::Duration::days(20);
    let ms = future.timestamp_millis() as u64;
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    n.id = Uuid::new_v7(ts);
    n.created_at = floodgate_core::envelope::created_at_of(n.id).unwrap();
    let persist = persist_with(
        writer_lane(&stack, |_| {}).await,
        Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
    );
    let (resp, report) = persist
        .handle(sqs_event(&bodies_for(&[n], 1)))
        .await
        .unwrap();
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(report.inserted, 1, "{report:?}");
}

// ----- queue contract: the same behaviour from both adapters -----

async fn queue_contract(queue: &dyn Queue, visibility: Duration) {
    let q = QueueName::Intake(ProcessType::Priority);
    // Limits.
    let eleven: Vec<OutgoingMessage> = (0..11)
        .map(|i| OutgoingMessage::now(format!("b{i}")))
        .collect();
    assert!(
        queue.send_batch(q, &eleven).await.is_err(),
        "11 entries must be refused"
    );
    // Send, receive, delete.
    let bodies: Vec<OutgoingMessage> = (0..3)
        .map(|i| OutgoingMessage::now(format!("body-{i}")))
        .collect();
    let r = queue.send_batch(q, &bodies).await.expect("send");
    assert!(r.iter().all(Result::is_ok));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 3 && Instant::now() < deadline {
        got.extend(
            queue
                .receive(q, 10, Duration::from_secs(1))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(
        got.iter().map(|m| m.body.clone()).collect::<HashSet<_>>(),
        bodies
            .iter()
            .map(|m| m.body.clone())
            .collect::<HashSet<_>>()
    );
    assert!(got.iter().all(|m| m.receive_count == 1));
    // Delete two; the third comes back after the visibility timeout with a higher count.
    let keep = got.pop().unwrap();
    let handles: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    queue.delete_batch(q, &handles).await.expect("delete");
    assert!(
        queue
            .receive(q, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "invisible while in flight"
    );
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    let again = queue.receive(q, 10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, keep.body);
    assert_eq!(again[0].receive_count, 2);
    // maxReceiveCount is 2: after this second receive expires, it goes to the DLQ.
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    let none = queue.receive(q, 10, Duration::from_secs(1)).await.unwrap();
    assert!(
        none.is_empty(),
        "redriven to the DLQ, not redelivered: {none:?}"
    );
    let stats = queue.stats(q).await.unwrap();
    assert_eq!(stats.dead_letters, 1, "{stats:?}");
    assert_eq!(stats.visible + stats.in_flight, 0, "{stats:?}");
}

#[tokio::test]
async fn queue_contract_embedded() {
    let q = EmbeddedQueue::uniform(Duration::from_secs(1), 2);
    queue_contract(&q, Duration::from_secs(1)).await;
    let dead = q.dead_letters(QueueName::Intake(ProcessType::Priority));
    assert_eq!(dead.len(), 1);
    assert!(dead[0].starts_with("body-"), "{dead:?}");
}

#[tokio::test]
async fn queue_contract_moto() {
    let stack = shared_stack().await;
    let sdk = local_aws_config(&stack.moto_endpoint().expect("moto")).await;
    let prefix = format!("contract-{}", Uuid::now_v7().simple());
    let q = SqsQueue::create_all(
        aws_sdk_sqs::Client::new(&sdk),
        &prefix,
        Duration::from_secs(1),
        2,
    )
    .await
    .expect("queues created");
    queue_contract(&q, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn intake_envelopes_round_trip_through_moto_at_the_size_limit() {
    let stack = shared_stack().await;
    let sdk = local_aws_config(&stack.moto_endpoint().expect("moto")).await;
    let prefix = format!("size-{}", Uuid::now_v7().simple());
    let q = SqsQueue::create_all(
        aws_sdk_sqs::Client::new(&sdk),
        &prefix,
        Duration::from_secs(30),
        3,
    )
    .await
    .unwrap();
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..2000)
        .map(|i| notification(service, ProcessType::Bulk, i))
        .collect();
    let bodies = pack_intake(&batch, 262_144).unwrap();
    assert!(bodies.len() >= 2);
    let name = QueueName::Intake(ProcessType::Bulk);
    let results = floodgate_aws::send_all(&q, name, &bodies, QueueLimits::default()).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut ids = Vec::new();
    while ids.len() < batch.len() {
        let msgs = q.receive(name, 10, Duration::from_secs(2)).await.unwrap();
        assert!(!msgs.is_empty(), "all messages arrive");
        for m in msgs {
            ids.extend(
                IntakeEnvelope::decode(&m.body)
                    .unwrap()
                    .notifications
                    .into_iter()
                    .map(|n| n.id),
            );
        }
    }
    let expected: BTreeMap<Uuid, ()> = batch.iter().map(|n| (n.id, ())).collect();
    let got: BTreeMap<Uuid, ()> = ids.into_iter().map(|i| (i, ())).collect();
    assert_eq!(got, expected);
}

// ----- fault: the primary goes away -----

#[tokio::test]
async fn with_the_primary_stopped_the_batch_is_deferred_fast_and_succeeds_after_restart() {
    let mut stack = start_migrated(StackOptions {
        proxy_borrow_timeout_s: 2,
        ..StackOptions::default()
    })
    .await;
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..200)
        .map(|i| notification(service, ProcessType::Normal, i))
        .collect();
    let event = sqs_event(&bodies_for(&batch, 20));
    let writer = writer_lane(&stack, |c| {
        c.acquire_timeout = Duration::from_millis(500);
        c.operation_timeout = Duration::from_secs(3);
    })
    .await;
    let queue = Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5));
    let persist = persist_with(writer.clone(), queue.clone());
    // Warm the process type so a pooled connection exists when the database goes away.
    assert_eq!(count_rows(&writer, service).await, 0);

    stack.stop_primary();
    let started = Instant::now();
    let (resp, report) = persist.handle(event.clone()).await.expect("handled");
    let took = started.elapsed();
    // An unavailable database is backpressure, not a bad message: the batch is deferred
    // (re-enqueued with a delay), so no receive is spent however long the outage lasts.
    assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
    assert_eq!(report.deferred, event.records.len());
    assert_eq!(report.inserted, 0);
    let q = QueueName::Intake(ProcessType::Normal);
    let stats = queue.stats(q).await.unwrap();
    assert_eq!(stats.delayed, event.records.len() as u64, "{stats:?}");
    // Bounded by the process type (acquire 0.5 s + operation 3 s), far below a 30 s function timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");

    stack.start_primary().await.expect("primary restarts");
    // The deferred messages come back after the first backoff delay (10 s as shipped;
    // taken here without waiting) carrying their deferral count; PgBouncer reconnects on
    // its own and the process type replaced its broken connection.
    let mut deferred = Vec::new();
    while deferred.len() < event.records.len() {
        let got = queue.receive(q, 10, Duration::from_secs(15)).await.unwrap();
        assert!(!got.is_empty(), "deferred messages came back");
        deferred.extend(got);
    }
    assert!(
        deferred
            .iter()
            .all(|m| m.deferral.map(|d| d.count) == Some(1))
    );
    let retry = floodgate_local::topology::esm::to_event(q, &deferred);
    let mut ok = false;
    for _ in 0..20 {
        let (resp, report) = persist.handle(retry.clone()).await.expect("handled");
        if resp.batch_item_failures.is_empty() && report.deferred == 0 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "the same batch succeeds after the restart");
    assert_eq!(count_rows(&writer, service).await, 200);
}

#[tokio::test]
async fn the_same_batch_inserted_concurrently_stores_each_notification_once() {
    let stack = shared_stack().await;
    let service = Uuid::now_v7();
    let batch: Arc<Vec<_>> = Arc::new(
        (0..300)
            .map(|i| notification(service, ProcessType::Normal, i))
            .collect(),
    );
    // Invocation A has inserted the batch but not committed yet when invocation B, holding
    // the same redelivered messages, inserts it too: B's COPY cannot see A's rows, so B
    // waits on the unique index and, once A commits, gets a unique violation — which must
    // fall back to the statement that skips stored rows and succeed with nothing inserted.
    // A is held open mid-transaction with a plain INSERT of the same rows.
    let lane_a = WriterLane::open(LaneConfig::new(
        LaneKind::Writer,
        stack.writer_url(),
        "race-a",
    ))
    .await
    .unwrap();
    let a = lane_a.acquire().await.unwrap();
    a.bounded(a.batch_execute("BEGIN")).await.unwrap();
    let ids: Vec<Uuid> = batch.iter().map(|n| n.id).collect();
    let created: Vec<chrono::DateTime<chrono::Utc>> = batch.iter().map(|n| n.created_at).collect();
    let first = a
        .bounded(a.execute_typed(
            "INSERT INTO notifications (id, created_at, service_id, template_id, \
             template_version, process_type, key_type, email_address)
             SELECT u.id, u.created_at, $3, $3, 1, 'normal', 'normal', 'a@example.com'
             FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, created_at)",
            &[
                (&ids, Type::UUID_ARRAY),
                (&created, Type::TIMESTAMPTZ_ARRAY),
                (&service, Type::UUID),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(first, 300);
    let b_task = {
        let (batch, url) = (batch.clone(), stack.writer_url());
        tokio::spawn(async move {
            let lane = WriterLane::open(LaneConfig::new(LaneKind::Writer, url, "race-b")).await?;
            let conn = lane.acquire().await?;
            conn.bounded(floodgate_db::insert_notifications(&conn, &batch))
                .await
                .map(|o| o.inserted)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !b_task.is_finished(),
        "B must be waiting on A's uncommitted rows"
    );
    a.bounded(a.batch_execute("COMMIT")).await.unwrap();
    let second = b_task.await.unwrap().expect("the redelivery must not fail");
    assert_eq!(second, 0, "nothing inserted twice");
    let writer = writer_lane(&stack, |_| {}).await;
    assert_eq!(count_rows(&writer, service).await, 300);
}

#[tokio::test]
async fn the_admin_maintain_command_creates_partitions_ahead_and_sweeps() {
    let stack = shared_stack().await;
    let writer = writer_lane(&stack, |_| {}).await;
    let out: floodgate_admin::AdminOutcome = serde_json::from_value(
        floodgate_admin::Admin::new(writer.clone(), None, None, None)
            .execute(&floodgate_admin::AdminCommand::Maintain { retention_days: 14 })
            .await
            .expect("maintain runs"),
    )
    .expect("the outcome");
    assert!(out.applied_migrations.is_empty());
    // No send ran in this binary's stack: nothing to sweep.
    assert_eq!(out.sending_timed_out, 0);
    let ahead =
        chrono::Utc::now().date_naive() + chrono::Days::new(floodgate_admin::PARTITIONS_AHEAD_DAYS);
    let conn = writer.acquire().await.unwrap();
    let exists: bool = conn
        .bounded(conn.query_typed_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[(
                &format!("notifications_{}", ahead.format("%Y%m%d")),
                Type::TEXT,
            )],
        ))
        .await
        .unwrap()
        .get(0);
    assert!(exists, "partition {ahead} exists");
}

#[tokio::test]
async fn function_roles_bootstrap_idempotently_with_row_privileges_and_role_defaults() {
    let stack = shared_stack().await;
    // A name of this run's own, so a kept stack never sees it twice.
    let suffix = Uuid::now_v7().simple().to_string();
    let role = format!("floodgate_persist_t{}", &suffix[suffix.len() - 8..]);
    let users = vec![role.clone()];

    // As the superuser, straight to the primary (on AWS: the master on the writer endpoint).
    let master = WriterLane::open(LaneConfig::new(
        LaneKind::Writer,
        stack.primary_url(),
        "floodgate-test",
    ))
    .await
    .unwrap();
    let conn = master.acquire().await.unwrap();
    for _ in 0..2 {
        conn.bounded(floodgate_db::roles::bootstrap_roles(&conn, &users, false))
            .await
            .expect("bootstrap runs, and runs again");
    }
    let login: bool = conn
        .bounded(conn.query_typed_one(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[(&role, Type::TEXT)],
        ))
        .await
        .unwrap()
        .get(0);
    assert!(login);

    // As the new role.
    let lane = WriterLane::open(LaneConfig::new(
        LaneKind::Writer,
        format!(
            "postgres://{role}@127.0.0.1:{}/floodgate",
            stack.primary_port
        ),
        "floodgate-test",
    ))
    .await
    .unwrap();
    let as_role = lane.acquire().await.unwrap();
    let service = Uuid::now_v7();
    let batch: Vec<_> = (0..3)
        .map(|i| notification(service, ProcessType::Normal, i))
        .collect();
    let out = as_role
        .bounded(floodgate_db::insert_notifications(&as_role, &batch))
        .await
        .expect("the role can insert notifications");
    assert_eq!(out.inserted, 3);
    let n: i64 = as_role
        .bounded(as_role.query_typed_one(
            "SELECT count(*) FROM notifications WHERE service_id = $1",
            &[(&service, Type::UUID)],
        ))
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "and read them back");

    for (setting, expected) in [
        ("statement_timeout", "10s"),
        ("idle_in_transaction_session_timeout", "1min"),
        ("session_authorization", role.as_str()),
    ] {
        let rows = as_role
            .bounded(as_role.simple_query(&format!("SHOW {setting}")))
            .await
            .unwrap();
        assert_eq!(
            floodgate_local::services::first_value(&rows).as_deref(),
            Some(expected),
            "{setting}"
        );
    }

    let e = as_role
        .bounded(as_role.batch_execute("DROP TABLE notifications"))
        .await
        .expect_err("a function role cannot drop the schema's tables");
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
    drop(as_role);
    // The on-demand partition creator runs with its owner's rights (migration 4), so
    // persist's fallback works for a role that owns nothing; dropping stays the owner's.
    let as_role = lane.acquire().await.expect("connect as the function role");
    let far = chrono::Utc::now().date_naive() + chrono::Days::new(300);
    let created = as_role
        .bounded(floodgate_db::ensure_partitions(&as_role, far, far))
        .await
        .expect("a function role creates a missing partition");
    assert!(created <= 1);
    let e = as_role
        .bounded(as_role.query_typed(
            "SELECT drop_notification_partitions_before(current_date + 301)",
            &[],
        ))
        .await
        .expect_err("a function role cannot drop partitions");
    assert_eq!(e.sqlstate(), Some("42501"), "{e}");
    drop(as_role);
    drop(lane);

    conn.bounded(conn.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";")))
        .await
        .expect("clean up the role");
}
