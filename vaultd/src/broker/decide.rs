//! The broker's decisions, as plain functions over the policy in force,
//! the audit gate, the rate-limit state and the vault (seen through
//! [`SecretSource`]); `ops` implements [`super::BrokerHost`] with them.
//!
//! [`authorize`], in this order, each step refusing with an audit record
//! (`http.request`, outcome `denied`):
//! 1. the capability exists in the policy in force and the caller (its uid,
//!    primary or supplementary groups) may invoke it — to the caller both
//!    failures read the same, so no caller learns another's capabilities;
//! 2. the method is one the capability allows and the path (checked again
//!    with the broker's own path guard) matches one of its patterns;
//! 3. the secret has not expired;
//! 4. the rate limits (per capability, per caller uid) admit it, counted
//!    durably ([`super::rate_state`]);
//! 5. the grant is recorded (`http.request`, outcome `ok`), durable before
//!    the secret is read;
//! 6. the secret is read from the caller's own scope or the system scope,
//!    then the further secrets its auth kind names (`aws-sigv4`: the
//!    access key id) from the same scope; one that is missing fails
//!    (`failed`) and nothing is handed over.
//!
//! Everything a broker sends is untrusted: names, methods and paths are
//! bounded before they are recorded, query values in a path are recorded
//! as `*` whatever the broker sent, and no record carries a value.

use std::path::PathBuf;

use aivault_broker::rate::Key;
use aivault_proto::broker::{BrokerInit, DenyReason};
use aivault_proto::{Limits, SecretBytes, WireError, WireScope};
use serde_json::json;

use super::rate_state::RateState;
use super::{Ask, Denied, Granted, Outcome, Tokens};
use crate::audit::gate::{AuditGate, Entry};
use crate::caller::Caller;
use crate::config::BrokerConfig;
use crate::policy::{CapabilityEntry, Policy, SecretScope, Who};
use crate::store::Scope;
use aivault_broker::auth::Auth;

/// The audit operation of a decision on a request.
pub const OP_REQUEST: &str = "http.request";
/// The audit operation of how a granted request ended.
pub const OP_RESPONSE: &str = "http.response";

/// Longest capability name, method, path and error recorded as sent.
const MAX_NAME: usize = 64;
const MAX_METHOD: usize = 16;
const MAX_PATH: usize = 1024;
const MAX_ERROR: usize = 256;

/// Most bytes of capability text and trust anchors in an init message,
/// leaving room in its datagram for the rest.
const MAX_INIT_TEXT: usize = aivault_proto::broker::MAX_CONTROL - 16 * 1024;

/// The port every upstream is reached on.
const HTTPS_PORT: u16 = 443;

/// What a broker process may use (it is one long-lived process per caller
/// serving many requests, threads included).
pub fn broker_limits() -> Limits {
    Limits {
        memory: 2 << 30,
        processes: 256,
        file_size: 64 << 20,
        cpu_seconds: 24 * 3600,
        open_files: 1024,
    }
}

/// The vault as the decision needs it.
pub trait SecretSource {
    /// When the secret expires (seconds since the epoch), if it does.
    fn expiry(&self, scope: Scope, name: &str) -> Option<u64>;
    /// Whether the secret is stored.
    fn exists(&self, scope: Scope, name: &str) -> bool;
    /// The value: read only after the grant is durable.
    fn value(&self, scope: Scope, name: &str) -> Result<SecretBytes, WireError>;
    /// Stores `value` (created or replaced, as `secrets set` does) with
    /// this expiry.
    fn store(
        &self,
        scope: Scope,
        name: &str,
        value: SecretBytes,
        expires: Option<u64>,
    ) -> Result<(), WireError>;
}

/// The audit operation of OAuth2 tokens written back to the vault.
pub const OP_TOKEN_REFRESH: &str = "http.token_refresh";

/// A stored access token this close to its expiry is refreshed instead
/// (it would expire in flight).
const TOKEN_MARGIN_S: u64 = 30;
/// The lifetime of an access token whose endpoint named none.
const DEFAULT_TOKEN_LIFETIME_S: u64 = 3600;
/// The longest lifetime recorded for an access token.
const MAX_TOKEN_LIFETIME_S: u64 = 366 * 24 * 3600;

/// The init message for the broker serving `who`; `home` and `tmp` are
/// left empty for the pool to fill in. `None` when `who` may invoke no
/// capability, or so many that their text would not fit the message.
pub fn broker_init(policy: &Policy, who: &Who, cfg: &BrokerConfig) -> Option<BrokerInit> {
    let capabilities = policy.broker_text(who)?;
    let mut tcp_connect = vec![HTTPS_PORT];
    if let Some(t) = &cfg.testing {
        tcp_connect.extend(
            t.resolve
                .iter()
                .flat_map(|r| r.addrs.iter().map(|a| a.port())),
        );
    }
    tcp_connect.sort_unstable();
    tcp_connect.dedup();
    let roots = cfg
        .testing
        .as_ref()
        .and_then(|t| t.extra_roots_pem.as_ref())
        .map_or(0, Vec::len);
    if capabilities.len() + roots > MAX_INIT_TEXT {
        tracing::error!(
            uid = who.uid,
            bytes = capabilities.len(),
            "the capabilities this caller may invoke are too large for a broker's init message; its requests are refused"
        );
        return None;
    }
    Some(BrokerInit {
        capabilities,
        tcp_connect,
        home: PathBuf::new(),
        tmp: PathBuf::new(),
        limits: broker_limits(),
        require_full_landlock: true,
        testing: cfg.testing.clone(),
    })
}

/// What [`authorize`] decides with.
pub struct Context<'a> {
    pub policy: &'a Policy,
    pub audit: &'a AuditGate,
    pub rate: &'a RateState,
    pub secrets: &'a dyn SecretSource,
    /// Seconds since the epoch.
    pub now: u64,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn denied(reason: DenyReason, message: impl Into<String>) -> Denied {
    Denied {
        reason,
        message: message.into(),
        retry_after_s: None,
    }
}

/// `s`, cut to `max` characters (ending in `…` if cut).
pub fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

/// The path as recorded: bounded, every query value `*`.
fn recorded_path(path: &str) -> String {
    let masked = match path.split_once('?') {
        None => path.to_owned(),
        Some((p, q)) => {
            let pairs: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=*"),
                    None => kv.to_owned(),
                })
                .collect();
            format!("{p}?{}", pairs.join("&"))
        }
    };
    bounded(&masked, MAX_PATH)
}

fn wire_scope(s: SecretScope) -> WireScope {
    match s {
        SecretScope::User => WireScope::Own,
        SecretScope::System => WireScope::System,
    }
}

/// Decides one request (module documentation): the credential and the
/// further secrets its auth kind names. For an OAuth2 capability the stored
/// access token is granted while it is there and unexpired; otherwise the
/// refresh material is (its record says `"token": "refresh"`), and the
/// broker reports the new tokens.
pub fn authorize(
    ctx: &Context<'_>,
    caller: &Caller,
    who: &Who,
    ask: &Ask<'_>,
) -> Result<Granted, Denied> {
    let name = bounded(ask.capability, MAX_NAME);
    let method = bounded(ask.method, MAX_METHOD);
    let path = recorded_path(ask.path);
    let base = |detail: serde_json::Value| {
        Entry::new(caller, OP_REQUEST)
            .name(Some(name.as_str()))
            .detail(detail)
    };
    let refuse = |entry: Entry<'_>, d: Denied| -> Denied {
        let wire = WireError::new(
            aivault_proto::ErrorCode::PermissionDenied,
            d.message.clone(),
        );
        let back = ctx.audit.deny(entry, wire);
        if back.code == aivault_proto::ErrorCode::AuditUnavailable {
            return denied(DenyReason::Unavailable, "the audit log cannot be written");
        }
        d
    };

    let found = ctx
        .policy
        .capability(ask.capability)
        .filter(|c| c.allows(who));
    let Some(cap) = found else {
        let why = if ctx.policy.capability(ask.capability).is_some() {
            "not-allowed"
        } else {
            "unknown"
        };
        return Err(refuse(
            base(json!({ "method": method, "path": path, "why": why })),
            denied(
                DenyReason::Forbidden,
                format!("uid {} may invoke no capability {name:?}", caller.uid),
            ),
        ));
    };
    let scope = cap.scope();
    let detail = |extra: serde_json::Value| {
        let mut d = json!({ "method": method, "path": path, "secret": cap.cap.secret });
        if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(extra.clone());
        }
        d
    };
    let entry = |extra: serde_json::Value| base(detail(extra)).scope(wire_scope(scope));

    if let Err(why) = request_allowed(cap, ask) {
        return Err(refuse(
            entry(json!({ "why": why })),
            denied(DenyReason::Forbidden, why),
        ));
    }
    let vault_scope = match scope {
        SecretScope::User => Scope::User(caller.uid),
        SecretScope::System => Scope::System,
    };
    let extra_names = cap.cap.auth.extra_secrets();
    let oauth2 = matches!(cap.cap.auth, Auth::Oauth2 { .. });
    let expiry = ctx.secrets.expiry(vault_scope, &cap.cap.secret);
    // An OAuth2 access token that is missing or (nearly) expired is
    // refreshed by the broker, not refused.
    let refresh = oauth2
        && (!ctx.secrets.exists(vault_scope, &cap.cap.secret)
            || expiry.is_some_and(|at| at <= ctx.now.saturating_add(TOKEN_MARGIN_S)));
    // Any other credential of the grant past its expiry is refused.
    let expired = std::iter::once(cap.cap.secret.as_str())
        .filter(|_| !oauth2)
        .chain(extra_names.iter().map(|(_, n)| *n))
        .find(|n| {
            ctx.secrets
                .expiry(vault_scope, n)
                .is_some_and(|at| at <= ctx.now)
        });
    if let Some(expired) = expired {
        return Err(refuse(
            entry(json!({ "why": "expired" })),
            denied(
                DenyReason::Unavailable,
                format!("secret {expired} has expired"),
            ),
        ));
    }
    let limits = rate_limits(cap, caller.uid);
    let rate = match ctx.rate.admit(ctx.now, &limits) {
        Ok(Ok(())) if limits.is_empty() => json!("none"),
        Ok(Ok(())) => json!("counted"),
        Ok(Err(limited)) => {
            let which = match limited.key {
                Key::Capability(_) => "capability",
                Key::Caller(..) => "caller",
            };
            let retry = u32::try_from(limited.retry_after_secs).unwrap_or(u32::MAX);
            let mut d = denied(
                DenyReason::RateLimited,
                format!(
                    "capability {name} allows {} requests per minute{}",
                    limited.limit,
                    if which == "caller" { " per caller" } else { "" }
                ),
            );
            d.retry_after_s = Some(retry);
            return Err(refuse(
                entry(
                    json!({ "rate": { "limited": which, "limit": limited.limit, "retry_after_s": retry } }),
                ),
                d,
            ));
        }
        Err(e) => {
            tracing::error!(error = %e, "rate-limit state not saved; refusing");
            return Err(refuse(
                entry(json!({ "why": "rate-state" })),
                denied(
                    DenyReason::Unavailable,
                    "the rate-limit state cannot be saved",
                ),
            ));
        }
    };
    let granted = if oauth2 {
        entry(json!({ "rate": rate, "token": if refresh { "refresh" } else { "stored" } }))
    } else {
        entry(json!({ "rate": rate }))
    };
    if ctx.audit.record(granted.clone()).is_err() {
        return Err(denied(
            DenyReason::Unavailable,
            "the audit log cannot be written",
        ));
    }
    let read = |name: &str| {
        ctx.secrets.value(vault_scope, name).map_err(|e| {
            let message = format!("secret {name} is not available: {}", e.message);
            ctx.audit.failed(granted.clone(), e);
            denied(DenyReason::Unavailable, message)
        })
    };
    // Every grant carries the further secrets its kind names (`aws-sigv4`:
    // the access key id); an OAuth2 one without a usable access token
    // carries the refresh material instead of it.
    let mut extra = Vec::new();
    for (role, n) in extra_names {
        extra.push((role.to_owned(), read(n)?));
    }
    if refresh {
        for (role, n) in cap.cap.auth.refresh_secrets() {
            extra.push((role.to_owned(), read(n)?));
        }
        return Ok(Granted {
            secret: SecretBytes::new(Vec::new()),
            extra,
            refreshable: true,
        });
    }
    let secret = read(&cap.cap.secret)?;
    Ok(Granted {
        secret,
        extra,
        refreshable: false,
    })
}

/// Writes the tokens a broker obtained for a granted request of OAuth2
/// capability `capability` to the vault (the capability's scope), the
/// access token with its expiry; recorded as `http.token_refresh` before
/// the write, never with a value. A capability that is gone, is not the
/// caller's or is no OAuth2 one is refused.
pub fn tokens_refreshed(
    ctx: &Context<'_>,
    caller: &Caller,
    who: &Who,
    capability: &str,
    tokens: Tokens,
) -> Result<(), String> {
    let name = bounded(capability, MAX_NAME);
    let cap = ctx
        .policy
        .capability(capability)
        .filter(|c| c.allows(who))
        .ok_or_else(|| {
            format!("tokens for capability {name:?}, which the caller may not invoke")
        })?;
    let Auth::Oauth2 { refresh_token, .. } = &cap.cap.auth else {
        return Err(format!(
            "tokens for capability {name:?}, which is no OAuth2 one"
        ));
    };
    let scope = cap.scope();
    let vault_scope = match scope {
        SecretScope::User => Scope::User(caller.uid),
        SecretScope::System => Scope::System,
    };
    let lifetime = tokens
        .expires_in_s
        .unwrap_or(DEFAULT_TOKEN_LIFETIME_S)
        .min(MAX_TOKEN_LIFETIME_S);
    let expires = ctx.now.saturating_add(lifetime);
    // A new refresh token is kept only where the policy names one.
    let rotated = refresh_token
        .as_deref()
        .filter(|_| tokens.refresh_token.is_some());
    let entry = Entry::new(caller, OP_TOKEN_REFRESH)
        .name(Some(name.as_str()))
        .scope(wire_scope(scope))
        .detail(json!({
            "secret": cap.cap.secret,
            "expires": expires,
            "refresh_token": rotated,
        }));
    ctx.audit
        .record(entry.clone())
        .map_err(|_| "the audit log cannot be written".to_owned())?;
    let fail = |e: WireError| {
        let message = e.message.clone();
        ctx.audit.failed(entry.clone(), e);
        message
    };
    ctx.secrets
        .store(
            vault_scope,
            &cap.cap.secret,
            tokens.access_token,
            Some(expires),
        )
        .map_err(fail)?;
    if let (Some(n), Some(v)) = (rotated, tokens.refresh_token) {
        ctx.secrets.store(vault_scope, n, v, None).map_err(fail)?;
    }
    Ok(())
}

/// The method and path, checked again (cheaply) against the capability.
fn request_allowed(cap: &CapabilityEntry, ask: &Ask<'_>) -> Result<(), String> {
    if !cap.cap.methods.iter().any(|m| m == ask.method) {
        return Err(format!(
            "capability {} does not allow this method",
            cap.name()
        ));
    }
    let path = aivault_broker::path::check(ask.path).map_err(|e| e.to_string())?;
    if !cap.cap.paths.iter().any(|p| p.matches(&path)) {
        return Err(format!(
            "capability {} does not allow this path",
            cap.name()
        ));
    }
    Ok(())
}

fn rate_limits(cap: &CapabilityEntry, uid: u32) -> Vec<(Key, u32)> {
    let Some(r) = cap.cap.rate else {
        return Vec::new();
    };
    let name = cap.name().to_owned();
    let mut out = Vec::new();
    if let Some(n) = r.per_minute {
        out.push((Key::Capability(name.clone()), n));
    }
    if let Some(n) = r.per_caller_per_minute {
        out.push((Key::Caller(name, uid), n));
    }
    out
}

/// Records how a granted request ended (`http.response`); every field is
/// the broker's word, bounded.
pub fn finished(audit: &AuditGate, caller: &Caller, outcome: &Outcome<'_>) {
    let name = bounded(outcome.capability, MAX_NAME);
    let error = outcome.error.map(|e| bounded(e, MAX_ERROR));
    let detail = json!({
        "method": bounded(outcome.method, MAX_METHOD),
        "path": recorded_path(outcome.path),
        "status": outcome.status,
        "request_bytes": outcome.request_bytes,
        "response_bytes": outcome.response_bytes,
        "duration_us": outcome.duration_us,
    });
    let entry = Entry::new(caller, OP_RESPONSE)
        .name(Some(name.as_str()))
        .detail(detail);
    let entry = match (&error, outcome.status) {
        (None, Some(_)) => entry,
        (Some(e), _) => entry.outcome(crate::audit::Outcome::Failed, Some(e.as_str())),
        (None, None) => entry.outcome(crate::audit::Outcome::Failed, Some("no response")),
    };
    // The decision was recorded before; a failure here changes nothing.
    let _ = audit.record(entry);
}

#[cfg(test)]
mod tests;
