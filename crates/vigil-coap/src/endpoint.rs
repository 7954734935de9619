//! One CoAP endpoint: a UDP socket and the one task that owns it.
//!
//! coap-lite encodes and decodes messages; everything about exchanges is
//! here (RFC 7252 §4): confirmable requests are retransmitted with
//! exponential back-off until acknowledged, a separate response is
//! acknowledged, duplicates (same peer and message id) are answered again
//! but handled once, a response is matched by token and by the peer it was
//! asked of (any peer for a multicast request), and a message for a token
//! never sent is refused with RST, which also ends an observation the
//! server kept after Vigil forgot it (RFC 7641 §3.6). Large representations
//! are fetched block by block (RFC 7959 Block2). Observations follow RFC
//! 7641: notifications are ordered by their Observe number and stale ones
//! dropped, the registration is renewed when Max-Age runs out without a
//! notification, and dropping the handle deregisters.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet};
use rand::Rng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::message::{empty, Block, Request, Response};
use crate::observe::is_newer;

/// A joined block-wise body larger than this is refused.
pub const MAX_BODY: usize = 1 << 20;
/// How long a received message id is remembered for deduplication
/// (EXCHANGE_LIFETIME, RFC 7252 §4.8.2).
const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// At most this many remembered message ids (the oldest go first).
const MAX_SEEN: usize = 50_000;
/// A registration is renewed this long after Max-Age ran out without a
/// notification (the server's clock and the network get some slack).
const RENEW_GRACE: Duration = Duration::from_secs(5);
/// Notifications waiting for the consumer, per observation.
const NOTICE_QUEUE: usize = 1024;
/// The socket's receive buffer asked for: bursts of notifications (hundreds
/// of resources notifying on the same tick) overflow the default 208 KiB and
/// the kernel drops them. The kernel caps it at `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 4 << 20;

/// Transmission parameters (RFC 7252 §4.8).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// ACK_TIMEOUT: the first wait for an acknowledgement.
    pub ack_timeout: Duration,
    /// ACK_RANDOM_FACTOR: the first wait is random in `[t, t × factor]`.
    pub ack_random_factor: f64,
    /// MAX_RETRANSMIT: resends after the first transmission.
    pub max_retransmit: u32,
    /// How long a response may take after an empty ACK (a separate
    /// response) or after a non-confirmable request.
    pub response_wait: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            ack_timeout: Duration::from_secs(2),
            ack_random_factor: 1.5,
            max_retransmit: 4,
            response_wait: Duration::from_secs(30),
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoapError {
    /// Nothing came back.
    #[error("no answer from {peer} after {tries} transmission(s) over {seconds} s")]
    Timeout {
        /// Who was asked.
        peer: SocketAddr,
        /// Transmissions made.
        tries: u32,
        /// How long Vigil waited in all.
        seconds: u64,
    },
    /// The peer answered with RST.
    #[error("{peer} refused the request with a reset (RST)")]
    Reset {
        /// Who refused.
        peer: SocketAddr,
    },
    /// The representation is too large.
    #[error("the representation from {peer} is larger than {limit} bytes")]
    TooLarge {
        /// Who sent it.
        peer: SocketAddr,
        /// The limit.
        limit: usize,
    },
    /// A block-wise transfer went wrong.
    #[error("{reason}")]
    BadBlock {
        /// Who sent it.
        peer: SocketAddr,
        /// What was wrong, in words.
        reason: String,
    },
    /// The request could not be sent.
    #[error("could not send to {peer}: {reason}")]
    Send {
        /// To whom.
        peer: SocketAddr,
        /// The operating system's or the encoder's words.
        reason: String,
    },
    /// The endpoint was stopped.
    #[error("the CoAP endpoint has stopped")]
    Stopped,
}

/// What an observation hears after its registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A notification, newer than every one before it.
    Notification(Response),
    /// The observation ended: the server said so (a response without
    /// Observe, an error code, RST), or renewing it failed.
    Ended(String),
}

/// Counters of what the endpoint refused or repeated.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams that were not CoAP messages.
    pub malformed: AtomicU64,
    /// Messages for a token or message id never sent (answered with RST when confirmable).
    pub unknown: AtomicU64,
    /// Duplicates (same peer and message id) handled once.
    pub duplicates: AtomicU64,
    /// Retransmissions of confirmable requests.
    pub retransmissions: AtomicU64,
    /// Notifications dropped as older than one already taken.
    pub stale_notifications: AtomicU64,
    /// Notifications dropped because their consumer fell behind.
    pub overflow: AtomicU64,
}

/// A running endpoint. Cloning shares it; it stops when the last clone
/// and the last observation handle are dropped.
#[derive(Clone)]
pub struct Endpoint {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
    counters: Arc<Counters>,
}

/// A registered observation. Dropping it deregisters.
pub struct Observing {
    /// The registration's response (a notification when `observe` is set;
    /// without it, the resource is not observable and `notices` ends at once).
    pub first: Response,
    /// Later notifications, then at most one [`Notice::Ended`].
    pub notices: mpsc::Receiver<Notice>,
    token: Vec<u8>,
    commands: mpsc::Sender<Command>,
}

impl Drop for Observing {
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Cancel {
            token: std::mem::take(&mut self.token),
        });
    }
}

/// Where an observation's registration is answered: its token and first response.
type Registered = oneshot::Sender<Result<(Vec<u8>, Response), CoapError>>;

enum Command {
    Request {
        peer: SocketAddr,
        request: Request,
        reply: oneshot::Sender<Result<Response, CoapError>>,
    },
    Observe {
        peer: SocketAddr,
        request: Request,
        notices: mpsc::Sender<Notice>,
        reply: Registered,
    },
    Gather {
        group: SocketAddr,
        via: Option<Ipv4Addr>,
        request: Request,
        window: Duration,
        replies: mpsc::Sender<Response>,
        sent: oneshot::Sender<Result<(), CoapError>>,
    },
    Cancel {
        token: Vec<u8>,
    },
}

impl Endpoint {
    /// Binds `addr` (port 0: any) and starts the endpoint's task. An IPv6
    /// address binds IPv6 only.
    pub async fn bind(addr: SocketAddr, timing: Timing) -> std::io::Result<Endpoint> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        if let Err(e) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::debug!("CoAP socket: receive buffer left as it is: {e}");
        }
        socket.bind(&addr.into())?;
        let socket = UdpSocket::from_std(socket.into())?;
        let local = socket.local_addr()?;
        let (commands, receiver) = mpsc::channel(1024);
        let counters = Arc::new(Counters::default());
        let task = Task {
            socket,
            timing,
            next_mid: rand::rng().random(),
            exchanges: HashMap::new(),
            mids: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
            next_wake: None,
            counters: counters.clone(),
        };
        tokio::spawn(task.run(receiver));
        Ok(Endpoint {
            commands,
            local,
            counters,
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What was refused or repeated so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Hands the task a command and waits for its answer.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CoapError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| CoapError::Stopped)?;
        answer.await.map_err(|_| CoapError::Stopped)
    }

    /// Sends a confirmable request and waits for the whole response.
    pub async fn request(&self, peer: SocketAddr, request: Request) -> Result<Response, CoapError> {
        self.ask(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Registers an observation of `path` (a confirmable GET with Observe 0).
    pub async fn observe(&self, peer: SocketAddr, path: &str) -> Result<Observing, CoapError> {
        let (notices_tx, notices) = mpsc::channel(NOTICE_QUEUE);
        let (token, first) = self
            .ask(|reply| Command::Observe {
                peer,
                request: Request::get(path),
                notices: notices_tx,
                reply,
            })
            .await??;
        Ok(Observing {
            first,
            notices,
            token,
            commands: self.commands.clone(),
        })
    }

    /// Sends a non-confirmable request and collects every response for
    /// `window`: to a multicast group (from the IPv4 interface address `via`,
    /// or for IPv6 out of the group address's scope id; any peer may answer),
    /// or to one address (a scan: only it may answer, and no retransmission
    /// holds the caller up when nothing is there).
    pub async fn gather(
        &self,
        group: SocketAddr,
        via: Option<Ipv4Addr>,
        request: Request,
        window: Duration,
    ) -> Result<Vec<Response>, CoapError> {
        let (replies, mut received) = mpsc::channel(1024);
        self.ask(|sent| Command::Gather {
            group,
            via,
            request,
            window,
            replies,
            sent,
        })
        .await??;
        let mut all = Vec::new();
        while let Some(r) = received.recv().await {
            all.push(r);
        }
        Ok(all)
    }
}

struct Con {
    mid: u16,
    bytes: Vec<u8>,
    tries: u32,
    timeout: Duration,
    next: Instant,
    started: Instant,
}

enum Kind {
    Once {
        reply: Option<oneshot::Sender<Result<Response, CoapError>>>,
        body: Vec<u8>,
        /// The Block2 number the next response must carry.
        next_block: u32,
    },
    Gather {
        replies: mpsc::Sender<Response>,
        until: Instant,
    },
    Observe {
        reply: Option<Registered>,
        notices: mpsc::Sender<Notice>,
        last: Option<(u32, Instant)>,
        renew_at: Option<Instant>,
    },
}

struct Exchange {
    peer: SocketAddr,
    /// A request to a multicast group: any peer may answer, many times.
    any_peer: bool,
    request: Request,
    con: Option<Con>,
    wait_until: Option<Instant>,
    kind: Kind,
}

struct Task {
    socket: UdpSocket,
    timing: Timing,
    next_mid: u16,
    exchanges: HashMap<Vec<u8>, Exchange>,
    mids: HashMap<u16, Vec<u8>>,
    seen: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    seen_order: VecDeque<(Instant, (SocketAddr, u16))>,
    next_wake: Option<Instant>,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let wake = self.next_wake;
            tokio::select! {
                command = commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => {
                        let datagram = buf[..n].to_vec();
                        self.datagram(&datagram, peer).await;
                    }
                    // ICMP port unreachable and the like: the timers decide.
                    Err(e) => tracing::debug!("CoAP receive: {e}"),
                },
                _ = sleep_until(wake) => self.tick(Instant::now()).await,
            }
        }
        // Deregister what is still observed, as a courtesy to the devices.
        let tokens: Vec<Vec<u8>> = self.exchanges.keys().cloned().collect();
        for token in tokens {
            self.cancel(token).await;
        }
    }

    fn wake_at(&mut self, at: Instant) {
        if self.next_wake.is_none_or(|w| at < w) {
            self.next_wake = Some(at);
        }
    }

    fn token(&self) -> Vec<u8> {
        loop {
            let token: [u8; 8] = rand::rng().random();
            if !self.exchanges.contains_key(&token[..]) {
                return token.to_vec();
            }
        }
    }

    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let kind = Kind::Once {
                    reply: Some(reply),
                    body: Vec::new(),
                    next_block: 0,
                };
                self.start_confirmable(peer, request, kind).await;
            }
            Command::Observe {
                peer,
                request,
                notices,
                reply,
            } => {
                let kind = Kind::Observe {
                    reply: Some(reply),
                    notices,
                    last: None,
                    renew_at: None,
                };
                self.start_confirmable(peer, request, kind).await;
            }
            Command::Gather {
                group,
                via,
                request,
                window,
                replies,
                sent,
            } => {
                let token = self.token();
                let mut packet = request.packet(&token);
                packet.header.set_type(MessageType::NonConfirmable);
                packet.header.message_id = self.mid();
                let result = match packet.to_bytes() {
                    Ok(bytes) => self.send_gather(&bytes, group, via).await,
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok(()) => {
                        let until = Instant::now() + window;
                        self.exchanges.insert(
                            token,
                            Exchange {
                                peer: group,
                                any_peer: group.ip().is_multicast(),
                                request,
                                con: None,
                                wait_until: None,
                                kind: Kind::Gather { replies, until },
                            },
                        );
                        self.wake_at(until);
                        let _ = sent.send(Ok(()));
                    }
                    Err(reason) => {
                        let _ = sent.send(Err(CoapError::Send {
                            peer: group,
                            reason,
                        }));
                    }
                }
            }
            Command::Cancel { token } => self.cancel(token).await,
        }
    }

    /// A new exchange for a confirmable request to one peer, sent at once.
    async fn start_confirmable(&mut self, peer: SocketAddr, request: Request, kind: Kind) {
        let token = self.token();
        let exchange = Exchange {
            peer,
            any_peer: false,
            request,
            con: None,
            wait_until: None,
            kind,
        };
        self.exchanges.insert(token.clone(), exchange);
        self.send_con(&token, None).await;
    }

    async fn send_gather(
        &self,
        bytes: &[u8],
        group: SocketAddr,
        via: Option<Ipv4Addr>,
    ) -> Result<(), String> {
        let socket = socket2::SockRef::from(&self.socket);
        match group {
            _ if !group.ip().is_multicast() => {}
            SocketAddr::V4(_) => {
                if let Some(via) = via {
                    socket
                        .set_multicast_if_v4(&via)
                        .map_err(|e| e.to_string())?;
                }
                socket.set_multicast_ttl_v4(1).map_err(|e| e.to_string())?;
            }
            SocketAddr::V6(g) => {
                socket
                    .set_multicast_if_v6(g.scope_id())
                    .map_err(|e| e.to_string())?;
                socket.set_multicast_hops_v6(1).map_err(|e| e.to_string())?;
            }
        }
        self.socket
            .send_to(bytes, group)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// (Re)sends the exchange's request as a new confirmable message.
    async fn send_con(&mut self, token: &[u8], block: Option<Block>) {
        let mid = self.mid();
        let Some(x) = self.exchanges.get_mut(token) else {
            return;
        };
        let mut packet = x.request.packet(token);
        packet.header.set_type(MessageType::Confirmable);
        packet.header.message_id = mid;
        if matches!(x.kind, Kind::Observe { .. }) {
            packet.set_observe_value(0);
        }
        if let Some(block) = block {
            packet.add_option(CoapOption::Block2, block.encode());
        }
        let peer = x.peer;
        let bytes = match packet.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                let reason = e.to_string();
                self.fail(token, CoapError::Send { peer, reason });
                return;
            }
        };
        if let Some(old) = x.con.take() {
            self.mids.remove(&old.mid);
        }
        let factor = rand::rng().random_range(1.0..=self.timing.ack_random_factor.max(1.0));
        let timeout = self.timing.ack_timeout.mul_f64(factor);
        let now = Instant::now();
        x.wait_until = None;
        x.con = Some(Con {
            mid,
            bytes: bytes.clone(),
            tries: 1,
            timeout,
            next: now + timeout,
            started: now,
        });
        self.mids.insert(mid, token.to_vec());
        self.wake_at(now + timeout);
        if let Err(e) = self.socket.send_to(&bytes, peer).await {
            // Unreachable networks fail at once: retransmission will retry.
            tracing::debug!("CoAP send to {peer}: {e}");
        }
    }

    async fn send(&self, bytes: &[u8], peer: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, peer).await {
            tracing::debug!("CoAP send to {peer}: {e}");
        }
    }

    async fn datagram(&mut self, datagram: &[u8], peer: SocketAddr) {
        let packet = match Packet::from_bytes(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("a datagram from {peer} is not a CoAP message ({e}); ignored");
                return;
            }
        };
        let mid = packet.header.message_id;
        let kind = packet.header.get_type();
        match kind {
            MessageType::Acknowledgement | MessageType::Reset => {
                let Some(token) = self.mids.get(&mid).cloned() else {
                    self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let Some(x) = self.exchanges.get_mut(&token) else {
                    self.mids.remove(&mid);
                    return;
                };
                if x.peer != peer {
                    self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.mids.remove(&mid);
                if kind == MessageType::Reset {
                    self.fail(&token, CoapError::Reset { peer });
                    return;
                }
                if packet.header.code == MessageClass::Empty
                    || packet.get_token() != token.as_slice()
                {
                    x.con = None;
                }
                if packet.header.code == MessageClass::Empty {
                    // A separate response will follow.
                    let until = Instant::now() + self.timing.response_wait;
                    x.wait_until = Some(until);
                    self.wake_at(until);
                    return;
                }
                if packet.get_token() != token.as_slice() {
                    // Acknowledged, but the response is for another token:
                    // ignored, and the request waits for a separate response.
                    self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        "{peer} acknowledged with a response for another token; ignored"
                    );
                    let until = Instant::now() + self.timing.response_wait;
                    x.wait_until = Some(until);
                    self.wake_at(until);
                    return;
                }
                // A piggybacked response: `response` ends the wait for the ACK.
                self.response(&token, peer, &packet).await;
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                let key = (peer, mid);
                if let Some(ack) = self.seen.get(&key) {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    if let Some(ack) = ack.clone() {
                        self.send(&ack, peer).await;
                    }
                    return;
                }
                let confirmable = kind == MessageType::Confirmable;
                let is_response = matches!(packet.header.code, MessageClass::Response(_))
                    || matches!(packet.header.code, MessageClass::Reserved(c) if c >> 5 >= 2);
                let token = packet.get_token().to_vec();
                let ours = is_response
                    && self
                        .exchanges
                        .get(&token)
                        .is_some_and(|x| x.any_peer || x.peer == peer);
                if !ours {
                    // A ping (empty CON), a request to a client, or a response
                    // to nothing Vigil asked: RST (RFC 7252 §4.2, §4.3).
                    if is_response {
                        self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    if confirmable || is_response {
                        self.send(&empty(MessageType::Reset, mid), peer).await;
                    }
                    return;
                }
                let ack = confirmable.then(|| empty(MessageType::Acknowledgement, mid));
                if let Some(ack) = &ack {
                    self.send(ack, peer).await;
                }
                self.remember(key, ack);
                self.response(&token, peer, &packet).await;
            }
        }
    }

    fn remember(&mut self, key: (SocketAddr, u16), ack: Option<Vec<u8>>) {
        let now = Instant::now();
        while let Some((at, old)) = self.seen_order.front() {
            if now.duration_since(*at) < EXCHANGE_LIFETIME && self.seen_order.len() < MAX_SEEN {
                break;
            }
            self.seen.remove(old);
            self.seen_order.pop_front();
        }
        self.seen.insert(key, ack);
        self.seen_order.push_back((now, key));
    }

    async fn response(&mut self, token: &[u8], peer: SocketAddr, packet: &Packet) {
        let Some(x) = self.exchanges.get_mut(token) else {
            return;
        };
        // Whether this answers a request of ours (rather than being a later
        // notification): the request was waiting for an ACK or a response.
        let mut answers_request = false;
        if !x.any_peer {
            if let Some(con) = x.con.take() {
                self.mids.remove(&con.mid);
                answers_request = true;
            }
            answers_request |= x.wait_until.take().is_some();
        }
        match &mut x.kind {
            Kind::Once {
                reply,
                body,
                next_block,
            } => {
                let block = Block::of(packet);
                let wrong_block = match block {
                    Some(b) if b.num != *next_block => Some(format!(
                        "{peer} answered block {} when asked for block {next_block}",
                        b.num
                    )),
                    Some(b) if b.more && packet.payload.is_empty() => Some(format!(
                        "{peer} sent an empty block {} that says more follow",
                        b.num
                    )),
                    None if *next_block > 0 => Some(format!(
                        "{peer} answered block {next_block} without a Block2 option"
                    )),
                    _ => None,
                };
                if let Some(reason) = wrong_block {
                    self.fail(token, CoapError::BadBlock { peer, reason });
                    return;
                }
                body.extend_from_slice(&packet.payload);
                if body.len() > MAX_BODY {
                    self.fail(
                        token,
                        CoapError::TooLarge {
                            peer,
                            limit: MAX_BODY,
                        },
                    );
                    return;
                }
                let success = u8::from(packet.header.code) >> 5 == 2;
                if let Some(block) = block.filter(|b| b.more && success) {
                    *next_block = block.num + 1;
                    let next = Block {
                        num: block.num + 1,
                        more: false,
                        szx: block.szx,
                    };
                    self.send_con(token, Some(next)).await;
                    return;
                }
                let whole = std::mem::take(body);
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Ok(Response::from_packet(peer, packet, whole)));
                }
                self.exchanges.remove(token);
            }
            Kind::Gather { replies, .. } => {
                let _ =
                    replies.try_send(Response::from_packet(peer, packet, packet.payload.clone()));
            }
            Kind::Observe {
                reply,
                notices,
                last,
                renew_at,
            } => {
                let response = Response::from_packet(peer, packet, packet.payload.clone());
                match response.observe {
                    Some(number) if response.is_success() => {
                        let now = Instant::now();
                        let max_age =
                            Duration::from_secs(u64::from(response.max_age.unwrap_or(60)));
                        let renew = now + max_age + RENEW_GRACE;
                        *renew_at = Some(renew);
                        // The answer to a (re-)registration is taken whatever
                        // its number: a server repeats its current one, and
                        // one that restarted starts again low (RFC 7641 §3.4
                        // orders notifications, not registrations).
                        let fresh = answers_request
                            || last.is_none_or(|(v, t)| is_newer(v, t, number, now));
                        if fresh {
                            *last = Some((number, now));
                            if let Some(reply) = reply.take() {
                                let _ = reply.send(Ok((token.to_vec(), response)));
                            } else if let Err(e) = notices.try_send(Notice::Notification(response))
                            {
                                if let mpsc::error::TrySendError::Closed(_) = e {
                                    self.cancel(token.to_vec()).await;
                                    return;
                                }
                                self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            self.counters
                                .stale_notifications
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        self.wake_at(renew);
                    }
                    _ => {
                        // Not (or no longer) observed.
                        if let Some(reply) = reply.take() {
                            let _ = reply.send(Ok((token.to_vec(), response)));
                        } else {
                            let _ = notices.try_send(Notice::Ended(format!(
                                "{peer} ended the observation ({})",
                                response.code_text()
                            )));
                        }
                        self.exchanges.remove(token);
                    }
                }
            }
        }
    }

    /// Ends an exchange with an error.
    fn fail(&mut self, token: &[u8], error: CoapError) {
        let Some(x) = self.exchanges.remove(token) else {
            return;
        };
        if let Some(con) = x.con {
            self.mids.remove(&con.mid);
        }
        match x.kind {
            Kind::Once { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
            Kind::Observe { reply, notices, .. } => match reply {
                Some(reply) => {
                    let _ = reply.send(Err(error));
                }
                None => {
                    let _ = notices.try_send(Notice::Ended(error.to_string()));
                }
            },
            Kind::Gather { .. } => {}
        }
    }

    /// Forgets an exchange; an observation is deregistered (GET, Observe 1).
    async fn cancel(&mut self, token: Vec<u8>) {
        let Some(x) = self.exchanges.remove(&token) else {
            return;
        };
        if let Some(con) = &x.con {
            self.mids.remove(&con.mid);
        }
        if let Kind::Observe { last: Some(_), .. } = x.kind {
            let mut packet = x.request.packet(&token);
            packet.header.set_type(MessageType::NonConfirmable);
            packet.header.message_id = self.mid();
            packet.set_observe_value(1);
            if let Ok(bytes) = packet.to_bytes() {
                self.send(&bytes, x.peer).await;
            }
        }
    }

    async fn tick(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut failed = Vec::new();
        let mut ended = Vec::new();
        let mut renew = Vec::new();
        let mut next: Option<Instant> = None;
        let mut later = |at: Instant| {
            if next.is_none_or(|n| at < n) {
                next = Some(at);
            }
        };
        for (token, x) in self.exchanges.iter_mut() {
            if let Some(con) = &mut x.con {
                if con.next <= now {
                    if con.tries > self.timing.max_retransmit {
                        failed.push((
                            token.clone(),
                            CoapError::Timeout {
                                peer: x.peer,
                                tries: con.tries,
                                seconds: now.duration_since(con.started).as_secs(),
                            },
                        ));
                        continue;
                    }
                    con.tries += 1;
                    con.timeout *= 2;
                    con.next = now + con.timeout;
                    resend.push((con.bytes.clone(), x.peer));
                }
                later(con.next);
            }
            if let Some(until) = x.wait_until {
                if until <= now {
                    failed.push((
                        token.clone(),
                        CoapError::Timeout {
                            peer: x.peer,
                            tries: 1,
                            seconds: self.timing.response_wait.as_secs(),
                        },
                    ));
                    continue;
                }
                later(until);
            }
            match &x.kind {
                Kind::Gather { until, .. } => {
                    if *until <= now {
                        ended.push(token.clone());
                    } else {
                        later(*until);
                    }
                }
                Kind::Observe {
                    renew_at: Some(at), ..
                } if x.con.is_none() && x.wait_until.is_none() => {
                    if *at <= now {
                        renew.push(token.clone());
                    } else {
                        later(*at);
                    }
                }
                _ => {}
            }
        }
        self.next_wake = next;
        for (bytes, peer) in resend {
            self.counters
                .retransmissions
                .fetch_add(1, Ordering::Relaxed);
            self.send(&bytes, peer).await;
        }
        for (token, error) in failed {
            self.fail(&token, error);
        }
        for token in ended {
            self.exchanges.remove(&token);
        }
        for token in renew {
            if let Some(Exchange {
                kind: Kind::Observe { renew_at, .. },
                ..
            }) = self.exchanges.get_mut(&token)
            {
                *renew_at = None;
            }
            self.send_con(&token, None).await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
