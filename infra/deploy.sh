#!/usr/bin/env bash
# Deploy Floodgate to AWS:
#   1. build one bootstrap.zip per function with cargo lambda (arm64, release),
#   2. terraform init / plan / apply in infra/ (variables from infra/terraform.tfvars),
#   3. run the database migrations inside the VPC by invoking the admin function with
#      {"command":"migrate"} (it first creates the per-function database roles; database.tf).
#
# Needs: cargo (Rust toolchain), terraform >= 1.9, the AWS CLI v2 with credentials for the
# target account, python3. cargo-lambda and ziglang (its cross-linker) are installed from
# PyPI into a private venv if cargo-lambda is not on PATH.
#
# Usage: infra/deploy.sh [-y]     -y applies the plan without asking.
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
TOOLS="${FLOODGATE_TOOLS_DIR:-/var/cache/floodgate-tools}"
ARTIFACTS="${FLOODGATE_LAMBDA_ARTIFACTS_DIR:-$REPO/target/lambda}"
ZIP_LIMIT_BYTES=$((8 * 1024 * 1024))
YES=0
[ "${1:-}" = "-y" ] && YES=1

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

for tool in cargo terraform aws python3 curl zip; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

# Functions Terraform deploys: the keys of knobs.json "functions".
mapfile -t FUNCTIONS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["functions"]))' "$INFRA/knobs.json")

# ---------------------------------------------------------------- 1. build
step "cargo lambda build --release --arm64 --output-format zip"
if ! command -v cargo-lambda >/dev/null 2>&1; then
    if [ ! -x "$TOOLS/venv-cargo-lambda/bin/cargo-lambda" ]; then
        mkdir -p "$TOOLS"
        python3 -m venv "$TOOLS/venv-cargo-lambda"
        "$TOOLS/venv-cargo-lambda/bin/pip" install -q --disable-pip-version-check cargo-lambda ziglang
    fi
    export PATH="$TOOLS/venv-cargo-lambda/bin:$PATH"
fi

packages=()
for fn in "${FUNCTIONS[@]}"; do
    [ -f "$REPO/functions/$fn/Cargo.toml" ] || die "functions/$fn is missing: Terraform deploys every function in knobs.json"
    packages+=(--package "floodgate-$fn")
done
(cd "$REPO" && cargo lambda build --release --arm64 --output-format zip --lambda-dir "$ARTIFACTS" "${packages[@]}")

# The admin function connects straight to the Aurora writer (role bootstrap, retention)
# and must trust the Amazon RDS CA, which is not a public root: ship AWS's RDS CA bundle
# inside its zip (/var/task/rds-ca-bundle.pem, named by FLOODGATE_DB_CA_FILE in functions.tf).
RDS_CA_URL="${RDS_CA_URL:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}"
step "adding the RDS CA bundle to the admin zip"
curl -fsSL "$RDS_CA_URL" -o "$ARTIFACTS/rds-ca-bundle.pem" || die "could not fetch $RDS_CA_URL"
grep -q "BEGIN CERTIFICATE" "$ARTIFACTS/rds-ca-bundle.pem" || die "$RDS_CA_URL is not a PEM bundle"
(cd "$ARTIFACTS" && zip -q -j "floodgate-admin/bootstrap.zip" rds-ca-bundle.pem)

for fn in "${FUNCTIONS[@]}"; do
    zip="$ARTIFACTS/floodgate-$fn/bootstrap.zip"
    [ -f "$zip" ] || die "$zip was not produced"
    size=$(stat -c %s "$zip")
    note=""
    [ "$size" -le "$ZIP_LIMIT_BYTES" ] || note="  (over the 8 MB goal)"
    printf '  %-10s %9d bytes%s\n' "$fn" "$size" "$note"
done

# ---------------------------------------------------------------- 2. terraform
cd "$INFRA"
[ -f terraform.tfvars ] || die "infra/terraform.tfvars is missing: copy terraform.tfvars.example and edit it"
export TF_VAR_lambda_artifacts_dir="$ARTIFACTS"

step "terraform init"
terraform init -input=false

step "terraform plan"
terraform plan -input=false -out=floodgate.tfplan

if [ "$YES" != 1 ]; then
    read -r -p "Apply this plan? [y/N] " answer
    [ "$answer" = "y" ] || [ "$answer" = "Y" ] || die "not applied"
fi

step "terraform apply"
terraform apply -input=false floodgate.tfplan
rm -f floodgate.tfplan

# ---------------------------------------------------------------- 3. migrate
ADMIN="$(terraform output -raw admin_function_name)"
REGION="$(terraform output -raw region)"
step "migrate: aws lambda invoke $ADMIN {\"command\":\"migrate\"}"
result="$(mktemp)"
meta="$(aws lambda invoke \
    --region "$REGION" \
    --function-name "$ADMIN" \
    --cli-binary-format raw-in-base64-out \
    --payload '{"command":"migrate"}' \
    --cli-read-timeout 330 \
    "$result")"
cat "$result"
echo
if python3 -c 'import json,sys; sys.exit(1 if json.loads(sys.argv[1]).get("FunctionError") else 0)' "$meta"; then
    step "deployed: $(terraform output -raw api_url)"
    echo "DKIM records to publish: terraform -chdir=infra output ses_dkim_records"
else
    die "the admin function failed the migration (see the answer above and its log group)"
fi
