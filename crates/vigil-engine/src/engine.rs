//! The engine: lifecycle and the API both shells call.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_broker::Broker;
use vigil_core::decode::metric_name;
use vigil_core::{decode_payload, now_micros, ConnectionOutcome, DeviceRule, Message, Observation};
use vigil_store::{Record, Retention, Store, WriterHandle, WriterOptions};

use crate::bus::{
    ConnectionEventView, DeviceEvent, Event, EventBus, FlushedEvent, MessageEvent, Subscription,
};
use crate::config::Config;
use crate::error::EngineError;
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

/// Counters of a running engine.
#[derive(Debug, Serialize)]
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
    broker: Broker,
    bus: EventBus,
    observations: mpsc::Sender<Observation>,
    received: Arc<AtomicU64>,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    retention: JoinHandle<()>,
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
        let broker = match Broker::start(config.broker.clone(), observations.clone()).await {
            Ok(b) => b,
            Err(e) => {
                let _ = writer.shutdown().await;
                store.close().await;
                return Err(e.into());
            }
        };
        let retained = store.retained().await?;
        let restored = retained.len();
        for message in retained {
            if let Err(e) = broker.publish(&message.topic, message.payload, true).await {
                tracing::warn!(
                    topic = message.topic,
                    "could not restore a retained message: {e}"
                );
            }
        }
        if restored > 0 {
            tracing::info!("restored {restored} retained message(s) into the broker");
        }
        let known: HashSet<String> = store.devices().await?.into_iter().map(|d| d.id).collect();
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(
            Ingest {
                rule: config.devices.clone(),
                writer: writer.clone(),
                bus: bus.clone(),
                known,
                received: received.clone(),
            }
            .run(observed, stopped),
        );
        let retention = tokio::spawn(run_retention(writer, config.store.clone()));
        Ok(Engine {
            config,
            store,
            broker,
            bus,
            observations,
            received,
            stop: std::sync::Mutex::new(Some(stop)),
            task: tokio::sync::Mutex::new(Some(task)),
            retention,
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

    /// Live events.
    pub fn subscribe(&self, with_messages: bool) -> Subscription {
        self.bus.subscribe(with_messages)
    }

    /// Every device, with its last values.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, EngineError> {
        Ok(self.store.devices().await?)
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
        use base64::Engine as _;
        let payload = match (request.payload, request.payload_base64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(b64)) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        EngineError::BadRequest(format!("payload_base64 is not valid base64: {e}"))
                    })?,
            ),
            (None, None) => Bytes::new(),
            (Some(_), Some(_)) => {
                return Err(EngineError::BadRequest(
                    "give either 'payload' or 'payload_base64', not both".into(),
                ))
            }
        };
        if request.qos > 2 {
            return Err(EngineError::BadRequest(format!(
                "qos must be 0, 1 or 2, not {}",
                request.qos
            )));
        }
        self.broker
            .publish(&request.topic, payload.clone(), request.retain)
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

    /// Stops in order: clients are closed, every accepted observation is
    /// stored, the database is closed. It takes `&self` so a shell can stop
    /// the engine while requests still hold it; afterwards every call fails
    /// with [`EngineError::Stopping`] or an error of the closed store.
    pub async fn shutdown(&self) {
        self.retention.abort();
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

/// The engine task's state: turns observations into records and events.
struct Ingest {
    rule: DeviceRule,
    writer: WriterHandle,
    bus: EventBus,
    known: HashSet<String>,
    received: Arc<AtomicU64>,
}

impl Ingest {
    async fn run(
        mut self,
        mut observed: mpsc::Receiver<Observation>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                // Observations first: on stop, what is queued is still taken.
                biased;
                next = observed.recv() => match next {
                    Some(o) => self.handle(o).await,
                    None => break,
                },
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
        if let Err(e) = self.writer.shutdown().await {
            tracing::error!("the store writer did not stop cleanly: {e}");
        }
    }

    async fn handle(&mut self, observation: Observation) {
        match observation {
            Observation::Message(m) => self.message(m).await,
            Observation::Connection(c) => {
                let (outcome, reason) = match &c.outcome {
                    ConnectionOutcome::Connected { .. } => ("connected", None),
                    ConnectionOutcome::Refused(why) => ("refused", Some(why.clone())),
                    ConnectionOutcome::Disconnected(why) => ("disconnected", Some(why.to_string())),
                };
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
        let (device, rest) = match self.rule.split(&m.topic) {
            Some((device, rest)) => (Some(device.to_owned()), rest),
            None => (None, ""),
        };
        let samples = match &device {
            Some(_) => decode_payload(&m.payload)
                .metrics
                .into_iter()
                .map(|m| (metric_name(rest, &m.name), m.value))
                .collect(),
            None => Vec::new(),
        };
        if let Some(d) = &device {
            if !self.known.contains(d) {
                self.known.insert(d.clone());
                self.bus.send(Event::Device(Arc::new(DeviceEvent {
                    id: d.clone(),
                    at: m.at,
                })));
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
