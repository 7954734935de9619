"""Stopping under load: SIGTERM keeps every acknowledged message; SIGKILL leaves a
sound database that still holds (nearly) everything acknowledged."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import paho.mqtt.client as mqtt

from helpers import payload_of, unique, wait_for

MAX_MESSAGES = 60_000        # below paho's 16-bit message id wrap
MAX_OUTSTANDING = 2_000      # published but not yet acknowledged
MAX_SECONDS = 30


class Ingest:
    """A paho publisher at QoS 1 sending as fast as it can from a thread.

    Each payload carries a sequence number; PUBACKs are recorded (by message
    id, with the time they arrived) so the test knows what the server promised
    to keep.
    """

    def __init__(self, vigil, topic: str):
        self.topic = topic
        self.client = vigil.client(max_inflight=100)
        self.seq_of_mid: dict[int, int] = {}
        self.stop = threading.Event()
        self.published = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        paho = self.client.paho
        for seq in range(MAX_MESSAGES):
            while (self.published - len(self.client.acked) > MAX_OUTSTANDING
                   and not self.stop.is_set() and time.monotonic() < deadline):
                time.sleep(0.001)
            if self.stop.is_set() or time.monotonic() >= deadline or self.client.disconnected.is_set():
                return
            info = paho.publish(self.topic, json.dumps({"seq": seq}), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.error = f"publish rc {info.rc}"
                return
            self.seq_of_mid[info.mid] = seq
            self.published += 1

    def start(self) -> "Ingest":
        self.thread.start()
        return self

    def acks(self) -> int:
        with self.client.lock:
            return len(self.client.acked)

    def finish(self) -> dict[int, float]:
        """Stops publishing; returns {seq: ack time} of every acknowledged message."""
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "publisher thread did not stop"
        self.client.stop()
        with self.client.lock:
            acked = dict(self.client.acked)
        return {self.seq_of_mid[mid]: t for mid, t in acked.items()}


def _stored_seqs(vigil, topic: str) -> set[int]:
    return {json.loads(payload_of(m))["seq"] for m in vigil.all_messages(topic)}


def _ingest_until_busy(vigil, topic: str) -> Ingest:
    ing = Ingest(vigil, topic).start()
    t0 = time.monotonic()
    wait_for(lambda: ing.acks() >= 500 and time.monotonic() - t0 >= 1.0, 20,
             what="500 PUBACKs and 1 s of ingest")
    assert ing.thread.is_alive(), f"publisher stopped early: {ing.error}"
    return ing


def test_sigterm_during_ingest_keeps_every_acked_message(vigil):
    topic = f"{unique('term')}/seq"
    ing = _ingest_until_busy(vigil, topic)

    published_at_signal = ing.published
    rc = vigil.stop(sig=signal.SIGTERM)
    acked = ing.finish()
    assert rc == 0, f"exit code {rc} after SIGTERM during ingest\n{vigil.stderr()[-3000:]}"
    assert ing.published >= published_at_signal

    vigil.start()  # same data dir
    stored = _stored_seqs(vigil, topic)
    missing = sorted(set(acked) - stored)
    print(f"published {ing.published}, acked {len(acked)}, stored {len(stored)}")
    assert not missing, (f"{len(missing)} of {len(acked)} acknowledged messages were lost on SIGTERM, "
                         f"e.g. seq {missing[:10]}")


def test_kill9_during_ingest_leaves_a_sound_database(vigil):
    topic = f"{unique('kill')}/seq"
    ing = _ingest_until_busy(vigil, topic)

    killed_at = time.monotonic()
    vigil.kill()
    acked = ing.finish()
    assert vigil.returncode == -signal.SIGKILL

    con = sqlite3.connect(vigil.db_path, timeout=5)
    try:
        result = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    assert result == [("ok",)], f"integrity_check after kill -9: {result[:10]}"

    vigil.start()  # it must also come back up on that data dir
    stored = _stored_seqs(vigil, topic)
    recent = [s for s, t in acked.items() if t > killed_at - 0.5]
    kept = len(set(acked) & stored)
    print(f"published {ing.published}, acked {len(acked)} ({len(recent)} in the last 500 ms), "
          f"kept {kept}, stored {len(stored)}")
    assert kept >= len(acked) - len(recent), (
        f"kill -9 lost {len(acked) - kept} acknowledged messages; only the {len(recent)} acknowledged "
        f"in the last 500 ms before the kill may be lost")


def test_sigint_also_stops_cleanly_and_keeps_messages(vigil):
    topic = f"{unique('int')}/x"
    c = vigil.client()
    for i in range(10):
        c.publish_wait(topic, str(i), qos=1)
    c.stop()
    assert vigil.stop(sig=signal.SIGINT) == 0
    vigil.start()
    assert sorted(payload_of(m) for m in vigil.all_messages(topic)) == sorted(str(i).encode() for i in range(10))


def test_sigterm_right_after_ready_exits_zero(vigil_factory, tmp_path):
    """The ready line promises that SIGTERM now means a clean stop: no window where
    the signal's default action (death by SIGTERM) still applies."""
    for i in range(5):
        v = vigil_factory(data_dir=tmp_path / f"d{i}")
        rc = v.stop(sig=signal.SIGTERM)
        assert rc == 0, (f"run {i}: SIGTERM right after the ready line gave exit code {rc}\n"
                         f"stderr:\n{v.stderr()[-2000:]}")


def test_sigterm_with_live_http_clients_keeps_every_acked_message(vigil):
    """An open event stream and a client stuck halfway through its request must
    not keep Vigil from stopping in order."""
    import socket

    from helpers import SseStream

    topic = f"{unique('busy')}/seq"
    sse = SseStream(vigil.http_addr, "/api/events")
    stuck = socket.create_connection(vigil.http_addr, timeout=5)
    stuck.sendall(b"GET /api/devices HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    try:
        ing = _ingest_until_busy(vigil, topic)
        rc = vigil.stop(sig=signal.SIGTERM)
        acked = ing.finish()
        assert rc == 0, f"exit code {rc}\n{vigil.stderr()[-3000:]}"
    finally:
        sse.close()
        stuck.close()
    vigil.start()
    missing = sorted(set(acked) - _stored_seqs(vigil, topic))
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages were lost"
