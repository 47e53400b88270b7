//! `vaultctl` and `aivaultd` answer bad input with a clear error and a
//! meaningful exit status — never a panic — and `vaultctl` serves operators
//! and scripts: the audit table and its filters, checks before a value is
//! read, escaped text, timeouts, `--quiet` and JSON errors. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::BufRead;
use std::time::Duration;

use aivault_tests::{bin, fails_with, ok, set_secret, Daemon, Options, User};

fn no_panic(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_names_values_and_flags() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    for bad in [
        "",
        "1ABC",
        "has space",
        "semi;colon",
        "../etc",
        &"N".repeat(129),
    ] {
        let out = d.vaultctl(&alice, &["secrets", "set", bad], b"a-fine-value-123");
        let err = fails_with(&out, 2);
        no_panic(&out);
        assert!(err.contains("name"), "{bad:?}: {err}");
    }
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "EMPTY"], b""), 2);
    assert!(err.contains("empty"), "{err}");
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "EMPTY"], b"\n"), 2);
    assert!(err.contains("empty"), "{err}");
    let big = vec![b'x'; 64 * 1024 + 1];
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "BIG"], &big), 2);
    assert!(err.contains("65536"), "{err}");
    let max = vec![b'x'; 64 * 1024];
    ok(&d.vaultctl(&alice, &["secrets", "set", "MAX"], &max));

    let out = d.vaultctl(&alice, &["secrets", "set", "SHORT"], b"abc");
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "short values warn"
    );

    for args in [
        &["secrets", "frobnicate"][..],
        &["--bogus", "status"],
        &["secrets", "set"],
        &["secrets", "set", "A", "--expires", "tomorrow"],
    ] {
        let out = d.vaultctl(&alice, args, b"");
        fails_with(&out, 2);
        no_panic(&out);
    }
    // The value is never accepted from argv.
    fails_with(
        &d.vaultctl(&alice, &["secrets", "set", "A", "the-value"], b""),
        2,
    );
}

#[test]
fn help_is_there_and_unreachable_daemon_is_exit_5() {
    let alice = User::ensure("aivt-alice");
    for args in [
        &["--help"][..],
        &["secrets", "--help"],
        &["secrets", "set", "--help"],
        &["audit", "verify", "--help"],
    ] {
        let out =
            aivault_tests::vaultctl_at(std::path::Path::new("/nonexistent"), &alice, args, b"");
        let text = ok(&out);
        assert!(text.contains("Usage"), "{text}");
    }
    let help = ok(&aivault_tests::vaultctl_at(
        std::path::Path::new("/x"),
        &alice,
        &["--help"],
        b"",
    ));
    assert!(help.contains("Exit status"), "exit codes are documented");
    let out = aivault_tests::vaultctl_at(
        std::path::Path::new("/nonexistent/sock"),
        &alice,
        &["status"],
        b"",
    );
    let err = fails_with(&out, 5);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn daemon_refuses_to_run_unprivileged_or_on_insecure_paths() {
    let alice = User::ensure("aivt-alice");
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(bin("aivaultd"))
        .arg("--state-dir")
        .arg("/tmp")
        .uid(alice.uid)
        .gid(alice.gid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));

    // A group-writable state directory is refused, naming the path.
    let d = Daemon::init(Options::default());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.state_dir(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = d.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&d.state_dir().display().to_string()), "{err}");
    std::fs::set_permissions(d.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();

    // A key file readable by others is refused.
    std::fs::set_permissions(d.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.command().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_panic(&out);
}

/// Parses JSON lines.
fn records(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[test]
fn audit_list_is_a_table_by_default_json_on_request_and_filtered() {
    let d = Daemon::start_new(Options::default());
    let root = User::root();
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    set_secret(&d, &alice, "ALICE_ONE", "a-fine-value-123");
    set_secret(&d, &bob, "BOB_ONE", "a-fine-value-456");
    // A refused name is recorded as the caller sent it, escape and all.
    fails_with(
        &d.vaultctl(
            &alice,
            &["secrets", "set", "BAD\x1b[31mNAME"],
            b"a-fine-value-789",
        ),
        2,
    );

    let table = ok(&d.vaultctl(&root, &["audit", "list"], b""));
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in ["TIME (UTC)", "USER", "OP", "NAME", "OUTCOME", "REASON"] {
        assert!(header.contains(col), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.contains("ALICE_ONE") && l.contains("secret.set"))
        .expect(&table);
    assert!(row.contains("aivt-alice"), "user names, not uids: {row}");
    assert!(!row.contains(&alice.uid.to_string()), "{row}");
    assert_eq!(
        row.find("secret.set"),
        header.find("OP"),
        "aligned:\n{table}"
    );
    assert_eq!(
        row.find(" ok"),
        header.find(" OUTCOME"),
        "aligned:\n{table}"
    );
    let denied = table.lines().find(|l| l.contains("denied")).expect(&table);
    assert!(denied.contains("BAD\\x1b[31mNAME"), "escaped: {denied}");
    assert!(denied.contains("name"), "the reason: {denied}");
    assert!(
        !table.contains('\x1b'),
        "no raw escape reaches the terminal"
    );
    assert!(!table.trim_start().starts_with('{'), "not JSON: {table}");

    let all = records(&ok(&d.vaultctl(&root, &["--json", "audit", "list"], b"")));
    assert!(all.iter().any(|r| r["name"] == "ALICE_ONE"), "{all:?}");
    assert!(all.iter().all(|r| r["seq"].is_u64() && r["op"].is_string()));

    // --user by name or uid, --op, --since.
    let by_name = records(&ok(&d.vaultctl(
        &root,
        &["--json", "audit", "list", "--user", "aivt-bob"],
        b"",
    )));
    assert!(!by_name.is_empty());
    assert!(by_name.iter().all(|r| r["uid"] == bob.uid), "{by_name:?}");
    let by_uid = records(&ok(&d.vaultctl(
        &root,
        &["--json", "audit", "list", "--user", &bob.uid.to_string()],
        b"",
    )));
    assert_eq!(by_name, by_uid);
    let sets = records(&ok(&d.vaultctl(
        &root,
        &["--json", "audit", "list", "--op", "secret.set"],
        b"",
    )));
    assert!(sets.iter().all(|r| r["op"] == "secret.set"), "{sets:?}");
    assert!(sets.iter().any(|r| r["name"] == "BOB_ONE"));
    for since in ["1h", "7d", "2000-01-01T00:00:00Z"] {
        let recent = records(&ok(&d.vaultctl(
            &root,
            &["--json", "audit", "list", "--since", since],
            b"",
        )));
        assert!(recent.iter().any(|r| r["name"] == "ALICE_ONE"), "{since}");
    }
    let future = ok(&d.vaultctl(
        &root,
        &[
            "--json",
            "audit",
            "list",
            "--since",
            "2999-01-01T00:00:00+01:00",
        ],
        b"",
    ));
    assert_eq!(future, "", "nothing is that new");
    let limited = records(&ok(&d.vaultctl(
        &root,
        &[
            "--json",
            "audit",
            "list",
            "--op",
            "secret.set",
            "--limit",
            "1",
        ],
        b"",
    )));
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(Some(&limited[0]), sets.last(), "the newest match");

    // Alice still sees only her own records, however she filters.
    let hers = records(&ok(&d.vaultctl(
        &alice,
        &["--json", "audit", "list", "--user", "aivt-bob"],
        b"",
    )));
    assert!(hers.is_empty(), "{hers:?}");

    for bad in [
        &["audit", "list", "--since", "yesterday"][..],
        &["audit", "list", "--since", "2026-13-01T00:00:00Z"],
        &["audit", "list", "--user", "aivt-no-such-account"],
    ] {
        let out = d.vaultctl(&alice, bad, b"");
        fails_with(&out, 2);
        no_panic(&out);
    }
}

#[test]
fn audit_list_follow_prints_new_records_until_interrupted() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_secret(&d, &alice, "BEFORE", "a-fine-value-123");

    let mut cmd = std::process::Command::new(bin("vaultctl"));
    use std::os::unix::process::CommandExt;
    cmd.args(["--json", "audit", "list", "--follow"])
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .uid(alice.uid)
        .gid(alice.gid)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Bounded: whatever happens, the follower is ended below.
    let mut seen = Vec::new();
    let wait_for = |name: &str, seen: &mut Vec<serde_json::Value>| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no record of {name} ({e}); saw {seen:?}"));
        let r: serde_json::Value = serde_json::from_str(&line).unwrap();
        let found = r["name"] == name;
        seen.push(r);
        if found {
            return;
        }
    };
    wait_for("BEFORE", &mut seen);
    set_secret(&d, &alice, "AFTER_ONE", "a-fine-value-456");
    wait_for("AFTER_ONE", &mut seen);
    set_secret(&d, &alice, "AFTER_TWO", "a-fine-value-789");
    wait_for("AFTER_TWO", &mut seen);
    let _ = child.kill();
    let _ = child.wait();
    // Its own polls are audited but not echoed back to it.
    let own = seen
        .iter()
        .filter(|r| r["op"] == "audit.list" && r["pid"] == pid)
        .count();
    assert!(own <= 1, "only the initial listing may show: {seen:?}");
    let seqs: Vec<u64> = seen.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "each record once, in order: {seqs:?}"
    );
}

#[test]
fn set_checks_name_scope_and_existence_before_reading_the_value() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_secret(&d, &alice, "TAKEN", "a-fine-value-123");
    let refused = |args: &[&str], stdin: &[u8], code: i32| {
        let out = d.vaultctl(&alice, args, stdin);
        let err = fails_with(&out, code);
        no_panic(&out);
        assert!(!err.contains("empty"), "the value is not read first: {err}");
        assert!(
            !err.contains("warning"),
            "no warning for a refused request: {err}"
        );
        err
    };
    // Empty stdin, and yet the error is about what is really wrong.
    let err = refused(&["secrets", "set", "TAKEN"], b"", 2);
    assert!(
        err.contains("exists already") && err.contains("--force"),
        "{err}"
    );
    let err = refused(&["secrets", "set", "1BAD"], b"", 2);
    assert!(err.contains("name"), "{err}");
    let err = refused(&["secrets", "set", "SYS", "--scope", "system"], b"", 4);
    assert!(err.contains("root"), "{err}");
    let err = refused(&["secrets", "rotate", "MISSING"], b"", 3);
    assert!(err.contains("MISSING"), "{err}");
    // A short value for a refused request: the refusal, no warning.
    refused(&["secrets", "set", "TAKEN"], b"abc", 2);
    refused(&["secrets", "set", "1BAD"], b"abc", 2);

    // A valid request with empty stdin: the daemon's words for it.
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "NEW"], b""), 2);
    assert!(err.contains("empty values are not stored"), "{err}");
    let err = fails_with(
        &d.vaultctl(&alice, &["secrets", "set", "TAKEN", "--force"], b"\n"),
        2,
    );
    assert!(err.contains("empty values are not stored"), "{err}");
    // Valid requests are stored, and a short value still warns.
    let out = d.vaultctl(&alice, &["secrets", "set", "TAKEN", "--force"], b"abc");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    ok(&d.vaultctl(&alice, &["secrets", "rotate", "TAKEN"], b"a-fine-value-456"));
}

/// A socket that accepts connections and never answers, as a hung daemon.
fn silent_socket(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    path
}

/// Runs `cmd` to its end, or fails the test if it is still running after
/// 30 s (a vaultctl that waits for ever is what these tests look for).
fn output_within_30s(cmd: &mut std::process::Command) -> std::process::Output {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("vaultctl was still waiting after 30 s");
        }
    }
}

#[test]
fn a_daemon_that_never_answers_times_out() {
    let root = User::root();
    let dir = tempfile::tempdir().unwrap();
    let sock = silent_socket(dir.path());
    // Root: the socket is root's, as a daemon's would be.
    for args in [
        &["--daemon-timeout", "1s", "status"][..],
        &["--daemon-timeout", "500ms", "secrets", "list"],
        &["--daemon-timeout", "1s", "run", "--", "true"],
        &["--daemon-timeout", "1s", "audit", "list", "--follow"],
    ] {
        let out = output_within_30s(
            std::process::Command::new(bin("vaultctl"))
                .args(args)
                .env_clear()
                .env("AIVAULT_SOCKET", &sock),
        );
        let err = fails_with(&out, 5);
        assert!(
            err.contains("did not answer the handshake within"),
            "{args:?}: {err}"
        );
    }
    // The same from the environment.
    let out = output_within_30s(
        std::process::Command::new(bin("vaultctl"))
            .arg("status")
            .env_clear()
            .env("AIVAULT_SOCKET", &sock)
            .env("AIVAULT_DAEMON_TIMEOUT", "1s"),
    );
    let err = fails_with(&out, 5);
    assert!(err.contains("within 1s"), "{err}");
    let out =
        aivault_tests::vaultctl_at(&sock, &root, &["--daemon-timeout", "soon", "status"], b"");
    let err = fails_with(&out, 2);
    assert!(err.contains("--daemon-timeout"), "{err}");
}

#[test]
fn a_socket_that_refuses_the_user_is_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let alice = User::ensure("aivt-alice");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = silent_socket(dir.path());
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = aivault_tests::vaultctl_at(&sock, &alice, &["status"], b"");
    let err = fails_with(&out, 4);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    let out = aivault_tests::vaultctl_at(&sock, &alice, &["--json", "status"], b"");
    let (code, _) = json_error(&out, 4);
    assert_eq!(code, "permission-denied");
    // A missing socket is still "unavailable".
    let out = aivault_tests::vaultctl_at(&dir.path().join("none"), &alice, &["status"], b"");
    fails_with(&out, 5);
}

#[test]
fn run_refuses_relative_command_paths_as_usage_errors() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options {
        policy: format!(
            "[[rule]]\nname = \"t\"\ncommand = \"/usr/bin/true\"\nusers = [\"{}\"]\n",
            alice.name
        ),
        ..Options::default()
    });
    for cmd in ["./true", "bin/true", "../usr/bin/true", ".", ".."] {
        let out = d.vaultctl(&alice, &["run", "--", cmd], b"");
        let err = fails_with(&out, 2);
        assert!(err.contains("bare name"), "{cmd}: {err}");
    }
    // Bare names still go to the daemon's search path, absolute paths as they are.
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));
    ok(&d.vaultctl(&alice, &["run", "--", "/usr/bin/true"], b""));
}

#[test]
fn secrets_list_escapes_descriptions_and_tags_and_stays_aligned() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    ok(&d.vaultctl(
        &alice,
        &[
            "secrets",
            "set",
            "SHORT",
            "--description",
            "line1\nline2 \x1b[31mred\x1b[0m \u{202e}gnp.exe",
            "--tag",
            "t\u{202e}ag",
        ],
        b"a-fine-value-123",
    ));
    let long = "A_RATHER_LONG_SECRET_NAME_FOR_THE_COLUMN_0123456789";
    ok(&d.vaultctl(
        &alice,
        &["secrets", "set", long, "--description", "plain words"],
        b"a-fine-value-456",
    ));
    let list = ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    assert!(
        !list.contains('\x1b') && !list.contains('\u{202e}'),
        "{list:?}"
    );
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per secret: {list}");
    let short = lines.iter().find(|l| l.starts_with("SHORT ")).expect(&list);
    assert!(
        short.contains("line1\\nline2 \\x1b[31mred\\x1b[0m \\u{202e}gnp.exe"),
        "{short}"
    );
    assert!(short.contains("[t\\u{202e}ag]"), "{short}");
    let long_row = lines.iter().find(|l| l.starts_with(long)).expect(&list);
    let header = lines[0];
    for (row, start) in [(short, "line1"), (long_row, "plain words")] {
        assert_eq!(row.find(start), header.find("DESCRIPTION"), "\n{list}");
        assert_eq!(
            row.find(" 1  ").map(|i| i + 2),
            header.find("VERSION").map(|i| i + "VERSION".len()),
            "\n{list}"
        );
    }
    // JSON keeps the text as it is (JSON escapes it itself).
    let json: serde_json::Value = serde_json::from_str(&ok(&d.vaultctl(
        &alice,
        &["--json", "secrets", "list"],
        b"",
    )))
    .unwrap();
    assert!(json.as_array().unwrap().iter().any(|s| s["description"]
        .as_str()
        .is_some_and(|t| t.contains("\x1b[31m"))));
}

/// The one JSON error line on stderr, its code and message.
#[track_caller]
fn json_error(out: &std::process::Output, code: i32) -> (String, String) {
    let err = fails_with(out, code);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err}");
    let v: serde_json::Value =
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {err}"));
    let obj = v["error"].as_object().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(obj.len(), 2, "code and message only: {err}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        obj["code"].as_str().unwrap().to_string(),
        obj["message"].as_str().unwrap().to_string(),
    )
}

#[test]
fn json_errors_have_one_shape_everywhere() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_secret(&d, &alice, "TAKEN", "a-fine-value-123");
    let cases: &[(&[&str], &[u8], i32, &str)] = &[
        (
            &["--json", "secrets", "masked", "MISSING"],
            b"",
            3,
            "not-found",
        ),
        (
            &["--json", "secrets", "set", "1BAD"],
            b"x",
            2,
            "invalid-name",
        ),
        (
            &["--json", "secrets", "set", "TAKEN"],
            b"x",
            2,
            "already-exists",
        ),
        (&["--json", "secrets", "set", "NEW"], b"", 2, "usage"),
        (&["--json", "audit", "verify"], b"", 4, "permission-denied"),
        (&["--json", "run", "--", "./x"], b"", 2, "usage"),
        (
            &["--json", "run", "--", "true"],
            b"",
            4,
            "permission-denied",
        ),
        (
            &["--json", "audit", "list", "--since", "soon"],
            b"",
            2,
            "usage",
        ),
        // Errors of the command line itself, wherever --json stands.
        (&["--json", "secrets", "frobnicate"], b"", 2, "usage"),
        (&["secrets", "list", "--json", "--bogus"], b"", 2, "usage"),
    ];
    for (args, stdin, exit, code) in cases {
        let out = d.vaultctl(&alice, args, stdin);
        let (got, message) = json_error(&out, *exit);
        assert_eq!(&got, code, "{args:?}: {message}");
        assert!(
            !message.is_empty() && !message.starts_with("vaultctl"),
            "{message}"
        );
    }
    let gone = std::path::Path::new("/nonexistent/sock");
    let (code, _) = json_error(
        &aivault_tests::vaultctl_at(gone, &alice, &["--json", "status"], b""),
        5,
    );
    assert_eq!(code, "unavailable");
    // Without --json the same error is one line of text.
    let err = fails_with(
        &d.vaultctl(&alice, &["secrets", "masked", "MISSING"], b""),
        3,
    );
    assert!(err.starts_with("vaultctl: ") && !err.contains('{'), "{err}");
    // A warning under --json is JSON too; the result is on stdout.
    let out = d.vaultctl(&alice, &["--json", "secrets", "set", "SHORT"], b"abc");
    let result: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(result["name"], "SHORT");
    let warning: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).trim()).unwrap();
    assert!(warning["warning"]["message"].is_string(), "{warning}");
}

#[test]
fn quiet_drops_informational_lines_only() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // Without --quiet each of these says what it did.
    let out = d.vaultctl(&alice, &["secrets", "set", "LOUD"], b"a-fine-value-123");
    ok(&out);
    assert!(stderr(&out).contains("stored LOUD"), "{}", stderr(&out));
    for (args, stdin) in [
        (
            &["--quiet", "secrets", "set", "A"][..],
            &b"a-fine-value-123"[..],
        ),
        (&["-q", "secrets", "rotate", "A"], b"a-fine-value-456"),
        (&["secrets", "rm", "A", "--quiet"], b""),
        (&["-q", "secrets", "import", "-"], b"B=a-fine-value-789\n"),
    ] {
        let out = d.vaultctl(&alice, args, stdin);
        ok(&out);
        assert_eq!(stderr(&out), "", "{args:?}");
    }
    // Warnings and errors are not informational.
    let out = d.vaultctl(&alice, &["-q", "secrets", "set", "SHORT"], b"abc");
    ok(&out);
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let err = fails_with(
        &d.vaultctl(&alice, &["-q", "secrets", "rm", "MISSING"], b""),
        3,
    );
    assert!(err.contains("MISSING") || err.contains("no such"), "{err}");
    // Data on stdout is not informational either.
    let list = ok(&d.vaultctl(&alice, &["-q", "secrets", "list"], b""));
    assert!(list.contains("SHORT"), "{list}");
}
