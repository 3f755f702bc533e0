"""The provider-schema check (provider_schema.py) on the real stack and on broken fixtures.

The schema is built by infra/check.sh from the pinned npm packages and named by
FLOODGATE_PROVIDER_SCHEMA; without it these tests fail rather than pass silently.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INFRA = HERE.parent
FIXTURES = HERE / "fixtures" / "schema"
sys.path.insert(0, str(HERE))

import provider_schema  # noqa: E402


@pytest.fixture(scope="module")
def schema():
    path = os.environ.get("FLOODGATE_PROVIDER_SCHEMA", "")
    if not path or not Path(path).is_file():
        pytest.fail("FLOODGATE_PROVIDER_SCHEMA does not name a built schema: run infra/check.sh, which builds it")
    return json.loads(Path(path).read_text())


def check(path: Path, schema: dict) -> list[str]:
    return provider_schema.check_paths([path], schema, FIXTURES)


def test_the_schema_is_the_aws_provider_6(schema):
    aws = schema["providers"]["@cdktn/provider-aws"]
    assert aws["provider"] == "hashicorp/aws"
    assert aws["provider_version"].startswith("6."), aws
    assert len(schema["resource"]) > 1000 and len(schema["data"]) > 500


def test_real_infra_uses_only_what_the_provider_has(schema):
    files = provider_schema.tf_files([INFRA])
    assert len(files) >= 16 and not [f for f in files if "fixtures" in f.parts]
    assert provider_schema.check_paths([INFRA], schema, INFRA) == []


def test_a_misspelled_argument_is_flagged(schema):
    assert check(FIXTURES / "misspelled_argument.tf", schema) == [
        'misspelled_argument.tf: aws_sqs_queue.typo: unknown argument "visibility_timeout_second"',
    ]


def test_an_unknown_nested_block_is_flagged(schema):
    assert check(FIXTURES / "unknown_block.tf", schema) == [
        'unknown_block.tf: aws_lambda_function.misplaced: unknown nested block "scaling_config"',
    ]


def test_a_missing_required_argument_is_flagged(schema):
    assert check(FIXTURES / "missing_required.tf", schema) == [
        'missing_required.tf: aws_db_proxy.incomplete: required argument "role_arn" is not set',
        'missing_required.tf: aws_db_proxy_target.incomplete: required argument "target_group_name" is not set',
    ]


def test_a_computed_only_attribute_is_flagged(schema):
    assert check(FIXTURES / "computed_attribute.tf", schema) == [
        'computed_attribute.tf: aws_sqs_queue.computed: "arn" is computed by the provider and cannot be set',
        'computed_attribute.tf: aws_sqs_queue.computed: "url" is computed by the provider and cannot be set',
        'computed_attribute.tf: data.archive_file.computed: "output_base64sha256" is computed by the provider and cannot be set',
    ]


def test_nested_and_dynamic_blocks_are_checked_and_meta_arguments_are_not(schema):
    assert check(FIXTURES / "nested_and_dynamic.tf", schema) == [
        'nested_and_dynamic.tf: aws_lambda_event_source_mapping.nested.scaling_config: unknown argument "maximum_concurency"',
        'nested_and_dynamic.tf: data.aws_iam_policy_document.dynamic.statement: unknown nested block "principal"',
        'nested_and_dynamic.tf: data.aws_iam_policy_document.dynamic.statement.principals: required argument "identifiers" is not set',
        'nested_and_dynamic.tf: data.aws_iam_policy_document.dynamic: unknown nested block "statment" (dynamic)',
        'nested_and_dynamic.tf: data.aws_no_such_thing.x: the provider has no data source type "aws_no_such_thing"',
    ]


def test_a_reference_to_a_missing_attribute_or_block_is_flagged(schema):
    assert check(FIXTURES / "bad_reference.tf", schema) == [
        'bad_reference.tf: aws_iam_policy_document.missing is a data source: write data.aws_iam_policy_document.missing',
        'bad_reference.tf: aws_sqs_queue.ref has no attribute "urll"',
        'bad_reference.tf: reference to undeclared data.aws_caller_identity.nobody',
    ]


def test_a_valid_file_passes(schema):
    assert check(FIXTURES / "valid.tf", schema) == []


def test_build_reads_a_jsii_assembly(tmp_path):
    """build() on a two-type assembly: names come from the registry anchors, `optional`
    decides what is required, "... block." marks nested blocks, and class attributes that
    the config lacks are computed-only."""
    link = "https://registry.terraform.io/providers/hashicorp/aws/6.66.0/docs/resources/thing"

    def prop(name, anchor, optional=True, block=None):
        docs = {"summary": f"Docs at Terraform Registry: {{@link {link}#{anchor} Thing#{anchor}}}."}
        ty = {"primitive": "string"}
        if block:
            docs = {"summary": f"{anchor} block.", "remarks": f"{{@link {link}#{anchor} Thing#{anchor}}}"}
            ty = {"union": {"types": [{"fqn": "cdktn.IResolvable"}, {"collection": {"kind": "array", "elementtype": {"fqn": block}}}]}}
        p = {"name": name, "docs": docs, "type": ty}
        if optional:
            p["optional"] = True
        return p

    assembly = {
        "name": "@cdktn/provider-aws",
        "version": "0.0.0",
        "types": {
            "p.Thing": {
                "base": "cdktn.TerraformResource",
                "docs": {"summary": f"Represents a {{@link {link} aws_thing}}."},
                "initializer": {"parameters": [{"name": "config", "type": {"fqn": "p.ThingConfig"}}]},
                "properties": [
                    {"name": "tfResourceType", "static": True, "type": {"primitive": "string"}},
                    {"name": "arn", "type": {"primitive": "string"}},
                    {"name": "kmsKeyId", "type": {"primitive": "string"}},
                    {"name": "kmsKeyIdInput", "type": {"primitive": "string"}},
                ],
            },
            "p.ThingConfig": {
                "properties": [
                    prop("kmsKeyId", "kms_key_id", optional=False),
                    prop("s3Import", "s3_import"),
                    prop("rule", "rule", block="p.ThingRule"),
                ],
            },
            "p.ThingRule": {"properties": [prop("ruleName", "name", optional=False)]},
            "p.ThingRuleOutputReference": {"properties": [{"name": "id", "type": {"primitive": "string"}}]},
        },
    }
    path = tmp_path / ".jsii"
    path.write_text(json.dumps(assembly))
    built = provider_schema.build([path])
    thing = built["structs"][built["resource"]["aws_thing"]]
    assert thing["args"] == {"kms_key_id": True, "s3_import": False}
    assert thing["blocks"] == {"rule": {"required": False, "ref": "p.ThingRule"}}
    assert thing["computed"] == ["arn"]
    assert built["structs"]["p.ThingRule"] == {"args": {"name": True}, "blocks": {}, "computed": ["id"]}
    assert built["providers"]["@cdktn/provider-aws"]["provider_version"] == "6.66.0"
