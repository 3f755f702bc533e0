//! The published contract kept true: schemathesis (PyPI, pinned) reads the OpenAPI
//! document from the local HTTP front (`GET /openapi.yaml`) and sends it every kind of
//! request it generates from it — valid, malformed, hostile — through the front to the
//! real `ingest` and `status` on PostgreSQL (primary + replica behind PgBouncer), each with
//! a fresh Notify JWT of a test key. Every answer must match the document: a documented
//! status with its schema and content type, no 5xx, a 4xx for whatever the document rules
//! out, a 401 without the token, and none slower than the per-request timeout.

use floodgate_api::{ApiCatalog, CachePolicy};
use floodgate_core::auth::{SecretBox, generate_encryption_key};
use floodgate_core::{KeyType, Knobs, ProcessType};
use floodgate_e2e::*;
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue};
use floodgate_ingest::Ingest;
use floodgate_status::Status;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Schemathesis's own time budget, and the wall-clock bound the test puts on it.
const MAX_TIME_S: u64 = 75;
const KILL_AFTER: Duration = Duration::from_secs(150);

/// The body of `GET path` from the front, over plain HTTP/1.1.
async fn http_get(base: &str, path: &str) -> (String, String) {
    let addr = base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

#[tokio::test]
async fn every_request_schemathesis_generates_gets_an_answer_the_openapi_document_allows() {
    let schemathesis =
        tokio::task::spawn_blocking(floodgate_local::services::install::ensure_schemathesis)
            .await
            .unwrap()
            .expect("schemathesis installs");
    let stack = shared_stack().await;
    let secrets = Arc::new(SecretBox::from_base64(&generate_encryption_key()).expect("key"));
    let f = service_fixture_with(
        &stack,
        ProcessType::Normal,
        "Dear ((name))",
        secrets.clone(),
    )
    .await;
    let key =
        floodgate_admin::issue_key(&f.writer, &secrets, f.service_id, "contract", KeyType::Test)
            .await
            .expect("test key");
    // A template without placeholders, so generated sends can succeed.
    let plain = floodgate_admin::put_template(
        &f.writer,
        f.service_id,
        None,
        "plain",
        "Your account",
        "Nothing to fill in.",
        ProcessType::Normal,
    )
    .await
    .expect("template");
    // One stored notification of the test key, for the reads to find.
    let mut n = notification(f.service_id, ProcessType::Normal, 1);
    n.template_id = plain.id;
    n.key_type = KeyType::Test;
    // And a bulk job of one row.
    let mut row = notification(f.service_id, ProcessType::Bulk, 2);
    let job_id = uuid::Uuid::now_v7();
    row.template_id = plain.id;
    row.key_type = KeyType::Test;
    row.job_id = Some(job_id);
    row.job_row_number = Some(0);
    row.job = Some(floodgate_core::JobHeader {
        name: "contract.csv".into(),
        notification_count: 1,
    });
    store_on_replica(&stack, &f.writer, &[n.clone(), row]).await;

    let catalog = Arc::new(ApiCatalog::new(
        reader_lane(&stack).await,
        secrets,
        CachePolicy::default(),
    ));
    let ingest = Ingest::new(
        catalog.clone(),
        Arc::new(EmbeddedQueue::uniform(Duration::from_secs(30), 5)),
        Arc::new(EmbeddedLimitStore::new()),
        &Knobs::embedded(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(floodgate_local::topology::front::serve(
        listener,
        Arc::new(ingest),
        Arc::new(Status::new(catalog)),
    ));

    let (head, body) = http_get(&base, floodgate_local::topology::front::OPENAPI_PATH).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/yaml"),
        "{head}"
    );
    assert_eq!(body, floodgate_api::OPENAPI_YAML);

    let secret = key.key[key.key.len() - 36..].to_string();
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/python");
    let report = tempfile::tempdir().expect("report dir");
    let report_path = report.path().to_path_buf();
    let schema_url = format!("{base}{}", floodgate_local::topology::front::OPENAPI_PATH);
    let mut cmd = Command::new(&schemathesis);
    cmd.args(["run", &schema_url, "--url", &base])
        .args(["--checks", "all"])
        // A schema-valid request still names templates the service does not have, misses
        // their placeholders or schedules in the past: a 4xx is right there.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-time", &MAX_TIME_S.to_string()])
        .args(["--max-examples", "40"])
        .args(["--request-timeout", "5"])
        .args(["--workers", "1"])
        .args(["--output-sanitize", "false"])
        .args(["--report", "ndjson"])
        .arg("--report-dir")
        .arg(&report_path)
        .arg("--no-color")
        // Its example database and caches stay out of the checkout.
        .current_dir(&report_path)
        .env("PYTHONPATH", hooks)
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("FLOODGATE_CONTRACT_SERVICE_ID", f.service_id.to_string())
        .env("FLOODGATE_CONTRACT_KEY_SECRET", &secret)
        .env("FLOODGATE_CONTRACT_TEMPLATE_ID", plain.id.to_string())
        .env("FLOODGATE_CONTRACT_NOTIFICATION_ID", n.id.to_string())
        .env("FLOODGATE_CONTRACT_JOB_ID", job_id.to_string());
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        let child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("schemathesis starts");
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(KILL_AFTER) {
            Ok(out) => out.expect("schemathesis output"),
            Err(_) => {
                kill(pid);
                panic!("schemathesis did not finish within {KILL_AFTER:?}");
            }
        }
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every request sent is an interaction recorded in a finished scenario.
    let interactions: Vec<serde_json::Value> = std::fs::read_dir(&report_path)
        .expect("report")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter_map(|v| {
            v["ScenarioFinished"]["recorder"]["interactions"]
                .as_object()
                .map(|i| i.values().cloned().collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    let requests = interactions.len();
    // Each operation answered a success at least once, so its 2xx schema was checked.
    let mut successes: std::collections::BTreeMap<&str, usize> =
        OPERATIONS.iter().map(|o| (*o, 0)).collect();
    for i in &interactions {
        let status = i["response"]["status_code"].as_u64().unwrap_or(0);
        let method = i["request"]["method"].as_str().unwrap_or_default();
        let uri = i["request"]["uri"].as_str().unwrap_or_default();
        if let Some(op) = operation_of(method, uri)
            && (200..300).contains(&status)
        {
            *successes.entry(op).or_default() += 1;
        }
    }
    println!("2xx answers per operation: {successes:?}");
    println!("{stdout}");
    println!(
        "schemathesis: {requests} requests in {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(requests >= 500, "only {requests} requests were tried");
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not allow:\n{stdout}\n{stderr}"
    );
    let never: Vec<&&str> = successes
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(op, _)| op)
        .collect();
    assert!(never.is_empty(), "no 2xx answer was checked for {never:?}");
}

/// The document's operations.
const OPERATIONS: &[&str] = &[
    "POST /v2/notifications/email",
    "POST /v2/notifications/bulk",
    "GET /v2/notifications/{notification_id}",
    "GET /v2/notifications",
    "GET /v2/template/{id}",
    "GET /v2/template/{id}/version/{version}",
    "GET /v2/templates",
    "POST /v2/template/{id}/preview",
    "GET /_status",
    "GET /v2/jobs/{job_id}",
];

/// The operation a request named, if any.
fn operation_of(method: &str, uri: &str) -> Option<&'static str> {
    let path = uri
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(uri)
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let op = match (method, segments.as_slice()) {
        ("POST", ["v2", "notifications", "email"]) => OPERATIONS[0],
        ("POST", ["v2", "notifications", "bulk"]) => OPERATIONS[1],
        ("GET", ["v2", "notifications", _]) => OPERATIONS[2],
        ("GET", ["v2", "notifications"]) => OPERATIONS[3],
        ("GET", ["v2", "template", _]) => OPERATIONS[4],
        ("GET", ["v2", "template", _, "version", _]) => OPERATIONS[5],
        ("GET", ["v2", "templates"]) => OPERATIONS[6],
        ("POST", ["v2", "template", _, "preview"]) => OPERATIONS[7],
        ("GET", ["_status"]) => OPERATIONS[8],
        ("GET", ["v2", "jobs", _]) => OPERATIONS[9],
        _ => return None,
    };
    Some(op)
}

/// Ends the schemathesis process this test started, by its id.
fn kill(pid: u32) {
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
}
