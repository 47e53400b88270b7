//! `[[provider]]` and `[[capability]]`: the HTTP capabilities the broker
//! serves (docs/broker.md), in the same files and under the same checks as
//! rules.
//!
//! Providers are collected from every file first (a capability may use a
//! provider another file defines); at the end the shipped registry is
//! overridden by them one at a time, so an error names the provider that
//! caused it, and each capability is compiled against the result with
//! [`Capability::compile`] — the very checks the broker runs when it
//! compiles the same text again ([`Capabilities::broker_text`]). Users and
//! groups are resolved as rules' are; a secret that a `[[pin]]` ties to
//! commands may not be sent by any capability.
//!
//! Imports [`super::check`], [`super::error`] and [`super::schema`] only.

use std::path::{Path, PathBuf};

use aivault_broker::auth::Auth;
use aivault_broker::capability::{Capability, Principal, RawCapability, Scope};
use aivault_broker::registry::{Provider, Registry};
use serde::Serialize;

use super::check::{identities, valid_secret_name};
use super::error::{EntryError, PolicyError};
use super::schema::RawId;
use super::{RuleReport, SecretScope, Who};

/// A `[[provider]]` of the policy, as written and as decoded.
#[derive(Debug, Clone)]
pub struct ProviderEntry {
    pub provider: Provider,
    pub source: PathBuf,
    pub table: toml::Value,
    /// Whether it replaces a shipped provider of the same name.
    pub replaces: bool,
}

/// A validated `[[capability]]`.
#[derive(Debug, Clone)]
pub struct CapabilityEntry {
    pub cap: Capability,
    pub provider: Option<String>,
    /// The path patterns as the policy writes them.
    pub paths: Vec<String>,
    pub source: PathBuf,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    pub who_text: String,
    /// The table as the policy file spells it: what the broker compiles.
    pub table: toml::Value,
}

impl CapabilityEntry {
    pub fn name(&self) -> &str {
        &self.cap.name
    }

    /// Whether `who` may invoke it (its uid, primary or a supplementary group).
    pub fn allows(&self, who: &Who) -> bool {
        self.users.contains(&who.uid)
            || self.groups.contains(&who.gid)
            || who.groups.iter().any(|g| self.groups.contains(g))
    }

    pub fn scope(&self) -> SecretScope {
        match self.cap.scope {
            Scope::User => SecretScope::User,
            Scope::System => SecretScope::System,
        }
    }
}

/// Every provider and capability of a policy.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub providers: Vec<ProviderEntry>,
    pub capabilities: Vec<CapabilityEntry>,
}

/// A capability as `vaultctl policy show` lists it to a caller who may
/// invoke it (names only; never a value).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CapabilitySummary {
    pub capability: String,
    pub provider: Option<String>,
    /// Where requests go; the other hosts are redirect targets only.
    pub host: String,
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    pub secret: String,
    pub scope: SecretScope,
    /// `header authorization`, `query key`, `basic`, `path`, `aws-sigv4`.
    pub auth: String,
    pub per_minute: Option<u32>,
    pub per_caller_per_minute: Option<u32>,
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
}

/// The raw entries of one file, decoded later (`finish`).
#[derive(Debug, Default)]
pub struct Pending {
    providers: Vec<ProviderEntry>,
    capabilities: Vec<(PathBuf, String, toml::Value)>,
}

fn entry_err(path: &Path, entry: String, error: EntryError) -> PolicyError {
    PolicyError::Entry {
        path: path.into(),
        entry,
        error,
    }
}

/// A broker error without the `capability "x": ` its label already says.
fn unprefixed(name: &str, message: String) -> String {
    let prefix = format!("capability {name:?}: ");
    match message.strip_prefix(&prefix) {
        Some(rest) => rest.to_owned(),
        None => message,
    }
}

impl Pending {
    /// `[[provider]]` entries of one file: decoded now (a duplicate name
    /// across files is refused), applied to the registry in `finish`.
    pub fn add_providers(
        &mut self,
        path: &Path,
        values: &[toml::Value],
    ) -> Result<(), PolicyError> {
        for (i, v) in values.iter().enumerate() {
            let entry = super::schema::label("provider", "name", i, v);
            let provider: Provider =
                super::schema::decode(v).map_err(|e| entry_err(path, entry.clone(), e))?;
            if let Some(other) = self
                .providers
                .iter()
                .find(|p| p.provider.name == provider.name)
            {
                return Err(entry_err(
                    path,
                    entry,
                    EntryError::DuplicateProvider(other.source.clone()),
                ));
            }
            self.providers.push(ProviderEntry {
                provider,
                source: path.into(),
                table: v.clone(),
                replaces: false,
            });
        }
        Ok(())
    }

    pub fn add_capabilities(&mut self, path: &Path, values: &[toml::Value]) {
        for (i, v) in values.iter().enumerate() {
            let entry = super::schema::label("capability", "name", i, v);
            self.capabilities.push((path.into(), entry, v.clone()));
        }
    }

    /// The registry with every policy provider, then every capability
    /// compiled against it. `pinned` says which file's `[[pin]]` ties a
    /// secret (in a scope) to commands.
    pub fn finish(
        self,
        pinned: impl Fn(&str, SecretScope) -> Option<PathBuf>,
    ) -> Result<Capabilities, PolicyError> {
        let mut registry = Registry::shipped().map_err(|e| PolicyError::TopLevel {
            path: "the shipped provider registry".into(),
            message: e.to_string(),
        })?;
        let mut providers = self.providers;
        for p in &mut providers {
            p.replaces = registry.get(&p.provider.name).is_some();
            registry = registry
                .overridden_by(vec![p.provider.clone()])
                .map_err(|e| {
                    entry_err(
                        &p.source,
                        format!("provider {:?}", p.provider.name),
                        EntryError::Provider(e.to_string()),
                    )
                })?;
        }
        let mut capabilities: Vec<CapabilityEntry> = Vec::new();
        for (path, entry, v) in self.capabilities {
            let compiled = compile_one(&path, &v, &registry, &capabilities, &pinned)
                .map_err(|e| entry_err(&path, entry, e))?;
            capabilities.push(compiled);
        }
        Ok(Capabilities {
            providers,
            capabilities,
        })
    }
}

fn raw_id(p: &Principal) -> RawId {
    match p {
        Principal::Id(id) => RawId::Id(*id),
        Principal::Name(n) => RawId::Name(n.clone()),
    }
}

fn compile_one(
    path: &Path,
    v: &toml::Value,
    registry: &Registry,
    earlier: &[CapabilityEntry],
    pinned: &impl Fn(&str, SecretScope) -> Option<PathBuf>,
) -> Result<CapabilityEntry, EntryError> {
    let raw: RawCapability = super::schema::decode(v)?;
    if let Some(other) = earlier.iter().find(|c| c.cap.name == raw.name) {
        return Err(EntryError::DuplicateCapability(other.source.clone()));
    }
    if !valid_secret_name(&raw.secret) {
        return Err(EntryError::SecretName(raw.secret));
    }
    let users: Vec<RawId> = raw.users.iter().map(raw_id).collect();
    let groups: Vec<RawId> = raw.groups.iter().map(raw_id).collect();
    let (uids, gids, who_text) = identities(&users, &groups)?;
    let provider = raw.provider.clone();
    let paths = raw.paths.clone();
    let name = raw.name.clone();
    let cap = Capability::compile(raw, registry)
        .map_err(|e| EntryError::Capability(unprefixed(&name, e.to_string())))?;
    let entry = CapabilityEntry {
        cap,
        provider,
        paths,
        source: path.into(),
        users: uids,
        groups: gids,
        who_text,
        table: v.clone(),
    };
    // The capability's own secret, the further secrets its kind names and
    // an OAuth2 kind's refresh material alike.
    let auth = &entry.cap.auth;
    let names = std::iter::once(entry.cap.secret.as_str()).chain(
        auth.extra_secrets()
            .into_iter()
            .chain(auth.refresh_secrets())
            .map(|(_, n)| n),
    );
    for name in names {
        if !valid_secret_name(name) {
            return Err(EntryError::SecretName(name.to_owned()));
        }
        if let Some(pin_file) = pinned(name, entry.scope()) {
            return Err(EntryError::CapabilityPinned {
                secret: name.to_owned(),
                scope: entry.scope(),
                pin_file,
            });
        }
    }
    Ok(entry)
}

fn auth_text(a: &Auth) -> String {
    match a {
        Auth::Header { header, .. } => format!("header {header}"),
        Auth::Query { param } => format!("query {param}"),
        Auth::Basic { .. } => "basic".to_owned(),
        Auth::Path { .. } => "path".to_owned(),
        Auth::AwsSigv4 {
            service,
            region,
            access_key_id,
        } => format!(
            "aws-sigv4 {} {} with access key id {access_key_id}",
            service.as_deref().unwrap_or("?"),
            region.as_deref().unwrap_or("?")
        ),
        Auth::Oauth2 {
            grant, token_url, ..
        } => {
            let grant = match grant {
                aivault_broker::auth::OAuth2Grant::ClientCredentials => "client-credentials",
                aivault_broker::auth::OAuth2Grant::RefreshToken => "refresh-token",
            };
            format!("oauth2 {grant} at {token_url}")
        }
    }
}

impl Capabilities {
    pub fn get(&self, name: &str) -> Option<&CapabilityEntry> {
        self.capabilities.iter().find(|c| c.cap.name == name)
    }

    /// The capabilities `who` may invoke, in merge order.
    pub fn for_caller<'a>(&'a self, who: &'a Who) -> impl Iterator<Item = &'a CapabilityEntry> {
        self.capabilities.iter().filter(move |c| c.allows(who))
    }

    /// What the broker serving `who` compiles: every `[[provider]]` of the
    /// policy (so its registry, pinning included, is the daemon's) and the
    /// `[[capability]]` tables `who` may invoke; `None` if there is none.
    pub fn broker_text(&self, who: &Who) -> Option<String> {
        let caps: Vec<toml::Value> = self.for_caller(who).map(|c| c.table.clone()).collect();
        if caps.is_empty() {
            return None;
        }
        let mut doc = toml::Table::new();
        if !self.providers.is_empty() {
            doc.insert(
                "provider".into(),
                toml::Value::Array(self.providers.iter().map(|p| p.table.clone()).collect()),
            );
        }
        doc.insert("capability".into(), toml::Value::Array(caps));
        toml::to_string(&doc).ok()
    }

    pub fn summaries_for(&self, who: &Who) -> Vec<CapabilitySummary> {
        self.for_caller(who)
            .map(|c| CapabilitySummary {
                capability: c.cap.name.clone(),
                provider: c.provider.clone(),
                host: c.cap.hosts[0].clone(),
                hosts: c.cap.hosts.clone(),
                methods: c.cap.methods.clone(),
                paths: c.paths.clone(),
                secret: c.cap.secret.clone(),
                scope: c.scope(),
                auth: auth_text(&c.cap.auth),
                per_minute: c.cap.rate.and_then(|r| r.per_minute),
                per_caller_per_minute: c.cap.rate.and_then(|r| r.per_caller_per_minute),
                max_request_bytes: c.cap.max_request_bytes,
                max_response_bytes: c.cap.max_response_bytes,
            })
            .collect()
    }

    /// One report per provider and capability, for `policy check`.
    pub fn explain(&self) -> Vec<RuleReport> {
        let mut out = Vec::new();
        for p in &self.providers {
            let pins = if p.provider.secrets.is_empty() {
                "pins no secret".to_owned()
            } else {
                format!("pins {} to these hosts", p.provider.secrets.join(", "))
            };
            out.push(RuleReport {
                rule: format!("provider {}", p.provider.name),
                source: p.source.display().to_string(),
                effect: format!(
                    "{} provider {}: hosts {}, auth {}; {pins}",
                    if p.replaces {
                        "replaces the shipped"
                    } else {
                        "adds"
                    },
                    p.provider.name,
                    p.provider.hosts.join(", "),
                    auth_text(&p.provider.auth),
                ),
                warnings: Vec::new(),
            });
        }
        for c in &self.capabilities {
            out.push(capability_report(c));
        }
        out
    }
}

fn capability_report(c: &CapabilityEntry) -> RuleReport {
    let cap = &c.cap;
    let secret = match c.scope() {
        SecretScope::User => format!("the caller's own secret {}", cap.secret),
        SecretScope::System => format!("system secret {}", cap.secret),
    };
    let mut effect = format!(
        "{} may call {} {} on https://{} through the broker, with {secret} sent as {}",
        c.who_text,
        cap.methods.join(", "),
        c.paths.join(", "),
        cap.hosts[0],
        auth_text(&cap.auth),
    );
    if cap.hosts.len() > 1 {
        effect.push_str(&format!(
            "; redirects may go to {}",
            cap.hosts[1..].join(", ")
        ));
    }
    let rate = cap.rate.unwrap_or(aivault_broker::capability::Rate {
        per_minute: None,
        per_caller_per_minute: None,
    });
    match (rate.per_minute, rate.per_caller_per_minute) {
        (None, None) => effect.push_str("; no rate limit"),
        (a, b) => {
            let mut parts = Vec::new();
            if let Some(n) = a {
                parts.push(format!("{n} requests per minute in all"));
            }
            if let Some(n) = b {
                parts.push(format!("{n} per caller"));
            }
            effect.push_str(&format!("; at most {}", parts.join(" and ")));
        }
    }
    effect.push_str(&format!(
        "; request bodies up to {} bytes, responses up to {} bytes",
        cap.max_request_bytes, cap.max_response_bytes
    ));
    let mut warnings = Vec::new();
    if c.scope() == SecretScope::System {
        warnings.push(format!(
            "every caller listed uses the same system secret {}; a [[grant]] is not needed for a capability",
            cap.secret
        ));
    }
    RuleReport {
        rule: format!("capability {}", cap.name),
        source: c.source.display().to_string(),
        effect,
        warnings,
    }
}
