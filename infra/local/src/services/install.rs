//! Finds — and, as root, installs — what the local stack runs: PostgreSQL and PgBouncer
//! from Debian's packages, moto server in a private virtualenv. Not root: prints the exact
//! command instead.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Where tools the project installs live (a virtualenv for moto); outside the checkout so
/// a fresh clone reuses them.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("FLOODGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/floodgate-tools"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The binaries the stack needs.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub pg_bin: PathBuf,
    pub pgbouncer: PathBuf,
    pub moto_server: Option<PathBuf>,
}

/// The newest installed PostgreSQL's bin directory (Debian layout).
fn find_pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

fn find_pgbouncer() -> Option<PathBuf> {
    ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn moto_path() -> PathBuf {
    tools_dir().join("venv-moto/bin/moto_server")
}

/// Runs a command as a lock holder so parallel test binaries do not run apt-get or pip at
/// the same time.
fn with_install_lock<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::os::fd::AsRawFd;
    let dir = tools_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("install.lock"))?;
    // SAFETY: flock on a valid, open file descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("could not lock {}", dir.join("install.lock").display());
    }
    let out = f();
    // The lock is released when `lock` closes.
    drop(lock);
    out
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let line = format!("apt-get install -y {}", packages.join(" "));
    if !is_root() {
        bail!("missing packages; install them as root with:\n  apt-get update && {line}");
    }
    eprintln!(
        "floodgate-local: installing {} (apt-get)",
        packages.join(" ")
    );
    run(
        Command::new("apt-get")
            .arg("update")
            .arg("-qq")
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &line,
    )
}

/// Creates the virtualenv `name` under the tools folder (installing python3-venv if
/// needed) and pip-installs `requirements` into it.
fn install_into_venv(name: &str, requirements: &[&str]) -> Result<PathBuf> {
    let venv = tools_dir().join(name);
    let venv_ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !venv_ok {
        apt_install(&["python3", "python3-venv"])?;
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
    }
    let listed = requirements.join(" ");
    eprintln!(
        "floodgate-local: installing {listed} into {}",
        venv.display()
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(requirements),
        &format!("pip install {listed}"),
    )?;
    Ok(venv)
}

fn ensure_moto() -> Result<PathBuf> {
    let moto = moto_path();
    if moto.exists() {
        return Ok(moto);
    }
    install_into_venv("venv-moto", &["moto[server]>=5,<6"])?;
    if !moto.exists() {
        bail!("moto_server not found at {} after install", moto.display());
    }
    Ok(moto)
}

/// Finds every tool, installing what is missing when running as root.
pub fn ensure_installed(with_moto: bool) -> Result<Toolchain> {
    with_install_lock(|| {
        let mut missing = Vec::new();
        if find_pg_bin().is_none() {
            missing.extend(["postgresql", "postgresql-contrib"]);
        }
        if find_pgbouncer().is_none() {
            missing.push("pgbouncer");
        }
        if !missing.is_empty() {
            apt_install(&missing)?;
        }
        let pg_bin = find_pg_bin().context("PostgreSQL binaries not found after install")?;
        let pgbouncer = find_pgbouncer().context("pgbouncer not found after install")?;
        let moto_server = if with_moto {
            Some(ensure_moto()?)
        } else {
            None
        };
        Ok(Toolchain {
            pg_bin,
            pgbouncer,
            moto_server,
        })
    })
}

pub fn pg_tool(tc: &Toolchain, name: &str) -> PathBuf {
    tc.pg_bin.join(name)
}

/// The Python of a private virtualenv holding GOV.UK Notify's published client
/// (`notifications-python-client` from PyPI), installed when missing. The end-to-end test
/// drives Floodgate with the unmodified client through it.
pub fn ensure_notify_client() -> Result<PathBuf> {
    with_install_lock(|| {
        let venv = tools_dir().join("venv-notify");
        let python = venv.join("bin/python");
        let installed = python.exists()
            && Command::new(&python)
                .args(["-c", "import notifications_python_client"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if installed {
            return Ok(python);
        }
        install_into_venv("venv-notify", &["notifications-python-client"])?;
        Ok(python)
    })
}

/// `cargo-lambda` (PyPI, pinned): its Lambda Runtime API emulator (`cargo lambda watch`)
/// and `cargo lambda invoke` run the functions' real binaries in the end-to-end tests, and
/// `infra/deploy.sh` builds the zips with it. Installed when missing.
pub fn ensure_cargo_lambda() -> Result<PathBuf> {
    with_install_lock(|| {
        let bin = tools_dir().join("venv-cargo-lambda/bin/cargo-lambda");
        if bin.exists() {
            return Ok(bin);
        }
        install_into_venv("venv-cargo-lambda", &["cargo-lambda==1.9.2"])?;
        if !bin.exists() {
            bail!("cargo-lambda not found at {} after install", bin.display());
        }
        Ok(bin)
    })
}

/// `schemathesis` and `PyJWT` (PyPI, pinned): the contract test runs schemathesis against
/// the local front, with a hook that signs a fresh Notify JWT for its requests. Installed
/// when missing; the path of the `schemathesis` command.
pub fn ensure_schemathesis() -> Result<PathBuf> {
    with_install_lock(|| {
        let bin = tools_dir().join("venv-schemathesis/bin/schemathesis");
        let python = tools_dir().join("venv-schemathesis/bin/python");
        let installed = bin.exists()
            && Command::new(&python)
                .args(["-c", "import jwt, schemathesis"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if installed {
            return Ok(bin);
        }
        install_into_venv(
            "venv-schemathesis",
            &["schemathesis==4.32.5", "PyJWT==2.15.1"],
        )?;
        if !bin.exists() {
            bail!("schemathesis not found at {} after install", bin.display());
        }
        Ok(bin)
    })
}
