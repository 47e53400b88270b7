//! The audit gate: the one way the daemon's operations record a decision
//! before it takes effect, and fail closed when it cannot.
//!
//! An [`Entry`] is built field by field (who and what are required; the
//! scope, the secret's name, the outcome and a JSON detail are not), then
//! handed to [`AuditGate::record`] (an allowed decision: `Err` means *do not
//! act*), [`AuditGate::deny`] (a refusal, returned to the caller) or
//! [`AuditGate::failed`] (an allowed operation that then failed). The gate
//! also holds the audit key for verification, set when a sealed vault is
//! unlocked.

use std::sync::Mutex;

use aivault_proto::{ErrorCode, WireError, WireScope};
use serde_json::json;

use super::{Actor, AuditError, AuditKey, AuditLog, Event, Outcome};
use crate::caller::Caller;
use crate::wire_error::{audit_unavailable, err};

/// One record about to be written. Names only, never values.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    caller: &'a Caller,
    op: &'a str,
    scope: Option<WireScope>,
    name: Option<&'a str>,
    outcome: Outcome,
    reason: Option<&'a str>,
    detail: serde_json::Value,
}

impl<'a> Entry<'a> {
    /// A record of `op` by `caller`, outcome `ok` until said otherwise.
    pub fn new(caller: &'a Caller, op: &'a str) -> Self {
        Entry {
            caller,
            op,
            scope: None,
            name: None,
            outcome: Outcome::Ok,
            reason: None,
            detail: serde_json::Value::Null,
        }
    }

    /// The scope the request addressed.
    pub fn scope(self, scope: WireScope) -> Self {
        Entry {
            scope: Some(scope),
            ..self
        }
    }

    /// The secret (or rule) the record is about, if any.
    pub fn name(self, name: Option<&'a str>) -> Self {
        Entry { name, ..self }
    }

    /// A JSON object with what else the record must say.
    pub fn detail(self, detail: serde_json::Value) -> Self {
        Entry { detail, ..self }
    }

    /// How the decision ended, and why when it was not `ok`.
    pub fn outcome(self, outcome: Outcome, reason: Option<&'a str>) -> Self {
        Entry {
            outcome,
            reason,
            ..self
        }
    }
}

fn scope_label(scope: WireScope) -> &'static str {
    match scope {
        WireScope::Own => "user",
        WireScope::System => "system",
    }
}

/// The audit log, and the key that verifies it.
#[derive(Debug)]
pub struct AuditGate {
    log: AuditLog,
    key: Mutex<Option<AuditKey>>,
}

impl AuditGate {
    /// `key` is `None` while a passphrase vault is sealed.
    pub fn new(log: AuditLog, key: Option<AuditKey>) -> Self {
        AuditGate {
            log,
            key: Mutex::new(key),
        }
    }

    /// Records a decision. `Err` means the record could not be written and
    /// the caller must not act.
    pub fn record(&self, entry: Entry<'_>) -> Result<(), WireError> {
        self.record_then(entry, || {})
    }

    /// [`AuditGate::record`], calling `durable` as soon as the record is
    /// durable in the log (see [`AuditLog::append_then`]).
    pub fn record_then(&self, entry: Entry<'_>, durable: impl FnOnce()) -> Result<(), WireError> {
        let c = entry.caller;
        let ev = Event {
            actor: Actor {
                uid: c.uid,
                gid: c.gid,
                pid: c.pid,
            },
            op: entry.op,
            scope: entry.scope.map(scope_label),
            name: entry.name,
            outcome: entry.outcome,
            reason: entry.reason,
            detail: entry.detail,
        };
        self.log
            .append_then(&ev, durable)
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, op = entry.op, "audit record could not be written; refusing");
                audit_unavailable()
            })
    }

    /// Records a refusal and returns it — or the audit failure, which is a
    /// refusal too. Without a detail of its own the record carries the
    /// error's code.
    pub fn deny(&self, entry: Entry<'_>, refusal: WireError) -> WireError {
        let detail = match entry.detail {
            serde_json::Value::Null => json!({ "code": refusal.code.as_str() }),
            ref d => d.clone(),
        };
        let entry = entry
            .detail(detail)
            .outcome(Outcome::Denied, Some(&refusal.message));
        match self.record(entry) {
            Ok(()) => refusal,
            Err(audit) => audit,
        }
    }

    /// Records that an allowed operation failed to complete and returns its
    /// error (the decision itself was recorded before, so a failure to write
    /// this second record changes nothing).
    pub fn failed(&self, entry: Entry<'_>, failure: WireError) -> WireError {
        let entry = entry
            .detail(json!({ "code": failure.code.as_str() }))
            .outcome(Outcome::Failed, Some(&failure.message));
        let _ = self.record(entry);
        failure
    }

    /// Archives the log and starts a new one chained to it, the rotation
    /// recorded as `audit.rotate` by `caller`: the new file's first record.
    /// Returns that record (a JSON line) and the archive's file name.
    pub fn rotate(&self, caller: &Caller) -> Result<(String, String), WireError> {
        let actor = Actor {
            uid: caller.uid,
            gid: caller.gid,
            pid: caller.pid,
        };
        self.log.rotate(actor).map_err(|e| {
            tracing::error!(error = %e, "audit log rotation failed");
            match e {
                AuditError::Rotate(why) => err(
                    ErrorCode::Internal,
                    format!("the audit log was not rotated: {why}"),
                ),
                _ => err(
                    ErrorCode::AuditUnavailable,
                    "the audit log could not be rotated (see the daemon's log)",
                ),
            }
        })
    }

    /// A sealed vault was unlocked: records are MACed from now on.
    pub fn set_key(&self, key: AuditKey) {
        self.log.set_key(key.clone());
        *self.key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
    }

    /// The key that verifies the log (`None` while sealed).
    pub fn key(&self) -> Option<AuditKey> {
        self.key.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
