//! The engine task: turns observations into stored records, devices,
//! presence and alerts, and tells the bus.
//!
//! One task owns all of it (the conventions' learned tables, the presence
//! tracker, the alert evaluator, what is known of each device), so none of
//! it needs a lock; the API reaches it through [`Command`]s. Silence is
//! judged by deadlines kept by the tracker and the evaluator, checked after
//! every observation and by one timer when nothing arrives.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};
use vigil_core::alert::{AlertChange, AlertEvaluator, AlertRule, DeviceFacts};
use vigil_core::coap::{CoapEvent, CoapWhat};
use vigil_core::convention::{Announced, DeviceInfo};
use vigil_core::decode::{decode_with, metric_name};
use vigil_core::presence::{PresenceState, PresenceTracker, Transition};
use vigil_core::{
    decode_payload, now_micros, ConnectionOutcome, Conventions, DeviceRule, DisconnectReason, Fact,
    Interpretation, Message, MessageRef, Micros, Observation, PayloadKind,
};
use vigil_store::{Change, DeviceDescription, DeviceSettings, Record, Sample, WriterHandle};

use crate::bus::{AlertEvent, ConnectionEventView, DeviceEvent, Event, EventBus, MessageEvent};
use crate::error::EngineError;

/// How often every device's presence bookkeeping (last sign of life, learned
/// interval) is saved, besides at every change and at shutdown.
const PRESENCE_SAVE_EVERY: Duration = Duration::from_secs(300);
/// How many client ids are remembered for connection-based presence.
const MAX_CLIENTS: usize = 100_000;

/// What the API asks of the engine task.
pub(crate) enum Command {
    /// Change what the user set for a device.
    Settings {
        device: String,
        update: SettingsUpdate,
        reply: oneshot::Sender<Result<DeviceSettings, EngineError>>,
    },
    /// Acknowledge an alert.
    Acknowledge {
        id: i64,
        by: Option<String>,
        reply: oneshot::Sender<Result<vigil_core::alert::Alert, EngineError>>,
    },
    /// Create (id 0) or replace a rule.
    SaveRule {
        rule: AlertRule,
        reply: oneshot::Sender<Result<AlertRule, EngineError>>,
    },
    /// Delete a rule.
    DeleteRule {
        id: i64,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// The rules.
    Rules {
        reply: oneshot::Sender<Vec<AlertRule>>,
    },
    /// The clients connected now.
    Clients {
        reply: oneshot::Sender<Vec<ClientView>>,
    },
}

/// A client connected now.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct ClientView {
    /// Its client id.
    pub client_id: String,
    /// The user name it logged in with (never the password).
    pub username: Option<String>,
    /// Its address.
    pub peer: String,
    /// `tcp` or `ws`.
    pub transport: vigil_core::Transport,
    /// `3.1.1` or `5`.
    pub version: vigil_core::MqttVersion,
    /// The keepalive it asked for, seconds (0: none).
    pub keepalive_s: u16,
    /// When its connection opened.
    pub connected_at: Micros,
    /// The device it publishes for, when it publishes for one only.
    pub device: Option<String>,
}

/// A partial change of a device's settings: absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// The name to show (empty: the device's own again).
    pub display_name: Option<String>,
    /// The group (empty: none).
    pub group: Option<String>,
    /// Hidden from the device list.
    pub hidden: Option<bool>,
    /// The interval the device is expected to keep, in seconds (0: learn it).
    pub expected_interval_s: Option<f64>,
}

/// What the engine task knows of one device.
#[derive(Debug, Default)]
struct Known {
    convention: &'static str,
    root: Option<String>,
    client_id: Option<String>,
    info: DeviceInfo,
    settings: DeviceSettings,
    /// Metrics whose unit has been written.
    units: HashSet<String>,
    /// Whether presence bookkeeping changed since it was last saved.
    dirty: bool,
}

/// Whose presence a client's connection speaks for.
#[derive(Debug, Clone, PartialEq)]
enum ClientOf {
    /// It has published for this device only.
    Device(String),
    /// It publishes for several devices (a gateway, a bridge): its connection
    /// says nothing about any one of them.
    Gateway,
}

pub(crate) struct Ingest {
    pub rule: DeviceRule,
    pub conventions: Conventions,
    pub presence: PresenceTracker,
    pub alerts: AlertEvaluator,
    pub rules: Vec<AlertRule>,
    pub writer: WriterHandle,
    pub bus: EventBus,
    pub received: Arc<AtomicU64>,
    pub webhooks: Vec<String>,
    pub webhook_queue: u32,
    pub webhook_wake: Arc<Notify>,
    /// Alert changes found at start (alerts whose rule is gone), stored first.
    pub startup_alerts: Vec<AlertChange>,
    known: HashMap<String, Known>,
    clients: HashMap<String, ClientOf>,
    /// Open connections per client id, and the latest of them.
    connected: HashMap<String, (u32, ClientView)>,
    /// The earliest deadline of the tracker or the evaluator.
    next_deadline: Option<Micros>,
}

impl Ingest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rule: DeviceRule,
        conventions: Conventions,
        presence: PresenceTracker,
        alerts: AlertEvaluator,
        rules: Vec<AlertRule>,
        writer: WriterHandle,
        bus: EventBus,
        received: Arc<AtomicU64>,
    ) -> Ingest {
        Ingest {
            rule,
            conventions,
            presence,
            alerts,
            rules,
            writer,
            bus,
            received,
            webhooks: Vec::new(),
            webhook_queue: 10_000,
            webhook_wake: Arc::new(Notify::new()),
            startup_alerts: Vec::new(),
            known: HashMap::new(),
            clients: HashMap::new(),
            connected: HashMap::new(),
            next_deadline: None,
        }
    }

    /// Puts back what the store knows of a device.
    pub fn restore_device(&mut self, row: &vigil_store::DeviceRow) {
        self.presence.restore(&row.id, row.presence.clone());
        let known = Known {
            convention: vigil_core::Convention::parse(&row.convention)
                .unwrap_or(vigil_core::Convention::Topic)
                .as_str(),
            root: row.root.clone(),
            client_id: row.client_id.clone(),
            info: DeviceInfo {
                name: row.name.clone(),
                model: row.model.clone(),
                manufacturer: row.manufacturer.clone(),
                firmware: row.firmware.clone(),
            },
            settings: row.settings.clone(),
            units: HashSet::new(),
            dirty: false,
        };
        if let Some(client) = &row.client_id {
            self.clients
                .insert(client.clone(), ClientOf::Device(row.id.clone()));
        }
        self.known.insert(row.id.clone(), known);
    }

    pub async fn run(
        mut self,
        mut observed: mpsc::Receiver<Observation>,
        mut commands: mpsc::Receiver<Command>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let startup = std::mem::take(&mut self.startup_alerts);
        self.alert_changes(startup).await;
        // Deadlines that passed while Vigil was stopped come first.
        self.check_deadlines(now_micros()).await;
        let mut save = tokio::time::interval(PRESENCE_SAVE_EVERY);
        save.tick().await;
        // One timer, moved only when the earliest deadline moves.
        let mut armed = self.next_deadline;
        let sleep = tokio::time::sleep_until(deadline_instant(armed));
        tokio::pin!(sleep);
        loop {
            if armed != self.next_deadline {
                armed = self.next_deadline;
                sleep.as_mut().reset(deadline_instant(armed));
            }
            tokio::select! {
                // Observations first: on stop, what is queued is still taken.
                biased;
                next = observed.recv() => match next {
                    Some(o) => {
                        let at = o.at();
                        self.handle(o).await;
                        if self.next_deadline.is_some_and(|d| d <= at) {
                            self.check_deadlines(now_micros()).await;
                        }
                    }
                    None => break,
                },
                Some(command) = commands.recv() => self.command(command).await,
                _ = &mut sleep => {
                    self.check_deadlines(now_micros()).await;
                    // Re-arm even if the earliest deadline is unchanged
                    // (the clock may have run slow against the timer).
                    armed = None;
                    sleep.as_mut().reset(deadline_instant(None));
                }
                _ = save.tick() => self.save_presence(false).await,
                _ = &mut stop => {
                    // The broker has closed every connection; take what they
                    // handed over, then stop.
                    while let Ok(o) = observed.try_recv() {
                        self.handle(o).await;
                    }
                    break;
                }
            }
        }
        self.save_presence(true).await;
        if let Err(e) = self.writer.clone().shutdown().await {
            tracing::error!("the store writer did not stop cleanly: {e}");
        }
    }

    async fn handle(&mut self, observation: Observation) {
        match observation {
            Observation::Message(m) => self.message(m).await,
            Observation::Coap(c) => self.coap(c).await,
            Observation::Session(_, change) => {
                let _ = self.writer.change(Change::Session(change)).await;
            }
            Observation::Connection(c) => {
                let (outcome, reason) = match &c.outcome {
                    ConnectionOutcome::Connected { .. } => ("connected", None),
                    ConnectionOutcome::Refused(why) => ("refused", Some(why.clone())),
                    ConnectionOutcome::Disconnected(why) => ("disconnected", Some(why.to_string())),
                };
                match &c.outcome {
                    ConnectionOutcome::Connected { keepalive, .. } => {
                        let open = self.connected.get(&c.client_id).map_or(0, |(n, _)| *n);
                        let latest = ClientView {
                            client_id: c.client_id.clone(),
                            username: c.username.clone(),
                            peer: c.peer.to_string(),
                            transport: c.transport,
                            version: c.version,
                            keepalive_s: *keepalive,
                            connected_at: c.at,
                            device: None, // known when asked: it may publish later
                        };
                        self.connected
                            .insert(c.client_id.clone(), (open + 1, latest));
                        if let Some(ClientOf::Device(device)) = self.clients.get(&c.client_id) {
                            let device = device.clone();
                            let t = self.presence.connected(&device, c.at);
                            self.after_presence(&device, t).await;
                        }
                    }
                    ConnectionOutcome::Disconnected(why) => {
                        if let Some((n, _)) = self.connected.get_mut(&c.client_id) {
                            *n -= 1;
                            if *n == 0 {
                                self.connected.remove(&c.client_id);
                            }
                        }
                        // Vigil's own shutdown says nothing about the device.
                        if *why != DisconnectReason::Shutdown {
                            if let Some(ClientOf::Device(device)) = self.clients.get(&c.client_id) {
                                let device = device.clone();
                                let lost =
                                    why.sends_will() && *why != DisconnectReason::SessionTakenOver;
                                let t = self.presence.disconnected(
                                    &device,
                                    c.at,
                                    lost,
                                    &why.to_string(),
                                );
                                self.after_presence(&device, t).await;
                            }
                        }
                    }
                    ConnectionOutcome::Refused(_) => {}
                }
                self.bus
                    .send(Event::Connection(Arc::new(ConnectionEventView {
                        at: c.at,
                        client_id: c.client_id,
                        username: c.username,
                        peer: c.peer.to_string(),
                        transport: c.transport,
                        version: c.version,
                        outcome,
                        reason,
                    })));
            }
        }
    }

    async fn message(&mut self, m: Message) {
        self.received.fetch_add(1, Ordering::Relaxed);
        let interpretation = self.conventions.interpret(MessageRef {
            at: m.at,
            topic: &m.topic,
            payload: &m.payload,
            retain: m.retain,
            client_id: m.client_id.as_deref(),
        });
        let Interpretation {
            owner,
            facts,
            metrics_given,
            claimed,
        } = interpretation;

        // Which device, and its readings.
        let mut samples = Vec::new();
        let mut units: Vec<(String, String)> = Vec::new();
        let (device, convention, root) = match &owner {
            Some(owner) => (
                Some(owner.key.clone()),
                owner.convention.as_str(),
                Some(owner.root.as_str()),
            ),
            None if claimed => (None, vigil_core::Convention::Topic.as_str(), None),
            None => match self.rule.split(&m.topic) {
                Some((device, _)) => (
                    Some(device.to_owned()),
                    vigil_core::Convention::Topic.as_str(),
                    None,
                ),
                None => (None, vigil_core::Convention::Topic.as_str(), None),
            },
        };
        if let Some(device) = &device {
            if !metrics_given {
                let rest = match (root, &owner) {
                    (Some(root), Some(_)) => m
                        .topic
                        .strip_prefix(root)
                        .map(|r| r.trim_start_matches('/'))
                        .unwrap_or(&m.topic),
                    _ => self.rule.split(&m.topic).map(|(_, r)| r).unwrap_or(""),
                };
                let decoded = decode_payload(&m.payload).metrics;
                for metric in decoded {
                    let name = metric_name(rest, &metric.name);
                    if let Some(unit) = &metric.unit {
                        units.push((name.clone(), unit.clone()));
                    }
                    samples.push(Sample {
                        metric: name,
                        value: metric.value,
                        at: metric.at,
                    });
                }
            }
            self.device_seen(device, convention, root, m.client_id.as_deref(), m.at)
                .await;
            for (metric, unit) in &units {
                self.unit(device, metric, unit).await;
            }
        }

        // A message that says its device is gone (a last will, a death
        // certificate, an "offline" availability) is no sign of life.
        let says_gone = facts.iter().any(|(about, fact)| {
            device.as_deref() == Some(about.key.as_str())
                && matches!(
                    fact,
                    Fact::Presence {
                        state: Announced::Offline,
                        ..
                    }
                )
        });

        // What the message says about devices.
        for (about, fact) in facts {
            let key = about.key.as_str();
            let is_owner = device.as_deref() == Some(key);
            if !is_owner {
                self.device_seen(
                    key,
                    about.convention.as_str(),
                    Some(&about.root),
                    None,
                    m.at,
                )
                .await;
            }
            match fact {
                Fact::Info(info) => self.describe(key, info, m.at).await,
                Fact::Presence { state, reason } => {
                    let state = match state {
                        Announced::Online => PresenceState::Online,
                        Announced::Offline => PresenceState::Offline,
                        Announced::Sleeping => PresenceState::Sleeping,
                    };
                    let t = self.presence.announced(key, m.at, state, reason);
                    self.after_presence(key, t).await;
                }
                Fact::Metric(metric) => {
                    if let Some(unit) = &metric.unit {
                        self.unit(key, &metric.name, unit).await;
                    }
                    if is_owner {
                        samples.push(Sample {
                            metric: metric.name,
                            value: metric.value,
                            at: metric.at,
                        });
                    }
                }
                Fact::Unit { metric, unit } => self.unit(key, &metric, &unit).await,
                Fact::StaleAfter(after) => {
                    if self.presence.set_stale_after(key, Some(after), m.at) {
                        self.save_presence_of(key).await;
                    }
                    self.deadlines_changed();
                }
                Fact::MetricsStale => {
                    let _ = self
                        .writer
                        .change(Change::MetricsStale {
                            device: key.to_owned(),
                        })
                        .await;
                }
            }
        }

        let alive = !(m.is_will || says_gone);
        self.finish(m, device, samples, alive).await;
    }

    /// What the CoAP side saw. A CoAP device is one endpoint (`coap/<address>`);
    /// a reading is stored as a message on `coap/<address>/<path>`, its
    /// metrics named by the resource path, or by SenML's own names.
    async fn coap(&mut self, event: CoapEvent) {
        let key = vigil_core::coap::device_id(event.address);
        let convention = vigil_core::Convention::Coap.as_str();
        match event.what {
            CoapWhat::Reading {
                path,
                payload,
                content_format,
                observe: _,
            } => {
                self.received.fetch_add(1, Ordering::Relaxed);
                let content_type = content_format.map(|cf| cf.to_string());
                let decoded = decode_with(&payload, content_type.as_deref());
                let senml = decoded.kind == PayloadKind::Senml;
                let resource = path.trim_start_matches('/');
                let mut samples = Vec::new();
                self.device_seen(&key, convention, Some(&key), None, event.at)
                    .await;
                for metric in decoded.metrics {
                    let name = if senml && !metric.name.is_empty() {
                        metric.name
                    } else {
                        metric_name(resource, &metric.name)
                    };
                    if let Some(unit) = &metric.unit {
                        self.unit(&key, &name, unit).await;
                    }
                    samples.push(Sample {
                        metric: name,
                        value: metric.value,
                        at: metric.at,
                    });
                }
                let m = Message {
                    at: event.at,
                    topic: format!("{key}{path}"),
                    payload,
                    qos: 0,
                    retain: false,
                    client_id: None,
                    user_properties: Vec::new(),
                    content_type,
                    is_will: false,
                };
                self.finish(m, Some(key), samples, true).await;
            }
            CoapWhat::Answered {
                how,
                resources,
                alive,
            } => {
                self.device_seen(&key, convention, Some(&key), None, event.at)
                    .await;
                let (resources, error) = match resources {
                    Ok(list) => (serde_json::to_string(&list).ok(), None),
                    Err(e) => (None, Some(e)),
                };
                let _ = self
                    .writer
                    .change(Change::CoapDevice {
                        device: key.clone(),
                        address: event.address.to_string(),
                        found_by: how,
                        resources,
                        error,
                        at: event.at,
                    })
                    .await;
                if alive {
                    let t = self.presence.traffic(&key, event.at);
                    if let Some(k) = self.known.get_mut(&key) {
                        k.dirty = true;
                    }
                    self.after_presence(&key, t).await;
                    self.deadlines_changed();
                }
            }
            CoapWhat::Unreachable { reason } => {
                let t = self.presence.announced(
                    &key,
                    event.at,
                    PresenceState::Offline,
                    format!("CoAP: {reason}"),
                );
                self.after_presence(&key, t).await;
                self.deadlines_changed();
            }
        }
    }

    /// What every message ends with, whatever its source: a sign of life
    /// for its device (unless `alive` is false: a will, an "offline"), the
    /// alert rules on its readings, the live event, and the stored record.
    async fn finish(
        &mut self,
        m: Message,
        device: Option<String>,
        samples: Vec<Sample>,
        alive: bool,
    ) {
        // A message is a sign of life (a will is the opposite).
        if let (Some(d), true) = (&device, alive) {
            let t = self.presence.traffic(d, m.at);
            if let Some(k) = self.known.get_mut(d) {
                k.dirty = true;
            }
            self.after_presence(d, t).await;
            self.deadlines_changed();
        }

        // Alert rules on the readings.
        if let Some(d) = &device {
            if !samples.is_empty() && !self.rules.is_empty() {
                let mut changes = Vec::new();
                {
                    let facts = device_facts(&self.known, d);
                    for s in &samples {
                        changes.extend(self.alerts.on_sample(
                            &facts,
                            &s.metric,
                            s.value,
                            s.at.unwrap_or(m.at),
                        ));
                    }
                }
                self.alert_changes(changes).await;
                self.deadlines_changed();
            }
        }

        if self.bus.has_message_listeners() {
            self.bus.send(Event::Message(Arc::new(MessageEvent {
                at: m.at,
                topic: m.topic.clone(),
                device: device.clone(),
                client_id: m.client_id.clone(),
                qos: m.qos,
                retain: m.retain,
                size: m.payload.len(),
            })));
        }
        let properties = properties_json(&m);
        let record = Record {
            at: m.at,
            topic: m.topic,
            payload: m.payload,
            qos: m.qos,
            retain: m.retain,
            client_id: m.client_id,
            properties,
            device,
            samples,
        };
        if let Err(e) = self.writer.write(record).await {
            tracing::error!("a message could not be handed to the store: {e}");
        }
    }

    /// Notes a device (new, or its convention/root/client changed) and which
    /// client speaks for it.
    async fn device_seen(
        &mut self,
        key: &str,
        convention: &'static str,
        root: Option<&str>,
        client_id: Option<&str>,
        at: Micros,
    ) {
        if let Some(client) = client_id {
            self.learn_client(client, key, at).await;
        }
        let (new, changed) = match self.known.get_mut(key) {
            Some(k) => {
                // A topic-rule guess never overrides what a convention said.
                let convention_changed = k.convention != convention
                    && convention != vigil_core::Convention::Topic.as_str();
                let root_changed = root.is_some() && k.root.as_deref() != root;
                let client_changed = client_id.is_some() && k.client_id.as_deref() != client_id;
                if convention_changed {
                    k.convention = convention;
                }
                if root_changed {
                    k.root = root.map(str::to_owned);
                }
                if client_changed {
                    k.client_id = client_id.map(str::to_owned);
                }
                (false, convention_changed || root_changed || client_changed)
            }
            None => {
                self.known.insert(
                    key.to_owned(),
                    Known {
                        convention,
                        root: root.map(str::to_owned),
                        client_id: client_id.map(str::to_owned),
                        ..Known::default()
                    },
                );
                (true, true)
            }
        };
        if changed {
            let _ = self
                .writer
                .change(Change::Describe(DeviceDescription {
                    device: key.to_owned(),
                    at,
                    convention: Some(convention.to_owned()),
                    root: root.map(str::to_owned),
                    client_id: client_id.map(str::to_owned),
                    ..DeviceDescription::default()
                }))
                .await;
        }
        if new {
            self.bus.send(Event::Device(Arc::new(DeviceEvent {
                id: key.to_owned(),
                at,
                change: "new",
            })));
        }
    }

    /// Learns that `client` publishes for `device`; a client publishing for
    /// several devices is a gateway, whose connection speaks for none.
    async fn learn_client(&mut self, client: &str, device: &str, at: Micros) {
        match self.clients.get(client) {
            Some(ClientOf::Device(d)) if d == device => {}
            Some(ClientOf::Gateway) => {}
            Some(ClientOf::Device(_)) => {
                self.clients.insert(client.to_owned(), ClientOf::Gateway);
            }
            None => {
                if self.clients.len() >= MAX_CLIENTS {
                    self.clients.clear();
                }
                self.clients
                    .insert(client.to_owned(), ClientOf::Device(device.to_owned()));
                // Its connection is open now: from here on it speaks for the
                // device (a device connected but silent is stale, not offline).
                if self.connected.contains_key(client) {
                    let t = self.presence.connected(device, at);
                    self.after_presence(device, t).await;
                }
            }
        }
    }

    async fn describe(&mut self, key: &str, info: DeviceInfo, at: Micros) {
        let Some(known) = self.known.get_mut(key) else {
            return;
        };
        let merged = DeviceInfo {
            name: info.name.or_else(|| known.info.name.clone()),
            model: info.model.or_else(|| known.info.model.clone()),
            manufacturer: info
                .manufacturer
                .or_else(|| known.info.manufacturer.clone()),
            firmware: info.firmware.or_else(|| known.info.firmware.clone()),
        };
        if merged == known.info {
            return;
        }
        known.info = merged.clone();
        let _ = self
            .writer
            .change(Change::Describe(DeviceDescription {
                device: key.to_owned(),
                at,
                name: merged.name,
                model: merged.model,
                manufacturer: merged.manufacturer,
                firmware: merged.firmware,
                ..DeviceDescription::default()
            }))
            .await;
        self.bus.send(Event::Device(Arc::new(DeviceEvent {
            id: key.to_owned(),
            at,
            change: "described",
        })));
    }

    async fn unit(&mut self, key: &str, metric: &str, unit: &str) {
        let Some(known) = self.known.get_mut(key) else {
            return;
        };
        if known.units.contains(metric) {
            return;
        }
        known.units.insert(metric.to_owned());
        let _ = self
            .writer
            .change(Change::Unit {
                device: key.to_owned(),
                metric: metric.to_owned(),
                unit: unit.to_owned(),
            })
            .await;
    }

    /// Stores a presence change, tells the bus and the alert rules.
    async fn after_presence(&mut self, device: &str, transition: Option<Transition>) {
        let Some(t) = transition else {
            return;
        };
        // Listeners first: storing may wait for the writer under load, and
        // the person watching should not.
        self.bus.send(Event::Presence(Arc::new(t.clone())));
        if let Some(presence) = self.presence.get(device).cloned() {
            let _ = self
                .writer
                .change(Change::Presence {
                    device: device.to_owned(),
                    presence,
                    transition: Some(t.clone()),
                })
                .await;
        }
        if let Some(k) = self.known.get_mut(device) {
            k.dirty = false;
        }
        let changes = if self.rules.is_empty() {
            Vec::new()
        } else {
            let facts = device_facts(&self.known, device);
            self.alerts.on_presence(&facts, t.to, t.at)
        };
        self.alert_changes(changes).await;
        self.deadlines_changed();
    }

    /// Stores alert changes, tells the bus, queues webhook deliveries.
    async fn alert_changes(&mut self, changes: Vec<AlertChange>) {
        for change in changes {
            let event = Arc::new(AlertEvent {
                transition: change.transition.as_str(),
                alert: change.alert,
            });
            self.bus.send(Event::Alert(event.clone()));
            let _ = self.writer.change(Change::Alert(event.alert.clone())).await;
            if !self.webhooks.is_empty() {
                let body = serde_json::to_string(&*event).unwrap_or_default();
                for url in &self.webhooks {
                    let _ = self
                        .writer
                        .change(Change::WebhookQueued {
                            at: now_micros(),
                            url: url.clone(),
                            body: body.clone(),
                            keep: self.webhook_queue,
                        })
                        .await;
                }
                self.webhook_wake.notify_one();
            }
        }
    }

    fn deadlines_changed(&mut self) {
        self.next_deadline = match (self.presence.next_deadline(), self.alerts.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    async fn check_deadlines(&mut self, now: Micros) {
        for t in self.presence.tick(now) {
            let device = t.device.clone();
            self.after_presence(&device, Some(t)).await;
        }
        let changes = self.alerts.tick(now);
        self.alert_changes(changes).await;
        self.deadlines_changed();
    }

    /// Saves one device's presence as it is now (no transition).
    async fn save_presence_of(&mut self, key: &str) {
        if let Some(presence) = self.presence.get(key).cloned() {
            let _ = self
                .writer
                .change(Change::Presence {
                    device: key.to_owned(),
                    presence,
                    transition: None,
                })
                .await;
        }
    }

    /// Saves every device's presence bookkeeping that changed (`all`: every
    /// device's), so a restart knows when each was last alive.
    async fn save_presence(&mut self, all: bool) {
        let keys: Vec<String> = self
            .known
            .iter_mut()
            .filter(|(_, k)| all || k.dirty)
            .map(|(key, k)| {
                k.dirty = false;
                key.clone()
            })
            .collect();
        for key in keys {
            self.save_presence_of(&key).await;
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Settings {
                device,
                update,
                reply,
            } => {
                let _ = reply.send(self.settings(device, update).await);
            }
            Command::Acknowledge { id, by, reply } => {
                let result = match self.alerts.acknowledge(id, now_micros(), by) {
                    Ok(change) => {
                        let alert = change.alert.clone();
                        self.alert_changes(vec![change]).await;
                        Ok(alert)
                    }
                    Err(e) => Err(EngineError::NotFound(e)),
                };
                let _ = reply.send(result);
            }
            Command::SaveRule { rule, reply } => {
                let _ = reply.send(self.save_rule(rule).await);
            }
            Command::DeleteRule { id, reply } => {
                let result = if self.rules.iter().any(|r| r.id == id) {
                    let mut rules = self.rules.clone();
                    rules.retain(|r| r.id != id);
                    self.set_rules(rules).await;
                    let _ = self.writer.change(Change::RuleDeleted { id }).await;
                    Ok(())
                } else {
                    Err(EngineError::NotFound(format!("no alert rule {id}")))
                };
                let _ = reply.send(result);
            }
            Command::Rules { reply } => {
                let _ = reply.send(self.rules.clone());
            }
            Command::Clients { reply } => {
                let mut clients: Vec<ClientView> = self
                    .connected
                    .values()
                    .map(|(_, view)| {
                        let mut view = view.clone();
                        if let Some(ClientOf::Device(d)) = self.clients.get(&view.client_id) {
                            view.device = Some(d.clone());
                        }
                        view
                    })
                    .collect();
                clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
                let _ = reply.send(clients);
            }
        }
    }

    async fn save_rule(&mut self, mut rule: AlertRule) -> Result<AlertRule, EngineError> {
        rule.validate().map_err(EngineError::BadRequest)?;
        let mut rules = self.rules.clone();
        if rule.id == 0 {
            rule.id = rules.iter().map(|r| r.id).max().unwrap_or(0) + 1;
            rules.push(rule.clone());
        } else if let Some(existing) = rules.iter_mut().find(|r| r.id == rule.id) {
            *existing = rule.clone();
        } else {
            return Err(EngineError::NotFound(format!("no alert rule {}", rule.id)));
        }
        let json = serde_json::to_string(&rule)
            .map_err(|e| EngineError::BadRequest(format!("cannot store the rule: {e}")))?;
        let _ = self
            .writer
            .change(Change::RuleSaved {
                id: rule.id,
                rule: json,
            })
            .await;
        self.set_rules(rules).await;
        Ok(rule)
    }

    async fn set_rules(&mut self, rules: Vec<AlertRule>) {
        self.rules = rules.clone();
        let changes = self.alerts.set_rules(rules, now_micros());
        self.alert_changes(changes).await;
        self.deadlines_changed();
    }

    async fn settings(
        &mut self,
        device: String,
        update: SettingsUpdate,
    ) -> Result<DeviceSettings, EngineError> {
        let Some(known) = self.known.get_mut(&device) else {
            return Err(EngineError::NotFound(format!("no device '{device}'")));
        };
        let mut settings = known.settings.clone();
        if let Some(name) = update.display_name {
            settings.display_name = Some(name.trim().to_owned()).filter(|n| !n.is_empty());
        }
        if let Some(group) = update.group {
            settings.group = Some(group.trim().to_owned()).filter(|g| !g.is_empty());
        }
        if let Some(hidden) = update.hidden {
            settings.hidden = hidden;
        }
        if let Some(seconds) = update.expected_interval_s {
            if !seconds.is_finite() || !(0.0..=365.0 * 86_400.0).contains(&seconds) {
                return Err(EngineError::BadRequest(format!(
                    "expected_interval_s must be between 0 (learn it) and one year, not {seconds}"
                )));
            }
            settings.expected_interval = (seconds > 0.0).then_some((seconds * 1e6) as Micros);
        }
        known.settings = settings.clone();
        let at = now_micros();
        self.presence
            .set_expected_interval(&device, settings.expected_interval, at);
        self.deadlines_changed();
        let _ = self
            .writer
            .change(Change::Settings {
                device: device.clone(),
                settings: settings.clone(),
            })
            .await;
        self.bus.send(Event::Device(Arc::new(DeviceEvent {
            id: device,
            at,
            change: "settings",
        })));
        Ok(settings)
    }
}

/// What alert rules may be scoped by.
fn device_facts<'a>(known: &'a HashMap<String, Known>, device: &'a str) -> DeviceFacts<'a> {
    let k = known.get(device);
    DeviceFacts {
        key: device,
        convention: k.map(|k| k.convention).unwrap_or("topic"),
        group: k.and_then(|k| k.settings.group.as_deref()),
    }
}

/// When a timer for a wall-clock deadline (µs) must fire; an hour from now
/// when there is none.
fn deadline_instant(deadline: Option<Micros>) -> tokio::time::Instant {
    let wait = match deadline {
        Some(d) => Duration::from_micros(d.saturating_sub(now_micros()).max(0) as u64),
        None => Duration::from_secs(3600),
    };
    tokio::time::Instant::now() + wait
}

/// MQTT 5 properties and flags worth keeping with a message, as JSON text.
fn properties_json(m: &Message) -> Option<String> {
    if m.user_properties.is_empty() && m.content_type.is_none() && !m.is_will {
        return None;
    }
    let mut o = serde_json::Map::new();
    if !m.user_properties.is_empty() {
        o.insert(
            "user_properties".into(),
            serde_json::to_value(&m.user_properties).unwrap_or_default(),
        );
    }
    if let Some(ct) = &m.content_type {
        o.insert("content_type".into(), ct.clone().into());
    }
    if m.is_will {
        o.insert("will".into(), true.into());
    }
    Some(serde_json::Value::Object(o).to_string())
}
