//! What the capacity model needs from the Terraform files, read from their text (embedded at
//! build time, as the knobs are): variable defaults, the table of `max_connections` per
//! instance class, and the counts of alarms and interface endpoints. Pure functions.

use floodgate_core::Knobs;
use std::collections::BTreeMap;

pub const VARIABLES_TF: &str = include_str!("../../../variables.tf");
pub const LOCALS_TF: &str = include_str!("../../../locals.tf");
pub const NETWORK_TF: &str = include_str!("../../../network.tf");
pub const ALARM_FILES: [&str; 2] = [
    include_str!("../../../alarms.tf"),
    include_str!("../../../maintenance.tf"),
];

/// The Terraform defaults the model uses.
#[derive(Debug, Clone, PartialEq)]
pub struct TerraformDefaults {
    pub region: String,
    pub ses_account_rate: f64,
    pub db_instance_class: String,
    /// Readers besides the writer.
    pub db_reader_count: u32,
    pub az_count: u32,
    pub proxy_max_connections_percent: f64,
    pub api_throttle_rate: f64,
    pub api_throttle_burst: f64,
    /// `max_connections` of one instance, by class (`local.aurora_pg_max_connections`).
    pub class_max_connections: BTreeMap<String, u32>,
    /// `aws_cloudwatch_metric_alarm` resources, `for_each` expanded.
    pub alarms: u32,
    /// Interface VPC endpoints (each billed per AZ-hour).
    pub interface_endpoints: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("Terraform: {0}")]
pub struct TerraformError(String);

/// The `default` of `variable "name"`, as written (quotes removed).
pub fn variable_default(tf: &str, name: &str) -> Option<String> {
    let start = tf.find(&format!("variable \"{name}\""))?;
    let rest = &tf[start..];
    // The block ends at the next variable; its first `default =` line is the default.
    let end = rest[1..]
        .find("\nvariable \"")
        .map_or(rest.len(), |i| i + 1);
    rest[..end].lines().find_map(|l| {
        let l = l.trim();
        let v = l.strip_prefix("default")?.trim_start().strip_prefix('=')?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The quoted strings of a line (`["r6g", "r6i"]` → r6g, r6i).
fn quoted(line: &str) -> Vec<String> {
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `"class" = number` of one line, with `${family}` / `${size}` put in.
fn class_entry(line: &str, family: &str, size: &str) -> Option<(String, u32)> {
    let (k, v) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    if !k.starts_with("db.") {
        return None;
    }
    let k = k.replace("${family}", family).replace("${size}", size);
    Some((k, v.trim().parse().ok()?))
}

/// The `aurora_pg_max_connections` map of locals.tf, its `for` expressions expanded: the
/// literal entries, the per-family entries, and the capped classes at the cap.
pub fn class_max_connections(locals: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    if let Some(start) = locals.find("aurora_pg_max_connections = merge(") {
        let mut families: Option<Vec<String>> = None;
        for line in locals[start..].lines().skip(1) {
            let t = line.trim();
            if t == ")" {
                break;
            }
            if t.starts_with("for family in [") {
                families = Some(quoted(t.split(':').next().unwrap_or("")));
            } else if t.starts_with('}') {
                families = None;
            } else if let Some(fs) = &families {
                for f in fs {
                    out.extend(class_entry(t, f, ""));
                }
            } else {
                out.extend(class_entry(t, "", ""));
            }
        }
    }
    let cap = locals.lines().find_map(|l| {
        l.trim()
            .strip_prefix("aurora_pg_connection_cap")?
            .trim_start()
            .strip_prefix('=')?
            .trim()
            .parse::<u32>()
            .ok()
    });
    if let (Some(cap), Some(start)) = (cap, locals.find("aurora_pg_capped_classes = flatten(")) {
        let mut lists = locals[start..]
            .lines()
            .filter(|l| l.trim_start().starts_with("for "))
            .take(2)
            .map(|l| quoted(l.split(':').next().unwrap_or("")));
        if let (Some(families), Some(sizes)) = (lists.next(), lists.next()) {
            for f in &families {
                for s in &sizes {
                    out.entry(format!("db.{f}.{s}")).or_insert(cap);
                }
            }
        }
    }
    out
}

/// Alarms Terraform creates: one per plain `aws_cloudwatch_metric_alarm`, one per key of
/// the collection a `for_each` names (queues and functions from the knobs, the log events
/// from their `locals` block).
pub fn alarm_count(files: &[&str], knobs: &Knobs) -> Result<u32, TerraformError> {
    let log_events = files
        .iter()
        .find_map(|f| {
            let start = f.find("log_events = {")?;
            Some(
                f[start..]
                    .lines()
                    .skip(1)
                    .take_while(|l| l.trim() != "}")
                    .filter(|l| l.contains("= {"))
                    .count() as u32,
            )
        })
        .unwrap_or(0);
    let mut total = 0;
    for f in files {
        for block in f.split("resource \"aws_cloudwatch_metric_alarm\"").skip(1) {
            let for_each = block
                .lines()
                .take(3)
                .find_map(|l| l.trim().strip_prefix("for_each").map(str::to_string));
            total += match for_each
                .as_deref()
                .map(|s| s.trim_start_matches([' ', '=']))
            {
                None => 1,
                Some("local.queues") => knobs.event_source_mappings.len() as u32,
                Some("local.functions") => knobs.functions.len() as u32,
                Some("local.log_events") => log_events,
                Some(other) => return Err(TerraformError(format!("alarms for_each {other}"))),
            };
        }
    }
    Ok(total)
}

/// Entries of `interface_endpoints = toset([...])` in network.tf.
pub fn interface_endpoint_count(network: &str) -> u32 {
    network
        .lines()
        .find(|l| l.trim_start().starts_with("interface_endpoints") && l.contains("toset"))
        .map_or(0, |l| l.matches('"').count() as u32 / 2)
}

impl TerraformDefaults {
    pub fn parse(
        variables: &str,
        locals: &str,
        network: &str,
        alarm_files: &[&str],
        knobs: &Knobs,
    ) -> Result<Self, TerraformError> {
        let get = |name: &str| {
            variable_default(variables, name)
                .ok_or_else(|| TerraformError(format!("no default for {name}")))
        };
        let num = |name: &str| -> Result<f64, TerraformError> {
            get(name)?
                .parse()
                .map_err(|_| TerraformError(format!("{name} is not a number")))
        };
        Ok(TerraformDefaults {
            region: get("region")?,
            ses_account_rate: num("ses_account_rate")?,
            db_instance_class: get("db_instance_class")?,
            db_reader_count: num("db_reader_count")? as u32,
            az_count: num("az_count")? as u32,
            proxy_max_connections_percent: num("proxy_max_connections_percent")?,
            api_throttle_rate: num("api_throttle_rate")?,
            api_throttle_burst: num("api_throttle_burst")?,
            class_max_connections: class_max_connections(locals),
            alarms: alarm_count(alarm_files, knobs)?,
            interface_endpoints: interface_endpoint_count(network),
        })
    }

    /// The files of this checkout.
    pub fn shipped(knobs: &Knobs) -> Result<Self, TerraformError> {
        Self::parse(VARIABLES_TF, LOCALS_TF, NETWORK_TF, &ALARM_FILES, knobs)
    }

    /// What the proxy may open to one instance of `class`.
    pub fn proxy_connections(&self, class: &str) -> Option<u32> {
        self.class_max_connections
            .get(class)
            .map(|c| (f64::from(*c) * self.proxy_max_connections_percent / 100.0).floor() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_and_tables() {
        let vars = "variable \"a\" {\n  type = number\n  default = 14\n}\n\nvariable \"b\" {\n  default     = \"db.r6g.large\"\n}\n";
        assert_eq!(variable_default(vars, "a").as_deref(), Some("14"));
        assert_eq!(variable_default(vars, "b").as_deref(), Some("db.r6g.large"));
        assert_eq!(variable_default(vars, "c"), None);
        let locals = "  aurora_pg_max_connections = merge(\n    {\n      \"db.t4g.medium\" = 405\n    },\n    merge([\n      for family in [\"r6g\", \"r7g\"] : {\n        \"db.${family}.large\" = 1722\n      }\n    ]...),\n  )\n  aurora_pg_connection_cap = 5000\n  aurora_pg_capped_classes = flatten([\n    for family in [\"r6g\"] : [\n      for size in [\"2xlarge\", \"4xlarge\"] : \"db.${family}.${size}\"\n    ]\n  ])\n";
        let m = class_max_connections(locals);
        assert_eq!(m.get("db.t4g.medium"), Some(&405));
        assert_eq!(m.get("db.r6g.large"), Some(&1722));
        assert_eq!(m.get("db.r7g.large"), Some(&1722));
        assert_eq!(m.get("db.r6g.4xlarge"), Some(&5000));
        assert_eq!(m.len(), 5);
        assert_eq!(
            interface_endpoint_count("  interface_endpoints = toset([\"sqs\", \"email\"])"),
            2
        );
    }

    #[test]
    fn the_shipped_files_give_the_numbers_the_docs_state() {
        let k = Knobs::embedded();
        let d = TerraformDefaults::shipped(&k).unwrap();
        assert_eq!(d.region, "eu-west-2");
        assert_eq!(d.ses_account_rate, 14.0);
        assert_eq!(d.db_instance_class, "db.r6g.large");
        // KNOBS.md: 1,722 for db.r6g.large, so 1,549 at 90 %.
        assert_eq!(d.proxy_connections("db.r6g.large"), Some(1549));
        // db.t4g.medium: 405, so 364; a capped class: 5,000, so 4,500.
        assert_eq!(d.proxy_connections("db.t4g.medium"), Some(364));
        assert_eq!(d.proxy_connections("db.r6g.8xlarge"), Some(4500));
        // 8 DLQ + 8 age + 2 proxy + 7 errors + 7 throttles + api 5xx + re-notifier
        // + 4 log events + 2 maintenance.
        assert_eq!(d.alarms, 40);
        // sqs, email, secretsmanager, logs.
        assert_eq!(d.interface_endpoints, 4);
    }
}
