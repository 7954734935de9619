"""Plays a device: a paho-mqtt client in its own process, so a test can SIGKILL it
and let the broker send its last will, the way a device that loses power does.

usage: device_player.py SPEC_JSON

SPEC_JSON: {
  "port": 1883, "client_id": "DVES_1", "version": "3.1.1" | "5", "keepalive": 60,
  "will": {"topic": "...", "payload": "text" | null, "payload_hex": "..", "retain": true, "qos": 1},
  "messages": [{"topic": "...", "payload": "text", "payload_hex": "..", "retain": false, "qos": 1}],
  "repeat": {"topic": "...", "payload": "text", "every": 0.5, "count": 6},
  "then": "idle" | "disconnect"
}

Prints `connected`, then `published` once every message (and the repeats) were
acknowledged; with "then": "disconnect" it sends DISCONNECT and prints
`disconnected`; otherwise it idles for at most 120 s.
"""

import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def payload_of(m: dict) -> bytes:
    if m.get("payload_hex") is not None:
        return bytes.fromhex(m["payload_hex"])
    p = m.get("payload")
    if p is None:
        return b""
    return p if isinstance(p, bytes) else (p if isinstance(p, str) else json.dumps(p)).encode()


def main() -> int:
    spec = json.loads(sys.argv[1])
    protocol = mqtt.MQTTv5 if spec.get("version") == "5" else mqtt.MQTTv311
    connected = threading.Event()
    gone = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=spec["client_id"], protocol=protocol,
                         reconnect_on_failure=False)
    will = spec.get("will")
    if will:
        client.will_set(will["topic"], payload_of(will), qos=will.get("qos", 1),
                        retain=will.get("retain", False))
    client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and connected.set()
    client.on_disconnect = lambda c, u, f, rc, p: gone.set()
    client.connect("127.0.0.1", int(spec["port"]), keepalive=spec.get("keepalive", 60))
    client.loop_start()
    if not connected.wait(10):
        print("no connack", flush=True)
        return 2
    print("connected", flush=True)
    infos = []
    for m in spec.get("messages", []):
        infos.append(client.publish(m["topic"], payload_of(m), qos=m.get("qos", 1),
                                    retain=m.get("retain", False)))
    repeat = spec.get("repeat")
    if repeat:
        for _ in range(int(repeat["count"])):
            infos.append(client.publish(repeat["topic"], payload_of(repeat), qos=1))
            time.sleep(float(repeat["every"]))
    for info in infos:
        info.wait_for_publish(10)
    print("published", flush=True)
    if spec.get("then") == "disconnect":
        client.disconnect()
        gone.wait(5)
        client.loop_stop()
        print("disconnected", flush=True)
        return 0
    time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
