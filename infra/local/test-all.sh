#!/usr/bin/env bash
# Every test of Floodgate, on a fresh Debian machine (run as root to let it install what is
# missing: PostgreSQL, PgBouncer, a C toolchain; moto, python-hcl2 and checkov go into
# private virtualenvs under ${FLOODGATE_TOOLS_DIR:-/var/cache/floodgate-tools}).
#
#   1. cargo fmt --check and cargo clippy --all-targets -D warnings
#   2. cargo test --workspace: unit tests, then end-to-end tests that start real
#      PostgreSQL (primary + streaming replica), PgBouncer (transaction mode) and moto
#      server on free loopback ports
#   3. infra/check.sh: terraform fmt, HCL parse, checkov, and the Terraform tests
#
# The build directory is outside the checkout (CARGO_TARGET_DIR, default
# /var/cache/floodgate-target) so a fresh clone builds incrementally.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/floodgate-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_LOG="${RUST_LOG:-warn}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not on PATH: install a Rust toolchain (rustup) first." >&2
    exit 1
fi

# Debian packages: services for the end-to-end tests, and a C toolchain for -sys crates.
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
[ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "missing packages; as root run: apt-get update && apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test --workspace"
cargo test --workspace --no-fail-fast 2>&1 | sed -E '/^ +(Compiling|Checking|Fresh) /d'

echo "== infra checks"
bash infra/check.sh
