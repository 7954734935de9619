//! Vigil's CoAP side (RFC 7252 over UDP): requests with retransmission,
//! deduplication and block-wise transfer, observe (RFC 7641), the CoRE Link
//! Format (RFC 6690) and multicast discovery of `/.well-known/core`.
//!
//! coap-lite encodes and decodes the messages; this crate is the transport
//! and the exchange rules around them. It is the only crate that opens
//! CoAP sockets, and it knows nothing of devices or of the store: the
//! engine decides what a response means.

pub mod discovery;
pub mod endpoint;
pub mod interfaces;
pub mod link;
pub mod message;
pub mod observe;

pub use endpoint::{CoapError, Counters, Endpoint, Notice, Observing, Timing};
pub use link::{Link, LinkFormatError};
pub use message::{code_text, Method, Request, Response};

/// The CoAP port (RFC 7252 §6.1).
pub const PORT: u16 = 5683;
