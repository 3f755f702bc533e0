//! The capacity model: from the knobs, the Terraform defaults and the measured durations,
//! what one deployment sustains per lane and in total, which resource bounds it, and the
//! settings a target rate needs. Pure functions over plain values.

use super::terraform::TerraformDefaults;
use floodgate_core::{Knobs, ProcessType, QueueName};
use serde::Serialize;

/// One function's invocations at one batch size, measured through the real handler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    pub function: String,
    /// `None` for receipts: one queue carries every lane's events.
    pub lane: Option<ProcessType>,
    /// Messages per invocation (ingest: rows per request, 1 for a single email).
    pub batch: u32,
    pub emails_per_invocation: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub invocations: usize,
}

/// What one email of a lane costs in requests, messages, bytes and calls, as measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LaneTraffic {
    pub api_requests_per_email: f64,
    pub intake_messages_per_email: f64,
    pub intake_bytes_per_message: f64,
    pub send_messages_per_email: f64,
    pub send_bytes_per_message: f64,
    /// Limit store (DynamoDB) calls of ingest and send.
    pub limit_store_calls_per_email: f64,
}

/// Everything measured on this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Measurements {
    pub timings: Vec<Timing>,
    /// Priority, normal, bulk.
    pub lanes: [LaneTraffic; 3],
    /// SES events (each an SNS notification, then a receipts message) per email.
    pub events_per_email: f64,
    pub event_bytes_per_message: f64,
    /// Write-ahead log of a notification's whole life (insert, claim, settle, receipt).
    pub wal_bytes_per_email: f64,
}

/// What the model takes as given rather than measured; printed with the results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assumptions {
    /// Share of priority, normal and bulk email in the total (sums to 1).
    pub mix: [f64; 3],
    /// One SES `SendEmail` round trip from Lambda (the simulator answers at once).
    pub ses_call_ms: f64,
    /// SES calls one `send` instance keeps in flight (`FLOODGATE_SEND_MAX_IN_FLIGHT`).
    pub send_max_in_flight: f64,
    /// Rows per bulk request.
    pub bulk_rows: u32,
    /// Lambda's START/END/REPORT lines plus the handler's own lines, per invocation.
    pub log_bytes_per_invocation: f64,
    /// One API Gateway access-log line (the 12 fields of api.tf).
    pub access_log_bytes_per_request: f64,
    /// Idle ESM pollers per queue, each long-polling 20 s.
    pub idle_pollers_per_queue: f64,
    /// Emails a month at which fixed costs are also amortised.
    pub monthly_volume: f64,
    /// Settings for a target are sized this much above it.
    pub headroom: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            mix: [0.1, 0.4, 0.5],
            ses_call_ms: 40.0,
            send_max_in_flight: 16.0,
            bulk_rows: 1_000,
            log_bytes_per_invocation: 600.0,
            access_log_bytes_per_request: 450.0,
            idle_pollers_per_queue: 5.0,
            monthly_volume: 10_000_000.0,
            headroom: 1.2,
        }
    }
}

/// One stage's rate: `instances × emails per invocation ÷ seconds per invocation`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageRate {
    pub stage: String,
    pub instances: f64,
    pub emails_per_invocation: f64,
    pub seconds_per_invocation: f64,
    pub emails_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneCapacity {
    pub lane: ProcessType,
    pub stages: Vec<StageRate>,
    pub emails_per_second: f64,
    pub bound: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// Each lane alone (the shared SES budget lets one lane use the whole account rate).
    pub lanes: Vec<LaneCapacity>,
    /// All lanes at once in the mix: each limit as a total rate.
    pub total_limits: Vec<(String, f64)>,
    pub emails_per_second: f64,
    pub bound: String,
}

impl Capacity {
    pub fn emails_per_hour(&self) -> f64 {
        self.emails_per_second * 3600.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("no measurement of {function} ({lane}) at batch {batch}")]
    NotMeasured {
        function: String,
        lane: String,
        batch: u32,
    },
    #[error("knobs: no {0}")]
    Knob(String),
}

/// The lane's index in `[priority, normal, bulk]`.
pub fn lane_index(lane: ProcessType) -> usize {
    match lane {
        ProcessType::Priority => 0,
        ProcessType::Normal => 1,
        ProcessType::Bulk => 2,
    }
}

/// The timing of `function` for `lane` at `batch`.
pub fn timing<'a>(
    m: &'a Measurements,
    function: &str,
    lane: Option<ProcessType>,
    batch: u32,
) -> Result<&'a Timing, ModelError> {
    m.timings
        .iter()
        .find(|t| t.function == function && t.lane == lane && t.batch == batch)
        .ok_or_else(|| ModelError::NotMeasured {
            function: function.into(),
            lane: lane.map_or("every lane".into(), |l| l.to_string()),
            batch,
        })
}

/// Wall seconds one invocation takes on AWS: the measured median, plus for `send` the SES
/// round trips the simulator does not have (`in flight` calls at a time).
pub fn seconds_on_aws(t: &Timing, a: &Assumptions) -> f64 {
    let measured = t.median_ms / 1000.0;
    if t.function == "send" {
        let waves = (t.emails_per_invocation / a.send_max_in_flight.max(1.0)).ceil();
        measured + waves * a.ses_call_ms / 1000.0
    } else {
        measured
    }
}

fn mapping(
    knobs: &Knobs,
    queue: QueueName,
) -> Result<&floodgate_core::knobs::EventSourceMapping, ModelError> {
    knobs
        .event_source_mappings
        .get(&queue.as_string())
        .ok_or_else(|| ModelError::Knob(format!("mapping {queue}")))
}

fn stage(name: String, instances: f64, t: &Timing, a: &Assumptions) -> StageRate {
    let seconds = seconds_on_aws(t, a);
    StageRate {
        stage: name,
        instances,
        emails_per_invocation: t.emails_per_invocation,
        seconds_per_invocation: seconds,
        emails_per_second: instances * t.emails_per_invocation / seconds.max(1e-9),
    }
}

/// Rows per ingest request of a lane: one email, or a bulk job's rows.
pub fn ingest_batch(lane: ProcessType, a: &Assumptions) -> u32 {
    if lane == ProcessType::Bulk {
        a.bulk_rows
    } else {
        1
    }
}

/// The stages that only `lane` uses: its intake mapping (persist) and its send mapping.
fn lane_stages(
    knobs: &Knobs,
    m: &Measurements,
    a: &Assumptions,
    lane: ProcessType,
) -> Result<Vec<StageRate>, ModelError> {
    let mut out = Vec::new();
    for (function, queue) in [
        ("persist", QueueName::Intake(lane)),
        ("send", QueueName::Send(lane)),
    ] {
        let map = mapping(knobs, queue)?;
        let t = timing(m, function, Some(lane), map.batch_size)?;
        out.push(stage(
            format!("{function} ({queue} × {})", map.maximum_concurrency),
            f64::from(map.maximum_concurrency),
            t,
            a,
        ));
    }
    Ok(out)
}

fn min_named(limits: &[(String, f64)]) -> (f64, String) {
    limits
        .iter()
        .fold((f64::INFINITY, String::new()), |(best, name), (n, r)| {
            if *r < best {
                (*r, n.clone())
            } else {
                (best, name)
            }
        })
}

/// Ingest-instance seconds and API requests per email, over the mix.
fn ingest_per_email(m: &Measurements, a: &Assumptions) -> Result<(f64, f64), ModelError> {
    let mut seconds = 0.0;
    let mut requests = 0.0;
    for lane in ProcessType::ALL {
        let share = a.mix[lane_index(lane)];
        let t = timing(m, "ingest", Some(lane), ingest_batch(lane, a))?;
        seconds += share * seconds_on_aws(t, a) / t.emails_per_invocation.max(1e-9);
        requests += share / t.emails_per_invocation.max(1e-9);
    }
    Ok((seconds, requests))
}

/// What the deployment sustains, per lane alone and in total at the mix.
pub fn capacity(
    knobs: &Knobs,
    tf: &TerraformDefaults,
    m: &Measurements,
    a: &Assumptions,
) -> Result<Capacity, ModelError> {
    let ingest_instances = f64::from(knobs.max_concurrency("ingest"));
    let receipts_map = mapping(knobs, QueueName::Receipts)?;
    let receipts = stage(
        format!("receipts (receipts × {})", receipts_map.maximum_concurrency),
        f64::from(receipts_map.maximum_concurrency),
        timing(m, "receipts", None, receipts_map.batch_size)?,
        a,
    );
    let ses = tf.ses_account_rate;
    let mut lanes = Vec::new();
    for lane in ProcessType::ALL {
        let ingest_t = timing(m, "ingest", Some(lane), ingest_batch(lane, a))?;
        let mut stages = vec![stage(
            format!("ingest (reserved × {ingest_instances})"),
            ingest_instances,
            ingest_t,
            a,
        )];
        stages.push(StageRate {
            stage: format!("API Gateway throttle ({}/s)", tf.api_throttle_rate),
            instances: 1.0,
            emails_per_invocation: ingest_t.emails_per_invocation,
            seconds_per_invocation: 1.0 / tf.api_throttle_rate.max(1e-9),
            emails_per_second: tf.api_throttle_rate * ingest_t.emails_per_invocation,
        });
        stages.extend(lane_stages(knobs, m, a, lane)?);
        stages.push(receipts.clone());
        stages.push(StageRate {
            stage: format!("SES account rate ({ses}/s)"),
            instances: 1.0,
            emails_per_invocation: 1.0,
            seconds_per_invocation: 1.0 / ses.max(1e-9),
            emails_per_second: ses,
        });
        let named: Vec<(String, f64)> = stages
            .iter()
            .map(|s| (s.stage.clone(), s.emails_per_second))
            .collect();
        let (rate, bound) = min_named(&named);
        lanes.push(LaneCapacity {
            lane,
            stages,
            emails_per_second: rate,
            bound,
        });
    }

    // All lanes at once: a lane's own stage carries only its share of the total.
    let (ingest_seconds, api_requests) = ingest_per_email(m, a)?;
    let mut total_limits = vec![
        (
            format!("ingest (reserved × {ingest_instances})"),
            ingest_instances / ingest_seconds.max(1e-12),
        ),
        (
            format!("API Gateway throttle ({}/s)", tf.api_throttle_rate),
            tf.api_throttle_rate / api_requests.max(1e-12),
        ),
    ];
    for l in &lanes {
        let share = a.mix[lane_index(l.lane)];
        if share <= 0.0 {
            continue;
        }
        for s in l
            .stages
            .iter()
            .filter(|s| s.stage.starts_with("persist") || s.stage.starts_with("send"))
        {
            total_limits.push((s.stage.clone(), s.emails_per_second / share));
        }
    }
    total_limits.push((receipts.stage.clone(), receipts.emails_per_second));
    total_limits.push((format!("SES account rate ({ses}/s)"), ses));
    let (rate, bound) = min_named(&total_limits);
    Ok(Capacity {
        lanes,
        total_limits,
        emails_per_second: rate,
        bound,
    })
}

/// Knob settings and account quotas for a target rate (emails/s) at the mix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub target_per_second: f64,
    /// Queue, batch size, maximum concurrency.
    pub mappings: Vec<(String, u32, u32)>,
    pub ingest_reserved_concurrency: u32,
    pub ses_sending_rate: u32,
    pub api_throttle_rate: u32,
    pub api_throttle_burst: u32,
    pub writer_connections: u32,
    pub reader_connections: u32,
    pub db_instance_class: String,
    pub proxy_connections_per_instance: u32,
    /// Reserved by the stack, plus the 100 Lambda keeps unreserved.
    pub lambda_concurrent_executions: u32,
    /// Write-ahead log the writer must write each second (insert, claim, settle, receipt).
    pub writer_wal_bytes_per_second: f64,
    /// Problems: a mapping above 1,000, no class big enough.
    pub problems: Vec<String>,
}

/// Instances a stage needs to carry `rate` emails/s with `headroom`.
fn instances_for(rate: f64, t: &Timing, a: &Assumptions) -> u32 {
    let per_instance = t.emails_per_invocation / seconds_on_aws(t, a).max(1e-9);
    (rate * a.headroom / per_instance.max(1e-12)).ceil() as u32
}

pub fn settings_for(
    target: f64,
    knobs: &Knobs,
    tf: &TerraformDefaults,
    m: &Measurements,
    a: &Assumptions,
) -> Result<Settings, ModelError> {
    let mut problems = Vec::new();
    let mut mappings = Vec::new();
    for q in QueueName::ALL {
        let map = mapping(knobs, q)?;
        let needed = match q {
            QueueName::Intake(l) | QueueName::Send(l) => {
                let function = if matches!(q, QueueName::Intake(_)) {
                    "persist"
                } else {
                    "send"
                };
                let t = timing(m, function, Some(l), map.batch_size)?;
                instances_for(target * a.mix[lane_index(l)], t, a)
            }
            QueueName::Receipts => {
                instances_for(target, timing(m, "receipts", None, map.batch_size)?, a)
            }
            // Callbacks follow the services' endpoints, not the email rate.
            QueueName::Callbacks => map.maximum_concurrency,
        };
        // AWS allows 2–1,000; never below what ships.
        let conc = needed.max(map.maximum_concurrency).max(2);
        if conc > 1_000 {
            problems.push(format!(
                "{q} needs {conc} instances, above the mapping limit of 1,000: raise its batch size"
            ));
        }
        mappings.push((q.as_string(), map.batch_size, conc));
    }
    let (ingest_seconds, api_requests) = ingest_per_email(m, a)?;
    let ingest =
        ((target * ingest_seconds * a.headroom).ceil() as u32).max(knobs.max_concurrency("ingest"));
    let mut tuned = knobs.clone();
    for (q, _, conc) in &mappings {
        if let Some(map) = tuned.event_source_mappings.get_mut(q) {
            map.maximum_concurrency = *conc;
        }
    }
    if let Some(f) = tuned.functions.get_mut("ingest") {
        f.reserved_concurrency = ingest;
    }
    let demand = tuned.connection_demand();
    let needed_per_instance = demand
        .writer
        .max(demand.reader)
        .max(knobs.connection_budget.writer)
        .max(knobs.connection_budget.reader);
    let family = tf
        .db_instance_class
        .rsplit_once('.')
        .map_or(tf.db_instance_class.as_str(), |(f, _)| f);
    let mut classes: Vec<(&String, u32)> = tf
        .class_max_connections
        .keys()
        .filter(|c| c.starts_with(family))
        .filter_map(|c| Some((c, tf.proxy_connections(c)?)))
        .collect();
    classes.sort_by_key(|(_, n)| *n);
    let current = tf.proxy_connections(&tf.db_instance_class).unwrap_or(0);
    let (class, proxy) = if current >= needed_per_instance {
        (tf.db_instance_class.clone(), current)
    } else {
        match classes.iter().find(|(_, n)| *n >= needed_per_instance) {
            Some((c, n)) => ((*c).clone(), *n),
            None => {
                problems.push(format!(
                    "no {family} class lets the proxy open {needed_per_instance} connections"
                ));
                (tf.db_instance_class.clone(), current)
            }
        }
    };
    let reserved: u32 = tuned
        .functions
        .keys()
        .map(|f| tuned.max_concurrency(f))
        .sum::<u32>()
        // The alarm re-notifier's reservation of 1, and the 100 Lambda keeps unreserved.
        + 1
        + 100;
    let api_rate = (target * api_requests * a.headroom).ceil() as u32;
    Ok(Settings {
        target_per_second: target,
        mappings,
        ingest_reserved_concurrency: ingest,
        ses_sending_rate: (target * a.headroom).ceil() as u32,
        api_throttle_rate: api_rate.max(tf.api_throttle_rate as u32),
        api_throttle_burst: (2 * api_rate).max(tf.api_throttle_burst as u32),
        writer_connections: demand.writer.max(knobs.connection_budget.writer),
        reader_connections: demand.reader.max(knobs.connection_budget.reader),
        db_instance_class: class,
        proxy_connections_per_instance: proxy,
        lambda_concurrent_executions: reserved,
        writer_wal_bytes_per_second: target * m.wal_bytes_per_email,
        problems,
    })
}

/// The knobs and Terraform values with `s` applied, to run the model on them again.
pub fn apply(s: &Settings, knobs: &Knobs, tf: &TerraformDefaults) -> (Knobs, TerraformDefaults) {
    let mut k = knobs.clone();
    for (q, batch, conc) in &s.mappings {
        if let Some(map) = k.event_source_mappings.get_mut(q) {
            map.batch_size = *batch;
            map.maximum_concurrency = *conc;
        }
    }
    if let Some(f) = k.functions.get_mut("ingest") {
        f.reserved_concurrency = s.ingest_reserved_concurrency;
    }
    k.connection_budget.writer = s.writer_connections;
    k.connection_budget.reader = s.reader_connections;
    let mut t = tf.clone();
    t.ses_account_rate = f64::from(s.ses_sending_rate);
    t.api_throttle_rate = f64::from(s.api_throttle_rate);
    t.api_throttle_burst = f64::from(s.api_throttle_burst);
    t.db_instance_class = s.db_instance_class.clone();
    (k, t)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn t(function: &str, lane: Option<ProcessType>, batch: u32, emails: f64, ms: f64) -> Timing {
        Timing {
            function: function.into(),
            lane,
            batch,
            emails_per_invocation: emails,
            median_ms: ms,
            p90_ms: ms * 1.5,
            invocations: 5,
        }
    }

    /// Round numbers at the shipped batch sizes (knobs.json): every stage takes 100 ms,
    /// ingest 10 ms per single request and 500 ms per 1,000-row job.
    pub(crate) fn round_measurements() -> Measurements {
        use ProcessType::*;
        let mut timings = vec![
            t("ingest", Some(Priority), 1, 1.0, 10.0),
            t("ingest", Some(Normal), 1, 1.0, 10.0),
            t("ingest", Some(Bulk), 1_000, 1_000.0, 500.0),
            // intake-priority: 10 messages of 1 email.
            t("persist", Some(Priority), 10, 10.0, 100.0),
            // intake-normal: 50 messages of 1 email.
            t("persist", Some(Normal), 50, 50.0, 100.0),
            // intake-bulk: 16 messages of ~400 emails.
            t("persist", Some(Bulk), 16, 6_400.0, 1_000.0),
            // send-priority: 10 × 1 id; send-normal 20 × 10; send-bulk 20 × 50.
            t("send", Some(Priority), 10, 10.0, 100.0),
            t("send", Some(Normal), 20, 200.0, 100.0),
            t("send", Some(Bulk), 20, 1_000.0, 100.0),
            // receipts: 100 events = 50 emails.
            t("receipts", None, 100, 50.0, 100.0),
        ];
        timings.push(t("receipts", None, 1, 0.5, 5.0));
        let single = LaneTraffic {
            api_requests_per_email: 1.0,
            intake_messages_per_email: 1.0,
            intake_bytes_per_message: 1_000.0,
            send_messages_per_email: 1.0,
            send_bytes_per_message: 100.0,
            limit_store_calls_per_email: 2.0,
        };
        Measurements {
            timings,
            lanes: [
                single,
                LaneTraffic {
                    send_messages_per_email: 0.1,
                    ..single
                },
                LaneTraffic {
                    api_requests_per_email: 0.001,
                    intake_messages_per_email: 1.0 / 400.0,
                    intake_bytes_per_message: 200_000.0,
                    send_messages_per_email: 0.02,
                    send_bytes_per_message: 2_000.0,
                    limit_store_calls_per_email: 0.1,
                },
            ],
            events_per_email: 2.0,
            event_bytes_per_message: 3_000.0,
            wal_bytes_per_email: 1_000.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    fn no_ses_latency() -> Assumptions {
        Assumptions {
            ses_call_ms: 0.0,
            ..Assumptions::default()
        }
    }

    #[test]
    fn shipped_knobs_are_bound_by_the_ses_account_rate() {
        let k = Knobs::embedded();
        let tf = TerraformDefaults::shipped(&k).unwrap();
        let c = capacity(&k, &tf, &round_measurements(), &no_ses_latency()).unwrap();
        for l in &c.lanes {
            assert_eq!(l.emails_per_second, 14.0, "{:?}", l.lane);
            assert!(l.bound.starts_with("SES account rate"), "{}", l.bound);
        }
        assert_eq!(c.emails_per_second, 14.0);
        assert_eq!(c.emails_per_hour(), 50_400.0);
    }

    #[test]
    fn stage_rates_by_hand() {
        let k = Knobs::embedded();
        let mut tf = TerraformDefaults::shipped(&k).unwrap();
        tf.ses_account_rate = 1e9;
        tf.api_throttle_rate = 1e9;
        let c = capacity(&k, &tf, &round_measurements(), &no_ses_latency()).unwrap();
        let rate = |lane: usize, prefix: &str| {
            c.lanes[lane]
                .stages
                .iter()
                .find(|s| s.stage.starts_with(prefix))
                .unwrap()
                .emails_per_second
        };
        // priority: persist 4 × 10 / 0.1 s = 400/s; send 5 × 10 / 0.1 s = 500/s.
        assert!(close(rate(0, "persist"), 400.0));
        assert!(close(rate(0, "send"), 500.0));
        // ingest 50 × 1 / 0.01 s = 5,000/s; receipts 3 × 50 / 0.1 s = 1,500/s.
        assert!(close(rate(0, "ingest"), 5_000.0));
        assert!(close(rate(0, "receipts"), 1_500.0));
        assert!(close(c.lanes[0].emails_per_second, 400.0));
        assert!(c.lanes[0].bound.starts_with("persist (intake-priority"));
        // normal: persist 4 × 50 / 0.1 = 2,000; send 5 × 200 / 0.1 = 10,000; receipts 1,500.
        assert!(close(c.lanes[1].emails_per_second, 1_500.0));
        assert!(c.lanes[1].bound.starts_with("receipts"));
        // Together at 10/40/50: priority's persist carries 10 % so allows 4,000/s in
        // total; receipts 1,500/s is lower, and is the bound.
        assert!(close(c.emails_per_second, 1_500.0));
        assert!(c.bound.starts_with("receipts"));
    }

    #[test]
    fn send_pays_for_ses_round_trips() {
        // 200 emails, 16 in flight: 13 waves of 40 ms on top of the 100 ms measured.
        let s = seconds_on_aws(&t("send", None, 20, 200.0, 100.0), &Assumptions::default());
        assert!((s - (0.1 + 13.0 * 0.04)).abs() < 1e-9, "{s}");
        let p = seconds_on_aws(
            &t("persist", None, 20, 200.0, 100.0),
            &Assumptions::default(),
        );
        assert_eq!(p, 0.1);
    }

    #[test]
    fn settings_for_ten_million_an_hour_satisfy_the_model() {
        let k = Knobs::embedded();
        let tf = TerraformDefaults::shipped(&k).unwrap();
        let m = round_measurements();
        let a = no_ses_latency();
        let target = 10_000_000.0 / 3600.0;
        let s = settings_for(target, &k, &tf, &m, &a).unwrap();
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        // priority carries 277.8/s; one persist instance does 100/s; ×1.2 → 4 (ships 4).
        let conc = |q: &str| s.mappings.iter().find(|m| m.0 == q).unwrap().2;
        assert_eq!(conc("intake-priority"), 4);
        // receipts: 2,777.8 × 1.2 / 500 per instance = 6.67 → 7.
        assert_eq!(conc("receipts"), 7);
        assert_eq!(s.ses_sending_rate, 3_334);
        let (k2, tf2) = apply(&s, &k, &tf);
        let c = capacity(&k2, &tf2, &m, &a).unwrap();
        assert!(c.emails_per_second >= target, "{c:?}");
        assert!(k2.connection_demand().writer <= s.proxy_connections_per_instance);
    }
}
