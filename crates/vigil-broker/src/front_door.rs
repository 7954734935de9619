//! The front door: every client connection passes through here.
//!
//! For each accepted socket (TCP, or WebSocket after its handshake) the front
//! door reads the CONNECT within `connect_timeout`, opens a connection to the
//! router's internal listener for the client's protocol level, sends it the
//! same CONNECT with the front door's secret login and a keepalive the router
//! will not enforce (the front door enforces the client's own, 1.5 ×, and
//! accepts 0, which rumqttd refuses), and forwards the router's CONNACK.
//!
//! Then two tasks pump bytes, one per direction, so that a peer that stops
//! reading can never stall the other direction (a proxy that did both in one
//! loop could deadlock against the router). The upstream task frames each
//! client packet: a PUBLISH becomes an [`Observation`] before it is forwarded,
//! so the router acknowledges (PUBACK/PUBREC) only what Vigil has accepted;
//! a packet over the size limit ends the connection. Everything is forwarded
//! byte for byte. The connection's end, with its reason, and the client's will
//! (when MQTT says it is sent) are observations too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use vigil_core::session::{
    AwaySession, KeptSession, KeptSubscription, SessionChange, NEVER_EXPIRES,
};
use vigil_core::{
    now_micros, ConnectionEvent, ConnectionOutcome, DisconnectReason, Message, Micros, MqttVersion,
    Observation, Transport,
};

use crate::acl::Rights;
use crate::codec::{
    self, packet_type, publish_ack, publish_packet_id, ConnAck, Connect, FrameHeader, Publish,
    Refusal, SubAck, Subscribe, SubscriptionFilter,
};
use crate::config::BrokerConfig;
use crate::deliveries::{Deliveries, Route};
use crate::error::BrokerError;
use crate::gate::{Denial, FailedLogins, Gate, Login, LoopbackOnly, Verdict};
use crate::router::{Router, INTERNAL_USER};
use crate::sessions::Sessions;
use crate::stream::{
    make_room, split_tcp, split_tls, split_ws, split_wss, ClientReader, ClientWriter, TlsTcp,
};
use crate::tls::{Acceptor, TlsMaterial};

mod away;
mod retained;

/// How often the front door pings the router on behalf of a quiet client, so
/// the router's own keepalive (set to its maximum) never expires.
const ROUTER_PING_EVERY: Duration = Duration::from_secs(600);
/// The keepalive the router is told; the front door enforces the real one.
const ROUTER_KEEPALIVE: u16 = u16::MAX;
/// How long the front door waits, after forwarding a client's DISCONNECT,
/// for the router to close the connection before it closes its side anyway.
///
/// It must not close first. rumqttd 0.20 numbers connections by slab slot and
/// hands a freed slot to the very next login. On DISCONNECT its router removes
/// the connection at once; if the link task then also sees our socket close,
/// it reports `Disconnect` for its slot number, and when that report comes
/// after a new client took the slot, the router drops the new client right
/// after its CONNACK (its first SUBACK/PUBACK never comes). When the router
/// closes first, the link ends through its router channel and reports nothing.
const ROUTER_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long a connection whose router side closed waits for its upstream
/// half to report a DISCONNECT it forwarded just before.
const UPSTREAM_GRACE: Duration = Duration::from_millis(100);
/// Room for the topic, properties and header around the largest payload.
const PACKET_OVERHEAD: usize = 64 * 1024 + 1024;
/// MQTT 5 reason code "Not authorized".
const NOT_AUTHORIZED: u8 = 0x87;
/// MQTT 5 reason code "No matching subscribers" (a success).
const NO_SUBSCRIBERS: u8 = 0x10;
/// The user property the front door puts on every PUBLISH (and will) it
/// hands the router, saying what the router does not keep: the QoS and
/// retain flag as published and the publisher's client id ([`Tag`]). It is
/// taken off before any client sees the message, and off anything a client
/// sends with it.
const TAG: &str = "vigil-front-door";

/// MQTT 3.1.1 SUBACK return code "Failure".
const SUBACK_FAILURE: u8 = 0x80;
/// How many topic aliases an MQTT 5 client may set on one connection (the
/// front door resolves them; see [`Upstream::resolve_topic_alias`]).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 64;

/// What [`TAG`] says: `<qos>[r]:<client id>`.
#[derive(Debug, PartialEq, Eq)]
struct Tag<'a> {
    qos: u8,
    retain: bool,
    origin: &'a str,
}

impl<'a> Tag<'a> {
    fn value(qos: u8, retain: bool, origin: &str) -> String {
        format!("{qos}{}:{origin}", if retain { "r" } else { "" })
    }

    fn parse(value: &'a str) -> Option<Tag<'a>> {
        let (flags, origin) = value.split_once(':')?;
        let (qos, retain) = match flags.as_bytes() {
            [q @ b'0'..=b'2'] => (q - b'0', false),
            [q @ b'0'..=b'2', b'r'] => (q - b'0', true),
            _ => return None,
        };
        Some(Tag {
            qos,
            retain,
            origin,
        })
    }
}

/// Who may connect and what they may do, and the TLS certificate.
pub struct Security {
    /// The server certificate for the TLS listeners (required when one is
    /// configured).
    pub tls: Option<TlsMaterial>,
    /// Decides on every login.
    pub gate: Arc<dyn Gate>,
}

impl Default for Security {
    /// No TLS; anonymous clients on loopback only.
    fn default() -> Self {
        Security {
            tls: None,
            gate: Arc::new(LoopbackOnly),
        }
    }
}

/// The embedded MQTT broker: the router and the front door in front of it.
pub struct Broker {
    shared: Arc<Shared>,
    mqtt_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Every connection and accept task holds a clone; when all are dropped,
    /// `recv` returns `None` and shutdown knows they have finished.
    tasks_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
    task_token: std::sync::Mutex<Option<mpsc::Sender<()>>>,
}

/// Publishes on Vigil's behalf (see [`Broker::publisher`]).
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl Publisher {
    /// Publishes a message to subscribers on Vigil's own behalf, with
    /// `qos` (each subscriber gets the smaller of it and its granted QoS).
    /// The caller records it; the front door does not see it.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Result<(), String> {
        if qos > 2 {
            return Err(format!("QoS {qos} does not exist (0, 1 or 2)"));
        }
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(format!(
                "'{topic}' is not a topic one can publish to (empty, or has + # or NUL)"
            ));
        }
        if topic.starts_with('$') {
            return Err(format!(
                "'{topic}' starts with $: such topics are the server's (MQTT 4.7.2), and no subscriber would get it"
            ));
        }
        if payload.len() > self.shared.config.max_payload {
            return Err(format!(
                "the payload has {} bytes, more than broker.max_payload ({})",
                payload.len(),
                self.shared.config.max_payload
            ));
        }
        if retain {
            self.shared.retained.keep_plain(topic, payload.clone(), qos);
        }
        self.shared
            .router
            .publish(topic, payload, retain, vigils_tag(qos, retain))
            .await
    }
}

struct Shared {
    config: BrokerConfig,
    router: Router,
    observations: mpsc::Sender<Observation>,
    sessions: Arc<Sessions>,
    connected: AtomicUsize,
    shutdown: watch::Receiver<bool>,
    gate: Arc<dyn Gate>,
    tls: Option<Acceptor>,
    wss: Option<Acceptor>,
    failed_logins: FailedLogins,
    refused_publishes: AtomicU64,
    refused_subscriptions: AtomicU64,
    /// MQTT 5 sessions kept after their connection: their subscriptions
    /// with the options the router ignores (No Local, Retain As Published,
    /// Retain Handling), by client id, shared with the connection that has
    /// the session, so a client that comes back without subscribing again
    /// finds them, however soon. Stored with the session (see [`away`]).
    session_subscriptions: std::sync::Mutex<HashMap<String, Subscriptions>>,
    /// Stand-ins for the clients whose session is kept while they are away.
    absences: away::Absences,
    /// Copies of the retained messages (see [`retained`]).
    retained: Arc<retained::RetainedCopies>,
}

/// A client's subscriptions as the front door knows them.
type Subscriptions = Arc<std::sync::Mutex<Vec<SubscriptionFilter>>>;

/// What the last run left for the broker, taken back before any client is
/// let in.
#[derive(Debug, Default)]
pub struct Resume {
    /// Retained messages.
    pub retained: Vec<Retained>,
    /// Kept sessions, with the messages queued for their clients.
    pub sessions: Vec<AwaySession>,
}

/// A client away whose session is kept (see [`Broker::absent_clients`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsentClient {
    /// Its client id.
    pub client_id: String,
    /// Since when it has been away (µs).
    pub away_since: Micros,
    /// When its session ends if it stays away (`None`: never).
    pub expires_at: Option<Micros>,
    /// Messages queued for it.
    pub queued: usize,
}

/// A retained message of the last run.
#[derive(Debug, Clone)]
pub struct Retained {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: u8,
}

/// MQTT 5 3.3.2.3.3 for a message that waited since `since` (queued for an
/// absent client, or retained): its Message Expiry Interval becomes what is
/// left of it. False when nothing is left (it must not be sent).
fn age_message_expiry(publish: &mut Publish, since: Micros) -> bool {
    let Some(expiry) = publish.properties.message_expiry_interval else {
        return true;
    };
    let left = i64::from(expiry) - (now_micros() - since).max(0) / 1_000_000;
    let Ok(rest) = codec::without_property(
        &publish.properties_raw,
        codec::property_id::MESSAGE_EXPIRY_INTERVAL,
        "PUBLISH",
    ) else {
        return false;
    };
    if left <= 0 {
        return false;
    }
    let mut raw = BytesMut::from(&rest[..]);
    raw.extend_from_slice(&[codec::property_id::MESSAGE_EXPIRY_INTERVAL]);
    raw.extend_from_slice(&(left as u32).to_be_bytes());
    publish.properties_raw = raw.freeze();
    true
}

/// The [`TAG`] of a message Vigil publishes itself: it has no publisher
/// among the clients (no client id is empty at the router).
fn vigils_tag(qos: u8, retain: bool) -> (&'static str, String) {
    (TAG, Tag::value(qos, retain, ""))
}

impl Shared {
    /// The subscriptions of a connection: those of the session it resumes
    /// (`resumed`: the router said session present), or none; kept for the
    /// next connection if the session outlives this one (`kept`).
    fn subscriptions_of(&self, client_id: &str, resumed: bool, kept: bool) -> Subscriptions {
        let mut sessions = self
            .session_subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let subscriptions = match sessions.remove(client_id) {
            Some(subscriptions) if resumed => subscriptions,
            _ => Subscriptions::default(),
        };
        if kept {
            sessions.insert(client_id.to_owned(), subscriptions.clone());
        }
        subscriptions
    }

    /// Takes back retained messages first (so a session subscribing again
    /// does not take them for new ones), then every kept session that has
    /// not expired: a stand-in subscribes its filters in the router and
    /// holds its queue until the client returns.
    async fn resume(self: &Arc<Self>, resume: Resume) {
        for Retained {
            topic,
            payload,
            qos,
        } in resume.retained
        {
            self.retained
                .keep_plain(&topic, payload.clone(), qos.min(2));
            let tag = vigils_tag(qos.min(2), true);
            if let Err(e) = self.router.publish(&topic, payload, true, tag).await {
                tracing::warn!(topic, "could not restore a retained message: {e}");
            }
        }
        let sessions = resume.sessions.len();
        let queued: usize = resume.sessions.iter().map(|s| s.queue.len()).sum();
        for AwaySession { mut session, queue } in resume.sessions {
            // Away since the last run ended if it was connected then.
            session.away_since = session.away_since.or(Some(now_micros()));
            let filters = session.subscriptions.iter().map(|s| SubscriptionFilter {
                filter: s.filter.clone(),
                options: s.options,
            });
            self.session_subscriptions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    session.client_id.clone(),
                    Arc::new(std::sync::Mutex::new(filters.collect())),
                );
            self.absences
                .begin(self, session, queue, away::StandInLogin::Resubscribing);
        }
        self.absences
            .ready(Instant::now() + Duration::from_secs(10))
            .await;
        if sessions > 0 {
            tracing::info!(
                "took back {sessions} kept MQTT session(s) with {queued} queued message(s)"
            );
        }
    }

    /// Whether a session is known for `client_id`.
    fn has_session(&self, client_id: &str) -> bool {
        self.session_subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(client_id)
    }

    /// The session of `client_id` ended: its subscriptions are forgotten.
    fn forget_session(&self, client_id: &str) {
        self.session_subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client_id);
    }

    /// Tells the store about a kept session.
    async fn report_session(&self, change: SessionChange) {
        let _ = self
            .observations
            .send(Observation::Session(now_micros(), change))
            .await;
    }
}

/// Refusals counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// PUBLISHes dropped because the client may not publish there.
    pub publishes: u64,
    /// Topic filters refused because the client may not subscribe there.
    pub subscriptions: u64,
}

impl Broker {
    /// [`Broker::start_with`] without TLS, for anonymous clients on loopback.
    pub async fn start(
        config: BrokerConfig,
        observations: mpsc::Sender<Observation>,
    ) -> Result<Broker, BrokerError> {
        Broker::start_with(config, Security::default(), observations).await
    }

    /// [`Broker::start_resuming`] with nothing to take back.
    pub async fn start_with(
        config: BrokerConfig,
        security: Security,
        observations: mpsc::Sender<Observation>,
    ) -> Result<Broker, BrokerError> {
        Broker::start_resuming(config, security, observations, Resume::default()).await
    }

    /// Binds the listeners, starts the router, takes back what the last run
    /// left (`resume`) and begins accepting clients. What the broker sees
    /// goes to `observations`; when that channel is full, publishers wait.
    pub async fn start_resuming(
        config: BrokerConfig,
        security: Security,
        observations: mpsc::Sender<Observation>,
        resume: Resume,
    ) -> Result<Broker, BrokerError> {
        config.validate().map_err(BrokerError::Config)?;
        if config.max_payload == 0 || config.max_payload > 256 * 1024 * 1024 - PACKET_OVERHEAD {
            return Err(BrokerError::Config(format!(
                "broker.max_payload is {} bytes; it must be between 1 and {} (MQTT's limit)",
                config.max_payload,
                256 * 1024 * 1024 - PACKET_OVERHEAD
            )));
        }
        // Bind first: a taken port must stop start-up with a clear message
        // before anything else is started.
        let mqtt = bind(config.mqtt_listen, "broker.mqtt_listen (--mqtt-listen)").await?;
        let ws = match config.ws_listen {
            Some(addr) => Some(bind(addr, "broker.ws_listen (--ws-listen)").await?),
            None => None,
        };
        let acceptor =
            |listen: Option<SocketAddr>, setting: &str, mode| match (listen, &security.tls) {
                (None, _) => Ok(None),
                (Some(_), Some(material)) => Acceptor::new(material, mode).map(Some),
                (Some(_), None) => Err(BrokerError::Config(format!(
                    "{setting} is set but there is no server certificate to serve it with"
                ))),
            };
        let tls_acceptor = acceptor(
            config.tls_listen,
            "broker.tls_listen",
            config.tls_client_certs,
        )?;
        let wss_acceptor = acceptor(
            config.wss_listen,
            "broker.wss_listen",
            config.wss_client_certs,
        )?;
        let tls = match config.tls_listen {
            Some(addr) => Some(bind(addr, "broker.tls_listen (--tls-listen)").await?),
            None => None,
        };
        let wss = match config.wss_listen {
            Some(addr) => Some(bind(addr, "broker.wss_listen (--wss-listen)").await?),
            None => None,
        };
        let mqtt_addr = mqtt
            .local_addr()
            .map_err(|e| BrokerError::Router(e.to_string()))?;
        let ws_addr = ws.as_ref().and_then(|l| l.local_addr().ok());
        let tls_addr = tls.as_ref().and_then(|l| l.local_addr().ok());
        let wss_addr = wss.as_ref().and_then(|l| l.local_addr().ok());
        let router = Router::start(&config).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (task_token, tasks_done) = mpsc::channel(1);
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let shared = Arc::new(Shared {
            router,
            observations,
            sessions: Arc::new(Sessions::default()),
            connected: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            failed_logins: FailedLogins::new(config.max_failed_logins, Duration::from_secs(60)),
            config,
            gate: security.gate,
            tls: tls_acceptor,
            wss: wss_acceptor,
            refused_publishes: AtomicU64::new(0),
            refused_subscriptions: AtomicU64::new(0),
            session_subscriptions: std::sync::Mutex::new(HashMap::new()),
            absences: away::Absences::default(),
            retained: Default::default(),
        });
        shared.resume(resume).await;
        let listeners = [
            (Some(mqtt), Transport::Tcp),
            (ws, Transport::Ws),
            (tls, Transport::Tls),
            (wss, Transport::Wss),
        ];
        for (listener, transport) in listeners {
            if let Some(listener) = listener {
                tokio::spawn(accept_loop(
                    shared.clone(),
                    listener,
                    transport,
                    permits.clone(),
                    task_token.clone(),
                ));
            }
        }
        for addr in shared.config.insecure_remote() {
            tracing::warn!(
                "plain MQTT listens on {addr}, open to the network without encryption (broker.allow_insecure_remote = true): passwords and readings can be read on the way"
            );
        }
        tracing::info!(%mqtt_addr, ws = ?ws_addr, tls = ?tls_addr, wss = ?wss_addr, "MQTT broker listening");
        Ok(Broker {
            shared,
            mqtt_addr,
            ws_addr,
            tls_addr,
            wss_addr,
            shutdown,
            tasks_done: tokio::sync::Mutex::new(tasks_done),
            task_token: std::sync::Mutex::new(Some(task_token)),
        })
    }

    /// The address MQTT over TCP listens on.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The address MQTT over WebSocket listens on, if enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The address MQTT over TLS listens on, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The address MQTT over secure WebSocket listens on, if enabled.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// The WebSocket path (plain and secure).
    pub fn ws_path(&self) -> &str {
        &self.shared.config.ws_path
    }

    /// Serves new TLS connections with another certificate (the server
    /// certificate re-issued for new addresses, say); open ones keep theirs.
    pub fn replace_tls(&self, material: &TlsMaterial) -> Result<(), BrokerError> {
        for acceptor in [&self.shared.tls, &self.shared.wss].into_iter().flatten() {
            acceptor.replace(material)?;
        }
        Ok(())
    }

    /// What the ACLs refused since start.
    pub fn refusals(&self) -> Refusals {
        Refusals {
            publishes: self.shared.refused_publishes.load(Ordering::Relaxed),
            subscriptions: self.shared.refused_subscriptions.load(Ordering::Relaxed),
        }
    }

    /// Clients connected right now.
    pub fn connections(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The clients away whose sessions are kept, with the messages waiting
    /// for them, by client id.
    pub fn absent_clients(&self) -> Vec<AbsentClient> {
        self.shared.absences.absent()
    }

    /// A handle that publishes on Vigil's behalf from another task.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, closes every client connection (MQTT 5 clients are told
    /// the server is shutting down) and waits, at most `grace`, until every
    /// connection has handed its last observation over, and the messages the
    /// router held for kept sessions are queued (see `away`).
    /// Calling it again waits again; it never fails.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let _ = self.shutdown.send(true);
        drop(
            self.task_token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let mut tasks_done = self.tasks_done.lock().await;
        if timeout(grace, tasks_done.recv()).await.is_err() {
            tracing::warn!("some client connections did not close within {grace:?}");
        }
        self.shared.absences.settle(deadline).await;
    }
}

async fn bind(addr: SocketAddr, setting: &'static str) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BrokerError::Bind {
            addr,
            setting,
            source,
        })
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    transport: Transport,
    permits: Arc<Semaphore>,
    token: mpsc::Sender<()>,
) {
    let mut shutdown = shared.shutdown.clone();
    let mut refused_full = 0u64;
    loop {
        let accepted = tokio::select! {
            // Shutdown closes the listener so no new client is half-accepted.
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!("accepting a connection failed: {e}");
                sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused_full += 1;
            if refused_full.is_power_of_two() {
                tracing::warn!(
                    "refused {refused_full} connection(s): broker.max_connections ({}) are open",
                    shared.config.max_connections
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let token = token.clone();
        tokio::spawn(async move {
            serve_client(&shared, stream, peer, transport).await;
            drop(permit);
            drop(token);
        });
    }
}

/// The opening of a connection: what the client sent, and its streams.
struct Opened {
    reader: ClientReader,
    writer: ClientWriter,
    buf: BytesMut,
    connect: Connect,
    /// The client's certificate (DER), when TLS asked for one and got it.
    certificate: Option<Bytes>,
}

async fn serve_client(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
) {
    let config = &shared.config;
    let opening = timeout(config.connect_timeout, open(stream, transport, shared)).await;
    let Opened {
        mut reader,
        mut writer,
        buf,
        connect,
        certificate,
    } = match opening {
        Ok(Ok(opened)) => opened,
        Ok(Err(OpenError {
            reason,
            reply,
            mut writer,
            quiet,
        })) => {
            if quiet {
                tracing::debug!(%peer, ?transport, "refused a connection: {reason}");
            } else {
                tracing::info!(%peer, ?transport, "refused a connection: {reason}");
            }
            if let Some(w) = writer.as_mut() {
                if let Some(reply) = reply {
                    let _ = w.write(reply).await;
                }
                w.close().await;
            }
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, ?transport, "closed a connection that sent no CONNECT within {:?}", config.connect_timeout);
            return;
        }
    };
    let version = if connect.level == 5 {
        MqttVersion::V5
    } else {
        MqttVersion::V311
    };
    let login = Login {
        client_id: connect.client_id.clone(),
        username: connect.username.clone(),
        password: connect.password.clone(),
        peer,
        transport,
        certificate,
    };
    let (known_as, rights) = match admit(shared, &login, &connect).await {
        Ok(admitted) => admitted,
        Err((refusal, why)) => {
            tracing::warn!(%peer, ?transport, client_id = %connect.client_id, user = ?connect.username, "refused a login: {why}");
            let _ = writer.write(refusal.connack(version)).await;
            writer.close().await;
            let _ = shared
                .observations
                .send(Observation::Connection(ConnectionEvent {
                    at: now_micros(),
                    client_id: connect.client_id.clone(),
                    username: connect.username.clone(),
                    peer,
                    transport,
                    version,
                    outcome: ConnectionOutcome::Refused(why),
                }))
                .await;
            return;
        }
    };
    let event = |client_id: &str, outcome| {
        Observation::Connection(ConnectionEvent {
            at: now_micros(),
            client_id: client_id.to_owned(),
            username: known_as.clone(),
            peer,
            transport,
            version,
            outcome,
        })
    };

    // MQTT: an empty client id is allowed only with a clean session (3.1.1);
    // the server then assigns one. The front door does, for both versions
    // (MQTT 5 learns it from the CONNACK): the router then never meets a
    // client without a name.
    let mut client_id = connect.client_id.clone();
    let assigned = client_id.is_empty();
    if client_id.is_empty() {
        if !connect.clean_start && version == MqttVersion::V311 {
            let _ = writer
                .write(Refusal::IdentifierRejected.connack(version))
                .await;
            writer.close().await;
            let _ = shared
                .observations
                .send(event(
                    "",
                    ConnectionOutcome::Refused("empty client id with a persistent session".into()),
                ))
                .await;
            return;
        }
        let suffix: u64 = rand::random();
        client_id = format!("auto-{suffix:016x}");
    }

    let limits = match version {
        MqttVersion::V5 => connect.properties_v5().unwrap_or_default(),
        MqttVersion::V311 => Default::default(),
    };
    // How long the session outlives the connection (0: it ends with it).
    let session_expiry = match version {
        MqttVersion::V311 if connect.clean_start => 0,
        MqttVersion::V311 => NEVER_EXPIRES,
        MqttVersion::V5 => limits.session_expiry_interval.unwrap_or(0),
    };
    let claim = shared.sessions.claim(&client_id);
    // The client is back: the stand-in that held its session leaves, with
    // what it queued.
    let returning = shared.absences.end(shared, &client_id).await;
    let known = returning.held() || shared.has_session(&client_id);
    if connect.clean_start && session_expiry > 0 {
        // MQTT 5 clean start with a session to keep: the old one goes now
        // (told clean start, rumqttd would keep no session at all).
        away::end_router_session(shared, &client_id).await;
    }
    let router_clean_start = connect.clean_start && session_expiry == 0;
    let handoff = timeout(
        Duration::from_secs(10),
        hand_to_router(
            shared.router.addr,
            &connect,
            &client_id,
            &shared.router.secret,
            router_clean_start,
        ),
    )
    .await;
    let (router_reader, router_writer, mut router_buf, connack) = match handoff {
        Ok(Ok(h)) => h,
        other => {
            let why = match other {
                Ok(Err(e)) => e,
                _ => "the embedded router did not answer within 10 s".to_owned(),
            };
            tracing::error!(
                client_id,
                "cannot hand a client to the embedded router: {why}"
            );
            let _ = writer
                .write(Refusal::ServerUnavailable.connack(version))
                .await;
            writer.close().await;
            let _ = shared
                .observations
                .send(event(&client_id, ConnectionOutcome::Refused(why)))
                .await;
            return;
        }
    };
    // MQTT 5: the topic aliases are the front door's, and so is the name of
    // a client that came without one. MQTT 3.1.1: the router's MQTT 5
    // CONNACK told in 3.1.1.
    let ours = match version {
        MqttVersion::V5 if connack.is_accepted() => {
            let ours = connack.with_topic_alias_maximum(TOPIC_ALIAS_MAXIMUM);
            if assigned {
                ours.with_assigned_client_id(&client_id)
            } else {
                ours
            }
        }
        MqttVersion::V5 => connack.clone(),
        MqttVersion::V311 => ConnAck {
            session_present: connack.session_present,
            code: codec::v311_connack_code(connack.code),
            properties_raw: Bytes::new(),
        },
    };
    let mut connack_bytes = BytesMut::new();
    ours.encode(version, &mut connack_bytes);
    let connack_bytes = connack_bytes.freeze();
    if writer.write(connack_bytes).await.is_err() {
        return;
    }
    if connack.code != 0 {
        writer.close().await;
        let why = format!("the router refused it with code 0x{:02x}", connack.code);
        let _ = shared
            .observations
            .send(event(&client_id, ConnectionOutcome::Refused(why)))
            .await;
        return;
    }
    let connected = ConnectionOutcome::Connected {
        keepalive: connect.keepalive,
        clean_start: connect.clean_start,
    };
    if shared
        .observations
        .send(event(&client_id, connected))
        .await
        .is_err()
    {
        return;
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(client_id, %peer, ?transport, ?version, "client connected");

    let resumed = connack.session_present;
    if known && !resumed {
        // A session the router no longer had: its queue goes with it.
        shared
            .report_session(SessionChange::Ended {
                client_id: client_id.clone(),
            })
            .await;
    }
    let mut queued = returning.take().filter(|_| resumed).unwrap_or_default();
    let link = Arc::new(Link {
        injected_pings: AtomicU32::new(0),
        version,
        pending_subacks: std::sync::Mutex::new(HashMap::new()),
        retained_again: Default::default(),
        retained: shared.retained.clone(),
        own_packet_id: std::sync::atomic::AtomicU16::new(away::FIRST_OWN_PACKET_ID),
        deliveries: Deliveries::new(),
        maximum_packet_size: limits.maximum_packet_size.map(|m| m as usize),
        receive_maximum: limits.receive_maximum.map_or(65_535, usize::from),
        client_id: client_id.clone().into(),
        subscriptions: shared.subscriptions_of(&client_id, resumed, !router_clean_start),
        session_expiry: AtomicU32::new(session_expiry),
    });
    if session_expiry > 0 {
        shared
            .report_session(SessionChange::Kept(link.kept_session(None)))
            .await;
    }
    let mut buf = buf;
    if !queued.is_empty() {
        // Messages queued while it was away go first. Whatever ended the
        // delivery ends the connection the usual way below.
        let from = queued.front().map_or(0, |m| m.seq);
        let (through, _) = away::deliver(
            &link,
            &mut reader,
            &mut writer,
            &mut buf,
            &mut queued,
            connect.keepalive,
        )
        .await;
        if let Some(through) = through {
            shared
                .report_session(SessionChange::Delivered {
                    client_id: client_id.clone(),
                    from,
                    through,
                })
                .await;
        }
    }
    let (to_client, to_client_rx) = mpsc::channel::<ToClient>(64);
    let upstream = Upstream {
        shared: shared.clone(),
        reader,
        buf,
        router: router_writer,
        link: link.clone(),
        client_id: client_id.clone().into(),
        version,
        keepalive: connect.keepalive,
        rights,
        to_client: to_client.clone(),
        answered_qos2: HashSet::new(),
        topic_aliases: Vec::new(),
        tags: std::array::from_fn(|i| {
            let tag = Tag::value((i / 2) as u8, i % 2 == 1, &client_id);
            codec::with_user_property(&[], TAG, &tag)
        }),
    };
    let mut up = tokio::spawn(upstream.run());
    // What the router sent after CONNACK goes to the client first.
    let leftover = router_buf.split().freeze();
    let mut down = tokio::spawn(downstream(
        router_reader,
        leftover,
        writer,
        to_client_rx,
        link.clone(),
    ));
    let (reason, router_writer) = tokio::select! {
        // Upstream first: when the client goes, upstream's end closes the
        // router side, so both can be ready at once, and the client's
        // reason (dropped, keepalive, ...) is the true one, not the
        // router's close that followed it.
        biased;
        r = &mut up => match r {
            // Only after a DISCONNECT does the router close first; otherwise
            // its half is closed now.
            Ok((reason, writer)) => {
                let writer = (reason == DisconnectReason::Clean).then_some(writer);
                (reason, writer)
            }
            Err(_) => (DisconnectReason::Dropped, None),
        },
        r = &mut down => {
            let closed = r.map_or(DisconnectReason::Dropped, |(reason, _)| reason);
            // The router closes as soon as it reads a client's DISCONNECT,
            // which upstream forwards before it returns: the close can be
            // seen here first. Give upstream a moment to say why the client
            // left (seen as "connection lost" in ~5% of clean DISCONNECTs).
            // Only a DISCONNECT counts: a client that merely noticed the
            // close (a takeover, say) keeps the router's reason.
            let upstream = match &closed {
                DisconnectReason::ServerClosed(_) => timeout(UPSTREAM_GRACE, &mut up).await.ok(),
                _ => None,
            };
            match upstream {
                Some(Ok((DisconnectReason::Clean, writer))) => {
                    (DisconnectReason::Clean, Some(writer))
                }
                _ => {
                    up.abort();
                    (closed, None)
                }
            }
        }
    };
    if router_writer.is_some() && !down.is_finished() {
        // The client left with DISCONNECT, which the router has been sent:
        // it removes the connection and closes its socket. Our side stays
        // open until then (see ROUTER_CLOSE_WAIT). Downstream ends when the
        // router closes, or sooner if the client is gone; then the router's
        // close is awaited here.
        let router_closed = timeout(ROUTER_CLOSE_WAIT, async {
            if let Ok((_, mut router)) = (&mut down).await {
                let mut sink = [0u8; 1024];
                while matches!(router.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        })
        .await;
        if router_closed.is_err() {
            tracing::warn!(
                client_id,
                "the embedded router did not close the connection within {ROUTER_CLOSE_WAIT:?} of its DISCONNECT"
            );
        }
    }
    let reason = match reason {
        DisconnectReason::ServerClosed(_) if claim.taken_over() => {
            DisconnectReason::SessionTakenOver
        }
        reason => reason,
    };
    // Tell an MQTT 5 client why, then close.
    let farewell = match (&reason, version) {
        (_, MqttVersion::V311) => None,
        (DisconnectReason::PacketTooLarge, _) => Some(codec::disconnect_v5(0x95)),
        (DisconnectReason::TopicAliasInvalid(_), _) => Some(codec::disconnect_v5(0x94)),
        (DisconnectReason::KeepaliveTimeout, _) => Some(codec::disconnect_v5(0x8D)),
        (DisconnectReason::ProtocolError(_), _) => Some(codec::disconnect_v5(0x81)),
        (DisconnectReason::Shutdown, _) => Some(codec::disconnect_v5(0x8B)),
        (DisconnectReason::SessionTakenOver, _) => Some(codec::disconnect_v5(0x8E)),
        _ => None,
    };
    if !down.is_finished() {
        let _ = to_client.send(ToClient::Close(farewell)).await;
        if timeout(Duration::from_secs(2), &mut down).await.is_err() {
            down.abort();
        }
    }
    up.abort();
    drop(router_writer);
    shared.connected.fetch_sub(1, Ordering::Relaxed);
    // A will the router sends later (MQTT 5 Will Delay Interval) must not be
    // cancelled by a stand-in logging in under the client's id first.
    let will_delay = match &connect.will {
        Some(_) if reason.sends_will() && reason != DisconnectReason::Shutdown => connect
            .will_properties_v5()
            .ok()
            .and_then(|w| w.will_delay_interval)
            .unwrap_or(0),
        _ => 0,
    };
    away::after_connection(
        shared,
        &link,
        &claim,
        !router_clean_start,
        Duration::from_secs(u64::from(will_delay)),
        queued,
    )
    .await;
    drop(claim);
    tracing::debug!(client_id, "client disconnected: {reason}");
    let sends_will = reason.sends_will() && reason != DisconnectReason::Shutdown;
    let _ = shared
        .observations
        .send(event(&client_id, ConnectionOutcome::Disconnected(reason)))
        .await;
    if let (true, Some(will)) = (sends_will, connect.will.as_ref()) {
        let will_props = connect.will_properties_v5().unwrap_or_default();
        if will.retain && !will.topic.starts_with('$') {
            shared.retained.keep(&Publish {
                dup: false,
                qos: will.qos,
                retain: true,
                topic: will.topic.clone(),
                packet_id: None,
                payload: will.payload.clone(),
                properties: codec::PublishProperties {
                    message_expiry_interval: will_props.message_expiry_interval,
                    ..Default::default()
                },
                // A will's own property (its delay) has no place in a PUBLISH.
                properties_raw: codec::without_property(
                    &will.properties,
                    codec::property_id::WILL_DELAY_INTERVAL,
                    "CONNECT",
                )
                .unwrap_or_default(),
            });
        }
        let _ = shared
            .observations
            .send(Observation::Message(Message {
                at: now_micros(),
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                retain: will.retain,
                client_id: Some(client_id),
                user_properties: will_props.user_properties,
                content_type: will_props.content_type,
                is_will: true,
            }))
            .await;
    }
}

/// Asks the gate about a login (unless its address has used up its failed
/// logins) and checks its will against the rights it gets. Returns the name
/// the client is known by and its rights, or the refusal and why.
async fn admit(
    shared: &Shared,
    login: &Login,
    connect: &Connect,
) -> Result<(Option<String>, Rights), (Refusal, String)> {
    let ip = login.peer.ip();
    if shared.failed_logins.blocked(ip) {
        let refusal = match connect.version() {
            MqttVersion::V5 => Refusal::ConnectionRateExceeded,
            MqttVersion::V311 => Refusal::NotAuthorized,
        };
        return Err((
            refusal,
            format!(
                "{ip} failed to log in {} times within a minute (broker.max_failed_logins); refused unchecked until that minute is over",
                shared.config.max_failed_logins
            ),
        ));
    }
    match shared.gate.admit(login).await {
        Verdict::Admit { identity, rights } => {
            if let Some(will) = connect
                .will
                .as_ref()
                .filter(|w| !rights.may_publish(&w.topic))
            {
                return Err((
                    Refusal::NotAuthorized,
                    format!(
                        "its will topic '{}' is outside what it may publish",
                        will.topic
                    ),
                ));
            }
            Ok((identity.or_else(|| connect.username.clone()), rights))
        }
        Verdict::Refuse { refusal, why } => {
            let failures = shared.failed_logins.failed(ip);
            let refusal = match refusal {
                Denial::BadCredentials => Refusal::BadCredentials,
                Denial::NotAuthorized | Denial::TooManyAttempts => Refusal::NotAuthorized,
            };
            Err((
                refusal,
                format!("{why} (failure {failures} from {ip} this minute)"),
            ))
        }
    }
}

struct OpenError {
    reason: String,
    reply: Option<Bytes>,
    writer: Option<ClientWriter>,
    /// A peer that went away mid-handshake (a port scan, a health check):
    /// not worth a line in the log at the default level.
    quiet: bool,
}

/// Accepts the transport, then reads and checks the CONNECT.
#[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
async fn open(
    stream: TcpStream,
    transport: Transport,
    shared: &Shared,
) -> Result<Opened, OpenError> {
    let config = &shared.config;
    let early = |reason: String| OpenError {
        reason,
        reply: None,
        writer: None,
        quiet: false,
    };
    let (tls, certificate) = match transport {
        Transport::Tls | Transport::Wss => {
            let acceptor = match transport {
                Transport::Tls => shared.tls.as_ref(),
                _ => shared.wss.as_ref(),
            }
            .ok_or_else(|| early("no TLS certificate".into()))?;
            let tls = acceptor.get().accept(stream).await.map_err(|e| OpenError {
                quiet: matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                ..early(format!("TLS handshake failed: {e}"))
            })?;
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| Bytes::copy_from_slice(c.as_ref()));
            (Ok(tls), certificate)
        }
        _ => (Err(stream), None),
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_payload + PACKET_OVERHEAD))
        .max_frame_size(Some(config.max_payload + PACKET_OVERHEAD));
    let path = config.ws_path.clone();
    let callback = move |req: &Request, resp: Response| ws_handshake(&path, req, resp);
    let ws_failed = |e| early(format!("WebSocket handshake failed: {e}"));
    let (mut reader, writer) = match (transport, tls) {
        (Transport::Ws, Err(tcp)) => split_ws(
            tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(ws_config))
                .await
                .map_err(ws_failed)?,
        ),
        (Transport::Wss, Ok(tls)) => split_wss(
            tokio_tungstenite::accept_hdr_async_with_config::<TlsTcp, _>(
                tls,
                callback,
                Some(ws_config),
            )
            .await
            .map_err(ws_failed)?,
        ),
        (_, Ok(tls)) => split_tls(tls),
        (_, Err(tcp)) => split_tcp(tcp),
    };
    let mut buf = BytesMut::with_capacity(4096);
    let fail = |reason: String, reply: Option<Bytes>, writer| {
        Err(OpenError {
            reason,
            reply,
            writer: Some(writer),
            quiet: false,
        })
    };
    let header = loop {
        match codec::parse_frame_header(&buf) {
            Ok(Some(h)) if buf.len() >= h.total_len() => break h,
            Ok(Some(h)) if h.packet_type != packet_type::CONNECT => {
                return fail(
                    format!(
                        "its first packet was of type {}, not CONNECT",
                        h.packet_type
                    ),
                    None,
                    writer,
                )
            }
            Ok(Some(h)) if h.remaining_len > config.max_payload + PACKET_OVERHEAD => {
                return fail(
                    format!("its CONNECT has {} bytes, over the limit", h.remaining_len),
                    None,
                    writer,
                )
            }
            Ok(_) => {}
            Err(e) => return fail(format!("malformed packet: {e}"), None, writer),
        }
        match reader.read_into(&mut buf).await {
            Ok(0) => return fail("it closed before sending CONNECT".into(), None, writer),
            Ok(_) => {}
            Err(e) => return fail(format!("reading CONNECT failed: {e}"), None, writer),
        }
    };
    if header.packet_type != packet_type::CONNECT {
        return fail(
            format!(
                "its first packet was of type {}, not CONNECT",
                header.packet_type
            ),
            None,
            writer,
        );
    }
    let mut frame = buf.split_to(header.total_len()).freeze();
    frame.advance(header.header_len);
    let connect = match Connect::parse(frame) {
        Ok(c) => c,
        Err(codec::CodecError::UnsupportedProtocolLevel(level)) => {
            return fail(
                format!("it speaks MQTT protocol level {level}; Vigil speaks 3.1, 3.1.1 and 5"),
                Some(Refusal::UnsupportedProtocolVersion.connack(MqttVersion::V311)),
                writer,
            )
        }
        Err(e) => return fail(format!("malformed CONNECT: {e}"), None, writer),
    };
    Ok(Opened {
        reader,
        writer,
        buf,
        connect,
        certificate,
    })
}

/// Accepts a WebSocket upgrade on the configured path and answers the `mqtt`
/// subprotocol that MQTT clients ask for.
#[allow(clippy::result_large_err)] // the signature is tungstenite's `Callback`
fn ws_handshake(path: &str, req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != path {
        let mut refusal =
            ErrorResponse::new(Some(format!("MQTT over WebSocket is served at {path}\n")));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .find(|p| matches!(*p, "mqtt" | "mqttv3.1"))
        .map(str::to_owned);
    if let Some(protocol) = offered {
        if let Ok(value) = HeaderValue::from_str(&protocol) {
            resp.headers_mut().insert("sec-websocket-protocol", value);
        }
    }
    Ok(resp)
}

type Handoff = (OwnedReadHalf, OwnedWriteHalf, BytesMut, ConnAck);

/// Connects to the router, logs in over MQTT 5 with the secret on the
/// client's behalf and returns the router's CONNACK.
/// `clean_start` is what the router is told: the session is the front
/// door's to keep or end (see [`away`]), and rumqttd keeps one exactly when
/// a connection had no clean start.
async fn hand_to_router(
    addr: SocketAddr,
    connect: &Connect,
    client_id: &str,
    secret: &str,
    clean_start: bool,
) -> Result<Handoff, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut inner = connect.clone();
    inner.clean_start = clean_start;
    if inner.level != 5 {
        // MQTT 3.1 and 3.1.1 in MQTT 5 words: no properties, except that a
        // session kept after the connection ends is one that never expires.
        inner.level = 5;
        inner.protocol_name = "MQTT".to_owned();
        inner.properties = if clean_start {
            Bytes::new()
        } else {
            Bytes::from_static(&[
                codec::property_id::SESSION_EXPIRY_INTERVAL,
                0xFF,
                0xFF,
                0xFF,
                0xFF,
            ])
        };
        if let Some(will) = inner.will.as_mut() {
            will.properties = Bytes::new();
        }
    }
    // The will is the router's to publish: it gets the front door's tag too
    // (see TAG), and loses any a client wrote in.
    if let Some(will) = inner.will.as_mut() {
        let own = codec::without_user_property(&will.properties, TAG, "CONNECT")
            .map_err(|e| format!("its will properties are malformed: {e}"))?;
        let tag = Tag::value(will.qos, will.retain, client_id);
        will.properties = codec::with_user_property(&own, TAG, &tag);
    }
    // The router must not name topics by alias on the way to the client:
    // the front door reads every topic, and keeps some messages from the
    // client, which would then miss the alias they set.
    if !inner.properties.is_empty() {
        inner.properties = codec::without_property(
            &inner.properties,
            codec::property_id::TOPIC_ALIAS_MAXIMUM,
            "CONNECT",
        )
        .map_err(|e| format!("its CONNECT properties are malformed: {e}"))?;
    }
    inner.client_id = client_id.to_owned();
    // A will on a `$` topic could reach no subscriber (MQTT 4.7.2) but the
    // router would deliver it to `#`; the front door records it all the same.
    if inner
        .will
        .as_ref()
        .is_some_and(|w| w.topic.starts_with('$'))
    {
        inner.will = None;
    }
    inner.keepalive = ROUTER_KEEPALIVE;
    inner.username = Some(INTERNAL_USER.to_owned());
    inner.password = Some(Bytes::copy_from_slice(secret.as_bytes()));
    let mut out = BytesMut::new();
    inner.encode(&mut out);
    writer
        .write_all(&out)
        .await
        .map_err(|e| format!("cannot write CONNECT: {e}"))?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        match codec::parse_frame_header(&buf) {
            Ok(Some(h)) if buf.len() >= h.total_len() => {
                if h.packet_type != packet_type::CONNACK {
                    return Err(format!(
                        "it answered with packet type {} instead of CONNACK",
                        h.packet_type
                    ));
                }
                let bytes = buf.split_to(h.total_len()).freeze();
                let connack = ConnAck::parse(&bytes[h.header_len..], MqttVersion::V5)
                    .map_err(|e| format!("its CONNACK is malformed: {e}"))?;
                return Ok((reader, writer, buf, connack));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("its answer is malformed: {e}")),
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => return Err("it closed the connection without a CONNACK".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading its CONNACK failed: {e}")),
        }
    }
}

/// State both directions of one connection share.
struct Link {
    /// PINGREQs the front door sent the router itself; that many PINGRESPs
    /// must not reach the client.
    injected_pings: AtomicU32,
    version: MqttVersion,
    /// SUBSCRIBEs forwarded without their refused filters, by packet id:
    /// per original filter, `None` where the router's code goes, or the
    /// refusal code.
    pending_subacks: std::sync::Mutex<HashMap<u16, Vec<Option<u8>>>>,
    /// SUBSCRIBEs with filters the client had already (3.1.1, MQTT 5
    /// Retain Handling 0), by packet id: the filters and the QoS asked for,
    /// whose retained messages follow the SUBACK (see [`retained`]).
    retained_again: std::sync::Mutex<HashMap<u16, Vec<(String, u8)>>>,
    /// Copies of the retained messages.
    retained: Arc<retained::RetainedCopies>,
    /// The next of the front door's own packet ids for this client (queued
    /// and retained messages it sends itself), from
    /// [`away::FIRST_OWN_PACKET_ID`] up.
    own_packet_id: std::sync::atomic::AtomicU16,
    /// The router's QoS 1 and 2 messages to the client, and their answers.
    deliveries: Deliveries,
    /// MQTT 5: the largest packet the client takes (its CONNECT says).
    maximum_packet_size: Option<usize>,
    /// MQTT 5: how many QoS 1 and 2 messages the client takes unfinished
    /// (its CONNECT says; 65,535 when it does not).
    receive_maximum: usize,
    client_id: Arc<str>,
    /// The filters the router has for this client, with their
    /// subscription options (MQTT 5 No Local and Retain Handling are the
    /// front door's to keep), kept with the session.
    subscriptions: Subscriptions,
    /// Seconds the session outlives the connection (0: it ends with it;
    /// [`NEVER_EXPIRES`]); an MQTT 5 DISCONNECT may change it.
    session_expiry: AtomicU32,
}

/// What becomes of a packet from the router.
enum Fate {
    /// It goes to the client as it is.
    Forward,
    /// It does not (a PINGRESP for the front door's own PINGREQ, a message
    /// over the client's Maximum Packet Size, a PUBREL the front door
    /// answers).
    Drop,
    /// These bytes go instead.
    Replace(Bytes),
    /// It waits until the client has room (MQTT 5 Receive Maximum); these
    /// bytes instead of it, if given.
    Hold(Option<Bytes>),
}

/// What becomes of a message from the router on its way to the client.
enum Delivery {
    /// It goes as it is (it could not be read: the client judges it).
    AsItIs,
    /// The client must not get it (its own message under No Local, a
    /// retained one under Retain Handling 2): the front door answers it.
    Keep,
    /// It goes as these bytes, at this QoS.
    Rewrite(Bytes, u8),
}

impl Link {
    /// Takes note of the filters of a SUBSCRIBE that went to the router
    /// (a filter subscribed again replaces its options).
    fn subscribed<'a>(&self, filters: impl Iterator<Item = &'a SubscriptionFilter>) {
        let mut subscriptions = self.subscriptions();
        for f in filters {
            match subscriptions.iter_mut().find(|s| s.filter == f.filter) {
                Some(known) => known.options = f.options,
                None => subscriptions.push(f.clone()),
            }
        }
    }

    fn unsubscribed(&self, filters: &[String]) {
        self.subscriptions()
            .retain(|s| !filters.contains(&s.filter));
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, Vec<SubscriptionFilter>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A packet id of the front door's own, never one the router uses.
    fn next_own_packet_id(&self) -> u16 {
        let first = away::FIRST_OWN_PACKET_ID;
        let next = |id: u16| Some(if id == u16::MAX { first } else { id + 1 });
        self.own_packet_id
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, next)
            .unwrap_or(first)
    }

    /// This connection's session as the store keeps it, the client away
    /// since `away_since` (`None`: connected).
    fn kept_session(&self, away_since: Option<Micros>) -> KeptSession {
        KeptSession {
            client_id: self.client_id.to_string(),
            expiry_s: self.session_expiry.load(Ordering::Acquire),
            away_since,
            subscriptions: self
                .subscriptions()
                .iter()
                .map(|s| KeptSubscription {
                    filter: s.filter.clone(),
                    options: s.options,
                })
                .collect(),
        }
    }

    /// Whether some subscription matches `topic` and every one that does
    /// has `option`. (rumqttd sends a copy per matching filter without
    /// saying which; when filters with and without the option overlap, the
    /// message goes.)
    fn only_under(&self, topic: &str, option: impl Fn(&SubscriptionFilter) -> bool) -> bool {
        let subscriptions = self.subscriptions();
        let mut matching = subscriptions
            .iter()
            .filter(|s| {
                let filter = shared_subscription(&s.filter).unwrap_or(&s.filter);
                crate::acl::matches(filter, topic)
            })
            .peekable();
        matching.peek().is_some() && matching.all(option)
    }

    /// The router's PUBLISH as the client gets it, from what the [`TAG`]
    /// says: at the smaller of the QoS published and the QoS granted (the
    /// router sends at the granted one); for MQTT 5, the subscription
    /// options the router ignores: No Local (the client's own messages are
    /// kept), Retain Handling 2 (no retained messages on subscribe; the
    /// router marks retain only on those) and Retain As Published (the
    /// retain flag as published, which the router clears). Without the tag
    /// and, for 3.1.1, without any property.
    fn for_client(&self, h: &FrameHeader, body: &[u8]) -> Delivery {
        let Ok(publish) = Publish::parse(h.flags, Bytes::copy_from_slice(body), MqttVersion::V5)
        else {
            return Delivery::AsItIs;
        };
        let Some(publish) = self.as_client_gets(publish) else {
            return Delivery::Keep;
        };
        let mut out = BytesMut::with_capacity(body.len() + 5);
        publish.encode(self.version, &mut out);
        Delivery::Rewrite(out.freeze(), publish.qos)
    }

    /// A PUBLISH the router wrote (MQTT 5, tagged) as this client gets it
    /// (see [`Link::for_client`]); `None` when it must not get it.
    fn as_client_gets(&self, mut publish: Publish) -> Option<Publish> {
        let tag = publish
            .properties
            .user_properties
            .iter()
            .find(|p| p.name == TAG)
            .and_then(|p| Tag::parse(&p.value));
        let on_subscribe = publish.retain;
        if self.version == MqttVersion::V5 {
            let own = tag.as_ref().is_some_and(|t| t.origin == &*self.client_id);
            if own && self.only_under(&publish.topic, SubscriptionFilter::no_local) {
                return None;
            }
            if on_subscribe && self.only_under(&publish.topic, |s| s.retain_handling() == 2) {
                return None;
            }
            let published_retained = tag.as_ref().is_some_and(|t| t.retain);
            if !on_subscribe
                && published_retained
                && self.only_under(&publish.topic, SubscriptionFilter::retain_as_published)
            {
                publish.retain = true;
            }
        }
        if let Some(tag) = &tag {
            if tag.qos < publish.qos {
                publish.qos = tag.qos;
                if tag.qos == 0 {
                    publish.packet_id = None;
                    publish.dup = false;
                }
            }
        }
        match self.version {
            MqttVersion::V311 => publish.properties_raw = Bytes::new(),
            MqttVersion::V5 => {
                if tag.is_some() {
                    // Parsed already, so it cannot fail.
                    if let Ok(raw) =
                        codec::without_user_property(&publish.properties_raw, TAG, "PUBLISH")
                    {
                        publish.properties_raw = raw;
                    }
                }
            }
        }
        Some(publish)
    }

    /// Decides what becomes of `packet` (with header `h`) from the router;
    /// `holding`: earlier messages wait for room.
    fn fate(&self, h: &FrameHeader, packet: &[u8], holding: bool) -> Fate {
        let body = &packet[h.header_len..];
        match h.packet_type {
            packet_type::PUBLISH => {
                let qos = (h.flags >> 1) & 0b11;
                let packet_id = (qos > 0).then(|| publish_packet_id(body)).flatten();
                let settle = || {
                    if let Some(id) = packet_id {
                        self.deliveries.settle_here(id, qos);
                    }
                    Fate::Drop
                };
                let (rewritten, client_qos) = match self.for_client(h, body) {
                    Delivery::AsItIs => (None, qos),
                    Delivery::Keep => return settle(),
                    Delivery::Rewrite(bytes, client_qos) => (Some(bytes), client_qos),
                };
                let len = rewritten.as_ref().map_or(packet.len(), Bytes::len);
                if self.maximum_packet_size.is_some_and(|max| len > max) {
                    // MQTT 5 [MQTT-3.1.2-25]: discard it, and behave as if
                    // it had been sent.
                    tracing::debug!(
                        bytes = len,
                        "kept a message from a client whose Maximum Packet Size is smaller"
                    );
                    return settle();
                }
                let go = || rewritten.clone().map_or(Fate::Forward, Fate::Replace);
                let Some(id) = packet_id else {
                    return go();
                };
                match client_qos {
                    // Published at QoS 0: the router's flow ends here.
                    0 => {
                        self.deliveries.settle_here(id, qos);
                        return go();
                    }
                    1 if qos == 2 => self.deliveries.awaited_downgraded(id),
                    _ => self.deliveries.awaited(id),
                }
                if holding || !self.deliveries.try_send(self.receive_maximum) {
                    return Fate::Hold(rewritten);
                }
                go()
            }
            packet_type::PUBREL
                if body.len() >= 2
                    && self
                        .deliveries
                        .release_here(u16::from_be_bytes([body[0], body[1]])) =>
            {
                Fate::Drop
            }
            packet_type::PUBACK
            | packet_type::PUBREC
            | packet_type::PUBREL
            | packet_type::PUBCOMP
                if self.version == MqttVersion::V311 && body.len() > 2 =>
            {
                // An MQTT 5 reason code (and properties) 3.1.1 has no room for.
                Fate::Replace(Bytes::copy_from_slice(&[packet[0], 0x02, body[0], body[1]]))
            }
            packet_type::UNSUBACK if self.version == MqttVersion::V311 => match body.get(..2) {
                Some(id) => Fate::Replace(Bytes::copy_from_slice(&[0xB0, 0x02, id[0], id[1]])),
                None => Fate::Forward,
            },
            // 3.1.1 has no DISCONNECT from the server: the close says it.
            packet_type::DISCONNECT if self.version == MqttVersion::V311 => Fate::Drop,
            packet_type::PINGRESP if self.injected_pings.load(Ordering::Acquire) > 0 => {
                self.injected_pings.fetch_sub(1, Ordering::AcqRel);
                Fate::Drop
            }
            packet_type::SUBACK => {
                let merged = self.merge_suback(body);
                let again = body.get(..2).and_then(|id| {
                    self.retained_again
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&u16::from_be_bytes([id[0], id[1]]))
                });
                match (merged, again) {
                    (merged, None) => merged.map_or(Fate::Forward, Fate::Replace),
                    (merged, Some(filters)) => {
                        let mut out = BytesMut::from(merged.as_deref().unwrap_or(packet));
                        for (filter, qos) in filters {
                            out.extend_from_slice(
                                &self.retained.for_subscription(self, &filter, qos),
                            );
                        }
                        Fate::Replace(out.freeze())
                    }
                }
            }
            _ => Fate::Forward,
        }
    }

    /// The router's MQTT 5 SUBACK (body) as the client gets it, if that
    /// differs: with the refusals put back in when it answers a SUBSCRIBE
    /// that had some filters cut, and in 3.1.1's words for 3.1.1.
    fn merge_suback(&self, body: &[u8]) -> Option<Bytes> {
        let mut pending = self
            .pending_subacks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() && self.version == MqttVersion::V5 {
            return None;
        }
        let mut suback = SubAck::parse(body, MqttVersion::V5).ok()?;
        if let Some(slots) = pending.remove(&suback.packet_id) {
            let mut granted = suback.codes.into_iter();
            suback.codes = slots
                .into_iter()
                .map(|slot| slot.or_else(|| granted.next()).unwrap_or(SUBACK_FAILURE))
                .collect();
        } else if self.version == MqttVersion::V5 {
            return None;
        }
        if self.version == MqttVersion::V311 {
            // 3.1.1 knows one failure code and no properties.
            for code in &mut suback.codes {
                if *code >= 0x80 {
                    *code = SUBACK_FAILURE;
                }
            }
            suback.properties_raw = Bytes::new();
        }
        Some(suback.encode(self.version))
    }
}

/// What the connection's other tasks ask the downstream task to do.
enum ToClient {
    /// Send this packet (an acknowledgement of the front door's own).
    Send(Bytes),
    /// Send this last packet (if any), close the connection and stop.
    Close(Option<Bytes>),
}

/// Client → router.
struct Upstream {
    shared: Arc<Shared>,
    reader: ClientReader,
    buf: BytesMut,
    router: OwnedWriteHalf,
    link: Arc<Link>,
    client_id: Arc<str>,
    version: MqttVersion,
    keepalive: u16,
    rights: Rights,
    /// For the acknowledgements of what the rights refuse.
    to_client: mpsc::Sender<ToClient>,
    /// QoS 2 PUBLISHes answered here with PUBREC (refused, or kept from the
    /// router): their PUBREL is answered here too.
    answered_qos2: HashSet<u16>,
    /// MQTT 5 topic aliases the client set: alias `n` at `n - 1`.
    topic_aliases: Vec<Option<String>>,
    /// The [`TAG`] property for this client's PUBLISHes, encoded, at
    /// `qos * 2 + retain`.
    tags: [Bytes; 6],
}

impl Upstream {
    /// Pumps until the connection ends. Returns why, and its half of the
    /// router connection, still open: after a clean DISCONNECT the router
    /// must close first (see [`ROUTER_CLOSE_WAIT`]); otherwise closing it
    /// here would let the router's close race this task's own end, and a
    /// client that vanished could be reported as closed by the broker.
    async fn run(mut self) -> (DisconnectReason, OwnedWriteHalf) {
        let reason = self.pump().await;
        (reason, self.router)
    }

    async fn pump(&mut self) -> DisconnectReason {
        let mut shutdown = self.shared.shutdown.clone();
        // MQTT: no packet for 1.5 × keepalive means the client is gone; 0 = never.
        let keepalive =
            (self.keepalive > 0).then(|| Duration::from_millis(self.keepalive as u64 * 1500));
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let expiry = sleep(keepalive.unwrap_or(far));
        tokio::pin!(expiry);
        let router_ping = sleep(ROUTER_PING_EVERY);
        tokio::pin!(router_ping);
        let mut pending_qos2 = HashSet::new();
        loop {
            // Packets already buffered (after CONNECT, or left from the last read).
            match self.forward_complete_packets(&mut pending_qos2).await {
                Ok(Some(reason)) => return reason,
                Ok(None) => {}
                Err(reason) => return reason,
            }
            tokio::select! {
                read = self.reader.read_into(&mut self.buf) => match read {
                    Ok(0) => return DisconnectReason::Dropped,
                    Ok(_) => {
                        if let Some(k) = keepalive {
                            expiry.as_mut().reset(Instant::now() + k);
                        }
                    }
                    Err(_) => return DisconnectReason::Dropped,
                },
                _ = self.link.deliveries.ready.notified() => {
                    if let Some(due) = self.link.deliveries.take_ready() {
                        if let Err(reason) = self.forward(&due).await {
                            return reason;
                        }
                    }
                }
                _ = &mut expiry => return DisconnectReason::KeepaliveTimeout,
                _ = &mut router_ping => {
                    self.link.injected_pings.fetch_add(1, Ordering::AcqRel);
                    if self.router.write_all(&codec::PINGREQ).await.is_err() {
                        return DisconnectReason::ServerClosed("the router connection broke".into());
                    }
                    router_ping.as_mut().reset(Instant::now() + ROUTER_PING_EVERY);
                }
                _ = shutdown.changed() => {
                    // A DISCONNECT keeps the router from sending wills for
                    // clients that did nothing wrong while Vigil stops.
                    let _ = self.router.write_all(&[0xE0, 0x00]).await;
                    return DisconnectReason::Shutdown;
                }
            }
        }
    }

    /// Forwards every complete packet in the buffer. Returns the reason the
    /// connection ends, if a packet ends it.
    async fn forward_complete_packets(
        &mut self,
        pending_qos2: &mut HashSet<u16>,
    ) -> Result<Option<DisconnectReason>, DisconnectReason> {
        let max_payload = self.shared.config.max_payload;
        // Find where the complete packets end, refusing oversized ones before
        // their bytes are even buffered.
        let mut end = 0;
        let mut too_large = None;
        loop {
            match codec::parse_frame_header(&self.buf[end..]) {
                Ok(Some(h)) => {
                    if h.remaining_len > max_payload + PACKET_OVERHEAD {
                        too_large = Some(h);
                        break;
                    }
                    if end + h.total_len() > self.buf.len() {
                        break;
                    }
                    end += h.total_len();
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(client_id = %self.client_id, "closing the connection: {e}");
                    return Err(DisconnectReason::ProtocolError(e.to_string()));
                }
            }
        }
        if end == 0 && too_large.is_none() {
            return Ok(None);
        }
        let chunk = self.buf.split_to(end).freeze();
        // What goes to the router when some packet is not forwarded as it came.
        let mut out = BytesMut::new();
        let mut at = 0;
        // Bytes from `from` to `at` are yet to be forwarded.
        let mut from = 0;
        let mut ends = None;
        while at < chunk.len() {
            let Ok(Some(h)) = codec::parse_frame_header(&chunk[at..]) else {
                break;
            };
            let frame_end = at + h.total_len();
            let body = chunk.slice(at + h.header_len..frame_end);
            // `Some(x)`: this packet is not forwarded; `x` is, if any.
            let mut cut: Option<Option<Bytes>> = None;
            match h.packet_type {
                packet_type::PUBLISH => match Publish::parse(h.flags, body, self.version)
                    .map_err(|e| DisconnectReason::ProtocolError(format!("malformed PUBLISH: {e}")))
                    .and_then(|p| self.resolve_topic_alias(p))
                {
                    Err(reason) => {
                        tracing::info!(client_id = %self.client_id, "closing the connection: {reason}");
                        ends = Some(reason);
                        break;
                    }
                    Ok(publish) if publish.payload.len() > max_payload => {
                        self.refuse_too_large(&h, Some(&publish.topic));
                        ends = Some(DisconnectReason::PacketTooLarge);
                        break;
                    }
                    Ok(publish) if !self.rights.may_publish(&publish.topic) => {
                        self.refuse_publish(&publish).await;
                        cut = Some(None);
                    }
                    Ok(publish) => {
                        // A QoS 2 PUBLISH sent again before PUBREL is the same
                        // message: record it once.
                        let first = publish.qos != 2
                            || publish.packet_id.is_none_or(|id| pending_qos2.insert(id));
                        // MQTT 4.7.2: a topic starting with `$` matches no
                        // filter starting with a wildcard, and filters on `$`
                        // topics never reach the router (`check_subscribe`):
                        // no subscriber can be owed it. It is recorded and
                        // answered here, and kept from the router, which
                        // would deliver it to `#`.
                        let reserved = publish.topic.starts_with('$');
                        let answer = reserved.then_some((publish.qos, publish.packet_id));
                        if !reserved {
                            // Written straight into what goes to the router.
                            out.extend_from_slice(&chunk[from..at]);
                            from = at;
                            self.for_router(&publish, &mut out)?;
                            if publish.retain {
                                self.shared.retained.keep(&publish);
                            }
                        }
                        if first {
                            self.observe(publish).await?;
                        }
                        if let Some((qos, packet_id)) = answer {
                            self.answer_here(qos, packet_id, NO_SUBSCRIBERS).await;
                        }
                        cut = Some(None);
                    }
                },
                // An answer to a message the front door sent itself (a
                // retained one for a filter subscribed again, or a queued
                // one `away::deliver` gave up waiting for): the router never
                // sent it, and would drop the connection for an answer it
                // did not expect. A PUBREC gets its PUBREL here.
                packet_type::PUBACK | packet_type::PUBREC | packet_type::PUBCOMP
                    if chunk
                        .get(at + h.header_len..at + h.header_len + 2)
                        .is_some_and(|id| {
                            u16::from_be_bytes([id[0], id[1]]) >= away::FIRST_OWN_PACKET_ID
                        }) =>
                {
                    if h.packet_type == packet_type::PUBREC {
                        let id = &chunk[at + h.header_len..at + h.header_len + 2];
                        let pubrel = Bytes::copy_from_slice(&[0x62, 0x02, id[0], id[1]]);
                        let _ = self.to_client.send(ToClient::Send(pubrel)).await;
                    }
                    cut = Some(None)
                }
                packet_type::PUBACK | packet_type::PUBREC | packet_type::PUBCOMP => {
                    if let Some(id) = chunk.get(at + h.header_len..at + h.header_len + 2) {
                        let id = u16::from_be_bytes([id[0], id[1]]);
                        let answer = &chunk[at..frame_end];

                        match self
                            .link
                            .deliveries
                            .client_answered(h.packet_type, id, answer)
                        {
                            Route::AsItIs => {}
                            Route::Instead(due) => cut = Some((!due.is_empty()).then_some(due)),
                        }
                    }
                }
                packet_type::PUBREL => {
                    if let Some(id) = chunk.get(at + h.header_len..at + h.header_len + 2) {
                        let id = u16::from_be_bytes([id[0], id[1]]);
                        pending_qos2.remove(&id);
                        if self.answered_qos2.remove(&id) {
                            let pubcomp = publish_ack(packet_type::PUBCOMP, id, 0, self.version);
                            let _ = self.to_client.send(ToClient::Send(pubcomp)).await;
                            cut = Some(None);
                        }
                    }
                }
                packet_type::UNSUBSCRIBE => {
                    match codec::unsubscribe_filters(h.flags, &body, self.version) {
                        Ok(filters) => {
                            self.link.unsubscribed(&filters);
                            self.session_changed().await;
                            if self.version != MqttVersion::V5 {
                                // In MQTT 5 words: an empty property block
                                // after the packet id.
                                cut = Some(Some(codec::with_empty_properties(
                                    h.packet_type << 4 | h.flags,
                                    &body,
                                    2,
                                )));
                            }
                        }
                        Err(e) => {
                            ends = Some(DisconnectReason::ProtocolError(format!(
                                "malformed UNSUBSCRIBE: {e}"
                            )));
                            break;
                        }
                    }
                }
                packet_type::SUBSCRIBE => match Subscribe::parse(h.flags, body, self.version) {
                    Ok(subscribe) => cut = self.check_subscribe(subscribe).await,
                    Err(e) => {
                        ends = Some(DisconnectReason::ProtocolError(format!(
                            "malformed SUBSCRIBE: {e}"
                        )));
                        break;
                    }
                },
                packet_type::DISCONNECT => {
                    // MQTT 5: it may shorten or end the session, not make
                    // one of a session that ends with the connection.
                    let expiry = codec::Disconnect::parse(&body, self.version)
                        .and_then(|d| d.properties_v5())
                        .ok()
                        .and_then(|p| p.session_expiry_interval);
                    if let Some(expiry) = expiry {
                        let _ = self.link.session_expiry.fetch_update(
                            Ordering::AcqRel,
                            Ordering::Acquire,
                            |now| (now != 0).then_some(expiry),
                        );
                    }
                    // Forward it (the router then sends no will) and stop.
                    // MQTT 5: any reason code but 0 asks for the will
                    // (0x04, or an error), which rumqttd drops on every
                    // DISCONNECT: the router side is closed without one,
                    // and the router sends the will as for a lost client.
                    // A normal one goes in the words rumqttd reads: it takes
                    // a reason code without a property length (allowed, and
                    // what Mosquitto's clients send) for a malformed packet
                    // and then never closes. The properties are the front
                    // door's business (session expiry, above).
                    let code = body.first().copied().unwrap_or(0);
                    if self.version == MqttVersion::V5 {
                        out.extend_from_slice(&chunk[from..at]);
                        if code == 0 {
                            out.extend_from_slice(&[0xE0, 0x00]);
                        }
                        from = frame_end;
                    }
                    at = frame_end;
                    ends = Some(match code {
                        0 => DisconnectReason::Clean,
                        code => DisconnectReason::DisconnectWithWill(code),
                    });
                    break;
                }
                packet_type::CONNECT => {
                    ends = Some(DisconnectReason::ProtocolError("a second CONNECT".into()));
                    break;
                }
                _ => {}
            }
            if let Some(instead) = cut {
                out.extend_from_slice(&chunk[from..at]);
                if let Some(instead) = instead {
                    out.extend_from_slice(&instead);
                }
                from = frame_end;
            }
            at = frame_end;
        }
        // Everything else before `at` is forwarded unchanged; a packet that
        // ends the connection is not. One write for the whole read.
        if out.is_empty() {
            self.forward(&chunk[from..at]).await?;
        } else {
            out.extend_from_slice(&chunk[from..at]);
            self.forward(&out).await?;
        }
        if let Some(reason) = ends {
            return Ok(Some(reason));
        }
        if let Some(h) = too_large {
            self.refuse_too_large(&h, None);
            return Ok(Some(DisconnectReason::PacketTooLarge));
        }
        Ok(None)
    }

    /// MQTT 5 topic aliases (section 3.3.2.3.4): a PUBLISH may name its topic
    /// by a number (1 to [`TOPIC_ALIAS_MAXIMUM`]) that an earlier PUBLISH on
    /// this connection set. The front door keeps the numbers: rights and the
    /// store see the real topic, and the router gets the PUBLISH written out
    /// ([`Upstream::for_router`]) with the topic and without the alias, so
    /// its own alias handling is never relied on.
    fn resolve_topic_alias(&mut self, mut publish: Publish) -> Result<Publish, DisconnectReason> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(publish);
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(DisconnectReason::TopicAliasInvalid(format!(
                "alias {alias} is outside 1 to {TOPIC_ALIAS_MAXIMUM}"
            )));
        }
        let slot = usize::from(alias - 1);
        if self.topic_aliases.len() <= slot {
            self.topic_aliases.resize(slot + 1, None);
        }
        if publish.topic.is_empty() {
            let Some(topic) = &self.topic_aliases[slot] else {
                return Err(DisconnectReason::TopicAliasInvalid(format!(
                    "alias {alias} stands for no topic yet"
                )));
            };
            publish.topic = topic.clone();
        } else {
            self.topic_aliases[slot] = Some(publish.topic.clone());
        }
        publish.properties_raw = codec::without_property(
            &publish.properties_raw,
            codec::property_id::TOPIC_ALIAS,
            "PUBLISH",
        )
        .map_err(|e| DisconnectReason::ProtocolError(e.to_string()))?;
        publish.properties.topic_alias = None;
        Ok(publish)
    }

    /// Appends the PUBLISH as the router gets it to `out`: in MQTT 5 (the
    /// router speaks nothing else), its topic written out (no alias), with
    /// the front door's [`TAG`] saying its QoS, retain flag and publisher,
    /// and no other property by that name.
    fn for_router(&self, publish: &Publish, out: &mut BytesMut) -> Result<(), DisconnectReason> {
        let brought = publish
            .properties
            .user_properties
            .iter()
            .any(|p| p.name == TAG);
        let own = if brought {
            codec::without_user_property(&publish.properties_raw, TAG, "PUBLISH")
                .map_err(|e| DisconnectReason::ProtocolError(e.to_string()))?
        } else {
            publish.properties_raw.clone()
        };
        let tag = &self.tags[usize::from(publish.qos.min(2)) * 2 + usize::from(publish.retain)];
        publish.encode_v5_with(&[&own, tag], out);
        Ok(())
    }

    async fn forward(&mut self, bytes: &[u8]) -> Result<(), DisconnectReason> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.router.write_all(bytes).await.map_err(|e| {
            DisconnectReason::ServerClosed(format!("the router connection broke: {e}"))
        })
    }

    /// Drops a PUBLISH the client may not make, counts it, and answers it
    /// (MQTT 5: "not authorized"; 3.1.1 has no such answer, so the usual
    /// acknowledgement, as brokers do).
    async fn refuse_publish(&mut self, publish: &Publish) {
        let n = self
            .shared
            .refused_publishes
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n.is_power_of_two() {
            tracing::warn!(client_id = %self.client_id, topic = %publish.topic, "dropped a PUBLISH outside what the client may publish ({n} dropped since start)");
        } else {
            tracing::debug!(client_id = %self.client_id, topic = %publish.topic, "dropped a PUBLISH outside what the client may publish");
        }
        self.answer_here(publish.qos, publish.packet_id, NOT_AUTHORIZED)
            .await;
    }

    /// Answers a PUBLISH that does not go to the router (refused, or one no
    /// subscriber can be owed) with `reason`. A QoS 2 flow that goes on
    /// (3.1.1, or a success) has its PUBREL answered here too.
    async fn answer_here(&mut self, qos: u8, packet_id: Option<u16>, reason: u8) {
        let ack = match (qos, packet_id) {
            (1, Some(id)) => publish_ack(packet_type::PUBACK, id, reason, self.version),
            (2, Some(id)) => {
                if reason < 0x80 || self.version == MqttVersion::V311 {
                    self.answered_qos2.insert(id);
                }
                publish_ack(packet_type::PUBREC, id, reason, self.version)
            }
            _ => return,
        };
        let _ = self.to_client.send(ToClient::Send(ack)).await;
    }

    /// Takes out of a SUBSCRIBE the filters the client may not have, and
    /// those on `$` topics (granted here).
    /// `None`: forward it as it is; `Some(None)`: all refused, answered
    /// here; `Some(Some(packet))`: forward this one instead, and merge the
    /// refusals into its SUBACK on the way back.
    async fn check_subscribe(&mut self, mut subscribe: Subscribe) -> Option<Option<Bytes>> {
        let refused_code = match self.version {
            MqttVersion::V5 => NOT_AUTHORIZED,
            MqttVersion::V311 => SUBACK_FAILURE,
        };
        // A filter on `$` topics (`$SYS/#`, which MQTT Explorer asks for)
        // is granted here and kept from the router: it has no `$` topics,
        // and rumqttd drops a client that subscribes to one. Nothing is
        // published there, so the subscription is true and stays empty.
        // A shared subscription (`$share/<group>/<filter>`) is the router's,
        // with the rights of its filter.
        let slots: Vec<Option<u8>> = subscribe
            .filters
            .iter()
            .map(|f| match shared_subscription(&f.filter) {
                None if f.filter.starts_with('$') => Some(f.qos()),
                shared => {
                    let filter = shared.unwrap_or(&f.filter);
                    (!self.rights.may_subscribe(filter)).then_some(refused_code)
                }
            })
            .collect();
        // MQTT 3.1.1 [MQTT-3.8.4-3] and MQTT 5 Retain Handling 0: a filter
        // subscribed again gets its retained messages again; the router
        // sends them for a new filter only, so the front door sends them
        // after the SUBACK (see `retained`).
        let again: Vec<(String, u8)> = {
            let known = self.link.subscriptions();
            subscribe
                .filters
                .iter()
                .zip(&slots)
                .filter(|(f, slot)| {
                    slot.is_none()
                        && f.retain_handling() == 0
                        && shared_subscription(&f.filter).is_none()
                        && known.iter().any(|k| k.filter == f.filter)
                })
                .map(|(f, _)| (f.filter.clone(), f.qos()))
                .collect()
        };
        if !again.is_empty() {
            self.link
                .retained_again
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(subscribe.packet_id, again);
        }
        let to_router = subscribe.filters.iter().zip(&slots);
        self.link
            .subscribed(to_router.filter(|(_, slot)| slot.is_none()).map(|(f, _)| f));
        self.session_changed().await;
        if slots.iter().all(Option::is_none) {
            // MQTT 5 goes as it came; 3.1.1 in MQTT 5 words.
            if self.version == MqttVersion::V5 {
                return None;
            }
            let mut packet = BytesMut::new();
            subscribe.encode(MqttVersion::V5, &mut packet);
            return Some(Some(packet.freeze()));
        }
        let refused: Vec<&str> = subscribe
            .filters
            .iter()
            .zip(&slots)
            .filter(|(_, slot)| **slot == Some(refused_code))
            .map(|(f, _)| f.filter.as_str())
            .collect();
        if !refused.is_empty() {
            self.shared
                .refused_subscriptions
                .fetch_add(refused.len() as u64, Ordering::Relaxed);
            tracing::info!(client_id = %self.client_id, "refused subscriptions outside what the client may read: {refused:?}");
        }
        if slots.iter().all(Option::is_some) {
            let suback = SubAck {
                packet_id: subscribe.packet_id,
                properties_raw: Bytes::new(),
                codes: slots.into_iter().flatten().collect(),
            };
            let _ = self
                .to_client
                .send(ToClient::Send(suback.encode(self.version)))
                .await;
            return Some(None);
        }
        subscribe.filters = subscribe
            .filters
            .into_iter()
            .zip(&slots)
            .filter(|(_, slot)| slot.is_none())
            .map(|(f, _)| f)
            .collect();
        self.link
            .pending_subacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subscribe.packet_id, slots);
        let mut packet = BytesMut::new();
        subscribe.encode(MqttVersion::V5, &mut packet);
        Some(Some(packet.freeze()))
    }

    /// A kept session's subscriptions changed: the store hears of it.
    async fn session_changed(&self) {
        if self.link.session_expiry.load(Ordering::Acquire) > 0 {
            self.shared
                .report_session(SessionChange::Kept(self.link.kept_session(None)))
                .await;
        }
    }

    fn refuse_too_large(&self, h: &FrameHeader, topic: Option<&str>) {
        tracing::warn!(
            client_id = %self.client_id,
            "refused a {}-byte packet{}: over the maximum payload of {} bytes (broker.max_payload); the client is disconnected and the message dropped",
            h.remaining_len,
            topic.map(|t| format!(" on '{t}'")).unwrap_or_default(),
            self.shared.config.max_payload
        );
    }

    async fn observe(&self, publish: Publish) -> Result<(), DisconnectReason> {
        let message = Message {
            at: now_micros(),
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            client_id: Some(self.client_id.to_string()),
            user_properties: publish.properties.user_properties,
            content_type: publish.properties.content_type,
            is_will: false,
        };
        self.shared
            .observations
            .send(Observation::Message(message))
            .await
            .map_err(|_| DisconnectReason::ServerClosed("Vigil is stopping".into()))
    }
}

/// The topic filter of a shared subscription (`$share/<group>/<filter>`,
/// MQTT 5 section 4.8.2), or `None` if `filter` is not one.
fn shared_subscription(filter: &str) -> Option<&str> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, filter) = rest.split_once('/')?;
    (!group.is_empty() && !filter.is_empty()).then_some(filter)
}

/// Router → client. Forwards whole packets, minus the PINGRESPs that answer
/// the front door's own pings. Returns why it stopped, and the router's half
/// of the connection (still open unless the router closed it).
async fn downstream(
    mut router: OwnedReadHalf,
    leftover: Bytes,
    client: ClientWriter,
    commands: mpsc::Receiver<ToClient>,
    link: Arc<Link>,
) -> (DisconnectReason, OwnedReadHalf) {
    let reason = forward_down(&mut router, leftover, client, commands, link).await;
    (reason, router)
}

async fn forward_down(
    router: &mut OwnedReadHalf,
    leftover: Bytes,
    mut client: ClientWriter,
    mut commands: mpsc::Receiver<ToClient>,
    link: Arc<Link>,
) -> DisconnectReason {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&leftover);
    // QoS 1 and 2 messages waiting for the client to have room, in order.
    let mut held: VecDeque<Bytes> = VecDeque::new();
    loop {
        // Everything complete goes in one write: the packets forwarded as
        // they are (without a copy when all are), and the others' fates.
        let mut end = 0;
        // What goes instead of `buf[..end]` once some packet did not go as
        // it is; `buf[copied..end]` is yet to be added to it.
        let mut out = BytesMut::new();
        let mut copied = 0;
        while let Ok(Some(h)) = codec::parse_frame_header(&buf[end..]) {
            let len = h.total_len();
            if end + len > buf.len() {
                break;
            }
            let packet = &buf[end..end + len];
            let fate = link.fate(&h, packet, !held.is_empty());
            if !matches!(fate, Fate::Forward) {
                out.extend_from_slice(&buf[copied..end]);
                copied = end + len;
            }
            match fate {
                Fate::Forward | Fate::Drop => {}
                Fate::Replace(instead) => out.extend_from_slice(&instead),
                Fate::Hold(instead) => {
                    held.push_back(instead.unwrap_or_else(|| Bytes::copy_from_slice(packet)))
                }
            }
            end += len;
        }
        if end > 0 {
            let chunk = buf.split_to(end).freeze();
            let chunk = if copied == 0 {
                chunk
            } else {
                out.extend_from_slice(&chunk[copied..]);
                out.freeze()
            };
            if !chunk.is_empty() && client.write(chunk).await.is_err() {
                return DisconnectReason::Dropped;
            }
        }
        make_room(&mut buf);
        tokio::select! {
            read = router.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    client.close().await;
                    return DisconnectReason::ServerClosed("the router closed the connection".into());
                }
                Ok(_) => {}
            },
            _ = link.deliveries.room.notified(), if !held.is_empty() => {
                while !held.is_empty() && link.deliveries.try_send(link.receive_maximum) {
                    let Some(packet) = held.pop_front() else { break };
                    if client.write(packet).await.is_err() {
                        return DisconnectReason::Dropped;
                    }
                }
            }
            command = commands.recv() => match command {
                Some(ToClient::Send(packet)) => {
                    if client.write(packet).await.is_err() {
                        return DisconnectReason::Dropped;
                    }
                }
                Some(ToClient::Close(last)) => {
                    if let Some(last) = last {
                        let _ = client.write(last).await;
                    }
                    client.close().await;
                    return DisconnectReason::Shutdown;
                }
                None => {
                    client.close().await;
                    return DisconnectReason::Shutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_says_what_the_router_forgets() {
        let value = Tag::value(1, true, "dev:7");
        assert_eq!(value, "1r:dev:7");
        assert_eq!(
            Tag::parse(&value),
            Some(Tag {
                qos: 1,
                retain: true,
                origin: "dev:7"
            })
        );
        assert_eq!(
            Tag::parse("0:").map(|t| (t.qos, t.retain)),
            Some((0, false))
        );
        for bad in ["", "3:x", "1x:y", "1", "r1:x", "12:x"] {
            assert_eq!(Tag::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn shared_subscriptions_are_told_apart_from_dollar_topics() {
        assert_eq!(shared_subscription("$share/g/a/#"), Some("a/#"));
        assert_eq!(shared_subscription("$share//a"), None);
        assert_eq!(shared_subscription("$share/g"), None);
        assert_eq!(shared_subscription("$SYS/#"), None);
    }
}
