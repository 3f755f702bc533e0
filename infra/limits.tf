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

# Who uses the table, with only the item calls each makes: ingest for limits and
# idempotency keys; send to lease the shared SES budget (a conditional update, and a read
# when a window is full).
locals {
  limit_store_actions = {
    ingest = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
    send   = ["dynamodb:GetItem", "dynamodb:UpdateItem"]
  }
}

data "aws_iam_policy_document" "limit_store" {
  for_each = local.limit_store_actions

  statement {
    sid       = "LimitStoreItems"
    actions   = each.value
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

resource "aws_iam_role_policy" "limit_store" {
  for_each = local.limit_store_actions

  name   = "limit-store"
  role   = aws_iam_role.fn[each.key].id
  policy = data.aws_iam_policy_document.limit_store[each.key].json
}

moved {
  from = aws_iam_role_policy.ingest_limits
  to   = aws_iam_role_policy.limit_store["ingest"]
}
