"""A paho client with a last will, run as a separate process so a test can SIGKILL it.

usage: will_client.py PORT VERSION(3.1.1|5) CLIENT_ID WILL_TOPIC WILL_PAYLOAD_HEX [clean]

Prints `connected` on stdout once the broker accepted it. With `clean` it then
sends DISCONNECT and prints `disconnected`; otherwise it idles (at most 60 s).
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> int:
    port, version, client_id, topic, payload_hex = sys.argv[1:6]
    clean = len(sys.argv) > 6 and sys.argv[6] == "clean"
    protocol = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
    connected = threading.Event()
    gone = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=protocol, reconnect_on_failure=False)
    client.will_set(topic, bytes.fromhex(payload_hex), qos=1, retain=False)
    client.on_connect = lambda c, u, f, rc, p: (not rc.is_failure) and connected.set()
    client.on_disconnect = lambda c, u, f, rc, p: gone.set()
    client.connect("127.0.0.1", int(port), keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        print("no connack", flush=True)
        return 2
    print("connected", flush=True)
    if clean:
        client.disconnect()
        gone.wait(5)
        client.loop_stop()
        print("disconnected", flush=True)
        return 0
    time.sleep(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
