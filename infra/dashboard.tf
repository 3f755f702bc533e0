# One CloudWatch dashboard: queues (depth and age, DLQs), functions (invocations,
# errors, throttles, concurrency, duration), the proxy (connections, borrow latency) and the
# API (requests, 4xx/5xx, latency).

locals {
  queue_names = sort(tolist(local.queues))
  fn_list     = sort(keys(local.functions))

  dashboard_widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title   = "Queue depth (visible messages)"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        view    = "timeSeries"
        metrics = [for q in local.queue_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.main[q].name]]
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title   = "Age of oldest message (s)"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        view    = "timeSeries"
        metrics = [for q in local.queue_names : ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", aws_sqs_queue.main[q].name]]
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 12, height = 6
      properties = {
        title   = "Dead-letter queues (visible messages)"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        view    = "timeSeries"
        metrics = [for q in local.queue_names : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.dlq[q].name]]
      }
    },
    {
      type = "metric", x = 12, y = 6, width = 12, height = 6
      properties = {
        title  = "RDS Proxy connections (budget: writer ${local.knobs.connection_budget.writer}, reader ${local.knobs.connection_budget.reader})"
        region = local.region
        stat   = "Maximum"
        period = 60
        view   = "timeSeries"
        metrics = [
          ["AWS/RDS", "DatabaseConnections", "ProxyName", aws_db_proxy.this.name],
          ["AWS/RDS", "ClientConnections", "ProxyName", aws_db_proxy.this.name],
          ["AWS/RDS", "DatabaseConnectionsCurrentlyBorrowed", "ProxyName", aws_db_proxy.this.name],
          ["AWS/RDS", "DatabaseConnectionsCurrentlySessionPinned", "ProxyName", aws_db_proxy.this.name],
        ]
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 12, height = 6
      properties = {
        title   = "RDS Proxy borrow latency (us)"
        region  = local.region
        stat    = "Average"
        period  = 60
        view    = "timeSeries"
        metrics = [["AWS/RDS", "DatabaseConnectionsBorrowLatency", "ProxyName", aws_db_proxy.this.name]]
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title   = "Function concurrency"
        region  = local.region
        stat    = "Maximum"
        period  = 60
        view    = "timeSeries"
        metrics = [for fn in local.fn_list : ["AWS/Lambda", "ConcurrentExecutions", "FunctionName", local.fn_names[fn]]]
      }
    },
    {
      type = "metric", x = 0, y = 18, width = 12, height = 6
      properties = {
        title   = "Function errors and throttles"
        region  = local.region
        stat    = "Sum"
        period  = 60
        view    = "timeSeries"
        metrics = concat([for fn in local.fn_list : ["AWS/Lambda", "Errors", "FunctionName", local.fn_names[fn]]], [for fn in local.fn_list : ["AWS/Lambda", "Throttles", "FunctionName", local.fn_names[fn]]])
      }
    },
    {
      type = "metric", x = 12, y = 18, width = 12, height = 6
      properties = {
        title   = "Function duration p99 (ms)"
        region  = local.region
        stat    = "p99"
        period  = 60
        view    = "timeSeries"
        metrics = [for fn in local.fn_list : ["AWS/Lambda", "Duration", "FunctionName", local.fn_names[fn]]]
      }
    },
    {
      type = "metric", x = 0, y = 24, width = 12, height = 6
      properties = {
        title  = "API requests, 4xx, 5xx"
        region = local.region
        stat   = "Sum"
        period = 60
        view   = "timeSeries"
        metrics = [
          ["AWS/ApiGateway", "Count", "ApiId", aws_apigatewayv2_api.this.id],
          ["AWS/ApiGateway", "4xx", "ApiId", aws_apigatewayv2_api.this.id],
          ["AWS/ApiGateway", "5xx", "ApiId", aws_apigatewayv2_api.this.id],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 24, width = 12, height = 6
      properties = {
        title   = "API latency p99 (ms)"
        region  = local.region
        stat    = "p99"
        period  = 60
        view    = "timeSeries"
        metrics = [["AWS/ApiGateway", "Latency", "ApiId", aws_apigatewayv2_api.this.id]]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name_prefix
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
