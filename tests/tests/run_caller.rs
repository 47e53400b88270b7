//! Run path, `isolation = "caller"`: the command runs as the caller's uid
//! with the caller's account groups and its secrets; the run still ends
//! completely (its own cgroup v2 is killed and removed) while the caller's
//! other processes survive; dynamic-uid runs are unaffected; the audit
//! records say `"isolation":"caller"`. Needs root and a cgroup2 mount: it
//! fails, never skips, without them.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{fails_with, ok, set_secret, Daemon, Options, User};

const SECRET: &str = "caller-mode-Secret-Value-0042";

fn policy(user: &User) -> String {
    format!(
        r#"
[[rule]]
name = "id-caller"
command = "/usr/bin/id"
users = ["{u}", "root"]
isolation = "caller"
args = [{{ exact = ["-u"] }}, {{ exact = ["-G"] }}]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "id-dynamic"
command = "/usr/bin/id"
users = ["{u}"]
args = [{{ exact = ["-r", "-u"] }}]

[[rule]]
name = "sh-caller"
command = "/usr/bin/sh"
users = ["{u}"]
isolation = "caller"
allow_interpreter = true
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]
[rule.sandbox]
timeout = "60s"
"#,
        u = user.name
    )
}

fn start(user: &User) -> Daemon {
    let d = Daemon::start_new(Options {
        policy: policy(user),
        ..Options::default()
    });
    set_secret(&d, user, "TOKEN", SECRET);
    d
}

/// `aivault-runs` below the daemon's cgroup v2, found the way a reader of
/// the kernel's files would; panics (fails the test) without cgroup2.
fn runs_cgroup(daemon_pid: u32) -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            (fs.split_whitespace().next() == Some("cgroup2"))
                .then(|| mount.split_whitespace().nth(4).unwrap().to_string())
        })
        .expect("no cgroup2 file system is mounted: caller-mode runs need cgroup v2 (this test fails rather than skips)");
    let own = std::fs::read_to_string(format!("/proc/{daemon_pid}/cgroup")).unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("the daemon has no cgroup v2 membership")
        .trim_start_matches('/')
        .to_string();
    Path::new(&mount).join(own).join("aivault-runs")
}

/// Run cgroups of this daemon that exist now.
fn run_cgroups(d: &Daemon) -> Vec<PathBuf> {
    let prefix = format!("run-{}-", d.pid().unwrap());
    std::fs::read_dir(runs_cgroup(d.pid().unwrap()))
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Live (non-zombie) processes whose real uid is `uid`: (pid, argv joined).
fn processes_of(uid: u32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse::<u32>().ok());
        if !zombie && real == Some(uid) {
            let argv = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
            out.push((pid, argv.trim_end().to_string()));
        }
    }
    out
}

/// Waits (bounded) until `done` holds, else fails with `what`.
#[track_caller]
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `sleep 300` of the user outside any run: must survive every run.
fn bystander(user: &User) -> Child {
    Command::new("/usr/bin/sleep")
        .arg("300")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn account_groups(user: &User) -> Vec<u32> {
    let name = std::ffi::CString::new(user.name.clone()).unwrap();
    let mut groups: Vec<u32> =
        nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(user.gid))
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn audit_records(d: &Daemon) -> Vec<serde_json::Value> {
    d.audit_records()
}

#[test]
fn a_caller_mode_run_is_the_caller_with_its_account_groups_and_secret() {
    let user = User::ensure("aivt-caller1");
    let status = Command::new("groupadd")
        .args(["--system", "-f", "aivt-callgrp"])
        .status()
        .unwrap();
    assert!(status.success(), "groupadd");
    let status = Command::new("usermod")
        .args(["-a", "-G", "aivt-callgrp", &user.name])
        .status()
        .unwrap();
    assert!(status.success(), "usermod");
    let d = start(&user);

    // vaultctl itself runs with no supplementary groups: the command's
    // groups come from the account database, not from the caller.
    let uid: u32 = ok(&d.vaultctl(&user, &["run", "--", "id", "-u"], b""))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(uid, user.uid, "the command runs as the caller");
    let mut groups: Vec<u32> = ok(&d.vaultctl(&user, &["run", "--", "id", "-G"], b""))
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, account_groups(&user), "the account's groups");
    assert!(
        groups.len() >= 2,
        "the extra group is among them: {groups:?}"
    );

    // The secret is in the command's environment, and redacted on the way out.
    let out = ok(&d.vaultctl(
        &user,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "printf '%s\\n' \"${#TOKEN}\" \"$TOKEN\"",
        ],
        b"",
    ));
    assert_eq!(out, format!("{}\n[REDACTED:TOKEN]\n", SECRET.len()));

    // Concurrent caller-mode runs of one user: each runner is told apart by
    // its pid, not its (shared) uid.
    let socket = d.socket();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (socket, user) = (socket.clone(), user.clone());
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        let out = aivault_tests::vaultctl_at(
                            &socket,
                            &user,
                            &["run", "--", "id", "-u"],
                            b"",
                        );
                        ok(&out).trim().parse::<u32>().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().iter().all(|u| *u == user.uid));
    }

    // Never as root, even when a rule lets root use it.
    let err = fails_with(
        &d.vaultctl(&User::root(), &["run", "--", "id", "-u"], b""),
        4,
    );
    assert!(err.contains("never runs a command as root"), "{err}");

    eventually("every exit is audited", || {
        audit_records(&d)
            .iter()
            .filter(|r| r["op"] == "run.exit")
            .count()
            == 33
    });
    let records = audit_records(&d);
    let ran: Vec<_> = records
        .iter()
        .filter(|r| r["detail"]["rule"] == "id-caller")
        .collect();
    assert!(ran
        .iter()
        .any(|r| r["op"] == "run" && r["detail"]["isolation"] == "caller"));
    assert!(ran.iter().any(|r| r["op"] == "run.exit"
        && r["detail"]["isolation"] == "caller"
        && r["detail"]["run_uid"] == user.uid));
    assert!(ran
        .iter()
        .any(|r| r["op"] == "run" && r["outcome"] == "denied" && r["uid"] == 0));
    eventually("caller-mode run cgroups remain", || {
        run_cgroups(&d).is_empty()
    });
}

#[test]
fn a_caller_mode_run_ends_completely_and_spares_the_callers_other_processes() {
    let user = User::ensure("aivt-caller2");
    let d = start(&user);
    let mut other = bystander(&user);
    // The run cgroups' parent must exist once a caller-mode run happened.
    let base = runs_cgroup(d.pid().unwrap());

    // A background child outliving the command.
    let out = ok(&d.vaultctl(
        &user,
        &["run", "--", "sh", "-c", "sleep 300 & echo $!"],
        b"",
    ));
    let child: i32 = out.trim().parse().unwrap();
    assert!(base.is_dir(), "{} exists", base.display());
    eventually("the run's background child survives the run", || {
        !processes_of(user.uid).iter().any(|(pid, _)| *pid == child)
    });
    eventually("the run's cgroup is removed", || run_cgroups(&d).is_empty());
    assert!(
        other.try_wait().unwrap().is_none(),
        "the caller's own sleep survives"
    );

    // A run the caller abandons: while it runs, its processes are in the
    // run's cgroup; after the caller hangs up, they and the cgroup are gone.
    let mut client = Command::new(aivault_tests::bin("vaultctl"))
        .args(["run", "--", "sh", "-c", "sleep 300 & sleep 301"])
        .env("AIVAULT_SOCKET", d.socket())
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut run_pids = Vec::new();
    eventually("the run's processes appear", || {
        run_pids = processes_of(user.uid)
            .into_iter()
            .filter(|(_, argv)| argv == "sleep 301" || (argv == "sleep 300"))
            .map(|(pid, _)| pid)
            .filter(|pid| *pid != other.id() as i32)
            .collect();
        run_pids.len() == 2
    });
    let groups = run_cgroups(&d);
    assert_eq!(groups.len(), 1, "one cgroup for the run: {groups:?}");
    let members = std::fs::read_to_string(groups[0].join("cgroup.procs")).unwrap();
    for pid in &run_pids {
        assert!(
            members.lines().any(|l| l == pid.to_string()),
            "run process {pid} is in the run's cgroup {members:?}"
        );
    }
    assert!(
        !members.lines().any(|l| l == other.id().to_string()),
        "the caller's own process is not"
    );
    client.kill().unwrap();
    client.wait().unwrap();
    eventually("the abandoned run's processes are gone", || {
        let live = processes_of(user.uid);
        run_pids
            .iter()
            .all(|p| !live.iter().any(|(pid, _)| pid == p))
    });
    eventually("the abandoned run's cgroup is removed", || {
        run_cgroups(&d).is_empty()
    });
    eventually("the run directories are removed", || {
        d.run_dirs().is_empty()
    });
    assert!(
        other.try_wait().unwrap().is_none(),
        "the caller's own sleep survives"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn dynamic_uid_runs_are_unaffected() {
    let user = User::ensure("aivt-caller3");
    let d = start(&user);
    let uid: u32 = ok(&d.vaultctl(&user, &["run", "--", "id", "-r", "-u"], b""))
        .trim()
        .parse()
        .unwrap();
    assert!(d.run_uids.contains(&uid), "a fresh run uid: {uid}");
    assert!(
        run_cgroups(&d).is_empty(),
        "no cgroup for a dynamic-uid run"
    );
    // The exit record follows the caller's status.
    let exit_record = || {
        audit_records(&d)
            .into_iter()
            .find(|r| r["op"] == "run.exit" && r["detail"]["rule"] == "id-dynamic")
    };
    eventually("the run's exit is audited", || exit_record().is_some());
    let exit = exit_record().unwrap();
    assert_eq!(exit["detail"]["isolation"], "dynamic-uid");
    assert_eq!(exit["detail"]["run_uid"], uid);
}
