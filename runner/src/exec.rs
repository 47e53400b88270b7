//! Starting the command: the pipes it talks through, and fork + `execveat`
//! of the executable the daemon opened for us (never a path lookup).
//!
//! Every pipe is created close-on-exec; the child's `dup2` onto 0/1/2 is
//! what it inherits. A separate close-on-exec *status* pipe tells the parent
//! whether exec succeeded: a successful exec closes it (the parent reads end
//! of file), a failed one writes errno into it first.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use aivault_runner::sys::{self, ChildFds, ExecVectors};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::unistd::{pipe2, Pid};

/// The four pipes of a run, created before confinement.
#[derive(Debug)]
pub struct Pipes {
    /// Runner writes, command reads (non-blocking on the runner's side).
    stdin: (OwnedFd, OwnedFd),
    /// Command writes, runner reads (non-blocking on the runner's side).
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
    /// Child writes errno if exec fails.
    status: (OwnedFd, OwnedFd),
}

/// The runner's ends after a successful exec.
#[derive(Debug)]
pub struct Started {
    pub pid: Pid,
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

/// Why the command did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start: fork failed: {}", .0.desc())]
    Fork(Errno),
    #[error("cannot execute: {}", .errno.desc())]
    Exec {
        /// The child, already reaped.
        errno: Errno,
    },
    #[error("cannot start: reading the exec status failed: {0}")]
    Status(io::Error),
}

impl SpawnError {
    /// Shell convention: 126 found but not executable, 127 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SpawnError::Exec { errno } => match errno {
                Errno::EACCES | Errno::EPERM | Errno::ENOEXEC => 126,
                _ => 127,
            },
            SpawnError::Fork(_) | SpawnError::Status(_) => 126,
        }
    }
}

impl Pipes {
    pub fn new() -> Result<Pipes, Errno> {
        let pipes = Pipes {
            stdin: pipe2(OFlag::O_CLOEXEC)?,
            stdout: pipe2(OFlag::O_CLOEXEC)?,
            stderr: pipe2(OFlag::O_CLOEXEC)?,
            status: pipe2(OFlag::O_CLOEXEC)?,
        };
        for fd in [&pipes.stdin.1, &pipes.stdout.0, &pipes.stderr.0] {
            set_nonblocking(fd.as_fd())?;
        }
        Ok(pipes)
    }

    /// Every descriptor, for `confine_keeping`.
    pub fn all(&self) -> [BorrowedFd<'_>; 8] {
        [
            self.stdin.0.as_fd(),
            self.stdin.1.as_fd(),
            self.stdout.0.as_fd(),
            self.stdout.1.as_fd(),
            self.stderr.0.as_fd(),
            self.stderr.1.as_fd(),
            self.status.0.as_fd(),
            self.status.1.as_fd(),
        ]
    }
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Forks and executes `exe`; waits only until exec succeeded or failed.
pub fn spawn(
    exe: BorrowedFd<'_>,
    pipes: Pipes,
    stdio: Option<BorrowedFd<'_>>,
    vectors: &ExecVectors,
) -> Result<Started, SpawnError> {
    let Pipes {
        stdin,
        stdout,
        stderr,
        status,
    } = pipes;
    let fds = ChildFds {
        exe,
        // With a socket for stdin and stdout, the pipes' child ends are
        // closed unused: the pump sees its stdout end at once and writes
        // no input (the daemon sends none).
        stdio: match stdio {
            Some(sock) => [sock, sock, stderr.1.as_fd()],
            None => [stdin.0.as_fd(), stdout.1.as_fd(), stderr.1.as_fd()],
        },
        status: status.1.as_fd(),
    };
    let pid = sys::fork_exec(&fds, vectors).map_err(SpawnError::Fork)?;
    // The child's ends must go, or the pipes never reach end of file.
    drop((stdin.0, stdout.1, stderr.1, status.1));

    let mut status = File::from(status.0);
    let mut report = [0u8; 4];
    let mut got = 0;
    while got < report.len() {
        match status.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                reap(pid);
                return Err(SpawnError::Status(e));
            }
        }
    }
    match got {
        0 => Ok(Started {
            pid,
            stdin: File::from(stdin.1),
            stdout: File::from(stdout.0),
            stderr: File::from(stderr.0),
        }),
        _ => {
            reap(pid);
            let errno = if got == report.len() {
                Errno::from_raw(i32::from_ne_bytes(report))
            } else {
                Errno::UnknownErrno
            };
            Err(SpawnError::Exec { errno })
        }
    }
}

/// Waits for a child that has exited or is about to (retrying on EINTR).
pub fn reap(pid: Pid) -> Option<nix::sys::wait::WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(Errno::EINTR) => {}
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        let code = |errno| SpawnError::Exec { errno }.exit_code();
        assert_eq!(code(Errno::EACCES), 126);
        assert_eq!(code(Errno::ENOEXEC), 126);
        assert_eq!(code(Errno::ENOENT), 127);
        assert_eq!(
            SpawnError::Exec {
                errno: Errno::EACCES
            }
            .to_string(),
            "cannot execute: Permission denied"
        );
    }
}
