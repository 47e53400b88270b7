//! What each request does, and who may do it.
//!
//! Every request arrives with a [`Caller`] built from the socket's peer
//! credentials. The rules are few and fixed:
//! * a caller's `Own` scope is the vault scope of its uid, and nothing else;
//! * only root reaches the system scope, unlocks, and verifies the audit log;
//! * a decision is written to the audit log *before* it takes effect, and if
//!   that write fails the request is refused ([`ErrorCode::AuditUnavailable`]),
//!   through the audit gate ([`crate::audit::gate`]);
//! * no reply carries a value: the only thing derived from a value that
//!   leaves the daemon is [`mask`].
//!
//! The operations by area: [`secrets`] (set, import, list, exists, mask,
//! remove), [`admin`] (status, unlock, the audit log, the policy),
//! [`broker`] (the broker's [`crate::broker::BrokerHost`], `capability list`),
//! [`pages`] (the long lists a page at a time). The run
//! path lives in [`crate::run`] and sees the daemon only as a
//! [`RunHost`].

pub mod admin;
pub mod backup;
pub mod broker;
pub mod pages;
pub mod secrets;

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, RwLock};

use aivault_proto::{
    ErrorCode, ImportConflict, MetaInput, Reply, RequestBody, SecretBytes, WireError, WireScope,
};

use crate::audit::gate::{AuditGate, Entry};
use crate::audit::{AuditKey, AuditLog};
use crate::config::Config;
use crate::keys::{self, KdfParams};
use crate::policy::Policy;
use crate::run::uidpool::UidPool;
use crate::run::{RunContext, RunHost, RunSettings, RunnerGate};
use crate::store::{Scope, StoreError, Vault};
use crate::wire_error::{err, sealed, store_err};

pub use crate::caller::Caller;
pub use secrets::{mask, MAX_DESCRIPTION_LEN, MAX_IMPORT, MAX_TAGS, MAX_TAG_LEN};

/// Audit operations that may be recorded before the vault is unlocked.
pub const UNKEYED_OPS: &[&str] = &["unlock"];

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
    #[error("{0}")]
    RateState(#[from] crate::broker::rate_state::RateStateError),
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
    /// The KEK as backups need it; set whenever the vault is open.
    backup_root: RwLock<Option<crate::backup::BackupRoot>>,
    audit: AuditGate,
    policy: RwLock<Arc<Policy>>,
    runs: RunContext,
    /// The broker's rate-limit counters, kept in the state directory.
    broker_rate: crate::broker::rate_state::RateState,
    /// The broker processes, once the endpoint runs: told of each policy
    /// change (`admin::reload_policy_with`).
    broker_pool: std::sync::OnceLock<Arc<crate::broker::pool::BrokerPool>>,
    /// The endpoint's way into the pool, for D-Bus callers.
    broker_handover: std::sync::OnceLock<Arc<crate::broker::endpoint::Handover>>,
    /// The policy explanation being read page by page.
    check_pages: pages::CheckPages,
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

impl Daemon {
    /// Loads the key, opens (or, for the passphrase provider, prepares to
    /// unseal) the vault, and opens the audit log. `jail` is the jail host,
    /// started before this loads any key.
    pub fn open(cfg: Config, jail: crate::jail::JailHost) -> Result<Self, DaemonError> {
        if !Vault::exists(&cfg.state_dir) {
            return Err(DaemonError::NoVault(cfg.state_dir.clone()));
        }
        // A vault of the old single-file format moves into the store now,
        // keyless, under the state lock main.rs holds.
        Vault::migrate(&cfg.state_dir)?;
        let header = Vault::read_header(&cfg.state_dir)?;
        let provider_kind = cfg.key_provider.kind();
        if header.provider_kind != provider_kind {
            return Err(DaemonError::ProviderMismatch {
                found: header.provider_kind.clone(),
                configured: provider_kind.to_string(),
            });
        }
        let (state, key, backup_root) = match keys::load_kek(&cfg.key_provider)? {
            Some(kek) => {
                let vault = Vault::open(&cfg.state_dir, &kek)?;
                (
                    VaultState::Open(Box::new(vault)),
                    Some(AuditKey::derive(kek.as_bytes())),
                    Some(crate::backup::BackupRoot::of(&kek)),
                )
            }
            None => {
                let kdf = header.kdf.clone().ok_or(StoreError::Corrupt(
                    "passphrase vault without key-derivation parameters".into(),
                ))?;
                (VaultState::Sealed { kdf }, None, None)
            }
        };
        let log = AuditLog::open(&cfg.audit_log, &cfg.audit_anchor(), key.clone())?;
        log.set_rotate_bytes(cfg.audit.rotate_bytes);
        let policy = Policy::load(&cfg.policy_dir)?;
        let broker_rate = crate::broker::rate_state::RateState::open(&cfg.state_dir)?;
        let runtime = cfg.runtime_dir();
        let runs = RunContext {
            pool: UidPool::new(cfg.runs.uid_first, cfg.runs.uid_count)?,
            gate: RunnerGate::new(jail.pids()),
            admission: crate::admission::Admission::new(
                cfg.runs.max_runs,
                cfg.runs.max_runs_per_user,
            ),
            teardowns: crate::admission::Admission::new(
                cfg.runs.max_runs,
                cfg.runs.max_runs_per_user,
            ),
            cgroups: Default::default(),
            warm: crate::run::warm::WarmPool::new(cfg.runs.warm_runners),
            settings: RunSettings {
                runner_socket: runtime.join("runner.sock"),
                runs_dir: runtime.join("runs"),
            },
            jail,
            ending_all: Default::default(),
            approvals: crate::approval::Approvals::new(cfg.approval.clone()),
        };
        Ok(Self {
            cfg,
            provider_kind,
            vault: RwLock::new(state),
            backup_root: RwLock::new(backup_root),
            audit: AuditGate::new(log, key),
            policy: RwLock::new(Arc::new(policy)),
            runs,
            broker_rate,
            broker_pool: std::sync::OnceLock::new(),
            broker_handover: std::sync::OnceLock::new(),
            check_pages: Default::default(),
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

    pub fn runs(&self) -> &RunContext {
        &self.runs
    }

    /// The audit gate every decision goes through.
    pub fn audit(&self) -> &AuditGate {
        &self.audit
    }

    /// The broker processes to stop at each policy change (set once, when
    /// the broker's endpoint starts).
    pub fn set_broker_pool(&self, pool: Arc<crate::broker::pool::BrokerPool>) {
        let _ = self.broker_pool.set(pool);
    }

    /// Where D-Bus callers' broker connections go in (set once, when the
    /// broker's endpoint starts).
    pub fn set_broker_handover(&self, handover: Arc<crate::broker::endpoint::Handover>) {
        let _ = self.broker_handover.set(handover);
    }

    /// The endpoint's way into the broker pool, once it runs.
    pub fn broker_handover(&self) -> Option<&Arc<crate::broker::endpoint::Handover>> {
        self.broker_handover.get()
    }

    /// This daemon as the run path sees it.
    pub fn run_host(self: &Arc<Self>) -> Arc<dyn RunHost> {
        self.clone()
    }

    pub fn approval_host(self: &Arc<Self>) -> Arc<dyn crate::approval::ApprovalHost> {
        self.clone()
    }

    pub fn is_sealed(&self) -> bool {
        matches!(
            *self.vault.read().unwrap_or_else(|p| p.into_inner()),
            VaultState::Sealed { .. }
        )
    }

    /// Refuses (and audits) a non-root caller of a root-only operation.
    fn require_root(&self, caller: &Caller, op: &str, why: &str) -> Result<(), WireError> {
        if caller.is_root() {
            return Ok(());
        }
        Err(self.audit.deny(
            Entry::new(caller, op),
            err(ErrorCode::PermissionDenied, why),
        ))
    }

    /// The vault scope a request's scope names for this caller.
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
            } => self.set(
                caller,
                secrets::SetRequest {
                    op,
                    scope,
                    name: &name,
                    value,
                    meta,
                    mode,
                },
            ),
            RequestBody::SecretImport { scope, entries } => self.import(
                caller,
                op,
                scope,
                entries,
                ImportConflict::Overwrite,
                MetaInput::default(),
            ),
            RequestBody::SecretImportWith {
                scope,
                entries,
                conflict,
            } => self.import(caller, op, scope, entries, conflict, MetaInput::default()),
            RequestBody::SecretImportMeta {
                scope,
                entries,
                conflict,
                meta,
            } => self.import(caller, op, scope, entries, conflict, meta),
            RequestBody::SecretListPage { scope, page } => self.list_page(caller, op, scope, page),
            RequestBody::AuditListPage { limit, page } => self.audit_page(caller, op, limit, page),
            RequestBody::PolicyShowPage { page } => self.policy_show_page(caller, page),
            RequestBody::PolicyCheckPage { page } => self.policy_check_page(caller, page),
            RequestBody::SecretList { scope } => self.list(caller, op, scope),
            RequestBody::SecretExists { scope, name } => self.exists(caller, op, scope, &name),
            RequestBody::SecretMasked { scope, name } => self.masked(caller, op, scope, &name),
            RequestBody::SecretRemove { scope, name } => self.remove(caller, op, scope, &name),
            RequestBody::AuditList { limit } => self.audit_list(caller, op, limit),
            RequestBody::AuditVerify => self.audit_verify(caller, op, false),
            RequestBody::AuditVerifyArchives => self.audit_verify(caller, op, true),
            RequestBody::AuditRotate => self.audit_rotate(caller, op),
            RequestBody::Run(_) => Err(err(
                ErrorCode::BadRequest,
                "run requests are served on their own connection",
            )),
            // Served by `crate::approval::serve::serve` (it may wait on polkit).
            RequestBody::Approvals(_) => Err(err(
                ErrorCode::BadRequest,
                "approvals are served by the connection",
            )),
            RequestBody::CapabilityList => self.capability_list(caller, op),
            RequestBody::PolicyShow => Ok(self.policy_show(caller)),
            RequestBody::PolicyCheck => self.policy_check(caller),
            RequestBody::PolicyReload => self.policy_reload(caller, op, false),
            RequestBody::PolicyReloadForced => self.policy_reload(caller, op, true),
            RequestBody::SecretGenerate {
                scope,
                name,
                length,
                charset,
                meta,
                mode,
            } => self.generate(
                caller,
                secrets::GenerateRequest {
                    op,
                    scope,
                    name: &name,
                    length,
                    charset,
                    meta,
                    mode,
                },
            ),
            RequestBody::SecretBackup { all } => self.backup(caller, op, all),
            RequestBody::SecretRestore {
                blob,
                verify_only,
                conflict,
            } => self.restore(caller, op, &blob, verify_only, conflict),
        }
    }
}

impl crate::approval::ApprovalHost for Daemon {
    fn approvals(&self) -> &crate::approval::Approvals {
        &self.runs.approvals
    }

    fn audit(&self) -> &AuditGate {
        &self.audit
    }
}

impl RunHost for Daemon {
    fn runs(&self) -> &RunContext {
        &self.runs
    }

    fn policy(&self) -> Arc<Policy> {
        Daemon::policy(self)
    }

    fn is_sealed(&self) -> bool {
        Daemon::is_sealed(self)
    }

    fn secret_for_run(&self, scope: Scope, name: &str) -> Result<SecretBytes, WireError> {
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

    fn secret_names(&self, scope: Scope) -> Vec<String> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Vec::new();
        };
        vault.list(scope).into_iter().map(|m| m.name).collect()
    }

    fn secret_expiry(&self, scope: Scope, name: &str) -> Option<u64> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return None;
        };
        vault.meta(scope, name).and_then(|m| m.expires)
    }
}
