#!/usr/bin/env bash
# Static checks of the AWS stack in infra/ (terraform validate/plan need providers this
# machine cannot download; these stand in for them):
#   1. terraform fmt -check -recursive infra
#   2. every infra/**/*.tf parses with python-hcl2
#   3. checkov reports no failed check (skips are inline, with reasons)
#   4. provider schema: every resource and data block uses only arguments and blocks the
#      AWS provider has, sets the required ones and no computed-only attribute
#      (infra/tests/provider_schema.py, schema from the npm packages pinned below)
#   5. pytest infra/tests (crates <-> functions, ESM limits, visibility, DLQs, knobs,
#      the schema checker's fixtures)
#
# Idempotent. Tools go in private venvs under ${FLOODGATE_TOOLS_DIR:-/var/cache/floodgate-tools}:
#   venv-infra   python-hcl2 + pytest
#   venv-checkov checkov
#   npm/         the provider packages' jsii assemblies; provider-schema/ the schema built from them
# Two venvs because checkov depends on bc-python-hcl2, a fork that installs the same `hcl2`
# package as python-hcl2: in one venv they overwrite each other's files.
# Exit status: 0 when every check passed, 1 otherwise.
set -uo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
TOOLS="${FLOODGATE_TOOLS_DIR:-/var/cache/floodgate-tools}"
PY="$(command -v python3 || true)"
OUT="${TOOLS}/infra-check"

# Pinned so a new checkov release cannot turn the build red overnight; bump on purpose.
HCL2_REQ="python-hcl2==8.1.4 pytest==9.1.1"
CHECKOV_REQ="checkov==3.3.30"
# The AWS provider's schema, from CDK Terrain's prebuilt providers (their jsii assembly lists
# every argument and block of every resource and data source). @cdktn/provider-aws 25.7.0 is
# built from hashicorp/aws 6.66.0 and provider-archive 14.0.1 from hashicorp/archive 2.8.1,
# both within versions.tf's constraints. The sha512 is npm's integrity of each tarball.
SCHEMA_PACKAGES=(
    "@cdktn/provider-aws@25.7.0 sha512-E/nhu0yVZE4mXMgIPuI8tEFt1BExLkA7ARjihdG+/HmfDfzLr+OEF3dkFRvI6glRt30lrrBWQLwXqCJBxcmyUg=="
    "@cdktn/provider-archive@14.0.1 sha512-JqpyFUXXFn8GZcsXuxuQbs26WUKlheVhQXy+w9yk9QXn0mUnsohQhmkbFvn8WWYm2bsMJX4Oh9iRwfe68oATNA=="
)

failures=0
say() { printf '%s\n' "$*"; }
pass() { say "  PASS  $1"; }
fail() { say "  FAIL  $1"; failures=$((failures + 1)); }

if [ -z "$PY" ]; then
    say "infra/check.sh: python3 is not on PATH"
    exit 1
fi
mkdir -p "$TOOLS" "$OUT"

ensure_venv_module() {
    local probe="$TOOLS/.venv-probe"
    rm -rf "$probe"
    if "$PY" -m venv "$probe" >/dev/null 2>&1; then
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "  ....  installing python3-venv with apt-get"
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
    fi
    "$PY" -m venv "$probe" >/dev/null 2>&1 && rm -rf "$probe"
}

# ensure_venv DIR "REQUIREMENTS": (re)creates DIR and installs REQUIREMENTS unless the
# marker shows they are already there.
ensure_venv() {
    local dir="$1" req="$2" marker="$1/.floodgate-requirements"
    if [ -x "$dir/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$req" ]; then
        return 0
    fi
    say "  ....  preparing $(basename "$dir") ($req)"
    ensure_venv_module || { say "  cannot create a venv with $PY"; return 1; }
    rm -rf "$dir"
    "$PY" -m venv "$dir" >/dev/null || return 1
    # shellcheck disable=SC2086
    if ! "$dir/bin/pip" install -q --disable-pip-version-check $req >"$OUT/pip-$(basename "$dir").log" 2>&1; then
        tail -20 "$OUT/pip-$(basename "$dir").log"
        return 1
    fi
    printf '%s' "$req" >"$marker"
}

say "infra checks (tools in $TOOLS)"
ensure_venv "$TOOLS/venv-infra" "$HCL2_REQ" || { say "  FAIL  could not install python-hcl2/pytest"; exit 1; }
ensure_venv "$TOOLS/venv-checkov" "$CHECKOV_REQ" || { say "  FAIL  could not install checkov"; exit 1; }

# 1. terraform fmt -------------------------------------------------------------------
if command -v terraform >/dev/null 2>&1; then
    # An empty CLI config silences the "no ~/.terraformrc" warning; fmt needs no providers.
    : >"$OUT/terraformrc"
    if fmt_out="$(cd "$REPO" && TF_CLI_CONFIG_FILE="$OUT/terraformrc" terraform fmt -check -recursive infra 2>&1)"; then
        pass "terraform fmt -check -recursive infra"
    else
        fail "terraform fmt -check -recursive infra: run 'terraform fmt -recursive infra'; unformatted:"
        say "$fmt_out" | sed 's/^/        /'
    fi
elif [ "${FLOODGATE_REQUIRE_TERRAFORM:-0}" = 1 ]; then
    fail "terraform fmt: terraform is not on PATH"
else
    say "  SKIP  terraform fmt (terraform not on PATH; no package registry here ships it)"
fi

# 2. every .tf parses ----------------------------------------------------------------
if parse_out="$("$TOOLS/venv-infra/bin/python" - "$INFRA" <<'PY' 2>&1
import sys
from pathlib import Path

import hcl2

root = Path(sys.argv[1])
files = sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts)
bad = 0
for path in files:
    try:
        with path.open() as fh:
            hcl2.load(fh)
    except Exception as exc:  # noqa: BLE001 - report any parse error
        bad += 1
        print(f"{path.relative_to(root)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
print(f"{len(files) - bad}/{len(files)} files parsed")
sys.exit(1 if bad or not files else 0)
PY
)"; then
    pass "python-hcl2 parse: $(say "$parse_out" | tail -1)"
else
    fail "python-hcl2 parse:"
    say "$parse_out" | sed 's/^/        /'
fi

# 3. checkov ---------------------------------------------------------------------------
(cd "$REPO" && "$TOOLS/venv-checkov/bin/checkov" -d infra --skip-download --quiet --compact \
    --skip-path 'infra/local' --skip-path 'infra/tests' >"$OUT/checkov.txt" 2>&1)
ck_rc=$?
ck_summary="$(grep -E 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$OUT/checkov.txt" \
    | awk -F'[:,]' '{p+=$2; f+=$4; s+=$6} END {if (NR) printf "%d passed, %d failed, %d skipped", p, f, s}')"
if [ "$ck_rc" = 0 ] && [ -n "$ck_summary" ]; then
    pass "checkov: $ck_summary (report: $OUT/checkov.txt)"
else
    fail "checkov (exit $ck_rc): ${ck_summary:-no summary} (report: $OUT/checkov.txt)"
    grep -E '^Check: |FAILED for resource|File: ' "$OUT/checkov.txt" | head -60 | sed 's/^/        /'
    [ -n "$ck_summary" ] || tail -20 "$OUT/checkov.txt" | sed 's/^/        /'
fi

# 4. provider schema ---------------------------------------------------------------------
# fetch_assembly "NAME@VERSION" INTEGRITY: prints the path of the package's .jsii, fetching
# the tarball with npm pack (checked against INTEGRITY) the first time.
fetch_assembly() {
    local spec="$1" integrity="$2" dir tgz
    dir="$TOOLS/npm/$(printf '%s' "$spec" | tr '/@' '__')"
    if [ ! -f "$dir/package/.jsii" ]; then
        command -v npm >/dev/null 2>&1 || { echo "npm is not on PATH" >&2; return 1; }
        rm -rf "$dir" && mkdir -p "$dir"
        (cd "$dir" && npm pack --silent "$spec" >"$OUT/npm-pack.log" 2>&1) || { tail -5 "$OUT/npm-pack.log" >&2; return 1; }
        tgz="$(ls "$dir"/*.tgz)"
        if [ "$("$PY" -c 'import base64,hashlib,sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")" != "$integrity" ]; then
            echo "$spec: tarball does not match the pinned sha512" >&2
            rm -rf "$dir"
            return 1
        fi
        tar -xzf "$tgz" -C "$dir" package/.jsii && rm -f "$tgz" || return 1
    fi
    printf '%s\n' "$dir/package/.jsii"
}

assemblies=()
schema_ok=1
for entry in "${SCHEMA_PACKAGES[@]}"; do
    if jsii="$(fetch_assembly ${entry})"; then
        assemblies+=("$jsii")
    else
        schema_ok=0
    fi
done
SCHEMA="$TOOLS/provider-schema/$(printf '%s ' "${SCHEMA_PACKAGES[@]}" | sha256sum | cut -c1-16).json"
if [ "$schema_ok" = 1 ] && [ ! -f "$SCHEMA" ]; then
    mkdir -p "$(dirname "$SCHEMA")"
    "$PY" "$INFRA/tests/provider_schema.py" build "$SCHEMA.tmp" "${assemblies[@]}" >"$OUT/schema-build.txt" 2>&1 \
        && mv "$SCHEMA.tmp" "$SCHEMA" || { schema_ok=0; cat "$OUT/schema-build.txt"; }
fi
if [ "$schema_ok" != 1 ]; then
    fail "provider schema: could not fetch or build it from ${SCHEMA_PACKAGES[*]%% *}"
elif schema_out="$(cd "$REPO" && PYTHONDONTWRITEBYTECODE=1 "$TOOLS/venv-infra/bin/python" "$INFRA/tests/provider_schema.py" check "$SCHEMA" infra 2>&1)"; then
    pass "provider schema (${SCHEMA_PACKAGES[0]%% *}): $(say "$schema_out" | tail -1)"
else
    fail "provider schema (${SCHEMA_PACKAGES[0]%% *}):"
    say "$schema_out" | sed 's/^/        /'
fi
export FLOODGATE_PROVIDER_SCHEMA="$SCHEMA"

# 5. pytest ----------------------------------------------------------------------------
if py_out="$(cd "$REPO" && PYTHONDONTWRITEBYTECODE=1 "$TOOLS/venv-infra/bin/python" -m pytest -q -p no:cacheprovider infra/tests 2>&1)"; then
    pass "pytest infra/tests: $(say "$py_out" | tail -1)"
else
    fail "pytest infra/tests:"
    say "$py_out" | tail -40 | sed 's/^/        /'
fi

if [ "$failures" = 0 ]; then
    say "infra checks: all passed"
    exit 0
fi
say "infra checks: $failures failed"
exit 1
