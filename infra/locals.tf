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

  # max_connections of one Aurora PostgreSQL instance per class: the default parameter
  # group's LEAST(DBInstanceClassMemory/9531392, 5000), as AWS tabulates it in "Maximum
  # connections to an Aurora PostgreSQL DB instance". The r6i/r7g/r7i/r8g sizes have the
  # memory of the r6g size of the same name. Other classes (db.serverless, ...) need
  # var.db_instance_max_connections.
  aurora_pg_max_connections = merge(
    {
      "db.t3.medium"  = 420
      "db.t3.large"   = 844
      "db.t4g.medium" = 405
      "db.t4g.large"  = 844
      "db.r4.large"   = 1600
      "db.r4.xlarge"  = 3200
      "db.r5.large"   = 1600
      "db.r5.xlarge"  = 3300
      "db.x2g.large"  = 3479
    },
    merge([
      for family in ["r6g", "r6i", "r7g", "r7i", "r8g"] : {
        "db.${family}.large"  = 1722
        "db.${family}.xlarge" = 3479
      }
    ]...),
    { for class in local.aurora_pg_capped_classes : class => local.aurora_pg_connection_cap },
  )
  # From 2xlarge up, memory/9531392 is above the LEAST(..., 5000) cap.
  aurora_pg_connection_cap = 5000
  aurora_pg_capped_classes = flatten([
    for family in ["r4", "r5", "r6g", "r6i", "r7g", "r7i", "r8g", "x2g"] : [
      for size in ["2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge"] : "db.${family}.${size}"
    ]
  ])
  db_class_max_connections = lookup(local.aurora_pg_max_connections, var.db_instance_class, null)
  # The override may only lower the class's figure: the cluster parameter group (database.tf)
  # does not raise max_connections.
  db_instance_max_connections = coalesce(var.db_instance_max_connections, local.db_class_max_connections, 0)

  # What the proxy may open to ONE instance. The writer lane only reaches the writer; the
  # reader lane is checked against a single reader too, so the budget still fits when only
  # one reader is left.
  proxy_connection_limit = floor(local.db_instance_max_connections * var.proxy_max_connections_percent / 100)

  # ---------------------------------------------------------------- waits in one invocation
  # Every wait the code bounds, in milliseconds, and how they stack in the longest request
  # path of each function: the lane's acquire wait (a pool slot in the instance), one
  # connect (IAM token, TLS, the proxy's login), then one operation timeout per database
  # round trip in sequence (the proxy's borrow wait happens inside one), then the SQS calls.
  # Their sum must leave request_headroom_ms for the handler's own work inside the function
  # timeout, and for API functions inside API Gateway's 30 s integration timeout too; a
  # function cut off by its timeout answers nothing (ingest: maybe after enqueueing).
  #
  # The SQS figures are constants of the code: SQS_ATTEMPT_TIMEOUT (shared/aws/src/queue.rs)
  # and ingest's RetryPolicy::default() (functions/ingest/src/lib.rs); test_guards.py reads
  # them from the source, so a change there that breaks the sum fails the tests.
  sqs_attempt_timeout_ms  = 1500
  ingest_enqueue_attempts = 3
  ingest_first_backoff_ms = 250
  # Attempts, plus the doubling back-off between them (250 + 500 ms for 3 attempts).
  ingest_enqueue_ms = local.ingest_enqueue_attempts * local.sqs_attempt_timeout_ms + local.ingest_first_backoff_ms * (pow(2, local.ingest_enqueue_attempts - 1) - 1)

  # ingest's whole budget for the limit store in one request (LIMIT_STORE_BUDGET,
  # functions/ingest/src/door.rs): its calls and a repeat's wait for the first request.
  limit_store_budget_ms = 250

  request_headroom_ms        = 1000
  api_integration_timeout_ms = 30000
  interactive_functions      = ["ingest", "status"] # the targets of api.tf's routes
  lane_waits = {
    writer = { acquire = var.writer_acquire_timeout_ms, connect = var.writer_connect_timeout_ms, operation = var.writer_operation_timeout_ms }
    reader = { acquire = var.reader_acquire_timeout_ms, connect = var.reader_connect_timeout_ms, operation = var.reader_operation_timeout_ms }
  }
  # The longest sequence of database round trips and of SQS waits in one invocation:
  # ingest on a cold cache reads the service with its keys, then the template, then enqueues
  # with retries; status authenticates, then reads a page or a row and its template; a
  # consumer runs one transaction per batch and one SendMessageBatch attempt per call it
  # makes (forwarding or deferring the batch); admin's commands are one operation at a time.
  request_shape = {
    ingest    = { lane = "reader", db_round_trips = 2, sqs_ms = local.ingest_enqueue_ms + local.limit_store_budget_ms }
    status    = { lane = "reader", db_round_trips = 3, sqs_ms = 0 }
    persist   = { lane = "writer", db_round_trips = 1, sqs_ms = local.sqs_attempt_timeout_ms }
    send      = { lane = "writer", db_round_trips = 2, sqs_ms = local.sqs_attempt_timeout_ms }
    receipts  = { lane = "writer", db_round_trips = 1, sqs_ms = local.sqs_attempt_timeout_ms }
    admin     = { lane = "writer", db_round_trips = 1, sqs_ms = local.sqs_attempt_timeout_ms }
    callbacks = { lane = "", db_round_trips = 0, sqs_ms = local.sqs_attempt_timeout_ms }
  }
  request_waits_ms = {
    for fn, r in local.request_shape : fn => (
      r.lane == "" ? r.sqs_ms : (
        local.lane_waits[r.lane].acquire + local.lane_waits[r.lane].connect
        + r.db_round_trips * local.lane_waits[r.lane].operation + r.sqs_ms
      )
    ) + local.request_headroom_ms
  }
  request_bound_ms = {
    for fn, f in local.functions : fn => (
      contains(local.interactive_functions, fn) ? min(f.timeout_seconds * 1000, local.api_integration_timeout_ms) : f.timeout_seconds * 1000
    )
  }
  requests_too_slow = [
    for fn, ms in local.request_waits_ms : "${fn} ${ms} ms > ${local.request_bound_ms[fn]} ms" if ms > local.request_bound_ms[fn]
  ]

  # Shortest timeout of a function that talks to the database: the proxy's borrow timeout
  # must end before it does.
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
    request_waits_ms       = local.request_waits_ms
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
      condition     = local.db_instance_max_connections > 0
      error_message = "No max_connections is known for db_instance_class ${var.db_instance_class}: set db_instance_max_connections (or add the class to local.aurora_pg_max_connections)."
    }
    precondition {
      condition     = local.db_class_max_connections == null || local.db_instance_max_connections <= coalesce(local.db_class_max_connections, 0)
      error_message = "db_instance_max_connections (${local.db_instance_max_connections}) exceeds what a ${var.db_instance_class} instance allows (${coalesce(local.db_class_max_connections, 0)})."
    }
    precondition {
      condition     = local.knobs.connection_budget.writer <= local.proxy_connection_limit && local.knobs.connection_budget.reader <= local.proxy_connection_limit
      error_message = "connection_budget (writer ${local.knobs.connection_budget.writer}, reader ${local.knobs.connection_budget.reader}) does not fit what the proxy may open per instance (${var.proxy_max_connections_percent}% of ${local.db_instance_max_connections} for ${var.db_instance_class} = ${local.proxy_connection_limit})."
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
      condition     = length(local.requests_too_slow) == 0
      error_message = "The waits that can stack in one invocation (acquire + connect + round trips x operation timeout + SQS attempts + ${local.request_headroom_ms} ms headroom) exceed the function's timeout (API functions: also API Gateway's 30 s): ${join("; ", local.requests_too_slow)}."
    }
    precondition {
      condition     = var.proxy_borrow_timeout_seconds < local.min_db_function_timeout
      error_message = "proxy_borrow_timeout_seconds must be below the shortest database-using function timeout (${local.min_db_function_timeout} s)."
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
