# The limit store: one DynamoDB table that every ingest instance shares for rate limits
# (per service and key type, per minute), daily limits (per service, per UTC day) and
# idempotency keys (24 h), and every send instance for the SES account's rate (leases of
# ~100 ms windows). On-demand capacity (a blast's spikes need no provisioning), one
# string key `pk`, and DynamoDB's TTL on `expires_at` to drop old windows and records.
# Counts never touch PostgreSQL: a limit check that queried the notifications table is
# what took Notify's API down under volume.
resource "aws_dynamodb_table" "limits" {
  name         = "${var.name_prefix}-limits"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.this.arn
  }
}

# ingest and send run in the private subnets, which have no route out: a gateway endpoint
# (free, no ENI) carries their DynamoDB calls.
resource "aws_vpc_endpoint" "dynamodb" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${local.region}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]

  tags = { Name = "${var.name_prefix}-dynamodb" }
}

# ingest uses the table's items for limits and idempotency keys, with only the item calls it
# makes.
data "aws_iam_policy_document" "ingest_limits" {
  statement {
    sid = "LimitStoreItems"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
    ]
    resources = [aws_dynamodb_table.limits.arn]
  }

  statement {
    sid       = "LimitStoreEncryption"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "ingest_limits" {
  name   = "limit-store"
  role   = aws_iam_role.fn["ingest"].id
  policy = data.aws_iam_policy_document.ingest_limits.json
}

# send leases the shared SES budget: a conditional update, and a read when it is refused.
data "aws_iam_policy_document" "send_budget" {
  statement {
    sid       = "SendBudgetItems"
    actions   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.limits.arn]
  }

  statement {
    sid       = "SendBudgetEncryption"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["dynamodb.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "send_budget" {
  name   = "send-budget"
  role   = aws_iam_role.fn["send"].id
  policy = data.aws_iam_policy_document.send_budget.json
}
