//! `aivaultd`: thin binary over the `aivaultd` library.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::Arc;

use aivaultd::cli::{Cli, Command};
use aivaultd::config::{Config, Overrides};
use aivaultd::keys::{self, KdfParams, KeyProviderSpec};
use aivaultd::store::Vault;
use aivaultd::{ops::Daemon, secure_fs, server, service};
use anyhow::{bail, Context, Result};
use clap::Parser;
use zeroize::Zeroizing;

fn main() {
    let cli = Cli::parse();
    init_logging();
    if let Err(e) = run(cli) {
        eprintln!("aivaultd: {}", render_error(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once: a cause whose text an outer
/// message already includes (a `thiserror` message quoting its `source`, a
/// context repeating its error) is not repeated, and a missing file reads
/// "not found" rather than the raw OS error.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut not_found = Vec::new();
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                not_found.push(io.to_string());
            }
        }
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    for raw in not_found {
        out = out.replace(&raw, "not found");
    }
    out
}

/// Logs to the journal when there is one, else to stderr (docs/logging.md).
/// Journal fields carry each event field's own name in capitals, with no
/// prefix, so that `message_id` is the journal's `MESSAGE_ID`.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let journald = std::path::Path::new("/run/systemd/journal/socket")
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|layer| layer.with_field_prefix(None));
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .fmt_fields(stderr_fields())
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .init();
}

/// Fields as the default format writes them, without the `message_id`
/// meant for the journal.
fn stderr_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| match field.name() {
        "message" => write!(w, "{value:?}"),
        "message_id" => Ok(()),
        name => write!(w, " {name}={value:?}"),
    })
}

fn require_root() -> Result<()> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        bail!("aivaultd must run as root (uid 0); it was started as uid {uid}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    require_root()?;
    let ov = Overrides {
        config: cli.paths.config,
        state_dir: cli.paths.state_dir,
        socket: cli.paths.socket,
        policy_dir: cli.paths.policy_dir,
        audit_log: cli.paths.audit_log,
        key_provider: cli.paths.key_provider,
        dbus: cli.paths.dbus,
        testing: cli.testing,
    };
    let cfg = Config::load(&ov)?;
    if cfg.testing {
        tracing::warn!(
            testing = cfg.broker.testing.is_some(),
            "started with --testing: [broker.testing] is accepted (extra trust anchors, resolver overrides, loopback upstreams); for test suites only"
        );
    }
    if cli.check_config {
        return check_config(&cfg);
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cfg),
        Command::Init => init(&cfg),
        Command::Rekey {
            rotate_dek,
            new_key_provider,
        } => rekey(&cfg, rotate_dek, new_key_provider),
    }
}

/// Reads a passphrase: a no-echo prompt (asked twice when `confirm`) on a
/// terminal, otherwise one line of stdin.
fn read_passphrase(prompt: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if std::io::stdin().is_terminal() {
        let first = aivault_tty_prompt(prompt)?;
        if confirm && aivault_tty_prompt("Repeat passphrase: ")? != first {
            bail!("passphrases do not match");
        }
        Ok(first)
    } else {
        let mut buf = Zeroizing::new(Vec::new());
        std::io::stdin()
            .take(4096)
            .read_to_end(&mut buf)
            .context("reading passphrase from stdin")?;
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Ok(buf)
    }
}

fn aivault_tty_prompt(prompt: &str) -> Result<Zeroizing<Vec<u8>>> {
    aivault_proto::tty::prompt_no_echo(prompt).context("reading passphrase from the terminal")
}

/// Gives up what only the jail host needs: changing uid or gid, and
/// signalling or tracing other users' processes. From here on the daemon,
/// and every thread it starts, could not become a run's uid even if it
/// tried. (Capabilities are per thread: this runs before any other exists.)
fn drop_jail_capabilities() -> Result<()> {
    use caps::{CapSet, Capability};
    let jail_caps = [
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
        Capability::CAP_KILL,
        Capability::CAP_SYS_PTRACE,
        // The jail host's alone: mount a run's working directory
        // (`open_tree`, `mount_setattr`, a mount namespace per such run).
        Capability::CAP_SYS_ADMIN,
        Capability::CAP_SETPCAP,
    ];
    // From the bounding set too, while CAP_SETPCAP (last in the list) is
    // still held: no program the daemon executes (a key provider's helper)
    // could regain them. Without CAP_SETPCAP (the service's bounding set
    // lacks it) `no_new_privs` below has the same effect.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in jail_caps {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the daemon's bounding set"))?;
        }
    }
    for cap in jail_caps {
        for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
            caps::drop(None, set, cap)
                .with_context(|| format!("dropping {cap} from the daemon's {set:?} set"))?;
        }
    }
    // Nothing it executes from here on gains a privilege it lacks now
    // (for root that includes the capabilities just dropped).
    nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    Ok(())
}

fn check_dirs(cfg: &Config) -> Result<()> {
    secure_fs::check_secure_dir(&cfg.state_dir)
        .with_context(|| format!("state directory {}", cfg.state_dir.display()))?;
    if cfg.policy_dir.exists() {
        secure_fs::check_secure_dir(&cfg.policy_dir)
            .with_context(|| format!("policy directory {}", cfg.policy_dir.display()))?;
    }
    Ok(())
}

/// Refuses to create `dir` when its own parent is missing: aivaultd creates
/// the last directory of a path it is given (the packaged defaults', under
/// `/var/lib` and `/var/log`, outside systemd too), never a whole tree that a
/// mistyped path would conjure.
fn require_parent(dir: &Path, given: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "{}: directory {} not found; create it first (aivaultd creates only {})",
                given.display(),
                parent.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// The audit log's directory, if it has to be created.
fn audit_dir_to_create(cfg: &Config) -> Option<&Path> {
    cfg.audit_log
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
}

fn prepare_audit_dir(cfg: &Config) -> Result<()> {
    if let Some(dir) = audit_dir_to_create(cfg) {
        require_parent(dir, &cfg.audit_log)?;
        secure_fs::create_private_dir(dir)
            .with_context(|| format!("creating audit directory {}", dir.display()))?;
    }
    Ok(())
}

fn init(cfg: &Config) -> Result<()> {
    if !cfg.state_dir.exists() {
        require_parent(&cfg.state_dir, &cfg.state_dir)?;
    }
    if let Some(dir) = audit_dir_to_create(cfg) {
        require_parent(dir, &cfg.audit_log)?;
    }
    secure_fs::create_private_dir(&cfg.state_dir)
        .with_context(|| format!("creating state directory {}", cfg.state_dir.display()))?;
    check_dirs(cfg)?;
    if Vault::exists(&cfg.state_dir) {
        bail!(
            "a vault already exists in {}; refusing to overwrite it",
            cfg.state_dir.display()
        );
    }
    let (kek, kdf) = match &cfg.key_provider {
        KeyProviderSpec::File(path) if !path.exists() => {
            keys::generate_key_file(path)
                .with_context(|| format!("creating key file {}", path.display()))?;
            eprintln!("aivaultd: created key file {}", path.display());
            (keys::load_kek(&cfg.key_provider)?, None)
        }
        KeyProviderSpec::Passphrase => {
            let pass = read_passphrase("New vault passphrase: ", true)?;
            if pass.len() < 8 {
                bail!("the passphrase must be at least 8 bytes");
            }
            let kdf = KdfParams::generate()?;
            (Some(keys::kek_from_passphrase(&pass, &kdf)?), Some(kdf))
        }
        _ => (keys::load_kek(&cfg.key_provider)?, None),
    };
    let Some(kek) = kek else {
        bail!("the key provider yielded no key");
    };
    Vault::init(&cfg.state_dir, &kek, cfg.key_provider.kind(), kdf)?;
    prepare_audit_dir(cfg)?;
    eprintln!(
        "aivaultd: created an empty vault in {} (key provider {})",
        cfg.state_dir.display(),
        cfg.key_provider
    );
    Ok(())
}

/// Every check serving makes before it serves, reading only: nothing is
/// created, locked or written (a daemon may be serving meanwhile).
fn check_config(cfg: &Config) -> Result<()> {
    check_dirs(cfg)?;
    server::check_socket_dir(&cfg.socket)?;
    aivaultd::run::uidpool::UidPool::new(cfg.runs.uid_first, cfg.runs.uid_count)
        .context("[runs] uid_first/uid_count")?;
    if !Vault::exists(&cfg.state_dir) {
        bail!(
            "no vault in {}; create one with `aivaultd init`",
            cfg.state_dir.display()
        );
    }
    // Read from a copy: checking never writes, nor migrates an old vault.
    let found = Vault::inspect(&cfg.state_dir, None)?.provider_kind;
    let configured = cfg.key_provider.kind();
    if found != configured {
        bail!("vault was created for key provider {found:?} but {configured:?} is configured");
    }
    let (audit_key, key_line) = check_key(cfg)?;
    let audit = check_audit(cfg, audit_key.as_ref())?;
    let policy = aivaultd::policy::Policy::load(&cfg.policy_dir)
        .with_context(|| format!("policy in {}", cfg.policy_dir.display()))?;
    println!(
        "configuration ok: state {}, socket {}, key provider {}, D-Bus {}",
        cfg.state_dir.display(),
        cfg.socket.display(),
        cfg.key_provider,
        cfg.dbus
    );
    println!("key: {key_line}");
    println!(
        "broker: endpoint {}{}, idle processes stop after {}s{}",
        cfg.http_socket().display(),
        cfg.broker
            .tcp_listen
            .map(|a| format!(" and {a}"))
            .unwrap_or_default(),
        cfg.broker.idle_timeout.as_secs(),
        if cfg.broker.testing.is_some() {
            "; [broker.testing] in force (--testing)"
        } else {
            ""
        }
    );
    println!("audit log: {audit}");
    let reports = policy.explain();
    if reports.is_empty() {
        println!("policy: no rules; every run is refused");
    }
    for r in reports {
        println!("{} ({}): {}", r.rule, r.source, r.effect);
        for w in r.warnings {
            println!("    warning: {w}");
        }
    }
    Ok(())
}

/// Loads the key as serving does and unwraps the vault's data key with it;
/// the audit key it yields, and what was checked. A passphrase is asked
/// for only by `vaultctl unlock`, and a systemd credential is handed only
/// to the service: those are said to be unchecked.
fn check_key(cfg: &Config) -> Result<(Option<aivaultd::audit::AuditKey>, String)> {
    if let KeyProviderSpec::SystemdCreds(name) = &cfg.key_provider {
        if std::env::var_os(keys::CREDENTIALS_ENV).is_none() {
            return Ok((
                None,
                format!(
                    "systemd credential {name} not checked (${} is set only in the service's environment)",
                    keys::CREDENTIALS_ENV
                ),
            ));
        }
    }
    match keys::load_kek(&cfg.key_provider)? {
        Some(kek) => {
            Vault::inspect(&cfg.state_dir, Some(&kek))?;
            Ok((
                Some(aivaultd::audit::AuditKey::derive(kek.as_bytes())),
                "unwraps the vault's data key".to_string(),
            ))
        }
        None => Ok((None, "passphrase, checked by `vaultctl unlock`".to_string())),
    }
}

/// The audit log and its anchor as `vaultctl audit verify` checks them
/// (without the key, only that the log was not cut behind the anchor):
/// serving would go on from a damaged log, logging an error; checking
/// refuses it.
fn check_audit(cfg: &Config, key: Option<&aivaultd::audit::AuditKey>) -> Result<String> {
    let report = aivaultd::audit::AuditLog::check(
        &cfg.audit_log,
        &cfg.audit_anchor(),
        key,
        aivaultd::ops::UNKEYED_OPS,
    );
    if !report.ok {
        bail!(
            "audit log {} does not verify: {}",
            cfg.audit_log.display(),
            report.problems.join("; ")
        );
    }
    let mut line = match (report.last_seq, key) {
        (0, _) => "no records yet".to_string(),
        (n, Some(_)) => format!(
            "{} record{} up to seq {n}, chain and anchor intact",
            report.records,
            if report.records == 1 { "" } else { "s" }
        ),
        (n, None) => format!("ends at seq {n}, not behind its anchor"),
    };
    for note in report.notes {
        line.push_str("; ");
        line.push_str(&note);
    }
    Ok(line)
}

fn rekey(cfg: &Config, rotate_dek: bool, new_provider: Option<String>) -> Result<()> {
    check_dirs(cfg)?;
    if !rotate_dek && new_provider.is_none() {
        bail!("nothing to do: give --rotate-dek and/or --new-key-provider");
    }
    let _lock = aivaultd::store::lock_state_dir(&cfg.state_dir)?;
    let kek = match keys::load_kek(&cfg.key_provider)? {
        Some(k) => k,
        None => {
            let header = Vault::read_header(&cfg.state_dir)?;
            let kdf = header.kdf.context("vault has no passphrase parameters")?;
            let pass = read_passphrase("Current vault passphrase: ", false)?;
            keys::kek_from_passphrase(&pass, &kdf)?
        }
    };
    let mut vault = Vault::open(&cfg.state_dir, &kek)?;
    if rotate_dek {
        vault.rotate_dek()?;
        eprintln!("aivaultd: data-encryption key rotated");
    }
    if let Some(spec) = new_provider {
        let spec: KeyProviderSpec = spec.parse()?;
        let (new_kek, kdf) = match &spec {
            KeyProviderSpec::Passphrase => {
                let pass = read_passphrase("New vault passphrase: ", true)?;
                let kdf = KdfParams::generate()?;
                (keys::kek_from_passphrase(&pass, &kdf)?, Some(kdf))
            }
            KeyProviderSpec::File(path) => {
                if !path.exists() {
                    keys::generate_key_file(path)?;
                }
                (keys::load_kek(&spec)?.context("no key")?, None)
            }
            KeyProviderSpec::SystemdCreds(_) => (keys::load_kek(&spec)?.context("no key")?, None),
        };
        vault.rekey(&new_kek, spec.kind(), kdf)?;
        eprintln!("aivaultd: key-encryption key replaced; now using {spec}");
    }
    Ok(())
}

/// Refuses to serve on a socket another daemon answers on: binding would
/// unlink it and take its callers. A socket nobody answers on is a stale
/// one a killed daemon left; `server::bind` replaces it.
fn check_socket_free(socket: &Path) -> Result<()> {
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => bail!(
            "another aivaultd answers on {}; refusing to take its socket",
            socket.display()
        ),
        // Nothing there, or a socket nobody listens on: free to (re)bind.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Ok(())
        }
        // Anything else (a file that is no socket, no permission) is not
        // known to be stale: say so rather than remove it.
        Err(e) => bail!("cannot tell whether {} is in use: {e}", socket.display()),
    }
}

fn serve(cfg: Config) -> Result<()> {
    check_dirs(&cfg)?;
    server::check_socket_dir(&cfg.socket)?;
    // Under socket activation the socket is systemd's, and it answers.
    if std::env::var_os("LISTEN_FDS").is_none() {
        check_socket_free(&cfg.socket)?;
    }
    // The daemon never changes uid and never shares memory with a process
    // that does: the jail host, started now, before any key is loaded and
    // before any other thread exists, starts and ends every run process.
    let _ = nix::sys::prctl::set_dumpable(false);
    let runner = aivaultd::run::RunSettings::locate_runner(cfg.runs.runner.as_deref());
    let broker = aivaultd::run::RunSettings::locate_broker(None);
    let jail = aivaultd::jail::JailHost::start(
        &aivaultd::jail::locate(),
        &runner,
        &broker,
        cfg.runs.uid_first..cfg.runs.uid_first.saturating_add(cfg.runs.uid_count),
        aivaultd::jail::client::host_count(),
    )
    .context("starting the jail host")?;
    drop_jail_capabilities()?;
    prepare_audit_dir(&cfg)?;
    let lock = aivaultd::store::lock_state_dir(&cfg.state_dir)?;
    if let Err(e) = aivaultd::sys::raise_nofile_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let daemon = Arc::new(Daemon::open(cfg, jail)?);
    // Before any run of ours exists: what a killed predecessor left.
    aivaultd::run::spawn::sweep_stale_dirs(&daemon.runs().settings.runs_dir, |uid| {
        daemon.runs().pool.in_range(uid)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let socket = daemon.config().socket.clone();
        server::prepare_socket_dir(&socket)?;
        let (listener, bound) = match aivaultd::sys::inherited_listener() {
            Some(l) => (
                tokio::net::UnixListener::from_std(l).context("adopting the activated socket")?,
                false,
            ),
            None => (server::bind(&socket)?, true),
        };
        let runner_socket = daemon.runs().settings.runner_socket.clone();
        let runner_listener = server::bind(&runner_socket)?;
        tokio::spawn(daemon.runs().gate.clone().serve(runner_listener));
        tracing::info!(
            message_id = aivaultd::journal::READY,
            socket = %socket.display(),
            sealed = daemon.is_sealed(),
            activated = !bound,
            "aivaultd ready"
        );
        let broker = start_broker(&daemon, &socket).await?;
        let pool = daemon.runs().pool.clone();
        let _ = tokio::task::spawn_blocking(move || pool.refill(8)).await;
        aivaultd::run::warm::WarmPool::refill(&daemon.run_host());
        service::ready(&daemon);
        tokio::spawn(service::watchdog(daemon.clone(), socket.clone()));
        let (dbus_stop, dbus_stopped) = tokio::sync::watch::channel(false);
        let dbus = tokio::spawn(aivaultd::dbus::serve(
            daemon.clone(),
            daemon.config().dbus.clone(),
            dbus_stopped,
        ));
        server::serve(
            listener,
            daemon.clone(),
            service::until_stop(daemon.clone()),
        )
        .await;
        // No new D-Bus calls either while active runs finish.
        let _ = dbus_stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), dbus).await;
        // The brokers end before the runs are drained (their uids are
        // leased from the same pool).
        broker.stop().await;
        service::drain_runs(&daemon).await;
        if bound {
            let _ = std::fs::remove_file(&socket);
        }
        let _ = std::fs::remove_file(&runner_socket);
        drop(lock);
        Ok::<(), anyhow::Error>(())
    })
}

/// Starts the broker's pool and endpoint: `http.sock` beside `socket`
/// always (a caller the policy gives no capability is refused there), and
/// loopback TCP if `[broker] tcp_listen` says so. The pool is told of each
/// policy change through the daemon.
async fn start_broker(
    daemon: &Arc<Daemon>,
    socket: &Path,
) -> Result<aivaultd::broker::endpoint::Endpoint> {
    use aivaultd::broker::endpoint::{Endpoint, EndpointLimits};
    use aivaultd::broker::pool::{BrokerPool, FromRunHost, PoolSettings};
    let settings = &daemon.config().broker;
    let pool = BrokerPool::new(
        daemon.broker_host(),
        Arc::new(FromRunHost(daemon.run_host())),
        PoolSettings::with_idle_timeout(settings.idle_timeout),
    );
    daemon.set_broker_pool(pool.clone());
    let limits = &daemon.config().limits;
    let endpoint = Endpoint::start(
        pool,
        socket,
        settings.tcp_listen,
        EndpointLimits {
            max_connections: limits.max_connections,
            max_connections_per_uid: limits.max_connections_per_uid,
        },
    )
    .await
    .context("starting the broker's endpoint")?;
    daemon.set_broker_handover(endpoint.handover());
    tracing::info!(
        socket = %endpoint.unix_path().display(),
        tcp = ?endpoint.tcp_addr(),
        "broker endpoint listening"
    );
    Ok(endpoint)
}
