//! Home Assistant MQTT discovery (<https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery>).
//!
//! A retained config on `<prefix>/<component>/[<node_id>/]<object_id>/config`
//! describes one entity: its state topic (and how to read it:
//! `value_template`), its availability (one topic, or a list with
//! `availability_mode` all / any / latest, payloads configurable), its unit,
//! `expire_after`, and the `device` it belongs to. Abbreviated keys
//! (`stat_t`, `avty_t`, `unit_of_meas`, `dev`, `ids`, ...) and the `~` base
//! topic are expanded. Configs teach which topics belong to which device;
//! later messages on those topics are that device's readings and presence.
//! An empty config removes the entity.
//!
//! Devices that have a convention of their own (Zigbee2MQTT, Tasmota, Homie,
//! Shelly Gen1) also publish discovery configs for Home Assistant: a config
//! whose topics lie under those conventions' prefixes is left to them, so a
//! device is one record, named by its native convention.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{
    json, learn, text, Announced, Convention, DeviceInfo, DeviceRef, Fact, Interpretation,
    MessageRef,
};
use crate::decode::Metric;

/// Topic prefixes of conventions that describe their devices themselves.
const NATIVE: &[&str] = &[
    "zigbee2mqtt/",
    "tele/",
    "stat/",
    "cmnd/",
    "homie/",
    "shellies/",
];

/// The abbreviations Vigil reads (from Home Assistant's table).
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("avty", "availability"),
    ("avty_mode", "availability_mode"),
    ("avty_t", "availability_topic"),
    ("avty_tpl", "availability_template"),
    ("dev", "device"),
    ("dev_cla", "device_class"),
    ("exp_aft", "expire_after"),
    ("json_attr_t", "json_attributes_topic"),
    ("pl_avail", "payload_available"),
    ("pl_not_avail", "payload_not_available"),
    ("stat_cla", "state_class"),
    ("stat_t", "state_topic"),
    ("stat_val_tpl", "state_value_template"),
    ("t", "topic"),
    ("uniq_id", "unique_id"),
    ("unit_of_meas", "unit_of_measurement"),
    ("val_tpl", "value_template"),
    ("obj_id", "object_id"),
    ("cmd_t", "command_topic"),
];

/// The device block's abbreviations.
const DEVICE_ABBREVIATIONS: &[(&str, &str)] = &[
    ("cns", "connections"),
    ("ids", "identifiers"),
    ("mf", "manufacturer"),
    ("mdl", "model"),
    ("mdl_id", "model_id"),
    ("sw", "sw_version"),
    ("hw", "hw_version"),
    ("sa", "suggested_area"),
];

/// How a state topic's payload becomes a reading.
#[derive(Debug, Clone, PartialEq)]
enum Reading {
    /// The payload itself (`{{ value }}` or no template).
    Value,
    /// A path into the payload's JSON (`{{ value_json.a.b }}`).
    Json(Vec<String>),
    /// A template Vigil does not evaluate: the payload is decoded generically.
    Other,
}

/// One entity's reading of a state topic.
#[derive(Debug, Clone)]
struct StateUse {
    entity: String,
    device: DeviceRef,
    metric: String,
    unit: Option<String>,
    reading: Reading,
}

/// One entity's availability configuration.
#[derive(Debug, Clone)]
struct Availability {
    device: DeviceRef,
    /// (topic, payload_available, payload_not_available)
    topics: Vec<(String, String, String)>,
    mode: Mode,
    /// The last known state of each topic.
    last: Vec<Option<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    All,
    Any,
    Latest,
}

/// What discovery configs taught.
#[derive(Debug, Default)]
pub(super) struct HomeAssistant {
    prefix: String,
    /// state topic → the entities reading it
    states: HashMap<String, Vec<StateUse>>,
    /// entity (config topic) → its availability
    availability: HashMap<String, Availability>,
    /// availability topic → entities
    availability_topics: HashMap<String, Vec<String>>,
}

impl HomeAssistant {
    pub(super) fn new(prefix: &str) -> HomeAssistant {
        HomeAssistant {
            prefix: prefix.to_owned(),
            ..HomeAssistant::default()
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        if let Some(rest) = message
            .topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            if rest == "status" {
                return Some(Interpretation::claimed()); // Home Assistant's own birth and will
            }
            if let Some(path) = rest.strip_suffix("/config") {
                return Some(self.config(message.topic, path, message.payload));
            }
        }
        let on_state = self.states.get(message.topic);
        let on_availability = self.availability_topics.get(message.topic);
        if on_state.is_none() && on_availability.is_none() {
            return None;
        }
        let mut owner = None;
        let mut facts = Vec::new();
        if let Some(uses) = on_state {
            let parsed = json(message.payload);
            for u in uses {
                owner.get_or_insert_with(|| u.device.clone());
                let readings: Vec<Metric> = match &u.reading {
                    Reading::Value => number(text(message.payload).unwrap_or(""))
                        .map(|v| Metric::new(u.metric.clone(), v))
                        .into_iter()
                        .collect(),
                    Reading::Json(path) => parsed
                        .as_ref()
                        .and_then(|j| lookup(j, path))
                        .and_then(|v| match v {
                            Value::Number(n) => n.as_f64(),
                            Value::Bool(b) => Some(f64::from(u8::from(*b))),
                            Value::String(s) => number(s),
                            _ => None,
                        })
                        .map(|v| Metric::new(u.metric.clone(), v))
                        .into_iter()
                        .collect(),
                    Reading::Other => super::payload_metrics(&u.metric, message.payload),
                };
                for mut m in readings {
                    if m.value.is_finite() {
                        m.unit.clone_from(&u.unit);
                        facts.push((u.device.clone(), Fact::Metric(m)));
                    }
                }
            }
        }
        if let Some(entities) = on_availability.cloned() {
            let payload = text(message.payload).unwrap_or("");
            for entity in entities {
                let Some(a) = self.availability.get_mut(&entity) else {
                    continue;
                };
                owner.get_or_insert_with(|| a.device.clone());
                let mut changed = false;
                for (k, (topic, available, not_available)) in a.topics.iter().enumerate() {
                    if topic != message.topic {
                        continue;
                    }
                    let state = if payload == available {
                        Some(true)
                    } else if payload == not_available {
                        Some(false)
                    } else {
                        None
                    };
                    if state.is_some() {
                        a.last[k] = state;
                        changed = true;
                    }
                }
                if !changed {
                    continue;
                }
                let online = match a.mode {
                    Mode::All => a.last.iter().all(|s| *s == Some(true)),
                    Mode::Any => a.last.contains(&Some(true)),
                    Mode::Latest => {
                        payload
                            == a.topics
                                .iter()
                                .find(|t| t.0 == message.topic)
                                .map(|t| t.1.as_str())
                                .unwrap_or("")
                    }
                };
                let state = if online {
                    Announced::Online
                } else {
                    Announced::Offline
                };
                let fact = Fact::presence(
                    state,
                    format!("Home Assistant availability {}: {payload}", message.topic),
                );
                if !facts.iter().any(|(d, f)| d == &a.device && f == &fact) {
                    facts.push((a.device.clone(), fact));
                }
            }
        }
        Some(Interpretation {
            owner,
            facts,
            metrics_given: true,
            claimed: true,
        })
    }

    /// A discovery config: learn its topics, describe its device.
    fn config(&mut self, entity: &str, path: &str, payload: &[u8]) -> Interpretation {
        self.forget(entity);
        if payload.is_empty() {
            return Interpretation::claimed(); // the entity was removed
        }
        let Some(Value::Object(raw)) = json(payload) else {
            return Interpretation::claimed();
        };
        let config = expand(raw, ABBREVIATIONS);
        let levels: Vec<&str> = path.split('/').collect();
        let (node_id, object_id) = match levels.as_slice() {
            [_component, object] => (None, *object),
            [_component, node, object] => (Some(*node), *object),
            _ => return Interpretation::claimed(),
        };
        let base = config
            .get("~")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let topic = |v: Option<&Value>| -> Option<String> {
            let t = v?.as_str()?;
            Some(if let Some(rest) = t.strip_prefix('~') {
                format!("{base}{rest}")
            } else if let Some(rest) = t.strip_suffix('~') {
                format!("{rest}{base}")
            } else {
                t.to_owned()
            })
        };
        let state_topic = topic(config.get("state_topic"));
        let mut availability: Vec<(String, String, String)> = Vec::new();
        let default_on = str_of(&config, "payload_available").unwrap_or_else(|| "online".into());
        let default_off =
            str_of(&config, "payload_not_available").unwrap_or_else(|| "offline".into());
        if let Some(t) = topic(config.get("availability_topic")) {
            availability.push((t, default_on.clone(), default_off.clone()));
        }
        if let Some(Value::Array(list)) = config.get("availability") {
            for item in list {
                let Value::Object(item) = item else { continue };
                let item = expand(item.clone(), ABBREVIATIONS);
                if let Some(t) = topic(item.get("topic")) {
                    availability.push((
                        t,
                        str_of(&item, "payload_available").unwrap_or_else(|| default_on.clone()),
                        str_of(&item, "payload_not_available")
                            .unwrap_or_else(|| default_off.clone()),
                    ));
                }
            }
        }
        let native = state_topic
            .iter()
            .chain(availability.iter().map(|a| &a.0))
            .any(|t| NATIVE.iter().any(|p| t.starts_with(p)));
        if native {
            return Interpretation::claimed();
        }

        let device_block = match config.get("device") {
            Some(Value::Object(d)) => Some(expand(d.clone(), DEVICE_ABBREVIATIONS)),
            _ => None,
        };
        let key = device_block
            .as_ref()
            .and_then(|d| match d.get("identifiers") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            })
            .or_else(|| {
                device_block.as_ref().and_then(|d| {
                    let pair = d.get("connections")?.as_array()?.first()?.as_array()?;
                    Some(format!(
                        "{}:{}",
                        pair.first()?.as_str()?,
                        pair.get(1)?.as_str()?
                    ))
                })
            })
            .or_else(|| node_id.map(str::to_owned))
            .or_else(|| str_of(&config, "unique_id"))
            .unwrap_or_else(|| object_id.to_owned());
        let root = state_topic
            .as_deref()
            .and_then(|t| t.rsplit_once('/').map(|(r, _)| r.to_owned()))
            .unwrap_or_else(|| format!("{}/{path}", self.prefix));
        let device = DeviceRef::new(key, Convention::HomeAssistant, root);

        let mut facts = Vec::new();
        if let Some(d) = &device_block {
            let info = DeviceInfo {
                name: str_of(d, "name"),
                model: str_of(d, "model").or_else(|| str_of(d, "model_id")),
                manufacturer: str_of(d, "manufacturer"),
                firmware: str_of(d, "sw_version"),
            };
            if !info.is_empty() {
                facts.push(Fact::Info(info));
            }
        }
        let unit = str_of(&config, "unit_of_measurement");
        let metric = object_id.to_owned();
        if let Some(u) = &unit {
            facts.push(Fact::Unit {
                metric: metric.clone(),
                unit: u.clone(),
            });
        }
        if let Some(after) = config.get("expire_after").and_then(Value::as_f64) {
            if after > 0.0 && after.is_finite() {
                facts.push(Fact::StaleAfter((after * 1e6) as i64));
            }
        }
        if let Some(state_topic) = state_topic {
            let reading = match str_of(&config, "value_template") {
                None => Reading::Value,
                Some(t) => template(&t),
            };
            let uses = self.states.entry(state_topic.clone()).or_default();
            uses.push(StateUse {
                entity: entity.to_owned(),
                device: device.clone(),
                metric,
                unit,
                reading,
            });
            if self.states.len() > super::MAX_LEARNED {
                self.states.clear();
            }
        }
        if !availability.is_empty() {
            let mode = match str_of(&config, "availability_mode").as_deref() {
                Some("all") => Mode::All,
                Some("any") => Mode::Any,
                _ => Mode::Latest,
            };
            for (t, _, _) in &availability {
                let entities = self.availability_topics.entry(t.clone()).or_default();
                if !entities.iter().any(|e| e == entity) {
                    entities.push(entity.to_owned());
                }
            }
            if self.availability_topics.len() > super::MAX_LEARNED {
                self.availability_topics.clear();
            }
            let last = vec![None; availability.len()];
            learn(
                &mut self.availability,
                entity.to_owned(),
                Availability {
                    device: device.clone(),
                    topics: availability,
                    mode,
                    last,
                },
            );
        }
        Interpretation::of(device, facts)
    }

    /// Forgets what an entity's earlier config taught.
    fn forget(&mut self, entity: &str) {
        for uses in self.states.values_mut() {
            uses.retain(|u| u.entity != entity);
        }
        self.states.retain(|_, uses| !uses.is_empty());
        if self.availability.remove(entity).is_some() {
            for entities in self.availability_topics.values_mut() {
                entities.retain(|e| e != entity);
            }
            self.availability_topics.retain(|_, e| !e.is_empty());
        }
    }
}

/// The object with abbreviated keys written out.
fn expand(map: Map<String, Value>, table: &[(&str, &str)]) -> Map<String, Value> {
    map.into_iter()
        .map(|(k, v)| {
            let long = table
                .iter()
                .find(|(short, _)| *short == k)
                .map(|(_, long)| (*long).to_owned())
                .unwrap_or(k);
            (long, v)
        })
        .collect()
}

fn str_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The simple value templates: `{{ value }}`, `{{ value_json.a.b }}`,
/// `{{ value_json['a'] }}`, `{{ value_json["a"][0] }}`, optionally followed
/// by filters (`| float`, `| round(1)`), which do not change the reading.
fn template(t: &str) -> Reading {
    let Some(inner) = t
        .trim()
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
    else {
        return Reading::Other;
    };
    let expr = inner.split('|').next().unwrap_or("").trim();
    if expr == "value" {
        return Reading::Value;
    }
    let Some(mut rest) = expr.strip_prefix("value_json") else {
        return Reading::Other;
    };
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Reading::Other;
            }
            path.push(r[..end].to_owned());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Reading::Other;
            };
            let key = r[..end].trim().trim_matches(|c| c == '\'' || c == '"');
            path.push(key.to_owned());
            rest = &r[end + 1..];
        } else {
            return Reading::Other;
        }
    }
    if path.is_empty() {
        Reading::Other
    } else {
        Reading::Json(path)
    }
}

fn lookup<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        v = match v {
            Value::Object(o) => o.get(key)?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn number(s: &str) -> Option<f64> {
    match s.trim() {
        "ON" | "on" | "true" | "True" => Some(1.0),
        "OFF" | "off" | "false" | "False" => Some(0.0),
        t => t.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::msg;

    fn metrics(i: &Interpretation) -> Vec<(String, f64, Option<String>)> {
        i.facts
            .iter()
            .filter_map(|(_, f)| match f {
                Fact::Metric(m) => Some((m.name.clone(), m.value, m.unit.clone())),
                _ => None,
            })
            .collect()
    }

    /// The temperature and humidity example of Home Assistant's MQTT
    /// discovery documentation: two sensors sharing one JSON state topic.
    #[test]
    fn the_documented_temperature_and_humidity_sensors() {
        let mut ha = HomeAssistant::new("homeassistant");
        let t = br#"{"device_class":"temperature","state_topic":"homeassistant/sensor/sensorBedroom/state","unit_of_measurement":"\u00b0C","value_template":"{{ value_json.temperature}}","unique_id":"temp01ae","device":{"identifiers":["bedroom01ae"],"name":"Bedroom","manufacturer":"Example sensors Ltd.","model":"K9","serial_number":"12AE3010545","hw_version":"1.01a","sw_version":"2024.1.0","configuration_url":"https://example.com/sensor_portal/config"}}"#;
        let i = ha
            .interpret(msg("homeassistant/sensor/sensorBedroomT/config", t))
            .unwrap();
        let owner = i.owner.clone().unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.convention),
            ("bedroom01ae", Convention::HomeAssistant)
        );
        assert!(i.facts.iter().any(|(_, f)| matches!(f, Fact::Info(info) if info.name.as_deref() == Some("Bedroom") && info.model.as_deref() == Some("K9") && info.firmware.as_deref() == Some("2024.1.0"))));
        assert!(i.facts.iter().any(|(_, f)| *f
            == Fact::Unit {
                metric: "sensorBedroomT".into(),
                unit: "°C".into()
            }));
        let h = br#"{"device_class":"humidity","state_topic":"homeassistant/sensor/sensorBedroom/state","unit_of_measurement":"%","value_template":"{{ value_json.humidity}}","unique_id":"hum01ae","device":{"identifiers":["bedroom01ae"]}}"#;
        ha.interpret(msg("homeassistant/sensor/sensorBedroomH/config", h))
            .unwrap();
        let i = ha
            .interpret(msg(
                "homeassistant/sensor/sensorBedroom/state",
                br#"{ "temperature": 23.20, "humidity": 43.70 }"#,
            ))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "bedroom01ae");
        assert_eq!(
            metrics(&i),
            [
                ("sensorBedroomT".into(), 23.2, Some("°C".into())),
                ("sensorBedroomH".into(), 43.7, Some("%".into()))
            ]
        );
        // An empty config removes the entity.
        ha.interpret(msg("homeassistant/sensor/sensorBedroomH/config", b""))
            .unwrap();
        let i = ha
            .interpret(msg(
                "homeassistant/sensor/sensorBedroom/state",
                br#"{"temperature":23,"humidity":44}"#,
            ))
            .unwrap();
        assert_eq!(metrics(&i).len(), 1);
    }

    /// Abbreviations, `~`, an availability list with `availability_mode: all`
    /// and `expire_after`.
    #[test]
    fn abbreviations_base_topic_and_availability() {
        let mut ha = HomeAssistant::new("homeassistant");
        let config = br#"{"~":"clinic/ox7","name":"SpO2","stat_t":"~/state","val_tpl":"{{ value_json['spo2'] | float }}","unit_of_meas":"%","exp_aft":60,
            "avty":[{"t":"~/status"},{"t":"clinic/bridge/status","pl_avail":"up","pl_not_avail":"down"}],"avty_mode":"all",
            "uniq_id":"ox7-spo2","dev":{"ids":"ox7","mf":"Acme","mdl":"PO-2","sw":"1.2"}}"#;
        let i = ha
            .interpret(msg("homeassistant/sensor/clinic/ox7_spo2/config", config))
            .unwrap();
        let owner = i.owner.clone().unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.root.as_str()),
            ("ox7", "clinic/ox7")
        );
        assert!(i
            .facts
            .iter()
            .any(|(_, f)| *f == Fact::StaleAfter(60_000_000)));
        assert!(i.facts.iter().any(
            |(_, f)| matches!(f, Fact::Info(info) if info.manufacturer.as_deref() == Some("Acme"))
        ));
        let i = ha
            .interpret(msg("clinic/ox7/state", br#"{"spo2": 97}"#))
            .unwrap();
        assert_eq!(metrics(&i), [("ox7_spo2".into(), 97.0, Some("%".into()))]);
        // All must be available: one is not enough.
        let i = ha.interpret(msg("clinic/ox7/status", b"online")).unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Offline,
                ..
            }
        ));
        let i = ha.interpret(msg("clinic/bridge/status", b"up")).unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Online,
                ..
            }
        ));
        let i = ha.interpret(msg("clinic/bridge/status", b"down")).unwrap();
        assert!(
            matches!(&i.facts[0].1, Fact::Presence { state: Announced::Offline, reason } if reason.contains("clinic/bridge/status: down"))
        );
        assert!(ha
            .interpret(msg("homeassistant/status", b"online"))
            .unwrap()
            .owner
            .is_none());
    }

    #[test]
    fn native_devices_and_broken_configs_are_left_alone() {
        let mut ha = HomeAssistant::new("homeassistant");
        let z2m = br#"{"state_topic":"zigbee2mqtt/kitchen","value_template":"{{ value_json.temperature }}","device":{"identifiers":["zigbee2mqtt_0x00158d0001dc126a"]}}"#;
        let i = ha
            .interpret(msg(
                "homeassistant/sensor/0x00158d0001dc126a/temperature/config",
                z2m,
            ))
            .unwrap();
        assert!(i.owner.is_none());
        assert!(ha
            .interpret(msg("zigbee2mqtt/kitchen", br#"{"temperature":1}"#))
            .is_none());
        let i = ha
            .interpret(msg("homeassistant/sensor/x/config", b"{not json"))
            .unwrap();
        assert!(i.owner.is_none() && i.claimed);
    }

    #[test]
    fn templates() {
        assert_eq!(template("{{ value }}"), Reading::Value);
        assert_eq!(
            template("{{ value_json.a.b }}"),
            Reading::Json(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            template("{{value_json[\"a\"][0]}}"),
            Reading::Json(vec!["a".into(), "0".into()])
        );
        assert_eq!(
            template("{{ value_json.x | round(1) }}"),
            Reading::Json(vec!["x".into()])
        );
        assert_eq!(template("{% if value %}1{% endif %}"), Reading::Other);
        assert_eq!(template("{{ value_json. }}"), Reading::Other);
    }
}
