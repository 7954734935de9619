//! Live events for the shells (SSE today, Tauri events with the desktop).
//!
//! A broadcast channel of bounded size: sending never waits, and a listener
//! that falls behind loses the oldest events and is told so, so it can reload
//! what it shows ([`Event::Resync`] is produced by the listener's side).

use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;
use vigil_core::Micros;

/// How many events a listener may fall behind before it must resync.
const CAPACITY: usize = 16 * 1024;

/// Something that happened, for whoever is watching.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message arrived (its payload is fetched on demand).
    Message(Arc<MessageEvent>),
    /// A client connected, was refused or went away.
    Connection(Arc<ConnectionEventView>),
    /// A batch was committed to the store.
    Flushed(FlushedEvent),
    /// A device was seen for the first time.
    Device(Arc<DeviceEvent>),
    /// The listener fell behind and missed events: reload.
    Resync,
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Message(_) => "message",
            Event::Connection(_) => "connection",
            Event::Flushed(_) => "flushed",
            Event::Device(_) => "device",
            Event::Resync => "resync",
        }
    }
}

/// A message, without its payload.
#[derive(Debug, Serialize)]
pub struct MessageEvent {
    /// When it arrived.
    pub at: Micros,
    /// Its topic.
    pub topic: String,
    /// The device it belongs to.
    pub device: Option<String>,
    /// Who published it.
    pub client_id: Option<String>,
    /// Its QoS.
    pub qos: u8,
    /// Whether it is retained.
    pub retain: bool,
    /// Payload size in bytes.
    pub size: usize,
}

/// A connection event.
#[derive(Debug, Serialize)]
pub struct ConnectionEventView {
    /// When.
    pub at: Micros,
    /// The client.
    pub client_id: String,
    /// Its user name, if it gave one.
    pub username: Option<String>,
    /// Its address.
    pub peer: String,
    /// `tcp` or `ws`.
    pub transport: vigil_core::Transport,
    /// `3.1.1` or `5`.
    pub version: vigil_core::MqttVersion,
    /// `connected`, `refused` or `disconnected`.
    pub outcome: &'static str,
    /// Why it was refused or went away.
    pub reason: Option<String>,
}

/// A committed batch.
#[derive(Debug, Clone, Serialize)]
pub struct FlushedEvent {
    /// Messages in the batch.
    pub rows: usize,
    /// The id of the last message committed.
    pub last_message_id: i64,
    /// When the commit finished.
    pub committed_at: Micros,
    /// When the oldest message in the batch arrived.
    pub oldest_received: Micros,
}

/// A new device.
#[derive(Debug, Serialize)]
pub struct DeviceEvent {
    /// Its id.
    pub id: String,
    /// When it was first seen.
    pub at: Micros,
}

/// The sending side, shared by the engine and the store writer.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Sends an event to every listener; never waits.
    pub fn send(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A new listener, starting with the next event.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Whether anyone listens (so the engine can skip building events).
    pub fn has_listeners(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_listener_is_told_it_lagged_and_the_sender_never_waits() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        for i in 0..(CAPACITY + 10) as i64 {
            bus.send(Event::Flushed(FlushedEvent {
                rows: 1,
                last_message_id: i,
                committed_at: 0,
                oldest_received: 0,
            }));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
        match rx.recv().await {
            Ok(Event::Flushed(f)) => assert_eq!(f.last_message_id, 10),
            other => panic!("unexpected {other:?}"),
        }
    }
}
