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
#   E2E_DIR=... bash tests/e2e/openbsd_stand_in.sh            all of it, in this order:
#   E2E_DIR=... bash tests/e2e/openbsd_stand_in.sh prepare    mirror, installer, mirror server, vmd
#   E2E_DIR=... bash tests/e2e/openbsd_stand_in.sh build      the build (output in $E2E_DIR/openbsd/build.log)
#   E2E_DIR=... bash tests/e2e/openbsd_stand_in.sh check      what the build left
#   E2E_DIR=... bash tests/e2e/openbsd_stand_in.sh stop       ends the mirror server and vmd
# tests/e2e/parallel.sh runs prepare, then the build beside three others, then check and stop.
# E2E_WORK_ROOT, when set, is the build's build_image_work_root.
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$PWD
dir=${E2E_DIR:?}/openbsd
cache=${OPENBSD_STANDIN_CACHE:-/var/cache/osimage-builder/openbsd-stand-in}
# vmd stand-in's control socket and the blueprint's mirror port: one of each per host
vmd_socket=/var/run/vmd.sock
vmd_state=/var/run/vmd-standin

prepare() {
  rm -rf "$dir"
  mkdir -p "$dir" "$cache"
  sh tests/standins/openbsd-installer/make-mirror.sh "$cache/mirror"
  sh tests/standins/openbsd-installer/make-installer.sh "$cache/installer" "$cache/mirror/openbsd-78-base.pub"
  # the key the blueprint's source.signify_key names
  cp "$cache/mirror/openbsd-78-base.pub" "$cache/openbsd-78-base.pub"

  python3 -m http.server --bind 127.0.0.1 --directory "$cache/mirror" 8078 >"$dir/mirror.log" 2>&1 &
  echo $! >"$dir/mirror.pid"
  "$top/tests/standins/vmd" -R "$cache/installer/ramdisk.img" -A tcg
  # The stand-in daemonises and writes its pid into a state directory of its own; the socket
  # is single, so the live one is ours. Kept so that stop ends this vmd and nothing else.
  # Waited for by its pid file and socket, not the socket alone: a killed earlier run may have
  # left a stale socket behind, which the new vmd replaces.
  local f pid
  for _ in $(seq 50); do
    for f in "$vmd_state"/*/vmd.pid; do
      [ -e "$f" ] || continue
      pid=$(cat "$f")
      if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'tests/standins/vmd'; then echo "$pid" >"$dir/vmd.pid"; fi
    done
    [ -s "$dir/vmd.pid" ] && [ -S "$vmd_socket" ] && break
    sleep 0.2
  done
  [ -s "$dir/vmd.pid" ] || { echo "the vmd stand-in did not start" >&2; exit 1; }
}

stop() {
  local pid
  if [ -s "$dir/mirror.pid" ]; then kill "$(cat "$dir/mirror.pid")" 2>/dev/null || true; rm -f "$dir/mirror.pid"; fi
  if [ -s "$dir/vmd.pid" ]; then
    pid=$(cat "$dir/vmd.pid")
    # SIGTERM: vmd shuts its VMs down with their taps and ttys, then removes its socket
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$dir/vmd.pid"
  fi
}

build() {
  local extra=()
  if [ -n "${E2E_WORK_ROOT:-}" ]; then extra=(-e "build_image_work_root=$E2E_WORK_ROOT"); fi
  PATH=$top/tests/standins:$PATH .venv/bin/ansible-playbook build-image.yml \
    -e @blueprints/openbsd-stand-in.yml -e osimage_output_dir="$dir/output" "${extra[@]}" \
    2>&1 | tee "$dir/build.log"
}

check() {
  local out=$dir/output/openbsd-stand-in-7.8.0
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
}

case ${1:-all} in
  prepare) prepare ;;
  build) build ;;
  check) check ;;
  stop) stop ;;
  all)
    on_exit() { local rc=$?; stop; exit "$rc"; }
    trap on_exit EXIT
    prepare
    build
    check
    ;;
  *) echo "usage: $0 [all|prepare|build|check|stop]" >&2; exit 2 ;;
esac
