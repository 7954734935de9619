//! Vigil's domain, free of I/O.
//!
//! Every source Vigil listens to (the embedded broker's front door, external
//! brokers, the CoAP client) turns what it hears into an [`Observation`]. The engine
//! turns observations into devices and numeric samples using the pure functions
//! here:
//!
//! - [`observation`]: what a source reports: a message, or a client connecting
//!   and disconnecting with its reason.
//! - [`coap`]: what the CoAP side reports (answers, readings, silence) and the
//!   resources a device lists.
//! - [`identity`]: which device a topic belongs to ([`DeviceRule`]).
//! - [`decode`]: numeric metrics found in a payload (JSON by path, plain numbers,
//!   booleans); anything else stays raw.
//! - [`time`]: the one timestamp unit, microseconds since the Unix epoch.
//!
//! This crate knows no sockets, no SQL and no async runtime, so it can be tested
//! and fuzzed in isolation.
#![deny(missing_docs)]

pub mod alert;
pub mod coap;
pub mod convention;
pub mod decode;
pub mod identity;
pub mod observation;
pub mod presence;
pub mod session;
#[cfg(test)]
mod testing;
pub mod time;

pub use convention::{
    Convention, Conventions, ConventionsConfig, DeviceRef, Fact, Interpretation, MessageRef,
};
pub use decode::{decode_payload, Decoded, Metric, PayloadKind};
pub use identity::DeviceRule;
pub use observation::{
    ConnectionEvent, ConnectionOutcome, DisconnectReason, Message, MqttVersion, Observation,
    Transport, UserProperty,
};
pub use presence::PresenceState;
pub use time::{now_micros, Micros};
