//! The upstream client against a scripted peer, for what the real servers
//! do not do on request: a foreign protocol version, pages of tools, their
//! own requests, exiting mid-call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aivault_gateway::jsonrpc::{FrameReader, Outbox};
use aivault_gateway::upstream::{Upstream, UpstreamConfig, UpstreamError};
use serde_json::{json, Value};
use tokio::io::{BufReader, DuplexStream, ReadHalf};

/// The server end of a connection, driven by the test.
struct Peer {
    frames: FrameReader<BufReader<ReadHalf<DuplexStream>>>,
    out: Outbox,
}

impl Peer {
    async fn recv(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(30), self.frames.next())
            .await
            .expect("nothing from the client")
            .unwrap()
            .expect("client closed")
    }
    async fn send(&self, v: Value) {
        self.out.send(&v).await.unwrap();
    }
    /// Answers `initialize` with `version` and swallows `initialized`.
    async fn handshake(&mut self, version: &str) {
        let init = self.recv().await;
        assert_eq!(init["method"], "initialize");
        assert_eq!(init["params"]["protocolVersion"], "2025-11-25");
        self.send(json!({"jsonrpc": "2.0", "id": init["id"], "result": {
            "protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "0"}}}))
            .await;
        if version.starts_with("2025") {
            assert_eq!(self.recv().await["method"], "notifications/initialized");
        }
    }
}

fn pair() -> (DuplexStream, Peer) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let (r, w) = tokio::io::split(server);
    let peer = Peer {
        frames: FrameReader::new(BufReader::new(r), 1 << 20),
        out: Outbox::spawn(w, 1 << 20),
    };
    (client, peer)
}

async fn connect(client: DuplexStream) -> Result<Upstream, UpstreamError> {
    let (r, w) = tokio::io::split(client);
    let cfg = UpstreamConfig {
        name: "fake".into(),
        max_message: 1 << 20,
    };
    Upstream::connect(r, w, cfg).await
}

#[tokio::test]
async fn the_handshake_refuses_a_protocol_version_it_does_not_speak() {
    let (client, mut peer) = pair();
    let server = tokio::spawn(async move { peer.handshake("1999-01-01").await });
    let err = connect(client).await.unwrap_err();
    assert!(
        matches!(err, UpstreamError::UnsupportedVersion(ref v) if v == "1999-01-01"),
        "{err}"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn an_older_version_the_server_answers_is_accepted() {
    let (client, mut peer) = pair();
    tokio::spawn(async move {
        peer.handshake("2025-06-18").await;
        std::future::pending::<()>().await
    });
    assert_eq!(
        connect(client).await.unwrap().protocol_version(),
        "2025-06-18"
    );
}

#[tokio::test]
async fn tools_list_follows_cursors_under_numeric_ids() {
    let (client, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.handshake("2025-11-25").await;
        let mut cursors = Vec::new();
        for page in 0..3 {
            let req = peer.recv().await;
            assert_eq!(req["method"], "tools/list");
            assert!(req["id"].is_u64());
            cursors.push(req["params"]["cursor"].clone());
            let mut result =
                json!({"tools": [{"name": format!("t{page}"), "inputSchema": {"type": "object"}}]});
            if page < 2 {
                result["nextCursor"] = json!(format!("c{}", page + 1));
            }
            peer.send(json!({"jsonrpc": "2.0", "id": req["id"], "result": result}))
                .await;
        }
        cursors
    });
    let up = connect(client).await.unwrap();
    let names: Vec<_> = up
        .list_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("t0"), json!("t1"), json!("t2")]);
    assert_eq!(
        server.await.unwrap(),
        [Value::Null, json!("c1"), json!("c2")]
    );
}

#[tokio::test]
async fn the_upstreams_ping_is_answered_and_its_other_requests_refused() {
    let (client, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.handshake("2025-11-25").await;
        peer.send(json!({"jsonrpc": "2.0", "id": "p1", "method": "ping"}))
            .await;
        peer.send(
            json!({"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}}),
        )
        .await;
        let a = peer.recv().await;
        let b = peer.recv().await;
        (a, b)
    });
    let _up = connect(client).await.unwrap();
    let (a, b) = server.await.unwrap();
    assert_eq!(a, json!({"jsonrpc": "2.0", "id": "p1", "result": {}}));
    assert_eq!(b["id"], "s1");
    assert_eq!(b["error"]["code"], -32601);
}

#[tokio::test]
async fn dropping_a_call_cancels_it_under_the_upstream_id_and_progress_is_mapped() {
    let (client, mut peer) = pair();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        peer.handshake("2025-11-25").await;
        let call = peer.recv().await;
        assert_eq!(call["method"], "tools/call");
        let token = call["params"]["_meta"]["progressToken"].clone();
        assert!(token.as_str().unwrap().starts_with("gw-"), "{token}");
        peer.send(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": "someone-else", "progress": 99}}))
            .await;
        peer.send(json!({"jsonrpc": "2.0", "method": "notifications/progress",
            "params": {"progressToken": token, "progress": 1, "total": 2}}))
            .await;
        let cancel = peer.recv().await;
        let _ = seen_tx.send(());
        (call["id"].clone(), cancel)
    });
    let up = connect(client).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let progress: aivault_gateway::upstream::ProgressFn =
        Arc::new(move |p| sink.lock().unwrap().push(p));
    let mut call = Box::pin(up.call_tool("slow", json!({}), Some(progress)));
    // Run the call until its progress arrives, then drop it unanswered.
    tokio::select! {
        _ = &mut call => panic!("the fake never answers"),
        () = async { while got.lock().unwrap().is_empty() { tokio::task::yield_now().await } } => {}
    }
    drop(call);
    let (id, cancel) = server.await.unwrap();
    seen_rx.await.unwrap();
    assert_eq!(cancel["method"], "notifications/cancelled");
    assert_eq!(cancel["params"]["requestId"], id);
    assert_eq!(*got.lock().unwrap(), [json!({"progress": 1, "total": 2})]);
}

#[tokio::test]
async fn an_upstream_that_exits_fails_its_calls() {
    let (client, mut peer) = pair();
    tokio::spawn(async move {
        peer.handshake("2025-11-25").await;
        let _call = peer.recv().await;
        drop(peer);
    });
    let up = connect(client).await.unwrap();
    let err = up.call_tool("x", json!({}), None).await.unwrap_err();
    assert!(matches!(err, UpstreamError::Closed(_)), "{err}");
    assert!(up.is_closed());
}

#[tokio::test]
async fn the_gateway_pings_the_upstream() {
    let (client, mut peer) = pair();
    let server = tokio::spawn(async move {
        peer.handshake("2025-11-25").await;
        let ping = peer.recv().await;
        peer.send(json!({"jsonrpc": "2.0", "id": ping["id"], "result": {}}))
            .await;
        ping
    });
    let up = connect(client).await.unwrap();
    up.ping().await.unwrap();
    let ping = server.await.unwrap();
    assert_eq!(ping["method"], "ping");
    assert!(ping["id"].is_u64());
}
