//! `notifications/progress` for a long `secret_run`, sent when the request
//! carried `_meta.progressToken`.
//!
//! MCP clients time out a request after a fixed wait (60 s by default in
//! the official SDKs) unless progress arrives, which resets the timer. A run
//! reports every [`TICK`] while it lasts, and on output at most once per
//! [`OUTPUT_GAP`]; `progress` is the elapsed time in seconds (it must grow
//! with each notification), `message` says the time and output bytes so far.
//! Nothing is sent once [`Ticker`] is dropped, i.e. before the response goes
//! out, as the specification requires.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jsonrpc::Output;

/// Longest silence while a run lasts.
pub const TICK: Duration = Duration::from_secs(5);
/// Shortest gap between two notifications prompted by output.
const OUTPUT_GAP: Duration = Duration::from_secs(1);

/// Progress of one request.
#[derive(Debug)]
pub struct Progress {
    token: Value,
    out: Output,
    started: Instant,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug)]
struct State {
    bytes: u64,
    last_sent: Instant,
    last_progress: f64,
    done: bool,
    /// Set while the run waits for a person's approval: what to say.
    awaiting: Option<String>,
}

impl Progress {
    /// `token` is the request's `_meta.progressToken` (a string or integer).
    pub fn new(token: Value, out: Output) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            token,
            out,
            started: now,
            state: Mutex::new(State {
                bytes: 0,
                last_sent: now,
                last_progress: 0.0,
                done: false,
                awaiting: None,
            }),
            wake: Condvar::new(),
        })
    }

    /// Counts `n` bytes of output; reports them unless a notification went
    /// out less than [`OUTPUT_GAP`] ago.
    pub fn output(&self, n: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.bytes += n as u64;
        if !st.done && st.last_sent.elapsed() >= OUTPUT_GAP {
            self.send(&mut st);
        }
    }

    /// The run waits for a person's approval (request `id` of `rule`):
    /// says so at once, and in every notification until [`Progress::approved`].
    pub fn awaiting(&self, id: &str, rule: &str) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.awaiting = Some(format!(
            "awaiting approval: rule {rule} requires a person to approve request {id} (vaultctl approvals approve {id}, from another login session)"
        ));
        if !st.done {
            self.send(&mut st);
        }
    }

    /// The run was approved and started.
    pub fn approved(&self) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .awaiting = None;
    }

    /// Sends one notification; called with the state locked, so none can
    /// follow [`Ticker`]'s drop.
    fn send(&self, st: &mut State) {
        let elapsed = self.started.elapsed();
        // Milliseconds, and strictly growing even if the clock did not move.
        let progress = ((elapsed.as_millis() as f64) / 1000.0).max(st.last_progress + 0.001);
        st.last_progress = progress;
        st.last_sent = Instant::now();
        self.out.send(&json!({
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {
                "progressToken": self.token,
                "progress": progress,
                "message": match &st.awaiting {
                    Some(waiting) => format!("{waiting}; waited {} s", elapsed.as_secs()),
                    None => format!(
                        "running for {} s; {} bytes of output so far",
                        elapsed.as_secs(),
                        st.bytes
                    ),
                },
            },
        }));
    }

    /// Starts the periodic notifications; they stop when the guard drops.
    pub fn start(self: &Arc<Self>) -> Ticker {
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("mcp-progress".into())
            .spawn(move || me.tick())
            .ok();
        Ticker {
            progress: self.clone(),
            thread,
        }
    }

    fn tick(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !st.done {
            let quiet = st.last_sent.elapsed();
            if quiet >= TICK {
                self.send(&mut st);
                continue;
            }
            st = self
                .wake
                .wait_timeout(st, TICK - quiet)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Stops a request's notifications when dropped (after the last one sent).
#[derive(Debug)]
pub struct Ticker {
    progress: Arc<Progress>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let mut st = self
            .progress
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        st.done = true;
        drop(st);
        self.progress.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(sink: &Sink) -> Vec<Value> {
        String::from_utf8(sink.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn output_is_reported_with_the_token_and_growing_progress() {
        let sink = Sink::default();
        let p = Progress::new(json!("tok"), Output::new(Box::new(sink.clone())));
        {
            let mut st = p.state.lock().unwrap();
            st.last_sent = Instant::now() - OUTPUT_GAP;
        }
        p.output(10);
        // Within the gap: counted, not sent.
        p.output(5);
        {
            let mut st = p.state.lock().unwrap();
            st.last_sent = Instant::now() - OUTPUT_GAP;
        }
        p.output(1);
        let sent = lines(&sink);
        assert_eq!(sent.len(), 2, "{sent:?}");
        for n in &sent {
            assert_eq!(n["method"], "notifications/progress");
            assert_eq!(n["params"]["progressToken"], "tok");
        }
        assert!(sent[0]["params"]["message"]
            .as_str()
            .unwrap()
            .ends_with("10 bytes of output so far"));
        assert!(sent[1]["params"]["message"]
            .as_str()
            .unwrap()
            .ends_with("16 bytes of output so far"));
        let (a, b) = (
            sent[0]["params"]["progress"].as_f64().unwrap(),
            sent[1]["params"]["progress"].as_f64().unwrap(),
        );
        assert!(b > a, "{a} {b}");
    }

    #[test]
    fn nothing_is_sent_after_the_ticker_stops() {
        let sink = Sink::default();
        let p = Progress::new(json!(7), Output::new(Box::new(sink.clone())));
        drop(p.start());
        {
            let mut st = p.state.lock().unwrap();
            st.last_sent = Instant::now() - OUTPUT_GAP;
        }
        p.output(3);
        assert!(lines(&sink).is_empty());
    }
}
