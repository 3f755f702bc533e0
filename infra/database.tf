# Aurora PostgreSQL: one writer and var.db_reader_count readers, encrypted with the CMK,
# private subnets only, IAM database authentication on (the proxy logs in with IAM, proxy.tf).
#
# Database users. Every function has its own role (local.db_users: floodgate_<function>)
# with LOGIN and `GRANT rds_iam`, and no password. They are created by the admin function on
# its `migrate` command, before the migrations run: admin reads the master credentials from
# the RDS-managed secret (FLOODGATE_BOOTSTRAP_SECRET_ARN), connects straight to the cluster
# writer endpoint (FLOODGATE_BOOTSTRAP_HOST; the only path that bypasses the proxy, allowed
# by the admin security group alone), creates or updates the roles listed in
# FLOODGATE_DB_USERS idempotently, then runs the versioned migrations. After that every
# connection, admin's included, goes Lambda -> RDS Proxy -> database as the function's role.

# The engine version: the newest minor of var.db_engine_major_version that AWS creates today,
# found at plan time, so the stack never names a minor AWS has withdrawn. After creation the
# cluster's minor moves on its own (auto_minor_version_upgrade on the instances), which is why
# the cluster ignores engine_version drift below; the parameter group family is the one AWS
# gives for that version.
data "aws_rds_engine_version" "aurora_pg" {
  engine  = "aurora-postgresql"
  version = var.db_engine_major_version
  latest  = true

  filter {
    name   = "engine-mode"
    values = ["provisioned"]
  }
}

resource "aws_db_subnet_group" "this" {
  name       = var.name_prefix
  subnet_ids = aws_subnet.private[*].id
}

# Cluster-wide settings the schema relies on. notifications is range-partitioned
# by day and updated in place (HOT updates: fillfactor < 100 and per-table autovacuum
# settings are written in the migration). These cluster defaults make autovacuum frequent
# and cheap on the small, hot partitions instead of rare and heavy (a "vacuum storm" that
# competes with a blast for I/O).
resource "aws_rds_cluster_parameter_group" "this" {
  name        = "${var.name_prefix}-aurora-pg${var.db_engine_major_version}"
  family      = data.aws_rds_engine_version.aurora_pg.parameter_group_family
  description = "Floodgate: TLS only, autovacuum tuned for HOT-updated daily partitions"

  # TLS between the proxy and the database (the proxy also requires TLS from clients).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Autovacuum: wake often, trigger on a small fraction of dead/inserted tuples, and let
  # each worker do more work per cycle so it finishes before the next blast.
  parameter {
    name  = "autovacuum_naptime"
    value = "15"
  }
  parameter {
    name  = "autovacuum_vacuum_scale_factor"
    value = "0.02"
  }
  parameter {
    name  = "autovacuum_analyze_scale_factor"
    value = "0.02"
  }
  parameter {
    name  = "autovacuum_vacuum_insert_scale_factor"
    value = "0.05"
  }
  parameter {
    name  = "autovacuum_vacuum_cost_limit"
    value = "2000"
  }
  parameter {
    name  = "autovacuum_vacuum_cost_delay"
    value = "2"
  }
  parameter {
    name         = "autovacuum_max_workers"
    value        = "5"
    apply_method = "pending-reboot"
  }

  # Observability: slow statements and every autovacuum run longer than 1 s are logged
  # (exported to CloudWatch Logs by the cluster).
  parameter {
    name  = "log_autovacuum_min_duration"
    value = "1000"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "track_io_timing"
    value = "1"
  }
  parameter {
    name         = "shared_preload_libraries"
    value        = "pg_stat_statements"
    apply_method = "pending-reboot"
  }
}

resource "aws_rds_cluster" "this" {
  #checkov:skip=CKV2_AWS_8:Backups are the cluster's automated backups with point-in-time restore (backup_retention_period); an AWS Backup plan is an account-level choice left to the operator.
  cluster_identifier = var.name_prefix
  engine             = "aurora-postgresql"
  engine_mode        = "provisioned"
  engine_version     = data.aws_rds_engine_version.aurora_pg.version_actual
  database_name      = var.db_name
  master_username    = var.db_master_username

  # RDS generates the master password and keeps (and rotates) it in Secrets Manager.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this.arn

  iam_database_authentication_enabled = true
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.this.arn

  db_subnet_group_name            = aws_db_subnet_group.this.name
  vpc_security_group_ids          = [aws_security_group.db.id]
  db_cluster_parameter_group_name = aws_rds_cluster_parameter_group.this.name

  deletion_protection = var.deletion_protection
  skip_final_snapshot = var.skip_final_snapshot
  # Stamped with the cluster's creation time (kept: final_snapshot_identifier is in
  # ignore_changes), so a re-created stack's final snapshot never collides with the one
  # its predecessor left behind.
  final_snapshot_identifier = "${var.name_prefix}-final-${formatdate("YYYYMMDD-hhmmss", timestamp())}"
  backup_retention_period   = var.db_backup_retention_days
  copy_tags_to_snapshot     = true

  preferred_backup_window      = "02:00-03:00"
  preferred_maintenance_window = "sun:04:00-sun:05:00"

  enabled_cloudwatch_logs_exports = ["postgresql"]

  lifecycle {
    # AWS upgrades the minor version in the maintenance window and the data source above
    # moves to newer minors: without this, every plan after either would try to set the
    # version back (a downgrade AWS refuses) or upgrade outside the window. The snapshot
    # name keeps the timestamp of the first apply instead of changing on every plan.
    ignore_changes = [engine_version, final_snapshot_identifier]

    # A new major is not applied by ignoring drift: it needs a deliberate major upgrade.
    postcondition {
      condition     = startswith(self.engine_version_actual, "${var.db_engine_major_version}.")
      error_message = "The cluster runs Aurora PostgreSQL ${self.engine_version_actual}, not major ${var.db_engine_major_version}: a major upgrade is an operation of its own (README, Deploying to AWS), not a changed variable."
    }
  }
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name_prefix}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# The writer is created first: Aurora makes the first instance of a cluster its writer.
resource "aws_rds_cluster_instance" "writer" {
  identifier         = "${var.name_prefix}-writer"
  cluster_identifier = aws_rds_cluster.this.id
  engine             = aws_rds_cluster.this.engine
  instance_class     = var.db_instance_class

  db_subnet_group_name       = aws_db_subnet_group.this.name
  publicly_accessible        = false
  auto_minor_version_upgrade = true
  promotion_tier             = 0
  ca_cert_identifier         = "rds-ca-rsa2048-g1"
  copy_tags_to_snapshot      = true

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn

  # Enhanced monitoring needs the role's policy attached first, or instance creation fails.
  depends_on = [aws_iam_role_policy_attachment.rds_monitoring]
}

resource "aws_rds_cluster_instance" "reader" {
  count = var.db_reader_count

  identifier         = "${var.name_prefix}-reader-${count.index + 1}"
  cluster_identifier = aws_rds_cluster.this.id
  engine             = aws_rds_cluster.this.engine
  instance_class     = var.db_instance_class

  db_subnet_group_name       = aws_db_subnet_group.this.name
  publicly_accessible        = false
  auto_minor_version_upgrade = true
  promotion_tier             = 1
  ca_cert_identifier         = "rds-ca-rsa2048-g1"
  copy_tags_to_snapshot      = true

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.this.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn

  depends_on = [aws_rds_cluster_instance.writer, aws_iam_role_policy_attachment.rds_monitoring]
}
