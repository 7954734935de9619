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

async fn delete_messages_before(conn: &mut SqliteConnection, cutoff: Micros) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        // Uses the messages(at) index to find the rows.
        let done = sqlx::query(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE at < ? LIMIT ?)",
        )
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

/// Samples have no index on `at` alone (it would slow every insert down), so
/// the search walks the small `series` table and range-scans
/// samples(series_id, at) for each series: CROSS JOIN pins that loop order.
async fn delete_samples_before(conn: &mut SqliteConnection, cutoff: Micros) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM samples WHERE rowid IN (
                 SELECT s.rowid FROM series CROSS JOIN samples s
                 ON s.series_id = series.id AND s.at < ?1 LIMIT ?2)",
        )
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
            let done = sqlx::query("DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?)")
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
