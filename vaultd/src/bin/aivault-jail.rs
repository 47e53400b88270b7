//! `aivault-jail`: the jail host, executed by `aivaultd` before it loads
//! any key; the only process that creates processes under run uids. See
//! `aivaultd::jail`.
//!
//! Usage (by the daemon only): `aivault-jail --fd N --daemon-pid P --runner PATH`.

use std::os::fd::RawFd;
use std::path::PathBuf;

use aivaultd::jail::{host, JailKind};

const USAGE: &str = "usage: aivault-jail --fd N --daemon-pid PID --runner PATH \
                     (started by aivaultd; not for interactive use)";

struct Args {
    fd: RawFd,
    daemon_pid: i32,
    runner: PathBuf,
}

fn parse(mut argv: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
    let (mut fd, mut daemon_pid, mut runner) = (None, None, None);
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
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    match (fd, daemon_pid, runner) {
        (Some(fd), Some(daemon_pid), Some(runner)) if runner.is_absolute() => Ok(Args {
            fd,
            daemon_pid,
            runner,
        }),
        (_, _, Some(_)) | (_, _, None) => {
            Err("--fd, --daemon-pid and an absolute --runner are required".into())
        }
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
    std::process::exit(host::serve(sock, programs));
}
