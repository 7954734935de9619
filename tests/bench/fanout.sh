#!/bin/bash
# Fan-out through the front door: one `vigil serve` (the binary given), one
# mosquitto_sub (MQTT 3.1.1, QoS 1) on +/telemetry, and `vigil bench ingest
# --broker` publishing 200,000 QoS 1 messages from 100 clients. Prints the
# time from the first publish until the subscriber has every message.
#
#   tests/bench/fanout.sh target/release/vigil
#
# Loopback only; the server and its data directory are removed at the end.
set -euo pipefail
bin=$1
n=${2:-200000}
here=$(cd "$(dirname "$0")/../.." && pwd)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
data=$(mktemp -d)
mqtt=$(free_port)
"$bin" serve --data-dir "$data" --mqtt-listen "127.0.0.1:$mqtt" --ws-listen 127.0.0.1:0 \
  --tls-listen off --wss-listen off --http-listen "127.0.0.1:$(free_port)" >"$data/log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mqtt") 2>/dev/null && break; sleep 0.05; done
mosquitto_sub -h 127.0.0.1 -p "$mqtt" -q 1 -t '+/telemetry' -C "$n" -i fanout-sub >/dev/null &
sub=$!
sleep 0.5
start=$(date +%s.%N)
"$here/target/release/vigil" bench ingest --broker "127.0.0.1:$mqtt" --devices 100 --messages "$n" --qos 1 --json >/dev/null
timeout 120 tail --pid=$sub -f /dev/null
end=$(date +%s.%N)
python3 -c "print(f'subscriber got $n messages in {$end - $start:.2f} s: {$n / ($end - $start):,.0f} msg/s')"
