//! The jail host's side: a single-threaded loop that answers the daemon's
//! requests one at a time, in order.
//!
//! It runs in its own process (`aivault-jail`, executed by the daemon
//! before any key is loaded, so its memory never held one), as root, with
//! nothing of the daemon's but its socket. It is the only process that
//! creates processes under run uids: the jailed programs themselves
//! ([`crate::sys::spawn_jailed`]) and the teardown's killer
//! ([`crate::sys::kill_all_of_uid`]). Both are clones with a *copy* of
//! this process's memory, never a share of it, and even the copy holds
//! nothing worth reading: requests name uids, directories and kinds, never
//! a secret.
//!
//! It refuses to create anything as root (uid 0, gid 0 or group 0), starts
//! only the program fixed for each [`JailKind`] at its start, reaps only
//! its own children, and exits when the daemon closes the socket (and, by
//! `PR_SET_PDEATHSIG`, when the daemon dies).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::wire::{self, JailKind, Reply, Request, SpawnRequest, WorkdirRequest};
use crate::sys::{self, ChildIdentity, JailSpawn, Killed};

/// The executable of each kind, fixed when the jail host starts.
#[derive(Debug, Clone, Default)]
pub struct Programs {
    pub by_kind: HashMap<JailKind, PathBuf>,
}

/// The jail host's state: its programs, its live children, and `/dev/null`
/// for their stdin and stdout.
#[derive(Debug)]
struct Host {
    programs: Programs,
    /// The daemon's reserved run uids: a fresh-uid process is started only
    /// under one of them, and only they are ever killed wholesale.
    run_uids: std::ops::Range<u32>,
    children: HashSet<i32>,
    null_in: std::fs::File,
    null_out: std::fs::File,
    /// A child survived SIGKILL: stop serving after this reply.
    wedged: bool,
}

/// Serves requests on `sock` until the daemon closes it (or a child cannot
/// be ended: the host then stops serving, and the daemon counts it as
/// gone rather than have it hang). Returns the exit status for the process.
pub fn serve(sock: OwnedFd, programs: Programs, run_uids: std::ops::Range<u32>) -> i32 {
    let opened = std::fs::File::open("/dev/null").and_then(|i| {
        let o = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        Ok((i, o))
    });
    let Ok((null_in, null_out)) = opened else {
        eprintln!("aivault-jail: cannot open /dev/null");
        return 1;
    };
    let mut host = Host {
        programs,
        run_uids,
        children: HashSet::new(),
        null_in,
        null_out,
        wedged: false,
    };
    loop {
        let (reply, attach) = match wire::recv::<Request>(&sock) {
            Ok(None) => return 0,
            Ok(Some((req, fds))) => host.handle(req, fds),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                (failed("malformed request", &e), None)
            }
            Err(e) => {
                eprintln!("aivault-jail: the daemon's socket failed: {e}");
                return 1;
            }
        };
        let attached: Vec<_> = attach.iter().map(|f| f.as_fd()).collect();
        if let Err(e) = wire::send(sock.as_fd(), &reply, &attached) {
            eprintln!("aivault-jail: cannot answer the daemon: {e}");
            return 1;
        }
        if host.wedged {
            eprintln!("aivault-jail: a child could not be ended; this host stops serving");
            return 1;
        }
    }
}

/// Whether `fd` is a `SOCK_SEQPACKET` socket (a control channel).
fn is_seqpacket(fd: &OwnedFd) -> bool {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    matches!(getsockopt(fd, sockopt::SockType), Ok(SockType::SeqPacket))
}

fn failed(step: &str, e: &dyn std::fmt::Display) -> Reply {
    Reply::Failed {
        message: format!("{step}: {e}"),
    }
}

impl Host {
    fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> (Reply, Option<OwnedFd>) {
        match req {
            Request::Ping => (Reply::Pong, None),
            Request::Spawn(spec) => match self.spawn(&spec, fds) {
                Ok((pid, pidfd)) => (Reply::Spawned { pid }, Some(pidfd)),
                Err(reply) => (reply, None),
            },
            Request::Kill { uid, reap } => (self.kill(uid, reap), None),
            Request::Reap { pid } => (
                Reply::Reaped {
                    reaped: self.reap(pid),
                },
                None,
            ),
        }
    }

    fn spawn(&mut self, spec: &SpawnRequest, fds: Vec<OwnedFd>) -> Result<(i32, OwnedFd), Reply> {
        // (uid_t)-1 and (gid_t)-1 mean "unchanged" to setresuid/setresgid:
        // the process would stay root.
        let bad = |id: u32| id == 0 || id == u32::MAX;
        if bad(spec.uid) || bad(spec.gid) || spec.groups.iter().any(|&g| bad(g)) {
            return Err(Reply::Failed {
                message: "refusing to start a jailed process as root, group 0 or id -1".into(),
            });
        }
        // A run uid gets nothing but itself; any other uid (a caller-mode
        // run's, the caller's own) only inside a cgroup of its own.
        let fresh = self.run_uids.contains(&spec.uid);
        let shaped = if fresh {
            spec.gid == spec.uid && spec.groups.is_empty() && !spec.join_cgroup
        } else {
            spec.join_cgroup
        };
        if !shaped {
            return Err(Reply::Failed {
                message: "a run uid starts with its own gid, no groups and no cgroup; any other uid only in a cgroup".into(),
            });
        }
        // The broker and the gateway, and only they, get a control socket;
        // they run under a run uid of their own and never see a caller's files.
        let controlled = spec.kind.has_control();
        if spec.control != controlled || (controlled && (!fresh || spec.workdir.is_some())) {
            let message = if spec.kind == JailKind::Gateway {
                "a gateway gets a control socket; it runs under a run uid, without a working directory"
            } else {
                "a broker, and only a broker, gets a control socket; it runs under a run uid, without a working directory"
            };
            return Err(Reply::Failed {
                message: message.into(),
            });
        }
        let wanted = usize::from(spec.join_cgroup)
            + usize::from(spec.workdir.is_some())
            + usize::from(spec.control);
        if fds.len() != wanted {
            return Err(Reply::Failed {
                message: "the descriptors attached do not match the request".into(),
            });
        }
        let mut fds = fds.into_iter();
        let cgroup = if spec.join_cgroup { fds.next() } else { None };
        let workdir = match &spec.workdir {
            Some(w) => match fds.next() {
                Some(dir) => Some(self.workdir(spec, w, dir)?),
                None => None,
            },
            None => None,
        };
        let control = match fds.next() {
            Some(sock) if is_seqpacket(&sock) => Some(sock),
            Some(_) => {
                return Err(Reply::Failed {
                    message: "the control descriptor is not a SOCK_SEQPACKET socket".into(),
                })
            }
            None => None,
        };
        let Some(program) = self.programs.by_kind.get(&spec.kind) else {
            return Err(Reply::Failed {
                message: format!("no program for kind {}", spec.kind.as_str()),
            });
        };
        let cstr = |b: &[u8]| CString::new(b).map_err(|e| failed("argument", &e));
        let program = cstr(program.as_os_str().as_bytes())?;
        let cwd = cstr(spec.cwd.as_os_str().as_bytes())?;
        let args = spec
            .args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv: Vec<&std::ffi::CStr> = vec![&program];
        argv.extend(args.iter().map(|a| a.as_c_str()));
        let who = ChildIdentity {
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            cgroup_procs: cgroup.as_ref().map(|f| f.as_raw_fd()),
        };
        let pid = sys::spawn_jailed(&JailSpawn {
            program: &program,
            argv: &argv,
            cwd: &cwd,
            null_in: self.null_in.as_raw_fd(),
            null_out: self.null_out.as_raw_fd(),
            who: &who,
            workdir: workdir
                .as_ref()
                .map(|(mount, target)| (mount.as_raw_fd(), target.as_c_str())),
            control: control.as_ref().map(|c| c.as_raw_fd()),
        })
        .map_err(|e| {
            self.wedged |= e.kind() == io::ErrorKind::TimedOut;
            failed("starting the program", &e)
        })?;
        self.children.insert(pid);
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok((pid, pidfd)),
            Err(e) => {
                // Without a pidfd the daemon could not follow it: end it.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                match sys::wait(pid, sys::END_LIMIT) {
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => self.wedged = true,
                    _ => {
                        self.children.remove(&pid);
                    }
                }
                Err(failed("opening a pidfd", &e))
            }
        }
    }

    /// The mount of the caller's working directory `dir` for `spec`'s
    /// process, and where it goes. The caller's ids are shown as the
    /// process's only for a fresh run uid, never root's.
    fn workdir(
        &self,
        spec: &SpawnRequest,
        w: &WorkdirRequest,
        dir: OwnedFd,
    ) -> Result<(OwnedFd, CString), Reply> {
        let map = match w.caller {
            None if !self.run_uids.contains(&spec.uid) => None,
            Some((uid, gid)) if self.run_uids.contains(&spec.uid) && uid != 0 && gid != 0 => {
                Some(sys::IdMap {
                    caller_uid: uid,
                    caller_gid: gid,
                    run_uid: spec.uid,
                    run_gid: spec.gid,
                })
            }
            _ => {
                return Err(Reply::Failed {
                    message: "a working directory is mapped from a caller other than root to a run uid, or given unmapped to the caller itself".into(),
                })
            }
        };
        if !w.target.is_absolute() {
            return Err(Reply::Failed {
                message: "the working directory's mount point is not absolute".into(),
            });
        }
        let target =
            CString::new(w.target.as_os_str().as_bytes()).map_err(|e| failed("mount point", &e))?;
        let mount = sys::workdir_mount(dir.as_fd(), map, w.writable).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                // The service's sandbox withholds what the mount needs.
                failed(
                    "mounting the working directory (the service needs CAP_SYS_ADMIN, user and mount namespaces: the aivaultd-workdir.conf drop-in)",
                    &e,
                )
            } else {
                failed("mounting the working directory", &e)
            }
        })?;
        Ok((mount, target))
    }

    fn kill(&mut self, uid: u32, reap: Option<i32>) -> Reply {
        if !self.run_uids.contains(&uid) {
            return Reply::Failed {
                message: format!("uid {uid} is not a run uid; refusing to kill its processes"),
            };
        }
        // A jailed process that has ended is reaped first: its zombie
        // would otherwise count as a task of the uid left behind.
        let mut reaped = reap.is_some_and(|pid| self.reap(pid));
        match sys::kill_all_of_uid(uid) {
            Ok(killed) => {
                if let Some(pid) = reap.filter(|_| !reaped) {
                    reaped = self.reap(pid);
                }
                Reply::Killed {
                    none_left: killed == Killed::NoneLeft,
                    reaped,
                }
            }
            Err(e) => {
                self.wedged |= e.kind() == io::ErrorKind::TimedOut;
                failed("killing the uid's processes", &e)
            }
        }
    }

    /// Reaps `pid` if it is a child of this host and has ended.
    fn reap(&mut self, pid: i32) -> bool {
        if !self.children.contains(&pid) {
            return false;
        }
        let reaped = sys::reap_if_ended(pid);
        if reaped {
            self.children.remove(&pid);
        }
        reaped
    }
}
