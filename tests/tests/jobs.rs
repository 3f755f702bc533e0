//! Bulk jobs read back and followed through the whole local topology: `ingest` and `status`
//! handlers, the pipeline's event source mappings (`persist`, `send`, `receipts`) and the SES
//! simulator. The job's shape is GC Notify's (`app/job/rest.py`
//! `get_job_by_service_and_job_id`: `{"data": job}` with `data.statistics` a list of
//! `{"status", "count"}`; the fields of `app/schemas.py` `JobSchema`).

use chrono::{SubsecRound, Utc};
use floodgate_core::ProcessType;
use floodgate_e2e::*;
use floodgate_status::Status;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

const BULK: &str = "/v2/notifications/bulk";

/// The error class and message of a Notify error body.
fn error_of(v: &Value) -> (i64, &str, &str) {
    (
        v["status_code"].as_i64().unwrap_or_default(),
        v["errors"][0]["error"].as_str().unwrap_or_default(),
        v["errors"][0]["message"].as_str().unwrap_or_default(),
    )
}

/// Reads the job until `done` holds for it (or fails after `within`).
async fn job_until(
    status: &Status,
    f: &ServiceFixture,
    job_id: Uuid,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, v) = f.get(status, &format!("/v2/jobs/{job_id}")).await;
        if code == 200 && done(&v["data"]) {
            return v["data"].clone();
        }
        assert!(
            code == 200 || code == 404,
            "only not found before persist stores the job: {code} {v}"
        );
        assert!(Instant::now() < deadline, "the job never got there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_reads_back_with_counts_that_follow_the_pipeline_and_filters_the_list() {
    let stack = shared_stack().await;
    let f = service_fixture(&stack, ProcessType::Bulk).await;
    let other = service_fixture(&stack, ProcessType::Bulk).await;
    let pipeline = f.pipeline(&stack).await;
    let ingest = f
        .ingest_with(&stack, pipeline.queue.clone(), pipeline.limit_store.clone())
        .await;
    let status = f.status(&stack).await;
    let other_status = other.status(&stack).await;

    // Scheduled a few seconds ahead, so the counts can be seen before and after sending.
    let rows = 260;
    let at = (Utc::now() + chrono::Duration::seconds(8)).trunc_subsecs(0);
    let mut csv = String::from("email address,name\n");
    for i in 0..rows {
        csv.push_str(&format!("success+{i}@simulator.amazonses.com,Person {i}\n"));
    }
    let (code, created) = f
        .post(
            &ingest,
            BULK,
            &json!({
                "name": "march.csv",
                "template_id": f.template_id,
                "csv": csv,
                "scheduled_for": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            }),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let job_id: Uuid = created["data"]["id"].as_str().unwrap().parse().unwrap();

    // Stored: scheduled, every row `created`; the fields are the 201's.
    let job = job_until(&status, &f, job_id, Duration::from_secs(30), |d| {
        d["statistics"] == json!([{"status": "created", "count": rows}])
    })
    .await;
    assert!(
        Utc::now() < at,
        "stored after its time: the test proves nothing"
    );
    assert_eq!(job["job_status"], "scheduled", "{job}");
    for field in [
        "id",
        "notification_count",
        "original_file_name",
        "template",
        "template_version",
        "service",
        "service_name",
        "created_at",
        "scheduled_for",
        "sender_id",
        "api_key",
    ] {
        assert_eq!(job[field], created["data"][field], "{field}: {job}");
    }
    assert_eq!(job["notification_count"], rows);
    assert_eq!(job["original_file_name"], "march.csv");

    // After its time: sent and delivered, still the same job.
    let job = job_until(&status, &f, job_id, Duration::from_secs(60), |d| {
        d["statistics"] == json!([{"status": "delivered", "count": rows}])
    })
    .await;
    assert_eq!(job["job_status"], "finished", "{job}");

    // The list filtered by the job: all its rows (job rows without include_jobs), newest
    // first, in pages of 250 whose next link keeps the filter.
    let mut seen = BTreeSet::new();
    let mut path = format!("/v2/notifications?job_id={job_id}");
    let mut pages = Vec::new();
    loop {
        let (code, page) = f.get(&status, &path).await;
        assert_eq!(code, 200, "{page}");
        let list = page["notifications"].as_array().unwrap().clone();
        if list.is_empty() {
            break;
        }
        pages.push(list.len());
        for n in &list {
            assert_eq!(n["job_id"], job_id.to_string());
            assert_eq!(n["status"], "delivered");
            assert!(
                seen.insert(n["id"].as_str().unwrap().to_string()),
                "repeated"
            );
        }
        let next = page["links"]["next"].as_str().unwrap();
        assert!(next.contains(&format!("job_id={job_id}")), "{next}");
        path = next.trim_start_matches("https://api.test").to_string();
    }
    assert_eq!(pages, vec![250, 10]);
    assert_eq!(seen.len(), rows);
    // Without the filter, Notify leaves job rows out.
    let (_, page) = f.get(&status, "/v2/notifications").await;
    assert_eq!(page["notifications"], json!([]), "{page}");

    // Another service's job is not found, and its list is empty (the filter is scoped to
    // the caller's service like every other).
    let (code, v) = other
        .get(&other_status, &format!("/v2/jobs/{job_id}"))
        .await;
    assert_eq!(
        (code, error_of(&v)),
        (404, (404, "NoResultFound", "No result found"))
    );
    let (code, v) = other
        .get(&other_status, &format!("/v2/notifications?job_id={job_id}"))
        .await;
    assert_eq!((code, &v["notifications"]), (200, &json!([])), "{v}");
    // A job that does not exist.
    let (code, v) = f
        .get(&status, &format!("/v2/jobs/{}", Uuid::now_v7()))
        .await;
    assert_eq!((code, error_of(&v).2), (404, "No result found"));
    // Not a UUID: Notify's ValidationError, as for its own uuid-typed parameters.
    for path in ["/v2/jobs/nope", "/v2/notifications?job_id=nope"] {
        let (code, v) = f.get(&status, path).await;
        assert_eq!(
            (code, error_of(&v)),
            (400, (400, "ValidationError", "job_id is not a valid UUID")),
            "{path}: {v}"
        );
    }
    pipeline.stop().await;
}
