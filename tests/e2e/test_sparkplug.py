"""Sparkplug B end to end: payloads encoded by pysparkplug (an independent
Sparkplug implementation from PyPI), sent by a paho-mqtt edge node in its own
process whose last will is its NDEATH, killed to send it."""

from __future__ import annotations

import time
from urllib.parse import quote

import pysparkplug as psp

from helpers import unique, wait_for
from test_presence_alerts import device, history, presence_of


def ts() -> int:
    return psp.get_current_timestamp()


def metric(name, datatype, value, alias=None):
    return psp.Metric(timestamp=ts(), name=name, datatype=datatype, value=value, alias=alias)


def hex_of(message) -> str:
    return message.encode().hex()


def node_spec(v, group: str, node: str, bd_seq: int, messages: list[dict]) -> dict:
    death = psp.NDeath(timestamp=ts(), bd_seq_metric=metric("bdSeq", psp.DataType.INT64, bd_seq))
    return {"port": v.mqtt_port, "client_id": unique("edge"), "version": "5",
            "will": {"topic": f"spBv1.0/{group}/NDEATH/{node}", "payload_hex": hex_of(death), "qos": 1},
            "messages": messages}


def test_birth_data_by_alias_and_death_of_an_edge_node(vigil, players):
    group, node, dev = unique("plant"), "edge1", "pump7"
    nbirth = psp.NBirth(timestamp=ts(), seq=0, metrics=(
        metric("bdSeq", psp.DataType.INT64, 5),
        metric("Supply Voltage", psp.DataType.DOUBLE, 12.1, alias=1),
        metric("Offset", psp.DataType.INT8, -3, alias=2),
    ))
    ndata = psp.NData(timestamp=ts(), seq=1, metrics=(
        psp.Metric(timestamp=ts(), name=None, datatype=psp.DataType.DOUBLE, value=11.8, alias=1),))
    dbirth = psp.DBirth(timestamp=ts(), seq=2, metrics=(metric("Pressure", psp.DataType.FLOAT, 2.5, alias=10),))
    ddata = psp.DData(timestamp=ts(), seq=3, metrics=(
        psp.Metric(timestamp=ts(), name=None, datatype=psp.DataType.FLOAT, value=3.25, alias=10),))
    base = f"spBv1.0/{group}"
    p = players(node_spec(vigil, group, node, 5, [
        {"topic": f"{base}/NBIRTH/{node}", "payload_hex": hex_of(nbirth)},
        {"topic": f"{base}/NDATA/{node}", "payload_hex": hex_of(ndata)},
        {"topic": f"{base}/DBIRTH/{node}/{dev}", "payload_hex": hex_of(dbirth)},
        {"topic": f"{base}/DDATA/{node}/{dev}", "payload_hex": hex_of(ddata)},
    ]))
    p.expect("published")
    node_key, dev_key = f"{group}/{node}", f"{group}/{node}/{dev}"

    def metrics_of(key):
        return {m["name"]: m for m in device(vigil, key)["metrics"]} if presence_of(vigil, key) else {}

    wait_for(lambda: metrics_of(node_key).get("Supply Voltage", {}).get("value") == 11.8,
             what="NDATA by alias resolved to its birth name")
    d = device(vigil, node_key)
    assert d["convention"] == "sparkplug"
    assert d["presence"]["state"] == "online"
    assert metrics_of(node_key)["Offset"]["value"] == -3, "Int8 reads back signed"
    assert "bdSeq" not in metrics_of(node_key)
    wait_for(lambda: metrics_of(dev_key).get("Pressure", {}).get("value") == 3.25, what="DDATA by alias")
    assert device(vigil, dev_key)["presence"]["state"] == "online"

    p.kill()
    wait_for(lambda: presence_of(vigil, dev_key) == "offline", what="the device offline with its node")
    n = device(vigil, node_key)
    assert n["presence"]["state"] == "offline"
    reasons = [h["reason"] for h in history(vigil, node_key)]
    assert any("NDEATH (bdSeq 5)" in r or "connection lost" in r for r in reasons), reasons
    wait_for(lambda: all(m["stale"] for m in device(vigil, node_key)["metrics"]), what="metrics stale after death")
    assert all(m["stale"] for m in device(vigil, dev_key)["metrics"])


def test_a_death_from_an_earlier_session_is_ignored(vigil, players):
    group, node = unique("plant"), "edge2"
    base = f"spBv1.0/{group}"
    c = vigil.client(version=5)
    birth = psp.NBirth(timestamp=ts(), seq=0, metrics=(metric("bdSeq", psp.DataType.INT64, 8),
                                                       metric("Level", psp.DataType.DOUBLE, 40.0)))
    c.publish_wait(f"{base}/NBIRTH/{node}", birth.encode())
    key = f"{group}/{node}"
    wait_for(lambda: presence_of(vigil, key) == "online", what="online after NBIRTH")
    old = psp.NDeath(timestamp=ts(), bd_seq_metric=metric("bdSeq", psp.DataType.INT64, 7))
    c.publish_wait(f"{base}/NDEATH/{node}", old.encode())
    vigil.wait_stored(f"{base}/NDEATH/{node}")
    time.sleep(0.3)
    assert presence_of(vigil, key) == "online", "a death whose bdSeq does not match the birth is ignored"
    current = psp.NDeath(timestamp=ts(), bd_seq_metric=metric("bdSeq", psp.DataType.INT64, 8))
    c.publish_wait(f"{base}/NDEATH/{node}", current.encode())
    wait_for(lambda: presence_of(vigil, key) == "offline", what="offline after the matching death")
    # A malformed payload is stored whole and changes nothing.
    c.publish_wait(f"{base}/NDATA/{node}", b"\x12\x09garbage")
    stored = vigil.wait_stored(f"{base}/NDATA/{node}")[0]
    assert stored["size"] == 9 and stored["device"] == key


def test_announce_on_start_asks_devices_again(vigil_factory, tmp_path):
    from test_presence_alerts import write_config
    v = vigil_factory(write_config(tmp_path, "[presence]\nannounce_on_start = true\nannounce_delay_s = 2\n"))
    group, node = unique("plant"), "edge9"
    c = v.client(version=5)
    birth = psp.NBirth(timestamp=ts(), seq=0, metrics=(metric("bdSeq", psp.DataType.INT64, 1),))
    c.publish_wait(f"spBv1.0/{group}/NBIRTH/{node}", birth.encode())
    wait_for(lambda: presence_of(v, f"{group}/{node}") == "online", what="the node known")
    v.close_clients()
    v.stop_ok()
    v.restart()
    # Vigil is the broker: it asks once devices have had time to reconnect.
    listener = v.client(version=5)
    for topic in (f"spBv1.0/{group}/NCMD/{node}", "homeassistant/status", "shellies/command"):
        listener.subscribe(topic, qos=1)
    got = {}
    for _ in range(3):
        m = listener.expect_message(timeout=10)
        got[m.topic] = m.payload
    assert got["homeassistant/status"] == b"online"
    assert got["shellies/command"] == b"announce"
    # Decoded by pysparkplug: the specification's rebirth request.
    command = psp.NCmd.decode(got[f"spBv1.0/{group}/NCMD/{node}"])
    assert [(mm.name, mm.value) for mm in command.metrics] == [("Node Control/Rebirth", True)]
