//! The plain data types that cross the crate boundary.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use vigil_core::Micros;

/// One message to store, with what the engine already derived from it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// When Vigil received the message.
    pub at: Micros,
    /// The exact topic it was published on.
    pub topic: String,
    /// The payload, byte for byte (need not be UTF-8).
    pub payload: Bytes,
    /// MQTT QoS (0, 1 or 2).
    pub qos: u8,
    /// The MQTT retain flag. With `retain` set the record also replaces the
    /// topic's retained message; an empty payload deletes it, as MQTT says.
    pub retain: bool,
    /// The publishing client, when known.
    pub client_id: Option<String>,
    /// MQTT 5 properties as JSON text, when any.
    pub properties: Option<String>,
    /// The device the message belongs to, when a device rule matched.
    pub device: Option<String>,
    /// Numeric metrics decoded from the payload, stored under `device`.
    /// Ignored when `device` is `None`; NaN values are skipped because SQLite
    /// cannot store them.
    pub samples: Vec<Sample>,
}

/// One numeric value of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// When it was measured, if the payload said; otherwise the record's time.
    pub at: Option<Micros>,
}

impl Sample {
    /// A value measured when its message arrived.
    pub fn new(metric: impl Into<String>, value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            value,
            at: None,
        }
    }
}

/// How the writer batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// The most records committed in one transaction (default 16384).
    ///
    /// The writer never waits to fill a batch: it takes what is already
    /// queued, so this cap only matters when the writer is behind. Then it is
    /// the main throughput lever: each commit rewrites one page per device,
    /// topic and series it touched, so bigger batches write fewer pages per
    /// record. With 200 devices, 4096 gave about 95k records per second of
    /// writer CPU, 16384 about 130k and 65536 about 150k; 16384 keeps a
    /// commit near the 100 ms of `flush_interval` at full speed.
    pub flush_rows: usize,
    /// The longest the writer keeps collecting a batch after its first record,
    /// which bounds how late a record can become visible under load.
    pub flush_interval: Duration,
    /// Capacity of the queue in front of the writer. When it is full,
    /// [`crate::WriterHandle::write`] waits (backpressure).
    pub queue: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            flush_rows: 16384,
            flush_interval: Duration::from_millis(100),
            queue: 65536,
        }
    }
}

/// What one committed batch contained; passed to the writer's `on_flush`
/// callback so that live views can tell subscribers what is now queryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flushed {
    /// Messages committed in this batch.
    pub rows: usize,
    /// Id of the last message committed (the highest id in the database).
    pub last_message_id: i64,
    /// When the commit finished.
    pub committed_at: Micros,
    /// The earliest `Record::at` in the batch; `committed_at - oldest_received`
    /// is the worst end-to-end storage latency of the batch.
    pub oldest_received: Micros,
}

/// A downsampled time range of one metric, ready to chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct Series {
    /// Start of the range (inclusive).
    pub from: Micros,
    /// End of the range (exclusive).
    pub to: Micros,
    /// Width of each bucket in µs.
    pub bucket: Micros,
    /// Non-empty buckets, oldest first.
    pub points: Vec<Bucket>,
}

/// Aggregate of the samples that fell into one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct Bucket {
    /// Bucket start.
    pub at: Micros,
    /// Smallest value in the bucket.
    pub min: f64,
    /// Largest value in the bucket.
    pub max: f64,
    /// Mean value in the bucket.
    pub avg: f64,
    /// Number of samples in the bucket.
    pub count: i64,
}

/// Which messages [`crate::Store::messages`] returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageQuery {
    /// Only this exact topic.
    pub topic: Option<String>,
    /// Only this device.
    pub device: Option<String>,
    /// Only messages with an id below this one: pass the last id of the
    /// previous page to get the next (older) page.
    pub before: Option<i64>,
    /// Only messages with an id above this one: pass the newest id already
    /// shown to get what arrived since (still newest first).
    pub after: Option<i64>,
    /// At most this many messages. The store does not clamp it; callers
    /// facing users should.
    pub limit: u32,
}

impl Default for MessageQuery {
    /// No filter, first page of 100: a derived default would have `limit: 0`
    /// and silently return nothing.
    fn default() -> Self {
        MessageQuery {
            topic: None,
            device: None,
            before: None,
            after: None,
            limit: 100,
        }
    }
}

/// A stored message as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Database id; increases with every message and is never reused.
    pub id: i64,
    /// When Vigil received it.
    pub at: Micros,
    /// Its topic.
    pub topic: String,
    /// Its device, when a device rule matched.
    pub device: Option<String>,
    /// The publishing client, when known.
    pub client_id: Option<String>,
    /// MQTT QoS.
    pub qos: u8,
    /// MQTT retain flag.
    pub retain: bool,
    /// Payload, byte for byte.
    pub payload: Bytes,
    /// MQTT 5 properties as JSON text.
    pub properties: Option<String>,
}

/// The current retained message of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedMessage {
    /// The topic.
    pub topic: String,
    /// Payload, byte for byte (never empty: empty deletes).
    pub payload: Bytes,
    /// MQTT QoS it was published with.
    pub qos: u8,
    /// When it was received.
    pub at: Micros,
    /// MQTT 5 properties as JSON text.
    pub properties: Option<String>,
}

/// A CoAP device as last found.
#[derive(Debug, Clone, PartialEq)]
pub struct CoapDeviceRow {
    /// The device's key.
    pub device: String,
    /// Where it answers.
    pub address: String,
    /// How it was found.
    pub found_by: String,
    /// Its resources as JSON (an array of `CoapResource`).
    pub resources_json: String,
    /// Why its last answer could not be read.
    pub error: Option<String>,
    /// When it last answered `/.well-known/core`.
    pub answered_at: Micros,
}

/// How much history to keep. Devices and retained messages are never deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Delete messages and samples older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest messages (and samples older than the oldest message
    /// kept) until the database's used pages take at most this many bytes.
    pub max_bytes: Option<u64>,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Messages deleted.
    pub deleted_messages: u64,
    /// Samples deleted.
    pub deleted_samples: u64,
}

/// Sizes, for a status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct StoreStats {
    /// Messages stored.
    pub messages: i64,
    /// Samples stored.
    pub samples: i64,
    /// Devices known.
    pub devices: i64,
    /// Size of the main database file in bytes (page_count × page_size); the
    /// WAL file comes on top until the next checkpoint.
    pub db_bytes: u64,
}
