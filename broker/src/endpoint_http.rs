//! One caller connection: HTTP/1.1 (keep-alive) on the socket the daemon
//! handed over, Unix or TCP. A request `/<capability>/<rest>` is checked
//! (whole target through [`crate::path::check`], the capability by the
//! longest name matching whole segments, body within the capability's
//! limit, then every guard of [`Capability::plan`]) before the daemon is
//! asked; after a grant it goes to the upstream ([`crate::exchange`], with
//! its redirects), and the response streams back with its headers
//! filtered ([`crate::headers::strip_response`]) and redacted, its body
//! through [`crate::stream`]. Every answer the broker makes itself is a
//! status with `{"error": "..."}`; none carries the credential.

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::broker::{DenyReason, FromBroker};
use aivault_redact::{Patterns, Redactor, Secret};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustix::net::AddressFamily;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::auth::Auth;
use crate::capability::{self, Capability, RequestError};
use crate::exchange::Signer;
use crate::path;
use crate::refusal::{refuse, Refusal};
use crate::shared::{Answer, Shared};
use crate::stream;
use aivault_proto::SecretBytes;

type Out = BoxBody<Bytes, std::io::Error>;

/// Stands in for the credential when the guards run before the daemon is
/// asked (every auth shape renders it).
const PLACEHOLDER: &[u8] = b"placeholder";
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `fd` until the caller closes it, it fails, or `stop` turns true
/// (then the request in flight finishes first).
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    conn: u64,
    fd: OwnedFd,
    stop: watch::Receiver<bool>,
) {
    let family = match rustix::net::sockopt::socket_domain(&fd) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("connection {conn}: not a socket: {e}");
            return;
        }
    };
    if family == AddressFamily::UNIX {
        let std = std::os::unix::net::UnixStream::from(fd);
        match std
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(std))
        {
            Ok(s) => serve_io(shared, conn, s, stop).await,
            Err(e) => tracing::warn!("connection {conn}: {e}"),
        }
    } else if family == AddressFamily::INET || family == AddressFamily::INET6 {
        let std = std::net::TcpStream::from(fd);
        match std
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(std))
        {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                serve_io(shared, conn, s, stop).await
            }
            Err(e) => tracing::warn!("connection {conn}: {e}"),
        }
    } else {
        tracing::warn!("connection {conn}: neither a unix nor a TCP socket");
    }
}

async fn serve_io<I>(shared: Arc<Shared>, conn: u64, io: I, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, conn, req).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    loop {
        tokio::select! {
            r = connection.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("connection {conn}: {e}");
                }
                return;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    connection.as_mut().graceful_shutdown();
                    if let Err(e) = connection.as_mut().await {
                        tracing::debug!("connection {conn}: {e}");
                    }
                    return;
                }
            }
        }
    }
}

fn error_response(r: &Refusal) -> Response<Out> {
    let body = serde_json::json!({ "error": r.message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(s) = r.retry_after {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn request_status(e: &RequestError) -> StatusCode {
    match e {
        RequestError::Method => StatusCode::METHOD_NOT_ALLOWED,
        RequestError::Path(_) | RequestError::Header(_) | RequestError::AuthParam => {
            StatusCode::BAD_REQUEST
        }
        RequestError::PathNotAllowed => StatusCode::FORBIDDEN,
        RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        RequestError::Auth(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The capability a path names, and the rest of the path below it.
fn route<'a>(caps: &'a [Capability], path: &str) -> Option<(&'a Capability, String)> {
    let inner = path.strip_prefix('/')?;
    caps.iter().find_map(|c| {
        let rest = inner.strip_prefix(c.name.as_str())?;
        if rest.is_empty() {
            Some((c, "/".to_owned()))
        } else if rest.starts_with('/') {
            Some((c, rest.to_owned()))
        } else {
            None
        }
    })
}

/// The target as audited: query values replaced by `*`.
fn audit_path(target: &str) -> String {
    match target.split_once('?') {
        None => target.to_owned(),
        Some((p, q)) => {
            let q: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}=*"),
                    None => kv.to_owned(),
                })
                .collect();
            format!("{p}?{}", q.join("&"))
        }
    }
}

async fn handle(shared: Arc<Shared>, conn: u64, req: Request<Incoming>) -> Response<Out> {
    match prepare(&shared, req).await {
        Err(r) => error_response(&r),
        Ok(prepared) => forward(shared, conn, prepared).await,
    }
}

/// A request that passed every guard that needs no credential.
struct Prepared {
    cap_index: usize,
    request: capability::Request,
    body: Bytes,
}

async fn prepare(shared: &Shared, req: Request<Incoming>) -> Result<Prepared, Refusal> {
    let (parts, body) = req.into_parts();
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the request target must be a path",
        ));
    }
    let raw = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let checked = path::check(raw).map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (cap, rest_path) = route(&shared.caps, &checked.path)
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no such capability"))?;
    let cap_index = shared
        .caps
        .iter()
        .position(|c| c.name == cap.name)
        .unwrap_or_default();
    let target = match &checked.query {
        Some(q) => format!("{rest_path}?{q}"),
        None => rest_path,
    };
    let mut headers = Vec::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let value = value.to_str().map_err(|_| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("the value of header {name:?} is not visible ASCII"),
            )
        })?;
        headers.push((name.as_str().to_owned(), value.to_owned()));
    }
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::BodyTooLarge(cap.max_request_bytes).to_string(),
        )
    };
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap.max_request_bytes) {
        return Err(too_large());
    }
    let limit = usize::try_from(cap.max_request_bytes).unwrap_or(usize::MAX);
    let body = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            refuse(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
        })?
        .map_err(|_| too_large())?
        .to_bytes();
    let request = capability::Request {
        method: parts.method.as_str().to_owned(),
        target,
        headers,
        body_len: body.len() as u64,
    };
    cap.plan(&request, PLACEHOLDER)
        .map_err(|e| refuse(request_status(&e), e.to_string()))?;
    Ok(Prepared {
        cap_index,
        request,
        body,
    })
}

/// Asks the daemon, then carries the request out and reports it done.
async fn forward(shared: Arc<Shared>, conn: u64, p: Prepared) -> Response<Out> {
    let cap = &shared.caps[p.cap_index];
    let req = shared.next_req();
    let ask = FromBroker::Authorize {
        req,
        conn,
        capability: cap.name.clone(),
        method: p.request.method.clone(),
        path: audit_path(&p.request.target),
    };
    let (mut secret, extra) = match shared.authorize(ask, req).await {
        None => {
            return error_response(&refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon did not answer",
            ))
        }
        Some(Answer::Deny {
            reason,
            message,
            retry_after_s,
        }) => {
            let status = match reason {
                DenyReason::Forbidden => StatusCode::FORBIDDEN,
                DenyReason::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                DenyReason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            };
            let retry_after = match reason {
                DenyReason::RateLimited => Some(retry_after_s.unwrap_or(60)),
                _ => retry_after_s,
            };
            return error_response(&Refusal {
                status,
                message,
                retry_after,
            });
        }
        Some(Answer::Grant(secret, extra)) => (secret, extra),
    };
    let report = Report {
        shared: Arc::clone(&shared),
        req,
        request_bytes: p.body.len() as u64,
        started: Instant::now(),
        sent: false,
    };
    // Everything of the grant is redacted, under its vault name: the
    // credential and the further secrets (an access key id is no less the
    // caller's to never see, nor is refresh material). An OAuth2
    // grant of refresh material (no stored access token) first gets a
    // token from the endpoint (`crate::oauth2`), reported to the daemon.
    let mut secrets: Vec<Secret> = extra
        .iter()
        .map(|(role, v)| Secret::new(material_name(cap, role), v.as_bytes().to_vec()))
        .collect();
    if matches!(cap.auth, crate::auth::Auth::Oauth2 { .. }) && !extra.is_empty() {
        match crate::oauth2::refresh(&shared, &cap.auth, &extra).await {
            Ok(issued) => {
                if let Some(rt) = &issued.refresh_token {
                    // Labelled apart from the old one (names are unique).
                    secrets.push(Secret::new(
                        format!("{}_NEW", material_name(cap, crate::auth::REFRESH_TOKEN)),
                        rt.as_bytes().to_vec(),
                    ));
                }
                secret = issued.access_token.clone();
                shared
                    .done(FromBroker::TokensRefreshed {
                        req,
                        access_token: issued.access_token,
                        expires_in_s: issued.expires_in_s,
                        refresh_token: issued.refresh_token,
                    })
                    .await;
            }
            Err(r) => {
                report.finish(None, 0, Some(r.message.clone())).await;
                return error_response(&r);
            }
        }
    }
    let signer = match signer(cap, &secret, &extra) {
        Ok(s) => s,
        Err(r) => {
            report.finish(None, 0, Some(r.message.clone())).await;
            return error_response(&r);
        }
    };
    drop(extra);
    let planned = cap
        .plan(&p.request, secret.as_bytes())
        .map_err(|e| refuse(request_status(&e), e.to_string()));
    secrets.push(Secret::new(cap.secret.as_str(), secret.as_bytes().to_vec()));
    let patterns = Patterns::new(&secrets);
    drop(secrets);
    drop(secret);
    let (plan, patterns) = match (planned, patterns) {
        (Ok(plan), Ok(patterns)) => (plan, Arc::new(patterns)),
        (Err(r), _) => {
            report.finish(None, 0, Some(r.message.clone())).await;
            return error_response(&r);
        }
        (_, Err(_)) => {
            let r = refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the credential cannot be redacted",
            );
            report.finish(None, 0, Some(r.message.clone())).await;
            return error_response(&r);
        }
    };
    let exchanged = crate::exchange::exchange(&shared, cap, plan, p.body, signer.as_ref()).await;
    drop(signer);
    let (host, sender, resp, location_refused) = match exchanged {
        Ok(x) => x,
        Err(r) => {
            report.finish(None, 0, Some(r.message.clone())).await;
            return error_response(&r);
        }
    };
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let raw: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let encoded = parts
        .headers
        .get(hyper::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        let r = refuse(
            StatusCode::BAD_GATEWAY,
            "the upstream sent an encoded body, which cannot be redacted",
        );
        report
            .finish(Some(status.as_u16()), 0, Some(r.message.clone()))
            .await;
        return error_response(&r);
    }
    if declared.is_some_and(|n| n > cap.max_response_bytes) {
        let r = refuse(
            StatusCode::BAD_GATEWAY,
            format!(
                "the response is larger than the capability's {} bytes",
                cap.max_response_bytes
            ),
        );
        report
            .finish(Some(status.as_u16()), 0, Some(r.message.clone()))
            .await;
        return error_response(&r);
    }
    let mut out = Response::builder().status(status);
    for (name, value) in crate::headers::strip_response(&raw) {
        if name == "content-length" || (location_refused && name == "location") {
            continue;
        }
        let value = aivault_redact::redact_all(&patterns, value.as_bytes());
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            out = out.header(n, v);
        }
    }
    let bodiless = p.request.method == Method::HEAD.as_str()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if bodiless {
        drop(body);
        shared.upstream.give_back(&host, sender);
        report.finish(Some(status.as_u16()), 0, None).await;
        return out
            .body(Empty::new().map_err(|n| match n {}).boxed())
            .unwrap_or_else(|_| error_response(&refuse(StatusCode::BAD_GATEWAY, "bad response")));
    }
    let (tx, channel) = stream::channel();
    let limit = cap.max_response_bytes;
    let redactor = Redactor::new(patterns);
    let shared2 = Arc::clone(&shared);
    tokio::spawn(async move {
        let pumped = stream::pump(body, redactor, limit, tx).await;
        if pumped.complete {
            shared2.upstream.give_back(&host, sender);
        }
        report
            .finish(Some(status.as_u16()), pumped.upstream_bytes, pumped.error)
            .await;
    });
    out.body(channel.boxed())
        .unwrap_or_else(|_| error_response(&refuse(StatusCode::BAD_GATEWAY, "bad response")))
}

/// The signer of an `aws-sigv4` capability's request, with the access key
/// id the daemon granted beside the secret.
fn signer(
    cap: &Capability,
    secret: &SecretBytes,
    extra: &[(String, SecretBytes)],
) -> Result<Option<Signer>, Refusal> {
    let Auth::AwsSigv4 {
        service: Some(service),
        region: Some(region),
        access_key_id,
    } = &cap.auth
    else {
        return Ok(None);
    };
    let Some((_, akid)) = extra.iter().find(|(r, _)| r == crate::auth::ACCESS_KEY_ID) else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the daemon did not grant the access key id {access_key_id}"),
        ));
    };
    Ok(Some(Signer {
        region: region.clone(),
        service: service.clone(),
        access_key_id: akid.clone(),
        secret: secret.clone(),
    }))
}

/// The vault name of a grant's further secret granted as `role`
/// (`access_key_id`, `client_secret`, `refresh_token`), for its redaction
/// label.
fn material_name<'a>(cap: &'a Capability, role: &'a str) -> &'a str {
    cap.auth.secret_of_role(role).unwrap_or(role)
}

/// The `Done` of a granted request: sent once, by [`Report::finish`], or
/// when dropped unsent (the caller went away before its answer began and
/// hyper dropped the request's future) as an error.
struct Report {
    shared: Arc<Shared>,
    req: u64,
    request_bytes: u64,
    started: Instant,
    sent: bool,
}

impl Report {
    fn message(
        &self,
        status: Option<u16>,
        response_bytes: u64,
        error: Option<String>,
    ) -> FromBroker {
        FromBroker::Done {
            req: self.req,
            status,
            request_bytes: self.request_bytes,
            response_bytes,
            duration_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            error,
        }
    }

    async fn finish(mut self, status: Option<u16>, response_bytes: u64, error: Option<String>) {
        self.sent = true;
        let msg = self.message(status, response_bytes, error);
        self.shared.done(msg).await;
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        let msg = self.message(None, 0, Some("the caller went away".into()));
        let shared = Arc::clone(&self.shared);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { shared.done(msg).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_capability_name_of_whole_segments_wins() {
        let text = r#"
[[capability]]
name = "gh"
provider = "github"
secret = "GH_A"
methods = ["GET"]
paths = ["/**"]
[[capability]]
name = "gh/issues"
provider = "github"
secret = "GH_B"
methods = ["GET"]
paths = ["/**"]
"#;
        let caps = crate::serve::compile(text).unwrap();
        let name = |p: &str| route(&caps, p).map(|(c, rest)| (c.name.clone(), rest));
        assert_eq!(
            name("/gh/issues/x"),
            Some(("gh/issues".into(), "/x".into()))
        );
        assert_eq!(
            name("/gh/issuesx/y"),
            Some(("gh".into(), "/issuesx/y".into()))
        );
        assert_eq!(name("/gh"), Some(("gh".into(), "/".into())));
        assert_eq!(name("/ghx/y"), None);
        assert_eq!(name("/other/y"), None);
    }

    #[test]
    fn audit_paths_hide_query_values() {
        assert_eq!(audit_path("/v1/x"), "/v1/x");
        assert_eq!(audit_path("/v1/x?a=1&b&c=sk"), "/v1/x?a=*&b&c=*");
    }
}
