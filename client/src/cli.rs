//! Every `vaultctl` flag, defined once; `--help`, the man page and shell
//! completions all come from these definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Environment variable for `--daemon-timeout`.
pub const DAEMON_TIMEOUT_ENV: &str = "AIVAULT_DAEMON_TIMEOUT";

pub const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  a negative answer (`secrets exists`: absent; `audit verify`: problems found)
  2  usage error: unknown flag, bad name, unreadable or invalid input
  3  no such secret
  4  permission denied (by the daemon, or by the socket's file permissions)
  5  daemon unavailable: not running, not answering, sealed, busy or a different version
  6  vault or audit failure: tampered record, audit log unwritable, internal error";

/// Use secrets without seeing them: talk to the aivault daemon.
#[derive(Debug, Parser)]
#[command(name = "vaultctl", version, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// Daemon socket [env: AIVAULT_SOCKET] [default: /run/aivault/aivaultd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print data as JSON on stdout, and errors and warnings as JSON lines on stderr (for scripts)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no informational lines ("stored", "removed", "imported", ...); warnings and errors still print
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Give up on a daemon that does not answer within this long (e.g. 10s, 500ms; 0: wait for ever); a run's command itself is not bounded by it [env: AIVAULT_DAEMON_TIMEOUT] [default: 30s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub daemon_timeout: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage your secrets (values are never shown)
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Show the daemon's state and how it identifies you
    Status,
    /// Unseal a passphrase-protected vault (root only; passphrase from a no-echo prompt or stdin)
    Unlock,
    /// Read, verify or rotate the audit log
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Run an allowed command with secrets in its environment; its output comes back redacted
    #[command(after_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// See what the policy lets you run
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Serve the Model Context Protocol on stdin/stdout for an AI agent (tools to list secrets and run allowed commands; never values)
    Mcp,
    /// List, approve or deny runs waiting for a person's approval (from another login session than the request's)
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
    /// Send an HTTP request through a capability: the broker adds the credential and the response comes back redacted
    #[command(after_help = HTTP_EXIT_CODES)]
    Http(HttpArgs),
    /// List the HTTP capabilities you may invoke with `vaultctl http` (and where the local endpoint listens)
    Capabilities,
    /// Serve the MCP gateway on stdin/stdout for an AI agent: the upstream MCP servers the policy gives you, each sandboxed with its own secrets, filtered and audited
    McpGateway {
        #[command(subcommand)]
        cmd: Option<GatewayCmd>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// Print the pins of a server's current tools, for its [mcp_server.tools] in policy (root only)
    Pin {
        /// The [[mcp_server]] name
        server: String,
    },
}

pub const HTTP_EXIT_CODES: &str = "\
The request goes to the Unix socket http.sock beside the daemon's socket, as
`METHOD /CAPABILITY/PATH`; the response body is written to stdout as it arrives.
The body of --data is read by vaultctl (from the file, or stdin for `-`).

Exit status of `http`:
  0   the response's status is below 400
  22  the response's status is 400 or above (its body is still written; a refusal
      by the broker is 403, a rate limit 429, a sealed vault or missing secret 503)
  2   usage error: bad capability name, path or header, unreadable --data file
  4   permission denied by the endpoint socket's file permissions
  5   the endpoint is unavailable: no socket, refused, or nothing sent within --timeout
  8   the response was malformed, or the connection closed before its end";

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// The capability's name, as `vaultctl capabilities` lists it (e.g. openai, github/issues)
    #[arg(required_unless_present = "list", value_name = "CAPABILITY")]
    pub capability: Option<String>,
    /// The request method [default: GET, or POST with --data]
    #[arg(long, short = 'X', value_name = "METHOD")]
    pub method: Option<String>,
    /// The path below the capability, with its query (e.g. /v1/models)
    #[arg(long, short = 'p', default_value = "/", value_name = "PATH")]
    pub path: String,
    /// A request header NAME:VALUE (repeatable); credential headers are refused by the broker, which adds the capability's own
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// The request body: @FILE (opened and read by vaultctl) or - (stdin); at most 64 MiB
    #[arg(long, short = 'd', value_name = "@FILE|-", allow_hyphen_values = true)]
    pub data: Option<String>,
    /// Write the response's status line and headers before its body (to stdout)
    #[arg(long, short = 'i')]
    pub include: bool,
    /// Give up when the endpoint sends nothing for this long (e.g. 30s, 5m) [default: wait]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// List the capabilities instead (as `vaultctl capabilities`)
    #[arg(long, conflicts_with_all = ["method", "headers", "data", "include"])]
    pub list: bool,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// The pending requests you may approve, and your own
    List,
    /// Approve a pending request; refused from the requesting login session, except with a one-time code (--code)
    Approve {
        /// The request id, as `approvals list` shows it
        id: String,
        /// Also have polkit authenticate you with your password: on a terminal polkit's text agent asks here, elsewhere your desktop's polkit agent
        #[arg(long, conflicts_with = "code")]
        polkit: bool,
        /// Approve with the one-time code your desktop notifier (in another login session) showed for this request; accepted from any session
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },
    /// Deny a pending request (an approver, or the requester withdrawing its own)
    Deny {
        /// The request id, as `approvals list` shows it
        id: String,
    },
}

pub const RUN_EXIT_CODES: &str = "\
Exit status of `run`: the command's own status (128+N if it was killed by signal N),
or: 124 timed out, 125 output limit reached, 126 the runner or sandbox failed;
before the command starts: 4 the policy refuses (or its approval was denied or timed out),
2 usage error, 5 daemon unavailable.";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A secret to inject: NAME, NAME=ENV to choose the variable, or a pattern such as 'aws/*' ('*' within one name component, '**' across components) selecting among what the rule gives (repeatable; default: all the rule grants)
    #[arg(long = "secret", value_name = "NAME[=ENV]|PATTERN")]
    pub secrets: Vec<String>,
    /// Stop the command after this long (e.g. 30s, 5m; at most the rule's timeout)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Run the command in the current directory: `read-only` (the default) lets it read the tree below, `read-write` also change it (files it creates are yours); only if the rule allows that mode. Without it the command starts in an empty private home and sees nothing of yours
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "read-only",
        alias = "cwd-readable"
    )]
    pub workdir: Option<WorkdirArg>,
    /// The command and its arguments: a bare name (looked up by the daemon in the policy's search path) or an absolute path; relative paths are refused
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// The commands you may run, and with which secret names
    Show,
    /// Validate the policy files and explain each rule (root only)
    Check,
    /// Make the daemon re-read the policy (root only); an invalid policy is not applied
    Reload {
        /// Apply a policy without rules in place of one with rules (refused
        /// otherwise, as more likely a file emptied by mistake)
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkdirArg {
    /// The command reads the directory's tree and cannot change it
    ReadOnly,
    /// The command may change it too; what it creates is owned by you
    ReadWrite,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum ScopeArg {
    /// Your own secrets
    #[default]
    Own,
    /// System-wide secrets (root only)
    System,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum CharsetArg {
    /// Letters and digits
    #[default]
    Alnum,
    /// 0-9 and a-f
    Hex,
    /// Letters, digits, '-' and '_'
    Base64url,
    /// Printable ASCII without space
    Printable,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ConflictArg {
    /// Refuse the whole import or restore if any name exists; nothing is stored
    #[default]
    Error,
    /// Keep existing secrets and store the other names
    Skip,
    /// Replace existing values (new versions)
    Overwrite,
}

#[derive(Debug, Args)]
pub struct ScopeOpt {
    /// Which secrets to address
    #[arg(long, value_enum, default_value_t = ScopeArg::Own)]
    pub scope: ScopeArg,
}

#[derive(Debug, Args)]
pub struct MetaOpts {
    /// A description shown by `secrets list`
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Expiry: a duration such as 30d, 12h, 2w, or a date YYYY-MM-DD (UTC)
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Store a new secret; the value comes from stdin, or a no-echo prompt on a terminal
    #[command(
        after_help = "The value is never taken from the command line. From stdin, one trailing newline is removed. The name, the scope and whether the secret exists are checked before the value is read."
    )]
    Set {
        /// Secret name: a letter or '_' first, then letters, digits, '_', '.', '-', and '/' between components (aws/access_key; no empty, '.' or '..' component; at most 128)
        name: String,
        #[command(flatten)]
        meta: MetaOpts,
        #[command(flatten)]
        scope: ScopeOpt,
        /// Replace the value if the secret exists already
        #[arg(long)]
        force: bool,
    },
    /// Store a random value drawn by the daemon; the value is never sent to or shown by vaultctl
    Generate {
        /// Secret name, as for `set`
        name: String,
        /// Characters in the value (8 to 4096)
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(8..=4096))]
        length: u32,
        /// The characters to draw from
        #[arg(long, value_enum, default_value_t = CharsetArg::Alnum)]
        charset: CharsetArg,
        #[command(flatten)]
        meta: MetaOpts,
        #[command(flatten)]
        scope: ScopeOpt,
        /// Replace the value if the secret exists already
        #[arg(long)]
        force: bool,
    },
    /// List secret names and metadata; expired secrets are marked EXPIRED
    List {
        #[command(flatten)]
        scope: ScopeOpt,
        /// Only secrets that expire within this long from now (e.g. 7d, 12h, 2w), expired ones included
        #[arg(long, value_name = "DURATION")]
        expiring: Option<String>,
    },
    /// Exit 0 if the secret exists, 1 if it does not
    Exists {
        name: String,
        #[command(flatten)]
        scope: ScopeOpt,
    },
    /// Show a fixed-width mask of the value (at most its last 4 characters)
    Masked {
        name: String,
        #[command(flatten)]
        scope: ScopeOpt,
    },
    /// Delete a secret
    #[command(alias = "remove")]
    Rm {
        name: String,
        #[command(flatten)]
        scope: ScopeOpt,
    },
    /// Replace an existing secret's value (new version); value as for `set`
    Rotate {
        name: String,
        #[command(flatten)]
        meta: MetaOpts,
        #[command(flatten)]
        scope: ScopeOpt,
    },
    /// Import every NAME=value of a .env file ("-" for stdin); values are never echoed
    Import {
        file: PathBuf,
        #[command(flatten)]
        scope: ScopeOpt,
        /// What to do with names that exist already: refuse the whole import, keep the existing secret, or replace its value
        #[arg(long, value_enum, default_value_t = ConflictArg::Error)]
        conflict: ConflictArg,
        /// Say what the import would create, overwrite or skip, and store nothing (no value is sent)
        #[arg(long)]
        dry_run: bool,
        /// Metadata given to every imported secret (an existing one keeps what is not given)
        #[command(flatten)]
        meta: MetaOpts,
    },
    /// Write an encrypted backup of your secrets (root: --all, the whole vault) to FILE; the daemon encrypts it, values never reach vaultctl
    #[command(
        after_help = "FILE is created with mode 0600 and never replaces an existing file. It opens only on a daemon holding the same key-encryption key (this machine, or another with the same key file or credential). It holds names, metadata and values; versions and dates start afresh on restore."
    )]
    Backup {
        /// Where to write the backup (created 0600; an existing file is never replaced)
        file: PathBuf,
        /// Every scope of the vault: all users' secrets and the system's (root only)
        #[arg(long)]
        all: bool,
    },
    /// Restore a backup made by `secrets backup` into the scopes it records (yours only, unless you are root)
    #[command(
        after_help = "The whole backup is checked before anything is written: a truncated or altered file, a wrong key, an invalid name or (with --conflict error) an existing secret refuses it all. A user can restore only a backup of their own secrets."
    )]
    Restore {
        /// A file written by `secrets backup`
        file: PathBuf,
        /// Check the backup and say what a restore would do; write nothing
        #[arg(long)]
        verify_only: bool,
        /// What to do with secrets that exist already: refuse the whole restore, keep the existing secret, or replace its value
        #[arg(long, value_enum, default_value_t = ConflictArg::Error)]
        conflict: ConflictArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Show audit records (yours; root sees everyone's) as a table, or with --json as the daemon's JSON lines
    #[command(
        after_help = "Filters look at the newest 10000 records the daemon lets you read. User names come from /etc/passwd; other accounts show as uids."
    )]
    List {
        /// At most this many of the newest matching records
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
        /// Only records since then: a duration back from now (30m, 1h, 7d, 2w) or an RFC 3339 time (2026-11-22T05:10:00Z)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only records of this account: a user name or a uid
        #[arg(long, value_name = "NAME|UID")]
        user: Option<String>,
        /// Only records of this operation (e.g. secret.set, secret.remove, run, run.exit, audit.list)
        #[arg(long, value_name = "OP")]
        op: Option<String>,
        /// After the records so far, keep polling (every 2 s) and print new ones as they come, until interrupted (Ctrl-C)
        #[arg(long)]
        follow: bool,
    },
    /// Check the audit log's MAC chain and anchor (root only); without --archives only the current file, from its first record on
    Verify {
        /// Also verify every archive `audit rotate` left, back to the first record, and that each one ends in the record the next file's rotate record chains to (a deleted, altered or truncated archive fails)
        #[arg(long)]
        archives: bool,
    },
    /// Archive the audit log next to itself as <log>.<first seq>-<last seq> and start a new file whose first record (audit.rotate) chains to the archive's last (root only); `audit list` then shows the new file only
    Rotate,
}
