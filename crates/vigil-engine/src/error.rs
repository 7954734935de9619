//! Errors of the engine, each a sentence a person can act on.

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration could not be read or makes no sense.
    #[error("{0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] vigil_store::StoreError),
    /// The broker failed to start.
    #[error(transparent)]
    Broker(#[from] vigil_broker::BrokerError),
    /// What was asked for does not exist; the text says what.
    #[error("{0}")]
    NotFound(String),
    /// A device did not answer (or refused); the text says which and how.
    #[error("{0}")]
    Unreachable(String),
    /// A request was not valid; the text says why.
    #[error("{0}")]
    BadRequest(String),
    /// The engine is stopping and takes no more work.
    #[error("Vigil is shutting down")]
    Stopping,
}
