//! Child processes that die with us. Services are spawned from one long-lived thread with
//! `PR_SET_PDEATHSIG`, so if the test or demo process dies — panics, is killed, times out —
//! the kernel stops PostgreSQL, PgBouncer and moto too. (The death signal follows the
//! thread that forked, hence one thread that never exits.)

use anyhow::{Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, i32, Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("floodgate-spawner".into())
            .spawn(move || {
                for (mut cmd, death_signal, reply) in rx {
                    // SAFETY: prctl is async-signal-safe; runs in the child after the
                    // uid/gid change (std applies those before pre_exec hooks), so the
                    // setting survives into the service.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the spawner thread: {e}"));
        Mutex::new(tx)
    })
}

/// Spawns `cmd`; the kernel sends it `death_signal` if this process dies.
pub fn spawn_tied(cmd: Command, death_signal: i32) -> Result<Child> {
    let (tx, rx) = channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, death_signal, tx))
        .context("spawner thread is gone")?;
    rx.recv()
        .context("spawner thread is gone")?
        .context("spawning a service")
}

/// A service process we started and can stop and start again.
pub struct ManagedProcess {
    pub name: String,
    make: Box<dyn Fn() -> Command + Send + Sync>,
    /// Signal for a clean stop (PostgreSQL: SIGINT = fast shutdown).
    stop_signal: i32,
    /// Signal the kernel sends if we die (PostgreSQL: SIGQUIT = immediate shutdown).
    death_signal: i32,
    child: Option<Child>,
}

impl ManagedProcess {
    pub fn new(
        name: impl Into<String>,
        stop_signal: i32,
        death_signal: i32,
        make: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Self {
        ManagedProcess {
            name: name.into(),
            make: Box::new(make),
            stop_signal,
            death_signal,
            child: None,
        }
    }

    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let child = spawn_tied((self.make)(), self.death_signal)
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the process: the clean signal, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling a child we own by pid.
        unsafe {
            libc::kill(child.id() as i32, self.stop_signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
