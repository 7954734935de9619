//! Who may publish and subscribe where: topic-filter rules, decided once per
//! connection at login and checked by the front door on every PUBLISH,
//! SUBSCRIBE and will.

use serde::{Deserialize, Serialize};

/// What an admitted client may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rights {
    /// Everything (the local user, full accounts).
    All,
    /// Only topics matching these filters.
    Limited {
        /// Filters the client may publish to.
        publish: Vec<String>,
        /// Filters the client may subscribe to (a subscription must lie
        /// wholly inside one of them).
        subscribe: Vec<String>,
    },
}

impl Rights {
    /// Whether the client may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Rights::All => true,
            Rights::Limited { publish, .. } => publish.iter().any(|f| matches(f, topic)),
        }
    }

    /// Whether the client may subscribe to `filter`: every topic it could
    /// match must be one the rules allow.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        match self {
            Rights::All => true,
            Rights::Limited { subscribe, .. } => {
                // A shared subscription ($share/group/filter) reads `filter`.
                let filter = filter
                    .strip_prefix("$share/")
                    .and_then(|rest| rest.split_once('/'))
                    .map_or(filter, |(_, f)| f);
                subscribe.iter().any(|f| covers(f, filter))
            }
        }
    }
}

/// Whether the topic filter `filter` matches the topic name `topic` (MQTT
/// 4.7; a filter starting with a wildcard never matches a `$` topic).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut t = topic.split('/');
    for level in filter.split('/') {
        match (level, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (l, Some(name)) if l == name => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Whether every topic `inner` can match is matched by `outer` (both topic
/// filters): `a/#` covers `a/b/+`, `+/x` covers `a/x` but not `#`.
pub fn covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && outer.starts_with(['+', '#']) {
        return false;
    }
    let mut i = inner.split('/');
    for level in outer.split('/') {
        match (level, i.next()) {
            ("#", _) => return true,
            ("+", Some(l)) if l != "#" => {}
            (o, Some(l)) if o == l && l != "+" && l != "#" => {}
            _ => return false,
        }
    }
    i.next().is_none()
}

/// What a rule template's variables stand for, for one client.
#[derive(Debug, Clone, Default)]
pub struct Names<'a> {
    /// `%c`: the client id.
    pub client_id: Option<&'a str>,
    /// `%u`: the user name.
    pub user: Option<&'a str>,
    /// `%CN`: the client certificate's common name.
    pub common_name: Option<&'a str>,
}

/// Fills a rule template (`%c`, `%u`, `%CN`, `%%` for a percent sign).
/// `None` when it names something this client does not have, or when a
/// value holds `+` or `#` (a name must not widen a rule).
pub fn expand(template: &str, names: &Names) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (value, len) = if after.starts_with("CN") {
            (names.common_name, 2)
        } else if after.starts_with('c') {
            (names.client_id, 1)
        } else if after.starts_with('u') {
            (names.user, 1)
        } else if after.starts_with('%') {
            (Some("%"), 1)
        } else {
            return None;
        };
        let value = value.filter(|v| !v.is_empty() && !v.contains(['+', '#']))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Some(out)
}

/// Fills every template; those that name what the client lacks are left out.
pub fn expand_all(templates: &[String], names: &Names) -> Vec<String> {
    templates.iter().filter_map(|t| expand(t, names)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_topics_as_mqtt_says() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(!matches("a/+/c", "a/b/d"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn a_subscription_is_allowed_only_inside_a_rule() {
        assert!(covers("dev1/#", "dev1/#"));
        assert!(covers("dev1/#", "dev1/+/temp"));
        assert!(covers("dev1/#", "dev1"));
        assert!(covers("+/dev1/#", "tele/dev1/SENSOR"));
        assert!(covers("+/dev1/#", "+/dev1/#"));
        assert!(!covers("dev1/#", "#"));
        assert!(!covers("dev1/#", "+/x"));
        assert!(!covers("dev1/#", "dev2/x"));
        assert!(!covers("+/dev1/#", "tele/+/SENSOR"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(covers("#", "#"));
        assert!(!covers("$SYS/#", "#"));
        assert!(!covers("#", "$SYS/x"));
    }

    #[test]
    fn limited_rights_check_both_directions() {
        let r = Rights::Limited {
            publish: vec!["dev1/#".into()],
            subscribe: vec!["dev1/cmd/#".into()],
        };
        assert!(r.may_publish("dev1/temp"));
        assert!(!r.may_publish("dev2/temp"));
        assert!(r.may_subscribe("dev1/cmd/+"));
        assert!(!r.may_subscribe("dev1/#"));
        assert!(Rights::All.may_subscribe("#"));
        assert!(r.may_subscribe("$share/g/dev1/cmd/x"));
        assert!(!r.may_subscribe("$share/g/#"));
    }

    #[test]
    fn templates_fill_in_names_and_refuse_wildcards_in_them() {
        let n = Names {
            client_id: Some("esp-1"),
            user: Some("ward3/oxi"),
            common_name: None,
        };
        assert_eq!(expand("%u/#", &n).as_deref(), Some("ward3/oxi/#"));
        assert_eq!(expand("+/%c/#", &n).as_deref(), Some("+/esp-1/#"));
        assert_eq!(expand("%CN/#", &n), None);
        assert_eq!(expand("100%%/%c", &n).as_deref(), Some("100%/esp-1"));
        assert_eq!(expand("%x", &n), None);
        let evil = Names {
            user: Some("#"),
            ..n.clone()
        };
        assert_eq!(expand("%u/#", &evil), None);
        assert_eq!(
            expand_all(&["%u/#".into(), "%CN/#".into()], &n),
            vec!["ward3/oxi/#".to_owned()]
        );
    }
}
