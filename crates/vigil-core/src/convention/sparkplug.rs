//! Sparkplug B (Eclipse Sparkplug 3.0): `spBv1.0/<group>/<type>/<edge node>[/<device>]`.
//!
//! Devices: an edge node is `<group>/<node>`, a device behind it
//! `<group>/<node>/<device>`; the root is `spBv1.0/<group>/+/<node>[/<device>]`
//! (the message type is the level that varies).
//!
//! - Births (`NBIRTH`, `DBIRTH`) announce the node or device online and name
//!   its metrics: their aliases, datatypes and units (the `engUnit`
//!   property) are learned, since data messages usually send only the alias
//!   and the value (and no datatype, which signed integers need).
//! - Data (`NDATA`, `DDATA`) and births give readings, named by the metric's
//!   name (an alias no birth has named is `alias N`). Protocol metrics
//!   (`bdSeq`, `Node Control/*`, `Device Control/*`) and values that are no
//!   number (strings, datasets, templates, DateTime, nulls) are not readings.
//! - `NDEATH` (the node's last will) takes the node and every device seen
//!   behind it offline, and their metrics go stale; it counts only if its
//!   `bdSeq` matches the one of the node's last birth, since a late will of
//!   an earlier session must not mark the new one offline (the message is
//!   still the node's, with no fact). When no birth has been seen (Vigil
//!   started after it) or either side has no `bdSeq`, the death counts.
//! - `DDEATH` takes that device offline, its metrics stale.
//! - Commands (`NCMD`, `DCMD`) are the device's messages with no facts.
//! - A payload that is not valid Sparkplug is still the device's message
//!   (stored, and the inspector says why), with no facts.
//!
//! `spBv1.0/STATE/<host>` is a host application's (SCADA's) own presence,
//! not a device: it is claimed with no owner, as is a topic in the
//! namespace with an unknown message type or the wrong number of levels.
//!
//! Births are not retained in Sparkplug, so after a restart aliases are
//! unknown until the node's next birth.

use std::collections::HashMap;

use super::{Announced, Convention, DeviceRef, Fact, Interpretation, MessageRef, MAX_LEARNED};
use crate::decode::sparkplug::{decode_sparkplug, SparkplugMetric, SparkplugPayload};
use crate::decode::Metric;

/// Metric names that are the protocol's, not readings.
fn is_control(name: &str) -> bool {
    name == "bdSeq" || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

/// What a metric's birth declared.
#[derive(Debug, Default)]
struct Declared {
    datatype: Option<u32>,
    unit: Option<String>,
}

/// What the last birth of a node or device taught.
#[derive(Debug, Default)]
struct Birth {
    /// Alias → metric name.
    aliases: HashMap<u64, String>,
    /// Metric name → what its birth declared.
    metrics: HashMap<String, Declared>,
}

impl Birth {
    fn size(&self) -> usize {
        1 + self.aliases.len() + self.metrics.len()
    }
}

/// What births taught, bounded by [`MAX_LEARNED`] entries per table.
#[derive(Debug, Default)]
pub(super) struct Sparkplug {
    /// Node key → the `bdSeq` of its last birth.
    bd_seq: HashMap<String, u64>,
    /// Node or device key → its last birth.
    births: HashMap<String, Birth>,
    /// Entries in `births`, all aliases and metrics counted.
    births_size: usize,
    /// Node key → the ids of the devices seen behind it.
    devices: HashMap<String, Vec<String>>,
    /// Device ids in `devices`.
    devices_size: usize,
}

/// A Sparkplug message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Birth,
    Data,
    Death,
    Command,
}

impl Sparkplug {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let rest = message.topic.strip_prefix("spBv1.0/")?;
        let levels: Vec<&str> = rest.split('/').collect();
        let (group, kind, node, device) = match levels.as_slice() {
            [group, kind, node] => (*group, *kind, *node, None),
            [group, kind, node, device] => (*group, *kind, *node, Some(*device)),
            _ => return Some(Interpretation::claimed()), // STATE/<host>, or not Sparkplug
        };
        let kind = match (kind, device.is_some()) {
            ("NBIRTH", false) | ("DBIRTH", true) => Kind::Birth,
            ("NDATA", false) | ("DDATA", true) => Kind::Data,
            ("NDEATH", false) | ("DDEATH", true) => Kind::Death,
            ("NCMD", false) | ("DCMD", true) => Kind::Command,
            _ => return Some(Interpretation::claimed()),
        };
        if group.is_empty() || node.is_empty() || device.is_some_and(str::is_empty) {
            return Some(Interpretation::claimed());
        }
        let node_key = format!("{group}/{node}");
        let owner = match device {
            Some(d) => device_ref(group, node, d),
            None => node_ref(group, node),
        };
        let mut i = Interpretation::of(owner.clone(), Vec::new());
        let Ok(payload) = decode_sparkplug(message.payload) else {
            return Some(i); // stored raw; the message inspector says why
        };
        match kind {
            Kind::Birth => {
                let reason = match device {
                    Some(d) => {
                        self.device_seen(&node_key, d);
                        "Sparkplug DBIRTH".to_owned()
                    }
                    None => {
                        let bd = bd_seq(&payload);
                        match bd {
                            Some(bd) => super::learn(&mut self.bd_seq, node_key.clone(), bd),
                            None => drop(self.bd_seq.remove(&node_key)),
                        }
                        format!("Sparkplug NBIRTH ({})", describe(bd))
                    }
                };
                self.learn_birth(&owner.key, &payload);
                i.facts
                    .push((owner.clone(), Fact::presence(Announced::Online, reason)));
                self.readings(&owner, &payload, &mut i);
            }
            Kind::Data => self.readings(&owner, &payload, &mut i),
            Kind::Death => {
                let gone = match device {
                    Some(_) => vec![(owner, "Sparkplug DDEATH".to_owned())],
                    None => {
                        let bd = bd_seq(&payload);
                        let last = self.bd_seq.get(&node_key).copied();
                        if matches!((last, bd), (Some(last), Some(bd)) if last != bd) {
                            return Some(i); // a late will of an earlier session
                        }
                        let mut gone =
                            vec![(owner, format!("Sparkplug NDEATH ({})", describe(bd)))];
                        let of_node =
                            format!("Sparkplug NDEATH of its edge node ({})", describe(bd));
                        for d in self.devices.get(&node_key).into_iter().flatten() {
                            gone.push((device_ref(group, node, d), of_node.clone()));
                        }
                        gone
                    }
                };
                for (d, reason) in gone {
                    i.facts
                        .push((d.clone(), Fact::presence(Announced::Offline, reason)));
                    i.facts.push((d, Fact::MetricsStale));
                }
            }
            Kind::Command => {}
        }
        Some(i)
    }

    /// Remembers what a birth declares, replacing the previous birth's.
    fn learn_birth(&mut self, key: &str, payload: &SparkplugPayload) {
        let mut birth = Birth::default();
        for m in &payload.metrics {
            let Some(name) = &m.name else { continue };
            if let Some(alias) = m.alias {
                birth.aliases.insert(alias, name.clone());
            }
            birth.metrics.insert(
                name.clone(),
                Declared {
                    datatype: m.datatype,
                    unit: m.unit.clone(),
                },
            );
        }
        if let Some(old) = self.births.remove(key) {
            self.births_size -= old.size();
        }
        if self.births_size + birth.size() > MAX_LEARNED {
            self.births.clear();
            self.births_size = 0;
        }
        self.births_size += birth.size();
        self.births.insert(key.to_owned(), birth);
    }

    /// Remembers that `device` is behind the node `node_key`.
    fn device_seen(&mut self, node_key: &str, device: &str) {
        if self
            .devices
            .get(node_key)
            .is_some_and(|list| list.iter().any(|d| d == device))
        {
            return;
        }
        if self.devices_size >= MAX_LEARNED {
            self.devices.clear();
            self.devices_size = 0;
        }
        self.devices
            .entry(node_key.to_owned())
            .or_default()
            .push(device.to_owned());
        self.devices_size += 1;
    }

    /// The payload's readings, as facts about `owner`; units for metrics
    /// whose birth declares one without a reading.
    fn readings(&self, owner: &DeviceRef, payload: &SparkplugPayload, i: &mut Interpretation) {
        let birth = self.births.get(&owner.key);
        for m in &payload.metrics {
            let Some(name) = name(m, birth) else { continue };
            if is_control(&name) {
                continue;
            }
            let declared = birth.and_then(|b| b.metrics.get(&name));
            let unit = m
                .unit
                .clone()
                .or_else(|| declared.and_then(|d| d.unit.clone()));
            let datatype = m.datatype.or_else(|| declared.and_then(|d| d.datatype));
            let Some(value) = m.raw.and_then(|v| v.number(datatype)) else {
                if let Some(unit) = unit.filter(|_| m.unit.is_some()) {
                    i.facts
                        .push((owner.clone(), Fact::Unit { metric: name, unit }));
                }
                continue;
            };
            let metric = Metric {
                name,
                value,
                unit,
                at: m.timestamp.or(payload.timestamp),
            };
            i.facts.push((owner.clone(), Fact::Metric(metric)));
        }
    }
}

/// A metric's name: its own, or the one its alias was born with, or
/// `alias N` when no birth named it.
fn name(m: &SparkplugMetric, birth: Option<&Birth>) -> Option<String> {
    match (&m.name, m.alias) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(alias)) => Some(
            birth
                .and_then(|b| b.aliases.get(&alias))
                .cloned()
                .unwrap_or_else(|| format!("alias {alias}")),
        ),
        (None, None) => None,
    }
}

fn node_ref(group: &str, node: &str) -> DeviceRef {
    DeviceRef::new(
        format!("{group}/{node}"),
        Convention::Sparkplug,
        format!("spBv1.0/{group}/+/{node}"),
    )
}

fn device_ref(group: &str, node: &str, device: &str) -> DeviceRef {
    DeviceRef::new(
        format!("{group}/{node}/{device}"),
        Convention::Sparkplug,
        format!("spBv1.0/{group}/+/{node}/{device}"),
    )
}

/// The `bdSeq` metric of a node's birth or death.
fn bd_seq(p: &SparkplugPayload) -> Option<u64> {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| m.raw)
        .and_then(|v| v.unsigned())
}

fn describe(bd_seq: Option<u64>) -> String {
    match bd_seq {
        Some(bd) => format!("bdSeq {bd}"),
        None => "no bdSeq".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::sparkplug::datatype::*;
    use crate::decode::sparkplug::encode::{by_alias, metric, payload, with_unit};
    use crate::testing::msg;

    fn presence(i: &Interpretation) -> Vec<(String, Announced, String)> {
        i.facts
            .iter()
            .filter_map(|(d, f)| match f {
                Fact::Presence { state, reason } => Some((d.key.clone(), *state, reason.clone())),
                _ => None,
            })
            .collect()
    }

    fn readings(i: &Interpretation) -> Vec<(String, f64)> {
        i.facts
            .iter()
            .filter_map(|(_, f)| match f {
                Fact::Metric(m) => Some((m.name.clone(), m.value)),
                _ => None,
            })
            .collect()
    }

    fn stale(i: &Interpretation) -> Vec<String> {
        i.facts
            .iter()
            .filter(|(_, f)| *f == Fact::MetricsStale)
            .map(|(d, _)| d.key.clone())
            .collect()
    }

    fn nbirth(bd: u64) -> Vec<u8> {
        payload(
            1_700_000_000_000,
            0,
            &[
                metric(Some("bdSeq"), None, UINT64, bd as f64),
                metric(Some("Node Control/Rebirth"), Some(0), BOOLEAN, 0.0),
                with_unit(metric(Some("Supply Voltage"), Some(1), DOUBLE, 12.1), "V"),
                metric(Some("Offset"), Some(2), INT16, -3.0),
                metric(Some("Serial"), Some(3), STRING, 0.0),
            ],
        )
    }

    fn interpret(s: &mut Sparkplug, topic: &str, payload: &[u8]) -> Interpretation {
        let i = s.interpret(msg(topic, payload)).expect("a Sparkplug topic");
        assert!(i.claimed && i.metrics_given, "{topic}");
        i
    }

    /// A node's birth: online with its bdSeq, readings with units, aliases,
    /// datatypes and units learned for its data.
    #[test]
    fn node_birth_then_data_by_alias() {
        let mut s = Sparkplug::default();
        let i = interpret(&mut s, "spBv1.0/Plant1/NBIRTH/Edge1", &nbirth(4));
        let owner = i.owner.clone().unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.root.as_str(), owner.convention),
            (
                "Plant1/Edge1",
                "spBv1.0/Plant1/+/Edge1",
                Convention::Sparkplug
            )
        );
        assert_eq!(
            presence(&i),
            [(
                "Plant1/Edge1".into(),
                Announced::Online,
                "Sparkplug NBIRTH (bdSeq 4)".into()
            )]
        );
        assert_eq!(
            readings(&i),
            [
                ("Supply Voltage".to_owned(), 12.1),
                ("Offset".to_owned(), -3.0)
            ]
        );
        let voltage = crate::testing::metric(&i, "Supply Voltage").unwrap();
        assert_eq!(voltage.unit.as_deref(), Some("V"));
        assert_eq!(
            voltage.at,
            Some(1_700_000_000_000_000),
            "the payload's time, in µs"
        );

        // NDATA as Sparkplug sends it: aliases only, no datatype.
        let ndata = payload(
            1_700_000_001_000,
            1,
            &[
                by_alias(1, DOUBLE, 11.9),
                by_alias(2, INT16, -7.0),
                by_alias(9, UINT32, 5.0),
            ],
        );
        let i = interpret(&mut s, "spBv1.0/Plant1/NDATA/Edge1", &ndata);
        assert!(presence(&i).is_empty());
        assert_eq!(
            readings(&i),
            [
                ("Supply Voltage".to_owned(), 11.9),
                ("Offset".to_owned(), -7.0), // Int16 from the birth: not 4294967289
                ("alias 9".to_owned(), 5.0), // no birth named it
            ]
        );
        let voltage = crate::testing::metric(&i, "Supply Voltage").unwrap();
        assert_eq!(
            voltage.unit.as_deref(),
            Some("V"),
            "the unit its birth declared"
        );
        assert_eq!(voltage.at, Some(1_700_000_001_000_000));
    }

    /// Devices: DBIRTH, DDATA by alias, DDEATH; a node's death takes its
    /// devices with it.
    #[test]
    fn devices_follow_their_node() {
        let mut s = Sparkplug::default();
        interpret(&mut s, "spBv1.0/Plant1/NBIRTH/Edge1", &nbirth(4));
        let dbirth = payload(2, 0, &[metric(Some("Pressure"), Some(10), FLOAT, 2.5)]);
        let i = interpret(&mut s, "spBv1.0/Plant1/DBIRTH/Edge1/Pump7", &dbirth);
        assert_eq!(
            i.owner.as_ref().unwrap().root,
            "spBv1.0/Plant1/+/Edge1/Pump7"
        );
        assert_eq!(
            presence(&i),
            [(
                "Plant1/Edge1/Pump7".into(),
                Announced::Online,
                "Sparkplug DBIRTH".into()
            )]
        );
        assert_eq!(readings(&i), [("Pressure".to_owned(), 2.5)]);
        interpret(
            &mut s,
            "spBv1.0/Plant1/DBIRTH/Edge1/Pump8",
            &payload(2, 1, &[]),
        );
        let i = interpret(
            &mut s,
            "spBv1.0/Plant1/DDATA/Edge1/Pump7",
            &payload(3, 2, &[by_alias(10, FLOAT, 3.0)]),
        );
        assert_eq!(readings(&i), [("Pressure".to_owned(), 3.0)]);

        let i = interpret(
            &mut s,
            "spBv1.0/Plant1/DDEATH/Edge1/Pump8",
            &payload(4, 3, &[]),
        );
        assert_eq!(
            presence(&i),
            [(
                "Plant1/Edge1/Pump8".into(),
                Announced::Offline,
                "Sparkplug DDEATH".into()
            )]
        );
        assert_eq!(stale(&i), ["Plant1/Edge1/Pump8"]);

        let death = payload(5, 0, &[metric(Some("bdSeq"), None, UINT64, 4.0)]);
        let i = interpret(&mut s, "spBv1.0/Plant1/NDEATH/Edge1", &death);
        let of_node = "Sparkplug NDEATH of its edge node (bdSeq 4)".to_owned();
        assert_eq!(
            presence(&i),
            [
                (
                    "Plant1/Edge1".into(),
                    Announced::Offline,
                    "Sparkplug NDEATH (bdSeq 4)".into()
                ),
                (
                    "Plant1/Edge1/Pump7".into(),
                    Announced::Offline,
                    of_node.clone()
                ),
                ("Plant1/Edge1/Pump8".into(), Announced::Offline, of_node),
            ]
        );
        assert_eq!(
            stale(&i),
            ["Plant1/Edge1", "Plant1/Edge1/Pump7", "Plant1/Edge1/Pump8"]
        );
    }

    /// The specification's session rule: a death whose bdSeq is not the one
    /// of the last birth is a late will of an earlier session; a rebirth
    /// with a new bdSeq makes the next matching death count.
    #[test]
    fn deaths_count_only_with_the_births_bd_seq() {
        let mut s = Sparkplug::default();
        let death = |bd: u64| payload(9, 0, &[metric(Some("bdSeq"), None, UINT64, bd as f64)]);
        // No birth seen yet (Vigil started later): the death counts.
        let i = interpret(&mut s, "spBv1.0/G/NDEATH/E", &death(2));
        assert_eq!(presence(&i)[0].1, Announced::Offline);

        interpret(&mut s, "spBv1.0/G/NBIRTH/E", &nbirth(3));
        // The will of session 2 arrives late (e.g. the broker noticed only now).
        let i = interpret(&mut s, "spBv1.0/G/NDEATH/E", &death(2));
        assert!(i.facts.is_empty(), "ignored");
        assert_eq!(i.owner.unwrap().key, "G/E", "but still the node's message");

        // Rebirth (e.g. after an NCMD "Node Control/Rebirth") with bdSeq 4.
        let i = interpret(&mut s, "spBv1.0/G/NBIRTH/E", &nbirth(4));
        assert_eq!(presence(&i)[0].2, "Sparkplug NBIRTH (bdSeq 4)");
        assert!(interpret(&mut s, "spBv1.0/G/NDEATH/E", &death(3))
            .facts
            .is_empty());
        let i = interpret(&mut s, "spBv1.0/G/NDEATH/E", &death(4));
        assert_eq!(presence(&i)[0].1, Announced::Offline);

        // A birth without bdSeq forgets the old one: any death counts then.
        interpret(&mut s, "spBv1.0/G/NBIRTH/E", &payload(1, 0, &[]));
        let i = interpret(&mut s, "spBv1.0/G/NDEATH/E", &death(7));
        assert_eq!(presence(&i)[0].1, Announced::Offline);
    }

    #[test]
    fn a_rebirth_replaces_the_aliases() {
        let mut s = Sparkplug::default();
        interpret(&mut s, "spBv1.0/G/NBIRTH/E", &nbirth(1));
        let rebirth = payload(
            1,
            0,
            &[
                metric(Some("bdSeq"), None, UINT64, 2.0),
                metric(Some("Flow"), Some(1), FLOAT, 1.0),
            ],
        );
        interpret(&mut s, "spBv1.0/G/NBIRTH/E", &rebirth);
        let i = interpret(
            &mut s,
            "spBv1.0/G/NDATA/E",
            &payload(2, 1, &[by_alias(1, FLOAT, 2.0)]),
        );
        assert_eq!(readings(&i), [("Flow".to_owned(), 2.0)]);
    }

    #[test]
    fn commands_state_and_malformed_messages() {
        let mut s = Sparkplug::default();
        let rebirth = payload(
            7,
            0,
            &[metric(Some("Node Control/Rebirth"), None, BOOLEAN, 1.0)],
        );
        let i = interpret(&mut s, "spBv1.0/G/NCMD/E", &rebirth);
        assert_eq!((i.owner.unwrap().key.as_str(), i.facts.len()), ("G/E", 0));
        let i = interpret(&mut s, "spBv1.0/G/DCMD/E/D", &payload(7, 0, &[]));
        assert_eq!((i.owner.unwrap().key.as_str(), i.facts.len()), ("G/E/D", 0));

        // A host application's state: nobody's device.
        let i = interpret(
            &mut s,
            "spBv1.0/STATE/scada",
            br#"{"online":true,"timestamp":1}"#,
        );
        assert!(i.owner.is_none());
        // Not a Sparkplug topic shape: claimed, no device.
        for topic in [
            "spBv1.0/G/NBIRTH/E/D",
            "spBv1.0/G/DDATA/E",
            "spBv1.0/G/FOO/E",
            "spBv1.0/G",
            "spBv1.0//NDATA/E",
        ] {
            assert!(
                interpret(&mut s, topic, &payload(1, 0, &[]))
                    .owner
                    .is_none(),
                "{topic}"
            );
        }
        assert!(s.interpret(msg("spBv1/G/NDATA/E", b"")).is_none());

        // A payload that is not Sparkplug: the node's message, no facts.
        let i = interpret(&mut s, "spBv1.0/G/NBIRTH/E", &[0x12, 0x09]);
        assert!(i.facts.is_empty() && i.owner.is_some());
    }

    /// A metric whose birth declares a unit but carries no number yet (a
    /// null) still teaches its unit.
    #[test]
    fn units_without_readings_are_declared() {
        let mut s = Sparkplug::default();
        let mut null = with_unit(metric(Some("Level"), Some(5), FLOAT, 0.0), "%");
        null.extend([0x38, 0x01]); // is_null
        let i = interpret(&mut s, "spBv1.0/G/NBIRTH/E", &payload(1, 0, &[null]));
        assert!(i.facts.contains(&(
            i.owner.clone().unwrap(),
            Fact::Unit {
                metric: "Level".into(),
                unit: "%".into()
            }
        )));
        assert!(readings(&i).is_empty());
    }

    #[test]
    fn learned_tables_are_bounded() {
        let mut s = Sparkplug::default();
        let metrics: Vec<Vec<u8>> = (0..4000)
            .map(|a| metric(Some(&format!("m{a}")), Some(a), DOUBLE, 1.0))
            .collect();
        let birth = payload(1, 0, &metrics);
        for n in 0..40 {
            interpret(&mut s, &format!("spBv1.0/G/DBIRTH/E/D{n}"), &birth);
            assert!(s.births_size <= MAX_LEARNED);
            assert!(s.devices_size <= MAX_LEARNED);
        }
        assert!(s.births.len() < 40, "emptied when full, then learned again");
    }
}
