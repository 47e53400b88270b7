//! `org.aivault.Vault1`: the methods, the signal and the property.
//!
//! Every method first asks the bus who the caller is ([`Vault::caller`]);
//! arguments never name a user. Then it calls the same [`Daemon`] code as
//! the socket path, so authorization and audit cannot differ.

use std::sync::Arc;

use aivault_proto::{
    PageRequest, Reply, RequestBody, RunRequest, SecretAsk, SecretInfo, WireScope,
};
use zbus::message::Header;
use zbus::zvariant::{self, OwnedValue, SerializeDict, Type};
use zbus::Connection;

use super::args::{RunOptions, Strings, MAX_STDIN};
use super::capability::{self, CapabilityMeta};
use super::error::{bad, internal, VaultError};
use super::runs::{self, Finished, Registry, Sink};
use crate::admission::Admission;
use crate::ops::{Caller, Daemon};
use crate::wire_error::excerpt;

/// D-Bus requests handled at once, all callers together (the socket path's
/// counterpart is its connection limit).
const MAX_CALLS: usize = 256;
/// The largest `ListSecrets` reply, well below the bus's message limit: a
/// bigger one would get the daemon disconnected from the bus.
const MAX_LIST_REPLY: usize = 16 * 1024 * 1024;
/// Output returned by `Run`, per stream, unless the caller asks for less.
const DEFAULT_REPLY_OUTPUT: usize = 1024 * 1024;
/// Most output `Run` returns per stream: two of these stay well below the
/// bus's message size limit.
const MAX_REPLY_OUTPUT: usize = 8 * 1024 * 1024;

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

/// The exported object.
#[derive(Debug)]
pub struct Vault {
    daemon: Arc<Daemon>,
    runs: Arc<Registry>,
    /// Requests in flight per caller uid (`max_inflight_per_uid`, as on
    /// the socket).
    inflight: Arc<Admission>,
    /// Requests being handled, all callers together.
    calls: tokio::sync::Semaphore,
}

impl Vault {
    pub fn new(daemon: Arc<Daemon>, runs: Arc<Registry>) -> Self {
        let per_uid = daemon.config().limits.max_inflight_per_uid.max(1);
        Vault {
            daemon,
            runs,
            inflight: Admission::new(usize::MAX, per_uid),
            calls: tokio::sync::Semaphore::new(MAX_CALLS),
        }
    }

    /// Who sent this call, as the bus says: uid and pid (from the pidfd
    /// where the bus offers one), primary gid from the account database.
    /// Asked once per bus connection of a caller.
    pub(super) async fn caller(
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
        // The account's primary group (the bus reports no effective gid);
        // for a uid without an account, the first group the kernel gave the
        // bus. The account database may be remote: ask off the event loop.
        let account_gid = tokio::task::spawn_blocking(move || {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.gid.as_raw())
        })
        .await
        .ok()
        .flatten();
        let gid = account_gid
            .or_else(|| groups.first().copied())
            .ok_or_else(|| VaultError::PermissionDenied("the bus gave no caller group".into()))?;
        let caller = Caller { uid, gid, pid };
        // A connection that is already gone would never be forgotten.
        if still_connected(conn, &sender).await {
            self.runs.remember_caller(&sender, caller);
        }
        Ok((caller, sender.to_string()))
    }

    /// One request through [`Daemon::handle`], on a blocking thread.
    async fn call(&self, caller: Caller, body: RequestBody) -> Result<Reply, VaultError> {
        let _all = self
            .calls
            .try_acquire()
            .map_err(|_| VaultError::Busy("too many D-Bus requests in flight".into()))?;
        let _slot = self
            .inflight
            .try_admit(caller.uid)
            .map_err(|_| VaultError::Busy("too many requests in flight for this user".into()))?;
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
        argv: Strings,
        options: RunOptions,
        collect: bool,
    ) -> Result<(Caller, String, RunPlan, runs::Started), VaultError> {
        let (caller, sender) = self.caller(conn, hdr).await?;
        let opts = RunPlan::new(argv, options, collect)?;
        let started = runs::start(&self.daemon, caller, opts.request.clone()).await?;
        Ok((caller, sender, opts, started))
    }
}

fn scope(s: &str) -> Result<WireScope, VaultError> {
    match s {
        "" | "user" => Ok(WireScope::Own),
        "system" => Ok(WireScope::System),
        other => Err(bad(format!(
            "scope {:?} is not \"user\" (or \"\") or \"system\"",
            excerpt(other)
        ))),
    }
}

fn unexpected() -> VaultError {
    internal("unexpected reply")
}

/// A run request built from `Run`/`RunStreaming` arguments.
#[derive(Debug)]
struct RunPlan {
    request: RunRequest,
    stdin: Vec<u8>,
    max_output: usize,
}

impl RunPlan {
    fn new(argv: Strings, o: RunOptions, collect: bool) -> Result<Self, VaultError> {
        if argv.0.is_empty() {
            return Err(bad("argv is empty: name the command to run"));
        }
        let mut secrets = Vec::new();
        for s in o.secrets.unwrap_or_default().0 {
            let (name, env) = match s.split_once('=') {
                Some((n, e)) => (n.to_string(), Some(e.to_string())),
                None => (s.clone(), None),
            };
            if name.is_empty() || env.as_deref() == Some("") {
                return Err(bad(format!(
                    "invalid secret {:?}: use NAME or NAME=ENV",
                    excerpt(&s)
                )));
            }
            secrets.push(SecretAsk { name, env });
        }
        let stdin = match (o.stdin, o.stdin_text) {
            (Some(_), Some(_)) => return Err(bad("give stdin or stdin_text, not both")),
            (Some(b), None) => b,
            (None, Some(t)) => t.into_bytes(),
            (None, None) => Vec::new(),
        };
        if stdin.len() > MAX_STDIN {
            return Err(bad(format!(
                "stdin is limited to {MAX_STDIN} bytes here; use RunStreaming"
            )));
        }
        if o.max_output.is_some() && !collect {
            return Err(bad("max_output applies to Run only"));
        }
        let max_output = o.max_output.map_or(DEFAULT_REPLY_OUTPUT, |n| {
            usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(MAX_REPLY_OUTPUT)
        });
        // The working directory travels as the caller's open descriptor
        // (see `vaultctl run --workdir`), never as a path; D-Bus runs
        // cannot have one.
        if o.cwd_readable == Some(true) {
            return Err(bad(
                "cwd_readable: D-Bus runs cannot be given a working directory; use `vaultctl run --workdir`",
            ));
        }
        let _ = o.cwd;
        Ok(RunPlan {
            request: RunRequest {
                argv: argv.0,
                secrets,
                timeout_ms: o.timeout_ms,
                workdir: None,
                env: o.env.unwrap_or_default().0,
            },
            stdin,
            max_output,
        })
    }
}

/// At most `cap` bytes of `bytes` as text (U+FFFD for invalid sequences),
/// cut at a character boundary; true if anything was cut.
fn text_within(bytes: &[u8], cap: usize) -> (String, bool) {
    let mut s = String::from_utf8_lossy(bytes).into_owned();
    if s.len() <= cap {
        return (s, false);
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

fn pipe() -> Result<(zvariant::OwnedFd, tokio::net::unix::pipe::Sender), VaultError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|_| internal("cannot create an output pipe"))?;
    let w = tokio::net::unix::pipe::Sender::from_owned_fd(w)
        .map_err(|_| internal("cannot use an output pipe"))?;
    Ok((zvariant::OwnedFd::from(r), w))
}

// The doc comments of the methods, the signal and the property become XML
// comments in the introspection data, where two hyphens in a row are not
// allowed: they must not name command-line options.
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
            Reply::Secrets(list) => {
                // Generous per-entry framing estimate for the a{sv} keys.
                let size: usize = list
                    .iter()
                    .map(|s| {
                        256 + s.name.len()
                            + s.description.as_ref().map_or(0, String::len)
                            + s.tags.iter().map(|t| t.len() + 8).sum::<usize>()
                    })
                    .sum();
                if size > MAX_LIST_REPLY {
                    return Err(VaultError::Busy(
                        "too many secrets to list in one reply; use ListSecretsPage".into(),
                    ));
                }
                Ok(list.into_iter().map(SecretMeta::from).collect())
            }
            _ => Err(unexpected()),
        }
    }

    /// One page of ListSecrets, for lists too long for one reply: at most
    /// max_items secrets (0: as many as one page holds, about 256 KiB),
    /// in name order, after the cursor ("" for the first page). next is the
    /// cursor of the following page, "" after the last.
    #[zbus(out_args("secrets", "next"))]
    async fn list_secrets_page(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        scope: &str,
        cursor: String,
        max_items: u32,
    ) -> Result<(Vec<SecretMeta>, String), VaultError> {
        let scope = self::scope(scope)?;
        let (caller, _) = self.caller(conn, &hdr).await?;
        let page = PageRequest {
            cursor: (!cursor.is_empty()).then_some(cursor),
            max_items,
            max_bytes: 0,
        };
        match self
            .call(caller, RequestBody::SecretListPage { scope, page })
            .await?
        {
            Reply::SecretsPage { secrets, next } => Ok((
                secrets.into_iter().map(SecretMeta::from).collect(),
                next.unwrap_or_default(),
            )),
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

    /// A fixed-width mask of the value, never the value itself: 12
    /// characters whatever the value's length, the last 4 of them the
    /// value's own only if it is at least 16 bytes long and they are
    /// printable ASCII (otherwise all 12 are asterisks).
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

    /// The commands the caller may run and with which secret names: JSON,
    /// the document the JSON form of `vaultctl policy show` prints.
    #[zbus(out_args("commands"))]
    async fn show_policy(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, VaultError> {
        let (caller, _) = self.caller(conn, &hdr).await?;
        match self.call(caller, RequestBody::PolicyShow).await? {
            Reply::Policy(json) if json.len() > MAX_LIST_REPLY => Err(VaultError::Busy(
                "the list of commands is too long for one reply".into(),
            )),
            Reply::Policy(json) => Ok(json),
            _ => Err(unexpected()),
        }
    }

    /// The HTTP capabilities the caller may invoke (name, provider, host,
    /// methods, paths, secret, secret_present: never a value), and where
    /// the broker's endpoint listens: its Unix socket and its loopback TCP
    /// address ("" where it does not).
    #[zbus(out_args("capabilities", "http_socket", "http_tcp"))]
    async fn list_capabilities(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<(Vec<CapabilityMeta>, String, String), VaultError> {
        let (caller, _) = self.caller(conn, &hdr).await?;
        match self.call(caller, RequestBody::CapabilityList).await? {
            Reply::Capabilities(report) => Ok(capability::listing(report)),
            _ => Err(unexpected()),
        }
    }

    /// A connection to the caller's HTTP capability broker: a stream
    /// socket on which the caller speaks HTTP/1.1, with requests to
    /// /CAPABILITY/PATH, exactly as on the endpoint's Unix socket. The
    /// daemon never reads it. Refused (no descriptor) if the policy gives
    /// the caller no capability.
    #[zbus(out_args("connection"))]
    async fn open_capability_connection(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<zvariant::OwnedFd, VaultError> {
        let (caller, _) = self.caller(conn, &hdr).await?;
        let _all = self
            .calls
            .try_acquire()
            .map_err(|_| VaultError::Busy("too many D-Bus requests in flight".into()))?;
        capability::open(&self.daemon, caller).await
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
        argv: Strings,
        options: RunOptions,
    ) -> Result<(i32, String, String, String, bool), VaultError> {
        let (caller, sender, opts, started) = self.start(conn, &hdr, argv, options, true).await?;
        let mut ticket = self.runs.register(caller.uid, &sender)?;
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
        self.runs.finish(&ticket.done, ticket.id, finished.clone());
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
        // The cap holds for the text sent, which U+FFFD can make longer
        // than the bytes read.
        let (stdout, cut_out) = text_within(&stdout, opts.max_output);
        let (stderr, cut_err) = text_within(&stderr, opts.max_output);
        Ok((
            finished.code,
            finished.reason,
            stdout,
            stderr,
            truncated || cut_out || cut_err,
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
        argv: Strings,
        options: RunOptions,
    ) -> Result<(u64, zvariant::OwnedFd, zvariant::OwnedFd), VaultError> {
        let (caller, sender, opts, started) = self.start(conn, &hdr, argv, options, false).await?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let ticket = self.runs.register(caller.uid, &sender)?;
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
    /// the caller's D-Bus runs in progress.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn status(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<StatusInfo> {
        let hdr = hdr.ok_or_else(|| zbus::fdo::Error::AccessDenied("no caller".into()))?;
        let (caller, _) = self
            .caller(conn, &hdr)
            .await
            .map_err(|e| zbus::fdo::Error::AccessDenied(e.to_string()))?;
        Ok(StatusInfo {
            sealed: self.daemon.is_sealed(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            active_runs: u32::try_from(self.runs.active_of(caller.uid)).unwrap_or(u32::MAX),
        })
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
