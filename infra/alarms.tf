# Alarms that keep notifying while the fault persists.
#
# A CloudWatch alarm notifies only on a state change: an alarm that stays in ALARM is silent
# after its first message, so a 5xx storm that lasts hours looks like a single blip in the
# inbox. Metric math and composite alarms do not change that. The mechanism here:
#   1. every alarm sends its ALARM and OK transitions to the alarm SNS topic, and
#   2. an EventBridge rule runs the small "renotify" function every
#      var.alarm_renotify_minutes; it lists this stack's alarms that are still in ALARM
#      (DescribeAlarms, StateValue=ALARM, name prefix local.alarm_prefix) and publishes a
#      "STILL IN ALARM for N min" message for each to the same topic, skipping alarms whose
#      state changed less than one interval ago (their transition message is still fresh).
# So a persisting fault notifies every interval until it clears, and the OK transition
# ends it. The renotifier's own failures are alarmed too (renotify errors alarm below).

locals {
  alarm_prefix = "${var.name_prefix}-alarm-"

  renotify_schedule = var.alarm_renotify_minutes == 1 ? "rate(1 minute)" : "rate(${var.alarm_renotify_minutes} minutes)"

  renotify_source = <<-PY
    """Re-publish this stack's CloudWatch alarms that are still in ALARM (see alarms.tf)."""
    import json
    import os
    from datetime import datetime, timezone

    import boto3

    cloudwatch = boto3.client("cloudwatch")
    sns = boto3.client("sns")


    def handler(event, context):
        prefix = os.environ["ALARM_NAME_PREFIX"]
        topic = os.environ["ALARM_TOPIC_ARN"]
        min_age = int(os.environ["RENOTIFY_SECONDS"])
        now = datetime.now(timezone.utc)
        republished = []
        pages = cloudwatch.get_paginator("describe_alarms").paginate(
            AlarmNamePrefix=prefix,
            StateValue="ALARM",
            AlarmTypes=["MetricAlarm", "CompositeAlarm"],
        )
        for page in pages:
            for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []):
                # The time the alarm entered ALARM: StateUpdatedTimestamp also moves when only
                # the state reason is refreshed, which would make a lasting alarm look new
                # and silence it for ever.
                entered = alarm.get("StateTransitionedTimestamp", alarm["StateUpdatedTimestamp"])
                age = (now - entered).total_seconds()
                if age < min_age:
                    continue
                minutes = int(age // 60)
                subject = "STILL IN ALARM for " + str(minutes) + " min: " + alarm["AlarmName"]
                sns.publish(
                    TopicArn=topic,
                    Subject=subject[:100],
                    Message=json.dumps(
                        {
                            "AlarmName": alarm["AlarmName"],
                            "AlarmDescription": alarm.get("AlarmDescription", ""),
                            "NewStateValue": "ALARM",
                            "NewStateReason": alarm.get("StateReason", ""),
                            "StateChangeTime": entered,
                            "MinutesInAlarm": minutes,
                            "Renotification": True,
                        },
                        default=str,
                    ),
                )
                republished.append(alarm["AlarmName"])
        print(json.dumps({"republished": republished}))
        return {"republished": len(republished)}
  PY
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name_prefix}-alarms"
  kms_master_key_id = aws_kms_key.this.arn
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

resource "aws_sns_topic_subscription" "alarm_email" {
  for_each = toset(var.alarm_emails)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# ---------------------------------------------------------------- queues

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  for_each = local.queues

  alarm_name          = "${local.alarm_prefix}dlq-not-empty-${each.key}"
  alarm_description   = "Messages in the ${each.key} dead-letter queue: they failed ${local.knobs.sqs.max_receive_count} times. Inspect, fix, then redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq[each.key].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "queue_age" {
  for_each = local.queues

  alarm_name          = "${local.alarm_prefix}oldest-message-${each.key}"
  alarm_description   = "The oldest message in ${each.key} is older than ${var.queue_age_alarm_seconds[each.key]} s: the queue is not draining."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.main[each.key].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.queue_age_alarm_seconds[each.key]
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# ---------------------------------------------------------------- RDS Proxy

resource "aws_cloudwatch_metric_alarm" "proxy_borrow_latency" {
  alarm_name          = "${local.alarm_prefix}proxy-borrow-latency"
  alarm_description   = "Clients wait more than ${var.proxy_borrow_latency_alarm_us} us on average for a database connection from the proxy."
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnectionsBorrowLatency"
  dimensions          = { ProxyName = aws_db_proxy.this.name }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.proxy_borrow_latency_alarm_us
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "proxy_connections" {
  alarm_name          = "${local.alarm_prefix}proxy-database-connections"
  alarm_description   = "The proxy holds more than 90% of the computed connection budget (writer ${local.knobs.connection_budget.writer} + reader ${local.knobs.connection_budget.reader})."
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnections"
  dimensions          = { ProxyName = aws_db_proxy.this.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = floor(0.9 * (local.knobs.connection_budget.writer + local.knobs.connection_budget.reader))
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# ---------------------------------------------------------------- functions

resource "aws_cloudwatch_metric_alarm" "fn_errors" {
  for_each = local.functions

  alarm_name          = "${local.alarm_prefix}errors-${each.key}"
  alarm_description   = "The ${each.key} function reports errors (crashes, timeouts, failed invocations)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.fn[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "fn_throttles" {
  for_each = local.functions

  alarm_name          = "${local.alarm_prefix}throttles-${each.key}"
  alarm_description   = "The ${each.key} function is throttled (reserved concurrency reached or account limit)."
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.fn[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# ---------------------------------------------------------------- API

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${local.alarm_prefix}api-5xx"
  alarm_description   = "The HTTP API answers more than ${var.api_5xx_alarm_threshold} 5xx per minute."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5xx"
  dimensions          = { ApiId = aws_apigatewayv2_api.this.id }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.api_5xx_alarm_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# ---------------------------------------------------------------- re-notifier

data "archive_file" "renotify" {
  type        = "zip"
  output_path = "${path.module}/../target/floodgate-infra/renotify.zip"

  source {
    content  = local.renotify_source
    filename = "index.py"
  }
}

resource "aws_cloudwatch_log_group" "renotify" {
  name              = "/aws/lambda/${var.name_prefix}-alarm-renotify"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

resource "aws_iam_role" "renotify" {
  name               = "${var.name_prefix}-alarm-renotify"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

data "aws_iam_policy_document" "renotify" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.renotify.arn}:*"]
  }
  statement {
    sid       = "ListAlarms"
    actions   = ["cloudwatch:DescribeAlarms"]
    resources = ["arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:*"]
  }
  statement {
    sid       = "PublishToAlarmTopic"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
  }
  statement {
    sid       = "EncryptForAlarmTopic"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sns.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "renotify" {
  name   = "renotify"
  role   = aws_iam_role.renotify.id
  policy = data.aws_iam_policy_document.renotify.json
}

resource "aws_lambda_function" "renotify" {
  #checkov:skip=CKV_AWS_117:Ops glue that only calls the CloudWatch and SNS APIs; outside the VPC it needs no monitoring/sns endpoints, and it touches no data in the VPC.
  #checkov:skip=CKV_AWS_116:Invoked by an EventBridge schedule; a failed run is simply repeated by the next scheduled run, and its errors raise the renotify-errors alarm.
  #checkov:skip=CKV_AWS_272:Inline ops glue built by archive_file in this module; code signing adds nothing over source_code_hash here.
  #checkov:skip=CKV_AWS_50:Two API calls per run; its logs and the renotify-errors alarm are enough, X-Ray would add cost and permissions without insight.
  function_name    = "${var.name_prefix}-alarm-renotify"
  description      = "Re-publishes this stack's alarms that are still in ALARM"
  role             = aws_iam_role.renotify.arn
  runtime          = "python3.13"
  architectures    = ["arm64"]
  handler          = "index.handler"
  filename         = data.archive_file.renotify.output_path
  source_code_hash = data.archive_file.renotify.output_base64sha256
  memory_size      = 128
  timeout          = 60
  kms_key_arn      = aws_kms_key.this.arn

  reserved_concurrent_executions = 1

  environment {
    variables = {
      ALARM_NAME_PREFIX = local.alarm_prefix
      ALARM_TOPIC_ARN   = aws_sns_topic.alarms.arn
      RENOTIFY_SECONDS  = tostring(var.alarm_renotify_minutes * 60)
    }
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.renotify.name
  }

  depends_on = [aws_iam_role_policy.renotify]
}

resource "aws_cloudwatch_event_rule" "renotify" {
  name                = "${var.name_prefix}-alarm-renotify"
  description         = "Re-publish alarms still in ALARM every ${var.alarm_renotify_minutes} min"
  schedule_expression = local.renotify_schedule
}

resource "aws_cloudwatch_event_target" "renotify" {
  rule = aws_cloudwatch_event_rule.renotify.name
  arn  = aws_lambda_function.renotify.arn

  retry_policy {
    maximum_retry_attempts       = 2
    maximum_event_age_in_seconds = 300
  }
}

resource "aws_lambda_permission" "renotify" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.renotify.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.renotify.arn
}

resource "aws_cloudwatch_metric_alarm" "renotify_errors" {
  alarm_name          = "${local.alarm_prefix}renotify-errors"
  alarm_description   = "The alarm re-notifier fails: alarms that stay in ALARM are no longer repeated."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.renotify.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# Log events that need a person: the `event` field of a function's JSON lines, counted by
# metric filters and alarmed. Callbacks: a client's endpoint that keeps failing gets its
# service suspended, and a callback out of retries is given up. Ingest: the limit store
# could not be reached, so requests were accepted without rate or daily limits and without
# idempotency (availability first; the alarm says the door is open). Send: the shared SES
# budget could not be leased, so instances pace at their even share (slower, never over).
locals {
  log_events = {
    callback_suspended   = { function = "callbacks", metric = "CallbackSuspensions", description = "A service's callback endpoint kept failing and was suspended: its callbacks wait." }
    callback_failed      = { function = "callbacks", metric = "CallbacksFailed", description = "Callbacks were given up after every retry (or could not be made at all)." }
    limit_store_bypassed = { function = "ingest", metric = "LimitStoreBypasses", description = "ingest could not reach the limit store (DynamoDB): requests are accepted without rate/daily limits or idempotency." }
    send_budget_bypassed = { function = "send", metric = "SendBudgetBypasses", description = "send could not reach the limit store (DynamoDB) for the shared SES budget: each instance paces at its even share of the rate, so sending is slower than the account allows." }
  }
}

resource "aws_cloudwatch_log_metric_filter" "events" {
  for_each = local.log_events

  name           = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  log_group_name = aws_cloudwatch_log_group.fn[each.value.function].name
  pattern        = "{ $.fields.event = \"${each.key}\" }"
  metric_transformation {
    name      = each.value.metric
    namespace = "Floodgate"
    value     = "1"
  }
}

resource "aws_cloudwatch_metric_alarm" "events" {
  for_each = local.log_events

  alarm_name          = "${local.alarm_prefix}${replace(each.key, "_", "-")}"
  alarm_description   = each.value.description
  namespace           = "Floodgate"
  metric_name         = each.value.metric
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

moved {
  from = aws_cloudwatch_log_metric_filter.callbacks
  to   = aws_cloudwatch_log_metric_filter.events
}

moved {
  from = aws_cloudwatch_metric_alarm.callbacks
  to   = aws_cloudwatch_metric_alarm.events
}
