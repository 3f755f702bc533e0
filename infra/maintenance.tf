# Maintenance on a schedule: EventBridge invokes the admin function with
# {"command":"maintain"} every var.maintain_every_minutes. It keeps partitions ahead, drops
# expired ones, times out `sending` rows SES never confirmed (a later SES event still
# replaces that verdict) and puts notifications still `created` after 5 minutes back on
# their send queue (README, "Delivery under faults"). Failures raise the admin function's
# errors alarm (alarms.tf, fn_errors); a schedule that stops invoking it raises the alarm
# below. Both keep re-notifying while they hold.

locals {
  maintain_schedule = var.maintain_every_minutes == 1 ? "rate(1 minute)" : "rate(${var.maintain_every_minutes} minutes)"
}

resource "aws_cloudwatch_event_rule" "maintain" {
  name                = "${var.name_prefix}-maintain"
  description         = "floodgate-admin maintain every ${var.maintain_every_minutes} min"
  schedule_expression = local.maintain_schedule
}

resource "aws_cloudwatch_event_target" "maintain" {
  rule  = aws_cloudwatch_event_rule.maintain.name
  arn   = aws_lambda_function.fn["admin"].arn
  input = jsonencode({ command = "maintain", retention_days = var.retention_days })

  # A run that fails is not retried: the next one comes within minutes and does the same
  # work (every step is idempotent).
  retry_policy {
    maximum_retry_attempts       = 0
    maximum_event_age_in_seconds = 60
  }
}

resource "aws_lambda_permission" "maintain" {
  statement_id  = "AllowEventBridgeMaintain"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn["admin"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.maintain.arn
}

resource "aws_cloudwatch_metric_alarm" "maintain_not_running" {
  alarm_name          = "${local.alarm_prefix}maintain-not-running"
  alarm_description   = "The admin function was not invoked for 3 maintenance intervals: partitions, retention and the delivery sweeps have stopped."
  namespace           = "AWS/Lambda"
  metric_name         = "Invocations"
  dimensions          = { FunctionName = aws_lambda_function.fn["admin"].function_name }
  statistic           = "Sum"
  period              = var.maintain_every_minutes * 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# The release of scheduled notifications, every minute: the admin function puts each
# notification due within the next 15 minutes on its send queue with an SQS delay that ends
# at its time, so a send is punctual to the second whatever this period (README,
# "Scheduled sends"). Nothing waits in an invocation, and no message is delayed for longer
# than SQS allows. A run that fails is repeated by the next one.
resource "aws_cloudwatch_event_rule" "release_scheduled" {
  name                = "${var.name_prefix}-release-scheduled"
  description         = "floodgate-admin release-scheduled every minute"
  schedule_expression = "rate(1 minute)"
}

resource "aws_cloudwatch_event_target" "release_scheduled" {
  rule  = aws_cloudwatch_event_rule.release_scheduled.name
  arn   = aws_lambda_function.fn["admin"].arn
  input = jsonencode({ command = "release-scheduled" })

  retry_policy {
    maximum_retry_attempts       = 0
    maximum_event_age_in_seconds = 60
  }
}

resource "aws_lambda_permission" "release_scheduled" {
  statement_id  = "AllowEventBridgeReleaseScheduled"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn["admin"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.release_scheduled.arn
}

# The admin function's invocations count both schedules, so the release has an alarm of its
# own, on its rule: no invocation for 3 minutes means scheduled notifications are not sent.
resource "aws_cloudwatch_metric_alarm" "release_scheduled_not_running" {
  alarm_name          = "${local.alarm_prefix}release-scheduled-not-running"
  alarm_description   = "EventBridge did not invoke floodgate-admin release-scheduled for 3 minutes: scheduled notifications more than 15 minutes out are not being sent."
  namespace           = "AWS/Events"
  metric_name         = "Invocations"
  dimensions          = { RuleName = aws_cloudwatch_event_rule.release_scheduled.name }
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}
