# Every variable is explained in terraform.tfvars.example. The knobs shared with the local
# stack (batch sizes, windows, concurrency, timeouts, lane sizes, queue settings) are NOT
# variables: they come from knobs.json (locals.tf) so AWS and the local stack cannot drift.

variable "region" {
  description = "AWS region to deploy into (must offer SES and the SES `email` VPC endpoint)."
  type        = string
  default     = "eu-west-2"
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, queues, cluster, proxy, alarms)."
  type        = string
  default     = "floodgate"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name_prefix))
    error_message = "name_prefix: lowercase letters, digits and '-', 2-31 characters, starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags applied to every resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- network

variable "vpc_cidr" {
  description = "CIDR of the VPC. Private subnets are /20s carved from it, one per AZ."
  type        = string
  default     = "10.42.0.0/16"
}

variable "az_count" {
  description = "Number of availability zones (private subnets) to span; at least 2."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be between 2 and 4."
  }
}

variable "availability_zones" {
  description = "Names of the zones to use (e.g. [\"eu-west-2a\", \"eu-west-2b\"]). Empty means the first az_count of <region>a, <region>b, <region>c, <region>d."
  type        = list(string)
  default     = []
}

variable "flow_log_retention_days" {
  description = "Retention of the VPC flow log group, in days."
  type        = number
  default     = 365
}

# ---------------------------------------------------------------- database

variable "db_engine_major_version" {
  description = "Aurora PostgreSQL major version. The cluster is created with the newest minor of it that AWS offers (data.aws_rds_engine_version), minors then follow auto_minor_version_upgrade, and the parameter group family follows the major."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["16", "17"], var.db_engine_major_version)
    error_message = "db_engine_major_version must be 16 or 17 (the majors this stack's parameter group and migrations are written for)."
  }
}

variable "db_instance_class" {
  description = "Instance class of the Aurora writer and readers."
  type        = string
  default     = "db.r6g.large"
}

variable "db_instance_max_connections" {
  description = "max_connections of ONE instance, only for a class missing from local.aurora_pg_max_connections (locals.tf; e.g. db.serverless) or to budget below the class's figure. null = AWS's default for db_instance_class (1,722 for db.r6g.large). The connection-budget precondition checks the budget against proxy_max_connections_percent of this."
  type        = number
  default     = null

  validation {
    condition     = var.db_instance_max_connections == null || coalesce(var.db_instance_max_connections, 0) >= 1
    error_message = "db_instance_max_connections must be null or a positive number."
  }
}

variable "db_reader_count" {
  description = "Number of Aurora reader instances (the reader lane's read-only proxy endpoint spreads over them)."
  type        = number
  default     = 1

  validation {
    condition     = var.db_reader_count >= 1
    error_message = "At least one reader is required (the reader lane must not share the writer)."
  }
}

variable "db_name" {
  description = "Name of the application database."
  type        = string
  default     = "floodgate"
}

variable "db_master_username" {
  description = "Master user of the cluster. Its password is generated and kept in Secrets Manager by RDS (manage_master_user_password); only the admin function's bootstrap step uses it."
  type        = string
  default     = "floodgate_master"
}

variable "deletion_protection" {
  description = "Deletion protection of the Aurora cluster. destroy.sh turns it off before destroying."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Skip the final snapshot when the cluster is destroyed (true only for throw-away stacks)."
  type        = bool
  default     = false
}

variable "db_backup_retention_days" {
  description = "Automated backup retention of the cluster, in days."
  type        = number
  default     = 7
}

variable "db_lock_timeout_ms" {
  description = "lock_timeout, set by the proxy's init query on every database connection (the one session setting the roles' defaults do not own; statement_timeout and idle_in_transaction_session_timeout are role defaults, shared/db/src/roles.rs)."
  type        = number
  default     = 2000
}

# ---------------------------------------------------------------- RDS Proxy

variable "proxy_max_connections_percent" {
  description = "Percentage of each instance's max_connections the proxy may open (MaxConnectionsPercent)."
  type        = number
  default     = 90

  validation {
    condition     = var.proxy_max_connections_percent >= 1 && var.proxy_max_connections_percent <= 100
    error_message = "proxy_max_connections_percent must be 1..100."
  }
}

variable "proxy_max_idle_connections_percent" {
  description = "Percentage of max_connections the proxy keeps idle (MaxIdleConnectionsPercent); must not exceed proxy_max_connections_percent."
  type        = number
  default     = 50
}

variable "proxy_borrow_timeout_seconds" {
  description = "How long a client waits for a pooled database connection (ConnectionBorrowTimeout). Must be below every function's timeout so the function can still answer (503 / partial batch failure)."
  type        = number
  default     = 4
}

variable "proxy_idle_client_timeout_seconds" {
  description = "Seconds after which the proxy closes an idle client connection (a frozen Lambda instance holds one)."
  type        = number
  default     = 900
}

# ---------------------------------------------------------------- functions

variable "lambda_artifacts_dir" {
  description = "Directory holding <binary>/bootstrap.zip as written by `cargo lambda build --release --arm64 --output-format zip`. Empty means ../target/lambda relative to infra/."
  type        = string
  default     = ""
}

variable "rust_log" {
  description = "RUST_LOG of every function."
  type        = string
  default     = "info"
}

variable "writer_acquire_timeout_ms" {
  description = "FLOODGATE_WRITER_ACQUIRE_TIMEOUT_MS: how long an invocation waits for a free slot in its own writer-lane pool (one invocation per instance, so a wait means a leaked connection). Part of the per-invocation wait sum (locals.tf)."
  type        = number
  default     = 1000
}

variable "reader_acquire_timeout_ms" {
  description = "FLOODGATE_READER_ACQUIRE_TIMEOUT_MS: the same for the reader lane (interactive path: short)."
  type        = number
  default     = 500
}

variable "writer_connect_timeout_ms" {
  description = "FLOODGATE_WRITER_CONNECT_TIMEOUT_MS: bound on opening one writer connection (IAM token, TLS, the proxy's login)."
  type        = number
  default     = 3000
}

variable "reader_connect_timeout_ms" {
  description = "FLOODGATE_READER_CONNECT_TIMEOUT_MS: the same for the reader lane."
  type        = number
  default     = 1000
}

variable "writer_operation_timeout_ms" {
  description = "FLOODGATE_WRITER_OPERATION_TIMEOUT_MS: client-side bound on one use of a writer connection (a batch's transaction), the proxy's borrow wait included."
  type        = number
  default     = 10000
}

variable "reader_operation_timeout_ms" {
  description = "FLOODGATE_READER_OPERATION_TIMEOUT_MS: the same for one reader round trip (a key, template or page look-up)."
  type        = number
  default     = 1000
}

variable "log_retention_days" {
  description = "Retention of the function, API access and re-notifier log groups, in days."
  type        = number
  default     = 365
}

# ---------------------------------------------------------------- API

variable "api_throttle_rate" {
  description = "Steady-state requests per second the HTTP API stage accepts (default_route_settings.throttling_rate_limit)."
  type        = number
  default     = 500
}

variable "api_throttle_burst" {
  description = "Burst of requests the HTTP API stage accepts (default_route_settings.throttling_burst_limit)."
  type        = number
  default     = 1000
}

# ---------------------------------------------------------------- API keys

variable "api_key_encryption_key" {
  description = "FLOODGATE_API_KEY_ENCRYPTION_KEY of ingest, status and admin: 32 random bytes, standard base64 (44 characters). Seals API key secrets in the database; make one with `floodgate-admin generate-encryption-key`. Kept in Secrets Manager (secrets.tf). Changing it makes every issued key unreadable."
  type        = string
  sensitive   = true
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9+/]{43}=$", var.api_key_encryption_key))
    error_message = "api_key_encryption_key must be 32 bytes in standard base64 (44 characters ending in '='): run `floodgate-admin generate-encryption-key`."
  }
}

# ---------------------------------------------------------------- SES

variable "ses_domain" {
  description = "Default sending domain, verified in SES (its DKIM CNAMEs are in the ses_dkim_records output); services' From addresses are in it unless they have a custom domain."
  type        = string
  default     = "notify.example.com"

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", var.ses_domain))
    error_message = "ses_domain must be a lower-case domain name such as notify.example.com."
  }
}

variable "ses_custom_domains" {
  description = "Custom sending domains of services that send from their own domain (GC Notify's custom sending domains): each becomes an SES domain identity (DKIM CNAMEs in ses_dkim_records), send may use any address in it, and admin's create-service accepts from_email addresses there."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for d in var.ses_custom_domains : can(regex("^([a-z0-9]([a-z0-9-]*[a-z0-9])?\\.)+[a-z]{2,}$", d))])
    error_message = "Every ses_custom_domains entry must be a lower-case domain name such as mail.example.org."
  }
}

variable "ses_account_rate" {
  description = "The SES account's maximum sending rate in emails per second (FLOODGATE_SES_ACCOUNT_RATE), shared by every send instance so together they never exceed it. 14 is a new production account's quota; set it to the rate SES shows for the account (Service Quotas: 'Sending rate') after a quota increase."
  type        = number
  default     = 14

  validation {
    condition     = var.ses_account_rate > 0
    error_message = "ses_account_rate must be a positive number of emails per second."
  }
}

# ---------------------------------------------------------------- maintenance

variable "maintain_every_minutes" {
  description = "How often EventBridge runs floodgate-admin maintain (partitions, retention, delivery sweeps). Notifications whose send message was lost are re-sent within about this plus 5 minutes."
  type        = number
  default     = 5

  validation {
    condition     = var.maintain_every_minutes >= 1 && var.maintain_every_minutes <= 60
    error_message = "maintain_every_minutes must be between 1 and 60."
  }
}

variable "retention_days" {
  description = "Days of notifications kept; maintenance drops whole daily partitions older than this."
  type        = number
  default     = 14
}

# ---------------------------------------------------------------- alarms

variable "alarm_emails" {
  description = "Email addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "alarm_renotify_minutes" {
  description = "While an alarm stays in ALARM, it is re-published to the alarm topic every this many minutes."
  type        = number
  default     = 15

  validation {
    condition     = var.alarm_renotify_minutes >= 1
    error_message = "alarm_renotify_minutes must be at least 1."
  }
}

variable "queue_age_alarm_seconds" {
  description = "ApproximateAgeOfOldestMessage (seconds) above which a queue's age alarm fires, per queue (keys of knobs.json event_source_mappings)."
  type        = map(number)
  default = {
    "intake-priority" = 60
    "intake-normal"   = 300
    "intake-bulk"     = 1800
    "send-priority"   = 60
    "send-normal"     = 300
    "send-bulk"       = 1800
    "receipts"        = 600
    # Deferred callbacks wait out retry_delay_seconds (300) and a suspended endpoint
    # suspend_seconds (600) before they run, so younger messages are normal there.
    "callbacks" = 1800
  }
}

variable "proxy_borrow_latency_alarm_us" {
  description = "Average DatabaseConnectionsBorrowLatency (microseconds) above which the proxy alarm fires."
  type        = number
  default     = 100000
}

variable "api_5xx_alarm_threshold" {
  description = "Number of 5xx answers per minute from the HTTP API above which the alarm fires."
  type        = number
  default     = 5
}
