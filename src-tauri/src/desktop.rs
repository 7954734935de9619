//! The engine as the desktop app holds it, and its settings.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use vigil_engine::{Config, Engine};

/// An alert notification the app showed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    /// When, µs since 1970.
    pub at: i64,
    /// The alert's id.
    pub alert: i64,
    /// The device it is about (the notification opens it).
    pub device: String,
    /// The notification's title.
    pub title: String,
    /// Its text.
    pub body: String,
}

/// The running engine, the API router over it, and what the app showed.
pub struct Desktop {
    /// The engine.
    pub engine: Arc<Engine>,
    /// `vigil-api`'s router over it, called in-process.
    pub api: axum::Router,
    notices: Mutex<Vec<Notice>>,
    _stopping: watch::Sender<bool>,
}

/// The most notifications remembered (oldest forgotten first).
const NOTICES_KEPT: usize = 500;

impl Desktop {
    /// Starts the engine with `config`.
    pub async fn start(config: Config) -> Result<Desktop, vigil_engine::EngineError> {
        let engine = Arc::new(Engine::start(config).await?);
        let (stopping, stop_rx) = watch::channel(false);
        let api = vigil_api::router(engine.clone(), stop_rx);
        Ok(Desktop {
            engine,
            api,
            notices: Mutex::new(Vec::new()),
            _stopping: stopping,
        })
    }

    /// Remembers a notification shown.
    pub fn noticed(&self, notice: Notice) {
        let mut notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        if notices.len() >= NOTICES_KEPT {
            notices.remove(0);
        }
        notices.push(notice);
    }

    /// The notifications shown since start, oldest first.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The configuration: `VIGIL_CONFIG` (a TOML file) if set, else the
/// defaults — the same data folder as `vigil serve`, so both shells see one
/// installation — with `VIGIL_DATA_DIR` and the listeners' `VIGIL_*_LISTEN`
/// variables on top (as `vigil serve` reads them).
pub fn config_from_env() -> Result<Config, Box<dyn std::error::Error>> {
    let mut config = match std::env::var_os("VIGIL_CONFIG") {
        Some(path) => Config::from_file(&PathBuf::from(path))?,
        None => Config::default(),
    };
    if let Some(dir) = std::env::var_os("VIGIL_DATA_DIR") {
        config.data_dir = PathBuf::from(dir);
    }
    let listen = |name: &str| -> Result<Option<Option<std::net::SocketAddr>>, String> {
        match std::env::var(name) {
            Err(_) => Ok(None),
            Ok(v) if v == "off" => Ok(Some(None)),
            Ok(v) => v
                .parse()
                .map(|a| Some(Some(a)))
                .map_err(|e| format!("{name}={v}: {e}")),
        }
    };
    if let Some(Some(a)) = listen("VIGIL_MQTT_LISTEN")? {
        config.broker.mqtt_listen = a;
    }
    if let Some(a) = listen("VIGIL_WS_LISTEN")? {
        config.broker.ws_listen = a;
    }
    if let Some(a) = listen("VIGIL_TLS_LISTEN")? {
        config.broker.tls_listen = a;
    }
    if let Some(a) = listen("VIGIL_WSS_LISTEN")? {
        config.broker.wss_listen = a;
    }
    config.validate()?;
    Ok(config)
}

/// Writes an export the user asked for. A private key (`.key`, or PEM that
/// holds one) is written readable by its owner only, as `vigil certs export`
/// does.
pub fn write_export(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let private = path.extension().is_some_and(|e| e == "key")
        || contents.windows(11).any(|w| w == b"PRIVATE KEY");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)
}

/// Whether closing the window keeps Vigil running in the tray
/// (`VIGIL_CLOSE_TO_TRAY=0` quits instead).
pub fn close_to_tray() -> bool {
    std::env::var("VIGIL_CLOSE_TO_TRAY").map_or(true, |v| v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn exported_keys_are_private_and_other_exports_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let key = dir.path().join("ox1.key");
        write_export(&key, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert_eq!(mode(&key), 0o600);
        let renamed = dir.path().join("saved.txt");
        write_export(&renamed, b"-----BEGIN PRIVATE KEY-----\n").unwrap();
        assert_eq!(
            mode(&renamed),
            0o600,
            "a key under another name is private too"
        );
        let csv = dir.path().join("messages.csv");
        write_export(&csv, b"topic,payload\n").unwrap();
        assert_eq!(std::fs::read(&csv).unwrap(), b"topic,payload\n");
        assert_ne!(mode(&csv), 0o600);
    }
}
