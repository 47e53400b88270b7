//! A no-echo terminal prompt for passphrases and secret values, shared by
//! `vaultctl` and `aivaultd init`.

use std::io::{self, BufRead, Write};

use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
use zeroize::Zeroizing;

/// Restores the terminal's echo setting even if reading fails or panics.
struct EchoGuard<'a> {
    fd: std::io::StdinLock<'a>,
    saved: nix::sys::termios::Termios,
}

impl Drop for EchoGuard<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Prints `prompt` on stderr and reads one line from the terminal on stdin
/// with echo off. The trailing newline is removed; the buffer is wiped on drop.
pub fn prompt_no_echo(prompt: &str) -> io::Result<Zeroizing<Vec<u8>>> {
    let stdin = io::stdin();
    let lock = stdin.lock();
    let saved = tcgetattr(&lock).map_err(io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&lock, SetArg::TCSANOW, &quiet).map_err(io::Error::from)?;
    let mut guard = EchoGuard { fd: lock, saved };
    let mut err = io::stderr();
    err.write_all(prompt.as_bytes())?;
    err.flush()?;
    let mut line = Zeroizing::new(Vec::new());
    guard.fd.read_until(b'\n', &mut line)?;
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    drop(guard);
    Ok(line)
}
