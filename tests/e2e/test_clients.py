"""Real clients over every way in: Debian's mosquitto_pub/mosquitto_sub over TCP,
paho-mqtt over TCP and WebSocket, MQTT 3.1.1 and 5, QoS 0, 1 and 2. What a
publisher sends reaches subscribers and is stored whole."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time

import pytest

from helpers import V311, V5, VERSIONS, payload_of, random_bytes, unique, user_properties

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
STDBUF = shutil.which("stdbuf")  # mosquitto_sub block-buffers its stdout into a pipe


def _require_mosquitto_clients():
    if not (MOSQUITTO_PUB and MOSQUITTO_SUB):
        pytest.fail("mosquitto_pub/mosquitto_sub not found: `make deps` installs Debian's mosquitto-clients")


class MosquittoSub:
    """mosquitto_sub in debug mode: we know when its SUBACK came, and it prints
    each message as `qos|retain|hex payload|user properties`."""

    def __init__(self, port: int, version: str, qos: int, topic: str, client_id: str):
        self.proc = subprocess.Popen(
            ([STDBUF, "-oL"] if STDBUF else []) + [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-V", version, "-q", str(qos),
             "-t", topic, "-i", client_id, "-C", "1", "-W", "20", "-d", "-F", "%q|%r|%x|%P"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def _line(self, deadline: float) -> str | None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            text = self._queue.get(timeout=left)
        except queue.Empty:
            return None
        if text is not None:
            self.lines.append(text)
        return text

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (line := self._line(deadline)) is not None:
            if line.startswith("Subscribed (mid") or line.endswith("received SUBACK"):
                return
        self.kill()
        raise AssertionError(f"mosquitto_sub never got its SUBACK; output: {self.lines}")

    def wait_message(self, timeout: float = 10.0) -> tuple[int, int, bytes, str]:
        deadline = time.monotonic() + timeout
        while (line := self._line(deadline)) is not None:
            if not line.startswith(("Client ", "Subscribed ")) and line.count("|") >= 3:
                qos, retain, hexed, props = line.split("|", 3)
                return int(qos), int(retain), bytes.fromhex(hexed), props
        self.kill()
        raise AssertionError(f"mosquitto_sub received no message; output: {self.lines}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
def test_mosquitto_clients(sv, tmp_path, version, qos):
    _require_mosquitto_clients()
    topic = f"{unique('mosq')}/data"
    payload = random_bytes(3000)
    payload_file = tmp_path / "payload.bin"
    payload_file.write_bytes(payload)
    pub_id = unique("mosqpub")

    sub = MosquittoSub(sv.mqtt_port, version, qos, topic, unique("mosqsub"))
    try:
        sub.wait_subscribed()
        cmd = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(sv.mqtt_port), "-V", version,
               "-q", str(qos), "-t", topic, "-i", pub_id, "-f", str(payload_file)]
        if version == "mqttv5":
            cmd += ["-D", "PUBLISH", "user-property", "origin", "mosquitto_pub"]
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        assert done.returncode == 0, f"mosquitto_pub failed ({done.returncode}): {done.stderr!r} {done.stdout!r}"

        got_qos, got_retain, got_payload, got_props = sub.wait_message()
        assert got_payload == payload
        assert got_qos == qos
        assert got_retain == 0
        if version == "mqttv5":
            assert "origin:mosquitto_pub" in got_props
        sub.proc.wait(10)
        assert sub.proc.returncode == 0, f"mosquitto_sub exited {sub.proc.returncode}: {sub.lines}"
    finally:
        sub.kill()

    [stored] = sv.wait_stored(topic, 1)
    assert payload_of(stored) == payload
    assert stored["size"] == len(payload)
    assert stored["qos"] == qos
    assert stored["retain"] is False
    assert stored["client_id"] == pub_id
    assert stored["payload_text"] is None  # random bytes are not UTF-8
    if version == "mqttv5":
        assert stored["properties"]["user_properties"] == [{"name": "origin", "value": "mosquitto_pub"}]


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_paho(sv, transport, version, qos):
    base = unique("paho")
    topic = f"{base}/blob"
    payload = random_bytes(2048) + b"\x00" + "ünïcödé".encode()
    sub = sv.client(transport=transport, version=VERSIONS[version])
    sub.subscribe(topic, qos=qos)
    pub = sv.client(transport=transport, version=VERSIONS[version])
    pub.publish_wait(topic, payload, qos=qos)

    got = sub.expect_message(timeout=10, topic=topic)
    assert got.payload == payload
    assert got.qos == qos
    assert got.retain is False

    [stored] = sv.wait_stored(topic, 1)
    assert payload_of(stored) == payload
    assert stored["size"] == len(payload)
    assert stored["qos"] == qos
    assert stored["topic"] == topic
    assert stored["device"] == base
    assert stored["client_id"] == pub.client_id


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_512_kib_payload_is_stored_byte_for_byte(sv, transport):
    topic = f"{unique('big')}/blob"
    payload = random_bytes(512 * 1024)
    sub = sv.client(transport=transport)
    sub.subscribe(topic, qos=1)
    pub = sv.client(transport=transport)
    pub.publish_wait(topic, payload, qos=1, timeout=20)

    got = sub.expect_message(timeout=20, topic=topic)
    assert len(got.payload) == len(payload)
    assert got.payload == payload

    [stored] = sv.wait_stored(topic, 1, timeout=20)
    assert stored["size"] == 512 * 1024
    assert payload_of(stored) == payload


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_retained_message_survives_restart(vigil, version):
    topic = f"{unique('keep')}/config"
    payload = b"retained across restarts " + random_bytes(32)
    pub = vigil.client(version=VERSIONS[version])
    pub.publish_wait(topic, payload, qos=1, retain=True)
    pub.disconnect()

    vigil.restart()  # SIGTERM (asserts exit 0), same data dir, new ports

    late = vigil.client(version=VERSIONS[version])
    late.subscribe(topic, qos=1)
    got = late.expect_message(timeout=10, topic=topic)
    assert got.payload == payload
    assert got.retain is True
    stored = vigil.wait_stored(topic, 1)
    assert [payload_of(m) for m in stored] == [payload], \
        "the message history holds the retained message once, restart or not"


def test_cleared_retained_message_stays_cleared_after_restart(vigil):
    base = unique("clear")
    topic = f"{base}/config"
    pub = vigil.client()
    pub.publish_wait(topic, b"old", qos=1, retain=True)
    pub.publish_wait(topic, b"", qos=1, retain=True)  # an empty retained message clears it
    pub.publish_wait(f"{base}/other", b"still here", qos=1, retain=True)
    pub.disconnect()

    vigil.restart()

    late = vigil.client()
    late.subscribe(f"{base}/#", qos=1)
    got = late.expect_message(timeout=10, topic=f"{base}/other")
    assert got.payload == b"still here" and got.retain
    time.sleep(0.3)
    assert late.messages_on(topic) == [], "a cleared retained message came back after a restart"
