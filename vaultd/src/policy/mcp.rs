//! `[[mcp_server]]`: the upstream MCP servers of the gateway
//! (docs/mcp-gateway.md), in the same files and under the same checks as
//! rules.
//!
//! Each table is decoded and checked by the gateway's own
//! [`RawServer::check`] — the very checks the gateway runs when it compiles
//! the same text again ([`McpServers::gateway_text`]) — and then by the
//! daemon's: users and groups resolved as rules' are, secret names as the
//! store spells them, variable names through [`super::env`] (the gateway's
//! own check is looser), the command a plain absolute path (it is resolved,
//! root-owned and hashed, when the upstream starts), and a secret a
//! `[[pin]]` ties to commands only given to one of those commands.
//!
//! Imports [`super::check`], [`super::error`], [`super::schema`] and the
//! capabilities' entries ([`super::capability`], for url servers) only.

use std::path::{Path, PathBuf};

use aivault_gateway::config::{self as gw, RawServer, ServerPolicy, Transport};

use super::capability::CapabilityEntry;
use super::check::{identities, is_normal_absolute, valid_secret_name};
use super::env::check_env_name;
use super::error::{EntryError, PolicyError};
use super::schema::RawId;
use super::{RuleReport, SecretScope, Who};

/// A validated `[[mcp_server]]`.
#[derive(Debug, Clone)]
pub struct McpServerEntry {
    pub server: ServerPolicy,
    pub source: PathBuf,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    pub who_text: String,
    /// The table as the policy file spells it: what the gateway compiles.
    pub table: toml::Value,
    /// What `policy check` warns of beyond the server's own text (a url
    /// server's capability that does not admit all of its users).
    pub warnings: Vec<String>,
}

impl McpServerEntry {
    pub fn name(&self) -> &str {
        &self.server.name
    }

    /// Whether `who` may use it (its uid, primary or a supplementary group).
    pub fn allows(&self, who: &Who) -> bool {
        self.users.contains(&who.uid)
            || self.groups.contains(&who.gid)
            || who.groups.iter().any(|g| self.groups.contains(g))
    }

    /// The stdio command, if it is one (a url server has none).
    pub fn command(&self) -> Option<(&Path, &[String])> {
        match &self.server.transport {
            Transport::Stdio { command, args } => Some((command, args)),
            Transport::Http { .. } => None,
        }
    }
}

/// Every `[[mcp_server]]` of a policy, in merge order.
#[derive(Debug, Clone, Default)]
pub struct McpServers {
    pub servers: Vec<McpServerEntry>,
}

fn scope_of(s: gw::Scope) -> SecretScope {
    match s {
        gw::Scope::User => SecretScope::User,
        gw::Scope::System => SecretScope::System,
    }
}

fn raw_id(id: &gw::Id) -> RawId {
    match id {
        gw::Id::Id(n) => RawId::Id(*n),
        gw::Id::Name(n) => RawId::Name(n.clone()),
    }
}

/// A gateway error without the `mcp_server "x": ` its label already says.
fn unprefixed(name: &str, message: String) -> String {
    let prefix = format!("mcp_server {name:?}: ");
    match message.strip_prefix(&prefix) {
        Some(rest) => rest.to_owned(),
        None => message,
    }
}

impl McpServers {
    /// Decodes and checks the `[[mcp_server]]` tables of one file; a name
    /// another file (or this one) already declared is refused.
    pub fn add(&mut self, path: &Path, values: &[toml::Value]) -> Result<(), PolicyError> {
        for (i, v) in values.iter().enumerate() {
            let entry = super::schema::label("mcp_server", "name", i, v);
            let compiled = self
                .compile_one(path, v)
                .map_err(|error| PolicyError::Entry {
                    path: path.into(),
                    entry,
                    error,
                })?;
            self.servers.push(compiled);
        }
        Ok(())
    }

    fn compile_one(&self, path: &Path, v: &toml::Value) -> Result<McpServerEntry, EntryError> {
        let raw = RawServer::decode(v.clone()).map_err(EntryError::McpServer)?;
        if let Some(other) = self.servers.iter().find(|s| s.server.name == raw.name) {
            return Err(EntryError::DuplicateMcpServer(other.source.clone()));
        }
        let server = raw
            .check()
            .map_err(|e| EntryError::McpServer(unprefixed(&raw.name, e)))?;
        if let Transport::Stdio { command, .. } = &server.transport {
            if !is_normal_absolute(command) {
                return Err(EntryError::UnnormalCommand(command.clone()));
            }
        }
        for s in &server.secrets {
            if !valid_secret_name(&s.secret) {
                return Err(EntryError::SecretName(s.secret.clone()));
            }
            check_env_name(&s.env).map_err(EntryError::EnvName)?;
        }
        let users: Vec<RawId> = raw.users.iter().map(raw_id).collect();
        let groups: Vec<RawId> = raw.groups.iter().map(raw_id).collect();
        let (users, groups, who_text) = identities(&users, &groups)?;
        Ok(McpServerEntry {
            server,
            source: path.into(),
            users,
            groups,
            who_text,
            table: v.clone(),
            warnings: Vec::new(),
        })
    }

    /// Cross-checks with the pins: a secret a `[[pin]]` ties to commands
    /// goes only to an upstream whose command is one of them. `pinned`
    /// gives the pin's file and commands of a secret in a scope.
    pub fn check_pins<'a>(
        &self,
        pinned: impl Fn(&str, SecretScope) -> Option<(&'a Path, &'a [PathBuf])>,
    ) -> Result<(), PolicyError> {
        for s in &self.servers {
            for secret in &s.server.secrets {
                let scope = scope_of(secret.scope);
                let Some((pin_file, commands)) = pinned(&secret.secret, scope) else {
                    continue;
                };
                let allowed = s
                    .command()
                    .is_some_and(|(c, _)| commands.iter().any(|p| p == c));
                if !allowed {
                    return Err(PolicyError::Entry {
                        path: s.source.clone(),
                        entry: format!("mcp_server {:?}", s.name()),
                        error: EntryError::PinViolated {
                            secret: secret.secret.clone(),
                            scope,
                            pin_file: pin_file.into(),
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// Cross-checks with the broker's capabilities: a url server's
    /// capability exists, pins the url's host as the one requests go to,
    /// allows `POST` and the url's path. Whether it admits the caller is
    /// the broker's to decide at each request.
    pub fn check_capabilities(&mut self, caps: &[CapabilityEntry]) -> Result<(), PolicyError> {
        for s in &mut self.servers {
            let Transport::Http {
                url,
                capability,
                host,
                path,
            } = &s.server.transport
            else {
                continue;
            };
            let fail = |why: String| PolicyError::Entry {
                path: s.source.clone(),
                entry: format!("mcp_server {:?}", s.name()),
                error: EntryError::McpServer(why),
            };
            let cap = caps
                .iter()
                .find(|c| c.name() == capability)
                .ok_or_else(|| fail(format!("capability {capability:?} is not defined")))?;
            if cap.cap.hosts.first() != Some(host) {
                return Err(fail(format!(
                    "url {url:?}: capability {capability:?} sends its requests to {}, not {host}",
                    cap.cap.hosts.first().map_or("no host", String::as_str)
                )));
            }
            if !cap.cap.methods.iter().any(|m| m == "POST") {
                return Err(fail(format!(
                    "capability {capability:?} does not allow POST, which MCP over HTTP sends"
                )));
            }
            let allowed = aivault_broker::path::check(path)
                .is_ok_and(|p| cap.cap.paths.iter().any(|pat| pat.matches(&p)));
            if !allowed {
                return Err(fail(format!(
                    "url {url:?}: capability {capability:?} does not allow the path {path}"
                )));
            }
            // Users the capability lists by group may still be admitted;
            // only what is certain is said.
            let mut outside: Vec<String> = Vec::new();
            if cap.groups.is_empty() {
                outside.extend(
                    s.users
                        .iter()
                        .filter(|u| !cap.users.contains(u))
                        .map(|u| format!("uid {u}")),
                );
            }
            outside.extend(
                s.groups
                    .iter()
                    .filter(|g| !cap.groups.contains(g))
                    .map(|g| format!("gid {g}")),
            );
            if !outside.is_empty() {
                s.warnings.push(format!(
                    "capability {capability} does not admit {}: the broker refuses their \
                     requests, and they get no tools from this server",
                    outside.join(", ")
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&McpServerEntry> {
        self.servers.iter().find(|s| s.name() == name)
    }

    /// The servers `who` may use, in merge order.
    pub fn for_caller<'a>(&'a self, who: &'a Who) -> impl Iterator<Item = &'a McpServerEntry> {
        self.servers.iter().filter(move |s| s.allows(who))
    }

    /// What the gateway serving `who` compiles: the `[[mcp_server]]`
    /// tables `who` may use; `None` if there is none.
    pub fn gateway_text(&self, who: &Who) -> Option<String> {
        let tables: Vec<toml::Value> = self.for_caller(who).map(|s| s.table.clone()).collect();
        if tables.is_empty() {
            return None;
        }
        let mut doc = toml::Table::new();
        doc.insert("mcp_server".into(), toml::Value::Array(tables));
        toml::to_string(&doc).ok()
    }

    /// One report per server, for `policy check`.
    pub fn explain(&self) -> Vec<RuleReport> {
        self.servers.iter().map(report).collect()
    }
}

fn report(s: &McpServerEntry) -> RuleReport {
    let what = match &s.server.transport {
        Transport::Stdio { command, .. } => {
            format!("the stdio MCP server {}", command.display())
        }
        Transport::Http {
            url, capability, ..
        } => format!("the MCP server at {url} (through capability {capability})"),
    };
    let mut effect = format!(
        "{} may use {what} through the gateway as {}__*",
        s.who_text,
        s.name()
    );
    if !s.server.secrets.is_empty() {
        let given: Vec<String> = s
            .server
            .secrets
            .iter()
            .map(|g| format!("{} secret {} as {}", scope_of(g.scope), g.secret, g.env))
            .collect();
        effect.push_str(&format!(", which is given {}", given.join(", ")));
    }
    let mut warnings = s.warnings.clone();
    if !s.server.tools.require_pin && s.server.tools.pins.is_empty() {
        warnings.push(
            "no tool is pinned: a changed tool definition is not noticed (vaultctl mcp-gateway pin)"
                .into(),
        );
    }
    RuleReport {
        rule: format!("mcp_server {}", s.name()),
        source: s.source.display().to_string(),
        effect,
        warnings,
    }
}
