"""Secure by default, with real peers: Debian's mosquitto_pub/mosquitto_sub and
openssl over TLS (by name and by IP address), mutual TLS with certificates from
`vigil certs`, foreign/expired/revoked certificates refused, accounts made with
`vigil users` and their refusal codes seen by paho-mqtt, anonymous clients from
the network refused (inside a network namespace of the test's own), paho-mqtt
and MQTT.js (npm `mqtt`, in Node) over secure WebSocket trusting only Vigil's
CA, ACLs answered as MQTT says, a TLS login beside 1,000 silent sockets, plain
listeners kept off the network, and no secret in any log."""

from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import ssl
import stat
import subprocess
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import conftest
from helpers import unique, wait_for
from test_presence_alerts import write_config

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "ui"


# helpers ---------------------------------------------------------------------
def vigil_cli(data_dir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    return subprocess.run([str(conftest.VIGIL_BIN), *args[:1], "--data-dir", str(data_dir), *args[1:]],
                          input=stdin, capture_output=True, text=True, timeout=60, env=env)


def add_user(v, name: str, password: str, *flags: str) -> None:
    r = vigil_cli(v.data_dir, "users", "add", name, *flags, stdin=password + "\n")
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr


def bundle(v, device: str, out: Path) -> tuple[Path, Path, Path]:
    """Issues a certificate for `device` and exports its bundle: (ca, cert, key)."""
    r = vigil_cli(v.data_dir, "certs", "issue", device)
    assert r.returncode == 0, r.stderr
    r = vigil_cli(v.data_dir, "certs", "export", device, "--out", str(out))
    assert r.returncode == 0, r.stderr
    name = re.sub(r"[^A-Za-z0-9._-]", lambda m: "%%%02X" % ord(m.group()), device)
    return out / "ca.pem", out / f"{name}.pem", out / f"{name}.key"


def mosquitto(tool: str, v, *args: str, host: str = "localhost", timeout: float = 15) -> subprocess.CompletedProcess:
    _, port = v.tls_addr
    return subprocess.run([tool, "-h", host, "-p", str(port), *args], capture_output=True, text=True,
                          timeout=timeout)


class Paho:
    """A paho-mqtt client over TLS (or secure WebSocket) that records its CONNACK and SUBACK codes."""

    def __init__(self, port: int, ca: Path, *, version=mqtt.MQTTv311, transport: str = "tcp",
                 user: tuple[str, str] | None = None, host: str = "localhost"):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("paho"), protocol=version,
                                  transport=transport, reconnect_on_failure=False)
        self.client.tls_set(ca_certs=str(ca))
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if user:
            self.client.username_pw_set(*user)
        self.connack = None
        self.subacks: dict[int, list] = {}
        self.pubacks: dict[int, object] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        self.client.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        wait_for(lambda: self.connack is not None, 10, what="a CONNACK")

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def code(rc) -> int:
    return rc.value if hasattr(rc, "value") else int(rc)


def secrets_absent(v, *secrets: str) -> None:
    """No password, key or key material in any log this server wrote."""
    logs = "".join(p.read_text(errors="replace") for p in v.stderr_paths if p.exists())
    assert "PRIVATE KEY" not in logs
    for secret in secrets:
        assert secret not in logs, f"a secret is in the log: {secret[:12]}..."


def key_lines(path: Path) -> list[str]:
    return [l for l in path.read_text().splitlines() if l and not l.startswith("-----")]


# tests -----------------------------------------------------------------------
def test_tls_by_name_and_by_ip_address_with_the_local_ca(vigil):
    ca = vigil.data_dir / "pki" / "ca.pem"
    assert stat.S_IMODE(os.stat(vigil.data_dir / "pki").st_mode) == 0o700
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(vigil.data_dir / "pki" / key).st_mode) == 0o600
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(vigil.tls_addr[1]), "--cafile", str(ca),
                            "-t", "tls/#", "-C", "2", "-W", "15", "-v"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        # By name, and by address: OpenSSL then sends "127.0.0.1" as SNI.
        for host in ("localhost", "127.0.0.1"):
            r = mosquitto("mosquitto_pub", vigil, "--cafile", str(ca), "-q", "1", "-t", f"tls/{host}", "-m", "1",
                          host=host)
            assert r.returncode == 0, r.stderr
        out, _ = sub.communicate(timeout=20)
    finally:
        sub.kill()
    assert sorted(out.split("\n")[:2]) == ["tls/127.0.0.1 1", "tls/localhost 1"], out
    vigil.wait_stored("tls/127.0.0.1", 1)

    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{vigil.tls_addr[1]}", "-verify_return_error",
                        "-CAfile", str(ca), "-servername", "localhost"], input="", capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "Verify return code: 0 (ok)" in r.stdout, r.stdout[-2000:] + r.stderr
    # TLS 1.2 and 1.3 only.
    old = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{vigil.tls_addr[1]}", "-tls1_1",
                          "-CAfile", str(ca)], input="", capture_output=True, text=True, timeout=30)
    assert old.returncode != 0
    # Not trusted by a client that does not know Vigil's CA.
    r = mosquitto("mosquitto_pub", vigil, "--capath", "/etc/ssl/certs", "-t", "tls/x", "-m", "1")
    assert r.returncode != 0


def test_mutual_tls_names_the_device_confines_it_and_revocation_refuses_it(vigil, tmp_path):
    ca, cert, key = bundle(vigil, "ward3/ox1", tmp_path / "bundle")
    watcher = vigil.client(client_id="watcher")
    watcher.subscribe("#", qos=1)
    tls = ["--cafile", str(ca), "--cert", str(cert), "--key", str(key), "-q", "1", "-V", "mqttv5", "-d"]
    r = mosquitto("mosquitto_pub", vigil, *tls, "-i", "ox1-client", "-t", "ward3/ox1/spo2", "-m", "97")
    assert r.returncode == 0, r.stdout + r.stderr
    assert watcher.expect_message(10, topic="ward3/ox1/spo2").payload == b"97"
    # Its identity is the certificate's name: the broker lists it as its user.
    sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", str(vigil.tls_addr[1]), "--cafile", str(ca),
                            "--cert", str(cert), "--key", str(key), "-i", "ox1-listener", "-t", "ward3/ox1/cmd",
                            "-W", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        clients = wait_for(lambda: [c for c in vigil.http_get_json("/api/broker")["clients"]
                                    if c["client_id"] == "ox1-listener"], 10, what="the listener connected")
        assert clients[0]["username"] == "ward3/ox1" and clients[0]["transport"] == "tls", clients
    finally:
        sub.kill()

    # Outside its own prefix: answered "not authorized" (MQTT 5) and never delivered.
    r = mosquitto("mosquitto_pub", vigil, *tls, "-t", "ward4/ox9/spo2", "-m", "50")
    assert "PUBACK (Mid: 1, RC:135)" in r.stdout, r.stdout + r.stderr
    r = mosquitto("mosquitto_pub", vigil, *tls, "-t", "ward3/ox1/after", "-m", "1")
    assert r.returncode == 0
    assert watcher.expect_message(10, topic="ward3/ox1/after")
    assert not watcher.messages_on("ward4/ox9/spo2")
    assert vigil.http_get_json("/api/broker")["refused_publishes"] == 1

    r = vigil_cli(vigil.data_dir, "certs", "revoke", "ward3/ox1")
    assert r.returncode == 0, r.stderr
    r = mosquitto("mosquitto_pub", vigil, *tls, "-t", "ward3/ox1/spo2", "-m", "97")
    assert r.returncode != 0 and "CONNACK (135)" in r.stdout, r.stdout + r.stderr
    assert "revoked" in vigil.stderr()
    secrets_absent(vigil, *key_lines(key), *key_lines(vigil.data_dir / "pki" / "ca.key"))


def test_foreign_and_expired_certificates_fail_the_handshake(vigil, tmp_path):
    ca = vigil.data_dir / "pki" / "ca.pem"
    # A CA of someone else's, and a client certificate from it.
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60, cwd=tmp_path)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "30", "-subj", "/CN=Other CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "dev.key", "-out", "dev.csr", "-subj", "/CN=intruder")
    run("openssl", "x509", "-req", "-in", "dev.csr", "-CA", "other-ca.pem", "-CAkey", "other-ca.key",
        "-CAcreateserial", "-days", "30", "-out", "foreign.pem")
    r = mosquitto("mosquitto_pub", vigil, "--cafile", str(ca), "--cert", str(tmp_path / "foreign.pem"),
                  "--key", str(tmp_path / "dev.key"), "-t", "intruder/x", "-m", "1")
    assert r.returncode != 0, r.stdout

    # One signed by Vigil's own CA, but valid only in 2020 (openssl ca takes explicit dates).
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "index.txt").write_text("")
    (tmp_path / "ca.cnf").write_text(f"""
[ca]
default_ca = old
[old]
dir = {tmp_path}/db
database = {tmp_path}/db/index.txt
new_certs_dir = {tmp_path}/db
serial = {tmp_path}/db/serial
default_md = sha256
policy = any
unique_subject = no
[any]
commonName = supplied
""")
    (tmp_path / "db" / "serial").write_text("1000\n")
    run("openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", str(ca), "-keyfile",
        str(vigil.data_dir / "pki" / "ca.key"), "-in", "dev.csr", "-out", "expired.pem",
        "-startdate", "20200101000000Z", "-enddate", "20210101000000Z", "-subj", "/CN=intruder")
    r = mosquitto("mosquitto_pub", vigil, "--cafile", str(ca), "--cert", str(tmp_path / "expired.pem"),
                  "--key", str(tmp_path / "dev.key"), "-t", "intruder/x", "-m", "1")
    assert r.returncode != 0, r.stdout
    assert "TLS handshake failed" in vigil.stderr()
    assert vigil.http_get_json("/api/stats")["messages"] == 0


def test_passwords_refusal_codes_and_the_failed_login_limit(vigil):
    ca = vigil.data_dir / "pki" / "ca.pem"
    add_user(vigil, "nurse", "correct horse 7")
    port = vigil.tls_addr[1]
    ok = Paho(port, ca, user=("nurse", "correct horse 7"))
    assert code(ok.connack) == 0
    ok.stop()
    # 3.1.1's own return codes, as mosquitto_pub prints them (paho maps them to MQTT 5 codes).
    wrong = mosquitto("mosquitto_pub", vigil, "--cafile", str(ca), "-u", "nurse", "-P", "wrong", "-d",
                      "-t", "x", "-m", "1")
    assert wrong.returncode != 0 and "CONNACK (4)" in wrong.stdout, wrong.stdout + wrong.stderr
    wrong5 = Paho(port, ca, version=mqtt.MQTTv5, user=("nurse", "wrong"))
    assert code(wrong5.connack) == 0x86, wrong5.connack
    wrong5.stop()
    nobody = Paho(port, ca, version=mqtt.MQTTv5, user=("ghost", "x"), host="localhost")
    # On loopback a name without an account is a label: this is the local user.
    assert code(nobody.connack) == 0
    nobody.stop()
    # Five failures a minute per address (two above): then refused unchecked, even the right password.
    for _ in range(3):
        p = Paho(port, ca, version=mqtt.MQTTv5, user=("nurse", "wrong"))
        assert code(p.connack) == 0x86
        p.stop()
    limited = Paho(port, ca, version=mqtt.MQTTv5, user=("nurse", "correct horse 7"))
    assert code(limited.connack) == 0x9F, limited.connack
    limited.stop()
    limited3 = mosquitto("mosquitto_pub", vigil, "--cafile", str(ca), "-u", "nurse", "-P", "correct horse 7",
                         "-d", "-t", "x", "-m", "1")
    assert "CONNACK (5)" in limited3.stdout, limited3.stdout + limited3.stderr
    err = vigil.stderr()
    assert "wrong password for 'nurse'" in err and "max_failed_logins" in err
    secrets_absent(vigil, "correct horse 7")
    listed = vigil_cli(vigil.data_dir, "users", "list").stdout
    assert listed.startswith("nurse  user") and "correct horse" not in listed
    r = vigil_cli(vigil.data_dir, "users", "remove", "nobody-here")
    assert r.returncode == 1 and "no account 'nobody-here'" in r.stderr


def test_device_accounts_get_suback_refusals_and_dropped_publishes(vigil):
    ca = vigil.data_dir / "pki" / "ca.pem"
    add_user(vigil, "sensor7", "s7-secret", "--device")
    watcher = vigil.client(client_id="watcher7")
    watcher.subscribe("#", qos=1)
    port = vigil.tls_addr[1]
    for version, refused in ((mqtt.MQTTv311, 0x80), (mqtt.MQTTv5, 0x87)):
        p = Paho(port, ca, version=version, user=("sensor7", "s7-secret"))
        assert code(p.connack) == 0
        _, mid = p.client.subscribe([("sensor7/cmd/#", 1), ("other/#", 1), ("tele/sensor7/#", 0)])
        codes = wait_for(lambda: p.subacks.get(mid), 10, what="SUBACK")
        assert [code(c) for c in codes] == [1, refused, 0], codes
        _, whole = p.client.subscribe("#", 0)
        assert [code(c) for c in wait_for(lambda: p.subacks.get(whole), 10, what="SUBACK")] == [refused]
        info = p.client.publish("other/x", b"no", qos=1)
        acked = wait_for(lambda: p.pubacks.get(info.mid), 10, what="PUBACK")
        if version == mqtt.MQTTv5:
            assert code(acked) == 0x87, acked
        info = p.client.publish("sensor7/temp", b"21", qos=1)
        wait_for(lambda: info.mid in p.pubacks, 10, what="PUBACK")
        assert watcher.expect_message(10, topic="sensor7/temp").payload == b"21"
        p.stop()
    assert not watcher.messages_on("other/x")
    view = vigil.http_get_json("/api/broker")
    assert view["refused_publishes"] == 2 and view["refused_subscriptions"] == 4


def test_required_client_certificates(vigil_factory, tmp_path):
    v = vigil_factory(write_config(tmp_path, '[broker]\ntls_client_certs = "required"\n'))
    ca, cert, key = bundle(v, "pump1", tmp_path / "b")
    add_user(v, "pump1", "pw-pump")
    r = mosquitto("mosquitto_pub", v, "--cafile", str(ca), "-u", "pump1", "-P", "pw-pump", "-t", "pump1/x", "-m", "1")
    assert r.returncode != 0, "a password alone is not enough on this listener"
    r = mosquitto("mosquitto_pub", v, "--cafile", str(ca), "--cert", str(cert), "--key", str(key), "-q", "1",
                  "-t", "pump1/x", "-m", "1")
    assert r.returncode == 0, r.stderr
    v.wait_stored("pump1/x", 1)
    assert [l for l in v.http_get_json("/api/broker")["listeners"] if l["protocol"] == "mqtts"][0][
        "client_certificates"] == "required"


def test_secure_websocket_with_paho_and_mqttjs_trusting_only_the_ca(vigil, tmp_path):
    ca, _, _ = bundle(vigil, "wsdev", tmp_path / "b")
    port = vigil.wss_addr[1]
    p = Paho(port, ca, version=mqtt.MQTTv5, transport="websockets")
    assert code(p.connack) == 0
    info = p.client.publish("wss/paho", b"1", qos=1)
    wait_for(lambda: info.mid in p.pubacks, 10, what="PUBACK over WSS")
    p.stop()
    script = Path(__file__).resolve().parent / "mqttjs_wss.mjs"
    r = subprocess.run(["node", str(script), f"wss://localhost:{port}/mqtt", str(ca), "wss/mqttjs"],
                       capture_output=True, text=True, timeout=60, cwd=UI)
    assert r.returncode == 0, r.stdout + r.stderr
    vigil.wait_stored("wss/paho", 1)
    vigil.wait_stored("wss/mqttjs", 1)
    # Without the CA, MQTT.js refuses Vigil's certificate.
    other = tmp_path / "empty-ca.pem"
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", other)
    r = subprocess.run(["node", str(script), f"wss://localhost:{port}/mqtt", str(other), "wss/untrusted"],
                       capture_output=True, text=True, timeout=60, cwd=UI)
    assert r.returncode != 0


def test_a_tls_login_beside_a_thousand_silent_sockets(vigil):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    ca = vigil.data_dir / "pki" / "ca.pem"
    silent = []
    try:
        for _ in range(1000):
            silent.append(socket.create_connection(vigil.tls_addr, timeout=5))
        time.sleep(0.3)
        times = []
        for i in range(3):
            start = time.monotonic()
            r = mosquitto("mosquitto_pub", vigil, "--cafile", str(ca), "-q", "1", "-t", f"idle/{i}", "-m", "1")
            times.append(time.monotonic() - start)
            assert r.returncode == 0, r.stderr
        assert min(times) < 1.0, times
    finally:
        for s in silent:
            s.close()


def test_anonymous_clients_from_the_network_are_refused(vigil_factory, tmp_path):
    """Vigil and the client in a namespace of the test's own, the client on a
    non-loopback address of that namespace: anonymous is refused, an account works."""
    ns = f"vigil-{uuid.uuid4().hex[:8]}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace (needs root): anonymous-from-the-network not tested")
    try:
        inside = ["ip", "netns", "exec", ns]
        # A veth pair inside the namespace gives it an address that is not loopback
        # (the dummy link type may be missing from the kernel).
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                    ["ip", "addr", "add", "10.213.7.1/24", "dev", "v0"], ["ip", "link", "set", "v0", "up"],
                    ["ip", "link", "set", "v1", "up"]):
            subprocess.run(inside + cmd, check=True, capture_output=True)
        v = vigil_factory.new()
        v.start(cmd=inside + v.command(tls="0.0.0.0:0", wss="off"))
        add_user(v, "tech", "field-pw")
        ca, port = v.data_dir / "pki" / "ca.pem", v.tls_addr[1]
        pub = lambda *a: subprocess.run(inside + ["mosquitto_pub", "-h", "10.213.7.1", "-p", str(port),  # noqa: E731
                                                  "--cafile", str(ca), "--insecure", *a], capture_output=True,
                                        text=True, timeout=15)
        r = pub("-V", "mqttv5", "-d", "-t", "x/y", "-m", "1")
        assert r.returncode != 0 and "CONNACK (135)" in r.stdout, r.stdout + r.stderr
        r = pub("-d", "-t", "x/y", "-m", "1")
        assert "CONNACK (5)" in r.stdout, r.stdout + r.stderr
        r = pub("-u", "tech", "-P", "field-pw", "-q", "1", "-t", "x/y", "-m", "1")
        assert r.returncode == 0, r.stderr
        assert "anonymous clients may connect only from this machine" in v.stderr()
        v.stop_ok()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_plain_listeners_stay_on_loopback_unless_allowed(vigil_factory, tmp_path):
    v = vigil_factory.new()
    proc = v.spawn(v.command(mqtt="0.0.0.0:0"))
    assert proc.wait(20) != 0
    assert "allow_insecure_remote" in v.stderr() and "not loopback" in v.stderr()
    allowed = vigil_factory(write_config(tmp_path, "[broker]\nallow_insecure_remote = true\n"), mqtt="0.0.0.0:0")
    assert "allow_insecure_remote = true" in allowed.stderr()
    listeners = {l["protocol"]: l for l in allowed.http_get_json("/api/broker")["listeners"]}
    assert not listeners["mqtt"]["loopback_only"]
