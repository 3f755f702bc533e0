# One customer managed key for everything Floodgate encrypts at rest that accepts a CMK:
# Aurora storage and Performance Insights, the master-user secret, CloudWatch log groups,
# the SNS topics (SES events, alarms) and the functions' environment variables.
# SQS queues use SQS-managed SSE instead (queues.tf): SNS can deliver to an SSE-SQS queue
# without extra key grants, and the consumers need no kms:Decrypt on the hot path.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:This is a KMS key policy: Resource "*" means "this key" and cannot name anything else.
  #checkov:skip=CKV_AWS_356:This is a KMS key policy: Resource "*" means "this key" and cannot name anything else.
  #checkov:skip=CKV_AWS_109:This is a KMS key policy: the account root must administer the key (AWS default key policy), otherwise the key becomes unmanageable.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }

  # SES publishes events and CloudWatch publishes alarm notifications to encrypted topics.
  statement {
    sid       = "PublishersToEncryptedTopics"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["ses.amazonaws.com", "cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Floodgate (${var.name_prefix}) data at rest"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name_prefix}"
  target_key_id = aws_kms_key.this.key_id
}
