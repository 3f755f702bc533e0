//! Handler-level benchmark of `ingest` (CPU µs per accepted notification; bulk
//! should be far below single). The handler runs exactly as in Lambda — JWT
//! verification, validation, rendering, packing, `send_all` — against the embedded queue
//! (no network round trip) with keys and templates already in the instance cache (a warm
//! instance: no database). CPU time is this thread's (`getrusage(RUSAGE_THREAD)`) on a
//! current-thread runtime, so it covers all the handler's work and nothing else's.

use anyhow::{Result, bail};
use aws_lambda_events::http::{HeaderMap, HeaderValue, Method};
use floodgate_api::gateway::request;
use floodgate_api::{ApiCatalog, CachePolicy, ServiceEntry};
use floodgate_aws::{LimitStore, Queue};
use floodgate_core::auth::{
    KeyForAuth, SecretBox, ServiceForAuth, generate_encryption_key, new_secret, sign_jwt,
};
use floodgate_core::limits::ServiceLimits;
use floodgate_core::{KeyType, Knobs, ProcessType, QueueName};
use floodgate_db::catalog::TemplateRow;
use floodgate_db::{LaneConfig, LaneKind, ReaderLane};
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue};
use floodgate_ingest::Ingest;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct IngestBenchOptions {
    pub single_requests: usize,
    pub bulk_requests: usize,
    pub bulk_rows: usize,
}

/// CPU time this thread has used, in microseconds.
pub fn thread_cpu_micros() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_THREAD is valid on Linux.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The headers of a request from `api.bench` signed now with a key's `secret` (`extra`
/// added), as API Gateway hands them to the function.
pub fn signed_headers(
    service_id: Uuid,
    secret: &str,
    extra: &[(&'static str, String)],
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("api.bench"));
    let token = format!(
        "Bearer {}",
        sign_jwt(service_id, secret, chrono::Utc::now().timestamp())
    );
    h.insert(
        "authorization",
        HeaderValue::from_str(&token).unwrap_or(HeaderValue::from_static("")),
    );
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    h
}

async fn drain(queue: &EmbeddedQueue, process_type: ProcessType) -> Result<usize> {
    let mut n = 0;
    loop {
        let msgs = queue
            .receive(QueueName::Intake(process_type), 10, Duration::ZERO)
            .await?;
        if msgs.is_empty() {
            return Ok(n);
        }
        n += msgs.len();
        let handles: Vec<String> = msgs.into_iter().map(|m| m.receipt_handle).collect();
        queue
            .delete_batch(QueueName::Intake(process_type), &handles)
            .await?;
    }
}

/// A warm `ingest` instance's world: one service, key and template already in the
/// instance cache (no database), and the embedded queue.
pub struct WarmService {
    catalog: Arc<ApiCatalog>,
    pub service_id: Uuid,
    secret: String,
    pub template_id: Uuid,
    pub queue: Arc<EmbeddedQueue>,
}

impl WarmService {
    pub async fn new() -> Result<Self> {
        let secrets = Arc::new(SecretBox::from_base64(&generate_encryption_key())?);
        // A lane that is never used: the cache below is warm, as on a warm Lambda instance.
        let reader = ReaderLane::open(LaneConfig::new(
            LaneKind::Reader,
            "postgres://bench@127.0.0.1:1/none",
            "bench",
        ))
        .await?;
        let catalog = Arc::new(ApiCatalog::new(reader, secrets, CachePolicy::default()));
        let service_id = Uuid::now_v7();
        let secret = new_secret();
        let template_id = Uuid::now_v7();
        catalog.prime(
            ServiceEntry {
                auth: ServiceForAuth {
                    id: service_id,
                    active: true,
                    keys: vec![KeyForAuth { id: Uuid::now_v7(), key_type: KeyType::Normal, secret: secret.clone(), revoked: false }],
                },
                name: "bench".into(),
                from_email: "bench@example.gov".into(),
                // No limit the benchmark's requests could reach.
                limits: ServiceLimits {
                    rate_limit: u32::MAX,
                    daily_limit: u32::MAX,
                },
                team_and_guest_list: Default::default(),
            },
            vec![TemplateRow {
                id: template_id,
                service_id,
                name: "bench".into(),
                subject: "Your reference ((reference number))".into(),
                body: "Dear ((name)),\n\nWe received your application on ((date)). Your reference is ((reference number)).\n\n((extra??There is more to say.))".into(),
                process_type: ProcessType::Normal,
                version: 3,
                archived: false,
                created_at: chrono::Utc::now(),
                updated_at: None,
            }],
        );
        Ok(WarmService {
            catalog,
            service_id,
            secret,
            template_id,
            queue: Arc::new(EmbeddedQueue::from_knobs(&Knobs::embedded())),
        })
    }

    /// An instance with this limit store, as `main` builds it.
    pub fn ingest(&self, limit_store: Arc<dyn LimitStore>) -> Ingest {
        Ingest::new(
            self.catalog.clone(),
            self.queue.clone(),
            limit_store,
            &Knobs::embedded(),
        )
    }

    /// The headers of a request signed now (`extra` added).
    pub fn headers(&self, extra: &[(&'static str, String)]) -> HeaderMap {
        signed_headers(self.service_id, &self.secret, extra)
    }

    /// The body of the `i`-th single request.
    pub fn email_body(&self, i: usize) -> String {
        serde_json::json!({
            "email_address": format!("person{i}@example.com"),
            "template_id": self.template_id,
            "personalisation": {"name": format!("Person {i}"), "date": "1 March", "reference number": format!("REF-{i:06}"), "extra": "yes"},
            "reference": format!("client-{i}"),
        })
        .to_string()
    }

    /// Empties the intake queue of `process_type`; how many messages it held.
    pub async fn drain(&self, process_type: ProcessType) -> Result<usize> {
        drain(&self.queue, process_type).await
    }
}

pub async fn bench_ingest(o: IngestBenchOptions) -> Result<(f64, f64)> {
    let warm = WarmService::new().await?;
    let (queue, template_id) = (warm.queue.clone(), warm.template_id);
    let ingest = warm.ingest(Arc::new(EmbeddedLimitStore::new()));
    let headers = || warm.headers(&[]);

    // Single requests: one notification each.
    let mut single_cpu = 0u64;
    let mut accepted = 0usize;
    for i in 0..o.single_requests {
        let body = warm.email_body(i);
        let req = request(
            Method::POST,
            "/v2/notifications/email",
            headers(),
            Some(body),
        );
        let before = thread_cpu_micros();
        let r = ingest.handle(req).await;
        single_cpu += thread_cpu_micros() - before;
        if r.status_code != 201 {
            bail!("single request answered {}", r.status_code);
        }
        accepted += 1;
        if i % 1000 == 999 {
            drain(&queue, ProcessType::Normal).await?;
        }
    }
    drain(&queue, ProcessType::Normal).await?;
    let single = single_cpu as f64 / accepted.max(1) as f64;

    // Bulk requests: `bulk_rows` notifications each.
    let mut csv = String::from("email address,name,date,reference number,extra\n");
    for i in 0..o.bulk_rows {
        csv.push_str(&format!(
            "person{i}@example.com,Person {i},1 March,REF-{i:06},no\n"
        ));
    }
    let body = serde_json::json!({"name": "bench.csv", "template_id": template_id, "csv": csv})
        .to_string();
    let mut bulk_cpu = 0u64;
    let mut bulk_accepted = 0usize;
    for _ in 0..o.bulk_requests {
        let req = request(
            Method::POST,
            "/v2/notifications/bulk",
            headers(),
            Some(body.clone()),
        );
        let before = thread_cpu_micros();
        let r = ingest.handle(req).await;
        bulk_cpu += thread_cpu_micros() - before;
        if r.status_code != 201 {
            bail!(
                "bulk request answered {}: {}",
                r.status_code,
                floodgate_api::gateway::response_text(&r)
            );
        }
        bulk_accepted += o.bulk_rows;
        drain(&queue, ProcessType::Bulk).await?;
    }
    let bulk = bulk_cpu as f64 / bulk_accepted.max(1) as f64;
    println!("ingest single: {single:.1} µs CPU per accepted notification ({accepted} requests)");
    println!(
        "ingest bulk:   {bulk:.1} µs CPU per accepted notification ({} requests × {} rows)",
        o.bulk_requests, o.bulk_rows
    );
    println!(
        "ingest bulk/single CPU per notification: {:.3} ({:.1}× cheaper)",
        bulk / single,
        single / bulk
    );
    Ok((single, bulk))
}
