//! A loopback TLS upstream for the broker tests: an HTTPS server on
//! `127.0.0.1:0` whose certificate, for the host names it is started with
//! (`api.openai.com`), is signed by a test CA made at start-up — no key
//! material lives in the repository. The CA's PEM is written to a file for
//! the daemon's `[broker.testing] extra_roots`.
//!
//! It answers like OpenAI's chat completions, with an assistant message
//! that echoes what it received — the `Authorization` header and the body —
//! so a test can see that the credential arrived upstream and came back
//! redacted. It also sets a cookie and echoes the header in
//! `x-echo-authorization`, both of which the broker must not pass on. A
//! request with `"stream": true` gets server-sent events in chunks; with a
//! request header `x-hold-stream`, the last events wait for
//! [`TlsUpstream::release`], so a test can tell that the first ones reached
//! the caller before the response ended (a broker that buffered would hold
//! them back) without timing anything. Other paths, for the guards' tests:
//!
//! * `…/redirect?to=URL` answers `302` to `URL` (redirect guards);
//! * `…/bytes?n=N` answers `N` bytes of `a` (response size limits);
//! * `…/mcp` is a streamable-HTTP MCP server ([`crate::mcp_http`]);
//! * `…/status/NNN` answers status `NNN` with a `www-authenticate` header
//!   carrying the credential (stripped response headers);
//! * anything else a JSON echo: method, path, `authorization` and its
//!   base64 (`authorization_b64`, for the redactor's encodings), body.
//!
//! Every request is recorded ([`TlsUpstream::seen`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The TLS server name the client asked for (SNI).
    pub sni: Option<String>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// The running upstream; stopped on drop.
#[derive(Debug)]
pub struct TlsUpstream {
    pub addr: SocketAddr,
    /// The test CA's certificate (PEM), world-readable.
    pub ca_pem: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<tokio::sync::Semaphore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A test CA and a server certificate it signed for `hosts` (and
/// 127.0.0.1): the CA's PEM, the chain and the key.
fn certificates(
    hosts: &[&str],
) -> (
    String,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "aivault test CA (made at test time)");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("server key");
    let mut leaf = CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .expect("server params");
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    leaf.distinguished_name.push(DnType::CommonName, hosts[0]);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &ca_cert, &ca_key)
        .expect("server certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    (
        ca_cert.pem(),
        vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key,
    )
}

impl TlsUpstream {
    /// Starts the upstream for `hosts` (the first is the certificate's
    /// common name) and writes the CA to `dir/upstream-ca.pem`.
    pub fn start(hosts: &[&str], dir: &Path) -> TlsUpstream {
        assert!(!hosts.is_empty(), "the upstream needs a host name");
        let (ca_pem, chain, key) = certificates(hosts);
        let ca_path = dir.join("upstream-ca.pem");
        std::fs::write(&ca_path, ca_pem).expect("writing the test CA");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ca_path, std::fs::Permissions::from_mode(0o644))
            .expect("chmod the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (s, r) = (seen.clone(), release.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("upstream runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            // Answers go out as written (no Nagle wait on a
                            // client's delayed acknowledgement).
                            let _ = tcp.set_nodelay(true);
                            let (acceptor, seen, release) = (acceptor.clone(), s.clone(), r.clone());
                            tokio::spawn(async move {
                                if let Ok(tls) = acceptor.accept(tcp).await {
                                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                                    let _ = serve(tls, sni, seen, release).await;
                                }
                            });
                        }
                    }
                }
            });
        });
        TlsUpstream {
            addr,
            ca_pem: ca_path,
            seen,
            release,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The requests received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Lets one held stream (`x-hold-stream`) send its last events.
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The echo a completion carries: what the upstream was sent.
pub fn echo_text(authorization: Option<&str>, body: &[u8]) -> String {
    format!(
        "authorization={}; body={}",
        authorization.unwrap_or("(none)"),
        String::from_utf8_lossy(body)
    )
}

pub(crate) type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Serves requests on one connection until it closes or asks to.
async fn serve(
    tls: Io,
    sni: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<tokio::sync::Semaphore>,
) -> std::io::Result<()> {
    let mut io = BufReader::new(tls);
    loop {
        let Some(req) = read_request(&mut io, sni.clone()).await? else {
            return Ok(());
        };
        if let Ok(mut s) = seen.lock() {
            s.push(req.clone());
        }
        let close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        respond(io.get_mut(), &req, &release).await?;
        if close {
            io.get_mut().shutdown().await?;
            return Ok(());
        }
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// One request (head and body, by length or chunks); `None` at a clean close.
async fn read_request(
    io: &mut BufReader<Io>,
    sni: Option<String>,
) -> std::io::Result<Option<Seen>> {
    let mut line = String::new();
    if io.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_string(), t.to_string()),
        _ => return Err(bad("bad request line")),
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Err(bad("closed in the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        if headers.len() > 200 {
            return Err(bad("too many headers"));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        loop {
            line.clear();
            io.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    line.clear();
                    if io.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            io.read_exact(&mut body[start..]).await?;
            line.clear();
            io.read_line(&mut line).await?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        if len > 64 * 1024 * 1024 {
            return Err(bad("body too large"));
        }
        body.resize(len, 0);
        io.read_exact(&mut body).await?;
    }
    Ok(Some(Seen {
        method,
        target,
        headers,
        body,
        sni,
    }))
}

async fn respond(io: &mut Io, req: &Seen, release: &tokio::sync::Semaphore) -> std::io::Result<()> {
    let auth = req.header("authorization");
    let echo = echo_text(auth, &req.body);
    let common = format!(
        "set-cookie: session=upstream-session-cookie; Path=/; HttpOnly\r\nx-echo-authorization: {}\r\nx-upstream: aivault-test\r\n",
        auth.unwrap_or("(none)")
    );
    let path = req.target.split('?').next().unwrap_or("");
    let parsed: Option<Value> = serde_json::from_slice(&req.body).ok();
    if path.ends_with("/mcp") {
        return crate::mcp_http::respond(io, req, release).await;
    }
    if req.method == "POST" && path.ends_with("/chat/completions") {
        let model = parsed
            .as_ref()
            .and_then(|v| v["model"].as_str())
            .unwrap_or("test-model")
            .to_string();
        let stream = parsed.as_ref().is_some_and(|v| v["stream"] == true);
        if stream {
            return stream_events(io, req, &common, &model, &echo, release).await;
        }
        let body = json!({
            "id": "chatcmpl-aivault-test",
            "object": "chat.completion",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": echo},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        })
        .to_string();
        return write_whole(io, 200, "OK", &common, "application/json", body.as_bytes()).await;
    }
    let query = req.target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    if path.ends_with("/redirect") {
        let to = param("to").unwrap_or_default();
        let common = format!("{common}location: {to}\r\n");
        return write_whole(io, 302, "Found", &common, "text/plain", b"").await;
    }
    if path.ends_with("/bytes") {
        let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
        let body = vec![b'a'; n.min(256 * 1024 * 1024)];
        return write_whole(io, 200, "OK", &common, "application/octet-stream", &body).await;
    }
    if let Some(code) = path
        .rsplit_once("/status/")
        .and_then(|(_, c)| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
    {
        let common = format!(
            "{common}www-authenticate: Bearer realm=\"test\", error=\"{}\"\r\n",
            auth.unwrap_or("(none)")
        );
        let body = json!({"status": code, "authorization": auth}).to_string();
        return write_whole(
            io,
            code,
            "Test",
            &common,
            "application/json",
            body.as_bytes(),
        )
        .await;
    }
    use base64::Engine as _;
    let body = json!({
        "method": req.method,
        "path": req.target,
        "authorization": auth,
        "authorization_b64": auth.map(|a| base64::engine::general_purpose::STANDARD.encode(a)),
        "body": String::from_utf8_lossy(&req.body),
    })
    .to_string();
    write_whole(io, 200, "OK", &common, "application/json", body.as_bytes()).await
}

pub(crate) async fn write_whole(
    io: &mut Io,
    status: u16,
    reason: &str,
    common: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n{common}content-length: {}\r\n\r\n",
        body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// `data: {chunk}` events in HTTP chunks, a pause between them: a role
/// delta, the echo in one content delta (so a redactor sees the credential
/// whole), then the finish and `[DONE]` — held for [`TlsUpstream::release`]
/// when the request has `x-hold-stream`.
async fn stream_events(
    io: &mut Io,
    req: &Seen,
    common: &str,
    model: &str,
    echo: &str,
    release: &tokio::sync::Semaphore,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n{common}transfer-encoding: chunked\r\n\r\n"
    );
    io.write_all(head.as_bytes()).await?;
    io.flush().await?;
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": "chatcmpl-aivault-test",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
    };
    let first = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": echo}), Value::Null),
    ];
    for ev in first {
        send_chunk(io, format!("data: {ev}\n\n").as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if req.header("x-hold-stream").is_some() {
        release
            .acquire()
            .await
            .map_err(|_| bad("released for ever"))?
            .forget();
    }
    let last = chunk(json!({}), json!("stop"));
    send_chunk(io, format!("data: {last}\n\n").as_bytes()).await?;
    send_chunk(io, b"data: [DONE]\n\n").await?;
    io.write_all(b"0\r\n\r\n").await?;
    io.flush().await
}

pub(crate) async fn send_chunk(io: &mut Io, data: &[u8]) -> std::io::Result<()> {
    io.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    io.write_all(data).await?;
    io.write_all(b"\r\n").await?;
    io.flush().await
}
