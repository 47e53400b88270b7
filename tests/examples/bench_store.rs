//! Vault storage benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aivault-tests --example bench_store
//! ```
//!
//! Measures in one run, at 100, 10,000 and 100,000 secrets of one user
//! (populated with `secrets import`): `secrets set` latency through the
//! socket protocol (median and p90 of 50 sets of existing names, each one
//! durable before its reply), the bytes the daemon wrote per set (from
//! `/proc/<pid>/io` `write_bytes`) and its CPU per set (from the
//! `schedstat` of its threads), the same two for an `exists` (an audited
//! decision that writes no vault record: the audit log's share of a set),
//! `exists` latency, and the size of the state directory. Last, whether a
//! `secrets list` of all of them gets an answer, and how long the daemon
//! takes to start (until it answers `status`) with all of them, after a
//! clean stop and after `kill -9`.
//!
//! It uses only the socket protocol and `/proc`, so the same source runs
//! against an older daemon's build for a before/after comparison.
//! `AIVAULT_BENCH_SIZES=100,1000` measures other sizes.
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::time::{Duration, Instant};

use aivault_proto::{MetaInput, Reply, RequestBody, SecretBytes, SetMode, WireScope};
use aivault_tests::{Daemon, Options};

/// Sets (and `exists` calls) measured at each size.
const SAMPLES: usize = 50;
/// Entries per `secrets import` while populating (a request stays well
/// under the 256 KiB frame limit).
const IMPORT_BATCH: usize = 2_000;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn name(i: usize) -> String {
    format!("BENCH_SECRET_{i:07}")
}

fn value(i: usize, round: usize) -> SecretBytes {
    SecretBytes::new(format!("value-{i:07}-{round:03}-0123456789abcdef").into_bytes())
}

/// `write_bytes` of a process (every thread, live or gone).
fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// CPU time of a process's live threads, in nanoseconds (`schedstat`'s
/// first field; exact, unlike the 10 ms ticks of `stat`).
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = t.unwrap().path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Times `SAMPLES` calls of `req(i)`; returns the sorted latencies, the
/// bytes written and the CPU spent per call.
fn measure(
    client: &mut aivault_client::Client,
    pid: u32,
    mut req: impl FnMut(usize) -> RequestBody,
) -> (Vec<Duration>, f64, f64) {
    let (io0, cpu0) = (write_bytes(pid), cpu_ns(pid));
    let mut lat = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let body = req(i);
        let t = Instant::now();
        client.call(body).unwrap();
        lat.push(t.elapsed());
    }
    let (io1, cpu1) = (write_bytes(pid), cpu_ns(pid));
    lat.sort();
    let n = SAMPLES as f64;
    (
        lat,
        (io1 - io0) as f64 / n,
        cpu1.saturating_sub(cpu0) as f64 / n / 1e6,
    )
}

fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(2));
}

fn main() {
    let sizes: Vec<usize> = std::env::var("AIVAULT_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').map(|n| n.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| vec![100, 10_000, 100_000]);
    let mut d = Daemon::start_new(Options {
        runtime_on_tmpfs: true,
        ..Options::default()
    });
    let pid = d.pid().unwrap();
    let mut client = d.client();
    println!(
        "| secrets | `set` median | `set` p90 | bytes written per `set` | daemon CPU per `set` | `exists` median | bytes written per `exists` | daemon CPU per `exists` | state directory |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut have = 0;
    let mut round = 0;
    for &n in &sizes {
        let t = Instant::now();
        while have < n {
            let upto = n.min(have + IMPORT_BATCH);
            let entries = (have..upto).map(|i| (name(i), value(i, 0))).collect();
            let reply = client
                .call(RequestBody::SecretImport {
                    scope: WireScope::Own,
                    entries,
                })
                .unwrap();
            assert!(matches!(reply, Reply::Imported { .. }), "{reply:?}");
            have = upto;
        }
        eprintln!(
            "populated {n} secrets in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        settle();
        // Names spread over the whole range, the same ones for every call.
        let pick = |i: usize| name((i * 7919 + 13) % n);
        // Warm-up, not measured.
        for i in 0..5 {
            round += 1;
            client
                .call(RequestBody::SecretSet {
                    scope: WireScope::Own,
                    name: pick(i),
                    value: value(i, round),
                    meta: MetaInput::default(),
                    mode: SetMode::Upsert,
                })
                .unwrap();
        }
        round += 1;
        let (set, set_bytes, set_cpu) = measure(&mut client, pid, |i| RequestBody::SecretSet {
            scope: WireScope::Own,
            name: pick(i),
            value: value(i, round),
            meta: MetaInput::default(),
            mode: SetMode::Upsert,
        });
        let (exists, ex_bytes, ex_cpu) = measure(&mut client, pid, |i| RequestBody::SecretExists {
            scope: WireScope::Own,
            name: pick(i),
        });
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.1} MB |",
            ms(pct(&set, 0.5)),
            ms(pct(&set, 0.9)),
            set_bytes,
            set_cpu,
            ms(pct(&exists, 0.5)),
            ex_bytes,
            ex_cpu,
            dir_bytes(&d.state_dir()) as f64 / 1e6,
        );
    }
    let t = Instant::now();
    // Paged, as `vaultctl secrets list` reads it: one list however long.
    match client.list_secrets(WireScope::Own) {
        Ok(list) => println!(
            "`secrets list` of {have}: {} entries in {:.1} ms (paged)",
            list.len(),
            ms(t.elapsed())
        ),
        Err(e) => println!("`secrets list` of {have}: fails ({e})"),
    }
    drop(client);
    d.stop();
    let t = Instant::now();
    d.start();
    let clean = t.elapsed();
    d.kill9();
    let t = Instant::now();
    d.start();
    println!(
        "start-up with {have} secrets: {:.0} ms after a clean stop, {:.0} ms after kill -9",
        ms(clean),
        ms(t.elapsed())
    );
}
