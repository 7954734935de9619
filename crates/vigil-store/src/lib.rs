//! Vigil's persistence: the only crate that speaks SQL.
//!
//! Everything Vigil keeps across restarts lives in one SQLite file: the
//! messages it heard, the devices they came from, numeric samples decoded from
//! payloads, and the broker's retained messages. Other crates see plain Rust
//! types ([`Record`], [`StoredMessage`], [`DeviceRow`], [`Series`], ...) and never
//! a SQL string.
//!
//! The crate has two halves with different jobs:
//!
//! - [`Store`] opens the file (creating it and migrating the schema) and answers
//!   read queries from a small pool of read-only connections. It is cheap to
//!   clone and safe to share.
//! - [`WriterHandle`] feeds the single writer task started by
//!   [`Store::spawn_writer`]. SQLite allows one writer at a time, so instead of
//!   letting many tasks fight over the write lock, every write goes through one
//!   bounded queue to one task that owns one connection and commits records in
//!   batches ("group commit"). A full queue makes [`WriterHandle::write`] wait,
//!   which is the backpressure that keeps memory bounded when the disk is
//!   slower than the network. Retention ([`WriterHandle::apply_retention`]) runs
//!   on the same task, between batches, so it never contends with inserts. A
//!   companion task copies committed pages from the WAL into the database file
//!   on its own connection, so that work runs on another core.
//!
//! The database runs in WAL mode (readers never block the writer), with
//! `synchronous=NORMAL` (a power cut can lose the last few batches but never
//! corrupts the file) and `auto_vacuum=INCREMENTAL` (retention can give disk
//! space back without a full `VACUUM`).
#![deny(missing_docs)]

mod accounts;
mod apply;
mod changes;
mod devices;
mod error;
mod retention;
mod sessions;
mod sql;
mod store;
#[cfg(test)]
mod testutil;
mod types;
mod writer;

pub use accounts::{Account, AccountKind};
pub use changes::{Change, DeviceDescription, DeviceSettings, WebhookDelivery};
pub use devices::{DeviceRow, MetricRow, PresenceChange};
pub use error::StoreError;
pub use store::Store;
pub use types::{
    Bucket, CoapDeviceRow, Flushed, MessageQuery, Record, RetainedMessage, Retention,
    RetentionReport, Sample, Series, StoreStats, StoredMessage, WriterOptions,
};
pub use vigil_core::Micros;

/// One minute in µs: the granularity of the per-minute rollup (`samples_1m`).
pub(crate) const MINUTE: Micros = 60_000_000;
pub use writer::WriterHandle;
