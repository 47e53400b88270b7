//! The run path with many secrets (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! ./target/release/examples/bench_run_secrets
//! ```
//!
//! One rule grants `AIVAULT_BENCH_SECRETS` (default 1,000) user secrets of
//! 40 random characters each; every run redacts all of them. Measured:
//!
//! * CPU per `vaultctl run -- true` of the daemon, its jail hosts and
//!   everything they reap (runners, with the command, and teardown
//!   killers): `utime + stime + cutime + cstime` of those processes from
//!   `/proc/<pid>/stat`, before and after each batch of serial runs (the
//!   daemon at rest at both ends), per run; the median over the batches
//!   (`AIVAULT_BENCH_BATCHES`, default 7, of `AIVAULT_BENCH_BATCH`, default
//!   10, runs). `vaultctl` itself is not counted;
//! * wall time per run, median of those runs;
//! * a runner's peak RSS (`VmHWM`, sampled while it runs `sleep 1`),
//!   median of 5 runs;
//! * the daemon's RSS and peak RSS after 8 concurrent clients × 4 runs.
//!
//! The program finds the daemon's binaries next to its own directory
//! (`target/release/`), so a copy of it placed in another build's
//! `target/release/examples/` measures that build.
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::time::{Duration, Instant};

use aivault_tests::{ok, token, Daemon, Options, User};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map_or(default, |v| v.parse().unwrap())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3 on).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The daemon's jail hosts: its children running `aivault-jail`.
fn jail_hosts(daemon: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let parent = stat_fields(pid).and_then(|f| f[1].parse::<i32>().ok());
        if comm.trim() == "aivault-jail" && parent == Some(daemon) {
            out.push(pid);
        }
    }
    out
}

/// CPU of `pid` and of the children it reaped, in clock ticks.
fn ticks(pid: i32) -> u64 {
    let f = stat_fields(pid).unwrap();
    // utime stime cutime cstime: fields 14-17, here from field 3 on.
    f[11..15].iter().map(|v| v.parse::<u64>().unwrap()).sum()
}

/// CPU of the daemon and its jail hosts (and all they reaped).
fn cpu(daemon: i32, hosts: &[i32]) -> Duration {
    let t: u64 = ticks(daemon) + hosts.iter().map(|&h| ticks(h)).sum::<u64>();
    // USER_HZ is 100 on every architecture this runs on.
    Duration::from_millis(t * 10)
}

/// A `/proc/<pid>/status` field in kB.
fn status_kb(pid: i32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn main() {
    let n = env_usize("AIVAULT_BENCH_SECRETS", 1000);
    let batches = env_usize("AIVAULT_BENCH_BATCHES", 7);
    let batch = env_usize("AIVAULT_BENCH_BATCH", 10);
    let alice = User::ensure("aivt-alice");
    let names: Vec<String> = (0..n).map(|i| format!("S{i:05}")).collect();
    let grants: Vec<String> = names
        .iter()
        .map(|s| format!("{{ name = \"{s}\", scope = \"user\", env = \"{s}\" }}"))
        .collect();
    let grants = grants.join(",\n  ");
    let policy = format!(
        "[[rule]]\nname = \"true\"\ncommand = \"/usr/bin/true\"\nusers = [\"{a}\"]\n\
         secrets = [\n  {grants}\n]\n\n\
         [[rule]]\nname = \"sleep\"\ncommand = \"/usr/bin/sleep\"\nusers = [\"{a}\"]\n\
         secrets = [\n  {grants}\n]\n",
        a = alice.name
    );
    let d = Daemon::start_new(Options {
        policy,
        config: "[limits]\nmax_connections_per_uid = 128\n[runs]\nmax_runs_per_user = 64\n".into(),
        runtime_on_tmpfs: true,
        ..Options::default()
    });
    let dotenv: String = names
        .iter()
        .map(|s| format!("{s}={}\n", token(40)))
        .collect();
    ok(&d.vaultctl(&alice, &["secrets", "import", "-"], dotenv.as_bytes()));
    drop(dotenv);
    let daemon = d.pid().unwrap() as i32;
    let run = |args: &[&str]| {
        let out = d.vaultctl(&alice, args, b"");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for _ in 0..3 {
        run(&["run", "--", "true"]);
    }
    d.resting_fd_count();
    let hosts = jail_hosts(daemon);
    assert!(!hosts.is_empty(), "no jail host found");
    let daemon_rss_rest = status_kb(daemon, "VmRSS:").unwrap();

    let mut per_run_cpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..batches {
        let before = cpu(daemon, &hosts);
        for _ in 0..batch {
            let t = Instant::now();
            run(&["run", "--", "true"]);
            wall.push(t.elapsed().as_secs_f64() * 1e3);
        }
        d.resting_fd_count();
        // The last runner is reaped by its jail host just after its uid is free.
        std::thread::sleep(Duration::from_millis(100));
        let used = cpu(daemon, &hosts).saturating_sub(before);
        per_run_cpu.push(used.as_secs_f64() * 1e3 / batch as f64);
    }

    // A runner's peak RSS: sampled while it runs `sleep 1` (warm runners,
    // which hold no patterns, are not run processes).
    let mut runner_peaks = Vec::new();
    for _ in 0..5 {
        let mut peak = 0u64;
        std::thread::scope(|s| {
            let client = s.spawn(|| run(&["run", "--", "sleep", "1"]));
            while !client.is_finished() {
                for (pid, _) in d.run_processes() {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if comm.trim() == "aivault-runner" {
                        peak = peak.max(status_kb(pid, "VmHWM:").unwrap_or(0));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            client.join().unwrap();
        });
        assert!(peak > 0, "no runner seen");
        runner_peaks.push(mib(peak));
        d.resting_fd_count();
    }

    // Eight clients at once.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..4 {
                    run(&["run", "--", "true"]);
                }
            });
        }
    });
    d.resting_fd_count();
    let daemon_rss = status_kb(daemon, "VmRSS:").unwrap();
    let daemon_hwm = status_kb(daemon, "VmHWM:").unwrap();

    println!(
        "{n} secrets of 40 characters, {batches} batches of {batch} serial `vaultctl run -- true`"
    );
    println!(
        "CPU per run (daemon + {} jail hosts + the runners and killers they reap): median {:.1} ms; batches {}",
        hosts.len(),
        median(per_run_cpu.clone()),
        per_run_cpu
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("wall time per run: median {:.1} ms", median(wall));
    println!(
        "runner peak RSS (VmHWM): median {:.1} MiB; runs {}",
        median(runner_peaks.clone()),
        runner_peaks
            .iter()
            .map(|c| format!("{c:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "daemon RSS: {:.1} MiB at rest after 3 runs; after every run and 8 concurrent clients x 4 runs {:.1} MiB, peak (VmHWM) {:.1} MiB",
        mib(daemon_rss_rest),
        mib(daemon_rss),
        mib(daemon_hwm)
    );
    ok(&d.vaultctl(&User::root(), &["audit", "verify"], b""));
}
