//! Vigil's configuration: a TOML file, then flags and `VIGIL_*` variables on
//! top (the shells apply those), with defaults that are safe: every listener
//! on loopback.
//!
//! ```toml
//! data_dir = "/var/lib/vigil"
//! [broker]
//! mqtt_listen = "127.0.0.1:1883"
//! ws_listen = "127.0.0.1:8083"
//! tls_listen = "0.0.0.0:8883"
//! wss_listen = "0.0.0.0:8084"
//! tls_client_certs = "optional"   # or "required", "off"
//! ws_path = "/mqtt"
//! max_payload = 1048576
//! [auth]
//! anonymous = "loopback"          # or "off"
//! device_publish = ["%u/#", "+/%u/#", "%CN/#", "+/%CN/#"]
//! [http]
//! listen = "127.0.0.1:8080"
//! [store]
//! retention_days = 30
//! max_bytes = 10737418240
//! [devices]
//! topic_level = 0
//! [coap]
//! discovery = true                # multicast discovery at start and every 300 s
//! devices = ["192.0.2.7", "[fe80::1%eth0]:5683"]
//! ```

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use vigil_broker::BrokerConfig;
use vigil_core::presence::PresenceConfig;
use vigil_core::{ConventionsConfig, DeviceRule};

use crate::auth::AuthConfig;
use crate::coap::CoapConfig;
use crate::error::EngineError;

/// Everything Vigil can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database lives. Default: the platform's data folder
    /// (`~/.local/share/vigil` on Linux).
    pub data_dir: PathBuf,
    /// The embedded broker.
    pub broker: BrokerConfig,
    /// Who may log in to it, and their default rights.
    pub auth: AuthConfig,
    /// The HTTP API of `vigil serve`.
    pub http: HttpConfig,
    /// Storage and retention.
    pub store: StoreConfig,
    /// How devices are named from topics when no convention names them.
    pub devices: DeviceRule,
    /// Device conventions (Homie, Home Assistant, Tasmota, ...).
    pub conventions: ConventionsConfig,
    /// How presence is judged.
    pub presence: PresenceConfig,
    /// Where alerts go besides the event stream.
    pub alerts: AlertsConfig,
    /// CoAP devices: discovery, probes, observe.
    pub coap: CoapConfig,
}

/// Where alerts go besides the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// URLs (`http://`) that receive every alert change as a JSON POST,
    /// retried with backoff until they answer 2xx.
    pub webhooks: Vec<String>,
    /// The most deliveries kept waiting while a receiver is down (the oldest
    /// beyond it are dropped, with a warning).
    pub webhook_queue: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            webhook_queue: 10_000,
        }
    }
}

/// Where `vigil serve` answers HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP API and live event stream.
    pub listen: SocketAddr,
}

/// Storage and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Messages and samples older than this many days are deleted (none: keep all).
    pub retention_days: Option<u32>,
    /// The database is kept under this many bytes by deleting the oldest
    /// messages (none: no limit).
    pub max_bytes: Option<u64>,
    /// A batch is committed when it has this many messages...
    pub flush_rows: usize,
    /// ...or when its first message has waited this long, whichever is first.
    pub flush_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            broker: BrokerConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            store: StoreConfig::default(),
            devices: DeviceRule::default(),
            conventions: ConventionsConfig::default(),
            presence: PresenceConfig::default(),
            alerts: AlertsConfig::default(),
            coap: CoapConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: Some(30),
            max_bytes: None,
            flush_rows: 16384,
            flush_interval_ms: 100,
        }
    }
}

/// The platform's data folder for Vigil, or `./vigil-data` where there is none.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "vigil")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("vigil-data"))
}

impl Config {
    /// Reads a configuration file; settings it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::Config(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            ))
        })?;
        Config::from_toml(&text)
            .map_err(|e| EngineError::Config(format!("in {}: {e}", path.display())))
    }

    /// Parses a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, EngineError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| EngineError::Config(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.store.flush_rows == 0 {
            return Err(EngineError::Config(
                "store.flush_rows must be at least 1".into(),
            ));
        }
        if self.store.flush_interval_ms == 0 || self.store.flush_interval_ms > 10_000 {
            return Err(EngineError::Config(
                "store.flush_interval_ms must be between 1 and 10000".into(),
            ));
        }
        if !self.broker.ws_path.starts_with('/') {
            return Err(EngineError::Config(format!(
                "broker.ws_path must start with '/', not '{}'",
                self.broker.ws_path
            )));
        }
        self.broker.validate().map_err(EngineError::Config)?;
        self.conventions.validate().map_err(EngineError::Config)?;
        self.presence.validate().map_err(EngineError::Config)?;
        for url in &self.alerts.webhooks {
            crate::webhook::check_url(url)
                .map_err(|e| EngineError::Config(format!("alerts.webhooks: {e}")))?;
        }
        self.coap.validate().map_err(EngineError::Config)?;
        if self.alerts.webhook_queue == 0 {
            return Err(EngineError::Config(
                "alerts.webhook_queue must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("vigil.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_only() {
        let c = Config::default();
        assert!(c.broker.mqtt_listen.ip().is_loopback());
        assert!(c.broker.ws_listen.unwrap().ip().is_loopback());
        assert!(c.http.listen.ip().is_loopback());
        // Only TLS reaches the network.
        assert!(!c.broker.tls_listen.unwrap().ip().is_loopback());
        assert!(!c.broker.allow_insecure_remote);
        assert_eq!(c.broker.max_payload, 1024 * 1024);
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c = Config::from_toml("[broker]\nmax_payload = 2048\n[devices]\ntopic_level = 1\n")
            .unwrap();
        assert_eq!(c.broker.max_payload, 2048);
        assert_eq!(c.devices.topic_level, 1);
        assert_eq!(c.http, HttpConfig::default());
    }

    #[test]
    fn mistakes_are_named() {
        let e = Config::from_toml("[broker]\nmqtt_lisen = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt_lisen"), "{e}");
        let e = Config::from_toml("[broker]\nmqtt_listen = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt_listen") || e.contains("invalid"), "{e}");
        let e = Config::from_toml("[store]\nflush_rows = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flush_rows"), "{e}");
        let e = Config::from_toml("[broker]\nmqtt_listen = \"0.0.0.0:1883\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allow_insecure_remote"), "{e}");
        Config::from_toml(
            "[broker]\nmqtt_listen = \"0.0.0.0:1883\"\nallow_insecure_remote = true\n",
        )
        .unwrap();
    }
}
