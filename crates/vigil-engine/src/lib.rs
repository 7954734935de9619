//! Vigil's wiring: the one API both shells call.
//!
//! [`Engine::start`] opens the store, starts the embedded broker and the
//! engine task, and puts retained messages back into the broker. Every source
//! reports [`vigil_core::Observation`]s on one bounded channel; the engine task
//! turns each into a stored record (device, decoded metrics) for the single
//! store writer, and into an [`Event`] on the [`bus`] for live listeners.
//!
//! - [`config`]: the configuration file, its defaults and its errors.
//! - [`bus`]: live events; a listener that falls behind is told to resync and
//!   never slows the engine down.
//! - [`view`]: what the shells show (a stored message with its payload as text
//!   and base64).
//!
//! Shutdown runs in order: the broker stops accepting and closes its clients,
//! the engine drains every observation it accepted, the writer commits them.
#![deny(missing_docs)]

pub mod auth;
pub mod bus;
pub mod certs;
mod coap;
pub mod config;
mod engine;
mod error;
mod ingest;
pub mod logging;
pub mod process;
pub mod view;
mod webhook;

pub use bus::{Event, EventBus, Subscription};
pub use coap::{
    CoapConfig, CoapCounters, CoapDeviceView, CoapRequestBody, CoapResponseView, CoapView,
    DiscoveryView,
};
pub use config::{AlertsConfig, Config, HttpConfig, StoreConfig};
pub use engine::{AbsentClientView, BrokerView, Engine, ListenerView, PublishRequest, Stats};
pub use error::EngineError;
pub use ingest::{ClientView, SettingsUpdate};
pub use view::MessageView;
pub use vigil_core::alert::{Alert, AlertRule};
pub use vigil_store::{
    Bucket, DeviceRow, DeviceSettings, MessageQuery, MetricRow, PresenceChange, Series, StoreStats,
};
