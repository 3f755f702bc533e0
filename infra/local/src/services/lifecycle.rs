//! `up` and `down`: the services in the background for manual use, one set per state
//! directory, found again by the pid file `up` writes.

use crate::{LocalStack, StackOptions};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join("up.pid")
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn running_pid(state_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file(state_dir))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&p| alive(p))
}

pub fn refuse_if_up(state_dir: &Path) -> Result<()> {
    if let Some(pid) = running_pid(state_dir) {
        bail!(
            "services from `up` are running (pid {pid}) on {}: run `down` first",
            state_dir.display()
        );
    }
    Ok(())
}

/// `up`: in the foreground, serve until Ctrl-C or SIGTERM; otherwise start a detached
/// copy of this command in the foreground mode and wait until it reports its URLs.
pub async fn up(state_dir: &Path, foreground: bool) -> Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let env_file = state_dir.join("services.env");
    if !foreground {
        if let Some(pid) = running_pid(state_dir) {
            println!("already up (pid {pid}):");
            print!("{}", std::fs::read_to_string(&env_file).unwrap_or_default());
            return Ok(());
        }
        let _ = std::fs::remove_file(&env_file);
        let log = std::fs::File::create(state_dir.join("up.log"))?;
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("up")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--foreground")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // A session of its own: the services outlive this command, not the terminal's
        // Ctrl-C.
        // SAFETY: setsid in the child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the services")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        while !env_file.exists() {
            if std::time::Instant::now() > deadline || !alive(child.id() as i32) {
                bail!(
                    "services did not come up; see {}",
                    state_dir.join("up.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        print!("{}", std::fs::read_to_string(&env_file)?);
        println!("# stop with: floodgate-local down");
        return Ok(());
    }
    let stack = LocalStack::start(StackOptions {
        moto: true,
        durable: true,
        state_dir: Some(state_dir.join("services")),
        ..StackOptions::default()
    })
    .await?;
    std::fs::write(pid_file(state_dir), std::process::id().to_string())?;
    let mut env = format!(
        "FLOODGATE_WRITER_URL={}\nFLOODGATE_READER_URL={}\n# primary (direct): {}\n# replica (direct): {}\n",
        stack.writer_url(),
        stack.reader_url(),
        stack.primary_url(),
        stack.replica_url()
    );
    if let Some(m) = stack.moto_endpoint() {
        env.push_str(&format!("AWS_ENDPOINT_URL={m}\n"));
    }
    std::fs::write(&env_file, &env)?;
    print!("{env}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(stack);
    let _ = std::fs::remove_file(pid_file(state_dir));
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}

pub fn down(state_dir: &Path) -> Result<()> {
    let Some(pid) = running_pid(state_dir) else {
        println!("nothing is up for {}", state_dir.display());
        return Ok(());
    };
    // SAFETY: signalling the pid `up` recorded.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        bail!("pid {pid} still running after 60 s");
    }
    println!("stopped");
    Ok(())
}
