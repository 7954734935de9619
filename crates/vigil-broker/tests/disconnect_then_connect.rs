//! A client that connects right after another one left with DISCONNECT must be
//! served: its first packets answered, its connection left open.
//!
//! rumqttd 0.20 numbers connections by slab slot and reuses a freed slot at
//! once. Its link task sends the router a `Disconnect` for its slot when its
//! socket closes, even if the router had already removed that connection (on
//! DISCONNECT). If the front door closed its router socket right after
//! forwarding the DISCONNECT, that late `Disconnect` could land after the next
//! client took the slot, and the router dropped the newcomer after its
//! CONNACK: its SUBACK or PUBACK never came (0.3 to 1 % of iterations).
//! The bug is a race, so each test repeats the pattern (at most 1,500 times,
//! at most 30 s). Before the fix both tests failed in each of 8 runs, within
//! 400 iterations; the odds of a pass with the bug present are about 1 in 100.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use vigil_broker::{Broker, BrokerConfig};

const ITERATIONS: usize = 1500;
const TIME_BUDGET: Duration = Duration::from_secs(30);
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

fn subscribe_packet(packet_id: u16, filter: &str) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(1); // QoS 1
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

fn publish_packet(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(b"1");
    let mut packet = vec![0x32, body.len() as u8]; // PUBLISH, QoS 1
    packet.extend_from_slice(&body);
    packet
}

/// Reads one packet (short ones only: these tests never get long ones).
async fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    assert!(head[1] < 0x80, "unexpected long packet");
    let mut body = vec![0u8; head[1] as usize];
    s.read_exact(&mut body).await?;
    Ok((head[0] >> 4, body))
}

/// Sends `opening` in one write and waits for CONNACK, then for a packet of
/// type `answer`. Returns why not, if it did not come.
async fn answered(addr: std::net::SocketAddr, opening: &[u8], answer: u8) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(opening).await.map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    let outcome = timeout(ANSWER_WITHIN, async {
        loop {
            let (kind, _) = read_packet(&mut s).await?;
            seen.push(kind);
            if kind == answer {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) if seen.first() == Some(&2) => Ok(()),
        Ok(Ok(())) => Err(format!("no CONNACK first; packet types {seen:?}")),
        Ok(Err(e)) => Err(format!("{e} after packet types {seen:?}")),
        Err(_) => Err(format!(
            "no answer within {ANSWER_WITHIN:?}; packet types {seen:?}"
        )),
    }
}

/// Connects, waits for CONNACK, sends DISCONNECT and closes, like a client
/// that leaves politely (paho's `disconnect()`).
async fn connect_and_leave(addr: std::net::SocketAddr, client_id: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&connect_packet(client_id)).await.unwrap();
    let (kind, body) = timeout(ANSWER_WITHIN, read_packet(&mut s))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!((kind, body), (2, vec![0, 0]), "CONNACK accepted");
    s.write_all(&[0xE0, 0x00]).await.unwrap();
    drop(s);
}

async fn start() -> Broker {
    let config = BrokerConfig {
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        ws_listen: None,
        tls_listen: None,
        wss_listen: None,
        ..BrokerConfig::default()
    };
    let (tx, mut rx) = mpsc::channel(1024);
    // Nobody else reads the observations here; a full channel would stall
    // the front door.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Broker::start(config, tx).await.expect("broker starts")
}

async fn repeat(opening: impl Fn(usize) -> Vec<u8>, answer: u8) {
    let broker = start().await;
    let addr = broker.mqtt_addr();
    let started = Instant::now();
    let mut done = 0;
    while done < ITERATIONS && started.elapsed() < TIME_BUDGET {
        connect_and_leave(addr, &format!("leaver-{done}")).await;
        if let Err(why) = answered(addr, &opening(done), answer).await {
            panic!("iteration {done}: a client connecting right after another one's DISCONNECT was not answered: {why}");
        }
        done += 1;
    }
    assert!(done >= 100, "only {done} iterations ran in {TIME_BUDGET:?}");
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_right_after_another_clients_disconnect_is_acknowledged() {
    repeat(
        |i| {
            let mut opening = connect_packet(&format!("subscriber-{i}"));
            opening.extend(subscribe_packet(1, &format!("handover/{i}")));
            opening
        },
        9, // SUBACK
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_another_clients_disconnect_is_acknowledged() {
    repeat(
        |i| {
            let mut opening = connect_packet(&format!("publisher-{i}"));
            opening.extend(publish_packet(1, &format!("handover/{i}")));
            opening
        },
        4, // PUBACK
    )
    .await;
}
