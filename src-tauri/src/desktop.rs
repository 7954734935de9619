//! The engine as the desktop app holds it, its own settings, and the
//! notifications it showed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vigil_engine::{Config, Engine};

/// A notification the app showed: one alert, or a summary of the alerts
/// held back during a storm.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    /// The notification's id (a click on it reports this).
    pub id: i32,
    /// When, µs since 1970.
    pub at: i64,
    /// The alert's id; `None` for a summary.
    pub alert: Option<i64>,
    /// The device it is about (a click opens it); `None` for a summary
    /// (a click opens the Alerts screen).
    pub device: Option<String>,
    /// The notification's title.
    pub title: String,
    /// Its text.
    pub body: String,
}

impl Notice {
    /// What a click on it opens.
    pub fn opens(&self) -> Open {
        match &self.device {
            Some(device) => Open::Device(device.clone()),
            None => Open::Alerts,
        }
    }
}

/// A place in the window the shell asks the UI to open (the
/// `vigil://open` event): a device's page, or the Alerts screen.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Open {
    /// `{"device": "<id>"}`
    Device(String),
    /// `"alerts"`
    Alerts,
}

/// The desktop app's own settings (the engine's are in its configuration
/// file), kept in `desktop.json` in the data folder and changed from the
/// Settings screen or the tray.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Closing the window keeps Vigil watching from the tray (else it quits).
    pub close_to_tray: bool,
    /// Alerts pop up as desktop notifications.
    pub notify: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            close_to_tray: true,
            notify: true,
        }
    }
}

impl Settings {
    /// Reads `path`; the defaults when it does not exist. A file that cannot
    /// be read is reported and left as it is (the defaults apply until the
    /// user saves a setting).
    pub fn load(path: &Path) -> Settings {
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; using the default settings", path.display());
                Settings::default()
            }
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(
                    "{} is not valid desktop settings ({e}); using the defaults until a setting is saved",
                    path.display()
                );
                Settings::default()
            }),
        }
    }

    /// Writes them to `path` whole or not at all (a temporary file renamed).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}

/// Alert storms: at most [`Pacer::BURST`] notifications in
/// [`Pacer::WINDOW`]; the alerts past that are held and told as one summary
/// when the window ends (a network cut that takes 40 devices offline makes
/// five notifications and one "35 more alerts", not forty).
#[derive(Debug)]
pub struct Pacer {
    started: Instant,
    shown: u32,
    held: u32,
}

impl Pacer {
    /// Notifications shown one by one per window.
    pub const BURST: u32 = 4;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(30);

    /// A pacer whose first window starts at `now`.
    pub fn new(now: Instant) -> Pacer {
        Pacer {
            started: now,
            shown: 0,
            held: 0,
        }
    }

    /// Whether an alert at `now` is shown on its own (else it is held).
    pub fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.started) >= Self::WINDOW && self.held == 0 {
            self.started = now;
            self.shown = 0;
        }
        if self.shown < Self::BURST && self.held == 0 {
            self.shown += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }

    /// At the end of a window with alerts held: how many (to be told in one
    /// summary), and a new window starts.
    pub fn summary_due(&mut self, now: Instant) -> Option<u32> {
        if self.held == 0 || now.duration_since(self.started) < Self::WINDOW {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        self.started = now;
        self.shown = 1;
        Some(held)
    }
}

/// The running engine, the API router over it, and what the app showed.
pub struct Desktop {
    /// The engine.
    pub engine: Arc<Engine>,
    /// `vigil-api`'s router over it, called in-process.
    pub api: axum::Router,
    notices: Mutex<Vec<Notice>>,
    settings: Mutex<Settings>,
    settings_path: PathBuf,
    _stopping: watch::Sender<bool>,
}

/// The most notifications remembered (oldest forgotten first).
const NOTICES_KEPT: usize = 500;

impl Desktop {
    /// Starts the engine with `config`.
    pub async fn start(config: Config) -> Result<Desktop, vigil_engine::EngineError> {
        let settings_path = config.data_dir.join("desktop.json");
        let engine = Arc::new(Engine::start(config).await?);
        let (stopping, stop_rx) = watch::channel(false);
        let api = vigil_api::router(engine.clone(), stop_rx);
        Ok(Desktop {
            engine,
            api,
            notices: Mutex::new(Vec::new()),
            settings: Mutex::new(Settings::load(&settings_path)),
            settings_path,
            _stopping: stopping,
        })
    }

    /// The desktop settings in force.
    pub fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Saves `settings` to `desktop.json`, then puts them in force.
    pub fn set_settings(&self, settings: Settings) -> std::io::Result<()> {
        let mut current = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        settings.save(&self.settings_path)?;
        *current = settings;
        Ok(())
    }

    /// Remembers a notification about to be shown, giving it its id.
    pub fn noticed(&self, mut notice: Notice) -> Notice {
        let mut notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        notice.id = notices.last().map_or(1, |n| n.id.wrapping_add(1).max(1));
        if notices.len() >= NOTICES_KEPT {
            notices.remove(0);
        }
        notices.push(notice.clone());
        notice
    }

    /// The notification with this id, if still remembered.
    pub fn notice(&self, id: i32) -> Option<Notice> {
        let notices = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        notices.iter().rev().find(|n| n.id == id).cloned()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn settings_survive_a_restart_and_a_broken_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desktop.json");
        assert_eq!(Settings::load(&path), Settings::default());
        let quiet = Settings {
            close_to_tray: false,
            notify: false,
        };
        quiet.save(&path).unwrap();
        assert_eq!(Settings::load(&path), quiet);

        std::fs::write(&path, "{\"close_to_tray\": \"sometimes\"").unwrap();
        assert_eq!(Settings::load(&path), Settings::default());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"close_to_tray\": \"sometimes\"",
            "kept for the user to mend"
        );
        // A file from an older version with fewer keys fills in the rest.
        std::fs::write(&path, "{\"notify\": false}").unwrap();
        assert_eq!(
            Settings::load(&path),
            Settings {
                close_to_tray: true,
                notify: false
            }
        );
    }

    #[test]
    fn a_storm_of_alerts_makes_a_few_notifications_and_one_summary() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let admitted = (0..40).filter(|_| pacer.admit(at(1))).count();
        assert_eq!(admitted, Pacer::BURST as usize);
        assert_eq!(
            pacer.summary_due(at(10)),
            None,
            "not before the window ends"
        );
        assert!(!pacer.admit(at(20)), "held while a summary is pending");
        assert_eq!(pacer.summary_due(at(30)), Some(37));
        assert_eq!(pacer.summary_due(at(31)), None);
        // The summary counts in the new window: three more fit in it.
        assert_eq!((0..5).filter(|_| pacer.admit(at(32))).count(), 3);
        // A quiet spell later, alerts show one by one again.
        let mut pacer = Pacer::new(t0);
        assert!(pacer.admit(at(0)));
        assert!(pacer.admit(at(100)));
        assert!(pacer.admit(at(100)));
    }

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
