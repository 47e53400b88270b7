//! The `aivault-runner` binary against the real kernel, with the test
//! playing the daemon's half of the contract: it binds the runner socket,
//! prepares a private home/tmp for an unused uid, starts the runner as that
//! uid, sends a `RunnerJob` with the command's open executable attached,
//! then the `RunnerSecrets` go-ahead, and collects the `RunnerEvent`s.
//!
//! These tests need root (CI runs them as root) and fail without it.
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aivault_proto::{RunInput, RunnerEvent, RunnerJob, RunnerSecrets, SecretBytes, Stream};
use aivault_runner::{Enforcement, Limits, SandboxSpec};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{Gid, Group, Pid, Uid, User};

const RUNNER: &str = env!("CARGO_BIN_EXE_aivault-runner");
const SECRET: &str = "tok-3f9a1c77e2b4d5c6";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runner tests must run as root (they switch to unused uids)"
    );
}

/// An unused uid/gid pair with no passwd/group entry, distinct per call.
fn fresh_ids() -> (u32, u32) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 64_500 + (std::process::id() % 400);
    loop {
        let n = 64_000 + (base - 64_000 + NEXT.fetch_add(1, Ordering::SeqCst)) % 1000;
        let free_user = matches!(User::from_uid(Uid::from_raw(n)), Ok(None));
        let free_group = matches!(Group::from_gid(Gid::from_raw(n)), Ok(None));
        if free_user && free_group {
            return (n, n);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A root-owned 0755 directory with the run's private dirs and the socket.
struct Fixture {
    root: tempfile::TempDir,
    uid: u32,
    gid: u32,
    listener: UnixListener,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let (uid, gid) = fresh_ids();
        let root = tempfile::Builder::new()
            .prefix("aivault-runner-")
            .tempdir()
            .expect("tempdir");
        set_mode(root.path(), 0o755);
        for private in ["home", "tmp"] {
            let dir = root.path().join(private);
            std::fs::create_dir(&dir).expect("mkdir");
            chown(&dir, Some(uid), Some(gid)).expect("chown");
            set_mode(&dir, 0o700);
        }
        let socket = root.path().join("runner.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        set_mode(&socket, 0o777);
        listener.set_nonblocking(true).expect("nonblocking");
        Self {
            root,
            uid,
            gid,
            listener,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            home: self.path("home"),
            tmp: self.path("tmp"),
            read: vec![],
            write: vec![],
            exec: vec![],
            cwd: None,
            cwd_writable: false,
            tcp_connect: vec![],
            tcp_bind: vec![],
            limits: Limits::default(),
            require_full_landlock: false,
            isolation: Default::default(),
        }
    }

    /// The job and its go-ahead.
    fn job(&self, argv: &[&str], secrets: &[(&str, &str, &str)]) -> (RunnerJob, RunnerSecrets) {
        let job = RunnerJob {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), self.path("home").display().to_string()),
                ("PLAIN".into(), "visible".into()),
            ],
            sandbox: self.spec(),
            max_output: 1 << 24,
        };
        let secrets = RunnerSecrets {
            secrets: secrets
                .iter()
                .map(|(name, var, value)| {
                    (
                        (*name).to_owned(),
                        (*var).to_owned(),
                        SecretBytes::new(value.as_bytes().to_vec()),
                    )
                })
                .collect(),
        };
        (job, secrets)
    }

    /// Starts the runner and sends the job, then at once the go-ahead.
    fn start(&self, exe: &Path, job: &(RunnerJob, RunnerSecrets)) -> Run {
        let mut run = self.launch(exe, &job.0);
        run.go(&job.1);
        run
    }

    /// Starts the runner and sends `job` with `exe` attached, no go-ahead.
    fn launch(&self, exe: &Path, job: &RunnerJob) -> Run {
        let exe = File::open(exe).expect("open executable");
        let (child, mut stream) = self.connected_runner(Stdio::inherit());
        let body = aivault_proto::encode(job).expect("encode job");
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let sent = aivault_runner::handoff::send_frame_with_fd(stream.as_fd(), &frame, exe.as_fd())
            .expect("send job");
        stream.write_all(&frame[sent..]).expect("send job");
        drop(exe);
        Run {
            child,
            stream: Some(stream),
            events: Events::default(),
        }
    }
}

impl Fixture {
    /// Starts the runner as the fixture's uid, as the daemon does, and
    /// accepts its connection; nothing is sent yet.
    fn connected_runner(&self, stderr: Stdio) -> (Child, UnixStream) {
        let mut child = Command::new(RUNNER)
            .arg("--socket")
            .arg(self.path("runner.sock"))
            .env_clear()
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn runner");
        let stream = accept(&self.listener, &mut child);
        (child, stream)
    }
}

fn accept(listener: &UnixListener, child: &mut Child) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                return stream;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("runner exited before connecting: {status}");
                }
                assert!(Instant::now() < deadline, "runner did not connect");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[derive(Debug, Default)]
struct Events {
    confined: Option<Enforcement>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Number of Output events.
    outputs: usize,
    exit: Option<(i32, bool, u64, Option<String>)>,
}

struct Run {
    child: Child,
    stream: Option<UnixStream>,
    events: Events,
}

impl Run {
    fn stream(&mut self) -> &mut UnixStream {
        self.stream.as_mut().expect("connection open")
    }

    /// Sends the go-ahead: the command starts once the runner has it.
    fn go(&mut self, secrets: &RunnerSecrets) {
        let body = aivault_proto::encode(secrets).expect("encode");
        aivault_proto::write_frame(self.stream(), &body).expect("send go-ahead");
    }

    fn send(&mut self, input: RunInput) {
        let body = aivault_proto::encode(&input).expect("encode");
        aivault_proto::write_frame(self.stream(), &body).expect("send input");
    }

    /// Reads one event into `events`; false at end of stream.
    fn next(&mut self) -> bool {
        let body = match aivault_proto::read_frame(self.stream()) {
            Ok(body) => body,
            Err(aivault_proto::FrameError::Closed) => return false,
            // The runner ended without reading the go-ahead sent at once
            // (it failed before confinement): the end of its events.
            Err(aivault_proto::FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                return false
            }
            Err(e) => panic!("reading events: {e}"),
        };
        match aivault_proto::decode(&body).expect("decode event") {
            RunnerEvent::Confined { enforcement } => {
                assert!(self.events.confined.is_none(), "Confined twice");
                self.events.confined = Some(enforcement);
            }
            RunnerEvent::Output { stream, data } => {
                assert!(!data.is_empty(), "empty Output event");
                assert!(self.events.exit.is_none(), "Output after Exit");
                self.events.outputs += 1;
                match stream {
                    Stream::Stdout => self.events.stdout.extend(data),
                    Stream::Stderr => self.events.stderr.extend(data),
                }
            }
            RunnerEvent::Exit {
                code,
                signaled,
                redactions,
                message,
            } => {
                assert!(self.events.exit.is_none(), "Exit twice");
                self.events.exit = Some((code, signaled, redactions, message));
            }
        }
        true
    }

    fn wait_confined(&mut self) {
        while self.events.confined.is_none() {
            assert!(self.next(), "no Confined event: {:?}", self.events);
        }
    }

    /// Waits for the runner once the test closed the connection itself.
    fn finish_closed(mut self) -> (Events, ExitStatus) {
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        (self.events, status)
    }

    /// Reads events until the runner closes the connection, then waits for
    /// the runner process.
    fn finish(mut self) -> (Events, ExitStatus) {
        while self.next() {}
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        (self.events, status)
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runner did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Processes of `uid` whose command name is `comm`.
fn processes_of(uid: u32, comm: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let name = status.lines().find_map(|l| l.strip_prefix("Name:\t"));
        let uid_line = status.lines().find_map(|l| l.strip_prefix("Uid:\t"));
        let real_uid = uid_line.and_then(|l| l.split('\t').next());
        if name == Some(comm) && real_uid == Some(uid.to_string().as_str()) {
            found.push(pid);
        }
    }
    found
}

// -------------------------------------------------------------------- cases

#[test]
fn secrets_reach_the_command_and_are_redacted() {
    let fx = Fixture::new();
    let job = fx.job(&["/usr/bin/env"], &[("TOKEN", "API_TOKEN", SECRET)]);
    let (events, status) = fx.start(Path::new("/usr/bin/env"), &job).finish();
    let enforcement = events.confined.expect("confined");
    assert!(enforcement.seccomp);
    let out = text(&events.stdout);
    assert!(out.contains("API_TOKEN=[REDACTED:TOKEN]\n"), "{out}");
    assert!(out.contains("PLAIN=visible\n"), "{out}");
    assert!(!out.contains(SECRET) && !text(&events.stderr).contains(SECRET));
    assert_eq!(events.exit, Some((0, false, 1, None)));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn exit_status_propagates() {
    let fx = Fixture::new();
    let job = fx.job(&["/usr/bin/false"], &[]);
    let (events, status) = fx.start(Path::new("/usr/bin/false"), &job).finish();
    assert!(events.confined.is_some());
    assert_eq!(events.exit, Some((1, false, 0, None)));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn stdin_is_forwarded() {
    let fx = Fixture::new();
    let job = fx.job(&["/usr/bin/cat"], &[]);
    let mut run = fx.start(Path::new("/usr/bin/cat"), &job);
    run.wait_confined();
    run.send(RunInput::Stdin(b"hello".to_vec()));
    run.send(RunInput::Stdin(b" world".to_vec()));
    run.send(RunInput::StdinEof);
    let (events, _) = run.finish();
    assert_eq!(text(&events.stdout), "hello world");
    assert_eq!(events.exit, Some((0, false, 0, None)));
}

#[test]
fn exec_outside_the_sandbox_is_refused() {
    let fx = Fixture::new();
    // A root-owned executable copy Landlock does not list as executable.
    let copy = fx.path("true");
    std::fs::copy("/usr/bin/true", &copy).expect("copy");
    set_mode(&copy, 0o755);
    let job = fx.job(&["/usr/bin/true"], &[]);
    let (events, status) = fx.start(&copy, &job).finish();
    assert!(
        events.confined.is_some(),
        "the failure is after confinement"
    );
    assert_eq!(
        events.exit,
        Some((
            126,
            false,
            0,
            Some("cannot execute: Permission denied".into())
        ))
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn scripts_cannot_run_from_a_descriptor() {
    // execveat of a close-on-exec descriptor cannot hand a script to its
    // interpreter (it would need /dev/fd/3): ENOENT, reported as 127.
    let fx = Fixture::new();
    let script = fx.path("script");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    set_mode(&script, 0o755);
    let mut job = fx.job(&["script"], &[]);
    let mut spec = fx.spec();
    spec.exec.push(script.clone());
    job.0.sandbox = spec;
    let (events, _) = fx.start(&script, &job).finish();
    assert_eq!(
        events.exit,
        Some((
            127,
            false,
            0,
            Some("cannot execute: No such file or directory".into())
        ))
    );
}

#[test]
fn failed_confinement_never_runs_the_command() {
    let fx = Fixture::new();
    let mut job = fx.job(&["/usr/bin/true"], &[]);
    let mut spec = fx.spec();
    spec.home = fx.path("missing");
    job.0.sandbox = spec;
    let (events, status) = fx.start(Path::new("/usr/bin/true"), &job).finish();
    assert!(events.confined.is_none());
    let (code, signaled, _, message) = events.exit.expect("exit");
    assert_eq!((code, signaled), (126, false));
    let message = message.expect("message");
    assert!(message.starts_with("sandbox: "), "{message}");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn only_termination_signals_are_forwarded() {
    let fx = Fixture::new();
    let job = fx.job(&["/usr/bin/sleep", "30"], &[]);
    let started = Instant::now();
    let mut run = fx.start(Path::new("/usr/bin/sleep"), &job);
    run.wait_confined();
    std::thread::sleep(Duration::from_millis(200));
    run.send(RunInput::Signal(libc::SIGKILL));
    run.send(RunInput::Signal(libc::SIGSTOP));
    std::thread::sleep(Duration::from_millis(100));
    run.send(RunInput::Signal(libc::SIGTERM));
    let (events, status) = run.finish();
    assert_eq!(events.exit, Some((143, true, 0, None)));
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn daemon_disconnect_kills_the_command() {
    let fx = Fixture::new();
    let job = fx.job(&["/usr/bin/sleep", "30"], &[]);
    let mut run = fx.start(Path::new("/usr/bin/sleep"), &job);
    run.wait_confined();
    let deadline = Instant::now() + Duration::from_secs(2);
    let pid = loop {
        if let Some(&pid) = processes_of(fx.uid, "sleep").first() {
            break pid;
        }
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(run.stream.take());
    let deadline = Instant::now() + Duration::from_secs(2);
    while kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
        assert!(Instant::now() < deadline, "command survived the daemon");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = wait_timeout(&mut run.child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[test]
fn a_secret_split_across_writes_is_redacted() {
    let fx = Fixture::new();
    let script = "printf abcdefgh; sleep 0.3; printf ijklmnop";
    let job = fx.job(
        &["/bin/sh", "-c", script],
        &[("SPLIT", "SPLIT_VALUE", "abcdefghijklmnop")],
    );
    let (events, _) = fx.start(Path::new("/bin/sh"), &job).finish();
    assert_eq!(text(&events.stdout), "[REDACTED:SPLIT]");
    assert_eq!(events.exit, Some((0, false, 1, None)));
}

#[test]
fn prompts_appear_before_input() {
    // The trailing "a" could begin the secret, so it is held back until the
    // stream has been idle; the prompt must still arrive.
    let fx = Fixture::new();
    let script = "printf 'say a'; read x; echo \"got $x\"";
    let job = fx.job(
        &["/bin/sh", "-c", script],
        &[("SECRET", "SECRET", "abcdefghijklmnop")],
    );
    let mut run = fx.start(Path::new("/bin/sh"), &job);
    while run.events.stdout != b"say a" {
        assert!(run.next(), "no prompt: {:?}", run.events);
    }
    run.send(RunInput::Stdin(b"ok\n".to_vec()));
    let (events, _) = run.finish();
    assert_eq!(text(&events.stdout), "say agot ok\n");
    assert_eq!(events.exit, Some((0, false, 0, None)));
}

#[test]
fn large_output_arrives_whole_and_stderr_is_separate() {
    let fx = Fixture::new();
    let script = "head -c 1000000 /dev/zero; echo oops >&2";
    let job = fx.job(&["/bin/sh", "-c", script], &[]);
    let (events, _) = fx.start(Path::new("/bin/sh"), &job).finish();
    assert_eq!(events.stdout.len(), 1_000_000);
    assert!(events.stdout.iter().all(|&b| b == 0));
    assert_eq!(text(&events.stderr), "oops\n");
    assert!(events.outputs >= 2);
    assert_eq!(events.exit, Some((0, false, 0, None)));
}

#[test]
fn started_by_hand_it_refuses() {
    let output = Command::new(RUNNER).output().expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("started by aivaultd"));
    assert_eq!(output.status.signal(), None);
}

#[test]
fn the_command_inherits_no_descriptor_above_two() {
    // Neither fd 3, nor the daemon socket (4), nor the runner's pipe ends
    // (5 and up). dash takes single-digit descriptor numbers only.
    let fx = Fixture::new();
    let script = "for fd in 3 4 5 6 7 8 9; do \
                  if { true <&$fd; } 2>/dev/null; then echo $fd; fi; done; echo end";
    let job = fx.job(&["/bin/sh", "-c", script], &[]);
    let (events, _) = fx.start(Path::new("/bin/sh"), &job).finish();
    assert_eq!(text(&events.stdout), "end\n", "{events:?}");
    assert_eq!(events.exit, Some((0, false, 0, None)));
}

#[test]
fn a_background_process_holding_the_pipes_does_not_stall_the_exit() {
    let fx = Fixture::new();
    let job = fx.job(&["/bin/sh", "-c", "sleep 5 & echo started"], &[]);
    let begun = Instant::now();
    let (events, status) = fx.start(Path::new("/bin/sh"), &job).finish();
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(text(&events.stdout), "started\n");
    assert_eq!(events.exit, Some((0, false, 0, None)));
    assert_eq!(status.code(), Some(0));
    // Cleaning up the uid is the daemon's job; do it here.
    for pid in processes_of(fx.uid, "sleep") {
        let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn death_by_signal_is_reported_as_128_plus_n() {
    let fx = Fixture::new();
    let job = fx.job(&["/bin/sh", "-c", "kill -9 $$"], &[]);
    let (events, _) = fx.start(Path::new("/bin/sh"), &job).finish();
    assert_eq!(events.exit, Some((137, true, 0, None)));
}

#[test]
fn without_the_go_ahead_the_command_never_starts() {
    // The daemon sends the job while it audits the decision; if the record
    // cannot be written it closes the connection instead of the go-ahead.
    let fx = Fixture::new();
    let marker = fx.path("tmp/ran");
    let script = format!("echo ran > {}", marker.display());
    let (job, _) = fx.job(
        &["/bin/sh", "-c", &script],
        &[("TOKEN", "API_TOKEN", SECRET)],
    );
    let mut run = fx.launch(Path::new("/bin/sh"), &job);
    run.wait_confined();
    drop(run.stream.take());
    let (events, status) = run.finish_closed();
    assert_eq!(events.exit, None, "no Exit for a withdrawn run");
    assert_eq!(status.code(), Some(1));
    assert!(!marker.exists(), "the command ran without its go-ahead");
    assert!(processes_of(fx.uid, "sh").is_empty());
}

#[test]
fn a_job_without_its_executable_is_refused() {
    let fx = Fixture::new();
    let (mut child, mut stream) = fx.connected_runner(Stdio::piped());
    let (job, _) = fx.job(&["/usr/bin/true"], &[]);
    let body = aivault_proto::encode(&job).expect("encode");
    aivault_proto::write_frame(&mut stream, &body).expect("send job");
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err).expect("stderr");
    assert!(
        err.contains("without exactly one executable descriptor"),
        "{err}"
    );
}
