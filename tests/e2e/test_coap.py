"""CoAP devices end to end, on loopback: a device on aiocoap (PyPI,
tests/e2e/coap_device.py) and Debian's libcoap server, each its own process;
Vigil probes them, lists their resources, observes their readings into the
store, carries a technician's requests, and judges presence (stale when the
readings stop, offline when probes fail). Multicast discovery runs only in
network namespaces of its own: tests/e2e/test_coap_discovery.py.
"""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import HOST, DeviceProcess, free_udp_port, wait_for

HERE = Path(__file__).resolve().parent
UI = HERE.parents[1] / "ui"  # node-coap is in ui/node_modules


class Devices:
    """Starts CoAP devices on loopback, each a process of its own; kills them at the end."""

    def __init__(self):
        self.started: list[DeviceProcess] = []

    def _start(self, args: list[str], ready: str | None, cwd: Path | None = None) -> DeviceProcess:
        p = DeviceProcess(args, ready, cwd=cwd)
        self.started.append(p)
        return p

    def aiocoap(self, port: int, *extra: str) -> DeviceProcess:
        return self._start([sys.executable, str(HERE / "coap_device.py"), "--port", str(port), *extra], "ready")

    def libcoap(self, port: int, *extra: str) -> DeviceProcess:
        if not shutil.which("coap-server-notls"):
            pytest.fail("coap-server-notls not found: `make deps` installs Debian's libcoap3-bin")
        return self._start(["coap-server-notls", "-A", HOST, "-p", str(port), *extra], None)

    def node_coap(self, port: int) -> DeviceProcess:
        return self._start(["node", str(HERE / "coap_node_device.mjs"), str(port)], "ready", cwd=UI)


@pytest.fixture
def devices():
    d = Devices()
    yield d
    for p in d.started:
        p.kill()


def coap_config(tmp_path: Path, *addresses: str, probe_every_s: int = 1, ack_timeout_ms: int = 50) -> list[str]:
    quoted = ", ".join(f'"{a}"' for a in addresses)
    path = tmp_path / "vigil.toml"
    path.write_text(f"[coap]\ndevices = [{quoted}]\nprobe_every_s = {probe_every_s}\n"
                    f"ack_timeout_ms = {ack_timeout_ms}\n")
    return ["--config", str(path)]


def coap_device(v, device_id: str) -> dict | None:
    return next((d for d in v.http_get_json("/api/coap")["devices"] if d["device"] == device_id), None)


def device_row(v, device_id: str) -> dict | None:
    return next((d for d in v.http_get_json("/api/devices") if d["id"] == device_id), None)


def request(v, expect: int = 200, **body):
    r = v.http("POST", "/api/coap/request", body)
    assert r.status == expect, (r.status, r.body)
    return r.json()


def test_a_device_is_probed_its_resources_listed_and_its_readings_observed_in_order(vigil_factory, devices, tmp_path):
    port = free_udp_port()
    devices.aiocoap(port, "--period", "0.2")
    v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}"))
    device_id = f"coap/{HOST}:{port}"

    found = wait_for(lambda: (d := coap_device(v, device_id)) and len(d["observing"]) == 3 and d,
                     10, what="the device probed and its three sensors observed")
    assert found["found_by"] == "configured" and found["reachable"] and found["error"] is None
    by_path = {r["path"]: r for r in found["resources"]}
    assert by_path["/sensors/env"] == {"path": "/sensors/env", "rt": "env", "if": None, "ct": [110],
                                       "title": "Environment", "obs": True, "sz": None}
    assert by_path["/info/big"]["sz"] == 3000 and not by_path["/info/big"]["obs"]
    assert by_path["/config/interval"]["rt"] == "config" and not by_path["/config/interval"]["obs"]
    assert sorted(found["observing"]) == ["/sensors/env", "/sensors/pulse", "/sensors/temp"]

    # The readings, by their resource path or their SenML names, with units.
    def metrics():
        row = device_row(v, device_id)
        return row and {m["name"]: m for m in row["metrics"]}
    m = wait_for(lambda: (m := metrics()) and len(m) >= 4 and m, 10, what="four metrics")
    assert set(m) == {"sensors/temp", "env/temp", "env/humidity", "sensors/pulse.bpm"}
    assert m["env/temp"]["unit"] == "Cel" and m["env/humidity"]["unit"] == "%RH"
    row = device_row(v, device_id)
    assert row["convention"] == "coap" and row["presence"]["state"] == "online"

    # Every notification is a stored message, in the device's order: the
    # temperature rises by 0.1 per period, so stored values never go down.
    topic = f"{device_id}/sensors/temp"
    stored = v.wait_stored(topic, count=10)
    values = [float(s["payload_text"]) for s in reversed(v.all_messages(topic))]
    assert len(values) >= 10 and values == sorted(values), values
    assert len(set(values)) == len(values), f"a notification was stored twice: {values}"
    assert stored[0]["properties"] == {"content_type": "0"}
    pulse = v.wait_stored(f"{device_id}/sensors/pulse")[0]
    assert pulse["kind"] == "cbor" and pulse["metrics"][0]["name"] == "bpm"
    assert pulse["properties"] == {"content_type": "60"} and pulse["decode_error"] is None


def test_a_technician_reads_writes_and_triggers_resources(vigil_factory, devices, tmp_path):
    port = free_udp_port()
    devices.aiocoap(port, "--period", "1")
    v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}"))
    device_id = f"coap/{HOST}:{port}"
    wait_for(lambda: (d := coap_device(v, device_id)) and d["reachable"], 10, what="the device probed")

    # 3000 bytes arrive in blocks (RFC 7959) and are joined whole.
    big = request(v, device=device_id, method="GET", path="/info/big")
    assert (big["code"], big["success"], big["size"], big["content_format"]) == ("2.05", True, 3000, 0)
    assert big["payload"] == "".join(f"{i:04d}|" for i in range(600))
    assert big["content_format_name"] == "text/plain"

    # PUT a setting, read it back; POST an action twice; by address too.
    put = request(v, device=device_id, method="PUT", path="/config/interval", payload="2.5", content_format=0)
    assert put["code"] == "2.04"
    assert request(v, device=device_id, method="GET", path="/config/interval")["payload"] == "2.5"
    request(v, device=device_id, method="POST", path="/actions/beep")
    assert request(v, device=f"{HOST}:{port}", method="POST", path="/actions/beep")["payload"] == "beeps=2"
    refused = request(v, device=device_id, method="PUT", path="/config/interval", payload="soon")
    assert (refused["code"], refused["success"], refused["payload"]) == ("4.00", False, "a number of seconds")
    assert request(v, device=device_id, method="GET", path="/no/such")["code"] == "4.04"
    assert request(v, device=device_id, method="DELETE", path="/actions/beep")["code"] == "4.05"

    # The GET of a reading is stored like a notification.
    request(v, device=device_id, method="GET", path="/config/interval")
    assert v.wait_stored(f"{device_id}/config/interval")[0]["payload_text"] == "2.5"

    # Bad requests are refused in words; a silent address times out in words.
    for body, words in [
        (dict(device=device_id, method="GET", path="no-slash"), "the path must start with '/'"),
        (dict(device="coap/nowhere", method="GET", path="/x"), "'nowhere' is not an address"),
        (dict(device=device_id, method="GET", path="/x", payload="a", payload_base64="YQ=="), "not both"),
    ]:
        assert words in request(v, 400, **body)["error"]
    silent = free_udp_port()
    r = request(v, 504, device=f"{HOST}:{silent}", method="GET", path="/x")
    assert r["error"].startswith(f"no answer from {HOST}:{silent} after 5 transmission(s)"), r


def test_a_device_whose_readings_stop_goes_stale_and_offline_when_it_stops_answering(vigil_factory, devices, tmp_path):
    port = free_udp_port()
    # Readings every second for 3 s, then silence while it still answers:
    # stale after 3 learned intervals, offline by silence only after 10.
    dev = devices.aiocoap(port, "--period", "1", "--stop-after", "3")
    v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}"))
    device_id = f"coap/{HOST}:{port}"
    wait_for(lambda: (d := device_row(v, device_id)) and d["presence"]["state"] == "online", 10, what="online")
    stale = wait_for(lambda: (d := device_row(v, device_id)) and d["presence"]["state"] == "stale" and d,
                     15, what="stale once the readings stop")
    assert stale["presence"]["reason"].startswith("silent for")
    # It answers probes all along, which does not make it online again.
    time.sleep(1.5)
    assert device_row(v, device_id)["presence"]["state"] == "stale"
    assert coap_device(v, device_id)["reachable"]
    dev.kill()
    offline = wait_for(lambda: (d := device_row(v, device_id)) and d["presence"]["state"] == "offline" and d,
                       15, what="offline after a failed probe")
    assert offline["presence"]["reason"].startswith(f"CoAP: no answer from {HOST}:{port}"), offline["presence"]
    d = coap_device(v, device_id)
    assert not d["reachable"] and d["error"].startswith("no answer")
    # Back: answered, re-observed, online again.
    devices.aiocoap(port, "--period", "0.5")
    wait_for(lambda: (d := device_row(v, device_id)) and d["presence"]["state"] == "online", 15, what="online again")


def test_libcoap_is_observed_and_a_restart_of_vigil_observes_it_again(vigil_factory, devices, tmp_path):
    port = free_udp_port()
    devices.libcoap(port)
    v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}"))
    device_id = f"coap/{HOST}:{port}"
    # libcoap's /time (listed with ct=0 and obs) notifies every second.
    d = wait_for(lambda: (d := coap_device(v, device_id)) and "/time" in d["observing"] and d, 15, what="/time observed")
    assert any(r["path"] == "/time" and r["obs"] and r["ct"] == [0] and r["rt"] == "ticks" for r in d["resources"])
    first = v.wait_stored(f"{device_id}/time", count=2, timeout=10)
    assert all(m["payload_text"] for m in first)
    # Restarted without the configured address: the store remembers it.
    n = len(v.all_messages(f"{device_id}/time"))
    (tmp_path / "vigil.toml").write_text("[coap]\nprobe_every_s = 1\nack_timeout_ms = 50\n")
    v.restart()
    wait_for(lambda: (d := coap_device(v, device_id)) and "/time" in d["observing"], 15, what="/time observed again")
    v.wait_stored(f"{device_id}/time", count=n + 2, timeout=10)


def test_broken_replies_are_refused_and_vigil_carries_on(vigil_factory, devices, tmp_path):
    """A scripted device answers with what no real server sends: a truncated
    header, a bad option delta, a reply to a token Vigil never sent, and a
    /.well-known/core that is not link format. Vigil says so and keeps going."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(0.2)
    port = sock.getsockname()[1]
    stop = threading.Event()
    seen: list[bytes] = []

    def broken_device():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except socket.timeout:
                continue
            seen.append(data)
            if data[0] >> 4 & 3 != 0:  # not CON: an ACK or RST from Vigil
                continue
            mid, tkl = data[2:4], data[0] & 0x0F
            token = data[4:4 + tkl]
            sock.sendto(b"\x60", peer)                                      # truncated header
            sock.sendto(b"\x60\x45" + mid + b"\xf1\x00", peer)              # bad option delta (15)
            sock.sendto(bytes([0x51, 0x45, 0x12, 0x34, 0x99]) + b"\xffhi", peer)  # CON reply, unknown token
            # The answer: 2.05, Content-Format 40, a document that is not link format.
            sock.sendto(bytes([0x60 | tkl, 0x45]) + mid + token + b"\xc1\x28\xff" + b"</a>;title=\"open", peer)

    t = threading.Thread(target=broken_device, daemon=True)
    t.start()
    try:
        v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}", probe_every_s=60))
        device_id = f"coap/{HOST}:{port}"
        d = wait_for(lambda: (d := coap_device(v, device_id)) and d["error"] and d, 10, what="the broken answer noted")
        assert d["error"] == "not CoRE link format at byte 16: quoted value without its closing '\"'", d
        assert d["resources"] == []
        # The reply to a token never sent got a reset.
        wait_for(lambda: any(s[:1] == b"\x70" and s[2:4] == b"\x12\x34" for s in seen), 5, what="RST for 0x1234")
        counters = v.http_get_json("/api/coap")["counters"]
        assert counters["malformed"] >= 2 and counters["unknown"] >= 1, counters
        # And Vigil is fine: a real device next to it is observed.
        good = free_udp_port()
        devices.aiocoap(good, "--period", "0.2")
        added = v.http_post_json("/api/coap/devices", {"address": f"{HOST}:{good}"})
        assert added["device"] == f"coap/{HOST}:{good}" and added["found_by"] == "address given"
        v.wait_stored(f"coap/{HOST}:{good}/sensors/temp", count=3)
        r = v.http("POST", "/api/coap/devices", {"address": f"{HOST}:{free_udp_port()}"})
        assert r.status == 504 and r.json()["error"].startswith("no answer from"), r.body
    finally:
        stop.set()
        t.join(2)
        sock.close()


def test_a_node_coap_device_is_observed_like_the_others(vigil_factory, devices, tmp_path):
    port = free_udp_port()
    devices.node_coap(port)
    v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}"))
    device_id = f"coap/{HOST}:{port}"
    d = wait_for(lambda: (d := coap_device(v, device_id)) and d["observing"] == ["/heart"] and d, 10,
                 what="/heart observed")
    assert [(r["path"], r["ct"], r["obs"]) for r in d["resources"]] == [("/heart", [50], True), ("/battery", [0], False)]
    # node-coap numbers its notifications from 1; they land in order.
    stored = v.wait_stored(f"{device_id}/heart", count=8)
    bpm = [s["metrics"][0]["value"] for s in reversed(v.all_messages(f"{device_id}/heart"))]
    assert all(b > a or a - b == 39 for a, b in zip(bpm, bpm[1:])), bpm
    assert stored[0]["properties"] == {"content_type": "50"} and stored[0]["kind"] == "json"
    row = device_row(v, device_id)
    assert "heart.bpm" in {m["name"] for m in row["metrics"]}


def test_observations_arrive_through_packet_loss(vigil_factory, devices, tmp_path):
    """libcoap drops 20% of what it would send or receive (-l 20%):
    retransmissions and re-registration still bring the readings in."""
    port = free_udp_port()
    devices.libcoap(port, "-l", "20%")
    v = vigil_factory(coap_config(tmp_path, f"{HOST}:{port}", ack_timeout_ms=100))
    device_id = f"coap/{HOST}:{port}"
    wait_for(lambda: (d := coap_device(v, device_id)) and "/time" in d["observing"], 30, what="/time observed")
    # /time notifies once a second; 5 of them within 20 s despite the loss.
    v.wait_stored(f"{device_id}/time", count=5, timeout=20)
    requests = [v.http("POST", "/api/coap/request", {"device": device_id, "method": "GET", "path": "/time"})
                for _ in range(5)]
    assert all(r.status == 200 and r.json()["code"] == "2.05" for r in requests), [r.body for r in requests]


def test_a_range_is_scanned_and_what_answers_is_observed(vigil_factory, devices, tmp_path):
    port = free_udp_port()
    devices.aiocoap(port, "--bind", "127.0.0.2", "--period", "0.3")
    devices.aiocoap(port, "--bind", "127.0.0.4", "--period", "0.3")
    v = vigil_factory(coap_config(tmp_path))
    started = time.monotonic()
    r = v.http_post_json("/api/coap/scan", {"range": "127.0.0.2-5", "port": port})
    assert time.monotonic() - started < 10, "a scan waits a few seconds, not for retransmissions"
    assert r["scanned"] == f"127.0.0.2-5 port {port}" and r["interfaces"] == []
    assert sorted(r["found"]) == [f"coap/127.0.0.2:{port}", f"coap/127.0.0.4:{port}"], r
    d = wait_for(lambda: (d := coap_device(v, f"coap/127.0.0.4:{port}")) and len(d["observing"]) == 3 and d, 10,
                 what="the scanned device observed")
    assert d["found_by"] == f"scan of 127.0.0.2-5 port {port}"
    v.wait_stored(f"coap/127.0.0.2:{port}/sensors/temp", count=2)
    for body, words in [({"range": "127.0.0.0/16"}, "a scan asks at most 1024"),
                        ({"range": "127.0.0.9-2"}, "ends before it starts"),
                        ({"range": "somewhere"}, "is not an address")]:
        r = v.http("POST", "/api/coap/scan", body)
        assert r.status == 400 and words in r.json()["error"], (body, r.body)
