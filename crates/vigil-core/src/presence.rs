//! Presence: whether a device is there, as a state machine per device.

use serde::{Deserialize, Serialize};

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Nothing heard yet that says either way.
    Unknown,
    /// Connected, announced, or heard from within its expected interval.
    Online,
    /// Silent for longer than its expected interval allows.
    Stale,
    /// Gone: disconnected, its last will, a death certificate, or silent far
    /// past its expected interval.
    Offline,
    /// Said it will be quiet (Homie `sleeping`): silence is expected.
    Sleeping,
}

impl PresenceState {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Unknown => "unknown",
            PresenceState::Online => "online",
            PresenceState::Stale => "stale",
            PresenceState::Offline => "offline",
            PresenceState::Sleeping => "sleeping",
        }
    }

    /// The inverse of [`PresenceState::as_str`].
    pub fn parse(s: &str) -> Option<PresenceState> {
        Some(match s {
            "unknown" => PresenceState::Unknown,
            "online" => PresenceState::Online,
            "stale" => PresenceState::Stale,
            "offline" => PresenceState::Offline,
            "sleeping" => PresenceState::Sleeping,
            _ => return None,
        })
    }
}

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::time::Micros;

const SECOND: Micros = 1_000_000;

/// What made a presence change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum PresenceSource {
    /// The embedded broker saw the device's MQTT connection open or end.
    Connection,
    /// The device (or its last will) said so, in its convention.
    Announcement,
    /// A message from the device.
    Traffic,
    /// No message for longer than the device's expected interval allows.
    Silence,
}

impl PresenceSource {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceSource::Connection => "connection",
            PresenceSource::Announcement => "announcement",
            PresenceSource::Traffic => "traffic",
            PresenceSource::Silence => "silence",
        }
    }
}

/// One change of one device's presence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(
    feature = "ts",
    derive(ts_rs::TS),
    ts(export, rename = "PresenceTransition")
)]
pub struct Transition {
    /// The device's key.
    pub device: String,
    /// When it changed.
    pub at: Micros,
    /// The state before.
    pub from: PresenceState,
    /// The state after.
    pub to: PresenceState,
    /// Why, in words: "connection lost: keepalive timeout", "Tasmota LWT:
    /// Offline", "silent for 3.0 s (expected every 1.0 s)".
    pub reason: String,
    /// What kind of evidence it was.
    pub source: PresenceSource,
}

/// How silence is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// A device is stale after this many expected intervals of silence.
    pub stale_factor: f64,
    /// ...and offline (unless its MQTT connection is still open) after this
    /// many.
    pub offline_factor: f64,
    /// The expected interval of a device until its own has been learned, in
    /// seconds.
    pub default_interval_s: f64,
    /// At start, ask devices to announce themselves where their convention
    /// allows (Home Assistant `homeassistant/status` → `online`, Shelly
    /// `shellies/command` → `announce`, a Sparkplug rebirth request to each
    /// known edge node). Off by default: it writes to devices.
    pub announce_on_start: bool,
    /// How long after start to ask, in seconds: devices need a moment to
    /// reconnect to the restarted broker before they can hear it.
    pub announce_delay_s: f64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            stale_factor: 3.0,
            offline_factor: 10.0,
            default_interval_s: 600.0,
            announce_on_start: false,
            announce_delay_s: 10.0,
        }
    }
}

impl PresenceConfig {
    /// Checks the numbers; the error says which is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "presence.{name} must be a positive number, not {v}"
                ))
            }
        };
        positive("stale_factor", self.stale_factor)?;
        positive("offline_factor", self.offline_factor)?;
        positive("default_interval_s", self.default_interval_s)?;
        if !(0.0..=3600.0).contains(&self.announce_delay_s) {
            return Err(format!(
                "presence.announce_delay_s must be between 0 and 3600, not {}",
                self.announce_delay_s
            ));
        }
        if self.offline_factor <= self.stale_factor {
            return Err(format!(
                "presence.offline_factor ({}) must be larger than presence.stale_factor ({})",
                self.offline_factor, self.stale_factor
            ));
        }
        Ok(())
    }
}

/// Messages closer together than this belong to one burst (a device
/// publishing several topics at once) and do not count as an interval.
const BURST: Micros = 100_000;
/// How many recent intervals the learned interval is the median of.
const GAPS: usize = 8;
/// Intervals needed before the learned one replaces the default.
const GAPS_TO_LEARN: usize = 2;
/// The shortest time silence can take to make a device stale.
const MIN_STALE: Micros = SECOND;

/// One device's presence, as stored and restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct DevicePresence {
    /// Where it stands.
    pub state: PresenceState,
    /// Since when.
    pub since: Micros,
    /// Why, in words.
    pub reason: String,
    /// When it last gave a sign of life: a message, a connection, an online
    /// announcement (0: never).
    pub last_seen: Micros,
    /// The interval learned from its traffic, µs.
    pub learned_interval: Option<Micros>,
    /// The interval the user set, µs; wins over the learned one.
    pub expected_interval: Option<Micros>,
    /// Silence allowed before stale, as its convention declares it (Home
    /// Assistant `expire_after`), µs.
    pub stale_after: Option<Micros>,
}

impl DevicePresence {
    fn new(at: Micros) -> DevicePresence {
        DevicePresence {
            state: PresenceState::Unknown,
            since: at,
            reason: String::new(),
            last_seen: 0,
            learned_interval: None,
            expected_interval: None,
            stale_after: None,
        }
    }
}

#[derive(Debug)]
struct Entry {
    key: String,
    presence: DevicePresence,
    /// Open MQTT connections of clients that speak for this device alone.
    connections: u32,
    gaps: [Micros; GAPS],
    gap_count: usize,
    /// The time of this device's live entry in the deadline queue, if any.
    armed: Option<Micros>,
}

/// Every device's presence, with one deadline queue for all of them.
///
/// Inputs, strongest first: the broker's view of a device's connection, the
/// device's own announcements (birth, last will, availability), its traffic
/// against its expected interval. Silence is judged by one queue of
/// deadlines, not a timer per device: a message only moves the device's
/// `last_seen`, and a deadline that comes due is checked against it and put
/// back if the device spoke meanwhile, so the cost per message is constant.
#[derive(Debug)]
pub struct PresenceTracker {
    config: PresenceConfig,
    index: HashMap<String, usize>,
    entries: Vec<Entry>,
    deadlines: BinaryHeap<Reverse<(Micros, usize)>>,
}

impl PresenceTracker {
    /// A tracker that knows no device.
    pub fn new(config: PresenceConfig) -> PresenceTracker {
        PresenceTracker {
            config,
            index: HashMap::new(),
            entries: Vec::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// Puts back what was stored, as it was; deadlines start from each
    /// device's last message, so a device that stayed silent while Vigil was
    /// stopped goes stale (or offline) at the first [`PresenceTracker::tick`].
    pub fn restore(&mut self, key: &str, presence: DevicePresence) {
        let i = self.entry(key, presence.since);
        let e = &mut self.entries[i];
        if let Some(learned) = presence.learned_interval {
            e.gaps = [learned; GAPS];
            e.gap_count = GAPS;
        }
        e.presence = presence;
        self.arm(i);
    }

    /// A device's presence, if known.
    pub fn get(&self, key: &str) -> Option<&DevicePresence> {
        self.index.get(key).map(|&i| &self.entries[i].presence)
    }

    /// How many devices are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A message from the device arrived.
    pub fn traffic(&mut self, key: &str, at: Micros) -> Option<Transition> {
        let i = self.entry(key, at);
        let e = &mut self.entries[i];
        let previous = e.presence.last_seen;
        if at < previous {
            return None; // out of order: older news than what we have
        }
        let gap = at - previous;
        if previous > 0 && gap >= BURST {
            e.gaps[e.gap_count % GAPS] = gap;
            e.gap_count += 1;
            if e.gap_count >= GAPS_TO_LEARN {
                e.presence.learned_interval = Some(median(&e.gaps[..e.gap_count.min(GAPS)]));
            }
        }
        e.presence.last_seen = at;
        let transition = match e.presence.state {
            PresenceState::Unknown | PresenceState::Stale | PresenceState::Offline => {
                let reason = match e.presence.state {
                    PresenceState::Unknown => "first message".to_owned(),
                    _ => "messages again".to_owned(),
                };
                self.change(
                    i,
                    at,
                    PresenceState::Online,
                    reason,
                    PresenceSource::Traffic,
                )
            }
            PresenceState::Online | PresenceState::Sleeping => None,
        };
        // Usually a no-op: the armed deadline is earlier than the new one and
        // will be re-checked when due. It pushes only when learning has
        // shortened the interval, or nothing was armed.
        self.arm(i);
        transition
    }

    /// The device's own MQTT connection opened (`reason` says how).
    pub fn connected(&mut self, key: &str, at: Micros) -> Option<Transition> {
        let i = self.entry(key, at);
        let e = &mut self.entries[i];
        e.connections += 1;
        // Connecting is a sign of life: silence counts from here.
        e.presence.last_seen = e.presence.last_seen.max(at);
        self.arm(i);
        self.change(
            i,
            at,
            PresenceState::Online,
            "connected".into(),
            PresenceSource::Connection,
        )
    }

    /// The device's own MQTT connection ended. `lost` is true when it ended
    /// without a goodbye (dropped, keepalive, protocol error): then the
    /// device is offline at once. After a clean DISCONNECT the device is left
    /// to its traffic deadlines, since many battery devices connect, publish
    /// and disconnect every time.
    pub fn disconnected(
        &mut self,
        key: &str,
        at: Micros,
        lost: bool,
        reason: &str,
    ) -> Option<Transition> {
        let i = self.entry(key, at);
        let e = &mut self.entries[i];
        e.connections = e.connections.saturating_sub(1);
        if e.connections > 0 {
            return None;
        }
        let transition = if lost {
            self.change(
                i,
                at,
                PresenceState::Offline,
                format!("connection lost: {reason}"),
                PresenceSource::Connection,
            )
        } else {
            None
        };
        self.arm(i);
        transition
    }

    /// The device announced itself, or its last will did.
    pub fn announced(
        &mut self,
        key: &str,
        at: Micros,
        state: PresenceState,
        reason: String,
    ) -> Option<Transition> {
        let i = self.entry(key, at);
        if state == PresenceState::Online {
            let p = &mut self.entries[i].presence;
            p.last_seen = p.last_seen.max(at);
        }
        let t = self.change(i, at, state, reason, PresenceSource::Announcement);
        self.arm(i);
        t
    }

    /// The user's expected interval for a device (`None`: learn it).
    pub fn set_expected_interval(&mut self, key: &str, interval: Option<Micros>, at: Micros) {
        let i = self.entry(key, at);
        self.entries[i].presence.expected_interval = interval;
        self.arm(i);
    }

    /// The silence a device's convention allows before it is stale; whether
    /// that changed anything.
    pub fn set_stale_after(&mut self, key: &str, stale_after: Option<Micros>, at: Micros) -> bool {
        let i = self.entry(key, at);
        if self.entries[i].presence.stale_after == stale_after {
            return false;
        }
        self.entries[i].presence.stale_after = stale_after;
        self.arm(i);
        true
    }

    /// When the next deadline is due, if any.
    pub fn next_deadline(&mut self) -> Option<Micros> {
        // Drop superseded entries, so the caller does not wake up for them.
        while let Some(&Reverse((at, i))) = self.deadlines.peek() {
            if self.entries[i].armed == Some(at) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Judges the silence of every device whose deadline is due at `now`.
    pub fn tick(&mut self, now: Micros) -> Vec<Transition> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, i))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.entries[i].armed != Some(at) {
                continue; // superseded
            }
            self.entries[i].armed = None;
            match self.due(i) {
                Some((due, state)) if due <= now => {
                    // A bound shortened meanwhile (by the user) can fall
                    // before the current state began: history stays ordered.
                    let due = due.max(self.entries[i].presence.since);
                    let reason = self.silence_reason(i, due);
                    if let Some(t) = self.change(i, due, state, reason, PresenceSource::Silence) {
                        out.push(t);
                    }
                    self.arm(i);
                }
                Some(_) => self.arm(i),
                None => {}
            }
        }
        out
    }

    /// The interval a device is expected to keep, µs.
    pub fn interval(&self, key: &str) -> Option<Micros> {
        self.index.get(key).map(|&i| self.expected(i))
    }

    fn expected(&self, i: usize) -> Micros {
        let p = &self.entries[i].presence;
        p.expected_interval
            .or(p.learned_interval)
            .unwrap_or((self.config.default_interval_s * SECOND as f64) as Micros)
            .max(1)
    }

    /// When silence makes the device's next change, and to what.
    fn due(&self, i: usize) -> Option<(Micros, PresenceState)> {
        let e = &self.entries[i];
        let p = &e.presence;
        if p.last_seen == 0 {
            return None; // never heard: nothing to miss
        }
        let interval = self.expected(i) as f64;
        let stale = match (p.expected_interval, p.stale_after) {
            (None, Some(after)) => after,
            _ => (interval * self.config.stale_factor) as Micros,
        }
        .max(MIN_STALE);
        let offline = ((interval * self.config.offline_factor) as Micros).max(stale + MIN_STALE);
        match p.state {
            PresenceState::Online => Some((p.last_seen + stale, PresenceState::Stale)),
            // A device whose connection is still open is reachable: silence
            // makes it stale, never offline.
            PresenceState::Stale if e.connections == 0 => {
                Some((p.last_seen + offline, PresenceState::Offline))
            }
            _ => None,
        }
    }

    fn silence_reason(&self, i: usize, due: Micros) -> String {
        let p = &self.entries[i].presence;
        let expected = match (p.expected_interval, p.learned_interval) {
            (Some(e), _) => format!("expected every {} (set by the user)", seconds(e)),
            (None, Some(l)) => format!("expected every {} (learned)", seconds(l)),
            (None, None) => format!("expected every {} (default)", seconds(self.expected(i))),
        };
        let expected = match (p.expected_interval, p.stale_after) {
            (None, Some(after)) if p.state == PresenceState::Online => {
                format!("allowed {} by its configuration", seconds(after))
            }
            _ => expected,
        };
        format!("silent for {}, {expected}", seconds(due - p.last_seen))
    }

    /// Puts the device's next deadline in the queue unless an entry at that
    /// time or earlier is already there.
    fn arm(&mut self, i: usize) {
        let Some((due, _)) = self.due(i) else {
            self.entries[i].armed = None;
            return;
        };
        match self.entries[i].armed {
            Some(armed) if armed <= due => {} // it will be re-checked then
            _ => {
                self.entries[i].armed = Some(due);
                self.deadlines.push(Reverse((due, i)));
            }
        }
    }

    fn change(
        &mut self,
        i: usize,
        at: Micros,
        to: PresenceState,
        reason: String,
        source: PresenceSource,
    ) -> Option<Transition> {
        let e = &mut self.entries[i];
        if e.presence.state == to {
            return None;
        }
        let from = e.presence.state;
        e.presence.state = to;
        e.presence.since = at;
        e.presence.reason.clone_from(&reason);
        Some(Transition {
            device: e.key.clone(),
            at,
            from,
            to,
            reason,
            source,
        })
    }

    fn entry(&mut self, key: &str, at: Micros) -> usize {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        let i = self.entries.len();
        self.entries.push(Entry {
            key: key.to_owned(),
            presence: DevicePresence::new(at),
            connections: 0,
            gaps: [0; GAPS],
            gap_count: 0,
            armed: None,
        });
        self.index.insert(key.to_owned(), i);
        i
    }
}

fn median(gaps: &[Micros]) -> Micros {
    let mut sorted = [0; GAPS];
    let sorted = &mut sorted[..gaps.len()];
    sorted.copy_from_slice(gaps);
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

/// A duration in words: "3.0 s", "10 min", "2.5 h".
pub fn seconds(micros: Micros) -> String {
    let s = micros as f64 / SECOND as f64;
    if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceState::*;

    fn tracker() -> PresenceTracker {
        PresenceTracker::new(PresenceConfig::default())
    }

    fn states(ts: &[Transition]) -> Vec<(PresenceState, PresenceState)> {
        ts.iter().map(|t| (t.from, t.to)).collect()
    }

    #[test]
    fn a_device_every_second_goes_stale_then_offline_when_it_stops() {
        let mut p = tracker();
        let first = p.traffic("ox", 10 * SECOND).unwrap();
        assert_eq!(
            (first.from, first.to, first.source),
            (Unknown, Online, PresenceSource::Traffic)
        );
        for s in 11..=20 {
            assert_eq!(p.traffic("ox", s * SECOND), None);
        }
        assert_eq!(p.interval("ox"), Some(SECOND));
        // Stale after 3 intervals of silence, not before.
        assert!(p.tick(22 * SECOND).is_empty());
        assert_eq!(p.next_deadline(), Some(23 * SECOND));
        let stale = p.tick(23 * SECOND);
        assert_eq!(states(&stale), vec![(Online, Stale)]);
        assert_eq!(stale[0].at, 23 * SECOND);
        assert_eq!(stale[0].source, PresenceSource::Silence);
        assert_eq!(
            stale[0].reason,
            "silent for 3.0 s, expected every 1.0 s (learned)"
        );
        // Offline after 10 intervals.
        assert!(p.tick(29 * SECOND).is_empty());
        assert_eq!(states(&p.tick(30 * SECOND)), vec![(Stale, Offline)]);
        assert_eq!(p.next_deadline(), None);
        // It speaks again.
        let back = p.traffic("ox", 40 * SECOND).unwrap();
        assert_eq!((back.from, back.to), (Offline, Online));
    }

    #[test]
    fn bursts_do_not_shrink_the_interval() {
        let mut p = tracker();
        for minute in 1..=5 {
            for topic in 0..4 {
                p.traffic("plug", minute * 60 * SECOND + topic * 1000);
            }
        }
        let interval = p.interval("plug").unwrap();
        assert!(
            (59 * SECOND..=61 * SECOND).contains(&interval),
            "{interval}"
        );
    }

    #[test]
    fn the_users_interval_wins_and_the_default_applies_before_learning() {
        let mut p = tracker();
        p.traffic("bp", SECOND);
        assert_eq!(p.next_deadline(), Some(SECOND + 1800 * SECOND));
        p.set_expected_interval("bp", Some(10 * SECOND), SECOND);
        assert_eq!(p.next_deadline(), Some(31 * SECOND));
        let t = p.tick(31 * SECOND);
        assert_eq!(
            t[0].reason,
            "silent for 30.0 s, expected every 10.0 s (set by the user)"
        );
    }

    #[test]
    fn expire_after_sets_the_stale_bound() {
        let mut p = tracker();
        p.set_stale_after("ha", Some(5 * SECOND), 0);
        p.traffic("ha", SECOND);
        assert_eq!(states(&p.tick(6 * SECOND)), vec![(Online, Stale)]);
    }

    #[test]
    fn a_lost_connection_is_offline_at_once_a_clean_one_is_not() {
        let mut p = tracker();
        let t = p.connected("pump", SECOND).unwrap();
        assert_eq!(
            (t.from, t.to, t.source),
            (Unknown, Online, PresenceSource::Connection)
        );
        p.traffic("pump", 2 * SECOND);
        assert_eq!(
            p.disconnected("pump", 3 * SECOND, false, "disconnected cleanly"),
            None
        );
        assert_eq!(p.get("pump").unwrap().state, Online);
        p.connected("pump", 4 * SECOND);
        let t = p
            .disconnected("pump", 5 * SECOND, true, "keepalive timeout")
            .unwrap();
        assert_eq!((t.from, t.to), (Online, Offline));
        assert_eq!(t.reason, "connection lost: keepalive timeout");
    }

    #[test]
    fn a_connected_device_that_falls_silent_is_stale_not_offline() {
        let mut p = tracker();
        p.set_expected_interval("cuff", Some(SECOND), 0);
        p.connected("cuff", 0);
        p.traffic("cuff", SECOND);
        assert_eq!(states(&p.tick(4 * SECOND)), vec![(Online, Stale)]);
        assert!(p.tick(1000 * SECOND).is_empty());
        assert_eq!(p.get("cuff").unwrap().state, Stale);
        // The connection drops while stale: offline at once.
        let t = p.disconnected("cuff", 1001 * SECOND, true, "connection dropped");
        assert_eq!(t.map(|t| t.to), Some(Offline));
    }

    #[test]
    fn announcements_and_sleep() {
        let mut p = tracker();
        let t = p
            .announced("h", SECOND, Sleeping, "Homie $state: sleeping".into())
            .unwrap();
        assert_eq!(
            (t.from, t.to, t.source),
            (Unknown, Sleeping, PresenceSource::Announcement)
        );
        p.traffic("h", 2 * SECOND);
        assert_eq!(
            p.get("h").unwrap().state,
            Sleeping,
            "a sleeping device's last words keep it asleep"
        );
        assert!(p.tick(100_000 * SECOND).is_empty(), "sleep is never stale");
        assert_eq!(p.announced("h", 3 * SECOND, Sleeping, "again".into()), None);
    }

    #[test]
    fn flapping_gives_two_transitions_per_cycle_and_ends_right() {
        let mut p = tracker();
        let mut events = 0;
        for k in 0..20 {
            let at = k * SECOND / 2;
            events += p.connected("flappy", at).into_iter().count();
            events += p
                .disconnected("flappy", at + 1000, true, "dropped")
                .into_iter()
                .count();
        }
        assert_eq!(events, 40);
        assert_eq!(p.get("flappy").unwrap().state, Offline);
        events += p.connected("flappy", 11 * SECOND).into_iter().count();
        assert_eq!(events, 41);
        assert_eq!(p.get("flappy").unwrap().state, Online);
    }

    #[test]
    fn restored_presence_is_judged_from_the_last_message() {
        let mut p = tracker();
        for s in 0..10 {
            p.traffic("scale", 100 * SECOND + s * SECOND);
        }
        let saved = p.get("scale").unwrap().clone();
        let mut q = tracker();
        q.restore("scale", saved.clone());
        assert_eq!(q.get("scale"), Some(&saved));
        assert_eq!(q.interval("scale"), Some(SECOND));
        // Vigil was stopped for an hour: both deadlines are long past.
        let ts = q.tick(3700 * SECOND);
        assert_eq!(states(&ts), vec![(Online, Stale), (Stale, Offline)]);
        assert_eq!(ts[0].at, 112 * SECOND, "stale at the time it became so");
        assert_eq!(ts[1].at, 119 * SECOND);
    }

    #[test]
    fn old_news_is_ignored() {
        let mut p = tracker();
        p.traffic("d", 10 * SECOND);
        assert_eq!(p.traffic("d", 5 * SECOND), None);
        assert_eq!(p.get("d").unwrap().last_seen, 10 * SECOND);
    }

    /// Random inputs against the invariants: transitions chain, never repeat
    /// a state, are never earlier than the previous one of the same device,
    /// silence never brings a device online, and a device is stale only
    /// after at least its bound of silence.
    #[test]
    fn random_histories_keep_the_invariants() {
        let mut rng = crate::testing::Rng::new(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next();
        for _round in 0..200 {
            let mut p = tracker();
            let mut now: Micros = SECOND;
            let mut last: HashMap<String, (PresenceState, Micros)> = HashMap::new();
            for _step in 0..300 {
                now += (next() % (5 * SECOND as u64)) as Micros;
                let key = format!("d{}", next() % 5);
                let ts: Vec<Transition> = match next() % 8 {
                    0 => p.connected(&key, now).into_iter().collect(),
                    1 => p
                        .disconnected(&key, now, next() % 2 == 0, "x")
                        .into_iter()
                        .collect(),
                    2 => p
                        .announced(
                            &key,
                            now,
                            [Online, Offline, Sleeping][(next() % 3) as usize],
                            "a".into(),
                        )
                        .into_iter()
                        .collect(),
                    3 => {
                        p.set_expected_interval(
                            &key,
                            Some(((next() % 5) as Micros + 1) * SECOND),
                            now,
                        );
                        Vec::new()
                    }
                    4 | 5 => p.traffic(&key, now).into_iter().collect(),
                    _ => {
                        let ts = p.tick(now);
                        assert!(
                            p.next_deadline().is_none_or(|d| d > now),
                            "a due deadline was left behind"
                        );
                        ts
                    }
                };
                for t in ts {
                    assert_ne!(t.from, t.to);
                    let (state, at) = last.get(&t.device).copied().unwrap_or((Unknown, 0));
                    assert_eq!(t.from, state, "{t:?}");
                    assert!(t.at >= at, "{t:?} after {at}");
                    assert!(t.at <= now);
                    if t.source == PresenceSource::Silence {
                        assert!(matches!(t.to, Stale | Offline));
                        let seen = p.get(&t.device).unwrap().last_seen;
                        assert!(t.at - seen >= MIN_STALE);
                    }
                    last.insert(t.device.clone(), (t.to, t.at));
                }
            }
        }
    }
}
