//! MQTT sessions kept for clients and their queued messages (see
//! `vigil_core::session`): written by the writer as [`SessionChange`]s, read
//! back once at start.

use std::collections::HashMap;

use bytes::Bytes;
use sqlx::{Row, SqliteConnection};
use vigil_core::session::{
    AwaySession, KeptSession, KeptSubscription, QueuedMessage, SessionChange,
};

use crate::error::StoreError;
use crate::store::Store;

/// Writes one session change.
pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    change: &SessionChange,
) -> Result<(), sqlx::Error> {
    match change {
        SessionChange::Kept(session) => {
            let subscriptions = serde_json::to_string(&session.subscriptions)
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            sqlx::query(
                "INSERT INTO mqtt_sessions (client_id, expiry_s, away_since, subscriptions)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id) DO UPDATE SET expiry_s = excluded.expiry_s,
                    away_since = excluded.away_since, subscriptions = excluded.subscriptions",
            )
            .bind(session.client_id.as_str())
            .bind(i64::from(session.expiry_s))
            .bind(session.away_since)
            .bind(subscriptions)
            .execute(&mut *conn)
            .await?;
        }
        SessionChange::Queued { client_id, message } => {
            sqlx::query(
                "INSERT OR REPLACE INTO mqtt_session_queue (client_id, seq, queued_at, packet)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(client_id.as_str())
            .bind(message.seq)
            .bind(message.at)
            .bind(message.packet.as_ref())
            .execute(&mut *conn)
            .await?;
        }
        SessionChange::Delivered {
            client_id,
            from,
            through,
        } => {
            sqlx::query(
                "DELETE FROM mqtt_session_queue WHERE client_id = ?1 AND seq BETWEEN ?2 AND ?3",
            )
            .bind(client_id.as_str())
            .bind(from)
            .bind(through)
            .execute(&mut *conn)
            .await?;
        }
        SessionChange::Ended { client_id } => {
            for table in ["mqtt_session_queue", "mqtt_sessions"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE client_id = ?"
                )))
                .bind(client_id.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// The kept MQTT sessions with their queues, oldest message first. A
    /// session whose subscriptions cannot be read is returned without them
    /// (and logged): its client still finds its queue.
    pub async fn kept_sessions(&self) -> Result<Vec<AwaySession>, StoreError> {
        let read = |e| self.inner.query_error("reading kept MQTT sessions")(e);
        let rows = sqlx::query(
            "SELECT client_id, expiry_s, away_since, subscriptions FROM mqtt_sessions
             ORDER BY client_id",
        )
        .fetch_all(self.read_pool())
        .await
        .map_err(read)?;
        let mut sessions = Vec::with_capacity(rows.len());
        let mut index = HashMap::new();
        for row in &rows {
            let client_id: String = row.try_get(0).map_err(read)?;
            let expiry_s: i64 = row.try_get(1).map_err(read)?;
            let json: String = row.try_get(3).map_err(read)?;
            let subscriptions: Vec<KeptSubscription> =
                serde_json::from_str(&json).unwrap_or_else(|e| {
                    tracing::error!(
                        client_id,
                        "the kept session's subscriptions cannot be read, dropped: {e}"
                    );
                    Vec::new()
                });
            index.insert(client_id.clone(), sessions.len());
            sessions.push(AwaySession {
                session: KeptSession {
                    client_id,
                    expiry_s: u32::try_from(expiry_s).unwrap_or(u32::MAX),
                    away_since: row.try_get(2).map_err(read)?,
                    subscriptions,
                },
                queue: Vec::new(),
            });
        }
        let queued = sqlx::query(
            "SELECT client_id, seq, queued_at, packet FROM mqtt_session_queue
             ORDER BY client_id, seq",
        )
        .fetch_all(self.read_pool())
        .await
        .map_err(read)?;
        for row in &queued {
            let client_id: String = row.try_get(0).map_err(read)?;
            // A queue without its session (cannot be written so) is left.
            let Some(&i) = index.get(&client_id) else {
                continue;
            };
            sessions[i].queue.push(QueuedMessage {
                seq: row.try_get(1).map_err(read)?,
                at: row.try_get(2).map_err(read)?,
                packet: Bytes::from(row.try_get::<Vec<u8>, _>(3).map_err(read)?),
            });
        }
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::temp_store;
    use crate::{Change, WriterOptions};
    use vigil_core::session::NEVER_EXPIRES;

    fn session(client_id: &str, away_since: Option<i64>, filters: &[(&str, u8)]) -> KeptSession {
        KeptSession {
            client_id: client_id.to_owned(),
            expiry_s: 300,
            away_since,
            subscriptions: filters
                .iter()
                .map(|(f, o)| KeptSubscription {
                    filter: (*f).to_owned(),
                    options: *o,
                })
                .collect(),
        }
    }

    fn queued(seq: i64, payload: &'static [u8]) -> QueuedMessage {
        QueuedMessage {
            seq,
            at: 1_000 + seq,
            packet: Bytes::from_static(payload),
        }
    }

    async fn write(store: &Store, changes: Vec<SessionChange>) {
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .expect("writer");
        for c in changes {
            writer.change(Change::Session(c)).await.expect("change");
        }
        writer.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn kept_sessions_and_their_queues_come_back_in_order() {
        let (dir, store) = temp_store().await;
        let q = |client: &str, m| SessionChange::Queued {
            client_id: client.to_owned(),
            message: m,
        };
        write(
            &store,
            vec![
                SessionChange::Kept(session("a", None, &[("t/#", 1)])),
                // Subscribed again, then away: the last word counts.
                SessionChange::Kept(session("a", Some(5), &[("t/#", 1), ("u/+", 0b0110)])),
                SessionChange::Kept(KeptSession {
                    expiry_s: NEVER_EXPIRES,
                    ..session("b", Some(7), &[("x", 2)])
                }),
                q("a", queued(1, b"one")),
                q("a", queued(2, b"two")),
                q("b", queued(1, b"b1")),
                q("a", queued(3, b"three")),
                q("a", queued(4, b"four")),
                q("a", queued(5, b"five")),
                SessionChange::Delivered {
                    client_id: "a".into(),
                    from: 1,
                    through: 1,
                },
                // Only what this delivery held goes: 3 stays.
                SessionChange::Delivered {
                    client_id: "a".into(),
                    from: 4,
                    through: 5,
                },
                SessionChange::Kept(session("c", Some(9), &[])),
                q("c", queued(1, b"c1")),
                SessionChange::Ended {
                    client_id: "c".into(),
                },
            ],
        )
        .await;
        store.close().await;
        // Read back after a reopen, as at the next start.
        let store = Store::open(&dir.path().join("vigil.db")).await.unwrap();
        let sessions = store.kept_sessions().await.unwrap();
        assert_eq!(
            sessions,
            vec![
                AwaySession {
                    session: session("a", Some(5), &[("t/#", 1), ("u/+", 0b0110)]),
                    queue: vec![queued(2, b"two"), queued(3, b"three")],
                },
                AwaySession {
                    session: KeptSession {
                        expiry_s: NEVER_EXPIRES,
                        ..session("b", Some(7), &[("x", 2)])
                    },
                    queue: vec![queued(1, b"b1")],
                },
            ]
        );
        assert_eq!(sessions[0].session.expires_at(), Some(5 + 300_000_000));
        assert_eq!(sessions[1].session.expires_at(), None);
    }

    #[tokio::test]
    async fn unreadable_subscriptions_lose_only_themselves() {
        use sqlx::Connection;
        let (dir, store) = temp_store().await;
        write(
            &store,
            vec![SessionChange::Kept(session("a", Some(1), &[("t", 0)]))],
        )
        .await;
        let path = dir.path().join("vigil.db");
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE mqtt_sessions SET subscriptions = 'not json'")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let sessions = store.kept_sessions().await.unwrap();
        assert_eq!(sessions.len(), 1);
        assert!(sessions[0].session.subscriptions.is_empty());
    }
}
