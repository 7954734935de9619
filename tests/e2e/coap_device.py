"""A CoAP device for the tests, on aiocoap (PyPI): observable readings in
the content formats devices use, a writable setting, an action, and one
representation large enough to need block-wise transfer.

    python coap_device.py --port 5684 [--bind 127.0.0.1] [--period 0.2]
                          [--multicast IFACE] [--stop-after 5]

Prints "ready <port>" once it answers. Resources:
  /sensors/temp     observable, text/plain number (ct 0), changes each period
  /sensors/env      observable, SenML JSON (ct 110): temperature and humidity
  /sensors/pulse    observable, CBOR (ct 60) map {"bpm": n}
  /config/interval  GET / PUT text (the period, seconds)
  /actions/beep     POST: 2.04 Changed, counts the beeps
  /info/big         3000 bytes of text (block-wise)
With --stop-after N the readings stop changing after N seconds (the device
falls silent but still answers requests).
"""

import argparse
import asyncio
import json
import struct
import sys
import time

import aiocoap
import aiocoap.resource as resource


def cbor_map(key: str, value: float) -> bytes:
    """A one-entry CBOR map {key: float64} (RFC 8949), written by hand."""
    k = key.encode()
    assert len(k) < 24
    return bytes([0xA1, 0x60 | len(k)]) + k + b"\xfb" + struct.pack(">d", value)


class Reading(resource.ObservableResource):
    def __init__(self, device, make, ct, rt, title):
        super().__init__()
        self.device, self.make, self.ct = device, make, ct
        self.rt, self.title = rt, title

    def get_link_description(self):
        d = dict(super().get_link_description())
        d.update(rt=self.rt, ct=str(self.ct), title=self.title)
        return d

    async def render_get(self, request):
        return aiocoap.Message(payload=self.make(self.device.n), content_format=self.ct)


class Interval(resource.Resource):
    def __init__(self, device):
        super().__init__()
        self.device = device

    def get_link_description(self):
        return dict(super().get_link_description(), rt="config", ct="0")

    async def render_get(self, request):
        return aiocoap.Message(payload=str(self.device.period).encode(), content_format=0)

    async def render_put(self, request):
        try:
            self.device.period = max(0.01, float(request.payload.decode()))
        except ValueError:
            return aiocoap.Message(code=aiocoap.BAD_REQUEST, payload=b"a number of seconds")
        return aiocoap.Message(code=aiocoap.CHANGED)


class Beep(resource.Resource):
    def __init__(self, device):
        super().__init__()
        self.device = device

    async def render_post(self, request):
        self.device.beeps += 1
        return aiocoap.Message(code=aiocoap.CHANGED, payload=f"beeps={self.device.beeps}".encode())


class Big(resource.Resource):
    def get_link_description(self):
        return dict(super().get_link_description(), sz="3000", ct="0")

    async def render_get(self, request):
        text = "".join(f"{i:04d}|" for i in range(600))  # 3000 bytes
        return aiocoap.Message(payload=text.encode(), content_format=0)


class Device:
    def __init__(self, period):
        self.period, self.n, self.beeps = period, 0, 0
        self.readings = []


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5683)
    ap.add_argument("--bind", default="127.0.0.1", help="'::' to answer IPv4 and IPv6 (and multicast)")
    ap.add_argument("--period", type=float, default=0.5)
    ap.add_argument("--multicast", action="append", default=[], help="interface to join All CoAP Nodes on")
    ap.add_argument("--stop-after", type=float, default=None)
    args = ap.parse_args()

    device = Device(args.period)
    site = resource.Site()
    site.add_resource([".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader))
    readings = [
        (["sensors", "temp"], Reading(device, lambda n: f"{20 + n / 10:.1f}".encode(), 0, "temperature", "Temperature")),
        (["sensors", "env"], Reading(device, lambda n: json.dumps(
            [{"bn": "env/", "n": "temp", "u": "Cel", "v": 20 + n / 10}, {"n": "humidity", "u": "%RH", "v": 40 + n % 10}]
        ).encode(), 110, "env", "Environment")),
        (["sensors", "pulse"], Reading(device, lambda n: cbor_map("bpm", 60.0 + n), 60, "pulse", "Pulse")),
    ]
    for path, r in readings:
        site.add_resource(path, r)
        device.readings.append(r)
    site.add_resource(["config", "interval"], Interval(device))
    site.add_resource(["actions", "beep"], Beep(device))
    site.add_resource(["info", "big"], Big())

    # All CoAP Nodes: IPv4, and link-local IPv6 where the interface has it.
    multicast = [(a, i) for i in args.multicast for a in ("224.0.1.187", "ff02::fd")]
    # UDP only: aiocoap would also listen on TCP (and more) at the same port.
    await aiocoap.Context.create_server_context(site, bind=(args.bind, args.port), multicast=multicast,
                                                transports=["udp6"])
    print(f"ready {args.port}", flush=True)
    started = time.monotonic()
    while True:
        await asyncio.sleep(device.period)
        if args.stop_after is not None and time.monotonic() - started > args.stop_after:
            continue
        device.n += 1
        for r in device.readings:
            r.updated_state()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
