//! `vigil serve`: Vigil without a window.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use vigil_engine::{Config, Engine};

/// Flags of `vigil serve`; each overrides the configuration file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where the database lives [default: the platform's data folder]
    #[arg(long, env = "VIGIL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML configuration file
    #[arg(long, env = "VIGIL_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT over TCP [default: 127.0.0.1:1883]
    #[arg(long, env = "VIGIL_MQTT_LISTEN")]
    mqtt_listen: Option<SocketAddr>,
    /// MQTT over WebSocket [default: 127.0.0.1:8083]
    #[arg(long, env = "VIGIL_WS_LISTEN")]
    ws_listen: Option<SocketAddr>,
    /// MQTT over TLS, or `off` [default: 0.0.0.0:8883]
    #[arg(long, env = "VIGIL_TLS_LISTEN", value_parser = listen_or_off)]
    tls_listen: Option<Listen>,
    /// MQTT over secure WebSocket, or `off` [default: 0.0.0.0:8084]
    #[arg(long, env = "VIGIL_WSS_LISTEN", value_parser = listen_or_off)]
    wss_listen: Option<Listen>,
    /// Let plain MQTT (TCP, WebSocket) listen beyond loopback: unencrypted,
    /// passwords included. Vigil warns at every start.
    #[arg(long, env = "VIGIL_ALLOW_INSECURE_REMOTE")]
    allow_insecure_remote: bool,
    /// The HTTP API and live events [default: 127.0.0.1:8080]
    #[arg(long, env = "VIGIL_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// The largest accepted payload in bytes [default: 1048576]
    #[arg(long, env = "VIGIL_MAX_PAYLOAD")]
    max_payload: Option<usize>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(d) = &self.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(a) = self.mqtt_listen {
            config.broker.mqtt_listen = a;
        }
        if let Some(a) = self.ws_listen {
            config.broker.ws_listen = Some(a);
        }
        if let Some(Listen(a)) = self.tls_listen {
            config.broker.tls_listen = a;
        }
        if let Some(Listen(a)) = self.wss_listen {
            config.broker.wss_listen = a;
        }
        if self.allow_insecure_remote {
            config.broker.allow_insecure_remote = true;
        }
        if let Some(a) = self.http_listen {
            config.http.listen = a;
        }
        if let Some(m) = self.max_payload {
            config.broker.max_payload = m;
        }
        config.validate()?;
        Ok(config)
    }
}

/// A listener's address, or none (`off`).
#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn listen_or_off(text: &str) -> Result<Listen, String> {
    if text == "off" {
        return Ok(Listen(None));
    }
    text.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{e}: give an address such as 0.0.0.0:8883, or `off`"))
}

/// Runs until SIGINT or SIGTERM, then stops in order and returns.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    vigil_engine::logging::init();
    let config = args.config()?;
    // Bind HTTP before starting anything, so a taken port costs nothing.
    let http = tokio::net::TcpListener::bind(config.http.listen).await.with_context(|| {
        format!(
            "cannot listen on {}; another program may be using it — set `http.listen` (--http-listen) to another address",
            config.http.listen
        )
    })?;
    let http_addr = http.local_addr()?;
    // Listen for signals before announcing readiness: a SIGTERM that arrives
    // right after the ready line must still stop Vigil in order.
    let signals = Signals::install()?;
    let engine = Arc::new(Engine::start(config.clone()).await?);
    let ready = serde_json::json!({
        "event": "ready",
        "mqtt": engine.mqtt_addr().to_string(),
        "ws": engine.ws_addr().map(|a| a.to_string()),
        "ws_path": config.broker.ws_path,
        "tls": engine.tls_addr().map(|a| a.to_string()),
        "wss": engine.wss_addr().map(|a| a.to_string()),
        "http": http_addr.to_string(),
        "data_dir": config.data_dir,
    });
    println!("{ready}");
    tracing::info!(
        "Vigil is running — open http://{} — MQTT: mqtt://{}  WebSocket: {}  TLS: {}  secure WebSocket: {}  data: {}",
        http_addr,
        engine.mqtt_addr(),
        engine
            .ws_addr()
            .map(|a| format!("ws://{a}{}", config.broker.ws_path))
            .unwrap_or_else(|| "off".into()),
        engine
            .tls_addr()
            .map(|a| format!("mqtts://{a}"))
            .unwrap_or_else(|| "off".into()),
        engine
            .wss_addr()
            .map(|a| format!("wss://{a}{}", config.broker.ws_path))
            .unwrap_or_else(|| "off".into()),
        config.data_dir.display()
    );

    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let app = vigil_api::router(engine.clone(), stop_rx.clone()).fallback(crate::ui::serve);
    let mut stop_wait = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(http, app)
            .with_graceful_shutdown(async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            })
            .await
    });
    signals.wait().await;
    tracing::info!("stopping: closing clients and storing every accepted message");
    let _ = stopping.send(true);
    match tokio::time::timeout(std::time::Duration::from_secs(5), server).await {
        Ok(Ok(Err(e))) => tracing::warn!("the HTTP server stopped with an error: {e}"),
        Err(_) => tracing::warn!("HTTP requests still running after 5 s were cut off"),
        _ => {}
    }
    // Requests still running hold the engine; it stops all the same.
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered up front.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
