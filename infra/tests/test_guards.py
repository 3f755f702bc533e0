"""What Terraform computes from knobs.json, evaluated by Terraform itself (tf_eval.py): the
connection totals, the reserved concurrency, the queues' visibility timeouts, and every
plan-time guard of terraform_data.knob_guards, passing on the shipped values and failing on
broken ones. The expected numbers are the ones infra/KNOBS.md publishes, not a re-computation.
"""

from __future__ import annotations

import copy
import json
import re

import hcl2
import pytest

import tf_eval

pytestmark = pytest.mark.skipif(not tf_eval.available(), reason="terraform CLI not installed")

INFRA = tf_eval.INFRA


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    return tf_eval.Module(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="module")
def knobs():
    return json.loads((INFRA / "knobs.json").read_text())


def test_the_shipped_values_pass_every_guard(module):
    ok, out = module.plan()
    assert ok, out


def test_connection_totals_are_the_published_ones(module):
    # KNOBS.md, "Connection budget": writer 27, reader 90.
    assert module.value("local.writer_connections") == 27
    assert module.value("local.reader_connections") == 90


def test_reserved_concurrency_is_the_published_one(module):
    # KNOBS.md, "Functions": the knob, or the sum of the mappings' maximum concurrency (→).
    assert module.value("local.fn_reserved_concurrency") == {
        "ingest": 50, "status": 20, "persist": 10, "send": 13, "receipts": 3, "admin": 1, "callbacks": 3,
    }


def _resource_expression(filename: str, rtype: str, name: str, argument: str) -> str:
    with (INFRA / filename).open() as fh:
        doc = hcl2.load(fh)
    for block in doc["resource"]:
        for t, named in block.items():
            if t.strip('"') == rtype:
                for n, body in named.items():
                    if n.strip('"') == name:
                        text = body[argument]
                        assert text.startswith("${") and text.endswith("}"), text
                        return text[2:-1]
    raise AssertionError(f"{rtype}.{name}.{argument} not found in {filename}")


def test_every_queue_is_invisible_for_six_consumer_timeouts(module, knobs):
    # The expression of aws_sqs_queue.main's visibility timeout, evaluated for every queue.
    expr = _resource_expression("queues.tf", "aws_sqs_queue", "main", "visibility_timeout_seconds")
    values = module.value("{ for q in local.queues : q => " + expr.replace("each.key", "q") + " }")
    assert set(values) == set(knobs["event_source_mappings"])
    for queue, seconds in values.items():
        timeout = knobs["functions"][knobs["event_source_mappings"][queue]["function"]]["timeout_seconds"]
        assert 6 * timeout <= seconds <= 43_200, (queue, seconds, timeout)
    # KNOBS.md: every consumer has a 30 s timeout, so every queue gets 180 s.
    assert set(values.values()) == {180}


def _broken(knobs, change):
    bad = copy.deepcopy(knobs)
    change(bad)
    return bad


def _set(path, value):
    def change(k):
        node = k
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


BROKEN_KNOBS = [
    ("status reserves 100 instances x 2 reader connections",
     _set(["functions", "status", "reserved_concurrency"], 100), "Reader connections (sum of max concurrency x reader_lane_size = 250) exceed connection_budget.reader (150)"),
    ("send holds 5 writer connections per instance",
     _set(["functions", "send", "writer_lane_size"], 5), "Writer connections (sum of max concurrency x writer_lane_size = 79) exceed connection_budget.writer (60)"),
    ("a batch above 10 without a window",
     _set(["event_source_mappings", "intake-priority", "batch_size"], 20), "breaks an SQS/Lambda limit"),
    ("maximum concurrency below 2",
     _set(["event_source_mappings", "send-bulk", "maximum_concurrency"], 1), "breaks an SQS/Lambda limit"),
    ("visibility multiplier below AWS's 6",
     _set(["sqs", "visibility_timeout_multiplier"], 5), "visibility_timeout_multiplier must be >= 6"),
]


@pytest.mark.parametrize("why,change,message", BROKEN_KNOBS, ids=[b[0] for b in BROKEN_KNOBS])
def test_a_guard_stops_the_plan_on_broken_knobs(tmp_path, knobs, why, change, message):
    ok, out = tf_eval.Module(tmp_path, knobs=_broken(knobs, change)).plan()
    assert not ok and message in out, out


BROKEN_VARIABLES = [
    ("a queue without an age threshold",
     {"queue_age_alarm_seconds": {"intake-priority": 60}}, "queue_age_alarm_seconds needs a threshold for every queue"),
    ("a custom sending domain that is not a domain name",
     {"ses_custom_domains": ["Mail_Example.org"]}, "Every ses_custom_domains entry must be a lower-case domain name"),
    ("idle connections above the proxy's share",
     {"proxy_max_idle_connections_percent": 95}, "proxy_max_idle_connections_percent must not exceed proxy_max_connections_percent"),
]


@pytest.mark.parametrize("why,variables,message", BROKEN_VARIABLES, ids=[b[0] for b in BROKEN_VARIABLES])
def test_a_guard_stops_the_plan_on_broken_variables(module, why, variables, message):
    ok, out = module.plan(variables)
    assert not ok and message in out, out


# ----------------------------------------------------------------------------- max_connections follows the class

def test_max_connections_follows_the_instance_class(module):
    # AWS's table: 1,722 for db.r6g.large, 405 for db.t4g.medium; the proxy may open 90 %.
    assert module.value("local.db_instance_max_connections") == 1722
    assert module.value("local.proxy_connection_limit") == 1549
    assert module.value("local.db_instance_max_connections", {"db_instance_class": "db.t4g.medium"}) == 405
    assert module.value("local.db_instance_max_connections", {"db_instance_class": "db.r7g.xlarge"}) == 3479


BROKEN_DATABASE = [
    ("a class with no known max_connections",
     {"db_instance_class": "db.serverless"}, "No max_connections is known for db_instance_class db.serverless"),
    ("a small class whose proxy share cannot hold the reader budget",
     {"db_instance_class": "db.t4g.medium", "proxy_max_connections_percent": 30},
     "does not fit what the proxy may open per instance (30% of 405 for db.t4g.medium = 121)"),
    ("an override above what the class allows",
     {"db_instance_max_connections": 2000}, "db_instance_max_connections (2000) exceeds what a db.r6g.large instance allows (1722)"),
]


@pytest.mark.parametrize("why,variables,message", BROKEN_DATABASE, ids=[b[0] for b in BROKEN_DATABASE])
def test_the_connection_budget_guard_follows_the_class(module, why, variables, message):
    ok, out = module.plan(variables)
    assert not ok and message in out, out


def test_a_known_class_with_a_lower_override_passes(module):
    ok, out = module.plan({"db_instance_class": "db.serverless", "db_instance_max_connections": 400})
    assert ok, out


# ----------------------------------------------------------------------------- waits that stack in one invocation

def test_the_waits_of_one_invocation_are_the_published_ones(module):
    # KNOBS.md, "Waits in one invocation" (ms, 1,000 of headroom included).
    waits = module.value("local.request_waits_ms")
    # ingest: reader acquire, connect, 2 round trips, 3 SQS attempts and their back-off,
    # the limit store's budget, headroom.
    assert waits["ingest"] == 500 + 1000 + 2 * 1000 + (3 * 1500 + 250 + 500) + 250 + 1000 == 10000
    assert waits["status"] == 500 + 1000 + 3 * 1000 + 1000 == 5500
    assert waits["persist"] == 1000 + 3000 + 10000 + 1500 + 1000 == 16500
    assert waits["send"] == 1000 + 3000 + 2 * 10000 + 1500 + 1000 == 26500


def test_the_sum_not_each_wait_alone_is_checked(module):
    # 2 s per reader round trip is far below ingest's 10 s on its own; stacked with the
    # acquire, the connect, a second round trip and the SQS attempts it is not.
    ok, out = module.plan({"reader_operation_timeout_ms": 2000})
    assert not ok and "ingest 12000 ms > 10000 ms" in out, out
    ok, out = module.plan({"writer_operation_timeout_ms": 12000})
    assert not ok and "send 30500 ms > 30000 ms" in out, out


def _rust_duration_ms(path: str, name: str) -> int:
    text = (INFRA.parent / path).read_text()
    m = re.search(rf"const {name}: Duration = Duration::from_(millis|secs)\(([\d_]+)\)", text)
    assert m, f"{name} not found in {path}"
    return int(m.group(2).replace("_", "")) * (1000 if m.group(1) == "secs" else 1)


def test_the_sqs_waits_terraform_sums_are_the_code_constants(module):
    attempt = _rust_duration_ms("shared/aws/src/queue.rs", "SQS_ATTEMPT_TIMEOUT")
    assert module.value("local.sqs_attempt_timeout_ms") == attempt
    ingest = (INFRA.parent / "functions/ingest/src/lib.rs").read_text()
    policy = re.search(r"impl Default for RetryPolicy \{.*?attempts: (\d+),\s*first_backoff: Duration::from_millis\((\d+)\)", ingest, re.S)
    assert policy, "RetryPolicy::default() not found in functions/ingest/src/lib.rs"
    assert module.value("local.ingest_enqueue_attempts") == int(policy.group(1))
    assert module.value("local.ingest_first_backoff_ms") == int(policy.group(2))
    budget = _rust_duration_ms("functions/ingest/src/door.rs", "LIMIT_STORE_BUDGET")
    assert module.value("local.limit_store_budget_ms") == budget


def test_custom_sending_domains_are_accepted(module):
    ok, out = module.plan({"ses_custom_domains": ["mail.example.org", "notify.service.gov.example"]})
    assert ok, out


def test_the_documented_account_concurrency_quota_is_what_terraform_reserves(module):
    # Lambda keeps 100 of the account's concurrency unreserved; the re-notifier reserves 1.
    reserved = sum(module.value("local.fn_reserved_concurrency").values())
    renotify = re.search(r'resource "aws_lambda_function" "renotify" \{.*?reserved_concurrent_executions = (\d+)',
                         (INFRA / "alarms.tf").read_text(), re.S)
    quota = reserved + int(renotify.group(1)) + 100
    assert quota == 201
    readme = (INFRA.parent / "README.md").read_text()
    knobs_md = " ".join((INFRA / "KNOBS.md").read_text().split())
    assert f"must be **≥ {quota}**" in readme and f"must be at least {quota}" in knobs_md
