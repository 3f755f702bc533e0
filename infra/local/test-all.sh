#!/usr/bin/env bash
# Every test of Floodgate, on a fresh Debian machine (run as root to let it install what is
# missing: PostgreSQL, PgBouncer, a C toolchain; moto, python-hcl2 and checkov go into
# private virtualenvs under ${FLOODGATE_TOOLS_DIR:-/var/cache/floodgate-tools}).
#
#   1. cargo fmt --check and cargo clippy --all-targets -D warnings
#   2. cargo build --workspace --bins, then cargo test --workspace: unit tests, then
#      end-to-end tests that start real PostgreSQL (primary + streaming replica),
#      PgBouncer (transaction mode) and moto server on free loopback ports, and run the
#      functions' binaries under cargo-lambda's Runtime API emulator
#   3. infra/check.sh: terraform fmt, HCL parse, checkov, and the Terraform tests
#
# The build directory is outside the checkout (CARGO_TARGET_DIR, default
# /var/cache/floodgate-target) so a fresh clone builds incrementally.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/floodgate-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_LOG="${RUST_LOG:-warn}"

# shellcheck source=infra/local/ensure-packages.sh
source infra/local/ensure-packages.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo build --workspace --bins (the runtime test runs the functions' real binaries)"
cargo build --workspace --bins --quiet

echo "== cargo test --workspace"
cargo test --workspace --no-fail-fast 2>&1 | sed -E '/^ +(Compiling|Checking|Fresh) /d'

echo "== infra checks"
bash infra/check.sh
