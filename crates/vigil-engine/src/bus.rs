//! Live events for the shells (SSE today, Tauri events with the desktop).
//!
//! Broadcast channels of bounded size: sending never waits, and a listener
//! that falls behind loses the oldest events and is told so, so it can reload
//! what it shows ([`Event::Resync`] is produced by the listener's side).
//!
//! Message events (one per message, tens of thousands a second) travel on a
//! channel of their own: a listener that wants only connections, devices or
//! commits never has to keep pace with the message stream.

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
    /// A device was seen for the first time, or what is known of it changed.
    Device(Arc<DeviceEvent>),
    /// A device's presence changed.
    Presence(Arc<PresenceEvent>),
    /// An alert fired, was acknowledged or cleared.
    Alert(Arc<AlertEvent>),
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
            Event::Presence(_) => "presence",
            Event::Alert(_) => "alert",
            Event::Resync => "resync",
        }
    }
}

/// A message, without its payload.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
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
#[cfg_attr(
    feature = "ts",
    derive(ts_rs::TS),
    ts(export, rename = "ConnectionEvent")
)]
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
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
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

/// A device that is new, or whose description or settings changed.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct DeviceEvent {
    /// Its id.
    pub id: String,
    /// When.
    pub at: Micros,
    /// `new`, `described` (its convention told more) or `settings` (the user
    /// changed them).
    pub change: &'static str,
}

/// A presence change.
pub type PresenceEvent = vigil_core::presence::Transition;

/// An alert change: the alert as it is now, and what happened to it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct AlertEvent {
    /// `fired`, `acknowledged` or `cleared`.
    pub transition: &'static str,
    /// The alert.
    pub alert: vigil_core::alert::Alert,
}

/// The sending side, shared by the engine and the store writer.
#[derive(Clone)]
pub struct EventBus {
    messages: broadcast::Sender<Event>,
    others: broadcast::Sender<Event>,
}

/// A listener's receiving side: the other events always, the message events
/// only if asked for.
pub struct Subscription {
    /// Message events, if subscribed.
    pub messages: Option<broadcast::Receiver<Event>>,
    /// Connections, devices, commits.
    pub others: broadcast::Receiver<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            messages: broadcast::channel(CAPACITY).0,
            others: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Sends an event to every listener; never waits.
    pub fn send(&self, event: Event) {
        let channel = match event {
            Event::Message(_) => &self.messages,
            _ => &self.others,
        };
        let _ = channel.send(event);
    }

    /// A new listener, starting with the next event.
    pub fn subscribe(&self, with_messages: bool) -> Subscription {
        Subscription {
            messages: with_messages.then(|| self.messages.subscribe()),
            others: self.others.subscribe(),
        }
    }

    /// Whether anyone listens to message events (so the engine can skip
    /// building them).
    pub fn has_message_listeners(&self) -> bool {
        self.messages.receiver_count() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_listener_is_told_it_lagged_and_the_sender_never_waits() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe(false).others;
        for i in 0..(CAPACITY + 10) as i64 {
            bus.send(flushed(i));
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

    #[tokio::test]
    async fn a_flood_of_messages_does_not_push_other_events_out() {
        let bus = EventBus::default();
        let mut quiet = bus.subscribe(false);
        assert!(quiet.messages.is_none());
        assert!(!bus.has_message_listeners());
        let mut loud = bus.subscribe(true);
        bus.send(flushed(1));
        for _ in 0..(2 * CAPACITY) {
            bus.send(Event::Message(Arc::new(MessageEvent {
                at: 0,
                topic: "t".into(),
                device: None,
                client_id: None,
                qos: 0,
                retain: false,
                size: 0,
            })));
        }
        bus.send(flushed(2));
        for want in [1, 2] {
            match quiet.others.recv().await {
                Ok(Event::Flushed(f)) => assert_eq!(f.last_message_id, want),
                other => panic!("unexpected {other:?}"),
            }
        }
        let messages = loud.messages.as_mut().unwrap();
        assert!(matches!(
            messages.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
    }

    fn flushed(id: i64) -> Event {
        Event::Flushed(FlushedEvent {
            rows: 1,
            last_message_id: id,
            committed_at: 0,
            oldest_received: 0,
        })
    }
}
