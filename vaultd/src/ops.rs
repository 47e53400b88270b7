//! What each request does, and who may do it.
//!
//! Every request arrives with a [`Caller`] built from the socket's peer
//! credentials. The rules are few and fixed:
//! * a caller's `Own` scope is the vault scope of its uid, and nothing else;
//! * only root reaches the system scope, unlocks, and verifies the audit log;
//! * a decision is written to the audit log *before* it takes effect, and if
//!   that write fails the request is refused ([`ErrorCode::AuditUnavailable`]);
//! * no reply carries a value: the only thing derived from a value that
//!   leaves the daemon is [`mask`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aivault_proto::{
    AuditReport, ErrorCode, MetaInput, Reply, RequestBody, SecretBytes, SecretInfo, SetMode,
    StatusInfo, WireError, WireScope, PROTOCOL_VERSION,
};
use serde_json::json;

use crate::audit::{Actor, AuditKey, AuditLog, Event, Outcome};
use crate::config::Config;
use crate::keys::{self, KdfParams, Kek};
use crate::policy::{Policy, Who};
use crate::run::uidpool::UidPool;
use crate::run::{RunCounter, RunSettings, RunnerGate};
use crate::store::{self, MetaUpdate, PutMode, Scope, SecretValue, StoreError, Vault};

/// Most entries one `import` may carry.
pub const MAX_IMPORT: usize = 10_000;
/// Most tags on one secret, and the longest tag and description.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1024;
/// Audit operations that may be recorded before the vault is unlocked.
pub const UNKEYED_OPS: &[&str] = &["unlock"];

/// Who sent a request, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

impl Caller {
    fn is_root(&self) -> bool {
        self.uid == 0
    }
    fn actor(&self) -> Actor {
        Actor {
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot load the key-encryption key: {0}")]
    Key(#[from] keys::KeyError),
    #[error("cannot open the vault: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("no vault in {0}; create one with `aivaultd init`")]
    NoVault(std::path::PathBuf),
    #[error("vault was created for key provider {found:?} but {configured:?} is configured")]
    ProviderMismatch { found: String, configured: String },
    #[error("invalid policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("invalid run uid range: {0}")]
    UidRange(#[from] crate::run::uidpool::PoolError),
}

/// The run path's shared pieces.
#[derive(Debug)]
pub struct Runs {
    pub pool: UidPool,
    pub gate: RunnerGate,
    pub counter: Arc<RunCounter>,
    pub settings: RunSettings,
    /// Per-run cgroups of caller-mode runs.
    pub cgroups: crate::run::cgroup::RunCgroups,
    /// Runners started ahead of any run.
    pub warm: crate::run::warm::WarmPool,
    /// The only process that starts and kills processes under run uids.
    pub jail: crate::jail::JailHost,
}

enum VaultState {
    Sealed { kdf: KdfParams },
    Open(Box<Vault>),
}

/// The daemon's shared state; one per process.
pub struct Daemon {
    cfg: Config,
    provider_kind: &'static str,
    vault: RwLock<VaultState>,
    audit: AuditLog,
    audit_key: Mutex<Option<AuditKey>>,
    policy: RwLock<Arc<Policy>>,
    runs: Runs,
    /// Open client connections (maintained by the server).
    pub connections: AtomicU32,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("state_dir", &self.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

fn sealed() -> WireError {
    err(
        ErrorCode::Sealed,
        "the vault is sealed; root must run `vaultctl unlock`",
    )
}

fn audit_unavailable() -> WireError {
    err(
        ErrorCode::AuditUnavailable,
        "the audit log cannot be written, so nothing was done",
    )
}

/// Maps store errors to wire errors without leaking paths or values.
fn store_err(e: &StoreError) -> WireError {
    match e {
        StoreError::NotFound { .. } => err(ErrorCode::NotFound, "no such secret"),
        StoreError::AlreadyExists { .. } => err(
            ErrorCode::AlreadyExists,
            "a secret of that name exists; use `secrets rotate` to replace its value",
        ),
        StoreError::Tampered { .. } => err(
            ErrorCode::Tampered,
            "the stored record failed authentication (tampered or corrupt)",
        ),
        StoreError::InvalidName(m) => err(ErrorCode::InvalidName, m.clone()),
        StoreError::EmptyValue => err(ErrorCode::InvalidValue, "empty values are not stored"),
        StoreError::ValueTooLarge { .. } => err(
            ErrorCode::InvalidValue,
            format!("values are limited to {} bytes", store::MAX_VALUE_LEN),
        ),
        _ => err(ErrorCode::Internal, "the vault could not be updated"),
    }
}

/// The fixed-width mask shown for a value: 12 characters, the last 4 of the
/// value only when it is at least 16 bytes long and they are printable ASCII.
pub fn mask(value: &[u8]) -> String {
    if value.len() >= 16 {
        let tail = &value[value.len() - 4..];
        if tail.iter().all(|b| b.is_ascii_graphic()) {
            return format!("********{}", String::from_utf8_lossy(tail));
        }
    }
    "************".to_string()
}

fn scope_label(scope: WireScope) -> &'static str {
    match scope {
        WireScope::Own => "user",
        WireScope::System => "system",
    }
}

fn info(meta: store::SecretMeta) -> SecretInfo {
    SecretInfo {
        name: meta.name,
        scope: match meta.scope {
            Scope::System => WireScope::System,
            Scope::User(_) => WireScope::Own,
        },
        version: meta.version,
        created: meta.created,
        updated: meta.updated,
        description: meta.description,
        tags: meta.tags,
        expires: meta.expires,
    }
}

fn check_meta(meta: &MetaInput) -> Result<(), WireError> {
    let bad = |m: &str| Err(err(ErrorCode::BadRequest, m.to_string()));
    if meta
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return bad("description is longer than 1024 bytes");
    }
    if meta.tags.len() > MAX_TAGS {
        return bad("at most 32 tags");
    }
    if meta
        .tags
        .iter()
        .any(|t| t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control))
    {
        return bad("tags must be 1 to 64 printable characters");
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), WireError> {
    if value.is_empty() {
        return Err(err(ErrorCode::InvalidValue, "empty values are not stored"));
    }
    if value.len() > store::MAX_VALUE_LEN {
        return Err(err(
            ErrorCode::InvalidValue,
            format!("values are limited to {} bytes", store::MAX_VALUE_LEN),
        ));
    }
    Ok(())
}

impl Daemon {
    /// Loads the key, opens (or, for the passphrase provider, prepares to
    /// unseal) the vault, and opens the audit log. `jail` is the jail host,
    /// started before this loads any key.
    pub fn open(cfg: Config, jail: crate::jail::JailHost) -> Result<Self, DaemonError> {
        if !Vault::exists(&cfg.state_dir) {
            return Err(DaemonError::NoVault(cfg.state_dir.clone()));
        }
        let header = Vault::read_header(&cfg.state_dir)?;
        let provider_kind = cfg.key_provider.kind();
        if header.provider_kind != provider_kind {
            return Err(DaemonError::ProviderMismatch {
                found: header.provider_kind.clone(),
                configured: provider_kind.to_string(),
            });
        }
        let (state, key) = match keys::load_kek(&cfg.key_provider)? {
            Some(kek) => {
                let vault = Vault::open(&cfg.state_dir, &kek)?;
                (
                    VaultState::Open(Box::new(vault)),
                    Some(AuditKey::derive(kek.as_bytes())),
                )
            }
            None => {
                let kdf = header.kdf.clone().ok_or(StoreError::Corrupt(
                    "passphrase vault without key-derivation parameters".into(),
                ))?;
                (VaultState::Sealed { kdf }, None)
            }
        };
        let audit = AuditLog::open(&cfg.audit_log, &cfg.audit_anchor(), key.clone())?;
        let policy = Policy::load(&cfg.policy_dir)?;
        let runtime = cfg.runtime_dir();
        let runs = Runs {
            pool: UidPool::new(cfg.runs.uid_first, cfg.runs.uid_count)?,
            gate: RunnerGate::new(jail.pids()),
            counter: Arc::default(),
            cgroups: Default::default(),
            warm: crate::run::warm::WarmPool::new(cfg.runs.warm_runners),
            settings: RunSettings {
                runner_socket: runtime.join("runner.sock"),
                runs_dir: runtime.join("runs"),
                max_runs: cfg.runs.max_runs,
                max_runs_per_user: cfg.runs.max_runs_per_user,
            },
            jail,
        };
        Ok(Self {
            cfg,
            provider_kind,
            vault: RwLock::new(state),
            audit,
            audit_key: Mutex::new(key),
            policy: RwLock::new(Arc::new(policy)),
            runs,
            connections: AtomicU32::new(0),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The policy in force (a snapshot; reloads replace it atomically).
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the policy; an invalid one is reported and the old one stays.
    pub fn reload_policy(&self) -> Result<usize, crate::policy::PolicyError> {
        let fresh = Policy::load(&self.cfg.policy_dir)?;
        let rules = fresh.explain().len();
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(rules)
    }

    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Appends an audit record about a run or another non-secret operation.
    pub fn audit_event(
        &self,
        caller: &Caller,
        op: &str,
        name: Option<&str>,
        outcome: Outcome,
        reason: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), WireError> {
        self.record(caller, op, None, name, outcome, reason, detail)
    }

    /// Decrypts a secret for a run the policy allowed.
    pub fn secret_for_run(&self, scope: Scope, name: &str) -> Result<SecretBytes, WireError> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        match vault.decrypt(scope, name) {
            Ok(v) => Ok(SecretBytes::new(v.as_bytes().to_vec())),
            Err(StoreError::NotFound { .. }) => Err(err(
                ErrorCode::NotFound,
                format!("secret {name} is granted by the policy but not set"),
            )),
            Err(e) => Err(store_err(&e)),
        }
    }

    pub fn is_sealed(&self) -> bool {
        matches!(
            *self.vault.read().unwrap_or_else(|p| p.into_inner()),
            VaultState::Sealed { .. }
        )
    }

    /// Records a decision. `Err` means the record could not be written and
    /// the caller must not act. (The arguments are the audit record's fields.)
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        caller: &Caller,
        op: &str,
        scope: Option<WireScope>,
        name: Option<&str>,
        outcome: Outcome,
        reason: Option<&str>,
        detail: serde_json::Value,
    ) -> Result<(), WireError> {
        self.record_then(caller, op, scope, name, outcome, reason, detail, || {})
    }

    /// [`Daemon::record`], calling `durable` once the record is durable in
    /// the log (see [`AuditLog::append_then`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_then(
        &self,
        caller: &Caller,
        op: &str,
        scope: Option<WireScope>,
        name: Option<&str>,
        outcome: Outcome,
        reason: Option<&str>,
        detail: serde_json::Value,
        durable: impl FnOnce(),
    ) -> Result<(), WireError> {
        let ev = Event {
            actor: caller.actor(),
            op,
            scope: scope.map(scope_label),
            name,
            outcome,
            reason,
            detail,
        };
        self.audit
            .append_then(&ev, durable)
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, op, "audit record could not be written; refusing");
                audit_unavailable()
            })
    }

    /// Records a refusal and returns it (or the audit failure, which is also a refusal).
    fn deny(
        &self,
        caller: &Caller,
        op: &str,
        scope: Option<WireScope>,
        name: Option<&str>,
        e: WireError,
    ) -> WireError {
        match self.record(
            caller,
            op,
            scope,
            name,
            Outcome::Denied,
            Some(&e.message),
            json!({ "code": e.code.as_str() }),
        ) {
            Ok(()) => e,
            Err(audit) => audit,
        }
    }

    /// Refuses (and audits) a non-root caller of a root-only operation.
    fn require_root(&self, caller: &Caller, op: &str, why: &str) -> Result<(), WireError> {
        if caller.is_root() {
            return Ok(());
        }
        Err(self.deny(
            caller,
            op,
            None,
            None,
            err(ErrorCode::PermissionDenied, why),
        ))
    }

    fn resolve(&self, caller: &Caller, scope: WireScope) -> Result<Scope, WireError> {
        match scope {
            WireScope::Own => Ok(Scope::User(caller.uid)),
            WireScope::System if caller.is_root() => Ok(Scope::System),
            WireScope::System => Err(err(
                ErrorCode::PermissionDenied,
                "only root can manage system-scope secrets",
            )),
        }
    }

    /// Answers one request. Runs on a blocking thread: it may fsync.
    pub fn handle(&self, caller: &Caller, body: RequestBody) -> Result<Reply, WireError> {
        let op = body.op();
        // While sealed there is no audit key: answer "sealed" before any
        // decision that would need an audit record (only `unlock` may be
        // recorded unkeyed, see UNKEYED_OPS).
        if !matches!(body, RequestBody::Status | RequestBody::Unlock { .. }) && self.is_sealed() {
            return Err(sealed());
        }
        match body {
            RequestBody::Status => Ok(self.status(caller)),
            RequestBody::Unlock { passphrase } => self.unlock(caller, passphrase),
            RequestBody::SecretSet {
                scope,
                name,
                value,
                meta,
                mode,
            } => self.set(caller, op, scope, &name, value, meta, mode),
            RequestBody::SecretImport { scope, entries } => self.import(caller, op, scope, entries),
            RequestBody::SecretList { scope } => self.read_op(caller, op, scope, None, |v, s| {
                Ok(Reply::Secrets(v.list(s).into_iter().map(info).collect()))
            }),
            RequestBody::SecretExists { scope, name } => {
                self.read_op(caller, op, scope, Some(&name), |v, s| {
                    Ok(Reply::Exists(v.meta(s, &name).is_some()))
                })
            }
            RequestBody::SecretMasked { scope, name } => {
                self.read_op(caller, op, scope, Some(&name), |v, s| {
                    let value = v.decrypt(s, &name).map_err(|e| store_err(&e))?;
                    Ok(Reply::Masked(mask(value.as_bytes())))
                })
            }
            RequestBody::SecretRemove { scope, name } => self.remove(caller, op, scope, &name),
            RequestBody::AuditList { limit } => self.audit_list(caller, op, limit),
            RequestBody::AuditVerify => self.audit_verify(caller, op),
            RequestBody::Run(_) => Err(err(
                ErrorCode::BadRequest,
                "run requests are served on their own connection",
            )),
            RequestBody::PolicyShow => {
                let who = Who {
                    uid: caller.uid,
                    gid: caller.gid,
                    groups: crate::sys::account_groups(caller.uid, caller.gid),
                };
                let list = self.policy().commands_for(&who);
                Ok(Reply::Policy(
                    serde_json::to_string(&list).unwrap_or_default(),
                ))
            }
            RequestBody::PolicyCheck => {
                if !caller.is_root() {
                    return Err(err(
                        ErrorCode::PermissionDenied,
                        "only root can check the policy",
                    ));
                }
                let report = match Policy::load(&self.cfg.policy_dir) {
                    Ok(p) => json!({ "ok": true, "rules": p.explain() }),
                    Err(e) => json!({ "ok": false, "error": e.to_string() }),
                };
                Ok(Reply::Policy(report.to_string()))
            }
            RequestBody::PolicyReload => {
                self.require_root(caller, op, "only root can reload the policy")?;
                match self.reload_policy() {
                    Ok(n) => {
                        self.record(
                            caller,
                            op,
                            None,
                            None,
                            Outcome::Ok,
                            None,
                            json!({ "entries": n }),
                        )?;
                        Ok(Reply::Done { version: None })
                    }
                    Err(e) => Err(self.deny(
                        caller,
                        op,
                        None,
                        None,
                        err(
                            ErrorCode::BadRequest,
                            format!("the new policy is invalid and was not applied: {e}"),
                        ),
                    )),
                }
            }
        }
    }

    fn status(&self, caller: &Caller) -> Reply {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let (sealed, own, system) = match &*guard {
            VaultState::Sealed { .. } => (true, 0, 0),
            VaultState::Open(v) => (
                false,
                v.list(Scope::User(caller.uid)).len() as u32,
                v.count().1 as u32,
            ),
        };
        Reply::Status(StatusInfo {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            sealed,
            key_provider: self.provider_kind.to_string(),
            caller_uid: caller.uid,
            caller_gid: caller.gid,
            own_secrets: own,
            system_secrets: system,
            connections: self.connections.load(Ordering::Relaxed),
            warm_runner_uids: if caller.uid == 0 {
                self.runs.warm.uids()
            } else {
                Vec::new()
            },
        })
    }

    fn unlock(&self, caller: &Caller, passphrase: SecretBytes) -> Result<Reply, WireError> {
        const OP: &str = "unlock";
        self.require_root(caller, OP, "only root can unlock the vault")?;
        let mut guard = self.vault.write().unwrap_or_else(|p| p.into_inner());
        let kdf = match &*guard {
            VaultState::Open(_) => return Ok(Reply::Done { version: None }),
            VaultState::Sealed { kdf } => kdf.clone(),
        };
        let kek: Kek = keys::kek_from_passphrase(passphrase.as_bytes(), &kdf)
            .map_err(|_| err(ErrorCode::Internal, "key derivation failed"))?;
        drop(passphrase);
        match Vault::open(&self.cfg.state_dir, &kek) {
            Ok(vault) => {
                self.audit.set_key(AuditKey::derive(kek.as_bytes()));
                self.record(caller, OP, None, None, Outcome::Ok, None, json!(null))?;
                *self.audit_key.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(AuditKey::derive(kek.as_bytes()));
                *guard = VaultState::Open(Box::new(vault));
                tracing::info!("vault unsealed");
                Ok(Reply::Done { version: None })
            }
            Err(StoreError::WrongKey) => Err(self.deny(
                caller,
                OP,
                None,
                None,
                err(ErrorCode::WrongPassphrase, "wrong passphrase"),
            )),
            Err(e) => {
                tracing::error!(error = %e, "unlock failed");
                Err(store_err(&e))
            }
        }
    }

    /// Shared path of the read-only secret operations.
    fn read_op(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: Option<&str>,
        f: impl FnOnce(&Vault, Scope) -> Result<Reply, WireError>,
    ) -> Result<Reply, WireError> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let s = self
            .resolve(caller, scope)
            .map_err(|e| self.deny(caller, op, Some(scope), name, e))?;
        if let Some(n) = name {
            store::validate_name(n)
                .map_err(|e| self.deny(caller, op, Some(scope), name, store_err(&e)))?;
        }
        self.record(
            caller,
            op,
            Some(scope),
            name,
            Outcome::Ok,
            None,
            json!(null),
        )?;
        let result = f(vault, s);
        if let Err(e) = &result {
            if e.code == ErrorCode::Tampered {
                tracing::error!(op, name, "stored record failed authentication");
                let _ = self.record(
                    caller,
                    op,
                    Some(scope),
                    name,
                    Outcome::Failed,
                    Some(&e.message),
                    json!({ "code": e.code.as_str() }),
                );
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn set(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: &str,
        value: SecretBytes,
        meta: MetaInput,
        mode: SetMode,
    ) -> Result<Reply, WireError> {
        let mut guard = self.vault.write().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &mut *guard else {
            return Err(sealed());
        };
        let deny = |e: WireError| self.deny(caller, op, Some(scope), Some(name), e);
        let s = self.resolve(caller, scope).map_err(deny)?;
        store::validate_name(name).map_err(|e| deny(store_err(&e)))?;
        check_value(value.as_bytes()).map_err(deny)?;
        check_meta(&meta).map_err(deny)?;
        let exists = vault.meta(s, name).is_some();
        match mode {
            SetMode::Create if exists => {
                return Err(deny(store_err(&StoreError::AlreadyExists {
                    name: name.into(),
                })))
            }
            SetMode::Rotate if !exists => {
                return Err(deny(err(ErrorCode::NotFound, "no such secret")))
            }
            _ => {}
        }
        let mode_label = match mode {
            SetMode::Create => "create",
            SetMode::Upsert => "upsert",
            SetMode::Rotate => "rotate",
        };
        self.record(
            caller,
            op,
            Some(scope),
            Some(name),
            Outcome::Ok,
            None,
            json!({ "mode": mode_label }),
        )?;
        let put_mode = match mode {
            SetMode::Create => PutMode::Create,
            SetMode::Upsert => PutMode::Upsert,
            SetMode::Rotate => PutMode::Rotate,
        };
        let update = MetaUpdate {
            description: meta.description,
            tags: meta.tags,
            expires: meta.expires,
        };
        let value = SecretValue::new(value.into_inner().to_vec());
        match vault.put(s, name, &value, update, put_mode) {
            Ok(version) => Ok(Reply::Done {
                version: Some(version),
            }),
            Err(e) => Err(self.failed(caller, op, Some(scope), Some(name), &e)),
        }
    }

    /// Records that an allowed operation failed to complete; returns the wire error.
    fn failed(
        &self,
        caller: &Caller,
        op: &str,
        scope: Option<WireScope>,
        name: Option<&str>,
        e: &StoreError,
    ) -> WireError {
        tracing::error!(error = %e, op, "vault update failed");
        let wire = store_err(e);
        let _ = self.record(
            caller,
            op,
            scope,
            name,
            Outcome::Failed,
            Some(&wire.message),
            json!({ "code": wire.code.as_str() }),
        );
        wire
    }

    fn import(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        entries: Vec<(String, SecretBytes)>,
    ) -> Result<Reply, WireError> {
        let mut guard = self.vault.write().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &mut *guard else {
            return Err(sealed());
        };
        let deny = |e: WireError| self.deny(caller, op, Some(scope), None, e);
        let s = self.resolve(caller, scope).map_err(deny)?;
        if entries.is_empty() || entries.len() > MAX_IMPORT {
            return Err(deny(err(
                ErrorCode::BadRequest,
                format!("an import carries 1 to {MAX_IMPORT} entries"),
            )));
        }
        for (name, value) in &entries {
            store::validate_name(name).map_err(|e| deny(store_err(&e)))?;
            check_value(value.as_bytes())
                .map_err(|e| deny(err(e.code, format!("{name}: {}", e.message))))?;
        }
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        self.record(
            caller,
            op,
            Some(scope),
            None,
            Outcome::Ok,
            None,
            json!({ "names": names }),
        )?;
        let values = entries
            .into_iter()
            .map(|(n, v)| (n, SecretValue::new(v.into_inner().to_vec())))
            .collect();
        match vault.put_many(s, values) {
            Ok(count) => Ok(Reply::Imported {
                count: count as u32,
            }),
            Err(e) => Err(self.failed(caller, op, Some(scope), None, &e)),
        }
    }

    fn remove(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: &str,
    ) -> Result<Reply, WireError> {
        let mut guard = self.vault.write().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &mut *guard else {
            return Err(sealed());
        };
        let deny = |e: WireError| self.deny(caller, op, Some(scope), Some(name), e);
        let s = self.resolve(caller, scope).map_err(deny)?;
        store::validate_name(name).map_err(|e| deny(store_err(&e)))?;
        if vault.meta(s, name).is_none() {
            return Err(deny(err(ErrorCode::NotFound, "no such secret")));
        }
        self.record(
            caller,
            op,
            Some(scope),
            Some(name),
            Outcome::Ok,
            None,
            json!(null),
        )?;
        match vault.remove(s, name) {
            Ok(()) => Ok(Reply::Done { version: None }),
            Err(e) => Err(self.failed(caller, op, Some(scope), Some(name), &e)),
        }
    }

    fn audit_list(&self, caller: &Caller, op: &str, limit: u32) -> Result<Reply, WireError> {
        if self.is_sealed() {
            return Err(sealed());
        }
        let filter = (!caller.is_root()).then_some(caller.uid);
        let limit = (limit as usize).clamp(1, 10_000);
        self.record(
            caller,
            op,
            None,
            None,
            Outcome::Ok,
            None,
            json!({ "limit": limit }),
        )?;
        let records = AuditLog::read(&self.cfg.audit_log, filter, limit)
            .map_err(|_| err(ErrorCode::Internal, "the audit log could not be read"))?;
        Ok(Reply::AuditRecords(
            records.iter().map(|r| r.to_string()).collect(),
        ))
    }

    fn audit_verify(&self, caller: &Caller, op: &str) -> Result<Reply, WireError> {
        self.require_root(caller, op, "only root can verify the audit log")?;
        let key = self
            .audit_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(AuditKey::clone)
            .ok_or_else(sealed)?;
        let report = AuditLog::verify(
            &self.cfg.audit_log,
            &self.cfg.audit_anchor(),
            &key,
            UNKEYED_OPS,
        );
        Ok(Reply::AuditVerified(AuditReport {
            ok: report.ok,
            records: report.records,
            last_seq: report.last_seq,
            problems: report.problems,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_is_fixed_width_and_reveals_at_most_four() {
        assert_eq!(mask(b"short"), "************");
        assert_eq!(mask(b"0123456789abcdefWXYZ"), "********WXYZ");
        assert_eq!(mask(b"0123456789abcdef").len(), 12);
        assert_eq!(mask("0123456789abcdé".as_bytes()), "************");
    }
}
