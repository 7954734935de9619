"""CoAP multicast discovery, only ever inside network namespaces these tests
make (never from the machine's own: it has a default route, and a multicast
packet there would leave the machine).

- IPv4 on loopback: one namespace, lo with multicast routed to it, one
  device per port (every answer comes from 127.0.0.1).
- A small LAN: Vigil's namespace holds a bridge; each device has a namespace
  of its own joined to it by a veth pair, with link-local addresses
  (169.254/16 and fe80::/64), so IPv6 discovery (ff02::fd) works too.

Devices: aiocoap (tests/e2e/coap_device.py), Debian's libcoap server and
node-coap (tests/e2e/coap_node_device.mjs).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from helpers import DeviceProcess, wait_for
from netns import Namespace, lan, namespaces  # noqa: F401  (the fixture)

HERE = Path(__file__).resolve().parent
UI = HERE.parents[1] / "ui"  # node-coap is in ui/node_modules
ALL_THREE = ["coap/127.0.0.1:5683", "coap/127.0.0.1:5684", "coap/127.0.0.1:5685"]
LIBCOAP = "coap-server-notls"


@pytest.fixture
def processes():
    started: list[DeviceProcess] = []

    def start(args: list[str], ready: str | None = None, cwd: Path | None = None) -> DeviceProcess:
        p = DeviceProcess(args, ready, cwd=cwd)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


def start_vigil(vigil_factory, ns: Namespace, tmp_path: Path, coap: str):
    config = tmp_path / "vigil.toml"
    config.write_text("[coap]\ndiscovery = true\n" + coap)
    v = vigil_factory.new(["--config", str(config)])
    v.start(cmd=ns.exec_args(*v.command()))
    return v


def api(ns: Namespace, v, path: str, method: str = "GET"):
    def go():
        if method == "GET":
            return v.http_get_json(path)
        return v.http_post_json(path, {})
    return ns.call(go)


def test_discovery_finds_each_device_on_loopback_multicast(vigil_factory, namespaces, processes, tmp_path):
    ns = namespaces().loopback_multicast()
    # aiocoap on 5683, libcoap on 5684, node-coap on 5685, each joined to
    # 224.0.1.187 on lo.
    processes(ns.exec_args(sys.executable, str(HERE / "coap_device.py"), "--bind", "::", "--port", "5683",
                           "--multicast", "lo", "--period", "0.3"), "ready")
    processes(ns.exec_args(LIBCOAP, "-p", "5684", "-g", "224.0.1.187", "-G", "lo"))
    processes(ns.exec_args("node", str(HERE / "coap_node_device.mjs"), "5685", "0.0.0.0", "--multicast", "127.0.0.1"),
              "ready", cwd=UI)
    time.sleep(0.5)
    v = start_vigil(vigil_factory, ns, tmp_path,
                    'interfaces = ["lo"]\nports = [5683, 5684, 5685]\nrediscover_every_s = 0\n')

    # The round at start: libcoap delays its answer at random (up to seconds).
    coap = wait_for(lambda: (c := api(ns, v, "/api/coap"))["last_discovery"] and c, 15,
                    what="the first discovery round")
    round_ = coap["last_discovery"]
    assert round_["interfaces"] == ["lo"] and round_["window_s"] == 6.0
    assert sorted(round_["found"]) == ALL_THREE, round_
    assert round_["errors"] == []
    devices = {d["device"]: d for d in coap["devices"]}
    assert devices["coap/127.0.0.1:5683"]["found_by"] == "multicast on lo"
    time_ = next(r for r in devices["coap/127.0.0.1:5684"]["resources"] if r["path"] == "/time")
    assert time_["obs"] and time_["rt"] == "ticks"

    # Found devices are observed like any other: readings from both land.
    ns.call(lambda: v.wait_stored("coap/127.0.0.1:5683/sensors/temp", count=3))
    ns.call(lambda: v.wait_stored("coap/127.0.0.1:5684/time", count=2, timeout=10))
    ns.call(lambda: v.wait_stored("coap/127.0.0.1:5685/heart", count=3))

    # On demand: a second round finds the same devices, once each.
    again = api(ns, v, "/api/coap/discover", "POST")
    assert sorted(again["found"]) == ALL_THREE
    assert len(api(ns, v, "/api/coap")["devices"]) == 3


def test_discovery_over_a_namespace_lan_finds_devices_over_ipv4_and_ipv6(vigil_factory, namespaces, processes, tmp_path):
    hub, devs = lan(namespaces, 2)
    (d1, a1), (d2, a2) = devs
    # aiocoap joins both All CoAP Nodes groups; libcoap only the IPv4 one.
    processes(d1.exec_args(sys.executable, str(HERE / "coap_device.py"), "--bind", "::", "--port", "5683",
                           "--multicast", "eth0", "--period", "0.3"), "ready")
    processes(d2.exec_args(LIBCOAP, "-p", "5683", "-g", "224.0.1.187", "-G", "eth0"))
    time.sleep(1.0)  # link-local addresses and the bridge's ports come up
    v = start_vigil(vigil_factory, hub, tmp_path, 'interfaces = ["br0"]\nrediscover_every_s = 0\n')

    coap = wait_for(lambda: (c := api(hub, v, "/api/coap"))["last_discovery"] and c, 15,
                    what="the first discovery round")
    found = coap["last_discovery"]["found"]
    assert f"coap/{a1}:5683" in found and f"coap/{a2}:5683" in found, coap["last_discovery"]
    v6 = [f for f in found if f.startswith("coap/[fe80::")]
    assert len(v6) == 1, f"aiocoap alone joins ff02::fd: {coap['last_discovery']}"
    # Its link-local address keeps the interface (scope id): the follow-up
    # unicast requests (observe) reach it, and its readings are stored.
    assert "%" in v6[0], v6
    hub.call(lambda: v.wait_stored(f"{v6[0]}/sensors/temp", count=3))
    hub.call(lambda: v.wait_stored(f"coap/{a2}:5683/time", count=2, timeout=10))


def test_discovery_on_a_schedule_finds_a_device_that_came_later(vigil_factory, namespaces, processes, tmp_path):
    ns = namespaces().loopback_multicast()
    v = start_vigil(vigil_factory, ns, tmp_path,
                    'interfaces = ["lo"]\nrediscover_every_s = 2\ndiscovery_window_s = 1\n')
    first = wait_for(lambda: (c := api(ns, v, "/api/coap"))["last_discovery"], 10, what="the round at start")
    assert first["found"] == [] and first["errors"] == []
    processes(ns.exec_args(sys.executable, str(HERE / "coap_device.py"), "--bind", "::", "--port", "5683",
                           "--multicast", "lo", "--period", "0.3"), "ready")
    later = wait_for(lambda: (r := api(ns, v, "/api/coap")["last_discovery"])["found"] and r, 15,
                     what="a later round finding the device")
    assert later["at"] > first["at"] and later["found"] == ["coap/127.0.0.1:5683"]
    ns.call(lambda: v.wait_stored("coap/127.0.0.1:5683/sensors/temp", count=2))
