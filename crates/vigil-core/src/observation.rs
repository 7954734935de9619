//! What a source reports to the engine.
//!
//! An observation is a fact with a time: a message was published, or a client
//! connected, was refused, or went away (and why). Sources know nothing about
//! devices; the engine decides what an observation means.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use crate::coap::CoapEvent;
use crate::session::SessionChange;
use crate::time::Micros;

/// One thing a source saw, with the time it saw it.
#[derive(Debug, Clone)]
pub enum Observation {
    /// A message published by a client (or a will sent on its behalf).
    Message(Message),
    /// A client's connection opened, was refused, or closed.
    Connection(ConnectionEvent),
    /// A CoAP device answered, sent a reading, or stopped answering.
    Coap(CoapEvent),
    /// An MQTT session kept for a client changed (to be stored, so it
    /// outlives a restart), with when.
    Session(Micros, SessionChange),
}

impl Observation {
    /// When it happened.
    pub fn at(&self) -> Micros {
        match self {
            Observation::Message(m) => m.at,
            Observation::Connection(c) => c.at,
            Observation::Coap(c) => c.at,
            Observation::Session(at, _) => *at,
        }
    }
}

/// An MQTT 5 user property (a name/value pair carried with a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct UserProperty {
    /// The property's name.
    pub name: String,
    /// The property's value.
    pub value: String,
}

/// A published message, whole.
#[derive(Debug, Clone)]
pub struct Message {
    /// When Vigil received it.
    pub at: Micros,
    /// The topic it was published to.
    pub topic: String,
    /// The payload, every byte of it.
    pub payload: Bytes,
    /// QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// Whether the publisher asked the broker to retain it.
    pub retain: bool,
    /// The publishing client's id, when known.
    pub client_id: Option<String>,
    /// MQTT 5 user properties, in order.
    pub user_properties: Vec<UserProperty>,
    /// MQTT 5 content type, when given.
    pub content_type: Option<String>,
    /// True when this is a client's last will, sent because it went away.
    pub is_will: bool,
}

/// The MQTT protocol level a client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4).
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0 (protocol level 5).
    #[serde(rename = "5")]
    V5,
}

/// How a client reached Vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Transport {
    /// Whether the connection is encrypted.
    pub fn is_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Whether MQTT arrives in WebSocket messages.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

/// A client connection event.
#[derive(Debug, Clone)]
pub struct ConnectionEvent {
    /// When it happened.
    pub at: Micros,
    /// The client id the client gave (or the one assigned to it).
    pub client_id: String,
    /// The user name it logged in with, if any (never the password).
    pub username: Option<String>,
    /// Where it came from.
    pub peer: SocketAddr,
    /// How it came.
    pub transport: Transport,
    /// The MQTT version it spoke.
    pub version: MqttVersion,
    /// What happened.
    pub outcome: ConnectionOutcome,
}

/// What happened to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionOutcome {
    /// The broker accepted the client.
    Connected {
        /// The keepalive the client asked for, in seconds (0 = none).
        keepalive: u16,
        /// Whether the client asked for a clean session.
        clean_start: bool,
    },
    /// The broker refused the client; the text says why.
    Refused(String),
    /// A connected client went away.
    Disconnected(DisconnectReason),
}

/// Why a connected client went away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The client sent DISCONNECT: a clean goodbye (no will is sent).
    Clean,
    /// The client sent an MQTT 5 DISCONNECT with this reason code, which
    /// asks for its will: 0x04 "disconnect with will message", or an error.
    DisconnectWithWill(u8),
    /// The socket closed or broke without a DISCONNECT.
    Dropped,
    /// Nothing arrived for 1.5 × the client's keepalive.
    KeepaliveTimeout,
    /// The client broke the protocol; the text says how.
    ProtocolError(String),
    /// A packet exceeded the configured maximum size.
    PacketTooLarge,
    /// An MQTT 5 client used a topic alias outside the range the server
    /// allows, or one it never set; the text says which.
    TopicAliasInvalid(String),
    /// Another connection took over the same client id.
    SessionTakenOver,
    /// The broker closed the connection (the text says why).
    ServerClosed(String),
    /// Vigil is shutting down.
    Shutdown,
}

impl DisconnectReason {
    /// Whether MQTT says the client's will must be published for this reason.
    pub fn sends_will(&self) -> bool {
        !matches!(self, DisconnectReason::Clean)
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::Clean => f.write_str("clean disconnect"),
            DisconnectReason::DisconnectWithWill(code) => {
                write!(f, "disconnect asking for its will (reason 0x{code:02x})")
            }
            DisconnectReason::Dropped => f.write_str("connection dropped"),
            DisconnectReason::KeepaliveTimeout => f.write_str("keepalive timeout"),
            DisconnectReason::ProtocolError(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::PacketTooLarge => f.write_str("packet too large"),
            DisconnectReason::TopicAliasInvalid(e) => write!(f, "topic alias invalid: {e}"),
            DisconnectReason::SessionTakenOver => f.write_str("session taken over"),
            DisconnectReason::ServerClosed(e) => write!(f, "closed by broker: {e}"),
            DisconnectReason::Shutdown => f.write_str("server shutting down"),
        }
    }
}
