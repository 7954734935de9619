//! Opening the database and answering read queries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row, SqliteConnection};
use vigil_core::Micros;

use crate::error::StoreError;
use crate::types::{
    Bucket, CoapDeviceRow, Flushed, MessageQuery, RetainedMessage, Series, StoreStats,
    StoredMessage, WriterOptions,
};
use crate::writer::{self, WriterHandle};

/// How long a connection waits for a lock before giving up. Readers never wait
/// in WAL mode; this covers checkpoints and a second process on the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections: the UI, the HTTP API and exports may query at once.
const READ_CONNECTIONS: u32 = 4;

use crate::MINUTE;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The database: a pool of read-only connections for queries, plus the one
/// write connection waiting for [`Store::spawn_writer`]. Cloning is cheap and
/// every clone talks to the same file.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    read: SqlitePool,
    /// How to open a write connection again if the writer loses its own.
    pub(crate) write_options: SqliteConnectOptions,
    /// The write connection while no writer task owns it. A single slot is
    /// what guarantees a single writer.
    slot: Mutex<WriterSlot>,
}

struct WriterSlot {
    conn: Option<SqliteConnection>,
    closed: bool,
}

impl Inner {
    fn slot(&self) -> MutexGuard<'_, WriterSlot> {
        // A panic while holding this lock cannot leave the slot inconsistent
        // (it only moves an Option), so a poisoned lock is still usable.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by a stopping writer: the connection waits for the next writer,
    /// unless the store was closed meanwhile.
    pub(crate) async fn return_writer(&self, conn: SqliteConnection) {
        let conn = {
            let mut slot = self.slot();
            if slot.closed || slot.conn.is_some() {
                Some(conn)
            } else {
                slot.conn = Some(conn);
                None
            }
        };
        if let Some(conn) = conn {
            close_quietly(conn, &self.path).await;
        }
    }

    /// Options for the checkpointer's connection: it only copies pages from
    /// the WAL into the database file.
    pub(crate) fn checkpoint_options(&self) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(&self.path)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
    }

    pub(crate) fn query_error(
        &self,
        action: &'static str,
    ) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
        move |source| StoreError::Query {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

async fn close_quietly(conn: SqliteConnection, path: &Path) {
    if let Err(e) = conn.close().await {
        tracing::warn!(path = %path.display(), error = %e, "closing the write connection failed");
    }
}

impl Store {
    /// Opens the database at `path`, creating the directory and the file if
    /// needed and bringing the schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_error = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };

        // sqlx sends these pragmas in a fixed order with `auto_vacuum` before
        // `journal_mode`, so on a new file it takes effect before the WAL
        // switch and before the migrations create the first table.
        let write_options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // 32 MiB of page cache keeps the hot index pages of all tables in
            // memory while batches append to them.
            .pragma("cache_size", "-32768")
            .pragma("temp_store", "MEMORY")
            // Without a limit the WAL file keeps its high-water size forever
            // after a burst; with it, checkpoints truncate it back.
            .pragma("journal_size_limit", "67108864")
            // The writer's checkpointer task copies most pages off this
            // thread; at 64 MiB of WAL the writer still checkpoints itself,
            // cheaply since little is left, which lets the WAL restart.
            .pragma("wal_autocheckpoint", "16384")
            // Room for the nine chunk sizes of every multi-row statement.
            .statement_cache_capacity(128)
            .optimize_on_close(true, 400);

        let mut conn = write_options.connect().await.map_err(open_error)?;
        ensure_incremental_vacuum(&mut conn, path)
            .await
            .map_err(open_error)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .map_err(open_error)?;
        if !journal.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal, "the file system refused WAL mode; readers will block the writer");
        }

        let read_options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "MEMORY")
            // Not SQLITE_OPEN_READONLY: a read-only connection cannot create
            // the WAL index after the last writer closed it. `query_only`
            // keeps these connections from writing all the same.
            .pragma("query_only", "ON");
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .idle_timeout(Duration::from_secs(600))
            .connect_with(read_options)
            .await
            .map_err(open_error)?;

        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                read,
                write_options,
                slot: Mutex::new(WriterSlot {
                    conn: Some(conn),
                    closed: false,
                }),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Starts the writer task (the only one: a second call fails with
    /// [`StoreError::WriterRunning`] until the first has shut down).
    /// `on_flush` runs on the writer task after each commit, so it must be
    /// quick; it should only notify. Must be called inside a Tokio runtime.
    pub fn spawn_writer(
        &self,
        options: WriterOptions,
        on_flush: Box<dyn Fn(Flushed) + Send + Sync>,
    ) -> Result<WriterHandle, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let conn = {
            let mut slot = self.inner.slot();
            if slot.closed {
                return Err(StoreError::Closed {
                    path: self.inner.path.clone(),
                });
            }
            slot.conn.take().ok_or_else(|| StoreError::WriterRunning {
                path: self.inner.path.clone(),
            })?
        };
        Ok(writer::spawn(
            &runtime,
            self.inner.clone(),
            conn,
            options,
            on_flush,
        ))
    }

    /// Rows of (key, min, max, sum, count) from one of the series queries.
    async fn aggregates(
        &self,
        query: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<(i64, Aggregate)>, StoreError> {
        let rows = query
            .fetch_all(&self.inner.read)
            .await
            .map_err(self.inner.query_error("reading a series"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, aggregate(row, 1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.inner.query_error("reading a series"))
    }

    /// The id of a device's metric series, if it has one.
    async fn series_id(&self, device: &str, metric: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT s.id FROM series s JOIN devices d ON d.id = s.device_id
             WHERE d.key = ?1 AND s.metric = ?2",
        )
        .bind(device)
        .bind(metric)
        .fetch_optional(&self.inner.read)
        .await
        .map_err(self.inner.query_error("reading a series"))
    }

    /// The samples of `metric` of `device` in `[from, to)`, downsampled to at
    /// most `max_points` buckets of equal width (each with min, max, mean and
    /// count). Empty buckets are left out. An unknown device or metric gives
    /// no points rather than an error: a chart simply shows nothing yet.
    /// Buckets of a minute or more are summed from the per-minute rollup
    /// (and the samples of the partial minutes at the window's ends).
    pub async fn series(
        &self,
        device: &str,
        metric: &str,
        from: Micros,
        to: Micros,
        max_points: usize,
    ) -> Result<Series, StoreError> {
        let (origin, bucket) = bucket_grid(from, to, max_points);
        if to <= from {
            return Ok(Series {
                from,
                to,
                bucket,
                points: Vec::new(),
            });
        }
        let Some(series_id) = self.series_id(device, metric).await? else {
            return Ok(Series {
                from,
                to,
                bucket,
                points: Vec::new(),
            });
        };
        let mut buckets = Buckets::new(origin, bucket);
        if bucket < MINUTE {
            // Short windows: every sample, grouped by SQLite in index order.
            let rows = self
                .aggregates(
                    sqlx::query(
                        "SELECT (at - ?1) / ?2 AS b, min(value), max(value), total(value), count(*)
                         FROM samples WHERE series_id = ?3 AND at >= ?1 AND at < ?4
                         GROUP BY b ORDER BY b",
                    )
                    .bind(origin)
                    .bind(bucket)
                    .bind(series_id)
                    .bind(to),
                )
                .await?;
            for (index, a) in rows {
                buckets.add_at(index, a);
            }
        } else {
            // Long windows: buckets are whole minutes on whole minutes, so
            // every minute of the rollup falls in exactly one; the partial
            // minutes at the window's two ends come from the samples
            // themselves, so nothing outside the window counts.
            let first_minute = from.div_euclid(MINUTE) + i64::from(from.rem_euclid(MINUTE) != 0);
            let end_minute = to.div_euclid(MINUTE);
            let (full_from, full_to) = (first_minute * MINUTE, end_minute * MINUTE);
            let minutes = self
                .aggregates(
                    sqlx::query(
                        "SELECT minute, min, max, sum, count FROM samples_1m
                         WHERE series_id = ?1 AND minute >= ?2 AND minute < ?3 ORDER BY minute",
                    )
                    .bind(series_id)
                    .bind(first_minute)
                    .bind(end_minute),
                )
                .await?;
            for (minute, a) in minutes {
                buckets.add(minute * MINUTE, a);
            }
            let edges = if full_from <= full_to {
                vec![(from, full_from), (full_to, to)]
            } else {
                vec![(from, to)] // the window lies inside one minute
            };
            for (a, b) in edges.into_iter().filter(|(a, b)| a < b) {
                let samples = self
                    .aggregates(
                        sqlx::query(
                            "SELECT at, value, value, value, 1 FROM samples
                             WHERE series_id = ?1 AND at >= ?2 AND at < ?3",
                        )
                        .bind(series_id)
                        .bind(a)
                        .bind(b),
                    )
                    .await?;
                for (at, a) in samples {
                    buckets.add(at, a);
                }
            }
        }
        let points = buckets.finish();
        Ok(Series {
            from,
            to,
            bucket,
            points,
        })
    }

    /// Messages matching `query`, newest first (descending id).
    pub async fn messages(&self, query: &MessageQuery) -> Result<Vec<StoredMessage>, StoreError> {
        // A fixed text per filter combination (sixteen at most) rather than
        // `(?1 IS NULL OR ...)`, which would stop SQLite from using the
        // (topic_id, id) and (device_id, id) indexes. Names and keys are
        // resolved in scalar subqueries: an unknown one matches nothing.
        let mut sql = String::from(
            "SELECT m.id, m.at, (SELECT name FROM topics WHERE id = m.topic_id),
                    (SELECT key FROM devices WHERE id = m.device_id),
                    m.client_id, m.qos, m.retain, m.payload, m.properties
             FROM messages m WHERE 1",
        );
        if query.topic.is_some() {
            sql.push_str(" AND m.topic_id = (SELECT id FROM topics WHERE name = ?)");
        }
        if query.device.is_some() {
            sql.push_str(" AND m.device_id = (SELECT id FROM devices WHERE key = ?)");
        }
        if query.before.is_some() {
            sql.push_str(" AND m.id < ?");
        }
        if query.after.is_some() {
            sql.push_str(" AND m.id > ?");
        }
        sql.push_str(" ORDER BY m.id DESC LIMIT ?");
        // Only fixed fragments went into `sql`; every value is a parameter.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        if let Some(topic) = &query.topic {
            q = q.bind(topic.as_str());
        }
        if let Some(device) = &query.device {
            q = q.bind(device.as_str());
        }
        if let Some(before) = query.before {
            q = q.bind(before);
        }
        if let Some(after) = query.after {
            q = q.bind(after);
        }
        let rows = q
            .bind(i64::from(query.limit))
            .fetch_all(&self.inner.read)
            .await
            .map_err(self.inner.query_error("reading messages"))?;
        rows.iter()
            .map(|row| {
                Ok(StoredMessage {
                    id: row.try_get(0)?,
                    at: row.try_get(1)?,
                    topic: row.try_get(2)?,
                    device: row.try_get(3)?,
                    client_id: row.try_get(4)?,
                    qos: qos(row, 5)?,
                    retain: row.try_get(6)?,
                    payload: Bytes::from(row.try_get::<Vec<u8>, _>(7)?),
                    properties: row.try_get(8)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.inner.query_error("reading messages"))
    }

    /// All retained messages, ordered by topic.
    pub async fn retained(&self) -> Result<Vec<RetainedMessage>, StoreError> {
        let rows =
            sqlx::query("SELECT topic, payload, qos, at, properties FROM retained ORDER BY topic")
                .fetch_all(&self.inner.read)
                .await
                .map_err(self.inner.query_error("reading retained messages"))?;
        rows.iter()
            .map(|row| {
                Ok(RetainedMessage {
                    topic: row.try_get(0)?,
                    payload: Bytes::from(row.try_get::<Vec<u8>, _>(1)?),
                    qos: qos(row, 2)?,
                    at: row.try_get(3)?,
                    properties: row.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.inner.query_error("reading retained messages"))
    }

    /// The CoAP devices found so far, by device key.
    pub async fn coap_devices(&self) -> Result<Vec<CoapDeviceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.key, c.address, c.found_by, c.resources, c.error, c.answered_at
             FROM coap_devices c JOIN devices d ON d.id = c.device_id ORDER BY d.key",
        )
        .fetch_all(&self.inner.read)
        .await
        .map_err(self.inner.query_error("reading CoAP devices"))?;
        rows.iter()
            .map(|row| {
                Ok(CoapDeviceRow {
                    device: row.try_get(0)?,
                    address: row.try_get(1)?,
                    found_by: row.try_get(2)?,
                    resources_json: row.try_get(3)?,
                    error: row.try_get(4)?,
                    answered_at: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.inner.query_error("reading CoAP devices"))
    }

    /// Row counts and file size. Counting walks an index of each table, so
    /// this costs milliseconds per million rows: poll it, but not per frame.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM samples),
                    (SELECT count(*) FROM devices),
                    (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size())",
        )
        .fetch_one(&self.inner.read)
        .await
        .map_err(self.inner.query_error("reading statistics"))?;
        (|| {
            Ok(StoreStats {
                messages: row.try_get(0)?,
                samples: row.try_get(1)?,
                devices: row.try_get(2)?,
                db_bytes: row.try_get::<i64, _>(3)?.max(0) as u64,
            })
        })()
        .map_err(self.inner.query_error("reading statistics"))
    }

    /// Runs `PRAGMA integrity_check` and fails with [`StoreError::Corrupt`]
    /// unless SQLite answers "ok". Reads the whole file: seconds per GiB.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.inner.read)
            .await
            .map_err(self.inner.query_error("checking integrity"))?;
        if lines.len() == 1 && lines[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: self.inner.path.clone(),
            details: lines.into_iter().take(10).collect::<Vec<_>>().join("; "),
        })
    }

    /// Closes the read connections and the idle write connection. Shut the
    /// writer down first ([`WriterHandle::shutdown`]); a writer still running
    /// closes its connection when it stops. Queries on any clone fail after
    /// this.
    pub async fn close(&self) {
        let conn = {
            let mut slot = self.inner.slot();
            slot.closed = true;
            slot.conn.take()
        };
        if let Some(conn) = conn {
            close_quietly(conn, &self.inner.path).await;
        }
        self.inner.read.close().await;
    }

    pub(crate) fn read_pool(&self) -> &SqlitePool {
        &self.inner.read
    }

    /// Takes the idle write connection, for tests that need to tamper.
    #[cfg(test)]
    pub(crate) fn inner_writer_conn_for_test(&self) -> SqliteConnection {
        self.inner
            .slot()
            .conn
            .take()
            .expect("idle write connection")
    }

    #[cfg(test)]
    pub(crate) async fn return_writer_for_test(&self, conn: SqliteConnection) {
        self.inner.return_writer(conn).await
    }
}

/// Makes sure the file uses incremental auto-vacuum. New files get it from the
/// connect pragmas; a file created some other way (e.g. by the sqlite3 shell)
/// needs one `VACUUM` to switch, which rewrites it once.
async fn ensure_incremental_vacuum(
    conn: &mut SqliteConnection,
    path: &Path,
) -> Result<(), sqlx::Error> {
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut *conn)
        .await?;
    if mode != 2 {
        tracing::info!(path = %path.display(), mode, "switching the database to incremental auto-vacuum (one-time VACUUM)");
        sqlx::raw_sql("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Bucket width for `max_points` buckets over `[from, to)`, at least 1 µs.
/// min, max, sum and count of some samples.
type Aggregate = (f64, f64, f64, i64);

/// An [`Aggregate`] from four columns of a row, starting at `first`.
fn aggregate(row: &SqliteRow, first: usize) -> Result<Aggregate, sqlx::Error> {
    Ok((
        row.try_get(first)?,
        row.try_get(first + 1)?,
        row.try_get(first + 2)?,
        row.try_get(first + 3)?,
    ))
}

/// Where the buckets of a window start, and how wide they are: `max_points`
/// equal buckets from `from`, or, when they would be a minute or wider, whole
/// minutes starting on a whole minute (the first may then start up to a
/// minute before `from`; only samples from `from` on count).
fn bucket_grid(from: Micros, to: Micros, max_points: usize) -> (Micros, Micros) {
    let width = bucket_width(from, to, max_points);
    if width < MINUTE {
        return (from, width);
    }
    let origin = from.div_euclid(MINUTE) * MINUTE;
    let width = bucket_width(origin, to, max_points);
    let minutes = (i128::from(width) + i128::from(MINUTE) - 1) / i128::from(MINUTE);
    let width = (minutes * i128::from(MINUTE)).min(i128::from(i64::MAX)) as i64;
    (origin, width)
}

/// Buckets of a series being summed up, by their index from their origin.
struct Buckets {
    from: Micros,
    width: Micros,
    by_index: std::collections::BTreeMap<i64, Aggregate>,
}

impl Buckets {
    fn new(from: Micros, width: Micros) -> Buckets {
        Buckets {
            from,
            width,
            by_index: std::collections::BTreeMap::new(),
        }
    }

    /// Adds an aggregate that starts at `at`.
    fn add(&mut self, at: Micros, a: Aggregate) {
        self.add_at((at - self.from).div_euclid(self.width), a);
    }

    /// Adds an aggregate to bucket `index`.
    fn add_at(&mut self, index: i64, (min, max, sum, count): Aggregate) {
        let b = self
            .by_index
            .entry(index)
            .or_insert((f64::INFINITY, f64::NEG_INFINITY, 0.0, 0));
        b.0 = b.0.min(min);
        b.1 = b.1.max(max);
        b.2 += sum;
        b.3 += count;
    }

    fn finish(self) -> Vec<Bucket> {
        self.by_index
            .into_iter()
            .filter(|(_, b)| b.3 > 0)
            .map(|(index, (min, max, sum, count))| Bucket {
                at: self.from + index * self.width,
                min,
                max,
                avg: sum / count as f64,
                count,
            })
            .collect()
    }
}

fn bucket_width(from: Micros, to: Micros, max_points: usize) -> Micros {
    let span = (i128::from(to) - i128::from(from)).max(0);
    let n = max_points.max(1) as i128;
    let width = (span + n - 1) / n;
    width.clamp(1, i128::from(i64::MAX)) as i64
}

fn qos(row: &SqliteRow, index: usize) -> Result<u8, sqlx::Error> {
    let value: i64 = row.try_get(index)?;
    Ok(value.clamp(0, 2) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{count, device_record, record, temp_store, write_all};
    use crate::Record;

    async fn pragma(conn: &mut SqliteConnection, name: &'static str) -> String {
        let row = sqlx::query(name).fetch_one(conn).await.expect(name);
        let value = row.try_get_raw(0).expect(name);
        use sqlx::{Value, ValueRef};
        let value = value.to_owned();
        value
            .try_decode::<i64>()
            .map(|v| v.to_string())
            .or_else(|_| value.try_decode::<String>())
            .expect(name)
    }

    #[tokio::test]
    async fn a_new_file_gets_wal_incremental_vacuum_and_the_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dirs/vigil.db");
        let store = Store::open(&path).await.unwrap();
        assert!(path.is_file());
        assert_eq!(store.path(), path);

        let mut writer = store
            .inner
            .slot()
            .conn
            .take()
            .expect("idle write connection");
        assert_eq!(pragma(&mut writer, "PRAGMA journal_mode").await, "wal");
        assert_eq!(
            pragma(&mut writer, "PRAGMA auto_vacuum").await,
            "2",
            "2 = INCREMENTAL"
        );
        assert_eq!(
            pragma(&mut writer, "PRAGMA synchronous").await,
            "1",
            "1 = NORMAL"
        );
        assert_eq!(pragma(&mut writer, "PRAGMA foreign_keys").await, "1");
        assert_eq!(pragma(&mut writer, "PRAGMA busy_timeout").await, "5000");
        store.inner.return_writer(writer).await;

        let mut reader = store.read_pool().acquire().await.unwrap();
        assert_eq!(pragma(&mut reader, "PRAGMA journal_mode").await, "wal");
        assert_eq!(pragma(&mut reader, "PRAGMA auto_vacuum").await, "2");
        assert_eq!(pragma(&mut reader, "PRAGMA synchronous").await, "1");
        assert_eq!(pragma(&mut reader, "PRAGMA foreign_keys").await, "1");
        assert_eq!(pragma(&mut reader, "PRAGMA busy_timeout").await, "5000");
        assert_eq!(pragma(&mut reader, "PRAGMA query_only").await, "1");
        let refused = sqlx::query("INSERT INTO topics (name) VALUES ('x')")
            .execute(&mut *reader)
            .await;
        assert!(refused.is_err(), "read connections must not write");
        drop(reader);

        // The setting is recorded in the file header, not just the connection.
        store.close().await;
        let header = std::fs::read(&path).unwrap();
        let largest_root_page = u32::from_be_bytes(header[52..56].try_into().unwrap());
        let incremental = u32::from_be_bytes(header[64..68].try_into().unwrap());
        assert!(largest_root_page > 0, "auto-vacuum is on in the header");
        assert_eq!(incremental, 1, "incremental mode in the header");
    }

    #[tokio::test]
    async fn a_file_created_without_auto_vacuum_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE unrelated (x INTEGER)")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(pragma(&mut conn, "PRAGMA auto_vacuum").await, "0");
        conn.close().await.unwrap();

        let store = Store::open(&path).await.unwrap();
        let mut reader = store.read_pool().acquire().await.unwrap();
        assert_eq!(pragma(&mut reader, "PRAGMA auto_vacuum").await, "2");
    }

    #[tokio::test]
    async fn open_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let err = Store::open(dir.path())
            .await
            .expect_err("a directory is no database");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        assert!(text.starts_with("cannot open database at "), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");

        // A file where the directory should be.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = Store::open(&blocker.join("vigil.db"))
            .await
            .expect_err("parent is a file");
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains("cannot create directory"), "{err}");

        // Not a database at all.
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
        let err = Store::open(&garbage)
            .await
            .expect_err("garbage is no database");
        assert!(
            err.to_string().contains(&garbage.display().to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn payloads_round_trip_byte_for_byte() {
        let (_dir, store) = temp_store().await;
        let big: Vec<u8> = (0..512 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        let binary = vec![0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80, 0x00];
        let records = vec![
            Record {
                client_id: Some("client-1".into()),
                properties: Some(r#"{"content_type":"application/octet-stream"}"#.into()),
                qos: 2,
                ..record(1_000, "blobs/big", &big)
            },
            record(2_000, "blobs/binary", &binary),
            record(3_000, "blobs/empty", b""),
        ];
        write_all(&store, records).await;

        let got = store.messages(&MessageQuery::default()).await.unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].payload.len(), 0);
        assert_eq!(&got[1].payload[..], &binary[..]);
        assert_eq!(got[2].payload.len(), big.len());
        assert!(got[2].payload == big, "512 KiB payload differs");
        assert_eq!(got[2].topic, "blobs/big");
        assert_eq!(got[2].at, 1_000);
        assert_eq!(got[2].qos, 2);
        assert!(!got[2].retain);
        assert_eq!(got[2].client_id.as_deref(), Some("client-1"));
        assert_eq!(
            got[2].properties.as_deref(),
            Some(r#"{"content_type":"application/octet-stream"}"#)
        );
        assert_eq!(got[2].device, None);
        assert_eq!(got[1].client_id, None);
        assert!(
            got[0].id > got[1].id && got[1].id > got[2].id,
            "newest first"
        );
    }

    #[tokio::test]
    async fn messages_page_newest_first_and_filter_by_topic_and_device() {
        let (_dir, store) = temp_store().await;
        let mut records = Vec::new();
        for i in 0..300 {
            let device = ["a", "b", "c"][i % 3];
            let mut r = device_record(i as Micros, device, &[]);
            r.topic = format!("t/{}", i % 2);
            r.payload = format!("{i}").into_bytes().into();
            records.push(r);
        }
        records.push(record(300, "t/0", b"no device"));
        write_all(&store, records).await;

        // Walk all pages with `before`.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .messages(&MessageQuery {
                    before,
                    limit: 64,
                    ..MessageQuery::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 64);
            before = page.last().map(|m| m.id);
            seen.extend(page);
        }
        assert_eq!(seen.len(), 301);
        assert!(
            seen.windows(2).all(|w| w[0].id > w[1].id),
            "strictly newest first"
        );
        assert_eq!(&seen[0].payload[..], b"no device");
        assert_eq!(&seen[300].payload[..], b"0");

        let t1 = store
            .messages(&MessageQuery {
                topic: Some("t/1".into()),
                limit: 1000,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(t1.len(), 150);
        assert!(t1.iter().all(|m| m.topic == "t/1"));

        let b = store
            .messages(&MessageQuery {
                device: Some("b".into()),
                limit: 1000,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(b.len(), 100);
        assert!(b.iter().all(|m| m.device.as_deref() == Some("b")));

        let both = store
            .messages(&MessageQuery {
                topic: Some("t/0".into()),
                device: Some("a".into()),
                before: Some(b[0].id),
                limit: 10,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(both.len(), 10);
        assert!(both
            .iter()
            .all(|m| m.topic == "t/0" && m.device.as_deref() == Some("a") && m.id < b[0].id));

        // What arrived since a given id, newest first; with `before`, a window.
        let newest = seen[0].id;
        let since = store
            .messages(&MessageQuery {
                after: Some(newest - 5),
                limit: 1000,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<i64> = since.iter().map(|m| m.id).collect();
        assert_eq!(ids, (newest - 4..=newest).rev().collect::<Vec<_>>());
        let window = store
            .messages(&MessageQuery {
                after: Some(newest - 5),
                before: Some(newest - 1),
                limit: 1000,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(window.len(), 3);

        let unknown = store
            .messages(&MessageQuery {
                topic: Some("nope".into()),
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert!(unknown.is_empty());
        let unknown = store
            .messages(&MessageQuery {
                device: Some("nope".into()),
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert!(unknown.is_empty());
    }

    #[tokio::test]
    async fn message_queries_use_the_indexes() {
        let (_dir, store) = temp_store().await;
        let pool = store.read_pool().clone();
        let plan = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
                rows.iter()
                    .map(|r| r.get::<String, _>(3))
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
        };
        let topic = plan(
            "EXPLAIN QUERY PLAN SELECT m.id FROM messages m WHERE 1
             AND m.topic_id = (SELECT id FROM topics WHERE name = 'x') AND m.id < 5 ORDER BY m.id DESC LIMIT 10",
        )
        .await;
        assert!(topic.contains("messages_topic"), "{topic}");
        assert!(!topic.contains("TEMP B-TREE"), "{topic}");
        let series = plan(
            "EXPLAIN QUERY PLAN SELECT (at - 0) / 10 AS b, count(*) FROM samples
             WHERE series_id = 3 AND at >= 0 AND at < 100 GROUP BY b ORDER BY b",
        )
        .await;
        assert!(
            series.contains("SEARCH samples USING PRIMARY KEY (series_id=? AND at>? AND at<?)"),
            "{series}"
        );
    }

    #[tokio::test]
    async fn devices_aggregate_many_devices_with_latest_metrics() {
        let (_dir, store) = temp_store().await;
        let mut records = Vec::new();
        for round in 0..20 {
            for d in (0..50).rev() {
                let at = 1_000_000 + round * 1_000 + d;
                records.push(device_record(
                    at,
                    &format!("dev-{d:02}"),
                    &[("temp", round as f64), ("hum", d as f64)],
                ));
            }
        }
        // A late, older sample must not replace the latest value.
        records.push(device_record(5, "dev-07", &[("temp", -100.0)]));
        write_all(&store, records).await;

        let devices = store.devices().await.unwrap();
        assert_eq!(devices.len(), 50);
        assert!(
            devices.windows(2).all(|w| w[0].id < w[1].id),
            "ordered by key"
        );
        let d7 = devices.iter().find(|d| d.id == "dev-07").unwrap();
        assert_eq!(d7.message_count, 21);
        assert_eq!(d7.first_seen, 5);
        assert_eq!(d7.last_seen, 1_000_000 + 19_000 + 7);
        let names: Vec<&str> = d7.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["hum", "temp"], "metrics ordered by name");
        assert_eq!(d7.metrics[1].value, 19.0);
        assert_eq!(d7.metrics[1].at, 1_019_007);
        assert_eq!(d7.metrics[0].value, 7.0);
        assert_eq!(store.device("dev-07").await.unwrap().as_ref(), Some(d7));
        assert_eq!(store.device("nope").await.unwrap(), None);

        let stats = store.stats().await.unwrap();
        assert_eq!(stats.devices, 50);
        assert_eq!(stats.messages, 1001);
        assert_eq!(stats.samples, 2001);
        assert!(stats.db_bytes > 0);
        assert_eq!(count(&store, "series").await, 100);
        serde_json::to_string(&devices).unwrap();
    }

    /// Buckets computed the slow way, from every sample, on the same grid.
    fn brute_force(samples: &[(Micros, f64)], from: Micros, to: Micros, n: usize) -> Vec<Bucket> {
        let (origin, width) = bucket_grid(from, to, n);
        let mut b = Buckets::new(origin, width);
        for &(at, v) in samples.iter().filter(|(at, _)| (from..to).contains(at)) {
            b.add(at, (v, v, v, 1));
        }
        b.finish()
    }

    fn same(a: &[Bucket], b: &[Bucket]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (x.at, x.count, x.min, x.max) == (y.at, y.count, y.min, y.max)
                    && (x.avg - y.avg).abs() <= 1e-9 * x.avg.abs().max(1.0)
            })
    }

    #[tokio::test]
    async fn long_windows_from_the_rollup_equal_every_sample() {
        let (dir, store) = temp_store().await;
        let t0: Micros = 1_700_000_000_123_456; // not on a whole second
        let mut rng = vigil_core_rng(7);
        // Irregular times over ~3 days, in several batches (so minutes are
        // folded across transactions), out of order within each.
        let mut samples: Vec<(Micros, f64)> = Vec::new();
        let mut at = t0;
        for _ in 0..20_000 {
            at += (rng() % 25_000_000) as i64 + 1;
            samples.push((at, (rng() % 10_000) as f64 / 7.0 - 500.0));
        }
        for chunk in samples.chunks(3_000) {
            let mut records: Vec<Record> = chunk
                .iter()
                .map(|&(at, v)| {
                    let mut r = device_record(at, "m", &[]);
                    r.samples.push(crate::Sample {
                        metric: "x".into(),
                        value: v,
                        at: Some(at),
                    });
                    r
                })
                .collect();
            records.reverse();
            write_all(&store, records).await;
        }
        let end = samples.last().unwrap().0 + 1;
        let mut windows = vec![
            (t0, end, 1400),
            (t0 - 3_600_000_000, end + 99, 7),
            (t0 + 61_000_000, t0 + 61_000_001, 5),
        ];
        for _ in 0..40 {
            let a = t0 + (rng() % (end - t0) as u64) as i64;
            let b = a + (rng() % (end - a) as u64) as i64 + 1;
            windows.push((a, b, 1 + (rng() % 500) as usize));
        }
        for &(from, to, n) in &windows {
            let got = store.series("m", "x", from, to, n).await.unwrap();
            let want = brute_force(&samples, from, to, n);
            assert!(got.points.len() <= n, "{from} {to} {n}");
            assert!(
                same(&got.points, &want),
                "window {from}..{to} in {n}: {:?} vs {:?}",
                &got.points[..2.min(got.points.len())],
                &want[..2.min(want.len())]
            );
        }

        // A database from before the rollup gets it built by its migration.
        let mut conn = store.inner_writer_conn_for_test();
        sqlx::raw_sql("DROP TABLE samples_1m; DELETE FROM _sqlx_migrations WHERE version = 3")
            .execute(&mut conn)
            .await
            .unwrap();
        store.return_writer_for_test(conn).await;
        store.close().await;
        let store = Store::open(&dir.path().join("vigil.db")).await.unwrap();
        let (from, to) = (t0, end);
        let got = store.series("m", "x", from, to, 300).await.unwrap();
        assert!(same(&got.points, &brute_force(&samples, from, to, 300)));
    }

    /// A small deterministic generator (xorshift) for the test above.
    fn vigil_core_rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[tokio::test]
    async fn series_are_downsampled_into_buckets() {
        let (_dir, store) = temp_store().await;
        let t0: Micros = 1_700_000_000_000_000;
        let second: Micros = 1_000_000;
        let records = (0..10_000).map(|i| {
            let mut r = device_record(
                t0 + i * second,
                "meter",
                &[("power", i as f64), ("other", 1.0)],
            );
            if i % 10 == 0 {
                r.samples.push(crate::Sample::new("sparse", -(i as f64)));
            }
            r
        });
        write_all(
            &store,
            records.chain([device_record(t0, "elsewhere", &[("power", 1e9)])]),
        )
        .await;

        // Short buckets (under a minute) start at `from` and are exact.
        let s = store
            .series("meter", "power", t0, t0 + 1_000 * second, 100)
            .await
            .unwrap();
        assert_eq!(s.bucket, 10 * second);
        assert_eq!((s.from, s.to), (t0, t0 + 1_000 * second));
        assert_eq!(s.points.len(), 100);
        for (k, b) in s.points.iter().enumerate() {
            let k = k as i64;
            assert_eq!(b.at, t0 + k * 10 * second);
            assert_eq!(
                (b.count, b.min, b.max),
                (10, (k * 10) as f64, (k * 10 + 9) as f64)
            );
            assert!((b.avg - (k * 10) as f64 - 4.5).abs() < 1e-9, "{b:?}");
        }

        // Long buckets are whole minutes on whole minutes (t0 is 20 s past
        // one), read from the per-minute rollup; every bucket still holds
        // exactly the samples of its part of [from, to).
        let (from, to) = (t0, t0 + 10_000 * second);
        let s = store.series("meter", "power", from, to, 100).await.unwrap();
        assert_eq!(
            s.bucket,
            120 * second,
            "10,020 s over 100 buckets, rounded up to minutes"
        );
        assert!(s.points.len() <= 100);
        assert_eq!(s.points[0].at, t0 - 20 * second);
        assert_eq!(s.points.iter().map(|b| b.count).sum::<i64>(), 10_000);
        for b in &s.points {
            assert_eq!(b.at.rem_euclid(60 * second), 0, "on a whole minute");
            // value i was sampled at t0 + i s
            let lo = ((b.at.max(from) - t0) / second) as f64;
            let hi = (((b.at + s.bucket).min(to) - t0) / second - 1) as f64;
            assert_eq!(
                (b.min, b.max, b.count),
                (lo, hi, (hi - lo) as i64 + 1),
                "{b:?}"
            );
            assert!((b.avg - (lo + hi) / 2.0).abs() < 1e-9, "{b:?}");
        }

        // A sub-range, `to` exclusive, and a width that does not divide evenly.
        let s = store
            .series("meter", "power", t0 + 10 * second, t0 + 20 * second, 3)
            .await
            .unwrap();
        assert_eq!(s.bucket, 3_333_334);
        assert_eq!(s.points.iter().map(|b| b.count).sum::<i64>(), 10);
        assert_eq!(s.points.len(), 3);
        assert_eq!(s.points[0].min, 10.0);
        assert_eq!(s.points[2].max, 19.0);

        // Only non-empty buckets come back.
        let s = store
            .series("meter", "sparse", t0, t0 + 100 * second, 100)
            .await
            .unwrap();
        assert_eq!(s.bucket, second);
        assert_eq!(s.points.len(), 10);
        assert_eq!(s.points[3].at, t0 + 30 * second);
        assert_eq!(s.points[3].avg, -30.0);

        for (device, metric) in [("meter", "nope"), ("nope", "power")] {
            let s = store
                .series(device, metric, t0, t0 + second, 10)
                .await
                .unwrap();
            assert!(s.points.is_empty());
        }
        let s = store.series("meter", "power", t0, t0, 10).await.unwrap();
        assert!(s.points.is_empty());
        assert_eq!(s.bucket, 1);
        let s = store.series("meter", "power", t0, t0 + 5, 0).await.unwrap();
        assert_eq!((s.bucket, s.points.len()), (5, 1));
        serde_json::to_string(&s).unwrap();
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_passes_the_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.db");
        let store = Store::open(&path).await.unwrap();
        write_all(
            &store,
            (0..1000).map(|i| device_record(i, &format!("d{}", i % 7), &[("x", i as f64)])),
        )
        .await;
        let retained = Record {
            retain: true,
            ..record(5, "r/1", b"kept")
        };
        write_all(&store, [retained]).await;
        let before = (
            store.devices().await.unwrap(),
            store
                .messages(&MessageQuery {
                    limit: 5000,
                    ..MessageQuery::default()
                })
                .await
                .unwrap(),
            store.retained().await.unwrap(),
            store.series("d3", "x", 0, 1000, 10).await.unwrap(),
            store.stats().await.unwrap(),
        );
        store.integrity_check().await.unwrap();
        store.close().await;
        assert!(store.devices().await.is_err(), "closed");
        drop(store);

        let store = Store::open(&path).await.unwrap();
        let after = (
            store.devices().await.unwrap(),
            store
                .messages(&MessageQuery {
                    limit: 5000,
                    ..MessageQuery::default()
                })
                .await
                .unwrap(),
            store.retained().await.unwrap(),
            store.series("d3", "x", 0, 1000, 10).await.unwrap(),
            store.stats().await.unwrap(),
        );
        assert_eq!(before.0, after.0);
        assert_eq!(before.1, after.1);
        assert_eq!(before.2, after.2);
        assert_eq!(before.3, after.3);
        assert_eq!(before.4.messages, 1001);
        assert_eq!(before.4.messages, after.4.messages);
        assert_eq!(before.4.samples, after.4.samples);
        store.integrity_check().await.unwrap();

        // New messages continue the id sequence.
        write_all(&store, [record(2000, "t", b"new")]).await;
        let newest = store
            .messages(&MessageQuery {
                limit: 1,
                ..MessageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(newest[0].id, 1002);
    }

    #[tokio::test]
    async fn integrity_check_reports_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.db");
        let store = Store::open(&path).await.unwrap();
        write_all(
            &store,
            (0..2000).map(|i| record(i, &format!("topic/{i}"), &[b'x'; 300])),
        )
        .await;
        store.close().await;
        drop(store);

        // Overwrite a page in the middle of the file with junk.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096;
        let victim = bytes.len() / page / 2 * page;
        bytes[victim + 8..victim + page].fill(0x5a);
        std::fs::write(&path, bytes).unwrap();

        match Store::open(&path).await {
            Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
            Ok(store) => {
                let err = store.integrity_check().await.unwrap_err();
                assert!(
                    matches!(err, StoreError::Corrupt { .. } | StoreError::Query { .. }),
                    "{err:?}"
                );
                assert!(
                    err.to_string().contains(&path.display().to_string()),
                    "{err}"
                );
            }
        }
    }
}
