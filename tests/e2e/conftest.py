"""Fixtures that run the real `vigil serve` binary (black box) on loopback.

- `vigil`: one fresh server per test (own data dir, every port picked by the OS).
- `vigil_factory`: start more (extra args, a given data dir, env), restart on the
  same data dir, or start one that is expected to fail.
- `shared_vigil`: one server per test module, for the many small tests that
  only need a working broker (each uses its own topics).

The binary is `target/debug/vigil` (build it with `cargo build -p vigil-cli`),
or whatever `VIGIL_BIN` names. A server's stderr is copied into
`artifacts/e2e/` when its test fails or when it does not exit 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers import HOST, Client, HttpResponse, Player, http_request, query, unique, wait_for

REPO = Path(__file__).resolve().parents[2]
VIGIL_BIN = Path(os.environ.get("VIGIL_BIN") or REPO / "target" / "debug" / "vigil")
ARTIFACTS = Path(os.environ.get("VIGIL_ARTIFACTS") or REPO / "artifacts") / "e2e"

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def _clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(extra or {})
    return env


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class Vigil:
    """One `vigil serve` process (and its successors after `restart`)."""

    def __init__(self, data_dir: Path, log_dir: Path, extra_args: list[str], env: dict | None,
                 name: str):
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.extra_args = list(extra_args)
        self.env = env
        self.name = name
        self.generation = 0
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}
        self.returncode: int | None = None
        self.stderr_path: Path | None = None
        self.stdout_lines: "queue.Queue[bytes]" = queue.Queue()
        self.extra_stdout: list[bytes] = []
        self.clients: list[Client] = []
        self.stderr_paths: list[Path] = []

    # process ----------------------------------------------------------------
    def command(self, *, mqtt: str = f"{HOST}:0", ws: str = f"{HOST}:0", http: str = f"{HOST}:0",
                tls: str = f"{HOST}:0", wss: str = f"{HOST}:0") -> list[str]:
        return [str(VIGIL_BIN), "serve", "--data-dir", str(self.data_dir),
                "--mqtt-listen", mqtt, "--ws-listen", ws, "--http-listen", http,
                "--tls-listen", tls, "--wss-listen", wss, *self.extra_args]

    def spawn(self, cmd: list[str]) -> subprocess.Popen:
        self.generation += 1
        self.stderr_path = self.log_dir / f"{self.name}.{self.generation}.stderr.log"
        self.stderr_paths.append(self.stderr_path)
        stderr = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=stderr, env=_clean_env(self.env),
                                         start_new_session=True)
        finally:
            stderr.close()
        self.returncode = None
        self.stdout_lines = queue.Queue()
        threading.Thread(target=self._drain_stdout, args=(self.proc, self.stdout_lines),
                         daemon=True).start()
        return self.proc

    @staticmethod
    def _drain_stdout(proc: subprocess.Popen, lines: "queue.Queue[bytes]") -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(b"")  # EOF marker

    def start(self, cmd: list[str] | None = None, **listen: str) -> "Vigil":
        """Starts it (by default with every listener on port 0) and reads its ready line."""
        if not VIGIL_BIN.exists():
            pytest.fail(f"vigil binary not found at {VIGIL_BIN}: run `cargo build -p vigil-cli` "
                        "(or set VIGIL_BIN)")
        proc = self.spawn(cmd or self.command(**listen))
        deadline = time.monotonic() + READY_TIMEOUT
        line = None
        while time.monotonic() < deadline:
            try:
                line = self.stdout_lines.get(timeout=0.1)
                break
            except queue.Empty:
                if proc.poll() is not None and self.stdout_lines.empty():
                    break
        if not line:
            if proc.poll() is None:
                self._signal(signal.SIGKILL)
                proc.wait(5)
                why = f"no ready line on stdout within {READY_TIMEOUT:.0f}s"
            else:
                why = f"exited with code {proc.returncode} before printing its ready line"
            pytest.fail(f"vigil serve {why}.\ncommand: {' '.join(proc.args)}\n"
                        f"stderr:\n{self.stderr()[-8000:]}")
        try:
            ready = json.loads(line)
        except ValueError:
            pytest.fail(f"vigil's first stdout line is not JSON: {line!r}\nstderr:\n{self.stderr()[-4000:]}")
        assert ready.get("event") == "ready", f"first stdout line is not the ready event: {ready!r}"
        for key in ("mqtt", "ws", "ws_path", "http", "data_dir"):
            assert key in ready, f"ready line lacks {key!r}: {ready!r}"
        self.ready = ready
        return self

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> int:
        """Sends `sig` (SIGTERM) once, waits for exit, returns the exit code (asserting nothing)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self._signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(5)
                self.returncode = self.proc.returncode
                raise AssertionError(f"vigil serve did not exit within {timeout}s of signal {sig}\n"
                                     f"stderr tail:\n{self.stderr()[-4000:]}")
        self.returncode = self.proc.returncode
        return self.returncode

    def stop_ok(self, timeout: float = STOP_TIMEOUT) -> None:
        rc = self.stop(timeout)
        assert rc == 0, f"vigil serve exited with {rc} after SIGTERM\nstderr tail:\n{self.stderr()[-4000:]}"

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        assert self.proc is not None
        self._signal(signal.SIGKILL)
        self.proc.wait(10)
        self.returncode = self.proc.returncode

    def restart(self) -> "Vigil":
        """Stops it with SIGTERM (asserting exit 0) and starts it again on the same data dir."""
        self.close_clients()
        if self.running:
            self.stop_ok()
        return self.start()

    def stderr(self) -> str:
        if self.stderr_path is None or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")

    def more_stdout(self) -> list[bytes]:
        """Lines printed on stdout after the ready line (all of them once it has exited)."""
        wait_eof = not self.running
        deadline = time.monotonic() + 2.0
        while True:
            try:
                if wait_eof:
                    line = self.stdout_lines.get(timeout=max(0.01, deadline - time.monotonic()))
                else:
                    line = self.stdout_lines.get_nowait()
            except queue.Empty:
                break
            if not line:
                break
            self.extra_stdout.append(line)
        return list(self.extra_stdout)

    # addresses --------------------------------------------------------------
    @property
    def host(self) -> str:
        return HOST

    @property
    def mqtt_addr(self) -> tuple[str, int]:
        return _addr(self.ready["mqtt"])

    @property
    def ws_addr(self) -> tuple[str, int]:
        return _addr(self.ready["ws"])

    @property
    def tls_addr(self) -> tuple[str, int]:
        return _addr(self.ready["tls"])

    @property
    def wss_addr(self) -> tuple[str, int]:
        return _addr(self.ready["wss"])

    @property
    def http_addr(self) -> tuple[str, int]:
        return _addr(self.ready["http"])

    @property
    def mqtt_port(self) -> int:
        return self.mqtt_addr[1]

    @property
    def ws_port(self) -> int:
        return self.ws_addr[1]

    @property
    def http_port(self) -> int:
        return self.http_addr[1]

    @property
    def ws_path(self) -> str:
        return self.ready["ws_path"]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "vigil.db"

    # HTTP -------------------------------------------------------------------
    def http(self, method: str, path: str, body: Any = None, **kw: Any) -> HttpResponse:
        return http_request(self.http_addr, method, path, body, **kw)

    def http_get_json(self, path: str, expect: int = 200) -> Any:
        r = self.http("GET", path)
        assert r.status == expect, f"GET {path}: status {r.status}, body {r.body[:500]!r}"
        return _json_body(r, f"GET {path}")

    def http_post_json(self, path: str, body: Any, expect: int = 200) -> Any:
        r = self.http("POST", path, body)
        assert r.status == expect, f"POST {path}: status {r.status}, body {r.body[:500]!r}"
        return _json_body(r, f"POST {path}")

    def messages(self, **params: Any) -> list[dict]:
        return self.http_get_json(query("/api/messages", **params))

    def all_messages(self, topic: str, page: int = 10000) -> list[dict]:
        """Every stored message on a topic, newest first, paging with `before`."""
        out: list[dict] = []
        before = None
        for _ in range(1000):
            batch = self.messages(topic=topic, limit=page, before=before)
            out.extend(batch)
            if len(batch) < page:
                return out
            before = batch[-1]["id"]
        raise AssertionError("more than 1000 pages of messages: paging with `before` does not advance")

    def wait_stored(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """Waits until at least `count` messages on `topic` are stored; returns them newest first."""
        return wait_for(lambda: (lambda m: m if len(m) >= count else None)(self.messages(topic=topic, limit=10000)),
                        timeout, what=f"{count} stored message(s) on {topic}")

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None) -> Any:
        return wait_for(predicate, timeout, what=what)

    # MQTT -------------------------------------------------------------------
    def client(self, *, transport: str = "tcp", connect: bool = True, **kw: Any) -> Client:
        """A paho client for this server (closed at teardown)."""
        port = self.ws_port if transport == "websockets" else self.mqtt_port
        c = Client(port, transport=transport, ws_path=self.ready.get("ws_path", "/mqtt"), **kw)
        self.clients.append(c)
        if connect:
            c.connect()
        return c

    def close_clients(self) -> None:
        """Disconnects every client of this server (DISCONNECT wakes paho's loop at once)."""
        for c in self.clients:
            try:
                c.paho.disconnect()
            except Exception:  # noqa: BLE001
                pass
        for c in self.clients:
            c.stop()
        self.clients.clear()


def _json_body(r: HttpResponse, what: str) -> Any:
    ctype = r.headers.get("content-type", "")
    assert "json" in ctype, f"{what}: content-type {ctype!r}, body {r.body[:300]!r}"
    try:
        return r.json()
    except ValueError:
        raise AssertionError(f"{what}: body is not JSON: {r.body[:300]!r}") from None


# ----------------------------------------------------------------------------
# pytest wiring
# ----------------------------------------------------------------------------

def pytest_sessionstart(session):
    # Logs of an earlier run would be mistaken for this one's.
    if ARTIFACTS.is_dir() and not hasattr(session.config, "workerinput"):
        shutil.rmtree(ARTIFACTS, ignore_errors=True)


def pytest_report_header(config):
    if VIGIL_BIN.exists():
        built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(VIGIL_BIN.stat().st_mtime))
        return f"vigil binary: {VIGIL_BIN} (built {built})"
    return f"vigil binary: {VIGIL_BIN} (MISSING: run `cargo build -p vigil-cli`)"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep


def _safe(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-150:]


def _save_logs(servers: list[Vigil], label: str) -> None:
    dest = ARTIFACTS / _safe(label)
    dest.mkdir(parents=True, exist_ok=True)
    for v in servers:
        for p in v.stderr_paths:
            if p.exists():
                shutil.copy(p, dest / p.name)


class Factory:
    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self.tmp = tmp_path_factory
        self.servers: list[Vigil] = []
        self.log_dir = tmp_path_factory.mktemp("vigil-logs")

    def new(self, extra_args: list[str] | tuple = (), data_dir: Path | None = None,
            env: dict | None = None) -> Vigil:
        data_dir = Path(data_dir) if data_dir else self.tmp.mktemp("vigil-data")
        v = Vigil(data_dir, self.log_dir, list(extra_args), env, name=f"vigil{len(self.servers)}")
        self.servers.append(v)
        return v

    def __call__(self, extra_args: list[str] | tuple = (), data_dir: Path | None = None,
                 env: dict | None = None, **listen: str) -> Vigil:
        return self.new(extra_args, data_dir, env).start(**listen)

    def finish(self) -> list[str]:
        problems = []
        for v in self.servers:
            v.close_clients()
            if v.running:
                try:
                    rc = v.stop()
                except AssertionError as e:
                    problems.append(f"{v.name}: {e}")
                    continue
                if rc != 0:
                    problems.append(f"{v.name} exited with {rc} on SIGTERM; stderr tail:\n{v.stderr()[-3000:]}")
        return problems


@pytest.fixture
def vigil_factory(request, tmp_path_factory):
    """Starts `vigil serve` processes; each still running at the end gets SIGTERM and must exit 0."""
    f = Factory(tmp_path_factory)
    yield f
    problems = f.finish()
    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    if failed or problems:
        _save_logs(f.servers, request.node.nodeid)
    assert not problems, "\n".join(problems)


@pytest.fixture
def vigil(vigil_factory) -> Vigil:
    """A fresh `vigil serve` with its own data dir."""
    return vigil_factory()


@pytest.fixture(scope="module")
def shared_vigil(request, tmp_path_factory):
    """One `vigil serve` shared by a module's tests (use unique topics)."""
    f = Factory(tmp_path_factory)
    failed_before = request.session.testsfailed
    v = f()
    yield v
    problems = f.finish()
    if problems or request.session.testsfailed != failed_before:
        _save_logs(f.servers, request.node.nodeid + "-shared")
    assert not problems, "\n".join(problems)


@pytest.fixture
def sv(shared_vigil):
    """The module's shared server, with this test's clients closed afterwards."""
    yield shared_vigil
    shared_vigil.close_clients()


@pytest.fixture
def topic(request) -> str:
    """A topic unique to this test: `<device>/<metric>` with a unique device."""
    return f"{unique('dev')}/m"


@pytest.fixture
def players():
    """Starts devices in their own processes (`Player`); kills what is left at the end."""
    started: list[Player] = []

    def start(spec: dict) -> Player:
        p = Player(spec)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


__all__ = ["Vigil", "unique"]
