//! Multicast discovery: `GET /.well-known/core` to "All CoAP Nodes"
//! (224.0.1.187 and ff02::fd, RFC 7252 §12.8) on each chosen interface,
//! non-confirmable as multicast requests must be, collecting every answer
//! for a window (servers delay their answers at random, up to seconds).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::interfaces::Interface;
use crate::message::{Request, Response};

/// All CoAP Nodes, IPv4.
pub const ALL_COAP_NODES_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 1, 187);
/// All CoAP Nodes, link-local IPv6.
pub const ALL_COAP_NODES_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfd);

/// A device that answered.
#[derive(Debug, Clone)]
pub struct Found {
    /// The interface it answered on.
    pub interface: String,
    /// Its answer (the peer is its address, with the scope id for IPv6 link-local).
    pub response: Response,
}

/// What one discovery round found, and what could not be asked.
#[derive(Debug, Default)]
pub struct Round {
    /// One entry per answering address (the first answer of each).
    pub found: Vec<Found>,
    /// Interfaces or groups that could not be asked, in words.
    pub errors: Vec<String>,
}

/// Asks every interface in `interfaces`, on every port in `ports`, over IPv4
/// (`v4`, from the interface's first address) and IPv6 (`v6`, the
/// interface's scope), all at once, and waits `window`.
pub async fn discover(
    v4: Option<&Endpoint>,
    v6: Option<&Endpoint>,
    interfaces: &[Interface],
    ports: &[u16],
    window: Duration,
) -> Round {
    let mut asks = Vec::new();
    for interface in interfaces {
        for &port in ports {
            if let (Some(ep), Some(&via)) = (v4, interface.ipv4.first()) {
                let group = SocketAddr::V4(SocketAddrV4::new(ALL_COAP_NODES_V4, port));
                asks.push((interface.name.clone(), group, ep.clone(), Some(via)));
            }
            // Linux carries no IPv6 multicast over loopback.
            if let (Some(ep), true) = (v6, interface.ipv6 && !interface.loopback) {
                let group = SocketAddr::V6(SocketAddrV6::new(
                    ALL_COAP_NODES_V6,
                    port,
                    0,
                    interface.index,
                ));
                asks.push((interface.name.clone(), group, ep.clone(), None));
            }
        }
    }
    let tasks: Vec<_> = asks
        .into_iter()
        .map(|(name, group, ep, via)| {
            tokio::spawn(async move {
                let result = ep
                    .gather(group, via, Request::get("/.well-known/core"), window)
                    .await;
                (name, group, result)
            })
        })
        .collect();
    let mut round = Round::default();
    for task in tasks {
        let Ok((interface, group, result)) = task.await else {
            continue;
        };
        match result {
            Ok(responses) => {
                for response in responses {
                    if !round.found.iter().any(|f| f.response.peer == response.peer) {
                        round.found.push(Found {
                            interface: interface.clone(),
                            response,
                        });
                    }
                }
            }
            Err(e) => round.errors.push(format!("{interface} ({group}): {e}")),
        }
    }
    round
}
