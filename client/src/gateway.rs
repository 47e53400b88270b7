//! `vaultctl mcp-gateway`: a thin client. It asks the daemon for a gateway
//! (`McpGateway`), then relays stdin to the handed-over connection and the
//! connection to stdout, byte for byte, until either side ends. The
//! filtering, the upstreams and their secrets live in the gateway process
//! under another uid: nothing here parses MCP, so nothing here can be
//! talked out of a policy.

use std::io::{Read, Write};
use std::net::Shutdown;

use crate::endpoint::Endpoint;
use crate::error::CtlError;

/// `vaultctl mcp-gateway pin SERVER`: prints `pins = { … }` for the
/// server's `[mcp_server.tools]` (the daemon's gateway started the server
/// and hashed what it lists).
pub fn pin(ep: &Endpoint, server: String) -> Result<i32, CtlError> {
    let mut c = ep.open()?;
    // Starting the server may take longer than an ordinary answer.
    let _ = c.set_timeout(Some(std::time::Duration::from_secs(90)));
    match c.call(aivault_proto::RequestBody::McpGatewayPin { server })? {
        aivault_proto::Reply::Policy(pins) => {
            println!("{pins}");
            Ok(0)
        }
        _ => Err(aivault_client::ClientError::Protocol.into()),
    }
}

pub fn run(ep: &Endpoint) -> Result<i32, CtlError> {
    let stream = ep.open()?.into_mcp_gateway()?;
    let mut up = stream
        .try_clone()
        .map_err(|e| CtlError::Local(format!("cannot share the connection: {e}")))?;
    // stdin → gateway; at its end the gateway is told no more will come.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = up.shutdown(Shutdown::Write);
    });
    // gateway → stdout, until the gateway ends the session.
    let mut down = stream;
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match down.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(CtlError::Local(format!(
                    "the gateway connection failed: {e}"
                )))
            }
        }
    }
}
