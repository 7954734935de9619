//! Listeners and limits of the embedded broker.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::ClientCerts;

/// How the embedded broker listens and what it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT over TCP. Loopback only, unless `allow_insecure_remote`.
    pub mqtt_listen: SocketAddr,
    /// MQTT over WebSocket; `None` turns it off. Loopback only, unless
    /// `allow_insecure_remote`.
    pub ws_listen: Option<SocketAddr>,
    /// MQTT over TLS; `None` turns it off.
    pub tls_listen: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS (same path as `ws_path`); `None` turns it off.
    pub wss_listen: Option<SocketAddr>,
    /// Client certificates on the TLS listener.
    pub tls_client_certs: ClientCerts,
    /// Client certificates on the secure WebSocket listener.
    pub wss_client_certs: ClientCerts,
    /// Lets the plain TCP and WebSocket listeners take addresses other than
    /// loopback: anyone on the network then reads the traffic, passwords
    /// included. Vigil warns at every start while it is on.
    pub allow_insecure_remote: bool,
    /// Failed logins allowed per source address in a minute; past that its
    /// logins are refused unchecked until the minute is over.
    pub max_failed_logins: u32,
    /// The HTTP path WebSocket clients connect to.
    pub ws_path: String,
    /// The largest PUBLISH payload accepted, in bytes. A client that sends a
    /// larger one is disconnected (MQTT 5: reason 0x95) and the message dropped.
    pub max_payload: usize,
    /// Connections open at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Messages queued per kept session while its client is away (MQTT
    /// 3.1.1 clean session 0, MQTT 5 a Session Expiry Interval); past it,
    /// newer ones are dropped for that client and logged.
    pub max_queued_messages: usize,
    /// How long a new connection may take to complete its WebSocket handshake
    /// and send CONNECT.
    #[serde(with = "millis", rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            mqtt_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            ws_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8083))),
            tls_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8883))),
            wss_listen: Some(SocketAddr::from(([0, 0, 0, 0], 8084))),
            tls_client_certs: ClientCerts::Optional,
            wss_client_certs: ClientCerts::Optional,
            allow_insecure_remote: false,
            max_failed_logins: 5,
            ws_path: "/mqtt".to_owned(),
            max_payload: 1024 * 1024,
            max_connections: 10_000,
            max_queued_messages: 1_000,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl BrokerConfig {
    /// Checks what can be checked before binding: plain listeners stay on
    /// loopback unless the user said otherwise.
    pub fn validate(&self) -> Result<(), String> {
        if !self.allow_insecure_remote {
            let plain = [
                ("broker.mqtt_listen", Some(self.mqtt_listen)),
                ("broker.ws_listen", self.ws_listen),
            ];
            for (setting, addr) in plain {
                if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
                    return Err(format!(
                        "{setting} is {addr}, which is not loopback: plain MQTT would carry passwords and readings unencrypted over the network. Devices elsewhere should use TLS (broker.tls_listen, port 8883) or secure WebSocket (broker.wss_listen); if you really want plain MQTT on the network, set broker.allow_insecure_remote = true"
                    ));
                }
            }
        }
        if self.max_queued_messages == 0 {
            return Err("broker.max_queued_messages is 0; it must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The plain listeners open to the network (allowed by
    /// `allow_insecure_remote`), for the warning at start.
    pub fn insecure_remote(&self) -> Vec<SocketAddr> {
        [Some(self.mqtt_listen), self.ws_listen]
            .into_iter()
            .flatten()
            .filter(|a| !a.ip().is_loopback())
            .collect()
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
