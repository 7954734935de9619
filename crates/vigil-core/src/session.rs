//! MQTT sessions the broker keeps for clients (MQTT 3.1.1 clean session 0,
//! MQTT 5 a Session Expiry Interval), as the store keeps them across a
//! restart: who, until when, which filters, and the messages queued while
//! the client is away.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::time::Micros;

/// A session's Session Expiry Interval that never runs out (MQTT 5
/// 0xFFFFFFFF; every 3.1.1 session kept).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// A session kept for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSession {
    /// The client it belongs to.
    pub client_id: String,
    /// Seconds it outlives its connection ([`NEVER_EXPIRES`]: forever).
    pub expiry_s: u32,
    /// Since when the client has been away; `None` while it is connected.
    pub away_since: Option<Micros>,
    /// Its subscriptions.
    pub subscriptions: Vec<KeptSubscription>,
}

impl KeptSession {
    /// When it ends if the client stays away (`None`: connected, or never).
    pub fn expires_at(&self) -> Option<Micros> {
        let since = self.away_since?;
        (self.expiry_s != NEVER_EXPIRES).then(|| since + i64::from(self.expiry_s) * 1_000_000)
    }
}

/// A topic filter of a kept session, with its MQTT subscription options
/// byte (QoS in bits 0-1; MQTT 5 No Local, Retain As Published, Retain
/// Handling above).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSubscription {
    /// The topic filter.
    pub filter: String,
    /// The subscription options byte.
    pub options: u8,
}

/// A message queued for a client that is away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Its place in the session's queue (increasing).
    pub seq: i64,
    /// When it was queued.
    pub at: Micros,
    /// The MQTT 5 PUBLISH packet, whole, as the broker will deliver it.
    pub packet: Bytes,
}

/// A kept session with the messages waiting for its client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaySession {
    /// The session.
    pub session: KeptSession,
    /// Its queue, oldest first.
    pub queue: Vec<QueuedMessage>,
}

/// What changed about a kept session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    /// The session is kept like this (replacing what was known of it; its
    /// queue stays).
    Kept(KeptSession),
    /// A message was queued for the client.
    Queued {
        /// The client.
        client_id: String,
        /// The message.
        message: QueuedMessage,
    },
    /// The client has the queued messages from `from` to `through`
    /// (inclusive): those it was handed on its return. Others stay (say,
    /// ones a connection that was taken over could not deliver).
    Delivered {
        /// The client.
        client_id: String,
        /// The first delivered message's `seq`.
        from: i64,
        /// The last delivered message's `seq`.
        through: i64,
    },
    /// The session ended (expired, or a clean start): it and its queue go.
    Ended {
        /// The client.
        client_id: String,
    },
}
