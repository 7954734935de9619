"""CoAP discovery benchmark: N devices on a namespace LAN, how many answer
within one discovery window, and how long a round takes.

    sudo .venv/bin/python tests/bench/coap_discovery.py [--devices 50] [--rounds 3] [--vigil target/release/vigil]

Builds the LAN of tests/e2e/netns.py (a bridge in Vigil's namespace, one
namespace per device on a veth, link-local addresses; nothing leaves the
machine), starts one aiocoap device (tests/e2e/coap_device.py, joined to
All CoAP Nodes) in each, then `vigil serve` in the hub with discovery on
br0, and asks for rounds through `POST /api/coap/discover`. Prints, per
round, how many of the devices answered over IPv4 and over IPv6 within the
window (6 s), and the round's duration.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from helpers import DeviceProcess, http_request  # noqa: E402
from netns import Namespace, can_make_namespaces, lan  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vigil", default=str(REPO / "target" / "release" / "vigil"))
    args = ap.parse_args()
    why = can_make_namespaces()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    made: list[Namespace] = []
    procs: list[DeviceProcess] = []

    def make(prefix: str = "vigil") -> Namespace:
        ns = Namespace(prefix)
        made.append(ns)
        return ns

    vigil = None
    try:
        t0 = time.monotonic()
        hub, devs = lan(make, args.devices)
        for dev, _ in devs:
            procs.append(DeviceProcess(dev.exec_args(sys.executable, str(REPO / "tests/e2e/coap_device.py"),
                                                     "--bind", "::", "--port", "5683", "--multicast", "eth0",
                                                     "--period", "5"), "ready"))
        print(f"{args.devices} devices up in {time.monotonic() - t0:.1f} s")
        time.sleep(1)
        data = Path(tempfile.mkdtemp(prefix="vigil-coap-bench-"))
        (data / "vigil.toml").write_text('[coap]\ninterfaces = ["br0"]\nprobe_every_s = 3600\n')
        vigil = subprocess.Popen(hub.exec_args(args.vigil, "serve", "--data-dir", str(data / "data"),
                                               "--config", str(data / "vigil.toml"), "--http-listen", "127.0.0.1:0",
                                               "--mqtt-listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0",
                                               "--tls-listen", "off", "--wss-listen", "off"),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready = json.loads(vigil.stdout.readline())
        host, _, port = ready["http"].rpartition(":")
        addr = (host, int(port))
        for n in range(args.rounds):
            started = time.monotonic()
            r = hub.call(lambda: http_request(addr, "POST", "/api/coap/discover", {}, timeout=60))
            took = time.monotonic() - started
            round_ = r.json()
            v4 = [f for f in round_["found"] if not f.startswith("coap/[")]
            v6 = [f for f in round_["found"] if f.startswith("coap/[")]
            print(f"round {n + 1}: {len(v4)}/{args.devices} over IPv4, {len(v6)}/{args.devices} over IPv6 "
                  f"within the {round_['window_s']} s window; round took {took:.2f} s; errors {round_['errors']}")
        return 0
    finally:
        if vigil is not None:
            vigil.terminate()
            vigil.wait(20)
        for p in procs:
            p.kill()
        for ns in made:
            ns.close()


if __name__ == "__main__":
    sys.exit(main())
