# SES v2: the sending domains (the default var.ses_domain and each custom domain in
# var.ses_custom_domains, the GC Notify "custom sending domains" of services that send from
# their own domain; the DKIM CNAMEs of each are outputs to publish in DNS), a configuration set
# whose event destination sends Delivery, Bounce, Complaint, Reject, DeliveryDelay and
# Rendering Failure events to an SNS topic, and that topic subscribed to the receipts queue.
# The send function puts the notification id in the message tags; SES copies the tags into
# every event, so receipts find the row by primary key.

resource "aws_sesv2_configuration_set" "this" {
  configuration_set_name = var.name_prefix

  delivery_options {
    tls_policy = "REQUIRE"
  }

  reputation_options {
    reputation_metrics_enabled = true
  }

  sending_options {
    sending_enabled = true
  }

  suppression_options {
    suppressed_reasons = ["BOUNCE", "COMPLAINT"]
  }
}

locals {
  # Every domain a service's from_email may use: IAM lets send use any address in them
  # (functions.tf) and admin's create-service refuses others (FLOODGATE_SENDING_DOMAINS).
  sending_domains = distinct(concat([var.ses_domain], var.ses_custom_domains))
  # Identity ARN per domain, for IAM.
  ses_identity_arns = merge(
    { (var.ses_domain) = aws_sesv2_email_identity.this.arn },
    { for d, identity in aws_sesv2_email_identity.custom : d => identity.arn },
  )
}

resource "aws_sesv2_email_identity" "this" {
  email_identity = var.ses_domain

  # Default configuration set of the identity: applied to every send from this domain, so
  # no email can skip the event destination (see the send role in functions.tf).
  configuration_set_name = aws_sesv2_configuration_set.this.configuration_set_name

  dkim_signing_attributes {
    next_signing_key_length = "RSA_2048_BIT"
  }
}

# A service's own domain: verified and DKIM-signed like the default one, with the same
# default configuration set, so its events reach receipts too.
resource "aws_sesv2_email_identity" "custom" {
  for_each = toset([for d in var.ses_custom_domains : d if d != var.ses_domain])

  email_identity         = each.key
  configuration_set_name = aws_sesv2_configuration_set.this.configuration_set_name

  dkim_signing_attributes {
    next_signing_key_length = "RSA_2048_BIT"
  }
}

resource "aws_sns_topic" "ses_events" {
  name              = "${var.name_prefix}-ses-events"
  kms_master_key_id = aws_kms_key.this.arn
}

data "aws_iam_policy_document" "ses_events_topic" {
  statement {
    sid       = "SesConfigurationSetPublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.ses_events.arn]
    principals {
      type        = "Service"
      identifiers = ["ses.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_sesv2_configuration_set.this.arn]
    }
  }
}

resource "aws_sns_topic_policy" "ses_events" {
  arn    = aws_sns_topic.ses_events.arn
  policy = data.aws_iam_policy_document.ses_events_topic.json
}

resource "aws_sesv2_configuration_set_event_destination" "receipts" {
  configuration_set_name = aws_sesv2_configuration_set.this.configuration_set_name
  event_destination_name = "receipts"

  event_destination {
    enabled = true
    # SEND too: it carries the SES message id and the notification_id tag within seconds, so
    # a notification whose send crashed after SES accepted it gets its id recorded and the
    # stuck-claim sweeper never mistakes it for an unsent one.
    matching_event_types = [
      "SEND",
      "DELIVERY",
      "BOUNCE",
      "COMPLAINT",
      "REJECT",
      "DELIVERY_DELAY",
      "RENDERING_FAILURE",
    ]

    sns_destination {
      topic_arn = aws_sns_topic.ses_events.arn
    }
  }

  depends_on = [aws_sns_topic_policy.ses_events]
}

# raw_message_delivery = false: the receipts function parses the SNS envelope (its Message
# field holds the SES event JSON), the same shape the local SimulatorMailer emits.
resource "aws_sns_topic_subscription" "receipts" {
  topic_arn            = aws_sns_topic.ses_events.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.main["receipts"].arn
  raw_message_delivery = false

  depends_on = [aws_sqs_queue_policy.receipts]
}
