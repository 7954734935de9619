//! Device conventions: what a message says about a device beyond its numbers.
//!
//! Devices do not agree on topics. Homie, Home Assistant discovery, Tasmota,
//! Shelly, ESPHome, Zigbee2MQTT and Sparkplug B each have their own layout for
//! a device's data, its description and its presence (birth, last will). The
//! [`Conventions`] interpreter reads every message once and says which device
//! it belongs to and what it tells about that device, as a list of [`Fact`]s.
//! It keeps what discovery messages teach (Home Assistant state and
//! availability topics, Sparkplug metric aliases and `bdSeq`, Zigbee2MQTT's
//! device list) in bounded in-memory tables; the engine rebuilds them at start
//! by feeding it the stored retained messages again.
//!
//! Pure: no I/O, no clock (times come with the message), so every rule is
//! tested with the example messages of the convention's own documentation.

mod esphome;
mod generic;
mod home_assistant;
mod homie;
mod shelly;
mod sparkplug;
mod tasmota;
mod zigbee2mqtt;

use serde::{Deserialize, Serialize};

use crate::decode::Metric;
use crate::time::Micros;

pub use generic::GenericAvailability;

/// Which convention recognised a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// No convention: the device is named by a topic level ([`crate::DeviceRule`]).
    Topic,
    /// A user-defined availability topic ([`GenericAvailability`]).
    Generic,
    /// Homie v4 or v5.
    Homie,
    /// Home Assistant MQTT discovery.
    HomeAssistant,
    /// Tasmota.
    Tasmota,
    /// Shelly Gen1 or Gen2+.
    Shelly,
    /// ESPHome.
    Esphome,
    /// Zigbee2MQTT.
    Zigbee2mqtt,
    /// Sparkplug B.
    Sparkplug,
    /// CoAP (the CoAP issue fills this in).
    Coap,
}

impl Convention {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Topic => "topic",
            Convention::Generic => "generic",
            Convention::Homie => "homie",
            Convention::HomeAssistant => "home_assistant",
            Convention::Tasmota => "tasmota",
            Convention::Shelly => "shelly",
            Convention::Esphome => "esphome",
            Convention::Zigbee2mqtt => "zigbee2mqtt",
            Convention::Sparkplug => "sparkplug",
            Convention::Coap => "coap",
        }
    }

    /// The inverse of [`Convention::as_str`].
    pub fn parse(s: &str) -> Option<Convention> {
        Some(match s {
            "topic" => Convention::Topic,
            "generic" => Convention::Generic,
            "homie" => Convention::Homie,
            "home_assistant" => Convention::HomeAssistant,
            "tasmota" => Convention::Tasmota,
            "shelly" => Convention::Shelly,
            "esphome" => Convention::Esphome,
            "zigbee2mqtt" => Convention::Zigbee2mqtt,
            "sparkplug" => Convention::Sparkplug,
            "coap" => Convention::Coap,
            _ => return None,
        })
    }
}

/// A device as a convention names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DeviceRef {
    /// The device's key: the convention's own id for it (Homie device id,
    /// Tasmota topic, Shelly id, ESPHome node name, Zigbee2MQTT friendly name,
    /// Home Assistant device identifier, Sparkplug `group/node[/device]`).
    /// Unique across conventions in practice; it is the device's id in the API.
    pub key: String,
    /// Who recognised it.
    pub convention: Convention,
    /// The topic prefix under which the device publishes (for the device
    /// page and for commands), e.g. `homie/thermostat` or `tele/plug1`.
    pub root: String,
}

/// What a device says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Human name given by the device or its convention.
    pub name: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Firmware or software version.
    pub firmware: Option<String>,
}

impl DeviceInfo {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.model.is_none()
            && self.manufacturer.is_none()
            && self.firmware.is_none()
    }
}

/// Presence as a device (or its last will) announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Announced {
    /// Alive (`ready`, `online`, `Online`, `true`, a birth certificate).
    Online,
    /// Gone (`offline`, `lost`, `disconnected`, a last will, a death certificate).
    Offline,
    /// Expected to be quiet (Homie `sleeping`).
    Sleeping,
}

/// One thing a message tells about one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    /// The device describes itself.
    Info(DeviceInfo),
    /// The device announces its presence. `reason` says in words what was
    /// heard, for the presence history: "Tasmota LWT: Offline",
    /// "Homie $state: sleeping", "Sparkplug NDEATH (bdSeq 3)".
    Presence {
        /// The announced state.
        state: Announced,
        /// What was heard.
        reason: String,
    },
    /// A numeric reading (with its unit when the convention gives one).
    Metric(Metric),
    /// A metric's unit, declared by discovery before any reading arrives.
    Unit {
        /// The metric name, as [`Fact::Metric`] will name it.
        metric: String,
        /// The unit (`°C`, `%`, `W`).
        unit: String,
    },
    /// How long the device may stay silent before it is stale (Home
    /// Assistant `expire_after`), in microseconds.
    StaleAfter(Micros),
    /// Every metric of the device is stale now (Sparkplug death).
    MetricsStale,
}

/// What one message means.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Interpretation {
    /// The device the message is stored under. `None`: no convention claims
    /// it, and the engine falls back to its topic rule.
    pub owner: Option<DeviceRef>,
    /// Facts about devices: usually the owner, sometimes others (a
    /// Zigbee2MQTT device list describes every device; a Sparkplug node's
    /// death makes its devices offline too).
    pub facts: Vec<(DeviceRef, Fact)>,
    /// Whether the owner's readings are all in `facts` (`true`), or the
    /// engine should decode the payload generically (`false`).
    pub metrics_given: bool,
    /// Whether a convention recognised the message. One that did, with no
    /// owner, belongs to no device (a command to every device, a broker's
    /// status); one that none did falls back to the engine's topic rule.
    pub claimed: bool,
}

/// A message, as the interpreter sees it.
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// When it arrived.
    pub at: Micros,
    /// Its topic.
    pub topic: &'a str,
    /// Its payload, whole.
    pub payload: &'a [u8],
    /// Whether it was published retained (or restored from the store's
    /// retained messages at start).
    pub retain: bool,
    /// The publishing client, when known.
    pub client_id: Option<&'a str>,
}

/// Which conventions are on, and their prefixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConventionsConfig {
    /// Home Assistant discovery prefix.
    pub home_assistant_prefix: String,
    /// Zigbee2MQTT base topic.
    pub zigbee2mqtt_prefix: String,
    /// Homie base topic.
    pub homie_prefix: String,
    /// Conventions switched off by the user (by [`Convention::as_str`] name).
    pub disabled: Vec<String>,
    /// User-defined availability topics.
    pub generic: Vec<GenericAvailability>,
}

impl Default for ConventionsConfig {
    fn default() -> Self {
        ConventionsConfig {
            home_assistant_prefix: "homeassistant".into(),
            zigbee2mqtt_prefix: "zigbee2mqtt".into(),
            homie_prefix: "homie".into(),
            disabled: Vec::new(),
            generic: Vec::new(),
        }
    }
}

impl ConventionsConfig {
    /// Checks the generic rules and the disabled names; the error says what
    /// is wrong in words.
    pub fn validate(&self) -> Result<(), String> {
        for name in &self.disabled {
            if Convention::parse(name).is_none() {
                return Err(format!(
                    "conventions.disabled: unknown convention '{name}' (known: generic, homie, home_assistant, tasmota, shelly, esphome, zigbee2mqtt, sparkplug)"
                ));
            }
        }
        for rule in &self.generic {
            rule.validate()?;
        }
        Ok(())
    }

    fn enabled(&self, c: Convention) -> bool {
        !self.disabled.iter().any(|d| d == c.as_str())
    }
}

/// How many entries each learned table may hold. A table that is full is
/// emptied and learned again from the messages that follow (discovery
/// messages are retained and repeated), so a flood of discovery messages
/// cannot grow memory without bound.
pub const MAX_LEARNED: usize = 100_000;

/// Inserts into a learned table, emptying it first when it is full.
pub(crate) fn learn<K: std::hash::Hash + Eq, V>(
    table: &mut std::collections::HashMap<K, V>,
    key: K,
    value: V,
) {
    if table.len() >= MAX_LEARNED && !table.contains_key(&key) {
        table.clear();
    }
    table.insert(key, value);
}

/// A payload as trimmed UTF-8 text.
pub(crate) fn text(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload).ok().map(str::trim)
}

/// A payload as JSON, if it is.
pub(crate) fn json(payload: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(payload).ok()
}

/// The readings of a payload decoded generically, each named `prefix` +
/// `.` + its path (or `prefix` alone for a scalar payload).
pub(crate) fn payload_metrics(prefix: &str, payload: &[u8]) -> Vec<Metric> {
    crate::decode::decode_payload(payload)
        .metrics
        .into_iter()
        .map(|mut m| {
            m.name = crate::decode::metric_name(prefix, &m.name);
            m
        })
        .collect()
}

impl DeviceRef {
    pub(crate) fn new(
        key: impl Into<String>,
        convention: Convention,
        root: impl Into<String>,
    ) -> DeviceRef {
        DeviceRef {
            key: key.into(),
            convention,
            root: root.into(),
        }
    }
}

impl Interpretation {
    /// A message of `owner`'s with these facts; readings given by the convention.
    pub(crate) fn of(owner: DeviceRef, facts: Vec<Fact>) -> Interpretation {
        Interpretation {
            facts: facts.into_iter().map(|f| (owner.clone(), f)).collect(),
            owner: Some(owner),
            metrics_given: true,
            claimed: true,
        }
    }

    /// A message the convention recognises that belongs to no device (a
    /// command to all devices, a broker-wide status).
    pub(crate) fn claimed() -> Interpretation {
        Interpretation {
            owner: None,
            facts: Vec::new(),
            metrics_given: true,
            claimed: true,
        }
    }
}

impl Fact {
    pub(crate) fn presence(state: Announced, reason: impl Into<String>) -> Fact {
        Fact::Presence {
            state,
            reason: reason.into(),
        }
    }
}

/// The interpreter: one per engine, fed every message in arrival order.
#[derive(Debug)]
pub struct Conventions {
    /// The enabled conventions, in the order they are tried (see `interpret`).
    order: Vec<Convention>,
    generic: generic::Generic,
    homie: homie::Homie,
    home_assistant: home_assistant::HomeAssistant,
    tasmota: tasmota::Tasmota,
    shelly: shelly::Shelly,
    esphome: esphome::Esphome,
    zigbee2mqtt: zigbee2mqtt::Zigbee2mqtt,
    sparkplug: sparkplug::Sparkplug,
}

impl Conventions {
    /// An interpreter that knows nothing yet.
    pub fn new(config: ConventionsConfig) -> Conventions {
        Conventions {
            generic: generic::Generic::new(&config.generic),
            homie: homie::Homie::new(&config.homie_prefix),
            home_assistant: home_assistant::HomeAssistant::new(&config.home_assistant_prefix),
            tasmota: tasmota::Tasmota::default(),
            shelly: shelly::Shelly::default(),
            esphome: esphome::Esphome::default(),
            zigbee2mqtt: zigbee2mqtt::Zigbee2mqtt::new(&config.zigbee2mqtt_prefix),
            sparkplug: sparkplug::Sparkplug::default(),
            order: [
                Convention::Generic,
                Convention::Sparkplug,
                Convention::Homie,
                Convention::HomeAssistant,
                Convention::Zigbee2mqtt,
                Convention::Tasmota,
                Convention::Shelly,
                Convention::Esphome,
            ]
            .into_iter()
            .filter(|c| config.enabled(*c))
            .collect(),
        }
    }

    /// What `message` means. The first convention that claims the message
    /// wins. The order: the user's own rules; conventions with a fixed prefix
    /// (`spBv1.0/`, `homie/`); Home Assistant (its `<prefix>/.../config`
    /// topics, then the state and availability topics its configs taught;
    /// it leaves configs about native devices of the conventions below
    /// alone, so one physical device is one record); Zigbee2MQTT and Tasmota
    /// (fixed prefixes); then the loose shapes that are only claimed once a
    /// device has announced itself: Shelly Gen2 (`<prefix>/online`) and
    /// ESPHome (`<node>/status`).
    pub fn interpret(&mut self, message: MessageRef<'_>) -> Interpretation {
        for &convention in &self.order {
            let found = match convention {
                Convention::Generic => self.generic.interpret(message),
                Convention::Sparkplug => self.sparkplug.interpret(message),
                Convention::Homie => self.homie.interpret(message),
                Convention::HomeAssistant => self.home_assistant.interpret(message),
                Convention::Zigbee2mqtt => self.zigbee2mqtt.interpret(message),
                Convention::Tasmota => self.tasmota.interpret(message),
                Convention::Shelly => self.shelly.interpret(message),
                Convention::Esphome => self.esphome.interpret(message),
                Convention::Topic | Convention::Coap => None,
            };
            if let Some(i) = found {
                return i;
            }
        }
        Interpretation::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutated topics and payloads of every convention never panic, and
    /// every reading is finite.
    #[test]
    fn random_messages_never_panic() {
        let seeds: [(&str, &[u8]); 10] = [
            ("homie/dev/$state", b"ready"),
            ("homie/5/dev/$description", br#"{"name":"x","nodes":{"n":{"properties":{"p":{"unit":"C"}}}}}"#),
            ("homeassistant/sensor/n/o/config", br#"{"~":"a/b","stat_t":"~/s","val_tpl":"{{ value_json.t }}","avty":[{"t":"~/a"}],"dev":{"ids":["d"]}}"#),
            ("a/b/s", br#"{"t":1.5}"#),
            ("tele/plug/SENSOR", br#"{"ENERGY":{"Power":4}}"#),
            ("tasmota/discovery/AA/config", br#"{"t":"plug","dn":"x"}"#),
            ("zigbee2mqtt/bridge/devices", br#"[{"friendly_name":"a/b","definition":{"exposes":[{"property":"t","unit":"C"}]}}]"#),
            ("zigbee2mqtt/a/b", br#"{"t":2}"#),
            ("shellyplus1-1/online", b"true"),
            ("node/status", b"online"),
        ];
        let mut c = Conventions::new(ConventionsConfig {
            generic: vec![GenericAvailability {
                topic: "g/+/avail".into(),
                online: vec!["1".into()],
                offline: vec!["0".into()],
                sleeping: vec![],
            }],
            ..ConventionsConfig::default()
        });
        let mut rng = crate::testing::Rng::new(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next();
        for round in 0..30_000u64 {
            let (topic, payload) = seeds[(round % seeds.len() as u64) as usize];
            let mut t = topic.as_bytes().to_vec();
            let mut p = payload.to_vec();
            for _ in 0..(next() % 3) {
                let target = if next() % 2 == 0 { &mut t } else { &mut p };
                let at = (next() as usize) % (target.len() + 1);
                match next() % 3 {
                    0 => target.insert(at, b"/+$#{}\"01"[(next() % 9) as usize]),
                    1 if at < target.len() => target[at] = next() as u8,
                    _ if at < target.len() => {
                        target.remove(at);
                    }
                    _ => {}
                }
            }
            let topic = String::from_utf8_lossy(&t);
            let i = c.interpret(MessageRef {
                at: round as i64,
                topic: &topic,
                payload: &p,
                retain: next() % 2 == 0,
                client_id: None,
            });
            for (_, f) in &i.facts {
                if let Fact::Metric(m) = f {
                    assert!(m.value.is_finite(), "{topic} {p:?}");
                }
            }
        }
    }

    #[test]
    fn each_convention_can_be_switched_off() {
        let mut c = Conventions::new(ConventionsConfig {
            disabled: vec!["tasmota".into()],
            ..ConventionsConfig::default()
        });
        let m = MessageRef {
            at: 1,
            topic: "tele/plug/LWT",
            payload: b"Online",
            retain: true,
            client_id: None,
        };
        assert!(c.interpret(m).owner.is_none());
        assert!(ConventionsConfig {
            disabled: vec!["tasmotta".into()],
            ..ConventionsConfig::default()
        }
        .validate()
        .unwrap_err()
        .contains("tasmotta"));
    }
}
