//! The daemon's end of one broker's control channel: a `SOCK_SEQPACKET`
//! socket pair, one postcard message per datagram (`aivault_proto::broker`),
//! an accepted connection attached (`SCM_RIGHTS`) to the message that
//! names it.
//!
//! Sending and receiving never block a thread: the daemon's end is
//! non-blocking and driven by the runtime, so a broker that stops reading
//! stalls only the tasks talking to it. A message that would carry a
//! credential (`Grant`) is encoded into a buffer wiped after sending.
//!
//! What the broker sends is untrusted: a datagram over
//! [`MAX_CONTROL`], one carrying descriptors, one that does not decode, or
//! one whose fields are out of bounds ([`check`]) is an error, and the
//! pool kills a broker that sends one.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use aivault_proto::broker::{FromBroker, ToBroker, MAX_CONTROL};

use crate::jail::control;

/// Longest capability name a broker may name.
pub const MAX_CAPABILITY: usize = 256;
/// Longest method.
pub const MAX_METHOD: usize = 16;
/// Longest path (the broker's path guard refuses targets over 8 KiB).
pub const MAX_PATH: usize = 8 * 1024;
/// Longest error text of a `Done` or a refused confinement.
pub const MAX_ERROR: usize = 4096;

pub use crate::jail::control::ControlError;

/// The daemon's end of a broker's control channel: the jailed processes'
/// channel ([`crate::jail::control`]) with the broker's messages, each
/// received one checked ([`check`]) before it is returned.
#[derive(Debug)]
pub struct Control(control::Control);

/// A new socket pair: the daemon's end (non-blocking, on the runtime) and
/// the broker's (blocking, close-on-exec; the jail host makes it the
/// broker's descriptor 3). Call it within the runtime.
pub fn pair() -> io::Result<(Control, OwnedFd)> {
    let (ours, theirs) = control::pair(MAX_CONTROL)?;
    Ok((Control(ours), theirs))
}

impl Control {
    /// Sends `msg`, with `conn` attached if given (a `Grant` is encoded
    /// into a buffer wiped after sending).
    pub async fn send(
        &self,
        msg: &ToBroker,
        conn: Option<BorrowedFd<'_>>,
    ) -> Result<(), ControlError> {
        self.0.send(msg, conn).await
    }

    /// Receives one message into `buf` (kept by the reader); `None` once
    /// the broker's end is closed.
    pub async fn recv(&self, buf: &mut Vec<u8>) -> Result<Option<FromBroker>, ControlError> {
        let msg = self.0.recv::<FromBroker>(buf).await?;
        if let Some(m) = &msg {
            check(m).map_err(ControlError::OutOfBounds)?;
        }
        Ok(msg)
    }

    /// The daemon's end (for tests).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Longest OAuth2 token a broker may report.
const MAX_TOKEN: usize = 16 * 1024;

/// Printable ASCII, no control byte.
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The bounds every field the broker sends must keep.
pub fn check(msg: &FromBroker) -> Result<(), &'static str> {
    match msg {
        FromBroker::Confined(Err(why)) if why.len() > MAX_ERROR => Err("an over-long refusal"),
        FromBroker::Confined(_) => Ok(()),
        FromBroker::Authorize {
            capability,
            method,
            path,
            ..
        } => {
            if capability.is_empty() || capability.len() > MAX_CAPABILITY || !printable(capability)
            {
                return Err("a capability name out of bounds");
            }
            let token = |b: u8| b.is_ascii_uppercase() || b == b'-' || b == b'_';
            if method.is_empty() || method.len() > MAX_METHOD || !method.bytes().all(token) {
                return Err("a method out of bounds");
            }
            if !path.starts_with('/') || path.len() > MAX_PATH || !printable(path) {
                return Err("a path out of bounds");
            }
            Ok(())
        }
        FromBroker::Done { error, .. } => match error {
            Some(e) if e.len() > MAX_ERROR => Err("an over-long error"),
            _ => Ok(()),
        },
        FromBroker::TokensRefreshed {
            access_token,
            refresh_token,
            ..
        } => {
            let bounded = |t: &[u8]| !t.is_empty() && t.len() <= MAX_TOKEN;
            if !bounded(access_token.as_bytes())
                || refresh_token
                    .as_ref()
                    .is_some_and(|t| !bounded(t.as_bytes()))
            {
                return Err("a token out of bounds");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aivault_proto::SecretBytes;
    use std::os::fd::AsFd;

    fn authorize(capability: &str, method: &str, path: &str) -> FromBroker {
        FromBroker::Authorize {
            req: 1,
            conn: 1,
            capability: capability.into(),
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn fields_out_of_bounds_are_refused() {
        assert!(check(&authorize("openai", "POST", "/v1/chat?x=*")).is_ok());
        for bad in [
            authorize("", "GET", "/"),
            authorize(&"c".repeat(MAX_CAPABILITY + 1), "GET", "/"),
            authorize("a\nb", "GET", "/"),
            authorize("openai", "get", "/"),
            authorize("openai", "GET /x", "/"),
            authorize("openai", "GET", "v1"),
            authorize("openai", "GET", &format!("/{}", "p".repeat(MAX_PATH))),
            authorize("openai", "GET", "/a\r\nb"),
            FromBroker::Done {
                req: 1,
                status: None,
                request_bytes: 0,
                response_bytes: 0,
                duration_us: 0,
                error: Some("e".repeat(MAX_ERROR + 1)),
            },
            FromBroker::TokensRefreshed {
                req: 1,
                access_token: SecretBytes::new(Vec::new()),
                expires_in_s: None,
                refresh_token: None,
            },
            FromBroker::TokensRefreshed {
                req: 1,
                access_token: SecretBytes::new(b"at".to_vec()),
                expires_in_s: Some(60),
                refresh_token: Some(SecretBytes::new(vec![b'r'; MAX_TOKEN + 1])),
            },
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn messages_cross_and_what_the_broker_must_not_send_is_an_error() {
        let (control, theirs) = pair().unwrap();
        // Daemon → broker, a connection attached.
        let (conn, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        control
            .send(&ToBroker::Connection { conn: 7 }, Some(conn.as_fd()))
            .await
            .unwrap();
        control
            .send(
                &ToBroker::Grant {
                    req: 1,
                    secret: SecretBytes::new(b"s".to_vec()),
                    extra: Vec::new(),
                },
                None,
            )
            .await
            .unwrap();
        let mut buf = vec![0u8; MAX_CONTROL];
        let (n, fds) = crate::sys::recv_with_fds(&theirs, &mut buf).unwrap();
        let got: ToBroker = postcard::from_bytes(&buf[..n]).unwrap();
        assert_eq!(got, ToBroker::Connection { conn: 7 });
        assert_eq!(fds.len(), 1);
        let (n, _) = crate::sys::recv_with_fds(&theirs, &mut buf).unwrap();
        assert!(matches!(
            postcard::from_bytes::<ToBroker>(&buf[..n]).unwrap(),
            ToBroker::Grant { req: 1, .. }
        ));

        let send = |msg: &FromBroker, fds: &[BorrowedFd<'_>]| {
            crate::jail::wire::send(theirs.as_fd(), msg, fds).unwrap()
        };
        let mut rbuf = Vec::new();
        let ok = authorize("openai", "GET", "/v1/models");
        send(&ok, &[]);
        assert_eq!(control.recv(&mut rbuf).await.unwrap(), Some(ok.clone()));
        send(&authorize("openai", "get", "/"), &[]);
        assert!(matches!(
            control.recv(&mut rbuf).await,
            Err(ControlError::OutOfBounds(_))
        ));
        send(&ok, &[conn.as_fd()]);
        assert!(matches!(
            control.recv(&mut rbuf).await,
            Err(ControlError::Descriptors)
        ));
        nix::unistd::write(&theirs, &[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(
            control.recv(&mut rbuf).await,
            Err(ControlError::Malformed)
        ));
        nix::unistd::write(&theirs, &vec![0u8; MAX_CONTROL + 1]).unwrap();
        assert!(matches!(
            control.recv(&mut rbuf).await,
            Err(ControlError::TooLarge(_))
        ));
        drop(theirs);
        assert_eq!(control.recv(&mut rbuf).await.unwrap(), None);
    }
}
