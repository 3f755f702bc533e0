"""Static checks of the Terraform in infra/ (stands in for `terraform validate`, which needs
providers this machine cannot download).

Parses every infra/*.tf with python-hcl2 and reads infra/knobs.json, then asserts:
- every crate in functions/ has its aws_lambda_function and zip path;
- every event source mapping is within AWS limits and reads its numbers from knobs.json;
- every queue has a DLQ;
- the knob values Terraform uses are those of knobs.json (the file the local stack embeds).
Each rule is a function returning a list of violations, and the negative tests feed it
broken input to prove the rule can fail. What Terraform computes from the knobs (connection
totals, visibility timeouts, the plan-time guards) is evaluated by Terraform itself in
test_guards.py, not re-implemented here.

Run: python -m pytest infra/tests (infra/check.sh does it in its venv).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import hcl2
import pytest

INFRA = Path(__file__).resolve().parent.parent
REPO = INFRA.parent
FUNCTIONS_DIR = REPO / "functions"

SPEC_FUNCTIONS = {"ingest", "status", "persist", "send", "receipts", "admin", "callbacks"}
SPEC_QUEUES = {
    "intake-priority", "intake-normal", "intake-bulk",
    "send-priority", "send-normal", "send-bulk",
    "receipts", "callbacks",
}
SPEC_ROUTES = {
    "POST /v2/notifications/email": "ingest",
    "POST /v2/notifications/bulk": "ingest",
    "GET /v2/notifications": "status",
    "GET /v2/notifications/{id}": "status",
    "GET /v2/template/{id}": "status",
    "GET /v2/template/{id}/version/{version}": "status",
    "GET /v2/templates": "status",
    "POST /v2/template/{id}/preview": "status",
    "GET /v2/jobs/{id}": "status",
    "GET /_status": "status",
}

# AWS limits for SQS event source mappings and queues.
MAX_BATCH = 10_000
MAX_WINDOW_S = 300
MIN_MAX_CONCURRENCY, MAX_MAX_CONCURRENCY = 2, 1_000
MIN_VISIBILITY_MULTIPLIER = 6
MAX_VISIBILITY_S = 43_200
SQS_MAX_MESSAGE_BYTES = 262_144
SQS_MAX_RETENTION_S = 1_209_600
LAMBDA_MAX_TIMEOUT_S = 900


# ----------------------------------------------------------------------------- parsing

def _unquote(value):
    """python-hcl2 >= 7 keeps the quotes of string literals and block labels; drop them."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _normalise(node):
    if isinstance(node, dict):
        return {_unquote(k): _normalise(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return _unquote(node)


def _tf_files():
    return sorted(INFRA.glob("*.tf"))


@pytest.fixture(scope="module")
def tf():
    """{'resource': {type: {name: body}}, 'data': ..., 'locals': {...}, 'variable': {...}}"""
    merged: dict = {"resource": {}, "data": {}, "locals": {}, "variable": {}, "output": {}}
    for path in _tf_files():
        with path.open() as fh:
            doc = _normalise(hcl2.load(fh))
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        assert name not in merged[kind].setdefault(rtype, {}), f"duplicate {kind} {rtype}.{name}"
                        merged[kind][rtype][name] = body
        for block in doc.get("locals", []):
            for key, val in block.items():
                assert key not in merged["locals"], f"duplicate local {key}"
                merged["locals"][key] = val
        for kind in ("variable", "output"):
            for block in doc.get(kind, []):
                merged[kind].update(block)
    return merged


@pytest.fixture(scope="module")
def knobs():
    return json.loads((INFRA / "knobs.json").read_text())


def _first_block(body, name):
    blocks = body.get(name)
    assert isinstance(blocks, list) and blocks, f"missing block {name}"
    return blocks[0]


def crate_dirs():
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/Cargo.toml"))


# ----------------------------------------------------------------------------- rules (pure)

def esm_limit_violations(mappings: dict, functions: dict) -> list[str]:
    out = []
    for queue, m in mappings.items():
        batch, window, conc = m["batch_size"], m["maximum_batching_window_seconds"], m["maximum_concurrency"]
        if not 1 <= batch <= MAX_BATCH:
            out.append(f"{queue}: batch_size {batch} outside 1..{MAX_BATCH}")
        if not 0 <= window <= MAX_WINDOW_S:
            out.append(f"{queue}: batching window {window}s outside 0..{MAX_WINDOW_S}")
        if batch > 10 and window < 1:
            out.append(f"{queue}: batch_size {batch} > 10 needs a batching window >= 1 s (has {window})")
        if not MIN_MAX_CONCURRENCY <= conc <= MAX_MAX_CONCURRENCY:
            out.append(f"{queue}: maximum_concurrency {conc} outside {MIN_MAX_CONCURRENCY}..{MAX_MAX_CONCURRENCY}")
        if m["function"] not in functions:
            out.append(f"{queue}: consumer {m['function']} is not a function in knobs.json")
    return out


def queue_knob_violations(knobs: dict) -> list[str]:
    sqs = knobs["sqs"]
    out = []
    if not 1 <= sqs["max_receive_count"] <= 1000:
        out.append("max_receive_count outside 1..1000")
    if sqs["visibility_timeout_multiplier"] < MIN_VISIBILITY_MULTIPLIER:
        out.append("visibility_timeout_multiplier < 6")
    if not 60 <= sqs["message_retention_seconds"] <= SQS_MAX_RETENTION_S:
        out.append("message_retention_seconds outside 60..1209600")
    if not sqs["message_retention_seconds"] <= sqs["dlq_retention_seconds"] <= SQS_MAX_RETENTION_S:
        out.append("dlq_retention_seconds must be >= message retention and <= 1209600")
    if not 1024 <= sqs["max_message_bytes"] <= SQS_MAX_MESSAGE_BYTES:
        out.append("max_message_bytes outside 1024..262144")
    if not 1 <= sqs["max_batch_entries"] <= 10:
        out.append("max_batch_entries outside 1..10 (SendMessageBatch limit)")
    for name, f in knobs["functions"].items():
        if not 1 <= f["timeout_seconds"] <= LAMBDA_MAX_TIMEOUT_S:
            out.append(f"{name}: timeout outside 1..900")
        if not 128 <= f["memory_mb"] <= 10240:
            out.append(f"{name}: memory outside 128..10240")
        if f["writer_lane_size"] < 0 or f["reader_lane_size"] < 0 or f["reserved_concurrency"] < 0:
            out.append(f"{name}: negative lane size or concurrency")
    return out


def dlq_violations(queues: dict) -> list[str]:
    """queues: {resource name: body}. Every queue has a redrive policy to another queue
    resource, or is itself such a dead-letter target."""
    targets = set()
    for body in queues.values():
        m = re.search(r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.(\w+)\[each\.key\]\.arn", str(body.get("redrive_policy", "")))
        if m:
            targets.add(m.group(1))
    out = []
    for name, body in queues.items():
        policy = str(body.get("redrive_policy", ""))
        if name in targets:
            if policy:
                out.append(f"aws_sqs_queue.{name} is a DLQ but has a redrive policy itself")
            continue
        m = re.search(r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.(\w+)\[each\.key\]\.arn", policy)
        if not m or m.group(1) not in queues or m.group(1) == name:
            out.append(f"aws_sqs_queue.{name} has no dead-letter queue")
        elif "maxReceiveCount = local.knobs.sqs.max_receive_count" not in policy:
            out.append(f"aws_sqs_queue.{name}: maxReceiveCount does not come from knobs.json")
        elif body.get("for_each") != queues[m.group(1)].get("for_each"):
            out.append(f"aws_sqs_queue.{name} and its DLQ are not one-to-one")
    return out


# ----------------------------------------------------------------------------- parse / wiring

def test_every_tf_file_parses():
    files = _tf_files()
    assert len(files) >= 8, "expected the stack's .tf files in infra/"
    for path in files:
        with path.open() as fh:
            hcl2.load(fh)


def test_knobs_are_read_from_the_json_file(tf):
    assert tf["locals"]["knobs"] == '${jsondecode(file("${path.module}/knobs.json"))}'
    assert tf["locals"]["functions"] == "${local.knobs.functions}"
    assert tf["locals"]["mappings"] == "${local.knobs.event_source_mappings}"
    assert tf["locals"]["queues"] == "${toset(keys(local.knobs.event_source_mappings))}"


# ----------------------------------------------------------------------------- functions

def test_functions_dir_has_crates():
    assert crate_dirs(), "no crate (folder with Cargo.toml) under functions/"


@pytest.mark.parametrize("crate", crate_dirs())
def test_every_crate_has_a_function_and_zip_path(tf, knobs, crate):
    # The function resource is for_each over knobs.json functions: the crate must be a key.
    assert crate in knobs["functions"], f"functions/{crate} has no entry in knobs.json functions (so no aws_lambda_function)"
    fn = tf["resource"]["aws_lambda_function"]["fn"]
    assert fn["for_each"] == "${local.functions}"

    # cargo lambda writes target/lambda/<binary>/bootstrap.zip; the binary is the package name.
    cargo = (FUNCTIONS_DIR / crate / "Cargo.toml").read_text()
    package = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    bins = re.findall(r'^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"', cargo, re.M | re.S)
    binary = bins[0] if bins else package.group(1)
    assert binary == f"floodgate-{crate}", f"functions/{crate} builds binary {binary}, Terraform expects floodgate-{crate}"

    template = "${local.artifacts_dir}/floodgate-${each.key}/bootstrap.zip"
    assert fn["filename"] == template
    assert fn["source_code_hash"] == '${filebase64sha256("' + template + '")}'
    assert "../target/lambda" in tf["locals"]["artifacts_dir"], "default artifacts dir must be the repo's target/lambda"

    assert fn["runtime"] == "provided.al2023"
    assert fn["architectures"] == ["arm64"]
    assert fn["handler"] == "bootstrap"
    assert fn["timeout"] == "${each.value.timeout_seconds}"
    assert fn["memory_size"] == "${each.value.memory_mb}"


def test_spec_functions_are_all_declared(knobs):
    assert SPEC_FUNCTIONS <= set(knobs["functions"]), SPEC_FUNCTIONS - set(knobs["functions"])


def test_function_environment_names(tf):
    env = tf["locals"]["fn_env"]
    for name in (
        "FLOODGATE_WRITER_URL", "FLOODGATE_READER_URL", "FLOODGATE_DB_IAM_AUTH",
        "FLOODGATE_WRITER_MAX_SIZE", "FLOODGATE_READER_MAX_SIZE",
        "FLOODGATE_WRITER_ACQUIRE_TIMEOUT_MS", "FLOODGATE_READER_ACQUIRE_TIMEOUT_MS",
        "FLOODGATE_QUEUE_URL_", "FLOODGATE_SES_CONFIGURATION_SET", "FLOODGATE_SENDING_DOMAINS", "RUST_LOG",
        "FLOODGATE_API_KEY_ENCRYPTION_KEY", "FLOODGATE_BOOTSTRAP_HOST", "FLOODGATE_BOOTSTRAP_SECRET_ARN",
        "FLOODGATE_DB_NAME", "FLOODGATE_DB_USERS",
    ):
        assert name in env, f"{name} is not passed to the functions"
    assert "sslmode=require" in env
    assert "tostring(f.writer_lane_size)" in env and "tostring(f.reader_lane_size)" in env



def test_api_key_encryption_key_reaches_exactly_ingest_status_admin_callbacks(tf):
    # callbacks opens the sealed bearer tokens of the services' callbacks.
    assert set(tf["locals"]["api_key_functions"]) == {"ingest", "status", "admin", "callbacks"}
    variable = tf["variable"]["api_key_encryption_key"]
    assert variable["sensitive"] is True
    assert "default" not in variable, "the key must not have a default"
    assert "api_key_encryption_key" in tf["resource"]["aws_secretsmanager_secret"]


# ----------------------------------------------------------------------------- event source mappings

def test_esm_resource_reads_knobs(tf):
    esm = tf["resource"]["aws_lambda_event_source_mapping"]["queue"]
    assert esm["for_each"] == "${local.mappings}"
    assert esm["event_source_arn"] == "${aws_sqs_queue.main[each.key].arn}"
    assert esm["function_name"] == "${aws_lambda_function.fn[each.value.function].arn}"
    assert esm["batch_size"] == "${each.value.batch_size}"
    assert esm["maximum_batching_window_in_seconds"] == "${each.value.maximum_batching_window_seconds}"
    assert _first_block(esm, "scaling_config")["maximum_concurrency"] == "${each.value.maximum_concurrency}"
    assert esm["function_response_types"] == ["ReportBatchItemFailures"]


def test_esm_knobs_within_aws_limits(knobs):
    assert esm_limit_violations(knobs["event_source_mappings"], knobs["functions"]) == []


def test_every_spec_queue_has_a_mapping(knobs):
    assert set(knobs["event_source_mappings"]) == SPEC_QUEUES


# ----------------------------------------------------------------------------- queues

def test_queue_resources_read_knobs(tf):
    queues = tf["resource"]["aws_sqs_queue"]
    main, dlq = queues["main"], queues["dlq"]
    assert main["for_each"] == dlq["for_each"] == "${local.queues}"
    assert main["visibility_timeout_seconds"] == (
        "${local.knobs.sqs.visibility_timeout_multiplier * "
        "local.functions[local.mappings[each.key].function].timeout_seconds}"
    )
    assert main["message_retention_seconds"] == "${local.knobs.sqs.message_retention_seconds}"
    assert dlq["message_retention_seconds"] == "${local.knobs.sqs.dlq_retention_seconds}"
    assert main["max_message_size"] == "${local.knobs.sqs.max_message_bytes}"
    for body in queues.values():
        assert body.get("sqs_managed_sse_enabled") is True or "kms_master_key_id" in body


def test_every_queue_has_a_dlq(tf):
    assert dlq_violations(tf["resource"]["aws_sqs_queue"]) == []


def test_queue_knobs_within_limits(knobs):
    assert queue_knob_violations(knobs) == []


# ----------------------------------------------------------------------------- connection budget

def test_connection_budget_is_enforced_in_terraform(tf):
    guard = tf["resource"]["terraform_data"]["knob_guards"]
    conditions = " ".join(str(p["condition"]) for p in guard["lifecycle"][0]["precondition"])
    assert "local.writer_connections <= local.knobs.connection_budget.writer" in conditions
    assert "local.reader_connections <= local.knobs.connection_budget.reader" in conditions
    assert "local.proxy_connection_limit" in conditions
    assert "local.fn_max_concurrency[fn] * f.writer_lane_size" in tf["locals"]["writer_connections"]
    assert "local.fn_max_concurrency[fn] * f.reader_lane_size" in tf["locals"]["reader_connections"]


# ----------------------------------------------------------------------------- database, IAM, API, SES, alarms

def test_proxy_requires_iam_and_tls_and_has_read_only_endpoint(tf):
    proxy = tf["resource"]["aws_db_proxy"]["this"]
    assert proxy["require_tls"] is True
    assert proxy["default_auth_scheme"] == "IAM_AUTH"
    assert tf["resource"]["aws_db_proxy_endpoint"]["read_only"]["target_role"] == "READ_ONLY"
    pool = _first_block(tf["resource"]["aws_db_proxy_default_target_group"]["this"], "connection_pool_config")
    assert "init_query" in pool


SESSION_SETTINGS = {"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"}


def role_default_settings() -> set[str]:
    """Settings admin's role bootstrap gives every function role (ALTER ROLE ... SET)."""
    source = (REPO / "shared" / "db" / "src" / "roles.rs").read_text()
    return set(re.findall(r"ALTER ROLE \{ident\} SET (\w+) =", source))


def session_setting_violations(init_query: str, role_defaults: set[str]) -> list[str]:
    """Each session setting has exactly one owner: the roles' defaults or the proxy's init
    query, which runs after login and so would override a role default it repeats."""
    init = set(re.findall(r"\bSET\s+(\w+)", init_query, re.I))
    out = [f"{name} is set by both the role defaults and the proxy's init query" for name in sorted(init & role_defaults)]
    out += [f"{name} has no owner" for name in sorted(SESSION_SETTINGS - init - role_defaults)]
    return out


def test_each_session_setting_has_one_owner(tf):
    pool = _first_block(tf["resource"]["aws_db_proxy_default_target_group"]["this"], "connection_pool_config")
    roles = role_default_settings()
    assert roles == {"statement_timeout", "idle_in_transaction_session_timeout"}, roles
    assert session_setting_violations(pool["init_query"], roles) == []


def test_session_setting_rule_rejects_an_init_query_that_repeats_role_defaults():
    old = "SET statement_timeout = 8000; SET lock_timeout = 2000; SET idle_in_transaction_session_timeout = 10000;"
    assert session_setting_violations(old, {"statement_timeout", "idle_in_transaction_session_timeout"}) == [
        "idle_in_transaction_session_timeout is set by both the role defaults and the proxy's init query",
        "statement_timeout is set by both the role defaults and the proxy's init query",
    ]
    assert session_setting_violations("", {"statement_timeout"}) == [
        "idle_in_transaction_session_timeout has no owner", "lock_timeout has no owner",
    ]


def test_aurora_has_writer_and_reader_encrypted(tf):
    cluster = tf["resource"]["aws_rds_cluster"]["this"]
    assert cluster["storage_encrypted"] is True
    assert cluster["manage_master_user_password"] is True
    assert cluster["deletion_protection"] == "${var.deletion_protection}"
    assert "writer" in tf["resource"]["aws_rds_cluster_instance"]
    assert "reader" in tf["resource"]["aws_rds_cluster_instance"]


def test_rds_db_connect_is_scoped_to_own_user(tf):
    doc = str(tf["data"]["aws_iam_policy_document"]["fn"])
    assert "dbuser:${local.proxy_resource_id}/${statement.value}" in doc
    assert "rds-db:connect" in doc
    assert "ses:SendEmail" in doc and "aws_sesv2_configuration_set.this.arn" in doc


def test_api_routes_match_spec(tf):
    routes = tf["locals"]["api_routes"]
    assert routes == SPEC_ROUTES


def test_ses_event_destination_types(tf):
    dest = _first_block(tf["resource"]["aws_sesv2_configuration_set_event_destination"]["receipts"], "event_destination")
    assert set(dest["matching_event_types"]) == {
        "SEND", "DELIVERY", "BOUNCE", "COMPLAINT", "REJECT", "DELIVERY_DELAY", "RENDERING_FAILURE",
    }
    assert tf["resource"]["aws_sns_topic_subscription"]["receipts"]["raw_message_delivery"] is False


def test_alarms_cover_every_queue_and_renotify(tf):
    alarms = tf["resource"]["aws_cloudwatch_metric_alarm"]
    assert alarms["dlq_not_empty"]["for_each"] == "${local.queues}"
    assert alarms["queue_age"]["for_each"] == "${local.queues}"
    for name in ("proxy_borrow_latency", "proxy_connections", "fn_errors", "fn_throttles", "api_5xx"):
        assert name in alarms
    assert "renotify" in tf["resource"]["aws_cloudwatch_event_rule"]


# ----------------------------------------------------------------------------- the rules can fail

def test_rules_reject_broken_knobs(knobs):
    bad = copy.deepcopy(knobs)
    m = bad["event_source_mappings"]["intake-priority"]
    m["batch_size"], m["maximum_batching_window_seconds"], m["maximum_concurrency"] = 20, 0, 1
    bad["event_source_mappings"]["intake-bulk"]["batch_size"] = 10_001
    bad["event_source_mappings"]["send-bulk"]["maximum_batching_window_seconds"] = 301
    found = "\n".join(esm_limit_violations(bad["event_source_mappings"], bad["functions"]))
    for expected in (
        "intake-priority: batch_size 20 > 10 needs a batching window >= 1 s",
        "intake-priority: maximum_concurrency 1 outside 2..1000",
        "intake-bulk: batch_size 10001 outside 1..10000",
        "send-bulk: batching window 301s outside 0..300",
    ):
        assert expected in found, found

    bad["sqs"]["visibility_timeout_multiplier"] = 5
    assert "visibility_timeout_multiplier < 6" in queue_knob_violations(bad)


def test_rules_reject_queue_without_dlq():
    queues = {
        "main": {"for_each": "${local.queues}", "redrive_policy": ""},
        "dlq": {"for_each": "${local.queues}"},
    }
    assert dlq_violations(queues) == ["aws_sqs_queue.main has no dead-letter queue", "aws_sqs_queue.dlq has no dead-letter queue"]


def test_tfvars_example_lists_every_variable(tf):
    example = (INFRA / "terraform.tfvars.example").read_text()
    documented = set(re.findall(r"^(\w+)\s*=", example, re.M))
    assert set(tf["variable"]) == documented, (set(tf["variable"]) ^ documented)


# ----------------------------------------------------------------------------- maintenance and deferral

def test_maintenance_runs_on_a_schedule_with_the_admin_command_the_code_reads(tf):
    target = tf["resource"]["aws_cloudwatch_event_target"]["maintain"]
    assert 'aws_lambda_function.fn["admin"]' in target["arn"]
    # The admin Lambda's payload is `AdminCommand`, internally tagged "command" in kebab-case:
    # the variant `Maintain` must be spelled "maintain" there.
    admin_src = (REPO / "functions" / "admin" / "src" / "lib.rs").read_text()
    assert re.search(r'#\[serde\(tag = "command", rename_all = "kebab-case"\)\]\s*pub enum AdminCommand', admin_src)
    assert re.search(r"\bMaintain \{", admin_src)
    assert re.search(r'command\s*=\s*"maintain"', target["input"]), target["input"]
    assert "retention_days" in target["input"]
    rule = tf["resource"]["aws_cloudwatch_event_rule"]["maintain"]
    assert "maintain_schedule" in rule["schedule_expression"]
    permission = tf["resource"]["aws_lambda_permission"]["maintain"]
    assert permission["principal"] == "events.amazonaws.com"
    alarm = tf["resource"]["aws_cloudwatch_metric_alarm"]["maintain_not_running"]
    assert alarm["treat_missing_data"] == "breaching", "no invocation at all must alarm"


def test_scheduled_notifications_are_released_every_minute_by_the_admin_command(tf):
    target = tf["resource"]["aws_cloudwatch_event_target"]["release_scheduled"]
    assert 'aws_lambda_function.fn["admin"]' in target["arn"]
    admin_src = (REPO / "functions" / "admin" / "src" / "lib.rs").read_text()
    assert re.search(r"\bReleaseScheduled,", admin_src)
    assert re.search(r'command\s*=\s*"release-scheduled"', target["input"]), target["input"]
    rule = tf["resource"]["aws_cloudwatch_event_rule"]["release_scheduled"]
    # Each release forwards what is due within SQS's 15-minute delay, so it must run
    # well inside that window.
    assert rule["schedule_expression"] == "rate(1 minute)"
    permission = tf["resource"]["aws_lambda_permission"]["release_scheduled"]
    assert permission["principal"] == "events.amazonaws.com"
    assert "release_scheduled" in permission["source_arn"]
    alarm = tf["resource"]["aws_cloudwatch_metric_alarm"]["release_scheduled_not_running"]
    assert alarm["treat_missing_data"] == "breaching", "no invocation at all must alarm"
    assert "release_scheduled" in str(alarm["dimensions"])


def test_send_gets_the_account_rate_and_consumers_may_defer_to_their_own_queues(tf):
    env = tf["locals"]["fn_env"]
    assert "FLOODGATE_SES_ACCOUNT_RATE" in env and "var.ses_account_rate" in env
    produces = tf["locals"]["fn_produces"]
    # Every consumer re-enqueues deferred work on the queues it consumes; persist and
    # admin's maintenance forward to the send queues.
    assert "local.fn_consumes[fn]" in produces
    assert '["persist", "admin"]' in produces and "local.send_queues" in produces


def test_callbacks_run_outside_the_vpc_and_are_fed_by_send_and_receipts(tf, knobs):
    assert tf["locals"]["outside_vpc_functions"] == ["callbacks"]
    assert knobs["functions"]["callbacks"]["writer_lane_size"] == 0
    assert knobs["functions"]["callbacks"]["reader_lane_size"] == 0, "outside the VPC: no database"
    assert knobs["event_source_mappings"]["callbacks"]["function"] == "callbacks"
    assert '["send", "receipts"], fn) ? ["callbacks"]' in tf["locals"]["fn_produces"]


def test_every_alarmed_log_event_is_one_its_function_logs(tf):
    # A metric filter counts the `event` field of a function's JSON log lines: the event must
    # be one that function's code logs, or the alarm can never fire.
    events = tf["locals"]["log_events"]
    expected = {
        "callback_suspended": "callbacks",
        "callback_failed": "callbacks",
        "limit_store_bypassed": "ingest",
        "send_budget_bypassed": "send",
    }
    assert {k: v["function"] for k, v in events.items()} == expected
    for name, function in expected.items():
        sources = (REPO / "functions" / function / "src").rglob("*.rs")
        text = "".join(p.read_text() for p in sources)
        assert f'event = "{name}"' in text, f"{function} never logs {name}"
    assert tf["resource"]["aws_cloudwatch_log_metric_filter"]["events"]["for_each"] == "${local.log_events}"
    assert tf["resource"]["aws_cloudwatch_metric_alarm"]["events"]["for_each"] == "${local.log_events}"


def sending_domain_violations(tf: dict) -> list[str]:
    """IAM, admin and the outputs agree on one list of sending domains (the default one and
    the custom ones): send may use any address of each and only through their identities,
    admin is told all of them, and each identity's DKIM records are an output."""
    out = []
    if tf["locals"].get("sending_domains") != "${distinct(concat([var.ses_domain], var.ses_custom_domains))}":
        out.append("local.sending_domains is not the default domain plus var.ses_custom_domains")
    custom = tf["resource"]["aws_sesv2_email_identity"].get("custom", {})
    if "var.ses_custom_domains" not in str(custom.get("for_each", "")) or custom.get("email_identity") != "${each.key}":
        out.append("there is no SES identity per custom sending domain")
    env = tf["locals"]["fn_env"]
    if 'FLOODGATE_SENDING_DOMAINS = join(",", local.sending_domains)' not in env.replace('"FLOODGATE_SENDING_DOMAINS"', "FLOODGATE_SENDING_DOMAINS"):
        out.append("admin's FLOODGATE_SENDING_DOMAINS is not every sending domain")
    policy = json.dumps(tf["data"]["aws_iam_policy_document"]["fn"])
    if "for d in local.sending_domains : \\\"*@${d}\\\"" not in policy:
        out.append("send's ses:FromAddress condition does not allow every sending domain")
    if "for d in local.sending_domains : local.ses_identity_arns[d]" not in policy:
        out.append("send's SES resources are not every sending domain's identity")
    dkim = json.dumps(tf["output"]["ses_dkim_records"])
    if "aws_sesv2_email_identity.custom" not in dkim or "aws_sesv2_email_identity.this" not in dkim:
        out.append("ses_dkim_records does not cover every sending domain's identity")
    return out


def test_send_may_use_any_address_of_every_sending_domain_and_admin_checks_it(tf):
    # Each service sends from its own address: IAM must not pin one From address, and the
    # admin command that creates services is told the domains (functions/admin checks it).
    env = tf["locals"]["fn_env"]
    assert "FLOODGATE_FROM_EMAIL" not in env, "no code reads it"
    admin_src = (REPO / "functions" / "admin" / "src" / "lib.rs").read_text()
    assert '"FLOODGATE_SENDING_DOMAINS"' in admin_src and ".split(',')" in admin_src
    assert "var.from_email" not in json.dumps(tf["data"]["aws_iam_policy_document"]["fn"])
    assert sending_domain_violations(tf) == []


def test_sending_domain_rule_rejects_a_single_pinned_domain(tf):
    bad = copy.deepcopy(tf)
    bad["locals"]["sending_domains"] = "${[var.ses_domain]}"
    del bad["resource"]["aws_sesv2_email_identity"]["custom"]
    bad["locals"]["fn_env"] = bad["locals"]["fn_env"].replace('join(",", local.sending_domains)', "var.ses_domain")
    policy = json.dumps(bad["data"]["aws_iam_policy_document"]["fn"]).replace(
        "for d in local.sending_domains : \\\"*@${d}\\\"", "\\\"*@${var.ses_domain}\\\"")
    bad["data"]["aws_iam_policy_document"]["fn"] = json.loads(policy)
    bad["output"]["ses_dkim_records"] = {"value": "${aws_sesv2_email_identity.this.dkim_signing_attributes[0].tokens}"}
    assert sending_domain_violations(bad) == [
        "local.sending_domains is not the default domain plus var.ses_custom_domains",
        "there is no SES identity per custom sending domain",
        "admin's FLOODGATE_SENDING_DOMAINS is not every sending domain",
        "send's ses:FromAddress condition does not allow every sending domain",
        "ses_dkim_records does not cover every sending domain's identity",
    ]


def test_instances_with_enhanced_monitoring_wait_for_its_policy(tf):
    for name, body in tf["resource"]["aws_rds_cluster_instance"].items():
        if "monitoring_role_arn" in body:
            assert "aws_iam_role_policy_attachment.rds_monitoring" in json.dumps(body.get("depends_on", [])), name


def test_the_renotifier_measures_time_in_alarm_from_the_state_transition(tf):
    source = tf["locals"]["renotify_source"]
    assert "StateTransitionedTimestamp" in source
    assert "(now - alarm[\"StateUpdatedTimestamp\"])" not in source


def test_the_wait_guard_bounds_every_api_target_by_api_gateway(tf):
    # locals.tf bounds these functions by API Gateway's 30 s too; they must be the routes' targets.
    assert sorted(set(tf["locals"]["api_routes"].values())) == tf["locals"]["interactive_functions"]


# ----------------------------------------------------------------------------- Aurora engine version

def engine_version_violations(tf: dict) -> list[str]:
    """The cluster takes a version AWS creates today (the engine-version data source, not a
    literal minor that AWS withdraws), ignores the minor drift auto_minor_version_upgrade
    causes, and its parameter group family is the one AWS gives for that version."""
    out = []
    cluster = tf["resource"]["aws_rds_cluster"]["this"]
    if not re.fullmatch(r"\$\{data\.aws_rds_engine_version\.\w+\.version_actual\}", str(cluster.get("engine_version"))):
        out.append(f"aws_rds_cluster.this.engine_version is {cluster.get('engine_version')!r}, not the engine-version data source")
    ignored = [i for lc in cluster.get("lifecycle", []) for i in lc.get("ignore_changes", [])]
    if "engine_version" not in ignored:
        out.append("aws_rds_cluster.this does not ignore engine_version drift (minor upgrades would plan a downgrade)")
    family = tf["resource"]["aws_rds_cluster_parameter_group"]["this"]["family"]
    if not re.fullmatch(r"\$\{data\.aws_rds_engine_version\.\w+\.parameter_group_family\}", str(family)):
        out.append(f"the parameter group family {family!r} does not follow the engine version")
    for name, body in tf["resource"]["aws_rds_cluster_instance"].items():
        if "engine_version" in body:
            out.append(f"aws_rds_cluster_instance.{name} sets engine_version (Aurora instances follow the cluster)")
    for name, body in tf["data"].get("aws_rds_engine_version", {}).items():
        if body.get("version") != "${var.db_engine_major_version}" or body.get("latest") is not True:
            out.append(f"data.aws_rds_engine_version.{name} must ask for the latest minor of var.db_engine_major_version")
    return out


def test_aurora_engine_version_is_one_aws_creates_and_tolerates_minor_upgrades(tf):
    assert engine_version_violations(tf) == []
    variable = tf["variable"]["db_engine_major_version"]
    assert variable["default"] in ("16", "17")


def test_engine_version_rule_rejects_a_pinned_minor(tf):
    bad = copy.deepcopy(tf)
    bad["resource"]["aws_rds_cluster"]["this"]["engine_version"] = "${var.db_engine_version}"
    bad["resource"]["aws_rds_cluster"]["this"]["lifecycle"] = []
    bad["resource"]["aws_rds_cluster_parameter_group"]["this"]["family"] = "aurora-postgresql16"
    bad["resource"]["aws_rds_cluster_instance"]["writer"]["engine_version"] = "${aws_rds_cluster.this.engine_version}"
    assert engine_version_violations(bad) == [
        "aws_rds_cluster.this.engine_version is '${var.db_engine_version}', not the engine-version data source",
        "aws_rds_cluster.this does not ignore engine_version drift (minor upgrades would plan a downgrade)",
        "the parameter group family 'aurora-postgresql16' does not follow the engine version",
        "aws_rds_cluster_instance.writer sets engine_version (Aurora instances follow the cluster)",
    ]


# ----------------------------------------------------------------------------- destroy, then deploy again

def recreate_violations(tf: dict) -> list[str]:
    """What would make destroy.sh then deploy.sh with the same name_prefix fail: a secret
    whose name stays reserved during a recovery window, or a final snapshot name the last
    destroy already used."""
    out = []
    for name, body in tf["resource"].get("aws_secretsmanager_secret", {}).items():
        if body.get("recovery_window_in_days") != 0 and "name_prefix" not in body:
            out.append(f"aws_secretsmanager_secret.{name}: a recovery window keeps its fixed name reserved after destroy")
    for name, body in tf["resource"].get("aws_rds_cluster", {}).items():
        ident = str(body.get("final_snapshot_identifier", ""))
        ignored = [i for lc in body.get("lifecycle", []) for i in lc.get("ignore_changes", [])]
        if "timestamp()" not in ident:
            out.append(f"aws_rds_cluster.{name}: final_snapshot_identifier {ident!r} is the same for every stack of that name")
        elif "final_snapshot_identifier" not in ignored:
            out.append(f"aws_rds_cluster.{name}: a timestamped final_snapshot_identifier must be in ignore_changes (or every plan changes it)")
    return out


def test_the_stack_can_be_destroyed_and_deployed_again_under_the_same_name(tf):
    assert recreate_violations(tf) == []


def test_recreate_rule_rejects_a_recovery_window_and_a_fixed_snapshot_name(tf):
    bad = copy.deepcopy(tf)
    bad["resource"]["aws_secretsmanager_secret"]["api_key_encryption_key"]["recovery_window_in_days"] = 30
    bad["resource"]["aws_rds_cluster"]["this"]["final_snapshot_identifier"] = "${var.name_prefix}-final"
    assert recreate_violations(bad) == [
        "aws_secretsmanager_secret.api_key_encryption_key: a recovery window keeps its fixed name reserved after destroy",
        "aws_rds_cluster.this: final_snapshot_identifier '${var.name_prefix}-final' is the same for every stack of that name",
    ]
    bad["resource"]["aws_rds_cluster"]["this"]["final_snapshot_identifier"] = '${var.name_prefix}-final-${timestamp()}'
    bad["resource"]["aws_rds_cluster"]["this"]["lifecycle"] = []
    assert recreate_violations(bad)[-1].endswith("must be in ignore_changes (or every plan changes it)")


def comment_citation_violations(text: str, filename: str) -> list[str]:
    """Comments give the reason itself, not a pointer to a document, a seed or an issue."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        comment = re.search(r"(?:#|//)(.*)$", line)
        if comment and re.search(r"SPEC\s*§|\bseeds?/\d|\bseed\b|\bissue\s+#?\d", comment.group(1), re.I):
            out.append(f"{filename}:{n}: {comment.group(1).strip()}")
    return out


def test_terraform_comments_stand_on_their_own():
    found = []
    for path in sorted(INFRA.rglob("*.tf")):
        if "fixtures" not in path.parts and ".terraform" not in path.parts:
            found += comment_citation_violations(path.read_text(), str(path.relative_to(INFRA)))
    assert found == []


def test_comment_citation_rule_flags_spec_seed_and_issue_references():
    text = "# why (SPEC §3)\n# as in seeds/001\n  x = 1 # see issue 13\n# a plain reason\n"
    assert comment_citation_violations(text, "f.tf") == [
        "f.tf:1: why (SPEC §3)", "f.tf:2: as in seeds/001", "f.tf:3: see issue 13",
    ]


# ----------------------------------------------------------------------------- var. and local. references

def undeclared_names(texts: dict[str, str], variables: set[str], locals_: set[str]) -> list[str]:
    """Every var.X and local.X used in the .tf files is declared (terraform validate's check,
    which cannot run here)."""
    out = []
    for filename, text in texts.items():
        code = re.sub(r"(?m)(^|\s)(#|//).*$", r"\1", text)
        for kind, name in re.findall(r"(?<![\w.])(var|local)\.([A-Za-z_]\w*)", code):
            if name not in (variables if kind == "var" else locals_):
                out.append(f"{filename}: {kind}.{name} is not declared")
    return sorted(set(out))


def test_every_variable_and_local_used_is_declared(tf):
    texts = {p.name: p.read_text() for p in _tf_files()}
    assert undeclared_names(texts, set(tf["variable"]), set(tf["locals"])) == []


def test_undeclared_rule_flags_a_removed_variable_and_a_misspelled_local(tf):
    texts = {"x.tf": 'a = var.db_statement_timeout_ms\nb = local.fn_max_concurency["send"] # local.ok_in_comment\n'}
    assert undeclared_names(texts, set(tf["variable"]), set(tf["locals"])) == [
        "x.tf: local.fn_max_concurency is not declared",
        "x.tf: var.db_statement_timeout_ms is not declared",
    ]


def test_only_ingest_and_send_use_the_limit_store_and_only_its_item_calls(tf):
    # ingest counts limits and holds idempotency keys; send leases the shared SES budget
    # (a conditional update, and a read when a window is full). Neither may scan or query.
    actions = tf["locals"]["limit_store_actions"]
    assert set(actions) == {"ingest", "send"}
    assert set(actions["send"]) == {"dynamodb:GetItem", "dynamodb:UpdateItem"}
    for fn, allowed in actions.items():
        assert all(a in {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                         "dynamodb:DeleteItem"} for a in allowed), fn
    policy = tf["resource"]["aws_iam_role_policy"]["limit_store"]
    assert policy["for_each"] == "${local.limit_store_actions}"
    env = tf["locals"]["fn_env"]
    assert "FLOODGATE_LIMITS_TABLE" in env
    assert 'contains(["ingest", "send"], fn)' in env
