# One queue per key of knobs.json event_source_mappings (intake-{priority,normal,bulk},
# send-{priority,normal,bulk}, receipts), each with its own dead-letter queue.
# Every number comes from local.knobs:
#   visibility timeout = visibility_timeout_multiplier x the consuming function's timeout
#     (AWS asks for >= 6x for SQS event sources, so a message is not redelivered while a
#     throttled or retried invocation of its batch may still be running),
#   maxReceiveCount, retention, maximum message size.
# Encryption: SQS-managed SSE (see kms.tf for why not the CMK).

resource "aws_sqs_queue" "dlq" {
  for_each = local.queues

  name                      = "${var.name_prefix}-${each.key}-dlq"
  message_retention_seconds = local.knobs.sqs.dlq_retention_seconds
  max_message_size          = local.knobs.sqs.max_message_bytes
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "main" {
  for_each = local.queues

  name                       = "${var.name_prefix}-${each.key}"
  visibility_timeout_seconds = local.knobs.sqs.visibility_timeout_multiplier * local.functions[local.mappings[each.key].function].timeout_seconds
  message_retention_seconds  = local.knobs.sqs.message_retention_seconds
  max_message_size           = local.knobs.sqs.max_message_bytes
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = local.knobs.sqs.max_receive_count
  })
}

# Each DLQ accepts dead letters from its own queue only.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each = local.queues

  queue_url = aws_sqs_queue.dlq[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main[each.key].arn]
  })
}

# The receipts queue is fed by the SES event topic (ses.tf), the only service principal
# allowed here; the receipts function re-enqueues (defers) its own messages through its IAM
# policy (functions.tf).
data "aws_iam_policy_document" "receipts_queue" {
  statement {
    sid       = "SesEventTopicOnly"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.main["receipts"].arn]
    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.ses_events.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "receipts" {
  queue_url = aws_sqs_queue.main["receipts"].id
  policy    = data.aws_iam_policy_document.receipts_queue.json
}
