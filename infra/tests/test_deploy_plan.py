"""deploy_plan.py, which deploy.sh --plan-only uses: the zips Terraform will read, and
whether they exist, found from infra/*.tf before any terraform or AWS call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INFRA = HERE.parent
REPO = INFRA.parent
sys.path.insert(0, str(INFRA))

import deploy_plan  # noqa: E402


def crates() -> list[str]:
    return sorted(p.parent.name for p in (REPO / "functions").glob("*/Cargo.toml"))


def test_terraform_reads_one_zip_per_crate(tmp_path):
    knobs = json.loads((INFRA / "knobs.json").read_text())
    paths = deploy_plan.zip_paths(INFRA, str(tmp_path), knobs)
    assert paths == sorted(f"{tmp_path}/floodgate-{c}/bootstrap.zip" for c in crates())


def test_missing_zips_fail_and_present_ones_pass(tmp_path, capsys):
    assert deploy_plan.main(["deploy_plan.py", "zips", str(INFRA), str(tmp_path)]) == 1
    assert "floodgate-send/bootstrap.zip, which does not exist" in capsys.readouterr().err
    for c in crates():
        (tmp_path / f"floodgate-{c}").mkdir()
        (tmp_path / f"floodgate-{c}" / "bootstrap.zip").write_bytes(b"PK")
    assert deploy_plan.main(["deploy_plan.py", "zips", str(INFRA), str(tmp_path)]) == 0


def test_an_unresolvable_zip_path_is_an_error(tmp_path):
    fixtures = HERE / "fixtures" / "deploy"
    knobs = json.loads((fixtures / "knobs.json").read_text())
    with pytest.raises(ValueError, match=r"aws_lambda_function\.odd: cannot resolve \$\{local\.artifacts_dir\}/\$\{var\.flavour\}"):
        deploy_plan.zip_paths(fixtures, str(tmp_path), knobs)


def test_the_summary_counts_instances_from_the_knobs():
    knobs = json.loads((INFRA / "knobs.json").read_text())
    lines = deploy_plan.summary(INFRA, knobs)
    assert f"  + aws_lambda_function.fn x {len(knobs['functions'])}" in lines
    assert f"  + aws_sqs_queue.dlq x {len(knobs['event_source_mappings'])}" in lines
    assert "  + aws_db_proxy.this" in lines
