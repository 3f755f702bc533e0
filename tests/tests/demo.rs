//! The main job end to end: the whole topology on this machine (real PostgreSQL primary +
//! replica, PgBouncer, the five functions in-process behind the HTTP front and ESM
//! emulation) with a blast through the HTTP API, judged by its report.

use floodgate_local::demo::{DemoOptions, Outage, demo};
use std::time::Duration;

/// One demo at a time: each starts its own services, and the 2-core machine is the limit.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(notifications: usize, report_dir: &std::path::Path) -> DemoOptions {
    DemoOptions {
        notifications,
        report_dir: report_dir.to_path_buf(),
        progress: false,
        idle_baseline: Duration::from_secs(2),
        critical_reads_per_s: 20.0,
        drain_timeout: Duration::from_secs(300),
        ..DemoOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blast_with_duplicates_and_throttling_loses_and_duplicates_nothing() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = demo(DemoOptions {
        throttle_fraction: 0.2,
        duplicate_every: 7,
        // Every interval of the pipeline ÷ 10 (throttled notifications come back after
        // their deferral, refused callbacks after 30 s instead of 5 minutes).
        time_scale: 10.0,
        callback_failures: Some(0.1),
        bulk_rows: 250,
        ..options(2_000, dir.path())
    })
    .await
    .expect("demo runs");
    let r = &outcome.report;
    println!("{}", r.text());
    assert_eq!(r.requested, 2_020);
    assert_eq!(r.accepted, 2_020, "every request accepted");
    assert_eq!(r.lost, 0);
    assert_eq!(r.duplicate_rows, 0);
    assert_eq!(r.duplicate_sends, 0);
    assert_eq!(r.not_final, 0, "every notification reached a final status");
    assert_eq!(
        r.wrong_final_status, 0,
        "each status is what its address implies"
    );
    // Every simulator outcome is present in the mix.
    assert!(r.final_by_status.get("delivered").copied().unwrap_or(0) > 0);
    assert!(
        r.final_by_status
            .get("permanent-failure")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(
        r.peak_lane_connections <= r.connection_budget,
        "{}",
        r.text()
    );
    assert!(
        r.peak_primary_connections <= r.connection_budget,
        "{}",
        r.text()
    );
    assert!(r.peak_lane_connections > 0, "the sampler saw the lanes");
    assert_eq!(outcome.dead_letters, 0, "DLQs empty");
    let callbacks = outcome.callbacks.expect("callbacks were on");
    println!("{}", callbacks.text());
    assert_eq!(callbacks.lost, 0, "{callbacks:?}");
    assert_eq!(
        callbacks.expected_status, 2_020,
        "every final status owes a callback"
    );
    assert!(callbacks.expected_complaints > 0, "{callbacks:?}");
    assert!(
        callbacks.retried > 0,
        "refused callbacks were retried: {callbacks:?}"
    );
    let png = std::fs::read(dir.path().join("report.png")).expect("report.png written");
    assert!(png.starts_with(b"\x89PNG"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["lost"], 0);
    assert!(json["timeline"].as_array().is_some_and(|t| !t.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_primary_down_for_10_s_mid_blast_ingest_accepts_and_nothing_is_lost() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = demo(DemoOptions {
        // Slow enough that the outage falls inside the blast.
        rate: Some(120.0),
        concurrency: 8,
        bulk_rows: 200,
        outage: Some(Outage {
            after: Duration::from_secs(1),
            length: Duration::from_secs(10),
        }),
        visibility_timeout: Some(Duration::from_secs(30)),
        ..options(2_000, dir.path())
    })
    .await
    .expect("demo runs");
    let r = &outcome.report;
    println!("{}", r.text());
    assert!(
        r.blast_seconds > 5.0,
        "the outage overlapped the blast: {}",
        r.blast_seconds
    );
    assert_eq!(
        r.rejected, 0,
        "ingest kept answering 201 while the primary was down"
    );
    assert_eq!(r.accepted, 2_020);
    assert_eq!(r.lost, 0);
    assert_eq!(r.duplicate_rows, 0);
    assert_eq!(r.duplicate_sends, 0);
    assert_eq!(r.not_final, 0);
    assert_eq!(outcome.dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_run_through_moto_sqs_and_ses() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = demo(DemoOptions {
        aws_endpoint: Some("moto".into()),
        bulk_rows: 50,
        concurrency: 4,
        ..options(200, dir.path())
    })
    .await
    .expect("demo runs against moto");
    let r = &outcome.report;
    println!("{}", r.text());
    assert_eq!(r.accepted, 220);
    assert_eq!(r.lost, 0);
    assert_eq!(r.duplicate_rows, 0);
    // moto's SES emits no events: every notification ends `sending` (handed to SES).
    assert_eq!(r.sent, 220);
    assert_eq!(outcome.dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_pipeline_side_at_a_lower_cpu_priority_the_blast_still_loses_nothing() {
    // The model of separate compute (the queue-driven functions on their own niced runtime,
    // the primary and its proxy niced) must change only who gets the CPU first, not what is
    // delivered; and the report must carry the blast's lane-wait histogram.
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = demo(DemoOptions {
        separate_compute: true,
        bulk_rows: 100,
        concurrency: 4,
        ..options(500, dir.path())
    })
    .await
    .expect("demo runs with separate compute modelled");
    let r = &outcome.report;
    println!("{}", r.text());
    assert_eq!(r.accepted, 520);
    assert_eq!((r.lost, r.duplicate_sends, r.not_final), (0, 0, 0));
    let wait = r.read_lane_wait.expect("lane wait reported");
    assert!(wait.acquires > 0, "{wait:?}");
    assert!(wait.p99_at_most_us.is_some(), "{wait:?}");
    assert!(r.text().contains("lane wait in the blast"));
}
