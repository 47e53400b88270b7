//! The policy's error types, shared by [`super::load`], [`super::compile`]
//! and [`super::check`].
//!
//! A leaf: it imports no sibling module, so the imports run one way only,
//! `load` → `compile` → `check` → `error`.

use std::io;
use std::path::PathBuf;

use super::SecretScope;
use crate::secure_fs::SecureFsError;

/// Largest policy file accepted.
pub const MAX_FILE: u64 = 1 << 20;

/// Why a policy could not be loaded. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot inspect policy directory {}: {source}", path.display())]
    StatDir { path: PathBuf, source: io::Error },
    #[error("untrusted policy directory: {source}")]
    InsecureDir {
        path: PathBuf,
        source: SecureFsError,
    },
    #[error("cannot list {}: {source}", path.display())]
    ListDir { path: PathBuf, source: io::Error },
    #[error("untrusted policy file: {source}")]
    InsecureFile {
        path: PathBuf,
        source: SecureFsError,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    TopLevel { path: PathBuf, message: String },
    #[error("{}: {entry}: {error}", path.display())]
    Entry {
        path: PathBuf,
        entry: String,
        error: EntryError,
    },
}

/// What is wrong with one rule, grant, pin, provider or capability.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("{0}")]
    Schema(String),
    #[error("rule name {0:?} must be 1 to 64 characters of [A-Za-z0-9_.-], starting with a letter or digit")]
    RuleName(String),
    #[error("a rule with this name already exists in {}", .0.display())]
    DuplicateRule(PathBuf),
    #[error("command {} is not an absolute path", .0.display())]
    RelativeCommand(PathBuf),
    #[error("command {} contains . or .. components", .0.display())]
    UnnormalCommand(PathBuf),
    #[error("sha256 must be 64 hexadecimal digits")]
    Sha256,
    #[error("argument pattern: {0}")]
    ArgPattern(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("cannot look up {0:?} in the account database: {1}")]
    Lookup(String, nix::Error),
    #[error("nobody may use it: list users or groups")]
    Nobody,
    #[error("secret name {0:?} must be 1 to 128 characters of [A-Za-z0-9_.-] in components separated by '/', starting with a letter or '_', with no empty, '.' or '..' component")]
    SecretName(String),
    #[error("secret pattern {0:?}: {1}")]
    SecretGlob(String, &'static str),
    #[error("secret pattern {0} selects several secrets, so it takes no env: each goes to the variable its name maps to")]
    GlobEnv(String),
    #[error("secret pattern {0} selects the user's own secrets, whose names the user chooses, and with them the variables they set (VAULT_ADDR, GIT_DIR, ...): list the variables they may set with envs = [...]")]
    GlobEnvs(String),
    #[error("secret {0} is a single secret: envs is only for patterns (use env)")]
    EnvsNotPattern(String),
    #[error("secret {0} is listed twice")]
    DuplicateSecret(String),
    #[error("{0}")]
    EnvName(String),
    #[error("environment variable {0} is used twice")]
    DuplicateEnv(String),
    #[error("{} is refused without allow_interpreter = true: {reason}", command.display())]
    Interpreter {
        command: PathBuf,
        reason: &'static str,
    },
    #[error("{0}")]
    Sandbox(String),
    #[error("{0}")]
    Approval(String),
    #[error("{0}")]
    Provider(String),
    #[error("a provider with this name is already defined in {}", .0.display())]
    DuplicateProvider(PathBuf),
    #[error("{0}")]
    Capability(String),
    #[error("a capability with this name already exists in {}", .0.display())]
    DuplicateCapability(PathBuf),
    #[error("{scope} secret {secret} is pinned to commands by {}, so no capability may send it", pin_file.display())]
    CapabilityPinned {
        secret: String,
        scope: SecretScope,
        pin_file: PathBuf,
    },
    #[error("{0}")]
    McpServer(String),
    #[error("an mcp_server with this name already exists in {}", .0.display())]
    DuplicateMcpServer(PathBuf),
    #[error("{scope} secret {secret} is pinned to other commands by {}", pin_file.display())]
    PinViolated {
        secret: String,
        scope: SecretScope,
        pin_file: PathBuf,
    },
}
