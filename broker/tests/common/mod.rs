//! Test fixtures for the broker process: a loopback TLS upstream under a
//! CA made at test time, a fake daemon on the other end of the control
//! socketpair, and a caller speaking HTTP/1.1 on a handed-over socket.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aivault_proto::broker::{
    BrokerInit, BrokerTesting, DenyReason, FromBroker, ResolveOverride, ToBroker,
};
use aivault_proto::{Limits, SecretBytes};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use tokio::sync::Notify;

pub const SECRET: &str = "sk-test-4f8a2b9c1d7e6f30a5b4";
pub const HOST: &str = "api.test.example";
/// The access key id an `aws-sigv4` grant carries beside [`SECRET`].
pub const AKID: &str = "AKIATESTKEYID7Q3";
pub const OTHER: &str = "evil.test.example";

/// A test CA and a server certificate for the test host names.
pub struct Pki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

pub fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "broker test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![HOST.to_owned(), OTHER.to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub host: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// The loopback TLS upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Lets `/sse` send its second event.
    pub sse_go: Arc<Notify>,
}

impl Upstream {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// Starts the upstream on a fresh loopback port.
pub async fn upstream(pki: &Pki) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    upstream_on(pki, listener).await
}

pub async fn upstream_on(pki: &Pki, listener: tokio::net::TcpListener) -> Upstream {
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&pki.server));
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sse_go = Arc::new(Notify::new());
    let (a, s, g) = (accepted.clone(), seen.clone(), sse_go.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let (s, g) = (s.clone(), g.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let (s, g) = (s.clone(), g.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(req, s, g).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        accepted,
        seen,
        sse_go,
    }
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sse_go: Arc<Notify>,
) -> Response<UpBody> {
    let (parts, body) = req.into_parts();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let path = parts.uri.to_string();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        host: headers.get("host").cloned().unwrap_or_default(),
        path: path.clone(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let p = parts.uri.path();
    if p.starts_with("/leak") {
        // An upstream that repeats both keys of a SigV4 grant.
        return Response::builder()
            .header("x-leak", format!("{AKID} {SECRET}"))
            .body(full(format!("id={AKID} secret={SECRET}")))
            .unwrap();
    }
    if p == "/oauth/token" {
        return token_endpoint(&String::from_utf8_lossy(&body));
    }
    if p.starts_with("/cookie") {
        return Response::builder()
            .header("set-cookie", "session=abc123")
            .header("x-upstream", "yes")
            .body(full("cookie"))
            .unwrap();
    }
    if p.starts_with("/away") {
        return Response::builder()
            .status(302)
            .header("location", format!("https://{OTHER}/steal"))
            .body(full("moved"))
            .unwrap();
    }
    if p.starts_with("/slow") {
        sse_go.notified().await;
        return Response::builder().body(full("late")).unwrap();
    }
    if p.starts_with("/gzip") {
        return Response::builder()
            .header("content-encoding", "gzip")
            .body(full("not really gzip"))
            .unwrap();
    }
    if p.starts_with("/hop") {
        return Response::builder()
            .status(302)
            .header("location", format!("https://{OTHER}/v1/echo?hopped=1"))
            .body(full("moved"))
            .unwrap();
    }
    if p.starts_with("/same") {
        return Response::builder()
            .status(307)
            .header("location", "/v1/echo?same=1")
            .body(full("moved"))
            .unwrap();
    }
    if p.starts_with("/big") {
        // 64 KiB chunks, chunked encoding (no length announced).
        let chunks =
            (0..64).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; 65536]))));
        let stream = futures_stream(chunks.collect());
        return Response::builder().body(stream).unwrap();
    }
    if p.starts_with("/sse") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
                .await;
            sse_go.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))))
                .await;
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(StreamBody::new(ReceiverStream(rx))))
            .unwrap();
    }
    let echo = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header(
            "x-echo-auth",
            headers.get("authorization").cloned().unwrap_or_default(),
        )
        .body(full(echo.to_string()))
        .unwrap()
}

/// A stream over an mpsc receiver (no extra stream crate needed).
pub struct ReceiverStream<T>(pub tokio::sync::mpsc::Receiver<T>);

impl<T> futures_util::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

fn futures_stream(items: Vec<Result<Frame<Bytes>, std::io::Error>>) -> UpBody {
    let (tx, rx) = tokio::sync::mpsc::channel(items.len().max(1));
    for i in items {
        let _ = tx.try_send(i);
    }
    BodyExt::boxed(StreamBody::new(ReceiverStream(rx)))
}

/// The access token the test token endpoint issues for each grant, and
/// the refresh token it rotates to.
pub const CC_TOKEN: &str = "at-cc-7c41e0a9b2d35f68";
pub const RT_TOKEN: &str = "at-rt-19d8f2e6c0b4a357";
pub const ROTATED: &str = "rt-rotated-5e2a90c1f4b7d683";

/// A token endpoint (RFC 6749 5.1): it echoes the client secret and the
/// refresh token it got in fields of its own, which must not reach the
/// caller either.
fn token_endpoint(form: &str) -> Response<UpBody> {
    let v = if form.starts_with("grant_type=client_credentials") {
        serde_json::json!({"access_token": CC_TOKEN, "token_type": "Bearer", "expires_in": 3600, "echo": form})
    } else if form.starts_with("grant_type=refresh_token") {
        serde_json::json!({"access_token": RT_TOKEN, "token_type": "bearer", "expires_in": 60, "refresh_token": ROTATED, "echo": form})
    } else {
        return Response::builder()
            .status(400)
            .body(full(r#"{"error":"unsupported_grant_type"}"#))
            .unwrap();
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap()
}

/// How the fake daemon answers an Authorize.
#[derive(Debug, Clone)]
pub enum Policy {
    Grant,
    /// A grant with these further named secrets.
    GrantWith(Vec<(String, String)>),
    /// An OAuth2 grant of refresh material (no stored access token).
    Refresh(Vec<(String, String)>),
    Deny(DenyReason, Option<u32>),
}

pub fn capabilities(max_response: u64) -> String {
    format!(
        r#"
[[provider]]
name = "testapi"
hosts = ["{HOST}", "{OTHER}"]
auth = {{ kind = "header", header = "authorization", template = "Bearer {{{{secret}}}}" }}

[[capability]]
name = "testapi"
provider = "testapi"
hosts = ["{HOST}"]
secret = "TEST_KEY"
methods = ["GET", "POST", "HEAD"]
paths = ["/**"]
max_request_bytes = 1000
max_response_bytes = {max_response}
"#
    )
}

pub fn init(
    pki: &Pki,
    resolve: Vec<(String, Vec<SocketAddr>)>,
    allow_loopback: bool,
) -> BrokerInit {
    BrokerInit {
        capabilities: capabilities(100_000),
        tcp_connect: vec![443],
        home: "/nonexistent/home".into(),
        tmp: "/nonexistent/tmp".into(),
        limits: Limits::default(),
        require_full_landlock: false,
        testing: Some(BrokerTesting {
            extra_roots_pem: Some(pki.ca_pem.clone().into_bytes()),
            resolve: resolve
                .into_iter()
                .map(|(host, addrs)| ResolveOverride { host, addrs })
                .collect(),
            allow_loopback,
        }),
    }
}

/// The daemon's end of the control socket, answering on its own thread.
pub struct Daemon {
    fd: Arc<OwnedFd>,
    pub asked: Arc<Mutex<Vec<FromBroker>>>,
    pub done: Arc<Mutex<Vec<FromBroker>>>,
    next_conn: AtomicUsize,
    /// The in-process service, when there is one.
    pub service: Option<tokio::task::JoinHandle<()>>,
}

/// A socketpair as the daemon makes it.
pub fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

pub fn send(fd: &OwnedFd, msg: &ToBroker, attach: Option<&OwnedFd>) {
    let bytes = postcard::to_stdvec(msg).unwrap();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(a) = attach {
        fds = [a.as_fd()];
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
    }
    rustix::net::sendmsg(
        fd,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
}

pub fn recv(fd: &OwnedFd) -> Option<FromBroker> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::net::recv(fd, &mut buf, rustix::net::RecvFlags::empty())
        .ok()?
        .0;
    if n == 0 {
        return None;
    }
    Some(postcard::from_bytes(&buf[..n]).unwrap())
}

impl Daemon {
    /// Answers every Authorize with `policy`, records every message.
    pub fn start(fd: OwnedFd, policy: Policy) -> Daemon {
        let fd = Arc::new(fd);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Mutex::new(Vec::new()));
        let (f, a, d) = (fd.clone(), asked.clone(), done.clone());
        std::thread::spawn(move || {
            while let Some(msg) = recv(&f) {
                match &msg {
                    FromBroker::Authorize { req, .. } => {
                        let answer = match &policy {
                            Policy::Grant => ToBroker::Grant {
                                req: *req,
                                secret: SecretBytes::new(SECRET.as_bytes().to_vec()),
                                extra: Vec::new(),
                            },
                            Policy::GrantWith(extra) | Policy::Refresh(extra) => ToBroker::Grant {
                                req: *req,
                                secret: SecretBytes::new(if matches!(policy, Policy::Refresh(_)) {
                                    Vec::new()
                                } else {
                                    SECRET.as_bytes().to_vec()
                                }),
                                extra: extra
                                    .iter()
                                    .map(|(n, v)| {
                                        (n.clone(), SecretBytes::new(v.as_bytes().to_vec()))
                                    })
                                    .collect(),
                            },
                            Policy::Deny(reason, retry) => ToBroker::Deny {
                                req: *req,
                                reason: *reason,
                                message: "denied by test policy".into(),
                                retry_after_s: *retry,
                            },
                        };
                        a.lock().unwrap().push(msg.clone());
                        send(&f, &answer, None);
                    }
                    FromBroker::Done { .. } | FromBroker::TokensRefreshed { .. } => {
                        d.lock().unwrap().push(msg.clone())
                    }
                    FromBroker::Confined(_) => {}
                }
            }
        });
        Daemon {
            fd,
            asked,
            done,
            next_conn: AtomicUsize::new(1),
            service: None,
        }
    }

    /// Hands the broker a new caller connection; returns the caller's end.
    pub fn connect(&self) -> StdUnixStream {
        let (caller, broker) = StdUnixStream::pair().unwrap();
        let conn = self.next_conn.fetch_add(1, Ordering::SeqCst) as u64;
        let broker: OwnedFd = broker.into();
        send(&self.fd, &ToBroker::Connection { conn }, Some(&broker));
        caller
    }

    pub fn shutdown(&self) {
        send(&self.fd, &ToBroker::Shutdown, None);
    }

    pub fn dones(&self) -> Vec<FromBroker> {
        self.done.lock().unwrap().clone()
    }
}

pub async fn broker(init: BrokerInit, policy: Policy) -> Daemon {
    let (daemon_end, broker_end) = seqpacket_pair();
    let service = aivault_broker::serve::Service::prepare(&init).unwrap();
    let handle = tokio::spawn(async move {
        service.run(broker_end).await.unwrap();
    });
    let mut daemon = Daemon::start(daemon_end, policy);
    daemon.service = Some(handle);
    daemon
}

/// A raw HTTP/1.1 exchange: writes `request`, reads until the broker closes
/// (the request should say `connection: close`).
pub async fn raw(caller: StdUnixStream, request: &[u8]) -> Vec<u8> {
    let request = request.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut caller = caller;
        caller.write_all(&request).unwrap();
        let mut out = Vec::new();
        let _ = caller.read_to_end(&mut out);
        out
    })
    .await
    .unwrap()
}

/// Sends a request on a caller connection with hyper's client.
pub async fn client(caller: StdUnixStream) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    caller.set_nonblocking(true).unwrap();
    let io = tokio::net::UnixStream::from_std(caller).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "broker")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
