//! Generic: a user-defined availability (last will) topic.
//!
//! ```toml
//! [[conventions.generic]]
//! topic = "clinic/+/availability"   # the `+` level names the device
//! online = ["online", "1"]
//! offline = ["offline", "0"]
//! sleeping = ["sleep"]
//! ```

use serde::{Deserialize, Serialize};

use super::{text, Announced, Convention, DeviceRef, Fact, Interpretation, MessageRef};

/// A user-defined availability (last will) topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericAvailability {
    /// A topic filter whose single `+` level names the device, e.g.
    /// `clinic/+/availability`.
    pub topic: String,
    /// Payloads that mean online.
    #[serde(default = "default_online")]
    pub online: Vec<String>,
    /// Payloads that mean offline.
    #[serde(default = "default_offline")]
    pub offline: Vec<String>,
    /// Payloads that mean sleeping.
    #[serde(default)]
    pub sleeping: Vec<String>,
}

fn default_online() -> Vec<String> {
    vec!["online".into()]
}

fn default_offline() -> Vec<String> {
    vec!["offline".into()]
}

impl GenericAvailability {
    pub(super) fn validate(&self) -> Result<(), String> {
        let levels: Vec<&str> = self.topic.split('/').collect();
        let pluses = levels.iter().filter(|l| **l == "+").count();
        if pluses != 1 {
            return Err(format!(
                "conventions.generic topic '{}' must have exactly one '+' level (the device), not {pluses}",
                self.topic
            ));
        }
        if levels
            .iter()
            .any(|l| l.contains('#') || (l.contains('+') && *l != "+"))
        {
            return Err(format!(
                "conventions.generic topic '{}': '#' is not allowed, and '+' must be a whole level",
                self.topic
            ));
        }
        if self.online.is_empty() && self.offline.is_empty() && self.sleeping.is_empty() {
            return Err(format!(
                "conventions.generic topic '{}' needs at least one online, offline or sleeping payload",
                self.topic
            ));
        }
        Ok(())
    }

    /// The device a topic names, and the topic root up to the device.
    fn device<'t>(&self, topic: &'t str) -> Option<(&'t str, String)> {
        let filter = self.topic.split('/');
        let mut levels = topic.split('/');
        let mut device = None;
        let mut root = Vec::new();
        for f in filter {
            let level = levels.next()?;
            if f == "+" {
                if level.is_empty() {
                    return None;
                }
                device = Some(level);
                root.push(level);
            } else if f != level {
                return None;
            } else if device.is_none() {
                root.push(level);
            }
        }
        if levels.next().is_some() {
            return None;
        }
        Some((device?, root.join("/")))
    }
}

/// The user's rules.
#[derive(Debug, Default)]
pub(super) struct Generic {
    rules: Vec<GenericAvailability>,
}

impl Generic {
    pub(super) fn new(rules: &[GenericAvailability]) -> Generic {
        Generic {
            rules: rules.to_vec(),
        }
    }

    pub(super) fn interpret(&mut self, message: MessageRef<'_>) -> Option<Interpretation> {
        for rule in &self.rules {
            let Some((device, root)) = rule.device(message.topic) else {
                continue;
            };
            let owner = DeviceRef::new(device, Convention::Generic, root);
            let payload = text(message.payload).unwrap_or("");
            let is = |list: &[String]| list.iter().any(|p| p.trim() == payload);
            let state = if is(&rule.online) {
                Some(Announced::Online)
            } else if is(&rule.offline) {
                Some(Announced::Offline)
            } else if is(&rule.sleeping) {
                Some(Announced::Sleeping)
            } else {
                None
            };
            let facts = state
                .map(|s| Fact::presence(s, format!("{}: {payload}", message.topic)))
                .into_iter()
                .collect();
            return Some(Interpretation::of(owner, facts));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::msg;

    #[test]
    fn the_plus_level_names_the_device() {
        let rule = GenericAvailability {
            topic: "clinic/+/availability".into(),
            online: vec!["up".into()],
            offline: vec!["down".into()],
            sleeping: vec!["zz".into()],
        };
        rule.validate().unwrap();
        let mut g = Generic::new(&[rule]);
        let i = g
            .interpret(msg("clinic/ox7/availability", b" down\n"))
            .unwrap();
        let owner = i.owner.unwrap();
        assert_eq!(
            (owner.key.as_str(), owner.root.as_str()),
            ("ox7", "clinic/ox7")
        );
        assert_eq!(
            i.facts[0].1,
            Fact::presence(Announced::Offline, "clinic/ox7/availability: down")
        );
        let i = g.interpret(msg("clinic/ox7/availability", b"zz")).unwrap();
        assert!(matches!(
            i.facts[0].1,
            Fact::Presence {
                state: Announced::Sleeping,
                ..
            }
        ));
        assert!(g.interpret(msg("clinic/ox7/other", b"down")).is_none());
        assert!(g
            .interpret(msg("clinic/ox7/availability/x", b"down"))
            .is_none());
        assert!(g.interpret(msg("clinic//availability", b"down")).is_none());
        let unknown = g
            .interpret(msg("clinic/ox7/availability", b"maybe"))
            .unwrap();
        assert!(unknown.facts.is_empty() && unknown.owner.is_some());
    }

    #[test]
    fn bad_rules_are_refused_in_words() {
        let rule = |t: &str| GenericAvailability {
            topic: t.into(),
            online: default_online(),
            offline: default_offline(),
            sleeping: vec![],
        };
        assert!(rule("a/+/+/b")
            .validate()
            .unwrap_err()
            .contains("exactly one"));
        assert!(rule("a/b").validate().unwrap_err().contains("exactly one"));
        assert!(rule("a/+/#").validate().unwrap_err().contains("'#'"));
        assert!(rule("a/x+/+")
            .validate()
            .unwrap_err()
            .contains("whole level"));
    }
}
