#!/usr/bin/env bash
# The main job: the whole Floodgate topology on this machine and a blast through it, with
# progress bars and a report (printed, plus .floodgate/report.json and report.png).
# On a fresh Debian machine run it as root: it installs what is missing. Extra arguments go
# to `floodgate-local demo` (e.g. --notifications 100000, --throttle 0.2, --outage-after 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/floodgate-target}"
export RUST_LOG="${RUST_LOG:-warn}"
# shellcheck source=infra/local/ensure-packages.sh
source infra/local/ensure-packages.sh
cargo run --release --quiet -p floodgate-local -- demo "$@"
