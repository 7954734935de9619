//! Shelly. Gen1 (<https://shelly-api-docs.shelly.cloud/gen1/#mqtt-support>):
//! `shellies/<id>/online` (`true` birth, `false` last will), `shellies/announce`
//! and `shellies/<id>/announce` (id, model, mac, fw_ver), readings on
//! `shellies/<id>/relay/0`, `.../relay/0/power`, `.../sensor/temperature`, ...;
//! `shellies/command` (`announce`, `update`) addresses every device.
//! Gen2+ (<https://shelly-api-docs.shelly.cloud/gen2/General/Notifications>):
//! `<prefix>/online` (`true` / `false`), `<prefix>/status/<component:id>`
//! (JSON) and `<prefix>/events/rpc` (`NotifyStatus`). The Gen2 prefix is the
//! user's choice, so a prefix is learned from its `online` message (`true` or
//! `false` exactly) and only then are its other topics claimed.

use std::collections::HashSet;

use serde_json::Value;

use super::{
    json, text, Announced, Convention, DeviceInfo, DeviceRef, Fact, Interpretation, MessageRef,
};
use crate::decode::Metric;

/// Units of Gen1 and Gen2 readings, by the last part of their name.
const UNITS: &[(&str, &str)] = &[
    ("power", "W"),
    ("apower", "W"),
    ("voltage", "V"),
    ("current", "A"),
    ("temperature", "°C"),
    ("tC", "°C"),
    ("tF", "°F"),
    ("humidity", "%"),
    ("rh", "%"),
    ("freq", "Hz"),
];

/// Gen2 prefixes heard on `<prefix>/online`.
#[derive(Debug, Default)]
pub(super) struct Shelly {
    gen2: HashSet<String>,
}

impl Shelly {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        if let Some(rest) = message.topic.strip_prefix("shellies/") {
            return Some(gen1(rest, message.payload));
        }
        let (prefix, rest) = message.topic.split_once('/')?;
        if prefix.is_empty() {
            return None;
        }
        let owner = DeviceRef::new(prefix, Convention::Shelly, prefix);
        if rest == "online" {
            let state = match text(message.payload)? {
                "true" => Announced::Online,
                "false" => Announced::Offline,
                _ => return None,
            };
            if self.gen2.len() >= super::MAX_LEARNED {
                self.gen2.clear();
            }
            self.gen2.insert(prefix.to_owned());
            let word = if state == Announced::Online {
                "true"
            } else {
                "false"
            };
            return Some(Interpretation::of(
                owner,
                vec![Fact::presence(state, format!("Shelly online: {word}"))],
            ));
        }
        if !self.gen2.contains(prefix) {
            return None;
        }
        let facts = if let Some(component) = rest.strip_prefix("status/") {
            readings(component, message.payload)
        } else if rest == "events/rpc" {
            match json(message.payload) {
                Some(event)
                    if matches!(
                        event.get("method").and_then(Value::as_str),
                        Some("NotifyStatus" | "NotifyFullStatus")
                    ) =>
                {
                    let params = event.get("params").and_then(Value::as_object);
                    params
                        .into_iter()
                        .flatten()
                        .filter(|(k, v)| k.contains(':') && v.is_object())
                        .flat_map(|(k, v)| readings(k, v.to_string().as_bytes()))
                        .collect()
                }
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        Some(Interpretation::of(owner, facts))
    }
}

fn gen1(rest: &str, payload: &[u8]) -> Interpretation {
    if rest == "announce" {
        return announce(payload);
    }
    if rest == "command" {
        return Interpretation::claimed();
    }
    let Some((id, what)) = rest.split_once('/') else {
        return Interpretation::claimed();
    };
    let owner = DeviceRef::new(id, Convention::Shelly, format!("shellies/{id}"));
    let facts = match what {
        "online" => match text(payload) {
            Some("true") => vec![Fact::presence(Announced::Online, "Shelly online: true")],
            Some("false") => vec![Fact::presence(Announced::Offline, "Shelly online: false")],
            _ => Vec::new(),
        },
        "announce" => return announce(payload),
        "info" | "command" => Vec::new(),
        w if w.ends_with("/command") || w.contains("/command/") => Vec::new(),
        w => {
            let value = match text(payload) {
                Some("on") => Some(1.0),
                Some("off") => Some(0.0),
                Some(t) => t.parse::<f64>().ok().filter(|v| v.is_finite()),
                None => None,
            };
            value
                .map(|v| {
                    let mut m = Metric::new(w, v);
                    m.unit = unit(w);
                    Fact::Metric(m)
                })
                .into_iter()
                .collect()
        }
    };
    Interpretation::of(owner, facts)
}

fn announce(payload: &[u8]) -> Interpretation {
    let Some(Value::Object(a)) = json(payload) else {
        return Interpretation::claimed();
    };
    let Some(id) = a.get("id").and_then(Value::as_str) else {
        return Interpretation::claimed();
    };
    let s = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
    let owner = DeviceRef::new(id, Convention::Shelly, format!("shellies/{id}"));
    let info = DeviceInfo {
        name: None,
        model: s("model"),
        manufacturer: Some("Shelly".into()),
        firmware: s("fw_ver"),
    };
    Interpretation::of(owner, vec![Fact::Info(info)])
}

/// A Gen2 component's status: its numbers, named `<component:id>.<path>`.
fn readings(component: &str, payload: &[u8]) -> Vec<Fact> {
    super::payload_metrics(component, payload)
        .into_iter()
        .filter(|m| !m.name.ends_with(".id"))
        .map(|mut m| {
            m.unit = unit(&m.name);
            Fact::Metric(m)
        })
        .collect()
}

fn unit(name: &str) -> Option<String> {
    let leaf = name.rsplit(['/', '.']).next().unwrap_or(name);
    if name.ends_with("aenergy.total") || name.ends_with("/energy") {
        return Some(
            if name.ends_with("/energy") {
                "Wmin"
            } else {
                "Wh"
            }
            .to_owned(),
        );
    }
    UNITS
        .iter()
        .find(|(k, _)| *k == leaf)
        .map(|(_, u)| (*u).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{metric, msg};

    /// Gen1 messages as in Shelly's Gen1 API documentation.
    #[test]
    fn gen1() {
        let mut s = Shelly::default();
        let i = s
            .interpret(msg("shellies/shelly1pm-84CCA8A11234/online", b"true"))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "shelly1pm-84CCA8A11234");
        assert_eq!(
            i.facts[0].1,
            Fact::presence(Announced::Online, "Shelly online: true")
        );
        let announce = br#"{"id":"shelly1pm-84CCA8A11234","model":"SHSW-PM","mac":"84CCA8A11234","ip":"192.168.1.30","new_fw":false,"fw_ver":"20230913-114003/v1.14.0-gcb84623"}"#;
        let i = s.interpret(msg("shellies/announce", announce)).unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "shelly1pm-84CCA8A11234");
        assert!(
            matches!(&i.facts[0].1, Fact::Info(info) if info.model.as_deref() == Some("SHSW-PM"))
        );
        let i = s
            .interpret(msg(
                "shellies/shelly1pm-84CCA8A11234/relay/0/power",
                b"45.2",
            ))
            .unwrap();
        let m = metric(&i, "relay/0/power").unwrap();
        assert_eq!((m.value, m.unit.as_deref()), (45.2, Some("W")));
        let i = s
            .interpret(msg("shellies/shelly1pm-84CCA8A11234/relay/0", b"on"))
            .unwrap();
        assert_eq!(metric(&i, "relay/0").unwrap().value, 1.0);
        let i = s
            .interpret(msg(
                "shellies/shelly1pm-84CCA8A11234/relay/0/command",
                b"off",
            ))
            .unwrap();
        assert!(i.facts.is_empty());
        let i = s.interpret(msg("shellies/command", b"announce")).unwrap();
        assert!(i.claimed && i.owner.is_none());
        let i = s
            .interpret(msg("shellies/shelly1pm-84CCA8A11234/online", b"false"))
            .unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Offline,
                ..
            }
        ));
    }

    /// Gen2 messages as in Shelly's Gen2 MQTT documentation.
    #[test]
    fn gen2() {
        let mut s = Shelly::default();
        let status = br#"{"id":0,"source":"init","output":true,"apower":8.9,"voltage":237.5,"current":0.068,"aenergy":{"total":6.532,"by_minute":[45.199,47.141,88.397],"minute_ts":1654511972},"temperature":{"tC":23.5,"tF":74.4}}"#;
        assert!(
            s.interpret(msg("shellyplus1pm-a8032ab12345/status/switch:0", status))
                .is_none(),
            "not before its online message"
        );
        let i = s
            .interpret(msg("shellyplus1pm-a8032ab12345/online", b"true"))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "shellyplus1pm-a8032ab12345");
        let i = s
            .interpret(msg("shellyplus1pm-a8032ab12345/status/switch:0", status))
            .unwrap();
        assert_eq!(
            metric(&i, "switch:0.apower").unwrap().unit.as_deref(),
            Some("W")
        );
        assert_eq!(
            metric(&i, "switch:0.aenergy.total")
                .unwrap()
                .unit
                .as_deref(),
            Some("Wh")
        );
        assert_eq!(
            metric(&i, "switch:0.temperature.tC")
                .unwrap()
                .unit
                .as_deref(),
            Some("°C")
        );
        assert_eq!(metric(&i, "switch:0.output").unwrap().value, 1.0);
        assert!(metric(&i, "switch:0.id").is_none());
        let rpc = br#"{"src":"shellyplus1pm-a8032ab12345","dst":"shellyplus1pm-a8032ab12345/events","method":"NotifyStatus","params":{"ts":1654512000.5,"switch:0":{"id":0,"apower":12.5}}}"#;
        let i = s
            .interpret(msg("shellyplus1pm-a8032ab12345/events/rpc", rpc))
            .unwrap();
        assert_eq!(metric(&i, "switch:0.apower").unwrap().value, 12.5);
        assert!(s.interpret(msg("somedevice/online", b"yes")).is_none());
    }
}
