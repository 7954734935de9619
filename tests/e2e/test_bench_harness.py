"""The bench harness's load generator pointed at a broker something else runs
(`vigil bench ingest --broker`, used by the desktop benchmark): what it says
it sent is what the broker got."""

from __future__ import annotations

import json
import subprocess

from conftest import VIGIL_BIN


def test_bench_ingest_publishes_into_a_running_broker(vigil):
    host, port = vigil.mqtt_addr
    out = subprocess.run([str(VIGIL_BIN), "bench", "ingest", "--broker", f"{host}:{port}", "--devices", "7",
                          "--messages", "140", "--qos", "1", "--rate", "700", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["planned"], report["acknowledged"], report["errors"]) == (140, 140, []), report
    assert 0.1 < report["seconds"] < 10, report  # paced at 700 msg/s: ~0.2 s, not all at once
    stats = vigil.wait_for(lambda: (s := vigil.http_get_json("/api/stats"))["messages"] == 140 and s,
                           what="the 140 messages stored")
    assert stats["devices"] == 7


def test_bench_ingest_refuses_to_mix_a_running_broker_with_its_own_server():
    out = subprocess.run([str(VIGIL_BIN), "bench", "ingest", "--broker", "127.0.0.1:1", "--vs-mosquitto"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "--vs-mosquitto" in out.stderr, out.stderr
