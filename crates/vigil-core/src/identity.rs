//! Which device a topic belongs to.
//!
//! Until conventions (Homie, Home Assistant, Tasmota, ...) say otherwise, a
//! device is named by one level of its topic: by default the first, so
//! `kitchen/temp` belongs to device `kitchen` and its metric is `temp`.

use serde::{Deserialize, Serialize};

/// The rule that names a device from a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    /// Which topic level (0 = first) names the device.
    pub topic_level: usize,
}

impl DeviceRule {
    /// The device a topic belongs to, and the rest of the topic after the
    /// device's level (joined with `/`, possibly empty), or `None` when the
    /// topic has no such level, the level is empty, or it is a `$` system topic.
    pub fn split<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        if topic.starts_with('$') {
            return None;
        }
        let mut start = 0;
        for _ in 0..self.topic_level {
            start += topic[start..].find('/')? + 1;
        }
        let rest_at = topic[start..].find('/').map(|i| start + i);
        let device = &topic[start..rest_at.unwrap_or(topic.len())];
        if device.is_empty() {
            return None;
        }
        let rest = rest_at.map(|i| &topic[i + 1..]).unwrap_or("");
        Some((device, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_level_names_the_device() {
        let rule = DeviceRule::default();
        assert_eq!(rule.split("kitchen/temp"), Some(("kitchen", "temp")));
        assert_eq!(rule.split("kitchen"), Some(("kitchen", "")));
        assert_eq!(rule.split("a/b/c"), Some(("a", "b/c")));
        assert_eq!(rule.split("/a"), None);
        assert_eq!(rule.split("$SYS/broker"), None);
    }

    #[test]
    fn deeper_level() {
        let rule = DeviceRule { topic_level: 1 };
        assert_eq!(rule.split("tele/plug1/SENSOR"), Some(("plug1", "SENSOR")));
        assert_eq!(rule.split("tele"), None);
        assert_eq!(rule.split("tele/"), None);
    }
}
