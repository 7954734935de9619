//! How each [`Change`] is written, inside the writer's transaction.

use std::collections::HashMap;

use sqlx::SqliteConnection;
use vigil_core::Micros;

use crate::changes::Change;

/// Writes one change.
pub(crate) async fn change(
    conn: &mut SqliteConnection,
    devices: &mut HashMap<String, i64>,
    change: &Change,
) -> Result<(), sqlx::Error> {
    match change {
        Change::Describe(d) => {
            let id = device_id(conn, devices, &d.device, d.at).await?;
            sqlx::query(
                "UPDATE devices SET
                    convention = coalesce(?2, convention), root = coalesce(?3, root),
                    client_id = coalesce(?4, client_id), name = coalesce(?5, name),
                    model = coalesce(?6, model), manufacturer = coalesce(?7, manufacturer),
                    firmware = coalesce(?8, firmware)
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(d.convention.as_deref())
            .bind(d.root.as_deref())
            .bind(d.client_id.as_deref())
            .bind(d.name.as_deref())
            .bind(d.model.as_deref())
            .bind(d.manufacturer.as_deref())
            .bind(d.firmware.as_deref())
            .execute(&mut *conn)
            .await?;
        }
        Change::Presence {
            device,
            presence: p,
            transition,
        } => {
            let id = device_id(conn, devices, device, p.since).await?;
            sqlx::query(
                "UPDATE devices SET presence = ?2, presence_since = ?3, presence_reason = ?4,
                    last_alive = max(last_alive, ?5), learned_interval = ?6,
                    stale_after = ?7
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(p.state.as_str())
            .bind(p.since)
            .bind(p.reason.as_str())
            .bind(p.last_seen)
            .bind(p.learned_interval)
            .bind(p.stale_after)
            .execute(&mut *conn)
            .await?;
            if let Some(t) = transition {
                sqlx::query(
                    "INSERT INTO presence_history (device_id, at, from_state, to_state, reason, source)
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(t.at)
                .bind(t.from.as_str())
                .bind(t.to.as_str())
                .bind(t.reason.as_str())
                .bind(t.source.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
        Change::Unit {
            device,
            metric,
            unit,
        } => {
            let id = device_id(conn, devices, device, 0).await?;
            sqlx::query(
                "INSERT INTO series (device_id, metric, unit) VALUES (?, ?, ?)
                 ON CONFLICT (device_id, metric) DO UPDATE SET unit = excluded.unit",
            )
            .bind(id)
            .bind(metric.as_str())
            .bind(unit.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Change::MetricsStale { device } => {
            let id = device_id(conn, devices, device, 0).await?;
            sqlx::query("UPDATE series SET stale = 1 WHERE device_id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Change::CoapDevice {
            device,
            address,
            found_by,
            resources,
            error,
            at,
        } => {
            let id = device_id(conn, devices, device, *at).await?;
            sqlx::query(
                "INSERT INTO coap_devices (device_id, address, found_by, resources, error, answered_at)
                 VALUES (?1, ?2, ?3, coalesce(?4, '[]'), ?5, ?6)
                 ON CONFLICT (device_id) DO UPDATE SET address = excluded.address,
                    found_by = excluded.found_by, error = excluded.error,
                    answered_at = excluded.answered_at,
                    resources = coalesce(?4, coap_devices.resources)",
            )
            .bind(id)
            .bind(address.as_str())
            .bind(found_by.as_str())
            .bind(resources.as_deref())
            .bind(error.as_deref())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        Change::Settings { device, settings } => {
            let id = device_id(conn, devices, device, 0).await?;
            sqlx::query(
                "UPDATE devices SET display_name = ?2, group_name = ?3, hidden = ?4,
                    expected_interval = ?5
                 WHERE id = ?1",
            )
            .bind(id)
            .bind(settings.display_name.as_deref())
            .bind(settings.group.as_deref())
            .bind(settings.hidden)
            .bind(settings.expected_interval)
            .execute(&mut *conn)
            .await?;
        }
        Change::RuleSaved { id, rule } => {
            sqlx::query(
                "INSERT INTO alert_rules (id, rule) VALUES (?, ?)
                 ON CONFLICT (id) DO UPDATE SET rule = excluded.rule",
            )
            .bind(id)
            .bind(rule.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Change::RuleDeleted { id } => {
            sqlx::query("DELETE FROM alert_rules WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Change::Alert(a) => {
            sqlx::query(
                "INSERT INTO alerts (id, rule_id, device_key, severity, state, fired_at, acked_at,
                    acked_by, cleared_at, value, message)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                    acked_at = excluded.acked_at, acked_by = excluded.acked_by,
                    cleared_at = excluded.cleared_at, value = excluded.value,
                    message = excluded.message",
            )
            .bind(a.id)
            .bind(a.rule_id)
            .bind(a.device.as_str())
            .bind(a.severity.as_str())
            .bind(a.state.as_str())
            .bind(a.fired_at)
            .bind(a.acked_at)
            .bind(a.acked_by.as_deref())
            .bind(a.cleared_at)
            .bind(a.value.filter(|v| v.is_finite()))
            .bind(a.message.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Change::WebhookQueued {
            at,
            url,
            body,
            keep,
        } => {
            sqlx::query(
                "INSERT INTO webhook_outbox (created_at, url, body, next_attempt) VALUES (?, ?, ?, ?)",
            )
            .bind(at)
            .bind(url.as_str())
            .bind(body.as_str())
            .bind(at)
            .execute(&mut *conn)
            .await?;
            let dropped = sqlx::query(
                "DELETE FROM webhook_outbox WHERE id <= (SELECT max(id) FROM webhook_outbox) - ?",
            )
            .bind(i64::from(*keep))
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "the webhook outbox is full ({keep} deliveries): dropped the oldest"
                );
            }
        }
        Change::WebhookDone { id } => {
            sqlx::query("DELETE FROM webhook_outbox WHERE id = ?")
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Change::WebhookFailed {
            id,
            next_attempt,
            error,
        } => {
            sqlx::query(
                "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt = ?2,
                    last_error = ?3 WHERE id = ?1",
            )
            .bind(id)
            .bind(next_attempt)
            .bind(error.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Change::Session(session) => crate::sessions::apply(conn, session).await?,
    }
    Ok(())
}

/// The row id of a device, created (never heard from: `last_seen` 0) if new.
async fn device_id(
    conn: &mut SqliteConnection,
    devices: &mut HashMap<String, i64>,
    key: &str,
    at: Micros,
) -> Result<i64, sqlx::Error> {
    if let Some(&id) = devices.get(key) {
        return Ok(id);
    }
    sqlx::query(
        "INSERT INTO devices (key, first_seen, last_seen, message_count) VALUES (?, ?, 0, 0)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(key)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    let id: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE key = ?")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    devices.insert(key.to_owned(), id);
    Ok(id)
}
