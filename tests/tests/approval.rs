//! Human approval (`approval = "required"` on a rule): the run waits before
//! anything starts, until a person approves it from another login session
//! (or through a real polkitd and its text agent); denials and timeouts fail
//! the run with their reason; the requesting session cannot approve its own
//! request through any interface. Every step is in the audit log. A desktop
//! notifier (`tests/dbus/notifier.py`, dbus-next) registered from another
//! session gets a one-time code in a signal sent to it alone; that code
//! approves from any session, and nothing else hears it.
//!
//! Login sessions are made the way `pam_loginuid` makes them: a root child
//! writes `/proc/self/loginuid`, and the kernel gives it a new audit session
//! id, inherited by everything it then starts as the test user.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aivault_tests::bus::{repo, Bus};
use aivault_tests::{bin, ok, Daemon, Options, User};
use serde_json::Value;

/// Runs `scripts/dbus-deps.sh` once per test binary (dbus-daemon, busctl,
/// gdbus); polkitd comes with `scripts/deps.sh`.
fn bus_deps() -> &'static Path {
    static DONE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DONE.get_or_init(|| aivault_tests::install_deps("dbus-deps.sh"))
}

/// The rule the tests run. Unless `extra` names a channel, it says
/// `approval_channel = "session"`, so that a test can approve its own
/// uid's runs from a second session of that uid (by default that needs
/// polkit: see `by_default_the_requesters_own_uid_approves_only_through_polkit`).
fn policy(user: &User, marks: &Path, extra: &str) -> String {
    let approval = if extra.contains("approval =") {
        ""
    } else {
        "approval = \"required\""
    };
    let channel = if extra.contains("approval_channel") {
        ""
    } else {
        "approval_channel = \"session\""
    };
    format!(
        r#"
[[rule]]
name = "mark"
command = "/usr/bin/touch"
users = ["{u}"]
{approval}
{channel}
{extra}
[rule.sandbox]
write = ["{m}"]
"#,
        u = user.name,
        m = marks.display()
    )
}

/// A directory any run uid may write into: where the command leaves its
/// marker.
fn marks() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("aivault-marks-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// A login session of `user`: a root shell whose login uid the test set
/// (so the kernel gave it a fresh audit session), running commands as
/// `user` on request.
struct Session {
    shell: Child,
    user: User,
    dir: tempfile::TempDir,
    jobs: u32,
}

/// A command started in a [`Session`].
struct Job {
    out: PathBuf,
    err: PathBuf,
    rc: PathBuf,
}

impl Session {
    fn new(user: &User) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let shell = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo {} > /proc/self/loginuid && exec sh -s",
                user.uid
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // A job still running when the session ends cannot record its
            // status; nothing else is said here.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Session {
            shell,
            user: user.clone(),
            dir,
            jobs: 0,
        };
        // The shell has written its login uid once it reports a session.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.id().is_none() {
            assert!(
                Instant::now() < deadline,
                "the session shell got no session"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    /// Its audit session id.
    fn id(&self) -> Option<u32> {
        std::fs::read_to_string(format!("/proc/{}/sessionid", self.shell.id()))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|s| *s != u32::MAX)
    }

    /// Starts `program args` as the session's user (no supplementary
    /// groups, a clean environment) in the background.
    fn start(&mut self, env: &[(&str, &str)], program: &Path, args: &[&str]) -> Job {
        self.jobs += 1;
        let n = self.jobs;
        let job = Job {
            out: self.dir.path().join(format!("{n}.out")),
            err: self.dir.path().join(format!("{n}.err")),
            rc: self.dir.path().join(format!("{n}.rc")),
        };
        let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let mut line = format!(
            "(setpriv --reuid={} --regid={} --clear-groups -- env -i PATH=/usr/bin:/bin",
            self.user.uid, self.user.gid
        );
        for (k, v) in env {
            line.push_str(&format!(" {}", q(&format!("{k}={v}"))));
        }
        line.push_str(&format!(" {}", q(&program.display().to_string())));
        for a in args {
            line.push_str(&format!(" {}", q(a)));
        }
        line.push_str(&format!(
            " > {} 2> {} < /dev/null; echo $? > {}.tmp; mv {}.tmp {}) &\n",
            job.out.display(),
            job.err.display(),
            job.rc.display(),
            job.rc.display(),
            job.rc.display()
        ));
        let stdin = self.shell.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
        job
    }

    /// `vaultctl ARGS` against `d`, in this session.
    fn vaultctl(&mut self, d: &Daemon, args: &[&str]) -> Job {
        let socket = d.socket().display().to_string();
        self.start(&[("AIVAULT_SOCKET", &socket)], &bin("vaultctl"), args)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

impl Job {
    fn done(&self) -> bool {
        self.rc.exists()
    }

    /// Waits (bounded) for the end: exit status, stdout, stderr.
    fn wait(&self) -> (i32, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.done() {
            assert!(Instant::now() < deadline, "the job did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        let rc = std::fs::read_to_string(&self.rc)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        (rc, out, err)
    }
}

/// The one pending request, once it shows (root lists every request).
fn pending_id(d: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = d.vaultctl(&User::root(), &["--json", "approvals", "list"], b"");
        let list: Value = serde_json::from_str(&ok(&out)).unwrap();
        if let Some(p) = list.as_array().and_then(|a| a.first()) {
            assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
            return p["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no request ever waited");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Audit records of operation `op` about request `id`.
fn records(d: &Daemon, op: &str, id: &str) -> Vec<Value> {
    d.audit_records()
        .into_iter()
        .filter(|r| r["op"] == op && r["detail"]["id"] == id)
        .collect()
}

/// Asserts that nothing ran: no marker, the run still waiting.
fn assert_waiting(job: &Job, marker: &Path) {
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "the command ran before approval");
    assert!(
        !job.done(),
        "the run ended before a decision: {:?}",
        job.wait()
    );
}

struct Setup {
    d: Daemon,
    user: User,
    marks: tempfile::TempDir,
}

fn setup(user: &str, config: &str, extra: &str) -> Setup {
    let user = User::ensure(user);
    let marks = marks();
    let d = Daemon::start_new(Options {
        policy: policy(&user, marks.path(), extra),
        config: config.to_string(),
        ..Default::default()
    });
    Setup { d, user, marks }
}

#[test]
fn a_run_starts_only_once_approved_from_another_session() {
    let s = setup("aivt-appr-a", "", "");
    let marker = s.marks.path().join("approved");
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    assert_ne!(agent.id(), person.id());
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    assert_waiting(&run, &marker);
    let (rc, _, err) = person.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = run.wait();
    assert_eq!(rc, 0, "{err}");
    assert!(
        err.contains("requires approval") && err.contains(&id),
        "{err}"
    );
    assert!(marker.exists(), "the approved command did not run");
    let asked = records(&s.d, "approval.request", &id);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["uid"], s.user.uid);
    assert_eq!(asked[0]["detail"]["session"], agent.id().unwrap());
    let approved = records(&s.d, "approval.approve", &id);
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert_eq!(approved[0]["outcome"], "ok");
    assert_eq!(approved[0]["detail"]["channel"], "session");
    assert_eq!(
        approved[0]["detail"]["requester_session"],
        agent.id().unwrap()
    );
    assert_eq!(
        approved[0]["detail"]["approver_session"],
        person.id().unwrap()
    );
}

/// A process of the requester's uid can open a second login session by
/// itself (a crontab line, `ssh localhost`): by default such a session's
/// approval does not count, only polkit's (or another approver's).
#[test]
fn by_default_the_requesters_own_uid_approves_only_through_polkit() {
    let s = setup("aivt-appr-p", "", "approval_channel = \"any\"");
    let marker = s.marks.path().join("own-uid");
    let mut agent = Session::new(&s.user);
    let mut second = Session::new(&s.user);
    assert_ne!(agent.id(), second.id());
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let (rc, _, err) = second.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("needs polkit"), "{err}");
    assert_waiting(&run, &marker);
    let refused = records(&s.d, "approval.approve", &id);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_ne!(refused[0]["outcome"], "ok", "{refused:?}");
    // Denying its own request stays possible.
    let (rc, _, err) = second.vaultctl(&s.d, &["approvals", "deny", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    assert_ne!(run.wait().0, 0);
    assert!(!marker.exists());
}

#[test]
fn a_denial_fails_the_run_with_its_reason() {
    let s = setup("aivt-appr-d", "", "");
    let marker = s.marks.path().join("denied");
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    assert_waiting(&run, &marker);
    let (rc, _, err) = person.vaultctl(&s.d, &["approvals", "deny", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = run.wait();
    assert_eq!(rc, 4, "{err}");
    assert!(
        err.contains(&format!("{id} was denied by user aivt-appr-d")),
        "{err}"
    );
    assert!(!marker.exists());
    let denied = records(&s.d, "approval.deny", &id);
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["outcome"], "ok");
}

#[test]
fn a_timeout_fails_the_run_with_its_reason() {
    let s = setup("aivt-appr-t", "[approval]\ntimeout_secs = 2\n", "");
    let marker = s.marks.path().join("timeout");
    let mut agent = Session::new(&s.user);
    let started = Instant::now();
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let (rc, _, err) = run.wait();
    assert_eq!(rc, 4, "{err}");
    assert!(
        err.contains(&format!("{id} timed out: nobody approved it within 2 s")),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(!marker.exists());
    let timed_out = records(&s.d, "approval.timeout", &id);
    assert_eq!(timed_out.len(), 1, "{timed_out:?}");
    assert_eq!(timed_out[0]["outcome"], "denied");
    // Gone from the table.
    let out =
        s.d.vaultctl(&User::root(), &["--json", "approvals", "list"], b"");
    assert_eq!(ok(&out).trim(), "[]");
}

#[test]
fn once_per_session_covers_later_runs_of_that_session_only() {
    let s = setup("aivt-appr-1", "", "approval = \"once-per-session\"");
    let (first, second, third) = (
        s.marks.path().join("first"),
        s.marks.path().join("second"),
        s.marks.path().join("third"),
    );
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &first.display().to_string()]);
    let id = pending_id(&s.d);
    assert_waiting(&run, &first);
    assert_eq!(
        person
            .vaultctl(&s.d, &["approvals", "approve", &id])
            .wait()
            .0,
        0
    );
    assert_eq!(run.wait().0, 0);
    // The same session again: no request, the command runs at once.
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["run", "--", "touch", &second.display().to_string()])
        .wait();
    assert_eq!(rc, 0, "{err}");
    assert!(!err.contains("requires approval"), "{err}");
    assert!(second.exists());
    let covered: Vec<Value> =
        s.d.audit_records()
            .into_iter()
            .filter(|r| r["op"] == "approval.covered")
            .collect();
    assert_eq!(covered.len(), 1, "{covered:?}");
    // Another session of the same user must ask again.
    let mut other = Session::new(&s.user);
    let run = other.vaultctl(&s.d, &["run", "--", "touch", &third.display().to_string()]);
    let id = pending_id(&s.d);
    assert_waiting(&run, &third);
    assert_eq!(
        person.vaultctl(&s.d, &["approvals", "deny", &id]).wait().0,
        0
    );
    assert_eq!(run.wait().0, 4);
    assert!(!third.exists());
}

/// Runs busctl as the session's user against the daemon's bus.
fn busctl(session: &mut Session, bus: &Bus, args: &[&str]) -> Job {
    let mut all = vec![format!("--address={}", bus.address)];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    session.start(&[], Path::new("/usr/bin/busctl"), &all)
}

#[test]
fn the_requesting_session_cannot_approve_through_any_interface() {
    bus_deps();
    let bus = Bus::start();
    let s = setup("aivt-appr-s", &bus.daemon_config(), "");
    bus.wait_for_name("org.aivault.Vault1", &s.d);
    let marker = s.marks.path().join("self");
    // A desktop notifier of the user, listening for new requests.
    let mut monitor = {
        use std::os::unix::process::CommandExt;
        Command::new("gdbus")
            .args([
                "monitor",
                "--address",
                &bus.address,
                "--dest",
                "org.aivault.Vault1",
            ])
            .uid(s.user.uid)
            .gid(s.user.gid)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let heard = Arc::new(Mutex::new(String::new()));
    {
        let heard = heard.clone();
        let mut out = monitor.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                heard
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    // gdbus monitor subscribes once it has found the name's owner.
    std::thread::sleep(Duration::from_millis(500));
    let mut agent = Session::new(&s.user);
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = heard.lock().unwrap().clone();
        if text.contains("org.aivault.Approvals1.ApprovalPending") && text.contains(&id) {
            assert!(text.contains(&format!("uint32 {}", s.user.uid)), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ApprovalPending signal: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = monitor.kill();
    let _ = monitor.wait();

    // vaultctl, in the requester's own session, plain and through polkit.
    let (rc, _, err) = agent.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("another login session"), "{err}");
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["approvals", "approve", "--polkit", &id])
        .wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("another login session"), "{err}");
    // D-Bus, from the same session, both channels.
    for channel in ["session", "polkit"] {
        let (rc, _, err) = busctl(
            &mut agent,
            &bus,
            &[
                "call",
                "org.aivault.Vault1",
                "/org/aivault/Vault1",
                "org.aivault.Approvals1",
                "Approve",
                "ss",
                &id,
                channel,
            ],
        )
        .wait();
        assert_ne!(
            rc, 0,
            "D-Bus Approve ({channel}) from the same session worked"
        );
        assert!(err.contains("another login session"), "{err}");
    }
    // A process of the user in no login session at all (as a service or a
    // forked-off helper of the agent would be) is refused too.
    let out = s.d.vaultctl(&s.user, &["approvals", "approve", &id], b"");
    let err = aivault_tests::fails_with(&out, 4);
    assert!(err.contains("in no login session"), "{err}");

    assert_waiting(&run, &marker);
    let refused = records(&s.d, "approval.approve", &id);
    assert_eq!(refused.len(), 5, "{refused:?}");
    assert!(
        refused.iter().all(|r| r["outcome"] == "denied"),
        "{refused:?}"
    );

    // Another session of the same person approves over D-Bus.
    let mut person = Session::new(&s.user);
    let (rc, _, err) = busctl(
        &mut person,
        &bus,
        &[
            "call",
            "org.aivault.Vault1",
            "/org/aivault/Vault1",
            "org.aivault.Approvals1",
            "Approve",
            "ss",
            &id,
            "",
        ],
    )
    .wait();
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = run.wait();
    assert_eq!(rc, 0, "{err}");
    assert!(marker.exists());
}

#[test]
fn only_named_approvers_may_approve() {
    let other = User::ensure("aivt-appr-o");
    let s = setup(
        "aivt-appr-n",
        "",
        &format!("approvers = {{ users = [\"{}\"] }}", other.name),
    );
    let marker = s.marks.path().join("named");
    let mut agent = Session::new(&s.user);
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    // The requester, even from another session, is not named.
    let mut mine = Session::new(&s.user);
    let (rc, _, err) = mine.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("names who may"), "{err}");
    assert_waiting(&run, &marker);
    let mut theirs = Session::new(&other);
    let (rc, out, err) = theirs
        .vaultctl(&s.d, &["--json", "approvals", "list"])
        .wait();
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    let (rc, _, err) = theirs.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    assert_eq!(run.wait().0, 0);
    assert!(marker.exists());
}

// ---- polkit: a real polkitd on a private system bus, and pkttyagent on a pty.

const ACTIONS_DIR: &str = "/usr/share/polkit-1/actions";

/// The private system bus with polkitd on it, and the installed action.
struct Polkit {
    dir: tempfile::TempDir,
    bus: Child,
    polkitd: Child,
    address: String,
}

impl Polkit {
    fn start() -> Polkit {
        aivault_tests::require_root();
        bus_deps();
        assert!(
            Path::new("/usr/lib/polkit-1/polkitd").exists()
                && Path::new("/usr/bin/pkttyagent").exists(),
            "polkitd and pkttyagent are needed (scripts/deps.sh installs Debian's polkitd)"
        );
        let dir = tempfile::Builder::new()
            .prefix("aivault-polkit-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The agent's setuid helper clears its environment and reaches the
        // bus at the standard path: the approver's processes get this
        // directory bind-mounted on /run/dbus (see `approver`).
        let socket = dir.path().join("system_bus_socket");
        let template =
            std::fs::read_to_string(repo().join("tests/dbus/system-like.conf.in")).unwrap();
        let conf = template
            .replace("@SOCKET@", &socket.display().to_string())
            .replace(
                "<include>@POLICY@</include>",
                "<include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>",
            );
        let conf_path = dir.path().join("bus.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = [0u8; 512];
        let n = bus.stdout.as_mut().unwrap().read(&mut line).unwrap();
        let address = String::from_utf8_lossy(&line[..n]).trim().to_string();
        assert!(address.starts_with("unix:"), "{address}");
        // polkitd reads actions only from /usr/share/polkit-1/actions: it
        // runs in a mount namespace of its own where a copy of that
        // directory, with the action added, is mounted there. The host's
        // directory is never written (the package test looks for leftovers).
        let actions = dir.path().join("actions");
        std::fs::create_dir(&actions).unwrap();
        for e in std::fs::read_dir(ACTIONS_DIR).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), actions.join(e.file_name())).unwrap();
        }
        std::fs::copy(
            repo().join("packaging/polkit/org.aivault.approve.policy"),
            actions.join("org.aivault.approve.policy"),
        )
        .unwrap();
        let polkitd = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind \"$1\" {ACTIONS_DIR} && exec /usr/lib/polkit-1/polkitd --no-debug"
            ))
            .arg("sh")
            .arg(&actions)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Polkit {
            dir,
            bus,
            polkitd,
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("busctl")
                .arg(format!("--address={}", p.address))
                .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
                .args(["org.freedesktop.DBus", "NameHasOwner", "s"])
                .arg("org.freedesktop.PolicyKit1")
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).trim() == "b true" {
                break;
            }
            assert!(Instant::now() < deadline, "polkitd never took its name");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }
}

impl Drop for Polkit {
    fn drop(&mut self) {
        let _ = self.polkitd.kill();
        let _ = self.polkitd.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// `vaultctl approvals approve --polkit ID` as `user` in a new login
/// session, on a new pty (its controlling terminal, where pkttyagent asks),
/// answering the password prompt with `password`. Returns the exit status
/// and everything the terminal showed.
fn approve_through_polkit(
    pk: &Polkit,
    d: &Daemon,
    user: &User,
    id: &str,
    password: &str,
) -> (i32, String) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let tty = std::fs::File::from(pty.slave);
    let script = format!(
        "mount --bind {dir} /run/dbus && echo {uid} > /proc/self/loginuid && \
         exec setsid --ctty setpriv --reuid={uid} --regid={gid} --clear-groups -- \
         env -i PATH=/usr/bin:/bin AIVAULT_SOCKET={sock} {vaultctl} approvals approve --polkit {id}",
        dir = pk.dir.path().display(),
        uid = user.uid,
        gid = user.gid,
        sock = d.socket().display(),
        vaultctl = bin("vaultctl").display(),
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(tty.try_clone().unwrap())
        .stdout(tty.try_clone().unwrap())
        .stderr(tty)
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let mut master = std::fs::File::from(pty.master);
    let mut writer = master.try_clone().unwrap();
    let seen = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if !answered && screen.lock().unwrap().contains("Password:") {
            writer
                .write_all(format!("{password}\n").as_bytes())
                .unwrap();
            answered = true;
        }
        assert!(
            Instant::now() < deadline,
            "the approval did not end; the terminal shows:\n{}",
            screen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(writer);
    // The pty's reader ends once every holder of the terminal is gone.
    let _ = reader;
    let shown = screen.lock().unwrap().clone();
    assert!(
        answered,
        "polkit's agent never asked for a password:\n{shown}"
    );
    (status.code().unwrap_or(-1), shown)
}

/// Locks the test user's password again when the test ends, however it ends.
struct PasswordSet(String);

impl Drop for PasswordSet {
    fn drop(&mut self) {
        let _ = Command::new("usermod").args(["-p", "!", &self.0]).status();
    }
}

fn set_password(user: &User, password: &str) -> PasswordSet {
    let mut c = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .as_mut()
        .unwrap()
        .write_all(format!("{}:{password}\n", user.name).as_bytes())
        .unwrap();
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success(), "chpasswd failed");
    PasswordSet(user.name.clone())
}

#[test]
fn approval_through_polkit_asks_the_approvers_password() {
    let pk = Polkit::start();
    let user = User::ensure("aivt-appr-pk");
    let password = aivault_tests::token(20);
    let _locked_at_end = set_password(&user, &password);
    let marks = marks();
    let d = Daemon::start_new(Options {
        policy: policy(
            &user,
            marks.path(),
            "approval = \"required\"\napproval_channel = \"polkit\"",
        ),
        config: format!("[approval]\npolkit_bus = \"{}\"\n", pk.address),
        ..Default::default()
    });
    let marker = marks.path().join("polkit");
    let mut agent = Session::new(&user);
    let run = agent.vaultctl(&d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&d);

    // The rule accepts polkit only: another session alone is not enough.
    let mut person = Session::new(&user);
    let (rc, _, err) = person.vaultctl(&d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("through polkit only"), "{err}");

    // From another session, but the wrong password: polkit says no.
    let (rc, shown) = approve_through_polkit(&pk, &d, &user, &id, "not-the-password");
    assert_eq!(rc, 4, "{shown}");
    assert!(shown.contains("polkit did not authorize"), "{shown}");
    assert_waiting(&run, &marker);

    // The right one: approved, and the run goes ahead.
    let (rc, shown) = approve_through_polkit(&pk, &d, &user, &id, &password);
    assert_eq!(rc, 0, "{shown}");
    assert!(
        shown.contains("AUTHENTICATING FOR org.aivault.approve"),
        "{shown}"
    );
    let (rc, _, err) = run.wait();
    assert_eq!(rc, 0, "{err}");
    assert!(marker.exists());
    let tries = records(&d, "approval.approve", &id);
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert_eq!(tries[0]["outcome"], "denied");
    assert_eq!(tries[1]["outcome"], "denied");
    assert_eq!(tries[2]["outcome"], "ok");
    assert_eq!(tries[2]["detail"]["channel"], "polkit");
}

#[test]
fn the_shipped_introspection_data_has_the_approvals_interface() {
    bus_deps();
    let bus = Bus::start();
    let user = User::ensure("aivt-appr-x");
    let marks = marks();
    let d = Daemon::start_new(Options {
        policy: policy(&user, marks.path(), ""),
        config: bus.daemon_config(),
        ..Default::default()
    });
    bus.wait_for_name("org.aivault.Vault1", &d);
    let out = Command::new("busctl")
        .arg(format!("--address={}", bus.address))
        .args(["introspect", "--xml-interface", "org.aivault.Vault1"])
        .arg("/org/aivault/Vault1")
        .output()
        .unwrap();
    let live = ok(&out);
    let shipped =
        std::fs::read_to_string(repo().join("packaging/dbus/org.aivault.Vault1.xml")).unwrap();
    let iface = |xml: &str| -> String {
        let start = xml
            .find("<interface name=\"org.aivault.Approvals1\">")
            .unwrap_or_else(|| panic!("no Approvals1 interface in {xml}"));
        let end = xml[start..].find("</interface>").unwrap() + start;
        xml[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let served = iface(&live);
    assert!(
        shipped.contains("<interface name=\"org.aivault.Approvals1\">")
            && iface(&shipped) == served,
        "packaging/dbus/org.aivault.Vault1.xml lacks the live Approvals1 interface:\n{live}"
    );
}

#[test]
fn mcp_secret_run_reports_awaiting_approval_then_the_result() {
    use std::io::BufRead;
    let s = setup("aivt-appr-m", "", "");
    let marker = s.marks.path().join("mcp");
    // The agent: `vaultctl mcp` in a login session of its own.
    let mut mcp = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo {uid} > /proc/self/loginuid && exec setpriv --reuid={uid} --regid={gid} \
             --clear-groups -- env -i PATH=/usr/bin:/bin AIVAULT_SOCKET={sock} {vaultctl} mcp",
            uid = s.user.uid,
            gid = s.user.gid,
            sock = s.d.socket().display(),
            vaultctl = bin("vaultctl").display(),
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = mcp.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "secret_run",
        "arguments": {"argv": ["touch", marker.display().to_string()]},
        "_meta": {"progressToken": "wait-1"}}});
    let stdin = mcp.stdin.as_mut().unwrap();
    writeln!(stdin, "{call}").unwrap();
    stdin.flush().unwrap();

    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no message");
    assert_eq!(first["method"], "notifications/progress", "{first}");
    assert_eq!(first["params"]["progressToken"], "wait-1");
    let message = first["params"]["message"].as_str().unwrap();
    assert!(message.starts_with("awaiting approval"), "{message}");
    let id = pending_id(&s.d);
    assert!(message.contains(&id), "{message}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "the command ran before approval");

    let mut person = Session::new(&s.user);
    let (rc, _, err) = person.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = rx.recv_timeout(left).expect("no result");
        if m["id"] == 7 {
            break m;
        }
        assert_eq!(m["method"], "notifications/progress", "{m}");
    };
    assert_eq!(
        result["result"]["structuredContent"]["exit_code"], 0,
        "{result}"
    );
    assert!(marker.exists());
    let _ = mcp.kill();
    let _ = mcp.wait();
}

#[test]
fn a_caller_that_goes_away_withdraws_its_request() {
    let s = setup("aivt-appr-g", "", "");
    let marker = s.marks.path().join("gone");
    let mut agent = Session::new(&s.user);
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let out =
        s.d.vaultctl(&User::root(), &["--json", "approvals", "list"], b"");
    let list: Value = serde_json::from_str(&ok(&out)).unwrap();
    let pid = list[0]["requester_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (rc, _, _) = run.wait();
    assert_eq!(rc, 128 + 9);
    let deadline = Instant::now() + Duration::from_secs(10);
    while records(&s.d, "approval.withdrawn", &id).is_empty() {
        assert!(Instant::now() < deadline, "the request was not withdrawn");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out =
        s.d.vaultctl(&User::root(), &["--json", "approvals", "list"], b"");
    assert_eq!(ok(&out).trim(), "[]");
    let mut person = Session::new(&s.user);
    let (rc, _, err) = person.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 3, "{err}");
    assert!(err.contains("no pending approval request"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!marker.exists());
}

#[test]
fn a_d_bus_run_waits_for_its_approval_then_returns_the_result() {
    bus_deps();
    let bus = Bus::start();
    let s = setup("aivt-appr-r", &bus.daemon_config(), "");
    bus.wait_for_name("org.aivault.Vault1", &s.d);
    let marker = s.marks.path().join("dbus-run");
    let mut agent = Session::new(&s.user);
    let marker_arg = marker.display().to_string();
    let run = busctl(
        &mut agent,
        &bus,
        &[
            "call",
            "org.aivault.Vault1",
            "/org/aivault/Vault1",
            "org.aivault.Vault1",
            "Run",
            "asa{sv}",
            "2",
            "touch",
            &marker_arg,
            "0",
        ],
    );
    let id = pending_id(&s.d);
    assert_waiting(&run, &marker);
    let mut person = Session::new(&s.user);
    let (rc, _, err) = person.vaultctl(&s.d, &["approvals", "approve", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    let (rc, out, err) = run.wait();
    assert_eq!(rc, 0, "{err}");
    assert!(out.starts_with("isssb 0 \"exited\""), "{out}");
    assert!(marker.exists());
}

// ---- The desktop-notifier channel: one-time codes sent to one notifier.

/// A `tests/dbus/notifier.py` process (dbus-next) in a login session.
struct Notifier {
    job: Job,
    pid: i32,
}

impl Notifier {
    /// Starts `notifier.py MODE` in `session` and waits for its first line
    /// (registered, refused, or listening).
    fn start(session: &mut Session, bus: &Bus, mode: &str) -> (Notifier, Value) {
        let python = bus_deps().join("venv/bin/python");
        let script = repo().join("tests/dbus/notifier.py");
        let job = session.start(
            &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
            &python,
            &[&script.display().to_string(), mode],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            if let Some(line) = Notifier::read(&job).into_iter().next() {
                break line;
            }
            assert!(
                !job.done() && Instant::now() < deadline,
                "notifier.py {mode} said nothing: {:?}",
                std::fs::read_to_string(&job.err)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let pid = first["pid"].as_i64().unwrap() as i32;
        let n = Notifier { job, pid };
        if mode == "register" {
            assert!(first["registered"].is_string(), "not registered: {first}");
        }
        (n, first)
    }

    fn read(job: &Job) -> Vec<Value> {
        std::fs::read_to_string(&job.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The ApprovalCode signals that reached it so far.
    fn codes(&self) -> Vec<Value> {
        Notifier::read(&self.job)
            .into_iter()
            .filter(|l| l["signal"] == "ApprovalCode")
            .collect()
    }

    /// Waits (bounded) for the code of request `id`.
    fn code_for(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.codes().into_iter().find(|c| c["id"] == id) {
                return c["code"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no ApprovalCode for {id}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Waits (bounded) until `n` codes of request `id` are on record, then a
/// little more: signals are sent right after their record.
fn codes_recorded(d: &Daemon, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = records(d, "approval.code", id);
        if got.len() >= n {
            std::thread::sleep(Duration::from_millis(500));
            return records(d, "approval.code", id);
        }
        assert!(
            Instant::now() < deadline,
            "no approval.code record for {id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `busctl call ... Approvals1 METHOD SIG ARGS` in `session`.
fn approvals_call(session: &mut Session, bus: &Bus, method: &str, sig: &str, args: &[&str]) -> Job {
    let mut all = vec![
        "call",
        "org.aivault.Vault1",
        "/org/aivault/Vault1",
        "org.aivault.Approvals1",
        method,
        sig,
    ];
    all.extend_from_slice(args);
    busctl(session, bus, &all)
}

#[test]
fn a_notifier_in_another_session_gets_a_code_that_approves_from_any_session() {
    bus_deps();
    let bus = Bus::start();
    let s = setup("aivt-appr-c", &bus.daemon_config(), "");
    bus.wait_for_name("org.aivault.Vault1", &s.d);
    let marker = s.marks.path().join("code");
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    // The person's notifier, in their own session.
    let (theirs, first) = Notifier::start(&mut person, &bus, "register");
    assert!(first["registered"].is_string(), "{first}");
    assert!(first["lifetime_s"].as_u64().unwrap() > 0, "{first}");
    // A notifier the agent registers from its own session, and a spy of
    // the agent's on the bus (a plain and an eavesdropping match rule).
    let (own, first) = Notifier::start(&mut agent, &bus, "register");
    assert!(first["registered"].is_string(), "{first}");
    let (spy, first) = Notifier::start(&mut agent, &bus, "spy");
    assert_eq!(first["add_match"], true, "{first}");
    assert_ne!(first["monitor"], "granted", "{first}");
    // A notifier outside any login session is refused outright.
    use std::os::unix::process::CommandExt;
    let mut outside = Command::new(bus_deps().join("venv/bin/python"))
        .arg(repo().join("tests/dbus/notifier.py"))
        .arg("register")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .uid(s.user.uid)
        .gid(s.user.gid)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(outside.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = outside.kill();
    let _ = outside.wait();
    let refused: Value = serde_json::from_str(&line).unwrap();
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("in no login session"),
        "{refused}"
    );

    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let code = theirs.code_for(&id);
    assert_eq!(code.len(), 11, "{code}");
    let issued = codes_recorded(&s.d, &id, 1);
    // One code, to the person's notifier only: none to the requesting
    // session, none to the spy (the signal is unicast).
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["uid"], s.user.uid);
    assert_eq!(
        issued[0]["detail"]["notifier_session"],
        person.id().unwrap()
    );
    assert_eq!(
        issued[0]["detail"]["requester_session"],
        agent.id().unwrap()
    );
    assert!(spy.codes().is_empty(), "the spy heard {:?}", spy.codes());
    assert!(own.codes().is_empty(), "{:?}", own.codes());
    let signal = &theirs.codes()[0];
    assert_eq!(signal["rule"], "mark");
    assert_eq!(signal["requester_uid"], s.user.uid);
    // The code is in no record and no log line; the registrations are.
    for file in [s.d.audit_log(), s.d.output_log()] {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(!text.contains(&code), "{} shows the code", file.display());
    }
    let log = std::fs::read_to_string(s.d.output_log()).unwrap();
    assert_eq!(
        log.matches("approval notifier registered").count(),
        2,
        "{log}"
    );
    assert_waiting(&run, &marker);

    // The person reads the code out; typed in the agent's own session, it
    // approves (a plain approval from there would be refused).
    let (rc, _, err) = agent
        .vaultctl(
            &s.d,
            &["approvals", "approve", &id, "--code", &code.to_lowercase()],
        )
        .wait();
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = run.wait();
    assert_eq!(rc, 0, "{err}");
    assert!(marker.exists(), "the approved command did not run");
    let approved = records(&s.d, "approval.approve", &id);
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert_eq!(approved[0]["outcome"], "ok");
    assert_eq!(approved[0]["detail"]["channel"], "code");
    assert_eq!(
        approved[0]["detail"]["approver_session"],
        agent.id().unwrap()
    );
    assert_eq!(
        approved[0]["detail"]["notifier_session"],
        person.id().unwrap()
    );
    // Used once: the request is gone.
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["approvals", "approve", &id, "--code", &code])
        .wait();
    assert_eq!(rc, 3, "{err}");
}

#[test]
fn wrong_codes_are_refused_audited_and_then_revoke_the_right_one() {
    bus_deps();
    let bus = Bus::start();
    let s = setup("aivt-appr-w", &bus.daemon_config(), "");
    bus.wait_for_name("org.aivault.Vault1", &s.d);
    let marker = s.marks.path().join("wrong");
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    let (theirs, _) = Notifier::start(&mut person, &bus, "register");
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let code = theirs.code_for(&id);
    // A wrong code differs from the right one in its last symbol.
    let last = code.chars().last().unwrap();
    let wrong = format!(
        "{}{}",
        &code[..code.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["approvals", "approve", &id, "--code", &wrong])
        .wait();
    assert_eq!(rc, 4, "{err}");
    assert!(
        err.contains("wrong code") && err.contains("2 tries left"),
        "{err}"
    );
    // Over D-Bus too.
    let (rc, _, err) = approvals_call(
        &mut agent,
        &bus,
        "ApproveWithCode",
        "ss",
        &[&id, "ZZZZZ-ZZZZZ"],
    )
    .wait();
    assert_ne!(rc, 0);
    assert!(err.contains("wrong code"), "{err}");
    let (rc, _, err) = agent
        .vaultctl(
            &s.d,
            &["approvals", "approve", &id, "--code", "00000-00000"],
        )
        .wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("last try"), "{err}");
    // The right code no longer works; the request still waits.
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["approvals", "approve", &id, "--code", &code])
        .wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("revoked"), "{err}");
    assert_waiting(&run, &marker);
    let tries = records(&s.d, "approval.approve", &id);
    assert_eq!(tries.len(), 4, "{tries:?}");
    assert!(tries.iter().all(|t| t["outcome"] == "denied"), "{tries:?}");
    assert!(
        tries
            .iter()
            .take(3)
            .all(|t| t["reason"].as_str().unwrap().contains("wrong code")),
        "{tries:?}"
    );
    assert_eq!(records(&s.d, "approval.code_revoked", &id).len(), 1);
    let audit = std::fs::read_to_string(s.d.audit_log()).unwrap();
    assert!(!audit.contains(&code) && !audit.contains(&wrong));
    // Other channels still decide it.
    let (rc, _, err) = person.vaultctl(&s.d, &["approvals", "deny", &id]).wait();
    assert_eq!(rc, 0, "{err}");
    assert_eq!(run.wait().0, 4);
    assert!(!marker.exists());
}

#[test]
fn a_non_approvers_notifier_gets_no_code() {
    bus_deps();
    let bus = Bus::start();
    let other = User::ensure("aivt-appr-b");
    let s = setup(
        "aivt-appr-v",
        &bus.daemon_config(),
        &format!("approvers = {{ users = [\"{}\"] }}", other.name),
    );
    bus.wait_for_name("org.aivault.Vault1", &s.d);
    let marker = s.marks.path().join("named-code");
    let mut agent = Session::new(&s.user);
    // The requester's own notifier in another session: not an approver.
    let mut mine = Session::new(&s.user);
    let (not_named, _) = Notifier::start(&mut mine, &bus, "register");
    let mut bobs = Session::new(&other);
    let (named, _) = Notifier::start(&mut bobs, &bus, "register");
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let code = named.code_for(&id);
    let issued = codes_recorded(&s.d, &id, 1);
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["uid"], other.uid);
    assert!(not_named.codes().is_empty(), "{:?}", not_named.codes());
    // The approver's code does not make the requester an approver.
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["approvals", "approve", &id, "--code", &code])
        .wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("names who may"), "{err}");
    assert_waiting(&run, &marker);
    // The approver gives it back over D-Bus, from any session of theirs.
    let (rc, _, err) =
        approvals_call(&mut bobs, &bus, "ApproveWithCode", "ss", &[&id, &code]).wait();
    assert_eq!(rc, 0, "{err}");
    assert_eq!(run.wait().0, 0);
    assert!(marker.exists());
}

/// A private bus like [`Bus`], except that its default policy lets every
/// connection eavesdrop (as a careless local file might): the aivault
/// policy's mandatory rule must still keep `ApprovalCode` from spies. (The
/// bus itself lets only root add an eavesdropping match rule.)
struct EavesdroppingBus {
    _dir: tempfile::TempDir,
    child: Child,
    address: String,
}

impl EavesdroppingBus {
    fn start() -> EavesdroppingBus {
        aivault_tests::require_root();
        let dir = tempfile::Builder::new()
            .prefix("aivault-ebus-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("system_bus_socket");
        let template =
            std::fs::read_to_string(repo().join("tests/dbus/system-like.conf.in")).unwrap();
        let policy = repo().join("packaging/dbus/org.aivault.Vault1.conf");
        let conf = template
            .replace("@SOCKET@", &socket.display().to_string())
            .replace(
                "<include>@POLICY@</include>",
                &format!(
                    "<include>{}</include>\n  <policy context=\"default\"><allow eavesdrop=\"true\"/></policy>",
                    policy.display()
                ),
            );
        let conf_path = dir.path().join("bus.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = [0u8; 512];
        let n = child.stdout.as_mut().unwrap().read(&mut line).unwrap();
        let address = String::from_utf8_lossy(&line[..n]).trim().to_string();
        assert!(address.starts_with("unix:"), "{address}");
        EavesdroppingBus {
            _dir: dir,
            child,
            address,
        }
    }
}

impl Drop for EavesdroppingBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_bus_policy_refuses_codes_to_eavesdroppers_even_where_eavesdropping_is_allowed() {
    bus_deps();
    let ebus = EavesdroppingBus::start();
    // The helpers take a `Bus`; only its address matters to them.
    let s = setup(
        "aivt-appr-e",
        &format!("[dbus]\nbus = \"{}\"\n", ebus.address),
        "",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("busctl")
            .arg(format!("--address={}", ebus.address))
            .args(["call", "org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args([
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                "org.aivault.Vault1",
            ])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "b true" {
            break;
        }
        assert!(Instant::now() < deadline, "the daemon never took its name");
        std::thread::sleep(Duration::from_millis(50));
    }
    let marker = s.marks.path().join("eaves");
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    let start = |session: &mut Session, mode: &str| -> (Notifier, Value) {
        let python = bus_deps().join("venv/bin/python");
        let script = repo().join("tests/dbus/notifier.py").display().to_string();
        let job = session.start(
            &[("DBUS_SYSTEM_BUS_ADDRESS", &ebus.address)],
            &python,
            &[&script, mode],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(first) = Notifier::read(&job).into_iter().next() {
                let pid = first["pid"].as_i64().unwrap() as i32;
                return (Notifier { job, pid }, first);
            }
            assert!(Instant::now() < deadline, "notifier.py {mode} said nothing");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (theirs, first) = start(&mut person, "register");
    assert!(first["registered"].is_string(), "{first}");
    // Only root may add an eavesdropping match rule: the spy runs as root
    // (not as a monitor, which no bus policy restricts).
    let spy_dir = tempfile::tempdir().unwrap();
    let job = Job {
        out: spy_dir.path().join("spy.out"),
        err: spy_dir.path().join("spy.err"),
        rc: spy_dir.path().join("spy.rc"),
    };
    let mut spying = Command::new(bus_deps().join("venv/bin/python"))
        .arg(repo().join("tests/dbus/notifier.py"))
        .arg("spy")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &ebus.address)
        .stdout(std::fs::File::create(&job.out).unwrap())
        .stderr(std::fs::File::create(&job.err).unwrap())
        .spawn()
        .unwrap();
    let spy = Notifier {
        job,
        pid: spying.id() as i32,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(first) = Notifier::read(&spy.job).into_iter().next() {
            break first;
        }
        assert!(Instant::now() < deadline, "the spy said nothing");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(first["eavesdrop_match"], true, "{first}");
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    let code = theirs.code_for(&id);
    codes_recorded(&s.d, &id, 1);
    assert!(spy.codes().is_empty(), "the spy heard {:?}", spy.codes());
    let (rc, _, err) = agent
        .vaultctl(&s.d, &["approvals", "approve", &id, "--code", &code])
        .wait();
    assert_eq!(rc, 0, "{err}");
    assert_eq!(run.wait().0, 0);
    let _ = spying.kill();
    let _ = spying.wait();
}

#[test]
fn a_rule_that_accepts_polkit_only_sends_no_codes() {
    bus_deps();
    let bus = Bus::start();
    let s = setup(
        "aivt-appr-k",
        &bus.daemon_config(),
        "approval = \"required\"\napproval_channel = \"polkit\"",
    );
    bus.wait_for_name("org.aivault.Vault1", &s.d);
    let marker = s.marks.path().join("polkit-only");
    let mut agent = Session::new(&s.user);
    let mut person = Session::new(&s.user);
    let (theirs, _) = Notifier::start(&mut person, &bus, "register");
    let run = agent.vaultctl(&s.d, &["run", "--", "touch", &marker.display().to_string()]);
    let id = pending_id(&s.d);
    // Codes are sent right after the request is listed: give them time.
    std::thread::sleep(Duration::from_secs(1));
    assert!(theirs.codes().is_empty(), "{:?}", theirs.codes());
    assert!(records(&s.d, "approval.code", &id).is_empty());
    let (rc, _, err) = person
        .vaultctl(
            &s.d,
            &["approvals", "approve", &id, "--code", "00000-00000"],
        )
        .wait();
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("through polkit only"), "{err}");
    assert_waiting(&run, &marker);
    assert_eq!(
        person.vaultctl(&s.d, &["approvals", "deny", &id]).wait().0,
        0
    );
    assert_eq!(run.wait().0, 4);
}
