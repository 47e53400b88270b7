//! The sandbox against the real kernel.
//!
//! A sandbox cannot be undone, so every case runs in a fresh process: the
//! test (root) prepares a private home/tmp for an unused uid, then re-executes
//! this test binary with only `child_entry` selected and the case in an
//! environment variable. The child drops to that uid (no groups, no
//! capabilities), calls `confine`, and execs `aivault-probe`, which attempts
//! each check and prints JSON lines that the parent asserts on.
//!
//! These tests need root (CI runs them as root) and fail without it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use aivault_runner::{confine, confine_keeping, Enforcement, Level, Limits, SandboxSpec};
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

const CASE_ENV: &str = "AIVAULT_SANDBOX_CASE";
const PROBE: &str = env!("CARGO_BIN_EXE_aivault-probe");
const EACCES: i32 = libc::EACCES;
const EPERM: i32 = libc::EPERM;

#[derive(Serialize, Deserialize, Default)]
struct Case {
    uid: u32,
    gid: u32,
    /// Supplementary groups the child keeps (none unless a case says so).
    #[serde(default)]
    groups: Vec<u32>,
    spec: Option<SandboxSpec>,
    checks: Vec<String>,
    env: Vec<(String, String)>,
    /// Open two descriptors without close-on-exec before confining; keep
    /// the second via `confine_keeping`. Their numbers go to the probe as
    /// `fd:N` checks appended by the child.
    leak_fds: bool,
}

// ---------------------------------------------------------------- child side

/// Entry point of the re-executed child; a no-op in the normal test run.
#[test]
fn child_entry() {
    let Ok(raw) = std::env::var(CASE_ENV) else {
        return;
    };
    let case: Case = serde_json::from_str(&raw).expect("case json");
    let fail = |what: String| -> ! {
        println!("{}", serde_json::json!({ "error": what }));
        std::process::exit(3)
    };
    let groups: Vec<Gid> = case.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).unwrap_or_else(|e| fail(format!("setgroups: {e}")));
    let gid = Gid::from_raw(case.gid);
    let uid = Uid::from_raw(case.uid);
    nix::unistd::setresgid(gid, gid, gid).unwrap_or_else(|e| fail(format!("setresgid: {e}")));
    nix::unistd::setresuid(uid, uid, uid).unwrap_or_else(|e| fail(format!("setresuid: {e}")));

    let mut checks = case.checks.clone();
    let leaked: Vec<std::fs::File> = if case.leak_fds {
        (0..2)
            .map(|_| {
                let file =
                    std::fs::File::open("/dev/null").unwrap_or_else(|e| fail(format!("open: {e}")));
                // Clear close-on-exec: a descriptor that would leak.
                nix::fcntl::fcntl(
                    file.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )
                .unwrap_or_else(|e| fail(format!("fcntl: {e}")));
                file
            })
            .collect()
    } else {
        Vec::new()
    };
    for fd in &leaked {
        checks.push(format!("fd:{}", fd.as_raw_fd()));
    }
    if let Some(spec) = &case.spec {
        let result = match leaked.last() {
            Some(keep) => confine_keeping(spec, &[keep.as_fd()]),
            None => confine(spec),
        };
        match result {
            Ok(enforcement) => println!("{}", serde_json::json!({ "enforcement": enforcement })),
            Err(e) => fail(format!("confine: {e}")),
        }
    }
    // The first descriptor was closed by confine; do not close it again.
    for fd in leaked {
        std::mem::forget(fd);
    }
    let err = Command::new(PROBE)
        .args(&checks)
        .env_clear()
        .envs(case.env.iter().map(|(k, v)| (k, v)))
        .exec();
    fail(format!("exec probe: {err}"))
}

// --------------------------------------------------------------- parent side

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sandbox tests must run as root (they switch to unused uids)"
    );
}

/// An unused uid/gid pair from 64000..65000 with no passwd/group entry,
/// distinct for every call in this test process.
fn fresh_ids() -> (u32, u32) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 64_000 + (std::process::id() % 500);
    loop {
        let n = base + NEXT.fetch_add(1, Ordering::SeqCst) % 500;
        let free_user = matches!(User::from_uid(Uid::from_raw(n)), Ok(None));
        let free_group = matches!(Group::from_gid(Gid::from_raw(n)), Ok(None));
        if free_user && free_group {
            return (n, n);
        }
    }
}

/// A root-owned 0755 directory holding the run's private dirs and fixtures.
struct Fixture {
    root: tempfile::TempDir,
    uid: u32,
    gid: u32,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let (uid, gid) = fresh_ids();
        let root = tempfile::Builder::new()
            .prefix("aivault-sandbox-")
            .tempdir()
            .expect("tempdir");
        set_mode(root.path(), 0o755);
        let fixture = Self { root, uid, gid };
        for private in ["home", "tmp"] {
            let dir = fixture.path(private);
            std::fs::create_dir(&dir).expect("mkdir");
            chown(&dir, Some(uid), Some(gid)).expect("chown");
            set_mode(&dir, 0o700);
        }
        // World-readable, listed in `read`.
        std::fs::create_dir(fixture.path("listed")).expect("mkdir");
        std::fs::write(fixture.path("listed/file"), "listed").expect("write");
        set_mode(&fixture.path("listed/file"), 0o644);
        // World-readable, listed nowhere: only Landlock stops it.
        std::fs::create_dir(fixture.path("unlisted")).expect("mkdir");
        std::fs::write(fixture.path("unlisted/file"), "unlisted").expect("write");
        set_mode(&fixture.path("unlisted/file"), 0o644);
        // Root-only.
        std::fs::create_dir(fixture.path("private")).expect("mkdir");
        std::fs::write(fixture.path("private/file"), "private").expect("write");
        set_mode(&fixture.path("private"), 0o700);
        fixture
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            home: self.path("home"),
            tmp: self.path("tmp"),
            read: vec![self.path("listed")],
            write: vec![],
            exec: vec![PathBuf::from(PROBE)],
            cwd: None,
            cwd_writable: false,
            tcp_connect: vec![],
            tcp_bind: vec![],
            limits: Limits::default(),
            require_full_landlock: false,
            isolation: Default::default(),
        }
    }

    fn case(&self, spec: SandboxSpec, checks: &[String]) -> Case {
        Case {
            uid: self.uid,
            gid: self.gid,
            spec: Some(spec),
            checks: checks.to_vec(),
            ..Case::default()
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[derive(Debug, Default)]
struct Report {
    enforcement: Option<Enforcement>,
    error: Option<String>,
    checks: HashMap<String, Result<(), i32>>,
}

impl Report {
    fn parse(line: &str, report: &mut Report) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        if let Some(e) = value.get("enforcement") {
            report.enforcement = Some(serde_json::from_value(e.clone()).expect("enforcement"));
        } else if let Some(e) = value.get("error") {
            report.error = Some(e.to_string());
        } else if let Some(check) = value.get("check").and_then(|c| c.as_str()) {
            let result = if value["ok"].as_bool() == Some(true) {
                Ok(())
            } else {
                Err(value["errno"].as_i64().map_or(-1, |e| e as i32))
            };
            report.checks.insert(check.to_owned(), result);
        }
    }

    fn get(&self, check: &str) -> Result<(), i32> {
        *self
            .checks
            .get(check)
            .unwrap_or_else(|| panic!("no result for {check}: {self:?}"))
    }

    fn allowed(&self, check: &str) {
        assert_eq!(self.get(check), Ok(()), "{check} should be allowed");
    }

    fn denied(&self, check: &str, errno: i32) {
        assert_eq!(self.get(check), Err(errno), "{check} should be denied");
    }
}

fn child_command(case: &Case) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(CASE_ENV, serde_json::to_string(case).expect("case"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    cmd
}

fn run(case: &Case) -> Report {
    let output = child_command(case).output().expect("spawn child");
    let mut report = Report::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        Report::parse(line, &mut report);
    }
    report
}

fn run_ok(case: &Case) -> Report {
    let report = run(case);
    assert!(report.error.is_none(), "child failed: {:?}", report.error);
    assert!(report.enforcement.is_some(), "no enforcement: {report:?}");
    report
}

/// Says, where the suite's report collects it, that a check could not be
/// made on this kernel and why: `scripts/test.sh` sets
/// `AIVAULT_NOT_TESTED_LOG` and prints every such line before its
/// summary. A check that cannot be made is never counted as passed
/// silently.
fn not_tested(what: &str, why: &str) {
    let line = format!("NOT TESTED: {what}: {why}\n");
    eprint!("{line}");
    if let Some(path) = std::env::var_os("AIVAULT_NOT_TESTED_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

fn kernel_abi() -> i32 {
    aivault_runner::sys::landlock_abi_version()
}

// -------------------------------------------------------------------- cases

#[test]
fn filesystem_is_confined() {
    let fx = Fixture::new();
    let tag = std::process::id();
    std::fs::copy("/usr/bin/true", fx.path("home/true")).expect("copy true");
    chown(fx.path("home/true"), Some(fx.uid), Some(fx.gid)).expect("chown");
    let checks = [
        format!("write:{}", fx.p("home/new")),
        format!("write:{}", fx.p("tmp/new")),
        format!("read:{}", fx.p("home")),
        format!("write:/var/tmp/aivault-probe-{tag}"),
        format!("write:/tmp/aivault-probe-{tag}"),
        "write:/etc/aivault-probe".to_owned(),
        format!("read:{}", fx.p("listed/file")),
        format!("write:{}", fx.p("listed/new")),
        format!("read:{}", fx.p("unlisted/file")),
        format!("read:{}", fx.p("private/file")),
        "read:/root".to_owned(),
        "environ".to_owned(),
        "read:/proc/self/status".to_owned(),
        "read:/proc/1/environ".to_owned(),
        "read:/sys/kernel".to_owned(),
        "read:/etc/passwd".to_owned(),
        "read:/etc/shadow".to_owned(),
        "write:/dev/null".to_owned(),
        "read:/dev/urandom".to_owned(),
        "exec:/usr/bin/true".to_owned(),
        format!("exec:{}", fx.p("home/true")),
    ];
    let mut case = fx.case(fx.spec(), &checks);
    case.env = vec![("AIVAULT_TEST_SECRET".into(), "hunter2".into())];
    let r = run_ok(&case);
    r.allowed(&checks[0]);
    r.allowed(&checks[1]);
    r.allowed(&checks[2]);
    // /var/tmp and /tmp are world-writable: only Landlock says no.
    r.denied(&checks[3], EACCES);
    r.denied(&checks[4], EACCES);
    r.denied(&checks[5], EACCES);
    r.allowed(&checks[6]);
    r.denied(&checks[7], EACCES);
    // World-readable but not listed: only Landlock says no.
    r.denied(&checks[8], EACCES);
    r.denied(&checks[9], EACCES);
    r.denied("read:/root", EACCES);
    // The command cannot dump its own secrets from procfs.
    r.denied("environ", EACCES);
    r.denied("read:/proc/self/status", EACCES);
    r.denied("read:/proc/1/environ", EACCES);
    r.denied("read:/sys/kernel", EACCES);
    r.allowed("read:/etc/passwd");
    r.denied("read:/etc/shadow", EACCES);
    r.allowed("write:/dev/null");
    r.allowed("read:/dev/urandom");
    r.allowed("exec:/usr/bin/true");
    // Writable places are not executable.
    r.denied(&checks[20], EACCES);
    assert!(!Path::new(&format!("/var/tmp/aivault-probe-{tag}")).exists());
}

#[test]
fn processes_and_kernel_interfaces_are_confined() {
    let fx = Fixture::new();
    let me = std::process::id();
    let checks: Vec<String> = [
        format!("ptrace:{me}"),
        "ptrace:1".to_owned(),
        "ptrace-child".to_owned(),
        "mount".to_owned(),
        "unshare".to_owned(),
        "clone-newuser".to_owned(),
        "clone3".to_owned(),
        "keyctl".to_owned(),
        "io_uring".to_owned(),
        format!("kill:{me}"),
    ]
    .into();
    let r = run_ok(&fx.case(fx.spec(), &checks));
    r.denied(&checks[0], EPERM);
    r.denied("ptrace:1", EPERM);
    // Same uid, own child: only seccomp says no.
    r.denied("ptrace-child", EPERM);
    r.denied("mount", EPERM);
    r.denied("unshare", EPERM);
    r.denied("clone-newuser", EPERM);
    r.denied("clone3", libc::ENOSYS);
    r.denied("keyctl", EPERM);
    r.denied("io_uring", EPERM);
    r.denied(&checks[9], EPERM);
}

#[test]
fn unconfined_probe_shows_the_checks_are_meaningful() {
    // The same uid without `confine`: what the sandbox takes away.
    let fx = Fixture::new();
    let tag = std::process::id();
    let checks = [
        "environ".to_owned(),
        format!("read:{}", fx.p("unlisted/file")),
        format!("write:/var/tmp/aivault-probe-u{tag}"),
        "ptrace-child".to_owned(),
        "clone3".to_owned(),
        "io_uring".to_owned(),
    ];
    let mut case = fx.case(fx.spec(), &checks);
    case.spec = None;
    let r = run(&case);
    assert!(r.error.is_none(), "{:?}", r.error);
    r.allowed("environ");
    r.allowed(&checks[1]);
    r.allowed(&checks[2]);
    r.allowed("ptrace-child");
    r.denied("clone3", libc::EINVAL);
}

#[test]
fn tcp_ports_are_confined() {
    let fx = Fixture::new();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let other = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed_port = allowed.local_addr().expect("addr").port();
    let other_port = other.local_addr().expect("addr").port();
    let free_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut spec = fx.spec();
    spec.tcp_connect = vec![allowed_port];
    let checks = [
        format!("connect:127.0.0.1:{allowed_port}"),
        format!("connect:127.0.0.1:{other_port}"),
        format!("bind:{free_port}"),
    ];
    let r = run_ok(&fx.case(spec, &checks));
    r.allowed(&checks[0]);
    if kernel_abi() >= 4 {
        assert!(r.enforcement.expect("enforcement").net_restricted);
        r.denied(&checks[1], EACCES);
        r.denied(&checks[2], EACCES);
    } else {
        assert!(!r.enforcement.expect("enforcement").net_restricted);
        not_tested(
            "TCP connect/bind denial",
            &format!("Landlock ABI {} < 4 has no network rules", kernel_abi()),
        );
    }
}

#[test]
fn enforcement_is_reported() {
    let fx = Fixture::new();
    let mut spec = fx.spec();
    spec.require_full_landlock = kernel_abi() >= 6;
    let r = run_ok(&fx.case(spec, &[]));
    let e = r.enforcement.expect("enforcement");
    assert!(e.seccomp);
    assert_eq!(e.landlock_abi, kernel_abi());
    if kernel_abi() >= 6 {
        assert_eq!(e.landlock, Level::Full);
        assert!(e.net_restricted && e.scoped_signals && e.scoped_abstract_unix);
    } else if kernel_abi() > 0 {
        assert_eq!(e.landlock, Level::Partial);
        not_tested(
            "full Landlock enforcement (signal and abstract-socket scopes)",
            &format!("Landlock ABI {} < 6", kernel_abi()),
        );
    } else {
        assert_eq!(e.landlock, Level::None);
        not_tested("any Landlock rule", "the kernel has no Landlock");
    }
}

#[test]
fn inherited_descriptors_are_closed_except_the_keep_list() {
    let fx = Fixture::new();
    let mut case = fx.case(fx.spec(), &[]);
    case.leak_fds = true;
    let r = run_ok(&case);
    let mut fds: Vec<(&String, &Result<(), i32>)> = r
        .checks
        .iter()
        .filter(|(k, _)| k.starts_with("fd:"))
        .collect();
    fds.sort_by_key(|(k, _)| k[3..].parse::<i32>().unwrap_or(0));
    assert_eq!(fds.len(), 2, "{r:?}");
    assert_eq!(*fds[0].1, Err(libc::EBADF), "leaked descriptor survived");
    assert_eq!(*fds[1].1, Ok(()), "kept descriptor was closed");
}

#[test]
fn confine_refuses_root() {
    require_root();
    let fx = Fixture::new();
    let mut case = fx.case(fx.spec(), &["exec:/usr/bin/true".to_owned()]);
    case.uid = 0;
    case.gid = 0;
    let r = run(&case);
    let error = r.error.expect("confine must refuse root");
    assert!(error.contains("root"), "{error}");
    assert!(r.checks.is_empty());
}

#[test]
fn supplementary_groups_only_in_caller_isolation_and_never_group_0() {
    require_root();
    let fx = Fixture::new();
    let (_, extra) = fresh_ids();
    let exec = ["exec:/usr/bin/true".to_owned()];

    let mut case = fx.case(fx.spec(), &exec);
    case.groups = vec![fx.gid, extra];
    let error = run(&case)
        .error
        .expect("a fresh-uid run must have no groups");
    assert!(error.contains("supplementary groups"), "{error}");

    let mut spec = fx.spec();
    spec.isolation = aivault_runner::Isolation::Caller;
    let mut case = fx.case(spec.clone(), &exec);
    case.groups = vec![fx.gid, extra];
    let r = run_ok(&case);
    r.allowed("exec:/usr/bin/true");

    let mut case = fx.case(spec, &exec);
    case.groups = vec![fx.gid, 0];
    let error = run(&case).error.expect("group 0 is refused in every mode");
    assert!(error.contains("group 0"), "{error}");
}

#[test]
fn caller_cannot_read_the_commands_environment() {
    // The command (uid A, confined, secret in env) sleeps; another uid B —
    // standing in for the caller, unconfined — tries to read it.
    let fx = Fixture::new();
    let mut command = fx.case(fx.spec(), &["sleep:20".to_owned()]);
    command.env = vec![("AIVAULT_TEST_SECRET".into(), "hunter2".into())];
    let mut child = child_command(&command).spawn().expect("spawn command");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // Wait until the probe runs (it reports `sleep` before sleeping).
    let mut ready = false;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.contains("\"check\":\"sleep:20\"") {
            ready = true;
            break;
        }
        assert!(!line.contains("\"error\""), "{line}");
    }
    assert!(ready, "command did not start");
    let pid = child.id();

    let (caller_uid, caller_gid) = fresh_ids();
    let checks = [
        format!("read:/proc/{pid}/environ"),
        format!("ptrace:{pid}"),
        format!("kill:{pid}"),
    ];
    let caller = Case {
        uid: caller_uid,
        gid: caller_gid,
        spec: None,
        checks: checks.to_vec(),
        ..Case::default()
    };
    let r = run(&caller);
    let _ = child.kill();
    let _ = child.wait();
    assert!(r.error.is_none(), "{:?}", r.error);
    r.denied(&checks[0], EACCES);
    r.denied(&checks[1], EPERM);
    r.denied(&checks[2], EPERM);
}
