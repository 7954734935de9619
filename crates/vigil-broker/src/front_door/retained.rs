//! Retained messages again for a filter subscribed again.
//!
//! MQTT 3.1.1 [MQTT-3.8.4-3] and MQTT 5 Retain Handling 0 send a filter's
//! retained messages on every SUBSCRIBE, also one that replaces an existing
//! subscription; rumqttd sends them only for a filter new to the connection
//! (and making it forget the filter first would skip what it still owes the
//! client). So the front door keeps a copy of every retained message beside
//! the router's, and sends a filter subscribed again its copies itself,
//! right after the router's SUBACK, with packet ids of its own (see
//! [`super::away::FIRST_OWN_PACKET_ID`]); their answers never reach the
//! router.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use vigil_core::{now_micros, Micros, MqttVersion};

use super::{Link, TAG};
use crate::acl;
use crate::codec::{self, Publish, PublishProperties};

/// The retained messages, by topic.
#[derive(Default)]
pub(super) struct RetainedCopies {
    by_topic: Mutex<HashMap<String, Copy>>,
}

struct Copy {
    publish: Publish,
    /// When it was retained.
    at: Micros,
}

impl RetainedCopies {
    /// Takes note of a retained PUBLISH (an empty payload removes the topic's).
    pub(super) fn keep(&self, publish: &Publish) {
        let mut by_topic = self.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        if publish.payload.is_empty() {
            by_topic.remove(&publish.topic);
            return;
        }
        // The front door's tag is the router's business; the rest goes as
        // the publisher sent it (its topic alias already resolved).
        let properties_raw = codec::without_user_property(&publish.properties_raw, TAG, "PUBLISH")
            .unwrap_or_default();
        let copy = Publish {
            dup: false,
            qos: publish.qos,
            retain: true,
            topic: publish.topic.clone(),
            packet_id: None,
            payload: publish.payload.clone(),
            properties: PublishProperties {
                message_expiry_interval: publish.properties.message_expiry_interval,
                ..PublishProperties::default()
            },
            properties_raw,
        };
        by_topic.insert(
            publish.topic.clone(),
            Copy {
                publish: copy,
                at: now_micros(),
            },
        );
    }

    /// Takes note of a retained message without properties (Vigil's own,
    /// and those of the last run).
    pub(super) fn keep_plain(&self, topic: &str, payload: Bytes, qos: u8) {
        self.keep(&Publish {
            dup: false,
            qos,
            retain: true,
            topic: topic.to_owned(),
            packet_id: None,
            payload,
            properties: PublishProperties::default(),
            properties_raw: Bytes::new(),
        });
    }

    /// The retained messages `filter` matches, as `link`'s client gets
    /// them for a subscription granted `granted`: at the smaller QoS, with
    /// what is left of their Message Expiry Interval (expired ones not at
    /// all), within its Maximum Packet Size; whole packets.
    pub(super) fn for_subscription(&self, link: &Link, filter: &str, granted: u8) -> BytesMut {
        let mut out = BytesMut::new();
        let by_topic = self.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        for copy in by_topic.values() {
            if !acl::matches(filter, &copy.publish.topic) {
                continue;
            }
            let mut publish = copy.publish.clone();
            if !super::age_message_expiry(&mut publish, copy.at) {
                continue;
            }
            publish.qos = publish.qos.min(granted);
            if publish.qos > 0 {
                publish.packet_id = Some(link.next_own_packet_id());
            }
            if link.version == MqttVersion::V311 {
                publish.properties_raw = Bytes::new();
            }
            let mut packet = BytesMut::new();
            publish.encode(link.version, &mut packet);
            if link
                .maximum_packet_size
                .is_none_or(|max| packet.len() <= max)
            {
                out.extend_from_slice(&packet);
            }
        }
        out
    }
}
