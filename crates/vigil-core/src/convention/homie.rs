//! Homie v4 (<https://homieiot.github.io/specification/spec-core-v4_0_0/>)
//! and v5 (<https://homieiot.github.io/specification/>).
//!
//! v4: `homie/<device>/$state` (`init`, `ready`, `disconnected`, `sleeping`,
//! `lost`, `alert`), `$name`, `$nodes`, `<node>/<property>` values and their
//! `$unit`. v5: `homie/5/<device>/$state` and `$description` (JSON with the
//! nodes, their properties and units). `init` and `alert` count as online
//! (the device is there, configuring or asking for attention); `lost` (the
//! last will) and `disconnected` as offline; `sleeping` as sleeping.
//! Readings are named `<node>/<property>`.

use std::collections::HashMap;

use serde_json::Value;

use super::{
    json, learn, text, Announced, Convention, DeviceInfo, DeviceRef, Fact, Interpretation,
    MessageRef,
};
use crate::decode::Metric;

/// What Homie devices have declared: units by (device, metric).
#[derive(Debug, Default)]
pub(super) struct Homie {
    prefix: String,
    units: HashMap<(String, String), String>,
}

impl Homie {
    pub(super) fn new(prefix: &str) -> Homie {
        Homie {
            prefix: prefix.to_owned(),
            units: HashMap::new(),
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let rest = message
            .topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?;
        let (v5, rest) = match rest.strip_prefix("5/") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let (device, rest) = rest.split_once('/')?;
        if device.is_empty() || device.starts_with('$') {
            return None;
        }
        let root = if v5 {
            format!("{}/5/{device}", self.prefix)
        } else {
            format!("{}/{device}", self.prefix)
        };
        let owner = DeviceRef::new(device, Convention::Homie, root);
        let levels: Vec<&str> = rest.split('/').collect();
        let payload = text(message.payload).unwrap_or("");
        let facts = match levels.as_slice() {
            ["$state"] => {
                let state = match payload {
                    "ready" | "init" | "alert" => Some(Announced::Online),
                    "disconnected" | "lost" => Some(Announced::Offline),
                    "sleeping" => Some(Announced::Sleeping),
                    _ => None,
                };
                state
                    .map(|s| Fact::presence(s, format!("Homie $state: {payload}")))
                    .into_iter()
                    .collect()
            }
            ["$name"] if !payload.is_empty() => vec![Fact::Info(DeviceInfo {
                name: Some(payload.to_owned()),
                ..DeviceInfo::default()
            })],
            ["$implementation"] if !payload.is_empty() => vec![Fact::Info(DeviceInfo {
                model: Some(payload.to_owned()),
                ..DeviceInfo::default()
            })],
            ["$fw", "version"] if !payload.is_empty() => vec![Fact::Info(DeviceInfo {
                firmware: Some(payload.to_owned()),
                ..DeviceInfo::default()
            })],
            ["$description"] if v5 => self.description(device, message.payload),
            [node, property, "$unit"] if !node.starts_with('$') && !payload.is_empty() => {
                let metric = format!("{node}/{property}");
                learn(
                    &mut self.units,
                    (device.to_owned(), metric.clone()),
                    payload.to_owned(),
                );
                vec![Fact::Unit {
                    metric,
                    unit: payload.to_owned(),
                }]
            }
            [node, property] if !node.starts_with('$') && !property.starts_with('$') => {
                let metric = format!("{node}/{property}");
                value(payload)
                    .map(|v| {
                        let mut m = Metric::new(metric.clone(), v);
                        m.unit = self.units.get(&(device.to_owned(), metric)).cloned();
                        Fact::Metric(m)
                    })
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        };
        Some(Interpretation::of(owner, facts))
    }

    /// A v5 `$description`: the device's name and its properties' units.
    fn description(&mut self, device: &str, payload: &[u8]) -> Vec<Fact> {
        let Some(Value::Object(d)) = json(payload) else {
            return Vec::new();
        };
        let mut facts = Vec::new();
        if let Some(name) = d.get("name").and_then(Value::as_str) {
            facts.push(Fact::Info(DeviceInfo {
                name: Some(name.to_owned()),
                ..DeviceInfo::default()
            }));
        }
        let nodes = d.get("nodes").and_then(Value::as_object);
        for (node, n) in nodes.into_iter().flatten() {
            let properties = n.get("properties").and_then(Value::as_object);
            for (property, p) in properties.into_iter().flatten() {
                if let Some(unit) = p.get("unit").and_then(Value::as_str) {
                    let metric = format!("{node}/{property}");
                    learn(
                        &mut self.units,
                        (device.to_owned(), metric.clone()),
                        unit.to_owned(),
                    );
                    facts.push(Fact::Unit {
                        metric,
                        unit: unit.to_owned(),
                    });
                }
            }
        }
        facts
    }
}

/// A Homie property value as a number: integers, floats, booleans.
fn value(s: &str) -> Option<f64> {
    match s {
        "true" => Some(1.0),
        "false" => Some(0.0),
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::msg;

    /// The v4 specification's example device, "super-car".
    #[test]
    fn v4_example_device() {
        let mut h = Homie::new("homie");
        let i = h
            .interpret(msg("homie/super-car/$homie", b"4.0.0"))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().root, "homie/super-car");
        assert!(i.facts.is_empty());
        let i = h
            .interpret(msg("homie/super-car/$name", b"Super car"))
            .unwrap();
        assert!(
            matches!(&i.facts[0].1, Fact::Info(info) if info.name.as_deref() == Some("Super car"))
        );
        let i = h
            .interpret(msg("homie/super-car/$state", b"ready"))
            .unwrap();
        assert_eq!(
            i.facts[0].1,
            Fact::presence(Announced::Online, "Homie $state: ready")
        );
        h.interpret(msg("homie/super-car/$nodes", b"wheels,engine,lights[]"));
        h.interpret(msg(
            "homie/super-car/engine/$properties",
            b"speed,direction,temperature",
        ));
        let i = h
            .interpret(msg(
                "homie/super-car/engine/temperature/$unit",
                "°C".as_bytes(),
            ))
            .unwrap();
        assert_eq!(
            i.facts[0].1,
            Fact::Unit {
                metric: "engine/temperature".into(),
                unit: "°C".into()
            }
        );
        let i = h
            .interpret(msg("homie/super-car/engine/temperature", b"21.5"))
            .unwrap();
        let Fact::Metric(m) = &i.facts[0].1 else {
            panic!()
        };
        assert_eq!(
            (m.name.as_str(), m.value, m.unit.as_deref()),
            ("engine/temperature", 21.5, Some("°C"))
        );
        let i = h
            .interpret(msg("homie/super-car/lights/on", b"true"))
            .unwrap();
        assert!(matches!(&i.facts[0].1, Fact::Metric(m) if m.value == 1.0));
        let i = h
            .interpret(msg("homie/super-car/engine/direction", b"forward"))
            .unwrap();
        assert!(i.facts.is_empty(), "an enum is not a number");
        assert!(h
            .interpret(msg("homie/super-car/engine/speed/set", b"3"))
            .unwrap()
            .facts
            .is_empty());
        for (state, want) in [
            ("lost", Announced::Offline),
            ("disconnected", Announced::Offline),
            ("sleeping", Announced::Sleeping),
            ("init", Announced::Online),
        ] {
            let i = h
                .interpret(msg("homie/super-car/$state", state.as_bytes()))
                .unwrap();
            assert!(
                matches!(i.facts[0].1, Fact::Presence { state: s, .. } if s == want),
                "{state}"
            );
        }
        assert!(h
            .interpret(msg("other/super-car/$state", b"ready"))
            .is_none());
    }

    /// A v5 device with its `$description`.
    #[test]
    fn v5_description_and_state() {
        let mut h = Homie::new("homie");
        let description = br#"{"homie":"5.0","version":7,"name":"Kitchen thermostat","nodes":{"thermostat":{"name":"Thermostat","properties":{"temperature":{"name":"Temperature","datatype":"float","unit":"\u00b0C"},"mode":{"datatype":"enum","format":"heat,cool,off","settable":true}}}}}"#;
        let i = h
            .interpret(msg("homie/5/thermostat-17/$description", description))
            .unwrap();
        let owner = i.owner.clone().unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.root.as_str()),
            ("thermostat-17", "homie/5/thermostat-17")
        );
        assert!(i.facts.iter().any(|(_, f)| matches!(f, Fact::Info(info) if info.name.as_deref() == Some("Kitchen thermostat"))));
        assert!(i.facts.iter().any(|(_, f)| *f
            == Fact::Unit {
                metric: "thermostat/temperature".into(),
                unit: "°C".into()
            }));
        let i = h
            .interpret(msg("homie/5/thermostat-17/$state", b"ready"))
            .unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Online,
                ..
            }
        ));
        let i = h
            .interpret(msg("homie/5/thermostat-17/thermostat/temperature", b"19.5"))
            .unwrap();
        assert!(matches!(&i.facts[0].1, Fact::Metric(m) if m.unit.as_deref() == Some("°C")));
        assert!(h
            .interpret(msg("homie/5/thermostat-17/$description", b"{oops"))
            .unwrap()
            .facts
            .is_empty());
    }
}
