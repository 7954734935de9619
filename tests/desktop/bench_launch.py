"""Desktop benchmarks (not tests): how long the window takes to show the
last-known state after launch, and the app's memory under load.

    cargo build --release -p vigil-cli -p vigil-desktop
    xvfb-run -a -s "-screen 0 1440x900x24" .venv/bin/python tests/desktop/bench_launch.py \
        [--app target/release/vigil-desktop] [--vigil target/release/vigil] \
        [--devices 1000] [--rate 1000] [--seconds 60]

The devices are played by `vigil bench ingest --broker` (the bench harness's
load generator, Rust, one MQTT connection per device) publishing into the
app's embedded broker.

1. Fills a fresh data folder with `--devices` devices through the app itself
   (one QoS 1 reading each), then quits the app.
2. Launch: starts the app again on that folder under tauri-driver, five times,
   and times from the WebDriver "new session" request (which starts the
   process) until the list shows the devices (a row in the window and the
   count of devices right). Warm: the binary and the database are in the page
   cache after the first run.
3. Load: with the window open on the device list, the `--devices` devices
   publish `--rate` messages a second in total (QoS 0) for `--seconds`; the
   app's RSS (VmRSS, its peak VmHWM) is sampled every second, and the count
   the app received is read from its API.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

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

    def api_stats(self) -> dict:
        return self.session.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.__TAURI_INTERNALS__.invoke('request', {method: 'GET', path: '/api/stats'})"
            ".then((a) => done(a.body));")

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


def status(pid: int, key: str) -> float:
    """A /proc/PID/status figure in MiB (0 once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return int(next(l for l in text.splitlines() if l.startswith(key)).split()[1]) / 1024


def descendants(pid: int) -> list[int]:
    """WebKit's web and network processes, which the app starts."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss(pid: int) -> tuple[float, float, float]:
    """The app's RSS and peak RSS, and the RSS of the app with WebKit's processes."""
    webkit = sum(status(p, "VmRSS:") for p in descendants(pid))
    own = status(pid, "VmRSS:")
    return own, status(pid, "VmHWM:"), own + webkit


def load(vigil: str, port: int, devices: int, messages: int, qos: int, rate: int = 0) -> subprocess.Popen:
    """The bench harness's devices publishing into the app's broker."""
    return subprocess.Popen([vigil, "bench", "ingest", "--broker", f"127.0.0.1:{port}", "--devices", str(devices),
                             "--messages", str(messages), "--qos", str(qos), "--rate", str(rate),
                             "--timeout", "600"], stdout=subprocess.PIPE, text=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--app", default=str(REPO / "target" / "release" / "vigil-desktop"))
    p.add_argument("--vigil", default=str(REPO / "target" / "release" / "vigil"))
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
    filled = load(a.vigil, port, a.devices, a.devices, qos=1)
    print("fill:", filled.communicate(timeout=600)[0].strip())
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
    time.sleep(5)
    idle = rss(pid)
    print(f"idle with the window open on {a.devices} devices: RSS {idle[0]:.0f} MiB "
          f"(with WebKit's processes {idle[2]:.0f} MiB)")
    before = run.api_stats()["received"]
    publishers = load(a.vigil, port, a.devices, a.rate * a.seconds, qos=0, rate=a.rate)
    samples = []
    while publishers.poll() is None and len(samples) < a.seconds + 60:
        time.sleep(1)
        samples.append(rss(pid))
    sent = publishers.communicate(timeout=60)[0].strip()
    time.sleep(1)
    received = run.api_stats()["received"] - before
    run.close()
    print(f"load: {sent}")
    print(f"{a.devices} devices at {a.rate} msg/s for {a.seconds} s (window open on the device list): "
          f"RSS median {statistics.median(s[0] for s in samples):.0f} MiB, peak (VmHWM) {max(s[1] for s in samples):.0f} MiB "
          f"(with WebKit's processes: median {statistics.median(s[2] for s in samples):.0f} MiB); "
          f"the app received {received} of the {a.rate * a.seconds} messages")


if __name__ == "__main__":
    main()
