//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong in the store, worded so that the person
/// reading the log knows which file is involved and what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory that should hold the database could not be created.
    #[error("cannot create directory {path} for the database: {source} (check permissions and free space)")]
    CreateDir {
        /// The directory Vigil tried to create.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// SQLite could not open or create the database file.
    #[error("cannot open database at {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: sqlx::Error,
    },

    /// The schema could not be brought up to date.
    #[error("cannot update the database schema at {path}: {source} (was the file written by a newer Vigil, or is it not a Vigil database?)")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },

    /// A query or a batch of writes failed.
    #[error("{action} failed on database {path}: {source}")]
    Query {
        /// What the store was doing, e.g. "reading devices".
        action: &'static str,
        /// The database file.
        path: PathBuf,
        /// What SQLite said (e.g. "database or disk is full").
        #[source]
        source: sqlx::Error,
    },

    /// `PRAGMA integrity_check` found problems.
    #[error("database {path} is damaged: {details} (restore a backup, or move the file away to start afresh)")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The first lines SQLite reported.
        details: String,
    },

    /// The writer task is gone, so the record was not stored.
    #[error(
        "the database writer has stopped; nothing more can be stored until a new writer is spawned"
    )]
    WriterStopped,

    /// [`crate::Store::spawn_writer`] was called while a writer was running.
    #[error(
        "a writer is already running for database {path}; shut it down before spawning another"
    )]
    WriterRunning {
        /// The database file.
        path: PathBuf,
    },

    /// The store was closed with [`crate::Store::close`].
    #[error("database {path} has been closed")]
    Closed {
        /// The database file.
        path: PathBuf,
    },

    /// [`crate::Store::spawn_writer`] was called outside a Tokio runtime.
    #[error("the database writer needs a Tokio runtime; call spawn_writer from async code")]
    NoRuntime,
}
