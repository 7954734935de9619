//! Reading devices, their presence history, alert rules, alerts and the
//! webhook outbox.

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};
use vigil_core::presence::{DevicePresence, PresenceState};
use vigil_core::Micros;

use vigil_core::alert::{Alert, AlertState, Severity};

use crate::changes::{DeviceSettings, WebhookDelivery};
use crate::error::StoreError;
use crate::store::Store;

/// A device and what Vigil knows about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct DeviceRow {
    /// The device's key: its id in the API.
    pub id: String,
    /// The convention that recognised it (`topic` when none did).
    pub convention: String,
    /// The topic prefix it publishes under, when a convention said.
    pub root: Option<String>,
    /// The MQTT client that last published for it.
    pub client_id: Option<String>,
    /// Its own name, model, manufacturer, firmware (from its convention).
    pub name: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Firmware version.
    pub firmware: Option<String>,
    /// What the user set: display name, group, hidden, expected interval.
    #[serde(flatten)]
    pub settings: DeviceSettings,
    /// Presence now.
    pub presence: DevicePresence,
    /// The earliest message time seen from the device (0: never heard).
    pub first_seen: Micros,
    /// The latest message time seen from the device (0: never heard).
    pub last_seen: Micros,
    /// Messages ever received from the device (retention does not lower it).
    pub message_count: i64,
    /// The latest value of each metric, ordered by name.
    pub metrics: Vec<MetricRow>,
    /// Its alerts that have not cleared, newest first.
    pub alerts: Vec<Alert>,
}

/// The latest value of one metric of a device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct MetricRow {
    /// Metric name.
    pub name: String,
    /// Its latest value.
    pub value: f64,
    /// When that value was measured.
    pub at: Micros,
    /// Its unit, when known.
    pub unit: Option<String>,
    /// Whether the value is stale (its source said it no longer holds).
    pub stale: bool,
}

/// One stored presence change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct PresenceChange {
    /// When.
    pub at: Micros,
    /// From which state.
    pub from: String,
    /// To which state.
    pub to: String,
    /// Why, in words.
    pub reason: String,
    /// What kind of evidence (`connection`, `announcement`, `traffic`, `silence`).
    pub source: String,
}

const DEVICE_COLUMNS: &str = "d.key, d.convention, d.root, d.client_id, d.name, d.model,
    d.manufacturer, d.firmware, d.display_name, d.group_name, d.hidden, d.expected_interval,
    d.presence, d.presence_since, d.presence_reason, d.last_alive, d.learned_interval,
    d.stale_after, d.first_seen, d.last_seen, d.message_count";

const ALERT_COLUMNS: &str = "id, rule_id, device_key, severity, state, fired_at, acked_at,
    acked_by, cleared_at, value, message";

impl Store {
    /// All devices, ordered by key, each with its presence, the latest value
    /// of its metrics and its active alerts.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.read_devices(None)
            .await
            .map_err(self.inner.query_error("reading devices"))
    }

    /// One device by key, or `None` if Vigil never heard of it.
    pub async fn device(&self, key: &str) -> Result<Option<DeviceRow>, StoreError> {
        let mut devices = self
            .read_devices(Some(key))
            .await
            .map_err(self.inner.query_error("reading a device"))?;
        Ok(devices.pop())
    }

    // Only fixed fragments go into the SQL texts below; values are parameters.
    async fn read_devices(&self, key: Option<&str>) -> Result<Vec<DeviceRow>, sqlx::Error> {
        let filter = if key.is_some() {
            "WHERE d.key = ?1"
        } else {
            ""
        };
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices d {filter} ORDER BY d.key"
        )))
        .bind(key)
        .fetch_all(self.read_pool())
        .await?;
        let mut devices = rows.iter().map(device_row).collect::<Result<Vec<_>, _>>()?;
        let metrics = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.key, s.metric, s.last_value, s.last_at, s.unit, s.stale
             FROM series s JOIN devices d ON d.id = s.device_id
             WHERE s.last_value IS NOT NULL {}
             ORDER BY d.key, s.metric",
            if key.is_some() { "AND d.key = ?1" } else { "" }
        )))
        .bind(key)
        .fetch_all(self.read_pool())
        .await?;
        let alerts = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE state <> 'cleared' {} ORDER BY id DESC",
            if key.is_some() {
                "AND device_key = ?1"
            } else {
                ""
            }
        )))
        .bind(key)
        .fetch_all(self.read_pool())
        .await?;
        // Both lists are ordered by device key like `devices`: merge them.
        let mut at = 0;
        for row in &metrics {
            let device: String = row.try_get(0)?;
            while at < devices.len() && devices[at].id < device {
                at += 1;
            }
            if let Some(d) = devices.get_mut(at).filter(|d| d.id == device) {
                d.metrics.push(MetricRow {
                    name: row.try_get(1)?,
                    value: row.try_get(2)?,
                    at: row.try_get(3)?,
                    unit: row.try_get(4)?,
                    stale: row.try_get(5)?,
                });
            }
        }
        for row in &alerts {
            let alert = alert_row(row)?;
            if let Ok(i) = devices.binary_search_by(|d| d.id.as_str().cmp(&alert.device)) {
                devices[i].alerts.push(alert);
            }
        }
        Ok(devices)
    }

    /// A device's presence changes in `[from, to)`, newest first, at most `limit`.
    pub async fn presence_history(
        &self,
        key: &str,
        from: Micros,
        to: Micros,
        limit: u32,
    ) -> Result<Vec<PresenceChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT h.at, h.from_state, h.to_state, h.reason, h.source
             FROM presence_history h JOIN devices d ON d.id = h.device_id
             WHERE d.key = ? AND h.at >= ? AND h.at < ?
             ORDER BY h.at DESC, h.id DESC LIMIT ?",
        )
        .bind(key)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(self.read_pool())
        .await
        .map_err(self.inner.query_error("reading presence history"))?;
        rows.iter()
            .map(|row| {
                Ok(PresenceChange {
                    at: row.try_get(0)?,
                    from: row.try_get(1)?,
                    to: row.try_get(2)?,
                    reason: row.try_get(3)?,
                    source: row.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.inner.query_error("reading presence history"))
    }

    /// Alert rules as stored: (id, the rule as JSON), by id.
    pub async fn alert_rules(&self) -> Result<Vec<(i64, String)>, StoreError> {
        sqlx::query_as("SELECT id, rule FROM alert_rules ORDER BY id")
            .fetch_all(self.read_pool())
            .await
            .map_err(self.inner.query_error("reading alert rules"))
    }

    /// Alerts, newest first: only those not cleared when `active`, only one
    /// device's when `device` is given, older than `before` (an id) for paging.
    pub async fn alerts(
        &self,
        active: bool,
        device: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1");
        if active {
            sql.push_str(" AND state <> 'cleared'");
        }
        if device.is_some() {
            sql.push_str(" AND device_key = ?1");
        }
        if before.is_some() {
            sql.push_str(" AND id < ?2");
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?3");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(device)
            .bind(before)
            .bind(limit)
            .fetch_all(self.read_pool())
            .await
            .map_err(self.inner.query_error("reading alerts"))?;
        rows.iter()
            .map(alert_row)
            .collect::<Result<_, _>>()
            .map_err(self.inner.query_error("reading alerts"))
    }

    /// The highest alert id ever stored (0: none), so new ids keep increasing.
    pub async fn last_alert_id(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM alerts")
            .fetch_one(self.read_pool())
            .await
            .map_err(self.inner.query_error("reading alerts"))
    }

    /// Webhook deliveries due at `now`, oldest first, at most `limit`.
    pub async fn webhook_due(
        &self,
        now: Micros,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_at, url, body, attempts, next_attempt FROM webhook_outbox
             WHERE next_attempt <= ? ORDER BY next_attempt, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.read_pool())
        .await
        .map_err(self.inner.query_error("reading the webhook outbox"))?;
        rows.iter()
            .map(|row| {
                Ok(WebhookDelivery {
                    id: row.try_get(0)?,
                    created_at: row.try_get(1)?,
                    url: row.try_get(2)?,
                    body: row.try_get(3)?,
                    attempts: row.try_get(4)?,
                    next_attempt: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.inner.query_error("reading the webhook outbox"))
    }

    /// When the next webhook delivery is due, if any is waiting.
    pub async fn webhook_next(&self) -> Result<Option<Micros>, StoreError> {
        sqlx::query_scalar("SELECT min(next_attempt) FROM webhook_outbox")
            .fetch_one(self.read_pool())
            .await
            .map_err(self.inner.query_error("reading the webhook outbox"))
    }
}

fn device_row(row: &SqliteRow) -> Result<DeviceRow, sqlx::Error> {
    let presence: String = row.try_get(12)?;
    Ok(DeviceRow {
        id: row.try_get(0)?,
        convention: row.try_get(1)?,
        root: row.try_get(2)?,
        client_id: row.try_get(3)?,
        name: row.try_get(4)?,
        model: row.try_get(5)?,
        manufacturer: row.try_get(6)?,
        firmware: row.try_get(7)?,
        settings: DeviceSettings {
            display_name: row.try_get(8)?,
            group: row.try_get(9)?,
            hidden: row.try_get(10)?,
            expected_interval: row.try_get(11)?,
        },
        presence: DevicePresence {
            state: PresenceState::parse(&presence).unwrap_or(PresenceState::Unknown),
            since: row.try_get(13)?,
            reason: row.try_get(14)?,
            last_seen: row.try_get(15)?,
            learned_interval: row.try_get(16)?,
            expected_interval: row.try_get(11)?,
            stale_after: row.try_get(17)?,
        },
        first_seen: row.try_get(18)?,
        last_seen: row.try_get(19)?,
        message_count: row.try_get(20)?,
        metrics: Vec::new(),
        alerts: Vec::new(),
    })
}

fn alert_row(row: &SqliteRow) -> Result<Alert, sqlx::Error> {
    let unreadable = |what: &str, value: &str| {
        sqlx::Error::Decode(format!("an alert's {what} '{value}' is not one Vigil knows").into())
    };
    let severity: String = row.try_get(3)?;
    let state: String = row.try_get(4)?;
    Ok(Alert {
        id: row.try_get(0)?,
        rule_id: row.try_get(1)?,
        device: row.try_get(2)?,
        severity: Severity::parse(&severity).ok_or_else(|| unreadable("severity", &severity))?,
        state: AlertState::parse(&state).ok_or_else(|| unreadable("state", &state))?,
        fired_at: row.try_get(5)?,
        acked_at: row.try_get(6)?,
        acked_by: row.try_get(7)?,
        cleared_at: row.try_get(8)?,
        value: row.try_get(9)?,
        message: row.try_get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{Change, DeviceDescription};
    use crate::testutil::{device_record, temp_store};
    use crate::WriterOptions;
    use vigil_core::presence::{PresenceSource, Transition};

    fn presence(state: PresenceState, since: Micros) -> DevicePresence {
        DevicePresence {
            state,
            since,
            reason: format!("now {}", state.as_str()),
            last_seen: since,
            learned_interval: Some(1_000_000),
            expected_interval: None,
            stale_after: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_coap_device_keeps_its_resources_when_an_answer_is_unreadable() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        let found = |at, resources: Option<&str>, error: Option<&str>| Change::CoapDevice {
            device: "coap/127.0.0.1:5683".into(),
            address: "127.0.0.1:5683".into(),
            found_by: "probe".into(),
            resources: resources.map(str::to_owned),
            error: error.map(str::to_owned),
            at,
        };
        writer
            .change(found(5, Some(r#"[{"path":"/t"}]"#), None))
            .await
            .unwrap();
        writer
            .change(found(9, None, Some("not CoRE link format at byte 3")))
            .await
            .unwrap();
        writer.shutdown().await.unwrap();
        let rows = store.coap_devices().await.unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.device, "coap/127.0.0.1:5683");
        assert_eq!(row.resources_json, r#"[{"path":"/t"}]"#);
        assert_eq!(row.error.as_deref(), Some("not CoRE link format at byte 3"));
        assert_eq!(row.answered_at, 9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_are_committed_with_records_and_read_back() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        writer
            .write(device_record(10, "ox1", &[("spo2", 97.0)]))
            .await
            .unwrap();
        let changes = vec![
            Change::Describe(DeviceDescription {
                device: "ox1".into(),
                at: 10,
                convention: Some("homie".into()),
                root: Some("homie/ox1".into()),
                name: Some("Oximeter".into()),
                model: Some("PO-1".into()),
                ..Default::default()
            }),
            // A device described before any message of its own.
            Change::Describe(DeviceDescription {
                device: "never-heard".into(),
                at: 11,
                convention: Some("zigbee2mqtt".into()),
                ..Default::default()
            }),
            Change::Unit {
                device: "ox1".into(),
                metric: "spo2".into(),
                unit: "%".into(),
            },
            Change::Presence {
                device: "ox1".into(),
                presence: presence(PresenceState::Online, 10),
                transition: Some(Transition {
                    device: "ox1".into(),
                    at: 10,
                    from: PresenceState::Unknown,
                    to: PresenceState::Online,
                    reason: "first message".into(),
                    source: PresenceSource::Traffic,
                }),
            },
            Change::Presence {
                device: "ox1".into(),
                presence: presence(PresenceState::Stale, 40),
                transition: Some(Transition {
                    device: "ox1".into(),
                    at: 40,
                    from: PresenceState::Online,
                    to: PresenceState::Stale,
                    reason: "silent".into(),
                    source: PresenceSource::Silence,
                }),
            },
            Change::Settings {
                device: "ox1".into(),
                settings: DeviceSettings {
                    display_name: Some("Mrs Smith's oximeter".into()),
                    group: Some("Mrs Smith".into()),
                    hidden: false,
                    expected_interval: Some(60_000_000),
                },
            },
            Change::Alert(Alert {
                id: 7,
                rule_id: 1,
                device: "ox1".into(),
                severity: Severity::Critical,
                state: AlertState::Firing,
                fired_at: 50,
                acked_at: None,
                acked_by: None,
                cleared_at: None,
                value: Some(91.0),
                message: "SpO2 91 is below 92".into(),
            }),
            Change::RuleSaved {
                id: 1,
                rule: "{}".into(),
            },
        ];
        for c in changes {
            writer.change(c).await.unwrap();
        }
        writer.shutdown().await.unwrap();

        let devices = store.devices().await.unwrap();
        assert_eq!(
            devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["never-heard", "ox1"]
        );
        assert_eq!(devices[0].last_seen, 0);
        assert_eq!(devices[0].convention, "zigbee2mqtt");
        let ox = store.device("ox1").await.unwrap().unwrap();
        assert_eq!(ox.convention, "homie");
        assert_eq!(ox.name.as_deref(), Some("Oximeter"));
        assert_eq!(ox.model.as_deref(), Some("PO-1"));
        assert_eq!(ox.presence.state, PresenceState::Stale);
        assert_eq!(ox.presence.since, 40);
        assert_eq!(ox.presence.learned_interval, Some(1_000_000));
        assert_eq!(ox.presence.expected_interval, Some(60_000_000));
        assert_eq!(ox.settings.group.as_deref(), Some("Mrs Smith"));
        assert_eq!(ox.metrics.len(), 1);
        assert_eq!(ox.metrics[0].unit.as_deref(), Some("%"));
        assert_eq!(ox.alerts.len(), 1);
        assert_eq!(ox.alerts[0].value, Some(91.0));

        let history = store.presence_history("ox1", 0, 100, 10).await.unwrap();
        assert_eq!(
            history.iter().map(|h| h.to.as_str()).collect::<Vec<_>>(),
            ["stale", "online"],
            "newest first"
        );
        assert_eq!(store.alert_rules().await.unwrap(), vec![(1, "{}".into())]);
        assert_eq!(store.last_alert_id().await.unwrap(), 7);
        assert_eq!(
            store
                .alerts(true, Some("ox1"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(store
            .alerts(true, Some("other"), None, 10)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_webhook_outbox_is_bounded_and_retried() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        for i in 0..5 {
            writer
                .change(Change::WebhookQueued {
                    at: 100 + i,
                    url: "http://127.0.0.1:9/hook".into(),
                    body: format!("{{\"n\":{i}}}"),
                    keep: 3,
                })
                .await
                .unwrap();
        }
        writer.shutdown().await.unwrap();
        let due = store.webhook_due(1_000, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(),
            ["{\"n\":2}", "{\"n\":3}", "{\"n\":4}"],
            "the oldest beyond `keep` are dropped"
        );
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        writer
            .change(Change::WebhookFailed {
                id: due[0].id,
                next_attempt: 5_000,
                error: "connection refused".into(),
            })
            .await
            .unwrap();
        writer
            .change(Change::WebhookDone { id: due[1].id })
            .await
            .unwrap();
        writer.shutdown().await.unwrap();
        let due = store.webhook_due(1_000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(store.webhook_next().await.unwrap(), Some(104));
        let later = store.webhook_due(5_000, 10).await.unwrap();
        assert_eq!(later.len(), 2);
        assert_eq!(later[1].attempts, 1);
    }
}
