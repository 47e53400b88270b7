//! The broker's process side against the real jail host and real
//! processes (as root): `aivault-test-broker` stands in for the broker
//! (`tests/src/bin/aivault-test-broker.rs`), a fake `BrokerHost` for the
//! daemon's decisions.
//!
//! * a broker gets its control socket on descriptor 3 and nothing else
//!   above 2, under a leased run uid with its own gid and no groups;
//! * one broker per caller uid, however many connections arrive at once;
//! * authorize goes through the host, grant and deny reach the broker,
//!   done reaches the host;
//! * a broker naming a connection it was not given is killed, its uid
//!   returned; one that fails to confine itself is killed and the
//!   connection refused; no capability starts nothing;
//! * idle, policy change and crash end a broker and return its uid; the
//!   next connection starts a new one;
//! * the endpoint identifies Unix and loopback TCP callers by the kernel.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aivault_proto::broker::{BrokerInit, DenyReason};
use aivault_proto::{Limits, SecretBytes};
use aivault_tests::{bin, require_root, User};
use aivaultd::broker::endpoint::{Endpoint, EndpointLimits};
use aivaultd::broker::pool::{BrokerPool, BrokerProcesses, PoolSettings, Refused};
use aivaultd::broker::{Ask, BrokerHost, Denied, Granted, Outcome, Tokens};
use aivaultd::caller::Caller;
use aivaultd::jail::JailHost;
use aivaultd::run::uidpool::UidPool;

/// The jail host, run uids and runs directory every test here shares.
struct Procs {
    jail: JailHost,
    uids: UidPool,
    runs: PathBuf,
    _dir: tempfile::TempDir,
}

impl BrokerProcesses for Procs {
    fn jail(&self) -> &JailHost {
        &self.jail
    }
    fn uids(&self) -> &UidPool {
        &self.uids
    }
    fn runs_dir(&self) -> &Path {
        &self.runs
    }
}

fn procs() -> Arc<Procs> {
    static PROCS: OnceLock<Arc<Procs>> = OnceLock::new();
    PROCS
        .get_or_init(|| {
            require_root();
            let first = 0x6b00_0000 + (std::process::id() % 0x1000) * 0x100;
            let count = 0x100;
            // The jail host dies with the thread that started it
            // (PR_SET_PDEATHSIG): one that lives as long as the tests.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let jail = JailHost::start(
                    &bin("aivault-jail"),
                    Path::new("/nonexistent/aivault-runner"),
                    Path::new(env!("CARGO_BIN_EXE_aivault-test-broker")),
                    first..first + count,
                    1,
                )
                .expect("starting the jail host");
                tx.send(jail).unwrap();
                loop {
                    std::thread::park();
                }
            });
            let jail = rx.recv().unwrap();
            let dir = tempfile::tempdir().unwrap();
            // Brokers traverse to their own directory below it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            Arc::new(Procs {
                jail,
                uids: UidPool::new(first, count).unwrap(),
                runs: dir.path().join("runs"),
                _dir: dir,
            })
        })
        .clone()
}

/// The daemon's decisions, faked: per caller uid a mode for the stand-in
/// broker (none: no capability); capability `ok` is granted with secret
/// `s3cret`, any other denied.
#[derive(Default)]
struct FakeHost {
    modes: Mutex<HashMap<u32, String>>,
    finished: Mutex<Vec<(u32, String, Option<u16>)>>,
    tokens: Mutex<Vec<(u32, String, Vec<u8>)>>,
}

impl FakeHost {
    fn with(modes: &[(u32, &str)]) -> Arc<Self> {
        let host = FakeHost::default();
        for (uid, mode) in modes {
            host.modes.lock().unwrap().insert(*uid, mode.to_string());
        }
        Arc::new(host)
    }
}

impl BrokerHost for FakeHost {
    fn broker_init(&self, caller: &Caller) -> Option<BrokerInit> {
        let mode = self.modes.lock().unwrap().get(&caller.uid)?.clone();
        Some(BrokerInit {
            capabilities: format!("{mode} caller={}", caller.uid),
            tcp_connect: vec![],
            home: "/unset".into(),
            tmp: "/unset".into(),
            limits: Limits::default(),
            require_full_landlock: false,
            testing: None,
        })
    }

    fn authorize(&self, _caller: &Caller, ask: &Ask<'_>) -> Result<Granted, Denied> {
        if ask.capability == "oauth" {
            Ok(Granted {
                secret: SecretBytes::new(Vec::new()),
                extra: vec![("refresh_token".into(), SecretBytes::new(b"rt".to_vec()))],
                refreshable: true,
            })
        } else if ask.capability == "ok" {
            Ok(Granted::plain(SecretBytes::new(b"s3cret".to_vec())))
        } else {
            Err(Denied {
                reason: DenyReason::Forbidden,
                message: "no".into(),
                retry_after_s: None,
            })
        }
    }

    fn tokens_refreshed(
        &self,
        caller: &Caller,
        capability: &str,
        tokens: Tokens,
    ) -> Result<(), String> {
        self.tokens.lock().unwrap().push((
            caller.uid,
            capability.to_owned(),
            tokens.access_token.as_bytes().to_vec(),
        ));
        Ok(())
    }

    fn finished(&self, caller: &Caller, outcome: &Outcome<'_>) {
        self.finished.lock().unwrap().push((
            caller.uid,
            outcome.capability.to_string(),
            outcome.status,
        ));
    }
}

fn pool(host: Arc<FakeHost>, idle: Duration) -> Arc<BrokerPool> {
    let mut settings = PoolSettings::with_idle_timeout(idle);
    settings.shutdown_grace = Duration::from_secs(5);
    BrokerPool::new(host, procs(), settings)
}

fn caller(uid: u32) -> Caller {
    Caller {
        uid,
        gid: uid,
        pid: 1,
    }
}

/// What the stand-in wrote on a connection, until it closed it.
#[derive(Debug, Default)]
struct Seen {
    fields: HashMap<String, String>,
    answer: Option<String>,
}

fn read_all(mut s: UnixStream) -> Seen {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    parse(&text)
}

fn parse(text: &str) -> Seen {
    let mut lines = text.lines();
    let mut seen = Seen::default();
    if let Some(first) = lines.next() {
        for word in first.split(' ') {
            if let Some((k, v)) = word.split_once('=') {
                seen.fields.entry(k.into()).or_insert_with(|| v.into());
            }
        }
    }
    seen.answer = lines.next().map(str::to_string);
    seen
}

/// Hands one end of a fresh pair to the pool as `who`'s connection.
async fn connect(pool: &Arc<BrokerPool>, who: Caller) -> Result<UnixStream, Refused> {
    let (ours, theirs) = UnixStream::pair().unwrap();
    match pool.dispatch(who, OwnedFd::from(theirs)).await {
        Ok(()) => Ok(ours),
        Err(r) => Err(r.why),
    }
}

async fn served(pool: &Arc<BrokerPool>, who: Caller) -> Seen {
    let s = connect(pool, who).await.expect("dispatched");
    tokio::task::spawn_blocking(move || read_all(s))
        .await
        .unwrap()
}

/// Waits (bounded) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

fn uid_of(seen: &Seen) -> u32 {
    seen.fields["uid"].parse().unwrap()
}

/// No process of `uid` runs and it is not leased.
fn returned(uid: u32) -> bool {
    !procs().uids.leased_uids().contains(&uid) && !aivaultd::run::uidpool::live_processes_of(uid)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_has_its_control_socket_on_fd_3_under_a_leased_uid_without_groups() {
    let host = FakeHost::with(&[(50001, "plain")]);
    let pool = pool(host.clone(), Duration::from_secs(600));
    let seen = served(&pool, caller(50001)).await;
    let uid = uid_of(&seen);
    assert!(procs().uids.in_range(uid), "{seen:?}");
    assert!(procs().uids.leased_uids().contains(&uid));
    assert_eq!(seen.fields["gid"], uid.to_string());
    assert_eq!(seen.fields["groups"], "[]", "no supplementary groups");
    assert_eq!(
        seen.fields["fds"], "[0,1,2,3]",
        "descriptor 3 and nothing else above 2"
    );
    assert_eq!(seen.fields["conn"], "1");
    assert_eq!(seen.fields["init"], "plain", "the host's init");
    assert_eq!(
        seen.fields["home"],
        procs()
            .runs
            .join(uid.to_string())
            .join("home")
            .display()
            .to_string(),
        "home filled in by the pool"
    );
    assert_eq!(seen.answer.as_deref(), Some("grant s3cret"));
    eventually("the done reaches the host", || {
        !host.finished.lock().unwrap().is_empty()
    })
    .await;
    let finished = host.finished.lock().unwrap().clone();
    assert_eq!(finished, vec![(50001, "ok".to_string(), Some(200))]);
    let info = pool.brokers();
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].caller_uid, info[0].uid), (50001, uid));
    pool.stop_all().await;
    assert_eq!(pool.live(), 0);
    assert!(returned(uid), "the stop returns the uid");
    assert!(
        !procs().runs.join(uid.to_string()).exists(),
        "its directories go"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_broker_serves_every_connection_of_a_uid_and_each_uid_its_own() {
    let host = FakeHost::with(&[(50011, "plain"), (50012, "cap=nope")]);
    let pool = pool(host.clone(), Duration::from_secs(600));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(
            async move { served(&pool, caller(50011)).await },
        ));
    }
    let mut pids = std::collections::BTreeSet::new();
    let mut conns = std::collections::BTreeSet::new();
    for t in tasks {
        let seen = t.await.unwrap();
        pids.insert(seen.fields["pid"].clone());
        conns.insert(seen.fields["conn"].parse::<u64>().unwrap());
        assert_eq!(seen.answer.as_deref(), Some("grant s3cret"));
    }
    assert_eq!(pids.len(), 1, "one broker for the uid: {pids:?}");
    assert_eq!(conns, (1..=6).collect(), "each connection its own number");
    let other = served(&pool, caller(50012)).await;
    assert!(
        !pids.contains(&other.fields["pid"]),
        "another uid, another broker"
    );
    assert_eq!(other.answer.as_deref(), Some("deny Forbidden"));
    assert_eq!(pool.brokers().len(), 2);
    eventually("six dones reach the host", || {
        host.finished.lock().unwrap().len() >= 6
    })
    .await;
    assert_eq!(
        host.finished.lock().unwrap().len(),
        6,
        "a denied request is not done"
    );
    pool.stop_all().await;
    assert_eq!(pool.live(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_naming_a_connection_it_was_not_given_is_killed_and_its_uid_returned() {
    let host = FakeHost::with(&[(50021, "bad-conn")]);
    let pool = pool(host.clone(), Duration::from_secs(600));
    let seen = served(&pool, caller(50021)).await;
    let uid = uid_of(&seen);
    assert_eq!(seen.answer, None, "no answer: it was killed first");
    eventually("the broker is torn down", || pool.live() == 0).await;
    assert!(pool.brokers().is_empty());
    assert!(returned(uid));
    assert!(host.finished.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_capability_nothing_starts_and_a_failed_confinement_refuses() {
    let host = FakeHost::with(&[(50032, "confine-error")]);
    let pool = pool(host, Duration::from_secs(600));
    assert_eq!(
        connect(&pool, caller(50031)).await.unwrap_err(),
        Refused::NoCapability
    );
    assert_eq!(pool.live(), 0);
    // The stand-in names the uid it was started under; that uid comes back
    // (a count of all leases would race the other tests of this file).
    let uid = match connect(&pool, caller(50032)).await {
        Err(Refused::Start(why)) => {
            assert!(why.contains("test asks for a refusal"), "{why}");
            why.split("uid=")
                .nth(1)
                .and_then(|r| r.trim_end_matches(')').parse::<u32>().ok())
                .unwrap_or_else(|| panic!("no uid in {why:?}"))
        }
        other => panic!("a broker that could not confine itself served: {other:?}"),
    };
    assert_eq!(pool.live(), 0, "torn down before the refusal");
    assert!(pool.brokers().is_empty());
    eventually("the failed broker's uid is returned", || returned(uid)).await;
    // A run uid is never served.
    let run_uid = 0x6b00_0000 + (std::process::id() % 0x1000) * 0x100;
    assert!(procs().uids.in_range(run_uid));
    assert_eq!(
        connect(&pool, caller(run_uid)).await.unwrap_err(),
        Refused::RunUid
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_policy_change_and_crash_end_a_broker_and_the_next_connection_starts_another() {
    let host = FakeHost::with(&[
        (50041, "plain"),
        (50042, "plain"),
        (50043, "crash-after-first"),
    ]);
    // Idle.
    let idle = pool(host.clone(), Duration::from_millis(300));
    let first = served(&idle, caller(50041)).await;
    eventually("an idle broker stops", || idle.live() == 0).await;
    assert!(returned(uid_of(&first)), "an idle stop returns the uid");
    let second = served(&idle, caller(50041)).await;
    assert_ne!(first.fields["pid"], second.fields["pid"]);
    idle.stop_all().await;

    // Policy change.
    let pool = pool(host.clone(), Duration::from_secs(600));
    let before = served(&pool, caller(50042)).await;
    pool.policy_changed();
    assert!(pool.brokers().is_empty(), "out of the pool at once");
    eventually("the old broker ends", || pool.live() == 0).await;
    assert!(returned(uid_of(&before)));
    let after = served(&pool, caller(50042)).await;
    assert_ne!(before.fields["pid"], after.fields["pid"]);

    // Crash.
    let crashed = served(&pool, caller(50043)).await;
    eventually("the crashed broker is torn down", || {
        pool.brokers().iter().all(|b| b.caller_uid != 50043) && pool.live() == 1
    })
    .await;
    assert!(returned(uid_of(&crashed)));
    let again = served(&pool, caller(50043)).await;
    assert_ne!(crashed.fields["pid"], again.fields["pid"]);
    assert_eq!(again.answer.as_deref(), Some("grant s3cret"));
    pool.stop_all().await;
    assert_eq!(pool.live(), 0);
    // Stopped: nothing starts any more.
    assert_eq!(
        connect(&pool, caller(50042)).await.unwrap_err(),
        Refused::Stopping
    );
}

/// Runs the stand-in as a client under `user`: what it read.
fn client_as(user: &User, how: &str, target: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aivault-test-broker"))
        .args([how, target])
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_identifies_unix_and_loopback_tcp_callers_by_the_kernel() {
    let user = User::ensure("aivt-broker1");
    let nobody = User::ensure("aivt-broker2");
    let host = FakeHost::with(&[(user.uid, "plain")]);
    let pool = pool(host, Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let endpoint = Endpoint::start(
        pool.clone(),
        &dir.path().join("aivaultd.sock"),
        Some("127.0.0.1:0".parse().unwrap()),
        EndpointLimits {
            max_connections: 64,
            max_connections_per_uid: 8,
        },
    )
    .await
    .unwrap();
    let sock = endpoint.unix_path().display().to_string();
    let tcp = endpoint.tcp_addr().unwrap().to_string();
    for (how, target) in [("connect-unix", &sock), ("connect-tcp", &tcp)] {
        let (u, h, t) = (user.clone(), how.to_string(), target.clone());
        let text = tokio::task::spawn_blocking(move || client_as(&u, &h, &t))
            .await
            .unwrap();
        let seen = parse(&text);
        assert_eq!(
            seen.fields.get("caller").map(String::as_str),
            Some(user.uid.to_string().as_str()),
            "{how}: {text}"
        );
        assert_eq!(
            seen.answer.as_deref(),
            Some("grant s3cret"),
            "{how}: {text}"
        );
        // Someone the policy gives nothing is told so and closed.
        let (n, h, t) = (nobody.clone(), format!("{how}-quiet"), target.clone());
        let text = tokio::task::spawn_blocking(move || client_as(&n, &h, &t))
            .await
            .unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden"), "{how}: {text}");
    }
    assert_eq!(pool.brokers().len(), 1, "both endpoints reach one broker");
    let path = endpoint.unix_path().to_path_buf();
    endpoint.stop().await;
    assert_eq!(pool.live(), 0);
    assert!(!path.exists(), "the socket goes with the endpoint");
}

#[test]
fn the_jail_host_gives_a_control_socket_to_a_broker_only_and_only_a_socket() {
    use aivaultd::jail::{JailError, JailKind, SpawnRequest};
    use std::os::fd::AsFd;
    let procs = procs();
    let lease = procs.uids.acquire().unwrap();
    let uid = lease.uid();
    let spec = |kind| SpawnRequest {
        kind,
        uid,
        gid: uid,
        groups: vec![],
        cwd: "/".into(),
        args: vec![],
        join_cgroup: false,
        workdir: None,
        control: false,
    };
    let refused = |r: Result<aivaultd::jail::Jailed, JailError>| match r {
        Err(JailError::Refused(why)) => why,
        other => panic!("started: {other:?}"),
    };
    // A broker without its control socket, a runner with one.
    let why = refused(procs.jail.spawn(spec(JailKind::Broker), None, None));
    assert!(
        why.contains("only a broker, gets a control socket"),
        "{why}"
    );
    let (a, _b) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let why = refused(
        procs
            .jail
            .spawn_with_control(spec(JailKind::Runner), a.as_fd()),
    );
    assert!(
        why.contains("only a broker, gets a control socket"),
        "{why}"
    );
    // Anything but a SOCK_SEQPACKET socket as the control descriptor.
    let file = std::fs::File::open("/dev/null").unwrap();
    let why = refused(
        procs
            .jail
            .spawn_with_control(spec(JailKind::Broker), file.as_fd()),
    );
    assert!(why.contains("not a SOCK_SEQPACKET socket"), "{why}");
    let (stream, _other) = UnixStream::pair().unwrap();
    let why = refused(
        procs
            .jail
            .spawn_with_control(spec(JailKind::Broker), stream.as_fd()),
    );
    assert!(why.contains("not a SOCK_SEQPACKET socket"), "{why}");
    // A broker only under a run uid.
    let mut outside = spec(JailKind::Broker);
    outside.uid = 50099;
    outside.gid = 50099;
    let why = refused(procs.jail.spawn_with_control(outside, a.as_fd()));
    assert!(why.contains("cgroup") || why.contains("run uid"), "{why}");
    assert!(!aivaultd::run::uidpool::live_processes_of(uid));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_done_for_a_denied_request_kills_and_an_ignored_shutdown_is_a_kill() {
    let host = FakeHost::with(&[
        (50051, "cap=nope done-after-deny"),
        (50052, "ignore-shutdown"),
    ]);
    let mut settings = PoolSettings::with_idle_timeout(Duration::from_secs(600));
    settings.shutdown_grace = Duration::from_millis(300);
    let pool = BrokerPool::new(host.clone(), procs(), settings);
    let denied = served(&pool, caller(50051)).await;
    assert_eq!(denied.answer.as_deref(), Some("deny Forbidden"));
    eventually(
        "a broker reporting a denied request as done is killed",
        || pool.brokers().iter().all(|b| b.caller_uid != 50051),
    )
    .await;
    assert!(host.finished.lock().unwrap().is_empty(), "nothing recorded");

    let stubborn = served(&pool, caller(50052)).await;
    let pid: i32 = stubborn.fields["pid"].parse().unwrap();
    eventually("the first broker is torn down", || pool.live() == 1).await;
    pool.policy_changed();
    eventually(
        "a broker ignoring its shutdown is killed after the grace",
        || pool.live() == 0,
    )
    .await;
    assert!(returned(uid_of(&stubborn)));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

/// Runs the stand-in as a client under a bare uid (no account).
fn client_as_uid(uid: u32, how: &str, target: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aivault-test-broker"))
        .args([how, target])
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_limit_a_caller_is_told_with_or_without_an_account() {
    let user = User::ensure("aivt-broker1");
    let accountless = 0x6a00_0000 + std::process::id() % 0x10000;
    let host = FakeHost::with(&[(user.uid, "plain"), (accountless, "plain")]);
    let pool = pool(host, Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let endpoint = Endpoint::start(
        pool.clone(),
        &dir.path().join("aivaultd.sock"),
        Some("[::1]:0".parse().unwrap()),
        EndpointLimits {
            max_connections: 8,
            max_connections_per_uid: 0,
        },
    )
    .await
    .unwrap();
    let tcp = endpoint.tcp_addr().unwrap().to_string();
    let sock = endpoint.unix_path().display().to_string();
    let (u, t) = (user.clone(), tcp.clone());
    let text = tokio::task::spawn_blocking(move || client_as(&u, "connect-tcp-quiet", &t))
        .await
        .unwrap();
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable")
            && text.contains("too many connections from this user"),
        "{text}"
    );
    // A caller without an account is identified by the kernel all the
    // same (its uid; the decisions give it no group), over TCP and Unix,
    // and refused here by the limit.
    let t = tcp.clone();
    let text =
        tokio::task::spawn_blocking(move || client_as_uid(accountless, "connect-tcp-quiet", &t))
            .await
            .unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let s = sock.clone();
    let text =
        tokio::task::spawn_blocking(move || client_as_uid(accountless, "connect-unix-quiet", &s))
            .await
            .unwrap();
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert_eq!(pool.live(), 0, "nothing was started");
    endpoint.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refreshed_tokens_are_taken_once_for_a_refreshable_grant_and_otherwise_kill() {
    let host = FakeHost::with(&[
        (50061, "cap=oauth tokens"),
        (50062, "cap=ok tokens"),
        (50063, "cap=oauth tokens-twice"),
    ]);
    let pool = pool(host.clone(), Duration::from_secs(600));
    // Granted refresh material: the tokens are passed on, the broker lives.
    let seen = served(&pool, caller(50061)).await;
    assert!(
        seen.answer
            .as_deref()
            .is_some_and(|a| a.starts_with("grant")),
        "{:?}",
        seen.answer
    );
    eventually("the request is finished", || {
        !host.finished.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        host.tokens.lock().unwrap().clone(),
        [(50061, "oauth".to_owned(), b"at-new".to_vec())]
    );
    assert!(pool.brokers().iter().any(|b| b.caller_uid == 50061));
    // Tokens for a plain grant, or twice for one request: killed.
    for uid in [50062, 50063] {
        served(&pool, caller(uid)).await;
        eventually("a broker sending tokens it may not is killed", || {
            pool.brokers().iter().all(|b| b.caller_uid != uid)
        })
        .await;
    }
    eventually("the first tokens of 50063 are passed on", || {
        host.tokens
            .lock()
            .unwrap()
            .iter()
            .any(|(uid, ..)| *uid == 50063)
    })
    .await;
    let tokens = host.tokens.lock().unwrap().clone();
    assert!(tokens.iter().all(|(uid, ..)| *uid != 50062), "{tokens:?}");
    assert_eq!(tokens.iter().filter(|(uid, ..)| *uid == 50063).count(), 1);
}

/// D-Bus callers (`OpenCapabilityConnection`) come in through the
/// endpoint's `Handover`: a place it holds is one the endpoint's callers of
/// that uid do not get, and the connection goes to the endpoint's pool.
#[tokio::test(flavor = "multi_thread")]
async fn the_handover_shares_the_endpoints_limits_and_pool() {
    let user = User::ensure("aivt-broker1");
    let host = FakeHost::with(&[(user.uid, "plain")]);
    let pool = pool(host, Duration::from_secs(600));
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let endpoint = Endpoint::start(
        pool.clone(),
        &dir.path().join("aivaultd.sock"),
        None,
        EndpointLimits {
            max_connections: 8,
            max_connections_per_uid: 1,
        },
    )
    .await
    .unwrap();
    let handover = endpoint.handover();
    assert!(Arc::ptr_eq(handover.pool(), &pool));
    let held = handover.admit(user.uid).unwrap();
    assert_eq!(
        handover.admit(user.uid).unwrap_err(),
        "too many connections from this user"
    );
    let (u, s) = (user.clone(), endpoint.unix_path().display().to_string());
    let text = tokio::task::spawn_blocking(move || client_as(&u, "connect-unix-quiet", &s))
        .await
        .unwrap();
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too many connections from this user"),
        "{text}"
    );
    assert_eq!(pool.live(), 0, "nothing was started");
    drop(held);
    assert!(handover.admit(user.uid).is_ok());
    endpoint.stop().await;
}
