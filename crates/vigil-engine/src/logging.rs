//! How both shells log: to stderr, filtered by `VIGIL_LOG` (or `RUST_LOG`),
//! colours only on a terminal. rumqttd's own log is off by default: the front
//! door reports connections with their reasons.

/// Starts logging (once; later calls do nothing).
pub fn init() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("VIGIL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,rumqttd=off".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
