//! `org.aivault.Vault1`: the methods, the signal and the property.
//!
//! Every method first asks the bus who the caller is ([`Vault::caller`]);
//! arguments never name a user. Then it calls the same [`Daemon`] code as
//! the socket path, so authorization and audit cannot differ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aivault_proto::{Reply, RequestBody, RunRequest, SecretAsk, SecretInfo, WireScope};
use zbus::message::Header;
use zbus::zvariant::{self, OwnedValue, SerializeDict, Type, Value};
use zbus::Connection;

use super::error::{bad, internal, VaultError};
use super::runs::{self, Finished, Registry, Sink};
use crate::ops::{Caller, Daemon};

/// Output returned by `Run`, per stream, unless the caller asks for less.
const DEFAULT_REPLY_OUTPUT: usize = 1024 * 1024;
/// Most output `Run` returns per stream: two of these stay well below the
/// bus's message size limit.
const MAX_REPLY_OUTPUT: usize = 8 * 1024 * 1024;
/// Most stdin a caller may hand over in the options.
const MAX_STDIN: usize = 8 * 1024 * 1024;

/// One secret's metadata, as `ListSecrets` returns it (`a{sv}`).
#[derive(Debug, SerializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "snake_case")]
pub struct SecretMeta {
    name: String,
    version: u64,
    created: u64,
    updated: u64,
    description: Option<String>,
    tags: Vec<String>,
    expires: Option<u64>,
}

impl From<SecretInfo> for SecretMeta {
    fn from(s: SecretInfo) -> Self {
        SecretMeta {
            name: s.name,
            version: s.version,
            created: s.created,
            updated: s.updated,
            description: s.description,
            tags: s.tags,
            expires: s.expires,
        }
    }
}

/// The `Status` property (`a{sv}`).
#[derive(
    Debug, Clone, SerializeDict, zvariant::DeserializeDict, Type, zvariant::Value, OwnedValue,
)]
#[zvariant(signature = "a{sv}", rename_all = "snake_case")]
pub struct StatusInfo {
    sealed: bool,
    version: String,
    active_runs: u32,
}

/// Requests being handled per caller uid (the socket path's
/// `max_inflight_per_uid`, applied to the bus as well).
#[derive(Debug, Default)]
struct Inflight(Mutex<HashMap<u32, usize>>);

struct InflightGuard<'a> {
    table: &'a Inflight,
    uid: u32,
}

impl Inflight {
    fn enter(&self, uid: u32, max: usize) -> Result<InflightGuard<'_>, VaultError> {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(uid).or_insert(0);
        if *n >= max {
            return Err(VaultError::Busy(
                "too many requests in flight for this user".into(),
            ));
        }
        *n += 1;
        Ok(InflightGuard { table: self, uid })
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.uid);
            }
        }
    }
}

/// The exported object.
#[derive(Debug)]
pub struct Vault {
    daemon: Arc<Daemon>,
    runs: Arc<Registry>,
    inflight: Inflight,
}

impl Vault {
    pub fn new(daemon: Arc<Daemon>, runs: Arc<Registry>) -> Self {
        Vault {
            daemon,
            runs,
            inflight: Inflight::default(),
        }
    }

    /// Who sent this call, as the bus says: uid and pid (from the pidfd
    /// where the bus offers one), primary gid from the account database.
    /// Asked once per bus connection of a caller.
    async fn caller(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
    ) -> Result<(Caller, String), VaultError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| bad("the call has no sender"))?
            .to_owned();
        if let Some(caller) = self.runs.known_caller(&sender) {
            return Ok((caller, sender.to_string()));
        }
        let bus = zbus::fdo::DBusProxy::new(conn).await?;
        let creds = bus
            .get_connection_credentials(sender.as_ref().into())
            .await
            .map_err(|e| internal(format!("the bus did not identify the caller: {e}")))?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| VaultError::PermissionDenied("the bus gave no caller uid".into()))?;
        let pid = creds
            .process_fd()
            .and_then(crate::sys::pidfd_pid)
            .or_else(|| creds.process_id().and_then(|p| i32::try_from(p).ok()))
            .unwrap_or(0);
        let pool = &self.daemon.runs().pool;
        let groups = creds.unix_group_ids().cloned().unwrap_or_default();
        if pool.in_range(uid) || groups.iter().any(|g| pool.in_range(*g)) {
            tracing::warn!(uid, pid, "D-Bus call from a run uid refused");
            return Err(VaultError::PermissionDenied(
                "processes of a run may not use aivaultd".into(),
            ));
        }
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .ok_or_else(|| {
                VaultError::PermissionDenied("the caller's uid has no account".into())
            })?;
        let caller = Caller { uid, gid, pid };
        // A connection that is already gone would never be forgotten.
        if still_connected(conn, &sender).await {
            self.runs.remember_caller(&sender, caller);
        }
        Ok((caller, sender.to_string()))
    }

    /// One request through [`Daemon::handle`], on a blocking thread.
    async fn call(&self, caller: Caller, body: RequestBody) -> Result<Reply, VaultError> {
        let _slot = self
            .inflight
            .enter(caller.uid, self.daemon.config().limits.max_inflight_per_uid)?;
        let d = self.daemon.clone();
        tokio::task::spawn_blocking(move || d.handle(&caller, body))
            .await
            .map_err(|_| internal("internal error while handling the request"))?
            .map_err(VaultError::from)
    }

    async fn start(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        argv: Vec<String>,
        options: HashMap<String, OwnedValue>,
        collect: bool,
    ) -> Result<(Caller, String, RunOptions, runs::Started), VaultError> {
        let (caller, sender) = self.caller(conn, hdr).await?;
        let opts = RunOptions::parse(argv, options, collect)?;
        let started = runs::start(&self.daemon, caller, opts.request.clone()).await?;
        Ok((caller, sender, opts, started))
    }
}

fn scope(s: &str) -> Result<WireScope, VaultError> {
    match s {
        "" | "user" => Ok(WireScope::Own),
        "system" => Ok(WireScope::System),
        other => Err(bad(format!(
            "scope {other:?} is not \"user\" (or \"\") or \"system\""
        ))),
    }
}

fn unexpected() -> VaultError {
    internal("unexpected reply")
}

/// The `a{sv}` options of `Run` and `RunStreaming`, checked strictly: an
/// unknown key or a wrong type is an error, not silently ignored.
#[derive(Debug)]
struct RunOptions {
    request: RunRequest,
    stdin: Vec<u8>,
    max_output: usize,
}

impl RunOptions {
    fn parse(
        argv: Vec<String>,
        options: HashMap<String, OwnedValue>,
        collect: bool,
    ) -> Result<Self, VaultError> {
        let mut o = RunOptions {
            request: RunRequest {
                argv,
                secrets: Vec::new(),
                timeout_ms: None,
                cwd: None,
                cwd_readable: false,
                env: Vec::new(),
            },
            stdin: Vec::new(),
            max_output: DEFAULT_REPLY_OUTPUT,
        };
        for (key, value) in options {
            let v: &Value<'_> = &value;
            let wrong = |ty: &str| bad(format!("option {key:?} must be of type {ty}"));
            match key.as_str() {
                "secrets" => {
                    let names = strings(v).ok_or_else(|| wrong("as"))?;
                    for s in names {
                        let (name, env) = match s.split_once('=') {
                            Some((n, e)) => (n.to_string(), Some(e.to_string())),
                            None => (s.clone(), None),
                        };
                        if name.is_empty() || env.as_deref() == Some("") {
                            return Err(bad(format!("invalid secret {s:?}: use NAME or NAME=ENV")));
                        }
                        o.request.secrets.push(SecretAsk { name, env });
                    }
                }
                "timeout_ms" => o.request.timeout_ms = Some(unsigned(v).ok_or_else(|| wrong("t"))?),
                "cwd" => o.request.cwd = Some(string(v).ok_or_else(|| wrong("s"))?),
                "cwd_readable" => match v {
                    Value::Bool(b) => o.request.cwd_readable = *b,
                    _ => return Err(wrong("b")),
                },
                "env" => {
                    let Value::Dict(d) = v else {
                        return Err(wrong("a{ss}"));
                    };
                    for (k, val) in d.iter() {
                        match (string(k), string(val)) {
                            (Some(k), Some(val)) => o.request.env.push((k, val)),
                            _ => return Err(wrong("a{ss}")),
                        }
                    }
                }
                "stdin" => {
                    o.stdin = match v {
                        Value::Str(s) => s.as_bytes().to_vec(),
                        Value::Array(_) => bytes(v).ok_or_else(|| wrong("ay or s"))?,
                        _ => return Err(wrong("ay or s")),
                    };
                    if o.stdin.len() > MAX_STDIN {
                        return Err(bad(format!(
                            "stdin is limited to {MAX_STDIN} bytes here; use RunStreaming"
                        )));
                    }
                }
                "max_output" if collect => {
                    let n = unsigned(v).ok_or_else(|| wrong("t"))?;
                    o.max_output = usize::try_from(n)
                        .unwrap_or(usize::MAX)
                        .min(MAX_REPLY_OUTPUT);
                }
                other => return Err(bad(format!("unknown option {other:?}"))),
            }
        }
        if o.request.argv.is_empty() {
            return Err(bad("argv is empty: name the command to run"));
        }
        Ok(o)
    }
}

fn string(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Value(inner) => string(inner),
        _ => None,
    }
}

fn strings(v: &Value<'_>) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(string).collect(),
        _ => None,
    }
}

fn bytes(v: &Value<'_>) -> Option<Vec<u8>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|b| match b {
                Value::U8(b) => Some(*b),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn unsigned(v: &Value<'_>) -> Option<u64> {
    match v {
        Value::U8(n) => Some(u64::from(*n)),
        Value::U16(n) => Some(u64::from(*n)),
        Value::U32(n) => Some(u64::from(*n)),
        Value::U64(n) => Some(*n),
        Value::I16(n) => u64::try_from(*n).ok(),
        Value::I32(n) => u64::try_from(*n).ok(),
        Value::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn pipe() -> Result<(zvariant::OwnedFd, tokio::net::unix::pipe::Sender), VaultError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|_| internal("cannot create an output pipe"))?;
    let w = tokio::net::unix::pipe::Sender::from_owned_fd(w)
        .map_err(|_| internal("cannot use an output pipe"))?;
    Ok((zvariant::OwnedFd::from(r), w))
}

#[zbus::interface(name = "org.aivault.Vault1")]
impl Vault {
    /// Metadata of the caller's secrets (scope "user" or "") or, for root,
    /// the system-scope secrets ("system"). Never values.
    #[zbus(out_args("secrets"))]
    async fn list_secrets(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        scope: &str,
    ) -> Result<Vec<SecretMeta>, VaultError> {
        let scope = self::scope(scope)?;
        let (caller, _) = self.caller(conn, &hdr).await?;
        match self.call(caller, RequestBody::SecretList { scope }).await? {
            Reply::Secrets(list) => Ok(list.into_iter().map(SecretMeta::from).collect()),
            _ => Err(unexpected()),
        }
    }

    /// Whether a secret exists.
    #[zbus(out_args("exists"))]
    async fn secret_exists(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        scope: &str,
        name: String,
    ) -> Result<bool, VaultError> {
        let scope = self::scope(scope)?;
        let (caller, _) = self.caller(conn, &hdr).await?;
        match self
            .call(caller, RequestBody::SecretExists { scope, name })
            .await?
        {
            Reply::Exists(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    /// A masked form of the value (a few characters and the length), never
    /// the value itself.
    #[zbus(out_args("masked"))]
    async fn masked_value(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        scope: &str,
        name: String,
    ) -> Result<String, VaultError> {
        let scope = self::scope(scope)?;
        let (caller, _) = self.caller(conn, &hdr).await?;
        match self
            .call(caller, RequestBody::SecretMasked { scope, name })
            .await?
        {
            Reply::Masked(m) => Ok(m),
            _ => Err(unexpected()),
        }
    }

    /// The commands the caller may run and with which secret names (JSON,
    /// as `vaultctl policy show --json` prints it).
    #[zbus(out_args("commands"))]
    async fn show_policy(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, VaultError> {
        let (caller, _) = self.caller(conn, &hdr).await?;
        match self.call(caller, RequestBody::PolicyShow).await? {
            Reply::Policy(json) => Ok(json),
            _ => Err(unexpected()),
        }
    }

    /// Runs an allowed command and returns its exit code, why it ended,
    /// and its redacted stdout and stderr (at most `max_output` bytes each,
    /// 1 MiB by default; `truncated` says when more was cut). Output that is
    /// not UTF-8 is returned with U+FFFD in place of invalid bytes; use
    /// RunStreaming for exact bytes.
    #[zbus(out_args("exit_code", "end_reason", "stdout", "stderr", "truncated"))]
    async fn run(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        argv: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(i32, String, String, String, bool), VaultError> {
        let (caller, sender, opts, started) = self.start(conn, &hdr, argv, options, true).await?;
        let mut ticket = self.runs.register(caller.uid, &sender);
        if !still_connected(conn, &sender).await {
            self.runs.connection_gone(&sender);
        }
        let mut sink = Sink::Collect {
            stdout: Vec::new(),
            stderr: Vec::new(),
            cap: opts.max_output,
            truncated: false,
        };
        let finished = runs::drive(started, opts.stdin, &mut sink, &mut ticket.cancel).await;
        self.runs.forget(ticket.id);
        let Sink::Collect {
            stdout,
            stderr,
            truncated,
            ..
        } = sink
        else {
            return Err(unexpected());
        };
        Ok((
            finished.code,
            finished.reason,
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
            truncated,
        ))
    }

    /// Starts an allowed command and returns at once with a run id and two
    /// file descriptors from which its redacted stdout and stderr are read
    /// as they are produced (EOF when the run ends). The end is announced
    /// by the RunExited signal, sent to the caller only, and returned by
    /// WaitRun.
    #[zbus(out_args("run_id", "stdout", "stderr"))]
    async fn run_streaming(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        argv: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(u64, zvariant::OwnedFd, zvariant::OwnedFd), VaultError> {
        let (caller, sender, opts, started) = self.start(conn, &hdr, argv, options, false).await?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let ticket = self.runs.register(caller.uid, &sender);
        let id = ticket.id;
        let (runs, conn2, owner) = (self.runs.clone(), conn.clone(), sender.clone());
        tokio::spawn(async move {
            let mut ticket = ticket;
            let mut sink = Sink::Pipes {
                stdout: Some(out_w),
                stderr: Some(err_w),
            };
            let finished = runs::drive(started, opts.stdin, &mut sink, &mut ticket.cancel).await;
            runs.finish(&ticket.done, ticket.id, finished.clone());
            announce(&conn2, &owner, ticket.id, &finished).await;
        });
        if !still_connected(conn, &sender).await {
            self.runs.connection_gone(&sender);
        }
        Ok((id, out_r, err_r))
    }

    /// Waits for a streaming run of the caller to end; returns its exit
    /// code, why it ended, the output bytes and the number of redactions.
    #[zbus(out_args("exit_code", "end_reason", "bytes_out", "redactions"))]
    async fn wait_run(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        run_id: u64,
    ) -> Result<(i32, String, u64, u64), VaultError> {
        let (caller, _) = self.caller(conn, &hdr).await?;
        let f = self.runs.wait(run_id, caller.uid).await?;
        Ok((f.code, f.reason, f.bytes_out, f.redactions))
    }

    /// Cancels a run of the caller: every process of it is killed.
    async fn cancel_run(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        run_id: u64,
    ) -> Result<(), VaultError> {
        let (caller, _) = self.caller(conn, &hdr).await?;
        self.runs.cancel(run_id, caller.uid)
    }

    /// A streaming run ended (sent to the caller that started it only).
    #[zbus(signal)]
    async fn run_exited(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        run_id: u64,
        exit_code: i32,
        end_reason: &str,
        bytes_out: u64,
        redactions: u64,
    ) -> zbus::Result<()>;

    /// Whether the vault is sealed, the daemon's version and the number of
    /// D-Bus runs in progress.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn status(&self) -> StatusInfo {
        StatusInfo {
            sealed: self.daemon.is_sealed(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            active_runs: u32::try_from(self.runs.active()).unwrap_or(u32::MAX),
        }
    }
}

/// Whether the caller's bus connection still exists (it may have gone
/// before its run was registered, which no NameOwnerChanged would tell).
async fn still_connected(conn: &Connection, sender: &str) -> bool {
    let Ok(name) = zbus::names::BusName::try_from(sender) else {
        return false;
    };
    match zbus::fdo::DBusProxy::new(conn).await {
        Ok(bus) => bus.name_has_owner(name).await.unwrap_or(true),
        Err(_) => true,
    }
}

/// Sends RunExited to the run's caller alone.
async fn announce(conn: &Connection, sender: &str, id: u64, f: &Finished) {
    let sent = conn
        .emit_signal(
            Some(sender),
            super::OBJECT_PATH,
            super::INTERFACE,
            "RunExited",
            &(id, f.code, f.reason.as_str(), f.bytes_out, f.redactions),
        )
        .await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, run = id, "RunExited not delivered");
    }
}
