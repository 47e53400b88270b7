//! Daemon configuration: embedded defaults, an optional root-owned TOML file,
//! and command-line overrides, applied in that order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/aivault/aivaultd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} not found")]
    NotFound { path: PathBuf },
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not trusted: {source}")]
    Insecure {
        path: PathBuf,
        source: crate::secure_fs::SecureFsError,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid key provider: {0}")]
    KeyProvider(String),
    #[error("invalid --dbus: {0}")]
    Bus(String),
    /// The runner and the jail host reach the sockets from elsewhere.
    #[error("socket {path} is not an absolute path")]
    RelativeSocket { path: PathBuf },
}

/// Resource limits that keep one caller from starving the others.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections open at once, all callers together.
    pub max_connections: usize,
    /// Connections open at once from one uid.
    pub max_connections_per_uid: usize,
    /// Of `max_connections`, how many only root (uid 0) may take: other
    /// uids together hold at most `max_connections` minus this, so however
    /// many users fill the socket, root can still ask for `status`, unlock
    /// the vault or reload the policy.
    pub root_reserved_connections: usize,
    /// Requests being processed at once for one uid (over all its connections).
    pub max_inflight_per_uid: usize,
    /// Seconds a client has to complete the handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a connection may sit idle between requests.
    pub idle_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_uid: 64,
            root_reserved_connections: 16,
            max_inflight_per_uid: 8,
            handshake_timeout_secs: 5,
            idle_timeout_secs: 300,
        }
    }
}

impl Limits {
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }
}

/// Settings of the run path.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// First uid of the reserved per-run range (gid = uid).
    pub uid_first: u32,
    /// Number of uids in the range.
    pub uid_count: u32,
    /// Runs at once, all callers together.
    pub max_runs: usize,
    /// Runs at once for one caller uid.
    pub max_runs_per_user: usize,
    /// The runner binary [default: next to aivaultd, else /usr/libexec/aivault/aivault-runner].
    pub runner: Option<PathBuf>,
    /// Runners kept started and idle, each under its own leased uid, for
    /// fresh-uid runs to take (0: none; at most 16).
    pub warm_runners: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            uid_first: crate::run::uidpool::DEFAULT_FIRST_UID,
            uid_count: crate::run::uidpool::DEFAULT_COUNT,
            max_runs: 64,
            max_runs_per_user: 16,
            runner: None,
            warm_runners: 2,
        }
    }
}

/// Where the D-Bus interface is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    /// The system bus (`DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket).
    System,
    /// A bus at this D-Bus address (development and tests).
    Address(String),
    /// No D-Bus interface.
    Off,
}

impl std::str::FromStr for BusChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" => Ok(BusChoice::System),
            "none" | "off" => Ok(BusChoice::Off),
            a if a.contains(':') && a.contains('=') => Ok(BusChoice::Address(a.to_string())),
            other => Err(format!(
                "{other:?} is not \"system\", \"none\" or a D-Bus address such as \"unix:path=/run/x\""
            )),
        }
    }
}

impl std::fmt::Display for BusChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusChoice::System => f.write_str("system"),
            BusChoice::Address(a) => f.write_str(a),
            BusChoice::Off => f.write_str("none"),
        }
    }
}

/// The `[dbus]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDbus {
    bus: Option<String>,
}

/// `[audit]`: the audit log's own settings.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Rotate the log (as `vaultctl audit rotate` does) once it has grown
    /// to this many bytes; `None`: only when asked.
    pub rotate_bytes: Option<u64>,
}

/// Smallest `[audit] rotate_bytes`: a few records at least per file.
pub const MIN_ROTATE_BYTES: u64 = 4096;

/// The settings file as written by an administrator; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    policy_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    key_provider: Option<String>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default)]
    runs: Option<RunConfig>,
    #[serde(default)]
    dbus: Option<FileDbus>,
    #[serde(default)]
    approval: Option<crate::approval::ApprovalConfig>,
    #[serde(default)]
    audit: Option<AuditConfig>,
}

/// Effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub policy_dir: PathBuf,
    pub audit_log: PathBuf,
    pub key_provider: crate::keys::KeyProviderSpec,
    pub limits: Limits,
    pub runs: RunConfig,
    /// Where the D-Bus interface is served.
    pub dbus: BusChoice,
    /// Pending approvals: how long a request waits, how many may wait.
    pub approval: crate::approval::ApprovalConfig,
    /// The audit log's rotation threshold.
    pub audit: AuditConfig,
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub policy_dir: Option<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub key_provider: Option<String>,
    pub dbus: Option<String>,
}

impl Config {
    /// Embedded defaults: the paths a packaged install uses.
    pub fn defaults() -> Self {
        Self {
            state_dir: "/var/lib/aivault".into(),
            socket: "/run/aivault/aivaultd.sock".into(),
            policy_dir: "/etc/aivault".into(),
            audit_log: "/var/log/aivault/audit.jsonl".into(),
            key_provider: crate::keys::KeyProviderSpec::SystemdCreds("aivault.kek".into()),
            limits: Limits::default(),
            runs: RunConfig::default(),
            dbus: BusChoice::System,
            approval: Default::default(),
            audit: AuditConfig::default(),
        }
    }

    /// Builds the effective configuration. An explicitly named file must
    /// exist; the default file is used only if present.
    pub fn load(ov: &Overrides) -> Result<Self, ConfigError> {
        let mut cfg = Self::defaults();
        let (path, required) = match &ov.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        if required || path.exists() {
            cfg.apply_file(&path)?;
        }
        if let Some(v) = &ov.state_dir {
            cfg.state_dir = v.clone();
        }
        if let Some(v) = &ov.socket {
            cfg.socket = v.clone();
        }
        if let Some(v) = &ov.policy_dir {
            cfg.policy_dir = v.clone();
        }
        if let Some(v) = &ov.audit_log {
            cfg.audit_log = v.clone();
        }
        if let Some(v) = &ov.key_provider {
            cfg.key_provider = v
                .parse()
                .map_err(|e| ConfigError::KeyProvider(format!("{e}")))?;
        }
        if let Some(v) = &ov.dbus {
            cfg.dbus = v.parse().map_err(ConfigError::Bus)?;
        }
        if !cfg.socket.is_absolute() {
            return Err(ConfigError::RelativeSocket { path: cfg.socket });
        }
        Ok(cfg)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            return Err(ConfigError::NotFound { path: path.into() });
        }
        crate::secure_fs::check_secure_file(path).map_err(|source| ConfigError::Insecure {
            path: path.into(),
            source,
        })?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: match e.span() {
                Some(span) => {
                    let (line, column) = line_column(&text, span.start);
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_string(),
            },
        })?;
        if let Some(v) = file.state_dir {
            self.state_dir = v;
        }
        if let Some(v) = file.socket {
            self.socket = v;
        }
        if let Some(v) = file.policy_dir {
            self.policy_dir = v;
        }
        if let Some(v) = file.audit_log {
            self.audit_log = v;
        }
        if let Some(v) = file.key_provider {
            self.key_provider = v
                .parse()
                .map_err(|e| ConfigError::KeyProvider(format!("{e}")))?;
        }
        if let Some(v) = file.limits {
            self.limits = v;
        }
        if let Some(v) = file.approval {
            self.approval = v;
        }
        if let Some(v) = file.audit {
            if let Some(n) = v.rotate_bytes.filter(|n| *n < MIN_ROTATE_BYTES) {
                return Err(ConfigError::Parse {
                    path: path.into(),
                    message: format!(
                        "audit.rotate_bytes: {n} is less than the {MIN_ROTATE_BYTES} allowed"
                    ),
                });
            }
            self.audit = v;
        }
        if let Some(v) = file.runs {
            if v.warm_runners > crate::run::warm::MAX_WARM {
                return Err(ConfigError::Parse {
                    path: path.into(),
                    message: format!(
                        "runs.warm_runners: {} is more than the {} allowed",
                        v.warm_runners,
                        crate::run::warm::MAX_WARM
                    ),
                });
            }
            self.runs = v;
        }
        if let Some(v) = file.dbus.and_then(|d| d.bus) {
            self.dbus = v.parse().map_err(|message| ConfigError::Parse {
                path: path.into(),
                message: format!("dbus.bus: {message}"),
            })?;
        }
        Ok(())
    }

    /// The daemon's runtime directory: where the sockets live.
    pub fn runtime_dir(&self) -> PathBuf {
        self.socket
            .parent()
            .map_or_else(|| PathBuf::from("/run/aivault"), Path::to_path_buf)
    }

    /// Where the audit chain's anchor lives: with the vault, not with the log.
    pub fn audit_anchor(&self) -> PathBuf {
        self.state_dir.join("audit.anchor")
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_parse_and_unknown_keys_are_refused() {
        let ok: FileConfig =
            toml::from_str("state_dir = \"/x\"\n[limits]\nmax_connections_per_uid = 3\n").unwrap();
        assert_eq!(ok.state_dir.as_deref(), Some(Path::new("/x")));
        assert_eq!(ok.limits.unwrap().max_connections_per_uid, 3);
        assert!(toml::from_str::<FileConfig>("stat_dir = \"/x\"").is_err());
    }

    #[test]
    fn warm_runners_beyond_the_maximum_or_negative_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aivaultd.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            Config::load(&Overrides {
                config: Some(path.clone()),
                ..Overrides::default()
            })
        };
        assert_eq!(
            load("[runs]\nwarm_runners = 16\n")
                .unwrap()
                .runs
                .warm_runners,
            16
        );
        assert_eq!(
            load("[runs]\nwarm_runners = 0\n")
                .unwrap()
                .runs
                .warm_runners,
            0
        );
        let err = load("[runs]\nwarm_runners = 17\n").unwrap_err().to_string();
        assert!(
            err.contains("warm_runners: 17 is more than the 16 allowed"),
            "{err}"
        );
        assert!(load("[runs]\nwarm_runners = -1\n").is_err());
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a = 1\nb = é!\n", 12), (2, 6));
    }

    #[test]
    fn bus_choices_parse() {
        assert_eq!("system".parse(), Ok(BusChoice::System));
        assert_eq!("none".parse(), Ok(BusChoice::Off));
        assert_eq!(
            "unix:path=/run/x".parse(),
            Ok(BusChoice::Address("unix:path=/run/x".into()))
        );
        assert!("session".parse::<BusChoice>().is_err());
        assert!("/run/x".parse::<BusChoice>().is_err());
    }
}
