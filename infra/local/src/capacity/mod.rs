//! `floodgate-local capacity`: what one deployment sustains per lane and in total, which
//! resource bounds it, what it costs per million emails, and the settings 10 million emails
//! an hour need. Durations are measured here ([`measure`]); the rest is the pure model
//! ([`model`], [`cost`]) over the knobs and the Terraform defaults ([`terraform`]).

pub mod chart;
pub mod cost;
pub mod measure;
pub mod model;
pub mod terraform;

use crate::services::{LocalStack, StackOptions};
use anyhow::Result;
use cost::{CostReport, Prices};
use floodgate_core::Knobs;
use model::{Assumptions, Capacity, Measurements, Settings};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use terraform::TerraformDefaults;

/// 10 million emails an hour.
pub const TEN_MILLION_AN_HOUR: f64 = 10_000_000.0 / 3600.0;

#[derive(Debug, Clone)]
pub struct CapacityOptions {
    pub prices: PathBuf,
    /// Where the PNG goes (`None`: no chart).
    pub chart: Option<PathBuf>,
    pub measure: measure::MeasureOptions,
    pub assumptions: Assumptions,
}

/// Everything the command prints.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub measurements: Measurements,
    pub assumptions: Assumptions,
    pub terraform: TerraformSummary,
    pub capacity: Capacity,
    pub cost: CostReport,
    pub ten_million: Settings,
}

#[derive(Debug, Clone, Serialize)]
pub struct TerraformSummary {
    pub region: String,
    pub ses_account_rate: f64,
    pub db_instance_class: String,
}

/// The model over measurements: capacity, cost, and the settings for 10 million an hour.
pub fn evaluate(
    knobs: &Knobs,
    tf: &TerraformDefaults,
    m: Measurements,
    a: Assumptions,
    prices: &Prices,
) -> Result<CapacityReport> {
    let capacity = model::capacity(knobs, tf, &m, &a)?;
    let cost = cost::cost(knobs, tf, &m, &a, prices, capacity.emails_per_second)?;
    let ten_million = model::settings_for(TEN_MILLION_AN_HOUR, knobs, tf, &m, &a)?;
    Ok(CapacityReport {
        terraform: TerraformSummary {
            region: tf.region.clone(),
            ses_account_rate: tf.ses_account_rate,
            db_instance_class: tf.db_instance_class.clone(),
        },
        measurements: m,
        assumptions: a,
        capacity,
        cost,
        ten_million,
    })
}

/// Measures on `stack`, then evaluates with the knobs and Terraform files of this build.
pub async fn run_on(stack: &LocalStack, opts: &CapacityOptions) -> Result<CapacityReport> {
    let knobs = Knobs::embedded();
    let tf = TerraformDefaults::shipped(&knobs)?;
    let prices = Prices::parse(
        &std::fs::read_to_string(&opts.prices)
            .map_err(|e| anyhow::anyhow!("{}: {e}", opts.prices.display()))?,
    )?;
    let m = measure::measure(stack, opts.measure).await?;
    let report = evaluate(&knobs, &tf, m, opts.assumptions.clone(), &prices)?;
    if let Some(path) = &opts.chart {
        chart::draw(&report, path)?;
    }
    Ok(report)
}

/// The command: its own durable stack (fsync on), the measurement, the printout.
pub async fn capacity_command(opts: CapacityOptions) -> Result<CapacityReport> {
    let stack = LocalStack::start(StackOptions {
        durable: true,
        ..StackOptions::default()
    })
    .await?;
    let report = run_on(&stack, &opts).await?;
    print!("{}", render(&report));
    if let Some(path) = &opts.chart {
        println!("chart: {}", path.display());
    }
    Ok(report)
}

fn per_hour(per_second: f64) -> String {
    thousands(per_second * 3600.0)
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// The plain-text report.
pub fn render(r: &CapacityReport) -> String {
    let mut o = String::new();
    let a = &r.assumptions;
    let m = &r.measurements;
    let _ = writeln!(
        o,
        "== Per-invocation wall time, measured through the real handlers on this machine =="
    );
    let _ = writeln!(
        o,
        "{:<9} {:<9} {:>6} {:>11} {:>10} {:>10} {:>5}",
        "function", "lane", "batch", "emails/inv", "median ms", "p90 ms", "n"
    );
    for t in &m.timings {
        let lane = t.lane.map_or("all".to_string(), |l| l.to_string());
        let _ = writeln!(
            o,
            "{:<9} {:<9} {:>6} {:>11.1} {:>10.2} {:>10.2} {:>5}",
            t.function,
            lane,
            t.batch,
            t.emails_per_invocation,
            t.median_ms,
            t.p90_ms,
            t.invocations
        );
    }
    let _ = writeln!(
        o,
        "SES events per email {:.2} ({:.0} bytes each); WAL per email lifecycle {:.0} bytes",
        m.events_per_email, m.event_bytes_per_message, m.wal_bytes_per_email
    );
    for (i, l) in m.lanes.iter().enumerate() {
        let lane = floodgate_core::ProcessType::ALL[i];
        let _ = writeln!(
            o,
            "{lane}: API requests/email {:.4}, intake messages/email {:.4} ({:.0} B), send messages/email {:.4} ({:.0} B), limit store calls/email {:.3}",
            l.api_requests_per_email,
            l.intake_messages_per_email,
            l.intake_bytes_per_message,
            l.send_messages_per_email,
            l.send_bytes_per_message,
            l.limit_store_calls_per_email
        );
    }

    let _ = writeln!(
        o,
        "\n== What one deployment sustains (knobs.json, Terraform defaults: SES {}/s, {}) ==",
        r.terraform.ses_account_rate, r.terraform.db_instance_class
    );
    for l in &r.capacity.lanes {
        let _ = writeln!(o, "{} alone:", l.lane);
        for s in &l.stages {
            let mark = if s.stage == l.bound { "  <- bound" } else { "" };
            let _ = writeln!(
                o,
                "  {:<42} {:>15} emails/hour{mark}",
                s.stage,
                per_hour(s.emails_per_second)
            );
        }
        let _ = writeln!(
            o,
            "  sustained: {} emails/hour, bound: {}",
            per_hour(l.emails_per_second),
            l.bound
        );
    }
    let _ = writeln!(
        o,
        "all lanes at the mix {:.0}% priority / {:.0}% normal / {:.0}% bulk:",
        a.mix[0] * 100.0,
        a.mix[1] * 100.0,
        a.mix[2] * 100.0
    );
    for (name, rate) in &r.capacity.total_limits {
        let _ = writeln!(o, "  {name:<42} {:>15} emails/hour", per_hour(*rate));
    }
    let _ = writeln!(
        o,
        "  total: {} emails/hour, bound: {}",
        per_hour(r.capacity.emails_per_second),
        r.capacity.bound
    );

    let c = &r.cost;
    let _ = writeln!(
        o,
        "\n== Cost per million emails ({} prices as of {}; Terraform deploys to {} by default) ==",
        c.region, c.date, r.terraform.region
    );
    let _ = writeln!(o, "per email (scales with volume), per million emails:");
    let line = |o: &mut String, i: &cost::LineItem| {
        let est = if i.estimated { "  (estimated)" } else { "" };
        let _ = writeln!(
            o,
            "  {:<52} {:>16.1} {:<24} × ${:<12.8} = ${:>10.4}{est}",
            i.name, i.quantity, i.unit, i.unit_usd, i.usd
        );
    };
    for i in &c.per_email {
        line(&mut o, i);
    }
    let _ = writeln!(
        o,
        "  per-email subtotal: ${:.2} per million emails",
        c.per_email_usd_per_million
    );
    let _ = writeln!(o, "fixed per month (whatever the volume):");
    for i in &c.fixed {
        line(&mut o, i);
    }
    let _ = writeln!(
        o,
        "  fixed subtotal: ${:.2} per month",
        c.fixed_usd_per_month
    );
    let _ = writeln!(
        o,
        "at the sustained capacity ({} emails a month): ${:.2} per million emails",
        thousands(c.at_capacity.0),
        c.at_capacity.1
    );
    let _ = writeln!(
        o,
        "at {} emails a month: ${:.2} per million emails",
        thousands(c.at_volume.0),
        c.at_volume.1
    );

    let s = &r.ten_million;
    let _ = writeln!(
        o,
        "\n== For 10 million emails an hour ({:.0}/s), {:.0}% headroom, same model ==",
        s.target_per_second,
        (a.headroom - 1.0) * 100.0
    );
    for (q, batch, conc) in &s.mappings {
        let _ = writeln!(
            o,
            "  {q:<16} batch {batch:>4}  maximum_concurrency {conc:>5}"
        );
    }
    let _ = writeln!(
        o,
        "  ingest reserved_concurrency {}",
        s.ingest_reserved_concurrency
    );
    let _ = writeln!(
        o,
        "  connection_budget writer {} reader {}; db_instance_class {} (the proxy may open {} per instance)",
        s.writer_connections,
        s.reader_connections,
        s.db_instance_class,
        s.proxy_connections_per_instance
    );
    let _ = writeln!(
        o,
        "  quotas: SES sending rate {}/s (ses_account_rate); Lambda concurrent executions {}; API Gateway throttle rate {}/s burst {}",
        s.ses_sending_rate,
        s.lambda_concurrent_executions,
        s.api_throttle_rate,
        s.api_throttle_burst
    );
    let _ = writeln!(
        o,
        "  the writer then writes {:.1} MB/s of WAL (Aurora's write rate is not measured here)",
        s.writer_wal_bytes_per_second / 1e6
    );
    for p in &s.problems {
        let _ = writeln!(o, "  problem: {p}");
    }

    let _ = writeln!(
        o,
        "\nEstimated, not measured: SES round trip {} ms per call ({} in flight) added to send; Lambda log lines {} B per invocation and {} B per API access-log line; Aurora I/O as WAL ÷ 4 KiB with reads cached; {} idle pollers per queue; DynamoDB calls priced as write units. The local PostgreSQL and PgBouncer stand in for Aurora and RDS Proxy.",
        a.ses_call_ms,
        a.send_max_in_flight,
        a.log_bytes_per_invocation,
        a.access_log_bytes_per_request,
        a.idle_pollers_per_queue
    );
    for l in &r.capacity.lanes {
        let _ = writeln!(
            o,
            "capacity_{}_emails_per_hour={:.0} bound=\"{}\"",
            l.lane,
            l.emails_per_second * 3600.0,
            l.bound
        );
    }
    let _ = writeln!(
        o,
        "capacity_total_emails_per_hour={:.0} bound=\"{}\"",
        r.capacity.emails_per_hour(),
        r.capacity.bound
    );
    let _ = writeln!(
        o,
        "cost_usd_per_million_per_email={:.2} fixed_usd_per_month={:.2} cost_usd_per_million_at_capacity={:.2} cost_usd_per_million_at_{:.0}_a_month={:.2}",
        c.per_email_usd_per_million,
        c.fixed_usd_per_month,
        c.at_capacity.1,
        c.at_volume.0,
        c.at_volume.1
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separates() {
        assert_eq!(thousands(50_400.0), "50,400");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
    }

    #[test]
    fn the_report_names_every_part() {
        let k = Knobs::embedded();
        let tf = TerraformDefaults::shipped(&k).unwrap();
        let prices = Prices::parse(include_str!("../../../prices.json")).unwrap();
        let r = evaluate(
            &k,
            &tf,
            model::tests::round_measurements(),
            Assumptions::default(),
            &prices,
        )
        .unwrap();
        let text = render(&r);
        for needle in [
            "bound: SES account rate",
            "per-email subtotal",
            "fixed subtotal",
            "10 million emails an hour",
            "capacity_total_emails_per_hour=50400",
        ] {
            assert!(text.contains(needle), "{needle}:\n{text}");
        }
    }
}
