//! The D-Bus interface, on a private `dbus-daemon` configured like the system
//! bus and loading the bus policy file the package ships; callers are real
//! unprivileged users using `busctl`, `gdbus` and the third-party Python
//! library dbus-next. Needs root, and what `scripts/dbus-deps.sh` installs
//! (the tests run it first and fail if it fails).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aivault_tests::bus::{repo, Bus};
use aivault_tests::{ok, set_secret, Daemon, Options, User};
use serde_json::Value;

const SECRET: &str = "dbus-Secret-Value-0123456789-abcdef";
const NAME: &str = "org.aivault.Vault1";
const PATH: &str = "/org/aivault/Vault1";

/// Runs `scripts/dbus-deps.sh` once per test binary; returns its directory.
fn deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| aivault_tests::install_deps("dbus-deps.sh"))
}

fn policy(alice: &User, gate: &Path) -> String {
    format!(
        r#"
[[rule]]
name = "printenv"
command = "/usr/bin/printenv"
users = ["{a}"]
allow_interpreter = true
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "sh"
command = "/usr/bin/sh"
users = ["{a}"]
allow_interpreter = true
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]
[rule.sandbox]
timeout = "10m"
read = ["{gate}"]
"#,
        a = alice.name,
        gate = gate.display()
    )
}

/// A bus, a daemon serving on it, alice with a secret, bob without.
struct Setup {
    bus: Bus,
    d: Daemon,
    alice: User,
    bob: User,
    gate: tempfile::TempDir,
}

fn setup() -> Setup {
    deps();
    let bus = Bus::start();
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    // A directory alice may write and the run may read: the streaming test's
    // command waits there for the client's go-ahead.
    let gate = tempfile::Builder::new()
        .prefix("aivault-gate-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(gate.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(
        gate.path(),
        Some(nix::unistd::Uid::from_raw(alice.uid)),
        None,
    )
    .unwrap();
    let d = Daemon::start_new(Options {
        policy: policy(&alice, gate.path()),
        config: bus.daemon_config(),
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", SECRET);
    let s = Setup {
        bus,
        d,
        alice,
        bob,
        gate,
    };
    s.bus.wait_for_name(NAME, &s.d);
    s
}

impl Setup {
    /// A command as `user`, with the private bus as its system bus.
    fn as_user(&self, program: &str, user: &User) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/tmp")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if user.uid != 0 {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn busctl(&self, user: &User, args: &[&str]) -> Output {
        self.as_user("busctl", user)
            .arg("--system")
            .args(args)
            .output()
            .unwrap()
    }

    fn busctl_call(&self, user: &User, args: &[&str]) -> Output {
        let mut all = vec!["call", NAME, PATH, NAME];
        all.extend_from_slice(args);
        self.busctl(user, &all)
    }

    /// `gdbus call` of a Vault1 method (gdbus introspects it first).
    fn gdbus_call(&self, user: &User, method: &str, args: &[&str]) -> Output {
        let method = format!("{NAME}.{method}");
        self.as_user("gdbus", user)
            .args(["call", "--system", "--dest", NAME, "--object-path", PATH])
            .args(["--method", &method])
            .args(args)
            .output()
            .unwrap()
    }

    fn python(&self, user: &User) -> Command {
        let mut cmd = self.as_user(deps().join("venv/bin/python").to_str().unwrap(), user);
        cmd.arg(repo().join("tests/dbus/client.py"));
        cmd
    }

    /// Starts, as alice over dbus-next, a streaming run of two processes
    /// that would sleep for five minutes; returns the client once both run.
    fn hold_a_run(&self) -> Child {
        let (child, _) = self.start_holding("sleep 300 & sleep 300");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.d.run_processes().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "the run's processes never appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Starts, as alice over dbus-next, a streaming run of `sh -c script`;
    /// returns the client, which holds the run until killed, and the run id.
    fn start_holding(&self, script: &str) -> (Child, u64) {
        let mut child = self
            .python(&self.alice)
            .args(["hold", "sh", "-c", script])
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let id = v["started"]
            .as_u64()
            .unwrap_or_else(|| panic!("no run started: {line}"));
        (child, id)
    }

    /// Waits (30 s at most) until no process of a run is left.
    #[track_caller]
    fn wait_until_no_run_process(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.d.run_processes().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}",
                self.d.run_processes()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn audit(&self) -> Vec<Value> {
        self.d.audit_records()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(out: &Output) {
    let all = text(out);
    assert!(!all.contains(SECRET), "the secret escaped: {all}");
}

/// Runs a dbus-next client mode to completion; parses its last line.
fn client_json(mut cmd: Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{what} failed: {}", text(&out));
    assert_no_secret(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {}", text(&out)))
}

#[test]
fn busctl_and_gdbus_list_and_run_with_redacted_output() {
    let s = setup();
    // busctl: the caller's own secrets, by name only.
    let list = s.busctl_call(&s.alice, &["ListSecrets", "s", "user"]);
    assert!(list.status.success(), "{}", text(&list));
    let listed = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        listed.starts_with("aa{sv} 1 ") && listed.contains("\"name\" s \"TOKEN\""),
        "{listed}"
    );
    assert_no_secret(&list);
    // busctl: a run whose output is the secret comes back redacted.
    let run = s.busctl_call(&s.alice, &["Run", "asa{sv}", "2", "printenv", "TOKEN", "0"]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        r#"isssb 0 "exited" "[REDACTED:TOKEN]\n" "" false"#
    );
    assert_no_secret(&run);
    // The Status property.
    let status = s.busctl(&s.alice, &["get-property", NAME, PATH, NAME, "Status"]);
    let status_text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.status.success() && status_text.contains("\"sealed\" b false"),
        "{}",
        text(&status)
    );
    // gdbus, which introspects the interface first, does the same.
    let gd = s.gdbus_call(&s.alice, "Run", &["['printenv', 'TOKEN']", "{}"]);
    assert!(gd.status.success(), "{}", text(&gd));
    assert_eq!(
        String::from_utf8_lossy(&gd.stdout).trim(),
        r"(0, 'exited', '[REDACTED:TOKEN]\n', '', false)"
    );
    assert_no_secret(&gd);
    let gd_list = s.gdbus_call(&s.alice, "ListSecrets", &["user"]);
    assert!(
        gd_list.status.success() && String::from_utf8_lossy(&gd_list.stdout).contains("'TOKEN'"),
        "{}",
        text(&gd_list)
    );
}

#[test]
fn another_user_sees_nothing_and_denials_are_named_and_audited_alike() {
    let s = setup();
    // Bob's list is his own (empty); alice's secret is not his to name.
    let list = s.busctl_call(&s.bob, &["ListSecrets", "s", "user"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "aa{sv} 0",
        "{}",
        text(&list)
    );
    let exists = s.busctl_call(&s.bob, &["SecretExists", "ss", "user", "TOKEN"]);
    assert_eq!(String::from_utf8_lossy(&exists.stdout).trim(), "b false");
    let masked = s.gdbus_call(&s.bob, "MaskedValue", &["user", "TOKEN"]);
    assert!(!masked.status.success());
    assert!(
        String::from_utf8_lossy(&masked.stderr)
            .contains("org.aivault.Vault1.Error.NotFound: no such secret"),
        "{}",
        text(&masked)
    );
    // Bob may not run alice's command with her secret: the rule is hers.
    let bob_run = s.busctl_call(&s.bob, &["Run", "asa{sv}", "2", "printenv", "TOKEN", "0"]);
    assert!(!bob_run.status.success(), "{}", text(&bob_run));
    assert_no_secret(&bob_run);

    // A command no rule allows: the named error over D-Bus (gdbus prints
    // the error name), and an audit record like the socket path's.
    let gd = s.gdbus_call(&s.alice, "Run", &["['/usr/bin/id']", "{}"]);
    assert!(!gd.status.success());
    assert!(
        String::from_utf8_lossy(&gd.stderr)
            .contains("org.aivault.Vault1.Error.PermissionDenied: no rule allows /usr/bin/id"),
        "{}",
        text(&gd)
    );
    let bus_record = s.audit().pop().unwrap();
    let sock = s.d.vaultctl(&s.alice, &["run", "--", "/usr/bin/id"], b"");
    assert!(!sock.status.success());
    let sock_record = s.audit().pop().unwrap();
    for field in [
        "op", "uid", "gid", "scope", "name", "outcome", "reason", "detail",
    ] {
        assert_eq!(
            bus_record[field], sock_record[field],
            "{field} differs:\nD-Bus:  {bus_record}\nsocket: {sock_record}"
        );
    }
    assert_eq!(bus_record["outcome"], "denied");
    assert_eq!(bus_record["uid"], s.alice.uid);
    // The caller's pid, as the bus reported it, is the gdbus process.
    assert!(bus_record["pid"].as_i64().unwrap() > 0, "{bus_record}");
}

#[test]
fn only_the_daemon_may_own_the_bus_name() {
    let s = setup();
    let mut cmd = s.python(&s.alice);
    cmd.arg("own");
    let v = client_json(cmd, "own");
    assert_eq!(v["error"], "org.freedesktop.DBus.Error.AccessDenied", "{v}");
    // The same user may not own it even when the daemon is gone.
    let mut s = s;
    s.d.stop();
    let mut cmd = s.python(&s.alice);
    cmd.arg("own");
    let v = client_json(cmd, "own after the daemon stopped");
    assert_eq!(v["error"], "org.freedesktop.DBus.Error.AccessDenied", "{v}");
}

#[test]
fn dbus_next_calls_and_streams_output_before_the_command_ends() {
    let s = setup();
    let mut cmd = s.python(&s.alice);
    cmd.arg("calls");
    let v = client_json(cmd, "dbus-next calls");
    assert_eq!(v["list"][0]["name"], "TOKEN", "{v}");
    assert_eq!(v["exists"], true, "{v}");
    assert!(v["masked"].is_string(), "{v}");
    assert_eq!(
        v["run"],
        serde_json::json!([0, "exited", "[REDACTED:TOKEN]\n", "", false]),
        "{v}"
    );
    assert_eq!(
        v["denied"]["error"], "org.aivault.Vault1.Error.PermissionDenied",
        "{v}"
    );
    assert_eq!(v["status"]["sealed"], false, "{v}");
    // Options are typed: an unknown key or a wrong type is refused.
    // (zbus names the decoding error org.freedesktop.zbus.Error).
    assert!(
        v["unknown_option"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field `stdni`")),
        "{v}"
    );
    assert!(
        v["wrong_type"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expected a value of signature `t`")),
        "{v}"
    );

    // Streaming: the command prints a line, then waits until the client has
    // read that line and created the go file, then prints its secret.
    let go = s.gate.path().join("go");
    let script = format!(
        "echo first; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; echo \"second $TOKEN\"; echo oops >&2",
        go = go.display()
    );
    let mut cmd = s.python(&s.alice);
    cmd.args(["stream", go.to_str().unwrap(), "sh", "-c", &script]);
    let v = client_json(cmd, "dbus-next stream");
    assert_eq!(v["first"], "first\n", "{v}");
    assert_eq!(v["ended_before_first"], false, "{v}");
    assert_eq!(v["rest"], "second [REDACTED:TOKEN]\n", "{v}");
    assert_eq!(v["stderr"], "oops\n", "{v}");
    let id = v["run_id"].clone();
    assert_eq!(v["signal"][0], id, "{v}");
    assert_eq!(v["signal"][1], 0, "{v}");
    assert_eq!(v["signal"][2], "exited", "{v}");
    assert_eq!(v["wait"][0], 0, "{v}");
    assert_eq!(v["wait"][3], 1, "one redaction: {v}");
}

#[test]
fn a_caller_that_disconnects_mid_run_leaves_no_process_behind() {
    let s = setup();
    let mut child = s.hold_a_run();
    // The caller vanishes without a word.
    child.kill().unwrap();
    child.wait().unwrap();
    s.wait_until_no_run_process("processes of the run survived their caller");
    // The end is audited as a cancellation, not a timeout.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exit = s.audit().into_iter().rev().find(|r| r["op"] == "run.exit");
        if let Some(exit) = exit {
            assert_eq!(exit["detail"]["reason"], "cancelled", "{exit}");
            break;
        }
        assert!(Instant::now() < deadline, "no run.exit record");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The teardown removes the directories while the exit is recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.d.run_dirs().is_empty() {
        assert!(Instant::now() < deadline, "the run's directories remain");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_shipped_introspection_data_is_the_served_interface() {
    let s = setup();
    let out = s.busctl(&s.alice, &["introspect", "--xml-interface", NAME, PATH]);
    let live = ok(&out);
    let shipped =
        std::fs::read_to_string(repo().join("packaging/dbus/org.aivault.Vault1.xml")).unwrap();
    let iface = |xml: &str| -> String {
        let start = xml
            .find("<interface name=\"org.aivault.Vault1\">")
            .unwrap_or_else(|| panic!("no Vault1 interface in {xml}"));
        let end = xml[start..].find("</interface>").unwrap() + start;
        xml[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        iface(&shipped),
        iface(&live),
        "packaging/dbus/org.aivault.Vault1.xml is out of date; the live interface is:\n{live}"
    );
}

/// Parses `xml` with a strict XML parser (Python's expat, in the venv of
/// `scripts/dbus-deps.sh`); panics with the parser's complaint.
#[track_caller]
fn assert_well_formed_xml(xml: &str, what: &str) {
    let mut child = Command::new(deps().join("venv/bin/python"))
        .args([
            "-c",
            "import sys, xml.dom.minidom; xml.dom.minidom.parseString(sys.stdin.buffer.read())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), xml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} is not well-formed XML: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_served_introspection_data_is_well_formed_xml() {
    let s = setup();
    // The object's own Introspect reply, as busctl receives it.
    let out = s.busctl(&s.alice, &["introspect", "--xml-interface", NAME, PATH]);
    let live = ok(&out);
    assert!(
        live.contains("<interface name=\"org.aivault.Vault1\">"),
        "{live}"
    );
    assert_well_formed_xml(&live, "the served introspection data");
}

#[test]
fn the_shipped_bus_files_are_well_formed_xml() {
    let dir = repo().join("packaging/dbus");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("xml" | "conf")
        ) {
            let xml = std::fs::read_to_string(&path).unwrap();
            assert_well_formed_xml(&xml, &path.display().to_string());
            seen += 1;
        }
    }
    assert!(seen >= 2, "no bus files found in {}", dir.display());
}

/// The last audit record, which must be a refusal of `op` for alice
/// that says `why`, and must not repeat more than `max` bytes of text
/// anywhere.
#[track_caller]
fn assert_refusal_recorded(s: &Setup, op: &str, why: &str, max: usize) -> Value {
    let rec = s.audit().pop().unwrap();
    let line = rec.to_string();
    assert!(
        line.len() < max,
        "the record repeats the request: {} bytes",
        line.len()
    );
    assert_eq!(rec["op"], op, "{line}");
    assert_eq!(rec["outcome"], "denied", "{line}");
    assert_eq!(rec["uid"], s.alice.uid, "{line}");
    assert!(rec["reason"].as_str().unwrap().contains(why), "{line}");
    rec
}

#[test]
fn oversized_names_and_argv_get_their_own_error_and_an_audited_refusal() {
    let s = setup();
    let name = "N".repeat(100 * 1024);
    let (a, b) = ("a".repeat(100 * 1024), "b".repeat(100 * 1024));
    let too_long = "a secret name is at most 128 bytes long";
    let too_big = "arguments and environment exceed 128 KiB";

    // Over the socket.
    let out = s.d.vaultctl(&s.alice, &["secrets", "exists", &name], b"");
    let err = aivault_tests::fails_with(&out, 2);
    assert!(err.contains(too_long), "{err}");
    let rec = assert_refusal_recorded(&s, "secret.exists", too_long, 4096);
    assert!(rec["name"].is_null(), "{rec}");
    let out = s.d.vaultctl(&s.alice, &["run", "--", &a, &b], b"");
    let err = aivault_tests::fails_with(&out, 2);
    assert!(err.contains(too_big), "{err}");
    let rec = assert_refusal_recorded(&s, "run", too_big, 4096);
    assert!(
        rec["detail"]["argv0"].as_str().unwrap().starts_with("aaa"),
        "{rec}"
    );

    // A large import is recorded (its names as far as a record holds them).
    let dotenv: String = (0..2000)
        .map(|i| format!("{}{i:04}=v\n", "I".repeat(96)))
        .collect();
    let out =
        s.d.vaultctl(&s.alice, &["secrets", "import", "-"], dotenv.as_bytes());
    ok(&out);
    let rec = s.audit().pop().unwrap();
    assert_eq!(rec["op"], "secret.import", "{}", &rec.to_string()[..300]);
    assert_eq!(rec["detail"]["count"], 2000, "{}", &rec.to_string()[..300]);
    assert!(rec["detail"]["names_left_out"].as_u64().unwrap() > 0);

    // An allowed run with a long argument runs, and its records show a
    // bounded part of its argv.
    let out =
        s.d.vaultctl(&s.alice, &["run", "--", "sh", "-c", "echo ran", &a], b"");
    assert_eq!(ok(&out).trim(), "ran");
    for op in ["run", "run.exit"] {
        // The exit is recorded while the caller reads its status.
        let deadline = Instant::now() + Duration::from_secs(10);
        let rec = loop {
            if let Some(r) = s.audit().into_iter().rev().find(|r| r["op"] == op) {
                break r;
            }
            assert!(Instant::now() < deadline, "no {op} record");
            std::thread::sleep(Duration::from_millis(20));
        };
        let line = rec.to_string();
        assert!(line.len() < 16 * 1024, "{op}: a {} byte record", line.len());
        let argv = rec["detail"]["argv"].as_array().unwrap();
        assert_eq!(argv[..3], ["sh", "-c", "echo ran"], "{op}");
        assert!(argv[3].as_str().unwrap().ends_with('…'), "{op}");
    }

    // Over D-Bus (gdbus prints the error's name).
    let out = s.gdbus_call(&s.alice, "SecretExists", &["user", &format!("'{name}'")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("org.aivault.Vault1.Error.InvalidName: {too_long}")),
        "{}",
        text(&out)
    );
    assert_refusal_recorded(&s, "secret.exists", too_long, 4096);
    // (busctl: one gdbus argument could not hold both.)
    let out = s.busctl_call(&s.alice, &["Run", "asa{sv}", "2", &a, &b, "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(too_big),
        "{}",
        text(&out)
    );
    assert_refusal_recorded(&s, "run", too_big, 4096);
    // A secret name asked for a run is bounded alike.
    let out = s.busctl_call(
        &s.alice,
        &[
            "Run", "asa{sv}", "1", "printenv", "1", "secrets", "as", "1", &name,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_refusal_recorded(&s, "run", "at most 128 bytes long", 4096);
}

/// Calls a Vault1 method over `conn` that must fail; returns the error's
/// name and message.
macro_rules! error_of {
    ($conn:expr, $method:expr, $body:expr) => {
        match $conn
            .call_method(Some(NAME), PATH, Some(NAME), $method, $body)
            .await
        {
            Err(zbus::Error::MethodError(name, message, _)) => {
                (name.to_string(), message.unwrap_or_default())
            }
            other => panic!("{} did not fail with a method error: {other:?}", $method),
        }
    };
}

#[test]
fn errors_repeat_only_a_bounded_part_of_what_the_caller_sent() {
    use std::collections::HashMap;
    use zbus::zvariant::Value;
    let s = setup();
    let huge = "x".repeat(5 << 20);
    let long = "y".repeat(100 * 1024);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let errors = rt.block_on(async {
        let conn = zbus::connection::Builder::address(s.bus.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let none: HashMap<&str, Value<'_>> = HashMap::new();
        let mut unknown: HashMap<&str, Value<'_>> = HashMap::new();
        unknown.insert(&huge, Value::from(1u64));
        let mut bad_secret: HashMap<&str, Value<'_>> = HashMap::new();
        bad_secret.insert("secrets", Value::from(vec![format!("{long}=")]));
        vec![
            error_of!(conn, "SecretExists", &(huge.as_str(), "TOKEN")),
            error_of!(conn, "MaskedValue", &("user", huge.as_str())),
            error_of!(conn, "Run", &(vec![long.as_str()], &none)),
            error_of!(conn, "Run", &(vec!["printenv"], &unknown)),
            error_of!(conn, "Run", &(vec!["printenv"], &bad_secret)),
        ]
    });
    for (name, message) in &errors {
        assert!(
            message.len() <= 2048,
            "{name}: a {} byte message: {}…",
            message.len(),
            &message[..200]
        );
    }
    assert!(errors[0].1.starts_with("scope \"xxx"), "{errors:?}");
    assert!(errors[0].1.contains("…"), "{:?}", errors[0]);
    assert_eq!(errors[1].0, "org.aivault.Vault1.Error.InvalidName");
    assert!(
        errors[2].1.starts_with("no rule allows yyy"),
        "{:?}",
        errors[2]
    );
    assert!(
        errors[3].1.starts_with("unknown field `xxx"),
        "{:?}",
        errors[3]
    );
    assert!(
        errors[4].1.starts_with("invalid secret \"yyy"),
        "{:?}",
        errors[4]
    );
}

#[test]
fn run_ids_are_unpredictable_and_only_their_owners_reach_them() {
    let s = setup();
    let (mut first, a) = s.start_holding("sleep 300");
    let (mut second, b) = s.start_holding("sleep 300");
    // Counters would give 1 and 2 on a fresh daemon; random ids are
    // far apart and far from small numbers.
    assert!(a.abs_diff(b) > 1 << 20, "run ids {a} and {b} look counted");
    assert!(a.min(b) > 1 << 20, "run ids {a} and {b} look counted");
    // Another user can neither wait for nor cancel alice's run.
    for method in ["WaitRun", "CancelRun"] {
        let out = s.busctl_call(&s.bob, &[method, "t", &a.to_string()]);
        assert!(!out.status.success(), "{method}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("no run {a} of this caller")),
            "{method}: {}",
            text(&out)
        );
    }
    let status = s.busctl(&s.alice, &["get-property", NAME, PATH, NAME, "Status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("\"active_runs\" u 2"),
        "bob's call ended a run of alice: {}",
        text(&status)
    );
    for child in [&mut first, &mut second] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    s.wait_until_no_run_process("the held runs outlived their caller");
}

#[test]
fn masked_value_is_what_its_description_says() {
    let s = setup();
    set_secret(&s.d, &s.alice, "SHORT", "abc");
    let masked = |name: &str| {
        let out = s.busctl_call(&s.alice, &["MaskedValue", "ss", "user", name]);
        ok(&out).trim().to_string()
    };
    // The value's length shows nowhere: both masks have 12 characters.
    assert_eq!(
        masked("TOKEN"),
        format!("s \"********{}\"", &SECRET[SECRET.len() - 4..])
    );
    assert_eq!(masked("SHORT"), "s \"************\"");
    // The served description (and so the shipped one) and docs/dbus.md
    // say so, and do not claim the length is shown.
    let live = ok(&s.busctl(&s.alice, &["introspect", "--xml-interface", NAME, PATH]));
    let end = live.find("<method name=\"MaskedValue\">").unwrap();
    let start = live[..end].rfind("<!--").unwrap();
    let docs = std::fs::read_to_string(repo().join("docs/dbus.md")).unwrap();
    let row = docs
        .lines()
        .find(|l| l.starts_with("| `MaskedValue`"))
        .unwrap();
    for (what, text) in [
        ("the method's description", &live[start..end]),
        ("docs/dbus.md", row),
    ] {
        assert!(
            text.contains("fixed-width") && text.contains("12"),
            "{what}: {text}"
        );
        assert!(!text.contains("the length"), "{what}: {text}");
    }
}

#[test]
fn a_run_the_daemon_stop_ends_says_the_daemon_stopped_it() {
    let mut s = setup();
    // A Run call (busctl waits for its reply) of a command that outlives
    // the daemon's grace for active runs.
    let caller = s
        .as_user("busctl", &s.alice)
        .args(["--system", "--timeout=120", "--", "call", NAME, PATH, NAME])
        .args(["Run", "asa{sv}", "3", "sh", "-c", "sleep 300", "0"])
        .spawn()
        .unwrap();
    // And the same over the socket.
    let (socket, alice) = (s.d.socket(), s.alice.clone());
    let vaultctl = std::thread::spawn(move || {
        aivault_tests::vaultctl_at(
            &socket,
            &alice,
            &["run", "--", "sh", "-c", "sleep 300"],
            b"",
        )
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut uids: Vec<u32> = s.d.run_processes().iter().map(|p| p.1).collect();
        uids.sort_unstable();
        uids.dedup();
        if uids.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the runs never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGTERM, and time for the grace and the teardown (Daemon::stop
    // would kill the daemon before its grace is over).
    let pid = nix::unistd::Pid::from_raw(s.d.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.d.alive() {
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = caller.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"isssb 137 "cancelled" "" "" false"#,
        "{}",
        text(&out)
    );
    let out = vaultctl.join().unwrap();
    let err = aivault_tests::fails_with(&out, 137);
    assert!(err.contains("the daemon is stopping"), "{err}");
    let exits: Vec<Value> = s
        .audit()
        .into_iter()
        .filter(|r| r["op"] == "run.exit")
        .collect();
    assert_eq!(exits.len(), 2, "{exits:?}");
    for exit in exits {
        assert_eq!(exit["detail"]["reason"], "cancelled", "{exit}");
        assert_eq!(exit["reason"], "the daemon is stopping", "{exit}");
    }
}

#[test]
fn a_streaming_caller_that_stops_reading_can_still_cancel() {
    let s = setup();
    // The command writes without end; the client reads nothing, so the pipe
    // fills and the daemon's write into it blocks. Cancelling must still
    // end the run at once (its timeout is ten minutes).
    let mut cmd = s.python(&s.alice);
    cmd.args([
        "stall",
        "sh",
        "-c",
        "while :; do echo 0123456789abcdef0123456789abcdef; done",
    ]);
    let v = client_json(cmd, "dbus-next stall");
    assert_eq!(v["pipe_stalled"], true, "{v}");
    assert_eq!(v["cancel"], "ok", "{v}");
    assert_eq!(v["wait"][1], "cancelled", "{v}");
    s.wait_until_no_run_process("processes of the cancelled run survived");
}

#[test]
fn losing_the_bus_cancels_the_runs_started_over_it() {
    let mut s = setup();
    let mut child = s.hold_a_run();
    s.bus.kill();
    s.wait_until_no_run_process("runs outlived the bus connection they were started over");
    let _ = child.kill();
    let _ = child.wait();
    assert!(s.d.alive(), "the daemon must survive losing its bus");
}
