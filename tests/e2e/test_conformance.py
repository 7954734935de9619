"""MQTT conformance basics at Vigil's front door, with real clients (paho-mqtt)."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from helpers import V311, V5, VERSIONS, payload_of, random_bytes, unique, user_properties, wait_for

HERE = Path(__file__).resolve().parent


def test_keepalive_zero_is_accepted(vigil):
    topic = f"{unique('ka0')}/value"
    c = vigil.client(keepalive=0)
    assert c.connect_rc == 0
    c.publish_wait(topic, b"1", qos=1)
    # Keepalive 0 means "no keepalive": the server must not time the client out.
    time.sleep(1.0)
    assert not c.disconnected.is_set(), f"server dropped a keepalive=0 client: {c.disconnect_rc}"
    c.publish_wait(topic, b"2", qos=1)
    stored = vigil.wait_stored(topic, 2)
    assert sorted(payload_of(m) for m in stored) == [b"1", b"2"]
    assert all(m["client_id"] == c.client_id for m in stored)


def _spawn_will_client(port: int, version: str, client_id: str, topic: str, payload: bytes,
                       mode: str = "idle") -> subprocess.Popen:
    args = [sys.executable, str(HERE / "will_client.py"), str(port), version, client_id, topic, payload.hex()]
    if mode == "clean":
        args.append("clean")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if ready else b"(nothing within 15 s)"
    if line.strip() != b"connected":
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"will client did not connect: {line!r} {err.decode(errors='replace')}")
    return proc


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_will_is_sent_when_client_is_killed(vigil, version):
    base = unique("will")
    will_topic = f"{base}/status"
    will_payload = b"offline:" + random_bytes(16).hex().encode()
    client_id = unique("dying")
    sub = vigil.client(version=VERSIONS[version])
    sub.subscribe(will_topic, qos=1)

    proc = _spawn_will_client(vigil.mqtt_port, version, client_id, will_topic, will_payload)
    try:
        proc.kill()  # SIGKILL: the socket closes without DISCONNECT
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()

    got = sub.expect_message(timeout=10, topic=will_topic)
    assert got.payload == will_payload

    [stored] = vigil.wait_stored(will_topic, 1)
    assert payload_of(stored) == will_payload
    assert stored["properties"] is not None and stored["properties"].get("will") is True, stored
    assert stored["client_id"] == client_id
    assert stored["qos"] == 1
    assert stored["device"] == base


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_clean_disconnect_sends_no_will(vigil, version):
    base = unique("nowill")
    will_topic = f"{base}/status"
    marker = f"{base}/marker"
    sub = vigil.client(version=VERSIONS[version])
    sub.subscribe(f"{base}/#", qos=1)

    leaver = vigil.client(version=VERSIONS[version],
                          will=dict(topic=will_topic, payload=b"gone", qos=1, retain=False))
    leaver.disconnect()
    assert leaver.disconnected.is_set()

    # Anything the server did on that DISCONNECT happened before it handles a
    # later publish from another client: once the marker arrives, a will would have too.
    other = vigil.client(version=VERSIONS[version])
    other.publish_wait(marker, b"after", qos=1)
    sub.expect_message(timeout=10, topic=marker)
    vigil.wait_stored(marker, 1)
    time.sleep(0.3)
    assert sub.messages_on(will_topic) == [], "a will was sent after a clean DISCONNECT"
    assert vigil.messages(topic=will_topic) == []


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_retained_message_reaches_later_subscriber(vigil, version):
    topic = f"{unique('ret')}/state"
    payload = b"retained-" + random_bytes(8).hex().encode()
    pub = vigil.client(version=VERSIONS[version])
    pub.publish_wait(topic, payload, qos=1, retain=True)
    pub.disconnect()

    late = vigil.client(version=VERSIONS[version])
    late.subscribe(topic, qos=1)
    got = late.expect_message(timeout=10, topic=topic)
    assert got.payload == payload
    assert got.retain is True

    [stored] = vigil.wait_stored(topic, 1)
    assert stored["retain"] is True
    assert payload_of(stored) == payload


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_qos2_flow_completes_exactly_once(vigil, version):
    base = unique("qos2")
    topic = f"{base}/n"
    sub = vigil.client(version=VERSIONS[version])
    sub.subscribe(f"{base}/#", qos=2)
    pub = vigil.client(version=VERSIONS[version])

    payloads = [f"msg-{i}".encode() for i in range(20)]
    for p in payloads:
        pub.publish_wait(topic, p, qos=2)  # on_publish fires only after PUBCOMP

    wait_for(lambda: len(sub.messages_on(topic)) >= len(payloads), 10, what="20 QoS 2 deliveries")
    # A marker after them: any duplicate would arrive before it.
    pub.publish_wait(f"{base}/marker", b"end", qos=2)
    sub.expect_message(timeout=10, topic=f"{base}/marker")
    got = sub.messages_on(topic)
    assert [r.payload for r in got] == payloads, "QoS 2 must deliver each message exactly once, in order"
    assert all(r.qos == 2 for r in got)

    stored = vigil.wait_stored(topic, len(payloads))
    assert len(stored) == len(payloads), "each QoS 2 message stored once"
    assert [payload_of(m) for m in reversed(stored)] == payloads
    assert all(m["qos"] == 2 for m in stored)


def test_mqtt5_user_properties_pass_through_and_are_stored(vigil):
    topic = f"{unique('props')}/reading"
    pairs = [("source", "lab"), ("unit", "°C"), ("source", "second value, same name")]
    sub = vigil.client(version=V5)
    sub.subscribe(topic, qos=1)
    pub = vigil.client(version=V5)
    pub.publish_wait(topic, b'{"t": 21.5}', qos=1,
                     properties=user_properties(pairs, content_type="application/json"))

    got = sub.expect_message(timeout=10, topic=topic)
    assert got.payload == b'{"t": 21.5}'
    assert list(got.properties.UserProperty) == pairs
    assert got.properties.ContentType == "application/json"

    [stored] = vigil.wait_stored(topic, 1)
    props = stored["properties"]
    assert props is not None, stored
    assert props.get("user_properties") == [{"name": n, "value": v} for n, v in pairs]
    assert props.get("content_type") == "application/json"
    assert not props.get("will")


def test_v311_message_has_no_user_properties(vigil):
    topic = f"{unique('noprops')}/x"
    c = vigil.client(version=V311)
    c.publish_wait(topic, b"plain", qos=1)
    [stored] = vigil.wait_stored(topic, 1)
    props = stored["properties"]
    assert props is None or not props.get("user_properties"), stored
    assert props is None or not props.get("will"), stored


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_delivery_qos_is_the_minimum_of_published_and_granted(vigil, version, transport):
    """MQTT 3.1.1 [MQTT-3.8.4-6] and 5.0 section 3.8.4: a message goes to a
    subscriber at the smaller of the QoS it was published with and the QoS
    the subscription was granted (rumqttd alone sent the granted one). Every
    flow completes: the front door finishes the router's side of a QoS it
    lowered, in the router's order, and the messages keep coming."""
    topic = unique("qosmin")
    subs = {}
    for granted in (0, 1, 2):
        subs[granted] = vigil.client(version=VERSIONS[version], transport=transport)
        subs[granted].subscribe(f"{topic}/#", qos=granted)
    pub = vigil.client(version=VERSIONS[version], transport=transport)
    rounds = 40  # 120 router flows a subscriber: more than the 100 the router keeps unanswered
    for i in range(rounds):
        for published in (0, 1, 2):
            pub.publish_wait(f"{topic}/{published}", f"{i}".encode(), qos=published)
    for granted, sub in subs.items():
        wait_for(lambda: len(sub.received) >= 3 * rounds, 20, what=f"{3 * rounds} messages at granted QoS {granted}")
        for published in (0, 1, 2):
            got = sub.messages_on(f"{topic}/{published}")
            assert {m.qos for m in got} == {min(published, granted)}, (published, granted, {m.qos for m in got})
            assert sorted(int(m.payload) for m in got) == list(range(rounds)), (published, granted)
        assert not sub.disconnected.is_set()


def test_mqtt5_client_without_an_id_is_named_by_the_server_and_leaves_cleanly(vigil):
    """MQTT 5 sections 3.1.3.1 and 3.2.2.3.7: a client may connect with an
    empty client id; the server assigns one and says which in the CONNACK's
    Assigned Client Identifier. (Before the front door assigned it, the router
    did, and then held such clients 5 s after their DISCONNECT.)"""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    topic = f"{unique('noid')}/value"
    connack = {}
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        connack.update(rc=reason_code, properties=properties)
        connected.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    c.on_connect = on_connect
    c.connect("127.0.0.1", vigil.mqtt_port)
    c.loop_start()
    try:
        assert connected.wait(10), "no CONNACK"
        assert connack["rc"] == 0, connack
        assigned = getattr(connack["properties"], "AssignedClientIdentifier", None)
        assert assigned and assigned.startswith("auto-"), connack
        c.publish(topic, b"1", qos=1).wait_for_publish(10)
        [stored] = vigil.wait_stored(topic, 1)
        assert stored["client_id"] == assigned
        clients = lambda: [x["client_id"] for x in vigil.http_get_json("/api/broker")["clients"]]  # noqa: E731
        assert assigned in clients()
        c.disconnect()
    finally:
        c.loop_stop()
    vigil.wait_for(lambda: assigned not in clients(), timeout=2, what="the client gone from the broker's list")
    assert "did not close the connection" not in vigil.stderr()


def _alias(n: int):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = n
    return props


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_topic_aliases_from_a_client_stand_for_their_topics(vigil, transport):
    """MQTT 5 section 3.3.2.3.4: the server says how many aliases a client may
    set (Topic Alias Maximum in the CONNACK); a PUBLISH with a topic and an
    alias sets it, one with an empty topic and the alias means that topic.
    Subscribers and the store see the real topic."""
    base = unique("alias")
    sub = vigil.client(version=V5, transport=transport)
    sub.subscribe(f"{base}/#", qos=1)
    pub = vigil.client(version=V5, transport=transport)
    assert pub.connack_properties.TopicAliasMaximum == 64
    sent = [(f"{base}/a", 1, b"1"), ("", 1, b"2"), (f"{base}/b", 2, b"3"), ("", 1, b"4"), ("", 2, b"5"),
            (f"{base}/c", 1, b"6"), ("", 1, b"7")]
    for topic, alias, payload in sent:
        pub.publish_wait(topic, payload, qos=1, properties=_alias(alias))
    expected = [(f"{base}/a", b"1"), (f"{base}/a", b"2"), (f"{base}/b", b"3"), (f"{base}/a", b"4"),
                (f"{base}/b", b"5"), (f"{base}/c", b"6"), (f"{base}/c", b"7")]
    got = [sub.expect_message(timeout=10) for _ in expected]
    assert [(m.topic, m.payload) for m in got] == expected
    assert all(getattr(m.properties, "TopicAlias", None) is None for m in got), "no alias leaks to subscribers"
    stored = [(m["topic"], payload_of(m)) for m in reversed(vigil.wait_stored(f"{base}/a", 3))]  # oldest first
    assert stored == [(f"{base}/a", b"1"), (f"{base}/a", b"2"), (f"{base}/a", b"4")]
    assert [m["device"] for m in vigil.wait_stored(f"{base}/c", 2)] == [base, base]


@pytest.mark.parametrize("alias, topic, why", [(65, "x", "outside 1 to 64"), (3, "", "stands for no topic")])
def test_mqtt5_a_wrong_topic_alias_ends_the_connection_with_0x94(vigil, alias, topic, why):
    c = vigil.client(version=V5)
    if topic:
        topic = f"{unique('alias')}/{topic}"
    # QoS 1: queued if paho is a moment behind the CONNACK. paho's own return
    # code is not checked: the server may have closed the connection (what
    # this test waits for) before paho returns from publish().
    c.paho.publish(topic, b"1", qos=1, properties=_alias(alias))
    assert c.disconnected.wait(10), "the server kept the connection"
    assert c.disconnect_rc.value == 0x94, c.disconnect_rc
    vigil.wait_for(lambda: why in vigil.stderr(), what=f"'{why}' in the log")


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_subscription_to_dollar_topics_is_granted_and_keeps_the_client(vigil, version, transport):
    """MQTT Explorer and others subscribe to `$SYS/#` beside `#`. rumqttd
    alone dropped such a client without a SUBACK (it reconnected forever);
    the front door grants the filter itself (Vigil publishes no `$` topics,
    so it stays empty), and the client's other filters work as before."""
    base = unique("dollar")
    c = vigil.client(version=VERSIONS[version], transport=transport)
    rc, mid = c.paho.subscribe([("$SYS/#", 1), (f"{base}/#", 1)])
    codes = wait_for(lambda: c._suback(mid), 10, what="SUBACK for $SYS/# and the test's filter")
    assert [code.value for code in codes] == [1, 1]
    only = vigil.client(version=VERSIONS[version], transport=transport)
    rc, mid = only.paho.subscribe("$SYS/broker/#", 2)
    assert [code.value for code in wait_for(lambda: only._suback(mid), 10, what="SUBACK")] == [2]
    vigil.client().publish_wait(f"{base}/x", b"1", qos=1)
    assert c.expect_message(timeout=10).payload == b"1"
    c.paho.unsubscribe("$SYS/#")
    time.sleep(0.5)
    vigil.client().publish_wait(f"{base}/y", b"2", qos=1)
    assert c.expect_message(timeout=10).payload == b"2"
    assert not c.disconnected.is_set() and not only.disconnected.is_set()


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_dollar_topics_published_by_clients_reach_no_wildcard_subscriber(vigil, version, transport):
    """MQTT 3.1.1 [MQTT-4.7.2-1] and 5.0 section 4.7.2: a topic starting with
    `$` matches no filter starting with `#` or `+`. A client may publish
    there (every QoS completes, Vigil records it), but `#` and `+/...`
    subscribers get nothing, retained or live; what the publisher sends next
    on an ordinary topic arrives as before."""
    base = unique("dollar")
    leaf = unique("leaf")
    sub = vigil.client(version=VERSIONS[version], transport=transport)
    sub.subscribe("#", qos=2)
    sub.subscribe(f"+/{leaf}", qos=1)
    pub = vigil.client(version=VERSIONS[version], transport=transport)
    for qos in (0, 1, 2):
        pub.publish_wait(f"${base}/{leaf}", f"at qos {qos}".encode(), qos=qos)
    pub.publish_wait(f"${base}/kept", b"retained", qos=1, retain=True)
    will = dict(topic=f"${base}/will", payload=b"gone", qos=1)
    doomed = vigil.client(version=VERSIONS[version], transport=transport, will=will)
    doomed.stop()
    vigil.wait_stored(f"${base}/will", 1)
    # The router keeps one connection's messages in order: had any `$`
    # message been routed, it would have come before this one.
    pub.publish_wait(f"{base}/{leaf}", b"ordinary", qos=1)
    got = sub.expect_message(timeout=10, topic=f"{base}/{leaf}")
    assert got.payload == b"ordinary"
    assert [m.topic for m in sub.received if m.topic.startswith("$")] == []
    late = vigil.client(version=VERSIONS[version], transport=transport)
    late.subscribe(f"+/kept", qos=1)
    pub.publish_wait(f"{base}/kept", b"ordinary retained", qos=1, retain=True)
    assert late.expect_message(timeout=10).payload == b"ordinary retained"
    assert [m.topic for m in late.received if m.topic.startswith("$")] == []
    # Vigil records what was published, and the clients are still there.
    assert sorted(m["qos"] for m in vigil.wait_stored(f"${base}/{leaf}", 3)) == [0, 1, 2]
    assert not pub.disconnected.is_set() and not sub.disconnected.is_set()


def _connect_properties(**values) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    for name, value in values.items():
        setattr(props, name, value)
    return props


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_a_message_over_the_clients_maximum_packet_size_is_not_sent(vigil, transport):
    """MQTT 5 [MQTT-3.1.2-24, -25]: the server sends no packet larger than
    the client's Maximum Packet Size; it discards the message and behaves as
    if it had sent it. Here more messages are discarded (at QoS 1 and 2) than
    the router keeps unanswered (100), so the front door's own answers must
    reach the router, in its order, or deliveries would stop; the clients
    stay connected and get every message that fits."""
    topic = unique("maxpacket")
    limit = _connect_properties(MaximumPacketSize=300)
    subscribers = {qos: vigil.client(version=V5, transport=transport, connect_properties=limit)
                   for qos in (1, 2)}
    for qos, sub in subscribers.items():
        sub.subscribe(f"{topic}/#", qos=qos)
    pub = vigil.client(max_inflight=20)
    rounds = 120
    for i in range(rounds):
        qos = 2 if i % 10 == 0 else 1
        pub.publish(f"{topic}/big", b"x" * 1000, qos=qos)
        pub.publish(f"{topic}/small", str(i).encode(), qos=qos)
    for qos, sub in subscribers.items():
        wait_for(lambda: len(sub.messages_on(f"{topic}/small")) >= rounds, 30,
                 what=f"{rounds} small messages at subscription QoS {qos}")
        got = [int(m.payload) for m in sub.messages_on(f"{topic}/small")]
        # In order per QoS published (rumqttd routes a QoS 2 message at its
        # PUBREL, so QoS 1 messages may pass it).
        assert sorted(got) == list(range(rounds)), (qos, got)
        assert [i for i in got if i % 10] == [i for i in range(rounds) if i % 10], (qos, got)
        assert sub.messages_on(f"{topic}/big") == []
        assert not sub.disconnected.is_set()
    # A client without the limit gets the big ones.
    free = vigil.client(version=V5, transport=transport)
    free.subscribe(f"{topic}/#", qos=1)
    pub.publish_wait(f"{topic}/big", b"x" * 1000, qos=1)
    assert len(free.expect_message(timeout=10, topic=f"{topic}/big").payload) == 1000


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_the_client_gets_no_more_unfinished_messages_than_its_receive_maximum(vigil, transport):
    """MQTT 5 [MQTT-3.3.4-9]: the server sends no more QoS 1 and 2 PUBLISHes
    than the client's Receive Maximum before it answers them. The rest wait,
    in order, and follow one by one as the client acknowledges."""
    topic = unique("receivemax")
    sub = vigil.client(version=V5, transport=transport, connect=False,
                       connect_properties=_connect_properties(ReceiveMaximum=2))
    sub.paho.manual_ack_set(True)
    sub.connect()
    sub.subscribe(topic, qos=1)
    pub = vigil.client()
    for i in range(6):
        pub.publish_wait(topic, str(i).encode(), qos=1)
    wait_for(lambda: len(sub.received) >= 2, 10, what="the first two messages")
    time.sleep(1.0)
    assert [m.payload for m in sub.received] == [b"0", b"1"], "more than the Receive Maximum unfinished"
    for done in range(4):
        sub.paho.ack(sub.received[done].mid, 1)
        wait_for(lambda: len(sub.received) >= 3 + done, 10, what=f"message {2 + done} after an ack")
        time.sleep(0.3)
        assert len(sub.received) == 3 + done
    assert [m.payload for m in sub.received] == [str(i).encode() for i in range(6)]
    assert not sub.disconnected.is_set()



@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_subscription_identifiers_come_back_with_the_messages_they_matched(vigil, transport):
    """MQTT 5 section 3.8.2.1.2 and [MQTT-3.3.4-3, -4, -5]: a message sent
    because of a subscription with an identifier carries that identifier; with
    overlapping subscriptions the server may send one copy per subscription,
    each with its own; a subscription without one adds none."""
    topic = unique("subid")
    sub = vigil.client(version=V5, transport=transport)
    for topic_filter, ident in ((f"{topic}/#", 7), (f"{topic}/a", 9)):
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = ident
        rc, mid = sub.paho.subscribe(topic_filter, qos=1, properties=props)
        wait_for(lambda: sub._suback(mid), 10, what=f"SUBACK for {topic_filter}")
    plain = vigil.client(version=V5, transport=transport)
    plain.subscribe(f"{topic}/#", qos=1)
    vigil.client().publish_wait(f"{topic}/a", b"both", qos=1)
    vigil.client().publish_wait(f"{topic}/b", b"one", qos=1)
    wait_for(lambda: len(sub.received) >= 3, 10, what="a copy per matching subscription")
    time.sleep(0.3)
    ids = lambda m: sorted(getattr(m.properties, "SubscriptionIdentifier", []) or [])
    both = [ids(m) for m in sub.messages_on(f"{topic}/a")]
    assert sorted(sum(both, [])) == [7, 9] and all(both), both
    assert [ids(m) for m in sub.messages_on(f"{topic}/b")] == [[7]]
    plain.expect_message(timeout=10, topic=f"{topic}/a")
    assert all(ids(m) == [] for m in plain.received), [ids(m) for m in plain.received]


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_publish_properties_reach_the_subscriber_unchanged(vigil, transport):
    """MQTT 5 [MQTT-3.3.2-4] (payload format indicator), [MQTT-3.3.2-20]
    (content type), response topic and correlation data (request/response,
    section 4.10), user properties in order [MQTT-3.3.2-18]: the server passes
    them to the subscriber unaltered."""
    topic = unique("props")
    sub = vigil.client(version=V5, transport=transport)
    sub.subscribe(topic, qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.ContentType = "application/json"
    props.ResponseTopic = f"{topic}/reply"
    props.CorrelationData = b"\x00\x01req-42"
    props.UserProperty = [("b", "2"), ("a", "1"), ("a", "0")]
    vigil.client(version=V5, transport=transport).publish_wait(topic, b'{"x": 1}', qos=1, properties=props)
    got = sub.expect_message(timeout=10, topic=topic).properties
    assert got.PayloadFormatIndicator == 1
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == f"{topic}/reply"
    assert got.CorrelationData == b"\x00\x01req-42"
    assert got.UserProperty == [("b", "2"), ("a", "1"), ("a", "0")]


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_a_shared_subscription_gets_each_message_once_across_its_group(vigil, transport):
    """MQTT 5 section 4.8.2: `$share/<group>/<filter>` is a shared
    subscription (not a `$` topic): each matching message goes to one member
    of the group, and a plain subscriber still gets them all."""
    topic = unique("shared")
    members = [vigil.client(version=V5, transport=transport) for _ in range(2)]
    for m in members:
        m.subscribe(f"$share/workers/{topic}/#", qos=1)
    everyone = vigil.client(version=V5, transport=transport)
    everyone.subscribe(f"{topic}/#", qos=1)
    pub = vigil.client()
    for i in range(10):
        pub.publish_wait(f"{topic}/job", str(i).encode(), qos=1)
    wait_for(lambda: len(everyone.received) >= 10, 10, what="all 10 at the plain subscriber")
    wait_for(lambda: sum(len(m.received) for m in members) >= 10, 10, what="10 across the group")
    time.sleep(0.3)
    shared = sorted(int(r.payload) for m in members for r in m.received)
    assert shared == list(range(10)), shared


def _subscribe_with_options(client, topic_filter: str, qos: int, **options) -> None:
    """Subscribes with MQTT 5 subscription options (paho's names) and waits for the SUBACK."""
    rc, mid = client.paho.subscribe(topic_filter, options=SubscribeOptions(qos=qos, **options))
    wait_for(lambda: client._suback(mid), 10, what=f"SUBACK for {topic_filter}")


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_no_local_keeps_a_clients_own_messages_from_it(vigil, transport):
    """MQTT 5 [MQTT-3.8.3-3]: with No Local, the client's own messages are
    not sent back to it; everyone else's are, and other subscribers get its
    messages with exactly the properties it sent."""
    topic = unique("nolocal")
    me = vigil.client(version=V5, transport=transport)
    _subscribe_with_options(me, f"{topic}/#", 1, noLocal=True)
    other5 = vigil.client(version=V5, transport=transport)
    other5.subscribe(f"{topic}/#", qos=1)
    for qos in (0, 1, 2):
        me.publish_wait(f"{topic}/mine", f"mine {qos}".encode(), qos=qos,
                        properties=user_properties([("k", "v")], content_type="text/plain"))
    vigil.client(version=V5, transport=transport).publish_wait(f"{topic}/theirs", b"theirs", qos=1)
    assert me.expect_message(timeout=10).topic == f"{topic}/theirs"
    wait_for(lambda: len(other5.received) >= 4, 10, what="every message at the other subscriber")
    time.sleep(0.3)
    assert [m.topic for m in me.received] == [f"{topic}/theirs"], "its own messages came back"
    for m in other5.messages_on(f"{topic}/mine"):
        assert m.properties.UserProperty == [("k", "v")], m.properties
        assert m.properties.ContentType == "text/plain"
    # Vigil records what the client sent, without anything of the front door's.
    stored = vigil.wait_stored(f"{topic}/mine", 3)
    assert all(s["properties"]["user_properties"] == [{"name": "k", "value": "v"}] for s in stored), stored
    # Unsubscribed and subscribed again without No Local: its own come back.
    me.paho.unsubscribe(f"{topic}/#")
    time.sleep(0.3)
    me.subscribe(f"{topic}/#", qos=1)
    me.publish_wait(f"{topic}/mine", b"again", qos=1)
    assert me.expect_message(timeout=10, topic=f"{topic}/mine").payload == b"again"


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_retain_handling_2_sends_no_retained_messages_on_subscribe(vigil, transport):
    """MQTT 5 [MQTT-3.3.1-11]: Retain Handling 2 means no retained messages
    when the subscription is made; 0 means they are sent; either way the
    live messages that follow arrive."""
    topic = unique("rh")
    vigil.client().publish_wait(f"{topic}/kept", b"retained", qos=1, retain=True)
    never = vigil.client(version=V5, transport=transport)
    _subscribe_with_options(never, f"{topic}/#", 1, retainHandling=2)
    always = vigil.client(version=V5, transport=transport)
    _subscribe_with_options(always, f"{topic}/#", 1, retainHandling=0)
    got = always.expect_message(timeout=10, topic=f"{topic}/kept")
    assert (got.payload, got.retain) == (b"retained", True)
    vigil.client().publish_wait(f"{topic}/live", b"live", qos=1)
    assert never.expect_message(timeout=10).topic == f"{topic}/live"
    assert [m.topic for m in never.received] == [f"{topic}/live"]
    assert not never.disconnected.is_set()


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_filter_subscribed_again_gets_its_retained_messages_again(vigil, version, transport):
    """MQTT 3.1.1 [MQTT-3.8.4-3] and MQTT 5 Retain Handling 0: a SUBSCRIBE
    for a filter the client already has sends its retained messages again
    (rumqttd alone sent them for a new filter only), at the smaller QoS, QoS
    2 flows included; MQTT 5 Retain Handling 1 sends them only for a new
    filter. Live messages go on, once each."""
    topic = unique("again")
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/one", b"retained-1", qos=2, retain=True)
    pub.publish_wait(f"{topic}/two", b"retained-2", qos=1, retain=True)
    c = vigil.client(version=VERSIONS[version], transport=transport)
    c.subscribe(f"{topic}/#", qos=2)
    wait_for(lambda: len(c.received) == 2, 10, what="the retained messages")
    c.subscribe(f"{topic}/#", qos=2)
    wait_for(lambda: len(c.received) == 4, 10, what="the retained messages again")
    with c.lock:
        again = sorted((m.payload, m.qos, m.retain) for m in c.received[2:])
    assert again == [(b"retained-1", 2, True), (b"retained-2", 1, True)]
    # Subscribed again at QoS 0: at QoS 0.
    c.subscribe(f"{topic}/one", qos=0)
    c.subscribe(f"{topic}/one", qos=0)
    wait_for(lambda: len(c.received) == 6, 10, what="the QoS 0 retained message twice")
    assert [(m.payload, m.qos) for m in c.received[4:]] == [(b"retained-1", 0)] * 2
    if version == "5":
        _subscribe_with_options(c, f"{topic}/#", 2, retainHandling=1)
    pub.publish_wait(f"{topic}/live", b"live", qos=1)
    wait_for(lambda: any(m.payload == b"live" for m in c.received), 10, what="the live message")
    time.sleep(0.3)
    assert [m.payload for m in c.received[6:]] == [b"live"]
    assert not c.disconnected.is_set()


def test_a_shared_subscription_subscribed_again_is_left_alone(vigil):
    """Retained messages are never sent for a shared subscription (MQTT 5
    4.8.2), also not when it is subscribed again, and its messages go on."""
    topic = unique("shared-again")
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/kept", b"retained", qos=1, retain=True)
    c = vigil.client(version=V5)
    c.subscribe(f"$share/g/{topic}/#", qos=1)
    c.subscribe(f"$share/g/{topic}/#", qos=1)
    pub.publish_wait(f"{topic}/live", b"live", qos=1)
    assert c.expect_message(timeout=10).payload == b"live"
    time.sleep(0.3)
    assert [m.payload for m in c.received] == [b"live"]


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_a_311_subscriber_gets_messages_that_mqtt5_clients_published_with_properties(vigil, transport):
    """MQTT 5 properties have no place in MQTT 3.1.1: the server passes the
    message without them. (rumqttd's own 3.1.1 link hit `unreachable!()` on
    such a message and cut the subscriber off; the front door now speaks
    MQTT 5 to the router for every client.)"""
    topic = unique("mixed")
    old = vigil.client(transport=transport)
    old.subscribe(f"{topic}/#", qos=1)
    new = vigil.client(version=V5, transport=transport)
    new.publish_wait(f"{topic}/a", b"with properties", qos=1,
                     properties=user_properties([("k", "v")], content_type="text/plain"))
    got = old.expect_message(timeout=10, topic=f"{topic}/a")
    assert got.payload == b"with properties"
    assert not old.disconnected.is_set()


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_retain_as_published_keeps_the_retain_flag_on_live_messages(vigil, transport):
    """MQTT 5 [MQTT-3.3.1-12, -13]: a live message goes with RETAIN 0 unless
    the subscription asked for Retain As Published, which keeps the flag the
    publisher set (3.1.1 and MQTT 5 publishers alike)."""
    topic = unique("rap")
    keeps = vigil.client(version=V5, transport=transport)
    _subscribe_with_options(keeps, f"{topic}/#", 1, retainAsPublished=True)
    clears = vigil.client(version=V5, transport=transport)
    clears.subscribe(f"{topic}/#", qos=1)
    vigil.client().publish_wait(f"{topic}/old", b"3.1.1", qos=1, retain=True)
    vigil.client(version=V5).publish_wait(f"{topic}/new", b"5", qos=0, retain=True)
    vigil.client().publish_wait(f"{topic}/plain", b"not retained", qos=1)
    for sub in (keeps, clears):
        wait_for(lambda: len(sub.received) >= 3, 10, what="three messages")
    flags = lambda sub: {m.topic.rsplit("/", 1)[1]: m.retain for m in sub.received}
    assert flags(keeps) == {"old": True, "new": True, "plain": False}
    assert flags(clears) == {"old": False, "new": False, "plain": False}


def test_mqtt5_no_local_with_topic_aliases_toward_the_client_loses_no_topic(vigil):
    """A client that allows topic aliases and uses No Local: its own first
    message on a topic is kept from it, so the router must not have named
    the topic by alias there (the client would never learn the alias). The
    front door does not let the router use aliases toward clients."""
    topic = unique("aliasnl")
    me = vigil.client(version=V5, connect_properties=_connect_properties(TopicAliasMaximum=5))
    _subscribe_with_options(me, f"{topic}/#", 1, noLocal=True)
    me.publish_wait(f"{topic}/a", b"mine", qos=1)
    other = vigil.client(version=V5)
    for i in range(3):
        other.publish_wait(f"{topic}/a", str(i).encode(), qos=1)
    wait_for(lambda: len(me.received) >= 3, 10, what="the other client's three messages")
    assert [(m.topic, m.payload) for m in me.received] == [(f"{topic}/a", str(i).encode()) for i in range(3)]
    assert not me.disconnected.is_set()


def _expiring(seconds: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


@pytest.mark.parametrize("transport", ["tcp", "websockets"])
def test_mqtt5_an_expired_retained_message_is_not_sent_and_one_that_waited_says_what_is_left(vigil, transport):
    """MQTT 5 [MQTT-3.3.2-5]: once its Message Expiry Interval has passed a
    message is no longer sent (to 3.1.1 subscribers neither); [MQTT-3.3.2-6]:
    one sent later carries the interval minus the time it waited. (rumqttd
    keeps this rule, in whole seconds; the front door must leave the
    property as the router set it.)"""
    topic = unique("expiry")
    pub = vigil.client(version=V5, transport=transport)
    pub.publish_wait(f"{topic}/short", b"2 s", qos=1, retain=True, properties=_expiring(2))
    pub.publish_wait(f"{topic}/long", b"forever", qos=1, retain=True)
    time.sleep(1.2)
    early = vigil.client(version=V5, transport=transport)
    early.subscribe(f"{topic}/#", qos=1)
    wait_for(lambda: len(early.received) >= 2, 10, what="both retained messages")
    [short] = early.messages_on(f"{topic}/short")
    assert short.properties.MessageExpiryInterval == 1, "2 s less the 1.2 s it waited, rounded up"
    time.sleep(1.3)
    late5 = vigil.client(version=V5, transport=transport)
    late5.subscribe(f"{topic}/#", qos=1)
    late3 = vigil.client(transport=transport)
    late3.subscribe(f"{topic}/#", qos=1)
    for late in (late5, late3):
        assert late.expect_message(timeout=10).topic == f"{topic}/long"
    time.sleep(0.3)
    assert [m.topic for m in late5.received + late3.received] == [f"{topic}/long"] * 2
    # A live message with an expiry goes with the whole interval.
    pub.publish_wait(f"{topic}/live", b"now", qos=1, properties=_expiring(30))
    assert late5.expect_message(timeout=10, topic=f"{topic}/live").properties.MessageExpiryInterval == 30


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_a_persistent_session_gets_what_was_published_while_it_was_away(vigil, version):
    """MQTT 3.1.1 [MQTT-3.1.2-5] and 5.0 section 4.1: a client whose session
    is kept (clean session 0; MQTT 5: clean start 0 and a Session Expiry
    Interval) finds its subscriptions on return, and gets the QoS 1 and 2
    messages published while it was away, in order; an expired one
    (MQTT 5 [MQTT-3.3.2-5]) is not among them."""
    topic = unique("away")
    client_id = unique("persistent")
    kept = _connect_properties(SessionExpiryInterval=300) if version == "5" else None
    first = vigil.client(version=VERSIONS[version], client_id=client_id, clean=False, connect_properties=kept)
    first.subscribe(f"{topic}/#", qos=1)
    first.disconnect()
    pub = vigil.client(version=V5)
    pub.publish_wait(f"{topic}/a", b"1", qos=1)
    pub.publish_wait(f"{topic}/short", b"expires", qos=1, properties=_expiring(1))
    pub.publish_wait(f"{topic}/b", b"2", qos=2)
    pub.publish_wait(f"{topic}/c", b"lost: QoS 0 may be dropped", qos=0)
    time.sleep(2.2)
    back = vigil.client(version=VERSIONS[version], client_id=client_id, clean=False, connect_properties=kept)
    assert back.connect_flags.session_present
    wait_for(lambda: len(back.messages_on(f"{topic}/b")) == 1, 10, what="the QoS 2 message")
    got = [m.payload for m in back.received if not m.topic.endswith("/c")]
    assert got == [b"1", b"2"], got


@pytest.mark.parametrize("across_restart", [False, True], ids=["running", "restarted"])
def test_mqtt5_no_local_holds_for_a_session_resumed_without_subscribing_again(vigil, across_restart):
    """The options of a kept session's subscriptions hold when the client
    comes back (session present) and does not subscribe again, also after
    a restart of Vigil: No Local still keeps its own messages from it."""
    topic = unique("resumed")
    client_id = unique("nl-session")
    kept = _connect_properties(SessionExpiryInterval=300)
    first = vigil.client(version=V5, client_id=client_id, clean=False, connect_properties=kept)
    _subscribe_with_options(first, f"{topic}/#", 1, noLocal=True)
    first.disconnect()
    if across_restart:
        vigil.restart()
    back = vigil.client(version=V5, client_id=client_id, clean=False, connect_properties=kept)
    assert back.connect_flags.session_present
    back.publish_wait(f"{topic}/mine", b"mine", qos=1)
    vigil.client(version=V5).publish_wait(f"{topic}/theirs", b"theirs", qos=1)
    assert back.expect_message(timeout=10).topic == f"{topic}/theirs"
    time.sleep(0.3)
    assert [m.topic for m in back.received] == [f"{topic}/theirs"]


@pytest.mark.parametrize("reason, will_sent", [(0x00, False), (0x04, True)], ids=["normal", "with-will"])
def test_mqtt5_disconnect_with_only_a_reason_code_closes_at_once(vigil, reason, will_sent):
    """MQTT 5 3.14.2.2.1: a DISCONNECT may end after its reason code (no
    property length), as Mosquitto's clients send it. rumqttd alone read
    that as malformed and never closed the connection (the front door then
    waited 5 s); 0x04 asks for the will, 0x00 for none."""
    import socket
    import struct

    from helpers import HOST, _str, _varint, recv_exact

    topic = unique("bare")
    watcher = vigil.client(version=V5)
    watcher.subscribe(topic, qos=0)
    # CONNECT, MQTT 5, clean start, a will on `topic`.
    body = (_str("MQTT") + bytes([5, 0x02 | 0x04]) + struct.pack("!H", 30) + b"\x00"
            + _str(unique("bare")) + b"\x00" + _str(topic) + struct.pack("!H", 4) + b"gone")
    sock = socket.create_connection((HOST, vigil.mqtt_port), timeout=5)
    try:
        sock.sendall(b"\x10" + _varint(len(body)) + body)
        head = recv_exact(sock, 2)
        assert head[0] == 0x20 and recv_exact(sock, head[1])[1] == 0
        began = time.monotonic()
        sock.sendall(bytes([0xE0, 0x01, reason]))
        sock.settimeout(10)
        assert sock.recv(1) == b"", "the server sent something after DISCONNECT"
        closed_after = time.monotonic() - began
    finally:
        sock.close()
    assert closed_after < 2.0, f"closed {closed_after:.1f} s after DISCONNECT"
    time.sleep(0.5)
    assert [m.payload for m in watcher.received] == ([b"gone"] if will_sent else [])
    if will_sent:
        [stored] = vigil.wait_stored(topic, 1)
        assert stored["properties"].get("will") is True, stored
    assert "did not close the connection" not in vigil.stderr()
