//! Vigil's local certificate authority (rcgen): a CA made on first use (or
//! imported), a server certificate for this machine's names and addresses,
//! device certificates on demand, revocation, and bundles a person can paste
//! into a device's settings.
//!
//! Everything lives in one folder (mode 0700), keys in files of mode 0600:
//!
//! ```text
//! pki/ca.pem  ca.key                 the CA (ECDSA P-256, 10 years)
//! pki/server.pem  server.key  server.names
//! pki/devices/<id>.pem  <id>.key     device certificates (CN = device id, 2 years)
//! pki/revoked.json                   serials refused at the next connection
//! ```
//!
//! Synchronous file I/O on purpose: it runs at start-up and on a person's
//! request, never on the message path.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a device certificate is valid.
const DEVICE_DAYS: i64 = 730;
/// How long the server certificate is valid (re-issued whenever the
/// machine's names change, and before it runs out).
const SERVER_DAYS: i64 = 397;

/// What went wrong, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What Vigil was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key could not be read or made.
    #[error("{0}")]
    Invalid(String),
    /// No certificate for that device.
    #[error("no certificate for device '{0}'")]
    NoSuchDevice(String),
}

type Result<T> = std::result::Result<T, PkiError>;

fn invalid(what: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid(what.to_string())
}

/// What kind of certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The local CA.
    Ca,
    /// Vigil's own server certificate.
    Server,
    /// A device's client certificate.
    Device,
}

/// A certificate as people see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(export))]
pub struct CertInfo {
    /// CA, server or device.
    pub kind: Kind,
    /// Its subject's common name (the device id for a device).
    pub name: String,
    /// Its serial number, hex.
    pub serial: String,
    /// SHA-256 of the DER, as `AB:CD:...`.
    pub sha256: String,
    /// Valid from, seconds since 1970.
    pub not_before: i64,
    /// Valid until, seconds since 1970.
    pub not_after: i64,
    /// DNS names and IP addresses it is for.
    pub names: Vec<String>,
    /// Revoked (devices only).
    pub revoked: bool,
}

/// A device certificate just issued, with its key.
pub struct Issued {
    /// The certificate.
    pub info: CertInfo,
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM of the private key (PKCS#8). Never logged.
    pub key_pem: String,
}

/// The local CA and what it issued, in one folder.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// Opens the CA in `dir`, making one first if there is none (named
    /// "Vigil local CA (<host>)").
    pub fn open_or_init(dir: &Path, host: &str) -> Result<Pki> {
        private_dir(dir)?;
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !cert.exists() {
            let key_pair = KeyPair::generate().map_err(invalid)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = name(&format!("Vigil local CA ({host})"));
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, CA_DAYS);
            params.serial_number = Some(serial(&format!("ca {host}")));
            let ca = params.self_signed(&key_pair).map_err(invalid)?;
            write_private(&key, key_pair.serialize_pem().as_bytes())?;
            write_public(&cert, ca.pem().as_bytes())?;
        }
        Pki::open(dir)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path) -> Result<Pki> {
        let ca_pem = read(&dir.join("ca.pem"), "reading the CA certificate")?;
        let key_pem = read(&dir.join("ca.key"), "reading the CA key")?;
        let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| {
            invalid(format!(
                "the CA key in {} is not usable: {e}",
                dir.display()
            ))
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| {
            invalid(format!(
                "the CA certificate in {} is not usable: {e}",
                dir.display()
            ))
        })?;
        Ok(Pki {
            dir: dir.to_owned(),
            ca_pem,
            issuer,
        })
    }

    /// Replaces the CA with an existing one: a PEM certificate that is a CA,
    /// and its key (PKCS#8, plain or encrypted with `passphrase`, or SEC1 EC).
    /// Certificates issued by the old CA are kept on disk but no longer trusted.
    pub fn import_ca(
        dir: &Path,
        cert_pem: &str,
        key_pem: &str,
        passphrase: Option<&str>,
    ) -> Result<Pki> {
        let key = decrypt_key(key_pem, passphrase)?;
        let (_, der) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| invalid(format!("the CA certificate is not PEM: {e}")))?;
        let cert = der
            .parse_x509()
            .map_err(|e| invalid(format!("the CA certificate cannot be read: {e}")))?;
        if !cert.is_ca() {
            return Err(invalid(
                "that certificate is not a CA (its basic constraints say so)",
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid("the key does not belong to that certificate"));
        }
        private_dir(dir)?;
        write_private(&dir.join("ca.key"), key.serialize_pem().as_bytes())?;
        write_public(&dir.join("ca.pem"), cert_pem.as_bytes())?;
        let _ = fs::remove_file(dir.join("server.names")); // re-issue under the new CA
        Pki::open(dir)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA as people see it.
    pub fn ca_info(&self) -> Result<CertInfo> {
        info(Kind::Ca, &self.ca_pem)
    }

    /// The server certificate (PEM chain: server then CA) and key for these
    /// names (host names and IP addresses), issued anew when the names
    /// differ from last time or it runs out within 30 days; the CA stays.
    pub fn server_cert(&self, names: &[String]) -> Result<(String, String)> {
        let mut wanted: Vec<String> = names.to_vec();
        wanted.sort();
        wanted.dedup();
        let (cert, key, list) = (
            self.dir.join("server.pem"),
            self.dir.join("server.key"),
            self.dir.join("server.names"),
        );
        let current = fs::read_to_string(&list).ok();
        let fresh = current.as_deref() == Some(wanted.join("\n").as_str())
            && fs::read_to_string(&cert)
                .ok()
                .and_then(|pem| info(Kind::Server, &pem).ok())
                .is_some_and(|i| {
                    i.not_after > OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400
                });
        if !fresh {
            let key_pair = KeyPair::generate().map_err(invalid)?;
            let mut params = CertificateParams::new(wanted.clone()).map_err(invalid)?;
            params.distinguished_name = name("Vigil");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            validity(&mut params, SERVER_DAYS);
            params.serial_number = Some(serial(&format!("server {}", wanted.join(","))));
            let issued = params.signed_by(&key_pair, &self.issuer).map_err(invalid)?;
            write_private(&key, key_pair.serialize_pem().as_bytes())?;
            write_public(&cert, issued.pem().as_bytes())?;
            write_public(&list, wanted.join("\n").as_bytes())?;
        }
        let chain = format!(
            "{}{}",
            read(&cert, "reading the server certificate")?,
            self.ca_pem
        );
        Ok((chain, read(&key, "reading the server key")?))
    }

    /// Issues a certificate for `device` (CN = the device id, client
    /// authentication, 2 years), replacing any earlier one.
    pub fn issue_device(&self, device: &str) -> Result<Issued> {
        if device.is_empty() || device.len() > 256 || device.chars().any(char::is_control) {
            return Err(invalid(format!(
                "'{device}' is not a device id a certificate can name"
            )));
        }
        let key_pair = KeyPair::generate().map_err(invalid)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(device);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, DEVICE_DAYS);
        params.serial_number = Some(serial(&format!("device {device}")));
        let cert = params.signed_by(&key_pair, &self.issuer).map_err(invalid)?;
        let devices = self.dir.join("devices");
        private_dir(&devices)?;
        let file = file_name(device);
        let key_pem = key_pair.serialize_pem();
        write_private(&devices.join(format!("{file}.key")), key_pem.as_bytes())?;
        write_public(&devices.join(format!("{file}.pem")), cert.pem().as_bytes())?;
        Ok(Issued {
            info: info(Kind::Device, &cert.pem())?,
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// Every certificate: the CA, the server's, then the devices' by name.
    pub fn list(&self) -> Result<Vec<CertInfo>> {
        let revoked = self.revoked()?;
        let mut out = vec![self.ca_info()?];
        if let Ok(pem) = fs::read_to_string(self.dir.join("server.pem")) {
            out.push(info(Kind::Server, &pem)?);
        }
        let mut devices = Vec::new();
        if let Ok(entries) = fs::read_dir(self.dir.join("devices")) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pem") {
                    let pem = read(&path, "reading a device certificate")?;
                    let mut i = info(Kind::Device, &pem)?;
                    i.revoked = revoked.contains_key(&i.serial);
                    devices.push(i);
                }
            }
        }
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(devices);
        Ok(out)
    }

    /// The device's current certificate.
    pub fn device(&self, device: &str) -> Result<CertInfo> {
        let path = self
            .dir
            .join("devices")
            .join(format!("{}.pem", file_name(device)));
        let pem =
            fs::read_to_string(&path).map_err(|_| PkiError::NoSuchDevice(device.to_owned()))?;
        let mut i = info(Kind::Device, &pem)?;
        i.revoked = self.revoked()?.contains_key(&i.serial);
        Ok(i)
    }

    /// Revokes the device's current certificate: its serial is refused from
    /// now on (the front door checks [`Pki::is_revoked`] at each connection).
    pub fn revoke(&self, device: &str) -> Result<CertInfo> {
        let mut i = self.device(device)?;
        let mut revoked = self.revoked()?;
        revoked.insert(
            i.serial.clone(),
            Revoked {
                device: device.to_owned(),
                at: OffsetDateTime::now_utc().unix_timestamp(),
            },
        );
        let json = serde_json::to_vec_pretty(&revoked).map_err(invalid)?;
        write_public(&self.dir.join("revoked.json"), &json)?;
        i.revoked = true;
        Ok(i)
    }

    /// Whether a certificate serial (hex, as in [`CertInfo::serial`]) is revoked.
    pub fn is_revoked(&self, serial: &str) -> Result<bool> {
        Ok(self.revoked()?.contains_key(serial))
    }

    fn revoked(&self) -> Result<BTreeMap<String, Revoked>> {
        revocations(&self.dir)
    }

    /// Writes the device's bundle into `out`: `ca.pem`, `<device>.pem`,
    /// `<device>.key` (0600) and `README.txt` with settings to paste for
    /// `host`:`port` (MQTT over TLS).
    pub fn export(&self, device: &str, out: &Path, host: &str, port: u16) -> Result<Vec<PathBuf>> {
        let file = file_name(device);
        let src = self.dir.join("devices");
        let cert = fs::read_to_string(src.join(format!("{file}.pem")))
            .map_err(|_| PkiError::NoSuchDevice(device.to_owned()))?;
        let key = read(&src.join(format!("{file}.key")), "reading the device key")?;
        let i = info(Kind::Device, &cert)?;
        private_dir(out)?;
        let paths = [
            out.join("ca.pem"),
            out.join(format!("{file}.pem")),
            out.join(format!("{file}.key")),
            out.join("README.txt"),
        ];
        write_public(&paths[0], self.ca_pem.as_bytes())?;
        write_public(&paths[1], cert.as_bytes())?;
        write_private(&paths[2], key.as_bytes())?;
        write_public(
            &paths[3],
            readme(device, &file, &i, &self.ca_info()?, host, port).as_bytes(),
        )?;
        Ok(paths.to_vec())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Revoked {
    device: String,
    at: i64,
}

fn readme(
    device: &str,
    file: &str,
    cert: &CertInfo,
    ca: &CertInfo,
    host: &str,
    port: u16,
) -> String {
    format!(
        "Certificate bundle for device '{device}', from {ca_name}
=====================================================================

  ca.pem        the CA that signed Vigil's server certificate: trust only this
  {file}.pem    this device's certificate (CN = {device}), valid until {until}
  {file}.key    its private key: keep it on the device, nowhere else

SHA-256 fingerprints
  CA      {ca_fp}
  device  {dev_fp}

Vigil listens for MQTT over TLS on {host}:{port}.

mosquitto_pub / mosquitto_sub
  mosquitto_pub -h {host} -p {port} --cafile ca.pem --cert {file}.pem --key {file}.key \\
      -i '{device}' -t '{device}/status' -m online

paho-mqtt (Python)
  client.tls_set(ca_certs=\"ca.pem\", certfile=\"{file}.pem\", keyfile=\"{file}.key\")
  client.connect(\"{host}\", {port})

Tasmota (built with USE_MQTT_TLS; Console)
  MqttHost {host}
  MqttPort {port}
  then load ca.pem and the device certificate and key with the TLS upload
  of your Tasmota build (SetOption132 1 uses the certificate, not a password)

ESPHome (YAML)
  mqtt:
    broker: {host}
    port: {port}
    certificate_authority: !secret vigil_ca      # contents of ca.pem
    client_certificate: !secret vigil_cert       # contents of {file}.pem
    client_certificate_key: !secret vigil_key    # contents of {file}.key
",
        ca_name = ca.name,
        until = OffsetDateTime::from_unix_timestamp(cert.not_after)
            .map(|t| t.date().to_string())
            .unwrap_or_default(),
        ca_fp = ca.sha256,
        dev_fp = cert.sha256,
    )
}

/// The key in `pem`: PKCS#8 (plain or encrypted) or SEC1 EC.
fn decrypt_key(pem: &str, passphrase: Option<&str>) -> Result<KeyPair> {
    use pkcs8::der::Decode;
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        let Some(pass) = passphrase else {
            return Err(invalid("the CA key is encrypted: give its passphrase"));
        };
        let (_, doc) = pkcs8::SecretDocument::from_pem(pem)
            .map_err(|e| invalid(format!("the CA key is not PEM: {e}")))?;
        let encrypted = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes())
            .map_err(|e| invalid(format!("the encrypted CA key cannot be read: {e}")))?;
        let plain = encrypted
            .decrypt(pass)
            .map_err(|_| invalid("the passphrase does not open the CA key"))?;
        return KeyPair::try_from(plain.as_bytes())
            .map_err(|e| invalid(format!("the CA key is not a key Vigil can sign with: {e}")));
    }
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(invalid(
            "the CA key uses OpenSSL's legacy encryption; convert it first: openssl pkcs8 -topk8 -in ca.key -out ca-pkcs8.key",
        ));
    }
    if pem.contains("BEGIN EC PRIVATE KEY") {
        let (_, doc) = pkcs8::SecretDocument::from_pem(pem)
            .map_err(|e| invalid(format!("the CA key is not PEM: {e}")))?;
        return KeyPair::try_from(sec1_to_pkcs8(doc.as_bytes())?.as_slice())
            .map_err(|e| invalid(format!("the CA key is not a key Vigil can sign with: {e}")));
    }
    KeyPair::from_pem(pem)
        .map_err(|e| invalid(format!("the CA key is not a key Vigil can sign with: {e}")))
}

/// Wraps a SEC1 `ECPrivateKey` (P-256) in PKCS#8, which rcgen reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Result<Vec<u8>> {
    use pkcs8::der::{asn1::AnyRef, Encode};
    const EC_PUBLIC_KEY: pkcs8::ObjectIdentifier =
        pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const PRIME256V1: pkcs8::ObjectIdentifier =
        pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let algorithm = pkcs8::AlgorithmIdentifierRef {
        oid: EC_PUBLIC_KEY,
        parameters: Some(AnyRef::from(&PRIME256V1)),
    };
    pkcs8::PrivateKeyInfo::new(algorithm, sec1)
        .to_der()
        .map_err(|e| invalid(format!("the CA key cannot be re-encoded: {e}")))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1); // a device clock a little behind
    params.not_after = now + Duration::days(days);
}

/// A positive 16-byte serial, unique per call.
fn serial(seed: &str) -> SerialNumber {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update(
        OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes(),
    );
    h.update(std::process::id().to_be_bytes());
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes(),
    );
    let mut bytes = h.finalize()[..16].to_vec();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from(bytes)
}

/// A certificate as people see it, from its PEM.
/// A certificate a client presented (DER, already verified against the CA
/// by TLS), as people see it.
pub fn describe_client_certificate(der: &[u8]) -> Result<CertInfo> {
    info_der(Kind::Device, der)
}

/// Whether the CA in `dir` revoked the certificate with this serial (hex, as
/// in [`CertInfo::serial`]). Reads only the revocation list: the CA's key is
/// not needed.
pub fn is_revoked_in(dir: &Path, serial: &str) -> Result<bool> {
    Ok(revocations(dir)?.contains_key(serial))
}

/// The revocations of the CA in `dir` (serial → device and when).
fn revocations(dir: &Path) -> Result<BTreeMap<String, Revoked>> {
    let path = dir.join("revoked.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(PkiError::Io {
            what: "reading",
            path,
            source,
        }),
    }
}

fn info(kind: Kind, pem: &str) -> Result<CertInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
    info_der(kind, &pem.contents)
}

fn info_der(kind: Kind, der: &[u8]) -> Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(format!("the certificate cannot be read: {e}")))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => Some(
                            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string(),
                        ),
                        16 => Some(
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string(),
                        ),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let digest = Sha256::digest(der);
    Ok(CertInfo {
        kind,
        name,
        serial: cert.raw_serial_as_string().replace(':', ""),
        sha256: digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names,
        revoked: false,
    })
}

/// A device id as a file name: letters, digits, `.`, `_` and `-` as they
/// are, anything else (such as `/`) as `%XX`.
fn file_name(device: &str) -> String {
    let mut out = String::new();
    for b in device.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::Io {
            what: "creating",
            path: dir.to_owned(),
            source,
        })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| PkiError::Io {
        what: "securing",
        path: dir.to_owned(),
        source,
    })
}

/// Writes a key: created with mode 0600 (never readable by others, not even
/// for a moment), replaced atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(path, bytes, 0o600)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    write_mode(path, bytes, 0o644)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |source| PkiError::Io {
        what: "writing",
        path: path.to_owned(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path, what: &'static str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
