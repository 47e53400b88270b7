//! Behaviour at scale: limits that hold without refusing more than they
//! must, and a daemon that keeps its footing when resources run out or a
//! predecessor was killed. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{ok, Daemon, Options, User};

fn true_policy(user: &User) -> String {
    format!(
        r#"
[[rule]]
name = "true"
command = "/usr/bin/true"
users = ["{}"]
"#,
        user.name
    )
}

/// Sixteen clients of one user against `max_runs_per_user = 16`, each
/// starting its next run as soon as it has the last one's status: as many
/// runs in flight as the limit allows, the earlier ones still being torn
/// down, and none is ever refused.
#[test]
fn sixteen_serial_clients_of_one_user_are_never_refused_at_a_limit_of_sixteen() {
    const MAX: usize = 16;
    const EACH: usize = 4;
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options {
        config: format!("[runs]\nmax_runs_per_user = {MAX}\n"),
        policy: true_policy(&alice),
        ..Options::default()
    });
    let refusals: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..MAX)
            .map(|_| {
                s.spawn(|| {
                    let mut refused = Vec::new();
                    for _ in 0..EACH {
                        let out = d.vaultctl(&alice, &["run", "--", "true"], b"");
                        if !out.status.success() {
                            refused.push(String::from_utf8_lossy(&out.stderr).into_owned());
                        }
                    }
                    refused
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert!(
        refusals.is_empty(),
        "{} of {} serial runs refused: {refusals:?}",
        refusals.len(),
        MAX * EACH
    );
    // Every teardown still completes: the daemon comes to rest and no run
    // directory is left.
    d.resting_fd_count();
    assert!(d.run_dirs().is_empty(), "{:?}", d.run_dirs());
}

/// A process running as `uid` (which needs no account) holding `n`
/// connections to `socket` open, as the hostile tests' flooder does: the
/// kernel records its credentials on each socket. Killed on drop.
struct Holder(std::process::Child);

impl Holder {
    fn start(socket: &std::path::Path, uid: u32, n: usize) -> Holder {
        use std::io::Read;
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
            .args(["--clear-groups", "--", "/usr/bin/python3", "-c"])
            .arg(
                "import socket,sys,time\n\
                 socks=[]\n\
                 for i in range(int(sys.argv[2])):\n\
                 \ts=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);socks.append(s)\n\
                 print(len(socks),flush=True)\n\
                 time.sleep(120)\n",
            )
            .arg(socket)
            .arg(n.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("holder");
        let mut line = [0u8; 8];
        let got = child.stdout.as_mut().unwrap().read(&mut line).unwrap();
        assert_eq!(
            std::str::from_utf8(&line[..got]).unwrap().trim(),
            n.to_string(),
            "holder connected"
        );
        Holder(child)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Other uids filling every connection they may take leave root the places
/// reserved for it.
#[test]
fn users_filling_the_socket_leave_root_its_reserved_connections() {
    const MAX: usize = 12;
    const RESERVED: usize = 2;
    const PER_UID: usize = 3;
    let d = Daemon::start_new(Options {
        // Idle connections that never say hello hold their places meanwhile.
        config: format!(
            "[limits]\nmax_connections = {MAX}\nmax_connections_per_uid = {PER_UID}\n\
             root_reserved_connections = {RESERVED}\nhandshake_timeout_secs = 300\n"
        ),
        ..Options::default()
    });
    // More than the limit allows, from uids that need no account.
    let held: Vec<Holder> = (0..MAX as u32)
        .map(|u| Holder::start(&d.socket(), 3_900_000 + u, PER_UID))
        .collect();
    // Accepted in order: by the time root's connection is, every one above
    // was admitted or refused.
    let mut root = d.client();
    let status = match root.call(aivault_proto::RequestBody::Status) {
        Ok(aivault_proto::Reply::Status(s)) => s,
        other => panic!("root's status: {other:?}"),
    };
    assert_eq!(
        status.connections as usize,
        MAX - RESERVED + 1,
        "the other uids hold all but the reserve, root the one more"
    );
    let out = d.vaultctl(&User::root(), &["status"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(held);
}

/// 65 uids each holding as many connections as one uid may, at the
/// default limits (64 per uid, 4,096 in all, 16 of them root's): more than
/// the socket takes, and root's `status` still answers.
#[test]
fn sixty_five_uids_holding_connections_leave_root_its_status() {
    const UIDS: u32 = 65;
    const PER_UID: usize = 64;
    const MAX: usize = 4096;
    const RESERVED: usize = 16;
    // 4,160 asked for: more than the 4,080 the other uids may hold.
    const _: () = assert!(UIDS as usize * PER_UID > MAX - RESERVED);
    let d = Daemon::start_new(Options {
        // Idle connections that never say hello hold their places meanwhile.
        config: "[limits]\nhandshake_timeout_secs = 300\n".into(),
        ..Options::default()
    });
    let held: Vec<Holder> = (0..UIDS)
        .map(|u| Holder::start(&d.socket(), 3_910_000 + u, PER_UID))
        .collect();
    let mut root = d.client();
    let status = match root.call(aivault_proto::RequestBody::Status) {
        Ok(aivault_proto::Reply::Status(s)) => s,
        other => panic!("root's status: {other:?}"),
    };
    assert_eq!(
        status.connections as usize,
        MAX - RESERVED + 1,
        "the other uids hold all but root's reserve, root the one more"
    );
    let out = d.vaultctl(&User::root(), &["status"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(held);
}

/// A reload that would take every rule away (the file emptied by mistake,
/// say) keeps the rules in force and says why, by SIGHUP and by request.
#[test]
fn a_reload_that_would_remove_every_rule_keeps_the_old_policy_and_says_why() {
    use std::time::{Duration, Instant};
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options {
        policy: true_policy(&alice),
        ..Options::default()
    });
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));
    d.write_policy("");

    let out = d.vaultctl(&User::root(), &["policy", "reload"], b"");
    assert!(!out.status.success(), "an emptying reload was applied");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no rules but 1 are in force") && err.contains("policy reload --force"),
        "{err}"
    );
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));

    // Counted before the signal: the request's refusal is in the log too.
    let said = || {
        std::fs::read_to_string(d.output_log())
            .unwrap()
            .matches("no rules but 1 are in force")
            .count()
    };
    let before = said();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while said() == before {
        assert!(Instant::now() < deadline, "SIGHUP's refusal was not logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));

    // A policy with rules is applied as before.
    d.write_policy(&true_policy(&alice).replace("name = \"true\"", "name = \"again\""));
    ok(&d.vaultctl(&User::root(), &["policy", "reload"], b""));
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));

    // On purpose: --force applies the empty policy, and runs are refused.
    d.write_policy("");
    ok(&d.vaultctl(&User::root(), &["policy", "reload", "--force"], b""));
    let out = d.vaultctl(&alice, &["run", "--", "true"], b"");
    assert_eq!(
        out.status.code(),
        Some(4),
        "a run was allowed by an empty policy"
    );
    assert!(
        d.audit_records()
            .iter()
            .any(|r| r["op"] == "policy.reload" && r["detail"]["forced"] == true),
        "the forced reload is not in the audit log"
    );
}

/// A daemon killed in the middle of a run leaves the run's directory; the
/// next one removes it at start-up, and nothing else: not a directory of a
/// uid outside the run range, not what a symbolic link points to.
#[test]
fn run_directories_of_a_killed_daemon_are_swept_at_start_up() {
    use std::os::unix::fs::{lchown, symlink};
    use std::time::{Duration, Instant};
    let alice = User::ensure("aivt-alice");
    let mut d = Daemon::start_new(Options {
        // No warm runner: every run directory is a run's.
        config: "[runs]\nwarm_runners = 0\n".into(),
        policy: format!(
            "[[rule]]\nname = \"sleep\"\ncommand = \"/usr/bin/sleep\"\nusers = [\"{}\"]\n",
            alice.name
        ),
        ..Options::default()
    });
    let socket = d.socket();
    let sleeper = {
        let alice = alice.clone();
        std::thread::spawn(move || {
            aivault_tests::vaultctl_at(&socket, &alice, &["run", "--", "sleep", "60"], b"")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let old = loop {
        let dirs = d.run_dirs();
        if !dirs.is_empty() && !d.run_processes().is_empty() {
            break dirs;
        }
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    d.kill9();
    sleeper.join().unwrap();
    for (pid, _) in aivault_tests::run_range_processes()
        .into_iter()
        .filter(|(_, uid)| d.run_uids.contains(uid))
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    // Beside the stale directory: a file it links to from inside, a
    // directory of a uid outside the range, and a link named like a run uid.
    let outside = d.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"x").unwrap();
    symlink(&outside, old[0].join("tmp/link")).unwrap();
    let foreign = d.runs_dir().join("4242");
    std::fs::create_dir(&foreign).unwrap();
    lchown(&foreign, Some(4242), Some(4242)).unwrap();
    let in_range = d.run_uids.start + d.run_uids.len() as u32 - 1;
    let link = d.runs_dir().join(in_range.to_string());
    symlink(&outside, &link).unwrap();
    lchown(&link, Some(in_range), Some(in_range)).unwrap();

    d.start();
    for dir in &old {
        assert!(
            std::fs::symlink_metadata(dir).is_err(),
            "{} survived the restart",
            dir.display()
        );
    }
    assert!(foreign.is_dir(), "a directory of another uid was removed");
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "the link was removed"
    );
    assert!(outside.join("keep").exists(), "a link was followed");
}

/// A runner that ends without connecting (here a runner binary that exits
/// at once) fails the run with that reason, as soon as it has ended rather
/// than when the connection timeout runs out.
#[test]
fn a_runner_that_exits_before_connecting_fails_the_run_with_that_reason() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options {
        config: "[runs]\nrunner = \"/usr/bin/false\"\nwarm_runners = 0\n".into(),
        policy: true_policy(&alice),
        ..Options::default()
    });
    let out = d.vaultctl(&alice, &["run", "--", "true"], b"");
    assert!(!out.status.success(), "the run succeeded without a runner");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the runner exited before connecting"), "{err}");
    let log = std::fs::read_to_string(d.output_log()).unwrap();
    assert!(log.contains("the runner exited before connecting"), "{log}");
    // Its uid and directories were given back all the same.
    d.resting_fd_count();
    assert!(d.run_dirs().is_empty(), "{:?}", d.run_dirs());
}

/// A reload is audited before it takes effect: when its record cannot be
/// written, the new policy (here: no rules, forced) is not applied.
#[test]
fn a_reload_that_cannot_be_audited_is_not_applied() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options {
        policy: true_policy(&alice),
        ..Options::default()
    });
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));
    d.write_policy("");
    // A directory stands where the log was: no record can be written.
    let saved = d.audit_log().with_extension("saved");
    std::fs::rename(d.audit_log(), &saved).unwrap();
    std::fs::create_dir(d.audit_log()).unwrap();
    let out = d.vaultctl(&User::root(), &["policy", "reload", "--force"], b"");
    std::fs::remove_dir(d.audit_log()).unwrap();
    std::fs::rename(&saved, d.audit_log()).unwrap();
    assert!(
        !out.status.success(),
        "a reload that was not audited succeeded"
    );
    // The old policy is still in force.
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));
}
