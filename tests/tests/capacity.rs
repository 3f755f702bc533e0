//! `floodgate-local capacity` through its entry point, at small sizes: the measurement runs
//! every handler, and what comes out is coherent (each function measured at each batch
//! size, every line item present and priced, totals the sums of their items, a bound named,
//! the settings for 10 million an hour enough by the same model). Speed is never asserted.

use floodgate_core::{Knobs, ProcessType};
use floodgate_e2e::shared_stack;
use floodgate_local::capacity::cost::LINE_ITEMS;
use floodgate_local::capacity::model::{self, Assumptions};
use floodgate_local::capacity::terraform::TerraformDefaults;
use floodgate_local::capacity::{CapacityOptions, TEN_MILLION_AN_HOUR, measure, render, run_on};
use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_measures_every_stage_and_its_report_adds_up() {
    let stack = shared_stack().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("capacity.png");
    let opts = CapacityOptions {
        prices: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/prices.json"),
        chart: Some(chart.clone()),
        measure: measure::MeasureOptions {
            invocations: 2,
            bulk_rows: 200,
        },
        assumptions: Assumptions {
            bulk_rows: 200,
            ..Assumptions::default()
        },
    };
    let r = run_on(&stack, &opts).await.expect("capacity runs");
    let knobs = Knobs::embedded();

    // Every function, lane and batch size the model reads was measured, and moved email.
    for lane in ProcessType::ALL {
        for (function, queue) in [
            ("persist", format!("intake-{lane}")),
            ("send", format!("send-{lane}")),
        ] {
            let shipped = knobs.event_source_mappings[&queue].batch_size;
            for batch in measure::batch_sizes(shipped) {
                let t = model::timing(&r.measurements, function, Some(lane), batch)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(t.invocations, 2, "{t:?}");
                assert!(t.emails_per_invocation >= 1.0 && t.median_ms > 0.0, "{t:?}");
                assert!(t.p90_ms >= t.median_ms, "{t:?}");
            }
        }
        let rows = if lane == ProcessType::Bulk { 200 } else { 1 };
        let t = model::timing(&r.measurements, "ingest", Some(lane), rows).expect("ingest timed");
        assert_eq!(t.emails_per_invocation, f64::from(rows));
    }
    // One email of a normal lane sent with ids packed ten to a message.
    let normal = r.measurements.lanes[1];
    assert!(
        (normal.send_messages_per_email - 0.1).abs() < 1e-9,
        "{normal:?}"
    );
    // Send and Delivery for every simulator success address.
    assert!((r.measurements.events_per_email - 2.0).abs() < 1e-9);
    assert!(r.measurements.wal_bytes_per_email > 0.0);

    // Bound named per lane and overall; the total never exceeds a lane's share allowance.
    for l in &r.capacity.lanes {
        assert!(l.stages.iter().any(|s| s.stage == l.bound), "{l:?}");
        let min = l
            .stages
            .iter()
            .map(|s| s.emails_per_second)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(l.emails_per_second, min);
    }
    assert!(
        r.capacity
            .total_limits
            .iter()
            .any(|(n, v)| *n == r.capacity.bound && *v == r.capacity.emails_per_second)
    );
    // With the SES quota Terraform ships, SES is the limit: no stage here is that slow.
    assert!(
        r.capacity.bound.starts_with("SES account rate"),
        "{}",
        r.capacity.bound
    );

    // Every line item present, priced, and the totals their sums.
    let names: Vec<&str> = r
        .cost
        .per_email
        .iter()
        .chain(&r.cost.fixed)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names.len(), LINE_ITEMS.len());
    assert!(
        LINE_ITEMS
            .iter()
            .all(|p| names.iter().any(|n| n.starts_with(p))),
        "{names:?}"
    );
    for i in r.cost.per_email.iter().chain(&r.cost.fixed) {
        assert!(i.quantity > 0.0 && i.unit_usd > 0.0, "{i:?}");
        assert!(
            (i.usd - i.quantity * i.unit_usd).abs() <= 1e-9 * i.usd.max(1.0),
            "{i:?}"
        );
    }
    let sum: f64 = r.cost.per_email.iter().map(|i| i.usd).sum();
    assert!((sum - r.cost.per_email_usd_per_million).abs() < 1e-9);
    let fixed: f64 = r.cost.fixed.iter().map(|i| i.usd).sum();
    assert!((fixed - r.cost.fixed_usd_per_month).abs() < 1e-9);
    let (monthly, at) = r.cost.at_capacity;
    assert!((at - (sum + fixed / (monthly / 1e6))).abs() < 1e-6);

    // The settings for 10 million an hour carry it, by the same model.
    let s = &r.ten_million;
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let tf = TerraformDefaults::shipped(&knobs).expect("terraform");
    let (k2, tf2) = model::apply(s, &knobs, &tf);
    let c = model::capacity(&k2, &tf2, &r.measurements, &r.assumptions).expect("model");
    assert!(c.emails_per_second >= TEN_MILLION_AN_HOUR, "{c:?}");
    let demand = k2.connection_demand();
    assert!(demand.writer <= s.writer_connections && demand.reader <= s.reader_connections);
    assert!(s.writer_connections.max(s.reader_connections) <= s.proxy_connections_per_instance);

    let text = render(&r);
    assert!(text.contains("capacity_total_emails_per_hour="), "{text}");
    assert!(std::fs::metadata(&chart).expect("chart written").len() > 10_000);
}
