//! Throughput of the redactor on synthetic log text, next to a naive
//! replace-each-pattern baseline, plus the latency a short prompt sees.
//!
//! Run: `cargo bench -p aivault-redact --bench throughput` (release profile).
//! Environment: `BENCH_GIB` (default 1) sets the streamed volume per run,
//! `BENCH_RUNS` (default 5) the number of runs whose median is reported,
//! `BENCH_NO_NAIVE` skips the baseline (for profiling).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_redact::{Patterns, Redactor, Secret};

const CHUNK: usize = 64 * 1024;
const MIB: usize = 1024 * 1024;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chars(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| char::from(alphabet[self.below(alphabet.len())]))
            .collect()
    }
}

const HEX: &[u8] = b"0123456789abcdef";
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const TOKEN: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!@#%";

/// `n` random tokens of 24–40 characters, and the secrets holding them.
fn secrets(n: usize, rng: &mut Rng) -> (Vec<String>, Vec<Secret>) {
    let values: Vec<String> = (0..n)
        .map(|_| {
            let len = 24 + rng.below(17);
            rng.chars(TOKEN, len)
        })
        .collect();
    let list = values
        .iter()
        .enumerate()
        .map(|(i, v)| Secret::new(format!("SECRET_{i}"), v.clone()))
        .collect();
    (values, list)
}

/// About `size` bytes of log lines: timestamps, levels, URLs, JSON, hex ids,
/// base64 blobs. ASCII only, so the naive baseline can use `str::replace`.
fn log_pool(size: usize, rng: &mut Rng) -> String {
    let levels = ["INFO ", "DEBUG", "WARN ", "ERROR", "TRACE"];
    let paths = [
        "/v1/items",
        "/api/users/me",
        "/healthz",
        "/v2/orders/search",
        "/static/app.js",
    ];
    let hosts = [
        "api.example.com",
        "auth.internal",
        "cdn.example.net",
        "10.0.3.17:8443",
    ];
    let mut out = String::with_capacity(size + 512);
    while out.len() < size {
        let (h, m, s, ms) = (rng.below(24), rng.below(60), rng.below(60), rng.below(1000));
        let level = rng.pick(&levels);
        let req = rng.chars(HEX, 16);
        out.push_str(&format!(
            "2026-11-22T{h:02}:{m:02}:{s:02}.{ms:03}Z {level} [req {req}] "
        ));
        match rng.below(4) {
            0 => out.push_str(&format!(
                "GET https://{}{}?id={}&page={} {} {}ms\n",
                rng.pick(&hosts),
                rng.pick(&paths),
                rng.below(100_000),
                rng.below(50),
                [200, 201, 304, 404, 500][rng.below(5)],
                rng.below(900)
            )),
            1 => out.push_str(&format!(
                "response {{\"user\":\"u{}\",\"bytes\":{},\"ok\":{},\"tags\":[\"a\",\"b\"],\"msg\":\"cache miss\\n\"}}\n",
                rng.below(10_000),
                rng.below(1 << 20),
                rng.below(2) == 1
            )),
            2 => {
                let n = 16 + rng.below(64);
                out.push_str(&format!("payload={}==\n", rng.chars(B64, n)));
            }
            _ => out.push_str(&format!(
                "worker {} finished job {} in {}.{:03}s (commit {})\n",
                rng.below(16),
                rng.chars(HEX, 8),
                rng.below(10),
                rng.below(1000),
                rng.chars(HEX, 40)
            )),
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

/// Streams `total` bytes from the pool in 64 KiB writes.
fn stream(patterns: &Arc<Patterns>, pool: &[u8], total: usize) -> (Duration, usize) {
    let mut r = Redactor::new(Arc::clone(patterns));
    let mut out = Vec::with_capacity(2 * CHUNK);
    let mut done = 0;
    let mut at = 0;
    let mut emitted = 0;
    let start = Instant::now();
    while done < total {
        if at + CHUNK > pool.len() {
            at = (at + 4099) % (pool.len() - CHUNK);
        }
        r.write(&pool[at..at + CHUNK], &mut out);
        emitted += out.len();
        out.clear();
        at += CHUNK;
        done += CHUNK;
    }
    r.finish(&mut out);
    emitted += out.len();
    (start.elapsed(), black_box(emitted))
}

/// The baseline: one `str::replace` per pattern per chunk (it even ignores
/// chunk boundaries, so it is both slower and wrong).
fn naive(patterns: &[(String, String)], pool: &str, total: usize) -> Duration {
    let start = Instant::now();
    let mut done = 0;
    let mut at = 0;
    while done < total {
        if at + CHUNK > pool.len() {
            at = 0;
        }
        let mut chunk = pool[at..at + CHUNK].to_owned();
        for (pattern, label) in patterns {
            if chunk.contains(pattern.as_str()) {
                chunk = chunk.replace(pattern.as_str(), label);
            }
        }
        black_box(&chunk);
        at += CHUNK;
        done += CHUNK;
    }
    start.elapsed()
}

fn main() {
    let gib: f64 = std::env::var("BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let total = ((gib * 1024.0) as usize * MIB).max(CHUNK);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut pool = log_pool(8 * MIB, &mut rng);
    println!(
        "pool {} MiB of synthetic log text, streamed {} MiB per run, {} runs, 64 KiB writes",
        pool.len() / MIB,
        total / MIB,
        runs
    );
    println!("| secrets | patterns | search | memory | build | median MiB/s | runs MiB/s | naive MiB/s (sample) | speed-up |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [1usize, 100, 1000] {
        let (values, list) = secrets(n, &mut rng);
        // A few real occurrences, so the match path is exercised too.
        let mut with_hits = pool.clone();
        for (i, v) in values.iter().enumerate().take(8) {
            let at = (i + 1) * pool.len() / 10;
            let at = with_hits[at..].find('\n').map_or(at, |p| at + p + 1);
            with_hits.insert_str(at, &format!("leaked token {v}\n"));
        }
        pool = with_hits;
        let start = Instant::now();
        let patterns = Arc::new(Patterns::new(&list).expect("patterns"));
        let build = start.elapsed();
        let samples: Vec<f64> = (0..runs)
            .map(|_| {
                let (d, _) = stream(&patterns, pool.as_bytes(), total);
                mib_per_s(total, d)
            })
            .collect();
        let pairs: Vec<(String, String)> = aivault_redact::fuzzing::pattern_list(&patterns)
            .into_iter()
            .filter_map(|(p, l)| {
                Some((
                    String::from_utf8(p.to_vec()).ok()?,
                    String::from_utf8(l).ok()?,
                ))
            })
            .collect();
        let sample = match n {
            1 => 256 * MIB,
            100 => 16 * MIB,
            _ => 2 * MIB,
        };
        let naive_rate = if std::env::var_os("BENCH_NO_NAIVE").is_some() {
            f64::NAN
        } else {
            mib_per_s(sample, naive(&pairs, &pool, sample))
        };
        let m = median(samples.clone());
        println!(
            "| {n} | {} | {:?} | {:.1} MiB | {:.0} ms | **{m:.0}** | {} | {naive_rate:.1} ({} MiB) | {:.0}× |",
            patterns.len(),
            format!("{patterns:?}").split("search: ").nth(1).and_then(|s| s.split([',', ' ']).next()).unwrap_or("?").trim_matches(['"', '\\']),
            patterns.memory_usage() as f64 / MIB as f64,
            build.as_secs_f64() * 1000.0,
            samples.iter().map(|s| format!("{s:.0}")).collect::<Vec<_>>().join(", "),
            sample / MIB,
            m / naive_rate
        );
        prompt_latency(&patterns);
    }
}

/// Time from writing a 20-byte prompt to having it in the output.
fn prompt_latency(patterns: &Arc<Patterns>) {
    let prompt = b"Enter passphrase:  >";
    assert_eq!(prompt.len(), 20);
    let mut r = Redactor::new(Arc::clone(patterns));
    let mut out = Vec::with_capacity(64);
    let mut samples = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        out.clear();
        let start = Instant::now();
        r.write(black_box(prompt), &mut out);
        samples.push(start.elapsed().as_nanos() as f64);
        assert_eq!(
            out.as_slice(),
            prompt,
            "the prompt must be released at once"
        );
    }
    println!("|  | 20-byte prompt: released at once, median added latency {:.0} ns over 10000 writes |||||||||", median(samples));
}
