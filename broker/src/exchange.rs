//! One exchange with the upstream: the planned request sent on a reused
//! or new connection ([`crate::upstream`]), and redirects judged by
//! [`redirect::judge`]: the same host is followed with the credential,
//! another pinned host without it (the auth header removed), anything
//! else is not followed and its answer goes to the caller without its
//! `Location`. The upstream is asked for whole, unencoded bodies
//! (`accept-encoding: identity`, no ranges), so the redactor sees every
//! secret as it would appear. An `aws-sigv4` capability's request is
//! signed ([`crate::sigv4`]) just before each send, over exactly the
//! headers and body sent; a redirect to another host is not signed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::capability::{Capability, Plan};
use crate::path;
use crate::redirect::{self, Redirect};
use crate::refusal::{refuse, Refusal};
use crate::shared::Shared;
use crate::sigv4;
use aivault_proto::SecretBytes;

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// The host answered, its connection, the response, and whether the
/// caller's copy must lose its `Location` (a redirect not followed).
pub(crate) type Exchanged = (String, crate::upstream::Sender, Response<Incoming>, bool);

/// The keys and scope an `aws-sigv4` request is signed with, for the
/// duration of one request.
pub(crate) struct Signer {
    pub(crate) region: String,
    pub(crate) service: String,
    pub(crate) access_key_id: SecretBytes,
    pub(crate) secret: SecretBytes,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Signer {
    fn sign(
        &self,
        method: &str,
        host: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<(String, String)>, sigv4::SignError> {
        let keys = sigv4::Keys {
            access_key_id: self.access_key_id.as_bytes(),
            secret: self.secret.as_bytes(),
        };
        let scope = sigv4::Scope {
            region: &self.region,
            service: &self.service,
        };
        let req = sigv4::Signable {
            method,
            host,
            target,
            headers,
            body,
        };
        sigv4::sign(&keys, scope, &req, std::time::SystemTime::now())
    }
}

/// Sends the planned request, following redirects as [`redirect::judge`]
/// allows. The last flag tells the caller's response to lose its
/// `Location` (a redirect that was not followed).
pub(crate) async fn exchange(
    shared: &Shared,
    cap: &Capability,
    plan: Plan,
    body: Bytes,
    signer: Option<&Signer>,
) -> Result<Exchanged, Refusal> {
    let pinned: Vec<&str> = cap.hosts.iter().map(String::as_str).collect();
    let own_header = cap.auth.own_header().map(str::to_ascii_lowercase);
    let mut host = plan.host.clone();
    let mut target = plan.target.clone();
    let mut method = plan.method.clone();
    let mut headers = plan.headers.clone();
    // The redactor must see the body as the secret would appear in it: no
    // compression, and no ranges (a secret fetched in pieces is in no
    // single response whole).
    // The body is already here: no `expect: 100-continue` either.
    headers.retain(|(n, _)| {
        !matches!(
            n.as_str(),
            "accept-encoding" | "range" | "if-range" | "expect"
        )
    });
    headers.push(("accept-encoding".into(), "identity".into()));
    let mut body = body;
    let mut hops = 0;
    let mut signer = signer;
    loop {
        let mut sender = shared
            .upstream
            .connect(&host)
            .await
            .map_err(|e| refuse(StatusCode::BAD_GATEWAY, e.to_string()))?;
        let mut req = Request::builder()
            .method(method.as_str())
            .uri(target.as_str())
            .header(hyper::header::HOST, host.as_str());
        let mut send = headers.clone();
        if !body.is_empty() || !matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS") {
            send.push(("content-length".into(), body.len().to_string()));
        }
        if let Some(s) = signer {
            let signed = s
                .sign(&method, &host, &target, &send, &body)
                .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            send.extend(signed);
        }
        for (n, v) in &send {
            req = req.header(n.as_str(), v.as_str());
        }
        let req = req.body(Full::new(body.clone())).map_err(|_| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request cannot be built",
            )
        })?;
        let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                return Err(refuse(
                    StatusCode::BAD_GATEWAY,
                    format!("the upstream failed: {e}"),
                ))
            }
            Err(_) => {
                return Err(refuse(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not answer in time",
                ))
            }
        };
        let status = resp.status();
        if !status.is_redirection() {
            return Ok((host, sender, resp, false));
        }
        let Some(location) = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            return Ok((host, sender, resp, false));
        };
        let next = match redirect::judge(&location, &host, &pinned, hops) {
            Redirect::Refuse(why) => {
                tracing::debug!("redirect not followed: {why}");
                return Ok((host, sender, resp, true));
            }
            Redirect::SameHost { path } => (host.clone(), path, true),
            Redirect::OtherPinnedHost { host, path } => (host, path, false),
        };
        let (next_host, next_target, keep_credential) = next;
        if path::check(&next_target).is_err() {
            return Ok((host, sender, resp, true));
        }
        drop(resp);
        if !keep_credential {
            signer = None;
            headers
                .retain(|(n, _)| Some(n.as_str()) != own_header.as_deref() && n != "authorization");
        }
        // 303, and 301/302 after a POST, turn into a GET without a body.
        let to_get = status == StatusCode::SEE_OTHER
            || (method == "POST"
                && (status == StatusCode::MOVED_PERMANENTLY || status == StatusCode::FOUND));
        if to_get {
            method = "GET".into();
            body = Bytes::new();
            headers.retain(|(n, _)| n != "content-type");
        }
        host = next_host;
        target = next_target;
        hops += 1;
    }
}
