//! Any datagram as a reply to a live endpoint that has a request and an
//! observation outstanding: the endpoint must neither panic nor stop. When
//! the input's first byte is odd, the datagram is given the outstanding
//! request's message id and token (where its header has room), so the
//! matched paths (ACKs, piggybacked and separate responses, Block2
//! follow-ups, notifications) are reached too, not only the refusals.
#![no_main]
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use coap_lite::Packet;
use libfuzzer_sys::fuzz_target;
use tokio::net::UdpSocket;
use vigil_coap::{Endpoint, Request, Timing};

struct Harness {
    rt: tokio::runtime::Runtime,
    endpoint: Endpoint,
    peer: UdpSocket,
    at: SocketAddr,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (endpoint, peer) = rt.block_on(async {
            let timing = Timing {
                ack_timeout: Duration::from_millis(20),
                response_wait: Duration::from_millis(200),
                ..Timing::default()
            };
            let ep = Endpoint::bind("127.0.0.1:0".parse().unwrap(), timing).await.unwrap();
            let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            (ep, peer)
        });
        let at = peer.local_addr().unwrap();
        Harness { rt, endpoint, peer, at }
    })
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    h.rt.block_on(async {
        // An outstanding request (and, every other input, an observation).
        let ep = h.endpoint.clone();
        let at = h.at;
        let observe = data.first().is_some_and(|b| b & 2 != 0);
        let asking = tokio::spawn(async move {
            if observe {
                ep.observe(at, "/o").await.map(drop)
            } else {
                ep.request(at, Request::get("/r")).await.map(drop)
            }
        });
        let mut buf = [0u8; 2048];
        let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), h.peer.recv_from(&mut buf)).await
        else {
            panic!("the endpoint stopped sending");
        };
        let sent = Packet::from_bytes(&buf[..n]).expect("the endpoint sends valid CoAP");
        let mut reply = data.get(1..).unwrap_or_default().to_vec();
        if data.first().is_some_and(|b| b & 1 != 0) && reply.len() >= 4 {
            reply[2..4].copy_from_slice(&sent.header.message_id.to_be_bytes());
            let tkl = usize::from(reply[0] & 0x0f);
            let token = sent.get_token();
            if tkl == token.len() && reply.len() >= 4 + tkl {
                reply[4..4 + tkl].copy_from_slice(token);
            }
        }
        let _ = h.peer.send_to(&reply, from).await;
        // Whatever the endpoint answers (ACK, RST, a Block2 follow-up) is drained.
        let _ = tokio::time::timeout(Duration::from_millis(5), h.peer.recv_from(&mut buf)).await;
        asking.abort();
        let _ = asking.await;
    });
});
