//! The response body on its way to the caller: read from the upstream as
//! it arrives, counted against the capability's limit, passed through the
//! streaming redactor for the granted secret, and handed to the caller's
//! connection through a channel, so an SSE event leaves as soon as it is
//! complete. A quiet upstream makes the redactor release what it holds
//! back (at most a few bytes of a possible match; see
//! [`aivault_redact::Redactor::flush_idle`]). Going over the limit ends the
//! caller's response with an error, which closes its connection: the
//! caller sees a cut body, never a silently truncated one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use aivault_redact::Redactor;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

/// How long the upstream may be quiet before held bytes are released.
const IDLE: Duration = Duration::from_millis(50);

/// The caller's side of the response body.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// The sending side, kept by the pump.
pub fn channel() -> (mpsc::Sender<Result<Bytes, io::Error>>, ChannelBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody { rx })
}

/// How the body ended.
#[derive(Debug, Default)]
pub struct Pumped {
    /// Bytes read from the upstream.
    pub upstream_bytes: u64,
    /// The body was read to its end (the connection can be reused).
    pub complete: bool,
    pub error: Option<String>,
}

/// Moves the upstream body to the caller until it ends, fails, goes over
/// `limit` bytes or the caller goes away.
pub async fn pump(
    mut body: Incoming,
    mut redactor: Redactor,
    limit: u64,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) -> Pumped {
    let mut done = Pumped::default();
    let mut out = Vec::new();
    loop {
        let next = if redactor.held() > 0 {
            match tokio::time::timeout(IDLE, body.frame()).await {
                Ok(next) => next,
                Err(_quiet) => {
                    redactor.flush_idle(&mut out);
                    if !send(&tx, &mut out).await {
                        done.error = Some("the caller went away".into());
                        return done;
                    }
                    continue;
                }
            }
        } else {
            body.frame().await
        };
        match next {
            None => {
                redactor.finish(&mut out);
                if !send(&tx, &mut out).await {
                    done.error = Some("the caller went away".into());
                    return done;
                }
                done.complete = true;
                return done;
            }
            Some(Err(e)) => {
                let msg = format!("the upstream's response failed: {e}");
                let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
                done.error = Some(msg);
                return done;
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are not passed on
                };
                done.upstream_bytes += data.len() as u64;
                if done.upstream_bytes > limit {
                    let msg = format!("the response is larger than the capability's {limit} bytes");
                    let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
                    done.error = Some(msg);
                    return done;
                }
                redactor.write(&data, &mut out);
                if !send(&tx, &mut out).await {
                    done.error = Some("the caller went away".into());
                    return done;
                }
            }
        }
    }
}

async fn send(tx: &mpsc::Sender<Result<Bytes, io::Error>>, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let chunk = Bytes::from(std::mem::take(out));
    tx.send(Ok(chunk)).await.is_ok()
}
