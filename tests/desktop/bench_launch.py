"""Desktop benchmarks (not tests): how long the window takes to show the
last-known state after launch, and the app's memory under load.

    make build && xvfb-run -a -s "-screen 0 1440x900x24" .venv/bin/python tests/desktop/bench_launch.py \
        [--app target/release/vigil-desktop] [--devices 1000] [--rate 1000] [--seconds 60]

1. Fills a fresh data folder with `--devices` devices through the app itself
   (one paho-mqtt client, one reading each), then quits the app.
2. Launch: starts the app again on that folder under tauri-driver, five times,
   and times from the WebDriver "new session" request (which starts the
   process) until the list shows the devices (a row in the window and the
   count of devices right). Warm: the binary and the database are in the page
   cache after the first run.
3. Load: with the window open, `--devices` paho clients publish `--rate`
   messages a second in total for `--seconds`; the app's RSS (VmRSS, its
   peak VmHWM) is sampled every second.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.options import ArgOptions

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    def __init__(self, app: Path, data: Path, mqtt_port: int):
        self.port, native = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env.update(VIGIL_DATA_DIR=str(data), VIGIL_MQTT_LISTEN=f"127.0.0.1:{mqtt_port}", VIGIL_WS_LISTEN="off",
                   VIGIL_TLS_LISTEN="off", VIGIL_WSS_LISTEN="off", VIGIL_LOG="warn")
        # Closing the window quits the app (WebDriver closes it after each run).
        data.mkdir(parents=True, exist_ok=True)
        (data / "desktop.json").write_text('{"close_to_tray": false}')
        driver = os.path.expanduser("~/.cargo/bin/tauri-driver")
        self.driver = subprocess.Popen([driver, "--port", str(self.port), "--native-port", str(native)], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if time.monotonic() > deadline:
                raise SystemExit("tauri-driver did not start")
            time.sleep(0.05)
        self.app = app

    def open(self):
        options = ArgOptions()
        options.set_capability("browserName", "wry")
        options.set_capability("tauri:options", {"application": str(self.app)})
        started = time.monotonic()
        self.session = webdriver.Remote(command_executor=f"http://127.0.0.1:{self.port}", options=options)
        return started

    def pid(self) -> int:
        out = subprocess.run(["pgrep", "-n", "-f", str(self.app)], capture_output=True, text=True).stdout.split()
        return int(out[0])

    def close(self):
        try:
            self.session.quit()
        except Exception:  # noqa: BLE001
            pass
        os.killpg(self.driver.pid, signal.SIGTERM)
        self.driver.wait(10)
        time.sleep(0.5)


def rss(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    get = lambda key: int(next(l for l in status.splitlines() if l.startswith(key)).split()[1]) / 1024  # noqa: E731
    return get("VmRSS:"), get("VmHWM:")


def fill(port: int, devices: int) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="filler")
    c.connect("127.0.0.1", port)
    c.loop_start()
    for i in range(devices):
        c.publish(f"bench{i:05d}/env", f'{{"temp": {20 + i % 10}, "humidity": {40 + i % 20}}}', qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--app", default=str(REPO / "target" / "release" / "vigil-desktop"))
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--launches", type=int, default=5)
    a = p.parse_args()
    app = Path(a.app)
    data = Path(tempfile.mkdtemp(prefix="vigil-desktop-bench-")) / "data"
    port = free_port()

    first = App(app, data, port)
    first.open()
    fill(port, a.devices)
    time.sleep(1.5)  # the last batch committed
    first.close()

    times = []
    for _ in range(a.launches):
        run = App(app, data, port)
        started = run.open()
        d = run.session
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = d.find_elements(By.CSS_SELECTOR, "[data-device]")
            count = d.find_elements(By.CSS_SELECTOR, '[data-testid="device-count"]')
            if shown and (not count or str(a.devices) in count[0].text.replace(",", "")):
                break
            time.sleep(0.01)
        times.append(time.monotonic() - started)
        run.close()
    print(f"launch → {a.devices} devices shown: " + ", ".join(f"{t * 1000:.0f} ms" for t in times)
          + f" (median {statistics.median(times) * 1000:.0f} ms; first run cold)")

    run = App(app, data, port)
    run.open()
    pid = run.pid()
    stop = threading.Event()
    per_client = a.rate / a.devices

    def publisher(ids: range) -> None:
        clients = []
        for i in ids:
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"load{i}")
            c.connect("127.0.0.1", port)
            c.loop_start()
            clients.append((i, c))
        n = 0
        start = time.monotonic()
        while not stop.is_set():
            for i, c in clients:
                c.publish(f"bench{i:05d}/env", f'{{"temp": {20 + n % 10}}}', qos=0)
            n += 1
            time.sleep(max(0.0, start + n / per_client - time.monotonic()))
        for _, c in clients:
            c.disconnect()
            c.loop_stop()

    threads = [threading.Thread(target=publisher, args=(range(k, a.devices, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    samples = []
    for _ in range(a.seconds):
        time.sleep(1)
        samples.append(rss(pid))
    stop.set()
    for t in threads:
        t.join()
    stats = run.session.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.__TAURI_INTERNALS__.invoke('request', {method: 'GET', path: '/api/stats'}).then((a) => done(a.body));")
    run.close()
    print(f"{a.devices} devices at {a.rate} msg/s for {a.seconds} s (window open on the device list): "
          f"RSS median {statistics.median(s[0] for s in samples):.0f} MiB, peak (VmHWM) {max(s[1] for s in samples):.0f} MiB; "
          f"the app received {stats['received']} messages")


if __name__ == "__main__":
    main()
