//! Helpers shared by the tests: real database files in temporary directories.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tempfile::TempDir;
use vigil_core::Micros;

use crate::{Flushed, Record, Sample, Store, WriterOptions};

/// A fresh store in its own temporary directory (deleted on drop).
pub(crate) async fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("vigil.db"))
        .await
        .expect("open store");
    (dir, store)
}

/// A record without device or samples.
pub(crate) fn record(at: Micros, topic: &str, payload: &[u8]) -> Record {
    Record {
        at,
        topic: topic.to_owned(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        ..Record::default()
    }
}

/// A record from `device` with samples.
pub(crate) fn device_record(at: Micros, device: &str, samples: &[(&str, f64)]) -> Record {
    Record {
        device: Some(device.to_owned()),
        samples: samples.iter().map(|(m, v)| Sample::new(*m, *v)).collect(),
        ..record(at, &format!("devices/{device}/state"), b"{}")
    }
}

/// Every `Flushed` a writer reported, in order.
pub(crate) type FlushLog = Arc<Mutex<Vec<Flushed>>>;
/// The callback type of [`Store::spawn_writer`].
pub(crate) type OnFlush = Box<dyn Fn(Flushed) + Send + Sync>;

/// Collects every `Flushed` the writer reports.
pub(crate) fn flush_log() -> (FlushLog, OnFlush) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    (log, Box::new(move |f| sink.lock().unwrap().push(f)))
}

/// Writes `records` through a writer and shuts it down, so they are committed.
pub(crate) async fn write_all(store: &Store, records: impl IntoIterator<Item = Record>) {
    let writer = store
        .spawn_writer(WriterOptions::default(), Box::new(|_| {}))
        .expect("spawn writer");
    for r in records {
        writer.write(r).await.expect("write");
    }
    writer.shutdown().await.expect("shutdown");
}

/// `SELECT count(*)` of a table through the read pool.
pub(crate) async fn count(store: &Store, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(store.read_pool())
        .await
        .expect("count")
}
