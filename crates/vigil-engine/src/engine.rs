//! The engine: lifecycle and the API both shells call.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use vigil_broker::{Broker, Resume, Retained, Security};

use crate::auth::Gatekeeper;
use crate::coap::{
    Coap, CoapDeviceView, CoapRequestBody, CoapResponseView, CoapView, DiscoveryView,
};
use vigil_core::alert::{Alert, AlertEvaluator, AlertRule};
use vigil_core::presence::PresenceTracker;
use vigil_core::{now_micros, Conventions, Message, MessageRef, Observation};
use vigil_store::{DeviceSettings, PresenceChange, Retention, Store, WriterHandle, WriterOptions};

use crate::bus::{Event, EventBus, FlushedEvent, Subscription};
use crate::config::Config;
use crate::error::EngineError;
use crate::ingest::ClientView;
use crate::ingest::{Command, Ingest, SettingsUpdate};
use crate::view::MessageView;
use crate::{DeviceRow, MessageQuery, Series, StoreStats};

/// Observations waiting for the engine; when full, publishers wait (TCP
/// backpressure), so nothing accepted is ever dropped. Small on purpose:
/// every queued message is acknowledged but not yet committed, so the queues
/// bound both the publish-to-stored latency and what a crash can lose.
const OBSERVATION_QUEUE: usize = 2048;
/// Records waiting for the store writer (same reasoning).
const WRITER_QUEUE: usize = 16 * 1024;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// A message to publish on Vigil's own behalf.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The payload as text...
    #[serde(default)]
    pub payload: Option<String>,
    /// ...or as base64 for bytes.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// QoS (0, 1 or 2): recorded with the message; subscribers receive it at
    /// the QoS of their subscription.
    #[serde(default)]
    pub qos: u8,
    /// Whether the broker retains it.
    #[serde(default)]
    pub retain: bool,
}

/// The embedded broker as the UI shows it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct BrokerView {
    /// Where it listens.
    pub listeners: Vec<ListenerView>,
    /// The largest payload accepted, bytes.
    pub max_payload: u64,
    /// Connections allowed at once.
    pub max_connections: u64,
    /// PUBLISHes dropped since start: outside what their client may publish.
    pub refused_publishes: u64,
    /// Subscriptions refused since start: outside what their client may read.
    pub refused_subscriptions: u64,
    /// Clients connected now, by client id.
    pub clients: Vec<ClientView>,
    /// Clients away whose MQTT sessions are kept, by client id.
    pub absent: Vec<AbsentClientView>,
}

/// A client away whose MQTT session the broker keeps (subscriptions, and
/// messages queued for its return).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct AbsentClientView {
    /// Its client id.
    pub client_id: String,
    /// Since when it has been away, µs.
    pub away_since: vigil_core::Micros,
    /// When its session ends if it stays away, µs (`null`: never).
    pub expires_at: Option<vigil_core::Micros>,
    /// Messages waiting for it.
    pub queued: u64,
}

/// One listener of the broker.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct ListenerView {
    /// `mqtt` (TCP), `ws` (WebSocket), `mqtts` (TLS) or `wss` (secure WebSocket).
    pub protocol: String,
    /// The address it is bound to.
    pub address: String,
    /// The HTTP path of a WebSocket listener.
    pub path: Option<String>,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// For TLS: whether client certificates are `required`, `optional` or `off`.
    pub client_certificates: Option<String>,
    /// Whether only this machine can reach it.
    pub loopback_only: bool,
}

/// Counters of a running engine.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct Stats {
    /// What the store holds.
    #[serde(flatten)]
    pub store: StoreStats,
    /// Clients connected now.
    pub connections: usize,
    /// Messages received since start.
    pub received: u64,
}

/// A running Vigil: store, broker, engine task.
pub struct Engine {
    config: Config,
    store: Store,
    broker: Arc<Broker>,
    bus: EventBus,
    observations: mpsc::Sender<Observation>,
    commands: mpsc::Sender<Command>,
    writer: WriterHandle,
    received: Arc<AtomicU64>,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    retention: JoinHandle<()>,
    webhooks: JoinHandle<()>,
    announce: Option<JoinHandle<()>>,
    addresses: JoinHandle<()>,
    coap: Option<Coap>,
}

impl Engine {
    /// Opens the store, starts the broker and the engine task, and puts the
    /// retained messages of the last run back into the broker.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        config.validate()?;
        // The database holds every message (patients' readings among them):
        // a folder Vigil creates is readable by its owner only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(|e| {
                EngineError::Config(format!(
                    "cannot create the data folder {}: {e}",
                    config.data_dir.display()
                ))
            })?;
        let store = Store::open(&config.database_path()).await?;
        let bus = EventBus::default();
        let flush_bus = bus.clone();
        let writer = store.spawn_writer(
            WriterOptions {
                flush_rows: config.store.flush_rows,
                flush_interval: Duration::from_millis(config.store.flush_interval_ms),
                queue: WRITER_QUEUE,
            },
            Box::new(move |f| {
                flush_bus.send(Event::Flushed(FlushedEvent {
                    rows: f.rows,
                    last_message_id: f.last_message_id,
                    committed_at: f.committed_at,
                    oldest_received: f.oldest_received,
                }))
            }),
        )?;
        let (observations, observed) = mpsc::channel(OBSERVATION_QUEUE);
        let security = match security(&config, &store) {
            Ok(s) => s,
            Err(e) => {
                let _ = writer.shutdown().await;
                store.close().await;
                return Err(e);
            }
        };
        let retained = store.retained().await?;
        let restored = retained.len();
        let resume = Resume {
            retained: retained
                .iter()
                .map(|m| Retained {
                    topic: m.topic.clone(),
                    payload: m.payload.clone(),
                    qos: m.qos,
                })
                .collect(),
            sessions: store.kept_sessions().await?,
        };
        let broker = match Broker::start_resuming(
            config.broker.clone(),
            security,
            observations.clone(),
            resume,
        )
        .await
        {
            Ok(b) => Arc::new(b),
            Err(e) => {
                let _ = writer.shutdown().await;
                store.close().await;
                return Err(e.into());
            }
        };
        // What discovery taught (Home Assistant configs, Zigbee2MQTT's device
        // list, ...) is mostly retained: reading it again rebuilds the
        // conventions' tables. What it says about devices is in the store.
        let mut conventions = Conventions::new(config.conventions.clone());
        for message in &retained {
            conventions.interpret(MessageRef {
                at: message.at,
                topic: &message.topic,
                payload: &message.payload,
                retain: true,
                client_id: None,
            });
        }
        if restored > 0 {
            tracing::info!("restored {restored} retained message(s) into the broker");
        }

        let mut rules = Vec::new();
        for (id, json) in store.alert_rules().await? {
            match serde_json::from_str::<AlertRule>(&json) {
                Ok(rule) => rules.push(rule),
                Err(e) => {
                    tracing::error!("alert rule {id} in the store cannot be read, skipped: {e}")
                }
            }
        }
        let mut alerts = AlertEvaluator::new(rules.clone(), store.last_alert_id().await? + 1);
        let orphaned = alerts.restore(
            store
                .alerts(true, None, None, u32::MAX)
                .await?
                .into_iter()
                .collect(),
            now_micros(),
        );
        let received = Arc::new(AtomicU64::new(0));
        let writer_for_sync = writer.clone();
        let mut ingest = Ingest::new(
            config.devices.clone(),
            conventions,
            PresenceTracker::new(config.presence),
            alerts,
            rules,
            writer.clone(),
            bus.clone(),
            received.clone(),
        );
        let known_devices = store.devices().await?;
        for device in &known_devices {
            ingest.restore_device(device);
        }
        ingest.startup_alerts = orphaned;
        ingest.webhooks = config.alerts.webhooks.clone();
        ingest.webhook_queue = config.alerts.webhook_queue;
        let webhook_wake = Arc::new(Notify::new());
        ingest.webhook_wake = webhook_wake.clone();
        let (stop, stopped) = oneshot::channel();
        let (commands, commanded) = mpsc::channel(64);
        let task = tokio::spawn(ingest.run(observed, commanded, stopped));
        let coap = if config.coap.enabled {
            match Coap::start(
                config.coap.clone(),
                observations.clone(),
                store.coap_devices().await?,
            )
            .await
            {
                Ok(coap) => Some(coap),
                // No CoAP socket is no reason to stop watching MQTT devices.
                Err(e) => {
                    tracing::error!("CoAP is off: {e}");
                    None
                }
            }
        } else {
            None
        };
        let retention = tokio::spawn(run_retention(writer.clone(), config.store.clone()));
        let addresses = tokio::spawn(follow_addresses(config.clone(), Arc::downgrade(&broker)));
        let webhooks = tokio::spawn(crate::webhook::run(store.clone(), writer, webhook_wake));
        let announce = config.presence.announce_on_start.then(|| {
            let nodes: Vec<String> = known_devices
                .iter()
                .filter(|d| d.convention == vigil_core::Convention::Sparkplug.as_str())
                .map(|d| d.id.clone())
                .filter(|key| key.matches('/').count() == 1)
                .collect();
            tokio::spawn(ask_devices_to_announce(
                broker.publisher(),
                config.clone(),
                nodes,
            ))
        });
        Ok(Engine {
            config,
            store,
            broker,
            bus,
            observations,
            commands,
            writer: writer_for_sync,
            received,
            stop: std::sync::Mutex::new(Some(stop)),
            task: tokio::sync::Mutex::new(Some(task)),
            retention,
            webhooks,
            announce,
            addresses,
            coap,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where MQTT over TCP listens.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.broker.mqtt_addr()
    }

    /// Where MQTT over WebSocket listens, if enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.broker.ws_addr()
    }

    /// Where MQTT over TLS listens, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.broker.tls_addr()
    }

    /// Where MQTT over secure WebSocket listens, if enabled.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.broker.wss_addr()
    }

    /// The broker's listeners and the clients connected now.
    pub async fn broker(&self) -> Result<BrokerView, EngineError> {
        let clients = self.query(|reply| Command::Clients { reply }).await?;
        let b = &self.config.broker;
        let path = Some(b.ws_path.as_str());
        let listeners = [
            ("mqtt", Some(self.mqtt_addr()), None, None),
            ("ws", self.ws_addr(), path, None),
            ("mqtts", self.tls_addr(), None, Some(b.tls_client_certs)),
            ("wss", self.wss_addr(), path, Some(b.wss_client_certs)),
        ]
        .into_iter()
        .filter_map(|(protocol, address, path, certs)| {
            address.map(|address| ListenerView {
                protocol: protocol.to_owned(),
                address: address.to_string(),
                path: path.map(str::to_owned),
                tls: certs.is_some(),
                client_certificates: certs.map(|c| {
                    serde_json::to_value(c)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                }),
                loopback_only: address.ip().is_loopback(),
            })
        })
        .collect();
        let refusals = self.broker.refusals();
        Ok(BrokerView {
            listeners,
            max_payload: b.max_payload as u64,
            max_connections: b.max_connections as u64,
            refused_publishes: refusals.publishes,
            refused_subscriptions: refusals.subscriptions,
            clients,
            absent: self
                .broker
                .absent_clients()
                .into_iter()
                .map(|a| AbsentClientView {
                    client_id: a.client_id,
                    away_since: a.away_since,
                    expires_at: a.expires_at,
                    queued: a.queued as u64,
                })
                .collect(),
        })
    }

    /// The settings it runs with, for people to read: the configuration
    /// with webhook addresses cut to scheme and host (they may carry tokens).
    pub fn settings(&self) -> serde_json::Value {
        let mut config = self.config.clone();
        config.alerts.webhooks = config
            .alerts
            .webhooks
            .iter()
            .map(|url| crate::webhook::display_url(url))
            .collect();
        serde_json::to_value(&config).unwrap_or_default()
    }

    /// Live events.
    pub fn subscribe(&self, with_messages: bool) -> Subscription {
        self.bus.subscribe(with_messages)
    }

    /// Every device, with its presence, last values and active alerts.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, EngineError> {
        Ok(self.store.devices().await?)
    }

    /// A device's presence changes in `[from, to)`, newest first.
    pub async fn presence_history(
        &self,
        device: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<PresenceChange>, EngineError> {
        Ok(self
            .store
            .presence_history(device, from, to, limit.clamp(1, 10_000))
            .await?)
    }

    /// Changes what the user set for a device (name, group, hidden,
    /// expected interval); absent fields stay as they are.
    pub async fn update_device(
        &self,
        device: &str,
        update: SettingsUpdate,
    ) -> Result<DeviceSettings, EngineError> {
        self.ask(|reply| Command::Settings {
            device: device.to_owned(),
            update,
            reply,
        })
        .await?
    }

    /// Alerts, newest first (`active`: only those not cleared).
    pub async fn alerts(
        &self,
        active: bool,
        device: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Alert>, EngineError> {
        Ok(self
            .store
            .alerts(active, device, before, limit.clamp(1, 10_000))
            .await?)
    }

    /// Acknowledges an alert.
    pub async fn acknowledge(&self, id: i64, by: Option<String>) -> Result<Alert, EngineError> {
        self.ask(|reply| Command::Acknowledge { id, by, reply })
            .await?
    }

    /// The alert rules.
    pub async fn alert_rules(&self) -> Result<Vec<AlertRule>, EngineError> {
        self.ask(|reply| Command::Rules { reply }).await
    }

    /// Creates a rule (`id` 0) or replaces the rule with its id.
    pub async fn save_alert_rule(&self, rule: AlertRule) -> Result<AlertRule, EngineError> {
        self.ask(|reply| Command::SaveRule { rule, reply }).await?
    }

    /// Deletes a rule; its active alerts clear.
    pub async fn delete_alert_rule(&self, id: i64) -> Result<(), EngineError> {
        self.ask(|reply| Command::DeleteRule { id, reply }).await?
    }

    /// Sends a command to the engine task and waits for its answer.
    async fn query<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| EngineError::Stopping)?;
        answer.await.map_err(|_| EngineError::Stopping)
    }

    /// [`Engine::query`], then waits for the store to commit what the
    /// command changed, so that the caller's next read sees it.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let answer = self.query(command).await?;
        self.writer
            .sync()
            .await
            .map_err(|_| EngineError::Stopping)?;
        Ok(answer)
    }

    /// One device, if known.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, EngineError> {
        Ok(self.store.device(id).await?)
    }

    /// A metric's values between two times, in at most `max_points` buckets.
    pub async fn series(
        &self,
        device: &str,
        metric: &str,
        from: i64,
        to: i64,
        max_points: usize,
    ) -> Result<Series, EngineError> {
        if from >= to {
            return Err(EngineError::BadRequest(format!(
                "'from' ({from}) must be before 'to' ({to})"
            )));
        }
        if !(1..=10_000).contains(&max_points) {
            return Err(EngineError::BadRequest(format!(
                "max_points must be between 1 and 10000, not {max_points}"
            )));
        }
        Ok(self
            .store
            .series(device, metric, from, to, max_points)
            .await?)
    }

    /// Stored messages, newest first.
    pub async fn messages(&self, query: &MessageQuery) -> Result<Vec<MessageView>, EngineError> {
        Ok(self
            .store
            .messages(query)
            .await?
            .into_iter()
            .map(MessageView::from)
            .collect())
    }

    /// Counters.
    pub async fn stats(&self) -> Result<Stats, EngineError> {
        Ok(Stats {
            store: self.store.stats().await?,
            connections: self.broker.connections(),
            received: self.received.load(Ordering::Relaxed),
        })
    }

    /// Publishes through the broker and records the message like any other.
    pub async fn publish(&self, request: PublishRequest) -> Result<(), EngineError> {
        let payload = payload_of(request.payload, request.payload_base64)?;
        if request.qos > 2 {
            return Err(EngineError::BadRequest(format!(
                "qos must be 0, 1 or 2, not {}",
                request.qos
            )));
        }
        self.broker
            .publisher()
            .publish(&request.topic, payload.clone(), request.qos, request.retain)
            .await
            .map_err(EngineError::BadRequest)?;
        let message = Message {
            at: now_micros(),
            topic: request.topic,
            payload,
            qos: request.qos,
            retain: request.retain,
            client_id: None,
            user_properties: Vec::new(),
            content_type: None,
            is_will: false,
        };
        self.observations
            .send(Observation::Message(message))
            .await
            .map_err(|_| EngineError::Stopping)
    }

    /// The CoAP side: devices found, their resources, the last discovery.
    pub async fn coap(&self) -> Result<CoapView, EngineError> {
        match &self.coap {
            Some(coap) => coap.view().await,
            None => Ok(CoapView {
                enabled: false,
                discovery: false,
                rediscover_every_s: self.config.coap.rediscover_every_s,
                interfaces: Vec::new(),
                devices: Vec::new(),
                last_discovery: None,
                discovering: false,
                content_formats: Vec::new(),
                counters: Default::default(),
            }),
        }
    }

    fn coap_side(&self) -> Result<&Coap, EngineError> {
        self.coap
            .as_ref()
            .ok_or_else(|| EngineError::BadRequest("CoAP is off (coap.enabled = false)".into()))
    }

    /// Searches the local network for CoAP devices now (multicast
    /// `/.well-known/core` on the configured interfaces) and waits for the
    /// round's window; a round already running is joined.
    pub async fn coap_discover(&self) -> Result<DiscoveryView, EngineError> {
        self.coap_side()?.discover().await
    }

    /// Asks every address of a range (`192.0.2.0/26`, `192.0.2.10-40`) for
    /// its resources, once and without retransmission, for a few seconds;
    /// those that answer become devices like discovered ones.
    pub async fn coap_scan(
        &self,
        range: &str,
        port: Option<u16>,
    ) -> Result<DiscoveryView, EngineError> {
        self.coap_side()?.scan(range, port).await
    }

    /// Asks the device at `address` for its resources; when it answers it
    /// becomes a device, is observed and probed like a discovered one.
    pub async fn coap_add(&self, address: &str) -> Result<CoapDeviceView, EngineError> {
        self.coap_side()?.add(address).await
    }

    /// Sends a request to a CoAP resource (a technician's GET, PUT, POST or
    /// DELETE) and returns the device's whole answer.
    pub async fn coap_request(
        &self,
        request: CoapRequestBody,
    ) -> Result<CoapResponseView, EngineError> {
        let payload = payload_of(request.payload.clone(), request.payload_base64.clone())?;
        self.coap_side()?.request(request, payload).await
    }

    /// Stops in order: clients are closed, every accepted observation is
    /// stored, the database is closed. It takes `&self` so a shell can stop
    /// the engine while requests still hold it; afterwards every call fails
    /// with [`EngineError::Stopping`] or an error of the closed store.
    pub async fn shutdown(&self) {
        self.retention.abort();
        self.webhooks.abort();
        self.addresses.abort();
        if let Some(coap) = &self.coap {
            coap.shutdown();
        }
        if let Some(announce) = &self.announce {
            announce.abort();
        }
        self.broker.shutdown(Duration::from_secs(5)).await;
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.lock().await.take() {
            if let Err(e) = task.await {
                tracing::error!("the engine task failed: {e}");
            }
        }
        self.store.close().await;
    }
}

/// A request's payload, given as text or as base64 (not both).
fn payload_of(text: Option<String>, base64: Option<String>) -> Result<Bytes, EngineError> {
    use base64::Engine as _;
    match (text, base64) {
        (Some(text), None) => Ok(Bytes::from(text)),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(Bytes::from)
            .map_err(|e| {
                EngineError::BadRequest(format!("payload_base64 is not valid base64: {e}"))
            }),
        (None, None) => Ok(Bytes::new()),
        (Some(_), Some(_)) => Err(EngineError::BadRequest(
            "give either 'payload' or 'payload_base64', not both".into(),
        )),
    }
}

/// The broker's TLS certificate (from the local CA, made on first start) and
/// the gate over the store's accounts.
fn security(config: &Config, store: &Store) -> Result<Security, EngineError> {
    let gate = Arc::new(Gatekeeper::new(
        store.clone(),
        crate::certs::pki_dir(config),
        config.auth.clone(),
    ));
    let tls = if config.broker.tls_listen.is_some() || config.broker.wss_listen.is_some() {
        let pki = crate::certs::open(config)
            .map_err(|e| EngineError::Config(format!("the local CA: {e}")))?;
        let material = crate::certs::tls_material(&pki, &crate::certs::server_names())
            .map_err(|e| EngineError::Config(format!("the server certificate: {e}")))?;
        Some(material)
    } else {
        None
    };
    Ok(Security { tls, gate })
}

/// How often the machine's addresses are looked at.
const ADDRESS_CHECK: Duration = Duration::from_secs(30);

/// Re-issues the server certificate when the machine's addresses change
/// (a laptop moved to another network), so devices that connect by address
/// still verify it. The CA stays.
async fn follow_addresses(config: Config, broker: std::sync::Weak<Broker>) {
    if config.broker.tls_listen.is_none() && config.broker.wss_listen.is_none() {
        return;
    }
    let mut names = crate::certs::server_names();
    loop {
        tokio::time::sleep(ADDRESS_CHECK).await;
        let now = crate::certs::server_names();
        if now == names {
            continue;
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let material =
            crate::certs::open(&config).and_then(|pki| crate::certs::tls_material(&pki, &now));
        match material
            .map_err(|e| e.to_string())
            .and_then(|m| broker.replace_tls(&m).map_err(|e| e.to_string()))
        {
            Ok(()) => {
                tracing::info!(names = ?now, "this machine's addresses changed: the server certificate was issued again for them");
                names = now;
            }
            Err(e) => {
                tracing::error!("cannot issue the server certificate for the new addresses: {e}")
            }
        }
    }
}

/// Asks devices to announce themselves, where their convention allows it
/// without side effects: Home Assistant's birth message (devices that follow
/// HA discovery republish their configs and states), Shelly Gen1's
/// `announce` command, and a Sparkplug rebirth request to every edge node
/// Vigil knows. It waits `presence.announce_delay_s` first: Vigil is the
/// broker, so at start no device is connected yet to hear it.
async fn ask_devices_to_announce(
    broker: vigil_broker::Publisher,
    config: Config,
    sparkplug_nodes: Vec<String>,
) {
    tokio::time::sleep(Duration::from_secs_f64(config.presence.announce_delay_s)).await;
    let ha_status = format!("{}/status", config.conventions.home_assistant_prefix);
    let mut asks = vec![
        (ha_status, Bytes::from_static(b"online")),
        (
            "shellies/command".to_owned(),
            Bytes::from_static(b"announce"),
        ),
    ];
    let rebirth = Bytes::from(vigil_core::decode::sparkplug::rebirth_request(
        (now_micros() / 1000).max(0) as u64,
    ));
    for node in sparkplug_nodes {
        if let Some((group, node)) = node.split_once('/') {
            asks.push((format!("spBv1.0/{group}/NCMD/{node}"), rebirth.clone()));
        }
    }
    for (topic, payload) in asks {
        match broker.publish(&topic, payload, 0, false).await {
            Ok(()) => tracing::info!("asked devices to announce themselves on {topic}"),
            Err(e) => tracing::warn!("could not publish {topic}: {e}"),
        }
    }
}

async fn run_retention(writer: WriterHandle, config: crate::config::StoreConfig) {
    let retention = Retention {
        max_age: config
            .retention_days
            .map(|d| Duration::from_secs(d as u64 * 86_400)),
        max_bytes: config.max_bytes,
    };
    if retention.max_age.is_none() && retention.max_bytes.is_none() {
        return;
    }
    loop {
        match writer.apply_retention(retention).await {
            Ok(r) if r.deleted_messages + r.deleted_samples > 0 => {
                tracing::info!(
                    "retention deleted {} message(s) and {} sample(s)",
                    r.deleted_messages,
                    r.deleted_samples
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("retention failed: {e}"),
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}
