"""Helpers shared by the end-to-end tests: polling, HTTP, SSE, MQTT clients.

Everything here talks to 127.0.0.1 only, and every wait is bounded in time.
"""

from __future__ import annotations

from pathlib import Path
import sys
import subprocess
import signal
import base64
import http.client
import json
import os
import queue
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
VERSIONS = {"3.1.1": V311, "5": V5}


# --------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------

def unique(prefix: str = "t") -> str:
    """A name no other test (or earlier run) uses: safe as a topic level."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def now_us() -> int:
    return time.time_ns() // 1000


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str | None = None) -> Any:
    """Polls `predicate` until it returns something truthy and returns that.

    Fails the test after `timeout` seconds, saying what was awaited and the last
    value (or exception) the predicate gave.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            desc = what or getattr(predicate, "__name__", "condition")
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {desc}; {detail}")
        time.sleep(interval)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def payload_of(message: dict) -> bytes:
    return base64.b64decode(message["payload_base64"])


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

@dataclass
class HttpResponse:
    status: int
    headers: dict
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(addr: tuple[str, int], method: str, path: str, body: Any = None,
                 raw_body: bytes | None = None, timeout: float = 10.0,
                 headers: dict | None = None) -> HttpResponse:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        hdrs = dict(headers or {})
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def query(path: str, **params: Any) -> str:
    params = {k: v for k, v in params.items() if v is not None}
    if not params:
        return path
    return path + "?" + urllib.parse.urlencode(params)


class SseStream:
    """Reads a Server-Sent Events stream in a thread; events land on a queue."""

    def __init__(self, addr: tuple[str, int], path: str, timeout: float = 10.0):
        self.events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self.history: list[tuple[str, Any]] = []  # every event, in order, never consumed
        self._conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
        self._conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.response = self._conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        name, data = "message", []
        try:
            while not self._closed:
                line = self.response.readline()
                if not line:
                    break
                line = line.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if data:
                        text = "\n".join(data)
                        try:
                            value = json.loads(text)
                        except ValueError:
                            value = text
                        self.history.append((name, value))
                        self.events.put((name, value))
                    name, data = "message", []
                elif line.startswith(":"):
                    continue
                else:
                    key, _, value = line.partition(":")
                    if value.startswith(" "):
                        value = value[1:]
                    if key == "event":
                        name = value
                    elif key == "data":
                        data.append(value)
        except Exception:  # noqa: BLE001 - the stream ended or was closed under us
            pass

    def next_matching(self, predicate: Callable[[str, Any], bool], timeout: float = 10.0,
                      what: str = "an SSE event") -> tuple[str, Any]:
        """Returns the first event (name, data) for which predicate holds, skipping others."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; saw {seen[-20:]!r}")
            try:
                name, value = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if predicate(name, value):
                return name, value
            seen.append((name, value))

    def find(self, predicate: Callable[[str, Any], bool], timeout: float = 10.0,
             what: str = "an SSE event") -> tuple[str, Any]:
        """Like next_matching, but looks at every event received so far (consumed or not)."""
        def found():
            for name, value in list(self.history):
                if predicate(name, value):
                    return name, value
            return None
        return wait_for(found, timeout, what=what)

    def close(self) -> None:
        self._closed = True
        try:
            if self._conn.sock is not None:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()


# --------------------------------------------------------------------------
# MQTT over paho
# --------------------------------------------------------------------------

@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any
    mid: int = 0
    at: float = field(default_factory=time.monotonic)


class Client:
    """A paho-mqtt 2.x client run in its own network thread, with blocking helpers.

    It never reconnects by itself, so a server-side disconnect is observable.
    """

    def __init__(self, port: int, *, version: int = V311, transport: str = "tcp",
                 client_id: str | None = None, keepalive: int = 30, ws_path: str = "/mqtt",
                 will: dict | None = None, clean: bool = True, max_inflight: int | None = None,
                 connect_properties: Properties | None = None):
        self.port = port
        self.connect_properties = connect_properties
        self.version = version
        self.client_id = client_id or unique("c")
        self.keepalive = keepalive
        self.clean = clean
        kwargs: dict = dict(callback_api_version=CallbackAPIVersion.VERSION2,
                            client_id=self.client_id, protocol=version, transport=transport,
                            reconnect_on_failure=False)
        if version != V5:
            kwargs["clean_session"] = clean
        self.paho = mqtt.Client(**kwargs)
        if transport == "websockets":
            self.paho.ws_set_options(path=ws_path)
        if max_inflight is not None:
            self.paho.max_inflight_messages_set(max_inflight)
        if will is not None:
            self.paho.will_set(**will)

        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_rc: Any = None
        self.connect_flags: Any = None
        self.connack_properties: Any = None
        self.disconnect_rc: Any = None
        self.messages: "queue.Queue[Received]" = queue.Queue()
        self.received: list[Received] = []
        self.acked: dict[int, float] = {}          # mid -> monotonic time of PUBACK/PUBCOMP
        self.subacks: dict[int, Any] = {}          # mid -> reason codes
        self.connected_at: float | None = None

        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_publish = self._on_publish
        self.paho.on_subscribe = self._on_subscribe

    # callbacks ------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code
        self.connect_flags = flags
        self.connack_properties = properties
        self.connected_at = time.monotonic()
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_rc = reason_code
        self.disconnected.set()

    def _on_message(self, client, userdata, msg):
        r = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain),
                     getattr(msg, "properties", None), mid=msg.mid)
        with self.lock:
            self.received.append(r)
        self.messages.put(r)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.acked[mid] = time.monotonic()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.lock:
            self.subacks[mid] = reason_codes

    # actions --------------------------------------------------------------
    def connect(self, timeout: float = 10.0, host: str = HOST) -> "Client":
        kwargs: dict = {}
        if self.version == V5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self.connect_properties
        self.paho.connect(host, self.port, keepalive=self.keepalive, **kwargs)
        self.paho.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise AssertionError(f"no CONNACK for {self.client_id} within {timeout}s")
        assert not self.connect_rc.is_failure, f"CONNECT refused: {self.connect_rc}"
        return self

    def subscribe(self, topic: str, qos: int = 0, timeout: float = 10.0) -> None:
        rc, mid = self.paho.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        codes = wait_for(lambda: self._suback(mid), timeout, what=f"SUBACK for {topic}")
        for code in codes:
            assert not code.is_failure, f"subscription to {topic} refused: {code}"

    def _suback(self, mid):
        with self.lock:
            return self.subacks.get(mid)

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        info = self.paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        return info

    def publish_wait(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                     properties: Properties | None = None, timeout: float = 10.0) -> int:
        """Publishes and waits until paho reports it complete (PUBACK/PUBCOMP for QoS>0)."""
        info = self.publish(topic, payload, qos, retain, properties)
        wait_for(lambda: self.is_acked(info.mid), timeout, what=f"on_publish of mid {info.mid} (QoS {qos})")
        return info.mid

    def is_acked(self, mid: int) -> bool:
        with self.lock:
            return mid in self.acked

    def expect_message(self, timeout: float = 10.0, topic: str | None = None) -> Received:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.client_id}: no message on {topic or 'any topic'} within {timeout}s")
            try:
                r = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if topic is None or r.topic == topic:
                return r

    def messages_on(self, topic: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.topic == topic]

    def disconnect(self, timeout: float = 5.0) -> None:
        self.paho.disconnect()
        self.disconnected.wait(timeout)
        self.paho.loop_stop()

    def stop(self) -> None:
        """Stops the network thread and closes the socket without ceremony."""
        try:
            self.paho.loop_stop()
        except Exception:  # noqa: BLE001
            pass
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def user_properties(pairs: list[tuple[str, str]], content_type: str | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = list(pairs)
    if content_type is not None:
        props.ContentType = content_type
    return props


# --------------------------------------------------------------------------
# Raw MQTT bytes, for clients that misbehave on purpose
# --------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive: int = 30, version: int = 4, properties: bytes = b"") -> bytes:
    """A minimal CONNECT (clean session, no will, no credentials); MQTT 5
    with `properties` (encoded, without their length)."""
    var = _str("MQTT") + bytes([version, 0x02]) + struct.pack("!H", keepalive)
    if version == 5:
        var += _varint(len(properties)) + properties
    body = var + _str(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, version: int = 4) -> bytes:
    """A QoS 0 PUBLISH."""
    body = _str(topic) + (b"\x00" if version == 5 else b"") + payload
    return b"\x30" + _varint(len(body)) + body


def raw_connect(port: int, client_id: str, keepalive: int = 30, version: int = 4,
                timeout: float = 5.0, properties: bytes = b"") -> socket.socket:
    """Opens a TCP connection, sends CONNECT and checks the CONNACK says yes."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.sendall(connect_packet(client_id, keepalive, version, properties))
    head = recv_exact(sock, 2)
    assert head[0] == 0x20, f"expected CONNACK, got {head!r}"
    rest = recv_exact(sock, head[1])
    assert rest[1] == 0, f"CONNACK refused: {rest!r}"
    return sock


def subscribe_packet(packet_id: int, topic_filter: str, options: int, version: int = 4) -> bytes:
    """A SUBSCRIBE for one filter; `options` is the QoS (and, MQTT 5, the
    subscription option bits)."""
    body = struct.pack("!H", packet_id) + (b"\x00" if version == 5 else b"") + _str(topic_filter) + bytes([options])
    return b"\x82" + _varint(len(body)) + body


def recv_packet(sock: socket.socket, timeout: float) -> tuple[int, int, bytes] | None:
    """One whole packet as (type, flags, body), or None if none starts within `timeout`."""
    sock.settimeout(timeout)
    try:
        first = sock.recv(1)
    except socket.timeout:
        return None
    if not first:
        raise AssertionError("the server closed the connection")
    sock.settimeout(10)
    length, shift = 0, 0
    while True:
        b = recv_exact(sock, 1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first[0] >> 4, first[0] & 0x0F, recv_exact(sock, length)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """Reads (and discards) until the peer closes; True when it did within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


class Player:
    """tests/e2e/device_player.py in a subprocess: a device that can be SIGKILLed."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "device_player.py"),
                                      json.dumps(spec)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def expect(self, line: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.proc.stdout.readline().strip()
            if got == line:
                return
            if not got and self.proc.poll() is not None:
                break
        raise AssertionError(f"device player never printed {line!r}; stderr: {self.proc.stderr.read()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def free_udp_port() -> int:
    """A port free on loopback now for UDP and for TCP too (libcoap's server
    listens on both at the same number and gives up when TCP is taken)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for both UDP and TCP on loopback after 100 tries")


class DeviceProcess:
    """A device in a process of its own (a CoAP server, a device script);
    `ready` is the start of the line it prints once it serves. Its output is
    drained (a full pipe would stop it) and its stderr kept for failures."""

    def __init__(self, args: list[str], ready: str | None, cwd: Path | None = None):
        import tempfile
        self.args = args
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     start_new_session=True, cwd=cwd)
        if ready is not None:
            line = self.proc.stdout.readline()
            if not line.startswith(ready):
                self.kill()
                self.stderr.seek(0)
                raise AssertionError(f"{' '.join(args)} did not start: {line!r} "
                                     f"{self.stderr.read()[-2000:].decode(errors='replace')}")
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
