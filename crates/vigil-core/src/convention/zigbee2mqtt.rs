//! Zigbee2MQTT (<https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html>).
//!
//! The bridge is a device of its own (key `<base>/bridge`): `bridge/state`
//! (`online` / `offline`, or `{"state": "online"}`) is its birth and last
//! will, and `bridge/devices` (retained) lists every Zigbee device with its
//! model, vendor, firmware and the units of what it exposes. Each device
//! (key: its friendly name, which may contain `/`) publishes its state as
//! JSON on `<base>/<name>` and its availability on `<base>/<name>/availability`.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{
    json, learn, text, Announced, Convention, DeviceInfo, DeviceRef, Fact, Interpretation,
    MessageRef,
};

/// Suffixes of a device's topics that are not its state.
const COMMAND_SUFFIXES: &[&str] = &["/set", "/get"];

/// What `bridge/devices` taught.
#[derive(Debug, Default)]
pub(super) struct Zigbee2mqtt {
    base: String,
    names: HashSet<String>,
    units: HashMap<(String, String), String>,
}

impl Zigbee2mqtt {
    pub(super) fn new(base: &str) -> Zigbee2mqtt {
        Zigbee2mqtt {
            base: base.to_owned(),
            ..Zigbee2mqtt::default()
        }
    }

    fn device(&self, name: &str) -> DeviceRef {
        DeviceRef::new(
            name,
            Convention::Zigbee2mqtt,
            format!("{}/{name}", self.base),
        )
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let rest = message
            .topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix('/')?;
        if let Some(what) = rest.strip_prefix("bridge") {
            let bridge = DeviceRef::new(
                format!("{}/bridge", self.base),
                Convention::Zigbee2mqtt,
                format!("{}/bridge", self.base),
            );
            return Some(match what {
                "/state" => {
                    let facts = availability(message.payload)
                        .map(|(s, word)| {
                            Fact::presence(s, format!("Zigbee2MQTT bridge state: {word}"))
                        })
                        .into_iter()
                        .collect();
                    Interpretation::of(bridge, facts)
                }
                "/devices" => self.devices(bridge, message.payload),
                _ => Interpretation::of(bridge, Vec::new()),
            });
        }
        if let Some(name) = rest.strip_suffix("/availability") {
            if name.is_empty() {
                return None;
            }
            let facts = availability(message.payload)
                .map(|(s, word)| Fact::presence(s, format!("Zigbee2MQTT availability: {word}")))
                .into_iter()
                .collect();
            return Some(Interpretation::of(self.device(name), facts));
        }
        // Commands: `<name>/set`, `<name>/set/<attribute>`, `<name>/get`.
        for suffix in COMMAND_SUFFIXES {
            if let Some(at) = rest.rfind(suffix) {
                let name = &rest[..at];
                let tail = &rest[at + suffix.len()..];
                if !name.is_empty() && (tail.is_empty() || tail.starts_with('/')) {
                    return Some(Interpretation::of(self.device(name), Vec::new()));
                }
            }
        }
        if rest.is_empty() {
            return None;
        }
        // A device's state: JSON with its readings.
        let Some(Value::Object(_)) = json(message.payload) else {
            // A known device's other payloads are still its messages.
            return self
                .names
                .contains(rest)
                .then(|| Interpretation::of(self.device(rest), Vec::new()));
        };
        let facts = super::payload_metrics("", message.payload)
            .into_iter()
            .map(|mut m| {
                m.unit = self.units.get(&(rest.to_owned(), m.name.clone())).cloned();
                Fact::Metric(m)
            })
            .collect();
        Some(Interpretation::of(self.device(rest), facts))
    }

    /// `bridge/devices`: every device's description and units.
    fn devices(&mut self, bridge: DeviceRef, payload: &[u8]) -> Interpretation {
        let mut i = Interpretation::of(bridge, Vec::new());
        let Some(Value::Array(devices)) = json(payload) else {
            return i;
        };
        for d in &devices {
            let Some(name) = d.get("friendly_name").and_then(Value::as_str) else {
                continue;
            };
            if d.get("type").and_then(Value::as_str) == Some("Coordinator") {
                continue;
            }
            if self.names.len() >= super::MAX_LEARNED {
                self.names.clear();
            }
            self.names.insert(name.to_owned());
            let device = self.device(name);
            let definition = d.get("definition");
            let s = |v: Option<&Value>, k: &str| {
                v.and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let info = DeviceInfo {
                name: s(definition, "description"),
                model: s(definition, "model").or_else(|| s(Some(d), "model_id")),
                manufacturer: s(definition, "vendor").or_else(|| s(Some(d), "manufacturer")),
                firmware: s(Some(d), "software_build_id"),
            };
            if !info.is_empty() {
                i.facts.push((device.clone(), Fact::Info(info)));
            }
            let mut units = Vec::new();
            if let Some(exposes) = definition.and_then(|d| d.get("exposes")) {
                collect_units(exposes, &mut units);
            }
            for (property, unit) in units {
                learn(
                    &mut self.units,
                    (name.to_owned(), property.clone()),
                    unit.clone(),
                );
                i.facts.push((
                    device.clone(),
                    Fact::Unit {
                        metric: property,
                        unit,
                    },
                ));
            }
        }
        i
    }
}

/// `online` / `offline`, plain or as `{"state": ...}`.
fn availability(payload: &[u8]) -> Option<(Announced, &'static str)> {
    let word = match json(payload) {
        Some(Value::Object(o)) => o.get("state").and_then(Value::as_str).map(str::to_owned),
        _ => text(payload).map(str::to_owned),
    }?;
    match word.as_str() {
        "online" => Some((Announced::Online, "online")),
        "offline" => Some((Announced::Offline, "offline")),
        _ => None,
    }
}

/// (property, unit) of every exposed feature, nested ones included.
fn collect_units(exposes: &Value, out: &mut Vec<(String, String)>) {
    let Some(list) = exposes.as_array() else {
        return;
    };
    for e in list {
        if let (Some(p), Some(u)) = (
            e.get("property").and_then(Value::as_str),
            e.get("unit").and_then(Value::as_str),
        ) {
            out.push((p.to_owned(), u.to_owned()));
        }
        if let Some(features) = e.get("features") {
            collect_units(features, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::msg;

    /// Shapes from Zigbee2MQTT's "MQTT topics and messages" page.
    #[test]
    fn bridge_devices_state_and_availability() {
        let mut z = Zigbee2mqtt::new("zigbee2mqtt");
        let i = z
            .interpret(msg("zigbee2mqtt/bridge/state", br#"{"state":"online"}"#))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "zigbee2mqtt/bridge");
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Online,
                ..
            }
        ));
        let i = z
            .interpret(msg("zigbee2mqtt/bridge/state", b"offline"))
            .unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Offline,
                ..
            }
        ));

        let devices = br#"[{"ieee_address":"0x00124b00120144ae","type":"Coordinator","friendly_name":"Coordinator"},
          {"ieee_address":"0x00158d0001dc126a","type":"EndDevice","friendly_name":"living_room/sensor","software_build_id":"3000-0001",
           "definition":{"model":"WSDCGQ11LM","vendor":"Aqara","description":"Temperature, humidity and pressure sensor",
             "exposes":[{"type":"numeric","name":"temperature","property":"temperature","unit":"\u00b0C","access":1},
                        {"type":"numeric","name":"humidity","property":"humidity","unit":"%","access":1},
                        {"type":"numeric","name":"linkquality","property":"linkquality","unit":"lqi","access":1}]}},
          {"ieee_address":"0x0017880104e45517","type":"Router","friendly_name":"hallway_light",
           "definition":{"model":"9290012573A","vendor":"Philips","description":"Hue white and color ambiance",
             "exposes":[{"type":"light","features":[{"type":"numeric","name":"brightness","property":"brightness","access":7},
                                                     {"type":"numeric","name":"color_temp","property":"color_temp","unit":"mired","access":7}]}]}}]"#;
        let i = z
            .interpret(msg("zigbee2mqtt/bridge/devices", devices))
            .unwrap();
        assert!(i.facts.iter().any(|(d, f)| d.key == "living_room/sensor"
            && matches!(f, Fact::Info(info) if info.model.as_deref() == Some("WSDCGQ11LM") && info.manufacturer.as_deref() == Some("Aqara") && info.firmware.as_deref() == Some("3000-0001"))));
        assert!(i.facts.iter().any(|(d, f)| d.key == "hallway_light"
            && *f
                == Fact::Unit {
                    metric: "color_temp".into(),
                    unit: "mired".into()
                }));
        assert!(!i.facts.iter().any(|(d, _)| d.key == "Coordinator"));

        let i = z
            .interpret(msg("zigbee2mqtt/living_room/sensor", br#"{"temperature":21.5,"humidity":40,"pressure":1010,"linkquality":120,"last_seen":"2024-01-01T00:00:00Z"}"#))
            .unwrap();
        let owner = i.owner.as_ref().unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.root.as_str()),
            ("living_room/sensor", "zigbee2mqtt/living_room/sensor")
        );
        assert!(i.facts.iter().any(|(_, f)| matches!(f, Fact::Metric(m) if m.name == "temperature" && m.unit.as_deref() == Some("°C"))));
        assert!(i.facts.iter().any(
            |(_, f)| matches!(f, Fact::Metric(m) if m.name == "pressure" && m.unit.is_none())
        ));

        let i = z
            .interpret(msg(
                "zigbee2mqtt/living_room/sensor/availability",
                br#"{"state":"offline"}"#,
            ))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "living_room/sensor");
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Offline,
                ..
            }
        ));
        let i = z
            .interpret(msg("zigbee2mqtt/hallway_light/availability", b"online"))
            .unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Online,
                ..
            }
        ));
        let i = z
            .interpret(msg("zigbee2mqtt/hallway_light/set", br#"{"state":"ON"}"#))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "hallway_light");
        assert!(i.facts.is_empty());
        let i = z
            .interpret(msg("zigbee2mqtt/hallway_light/set/brightness", b"100"))
            .unwrap();
        assert_eq!(i.owner.unwrap().key, "hallway_light");
        assert!(z.interpret(msg("zigbee2mqttx/a", b"{}")).is_none());
    }
}
