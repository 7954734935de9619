//! The local CA of a Vigil installation (`vigil-pki`), where the shells find
//! it: `<data_dir>/pki`, named after this machine.

use std::path::PathBuf;

pub use vigil_pki::{CertInfo, Issued, Kind, Pki, PkiError};

use crate::{Config, Engine, EngineError};

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

/// A device certificate just issued, as the API returns it (the key only
/// this once: Vigil keeps its copy in the CA folder for `export`).
#[derive(Debug, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct IssuedView {
    /// The certificate.
    pub certificate: CertInfo,
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM of its private key.
    pub key_pem: String,
    /// PEM of the CA that devices must trust.
    pub ca_pem: String,
}

/// The local CA and what it issued, as the API returns it.
#[derive(Debug, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CertificatesView {
    /// The CA, the server certificate, then every device certificate.
    pub certificates: Vec<CertInfo>,
    /// PEM of the CA, for devices to trust.
    pub ca_pem: String,
}

fn pki_error(e: PkiError) -> EngineError {
    match e {
        PkiError::NoSuchDevice(_) => EngineError::NotFound(e.to_string()),
        PkiError::Invalid(_) => EngineError::BadRequest(e.to_string()),
        PkiError::Io { .. } => EngineError::Config(e.to_string()),
    }
}

/// The local CA through the engine, for the shells (the CLI's `vigil certs`
/// does the same on the folder directly).
impl Engine {
    /// The CA, the server certificate and every device certificate.
    pub fn certificates(&self) -> Result<CertificatesView, EngineError> {
        let pki = open(self.config()).map_err(pki_error)?;
        Ok(CertificatesView {
            certificates: pki.list().map_err(pki_error)?,
            ca_pem: pki.ca_pem().to_owned(),
        })
    }

    /// Issues (or re-issues) a client certificate for `device`.
    pub fn issue_certificate(&self, device: &str) -> Result<IssuedView, EngineError> {
        let pki = open(self.config()).map_err(pki_error)?;
        let issued = pki.issue_device(device).map_err(pki_error)?;
        tracing::info!(device, serial = %issued.info.serial, "issued a device certificate");
        Ok(IssuedView {
            certificate: issued.info,
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            ca_pem: pki.ca_pem().to_owned(),
        })
    }

    /// Revokes `device`'s certificate: it is refused at its next connection.
    pub fn revoke_certificate(&self, device: &str) -> Result<CertInfo, EngineError> {
        let pki = open(self.config()).map_err(pki_error)?;
        let info = pki.revoke(device).map_err(pki_error)?;
        tracing::info!(device, serial = %info.serial, "revoked a device certificate");
        Ok(info)
    }
}

/// The names the server certificate must hold: localhost, this machine's
/// host name, the loopback addresses and every address of this machine's
/// network interfaces (IPv6 link-local ones left out: a certificate cannot
/// name their scope).
pub fn server_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        host_name(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(lan_addresses().into_iter().map(|ip| ip.to_string()));
    names.sort();
    names.dedup();
    names
}

/// The server certificate for `names` (issued anew if they changed) with
/// the CA that client certificates must come from.
pub fn tls_material(pki: &Pki, names: &[String]) -> Result<vigil_broker::TlsMaterial, PkiError> {
    let (chain_pem, key_pem) = pki.server_cert(names)?;
    Ok(vigil_broker::TlsMaterial {
        chain_pem,
        key_pem,
        client_ca_pem: pki.ca_pem().to_owned(),
    })
}

/// The addresses of this machine's interfaces, loopback and IPv6
/// link-local ones left out.
pub fn lan_addresses() -> Vec<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that stays valid
    // until freeifaddrs; each entry's address is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut at = list;
        while !at.is_null() {
            let addr = (*at).ifa_addr;
            if !addr.is_null() {
                match (*addr).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.retain(|ip| {
        !ip.is_loopback()
            && !ip.is_unspecified()
            && !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
    });
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_names_hold_loopback_and_this_machines_addresses() {
        let names = server_names();
        for must in ["localhost", "127.0.0.1", "::1"] {
            assert!(names.contains(&must.to_owned()), "{names:?}");
        }
        assert!(names.contains(&host_name()));
        for ip in lan_addresses() {
            assert!(!ip.is_loopback());
            assert!(names.contains(&ip.to_string()));
        }
    }
}
