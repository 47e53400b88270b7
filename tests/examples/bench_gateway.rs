//! MCP gateway benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aivault-tests --example bench_gateway
//! ```
//!
//! Starts a daemon whose policy names two real upstreams (what
//! `scripts/gateway-deps.sh` installs: `@modelcontextprotocol/server-everything`
//! on node, and the Python SDK fixture server), and measures in one run,
//! with one client (a JSON-RPC client over stdio pipes, in this process)
//! and as one unprivileged user:
//!
//! * per call: `tools/call` through `vaultctl mcp-gateway` (gateway process,
//!   upstream jailed under its own uid) against the same upstream started
//!   directly by the client, both sessions open, alternated call by call;
//!   median and p99 of each, and the median of the pair-by-pair difference
//!   (the gateway's overhead). server-everything's `echo`, and the Python
//!   server's `echo_env`;
//! * cold start: a fresh `vaultctl mcp-gateway` until `initialize` is
//!   answered (the daemon leases a uid and starts the jailed gateway), and
//!   until its first call is answered (the upstream started under another
//!   uid, its handshake), against starting the upstream directly until its
//!   first call is answered.
//!
//! `AIVAULT_BENCH_CALLS` (default 1000) sets the number of alternated pairs.
//! `AIVAULT_BENCH_SERVE=FILE`: writes to FILE two shell commands, each one
//! whole Python SDK client process (start, list, one call, exit) through
//! the gateway and direct, for an outside timer; serves until FILE is
//! removed (at most ten minutes).
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use aivault_tests::mcp_stdio::StdioClient;
use aivault_tests::real_upstreams::{CommandLine, RealUpstreams};
use aivault_tests::{bin, bus, Daemon, Options, User};
use serde_json::{json, Value};

struct Bench {
    d: Daemon,
    real: RealUpstreams,
    alice: User,
}

fn setup() -> Bench {
    let alice = User::ensure("aivt-gw-bench");
    let real = RealUpstreams::install("bench");
    let policy = real.policy("every", &real.everything(), &alice.name, "allow = [\"*\"]")
        + &real.policy("py", &real.python(), &alice.name, "allow = [\"*\"]");
    let d = Daemon::start_new(Options {
        policy,
        ..Options::default()
    });
    Bench { d, real, alice }
}

fn as_user(c: &mut Command, user: &User) {
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .uid(user.uid)
        .gid(user.gid);
}

fn gateway(b: &Bench) -> StdioClient {
    let mut c = Command::new(bin("vaultctl"));
    c.arg("mcp-gateway");
    as_user(&mut c, &b.alice);
    c.env("AIVAULT_SOCKET", b.d.socket());
    StdioClient::spawn(c)
}

/// The upstream started by the client itself, as the same user, with a
/// home of its own in /tmp.
fn direct(b: &Bench, line: &CommandLine) -> StdioClient {
    let mut c = Command::new(&line.0);
    c.args(&line.1);
    as_user(&mut c, &b.alice);
    c.env("HOME", "/tmp");
    StdioClient::spawn(c)
}

/// A `tools/call` and how long its answer took; fails on an error answer.
fn call(s: &mut StdioClient, id: u64, name: &str, args: &Value) -> Duration {
    let t = Instant::now();
    let r = s.request(id, "tools/call", json!({"name": name, "arguments": args}));
    let took = t.elapsed();
    assert!(
        r.get("result").is_some() && r["result"]["isError"] != true,
        "{name}: {r}"
    );
    took
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (pct(&v, 0.5), pct(&v, 0.99))
}

/// Alternates `pairs` calls through the gateway (`exposed`) and direct
/// (`tool`), on open sessions, and prints the figures.
fn per_call(b: &Bench, label: &str, line: &CommandLine, exposed: &str, tool: &str, args: Value) {
    let pairs: usize = std::env::var("AIVAULT_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut g = gateway(b);
    g.initialize();
    let mut dir = direct(b, line);
    dir.initialize();
    let mut id = 10;
    for _ in 0..50 {
        id += 1;
        call(&mut g, id, exposed, &args);
        call(&mut dir, id, tool, &args);
    }
    let (mut through, mut straight, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        id += 1;
        let tg = call(&mut g, id, exposed, &args);
        let td = call(&mut dir, id, tool, &args);
        through.push(tg);
        straight.push(td);
        diff.push(ms(tg) - ms(td));
    }
    diff.sort_by(f64::total_cmp);
    let (gm, gp) = median_p99(through);
    let (dm, dp) = median_p99(straight);
    println!("{label}: {pairs} alternated pairs of tools/call");
    println!(
        "  through the gateway: median {:.3} ms, p99 {:.3} ms",
        ms(gm),
        ms(gp)
    );
    println!(
        "  direct:              median {:.3} ms, p99 {:.3} ms",
        ms(dm),
        ms(dp)
    );
    println!(
        "  overhead: median of pair differences {:.3} ms, p99 difference {:.3} ms, ratio of medians {:.2}",
        diff[diff.len() / 2],
        ms(gp) - ms(dp),
        ms(gm) / ms(dm)
    );
    assert!(g.finish().success());
    let _ = dir.finish();
}

/// Fresh sessions: (gateway until initialize, gateway until first call,
/// direct until first call), `n` times alternated; medians.
fn cold_start(b: &Bench, n: usize) {
    let (line, tool) = (b.real.everything(), "echo");
    let args = json!({"message": "cold"});
    let (mut init, mut first, mut straight) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let mut g = gateway(b);
        g.initialize();
        init.push(t.elapsed());
        call(&mut g, 2, "every__echo", &args);
        first.push(t.elapsed());
        assert!(g.finish().success());
        // Let the daemon tear the session down before the next one.
        let until = Instant::now() + Duration::from_secs(10);
        while !b.d.run_processes().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }

        let t = Instant::now();
        let mut d = direct(b, &line);
        d.initialize();
        call(&mut d, 2, tool, &args);
        straight.push(t.elapsed());
        let _ = d.finish();
    }
    let (im, _) = median_p99(init);
    let (fm, _) = median_p99(first);
    let (sm, _) = median_p99(straight);
    println!("cold start (server-everything), {n} fresh sessions each, medians:");
    println!(
        "  gateway session until initialize answered: {:.1} ms",
        ms(im)
    );
    println!(
        "  gateway session until first call answered (upstream started): {:.1} ms",
        ms(fm)
    );
    println!(
        "  upstream started directly until first call answered: {:.1} ms",
        ms(sm)
    );
    println!(
        "  the gateway's part of a cold start: {:.1} ms",
        ms(fm) - ms(sm)
    );
}

/// `AIVAULT_BENCH_SERVE=FILE`: two whole SDK-client processes for an
/// outside timer.
fn serve(b: &Bench, file: &std::path::Path) {
    let user = &b.alice.name;
    let client = bus::repo().join("tests/fixtures/sdk_client.py");
    let (node, args) = b.real.everything();
    let plan = |command: Vec<String>, name: &str| {
        json!({
            "command": command,
            "env": {"AIVAULT_SOCKET": b.d.socket(), "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            "calls": [{"name": name, "arguments": {"message": "bench"}}],
        })
        .to_string()
    };
    let through = plan(
        vec![bin("vaultctl").display().to_string(), "mcp-gateway".into()],
        "every__echo",
    );
    let mut straight_cmd = vec![node.display().to_string()];
    straight_cmd.extend(args);
    let straight = plan(straight_cmd, "echo");
    let line = |plan: &str| {
        format!(
            "setpriv --reuid={user} --regid={user} --clear-groups {py} {client} '{plan}'",
            py = b.real.venv_python().display(),
            client = client.display()
        )
    };
    std::fs::write(file, format!("{}\n{}\n", line(&through), line(&straight))).unwrap();
    let until = Instant::now() + Duration::from_secs(600);
    while file.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() {
    aivault_tests::require_root();
    let b = setup();
    if let Ok(file) = std::env::var("AIVAULT_BENCH_SERVE") {
        serve(&b, std::path::Path::new(&file));
        return;
    }
    println!(
        "machine: {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    per_call(
        &b,
        "server-everything echo",
        &b.real.everything(),
        "every__echo",
        "echo",
        json!({"message": "bench"}),
    );
    per_call(
        &b,
        "Python SDK server echo_env",
        &b.real.python(),
        "py__echo_env",
        "echo_env",
        json!({"name": "LANG"}),
    );
    cold_start(&b, 20);
}
