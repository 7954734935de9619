//! The front door against a real MQTT client (rumqttc) over loopback sockets.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use vigil_broker::{Broker, BrokerConfig};
use vigil_core::{ConnectionOutcome, DisconnectReason, Observation};

async fn start(max_payload: usize) -> (Broker, mpsc::Receiver<Observation>) {
    let config = BrokerConfig {
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        ws_listen: Some("127.0.0.1:0".parse().unwrap()),
        max_payload,
        connect_timeout: Duration::from_secs(2),
        tls_listen: None,
        wss_listen: None,
        ..BrokerConfig::default()
    };
    let (tx, rx) = mpsc::channel(1024);
    (Broker::start(config, tx).await.expect("broker starts"), rx)
}

fn client(broker: &Broker, id: &str, keepalive: u64) -> (AsyncClient, EventLoop) {
    let addr = broker.mqtt_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(keepalive));
    options.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    AsyncClient::new(options, 64)
}

/// Polls the event loop until `want` matches an event, or fails after 5 s.
async fn until(eventloop: &mut EventLoop, mut want: impl FnMut(&Event) -> bool) {
    timeout(Duration::from_secs(5), async {
        loop {
            let event = eventloop.poll().await.expect("connection stays up");
            if want(&event) {
                return;
            }
        }
    })
    .await
    .expect("the expected MQTT event arrived within 5 s");
}

async fn next_observation(
    rx: &mut mpsc::Receiver<Observation>,
    mut want: impl FnMut(&Observation) -> bool,
) -> Observation {
    timeout(Duration::from_secs(5), async {
        loop {
            let o = rx.recv().await.expect("observation channel open");
            if want(&o) {
                return o;
            }
        }
    })
    .await
    .expect("the expected observation arrived within 5 s")
}

#[tokio::test]
async fn a_publish_is_observed_and_reaches_a_subscriber() {
    let (broker, mut rx) = start(1024 * 1024).await;
    let (sub, mut sub_loop) = client(&broker, "sub", 30);
    sub.subscribe("room/#", QoS::AtLeastOnce).await.unwrap();
    until(&mut sub_loop, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    })
    .await;

    let (publisher, mut pub_loop) = client(&broker, "thermo", 30);
    publisher
        .publish("room/temp", QoS::AtLeastOnce, false, "21.5")
        .await
        .unwrap();
    until(&mut pub_loop, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_)))
    })
    .await;
    until(
        &mut sub_loop,
        |e| matches!(e, Event::Incoming(Packet::Publish(p)) if p.payload == "21.5"),
    )
    .await;

    let o = next_observation(&mut rx, |o| matches!(o, Observation::Message(_))).await;
    let Observation::Message(m) = o else {
        unreachable!()
    };
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("room/temp", &b"21.5"[..], 1)
    );
    assert_eq!(m.client_id.as_deref(), Some("thermo"));
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn keepalive_zero_is_accepted_and_a_dropped_client_is_reported() {
    let (broker, mut rx) = start(1024 * 1024).await;
    let (c, mut el) = client(&broker, "sleepy", 0);
    until(&mut el, |e| matches!(e, Event::Incoming(Packet::ConnAck(a)) if a.code == rumqttc::ConnectReturnCode::Success)).await;
    let o = next_observation(&mut rx, |o| matches!(o, Observation::Connection(_))).await;
    let Observation::Connection(ev) = o else {
        unreachable!()
    };
    assert_eq!(ev.client_id, "sleepy");
    assert_eq!(
        ev.outcome,
        ConnectionOutcome::Connected {
            keepalive: 0,
            clean_start: true
        }
    );
    drop((c, el)); // the socket closes without DISCONNECT
    let o = next_observation(&mut rx, |o| matches!(o, Observation::Connection(_))).await;
    let Observation::Connection(ev) = o else {
        unreachable!()
    };
    assert_eq!(
        ev.outcome,
        ConnectionOutcome::Disconnected(DisconnectReason::Dropped)
    );
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_silent_client_times_out_after_one_and_a_half_keepalives() {
    let (broker, mut rx) = start(1024 * 1024).await;
    // A raw MQTT 3.1.1 CONNECT with keepalive 1 s, then silence.
    let mut s = TcpStream::connect(broker.mqtt_addr()).await.unwrap();
    s.write_all(&[
        0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 4, b'q', b'u', b'i', b'e',
    ])
    .await
    .unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let started = std::time::Instant::now();
    let o = next_observation(&mut rx, |o| matches!(o, Observation::Connection(c) if matches!(c.outcome, ConnectionOutcome::Disconnected(_)))).await;
    let Observation::Connection(ev) = o else {
        unreachable!()
    };
    assert_eq!(
        ev.outcome,
        ConnectionOutcome::Disconnected(DisconnectReason::KeepaliveTimeout)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
        "timed out after {waited:?}"
    );
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn an_oversized_payload_is_refused_and_the_broker_keeps_serving() {
    let (broker, mut rx) = start(1024).await;
    let (c, mut el) = client(&broker, "big", 30);
    c.publish("x/big", QoS::AtLeastOnce, false, vec![b'a'; 2048])
        .await
        .unwrap();
    let closed = timeout(Duration::from_secs(5), async {
        loop {
            if el.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the client was disconnected");
    let o = next_observation(&mut rx, |o| matches!(o, Observation::Connection(c) if matches!(c.outcome, ConnectionOutcome::Disconnected(_)))).await;
    let Observation::Connection(ev) = o else {
        unreachable!()
    };
    assert_eq!(
        ev.outcome,
        ConnectionOutcome::Disconnected(DisconnectReason::PacketTooLarge)
    );

    let (ok, mut ok_loop) = client(&broker, "small", 30);
    ok.publish("x/small", QoS::AtLeastOnce, false, vec![b'a'; 1000])
        .await
        .unwrap();
    until(&mut ok_loop, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_)))
    })
    .await;
    let o = next_observation(&mut rx, |o| matches!(o, Observation::Message(_))).await;
    let Observation::Message(m) = o else {
        unreachable!()
    };
    assert_eq!(
        m.topic, "x/small",
        "the oversized message was never observed"
    );
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn silent_sockets_do_not_delay_a_new_login() {
    let (broker, _rx) = start(1024 * 1024).await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(broker.mqtt_addr()).await.unwrap());
    }
    let started = std::time::Instant::now();
    let (_c, mut el) = client(&broker, "punctual", 30);
    until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "CONNACK took {:?}",
        started.elapsed()
    );
    drop(silent);
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn garbage_is_refused_without_harm() {
    let (broker, _rx) = start(1024 * 1024).await;
    let mut s = TcpStream::connect(broker.mqtt_addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xff\xff\xff\xff")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed without an answer");
    let (_c, mut el) = client(&broker, "after-garbage", 30);
    until(&mut el, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_)))
    })
    .await;
    broker.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_taken_port_is_named() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let config = BrokerConfig {
        mqtt_listen: addr,
        ws_listen: None,
        tls_listen: None,
        wss_listen: None,
        ..BrokerConfig::default()
    };
    let (tx, _rx) = mpsc::channel(1);
    let err = Broker::start(config, tx)
        .await
        .err()
        .expect("start fails")
        .to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains("broker.mqtt_listen"),
        "{err}"
    );
}
