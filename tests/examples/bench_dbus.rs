//! D-Bus benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! ./target/release/examples/bench_dbus
//! ```
//!
//! Starts a private system-like bus and a daemon serving on it, then
//! re-executes itself as an unprivileged user (the client) and measures,
//! in one process and one run: `ListSecrets` over D-Bus against
//! `SecretList` over the Unix socket (1,000 calls each), and `Run` of
//! `/usr/bin/true` over D-Bus against a socket run (200 each); medians, p99
//! and the ratio.
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aivault_proto::{RequestBody, RunEvent, RunRequest, WireScope};
use aivault_tests::bus::Bus;
use aivault_tests::{set_secret, Daemon, Options, User};
use zbus::zvariant::Value;

const CLIENT_ENV: &str = "AIVAULT_BENCH_DBUS_CLIENT";
const NAME: &str = "org.aivault.Vault1";
const PATH: &str = "/org/aivault/Vault1";

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, bus: &mut [Duration], sock: &mut [Duration]) {
    bus.sort();
    sock.sort();
    println!(
        "{what}: D-Bus median {:.3} ms, p99 {:.3} ms; socket median {:.3} ms, p99 {:.3} ms; D-Bus/socket {:.2}x",
        ms(pct(bus, 0.5)),
        ms(pct(bus, 0.99)),
        ms(pct(sock, 0.5)),
        ms(pct(sock, 0.99)),
        pct(bus, 0.5).as_secs_f64() / pct(sock, 0.5).as_secs_f64()
    );
}

fn socket_run(socket: &Path) {
    let client = aivault_client::Client::connect(socket).unwrap();
    let mut session = client
        .start_run(RunRequest {
            argv: vec!["/usr/bin/true".into()],
            secrets: vec![],
            timeout_ms: None,
            workdir: None,
            env: vec![],
        })
        .unwrap();
    loop {
        if let RunEvent::Exit(exit) = session.next_event().unwrap() {
            assert_eq!(exit.code, 0);
            return;
        }
    }
}

/// The measuring side, as the unprivileged user.
fn client(socket: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(zbus::Connection::system()).unwrap();
    let dbus_list = || {
        let t = Instant::now();
        rt.block_on(conn.call_method(Some(NAME), PATH, Some(NAME), "ListSecrets", &("user",)))
            .unwrap();
        t.elapsed()
    };
    let dbus_run = || {
        let args = (vec!["/usr/bin/true"], HashMap::<&str, Value>::new());
        let t = Instant::now();
        let reply = rt
            .block_on(conn.call_method(Some(NAME), PATH, Some(NAME), "Run", &args))
            .unwrap();
        let elapsed = t.elapsed();
        let (code, ..): (i32, String, String, String, bool) = reply.body().deserialize().unwrap();
        assert_eq!(code, 0);
        elapsed
    };
    for _ in 0..50 {
        dbus_list();
    }
    let mut bus: Vec<Duration> = (0..1000).map(|_| dbus_list()).collect();
    let mut c = aivault_client::Client::connect(socket).unwrap();
    let mut sock: Vec<Duration> = (0..1000)
        .map(|_| {
            let t = Instant::now();
            c.call(RequestBody::SecretList {
                scope: WireScope::Own,
            })
            .unwrap();
            t.elapsed()
        })
        .collect();
    report(
        "list 20 secrets (1,000 calls, one connection)",
        &mut bus,
        &mut sock,
    );
    for _ in 0..10 {
        dbus_run();
        socket_run(socket);
    }
    let mut bus: Vec<Duration> = (0..200).map(|_| dbus_run()).collect();
    let mut sock: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            socket_run(socket);
            t.elapsed()
        })
        .collect();
    report("run /usr/bin/true (200 runs)", &mut bus, &mut sock);
}

fn main() {
    if let Ok(socket) = std::env::var(CLIENT_ENV) {
        client(Path::new(&socket));
        return;
    }
    let alice = User::ensure("aivt-alice");
    let bus = Bus::start();
    let policy = format!(
        "[[rule]]\nname = \"true\"\ncommand = \"/usr/bin/true\"\nusers = [\"{}\"]\n",
        alice.name
    );
    let d = Daemon::start_new(Options {
        policy,
        config: bus.daemon_config(),
        runtime_on_tmpfs: true,
        ..Options::default()
    });
    bus.wait_for_name(NAME, &d);
    for i in 0..20 {
        set_secret(&d, &alice, &format!("S{i}"), "bench-dbus-secret-value-0123");
    }
    let status = Command::new(std::env::current_exe().unwrap())
        .env_clear()
        .env(CLIENT_ENV, d.socket())
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .uid(alice.uid)
        .gid(alice.gid)
        .status()
        .unwrap();
    assert!(status.success(), "the benchmark client failed");
}
