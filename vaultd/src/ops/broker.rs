//! The daemon as the broker's process side sees it ([`BrokerHost`]), and
//! `capability list`. The decisions themselves are
//! [`crate::broker::decide`]'s; this file only hands them the daemon's
//! policy, audit gate, rate-limit state and vault.
//!
//! While a passphrase vault is sealed there is no audit key, so nothing is
//! decided: every request is refused as unavailable, unrecorded (as the
//! socket answers "sealed" before any decision).

use std::sync::Arc;

use aivault_proto::broker::{BrokerInit, DenyReason};
use aivault_proto::{CapabilityInfo, CapabilityReport, Reply, SecretBytes, WireError};
use serde_json::json;

use super::{Caller, Daemon, VaultState};
use crate::audit::gate::Entry;
use crate::broker::decide::{self, Context, SecretSource};
use crate::broker::{Ask, BrokerHost, Denied, Granted, Outcome, Tokens};
use crate::policy::{Policy, SecretScope, Who};
use crate::run::RunHost;
use crate::store::{self, MetaUpdate, PutMode, Scope, SecretValue};
use crate::wire_error::{sealed, store_err};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `caller` as the policy judges it: with its account's groups when the
/// policy names any group. A caller on loopback TCP (pid 0: the kernel's
/// socket table names its uid only) is judged by its account's groups
/// alone, never by a gid the endpoint could only have guessed; without an
/// account it is in no group.
pub(crate) fn who(policy: &Policy, caller: &Caller) -> Who {
    if caller.pid == 0 {
        let (gid, groups) = crate::sys::account(caller.uid).unwrap_or((NO_GROUP, Vec::new()));
        return Who {
            uid: caller.uid,
            gid,
            groups,
        };
    }
    Who {
        uid: caller.uid,
        gid: caller.gid,
        groups: if policy.uses_groups() {
            crate::sys::account_groups(caller.uid, caller.gid)
        } else {
            Vec::new()
        },
    }
}

/// `(gid_t) -1`: no group has it.
const NO_GROUP: u32 = u32::MAX;

impl Daemon {
    /// This daemon as the broker's process side sees it.
    pub fn broker_host(self: &Arc<Self>) -> Arc<dyn BrokerHost> {
        self.clone()
    }

    /// The capabilities the caller may invoke and where the endpoint
    /// listens; recorded like the other lists.
    pub(super) fn capability_list(&self, caller: &Caller, op: &str) -> Result<Reply, WireError> {
        let policy = self.policy();
        let who = who(&policy, caller);
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let capabilities: Vec<CapabilityInfo> = policy
            .capabilities_for(&who)
            .map(|c| {
                let scope = match c.scope() {
                    SecretScope::User => Scope::User(caller.uid),
                    SecretScope::System => Scope::System,
                };
                CapabilityInfo {
                    name: c.cap.name.clone(),
                    provider: c.provider.clone(),
                    host: c.cap.hosts[0].clone(),
                    methods: c.cap.methods.clone(),
                    paths: c.paths.clone(),
                    secret: c.cap.secret.clone(),
                    secret_present: vault.meta(scope, &c.cap.secret).is_some(),
                }
            })
            .collect();
        self.audit
            .record(Entry::new(caller, op).detail(json!({ "count": capabilities.len() })))?;
        Ok(Reply::Capabilities(CapabilityReport {
            capabilities,
            http_socket: Some(self.cfg.http_socket().display().to_string()),
            http_tcp: self.cfg.broker.tcp_listen.map(|a| a.to_string()),
        }))
    }
}

impl SecretSource for Daemon {
    fn expiry(&self, scope: Scope, name: &str) -> Option<u64> {
        RunHost::secret_expiry(self, scope, name)
    }

    fn exists(&self, scope: Scope, name: &str) -> bool {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        matches!(&*guard, VaultState::Open(v) if v.meta(scope, name).is_some())
    }

    fn value(&self, scope: Scope, name: &str) -> Result<SecretBytes, WireError> {
        RunHost::secret_for_run(self, scope, name)
    }

    fn store(
        &self,
        scope: Scope,
        name: &str,
        value: SecretBytes,
        expires: Option<u64>,
    ) -> Result<(), WireError> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        store::validate_name(name).map_err(|e| store_err(&e))?;
        super::secrets::check_value(value.as_bytes())?;
        let update = MetaUpdate {
            description: None,
            tags: Vec::new(),
            expires,
        };
        let value = SecretValue::new(value.into_inner().to_vec());
        vault
            .put(scope, name, &value, update, PutMode::Upsert)
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, "vault update of refreshed tokens failed");
                store_err(&e)
            })
    }
}

impl BrokerHost for Daemon {
    fn broker_init(&self, caller: &Caller) -> Option<BrokerInit> {
        let policy = self.policy();
        decide::broker_init(&policy, &who(&policy, caller), &self.cfg.broker)
    }

    fn authorize(&self, caller: &Caller, ask: &Ask<'_>) -> Result<Granted, Denied> {
        if self.is_sealed() {
            return Err(Denied {
                reason: DenyReason::Unavailable,
                message: "the vault is sealed".into(),
                retry_after_s: None,
            });
        }
        let policy = self.policy();
        let ctx = Context {
            policy: &policy,
            audit: &self.audit,
            rate: &self.broker_rate,
            secrets: self,
            now: now(),
        };
        decide::authorize(&ctx, caller, &who(&policy, caller), ask)
    }

    fn tokens_refreshed(
        &self,
        caller: &Caller,
        capability: &str,
        tokens: Tokens,
    ) -> Result<(), String> {
        if self.is_sealed() {
            return Err("the vault is sealed".into());
        }
        let policy = self.policy();
        let ctx = Context {
            policy: &policy,
            audit: &self.audit,
            rate: &self.broker_rate,
            secrets: self,
            now: now(),
        };
        decide::tokens_refreshed(&ctx, caller, &who(&policy, caller), capability, tokens)
    }

    fn finished(&self, caller: &Caller, outcome: &Outcome<'_>) {
        if self.is_sealed() {
            return;
        }
        decide::finished(&self.audit, caller, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_caller_is_judged_by_its_account_not_by_the_gid_it_came_with() {
        let p = Policy::empty();
        // Root's account: gid 0, whatever gid the endpoint passed.
        let w = who(
            &p,
            &Caller {
                uid: 0,
                gid: 4242,
                pid: 0,
            },
        );
        assert_eq!(w.gid, 0);
        assert!(!w.groups.contains(&4242));
        // No account: in no group at all (not group 0 by default).
        let w = who(
            &p,
            &Caller {
                uid: 3_999_999_000,
                gid: 0,
                pid: 0,
            },
        );
        assert_eq!((w.gid, w.groups.len()), (NO_GROUP, 0));
        // A Unix-socket caller keeps the kernel's gid.
        let w = who(
            &p,
            &Caller {
                uid: 0,
                gid: 4242,
                pid: 17,
            },
        );
        assert_eq!(w.gid, 4242);
    }
}
