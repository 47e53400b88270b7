#![allow(clippy::unwrap_used)]

use std::io::{BufReader, Cursor, Read, Write};
use std::os::unix::net::UnixListener;

use super::body::{Body, Framing};
use super::head::read_head;
use super::*;

fn req(cap: &str, path: &str) -> Request {
    Request {
        capability: cap.into(),
        method: "GET".into(),
        path: path.into(),
        headers: vec![],
        body: vec![],
    }
}

#[test]
fn the_endpoint_is_beside_the_daemon_socket() {
    assert_eq!(
        http_socket_path(Path::new("/run/aivault/aivaultd.sock")),
        Path::new("/run/aivault/http.sock")
    );
}

#[test]
fn headers_parse_like_curl_and_bad_ones_are_refused() {
    assert_eq!(
        parse_header("Content-Type: application/json").unwrap(),
        ("Content-Type".into(), "application/json".into())
    );
    assert_eq!(
        parse_header("X-Empty:").unwrap(),
        ("X-Empty".into(), "".into())
    );
    assert_eq!(parse_header("a:b:c").unwrap(), ("a".into(), "b:c".into()));
    for bad in [
        "no-colon",
        ": value",
        "bad name: v",
        "X-A: one\r\nX-B: two",
        "X-A: nul\0",
        "X-A: lf\n",
        "Ünicode: v",
    ] {
        assert!(
            matches!(parse_header(bad), Err(HttpError::Invalid(_))),
            "{bad:?}"
        );
    }
    let long = format!("X-Long: {}", "a".repeat(MAX_HEADER_VALUE + 1));
    assert!(parse_header(&long).is_err());
}

#[test]
fn requests_are_checked_before_sending() {
    assert!(req("openai", "/v1/models").check().is_ok());
    assert!(req("openai/chat", "/v1/x?a=b").check().is_ok());
    for cap in [
        "",
        "OpenAI",
        "a//b",
        "/a",
        "a/",
        "a b",
        "a.b",
        &"a".repeat(65),
    ] {
        assert!(req(cap, "/").check().is_err(), "{cap:?}");
    }
    for path in ["", "v1", "/a b", "/a\r\nX: y", "/\u{e9}", "/a\u{7f}"] {
        assert!(req("openai", path).check().is_err(), "{path:?}");
    }
    let mut r = req("openai", "/");
    r.method = "GE T".into();
    assert!(r.check().is_err());
    for own in [
        "Host",
        "content-length",
        "Transfer-Encoding",
        "connection",
        "Expect",
    ] {
        let mut r = req("openai", "/");
        r.headers = vec![(own.into(), "x".into())];
        assert!(r.check().is_err(), "{own}");
    }
    let mut r = req("openai", "/");
    r.headers = vec![("X-A".into(), "a\nb".into())];
    assert!(r.check().is_err());
    let mut r = req("openai", "/");
    r.headers = (0..=MAX_HEADERS)
        .map(|i| (format!("x-{i}"), "v".into()))
        .collect();
    assert!(r.check().is_err());
    // The broker, not the client, refuses credential headers: it is the
    // guard every caller meets.
    let mut r = req("openai", "/");
    r.headers = vec![("Authorization".into(), "Bearer x".into())];
    assert!(r.check().is_ok());
}

#[test]
fn a_request_is_written_with_its_length_and_close() {
    let mut r = req("openai", "/v1/chat/completions");
    r.method = "POST".into();
    r.headers = vec![("Content-Type".into(), "application/json".into())];
    r.body = b"{}".to_vec();
    assert_eq!(
        String::from_utf8(r.encode()).unwrap(),
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    );
    let g = req("gh", "/user");
    assert_eq!(
        String::from_utf8(g.encode()).unwrap(),
        "GET /gh/user HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
}

fn head_of(text: &str) -> std::io::Result<Head> {
    read_head(&mut BufReader::new(Cursor::new(text.as_bytes().to_vec())))
}

#[test]
fn a_response_head_is_parsed_with_limits() {
    let h = head_of("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A:  b \r\n\r\nbody").unwrap();
    assert_eq!((h.status, h.reason.as_str()), (200, "OK"));
    assert_eq!(h.header("content-type"), Some("text/plain"));
    assert_eq!(h.header("x-a"), Some("b"));
    assert_eq!(head_of("HTTP/1.0 404\n\n").unwrap().status, 404);
    for bad in [
        "",
        "HTTP/1.1 200 OK\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 x\r\n\r\n",
        "HTTP/1.1 +20 x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: v\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n",
        "garbage",
    ] {
        assert!(head_of(bad).is_err(), "{bad:?}");
    }
    let many: String = (0..=head::MAX_RESPONSE_HEADERS)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    assert!(head_of(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
    let huge = format!(
        "HTTP/1.1 200 OK\r\nx: {}\r\n\r\n",
        "a".repeat(head::MAX_HEAD)
    );
    assert!(head_of(&huge).is_err());
}

fn body_of(head: &str, rest: &[u8], method: &str) -> std::io::Result<Vec<u8>> {
    let h = head_of(head).unwrap();
    let framing = Framing::of(&h, method)?;
    let mut b = Body::new(BufReader::new(Cursor::new(rest.to_vec())), framing, None);
    let mut out = Vec::new();
    b.read_to_end(&mut out)?;
    Ok(out)
}

#[test]
fn bodies_are_framed_by_length_chunks_or_close() {
    let cl = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(body_of(cl, b"hello and more", "GET").unwrap(), b"hello");
    assert_eq!(
        body_of(cl, b"hel", "GET").unwrap_err().kind(),
        std::io::ErrorKind::UnexpectedEof
    );
    assert_eq!(body_of(cl, b"", "HEAD").unwrap(), b"");
    let ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        body_of(
            ch,
            b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: x\r\n\r\n",
            "GET"
        )
        .unwrap(),
        b"hello!"
    );
    assert_eq!(
        body_of(ch, b"A\nabcdefghij\n0\n\n", "GET").unwrap(),
        b"abcdefghij"
    );
    for cut in [
        &b"5\r\nhel"[..],
        b"5\r\nhello\r\n",
        b"5\r\nhello\r\n0\r\n",
        b"",
    ] {
        assert_eq!(
            body_of(ch, cut, "GET").unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof,
            "{cut:?}"
        );
    }
    for bad in [
        &b"zz\r\n"[..],
        b"5\r\nhelloXX1\r\n",
        b"-1\r\n",
        b"11111111111111111\r\nx",
    ] {
        assert_eq!(
            body_of(ch, bad, "GET").unwrap_err().kind(),
            std::io::ErrorKind::InvalidData,
            "{bad:?}"
        );
    }
    let close = "HTTP/1.1 200 OK\r\n\r\n";
    assert_eq!(
        body_of(close, b"until the end", "GET").unwrap(),
        b"until the end"
    );
    assert_eq!(
        body_of("HTTP/1.1 204 No Content\r\n\r\n", b"x", "GET").unwrap(),
        b""
    );
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    ] {
        assert!(body_of(bad, b"hello", "GET").is_err(), "{bad:?}");
    }
}

/// A one-connection server on a fresh socket: reads the request head and
/// body (by Content-Length), hands it to `answer`, writes what it returns
/// in pieces.
fn serve(answer: fn(&str) -> Vec<Vec<u8>>) -> (tempfile_dir::Dir, std::thread::JoinHandle<String>) {
    let dir = tempfile_dir::Dir::new();
    let listener = UnixListener::bind(dir.path().join(HTTP_SOCKET_NAME)).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.parse::<usize>().unwrap());
                if got.len() >= end + 4 + len || n == 0 {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got).to_string();
        for piece in answer(&text) {
            s.write_all(&piece).unwrap();
            s.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        text
    });
    (dir, t)
}

/// A private directory removed on drop (the client crate has no tempfile).
mod tempfile_dir {
    #[derive(Debug)]
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("aivault-http-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn a_streamed_answer_arrives_piece_by_piece_after_an_interim_one() {
    let (dir, server) = serve(|_| {
        vec![
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            b"8\r\ndata: 1\n\r\n".to_vec(),
            b"8\r\ndata: 2\n\r\n0\r\n\r\n".to_vec(),
        ]
    });
    let mut r = req("openai", "/v1/chat/completions");
    r.method = "POST".into();
    r.body = b"{\"stream\":true}".to_vec();
    let mut resp = send(&dir.path().join(HTTP_SOCKET_NAME), &r, None).unwrap();
    assert_eq!(resp.head.status, 200);
    assert_eq!(resp.head.header("content-type"), Some("text/event-stream"));
    let mut out = Vec::new();
    assert_eq!(resp.copy_to(&mut out).unwrap(), 16);
    assert_eq!(out, b"data: 1\ndata: 2\n");
    let seen = server.join().unwrap();
    assert!(
        seen.starts_with("POST /openai/v1/chat/completions HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(
        seen.ends_with("Content-Length: 15\r\n\r\n{\"stream\":true}"),
        "{seen}"
    );
}

#[test]
fn a_bounded_read_keeps_the_first_bytes_and_says_more_came() {
    let (dir, server) =
        serve(|_| vec![b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\n0123456789".to_vec()]);
    let resp = send(&dir.path().join(HTTP_SOCKET_NAME), &req("gh", "/"), None).unwrap();
    assert_eq!(resp.head.status, 403);
    assert_eq!(resp.read_bounded(4).unwrap(), (b"0123".to_vec(), true));
    server.join().unwrap();
}

#[test]
fn a_cut_answer_and_a_missing_endpoint_are_errors() {
    let (dir, server) =
        serve(|_| vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234".to_vec()]);
    let mut resp = send(&dir.path().join(HTTP_SOCKET_NAME), &req("gh", "/"), None).unwrap();
    let mut out = Vec::new();
    assert!(matches!(
        resp.copy_to(&mut out),
        Err(HttpError::Response(_))
    ));
    assert_eq!(out, b"01234");
    server.join().unwrap();
    let (dir, server) = serve(|_| vec![b"HTTP/1.1 100 Continue\r\n\r\n".repeat(9)]);
    assert!(matches!(
        send(&dir.path().join(HTTP_SOCKET_NAME), &req("gh", "/"), None),
        Err(HttpError::Response(_))
    ));
    server.join().unwrap();
    let (dir, server) = serve(|_| vec![b"SSH-2.0-OpenSSH\r\n".to_vec()]);
    assert!(matches!(
        send(&dir.path().join(HTTP_SOCKET_NAME), &req("gh", "/"), None),
        Err(HttpError::Response(_))
    ));
    server.join().unwrap();
    assert!(matches!(
        send(Path::new("/nonexistent/http.sock"), &req("gh", "/"), None),
        Err(HttpError::Connect { .. })
    ));
    assert!(matches!(
        send(Path::new("/nonexistent/http.sock"), &req("GH", "/"), None),
        Err(HttpError::Invalid(_))
    ));
}

#[test]
fn a_silent_endpoint_is_a_timeout() {
    let dir = tempfile_dir::Dir::new();
    let path = dir.path().join(HTTP_SOCKET_NAME);
    let listener = UnixListener::bind(&path).unwrap();
    let t = std::time::Duration::from_millis(50);
    let got = send(&path, &req("gh", "/"), Some(t));
    drop(listener);
    assert!(matches!(got, Err(HttpError::Timeout(_))), "{got:?}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut r = BufReader::new(Cursor::new(bytes.clone()));
            if let Ok(h) = read_head(&mut r) {
                if let Ok(f) = Framing::of(&h, "GET") {
                    let mut out = Vec::new();
                    let _ = Body::new(r, f, None).read_to_end(&mut out);
                }
            }
            let mut out = Vec::new();
            let _ = Body::new(BufReader::new(Cursor::new(bytes)), Framing::Chunked, None)
                .read_to_end(&mut out);
        }

        #[test]
        fn chunked_bodies_decode_to_what_was_sent(
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            sizes in proptest::collection::vec(1usize..300, 1..20),
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut out = Vec::new();
            Body::new(BufReader::with_capacity(7, Cursor::new(wire)), Framing::Chunked, None)
                .read_to_end(&mut out)
                .unwrap();
            prop_assert_eq!(out, body);
        }
    }
}
