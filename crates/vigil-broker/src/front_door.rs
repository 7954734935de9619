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

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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
use vigil_core::{
    now_micros, ConnectionEvent, ConnectionOutcome, DisconnectReason, Message, MqttVersion,
    Observation, Transport,
};

use crate::codec::{self, packet_type, ConnAck, Connect, FrameHeader, Publish, Refusal};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::router::{Router, INTERNAL_USER};
use crate::sessions::Sessions;
use crate::stream::{split_tcp, split_ws, ClientReader, ClientWriter};

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

/// The embedded MQTT broker: the router and the front door in front of it.
pub struct Broker {
    shared: Arc<Shared>,
    mqtt_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
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
    /// Publishes a message to subscribers on Vigil's own behalf. The caller
    /// records it; the front door does not see it.
    pub async fn publish(&self, topic: &str, payload: Bytes, retain: bool) -> Result<(), String> {
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(format!(
                "'{topic}' is not a topic one can publish to (empty, or has + # or NUL)"
            ));
        }
        if payload.len() > self.shared.config.max_payload {
            return Err(format!(
                "the payload has {} bytes, more than broker.max_payload ({})",
                payload.len(),
                self.shared.config.max_payload
            ));
        }
        self.shared.router.publish(topic, payload, retain).await
    }
}

struct Shared {
    config: BrokerConfig,
    router: Router,
    observations: mpsc::Sender<Observation>,
    sessions: Arc<Sessions>,
    connected: AtomicUsize,
    shutdown: watch::Receiver<bool>,
}

impl Broker {
    /// Binds the listeners, starts the router and begins accepting clients.
    /// What the broker sees goes to `observations`; when that channel is full,
    /// publishers wait.
    pub async fn start(
        config: BrokerConfig,
        observations: mpsc::Sender<Observation>,
    ) -> Result<Broker, BrokerError> {
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
        let mqtt_addr = mqtt
            .local_addr()
            .map_err(|e| BrokerError::Router(e.to_string()))?;
        let ws_addr = ws.as_ref().and_then(|l| l.local_addr().ok());
        let router = Router::start(&config).await?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (task_token, tasks_done) = mpsc::channel(1);
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let shared = Arc::new(Shared {
            config,
            router,
            observations,
            sessions: Arc::new(Sessions::default()),
            connected: AtomicUsize::new(0),
            shutdown: shutdown_rx,
        });
        tokio::spawn(accept_loop(
            shared.clone(),
            mqtt,
            Transport::Tcp,
            permits.clone(),
            task_token.clone(),
        ));
        if let Some(ws) = ws {
            tokio::spawn(accept_loop(
                shared.clone(),
                ws,
                Transport::Ws,
                permits,
                task_token.clone(),
            ));
        }
        tracing::info!(%mqtt_addr, ws = ?ws_addr, "MQTT broker listening");
        Ok(Broker {
            shared,
            mqtt_addr,
            ws_addr,
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

    /// The WebSocket path.
    pub fn ws_path(&self) -> &str {
        &self.shared.config.ws_path
    }

    /// Clients connected right now.
    pub fn connections(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Publishes a message to subscribers on Vigil's own behalf. The caller
    /// records it; the front door does not see it.
    pub async fn publish(&self, topic: &str, payload: Bytes, retain: bool) -> Result<(), String> {
        self.publisher().publish(topic, payload, retain).await
    }

    /// A handle that publishes on Vigil's behalf from another task.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: self.shared.clone(),
        }
    }

    /// Stops accepting, closes every client connection (MQTT 5 clients are told
    /// the server is shutting down) and waits, at most `grace`, until every
    /// connection has handed its last observation over.
    /// Calling it again waits again; it never fails.
    pub async fn shutdown(&self, grace: Duration) {
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
}

async fn serve_client(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
) {
    let config = &shared.config;
    let opening = timeout(config.connect_timeout, open(stream, transport, config)).await;
    let Opened {
        reader,
        mut writer,
        buf,
        connect,
    } = match opening {
        Ok(Ok(opened)) => opened,
        Ok(Err(OpenError {
            reason,
            reply,
            mut writer,
        })) => {
            tracing::info!(%peer, ?transport, "refused a connection: {reason}");
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
    let event = |client_id: &str, outcome| {
        Observation::Connection(ConnectionEvent {
            at: now_micros(),
            client_id: client_id.to_owned(),
            username: connect.username.clone(),
            peer,
            transport,
            version,
            outcome,
        })
    };

    // MQTT: an empty client id is allowed only with a clean session; the
    // server then assigns one.
    let mut client_id = connect.client_id.clone();
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
        if version == MqttVersion::V311 {
            let suffix: u64 = rand::random();
            client_id = format!("auto-{suffix:016x}");
        }
    }

    let claim = (!client_id.is_empty()).then(|| shared.sessions.claim(&client_id));
    let router_addr = if version == MqttVersion::V5 {
        shared.router.v5
    } else {
        shared.router.v4
    };
    let handoff = timeout(
        Duration::from_secs(10),
        hand_to_router(router_addr, &connect, &client_id, &shared.router.secret),
    )
    .await;
    let (router_reader, router_writer, mut router_buf, connack_bytes, connack) = match handoff {
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
    if client_id.is_empty() {
        client_id = codec::assigned_client_id(&connack.properties_raw)
            .unwrap_or_else(|| "(assigned by broker)".to_owned());
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

    let link = Arc::new(Link {
        injected_pings: AtomicU32::new(0),
    });
    let (to_client, to_client_rx) = mpsc::channel::<ToClient>(4);
    let upstream = Upstream {
        shared: shared.clone(),
        reader,
        buf,
        router: router_writer,
        link: link.clone(),
        client_id: client_id.clone().into(),
        version,
        keepalive: connect.keepalive,
    };
    let mut up = tokio::spawn(upstream.run());
    // What the router sent after CONNACK goes to the client first.
    let leftover = router_buf.split().freeze();
    let mut down = tokio::spawn(downstream(
        router_reader,
        leftover,
        writer,
        to_client_rx,
        link,
    ));
    let (reason, router_writer) = tokio::select! {
        // Upstream first: when the client goes, upstream's end closes the
        // router side, so both can be ready at once, and the client's
        // reason (dropped, keepalive, ...) is the true one, not the
        // router's close that followed it.
        biased;
        r = &mut up => r.unwrap_or((DisconnectReason::Dropped, None)),
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
                Some(Ok((DisconnectReason::Clean, writer))) => (DisconnectReason::Clean, writer),
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
    let reason = match (&reason, &claim) {
        (DisconnectReason::ServerClosed(_), Some(c)) if c.taken_over() => {
            DisconnectReason::SessionTakenOver
        }
        _ => reason,
    };
    // Tell an MQTT 5 client why, then close.
    let farewell = match (&reason, version) {
        (_, MqttVersion::V311) => None,
        (DisconnectReason::PacketTooLarge, _) => Some(codec::disconnect_v5(0x95)),
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
    drop(claim);
    tracing::debug!(client_id, "client disconnected: {reason}");
    let sends_will = reason.sends_will() && reason != DisconnectReason::Shutdown;
    let _ = shared
        .observations
        .send(event(&client_id, ConnectionOutcome::Disconnected(reason)))
        .await;
    if let (true, Some(will)) = (sends_will, connect.will.as_ref()) {
        let will_props = connect.will_properties_v5().unwrap_or_default();
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

struct OpenError {
    reason: String,
    reply: Option<Bytes>,
    writer: Option<ClientWriter>,
}

/// Accepts the transport, then reads and checks the CONNECT.
#[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
async fn open(
    stream: TcpStream,
    transport: Transport,
    config: &BrokerConfig,
) -> Result<Opened, OpenError> {
    let (mut reader, writer) = match transport {
        Transport::Tcp => split_tcp(stream),
        Transport::Ws => {
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(config.max_payload + PACKET_OVERHEAD))
                .max_frame_size(Some(config.max_payload + PACKET_OVERHEAD));
            let path = config.ws_path.clone();
            let ws = tokio_tungstenite::accept_hdr_async_with_config(
                stream,
                move |req: &Request, resp: Response| ws_handshake(&path, req, resp),
                Some(ws_config),
            )
            .await
            .map_err(|e| OpenError {
                reason: format!("WebSocket handshake failed: {e}"),
                reply: None,
                writer: None,
            })?;
            split_ws(ws)
        }
    };
    let mut buf = BytesMut::with_capacity(4096);
    let fail = |reason: String, reply: Option<Bytes>, writer| {
        Err(OpenError {
            reason,
            reply,
            writer: Some(writer),
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

type Handoff = (OwnedReadHalf, OwnedWriteHalf, BytesMut, Bytes, ConnAck);

/// Connects to the router, logs in with the secret on the client's behalf and
/// returns the router's CONNACK (its bytes, to forward unchanged, and parsed).
async fn hand_to_router(
    addr: SocketAddr,
    connect: &Connect,
    client_id: &str,
    secret: &str,
) -> Result<Handoff, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut inner = connect.clone();
    if inner.level == 3 {
        // MQTT 3.1 differs from 3.1.1 only in its name and level here.
        inner.level = 4;
        inner.protocol_name = "MQTT".to_owned();
    }
    inner.client_id = client_id.to_owned();
    inner.keepalive = ROUTER_KEEPALIVE;
    inner.username = Some(INTERNAL_USER.to_owned());
    inner.password = Some(Bytes::copy_from_slice(secret.as_bytes()));
    let mut out = BytesMut::new();
    inner.encode(&mut out);
    writer
        .write_all(&out)
        .await
        .map_err(|e| format!("cannot write CONNECT: {e}"))?;
    let version = if connect.level == 5 {
        MqttVersion::V5
    } else {
        MqttVersion::V311
    };
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
                let connack = ConnAck::parse(&bytes[h.header_len..], version)
                    .map_err(|e| format!("its CONNACK is malformed: {e}"))?;
                return Ok((reader, writer, buf, bytes, connack));
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
}

/// What the connection's supervisor asks the downstream task to do.
enum ToClient {
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
}

impl Upstream {
    /// Pumps until the connection ends. After a clean DISCONNECT it also
    /// returns its half of the router connection, still open: see
    /// [`ROUTER_CLOSE_WAIT`] for why the router must close first.
    async fn run(mut self) -> (DisconnectReason, Option<OwnedWriteHalf>) {
        let reason = self.pump().await;
        let router = (reason == DisconnectReason::Clean).then_some(self.router);
        (reason, router)
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
        let mut at = 0;
        let mut ends = None;
        while at < chunk.len() {
            let Ok(Some(h)) = codec::parse_frame_header(&chunk[at..]) else {
                break;
            };
            let frame_end = at + h.total_len();
            let body = chunk.slice(at + h.header_len..frame_end);
            match h.packet_type {
                packet_type::PUBLISH => match Publish::parse(h.flags, body, self.version) {
                    Ok(publish) if publish.payload.len() > max_payload => {
                        self.refuse_too_large(&h, Some(&publish.topic));
                        ends = Some(DisconnectReason::PacketTooLarge);
                        break;
                    }
                    Ok(publish) => {
                        // A QoS 2 PUBLISH sent again before PUBREL is the same
                        // message: record it once.
                        let first = publish.qos != 2
                            || publish.packet_id.is_none_or(|id| pending_qos2.insert(id));
                        if first {
                            self.observe(publish).await?;
                        }
                    }
                    Err(e) => {
                        tracing::info!(client_id = %self.client_id, "closing the connection: malformed PUBLISH: {e}");
                        ends = Some(DisconnectReason::ProtocolError(format!(
                            "malformed PUBLISH: {e}"
                        )));
                        break;
                    }
                },
                packet_type::PUBREL => {
                    if let Some(id) = chunk.get(at + h.header_len..at + h.header_len + 2) {
                        pending_qos2.remove(&u16::from_be_bytes([id[0], id[1]]));
                    }
                }
                packet_type::DISCONNECT => {
                    // Forward it (the router then sends no will) and stop.
                    at = frame_end;
                    ends = Some(DisconnectReason::Clean);
                    break;
                }
                packet_type::CONNECT => {
                    ends = Some(DisconnectReason::ProtocolError("a second CONNECT".into()));
                    break;
                }
                _ => {}
            }
            at = frame_end;
        }
        // Everything before `at` is forwarded unchanged; a packet that ends
        // the connection is not.
        if at > 0 {
            if let Err(e) = self.router.write_all(&chunk[..at]).await {
                return Err(DisconnectReason::ServerClosed(format!(
                    "the router connection broke: {e}"
                )));
            }
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
    let mut buf = BytesMut::with_capacity(64 * 1024);
    buf.extend_from_slice(&leftover);
    loop {
        // Forward what is complete.
        let mut end = 0;
        let mut drop_at = None;
        while let Ok(Some(h)) = codec::parse_frame_header(&buf[end..]) {
            if end + h.total_len() > buf.len() {
                break;
            }
            if h.packet_type == packet_type::PINGRESP
                && link.injected_pings.load(Ordering::Acquire) > 0
            {
                link.injected_pings.fetch_sub(1, Ordering::AcqRel);
                drop_at = Some((end, h.total_len()));
                break;
            }
            end += h.total_len();
        }
        if end > 0 {
            let chunk = buf.split_to(end).freeze();
            if client.write(chunk).await.is_err() {
                return DisconnectReason::Dropped;
            }
        }
        if let Some((_, len)) = drop_at {
            buf.advance(len);
            continue;
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            read = router.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    client.close().await;
                    return DisconnectReason::ServerClosed("the router closed the connection".into());
                }
                Ok(_) => {}
            },
            command = commands.recv() => {
                if let Some(ToClient::Close(Some(last))) = command {
                    let _ = client.write(last).await;
                }
                client.close().await;
                return DisconnectReason::Shutdown;
            }
        }
    }
}
