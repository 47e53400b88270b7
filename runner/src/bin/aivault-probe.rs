//! `aivault-probe`: run *inside* a sandbox, it attempts each check named on
//! its command line and prints one JSON object per line:
//! `{"check":"read:/etc/hostname","ok":true,"errno":null}`.
//!
//! Checks:
//! * `read:PATH` — open and read a byte (a directory: list it)
//! * `write:PATH` — create/append PATH, then remove it if created
//! * `exec:PATH` — run PATH without arguments, ok if it exits 0
//! * `environ` — read `/proc/self/environ`
//! * `ptrace:PID` — `PTRACE_ATTACH` (detaches on success)
//! * `ptrace-child` — spawn `/usr/bin/sleep` (same uid) and attach to it
//! * `mount` — mount a tmpfs on a path that does not exist
//! * `unshare` — `unshare(CLONE_NEWUSER)`
//! * `clone-newuser` — raw `clone(CLONE_NEWUSER)`
//! * `clone3` — raw `clone3` (the sandbox answers ENOSYS)
//! * `keyctl` — look up the session keyring
//! * `io_uring` — `io_uring_setup`
//! * `connect:HOST:PORT` — TCP connect; `bind:PORT` — TCP bind on 127.0.0.1
//! * `kill:PID` — signal 0
//! * `fd:N` — is descriptor N open
//! * `sleep:SECS` — report ok at once, then sleep (lets a test look at us)
//!
//! Exit status 0 whatever the results; 2 on a malformed check.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use aivault_runner::sys::probe;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

type Outcome = Result<(), Errno>;

fn io(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn read(path: &str) -> Outcome {
    let p = Path::new(path);
    if p.is_dir() {
        let mut entries = std::fs::read_dir(p).map_err(|e| io(&e))?;
        return entries.next().transpose().map(drop).map_err(|e| io(&e));
    }
    let mut f = std::fs::File::open(p).map_err(|e| io(&e))?;
    let mut byte = [0_u8; 1];
    f.read(&mut byte).map(drop).map_err(|e| io(&e))
}

fn write(path: &str) -> Outcome {
    let existed = Path::new(path).exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io(&e))?;
    f.write_all(b"probe\n").map_err(|e| io(&e))?;
    drop(f);
    if !existed {
        std::fs::remove_file(path).map_err(|e| io(&e))?;
    }
    Ok(())
}

fn exec(path: &str) -> Outcome {
    let status = Command::new(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| io(&e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Errno::ECHILD)
    }
}

fn attach(pid: Pid) -> Outcome {
    ptrace::attach(pid)?;
    let _ = nix::sys::wait::waitpid(pid, None);
    let _ = ptrace::detach(pid, None);
    Ok(())
}

fn ptrace_child() -> Outcome {
    let mut child = Command::new("/usr/bin/sleep")
        .arg("10")
        .spawn()
        .map_err(|e| io(&e))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(-1));
    let result = attach(pid);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn mount() -> Outcome {
    nix::mount::mount(
        Some("tmpfs"),
        "/nonexistent-aivault-probe-target",
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
}

fn connect(target: &str) -> Outcome {
    let addr: SocketAddr = target.parse().map_err(|_| Errno::EINVAL)?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(drop)
        .map_err(|e| io(&e))
}

fn bind(port: &str) -> Outcome {
    let port: u16 = port.parse().map_err(|_| Errno::EINVAL)?;
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|e| io(&e))
}

fn pid(arg: &str) -> Result<Pid, Errno> {
    arg.parse().map(Pid::from_raw).map_err(|_| Errno::EINVAL)
}

fn run(check: &str) -> Option<Outcome> {
    let (name, arg) = check.split_once(':').unwrap_or((check, ""));
    Some(match name {
        "read" => read(arg),
        "write" => write(arg),
        "exec" => exec(arg),
        "environ" => read("/proc/self/environ"),
        "ptrace" => pid(arg).and_then(attach),
        "ptrace-child" => ptrace_child(),
        "mount" => mount(),
        "unshare" => nix::sched::unshare(CloneFlags::CLONE_NEWUSER),
        "clone-newuser" => probe::clone_newuser(),
        "clone3" => probe::clone3(),
        "keyctl" => probe::keyctl(),
        "io_uring" => probe::io_uring_setup(),
        "connect" => connect(arg),
        "bind" => bind(arg),
        "kill" => pid(arg).and_then(|p| kill(p, None::<Signal>)),
        "fd" => arg
            .parse()
            .map_err(|_| Errno::EINVAL)
            .and_then(|fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD))
            .map(drop),
        "sleep" => {
            let secs: u64 = arg.parse().unwrap_or(1);
            report(check, &Ok(()));
            std::thread::sleep(Duration::from_secs(secs));
            return None;
        }
        _ => {
            eprintln!("aivault-probe: unknown check {check:?}");
            std::process::exit(2)
        }
    })
}

fn report(check: &str, outcome: &Outcome) {
    let line = serde_json::json!({
        "check": check,
        "ok": outcome.is_ok(),
        "errno": outcome.as_ref().err().map(|e| *e as i32),
    });
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn main() {
    for check in std::env::args().skip(1) {
        if let Some(outcome) = run(&check) {
            report(&check, &outcome);
        }
    }
}
