//! Alert rules and their evaluation.
//!
//! A rule watches a metric (above / below / outside a band) or a device's
//! presence (in given states), for at least `for_s` seconds. One alert
//! instance exists per rule and device at a time; it goes
//! `firing → acknowledged → cleared`, and a condition that holds again later
//! fires a new instance with a new id.
//!
//! Semantics:
//! - The **last known value holds**: one reading of 91 followed by 30 s of
//!   silence fires "SpO2 < 92 for 30 s" at t + 30 s. Pending conditions wait
//!   in one deadline queue ([`AlertEvaluator::next_deadline`],
//!   [`AlertEvaluator::tick`]); no timer per device.
//! - **Hysteresis** `h` applies to leaving the condition, pending or firing:
//!   `Below(92)` with `h = 1` is left only at a value ≥ 93, so a value that
//!   hovers around the threshold (91.9, 92.1, 91.8, ...) still fires, and a
//!   firing alert does not flap.
//! - Changing or deleting a rule clears its active alerts; an unchanged rule
//!   keeps its alerts and pending conditions.
//!
//! Pure: times are inputs, so every rule is tested without waiting.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};

use crate::presence::{seconds, PresenceState};
use crate::time::Micros;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Act now (a patient's SpO2 is low).
    Critical,
    /// Act soon (a patient's device is silent).
    Major,
    /// Look at it today.
    Minor,
    /// Worth knowing.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    /// The inverse of [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "critical" => Severity::Critical,
            "major" => Severity::Major,
            "minor" => Severity::Minor,
            "warning" => Severity::Warning,
            "info" => Severity::Info,
            _ => return None,
        })
    }
}

/// Which devices a rule watches: every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(default, deny_unknown_fields)]
pub struct Scope {
    /// One device, by key.
    pub device: Option<String>,
    /// Devices of one convention (`homie`, `tasmota`, ...).
    pub convention: Option<String>,
    /// Devices in one group (a patient, a room).
    pub group: Option<String>,
}

/// When a value is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Threshold {
    /// Greater than this.
    Above(f64),
    /// Less than this.
    Below(f64),
    /// Outside `[low, high]`.
    Outside {
        /// The lowest good value.
        low: f64,
        /// The highest good value.
        high: f64,
    },
}

impl Threshold {
    fn crossed(self, v: f64) -> bool {
        match self {
            Threshold::Above(x) => v > x,
            Threshold::Below(x) => v < x,
            Threshold::Outside { low, high } => v < low || v > high,
        }
    }

    /// Whether `v` is back inside by at least `h`.
    fn recovered(self, v: f64, h: f64) -> bool {
        match self {
            Threshold::Above(x) => v <= x - h,
            Threshold::Below(x) => v >= x + h,
            Threshold::Outside { low, high } => v >= low + h && v <= high - h,
        }
    }

    fn describe(self, v: f64) -> String {
        match self {
            Threshold::Above(x) => format!("{} is above {}", number(v), number(x)),
            Threshold::Below(x) => format!("{} is below {}", number(v), number(x)),
            Threshold::Outside { low, high } => format!(
                "{} is outside {} to {}",
                number(v),
                number(low),
                number(high)
            ),
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A metric's value.
    Metric {
        /// The metric's name, as the device list shows it.
        metric: String,
        /// When it is out of bounds.
        test: Threshold,
        /// For how long it must be, in seconds.
        #[serde(default)]
        for_s: f64,
        /// How far back inside it must come to leave the condition.
        #[serde(default)]
        hysteresis: f64,
    },
    /// A device's presence.
    Presence {
        /// The states that count (e.g. stale and offline: "silent").
        states: Vec<PresenceState>,
        /// For how long, in seconds.
        #[serde(default)]
        for_s: f64,
    },
}

/// A rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Its id (0 for a rule not yet saved).
    #[serde(default)]
    pub id: i64,
    /// What it is called, e.g. "SpO2 low".
    pub name: String,
    /// How urgent its alerts are.
    pub severity: Severity,
    /// Which devices it watches (default: all).
    #[serde(default)]
    pub scope: Scope,
    /// What it watches.
    pub condition: Condition,
    /// Whether it is evaluated.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Durations beyond this make no sense for an alert (a year).
const MAX_FOR_S: f64 = 365.0 * 86_400.0;

impl AlertRule {
    /// Checks the rule; the error says what is wrong in words.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("an alert rule needs a name".into());
        }
        let for_s = match &self.condition {
            Condition::Metric {
                metric,
                test,
                for_s,
                hysteresis,
            } => {
                if metric.trim().is_empty() {
                    return Err("a metric rule needs the metric's name".into());
                }
                let values = match *test {
                    Threshold::Above(x) | Threshold::Below(x) => vec![x],
                    Threshold::Outside { low, high } => {
                        if low.is_finite() && high.is_finite() && low >= high {
                            return Err(format!(
                                "the band's low ({low}) must be below its high ({high})"
                            ));
                        }
                        vec![low, high]
                    }
                };
                if values.iter().any(|v| !v.is_finite()) {
                    return Err("thresholds must be finite numbers".into());
                }
                if !hysteresis.is_finite() || *hysteresis < 0.0 {
                    return Err(format!(
                        "hysteresis must be zero or a positive number, not {hysteresis}"
                    ));
                }
                if let Threshold::Outside { low, high } = *test {
                    if 2.0 * hysteresis >= high - low {
                        return Err(format!(
                            "a hysteresis of {hysteresis} leaves no room inside the band {low} to {high}"
                        ));
                    }
                }
                *for_s
            }
            Condition::Presence { states, for_s } => {
                if states.is_empty() {
                    return Err(
                        "a presence rule needs at least one state (e.g. stale, offline)".into(),
                    );
                }
                *for_s
            }
        };
        if !for_s.is_finite() || !(0.0..=MAX_FOR_S).contains(&for_s) {
            return Err(format!(
                "for_s must be between 0 and one year in seconds, not {for_s}"
            ));
        }
        Ok(())
    }

    fn for_micros(&self) -> Micros {
        let s = match &self.condition {
            Condition::Metric { for_s, .. } | Condition::Presence { for_s, .. } => *for_s,
        };
        (s * 1e6) as Micros
    }

    fn applies(&self, device: &DeviceFacts<'_>) -> bool {
        self.enabled
            && self.scope.device.as_deref().is_none_or(|d| d == device.key)
            && self
                .scope
                .convention
                .as_deref()
                .is_none_or(|c| c == device.convention)
            && self
                .scope
                .group
                .as_deref()
                .is_none_or(|g| Some(g) == device.group)
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds and nobody has acknowledged it.
    Firing,
    /// Someone has seen it; the condition still holds.
    Acknowledged,
    /// The condition no longer holds (or its rule changed).
    Cleared,
}

impl AlertState {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Cleared => "cleared",
        }
    }

    /// The inverse of [`AlertState::as_str`].
    pub fn parse(s: &str) -> Option<AlertState> {
        Some(match s {
            "firing" => AlertState::Firing,
            "acknowledged" => AlertState::Acknowledged,
            "cleared" => AlertState::Cleared,
            _ => return None,
        })
    }
}

/// One occurrence of a rule's condition on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct Alert {
    /// Its id, increasing.
    pub id: i64,
    /// The rule.
    pub rule_id: i64,
    /// The device.
    pub device: String,
    /// The rule's severity when it fired.
    pub severity: Severity,
    /// Where it stands.
    pub state: AlertState,
    /// When it fired.
    pub fired_at: Micros,
    /// When it was acknowledged.
    pub acked_at: Option<Micros>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When it cleared.
    pub cleared_at: Option<Micros>,
    /// The metric's value that fired it, then the latest.
    pub value: Option<f64>,
    /// What happened, in words.
    pub message: String,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// It fired.
    Fired,
    /// Someone acknowledged it.
    Acknowledged,
    /// It cleared.
    Cleared,
}

impl Transition {
    /// The name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Fired => "fired",
            Transition::Acknowledged => "acknowledged",
            Transition::Cleared => "cleared",
        }
    }
}

/// An alert as it is after a transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertChange {
    /// The alert now.
    pub alert: Alert,
    /// What happened.
    pub transition: Transition,
}

/// What rules may be scoped by.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// The device's key.
    pub key: &'a str,
    /// Its convention's name.
    pub convention: &'a str,
    /// Its group, if the user gave one.
    pub group: Option<&'a str>,
}

/// One rule on one device.
#[derive(Debug)]
struct Instance {
    rule: usize,
    device: String,
    /// Since when the condition has held (pending or active).
    since: Option<Micros>,
    /// The latest value (metric rules).
    value: Option<f64>,
    /// The alert, while firing or acknowledged.
    active: Option<Alert>,
    /// Bumped whenever a scheduled deadline stops being valid.
    generation: u64,
}

/// Evaluates every rule against every device's readings and presence.
#[derive(Debug)]
pub struct AlertEvaluator {
    rules: Vec<AlertRule>,
    by_metric: HashMap<String, Vec<usize>>,
    presence_rules: Vec<usize>,
    instances: Vec<Instance>,
    /// Device key → (rule index, instance index).
    by_device: HashMap<String, Vec<(usize, usize)>>,
    deadlines: BinaryHeap<Reverse<(Micros, usize, u64)>>,
    next_id: i64,
}

impl AlertEvaluator {
    /// An evaluator for `rules`; new alerts get ids from `next_id` on.
    pub fn new(rules: Vec<AlertRule>, next_id: i64) -> AlertEvaluator {
        let mut e = AlertEvaluator {
            rules: Vec::new(),
            by_metric: HashMap::new(),
            presence_rules: Vec::new(),
            instances: Vec::new(),
            by_device: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_id: next_id.max(1),
        };
        e.index(rules);
        e
    }

    fn index(&mut self, rules: Vec<AlertRule>) {
        self.by_metric.clear();
        self.presence_rules.clear();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.condition {
                Condition::Metric { metric, .. } => {
                    self.by_metric.entry(metric.clone()).or_default().push(i)
                }
                Condition::Presence { .. } => self.presence_rules.push(i),
            }
        }
        self.rules = rules;
    }

    /// Resumes alerts that were active when Vigil stopped. Those whose rule
    /// no longer exists are cleared at `now` and returned.
    pub fn restore(&mut self, active: Vec<Alert>, now: Micros) -> Vec<AlertChange> {
        let mut cleared = Vec::new();
        for alert in active {
            self.next_id = self.next_id.max(alert.id + 1);
            let Some(rule) = self.rules.iter().position(|r| r.id == alert.rule_id) else {
                cleared.push(clear(alert, now));
                continue;
            };
            let i = self.instance(rule, &alert.device);
            let inst = &mut self.instances[i];
            inst.since = Some(alert.fired_at);
            inst.value = alert.value;
            inst.active = Some(alert);
        }
        cleared
    }

    /// Replaces the rules. Alerts of rules that changed or were deleted
    /// clear at `now`; unchanged rules keep their alerts and pending state.
    pub fn set_rules(&mut self, rules: Vec<AlertRule>, now: Micros) -> Vec<AlertChange> {
        let mut changes = Vec::new();
        let old = std::mem::take(&mut self.instances);
        let old_rules = std::mem::take(&mut self.rules);
        self.by_device.clear();
        self.deadlines.clear();
        self.index(rules);
        for inst in old {
            let rule = &old_rules[inst.rule];
            match self.rules.iter().position(|r| r == rule) {
                Some(new_rule) => {
                    let i = self.instance(new_rule, &inst.device);
                    let kept = &mut self.instances[i];
                    kept.since = inst.since;
                    kept.value = inst.value;
                    kept.active = inst.active;
                    if kept.active.is_none() {
                        if let Some(since) = kept.since {
                            let at = since + self.rules[new_rule].for_micros();
                            self.deadlines.push(Reverse((at, i, kept.generation)));
                        }
                    }
                }
                None => {
                    if let Some(alert) = inst.active {
                        changes.push(clear(alert, now));
                    }
                }
            }
        }
        changes
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// A reading of `metric` from `device`.
    pub fn on_sample(
        &mut self,
        device: &DeviceFacts<'_>,
        metric: &str,
        value: f64,
        at: Micros,
    ) -> Vec<AlertChange> {
        let mut changes = Vec::new();
        if !value.is_finite() {
            return changes;
        }
        let Some(rules) = self.by_metric.get(metric) else {
            return changes;
        };
        // Usually one or two rules per metric: copying their indices frees
        // `self` for the instance updates below without allocating much.
        for r in rules.clone() {
            let rule = &self.rules[r];
            if !rule.applies(device) {
                continue;
            }
            let Condition::Metric {
                test, hysteresis, ..
            } = rule.condition
            else {
                continue;
            };
            let crossed = test.crossed(value);
            let recovered = test.recovered(value, hysteresis);
            let i = self.instance(r, device.key);
            self.instances[i].value = Some(value);
            if let Some(alert) = &mut self.instances[i].active {
                alert.value = Some(value);
            }
            self.step(i, crossed, recovered, at, &mut changes);
        }
        changes
    }

    /// `device`'s presence is now `state`.
    pub fn on_presence(
        &mut self,
        device: &DeviceFacts<'_>,
        state: PresenceState,
        at: Micros,
    ) -> Vec<AlertChange> {
        let mut changes = Vec::new();
        for k in 0..self.presence_rules.len() {
            let r = self.presence_rules[k];
            let rule = &self.rules[r];
            if !rule.applies(device) {
                continue;
            }
            let Condition::Presence { states, .. } = &rule.condition else {
                continue;
            };
            let holds = states.contains(&state);
            let i = self.instance(r, device.key);
            self.step(i, holds, !holds, at, &mut changes);
        }
        changes
    }

    /// Moves one instance: the condition `holds` now, or has `left` it.
    fn step(
        &mut self,
        i: usize,
        holds: bool,
        left: bool,
        at: Micros,
        changes: &mut Vec<AlertChange>,
    ) {
        let inst = &mut self.instances[i];
        if left {
            inst.since = None;
            inst.generation += 1;
            if let Some(alert) = inst.active.take() {
                changes.push(clear(alert, at));
            }
            return;
        }
        if holds && inst.since.is_none() {
            inst.since = Some(at);
            inst.generation += 1;
            let due = at + self.rules[inst.rule].for_micros();
            if due <= at {
                self.fire(i, at, changes);
            } else {
                let generation = inst.generation;
                self.deadlines.push(Reverse((due, i, generation)));
            }
        }
    }

    fn fire(&mut self, i: usize, at: Micros, changes: &mut Vec<AlertChange>) {
        let id = self.next_id;
        self.next_id += 1;
        let inst = &mut self.instances[i];
        let rule = &self.rules[inst.rule];
        let message = match &rule.condition {
            Condition::Metric {
                metric,
                test,
                for_s,
                ..
            } => {
                let value = inst.value.unwrap_or(f64::NAN);
                if *for_s > 0.0 {
                    format!(
                        "{metric} {} for {}",
                        test.describe(value),
                        seconds((*for_s * 1e6) as Micros)
                    )
                } else {
                    format!("{metric} {}", test.describe(value))
                }
            }
            Condition::Presence { .. } => {
                let since = inst.since.unwrap_or(at);
                format!(
                    "{}: {} for {}",
                    inst.device,
                    rule.name,
                    seconds((at - since).max(0))
                )
            }
        };
        let alert = Alert {
            id,
            rule_id: rule.id,
            device: inst.device.clone(),
            severity: rule.severity,
            state: AlertState::Firing,
            fired_at: at,
            acked_at: None,
            acked_by: None,
            cleared_at: None,
            value: inst.value,
            message,
        };
        inst.active = Some(alert.clone());
        changes.push(AlertChange {
            alert,
            transition: Transition::Fired,
        });
    }

    /// Acknowledges a firing alert.
    pub fn acknowledge(
        &mut self,
        id: i64,
        at: Micros,
        by: Option<String>,
    ) -> Result<AlertChange, String> {
        let Some(alert) = self
            .instances
            .iter_mut()
            .filter_map(|i| i.active.as_mut())
            .find(|a| a.id == id)
        else {
            return Err(format!("no active alert {id}"));
        };
        if alert.state == AlertState::Acknowledged {
            return Err(format!("alert {id} is already acknowledged"));
        }
        alert.state = AlertState::Acknowledged;
        alert.acked_at = Some(at);
        alert.acked_by = by;
        Ok(AlertChange {
            alert: alert.clone(),
            transition: Transition::Acknowledged,
        })
    }

    /// When the next pending condition may fire.
    pub fn next_deadline(&mut self) -> Option<Micros> {
        while let Some(&Reverse((at, i, generation))) = self.deadlines.peek() {
            if self
                .instances
                .get(i)
                .is_some_and(|inst| inst.generation == generation)
            {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Fires every pending condition that has held long enough by `now`.
    pub fn tick(&mut self, now: Micros) -> Vec<AlertChange> {
        let mut changes = Vec::new();
        while let Some(&Reverse((at, i, generation))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let valid = self.instances.get(i).is_some_and(|inst| {
                inst.generation == generation && inst.active.is_none() && inst.since.is_some()
            });
            if valid {
                self.fire(i, at, &mut changes);
            }
        }
        changes
    }

    /// The alerts firing or acknowledged now.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.instances.iter().filter_map(|i| i.active.as_ref())
    }

    fn instance(&mut self, rule: usize, device: &str) -> usize {
        if let Some(list) = self.by_device.get(device) {
            if let Some(&(_, i)) = list.iter().find(|(r, _)| *r == rule) {
                return i;
            }
        }
        let i = self.instances.len();
        self.instances.push(Instance {
            rule,
            device: device.to_owned(),
            since: None,
            value: None,
            active: None,
            generation: 0,
        });
        self.by_device
            .entry(device.to_owned())
            .or_default()
            .push((rule, i));
        i
    }
}

fn clear(mut alert: Alert, at: Micros) -> AlertChange {
    alert.state = AlertState::Cleared;
    alert.cleared_at = Some(at);
    AlertChange {
        alert,
        transition: Transition::Cleared,
    }
}

/// A number as a person writes it: `92`, `91.5`.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    fn spo2(for_s: f64, hysteresis: f64) -> AlertRule {
        AlertRule {
            id: 1,
            name: "SpO2 low".into(),
            severity: Severity::Critical,
            scope: Scope::default(),
            condition: Condition::Metric {
                metric: "spo2".into(),
                test: Threshold::Below(92.0),
                for_s,
                hysteresis,
            },
            enabled: true,
        }
    }

    fn silent(for_s: f64) -> AlertRule {
        AlertRule {
            id: 2,
            name: "device silent".into(),
            severity: Severity::Major,
            scope: Scope::default(),
            condition: Condition::Presence {
                states: vec![PresenceState::Stale, PresenceState::Offline],
                for_s,
            },
            enabled: true,
        }
    }

    fn dev(key: &str) -> DeviceFacts<'_> {
        DeviceFacts {
            key,
            convention: "topic",
            group: None,
        }
    }

    fn transitions(c: &[AlertChange]) -> Vec<Transition> {
        c.iter().map(|c| c.transition).collect()
    }

    #[test]
    fn spo2_below_92_for_30_s_fires_at_30_s_holds_through_hysteresis_and_clears() {
        let mut e = AlertEvaluator::new(vec![spo2(30.0, 1.0)], 1);
        let d = dev("ox");
        assert!(e.on_sample(&d, "spo2", 97.0, 0).is_empty());
        assert!(e.on_sample(&d, "spo2", 91.0, 10 * S).is_empty());
        assert_eq!(e.next_deadline(), Some(40 * S));
        assert!(e.tick(40 * S - 1).is_empty(), "not before 30 s");
        let fired = e.tick(40 * S);
        assert_eq!(transitions(&fired), [Transition::Fired]);
        let a = &fired[0].alert;
        assert_eq!((a.id, a.fired_at, a.value), (1, 40 * S, Some(91.0)));
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.message, "spo2 91 is below 92 for 30.0 s");
        assert!(
            e.on_sample(&d, "spo2", 92.5, 41 * S).is_empty(),
            "hysteresis holds"
        );
        assert_eq!(e.active().count(), 1);
        let cleared = e.on_sample(&d, "spo2", 93.0, 42 * S);
        assert_eq!(transitions(&cleared), [Transition::Cleared]);
        assert_eq!(cleared[0].alert.cleared_at, Some(42 * S));
        assert_eq!(e.active().count(), 0);
    }

    #[test]
    fn a_recovery_before_the_duration_cancels() {
        let mut e = AlertEvaluator::new(vec![spo2(30.0, 1.0)], 1);
        let d = dev("ox");
        e.on_sample(&d, "spo2", 91.0, 0);
        assert!(e.on_sample(&d, "spo2", 93.0, 20 * S).is_empty());
        assert!(e.tick(100 * S).is_empty());
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn a_value_hovering_at_the_threshold_still_fires() {
        let mut e = AlertEvaluator::new(vec![spo2(30.0, 1.0)], 1);
        let d = dev("ox");
        for (k, v) in [91.9, 92.1, 91.8, 92.2].iter().enumerate() {
            e.on_sample(&d, "spo2", *v, k as Micros * 10 * S);
        }
        assert_eq!(transitions(&e.tick(30 * S)), [Transition::Fired]);
    }

    #[test]
    fn zero_duration_fires_at_once_and_other_metrics_are_ignored() {
        let mut e = AlertEvaluator::new(vec![spo2(0.0, 0.0)], 5);
        let d = dev("ox");
        assert!(e.on_sample(&d, "pulse", 10.0, 0).is_empty());
        let c = e.on_sample(&d, "spo2", 80.0, S);
        assert_eq!(c[0].alert.id, 5);
        assert_eq!(c[0].alert.message, "spo2 80 is below 92");
    }

    #[test]
    fn acknowledged_alerts_still_clear_and_fire_again_as_new_ones() {
        let mut e = AlertEvaluator::new(vec![spo2(0.0, 0.0)], 1);
        let d = dev("ox");
        let id = e.on_sample(&d, "spo2", 85.0, 0)[0].alert.id;
        let ack = e.acknowledge(id, S, Some("nurse".into())).unwrap();
        assert_eq!(ack.alert.state, AlertState::Acknowledged);
        assert!(e.acknowledge(id, S, None).is_err());
        assert!(e.acknowledge(99, S, None).is_err());
        let c = e.on_sample(&d, "spo2", 95.0, 2 * S);
        assert_eq!(c[0].alert.state, AlertState::Cleared);
        assert_eq!(c[0].alert.acked_by.as_deref(), Some("nurse"));
        let again = e.on_sample(&d, "spo2", 85.0, 3 * S);
        assert_eq!(again[0].alert.id, id + 1);
    }

    #[test]
    fn a_silent_device_for_10_minutes_is_major() {
        let mut e = AlertEvaluator::new(vec![silent(600.0)], 1);
        let d = dev("bp");
        assert!(e.on_presence(&d, PresenceState::Online, 0).is_empty());
        assert!(e.on_presence(&d, PresenceState::Stale, 60 * S).is_empty());
        // Stale then offline is still "silent": the clock keeps running.
        assert!(e
            .on_presence(&d, PresenceState::Offline, 300 * S)
            .is_empty());
        assert!(e.tick(659 * S).is_empty());
        let c = e.tick(660 * S);
        assert_eq!(c[0].alert.severity, Severity::Major);
        assert_eq!(c[0].alert.message, "bp: device silent for 10 min");
        let c = e.on_presence(&d, PresenceState::Online, 700 * S);
        assert_eq!(transitions(&c), [Transition::Cleared]);
    }

    #[test]
    fn scopes_pick_devices_by_key_convention_and_group() {
        let mut rule = spo2(0.0, 0.0);
        rule.scope = Scope {
            device: None,
            convention: Some("homie".into()),
            group: Some("Mrs Smith".into()),
        };
        let mut e = AlertEvaluator::new(vec![rule], 1);
        let other = DeviceFacts {
            key: "a",
            convention: "homie",
            group: Some("Mr Jones"),
        };
        assert!(e.on_sample(&other, "spo2", 80.0, 0).is_empty());
        let hers = DeviceFacts {
            key: "b",
            convention: "homie",
            group: Some("Mrs Smith"),
        };
        assert_eq!(e.on_sample(&hers, "spo2", 80.0, 0).len(), 1);
        let mut by_key = spo2(0.0, 0.0);
        by_key.scope.device = Some("x".into());
        let mut e = AlertEvaluator::new(vec![by_key], 1);
        assert!(e.on_sample(&dev("y"), "spo2", 80.0, 0).is_empty());
        assert_eq!(e.on_sample(&dev("x"), "spo2", 80.0, 0).len(), 1);
    }

    #[test]
    fn changing_or_deleting_a_rule_clears_its_alerts_and_keeps_the_others() {
        let mut e = AlertEvaluator::new(vec![spo2(0.0, 0.0), silent(0.0)], 1);
        e.on_sample(&dev("ox"), "spo2", 80.0, 0);
        e.on_presence(&dev("ox"), PresenceState::Offline, 0);
        assert_eq!(e.active().count(), 2);
        let mut changed = spo2(0.0, 0.0);
        changed.condition = Condition::Metric {
            metric: "spo2".into(),
            test: Threshold::Below(90.0),
            for_s: 0.0,
            hysteresis: 0.0,
        };
        let c = e.set_rules(vec![changed, silent(0.0)], 5 * S);
        assert_eq!(transitions(&c), [Transition::Cleared]);
        assert_eq!(c[0].alert.rule_id, 1);
        assert_eq!(e.active().count(), 1);
        let c = e.set_rules(vec![], 6 * S);
        assert_eq!(c[0].alert.rule_id, 2);
        assert_eq!(e.active().count(), 0);
    }

    #[test]
    fn restored_alerts_resume_and_orphans_clear() {
        let mut e = AlertEvaluator::new(vec![spo2(0.0, 1.0)], 1);
        let mut alert = e.on_sample(&dev("ox"), "spo2", 80.0, 0)[0].alert.clone();
        let mut orphan = alert.clone();
        orphan.id = 9;
        orphan.rule_id = 77;
        let mut f = AlertEvaluator::new(vec![spo2(0.0, 1.0)], 1);
        let c = f.restore(vec![alert.clone(), orphan], S);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].alert.id, 9);
        assert_eq!(f.active().count(), 1);
        // Still firing: a low value changes nothing, a good one clears it.
        assert!(f.on_sample(&dev("ox"), "spo2", 81.0, 2 * S).is_empty());
        let c = f.on_sample(&dev("ox"), "spo2", 98.0, 3 * S);
        alert.state = AlertState::Cleared;
        assert_eq!(c[0].alert.id, alert.id);
        // New ids continue after the restored ones.
        assert_eq!(f.on_sample(&dev("ox"), "spo2", 80.0, 4 * S)[0].alert.id, 10);
    }

    #[test]
    fn invalid_rules_are_refused_with_a_reason() {
        let mut r = spo2(30.0, 1.0);
        assert!(r.validate().is_ok());
        r.name = " ".into();
        assert!(r.validate().unwrap_err().contains("name"));
        let mut r = spo2(-1.0, 0.0);
        assert!(r.validate().unwrap_err().contains("for_s"));
        r = spo2(1.0, -1.0);
        assert!(r.validate().unwrap_err().contains("hysteresis"));
        r.condition = Condition::Metric {
            metric: "x".into(),
            test: Threshold::Outside {
                low: 5.0,
                high: 1.0,
            },
            for_s: 0.0,
            hysteresis: 0.0,
        };
        assert!(r.validate().unwrap_err().contains("low"));
        r.condition = Condition::Presence {
            states: vec![],
            for_s: 0.0,
        };
        assert!(r.validate().unwrap_err().contains("state"));
        let json = r#"{"name":"x","severity":"critical","condition":{"metric":{"metric":"t","test":{"below":1},"for_s":1}},"colour":1}"#;
        assert!(serde_json::from_str::<AlertRule>(json).is_err());
    }

    #[test]
    fn rules_read_from_json_as_the_api_documents_them() {
        let json = r#"{"name":"SpO2 low","severity":"critical","scope":{},
            "condition":{"metric":{"metric":"spo2","test":{"below":92.0},"for_s":30,"hysteresis":1}}}"#;
        let r: AlertRule = serde_json::from_str(json).unwrap();
        assert_eq!((r.id, r.enabled), (0, true));
        assert_eq!(r.condition, spo2(30.0, 1.0).condition);
        let band = r#"{"name":"t","severity":"minor","condition":{"metric":{"metric":"t","test":{"outside":{"low":1,"high":5}}}}}"#;
        assert!(serde_json::from_str::<AlertRule>(band)
            .unwrap()
            .validate()
            .is_ok());
    }

    /// Random readings, presence changes and ticks against the invariants:
    /// an alert fires only after its condition held for `for_s`, at most one
    /// alert is active per rule and device, ids increase, a cleared alert
    /// never comes back, and a tick leaves nothing due behind.
    #[test]
    fn random_histories_keep_the_invariants() {
        let mut rng = crate::testing::Rng::new(0x2545_F491_4F6C_DD1D);
        let mut next = || rng.next();
        for _round in 0..100 {
            let rules = vec![spo2(3.0, 1.0), silent(5.0)];
            let mut e = AlertEvaluator::new(rules, 1);
            let mut now: Micros = 0;
            let mut last_id = 0;
            let mut cleared = std::collections::HashSet::new();
            // When each (rule, device) condition began, per the inputs.
            let mut pending_since: HashMap<(i64, String), Micros> = HashMap::new();
            for _ in 0..400 {
                now += (next() % (2 * S as u64)) as Micros;
                let key = format!("d{}", next() % 3);
                let d = dev(&key);
                let changes = match next() % 4 {
                    0 | 1 => {
                        let v = 85.0 + (next() % 150) as f64 / 10.0;
                        if v < 92.0 {
                            pending_since.entry((1, key.clone())).or_insert(now);
                        } else if v >= 93.0 {
                            pending_since.remove(&(1, key.clone()));
                        }
                        e.on_sample(&d, "spo2", v, now)
                    }
                    2 => {
                        let s = [
                            PresenceState::Online,
                            PresenceState::Stale,
                            PresenceState::Offline,
                        ][(next() % 3) as usize];
                        if s == PresenceState::Online {
                            pending_since.remove(&(2, key.clone()));
                        } else {
                            pending_since.entry((2, key.clone())).or_insert(now);
                        }
                        e.on_presence(&d, s, now)
                    }
                    _ => {
                        let c = e.tick(now);
                        assert!(e.next_deadline().is_none_or(|d| d > now));
                        c
                    }
                };
                for c in changes {
                    let a = &c.alert;
                    assert!(!cleared.contains(&a.id), "a cleared alert came back: {a:?}");
                    match c.transition {
                        Transition::Fired => {
                            assert!(a.id > last_id);
                            last_id = a.id;
                            let since = pending_since[&(a.rule_id, a.device.clone())];
                            let need = if a.rule_id == 1 { 3 * S } else { 5 * S };
                            assert!(a.fired_at - since >= need, "{a:?} since {since}");
                        }
                        Transition::Cleared => {
                            cleared.insert(a.id);
                        }
                        Transition::Acknowledged => unreachable!(),
                    }
                }
                let mut seen = std::collections::HashSet::new();
                for a in e.active() {
                    assert!(
                        seen.insert((a.rule_id, a.device.clone())),
                        "two active alerts"
                    );
                }
            }
        }
    }
}
