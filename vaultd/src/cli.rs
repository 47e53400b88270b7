//! Every `aivaultd` flag, defined once; `--help`, the man page and shell
//! completions are generated from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The aivault daemon: holds the keys and the vault, and lets peer-identified
/// callers use secrets without ever returning them.
#[derive(Debug, Parser)]
#[command(name = "aivaultd", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub paths: PathArgs,
    /// Run every check serving makes (configuration, socket directory, key, audit log, policy) without serving or writing, explain each rule, and exit (0 valid, 1 invalid)
    #[arg(long)]
    pub check_config: bool,
    /// For test suites only: accept the [broker.testing] configuration (extra trust anchors, resolver overrides, loopback upstreams); never on a real system
    #[arg(long, global = true)]
    pub testing: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct PathArgs {
    /// Configuration file [default: /etc/aivault/aivaultd.toml, if present]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Directory holding the vault (root-owned, 0700) [default: /var/lib/aivault]
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Listening socket, an absolute path; only its last directory is created [default: /run/aivault/aivaultd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Directory holding policy.toml and policy.d/ [default: /etc/aivault]
    #[arg(long, global = true, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Audit log (JSON lines) [default: /var/log/aivault/audit.jsonl]
    #[arg(long, global = true, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Key provider: file:PATH, systemd-creds:NAME or passphrase [default: systemd-creds:aivault.kek]
    #[arg(long, global = true, value_name = "SPEC")]
    pub key_provider: Option<String>,
    /// D-Bus interface: system, none, or a bus address such as unix:path=/run/x [default: system]
    #[arg(long, global = true, value_name = "BUS")]
    pub dbus: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve requests (the default when no subcommand is given)
    Serve,
    /// Create a new, empty vault (and the key file, for a file: provider)
    Init,
    /// Rotate the data key and/or re-wrap it under a new key-encryption key (daemon stopped)
    Rekey {
        /// Re-encrypt every record under a fresh data-encryption key
        #[arg(long)]
        rotate_dek: bool,
        /// Re-wrap the data key for this provider (a new file: key is generated if missing)
        #[arg(long, value_name = "SPEC")]
        new_key_provider: Option<String>,
    },
}
