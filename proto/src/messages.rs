//! Message types. Plaintext may appear only in [`SecretBytes`] fields of
//! requests; replies have no such field by construction.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Secret bytes travelling from a client to the daemon. Wiped on drop; `Debug`
/// prints nothing of the content.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Moves the bytes out without leaving a copy behind.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(..)")
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<SecretBytes, E> {
                Ok(SecretBytes::new(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<SecretBytes, E> {
                Ok(SecretBytes::new(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// First frame on a connection, client to daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 8],
    pub version: u32,
    /// Free-form client name for logs ("vaultctl 0.1.0"); never used for decisions.
    pub client: String,
}

/// The daemon's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloReply {
    pub version: u32,
    pub server: String,
    pub result: Result<(), WireError>,
}

/// Which secrets a request addresses. The daemon maps `Own` to the caller's
/// uid taken from the socket's peer credentials; no request can name a uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireScope {
    Own,
    System,
}

/// Metadata supplied with a `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaInput {
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Expiry as unix seconds.
    pub expires: Option<u64>,
}

/// How a `set` treats an existing secret of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetMode {
    /// Fails with `AlreadyExists` if present.
    Create,
    /// Creates or replaces.
    Upsert,
    /// Must exist; new value, version + 1, metadata kept unless given.
    Rotate,
}

/// The characters a generated value is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Charset {
    /// `A-Z`, `a-z`, `0-9`.
    Alnum,
    /// `0-9`, `a-f`.
    Hex,
    /// `A-Z`, `a-z`, `0-9`, `-`, `_`.
    Base64Url,
    /// Printable ASCII without space (`!` to `~`).
    Printable,
}

/// What an import does with a name that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportConflict {
    /// Refuse the whole import (`AlreadyExists`); nothing is stored.
    Error,
    /// Leave the existing secret as it is and import the others.
    Skip,
    /// Replace its value (a new version; metadata kept).
    Overwrite,
}

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub body: RequestBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBody {
    Status,
    Unlock {
        passphrase: SecretBytes,
    },
    SecretSet {
        scope: WireScope,
        name: String,
        value: SecretBytes,
        meta: MetaInput,
        mode: SetMode,
    },
    SecretImport {
        scope: WireScope,
        entries: Vec<(String, SecretBytes)>,
    },
    SecretList {
        scope: WireScope,
    },
    SecretExists {
        scope: WireScope,
        name: String,
    },
    SecretMasked {
        scope: WireScope,
        name: String,
    },
    SecretRemove {
        scope: WireScope,
        name: String,
    },
    AuditList {
        limit: u32,
    },
    AuditVerify,
    /// Run an allowed command; the connection becomes a run stream.
    Run(crate::RunRequest),
    /// The commands this caller may run and with which secret names.
    PolicyShow,
    /// Validate the policy and explain each rule (root only).
    PolicyCheck,
    /// Re-read the policy (root only); an invalid policy keeps the old one.
    PolicyReload,
    /// Store a random value the daemon draws itself; the reply never
    /// carries it. Appended last so earlier variants keep their encoding.
    SecretGenerate {
        scope: WireScope,
        name: String,
        length: u32,
        charset: Charset,
        meta: MetaInput,
        mode: SetMode,
    },
    /// `SecretImport` with a choice for existing names (`SecretImport`
    /// itself overwrites them). `Imported { count }` counts the stored
    /// entries, skipped ones not included.
    SecretImportWith {
        scope: WireScope,
        entries: Vec<(String, SecretBytes)>,
        conflict: ImportConflict,
    },
    /// An encrypted backup of the caller's own secrets, or (`all`, root
    /// only) of the whole vault; the reply is an opaque blob.
    SecretBackup {
        all: bool,
    },
    /// Restore a blob `SecretBackup` made, into the scopes it records (a
    /// user's only into its own); `verify_only` checks it all and writes
    /// nothing.
    SecretRestore {
        #[serde(with = "crate::bytes")]
        blob: Vec<u8>,
        verify_only: bool,
        conflict: ImportConflict,
    },
    /// One page of `SecretList` (protocol 3): the secrets whose names sort
    /// after `page.cursor`, in name order. Answered with
    /// [`Reply::SecretsPage`].
    SecretListPage {
        scope: WireScope,
        page: PageRequest,
    },
    /// One page of `AuditList` (protocol 3): of the newest `limit` records
    /// the caller may read that are older than `page.cursor` (any, for the
    /// first page), as many as fit, newest pages first. A client following
    /// the pages lowers `limit` by what it has. Answered with
    /// [`Reply::AuditPage`].
    AuditListPage {
        limit: u32,
        page: PageRequest,
    },
    /// One page of `PolicyShow` (protocol 3), answered with
    /// [`Reply::PolicyPage`].
    PolicyShowPage {
        page: PageRequest,
    },
    /// One page of `PolicyCheck` (protocol 3, root only), answered with
    /// [`Reply::PolicyPage`].
    PolicyCheckPage {
        page: PageRequest,
    },
    /// `SecretImportWith` giving every imported secret the same metadata
    /// (protocol 3); as with `SecretSet`, an existing secret keeps what
    /// `meta` leaves empty.
    SecretImportMeta {
        scope: WireScope,
        entries: Vec<(String, SecretBytes)>,
        conflict: ImportConflict,
        meta: MetaInput,
    },
    /// List, approve or deny pending approvals (appended last).
    Approvals(crate::approval::ApprovalRequest),
    /// `PolicyReload` that also applies a valid policy without rules in
    /// place of one with rules (`vaultctl policy reload --force`).
    PolicyReloadForced,
    /// Archive the audit log next to itself and start a new file whose
    /// first record, of `audit.rotate`, chains to the archive's last (root
    /// only). Answered with `AuditRecords` holding that record.
    AuditRotate,
    /// `AuditVerify`, and every archive back to the first record (root
    /// only). Answered with `AuditVerified`.
    AuditVerifyArchives,
    /// The HTTP capabilities the caller may invoke, answered with
    /// `Capabilities`. (Invoking one is HTTP on the local endpoint, whose
    /// Unix socket is `http.sock` beside the daemon's socket.)
    CapabilityList,
    /// Start an MCP gateway for this connection (`vaultctl mcp-gateway`):
    /// answered with `Done` once a gateway process serves the caller, after
    /// which the connection carries MCP (newline-delimited JSON-RPC) to and
    /// from that process, never frames; the daemon reads none of it.
    McpGateway,
    /// The pins of `server`'s current tools, as `[mcp_server.tools]` TOML
    /// (`vaultctl mcp-gateway pin`, root only): a gateway starts the
    /// server and hashes its definitions. Answered with `Policy`.
    McpGatewayPin {
        server: String,
    },
}

/// Where a page of a list starts and how large it may be. Each page is
/// its own request (and audit record); the daemon keeps no state between
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// `None` for the first page, else the previous page's `next`, as given
    /// (opaque to clients).
    pub cursor: Option<String>,
    /// Most items on the page; 0 leaves it to the daemon.
    pub max_items: u32,
    /// Most bytes of encoded items on the page; 0, or more than fits in
    /// one frame, means as many as fit in one frame.
    pub max_bytes: u32,
}

impl RequestBody {
    /// Stable operation name, used in audit records and logs.
    pub fn op(&self) -> &'static str {
        match self {
            RequestBody::Status => "status",
            RequestBody::Unlock { .. } => "unlock",
            RequestBody::SecretSet {
                mode: SetMode::Rotate,
                ..
            } => "secret.rotate",
            RequestBody::SecretSet { .. } => "secret.set",
            RequestBody::SecretImport { .. } => "secret.import",
            RequestBody::SecretList { .. } => "secret.list",
            RequestBody::SecretExists { .. } => "secret.exists",
            RequestBody::SecretMasked { .. } => "secret.masked",
            RequestBody::SecretRemove { .. } => "secret.remove",
            RequestBody::AuditList { .. } => "audit.list",
            RequestBody::AuditVerify => "audit.verify",
            RequestBody::Run(_) => "run",
            RequestBody::PolicyShow => "policy.show",
            RequestBody::PolicyCheck => "policy.check",
            RequestBody::PolicyReload => "policy.reload",
            RequestBody::PolicyReloadForced => "policy.reload",
            RequestBody::SecretGenerate { .. } => "secret.generate",
            RequestBody::SecretImportWith { .. } => "secret.import",
            RequestBody::SecretBackup { .. } => "secret.backup",
            RequestBody::SecretRestore { .. } => "secret.restore",
            RequestBody::SecretListPage { .. } => "secret.list",
            RequestBody::AuditListPage { .. } => "audit.list",
            RequestBody::PolicyShowPage { .. } => "policy.show",
            RequestBody::PolicyCheckPage { .. } => "policy.check",
            RequestBody::SecretImportMeta { .. } => "secret.import",
            RequestBody::Approvals(crate::approval::ApprovalRequest::List) => "approval.list",
            RequestBody::Approvals(
                crate::approval::ApprovalRequest::Approve { .. }
                | crate::approval::ApprovalRequest::ApproveCode { .. },
            ) => "approval.approve",
            RequestBody::Approvals(crate::approval::ApprovalRequest::Deny { .. }) => {
                "approval.deny"
            }
            RequestBody::AuditRotate => "audit.rotate",
            RequestBody::AuditVerifyArchives => "audit.verify",
            RequestBody::CapabilityList => "capability.list",
            RequestBody::McpGateway => "mcp.gateway",
            RequestBody::McpGatewayPin { .. } => "mcp.pin",
        }
    }
}

/// The daemon's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub result: Result<Reply, WireError>,
}

/// Successful results. Deliberately no variant can hold a secret value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Status(StatusInfo),
    Done {
        version: Option<u64>,
    },
    Imported {
        count: u32,
    },
    Secrets(Vec<SecretInfo>),
    Exists(bool),
    /// A fixed-width mask computed by the daemon (at most the last 4 characters).
    Masked(String),
    /// Audit records as JSON lines.
    AuditRecords(Vec<String>),
    AuditVerified(AuditReport),
    /// A run began; [`crate::RunEvent`]s follow on this connection.
    RunStarted {
        command: String,
    },
    /// JSON text: the caller's allowed commands, or the policy explanation.
    Policy(String),
    /// An encrypted backup: ciphertext only, opened by no one but a daemon
    /// holding the same key-encryption key.
    Backup {
        #[serde(with = "crate::bytes")]
        blob: Vec<u8>,
        count: u32,
    },
    /// What a restore did, or (`verify_only`) would do.
    Restored(RestoreReport),
    /// A page of secrets in name order; `next` is the cursor of the next
    /// page, `None` after the last.
    SecretsPage {
        secrets: Vec<SecretInfo>,
        next: Option<String>,
    },
    /// A page of audit records (JSON lines, oldest first within the page);
    /// `next` asks for the older ones, `None` when `limit` is reached or
    /// the log has no more.
    AuditPage {
        records: Vec<String>,
        next: Option<String>,
    },
    /// A page of `PolicyShow` or `PolicyCheck`.
    PolicyPage(PolicyPage),
    /// The run waits for a person's approval; `RunStarted` or the refusal
    /// follows under the same request id.
    AwaitingApproval(crate::approval::PendingApproval),
    /// `Approvals(List)`'s answer.
    Approvals(Vec<crate::approval::PendingApproval>),
    /// `CapabilityList`'s answer.
    Capabilities(CapabilityReport),
}

/// The capabilities a caller may invoke and where the local endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityReport {
    pub capabilities: Vec<CapabilityInfo>,
    /// The endpoint's Unix socket, if enabled.
    pub http_socket: Option<String>,
    /// The endpoint's loopback TCP address (`127.0.0.1:PORT`), if enabled.
    pub http_tcp: Option<String>,
}

/// One capability as a caller sees it: never the secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityInfo {
    pub name: String,
    pub provider: Option<String>,
    /// The host requests go to.
    pub host: String,
    pub methods: Vec<String>,
    /// The path patterns, as policy writes them.
    pub paths: Vec<String>,
    /// The secret's name (not its value) and whether it is set now.
    pub secret: String,
    pub secret_present: bool,
}

/// A page of the policy's commands (`PolicyShowPage`) or of its
/// explanation (`PolicyCheckPage`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPage {
    /// `false` when the policy on disk is invalid (`PolicyCheckPage`);
    /// `error` then says why and there are no items.
    pub ok: bool,
    pub error: Option<String>,
    /// One JSON object per command or rule, in order.
    pub items: Vec<String>,
    /// The cursor of the next page; `None` after the last.
    pub next: Option<String>,
    /// The list changed since the cursor's page (a reload, an edited
    /// file): this is its first page again and what came before is to be
    /// dropped.
    pub restarted: bool,
}

/// The outcome of `SecretRestore`, in counts of secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    pub verify_only: bool,
    pub created: u32,
    pub overwritten: u32,
    pub skipped: u32,
    /// Scopes the backup holds (1 for a user's backup).
    pub scopes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub daemon_version: String,
    pub protocol: u32,
    pub sealed: bool,
    pub key_provider: String,
    /// How the daemon identified this caller.
    pub caller_uid: u32,
    pub caller_gid: u32,
    /// The caller's own secrets (0 while sealed).
    pub own_secrets: u32,
    /// System-scope secrets (0 while sealed).
    pub system_secrets: u32,
    pub connections: u32,
    /// Uids of the warm runners now idle or being started (told to root
    /// only; empty for anyone else).
    pub warm_runner_uids: Vec<u32>,
    /// Runs holding a slot, teardown included (root only; 0 for anyone
    /// else).
    pub runs_active: u32,
    /// Nothing is in motion: no run holds a slot and the warm pool is full
    /// and not starting a runner (root only; false for anyone else). With
    /// `connections == 1` (this request's), `open_fds` is then the daemon's
    /// resting descriptor count.
    pub quiescent: bool,
    /// Descriptors the daemon holds open while answering (root only; 0 for
    /// anyone else).
    pub open_fds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    pub scope: WireScope,
    pub version: u64,
    pub created: u64,
    pub updated: u64,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub expires: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub ok: bool,
    pub records: u64,
    pub last_seq: u64,
    pub problems: Vec<String>,
}

/// The small, stable set of errors that cross the wire. Messages never carry
/// secret values or filesystem paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request was malformed or not understood.
    BadRequest,
    /// Protocol versions do not match.
    VersionMismatch,
    InvalidName,
    InvalidValue,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    /// The vault is sealed; only `status` and `unlock` are served.
    Sealed,
    WrongPassphrase,
    /// A stored record failed authentication.
    Tampered,
    /// A resource limit was hit (connections, in-flight requests, an
    /// answer too large for one reply).
    Busy,
    /// The audit record could not be written, so nothing was done.
    AuditUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::VersionMismatch => "version-mismatch",
            ErrorCode::InvalidName => "invalid-name",
            ErrorCode::InvalidValue => "invalid-value",
            ErrorCode::NotFound => "not-found",
            ErrorCode::AlreadyExists => "already-exists",
            ErrorCode::PermissionDenied => "permission-denied",
            ErrorCode::Sealed => "sealed",
            ErrorCode::WrongPassphrase => "wrong-passphrase",
            ErrorCode::Tampered => "tampered",
            ErrorCode::Busy => "busy",
            ErrorCode::AuditUnavailable => "audit-unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_debug_hides_content() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "SecretBytes(..)");
        let req = RequestBody::Unlock { passphrase: s };
        assert!(!format!("{req:?}").contains("hunter2"));
    }

    #[test]
    fn request_round_trips() {
        let req = Request {
            id: 7,
            body: RequestBody::SecretSet {
                scope: WireScope::Own,
                name: "API_KEY".into(),
                value: SecretBytes::new(vec![0, 1, 2, 255]),
                meta: MetaInput::default(),
                mode: SetMode::Create,
            },
        };
        let bytes = crate::encode(&req).unwrap();
        let back: Request = crate::decode(&bytes).unwrap();
        assert_eq!(back, req);
    }

    /// Postcard tags variants by their index, so new variants go last and
    /// an earlier message keeps its encoding; these pins catch a reorder.
    #[test]
    fn the_paged_variants_come_after_every_earlier_one() {
        let tag = |b: &RequestBody| crate::encode(b).unwrap()[0];
        assert_eq!(tag(&RequestBody::PolicyReload), 13);
        let page = PageRequest::default();
        assert_eq!(
            tag(&RequestBody::SecretListPage {
                scope: WireScope::Own,
                page
            }),
            18
        );
        let reply = |r: &Reply| crate::encode(r).unwrap()[0];
        assert_eq!(reply(&Reply::Policy(String::new())), 9);
        let paged = Reply::SecretsPage {
            secrets: Vec::new(),
            next: Some("A".into()),
        };
        assert_eq!(reply(&paged), 12);
        let back: Reply = crate::decode(&crate::encode(&paged).unwrap()).unwrap();
        assert_eq!(back, paged);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_rejected() {
        assert!(crate::decode::<Request>(&[0xff; 9]).is_err());
        let mut bytes = crate::encode(&Request {
            id: 1,
            body: RequestBody::Status,
        })
        .unwrap();
        bytes.push(0);
        assert!(crate::decode::<Request>(&bytes).is_err());
    }
}
