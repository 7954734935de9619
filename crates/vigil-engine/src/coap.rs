//! The CoAP source: finds CoAP devices (multicast discovery, configured
//! addresses, an address a technician types), observes their readings,
//! probes the ones that fell silent, and carries a technician's requests.
//! Everything it hears goes to the engine task as
//! [`Observation::Coap`], on the same channel as the broker's messages, so a
//! CoAP device gets the same store, presence and alerts as any other.
//!
//! One task owns what is known of each device; observations run as tasks
//! of their own and report back when they end.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vigil_coap::discovery::{self, Found};
use vigil_coap::interfaces::{multicast_interfaces, Interface};
use vigil_coap::{CoapError, Endpoint, Method, Notice, Request, Response, Timing};
use vigil_core::coap::{content_format_name, device_id, CoapEvent, CoapResource, CoapWhat};
use vigil_core::{now_micros, Micros, Observation};
use vigil_store::CoapDeviceRow;

use crate::error::EngineError;

/// CoAP settings (`[coap]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Open the CoAP client at all (requests, observe, probes).
    pub enabled: bool,
    /// Multicast discovery at start and then every `rediscover_every_s`.
    /// Off unless asked for: a monitor in a clinic should not announce
    /// itself on a network it was not told to search; the Devices screen
    /// and `POST /api/coap/discover` search on demand either way.
    pub discovery: bool,
    /// Seconds between discovery rounds when `discovery` is on (0: at start only).
    pub rediscover_every_s: u64,
    /// How long a round collects answers (servers delay theirs at random).
    pub discovery_window_s: f64,
    /// Interfaces to search (empty: every interface that is up and has multicast).
    pub interfaces: Vec<String>,
    /// Ports to search (devices on another port than 5683 answer there).
    pub ports: Vec<u16>,
    /// Devices to probe and observe at start: `192.0.2.7`, `192.0.2.7:5684`, `[fe80::1%eth0]:5683`.
    pub devices: Vec<String>,
    /// A device not heard from for this long is asked `/.well-known/core`;
    /// when that fails (after every retransmission) it is offline.
    pub probe_every_s: u64,
    /// Which observable resources are observed, by content format: `text`,
    /// `json`, `cbor`, `senml`, and `unlabelled` (no `ct` in the link).
    pub observe: Vec<String>,
    /// RFC 7252's ACK_TIMEOUT in milliseconds (the first wait for an ACK).
    pub ack_timeout_ms: u64,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            enabled: true,
            discovery: false,
            rediscover_every_s: 300,
            discovery_window_s: 6.0,
            interfaces: Vec::new(),
            ports: vec![vigil_coap::PORT],
            devices: Vec::new(),
            probe_every_s: 60,
            observe: ["text", "json", "cbor", "senml", "unlabelled"]
                .map(String::from)
                .to_vec(),
            ack_timeout_ms: 2000,
        }
    }
}

const FORMATS: [(&str, &[u16]); 4] = [
    ("text", &[0]),
    ("json", &[50]),
    ("cbor", &[60]),
    ("senml", &[110, 111, 112, 113]),
];

impl CoapConfig {
    /// Checks what serde cannot; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        for name in &self.observe {
            if name != "unlabelled" && !FORMATS.iter().any(|(n, _)| n == name) {
                return Err(format!(
                    "coap.observe: unknown format '{name}' (known: text, json, cbor, senml, unlabelled)"
                ));
            }
        }
        if !(0.5..=60.0).contains(&self.discovery_window_s) {
            return Err("coap.discovery_window_s must be between 0.5 and 60".into());
        }
        if self.ports.is_empty() || self.ports.contains(&0) {
            return Err("coap.ports must list at least one port, none of them 0".into());
        }
        if !(10..=60_000).contains(&self.ack_timeout_ms) {
            return Err("coap.ack_timeout_ms must be between 10 and 60000".into());
        }
        if !(1..=86_400).contains(&self.probe_every_s) {
            return Err("coap.probe_every_s must be between 1 and 86400".into());
        }
        if self.rediscover_every_s > 7 * 86_400 {
            return Err(
                "coap.rediscover_every_s must be at most 604800 (a week; 0: at start only)".into(),
            );
        }
        for d in &self.devices {
            parse_address(d).map_err(|e| format!("coap.devices: {e}"))?;
        }
        Ok(())
    }

    /// Whether a resource is observed by default.
    fn wants(&self, resource: &CoapResource) -> bool {
        if !resource.obs {
            return false;
        }
        if resource.ct.is_empty() {
            return self.observe.iter().any(|n| n == "unlabelled");
        }
        FORMATS.iter().any(|(name, numbers)| {
            self.observe.iter().any(|n| n == name)
                && resource.ct.iter().any(|c| numbers.contains(c))
        })
    }
}

/// An address as a person writes it: an IP (port 5683), `ip:port`,
/// `[ipv6]:port`, with `%scope` (an interface name or index) for link-local.
pub fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "'{text}' is not an address (write 192.0.2.7, 192.0.2.7:5683 or [fe80::1%eth0]:5683)"
        )
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => vigil_coap::PORT,
            None => return Err(bad()),
        };
        (host, port)
    } else if text.matches(':').count() == 1 {
        let (host, port) = text.split_once(':').ok_or_else(bad)?;
        (host, port.parse().map_err(|_| bad())?)
    } else {
        (text, vigil_coap::PORT)
    };
    let (ip, scope) = match host.split_once('%') {
        Some((ip, scope)) => (ip, Some(scope)),
        None => (host, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    match (ip, scope) {
        (IpAddr::V6(v6), Some(scope)) => {
            let index = match scope.parse::<u32>() {
                Ok(i) => i,
                Err(_) => interface_index(scope)
                    .ok_or_else(|| format!("'{text}': no interface named '{scope}'"))?,
            };
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                v6, port, 0, index,
            )))
        }
        (IpAddr::V4(_), Some(_)) => Err(bad()),
        (ip, None) => Ok(SocketAddr::new(ip, port)),
    }
}

fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// A CoAP device as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CoapDeviceView {
    /// The device's id (`coap/<address>`).
    pub device: String,
    /// Where it answers.
    pub address: String,
    /// How it was found.
    pub found_by: String,
    /// What its `/.well-known/core` lists.
    pub resources: Vec<CoapResource>,
    /// The paths observed now.
    pub observing: Vec<String>,
    /// Paths that could not be observed, and why.
    pub not_observed: Vec<(String, String)>,
    /// Why its last answer could not be read, or why it is unreachable.
    pub error: Option<String>,
    /// Whether its last probe (or notification) got an answer.
    pub reachable: bool,
    /// When it last answered.
    pub last_answer_at: Option<Micros>,
}

/// One discovery round.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct DiscoveryView {
    /// When it started.
    pub at: Micros,
    /// How long it listened, seconds.
    pub window_s: f64,
    /// The interfaces it asked (multicast).
    pub interfaces: Vec<String>,
    /// The addresses it asked one by one (a scan), as given: `192.0.2.0/28 port 5683`.
    pub scanned: Option<String>,
    /// The devices that answered (ids).
    pub found: Vec<String>,
    /// What could not be asked, in words.
    pub errors: Vec<String>,
}

/// The CoAP side as a whole.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CoapView {
    /// Whether the CoAP client runs.
    pub enabled: bool,
    /// Whether discovery runs on a schedule.
    pub discovery: bool,
    /// Seconds between scheduled rounds.
    pub rediscover_every_s: u64,
    /// Interfaces discovery can use now.
    pub interfaces: Vec<String>,
    /// Every device found.
    pub devices: Vec<CoapDeviceView>,
    /// The last discovery round, if any.
    pub last_discovery: Option<DiscoveryView>,
    /// Whether a round is running now.
    pub discovering: bool,
    /// Content-format numbers and their names, for showing and choosing.
    pub content_formats: Vec<(u16, String)>,
    /// What the CoAP sockets refused or repeated since start.
    pub counters: CoapCounters,
}

/// What the CoAP sockets refused or repeated since start (IPv4 and IPv6 together).
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CoapCounters {
    /// Datagrams that were not CoAP messages.
    pub malformed: u64,
    /// Replies to nothing Vigil asked (refused with RST when confirmable).
    pub unknown: u64,
    /// Duplicates, handled once.
    pub duplicates: u64,
    /// Requests sent again for want of an acknowledgement.
    pub retransmissions: u64,
    /// Notifications older than one already taken, dropped.
    pub stale_notifications: u64,
    /// Notifications dropped because Vigil fell behind.
    pub overflow: u64,
}

/// A technician's request to a resource.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(deny_unknown_fields)]
pub struct CoapRequestBody {
    /// The device id (`coap/...`) or an address.
    pub device: String,
    /// GET, PUT, POST or DELETE.
    #[cfg_attr(feature = "ts", ts(type = "\"GET\" | \"PUT\" | \"POST\" | \"DELETE\""))]
    pub method: Method,
    /// The resource's path.
    pub path: String,
    /// Query parameters, each `name=value`.
    #[serde(default)]
    pub query: Vec<String>,
    /// The payload as text...
    pub payload: Option<String>,
    /// ...or as base64.
    pub payload_base64: Option<String>,
    /// The payload's content format number.
    pub content_format: Option<u16>,
}

/// A device's answer to a request.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CoapResponseView {
    /// `2.05`.
    pub code: String,
    /// Whether it is a 2.xx.
    pub success: bool,
    /// Its content format number.
    pub content_format: Option<u16>,
    /// Its name, when known.
    pub content_format_name: Option<String>,
    /// The payload as text, when it is UTF-8.
    pub payload: Option<String>,
    /// The payload as base64 (always).
    pub payload_base64: String,
    /// Its size in bytes (block-wise transfers joined).
    pub size: usize,
    /// From request to whole response, milliseconds.
    pub elapsed_ms: f64,
}

enum Command {
    Discover {
        reply: oneshot::Sender<DiscoveryView>,
    },
    Scan {
        addresses: Vec<SocketAddr>,
        label: String,
        reply: oneshot::Sender<DiscoveryView>,
    },
    Add {
        address: SocketAddr,
        reply: oneshot::Sender<Result<CoapDeviceView, String>>,
    },
    View {
        reply: oneshot::Sender<CoapView>,
    },
}

enum Internal {
    Probed {
        address: SocketAddr,
        found_by: String,
        result: Result<Response, CoapError>,
        reply: Option<oneshot::Sender<Result<CoapDeviceView, String>>>,
    },
    Discovered {
        view: DiscoveryView,
        found: Vec<Found>,
    },
    Scanned {
        view: DiscoveryView,
        found: Vec<Response>,
        reply: oneshot::Sender<DiscoveryView>,
    },
    ObservationEnded {
        address: SocketAddr,
        path: String,
        reason: String,
        /// The device answered without Observe: it will not become observable by retrying.
        final_: bool,
    },
}

/// The CoAP sockets: IPv4, and IPv6 where the machine has it.
#[derive(Clone)]
struct Endpoints {
    v4: Endpoint,
    v6: Option<Endpoint>,
}

impl Endpoints {
    /// The one that reaches `address`.
    fn for_address(&self, address: SocketAddr) -> Option<&Endpoint> {
        match address {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }
}

/// The running CoAP side.
pub(crate) struct Coap {
    endpoints: Endpoints,
    commands: mpsc::Sender<Command>,
    observations: mpsc::Sender<Observation>,
    task: JoinHandle<()>,
}

impl Coap {
    /// Opens the endpoints (IPv4 and, where the machine has it, IPv6) and
    /// starts probing what the store and the configuration name.
    pub async fn start(
        config: CoapConfig,
        observations: mpsc::Sender<Observation>,
        remembered: Vec<CoapDeviceRow>,
    ) -> Result<Coap, EngineError> {
        let timing = Timing {
            ack_timeout: Duration::from_millis(config.ack_timeout_ms),
            ..Timing::default()
        };
        let v4 = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0)), timing)
            .await
            .map_err(|e| EngineError::Config(format!("cannot open the CoAP socket (IPv4): {e}")))?;
        let v6 = match Endpoint::bind(SocketAddr::from(([0u16; 8], 0)), timing).await {
            Ok(ep) => Some(ep),
            Err(e) => {
                tracing::warn!(
                    "no IPv6 CoAP socket ({e}): CoAP devices are reached over IPv4 only"
                );
                None
            }
        };
        let (commands, commanded) = mpsc::channel(64);
        let (internal_tx, internal) = mpsc::channel(1024);
        let endpoints = Endpoints { v4, v6 };
        let mut service = Service {
            config: config.clone(),
            endpoints: endpoints.clone(),
            observations: observations.clone(),
            internal: internal_tx,
            known: BTreeMap::new(),
            last_round: None,
            round_running: false,
            waiting_for_round: Vec::new(),
            next_round: None,
        };
        for row in remembered {
            match parse_address(&row.address) {
                Ok(address) => {
                    let resources = serde_json::from_str(&row.resources_json).unwrap_or_default();
                    let known = service.known_mut(address, &row.found_by);
                    known.resources = resources;
                    known.last_answer = Some(row.answered_at);
                }
                Err(e) => tracing::warn!("a CoAP device in the store has a bad address: {e}"),
            }
        }
        for text in &config.devices {
            if let Ok(address) = parse_address(text) {
                service.known_mut(address, "configured");
            }
        }
        if config.discovery {
            service.next_round = Some(tokio::time::Instant::now());
        }
        let task = tokio::spawn(service.run(commanded, internal));
        Ok(Coap {
            endpoints,
            commands,
            observations,
            task,
        })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| EngineError::Stopping)?;
        answer.await.map_err(|_| EngineError::Stopping)
    }

    /// Everything known now.
    pub async fn view(&self) -> Result<CoapView, EngineError> {
        self.ask(|reply| Command::View { reply }).await
    }

    /// Runs a discovery round now (or joins the one running) and waits for it.
    pub async fn discover(&self) -> Result<DiscoveryView, EngineError> {
        self.ask(|reply| Command::Discover { reply }).await
    }

    /// Asks every address of a range once; those that answer are added and observed.
    pub async fn scan(&self, range: &str, port: Option<u16>) -> Result<DiscoveryView, EngineError> {
        let port = port.unwrap_or(vigil_coap::PORT);
        let addresses = parse_range(range, port).map_err(EngineError::BadRequest)?;
        let label = format!("{} port {port}", range.trim());
        self.ask(|reply| Command::Scan {
            addresses,
            label,
            reply,
        })
        .await
    }

    /// Probes an address; a device that answers is added and observed.
    pub async fn add(&self, address: &str) -> Result<CoapDeviceView, EngineError> {
        let address = parse_address(address).map_err(EngineError::BadRequest)?;
        self.ask(|reply| Command::Add { address, reply })
            .await?
            .map_err(EngineError::Unreachable)
    }

    /// Sends a request and waits for the whole response. A successful GET
    /// is also a reading of the resource, stored like a notification.
    pub async fn request(
        &self,
        body: CoapRequestBody,
        payload: Bytes,
    ) -> Result<CoapResponseView, EngineError> {
        let address = match body.device.strip_prefix(vigil_core::coap::PREFIX) {
            Some(rest) => parse_address(rest),
            None => parse_address(&body.device),
        }
        .map_err(EngineError::BadRequest)?;
        if !body.path.starts_with('/') {
            return Err(EngineError::BadRequest(format!(
                "the path must start with '/', not '{}'",
                body.path
            )));
        }
        let endpoint = self.endpoints.for_address(address).ok_or_else(|| {
            EngineError::BadRequest(format!("no CoAP socket for {address}'s address family"))
        })?;
        let request = Request {
            method: body.method,
            path: body.path.clone(),
            query: body.query,
            payload: payload.to_vec(),
            content_format: body.content_format,
        };
        let started = std::time::Instant::now();
        let response = endpoint
            .request(address, request)
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if body.method == Method::Get && response.is_success() {
            let _ = self
                .observations
                .send(reading(address, &body.path, &response))
                .await;
        }
        Ok(response_view(&response, elapsed_ms))
    }

    /// Stops probing, discovery and every observation (each is deregistered).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

fn content_formats() -> Vec<(u16, String)> {
    vigil_core::coap::CONTENT_FORMATS
        .iter()
        .map(|(n, name)| (*n, (*name).to_owned()))
        .collect()
}

fn response_view(r: &Response, elapsed_ms: f64) -> CoapResponseView {
    use base64::Engine as _;
    CoapResponseView {
        code: r.code_text(),
        success: r.is_success(),
        content_format: r.content_format,
        content_format_name: r
            .content_format
            .and_then(content_format_name)
            .map(str::to_owned),
        payload: String::from_utf8(r.payload.clone()).ok(),
        payload_base64: base64::engine::general_purpose::STANDARD.encode(&r.payload),
        size: r.payload.len(),
        elapsed_ms,
    }
}

fn reading(address: SocketAddr, path: &str, r: &Response) -> Observation {
    Observation::Coap(CoapEvent {
        at: now_micros(),
        address,
        what: CoapWhat::Reading {
            path: path.to_owned(),
            payload: Bytes::from(r.payload.clone()),
            content_format: r.content_format,
            observe: r.observe,
        },
    })
}

struct Known {
    found_by: String,
    resources: Vec<CoapResource>,
    observing: BTreeMap<String, JoinHandle<()>>,
    not_observed: BTreeMap<String, String>,
    error: Option<String>,
    probing: bool,
    /// When a failed probe ended (µs; 0: none since the last answer): the
    /// next waits a whole interval, not the next tick.
    failed_at: i64,
    /// Probe then, whatever the time since the last answer (µs): at once for
    /// a device just known, later to register observations that ended.
    retry_at: Option<i64>,
    /// The last answer (a probe or a notification), µs; shared with the observations.
    heard: Arc<AtomicI64>,
    last_answer: Option<Micros>,
}

impl Known {
    /// Whether it answered (or notified) since the last failed probe, this run.
    fn reachable(&self) -> bool {
        self.heard.load(Ordering::Relaxed) > self.failed_at
    }
}

struct Service {
    config: CoapConfig,
    endpoints: Endpoints,
    observations: mpsc::Sender<Observation>,
    internal: mpsc::Sender<Internal>,
    known: BTreeMap<SocketAddr, Known>,
    last_round: Option<DiscoveryView>,
    round_running: bool,
    /// Who waits for the round running now.
    waiting_for_round: Vec<oneshot::Sender<DiscoveryView>>,
    next_round: Option<tokio::time::Instant>,
}

impl Drop for Service {
    fn drop(&mut self) {
        for known in self.known.values() {
            for task in known.observing.values() {
                task.abort();
            }
        }
    }
}

impl Service {
    fn known_mut(&mut self, address: SocketAddr, found_by: &str) -> &mut Known {
        self.known.entry(address).or_insert_with(|| Known {
            found_by: found_by.to_owned(),
            resources: Vec::new(),
            observing: BTreeMap::new(),
            not_observed: BTreeMap::new(),
            error: None,
            probing: false,
            failed_at: 0,
            retry_at: Some(0),
            heard: Arc::new(AtomicI64::new(0)),
            last_answer: None,
        })
    }

    fn endpoint(&self, address: SocketAddr) -> Option<Endpoint> {
        self.endpoints.for_address(address).cloned()
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.command(c),
                    None => return,
                },
                Some(event) = internal.recv() => self.internal(event).await,
                _ = tick.tick() => self.tick(),
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::View { reply } => {
                let _ = reply.send(self.view());
            }
            Command::Discover { reply } => {
                self.waiting_for_round.push(reply);
                if !self.round_running {
                    self.start_round();
                }
            }
            Command::Add { address, reply } => {
                self.probe(address, "address given".into(), Some(reply))
            }
            Command::Scan {
                addresses,
                label,
                reply,
            } => self.scan(addresses, label, reply),
        }
    }

    fn view(&self) -> CoapView {
        CoapView {
            enabled: true,
            discovery: self.config.discovery,
            rediscover_every_s: self.config.rediscover_every_s,
            interfaces: multicast_interfaces()
                .map(|all| all.into_iter().map(|i| i.name).collect())
                .unwrap_or_default(),
            devices: self.known.keys().map(|a| self.device_view(*a)).collect(),
            last_discovery: self.last_round.clone(),
            discovering: self.round_running,
            content_formats: content_formats(),
            counters: self.counters(),
        }
    }

    fn counters(&self) -> CoapCounters {
        let mut sum = CoapCounters::default();
        for endpoint in std::iter::once(&self.endpoints.v4).chain(&self.endpoints.v6) {
            let c = endpoint.counters();
            let read = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            sum.malformed += read(&c.malformed);
            sum.unknown += read(&c.unknown);
            sum.duplicates += read(&c.duplicates);
            sum.retransmissions += read(&c.retransmissions);
            sum.stale_notifications += read(&c.stale_notifications);
            sum.overflow += read(&c.overflow);
        }
        sum
    }

    fn device_view(&self, address: SocketAddr) -> CoapDeviceView {
        let k = &self.known[&address];
        CoapDeviceView {
            device: device_id(address),
            address: address.to_string(),
            found_by: k.found_by.clone(),
            resources: k.resources.clone(),
            observing: k.observing.keys().cloned().collect(),
            not_observed: k
                .not_observed
                .iter()
                .map(|(p, why)| (p.clone(), why.clone()))
                .collect(),
            error: k.error.clone(),
            reachable: k.reachable(),
            last_answer_at: match k.heard.load(Ordering::Relaxed) {
                0 => k.last_answer,
                micros => Some(micros),
            },
        }
    }

    fn tick(&mut self) {
        let now = now_micros();
        let every = self.config.probe_every_s as i64 * 1_000_000;
        let due: Vec<SocketAddr> = self
            .known
            .iter()
            .filter(|(_, k)| {
                !k.probing
                    && (k.retry_at.is_some_and(|at| now >= at)
                        || (now - k.heard.load(Ordering::Relaxed) >= every
                            && now - k.failed_at >= every))
            })
            .map(|(a, _)| *a)
            .collect();
        for address in due {
            let found_by = self.known[&address].found_by.clone();
            self.probe(address, found_by, None);
        }
        if let Some(at) = self.next_round {
            if tokio::time::Instant::now() >= at && !self.round_running {
                self.next_round = None;
                self.start_round();
            }
        }
    }

    fn probe(
        &mut self,
        address: SocketAddr,
        found_by: String,
        reply: Option<oneshot::Sender<Result<CoapDeviceView, String>>>,
    ) {
        let Some(endpoint) = self.endpoint(address) else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(format!(
                    "no CoAP socket for {address}'s address family"
                )));
            }
            return;
        };
        if let Some(k) = self.known.get_mut(&address) {
            if k.probing && reply.is_none() {
                return;
            }
            k.probing = true;
            k.retry_at = None;
        }
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = endpoint
                .request(address, Request::get("/.well-known/core"))
                .await;
            let _ = internal
                .send(Internal::Probed {
                    address,
                    found_by,
                    result,
                    reply,
                })
                .await;
        });
    }

    fn start_round(&mut self) {
        let interfaces: Vec<Interface> = match multicast_interfaces() {
            Ok(all) if self.config.interfaces.is_empty() => all,
            Ok(all) => all
                .into_iter()
                .filter(|i| self.config.interfaces.contains(&i.name))
                .collect(),
            Err(e) => {
                tracing::warn!("cannot list the network interfaces: {e}");
                Vec::new()
            }
        };
        let mut errors: Vec<String> = self
            .config
            .interfaces
            .iter()
            .filter(|name| !interfaces.iter().any(|i| &i.name == *name))
            .map(|name| format!("{name}: no such interface up with multicast"))
            .collect();
        if interfaces.is_empty() && errors.is_empty() {
            errors.push("no interface is up with multicast: nothing to search".into());
        }
        let endpoints = self.endpoints.clone();
        let ports = self.config.ports.clone();
        let window = Duration::from_secs_f64(self.config.discovery_window_s);
        let internal = self.internal.clone();
        self.round_running = true;
        let at = now_micros();
        tokio::spawn(async move {
            let round = discovery::discover(
                Some(&endpoints.v4),
                endpoints.v6.as_ref(),
                &interfaces,
                &ports,
                window,
            )
            .await;
            errors.extend(round.errors);
            let view = DiscoveryView {
                at,
                window_s: window.as_secs_f64(),
                interfaces: interfaces.iter().map(|i| i.name.clone()).collect(),
                scanned: None,
                found: round
                    .found
                    .iter()
                    .map(|f| device_id(f.response.peer))
                    .collect(),
                errors,
            };
            let _ = internal
                .send(Internal::Discovered {
                    view,
                    found: round.found,
                })
                .await;
        });
    }

    async fn internal(&mut self, event: Internal) {
        match event {
            Internal::Probed {
                address,
                found_by,
                result,
                reply,
            } => {
                if let Some(k) = self.known.get_mut(&address) {
                    k.probing = false;
                }
                match result {
                    Ok(response)
                        if !response.is_success() && !self.known.contains_key(&address) =>
                    {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(format!(
                                "{address} answered /.well-known/core with {}",
                                response.code_text()
                            )));
                        }
                    }
                    Ok(response) => {
                        self.answered(address, &found_by, &response).await;
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(self.device_view(address)));
                        }
                    }
                    Err(e) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(e.to_string()));
                        }
                        if let Some(k) = self.known.get_mut(&address) {
                            k.error = Some(e.to_string());
                            // Probe again after the usual wait, not at once.
                            k.failed_at = now_micros();
                            // A device that never answered is not one yet.
                            if k.last_answer.is_some() {
                                self.send(
                                    address,
                                    CoapWhat::Unreachable {
                                        reason: e.to_string(),
                                    },
                                )
                                .await;
                            }
                        }
                    }
                }
            }
            Internal::Scanned { view, found, reply } => {
                let how = format!("scan of {}", view.scanned.as_deref().unwrap_or(""));
                for response in found {
                    self.found(how.clone(), response).await;
                }
                let _ = reply.send(view);
            }
            Internal::Discovered { view, found } => {
                self.round_running = false;
                for f in found {
                    self.found(format!("multicast on {}", f.interface), f.response)
                        .await;
                }
                tracing::info!(
                    found = view.found.len(),
                    interfaces = ?view.interfaces,
                    "CoAP discovery round done"
                );
                for reply in self.waiting_for_round.drain(..) {
                    let _ = reply.send(view.clone());
                }
                self.last_round = Some(view);
                if self.config.discovery && self.config.rediscover_every_s > 0 {
                    self.next_round = Some(
                        tokio::time::Instant::now()
                            + Duration::from_secs(self.config.rediscover_every_s),
                    );
                }
            }
            Internal::ObservationEnded {
                address,
                path,
                reason,
                final_,
            } => {
                if let Some(k) = self.known.get_mut(&address) {
                    // Only the task that ended: a newer one may hold the path already.
                    if k.observing
                        .get(&path)
                        .is_some_and(|task| task.is_finished())
                    {
                        k.observing.remove(&path);
                    }
                    k.not_observed.insert(path, reason);
                    // Not final: the device may be gone, or dropped its
                    // observers. A probe decides, an interval later (a device
                    // that ends every registration at once is not asked
                    // again and again), and registers again when it answers.
                    if !final_ {
                        let every = self.config.probe_every_s.min(60) as i64 * 1_000_000;
                        k.retry_at.get_or_insert(now_micros() + every);
                    }
                }
            }
        }
    }

    /// A device answered a discovery round or a scan.
    async fn found(&mut self, how: String, response: Response) {
        let address = response.peer;
        if response.partial {
            // The list needs more blocks: ask the device itself.
            self.known_mut(address, &how);
            self.probe(address, how, None);
        } else {
            self.answered(address, &how, &response).await;
        }
    }

    /// Asks each address once (non-confirmable, no retransmission: most
    /// hold no device) and takes what answers within a few seconds.
    fn scan(
        &mut self,
        addresses: Vec<SocketAddr>,
        label: String,
        reply: oneshot::Sender<DiscoveryView>,
    ) {
        let window = Duration::from_secs_f64(self.config.discovery_window_s.min(SCAN_WINDOW_S));
        let endpoints: Vec<(SocketAddr, Option<Endpoint>)> = addresses
            .into_iter()
            .map(|a| (a, self.endpoint(a)))
            .collect();
        let internal = self.internal.clone();
        let at = now_micros();
        tokio::spawn(async move {
            let asks = endpoints.into_iter().map(|(address, endpoint)| async move {
                match endpoint {
                    Some(ep) => ep
                        .gather(address, None, Request::get("/.well-known/core"), window)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no CoAP socket for {address}'s address family")),
                }
            });
            let mut found = Vec::new();
            let mut errors = Vec::new();
            for result in futures_util::future::join_all(asks).await {
                match result {
                    Ok(responses) => found.extend(responses.into_iter().take(1)),
                    Err(e) => errors.push(e),
                }
            }
            errors.truncate(20);
            let view = DiscoveryView {
                at,
                window_s: window.as_secs_f64(),
                interfaces: Vec::new(),
                scanned: Some(label),
                found: found.iter().map(|r| device_id(r.peer)).collect(),
                errors,
            };
            let _ = internal
                .send(Internal::Scanned { view, found, reply })
                .await;
        });
    }

    /// A device answered `/.well-known/core`.
    async fn answered(&mut self, address: SocketAddr, found_by: &str, response: &Response) {
        let resources = if !response.is_success() {
            Err(format!(
                "/.well-known/core answered {}",
                response.code_text()
            ))
        } else {
            vigil_coap::link::resources(&response.payload).map_err(|e| e.to_string())
        };
        let now = now_micros();
        let config = self.config.clone();
        let endpoint = self.endpoint(address);
        let observations = self.observations.clone();
        let internal = self.internal.clone();
        let known = self.known_mut(address, found_by);
        let alive = known.observing.values().all(|task| task.is_finished());
        if !known.reachable() {
            // Back after silence (or first heard this run): a device that
            // restarted has forgotten its observers, so register again.
            for (_, task) in std::mem::take(&mut known.observing) {
                task.abort();
            }
        }
        known.heard.store(now, Ordering::Relaxed);
        known.failed_at = 0;
        known.last_answer = Some(now);
        match &resources {
            Ok(list) => {
                known.resources = list.clone();
                known.error = None;
                // Forget what is no longer listed.
                let listed: HashSet<&str> = list.iter().map(|r| r.path.as_str()).collect();
                known.observing.retain(|path, task| {
                    let keep = listed.contains(path.as_str()) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                known
                    .not_observed
                    .retain(|path, _| listed.contains(path.as_str()));
            }
            Err(e) => known.error = Some(e.clone()),
        }
        // Observe what the rule picks and is not observed yet (a resource
        // that answered without Observe is not asked again).
        if let Some(endpoint) = endpoint {
            let wanted: Vec<String> = known
                .resources
                .iter()
                .filter(|r| config.wants(r))
                .map(|r| r.path.clone())
                .filter(|p| !known.observing.contains_key(p))
                .filter(|p| {
                    known
                        .not_observed
                        .get(p)
                        .is_none_or(|why| !why.starts_with(NOT_OBSERVABLE))
                })
                .collect();
            for path in wanted {
                known.not_observed.remove(&path);
                let task = tokio::spawn(observe(
                    endpoint.clone(),
                    address,
                    path.clone(),
                    observations.clone(),
                    internal.clone(),
                    known.heard.clone(),
                ));
                known.observing.insert(path, task);
            }
        }
        let how = known.found_by.clone();
        let answered = CoapWhat::Answered {
            how,
            resources,
            alive,
        };
        self.send(address, answered).await;
    }

    async fn send(&self, address: SocketAddr, what: CoapWhat) {
        let _ = self
            .observations
            .send(Observation::Coap(CoapEvent {
                at: now_micros(),
                address,
                what,
            }))
            .await;
    }
}

const NOT_OBSERVABLE: &str = "not observable";
/// How long a scan waits for answers at most (unicast answers need no
/// random delay, unlike multicast ones).
const SCAN_WINDOW_S: f64 = 3.0;
/// The most addresses one scan asks (a /22).
const MAX_SCAN: usize = 1024;

/// The addresses of a range as a person writes it: one address,
/// `192.0.2.10-192.0.2.40`, `192.0.2.10-40`, or `192.0.2.0/26` (network and
/// broadcast addresses left out), each with `port`.
pub fn parse_range(text: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    use std::net::Ipv4Addr;
    let text = text.trim();
    let bad = || {
        format!("'{text}' is not an address or a range (write 192.0.2.7, 192.0.2.10-40 or 192.0.2.0/26)")
    };
    let (first, last) = if let Some((base, bits)) = text.split_once('/') {
        let base: Ipv4Addr = base.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        if bits > 32 {
            return Err(bad());
        }
        let size = 1u64 << (32 - bits);
        if size > MAX_SCAN as u64 {
            return Err(format!(
                "'{text}' has {size} addresses; a scan asks at most {MAX_SCAN} (a /22)"
            ));
        }
        let start = u32::from(base) & !((size - 1) as u32);
        let end = start + (size - 1) as u32;
        if size >= 4 {
            (start + 1, end - 1)
        } else {
            (start, end)
        }
    } else if let Some((a, b)) = text.split_once('-') {
        let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let b: Ipv4Addr = match b.trim().parse::<u8>() {
            Ok(octet) => Ipv4Addr::from(u32::from(a) & !0xff | u32::from(octet)),
            Err(_) => b.trim().parse().map_err(|_| bad())?,
        };
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a {
            return Err(format!("'{text}': the range ends before it starts"));
        }
        if u64::from(b - a) + 1 > MAX_SCAN as u64 {
            return Err(format!(
                "'{text}' has {} addresses; a scan asks at most {MAX_SCAN}",
                u64::from(b - a) + 1
            ));
        }
        (a, b)
    } else {
        let one = parse_address(text)?;
        return Ok(vec![SocketAddr::new(one.ip(), port)]);
    };
    Ok((first..=last)
        .map(|ip| SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        .collect())
}

/// Observes one resource until it ends, handing each notification over as a reading.
async fn observe(
    endpoint: Endpoint,
    address: SocketAddr,
    path: String,
    observations: mpsc::Sender<Observation>,
    internal: mpsc::Sender<Internal>,
    heard: Arc<AtomicI64>,
) {
    let (reason, final_) = match endpoint.observe(address, &path).await {
        // Silence may pass; a refusal (RST) or a request that cannot be
        // sent will not, until the device lists the resource anew.
        Err(e @ CoapError::Timeout { .. }) => (e.to_string(), false),
        Err(e) => (format!("{NOT_OBSERVABLE}: {e}"), true),
        Ok(mut observing) => {
            heard.store(now_micros(), Ordering::Relaxed);
            if observing.first.is_success() {
                let whole = match observing.first.partial {
                    true => endpoint.request(address, Request::get(&path)).await.ok(),
                    false => None,
                };
                let first = whole.as_ref().unwrap_or(&observing.first);
                let _ = observations.send(reading(address, &path, first)).await;
            }
            if observing.first.observe.is_none() {
                (
                    format!(
                        "{NOT_OBSERVABLE}: answered {} without Observe",
                        observing.first.code_text()
                    ),
                    true,
                )
            } else {
                loop {
                    match observing.notices.recv().await {
                        Some(Notice::Notification(r)) => {
                            heard.store(now_micros(), Ordering::Relaxed);
                            // Only a first block: the rest comes with a GET
                            // (RFC 7959 §2.6), which may be newer still.
                            let r = match r.partial {
                                true => {
                                    match endpoint.request(address, Request::get(&path)).await {
                                        Ok(whole) if whole.is_success() => whole,
                                        _ => continue,
                                    }
                                }
                                false => r,
                            };
                            if observations
                                .send(reading(address, &path, &r))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Some(Notice::Ended(why)) => break (why, false),
                        None => break ("the CoAP endpoint stopped".into(), false),
                    }
                }
            }
        }
    };
    let _ = internal
        .send(Internal::ObservationEnded {
            address,
            path,
            reason,
            final_,
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_people_write_them() {
        assert_eq!(
            parse_address("192.0.2.7").unwrap(),
            "192.0.2.7:5683".parse().unwrap()
        );
        assert_eq!(
            parse_address(" 192.0.2.7:5684 ").unwrap(),
            "192.0.2.7:5684".parse().unwrap()
        );
        assert_eq!(parse_address("::1").unwrap(), "[::1]:5683".parse().unwrap());
        assert_eq!(
            parse_address("[::1]:9").unwrap(),
            "[::1]:9".parse().unwrap()
        );
        let scoped = parse_address("[fe80::1%lo]:5683").unwrap();
        assert!(matches!(scoped, SocketAddr::V6(a) if a.scope_id() > 0));
        assert_eq!(
            parse_address("[fe80::1%7]").unwrap().to_string(),
            "[fe80::1%7]:5683"
        );
        for bad in [
            "",
            "host.example",
            "1.2.3.4:x",
            "[::1",
            "1.2.3.4%eth0",
            "[fe80::1%nosuchif0]:1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        assert!(parse_address("[fe80::1%nosuchif0]:1")
            .unwrap_err()
            .contains("no interface named 'nosuchif0'"));
    }

    #[test]
    fn ranges_are_read_as_people_write_them() {
        let ips = |text: &str| -> Vec<String> {
            parse_range(text, 5683)
                .unwrap()
                .iter()
                .map(|a| a.ip().to_string())
                .collect()
        };
        assert_eq!(ips("192.0.2.7"), ["192.0.2.7"]);
        assert_eq!(
            ips("192.0.2.10-12"),
            ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
        );
        assert_eq!(ips("192.0.2.254-192.0.3.1").len(), 4);
        assert_eq!(ips("192.0.2.9/30"), ["192.0.2.9", "192.0.2.10"]);
        assert_eq!(ips("192.0.2.0/24").len(), 254);
        assert_eq!(ips("192.0.2.5/32"), ["192.0.2.5"]);
        assert_eq!(parse_range("10.0.0.0/22", 9).unwrap().len(), 1022);
        assert!(parse_range("10.0.0.0/21", 9)
            .unwrap_err()
            .contains("at most 1024"));
        assert!(parse_range("192.0.2.9-3", 9)
            .unwrap_err()
            .contains("ends before it starts"));
        for bad in ["", "192.0.2.0/33", "x-y", "192.0.2.1-300"] {
            assert!(parse_range(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_rule_observes_readings_not_documents() {
        let config = CoapConfig::default();
        let r = |ct: &[u16], obs: bool| CoapResource {
            path: "/x".into(),
            rt: None,
            interface: None,
            ct: ct.to_vec(),
            title: None,
            obs,
            sz: None,
        };
        assert!(config.wants(&r(&[0], true)));
        assert!(config.wants(&r(&[110], true)));
        assert!(config.wants(&r(&[], true)));
        assert!(config.wants(&r(&[42, 60], true)));
        assert!(!config.wants(&r(&[0], false)));
        assert!(!config.wants(&r(&[40], true)));
        assert!(!config.wants(&r(&[42], true)));
        let text_only = CoapConfig {
            observe: vec!["text".into()],
            ..CoapConfig::default()
        };
        assert!(!text_only.wants(&r(&[], true)));
        assert!(CoapConfig {
            observe: vec!["xml".into()],
            ..CoapConfig::default()
        }
        .validate()
        .unwrap_err()
        .contains("unknown format 'xml'"));
    }
}
