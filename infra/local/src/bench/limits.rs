//! What limits and idempotency at the door cost a request: the real `ingest` handler (warm
//! cache, embedded queue, as in `bench-ingest`) with four limit stores, in one run, the
//! same requests each:
//!
//! - baseline: a store that answers every call at once ("taken", "claimed") — the door's
//!   own logic still runs, the store costs nothing;
//! - `EmbeddedLimitStore`, without an `Idempotency-Key` (rate + daily counters);
//! - `EmbeddedLimitStore`, with a fresh `Idempotency-Key` per request (+ claim, settle);
//! - `DynamoLimitStore` on moto over loopback, with a key (the real adapter and its HTTP
//!   calls; moto is far slower than DynamoDB, so this is an upper bound for its CPU).
//!
//! Per request: this thread's CPU time and the wall time of `handle`, p50/p99.

use super::ingest::{WarmService, thread_cpu_micros};
use crate::services::{LocalStack, StackOptions};
use crate::topology::local_sdk;
use anyhow::{Result, bail};
use async_trait::async_trait;
use aws_lambda_events::http::Method;
use chrono::{DateTime, Utc};
use floodgate_api::gateway::request;
use floodgate_aws::{Claim, DynamoLimitStore, IdempotencyRecord, LimitStore, LimitStoreError};
use floodgate_core::ProcessType;
use floodgate_core::limits::{Counter, IdempotencyKey, Take};
use floodgate_emulators::EmbeddedLimitStore;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct LimitsBenchOptions {
    pub requests: usize,
    /// Also measure the DynamoDB adapter against moto (starts the local services).
    pub moto: bool,
}

/// The baseline: every call answered at once, nothing kept.
struct FreeStore;

#[async_trait]
impl LimitStore for FreeStore {
    async fn take(
        &self,
        _: &Counter,
        cost: u64,
        _: DateTime<Utc>,
    ) -> Result<Take, LimitStoreError> {
        Ok(Take::Taken { count: cost })
    }
    async fn give_back(&self, _: &Counter, _: u64) -> Result<(), LimitStoreError> {
        Ok(())
    }
    async fn claim(
        &self,
        _: &IdempotencyKey,
        _: &IdempotencyRecord,
        _: DateTime<Utc>,
    ) -> Result<Claim, LimitStoreError> {
        Ok(Claim::Claimed)
    }
    async fn lookup(
        &self,
        _: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, LimitStoreError> {
        Ok(None)
    }
    async fn settle(&self, _: &IdempotencyKey) -> Result<(), LimitStoreError> {
        Ok(())
    }
    async fn release(&self, _: &IdempotencyKey) -> Result<(), LimitStoreError> {
        Ok(())
    }
    async fn take_over(
        &self,
        _: &IdempotencyKey,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<bool, LimitStoreError> {
        Ok(false)
    }
}

struct Measured {
    name: &'static str,
    cpu_us: f64,
    p50_us: u64,
    p99_us: u64,
}

/// One configuration: an instance with its store, and whether its requests carry a key.
struct Setup {
    name: &'static str,
    ingest: floodgate_ingest::Ingest,
    with_key: bool,
    wall: Histogram<u64>,
    cpu: u64,
}

/// Runs `requests` requests on every setup, interleaved (request i on each setup in turn),
/// so that every setup meets the same machine: warm-up, noise and load are shared.
async fn measure(
    warm: &WarmService,
    setups: &mut [Setup],
    requests: usize,
) -> Result<Vec<Measured>> {
    // Warm-up requests (connection pools, allocator) are not counted.
    let warmup = (requests / 10).max(20);
    for i in 0..warmup + requests {
        for s in setups.iter_mut() {
            let extra = if s.with_key {
                vec![("idempotency-key", format!("bench-{}-{i}", s.name))]
            } else {
                Vec::new()
            };
            let req = request(
                Method::POST,
                "/v2/notifications/email",
                warm.headers(&extra),
                Some(warm.email_body(i)),
            );
            let (c0, t0) = (thread_cpu_micros(), Instant::now());
            let r = s.ingest.handle(req).await;
            let (c1, t1) = (thread_cpu_micros(), t0.elapsed());
            if r.status_code != 201 {
                bail!("{}: request answered {}", s.name, r.status_code);
            }
            if i >= warmup {
                s.cpu += c1 - c0;
                s.wall
                    .record(u64::try_from(t1.as_micros()).unwrap_or(u64::MAX))?;
            }
        }
        if i % 500 == 499 {
            warm.drain(ProcessType::Normal).await?;
        }
    }
    warm.drain(ProcessType::Normal).await?;
    let mut out = Vec::new();
    for s in setups.iter() {
        if s.ingest.limit_bypasses() > 0 {
            bail!(
                "{}: the store failed {} times",
                s.name,
                s.ingest.limit_bypasses()
            );
        }
        out.push(Measured {
            name: s.name,
            cpu_us: s.cpu as f64 / requests.max(1) as f64,
            p50_us: s.wall.value_at_quantile(0.5),
            p99_us: s.wall.value_at_quantile(0.99),
        });
    }
    Ok(out)
}

fn setup(
    warm: &WarmService,
    name: &'static str,
    store: Arc<dyn LimitStore>,
    with_key: bool,
) -> Result<Setup> {
    Ok(Setup {
        name,
        ingest: warm.ingest(store),
        with_key,
        wall: Histogram::<u64>::new(3)?,
        cpu: 0,
    })
}

pub async fn bench_limits(o: LimitsBenchOptions) -> Result<()> {
    let warm = WarmService::new().await?;
    let mut local = vec![
        setup(&warm, "baseline (free store)", Arc::new(FreeStore), false)?,
        setup(
            &warm,
            "embedded, limits",
            Arc::new(EmbeddedLimitStore::new()),
            false,
        )?,
        setup(
            &warm,
            "embedded, limits + key",
            Arc::new(EmbeddedLimitStore::new()),
            true,
        )?,
    ];
    // Each group has its own baseline, measured interleaved with it, first.
    let mut groups = vec![measure(&warm, &mut local, o.requests).await?];
    let _stack = if o.moto {
        let stack = LocalStack::start(StackOptions {
            moto: true,
            ..StackOptions::default()
        })
        .await?;
        let endpoint = stack
            .moto_endpoint()
            .ok_or_else(|| anyhow::anyhow!("moto did not start"))?;
        let sdk = local_sdk(&endpoint).await;
        let client = DynamoLimitStore::client(&sdk);
        let table = format!("bench-limits-{}", uuid::Uuid::now_v7().simple());
        DynamoLimitStore::create_table(&client, &table).await?;
        // moto answers in milliseconds: fewer requests keep the run short; the baseline
        // runs again beside it, interleaved.
        let mut remote = vec![
            setup(&warm, "baseline (free store)", Arc::new(FreeStore), false)?,
            setup(
                &warm,
                "DynamoDB on moto, limits + key",
                Arc::new(DynamoLimitStore::new(client, table)),
                true,
            )?,
        ];
        let n = (o.requests / 10).max(100);
        groups.push(measure(&warm, &mut remote, n).await?);
        Some(stack)
    } else {
        None
    };
    println!(
        "| limit store | µs CPU / request | wall p50 µs | wall p99 µs | added CPU µs | added p50 µs | added p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for rows in &groups {
        let base = &rows[0];
        for r in rows {
            println!(
                "| {} | {:.1} | {} | {} | {:+.1} | {:+} | {:+} |",
                r.name,
                r.cpu_us,
                r.p50_us,
                r.p99_us,
                r.cpu_us - base.cpu_us,
                r.p50_us as i64 - base.p50_us as i64,
                r.p99_us as i64 - base.p99_us as i64,
            );
        }
    }
    let (base, embedded) = (&groups[0][0], &groups[0][2]);
    println!(
        "limits_cpu_ratio={:.3} limits_p99_ratio={:.3} (embedded store with key vs baseline)",
        embedded.cpu_us / base.cpu_us.max(f64::MIN_POSITIVE),
        embedded.p99_us as f64 / (base.p99_us.max(1)) as f64
    );
    Ok(())
}
