//! Run path, acceptance 4–6: what a command can do inside the default
//! profile; a run ends completely whatever the command does; many concurrent
//! runs each get their own uid and leak nothing. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use aivault_tests::{ok, set_secret, Daemon, Options, User};

/// The probe, installed where the daemon accepts binaries: a root-owned
/// directory no one else can write (the checkout itself may live under a
/// world-writable `/tmp`, which the daemon rightly refuses).
struct Probe {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn install_probe() -> Probe {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all("/usr/local/lib").unwrap();
    let dir = tempfile::Builder::new()
        .prefix("aivault-test-probe-")
        .tempdir_in("/usr/local/lib")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("aivault-probe");
    std::fs::copy(aivault_tests::bin("aivault-probe"), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Probe { _dir: dir, path }
}

fn policy(alice: &User, probe: &Probe, extra: &str) -> String {
    format!(
        r#"
[[rule]]
name = "probe"
command = "{probe}"
users = ["{a}"]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "sh"
command = "/usr/bin/sh"
users = ["{a}"]
allow_interpreter = true
[rule.sandbox]
timeout = "2s"
max_output = "1M"

[[rule]]
name = "yes"
command = "/usr/bin/yes"
users = ["{a}"]
[rule.sandbox]
max_output = "1M"

[[rule]]
name = "id"
command = "/usr/bin/id"
users = ["{a}"]
{extra}
"#,
        probe = probe.path.display(),
        a = alice.name
    )
}

/// No process of any run uid, no run directory, nothing leased — apart
/// from the warm runners, each of which is one idle `aivault-runner`.
fn assert_nothing_left(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = d.run_processes();
        let dirs = d.run_dirs();
        if procs.is_empty() && dirs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: processes {procs:?}, directories {dirs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let warm = d.warm_processes();
    assert!(
        warm.len() <= 2,
        "more warm runners than configured: {warm:?}"
    );
    for (pid, _) in warm {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_eq!(
            comm.trim(),
            "aivault-runner",
            "a warm uid runs something else"
        );
    }
}

#[test]
fn the_default_profile_confines_the_command() {
    let alice = User::ensure("aivt-alice");
    let probe = install_probe();
    let bob = User::ensure("aivt-bob");
    let d = Daemon::start_new(Options {
        policy: policy(&alice, &probe, ""),
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", "probe-secret-value-123456");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = d.state_dir();
    let root_only = tempfile::NamedTempFile::new_in("/root").unwrap();
    std::fs::write(root_only.path(), "root only").unwrap();
    let checks = [
        "write:/etc/aivault-probe".to_string(),
        "write:/var/tmp/aivault-probe".into(),
        format!(
            "read:{}",
            state.join(aivaultd::store::format::STORE_FILE).display()
        ),
        format!("read:{}", root_only.path().display()),
        "read:/proc/1/environ".into(),
        "environ".into(),
        "mount".into(),
        "keyctl".into(),
        "io_uring".into(),
        "unshare".into(),
        format!("ptrace:{}", std::process::id()),
        format!("connect:127.0.0.1:{port}"),
    ];
    let mut args = vec!["run", "--", probe.path.to_str().unwrap()];
    args.extend(checks.iter().map(String::as_str));
    let out = d.vaultctl(&alice, &args, b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let results: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        results.len(),
        checks.len(),
        "one result per check: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for r in &results {
        assert_eq!(r["ok"], false, "inside the sandbox this must fail: {r}");
        let errno = r["errno"].as_i64().unwrap();
        assert!(
            errno == libc::EACCES as i64 || errno == libc::EPERM as i64,
            "refused by the kernel, not by accident: {r}"
        );
    }
    // Writing in its own home works (the sandbox is not simply broken).
    let home_check = d.vaultctl(
        &alice,
        &[
            "run",
            "--",
            probe.path.to_str().unwrap(),
            "write:probe-file-in-home",
        ],
        b"",
    );
    let line = String::from_utf8_lossy(&home_check.stdout).into_owned();
    assert!(
        line.contains("\"ok\":true"),
        "write in the private home: {line}"
    );
    let _ = bob;
    // The enforcement level is in the audit record.
    let trail = ok(&d.vaultctl(
        &User::root(),
        &["--json", "audit", "list", "--limit", "100"],
        b"",
    ));
    assert!(
        trail
            .lines()
            .any(|l| l.contains("run.exit") && l.contains("\"landlock\":\"full\"")),
        "{trail}"
    );
    assert_nothing_left(&d);
}

#[test]
fn a_run_ends_completely_whatever_the_command_does() {
    let alice = User::ensure("aivt-alice");
    let probe = install_probe();
    let d = Daemon::start_new(Options {
        policy: policy(&alice, &probe, ""),
        ..Options::default()
    });

    // A background child outliving the command.
    let out = d.vaultctl(
        &alice,
        &["run", "--", "sh", "-c", "sleep 300 & echo started"],
        b"",
    );
    assert_eq!(ok(&out).trim(), "started");
    assert_nothing_left(&d);

    // A command that ignores SIGTERM past its timeout.
    let t = Instant::now();
    let out = d.vaultctl(
        &alice,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo waiting; sleep 300",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(124), "timeout exit status");
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "waiting");
    assert_nothing_left(&d);

    // Output without end, past the limit.
    let out = d.vaultctl(&alice, &["run", "--", "yes"], b"");
    assert_eq!(out.status.code(), Some(125), "output limit exit status");
    assert!(
        out.stdout.len() <= 1024 * 1024,
        "at most the limit: {}",
        out.stdout.len()
    );
    assert!(
        out.stdout.len() > 512 * 1024,
        "output flowed until the limit"
    );
    assert_nothing_left(&d);

    // Stdin the command never reads, and a caller that never reads its
    // output: neither may carry the run past its 2 s timeout.
    let t = Instant::now();
    let out = d.vaultctl(
        &alice,
        &["run", "--", "sh", "-c", "sleep 300"],
        &vec![0u8; 8 << 20],
    );
    assert_eq!(
        out.status.code(),
        Some(124),
        "unread stdin does not defeat the timeout"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_nothing_left(&d);
    {
        use std::os::unix::process::CommandExt;
        let mut stuck = std::process::Command::new(aivault_tests::bin("vaultctl"))
            .args(["run", "--", "sh", "-c", "yes"])
            .env("AIVAULT_SOCKET", d.socket())
            .uid(alice.uid)
            .gid(alice.gid)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped()) // never read
            .spawn()
            .unwrap();
        // The output limit (1 MiB) or the deadline (2 s) ends the run although
        // the caller reads nothing, and its teardown does not wait for it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let trail = ok(&d.vaultctl(&alice, &["--json", "audit", "list", "--limit", "20"], b""));
            let ended = trail.lines().any(|l| {
                l.contains("run.exit")
                    && l.contains("\"yes\"")
                    && (l.contains("\"output_limit\"") || l.contains("\"timeout\""))
            });
            if ended {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stuck caller's run never ended: {trail}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_nothing_left(&d);
        stuck.kill().unwrap();
        stuck.wait().unwrap();
    }

    // A caller that disconnects mid-run leaves nothing behind.
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(aivault_tests::bin("vaultctl"))
        .args(["run", "--", "sh", "-c", "sleep 300"])
        .env("AIVAULT_SOCKET", d.socket())
        .uid(alice.uid)
        .gid(alice.gid)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.run_processes().len() < 2 {
        assert!(Instant::now() < deadline, "run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_nothing_left(&d);
}

#[test]
fn concurrent_runs_get_their_own_uids_and_leak_nothing() {
    let alice = User::ensure("aivt-alice");
    let probe = install_probe();
    let d = Daemon::start_new(Options {
        policy: policy(&alice, &probe, ""),
        // A run holds its slot until its teardown is done, which may overlap
        // the same client's next run: allow 16 clients up to 4 each.
        config: "[limits]\nmax_connections_per_uid = 128\n[runs]\nmax_runs_per_user = 64\n".into(),
        ..Options::default()
    });
    let clients: usize = 16;
    let per_client: usize = std::env::var("AIVAULT_RUN_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    ok(&d.vaultctl(&alice, &["run", "--", "id", "-u"], b""));
    assert_nothing_left(&d);
    let fds_before = d.resting_fd_count();
    let socket = d.socket();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.clone();
            let alice = alice.clone();
            std::thread::spawn(move || {
                let mut spans = Vec::new();
                for _ in 0..per_client {
                    let t0 = Instant::now();
                    let out = aivault_tests::vaultctl_at(
                        &socket,
                        &alice,
                        &["run", "--", "id", "-u"],
                        b"",
                    );
                    let t1 = Instant::now();
                    let uid: u32 = ok(&out).trim().parse().unwrap();
                    spans.push((t0, t1, uid));
                }
                spans
            })
        })
        .collect();
    let mut spans: Vec<(Instant, Instant, u32)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(spans.len(), clients * per_client, "every run succeeded");
    // Runs whose client-side spans overlap were alive at the same time, so
    // they must have had different uids.
    spans.sort_by_key(|s| s.0);
    for (i, a) in spans.iter().enumerate() {
        for b in spans[i + 1..].iter().take_while(|b| b.0 < a.1) {
            assert_ne!(a.2, b.2, "two simultaneous runs shared uid {}", a.2);
        }
    }
    assert!(spans.iter().all(|s| s.2 >= aivault_tests::RUN_UID_FIRST));
    assert_nothing_left(&d);
    assert_eq!(
        d.resting_fd_count(),
        fds_before,
        "the daemon holds no extra descriptors"
    );
}

#[test]
fn processes_of_a_run_cannot_use_the_daemon() {
    let alice = User::ensure("aivt-alice");
    let probe = install_probe();
    let d = Daemon::start_new(Options {
        policy: policy(&alice, &probe, ""),
        ..Options::default()
    });
    // Landlock does not govern connect() to a named socket, so the daemon
    // itself must refuse peers whose uid belongs to a run.
    // The daemon answers a refused peer at once, before any handshake, and
    // closes: read to the end (the frame may arrive in pieces).
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_UNIX);s.settimeout(10);s.connect(sys.argv[1])\n\
                  data=b''\n\
                  while True:\n\
                  \tchunk=s.recv(4096)\n\
                  \tif not chunk: break\n\
                  \tdata+=chunk\n\
                  print(repr(data))\n";
    let socket = d.socket();
    let extra = format!(
        "\n[[rule]]\nname = \"py\"\ncommand = \"/usr/bin/python3\"\nusers = [\"{}\"]\nallow_interpreter = true\nargs = [{{ exact = [\"-c\", {:?}, {:?}] }}]\n",
        alice.name,
        script,
        socket.display().to_string()
    );
    d.write_policy(&policy(&alice, &probe, &extra));
    ok(&d.vaultctl(&User::root(), &["policy", "reload"], b""));
    let out = d.vaultctl(
        &alice,
        &[
            "run",
            "--",
            "python3",
            "-c",
            script,
            socket.to_str().unwrap(),
        ],
        b"",
    );
    let text = ok(&out);
    assert!(
        text.contains("processes of a run may not use aivaultd"),
        "{text}"
    );
}

#[test]
fn a_run_whose_decision_cannot_be_audited_never_starts() {
    let alice = User::ensure("aivt-alice");
    let probe = install_probe();
    let d = Daemon::start_new(Options {
        policy: policy(&alice, &probe, ""),
        ..Options::default()
    });
    ok(&d.vaultctl(&alice, &["run", "--", "sh", "-c", "echo ran"], b""));
    // The daemon hands a runner the job while it writes the decision's
    // record; the command must still never run when the record cannot be
    // written (the go-ahead with the secrets is never sent).
    let saved = d.audit_log().with_extension("saved");
    std::fs::rename(d.audit_log(), &saved).unwrap();
    std::fs::create_dir(d.audit_log()).unwrap();
    let out = d.vaultctl(&alice, &["run", "--", "sh", "-c", "echo ran"], b"");
    let err = aivault_tests::fails_with(&out, 6);
    assert!(err.contains("audit log"), "{err}");
    assert!(out.stdout.is_empty(), "the command ran: {:?}", out.stdout);
    assert_nothing_left(&d);
    std::fs::remove_dir(d.audit_log()).unwrap();
    std::fs::rename(&saved, d.audit_log()).unwrap();
    assert_eq!(
        ok(&d.vaultctl(&alice, &["run", "--", "sh", "-c", "echo ran"], b"")).trim(),
        "ran"
    );
}

/// Waits until the daemon has `n` warm runners, each one live process.
fn warm_runners(d: &Daemon, n: usize) -> Vec<(i32, u32)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let warm = d.warm_processes();
        if d.warm_uids().len() == n && warm.len() == n {
            return warm;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} warm runners, have {warm:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn warm_runners_hold_nothing_are_taken_once_and_end_with_the_daemon() {
    use std::os::unix::fs::MetadataExt;
    let alice = User::ensure("aivt-alice");
    let probe = install_probe();
    let mut d = Daemon::start_new(Options {
        policy: policy(&alice, &probe, ""),
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", "warm-secret-5b1e");
    let warm = warm_runners(&d, 2);
    let mut uids: Vec<u32> = warm.iter().map(|w| w.1).collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 2, "each warm runner has its own uid");
    for &(pid, uid) in &warm {
        assert!(d.run_uids.contains(&uid));
        // Idle, it holds no job and no secret: an empty environment.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(environ.is_empty(), "a warm runner has an environment");
        // Nothing of the daemon's either: stdio and its one connection.
        let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| {
                let n = e.file_name().to_string_lossy().parse().unwrap();
                let target = std::fs::read_link(e.path()).unwrap();
                (n, target.display().to_string())
            })
            .collect();
        fds.sort();
        let extra: Vec<&(u32, String)> = fds.iter().filter(|(n, _)| *n > 2).collect();
        assert!(
            extra.len() == 1 && extra[0].1.starts_with("socket:"),
            "a warm runner holds more than its connection: {fds:?}"
        );
        let dir = d.runs_dir().join(uid.to_string());
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o700));
    }

    // A run takes one of them: it runs under a uid that was warm, and that
    // uid is never warm again while the run's teardown is pending.
    let out = ok(&d.vaultctl(&alice, &["run", "--", "id", "-u"], b""));
    let ran_as: u32 = out.trim().parse().unwrap();
    assert!(uids.contains(&ran_as), "the run did not take a warm runner");
    assert_nothing_left(&d);
    let after = warm_runners(&d, 2);
    assert!(after
        .iter()
        .all(|w| w.0 != warm.iter().find(|x| x.1 == ran_as).unwrap().0));

    // A warm runner that dies while idle is discarded, not handed a run.
    let (victim, victim_uid) = after[0];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.warm_processes().iter().any(|w| w.0 == victim) {
        assert!(Instant::now() < deadline, "the killed warm runner lives on");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        let out = ok(&d.vaultctl(&alice, &["run", "--", "id", "-u"], b""));
        assert_ne!(out.trim().parse::<u32>().unwrap(), victim_uid);
    }
    assert_nothing_left(&d);

    // Stopping the daemon ends every warm runner and removes its directory.
    let left = warm_runners(&d, 2);
    d.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while left
        .iter()
        .any(|(pid, _)| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(Instant::now() < deadline, "warm runners outlive the daemon");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dirs: Vec<_> = std::fs::read_dir(d.runs_dir())
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(dirs.is_empty(), "run directories remain: {dirs:?}");
}
