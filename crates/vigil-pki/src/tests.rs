//! The PKI checked by an independent implementation: Debian's `openssl`
//! verifies every chain, reads every certificate and makes the CAs to import.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (Debian's openssl package) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn verify(ca: &Path, cert: &Path, purpose: &str) -> (bool, String) {
    openssl(&[
        "verify",
        "-purpose",
        purpose,
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ])
}

#[test]
fn a_new_ca_is_private_and_stays_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = Pki::open_or_init(&pki_dir, "clinic-laptop").unwrap();
    assert_eq!(mode(&pki_dir), 0o700);
    assert_eq!(mode(&pki_dir.join("ca.key")), 0o600);
    let ca = pki.ca_info().unwrap();
    assert_eq!(ca.name, "Vigil local CA (clinic-laptop)");
    let years = (ca.not_after - ca.not_before) as f64 / (365.25 * 86_400.0);
    assert!((9.9..10.1).contains(&years), "{years}");
    let (ok, text) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        pki_dir.join("ca.pem").to_str().unwrap(),
    ]);
    assert!(
        ok && text.contains("CA:TRUE") && text.contains("prime256v1"),
        "{text}"
    );
    let (_, fp) = openssl(&[
        "x509",
        "-noout",
        "-fingerprint",
        "-sha256",
        "-in",
        pki_dir.join("ca.pem").to_str().unwrap(),
    ]);
    assert!(
        fp.contains(&ca.sha256),
        "openssl says {fp}, we say {}",
        ca.sha256
    );
    // Opening again keeps the same CA.
    let again = Pki::open_or_init(&pki_dir, "other-name").unwrap();
    assert_eq!(again.ca_info().unwrap().sha256, ca.sha256);
}

#[test]
fn the_server_certificate_covers_the_names_and_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(dir.path(), "host").unwrap();
    let names: Vec<String> = [
        "localhost",
        "clinic-laptop",
        "127.0.0.1",
        "::1",
        "192.0.2.10",
    ]
    .map(String::from)
    .to_vec();
    let (chain, key) = pki.server_cert(&names).unwrap();
    assert!(
        chain.matches("BEGIN CERTIFICATE").count() == 2,
        "server then CA"
    );
    assert!(key.contains("PRIVATE KEY"));
    assert_eq!(mode(&dir.path().join("server.key")), 0o600);
    let server = dir.path().join("server.pem");
    let (ok, text) = verify(&dir.path().join("ca.pem"), &server, "sslserver");
    assert!(ok, "{text}");
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        server.to_str().unwrap(),
    ]);
    for want in [
        "DNS:localhost",
        "DNS:clinic-laptop",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
        "IP Address:192.0.2.10",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    let first = pki.list().unwrap()[1].clone();
    assert_eq!(first.kind, Kind::Server);
    // The same names (in any order): the same certificate.
    let mut shuffled = names.clone();
    shuffled.reverse();
    pki.server_cert(&shuffled).unwrap();
    assert_eq!(pki.list().unwrap()[1].sha256, first.sha256);
    // A new address: a new certificate from the same CA.
    let mut moved = names.clone();
    moved.push("10.1.2.3".into());
    pki.server_cert(&moved).unwrap();
    let second = pki.list().unwrap()[1].clone();
    assert_ne!(second.sha256, first.sha256);
    assert!(second.names.contains(&"10.1.2.3".to_string()));
    assert!(verify(&dir.path().join("ca.pem"), &server, "sslserver").0);
}

#[test]
fn device_certificates_bundles_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::open_or_init(&dir.path().join("pki"), "host").unwrap();
    let issued = pki.issue_device("ward3/oximeter1").unwrap();
    assert_eq!(issued.info.name, "ward3/oximeter1");
    let years = (issued.info.not_after - issued.info.not_before) as f64 / (365.25 * 86_400.0);
    assert!((1.9..2.1).contains(&years), "{years}");

    let out = dir.path().join("bundle");
    let files = pki
        .export("ward3/oximeter1", &out, "clinic-laptop", 8883)
        .unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "ward3%2Foximeter1.pem",
            "ward3%2Foximeter1.key",
            "README.txt"
        ]
    );
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&files[2]), 0o600);
    let (ok, text) = verify(&files[0], &files[1], "sslclient");
    assert!(ok, "{text}");
    let (ok, text) = openssl(&["pkey", "-noout", "-in", files[2].to_str().unwrap()]);
    assert!(ok, "the exported key is readable: {text}");
    let readme = fs::read_to_string(&files[3]).unwrap();
    assert!(readme.contains(&issued.info.sha256));
    assert!(readme.contains(
        "mosquitto_pub -h clinic-laptop -p 8883 --cafile ca.pem --cert ward3%2Foximeter1.pem"
    ));
    assert!(!readme.contains("PRIVATE KEY"), "no key in the README");

    let listed = pki.list().unwrap();
    assert_eq!(
        listed.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [Kind::Ca, Kind::Device]
    );
    assert!(!pki.is_revoked(&issued.info.serial).unwrap());
    let revoked = pki.revoke("ward3/oximeter1").unwrap();
    assert!(revoked.revoked && pki.is_revoked(&issued.info.serial).unwrap());
    assert!(pki.list().unwrap()[1].revoked);
    // A new certificate for the device is a new serial, not revoked.
    let again = pki.issue_device("ward3/oximeter1").unwrap();
    assert_ne!(again.info.serial, issued.info.serial);
    assert!(!pki.device("ward3/oximeter1").unwrap().revoked);

    assert!(matches!(
        pki.revoke("nobody"),
        Err(PkiError::NoSuchDevice(_))
    ));
    let err = pki.issue_device("bad\nname").err().unwrap().to_string();
    assert!(err.contains("not a device id"), "{err}");
}

/// Runs openssl and asserts it succeeded.
fn openssl_ok(args: &[&str]) {
    let (ok, text) = openssl(args);
    assert!(ok, "openssl {args:?}: {text}");
}

/// A self-signed CA certificate for `key`, made by openssl.
fn openssl_ca(key: &str, passphrase: Option<&str>, subject: &str, out: &str) {
    let passin = passphrase.map(|p| format!("pass:{p}"));
    let mut args = vec![
        "req", "-x509", "-new", "-key", key, "-subj", subject, "-days", "365",
    ];
    if let Some(p) = &passin {
        args.extend(["-passin", p.as_str()]);
    }
    args.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        out,
    ]);
    openssl_ok(&args);
}

/// Why importing this CA was refused.
fn import_error(dir: &Path, cert: &str, key: &str, passphrase: Option<&str>) -> String {
    match Pki::import_ca(dir, cert, key, passphrase) {
        Ok(_) => panic!("the import was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_existing_ca_can_be_imported_with_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
    openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-aes-256-cbc",
        "-pass",
        "pass:correct horse",
        "-out",
        &path("clinic.key"),
    ]);
    openssl_ca(
        &path("clinic.key"),
        Some("correct horse"),
        "/CN=Clinic CA",
        &path("clinic.pem"),
    );
    let cert = fs::read_to_string(path("clinic.pem")).unwrap();
    let key = fs::read_to_string(path("clinic.key")).unwrap();
    assert!(key.contains("ENCRYPTED PRIVATE KEY"));
    let pki_dir = dir.path().join("pki");

    let err = import_error(&pki_dir, &cert, &key, None);
    assert!(err.contains("encrypted: give its passphrase"), "{err}");
    let err = import_error(&pki_dir, &cert, &key, Some("wrong"));
    assert!(err.contains("passphrase does not open"), "{err}");
    let pki = Pki::import_ca(&pki_dir, &cert, &key, Some("correct horse")).unwrap();
    assert_eq!(pki.ca_info().unwrap().name, "Clinic CA");
    assert_eq!(mode(&pki_dir.join("ca.key")), 0o600);
    assert!(!fs::read_to_string(pki_dir.join("ca.key"))
        .unwrap()
        .contains("ENCRYPTED"));
    pki.issue_device("pump1").unwrap();
    let (ok, text) = verify(
        &pki_dir.join("ca.pem"),
        &pki_dir.join("devices/pump1.pem"),
        "sslclient",
    );
    assert!(
        ok,
        "a device certificate from the imported CA verifies: {text}"
    );

    // A SEC1 ("EC PRIVATE KEY") key, as `openssl ecparam -genkey` writes it.
    openssl_ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &path("sec1.key"),
    ]);
    openssl_ca(&path("sec1.key"), None, "/CN=Home CA", &path("sec1.pem"));
    let sec1 = fs::read_to_string(path("sec1.key")).unwrap();
    assert!(sec1.contains("BEGIN EC PRIVATE KEY"));
    let pki = Pki::import_ca(
        &pki_dir,
        &fs::read_to_string(path("sec1.pem")).unwrap(),
        &sec1,
        None,
    )
    .unwrap();
    assert_eq!(pki.ca_info().unwrap().name, "Home CA");

    // Not a CA, or a key that is not the certificate's: refused in words.
    let server = pki.server_cert(&["localhost".into()]).unwrap();
    let err = import_error(&dir.path().join("x"), &server.0, &server.1, None);
    assert!(err.contains("not a CA"), "{err}");
    let err = import_error(&dir.path().join("y"), &cert, &sec1, None);
    assert!(err.contains("does not belong"), "{err}");
}
