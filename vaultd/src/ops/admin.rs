//! The daemon's own state: status, unlocking a sealed vault, reading and
//! verifying the audit log, showing, checking and reloading the policy.
//! Everything but `status` and `policy show` is root's.

use std::sync::atomic::Ordering;

use aivault_proto::{
    AuditReport, ErrorCode, Reply, SecretBytes, StatusInfo, WireError, PROTOCOL_VERSION,
};
use serde_json::json;

use super::{Caller, Daemon, VaultState, UNKEYED_OPS};
use crate::audit::gate::Entry;
use crate::audit::{AuditKey, AuditLog};
use crate::keys::{self, Kek};
use crate::policy::{Policy, Who};
use crate::store::{Scope, StoreError, Vault};
use crate::wire_error::{err, sealed, store_err};

/// Why a reload left the policy in force as it was.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    #[error("{0}")]
    Invalid(#[from] crate::policy::PolicyError),
    /// A reload that would take every rule away is more likely a file
    /// emptied or lost by mistake than an intent; every run would be refused.
    #[error(
        "the new policy has no rules but {previous} are in force, so it was not applied; \
         to run with no rules on purpose, use `vaultctl policy reload --force`"
    )]
    WouldRemoveEveryRule { previous: usize },
    /// The new policy could not be made durable in the audit log, so it was
    /// not applied (audit before effect).
    #[error("the reload could not be audited, so it was not applied: {}", .0.message)]
    NotAudited(WireError),
}

impl Daemon {
    /// Re-reads the policy; an invalid one, or one without rules replacing
    /// one with rules, is reported and the old one stays.
    /// The SIGHUP reload: audited as the daemon itself (root, its own pid),
    /// before the new policy takes effect.
    pub fn reload_policy(&self) -> Result<usize, ReloadRefused> {
        let me = Caller {
            uid: 0,
            gid: 0,
            pid: i32::try_from(std::process::id()).unwrap_or(0),
        };
        let record = |n: usize| {
            self.audit.record(
                Entry::new(&me, "policy.reload")
                    .detail(json!({ "entries": n, "forced": false, "signal": "SIGHUP" })),
            )
        };
        self.reload_policy_with(false, record)
    }

    /// [`Daemon::reload_policy`]; `force` applies a valid policy without
    /// rules in place of one with rules. `durable` (given the new rule
    /// count) runs before the new policy takes effect, with the policy
    /// locked; its error leaves the old policy in force.
    pub fn reload_policy_with(
        &self,
        force: bool,
        durable: impl FnOnce(usize) -> Result<(), WireError>,
    ) -> Result<usize, ReloadRefused> {
        let fresh = Policy::load(&self.cfg.policy_dir)?;
        let rules = fresh.explain().len();
        let mut current = self.policy.write().unwrap_or_else(|p| p.into_inner());
        let previous = current.explain().len();
        if rules == 0 && previous > 0 && !force {
            return Err(ReloadRefused::WouldRemoveEveryRule { previous });
        }
        durable(rules).map_err(ReloadRefused::NotAudited)?;
        *current = std::sync::Arc::new(fresh);
        // Brokers were started with the old policy's capabilities: each
        // caller's next connection starts one with the new.
        if let Some(pool) = self.broker_pool.get() {
            pool.policy_changed();
        }
        // Gateway sessions hold the old policy's servers: they end, and
        // the agent's next connection gets the new ones.
        self.gateway_policy.send_modify(|n| *n = n.wrapping_add(1));
        Ok(rules)
    }

    pub(super) fn status(&self, caller: &Caller) -> Reply {
        let root = caller.is_root();
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let (sealed, own, system) = match &*guard {
            VaultState::Sealed { .. } => (true, 0, 0),
            VaultState::Open(v) => (
                false,
                v.count_in(Scope::User(caller.uid)) as u32,
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
            warm_runner_uids: if root {
                self.runs.warm.uids()
            } else {
                Vec::new()
            },
            runs_active: if root {
                (self.runs.admission.active() + self.runs.teardowns.active()) as u32
            } else {
                0
            },
            quiescent: root && self.runs.idle() && self.runs.warm.settled(),
            open_fds: if root { open_fds() } else { 0 },
        })
    }

    pub(super) fn unlock(
        &self,
        caller: &Caller,
        passphrase: SecretBytes,
    ) -> Result<Reply, WireError> {
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
                self.audit.record(Entry::new(caller, OP))?;
                *guard = VaultState::Open(Box::new(vault));
                *self.backup_root.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(crate::backup::BackupRoot::of(&kek));
                tracing::info!("vault unsealed");
                Ok(Reply::Done { version: None })
            }
            Err(StoreError::WrongKey) => Err(self.audit.deny(
                Entry::new(caller, OP),
                err(ErrorCode::WrongPassphrase, "wrong passphrase"),
            )),
            Err(e) => {
                tracing::error!(error = %e, "unlock failed");
                Err(store_err(&e))
            }
        }
    }

    pub(super) fn audit_list(
        &self,
        caller: &Caller,
        op: &str,
        limit: u32,
    ) -> Result<Reply, WireError> {
        if self.is_sealed() {
            return Err(sealed());
        }
        let filter = (!caller.is_root()).then_some(caller.uid);
        let limit = (limit as usize).clamp(1, 10_000);
        self.audit
            .record(Entry::new(caller, op).detail(json!({ "limit": limit })))?;
        let records = AuditLog::read(&self.cfg.audit_log, filter, limit)
            .map_err(|_| err(ErrorCode::Internal, "the audit log could not be read"))?;
        Ok(Reply::AuditRecords(
            records.iter().map(|r| r.to_string()).collect(),
        ))
    }

    /// Verifies the current log, and with `archives` every archive too.
    pub(super) fn audit_verify(
        &self,
        caller: &Caller,
        op: &str,
        archives: bool,
    ) -> Result<Reply, WireError> {
        self.require_root(caller, op, "only root can verify the audit log")?;
        let key = self.audit.key().ok_or_else(sealed)?;
        let verify = if archives {
            AuditLog::verify_archives
        } else {
            AuditLog::verify
        };
        let report = verify(
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

    /// Archives the audit log and starts a new file chained to it (root
    /// only); the reply holds the new file's first record.
    pub(super) fn audit_rotate(&self, caller: &Caller, op: &str) -> Result<Reply, WireError> {
        self.require_root(caller, op, "only root can rotate the audit log")?;
        let (record, _archive) = self.audit.rotate(caller)?;
        Ok(Reply::AuditRecords(vec![record]))
    }

    /// The commands this caller may run, then the HTTP capabilities it may
    /// invoke (objects with a `capability` member), as JSON.
    pub(super) fn policy_show(&self, caller: &Caller) -> Reply {
        let who = Who {
            uid: caller.uid,
            gid: caller.gid,
            groups: crate::sys::account_groups(caller.uid, caller.gid),
        };
        let policy = self.policy();
        let mut list: Vec<serde_json::Value> = policy
            .commands_for(&who)
            .iter()
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        list.extend(
            policy
                .capability_summaries_for(&who)
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok()),
        );
        Reply::Policy(serde_json::Value::Array(list).to_string())
    }

    /// Validates the policy on disk and explains each rule (root only).
    pub(super) fn policy_check(&self, caller: &Caller) -> Result<Reply, WireError> {
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

    /// Re-reads the policy (root only); an invalid one, or one that would
    /// remove every rule, keeps the old one.
    pub(super) fn policy_reload(
        &self,
        caller: &Caller,
        op: &str,
        force: bool,
    ) -> Result<Reply, WireError> {
        self.require_root(caller, op, "only root can reload the policy")?;
        // Recorded before the new policy takes effect (audit before effect).
        let record = |n: usize| {
            self.audit
                .record(Entry::new(caller, op).detail(json!({ "entries": n, "forced": force })))
        };
        match self.reload_policy_with(force, record) {
            Ok(_) => Ok(Reply::Done { version: None }),
            Err(ReloadRefused::NotAudited(e)) => Err(e),
            Err(ReloadRefused::Invalid(e)) => Err(self.audit.deny(
                Entry::new(caller, op),
                err(
                    ErrorCode::BadRequest,
                    format!("the new policy is invalid and was not applied: {e}"),
                ),
            )),
            Err(e @ ReloadRefused::WouldRemoveEveryRule { .. }) => Err(self.audit.deny(
                Entry::new(caller, op),
                err(ErrorCode::BadRequest, e.to_string()),
            )),
        }
    }
}

/// The daemon's open descriptors (the listing's own included).
fn open_fds() -> u32 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u32)
}
