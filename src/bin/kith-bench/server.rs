//! The servers under test: kith (the release binary next to this one) and Synapse (from
//! PyPI, in a virtualenv the benchmark makes if it is missing), each started on a loopback
//! port with a fresh data directory, pinned to CPU 0 when there are two or more, and
//! timed from spawn to the first successful `/versions`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs;

pub struct Server {
    pub name: &'static str,
    pub base: String,
    pub pid: u32,
    /// Spawn to the first 200 from `/_matrix/client/versions`.
    pub startup: Option<Duration>,
    /// How it was set up, for the report.
    pub description: String,
    child: Option<Child>,
    _data: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs `command` on the server's CPU, when the load generator has one to itself.
fn pinned(command: &mut Command) -> &mut Command {
    if let Some(cpu) = crate::SERVER_CPU.get().copied().flatten() {
        // SAFETY: only an async-signal-safe system call between fork and exec.
        unsafe {
            command.pre_exec(move || procfs::pin_to(cpu));
        }
    }
    command
}

/// Polls `/versions` until it answers, at most `limit`.
async fn wait_ready(http: &reqwest::Client, base: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let url = format!("{base}/_matrix/client/versions");
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{base} did not answer /versions within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The kith binary: `--kith`, else the one built beside this benchmark (built first, with
/// the same profile, when run through `cargo run`).
pub fn kith_binary(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let beside = me.with_file_name("kith");
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = me.parent().is_some_and(|d| d.ends_with("release"));
        let mut build = Command::new(cargo);
        build.args(["build", "--bin", "kith"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("building kith failed".into());
        }
    }
    match beside.exists() {
        true => Ok(beside),
        false => Err(format!(
            "no kith binary at {}; give --kith",
            beside.display()
        )),
    }
}

pub async fn start_kith(binary: &Path, http: &reqwest::Client) -> Result<Server, String> {
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("KITH_SERVER_NAME", "bench.kith")
        .env("KITH_LISTEN__CLIENT", format!("127.0.0.1:{port}"))
        .env("KITH_FEDERATION__ENABLED", "false")
        .env("KITH_DATABASE__PATH", data.path())
        .env("KITH_REGISTRATION__MODE", "open")
        // The workload's direct chats are between strangers: no friendship needed.
        .env("KITH_CONTACTS__DM_REQUIRES_FRIENDSHIP", "off")
        .env("KITH_LIMITS__LOGIN_FAILURE_BURST", "1000000")
        // The load is many messages from few users: no rate limit (Synapse's are lifted too).
        .env("KITH_RATE_LIMITS__MESSAGES__BURST", "1000000000")
        .env("KITH_RATE_LIMITS__REGISTRATION__BURST", "1000000")
        .env("KITH_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let child = pinned(&mut command)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id();
    let mut server = Server {
        name: "kith",
        base: base.clone(),
        pid,
        startup: None,
        description: format!(
            "kith {} ({}), RocksDB, plain HTTP, federation off, open registration, \
             dm_requires_friendship off, rate limits off",
            env!("CARGO_PKG_VERSION"),
            binary.display()
        ),
        child: Some(child),
        _data: Some(data),
    };
    wait_ready(http, &base, Duration::from_secs(60)).await?;
    server.startup = Some(started.elapsed());
    Ok(server)
}

/// The Python of a virtualenv with Synapse: `--synapse-python`, `$KITH_SYNAPSE_PYTHON`, the
/// CI's venv, or a venv made here from `.ci/synapse-requirements.txt` (pinned).
pub fn synapse_python(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    if let Ok(path) = std::env::var("KITH_SYNAPSE_PYTHON") {
        return Ok(path.into());
    }
    let ci = PathBuf::from(".ci/synapse-venv/bin/python");
    if ci.exists() {
        return Ok(ci);
    }
    let venv = PathBuf::from("target/bench-synapse-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("installing Synapse from PyPI into {} ...", venv.display());
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("python3 -m venv: {e}"))?;
        let installed = made.success()
            && Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(".ci/synapse-requirements.txt")
                .status()
                .map_err(|e| format!("pip install: {e}"))?
                .success();
        if !installed {
            let _ = std::fs::remove_dir_all(&venv);
            return Err("installing Synapse failed (needs python3-venv and PyPI)".into());
        }
    }
    Ok(python)
}

pub async fn start_synapse(python: &Path, http: &reqwest::Client) -> Result<Server, String> {
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let version = Command::new(python)
        .args(["-c", "import synapse; print(synapse.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut command = Command::new(python);
    command
        .arg("tests/peers/synapse_peer.py")
        .args(["--dir", &data.path().to_string_lossy()])
        .args(["--port", &port.to_string(), "--http"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let child = pinned(&mut command)
        .spawn()
        .map_err(|e| format!("cannot start Synapse: {e}"))?;
    let pid = child.id();
    let mut server = Server {
        name: "synapse",
        base: base.clone(),
        pid,
        startup: None,
        description: format!(
            "Synapse {version} (PyPI), SQLite, plain HTTP, one process, open registration, \
             rate limits off (tests/peers/synapse_peer.py --http)"
        ),
        child: Some(child),
        _data: Some(data),
    };
    wait_ready(http, &base, Duration::from_secs(120)).await?;
    server.startup = Some(started.elapsed());
    Ok(server)
}

/// A server someone else started.
pub fn external(base: &str, pid: Option<u32>) -> Server {
    Server {
        name: "server",
        base: base.trim_end_matches('/').to_owned(),
        pid: pid.unwrap_or(0),
        startup: None,
        description: format!("a running server at {base}"),
        child: None,
        _data: None,
    }
}
