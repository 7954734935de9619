//! The single writer task: group commit of records, and retention.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Arguments, ConnectOptions, Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot};
use vigil_core::{now_micros, Micros};

use crate::apply;
use crate::changes::Change;
use crate::error::StoreError;
use crate::retention;
use crate::sql::ChunkedSql;
use crate::store::Inner;
use crate::types::{Flushed, Record, Retention, RetentionReport, WriterOptions};

/// What travels through the writer's queue. Control operations share the
/// queue with records so that they observe everything queued before them.
#[derive(Debug)]
enum WriteOp {
    Record(Record),
    Change(Change),
    Retention(
        Retention,
        oneshot::Sender<Result<RetentionReport, StoreError>>,
    ),
    Shutdown(oneshot::Sender<Result<(), StoreError>>),
    Sync(oneshot::Sender<()>),
}

/// Feeds the writer task. Clone it freely; the task stops when
/// [`WriterHandle::shutdown`] is called on any clone or when every clone is
/// dropped (after committing what was queued).
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<WriteOp>,
}

impl WriterHandle {
    /// Queues one record. Waits while the queue is full, which slows the
    /// producer down to the speed of the disk instead of growing memory.
    /// Returns once the record is queued, not once it is committed: watch
    /// `on_flush` for that.
    pub async fn write(&self, record: Record) -> Result<(), StoreError> {
        self.tx
            .send(WriteOp::Record(record))
            .await
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Queues one change (device description, presence, alert, ...). It is
    /// committed in order with the records queued around it.
    pub async fn change(&self, change: Change) -> Result<(), StoreError> {
        self.tx
            .send(WriteOp::Change(change))
            .await
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Returns once everything queued before this call has been committed
    /// (or its commit has failed, which the writer logs), so that a reader
    /// sees a change the caller has just made.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WriteOp::Sync(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)
    }

    /// Deletes old history as `retention` says. It runs on the writer task
    /// after the records queued before it are committed, so it never competes
    /// with inserts for the write lock; records queued meanwhile wait.
    pub async fn apply_retention(
        &self,
        retention: Retention,
    ) -> Result<RetentionReport, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WriteOp::Retention(retention, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Commits everything queued before this call, stops the writer and
    /// returns once it has stopped (its connection is then free for the next
    /// [`crate::Store::spawn_writer`]). Records other clones queue after this
    /// call are discarded and later writes fail with
    /// [`StoreError::WriterStopped`]. Fails with the error of the final batch
    /// if it could not be committed, or with `WriterStopped` if the writer had
    /// already stopped.
    pub async fn shutdown(self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WriteOp::Shutdown(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    store: Arc<Inner>,
    conn: SqliteConnection,
    options: WriterOptions,
    on_flush: Box<dyn Fn(Flushed) + Send + Sync>,
) -> WriterHandle {
    let (tx, rx) = mpsc::channel(options.queue.max(1));
    let checkpointer = Checkpointer::spawn(runtime, store.clone());
    let writer = Writer {
        store,
        conn,
        checkpointer: Some(checkpointer),
        options,
        on_flush,
        sql: Statements::new(),
        topics: HashMap::new(),
        devices: HashMap::new(),
        series: HashMap::new(),
    };
    runtime.spawn(writer.run(rx));
    WriterHandle { tx }
}

/// Pause between two background checkpoints: each copies every page written
/// since the previous one once, so pages rewritten by several batches in the
/// meantime are copied only once.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(250);

/// The checkpointer: a task with its own connection (so its own thread) that
/// copies committed pages from the WAL into the database file. SQLite would
/// otherwise do that on the writer's thread inside `COMMIT` every
/// `wal_autocheckpoint` pages, stalling inserts for the copy and the fsync.
/// The writer's own auto-checkpoint stays on as a safety net (and lets the
/// WAL restart from its beginning); with this task keeping up, it finds
/// little left to copy.
struct Checkpointer {
    /// Capacity one: a nudge sent while one is pending is simply dropped.
    nudge: mpsc::Sender<()>,
    /// Dropping it ends the task, even in the middle of its pause.
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn spawn(runtime: &tokio::runtime::Handle, store: Arc<Inner>) -> Checkpointer {
        let (nudge, mut nudged) = mpsc::channel::<()>(1);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let mut conn = match store.checkpoint_options().connect().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(path = %store.path.display(), %error, "cannot open a checkpoint connection; the writer will checkpoint itself");
                    return;
                }
            };
            loop {
                tokio::select! {
                    nudge = nudged.recv() => if nudge.is_none() { break },
                    _ = &mut stopped => break,
                }
                if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
                    tracing::warn!(path = %store.path.display(), %error, "background checkpoint failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHECKPOINT_PAUSE) => {}
                    _ = &mut stopped => break,
                }
            }
            if let Err(error) = conn.close().await {
                tracing::warn!(path = %store.path.display(), %error, "closing the checkpoint connection failed");
            }
        });
        Checkpointer { nudge, stop, task }
    }

    /// Called after each commit.
    fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    /// Ends the task and waits until its connection is closed.
    async fn stop(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Waits before each retry of a failed batch: a full disk or a lock held by
/// another process may clear up; after the last one the batch is dropped so
/// the writer keeps up with new records.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(500)];
/// Past this many entries an id cache is cleared rather than grown, so that
/// clients inventing a topic per message cannot eat memory.
const CACHE_LIMIT: usize = 100_000;

struct Writer {
    store: Arc<Inner>,
    conn: SqliteConnection,
    /// `None` once stopped.
    checkpointer: Option<Checkpointer>,
    options: WriterOptions,
    on_flush: Box<dyn Fn(Flushed) + Send + Sync>,
    sql: Statements,
    /// Topic name → topics.id. Only this task inserts topics, so a cached id
    /// stays valid as long as the transaction that created it committed.
    topics: HashMap<String, i64>,
    /// Device key → devices.id.
    devices: HashMap<String, i64>,
    /// devices.id → metric → series.id.
    series: HashMap<i64, HashMap<String, i64>>,
}

/// The multi-row statements of a batch (nine texts each, see [`ChunkedSql`]).
struct Statements {
    devices: ChunkedSql,
    messages: ChunkedSql,
    samples: ChunkedSql,
    minutes: ChunkedSql,
    series_last: ChunkedSql,
    retained_upsert: ChunkedSql,
    retained_delete: ChunkedSql,
}

impl Statements {
    fn new() -> Statements {
        Statements {
            devices: ChunkedSql::new(
                "INSERT INTO devices (key, first_seen, last_seen, message_count) VALUES ",
                4,
                " ON CONFLICT (key) DO UPDATE SET
                    first_seen = min(first_seen, excluded.first_seen),
                    last_seen = max(last_seen, excluded.last_seen),
                    message_count = message_count + excluded.message_count",
            ),
            // OR FAIL rather than the default ABORT: a multi-row statement
            // that may abort must be undoable on its own, so SQLite copies
            // every page it touches into a statement journal first, the
            // largest avoidable cost in profiles of the writer. FAIL needs no
            // journal, and the whole transaction is rolled back on any error
            // anyway. (Immediate foreign keys force the journal too, hence
            // the deferred ones in the schema.)
            messages: ChunkedSql::new(
                "INSERT OR FAIL INTO messages (at, topic_id, device_id, client_id, qos, retain, payload, properties) VALUES ",
                8,
                "",
            ),
            // A second sample of a series at the very same µs replaces the
            // first (samples are keyed by (series_id, at)); REPLACE, like
            // FAIL, needs no statement journal.
            samples: ChunkedSql::new("INSERT OR REPLACE INTO samples (series_id, at, value) VALUES ", 3, ""),
            // The batch's samples folded per series and minute into the
            // per-minute rollup that long chart windows read.
            minutes: ChunkedSql::new(
                "INSERT INTO samples_1m (series_id, minute, min, max, sum, count) VALUES ",
                6,
                " ON CONFLICT (series_id, minute) DO UPDATE SET
                    min = min(samples_1m.min, excluded.min), max = max(samples_1m.max, excluded.max),
                    sum = samples_1m.sum + excluded.sum, count = samples_1m.count + excluded.count",
            ),
            // Records can arrive out of time order (several sources), so an
            // older sample never replaces a newer latest value.
            series_last: ChunkedSql::new(
                "UPDATE series SET last_value = v.column2, last_at = v.column3 FROM (VALUES ",
                3,
                ") AS v WHERE series.id = v.column1 AND (series.last_at IS NULL OR series.last_at <= v.column3)",
            ),
            retained_upsert: ChunkedSql::new(
                "INSERT INTO retained (topic, payload, qos, at, properties) VALUES ",
                5,
                " ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, qos = excluded.qos,
                    at = excluded.at, properties = excluded.properties",
            ),
            retained_delete: ChunkedSql::new("DELETE FROM retained WHERE topic IN (", 1, ")"),
        }
    }
}

/// One minute of one series within a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MinuteAggregate {
    series_id: i64,
    minute: i64,
    min: f64,
    max: f64,
    sum: f64,
    count: i64,
}

/// The samples of a batch (sorted by series, then time) folded per series and
/// minute.
fn fold_minutes(samples: &[(i64, Micros, f64)]) -> Vec<MinuteAggregate> {
    let mut out: Vec<MinuteAggregate> = Vec::new();
    for &(series_id, at, value) in samples {
        let minute = at.div_euclid(crate::MINUTE);
        match out.last_mut() {
            Some(m) if m.series_id == series_id && m.minute == minute => {
                m.min = m.min.min(value);
                m.max = m.max.max(value);
                m.sum += value;
                m.count += 1;
            }
            _ => out.push(MinuteAggregate {
                series_id,
                minute,
                min: value,
                max: value,
                sum: value,
                count: 1,
            }),
        }
    }
    out
}

/// first_seen, last_seen and message count of one device within a batch.
#[derive(Clone, Copy)]
struct DeviceAgg {
    first: Micros,
    last: Micros,
    count: i64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) {
        let flush_rows = self.options.flush_rows.max(1);
        let mut batch: Vec<Record> = Vec::with_capacity(flush_rows.min(1 << 16));
        let mut changes: Vec<Change> = Vec::new();
        let shutdown = loop {
            let Some(first) = rx.recv().await else {
                break None; // every handle dropped and the queue is empty
            };
            let mut control = None;
            let mut flushed = Ok(());
            match first {
                first @ (WriteOp::Record(_) | WriteOp::Change(_)) => {
                    match first {
                        WriteOp::Record(record) => batch.push(record),
                        WriteOp::Change(change) => changes.push(change),
                        _ => {}
                    }
                    // Group commit: take whatever is already queued, but never
                    // wait for more. Under load, records pile up while the
                    // previous batch commits, so batches grow by themselves.
                    let deadline = Instant::now() + self.options.flush_interval;
                    'drain: while batch.len() < flush_rows {
                        // Reading the clock is cheap but not free: once per
                        // 256 records is often enough.
                        for _ in 0..256 {
                            match rx.try_recv() {
                                Ok(WriteOp::Record(record)) => batch.push(record),
                                Ok(WriteOp::Change(change)) => changes.push(change),
                                Ok(op) => {
                                    control = Some(op);
                                    break 'drain;
                                }
                                Err(_) => break 'drain,
                            }
                            if batch.len() >= flush_rows {
                                break 'drain;
                            }
                        }
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    flushed = self.flush(&mut batch, &mut changes).await;
                }
                op => control = Some(op),
            }
            match control {
                Some(WriteOp::Retention(retention, reply)) => {
                    let result = self.retention(retention).await;
                    let _ = reply.send(result);
                }
                Some(WriteOp::Shutdown(reply)) => break Some((reply, flushed)),
                Some(WriteOp::Sync(reply)) => {
                    let _ = reply.send(());
                }
                Some(WriteOp::Record(_) | WriteOp::Change(_)) | None => {}
            }
        };

        // Whatever other clones queued after the shutdown request is dropped;
        // pending retention requests see their reply channel close.
        rx.close();
        let mut discarded = 0usize;
        while let Ok(op) = rx.try_recv() {
            if matches!(op, WriteOp::Record(_) | WriteOp::Change(_)) {
                discarded += 1;
            }
        }
        if discarded > 0 {
            tracing::warn!(path = %self.store.path.display(), discarded, "records queued after the writer shutdown were not stored");
        }
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop().await;
        }
        self.store.return_writer(self.conn).await;
        if let Some((reply, flushed)) = shutdown {
            let _ = reply.send(flushed);
        }
    }

    /// Commits `batch` (retrying a failed transaction a few times) and empties
    /// it. On final failure the records are dropped, logged by count only.
    async fn flush(
        &mut self,
        batch: &mut Vec<Record>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        let mut attempt = 0;
        let error = loop {
            let started = Instant::now();
            match self.write_batch(batch, changes).await {
                Ok(flushed) => {
                    tracing::debug!(rows = batch.len(), changes = changes.len(), took = ?started.elapsed(), "committed a batch");
                    let had_records = !batch.is_empty();
                    batch.clear();
                    changes.clear();
                    if !had_records {
                        return Ok(());
                    }
                    if let Some(checkpointer) = &self.checkpointer {
                        checkpointer.nudge();
                    }
                    // A panicking callback must not take the writer down.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| (self.on_flush)(flushed)))
                        .is_err()
                    {
                        tracing::error!("the on_flush callback panicked");
                    }
                    return Ok(());
                }
                Err(error) => {
                    tracing::error!(
                        path = %self.store.path.display(),
                        records = batch.len(),
                        attempt = attempt + 1,
                        %error,
                        "writing a batch failed; nothing of it was stored"
                    );
                    // The rolled-back transaction may have created topics,
                    // devices or series whose ids are now cached.
                    self.forget_ids();
                    self.recover_connection().await;
                    let Some(delay) = RETRY_DELAYS.get(attempt) else {
                        break error;
                    };
                    attempt += 1;
                    tokio::time::sleep(*delay).await;
                }
            }
        };
        tracing::error!(
            path = %self.store.path.display(),
            records = batch.len(),
            changes = changes.len(),
            "giving up on a batch after {} attempts; its records are lost",
            RETRY_DELAYS.len() + 1
        );
        batch.clear();
        changes.clear();
        Err(StoreError::Query {
            action: "writing a batch of records",
            path: self.store.path.clone(),
            source: error,
        })
    }

    fn forget_ids(&mut self) {
        self.topics.clear();
        self.devices.clear();
        self.series.clear();
    }

    /// Replaces the write connection if it no longer answers (its worker
    /// thread died, say); a new one is tried at every failure until one works.
    async fn recover_connection(&mut self) {
        if self.conn.ping().await.is_ok() {
            return;
        }
        match self.store.write_options.connect().await {
            Ok(conn) => {
                tracing::warn!(path = %self.store.path.display(), "reopened the write connection");
                drop(std::mem::replace(&mut self.conn, conn));
            }
            Err(error) => {
                tracing::error!(path = %self.store.path.display(), %error, "cannot reopen the write connection");
            }
        }
    }

    async fn retention(&mut self, retention: Retention) -> Result<RetentionReport, StoreError> {
        let result = retention::apply(&mut self.conn, retention).await;
        result.map_err(|source| StoreError::Query {
            action: "applying retention",
            path: self.store.path.clone(),
            source,
        })
    }

    /// One batch, one transaction: all of it is stored or none of it.
    async fn write_batch(
        &mut self,
        batch: &[Record],
        changes: &[Change],
    ) -> Result<Flushed, sqlx::Error> {
        if self.topics.len() > CACHE_LIMIT
            || self.devices.len() > CACHE_LIMIT
            || self.series.len() > CACHE_LIMIT
        {
            self.forget_ids();
        }
        // IMMEDIATE takes the write lock up front instead of upgrading a read
        // lock halfway, which could fail with SQLITE_BUSY mid-batch.
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;

        // Devices: one row per distinct device, not per record.
        let mut agg: HashMap<&str, DeviceAgg> = HashMap::new();
        for r in batch {
            if let Some(device) = r.device.as_deref() {
                agg.entry(device)
                    .and_modify(|a| {
                        a.first = a.first.min(r.at);
                        a.last = a.last.max(r.at);
                        a.count += 1;
                    })
                    .or_insert(DeviceAgg {
                        first: r.at,
                        last: r.at,
                        count: 1,
                    });
            }
        }
        let agg: Vec<(&str, DeviceAgg)> = agg.into_iter().collect();
        self.sql
            .devices
            .execute(&mut tx, &agg, |args, (key, a)| {
                args.add(*key)?;
                args.add(a.first)?;
                args.add(a.last)?;
                args.add(a.count)
            })
            .await?;
        for (key, _) in &agg {
            if !self.devices.contains_key(*key) {
                let id: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE key = ?")
                    .bind(*key)
                    .fetch_one(&mut *tx)
                    .await?;
                self.devices.insert((*key).to_owned(), id);
            }
        }

        // Messages, with interned topics.
        let mut rows = Vec::with_capacity(batch.len());
        for r in batch {
            let topic_id = match self.topics.get(r.topic.as_str()) {
                Some(id) => *id,
                None => {
                    sqlx::query("INSERT INTO topics (name) VALUES (?) ON CONFLICT DO NOTHING")
                        .bind(r.topic.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let id: i64 = sqlx::query_scalar("SELECT id FROM topics WHERE name = ?")
                        .bind(r.topic.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                    self.topics.insert(r.topic.clone(), id);
                    id
                }
            };
            let device_id = r
                .device
                .as_deref()
                .and_then(|d| self.devices.get(d).copied());
            rows.push((r, topic_id, device_id));
        }
        let inserted = self
            .sql
            .messages
            .execute(&mut tx, &rows, |args, (r, topic_id, device_id)| {
                args.add(r.at)?;
                args.add(*topic_id)?;
                args.add(*device_id)?;
                args.add(r.client_id.as_deref())?;
                args.add(i64::from(r.qos))?;
                args.add(r.retain)?;
                args.add(&r.payload[..])?;
                args.add(r.properties.as_deref())
            })
            .await?;

        // Samples, and the latest value of each series touched.
        let mut samples: Vec<(i64, Micros, f64)> = Vec::new();
        let mut latest: HashMap<i64, (Micros, f64)> = HashMap::new();
        for r in batch {
            let Some(&device_id) = r.device.as_deref().and_then(|d| self.devices.get(d)) else {
                continue;
            };
            for sample in &r.samples {
                let (metric, value, at) =
                    (&sample.metric, &sample.value, sample.at.unwrap_or(r.at));
                if value.is_nan() {
                    continue; // SQLite stores NaN as NULL, which `value NOT NULL` rejects
                }
                let cached = self
                    .series
                    .get(&device_id)
                    .and_then(|m| m.get(metric.as_str()));
                let series_id = match cached {
                    Some(id) => *id,
                    None => {
                        sqlx::query("INSERT INTO series (device_id, metric) VALUES (?, ?) ON CONFLICT DO NOTHING")
                            .bind(device_id)
                            .bind(metric.as_str())
                            .execute(&mut *tx)
                            .await?;
                        let id: i64 = sqlx::query_scalar(
                            "SELECT id FROM series WHERE device_id = ? AND metric = ?",
                        )
                        .bind(device_id)
                        .bind(metric.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                        self.series
                            .entry(device_id)
                            .or_default()
                            .insert(metric.clone(), id);
                        id
                    }
                };
                samples.push((series_id, at, *value));
                latest
                    .entry(series_id)
                    .and_modify(|l| {
                        if at >= l.0 {
                            *l = (at, *value);
                        }
                    })
                    .or_insert((at, *value));
            }
        }
        // In key order, consecutive rows land on the same leaf page of the
        // samples tree. A stable sort keeps batch order among equal keys, so
        // with OR REPLACE the last of two samples at the same µs wins.
        samples.sort_by_key(|(series_id, at, _)| (*series_id, *at));
        self.sql
            .samples
            .execute(&mut tx, &samples, |args, (series_id, at, value)| {
                args.add(*series_id)?;
                args.add(*at)?;
                args.add(*value)
            })
            .await?;
        let minutes = fold_minutes(&samples);
        self.sql
            .minutes
            .execute(&mut tx, &minutes, |args, m| {
                args.add(m.series_id)?;
                args.add(m.minute)?;
                args.add(m.min)?;
                args.add(m.max)?;
                args.add(m.sum)?;
                args.add(m.count)
            })
            .await?;
        let latest: Vec<(i64, (Micros, f64))> = latest.into_iter().collect();
        self.sql
            .series_last
            .execute(&mut tx, &latest, |args, (series_id, (at, value))| {
                args.add(*series_id)?;
                args.add(*value)?;
                args.add(*at)
            })
            .await?;

        // Retained messages: only the last retained record per topic counts.
        let mut retained: HashMap<&str, &Record> = HashMap::new();
        for r in batch.iter().filter(|r| r.retain) {
            retained.insert(r.topic.as_str(), r);
        }
        let (cleared, kept): (Vec<&Record>, Vec<&Record>) =
            retained.into_values().partition(|r| r.payload.is_empty());
        self.sql
            .retained_delete
            .execute(&mut tx, &cleared, |args, r| args.add(r.topic.as_str()))
            .await?;
        self.sql
            .retained_upsert
            .execute(&mut tx, &kept, |args, r| {
                args.add(r.topic.as_str())?;
                args.add(&r.payload[..])?;
                args.add(i64::from(r.qos))?;
                args.add(r.at)?;
                args.add(r.properties.as_deref())
            })
            .await?;

        // Changes after the records: a presence change or an alert may be
        // about a device that this very batch created.
        for change in changes {
            apply::change(&mut tx, &mut self.devices, change).await?;
        }

        tx.commit().await?;
        Ok(Flushed {
            rows: batch.len(),
            last_message_id: inserted.last_insert_rowid(),
            committed_at: now_micros(),
            oldest_received: batch.iter().map(|r| r.at).min().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{count, device_record, flush_log, record, temp_store, write_all};
    use crate::{MessageQuery, Store};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_commits_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vigil.db");
        let store = Store::open(&path).await.unwrap();
        let (log, on_flush) = flush_log();
        let writer = store
            .spawn_writer(WriterOptions::default(), on_flush)
            .unwrap();
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    for i in 0..12_500 {
                        let at = i * 4 + p;
                        let r = device_record(at, &format!("d{}", at % 100), &[("v", at as f64)]);
                        writer.write(r).await.unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        writer.shutdown().await.unwrap();

        let flushed = log.lock().unwrap().clone();
        assert_eq!(flushed.iter().map(|f| f.rows).sum::<usize>(), 50_000);
        assert!(flushed
            .windows(2)
            .all(|w| w[0].last_message_id < w[1].last_message_id));
        assert_eq!(flushed.last().unwrap().last_message_id, 50_000);
        assert!(flushed
            .iter()
            .all(|f| f.rows <= 16384 && f.committed_at >= f.oldest_received));
        store.close().await;
        drop(store);

        let store = Store::open(&path).await.unwrap();
        assert_eq!(count(&store, "messages").await, 50_000);
        assert_eq!(count(&store, "samples").await, 50_000);
        let devices = store.devices().await.unwrap();
        assert_eq!(devices.len(), 100);
        assert!(devices.iter().all(|d| d.message_count == 500));
        store.integrity_check().await.unwrap();
    }

    #[tokio::test]
    async fn flushed_reports_each_commit() {
        let (_dir, store) = temp_store().await;
        let (log, on_flush) = flush_log();
        let writer = store
            .spawn_writer(WriterOptions::default(), on_flush)
            .unwrap();
        writer.write(record(10, "a", b"1")).await.unwrap();
        // At low load a single record commits at once, without waiting for
        // company: poll until it is visible.
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "a lone record was not committed");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = log.lock().unwrap()[0];
        assert_eq!(
            (first.rows, first.last_message_id, first.oldest_received),
            (1, 1, 10)
        );
        let visible = store.messages(&MessageQuery::default()).await.unwrap();
        assert_eq!(visible.len(), 1, "committed before on_flush ran");
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn batches_respect_flush_rows() {
        let (_dir, store) = temp_store().await;
        let (log, on_flush) = flush_log();
        let options = WriterOptions {
            flush_rows: 10,
            ..WriterOptions::default()
        };
        let writer = store.spawn_writer(options, on_flush).unwrap();
        for i in 0..95 {
            writer.write(record(i, "a", b"x")).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        let log = log.lock().unwrap();
        assert!(log.iter().all(|f| f.rows <= 10), "{log:?}");
        assert_eq!(log.iter().map(|f| f.rows).sum::<usize>(), 95);
    }

    #[tokio::test]
    async fn one_writer_at_a_time_and_shutdown_stops_all_clones() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        let err = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::WriterRunning { .. }), "{err:?}");
        assert!(err.to_string().contains("already running"));

        let clone = writer.clone();
        clone.write(record(1, "a", b"before")).await.unwrap();
        writer.shutdown().await.unwrap();
        let err = clone.write(record(2, "a", b"after")).await.unwrap_err();
        assert!(matches!(err, StoreError::WriterStopped), "{err:?}");
        assert!(matches!(
            clone.apply_retention(Retention::default()).await,
            Err(StoreError::WriterStopped)
        ));
        assert!(matches!(
            clone.clone().shutdown().await,
            Err(StoreError::WriterStopped)
        ));
        assert_eq!(count(&store, "messages").await, 1);

        // The connection went back to the store: a new writer can start, and
        // continues where the old one stopped (ids and cached ids).
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        writer.write(record(3, "a", b"again")).await.unwrap();
        writer.shutdown().await.unwrap();
        let got = store.messages(&MessageQuery::default()).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(count(&store, "topics").await, 1);
    }

    #[tokio::test]
    async fn dropping_every_handle_commits_and_frees_the_writer() {
        let (_dir, store) = temp_store().await;
        let writer = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .unwrap();
        for i in 0..100 {
            writer.write(record(i, "a", b"x")).await.unwrap();
        }
        drop(writer);
        let deadline = Instant::now() + Duration::from_secs(5);
        let writer = loop {
            match store.spawn_writer(WriterOptions::default(), Box::new(|_| {})) {
                Ok(w) => break w,
                Err(StoreError::WriterRunning { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(count(&store, "messages").await, 100);
        writer.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn spawning_after_close_fails_and_outside_a_runtime_too() {
        let (_dir, store) = temp_store().await;
        store.close().await;
        let err = store
            .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Closed { .. }), "{err:?}");

        let (_dir, store) = temp_store().await;
        let err = std::thread::spawn(move || {
            store
                .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
                .err()
        })
        .join()
        .unwrap()
        .unwrap();
        assert!(matches!(err, StoreError::NoRuntime), "{err:?}");
    }

    #[tokio::test]
    async fn retained_messages_are_upserted_and_deleted() {
        let (_dir, store) = temp_store().await;
        let retained = |at, topic: &str, payload: &[u8]| Record {
            retain: true,
            qos: 1,
            ..record(at, topic, payload)
        };
        write_all(
            &store,
            [
                retained(1, "r/a", b"a1"),
                retained(2, "r/b", b"b1"),
                record(3, "r/a", b"not retained"),
                retained(4, "r/c", b"c1"),
            ],
        )
        .await;
        let got = store.retained().await.unwrap();
        assert_eq!(
            got.iter()
                .map(|r| (r.topic.as_str(), &r.payload[..]))
                .collect::<Vec<_>>(),
            [("r/a", &b"a1"[..]), ("r/b", b"b1"), ("r/c", b"c1")]
        );
        assert_eq!((got[0].qos, got[0].at), (1, 1));

        // In one batch: replace, replace twice (last wins), delete, delete-then-set.
        write_all(
            &store,
            [
                Record {
                    properties: Some("{}".into()),
                    ..retained(5, "r/a", b"a2")
                },
                retained(6, "r/b", b"b2"),
                retained(7, "r/b", b"b3"),
                retained(8, "r/c", b""),
                retained(9, "r/d", b""),
                retained(10, "r/d", b"d1"),
                retained(11, "r/e", b""),
            ],
        )
        .await;
        let got = store.retained().await.unwrap();
        assert_eq!(
            got.iter()
                .map(|r| (r.topic.as_str(), &r.payload[..]))
                .collect::<Vec<_>>(),
            [("r/a", &b"a2"[..]), ("r/b", b"b3"), ("r/d", b"d1")]
        );
        assert_eq!(got[0].properties.as_deref(), Some("{}"));
        assert_eq!(got[1].at, 7);
        // Every record is still a message, retained or not.
        assert_eq!(count(&store, "messages").await, 11);
    }

    #[tokio::test]
    async fn nan_samples_are_skipped_without_losing_the_batch() {
        let (_dir, store) = temp_store().await;
        let (log, on_flush) = flush_log();
        let writer = store
            .spawn_writer(WriterOptions::default(), on_flush)
            .unwrap();
        writer
            .write(device_record(1, "d", &[("x", f64::NAN), ("y", 2.0)]))
            .await
            .unwrap();
        writer
            .write(device_record(2, "d", &[("x", 3.0)]))
            .await
            .unwrap();
        writer
            .write(Record {
                samples: vec![crate::Sample::new("ignored", 1.0)],
                ..record(3, "no/device", b"")
            })
            .await
            .unwrap();
        writer.shutdown().await.unwrap();
        assert_eq!(log.lock().unwrap().iter().map(|f| f.rows).sum::<usize>(), 3);
        assert_eq!(count(&store, "messages").await, 3);
        assert_eq!(count(&store, "samples").await, 2);
        let d = store.device("d").await.unwrap().unwrap();
        assert_eq!(
            d.metrics
                .iter()
                .map(|m| (m.name.as_str(), m.value))
                .collect::<Vec<_>>(),
            [("x", 3.0), ("y", 2.0)]
        );
    }

    #[tokio::test]
    async fn a_failed_batch_is_rolled_back_and_the_writer_carries_on() {
        let (_dir, store) = temp_store().await;
        write_all(&store, [device_record(1, "d", &[("x", 1.0)])]).await;
        // Make every message insert fail, as a full disk would.
        let mut conn = store.inner_writer_conn_for_test();
        sqlx::raw_sql(
            "CREATE TRIGGER fail BEFORE INSERT ON messages WHEN NEW.topic_id > 0
             BEGIN SELECT RAISE(ABORT, 'simulated failure'); END",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        store.return_writer_for_test(conn).await;

        let (log, on_flush) = flush_log();
        let writer = store
            .spawn_writer(WriterOptions::default(), on_flush)
            .unwrap();
        // A new device, topic and series inside the failing batch: their ids
        // must not survive in the caches after the rollback.
        writer
            .write(device_record(2, "new", &[("y", 2.0)]))
            .await
            .unwrap();
        let err = writer.shutdown().await.unwrap_err();
        assert!(err.to_string().contains("simulated failure"), "{err}");
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(count(&store, "messages").await, 1);
        assert_eq!(
            count(&store, "devices").await,
            1,
            "the half batch was rolled back"
        );

        let mut conn = store.inner_writer_conn_for_test();
        sqlx::raw_sql("DROP TRIGGER fail")
            .execute(&mut conn)
            .await
            .unwrap();
        store.return_writer_for_test(conn).await;
        write_all(&store, [device_record(3, "new", &[("y", 3.0)])]).await;
        assert_eq!(count(&store, "messages").await, 2);
        assert_eq!(
            store.device("new").await.unwrap().unwrap().metrics[0].value,
            3.0
        );
        store.integrity_check().await.unwrap();
    }

    /// Rough sustained throughput of the writer. Run with
    /// `cargo test -p vigil-store --release -- --ignored --nocapture writer_throughput`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "benchmark; run in release with --nocapture"]
    async fn writer_throughput() {
        // VIGIL_BENCH_RECORDS overrides the count, e.g. for profiling.
        let records: usize = std::env::var("VIGIL_BENCH_RECORDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_500_000);
        let devices: usize = std::env::var("VIGIL_BENCH_DEVICES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(200);
        let flush_rows: usize = std::env::var("VIGIL_BENCH_FLUSH_ROWS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(WriterOptions::default().flush_rows);
        let (_dir, store) = temp_store().await;
        let (log, on_flush) = flush_log();
        let options = WriterOptions {
            flush_rows,
            ..WriterOptions::default()
        };
        let writer = store.spawn_writer(options, on_flush).unwrap();
        let payload = bytes::Bytes::from(vec![b'x'; 100]);
        let device_count = devices;
        let devices: Vec<String> = (0..device_count)
            .map(|d| format!("sensor-{d:04}"))
            .collect();
        let topics: Vec<String> = devices
            .iter()
            .map(|d| format!("site/floor/{d}/telemetry"))
            .collect();
        let start = Instant::now();
        let t0 = now_micros();
        for i in 0..records {
            let d = i % device_count;
            let record = Record {
                at: t0 + i as Micros,
                topic: topics[d].clone(),
                payload: payload.clone(),
                qos: 1,
                retain: false,
                client_id: Some(devices[d].clone()),
                properties: None,
                device: Some(devices[d].clone()),
                samples: vec![
                    crate::Sample::new("temperature", i as f64),
                    crate::Sample::new("humidity", 50.0),
                ],
            };
            writer.write(record).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        let elapsed = start.elapsed();
        let batches = log.lock().unwrap().len();
        println!(
            "writer_throughput: {records} records (100-byte payload, 2 samples, {device_count} devices, flush_rows {flush_rows}) in {:.2} s = {:.0} records/s; {batches} batches, mean {:.0} rows",
            elapsed.as_secs_f64(),
            records as f64 / elapsed.as_secs_f64(),
            records as f64 / batches as f64,
        );
        if let Some((name, cpu)) = busiest_thread() {
            println!(
                "writer_throughput: busiest thread {name:?} used {cpu:.2} CPU s = {:.0} records per CPU second",
                records as f64 / cpu
            );
        }
        let stats = store.stats().await.unwrap();
        println!(
            "writer_throughput: database {:.1} MiB",
            stats.db_bytes as f64 / (1 << 20) as f64
        );
        assert_eq!(stats.messages, records as i64);
    }

    /// The thread of this process that used the most CPU (the SQLite writer
    /// thread in the benchmark), with its CPU seconds: a figure that other
    /// processes competing for the cores do not distort as much as wall time.
    fn busiest_thread() -> Option<(String, f64)> {
        let ticks_per_second = 100.0; // USER_HZ on Linux
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .filter_map(|task| {
                let dir = task.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm"))
                    .ok()?
                    .trim()
                    .to_owned();
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let ticks: f64 =
                    fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
                Some((name, ticks / ticks_per_second))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}
