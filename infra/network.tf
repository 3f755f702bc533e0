# Network: one VPC, private subnets only (one per AZ), no internet gateway and no NAT.
#
# Why interface endpoints and not a NAT gateway (cost vs. reach):
# - What the functions call from inside the VPC is a short, fixed list: SQS (ingest, persist
#   enqueue), SES v2 (`email`, send), Secrets Manager (admin bootstrap) and CloudWatch Logs
#   (EMF metrics and logs written through the API). Event source mappings poll SQS from the
#   Lambda service, outside the VPC, and function stdout goes to CloudWatch through the Lambda
#   service, so neither needs a route. Metrics are emitted as CloudWatch embedded metric format
#   (log lines), so no `monitoring` endpoint is needed.
# - 4 endpoints x 2 AZs cost about the same per month as one NAT gateway in one AZ, but they
#   carry no per-GB processing charge for a blast's SQS/SES traffic, stay up when one AZ
#   fails (a single NAT does not), and give the functions no path to the internet at all, so
#   a compromised dependency cannot exfiltrate data. A NAT would be the cheaper choice only
#   if the functions had to reach arbitrary internet hosts, which they never do.

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # required for the endpoints' private DNS names

  tags = { Name = "${var.name_prefix}-vpc" }
}

resource "aws_subnet" "private" {
  count = var.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = data.aws_availability_zones.available.names[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = false

  tags = { Name = "${var.name_prefix}-private-${data.aws_availability_zones.available.names[count.index]}" }
}

# Only the implicit local route: nothing in these subnets can reach the internet.
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name_prefix}-private" }
}

resource "aws_route_table_association" "private" {
  count = var.az_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

# The default security group allows nothing.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.this.id
}

# ---------------------------------------------------------------- flow logs

resource "aws_cloudwatch_log_group" "flow_logs" {
  name              = "/floodgate/${var.name_prefix}/vpc-flow-logs"
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name_prefix}-vpc-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
}

data "aws_iam_policy_document" "flow_logs" {
  statement {
    actions = [
      "logs:CreateLogStream",
      "logs:PutLogEvents",
      "logs:DescribeLogStreams",
    ]
    resources = ["${aws_cloudwatch_log_group.flow_logs.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}

resource "aws_flow_log" "vpc" {
  vpc_id               = aws_vpc.this.id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.flow_logs.arn
  iam_role_arn         = aws_iam_role.flow_logs.arn
}

# ---------------------------------------------------------------- security groups
# Lambda -> proxy -> database, nothing else. The functions also reach the VPC endpoints on
# 443. The admin function has its own group: besides the proxy it may reach the cluster
# directly, once per deploy, to bootstrap the per-function database roles as the master user
# (the roles must exist before the proxy can log in as them; see database.tf).

resource "aws_security_group" "lambda" {
  name        = "${var.name_prefix}-lambda"
  description = "Floodgate functions: egress to the RDS Proxy and the VPC endpoints only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "admin" {
  name        = "${var.name_prefix}-admin"
  description = "Floodgate admin function: egress to the proxy, the VPC endpoints and (bootstrap) the cluster"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "proxy" {
  #checkov:skip=CKV2_AWS_5:Attached to aws_db_proxy.this and aws_db_proxy_endpoint.read_only (proxy.tf), resource types checkov's attachment graph does not know.
  name        = "${var.name_prefix}-proxy"
  description = "RDS Proxy: ingress from the functions, egress to the database"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "db" {
  name        = "${var.name_prefix}-db"
  description = "Aurora PostgreSQL: ingress from the RDS Proxy (and the admin bootstrap) only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name_prefix}-endpoints"
  description = "VPC interface endpoints: HTTPS from the functions only"
  vpc_id      = aws_vpc.this.id
}

locals {
  function_security_groups = {
    lambda = aws_security_group.lambda.id
    admin  = aws_security_group.admin.id
  }
}

resource "aws_vpc_security_group_egress_rule" "fn_to_proxy" {
  for_each = local.function_security_groups

  security_group_id            = each.value
  description                  = "PostgreSQL to the RDS Proxy"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.proxy.id
}

resource "aws_vpc_security_group_egress_rule" "fn_to_endpoints" {
  for_each = local.function_security_groups

  security_group_id            = each.value
  description                  = "HTTPS to the VPC interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints.id
}

resource "aws_vpc_security_group_egress_rule" "admin_to_db" {
  security_group_id            = aws_security_group.admin.id
  description                  = "PostgreSQL to the cluster for the one-off role bootstrap"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_ingress_rule" "proxy_from_fn" {
  for_each = local.function_security_groups

  security_group_id            = aws_security_group.proxy.id
  description                  = "PostgreSQL from the ${each.key} functions"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value
}

resource "aws_vpc_security_group_egress_rule" "proxy_to_db" {
  security_group_id            = aws_security_group.proxy.id
  description                  = "PostgreSQL to the Aurora cluster"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db.id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_proxy" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the RDS Proxy"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.proxy.id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_admin" {
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from the admin function (role bootstrap only)"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.admin.id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_fn" {
  for_each = local.function_security_groups

  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the ${each.key} functions"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = each.value
}

# ---------------------------------------------------------------- interface endpoints

locals {
  interface_endpoints = toset(["sqs", "email", "secretsmanager", "logs"])
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoints

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]

  tags = { Name = "${var.name_prefix}-${each.key}" }
}
