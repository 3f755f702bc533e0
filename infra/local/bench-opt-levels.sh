#!/usr/bin/env bash
# The release profile's opt-level, chosen by measurement: for each of z, s and 3, build the
# seven bootstrap.zip files (aarch64, as deployed) and floodgate-local (x86_64, this machine),
# then run the ingest and persist handler benchmarks with each build in one sitting.
#
#   bash infra/local/bench-opt-levels.sh            # build, then measure
#   bash infra/local/bench-opt-levels.sh --build    # build only
#   FLOODGATE_OPT_LEVELS="3 z" bash infra/local/bench-opt-levels.sh   # some levels
#
# Each level has its own target directory (FLOODGATE_OPT_TARGET_ROOT, default /var/cache), so
# a second run is incremental. The profile is overridden per build with
# CARGO_PROFILE_RELEASE_OPT_LEVEL; Cargo.toml is not edited.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="${FLOODGATE_OPT_TARGET_ROOT:-/var/cache}"
read -r -a LEVELS <<< "${FLOODGATE_OPT_LEVELS:-z s 3}"
FUNCTIONS=(ingest status persist send receipts admin callbacks)
LAMBDA_VENV=/var/cache/floodgate-tools/venv-cargo-lambda
OUT="${FLOODGATE_OPT_OUT:-$ROOT/floodgate-opt-levels}"
mkdir -p "$OUT"

if [ ! -x "$LAMBDA_VENV/bin/cargo-lambda" ]; then
    python3 -m venv "$LAMBDA_VENV"
    "$LAMBDA_VENV/bin/pip" install --quiet cargo-lambda ziglang
fi
rustup target add aarch64-unknown-linux-gnu >/dev/null

target_of() { echo "$ROOT/floodgate-target-opt-$1"; }

build() {
    local level=$1 dir
    dir=$(target_of "$level")
    echo "== opt-level $level: bootstrap.zip (aarch64) and floodgate-local (x86_64) in $dir"
    CARGO_PROFILE_RELEASE_OPT_LEVEL=$level CARGO_TARGET_DIR=$dir \
        cargo build --release --quiet -p floodgate-local
    packages=()
    for fn in "${FUNCTIONS[@]}"; do packages+=(-p "floodgate-$fn"); done
    CARGO_PROFILE_RELEASE_OPT_LEVEL=$level CARGO_TARGET_DIR=$dir PATH="$LAMBDA_VENV/bin:$PATH" \
        cargo lambda build --release --arm64 --output-format zip --lambda-dir "$dir/lambda" \
        "${packages[@]}" 2>&1 | grep -vE '^ +(Compiling|Fresh) ' || true
}

for level in "${LEVELS[@]}"; do build "$level"; done
[ "${1:-}" = "--build" ] && exit 0

echo "== bootstrap.zip bytes"
printf '%-10s' function; for level in "${LEVELS[@]}"; do printf '%14s' "opt-level=$level"; done; echo
for fn in "${FUNCTIONS[@]}"; do
    printf '%-10s' "$fn"
    for level in "${LEVELS[@]}"; do
        printf '%14s' "$(stat -c %s "$(target_of "$level")/lambda/floodgate-$fn/bootstrap.zip")"
    done
    echo
done

# The benchmarks interleave the levels (z, s, 3, then again), so machine load and warm-up
# fall on every level alike; each benchmark prints its own figures.
for round in 1 2; do
    for level in "${LEVELS[@]}"; do
        bin="$(target_of "$level")/release/floodgate-local"
        echo "== round $round, opt-level $level: bench-ingest"
        "$bin" bench-ingest 2>&1 | tee "$OUT/ingest-$level-$round.txt" | tail -n 4
        echo "== round $round, opt-level $level: bench-persist"
        "$bin" bench-persist --notifications 100000 --per-row-sample 2000 --extra-pairs 2 2>&1 \
            | tee "$OUT/persist-$level-$round.txt" | tail -n 2
    done
done
