//! Listeners and limits of the embedded broker.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// How the embedded broker listens and what it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// MQTT over TCP. Loopback by default: remote clients need TLS (coming).
    pub mqtt_listen: SocketAddr,
    /// MQTT over WebSocket; `None` turns it off.
    pub ws_listen: Option<SocketAddr>,
    /// The HTTP path WebSocket clients connect to.
    pub ws_path: String,
    /// The largest PUBLISH payload accepted, in bytes. A client that sends a
    /// larger one is disconnected (MQTT 5: reason 0x95) and the message dropped.
    pub max_payload: usize,
    /// Connections open at once; further ones are closed at accept.
    pub max_connections: usize,
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
            ws_path: "/mqtt".to_owned(),
            max_payload: 1024 * 1024,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
        }
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
