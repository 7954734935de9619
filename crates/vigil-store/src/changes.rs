//! Changes to what Vigil knows about devices, alerts and deliveries: the
//! writes that are not messages. They travel through the writer's queue like
//! records, so they are committed in order with the messages that caused
//! them, in the same transactions.

use serde::Serialize;
use vigil_core::alert::Alert;
use vigil_core::presence::{DevicePresence, Transition};
use vigil_core::session::SessionChange;
use vigil_core::Micros;

/// One change, applied by the writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// What a convention says about a device. `None` fields are left as they
    /// are; the device row is created if needed.
    Describe(DeviceDescription),
    /// A device's presence now, and the transition that led there (none: a
    /// periodic save of `last_alive` and the learned interval).
    Presence {
        /// The device's key.
        device: String,
        /// Its presence now.
        presence: DevicePresence,
        /// The change to add to its history.
        transition: Option<Transition>,
    },
    /// A metric's unit, as its device or convention declares it.
    Unit {
        /// The device's key.
        device: String,
        /// The metric.
        metric: String,
        /// The unit.
        unit: String,
    },
    /// Every metric of the device is stale (until its next value).
    MetricsStale {
        /// The device's key.
        device: String,
    },
    /// A CoAP device answered `/.well-known/core`: where, how it was found,
    /// and what it lists (JSON array of resources; the previous list stays
    /// when `error` says why this answer was unreadable).
    CoapDevice {
        /// The device's key.
        device: String,
        /// Its address (`192.0.2.7:5683`, `[fe80::1%2]:5683`).
        address: String,
        /// How it was found ("multicast on eth0", "probe", "configured").
        found_by: String,
        /// Its resources as JSON, or `None` to keep the ones known.
        resources: Option<String>,
        /// Why its answer could not be read, in words.
        error: Option<String>,
        /// When it answered.
        at: Micros,
    },
    /// What the user set for a device.
    Settings {
        /// The device's key.
        device: String,
        /// The user's settings (replacing the previous ones).
        settings: DeviceSettings,
    },
    /// An alert rule was created or changed (the core's rule as JSON).
    RuleSaved {
        /// The rule's id.
        id: i64,
        /// The rule, as JSON text.
        rule: String,
    },
    /// An alert rule was deleted.
    RuleDeleted {
        /// The rule's id.
        id: i64,
    },
    /// An alert fired, was acknowledged or cleared (the row is replaced).
    Alert(Alert),
    /// A webhook delivery to make.
    WebhookQueued {
        /// When it was queued.
        at: Micros,
        /// Where to POST.
        url: String,
        /// The JSON body.
        body: String,
        /// The most deliveries kept waiting; the oldest beyond it are dropped.
        keep: u32,
    },
    /// A delivery succeeded (or was given up): remove it.
    WebhookDone {
        /// The outbox row.
        id: i64,
    },
    /// A delivery failed: try again later.
    WebhookFailed {
        /// The outbox row.
        id: i64,
        /// When to try again.
        next_attempt: Micros,
        /// Why it failed, in words.
        error: String,
    },
    /// An MQTT session kept for a client changed.
    Session(SessionChange),
}

/// What a convention says about a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceDescription {
    /// The device's key.
    pub device: String,
    /// When it was said (the device's first_seen if the row is new).
    pub at: Micros,
    /// The convention that recognised it.
    pub convention: Option<String>,
    /// Its topic root.
    pub root: Option<String>,
    /// The MQTT client that publishes for it.
    pub client_id: Option<String>,
    /// Its own name.
    pub name: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Firmware version.
    pub firmware: Option<String>,
}

/// What the user set for a device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct DeviceSettings {
    /// The name shown instead of the device's own.
    pub display_name: Option<String>,
    /// A group, e.g. a patient or a room.
    pub group: Option<String>,
    /// Hidden from the device list.
    pub hidden: bool,
    /// The interval the device is expected to keep, µs (`None`: learned).
    pub expected_interval: Option<Micros>,
}

/// A webhook delivery waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The outbox row.
    pub id: i64,
    /// When it was queued.
    pub created_at: Micros,
    /// Where to POST.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i64,
    /// When it is due.
    pub next_attempt: Micros,
}
