//! Sessions kept while their client is away, and across restarts.
//!
//! rumqttd keeps a session (its subscriptions, the messages owed to it) in
//! memory only, forever, and only while the client's last CONNECT had clean
//! start 0. The front door owns what MQTT says about sessions instead:
//!
//! - While a client whose session is kept is away, a *stand-in* is logged
//!   into the router under its client id. The router delivers to it what it
//!   would have queued; the stand-in answers at once and keeps each message
//!   in the session's queue, in memory and reported as an
//!   [`Observation::Session`], so the store has it too.
//! - When the client comes back, the stand-in leaves (the router keeps the
//!   session and whatever arrives in between), and the front door hands the
//!   client its queue ([`deliver`]) before any of the router's traffic, with
//!   packet ids the router never uses.
//! - A session ends when its Session Expiry Interval has passed (MQTT 5;
//!   3.1.1 sessions never expire): the stand-in logs in again with a clean
//!   start, which drops the router's session, and the store forgets it.
//! - At start, a stand-in per stored session logs in and subscribes its
//!   filters again, so the router holds the session before any client comes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use vigil_core::session::{KeptSession, QueuedMessage, SessionChange, NEVER_EXPIRES};
use vigil_core::{now_micros, DisconnectReason, MqttVersion};

use super::{hand_to_router, AbsentClient, Link, Shared, ROUTER_CLOSE_WAIT, ROUTER_PING_EVERY};
use crate::codec::{
    self, packet_type, property_id, publish_packet_id, Connect, Publish, SubAck, Subscribe,
    SubscriptionFilter,
};
use crate::sessions::SessionClaim;
use crate::stream::{ClientReader, ClientWriter};

/// The front door's own packet ids for queued messages: above every id the
/// router gives (rumqttd numbers its deliveries 1 to 100), so a client can
/// tell them apart from an unfinished QoS 2 delivery of the router's.
pub(super) const FIRST_OWN_PACKET_ID: u16 = 1_001;
/// Queued messages sent to a returning client before it must answer some.
const DELIVERY_WINDOW: usize = 100;
/// How long a returning client may leave queued messages unanswered, when
/// its keepalive does not say.
const DELIVERY_WAIT: Duration = Duration::from_secs(60);
/// How long the router may take to log a stand-in in or out.
const ROUTER_ANSWER: Duration = Duration::from_secs(10);

/// When and how a stand-in logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StandInLogin {
    /// At once: the router has the session.
    Now,
    /// At once, subscribing the session's filters: the router does not know
    /// the session (at start).
    Resubscribing,
    /// After this long: the client's will is due then (its Will Delay
    /// Interval), and a login under its id would cancel it.
    After(Duration),
}

/// A session's queue, shared by its stand-in and whoever ends it.
type Queue = Arc<Mutex<VecDeque<QueuedMessage>>>;

/// The stand-ins of the clients that are away, by client id.
#[derive(Default)]
pub(super) struct Absences {
    by_client: Mutex<HashMap<String, StandIn>>,
    next: AtomicU64,
}

struct StandIn {
    generation: u64,
    leave: oneshot::Sender<()>,
    task: JoinHandle<()>,
    queue: Queue,
    /// What the others see of it.
    seen: Arc<Seen>,
    /// The session it holds (`away_since` set).
    session: KeptSession,
}

/// What the others see of a stand-in.
#[derive(Default)]
struct Seen {
    /// When the router last sent it anything, in ms since [`EPOCH`]; 0
    /// until it is logged in.
    heard: AtomicU64,
    /// Logged in, and its filters subscribed when it had to.
    ready: std::sync::atomic::AtomicBool,
}

/// The time base of [`Seen::heard`].
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    (EPOCH.elapsed().as_millis() as u64).max(1)
}

/// How long a stand-in must have heard nothing from the router before
/// Vigil stops (see [`Absences::settle`]).
const SETTLED: Duration = Duration::from_millis(300);

impl Absences {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StandIn>> {
        self.by_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a stand-in into the router for `session`'s client, with its
    /// `queue`.
    pub(super) fn begin(
        &self,
        shared: &Arc<Shared>,
        session: KeptSession,
        queue: Vec<QueuedMessage>,
        login: StandInLogin,
    ) {
        self.begin_unless(shared, session, queue, login, || false);
    }

    /// [`Absences::begin`], unless `back()` says the client is back; asked
    /// under the same lock a returning client's [`Absences::end`] takes, and
    /// a returning client claims its id before it ends the stand-in, so a
    /// stand-in never outlives the client's return. Returns whether it began.
    fn begin_unless(
        &self,
        shared: &Arc<Shared>,
        mut session: KeptSession,
        queue: Vec<QueuedMessage>,
        login: StandInLogin,
        back: impl FnOnce() -> bool,
    ) -> bool {
        let mut by_client = self.lock();
        if back() {
            return false;
        }
        session.away_since.get_or_insert_with(now_micros);
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        let queue: Queue = Arc::new(Mutex::new(queue.into()));
        let (leave, left) = oneshot::channel();
        let client_id = session.client_id.clone();
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn(stand_in(
            shared.clone(),
            session.clone(),
            queue.clone(),
            login,
            left,
            generation,
            seen.clone(),
        ));
        let previous = by_client.insert(
            client_id,
            StandIn {
                generation,
                leave,
                task,
                queue,
                seen,
                session,
            },
        );
        if let Some(previous) = previous {
            previous.task.abort();
        }
        true
    }

    /// The client is back: its stand-in leaves the router, which keeps the
    /// session. Returns the session and the messages queued for it (none:
    /// no stand-in, the session ended or was never kept).
    pub(super) async fn end(&self, shared: &Arc<Shared>, client_id: &str) -> Returning {
        let mut returning = Returning {
            shared: shared.clone(),
            away: None,
        };
        let Some(stand_in) = self.lock().remove(client_id) else {
            return returning;
        };
        let _ = stand_in.leave.send(());
        let mut task = stand_in.task;
        if timeout(ROUTER_CLOSE_WAIT + ROUTER_ANSWER, &mut task)
            .await
            .is_err()
        {
            tracing::warn!(
                client_id,
                "the stand-in of a returning client did not leave the router in time"
            );
            task.abort();
        }
        let queue = std::mem::take(&mut *stand_in.queue.lock().unwrap_or_else(|e| e.into_inner()));
        returning.away = Some((stand_in.session, queue));
        returning
    }

    /// The clients away whose sessions are kept, by client id.
    pub(super) fn absent(&self) -> Vec<AbsentClient> {
        let now = now_micros();
        let mut absent: Vec<AbsentClient> = self
            .lock()
            .iter()
            .filter(|(_, s)| {
                s.session.expires_at().is_none_or(|at| at > now) && !s.task.is_finished()
            })
            .map(|(client_id, s)| AbsentClient {
                client_id: client_id.clone(),
                away_since: s.session.away_since.unwrap_or(now),
                expires_at: s.session.expires_at(),
                queued: s.queue.lock().unwrap_or_else(|e| e.into_inner()).len(),
            })
            .collect();
        absent.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        absent
    }

    /// Waits, at most until `deadline`, until every stand-in is logged in
    /// and has its filters subscribed (at start, before any client is let
    /// in: a message published sooner would find no subscription).
    pub(super) async fn ready(&self, deadline: Instant) {
        let ready = |s: &StandIn| s.seen.ready.load(Ordering::Acquire);
        if !self
            .until_all(deadline, Duration::from_millis(5), ready)
            .await
        {
            tracing::warn!("some kept sessions were not back in the router within 10 s of start");
        }
    }

    /// Waits, at most until `deadline`, until every stand-in is logged in and
    /// has heard nothing from the router for [`SETTLED`]: Vigil is stopping,
    /// and the clients it just closed had messages the router held for
    /// them (sent and unanswered, or not sent yet), which it now sends their
    /// stand-ins, to be queued and stored.
    pub(super) async fn settle(&self, deadline: Instant) {
        let settled = |s: &StandIn| {
            let heard = s.seen.heard.load(Ordering::Acquire);
            heard > 0 && now_ms().saturating_sub(heard) >= SETTLED.as_millis() as u64
        };
        if !self
            .until_all(deadline, Duration::from_millis(50), settled)
            .await
        {
            tracing::warn!(
                "some kept sessions were still receiving from the router when Vigil stopped"
            );
        }
    }

    /// Polls every `every` until each stand-in has finished or is `done`;
    /// false if `deadline` came first.
    async fn until_all(
        &self,
        deadline: Instant,
        every: Duration,
        done: impl Fn(&StandIn) -> bool,
    ) -> bool {
        loop {
            if self
                .lock()
                .values()
                .all(|s| s.task.is_finished() || done(s))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(every).await;
        }
    }

    /// A stand-in whose session ended takes itself off the list (unless a
    /// newer one took its place).
    fn forget(&self, client_id: &str, generation: u64) {
        let mut by_client = self.lock();
        if by_client
            .get(client_id)
            .is_some_and(|s| s.generation == generation)
        {
            by_client.remove(client_id);
        }
    }
}

/// A connection whose router session was not a clean start ended, unless
/// another connection took its client id over (`claim`): a session to keep
/// is stored and held by a stand-in, with the messages the client did not
/// take from `queued`; one that ends with the connection (MQTT 5 Session
/// Expiry 0, which rumqttd would keep) is ended in the router.
pub(super) async fn after_connection(
    shared: &Arc<Shared>,
    link: &Link,
    claim: &SessionClaim,
    router_kept: bool,
    will_delay: Duration,
    queued: VecDeque<QueuedMessage>,
) {
    let back = || claim.taken_over();
    // The router times the will from when it notices the connection gone,
    // which may be a little after now: a second to spare.
    let login = if will_delay.is_zero() {
        StandInLogin::Now
    } else {
        StandInLogin::After(will_delay + Duration::from_secs(1))
    };
    match link.session_expiry.load(Ordering::Acquire) {
        0 if !router_kept => {}
        0 => {
            let mut ended = link.kept_session(Some(now_micros()));
            ended.expiry_s = 0;
            shared
                .absences
                .begin_unless(shared, ended, Vec::new(), login, back);
        }
        _ => {
            let session = link.kept_session(Some(now_micros()));
            // Also while Vigil stops: the router then sends the stand-in
            // what it held for the client, to be stored (`Absences::settle`).
            let away = session.clone();
            if shared
                .absences
                .begin_unless(shared, away, queued.into(), login, back)
            {
                shared.report_session(SessionChange::Kept(session)).await;
            }
        }
    }
}

/// A returning client's session and queue, taken from its stand-in. Should
/// the connection fail before it is established ([`Returning::take`]), a new
/// stand-in takes them back.
pub(super) struct Returning {
    shared: Arc<Shared>,
    away: Option<(KeptSession, VecDeque<QueuedMessage>)>,
}

impl Returning {
    /// Whether a stand-in held the session.
    pub(super) fn held(&self) -> bool {
        self.away.is_some()
    }

    /// The connection is established: the queue is its to deliver.
    pub(super) fn take(mut self) -> Option<VecDeque<QueuedMessage>> {
        self.away.take().map(|(_, queue)| queue)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some((session, queue)) = self.away.take() {
            let shared = self.shared.clone();
            shared
                .absences
                .begin(&shared, session, queue.into(), StandInLogin::Now);
        }
    }
}

/// The CONNECT a stand-in logs in with: the client's id, MQTT 5, the
/// session kept (the front door ends it itself), no will.
fn stand_in_connect(client_id: &str, clean_start: bool) -> Connect {
    let mut never = vec![property_id::SESSION_EXPIRY_INTERVAL];
    never.extend_from_slice(&NEVER_EXPIRES.to_be_bytes());
    Connect {
        protocol_name: "MQTT".to_owned(),
        level: 5,
        clean_start,
        keepalive: 0,
        properties: if clean_start {
            Bytes::new()
        } else {
            Bytes::from(never)
        },
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
    }
}

/// Ends `client_id`'s session in the router: a login with clean start
/// drops it, and a clean start session ends with its connection.
pub(super) async fn end_router_session(shared: &Shared, client_id: &str) {
    let connect = stand_in_connect(client_id, true);
    let router = &shared.router;
    let login = timeout(
        ROUTER_ANSWER,
        hand_to_router(router.addr, &connect, client_id, &router.secret, true),
    )
    .await;
    let Ok(Ok((mut reader, mut writer, _, _))) = login else {
        tracing::warn!(
            client_id,
            "could not end a session in the embedded router: it did not take the login"
        );
        return;
    };
    let _ = writer.write_all(&[0xE0, 0x00]).await;
    wait_for_close(&mut reader).await;
}

/// Reads until the router closes the connection (it does once it has
/// handled a DISCONNECT), at most [`ROUTER_CLOSE_WAIT`].
async fn wait_for_close(reader: &mut tokio::net::tcp::OwnedReadHalf) {
    let _ = timeout(ROUTER_CLOSE_WAIT, async {
        let mut sink = [0u8; 1024];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// When `session` ends, as an instant (`None`: never).
fn deadline(session: &KeptSession) -> Option<Instant> {
    let at = session.expires_at()?;
    let left = at.saturating_sub(now_micros()).max(0);
    Some(Instant::now() + Duration::from_micros(left as u64))
}

/// A stand-in's life: logs in as the absent client, queues what the router
/// delivers, and leaves when the client returns (`leave`) or the session
/// expires.
async fn stand_in(
    shared: Arc<Shared>,
    session: KeptSession,
    queue: Queue,
    login: StandInLogin,
    mut leave: oneshot::Receiver<()>,
    generation: u64,
    seen: Arc<Seen>,
) {
    let client_id = session.client_id.clone();
    let expires = deadline(&session);
    if let StandInLogin::After(wait) = login {
        // Nothing comes in meanwhile: at a stop, it is settled.
        seen.heard.store(now_ms(), Ordering::Release);
        let until = expires.map_or(Instant::now() + wait, |e| e.min(Instant::now() + wait));
        tokio::select! {
            _ = sleep_until(until) => {}
            // Back before its will was due: the router cancels the will.
            _ = &mut leave => return,
        }
    }
    if expires.is_some_and(|at| at <= Instant::now()) {
        end_session(&shared, &client_id, &queue).await;
        shared.absences.forget(&client_id, generation);
        return;
    }
    let connect = stand_in_connect(&client_id, false);
    let router = &shared.router;
    let logged_in = timeout(
        ROUTER_ANSWER,
        hand_to_router(router.addr, &connect, &client_id, &router.secret, false),
    )
    .await;
    let (mut reader, mut writer, mut buf) = match logged_in {
        Ok(Ok((reader, writer, buf, connack))) if connack.code == 0 => (reader, writer, buf),
        _ => {
            tracing::warn!(
                client_id,
                "the embedded router did not take the stand-in of an absent client: messages for it are not queued until it returns"
            );
            shared.absences.forget(&client_id, generation);
            return;
        }
    };
    if login == StandInLogin::Resubscribing && !session.subscriptions.is_empty() {
        let subscribe = Subscribe {
            packet_id: 1,
            filters: session
                .subscriptions
                .iter()
                .map(|s| SubscriptionFilter {
                    filter: s.filter.clone(),
                    options: s.options,
                })
                .collect(),
            properties_raw: Bytes::new(),
        };
        let mut out = BytesMut::new();
        subscribe.encode(MqttVersion::V5, &mut out);
        if writer.write_all(&out).await.is_err() {
            shared.absences.forget(&client_id, generation);
            return;
        }
    }
    seen.heard.store(now_ms(), Ordering::Release);
    if login != StandInLogin::Resubscribing || session.subscriptions.is_empty() {
        seen.ready.store(true, Ordering::Release);
    }
    let max_queued = shared.config.max_queued_messages;
    // Rising across connections and restarts: the clock, or one past the
    // last one queued.
    let mut last_seq = queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .back()
        .map_or(0, |m| m.seq);
    let mut dropped: u64 = 0;
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let expiry = sleep_until(expires.unwrap_or(far));
    tokio::pin!(expiry);
    let ping = sleep(ROUTER_PING_EVERY);
    tokio::pin!(ping);
    loop {
        // Every complete packet: messages queued, then answered in one write.
        let mut answers = BytesMut::new();
        while let Ok(Some(h)) = codec::parse_frame_header(&buf) {
            if buf.len() < h.total_len() {
                break;
            }
            let packet = buf.split_to(h.total_len()).freeze();
            let body = &packet[h.header_len..];
            match h.packet_type {
                packet_type::PUBLISH => {
                    let qos = (h.flags >> 1) & 0b11;
                    // The router marks retain only on a retained message
                    // sent for a new subscription: the client had it, or
                    // would get it when it subscribes again.
                    let on_subscribe = h.flags & 1 != 0;
                    if !on_subscribe {
                        let full =
                            queue.lock().unwrap_or_else(|e| e.into_inner()).len() >= max_queued;
                        if full {
                            if dropped == 0 {
                                tracing::warn!(
                                    client_id,
                                    "the queue of an absent client is full (broker.max_queued_messages = {max_queued}): newer messages for it are dropped"
                                );
                            }
                            dropped += 1;
                        } else {
                            let at = now_micros();
                            last_seq = (last_seq + 1).max(at);
                            let message = QueuedMessage {
                                seq: last_seq,
                                at,
                                packet: packet.clone(),
                            };
                            queue
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push_back(message.clone());
                            shared
                                .report_session(SessionChange::Queued {
                                    client_id: client_id.clone(),
                                    message,
                                })
                                .await;
                        }
                    }
                    if let Some(id) = publish_packet_id(body).filter(|_| qos > 0) {
                        let kind = if qos == 1 {
                            packet_type::PUBACK
                        } else {
                            packet_type::PUBREC
                        };
                        answers.extend_from_slice(&codec::publish_ack(
                            kind,
                            id,
                            0,
                            MqttVersion::V5,
                        ));
                    }
                }
                packet_type::PUBREL if body.len() >= 2 => {
                    let id = u16::from_be_bytes([body[0], body[1]]);
                    answers.extend_from_slice(&codec::publish_ack(
                        packet_type::PUBCOMP,
                        id,
                        0,
                        MqttVersion::V5,
                    ));
                }
                packet_type::SUBACK => {
                    seen.ready.store(true, Ordering::Release);
                    if let Ok(suback) = SubAck::parse(body, MqttVersion::V5) {
                        let refused = suback.codes.iter().filter(|c| **c >= 0x80).count();
                        if refused > 0 {
                            tracing::warn!(
                                client_id,
                                refused,
                                "the embedded router refused filters of a kept session"
                            );
                        }
                    }
                }
                packet_type::DISCONNECT => {
                    // Taken over: the client came back some other way.
                    shared.absences.forget(&client_id, generation);
                    return;
                }
                _ => {}
            }
        }
        if !answers.is_empty() && writer.write_all(&answers).await.is_err() {
            shared.absences.forget(&client_id, generation);
            return;
        }
        super::make_room(&mut buf);
        tokio::select! {
            read = reader.read_buf(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    tracing::warn!(client_id, "the embedded router closed the stand-in of an absent client");
                    shared.absences.forget(&client_id, generation);
                    return;
                }
                seen.heard.store(now_ms(), Ordering::Release);
            },
            _ = &mut leave => {
                let _ = writer.write_all(&[0xE0, 0x00]).await;
                wait_for_close(&mut reader).await;
                if dropped > 0 {
                    tracing::info!(client_id, dropped, "the client is back; messages dropped while its queue was full");
                }
                return;
            }
            _ = &mut expiry => {
                let _ = writer.write_all(&[0xE0, 0x00]).await;
                wait_for_close(&mut reader).await;
                end_session(&shared, &client_id, &queue).await;
                shared.absences.forget(&client_id, generation);
                return;
            }
            _ = &mut ping => {
                if writer.write_all(&codec::PINGREQ).await.is_err() {
                    shared.absences.forget(&client_id, generation);
                    return;
                }
                ping.as_mut().reset(Instant::now() + ROUTER_PING_EVERY);
            }
        }
    }
}

/// The session's time is up: the router and the store forget it.
async fn end_session(shared: &Shared, client_id: &str, queue: &Queue) {
    end_router_session(shared, client_id).await;
    shared.forget_session(client_id);
    queue.lock().unwrap_or_else(|e| e.into_inner()).clear();
    tracing::debug!(client_id, "a kept session expired");
    shared
        .report_session(SessionChange::Ended {
            client_id: client_id.to_owned(),
        })
        .await;
}

/// What a queued message becomes for the client, with packet id `id`: its
/// bytes and QoS; `None` when it is not sent (expired while it waited, kept
/// by the client's subscription options, or over its Maximum Packet Size).
fn for_returning_client(link: &Link, message: &QueuedMessage, id: u16) -> Option<(Bytes, u8)> {
    let parsed = codec::parse_frame_header(&message.packet)
        .ok()
        .flatten()
        .filter(|h| h.packet_type == packet_type::PUBLISH && h.total_len() == message.packet.len())
        .and_then(|h| {
            let body = message.packet.slice(h.header_len..);
            Publish::parse(h.flags, body, MqttVersion::V5).ok()
        });
    let Some(mut publish) = parsed else {
        // Only a damaged database can hold one.
        tracing::warn!(
            client_id = %link.client_id,
            seq = message.seq,
            "a queued message cannot be read; it is dropped"
        );
        return None;
    };
    if !super::age_message_expiry(&mut publish, message.at) {
        return None;
    }
    publish.dup = false;
    let mut publish = link.as_client_gets(publish)?;
    if publish.qos > 0 {
        publish.packet_id = Some(id);
    }
    let mut out = BytesMut::new();
    publish.encode(link.version, &mut out);
    if link.maximum_packet_size.is_some_and(|max| out.len() > max) {
        return None;
    }
    Some((out.freeze(), publish.qos))
}

/// Hands a returning client the messages queued while it was away, oldest
/// first, before the router's traffic: at most [`DELIVERY_WINDOW`] (and its
/// Receive Maximum) unanswered at once; answers the PUBRECs and PINGREQs
/// that come meanwhile and keeps any other packet at the front of `buf` for
/// the connection's upstream task.
///
/// Returns the last `seq` the client has (or that will never go), for the
/// store. What it does not have stays in `queue`, also when the connection
/// ends (then `Err` says why).
pub(super) async fn deliver(
    link: &Link,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    buf: &mut BytesMut,
    queue: &mut VecDeque<QueuedMessage>,
    keepalive: u16,
) -> (Option<i64>, Result<(), DisconnectReason>) {
    let window = link.receive_maximum.clamp(1, DELIVERY_WINDOW);
    // How long the client may answer none of them (its PINGREQs do not
    // count): then the rest waits for its next return.
    let wait = if keepalive > 0 {
        Duration::from_millis(u64::from(keepalive) * 1500)
    } else {
        DELIVERY_WAIT
    };
    let mut answered_at = Instant::now();
    // Sent and not yet answered (PUBACK, PUBCOMP), in order.
    let mut unanswered: Vec<(u16, QueuedMessage)> = Vec::new();
    let mut last_sent = None;
    // Packets of the client's own, for the upstream task.
    let mut kept = BytesMut::new();
    let outcome = loop {
        let mut out = BytesMut::new();
        while unanswered.len() < window {
            let Some(message) = queue.pop_front() else {
                break;
            };
            last_sent = Some(message.seq);
            let id = link.next_own_packet_id();
            if let Some((bytes, qos)) = for_returning_client(link, &message, id) {
                out.extend_from_slice(&bytes);
                if qos > 0 {
                    unanswered.push((id, message));
                }
            }
        }
        if !out.is_empty() && writer.write(out.freeze()).await.is_err() {
            break Err(DisconnectReason::Dropped);
        }
        if unanswered.is_empty() && queue.is_empty() {
            break Ok(());
        }
        // Read the answers.
        let mut replies = BytesMut::new();
        let mut leaving = false;
        while let Ok(Some(h)) = codec::parse_frame_header(buf) {
            if buf.len() < h.total_len() {
                break;
            }
            let packet = buf.split_to(h.total_len());
            let id = packet
                .get(h.header_len..h.header_len + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            let ours = id.and_then(|id| unanswered.iter().position(|(i, _)| *i == id));
            match (h.packet_type, ours) {
                (packet_type::PUBACK | packet_type::PUBCOMP, Some(i)) => {
                    unanswered.remove(i);
                    answered_at = Instant::now();
                }
                (packet_type::PUBREC, Some(i)) => {
                    answered_at = Instant::now();
                    let id = unanswered[i].0.to_be_bytes();
                    replies.extend_from_slice(&[0x62, 0x02, id[0], id[1]]);
                }
                (packet_type::PINGREQ, _) => replies.extend_from_slice(&codec::PINGRESP),
                (packet_type::DISCONNECT, _) => {
                    kept.extend_from_slice(&packet);
                    leaving = true;
                    break;
                }
                _ => kept.extend_from_slice(&packet),
            }
        }
        if !replies.is_empty() && writer.write(replies.freeze()).await.is_err() {
            break Err(DisconnectReason::Dropped);
        }
        if leaving {
            break Err(DisconnectReason::Clean);
        }
        // Wait for answers when nothing more may (or is left to) go.
        if !unanswered.is_empty() && (unanswered.len() >= window || queue.is_empty()) {
            super::make_room(buf);
            match timeout_at(answered_at + wait, reader.read_into(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => break Err(DisconnectReason::Dropped),
                Err(_) => break Err(DisconnectReason::KeepaliveTimeout),
            }
        }
    };
    // Unanswered messages go back to the front of the queue, in order.
    for (_, message) in unanswered.into_iter().rev() {
        queue.push_front(message);
    }
    kept.extend_from_slice(buf);
    *buf = kept;
    // Everything before what is left is the client's (or never goes).
    let done = match queue.front() {
        Some(first) => Some(first.seq - 1),
        None => last_sent,
    };
    (done, outcome)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, AtomicU32};

    use super::*;
    use crate::deliveries::Deliveries;
    use crate::front_door::{Tag, TAG};

    fn link(version: MqttVersion) -> Link {
        Link {
            injected_pings: AtomicU32::new(0),
            version,
            pending_subacks: Default::default(),
            retained_again: Default::default(),
            retained: Default::default(),
            own_packet_id: AtomicU16::new(FIRST_OWN_PACKET_ID),
            deliveries: Deliveries::new(),
            maximum_packet_size: None,
            receive_maximum: 65_535,
            client_id: "back".into(),
            subscriptions: Default::default(),
            session_expiry: AtomicU32::new(NEVER_EXPIRES),
        }
    }

    /// A message as the router delivers it to a stand-in: MQTT 5, at the
    /// granted QoS 2, tagged with the QoS it was published with.
    fn queued(published_qos: u8, expiry: Option<u32>, waited_s: i64) -> QueuedMessage {
        let mut properties = BytesMut::new();
        if let Some(expiry) = expiry {
            properties.extend_from_slice(&[property_id::MESSAGE_EXPIRY_INTERVAL]);
            properties.extend_from_slice(&expiry.to_be_bytes());
        }
        let publish = Publish {
            dup: false,
            qos: 2,
            retain: false,
            topic: "t/x".into(),
            packet_id: Some(7),
            payload: Bytes::from_static(b"reading"),
            properties: Default::default(),
            properties_raw: codec::with_user_property(
                &properties,
                TAG,
                &Tag::value(published_qos, false, "sensor"),
            ),
        };
        let mut packet = BytesMut::new();
        publish.encode(MqttVersion::V5, &mut packet);
        QueuedMessage {
            seq: 1,
            at: now_micros() - waited_s * 1_000_000,
            packet: packet.freeze(),
        }
    }

    fn read(bytes: &Bytes, version: MqttVersion) -> Publish {
        let h = codec::parse_frame_header(bytes).unwrap().unwrap();
        Publish::parse(h.flags, bytes.slice(h.header_len..), version).unwrap()
    }

    #[test]
    fn a_queued_message_goes_at_the_published_qos_with_our_packet_id_and_no_tag() {
        let (bytes, qos) = for_returning_client(&link(MqttVersion::V5), &queued(1, None, 0), 1_234)
            .expect("it goes");
        assert_eq!(qos, 1);
        let publish = read(&bytes, MqttVersion::V5);
        assert_eq!((publish.qos, publish.packet_id), (1, Some(1_234)));
        assert_eq!(publish.payload, Bytes::from_static(b"reading"));
        assert!(publish.properties.user_properties.is_empty());
        // QoS 0 as published: no packet id at all.
        let (bytes, qos) =
            for_returning_client(&link(MqttVersion::V5), &queued(0, None, 0), 9).expect("it goes");
        assert_eq!((qos, read(&bytes, MqttVersion::V5).packet_id), (0, None));
    }

    #[test]
    fn a_queued_message_says_what_is_left_of_its_expiry_or_does_not_go() {
        let v5 = link(MqttVersion::V5);
        let (bytes, _) = for_returning_client(&v5, &queued(2, Some(100), 30), 1_001).unwrap();
        let left = read(&bytes, MqttVersion::V5)
            .properties
            .message_expiry_interval;
        assert!(matches!(left, Some(69..=70)), "{left:?}");
        assert!(for_returning_client(&v5, &queued(2, Some(30), 30), 1_001).is_none());
        assert!(for_returning_client(&v5, &queued(2, Some(30), 31), 1_001).is_none());
        // 3.1.1: no properties at all.
        let (bytes, _) =
            for_returning_client(&link(MqttVersion::V311), &queued(2, Some(100), 1), 1_001)
                .unwrap();
        let publish = read(&bytes, MqttVersion::V311);
        assert_eq!((publish.qos, publish.packet_id), (2, Some(1_001)));
    }

    #[test]
    fn an_unreadable_or_too_large_queued_message_is_dropped() {
        let mut damaged = queued(1, None, 0);
        damaged.packet = damaged.packet.slice(..damaged.packet.len() - 3);
        assert!(for_returning_client(&link(MqttVersion::V5), &damaged, 1_001).is_none());
        let mut small = link(MqttVersion::V5);
        small.maximum_packet_size = Some(10);
        assert!(for_returning_client(&small, &queued(1, None, 0), 1_001).is_none());
    }
}
