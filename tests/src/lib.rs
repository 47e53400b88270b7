//! Harness for the integration tests: starts the real `aivaultd` as root in a
//! scratch directory and runs the real `vaultctl` as real unprivileged users.
//!
//! These tests need root (CI runs as root). They fail — never skip — when it
//! is missing: see [`require_root`].
#![forbid(unsafe_code)]

pub mod bus;
pub mod mcp_http;
pub mod mcp_stdio;
pub mod real_upstreams;
pub mod tls_upstream;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fails the test unless it runs as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this integration test needs root: it starts aivaultd and acts as other users (run scripts/test.sh as root)"
    );
}

/// Path of a workspace binary built by `cargo build --workspace` (the test
/// script builds them first, in the same profile as the tests).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A real, unprivileged local account, created on first use.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    /// Looks the account up, creating it (system account, no home, no login
    /// shell) if missing. Names start with `aivt-` so they are recognisable.
    pub fn ensure(name: &str) -> User {
        require_root();
        if nix::unistd::User::from_name(name).ok().flatten().is_none() {
            // Test binaries run at the same time; concurrent `useradd`s of
            // one name can each allocate a uid. One at a time, re-checked
            // under the lock.
            let lock = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open("/run/aivt-tests-useradd.lock")
                .expect("useradd lock file");
            let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("useradd lock");
            if nix::unistd::User::from_name(name).ok().flatten().is_none() {
                let status = Command::new("useradd")
                    .args([
                        "--system",
                        "--no-create-home",
                        "--shell",
                        "/usr/sbin/nologin",
                        name,
                    ])
                    .status()
                    .expect("running useradd");
                assert!(status.success(), "useradd {name} failed");
            }
        }
        let u = nix::unistd::User::from_name(name)
            .expect("getpwnam")
            .expect("user exists after useradd");
        User {
            name: name.to_string(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }

    pub fn root() -> User {
        User {
            name: "root".into(),
            uid: 0,
            gid: 0,
        }
    }
}

/// How to start a test daemon.
#[derive(Debug, Clone)]
pub struct Options {
    /// `file` (generated key file) or `passphrase`.
    pub provider: &'static str,
    pub passphrase: &'static str,
    /// Extra lines for the config file (e.g. `[limits]`).
    pub config: String,
    /// Contents of `policy.toml` (empty: no rules, every run refused).
    pub policy: String,
    /// Puts the runtime directory (socket, run directories) on its own
    /// tmpfs, as `RuntimeDirectory=` under `/run` is on an installed system:
    /// for benchmarks, which should measure that layout. Tests keep it on
    /// the scratch directory's file system.
    pub runtime_on_tmpfs: bool,
    /// Starts the daemon as the shipped unit does: its capability bounding
    /// set limited to the unit's `CapabilityBoundingSet=` and with
    /// `no_new_privs` (through `setpriv`), instead of with all of root's.
    pub unit_capabilities: bool,
    /// With `unit_capabilities`: the `packaging/examples` drop-ins
    /// installed too (their `CapabilityBoundingSet=` lines add to the
    /// unit's), e.g. `aivaultd-workdir.conf`.
    pub dropins: &'static [&'static str],
    /// Starts the daemon with `--testing`, which `[broker.testing]` in
    /// `config` needs (test suites only).
    pub testing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            provider: "file",
            passphrase: "correct horse battery staple",
            config: String::new(),
            policy: String::new(),
            runtime_on_tmpfs: false,
            unit_capabilities: false,
            dropins: &[],
            testing: false,
        }
    }
}

/// The shipped unit's `CapabilityBoundingSet=` as `setpriv
/// --bounding-set` wants it: `-all,+setuid,+setgid,…`.
pub fn unit_bounding_set() -> String {
    unit_bounding_set_with(&[])
}

/// [`unit_bounding_set`] with the `packaging/examples` drop-ins `dropins`
/// installed (systemd adds their `CapabilityBoundingSet=` lines).
pub fn unit_bounding_set_with(dropins: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit = root.join("systemd/system/aivaultd.service");
    let mut text = fs::read_to_string(&unit).expect("the shipped unit");
    for d in dropins {
        text += &fs::read_to_string(root.join("packaging/examples").join(d)).expect("the drop-in");
    }
    let caps: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .flat_map(str::split_whitespace)
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty(), "an empty CapabilityBoundingSet=");
    format!("-all,{}", caps.join(","))
}

/// A scratch installation: directories, key, config, and (while started) a daemon.
#[derive(Debug)]
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub opts: Options,
    /// This daemon's own slice of the run uid range, so tests running at the
    /// same time can tell their runs apart.
    pub run_uids: std::ops::Range<u32>,
    child: Option<Child>,
}

/// Uids per test daemon.
const RUN_UID_SLICE: u32 = 4096;

fn run_uid_slice() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slot = (std::process::id().wrapping_mul(7).wrapping_add(n)) % 4000;
    RUN_UID_FIRST + 65_536 + slot * RUN_UID_SLICE
}

impl Daemon {
    /// Creates the scratch layout and an initialised vault; does not start it.
    pub fn init(opts: Options) -> Daemon {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("aivault-test-")
            .tempdir()
            .expect("tempdir");
        // Users must reach the socket below it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::create_dir(dir.path().join("policy")).expect("policy dir");
        fs::set_permissions(dir.path().join("policy"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let pol = dir.path().join("policy/policy.toml");
        fs::write(&pol, &opts.policy).expect("policy");
        fs::set_permissions(&pol, fs::Permissions::from_mode(0o644)).expect("chmod");
        let first = run_uid_slice();
        let uid_lines = format!("uid_first = {first}\nuid_count = {RUN_UID_SLICE}\n");
        let config = if opts.config.contains("[runs]\n") {
            opts.config
                .replace("[runs]\n", &format!("[runs]\n{uid_lines}"))
        } else {
            format!("{}\n[runs]\n{uid_lines}", opts.config)
        };
        // No test daemon reaches for the machine's system bus; the D-Bus
        // tests name their private bus.
        let config = if config.contains("[dbus]\n") {
            config
        } else {
            format!("{config}\n[dbus]\nbus = \"none\"\n")
        };
        if opts.runtime_on_tmpfs {
            let run = dir.path().join("run");
            fs::create_dir(&run).expect("runtime dir");
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0755,size=256m", "aivault-bench"])
                .arg(&run)
                .status()
                .expect("mount");
            assert!(
                mounted.success(),
                "cannot mount a tmpfs on {}",
                run.display()
            );
        }
        let conf = dir.path().join("aivaultd.toml");
        fs::write(&conf, config).expect("config");
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).expect("chmod");
        let d = Daemon {
            dir,
            opts,
            run_uids: first..first + RUN_UID_SLICE,
            child: None,
        };
        let mut cmd = d.command();
        cmd.arg("init");
        if d.opts.provider == "passphrase" {
            cmd.stdin(Stdio::piped());
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("aivaultd init");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(d.opts.passphrase.as_bytes())
                .expect("passphrase");
        }
        let out = child.wait_with_output().expect("init");
        assert!(
            out.status.success(),
            "aivaultd init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    /// `init` then `start`.
    pub fn start_new(opts: Options) -> Daemon {
        let mut d = Daemon::init(opts);
        d.start();
        d
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn socket(&self) -> PathBuf {
        self.path("run/aivaultd.sock")
    }
    /// The broker's local endpoint: `http.sock` beside the daemon's socket.
    pub fn http_socket(&self) -> PathBuf {
        aivault_client::http::http_socket_path(&self.socket())
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.path("log/audit.jsonl")
    }
    /// The audit log's whole records, parsed. A record the daemon is
    /// writing at this moment (the exit of a run whose caller already has
    /// its status is audited meanwhile) has no line end yet and is left
    /// out; a whole line that is not JSON fails the test.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.audit_log()).expect("reading the audit log");
        let whole = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        whole
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("an audit record is not JSON ({e}): {l}"))
            })
            .collect()
    }
    pub fn key_file(&self) -> PathBuf {
        self.path("kek")
    }
    /// The directory holding per-run directories.
    pub fn runs_dir(&self) -> PathBuf {
        self.path("run/runs")
    }

    /// Replaces `policy.toml` (root-owned, 0644).
    pub fn write_policy(&self, text: &str) {
        let p = self.path("policy/policy.toml");
        fs::write(&p, text).expect("policy");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    /// Where the daemon's stdout and stderr go.
    pub fn output_log(&self) -> PathBuf {
        self.path("daemon.out")
    }

    /// `aivaultd` with every path pointing into the scratch directory.
    pub fn command(&self) -> Command {
        let mut cmd = if self.opts.unit_capabilities {
            let mut c = Command::new("setpriv");
            c.arg("--bounding-set")
                .arg(unit_bounding_set_with(self.opts.dropins))
                .arg("--no-new-privs")
                .arg("--")
                .arg(bin("aivaultd"));
            c
        } else {
            Command::new(bin("aivaultd"))
        };
        let provider = match self.opts.provider {
            "file" => format!("file:{}", self.key_file().display()),
            other => other.to_string(),
        };
        cmd.arg("--config")
            .arg(self.path("aivaultd.toml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .arg("--policy-dir")
            .arg(self.path("policy"))
            .arg("--audit-log")
            .arg(self.audit_log())
            .arg("--key-provider")
            .arg(provider)
            .env("AIVAULT_LOG", "info");
        if self.opts.testing {
            cmd.arg("--testing");
        }
        cmd
    }

    /// Starts `aivaultd` and waits until it answers `status`.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output_log())
            .expect("daemon log");
        let mut cmd = self.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn aivaultd");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = aivault_client::Client::connect(&self.socket()) {
                if c.call(aivault_proto::RequestBody::Status).is_ok() {
                    return;
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "aivaultd exited during start-up ({status}): {}",
                        fs::read_to_string(self.output_log()).unwrap_or_default()
                    );
                }
            }
            assert!(Instant::now() < deadline, "aivaultd did not become ready");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGKILL and reaps the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the daemon process is still alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Runs `vaultctl ARGS` as `user`, feeding `stdin`.
    pub fn vaultctl(&self, user: &User, args: &[&str], stdin: &[u8]) -> Output {
        vaultctl_at(&self.socket(), user, args, stdin)
    }

    /// A client connection as root, in-process.
    pub fn client(&self) -> aivault_client::Client {
        aivault_client::Client::connect(&self.socket()).expect("connect")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if self.opts.runtime_on_tmpfs {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(self.path("run"))
                .status();
        }
        if std::thread::panicking() {
            // Show what the daemon said: the test's own assertion is above.
            let log = fs::read_to_string(self.output_log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of the daemon's output ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Runs `vaultctl` as a real user (uid, gid, no supplementary groups).
pub fn vaultctl_at(socket: &Path, user: &User, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(bin("vaultctl"));
    cmd.args(args)
        .env_clear()
        .env("AIVAULT_SOCKET", socket)
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if user.uid != 0 {
        // std drops supplementary groups (setgroups(0)) when root sets a uid.
        cmd.uid(user.uid).gid(user.gid);
    }
    let mut child = cmd.spawn().expect("spawn vaultctl");
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    child.wait_with_output().expect("vaultctl")
}

/// Asserts success and returns stdout as text.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code and returns stderr as text.
#[track_caller]
pub fn fails_with(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "unexpected exit status\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// True if `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every regular file below `dir`, recursively.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(t) if t.is_file() => out.push(p),
                    _ => {}
                }
            }
        }
    }
    out
}

/// A random printable token of `n` characters.
pub fn token(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; n];
    getrandom::getrandom(&mut raw).expect("getrandom");
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// First uid of the daemon's default per-run range.
pub const RUN_UID_FIRST: u32 = 0x7000_0000;

impl Daemon {
    /// Live processes of this daemon's runs: under its run uids, apart from
    /// its warm runners (started ahead of any run, idle).
    pub fn run_processes(&self) -> Vec<(i32, u32)> {
        let warm = self.warm_uids();
        run_range_processes()
            .into_iter()
            .filter(|(_, uid)| self.run_uids.contains(uid) && !warm.contains(uid))
            .collect()
    }

    /// Live processes of this daemon's warm runners.
    pub fn warm_processes(&self) -> Vec<(i32, u32)> {
        let warm = self.warm_uids();
        run_range_processes()
            .into_iter()
            .filter(|(_, uid)| warm.contains(uid))
            .collect()
    }

    /// The uids of the daemon's warm runners, idle or being started, as
    /// `status` tells root; none if the daemon is not running.
    pub fn warm_uids(&self) -> Vec<u32> {
        let Ok(mut c) = aivault_client::Client::connect(&self.socket()) else {
            return Vec::new();
        };
        match c.call(aivault_proto::RequestBody::Status) {
            Ok(aivault_proto::Reply::Status(s)) => s.warm_runner_uids,
            _ => Vec::new(),
        }
    }

    /// The daemon's descriptor count at rest: waits (at most 20 s, then
    /// fails) until its status says it is quiescent — no run holding a
    /// slot, teardown included, the warm pool full and starting none —
    /// with this status request the only connection, and returns the count
    /// the daemon took while answering.
    pub fn resting_fd_count(&self) -> u32 {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let status = aivault_client::Client::connect(&self.socket())
                .ok()
                .and_then(|mut c| match c.call(aivault_proto::RequestBody::Status) {
                    Ok(aivault_proto::Reply::Status(s)) => Some(s),
                    _ => None,
                });
            if let Some(s) = &status {
                if s.quiescent && s.connections == 1 {
                    return s.open_fds;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon did not come to rest within 20 s: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run directories, apart from those of warm runners.
    pub fn run_dirs(&self) -> Vec<PathBuf> {
        let warm: Vec<String> = self.warm_uids().iter().map(u32::to_string).collect();
        fs::read_dir(self.runs_dir())
            .map(|r| {
                r.flatten()
                    .filter(|e| !warm.iter().any(|w| e.file_name() == w.as_str()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Pids of live (non-zombie) processes whose real uid is in the run range.
pub fn run_range_processes() -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            continue;
        }
        let uid = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l[4..].split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(uid) = uid.filter(|u| *u >= RUN_UID_FIRST && *u < RUN_UID_FIRST + 0x1000_0000) {
            out.push((pid, uid));
        }
    }
    out
}

/// Stores a user-scope secret for `user`.
pub fn set_secret(d: &Daemon, user: &User, name: &str, value: &str) {
    ok(&d.vaultctl(user, &["secrets", "set", name], value.as_bytes()));
}

/// Runs a dependency installer from `scripts/` (e.g. `mcp-deps.sh`), which
/// prints `… ready in DIR` last, and returns DIR. A failing installer fails
/// the test: the tools it installs are needed, never optional.
pub fn install_deps(script: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(bus::repo().join("scripts").join(script))
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/{script} failed; these tests need what it installs\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = stdout
        .lines()
        .last()
        .and_then(|l| l.split_once(" ready in ").map(|(_, d)| d.to_string()))
        .unwrap_or_else(|| panic!("scripts/{script} did not name its directory: {stdout}"));
    PathBuf::from(dir)
}
