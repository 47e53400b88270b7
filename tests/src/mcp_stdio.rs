//! A raw JSON-RPC client of an MCP server on stdio, one line per message:
//! what the gateway's tests and benchmark drive `vaultctl mcp-gateway` (or
//! an upstream started directly) with. Answers that arrive while another is
//! awaited are kept in [`StdioClient::others`] (notifications, progress,
//! out-of-order answers).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

use serde_json::{json, Value};

#[allow(missing_debug_implementations)] // holds a process and its pipes
pub struct StdioClient {
    pub child: Child,
    pub lines: std::io::Lines<BufReader<ChildStdout>>,
    /// Messages read while waiting for another.
    pub others: Vec<Value>,
}

impl StdioClient {
    /// Spawns `command` with piped stdin and stdout (stderr discarded).
    pub fn spawn(mut command: Command) -> StdioClient {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        StdioClient {
            child,
            lines: BufReader::new(stdout).lines(),
            others: Vec::new(),
        }
    }

    pub fn send(&mut self, msg: &Value) {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("stdin closed"));
        writeln!(stdin, "{msg}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to the server: {e}"));
    }

    /// Sends a request and reads until its answer.
    pub fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .next()
                .unwrap_or_else(|| panic!("the server ended before answering {method}"))
                .unwrap_or_else(|e| panic!("reading from the server: {e}"));
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON from the server ({e}): {line}"));
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
            self.others.push(v);
        }
    }

    /// The handshake (request id 1), then `notifications/initialized`.
    pub fn initialize(&mut self) -> Value {
        let init = self.request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "aivault-tests", "version": "1"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        init
    }

    /// Closes stdin and waits for the process to exit.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for the server: {e}"))
    }
}
