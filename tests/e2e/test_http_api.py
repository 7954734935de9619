"""The HTTP API of `vigil serve` (docs/API.md): devices, metric series, messages,
publishing over HTTP, errors, stats, and the live event stream (SSE)."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import pytest

import conftest
from helpers import (V311, V5, SseStream, b64, now_us, payload_of, query, raw_connect, unique,
                     wait_for)

HOUR_US = 3600 * 1_000_000


def _near_now(us: int, slack_s: float = 120) -> bool:
    return abs(us - now_us()) < slack_s * 1_000_000


def test_healthz(vigil):
    r = vigil.http("GET", "/healthz")
    assert r.status == 200
    assert r.body.strip() == b"ok"


def test_ready_line_is_the_only_stdout_and_names_real_listeners(vigil):
    ready = vigil.ready
    assert ready["ws_path"] == "/mqtt"
    assert Path(ready["data_dir"]).resolve() == vigil.data_dir.resolve()
    for key in ("mqtt", "ws", "http"):
        host, port = conftest._addr(ready[key])
        assert host == "127.0.0.1" and port != 0, ready
        socket.create_connection((host, port), timeout=5).close()
    vigil.stop_ok()
    assert vigil.more_stdout() == [], "vigil serve printed more than its one ready line on stdout"
    assert vigil.db_path.exists(), "no <data-dir>/vigil.db"


def test_settings_from_environment(vigil_factory, tmp_path):
    data = tmp_path / "from-env"
    v = vigil_factory.new(env={"VIGIL_DATA_DIR": str(data), "VIGIL_MQTT_LISTEN": "127.0.0.1:0",
                               "VIGIL_WS_LISTEN": "127.0.0.1:0", "VIGIL_HTTP_LISTEN": "127.0.0.1:0",
                               "VIGIL_MAX_PAYLOAD": "1000"})
    v.start(cmd=[str(conftest.VIGIL_BIN), "serve"])
    assert Path(v.ready["data_dir"]).resolve() == data.resolve()
    topic = f"{unique('env')}/x"
    c = v.client()
    c.publish_wait(topic, b"x" * 1000, qos=1)
    v.wait_stored(topic, 1)
    c.paho.publish(topic, b"x" * 1001, qos=1)
    assert c.disconnected.wait(10), "VIGIL_MAX_PAYLOAD=1000 was not applied"
    v.stop_ok()
    assert (data / "vigil.db").exists()


def test_devices_list_and_detail(vigil):
    base = unique("home")
    names = [f"{base}-c", f"{base}-a", f"{base}-b"]
    c = vigil.client()
    t0 = now_us()
    c.publish_wait(f"{names[0]}/temp", b"21.5", qos=1)
    c.publish_wait(f"{names[0]}/temp", b"22.5", qos=1)
    c.publish_wait(f"{names[1]}/env", json.dumps({"humidity": 40, "air": {"co2": 612}, "label": "x"}), qos=1)
    c.publish_wait(f"{names[2]}/switch", b"ON", qos=1)

    def listed():
        devices = vigil.http_get_json("/api/devices")
        mine = {d["id"]: d for d in devices if d["id"].startswith(base)}
        return devices if len(mine) == 3 and mine[names[0]]["message_count"] == 2 else None

    devices = wait_for(listed, 10, what="three devices in /api/devices")
    ids = [d["id"] for d in devices]
    assert ids == sorted(ids), f"/api/devices is not ordered by id: {ids}"

    kitchen = vigil.http_get_json(f"/api/devices/{names[0]}")
    assert kitchen["id"] == names[0]
    assert kitchen["message_count"] == 2
    assert t0 - 1_000_000 <= kitchen["first_seen"] <= kitchen["last_seen"] <= now_us() + 1_000_000
    assert _near_now(kitchen["last_seen"])
    temp = {m["name"]: m for m in kitchen["metrics"]}["temp"]
    assert temp["value"] == 22.5, "a device's metric shows its latest value"
    assert _near_now(temp["at"])

    env = vigil.http_get_json(f"/api/devices/{names[1]}")
    assert {m["name"]: m["value"] for m in env["metrics"]} == {"env.humidity": 40, "env.air.co2": 612}

    switch = vigil.http_get_json(f"/api/devices/{names[2]}")
    assert {m["name"]: m["value"] for m in switch["metrics"]} == {"switch": 1}


def test_metric_series(vigil):
    device = unique("sensor")
    c = vigil.client()
    t_from = now_us() - 1_000_000
    for v in range(1, 11):
        c.publish_wait(f"{device}/temp", str(v), qos=1)

    path = f"/api/devices/{device}/metrics/temp"

    def series():
        s = vigil.http_get_json(path)
        return s if sum(p["count"] for p in s["points"]) == 10 else None

    s = wait_for(series, 10, what="10 samples in the default series")
    assert s["device"] == device and s["metric"] == "temp"
    assert s["to"] - s["from"] == HOUR_US, "default range is the last hour"
    assert _near_now(s["to"])
    assert min(p["min"] for p in s["points"]) == 1
    assert max(p["max"] for p in s["points"]) == 10
    assert s["bucket"] > 0

    t_to = now_us() + 1_000_000
    one = vigil.http_get_json(query(path, **{"from": t_from, "to": t_to, "max_points": 1}))
    assert one["from"] == t_from and one["to"] == t_to
    assert len(one["points"]) == 1, one
    [p] = one["points"]
    assert (p["count"], p["min"], p["max"]) == (10, 1, 10)
    assert p["avg"] == pytest.approx(5.5)
    assert t_from <= p["at"] <= t_to

    three = vigil.http_get_json(query(path, **{"from": t_from, "to": t_to, "max_points": 3}))
    assert 1 <= len(three["points"]) <= 3
    assert sum(p["count"] for p in three["points"]) == 10
    ats = [p["at"] for p in three["points"]]
    assert ats == sorted(ats)

    # A window before the samples holds none.
    empty = vigil.http_get_json(query(path, **{"from": t_from - HOUR_US, "to": t_from - 1}))
    assert sum(p["count"] for p in empty["points"]) == 0


def test_messages_newest_first_and_paging(vigil):
    device = unique("pager")
    topic = f"{device}/seq"
    c = vigil.client()
    for i in range(5):
        c.publish_wait(topic, f"m{i}", qos=1)
    c.publish_wait(f"{device}/other", b"last", qos=1)
    vigil.wait_stored(f"{device}/other", 1)
    vigil.wait_stored(topic, 5)

    [latest] = vigil.messages(limit=1)
    assert latest["topic"] == f"{device}/other", "limit=1 is the latest message"

    msgs = vigil.messages(topic=topic)
    assert [m["payload_text"] for m in msgs] == ["m4", "m3", "m2", "m1", "m0"]
    ids = [m["id"] for m in msgs]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 5
    ats = [m["at"] for m in msgs]
    assert ats == sorted(ats, reverse=True)
    assert all(_near_now(a) for a in ats)

    [newest] = vigil.messages(topic=topic, limit=1)
    assert newest["payload_text"] == "m4"

    page = vigil.messages(topic=topic, limit=2, before=msgs[1]["id"])
    assert [m["payload_text"] for m in page] == ["m2", "m1"]
    page = vigil.messages(topic=topic, limit=2, before=page[-1]["id"])
    assert [m["payload_text"] for m in page] == ["m0"]
    assert vigil.messages(topic=topic, before=msgs[-1]["id"]) == []

    by_device = vigil.messages(device=device)
    assert len(by_device) == 6 and all(m["device"] == device for m in by_device)
    assert by_device[0]["topic"] == f"{device}/other"


@pytest.mark.parametrize("form", ["text", "base64"])
def test_http_publish_reaches_subscriber_and_is_stored(vigil, form):
    topic = f"{unique('http')}/cmd"
    sub = vigil.client(version=V5)
    sub.subscribe(topic, qos=2)
    if form == "text":
        payload = "héllo from HTTP".encode()
        body = {"topic": topic, "payload": payload.decode(), "qos": 0}
        qos, retain = 0, False
    else:
        payload = bytes(range(256))
        body = {"topic": topic, "payload_base64": b64(payload), "qos": 2, "retain": True}
        qos, retain = 2, True

    assert vigil.http_post_json("/api/publish", body) == {"ok": True}
    got = sub.expect_message(timeout=10, topic=topic)
    assert got.payload == payload
    # At the QoS asked for (the subscription's is 2): MQTT's minimum.
    assert got.qos == qos

    [stored] = vigil.wait_stored(topic, 1)
    assert payload_of(stored) == payload
    assert stored["qos"] == qos and stored["retain"] is retain
    assert stored["payload_text"] == (payload.decode() if form == "text" else None)

    if retain:
        late = vigil.client()
        late.subscribe(topic, qos=1)
        got = late.expect_message(timeout=10, topic=topic)
        assert got.payload == payload and got.retain


@pytest.mark.parametrize("version", [V311, V5], ids=["3.1.1", "5"])
def test_http_publish_reaches_each_subscriber_at_the_smaller_qos(vigil, version):
    """MQTT 3.1.1 4.3 / 5.0 3.8.4: a message goes at the smaller of the QoS
    it was published with and the QoS granted, also when Vigil publishes it
    (the router alone sent it at the granted QoS); a retained one taken back
    after a restart keeps its QoS too."""
    topic = unique("http-qos")
    subs = {granted: vigil.client(version=version) for granted in (0, 1, 2)}
    for granted, sub in subs.items():
        sub.subscribe(f"{topic}/#", qos=granted)
    for asked in (0, 1, 2):
        body = {"topic": f"{topic}/{asked}", "payload": str(asked), "qos": asked}
        assert vigil.http_post_json("/api/publish", body) == {"ok": True}
    for granted, sub in subs.items():
        wait_for(lambda: len(sub.received) == 3, 10, what=f"three messages at granted QoS {granted}")
        got = {m.topic.rsplit("/", 1)[1]: m.qos for m in sub.received}
        assert got == {str(asked): min(asked, granted) for asked in (0, 1, 2)}, (granted, got)
    body = {"topic": f"{topic}/kept", "payload": "kept", "qos": 1, "retain": True}
    assert vigil.http_post_json("/api/publish", body) == {"ok": True}
    vigil.wait_stored(f"{topic}/kept", 1)
    vigil.restart()
    late = vigil.client(version=version)
    late.subscribe(f"{topic}/kept", qos=2)
    got = late.expect_message(timeout=10, topic=f"{topic}/kept")
    assert (got.payload, got.qos, got.retain) == (b"kept", 1, True)


def _assert_json_error(r, status: int | tuple[int, int], what: str):
    if isinstance(status, int):
        assert r.status == status, f"{what}: status {r.status} (want {status}), body {r.body[:300]!r}"
    else:
        assert status[0] <= r.status <= status[1], f"{what}: status {r.status}, body {r.body[:300]!r}"
    assert "json" in r.headers.get("content-type", ""), f"{what}: error is not JSON: {r.headers} {r.body[:300]!r}"
    err = r.json()
    assert isinstance(err, dict) and isinstance(err.get("error"), str) and err["error"].strip(), \
        f"{what}: error body {err!r}"


def test_bad_requests_give_json_errors(vigil):
    device = unique("known")
    c = vigil.client()
    c.publish_wait(f"{device}/temp", b"1", qos=1)
    vigil.wait_for(lambda: vigil.http("GET", f"/api/devices/{device}").status == 200, 10, what="the device")
    metric = f"/api/devices/{device}/metrics/temp"

    _assert_json_error(vigil.http("GET", f"/api/devices/{unique('nobody')}"), 404, "unknown device")
    _assert_json_error(vigil.http("GET", metric + "?max_points=abc"), 400, "max_points=abc")
    _assert_json_error(vigil.http("GET", metric + "?max_points=-5"), 400, "max_points=-5")
    _assert_json_error(vigil.http("GET", metric + "?from=yesterday"), 400, "from=yesterday")
    _assert_json_error(vigil.http("GET", "/api/messages?limit=many"), 400, "limit=many")
    _assert_json_error(vigil.http("POST", "/api/publish", raw_body=b"{not json",
                                  headers={"Content-Type": "application/json"}), (400, 422), "invalid JSON")
    _assert_json_error(vigil.http("POST", "/api/publish", {"payload": "no topic"}), (400, 422), "no topic")
    _assert_json_error(vigil.http("POST", "/api/publish", {"topic": "a/#", "payload": "x"}), (400, 422),
                       "wildcard topic")
    _assert_json_error(vigil.http("POST", "/api/publish", {"topic": "$SYS/x", "payload": "x"}), (400, 422),
                       "$ topic (the server's, MQTT 4.7.2)")
    _assert_json_error(vigil.http("POST", "/api/publish", {"topic": "a/b", "payload": "x", "qos": 3}),
                       (400, 422), "qos 3")
    _assert_json_error(vigil.http("POST", "/api/publish", {"topic": "a/b", "payload_base64": "***"}),
                       (400, 422), "bad base64")
    # The server is still fine.
    assert vigil.http_get_json(f"/api/devices/{device}")["id"] == device


def test_stats_count_what_happened(vigil):
    device = unique("stat")
    c = vigil.client()
    for i in range(3):
        c.publish_wait(f"{device}/v", str(i), qos=1)

    stats = wait_for(lambda: (lambda s: s if s["messages"] >= 3 else None)(vigil.http_get_json("/api/stats")),
                     10, what="3 messages in /api/stats")
    assert stats["messages"] == 3
    assert stats["received"] >= 3
    assert stats["devices"] == 1
    assert stats["samples"] == 3
    assert stats["connections"] >= 1, "the publisher is still connected"
    assert stats["db_bytes"] > 0


def test_sse_message_event(vigil):
    sse = SseStream(vigil.http_addr, "/api/events?types=message")
    try:
        assert sse.status == 200
        assert sse.content_type.startswith("text/event-stream"), sse.content_type
        device = unique("live")
        topic = f"{device}/temp"
        c = vigil.client(version=V5)
        c.publish_wait(topic, b"23.5", qos=1, retain=True)
        name, data = sse.next_matching(lambda n, d: n == "message" and isinstance(d, dict) and d.get("topic") == topic,
                                       10, what=f"a message event for {topic}")
        assert data["device"] == device
        assert data["client_id"] == c.client_id
        assert data["qos"] == 1 and data["retain"] is True and data["size"] == 4
        assert _near_now(data["at"])
    finally:
        sse.close()


def test_sse_connection_events_tell_clean_from_dropped(vigil):
    sse = SseStream(vigil.http_addr, "/api/events?types=connection")
    try:
        assert sse.status == 200

        def conn_event(client_id, outcome):
            return sse.next_matching(
                lambda n, d: n == "connection" and isinstance(d, dict)
                and d.get("client_id") == client_id and d.get("outcome") == outcome,
                10, what=f"connection event {outcome} for {client_id}")[1]

        polite = vigil.client(version=V5, connect=False, client_id=unique("polite"))
        polite.paho.username_pw_set("alice", "s3cret-pw")
        polite.connect()
        polite.publish_wait(f"{unique('sse')}/x", b"1", qos=1)  # a message event must not pass the filter
        ev = conn_event(polite.client_id, "connected")
        assert ev["transport"] == "tcp" and ev["version"] == "5"
        assert ev["username"] == "alice"
        assert "s3cret-pw" not in json.dumps(ev)
        assert _near_now(ev["at"])
        assert ev["peer"].startswith("127.0.0.1:")
        polite.disconnect()
        clean = conn_event(polite.client_id, "disconnected")
        assert clean["reason"] and "clean" in clean["reason"].lower(), clean

        rude_id = unique("rude")
        s = raw_connect(vigil.mqtt_port, rude_id, version=4)
        ev = conn_event(rude_id, "connected")
        assert ev["version"] == "3.1.1" and ev["username"] is None
        s.close()  # no DISCONNECT
        dropped = conn_event(rude_id, "disconnected")
        assert dropped["reason"], dropped
        assert dropped["reason"] != clean["reason"] and "clean" not in dropped["reason"].lower(), dropped

        web = vigil.client(transport="websockets", client_id=unique("web"))
        ev = conn_event(web.client_id, "connected")
        assert ev["transport"] == "ws"

        others = [(n, d) for n, d in sse.history if n not in ("connection", "resync")]
        assert others == [], f"types=connection let through {others}"
    finally:
        sse.close()


def test_sse_default_stream_has_messages_and_flushes(vigil):
    sse = SseStream(vigil.http_addr, "/api/events")
    try:
        topic = f"{unique('all')}/x"
        c = vigil.client()
        c.publish_wait(topic, b"42", qos=1)
        sse.next_matching(lambda n, d: n == "message" and d.get("topic") == topic, 10, what="message event")
        [stored] = vigil.wait_stored(topic, 1)
        name, flushed = sse.find(lambda n, d: n == "flushed" and d["last_message_id"] >= stored["id"], 10,
                                 what=f"a flushed event covering message {stored['id']}")
        assert flushed["rows"] >= 1
        assert _near_now(flushed["committed_at"])
        assert flushed["oldest_received"] <= flushed["committed_at"]
    finally:
        sse.close()


def test_a_new_data_folder_is_private(vigil_factory, tmp_path):
    """The database holds every message (patients' readings among them): a data
    folder Vigil creates is readable by its owner only."""
    data_dir = tmp_path / "fresh" / "vigil"
    vigil_factory(data_dir=data_dir)
    for folder in (data_dir, data_dir.parent):
        mode = folder.stat().st_mode & 0o777
        assert mode == 0o700, f"{folder} has mode {oct(mode)}"
    assert (data_dir / "vigil.db").exists()
