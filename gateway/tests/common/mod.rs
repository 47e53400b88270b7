//! Real upstream servers for the session tests, started as plain child
//! processes (the jail host's place in production), and a test agent that
//! speaks JSON-RPC to a session over an in-memory stream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aivault_gateway::hooks::{Audit, CallRecord, PassThrough, Policy};
use aivault_gateway::jsonrpc::{FrameReader, Outbox};
use aivault_gateway::pool::{BoxFuture, Spawned, Spawner};
use aivault_gateway::session::{self, Hooks, SessionConfig};
use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `scripts/gateway-deps.sh` once per test binary and returns the
/// directory it installed into. Missing servers fail the tests.
pub fn deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo().join("scripts/gateway-deps.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/gateway-deps.sh failed; these tests need the real MCP servers it installs \
             (@modelcontextprotocol/server-everything from npm, the `mcp` Python SDK from PyPI)\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = stdout
            .lines()
            .last()
            .and_then(|l| l.split_once(" ready in ").map(|(_, d)| PathBuf::from(d)))
            .unwrap_or_else(|| panic!("scripts/gateway-deps.sh did not name its directory: {stdout}"));
        for need in ["venv/bin/python", "node-bin", EVERYTHING] {
            assert!(dir.join(need).exists(), "{} is missing after scripts/gateway-deps.sh", dir.join(need).display());
        }
        dir
    })
}

const EVERYTHING: &str = "node/node_modules/@modelcontextprotocol/server-everything/dist/index.js";

/// How to start one upstream.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The Python SDK fixture server, with extra environment.
pub fn python_server(env: &[(&str, &str)]) -> Cmd {
    let d = deps();
    Cmd {
        program: d.join("venv/bin/python"),
        args: vec![repo()
            .join("gateway/tests/fixtures/pyserver.py")
            .display()
            .to_string()],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// `@modelcontextprotocol/server-everything` on stdio.
pub fn everything_server() -> Cmd {
    let d = deps();
    Cmd {
        program: d.join("node-bin"),
        args: vec![d.join(EVERYTHING).display().to_string(), "stdio".into()],
        env: vec![],
    }
}

/// Starts each named server as a child process with a clean environment.
#[derive(Debug, Default)]
pub struct ProcessSpawner {
    pub servers: HashMap<String, Cmd>,
    /// How many processes have been started.
    pub starts: Arc<std::sync::atomic::AtomicU32>,
}

/// Stops the child when dropped, and reaps it.
struct ChildGuard(Option<tokio::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.start_kill();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    }
}

impl Spawner for ProcessSpawner {
    fn spawn<'a>(&'a self, server: &'a str) -> BoxFuture<'a, Result<Spawned, String>> {
        Box::pin(async move {
            let cmd = self.servers.get(server).ok_or("no such server")?;
            self.starts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut child = tokio::process::Command::new(&cmd.program)
                .args(&cmd.args)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .envs(cmd.env.iter().cloned())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", cmd.program.display()))?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            Ok(Spawned {
                reader: Box::new(stdout),
                writer: Box::new(stdin),
                process: Box::new(ChildGuard(Some(child))),
            })
        })
    }
}

/// Keeps every audit record.
#[derive(Debug, Default)]
pub struct Recorded(pub Mutex<Vec<CallRecord>>);

impl Audit for Recorded {
    fn record(&self, r: CallRecord) {
        self.0.lock().unwrap().push(r);
    }
}

impl Recorded {
    pub fn all(&self) -> Vec<CallRecord> {
        self.0.lock().unwrap().clone()
    }
}

/// A test digest: the arguments' length, never their values.
pub fn digest(v: &Value) -> String {
    format!("len:{}", v.to_string().len())
}

/// What one test agent sees: responses by id, notifications in order,
/// and the order in which responses arrived.
#[derive(Default)]
struct Inbox {
    waiting: HashMap<String, oneshot::Sender<Value>>,
    early: HashMap<String, Value>,
    order: Vec<Value>,
}

/// A test agent connected to one session.
pub struct Agent {
    out: Option<Outbox>,
    inbox: Arc<Mutex<Inbox>>,
    notes: mpsc::UnboundedReceiver<Value>,
    pub audit: Arc<Recorded>,
    pub session: Option<JoinHandle<Result<(), session::SessionError>>>,
}

pub fn config(servers: &[&str]) -> SessionConfig {
    let mut cfg = SessionConfig::new(
        "agent-uid-1000",
        servers.iter().map(|s| s.to_string()).collect(),
    );
    cfg.pool.backoff_base = Duration::from_millis(50);
    cfg
}

impl Agent {
    /// A session over `spawner` with the pass-through policy.
    pub fn start(cfg: SessionConfig, spawner: ProcessSpawner) -> Agent {
        Self::with_policy(cfg, spawner, Arc::new(PassThrough))
    }

    pub fn with_policy(
        cfg: SessionConfig,
        spawner: ProcessSpawner,
        policy: Arc<dyn Policy>,
    ) -> Agent {
        let (agent_side, gateway_side) = tokio::io::duplex(1 << 16);
        let (gr, gw) = tokio::io::split(gateway_side);
        let (ar, aw) = tokio::io::split(agent_side);
        let audit = Arc::new(Recorded::default());
        let hooks = Hooks {
            policy,
            audit: audit.clone(),
            digest: Arc::new(digest),
        };
        let session = tokio::spawn(session::serve(gr, gw, cfg, Arc::new(spawner), hooks));
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let reader_inbox = inbox.clone();
        tokio::spawn(async move {
            let mut frames = FrameReader::new(BufReader::new(ar), 64 << 20);
            while let Ok(Some(msg)) = frames.next().await {
                match msg.get("id") {
                    Some(id) if msg.get("method").is_none() => {
                        let key = id.to_string();
                        let mut inbox = reader_inbox.lock().unwrap();
                        inbox.order.push(id.clone());
                        match inbox.waiting.remove(&key) {
                            Some(w) => {
                                let _ = w.send(msg);
                            }
                            None => {
                                inbox.early.insert(key, msg);
                            }
                        }
                    }
                    _ => {
                        let _ = notes_tx.send(msg);
                    }
                }
            }
        });
        Agent {
            out: Some(Outbox::spawn(aw, 64 << 20)),
            inbox,
            notes,
            audit,
            session: Some(session),
        }
    }

    pub async fn send(&self, msg: Value) {
        self.out.as_ref().unwrap().send(&msg).await.unwrap();
    }

    /// Sends a request and returns a future of its whole response.
    pub async fn start_request(
        &self,
        id: Value,
        method: &str,
        params: Value,
    ) -> oneshot::Receiver<Value> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inbox = self.inbox.lock().unwrap();
            match inbox.early.remove(&id.to_string()) {
                Some(msg) => {
                    let _ = tx.send(msg);
                }
                None => {
                    inbox.waiting.insert(id.to_string(), tx);
                }
            }
        }
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        rx
    }

    pub async fn request(&self, id: Value, method: &str, params: Value) -> Value {
        let rx = self.start_request(id, method, params).await;
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("no answer within a minute")
            .expect("agent reader ended")
    }

    pub async fn initialize(&self) -> Value {
        let r = self
            .request(
                json!(0),
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
            )
            .await;
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        r
    }

    pub async fn call(&self, id: Value, name: &str, arguments: Value) -> Value {
        self.request(
            id,
            "tools/call",
            json!({"name": name, "arguments": arguments}),
        )
        .await
    }

    /// The next notification, waiting up to a minute.
    pub async fn next_notification(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(60), self.notes.recv())
            .await
            .expect("no notification within a minute")
            .expect("agent reader ended")
    }

    /// The next progress notification, skipping others (server-everything
    /// says its tool list changed when it starts).
    pub async fn next_progress(&mut self) -> Value {
        loop {
            let n = self.next_notification().await;
            if n["method"] == "notifications/progress" {
                return n;
            }
        }
    }

    /// Ids of the responses received so far, in arrival order.
    pub fn arrival_order(&self) -> Vec<Value> {
        self.inbox.lock().unwrap().order.clone()
    }

    pub fn received(&self, id: &Value) -> bool {
        self.arrival_order().contains(id)
    }

    /// Closes the agent's side and waits for the session to end.
    pub async fn disconnect(&mut self) {
        self.out.take();
        let s = self.session.take().unwrap();
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("session did not end after the agent left")
            .unwrap()
            .unwrap();
    }
}

/// The text of a tool result's first content item.
pub fn text(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result in {}", truncate(response)))
        .to_string()
}

pub fn truncate(v: &Value) -> String {
    v.to_string().chars().take(400).collect()
}

/// Polls `cond` every 50 ms for up to a minute (a bound on waiting, not a
/// timing assertion).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within a minute");
}

/// Whether a process is running (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A fresh path in the temp directory for a fixture's log.
pub fn temp_log(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("aivault-gw-{tag}-{}-{n}.log", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}
