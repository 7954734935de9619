#!/usr/bin/env bash
# Installs Vigil's .deb into a clean Debian 12 and starts it there, as a new
# user would: `make check-package` (after `make package`), as root.
#
#   tests/package/check_deb.sh [path/to/Vigil_*.deb]
#
# 1. A minimal Debian 12 (debootstrap --variant=minbase, made once and kept
#    in $VIGIL_DEBIAN_ROOT, default /var/tmp/vigil-debian12) is copied afresh.
# 2. apt installs the .deb there, which must bring in everything it needs
#    from Debian alone; Xvfb, a session bus and mosquitto-clients are added
#    to play the user's screen, session and a device.
# 3. In a network namespace of its own (loopback only), a fresh user starts
#    `vigil-desktop` from the menu entry's command; a device publishes to the
#    embedded broker; the check waits for the device in the new user's
#    database, screenshots the window, and sees the app still running.
# Output (the install log, the app's log, the screenshot) in
# artifacts/package/.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
deb=${1:-$(ls -t "$repo"/target/dist/bundle/deb/*.deb 2>/dev/null | head -1)}
base=${VIGIL_DEBIAN_ROOT:-/var/tmp/vigil-debian12}
out=$repo/artifacts/package
[ -n "$deb" ] && [ -f "$deb" ] || { echo "no .deb: run make package first (or name one)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "check_deb.sh needs root (chroot, mounts, a network namespace)" >&2; exit 2; }
mkdir -p "$out"

if [ ! -x "$base/usr/bin/apt-get" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  echo "making a minimal Debian 12 in $base (once)"
  debootstrap --variant=minbase bookworm "$base" http://deb.debian.org/debian >"$out/debootstrap.log"
fi

work=$(mktemp -d /var/tmp/vigil-deb-check.XXXXXX)
root=$work/root
cleanup() {
  for m in dev/pts dev proc sys; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cp -a "$base" "$root"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/vigil.deb"

echo "installing $(basename "$deb") into a clean Debian 12"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
{
  in_root apt-get update
  in_root apt-get install -y --no-install-recommends /tmp/vigil.deb
  in_root apt-get install -y --no-install-recommends xvfb xauth dbus-daemon mosquitto-clients x11-apps
} >"$out/install.log" 2>&1 || { tail -20 "$out/install.log"; echo "FAIL: apt could not install the .deb" >&2; exit 1; }
in_root dpkg -s vigil | grep -E '^(Package|Version|Depends|Installed-Size):' | tee "$out/package.txt"
exec_line=$(sed -n 's/^Exec=//p' "$root/usr/share/applications/"*.desktop | head -1)
echo "menu entry starts: $exec_line"
in_root useradd -m nurse

# The app and the device, in a network namespace with loopback only.
unshare -n bash -s "$root" "$exec_line" "$out" <<'NETNS'
set -euo pipefail
root=$1 exec_line=$2 out=$3
ip link set lo up
setsid chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/home/nurse USER=nurse \
  setpriv --reuid=nurse --regid=nurse --init-groups \
  dbus-run-session -- xvfb-run -n 77 -f /home/nurse/.Xauthority -s "-screen 0 1280x820x24" $exec_line >"$out/app.log" 2>&1 &
app=$!
trap 'kill -TERM -- -$app 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break
  kill -0 $app 2>/dev/null || { cat "$out/app.log"; echo "FAIL: the app exited" >&2; exit 1; }
  sleep 0.2
done
(exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null || { echo "FAIL: no broker on 127.0.0.1:1883 after 30 s" >&2; exit 1; }
chroot "$root" mosquitto_pub -h 127.0.0.1 -t ward3/bed7/spo2 -m 96
db=$root/home/nurse/.local/share/vigil/vigil.db
for _ in $(seq 1 50); do
  [ -f "$db" ] && [ "$(sqlite3 "file:$db?mode=ro" "select count(*) from devices where key = 'ward3'" 2>/dev/null)" = 1 ] && break
  sleep 0.2
done
[ "$(sqlite3 "file:$db?mode=ro" "select count(*) from devices where key = 'ward3'")" = 1 ] \
  || { echo "FAIL: the device never reached the user's database" >&2; exit 1; }
echo "the device reached $(chroot "$root" stat -c %U "${db#$root}")'s database: ${db#$root}"
data=$root/home/nurse/.local/share/vigil
open_keys=$(find "$data" -name '*.key' -perm /077)
[ -z "$open_keys" ] && [ -n "$(find "$data" -name '*.key')" ] \
  || { echo "FAIL: no private key, or one readable by others: $open_keys" >&2; exit 1; }
echo "its private keys are readable by their owner only: $(cd "$data" && find . -name '*.key' | tr '\n' ' ')"
sleep 3
chroot "$root" /usr/bin/env XAUTHORITY=/home/nurse/.Xauthority xwd -root -display :77 -silent >"$out/window.xwd"
kill -0 $app 2>/dev/null || { echo "FAIL: the app died" >&2; exit 1; }
kill -TERM -- -$app
wait $app 2>/dev/null || true
NETNS
if command -v convert >/dev/null; then
  convert "$out/window.xwd" "$out/window.png" && rm "$out/window.xwd" && echo "screenshot: $out/window.png"
fi
if grep -qiE 'panicked|Failed to initialize GTK' "$out/app.log"; then
  echo "FAIL: see $out/app.log" >&2
  exit 1
fi
echo "PASS: the .deb installs on a clean Debian 12 and Vigil starts, with its broker, for a new user"
