"""`vigil certs`: the local CA from the command line, checked with Debian's
openssl (chains verified, key and folder modes, revocation listed, errors in
words, no key on stdout)."""

from __future__ import annotations

import os
import stat
import subprocess

import conftest


def vigil_certs(data_dir, *args, env=None):
    return subprocess.run([str(conftest.VIGIL_BIN), "certs", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_issue_export_revoke(tmp_path):
    data = tmp_path / "data"
    r = vigil_certs(data, "init")
    assert r.returncode == 0, r.stderr
    assert "Vigil local CA (" in r.stdout and "SHA-256" in r.stdout
    assert mode(data / "pki") == 0o700 and mode(data / "pki" / "ca.key") == 0o600

    r = vigil_certs(data, "issue", "ward3/oximeter1")
    assert r.returncode == 0, r.stderr
    assert "ward3/oximeter1" in r.stdout and "PRIVATE KEY" not in r.stdout

    out = tmp_path / "bundle"
    r = vigil_certs(data, "export", "ward3/oximeter1", "--out", str(out), "--host", "clinic-laptop")
    assert r.returncode == 0, r.stderr
    cert, key = out / "ward3%2Foximeter1.pem", out / "ward3%2Foximeter1.key"
    assert mode(out) == 0o700 and mode(key) == 0o600
    v = subprocess.run(["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(out / "ca.pem"), str(cert)],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(cert)],
                             capture_output=True, text=True).stdout
    assert "CN = ward3/oximeter1" in subject, subject
    assert "--cafile ca.pem" in (out / "README.txt").read_text()

    r = vigil_certs(data, "revoke", "ward3/oximeter1")
    assert r.returncode == 0 and "REVOKED" in r.stdout, r.stdout + r.stderr
    listed = vigil_certs(data, "list").stdout
    assert listed.startswith("CA") and "REVOKED" in listed

    r = vigil_certs(data, "export", "nobody", "--out", str(tmp_path / "x"))
    assert r.returncode == 1 and "no certificate for device 'nobody'" in r.stderr, r.stderr


def test_import_an_encrypted_ca(tmp_path):
    key, cert = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-aes-256-cbc", "-pass", "pass:s3cret pass", "-out", str(key)], check=True)
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key), "-passin", "pass:s3cret pass",
                    "-subj", "/CN=Clinic CA", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
                    "-out", str(cert)], check=True, capture_output=True)
    data = tmp_path / "data"
    r = vigil_certs(data, "import", "--cert", str(cert), "--key", str(key), env={"VIGIL_CA_PASSPHRASE": "wrong"})
    assert r.returncode == 1 and "passphrase does not open" in r.stderr, r.stderr
    assert "wrong" not in r.stderr
    r = vigil_certs(data, "import", "--cert", str(cert), "--key", str(key), env={"VIGIL_CA_PASSPHRASE": "s3cret pass"})
    assert r.returncode == 0 and "Clinic CA" in r.stdout, r.stderr
    assert "s3cret" not in r.stdout + r.stderr
    assert vigil_certs(data, "issue", "pump1").returncode == 0
    v = subprocess.run(["openssl", "verify", "-CAfile", str(cert), str(data / "pki" / "devices" / "pump1.pem")],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
