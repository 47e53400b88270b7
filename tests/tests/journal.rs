//! What `aivaultd` sends the journal, received for real: the daemon runs in
//! a private mount namespace whose `/run/systemd/journal/socket` is this
//! test's own datagram socket, and the test parses the native journal
//! protocol it receives (docs/logging.md). Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{fails_with, ok, require_root, Daemon, Options, User};

/// One journal entry: field name → value.
type Entry = HashMap<String, Vec<u8>>;

/// Parses one datagram of the native protocol: `NAME=value\n` fields, and
/// `NAME\n` followed by a little-endian u64 length, the value and `\n`.
fn parse_entry(mut b: &[u8]) -> Entry {
    let mut entry = Entry::new();
    while !b.is_empty() {
        let nl = b
            .iter()
            .position(|&c| c == b'\n')
            .unwrap_or_else(|| panic!("a field without its newline: {b:?}"));
        let line = &b[..nl];
        b = &b[nl + 1..];
        let (name, value) = match line.iter().position(|&c| c == b'=') {
            Some(eq) => (&line[..eq], line[eq + 1..].to_vec()),
            None => {
                assert!(b.len() >= 8, "a binary field without its length");
                let len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
                assert!(b.len() > 8 + len, "a binary field cut short");
                let value = b[8..8 + len].to_vec();
                assert_eq!(b[8 + len], b'\n', "a binary field not ended by a newline");
                b = &b[8 + len + 1..];
                (line, value)
            }
        };
        let name = String::from_utf8(name.to_vec()).unwrap();
        // journald drops fields whose names break its rules.
        assert!(
            !name.is_empty()
                && !name.starts_with('_')
                && name
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'),
            "field name journald would refuse: {name:?}"
        );
        entry.insert(name, value);
    }
    entry
}

fn field<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    e.get(name).map(|v| std::str::from_utf8(v).unwrap())
}

/// The id `docs/logging.md` lists for `kind`.
fn documented_id(kind: &str) -> String {
    let doc = std::fs::read_to_string(aivault_tests::bus::repo().join("docs/logging.md")).unwrap();
    let row = format!("| `{kind}` |");
    let line = doc
        .lines()
        .find(|l| l.starts_with(&row))
        .unwrap_or_else(|| panic!("docs/logging.md lists no id for {kind}"));
    line.split('`').nth(3).unwrap().to_string()
}

/// The daemon, its journal redirected; killed when dropped.
struct Journaled {
    child: Child,
}

impl Drop for Journaled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `d`'s daemon in a mount namespace of its own: a tmpfs on `/run`
/// and `journal_dir` (holding the test's `socket`) mounted on
/// `/run/systemd/journal`.
fn start_journaled(d: &Daemon, journal_dir: &Path) -> Journaled {
    let base = d.command();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o mode=0755 aivt-journal /run && \
             mkdir -p /run/systemd/journal && \
             mount --bind \"$0\" /run/systemd/journal && exec \"$@\"",
        )
        .arg(journal_dir)
        .arg(base.get_program())
        .args(base.get_args());
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let log = std::fs::File::create(d.output_log()).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut j = Journaled { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = aivault_client::Client::connect(&d.socket()) {
            if c.call(aivault_proto::RequestBody::Status).is_ok() {
                return j;
            }
        }
        if let Some(status) = j.child.try_wait().unwrap() {
            panic!(
                "aivaultd exited during start-up ({status}): {}",
                std::fs::read_to_string(d.output_log()).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "aivaultd did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Receives entries until one has `MESSAGE` = `message` (or 10 s pass).
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<Entry>, pred: impl Fn(&Entry) -> bool) -> Entry {
    if let Some(e) = seen.iter().find(|e| pred(e)) {
        return e.clone();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 256 * 1024];
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if n == 0 {
            continue; // the writer's probe that the socket listens
        }
        let e = parse_entry(&buf[..n]);
        let hit = pred(&e);
        seen.push(e.clone());
        if hit {
            return e;
        }
    }
    let messages: Vec<_> = seen.iter().filter_map(|e| field(e, "MESSAGE")).collect();
    panic!("no such journal entry; the messages were: {messages:#?}");
}

#[test]
fn each_decision_is_one_journal_line_in_words_with_a_message_id() {
    require_root();
    let alice = User::ensure("aivt-journal");
    let d = Daemon::init(Options {
        policy: format!(
            "[[rule]]\nname = \"truth\"\ncommand = \"/usr/bin/true\"\nusers = [\"{}\"]\n",
            alice.name
        ),
        ..Options::default()
    });
    let journal = tempfile::tempdir().unwrap();
    std::fs::set_permissions(journal.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = UnixDatagram::bind(journal.path().join("socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _daemon = start_journaled(&d, journal.path());
    let mut seen = Vec::new();

    let ready = wait_for(&sock, &mut seen, |e| {
        field(e, "MESSAGE") == Some("aivaultd ready")
    });
    assert_eq!(field(&ready, "MESSAGE_ID"), Some(&*documented_id("ready")));

    ok(&d.vaultctl(
        &alice,
        &["secrets", "set", "TOKEN"],
        b"journal-value-0123456789",
    ));
    let set_line = format!("secrets set name=TOKEN scope=user uid={} ok", alice.uid);
    let set = wait_for(&sock, &mut seen, |e| {
        field(e, "MESSAGE") == Some(&*set_line)
    });
    assert_eq!(
        field(&set, "MESSAGE_ID"),
        Some(&*documented_id("secret.set"))
    );
    assert_eq!(field(&set, "OP"), Some("secret.set"));
    assert_eq!(field(&set, "OUTCOME"), Some("ok"));
    assert_eq!(field(&set, "UID"), Some(&*alice.uid.to_string()));

    ok(&d.vaultctl(&alice, &["run", "--", "/usr/bin/true"], b""));
    let run_line = format!("run rule=truth uid={} ok", alice.uid);
    let run = wait_for(&sock, &mut seen, |e| {
        field(e, "MESSAGE") == Some(&*run_line)
    });
    assert_eq!(field(&run, "MESSAGE_ID"), Some(&*documented_id("run")));
    let exit_line = format!("run exit rule=truth uid={} ok", alice.uid);
    let exit = wait_for(&sock, &mut seen, |e| {
        field(e, "MESSAGE") == Some(&*exit_line)
    });
    assert_eq!(
        field(&exit, "MESSAGE_ID"),
        Some(&*documented_id("run.exit"))
    );

    fails_with(&d.vaultctl(&alice, &["run", "--", "/usr/bin/id"], b""), 4);
    let refused_line = format!("run uid={} denied: no rule allows /usr/bin/id", alice.uid);
    let refused = wait_for(&sock, &mut seen, |e| {
        field(e, "MESSAGE").is_some_and(|m| m.starts_with(&refused_line))
    });
    assert_eq!(field(&refused, "MESSAGE_ID"), Some(&*documented_id("run")));
    assert_eq!(field(&refused, "OUTCOME"), Some("denied"));
    assert!(field(&refused, "REASON").is_some_and(|r| r.starts_with("no rule allows")));

    // The value went nowhere near the journal.
    assert!(!seen
        .iter()
        .flat_map(|e| e.values())
        .any(|v| aivault_tests::contains(v, b"journal-value-0123456789")));
}
