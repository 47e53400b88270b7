//! Foundation benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aivault-tests --example bench_foundation
//! ```
//!
//! Measures, in one run on one machine: median and p99 latency of
//! `vaultctl secrets list` as a whole process run by an unprivileged user, and
//! `secrets set` throughput with 1 and 16 concurrent clients.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use aivault_proto::{MetaInput, RequestBody, SecretBytes, SetMode, WireScope};
use aivault_tests::{ok, Daemon, Options, User};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn set_throughput(d: &Daemon, clients: usize, per_client: usize) -> f64 {
    let socket = d.socket();
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = aivault_client::Client::connect(&socket).expect("connect");
                for i in 0..per_client {
                    client
                        .call(RequestBody::SecretSet {
                            scope: WireScope::Own,
                            name: format!("BENCH_{clients}_{c}_{}", i % 50),
                            value: SecretBytes::new(
                                format!("bench-value-{c}-{i}-0123456789").into_bytes(),
                            ),
                            meta: MetaInput::default(),
                            mode: SetMode::Upsert,
                        })
                        .expect("set");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    (clients * per_client) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    for i in 0..20 {
        ok(&d.vaultctl(
            &alice,
            &["secrets", "set", &format!("LIST_{i}")],
            b"bench-list-value-0123",
        ));
    }

    // Warm up, then time the whole process: fork, exec, connect, handshake, list, exit.
    for _ in 0..20 {
        ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    }
    let runs = 500;
    let mut lat: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = d.vaultctl(&alice, &["secrets", "list"], b"");
            let e = t.elapsed();
            assert!(out.status.success());
            e
        })
        .collect();
    lat.sort();
    println!(
        "vaultctl secrets list (whole process, 20 secrets, {runs} runs): median {:.2} ms, p99 {:.2} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    // Baseline in the same run: a process that does nothing (/bin/true) as the same user.
    let mut base: Vec<Duration> = (0..runs)
        .map(|_| {
            use std::os::unix::process::CommandExt;
            let t = Instant::now();
            let st = std::process::Command::new("/bin/true")
                .uid(alice.uid)
                .gid(alice.gid)
                .status()
                .expect("true");
            assert!(st.success());
            t.elapsed()
        })
        .collect();
    base.sort();
    println!(
        "baseline /bin/true as the same user: median {:.2} ms, p99 {:.2} ms",
        ms(percentile(&base, 0.5)),
        ms(percentile(&base, 0.99))
    );

    let one = set_throughput(&d, 1, 1000);
    let sixteen = set_throughput(&d, 16, 125);
    println!("secrets set throughput, 1 client: {one:.0} ops/s (each write fsynced: audit record, anchor, vault)");
    println!("secrets set throughput, 16 clients: {sixteen:.0} ops/s");
}
