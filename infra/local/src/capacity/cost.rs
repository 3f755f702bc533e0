//! Cost per million emails from a prices file: every line item with its quantity, unit
//! price and cost, per-email items apart from fixed monthly ones (amortised at a stated
//! volume). Pure functions.

use super::model::{
    Assumptions, Measurements, ModelError, ingest_batch, lane_index, seconds_on_aws, timing,
};
use super::terraform::TerraformDefaults;
use floodgate_core::{Knobs, ProcessType, QueueName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The start of every line item's name: the report has each of them.
pub const LINE_ITEMS: [&str; 19] = [
    "Lambda ingest",
    "Lambda persist",
    "Lambda send",
    "Lambda receipts",
    "Lambda requests",
    "SQS intake",
    "SQS send",
    "SQS receipts",
    "SNS",
    "SES",
    "API Gateway",
    "DynamoDB",
    "Aurora I/O",
    "CloudWatch Logs",
    "Aurora instances",
    "RDS Proxy",
    "CloudWatch alarms",
    "VPC interface endpoints",
    "SQS empty receives",
];

/// Hours in the month AWS bills by.
pub const HOURS_PER_MONTH: f64 = 730.0;
/// SQS and SNS bill each 64 KiB of payload as one request.
const BILLING_CHUNK: f64 = 65_536.0;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Price {
    pub usd: f64,
    pub per: f64,
    pub unit: String,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct DbClassPrice {
    pub usd_per_hour: f64,
    pub vcpus: u32,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Prices {
    pub region: String,
    /// As of when the prices were read.
    pub date: String,
    pub currency: String,
    pub prices: BTreeMap<String, Price>,
    pub db_instance_classes: BTreeMap<String, DbClassPrice>,
}

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("prices file: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("prices file has no {0}")]
    Missing(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl Prices {
    pub fn parse(json: &str) -> Result<Self, CostError> {
        Ok(serde_json::from_str(json)?)
    }

    /// USD for one unit of `key`.
    pub fn unit(&self, key: &str) -> Result<(f64, &str), CostError> {
        let p = self
            .prices
            .get(key)
            .ok_or_else(|| CostError::Missing(key.into()))?;
        Ok((p.usd / p.per.max(1e-300), p.unit.as_str()))
    }

    pub fn class(&self, class: &str) -> Result<&DbClassPrice, CostError> {
        self.db_instance_classes
            .get(class)
            .ok_or_else(|| CostError::Missing(format!("db_instance_classes.{class}")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineItem {
    pub name: String,
    /// Per million emails for a per-email item, per month for a fixed one.
    pub quantity: f64,
    pub unit: String,
    pub unit_usd: f64,
    pub usd: f64,
    /// The quantity rests on an assumption rather than a measurement.
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub region: String,
    pub date: String,
    /// Scales with email: quantities and USD per million emails.
    pub per_email: Vec<LineItem>,
    /// Paid every month whatever the volume: quantities and USD per month.
    pub fixed: Vec<LineItem>,
    pub per_email_usd_per_million: f64,
    pub fixed_usd_per_month: f64,
    /// (emails a month, USD per million emails with the fixed costs amortised over them).
    pub at_capacity: (f64, f64),
    pub at_volume: (f64, f64),
}

/// 64 KiB request units per email for `messages` of `bytes` each, moved `per_call` at most
/// in one call (and never more than 256 KiB in one call).
pub fn request_units(messages_per_email: f64, bytes: f64, per_call: f64) -> f64 {
    let fit = (262_144.0 / bytes.max(1.0)).floor().max(1.0);
    let per_call = per_call.min(fit).max(1.0);
    let units_per_call = (per_call * bytes / BILLING_CHUNK).ceil().max(1.0);
    messages_per_email / per_call * units_per_call
}

/// Per email over the mix: GB-s and invocations of each function.
fn lambda_per_email(
    knobs: &Knobs,
    m: &Measurements,
    a: &Assumptions,
) -> Result<Vec<(&'static str, f64, f64)>, CostError> {
    let gb = |f: &str| {
        knobs
            .functions
            .get(f)
            .map_or(0.0, |k| f64::from(k.memory_mb) / 1024.0)
    };
    let batch = |q: QueueName| {
        knobs
            .event_source_mappings
            .get(&q.as_string())
            .map(|m| m.batch_size)
            .ok_or_else(|| CostError::Missing(format!("knobs mapping {q}")))
    };
    let mut out = Vec::new();
    for function in ["ingest", "persist", "send"] {
        let (mut gbs, mut invocations) = (0.0, 0.0);
        for lane in ProcessType::ALL {
            let share = a.mix[lane_index(lane)];
            let b = match function {
                "ingest" => ingest_batch(lane, a),
                "persist" => batch(QueueName::Intake(lane))?,
                _ => batch(QueueName::Send(lane))?,
            };
            let t = timing(m, function, Some(lane), b)?;
            let e = t.emails_per_invocation.max(1e-9);
            gbs += share * gb(function) * seconds_on_aws(t, a) / e;
            invocations += share / e;
        }
        out.push((function, gbs, invocations));
    }
    let t = timing(m, "receipts", None, batch(QueueName::Receipts)?)?;
    let e = t.emails_per_invocation.max(1e-9);
    out.push((
        "receipts",
        gb("receipts") * seconds_on_aws(t, a) / e,
        1.0 / e,
    ));
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn item(
    prices: &Prices,
    key: &str,
    name: impl Into<String>,
    quantity: f64,
    estimated: bool,
) -> Result<LineItem, CostError> {
    let (unit_usd, unit) = prices.unit(key)?;
    Ok(LineItem {
        name: name.into(),
        quantity,
        unit: unit.to_string(),
        unit_usd,
        usd: quantity * unit_usd,
        estimated,
    })
}

/// Every line item; `emails_per_second` is the deployment's sustained capacity.
pub fn cost(
    knobs: &Knobs,
    tf: &TerraformDefaults,
    m: &Measurements,
    a: &Assumptions,
    prices: &Prices,
    emails_per_second: f64,
) -> Result<CostReport, CostError> {
    const MILLION: f64 = 1_000_000.0;
    let mix = |f: &dyn Fn(&super::model::LaneTraffic) -> f64| -> f64 {
        ProcessType::ALL
            .iter()
            .map(|l| a.mix[lane_index(*l)] * f(&m.lanes[lane_index(*l)]))
            .sum()
    };
    let mut per_email = Vec::new();

    let lambda = lambda_per_email(knobs, m, a)?;
    for (function, gbs, _) in &lambda {
        per_email.push(item(
            prices,
            "lambda_arm_gb_second",
            format!("Lambda {function} duration"),
            gbs * MILLION,
            *function == "send",
        )?);
    }
    let invocations: f64 = lambda.iter().map(|(_, _, i)| i).sum();
    per_email.push(item(
        prices,
        "lambda_request",
        "Lambda requests",
        invocations * MILLION,
        false,
    )?);

    // Intake: ingest sends a single email's message alone and a bulk job's ten at a time;
    // the mapping receives ten at a time and deletes them in one call.
    let intake = ProcessType::ALL
        .iter()
        .map(|l| {
            let t = &m.lanes[lane_index(*l)];
            let sent_per_call = if *l == ProcessType::Bulk { 10.0 } else { 1.0 };
            a.mix[lane_index(*l)]
                * (request_units(
                    t.intake_messages_per_email,
                    t.intake_bytes_per_message,
                    sent_per_call,
                ) + request_units(
                    t.intake_messages_per_email,
                    t.intake_bytes_per_message,
                    10.0,
                ) + request_units(t.intake_messages_per_email, 1.0, 10.0))
        })
        .sum::<f64>();
    per_email.push(item(
        prices,
        "sqs_request",
        "SQS intake queues (send, receive, delete)",
        intake * MILLION,
        false,
    )?);
    let send = mix(&|t| {
        2.0 * request_units(t.send_messages_per_email, t.send_bytes_per_message, 10.0)
            + request_units(t.send_messages_per_email, 1.0, 10.0)
    });
    per_email.push(item(
        prices,
        "sqs_request",
        "SQS send queues (send, receive, delete)",
        send * MILLION,
        false,
    )?);
    // SNS delivers each event to the receipts queue alone.
    let events = m.events_per_email;
    let receipts = request_units(events, m.event_bytes_per_message, 1.0)
        + request_units(events, m.event_bytes_per_message, 10.0)
        + request_units(events, 1.0, 10.0);
    per_email.push(item(
        prices,
        "sqs_request",
        "SQS receipts queue (delivery, receive, delete)",
        receipts * MILLION,
        false,
    )?);
    per_email.push(item(
        prices,
        "sns_publish",
        "SNS publishes of SES events",
        request_units(events, m.event_bytes_per_message, 1.0) * MILLION,
        false,
    )?);
    per_email.push(item(prices, "ses_email", "SES emails", MILLION, false)?);
    let api_requests = mix(&|t| t.api_requests_per_email);
    per_email.push(item(
        prices,
        "apigw_http_request",
        "API Gateway HTTP API requests",
        api_requests * MILLION,
        false,
    )?);
    per_email.push(item(
        prices,
        "dynamodb_write_request_unit",
        "DynamoDB limit store (each call as one write unit)",
        mix(&|t| t.limit_store_calls_per_email) * MILLION,
        false,
    )?);
    // Aurora bills a write I/O per log write of up to 4 KiB; reads are taken as cached.
    per_email.push(item(
        prices,
        "aurora_io_request",
        "Aurora I/O (WAL ÷ 4 KiB; reads cached)",
        m.wal_bytes_per_email / 4096.0 * MILLION,
        true,
    )?);
    let log_bytes =
        invocations * a.log_bytes_per_invocation + api_requests * a.access_log_bytes_per_request;
    per_email.push(item(
        prices,
        "cloudwatch_logs_ingest_gb",
        "CloudWatch Logs ingestion",
        log_bytes * MILLION / 1e9,
        true,
    )?);

    let instances = f64::from(1 + tf.db_reader_count);
    let class = prices.class(&tf.db_instance_class)?;
    let mut fixed = vec![
        LineItem {
            name: format!(
                "Aurora instances ({} × {})",
                instances, tf.db_instance_class
            ),
            quantity: instances * HOURS_PER_MONTH,
            unit: "instance-hours".into(),
            unit_usd: class.usd_per_hour,
            usd: instances * HOURS_PER_MONTH * class.usd_per_hour,
            estimated: false,
        },
        item(
            prices,
            "rds_proxy_vcpu_hour",
            format!(
                "RDS Proxy ({} vCPUs fronted)",
                instances * f64::from(class.vcpus)
            ),
            instances * f64::from(class.vcpus) * HOURS_PER_MONTH,
            false,
        )?,
        item(
            prices,
            "cloudwatch_alarm_month",
            format!("CloudWatch alarms ({})", tf.alarms),
            f64::from(tf.alarms),
            false,
        )?,
        item(
            prices,
            "vpc_endpoint_az_hour",
            format!(
                "VPC interface endpoints ({} × {} AZs)",
                tf.interface_endpoints, tf.az_count
            ),
            f64::from(tf.interface_endpoints * tf.az_count) * HOURS_PER_MONTH,
            false,
        )?,
    ];
    // Idle mappings keep long-polling: 20 s polls by each poller of each queue.
    let polls = knobs.event_source_mappings.len() as f64
        * a.idle_pollers_per_queue
        * HOURS_PER_MONTH
        * 3600.0
        / 20.0;
    fixed.push(item(
        prices,
        "sqs_request",
        "SQS empty receives of idle mappings",
        polls,
        true,
    )?);

    let per_email_usd: f64 = per_email.iter().map(|i| i.usd).sum();
    let fixed_usd: f64 = fixed.iter().map(|i| i.usd).sum();
    let amortised = |monthly: f64| per_email_usd + fixed_usd / (monthly / MILLION).max(1e-12);
    let capacity_monthly = emails_per_second * 3600.0 * HOURS_PER_MONTH;
    Ok(CostReport {
        region: prices.region.clone(),
        date: prices.date.clone(),
        per_email,
        fixed,
        per_email_usd_per_million: per_email_usd,
        fixed_usd_per_month: fixed_usd,
        at_capacity: (capacity_monthly, amortised(capacity_monthly)),
        at_volume: (a.monthly_volume, amortised(a.monthly_volume)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::model::tests::round_measurements;

    fn prices() -> Prices {
        Prices::parse(include_str!("../../../prices.json")).unwrap()
    }

    #[test]
    fn request_units_by_hand() {
        // One 1 KB message per call: one unit each.
        assert_eq!(request_units(1.0, 1_000.0, 1.0), 1.0);
        // Ten 1 KB messages per call: a tenth of a unit each.
        assert_eq!(request_units(1.0, 1_000.0, 10.0), 0.1);
        // 200 KB messages: one per call (256 KiB at most), four units each.
        assert_eq!(request_units(2.0, 200_000.0, 10.0), 8.0);
        // 30 KB messages: eight fit in 256 KiB, 240 KB = 4 units per call of 8.
        assert_eq!(request_units(8.0, 30_000.0, 10.0), 4.0);
    }

    #[test]
    fn every_line_item_is_priced_and_totals_are_sums() {
        let k = Knobs::embedded();
        let tf = TerraformDefaults::shipped(&k).unwrap();
        let a = Assumptions::default();
        let r = cost(&k, &tf, &round_measurements(), &a, &prices(), 14.0).unwrap();
        let names: Vec<&str> = r
            .per_email
            .iter()
            .chain(&r.fixed)
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(names.len(), LINE_ITEMS.len());
        for needle in LINE_ITEMS {
            assert!(
                names.iter().any(|n| n.starts_with(needle)),
                "{needle} missing: {names:?}"
            );
        }
        // SES: a million emails at $0.10 per 1,000.
        let ses = r
            .per_email
            .iter()
            .find(|i| i.name.starts_with("SES"))
            .unwrap();
        assert!((ses.usd - 100.0).abs() < 1e-9);
        // 2 × db.r6g.large × 730 h × $0.26 = $379.60; proxy 4 vCPU × 730 × $0.015 = $43.80;
        // 40 alarms = $4; 4 endpoints × 2 AZs × 730 h × $0.01 = $58.40.
        let fixed = |p: &str| r.fixed.iter().find(|i| i.name.starts_with(p)).unwrap().usd;
        assert!((fixed("Aurora instances") - 379.6).abs() < 1e-6);
        assert!((fixed("RDS Proxy") - 43.8).abs() < 1e-6);
        assert!((fixed("CloudWatch alarms") - 4.0).abs() < 1e-9);
        assert!((fixed("VPC interface") - 58.4).abs() < 1e-6);
        let sum: f64 = r.per_email.iter().map(|i| i.usd).sum();
        assert!((r.per_email_usd_per_million - sum).abs() < 1e-9);
        let fixed_sum: f64 = r.fixed.iter().map(|i| i.usd).sum();
        assert!((r.fixed_usd_per_month - fixed_sum).abs() < 1e-9);
        // 14/s for 730 h = 36.792 million a month.
        assert!((r.at_capacity.0 - 36_792_000.0).abs() < 1e-3);
        let expected = sum + fixed_sum / 36.792;
        assert!((r.at_capacity.1 - expected).abs() < 1e-9);
        assert!((r.at_volume.1 - (sum + fixed_sum / 10.0)).abs() < 1e-9);
    }

    #[test]
    fn lambda_duration_by_hand() {
        let k = Knobs::embedded();
        let tf = TerraformDefaults::shipped(&k).unwrap();
        let a = Assumptions {
            ses_call_ms: 0.0,
            ..Assumptions::default()
        };
        let r = cost(&k, &tf, &round_measurements(), &a, &prices(), 14.0).unwrap();
        let gbs = |p: &str| {
            r.per_email
                .iter()
                .find(|i| i.name.starts_with(p))
                .unwrap()
                .quantity
        };
        // receipts: 0.25 GB × 0.1 s per 50 emails = 0.0005 GB-s per email, 500 per million.
        assert!((gbs("Lambda receipts") - 500.0).abs() < 1e-6);
        // ingest: 0.5 GB × (0.1 × 0.01 + 0.4 × 0.01 + 0.5 × 0.5 / 1000) s = 0.002625 GB-s.
        assert!((gbs("Lambda ingest") - 2_625.0).abs() < 1e-6);
    }
}
