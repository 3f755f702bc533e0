//! The database lanes: small, hard-bounded pools, one per kind of work, per function
//! instance. Bulk updates must not starve critical reads of a shared pool, and a leaked
//! pool must not exhaust the database: so a lane has a hard maximum, an acquire timeout,
//! idle and lifetime limits, and gives its connection back on every path (README, "What
//! Floodgate is", names the incidents behind this).

use crate::error::DbError;
use deadpool_postgres::{Connect, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::future::Future;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// Which lane: the writer goes to the proxy's read/write endpoint (Aurora writer), the
/// reader to its read-only endpoint (Aurora replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneKind {
    Writer,
    Reader,
}

impl LaneKind {
    pub fn name(self) -> &'static str {
        match self {
            LaneKind::Writer => "writer",
            LaneKind::Reader => "reader",
        }
    }

    fn env_prefix(self) -> &'static str {
        match self {
            LaneKind::Writer => "FLOODGATE_WRITER",
            LaneKind::Reader => "FLOODGATE_READER",
        }
    }
}

/// A lane's configuration. From the environment ([`LaneConfig::from_env`]):
///
/// | variable (`<P>` = `FLOODGATE_WRITER` or `FLOODGATE_READER`) | default | meaning |
/// |---|---|---|
/// | `<P>_URL` | required | `postgres://user@host:port/db[?sslmode=require]` |
/// | `<P>_MAX_SIZE` | writer 1, reader 2 | hard maximum of open connections |
/// | `<P>_ACQUIRE_TIMEOUT_MS` | 2000 | wait for a free connection at most this long |
/// | `<P>_CONNECT_TIMEOUT_MS` | 3000 | open a new connection within this |
/// | `<P>_OPERATION_TIMEOUT_MS` | writer 10000, reader 3000 | client-side bound on one use |
/// | `<P>_IDLE_TIMEOUT_S` | 300 | close a connection unused this long |
/// | `<P>_MAX_LIFETIME_S` | 1800 | close a connection this old |
/// | `<P>_STATEMENT_TIMEOUT_MS` | unset | sent as a startup option (direct connections only) |
/// | `FLOODGATE_DB_IAM_AUTH` | false | a fresh RDS IAM token per new connection |
///
/// Behind a proxy the statement timeout comes from the role's defaults
/// (`ALTER ROLE … SET statement_timeout`) or the proxy's init query, never from a
/// run-time `SET`, which would pin the session on RDS Proxy.
///
/// `password` is never read from the environment: only the admin function sets it, for its
/// direct connection as the master user (role bootstrap). `Debug` prints it as `***`.
#[derive(Clone)]
pub struct LaneConfig {
    pub kind: LaneKind,
    pub url: String,
    pub max_size: usize,
    pub acquire_timeout: Duration,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub statement_timeout: Option<Duration>,
    pub iam_auth: bool,
    pub application_name: String,
    /// A password for every new connection (overrides one in the URL). Not with `iam_auth`.
    pub password: Option<String>,
}

impl std::fmt::Debug for LaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneConfig")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("max_size", &self.max_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_timeout", &self.statement_timeout)
            .field("iam_auth", &self.iam_auth)
            .field("application_name", &self.application_name)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl LaneConfig {
    /// Defaults for `kind`, pointing at `url`.
    pub fn new(kind: LaneKind, url: impl Into<String>, application_name: &str) -> Self {
        LaneConfig {
            kind,
            url: url.into(),
            max_size: match kind {
                LaneKind::Writer => 1,
                LaneKind::Reader => 2,
            },
            acquire_timeout: Duration::from_millis(2_000),
            connect_timeout: Duration::from_millis(3_000),
            operation_timeout: match kind {
                LaneKind::Writer => Duration::from_millis(10_000),
                LaneKind::Reader => Duration::from_millis(3_000),
            },
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(1_800),
            statement_timeout: None,
            iam_auth: false,
            application_name: application_name.to_string(),
            password: None,
        }
    }

    /// Reads the lane's variables from the process environment.
    pub fn from_env(kind: LaneKind, application_name: &str) -> Result<Self, DbError> {
        Self::from_lookup(kind, application_name, |k| std::env::var(k).ok())
    }

    /// Reads the lane's variables through `get` (testable without touching the environment).
    pub fn from_lookup(
        kind: LaneKind,
        application_name: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, DbError> {
        let p = kind.env_prefix();
        let url = get(&format!("{p}_URL"))
            .filter(|u| !u.is_empty())
            .ok_or_else(|| DbError::Config(format!("{p}_URL is not set")))?;
        let mut c = LaneConfig::new(kind, url, application_name);
        let num = |name: &str| -> Result<Option<u64>, DbError> {
            match get(&format!("{p}_{name}")) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| DbError::Config(format!("{p}_{name}={v:?} is not a number"))),
            }
        };
        if let Some(v) = num("MAX_SIZE")? {
            if v == 0 {
                return Err(DbError::Config(format!("{p}_MAX_SIZE must be at least 1")));
            }
            c.max_size = v as usize;
        }
        if let Some(v) = num("ACQUIRE_TIMEOUT_MS")? {
            c.acquire_timeout = Duration::from_millis(v);
        }
        if let Some(v) = num("CONNECT_TIMEOUT_MS")? {
            c.connect_timeout = Duration::from_millis(v);
        }
        if let Some(v) = num("OPERATION_TIMEOUT_MS")? {
            c.operation_timeout = Duration::from_millis(v);
        }
        if let Some(v) = num("IDLE_TIMEOUT_S")? {
            c.idle_timeout = Duration::from_secs(v);
        }
        if let Some(v) = num("MAX_LIFETIME_S")? {
            c.max_lifetime = Duration::from_secs(v);
        }
        if let Some(v) = num("STATEMENT_TIMEOUT_MS")? {
            c.statement_timeout = (v > 0).then(|| Duration::from_millis(v));
        }
        c.iam_auth = matches!(
            get("FLOODGATE_DB_IAM_AUTH").as_deref().map(str::trim),
            Some("1" | "true" | "TRUE" | "yes")
        );
        Ok(c)
    }

    fn pg_config(&self) -> Result<tokio_postgres::Config, DbError> {
        let mut pg = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| DbError::Config(format!("{} lane URL: {e}", self.kind.name())))?;
        pg.connect_timeout(self.connect_timeout);
        pg.application_name(&self.application_name);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        if let Some(t) = self.statement_timeout {
            pg.options(format!("-c statement_timeout={}", t.as_millis()));
        }
        if let Some(p) = &self.password {
            pg.password(p.as_bytes());
        }
        Ok(pg)
    }
}

/// Counters a lane keeps, for metrics and for tests that prove the bounds hold.
#[derive(Debug, Default)]
pub struct LaneCounters {
    pub acquires: AtomicU64,
    pub acquire_wait_micros: AtomicU64,
    pub acquire_wait_max_micros: AtomicU64,
    /// Acquires by how long they waited: bucket `i` counts waits up to
    /// `ACQUIRE_WAIT_BOUNDS_MICROS[i]`, the last one every longer wait. A sum and a maximum
    /// cannot say whether the 99th percentile is within a promise; this can, for the cost
    /// of one more atomic add per acquire.
    pub acquire_wait_buckets: [AtomicU64; ACQUIRE_WAIT_BUCKETS],
    pub acquire_timeouts: AtomicU64,
    pub operation_timeouts: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_closed: AtomicU64,
    pub discarded: AtomicU64,
}

/// Upper bounds, in µs, of the acquire-wait buckets (the last bucket has none).
pub const ACQUIRE_WAIT_BOUNDS_MICROS: [u64; 12] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 50_000, 250_000, 1_000_000,
];
pub const ACQUIRE_WAIT_BUCKETS: usize = ACQUIRE_WAIT_BOUNDS_MICROS.len() + 1;

fn acquire_wait_bucket(micros: u64) -> usize {
    ACQUIRE_WAIT_BOUNDS_MICROS
        .iter()
        .position(|&bound| micros <= bound)
        .unwrap_or(ACQUIRE_WAIT_BOUNDS_MICROS.len())
}

/// A plain copy of [`LaneCounters`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LaneCountersSnapshot {
    pub acquires: u64,
    pub acquire_wait_micros: u64,
    pub acquire_wait_max_micros: u64,
    pub acquire_wait_buckets: [u64; ACQUIRE_WAIT_BUCKETS],
    pub acquire_timeouts: u64,
    pub operation_timeouts: u64,
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub discarded: u64,
}

impl LaneCountersSnapshot {
    /// A bound on the `q` quantile of the acquire waits (0 < q <= 1): the upper bound of the
    /// bucket it falls in, `u64::MAX` past the last bound, `None` with no acquires.
    pub fn acquire_wait_quantile_bound_micros(&self, q: f64) -> Option<u64> {
        let total: u64 = self.acquire_wait_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.acquire_wait_buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(
                    ACQUIRE_WAIT_BOUNDS_MICROS
                        .get(i)
                        .copied()
                        .unwrap_or(u64::MAX),
                );
            }
        }
        Some(u64::MAX)
    }

    /// The acquire waits between `earlier` and this snapshot, as buckets.
    pub fn acquire_wait_buckets_since(&self, earlier: &Self) -> [u64; ACQUIRE_WAIT_BUCKETS] {
        std::array::from_fn(|i| {
            self.acquire_wait_buckets[i].saturating_sub(earlier.acquire_wait_buckets[i])
        })
    }
}

impl LaneCounters {
    pub fn snapshot(&self) -> LaneCountersSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LaneCountersSnapshot {
            acquires: l(&self.acquires),
            acquire_wait_micros: l(&self.acquire_wait_micros),
            acquire_wait_max_micros: l(&self.acquire_wait_max_micros),
            acquire_wait_buckets: std::array::from_fn(|i| l(&self.acquire_wait_buckets[i])),
            acquire_timeouts: l(&self.acquire_timeouts),
            operation_timeouts: l(&self.operation_timeouts),
            connections_opened: l(&self.connections_opened),
            connections_closed: l(&self.connections_closed),
            discarded: l(&self.discarded),
        }
    }
}

impl LaneCountersSnapshot {
    /// Connections open right now, as this lane counts them.
    pub fn open_connections(&self) -> u64 {
        self.connections_opened - self.connections_closed.min(self.connections_opened)
    }
}

struct IamAuth {
    sdk: aws_config::SdkConfig,
    host: String,
    port: u16,
    user: String,
}

/// Opens physical connections: TLS when the URL asks for it, a fresh IAM token each time
/// when configured, and counts every open and close.
struct LaneConnect {
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    iam: Option<Arc<IamAuth>>,
    counters: Arc<LaneCounters>,
}

/// Counts a connection as closed when its driver task ends (socket closed, or aborted
/// because the pool dropped the client).
struct CloseGuard(Arc<LaneCounters>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.connections_closed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Connect for LaneConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<'_, Result<(Client, JoinHandle<()>), tokio_postgres::Error>>
    {
        let mut cfg = pg_config.clone();
        let tls = self.tls.clone();
        let iam = self.iam.clone();
        let counters = self.counters.clone();
        Box::pin(async move {
            if let Some(iam) = iam {
                match iam_token(&iam).await {
                    Ok(token) => {
                        cfg.password(token);
                    }
                    // tokio_postgres::Error cannot be built here; connecting without a
                    // password makes the server refuse with a clear authentication error.
                    Err(e) => tracing::error!(error = %e, "RDS IAM token generation failed"),
                }
            }
            let guard = CloseGuard(counters.clone());
            let (client, task) = match tls {
                Some(tls) => {
                    let (client, conn) = cfg.connect(tls).await?;
                    (client, spawn_driver(conn, guard))
                }
                None => {
                    let (client, conn) = cfg.connect(NoTls).await?;
                    (client, spawn_driver(conn, guard))
                }
            };
            counters.connections_opened.fetch_add(1, Ordering::Relaxed);
            Ok((client, task))
        })
    }
}

fn spawn_driver<F>(conn: F, guard: CloseGuard) -> JoinHandle<()>
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let _guard = guard;
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "database connection ended with an error");
        }
    })
}

async fn iam_token(iam: &IamAuth) -> Result<String, String> {
    use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};
    let region = iam
        .sdk
        .region()
        .cloned()
        .ok_or_else(|| "no AWS region configured".to_string())?;
    let config = Config::builder()
        .hostname(&iam.host)
        .port(u64::from(iam.port))
        .username(&iam.user)
        .region(region)
        .build()
        .map_err(|e| e.to_string())?;
    let token = AuthTokenGenerator::new(config)
        .auth_token(&iam.sdk)
        .await
        .map_err(|e| e.to_string())?;
    Ok(token.as_str().to_string())
}

/// The variable naming a PEM file of extra trusted CA certificates. RDS Proxy presents a
/// publicly trusted certificate (the built-in webpki roots cover it); a direct connection to
/// an Aurora endpoint (the admin's role bootstrap) presents one from the Amazon RDS CA, which
/// is not public: point this at AWS's RDS CA bundle (`global-bundle.pem`).
pub const CA_FILE_ENV: &str = "FLOODGATE_DB_CA_FILE";

fn root_store(extra_pem: Option<&std::path::Path>) -> Result<rustls::RootCertStore, DbError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| DbError::Config(format!("{CA_FILE_ENV}={}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(DbError::Config(format!(
                "{CA_FILE_ENV}={} holds no certificate",
                path.display()
            )));
        }
        let (_added, _ignored) = roots.add_parsable_certificates(certs);
    }
    Ok(roots)
}

fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, DbError> {
    let extra = std::env::var_os(CA_FILE_ENV).map(std::path::PathBuf::from);
    let roots = root_store(extra.as_deref())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map_err(|e| DbError::Config(format!("rustls configuration: {e}")))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

struct LaneInner {
    pool: Pool,
    config: LaneConfig,
    counters: Arc<LaneCounters>,
}

/// A bounded pool of connections for one kind of work. Cheap to clone (shared inside).
#[derive(Clone)]
pub struct Lane {
    inner: Arc<LaneInner>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("kind", &self.inner.config.kind)
            .field("max_size", &self.inner.config.max_size)
            .finish()
    }
}

impl Lane {
    /// Builds the lane. Opens no connection yet: the first acquire does. With IAM auth it
    /// loads the AWS configuration once (region and credentials for the token signer).
    pub async fn open(config: LaneConfig) -> Result<Lane, DbError> {
        let pg = config.pg_config()?;
        let counters = Arc::new(LaneCounters::default());
        // tokio-postgres defaults to `prefer`: TLS when the server offers it.
        let tls = match pg.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(rustls_connector()?),
        };
        let iam = if config.iam_auth {
            let host = match pg.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                _ => return Err(DbError::Config("IAM auth needs a TCP host".into())),
            };
            let port = pg.get_ports().first().copied().unwrap_or(5432);
            let user = pg
                .get_user()
                .ok_or_else(|| DbError::Config("IAM auth needs a user in the URL".into()))?
                .to_string();
            if pg.get_ssl_mode() != SslMode::Require {
                return Err(DbError::Config(
                    "IAM auth requires TLS: add sslmode=require to the URL".into(),
                ));
            }
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            Some(Arc::new(IamAuth {
                sdk,
                host,
                port,
                user,
            }))
        } else {
            None
        };
        let connect = LaneConnect {
            tls,
            iam,
            counters: counters.clone(),
        };
        let manager = Manager::from_connect(
            pg,
            connect,
            ManagerConfig {
                // `Fast` checks only that the socket is open: no extra round trip per use.
                // A connection broken by a restart fails its next statement; the lane then
                // discards it (see `LaneConnection::bounded`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let idle = config.idle_timeout;
        let lifetime = config.max_lifetime;
        let recycle_counters = counters.clone();
        let pool = Pool::builder(manager)
            .max_size(config.max_size)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            // Idle and lifetime limits, checked whenever a pooled connection is reused: an
            // expired one is closed and replaced, so idle connections nobody reaps cannot
            // hold the database at its connection limit.
            .pre_recycle(deadpool_postgres::Hook::sync_fn(move |_, metrics| {
                if metrics.last_used() > idle || metrics.age() > lifetime {
                    recycle_counters.discarded.fetch_add(1, Ordering::Relaxed);
                    Err(deadpool_postgres::HookError::message("expired"))
                } else {
                    Ok(())
                }
            }))
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
        Ok(Lane {
            inner: Arc::new(LaneInner {
                pool,
                config,
                counters,
            }),
        })
    }

    pub fn config(&self) -> &LaneConfig {
        &self.inner.config
    }

    pub fn counters(&self) -> &LaneCounters {
        &self.inner.counters
    }

    /// Connections currently held by the pool (in use or idle).
    pub fn pool_size(&self) -> usize {
        self.inner.pool.status().size
    }

    /// Takes a connection, waiting at most the acquire timeout. The connection goes back
    /// when the returned value is dropped — on every path, panics included. Only through
    /// [`WriterLane`] or [`ReaderLane`], which type the connection.
    pub(crate) async fn acquire(&self) -> Result<LaneConnection, DbError> {
        let c = &self.inner.counters;
        let cfg = &self.inner.config;
        // Close idle/expired connections before handing one out, so a warm instance that
        // sat frozen does not reuse a connection the proxy already dropped.
        let (idle, lifetime) = (cfg.idle_timeout, cfg.max_lifetime);
        self.inner
            .pool
            .retain(|_, m| m.last_used() <= idle && m.age() <= lifetime);
        let started = Instant::now();
        let result = self.inner.pool.get().await;
        let waited = started.elapsed();
        c.acquires.fetch_add(1, Ordering::Relaxed);
        let micros = waited.as_micros() as u64;
        c.acquire_wait_micros.fetch_add(micros, Ordering::Relaxed);
        c.acquire_wait_max_micros
            .fetch_max(micros, Ordering::Relaxed);
        c.acquire_wait_buckets[acquire_wait_bucket(micros)].fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(obj) => Ok(LaneConnection {
                obj: Some(obj),
                unsettled: AtomicBool::new(false),
                lane: self.clone(),
            }),
            Err(deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)) => {
                c.acquire_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(DbError::AcquireTimeout {
                    lane: cfg.kind.name(),
                    waited,
                    max_size: cfg.max_size,
                })
            }
            Err(deadpool_postgres::PoolError::Timeout(_)) => {
                c.acquire_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(DbError::Connect {
                    lane: cfg.kind.name(),
                    reason: format!("no connection within {:?}", cfg.connect_timeout),
                })
            }
            Err(e) => Err(DbError::Connect {
                lane: cfg.kind.name(),
                reason: e.to_string(),
            }),
        }
    }
}

/// A connection taken from a lane. Derefs to the tokio-postgres [`Client`]; run each use
/// through [`LaneConnection::bounded`] so it cannot outlast the operation timeout.
pub struct LaneConnection {
    obj: Option<Object>,
    /// Set while an operation runs and left set if it failed or was interrupted: the
    /// connection may then be mid-transaction or mid-response, so it is closed on drop
    /// instead of going back to the pool.
    unsettled: AtomicBool,
    lane: Lane,
}

impl LaneConnection {
    /// Runs one database operation with the lane's operation timeout. On timeout or error
    /// the connection is discarded when dropped (its slot is freed either way).
    pub async fn bounded<T, E, F>(&self, op: F) -> Result<T, DbError>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<DbError>,
    {
        let cfg = &self.lane.inner.config;
        self.unsettled.store(true, Ordering::Relaxed);
        match tokio::time::timeout(cfg.operation_timeout, op).await {
            Ok(Ok(v)) => {
                self.unsettled.store(false, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                self.lane
                    .inner
                    .counters
                    .operation_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                Err(DbError::OperationTimeout {
                    lane: cfg.kind.name(),
                    limit: cfg.operation_timeout,
                })
            }
        }
    }
}

impl Deref for LaneConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        // `obj` is only None inside `drop`.
        match &self.obj {
            Some(o) => o,
            None => unreachable!("LaneConnection used after drop"),
        }
    }
}

impl Drop for LaneConnection {
    fn drop(&mut self) {
        let interrupted = self.unsettled.load(Ordering::Relaxed) || std::thread::panicking();
        if let Some(obj) = self.obj.take()
            && interrupted
        {
            self.lane
                .inner
                .counters
                .discarded
                .fetch_add(1, Ordering::Relaxed);
            // Detach from the pool and drop: the socket closes, the slot is freed.
            drop(Object::take(obj));
        }
        // Otherwise the object dropped above returns to the pool.
    }
}

/// The writer lane: the only way to change data. Only pipeline functions and admin have one.
/// Its connections are [`WriterConnection`]s, the only kind the SQL that writes accepts.
#[derive(Clone, Debug)]
pub struct WriterLane(Lane);

/// The reader lane: look-ups for the API (keys, templates, status) on the replicas. Its
/// connections are [`ReaderConnection`]s, which no writing SQL function accepts: a read path
/// handed only a reader cannot write, and that is checked by the compiler.
#[derive(Clone, Debug)]
pub struct ReaderLane(Lane);

impl WriterLane {
    /// Opens a writer lane; `config` must be a writer's.
    pub async fn open(config: LaneConfig) -> Result<Self, DbError> {
        expect_kind(&config, LaneKind::Writer)?;
        Ok(WriterLane(Lane::open(config).await?))
    }

    pub async fn from_env(application_name: &str) -> Result<Self, DbError> {
        Self::open(LaneConfig::from_env(LaneKind::Writer, application_name)?).await
    }

    /// Takes a connection (see [`Lane::acquire`]).
    pub async fn acquire(&self) -> Result<WriterConnection, DbError> {
        Ok(WriterConnection(self.0.acquire().await?))
    }
}

impl ReaderLane {
    /// Opens a reader lane; `config` must be a reader's.
    pub async fn open(config: LaneConfig) -> Result<Self, DbError> {
        expect_kind(&config, LaneKind::Reader)?;
        Ok(ReaderLane(Lane::open(config).await?))
    }

    pub async fn from_env(application_name: &str) -> Result<Self, DbError> {
        Self::open(LaneConfig::from_env(LaneKind::Reader, application_name)?).await
    }

    /// Takes a connection (see [`Lane::acquire`]).
    pub async fn acquire(&self) -> Result<ReaderConnection, DbError> {
        Ok(ReaderConnection(self.0.acquire().await?))
    }
}

fn expect_kind(config: &LaneConfig, kind: LaneKind) -> Result<(), DbError> {
    if config.kind == kind {
        Ok(())
    } else {
        Err(DbError::Config(format!(
            "a {} lane cannot be opened with a {} lane's configuration",
            kind.name(),
            config.kind.name()
        )))
    }
}

/// Configuration, counters and pool size of a lane (never its connections).
impl Deref for WriterLane {
    type Target = Lane;
    fn deref(&self) -> &Lane {
        &self.0
    }
}

impl Deref for ReaderLane {
    type Target = Lane;
    fn deref(&self) -> &Lane {
        &self.0
    }
}

/// A connection from the writer lane: what the SQL functions that change data require.
pub struct WriterConnection(LaneConnection);

/// A connection from the reader lane (a replica): what the API's read path runs on.
pub struct ReaderConnection(LaneConnection);

impl Deref for WriterConnection {
    type Target = LaneConnection;
    fn deref(&self) -> &LaneConnection {
        &self.0
    }
}

impl Deref for ReaderConnection {
    type Target = LaneConnection;
    fn deref(&self) -> &LaneConnection {
        &self.0
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::WriterConnection {}
    impl Sealed for super::ReaderConnection {}
}

/// Either connection, for the few reads both sides make (admin lists what it just wrote on
/// the writer; `status` lists templates on a replica). Sealed: only the two lane connections.
pub trait ReadConnection: sealed::Sealed + Deref<Target = LaneConnection> + Sync {}
impl ReadConnection for WriterConnection {}
impl ReadConnection for ReaderConnection {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_waits_fall_in_the_bucket_of_their_bound() {
        assert_eq!(acquire_wait_bucket(0), 0);
        assert_eq!(acquire_wait_bucket(10), 0);
        assert_eq!(acquire_wait_bucket(11), 1);
        assert_eq!(acquire_wait_bucket(1_000), 6);
        assert_eq!(acquire_wait_bucket(1_001), 7);
        assert_eq!(acquire_wait_bucket(5_000_000), 12);
    }

    #[test]
    fn the_quantile_bound_is_the_bucket_holding_that_rank() {
        let mut s = LaneCountersSnapshot::default();
        assert_eq!(s.acquire_wait_quantile_bound_micros(0.99), None);
        // 98 waits of at most 10 µs, one of at most 250 µs, one of 2 s.
        s.acquire_wait_buckets[0] = 98;
        s.acquire_wait_buckets[4] = 1;
        s.acquire_wait_buckets[12] = 1;
        assert_eq!(s.acquire_wait_quantile_bound_micros(0.5), Some(10));
        assert_eq!(s.acquire_wait_quantile_bound_micros(0.98), Some(10));
        assert_eq!(s.acquire_wait_quantile_bound_micros(0.99), Some(250));
        assert_eq!(s.acquire_wait_quantile_bound_micros(1.0), Some(u64::MAX));
        let mut earlier = LaneCountersSnapshot::default();
        earlier.acquire_wait_buckets[0] = 90;
        let since = s.acquire_wait_buckets_since(&earlier);
        assert_eq!((since[0], since[4], since[12]), (8, 1, 1));
    }
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn config_defaults_and_overrides() {
        let c = LaneConfig::from_lookup(
            LaneKind::Reader,
            "t",
            lookup(&[("FLOODGATE_READER_URL", "postgres://u@h:1/db")]),
        )
        .unwrap();
        assert_eq!(c.max_size, 2);
        assert_eq!(c.acquire_timeout, Duration::from_millis(2000));
        assert!(!c.iam_auth);

        let c = LaneConfig::from_lookup(
            LaneKind::Writer,
            "t",
            lookup(&[
                (
                    "FLOODGATE_WRITER_URL",
                    "postgres://u@h:1/db?sslmode=require",
                ),
                ("FLOODGATE_WRITER_MAX_SIZE", "3"),
                ("FLOODGATE_WRITER_ACQUIRE_TIMEOUT_MS", "150"),
                ("FLOODGATE_WRITER_STATEMENT_TIMEOUT_MS", "5000"),
                ("FLOODGATE_DB_IAM_AUTH", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.max_size, 3);
        assert_eq!(c.acquire_timeout, Duration::from_millis(150));
        assert_eq!(c.statement_timeout, Some(Duration::from_secs(5)));
        assert!(c.iam_auth);
        let pg = c.pg_config().unwrap();
        assert_eq!(pg.get_ssl_mode(), SslMode::Require);
        assert_eq!(pg.get_options(), Some("-c statement_timeout=5000"));
    }

    #[test]
    fn config_errors_are_clear() {
        let e = LaneConfig::from_lookup(LaneKind::Writer, "t", lookup(&[])).unwrap_err();
        assert!(e.to_string().contains("FLOODGATE_WRITER_URL"), "{e}");
        let e = LaneConfig::from_lookup(
            LaneKind::Writer,
            "t",
            lookup(&[
                ("FLOODGATE_WRITER_URL", "postgres://u@h/db"),
                ("FLOODGATE_WRITER_MAX_SIZE", "lots"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("FLOODGATE_WRITER_MAX_SIZE"), "{e}");
        let e = LaneConfig::from_lookup(
            LaneKind::Writer,
            "t",
            lookup(&[
                ("FLOODGATE_WRITER_URL", "postgres://u@h/db"),
                ("FLOODGATE_WRITER_MAX_SIZE", "0"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
    }

    #[test]
    fn a_password_is_applied_but_never_printed() {
        let mut c = LaneConfig::new(
            LaneKind::Writer,
            "postgres://master@h:5432/db?sslmode=require",
            "t",
        );
        c.password = Some("s3cr3t-value".into());
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
        assert!(printed.contains("***"), "{printed}");
        let pg = c.pg_config().unwrap();
        assert_eq!(pg.get_password(), Some(&b"s3cr3t-value"[..]));
        c.password = None;
        assert_eq!(c.pg_config().unwrap().get_password(), None);
    }

    #[test]
    fn extra_ca_files_are_checked() {
        assert_eq!(
            root_store(None).unwrap().len(),
            webpki_roots::TLS_SERVER_ROOTS.len()
        );
        let e = root_store(Some(std::path::Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.to_string().contains(CA_FILE_ENV), "{e}");
        let dir = std::env::temp_dir().join(format!("fg-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = root_store(Some(&empty)).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_lane_opens_only_with_its_own_kind_of_configuration() {
        let c = LaneConfig::new(LaneKind::Reader, "postgres://u@127.0.0.1:1/db", "t");
        let e = WriterLane::open(c.clone()).await.unwrap_err();
        assert!(e.to_string().contains("reader lane's configuration"), "{e}");
        assert!(ReaderLane::open(c).await.is_ok());
    }

    #[tokio::test]
    async fn iam_auth_without_tls_is_refused() {
        let mut c = LaneConfig::new(LaneKind::Writer, "postgres://u@127.0.0.1:1/db", "t");
        c.iam_auth = true;
        let e = WriterLane::open(c).await.unwrap_err();
        assert!(e.to_string().contains("requires TLS"), "{e}");
    }
}
