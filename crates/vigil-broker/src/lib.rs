//! Vigil's embedded MQTT broker.
//!
//! Vigil owns the sockets. A [`front door`](front_door) accepts every client
//! (MQTT over TCP, TLS, WebSocket and secure WebSocket), reads its CONNECT,
//! asks the [`Gate`] who it is and what it may do, and hands the
//! connection to rumqttd's router through an internal listener on loopback that
//! speaks the client's protocol level. So one public port serves MQTT 3.1.1 and
//! 5, also over WebSocket, and the front door is where Vigil learns of every
//! message, connect and disconnect (with its reason), enforces the maximum
//! payload, the keepalive and the client's [`Rights`] (ACLs).
//!
//! - [`codec`]: MQTT packet framing and the few packets the front door reads or
//!   writes itself. Everything else is forwarded byte for byte.
//! - [`BrokerConfig`]: listeners and limits.
//! - [`Broker`]: starts the router and the front door, publishes on Vigil's own
//!   behalf, and shuts down in order.
//!
//! What the broker sees is reported as [`vigil_core::Observation`]s on a
//! bounded channel: a slow consumer slows publishers down (TCP backpressure)
//! rather than losing messages.
#![deny(missing_docs)]

pub mod acl;
pub mod codec;
mod config;
mod deliveries;
mod error;
mod front_door;
mod gate;
mod router;
mod sessions;
mod stream;
mod tls;

pub use acl::Rights;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use front_door::{AbsentClient, Broker, Publisher, Refusals, Resume, Retained, Security};
pub use gate::{Deciding, Denial, Gate, Login, LoopbackOnly, Verdict};
pub use tls::{ClientCerts, TlsMaterial};
