//! Who gets in and what they may do, through the front door, with a real
//! MQTT client (rumqttc) over loopback: a gate's refusals reach the client
//! as CONNACK codes, failed logins are limited per address, and ACLs answer
//! SUBSCRIBE and PUBLISH as MQTT says while nothing refused is delivered.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use vigil_broker::{
    Broker, BrokerConfig, Deciding, Denial, Gate, Login, Rights, Security, Verdict,
};
use vigil_core::Observation;

/// A gate with two accounts: `dev1` (password `pw1`, its own topics) and
/// anonymous clients with every right.
struct TwoAccounts;

impl Gate for TwoAccounts {
    fn admit<'a>(&'a self, login: &'a Login) -> Deciding<'a> {
        Box::pin(async move {
            match (login.username.as_deref(), login.password.as_deref()) {
                (None, _) => Verdict::Admit {
                    identity: None,
                    rights: Rights::All,
                },
                (Some("dev1"), Some(b"pw1")) => Verdict::Admit {
                    identity: Some("dev1".into()),
                    rights: Rights::Limited {
                        publish: vec!["dev1/#".into()],
                        subscribe: vec!["dev1/#".into()],
                    },
                },
                _ => Verdict::Refuse {
                    refusal: Denial::BadCredentials,
                    why: "wrong".into(),
                },
            }
        })
    }
}

async fn start(max_failed_logins: u32) -> (Broker, mpsc::Receiver<Observation>) {
    let config = BrokerConfig {
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        ws_listen: None,
        tls_listen: None,
        wss_listen: None,
        max_failed_logins,
        ..BrokerConfig::default()
    };
    let (tx, rx) = mpsc::channel(1024);
    let security = Security {
        tls: None,
        gate: Arc::new(TwoAccounts),
    };
    let broker = Broker::start_with(config, security, tx)
        .await
        .expect("broker starts");
    (broker, rx)
}

fn client(broker: &Broker, id: &str, login: Option<(&str, &str)>) -> (AsyncClient, EventLoop) {
    let addr = broker.mqtt_addr();
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    AsyncClient::new(options, 64)
}

/// Polls until `want` picks something out of an event, or fails after 5 s.
async fn until<T>(eventloop: &mut EventLoop, mut want: impl FnMut(Event) -> Option<T>) -> T {
    timeout(Duration::from_secs(5), async {
        loop {
            let event = eventloop.poll().await.expect("connection stays up");
            if let Some(found) = want(event) {
                return found;
            }
        }
    })
    .await
    .expect("the expected MQTT event arrived within 5 s")
}

async fn refusal(eventloop: &mut EventLoop) -> ConnectReturnCode {
    let result = timeout(Duration::from_secs(5), eventloop.poll())
        .await
        .expect("an answer within 5 s");
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refused CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_password_is_refused_with_its_code_and_a_flood_is_cut_off() {
    let (broker, _rx) = start(2).await;
    for attempt in 0..2 {
        let (_c, mut events) = client(&broker, &format!("guess{attempt}"), Some(("dev1", "nope")));
        assert_eq!(
            refusal(&mut events).await,
            ConnectReturnCode::BadUserNamePassword
        );
    }
    // The limit is reached: even the right password is now refused unchecked.
    let (_c, mut events) = client(&broker, "right-too-late", Some(("dev1", "pw1")));
    assert_eq!(refusal(&mut events).await, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn a_device_gets_only_its_own_topics() {
    let (broker, mut observed) = start(5).await;
    let (watcher, mut watcher_events) = client(&broker, "watcher", None);
    watcher.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    until(&mut watcher_events, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_))).then_some(())
    })
    .await;

    let (device, mut events) = client(&broker, "dev1-client", Some(("dev1", "pw1")));
    device
        .subscribe_many([
            SubscribeFilter::new("other/#".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("dev1/cmd/+".into(), QoS::AtLeastOnce),
            SubscribeFilter::new("#".into(), QoS::AtMostOnce),
        ])
        .await
        .unwrap();
    let codes = until(&mut events, |e| match e {
        Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes),
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
        ],
        "the refused filters answered 0x80 in their places, the allowed one granted by the router"
    );

    // Refused: acknowledged (3.1.1 has no refusal code), not delivered, not observed.
    device
        .publish("other/x", QoS::AtLeastOnce, false, "no")
        .await
        .unwrap();
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    device
        .publish("dev1/temp", QoS::AtLeastOnce, false, "21")
        .await
        .unwrap();
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::PubAck(_))).then_some(())
    })
    .await;
    let topic = until(&mut watcher_events, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.topic),
        _ => None,
    })
    .await;
    assert_eq!(
        topic, "dev1/temp",
        "the refused message never reached the watcher"
    );
    let first = timeout(Duration::from_secs(5), async {
        loop {
            if let Some(Observation::Message(m)) = observed.recv().await {
                return m.topic;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first, "dev1/temp", "the refused message was not observed");
    assert_eq!(broker.refusals().publishes, 1);
    assert_eq!(broker.refusals().subscriptions, 2);

    // A SUBSCRIBE refused whole is answered by the front door alone.
    device
        .subscribe("elsewhere", QoS::AtMostOnce)
        .await
        .unwrap();
    let codes = until(&mut events, |e| match e {
        Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes),
        _ => None,
    })
    .await;
    assert_eq!(codes, [SubscribeReasonCode::Failure]);
}

#[tokio::test]
async fn a_will_outside_the_rights_refuses_the_login() {
    let (broker, _rx) = start(5).await;
    let addr = broker.mqtt_addr();
    let mut options = MqttOptions::new("dev1-will", addr.ip().to_string(), addr.port());
    options.set_credentials("dev1", "pw1");
    options.set_last_will(rumqttc::LastWill::new(
        "elsewhere/status",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (_c, mut events) = AsyncClient::new(options, 8);
    assert_eq!(refusal(&mut events).await, ConnectReturnCode::NotAuthorized);
}
