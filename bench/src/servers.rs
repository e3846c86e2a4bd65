//! Starting, configuring and stopping the two registries, and reading their
//! memory use from `/proc`.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::{Endpoint, Result, wait_ready};

pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-password-0123";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Berth,
    Distribution,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Berth => "Berth",
            Kind::Distribution => "Distribution",
        }
    }
}

/// A running registry process (killed on drop).
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    child: Child,
    /// Credentials a client may use: (label, endpoint). Without auth, one anonymous entry.
    pub clients: Vec<(String, Endpoint)>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Memory use from `/proc/<pid>/status`.
    pub fn memory(&self) -> Option<Memory> {
        memory_of(self.pid())
    }

    /// Stops the process and waits for it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// VmRSS: everything resident, including the mapped executable.
    pub rss: u64,
    /// VmHWM: the peak of VmRSS since the process started.
    pub hwm: u64,
    /// RssAnon: private memory (heap, stacks), without file-backed pages.
    pub anon: u64,
}

pub fn memory_of(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(Memory { rss: field("VmRSS:")?, hwm: field("VmHWM:")?, anon: field("RssAnon:")? })
}

/// CPU time (user + system, every thread, living or gone) a process has
/// used so far, in seconds, from `/proc/<pid>/stat` (clock-tick resolution).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let ticks = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

/// `getconf CLK_TCK`, read once (100 on Linux in practice).
fn clock_ticks() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// A free loopback port (bound and released; the tiny race is acceptable here).
fn free_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn log_files(dir: &Path) -> Result<(Stdio, Stdio)> {
    let out = fs::File::create(dir.join("server.log"))?;
    let err = out.try_clone()?;
    Ok((Stdio::from(out), Stdio::from(err)))
}

/// Removes inherited configuration variables so only what we set applies.
fn clean_env(cmd: &mut Command, prefix: &str) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(&k);
        }
    }
}

/// How one Berth runs: its binary and the extra environment (`--berth-env`,
/// `--berth-b-env`) applied after the bench's own settings.
#[derive(Debug, Clone, Copy)]
pub struct BerthSpec<'a> {
    pub bin: &'a Path,
    pub env: &'a [(String, String)],
}

fn berth_command(spec: BerthSpec<'_>, dir: &Path, addr: SocketAddr, auth: bool) -> Command {
    let mut cmd = Command::new(spec.bin);
    clean_env(&mut cmd, "BERTH_");
    cmd.env("BERTH_LISTEN", addr.to_string())
        .env("BERTH_DATA_DIR", dir.join("data"))
        .env("BERTH_AUTH_ENABLED", if auth { "true" } else { "false" })
        .env("BERTH_LOG_LEVEL", "warn")
        .env("RUST_LOG", "warn")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    cmd
}

/// The `[quotas]` section as this Berth reads its configuration (`berth
/// config`, compact JSON), or why there is none: shows that extra
/// environment such as `BERTH_QUOTAS_OWNER_BYTES` took effect.
pub fn berth_quotas(spec: BerthSpec<'_>, dir: &Path, auth: bool) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut cmd = berth_command(spec, dir, addr, auth);
    let out = match cmd.arg("config").stdout(Stdio::piped()).stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => out,
        Ok(out) => return format!("`berth config` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => return format!("`berth config` failed: {e}"),
    };
    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(v) => match v.get("quotas") {
            Some(q) => q.to_string(),
            None => "none (this build has no [quotas])".to_owned(),
        },
        Err(e) => format!("`berth config` printed no JSON: {e}"),
    }
}

/// Runs a Berth CLI command to completion and returns its standard output.
fn berth_cli(spec: BerthSpec<'_>, dir: &Path, addr: SocketAddr, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let bin = spec.bin;
    let mut cmd = berth_command(spec, dir, addr, true);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("running {}: {e}", bin.display()))?;
    if let Some(input) = stdin {
        child.stdin.take().expect("piped").write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "berth {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts Berth on SQLite + filesystem under `dir`. With `auth`, creates the
/// user and a personal access token first and offers both as clients,
/// labelled `<name> (PAT)` and `<name> (password)`; without, one `<name>`.
pub async fn start_berth(spec: BerthSpec<'_>, dir: &Path, auth: bool, name: &str) -> Result<Server> {
    let bin = spec.bin;
    fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    let mut clients = Vec::new();
    if auth {
        berth_cli(spec, dir, addr, &["migrate"], None)?;
        berth_cli(spec, dir, addr, &["user", "add", USER, "--password-stdin"], Some(&format!("{PASSWORD}\n")))?;
        let out = berth_cli(spec, dir, addr, &["token", "create", USER, "--scopes", "write:package"], None)?;
        let token = out.lines().map(str::trim).rfind(|l| !l.is_empty()).ok_or("berth token create printed nothing")?;
        clients.push((format!("{name} (PAT)"), Endpoint::basic(addr, USER, token)));
        clients.push((format!("{name} (password)"), Endpoint::basic(addr, USER, PASSWORD)));
    } else {
        clients.push((name.to_owned(), Endpoint { addr, authorization: None }));
    }
    let (out, err) = log_files(dir)?;
    let mut cmd = berth_command(spec, dir, addr, auth);
    cmd.arg("serve").stdout(out).stderr(err);
    let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let server = Server { kind: Kind::Berth, addr, dir: dir.to_owned(), child, clients };
    wait_ready(addr, Duration::from_secs(60)).await.map_err(|e| with_log(e, dir))?;
    Ok(server)
}

/// Starts Distribution with the filesystem driver under `dir`, deletes
/// enabled, the in-memory blob descriptor cache of its stock configuration,
/// warn-level logs and no access log. With `auth`, htpasswd (bcrypt, made
/// with `htpasswd -B` at its default cost) and Basic auth on every request.
pub async fn start_distribution(bin: &Path, htpasswd: &Path, dir: &Path, auth: bool) -> Result<Server> {
    fs::create_dir_all(dir.join("data"))?;
    let addr = free_addr()?;
    let mut auth_section = String::new();
    let mut clients = Vec::new();
    if auth {
        let out = Command::new(htpasswd)
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .map_err(|e| format!("running {} (apt-get install apache2-utils): {e}", htpasswd.display()))?;
        if !out.status.success() {
            return Err(format!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let file = dir.join("htpasswd");
        fs::write(&file, &out.stdout)?;
        auth_section = format!("auth:\n  htpasswd:\n    realm: bench\n    path: {}\n", file.display());
        clients.push(("Distribution".to_owned(), Endpoint::basic(addr, USER, PASSWORD)));
    } else {
        clients.push(("Distribution".to_owned(), Endpoint { addr, authorization: None }));
    }
    let config = format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: berth-bench-secret
{auth_section}",
        data = dir.join("data").display()
    );
    let config_path = dir.join("config.yml");
    fs::write(&config_path, config)?;
    let (out, err) = log_files(dir)?;
    let mut cmd = Command::new(bin);
    clean_env(&mut cmd, "REGISTRY_");
    cmd.arg("serve").arg(&config_path).stdin(Stdio::null()).stdout(out).stderr(err);
    let child =
        cmd.spawn().map_err(|e| format!("starting {} (apt-get install docker-registry): {e}", bin.display()))?;
    let server = Server { kind: Kind::Distribution, addr, dir: dir.to_owned(), child, clients };
    wait_ready(addr, Duration::from_secs(60)).await.map_err(|e| with_log(e, dir))?;
    Ok(server)
}

fn with_log(e: crate::client::Error, dir: &Path) -> crate::client::Error {
    let log = fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{e}\nserver log ({}):\n{}", dir.join("server.log").display(), tail.join("\n")).into()
}
