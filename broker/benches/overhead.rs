//! Per-request overhead of the broker: the same GET to a loopback TLS
//! upstream, once directly over a kept-alive connection and once through
//! the broker service (kept-alive caller connection, an authorize round
//! trip to an in-process fake daemon, upstream connection reused, response
//! redacted). Prints the median and mean of each and their difference.
//!
//!   cargo bench -p aivault-broker --bench overhead
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

const N: usize = 2000;

fn summary(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let median = v[v.len() / 2].as_secs_f64() * 1e6;
    let mean = v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64 * 1e6;
    (median, mean)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = pki();
        let up = upstream(&pki).await;

        // Direct: TLS with the same client configuration the broker uses.
        let connector = aivault_broker::tls::connector(Some(pki.ca_pem.as_bytes())).unwrap();
        let tcp = tokio::net::TcpStream::connect(up.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut direct, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut direct_times = Vec::with_capacity(N);
        for _ in 0..N {
            let req = Request::builder()
                .uri("/v1/echo")
                .header("host", HOST)
                .header("authorization", format!("Bearer {SECRET}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let t = Instant::now();
            direct.ready().await.unwrap();
            let resp = direct.send_request(req).await.unwrap();
            let _ = resp.into_body().collect().await.unwrap();
            direct_times.push(t.elapsed());
        }

        let daemon = broker(
            init(&pki, vec![(HOST.into(), vec![up.addr])], true),
            Policy::Grant,
        )
        .await;
        let mut c = client(daemon.connect()).await;
        let mut broker_times = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            c.ready().await.unwrap();
            let resp = c.send_request(get("/testapi/v1/echo")).await.unwrap();
            assert_eq!(resp.status(), 200);
            let _ = resp.into_body().collect().await.unwrap();
            broker_times.push(t.elapsed());
        }
        let (dm, da) = summary(direct_times);
        let (bm, ba) = summary(broker_times);
        println!(
            "requests: {N} each, upstream connections opened through the broker: {}",
            up.accepted() - 1
        );
        println!("direct:  median {dm:.0} us, mean {da:.0} us");
        println!("broker:  median {bm:.0} us, mean {ba:.0} us");
        println!("overhead: median {:.0} us, mean {:.0} us", bm - dm, ba - da);
    });
}
