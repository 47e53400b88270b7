//! `aivaultd` at start-up, as an operator meets it: each error said once
//! and plainly, config syntax errors located, plain-text logs when stderr
//! is not a terminal, and a live daemon's socket never taken. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{ok, vaultctl_at, Daemon, Options, User};

/// `d.command()` with the value of each named flag replaced.
fn command_with(d: &Daemon, replace: &[(&str, &OsStr)]) -> Command {
    let base = d.command();
    let mut cmd = Command::new(base.get_program());
    let mut args = base.get_args().map(OsStr::to_os_string);
    while let Some(arg) = args.next() {
        let value: Option<OsString> = replace
            .iter()
            .find(|(flag, _)| OsStr::new(flag) == arg)
            .map(|(_, v)| v.to_os_string());
        cmd.arg(&arg);
        if let Some(v) = value {
            args.next();
            cmd.arg(v);
        }
    }
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Runs `cmd` to its end (killing it if it is still serving after a
/// minute, so a daemon that wrongly starts fails the test instead of
/// hanging it).
fn run_to_end(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

fn failed_stderr(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    err
}

fn write_config(d: &Daemon, text: &str) {
    let p = d.path("aivaultd.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn a_missing_key_file_is_said_once_as_not_found() {
    let d = Daemon::init(Options::default());
    std::fs::remove_file(d.key_file()).unwrap();
    let err = failed_stderr(&run_to_end(d.command()));
    assert_eq!(err.matches("cannot inspect").count(), 1, "{err}");
    assert_eq!(err.matches("not found").count(), 1, "{err}");
    assert!(!err.contains("os error"), "{err}");
    assert!(err.contains(&d.key_file().display().to_string()), "{err}");
}

#[test]
fn a_missing_config_file_is_not_found() {
    let d = Daemon::init(Options::default());
    let missing = d.path("no-such-aivaultd.toml");
    let mut cmd = command_with(&d, &[("--config", missing.as_os_str())]);
    cmd.arg("--check-config");
    let err = failed_stderr(&run_to_end(cmd));
    assert!(
        err.contains(&format!("config file {} not found", missing.display())),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn a_config_syntax_error_names_its_line_and_column() {
    let d = Daemon::init(Options::default());
    write_config(
        &d,
        "[limits]\nmax_connections = 10\nidle_timeout_secs = = 3\n",
    );
    let mut cmd = d.command();
    cmd.arg("--check-config");
    let err = failed_stderr(&run_to_end(cmd));
    assert!(err.contains("line 3, column 21"), "{err}");
    assert_eq!(err.matches("line 3").count(), 1, "{err}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_a_file() {
    let mut d = Daemon::start_new(Options::default());
    d.stop();
    let log = std::fs::read_to_string(d.output_log()).unwrap();
    assert!(log.contains("aivaultd ready"), "{log}");
    assert!(!log.contains("\x1b["), "{log:?}");
}

#[test]
fn a_second_daemon_refuses_a_socket_a_live_one_answers_on() {
    let mut first = Daemon::start_new(Options::default());
    let second = Daemon::init(Options::default());
    let socket = first.socket();
    let err = failed_stderr(&run_to_end(command_with(
        &second,
        &[("--socket", socket.as_os_str())],
    )));
    assert!(
        err.contains(&format!("another aivaultd answers on {}", socket.display())),
        "{err}"
    );
    ok(&first.vaultctl(&User::root(), &["status"], b""));

    // A socket nobody answers on is stale: the next daemon replaces it.
    first.kill9();
    assert!(socket.exists());
    let mut child = command_with(&second, &[("--socket", socket.as_os_str())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let out = vaultctl_at(&socket, &User::root(), &["status"], b"");
        if out.status.success() {
            break true;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the second daemon did not take the stale socket");
}

#[test]
fn check_config_refuses_the_run_uid_range_serving_refuses() {
    let d = Daemon::init(Options::default());
    write_config(
        &d,
        "[runs]\nuid_first = 0\nuid_count = 10\n[dbus]\nbus = \"none\"\n",
    );
    let mut cmd = d.command();
    cmd.arg("--check-config");
    let err = failed_stderr(&run_to_end(cmd));
    assert!(err.contains("the run uid range 0+10 is invalid"), "{err}");
}

#[test]
fn init_creates_no_missing_parents_of_given_paths() {
    let d = Daemon::init(Options::default());
    let state = d.path("no-such-dir/state");
    let err = failed_stderr(&run_to_end({
        let mut c = command_with(&d, &[("--state-dir", state.as_os_str())]);
        c.arg("init");
        c
    }));
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(err.contains("not found"), "{err}");
    assert!(!d.path("no-such-dir").exists());

    let log = d.path("no-such-logs/aivault/audit.jsonl");
    let fresh_state = d.path("state2");
    let err = failed_stderr(&run_to_end({
        let mut c = command_with(
            &d,
            &[
                ("--state-dir", fresh_state.as_os_str()),
                ("--audit-log", log.as_os_str()),
            ],
        );
        c.arg("init");
        c
    }));
    assert!(err.contains(&log.display().to_string()), "{err}");
    assert!(!d.path("no-such-logs").exists());
    assert!(
        !fresh_state.exists(),
        "nothing is created when a path is refused"
    );

    // The last directory of a path is still created, as the packaged
    // defaults need outside systemd.
    let log = d.path("logs2/audit.jsonl");
    let out = run_to_end({
        let mut c = command_with(
            &d,
            &[
                ("--state-dir", fresh_state.as_os_str()),
                ("--audit-log", log.as_os_str()),
            ],
        );
        c.arg("init");
        c
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fresh_state.is_dir() && d.path("logs2").is_dir());
}

#[test]
fn check_config_refuses_a_key_provider_the_vault_was_not_created_for() {
    let d = Daemon::init(Options::default());
    let mut cmd = command_with(&d, &[("--key-provider", OsStr::new("passphrase"))]);
    cmd.arg("--check-config");
    let err = failed_stderr(&run_to_end(cmd));
    assert!(err.contains("vault was created for key provider"), "{err}");
    // Serving refuses it the same way.
    let err = failed_stderr(&run_to_end(command_with(
        &d,
        &[("--key-provider", OsStr::new("passphrase"))],
    )));
    assert!(err.contains("vault was created for key provider"), "{err}");
}

/// `aivaultd --check-config` with `d`'s paths; its output.
fn check_config(d: &Daemon) -> Output {
    let mut cmd = d.command();
    cmd.arg("--check-config");
    run_to_end(cmd)
}

/// The bytes and modification times of every file below `dir`.
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = aivault_tests::files_below(dir)
        .into_iter()
        .filter(|p| !p.ends_with("daemon.out"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, bytes, mtime)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn check_config_unwraps_the_vault_key_as_serving_does() {
    let d = Daemon::init(Options::default());
    let out = check_config(&d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("key: unwraps the vault's data key"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A valid key file, but another vault's.
    let other = Daemon::init(Options::default());
    std::fs::copy(other.key_file(), d.key_file()).unwrap();
    let err = failed_stderr(&check_config(&d));
    assert!(err.contains("the key does not open this vault"), "{err}");
    // Serving refuses it the same way.
    let err = failed_stderr(&run_to_end(d.command()));
    assert!(err.contains("the key does not open this vault"), "{err}");

    // An unreadable key provider.
    std::fs::set_permissions(d.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = failed_stderr(&check_config(&d));
    assert!(err.contains(&d.key_file().display().to_string()), "{err}");
}

#[test]
fn check_config_refuses_a_tampered_or_cut_audit_log_and_writes_nothing() {
    let alice = User::ensure("aivt-alice");
    let mut d = Daemon::init(Options::default());
    // A fresh vault has no audit log yet; checking creates none.
    let before = snapshot(d.dir.path());
    ok(&check_config(&d));
    assert_eq!(snapshot(d.dir.path()), before, "--check-config wrote");
    assert!(!d.audit_log().exists());

    d.start();
    for name in ["A", "B", "C"] {
        ok(&d.vaultctl(&alice, &["secrets", "set", name], b"a-long-enough-value"));
    }
    d.stop();
    let before = snapshot(d.dir.path());
    let out = ok(&check_config(&d));
    assert!(out.contains("audit log: "), "{out}");
    assert_eq!(snapshot(d.dir.path()), before, "--check-config wrote");

    let log = d.audit_log();
    let original = std::fs::read_to_string(&log).unwrap();
    // One record edited.
    let edited = original.replacen("\"name\":\"B\"", "\"name\":\"X\"", 1);
    assert_ne!(edited, original);
    std::fs::write(&log, &edited).unwrap();
    let err = failed_stderr(&check_config(&d));
    assert!(err.contains("audit log"), "{err}");
    assert!(err.contains("mac mismatch (record edited)"), "{err}");

    // The newest record cut off, behind the anchor's back.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.pop();
    std::fs::write(&log, format!("{}\n", lines.join("\n"))).unwrap();
    let err = failed_stderr(&check_config(&d));
    assert!(err.contains("newest records deleted"), "{err}");

    std::fs::write(&log, &original).unwrap();
    ok(&check_config(&d));
}

#[test]
fn the_socket_directory_is_created_only_under_an_existing_parent() {
    let d = Daemon::init(Options::default());
    let deep = d.path("no-such-dir/run/aivaultd.sock");
    for check in [true, false] {
        let mut cmd = command_with(&d, &[("--socket", deep.as_os_str())]);
        if check {
            cmd.arg("--check-config");
        }
        let err = failed_stderr(&run_to_end(cmd));
        assert!(
            err.contains(&format!(
                "directory {} not found",
                d.path("no-such-dir").display()
            )),
            "{err}"
        );
        assert!(!d.path("no-such-dir").exists(), "a parent was created");
    }

    // A relative path: the runner and the jail host could not find it.
    let mut cmd = command_with(&d, &[("--socket", OsStr::new("aivaultd.sock"))]);
    cmd.arg("--check-config");
    let err = failed_stderr(&run_to_end(cmd));
    assert!(
        err.contains("socket aivaultd.sock is not an absolute path"),
        "{err}"
    );

    // A directory others may write is refused: they could replace the socket.
    std::fs::create_dir(d.path("open")).unwrap();
    std::fs::set_permissions(d.path("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = d.path("open/aivaultd.sock");
    let err = failed_stderr(&run_to_end(command_with(
        &d,
        &[("--socket", open.as_os_str())],
    )));
    assert!(err.contains(&d.path("open").display().to_string()), "{err}");
    assert!(!open.exists());

    // The last directory itself is created, root's and 0755.
    let mut d = d;
    d.start();
    d.stop();
    let meta = std::fs::metadata(d.path("run")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
}

#[test]
fn check_config_checks_a_systemd_credential_only_where_the_service_has_it() {
    let d = Daemon::init(Options::default());
    let creds = d.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(d.key_file(), creds.join("aivault.kek")).unwrap();
    let state = d.path("creds-state");
    let with = |extra: &[&str], env: bool| {
        let mut cmd = command_with(
            &d,
            &[
                ("--key-provider", OsStr::new("systemd-creds:aivault.kek")),
                ("--state-dir", state.as_os_str()),
                ("--audit-log", d.path("creds-log/audit.jsonl").as_os_str()),
            ],
        );
        cmd.args(extra);
        if env {
            cmd.env("CREDENTIALS_DIRECTORY", &creds);
        }
        run_to_end(cmd)
    };
    ok(&with(&["init"], true));
    let out = ok(&with(&["--check-config"], false));
    assert!(
        out.contains("systemd credential aivault.kek not checked"),
        "{out}"
    );
    let out = ok(&with(&["--check-config"], true));
    assert!(out.contains("key: unwraps the vault's data key"), "{out}");
    // Another key under the credential's name is found out.
    let other = Daemon::init(Options::default());
    std::fs::copy(other.key_file(), creds.join("aivault.kek")).unwrap();
    let err = failed_stderr(&with(&["--check-config"], true));
    assert!(err.contains("the key does not open this vault"), "{err}");
}
