//! A stand-in for `aivault-broker` in the broker pool's tests, started by
//! the jail host as [`aivaultd::jail::JailKind::Broker`]: it reads its
//! control socket on descriptor 3, reports itself on each connection it is
//! handed (uid, gid, groups, the descriptors it started with, its pid, the
//! connection number, its init), asks to authorize one request and writes
//! the answer, then says it is done. What it does wrong on purpose is in
//! the init's `capabilities` text (the tests' host puts it there):
//! `confine-error`, `bad-conn`, `crash-after-first`, `done-after-deny`,
//! `ignore-shutdown`, `cap=NAME`.
//!
//! With arguments it is a client instead: `connect-unix PATH` or
//! `connect-tcp ADDR` connects, sends a request line and prints what comes
//! back until the end (the tests run it as other users).
#![forbid(unsafe_code)]

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::RawFd;

use aivault_proto::broker::{FromBroker, ToBroker, CONTROL_FD, MAX_CONTROL};
use aivault_proto::{Enforcement, Level};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessageOwned, MsgFlags};

fn recv() -> Option<(ToBroker, Vec<RawFd>)> {
    let mut buf = vec![0u8; MAX_CONTROL];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(CONTROL_FD, &mut iov, Some(&mut space), MsgFlags::empty()).ok()?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            fds.extend(raw);
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return None;
    }
    Some((postcard::from_bytes(&buf[..n]).ok()?, fds))
}

fn send(msg: &FromBroker) {
    let body = postcard::to_stdvec(msg).expect("encode");
    let _ = sendmsg::<()>(
        CONTROL_FD,
        &[IoSlice::new(&body)],
        &[],
        MsgFlags::empty(),
        None,
    );
}

/// `1,2,3`: one word.
fn list<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn write_to(fd: RawFd, text: &str) {
    let _ = nix::sys::socket::send(fd, text.as_bytes(), MsgFlags::MSG_NOSIGNAL);
}

/// Sends a request line (unless `quiet`), then reads to the end; what
/// came back is printed even if the read ended in an error.
fn exchange(mut s: impl Read + Write, quiet: bool, out: &mut Vec<u8>) -> std::io::Result<usize> {
    if !quiet {
        s.write_all(b"GET /ok/x HTTP/1.1\r\n\r\n")?;
    }
    s.read_to_end(out)
}

fn client(how: &str, target: &str) {
    let mut out = Vec::new();
    let quiet = how.ends_with("-quiet");
    let read = if how.starts_with("connect-unix") {
        std::os::unix::net::UnixStream::connect(target).and_then(|s| exchange(s, quiet, &mut out))
    } else {
        std::net::TcpStream::connect(target).and_then(|s| exchange(s, quiet, &mut out))
    };
    print!("{}", String::from_utf8_lossy(&out));
    if let Err(e) = read {
        print!("\nerror: {e}");
    }
}

/// Reads what the client sent so far, without waiting (closing a socket
/// with unread data resets the connection).
fn drain(fd: RawFd) {
    let mut buf = [0u8; 4096];
    while matches!(nix::sys::socket::recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT), Ok(n) if n > 0) {}
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [how, target] = args.as_slice() {
        return client(how, target);
    }
    // Before anything here opens one: the descriptors it was started with.
    let fds: Vec<RawFd> = (0..1024)
        .filter(|&fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok())
        .collect();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let groups: Vec<u32> = nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    let Some((ToBroker::Init(init), _)) = recv() else {
        std::process::exit(2);
    };
    let mode = init.capabilities.clone();
    if mode.contains("confine-error") {
        send(&FromBroker::Confined(Err(format!(
            "the test asks for a refusal (uid={uid})"
        ))));
        std::process::exit(1);
    }
    send(&FromBroker::Confined(Ok(Enforcement {
        landlock_abi: 0,
        landlock: Level::None,
        net_restricted: false,
        scoped_signals: false,
        scoped_abstract_unix: false,
        seccomp: false,
    })));
    let capability = mode
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cap="))
        .unwrap_or("ok")
        .to_string();
    // Connections handed over while a request waits for its answer are
    // served after it.
    let mut queued: std::collections::VecDeque<(ToBroker, Vec<RawFd>)> = Default::default();
    loop {
        let next = queued.pop_front().or_else(recv);
        match next {
            Some((ToBroker::Connection { conn }, got)) if got.len() == 1 => {
                let fd = got[0];
                write_to(
                    fd,
                    &format!(
                        "uid={uid} gid={gid} groups=[{}] fds=[{}] pid={} conn={conn} home={} init={mode}\n",
                        list(&groups),
                        list(&fds),
                        std::process::id(),
                        init.home.display()
                    ),
                );
                let asked = if mode.contains("bad-conn") {
                    conn + 100
                } else {
                    conn
                };
                send(&FromBroker::Authorize {
                    req: conn,
                    conn: asked,
                    capability: capability.clone(),
                    method: "GET".into(),
                    path: "/x".into(),
                });
                let answer = loop {
                    match recv() {
                        Some((ToBroker::Grant { req, secret, .. }, _)) if req == conn => {
                            break format!(
                                "grant {}\n",
                                String::from_utf8_lossy(secret.as_bytes())
                            );
                        }
                        Some((ToBroker::Deny { req, reason, .. }, _)) if req == conn => {
                            break format!("deny {reason:?}\n");
                        }
                        Some(other @ (ToBroker::Connection { .. }, _)) => queued.push_back(other),
                        Some(_) => {}
                        None => std::process::exit(0),
                    }
                };
                write_to(fd, &answer);
                if answer.starts_with("grant") && mode.contains("tokens") {
                    let times = if mode.contains("tokens-twice") { 2 } else { 1 };
                    for _ in 0..times {
                        send(&FromBroker::TokensRefreshed {
                            req: conn,
                            access_token: aivault_proto::SecretBytes::new(b"at-new".to_vec()),
                            expires_in_s: Some(60),
                            refresh_token: None,
                        });
                    }
                }
                if answer.starts_with("grant") || mode.contains("done-after-deny") {
                    send(&FromBroker::Done {
                        req: conn,
                        status: Some(200),
                        request_bytes: 1,
                        response_bytes: 2,
                        duration_us: 3,
                        error: None,
                    });
                }
                drain(fd);
                let _ = nix::unistd::close(fd);
                if mode.contains("crash-after-first") {
                    std::process::exit(3);
                }
            }
            Some((ToBroker::Shutdown, _)) if mode.contains("ignore-shutdown") => {}
            Some((ToBroker::Shutdown, _)) | None => std::process::exit(0),
            Some(_) => {}
        }
    }
}
