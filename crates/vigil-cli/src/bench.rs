//! `vigil bench ingest`: a load generator that measures how fast, and how
//! surely, a fresh `vigil serve` turns MQTT publishes into committed rows.
//!
//! # What is measured, and why this way
//!
//! Vigil's promise is that every message is stored. So the figure that matters
//! is not how fast the broker sends PUBACKs (a broker can acknowledge long
//! before anything reaches the disk) but how fast each message becomes a
//! committed SQLite row. The run is:
//!
//! 1. Start a fresh `vigil serve` (this same executable) with an empty data
//!    directory, on free loopback ports, and read its `ready` line.
//! 2. Subscribe to `GET /api/events?types=flushed` *before* publishing. For
//!    every `flushed` event, note when it arrived here and its
//!    `last_message_id`: every message with an id up to that one is
//!    committed.
//! 3. Publish from N devices (one rumqttc connection each, client id
//!    `bench-dev-<i>`, topic `bench-dev-<i>/telemetry`) M messages in total,
//!    at the chosen QoS. Every payload is JSON of exactly `--payload-size`
//!    bytes carrying the device's sequence number `seq` and `sent_us`, the
//!    wall-clock time (µs) the message was handed to rumqttc.
//! 4. Wait until `GET /api/stats` reports as many stored messages as were
//!    sent (or the count stops growing for 5 s, or the time limit passes).
//! 5. Read every stored message back (`GET /api/messages`, pages of 10000)
//!    and join it with the flushed events. A message's **latency** runs from
//!    its `sent_us` to the arrival of the first `flushed` event whose
//!    `last_message_id` is at least the message's id: it ends when the row is
//!    known to be committed, not at the broker. (The same figure measured to
//!    the server's `committed_at` is reported too; the difference is the
//!    event stream's own delay.) A message written to a socket whose
//!    (device, seq) never shows up is **lost**; lost messages that had been
//!    acknowledged (PUBACK/PUBCOMP) are counted apart, as they break QoS 1/2's
//!    promise. The **stored rate** is the distinct stored messages divided by
//!    the time from the first publish to the commit of the last of them.
//! 6. Read the peak resident memory of `vigil serve` (`VmHWM` in
//!    `/proc/<pid>/status`), then stop it with SIGTERM.
//!
//! With `--vs-mosquitto` the same publisher then runs against Debian's
//! Mosquitto (no persistence) with one subscriber on `#` at the same QoS. Its
//! forwarding rate (messages received by the subscriber / time from the first
//! publish to the last reception) is the yardstick: what a plain broker does
//! with the same load on the same machine, storing nothing.
//!
//! # Server CPU: the ingest cost
//! The CPU time (user + system, all threads) of the server process is read
//! from `/proc/<pid>/stat` when the publishing starts (every device
//! connected) and when the storage wait of step 4 ends. Divided by the
//! distinct bench messages stored, it is the **CPU µs per stored message**:
//! what one message costs the server, whatever else shares the machine. The
//! same is read for Mosquitto (per forwarded message) and for this process.
//! `--vigil-bin` runs another build as the server (e.g. an older commit), so
//! two builds are measured by the same harness.
//!
//! # Alert rules and presence
//! - `--alert-rules N` creates N metric rules on `telemetry.temp` through
//!   `POST /api/alert-rules` before the load (thresholds spread over 21–29 °C,
//!   `for_s` 1–5 s, hysteresis 0.2; see [`bench_rule`]). The bench `temp` is
//!   a sawtooth 20.0 → 29.9 over 100 messages whose phase differs per device,
//!   so whether a rule fires depends on how long a device stays above its
//!   threshold (the per-device message interval). The `alert` events seen on
//!   `GET /api/events?types=presence,alert` until the storage wait ends are
//!   counted by transition.
//! - `--presence-probes K` runs K extra clients during the load (client id
//!   and device `bench-probe-<i>`, topic `bench-probe-<i>/state`). Each, over
//!   and over: opens a raw TCP connection, sends an MQTT 3.1.1 CONNECT and one
//!   QoS 1 PUBLISH, waits for its PUBACK, and resets the connection
//!   (`SO_LINGER` 0: no DISCONNECT, an RST). The device is then offline at
//!   once ("connection lost"); the **presence latency** runs from the reset
//!   (wall clock here) to the arrival of that device's `presence` event with
//!   `to: "offline"` and `at` not before the reset. No event within 5 s is a
//!   **miss**.
//!
//! A server without the alert API (`GET /api/alert-rules` answers 404, as the
//! foundation build does) gets no rules and no latency is measured, with a
//! note; the probes still run, so the load stays the same.
//!
//! # Caveats
//! The publishers, the broker and this reader share the machine's cores, so
//! the figures describe one box, not Vigil alone. Both ends of a latency use
//! the wall clock of the same host. With an unlimited `--rate` the latency is
//! mostly queueing: each device keeps up to `--inflight` messages
//! unacknowledged, so use `--rate` to see latency below saturation.
//!
//! The HTTP client is a minimal HTTP/1.1 one over a `TcpStream` (GET,
//! `Connection: close`, chunked or sized bodies): enough for this contract
//! and cheaper to build than a client crate.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use vigil_core::{now_micros, Micros};

/// Client ids and topics start with this, followed by the device number.
const DEVICE_PREFIX: &str = "bench-dev-";
/// Topics are `bench-dev-<i>` followed by this.
const TOPIC_SUFFIX: &str = "/telemetry";
/// Capacity of each client's request channel. Small, so a message's
/// `sent_us` is taken close to the moment rumqttc can write it.
const REQUEST_CAPACITY: usize = 8;
/// Time allowed for a TCP connect + CONNACK (and for SUBACK).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// rumqttc's network timeout (connect and flush), in seconds.
const NETWORK_TIMEOUT_S: u64 = 10;
/// MQTT keepalive of every bench client.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Time allowed for `vigil serve` to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one whole HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// A count that does not grow for this long has stopped.
const STALL: Duration = Duration::from_secs(5);
/// How often counts are polled while waiting.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Messages per `GET /api/messages` page (the API's maximum).
const PAGE: usize = 10_000;
/// Time a child gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Where Debian installs Mosquitto.
const MOSQUITTO_BIN: &str = "/usr/sbin/mosquitto";
/// Client ids, devices and topics of presence probes start with this.
const PROBE_PREFIX: &str = "bench-probe-";
/// Probe topics are `bench-probe-<i>` followed by this.
const PROBE_TOPIC_SUFFIX: &str = "/state";
/// A probe's drop with no offline event within this long is a miss.
const PROBE_EVENT_WAIT: Duration = Duration::from_secs(5);
/// Time allowed for each step of a probe cycle (connect, CONNACK, PUBACK).
const PROBE_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two cycles of one probe.
const PROBE_PAUSE: Duration = Duration::from_millis(500);
/// Most cycles one probe runs.
const MAX_PROBE_CYCLES: u64 = 1_000;
/// MQTT keepalive a probe announces, in seconds.
const PROBE_KEEP_ALIVE_S: u16 = 30;
/// The metric every bench alert rule watches.
const RULE_METRIC: &str = "telemetry.temp";

/// `vigil bench ingest`: publish from many devices into a fresh `vigil serve`
/// and measure how many messages are stored, how fast, and how late.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Simulated devices: one MQTT connection each (client id `bench-dev-<i>`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub devices: u32,
    /// Messages in total, shared evenly between the devices.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub messages: u64,
    /// QoS of every publish: 0, 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Exact size in bytes of every JSON payload.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub payload_size: u32,
    /// Total publish rate in messages per second; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Unacknowledged QoS 1/2 publishes allowed per client.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// Hard time limit in seconds, per broker, for publishing and waiting for
    /// the messages to arrive; what arrived by then is reported.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// Then run the same load through Debian's Mosquitto (one subscriber on
    /// `#`) and compare its forwarding rate with Vigil's stored rate.
    #[arg(long)]
    pub vs_mosquitto: bool,
    /// Print one JSON object on stdout instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// Create this many metric alert rules on `telemetry.temp` before the
    /// load, and count the alert events during it.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub alert_rules: u32,
    /// Run this many presence probes during the load (connect, publish one
    /// QoS 1 message, reset the connection; repeat) and measure how soon
    /// each device's offline event arrives.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub presence_probes: u32,
    /// Run this binary as the server (`<PATH> serve ...`) instead of this
    /// executable, e.g. a build of an older commit.
    #[arg(long, value_name = "PATH")]
    pub vigil_bin: Option<PathBuf>,
    /// Publish into a broker already running at this address (the desktop
    /// app's, another Vigil, any MQTT broker) instead of a fresh `vigil
    /// serve`, and report only what was sent and acknowledged: what the
    /// broker did with it is for the caller to measure.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["vs_mosquitto", "alert_rules", "presence_probes", "vigil_bin"])]
    pub broker: Option<SocketAddr>,
}

/// What the Vigil run does besides the load.
#[derive(Debug, Clone, Default)]
struct VigilOptions {
    /// The server binary; `None` = this executable.
    bin: Option<PathBuf>,
    alert_rules: u32,
    presence_probes: u32,
}

impl VigilOptions {
    /// Checks `--vigil-bin`.
    fn from_args(args: &IngestArgs) -> Result<Self> {
        if let Some(bin) = &args.vigil_bin {
            if !bin.is_file() {
                bail!(
                    "--vigil-bin {}: no such file (give the path of a built `vigil` binary)",
                    bin.display()
                );
            }
        }
        Ok(VigilOptions {
            bin: args.vigil_bin.clone(),
            alert_rules: args.alert_rules,
            presence_probes: args.presence_probes,
        })
    }
}

/// Runs `vigil bench ingest`.
pub async fn run_ingest(args: IngestArgs) -> Result<()> {
    let plan = LoadPlan::from_args(&args)?;
    if let Some(broker) = args.broker {
        return publish_only(broker, &plan, &args).await;
    }
    let options = VigilOptions::from_args(&args)?;
    // Fail before the long Vigil run, not after it.
    let mosquitto = if args.vs_mosquitto {
        Some(find_mosquitto()?)
    } else {
        None
    };
    let workdir = tempfile::Builder::new()
        .prefix("vigil-bench-")
        .tempdir()
        .context("cannot create a temporary directory for the benchmark")?;
    let limit = Duration::from_secs(args.timeout);

    let vigil = bench_vigil(&plan, &options, workdir.path(), limit).await?;
    let mosquitto = match mosquitto {
        Some(bin) => Some(bench_mosquitto(&bin, &plan, workdir.path(), limit).await?),
        None => None,
    };
    let report = Report::new(&plan, &options, args.timeout, vigil, mosquitto);
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).context("cannot write the report as JSON")?;
        println!("{text}");
    } else {
        print!("{}", report.human());
    }
    let path = workdir.path().to_owned();
    workdir.close().with_context(|| {
        format!(
            "cannot remove the benchmark's temporary directory {}",
            path.display()
        )
    })
}

/// `--broker`: the load alone, into a broker something else runs.
async fn publish_only(broker: SocketAddr, plan: &LoadPlan, args: &IngestArgs) -> Result<()> {
    progress(&format!(
        "publishing {} messages from {} devices into {broker}",
        plan.messages, plan.devices
    ));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let outcome = tokio::select! {
        r = run_load(broker, plan, deadline, None) => r?,
        _ = tokio::signal::ctrl_c() => bail!(INTERRUPTED),
    };
    let seconds = match (outcome.first_publish_us(), outcome.last_ack_us()) {
        (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e6,
        _ => 0.0,
    };
    let acked = outcome.acked();
    // QoS 0 has no acknowledgement: what was written is what was sent.
    let (done, verb) = if plan.qos_number() == 0 {
        (outcome.written(), "written")
    } else {
        (acked, "acknowledged")
    };
    let rate = if seconds > 0.0 {
        done as f64 / seconds
    } else {
        0.0
    };
    let errors = outcome.errors();
    if args.json {
        let report = serde_json::json!({
            "broker": broker.to_string(),
            "devices": plan.devices,
            "qos": plan.qos_number(),
            "planned": outcome.planned(),
            "written": outcome.written(),
            "acknowledged": acked,
            "seconds": seconds,
            "rate": rate,
            "timed_out": outcome.timed_out(),
            "errors": errors,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{broker}: {} devices, QoS {}: {} of {} messages {verb} in {seconds:.1} s ({rate:.0} msg/s){}",
            plan.devices,
            plan.qos_number(),
            done,
            outcome.planned(),
            if outcome.timed_out() { ", stopped by --timeout" } else { "" }
        );
        for e in &errors {
            println!("  {e}");
        }
    }
    Ok(())
}

/// Prints a progress line on stderr (stdout holds only the report).
fn progress(line: &str) {
    eprintln!("vigil bench: {line}");
}

// ---------------------------------------------------------------------------
// The load: what to publish, and the one publisher used for every broker.
// ---------------------------------------------------------------------------

/// What every run publishes, derived from the flags.
#[derive(Debug, Clone)]
struct LoadPlan {
    devices: u32,
    messages: u64,
    qos: QoS,
    payload_size: usize,
    /// Total messages per second; 0 = unlimited.
    rate: u64,
    inflight: u16,
}

impl LoadPlan {
    /// Checks the flags, including that the payload fits `--payload-size`.
    fn from_args(args: &IngestArgs) -> Result<Self> {
        let qos = match args.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => bail!("--qos must be 0, 1 or 2, not {q}"),
        };
        let plan = LoadPlan {
            devices: args.devices,
            messages: args.messages,
            qos,
            payload_size: args.payload_size as usize,
            rate: args.rate,
            inflight: args.inflight,
        };
        // Device 0 has the largest share, hence the longest `seq`.
        let largest_seq = plan.share(0).saturating_sub(1);
        let mut probe = Vec::new();
        if let Err(needed) =
            write_payload(&mut probe, largest_seq, 0, now_micros(), plan.payload_size)
        {
            bail!(
                "--payload-size {} is too small: the JSON payload (seq, sent_us, temp) needs at least {needed} bytes",
                plan.payload_size
            );
        }
        Ok(plan)
    }

    /// How many messages device `device` publishes.
    fn share(&self, device: u32) -> u64 {
        let devices = u64::from(self.devices);
        self.messages / devices + u64::from(u64::from(device) < self.messages % devices)
    }

    /// The QoS as a number.
    fn qos_number(&self) -> u8 {
        qos_number(self.qos)
    }

    /// Largest MQTT packet a bench client sends or accepts.
    fn max_packet(&self) -> usize {
        (self.payload_size + 1024).max(64 * 1024)
    }

    /// Options shared by every bench client.
    fn mqtt_options(&self, client_id: String, broker: SocketAddr) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        options
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_inflight(self.inflight)
            .set_max_packet_size(self.max_packet(), self.max_packet());
        options
    }
}

/// The numeric QoS.
fn qos_number(qos: QoS) -> u8 {
    match qos {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// How many devices connect at once (see `run_load`).
const CONNECT_WAVE: usize = 200;

/// Waits for one device's connection; a failure is noted in `refused`.
async fn wait_ready(
    device: usize,
    ready: oneshot::Receiver<Result<(), String>>,
    refused: &mut Vec<String>,
) {
    match ready.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => refused.push(format!("{DEVICE_PREFIX}{device}: {e}")),
        Err(_) => refused.push(format!(
            "{DEVICE_PREFIX}{device}: its connection task ended"
        )),
    }
}

/// Creates a client and its event loop for `broker`, with Nagle off (the
/// event loop flushes every request anyway; Nagle would only add delays).
fn new_client(plan: &LoadPlan, client_id: String, broker: SocketAddr) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) =
        AsyncClient::new(plan.mqtt_options(client_id, broker), REQUEST_CAPACITY);
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(NETWORK_TIMEOUT_S);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Topic of device `device`.
fn device_topic(device: u32) -> String {
    format!("{DEVICE_PREFIX}{device}{TOPIC_SUFFIX}")
}

/// The device number in a bench topic, or `None` for any other topic.
fn topic_device(topic: &str) -> Option<u32> {
    topic
        .strip_prefix(DEVICE_PREFIX)?
        .strip_suffix(TOPIC_SUFFIX)?
        .parse()
        .ok()
}

/// Where device `device`'s `temp` sawtooth starts (0..100): devices are
/// spread over the cycle, so even a short run crosses every threshold of
/// `--alert-rules` somewhere, and the devices do not cross them in lockstep.
fn temp_phase(device: u32) -> u64 {
    u64::from(device) * 37 % 100
}

/// Writes the JSON payload of message `seq` into `buf` (cleared first), padded
/// to exactly `size` bytes: with a `"pad"` field when there is room for one,
/// else with spaces before the closing brace. `Err(n)`: it needs `n` bytes.
///
/// `temp` is a sawtooth 20.0 → 29.9 over 100 messages, shifted by `phase`
/// (see [`temp_phase`]).
///
/// `{"seq":123,"sent_us":1700000000000000,"temp":21.5,"pad":"xxxx"}`
fn write_payload(
    buf: &mut Vec<u8>,
    seq: u64,
    phase: u64,
    sent_us: Micros,
    size: usize,
) -> Result<(), usize> {
    const PAD_FIELD: &[u8] = b",\"pad\":\"\"";
    buf.clear();
    // A plausible metric that changes: 20.0 ..= 29.9, always four characters.
    let tenths = 200 + seq.wrapping_add(phase) % 100;
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        "{{\"seq\":{seq},\"sent_us\":{sent_us},\"temp\":{}.{}",
        tenths / 10,
        tenths % 10
    );
    let needed = buf.len() + 1;
    if needed > size {
        return Err(needed);
    }
    let room = size - needed;
    if room >= PAD_FIELD.len() {
        buf.extend_from_slice(b",\"pad\":\"");
        buf.resize(buf.len() + room - PAD_FIELD.len(), b'x');
        buf.push(b'"');
    } else {
        buf.resize(buf.len() + room, b' ');
    }
    buf.push(b'}');
    Ok(())
}

/// The fields the bench reads back from a stored payload.
#[derive(Debug, Deserialize)]
struct BenchPayload {
    seq: u64,
    sent_us: Micros,
}

/// When message `seq` of `device` is due, with `--rate`: messages of all
/// devices interleave evenly, message `seq * devices + device` at
/// `start + that / rate` seconds.
fn due_at(plan: &LoadPlan, start: Instant, device: u32, seq: u64) -> Option<Instant> {
    if plan.rate == 0 {
        return None;
    }
    let index = u128::from(seq) * u128::from(plan.devices) + u128::from(device);
    let nanos = index * 1_000_000_000 / u128::from(plan.rate);
    Some(start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
}

/// Sets bit `i`.
fn bit_set(bits: &mut [u64], i: u64) {
    if let Some(word) = bits.get_mut((i / 64) as usize) {
        *word |= 1 << (i % 64);
    }
}

/// Whether bit `i` is set.
fn bit_get(bits: &[u64], i: u64) -> bool {
    bits.get((i / 64) as usize)
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// What one device's connection saw.
#[derive(Debug, Default)]
struct DeviceOutcome {
    /// Messages it was meant to publish.
    share: u64,
    /// Messages written to the socket; they are seqs `0..written`.
    written: u64,
    /// PUBACKs (QoS 1) or PUBCOMPs (QoS 2).
    acked: u64,
    /// Bit `seq` set: that message was acknowledged.
    acked_seqs: Vec<u64>,
    /// `sent_us` of its first message.
    first_sent_us: Option<Micros>,
    /// When its last acknowledgement (QoS 0: its last write) happened.
    last_ack_us: Option<Micros>,
    /// Ended by the time limit.
    timed_out: bool,
    /// Why the connection or the publisher stopped early.
    error: Option<String>,
}

/// What all devices saw.
#[derive(Debug)]
struct LoadOutcome {
    devices: Vec<DeviceOutcome>,
}

impl LoadOutcome {
    fn sum(&self, f: impl Fn(&DeviceOutcome) -> u64) -> u64 {
        self.devices.iter().map(f).sum()
    }
    fn planned(&self) -> u64 {
        self.sum(|d| d.share)
    }
    fn written(&self) -> u64 {
        self.sum(|d| d.written)
    }
    fn acked(&self) -> u64 {
        self.sum(|d| d.acked)
    }
    /// `sent_us` of the very first publish.
    fn first_publish_us(&self) -> Option<Micros> {
        self.devices.iter().filter_map(|d| d.first_sent_us).min()
    }
    /// When the last acknowledgement (QoS 0: the last write) happened.
    fn last_ack_us(&self) -> Option<Micros> {
        self.devices.iter().filter_map(|d| d.last_ack_us).max()
    }
    fn timed_out(&self) -> bool {
        self.devices.iter().any(|d| d.timed_out)
    }
    /// One line per distinct kind of error, with how many devices had it.
    fn errors(&self) -> Vec<String> {
        let mut errors: Vec<(String, usize)> = Vec::new();
        for e in self.devices.iter().filter_map(|d| d.error.as_ref()) {
            match errors.iter_mut().find(|(text, _)| text == e) {
                Some((_, n)) => *n += 1,
                None => errors.push((e.clone(), 1)),
            }
        }
        errors
            .into_iter()
            .map(|(e, n)| format!("{n} device(s): {e}"))
            .collect()
    }
}

/// Publishes `plan` into the broker at `broker` and returns what each device
/// saw; used for Vigil and Mosquitto alike. Every client connects first; the
/// publishing starts when all are connected. Ends when every message is
/// acknowledged (QoS 0: written) or at `deadline`. `started` (if any) is told
/// when every device is connected and the publishing starts.
async fn run_load(
    broker: SocketAddr,
    plan: &LoadPlan,
    deadline: Instant,
    started: Option<oneshot::Sender<()>>,
) -> Result<LoadOutcome> {
    let count = plan.devices as usize;
    let mut connections = JoinSet::new();
    let mut readies = Vec::with_capacity(count.min(CONNECT_WAVE));
    let mut clients = Vec::with_capacity(count);
    let mut early_refused = Vec::new();
    for device in 0..plan.devices {
        let (client, eventloop) = new_client(plan, format!("{DEVICE_PREFIX}{device}"), broker);
        let (ready_tx, ready_rx) = oneshot::channel();
        let spec = ConnectionSpec {
            share: plan.share(device),
            qos: plan.qos,
            inflight: plan.inflight,
        };
        let disconnect = client.clone();
        connections.spawn(async move {
            (
                device,
                drive_connection(spec, eventloop, disconnect, ready_tx, deadline).await,
            )
        });
        readies.push(ready_rx);
        clients.push(client);
        // Connect in waves: the embedded router registers logins one at a
        // time (about 150 a second here), and 10,000 devices connecting at
        // once would wait past every timeout. The connect phase is not
        // measured.
        if readies.len() == CONNECT_WAVE {
            let first = device as usize + 1 - CONNECT_WAVE;
            for (k, ready) in readies.drain(..).enumerate() {
                wait_ready(first + k, ready, &mut early_refused).await;
            }
        }
    }
    let mut refused = Vec::new();
    for (device, ready) in readies.drain(..).enumerate() {
        wait_ready(device, ready, &mut refused).await;
    }
    refused.splice(0..0, early_refused);
    if !refused.is_empty() {
        connections.abort_all();
        bail!(
            "{} of {count} devices could not connect to {broker}, e.g. {}",
            refused.len(),
            refused
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    let start = Instant::now();
    if let Some(started) = started {
        let _ = started.send(());
    }
    let mut publishers = JoinSet::new();
    for (device, client) in (0..plan.devices).zip(clients) {
        let plan = plan.clone();
        publishers.spawn(async move {
            (
                device,
                publish_share(&plan, device, client, start, deadline).await,
            )
        });
    }

    let mut devices: Vec<DeviceOutcome> = (0..count).map(|_| DeviceOutcome::default()).collect();
    while let Some(joined) = publishers.join_next().await {
        let (device, published) = joined.context("a publisher task failed")?;
        if let Some(d) = devices.get_mut(device as usize) {
            d.first_sent_us = published.first_sent_us;
            d.timed_out |= published.timed_out;
            d.error = published.error;
        }
    }
    while let Some(joined) = connections.join_next().await {
        let (device, seen) = joined.context("a connection task failed")?;
        if let Some(d) = devices.get_mut(device as usize) {
            d.share = seen.share;
            d.written = seen.written;
            d.acked = seen.acked;
            d.acked_seqs = seen.acked_seqs;
            d.last_ack_us = seen.last_ack_us;
            d.timed_out |= seen.timed_out;
            // The connection's error explains the publisher's.
            if seen.error.is_some() {
                d.error = seen.error;
            }
        }
    }
    Ok(LoadOutcome { devices })
}

/// What a publisher task did.
struct Published {
    first_sent_us: Option<Micros>,
    timed_out: bool,
    error: Option<String>,
}

/// Hands device `device`'s share of messages to rumqttc, paced by `--rate`.
/// Allocates per message only what rumqttc takes ownership of: the payload
/// and the topic string.
async fn publish_share(
    plan: &LoadPlan,
    device: u32,
    client: AsyncClient,
    start: Instant,
    deadline: Instant,
) -> Published {
    let topic = device_topic(device);
    let phase = temp_phase(device);
    let mut out = Published {
        first_sent_us: None,
        timed_out: false,
        error: None,
    };
    for seq in 0..plan.share(device) {
        if let Some(due) = due_at(plan, start, device, seq) {
            if due >= deadline {
                out.timed_out = true;
                break;
            }
            if due > Instant::now() {
                sleep_until(due).await;
            }
        }
        let sent_us = now_micros();
        let mut payload = Vec::with_capacity(plan.payload_size);
        if let Err(needed) = write_payload(&mut payload, seq, phase, sent_us, plan.payload_size) {
            out.error = Some(format!("payload of seq {seq} needs {needed} bytes"));
            break;
        }
        match timeout_at(
            deadline,
            client.publish_bytes(topic.as_str(), plan.qos, false, Bytes::from(payload)),
        )
        .await
        {
            Ok(Ok(())) => {
                out.first_sent_us.get_or_insert(sent_us);
            }
            Ok(Err(_)) => {
                out.error = Some("its connection closed".to_owned());
                break;
            }
            Err(_) => {
                out.timed_out = true;
                break;
            }
        }
    }
    out
}

/// What a connection task needs to know.
struct ConnectionSpec {
    share: u64,
    qos: QoS,
    inflight: u16,
}

/// What a connection task saw.
struct ConnectionSeen {
    share: u64,
    written: u64,
    acked: u64,
    acked_seqs: Vec<u64>,
    last_ack_us: Option<Micros>,
    timed_out: bool,
    error: Option<String>,
}

/// Polls one client's event loop: connects (reporting on `ready`), then
/// counts writes and acknowledgements until the device's share is done or
/// `deadline`, then disconnects. Does not reconnect: a broken connection is
/// a result.
async fn drive_connection(
    spec: ConnectionSpec,
    mut eventloop: EventLoop,
    client: AsyncClient,
    ready: oneshot::Sender<Result<(), String>>,
    deadline: Instant,
) -> ConnectionSeen {
    let acking = spec.qos != QoS::AtMostOnce;
    let mut seen = ConnectionSeen {
        share: spec.share,
        written: 0,
        acked: 0,
        acked_seqs: if acking {
            vec![0; spec.share.div_ceil(64) as usize]
        } else {
            Vec::new()
        },
        last_ack_us: None,
        timed_out: false,
        error: None,
    };
    let connected = match timeout(CONNECT_TIMEOUT, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(()),
        Ok(Ok(other)) => Err(format!("expected a CONNACK, got {other:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no CONNACK within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    let failed = connected.is_err();
    // The receiver only goes away when the whole load was abandoned.
    let _ = ready.send(connected);
    if failed {
        return seen;
    }

    // rumqttc takes requests in order and numbers publishes 1..=inflight, so
    // the n-th `Outgoing::Publish` is seq n-1, and an ack's packet id maps
    // back to the seq last written under it.
    let mut seq_of_pkid = vec![u64::MAX; usize::from(spec.inflight) + 1];
    loop {
        let done = if acking { seen.acked } else { seen.written };
        if done >= spec.share {
            break;
        }
        let event = match timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(event)) => event,
            Ok(Err(e)) => {
                seen.error = Some(format!("connection lost: {e}"));
                return seen;
            }
            Err(_) => {
                seen.timed_out = true;
                return seen;
            }
        };
        let acked_pkid = match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(slot) = seq_of_pkid.get_mut(usize::from(pkid)) {
                    *slot = seen.written;
                }
                seen.written += 1;
                if !acking {
                    seen.last_ack_us = Some(now_micros());
                }
                None
            }
            Event::Incoming(Packet::PubAck(ack)) if spec.qos == QoS::AtLeastOnce => Some(ack.pkid),
            Event::Incoming(Packet::PubComp(comp)) if spec.qos == QoS::ExactlyOnce => {
                Some(comp.pkid)
            }
            _ => None,
        };
        if let Some(pkid) = acked_pkid {
            seen.acked += 1;
            seen.last_ack_us = Some(now_micros());
            if let Some(&seq) = seq_of_pkid.get(usize::from(pkid)) {
                bit_set(&mut seen.acked_seqs, seq);
            }
        }
    }
    // Say goodbye properly; the figures are already taken.
    if client.try_disconnect().is_ok() {
        let _ = timeout(Duration::from_secs(2), async {
            while let Ok(event) = eventloop.poll().await {
                if event == Event::Outgoing(Outgoing::Disconnect) {
                    break;
                }
            }
        })
        .await;
    }
    seen
}

/// Polls `count` until it reaches `target`, stops growing for [`STALL`], or
/// `deadline` passes. Returns the last count and how the wait ended.
async fn wait_for_count<F, Fut>(
    target: u64,
    deadline: Instant,
    mut count: F,
) -> Result<(u64, WaitEnd)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut last = count().await?;
    let mut last_change = Instant::now();
    loop {
        if last >= target {
            return Ok((last, WaitEnd::Reached));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok((last, WaitEnd::TimedOut));
        }
        if now.duration_since(last_change) >= STALL {
            return Ok((last, WaitEnd::Stalled));
        }
        sleep(POLL_EVERY).await;
        let current = count().await?;
        if current != last {
            last = current;
            last_change = Instant::now();
        }
    }
}

/// How a wait for a count ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitEnd {
    Reached,
    Stalled,
    TimedOut,
}

// ---------------------------------------------------------------------------
// Vigil
// ---------------------------------------------------------------------------

/// The ready line of `vigil serve`.
#[derive(Debug, Deserialize)]
pub(crate) struct ReadyLine {
    event: String,
    mqtt: SocketAddr,
    pub(crate) http: SocketAddr,
}

/// A running `vigil serve`; killed (SIGKILL) if dropped without [`stop`].
///
/// [`stop`]: ServeChild::stop
pub(crate) struct ServeChild {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) ready: ReadyLine,
}

impl ServeChild {
    /// Starts `<bin> serve` (default: this executable) on free loopback
    /// ports with `data_dir`, its stderr going to `log`, and waits for its
    /// ready line. `VIGIL_*` variables are not passed on: the flags alone
    /// describe the instance.
    async fn start(bin: Option<&Path>, data_dir: &Path, log: &Path) -> Result<Self> {
        Self::start_with(bin, data_dir, log, &[]).await
    }

    /// [`start`](Self::start) with more arguments for `serve` (`--config FILE`).
    pub(crate) async fn start_with(
        bin: Option<&Path>,
        data_dir: &Path,
        log: &Path,
        extra: &[std::ffi::OsString],
    ) -> Result<Self> {
        let exe = match bin {
            Some(bin) => bin.to_owned(),
            None => std::env::current_exe()
                .context("cannot start vigil serve: cannot find this executable")?,
        };
        let log_file = File::create(log).with_context(|| {
            format!("cannot start vigil serve: cannot create {}", log.display())
        })?;
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--mqtt-listen",
                "127.0.0.1:0",
                "--ws-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("VIGIL_") {
                command.env_remove(name);
            }
        }
        // TLS listeners on loopback too; as variables, which a build from
        // before they existed (--vigil-bin) ignores.
        command
            .env("VIGIL_TLS_LISTEN", "127.0.0.1:0")
            .env("VIGIL_WSS_LISTEN", "127.0.0.1:0");
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start vigil serve ({})", exe.display()))?;
        let pid = child
            .id()
            .context("cannot start vigil serve: it exited at once")?;
        let stdout = child
            .stdout
            .take()
            .context("cannot start vigil serve: no pipe to its stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match timeout(READY_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = match timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(Ok(status)) => status.to_string(),
                    _ => "status unknown".to_owned(),
                };
                bail!(
                    "vigil serve exited ({status}) before it was ready{}",
                    log_tail(log)
                );
            }
            Ok(Err(e)) => bail!(
                "cannot start vigil serve: cannot read its stdout: {e}{}",
                log_tail(log)
            ),
            Err(_) => bail!(
                "vigil serve printed no ready line within {} s{}",
                READY_TIMEOUT.as_secs(),
                log_tail(log)
            ),
        };
        let ready: ReadyLine = serde_json::from_str(&line).with_context(|| {
            format!(
                "cannot start vigil serve: its first line on stdout is not the ready line: {line}"
            )
        })?;
        if ready.event != "ready" {
            bail!("cannot start vigil serve: expected the ready line, got {line}");
        }
        // Keep reading stdout, so that a stray line never meets a closed pipe.
        let mut rest = lines.into_inner();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        });
        Ok(ServeChild { child, pid, ready })
    }

    /// Peak resident memory so far, in KiB (`VmHWM`).
    fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.pid)
    }

    /// SIGTERM, then wait (it flushes everything first); killed after [`STOP_GRACE`].
    pub(crate) async fn stop(mut self) -> Result<ExitStatus> {
        terminate(&mut self.child, "vigil serve").await
    }
}

/// `VmHWM` of process `pid` in KiB, from `/proc/<pid>/status`.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM:` value (KiB) of a `/proc/<pid>/status` text.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sends SIGTERM to `child` and waits for it; kills it if it takes longer
/// than [`STOP_GRACE`].
async fn terminate(child: &mut Child, name: &str) -> Result<ExitStatus> {
    if let Some(status) = child
        .try_wait()
        .with_context(|| format!("cannot check whether {name} still runs"))?
    {
        return Ok(status);
    }
    let signalled = match child.id() {
        Some(pid) => Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success()),
        None => false,
    };
    if !signalled {
        child
            .start_kill()
            .with_context(|| format!("cannot stop {name}"))?;
    }
    match timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.with_context(|| format!("cannot wait for {name} to exit")),
        Err(_) => {
            child
                .start_kill()
                .with_context(|| format!("cannot kill {name}"))?;
            let _ = timeout(Duration::from_secs(5), child.wait()).await;
            bail!(
                "{name} did not exit within {} s of SIGTERM, so it was killed",
                STOP_GRACE.as_secs()
            )
        }
    }
}

/// The error of a run stopped by Ctrl-C.
const INTERRUPTED: &str = "interrupted";

/// `error` with the last lines of `log` appended, unless it is Ctrl-C.
fn with_log(error: anyhow::Error, log: &Path) -> anyhow::Error {
    if error.to_string() == INTERRUPTED {
        return error;
    }
    anyhow!("{error:#}{}", log_tail(log))
}

/// The last lines of a log file, formatted to be appended to an error.
fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(20)..];
    format!(
        "\n--- last lines of {} ---\n{}",
        path.display(),
        tail.join("\n")
    )
}

/// Everything measured on Vigil.
#[derive(Debug)]
struct VigilRun {
    load: LoadOutcome,
    analysis: Analysis,
    /// The stored count when the wait for storage ended, and how it ended.
    stored_count: u64,
    wait_end: WaitEnd,
    flushes: usize,
    resyncs: u64,
    foreign_rows: u64,
    /// Stored messages of the presence probes.
    probe_rows: u64,
    peak_rss_kib: Option<u64>,
    /// The server's CPU when the publishing started and when the storage
    /// wait ended; the same for this process.
    server_cpu: Option<(CpuSample, CpuSample)>,
    bench_cpu: Option<(CpuSample, CpuSample)>,
    alerts: Option<AlertsRun>,
    presence: Option<PresenceRun>,
    warnings: Vec<String>,
}

/// What `--alert-rules` did.
#[derive(Debug, Default)]
struct AlertsRun {
    requested: u32,
    created: u32,
    /// Why no rule was created, if none was.
    skipped: Option<String>,
    events: Option<AlertTally>,
}

/// `alert` events by transition.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct AlertTally {
    fired: u64,
    acknowledged: u64,
    cleared: u64,
    other: u64,
}

/// What `--presence-probes` did.
#[derive(Debug, Default)]
struct PresenceRun {
    probes: u32,
    /// Latency was not measured, and why.
    skipped: Option<String>,
    /// Cycles that ended in a reset after a PUBACK.
    drops: u64,
    /// Drops with a matching offline event, µs from drop to arrival, sorted.
    latency_us: Vec<u64>,
    /// Drops without an event within [`PROBE_EVENT_WAIT`].
    missed: u64,
    /// Cycles that failed before the drop, and the distinct errors.
    failed: u64,
    errors: Vec<String>,
    /// PUBLISHes written by the probes (they are stored too).
    published: u64,
    /// `presence` events seen in all (any device) and `resync`s of the
    /// presence/alert stream.
    presence_events: u64,
    resyncs: u64,
}

/// Starts `vigil serve` in `dir`, measures it, and stops it whatever happened.
async fn bench_vigil(
    plan: &LoadPlan,
    options: &VigilOptions,
    dir: &Path,
    limit: Duration,
) -> Result<VigilRun> {
    let data_dir = dir.join("vigil-data");
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!(
            "cannot start vigil serve: cannot create {}",
            data_dir.display()
        )
    })?;
    let log = dir.join("vigil-serve.log");
    let serve = ServeChild::start(options.bin.as_deref(), &data_dir, &log).await?;
    progress(&format!(
        "vigil serve is ready (mqtt {}, http {})",
        serve.ready.mqtt, serve.ready.http
    ));

    let measured = tokio::select! {
        r = measure_vigil(plan, options, serve.pid, &serve.ready, limit) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!(INTERRUPTED)),
    };
    let peak_rss_kib = serve.peak_rss_kib();
    let stopped = serve.stop().await;
    let mut run = measured.map_err(|e| with_log(e, &log))?;
    run.peak_rss_kib = peak_rss_kib;
    match stopped {
        Ok(status) if status.success() => {}
        Ok(status) => run.warnings.push(format!(
            "vigil serve exited with {status} after SIGTERM{}",
            log_tail(&log)
        )),
        Err(e) => run.warnings.push(format!("{e:#}")),
    }
    Ok(run)
}

/// Steps 2 to 5 of the module doc, against a running `vigil serve` (process
/// `pid`), with the alert rules and presence probes of `options`.
async fn measure_vigil(
    plan: &LoadPlan,
    options: &VigilOptions,
    pid: u32,
    ready: &ReadyLine,
    limit: Duration,
) -> Result<VigilRun> {
    let deadline = Instant::now() + limit;
    let http = ready.http;
    let (mut flush_rx, _sse) = open_event_stream(http, "flushed")
        .await
        .context("cannot subscribe to vigil serve's flushed events")?;
    let mut warnings = Vec::new();

    // Alert rules and the presence/alert event stream, if the server has them.
    let wants_events = options.alert_rules > 0 || options.presence_probes > 0;
    let no_api = if wants_events {
        alert_api_missing(http, options).await?
    } else {
        None
    };
    let mut alerts = (options.alert_rules > 0).then(|| AlertsRun {
        requested: options.alert_rules,
        ..AlertsRun::default()
    });
    if let Some(alerts) = &mut alerts {
        match &no_api {
            Some(why) => alerts.skipped = Some(why.clone()),
            None => {
                progress(&format!(
                    "creating {} alert rules on {RULE_METRIC}",
                    options.alert_rules
                ));
                for i in 0..options.alert_rules {
                    create_rule(http, &bench_rule(i, options.alert_rules)).await?;
                    alerts.created += 1;
                }
            }
        }
    }
    let probes = options.presence_probes as usize;
    let mut probe_txs = Vec::with_capacity(probes);
    let mut probe_rxs = Vec::with_capacity(probes);
    for _ in 0..probes {
        let (tx, rx) = mpsc::unbounded_channel();
        probe_txs.push(tx);
        // Without presence events there is nothing to wait for.
        probe_rxs.push(no_api.is_none().then_some(rx));
    }
    let tally = if wants_events && no_api.is_none() {
        let (events_rx, events_sse) = open_event_stream(http, "presence,alert")
            .await
            .context("cannot subscribe to vigil serve's presence and alert events")?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tally_events(events_rx, probe_txs, stopped));
        Some((stop, task, events_sse))
    } else {
        None
    };

    progress(&format!(
        "publishing {} messages from {} devices at QoS {} into vigil serve{}",
        plan.messages,
        plan.devices,
        plan.qos_number(),
        if probes > 0 {
            format!(", with {probes} presence probes")
        } else {
            String::new()
        }
    ));
    let (stop_probes, probes_stopped) = watch::channel(false);
    let (started_tx, started_rx) = oneshot::channel();
    let mqtt = ready.mqtt;
    let (load, side) = tokio::join!(run_load(mqtt, plan, deadline, Some(started_tx)), async {
        started_rx.await.ok()?;
        let server = CpuSample::take(Some(pid));
        let bench = CpuSample::take(Some(std::process::id()));
        let mut tasks = JoinSet::new();
        for (i, events) in probe_rxs.into_iter().enumerate() {
            let stop = probes_stopped.clone();
            // Spread the probes over one pause.
            let delay = PROBE_PAUSE * i as u32 / probes.max(1) as u32;
            tasks.spawn(run_probe(i, mqtt, events, stop, delay, deadline));
        }
        Some((server, bench, tasks))
    });
    let _ = stop_probes.send(true);
    let load = load?;
    let (server_start, bench_start, mut probe_tasks) = side.context("the load never started")?;
    let mut presence = (probes > 0).then(|| PresenceRun {
        probes: options.presence_probes,
        skipped: no_api.clone(),
        ..PresenceRun::default()
    });
    while let Some(joined) = probe_tasks.join_next().await {
        let outcome = joined.context("a presence probe task failed")?;
        if let Some(p) = &mut presence {
            p.add(outcome);
        }
    }
    let probe_published = presence.as_ref().map_or(0, |p| p.published);

    let written = load.written();
    progress(&format!(
        "{written} messages sent; waiting until vigil serve has stored them"
    ));
    let (stored_count, wait_end) =
        wait_for_count(written + probe_published, deadline, || async move {
            let stats: ApiStats = http_get_json(http, "/api/stats").await?;
            Ok(stats.messages)
        })
        .await?;
    let server_end = CpuSample::take(Some(pid));
    let bench_end = CpuSample::take(Some(std::process::id()));

    if let Some((stop, task, _sse)) = tally {
        let _ = stop.send(());
        let seen = task.await.context("the event counting task failed")?;
        if let Some(alerts) = &mut alerts {
            alerts.events = Some(seen.alerts);
        }
        if let Some(p) = &mut presence {
            p.presence_events = seen.presence_events;
            p.resyncs = seen.resyncs;
        }
        if let Some(ended) = seen.ended {
            warnings.push(format!(
                "the presence/alert event stream ended early: {ended}"
            ));
        }
        if seen.resyncs > 0 {
            warnings.push(format!(
                "the presence/alert event stream resynced {} time(s): events were missed",
                seen.resyncs
            ));
        }
    }

    progress("reading the stored messages back");
    let back = read_back(http).await?;

    // Every row needs the flushed event that covers it: give the event
    // stream a moment to catch up with the last commit.
    let mut flushes = FlushLog::default();
    flushes.drain(&mut flush_rx);
    if let Some(max_id) = back.rows.iter().map(|r| r.id).max() {
        let wait_until = Instant::now() + STALL;
        while flushes.max_last_id() < max_id && flushes.ended.is_none() {
            match timeout_at(wait_until, flush_rx.recv()).await {
                Ok(Some(note)) => flushes.note(note),
                Ok(None) | Err(_) => break,
            }
        }
    }
    flushes.drain(&mut flush_rx);

    let analysis = analyse(
        &load,
        plan.qos != QoS::AtMostOnce,
        back.rows,
        &flushes.records,
    );
    if let Some(ended) = &flushes.ended {
        warnings.push(format!("the flushed event stream ended early: {ended}"));
    }
    Ok(VigilRun {
        load,
        analysis,
        stored_count,
        wait_end,
        flushes: flushes.records.len(),
        resyncs: flushes.resyncs,
        foreign_rows: back.foreign,
        probe_rows: back.probes,
        peak_rss_kib: None,
        server_cpu: server_start.zip(server_end),
        bench_cpu: bench_start.zip(bench_end),
        alerts,
        presence,
        warnings,
    })
}

/// `None` if the server has the alert API (`GET /api/alert-rules` answers
/// 200), else why not, in words.
async fn alert_api_missing(http: SocketAddr, options: &VigilOptions) -> Result<Option<String>> {
    let (status, body) = http_request(http, "GET", "/api/alert-rules", None).await?;
    let server = match &options.bin {
        Some(bin) => bin.display().to_string(),
        None => "this vigil".to_owned(),
    };
    match status {
        200 => Ok(None),
        404 => Ok(Some(format!(
            "the server ({server}) has no alert or presence API (GET /api/alert-rules answered 404): an older build?"
        ))),
        _ => bail!(
            "GET /api/alert-rules answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ),
    }
}

/// Alert rule `i` of `count` (see the module doc): threshold spread evenly
/// from 29.0 (rule 0) down to 21.0 (the last), `for_s` 1, 2, .. 5, 1, ..,
/// hysteresis 0.2, every device.
fn bench_rule(i: u32, count: u32) -> serde_json::Value {
    let step = if count > 1 {
        8.0 / f64::from(count - 1)
    } else {
        0.0
    };
    let above = round(29.0 - step * f64::from(i), 3);
    let for_s = f64::from(1 + i % 5);
    serde_json::json!({
        "name": format!("bench rule {i}: {RULE_METRIC} above {above} for {for_s} s"),
        "severity": "warning",
        "enabled": true,
        "scope": {},
        "condition": {"metric": {
            "metric": RULE_METRIC,
            "test": {"above": above},
            "for_s": for_s,
            "hysteresis": 0.2,
        }},
    })
}

/// `POST /api/alert-rules` with `rule`, expecting 201.
async fn create_rule(http: SocketAddr, rule: &serde_json::Value) -> Result<()> {
    let body = serde_json::to_vec(rule).context("cannot write an alert rule as JSON")?;
    let (status, answer) = http_request(http, "POST", "/api/alert-rules", Some(&body)).await?;
    if status != 201 {
        bail!(
            "POST /api/alert-rules answered {status}: {} (the rule sent: {rule})",
            String::from_utf8_lossy(&answer[..answer.len().min(500)])
        );
    }
    Ok(())
}

/// `GET /api/stats`, the part the bench reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiStats {
    pub(crate) messages: u64,
}

/// `GET /api/messages` items, the part the bench reads.
#[derive(Debug, Deserialize)]
struct ApiMessage {
    id: i64,
    topic: String,
    payload_text: Option<String>,
}

/// A stored bench message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredRow {
    id: i64,
    device: u32,
    seq: u64,
    sent_us: Micros,
}

/// Every stored message, as the bench sorts them.
struct ReadBack {
    /// The load's messages.
    rows: Vec<StoredRow>,
    /// Others: foreign topic, unreadable payload.
    foreign: u64,
    /// The presence probes' messages.
    probes: u64,
}

/// Reads every stored message, newest first, page by page.
async fn read_back(http: SocketAddr) -> Result<ReadBack> {
    let mut rows = Vec::new();
    let mut foreign = 0u64;
    let mut probes = 0u64;
    let mut before: Option<i64> = None;
    loop {
        let path = match before {
            None => format!("/api/messages?limit={PAGE}"),
            Some(id) => format!("/api/messages?limit={PAGE}&before={id}"),
        };
        let page: Vec<ApiMessage> = http_get_json(http, &path).await?;
        let Some(oldest) = page.iter().map(|m| m.id).min() else {
            break;
        };
        for message in &page {
            match parse_row(message) {
                Some(row) => rows.push(row),
                None if probe_index(&message.topic).is_some() => probes += 1,
                None => foreign += 1,
            }
        }
        if page.len() < PAGE {
            break;
        }
        if before.is_some_and(|b| oldest >= b) {
            bail!("GET /api/messages?before={oldest} does not page backwards (ids must decrease)");
        }
        before = Some(oldest);
    }
    Ok(ReadBack {
        rows,
        foreign,
        probes,
    })
}

/// A bench message from a stored one, or `None` if it is not one.
fn parse_row(message: &ApiMessage) -> Option<StoredRow> {
    let device = topic_device(&message.topic)?;
    let payload: BenchPayload = serde_json::from_str(message.payload_text.as_deref()?).ok()?;
    Some(StoredRow {
        id: message.id,
        device,
        seq: payload.seq,
        sent_us: payload.sent_us,
    })
}

/// A `flushed` event as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlushRecord {
    /// When it arrived here.
    received_us: Micros,
    /// Every message id up to this one is committed.
    last_message_id: i64,
    /// When the server committed.
    committed_at: Micros,
}

/// What the event stream task reports.
#[derive(Debug)]
enum StreamNote {
    Flushed(FlushRecord),
    Presence(PresenceSeen),
    /// An `alert` event's `transition`.
    Alert(String),
    Resync,
    Ended(String),
}

/// A `presence` event as received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PresenceSeen {
    device: String,
    /// The time of its cause (server clock).
    at: Micros,
    to: String,
    /// When it arrived here.
    received_us: Micros,
}

/// The flushed events received so far.
#[derive(Debug, Default)]
struct FlushLog {
    records: Vec<FlushRecord>,
    resyncs: u64,
    ended: Option<String>,
}

impl FlushLog {
    fn note(&mut self, note: StreamNote) {
        match note {
            StreamNote::Flushed(record) => self.records.push(record),
            StreamNote::Resync => self.resyncs += 1,
            StreamNote::Ended(why) => self.ended = Some(why),
            StreamNote::Presence(_) | StreamNote::Alert(_) => {}
        }
    }
    fn drain(&mut self, rx: &mut mpsc::UnboundedReceiver<StreamNote>) {
        while let Ok(note) = rx.try_recv() {
            self.note(note);
        }
    }
    fn max_last_id(&self) -> i64 {
        self.records
            .iter()
            .map(|r| r.last_message_id)
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `flushed` event's data, the part the bench reads.
#[derive(Debug, Deserialize)]
struct FlushedData {
    last_message_id: i64,
    committed_at: Micros,
}

/// The `presence` event's data, the part the bench reads.
#[derive(Debug, Deserialize)]
struct PresenceData {
    device: String,
    at: Micros,
    to: String,
}

/// The `alert` event's data, the part the bench reads.
#[derive(Debug, Deserialize)]
struct AlertData {
    transition: String,
}

/// Opens `GET /api/events?types=<types>` and returns, once the server has
/// answered 200 (so it is listening), a channel of what arrives and the task
/// that reads it.
async fn open_event_stream(
    http: SocketAddr,
    types: &str,
) -> Result<(mpsc::UnboundedReceiver<StreamNote>, AbortOnDrop)> {
    let path = format!("/api/events?types={types}");
    let path = path.as_str();
    let mut stream = timeout(HTTP_TIMEOUT, TcpStream::connect(http))
        .await
        .map_err(|_| anyhow!("cannot connect to {http}: timed out"))?
        .with_context(|| format!("cannot connect to {http}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("GET {path}"))?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let head_end = loop {
        let n = timeout(HTTP_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| anyhow!("GET {path}: no answer within {} s", HTTP_TIMEOUT.as_secs()))?
            .with_context(|| format!("GET {path}"))?;
        if n == 0 {
            bail!("GET {path}: the connection closed before the response headers");
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = find(&raw, b"\r\n\r\n") {
            break at;
        }
        if raw.len() > 64 * 1024 {
            bail!("GET {path}: response headers longer than 64 KiB");
        }
    };
    let head = parse_head(&raw[..head_end]).with_context(|| format!("GET {path}"))?;
    if head.status != 200 {
        bail!("GET {path} answered {}", head.status);
    }
    let first = raw.split_off(head_end + 4);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let why = match pump_events(stream, head.chunked, first, &tx).await {
            Ok(()) => "the server closed the stream".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        let _ = tx.send(StreamNote::Ended(why));
    });
    Ok((rx, AbortOnDrop(task)))
}

/// Reads the event stream body, decoding chunks and SSE, and reports
/// `flushed`, `presence`, `alert` and `resync` events with their arrival time.
async fn pump_events(
    mut stream: TcpStream,
    chunked: bool,
    first: Vec<u8>,
    tx: &mpsc::UnboundedSender<StreamNote>,
) -> Result<()> {
    let mut chunks = chunked.then(ChunkedDecoder::default);
    let mut sse = SseParser::default();
    let mut input = first;
    let mut received_us = now_micros();
    let mut body = Vec::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        body.clear();
        let finished = match &mut chunks {
            Some(decoder) => decoder.feed(&input, &mut body)?,
            None => {
                body.extend_from_slice(&input);
                false
            }
        };
        sse.feed(&body, &mut events);
        for event in events.drain(..) {
            let note = match event.event.as_str() {
                "flushed" => {
                    let data: FlushedData =
                        serde_json::from_str(&event.data).with_context(|| {
                            format!("a flushed event has unexpected data: {}", event.data)
                        })?;
                    StreamNote::Flushed(FlushRecord {
                        received_us,
                        last_message_id: data.last_message_id,
                        committed_at: data.committed_at,
                    })
                }
                "presence" => {
                    let data: PresenceData =
                        serde_json::from_str(&event.data).with_context(|| {
                            format!("a presence event has unexpected data: {}", event.data)
                        })?;
                    StreamNote::Presence(PresenceSeen {
                        device: data.device,
                        at: data.at,
                        to: data.to,
                        received_us,
                    })
                }
                "alert" => {
                    let data: AlertData = serde_json::from_str(&event.data).with_context(|| {
                        format!("an alert event has unexpected data: {}", event.data)
                    })?;
                    StreamNote::Alert(data.transition)
                }
                "resync" => StreamNote::Resync,
                _ => continue,
            };
            if tx.send(note).is_err() {
                return Ok(());
            }
        }
        if finished {
            return Ok(());
        }
        let n = stream
            .read(&mut buf)
            .await
            .context("cannot read the event stream")?;
        received_us = now_micros();
        if n == 0 {
            return Ok(());
        }
        input.clear();
        input.extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------
// Presence probes and the presence/alert event stream
// ---------------------------------------------------------------------------

/// Device (and client id) of probe `i`.
fn probe_device(i: usize) -> String {
    format!("{PROBE_PREFIX}{i}")
}

/// Topic of probe `i`.
fn probe_topic(i: usize) -> String {
    format!("{PROBE_PREFIX}{i}{PROBE_TOPIC_SUFFIX}")
}

/// The probe number in a probe device or topic, or `None` for anything else.
fn probe_index(device_or_topic: &str) -> Option<usize> {
    let rest = device_or_topic.strip_prefix(PROBE_PREFIX)?;
    let number = rest.strip_suffix(PROBE_TOPIC_SUFFIX).unwrap_or(rest);
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// What the presence/alert stream showed until it was stopped.
#[derive(Debug, Default)]
struct EventsSeen {
    alerts: AlertTally,
    presence_events: u64,
    resyncs: u64,
    ended: Option<String>,
}

/// Counts `alert` events by transition and `presence` events, and hands
/// every probe device's offline event to that probe, until `stop`.
async fn tally_events(
    mut events: mpsc::UnboundedReceiver<StreamNote>,
    probes: Vec<mpsc::UnboundedSender<PresenceSeen>>,
    mut stop: oneshot::Receiver<()>,
) -> EventsSeen {
    let mut seen = EventsSeen::default();
    loop {
        let note = tokio::select! {
            biased;
            note = events.recv() => note,
            _ = &mut stop => None,
        };
        match note {
            Some(StreamNote::Alert(transition)) => match transition.as_str() {
                "fired" => seen.alerts.fired += 1,
                "acknowledged" => seen.alerts.acknowledged += 1,
                "cleared" => seen.alerts.cleared += 1,
                _ => seen.alerts.other += 1,
            },
            Some(StreamNote::Presence(p)) => {
                seen.presence_events += 1;
                if p.to == "offline" {
                    if let Some(tx) = probe_index(&p.device).and_then(|i| probes.get(i)) {
                        // The probe may be done already.
                        let _ = tx.send(p);
                    }
                }
            }
            Some(StreamNote::Resync) => seen.resyncs += 1,
            Some(StreamNote::Ended(why)) => {
                seen.ended = Some(why);
                break;
            }
            Some(StreamNote::Flushed(_)) => {}
            None => break,
        }
    }
    seen
}

/// What one probe did.
#[derive(Debug, Default)]
struct ProbeOutcome {
    drops: u64,
    latency_us: Vec<u64>,
    missed: u64,
    failed: u64,
    errors: Vec<String>,
    published: u64,
}

impl PresenceRun {
    /// Adds one probe's figures.
    fn add(&mut self, probe: ProbeOutcome) {
        self.drops += probe.drops;
        self.latency_us.extend(probe.latency_us);
        self.latency_us.sort_unstable();
        self.missed += probe.missed;
        self.failed += probe.failed;
        self.published += probe.published;
        for e in probe.errors {
            if !self.errors.contains(&e) && self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
    }
}

/// Probe `i`: after `delay`, cycles (see the module doc) until `stop`,
/// [`MAX_PROBE_CYCLES`] or `deadline`, pausing [`PROBE_PAUSE`] between
/// cycles. With `events`, waits after each drop for the device's offline
/// event (at most [`PROBE_EVENT_WAIT`]).
async fn run_probe(
    i: usize,
    broker: SocketAddr,
    mut events: Option<mpsc::UnboundedReceiver<PresenceSeen>>,
    mut stop: watch::Receiver<bool>,
    delay: Duration,
    deadline: Instant,
) -> ProbeOutcome {
    let client_id = probe_device(i);
    let topic = probe_topic(i);
    let mut out = ProbeOutcome::default();
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    let _ = timeout(delay, stop.wait_for(|s| *s)).await;
    for cycle in 0..MAX_PROBE_CYCLES {
        if stopped(&stop) || Instant::now() >= deadline {
            break;
        }
        let payload = format!("{{\"cycle\":{cycle}}}");
        let dropped_us = match probe_cycle(broker, &client_id, &topic, payload.as_bytes()).await {
            Ok(dropped_us) => {
                out.published += 1;
                out.drops += 1;
                dropped_us
            }
            Err((published, e)) => {
                out.published += u64::from(published);
                out.failed += 1;
                let e = format!("{e:#}");
                if !out.errors.contains(&e) {
                    out.errors.push(e);
                }
                let _ = timeout(PROBE_PAUSE, stop.wait_for(|s| *s)).await;
                continue;
            }
        };
        if let Some(rx) = &mut events {
            let wait_until = Instant::now() + PROBE_EVENT_WAIT;
            let matched = loop {
                match timeout_at(wait_until, rx.recv()).await {
                    // The reset caused it only if it came after the reset.
                    Ok(Some(seen)) if seen.at >= dropped_us => break Some(seen),
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break None,
                }
            };
            match matched {
                Some(seen) => out
                    .latency_us
                    .push(non_negative(seen.received_us - dropped_us)),
                None => out.missed += 1,
            }
        }
        let _ = timeout(PROBE_PAUSE, stop.wait_for(|s| *s)).await;
    }
    out
}

/// One probe cycle: connect, CONNECT/CONNACK, one QoS 1 PUBLISH/PUBACK,
/// then a reset (`SO_LINGER` 0, no DISCONNECT). Returns when the socket was
/// reset (µs, wall clock); on failure, whether the PUBLISH was written.
async fn probe_cycle(
    broker: SocketAddr,
    client_id: &str,
    topic: &str,
    payload: &[u8],
) -> Result<Micros, (bool, anyhow::Error)> {
    let mut stream = within("connect", TcpStream::connect(broker))
        .await
        .map_err(|e| (false, e))?;
    let _ = stream.set_nodelay(true);
    let mut ack = [0u8; 4];
    let connect = mqtt_connect(client_id, PROBE_KEEP_ALIVE_S);
    within("CONNECT", stream.write_all(&connect))
        .await
        .map_err(|e| (false, e))?;
    within("CONNACK", stream.read_exact(&mut ack))
        .await
        .map_err(|e| (false, e))?;
    if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
        return Err((false, anyhow!("CONNACK: refused or malformed: {ack:02x?}")));
    }
    let publish = mqtt_publish_qos1(topic, 1, payload);
    within("PUBLISH", stream.write_all(&publish))
        .await
        .map_err(|e| (false, e))?;
    within("PUBACK", stream.read_exact(&mut ack))
        .await
        .map_err(|e| (true, e))?;
    if ack != [0x40, 2, 0, 1] {
        return Err((
            true,
            anyhow!("PUBACK: expected 40 02 00 01, got {ack:02x?}"),
        ));
    }
    stream
        .set_zero_linger()
        .map_err(|e| (true, anyhow!("SO_LINGER: {e}")))?;
    let dropped_us = now_micros();
    drop(stream);
    Ok(dropped_us)
}

/// `step` within [`PROBE_STEP_TIMEOUT`], its error named `what`.
async fn within<T>(
    what: &str,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T> {
    match timeout(PROBE_STEP_TIMEOUT, step).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow!(
            "{what}: not done within {} s",
            PROBE_STEP_TIMEOUT.as_secs()
        )),
    }
}

/// An MQTT remaining length (variable-length integer, up to 268,435,455).
fn put_remaining_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

/// A UTF-8 string with its two-byte length (at most 65,535 bytes).
fn put_mqtt_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = s.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s[..len]);
}

/// An MQTT 3.1.1 CONNECT: clean session, no will, no login.
fn mqtt_connect(client_id: &str, keep_alive_s: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(12 + client_id.len());
    put_mqtt_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    put_mqtt_str(&mut body, client_id.as_bytes());
    let mut packet = vec![0x10];
    put_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

/// An MQTT 3.1.1 PUBLISH at QoS 1, not retained.
fn mqtt_publish_qos1(topic: &str, packet_id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
    put_mqtt_str(&mut body, topic.as_bytes());
    body.extend_from_slice(&packet_id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x32];
    put_remaining_length(&mut packet, body.len());
    packet.extend_from_slice(&body);
    packet
}

// ---------------------------------------------------------------------------
// CPU time of a process
// ---------------------------------------------------------------------------

/// Clock ticks a process has run, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTicks {
    /// `utime`: user mode, all threads.
    user: u64,
    /// `stime`: kernel mode, all threads.
    system: u64,
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The
/// process name (field 2) is in parentheses and may hold spaces and
/// parentheses itself, so the fields are counted from the last `)`.
fn parse_proc_stat(stat: &str) -> Option<CpuTicks> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (`state`) is the first after the name.
    let mut fields = after_name.split_whitespace().skip(14 - 3);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub(crate) fn clock_ticks_per_s() -> Option<u64> {
    // SAFETY: sysconf only reads a system setting.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

/// A process's CPU time so far, and when it was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    ticks: CpuTicks,
    at: Instant,
}

impl CpuSample {
    /// Reads process `pid`'s CPU time, if it (still) exists.
    pub(crate) fn take(pid: Option<u32>) -> Option<CpuSample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
        Some(CpuSample {
            ticks: parse_proc_stat(&stat)?,
            at: Instant::now(),
        })
    }
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct CpuReport {
    /// User + system CPU seconds.
    cpu_s: f64,
    user_s: f64,
    system_s: f64,
    /// Wall-clock seconds between the samples.
    wall_s: f64,
    /// `cpu_s / wall_s`: cores kept busy on average.
    cores: f64,
    /// CPU µs per message (stored for Vigil, forwarded for Mosquitto).
    cpu_us_per_msg: Option<f64>,
}

impl CpuReport {
    /// The CPU used from `start` to `end`, per message of `messages`.
    pub(crate) fn between(start: CpuSample, end: CpuSample, hz: u64, messages: u64) -> CpuReport {
        let seconds = |ticks: u64| ticks as f64 / hz as f64;
        let user = seconds(end.ticks.user.saturating_sub(start.ticks.user));
        let system = seconds(end.ticks.system.saturating_sub(start.ticks.system));
        let cpu = user + system;
        let wall = end.at.saturating_duration_since(start.at).as_secs_f64();
        CpuReport {
            cpu_s: round(cpu, 3),
            user_s: round(user, 3),
            system_s: round(system, 3),
            wall_s: round(wall, 3),
            cores: if wall > 0.0 {
                round(cpu / wall, 3)
            } else {
                0.0
            },
            cpu_us_per_msg: (messages > 0).then(|| round(cpu * 1e6 / messages as f64, 2)),
        }
    }

    /// From an optional pair of samples.
    fn of(samples: Option<(CpuSample, CpuSample)>, messages: u64) -> Option<CpuReport> {
        let (start, end) = samples?;
        Some(CpuReport::between(
            start,
            end,
            clock_ticks_per_s()?,
            messages,
        ))
    }
}

// ---------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------

/// The stored messages joined with what was sent and the flushed events.
#[derive(Debug, Default)]
struct Analysis {
    /// Distinct (device, seq) stored.
    stored: u64,
    /// Written to a socket, never stored.
    lost: u64,
    /// Of the lost, those acknowledged; `None` at QoS 0.
    acked_lost: Option<u64>,
    /// Rows repeating a (device, seq) already stored.
    duplicates: u64,
    /// Rows on a bench topic whose (device, seq) was never planned.
    unexpected: u64,
    /// Latency to the flushed event's arrival, µs, sorted.
    latency_us: Vec<u64>,
    /// Latency to the server's `committed_at`, µs, sorted.
    commit_latency_us: Vec<u64>,
    /// Stored rows no flushed event covers.
    uncovered: u64,
    /// Arrival of the flushed event covering the last stored message.
    last_commit_received_us: Option<Micros>,
}

/// Joins stored rows with the load and the flushed events (see the module doc).
fn analyse(
    load: &LoadOutcome,
    acking: bool,
    mut rows: Vec<StoredRow>,
    flushes: &[FlushRecord],
) -> Analysis {
    rows.sort_unstable_by_key(|r| r.id);
    let mut offsets = Vec::with_capacity(load.devices.len());
    let mut total = 0u64;
    for device in &load.devices {
        offsets.push(total);
        total += device.share;
    }
    let mut seen = vec![false; total as usize];
    // Flushed events in arrival order; the first whose running maximum of
    // `last_message_id` reaches an id is the one that committed it.
    let running_max: Vec<i64> = flushes
        .iter()
        .scan(i64::MIN, |max, f| {
            *max = (*max).max(f.last_message_id);
            Some(*max)
        })
        .collect();
    let mut a = Analysis::default();
    for row in &rows {
        let Some((device, offset)) = load
            .devices
            .get(row.device as usize)
            .zip(offsets.get(row.device as usize))
        else {
            a.unexpected += 1;
            continue;
        };
        if row.seq >= device.share {
            a.unexpected += 1;
            continue;
        }
        let index = (offset + row.seq) as usize;
        if seen[index] {
            a.duplicates += 1;
            continue;
        }
        seen[index] = true;
        a.stored += 1;
        match flushes.get(running_max.partition_point(|&max| max < row.id)) {
            Some(flush) => {
                a.latency_us
                    .push(non_negative(flush.received_us - row.sent_us));
                a.commit_latency_us
                    .push(non_negative(flush.committed_at - row.sent_us));
                a.last_commit_received_us = a.last_commit_received_us.max(Some(flush.received_us));
            }
            None => a.uncovered += 1,
        }
    }
    let mut acked_lost = 0;
    for (device, offset) in load.devices.iter().zip(&offsets) {
        for seq in 0..device.written.min(device.share) {
            if !seen[(offset + seq) as usize] {
                a.lost += 1;
                if bit_get(&device.acked_seqs, seq) {
                    acked_lost += 1;
                }
            }
        }
    }
    a.acked_lost = acking.then_some(acked_lost);
    a.latency_us.sort_unstable();
    a.commit_latency_us.sort_unstable();
    a
}

/// `us` if positive, else 0 (clocks may disagree by a hair).
fn non_negative(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0)
}

/// The nearest-rank `p`-th percentile (0 ..= 100) of `sorted`.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// p50, p99 and max of a sorted list of µs, in ms.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(sorted_us: &[u64]) -> Option<Latency> {
        let ms = |us: u64| round(us as f64 / 1000.0, 3);
        Some(Latency {
            samples: sorted_us.len(),
            p50_ms: ms(percentile(sorted_us, 50.0)?),
            p99_ms: ms(percentile(sorted_us, 99.0)?),
            max_ms: ms(percentile(sorted_us, 100.0)?),
        })
    }
}

/// `x` rounded to `digits` decimals.
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// `count` messages over the µs from `start` to `end`, per second.
fn rate(count: u64, start: Option<Micros>, end: Option<Micros>) -> Option<f64> {
    let span = end? - start?;
    (span > 0 && count > 0).then(|| round(count as f64 * 1e6 / span as f64, 1))
}

/// Seconds between two µs instants.
fn span_s(start: Option<Micros>, end: Option<Micros>) -> Option<f64> {
    Some(round((end? - start?) as f64 / 1e6, 3))
}

// ---------------------------------------------------------------------------
// Mosquitto
// ---------------------------------------------------------------------------

/// Finds Debian's `mosquitto` binary, or says how to get it.
fn find_mosquitto() -> Result<PathBuf> {
    let debian = PathBuf::from(MOSQUITTO_BIN);
    if debian.is_file() {
        return Ok(debian);
    }
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file());
    in_path.context(
        "--vs-mosquitto needs Mosquitto, which is not installed (neither /usr/sbin/mosquitto nor `mosquitto` in PATH); \
         install it with `apt-get install mosquitto`",
    )
}

/// The Mosquitto configuration: one loopback listener, no persistence, and
/// no limits on queued or in-flight messages, so its one subscriber is not
/// what drops or throttles messages.
fn mosquitto_conf(port: u16) -> String {
    format!(
        "# written by vigil bench ingest\n\
         listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_queued_messages 0\n\
         max_queued_bytes 0\n\
         max_inflight_messages 0\n\
         max_inflight_bytes 0\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n"
    )
}

/// A free loopback port (free when this returns; Mosquitto takes it next).
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener
        .local_addr()
        .context("cannot find a free loopback port")?
        .port())
}

/// Everything measured on Mosquitto.
#[derive(Debug)]
struct MosquittoRun {
    load: LoadOutcome,
    received: u64,
    last_received_us: Option<Micros>,
    wait_end: WaitEnd,
    /// Mosquitto's CPU when the publishing started and when the wait ended.
    cpu: Option<(CpuSample, CpuSample)>,
    warnings: Vec<String>,
}

/// Starts Mosquitto in `dir`, measures it, and stops it whatever happened.
async fn bench_mosquitto(
    bin: &Path,
    plan: &LoadPlan,
    dir: &Path,
    limit: Duration,
) -> Result<MosquittoRun> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, mosquitto_conf(port))
        .with_context(|| format!("cannot write {}", conf.display()))?;
    let log = dir.join("mosquitto.log");
    let log_file =
        File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let log_out = log_file
        .try_clone()
        .with_context(|| format!("cannot create {}", log.display()))?;
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_out))
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start mosquitto ({})", bin.display()))?;
    let broker = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = child.id();
    let measured = match wait_for_port(broker, &mut child).await {
        Ok(()) => {
            progress(&format!("mosquitto is listening on {broker}"));
            tokio::select! {
                r = measure_mosquitto(plan, broker, pid, limit) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow!(INTERRUPTED)),
            }
        }
        Err(e) => Err(e),
    };
    let stopped = terminate(&mut child, "mosquitto").await;
    let mut run = measured.map_err(|e| with_log(e, &log))?;
    match stopped {
        Ok(status) if status.success() => {}
        Ok(status) => run
            .warnings
            .push(format!("mosquitto exited with {status} after SIGTERM")),
        Err(e) => run.warnings.push(format!("{e:#}")),
    }
    Ok(run)
}

/// Waits until `child` accepts TCP connections on `addr`.
async fn wait_for_port(addr: SocketAddr, child: &mut Child) -> Result<()> {
    let give_up = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Some(status) = child
            .try_wait()
            .context("cannot check whether mosquitto runs")?
        {
            bail!("mosquitto exited ({status}) at start");
        }
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!(
                "mosquitto did not listen on {addr} within {} s",
                CONNECT_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// Subscribes to `#`, runs the load, and counts what the subscriber gets.
async fn measure_mosquitto(
    plan: &LoadPlan,
    broker: SocketAddr,
    pid: Option<u32>,
    limit: Duration,
) -> Result<MosquittoRun> {
    let deadline = Instant::now() + limit;
    let subscriber = Subscriber::start(plan, broker).await?;
    progress(&format!(
        "publishing {} messages from {} devices at QoS {} through mosquitto",
        plan.messages,
        plan.devices,
        plan.qos_number()
    ));
    let (started_tx, started_rx) = oneshot::channel();
    let (load, cpu_start) =
        tokio::join!(run_load(broker, plan, deadline, Some(started_tx)), async {
            started_rx.await.ok()?;
            CpuSample::take(pid)
        });
    let load = load?;
    let counter = Arc::clone(&subscriber.count);
    let (_, wait_end) = wait_for_count(load.written(), deadline, || {
        let counter = Arc::clone(&counter);
        async move { Ok(counter.load(Ordering::Relaxed)) }
    })
    .await?;
    let cpu_end = CpuSample::take(pid);
    let heard = subscriber.stop().await?;
    let mut warnings = Vec::new();
    if let Some(e) = heard.error {
        warnings.push(format!("the subscriber's connection broke: {e}"));
    }
    Ok(MosquittoRun {
        load,
        received: heard.count,
        last_received_us: heard.last_us,
        wait_end,
        cpu: cpu_start.zip(cpu_end),
        warnings,
    })
}

/// One client subscribed to `#`, counting what it receives.
struct Subscriber {
    /// Messages received so far.
    count: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Heard>,
}

/// What the subscriber received.
struct Heard {
    count: u64,
    last_us: Option<Micros>,
    error: Option<String>,
}

impl Subscriber {
    /// Connects `bench-sub`, subscribes to `#` at the plan's QoS and waits for
    /// the SUBACK before returning.
    async fn start(plan: &LoadPlan, broker: SocketAddr) -> Result<Subscriber> {
        let (client, mut eventloop) = new_client(plan, "bench-sub".to_owned(), broker);
        client
            .subscribe("#", plan.qos)
            .await
            .context("cannot subscribe to # on mosquitto")?;
        let subscribed = timeout(CONNECT_TIMEOUT, async {
            loop {
                if let Event::Incoming(Packet::SubAck(ack)) = eventloop.poll().await? {
                    return Ok::<_, rumqttc::ConnectionError>(ack);
                }
            }
        })
        .await;
        match subscribed {
            Ok(Ok(ack))
                if ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_))) => {}
            Ok(Ok(ack)) => bail!(
                "mosquitto at {broker} refused the subscription to #: {:?}",
                ack.return_codes
            ),
            Ok(Err(e)) => bail!("cannot subscribe to # on mosquitto at {broker}: {e}"),
            Err(_) => bail!(
                "cannot subscribe to # on mosquitto at {broker}: no SUBACK within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        }
        let count = Arc::new(AtomicU64::new(0));
        let shared = Arc::clone(&count);
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            // Keep the client alive: dropping every sender would end the loop.
            let _client = client;
            let mut heard = Heard {
                count: 0,
                last_us: None,
                error: None,
            };
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    event = eventloop.poll() => match event {
                        Ok(Event::Incoming(Packet::Publish(_))) => {
                            heard.count += 1;
                            heard.last_us = Some(now_micros());
                            shared.store(heard.count, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            heard.error = Some(e.to_string());
                            break;
                        }
                    },
                }
            }
            heard
        });
        Ok(Subscriber { count, stop, task })
    }

    /// Stops counting and returns what was received.
    async fn stop(self) -> Result<Heard> {
        let _ = self.stop.send(());
        self.task.await.context("the subscriber task failed")
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// The whole result, printed as text or as JSON.
#[derive(Debug, Serialize)]
struct Report {
    config: ReportConfig,
    vigil: VigilReport,
    mosquitto: Option<MosquittoReport>,
    /// Vigil's stored rate / Mosquitto's forwarding rate.
    vigil_vs_mosquitto: Option<f64>,
}

/// The load, as run.
#[derive(Debug, Serialize)]
struct ReportConfig {
    devices: u32,
    messages: u64,
    qos: u8,
    payload_size: usize,
    /// Total msg/s; 0 = as fast as possible.
    rate: u64,
    inflight: u16,
    timeout_s: u64,
    /// `--vigil-bin`; `None` = this executable.
    vigil_bin: Option<String>,
    alert_rules: u32,
    presence_probes: u32,
}

/// Vigil's figures.
#[derive(Debug, Serialize)]
struct VigilReport {
    /// Messages written to the sockets.
    sent: u64,
    /// PUBACKs/PUBCOMPs; `None` at QoS 0.
    acked: Option<u64>,
    /// Distinct (device, seq) stored.
    stored: u64,
    lost: u64,
    /// Lost although acknowledged.
    acked_lost: Option<u64>,
    duplicates: u64,
    /// Stored messages not published by this run, or unreadable.
    unexpected_rows: u64,
    /// Distinct stored messages per second, first publish → last commit.
    stored_rate_msg_s: Option<f64>,
    stored_span_s: Option<f64>,
    /// Acknowledgements per second, first publish → last ack.
    ack_rate_msg_s: Option<f64>,
    /// Publish → flushed event received.
    latency: Option<Latency>,
    /// Publish → the server's `committed_at`.
    commit_latency: Option<Latency>,
    /// Stored messages no flushed event covered (excluded from latency).
    latency_uncovered: u64,
    /// `VmHWM` of `vigil serve`, KiB.
    peak_rss_kib: Option<u64>,
    flushed_events: usize,
    resyncs: u64,
    /// `GET /api/stats` `messages` when the wait ended.
    stats_messages: u64,
    /// `reached`, `stalled` or `timed_out`.
    wait_end: &'static str,
    timed_out: bool,
    /// CPU of `vigil serve` from the first publish to the end of the storage
    /// wait, per distinct stored bench message: the ingest cost.
    server_cpu: Option<CpuReport>,
    /// CPU of this process (publishers, probes, readers) over the same span.
    bench_cpu: Option<CpuReport>,
    /// Stored messages of the presence probes (not in `unexpected_rows`).
    probe_rows: u64,
    /// `--alert-rules`.
    alerts: Option<AlertsReport>,
    /// `--presence-probes`.
    presence: Option<PresenceReport>,
    warnings: Vec<String>,
}

/// What `--alert-rules` did.
#[derive(Debug, Serialize)]
struct AlertsReport {
    requested: u32,
    created: u32,
    /// Why none was created.
    skipped: Option<String>,
    /// `alert` events seen from the first publish to the end of the storage
    /// wait, by transition; `None` when skipped.
    events: Option<AlertTally>,
}

/// What `--presence-probes` did.
#[derive(Debug, Serialize)]
struct PresenceReport {
    probes: u32,
    /// Connections reset after their PUBACK.
    drops: u64,
    /// Reset → offline `presence` event received, over the drops that had one.
    latency: Option<Latency>,
    /// Drops with no offline event within 5 s.
    missed: u64,
    /// Cycles that failed before their reset, and the distinct errors.
    failed_cycles: u64,
    errors: Vec<String>,
    /// Every `presence` event seen (any device) and the stream's resyncs.
    presence_events: u64,
    resyncs: u64,
    /// Why the latency was not measured.
    skipped: Option<String>,
}

/// Mosquitto's figures.
#[derive(Debug, Serialize)]
struct MosquittoReport {
    sent: u64,
    acked: Option<u64>,
    received: u64,
    lost: u64,
    /// Messages received per second, first publish → last received.
    forward_rate_msg_s: Option<f64>,
    forward_span_s: Option<f64>,
    ack_rate_msg_s: Option<f64>,
    wait_end: &'static str,
    timed_out: bool,
    /// CPU of `mosquitto` from the first publish to the end of the wait,
    /// per message received by the subscriber.
    server_cpu: Option<CpuReport>,
    warnings: Vec<String>,
}

impl WaitEnd {
    fn name(self) -> &'static str {
        match self {
            WaitEnd::Reached => "reached",
            WaitEnd::Stalled => "stalled",
            WaitEnd::TimedOut => "timed_out",
        }
    }
}

/// Warnings common to both brokers' loads.
fn load_warnings(load: &LoadOutcome, wait_end: WaitEnd, what: &str) -> Vec<String> {
    let mut warnings: Vec<String> = load.errors();
    let unsent = load.planned().saturating_sub(load.written());
    if unsent > 0 {
        warnings.push(format!(
            "{unsent} of {} planned messages were never sent",
            load.planned()
        ));
    }
    if load.timed_out() || wait_end == WaitEnd::TimedOut {
        warnings.push("the time limit (--timeout) cut the run short".to_owned());
    }
    if wait_end == WaitEnd::Stalled {
        warnings.push(format!(
            "the {what} count stopped growing before reaching the number sent"
        ));
    }
    warnings
}

impl Report {
    fn new(
        plan: &LoadPlan,
        options: &VigilOptions,
        timeout_s: u64,
        vigil: VigilRun,
        mosquitto: Option<MosquittoRun>,
    ) -> Report {
        let acking = plan.qos != QoS::AtMostOnce;
        let t0 = vigil.load.first_publish_us();
        let a = &vigil.analysis;
        let mut warnings = load_warnings(&vigil.load, vigil.wait_end, "stored");
        if vigil.resyncs > 0 {
            warnings.push(format!(
                "the flushed event stream resynced {} time(s): latencies of some messages are overestimated",
                vigil.resyncs
            ));
        }
        if a.uncovered > 0 {
            warnings.push(format!(
                "{} stored messages were covered by no flushed event",
                a.uncovered
            ));
        }
        if vigil.foreign_rows > 0 {
            warnings.push(format!(
                "{} stored messages were not the bench's",
                vigil.foreign_rows
            ));
        }
        warnings.extend(vigil.warnings.iter().cloned());
        let vigil_report = VigilReport {
            sent: vigil.load.written(),
            acked: acking.then(|| vigil.load.acked()),
            stored: a.stored,
            lost: a.lost,
            acked_lost: a.acked_lost,
            duplicates: a.duplicates,
            unexpected_rows: a.unexpected + vigil.foreign_rows,
            stored_rate_msg_s: rate(a.stored, t0, a.last_commit_received_us),
            stored_span_s: span_s(t0, a.last_commit_received_us),
            ack_rate_msg_s: if acking {
                rate(vigil.load.acked(), t0, vigil.load.last_ack_us())
            } else {
                None
            },
            latency: Latency::of(&a.latency_us),
            commit_latency: Latency::of(&a.commit_latency_us),
            latency_uncovered: a.uncovered,
            peak_rss_kib: vigil.peak_rss_kib,
            flushed_events: vigil.flushes,
            resyncs: vigil.resyncs,
            stats_messages: vigil.stored_count,
            wait_end: vigil.wait_end.name(),
            timed_out: vigil.load.timed_out() || vigil.wait_end == WaitEnd::TimedOut,
            server_cpu: CpuReport::of(vigil.server_cpu, a.stored),
            bench_cpu: CpuReport::of(vigil.bench_cpu, a.stored),
            probe_rows: vigil.probe_rows,
            alerts: vigil.alerts.as_ref().map(|r| AlertsReport {
                requested: r.requested,
                created: r.created,
                skipped: r.skipped.clone(),
                events: r.events,
            }),
            presence: vigil.presence.as_ref().map(|p| PresenceReport {
                probes: p.probes,
                drops: p.drops,
                latency: Latency::of(&p.latency_us),
                missed: p.missed,
                failed_cycles: p.failed,
                errors: p.errors.clone(),
                presence_events: p.presence_events,
                resyncs: p.resyncs,
                skipped: p.skipped.clone(),
            }),
            warnings,
        };
        let mosquitto_report = mosquitto.map(|m| {
            let t0 = m.load.first_publish_us();
            let mut warnings = load_warnings(&m.load, m.wait_end, "received");
            warnings.extend(m.warnings.iter().cloned());
            MosquittoReport {
                sent: m.load.written(),
                acked: acking.then(|| m.load.acked()),
                received: m.received,
                lost: m.load.written().saturating_sub(m.received),
                forward_rate_msg_s: rate(m.received, t0, m.last_received_us),
                forward_span_s: span_s(t0, m.last_received_us),
                ack_rate_msg_s: if acking {
                    rate(m.load.acked(), t0, m.load.last_ack_us())
                } else {
                    None
                },
                wait_end: m.wait_end.name(),
                timed_out: m.load.timed_out() || m.wait_end == WaitEnd::TimedOut,
                server_cpu: CpuReport::of(m.cpu, m.received),
                warnings,
            }
        });
        let ratio = match (&mosquitto_report, vigil_report.stored_rate_msg_s) {
            (Some(m), Some(v)) => m.forward_rate_msg_s.map(|f| round(v / f, 3)),
            _ => None,
        };
        Report {
            config: ReportConfig {
                devices: plan.devices,
                messages: plan.messages,
                qos: plan.qos_number(),
                payload_size: plan.payload_size,
                rate: plan.rate,
                inflight: plan.inflight,
                timeout_s,
                vigil_bin: options.bin.as_ref().map(|b| b.display().to_string()),
                alert_rules: options.alert_rules,
                presence_probes: options.presence_probes,
            },
            vigil: vigil_report,
            mosquitto: mosquitto_report,
            vigil_vs_mosquitto: ratio,
        }
    }

    /// The human-readable report.
    fn human(&self) -> String {
        let c = &self.config;
        let v = &self.vigil;
        let pace = if c.rate == 0 {
            "as fast as possible".to_owned()
        } else {
            format!("{} msg/s", c.rate)
        };
        let ack = |acked: Option<u64>, rate: Option<f64>| match acked {
            Some(n) => format!("{n} ({})", opt_rate(rate, "ack rate")),
            None => "- (QoS 0)".to_owned(),
        };
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(
            s,
            "Vigil ingest: {} devices, {} messages, QoS {}, {}-byte payloads, rate {pace}, inflight {}/client",
            c.devices, c.messages, c.qos, c.payload_size, c.inflight
        );
        if let Some(bin) = &c.vigil_bin {
            let _ = writeln!(s, "  server binary     {bin}");
        }
        let _ = writeln!(
            s,
            "  sent              {} (of {} planned)",
            v.sent, c.messages
        );
        let _ = writeln!(s, "  acked             {}", ack(v.acked, v.ack_rate_msg_s));
        let _ = writeln!(
            s,
            "  stored            {} distinct; lost {}{}; duplicates {}",
            v.stored,
            v.lost,
            v.acked_lost
                .map(|n| format!(" (of them acked: {n})"))
                .unwrap_or_default(),
            v.duplicates
        );
        let _ = writeln!(
            s,
            "  stored rate       {}{}",
            opt_rate(v.stored_rate_msg_s, "msg/s"),
            v.stored_span_s
                .map(|t| format!(" (first publish -> last row committed: {t} s)"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "  latency           {} (publish -> flushed event received)",
            opt_latency(v.latency)
        );
        let _ = writeln!(
            s,
            "  commit latency    {} (publish -> committed_at)",
            opt_latency(v.commit_latency)
        );
        let rss = v
            .peak_rss_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0));
        let _ = writeln!(
            s,
            "  peak RSS          {} (vigil serve VmHWM)",
            rss.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            s,
            "  flushed events    {} ({} resync)",
            v.flushed_events, v.resyncs
        );
        let _ = writeln!(
            s,
            "  server CPU        {} (vigil serve, first publish -> all stored)",
            opt_cpu(v.server_cpu, "stored")
        );
        let _ = writeln!(
            s,
            "  bench CPU         {} (this process, same span)",
            opt_cpu(v.bench_cpu, "stored")
        );
        let mut said_why = false;
        if let Some(a) = &v.alerts {
            match (&a.skipped, &a.events) {
                (Some(why), _) => {
                    said_why = true;
                    let _ = writeln!(s, "  alert rules       none created: {why}");
                }
                (None, events) => {
                    let events = match events {
                        Some(e) => format!(
                            "alert events fired {}, acknowledged {}, cleared {}{}",
                            e.fired,
                            e.acknowledged,
                            e.cleared,
                            if e.other > 0 {
                                format!(", other {}", e.other)
                            } else {
                                String::new()
                            }
                        ),
                        None => "alert events not counted".to_owned(),
                    };
                    let _ = writeln!(s, "  alert rules       {} created; {events}", a.created);
                }
            }
        }
        if let Some(p) = &v.presence {
            let _ = writeln!(
                s,
                "  presence probes   {} probes, {} resets, {} failed cycles, {} stored messages",
                p.probes, p.drops, p.failed_cycles, v.probe_rows
            );
            match &p.skipped {
                Some(_) if said_why => {
                    let _ = writeln!(s, "  presence latency  not measured (see above)");
                }
                Some(why) => {
                    let _ = writeln!(s, "  presence latency  not measured: {why}");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "  presence latency  {} (reset -> offline event received); missed {} (none within {} s)",
                        opt_latency(p.latency),
                        p.missed,
                        PROBE_EVENT_WAIT.as_secs()
                    );
                }
            }
            for e in &p.errors {
                let _ = writeln!(s, "  probe error: {e}");
            }
        }
        for w in &v.warnings {
            let _ = writeln!(s, "  warning: {w}");
        }
        if let Some(m) = &self.mosquitto {
            let _ = writeln!(
                s,
                "Mosquitto, same load, one subscriber on '#' at QoS {}, no persistence:",
                c.qos
            );
            let _ = writeln!(s, "  sent              {}", m.sent);
            let _ = writeln!(s, "  acked             {}", ack(m.acked, m.ack_rate_msg_s));
            let _ = writeln!(s, "  received          {} (lost {})", m.received, m.lost);
            let _ = writeln!(
                s,
                "  forwarding rate   {}{}",
                opt_rate(m.forward_rate_msg_s, "msg/s"),
                m.forward_span_s
                    .map(|t| format!(" (first publish -> last received: {t} s)"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "  server CPU        {} (mosquitto, first publish -> all received)",
                opt_cpu(m.server_cpu, "forwarded")
            );
            for w in &m.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
            let ratio = self.vigil_vs_mosquitto.map(|r| format!("{r:.2}"));
            let _ = writeln!(
                s,
                "Vigil stored rate / Mosquitto forwarding rate: {}",
                ratio.as_deref().unwrap_or("unknown")
            );
        }
        s
    }
}

/// `12345 msg/s`, or `unknown`.
fn opt_rate(rate: Option<f64>, unit: &str) -> String {
    match rate {
        Some(r) if unit == "msg/s" => format!("{r:.0} msg/s"),
        Some(r) => format!("{unit} {r:.0} msg/s"),
        None => format!("{unit} unknown"),
    }
}

/// `4.20 s over 2.10 s (2.00 cores; user 3.10 s, system 1.10 s) = 84.0 µs
/// per stored message`, or `unknown`.
fn opt_cpu(cpu: Option<CpuReport>, per: &str) -> String {
    match cpu {
        Some(c) => format!(
            "{:.2} s over {:.2} s ({:.2} cores; user {:.2} s, system {:.2} s) = {} per {per} message",
            c.cpu_s,
            c.wall_s,
            c.cores,
            c.user_s,
            c.system_s,
            c.cpu_us_per_msg
                .map(|us| format!("{us:.1} µs"))
                .unwrap_or_else(|| "unknown".to_owned())
        ),
        None => "unknown".to_owned(),
    }
}

/// `p50 1.2 ms, p99 3.4 ms, max 5.6 ms (n=...)`, or `unknown`.
fn opt_latency(latency: Option<Latency>) -> String {
    match latency {
        Some(l) => format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, n={}",
            l.p50_ms, l.p99_ms, l.max_ms, l.samples
        ),
        None => "unknown".to_owned(),
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client
// ---------------------------------------------------------------------------

/// `GET path` with `Connection: close`; returns the status and the decoded body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    http_request(addr, "GET", path, None).await
}

/// `method path` with `Connection: close` and, if given, a JSON body; returns
/// the status and the decoded body.
async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.context("cannot connect")?;
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n");
        if let Some(body) = body {
            let _ = write!(
                request,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        stream
            .write_all(&bytes)
            .await
            .context("cannot send the request")?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .context("cannot read the response")?;
        parse_response(&raw)
    };
    timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no complete response within {} s", HTTP_TIMEOUT.as_secs()))
        .and_then(|r| r)
        .with_context(|| format!("{method} http://{addr}{path}"))
}

/// `GET path`, expecting 200 and JSON of type `T`.
pub(crate) async fn http_get_json<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T> {
    let (status, body) = http_get(addr, path).await?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        bail!("GET {path} answered {status}: {text}");
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("GET {path}: the response is not the JSON the API describes"))
}

/// A whole HTTP/1.1 response: status and decoded body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>)> {
    let head_end = find(raw, b"\r\n\r\n").context("the response ends before its headers do")?;
    let head = parse_head(&raw[..head_end])?;
    let body = &raw[head_end + 4..];
    let body = if head.chunked {
        let mut decoded = Vec::with_capacity(body.len());
        let mut decoder = ChunkedDecoder::default();
        if !decoder.feed(body, &mut decoded)? {
            bail!("the chunked body ends before its last chunk");
        }
        decoded
    } else if let Some(length) = head.content_length {
        body.get(..length)
            .with_context(|| {
                format!(
                    "the body has {} bytes, Content-Length says {length}",
                    body.len()
                )
            })?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((head.status, body))
}

/// What the bench needs of a response head.
#[derive(Debug, PartialEq, Eq)]
struct ResponseHead {
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
}

/// Parses a status line and headers (without the blank line).
fn parse_head(head: &[u8]) -> Result<ResponseHead> {
    let text = std::str::from_utf8(head).context("the response headers are not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        bail!("not an HTTP/1 response: {status_line}");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status code in {status_line}"))?;
    let mut parsed = ResponseHead {
        status,
        chunked: false,
        content_length: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            parsed.content_length = Some(
                value
                    .parse()
                    .with_context(|| format!("bad Content-Length: {value}"))?,
            );
        }
    }
    Ok(parsed)
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Incremental decoder of a `Transfer-Encoding: chunked` body.
#[derive(Debug, Default)]
struct ChunkedDecoder {
    /// Bytes received but not yet decoded (a partial size line or CRLF).
    pending: Vec<u8>,
    state: ChunkState,
}

/// Where the decoder is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a size line.
    #[default]
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(usize),
    /// Expecting the CRLF after a chunk.
    DataEnd,
    /// The last chunk was read (trailers are ignored).
    Done,
}

impl ChunkedDecoder {
    /// Decodes `input`, appending body bytes to `out`. `Ok(true)` once the
    /// last (empty) chunk has been read.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(eol) = find(&self.pending[pos..], b"\r\n") else {
                        if self.pending.len() - pos > 1024 {
                            bail!("a chunk size line is longer than 1 KiB");
                        }
                        break;
                    };
                    let line = &self.pending[pos..pos + eol];
                    let digits = line.split(|&b| b == b';').next().unwrap_or(line);
                    let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
                    let size = usize::from_str_radix(digits, 16).with_context(|| {
                        format!("bad chunk size line: {}", String::from_utf8_lossy(line))
                    })?;
                    pos += eol + 2;
                    self.state = if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let available = self.pending.len() - pos;
                    if available == 0 {
                        break;
                    }
                    let take = left.min(available);
                    out.extend_from_slice(&self.pending[pos..pos + take]);
                    pos += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if self.pending.len() - pos < 2 {
                        break;
                    }
                    if &self.pending[pos..pos + 2] != b"\r\n" {
                        bail!("a chunk is not followed by CRLF");
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Done => break,
            }
        }
        self.pending.drain(..pos);
        Ok(self.state == ChunkState::Done)
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    /// The `event:` name (`message` when none was given).
    event: String,
    /// The `data:` lines, joined with `\n`.
    data: String,
}

/// Incremental Server-Sent Events parser (`event:` and `data:` fields;
/// comments, `id:` and `retry:` are ignored).
#[derive(Debug, Default)]
struct SseParser {
    /// The current, incomplete line.
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Parses `bytes`, appending every completed event to `out`.
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = bytes;
        while let Some(eol) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..eol]);
            rest = &rest[eol + 1..];
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, out);
            line.clear();
            self.line = line;
        }
        self.line.extend_from_slice(rest);
    }

    /// Handles one complete line.
    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut self.event)
                };
                out.push(SseEvent {
                    event,
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_exactly_the_requested_size_and_valid_json() {
        let mut buf = Vec::new();
        let sent_us = 1_700_000_000_000_000;
        let minimum = write_payload(&mut buf, 0, 0, sent_us, 1).unwrap_err();
        for size in minimum..minimum + 40 {
            for seq in [0, 7, 99, 12345] {
                if write_payload(&mut buf, seq, 0, sent_us, size).is_err() {
                    // Longer seqs need more room than seq 0.
                    assert!(size < minimum + 5, "size {size} seq {seq}");
                    continue;
                }
                assert_eq!(buf.len(), size, "seq {seq}");
                let parsed: BenchPayload = serde_json::from_slice(&buf).unwrap();
                assert_eq!((parsed.seq, parsed.sent_us), (seq, sent_us));
            }
        }
        write_payload(&mut buf, 123, 0, sent_us, 100).unwrap();
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(
            text.starts_with(r#"{"seq":123,"sent_us":1700000000000000,"temp":22.3,"pad":"xx"#),
            "{text}"
        );
        assert_eq!(
            write_payload(&mut buf, 123, 0, sent_us, 10),
            Err(minimum + 2)
        );
        // The phase shifts the sawtooth, never the size.
        write_payload(&mut buf, 123, 80, sent_us, 100).unwrap();
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(text.contains(r#""temp":20.3,"#), "{text}");
        assert_eq!(buf.len(), 100);
        let phases: std::collections::HashSet<u64> = (0..100).map(temp_phase).collect();
        assert_eq!(phases.len(), 100, "100 devices in a row cover every phase");
    }

    #[test]
    fn plan_rejects_a_payload_too_small_for_the_largest_seq() {
        let args = IngestArgs {
            devices: 1,
            messages: 1_000_000,
            qos: 1,
            payload_size: 50,
            rate: 0,
            inflight: 10,
            timeout: 10,
            vs_mosquitto: false,
            json: false,
            alert_rules: 0,
            presence_probes: 0,
            vigil_bin: None,
            broker: None,
        };
        let e = LoadPlan::from_args(&args).unwrap_err().to_string();
        assert!(e.contains("--payload-size 50 is too small"), "{e}");
        assert!(LoadPlan::from_args(&IngestArgs {
            payload_size: 100,
            ..args
        })
        .is_ok());
    }

    #[test]
    fn shares_add_up() {
        let plan = LoadPlan {
            devices: 7,
            messages: 100,
            qos: QoS::AtLeastOnce,
            payload_size: 100,
            rate: 0,
            inflight: 1,
        };
        let shares: Vec<u64> = (0..7).map(|d| plan.share(d)).collect();
        assert_eq!(shares.iter().sum::<u64>(), 100);
        assert_eq!(shares, [15, 15, 14, 14, 14, 14, 14]);
    }

    #[test]
    fn rate_interleaves_devices() {
        let plan = LoadPlan {
            devices: 4,
            messages: 100,
            qos: QoS::AtMostOnce,
            payload_size: 100,
            rate: 1000,
            inflight: 1,
        };
        let start = Instant::now();
        assert_eq!(due_at(&plan, start, 0, 0), Some(start));
        assert_eq!(
            due_at(&plan, start, 3, 0),
            Some(start + Duration::from_millis(3))
        );
        assert_eq!(
            due_at(&plan, start, 1, 2),
            Some(start + Duration::from_millis(9))
        );
        assert_eq!(due_at(&LoadPlan { rate: 0, ..plan }, start, 1, 2), None);
    }

    #[test]
    fn topics_round_trip() {
        assert_eq!(topic_device(&device_topic(42)), Some(42));
        assert_eq!(topic_device("bench-dev-x/telemetry"), None);
        assert_eq!(topic_device("kitchen/temp"), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[5], 50.0), Some(5));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        let l = Latency::of(&[1000, 2000, 3000]).unwrap();
        assert_eq!(
            (l.p50_ms, l.p99_ms, l.max_ms, l.samples),
            (2.0, 3.0, 3.0, 3)
        );
    }

    #[test]
    fn sse_parser_handles_split_input_comments_and_crlf() {
        let stream = b": keep-alive\n\nevent: flushed\r\ndata: {\"a\":1}\r\n\r\ndata: one\ndata:two\n\nevent: resync\ndata: {}\n\nevent: empty\n\n";
        // Every split point must give the same events.
        for split in 0..stream.len() {
            let mut parser = SseParser::default();
            let mut events = Vec::new();
            parser.feed(&stream[..split], &mut events);
            parser.feed(&stream[split..], &mut events);
            assert_eq!(
                events,
                [
                    SseEvent {
                        event: "flushed".into(),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        event: "message".into(),
                        data: "one\ntwo".into()
                    },
                    SseEvent {
                        event: "resync".into(),
                        data: "{}".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn chunked_decoder_handles_any_split() {
        let body =
            b"5\r\nhello\r\n7;ext=1\r\n, world\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n";
        for split in 0..body.len() {
            let mut decoder = ChunkedDecoder::default();
            let mut out = Vec::new();
            let first = decoder.feed(&body[..split], &mut out).unwrap();
            let second = decoder.feed(&body[split..], &mut out).unwrap();
            assert!(
                !first || split >= body.len() - 15,
                "done too early at {split}"
            );
            assert!(second, "not done at {split}");
            assert_eq!(out, b"hello, world0123456789", "split at {split}");
        }
        let mut out = Vec::new();
        assert!(!ChunkedDecoder::default()
            .feed(b"5\r\nhel", &mut out)
            .unwrap());
        assert!(ChunkedDecoder::default().feed(b"zz\r\n", &mut out).is_err());
        assert!(ChunkedDecoder::default()
            .feed(b"2\r\nabXX", &mut out)
            .is_err());
    }

    #[test]
    fn responses_parse_chunked_sized_and_errors() {
        let chunked = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"[1]".to_vec()));
        let sized = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(sized).unwrap(), (404, b"{}".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_head(b"SSH-2.0 hello").is_err());
    }

    #[test]
    fn vm_hwm_is_read_from_proc_status() {
        let status = "Name:\tvigil\nVmPeak:\t  200 kB\nVmHWM:\t   84312 kB\nVmRSS:\t 80000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(84312));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    fn device(share: u64, written: u64, acked: &[u64]) -> DeviceOutcome {
        let mut bits = vec![0; share.div_ceil(64) as usize];
        for &seq in acked {
            bit_set(&mut bits, seq);
        }
        DeviceOutcome {
            share,
            written,
            acked: acked.len() as u64,
            acked_seqs: bits,
            ..DeviceOutcome::default()
        }
    }

    #[test]
    fn analysis_counts_loss_duplicates_and_latency() {
        // Device 0 wrote seqs 0..3, all acked; device 1 wrote 0..2, acked 0.
        let load = LoadOutcome {
            devices: vec![device(3, 3, &[0, 1, 2]), device(3, 2, &[0])],
        };
        let row = |id, device, seq, sent_us| StoredRow {
            id,
            device,
            seq,
            sent_us,
        };
        let rows = vec![
            row(4, 1, 0, 1_000),
            row(1, 0, 0, 1_000),
            row(2, 0, 2, 2_000),
            row(3, 0, 2, 2_000),  // a duplicate
            row(5, 9, 0, 1_000),  // no such device
            row(6, 0, 99, 1_000), // no such seq
        ];
        let flushes = [
            FlushRecord {
                received_us: 5_000,
                last_message_id: 2,
                committed_at: 4_500,
            },
            FlushRecord {
                received_us: 9_000,
                last_message_id: 4,
                committed_at: 8_000,
            },
        ];
        let a = analyse(&load, true, rows, &flushes);
        assert_eq!(a.stored, 3);
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.unexpected, 2);
        // Lost: device 0 seq 1 (acked), device 1 seq 1 (not acked).
        assert_eq!(a.lost, 2);
        assert_eq!(a.acked_lost, Some(1));
        assert_eq!(a.latency_us, [3_000, 4_000, 8_000]);
        assert_eq!(a.commit_latency_us, [2_500, 3_500, 7_000]);
        assert_eq!(a.uncovered, 0);
        assert_eq!(a.last_commit_received_us, Some(9_000));
        assert_eq!(rate(3, Some(1_000), Some(9_000)), Some(375.0));

        // Without a covering flush, rows are stored but have no latency.
        let a = analyse(&load, false, vec![row(7, 1, 1, 0)], &flushes);
        assert_eq!((a.stored, a.uncovered, a.acked_lost), (1, 1, None));
        assert!(a.latency_us.is_empty());
    }

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 1234 567 13 14 20 0 9 0 100 2000 300";
        let parse = |name: &str| parse_proc_stat(&format!("4242 ({name}) {tail}"));
        let expected = Some(CpuTicks {
            user: 1234,
            system: 567,
        });
        assert_eq!(parse("vigil"), expected);
        assert_eq!(parse("a b c"), expected, "spaces in the name");
        assert_eq!(parse("x) 9 9 (y"), expected, "parentheses in the name");
        assert_eq!(parse(")"), expected);
        assert_eq!(parse_proc_stat("4242 (vigil) S 1 2"), None, "too short");
        assert_eq!(parse_proc_stat("4242 vigil S 1 2"), None, "no name");
        assert_eq!(
            parse_proc_stat("1 (v) S 1 2 3 4 5 6 7 8 9 10 x 567 13"),
            None,
            "not a number"
        );
        // This process exists and has run.
        let me = CpuSample::take(Some(std::process::id())).unwrap();
        assert!(me.ticks.user + me.ticks.system < u64::MAX);
        assert!(clock_ticks_per_s().is_some_and(|hz| hz >= 1));
        assert!(CpuSample::take(None).is_none());
    }

    #[test]
    fn cpu_report_is_per_message() {
        let at = Instant::now();
        let start = CpuSample {
            ticks: CpuTicks {
                user: 100,
                system: 50,
            },
            at,
        };
        let end = CpuSample {
            ticks: CpuTicks {
                user: 400,
                system: 150,
            },
            at: at + Duration::from_secs(2),
        };
        let c = CpuReport::between(start, end, 100, 20_000);
        assert_eq!((c.user_s, c.system_s, c.cpu_s), (3.0, 1.0, 4.0));
        assert_eq!((c.wall_s, c.cores), (2.0, 2.0));
        assert_eq!(c.cpu_us_per_msg, Some(200.0));
        assert_eq!(CpuReport::between(start, end, 100, 0).cpu_us_per_msg, None);
        let text = opt_cpu(Some(c), "stored");
        assert!(text.ends_with("= 200.0 µs per stored message"), "{text}");
    }

    #[test]
    fn probe_names_round_trip() {
        assert_eq!(probe_index(&probe_device(7)), Some(7));
        assert_eq!(probe_index(&probe_topic(12)), Some(12));
        assert_eq!(probe_topic(3), "bench-probe-3/state");
        assert_eq!(probe_index("bench-probe-"), None);
        assert_eq!(probe_index("bench-probe-+1"), None);
        assert_eq!(probe_index("bench-probe-1/other"), None);
        assert_eq!(probe_index(&device_topic(1)), None);
        assert_eq!(topic_device(&probe_topic(1)), None);
    }

    #[test]
    fn mqtt_packets_are_encoded_by_hand_correctly() {
        let mut n = Vec::new();
        for (value, bytes) in [
            (0, vec![0]),
            (127, vec![0x7f]),
            (128, vec![0x80, 1]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 1]),
            (268_435_455, vec![0xff, 0xff, 0xff, 0x7f]),
        ] {
            n.clear();
            put_remaining_length(&mut n, value);
            assert_eq!(n, bytes, "{value}");
        }
        assert_eq!(
            mqtt_connect("ab", 30),
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 2, b'a', b'b']
        );
        assert_eq!(
            mqtt_publish_qos1("t/x", 1, b"{}"),
            [0x32, 9, 0, 3, b't', b'/', b'x', 0, 1, b'{', b'}']
        );
        // A long payload needs a two-byte remaining length.
        let long = mqtt_publish_qos1("t", 258, &[b'x'; 200]);
        assert_eq!(&long[..7], [0x32, 205, 1, 0, 1, b't', 1]);
        assert_eq!(long[7], 2);
        assert_eq!(long.len(), 3 + 205);
    }

    #[test]
    fn bench_rules_spread_their_thresholds() {
        let rules: Vec<serde_json::Value> = (0..20).map(|i| bench_rule(i, 20)).collect();
        let test = |r: &serde_json::Value| r["condition"]["metric"]["test"]["above"].as_f64();
        assert_eq!(test(&rules[0]), Some(29.0));
        assert_eq!(test(&rules[19]), Some(21.0));
        let for_s: Vec<f64> = rules
            .iter()
            .map(|r| r["condition"]["metric"]["for_s"].as_f64().unwrap())
            .collect();
        assert_eq!(&for_s[..6], [1.0, 2.0, 3.0, 4.0, 5.0, 1.0]);
        let first = &rules[0];
        assert_eq!(first["condition"]["metric"]["metric"], RULE_METRIC);
        assert_eq!(first["condition"]["metric"]["hysteresis"], 0.2);
        assert_eq!(first["enabled"], true);
        assert_eq!(test(&bench_rule(0, 1)), Some(29.0));
    }

    #[tokio::test]
    async fn events_are_tallied_and_offline_events_reach_their_probe() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(tally_events(rx, vec![probe_tx], stopped));
        let presence = |device: &str, to: &str| {
            StreamNote::Presence(PresenceSeen {
                device: device.into(),
                at: 5,
                to: to.into(),
                received_us: 9,
            })
        };
        for note in [
            StreamNote::Alert("fired".into()),
            StreamNote::Alert("fired".into()),
            StreamNote::Alert("cleared".into()),
            StreamNote::Alert("acknowledged".into()),
            StreamNote::Alert("odd".into()),
            presence("bench-probe-0", "online"),
            presence("bench-probe-0", "offline"),
            presence("bench-probe-1", "offline"),
            presence("bench-dev-0", "offline"),
            StreamNote::Resync,
        ] {
            tx.send(note).unwrap();
        }
        let first = probe_rx.recv().await.unwrap();
        assert_eq!(
            (first.device.as_str(), first.to.as_str()),
            ("bench-probe-0", "offline")
        );
        stop.send(()).unwrap();
        let seen = task.await.unwrap();
        let a = seen.alerts;
        assert_eq!((a.fired, a.cleared, a.acknowledged, a.other), (2, 1, 1, 1));
        assert_eq!((seen.presence_events, seen.resyncs), (4, 1));
        assert!(
            probe_rx.try_recv().is_err(),
            "one offline event for probe 0 only"
        );
    }

    #[test]
    fn mosquitto_conf_lifts_the_limits() {
        let conf = mosquitto_conf(18830);
        assert!(conf.contains("listener 18830 127.0.0.1\n"));
        assert!(conf.contains("persistence false\n"));
        assert!(conf.contains("max_queued_messages 0\n"));
        assert!(conf.contains("max_inflight_messages 0\n"));
    }
}
