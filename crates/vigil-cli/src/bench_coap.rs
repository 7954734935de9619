//! `vigil bench coap`: many observed CoAP resources notifying into a fresh
//! `vigil serve`, and whether every notification is stored.
//!
//! 1. Simulated devices, each one UDP socket on loopback in this process
//!    (coap-lite messages): each lists `--resources-per-device` observable
//!    text resources in its `/.well-known/core`, answers GETs and observe
//!    registrations, and, once told to, sends every observed resource a
//!    non-confirmable notification `--rate` times a second (Observe numbers
//!    rising, the payload a number).
//! 2. A fresh `vigil serve` (this executable, or `--vigil-bin`) with the
//!    devices' addresses in `coap.devices` probes and observes them all; the
//!    bench waits until `GET /api/coap` lists every resource as observed.
//! 3. The load runs for `--seconds`; the server's CPU time (user + system,
//!    `/proc/<pid>/stat`) is read at its start and end.
//! 4. Then it waits until `GET /api/stats` stops growing and compares the
//!    stored messages with the notifications sent: the difference is lost.
//!
//! The devices are ours, not a CoAP stack of others': the point is the load
//! Vigil takes (500 resources × 10/s), which no test device here sustains.
//! Their replies follow RFC 7252/7641 as far as the bench needs.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::time::{sleep, Instant};

use crate::bench::{clock_ticks_per_s, http_get_json, ApiStats, CpuReport, CpuSample, ServeChild};

/// `vigil bench coap` flags.
#[derive(clap::Args, Debug)]
pub struct CoapArgs {
    /// Simulated devices (one UDP socket each).
    #[arg(long, default_value_t = 5)]
    devices: u32,
    /// Observable resources per device.
    #[arg(long, default_value_t = 100)]
    resources_per_device: u32,
    /// Notifications per second per resource.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long the load runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Another build as the server.
    #[arg(long)]
    vigil_bin: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
struct CoapView {
    devices: Vec<CoapDevice>,
}

#[derive(Deserialize)]
struct CoapDevice {
    observing: Vec<String>,
}

/// A simulated device.
struct Device {
    socket: Arc<UdpSocket>,
    resources: u32,
}

/// What the devices share: whether to notify, and what they sent.
#[derive(Default)]
struct Load {
    notify: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    send_errors: AtomicU64,
}

pub async fn run(args: CoapArgs) -> Result<()> {
    if args.devices == 0 || args.resources_per_device == 0 || args.rate.is_nan() || args.rate <= 0.0
    {
        bail!("--devices, --resources-per-device and --rate must be positive");
    }
    let total = u64::from(args.devices) * u64::from(args.resources_per_device);
    let dir = tempfile::tempdir().context("cannot make a data folder")?;
    let load = Arc::new(Load::default());
    let mut addresses = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..args.devices {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        addresses.push(socket.local_addr()?);
        let device = Device {
            socket,
            resources: args.resources_per_device,
        };
        tasks.push(tokio::spawn(serve_device(device, load.clone(), args.rate)));
    }
    let list = addresses
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!("[coap]\ndevices = [{list}]\nprobe_every_s = 3600\n"),
    )?;
    let log = dir.path().join("serve.log");
    let extra: Vec<OsString> = vec!["--config".into(), config.into_os_string()];
    let server = ServeChild::start_with(
        args.vigil_bin.as_deref(),
        &dir.path().join("data"),
        &log,
        &extra,
    )
    .await?;
    let http = server.ready.http;
    println!(
        "vigil bench coap: {} devices × {} resources = {total} observed resources at {}/s each, {} s",
        args.devices, args.resources_per_device, args.rate, args.seconds
    );

    // Every resource observed.
    let started = Instant::now();
    loop {
        let view: CoapView = http_get_json(http, "/api/coap").await?;
        let observed: usize = view.devices.iter().map(|d| d.observing.len()).sum();
        if observed as u64 == total {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "only {observed} of {total} resources observed after 120 s (log: {})",
                log.display()
            );
        }
        sleep(Duration::from_millis(200)).await;
    }
    println!("  all observed in {:.1} s", started.elapsed().as_secs_f64());
    sleep(Duration::from_secs(1)).await;
    let before: ApiStats = http_get_json(http, "/api/stats").await?;

    // The load.
    let cpu_start = CpuSample::take(Some(server.pid));
    load.notify.store(true, Ordering::Relaxed);
    sleep(Duration::from_secs(args.seconds)).await;
    load.notify.store(false, Ordering::Relaxed);
    let cpu_end = CpuSample::take(Some(server.pid));
    let sent = load.sent.load(Ordering::Relaxed);

    // Everything stored (or the count stops growing for 5 s).
    let mut last = 0;
    let mut still_since = Instant::now();
    let stored = loop {
        let stats: ApiStats = http_get_json(http, "/api/stats").await?;
        let stored = stats.messages - before.messages;
        if stored >= sent || still_since.elapsed() > Duration::from_secs(5) {
            break stored;
        }
        if stored != last {
            last = stored;
            still_since = Instant::now();
        }
        sleep(Duration::from_millis(200)).await;
    };
    load.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    server.stop().await?;

    let hz = clock_ticks_per_s().context("no clock tick rate")?;
    let cpu = cpu_start
        .zip(cpu_end)
        .map(|(a, b)| CpuReport::between(a, b, hz, stored));
    let lost = sent.saturating_sub(stored);
    println!(
        "  sent {sent} notifications ({:.0}/s), stored {stored}, lost {lost} ({:.3}%), send errors {}",
        sent as f64 / args.seconds as f64,
        if sent > 0 { lost as f64 * 100.0 / sent as f64 } else { 0.0 },
        load.send_errors.load(Ordering::Relaxed)
    );
    if let Some(cpu) = cpu {
        println!(
            "  server CPU during the load: {}",
            serde_json::to_string(&cpu)?
        );
    }
    Ok(())
}

/// Each resource's observer: its address and the registration's token.
type Observers = Arc<tokio::sync::Mutex<Vec<Option<(SocketAddr, Vec<u8>)>>>>;

/// Answers one device's requests and, while `notify` is set, notifies its observers.
async fn serve_device(device: Device, load: Arc<Load>, rate: f64) {
    let observers: Observers = Arc::new(tokio::sync::Mutex::new(vec![
        None;
        device.resources as usize
    ]));
    let notifier = {
        let socket = device.socket.clone();
        let observers = observers.clone();
        let load = load.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut number: u32 = 1;
            let mut mid: u16 = 1;
            while !load.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if !load.notify.load(Ordering::Relaxed) {
                    continue;
                }
                number += 1;
                let targets: Vec<(SocketAddr, Vec<u8>)> =
                    observers.lock().await.iter().flatten().cloned().collect();
                for (peer, token) in targets {
                    mid = mid.wrapping_add(1);
                    let mut p = Packet::new();
                    p.header.set_type(MessageType::NonConfirmable);
                    p.header.code = MessageClass::Response(ResponseType::Content);
                    p.header.message_id = mid;
                    p.set_token(token);
                    p.set_observe_value(number);
                    p.add_option(CoapOption::ContentFormat, vec![]);
                    p.payload = number.to_string().into_bytes();
                    match p.to_bytes() {
                        Ok(bytes) if socket.send_to(&bytes, peer).await.is_ok() => {
                            load.sent.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            load.send_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    let core: String = (0..device.resources)
        .map(|i| format!("</r/{i}>;ct=0;obs"))
        .collect::<Vec<_>>()
        .join(",");
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, peer)) = device.socket.recv_from(&mut buf).await else {
            break;
        };
        let Ok(request) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        if request.header.get_type() != MessageType::Confirmable
            && request.header.get_type() != MessageType::NonConfirmable
        {
            continue;
        }
        let path: Vec<String> = request
            .get_option(CoapOption::UriPath)
            .map(|segments| {
                segments
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let mut reply = Packet::new();
        reply
            .header
            .set_type(if request.header.get_type() == MessageType::Confirmable {
                MessageType::Acknowledgement
            } else {
                MessageType::NonConfirmable
            });
        reply.header.message_id = request.header.message_id;
        reply.set_token(request.get_token().to_vec());
        match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [".well-known", "core"] => {
                reply.header.code = MessageClass::Response(ResponseType::Content);
                reply.add_option(CoapOption::ContentFormat, vec![40]);
                reply.payload = core.clone().into_bytes();
            }
            ["r", i] => match i
                .parse::<usize>()
                .ok()
                .filter(|i| *i < device.resources as usize)
            {
                Some(i) => {
                    reply.header.code = MessageClass::Response(ResponseType::Content);
                    match request.get_observe_value() {
                        Some(Ok(0)) => {
                            observers.lock().await[i] = Some((peer, request.get_token().to_vec()));
                            reply.set_observe_value(1);
                        }
                        Some(Ok(1)) => observers.lock().await[i] = None,
                        _ => {}
                    }
                    reply.add_option(CoapOption::ContentFormat, vec![]);
                    reply.payload = b"0".to_vec();
                }
                None => reply.header.code = MessageClass::Response(ResponseType::NotFound),
            },
            _ => reply.header.code = MessageClass::Response(ResponseType::NotFound),
        }
        if let Ok(bytes) = reply.to_bytes() {
            let _ = device.socket.send_to(&bytes, peer).await;
        }
    }
    notifier.abort();
}
