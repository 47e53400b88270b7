//! Run-path benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aivault-tests --example bench_run
//! ```
//!
//! Measures in one run: `vaultctl run -- /bin/true` minus `/bin/true` (whole
//! processes, median and p99), the same with 16 concurrent clients, and
//! `vaultctl run -- cat` of a 1 GiB file versus a bare pipe.
//!
//! `AIVAULT_BENCH_QUICK=1` measures only the overhead (no concurrency, no
//! 1 GiB file): for comparing builds one after the other on a noisy machine.
//! `AIVAULT_BENCH_NO_CAT=1` measures the overhead and the 16 concurrent
//! clients, not the 1 GiB `cat`.
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{ok, set_secret, Daemon, Options, User};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time_true(alice: &User, socket: Option<&std::path::Path>) -> Duration {
    let t = Instant::now();
    let st = match socket {
        Some(s) => Command::new(aivault_tests::bin("vaultctl"))
            .args(["run", "--", "true"])
            .env("AIVAULT_SOCKET", s)
            .uid(alice.uid)
            .gid(alice.gid)
            .status()
            .unwrap(),
        None => Command::new("/bin/true")
            .uid(alice.uid)
            .gid(alice.gid)
            .status()
            .unwrap(),
    };
    assert!(st.success());
    t.elapsed()
}

/// CPU time spent by the whole machine (every process and the kernel, not
/// idle, I/O wait or time stolen by the hypervisor) since boot.
fn busy_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let ticks = fields[0] + fields[1] + fields[2] + fields[5] + fields[6];
    // USER_HZ: fixed at 100 by the kernel's ABI on every architecture
    // this runs on (one tick = 10 ms; 300 runs make the error negligible).
    Duration::from_millis(ticks * 10)
}

/// Reads all of a child's stdout; returns bytes and seconds.
fn drain(mut cmd: Command) -> (u64, f64) {
    let t = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    assert!(child.wait().unwrap().success());
    (n, t.elapsed().as_secs_f64())
}

fn main() {
    let quick = std::env::var_os("AIVAULT_BENCH_QUICK").is_some();
    let alice = User::ensure("aivt-alice");
    let data_dir = tempfile::Builder::new()
        .prefix("aivault-bench-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(data_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = data_dir.path().join("1g.log");
    let policy = format!(
        r#"
[[rule]]
name = "true"
command = "/usr/bin/true"
users = ["{a}"]

[[rule]]
name = "cat"
command = "/usr/bin/cat"
users = ["{a}"]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]
[rule.sandbox]
read = ["{dir}"]
max_output = "2G"
timeout = "10m"
"#,
        a = alice.name,
        dir = data_dir.path().display()
    );
    let d = Daemon::start_new(Options {
        policy,
        config: "[limits]\nmax_connections_per_uid = 128\n[runs]\nmax_runs_per_user = 64\n".into(),
        runtime_on_tmpfs: true,
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", "bench-secret-value-0123456789");
    let socket = d.socket();
    for _ in 0..20 {
        time_true(&alice, Some(&socket));
    }

    let n = 300;
    let gap = std::env::var("AIVAULT_BENCH_GAP_MS")
        .ok()
        .map(|v| Duration::from_millis(v.parse().unwrap()));
    let cpu_before = busy_cpu();
    let mut with: Vec<Duration> = (0..n)
        .map(|_| {
            if let Some(gap) = gap {
                std::thread::sleep(gap);
            }
            time_true(&alice, Some(&socket))
        })
        .collect();
    let cpu_with = busy_cpu().saturating_sub(cpu_before);
    let cpu_before = busy_cpu();
    let mut bare: Vec<Duration> = (0..n).map(|_| time_true(&alice, None)).collect();
    let cpu_bare = busy_cpu().saturating_sub(cpu_before);
    with.sort();
    bare.sort();
    println!(
        "vaultctl run -- /bin/true: median {:.2} ms, p99 {:.2} ms; bare /bin/true: median {:.2} ms, p99 {:.2} ms; overhead median {:.2} ms, p99 {:.2} ms",
        ms(pct(&with, 0.5)),
        ms(pct(&with, 0.99)),
        ms(pct(&bare, 0.5)),
        ms(pct(&bare, 0.99)),
        ms(pct(&with, 0.5).saturating_sub(pct(&bare, 0.5))),
        ms(pct(&with, 0.99).saturating_sub(pct(&bare, 0.99)))
    );
    // Busy CPU of the whole machine per run, less that of a bare /bin/true:
    // on a shared, noisy host this moves less than wall-clock times do.
    println!(
        "CPU per run (all processes and the kernel): vaultctl run -- /bin/true {:.2} ms, bare /bin/true {:.2} ms, difference {:.2} ms",
        ms(cpu_with) / n as f64,
        ms(cpu_bare) / n as f64,
        ms(cpu_with.saturating_sub(cpu_bare)) / n as f64
    );
    if quick {
        return;
    }

    let clients = 16;
    let per = 40;
    let t = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let alice = alice.clone();
            let socket = socket.clone();
            std::thread::spawn(move || {
                (0..per)
                    .map(|_| time_true(&alice, Some(&socket)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut conc: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = t.elapsed();
    conc.sort();
    println!(
        "16 concurrent clients x {per} runs: per-run median {:.2} ms, p99 {:.2} ms, {:.0} runs/s overall",
        ms(pct(&conc, 0.5)),
        ms(pct(&conc, 0.99)),
        (clients * per) as f64 / wall.as_secs_f64()
    );
    if std::env::var_os("AIVAULT_BENCH_NO_CAT").is_some() {
        return;
    }

    // 1 GiB of log-like text, written only now and flushed before it is
    // read: its writeback must not slow the durable writes (audit records)
    // of the measurements above.
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let line = b"2026-11-22T05:00:00Z INFO request id=4f1c2a path=/v1/items status=200 bytes=512 took=3ms\n";
        let mut written = 0usize;
        while written < 1 << 30 {
            f.write_all(line).unwrap();
            written += line.len();
        }
        f.into_inner().unwrap().sync_all().unwrap();
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut bare_cat = Command::new("/usr/bin/cat");
    bare_cat.arg(&file).uid(alice.uid).gid(alice.gid);
    let (b1, s1) = drain(bare_cat);
    let mut via = Command::new(aivault_tests::bin("vaultctl"));
    via.args(["run", "--", "cat", file.to_str().unwrap()])
        .env("AIVAULT_SOCKET", &socket)
        .uid(alice.uid)
        .gid(alice.gid);
    let (b2, s2) = drain(via);
    assert_eq!(b1, b2, "all bytes came through");
    let bare_rate = b1 as f64 / s1 / (1 << 20) as f64;
    let run_rate = b2 as f64 / s2 / (1 << 20) as f64;
    println!(
        "cat 1 GiB: bare pipe {bare_rate:.0} MiB/s, through vaultctl run (redacting 1 secret) {run_rate:.0} MiB/s = {:.0}% of the bare pipe",
        100.0 * run_rate / bare_rate
    );
    ok(&d.vaultctl(&User::root(), &["audit", "verify"], b""));
}
