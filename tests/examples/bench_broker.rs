//! HTTP broker benchmark (run as root, release build):
//!
//! ```sh
//! cargo build --release --workspace --bins
//! cargo run --release -p aivault-tests --example bench_broker
//! ```
//!
//! Starts a daemon with the broker's test configuration and a loopback TLS
//! upstream (the acceptance tests' echo server, its CA made at start), and
//! measures in one run, all with `curl` as an unprivileged caller:
//!
//! * per request: `curl` through the broker's loopback TCP endpoint versus
//!   `curl` straight to the upstream over TLS (the caller then holding the
//!   key), alternated request by request, one curl (and one connection)
//!   per request; curl's own `time_total`, so the figures are the request,
//!   not curl's start (median, p99). Direct pays a TLS handshake per
//!   request; the broker keeps its upstream connection;
//! * the same on kept-alive connections (100 requests per curl): what the
//!   broker adds to a request once both ends' connections are open;
//! * 16 concurrent callers, each running `curl` one request after another:
//!   requests per second through the broker and direct;
//! * server-sent events: time to the first byte of a `"stream": true`
//!   answer (curl's `time_starttransfer`) through the broker and direct.
//!
//! `AIVAULT_BENCH_REQUESTS` (default 400) sets the number of alternated
//! pairs.
#![allow(clippy::unwrap_used)] // benchmark code: a panic is the failure report

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use aivault_tests::tls_upstream::TlsUpstream;
use aivault_tests::{set_secret, token, Daemon, Options, User};

const HOST: &str = "api.openai.com";

struct Bench {
    _d: Daemon,
    up: TlsUpstream,
    alice: User,
    secret: String,
    tcp: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn setup(dir: &std::path::Path) -> Bench {
    let alice = User::ensure("aivt-brk-bench");
    let up = TlsUpstream::start(&[HOST], dir);
    let tcp = format!("127.0.0.1:{}", free_port());
    let config = format!(
        r#"
[broker]
tcp_listen = "{tcp}"

[broker.testing]
extra_roots = "{ca}"
allow_loopback = true
resolve = {{ "{HOST}" = ["127.0.0.1:{port}"] }}
"#,
        ca = up.ca_pem.display(),
        port = up.port(),
    );
    let policy = format!(
        r#"
[[capability]]
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = ["{a}"]
"#,
        a = alice.name
    );
    let d = Daemon::start_new(Options {
        config,
        policy,
        testing: true,
        ..Options::default()
    });
    let secret = format!("sk-bench-{}", token(40));
    set_secret(&d, &alice, "OPENAI_API_KEY", &secret);
    Bench {
        _d: d,
        up,
        alice,
        secret,
        tcp,
    }
}

#[derive(Clone, Copy)]
enum Way {
    Broker,
    Direct,
}

fn body(stream: bool) -> String {
    format!(
        r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

/// `curl` as alice with `n` requests on one connection (curl reuses it);
/// each request's (time_total, time_starttransfer).
fn curl_n(b: &Bench, way: Way, stream: bool, n: usize) -> Vec<(Duration, Duration)> {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail"])
        .args(["-w", "%{time_total} %{time_starttransfer}\\n"])
        .args(["-H", "Content-Type: application/json"])
        .args(["--data-binary", &body(stream)]);
    let url = match way {
        Way::Broker => format!("http://{}/openai/v1/chat/completions", b.tcp),
        Way::Direct => {
            let port = b.up.port();
            c.arg("--cacert")
                .arg(&b.up.ca_pem)
                .args(["--resolve", &format!("{HOST}:{port}:127.0.0.1")])
                .args(["-H", &format!("Authorization: Bearer {}", b.secret)]);
            format!("https://{HOST}:{port}/v1/chat/completions")
        }
    };
    for _ in 0..n {
        c.args(["-o", "/dev/null", &url]);
    }
    let out = c.uid(b.alice.uid).gid(b.alice.gid).output().unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let got: Vec<(Duration, Duration)> = text
        .lines()
        .map(|l| {
            let mut f = l
                .split_whitespace()
                .map(|s| Duration::from_secs_f64(s.parse::<f64>().unwrap()));
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    assert_eq!(got.len(), n, "{text}");
    got
}

/// One `curl` as alice (its own connection); (time_total, time_starttransfer).
fn curl(b: &Bench, way: Way, stream: bool) -> (Duration, Duration) {
    curl_n(b, way, stream, 1)[0]
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

fn throughput(b: &Bench, way: Way, callers: usize, each: usize) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| {
                for _ in 0..each {
                    curl(b, way, false);
                }
            });
        }
    });
    (callers * each) as f64 / t.elapsed().as_secs_f64()
}

/// `AIVAULT_BENCH_SERVE=FILE`: writes to FILE two shell commands, one
/// request through the broker and the same request direct (each a whole
/// `curl` process as the caller, for an outside timer), then serves until
/// FILE is removed (at most ten minutes).
fn serve(b: &Bench, file: &std::path::Path) {
    curl(b, Way::Broker, false);
    let port = b.up.port();
    let data = body(false);
    let user = &b.alice.name;
    let broker = format!(
        "setpriv --reuid={user} --regid={user} --clear-groups curl -sS -o /dev/null --fail \
         -H 'Content-Type: application/json' --data-binary '{data}' \
         http://{}/openai/v1/chat/completions",
        b.tcp
    );
    let direct = format!(
        "setpriv --reuid={user} --regid={user} --clear-groups curl -sS -o /dev/null --fail \
         -H 'Content-Type: application/json' --data-binary '{data}' --cacert {ca} \
         --resolve {HOST}:{port}:127.0.0.1 -H 'Authorization: Bearer {secret}' \
         https://{HOST}:{port}/v1/chat/completions",
        ca = b.up.ca_pem.display(),
        secret = b.secret
    );
    std::fs::write(file, format!("{broker}\n{direct}\n")).unwrap();
    let until = Instant::now() + Duration::from_secs(600);
    while file.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn main() {
    aivault_tests::require_root();
    let dir = tempfile::Builder::new()
        .prefix("aivault-bench-broker-")
        .tempdir()
        .unwrap();
    let b = setup(dir.path());
    if let Ok(file) = std::env::var("AIVAULT_BENCH_SERVE") {
        serve(&b, std::path::Path::new(&file));
        return;
    }
    let pairs: usize = std::env::var("AIVAULT_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    // Warm both paths (the broker process starts on the first request).
    for _ in 0..20 {
        curl(&b, Way::Broker, false);
        curl(&b, Way::Direct, false);
    }
    let (mut broker, mut direct, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let (tb, _) = curl(&b, Way::Broker, false);
        let (td, _) = curl(&b, Way::Direct, false);
        broker.push(tb);
        direct.push(td);
        // Pair by pair, signed: the broker may be the faster of a pair.
        diff.push(ms(tb) - ms(td));
    }
    diff.sort_by(f64::total_cmp);
    let pair_median = diff[diff.len() / 2];
    let (bm, bp) = median_p99(broker);
    let (dm, dp) = median_p99(direct);
    println!("requests: {pairs} alternated pairs, curl time_total");
    println!(
        "  through the broker  median {:.3} ms  p99 {:.3} ms",
        ms(bm),
        ms(bp)
    );
    println!(
        "  direct to upstream  median {:.3} ms  p99 {:.3} ms",
        ms(dm),
        ms(dp)
    );
    println!(
        "  overhead            median {:+.3} ms  p99 {:+.3} ms  (median of pair differences {:+.3} ms)",
        ms(bm) - ms(dm),
        ms(bp) - ms(dp),
        pair_median
    );

    // The same on kept-alive connections: 100 requests per curl, 10 curls
    // each way, alternated; what the broker adds to a request on a
    // connection already open at both ends.
    let (mut kb, mut kd) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        kb.extend(curl_n(&b, Way::Broker, false, 100).into_iter().map(|t| t.0));
        kd.extend(curl_n(&b, Way::Direct, false, 100).into_iter().map(|t| t.0));
    }
    let (kbm, kbp) = median_p99(kb);
    let (kdm, kdp) = median_p99(kd);
    println!("kept-alive: 10 x 100 requests on one connection each way, alternated");
    println!(
        "  through the broker  median {:.3} ms  p99 {:.3} ms",
        ms(kbm),
        ms(kbp)
    );
    println!(
        "  direct to upstream  median {:.3} ms  p99 {:.3} ms",
        ms(kdm),
        ms(kdp)
    );
    println!(
        "  overhead            median {:+.3} ms  p99 {:+.3} ms",
        ms(kbm) - ms(kdm),
        ms(kbp) - ms(kdp)
    );

    let (callers, each) = (16, 40);
    let rb = throughput(&b, Way::Broker, callers, each);
    let rd = throughput(&b, Way::Direct, callers, each);
    println!("16 concurrent callers, {each} curl requests each");
    println!("  through the broker  {rb:.0} requests/s");
    println!("  direct to upstream  {rd:.0} requests/s");
    println!("  ratio               {:.2}", rb / rd);

    let (mut sb, mut sd) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        sb.push(curl(&b, Way::Broker, true).1);
        sd.push(curl(&b, Way::Direct, true).1);
    }
    let (sbm, sbp) = median_p99(sb);
    let (sdm, sdp) = median_p99(sd);
    println!("server-sent events, time to first byte (100 alternated pairs)");
    println!(
        "  through the broker  median {:.3} ms  p99 {:.3} ms",
        ms(sbm),
        ms(sbp)
    );
    println!(
        "  direct to upstream  median {:.3} ms  p99 {:.3} ms",
        ms(sdm),
        ms(sdp)
    );
}
