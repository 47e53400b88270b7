//! `aws-sigv4` capabilities end to end in this process: the fake daemon
//! grants the secret access key and the access key id, the loopback TLS
//! upstream receives a request this test verifies by computing the
//! signature itself, and neither key reaches the caller.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::*;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use sha2::{Digest, Sha256};

const REGION: &str = "eu-west-3";
const SERVICE: &str = "s3";

fn sigv4_capabilities() -> String {
    format!(
        r#"
[[provider]]
name = "testaws"
hosts = ["{HOST}", "{OTHER}"]
secrets = ["TEST_SECRET_KEY", "TEST_KEY_ID"]
auth = {{ kind = "aws-sigv4", access_key_id = "TEST_KEY_ID" }}

[[capability]]
name = "store"
provider = "testaws"
hosts = ["{HOST}", "{OTHER}"]
secret = "TEST_SECRET_KEY"
auth = {{ kind = "aws-sigv4", service = "{SERVICE}", region = "{REGION}", access_key_id = "TEST_KEY_ID" }}
methods = ["GET", "PUT"]
paths = ["/**"]
"#
    )
}

async fn signing_broker(policy: Policy) -> (Upstream, Daemon) {
    let pki = pki();
    let up = upstream(&pki).await;
    let mut init = init(
        &pki,
        vec![(HOST.into(), vec![up.addr]), (OTHER.into(), vec![up.addr])],
        true,
    );
    init.capabilities = sigv4_capabilities();
    let daemon = broker(init, policy).await;
    (up, daemon)
}

fn both_keys() -> Policy {
    Policy::GrantWith(vec![("access_key_id".into(), AKID.into())])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The signature of a request as the upstream saw it, computed here from
/// the description of SigV4 (plain path and query: nothing to escape;
/// header values trimmed, runs of spaces made one).
fn expected_signature(
    method: &str,
    target: &str,
    headers: &BTreeMap<String, String>,
    signed: &[&str],
) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort();
    let canonical_headers: String = signed
        .iter()
        .map(|h| {
            let v: Vec<&str> = headers[*h].split(' ').filter(|w| !w.is_empty()).collect();
            format!("{h}:{}\n", v.join(" "))
        })
        .collect();
    let canonical = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{}\n{}",
        pairs.join("&"),
        signed.join(";"),
        headers["x-amz-content-sha256"]
    );
    let date = &headers["x-amz-date"];
    let scope = format!("{}/{REGION}/{SERVICE}/aws4_request", &date[..8]);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = mac(format!("AWS4{SECRET}").as_bytes(), &date[..8]);
    for part in [REGION, SERVICE, "aws4_request"] {
        key = mac(&key, part);
    }
    hex(&mac(&key, &to_sign))
}

/// Checks the signature the upstream received on request `seen`.
fn assert_signed(seen: &Seen) {
    let got = &seen.headers;
    let auth = &got["authorization"];
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").unwrap();
    let fields: BTreeMap<&str, &str> = rest
        .split(", ")
        .map(|f| f.split_once('=').unwrap())
        .collect();
    let signed: Vec<&str> = fields["SignedHeaders"].split(';').collect();
    assert_eq!(
        fields["Signature"],
        expected_signature("GET", &seen.path, got, &signed),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_same_host_redirect_is_signed_again_and_another_host_gets_no_signature() {
    let (up, daemon) = signing_broker(both_keys()).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/store/same")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].path, "/v1/echo?same=1");
    assert_signed(&seen[0]);
    assert_signed(&seen[1]);
    assert_ne!(
        seen[0].headers["authorization"],
        seen[1].headers["authorization"]
    );

    c.ready().await.unwrap();
    let resp = c.send_request(get("/store/hop")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3].host, OTHER);
    assert_signed(&seen[2]);
    for h in ["authorization", "x-amz-date", "x-amz-content-sha256"] {
        assert!(!seen[3].headers.contains_key(h), "{h}: {:?}", seen[3]);
    }
}

#[tokio::test]
async fn the_upstream_gets_a_valid_signature_and_the_caller_neither_key() {
    let (up, daemon) = signing_broker(both_keys()).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let body = "object contents";
    let req = Request::builder()
        .method("PUT")
        .uri("/store/bucket/key.txt?b=2&a=1")
        .header("host", "broker")
        .header("content-type", "text/plain")
        .header("x-amz-meta-note", "kept  and signed")
        // The caller's own signing headers are the broker's to set.
        .header("x-amz-date", "19990101T000000Z")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = format!("{:?}", resp.headers());
    let echoed = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0].headers;
    assert_eq!(seen[0].host, HOST);
    assert_eq!(seen[0].path, "/bucket/key.txt?b=2&a=1");
    assert_eq!(
        got["x-amz-content-sha256"],
        hex(&Sha256::digest(body.as_bytes()))
    );
    assert_ne!(got["x-amz-date"], "19990101T000000Z");
    assert!(!got.contains_key("x-amz-security-token"));
    let auth = &got["authorization"];
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").unwrap();
    let fields: BTreeMap<&str, &str> = rest
        .split(", ")
        .map(|f| f.split_once('=').unwrap())
        .collect();
    assert_eq!(
        fields["Credential"],
        format!(
            "{AKID}/{}/{REGION}/{SERVICE}/aws4_request",
            &got["x-amz-date"][..8]
        )
    );
    let signed: Vec<&str> = fields["SignedHeaders"].split(';').collect();
    for h in [
        "host",
        "x-amz-date",
        "x-amz-content-sha256",
        "content-type",
        "x-amz-meta-note",
        "content-length",
    ] {
        assert!(signed.contains(&h), "{h} is not signed: {auth}");
    }
    // Every header the upstream received is signed.
    for h in got.keys() {
        assert!(
            h == "authorization" || signed.contains(&h.as_str()),
            "{h} is not signed"
        );
    }
    assert_eq!(
        fields["Signature"],
        expected_signature("PUT", &seen[0].path, got, &signed)
    );
    // The upstream echoed the authorization (with the key id) back.
    assert!(!echoed.contains(AKID), "{echoed}");
    assert!(!headers.contains(AKID), "{headers}");
    assert!(echoed.contains("[REDACTED:TEST_KEY_ID]"), "{echoed}");
}

#[tokio::test]
async fn neither_key_comes_back_when_the_upstream_repeats_them() {
    let (_up, daemon) = signing_broker(both_keys()).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/store/leak")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = format!("{:?}", resp.headers());
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for key in [AKID, SECRET] {
        assert!(!body.contains(key), "{body}");
        assert!(!headers.contains(key), "{headers}");
    }
    assert!(body.contains("[REDACTED:TEST_KEY_ID]"), "{body}");
    assert!(body.contains("[REDACTED:TEST_SECRET_KEY]"), "{body}");
}

#[tokio::test]
async fn a_grant_without_the_access_key_id_is_refused_before_the_upstream() {
    let (up, daemon) = signing_broker(Policy::Grant).await;
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get("/store/bucket/key")).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn a_caller_signature_or_session_token_is_refused() {
    let (up, daemon) = signing_broker(both_keys()).await;
    for (name, value) in [
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAOTHER/20150830/eu-west-3/s3/aws4_request, SignedHeaders=host, Signature=00",
        ),
        ("x-amz-security-token", "caller-token"),
    ] {
        let mut c = client(daemon.connect()).await;
        c.ready().await.unwrap();
        let req = Request::builder()
            .uri("/store/bucket/key")
            .header("host", "broker")
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = c.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 400, "{name}");
    }
    assert!(up.seen().is_empty());
    assert!(daemon.asked.lock().unwrap().is_empty());
}
