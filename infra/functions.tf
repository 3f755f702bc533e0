# One Lambda function per key of knobs.json "functions" (= one crate per folder in
# functions/, binary floodgate-<name>): ingest, status, persist, send, receipts, admin,
# callbacks.
# provided.al2023 on arm64, handler "bootstrap", code from the zip that
# `cargo lambda build --release --arm64 --output-format zip` writes to
# target/lambda/floodgate-<name>/bootstrap.zip (deploy.sh builds them first).
# Timeout, memory and lane sizes come from knobs.json; reserved concurrency from
# local.fn_reserved_concurrency (locals.tf).

locals {
  # Environment the Rust code reads, and nothing else (tests/tests/runtime.rs runs each
  # binary with it and fails on a variable one side has and the other does not). A function
  # gets a lane's variables only if its lane size is > 0 (status never sees the writer
  # URL), and a queue URL only for the queues it consumes or produces to. The database user
  # is the function's own role, without a password: the code signs an IAM auth token for it
  # (FLOODGATE_DB_IAM_AUTH).
  fn_env = {
    for fn, f in local.functions : fn => merge(
      {
        RUST_LOG = var.rust_log
      },
      {
        for k, v in {
          FLOODGATE_DB_IAM_AUTH = "true"
        } : k => v if f.writer_lane_size + f.reader_lane_size > 0
      },
      {
        for k, v in {
          FLOODGATE_WRITER_URL                  = "postgres://${local.db_users[fn]}@${aws_db_proxy.this.endpoint}:5432/${var.db_name}?sslmode=require"
          FLOODGATE_WRITER_MAX_SIZE             = tostring(f.writer_lane_size)
          FLOODGATE_WRITER_ACQUIRE_TIMEOUT_MS   = tostring(var.writer_acquire_timeout_ms)
          FLOODGATE_WRITER_CONNECT_TIMEOUT_MS   = tostring(var.writer_connect_timeout_ms)
          FLOODGATE_WRITER_OPERATION_TIMEOUT_MS = tostring(var.writer_operation_timeout_ms)
        } : k => v if f.writer_lane_size > 0
      },
      {
        for k, v in {
          FLOODGATE_READER_URL                  = "postgres://${local.db_users[fn]}@${aws_db_proxy_endpoint.read_only.endpoint}:5432/${var.db_name}?sslmode=require"
          FLOODGATE_READER_MAX_SIZE             = tostring(f.reader_lane_size)
          FLOODGATE_READER_ACQUIRE_TIMEOUT_MS   = tostring(var.reader_acquire_timeout_ms)
          FLOODGATE_READER_CONNECT_TIMEOUT_MS   = tostring(var.reader_connect_timeout_ms)
          FLOODGATE_READER_OPERATION_TIMEOUT_MS = tostring(var.reader_operation_timeout_ms)
        } : k => v if f.reader_lane_size > 0
      },
      {
        for q in local.fn_queues[fn] : "FLOODGATE_QUEUE_URL_${upper(replace(q, "-", "_"))}" => aws_sqs_queue.main[q].url
      },
      {
        for k, v in {
          FLOODGATE_SES_CONFIGURATION_SET = aws_sesv2_configuration_set.this.configuration_set_name
          FLOODGATE_SES_ACCOUNT_RATE      = tostring(var.ses_account_rate)
        } : k => v if fn == "send"
      },
      # The limit store (limits.tf): ingest's limits and idempotency keys, send's shared
      # SES budget.
      {
        for k, v in {
          FLOODGATE_LIMITS_TABLE = aws_dynamodb_table.limits.name
        } : k => v if contains(["ingest", "send"], fn)
      },
      # The key that seals API key secrets: ingest and status open them, admin seals new
      # ones. The environment is encrypted with the CMK (kms_key_arn below); the value's
      # system of record is the Secrets Manager secret in secrets.tf.
      {
        for k, v in {
          FLOODGATE_API_KEY_ENCRYPTION_KEY = aws_secretsmanager_secret_version.api_key_encryption_key.secret_string
        } : k => v if contains(local.api_key_functions, fn)
      },
      # admin only: the one-off role bootstrap before migrations (database.tf).
      {
        for k, v in {
          FLOODGATE_BOOTSTRAP_HOST       = aws_rds_cluster.this.endpoint
          FLOODGATE_BOOTSTRAP_SECRET_ARN = aws_rds_cluster.this.master_user_secret[0].secret_arn
          FLOODGATE_DB_NAME              = var.db_name
          FLOODGATE_DB_USERS             = join(",", [for name in sort(keys(local.db_users)) : local.db_users[name]])
          # The RDS CA bundle deploy.sh adds to the admin zip: the direct connection to
          # the cluster presents an Amazon RDS CA certificate, not a public one.
          FLOODGATE_DB_CA_FILE = "/var/task/rds-ca-bundle.pem"
          # The domains a service's from_email may use: the SES identities send may send as.
          FLOODGATE_SENDING_DOMAINS = join(",", local.sending_domains)
        } : k => v if fn == "admin"
      },
    )
  }
}

resource "aws_cloudwatch_log_group" "fn" {
  for_each = local.functions

  name              = "/aws/lambda/${local.fn_names[each.key]}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

# ---------------------------------------------------------------- IAM, one role per function

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "fn" {
  for_each = local.functions

  name               = local.fn_names[each.key]
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

# Creating/deleting the Hyperplane ENIs of a VPC function. The EC2 network-interface actions
# do not support resource-level permissions; this AWS managed policy holds exactly them.
resource "aws_iam_role_policy_attachment" "fn_eni" {
  for_each = local.functions

  role       = aws_iam_role.fn[each.key].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSLambdaENIManagementAccess"
}

data "aws_iam_policy_document" "fn" {
  for_each = local.functions

  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.fn[each.key].arn}:*"]
  }

  # rds-db:connect as the function's own database user through the proxy, nothing else.
  dynamic "statement" {
    for_each = each.value.writer_lane_size + each.value.reader_lane_size > 0 ? [local.db_users[each.key]] : []
    content {
      sid       = "ConnectAsOwnDbUser"
      actions   = ["rds-db:connect"]
      resources = ["arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${local.proxy_resource_id}/${statement.value}"]
    }
  }

  dynamic "statement" {
    for_each = length(local.fn_consumes[each.key]) > 0 ? [local.fn_consumes[each.key]] : []
    content {
      sid = "ConsumeOwnQueues"
      actions = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
      ]
      resources = [for q in statement.value : aws_sqs_queue.main[q].arn]
    }
  }

  dynamic "statement" {
    for_each = length(local.fn_produces[each.key]) > 0 ? [local.fn_produces[each.key]] : []
    content {
      sid       = "ProduceToOwnQueues"
      actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"] # SendMessageBatch is authorised by sqs:SendMessage
      resources = [for q in statement.value : aws_sqs_queue.main[q].arn]
    }
  }

  # SES: IAM has no condition key for the configuration set (the SES v2 keys are
  # ses:ApiVersion, ses:FeedbackAddress, ses:FromAddress, ses:FromDisplayName and
  # ses:Recipients). The configuration set is a *resource* of SendEmail: a send that names a
  # configuration set is authorised against the identity AND that configuration set, so the
  # policy lists exactly our identities and our configuration set, and each identity's
  # default configuration set (ses.tf) applies ours when a call names none. Each service
  # sends from its own address (services.from_email), which must be in one of the verified
  # domains (the default one or a custom sending domain): IAM allows any address there
  # (ses:FromAddress), and `floodgate-admin create-service` refuses others
  # (FLOODGATE_SENDING_DOMAINS), so IAM, code and admin agree.
  dynamic "statement" {
    for_each = each.key == "send" ? [1] : []
    content {
      sid     = "SendThroughOwnIdentityAndConfigurationSet"
      actions = ["ses:SendEmail"]
      resources = concat(
        [for d in local.sending_domains : local.ses_identity_arns[d]],
        [aws_sesv2_configuration_set.this.arn],
      )
      condition {
        test     = "StringLike"
        variable = "ses:FromAddress"
        values   = [for d in local.sending_domains : "*@${d}"]
      }
    }
  }

  # admin only: read the RDS-managed master secret for the role bootstrap.
  dynamic "statement" {
    for_each = each.key == "admin" ? [1] : []
    content {
      sid       = "ReadMasterSecretForBootstrap"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [aws_rds_cluster.this.master_user_secret[0].secret_arn]
    }
  }
  dynamic "statement" {
    for_each = each.key == "admin" ? [1] : []
    content {
      sid       = "DecryptMasterSecret"
      actions   = ["kms:Decrypt"]
      resources = [aws_kms_key.this.arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "fn" {
  for_each = local.functions

  name   = "least-privilege"
  role   = aws_iam_role.fn[each.key].id
  policy = data.aws_iam_policy_document.fn[each.key].json
}

# ---------------------------------------------------------------- functions

resource "aws_lambda_function" "fn" {
  #checkov:skip=CKV_AWS_116:ingest/status are synchronous (API Gateway), the queue consumers' failed messages go to each queue's own DLQ through its redrive policy (queues.tf); admin is invoked synchronously by deploy.sh and asynchronously by the maintenance schedule, whose failed runs are not worth keeping (the next run repeats them; maintenance.tf alarms on errors and on missed runs).
  #checkov:skip=CKV_AWS_272:Code signing needs AWS Signer profiles the deploy pipeline (cargo lambda + terraform) does not use; the zip's integrity is pinned by source_code_hash.
  #checkov:skip=CKV_AWS_117:callbacks alone runs outside the VPC: it touches no database and calls clients' public https endpoints (see vpc_config below); every other function is in the VPC.
  #checkov:skip=CKV_AWS_50:X-Ray tracing from VPC functions would need an xray endpoint or a NAT; observability is structured logs plus CloudWatch embedded metrics.
  for_each = local.functions

  function_name = local.fn_names[each.key]
  description   = "Floodgate ${each.key}"
  role          = aws_iam_role.fn[each.key].arn

  runtime       = "provided.al2023"
  architectures = ["arm64"]
  handler       = "bootstrap"

  filename         = "${local.artifacts_dir}/floodgate-${each.key}/bootstrap.zip"
  source_code_hash = filebase64sha256("${local.artifacts_dir}/floodgate-${each.key}/bootstrap.zip")

  memory_size                    = each.value.memory_mb
  timeout                        = each.value.timeout_seconds
  reserved_concurrent_executions = local.fn_reserved_concurrency[each.key]

  kms_key_arn = aws_kms_key.this.arn

  environment {
    variables = local.fn_env[each.key]
  }

  # Every function but callbacks runs in the VPC (the database is there). callbacks touches
  # no database and must reach clients' https endpoints on the internet: outside the VPC it
  # has Lambda's own egress, where inside it would need a NAT gateway (about $33 a month per
  # AZ plus $0.045 per GB in eu-west-2) for no other use.
  dynamic "vpc_config" {
    for_each = contains(local.outside_vpc_functions, each.key) ? [] : [1]
    content {
      subnet_ids         = aws_subnet.private[*].id
      security_group_ids = [each.key == "admin" ? aws_security_group.admin.id : aws_security_group.lambda.id]
    }
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.fn[each.key].name
  }

  depends_on = [
    aws_iam_role_policy.fn,
    aws_iam_role_policy_attachment.fn_eni,
    terraform_data.knob_guards,
  ]
}

# ---------------------------------------------------------------- event source mappings
# One per queue: batch size, batching window and maximum concurrency per queue, all from
# knobs.json; partial batch responses so only the failed messages are retried.

resource "aws_lambda_event_source_mapping" "queue" {
  for_each = local.mappings

  event_source_arn = aws_sqs_queue.main[each.key].arn
  function_name    = aws_lambda_function.fn[each.value.function].arn
  enabled          = true

  batch_size                         = each.value.batch_size
  maximum_batching_window_in_seconds = each.value.maximum_batching_window_seconds
  function_response_types            = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = each.value.maximum_concurrency
  }

  depends_on = [aws_iam_role_policy.fn]
}
