#!/usr/bin/env python3
"""What deploy.sh can check and show before anything touches AWS (standard library only).

  deploy_plan.py zips INFRA_DIR ARTIFACTS_DIR
      prints every Lambda zip Terraform reads from the artifacts directory, one a line,
      expanded over the functions in knobs.json; exits 1 if one is missing or its path
      uses an interpolation this script cannot resolve.
  deploy_plan.py summary INFRA_DIR
      prints the resources `terraform apply` would create (type.name x instances) and the
      totals the account must allow (reserved concurrency, connections).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ARTIFACTS = "${local.artifacts_dir}"

# Collections a for_each in this stack iterates, by the expression it names.
def _collections(knobs: dict) -> dict[str, list[str]]:
    functions = sorted(knobs["functions"])
    queues = sorted(knobs["event_source_mappings"])
    return {
        "local.functions": functions,
        "local.mappings": queues,
        "local.queues": queues,
        "toset(keys(local.knobs.event_source_mappings))": queues,
    }


def _blocks(text: str):
    """(kind, type, name, body) of every top-level resource/data block of one .tf file."""
    head = re.compile(r'^(resource|data)\s+"([^"]+)"\s+"([^"]+)"\s*\{', re.M)
    for m in head.finditer(text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        yield m.group(1), m.group(2), m.group(3), text[m.end():i - 1]


def _for_each(body: str) -> str | None:
    m = re.search(r"^\s{2}for_each\s*=\s*(.+?)\s*$", body, re.M)
    return m.group(1) if m else None


def _count(body: str) -> str | None:
    m = re.search(r"^\s{2}count\s*=\s*(.+?)\s*$", body, re.M)
    return m.group(1) if m else None


def zip_paths(infra: Path, artifacts: str, knobs: dict) -> list[str]:
    """Every zip path under the artifacts directory that a resource's argument names."""
    collections = _collections(knobs)
    paths: list[str] = []
    for tf in sorted(infra.glob("*.tf")):
        for _kind, rtype, name, body in _blocks(tf.read_text()):
            templates = set(re.findall(r'"(\$\{local\.artifacts_dir\}[^"]*)"', body))
            if not templates:
                continue
            keys = collections.get(_for_each(body) or "", [None])
            for template in sorted(templates):
                for key in keys:
                    path = template.replace(ARTIFACTS, artifacts)
                    if key is not None:
                        path = path.replace("${each.key}", key)
                    if "${" in path:
                        raise ValueError(f"{tf.name}: {rtype}.{name}: cannot resolve {template}")
                    paths.append(path)
    return sorted(set(paths))


def summary(infra: Path, knobs: dict) -> list[str]:
    collections = _collections(knobs)
    tfvars = {}
    for name in ("terraform.tfvars", "terraform.tfvars.example"):
        if (infra / name).is_file():
            tfvars = dict(re.findall(r"^(\w+)\s*=\s*([^\s#]+)", (infra / name).read_text(), re.M))
            break
    lines = []
    total = 0
    for tf in sorted(infra.glob("*.tf")):
        for kind, rtype, name, body in _blocks(tf.read_text()):
            if kind != "resource":
                continue
            fe, count = _for_each(body), _count(body)
            if fe is not None:
                n = len(collections[fe]) if fe in collections else None
            elif count is not None:
                var = re.fullmatch(r"var\.(\w+)", count)
                n = int(tfvars[var.group(1)]) if var and tfvars.get(var.group(1), "").isdigit() else None
            else:
                n = 1
            shown = "?" if n is None else str(n)
            total += n or 0
            lines.append(f"  + {rtype}.{name}" + (f" x {shown}" if n != 1 else ""))
    lines.append(f"  {len(lines)} resource blocks, at least {total} resources")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("zips", "summary"):
        print(__doc__, file=sys.stderr)
        return 2
    infra = Path(argv[2])
    knobs = json.loads((infra / "knobs.json").read_text())
    if argv[1] == "summary":
        print("\n".join(summary(infra, knobs)))
        return 0
    try:
        paths = zip_paths(infra, argv[3], knobs)
    except ValueError as exc:
        print(f"deploy_plan.py: {exc}", file=sys.stderr)
        return 1
    missing = [p for p in paths if not Path(p).is_file()]
    for p in paths:
        print(p)
    for p in missing:
        print(f"deploy_plan.py: Terraform reads {p}, which does not exist", file=sys.stderr)
    return 1 if missing or not paths else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
