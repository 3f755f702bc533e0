# FLOODGATE_API_KEY_ENCRYPTION_KEY: the key that seals issued API key secrets in the
# database (API keys are stored sealed, plus a digest). Operator-supplied
# (var.api_key_encryption_key, made with `floodgate-admin generate-encryption-key`) rather
# than generated here, so the same key can be restored into a rebuilt stack and no extra
# provider is needed. Secrets Manager is its system of record, encrypted with the CMK; the
# functions that need it (local.api_key_functions) get it in their CMK-encrypted
# environment (functions.tf).

locals {
  api_key_functions = ["ingest", "status", "admin", "callbacks"]
}

resource "aws_secretsmanager_secret" "api_key_encryption_key" {
  #checkov:skip=CKV2_AWS_57:Automatic rotation would orphan every issued API key: the key seals secrets already stored in the database, so a new key needs a re-seal migration run by an operator, not a Lambda rotator.
  name        = "${var.name_prefix}/api-key-encryption-key"
  description = "Floodgate FLOODGATE_API_KEY_ENCRYPTION_KEY (seals API key secrets)"
  kms_key_id  = aws_kms_key.this.arn
  # Deleted at once on destroy: a recovery window would keep the name reserved (for up to 30
  # days), so destroy.sh then deploy.sh with the same name_prefix would fail to create it.
  # Nothing is lost: the value is the operator's (var.api_key_encryption_key), who keeps it
  # and supplies it again to the next deploy.
  recovery_window_in_days = 0
}

resource "aws_secretsmanager_secret_version" "api_key_encryption_key" {
  secret_id     = aws_secretsmanager_secret.api_key_encryption_key.id
  secret_string = var.api_key_encryption_key
}
