//! The embedded rumqttd router, reachable only through the front door.
//!
//! rumqttd routes messages between subscriptions; it does not own a public
//! socket. It listens on one loopback port of its own, for MQTT 5 only: the
//! front door speaks MQTT 5 to it for every client, whatever the client
//! speaks (rumqttd's 3.1.1 link panics on a message that has MQTT 5
//! properties, and only MQTT 5 carries what the front door tells the router
//! about a message). The listener accepts only logins that carry a secret
//! made fresh by each process, which only the front door knows.
//! `Broker::start` in rumqttd blocks forever and cannot be stopped, so it runs
//! on a thread of its own that ends with the process.
//!
//! No other crate sees rumqttd's types.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::local::LinkTx;
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// The user name the front door logs in with on the internal listeners.
pub(crate) const INTERNAL_USER: &str = "vigil-front-door";

/// Where the router listens, and the secret that opens it.
pub(crate) struct Router {
    /// The MQTT 5 listener.
    pub addr: SocketAddr,
    pub secret: String,
    link: tokio::sync::Mutex<LinkTx>,
}

impl Router {
    /// Starts rumqttd on a free loopback port and waits until it accepts.
    pub(crate) async fn start(config: &BrokerConfig) -> Result<Router, BrokerError> {
        let secret = random_secret();
        let addr = free_loopback_port()?;
        let settings = |name: &str, listen: SocketAddr| {
            let mut s = ServerSettings {
                name: name.to_owned(),
                listen,
                tls: None,
                // The front door already paces accepts; rumqttd must not sleep.
                next_connection_delay_ms: 0,
                connections: ConnectionSettings {
                    connection_timeout_ms: 10_000,
                    // The front door enforces the user's limit precisely; the
                    // router's is a backstop above it (topic and properties).
                    max_payload_size: config.max_payload + 128 * 1024,
                    max_inflight_count: 100,
                    auth: None,
                    external_auth: None,
                    dynamic_filters: true,
                },
            };
            let secret = secret.clone();
            s.set_auth_handler(move |_client, user: String, pass: String| {
                let ok =
                    user == INTERNAL_USER && constant_time_eq(pass.as_bytes(), secret.as_bytes());
                async move { ok }
            });
            s
        };
        let rumqttd_config = Config {
            id: 0,
            router: RouterConfig {
                // Clients, and a stand-in per kept session whose client is
                // away.
                max_connections: config.max_connections * 2 + 64,
                max_outgoing_packet_count: 1024,
                // A subscriber that falls more than this behind loses the oldest
                // messages (rumqttd's commit log); Vigil's own observer is the
                // front door, not a subscriber, so it never does.
                max_segment_size: (config.max_payload * 2).max(16 * 1024 * 1024),
                max_segment_count: 8,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: None,
            v5: Some(HashMap::from([(
                "v5".to_owned(),
                settings("vigil-internal-v5", addr),
            )])),
            ..Default::default()
        };
        let mut broker = rumqttd::Broker::new(rumqttd_config);
        let (link_tx, mut link_rx) = broker
            .link("vigil")
            .map_err(|e| BrokerError::Router(format!("cannot open the local link: {e}")))?;
        std::thread::Builder::new()
            .name("rumqttd".to_owned())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!("embedded MQTT router stopped: {e}");
                }
            })
            .map_err(|e| BrokerError::Router(format!("cannot start its thread: {e}")))?;
        // The local link is used to publish only; its notifications are drained
        // so they never pile up.
        tokio::spawn(async move { while let Ok(Some(_)) = link_rx.next().await {} });
        wait_until_listening(addr).await?;
        Ok(Router {
            addr,
            secret,
            link: tokio::sync::Mutex::new(link_tx),
        })
    }

    /// Publishes a message into the router on Vigil's own behalf (QoS 0 into
    /// the router, which sends it at each subscriber's granted QoS), with
    /// the user property `tag` (the front door's: name and value).
    pub(crate) async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
        tag: (&str, String),
    ) -> Result<(), String> {
        let publish = Publish::new(Bytes::copy_from_slice(topic.as_bytes()), payload, retain);
        let properties = PublishProperties {
            user_properties: vec![(tag.0.to_owned(), tag.1)],
            ..PublishProperties::default()
        };
        self.link
            .lock()
            .await
            .send(Packet::Publish(publish, Some(properties)))
            .await
            .map(|_| ())
            .map_err(|e| format!("the embedded router refused the message: {e}"))
    }
}

fn free_loopback_port() -> Result<SocketAddr, BrokerError> {
    let listener = StdListener::bind(("127.0.0.1", 0))
        .map_err(|e| BrokerError::Router(format!("no free loopback port for the router: {e}")))?;
    listener
        .local_addr()
        .map_err(|e| BrokerError::Router(e.to_string()))
}

/// rumqttd binds on its own thread and only logs a failure, so the only way
/// to know it listens is to knock.
async fn wait_until_listening(addr: SocketAddr) -> Result<(), BrokerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BrokerError::Router(format!(
                "its internal listener on {addr} did not come up within 10 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn random_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
