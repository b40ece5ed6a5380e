#!/usr/bin/env bash
# End to end through the OpenBSD stand-ins: build blueprints/openbsd-stand-in.yml with
# build-image.yml exactly as on an OpenBSD host, with tests/standins first on PATH:
#   - tests/standins/openbsd-installer builds the stand-in installer (bsd.rd + its ramdisk)
#     and a stand-in mirror (sets, SHA256.sig signed with a test key, index.txt);
#   - the mirror is served on 127.0.0.1:8078, where the blueprint's source.mirror points;
#   - tests/standins/vmd runs as vmd would, with the installer ramdisk;
#   - the build fetches and verifies the media, serves install.conf and the sets on the
#     host side of the VM's local interface, answers the installer over the serial console,
#     waits for the installer's reboot to end the VM, boots the disk, provisions it over
#     SSH, exports it and boot-tests the export.
# Afterwards nothing of the build may be left: no qemu, no tap device, no /dev/ttyp*.
#   E2E_DIR=... bash tests/e2e/openbsd_stand_in.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
dir=${E2E_DIR:?}/openbsd
cache=${OPENBSD_STANDIN_CACHE:-/var/cache/osimage-builder/openbsd-stand-in}
rm -rf "$dir"
mkdir -p "$dir" "$cache"

sh tests/standins/openbsd-installer/make-mirror.sh "$cache/mirror"
sh tests/standins/openbsd-installer/make-installer.sh "$cache/installer" "$cache/mirror/openbsd-78-base.pub"
# the key the blueprint's source.signify_key names
cp "$cache/mirror/openbsd-78-base.pub" "$cache/openbsd-78-base.pub"

web=
cleanup() {
  rc=$?
  if [ -n "$web" ]; then kill "$web" 2>/dev/null || true; fi
  if [ -S /var/run/vmd.sock ]; then
    pkill -TERM -f 'tests/standins/vmd' || true
    for _ in $(seq 50); do pgrep -f 'tests/standins/vmd' >/dev/null || break; sleep 0.2; done
  fi
  exit $rc
}
trap cleanup EXIT

python3 -m http.server --bind 127.0.0.1 --directory "$cache/mirror" 8078 >"$dir/mirror.log" 2>&1 &
web=$!
"$top/tests/standins/vmd" -R "$cache/installer/ramdisk.img" -A tcg
for _ in $(seq 50); do [ -S /var/run/vmd.sock ] && break; sleep 0.2; done

PATH=$top/tests/standins:$PATH .venv/bin/ansible-playbook build-image.yml \
  -e @blueprints/openbsd-stand-in.yml -e osimage_output_dir="$dir/output" \
  2>&1 | tee "$dir/build.log"

out=$dir/output/openbsd-stand-in-7.8.0
( cd "$out" && sha256sum -c SHA256SUMS )
python3 - "$out/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
names = {i['name'] for i in m['inputs']}
assert {'bsd', 'bsd.rd', 'base78.tgz'} <= names, names
assert [s['name'] for s in m['stages']][:4] == ['build_host', 'media', 'install', 'first_boot'], m['stages']
assert m['vm']['hypervisor'] == 'vmm', m['vm']
print('manifest: inputs', sorted(names), 'stages', [(s['name'], s['seconds']) for s in m['stages']])
PY
grep -q 'passed: boots to a login prompt as standin' "$dir/build.log"
# nothing of the build left behind
if pgrep -f 'qemu-system-x86_64.*vmd-standin' >/dev/null; then echo "a stand-in VM is still running" >&2; exit 1; fi
if ls /dev/ttyp* >/dev/null 2>&1; then echo "a /dev/ttyp* link is left" >&2; exit 1; fi
echo "openbsd stand-in e2e: passed"
