//! `aivault-jail`: the jail host, executed by `aivaultd` before it loads
//! any key; the only process that creates processes under run uids. See
//! `aivaultd::jail`.
//!
//! Usage (by the daemon only):
//! `aivault-jail --fd N --daemon-pid P --runner PATH [--broker PATH] [--gateway PATH] --run-uids FIRST:COUNT`.

use std::os::fd::RawFd;
use std::path::PathBuf;

use aivaultd::jail::{host, JailKind};

const USAGE: &str = "usage: aivault-jail --fd N --daemon-pid PID --runner PATH \
                     [--broker PATH] [--gateway PATH] --run-uids FIRST:COUNT (started by aivaultd; not for \
                     interactive use)";

struct Args {
    fd: RawFd,
    daemon_pid: i32,
    runner: PathBuf,
    /// Without it no broker can be started.
    broker: Option<PathBuf>,
    /// Without it no gateway can be started.
    gateway: Option<PathBuf>,
    run_uids: std::ops::Range<u32>,
}

/// `FIRST:COUNT`, a non-empty range of uids that excludes 0 and -1.
fn uid_range(v: &str) -> Option<std::ops::Range<u32>> {
    let (first, count) = v.split_once(':')?;
    let (first, count): (u32, u32) = (first.parse().ok()?, count.parse().ok()?);
    let end = first.checked_add(count)?;
    (first > 0 && count > 0 && end < u32::MAX).then_some(first..end)
}

fn parse(mut argv: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
    let (mut fd, mut daemon_pid, mut runner, mut run_uids) = (None, None, None, None);
    let mut broker = None;
    let mut gateway = None;
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        let number = || value.to_str().and_then(|v| v.parse::<i32>().ok());
        match flag.to_str() {
            Some("--fd") => {
                fd = Some(
                    number()
                        .filter(|n| *n > 2)
                        .ok_or("--fd: not a descriptor above 2")?,
                )
            }
            Some("--daemon-pid") => {
                daemon_pid = Some(
                    number()
                        .filter(|n| *n > 0)
                        .ok_or("--daemon-pid: not a pid")?,
                )
            }
            Some("--runner") => runner = Some(PathBuf::from(value)),
            Some("--broker") => {
                let path = PathBuf::from(value);
                if !path.is_absolute() {
                    return Err("--broker: not an absolute path".into());
                }
                broker = Some(path);
            }
            Some("--gateway") => {
                let path = PathBuf::from(value);
                if !path.is_absolute() {
                    return Err("--gateway: not an absolute path".into());
                }
                gateway = Some(path);
            }
            Some("--run-uids") => {
                run_uids = Some(
                    value
                        .to_str()
                        .and_then(uid_range)
                        .ok_or("--run-uids: not FIRST:COUNT of uids above 0")?,
                )
            }
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    match (fd, daemon_pid, runner, run_uids) {
        (Some(fd), Some(daemon_pid), Some(runner), Some(run_uids)) if runner.is_absolute() => {
            Ok(Args {
                fd,
                daemon_pid,
                runner,
                broker,
                gateway,
                run_uids,
            })
        }
        _ => Err("--fd, --daemon-pid, an absolute --runner and --run-uids are required".into()),
    }
}

fn main() {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aivault-jail: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("aivault-jail: must run as root (started by aivaultd)");
        std::process::exit(1);
    }
    // Die with the daemon; then check it is still the one that started us
    // (it may have died before the line above took effect).
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        eprintln!("aivault-jail: cannot tie its life to the daemon's: {e}");
        std::process::exit(1);
    }
    if nix::unistd::getppid().as_raw() != args.daemon_pid {
        eprintln!("aivault-jail: the daemon that started it is gone");
        std::process::exit(1);
    }
    if let Err(e) = aivaultd::sys::close_fds_except(args.fd) {
        eprintln!("aivault-jail: cannot close inherited descriptors: {e}");
        std::process::exit(1);
    }
    let sock = match aivaultd::sys::adopt_socket(args.fd) {
        Some(s) => s,
        None => {
            eprintln!("aivault-jail: descriptor {} is not a socket", args.fd);
            std::process::exit(1);
        }
    };
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_name(c"aivault-jail");
    // The daemon ends it by closing the socket; the service manager's
    // signals for the daemon's group must not cut a teardown in half.
    let mut blocked = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGPIPE,
    ] {
        blocked.add(s);
    }
    let _ = blocked.thread_block();
    let mut programs = host::Programs::default();
    programs.by_kind.insert(JailKind::Runner, args.runner);
    if let Some(broker) = args.broker {
        programs.by_kind.insert(JailKind::Broker, broker);
    }
    if let Some(gateway) = args.gateway {
        programs.by_kind.insert(JailKind::Gateway, gateway);
    }
    std::process::exit(host::serve(sock, programs, args.run_uids));
}
