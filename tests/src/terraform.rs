//! The environment Terraform gives each function, computed by Terraform itself: the
//! `locals` and `variable` blocks of `infra/*.tf` (with `knobs.json`) go into a scratch
//! module in which every reference to a resource or data source becomes a placeholder
//! string `"<aws_sqs_queue.main.url>"`, and `terraform console` evaluates `local.fn_env`.
//! No provider is needed, so this runs where `terraform validate` cannot.
//!
//! And the drift check: what a function's code reads against what Terraform sets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Function name → variable → value (placeholders where AWS fills the value in).
pub type FunctionEnvironments = BTreeMap<String, BTreeMap<String, String>>;

/// Evaluates `local.fn_env` of the Terraform in `infra_dir` with the variables of
/// `tfvars`, using the `terraform` binary on the PATH.
pub fn terraform_environments(
    infra_dir: &Path,
    tfvars: &Path,
) -> Result<FunctionEnvironments, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut module = String::new();
    let mut names: Vec<_> = std::fs::read_dir(infra_dir)
        .map_err(|e| format!("{}: {e}", infra_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tf"))
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
        for block in top_level_blocks(&text, &["locals", "variable"]) {
            module.push_str(&placeholders(block));
            module.push_str("\n\n");
        }
    }
    std::fs::write(scratch.path().join("main.tf"), module).map_err(|e| e.to_string())?;
    std::fs::copy(
        infra_dir.join("knobs.json"),
        scratch.path().join("knobs.json"),
    )
    .map_err(|e| e.to_string())?;
    let init = Command::new("terraform")
        .args(["init", "-backend=false", "-input=false", "-no-color"])
        .current_dir(scratch.path())
        .output()
        .map_err(|e| format!("running terraform: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "terraform init: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let tfvars = std::path::absolute(tfvars).map_err(|e| e.to_string())?;
    let mut console = Command::new("terraform")
        .args(["console", "-no-color"])
        .arg(format!("-var-file={}", tfvars.display()))
        .current_dir(scratch.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running terraform console: {e}"))?;
    if let Some(mut stdin) = console.stdin.take() {
        use std::io::Write;
        writeln!(stdin, "jsonencode(local.fn_env)").map_err(|e| e.to_string())?;
    }
    let out = console.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "terraform console: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The console prints the JSON as an HCL string literal: decode that first.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let literal = stdout
        .lines()
        .find(|l| l.starts_with('"'))
        .ok_or_else(|| format!("terraform console printed no value: {stdout}"))?;
    let json: String = serde_json::from_str(literal).map_err(|e| e.to_string())?;
    serde_json::from_str(&json).map_err(|e| e.to_string())
}

/// The text of every top-level block of one of `kinds` (`locals { … }`, `variable "x" { … }`).
fn top_level_blocks<'a>(text: &'a str, kinds: &[&str]) -> Vec<&'a str> {
    let mut blocks = Vec::new();
    let mut offset = 0;
    // Lines inside a block already taken are not headers.
    let mut taken_to = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let opens = kinds.iter().any(|k| {
            line.strip_prefix(k)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        });
        if !opens || start < taken_to {
            continue;
        }
        if let Some(end) = block_end(text, start) {
            blocks.push(&text[start..end]);
            taken_to = end;
        }
    }
    blocks
}

/// The end (exclusive) of the block whose header starts at `start`: its braces balanced,
/// braces inside strings and heredocs included in the count only where HCL would count
/// them (a heredoc's body is skipped).
fn block_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    let mut seen_open = false;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // A string: skip to its closing quote (escapes and `${…}` stay inside).
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'<' if text[i..].starts_with("<<") => {
                // A heredoc: `<<-TAG` … a line that is TAG.
                let tag_start = i + 2 + usize::from(text[i + 2..].starts_with('-'));
                let tag_end = text[tag_start..].find('\n').map(|n| tag_start + n)?;
                let tag = text[tag_start..tag_end].trim();
                let mut j = tag_end + 1;
                loop {
                    let line_end = text[j..].find('\n').map_or(text.len(), |n| j + n);
                    if text[j..line_end].trim() == tag {
                        i = line_end;
                        break;
                    }
                    if line_end >= text.len() {
                        return None;
                    }
                    j = line_end + 1;
                }
            }
            b'#' => {
                i = text[i..].find('\n').map_or(text.len(), |n| i + n);
            }
            b'{' => {
                depth += 1;
                seen_open = true;
            }
            b'}' => {
                depth = depth.checked_sub(1)?;
                if seen_open && depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Replaces every reference to a resource or data source (`aws_db_proxy.this.endpoint`,
/// `aws_sqs_queue.main[q].url`, `data.aws_region.current.region`) with a placeholder
/// string naming it (`"<aws_sqs_queue.main.url>"`). The text of a string literal is left
/// as it is (a description may name `data.x` in prose); its `${…}` interpolations are code.
fn placeholders(block: &str) -> String {
    let bytes = block.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = String::with_capacity(block.len());
    // Inside a string literal (and not in one of its interpolations)?
    let mut in_string = false;
    // Brace depth of each interpolation we are in; the innermost last.
    let mut interpolations: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &block[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if in_string {
            if rest.starts_with("${") {
                interpolations.push(0);
                in_string = false;
                out.push_str("${");
                i += 2;
                continue;
            }
            if c == '\\' {
                let escaped: String = rest.chars().take(2).collect();
                out.push_str(&escaped);
                i += escaped.len();
                continue;
            }
            if c == '"' {
                in_string = false;
            }
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
                i += 1;
                continue;
            }
            '{' if !interpolations.is_empty() => {
                if let Some(d) = interpolations.last_mut() {
                    *d += 1;
                }
            }
            '}' if !interpolations.is_empty() => {
                if interpolations.last() == Some(&0) {
                    interpolations.pop();
                    in_string = true;
                } else if let Some(d) = interpolations.last_mut() {
                    *d -= 1;
                }
            }
            _ => {}
        }
        let boundary = i == 0 || !(ident(bytes[i - 1]) || bytes[i - 1] == b'.');
        let is_ref = boundary
            && (rest.starts_with("data.") || {
                rest.starts_with("aws_")
                    && rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .is_some_and(|n| rest[n..].starts_with('.'))
            });
        if !is_ref {
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        let mut j = i;
        let mut name = String::new();
        while j < bytes.len() {
            if ident(bytes[j]) || bytes[j] == b'.' {
                name.push(bytes[j] as char);
                j += 1;
            } else if bytes[j] == b'[' {
                // An index: dropped from the placeholder's name.
                let close = block[j..].find(']').map_or(bytes.len(), |n| j + n + 1);
                j = close;
            } else {
                break;
            }
        }
        out.push_str(&format!("\"<{}>\"", name.trim_end_matches('.')));
        i = j;
    }
    out
}

/// What is wrong between the variables a function's code `read` and the ones Terraform
/// `set`: a variable Terraform sets that the code never reads, and one the code reads that
/// Terraform does not set unless it is one of the `optional` tunables (a documented
/// default; `PREFIX_*` names a family). Only Floodgate's own variables (`FLOODGATE_*`, `RUST_LOG`) count.
pub fn env_drift(
    function: &str,
    read: &BTreeSet<String>,
    set: &BTreeSet<String>,
    optional: &[&str],
) -> Vec<String> {
    let ours = |v: &&String| v.starts_with("FLOODGATE_") || v.as_str() == "RUST_LOG";
    let mut problems = Vec::new();
    for v in set.iter().filter(ours) {
        if !read.contains(v) {
            problems.push(format!(
                "{function}: Terraform sets {v}, which the code never reads"
            ));
        }
    }
    for v in read.iter().filter(ours) {
        let is_optional = optional.iter().any(|o| match o.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => o == v,
        });
        if !set.contains(v) && !is_optional {
            problems.push(format!(
                "{function}: the code reads {v}, which Terraform does not set"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn drift_both_ways_is_reported_and_optional_tunables_are_not() {
        let read = set(&[
            "FLOODGATE_WRITER_URL",
            "FLOODGATE_CACHE_TTL_S",
            "AWS_REGION",
        ]);
        let tf = set(&["FLOODGATE_WRITER_URL", "FLOODGATE_FROM_EMAIL"]);
        let p = env_drift("send", &read, &tf, &["FLOODGATE_CACHE_TTL_S"]);
        assert_eq!(
            p,
            ["send: Terraform sets FLOODGATE_FROM_EMAIL, which the code never reads"]
        );
        let p = env_drift("send", &read, &tf, &[]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].contains("reads FLOODGATE_CACHE_TTL_S"), "{p:?}");
    }

    #[test]
    fn references_become_placeholders_and_strings_stay() {
        let b = r#"locals {
  a = aws_sqs_queue.main[q].url
  b = "postgres://${local.u}@${aws_db_proxy.this.endpoint}:5432/x"
  c = data.aws_region.current.region
  d = "arn:aws:sqs:x"
  e = var.aws_thing
  f = "the newest minor (data.aws_rds_engine_version) and ${data.aws_region.current.region}"
}"#;
        let p = placeholders(b);
        assert!(p.contains(r#"a = "<aws_sqs_queue.main.url>""#), "{p}");
        assert!(
            p.contains(r#"@${"<aws_db_proxy.this.endpoint>"}:5432"#),
            "{p}"
        );
        assert!(
            p.contains(r#"c = "<data.aws_region.current.region>""#),
            "{p}"
        );
        assert!(p.contains(r#""arn:aws:sqs:x""#), "{p}");
        assert!(p.contains("var.aws_thing"), "{p}");
        assert!(
            p.contains(r#"f = "the newest minor (data.aws_rds_engine_version) and ${"<data.aws_region.current.region>"}""#),
            "prose in a string stays, its interpolation is replaced: {p}"
        );
    }

    #[test]
    fn blocks_end_at_their_own_brace_past_strings_and_heredocs() {
        let text = "locals {\n  a = \"}\"\n  b = <<-PY\n    }\n  PY\n}\nresource \"x\" \"y\" {\n}\nvariable \"v\" {\n  default = 1\n}\n";
        let blocks = top_level_blocks(text, &["locals", "variable"]);
        assert_eq!(blocks.len(), 2, "{blocks:?}");
        assert!(blocks[0].ends_with("PY\n}"), "{:?}", blocks[0]);
        assert!(blocks[1].starts_with("variable \"v\""), "{:?}", blocks[1]);
    }
}
