"""Evaluate the stack's own expressions with the real Terraform CLI, without a provider.

locals.tf, variables.tf and knobs.json are copied into a scratch module; the few locals that
read an AWS resource or data source (ids, region, partition) are replaced with fixed strings,
so `terraform init` needs no provider (terraform_data is built into the CLI). Then:
  - `plan(...)` runs `terraform plan`, which evaluates every precondition of
    terraform_data.knob_guards exactly as a real plan would;
  - `value(...)` evaluates any expression (a local, or a resource argument's expression
    copied from infra/*.tf) with `terraform console`.
A test can hand the module a modified knobs.json or -var overrides to show a guard failing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

INFRA = Path(__file__).resolve().parent.parent
TERRAFORM = shutil.which("terraform") or "/usr/local/bin/terraform"

# Locals that read AWS state: replaced by stand-ins (their values do not affect any guard).
STUBBED_LOCALS = {
    "proxy_resource_id": '"prx-0123456789abcdef0"',
    "account_id": '"123456789012"',
    "partition": '"aws"',
    "region": '"eu-west-2"',
}
TEST_KEY = "A" * 43 + "="  # a syntactically valid api_key_encryption_key


def available() -> bool:
    return Path(TERRAFORM).is_file()


def _env(workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        TF_CLI_CONFIG_FILE=str(workdir / "terraformrc"),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        TF_VAR_api_key_encryption_key=TEST_KEY,
        NO_COLOR="1",
    )
    return env


def stubbed_locals(text: str) -> str:
    for name, value in STUBBED_LOCALS.items():
        text, n = re.subn(rf"^(\s*{name}\s*=\s*).*$", rf"\g<1>{value}", text, count=1, flags=re.M)
        assert n == 1, f"locals.tf no longer defines {name}"
    leftover = re.findall(r"\b(?:data\.aws_\w+|aws_\w+\.\w+)\.\w+", text)
    assert not leftover, f"locals.tf reads AWS state the scratch module cannot provide: {leftover}"
    return text


class Module:
    def __init__(self, workdir: Path, knobs: dict | None = None, extra: str = ""):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "terraformrc").write_text("")
        (workdir / "locals.tf").write_text(stubbed_locals((INFRA / "locals.tf").read_text()))
        shutil.copy(INFRA / "variables.tf", workdir / "variables.tf")
        knobs_text = (INFRA / "knobs.json").read_text() if knobs is None else json.dumps(knobs)
        (workdir / "knobs.json").write_text(knobs_text)
        if extra:
            (workdir / "extra.tf").write_text(extra)
        self._run(["init", "-no-color", "-backend=false", "-input=false"], check=True)

    def _run(self, args: list[str], check: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [TERRAFORM, *args], cwd=self.dir, env=_env(self.dir), input=stdin,
            capture_output=True, text=True, timeout=120,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"terraform {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    @staticmethod
    def _vars(variables: dict | None) -> list[str]:
        out = []
        for k, v in (variables or {}).items():
            out += ["-var", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
        return out

    def plan(self, variables: dict | None = None) -> tuple[bool, str]:
        """(succeeded, output) of `terraform plan`; output has the failed preconditions."""
        proc = self._run(["plan", "-no-color", "-input=false", "-lock=false", "-refresh=false", *self._vars(variables)])
        return proc.returncode == 0, re.sub(r"\s+", " ", proc.stdout + proc.stderr)

    def value(self, expression: str, variables: dict | None = None):
        """The value of an HCL expression, as JSON."""
        proc = self._run(["console", "-no-color", *self._vars(variables)], stdin=f"jsonencode({expression})\n")
        if proc.returncode != 0:
            raise RuntimeError(f"terraform console: {expression}:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(json.loads(proc.stdout.strip().splitlines()[-1]))
