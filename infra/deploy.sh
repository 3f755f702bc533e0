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
# Usage: infra/deploy.sh [-y] [--plan-only]
#   -y           applies the plan without asking.
#   --plan-only  rehearsal without AWS credentials: builds the zips, checks their sizes and
#                that every zip Terraform reads exists, prints what `terraform apply` would
#                create and the commands that would follow, then exits before terraform
#                init (which would download providers) and before any AWS call.
set -euo pipefail

INFRA="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$INFRA")"
TOOLS="${FLOODGATE_TOOLS_DIR:-/var/cache/floodgate-tools}"
ARTIFACTS="${FLOODGATE_LAMBDA_ARTIFACTS_DIR:-$REPO/target/lambda}"
ZIP_LIMIT_BYTES=$((8 * 1024 * 1024))
# Pinned so a new release cannot change the build between a rehearsal and a deploy.
CARGO_LAMBDA_REQ="cargo-lambda==1.9.2"
ZIGLANG_REQ="ziglang==0.15.2"
YES=0
PLAN_ONLY=0
for arg in "$@"; do
    case "$arg" in
        -y) YES=1 ;;
        --plan-only) PLAN_ONLY=1 ;;
        *) printf 'deploy.sh: unknown argument %s (usage: deploy.sh [-y] [--plan-only])\n' "$arg" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

required=(cargo python3 curl zip)
[ "$PLAN_ONLY" = 1 ] || required+=(terraform aws)
for tool in "${required[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done

# Functions Terraform deploys: the keys of knobs.json "functions".
mapfile -t FUNCTIONS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["functions"]))' "$INFRA/knobs.json")

# ---------------------------------------------------------------- 1. build
step "cargo lambda build --release --arm64 --output-format zip"
if ! command -v cargo-lambda >/dev/null 2>&1; then
    venv="$TOOLS/venv-cargo-lambda"
    if [ ! -x "$venv/bin/cargo-lambda" ] || [ "$(cat "$venv/.floodgate-requirements" 2>/dev/null)" != "$CARGO_LAMBDA_REQ $ZIGLANG_REQ" ]; then
        mkdir -p "$TOOLS"
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "$CARGO_LAMBDA_REQ" "$ZIGLANG_REQ"
        printf '%s' "$CARGO_LAMBDA_REQ $ZIGLANG_REQ" >"$venv/.floodgate-requirements"
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
if curl -fsSL --max-time 30 "$RDS_CA_URL" -o "$ARTIFACTS/rds-ca-bundle.pem" \
    && grep -q "BEGIN CERTIFICATE" "$ARTIFACTS/rds-ca-bundle.pem"; then
    (cd "$ARTIFACTS" && zip -q -j "floodgate-admin/bootstrap.zip" rds-ca-bundle.pem)
elif [ "$PLAN_ONLY" = 1 ]; then
    # A rehearsal may run where AWS's trust store is unreachable; a deploy may not.
    printf '  WARN  could not fetch %s: the admin zip lacks rds-ca-bundle.pem (about 160 KB)\n' "$RDS_CA_URL"
else
    die "could not fetch a PEM bundle from $RDS_CA_URL"
fi

step "zip sizes (limit $ZIP_LIMIT_BYTES bytes each)"
oversize=0
for fn in "${FUNCTIONS[@]}"; do
    zip="$ARTIFACTS/floodgate-$fn/bootstrap.zip"
    [ -f "$zip" ] || die "$zip was not produced"
    size=$(stat -c %s "$zip")
    note=""
    if [ "$size" -gt "$ZIP_LIMIT_BYTES" ]; then
        note="  OVER 8 MB"
        oversize=1
    fi
    printf '  %-10s %9d bytes  %6.2f MiB%s\n' "$fn" "$size" "$(python3 -c "print($size / 1048576)")" "$note"
done
[ "$oversize" = 0 ] || die "a bootstrap.zip is over 8 MB"

step "zips Terraform reads"
python3 "$INFRA/deploy_plan.py" zips "$INFRA" "$ARTIFACTS" | sed 's/^/  ok  /' \
    || die "a zip Terraform reads is missing"

if [ "$PLAN_ONLY" = 1 ]; then
    step "what terraform apply would create (from infra/*.tf and knobs.json)"
    python3 "$INFRA/deploy_plan.py" summary "$INFRA"
    step "what would run next (not run: --plan-only)"
    printf '  %s\n' \
        "cd infra && TF_VAR_lambda_artifacts_dir=$ARTIFACTS terraform init -input=false" \
        "terraform plan -input=false -out=floodgate.tfplan" \
        "terraform apply -input=false floodgate.tfplan" \
        "aws lambda invoke --function-name \$(terraform output -raw admin_function_name) --payload '{\"command\":\"migrate\"}' ..." \
        "terraform output ses_dkim_records   # publish these CNAMEs for every sending domain"
    exit 0
fi

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
