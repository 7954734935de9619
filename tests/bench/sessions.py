"""Kept-session benchmark: clients keep MQTT sessions, go away, messages are
queued for them, Vigil restarts, and they come back.

    .venv/bin/python tests/bench/sessions.py [--sessions 100] [--messages 100] [--vigil target/release/vigil]

Starts `vigil serve` on loopback with a fresh data folder. `--sessions`
MQTT 3.1.1 clients (clean session 0) subscribe to their own topic at QoS 1
and leave; one publisher sends `--messages` QoS 1 messages to each. Prints:
- queueing: from the first publish until every queued message is a row in
  SQLite (`mqtt_session_queue`), in messages/s;
- restart: SIGTERM until exit, and start until the ready line, with every
  session and its queue to take back;
- return: from the clients' CONNECTs until each has all its messages, in
  messages/s, and whether each got them complete and in order.
The clients are paho-mqtt in one Python process: the rates are a floor set
as much by Python as by Vigil.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from helpers import V5, V311, Client, wait_for  # noqa: E402

WAVE = 200


def start(vigil: str, data: Path) -> tuple[subprocess.Popen, int, float]:
    began = time.monotonic()
    proc = subprocess.Popen(
        [vigil, "serve", "--data-dir", str(data), "--mqtt-listen", "127.0.0.1:0",
         "--ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--tls-listen", "off",
         "--wss-listen", "off"],
        stdout=subprocess.PIPE, stderr=open(data / "stderr.log", "ab"))
    ready = json.loads(proc.stdout.readline())
    port = int(ready["mqtt"].rsplit(":", 1)[1])
    return proc, port, time.monotonic() - began


def queued_rows(data: Path) -> int:
    with sqlite3.connect(f"file:{data / 'vigil.db'}?mode=ro", uri=True, timeout=5) as db:
        return db.execute("SELECT count(*) FROM mqtt_session_queue").fetchone()[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--vigil", default=str(REPO / "target" / "release" / "vigil"))
    args = ap.parse_args()
    n, m = args.sessions, args.messages
    total = n * m
    with tempfile.TemporaryDirectory(prefix="vigil-bench-sessions-") as tmp:
        data = Path(tmp)
        proc, port, _ = start(args.vigil, data)
        try:
            for i in range(n):
                c = Client(port, version=V311, client_id=f"bench-{i}", clean=False).connect()
                c.subscribe(f"bench/{i}/#", qos=1)
                c.disconnect()
            pub = Client(port, version=V5, max_inflight=1000).connect()
            began = time.monotonic()
            infos = [pub.publish(f"bench/{i}/m", str(k).encode(), qos=1)
                     for k in range(m) for i in range(n)]
            wait_for(lambda: all(pub.is_acked(info.mid) for info in infos), 120, what="every PUBACK")
            wait_for(lambda: queued_rows(data) == total, 120, what=f"{total} queued rows")
            queueing = time.monotonic() - began
            pub.disconnect()
            print(f"queueing: {total} messages for {n} absent sessions in {queueing:.2f} s "
                  f"({total / queueing:,.0f} msg/s, until every row is in SQLite)")

            began = time.monotonic()
            proc.terminate()
            proc.wait(60)
            stopped = time.monotonic() - began
            proc, port, started = start(args.vigil, data)
            print(f"restart: stop {stopped:.2f} s, start {started:.2f} s "
                  f"(taking back {n} sessions with {total} queued messages)")

            # paho's select() takes no descriptor above 1023 (three per client):
            # at most WAVE clients are connected at once.
            began = time.monotonic()
            complete = present = 0
            for first in range(0, n, WAVE):
                clients = [Client(port, version=V311, client_id=f"bench-{i}", clean=False)
                           for i in range(first, min(n, first + WAVE))]
                for c in clients:
                    c.connect()
                wait_for(lambda: all(len(c.received) >= m for c in clients), 300,
                         what="every returning client's messages")
                complete += sum(
                    [r.payload for r in c.received] == [str(k).encode() for k in range(m)]
                    for c in clients)
                present += sum(bool(c.connect_flags.session_present) for c in clients)
                for c in clients:
                    c.disconnect()
                del clients
                gc.collect()  # paho closes its socket pairs only when collected
            back = time.monotonic() - began
            print(f"return: {n} clients ({WAVE} at a time) had their {m} messages each in "
                  f"{back:.2f} s ({total / back:,.0f} msg/s); session present {present}/{n}, "
                  f"complete and in order {complete}/{n}")
            wait_for(lambda: queued_rows(data) == 0, 30, what="the stored queues emptied")
            return 0 if complete == n == present else 1
        except BaseException:
            log = (data / "stderr.log").read_text(errors="replace").splitlines()
            print("vigil serve's log, last lines:", *log[-30:], sep="\n", file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
