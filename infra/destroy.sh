#!/usr/bin/env bash
# Destroy the Floodgate stack: turns the cluster's deletion protection off, then runs
# terraform destroy. The cluster leaves a final snapshot "<name_prefix>-final-<its creation
# time, YYYYMMDD-hhmmss>" unless skip_final_snapshot = true; snapshots are kept (and billed)
# until deleted by hand. The API-key secret is deleted without a recovery window, so
# deploy.sh can re-create the stack under the same name_prefix at once (keep the key).
#
# Usage: infra/destroy.sh [-y]     -y does not ask.
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
ARTIFACTS="${FLOODGATE_LAMBDA_ARTIFACTS_DIR:-$REPO/target/lambda}"
YES=0
[ "${1:-}" = "-y" ] && YES=1
die() { printf 'destroy.sh: %s\n' "$*" >&2; exit 1; }

command -v terraform >/dev/null 2>&1 || die "terraform is not on PATH"
cd "$INFRA"

if [ "$YES" != 1 ]; then
    read -r -p "Destroy the whole Floodgate stack (database included)? Type 'destroy': " answer
    [ "$answer" = "destroy" ] || die "nothing destroyed"
fi

# Terraform evaluates filebase64sha256() of every function zip even to destroy. When the
# zips are gone (fresh clone), point it at placeholder zips: nothing is deployed from them.
mapfile -t FUNCTIONS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["functions"]))' "$INFRA/knobs.json")
for fn in "${FUNCTIONS[@]}"; do
    if [ ! -f "$ARTIFACTS/floodgate-$fn/bootstrap.zip" ]; then
        ARTIFACTS="$(mktemp -d)"
        for f in "${FUNCTIONS[@]}"; do
            mkdir -p "$ARTIFACTS/floodgate-$f"
            python3 -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1], "w").writestr("bootstrap", "")' "$ARTIFACTS/floodgate-$f/bootstrap.zip"
        done
        break
    fi
done
export TF_VAR_lambda_artifacts_dir="$ARTIFACTS"

terraform init -input=false >/dev/null

if terraform state list 2>/dev/null | grep -qx 'aws_rds_cluster.this'; then
    echo "==> turning deletion protection off"
    terraform apply -input=false -auto-approve -target=aws_rds_cluster.this -var deletion_protection=false
fi

echo "==> terraform destroy"
terraform destroy -input=false -auto-approve -var deletion_protection=false
