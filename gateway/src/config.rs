//! `[[mcp_server]]`: the upstream MCP servers root-owned policy declares,
//! as serde reads them, and the checks made when the policy is loaded.
//!
//! Every table refuses unknown keys. [`RawServer::check`] turns one entry
//! into a [`ServerPolicy`] or says what is wrong with it, naming the entry;
//! [`check_servers`] also refuses two servers of the same name. All per-tool
//! keys (`rename`, `description`, `pins`, `arguments`) name the tool as the
//! upstream calls it; `allow`/`deny` globs match that name too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::args::{ArgConstraints, RawSchema};
use crate::detect::{Action, DetectorSet, RawFilters};
use crate::glob::{compile_all, Glob};
use crate::naming::{valid_tool_name, NameFilter, SEPARATOR};

/// Default and smallest accepted `limits.max_message` (bytes).
pub const DEFAULT_MAX_MESSAGE: u64 = 8 << 20;
pub const MIN_MAX_MESSAGE: u64 = 64 << 10;
/// Largest accepted `limits.max_message`: a message is held whole in memory.
pub const MAX_MAX_MESSAGE: u64 = 256 << 20;
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest server name: `server__tool` must fit in 64 characters, the
/// limit common MCP hosts put on tool names.
pub const MAX_SERVER_NAME: usize = 32;

/// A whole gateway policy document (`[[mcp_server]]` entries only).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayFile {
    #[serde(default)]
    pub mcp_server: Vec<toml::Value>,
}

/// A user or group: a name from the account database, or a numeric id.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Id {
    Id(u32),
    Name(String),
}

/// A size as written: bytes, or a string such as `"4MiB"`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Quantity {
    Int(u64),
    Text(String),
}

/// `[[mcp_server]]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub name: String,
    pub command: Option<PathBuf>,
    #[serde(default)]
    pub args: Vec<String>,
    pub url: Option<String>,
    /// The broker capability a url server's requests go through.
    pub capability: Option<String>,
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    pub sandbox: Option<RawSandbox>,
    #[serde(default)]
    pub users: Vec<Id>,
    #[serde(default)]
    pub groups: Vec<Id>,
    #[serde(default)]
    pub tools: RawTools,
    #[serde(default)]
    pub prompts: RawNames,
    #[serde(default)]
    pub resources: RawNames,
    #[serde(default)]
    pub filters: RawFilters,
    #[serde(default)]
    pub limits: RawLimits,
}

/// One entry of `secrets`: which vault secret, under which variable.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub name: String,
    /// `"system"` (default: the server is the admin's) or `"user"` (the
    /// calling user's own secret of that name).
    #[serde(default)]
    pub scope: Scope,
    /// Defaults to the secret's name.
    pub env: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    System,
    User,
}

/// `[mcp_server.sandbox]`: the keys of a rule's sandbox that make sense for
/// a long-lived server (no wall-clock timeout, no output cap).
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    #[serde(default)]
    pub read: Vec<PathBuf>,
    #[serde(default)]
    pub write: Vec<PathBuf>,
    #[serde(default)]
    pub tcp_connect: Vec<u16>,
    #[serde(default)]
    pub tcp_bind: Vec<u16>,
    pub memory: Option<Quantity>,
    pub processes: Option<u64>,
    pub file_size: Option<Quantity>,
    #[serde(default)]
    pub require_full_landlock: bool,
}

/// `[mcp_server.tools]`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTools {
    /// Omitted: no tool is visible (default deny).
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub description: BTreeMap<String, String>,
    /// Upstream tool name → hex SHA-256 of its definition (`pin.rs`).
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
    /// Hide every tool that has no pin.
    #[serde(default)]
    pub require_pin: bool,
    /// Upstream tool name → constraints on its arguments (`args.rs`).
    #[serde(default)]
    pub arguments: BTreeMap<String, RawSchema>,
}

/// `[mcp_server.prompts]` and `[mcp_server.resources]`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawNames {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `[mcp_server.limits]`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_message: Option<Quantity>,
    pub call_timeout: Option<Quantity>,
    pub idle_timeout: Option<Quantity>,
}

/// How the gateway reaches the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A jailed process speaking JSON-RPC over its stdio.
    Stdio { command: PathBuf, args: Vec<String> },
    /// Streamable HTTP, reached through the broker's guards: each request
    /// goes to the broker as `POST /<capability><path>`.
    Http {
        url: String,
        /// The broker capability the requests go through.
        capability: String,
        /// The url's host (lower-cased): the capability must pin it.
        host: String,
        /// The url's path and query (`/mcp`, at least `/`).
        path: String,
    },
}

/// Splits `https://host/path?query` into its host and its path (with the
/// query); refuses what the broker could not reach as written: another
/// scheme, user information, a port, a fragment, no host.
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("url {url:?} must be https://"))?;
    if url.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "url {url:?} holds whitespace or a control character"
        ));
    }
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(cut);
    if host.is_empty() {
        return Err(format!("url {url:?} has no host"));
    }
    if host.contains('@') {
        return Err(format!(
            "url {url:?} holds user information; the broker adds the credential"
        ));
    }
    if host.contains(':') {
        return Err(format!(
            "url {url:?} names a port; the broker reaches the capability's host on 443"
        ));
    }
    let host_ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !host_ok {
        return Err(format!("url {url:?}: {host:?} is not a host name"));
    }
    if tail.contains('#') {
        return Err(format!("url {url:?} has a fragment"));
    }
    let path = match tail {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    Ok((host.to_ascii_lowercase(), path))
}

/// A broker capability name as the broker spells them: 1-64 of `a-z`,
/// `0-9`, `-`, `_`, `/`.
fn capability_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "capability {name:?} is not a capability name (1-64 of a-z, 0-9, '-', '_', '/')"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    pub secret: String,
    pub scope: Scope,
    pub env: String,
}

/// The checked sandbox; the daemon maps it onto the runner's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub tcp_connect: Vec<u16>,
    pub tcp_bind: Vec<u16>,
    /// Bytes, `RLIMIT_AS`; `None`: the rule default.
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub file_size: Option<u64>,
    pub require_full_landlock: bool,
}

/// Everything policy says about a server's tools.
#[derive(Debug, Clone)]
pub struct ToolPolicy {
    pub filter: NameFilter,
    pub rename: BTreeMap<String, String>,
    pub description: BTreeMap<String, String>,
    pub pins: BTreeMap<String, String>,
    pub require_pin: bool,
    pub arguments: BTreeMap<String, ArgConstraints>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_message: u64,
    pub call_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One checked `[[mcp_server]]`.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    pub name: String,
    pub transport: Transport,
    pub secrets: Vec<SecretEnv>,
    pub sandbox: Sandbox,
    pub users: Vec<Id>,
    pub groups: Vec<Id>,
    pub tools: ToolPolicy,
    pub prompts: NameFilter,
    pub resources: NameFilter,
    pub filters: DetectorSet,
    pub limits: Limits,
}

/// Decodes and checks every `[[mcp_server]]` of a TOML document.
pub fn parse_servers(text: &str) -> Result<Vec<ServerPolicy>, String> {
    let file: RawGatewayFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut raws = Vec::new();
    for (i, value) in file.mcp_server.into_iter().enumerate() {
        raws.push(RawServer::decode(value).map_err(|e| format!("mcp_server #{}: {e}", i + 1))?);
    }
    check_servers(&raws)
}

/// Checks each entry and that no two servers share a name.
pub fn check_servers(raws: &[RawServer]) -> Result<Vec<ServerPolicy>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for raw in raws {
        if !seen.insert(raw.name.as_str()) {
            return Err(format!("mcp_server {:?} is declared twice", raw.name));
        }
        out.push(raw.check()?);
    }
    Ok(out)
}

fn server_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let first = name.bytes().next();
    if name.is_empty()
        || name.len() > MAX_SERVER_NAME
        || !ok_chars
        || !first.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        || name.ends_with('_')
        || name.contains(SEPARATOR)
    {
        return Err(format!(
            "name {name:?} must be 1-{MAX_SERVER_NAME} of [a-z0-9_-], start with a letter or \
             digit, not end with _ and not contain {SEPARATOR:?} (tools are named server{SEPARATOR}tool)"
        ));
    }
    Ok(())
}

fn plain_path(key: &str, p: &Path) -> Result<(), String> {
    let shown = p.display();
    if !p.is_absolute() {
        return Err(format!("{key} {shown} is not absolute"));
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!("{key} {shown} contains . or .."));
    }
    Ok(())
}

fn sandbox_path(key: &str, p: &Path) -> Result<(), String> {
    plain_path(key, p)?;
    if p == Path::new("/") || p.starts_with("/proc") {
        return Err(format!(
            "sandbox {key} path {} would expose /proc/<pid>/environ, the server's own secrets",
            p.display()
        ));
    }
    Ok(())
}

/// Syntax and a short list of variables that change how a program loads or
/// runs; the daemon applies the rules' full check on top.
fn env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "environment variable name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    let upper = name.to_ascii_uppercase();
    let exact = [
        "PATH",
        "HOME",
        "IFS",
        "ENV",
        "BASH_ENV",
        "NODE_OPTIONS",
        "TMPDIR",
    ];
    let prefix = ["LD_", "PYTHON", "PERL", "RUBY", "NODE_", "GCONV", "GLIBC_"];
    if exact.contains(&upper.as_str()) || prefix.iter().any(|p| upper.starts_with(p)) {
        return Err(format!(
            "environment variable {name} is never accepted for a secret"
        ));
    }
    Ok(())
}

fn size(key: &str, q: &Quantity) -> Result<u64, String> {
    let n = match q {
        Quantity::Int(n) => *n,
        Quantity::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: u64 = num
                .parse()
                .map_err(|_| format!("{key}: {t:?} is not a size such as \"4MiB\""))?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "K" => 1 << 10,
                "MiB" | "M" => 1 << 20,
                "GiB" | "G" => 1 << 30,
                _ => return Err(format!("{key}: unknown unit in {t:?} (B, KiB, MiB, GiB)")),
            };
            num.checked_mul(mult)
                .ok_or_else(|| format!("{key}: {t:?} is too large"))?
        }
    };
    if n == 0 {
        return Err(format!("{key} must be greater than zero"));
    }
    Ok(n)
}

fn duration(key: &str, q: &Option<Quantity>, default: Duration) -> Result<Duration, String> {
    let secs = match q {
        None => return Ok(default),
        Some(Quantity::Int(n)) => *n,
        Some(Quantity::Text(t)) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: u64 = num
                .parse()
                .map_err(|_| format!("{key}: {t:?} is not a duration such as \"30s\""))?;
            let mult = match unit {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                _ => return Err(format!("{key}: unknown unit in {t:?} (s, m, h)")),
            };
            num.checked_mul(mult)
                .ok_or_else(|| format!("{key}: {t:?} is too large"))?
        }
    };
    if secs == 0 {
        return Err(format!("{key} must be greater than zero"));
    }
    Ok(Duration::from_secs(secs))
}

fn pin_hash(tool: &str, hash: &str) -> Result<(), String> {
    if hash.len() != 64
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "pin for tool {tool:?} must be 64 lowercase hex digits (vaultctl mcp-gateway pin prints them)"
        ));
    }
    Ok(())
}

impl RawServer {
    /// Decodes one `[[mcp_server]]` table.
    pub fn decode(value: toml::Value) -> Result<RawServer, String> {
        value.try_into().map_err(|e: toml::de::Error| e.to_string())
    }

    /// The load-time checks; the error names the server.
    pub fn check(&self) -> Result<ServerPolicy, String> {
        self.check_inner()
            .map_err(|e| format!("mcp_server {:?}: {e}", self.name))
    }

    fn check_inner(&self) -> Result<ServerPolicy, String> {
        server_name(&self.name)?;
        let transport = match (&self.command, &self.url) {
            (Some(command), None) => {
                plain_path("command", command)?;
                if self.capability.is_some() {
                    return Err("capability is for a url server; a command is started, not \
                                reached through the broker"
                        .into());
                }
                if self.args.iter().any(|a| a.contains('\0')) {
                    return Err("an argument contains a NUL byte".into());
                }
                Transport::Stdio {
                    command: command.clone(),
                    args: self.args.clone(),
                }
            }
            (None, Some(url)) => {
                let (host, path) = split_url(url)?;
                if !self.args.is_empty() || !self.secrets.is_empty() || self.sandbox.is_some() {
                    return Err(
                        "args, secrets and sandbox are for a command; a url server is reached \
                         through the broker"
                            .into(),
                    );
                }
                let capability = self.capability.clone().ok_or_else(|| {
                    format!(
                        "url {url:?} needs capability = \"...\": the broker capability its \
                         requests go through (which holds the credential)"
                    )
                })?;
                capability_name(&capability)?;
                Transport::Http {
                    url: url.clone(),
                    capability,
                    host,
                    path,
                }
            }
            (Some(_), Some(_)) => return Err("give command or url, not both".into()),
            (None, None) => return Err("give command (a stdio server) or url".into()),
        };

        let mut envs = BTreeSet::new();
        let mut secrets = Vec::new();
        for s in &self.secrets {
            if s.name.is_empty() {
                return Err("a secret has an empty name".into());
            }
            let env = s.env.clone().unwrap_or_else(|| s.name.clone());
            env_name(&env)?;
            if !envs.insert(env.clone()) {
                return Err(format!("two secrets are given as {env}"));
            }
            secrets.push(SecretEnv {
                secret: s.name.clone(),
                scope: s.scope,
                env,
            });
        }

        let raw_sb = self.sandbox.clone().unwrap_or_default();
        for p in &raw_sb.read {
            sandbox_path("read", p)?;
        }
        for p in &raw_sb.write {
            sandbox_path("write", p)?;
        }
        let sandbox = Sandbox {
            read: raw_sb.read.clone(),
            write: raw_sb.write.clone(),
            tcp_connect: raw_sb.tcp_connect.clone(),
            tcp_bind: raw_sb.tcp_bind.clone(),
            memory: raw_sb
                .memory
                .as_ref()
                .map(|q| size("memory", q))
                .transpose()?,
            processes: match raw_sb.processes {
                Some(0) => return Err("processes must be greater than zero".into()),
                p => p,
            },
            file_size: raw_sb
                .file_size
                .as_ref()
                .map(|q| size("file_size", q))
                .transpose()?,
            require_full_landlock: raw_sb.require_full_landlock,
        };

        let tools = self.check_tools()?;
        let names = |key: &str, raw: &RawNames| -> Result<NameFilter, String> {
            Ok(NameFilter::new(
                compile_all(&raw.allow).map_err(|e| format!("{key}.allow: {e}"))?,
                compile_all(&raw.deny).map_err(|e| format!("{key}.deny: {e}"))?,
            ))
        };

        let max_message = match &self.limits.max_message {
            None => DEFAULT_MAX_MESSAGE,
            Some(q) => size("limits.max_message", q)?,
        };
        if !(MIN_MAX_MESSAGE..=MAX_MAX_MESSAGE).contains(&max_message) {
            return Err(format!(
                "limits.max_message must be between {MIN_MAX_MESSAGE} and {MAX_MAX_MESSAGE} bytes"
            ));
        }

        Ok(ServerPolicy {
            name: self.name.clone(),
            transport,
            secrets,
            sandbox,
            users: self.users.clone(),
            groups: self.groups.clone(),
            tools,
            prompts: names("prompts", &self.prompts)?,
            resources: names("resources", &self.resources)?,
            filters: self.filters.check().map_err(|e| format!("filters: {e}"))?,
            limits: Limits {
                max_message,
                call_timeout: duration(
                    "limits.call_timeout",
                    &self.limits.call_timeout,
                    DEFAULT_CALL_TIMEOUT,
                )?,
                idle_timeout: duration(
                    "limits.idle_timeout",
                    &self.limits.idle_timeout,
                    DEFAULT_IDLE_TIMEOUT,
                )?,
            },
        })
    }

    fn check_tools(&self) -> Result<ToolPolicy, String> {
        let t = &self.tools;
        let allow: Vec<Glob> = compile_all(&t.allow).map_err(|e| format!("tools.allow: {e}"))?;
        let deny: Vec<Glob> = compile_all(&t.deny).map_err(|e| format!("tools.deny: {e}"))?;

        // Every tool the policy names, under its upstream name.
        let mut named: BTreeSet<&str> = BTreeSet::new();
        named.extend(t.rename.keys().map(String::as_str));
        named.extend(t.description.keys().map(String::as_str));
        named.extend(t.pins.keys().map(String::as_str));
        named.extend(t.arguments.keys().map(String::as_str));
        for tool in &named {
            if tool.is_empty() {
                return Err("a tool key is empty".into());
            }
        }

        let mut targets = BTreeSet::new();
        for (from, to) in &t.rename {
            let visible = format!("{}{SEPARATOR}{to}", self.name);
            if !valid_tool_name(&visible) {
                return Err(format!(
                    "tools.rename {from:?} -> {to:?}: {visible:?} is not a valid tool name \
                     ([A-Za-z0-9_-], at most 64 characters)"
                ));
            }
            if !targets.insert(to.as_str()) {
                return Err(format!("tools.rename: two tools are renamed to {to:?}"));
            }
            if to != from && named.contains(to.as_str()) {
                return Err(format!(
                    "tools.rename {from:?} -> {to:?}: {to:?} is another tool this server's \
                     policy names"
                ));
            }
        }
        for (tool, hash) in &t.pins {
            pin_hash(tool, hash)?;
        }
        let mut arguments = BTreeMap::new();
        for (tool, schema) in &t.arguments {
            let c = ArgConstraints::compile(schema)
                .map_err(|e| format!("tools.arguments.{tool}: {e}"))?;
            arguments.insert(tool.clone(), c);
        }
        Ok(ToolPolicy {
            filter: NameFilter::new(allow, deny),
            rename: t.rename.clone(),
            description: t.description.clone(),
            pins: t.pins.clone(),
            require_pin: t.require_pin,
            arguments,
        })
    }
}

/// Who is asking, as the daemon knows them from the socket's peer
/// credentials and the account database.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub uid: u32,
    pub user: Option<&'a str>,
    /// Primary and supplementary groups.
    pub gids: &'a [u32],
    pub groups: &'a [&'a str],
}

impl ServerPolicy {
    /// The action configured for a detector, if any (for docs and tests).
    pub fn detector_action(&self, detector: &str) -> Option<Action> {
        self.filters.action_of(detector)
    }

    /// Whether `caller` may use this server: listed in `users` by name or
    /// uid, or in one of `groups`. Neither list: nobody.
    pub fn admits(&self, caller: &Caller<'_>) -> bool {
        let user = self.users.iter().any(|u| match u {
            Id::Id(id) => *id == caller.uid,
            Id::Name(n) => caller.user == Some(n.as_str()),
        });
        let group = self.groups.iter().any(|g| match g {
            Id::Id(id) => caller.gids.contains(id),
            Id::Name(n) => caller.groups.contains(&n.as_str()),
        });
        user || group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[mcp_server]]
name = "fs"
command = "/usr/bin/mcp-fs"
args = ["/srv/docs"]
users = ["alice", 1001]
secrets = [{ name = "API_TOKEN" }, { name = "gh", scope = "user", env = "GH_TOKEN" }]
[mcp_server.sandbox]
read = ["/srv/docs"]
tcp_connect = [443]
memory = "512MiB"
[mcp_server.tools]
allow = ["read_*", "list_*", "search"]
deny = ["*delete*"]
rename = { search = "find" }
description = { read_file = "Read a file under /srv/docs." }
pins = { read_file = "0000000000000000000000000000000000000000000000000000000000000000" }
[mcp_server.tools.arguments.read_file]
type = "object"
required = ["path"]
additionalProperties = false
properties = { path = { type = "string", paths = ["/srv/docs/**"] } }
[mcp_server.filters]
credentials = "block"
pii = "redact"
[mcp_server.limits]
max_message = "4MiB"
"#;

    fn with(extra_server: &str) -> Result<Vec<ServerPolicy>, String> {
        parse_servers(&format!("[[mcp_server]]\n{extra_server}"))
    }

    #[test]
    fn a_full_entry_loads() {
        let s = parse_servers(BASE).expect("loads");
        let s = &s[0];
        assert_eq!(
            s.transport,
            Transport::Stdio {
                command: "/usr/bin/mcp-fs".into(),
                args: vec!["/srv/docs".into()]
            }
        );
        assert_eq!(s.secrets[1].env, "GH_TOKEN");
        assert_eq!(s.secrets[1].scope, Scope::User);
        assert_eq!(s.secrets[0].env, "API_TOKEN");
        assert_eq!(s.sandbox.memory, Some(512 << 20));
        assert_eq!(s.limits.max_message, 4 << 20);
        assert_eq!(s.users, vec![Id::Name("alice".into()), Id::Id(1001)]);
        assert_eq!(s.detector_action("aws_access_key_id"), Some(Action::Block));
        assert_eq!(s.detector_action("email"), Some(Action::Redact));
        assert!(s.tools.arguments.contains_key("read_file"));
    }

    #[test]
    fn only_listed_users_and_groups_are_admitted() {
        let s = with("name = \"a\"\ncommand = \"/bin/x\"\nusers = [\"alice\", 1001]\ngroups = [\"dev\", 2000]\n")
            .expect("loads")
            .remove(0);
        let who = |uid, user, gids: &'static [u32], groups: &'static [&'static str]| Caller {
            uid,
            user,
            gids,
            groups,
        };
        assert!(s.admits(&who(1000, Some("alice"), &[], &[])));
        assert!(s.admits(&who(1001, None, &[], &[])));
        assert!(s.admits(&who(1, Some("bob"), &[2000], &[])));
        assert!(s.admits(&who(1, Some("bob"), &[], &["dev"])));
        assert!(!s.admits(&who(1, Some("bob"), &[3], &["ops"])));
        let nobody = with("name = \"a\"\ncommand = \"/bin/x\"\n")
            .expect("loads")
            .remove(0);
        assert!(!nobody.admits(&who(0, Some("root"), &[0], &["root"])));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = with("name = \"x\"\ncommand = \"/bin/x\"\ncomand = 1\n").expect_err("refused");
        assert!(e.contains("comand"), "{e}");
        let e = with("name = \"x\"\ncommand = \"/bin/x\"\n[mcp_server.tools]\nalow = []\n")
            .expect_err("refused");
        assert!(e.contains("alow"), "{e}");
    }

    #[test]
    fn server_names_must_namespace_cleanly() {
        for bad in ["a__b", "", "A", "x_", "-x", "a.b", &"a".repeat(33)] {
            let e = with(&format!("name = {bad:?}\ncommand = \"/bin/x\"\n")).expect_err(bad);
            assert!(e.contains("must be"), "{bad}: {e}");
        }
        assert!(with("name = \"my-server_2\"\ncommand = \"/bin/x\"\n").is_ok());
    }

    #[test]
    fn duplicate_servers_are_refused() {
        let two = "[[mcp_server]]\nname = \"a\"\ncommand = \"/bin/x\"\n".repeat(2);
        assert!(parse_servers(&two).expect_err("refused").contains("twice"));
    }

    #[test]
    fn transport_is_command_xor_https_url() {
        assert!(with("name = \"a\"\n")
            .expect_err("none")
            .contains("give command"));
        assert!(with("name = \"a\"\ncommand = \"bin/x\"\n")
            .expect_err("relative")
            .contains("not absolute"));
        assert!(with("name = \"a\"\ncommand = \"/bin/../x\"\n")
            .expect_err("dotdot")
            .contains(".."));
        assert!(with("name = \"a\"\nurl = \"http://h/mcp\"\n")
            .expect_err("http")
            .contains("https"));
        assert!(
            with("name = \"a\"\nurl = \"https://h/mcp\"\ncommand = \"/bin/x\"\n")
                .expect_err("both")
                .contains("not both")
        );
        assert!(
            with("name = \"a\"\nurl = \"https://h/mcp\"\ncapability = \"c\"\nsecrets = [{ name = \"T\" }]\n")
                .expect_err("secrets on url")
                .contains("broker")
        );
        let s = with("name = \"a\"\nurl = \"https://H.example/mcp\"\ncapability = \"ex/mcp\"\n")
            .expect("url");
        assert_eq!(
            s[0].transport,
            Transport::Http {
                url: "https://H.example/mcp".into(),
                capability: "ex/mcp".into(),
                host: "h.example".into(),
                path: "/mcp".into(),
            }
        );
    }

    #[test]
    fn a_url_server_names_the_capability_it_goes_through() {
        let e = with("name = \"web\"\nurl = \"https://h.example/mcp\"\n").expect_err("none");
        assert!(
            e.contains("\"web\"") && e.contains("needs capability"),
            "{e}"
        );
        let e = with("name = \"a\"\ncommand = \"/bin/x\"\ncapability = \"ex\"\n")
            .expect_err("capability on a command");
        assert!(e.contains("capability is for a url server"), "{e}");
        for bad in ["", "Ex", "/ex", "ex/", "e x", &"c".repeat(65)] {
            let e = with(&format!(
                "name = \"a\"\nurl = \"https://h.example/mcp\"\ncapability = {bad:?}\n"
            ))
            .expect_err(bad);
            assert!(e.contains("not a capability name"), "{bad}: {e}");
        }
    }

    #[test]
    fn urls_are_split_into_host_and_path_or_refused() {
        let ok = |u: &str| split_url(u).expect(u);
        assert_eq!(ok("https://h.example"), ("h.example".into(), "/".into()));
        assert_eq!(ok("https://h.example/"), ("h.example".into(), "/".into()));
        assert_eq!(
            ok("https://h.example/a/mcp?x=1"),
            ("h.example".into(), "/a/mcp?x=1".into())
        );
        assert_eq!(
            ok("https://h.example?x=1"),
            ("h.example".into(), "/?x=1".into())
        );
        for (bad, why) in [
            ("http://h/mcp", "https"),
            ("https:///mcp", "no host"),
            ("https://", "no host"),
            ("https://u:p@h/mcp", "user information"),
            ("https://h:8443/mcp", "port"),
            ("https://h/mcp#x", "fragment"),
            ("https://h/m cp", "whitespace"),
            ("https://h_x/mcp", "not a host name"),
        ] {
            let e = split_url(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_variables_are_checked() {
        let e = with("name = \"a\"\ncommand = \"/bin/x\"\nsecrets = [{ name = \"T\", env = \"LD_PRELOAD\" }]\n")
            .expect_err("refused");
        assert!(e.contains("LD_PRELOAD"), "{e}");
        let e = with(
            "name = \"a\"\ncommand = \"/bin/x\"\nsecrets = [{ name = \"T\" }, { name = \"U\", env = \"T\" }]\n",
        )
        .expect_err("refused");
        assert!(e.contains("two secrets"), "{e}");
    }

    #[test]
    fn sandbox_paths_cannot_expose_proc() {
        let e =
            with("name = \"a\"\ncommand = \"/bin/x\"\n[mcp_server.sandbox]\nread = [\"/proc\"]\n")
                .expect_err("refused");
        assert!(e.contains("environ"), "{e}");
        let e = with("name = \"a\"\ncommand = \"/bin/x\"\n[mcp_server.sandbox]\nwrite = [\"/\"]\n")
            .expect_err("refused");
        assert!(e.contains("environ"), "{e}");
    }

    #[test]
    fn renames_cannot_collide() {
        let srv = "name = \"a\"\ncommand = \"/bin/x\"\n[mcp_server.tools]\n";
        let e = with(&format!("{srv}rename = {{ x = \"z\", y = \"z\" }}\n")).expect_err("two");
        assert!(e.contains("two tools are renamed"), "{e}");
        let e = with(&format!("{srv}rename = {{ x = \"y\", y = \"w\" }}\n")).expect_err("chain");
        assert!(e.contains("another tool"), "{e}");
        let e = with(&format!(
            "{srv}rename = {{ x = \"y\" }}\ndescription = {{ y = \"d\" }}\n"
        ))
        .expect_err("target is a named tool");
        assert!(e.contains("another tool"), "{e}");
        let e = with(&format!("{srv}rename = {{ x = \"has space\" }}\n")).expect_err("name");
        assert!(e.contains("not a valid tool name"), "{e}");
    }

    #[test]
    fn globs_pins_and_limits_are_checked() {
        let srv = "name = \"a\"\ncommand = \"/bin/x\"\n";
        let e = with(&format!("{srv}[mcp_server.tools]\ndeny = [\"[abc]\"]\n")).expect_err("glob");
        assert!(e.contains("tools.deny"), "{e}");
        let e = with(&format!(
            "{srv}[mcp_server.tools]\npins = {{ t = \"ABC\" }}\n"
        ))
        .expect_err("pin");
        assert!(e.contains("64 lowercase hex"), "{e}");
        let e = with(&format!(
            "{srv}[mcp_server.limits]\nmax_message = \"1KiB\"\n"
        ))
        .expect_err("small");
        assert!(e.contains("max_message"), "{e}");
        let e = with(&format!(
            "{srv}[mcp_server.limits]\ncall_timeout = \"5 parsecs\"\n"
        ))
        .expect_err("unit");
        assert!(e.contains("call_timeout"), "{e}");
        let s = with(&format!(
            "{srv}[mcp_server.limits]\nidle_timeout = \"2m\"\n"
        ))
        .expect("ok");
        assert_eq!(s[0].limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(s[0].limits.max_message, DEFAULT_MAX_MESSAGE);
    }
}
