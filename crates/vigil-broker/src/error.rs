//! What can go wrong starting the broker, said so a person can act on it.

use std::net::SocketAddr;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A listener's address is taken (or not ours to bind).
    #[error("cannot listen on {addr}: {source}; another program may be using it — set `{setting}` to another address")]
    Bind {
        /// The address that failed.
        addr: SocketAddr,
        /// The configuration setting that moves it.
        setting: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The embedded router did not come up.
    #[error("the embedded MQTT router did not start: {0}")]
    Router(String),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration makes no sense.
    #[error("invalid broker configuration: {0}")]
    Config(String),
}
