"""The desktop app as a user has it: the built `vigil-desktop` binary in a real
window under Xvfb, driven through Tauri's WebDriver (`tauri-driver` in front of
Debian's WebKitWebDriver) with Selenium. Devices are played by Debian's
mosquitto_pub on loopback ports chosen here; the desktop's notifications go
to a real notification server, Debian's dunst, on a D-Bus session bus of the
test's own, and `dunstctl` clicks them. A screenshot of the window is saved
in artifacts/desktop/.

Run by `make test-desktop` (inside xvfb-run); skipped with a reason when
there is no display or no tauri-driver."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = Path(os.environ.get("VIGIL_DESKTOP_BIN") or REPO / "target" / "debug" / "vigil-desktop")
ARTIFACTS = Path(os.environ.get("VIGIL_ARTIFACTS") or REPO / "artifacts") / "desktop"
TAURI_DRIVER = shutil.which("tauri-driver") or str(Path.home() / ".cargo" / "bin" / "tauri-driver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe, timeout: float = 15.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Desktop:
    """The app under WebDriver, with helpers that act as the user and as devices."""

    def __init__(self, driver, mqtt_port: int, data_dir: Path):
        self.driver = driver
        self.mqtt_port = mqtt_port
        self.data_dir = data_dir

    def api(self, method: str, path: str, body=None):
        """Calls the API the way the window's own code does (the `request` command)."""
        answer = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.__TAURI_INTERNALS__.invoke('request', {method: arguments[0], path: arguments[1], body: arguments[2]})"
            ".then(done, (e) => done({status: 0, body: String(e)}));",
            method, path, body)
        return answer

    def notifications(self):
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.__TAURI_INTERNALS__.invoke('notifications').then(done, (e) => done(String(e)));")

    def publish(self, topic: str, payload: str, *extra: str) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-t", topic, "-m", payload,
                        *extra], check=True, timeout=10)

    def hash(self) -> str:
        return self.driver.execute_script("return location.hash")

    def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By
        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0].text if found else ""


class NotificationServer:
    """dunst on a private session bus: what a desktop session has, minus the desktop."""

    def __init__(self, tmp: Path):
        self.bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                                    stdout=subprocess.PIPE, text=True)
        self.address = self.bus.stdout.readline().strip()
        assert self.address.startswith("unix:"), self.address
        self.env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.address}
        config = tmp / "dunstrc"
        # Notifications stay until clicked, as a user away from the screen finds them.
        config.write_text("[global]\n" + "".join(f"[urgency_{u}]\ntimeout = 0\n" for u in ("low", "normal", "critical")))
        self.log = open(tmp / "dunst.log", "wb")
        self.dunst = subprocess.Popen(["dunst", "-config", str(config)], env=self.env, stdout=self.log,
                                      stderr=subprocess.STDOUT)
        wait_for("dunst on the bus", lambda: self.ctl("is-paused").returncode == 0, 10)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["dunstctl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def displayed(self) -> int:
        out = self.ctl("count", "displayed").stdout.strip()
        return int(out) if out.isdigit() else 0

    def click_newest(self) -> None:
        """A click on the newest notification (its default action)."""
        assert self.ctl("action", "0").returncode == 0

    def stop(self) -> None:
        for p in (self.dunst, self.bus):
            p.terminate()
            p.wait(5)
        self.log.close()


@pytest.fixture
def desktop(tmp_path):
    if not os.environ.get("DISPLAY"):
        pytest.skip("no display: run under xvfb-run (make test-desktop)")
    if not Path(TAURI_DRIVER).exists() or not shutil.which("WebKitWebDriver"):
        pytest.skip("tauri-driver or WebKitWebDriver missing (make deps installs them)")
    if not shutil.which("dunst") or not shutil.which("dbus-daemon"):
        pytest.skip("dunst or dbus-daemon missing (make deps installs them)")
    if not APP.exists():
        pytest.fail(f"{APP} not built: cargo build -p vigil-desktop")
    from selenium import webdriver
    from selenium.webdriver.common.options import ArgOptions

    mqtt_port, port, native = free_port(), free_port(), free_port()
    notices = NotificationServer(tmp_path)
    env = {k: v for k, v in notices.env.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_DATA_DIR=str(tmp_path / "data"), VIGIL_MQTT_LISTEN=f"127.0.0.1:{mqtt_port}",
               VIGIL_WS_LISTEN="off", VIGIL_TLS_LISTEN="127.0.0.1:0", VIGIL_WSS_LISTEN="off")
    # Closing the window quits (WebDriver closes it at the end), as a user may set it.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "desktop.json").write_text('{"close_to_tray": false}')
    log = open(tmp_path / "tauri-driver.log", "wb")
    driver_proc = subprocess.Popen([TAURI_DRIVER, "--port", str(port), "--native-port", str(native)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    session = None
    try:
        wait_for("tauri-driver to listen", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10)
        options = ArgOptions()
        options.set_capability("browserName", "wry")
        options.set_capability("tauri:options", {"application": str(APP)})
        from selenium.webdriver.remote.client_config import ClientConfig
        # A timeout of its own: without one the client waits forever if no window ever opens.
        session = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}", options=options,
                                   client_config=ClientConfig(f"http://127.0.0.1:{port}", timeout=60))
        session.set_script_timeout(20)
        desktop = Desktop(session, mqtt_port, tmp_path / "data")
        desktop.notices = notices
        desktop.env = env
        yield desktop
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        if session is not None:
            try:
                session.quit()
            except Exception:  # noqa: BLE001 - the app may be gone already
                pass
        try:
            os.killpg(driver_proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        driver_proc.wait(10)
        log.close()
        notices.stop()
        shutil.copy(tmp_path / "tauri-driver.log", ARTIFACTS / "tauri-driver.log")


def test_the_window_shows_devices_presence_and_alert_notifications(desktop):
    from selenium.webdriver.common.by import By
    d = desktop.driver
    # The window opens with the device list, live.
    wait_for("the device list", lambda: "live" in desktop.text('[data-testid="link-state"]'), 30)

    # A device published with mosquitto_pub appears.
    desktop.publish("clinic7/spo2", "97")
    wait_for("clinic7 in the list", lambda: d.find_elements(By.CSS_SELECTOR, '[data-device="clinic7"]'))

    # A device whose client is killed goes offline ("connection lost").
    holder = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(desktop.mqtt_port), "-i", "clinic8-pump",
                               "-t", "clinic8/rate", "-l"], stdin=subprocess.PIPE, text=True)
    try:
        holder.stdin.write("12\n")
        holder.stdin.flush()
        wait_for("clinic8 online", lambda: "online" in desktop.text('[data-device="clinic8"]'))
        holder.send_signal(signal.SIGKILL)
        holder.wait(5)
        wait_for("clinic8 offline in the window", lambda: "offline" in desktop.text('[data-device="clinic8"]'), 20)
    finally:
        if holder.poll() is None:
            holder.kill()
    presence = desktop.api("GET", "/api/devices/clinic8")["body"]["presence"]
    assert presence["state"] == "offline" and "connection lost" in presence["reason"], presence

    # An alert raises a native notification (recorded by the app as it shows it).
    rule = {"name": "SpO2 low", "severity": "critical", "enabled": True, "scope": {},
            "condition": {"metric": {"metric": "spo2", "test": {"below": 92.0}, "for_s": 0.5, "hysteresis": 1.0}}}
    created = desktop.api("POST", "/api/alert-rules", rule)
    assert created["status"] == 201, created
    desktop.publish("clinic7/spo2", "88")
    time.sleep(0.8)
    desktop.publish("clinic7/spo2", "87")
    notice = wait_for("a notification", lambda: [n for n in desktop.notifications() if n["device"] == "clinic7"], 15)[0]
    assert "critical" in notice["title"] and notice["alert"] >= 1, notice
    wait_for("the notification on the desktop", lambda: desktop.notices.displayed() == 1, 10)
    wait_for("the alert in the window", lambda: desktop.text('[data-testid="alert-count"]') == "1")
    # Live updates reach the list: the newest reading.
    wait_for("the newest reading in the list", lambda: "87" in desktop.text('[data-device="clinic7"]'), 10)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "window.png"))
    (ARTIFACTS / "notifications.json").write_text(json.dumps(desktop.notifications(), indent=2))

    # A click on the notification brings up the device it is about.
    d.execute_script("location.hash = '#/inspector'")
    wait_for("the inspector", lambda: desktop.hash() == "#/inspector")
    desktop.notices.click_newest()
    wait_for("the device page from the click", lambda: desktop.hash() == "#/device/clinic7", 10)
    wait_for("the device page drawn", lambda: "clinic7" in desktop.text('[data-testid="device-title"]'), 10)


def test_desktop_settings_are_changed_in_the_window_and_kept(desktop):
    from selenium.webdriver.common.by import By
    d = desktop.driver
    d.execute_script("location.hash = '#/settings'")
    box = wait_for("the desktop settings", lambda: d.find_elements(By.CSS_SELECTOR, '[data-testid="notify"]'), 15)[0]
    assert box.is_selected()
    box.click()
    kept = lambda: json.loads((desktop.data_dir / "desktop.json").read_text())  # noqa: E731
    wait_for("notifications off in desktop.json", lambda: kept().get("notify") is False)
    assert kept()["close_to_tray"] is False, "the other setting is left as it was"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "settings.png"))

    # With notifications off, an alert is still an alert, but no notification pops up.
    rule = {"name": "Door open", "severity": "warning", "enabled": True, "scope": {},
            "condition": {"metric": {"metric": "open", "test": {"above": 0.5}, "for_s": 0.0, "hysteresis": 0.0}}}
    assert desktop.api("POST", "/api/alert-rules", rule)["status"] == 201
    desktop.publish("hall/open", "1")
    wait_for("the alert", lambda: desktop.text('[data-testid="alert-count"]') == "1")
    time.sleep(0.5)
    assert desktop.notifications() == [] and desktop.notices.displayed() == 0


def test_a_second_start_shows_the_running_app_instead(desktop):
    d = desktop.driver
    wait_for("the device list", lambda: "live" in desktop.text('[data-testid="link-state"]'), 30)
    d.execute_script("location.hash = '#/broker'")
    # The same user starts Vigil again (same session bus, same settings): the
    # second process hands over to the first and leaves, without touching the
    # engine (its broker port is the first one's).
    second = subprocess.run([str(APP)], env=desktop.env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 0, second.stderr
    assert "listening" not in second.stderr and "in use" not in second.stderr, second.stderr
    # The first one carries on, with its window.
    desktop.publish("clinic9/temp", "36.6")
    wait_for("clinic9 stored by the first app", lambda: desktop.api("GET", "/api/devices/clinic9")["status"] == 200)
    assert desktop.hash() == "#/broker"
