"""Every device convention, end to end, played by a real device.

A paho-mqtt client in its own process (device_player.py) plays the messages of
each convention's documentation (the same examples the unit tests in
`crates/vigil-core/src/convention/*.rs` quote), with the last will that
convention uses; the test then SIGKILLs it, as a device that loses power, and
checks through the HTTP API what Vigil made of it: the device record
(convention, description, metrics with values and units) and every presence
transition with its reason and source.

A client that publishes for one device speaks for it: after the kill the device
is offline either because its connection was lost or because its will said so
(whichever Vigil heard first). A gateway (the Zigbee2MQTT bridge) speaks for no
device: its devices' presence comes from their availability messages only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from helpers import Player, unique, wait_for

SECOND = 1_000_000
VERSIONS = ["3.1.1", "5"]
CONNECTION_LOST = ("connection", "connection lost: connection dropped")
CONNECTED = ("connection", "connected")


# --------------------------------------------------------------------------
# devices in their own processes (as in test_presence_alerts.py)
# --------------------------------------------------------------------------



def play(players, v, client_id: str, will: dict, messages: list[dict], version: str = "3.1.1") -> Player:
    """Starts a device that publishes `messages` (QoS 1) and waits until they are acknowledged."""
    p = players({"port": v.mqtt_port, "client_id": client_id, "version": version, "keepalive": 30,
                 "will": will, "messages": messages})
    p.expect("published")
    return p


def msg(topic: str, payload, retain: bool = False) -> dict:
    return {"topic": topic, "payload": payload if isinstance(payload, str) else json.dumps(payload),
            "retain": retain}


def write_config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / f"vigil-{unique('cfg')}.toml"
    path.write_text(text)
    return ["--config", str(path)]


# --------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------

def path_of(key: str) -> str:
    return f"/api/devices/{quote(key, safe='')}"


def device(v, key: str) -> dict:
    return v.http_get_json(path_of(key))


def known(v, key: str) -> dict | None:
    r = v.http("GET", path_of(key))
    return r.json() if r.status == 200 else None


def presence_of(v, key: str) -> str | None:
    d = known(v, key)
    return d["presence"]["state"] if d else None


def history(v, key: str) -> list[dict]:
    """Presence transitions, newest first."""
    return v.http_get_json(path_of(key) + "/presence")


def chain(v, key: str) -> list[tuple[str, str]]:
    """Presence transitions as (from, to), oldest first."""
    return [(h["from"], h["to"]) for h in reversed(history(v, key))]


def metrics(v, key: str) -> dict[str, dict]:
    d = known(v, key)
    return {m["name"]: m for m in d["metrics"]} if d else {}


def wait_metric(v, key: str, name: str, value=None, timeout: float = 10.0) -> dict:
    """Waits for the device's metric `name` (with `value`, if given) and returns it."""
    def got():
        m = metrics(v, key).get(name)
        return m if m is not None and (value is None or m["value"] == value) else None
    return wait_for(got, timeout, what=f"metric {name}={value!r} of {key}; it has {sorted(metrics(v, key))}")


def assert_metrics(v, key: str, expected: dict[str, tuple]) -> None:
    """expected: name -> (value, unit)."""
    have = metrics(v, key)
    got = {name: (have[name]["value"], have[name]["unit"]) if name in have else None for name in expected}
    assert got == expected, f"{key}: metrics {got}, all: {have}"


def wait_will_stored(v, topic: str) -> dict:
    """Waits until the broker's last-will message on `topic` has been stored."""
    def will():
        return next((m for m in v.messages(topic=topic, limit=50)
                     if (m.get("properties") or {}).get("will")), None)
    return wait_for(will, 10, what=f"the last will on {topic} stored")


def latest_stored(v, topic: str) -> dict:
    """The newest stored message on `topic` (waiting until there is one)."""
    return wait_for(lambda: (v.messages(topic=topic, limit=1) or [None])[0], what=f"a message on {topic} stored")


def assert_online_then_killed(v, key: str, birth_reason: str, will_topic: str, will_reason: str) -> None:
    """A device played by one client, then killed: unknown -> online -> offline, with reasons."""
    wait_for(lambda: presence_of(v, key) == "offline", what=f"{key} offline after the kill")
    wait_will_stored(v, will_topic)
    h = history(v, key)
    assert [(t["from"], t["to"]) for t in reversed(h)] == [("unknown", "online"), ("online", "offline")], h
    offline, online = h
    assert (online["source"], online["reason"]) in (CONNECTED, ("announcement", birth_reason)), online
    assert offline["to"] == "offline"
    assert (offline["source"], offline["reason"]) in (CONNECTION_LOST, ("announcement", will_reason)), offline
    assert offline["at"] >= online["at"]
    p = device(v, key)["presence"]
    assert (p["state"], p["reason"]) == ("offline", offline["reason"]), p


# --------------------------------------------------------------------------
# Tasmota
# --------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_tasmota_plug_with_energy_and_climate_sensor(vigil, players, version):
    t = unique("tasmota")
    mac = unique("").replace("-", "").upper()[:12]
    client_id = f"DVES_{mac[-6:]}"
    config = {"ip": "192.168.1.20", "dn": "Kitchen plug", "fn": ["Kitchen plug", None], "hn": f"{t}-1234",
              "mac": mac, "md": "Sonoff Basic", "ty": 0, "if": 0, "ofln": "Offline", "onln": "Online",
              "state": ["OFF", "ON", "TOGGLE", "HOLD"], "sw": "12.1.1", "t": t, "ft": "%prefix%/%topic%/",
              "tp": ["cmnd", "stat", "tele"], "rl": [1, 0, 0, 0, 0, 0, 0, 0], "ver": 1}
    energy = {"Time": "2021-01-01T00:00:00", "ENERGY": {
        "TotalStartTime": "2021-01-01T00:00:00", "Total": 0.003, "Yesterday": 0.000, "Today": 0.003, "Power": 45,
        "ApparentPower": 50, "ReactivePower": 20, "Factor": 0.90, "Voltage": 230, "Current": 0.196}}
    climate = {"Time": "2021-01-01T00:00:00", "AM2301": {"Temperature": 21.3, "Humidity": 45.1, "DewPoint": 9.1},
               "TempUnit": "C"}
    state = {"Time": "2021-01-01T00:00:00", "Uptime": "0T00:00:15", "UptimeSec": 15, "Heap": 26, "POWER": "ON",
             "Wifi": {"AP": 1, "SSId": "home", "RSSI": 100, "Signal": -44}}
    p = play(players, vigil, client_id, version=version,
             will={"topic": f"tele/{t}/LWT", "payload": "Offline", "retain": True},
             messages=[msg(f"tele/{t}/LWT", "Online", retain=True),
                       msg(f"tasmota/discovery/{mac}/config", config, retain=True),
                       msg(f"tasmota/discovery/{mac}/sensors", {"sn": {"Time": "x"}, "ver": 1}, retain=True),
                       msg(f"tele/{t}/STATE", state),
                       msg(f"tele/{t}/SENSOR", energy),
                       msg(f"tele/{t}/SENSOR", climate),
                       msg(f"stat/{t}/POWER", "OFF")])
    wait_metric(vigil, t, "POWER", 0)
    wait_metric(vigil, t, "AM2301.Temperature")
    assert_metrics(vigil, t, {
        "ENERGY.Power": (45, "W"), "ENERGY.Total": (0.003, "kWh"), "ENERGY.Today": (0.003, "kWh"),
        "ENERGY.ApparentPower": (50, "VA"), "ENERGY.ReactivePower": (20, "var"), "ENERGY.Voltage": (230, "V"),
        "ENERGY.Current": (0.196, "A"), "ENERGY.Factor": (0.9, None),
        "AM2301.Temperature": (21.3, "°C"), "AM2301.Humidity": (45.1, "%"), "AM2301.DewPoint": (9.1, "°C"),
        "POWER": (0, None), "Wifi.RSSI": (100, None),
    })
    assert "Time" not in metrics(vigil, t)
    d = device(vigil, t)
    assert (d["convention"], d["root"], d["client_id"]) == ("tasmota", f"tele/{t}", client_id), d
    assert (d["name"], d["model"], d["firmware"]) == ("Kitchen plug", "Sonoff Basic", "12.1.1"), d
    assert d["presence"]["state"] == "online"
    # The discovery messages are the plug's, not devices of their own.
    assert known(vigil, "tasmota") is None and known(vigil, mac) is None
    p.kill()
    assert_online_then_killed(vigil, t, "Tasmota LWT: Online", f"tele/{t}/LWT", "Tasmota LWT: Offline")


# --------------------------------------------------------------------------
# Homie
# --------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_homie_v4_the_specification_super_car(vigil, players, version):
    dev = unique("super-car")
    base = f"homie/{dev}"
    attrs = [("$homie", "4.0.0"), ("$name", "Super car"), ("$state", "init"),
             ("$nodes", "wheels,engine,lights[]"),
             ("engine/$name", "Car engine"), ("engine/$type", "V8"),
             ("engine/$properties", "speed,direction,temperature"),
             ("engine/speed/$name", "Engine speed"), ("engine/speed/$datatype", "integer"),
             ("engine/speed/$unit", "rpm"),
             ("engine/direction/$datatype", "enum"), ("engine/direction/$format", "forward,backward"),
             ("engine/temperature/$name", "Engine temperature"), ("engine/temperature/$datatype", "float"),
             ("engine/temperature/$unit", "°C"),
             ("lights/$properties", "on"), ("lights/on/$datatype", "boolean")]
    values = [("engine/speed", "3000"), ("engine/direction", "forward"), ("engine/temperature", "21.5"),
              ("lights/on", "true")]
    p = play(players, vigil, unique("homie"), version=version,
             will={"topic": f"{base}/$state", "payload": "lost", "retain": True},
             messages=[msg(f"{base}/{k}", val, retain=True) for k, val in attrs + values]
             + [msg(f"{base}/$state", "ready", retain=True)])
    wait_metric(vigil, dev, "lights/on")
    assert_metrics(vigil, dev, {"engine/temperature": (21.5, "°C"), "engine/speed": (3000, "rpm"),
                                "lights/on": (1, None)})
    assert "engine/direction" not in metrics(vigil, dev), "an enum is not a number"
    d = device(vigil, dev)
    assert (d["convention"], d["root"], d["name"]) == ("homie", base, "Super car"), d
    assert d["presence"]["state"] == "online"
    p.kill()
    assert_online_then_killed(vigil, dev, "Homie $state: init", f"{base}/$state", "Homie $state: lost")


@pytest.mark.parametrize("version", VERSIONS)
def test_homie_v5_description_and_state(vigil, players, version):
    dev = unique("thermostat")
    base = f"homie/5/{dev}"
    description = {"homie": "5.0", "version": 7, "name": "Kitchen thermostat", "nodes": {
        "thermostat": {"name": "Thermostat", "properties": {
            "temperature": {"name": "Temperature", "datatype": "float", "unit": "°C"},
            "humidity": {"datatype": "integer", "unit": "%"},
            "mode": {"datatype": "enum", "format": "heat,cool,off", "settable": True}}}}}
    p = play(players, vigil, unique("homie5"), version=version,
             will={"topic": f"{base}/$state", "payload": "lost", "retain": True},
             messages=[msg(f"{base}/$state", "init", retain=True),
                       msg(f"{base}/$description", description, retain=True),
                       msg(f"{base}/thermostat/temperature", "19.5", retain=True),
                       msg(f"{base}/thermostat/humidity", "48", retain=True),
                       msg(f"{base}/thermostat/mode", "heat", retain=True),
                       msg(f"{base}/$state", "ready", retain=True)])
    wait_metric(vigil, dev, "thermostat/humidity")
    assert_metrics(vigil, dev, {"thermostat/temperature": (19.5, "°C"), "thermostat/humidity": (48, "%")})
    assert "thermostat/mode" not in metrics(vigil, dev)
    d = device(vigil, dev)
    assert (d["convention"], d["root"], d["name"]) == ("homie", base, "Kitchen thermostat"), d
    p.kill()
    assert_online_then_killed(vigil, dev, "Homie $state: init", f"{base}/$state", "Homie $state: lost")


# --------------------------------------------------------------------------
# Home Assistant discovery
# --------------------------------------------------------------------------

def ha_bedroom(node: str) -> tuple[list[dict], str, str]:
    """The temperature and humidity example of Home Assistant's discovery docs, with availability.

    Returns the messages, the device key and the state topic."""
    key = f"{node}01ae"
    state = f"homeassistant/sensor/{node}/state"
    status = f"homeassistant/sensor/{node}/availability"
    device_block = {"identifiers": [key], "name": "Bedroom", "manufacturer": "Example sensors Ltd.", "model": "K9",
                    "serial_number": "12AE3010545", "hw_version": "1.01a", "sw_version": "2024.1.0",
                    "configuration_url": "https://example.com/sensor_portal/config"}
    t = {"device_class": "temperature", "state_topic": state, "unit_of_measurement": "°C",
         "value_template": "{{ value_json.temperature}}", "unique_id": f"temp{key}", "availability_topic": status,
         "device": device_block}
    h = {"device_class": "humidity", "state_topic": state, "unit_of_measurement": "%",
         "value_template": "{{ value_json.humidity}}", "unique_id": f"hum{key}", "availability_topic": status,
         "device": {"identifiers": [key]}}
    messages = [msg(f"homeassistant/sensor/{node}/temperature/config", t, retain=True),
                msg(f"homeassistant/sensor/{node}/humidity/config", h, retain=True),
                msg(status, "online", retain=True)]
    return messages, key, state


def ha_oximeter(ox: str) -> tuple[list[dict], str]:
    """Abbreviated keys, the `~` base topic, an availability list and `expire_after`."""
    config = {"~": f"clinic/{ox}", "name": "SpO2", "stat_t": "~/state",
              "val_tpl": "{{ value_json['spo2'] | float }}", "unit_of_meas": "%", "exp_aft": 60,
              "avty": [{"t": "~/status"}], "avty_mode": "all", "uniq_id": f"{ox}-spo2",
              "dev": {"ids": ox, "mf": "Acme", "mdl": "PO-2", "sw": "1.2", "name": "Oximeter"}}
    return [msg(f"homeassistant/sensor/clinic/{ox}_spo2/config", config, retain=True),
            msg(f"clinic/{ox}/status", "online", retain=True)], f"clinic/{ox}/state"


def test_home_assistant_discovery_documented_sensors(vigil, players):
    node = unique("sensorBedroom")
    messages, key, state = ha_bedroom(node)
    status = f"homeassistant/sensor/{node}/availability"
    p = play(players, vigil, unique("ha"), will={"topic": status, "payload": "offline", "retain": True},
             messages=messages + [msg(state, '{ "temperature": 23.20, "humidity": 43.70 }')])
    wait_metric(vigil, key, "humidity")
    assert_metrics(vigil, key, {"temperature": (23.2, "°C"), "humidity": (43.7, "%")})
    d = device(vigil, key)
    assert (d["convention"], d["root"]) == ("home_assistant", f"homeassistant/sensor/{node}"), d
    assert (d["name"], d["model"], d["manufacturer"], d["firmware"]) == \
        ("Bedroom", "K9", "Example sensors Ltd.", "2024.1.0"), d
    stored = latest_stored(vigil, state)
    assert stored["device"] == key, stored
    p.kill()
    assert_online_then_killed(vigil, key, f"Home Assistant availability {status}: online", status,
                              f"Home Assistant availability {status}: offline")


def test_home_assistant_abbreviated_config_with_base_topic_and_expire_after(vigil, players):
    ox = unique("ox")
    messages, state = ha_oximeter(ox)
    p = play(players, vigil, unique("ha"), will={"topic": f"clinic/{ox}/status", "payload": "offline", "retain": True},
             messages=messages + [msg(state, {"spo2": 97})])
    wait_metric(vigil, ox, f"{ox}_spo2")
    assert_metrics(vigil, ox, {f"{ox}_spo2": (97, "%")})
    d = device(vigil, ox)
    assert (d["convention"], d["root"]) == ("home_assistant", f"clinic/{ox}"), d
    assert (d["name"], d["model"], d["manufacturer"], d["firmware"]) == ("Oximeter", "PO-2", "Acme", "1.2"), d
    # `expire_after` is the device's allowed silence; the API shows it while the device is online.
    # (Checked last, so the rest is checked too: a later transition stores it anyway.)
    presence_online, last_message = d["presence"], d["last_seen"]
    p.kill()
    assert_online_then_killed(vigil, ox, f"Home Assistant availability clinic/{ox}/status: online",
                              f"clinic/{ox}/status", f"Home Assistant availability clinic/{ox}/status: offline")
    assert device(vigil, ox)["presence"]["stale_after"] == 60 * SECOND
    assert presence_online["stale_after"] == 60 * SECOND, \
        f"GET /api/devices/{ox} while online, after its config with exp_aft 60 and a reading at " \
        f"{last_message}: presence {presence_online}"


def test_home_assistant_devices_keep_description_and_units_across_a_restart(vigil_factory, players):
    v = vigil_factory()
    node = unique("sensorBedroom")
    bedroom, key, state = ha_bedroom(node)
    status = f"homeassistant/sensor/{node}/availability"
    ox = unique("ox")
    oximeter, ox_state = ha_oximeter(ox)
    a = play(players, v, unique("ha"), will={"topic": status, "payload": "offline", "retain": True},
             messages=bedroom + [msg(state, {"temperature": 23.2, "humidity": 43.7})])
    # The oximeter only announces itself: its first reading comes after the restart.
    b = play(players, v, unique("ha"), will={"topic": f"clinic/{ox}/status", "payload": "offline", "retain": True},
             messages=oximeter)
    wait_metric(v, key, "humidity")
    wait_for(lambda: (known(v, ox) or {}).get("model") == "PO-2", what="the oximeter described")
    a.kill()
    b.kill()
    wait_for(lambda: presence_of(v, key) == "offline" and presence_of(v, ox) == "offline", what="both offline")
    wait_will_stored(v, status)
    wait_will_stored(v, f"clinic/{ox}/status")
    before = {k: device(v, k) for k in (key, ox)}
    before_history = {k: history(v, k) for k in (key, ox)}

    v.stop_ok()
    v.restart()

    for k in (key, ox):
        d = device(v, k)
        for field in ("convention", "root", "name", "model", "manufacturer", "firmware"):
            assert d[field] == before[k][field], (k, field, d[field], before[k][field])
        assert d["presence"] == before[k]["presence"], k
        assert history(v, k) == before_history[k], k
    assert_metrics(v, key, {"temperature": (23.2, "°C"), "humidity": (43.7, "%")})

    # New readings on the learned state topics still land on the right devices, with their units:
    # the tables were rebuilt from the stored retained configs.
    c = v.client()
    c.publish_wait(state, json.dumps({"temperature": 24.0, "humidity": 40.5}))
    c2 = v.client()
    c2.publish_wait(ox_state, json.dumps({"spo2": 95}))
    wait_metric(v, key, "humidity", 40.5)
    assert_metrics(v, key, {"temperature": (24.0, "°C"), "humidity": (40.5, "%")})
    wait_metric(v, ox, f"{ox}_spo2", 95)
    assert_metrics(v, ox, {f"{ox}_spo2": (95, "%")})
    assert latest_stored(v, state)["device"] == key
    assert latest_stored(v, ox_state)["device"] == ox
    for k in (key, ox):
        d = device(v, k)
        assert (d["convention"], d["name"], d["model"]) == \
            (before[k]["convention"], before[k]["name"], before[k]["model"]), d
        # A reading is a sign of life again.
        wait_for(lambda k=k: presence_of(v, k) == "online", what=f"{k} online after its reading")
        assert chain(v, k)[-1] == ("offline", "online"), history(v, k)
    # No device was made up from the topics themselves.
    ids = {d["id"] for d in v.http_get_json("/api/devices")}
    assert ids == {key, ox}, ids
    assert device(v, ox)["presence"]["stale_after"] == 60 * SECOND


# --------------------------------------------------------------------------
# Shelly
# --------------------------------------------------------------------------

def test_shelly_gen1(vigil, players):
    sid = unique("shelly1pm")
    announce = {"id": sid, "model": "SHSW-PM", "mac": "84CCA8A11234", "ip": "192.168.1.30", "new_fw": False,
                "fw_ver": "20230913-114003/v1.14.0-gcb84623"}
    p = play(players, vigil, sid, will={"topic": f"shellies/{sid}/online", "payload": "false", "retain": True},
             messages=[msg(f"shellies/{sid}/online", "true", retain=True),
                       msg("shellies/announce", announce),
                       msg(f"shellies/{sid}/announce", announce),
                       msg(f"shellies/{sid}/relay/0", "on"),
                       msg(f"shellies/{sid}/relay/0/power", "45.2"),
                       msg(f"shellies/{sid}/relay/0/energy", "1234"),
                       msg(f"shellies/{sid}/temperature", "41.5")])
    wait_metric(vigil, sid, "temperature")
    assert_metrics(vigil, sid, {"relay/0": (1, None), "relay/0/power": (45.2, "W"),
                                "relay/0/energy": (1234, "Wmin"), "temperature": (41.5, "°C")})
    d = device(vigil, sid)
    assert (d["convention"], d["root"], d["client_id"]) == ("shelly", f"shellies/{sid}", sid), d
    assert (d["model"], d["manufacturer"], d["firmware"]) == \
        ("SHSW-PM", "Shelly", "20230913-114003/v1.14.0-gcb84623"), d
    assert known(vigil, "shellies") is None and known(vigil, "announce") is None
    p.kill()
    assert_online_then_killed(vigil, sid, "Shelly online: true", f"shellies/{sid}/online", "Shelly online: false")


def test_shelly_gen2(vigil, players):
    sid = unique("shellyplus1pm")
    status = {"id": 0, "source": "init", "output": True, "apower": 8.9, "voltage": 237.5, "current": 0.068,
              "aenergy": {"total": 6.532, "by_minute": [45.199, 47.141, 88.397], "minute_ts": 1654511972},
              "temperature": {"tC": 23.5, "tF": 74.4}}
    rpc = {"src": sid, "dst": f"{sid}/events", "method": "NotifyStatus",
           "params": {"ts": 1654512000.5, "switch:0": {"id": 0, "apower": 12.5}}}
    p = play(players, vigil, sid, will={"topic": f"{sid}/online", "payload": "false", "retain": True},
             messages=[msg(f"{sid}/online", "true", retain=True),
                       msg(f"{sid}/status/switch:0", status),
                       msg(f"{sid}/events/rpc", rpc)])
    wait_metric(vigil, sid, "switch:0.apower", 12.5)
    assert_metrics(vigil, sid, {"switch:0.apower": (12.5, "W"), "switch:0.voltage": (237.5, "V"),
                                "switch:0.current": (0.068, "A"), "switch:0.aenergy.total": (6.532, "Wh"),
                                "switch:0.temperature.tC": (23.5, "°C"), "switch:0.temperature.tF": (74.4, "°F"),
                                "switch:0.output": (1, None)})
    assert "switch:0.id" not in metrics(vigil, sid)
    d = device(vigil, sid)
    assert (d["convention"], d["root"], d["client_id"]) == ("shelly", sid, sid), d
    p.kill()
    assert_online_then_killed(vigil, sid, "Shelly online: true", f"{sid}/online", "Shelly online: false")


# --------------------------------------------------------------------------
# ESPHome
# --------------------------------------------------------------------------

def test_esphome(vigil, players):
    node = unique("livingroom")
    p = play(players, vigil, node, will={"topic": f"{node}/status", "payload": "offline", "retain": True},
             messages=[msg(f"{node}/status", "online", retain=True),
                       msg(f"{node}/sensor/temperature/state", "21.5"),
                       msg(f"{node}/binary_sensor/motion/state", "ON"),
                       msg(f"{node}/switch/relay/state", "OFF")])
    wait_metric(vigil, node, "relay")
    assert_metrics(vigil, node, {"temperature": (21.5, None), "motion": (1, None), "relay": (0, None)})
    d = device(vigil, node)
    assert (d["convention"], d["root"], d["client_id"]) == ("esphome", node, node), d
    p.kill()
    assert_online_then_killed(vigil, node, "ESPHome status: online", f"{node}/status", "ESPHome status: offline")


# --------------------------------------------------------------------------
# Zigbee2MQTT
# --------------------------------------------------------------------------

def test_zigbee2mqtt_bridge_will_and_device_availability(vigil, players):
    sensor = f"{unique('living_room')}/sensor"    # friendly names may contain '/'
    light = unique("hallway_light")
    bridge = "zigbee2mqtt/bridge"
    devices = [
        {"ieee_address": "0x00124b00120144ae", "type": "Coordinator", "friendly_name": "Coordinator"},
        {"ieee_address": "0x00158d0001dc126a", "type": "EndDevice", "friendly_name": sensor,
         "software_build_id": "3000-0001",
         "definition": {"model": "WSDCGQ11LM", "vendor": "Aqara",
                        "description": "Temperature, humidity and pressure sensor",
                        "exposes": [{"type": "numeric", "name": "temperature", "property": "temperature",
                                     "unit": "°C", "access": 1},
                                    {"type": "numeric", "name": "humidity", "property": "humidity", "unit": "%",
                                     "access": 1},
                                    {"type": "numeric", "name": "linkquality", "property": "linkquality",
                                     "unit": "lqi", "access": 1}]}},
        {"ieee_address": "0x0017880104e45517", "type": "Router", "friendly_name": light,
         "definition": {"model": "9290012573A", "vendor": "Philips", "description": "Hue white and color ambiance",
                        "exposes": [{"type": "light", "features": [
                            {"type": "numeric", "name": "brightness", "property": "brightness", "access": 7},
                            {"type": "numeric", "name": "color_temp", "property": "color_temp", "unit": "mired",
                             "access": 7}]}]}}]
    p = play(players, vigil, unique("zigbee2mqtt"),
             will={"topic": f"{bridge}/state", "payload": json.dumps({"state": "offline"}), "retain": True},
             messages=[msg(f"{bridge}/state", {"state": "online"}, retain=True),
                       msg(f"{bridge}/devices", devices, retain=True),
                       msg(f"zigbee2mqtt/{sensor}/availability", {"state": "online"}, retain=True),
                       msg(f"zigbee2mqtt/{light}/availability", {"state": "online"}, retain=True),
                       msg(f"zigbee2mqtt/{sensor}", {"temperature": 21.5, "humidity": 40, "pressure": 1010,
                                                     "linkquality": 120, "last_seen": "2024-01-01T00:00:00Z"}),
                       msg(f"zigbee2mqtt/{light}", {"state": "ON", "brightness": 200, "color_temp": 350,
                                                    "linkquality": 90}),
                       # Zigbee2MQTT says the sensor is gone (it stopped answering on the Zigbee network).
                       msg(f"zigbee2mqtt/{sensor}/availability", {"state": "offline"}, retain=True)])
    wait_metric(vigil, sensor, "linkquality")
    wait_metric(vigil, light, "color_temp")
    assert_metrics(vigil, sensor, {"temperature": (21.5, "°C"), "humidity": (40, "%"), "pressure": (1010, None),
                                   "linkquality": (120, "lqi")})
    assert "last_seen" not in metrics(vigil, sensor)
    assert_metrics(vigil, light, {"brightness": (200, None), "color_temp": (350, "mired")})
    d = device(vigil, sensor)
    assert (d["convention"], d["root"]) == ("zigbee2mqtt", f"zigbee2mqtt/{sensor}"), d
    assert (d["name"], d["model"], d["manufacturer"], d["firmware"]) == \
        ("Temperature, humidity and pressure sensor", "WSDCGQ11LM", "Aqara", "3000-0001"), d
    d = device(vigil, light)
    assert (d["convention"], d["model"], d["manufacturer"]) == ("zigbee2mqtt", "9290012573A", "Philips"), d
    assert known(vigil, "Coordinator") is None, "the coordinator is not a device"
    assert device(vigil, bridge)["convention"] == "zigbee2mqtt"

    # The gateway publishes for several devices: their presence is their availability, nothing else.
    wait_for(lambda: presence_of(vigil, sensor) == "offline", what="the sensor's availability offline")
    online = ("unknown", "online", "announcement", "Zigbee2MQTT availability: online")
    offline = ("online", "offline", "announcement", "Zigbee2MQTT availability: offline")
    h = history(vigil, sensor)
    assert [(t["from"], t["to"], t["source"], t["reason"]) for t in reversed(h)] == [online, offline], h
    h = history(vigil, light)
    assert [(t["from"], t["to"], t["source"], t["reason"]) for t in h] == [online], h

    # The bridge dies: its will says so; its devices' presence does not follow its connection.
    p.kill()
    wait_for(lambda: presence_of(vigil, bridge) == "offline", what="the bridge offline after its will")
    wait_will_stored(vigil, f"{bridge}/state")
    h = history(vigil, bridge)
    assert [(t["from"], t["to"]) for t in reversed(h)] == [("unknown", "online"), ("online", "offline")], h
    assert (h[1]["source"], h[1]["reason"]) in (CONNECTED, ("announcement", "Zigbee2MQTT bridge state: online")), h
    assert (h[0]["source"], h[0]["reason"]) == ("announcement", "Zigbee2MQTT bridge state: offline"), \
        f"a gateway's connection speaks for no device; the bridge's will does: {h}"
    time.sleep(0.5)
    assert presence_of(vigil, light) == "online", history(vigil, light)
    assert len(history(vigil, light)) == 1, history(vigil, light)
    assert len(history(vigil, sensor)) == 2, history(vigil, sensor)


# --------------------------------------------------------------------------
# a user-defined availability topic
# --------------------------------------------------------------------------

def test_generic_availability_topic_from_the_config_file(vigil_factory, tmp_path, players):
    v = vigil_factory(write_config(tmp_path, '[devices]\ntopic_level = 1\n\n'
                                             '[[conventions.generic]]\ntopic = "clinic/+/availability"\n'
                                             'online = ["up"]\noffline = ["down"]\n'))
    dev = unique("ox")
    client_id = unique("c")
    p = play(players, v, client_id, will={"topic": f"clinic/{dev}/availability", "payload": "down", "retain": True},
             messages=[msg(f"clinic/{dev}/availability", "up", retain=True),
                       msg(f"clinic/{dev}/spo2", "97"),
                       msg(f"clinic/{dev}/pulse", "72")])
    wait_metric(v, dev, "pulse")
    assert_metrics(v, dev, {"spo2": (97, None), "pulse": (72, None)})
    d = device(v, dev)
    # The topic rule names the same device; it does not override the user's convention.
    assert (d["convention"], d["root"], d["client_id"]) == ("generic", f"clinic/{dev}", client_id), d
    assert {x["id"] for x in v.http_get_json("/api/devices")} == {dev}
    p.kill()
    assert_online_then_killed(v, dev, f"clinic/{dev}/availability: up", f"clinic/{dev}/availability",
                              f"clinic/{dev}/availability: down")


# --------------------------------------------------------------------------
# learned topics of loose conventions across a restart
# --------------------------------------------------------------------------

def test_learned_shelly_gen2_and_esphome_prefixes_survive_a_restart(vigil_factory, players):
    v = vigil_factory()
    sid = unique("shellyplus1pm")
    node = unique("livingroom")
    s = play(players, v, sid, will={"topic": f"{sid}/online", "payload": "false", "retain": True},
             messages=[msg(f"{sid}/online", "true", retain=True),
                       msg(f"{sid}/status/switch:0", {"id": 0, "apower": 8.9, "voltage": 237.5})])
    e = play(players, v, node, will={"topic": f"{node}/status", "payload": "offline", "retain": True},
             messages=[msg(f"{node}/status", "online", retain=True),
                       msg(f"{node}/sensor/temperature/state", "21.5")])
    wait_metric(v, sid, "switch:0.apower")
    wait_metric(v, node, "temperature")
    s.kill()
    e.kill()
    wait_for(lambda: presence_of(v, sid) == "offline" and presence_of(v, node) == "offline", what="both offline")
    v.stop_ok()
    v.restart()
    # Only the retained `online` / `status` messages say these prefixes are Shelly's and ESPHome's.
    c = v.client()
    c.publish_wait(f"{sid}/status/switch:0", json.dumps({"id": 0, "apower": 20.5, "voltage": 231.0}))
    c2 = v.client()
    c2.publish_wait(f"{node}/sensor/temperature/state", "22.5")
    wait_metric(v, sid, "switch:0.apower", 20.5)
    assert_metrics(v, sid, {"switch:0.apower": (20.5, "W"), "switch:0.voltage": (231.0, "V")})
    wait_metric(v, node, "temperature", 22.5)
    assert not [m for m in metrics(v, sid) if m.startswith("status/")], metrics(v, sid)
    assert "sensor/temperature/state" not in metrics(v, node), metrics(v, node)
    assert (device(v, sid)["convention"], device(v, node)["convention"]) == ("shelly", "esphome")
