//! The local CA of a Vigil installation (`vigil-pki`), where the shells find
//! it: `<data_dir>/pki`, named after this machine.

use std::path::PathBuf;

pub use vigil_pki::{CertInfo, Issued, Kind, Pki, PkiError};

use crate::Config;

/// Where the CA and the certificates it issued live.
pub fn pki_dir(config: &Config) -> PathBuf {
    config.data_dir.join("pki")
}

/// This machine's host name (for the CA's name and the server certificate).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Opens the installation's CA, making it on first use.
pub fn open(config: &Config) -> Result<Pki, PkiError> {
    Pki::open_or_init(&pki_dir(config), &host_name())
}
