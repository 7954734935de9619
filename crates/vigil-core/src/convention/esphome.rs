//! ESPHome's MQTT client (<https://esphome.io/components/mqtt.html>).
//!
//! A node announces itself on `<node>/status` (`online` birth, `offline`
//! last will) and publishes each component's state on
//! `<node>/<component>/<object_id>/state`. Only nodes heard on `status` are
//! claimed, so arbitrary `x/sensor/y/state` topics are not mistaken for
//! ESPHome. (Nodes that also send Home Assistant discovery are claimed by
//! that convention first, with their names and units.)

use std::collections::HashSet;

use super::{text, Announced, Convention, DeviceRef, Fact, Interpretation, MessageRef};
use crate::decode::Metric;

/// ESPHome's component types that publish a state.
const COMPONENTS: &[&str] = &[
    "sensor",
    "binary_sensor",
    "switch",
    "light",
    "fan",
    "cover",
    "climate",
    "text_sensor",
    "number",
    "select",
    "lock",
    "valve",
    "button",
];

/// The nodes heard on `<node>/status`.
#[derive(Debug, Default)]
pub(super) struct Esphome {
    nodes: HashSet<String>,
}

impl Esphome {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let (node, rest) = message.topic.split_once('/')?;
        if node.is_empty() {
            return None;
        }
        if rest == "status" {
            let state = match text(message.payload)? {
                "online" => Announced::Online,
                "offline" => Announced::Offline,
                _ => return None,
            };
            if self.nodes.len() >= super::MAX_LEARNED {
                self.nodes.clear();
            }
            self.nodes.insert(node.to_owned());
            let reason = format!(
                "ESPHome status: {}",
                if state == Announced::Online {
                    "online"
                } else {
                    "offline"
                }
            );
            return Some(Interpretation::of(
                DeviceRef::new(node, Convention::Esphome, node),
                vec![Fact::presence(state, reason)],
            ));
        }
        if !self.nodes.contains(node) {
            return None;
        }
        let owner = DeviceRef::new(node, Convention::Esphome, node);
        let levels: Vec<&str> = rest.split('/').collect();
        let facts = match levels.as_slice() {
            [component, object, "state"] if COMPONENTS.contains(component) => {
                let value = text(message.payload).and_then(state_value);
                value
                    .map(|v| Fact::Metric(Metric::new(*object, v)))
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        };
        Some(Interpretation::of(owner, facts))
    }
}

/// A state as a number: numbers, ON/OFF, open/closed, locked/unlocked.
fn state_value(s: &str) -> Option<f64> {
    match s {
        "ON" | "on" | "OPEN" | "open" | "LOCKED" | "locked" => Some(1.0),
        "OFF" | "off" | "CLOSED" | "closed" | "UNLOCKED" | "unlocked" => Some(0.0),
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::msg;

    /// The topics of ESPHome's MQTT documentation: birth and will on
    /// `<topic_prefix>/status`, states on `<prefix>/sensor/<id>/state`.
    #[test]
    fn status_then_states() {
        let mut e = Esphome::default();
        assert!(e
            .interpret(msg("livingroom/sensor/temperature/state", b"21.5"))
            .is_none());
        let i = e.interpret(msg("livingroom/status", b"online")).unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "livingroom");
        assert_eq!(
            i.facts[0].1,
            Fact::presence(Announced::Online, "ESPHome status: online")
        );
        let i = e
            .interpret(msg("livingroom/sensor/temperature/state", b"21.5"))
            .unwrap();
        assert_eq!(i.facts[0].1, Fact::Metric(Metric::new("temperature", 21.5)));
        let i = e
            .interpret(msg("livingroom/binary_sensor/motion/state", b"ON"))
            .unwrap();
        assert_eq!(i.facts[0].1, Fact::Metric(Metric::new("motion", 1.0)));
        let i = e
            .interpret(msg("livingroom/switch/relay/command", b"ON"))
            .unwrap();
        assert!(i.facts.is_empty(), "commands are not readings");
        let i = e.interpret(msg("livingroom/status", b"offline")).unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Offline,
                ..
            }
        ));
        assert!(e.interpret(msg("other/status", b"busy")).is_none());
    }
}
