//! MCP benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aivault-tests --example bench_mcp
//! ```
//!
//! One `vaultctl mcp` session as an unprivileged user: round trip of
//! `tools/call secret_list` over 1,000 calls, and of `secret_run` of
//! `/bin/true`, median and p99, measured in one run.
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{set_secret, Daemon, Options, User};
use serde_json::{json, Value};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let alice = User::ensure("aivt-alice");
    let policy = format!(
        "[[rule]]\nname = \"true\"\ncommand = \"/usr/bin/true\"\nusers = [\"{}\"]\n",
        alice.name
    );
    let d = Daemon::start_new(Options {
        policy,
        runtime_on_tmpfs: true,
        ..Options::default()
    });
    for i in 0..20 {
        set_secret(&d, &alice, &format!("S{i}"), "bench-mcp-secret-value-0123");
    }
    let mut child = Command::new(aivault_tests::bin("vaultctl"))
        .arg("mcp")
        .env("AIVAULT_SOCKET", d.socket())
        .uid(alice.uid)
        .gid(alice.gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to = child.stdin.take().unwrap();
    let mut from = BufReader::new(child.stdout.take().unwrap());
    let mut id = 0u64;
    let mut call = |method: &str, params: Value| -> (Value, Duration) {
        id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let t = Instant::now();
        writeln!(to, "{msg}").unwrap();
        to.flush().unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        (serde_json::from_str(&line).unwrap(), t.elapsed())
    };
    call(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}),
    );
    let list = |call: &mut dyn FnMut(&str, Value) -> (Value, Duration)| {
        let (v, t) = call(
            "tools/call",
            json!({"name": "secret_list", "arguments": {}}),
        );
        assert!(v["result"]["isError"] != true, "{v}");
        t
    };
    for _ in 0..50 {
        list(&mut call);
    }
    let mut lat: Vec<Duration> = (0..1000).map(|_| list(&mut call)).collect();
    lat.sort();
    println!(
        "MCP secret_list round trip (20 secrets, 1,000 calls): median {:.2} ms, p99 {:.2} ms",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99))
    );
    let mut runs: Vec<Duration> = (0..200)
        .map(|_| {
            let (v, t) = call(
                "tools/call",
                json!({"name": "secret_run", "arguments": {"argv": ["/usr/bin/true"]}}),
            );
            assert_eq!(v["result"]["structuredContent"]["exit_code"], 0, "{v}");
            t
        })
        .collect();
    runs.sort();
    println!(
        "MCP secret_run of /usr/bin/true (200 calls): median {:.2} ms, p99 {:.2} ms",
        ms(pct(&runs, 0.5)),
        ms(pct(&runs, 0.99))
    );
    drop(to);
    let _ = child.wait();
}
