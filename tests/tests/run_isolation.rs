//! Run path, acceptance 1–3: the command runs where the caller cannot reach
//! it; the caller cannot choose the binary or its environment; printing the
//! environment reveals no secret; refusals are clear and audited. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{fails_with, ok, set_secret, Daemon, Options, User};

const SECRET: &str = "s3cr3t-Value-For-Isolation-Tests-0042";

fn policy(alice: &User) -> String {
    format!(
        r#"
[[rule]]
name = "sleep"
command = "/usr/bin/sleep"
users = ["{a}"]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "id"
command = "/usr/bin/id"
users = ["{a}"]
args = [{{ exact = [] }}, {{ exact = ["-u"] }}]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "printenv"
command = "/usr/bin/printenv"
users = ["{a}"]
allow_interpreter = true
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "env"
command = "/usr/bin/env"
users = ["{a}"]
allow_interpreter = true
args = [{{ exact = [] }}]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "sh"
command = "/usr/bin/sh"
users = ["{a}"]
allow_interpreter = true
args = [{{ exact = ["-c", "env"] }}]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "cat"
command = "/usr/bin/cat"
users = ["{a}"]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "echo-for-staff"
command = "/usr/bin/echo"
groups = ["aivt-staff"]
args = [{{ prefix = ["hello"] }}]
"#,
        a = alice.name
    )
}

fn setup() -> (Daemon, User, User) {
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    let _ = Command::new("groupadd")
        .args(["--system", "aivt-staff"])
        .status();
    let d = Daemon::start_new(Options {
        policy: policy(&alice),
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", SECRET);
    (d, alice, bob)
}

const PROBE: &str = r#"
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_readv.restype = ctypes.c_ssize_t
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
out = []
for pid in map(int, sys.argv[1:]):
    r = {"pid": pid}
    try:
        open("/proc/%d/environ" % pid, "rb").read()
        r["environ"] = 0
    except OSError as e:
        r["environ"] = e.errno
    r["ptrace"] = 0 if libc.ptrace(16, pid, None, None) == 0 else ctypes.get_errno()
    buf = ctypes.create_string_buffer(16)
    local = iovec(ctypes.cast(buf, ctypes.c_void_p), 16)
    remote = iovec(0x400000, 16)
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    r["vm_readv"] = 0 if n >= 0 else ctypes.get_errno()
    out.append(r)
print(json.dumps(out))
"#;

#[test]
fn the_caller_cannot_read_trace_or_peek_at_a_running_command() {
    let (d, alice, _) = setup();
    let mut run = Command::new(aivault_tests::bin("vaultctl"))
        .args(["run", "--", "sleep", "30"])
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid_gid(&alice)
        .spawn()
        .unwrap();

    // Wait for this run's command (`sleep 30`, argv as the daemon passes it)
    // to appear; its uid identifies the run, and the runner shares it. Other
    // tests' runs may be alive meanwhile and are ignored.
    let deadline = Instant::now() + Duration::from_secs(15);
    let procs = loop {
        let all = d.run_processes();
        let sleeper = all.iter().find(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == b"/usr/bin/sleep\x0030\x00")
        });
        if let Some((_, uid)) = sleeper {
            let mine: Vec<(i32, u32)> = all.iter().filter(|(_, u)| u == uid).copied().collect();
            if mine.len() >= 2 {
                break mine;
            }
        }
        assert!(Instant::now() < deadline, "the run did not start: {all:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Control: the secret really is in the command's environment (root can see it).
    let with_secret: Vec<i32> = procs
        .iter()
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|e| aivault_tests::contains(&e, format!("TOKEN={SECRET}").as_bytes()))
                .unwrap_or(false)
        })
        .map(|(pid, _)| *pid)
        .collect();
    assert!(
        !with_secret.is_empty(),
        "the command holds the secret in its environment"
    );
    assert!(
        procs.iter().all(|(_, uid)| *uid != alice.uid),
        "the command does not run as the caller"
    );

    let pids: Vec<String> = procs.iter().map(|(p, _)| p.to_string()).collect();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            &alice.uid.to_string(),
            "--regid",
            &alice.gid.to_string(),
            "--clear-groups",
            "--",
            "/usr/bin/python3",
            "-c",
            PROBE,
        ])
        .args(&pids)
        .output()
        .unwrap();
    let results: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("probe output: {}", String::from_utf8_lossy(&out.stderr)));
    for r in results.as_array().unwrap() {
        assert_eq!(
            r["environ"],
            libc::EACCES,
            "reading /proc/<pid>/environ as the caller: {r}"
        );
        assert_eq!(r["ptrace"], libc::EPERM, "ptrace as the caller: {r}");
        assert_eq!(
            r["vm_readv"],
            libc::EPERM,
            "process_vm_readv as the caller: {r}"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGINT),
        "SIGINT is forwarded to the command"
    );
}

#[test]
fn the_caller_chooses_neither_binary_nor_environment() {
    let (d, alice, _) = setup();
    // A fake `id` first in the caller's PATH is not what runs.
    let evil = tempfile::Builder::new()
        .prefix("aivt-path-")
        .tempdir()
        .unwrap();
    std::fs::write(evil.path().join("id"), "#!/bin/sh\necho FAKE\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(evil.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        evil.path().join("id"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new(aivault_tests::bin("vaultctl"))
        .args(["run", "--", "id", "-u"])
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", format!("{}:/usr/bin:/bin", evil.path().display()))
        .env("LD_PRELOAD", "/nonexistent/evil.so")
        .env("BASH_ENV", "/nonexistent/evil.sh")
        .uid_gid(&alice)
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(!text.contains("FAKE"), "{text}");
    let run_uid: u32 = text.trim().parse().unwrap();
    assert!(
        run_uid >= aivault_tests::RUN_UID_FIRST,
        "ran under a per-run uid, got {run_uid}"
    );

    // The caller's LD_PRELOAD and BASH_ENV do not reach the command.
    let out = Command::new(aivault_tests::bin("vaultctl"))
        .args(["run", "--", "printenv"])
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("LD_PRELOAD", "/nonexistent/evil.so")
        .env("BASH_ENV", "/nonexistent/evil.sh")
        .uid_gid(&alice)
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(
        !text.contains("LD_PRELOAD") && !text.contains("BASH_ENV"),
        "{text}"
    );
    assert!(text.contains("PATH=/usr/local/bin:/usr/bin:/bin"), "{text}");

    // A binary the caller can write is refused even when a rule names it.
    let own = tempfile::Builder::new()
        .prefix("aivt-own-")
        .tempdir()
        .unwrap();
    std::fs::copy("/usr/bin/true", own.path().join("tool")).unwrap();
    std::os::unix::fs::chown(own.path(), Some(alice.uid), Some(alice.gid)).unwrap();
    std::fs::set_permissions(own.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tool = own.path().join("tool");
    d.write_policy(&format!(
        "{}\n[[rule]]\nname = \"own-tool\"\ncommand = \"{}\"\nusers = [\"{}\"]\n",
        policy(&alice),
        tool.display(),
        alice.name
    ));
    ok(&d.vaultctl(&User::root(), &["policy", "reload"], b""));
    let err = fails_with(
        &d.vaultctl(&alice, &["run", "--", tool.to_str().unwrap()], b""),
        4,
    );
    assert!(err.contains("root"), "{err}");

    // A name no rule mentions is refused before the daemon looks at the
    // filesystem: no existence, owner or mode oracle running as root.
    let err = fails_with(&d.vaultctl(&alice, &["run", "--", "/root/.bashrc"], b""), 4);
    assert!(err.contains("no rule allows /root/.bashrc"), "{err}");
}

trait AsUser {
    fn uid_gid(&mut self, u: &User) -> &mut Self;
}

impl AsUser for Command {
    fn uid_gid(&mut self, u: &User) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(u.uid).gid(u.gid)
    }
}

#[test]
fn printing_the_environment_reveals_no_secret() {
    let (d, alice, _) = setup();
    for args in [
        &["run", "--", "env"][..],
        &["run", "--", "printenv"],
        &["run", "--", "printenv", "TOKEN"],
        &["run", "--", "sh", "-c", "env"],
    ] {
        let out = d.vaultctl(&alice, args, b"");
        let text = ok(&out);
        assert!(!text.contains(SECRET), "{args:?} printed the secret");
        assert!(text.contains("[REDACTED:TOKEN]"), "{args:?}: {text}");
        assert!(!aivault_tests::contains(&out.stderr, SECRET.as_bytes()));
    }
    // `cat /proc/self/environ` cannot even open the file inside the sandbox.
    let out = d.vaultctl(&alice, &["run", "--", "cat", "/proc/self/environ"], b"");
    assert_ne!(out.status.code(), Some(0));
    assert!(!aivault_tests::contains(&out.stdout, SECRET.as_bytes()));
    assert!(!aivault_tests::contains(&out.stderr, SECRET.as_bytes()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}

#[test]
fn refusals_are_clear_and_audited() {
    let (d, alice, bob) = setup();
    let cases: [(&User, &[&str], &str); 5] = [
        (&alice, &["run", "--", "ls"], "no rule"),
        (&bob, &["run", "--", "sleep", "1"], "sleep"),
        (&alice, &["run", "--", "echo", "hello"], "echo"),
        (&alice, &["run", "--", "id", "-n"], "argument"),
        (&alice, &["run", "--secret", "OTHER", "--", "id"], "OTHER"),
    ];
    for (user, args, needle) in cases {
        let err = fails_with(&d.vaultctl(user, args, b""), 4);
        assert!(
            err.to_lowercase().contains(&needle.to_lowercase()),
            "{args:?}: {err}"
        );
    }
    let trail = ok(&d.vaultctl(
        &User::root(),
        &["--json", "audit", "list", "--limit", "1000"],
        b"",
    ));
    let denied = trail
        .lines()
        .filter(|l| l.contains("\"op\":\"run\"") && l.contains("\"denied\""))
        .count();
    assert_eq!(denied, 5, "{trail}");

    // A rule granting a pinned secret to another command is rejected; the
    // previous policy stays in force.
    let mut bad = policy(&alice);
    bad.push_str(
        "\n[[pin]]\nsecret = \"TOKEN\"\nscope = \"user\"\ncommands = [\"/usr/bin/sleep\"]\n",
    );
    d.write_policy(&bad);
    let err = fails_with(&d.vaultctl(&User::root(), &["policy", "reload"], b""), 2);
    assert!(
        err.contains("TOKEN") && err.contains("not applied"),
        "{err}"
    );
    ok(&d.vaultctl(&alice, &["run", "--", "id", "-u"], b""));
    let check = d.vaultctl(&User::root(), &["policy", "check"], b"");
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("INVALID"));
}

/// `vaultctl run` moves stdin and output in one thread: 4 MiB written to
/// its stdin while the command echoes it back must neither stall (each side
/// waiting for the other to read) nor lose or reorder a byte, and a secret
/// inside the input still comes back redacted.
#[test]
fn stdin_streams_through_while_output_streams_back() {
    let (d, alice, _) = setup();
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let mut input = Vec::with_capacity(4 << 20);
    let mut i = 0u64;
    while input.len() < 4 << 20 {
        input.extend_from_slice(format!("line {i:08} of the stream\n").as_bytes());
        i += 1;
    }
    input.extend_from_slice(format!("the token is {SECRET}\n").as_bytes());
    let mut run = Command::new(aivault_tests::bin("vaultctl"))
        .args(["run", "--", "cat"])
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .uid(alice.uid)
        .gid(alice.gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    let sent = input.clone();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&sent).unwrap();
        // Dropping stdin closes it: the command sees end of input.
    });
    let mut out = Vec::new();
    run.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap();
    let status = run.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut expected = input;
    let tail = format!("the token is {SECRET}\n");
    expected.truncate(expected.len() - tail.len());
    expected.extend_from_slice(b"the token is [REDACTED:TOKEN]\n");
    assert_eq!(
        out.len(),
        expected.len(),
        "every byte came back, none added"
    );
    assert!(
        out == expected,
        "the stream came back in order, the secret redacted"
    );
}
