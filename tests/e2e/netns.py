"""Network namespaces the tests make for themselves, so that multicast never
leaves the machine: a namespace has no route out, only what the test builds
in it (loopback with multicast on, veth pairs between namespaces).

Commands run inside with `ip netns exec`; the test process reaches a
server inside by running the call in a thread that has joined the namespace
(setns(2) moves only the calling thread).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import uuid
from typing import Any, Callable

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def can_make_namespaces() -> str | None:
    """None when namespaces can be made here, else why not (in words)."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    if not shutil.which("ip"):
        return "needs iproute2's `ip`"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


class Namespace:
    """A named network namespace, deleted (with its veths) on close."""

    def __init__(self, prefix: str = "vigil"):
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.sh(None, "ip", "netns", "add", self.name)

    @staticmethod
    def sh(ns: str | None, *args: str) -> None:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")

    def run(self, *args: str) -> None:
        self.sh(self.name, *args)

    def loopback_multicast(self) -> "Namespace":
        """lo up, multicast on, 224.0.0.0/4 routed to it: IPv4 multicast stays on lo."""
        self.run("ip", "link", "set", "lo", "up")
        self.run("ip", "link", "set", "lo", "multicast", "on")
        self.run("ip", "route", "add", "224.0.0.0/4", "dev", "lo")
        return self

    def exec_args(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs `fn` in a thread inside the namespace and returns what it returns."""
        out: dict = {}

        def inside():
            fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    out["e"] = OSError(err, f"setns into {self.name}: {os.strerror(err)}")
                    return
            finally:
                os.close(fd)
            try:
                out["v"] = fn()
            except BaseException as e:  # handed to the caller
                out["e"] = e

        t = threading.Thread(target=inside, daemon=True)
        t.start()
        t.join()
        if "e" in out:
            raise out["e"]
        return out.get("v")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


def lan(make, devices: int) -> tuple[Namespace, list[tuple[Namespace, str]]]:
    """Vigil's namespace with bridge br0 (169.254.1.1/16) and `devices`
    namespaces, each with eth0 (169.254.2.1/16, .2, ...) on a veth into the bridge.
    IPv6 link-local addresses come up without duplicate detection."""
    hub = make("vigil-lan")
    hub.run("sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
    hub.run("ip", "link", "set", "lo", "up")
    hub.run("ip", "link", "add", "br0", "type", "bridge")
    hub.run("ip", "addr", "add", "169.254.1.1/16", "dev", "br0")
    out = []
    for i in range(devices):
        dev = make("vigil-dev")
        dev.run("sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        dev.run("ip", "link", "set", "lo", "up")
        port = f"p{i}{dev.name[-4:]}"
        hub.run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", dev.name)
        hub.run("ip", "link", "set", port, "master", "br0")
        hub.run("ip", "link", "set", port, "up")
        address = f"169.254.{2 + i // 250}.{1 + i % 250}"
        dev.run("ip", "addr", "add", f"{address}/16", "dev", "eth0")
        dev.run("ip", "link", "set", "eth0", "up")
        out.append((dev, address))
    hub.run("ip", "link", "set", "br0", "up")
    hub.run("ip", "route", "add", "224.0.0.0/4", "dev", "br0")
    return hub, out


@pytest.fixture
def namespaces():
    """Makes namespaces (skipping with the reason where that is impossible); deletes them after."""
    why = can_make_namespaces()
    if why:
        pytest.skip(why)
    made: list[Namespace] = []

    def make(prefix: str = "vigil") -> Namespace:
        ns = Namespace(prefix)
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.close()
