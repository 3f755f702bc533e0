output "api_url" {
  description = "Base URL of the Notify-compatible API (append /v2/...)."
  value       = aws_apigatewayv2_stage.default.invoke_url
}

output "admin_function_name" {
  description = "Name of the admin function deploy.sh invokes with {\"command\":\"migrate\"}."
  value       = aws_lambda_function.fn["admin"].function_name
}

output "function_names" {
  description = "Lambda function name per function."
  value       = { for fn, f in aws_lambda_function.fn : fn => f.function_name }
}

output "queue_urls" {
  description = "SQS queue URL per queue."
  value       = { for q, queue in aws_sqs_queue.main : q => queue.url }
}

output "dlq_urls" {
  description = "Dead-letter queue URL per queue."
  value       = { for q, queue in aws_sqs_queue.dlq : q => queue.url }
}

output "proxy_writer_endpoint" {
  description = "RDS Proxy default (read/write) endpoint: the writer lane."
  value       = aws_db_proxy.this.endpoint
}

output "proxy_reader_endpoint" {
  description = "RDS Proxy READ_ONLY endpoint: the reader lane."
  value       = aws_db_proxy_endpoint.read_only.endpoint
}

output "db_users" {
  description = "Database role per function (created by admin's migrate)."
  value       = local.db_users
}

output "connection_budget" {
  description = "Connections the stack can open per lane, the budget in knobs.json, and what the proxy may open per instance."
  value = {
    writer_connections     = local.writer_connections
    reader_connections     = local.reader_connections
    writer_budget          = local.knobs.connection_budget.writer
    reader_budget          = local.knobs.connection_budget.reader
    proxy_connection_limit = local.proxy_connection_limit
  }
}

output "ses_dkim_records" {
  description = "Per sending domain (ses_domain and each of ses_custom_domains): the Easy DKIM CNAME records to publish in that domain's DNS so SES verifies it and signs its mail."
  value = {
    for d, identity in merge(
      { (var.ses_domain) = aws_sesv2_email_identity.this },
      aws_sesv2_email_identity.custom,
      ) : d => [
      for token in identity.dkim_signing_attributes[0].tokens : {
        name  = "${token}._domainkey.${d}"
        type  = "CNAME"
        value = "${token}.dkim.amazonses.com"
      }
    ]
  }
}

output "ses_sending_domains" {
  description = "Domains services may send from (FLOODGATE_SENDING_DOMAINS of admin, ses:FromAddress of send)."
  value       = local.sending_domains
}

output "ses_configuration_set" {
  description = "SES configuration set every email is sent through."
  value       = aws_sesv2_configuration_set.this.configuration_set_name
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms (and of their re-notifications)."
  value       = aws_sns_topic.alarms.arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard of the stack."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "region" {
  description = "Region the stack is deployed in (deploy.sh invokes the admin function there)."
  value       = local.region
}
