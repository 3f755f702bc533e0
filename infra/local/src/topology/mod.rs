//! The Floodgate topology in one process, on the local services: the queue-driven
//! functions (`persist`, `send`, `receipts`) behind event source mapping emulation, each
//! emulated instance with its own database lanes (as on Lambda), and the mail adapter.
//! Queues default to [`EmbeddedQueue`] and mail to [`SimulatorMailer`]; an AWS endpoint
//! (moto) switches both to the AWS adapters for small runs.

pub mod esm;
pub mod front;
pub mod run;

use crate::services::LocalStack;
use crate::topology::esm::{InstanceFactory, Mapping, MappingConfig, SqsHandler};
use anyhow::{Context, Result};
use aws_lambda_events::event::sqs::SqsEvent;
use floodgate_aws::mail::{Mailer, SesMailer};
use floodgate_aws::{DeferPolicy, DynamoLimitStore, LimitStore, Queue, SqsQueue};
use floodgate_core::{Knobs, QueueName};
use floodgate_db::{Lane, LaneConfig, LaneKind, ReaderLane, WriterLane};
use floodgate_emulators::{EmbeddedLimitStore, EmbeddedQueue, SimulatorMailer};
use floodgate_persist::Persist;
use floodgate_receipts::Receipts;
use floodgate_send::{SendConfig, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every lane every emulated instance opened, so the report can count the connections
/// the functions hold (the proxy's clients) against the budget.
#[derive(Clone, Default)]
pub struct LaneRegistry(Arc<Mutex<Vec<Lane>>>);

impl LaneRegistry {
    pub fn register(&self, lane: &Lane) {
        if let Ok(mut v) = self.0.lock() {
            v.push(lane.clone());
        }
    }

    /// The counters of `function`'s lanes of `kind`, added up (the wait's maximum is the
    /// largest of them).
    pub fn counters_of(
        &self,
        function: &str,
        kind: LaneKind,
    ) -> floodgate_db::LaneCountersSnapshot {
        let name = format!("floodgate-{function}");
        let mut total = floodgate_db::LaneCountersSnapshot::default();
        if let Ok(v) = self.0.lock() {
            for l in v
                .iter()
                .filter(|l| l.config().kind == kind && l.config().application_name == name)
            {
                let c = l.counters().snapshot();
                total.acquires += c.acquires;
                total.acquire_wait_micros += c.acquire_wait_micros;
                total.acquire_wait_max_micros =
                    total.acquire_wait_max_micros.max(c.acquire_wait_max_micros);
                total.acquire_timeouts += c.acquire_timeouts;
                for (t, n) in total
                    .acquire_wait_buckets
                    .iter_mut()
                    .zip(c.acquire_wait_buckets)
                {
                    *t += n;
                }
            }
        }
        total
    }

    /// Connections open right now across every lane.
    pub fn open_connections(&self) -> u64 {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .map(|l| l.counters().snapshot().open_connections())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The admin function's writer lane on `stack`, after `migrate` ran through it: what the
/// local commands do before seeding a service.
pub async fn migrated_admin_lane(stack: &LocalStack) -> Result<WriterLane> {
    let admin = WriterLane::open(LaneConfig::new(
        LaneKind::Writer,
        stack.writer_url(),
        "floodgate-admin",
    ))
    .await?;
    floodgate_admin::Admin::new(admin.clone(), None, None, None)
        .execute(&floodgate_admin::AdminCommand::Migrate)
        .await?;
    Ok(admin)
}

/// The configuration of a lane to `url` for an emulated instance of `function`, sized from
/// the knobs, with every timeout divided by `time_scale`.
fn instance_lane_config(
    url: String,
    knobs: &Knobs,
    function: &str,
    kind: LaneKind,
    time_scale: f64,
) -> Result<LaneConfig> {
    let f = knobs
        .functions
        .get(function)
        .with_context(|| format!("no knobs for function {function}"))?;
    let size = match kind {
        LaneKind::Writer => f.writer_lane_size,
        LaneKind::Reader => f.reader_lane_size,
    };
    let mut config = LaneConfig::new(kind, url, &format!("floodgate-{function}"));
    config.max_size = size.max(1) as usize;
    if time_scale != 1.0 {
        let k = time_scale.max(1e-3);
        config.acquire_timeout = config.acquire_timeout.div_f64(k);
        config.connect_timeout = config.connect_timeout.div_f64(k);
        config.operation_timeout = config.operation_timeout.div_f64(k);
    }
    Ok(config)
}

/// The writer lane of an emulated instance of `function`, registered for the connection count.
pub async fn instance_writer(
    url: String,
    knobs: &Knobs,
    registry: &LaneRegistry,
    function: &str,
    time_scale: f64,
) -> Result<WriterLane> {
    let config = instance_lane_config(url, knobs, function, LaneKind::Writer, time_scale)?;
    let lane = WriterLane::open(config).await?;
    registry.register(&lane);
    Ok(lane)
}

/// The reader lane of an emulated instance of `function`, registered for the connection count.
pub async fn instance_reader(
    url: String,
    knobs: &Knobs,
    registry: &LaneRegistry,
    function: &str,
) -> Result<ReaderLane> {
    let config = instance_lane_config(url, knobs, function, LaneKind::Reader, 1.0)?;
    let lane = ReaderLane::open(config).await?;
    registry.register(&lane);
    Ok(lane)
}

/// How `send` instances share the SES account's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BudgetRule {
    /// One budget in the limit store, leased window by window (what AWS runs).
    Shared,
    /// Each instance at the account's rate ÷ the most instances that can run at once.
    Split,
}

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Use SQS and SES at this endpoint (moto) instead of the embedded adapters.
    pub aws_endpoint: Option<String>,
    /// The SES account's sending rate (emails/s) shared by every `send` instance.
    pub ses_account_rate: f64,
    /// How `send` instances share that rate: leases of one budget in the limit store (as
    /// shipped), or each at an even share (the rule before the budget was shared).
    pub budget: BudgetRule,
    /// Fraction of SES calls the simulator throttles.
    pub throttle_fraction: f64,
    /// Deliver every n-th queue message twice (0: never). Embedded queues only.
    pub duplicate_every: u64,
    /// Override every queue's visibility timeout (embedded queues), e.g. to let tests
    /// see retries quickly; `None` keeps 6 × the consumer's timeout.
    pub visibility_timeout: Option<Duration>,
    /// The verified sender identity to create at the endpoint (moto) for `SesMailer`.
    pub sender_identity: Option<String>,
    /// Runs the pipeline this many times faster than AWS would: every interval from the
    /// knobs (function timeouts, batching windows, visibility timeouts, deferral delays,
    /// lane timeouts) is divided by it. Counts (batch sizes, concurrency, maxReceiveCount)
    /// stay as shipped. 1 = real time.
    pub time_scale: f64,
    /// How often the release of scheduled notifications runs (every minute on AWS). Its
    /// period does not set how punctual a scheduled send is (each one waits on the queue
    /// for the delay left), only how soon a row stored more than 15 minutes before its
    /// time is picked once inside that window: locally a few seconds.
    pub release_every: Duration,
    /// The key that sealed the services' callback tokens (the API key encryption key);
    /// `None`: a key of the pipeline's own (callbacks then cannot open other keys' tokens).
    pub secrets: Option<Arc<floodgate_core::auth::SecretBox>>,
    /// Where the queue-driven functions run (their pollers and invocations): the current
    /// runtime when `None`, or one at a lower CPU priority that models their being on other
    /// machines than the API functions.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            aws_endpoint: None,
            ses_account_rate: 1_000.0,
            budget: BudgetRule::Shared,
            throttle_fraction: 0.0,
            duplicate_every: 0,
            visibility_timeout: None,
            sender_identity: None,
            time_scale: 1.0,
            release_every: Duration::from_secs(2),
            secrets: None,
            runtime: None,
        }
    }
}

/// The nice value of the pipeline's side when the demo models separate compute: a tenth
/// of the CPU share of the API side when both want it (the kernel's weights for nice 10
/// and 0 are 110 and 1024).
pub const PIPELINE_NICE: i32 = 10;

/// A runtime of its own whose threads run at a lower CPU priority; shut down without
/// blocking when dropped (a runtime dropped inside another one must not block).
pub struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl BackgroundRuntime {
    /// `None` inside for nice 0: the caller's runtime serves.
    pub fn at_nice(nice: i32) -> Result<Self> {
        if nice == 0 {
            return Ok(BackgroundRuntime(None));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pipeline")
            .enable_all()
            .on_thread_start(move || {
                // SAFETY: setpriority on the calling thread; Linux threads each have their
                // own nice value, and raising it needs no privilege.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                }
            })
            .build()?;
        Ok(BackgroundRuntime(Some(rt)))
    }

    pub fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The queue-driven half of the topology, running.
pub struct Pipeline {
    pub knobs: Arc<Knobs>,
    pub queue: Arc<dyn Queue>,
    pub embedded: Option<Arc<EmbeddedQueue>>,
    pub simulator: Option<SimulatorMailer>,
    pub mailer: Arc<dyn Mailer>,
    /// The limit store every `ingest` instance shares.
    pub limit_store: Arc<dyn LimitStore>,
    pub lanes: LaneRegistry,
    pub mappings: Vec<Mapping>,
    /// The periodic release of scheduled notifications (EventBridge's schedule on AWS).
    release: Option<tokio::task::JoinHandle<()>>,
}

/// The AWS SDK configuration for a local endpoint (moto), with dummy credentials.
pub async fn local_sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "local",
            "local",
            None,
            None,
            "floodgate-local",
        ))
        .load()
        .await
}

impl Pipeline {
    /// Creates the queues and the mailer, and starts one mapping per queue.
    pub async fn start(stack: &LocalStack, opts: &PipelineOptions) -> Result<Pipeline> {
        let knobs = Arc::new(Knobs::embedded());
        let runtime = opts
            .runtime
            .clone()
            .unwrap_or_else(tokio::runtime::Handle::current);
        if let Some(v) = opts.visibility_timeout {
            // A message must stay invisible for as long as its invocation may run, or a
            // second consumer takes it mid-flight and deletes it while the first one is
            // about to report it failed (AWS refuses such a mapping for the same reason).
            let longest = ["persist", "send", "receipts"]
                .iter()
                .filter_map(|f| knobs.functions.get(*f))
                .map(|f| f.timeout_seconds)
                .max()
                .unwrap_or(30);
            let longest = Duration::from_secs(u64::from(longest)).div_f64(opts.scale());
            anyhow::ensure!(
                v >= longest,
                "visibility timeout {v:?} is shorter than the consumers' {longest:?} timeout"
            );
        }
        let Adapters {
            queue,
            embedded,
            mailer,
            simulator,
            limit_store,
        } = adapters(opts, &knobs).await?;
        let lanes = LaneRegistry::default();
        let mut pipeline = Pipeline {
            knobs: knobs.clone(),
            queue: queue.clone(),
            embedded,
            simulator,
            mailer: mailer.clone(),
            limit_store,
            lanes: lanes.clone(),
            mappings: Vec::new(),
            release: None,
        };
        let send_rate = opts.ses_account_rate / f64::from(knobs.max_concurrency("send").max(1));
        let secrets = match &opts.secrets {
            Some(s) => s.clone(),
            None => Arc::new(
                floodgate_core::auth::SecretBox::from_base64(
                    &floodgate_core::auth::generate_encryption_key(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
        };
        let env = InstanceEnv {
            writer_url: stack.writer_url(),
            knobs: knobs.clone(),
            lanes: lanes.clone(),
            queue: queue.clone(),
            time_scale: opts.scale(),
        };
        for q in QueueName::ALL {
            let config = MappingConfig::from_knobs(&knobs, q)?.scaled(opts.scale());
            let factory = match q {
                QueueName::Intake(_) => persist_factory(env.clone()),
                QueueName::Send(_) => send_factory(
                    env.clone(),
                    mailer.clone(),
                    SendPacing {
                        account_rate: opts.ses_account_rate,
                        share: send_rate,
                        shared: (opts.budget == BudgetRule::Shared)
                            .then(|| pipeline.limit_store.clone()),
                    },
                    config.function_timeout,
                ),
                QueueName::Receipts => receipts_factory(env.clone()),
                QueueName::Callbacks => callbacks_factory(env.clone(), secrets.clone()),
            };
            pipeline
                .mappings
                .push(Mapping::start_on(&runtime, queue.clone(), config, factory).await?);
        }
        pipeline.release = Some(runtime.spawn(release_scheduled(
            env.writer("admin").await?,
            queue.clone(),
            opts.release_every,
        )));
        Ok(pipeline)
    }

    /// Stops every mapping after its in-flight invocations.
    pub async fn stop(mut self) {
        if let Some(r) = self.release.take() {
            r.abort();
        }
        for m in self.mappings.drain(..) {
            m.stop().await;
        }
    }
}

impl PipelineOptions {
    fn scale(&self) -> f64 {
        if self.time_scale.is_finite() && self.time_scale > 0.0 {
            self.time_scale
        } else {
            1.0
        }
    }
}

/// Runs the admin function's `release-scheduled`, as EventBridge does on AWS, every
/// `period` until aborted. A failed run is logged; the next one does the same work.
async fn release_scheduled(writer: WriterLane, queue: Arc<dyn Queue>, period: Duration) {
    let admin = floodgate_admin::Admin::new(writer, None, None, Some(queue));
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = admin
            .execute(&floodgate_admin::AdminCommand::ReleaseScheduled)
            .await
        {
            tracing::warn!(error = %e, "release of scheduled notifications failed");
        }
    }
}

/// What a factory needs from the stack, cloned into each instance.
#[derive(Clone)]
struct InstanceEnv {
    writer_url: String,
    knobs: Arc<Knobs>,
    lanes: LaneRegistry,
    queue: Arc<dyn Queue>,
    time_scale: f64,
}

impl InstanceEnv {
    async fn writer(&self, function: &str) -> Result<WriterLane> {
        instance_writer(
            self.writer_url.clone(),
            &self.knobs,
            &self.lanes,
            function,
            self.time_scale,
        )
        .await
    }

    fn defer_policy(&self) -> DeferPolicy {
        DeferPolicy::from_knobs(&self.knobs).scaled(self.time_scale)
    }
}

/// An emulated instance's handler from a function built once per instance.
fn handler<F, Fut>(f: F) -> SqsHandler
where
    F: Fn(SqsEvent) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = Result<aws_lambda_events::event::sqs::SqsBatchResponse, String>,
        > + Send
        + 'static,
{
    Arc::new(move |event: SqsEvent| Box::pin(f(event)))
}

fn persist_factory(env: InstanceEnv) -> InstanceFactory {
    Arc::new(move |_n| {
        let env = env.clone();
        Box::pin(async move {
            let persist = Arc::new(
                Persist::new(
                    env.writer("persist").await?,
                    env.queue.clone(),
                    env.knobs.clone(),
                )
                .with_defer_policy(env.defer_policy()),
            );
            Ok(handler(move |event: SqsEvent| {
                let persist = persist.clone();
                async move {
                    persist
                        .handle(event)
                        .await
                        .map(|(resp, _)| resp)
                        .map_err(|e| e.to_string())
                }
            }))
        })
    })
}

/// How the emulated `send` instances pace their SES calls.
#[derive(Clone)]
struct SendPacing {
    account_rate: f64,
    share: f64,
    /// The limit store holding the shared budget; `None`: each paces at `share`.
    shared: Option<Arc<dyn LimitStore>>,
}

fn send_factory(
    env: InstanceEnv,
    mailer: Arc<dyn Mailer>,
    pacing: SendPacing,
    function_timeout: Duration,
) -> InstanceFactory {
    Arc::new(move |_n| {
        let (env, mailer, pacing) = (env.clone(), mailer.clone(), pacing.clone());
        Box::pin(async move {
            let config = SendConfig {
                account_rate: pacing.account_rate,
                rate_per_second: pacing.share,
                ..SendConfig::from_lookup(&env.knobs, |_| None)?
            };
            let mut sender = Sender::new(
                env.writer("send").await?,
                mailer,
                env.queue.clone(),
                env.knobs.clone(),
                config,
            )
            .with_defer_policy(env.defer_policy());
            if let Some(store) = pacing.shared {
                sender = sender.with_shared_budget(store);
            }
            let send = Arc::new(sender);
            Ok(handler(move |event: SqsEvent| {
                let send = send.clone();
                async move {
                    let deadline = send.sending_deadline(Instant::now() + function_timeout);
                    send.handle(event, deadline)
                        .await
                        .map(|(resp, _)| resp)
                        .map_err(|e| e.to_string())
                }
            }))
        })
    })
}

fn receipts_factory(env: InstanceEnv) -> InstanceFactory {
    Arc::new(move |_n| {
        let env = env.clone();
        Box::pin(async move {
            let receipts = Arc::new(
                Receipts::new(env.writer("receipts").await?, env.queue.clone(), &env.knobs)
                    .with_defer_policy(env.defer_policy()),
            );
            Ok(handler(move |event: SqsEvent| {
                let receipts = receipts.clone();
                async move {
                    receipts
                        .handle(event)
                        .await
                        .map(|(resp, _)| resp)
                        .map_err(|e| e.to_string())
                }
            }))
        })
    })
}

fn callbacks_factory(
    env: InstanceEnv,
    secrets: Arc<floodgate_core::auth::SecretBox>,
) -> InstanceFactory {
    Arc::new(move |_n| {
        let (env, secrets) = (env.clone(), secrets.clone());
        Box::pin(async move {
            // The local receiver is plain http on 127.0.0.1.
            let callbacks = Arc::new(
                floodgate_callbacks::Callbacks::new(env.queue.clone(), secrets, &env.knobs, true)?
                    .with_time_scale(env.time_scale),
            );
            Ok(handler(move |event: SqsEvent| {
                let callbacks = callbacks.clone();
                async move {
                    callbacks
                        .handle(event)
                        .await
                        .map(|(resp, _)| resp)
                        .map_err(|e| e.to_string())
                }
            }))
        })
    })
}

/// The queue, mail and limit store adapters: embedded by default, AWS's at an endpoint
/// (moto).
struct Adapters {
    queue: Arc<dyn Queue>,
    embedded: Option<Arc<EmbeddedQueue>>,
    mailer: Arc<dyn Mailer>,
    simulator: Option<SimulatorMailer>,
    limit_store: Arc<dyn LimitStore>,
}

async fn adapters(opts: &PipelineOptions, knobs: &Knobs) -> Result<Adapters> {
    Ok(match &opts.aws_endpoint {
        None => {
            let q = Arc::new(match opts.visibility_timeout {
                Some(v) => EmbeddedQueue::uniform(v, knobs.sqs.max_receive_count),
                None => EmbeddedQueue::scaled(knobs, opts.scale()),
            });
            q.set_duplicate_every(opts.duplicate_every);
            let queue: Arc<dyn Queue> = q.clone();
            let sim = SimulatorMailer::new(queue.clone());
            sim.set_throttle_fraction(opts.throttle_fraction);
            // SES enforces the account's rate whatever the senders believe.
            sim.set_account_rate(opts.ses_account_rate);
            Adapters {
                queue,
                embedded: Some(q),
                mailer: Arc::new(sim.clone()),
                simulator: Some(sim),
                limit_store: Arc::new(EmbeddedLimitStore::new()),
            }
        }
        Some(endpoint) => {
            let sdk = local_sdk(endpoint).await;
            let visibility = opts.visibility_timeout.unwrap_or(
                Duration::from_secs(u64::from(knobs.visibility_timeout_seconds("send")))
                    .div_f64(opts.scale()),
            );
            let prefix = format!("floodgate-{}", uuid::Uuid::now_v7().simple());
            let sqs = SqsQueue::create_all(
                SqsQueue::client(&sdk),
                &prefix,
                visibility,
                knobs.sqs.max_receive_count,
            )
            .await
            .context("creating queues at the AWS endpoint")?;
            let ses = SesMailer::from_sdk(&sdk, None);
            if let Some(identity) = &opts.sender_identity {
                ses.client()
                    .create_email_identity()
                    .email_identity(identity)
                    .send()
                    .await
                    .context("creating the sender identity at the AWS endpoint")?;
            }
            let dynamodb = DynamoLimitStore::client(&sdk);
            let table = format!("{prefix}-limits");
            DynamoLimitStore::create_table(&dynamodb, &table)
                .await
                .context("creating the limits table at the AWS endpoint")?;
            Adapters {
                queue: Arc::new(sqs),
                embedded: None,
                mailer: Arc::new(ses),
                simulator: None,
                limit_store: Arc::new(DynamoLimitStore::new(dynamodb, table)),
            }
        }
    })
}

/// The API half: pools of `ingest` and `status` instances (as many as their reserved
/// concurrency), each with its own reader lane and cache, behind the local HTTP front.
pub struct ApiSide {
    pub addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ApiSide {
    pub async fn start(
        stack: &LocalStack,
        knobs: &Knobs,
        lanes: &LaneRegistry,
        queue: Arc<dyn Queue>,
        limit_store: Arc<dyn LimitStore>,
        secrets: Arc<floodgate_core::auth::SecretBox>,
        listen: std::net::SocketAddr,
    ) -> Result<ApiSide> {
        use crate::topology::front::InstancePool;
        use floodgate_api::{ApiCatalog, CachePolicy};
        let mut ingests = Vec::new();
        for _ in 0..knobs.max_concurrency("ingest").max(1) {
            let reader = instance_reader(stack.reader_url(), knobs, lanes, "ingest").await?;
            ingests.push(Arc::new(floodgate_ingest::Ingest::new(
                Arc::new(ApiCatalog::new(
                    reader,
                    secrets.clone(),
                    CachePolicy::default(),
                )),
                queue.clone(),
                limit_store.clone(),
                knobs,
            )));
        }
        let mut statuses = Vec::new();
        for _ in 0..knobs.max_concurrency("status").max(1) {
            let reader = instance_reader(stack.reader_url(), knobs, lanes, "status").await?;
            statuses.push(Arc::new(floodgate_status::Status::new(Arc::new(
                ApiCatalog::new(reader, secrets.clone(), CachePolicy::default()),
            ))));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the HTTP front on {listen}"))?;
        let addr = listener.local_addr()?;
        let wait = Duration::from_secs(10);
        let server = tokio::spawn(crate::topology::front::serve_pools(
            listener,
            Arc::new(InstancePool::new(ingests, wait)),
            Arc::new(InstancePool::new(statuses, wait)),
        ));
        Ok(ApiSide { addr, server })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::BackgroundRuntime;

    fn own_nice() -> i32 {
        // SAFETY: getpriority of the calling thread; errno is not needed for these values.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[tokio::test]
    async fn a_background_runtime_runs_its_tasks_at_its_nice_value() {
        let before = own_nice();
        let rt = BackgroundRuntime::at_nice(7).unwrap();
        let handle = rt.handle().expect("a runtime of its own");
        let nice = handle.spawn(async { own_nice() }).await.unwrap();
        assert_eq!(nice, 7);
        assert_eq!(own_nice(), before, "the caller's threads keep theirs");
        assert!(BackgroundRuntime::at_nice(0).unwrap().handle().is_none());
        drop(rt); // inside a runtime: must not panic
    }
}
