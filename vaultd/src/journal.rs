//! What the daemon tells the journal: each audit record as one line that
//! says what happened in words (`run rule=deploy uid=1000 ok`), and a
//! `MESSAGE_ID` per kind of event so that `journalctl MESSAGE_ID=…` finds
//! every event of that kind. The ids are fixed, like systemd's catalog ids,
//! and listed in `docs/logging.md` (a unit test keeps the two in step).
//!
//! Events are `tracing` events; the journald layer (set up by the binary)
//! sends each field under its own name in capitals (`OP`, `UID`, `OUTCOME`),
//! so the `message_id` field becomes the journal's `MESSAGE_ID`.

use std::fmt::Write as _;

/// The audit operations and their `MESSAGE_ID`s.
pub const AUDIT_IDS: &[(&str, &str)] = &[
    ("run", "221a2a53002242a598b04bcf5a43852f"),
    ("run.exit", "1d70a05727d04b31b240b82a4cda8bb4"),
    ("secret.set", "412bb3b09c2a47aeabf3e24d4a17a5d9"),
    ("secret.rotate", "8171b502ab314aa0aa2c4d0fd6ca3d08"),
    ("secret.import", "e05dcfc84282465891dcfee15d738e52"),
    ("secret.generate", "e38f7ade23f342d98cd0bdf6abcc2b03"),
    ("secret.list", "ab0112da857b486b94b16a5b85498ca0"),
    ("secret.exists", "d1af5c181014420bb7220f3d7950fe02"),
    ("secret.masked", "346ddb8234a7403caf106197cc5c2817"),
    ("secret.remove", "e1c13ec6f7c448b494056380085e8ad6"),
    ("audit.list", "540ac36c2a1b42c7b26dce01fe04b48e"),
    ("audit.verify", "d2b7367ad90541ad98d58494cb86cc07"),
    ("audit.rotate", "8e0ac9d051164761ac052a16027720f0"),
    ("policy.show", "39b46092d12147a89308707bf4020237"),
    ("policy.check", "a2c259b7d6414f14a99cd4e75c69db49"),
    ("policy.reload", "6bc7d5a5843f46629e722ac22954be05"),
    ("unlock", "d557a8ed66114268b95cbbedc81675aa"),
    ("secret.backup", "e545e4ef0b72467ea02402d9e16b004a"),
    ("secret.restore", "4f302b5e456247928f6f01842cc39122"),
    ("approval.request", "5d1949bfe569417f8b20c88415e94b56"),
    ("approval.covered", "a229b75217ec470499714b4021745a1c"),
    ("approval.approve", "70e9f528e8714b4bace3f756894d8c64"),
    ("approval.deny", "2682b219ae4b40a2bdb34903b0a1885b"),
    ("approval.timeout", "2cc790db4e9a4344ac495e59bff8ab80"),
    ("approval.withdrawn", "70e5825c8fe8439f84eee4c38eb8d330"),
    ("approval.list", "64d63e71a4294f27a1a16d70867244be"),
    ("approval.code", "7dad5bd8d8414faa9bb6a2bcb02d4bad"),
    ("approval.code_revoked", "98c6a6f6ef124277af0e313fa7386e29"),
    ("capability.list", "0ca0925ba83d49d7571f9ef78623e8e4"),
    ("http.request", "07d126361de5f6e90fd9f487c9299762"),
    ("http.response", "18c257c0d4972b1310da39bcec91e707"),
    ("mcp.gateway", "7127b05048914b77a9b9983e724995f7"),
    ("mcp.upstream", "7373b4a187294a2d8629b6197dc98588"),
    ("mcp.call", "43129b42fd2347a2819bec133f90adb5"),
    ("mcp.tool_hidden", "295706c6d838452c9fb1b1e83c351f4f"),
    ("mcp.pin", "86006e2b49b6429c81a5db7f5b0f85c5"),
];

/// An audit record of an operation not in [`AUDIT_IDS`].
pub const AUDIT_OTHER: &str = "4d99d6bf263b49539a68aaaa47c28288";
/// The daemon serves (`aivaultd ready`).
pub const READY: &str = "0bf8ad7cb19d450aab0f959ec351d958";
/// The daemon was asked to stop.
pub const STOPPING: &str = "4f6ee398f9864198833bdc587fd3f6fc";
/// A reload put a new policy in force.
pub const POLICY_RELOADED: &str = "166d5fbc96924617afaf623b43749ad6";
/// A reload was refused; the previous policy stays in force.
pub const POLICY_RELOAD_REFUSED: &str = "4496470a138f47ceb99988977918ddbc";

/// The `MESSAGE_ID` of an audit record of `op`.
pub fn audit_message_id(op: &str) -> &'static str {
    AUDIT_IDS
        .iter()
        .find(|(o, _)| *o == op)
        .map_or(AUDIT_OTHER, |(_, id)| id)
}

/// The journal line of an audit record: the operation as `vaultctl` names
/// it, what it was about, who asked, and how it ended (with the reason of
/// a refusal or failure), e.g. `secrets set name=TOKEN scope=user uid=1000 ok`
/// or `run uid=1000 denied: no rule allows /usr/bin/id`.
/// What the journal line of an audit record says, as plain fields (the
/// audit log builds it from its record; this module depends on nothing of
/// the log's).
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub op: &'a str,
    pub scope: Option<&'a str>,
    pub name: Option<&'a str>,
    pub uid: u32,
    /// `ok`, `denied` or `failed`.
    pub outcome: &'a str,
    pub reason: Option<&'a str>,
}

pub fn audit_message(ev: &Line<'_>) -> String {
    let mut words = ev.op.split('.');
    let mut out = match words.next() {
        Some("secret") => "secrets".to_string(),
        Some(first) => first.to_string(),
        None => String::new(),
    };
    for w in words {
        out.push(' ');
        out.push_str(w);
    }
    if let Some(name) = ev.name {
        let key = if ev.op == "run" || ev.op.starts_with("run.") {
            "rule"
        } else if ev.op.starts_with("http.") {
            "capability"
        } else {
            "name"
        };
        let _ = write!(out, " {key}={}", token(name));
    }
    if let Some(scope) = ev.scope {
        let _ = write!(out, " scope={}", token(scope));
    }
    let _ = write!(out, " uid={} {}", ev.uid, ev.outcome);
    if let Some(reason) = ev.reason {
        out.push_str(": ");
        for c in reason.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// A value as one word: as it is when it is plain, else quoted and escaped.
fn token(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@+".contains(c));
    if plain {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(op: &'a str, name: Option<&'a str>, outcome: &'a str) -> Line<'a> {
        Line {
            op,
            scope: None,
            name,
            uid: 1000,
            outcome,
            reason: None,
        }
    }

    #[test]
    fn messages_say_what_happened() {
        let run = event("run", Some("deploy"), "ok");
        assert_eq!(audit_message(&run), "run rule=deploy uid=1000 ok");
        let mut set = event("secret.set", Some("aws/key"), "ok");
        set.scope = Some("user");
        assert_eq!(
            audit_message(&set),
            "secrets set name=aws/key scope=user uid=1000 ok"
        );
        let mut denied = event("run", None, "denied");
        denied.reason = Some("no rule allows it\nreally");
        assert_eq!(
            audit_message(&denied),
            "run uid=1000 denied: no rule allows it\\nreally"
        );
        let http = event("http.request", Some("openai/chat"), "ok");
        assert_eq!(
            audit_message(&http),
            "http request capability=openai/chat uid=1000 ok"
        );
        let odd = event("secret.remove", Some("a b\"c"), "failed");
        assert_eq!(
            audit_message(&odd),
            "secrets remove name=\"a b\\\"c\" uid=1000 failed"
        );
    }

    #[test]
    fn ids_are_distinct_128_bit_hex() {
        let mut all: Vec<&str> = AUDIT_IDS.iter().map(|(_, id)| *id).collect();
        all.extend([
            AUDIT_OTHER,
            READY,
            STOPPING,
            POLICY_RELOADED,
            POLICY_RELOAD_REFUSED,
        ]);
        for id in &all {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "an id is used twice");
        assert_eq!(audit_message_id("no.such.op"), AUDIT_OTHER);
    }

    /// Every operation the protocol names (`RequestBody::op`) has its own id.
    #[test]
    fn every_protocol_operation_has_an_id() {
        let src = include_str!("../../proto/src/messages.rs");
        let body = src
            .split("pub fn op(&self)")
            .nth(1)
            .and_then(|s| s.split("\n    }\n").next())
            .expect("RequestBody::op in proto/src/messages.rs");
        for op in body
            .split("=> \"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            if op == "status" {
                continue; // never audited
            }
            assert_ne!(audit_message_id(op), AUDIT_OTHER, "{op} has no MESSAGE_ID");
        }
    }

    /// `docs/logging.md` lists exactly these ids.
    #[test]
    fn the_docs_list_every_id() {
        let doc = include_str!("../../docs/logging.md");
        let mut listed: Vec<(String, String)> = Vec::new();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |s: &str| s.trim_matches('`').to_string();
            listed.push((unquote(cells[1]), unquote(cells[2])));
        }
        let mut expected: Vec<(String, String)> = AUDIT_IDS
            .iter()
            .map(|(o, i)| (o.to_string(), i.to_string()))
            .collect();
        for (what, id) in [
            ("other audit record", AUDIT_OTHER),
            ("ready", READY),
            ("stopping", STOPPING),
            ("policy reloaded", POLICY_RELOADED),
            ("policy reload refused", POLICY_RELOAD_REFUSED),
        ] {
            expected.push((what.to_string(), id.to_string()));
        }
        assert_eq!(listed, expected);
    }
}
