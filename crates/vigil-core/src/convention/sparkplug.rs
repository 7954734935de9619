//! Sparkplug B (Eclipse Sparkplug 3.0): `spBv1.0/<group>/<type>/<edge node>[/<device>]`.
//!
//! Births (`NBIRTH`, `DBIRTH`) announce a node or device online and name its
//! metrics (and their aliases, which later data messages may use alone);
//! data (`NDATA`, `DDATA`) carries readings; deaths (`NDEATH`, the node's
//! last will, and `DDEATH`) announce it offline, and its metrics go stale. A
//! node's death counts only if its `bdSeq` matches the one of its last birth
//! (a late will of an earlier session must not mark the new one offline);
//! when no birth has been seen (Vigil started after it), the death counts.
//! A node's death also takes its devices offline. Keys: `<group>/<node>`
//! and `<group>/<node>/<device>`. `spBv1.0/STATE/<host>` (a host
//! application's own state) belongs to no device.

use std::collections::HashMap;

use super::{Announced, Convention, DeviceRef, Fact, Interpretation, MessageRef};
use crate::decode::sparkplug::{decode_sparkplug, SparkplugPayload};
use crate::decode::Metric;

/// Metric names that are the protocol's, not readings.
fn is_control(name: &str) -> bool {
    name == "bdSeq" || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

/// What births taught.
#[derive(Debug, Default)]
pub(super) struct Sparkplug {
    /// Node key → the bdSeq of its last birth.
    bd_seq: HashMap<String, u64>,
    /// Node or device key → alias → metric name.
    aliases: HashMap<String, HashMap<u64, String>>,
    /// Node key → its devices' keys.
    devices: HashMap<String, Vec<String>>,
}

impl Sparkplug {
    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        let rest = message.topic.strip_prefix("spBv1.0/")?;
        let levels: Vec<&str> = rest.split('/').collect();
        let (group, kind, node, device) = match levels.as_slice() {
            ["STATE", _host] => return Some(Interpretation::claimed()),
            [group, kind, node] => (*group, *kind, *node, None),
            [group, kind, node, device] => (*group, *kind, *node, Some(*device)),
            _ => return Some(Interpretation::claimed()),
        };
        if group.is_empty() || node.is_empty() || device.is_some_and(str::is_empty) {
            return Some(Interpretation::claimed());
        }
        let node_key = format!("{group}/{node}");
        let node_ref = DeviceRef::new(
            node_key.clone(),
            Convention::Sparkplug,
            format!("spBv1.0/{group}/+/{node}"),
        );
        let owner = match device {
            Some(d) => DeviceRef::new(
                format!("{node_key}/{d}"),
                Convention::Sparkplug,
                format!("spBv1.0/{group}/+/{node}/{d}"),
            ),
            None => node_ref.clone(),
        };
        let mut i = Interpretation::of(owner.clone(), Vec::new());
        let payload = match decode_sparkplug(message.payload) {
            Ok(p) => p,
            Err(_) => return Some(i), // stored raw; the inspector says why
        };
        match (kind, device) {
            ("NBIRTH", None) | ("DBIRTH", Some(_)) => {
                let mut names = HashMap::new();
                for m in &payload.metrics {
                    if let (Some(name), Some(alias)) = (&m.name, m.alias) {
                        names.insert(alias, name.clone());
                    }
                }
                if self.aliases.len() >= super::MAX_LEARNED {
                    self.aliases.clear();
                }
                self.aliases.insert(owner.key.clone(), names);
                let reason = if device.is_some() {
                    "Sparkplug DBIRTH".to_owned()
                } else {
                    let bd = bd_seq(&payload);
                    if let Some(bd) = bd {
                        super::learn(&mut self.bd_seq, node_key.clone(), bd);
                    }
                    format!(
                        "Sparkplug NBIRTH (bdSeq {})",
                        bd.map_or("?".into(), |b| b.to_string())
                    )
                };
                if let Some(d) = device {
                    let list = self.devices.entry(node_key.clone()).or_default();
                    let key = format!("{node_key}/{d}");
                    if !list.contains(&key) && list.len() < 10_000 {
                        list.push(key);
                    }
                }
                i.facts
                    .push((owner.clone(), Fact::presence(Announced::Online, reason)));
                self.readings(&owner, &payload, &mut i);
            }
            ("NDATA", None) | ("DDATA", Some(_)) => self.readings(&owner, &payload, &mut i),
            ("NDEATH", None) => {
                let bd = bd_seq(&payload);
                let current = self.bd_seq.get(&node_key).copied();
                if current.is_some() && bd.is_some() && current != bd {
                    return Some(i); // a late will of an earlier session
                }
                let reason = format!(
                    "Sparkplug NDEATH (bdSeq {})",
                    bd.map_or("?".into(), |b| b.to_string())
                );
                let mut gone = vec![node_ref];
                for key in self.devices.get(&node_key).into_iter().flatten() {
                    let d = key.rsplit('/').next().unwrap_or("");
                    gone.push(DeviceRef::new(
                        key.clone(),
                        Convention::Sparkplug,
                        format!("spBv1.0/{group}/+/{node}/{d}"),
                    ));
                }
                for d in gone {
                    i.facts.push((
                        d.clone(),
                        Fact::presence(Announced::Offline, reason.clone()),
                    ));
                    i.facts.push((d, Fact::MetricsStale));
                }
            }
            ("DDEATH", Some(_)) => {
                i.facts.push((
                    owner.clone(),
                    Fact::presence(Announced::Offline, "Sparkplug DDEATH"),
                ));
                i.facts.push((owner, Fact::MetricsStale));
            }
            _ => {} // commands (NCMD, DCMD) and anything unknown: stored, no facts
        }
        Some(i)
    }

    fn readings(&self, owner: &DeviceRef, payload: &SparkplugPayload, i: &mut Interpretation) {
        let aliases = self.aliases.get(&owner.key);
        for m in &payload.metrics {
            let Some(value) = m.value else { continue };
            let name = match (&m.name, m.alias) {
                (Some(n), _) => n.clone(),
                (None, Some(a)) => match aliases.and_then(|names| names.get(&a)) {
                    Some(n) => n.clone(),
                    None => format!("alias {a}"),
                },
                (None, None) => continue,
            };
            if is_control(&name) {
                continue;
            }
            let mut metric = Metric::new(name, value);
            metric.at = m.timestamp.or(payload.timestamp);
            i.facts.push((owner.clone(), Fact::Metric(metric)));
        }
    }
}

fn bd_seq(p: &SparkplugPayload) -> Option<u64> {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| m.value)
        .filter(|v| *v >= 0.0)
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::sparkplug::encode::{metric, payload};
    use crate::testing::msg;

    fn presence(i: &Interpretation) -> Vec<(String, Announced)> {
        i.facts
            .iter()
            .filter_map(|(d, f)| match f {
                Fact::Presence { state, .. } => Some((d.key.clone(), *state)),
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

    /// The session of the specification's examples: NBIRTH with bdSeq and
    /// aliases, DBIRTH, data by alias, a stale NDEATH ignored, the matching
    /// NDEATH taking node and devices offline.
    #[test]
    fn birth_data_and_death_with_bd_seq() {
        let mut s = Sparkplug::default();
        let nbirth = payload(
            1_700_000_000_000,
            0,
            &[
                metric(Some("bdSeq"), None, 8, 4.0),
                metric(Some("Node Control/Rebirth"), Some(0), 11, 0.0),
                metric(Some("Supply Voltage"), Some(1), 10, 12.1),
            ],
        );
        let i = s
            .interpret(msg("spBv1.0/Plant1/NBIRTH/Edge1", &nbirth))
            .unwrap();
        assert_eq!(i.owner.as_ref().unwrap().key, "Plant1/Edge1");
        assert!(
            matches!(&i.facts[0].1, Fact::Presence { state: Announced::Online, reason } if reason == "Sparkplug NBIRTH (bdSeq 4)")
        );
        assert_eq!(readings(&i), [("Supply Voltage".to_owned(), 12.1)]);
        let i = s
            .interpret(msg(
                "spBv1.0/Plant1/NDATA/Edge1",
                &payload(1, 1, &[metric(None, Some(1), 10, 11.9)]),
            ))
            .unwrap();
        assert_eq!(readings(&i), [("Supply Voltage".to_owned(), 11.9)]);
        let Fact::Metric(m) = &i.facts[0].1 else {
            panic!()
        };
        assert_eq!(m.at, Some(1000), "the payload's timestamp, in µs");

        let dbirth = payload(2, 2, &[metric(Some("Pressure"), Some(10), 9, 2.5)]);
        let i = s
            .interpret(msg("spBv1.0/Plant1/DBIRTH/Edge1/Pump7", &dbirth))
            .unwrap();
        assert_eq!(
            presence(&i),
            [("Plant1/Edge1/Pump7".to_owned(), Announced::Online)]
        );
        let i = s
            .interpret(msg(
                "spBv1.0/Plant1/DDATA/Edge1/Pump7",
                &payload(3, 3, &[metric(None, Some(10), 9, 3.0)]),
            ))
            .unwrap();
        assert_eq!(readings(&i), [("Pressure".to_owned(), 3.0)]);

        // A will from an earlier session (bdSeq 3) is ignored...
        let stale = payload(4, 0, &[metric(Some("bdSeq"), None, 8, 3.0)]);
        let i = s
            .interpret(msg("spBv1.0/Plant1/NDEATH/Edge1", &stale))
            .unwrap();
        assert!(i.facts.is_empty() && i.owner.is_some());
        // ...the matching one takes the node and its devices offline.
        let death = payload(5, 0, &[metric(Some("bdSeq"), None, 8, 4.0)]);
        let i = s
            .interpret(msg("spBv1.0/Plant1/NDEATH/Edge1", &death))
            .unwrap();
        assert_eq!(
            presence(&i),
            [
                ("Plant1/Edge1".to_owned(), Announced::Offline),
                ("Plant1/Edge1/Pump7".to_owned(), Announced::Offline)
            ]
        );
        assert_eq!(
            i.facts
                .iter()
                .filter(|(_, f)| *f == Fact::MetricsStale)
                .count(),
            2
        );

        let i = s
            .interpret(msg(
                "spBv1.0/Plant1/DDEATH/Edge1/Pump7",
                &payload(6, 4, &[]),
            ))
            .unwrap();
        assert_eq!(
            presence(&i),
            [("Plant1/Edge1/Pump7".to_owned(), Announced::Offline)]
        );
        let i = s
            .interpret(msg("spBv1.0/Plant1/NCMD/Edge1", &payload(7, 0, &[])))
            .unwrap();
        assert!(i.facts.is_empty());
        let i = s
            .interpret(msg("spBv1.0/STATE/scada", b"{\"online\":true}"))
            .unwrap();
        assert!(i.owner.is_none() && i.claimed);
        let i = s
            .interpret(msg("spBv1.0/Plant1/NDATA/Edge1", &[0x12, 0x09]))
            .unwrap();
        assert!(
            i.facts.is_empty() && i.owner.is_some(),
            "malformed: stored, no facts"
        );
    }
}
