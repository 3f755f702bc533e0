//! The local stand-ins for the AWS data plane, on free loopback ports:
//! PostgreSQL primary + streaming hot-standby replica (Aurora writer + reader), PgBouncer in
//! transaction mode in front of each (RDS Proxy's default and read-only endpoints), and
//! moto server (SQS, SES). PostgreSQL and PgBouncer refuse to run as root, so as root they
//! run as the `postgres` user.

pub mod install;
pub mod lifecycle;
pub mod process;

use crate::services::install::{Toolchain, ensure_installed, is_root, pg_tool};
use crate::services::process::ManagedProcess;
use anyhow::{Context, Result, bail};
use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The database and role every local service uses.
pub const DB_NAME: &str = "floodgate";
pub const DB_USER: &str = "floodgate";

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Start moto server (SQS and SES endpoints).
    pub moto: bool,
    /// Durable commits (`fsync`, `synchronous_commit`). Off makes tests faster; benchmarks
    /// and the demo keep it on so commit costs are real.
    pub durable: bool,
    /// Where the state lives; a fresh folder under the temp dir when `None` (removed on
    /// drop). A given folder is kept.
    pub state_dir: Option<PathBuf>,
    /// Server connections PgBouncer may open to each PostgreSQL (the proxy's budget).
    pub proxy_pool_size: u32,
    /// How long a client waits in PgBouncer for a server connection before an error
    /// (RDS Proxy's connection borrow timeout).
    pub proxy_borrow_timeout_s: u32,
    /// The nice value of the primary and the writer proxy (0: as everything else). On AWS
    /// they run on other machines than the replica and the API functions; a lower CPU
    /// priority on this one machine is the nearest model of that.
    pub pipeline_nice: i32,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            moto: false,
            durable: false,
            state_dir: None,
            proxy_pool_size: 40,
            proxy_borrow_timeout_s: 5,
            pipeline_nice: 0,
        }
    }
}

/// A running local stack. Dropping it stops every service and removes a temporary state
/// folder.
pub struct LocalStack {
    pub dir: PathBuf,
    remove_dir: bool,
    pub primary_port: u16,
    pub replica_port: u16,
    pub writer_proxy_port: u16,
    pub reader_proxy_port: u16,
    pub moto_port: Option<u16>,
    // Field order is drop order: proxies and moto first, then the replica, then the primary.
    writer_proxy: ManagedProcess,
    reader_proxy: ManagedProcess,
    moto: Option<ManagedProcess>,
    replica: ManagedProcess,
    primary: ManagedProcess,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// uid/gid to run PostgreSQL and PgBouncer as: `postgres` when we are root.
fn service_user() -> Result<Option<(u32, u32)>> {
    if !is_root() {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres")?;
    // SAFETY: getpwnam with a valid C string; the result is read immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root, but there is no `postgres` user to run PostgreSQL as");
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn as_service_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid); // std also drops supplementary groups when root
    }
}

fn chown(path: &Path, user: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn log_file(dir: &Path, name: &str) -> Result<(File, File)> {
    let f = File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    Ok((f.try_clone()?, f))
}

fn run_checked(cmd: &mut Command, what: &str, dir: &Path) -> Result<()> {
    let out = cmd
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

/// Removes state folders of earlier runs whose process is gone (a test killed mid-way
/// cannot clean up after itself).
fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// True when every folder from `/` down to `dir` lets other users pass (the execute bit),
/// so the `postgres` user can reach `dir`.
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    dir.ancestors().all(|a| {
        fs::metadata(a)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

fn wait_tcp(port: u16, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until PostgreSQL on `port` accepts a query.
pub async fn wait_postgres(port: u16, dbname: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let conn =
        format!("host=127.0.0.1 port={port} user={DB_USER} dbname={dbname} connect_timeout=2");
    loop {
        let attempt = async {
            let (client, connection) =
                tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            let task = tokio::spawn(connection);
            let r = client.simple_query("SELECT 1").await;
            drop(client);
            let _ = task.await;
            r.map(|_| ())
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("PostgreSQL on port {port} not ready within {timeout:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs SQL statements on the server at `port` as the local superuser.
pub async fn psql(
    port: u16,
    dbname: &str,
    sql: &str,
) -> Result<Vec<tokio_postgres::SimpleQueryMessage>> {
    let conn =
        format!("host=127.0.0.1 port={port} user={DB_USER} dbname={dbname} connect_timeout=5");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to port {port}"))?;
    let task = tokio::spawn(connection);
    let out = client.simple_query(sql).await;
    drop(client);
    let _ = task.await;
    Ok(out?)
}

fn postgres_conf(port: u16, socket_dir: &Path, durable: bool) -> String {
    let durability = if durable {
        ""
    } else {
        // Tests only: nothing here needs to survive a power cut.
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
    };
    format!(
        "# Written by floodgate-local.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         max_connections = 200\n\
         shared_buffers = 256MB\n\
         wal_level = replica\n\
         max_wal_senders = 5\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         shared_preload_libraries = 'pg_stat_statements'\n\
         pg_stat_statements.track = all\n\
         track_io_timing = on\n\
         logging_collector = off\n\
         log_min_messages = warning\n\
         {durability}",
        socket_dir.display()
    )
}

impl LocalStack {
    /// Installs what is missing (as root), then starts every service and waits for each.
    pub async fn start(opts: StackOptions) -> Result<LocalStack> {
        let tc = tokio::task::spawn_blocking({
            let moto = opts.moto;
            move || ensure_installed(moto)
        })
        .await??;
        Self::start_with(tc, opts).await
    }

    async fn start_with(tc: Toolchain, opts: StackOptions) -> Result<LocalStack> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let user = service_user()?;
        let (dir, remove_dir) = match &opts.state_dir {
            Some(d) => (d.clone(), false),
            None => {
                let base = std::env::temp_dir().join("floodgate-stacks");
                fs::create_dir_all(&base)?;
                sweep_stale(&base);
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                (base.join(format!("{}-{n}", std::process::id())), true)
            }
        };
        if dir.exists() && remove_dir {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        chown(&dir, user)?;
        let dir = dir.canonicalize()?;
        // PostgreSQL runs as `postgres` when we are root: its data must sit where that user
        // can reach. A state folder under, say, /root is not; then the services' data goes
        // to /var/tmp/floodgate-local/<name> and the state folder keeps a note of it.
        let dir = if user.is_some() && !reachable_by_others(&dir) {
            let name: String = dir
                .to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let relocated = PathBuf::from("/var/tmp/floodgate-local").join(name);
            fs::create_dir_all(&relocated)?;
            fs::set_permissions(
                "/var/tmp/floodgate-local",
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            chown(&relocated, user)?;
            fs::write(
                dir.join("services-dir.txt"),
                relocated.display().to_string(),
            )?;
            relocated
        } else {
            dir
        };

        let primary_dir = dir.join("primary");
        let replica_dir = dir.join("replica");
        let fresh = !primary_dir.join("PG_VERSION").exists();
        let ports = |path: &Path| -> Result<u16> {
            fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map_or_else(free_port, Ok)
        };
        // Ports persist with a kept state folder, so URLs printed by `up` stay valid.
        let primary_port = ports(&dir.join("primary.port"))?;
        let replica_port = ports(&dir.join("replica.port"))?;
        let writer_proxy_port = ports(&dir.join("writer-proxy.port"))?;
        let reader_proxy_port = ports(&dir.join("reader-proxy.port"))?;
        for (f, p) in [
            ("primary.port", primary_port),
            ("replica.port", replica_port),
            ("writer-proxy.port", writer_proxy_port),
            ("reader-proxy.port", reader_proxy_port),
        ] {
            fs::write(dir.join(f), p.to_string())?;
        }

        if fresh {
            let mut initdb = Command::new(pg_tool(&tc, "initdb"));
            initdb.arg("-D").arg(&primary_dir).args([
                "-U",
                DB_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]);
            as_service_user(&mut initdb, user);
            run_checked(&mut initdb, "initdb", &dir)?;
            fs::write(
                primary_dir.join("postgresql.auto.conf"),
                postgres_conf(primary_port, &dir, opts.durable),
            )?;
            fs::write(
                primary_dir.join("pg_hba.conf"),
                "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\nlocal all all trust\n",
            )?;
            chown(&primary_dir.join("postgresql.auto.conf"), user)?;
            chown(&primary_dir.join("pg_hba.conf"), user)?;
        }

        let mut primary = postgres_process(
            "postgres-primary",
            &tc,
            &primary_dir,
            &dir,
            user,
            opts.pipeline_nice,
        )?;
        primary.start()?;
        wait_postgres(primary_port, "postgres", Duration::from_secs(60)).await?;
        if fresh {
            psql(
                primary_port,
                "postgres",
                &format!("CREATE DATABASE {DB_NAME}"),
            )
            .await?;
            // Role defaults instead of run-time SET (which would pin an RDS Proxy session):
            // every connection of the role starts with these.
            psql(
                primary_port,
                DB_NAME,
                &format!(
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
                     ALTER ROLE {DB_USER} SET statement_timeout = '30s';
                     ALTER ROLE {DB_USER} SET idle_in_transaction_session_timeout = '60s';"
                ),
            )
            .await?;
            let mut basebackup = Command::new(pg_tool(&tc, "pg_basebackup"));
            basebackup
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &primary_port.to_string(),
                    "-U",
                    DB_USER,
                ])
                .arg("-D")
                .arg(&replica_dir)
                .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
            as_service_user(&mut basebackup, user);
            run_checked(&mut basebackup, "pg_basebackup", &dir)?;
            let auto = replica_dir.join("postgresql.auto.conf");
            let mut conf = fs::read_to_string(&auto)?;
            conf.push_str(&format!("\nport = {replica_port}\n"));
            fs::write(&auto, conf)?;
            chown(&auto, user)?;
        }
        let mut replica = postgres_process("postgres-replica", &tc, &replica_dir, &dir, user, 0)?;
        replica.start()?;
        wait_postgres(replica_port, DB_NAME, Duration::from_secs(60)).await?;

        let writer_proxy = pgbouncer_process(
            "pgbouncer-writer",
            &tc,
            &dir,
            (writer_proxy_port, primary_port),
            &opts,
            user,
            opts.pipeline_nice,
        )?;
        let reader_proxy = pgbouncer_process(
            "pgbouncer-reader",
            &tc,
            &dir,
            (reader_proxy_port, replica_port),
            &opts,
            user,
            0,
        )?;

        let (moto, moto_port) = match (&opts.moto, &tc.moto_server) {
            (true, Some(bin)) => {
                let port = free_port()?;
                let bin = bin.clone();
                let logdir = dir.clone();
                let mut p = ManagedProcess::new("moto", libc::SIGTERM, libc::SIGKILL, move || {
                    let mut c = Command::new(&bin);
                    c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                        .stdin(Stdio::null());
                    if let Ok((out, err)) = log_file(&logdir, "moto") {
                        c.stdout(out).stderr(err);
                    }
                    c
                });
                p.start()?;
                (Some(p), Some(port))
            }
            _ => (None, None),
        };

        let mut stack = LocalStack {
            dir,
            remove_dir,
            primary_port,
            replica_port,
            writer_proxy_port,
            reader_proxy_port,
            moto_port,
            writer_proxy,
            reader_proxy,
            moto,
            replica,
            primary,
        };
        stack.writer_proxy.start()?;
        stack.reader_proxy.start()?;
        wait_tcp(
            writer_proxy_port,
            Duration::from_secs(20),
            "pgbouncer (writer)",
        )?;
        wait_tcp(
            reader_proxy_port,
            Duration::from_secs(20),
            "pgbouncer (reader)",
        )?;
        if let Some(p) = stack.moto_port {
            wait_tcp(p, Duration::from_secs(60), "moto server")?;
        }
        Ok(stack)
    }

    /// The writer lane's URL: through the writer PgBouncer, like RDS Proxy's default endpoint.
    pub fn writer_url(&self) -> String {
        format!(
            "postgres://{DB_USER}@127.0.0.1:{}/{DB_NAME}",
            self.writer_proxy_port
        )
    }

    /// The reader lane's URL: through the reader PgBouncer to the replica.
    pub fn reader_url(&self) -> String {
        format!(
            "postgres://{DB_USER}@127.0.0.1:{}/{DB_NAME}",
            self.reader_proxy_port
        )
    }

    /// Straight to the primary, bypassing the proxy (benchmarks, assertions).
    pub fn primary_url(&self) -> String {
        format!(
            "postgres://{DB_USER}@127.0.0.1:{}/{DB_NAME}",
            self.primary_port
        )
    }

    pub fn replica_url(&self) -> String {
        format!(
            "postgres://{DB_USER}@127.0.0.1:{}/{DB_NAME}",
            self.replica_port
        )
    }

    pub fn moto_endpoint(&self) -> Option<String> {
        self.moto_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    /// Stops the primary (fast shutdown), as a database outage.
    /// The primary's postmaster (its backends are its children).
    pub fn primary_pid(&self) -> Option<u32> {
        self.primary.pid()
    }

    /// The writer proxy's process.
    pub fn writer_proxy_pid(&self) -> Option<u32> {
        self.writer_proxy.pid()
    }

    /// The replica's postmaster.
    pub fn replica_pid(&self) -> Option<u32> {
        self.replica.pid()
    }

    /// The reader proxy's process.
    pub fn reader_proxy_pid(&self) -> Option<u32> {
        self.reader_proxy.pid()
    }

    pub fn stop_primary(&mut self) {
        self.primary.stop(Duration::from_secs(10));
    }

    pub async fn start_primary(&mut self) -> Result<()> {
        self.primary.start()?;
        wait_postgres(self.primary_port, DB_NAME, Duration::from_secs(60)).await
    }

    pub fn stop_replica(&mut self) {
        self.replica.stop(Duration::from_secs(10));
    }

    pub async fn start_replica(&mut self) -> Result<()> {
        self.replica.start()?;
        wait_postgres(self.replica_port, DB_NAME, Duration::from_secs(60)).await
    }

    pub fn stop_writer_proxy(&mut self) {
        self.writer_proxy.stop(Duration::from_secs(5));
    }

    pub fn start_writer_proxy(&mut self) -> Result<()> {
        self.writer_proxy.start()?;
        wait_tcp(
            self.writer_proxy_port,
            Duration::from_secs(20),
            "pgbouncer (writer)",
        )
    }

    pub fn stop_moto(&mut self) {
        if let Some(m) = &mut self.moto {
            m.stop(Duration::from_secs(5));
        }
    }

    pub fn start_moto(&mut self) -> Result<()> {
        if let (Some(m), Some(port)) = (&mut self.moto, self.moto_port) {
            m.start()?;
            wait_tcp(port, Duration::from_secs(60), "moto server")?;
        }
        Ok(())
    }

    /// Waits until the replica has replayed everything the primary has written so far.
    pub async fn wait_replica_caught_up(&self, timeout: Duration) -> Result<()> {
        let lsn = psql(
            self.primary_port,
            DB_NAME,
            "SELECT pg_current_wal_insert_lsn()::text",
        )
        .await?;
        let target = first_value(&lsn).context("no LSN from primary")?;
        let deadline = Instant::now() + timeout;
        loop {
            let q = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
            let r = psql(self.replica_port, DB_NAME, &q).await?;
            if first_value(&r).as_deref() == Some("t") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("replica did not reach {target} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The first column of the first row of a simple-query answer.
pub fn first_value(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

fn postgres_process(
    name: &str,
    tc: &Toolchain,
    data_dir: &Path,
    state_dir: &Path,
    user: Option<(u32, u32)>,
    nice: i32,
) -> Result<ManagedProcess> {
    let bin = pg_tool(tc, "postgres");
    let data_dir = data_dir.to_path_buf();
    let state_dir = state_dir.to_path_buf();
    let log = name.to_string();
    Ok(ManagedProcess::new(
        name,
        libc::SIGINT,
        libc::SIGQUIT,
        move || {
            let mut c = Command::new(&bin);
            c.arg("-D")
                .arg(&data_dir)
                .current_dir(&state_dir)
                .stdin(Stdio::null());
            if let Ok((out, err)) = log_file(&state_dir, &log) {
                c.stdout(out).stderr(err);
            }
            as_service_user(&mut c, user);
            at_nice(&mut c, nice);
            c
        },
    ))
}

/// Starts the command at a lower CPU priority (a higher nice value); its children (the
/// postmaster's backends) inherit it.
fn at_nice(cmd: &mut Command, nice: i32) {
    use std::os::unix::process::CommandExt;
    if nice == 0 {
        return;
    }
    // SAFETY: runs in the child between fork and exec and calls only setpriority, which is
    // async-signal-safe; raising one's own nice value needs no privilege.
    unsafe {
        cmd.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            Ok(())
        });
    }
}

fn pgbouncer_process(
    name: &str,
    tc: &Toolchain,
    dir: &Path,
    (listen_port, server_port): (u16, u16),
    opts: &StackOptions,
    user: Option<(u32, u32)>,
    nice: i32,
) -> Result<ManagedProcess> {
    let ini = dir.join(format!("{name}.ini"));
    let users = dir.join("pgbouncer-users.txt");
    fs::write(&users, format!("\"{DB_USER}\" \"\"\n"))?;
    chown(&users, user)?;
    // Transaction pooling, like RDS Proxy: a server connection is lent for one
    // transaction. Named prepared statements do not survive that in 1.18, which is how the
    // local stack catches code that keeps one beyond the transaction that uses it.
    fs::write(
        &ini,
        format!(
            "[databases]\n\
             {DB_NAME} = host=127.0.0.1 port={server_port} dbname={DB_NAME}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {listen_port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             pool_mode = transaction\n\
             max_client_conn = 2000\n\
             default_pool_size = {pool}\n\
             max_db_connections = {pool}\n\
             reserve_pool_size = 0\n\
             server_connect_timeout = 3\n\
             server_login_retry = 1\n\
             query_wait_timeout = {borrow}\n\
             server_idle_timeout = 60\n\
             ignore_startup_parameters = extra_float_digits\n\
             admin_users = {DB_USER}\n\
             log_connections = 0\n\
             log_disconnections = 0\n",
            users = users.display(),
            pool = opts.proxy_pool_size,
            borrow = opts.proxy_borrow_timeout_s,
        ),
    )?;
    chown(&ini, user)?;
    let bin = tc.pgbouncer.clone();
    let state_dir = dir.to_path_buf();
    let log = name.to_string();
    Ok(ManagedProcess::new(
        name,
        libc::SIGTERM,
        libc::SIGKILL,
        move || {
            let mut c = Command::new(&bin);
            c.arg(&ini).current_dir(&state_dir).stdin(Stdio::null());
            if let Ok((out, err)) = log_file(&state_dir, &log) {
                c.stdout(out).stderr(err);
            }
            as_service_user(&mut c, user);
            at_nice(&mut c, nice);
            c
        },
    ))
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.writer_proxy.stop(Duration::from_secs(5));
        self.reader_proxy.stop(Duration::from_secs(5));
        if let Some(m) = &mut self.moto {
            m.stop(Duration::from_secs(5));
        }
        self.replica.stop(Duration::from_secs(10));
        self.primary.stop(Duration::from_secs(10));
        if self.remove_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
