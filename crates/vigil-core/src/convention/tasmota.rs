//! Tasmota (<https://tasmota.github.io/docs/MQTT/>), with its default full
//! topic `%prefix%/%topic%/`: `tele/<topic>/LWT` (`Online` / `Offline`, or
//! the payloads its discovery message names), `tele/<topic>/STATE` and
//! `SENSOR` (JSON), `stat/<topic>/...` (results), `cmnd/<topic>/...`
//! (commands), and the discovery messages `tasmota/discovery/<MAC>/config`
//! and `.../sensors`, which say which topic the device with that MAC uses.

use std::collections::HashMap;

use serde_json::Value;

use super::{
    json, learn, text, Announced, Convention, DeviceInfo, DeviceRef, Fact, Interpretation,
    MessageRef,
};
use crate::decode::Metric;

/// Units of Tasmota's ENERGY readings.
const ENERGY_UNITS: &[(&str, &str)] = &[
    ("Total", "kWh"),
    ("Yesterday", "kWh"),
    ("Today", "kWh"),
    ("Power", "W"),
    ("ApparentPower", "VA"),
    ("ReactivePower", "var"),
    ("Voltage", "V"),
    ("Current", "A"),
    ("Frequency", "Hz"),
];

/// What discovery has taught: each device's topic by MAC, and its LWT
/// payloads when they are not the defaults.
#[derive(Debug, Default)]
pub(super) struct Tasmota {
    topic_of_mac: HashMap<String, String>,
    lwt: HashMap<String, (String, String)>,
}

impl Tasmota {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let mut levels = message.topic.splitn(3, '/');
        let (first, second, rest) = (levels.next()?, levels.next()?, levels.next());
        if first == "tasmota" && second == "discovery" {
            return Some(self.discovery(rest?, message.payload));
        }
        if !matches!(first, "tele" | "stat" | "cmnd") || second.is_empty() {
            return None;
        }
        let rest = rest?;
        let owner = DeviceRef::new(second, Convention::Tasmota, format!("tele/{second}"));
        let facts = match (first, rest) {
            ("tele", "LWT") => {
                let payload = text(message.payload).unwrap_or("");
                let (online, offline) = self
                    .lwt
                    .get(second)
                    .map(|(on, off)| (on.as_str(), off.as_str()))
                    .unwrap_or(("Online", "Offline"));
                let state = if payload == online {
                    Announced::Online
                } else if payload == offline {
                    Announced::Offline
                } else {
                    return Some(Interpretation::of(owner, Vec::new()));
                };
                vec![Fact::presence(state, format!("Tasmota LWT: {payload}"))]
            }
            ("tele", "SENSOR" | "STATE")
            | ("stat", "RESULT" | "STATUS8" | "STATUS10" | "STATUS11") => {
                match json(message.payload) {
                    Some(Value::Object(map)) => readings(&map, message.payload),
                    _ => Vec::new(),
                }
            }
            ("stat", power) if power.starts_with("POWER") => {
                let value = match text(message.payload) {
                    Some("ON") => Some(1.0),
                    Some("OFF") => Some(0.0),
                    _ => None,
                };
                value
                    .map(|v| Fact::Metric(Metric::new(power, v)))
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        };
        Some(Interpretation::of(owner, facts))
    }

    fn discovery(&mut self, rest: &str, payload: &[u8]) -> Interpretation {
        let (mac, kind) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(Value::Object(config)) = json(payload) else {
            return Interpretation::claimed();
        };
        match kind {
            "config" => {
                let Some(topic) = config.get("t").and_then(Value::as_str) else {
                    return Interpretation::claimed();
                };
                learn(&mut self.topic_of_mac, mac.to_owned(), topic.to_owned());
                let s = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_owned);
                if let (Some(on), Some(off)) = (s("onln"), s("ofln")) {
                    learn(&mut self.lwt, topic.to_owned(), (on, off));
                }
                let friendly = config
                    .get("fn")
                    .and_then(Value::as_array)
                    .and_then(|names| names.first())
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let info = DeviceInfo {
                    name: s("dn").or(friendly),
                    model: s("md"),
                    manufacturer: None,
                    firmware: s("sw"),
                };
                let owner = DeviceRef::new(topic, Convention::Tasmota, format!("tele/{topic}"));
                Interpretation::of(owner, vec![Fact::Info(info)])
            }
            "sensors" => match self.topic_of_mac.get(mac) {
                Some(topic) => {
                    let owner =
                        DeviceRef::new(topic.clone(), Convention::Tasmota, format!("tele/{topic}"));
                    Interpretation::of(owner, Vec::new())
                }
                None => Interpretation::claimed(),
            },
            _ => Interpretation::claimed(),
        }
    }
}

/// The numbers of a SENSOR or STATE message, with the units Tasmota
/// implies: ENERGY's, and `TempUnit` / `PressureUnit` for every reading
/// whose name says temperature, dew point or pressure.
fn readings(map: &serde_json::Map<String, Value>, payload: &[u8]) -> Vec<Fact> {
    let temp_unit = map
        .get("TempUnit")
        .and_then(Value::as_str)
        .map(|u| format!("°{u}"));
    let pressure_unit = map
        .get("PressureUnit")
        .and_then(Value::as_str)
        .map(str::to_owned);
    super::payload_metrics("", payload)
        .into_iter()
        .map(|mut m| {
            let leaf = m.name.rsplit('.').next().unwrap_or("");
            m.unit = if m.name.starts_with("ENERGY.") {
                ENERGY_UNITS
                    .iter()
                    .find(|(k, _)| *k == leaf)
                    .map(|(_, u)| (*u).to_owned())
            } else if leaf == "Temperature" || leaf == "DewPoint" {
                temp_unit.clone()
            } else if leaf == "Pressure" || leaf == "SeaPressure" {
                pressure_unit.clone()
            } else if leaf == "Humidity" {
                Some("%".to_owned())
            } else {
                None
            };
            Fact::Metric(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{metric, msg};

    /// Messages as Tasmota's documentation shows them (MQTT, Power
    /// monitoring and Home Assistant pages).
    #[test]
    fn lwt_state_sensor_and_discovery() {
        let mut t = Tasmota::default();
        let i = t
            .interpret(msg("tele/tasmota_D0A1B2/LWT", b"Online"))
            .unwrap();
        let owner = i.owner.clone().unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.convention),
            ("tasmota_D0A1B2", Convention::Tasmota)
        );
        assert_eq!(
            i.facts[0].1,
            Fact::presence(Announced::Online, "Tasmota LWT: Online")
        );

        let sensor = br#"{"Time":"2021-01-01T00:00:00","ENERGY":{"TotalStartTime":"2021-01-01T00:00:00","Total":0.003,"Yesterday":0.000,"Today":0.003,"Power":45,"ApparentPower":50,"ReactivePower":20,"Factor":0.90,"Voltage":230,"Current":0.196}}"#;
        let i = t
            .interpret(msg("tele/tasmota_D0A1B2/SENSOR", sensor))
            .unwrap();
        let power = metric(&i, "ENERGY.Power").unwrap();
        assert_eq!((power.value, power.unit.as_deref()), (45.0, Some("W")));
        assert_eq!(
            metric(&i, "ENERGY.Total").unwrap().unit.as_deref(),
            Some("kWh")
        );
        assert_eq!(metric(&i, "ENERGY.Factor").unwrap().unit, None);
        assert!(metric(&i, "Time").is_none());

        let climate = br#"{"Time":"2021-01-01T00:00:00","AM2301":{"Temperature":21.3,"Humidity":45.1,"DewPoint":9.1},"TempUnit":"C"}"#;
        let i = t
            .interpret(msg("tele/tasmota_D0A1B2/SENSOR", climate))
            .unwrap();
        assert_eq!(
            metric(&i, "AM2301.Temperature").unwrap().unit.as_deref(),
            Some("°C")
        );
        assert_eq!(
            metric(&i, "AM2301.Humidity").unwrap().unit.as_deref(),
            Some("%")
        );

        let state = br#"{"Time":"2021-01-01T00:00:00","Uptime":"0T00:00:15","UptimeSec":15,"Heap":26,"POWER":"ON","Wifi":{"AP":1,"SSId":"home","RSSI":100,"Signal":-44}}"#;
        let i = t
            .interpret(msg("tele/tasmota_D0A1B2/STATE", state))
            .unwrap();
        assert_eq!(metric(&i, "POWER").unwrap().value, 1.0);
        assert_eq!(metric(&i, "Wifi.RSSI").unwrap().value, 100.0);

        let i = t
            .interpret(msg("stat/tasmota_D0A1B2/POWER", b"OFF"))
            .unwrap();
        assert_eq!(metric(&i, "POWER").unwrap().value, 0.0);
        let i = t
            .interpret(msg("cmnd/tasmota_D0A1B2/POWER", b"TOGGLE"))
            .unwrap();
        assert!(i.facts.is_empty());

        let config = br#"{"ip":"192.168.1.20","dn":"Kitchen plug","fn":["Kitchen plug",null],"hn":"tasmota-D0A1B2","mac":"DC4F22D0A1B2","md":"Sonoff Basic","ty":0,"if":0,"ofln":"Gone","onln":"Here","state":["OFF","ON","TOGGLE","HOLD"],"sw":"12.1.1","t":"tasmota_D0A1B2","ft":"%prefix%/%topic%/","tp":["cmnd","stat","tele"],"rl":[1,0,0,0,0,0,0,0],"swc":[-1,-1,-1,-1,-1,-1,-1,-1],"swn":[null,null,null,null,null,null,null,null],"btn":[0,0,0,0,0,0,0,0],"so":{"4":0,"11":0,"13":0,"17":0,"20":0,"30":0,"68":0,"73":0,"82":0,"114":0,"117":0},"lk":0,"lt_st":0,"sho":[0,0,0,0],"ver":1}"#;
        let i = t
            .interpret(msg("tasmota/discovery/DC4F22D0A1B2/config", config))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "tasmota_D0A1B2");
        assert_eq!(
            i.facts[0].1,
            Fact::Info(DeviceInfo {
                name: Some("Kitchen plug".into()),
                model: Some("Sonoff Basic".into()),
                manufacturer: None,
                firmware: Some("12.1.1".into()),
            })
        );
        let i = t
            .interpret(msg(
                "tasmota/discovery/DC4F22D0A1B2/sensors",
                br#"{"sn":{"Time":"x"},"ver":1}"#,
            ))
            .unwrap();
        assert_eq!(i.owner.unwrap().key, "tasmota_D0A1B2");
        // The discovery's own LWT payloads now apply.
        let i = t
            .interpret(msg("tele/tasmota_D0A1B2/LWT", b"Gone"))
            .unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Offline,
                ..
            }
        ));
        assert!(t.interpret(msg("tele", b"x")).is_none());
        assert!(t.interpret(msg("kitchen/temp", b"1")).is_none());
    }
}
