//! Root-owned run policy: which commands may run, for whom, with which secrets.
//!
//! The policy lives in a directory (default `/etc/aivault`): `policy.toml`
//! first, then `policy.d/*.toml` in byte-wise order of file name. Every file
//! and directory must be root-owned and not group- or world-writable. A
//! missing file or directory contributes nothing, so an absent policy allows
//! nothing (deny by default). `docs/policy.md` is the schema reference.
//!
//! Main types:
//! * [`Policy`] — a loaded, validated policy ([`Policy::load`]); cheap to clone;
//! * [`RunQuery`] → [`Policy::decide`] → [`Decision`] or [`Denial`];
//! * [`RuleReport`] ([`Policy::explain`]) and [`CommandSummary`]
//!   ([`Policy::commands_for`]) for `vaultctl policy check/show`;
//! * [`CapabilityEntry`] ([`Policy::capability`], [`Policy::capabilities_for`]):
//!   the broker's HTTP capabilities (`[[capability]]`, `[[provider]]`);
//! * [`McpServerEntry`] ([`Policy::mcp_server`], [`Policy::gateway_text`]):
//!   the gateway's upstream MCP servers (`[[mcp_server]]`);
//! * [`resolve::resolve_command`] — turns a command name into an opened,
//!   root-owned, hashed executable.
//!
//! Pieces: [`schema`] (file format), [`compile`] (validation into rules),
//! [`load`] (files on disk), [`decide`] (matching), [`explain`], [`args`]
//! (argument patterns), [`env`] (variable names), [`interp`] (shells and
//! launchers), `options` (options that run programs), [`sandbox`], [`units`] (durations and sizes), [`error`]
//! (the error types, a leaf: `load` → `compile` → `check` → `error`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub mod approval;
pub mod args;
pub mod capability;
mod check;
mod compile;
mod decide;
pub mod env;
mod error;
mod explain;
pub mod interp;
mod load;
pub mod mcp;
mod options;
pub mod resolve;
pub mod sandbox;
mod schema;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_capability;
#[cfg(test)]
mod tests_globs;
#[cfg(test)]
mod tests_mcp;
pub mod units;

pub use capability::{CapabilityEntry, CapabilitySummary};
pub use error::{EntryError, PolicyError};
pub use mcp::McpServerEntry;
pub use resolve::{resolve_command, ResolveError, ResolvedCommand};
pub use sandbox::SandboxProfile;

/// The trusted search path used when a policy sets none.
pub const DEFAULT_SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// A loaded, validated policy. Clones share the same data.
#[derive(Clone, Debug)]
pub struct Policy {
    inner: Arc<compile::Compiled>,
}

/// Who is asking, as the daemon established it (never the caller's words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of the caller's account, from the user database.
    pub groups: Vec<u32>,
}

/// A request to run a command, after the daemon resolved the command.
#[derive(Clone, Debug)]
pub struct RunQuery {
    pub who: Who,
    /// Canonical absolute path, as [`resolve_command`] returned it.
    pub command: PathBuf,
    /// sha256 of the opened file.
    pub sha256: [u8; 32],
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Secrets the caller asked for; empty means every secret the rule grants.
    pub secrets: Vec<SecretAsk>,
    /// The caller wants its working directory readable by the command.
    pub cwd_readable: bool,
    /// ... and writable (implies `cwd_readable`).
    pub cwd_writable: bool,
    /// The secrets a rule's patterns (`aws/*`) may select from; empty when
    /// the policy has no patterns.
    pub existing: ExistingSecrets,
}

/// Names of the secrets that exist where a rule's patterns look: the
/// caller's own scope and the system scope, listed by the daemon at run
/// time. Never another user's scope, so a pattern cannot reach one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingSecrets {
    pub own: Vec<String>,
    pub system: Vec<String>,
}

/// One secret the caller asks for, optionally with the variable it expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretAsk {
    pub name: String,
    pub env: Option<String>,
}

/// Whose secret: the caller's own, or a system secret granted by policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SecretScope {
    #[default]
    User,
    System,
}

impl std::fmt::Display for SecretScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretScope::User => "user",
            SecretScope::System => "system",
        })
    }
}

/// Under which uid the command runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh uid from the reserved range: the caller cannot read the
    /// command's environment or trace it.
    #[default]
    DynamicUid,
    /// The caller's own uid: the caller *can* read the command's environment.
    Caller,
}

/// One secret to deliver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretGrant {
    pub name: String,
    pub scope: SecretScope,
    /// The environment variable that carries it.
    pub env: String,
}

/// What the daemon may run, and how.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Name of the rule that allowed the run.
    pub rule: String,
    pub secrets: Vec<SecretGrant>,
    pub sandbox: SandboxProfile,
    pub isolation: Isolation,
    /// Caller variables to copy into the command's environment (if set).
    pub pass_env: Vec<String>,
    pub allow_interpreter: bool,
    /// Whether the run may use secrets past their expiry.
    #[serde(default)]
    pub allow_expired: bool,
    /// Whether a person must approve the run before it starts.
    #[serde(default)]
    pub approval: Option<approval::ApprovalRule>,
}

/// Why a run is refused; safe to show the caller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denial {
    pub reason: String,
}

/// One entry of `explain`: a rule, grant or pin and what it does.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RuleReport {
    /// `gh-api`, `grant DEPLOY_KEY`, `pin AWS_KEY (system)`.
    pub rule: String,
    /// The file it came from.
    pub source: String,
    pub effect: String,
    pub warnings: Vec<String>,
}

/// A command a caller may run, as `vaultctl policy show` lists it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CommandSummary {
    pub rule: String,
    pub command: PathBuf,
    /// `any` or one description per alternative (`exact ["s3", "ls"]`).
    pub args: Vec<String>,
    /// Names and variables only; system secrets only when granted to the caller.
    pub secrets: Vec<SecretGrant>,
    /// Patterns (`aws/*`) that select secrets when a run starts; each
    /// selected secret goes to the variable its name maps to.
    pub secret_patterns: Vec<SecretPattern>,
    pub pass_env: Vec<String>,
    pub isolation: Isolation,
    pub allow_interpreter: bool,
    pub cwd_readable: bool,
    /// `args` as data: `None` for any arguments, else one pattern per
    /// alternative.
    pub arg_patterns: Option<Vec<ArgPatternSummary>>,
    /// What the command sees when it runs.
    pub sandbox: SandboxSummary,
}

/// A rule's secret pattern, as a caller may see it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretPattern {
    pub pattern: String,
    pub scope: SecretScope,
}

/// One alternative of a rule's `args`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ArgPatternSummary {
    /// `exact` (these arguments only), `prefix` (these, then anything) or
    /// `glob` (one shell-style pattern per argument).
    pub kind: &'static str,
    pub args: Vec<String>,
}

/// A rule's sandbox as a caller may see it (units in the field names).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxSummary {
    /// Always `private_home`: the run's own empty home directory, also
    /// `$HOME`; `$TMPDIR` is a private temporary directory. Unless the
    /// caller asks for its own directory, as `workdir` allows.
    pub working_directory: &'static str,
    /// What the caller may ask for (`vaultctl run --workdir`): `none`,
    /// `read-only` or `read-write`.
    pub workdir: &'static str,
    /// Extra paths readable (`read`) and writable (`write`).
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// TCP ports it may connect to and bind; empty: no network.
    pub tcp_connect: Vec<u16>,
    pub tcp_bind: Vec<u16>,
    pub timeout_ms: u64,
    /// Bytes of stdout + stderr after which the run is killed.
    pub max_output_bytes: u64,
    pub memory_bytes: u64,
    pub processes: u64,
    pub file_size_bytes: u64,
    pub cpu_seconds: u64,
}

impl SandboxSummary {
    fn of(p: &SandboxProfile) -> Self {
        SandboxSummary {
            working_directory: "private_home",
            workdir: match (p.cwd_readable, p.cwd_writable) {
                (_, true) => "read-write",
                (true, false) => "read-only",
                _ => "none",
            },
            read: p.read.clone(),
            write: p.write.clone(),
            tcp_connect: p.tcp_connect.clone(),
            tcp_bind: p.tcp_bind.clone(),
            timeout_ms: u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX),
            max_output_bytes: p.max_output,
            memory_bytes: p.memory,
            processes: p.processes,
            file_size_bytes: p.file_size,
            cpu_seconds: p.cpu_seconds,
        }
    }
}

impl Policy {
    /// Loads `dir/policy.toml` and `dir/policy.d/*.toml`. Missing files and
    /// directories are an empty policy; anything insecure or invalid is an error.
    pub fn load(dir: &Path) -> Result<Policy, PolicyError> {
        let compiled = load::load_dir(dir)?;
        Ok(Policy {
            inner: Arc::new(compiled),
        })
    }

    /// Allows nothing.
    pub fn empty() -> Policy {
        Policy {
            inner: Arc::new(compile::Compiled::default()),
        }
    }

    /// Directories searched for commands named without a `/`.
    pub fn search_path(&self) -> &[PathBuf] {
        &self.inner.search_path
    }

    /// Every rule, grant and pin with its effect and warnings, in merge order.
    pub fn explain(&self) -> Vec<RuleReport> {
        explain::explain(&self.inner)
    }

    /// The first rule (in merge order) that allows the run, or why none does.
    pub fn decide(&self, req: &RunQuery) -> Result<Decision, Denial> {
        decide::decide(&self.inner, req)
    }

    /// The commands `who` may run.
    pub fn commands_for(&self, who: &Who) -> Vec<CommandSummary> {
        decide::commands_for(&self.inner, who)
    }

    /// Whether any rule names a command with this file name. Checked before
    /// resolving, so a refused name reveals nothing about the filesystem.
    pub fn mentions_command(&self, argv0: &str) -> bool {
        self.inner.rules.iter().any(|r| r.mentions(argv0))
    }

    /// Whether any rule selects secrets by a pattern, so that a run needs
    /// [`RunQuery::existing`].
    pub fn uses_secret_globs(&self) -> bool {
        self.inner.rules.iter().any(|r| !r.secret_globs.is_empty())
    }

    /// Whether any rule or grant names groups: if none does, a caller's
    /// group memberships cannot change a decision and the daemon need not
    /// ask the account database for them.
    pub fn uses_groups(&self) -> bool {
        self.inner.rules.iter().any(|r| !r.groups.is_empty())
            || self.inner.grants.iter().any(|g| !g.groups.is_empty())
            || self
                .inner
                .broker
                .capabilities
                .iter()
                .any(|c| !c.groups.is_empty())
            || self.inner.mcp.servers.iter().any(|s| !s.groups.is_empty())
    }

    /// The HTTP capability of this name, if the policy has one.
    pub fn capability(&self, name: &str) -> Option<&CapabilityEntry> {
        self.inner.broker.get(name)
    }

    /// The capabilities `who` may invoke, in merge order.
    pub fn capabilities_for<'a>(
        &'a self,
        who: &'a Who,
    ) -> impl Iterator<Item = &'a CapabilityEntry> + 'a {
        self.inner.broker.for_caller(who)
    }

    /// The capabilities `who` may invoke, as `vaultctl policy show` lists them.
    pub fn capability_summaries_for(&self, who: &Who) -> Vec<CapabilitySummary> {
        self.inner.broker.summaries_for(who)
    }

    /// The policy text a broker serving `who` compiles (every
    /// `[[provider]]`, the `[[capability]]` tables `who` may invoke), or
    /// `None` when `who` may invoke none.
    pub fn broker_text(&self, who: &Who) -> Option<String> {
        self.inner.broker.broker_text(who)
    }

    /// The upstream MCP server of this name, if the policy has one.
    pub fn mcp_server(&self, name: &str) -> Option<&McpServerEntry> {
        self.inner.mcp.get(name)
    }

    /// The upstream MCP servers `who` may use, in merge order.
    pub fn mcp_servers_for<'a>(
        &'a self,
        who: &'a Who,
    ) -> impl Iterator<Item = &'a McpServerEntry> + 'a {
        self.inner.mcp.for_caller(who)
    }

    /// The `[[mcp_server]]` text a gateway serving `who` compiles, or
    /// `None` when `who` may use none.
    pub fn gateway_text(&self, who: &Who) -> Option<String> {
        self.inner.mcp.gateway_text(who)
    }
}

/// Parses policy text as if it were one file named `name` (tests, tools).
#[cfg(test)]
pub(crate) fn from_str_for_test(name: &str, text: &str) -> Result<Policy, PolicyError> {
    let mut builder = compile::Builder::default();
    builder.add_file(Path::new(name), text)?;
    Ok(Policy {
        inner: Arc::new(builder.finish()?),
    })
}
