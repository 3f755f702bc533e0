# HTTP API (payload format 2.0) with the Notify v2 routes for email. Writes go to ingest, reads to
# status. Stage throttling bounds what a client can push at ingest; access logs go to a
# CloudWatch log group.

locals {
  api_routes = {
    "POST /v2/notifications/email"            = "ingest"
    "POST /v2/notifications/bulk"             = "ingest"
    "GET /v2/notifications"                   = "status"
    "GET /v2/notifications/{id}"              = "status"
    "GET /v2/template/{id}"                   = "status"
    "GET /v2/template/{id}/version/{version}" = "status"
    "GET /v2/templates"                       = "status"
    "POST /v2/template/{id}/preview"          = "status"
    "GET /v2/jobs/{id}"                       = "status"
    "GET /_status"                            = "status"
  }
  api_functions = toset(distinct(values(local.api_routes)))
}

resource "aws_apigatewayv2_api" "this" {
  name          = "${var.name_prefix}-api"
  protocol_type = "HTTP"
  description   = "Floodgate: Notify v2 compatible email API"
}

resource "aws_apigatewayv2_integration" "fn" {
  for_each = local.api_functions

  api_id                 = aws_apigatewayv2_api.this.id
  integration_type       = "AWS_PROXY"
  integration_method     = "POST"
  integration_uri        = aws_lambda_function.fn[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(30000, local.functions[each.key].timeout_seconds * 1000 + 1000)
}

resource "aws_apigatewayv2_route" "this" {
  #checkov:skip=CKV_AWS_309:Authentication is the Notify v2 scheme (HS256 JWT signed with the service's API key secret, or GC Notify's ApiKey-v1 header), checked per service inside ingest/status against keys in the database; an API Gateway JWT authorizer cannot verify per-service HS256 secrets. /_status is a public liveness probe.
  for_each = local.api_routes

  api_id    = aws_apigatewayv2_api.this.id
  route_key = each.key
  target    = "integrations/${aws_apigatewayv2_integration.fn[each.value].id}"
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/floodgate/${var.name_prefix}/api-access"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.this.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit    = var.api_throttle_rate
    throttling_burst_limit   = var.api_throttle_burst
    detailed_metrics_enabled = true
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId          = "$context.requestId"
      requestTime        = "$context.requestTime"
      httpMethod         = "$context.httpMethod"
      routeKey           = "$context.routeKey"
      status             = "$context.status"
      responseLength     = "$context.responseLength"
      responseLatency    = "$context.responseLatency"
      integrationStatus  = "$context.integrationStatus"
      integrationLatency = "$context.integrationLatency"
      integrationError   = "$context.integrationErrorMessage"
      sourceIp           = "$context.identity.sourceIp"
      userAgent          = "$context.identity.userAgent"
    })
  }
}

resource "aws_lambda_permission" "api" {
  for_each = local.api_functions

  statement_id  = "AllowHttpApiInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn[each.key].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this.execution_arn}/*/*"
}
