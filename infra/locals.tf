# knobs.json is the single source of truth for every knob the local stack shares with AWS
# (floodgate-core embeds the same file). Nothing below repeats a knob value as a literal:
# infra/tests/test_terraform.py fails if an event source mapping, queue or function stops
# reading its numbers from local.knobs.

locals {
  knobs = jsondecode(file("${path.module}/knobs.json"))

  functions = local.knobs.functions             # name -> timeout, memory, lane sizes, reservation
  mappings  = local.knobs.event_source_mappings # queue -> function, batch, window, concurrency
  queues    = toset(keys(local.knobs.event_source_mappings))

  az_names = length(var.availability_zones) > 0 ? var.availability_zones : slice([for letter in ["a", "b", "c", "d"] : "${var.region}${letter}"], 0, var.az_count)

  artifacts_dir = var.lambda_artifacts_dir != "" ? var.lambda_artifacts_dir : abspath("${path.module}/../target/lambda")

  # Queues each function consumes (through its event source mappings) and produces to.
  # ingest enqueues on the intake queues, persist forwards to the send queues, admin's
  # maintenance puts lost notifications back on the send queues, send and receipts put the
  # callbacks of final statuses on the callbacks queue; and every consumer also
  # produces to the queues it consumes: work it cannot do yet (the database unavailable, the
  # SES budget spent) is deferred by re-enqueueing it there with a delay.
  fn_consumes = {
    for fn in keys(local.functions) : fn => sort([for q, m in local.mappings : q if m.function == fn])
  }
  send_queues = sort([for q in keys(local.mappings) : q if startswith(q, "send-")])
  fn_produces = {
    for fn in keys(local.functions) : fn => sort(distinct(concat(
      local.fn_consumes[fn],
      fn == "ingest" ? sort([for q in keys(local.mappings) : q if startswith(q, "intake-")]) : [],
      contains(["persist", "admin"], fn) ? local.send_queues : [],
      contains(["send", "receipts"], fn) ? ["callbacks"] : [],
    )))
  }

  # Functions that run outside the VPC (functions.tf explains why).
  outside_vpc_functions = ["callbacks"]
  fn_queues             = { for fn in keys(local.functions) : fn => distinct(concat(local.fn_consumes[fn], local.fn_produces[fn])) }

  # ---------------------------------------------------------------- connection budget
  # A Lambda instance runs one invocation at a time, so a function holds at most
  # (its max concurrency) x (its lane size) connections per lane. A queue-driven function's max
  # concurrency is the sum of maximum_concurrency over its mappings; an API/admin function's
  # is its reserved concurrency.
  fn_max_concurrency = {
    for fn, f in local.functions : fn => (
      length(local.fn_consumes[fn]) > 0
      ? sum(concat([0], [for q in local.fn_consumes[fn] : local.mappings[q].maximum_concurrency]))
      : f.reserved_concurrency
    )
  }
  # Reserved concurrency on AWS: the knob when it is set (> 0); otherwise (queue-driven
  # functions, knob 0 = "bounded by the mappings") the sum of the mappings' maximum concurrency,
  # so that even a manual invoke cannot exceed the connection budget. 0 is never passed to
  # AWS: reserved_concurrent_executions = 0 would disable the function.
  fn_reserved_concurrency = {
    for fn, f in local.functions : fn => (f.reserved_concurrency > 0 ? f.reserved_concurrency : local.fn_max_concurrency[fn])
  }

  writer_connections = sum([for fn, f in local.functions : local.fn_max_concurrency[fn] * f.writer_lane_size])
  reader_connections = sum([for fn, f in local.functions : local.fn_max_concurrency[fn] * f.reader_lane_size])

  # What the proxy may open to ONE instance. The writer lane only reaches the writer; the
  # reader lane is checked against a single reader too, so the budget still fits when only
  # one reader is left.
  proxy_connection_limit = floor(var.db_instance_max_connections * var.proxy_max_connections_percent / 100)

  # Shortest timeout of a function that talks to the database: the proxy borrow timeout, the
  # statement timeout and the acquire timeouts must all end before it does.
  min_db_function_timeout = min([for fn, f in local.functions : f.timeout_seconds if f.writer_lane_size + f.reader_lane_size > 0]...)

  # ---------------------------------------------------------------- names
  db_users = { for fn in keys(local.functions) : fn => "floodgate_${fn}" }
  fn_names = { for fn in keys(local.functions) : fn => "${var.name_prefix}-${fn}" }

  # Proxy resource id (prx-...) for rds-db:connect ARNs: the last element of the proxy ARN.
  proxy_resource_id = element(split(":", aws_db_proxy.this.arn), 6)

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
}

# Plan-time guards. A failed precondition stops `terraform plan`, so a knobs.json edit that
# breaks an AWS limit or the connection budget never reaches AWS.
resource "terraform_data" "knob_guards" {
  input = {
    writer_connections     = local.writer_connections
    reader_connections     = local.reader_connections
    writer_budget          = local.knobs.connection_budget.writer
    reader_budget          = local.knobs.connection_budget.reader
    proxy_connection_limit = local.proxy_connection_limit
  }

  lifecycle {
    precondition {
      condition     = local.writer_connections <= local.knobs.connection_budget.writer
      error_message = "Writer connections (sum of max concurrency x writer_lane_size = ${local.writer_connections}) exceed connection_budget.writer (${local.knobs.connection_budget.writer})."
    }
    precondition {
      condition     = local.reader_connections <= local.knobs.connection_budget.reader
      error_message = "Reader connections (sum of max concurrency x reader_lane_size = ${local.reader_connections}) exceed connection_budget.reader (${local.knobs.connection_budget.reader})."
    }
    precondition {
      condition     = local.knobs.connection_budget.writer <= local.proxy_connection_limit && local.knobs.connection_budget.reader <= local.proxy_connection_limit
      error_message = "connection_budget (writer ${local.knobs.connection_budget.writer}, reader ${local.knobs.connection_budget.reader}) does not fit what the proxy may open per instance (${var.proxy_max_connections_percent}% of ${var.db_instance_max_connections} = ${local.proxy_connection_limit})."
    }
    precondition {
      condition = alltrue([
        for q, m in local.mappings :
        m.batch_size >= 1 && m.batch_size <= 10000
        && m.maximum_batching_window_seconds >= 0 && m.maximum_batching_window_seconds <= 300
        && (m.batch_size <= 10 || m.maximum_batching_window_seconds >= 1)
        && m.maximum_concurrency >= 2 && m.maximum_concurrency <= 1000
        && contains(keys(local.functions), m.function)
      ])
      error_message = "An event source mapping in knobs.json breaks an SQS/Lambda limit (batch 1..10000, window 0..300 s, batch > 10 needs window >= 1 s, maximum concurrency 2..1000) or names an unknown function."
    }
    precondition {
      condition     = local.knobs.sqs.visibility_timeout_multiplier >= 6 && alltrue([for q, m in local.mappings : local.knobs.sqs.visibility_timeout_multiplier * local.functions[m.function].timeout_seconds <= 43200])
      error_message = "visibility_timeout_multiplier must be >= 6 (AWS guidance for SQS event sources) and multiplier x timeout must stay <= 43200 s."
    }
    precondition {
      condition     = var.proxy_borrow_timeout_seconds < local.min_db_function_timeout && var.db_statement_timeout_ms < local.min_db_function_timeout * 1000 && var.writer_acquire_timeout_ms < local.min_db_function_timeout * 1000 && var.reader_acquire_timeout_ms < local.min_db_function_timeout * 1000
      error_message = "The proxy borrow timeout, statement timeout and acquire timeouts must all be below the shortest database-using function timeout (${local.min_db_function_timeout} s)."
    }
    precondition {
      condition     = var.proxy_max_idle_connections_percent <= var.proxy_max_connections_percent
      error_message = "proxy_max_idle_connections_percent must not exceed proxy_max_connections_percent."
    }
    precondition {
      condition     = alltrue([for q in local.queues : contains(keys(var.queue_age_alarm_seconds), q)])
      error_message = "queue_age_alarm_seconds needs a threshold for every queue in knobs.json."
    }
  }
}
