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
    #[error("config {path}: [broker.testing] is accepted only when aivaultd is started with --testing, which is for test suites only")]
    TestingOnly { path: PathBuf },
    #[error("config {path}: broker.testing.extra_roots {roots}: {message}")]
    ExtraRoots {
        path: PathBuf,
        roots: PathBuf,
        message: String,
    },
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

/// `[broker]`: the HTTP capability broker's local endpoint and processes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBroker {
    tcp_listen: Option<String>,
    idle_timeout: Option<crate::policy::units::Quantity>,
    testing: Option<FileBrokerTesting>,
}

/// `[broker.testing]`: only with `--testing`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBrokerTesting {
    extra_roots: Option<PathBuf>,
    #[serde(default)]
    allow_loopback: bool,
    #[serde(default)]
    resolve: std::collections::BTreeMap<String, Vec<String>>,
}

/// The broker's settings as the daemon uses them (`[broker]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// The loopback TCP endpoint, if any (`tcp_listen`).
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// A broker process with no connection for this long is stopped.
    pub idle_timeout: Duration,
    /// `[broker.testing]`, with `extra_roots` read into PEM bytes; only
    /// ever set when the daemon runs with `--testing`.
    pub testing: Option<aivault_proto::broker::BrokerTesting>,
}

/// Default `[broker] idle_timeout`.
pub const DEFAULT_BROKER_IDLE: Duration = Duration::from_secs(300);
/// Largest `[broker] idle_timeout`.
const MAX_BROKER_IDLE: Duration = Duration::from_secs(24 * 3600);
/// Largest `extra_roots` file: it travels in the broker's init message,
/// which must fit one control datagram (`aivault_proto::broker::MAX_CONTROL`)
/// with the capabilities' text.
const MAX_EXTRA_ROOTS: u64 = 128 << 10;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            tcp_listen: None,
            idle_timeout: DEFAULT_BROKER_IDLE,
            testing: None,
        }
    }
}

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
    #[serde(default)]
    broker: Option<FileBroker>,
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
    /// The HTTP capability broker (`[broker]`).
    pub broker: BrokerConfig,
    /// Started with `--testing` (test suites only): `[broker.testing]` is
    /// accepted.
    pub testing: bool,
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
    /// `--testing`: accept `[broker.testing]` (test suites only).
    pub testing: bool,
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
            broker: BrokerConfig::default(),
            testing: false,
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
        cfg.testing = ov.testing;
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
        if let Some(b) = file.broker {
            self.broker = broker_config(path, b, self.testing)?;
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

    /// The broker's local endpoint on a Unix socket: `http.sock` beside
    /// the daemon's socket.
    pub fn http_socket(&self) -> PathBuf {
        self.runtime_dir().join("http.sock")
    }

    /// Where the audit chain's anchor lives: with the vault, not with the log.
    pub fn audit_anchor(&self) -> PathBuf {
        self.state_dir.join("audit.anchor")
    }
}

/// `[broker]` checked: a loopback `tcp_listen` with a port, an
/// `idle_timeout` between a second and a day, and `[broker.testing]` only
/// in a daemon started with `--testing`.
fn broker_config(path: &Path, b: FileBroker, testing: bool) -> Result<BrokerConfig, ConfigError> {
    let bad = |message: String| ConfigError::Parse {
        path: path.into(),
        message,
    };
    let mut out = BrokerConfig::default();
    if let Some(t) = b.tcp_listen {
        let addr: std::net::SocketAddr = t.parse().map_err(|_| {
            bad(format!(
                "broker.tcp_listen: {t:?} is not an address and port such as \"127.0.0.1:8787\""
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(bad(format!(
                "broker.tcp_listen: {addr} is not a loopback address; the endpoint identifies callers by the kernel's table of local sockets"
            )));
        }
        if addr.port() == 0 {
            return Err(bad("broker.tcp_listen: the address needs a port".into()));
        }
        out.tcp_listen = Some(addr);
    }
    if let Some(q) = b.idle_timeout {
        let d = crate::policy::units::parse_duration(&q)
            .map_err(|m| bad(format!("broker.idle_timeout: {m}")))?;
        if d < Duration::from_secs(1) || d > MAX_BROKER_IDLE {
            return Err(bad(
                "broker.idle_timeout: must be between 1 second and 24 hours".into(),
            ));
        }
        out.idle_timeout = d;
    }
    if let Some(t) = b.testing {
        if !testing {
            return Err(ConfigError::TestingOnly { path: path.into() });
        }
        out.testing = Some(broker_testing(path, t)?);
    }
    Ok(out)
}

fn broker_testing(
    path: &Path,
    t: FileBrokerTesting,
) -> Result<aivault_proto::broker::BrokerTesting, ConfigError> {
    use aivault_proto::broker::{BrokerTesting, ResolveOverride};
    let bad = |message: String| ConfigError::Parse {
        path: path.into(),
        message,
    };
    let mut resolve = Vec::new();
    for (host, addrs) in t.resolve {
        if !aivault_broker::host::valid_host(&host) {
            return Err(bad(format!(
                "broker.testing.resolve: {host:?} is not a lower-case host name"
            )));
        }
        if addrs.is_empty() {
            return Err(bad(format!(
                "broker.testing.resolve: {host} has no address"
            )));
        }
        let addrs = addrs
            .iter()
            .map(|a| {
                a.parse::<std::net::SocketAddr>().map_err(|_| {
                    bad(format!(
                        "broker.testing.resolve: {host}: {a:?} is not an address and port such as \"127.0.0.1:8443\""
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        resolve.push(ResolveOverride { host, addrs });
    }
    let extra_roots_pem = match t.extra_roots {
        None => None,
        Some(roots) => Some(read_roots(path, &roots)?),
    };
    Ok(BrokerTesting {
        extra_roots_pem,
        resolve,
        allow_loopback: t.allow_loopback,
    })
}

/// Reads trust anchors (a root-owned PEM file) once, at start.
fn read_roots(path: &Path, roots: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let fail = |message: String| ConfigError::ExtraRoots {
        path: path.into(),
        roots: roots.into(),
        message,
    };
    crate::secure_fs::check_secure_file(roots).map_err(|e| fail(e.to_string()))?;
    let mut pem = Vec::new();
    std::fs::File::open(roots)
        .and_then(|f| f.take(MAX_EXTRA_ROOTS + 1).read_to_end(&mut pem))
        .map_err(|e| fail(e.to_string()))?;
    if pem.len() as u64 > MAX_EXTRA_ROOTS {
        return Err(fail(format!("larger than {MAX_EXTRA_ROOTS} bytes")));
    }
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(pem)
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

    fn load_with(text: &str, testing: bool) -> (tempfile::TempDir, Result<Config, ConfigError>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = text.replace("@DIR@", &dir.path().display().to_string());
        let path = dir.path().join("aivaultd.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = Config::load(&Overrides {
            config: Some(path),
            testing,
            ..Overrides::default()
        });
        (dir, cfg)
    }

    const TESTING: &str = "[broker]\ntcp_listen = \"127.0.0.1:8787\"\nidle_timeout = \"2m\"\n[broker.testing]\nallow_loopback = true\nextra_roots = \"@DIR@/ca.pem\"\nresolve = { \"api.openai.com\" = [\"127.0.0.1:8443\", \"[::1]:8443\"] }\n";

    #[test]
    fn broker_testing_is_refused_without_the_testing_flag() {
        let (_d, cfg) = load_with("[broker.testing]\nallow_loopback = true\n", false);
        let e = cfg.unwrap_err().to_string();
        assert!(
            e.contains("[broker.testing]") && e.contains("--testing"),
            "{e}"
        );
        // The flag alone changes nothing else.
        let (_d, cfg) = load_with("[broker]\nidle_timeout = 30\n", true);
        let cfg = cfg.unwrap();
        assert!(cfg.testing);
        assert_eq!(cfg.broker.testing, None);
        assert_eq!(cfg.broker.idle_timeout, Duration::from_secs(30));
    }

    #[test]
    fn broker_testing_with_the_flag_reads_roots_and_overrides() {
        use std::os::unix::fs::PermissionsExt;
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let (d, _) = load_with("", true);
        std::fs::write(d.path().join("ca.pem"), pem).unwrap();
        std::fs::set_permissions(
            d.path().join("ca.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let text = TESTING.replace("@DIR@", &d.path().display().to_string());
        let path = d.path().join("aivaultd.toml");
        std::fs::write(&path, text).unwrap();
        let cfg = Config::load(&Overrides {
            config: Some(path.clone()),
            testing: true,
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(
            cfg.broker.tcp_listen,
            Some("127.0.0.1:8787".parse().unwrap())
        );
        assert_eq!(cfg.broker.idle_timeout, Duration::from_secs(120));
        let t = cfg.broker.testing.unwrap();
        assert!(t.allow_loopback);
        assert_eq!(t.extra_roots_pem.as_deref(), Some(&pem[..]));
        assert_eq!(t.resolve.len(), 1);
        assert_eq!(t.resolve[0].host, "api.openai.com");
        assert_eq!(t.resolve[0].addrs[1], "[::1]:8443".parse().unwrap());
        // Not a certificate, or writable by others: refused.
        std::fs::write(d.path().join("ca.pem"), b"hello").unwrap();
        let e = Config::load(&Overrides {
            config: Some(path.clone()),
            testing: true,
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        // Larger than an init message can carry.
        let mut big = pem.to_vec();
        big.resize(200 << 10, b'\n');
        std::fs::write(d.path().join("ca.pem"), &big).unwrap();
        let e = Config::load(&Overrides {
            config: Some(path.clone()),
            testing: true,
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("larger than"), "{e}");
        std::fs::write(d.path().join("ca.pem"), pem).unwrap();
        std::fs::set_permissions(
            d.path().join("ca.pem"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let e = Config::load(&Overrides {
            config: Some(path),
            testing: true,
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("extra_roots"), "{e}");
    }

    #[test]
    fn broker_values_are_checked() {
        for (text, want) in [
            (
                "[broker]\ntcp_listen = \"0.0.0.0:8787\"\n",
                "not a loopback",
            ),
            ("[broker]\ntcp_listen = \"127.0.0.1:0\"\n", "needs a port"),
            ("[broker]\ntcp_listen = \"localhost:1\"\n", "not an address"),
            ("[broker]\nidle_timeout = \"0s\"\n", "between 1 second"),
            ("[broker]\nidle_timeout = \"2d\"\n", "unknown duration unit"),
            ("[broker]\nport = 1\n", "unknown field"),
            (
                "[broker.testing]\nresolve = { \"API.x.com\" = [\"127.0.0.1:1\"] }\n",
                "not a lower-case host name",
            ),
            (
                "[broker.testing]\nresolve = { \"api.x.com\" = [\"127.0.0.1\"] }\n",
                "not an address and port",
            ),
            (
                "[broker.testing]\nresolve = { \"api.x.com\" = [] }\n",
                "no address",
            ),
        ] {
            let (_d, cfg) = load_with(text, true);
            let e = cfg.unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let (_d, cfg) = load_with("", false);
        assert_eq!(cfg.unwrap().broker, BrokerConfig::default());
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
