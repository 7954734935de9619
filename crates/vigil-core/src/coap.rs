//! What the CoAP side reports: a device answered (with its resources), a
//! resource's representation arrived (a response or a notification), or a
//! device stopped answering.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use crate::time::Micros;

/// The prefix of every CoAP device's id and of its messages' topics:
/// `coap/192.0.2.7:5683`, `coap/192.0.2.7:5683/sensors/temp`.
pub const PREFIX: &str = "coap/";

/// The device id of the CoAP endpoint at `address`.
pub fn device_id(address: SocketAddr) -> String {
    format!("{PREFIX}{address}")
}

/// A resource a device lists in `/.well-known/core` (RFC 6690 attributes,
/// and `obs` from RFC 7641).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CoapResource {
    /// Its path, starting with `/`.
    pub path: String,
    /// Resource type(s) (`rt`), space separated as given.
    pub rt: Option<String>,
    /// Interface description (`if`).
    #[serde(rename = "if")]
    pub interface: Option<String>,
    /// Content-format numbers (`ct`; several are allowed).
    pub ct: Vec<u16>,
    /// Human title.
    pub title: Option<String>,
    /// Observable (`obs`).
    pub obs: bool,
    /// Estimated size in bytes (`sz`).
    pub sz: Option<u64>,
}

/// One thing the CoAP side saw.
#[derive(Debug, Clone)]
pub struct CoapEvent {
    /// When.
    pub at: Micros,
    /// The device's address (IPv6 link-local with its scope id).
    pub address: SocketAddr,
    /// What.
    pub what: CoapWhat,
}

/// What the CoAP side saw of one device.
#[derive(Debug, Clone)]
pub enum CoapWhat {
    /// It answered `/.well-known/core` (discovery or a probe).
    Answered {
        /// How it was found: "multicast on eth0", "probe", "configured".
        how: String,
        /// Its resources, or why its answer was not link format.
        resources: Result<Vec<CoapResource>, String>,
        /// Whether the answer counts as a sign of life. A device whose
        /// readings are observed is judged by them: answering a probe while
        /// its notifications have stopped leaves it stale.
        alive: bool,
    },
    /// A representation of one of its resources: a response or a notification.
    Reading {
        /// The resource's path.
        path: String,
        /// The payload, whole.
        payload: Bytes,
        /// Its Content-Format number, when given.
        content_format: Option<u16>,
        /// The Observe sequence number of a notification.
        observe: Option<u32>,
    },
    /// It stopped answering (probes failed, an observation could not be renewed).
    Unreachable {
        /// Why, in words.
        reason: String,
    },
}

/// Content formats (RFC 7252 §12.3 and the IANA registry) by name, for the
/// ones devices commonly send; others are shown by number.
pub const CONTENT_FORMATS: [(u16, &str); 11] = [
    (0, "text/plain"),
    (40, "application/link-format"),
    (41, "application/xml"),
    (42, "application/octet-stream"),
    (47, "application/exi"),
    (50, "application/json"),
    (60, "application/cbor"),
    (110, "application/senml+json"),
    (111, "application/sensml+json"),
    (112, "application/senml+cbor"),
    (113, "application/sensml+cbor"),
];

/// The name of a content format number, when known.
pub fn content_format_name(cf: u16) -> Option<&'static str> {
    CONTENT_FORMATS
        .iter()
        .find(|(n, _)| *n == cf)
        .map(|(_, name)| *name)
}
