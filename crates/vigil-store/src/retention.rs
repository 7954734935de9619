//! Deleting old history, run by the writer task between batches.
//!
//! Every DELETE touches at most [`CHUNK`] rows and commits on its own, so a
//! retention pass over millions of rows never builds one huge transaction (and
//! WAL file), and readers keep seeing a consistent database throughout.

use sqlx::{Executor, SqliteConnection};
use vigil_core::{now_micros, Micros};

use crate::types::{Retention, RetentionReport};

/// Rows per DELETE statement.
const CHUNK: i64 = 10_000;

pub(crate) async fn apply(
    conn: &mut SqliteConnection,
    retention: Retention,
) -> Result<RetentionReport, sqlx::Error> {
    let mut report = RetentionReport::default();
    if let Some(max_age) = retention.max_age {
        let age = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros().saturating_sub(age);
        report.deleted_messages += delete_messages_before(conn, cutoff).await?;
        report.deleted_samples += delete_samples_before(conn, cutoff).await?;
    }
    if let Some(max_bytes) = retention.max_bytes {
        let (messages, samples) = shrink_to(conn, max_bytes).await?;
        report.deleted_messages += messages;
        report.deleted_samples += samples;
    }
    if report.deleted_messages + report.deleted_samples > 0 {
        // Deleted pages sit on the freelist; hand them back to the file
        // system, then checkpoint so the shorter file is written out and the
        // WAL is reset (journal_size_limit truncates it).
        conn.execute("PRAGMA incremental_vacuum").await?;
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    }
    Ok(report)
}

/// Finds the rows through the messages(at) index.
const DELETE_MESSAGES_BEFORE: &str =
    "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE at < ?1 LIMIT ?2)";

async fn delete_messages_before(
    conn: &mut SqliteConnection,
    cutoff: Micros,
) -> Result<u64, sqlx::Error> {
    delete_in_chunks(conn, DELETE_MESSAGES_BEFORE, cutoff).await
}

/// Runs a `DELETE ... LIMIT ?2` statement for rows older than `cutoff` until
/// it deletes fewer than a chunk, so no single transaction step is huge.
async fn delete_in_chunks(
    conn: &mut SqliteConnection,
    statement: &'static str,
    cutoff: Micros,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(statement)
            .bind(cutoff)
            .bind(CHUNK)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        deleted += done;
        if done < CHUNK as u64 {
            return Ok(deleted);
        }
    }
}

/// Samples are keyed by (series_id, at) and have no index on `at` alone (it
/// would slow every insert down), so the search walks the small `series`
/// table and range-scans each series' old samples: CROSS JOIN pins that loop
/// order. The chunk is then deleted by primary key.
const DELETE_SAMPLES_BEFORE: &str = "DELETE FROM samples WHERE (series_id, at) IN (
     SELECT s.series_id, s.at FROM series CROSS JOIN samples s
     ON s.series_id = series.id AND s.at < ?1 LIMIT ?2)";

/// The per-minute rollup, the same way: the minutes wholly before the cutoff
/// (the minute it falls in stays until the next pass deletes it whole).
const DELETE_MINUTES_BEFORE: &str = "DELETE FROM samples_1m WHERE (series_id, minute) IN (
     SELECT r.series_id, r.minute FROM series CROSS JOIN samples_1m r
     ON r.series_id = series.id AND r.minute < ?1 LIMIT ?2)";

/// Deletes the samples before `cutoff` and their per-minute rollup; returns
/// how many samples.
async fn delete_samples_before(
    conn: &mut SqliteConnection,
    cutoff: Micros,
) -> Result<u64, sqlx::Error> {
    let samples = delete_in_chunks(conn, DELETE_SAMPLES_BEFORE, cutoff).await?;
    delete_in_chunks(
        conn,
        DELETE_MINUTES_BEFORE,
        cutoff.div_euclid(crate::MINUTE),
    )
    .await?;
    Ok(samples)
}

/// Bytes in pages that hold data: what retention can shrink. Free pages are
/// excluded because they are reused before the file grows.
async fn used_bytes(conn: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let used: i64 = sqlx::query_scalar(
        "SELECT ((SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()))
                * (SELECT page_size FROM pragma_page_size())",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(used.max(0) as u64)
}

/// Deletes the oldest messages, and the samples older than the oldest message
/// kept, until the used size is at most `max_bytes` or nothing is left to
/// delete. Returns (messages, samples) deleted.
async fn shrink_to(conn: &mut SqliteConnection, max_bytes: u64) -> Result<(u64, u64), sqlx::Error> {
    let (mut messages, mut samples) = (0, 0);
    loop {
        let used = used_bytes(conn).await?;
        if used <= max_bytes {
            break;
        }
        // Messages and their samples grow together, so deleting the same
        // share of messages as the share of bytes over budget (plus 1%) gets
        // there in one or two rounds rather than one per chunk. Ids are dense
        // (AUTOINCREMENT, oldest deleted first), so their span counts rows.
        let span: Option<i64> = sqlx::query_scalar("SELECT max(id) - min(id) + 1 FROM messages")
            .fetch_one(&mut *conn)
            .await?;
        let span = span.unwrap_or(0).max(0) as u64;
        let share = (used - max_bytes) as f64 / used as f64;
        let mut target = ((span as f64 * share).ceil() as u64 + span / 100).max(1);

        let mut round = 0;
        while target > 0 {
            let n = target.min(CHUNK as u64) as i64;
            let done = sqlx::query(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)",
            )
            .bind(n)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            round += done;
            if done < n as u64 {
                break; // no messages left
            }
            target -= done;
        }
        messages += round;

        let oldest: Option<Micros> = sqlx::query_scalar("SELECT min(at) FROM messages")
            .fetch_one(&mut *conn)
            .await?;
        let removed = delete_samples_before(conn, oldest.unwrap_or(Micros::MAX)).await?;
        samples += removed;
        if round == 0 && removed == 0 {
            break; // only devices, topics and retained messages left
        }
    }
    Ok((messages, samples))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Row;
    use vigil_core::now_micros;

    use super::*;
    use crate::testutil::{count, device_record, record, temp_store, write_all};
    use crate::{MessageQuery, Record, Store, WriterOptions};

    const HOUR: Micros = 3_600_000_000;

    async fn pragma_i64(store: &Store, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(store.read_pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn by_age_deletes_old_messages_and_samples_only() {
        let (_dir, store) = temp_store().await;
        let now = now_micros();
        let old = (0..500).map(|i| device_record(now - 2 * HOUR + i, "d", &[("x", 1.0)]));
        let new = (0..500).map(|i| device_record(now - HOUR / 2 + i, "d", &[("x", 2.0)]));
        let retained = Record {
            retain: true,
            ..record(now - 3 * HOUR, "r/old", b"kept")
        };
        write_all(&store, old.chain(new).chain([retained])).await;

        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        let report = writer
            .apply_retention(Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_bytes: None,
            })
            .await
            .unwrap();
        assert_eq!(
            report,
            RetentionReport {
                deleted_messages: 501,
                deleted_samples: 500
            }
        );
        let again = writer
            .apply_retention(Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_bytes: None,
            })
            .await
            .unwrap();
        assert_eq!(again, RetentionReport::default());
        writer.shutdown().await.unwrap();

        let left = store
            .messages(&MessageQuery {
                limit: 10_000,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 500);
        assert!(left.iter().all(|m| m.at >= now - HOUR));
        assert_eq!(count(&store, "samples").await, 500);
        // The rollup keeps only minutes that still have samples: the new
        // ones (500 µs apart: one or two minutes).
        let minutes: Vec<i64> = sqlx::query_scalar("SELECT minute FROM samples_1m ORDER BY minute")
            .fetch_all(store.read_pool())
            .await
            .unwrap();
        let newest_minute = (now - HOUR / 2).div_euclid(crate::MINUTE);
        assert!(
            !minutes.is_empty() && minutes.iter().all(|m| *m >= newest_minute),
            "{minutes:?}"
        );
        // Devices, their counters and retained messages are not history.
        let d = store.device("d").await.unwrap().unwrap();
        assert_eq!(d.message_count, 1000);
        assert_eq!(d.metrics[0].value, 2.0);
        assert_eq!(store.retained().await.unwrap().len(), 1);
        store.integrity_check().await.unwrap();
    }

    #[tokio::test]
    async fn by_age_sees_records_queued_before_it() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        for i in 0..100 {
            writer
                .write(device_record(i, "d", &[("x", 1.0)]))
                .await
                .unwrap();
        }
        let report = writer
            .apply_retention(Retention {
                max_age: Some(Duration::from_secs(1)),
                max_bytes: None,
            })
            .await
            .unwrap();
        assert_eq!(
            report,
            RetentionReport {
                deleted_messages: 100,
                deleted_samples: 100
            }
        );
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn by_size_keeps_the_newest_and_gives_space_back() {
        let (dir, store) = temp_store().await;
        let path = dir.path().join("vigil.db");
        let payload = vec![b'p'; 1000];
        let records = (0..4000).map(|i| Record {
            payload: payload.clone().into(),
            samples: vec![
                crate::Sample::new("x", i as f64),
                crate::Sample::new("y", 0.0),
            ],
            device: Some(format!("d{}", i % 5)),
            ..record(1_000_000 + i * 1000, &format!("t/{}", i % 5), b"")
        });
        write_all(&store, records).await;
        let used_sql = "SELECT ((SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()))
                        * (SELECT page_size FROM pragma_page_size())";
        let before = pragma_i64(&store, used_sql).await;
        let pages_before = pragma_i64(&store, "PRAGMA page_count").await;
        let max_bytes = (before / 3) as u64;

        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        let report = writer
            .apply_retention(Retention {
                max_age: None,
                max_bytes: Some(max_bytes),
            })
            .await
            .unwrap();
        writer.shutdown().await.unwrap();

        let used = pragma_i64(&store, used_sql).await;
        assert!(used as u64 <= max_bytes, "{used} > {max_bytes}");
        let left = store
            .messages(&MessageQuery {
                limit: 10_000,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert!(!left.is_empty(), "not everything should go");
        assert!(left.len() < 4000 * 2 / 3 + 100, "{} left", left.len());
        assert_eq!(report.deleted_messages as usize + left.len(), 4000);
        // The newest survive, as one contiguous run of ids.
        assert_eq!(left[0].id, 4000);
        assert_eq!(left.last().unwrap().id, 4000 - left.len() as i64 + 1);
        // Samples older than the oldest message kept went with them.
        let oldest_message = left.last().unwrap().at;
        let oldest_sample = pragma_i64(&store, "SELECT min(at) FROM samples").await;
        assert!(oldest_sample >= oldest_message);
        assert_eq!(count(&store, "samples").await as usize, left.len() * 2);
        assert_eq!(report.deleted_samples, 8000 - left.len() as u64 * 2);
        // Incremental auto-vacuum handed the free pages back to the file system.
        assert_eq!(pragma_i64(&store, "PRAGMA freelist_count").await, 0);
        let pages_after = pragma_i64(&store, "PRAGMA page_count").await;
        assert!(
            pages_after < pages_before / 2,
            "{pages_after} vs {pages_before} pages"
        );
        // ... and the checkpoint wrote the shorter file out.
        let page_size = pragma_i64(&store, "PRAGMA page_size").await;
        let file = std::fs::metadata(&path).unwrap().len();
        assert_eq!(file, (pages_after * page_size) as u64);
        assert_eq!(store.devices().await.unwrap().len(), 5);
        store.integrity_check().await.unwrap();
    }

    #[tokio::test]
    async fn by_size_stops_when_only_kept_data_is_left() {
        let (_dir, store) = temp_store().await;
        let retained = (0..50).map(|i| Record {
            retain: true,
            ..record(i, &format!("r/{i}"), &[b'r'; 2000])
        });
        write_all(&store, retained).await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        let report = writer
            .apply_retention(Retention {
                max_age: None,
                max_bytes: Some(1),
            })
            .await
            .unwrap();
        writer.shutdown().await.unwrap();
        assert_eq!(report.deleted_messages, 50);
        assert_eq!(count(&store, "messages").await, 0);
        assert_eq!(store.retained().await.unwrap().len(), 50);

        // Ids keep counting after everything was deleted.
        write_all(&store, [record(100, "t", b"x")]).await;
        let got = store.messages(&MessageQuery::default()).await.unwrap();
        assert_eq!(got[0].id, 51);
    }

    #[tokio::test]
    async fn deletes_find_their_rows_through_indexes() {
        let (_dir, store) = temp_store().await;
        let plan = |sql: String| {
            let pool = store.read_pool().clone();
            async move {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .bind(0i64)
                    .bind(10i64)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| r.get::<String, _>(3))
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
        };
        let samples = plan(DELETE_SAMPLES_BEFORE.to_owned()).await;
        assert!(
            !samples.contains("SCAN samples") && !samples.contains("SCAN s "),
            "{samples}"
        );
        assert!(samples.contains("USING PRIMARY KEY"), "{samples}");
        let messages = plan(DELETE_MESSAGES_BEFORE.to_owned()).await;
        assert!(messages.contains("messages_at"), "{messages}");
    }
}
