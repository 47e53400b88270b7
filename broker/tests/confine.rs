//! The broker's confinement under the real kernel, as root, in processes
//! of their own under unused uids (a confinement cannot be undone, so it
//! never runs in the test process itself).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use aivault_proto::broker::{FromBroker, ToBroker};
use aivault_proto::{Enforcement, Level, Limits};
use command_fds::{CommandFdExt, FdMapping};
use common::*;
use http_body_util::BodyExt;

const PROBE_ENV: &str = "AIVAULT_BROKER_PROBE";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the confinement tests run processes under other uids: run them as root"
    );
}

/// A private directory owned by `uid`, mode 0700.
fn private_dir(uid: u32) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("broker-conf")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn errno(r: std::io::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// In the child: confine as the broker does, then try what it must not do
/// (and what it must still do), and print the outcome as one JSON line.
fn probe(spec: &str) -> ! {
    let v: serde_json::Value = serde_json::from_str(spec).unwrap();
    let home = v["home"].as_str().unwrap().to_owned();
    let allowed = v["allowed"].as_u64().unwrap() as u16;
    let denied = v["denied"].as_u64().unwrap() as u16;
    let init = aivault_proto::broker::BrokerInit {
        capabilities: String::new(),
        tcp_connect: vec![allowed],
        home: home.clone().into(),
        tmp: v["tmp"].as_str().unwrap().into(),
        limits: Limits::default(),
        require_full_landlock: false,
        testing: None,
    };
    let enforcement = aivault_broker::confine::confine(&init);
    let connect = |port: u16| errno(std::net::TcpStream::connect(("127.0.0.1", port)).map(drop));
    let out = serde_json::json!({
        "enforcement": enforcement.map_err(|e| e.to_string()),
        "passwd": errno(std::fs::read("/etc/passwd").map(drop)),
        "home_write": errno(std::fs::write(Path::new(&home).join("f"), b"x")),
        "allowed": connect(allowed),
        "denied": connect(denied),
        "exec": errno(Command::new("/bin/true").status().map(drop)),
    });
    println!("PROBE:{out}");
    std::process::exit(0)
}

#[test]
fn confinement_denies_files_other_ports_and_exec_but_not_home_or_its_port() {
    if let Ok(spec) = std::env::var(PROBE_ENV) {
        probe(&spec);
    }
    require_root();
    let uid = 61_234;
    let (home, tmp) = (private_dir(uid), private_dir(uid));
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = serde_json::json!({
        "home": home.path(),
        "tmp": tmp.path(),
        "allowed": allowed.local_addr().unwrap().port(),
        "denied": denied.local_addr().unwrap().port(),
    });
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "confinement_denies_files_other_ports_and_exec_but_not_home_or_its_port",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, spec.to_string())
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("PROBE:").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "no probe output: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let got: serde_json::Value = serde_json::from_str(line).unwrap();
    let enforcement: Enforcement = serde_json::from_value(got["enforcement"]["Ok"].clone())
        .unwrap_or_else(|_| panic!("confinement failed: {got}"));
    assert_eq!(enforcement.landlock, Level::Full, "{got}");
    assert!(enforcement.seccomp && enforcement.net_restricted, "{got}");
    // DAC lets any uid read /etc/passwd: only landlock refuses it.
    assert_eq!(got["passwd"], libc::EACCES, "{got}");
    assert_eq!(got["home_write"], 0, "{got}");
    assert_eq!(got["allowed"], 0, "{got}");
    assert_eq!(got["denied"], libc::EACCES, "{got}");
    // landlock would say EACCES; seccomp refuses first with EPERM.
    assert_eq!(got["exec"], libc::EPERM, "{got}");
}

/// The real binary: descriptor 3, init, confined, then a request through a
/// port it may connect to and one through a port it may not.
#[test]
fn the_binary_confines_itself_on_descriptor_3_and_reaches_only_its_ports() {
    require_root();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let uid = 61_235;
        let (home, tmp) = (private_dir(uid), private_dir(uid));
        let pki = pki();
        let allowed = upstream(&pki).await;
        let denied = upstream(&pki).await;
        let mut init = init(
            &pki,
            vec![
                (HOST.into(), vec![allowed.addr]),
                (OTHER.into(), vec![denied.addr]),
            ],
            true,
        );
        init.capabilities.push_str(&format!(
            r#"
[[capability]]
name = "other"
provider = "testapi"
hosts = ["{OTHER}"]
secret = "TEST_KEY"
methods = ["GET"]
paths = ["/**"]
"#
        ));
        init.tcp_connect = vec![allowed.addr.port()];
        init.home = home.path().into();
        init.tmp = tmp.path().into();
        init.require_full_landlock = true;
        let (daemon_end, broker_end) = seqpacket_pair();
        let mut child = Command::new(env!("CARGO_BIN_EXE_aivault-broker"))
            .fd_mappings(vec![FdMapping {
                parent_fd: broker_end,
                child_fd: 3,
            }])
            .unwrap()
            .uid(uid)
            .gid(uid)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        send(&daemon_end, &ToBroker::Init(init), None);
        let confined = tokio::task::spawn_blocking({
            let fd = daemon_end.try_clone().unwrap();
            move || recv(&fd)
        })
        .await
        .unwrap();
        match confined {
            Some(FromBroker::Confined(Ok(e))) => {
                assert_eq!(e.landlock, Level::Full);
                assert!(e.seccomp && e.net_restricted);
            }
            other => panic!("{other:?}"),
        }
        let daemon = Daemon::start(daemon_end, Policy::Grant);
        let mut c = client(daemon.connect()).await;
        c.ready().await.unwrap();
        let resp = match c.send_request(get("/testapi/v1/echo")).await {
            Ok(r) => r,
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
            }
        };
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(
            body.contains("[REDACTED:TEST_KEY]") && !body.contains("sk-test-"),
            "{body}"
        );
        c.ready().await.unwrap();
        let resp = c.send_request(get("/other/v1/echo")).await.unwrap();
        assert_eq!(resp.status(), 502);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert!(
            body.contains("denied") || body.contains("ermission"),
            "{body}"
        );
        assert_eq!(denied.accepted(), 0);
        daemon.shutdown();
        drop(c);
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status:?}");
    });
}
