"""Each device convention end to end: a real paho-mqtt client in its own process
plays the device's documented messages with the last will its convention uses,
is killed, and the device record, its metrics with units and its presence
history are checked through the HTTP API."""

from __future__ import annotations

import json
import pytest

from helpers import unique, wait_for
from test_presence_alerts import device, history, players, presence_of, write_config  # noqa: F401


def metric(v, key: str, name: str) -> dict | None:
    if not presence_of(v, key):
        return None
    return next((m for m in device(v, key)["metrics"] if m["name"] == name), None)


def offline_after_kill(v, key: str, will_reason: str) -> dict:
    wait_for(lambda: presence_of(v, key) == "offline", what=f"{key} offline after the kill")
    last = history(v, key)[0]
    assert last["to"] == "offline"
    assert (last["source"], last["reason"]) in (
        ("connection", "connection lost: connection dropped"),
        ("announcement", will_reason),
    ), last
    return last


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_tasmota(vigil, players, version):
    t = unique("tasmota")
    mac = unique("").replace("-", "").upper()[:12]
    config = {"ip": "192.168.1.20", "dn": "Kitchen plug", "fn": ["Kitchen plug", None], "hn": "tasmota-1",
              "mac": mac, "md": "Sonoff Basic", "ty": 0, "ofln": "Offline", "onln": "Online",
              "sw": "12.1.1", "t": t, "ft": "%prefix%/%topic%/", "tp": ["cmnd", "stat", "tele"], "ver": 1}
    sensor = {"Time": "2021-01-01T00:00:00", "ENERGY": {"TotalStartTime": "2021-01-01T00:00:00", "Total": 0.003,
              "Yesterday": 0.0, "Today": 0.003, "Power": 45, "ApparentPower": 50, "ReactivePower": 20,
              "Factor": 0.9, "Voltage": 230, "Current": 0.196}}
    p = players({"port": vigil.mqtt_port, "client_id": f"DVES_{mac[-6:]}", "version": version,
                 "will": {"topic": f"tele/{t}/LWT", "payload": "Offline", "retain": True},
                 "messages": [
                     {"topic": f"tele/{t}/LWT", "payload": "Online", "retain": True},
                     {"topic": f"tasmota/discovery/{mac}/config", "payload": json.dumps(config), "retain": True},
                     {"topic": f"tele/{t}/SENSOR", "payload": json.dumps(sensor)},
                 ]})
    p.expect("published")
    power = wait_for(lambda: metric(vigil, t, "ENERGY.Power"), what="the Power reading")
    assert (power["value"], power["unit"]) == (45, "W")
    assert metric(vigil, t, "ENERGY.Total")["unit"] == "kWh"
    d = device(vigil, t)
    assert (d["convention"], d["name"], d["model"], d["firmware"]) == ("tasmota", "Kitchen plug", "Sonoff Basic", "12.1.1")
    assert d["root"] == f"tele/{t}"
    assert d["presence"]["state"] == "online"
    p.kill()
    offline_after_kill(vigil, t, "Tasmota LWT: Offline")
    assert history(vigil, t)[-1]["from"] == "unknown"


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_homie_v4(vigil, players, version):
    dev = unique("super-car")
    base = f"homie/{dev}"
    p = players({"port": vigil.mqtt_port, "client_id": unique("homie"), "version": version,
                 "will": {"topic": f"{base}/$state", "payload": "lost", "retain": True},
                 "messages": [{"topic": f"{base}/{k}", "payload": v, "retain": True} for k, v in [
                     ("$homie", "4.0.0"), ("$name", "Super car"), ("$state", "init"),
                     ("$nodes", "engine"), ("engine/$properties", "temperature"),
                     ("engine/temperature/$unit", "°C"), ("engine/temperature/$datatype", "float"),
                     ("engine/temperature", "21.5"), ("$state", "ready")]]})
    p.expect("published")
    m = wait_for(lambda: metric(vigil, dev, "engine/temperature"), what="the temperature")
    assert (m["value"], m["unit"]) == (21.5, "°C")
    d = device(vigil, dev)
    assert (d["convention"], d["name"], d["presence"]["state"]) == ("homie", "Super car", "online")
    p.kill()
    offline_after_kill(vigil, dev, "Homie $state: lost")


def test_homie_v5_sleeping(vigil, players):
    dev = unique("thermostat")
    base = f"homie/5/{dev}"
    description = {"homie": "5.0", "version": 1, "name": "Hall thermostat",
                   "nodes": {"t": {"properties": {"temperature": {"datatype": "float", "unit": "°C"}}}}}
    p = players({"port": vigil.mqtt_port, "client_id": unique("homie5"),
                 "will": {"topic": f"{base}/$state", "payload": "lost", "retain": True},
                 "messages": [{"topic": f"{base}/$description", "payload": json.dumps(description), "retain": True},
                              {"topic": f"{base}/$state", "payload": "ready", "retain": True},
                              {"topic": f"{base}/t/temperature", "payload": "19.5", "retain": True},
                              {"topic": f"{base}/$state", "payload": "sleeping", "retain": True}],
                 "then": "disconnect"})
    p.expect("disconnected")
    wait_for(lambda: presence_of(vigil, dev) == "sleeping", what="sleeping")
    assert metric(vigil, dev, "t/temperature")["unit"] == "°C"
    assert device(vigil, dev)["name"] == "Hall thermostat"
    assert history(vigil, dev)[0]["reason"] == "Homie $state: sleeping"


def test_home_assistant_discovery_survives_a_restart(vigil_factory, players):
    v = vigil_factory()
    node = unique("bedroom")
    state = f"home/{node}/state"
    common = {"state_topic": state, "availability_topic": f"home/{node}/status",
              "device": {"identifiers": [node], "name": "Bedroom", "manufacturer": "Example sensors Ltd.",
                         "model": "K9", "sw_version": "2024.1.0"}}
    t = dict(common, device_class="temperature", unit_of_measurement="°C",
             value_template="{{ value_json.temperature}}", unique_id=f"{node}-t")
    h = dict(common, device_class="humidity", unit_of_measurement="%",
             value_template="{{ value_json.humidity}}", unique_id=f"{node}-h")
    p = players({"port": v.mqtt_port, "client_id": unique("ha"),
                 "will": {"topic": f"home/{node}/status", "payload": "offline", "retain": True},
                 "messages": [
                     {"topic": f"homeassistant/sensor/{node}/temperature/config", "payload": json.dumps(t), "retain": True},
                     {"topic": f"homeassistant/sensor/{node}/humidity/config", "payload": json.dumps(h), "retain": True},
                     {"topic": f"home/{node}/status", "payload": "online", "retain": True},
                     {"topic": state, "payload": json.dumps({"temperature": 23.2, "humidity": 43.7})}]})
    p.expect("published")
    m = wait_for(lambda: metric(v, node, "temperature"), what="the temperature")
    assert (m["value"], m["unit"]) == (23.2, "°C")
    assert metric(v, node, "humidity")["unit"] == "%"
    d = device(v, node)
    assert (d["convention"], d["name"], d["model"], d["manufacturer"]) == ("home_assistant", "Bedroom", "K9", "Example sensors Ltd.")
    p.kill()
    offline_after_kill(v, node, f"Home Assistant availability home/{node}/status: offline")
    v.stop_ok()
    v.restart()
    # The configs are retained: after a restart a new reading still lands on the device.
    c = v.client()
    c.publish_wait(state, json.dumps({"temperature": 24.0, "humidity": 40.0}))
    wait_for(lambda: (metric(v, node, "temperature") or {}).get("value") == 24.0, what="a reading after restart")
    assert metric(v, node, "temperature")["unit"] == "°C"
    assert device(v, node)["name"] == "Bedroom"


def test_zigbee2mqtt_bridge_devices_and_availability(vigil_factory, tmp_path, players):
    base = unique("z2m")
    v = vigil_factory(write_config(tmp_path, f'[conventions]\nzigbee2mqtt_prefix = "{base}"\n'))
    name = "living_room/sensor"
    devices = [{"ieee_address": "0x00158d0001dc126a", "type": "EndDevice", "friendly_name": name,
                "software_build_id": "3000-0001",
                "definition": {"model": "WSDCGQ11LM", "vendor": "Aqara", "description": "Temperature and humidity sensor",
                               "exposes": [{"type": "numeric", "property": "temperature", "unit": "°C"},
                                           {"type": "numeric", "property": "humidity", "unit": "%"}]}}]
    p = players({"port": v.mqtt_port, "client_id": unique("z2m"),
                 "will": {"topic": f"{base}/bridge/state", "payload": json.dumps({"state": "offline"}), "retain": True},
                 "messages": [{"topic": f"{base}/bridge/state", "payload": json.dumps({"state": "online"}), "retain": True},
                              {"topic": f"{base}/bridge/devices", "payload": json.dumps(devices), "retain": True},
                              {"topic": f"{base}/{name}/availability", "payload": json.dumps({"state": "online"}), "retain": True},
                              {"topic": f"{base}/{name}", "payload": json.dumps({"temperature": 21.5, "humidity": 40, "linkquality": 120})},
                              {"topic": f"{base}/{name}/availability", "payload": "offline", "retain": True}]})
    p.expect("published")
    m = wait_for(lambda: metric(v, name, "temperature"), what="the temperature")
    assert (m["value"], m["unit"]) == (21.5, "°C")
    d = device(v, name)
    assert (d["convention"], d["model"], d["manufacturer"], d["firmware"]) == ("zigbee2mqtt", "WSDCGQ11LM", "Aqara", "3000-0001")
    wait_for(lambda: presence_of(v, name) == "offline", what="the device's availability offline")
    assert history(v, name)[0]["reason"] == "Zigbee2MQTT availability: offline"
    bridge = f"{base}/bridge"
    assert presence_of(v, bridge) == "online"
    p.kill()
    wait_for(lambda: presence_of(v, bridge) == "offline", what="the bridge offline after its will")


def test_shelly_gen1_and_gen2(vigil, players):
    gen1 = unique("shelly1pm")
    announce = {"id": gen1, "model": "SHSW-PM", "mac": "84CCA8A11234", "ip": "192.168.1.30",
                "new_fw": False, "fw_ver": "20230913-114003/v1.14.0-gcb84623"}
    p1 = players({"port": vigil.mqtt_port, "client_id": gen1,
                  "will": {"topic": f"shellies/{gen1}/online", "payload": "false", "retain": True},
                  "messages": [{"topic": f"shellies/{gen1}/online", "payload": "true", "retain": True},
                               {"topic": "shellies/announce", "payload": json.dumps(announce)},
                               {"topic": f"shellies/{gen1}/relay/0/power", "payload": "45.2"}]})
    gen2 = unique("shellyplus1pm")
    status = {"id": 0, "source": "init", "output": True, "apower": 8.9, "voltage": 237.5, "current": 0.068,
              "aenergy": {"total": 6.532}, "temperature": {"tC": 23.5, "tF": 74.4}}
    p2 = players({"port": vigil.mqtt_port, "client_id": gen2,
                  "will": {"topic": f"{gen2}/online", "payload": "false", "retain": True},
                  "messages": [{"topic": f"{gen2}/online", "payload": "true", "retain": True},
                               {"topic": f"{gen2}/status/switch:0", "payload": json.dumps(status)}]})
    p1.expect("published")
    p2.expect("published")
    m = wait_for(lambda: metric(vigil, gen1, "relay/0/power"), what="gen1 power")
    assert (m["value"], m["unit"]) == (45.2, "W")
    assert device(vigil, gen1)["model"] == "SHSW-PM"
    m = wait_for(lambda: metric(vigil, gen2, "switch:0.apower"), what="gen2 power")
    assert (m["value"], m["unit"]) == (8.9, "W")
    assert metric(vigil, gen2, "switch:0.temperature.tC")["unit"] == "°C"
    assert device(vigil, gen2)["convention"] == "shelly"
    p1.kill()
    p2.kill()
    offline_after_kill(vigil, gen1, "Shelly online: false")
    offline_after_kill(vigil, gen2, "Shelly online: false")


def test_esphome(vigil, players):
    node = unique("livingroom")
    p = players({"port": vigil.mqtt_port, "client_id": node,
                 "will": {"topic": f"{node}/status", "payload": "offline", "retain": True},
                 "messages": [{"topic": f"{node}/status", "payload": "online", "retain": True},
                              {"topic": f"{node}/sensor/temperature/state", "payload": "21.5"},
                              {"topic": f"{node}/binary_sensor/motion/state", "payload": "ON"}]})
    p.expect("published")
    m = wait_for(lambda: metric(vigil, node, "temperature"), what="the temperature")
    assert m["value"] == 21.5
    assert metric(vigil, node, "motion")["value"] == 1
    assert device(vigil, node)["convention"] == "esphome"
    p.kill()
    offline_after_kill(vigil, node, "ESPHome status: offline")


def test_generic_availability_topic(vigil_factory, tmp_path, players):
    v = vigil_factory(write_config(tmp_path, '[[conventions.generic]]\ntopic = "clinic/+/availability"\n'
                                             'online = ["up"]\noffline = ["down"]\n'))
    dev = unique("ox")
    p = players({"port": v.mqtt_port, "client_id": unique("c"),
                 "will": {"topic": f"clinic/{dev}/availability", "payload": "down", "retain": True},
                 "messages": [{"topic": f"clinic/{dev}/availability", "payload": "up", "retain": True},
                              {"topic": f"{dev}/spo2", "payload": "97"}]})
    p.expect("published")
    wait_for(lambda: presence_of(v, dev) == "online", what="online")
    wait_for(lambda: metric(v, dev, "spo2"), what="its reading on its own topic")
    p.kill()
    offline_after_kill(v, dev, f"clinic/{dev}/availability: down")
