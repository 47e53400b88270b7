//! The policy file format as serde sees it. Every table refuses unknown keys.
//!
//! A file is first read as a generic TOML document (syntax errors are
//! reported with line and column), then each `[[rule]]`, `[[grant]]`,
//! `[[pin]]`, `[[provider]]`, `[[capability]]` and `[[mcp_server]]` entry is decoded on its own, so a schema error can name the
//! entry it is in.

use std::path::PathBuf;

use serde::Deserialize;

use super::args::RawArgPattern;
use super::error::EntryError;
use super::sandbox::RawSandbox;
use super::units::Quantity;
use super::{Isolation, SecretScope};

/// A whole file; entries stay generic until decoded one by one.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub search_path: Option<Vec<PathBuf>>,
    #[serde(default)]
    pub rule: Vec<toml::Value>,
    #[serde(default)]
    pub grant: Vec<toml::Value>,
    #[serde(default)]
    pub pin: Vec<toml::Value>,
    /// `[[provider]]`: registry overrides (`capability.rs`).
    #[serde(default)]
    pub provider: Vec<toml::Value>,
    /// `[[capability]]`: HTTP capabilities of the broker (`capability.rs`).
    #[serde(default)]
    pub capability: Vec<toml::Value>,
    /// `[[mcp_server]]`: upstream MCP servers of the gateway (`mcp.rs`).
    #[serde(default)]
    pub mcp_server: Vec<toml::Value>,
}

/// A user or group: a name from the account database, or a numeric id.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum RawId {
    Id(u32),
    Name(String),
}

/// `[[rule]]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub command: PathBuf,
    pub sha256: Option<String>,
    pub args: Option<Vec<RawArgPattern>>,
    #[serde(default)]
    pub users: Vec<RawId>,
    #[serde(default)]
    pub groups: Vec<RawId>,
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    #[serde(default)]
    pub pass_env: Vec<String>,
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub allow_interpreter: bool,
    /// Let the rule's runs use secrets past their expiry.
    #[serde(default)]
    pub allow_expired: bool,
    #[serde(default)]
    pub sandbox: RawSandbox,
    /// Whether a person must approve each run (`approval.rs`).
    pub approval: Option<RawApproval>,
    pub approvers: Option<RawApprovers>,
    /// `"any"` (default) or `"polkit"`.
    pub approval_channel: Option<String>,
}

/// One entry of a rule's `secrets`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub name: String,
    #[serde(default)]
    pub scope: SecretScope,
    /// Defaults to the secret's name.
    pub env: Option<String>,
    /// For a pattern: the only variables the secrets it selects may set.
    /// Required for a user-scope pattern, whose secrets' names (and so
    /// their variables) the user chooses.
    pub envs: Option<Vec<String>>,
}

/// `[[grant]]`: a system secret made available to users and groups.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    pub secret: String,
    #[serde(default)]
    pub users: Vec<RawId>,
    #[serde(default)]
    pub groups: Vec<RawId>,
}

/// `[[pin]]`: the only commands a secret may ever be given to.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawPin {
    pub secret: String,
    pub scope: SecretScope,
    pub commands: Vec<PathBuf>,
}

/// `approval` as written.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum RawApproval {
    Mode(String),
    Ttl(RawTtl),
}

/// `approval = { ttl = "15m" }`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTtl {
    pub ttl: Quantity,
}

/// `approvers = { users = [...], groups = [...] }`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApprovers {
    #[serde(default)]
    pub users: Vec<RawId>,
    #[serde(default)]
    pub groups: Vec<RawId>,
}

/// `rule "gh-api"` when the entry has a readable name, else `rule #3`.
pub(super) fn label(kind: &str, key: &str, index: usize, v: &toml::Value) -> String {
    match v.get(key).and_then(toml::Value::as_str) {
        Some(name) => format!("{kind} {name:?}"),
        None => format!("{kind} #{}", index + 1),
    }
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(v: &toml::Value) -> Result<T, EntryError> {
    v.clone()
        .try_into()
        .map_err(|e: toml::de::Error| EntryError::Schema(e.message().to_owned()))
}
