//! Acceptance 5 (foundation): garbage, a frame announcing 4 GiB, a truncated
//! frame, an unknown message type and 1,000 idle connections from one uid are
//! each met with a clear error or a closed connection; the daemon stays up and
//! keeps answering other users promptly. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use aivault_proto::{
    decode, encode, read_frame, write_frame, Hello, HelloReply, Response, HELLO_MAGIC,
    PROTOCOL_VERSION,
};
use aivault_tests::{ok, Daemon, Options, User};

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(d.socket()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn handshake(s: &mut UnixStream) {
    let hello = Hello {
        magic: HELLO_MAGIC,
        version: PROTOCOL_VERSION,
        client: "test".into(),
    };
    write_frame(s, &encode(&hello).unwrap()).unwrap();
    let r: HelloReply = decode(&read_frame(s).unwrap()).unwrap();
    assert!(r.result.is_ok());
}

/// Reads until EOF (or error), returning what arrived.
fn drain(s: &mut UnixStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf
}

fn still_serving(d: &Daemon, who: &User) {
    let t = Instant::now();
    ok(&d.vaultctl(who, &["secrets", "list"], b""));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "answer took {:?}",
        t.elapsed()
    );
}

#[test]
fn hostile_bytes_get_an_error_or_a_closed_connection() {
    let mut d = Daemon::start_new(Options::default());
    let bob = User::ensure("aivt-bob");

    // Garbage instead of a handshake: an error reply or a close, not a hang.
    let mut s = connect(&d);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = drain(&mut s);
    assert!(got.len() < 4096, "closed after at most a short error");

    // A frame announcing 4 GiB - 1: refused from the header alone.
    let mut s = connect(&d);
    handshake(&mut s);
    s.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let resp: Response = decode(&read_frame(&mut s).expect("error frame")).unwrap();
    let e = resp.result.expect_err("oversize refused");
    assert!(e.message.contains("exceeds"), "{e:?}");
    assert!(drain(&mut s).is_empty(), "then closed");

    // A truncated frame: the client goes away mid-frame.
    let mut s = connect(&d);
    handshake(&mut s);
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(b"only ten b").unwrap();
    drop(s);

    // An unknown message type: a clear error, and the connection stays usable.
    let mut s = connect(&d);
    handshake(&mut s);
    write_frame(&mut s, &[0x01, 0xEE, 0xEE, 0xEE]).unwrap();
    let resp: Response = decode(&read_frame(&mut s).unwrap()).unwrap();
    assert!(resp.result.unwrap_err().message.contains("unknown"));
    let req = aivault_proto::Request {
        id: 9,
        body: aivault_proto::RequestBody::Status,
    };
    write_frame(&mut s, &encode(&req).unwrap()).unwrap();
    let resp: Response = decode(&read_frame(&mut s).unwrap()).unwrap();
    assert_eq!(resp.id, 9);
    assert!(resp.result.is_ok());

    // A wrong protocol version is refused with a reason.
    let mut s = connect(&d);
    let hello = Hello {
        magic: HELLO_MAGIC,
        version: 999,
        client: "old".into(),
    };
    write_frame(&mut s, &encode(&hello).unwrap()).unwrap();
    let r: HelloReply = decode(&read_frame(&mut s).unwrap()).unwrap();
    assert!(r.result.unwrap_err().message.contains("protocol version"));

    assert!(d.alive());
    still_serving(&d, &bob);
}

#[test]
fn a_thousand_idle_connections_from_one_user_do_not_starve_others() {
    let mut d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    ok(&d.vaultctl(&bob, &["secrets", "set", "B"], b"bob-value-123456"));

    // 1,000 connections held open by a real process running as alice, so the
    // kernel records alice's credentials on each socket.
    let mut child = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            &alice.uid.to_string(),
            "--regid",
            &alice.gid.to_string(),
            "--clear-groups",
            "--",
        ])
        .args(["/usr/bin/python3", "-c"])
        .arg(
            "import socket,sys,time\n\
             socks=[]\n\
             for i in range(1000):\n\
             \ts=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);socks.append(s)\n\
             print(len(socks),flush=True)\n\
             time.sleep(60)\n",
        )
        .arg(d.socket())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flooder");
    let mut line = [0u8; 5];
    let n = child.stdout.as_mut().unwrap().read(&mut line).unwrap();
    assert_eq!(
        std::str::from_utf8(&line[..n]).unwrap().trim(),
        "1000",
        "flooder connected"
    );

    // Bob is answered promptly while alice holds her connections open...
    still_serving(&d, &bob);
    // ...and alice herself is told why she is turned away.
    let out = d.vaultctl(&alice, &["secrets", "list"], b"");
    let err = aivault_tests::fails_with(&out, 5);
    assert!(err.contains("too many connections"), "{err}");

    let _ = child.kill();
    let _ = child.wait();
    assert!(d.alive());
    still_serving(&d, &bob);
}
