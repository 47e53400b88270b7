//! OAuth2 grants end to end in this process: the loopback TLS upstream
//! also serves a token endpoint; the fake daemon grants refresh material
//! (no stored access token) and records the tokens the broker reports.
#![allow(clippy::unwrap_used)]

mod common;

use aivault_proto::broker::FromBroker;
use base64::Engine as _;
use common::*;
use http_body_util::BodyExt;

const CLIENT_SECRET: &str = "cs-client-3b7e91d04a6f25c8";
const OLD_REFRESH: &str = "rt-old-8d2f60b9e1c4a735";

fn oauth_capabilities(token_host: &str) -> String {
    format!(
        r#"
[[capability]]
name = "cc"
hosts = ["{HOST}"]
secret = "CC_ACCESS"
methods = ["GET"]
paths = ["/**"]
auth = {{ kind = "oauth2", grant = "client-credentials", token_url = "https://{token_host}/oauth/token", client_id = "client 1", client_secret = "CC_CLIENT", scope = "read:all" }}

[[capability]]
name = "rt"
hosts = ["{HOST}"]
secret = "RT_ACCESS"
methods = ["GET"]
paths = ["/**"]
auth = {{ kind = "oauth2", grant = "refresh-token", token_url = "https://{HOST}/oauth/token", client_id = "public-2", refresh_token = "RT_REFRESH" }}
"#
    )
}

async fn oauth_broker(extra: &[(&str, &str)]) -> (Upstream, Daemon) {
    let pki = pki();
    let up = upstream(&pki).await;
    let mut init = init(&pki, vec![(HOST.into(), vec![up.addr])], true);
    init.capabilities = oauth_capabilities(HOST);
    let extra = extra
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let daemon = broker(init, Policy::Refresh(extra)).await;
    (up, daemon)
}

async fn wait_for(daemon: &Daemon, n: usize) -> Vec<FromBroker> {
    for _ in 0..500 {
        let d = daemon.dones();
        if d.len() >= n {
            return d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    daemon.dones()
}

/// The caller's answer, head and body, as text.
async fn call(daemon: &Daemon, path: &str) -> (u16, String) {
    let mut c = client(daemon.connect()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(get(path)).await.unwrap();
    let status = resp.status().as_u16();
    let head = format!("{:?}", resp.headers());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        format!("{head}\n{}", String::from_utf8_lossy(&body)),
    )
}

#[tokio::test]
async fn client_credentials_get_a_token_first_and_the_request_carries_it() {
    let (up, daemon) = oauth_broker(&[("client_secret", CLIENT_SECRET)]).await;
    let (status, answer) = call(&daemon, "/cc/v1/echo").await;
    assert_eq!(status, 200, "{answer}");
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // First the token request: a form POST with HTTP Basic client auth.
    let token = &seen[0];
    assert_eq!(token.host, HOST);
    assert_eq!(token.path, "/oauth/token");
    assert_eq!(
        token.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(token.body, "grant_type=client_credentials&scope=read%3Aall");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("client%201:{CLIENT_SECRET}"));
    assert_eq!(token.headers["authorization"], format!("Basic {basic}"));
    // Then the API request with the new token.
    assert_eq!(seen[1].path, "/v1/echo");
    assert_eq!(
        seen[1].headers["authorization"],
        format!("Bearer {CC_TOKEN}")
    );
    // The upstream echoed the token back: the caller sees it redacted, and
    // nothing of the client secret or the token endpoint's answer.
    for secret in [CC_TOKEN, CLIENT_SECRET, &basic] {
        assert!(!answer.contains(secret), "{secret} in {answer}");
    }
    assert!(answer.contains("[REDACTED:CC_ACCESS]"), "{answer}");
    // The daemon was told of the new token before the request was done.
    let got = wait_for(&daemon, 2).await;
    match &got[..] {
        [FromBroker::TokensRefreshed {
            access_token,
            expires_in_s,
            refresh_token,
            ..
        }, FromBroker::Done {
            status: Some(200), ..
        }] => {
            assert_eq!(access_token.as_bytes(), CC_TOKEN.as_bytes());
            assert_eq!(*expires_in_s, Some(3600));
            assert!(refresh_token.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_refresh_token_grant_rotates_the_refresh_token() {
    let (up, daemon) = oauth_broker(&[("refresh_token", OLD_REFRESH)]).await;
    let (status, answer) = call(&daemon, "/rt/v1/echo?x=1").await;
    assert_eq!(status, 200, "{answer}");
    let seen = up.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // A public client: its id in the form, no client authentication.
    assert_eq!(
        seen[0].body,
        format!("grant_type=refresh_token&refresh_token={OLD_REFRESH}&client_id=public-2")
    );
    assert!(!seen[0].headers.contains_key("authorization"));
    assert_eq!(
        seen[1].headers["authorization"],
        format!("Bearer {RT_TOKEN}")
    );
    for secret in [RT_TOKEN, OLD_REFRESH, ROTATED] {
        assert!(!answer.contains(secret), "{secret} in {answer}");
    }
    let got = wait_for(&daemon, 2).await;
    let Some(FromBroker::TokensRefreshed {
        access_token,
        expires_in_s,
        refresh_token,
        ..
    }) = got.first()
    else {
        panic!("{got:?}");
    };
    assert_eq!(access_token.as_bytes(), RT_TOKEN.as_bytes());
    assert_eq!(*expires_in_s, Some(60));
    assert_eq!(
        refresh_token.as_ref().unwrap().as_bytes(),
        ROTATED.as_bytes()
    );
}

#[tokio::test]
async fn a_refused_token_request_answers_the_caller_without_its_body_and_stores_nothing() {
    // No refresh material the endpoint accepts: the client-credentials
    // capability granted only a refresh token has nothing to send.
    let (up, daemon) = oauth_broker(&[("refresh_token", OLD_REFRESH)]).await;
    let (status, answer) = call(&daemon, "/cc/v1/echo").await;
    assert_eq!(status, 503, "{answer}");
    assert!(!answer.contains(OLD_REFRESH));
    assert!(up.seen().is_empty());
    let got = wait_for(&daemon, 1).await;
    assert!(
        matches!(&got[..], [FromBroker::Done { status: None, .. }]),
        "{got:?}"
    );
}

#[test]
fn a_token_url_on_a_host_that_is_not_pinned_is_refused_at_load() {
    aivault_broker::serve::compile(&oauth_capabilities(HOST)).unwrap();
    let e = aivault_broker::serve::compile(&oauth_capabilities(OTHER)).unwrap_err();
    assert!(e.to_string().contains(OTHER), "{e}");
}
