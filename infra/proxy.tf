# RDS Proxy in front of Aurora: the default endpoint (read/write, the writer lane) and a
# READ_ONLY endpoint (the reader lane) that spreads over the readers.
#
# Authentication: default_auth_scheme = "IAM_AUTH" is RDS Proxy's end-to-end IAM mode. Every
# client connection must present an IAM auth token (rds-db:connect on
# dbuser:<proxy resource id>/<user>, functions.tf), i.e. IAM auth is REQUIRED and there is no
# password path; the proxy then logs in to the database with IAM as the same user
# (rds-db:connect on dbuser:<cluster resource id>/<user>, below). No per-user secrets exist to
# leak or rotate. require_tls = true: clients must use TLS (sslmode=require in the URLs).

data "aws_iam_policy_document" "proxy_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["rds.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "proxy" {
  name               = "${var.name_prefix}-rds-proxy"
  assume_role_policy = data.aws_iam_policy_document.proxy_assume.json
}

data "aws_iam_policy_document" "proxy" {
  statement {
    sid     = "ConnectAsFunctionUsers"
    actions = ["rds-db:connect"]
    resources = [
      for user in values(local.db_users) :
      "arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${aws_rds_cluster.this.cluster_resource_id}/${user}"
    ]
  }
}

resource "aws_iam_role_policy" "proxy" {
  name   = "connect-to-cluster"
  role   = aws_iam_role.proxy.id
  policy = data.aws_iam_policy_document.proxy.json
}

resource "aws_db_proxy" "this" {
  name                   = var.name_prefix
  engine_family          = "POSTGRESQL"
  role_arn               = aws_iam_role.proxy.arn
  vpc_subnet_ids         = aws_subnet.private[*].id
  vpc_security_group_ids = [aws_security_group.proxy.id]

  default_auth_scheme = "IAM_AUTH"
  require_tls         = true
  idle_client_timeout = var.proxy_idle_client_timeout_seconds
  debug_logging       = false

  depends_on = [aws_iam_role_policy.proxy]
}

resource "aws_db_proxy_default_target_group" "this" {
  db_proxy_name = aws_db_proxy.this.name

  connection_pool_config {
    # Below every function timeout (precondition in locals.tf): a function that cannot get a
    # connection learns it while it still has time to answer 503 or fail its batch items.
    connection_borrow_timeout    = var.proxy_borrow_timeout_seconds
    max_connections_percent      = var.proxy_max_connections_percent
    max_idle_connections_percent = var.proxy_max_idle_connections_percent

    # Session settings have one owner each, and none is a run-time SET (a SET issued by a
    # client pins it to one database connection for the rest of its session, defeating
    # multiplexing). statement_timeout and idle_in_transaction_session_timeout are the
    # function roles' defaults (ALTER ROLE ... SET, written by admin's role bootstrap,
    # shared/db/src/roles.rs); the init query must not repeat them, because it runs after
    # login and would silently override them. It sets only lock_timeout, which no role
    # default sets; it runs once when the proxy opens a database connection and does not pin.
    init_query = "SET lock_timeout = ${var.db_lock_timeout_ms};"
  }
}

resource "aws_db_proxy_target" "cluster" {
  db_proxy_name         = aws_db_proxy.this.name
  target_group_name     = aws_db_proxy_default_target_group.this.name
  db_cluster_identifier = aws_rds_cluster.this.cluster_identifier

  depends_on = [aws_rds_cluster_instance.writer, aws_rds_cluster_instance.reader]
}

# The reader lane's endpoint: connections are routed to the Aurora readers only, so status
# look-ups and API-key/template reads never queue behind pipeline writes.
resource "aws_db_proxy_endpoint" "read_only" {
  db_proxy_name          = aws_db_proxy.this.name
  db_proxy_endpoint_name = "${var.name_prefix}-read-only"
  vpc_subnet_ids         = aws_subnet.private[*].id
  vpc_security_group_ids = [aws_security_group.proxy.id]
  target_role            = "READ_ONLY"
}
