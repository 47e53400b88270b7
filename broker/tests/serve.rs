//! The broker service end to end in this process: real sockets, real TLS
//! to a loopback upstream under a CA made here, a fake daemon on the
//! control socketpair.
#![allow(clippy::unwrap_used)]

mod common;

use aivault_proto::broker::{DenyReason, FromBroker};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

async fn granted(loopback: bool) -> (Upstream, Daemon) {
    let pki = pki();
    let up = upstream(&pki).await;
    let init = init(
        &pki,
        vec![(HOST.into(), vec![up.addr]), (OTHER.into(), vec![up.addr])],
        loopback,
    );
    let daemon = broker(init, Policy::Grant).await;
    (up, daemon)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn the_credential_is_injected_upstream_and_redacted_from_the_response() {
    let (up, daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/v1/echo?q=1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = format!("{:?}", resp.headers());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, HOST);
    assert_eq!(seen[0].path, "/v1/echo?q=1");
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {SECRET}"));
    // The upstream echoed the credential in its body and a header.
    assert!(!text(&body).contains("sk-test-"), "{}", text(&body));
    assert!(!headers.contains("sk-test-"), "{headers}");
    assert!(
        text(&body).contains("[REDACTED:TEST_KEY]"),
        "{}",
        text(&body)
    );
    // The daemon was asked with the query value hidden.
    let asked = daemon.asked.lock().unwrap().clone();
    assert!(
        matches!(&asked[0], FromBroker::Authorize { capability, path, method, .. }
        if capability == "testapi" && path == "/v1/echo?q=*" && method == "GET")
    );
    // A second request on the same caller connection (keep-alive).
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/v1/echo")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    assert_eq!(up.seen().len(), 2);
    // The upstream connection was kept and reused.
    assert_eq!(up.accepted(), 1);
    let dones = wait_dones(&daemon, 2).await;
    assert!(
        matches!(
            &dones[0],
            FromBroker::Done {
                status: Some(200),
                error: None,
                ..
            }
        ),
        "{dones:?}"
    );
}

async fn wait_dones(daemon: &Daemon, n: usize) -> Vec<FromBroker> {
    for _ in 0..500 {
        let d = daemon.dones();
        if d.len() >= n {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    daemon.dones()
}

#[tokio::test]
async fn caller_credential_headers_are_refused_before_the_daemon_is_asked() {
    let (up, daemon) = granted(true).await;
    for (name, value) in [
        ("authorization", "Bearer mine"),
        ("x-api-key", "mine"),
        ("Authorization", "Basic eA=="),
    ] {
        let mut c = client(daemon.connect()).await;
        let req = Request::builder()
            .uri("/testapi/v1/echo")
            .header("host", "broker")
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .unwrap();
        c.ready().await.unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(text(&body).contains("\"error\""), "{}", text(&body));
    }
    assert_eq!(up.seen().len(), 0);
    assert!(daemon.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn traversal_targets_are_refused() {
    let (up, daemon) = granted(true).await;
    for target in [
        "/testapi/../other/x",
        "/testapi/v1/../../x",
        "/testapi/%2e%2e/x",
        "/testapi/v1%2f..%2fx",
        "/testapi/%252e%252e/x",
        "/testapi/v1\\..\\x",
        "/testapi/./x",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nhost: broker\r\nconnection: close\r\n\r\n");
        let out = raw(daemon.connect(), req.as_bytes()).await;
        let status = status_of(&out);
        assert_eq!(status, 400, "{target}: {}", text(&out));
    }
    assert_eq!(up.accepted(), 0);
    assert!(daemon.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let pki = pki();
    let up = upstream(&pki).await;
    let evil = upstream(&pki).await;
    let init = init(
        &pki,
        vec![
            (HOST.into(), vec![up.addr]),
            (OTHER.into(), vec![evil.addr]),
        ],
        true,
    );
    let daemon = broker(init, Policy::Grant).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/away")).await.unwrap();
    assert_eq!(resp.status(), 302);
    assert!(
        resp.headers().get("location").is_none(),
        "{:?}",
        resp.headers()
    );
    let _ = resp.into_body().collect().await.unwrap();
    assert_eq!(up.seen().len(), 1);
    assert_eq!(evil.accepted(), 0, "the other host was contacted");
}

#[tokio::test]
async fn production_mode_refuses_loopback_and_mapped_addresses_without_contacting_them() {
    let pki = pki();
    let up = upstream(&pki).await;
    let port = up.addr.port();
    for addrs in [
        vec![format!("127.0.0.1:{port}")],
        vec![format!("[::ffff:127.0.0.1]:{port}")],
        vec![format!("127.0.0.2:{port}")],
    ] {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let daemon = broker(init(&pki, vec![(HOST.into(), addrs)], false), Policy::Grant).await;
        let mut c = client(daemon.connect()).await;
        c.ready().await.unwrap();
        let resp = c.send_request(get("/testapi/v1/echo")).await.unwrap();
        assert_eq!(resp.status(), 502);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(text(&body).contains("loopback"), "{}", text(&body));
    }
    assert_eq!(up.accepted(), 0);
}

#[tokio::test]
async fn one_forbidden_address_refuses_the_host_even_beside_an_allowed_one() {
    // Loopback is allowed here; 100.64.0.1 (CGNAT) is not. Loopback comes
    // first, so without the check the broker would reach the upstream
    // (and never the CGNAT address).
    let pki = pki();
    let up = upstream(&pki).await;
    let addrs = vec![up.addr, "100.64.0.1:9".parse().unwrap()];
    let daemon = broker(init(&pki, vec![(HOST.into(), addrs)], true), Policy::Grant).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/v1/echo")).await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(text(&body).contains("carrier-grade"), "{}", text(&body));
    assert_eq!(up.accepted(), 0);
    let dones = wait_dones(&daemon, 1).await;
    assert!(
        matches!(
            &dones[0],
            FromBroker::Done {
                status: None,
                error: Some(_),
                ..
            }
        ),
        "{dones:?}"
    );
}

#[tokio::test]
async fn an_oversized_request_body_is_413() {
    let (up, daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    let req = Request::builder()
        .method("POST")
        .uri("/testapi/v1/echo")
        .header("host", "broker")
        .body(Full::new(Bytes::from(vec![b'a'; 1001])))
        .unwrap();
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    // Chunked, without a length up front.
    let chunked = "POST /testapi/v1/echo HTTP/1.1\r\nhost: b\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3e9\r\n";
    let mut req = chunked.as_bytes().to_vec();
    req.extend(vec![b'a'; 1001]);
    req.extend(b"\r\n0\r\n\r\n");
    assert_eq!(status_of(&raw(daemon.connect(), &req).await), 413);
    // At the limit it goes through.
    let req = Request::builder()
        .method("POST")
        .uri("/testapi/v1/echo")
        .header("host", "broker")
        .body(Full::new(Bytes::from(vec![b'a'; 1000])))
        .unwrap();
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn an_oversized_response_is_cut_and_recorded_as_an_error() {
    let (_up, daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/big")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let got = resp.into_body().collect().await;
    assert!(got.is_err(), "the body ended cleanly");
    let dones = wait_dones(&daemon, 1).await;
    match &dones[0] {
        FromBroker::Done {
            error: Some(e),
            response_bytes,
            ..
        } => {
            assert!(e.contains("larger"), "{e}");
            assert!(*response_bytes <= 100_000 + 65536, "{response_bytes}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn set_cookie_is_stripped() {
    let (_up, daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/cookie")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(resp.headers()["x-upstream"], "yes");
}

#[tokio::test]
async fn an_sse_event_arrives_before_the_upstream_finishes() {
    let (up, daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/sse")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // The upstream holds its second event until told; the first must
    // already be here.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    up.sse_go.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"data: two\n\n");
}

#[tokio::test]
async fn a_denial_is_403_or_429_with_retry_after() {
    let pki = pki();
    let up = upstream(&pki).await;
    let resolve = vec![(HOST.to_string(), vec![up.addr])];
    let daemon = broker(
        init(&pki, resolve.clone(), true),
        Policy::Deny(DenyReason::Forbidden, None),
    )
    .await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/v1/echo")).await.unwrap();
    assert_eq!(resp.status(), 403);
    let daemon = broker(
        init(&pki, resolve, true),
        Policy::Deny(DenyReason::RateLimited, Some(17)),
    )
    .await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/v1/echo")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "17");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(text(&body).contains("denied by test policy"));
    assert_eq!(up.accepted(), 0);
}

#[tokio::test]
async fn an_unknown_capability_is_404() {
    let (_up, daemon) = granted(true).await;
    let out = raw(
        daemon.connect(),
        b"GET /nope/x HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 404);
    let out = raw(
        daemon.connect(),
        b"GET /testapix/x HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 404);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_ends_the_service() {
    let (up, mut daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/sse")).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    daemon.shutdown();
    up.sse_go.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"data: two\n\n");
    let service = daemon.service.take().unwrap();
    // A hang guard, not a timing assertion.
    tokio::time::timeout(std::time::Duration::from_secs(30), service)
        .await
        .expect("the service did not end after shutdown")
        .unwrap();
}

#[tokio::test]
async fn redirects_within_pinned_hosts_are_followed_and_the_credential_stays_on_its_host() {
    let pki = pki();
    let up = upstream(&pki).await;
    let other = upstream(&pki).await;
    let mut init = init(
        &pki,
        vec![
            (HOST.into(), vec![up.addr]),
            (OTHER.into(), vec![other.addr]),
        ],
        true,
    );
    init.capabilities = init.capabilities.replace(
        &format!("hosts = [\"{HOST}\"]"),
        &format!("hosts = [\"{HOST}\", \"{OTHER}\"]"),
    );
    let daemon = broker(init, Policy::Grant).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/same")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/v1/echo?same=1");
    assert_eq!(seen[1].headers["authorization"], format!("Bearer {SECRET}"));
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/hop")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let seen = other.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, OTHER);
    assert_eq!(seen[0].path, "/v1/echo?hopped=1");
    assert!(
        !seen[0].headers.contains_key("authorization"),
        "{:?}",
        seen[0]
    );
}

#[tokio::test]
async fn many_requests_wait_for_the_daemon_at_once() {
    let (up, daemon) = granted(true).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let caller = daemon.connect();
        tasks.push(tokio::spawn(async move {
            let mut c = client(caller).await;
            let resp = c
                .send_request(get(&format!("/testapi/v1/echo/{i}")))
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains(&format!("/v1/echo/{i}")));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.seen().len(), 8);
    assert_eq!(wait_dones(&daemon, 8).await.len(), 8);
}

#[tokio::test]
async fn the_upstream_is_asked_for_whole_unencoded_bodies_and_an_encoded_one_is_refused() {
    let (up, daemon) = granted(true).await;
    let mut c = client(daemon.connect()).await;
    let req = Request::builder()
        .uri("/testapi/v1/echo")
        .header("host", "broker")
        .header("accept-encoding", "gzip, br")
        .header("range", "bytes=0-3")
        .body(Full::new(Bytes::new()))
        .unwrap();
    c.ready().await.unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let seen = up.seen();
    assert_eq!(seen[0].headers["accept-encoding"], "identity");
    assert!(!seen[0].headers.contains_key("range"), "{:?}", seen[0]);
    c.ready().await.unwrap();
    let resp = c.send_request(get("/testapi/gzip")).await.unwrap();
    assert_eq!(resp.status(), 502);
}

#[tokio::test]
async fn a_caller_that_goes_away_before_its_answer_is_still_reported_done() {
    let (up, daemon) = granted(true).await;
    let caller = daemon.connect();
    let mut c = client(caller).await;
    c.ready().await.unwrap();
    let pending = tokio::spawn(async move {
        let _ = c.send_request(get("/testapi/slow")).await;
    });
    // Wait until the upstream holds the request, then hang up.
    while up.seen().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    pending.abort();
    let dones = wait_dones(&daemon, 1).await;
    assert!(
        matches!(&dones[..], [FromBroker::Done { status: None, error: Some(e), .. }] if e.contains("went away")),
        "{dones:?}"
    );
    up.sse_go.notify_one();
}
