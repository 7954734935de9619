"""Kept MQTT sessions (3.1.1 clean session 0; MQTT 5 clean start 0 with a
Session Expiry Interval) outlive a restart of Vigil, and end when MQTT 5
says: the subscriptions and the messages queued while the client was away
are stored in SQLite (MQTT 3.1.1 section 4.1, MQTT 5.0 sections 3.1.2.4,
3.1.2.11.2 and 4.1). Real clients: paho-mqtt over TCP and WebSocket."""

from __future__ import annotations

import sqlite3
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from helpers import V5, VERSIONS, unique, wait_for

TRANSPORTS = ["tcp", "websockets"]


def _props(packet: int, **values) -> Properties:
    props = Properties(packet)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _kept(version: str, expiry: int = 300) -> Properties | None:
    """What a client says to keep its session: MQTT 5 a Session Expiry
    Interval (3.1.1: clean session 0 alone)."""
    return _props(PacketTypes.CONNECT, SessionExpiryInterval=expiry) if version == "5" else None


def _client(vigil, version: str, client_id: str, transport: str = "tcp", clean: bool = False,
            expiry: int = 300, **kw):
    return vigil.client(version=VERSIONS[version], client_id=client_id, clean=clean,
                        connect_properties=_kept(version, expiry), transport=transport, **kw)


def _left(vigil, version: str, name: str, *, client_prefix: str = "kept", expiry: int = 300,
          qos: int = 1) -> tuple[str, str]:
    """A client with a kept session that subscribed to `<topic>/#` and left:
    its topic and client id."""
    topic, client_id = unique(name), unique(client_prefix)
    first = _client(vigil, version, client_id, expiry=expiry)
    first.subscribe(f"{topic}/#", qos=qos)
    first.disconnect()
    return topic, client_id


def _publish_numbered(vigil, topic: str, n: int):
    """Publishes `m0`, `m1`, ... at QoS 1 to `<topic>/<i>`; returns the publisher."""
    pub = vigil.client(version=V5)
    for i in range(n):
        pub.publish_wait(f"{topic}/{i}", f"m{i}".encode(), qos=1)
    return pub


def _queued_rows(vigil, client_id: str) -> int:
    with sqlite3.connect(f"file:{vigil.db_path}?mode=ro", uri=True, timeout=5) as db:
        return db.execute("SELECT count(*) FROM mqtt_session_queue WHERE client_id = ?",
                          (client_id,)).fetchone()[0]


def _payloads(client, topic_prefix: str) -> list[bytes]:
    with client.lock:
        return [m.payload for m in client.received if m.topic.startswith(topic_prefix)]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_kept_session_and_its_queue_survive_a_restart(vigil, version, transport):
    """Messages queued before the restart, and those published after it
    (the session's filters are subscribed again at start), reach the client
    when it returns, in order, at their QoS; the session is present."""
    topic = unique("restart")
    client_id = unique("kept")
    first = _client(vigil, version, client_id, transport)
    first.subscribe(f"{topic}/#", qos=2)
    first.disconnect()
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/a", b"before-1", qos=1)
    pub.publish_wait(f"{topic}/b", b"before-2", qos=2)
    vigil.restart()
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/c", b"after-1", qos=1)
    pub.publish_wait(f"{topic}/d", b"after-2", qos=2)
    back = _client(vigil, version, client_id, transport)
    assert back.connect_flags.session_present
    wait_for(lambda: len(_payloads(back, topic)) >= 4, 10, what="the four queued messages")
    # Sent in this order (packet ids rising); paho hands a QoS 2 message
    # over at its PUBREL, so it is listed after a later QoS 1 one.
    with back.lock:
        sent = sorted(back.received, key=lambda m: m.mid)
    assert [m.payload for m in sent] == [b"before-1", b"before-2", b"after-1", b"after-2"]
    assert [m.qos for m in sent] == [1, 2, 1, 2]
    # Still subscribed, without subscribing again; the queue is gone.
    pub.publish_wait(f"{topic}/e", b"live", qos=1)
    assert back.expect_message(timeout=10, topic=f"{topic}/e").payload == b"live"
    wait_for(lambda: _queued_rows(vigil, client_id) == 0, 10, what="the stored queue emptied")
    time.sleep(0.3)
    assert _payloads(back, topic).count(b"before-1") == 1


def test_queued_messages_outlive_a_crash(vigil):
    """SIGKILL while the client is away: what was queued was already in
    SQLite."""
    topic, client_id = _left(vigil, "3.1.1", "crash")
    _publish_numbered(vigil, topic, 5)
    wait_for(lambda: _queued_rows(vigil, client_id) == 5, 10, what="five queued rows in SQLite")
    vigil.close_clients()
    vigil.kill()
    vigil.start()
    back = _client(vigil, "3.1.1", client_id)
    assert back.connect_flags.session_present
    wait_for(lambda: len(_payloads(back, topic)) >= 5, 10, what="the five queued messages")
    assert _payloads(back, topic) == [f"m{i}".encode() for i in range(5)]


@pytest.mark.parametrize("across_restart", [False, True], ids=["running", "restarted"])
def test_mqtt5_session_expires_after_its_interval(vigil, across_restart):
    """[MQTT-3.1.2-23]: the session ends when the Session Expiry Interval
    has passed since the connection closed, also across a restart; what was
    queued for it goes too."""
    topic, client_id = _left(vigil, "5", "expiry", client_prefix="short", expiry=2)
    vigil.client(version=V5).publish_wait(f"{topic}/x", b"queued", qos=1)
    wait_for(lambda: _queued_rows(vigil, client_id) == 1, 10, what="the queued row")
    if across_restart:
        vigil.restart()
    time.sleep(2.8)
    back = _client(vigil, "5", client_id, expiry=2)
    assert not back.connect_flags.session_present
    time.sleep(0.5)
    assert back.received == []
    assert _queued_rows(vigil, client_id) == 0


def test_mqtt5_session_expiry_zero_ends_the_session_with_the_connection(vigil):
    """[MQTT-3.1.2-23]: clean start 0 without a Session Expiry Interval
    resumes a session but keeps none after (rumqttd alone kept it)."""
    client_id = unique("zero")
    topic = unique("zero")
    first = _client(vigil, "5", client_id, expiry=0)
    first.subscribe(f"{topic}/#", qos=1)
    first.disconnect()
    vigil.client(version=V5).publish_wait(f"{topic}/x", b"nobody's", qos=1)
    back = _client(vigil, "5", client_id, expiry=0)
    assert not back.connect_flags.session_present
    time.sleep(0.5)
    assert back.received == []


def test_mqtt5_clean_start_with_an_expiry_keeps_the_new_session(vigil):
    """MQTT 5 3.1.2.4: clean start 1 discards the old session, and with a
    Session Expiry Interval the new one is kept (rumqttd alone kept none)."""
    client_id = unique("fresh")
    topic = unique("fresh")
    old = _client(vigil, "5", client_id)
    old.subscribe(f"{topic}/old", qos=1)
    old.disconnect()
    new = _client(vigil, "5", client_id, clean=True)
    assert not new.connect_flags.session_present
    new.subscribe(f"{topic}/new", qos=1)
    new.disconnect()
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/old", b"old", qos=1)
    pub.publish_wait(f"{topic}/new", b"new", qos=1)
    back = _client(vigil, "5", client_id)
    assert back.connect_flags.session_present
    assert back.expect_message(timeout=10).payload == b"new"
    time.sleep(0.3)
    assert [m.payload for m in back.received] == [b"new"]


def test_mqtt5_disconnect_can_end_the_session(vigil):
    """[MQTT-3.14.2-2]: a DISCONNECT's Session Expiry Interval replaces the
    CONNECT's; 0 ends the session with the connection."""
    client_id = unique("bye")
    topic = unique("bye")
    first = _client(vigil, "5", client_id)
    first.subscribe(f"{topic}/#", qos=1)
    first.paho.disconnect(properties=_props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    first.disconnected.wait(5)
    first.paho.loop_stop()
    vigil.client(version=V5).publish_wait(f"{topic}/x", b"nobody's", qos=1)
    back = _client(vigil, "5", client_id)
    assert not back.connect_flags.session_present
    time.sleep(0.5)
    assert back.received == []


def test_a_queued_message_expires_while_it_waits_and_says_what_is_left(vigil):
    """[MQTT-3.3.2-5] and [MQTT-3.3.2-6] for messages queued across a
    restart: an expired one is not sent; another arrives with its Message
    Expiry Interval less the time it waited."""
    topic, client_id = _left(vigil, "5", "msg-expiry")
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/short", b"short", qos=1,
                     properties=_props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish_wait(f"{topic}/long", b"long", qos=1,
                     properties=_props(PacketTypes.PUBLISH, MessageExpiryInterval=100))
    vigil.restart()
    time.sleep(1.5)
    back = _client(vigil, "5", client_id)
    got = back.expect_message(timeout=10)
    assert got.payload == b"long"
    assert 90 <= got.properties.MessageExpiryInterval < 100
    time.sleep(0.3)
    assert [m.payload for m in back.received] == [b"long"]


def test_the_queue_of_an_absent_client_is_bounded(vigil_factory, tmp_path):
    """broker.max_queued_messages: past it, newer messages for the absent
    client are dropped (and logged); the oldest are kept, and others'
    messages are untouched."""
    config = tmp_path / "vigil.toml"
    config.write_text("[broker]\nmax_queued_messages = 3\n")
    vigil = vigil_factory(["--config", str(config)])
    topic, client_id = _left(vigil, "3.1.1", "bounded")
    live = vigil.client()
    live.subscribe(f"{topic}/#", qos=1)
    _publish_numbered(vigil, topic, 6)
    wait_for(lambda: len(live.received) == 6, 10, what="the live subscriber's six")
    back = _client(vigil, "3.1.1", client_id)
    wait_for(lambda: len(back.received) >= 3, 10, what="the three kept")
    time.sleep(0.3)
    assert _payloads(back, topic) == [b"m0", b"m1", b"m2"]
    assert "max_queued_messages" in vigil.stderr()


def test_a_returning_client_gets_no_more_queued_messages_than_its_receive_maximum(vigil):
    """[MQTT-3.3.4-9] for the queue: unanswered QoS 1 messages never exceed
    the client's Receive Maximum; all come, in order, as it answers."""
    topic, client_id = _left(vigil, "5", "recvmax")
    _publish_numbered(vigil, topic, 12)
    vigil.restart()
    connect = _props(PacketTypes.CONNECT, SessionExpiryInterval=300, ReceiveMaximum=2)
    back = vigil.client(version=V5, client_id=client_id, clean=False, connect_properties=connect,
                        connect=False)
    back.paho.manual_ack_set(True)
    back.connect()
    acked = 0
    deadline = time.monotonic() + 15
    while acked < 12 and time.monotonic() < deadline:
        time.sleep(0.3)
        with back.lock:
            pending = back.received[acked:]
        # Never more unanswered than the Receive Maximum.
        assert len(pending) <= 2, [m.payload for m in pending]
        for m in pending:
            back.paho.ack(m.mid, m.qos)
            acked += 1
    assert _payloads(back, topic) == [f"m{i}".encode() for i in range(12)]


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_messages_a_connected_client_had_not_finished_survive_a_restart(vigil, version):
    """When Vigil stops while a client with a kept session is connected, the
    messages the router still held for it (sent and not yet acknowledged;
    MQTT 5: held back by its Receive Maximum) are stored with the session
    and sent again when it returns (MQTT 4.4: QoS 1 may come twice, never
    not at all)."""
    topic = unique("inflight")
    client_id = unique("kept")
    connect = _kept(version)
    if version == "5":
        connect.ReceiveMaximum = 1
    first = vigil.client(version=VERSIONS[version], client_id=client_id, clean=False,
                         connect_properties=connect, connect=False)
    first.paho.manual_ack_set(True)
    first.connect()
    first.subscribe(f"{topic}/#", qos=1)
    _publish_numbered(vigil, topic, 3)
    wait_for(lambda: len(first.received) >= 1, 10, what="the first message, unanswered")
    vigil.restart()
    first.stop()
    back = _client(vigil, version, client_id)
    assert back.connect_flags.session_present
    wait_for(lambda: len(_payloads(back, topic)) >= 3, 10, what="the three unfinished messages")
    assert _payloads(back, topic) == [b"m0", b"m1", b"m2"]


def test_the_api_lists_absent_clients_with_what_waits_for_them(vigil):
    """`GET /api/broker` names the clients away whose sessions are kept, the
    messages waiting for each and when the session ends; also after a
    restart, and no more once the client is back."""
    topic = unique("listed")
    forever, hour = unique("kept"), unique("hour")
    for client_id, version, expiry in ((forever, "3.1.1", 0), (hour, "5", 3600)):
        c = _client(vigil, version, client_id, expiry=expiry)
        c.subscribe(f"{topic}/#", qos=1)
        c.disconnect()
    pub = vigil.client(version=V5)
    for i in range(2):
        pub.publish_wait(f"{topic}/{i}", b"x", qos=1)

    def absent():
        return {a["client_id"]: a for a in vigil.http_get_json("/api/broker")["absent"]}

    for _ in range(2):
        listed = wait_for(lambda: (a := absent()) and all(a.get(c, {}).get("queued") == 2 for c in (forever, hour)) and a,
                          10, what="both absent clients with two messages each")
        assert listed[forever]["expires_at"] is None
        ends_in = listed[hour]["expires_at"] - listed[hour]["away_since"]
        assert 3590e6 <= ends_in <= 3600e6, ends_in
        vigil.restart()
    _client(vigil, "3.1.1", forever)
    wait_for(lambda: forever not in absent(), 10, what="the returned client off the list")
    assert hour in absent()


def test_a_delayed_will_of_a_kept_session_is_still_sent(vigil):
    """MQTT 5 3.1.3.2.2: the will goes after its Will Delay Interval (or when
    the session ends, if sooner) unless the client returns first. The
    stand-in that keeps the session logs in only then, since a login under
    the client's id cancels the will."""
    topic = unique("delayed-will")
    watcher = vigil.client(version=V5)
    watcher.subscribe(topic, qos=1)
    will = {"topic": topic, "payload": b"gone", "qos": 1,
            "properties": _props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)}
    client_id = unique("kept")
    dying = _client(vigil, "5", client_id, will=will)
    dying.subscribe(f"{topic}/x/#", qos=1)
    lost_at = time.monotonic()
    dying.stop()  # the socket closes without DISCONNECT
    got = watcher.expect_message(timeout=10, topic=topic)
    assert got.payload == b"gone"
    assert time.monotonic() - lost_at >= 1.5, "the will came before its delay"
    # The session is kept all the same, and queues from then on.
    vigil.client(version=V5).publish_wait(f"{topic}/x/1", b"queued", qos=1)
    back = _client(vigil, "5", client_id)
    assert back.connect_flags.session_present
    assert back.expect_message(timeout=10, topic=f"{topic}/x/1").payload == b"queued"


def test_a_late_answer_to_a_queued_message_does_not_cost_the_connection(vigil):
    """A returning client that answers a queued message only after the front
    door stopped waiting for it (1.5 × its keepalive) stays connected: that
    answer is the front door's, and rumqttd would drop a connection for an
    acknowledgement it never asked for."""
    import socket
    import struct

    from helpers import HOST, _str, _varint, recv_packet

    topic, client_id = _left(vigil, "5", "late")
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/queued", b"queued", qos=1)
    wait_for(lambda: _queued_rows(vigil, client_id) == 1, 10, what="the queued row")
    # Clean start 0, keepalive 1 s, Session Expiry Interval 300.
    props = b"\x11" + struct.pack("!I", 300)
    body = (_str("MQTT") + bytes([5, 0x00]) + struct.pack("!H", 1) + _varint(len(props)) + props
            + _str(client_id))
    sock = socket.create_connection((HOST, vigil.mqtt_port), timeout=5)
    try:
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        kind, _, connack = recv_packet(sock, 5)
        assert kind == 2 and connack[0] & 1 and connack[1] == 0, connack
        kind, flags, publish = recv_packet(sock, 5)
        assert kind == 3 and (flags >> 1) & 3 == 1
        n = struct.unpack("!H", publish[:2])[0]
        packet_id = publish[2 + n:4 + n]
        # Unanswered past 1.5 × keepalive, pinging meanwhile.
        for _ in range(5):
            sock.sendall(b"\xC0\x00")
            assert recv_packet(sock, 2)[0] == 13
            time.sleep(0.5)
        sock.sendall(b"\x40\x02" + packet_id)
        pub.publish_wait(f"{topic}/live", b"live", qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sock.sendall(b"\xC0\x00")
            got = recv_packet(sock, 1)
            if got and got[0] == 3:
                assert b"live" in got[2]
                break
        else:
            raise AssertionError("the live message did not come")
    finally:
        sock.close()
